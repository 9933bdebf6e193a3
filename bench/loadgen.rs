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
    /// `--signing-seed`: every request carries a `Pier-Sender` signed with this user seed, its
    /// reply line the `Pier-Reply-To` header (async-nats picks the NATS reply subject itself).
    signing_seed: Option<String>,
}

/// The reply line a signed bench request names (`Pier-Reply-To`); the worker answers the NATS
/// reply subject as usual.
const SIGNED_REPLY: &str = "bench.signed.reply";

fn parse_args() -> Args {
    let mut args = Args {
        url: "nats://127.0.0.1:4222".into(),
        subject: "jobs.worker".into(),
        concurrency: 16,
        duration: Duration::from_secs(5),
        requests: u64::MAX,
        timeout: Duration::from_secs(10),
        task: "benchmark task".into(),
        signing_seed: None,
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
            "--signing-seed" => args.signing_seed = Some(value),
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
    // Every request has an id of its own, as a requester's do: the worker refuses a second job
    // with the id of one in flight. The task part is encoded once; ids are spliced in.
    let template = pier_connector::protocol::encode_request(
        "bench-id",
        &args.task,
        None,
        args.timeout.as_millis() as u64,
        &serde_json::json!({}),
    );
    let template = String::from_utf8(template).expect("a UTF-8 request");
    let (head, tail) = template
        .split_once("bench-id")
        .expect("the id in the request");
    let (head, tail) = (Arc::new(head.to_string()), Arc::new(tail.to_string()));
    let key = args.signing_seed.as_deref().map(|seed| {
        Arc::new(
            pier_connector::signature::SigningKey::from_seed(seed)
                .expect("--signing-seed: a user seed"),
        )
    });
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, issued, key) = (client.clone(), issued.clone(), key.clone());
        let (head, tail) = (head.clone(), tail.clone());
        let (subject, timeout, limit) = (args.subject.clone(), args.timeout, args.requests);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                latencies: Some(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")),
                errors: BTreeMap::new(),
            };
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if Instant::now() >= deadline || n >= limit {
                    break;
                }
                let payload = Bytes::from(format!("{head}b{n}{tail}"));
                let sent = Instant::now();
                let mut request = async_nats::Request::new()
                    .payload(payload.clone())
                    .timeout(Some(timeout));
                if let Some(key) = &key {
                    // Signed per request (a nonce of its own), as a requester does.
                    let signed = pier_connector::signature::sign_request(
                        key,
                        &subject,
                        SIGNED_REPLY,
                        &payload,
                        std::time::SystemTime::now(),
                    );
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Pier-Sender", signed.header.as_str());
                    headers.insert("Pier-Reply-To", SIGNED_REPLY);
                    request = request.headers(headers);
                }
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
