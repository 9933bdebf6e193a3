//! A cap that holds (issue #30): no more than `maxConcurrentJobs` handler calls run at once,
//! ever. A turn past its deadline is answered TIMEOUT at once but keeps its slot until its
//! handler call has returned, so a flood of 1 ms deadlines cannot multiply turns; and a
//! JetStream job whose deadline passed while it waited in the stream is answered TIMEOUT
//! without running. Real nats-server, no Node.

use crate::common::{config, NatsServer};
use async_nats::HeaderMap;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use pier_connector::error::ErrorCode;
use pier_connector::handler::{HandlerResult, JobHandler, JobInput};
use pier_connector::log::MemoryLogger;
use pier_connector::worker::Worker;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Like an agent turn in another runtime: the work runs on its own (a spawned task the
/// worker cannot drop), ignores the cancel notice, and ends `task` ms later (300 when the task
/// is not a number). Counts the calls running at once and the most ever seen.
#[derive(Default)]
struct Stubborn {
    calls: AtomicUsize,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    cancels: AtomicUsize,
}

impl JobHandler for Stubborn {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (running, most) = (self.running.clone(), self.most.clone());
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        let (done, result) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let ms = job.task.parse().unwrap_or(300);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            let _ = done.send(HandlerResult::answered(job.task));
        });
        Box::pin(async move {
            result
                .await
                .unwrap_or_else(|_| HandlerResult::answered("lost"))
        })
    }

    fn cancel(&self, _run_key: &str, _job_id: &str, _reason: ErrorCode) {
        self.cancels.fetch_add(1, Ordering::SeqCst);
    }
}

fn worker(url: &str, handler: Arc<Stubborn>, extra: Value) -> Worker {
    Worker::new(
        config(url, extra),
        handler,
        Arc::new(MemoryLogger::default()),
    )
}

async fn ask(client: &async_nats::Client, payload: Value) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request("jobs.rust", payload.to_string().into()),
    )
    .await
    .expect("a reply in time")
    .expect("a reply");
    serde_json::from_slice(&reply.payload).expect("a JSON reply")
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("ok")
}

#[tokio::test]
async fn a_flood_of_1ms_deadlines_never_runs_more_handler_calls_than_the_cap() {
    let server = NatsServer::start().await;
    let handler = Arc::new(Stubborn::default());
    let worker = worker(
        &server.url,
        handler.clone(),
        json!({ "maxConcurrentJobs": 2 }),
    );
    worker.start().await.expect("worker starts");
    let client = async_nats::connect(&server.url).await.unwrap();

    // Waves of 1 ms jobs for about a second: each call outlives its deadline by 300 ms.
    let until = Instant::now() + Duration::from_millis(1000);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    while Instant::now() < until {
        let wave = futures_util::future::join_all((0..20).map(|_| {
            ask(
                &client,
                json!({ "type": "task_request", "task": "300", "timeoutMs": 1 }),
            )
        }))
        .await;
        for reply in &wave {
            *codes.entry(code(reply).to_string()).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let most = handler.most.load(Ordering::SeqCst);
    assert!(
        most <= 2,
        "{most} handler calls ran at once under maxConcurrentJobs 2 ({codes:?})"
    );
    assert!(codes.get("TIMEOUT").is_some_and(|n| *n >= 2), "{codes:?}");
    assert!(codes.get("OVERLOADED").is_some_and(|n| *n > 0), "{codes:?}");
    assert_eq!(codes.len(), 2, "only TIMEOUT and OVERLOADED: {codes:?}");
    // Each TIMEOUT told its call to stop, and the calls that ran are the ones answered TIMEOUT.
    assert_eq!(handler.calls.load(Ordering::SeqCst), codes["TIMEOUT"]);
    assert_eq!(handler.cancels.load(Ordering::SeqCst), codes["TIMEOUT"]);

    // Once the calls have returned, their slots are free again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(handler.running.load(Ordering::SeqCst), 0);
    let fine = ask(&client, json!({ "task": "5" })).await;
    assert_eq!(fine["result"], "5", "{fine}");
    worker.stop().await;
}

#[tokio::test]
async fn timeout_is_answered_at_the_deadline_and_the_slot_held_until_the_call_returns() {
    let server = NatsServer::start().await;
    let handler = Arc::new(Stubborn::default());
    let worker = worker(
        &server.url,
        handler.clone(),
        json!({ "maxConcurrentJobs": 1 }),
    );
    worker.start().await.expect("worker starts");
    let client = async_nats::connect(&server.url).await.unwrap();

    let asked = Instant::now();
    let late = ask(
        &client,
        json!({ "id": "late", "type": "task_request", "task": "1500", "timeoutMs": 200 }),
    )
    .await;
    let took = asked.elapsed();
    assert_eq!(code(&late), "TIMEOUT", "{late}");
    assert_eq!(late["id"], "late");
    assert!(
        took < Duration::from_millis(1000),
        "TIMEOUT came {took:?} after the request: at the deadline (200 ms), not when the call returned (1500 ms)"
    );
    // Its call still runs: the one slot is taken, and its id too.
    assert_eq!(handler.running.load(Ordering::SeqCst), 1);
    let full = ask(&client, json!({ "id": "next", "task": "5" })).await;
    assert_eq!(code(&full), "OVERLOADED", "{full}");
    let status = worker.status().stats;
    assert_eq!(
        status.in_flight, 1,
        "the call still running counts in flight"
    );

    // Once it has returned, the slot is free.
    let freed = crate::common::eventually(Duration::from_secs(3), || {
        worker.status().stats.in_flight == 0
    })
    .await;
    assert!(freed, "the slot frees once the call returns");
    assert!(asked.elapsed() >= Duration::from_millis(1500));
    let fine = ask(&client, json!({ "id": "late", "task": "5" })).await;
    assert_eq!(fine["result"], "5", "{fine}");
    assert_eq!(handler.most.load(Ordering::SeqCst), 1);
    worker.stop().await;
}

#[tokio::test]
async fn jetstream_a_flood_of_1ms_deadlines_never_runs_more_handler_calls_than_the_cap() {
    let server = NatsServer::jetstream().await;
    let handler = Arc::new(Stubborn::default());
    let worker = worker(
        &server.url,
        handler.clone(),
        json!({ "delivery": "jetstream", "ackWaitMs": 2000, "resultSubject": "results",
                "maxConcurrentJobs": 2 }),
    );
    worker.start().await.expect("worker starts");
    let client = async_nats::connect(&server.url).await.unwrap();
    let mut answers = client.subscribe("results.>").await.unwrap();
    client.flush().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    for i in 0..12 {
        let job = json!({ "id": format!("f{i}"), "task": "200", "timeoutMs": 1 });
        js.publish("jobs.rust", job.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut timeouts = 0;
    for _ in 0..12 {
        let answer = tokio::time::timeout(Duration::from_secs(20), answers.next())
            .await
            .expect("every job answered in time")
            .expect("an answer");
        let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
        assert_eq!(code(&answer), "TIMEOUT", "{answer}");
        timeouts += 1;
    }
    assert_eq!(timeouts, 12);
    let most = handler.most.load(Ordering::SeqCst);
    assert!(
        most <= 2,
        "{most} handler calls ran at once under maxConcurrentJobs 2"
    );
    worker.stop().await;
}

#[tokio::test]
async fn jetstream_a_job_whose_deadline_passed_in_the_stream_is_answered_timeout_unrun() {
    let server = NatsServer::jetstream().await;
    let settings =
        json!({ "delivery": "jetstream", "ackWaitMs": 2000, "resultSubject": "results" });
    // A first worker binds the stream and the consumer, then stops: jobs wait in the stream.
    let first = worker(&server.url, Arc::new(Stubborn::default()), settings.clone());
    first.start().await.expect("worker starts");
    first.stop().await;

    let client = async_nats::connect(&server.url).await.unwrap();
    let mut answers = client.subscribe("results.>").await.unwrap();
    client.flush().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    for (id, timeout_ms) in [("stale", 300), ("fresh", 60_000)] {
        let job = json!({ "id": id, "task": "5", "timeoutMs": timeout_ms });
        js.publish_with_headers("jobs.rust", HeaderMap::new(), job.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Stored long before it is pulled: past the stale job's 300 ms.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let handler = Arc::new(Stubborn::default());
    let second = worker(&server.url, handler.clone(), settings);
    second.start().await.expect("worker starts");
    let mut got = std::collections::HashMap::new();
    for _ in 0..2 {
        let answer = tokio::time::timeout(Duration::from_secs(10), answers.next())
            .await
            .expect("an answer in time")
            .expect("an answer");
        let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
        got.insert(answer["id"].as_str().unwrap().to_string(), answer);
    }
    assert_eq!(code(&got["stale"]), "TIMEOUT", "{}", got["stale"]);
    assert!(
        got["stale"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("waited in the stream"),
        "{}",
        got["stale"]
    );
    assert_eq!(got["fresh"]["result"], "5", "{}", got["fresh"]);
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        1,
        "the stale job never reached the handler"
    );
    // It was settled (terminated), not left to be redelivered.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
    let mut stream = js.get_stream("PIER_JOBS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 0, "both jobs left the work queue");
    second.stop().await;
}

/// A turn that reports what it used when it returns, `task` ms after it began: like a model
/// call that has spent its tokens by the time it notices it was told to stop.
struct Spender;

const LATE_USAGE: pier_connector::usage::Usage = pier_connector::usage::Usage {
    input: 100,
    output: 20,
    cache_read: 0,
    cache_write: 0,
    cost: 0.25,
};

impl JobHandler for Spender {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        let ms = job.task.parse().unwrap_or(300);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            HandlerResult {
                answer: Ok(job.task),
                usage: Some(LATE_USAGE),
            }
        })
    }
}

#[tokio::test]
async fn a_turn_answered_timeout_counts_what_it_spent_once_it_returns_in_stats_and_its_one_ledger_line(
) {
    let server = NatsServer::start().await;
    let dir = std::env::temp_dir().join(format!("pier-cap-late-{}", crate::common::free_port()));
    let ledger = dir.join("ledger.jsonl");
    let worker = Worker::new(
        config(
            &server.url,
            json!({ "ledgerFile": ledger, "maxConcurrentJobs": 1 }),
        ),
        Arc::new(Spender),
        Arc::new(MemoryLogger::default()),
    );
    worker.start().await.expect("worker starts");
    let client = async_nats::connect(&server.url).await.unwrap();

    let late = ask(
        &client,
        json!({ "id": "late", "type": "task_request", "task": "800", "timeoutMs": 200 }),
    )
    .await;
    assert_eq!(code(&late), "TIMEOUT", "{late}");
    // Answered, its call still running: nothing spent yet, and its ledger line waits for what
    // the call will have spent.
    let lines = |path: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a ledger line"))
            .collect()
    };
    assert_eq!(worker.status().stats.spent, 0.0);
    assert!(lines(&ledger).is_empty(), "{:?}", lines(&ledger));

    let written =
        crate::common::eventually(Duration::from_secs(5), || !lines(&ledger).is_empty()).await;
    assert!(written, "the line is written once the call has returned");
    let stats = worker.status().stats;
    assert_eq!(
        (stats.spent, stats.tokens_in, stats.tokens_out),
        (0.25, 100, 20)
    );
    assert_eq!((stats.timed_out, stats.in_flight), (1, 0));
    worker.stop().await;
    let written = lines(&ledger);
    assert_eq!(written.len(), 1, "one line for the one run: {written:?}");
    let line = &written[0];
    assert_eq!(line["id"], "late");
    assert_eq!(line["outcome"], "timed_out", "{line}");
    assert_eq!(line["code"], "TIMEOUT", "{line}");
    assert_eq!(line["earned"], 0.0, "{line}");
    assert_eq!(
        (line["tokensIn"].as_u64(), line["tokensOut"].as_u64()),
        (Some(100), Some(20)),
        "{line}"
    );
    assert_eq!(line["cost"], 0.25, "{line}");
    let _ = std::fs::remove_dir_all(dir);
}
