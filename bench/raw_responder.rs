//! The ceiling for bench/: a plain async-nats queue-group responder that parses each job with
//! the project's protocol module and answers the v1.0 `task_result`, with no JS at all.

use futures_util::StreamExt;
use pier_connector::protocol;
use pier_connector::protocol::WorkerIdentity;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_string())
    };
    let url = arg("--url", "nats://127.0.0.1:4222");
    let subject = arg("--subject", "jobs.worker");
    let delay = Duration::from_millis(arg("--delay-ms", "0").parse().expect("--delay-ms"));

    let disconnects = Arc::new(AtomicU64::new(0));
    let slow = Arc::new(AtomicU64::new(0));
    let (d, s) = (disconnects.clone(), slow.clone());
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(65_536)
        .event_callback(move |event| {
            let (d, s) = (d.clone(), s.clone());
            async move {
                match event {
                    async_nats::Event::Disconnected => d.fetch_add(1, Ordering::Relaxed),
                    async_nats::Event::SlowConsumer(_) => s.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
        })
        .connect(&url)
        .await
        .expect("connect");
    let mut jobs = client
        .queue_subscribe(subject, "openclaw-workers".into())
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let worker = Arc::new(WorkerIdentity {
        id: "raw".into(),
        wallet: None,
    });
    println!("ready");

    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            message = jobs.next() => {
                let Some(message) = message else { break };
                let Some(reply) = message.reply else { continue };
                let received = Instant::now();
                let (client, worker) = (client.clone(), worker.clone());
                let answer = move || match protocol::parse_job(&message.payload, 1 << 20) {
                    Ok(job) => protocol::encode_result(&job.id, &job.task, received.elapsed().as_millis() as u64, &worker),
                    Err(r) => protocol::encode_error(r.id.as_deref(), &r.error, &worker),
                };
                if delay.is_zero() {
                    let _ = client.publish(reply, answer().into()).await;
                } else {
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = client.publish(reply, answer().into()).await;
                    });
                }
            }
        }
    }
    let _ = client.flush().await;
    println!(
        "{}",
        serde_json::json!({
            "disconnects": disconnects.load(Ordering::Relaxed),
            "slowConsumerEvents": slow.load(Ordering::Relaxed),
        })
    );
}
