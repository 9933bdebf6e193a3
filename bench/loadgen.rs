//! Load generator for bench/: keeps N `task_request`s in flight against a subject for a fixed
//! time (or a fixed count) and prints one JSON line: throughput, latency percentiles, errors.

use bytes::Bytes;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    url: String,
    subject: String,
    concurrency: usize,
    duration: Duration,
    requests: u64,
    timeout: Duration,
    task: String,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: "nats://127.0.0.1:4222".into(),
        subject: "jobs.worker".into(),
        concurrency: 16,
        duration: Duration::from_secs(5),
        requests: u64::MAX,
        timeout: Duration::from_secs(10),
        task: "benchmark task".into(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--url" => args.url = value,
            "--subject" => args.subject = value,
            "--concurrency" => args.concurrency = value.parse().expect("--concurrency N"),
            "--duration-ms" => args.duration = Duration::from_millis(value.parse().expect("ms")),
            "--requests" => args.requests = value.parse().expect("--requests N"),
            "--timeout-ms" => args.timeout = Duration::from_millis(value.parse().expect("ms")),
            "--task" => args.task = value,
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

#[derive(Default)]
struct Tally {
    latencies: Option<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let client = async_nats::ConnectOptions::new()
        .client_capacity(65_536)
        .connect(&args.url)
        .await
        .expect("connect");
    let payload = Bytes::from(pier_connector::protocol::encode_request(
        "bench",
        &args.task,
        None,
        args.timeout.as_millis() as u64,
        &serde_json::json!({}),
    ));
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, payload, issued) = (client.clone(), payload.clone(), issued.clone());
        let (subject, timeout, limit) = (args.subject.clone(), args.timeout, args.requests);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                latencies: Some(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")),
                errors: BTreeMap::new(),
            };
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < limit {
                let sent = Instant::now();
                let request = async_nats::Request::new()
                    .payload(payload.clone())
                    .timeout(Some(timeout));
                let outcome = client.send_request(subject.clone(), request).await;
                let micros = sent.elapsed().as_micros() as u64;
                match outcome {
                    Ok(reply) => {
                        let text = String::from_utf8_lossy(&reply.payload);
                        if text.contains("\"ok\":true") {
                            if let Some(h) = tally.latencies.as_mut() {
                                let _ = h.record(micros.max(1));
                            }
                        } else {
                            let code = serde_json::from_str::<serde_json::Value>(&text)
                                .ok()
                                .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
                                .unwrap_or_else(|| "BAD_REPLY".into());
                            *tally.errors.entry(code).or_default() += 1;
                        }
                    }
                    Err(e) => *tally.errors.entry(format!("{:?}", e.kind())).or_default() += 1,
                }
            }
            tally
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let tally = task.await.expect("task");
        if let Some(h) = tally.latencies {
            all.add(h).expect("merge");
        }
        for (k, v) in tally.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = all.len();
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    let summary = serde_json::json!({
        "concurrency": args.concurrency,
        "seconds": elapsed,
        "ok": ok,
        "errors": errors,
        "throughput": ok as f64 / elapsed,
        "p50Ms": ms(0.5),
        "p99Ms": ms(0.99),
        "p999Ms": ms(0.999),
        "maxMs": all.max() as f64 / 1000.0,
    });
    println!("{summary}");
}
