//! The Rust worker against a real nats-server on a random loopback port, without Node.

use crate::common::{config, NatsServer};
use futures_util::future::BoxFuture;
use pier_connector::error::ErrorCode;
use pier_connector::handler::{EchoHandler, HandlerResult, JobHandler, JobInput};
use pier_connector::log::{Level, MemoryLogger};
use pier_connector::worker::Worker;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

async fn ask(client: &async_nats::Client, payload: impl Into<bytes::Bytes>) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request("jobs.rust", payload.into()),
    )
    .await
    .expect("a reply in time")
    .expect("a reply");
    serde_json::from_slice(&reply.payload).expect("JSON reply")
}

/// Sleeps for the task's number of milliseconds, then echoes it.
struct SleepyHandler;

impl JobHandler for SleepyHandler {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        Box::pin(async move {
            let ms: u64 = job.task.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            HandlerResult::answered(job.task)
        })
    }
}

#[tokio::test]
async fn bad_payloads_get_task_errors_and_the_worker_keeps_serving() {
    let server = NatsServer::start().await;
    let logger = Arc::new(MemoryLogger::default());
    let worker = Worker::new(
        config(&server.url, json!({ "maxPayloadBytes": 1000 })),
        Arc::new(EchoHandler),
        logger.clone(),
    );
    worker.start().await.expect("worker starts");
    let client = async_nats::connect(&server.url).await.unwrap();

    let cases: [(&[u8], &str); 7] = [
        (b"null", "PARSE_ERROR"),
        (b"[]", "PARSE_ERROR"),
        (b"\"x\"", "PARSE_ERROR"),
        (b"42", "PARSE_ERROR"),
        (b"\xff\xfe", "PARSE_ERROR"),
        (b"{}", "INVALID_REQUEST"),
        (&[b' '; 2000], "PAYLOAD_TOO_LARGE"),
    ];
    for (payload, code) in cases {
        let reply = ask(&client, payload.to_vec()).await;
        assert_eq!(reply["type"], "task_error", "{payload:?}");
        assert_eq!(reply["id"], Value::Null);
        assert_eq!(reply["error"]["code"], code, "{payload:?}");
    }
    let ok = ask(&client, json!({ "id": "r1", "task": "fine" }).to_string()).await;
    assert_eq!(ok["result"], "fine");
    assert_eq!(ok["worker"]["id"], "rust-1");

    let stats = worker.status().stats;
    assert_eq!(stats.received, 8);
    assert_eq!(stats.completed, 1);
    assert_eq!(stats.failed, 7);
    let warnings = logger
        .lines()
        .iter()
        .filter(|(level, _)| *level == Level::Warn)
        .count();
    assert_eq!(warnings, 7, "one line per bad payload");
    worker.stop().await;
}

#[tokio::test]
async fn excess_jobs_are_overloaded_and_stop_drains_the_rest() {
    let server = NatsServer::start().await;
    let worker = Arc::new(Worker::new(
        config(
            &server.url,
            json!({ "maxConcurrentJobs": 2, "drainTimeoutMs": 5000 }),
        ),
        Arc::new(SleepyHandler),
        Arc::new(MemoryLogger::default()),
    ));
    worker.start().await.expect("worker starts");
    let client = async_nats::connect(&server.url).await.unwrap();

    let slow: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { ask(&client, json!({ "task": "400" }).to_string()).await })
        })
        .collect();
    while worker.status().stats.in_flight < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = ask(&client, json!({ "id": "x", "task": "1" }).to_string()).await;
    assert_eq!(refused["error"]["code"], ErrorCode::Overloaded.as_str());
    assert_eq!(refused["id"], "x");

    worker.stop().await;
    for handle in slow {
        assert_eq!(
            handle.await.unwrap()["result"],
            "400",
            "drained, not cut off"
        );
    }
    let stats = worker.status().stats;
    assert_eq!(
        (stats.completed, stats.rejected, stats.in_flight),
        (2, 1, 0)
    );
    assert_eq!(worker.status().state, "stopped");
}

#[tokio::test]
async fn a_job_past_its_deadline_gets_timeout() {
    let server = NatsServer::start().await;
    let worker = Worker::new(
        config(&server.url, json!({})),
        Arc::new(SleepyHandler),
        Arc::new(MemoryLogger::default()),
    );
    worker.start().await.expect("worker starts");
    let client = async_nats::connect(&server.url).await.unwrap();
    let reply = ask(
        &client,
        json!({ "id": "t", "type": "task_request", "task": "3000", "timeoutMs": 100 }).to_string(),
    )
    .await;
    assert_eq!(reply["error"]["code"], "TIMEOUT");
    assert_eq!(worker.status().stats.timed_out, 1);
    worker.stop().await;
}

/// A handler that claims to answer at once (so the worker polls it inline) but then waits for
/// `task` jobs to have started, or sleeps when the task is "sleep".
#[derive(Default)]
struct InlineButWaiting {
    started: Arc<tokio::sync::watch::Sender<usize>>,
}

impl JobHandler for InlineButWaiting {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        let started = self.started.clone();
        Box::pin(async move {
            if job.task == "sleep" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            let wanted: usize = job.task.parse().unwrap_or(0);
            started.send_modify(|n| *n += 1);
            let mut seen = started.subscribe();
            let _ = seen.wait_for(|n| *n >= wanted).await;
            HandlerResult::answered(job.task)
        })
    }

    fn ready_on_first_poll(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn an_inline_handler_that_waits_does_not_hold_up_other_jobs_or_its_deadline() {
    let server = NatsServer::start().await;
    let worker = Worker::new(
        config(&server.url, json!({ "maxConcurrentJobs": 4 })),
        Arc::new(InlineButWaiting::default()),
        Arc::new(MemoryLogger::default()),
    );
    worker.start().await.expect("worker starts");
    let client = async_nats::connect(&server.url).await.unwrap();

    // Each job finishes only once all three have started: one left waiting inline would
    // keep the others from starting, and all would end in TIMEOUT.
    let replies = futures_util::future::join_all((0..3).map(|i| {
        ask(
            &client,
            json!({ "id": format!("w{i}"), "task": "3" }).to_string(),
        )
    }))
    .await;
    assert!(replies.iter().all(|r| r["result"] == "3"), "{replies:?}");

    let late = ask(
        &client,
        json!({ "id": "late", "task": "sleep", "timeoutMs": 200 }).to_string(),
    )
    .await;
    assert_eq!(late["error"]["code"], "TIMEOUT");
    worker.stop().await;
}

/// A stop ends every start called before it, even one that has not begun when the stop runs
/// (the binding runs each as a task of its own, and either may be polled first). That start
/// once found the stop over, retried its server until stopped again, and an OpenClaw account
/// stopped while connecting waited for it for ever.
#[tokio::test]
async fn a_stop_ends_a_start_called_before_it_even_one_not_begun() {
    // Nothing listens there: a start keeps trying (maxConnectAttempts 0) until stopped.
    let url = format!("nats://127.0.0.1:{}", crate::common::free_port());
    let worker = Arc::new(Worker::new(
        config(&url, json!({ "connectTimeoutMs": 200 })),
        Arc::new(EchoHandler),
        Arc::new(MemoryLogger::default()),
    ));
    let start = worker.start();
    worker.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), start)
        .await
        .expect("the start ends with the stop, not after its server comes");
    assert_eq!(ended.unwrap_err().code(), "PIER_STOPPED");
    assert_eq!(worker.status().state, "stopped");
    // A start called after that stop is not ended by it: it keeps trying until the next one.
    let again = {
        let worker = worker.clone();
        tokio::spawn(async move { worker.start().await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!again.is_finished(), "still connecting");
    assert_eq!(worker.status().state, "connecting");
    worker.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), again)
        .await
        .expect("ended by the second stop")
        .unwrap();
    assert_eq!(ended.unwrap_err().code(), "PIER_STOPPED");
}
