//! A ledger that tells the truth, against a real nats-server with JetStream: a run whose answer
//! could not be delivered is `undelivered` (its spending counted, no job, no earnings), a run of
//! a job that ran before is marked `rerun`, and each job and its earnings count once, in the
//! ledger, the worker's day and its stats alike.

use crate::common::{config, eventually, free_port, NatsServer};
use async_nats::jetstream::{self, stream};
use futures_util::future::BoxFuture;
use pier_connector::handler::{HandlerResult, JobHandler, JobInput, Usage};
use pier_connector::ledger;
use pier_connector::log::MemoryLogger;
use pier_connector::worker::Worker;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers each job with its task at a cost of 0.25; a task `hold` first waits for `release`.
#[derive(Default, Clone)]
struct Paid {
    runs: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
}

impl JobHandler for Paid {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let release = self.release.clone();
        Box::pin(async move {
            if job.task == "hold" {
                release.notified().await;
            }
            HandlerResult::answered(job.task).with_usage(Some(Usage {
                input: 100,
                output: 20,
                cache_read: 0,
                cache_write: 0,
                cost: 0.25,
            }))
        })
    }
}

struct Rig {
    _server: NatsServer,
    js: jetstream::Context,
    worker: Worker,
    handler: Paid,
    ledger: PathBuf,
}

/// A worker with a ledger, and with `results` a stream keeping its answers (made before it
/// starts, so it knows the stream from the start).
async fn rig(name: &str, results: Option<stream::Config>) -> Rig {
    let server = NatsServer::jetstream().await;
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = jetstream::new(client);
    if let Some(results) = results {
        js.create_stream(results).await.unwrap();
    }
    let ledger = std::env::temp_dir().join(format!("pier-ledger-{name}-{}/l.jsonl", free_port()));
    let handler = Paid::default();
    let worker = Worker::new(
        config(
            &server.url,
            json!({
                "delivery": "jetstream", "ackWaitMs": 2000, "resultSubject": "results",
                "ledgerFile": ledger, "maxConcurrentJobs": 1
            }),
        ),
        Arc::new(handler.clone()),
        Arc::new(MemoryLogger::default()),
    );
    worker.start().await.expect("worker starts");
    Rig {
        _server: server,
        js,
        worker,
        handler,
        ledger,
    }
}

impl Rig {
    async fn publish(&self, payload: Value) {
        self.js
            .publish("jobs.rust", payload.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn queued(&self) -> u64 {
        self.js
            .get_stream("PIER_JOBS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages
    }

    /// Waits until every job was acked or terminated.
    async fn drained(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.queued().await == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn runs(&self) -> usize {
        self.handler.runs.load(Ordering::SeqCst)
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a ledger line"))
        .collect()
}

#[tokio::test]
async fn an_answer_that_could_not_be_delivered_is_undelivered_and_the_rerun_earns_once() {
    // The requester's results stream has room for one message, and it is taken.
    let results = stream::Config {
        name: "RESULTS".into(),
        subjects: vec!["results.>".into()],
        max_messages: 1,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    let rig = rig("undelivered", Some(results)).await;
    rig.js
        .publish("results.filler", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
    rig.publish(json!({ "id": "paid-1", "task": "t", "meta": { "price": 5 } }))
        .await;
    // The stream refuses the answer: the run is written undelivered, and the job stays queued.
    let undelivered = eventually(Duration::from_secs(20), || {
        lines(&rig.ledger)
            .iter()
            .any(|l| l["outcome"] == "undelivered")
    })
    .await;
    assert!(undelivered, "{:?}", lines(&rig.ledger));
    assert_eq!(rig.queued().await, 1, "not acked");
    // Room again: the job runs again, and this answer is stored.
    rig.js
        .get_stream("RESULTS")
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    assert!(
        rig.drained(Duration::from_secs(30)).await,
        "acked once delivered"
    );
    let runs = rig.runs();
    assert!(runs >= 2, "{runs} runs");
    let written = lines(&rig.ledger);
    assert_eq!(written.len(), runs, "one line per run: {written:?}");
    let key = written[0]["job"].as_str().expect("each line names its job");
    assert!(written.iter().all(|l| l["job"] == key), "{written:?}");
    assert_eq!(written[0]["outcome"], "undelivered");
    assert_eq!(
        written[0]["earned"], 0.0,
        "an undelivered answer earns nothing"
    );
    assert_eq!(written[0].get("rerun"), None, "the first run is no rerun");
    let last = &written[runs - 1];
    assert_eq!(
        (&last["outcome"], &last["earned"], &last["rerun"]),
        (&json!("completed"), &json!(5.0), &json!(true)),
        "{written:?}"
    );
    assert!(
        written[..runs - 1]
            .iter()
            .all(|l| l["outcome"] == "undelivered" && l["rerun"] != false),
        "every earlier run undelivered: {written:?}"
    );
    let read = ledger::read(&rig.ledger, None, usize::MAX).unwrap();
    let day = &read.days[0];
    assert_eq!((day.jobs, day.completed), (1, 1), "one job: {day:?}");
    assert_eq!(day.earned, 5.0, "earned once: {day:?}");
    assert_eq!(day.spent, 0.25 * runs as f64, "every run spent: {day:?}");
    assert_eq!(
        (day.undelivered, day.reruns),
        (runs as u64 - 1, runs as u64 - 1),
        "{day:?}"
    );
    // The worker's own day and counters say the same.
    let status = rig.worker.status();
    let today = status.today.expect("today");
    assert_eq!(
        (today.jobs, today.completed, today.earned, today.spent),
        (1, 1, 5.0, 0.25 * runs as f64)
    );
    assert_eq!(status.stats.earned, 5.0);
    rig.worker.stop().await;
    let _ = std::fs::remove_dir_all(rig.ledger.parent().unwrap());
}

#[tokio::test]
async fn a_job_run_again_after_its_answer_was_delivered_earns_once() {
    let rig = rig("ack-lost", None).await;
    rig.publish(json!({ "id": "paid-2", "task": "hold", "meta": { "price": 7 } }))
        .await;
    let running = eventually(Duration::from_secs(10), || rig.runs() == 1).await;
    assert!(running, "the job runs");
    // Its consumer goes while it runs: the ack of its delivered answer is lost, and the
    // consumer made again delivers the job once more (with its one slot taken, the worker
    // pulls nothing until the first run has answered).
    rig.js
        .get_stream("PIER_JOBS")
        .await
        .unwrap()
        .delete_consumer("pier-workers")
        .await
        .unwrap();
    rig.handler.release.notify_one();
    let again = eventually(Duration::from_secs(30), || rig.runs() == 2).await;
    assert!(again, "run again after the lost ack ({} runs)", rig.runs());
    rig.handler.release.notify_one();
    assert!(rig.drained(Duration::from_secs(30)).await, "acked at last");
    let written = lines(&rig.ledger);
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(
        written.iter().all(|l| l["outcome"] == "completed"),
        "{written:?}"
    );
    assert_eq!(written[0]["earned"], 7.0);
    assert_eq!(
        (&written[1]["earned"], &written[1]["rerun"]),
        (&json!(0.0), &json!(true)),
        "the rerun earns nothing again: {written:?}"
    );
    let day = &ledger::read_days(&rig.ledger, None).unwrap()[0];
    assert_eq!(
        (day.jobs, day.completed, day.earned, day.reruns),
        (1, 1, 7.0, 1)
    );
    assert_eq!(day.spent, 0.5, "both runs spent");
    let status = rig.worker.status();
    assert_eq!(status.stats.earned, 7.0, "the stats earn it once too");
    assert_eq!(status.today.expect("today").earned, 7.0);
    rig.worker.stop().await;
    let _ = std::fs::remove_dir_all(rig.ledger.parent().unwrap());
}
