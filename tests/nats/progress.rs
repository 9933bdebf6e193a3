//! Progress and cancellation (protocol v1.1), against a real nats-server in both delivery
//! modes: `task_progress` bytes and order, keep-alives, partials that are the result, nothing
//! after the answer, nothing for a refused job, and `task_cancel` (wrong token ignored and
//! counted; the right one stops the handler and is answered CANCELLED within a second; a
//! cancelled JetStream job is not delivered again).

use crate::common::{config, eventually, NatsServer};
use crate::rig::{self, Mode, RigHandler, MODES};
use async_nats::HeaderMap;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use pier_connector::error::ErrorCode;
use pier_connector::handler::{HandlerResult, JobHandler, JobInput};
use pier_connector::log::MemoryLogger;
use pier_connector::protocol;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs tasks as scripts: `stream:<n>:<ms>` sends n pieces `piece-<i>;` <ms> apart as partials
/// and answers with all of them; `wait:<ms>` sleeps, then answers `waited`; `hold` waits until
/// cancelled. Counts runs, cancels and calls that returned.
#[derive(Default)]
struct Scripted {
    runs: AtomicUsize,
    returned: Arc<AtomicUsize>,
    cancels: Mutex<Vec<(String, ErrorCode)>>,
    run_keys: Mutex<Vec<String>>,
    stop: Mutex<Vec<(String, tokio::sync::oneshot::Sender<()>)>>,
}

impl JobHandler for Scripted {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.run_keys.lock().unwrap().push(job.run_key.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        self.stop
            .lock()
            .unwrap()
            .push((job.run_key.clone(), stop_tx));
        let returned = self.returned.clone();
        Box::pin(async move {
            let task = job.task.clone();
            let answer = if let Some(script) = task.strip_prefix("stream:") {
                let (n, ms) = script.split_once(':').unwrap();
                let (n, ms): (usize, u64) = (n.parse().unwrap(), ms.parse().unwrap());
                let mut all = String::new();
                for i in 0..n {
                    let piece = format!("piece-{i};");
                    job.partials.send(piece.clone());
                    all.push_str(&piece);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                all
            } else if let Some(ms) = task.strip_prefix("wait:") {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
                "waited".to_string()
            } else {
                // "hold": until the worker's cancel notice stops it.
                let _ = stop_rx.await;
                "stopped".to_string()
            };
            returned.fetch_add(1, Ordering::SeqCst);
            HandlerResult::answered(answer)
        })
    }

    fn cancel(&self, run_key: &str, _job_id: &str, reason: ErrorCode) {
        self.cancels
            .lock()
            .unwrap()
            .push((run_key.to_string(), reason));
        let mut stops = self.stop.lock().unwrap();
        if let Some(at) = stops.iter().position(|(key, _)| key == run_key) {
            let (_, stop) = stops.remove(at);
            let _ = stop.send(());
        }
    }
}

impl RigHandler for Scripted {
    /// Keep-alives every 300 ms: several within a test's few seconds.
    fn settings() -> Value {
        json!({ "progressIntervalMs": 300 })
    }
}

type Rig = rig::Rig<Scripted>;

impl Rig {
    /// Sends `payload` (with `Pier-Progress-To` when `progress`); returns the answer and the
    /// progress subscriptions, both subscribed before the job is sent.
    async fn send_watched(
        &self,
        payload: Value,
        progress: Option<&str>,
    ) -> (async_nats::Subscriber, async_nats::Subscriber) {
        let inbox = self.client.new_inbox();
        let answers = self.client.subscribe(inbox.clone()).await.unwrap();
        let progress_to = progress
            .map(str::to_string)
            .unwrap_or_else(|| self.client.new_inbox());
        let progress_sub = self.client.subscribe(progress_to.clone()).await.unwrap();
        let mut headers = HeaderMap::new();
        if progress.is_some() {
            headers.insert(protocol::PROGRESS_TO_HEADER, progress_to.as_str());
        }
        self.publish(Some(&inbox), headers, payload.to_string())
            .await;
        (answers, progress_sub)
    }
}

async fn next_json(sub: &mut async_nats::Subscriber, within: Duration) -> Option<Value> {
    let message = tokio::time::timeout(within, sub.next()).await.ok()??;
    Some(serde_json::from_slice(&message.payload).expect("JSON"))
}

/// Every progress message that arrived by the time `answers` delivered the final answer, and
/// that answer. The worker's publishes reach the server in order on one connection, so
/// progress sent before the answer is delivered before it.
async fn collect(
    answers: &mut async_nats::Subscriber,
    progress: &mut async_nats::Subscriber,
) -> (Value, Vec<Value>) {
    let answer = next_json(answers, Duration::from_secs(15))
        .await
        .expect("an answer");
    let mut seen = Vec::new();
    while let Some(p) = next_json(progress, Duration::from_millis(50)).await {
        seen.push(p);
    }
    (answer, seen)
}

fn texts(progress: &[Value]) -> String {
    progress
        .iter()
        .filter(|p| p["state"] == "partial")
        .map(|p| p["text"].as_str().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn progress_is_accepted_then_keep_alives_and_partials_in_order_that_are_the_result() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({})).await;
        // 30 pieces of 8 chars, 40 ms apart: ~1.2 s, batched by 100 characters or 500 ms.
        let started = Instant::now();
        let (mut answers, mut progress) = rig
            .send_watched(
                json!({ "id": "p1", "task": "stream:30:40" }),
                Some("progress.p1"),
            )
            .await;
        let (answer, seen) = collect(&mut answers, &mut progress).await;
        let took = started.elapsed();
        assert_eq!(answer["type"], "task_result", "{mode:?}: {answer}");
        assert_eq!(answer["version"], "1.0", "the answer stays v1.0");
        let result = answer["result"].as_str().unwrap();
        assert!(!seen.is_empty(), "{mode:?}: progress was sent");
        let first = &seen[0];
        assert_eq!(
            (
                first["version"].as_str(),
                first["type"].as_str(),
                first["id"].as_str()
            ),
            (Some("1.1"), Some("task_progress"), Some("p1"))
        );
        assert_eq!(first["state"], "accepted", "{mode:?}: accepted first");
        assert_eq!(first["intervalMs"], 300);
        let token = first["cancel"]["token"].as_str().unwrap();
        assert!(
            token.len() >= 22
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        assert!(first["cancel"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("_INBOX."));
        assert_eq!(first["worker"]["id"], "rust-1");
        for (n, p) in seen.iter().enumerate() {
            assert_eq!(p["seq"], n as u64, "{mode:?}: seq from 0 by 1: {seen:?}");
            if n > 0 {
                assert!(p.get("cancel").is_none() && p.get("intervalMs").is_none());
                assert!(["working", "partial"].contains(&p["state"].as_str().unwrap()));
            }
        }
        assert_eq!(
            texts(&seen),
            result,
            "{mode:?}: the partials are the result"
        );
        let partials = seen.iter().filter(|p| p["state"] == "partial").count();
        // 240 characters over ~1.2 s: batched, neither one message per piece nor a single one.
        assert!(
            (2..=8).contains(&partials),
            "{mode:?}: {partials} partials in {took:?}"
        );
        // Nothing after the final answer.
        assert!(
            next_json(&mut progress, Duration::from_millis(700))
                .await
                .is_none(),
            "{mode:?}: no progress after the answer"
        );
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn a_silent_job_gets_a_working_keep_alive_every_interval() {
    let rig = Rig::start(Mode::Core, json!({})).await;
    let (mut answers, mut progress) = rig
        .send_watched(
            json!({ "id": "k1", "task": "wait:1400" }),
            Some("progress.k1"),
        )
        .await;
    let (answer, seen) = collect(&mut answers, &mut progress).await;
    assert_eq!(answer["result"], "waited");
    let states: Vec<&str> = seen.iter().map(|p| p["state"].as_str().unwrap()).collect();
    // 1.4 s at 300 ms: accepted, then 4 keep-alives (at ~300, 600, 900, 1200 ms).
    assert_eq!(states[0], "accepted");
    let working = states.iter().filter(|s| **s == "working").count();
    assert!((3..=5).contains(&working), "{states:?}");
    let gaps: Vec<i64> = seen
        .windows(2)
        .map(|w| w[1]["elapsedMs"].as_i64().unwrap() - w[0]["elapsedMs"].as_i64().unwrap())
        .collect();
    assert!(
        gaps.iter().all(|gap| (250..=600).contains(gap)),
        "a keep-alive about every interval: {gaps:?}"
    );
    rig.worker.stop().await;
}

#[tokio::test]
async fn a_requester_without_the_header_receives_exactly_one_message() {
    let rig = Rig::start(Mode::Core, json!({})).await;
    let (mut answers, mut progress) = rig
        .send_watched(json!({ "id": "v10", "task": "stream:5:10" }), None)
        .await;
    let answer = next_json(&mut answers, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(answer["result"], "piece-0;piece-1;piece-2;piece-3;piece-4;");
    assert!(next_json(&mut answers, Duration::from_millis(300))
        .await
        .is_none());
    assert!(next_json(&mut progress, Duration::from_millis(10))
        .await
        .is_none());
    assert_eq!(rig.worker.status().stats.progress_sent, 0);
    rig.worker.stop().await;
}

#[tokio::test]
async fn a_job_refused_before_it_runs_gets_no_progress_only_its_task_error() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({ "minJobPrice": 5 })).await;
        let (mut answers, mut progress) = rig
            .send_watched(
                json!({ "id": "cheap", "task": "wait:10" }),
                Some("progress.cheap"),
            )
            .await;
        let answer = next_json(&mut answers, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(answer["error"]["code"], "PRICE_TOO_LOW", "{mode:?}");
        assert!(
            next_json(&mut progress, Duration::from_millis(300))
                .await
                .is_none(),
            "{mode:?}"
        );
        // An unusable progress subject is refused INVALID_REQUEST, not run.
        let (mut answers, _progress) = rig
            .send_watched(
                json!({ "id": "bad", "task": "wait:10", "meta": { "price": 9 } }),
                Some("$JS.API.STREAM.DELETE.X"),
            )
            .await;
        let answer = next_json(&mut answers, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            answer["error"]["code"], "INVALID_REQUEST",
            "{mode:?}: {answer}"
        );
        assert_eq!(rig.handler.runs.load(Ordering::SeqCst), 0, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn a_cancel_with_the_right_token_stops_the_handler_and_is_answered_cancelled_within_a_second()
{
    for mode in MODES {
        let ledger = std::env::temp_dir().join(format!(
            "pier-progress-ledger-{}-{mode:?}.jsonl",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&ledger);
        let rig = Rig::start(mode, json!({ "ledgerFile": ledger })).await;
        let (mut answers, mut progress) = rig
            .send_watched(
                json!({ "id": "c1", "task": "hold", "timeoutMs": 30000 }),
                Some("progress.c1"),
            )
            .await;
        let accepted = next_json(&mut progress, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(accepted["state"], "accepted");
        let subject = accepted["cancel"]["subject"].as_str().unwrap().to_string();
        let token = accepted["cancel"]["token"].as_str().unwrap().to_string();
        // Wrong token, wrong id, garbage: ignored and counted, never answered.
        for stray in [
            protocol::encode_cancel("c1", "not-the-token-at-all-xxxxxx"),
            protocol::encode_cancel("another-id", &token),
            b"{\"type\":\"task_cancel\"".to_vec(),
            b"null".to_vec(),
        ] {
            rig.client
                .publish(subject.clone(), stray.into())
                .await
                .unwrap();
        }
        assert!(
            eventually(Duration::from_secs(5), || rig
                .worker
                .status()
                .stats
                .cancels_ignored
                == 4)
            .await,
            "{mode:?}: {:?}",
            rig.worker.status().stats
        );
        assert!(next_json(&mut answers, Duration::from_millis(200))
            .await
            .is_none());
        assert_eq!(rig.handler.cancels.lock().unwrap().len(), 0, "{mode:?}");
        // The right one.
        let sent = Instant::now();
        rig.client
            .publish(
                subject.clone(),
                protocol::encode_cancel("c1", &token).into(),
            )
            .await
            .unwrap();
        let answer = next_json(&mut answers, Duration::from_secs(5))
            .await
            .unwrap();
        let latency = sent.elapsed();
        assert_eq!(answer["error"]["code"], "CANCELLED", "{mode:?}: {answer}");
        assert!(latency < Duration::from_secs(1), "{mode:?}: {latency:?}");
        eprintln!("{mode:?}: task_cancel to CANCELLED in {latency:?}");
        let cancels = rig.handler.cancels.lock().unwrap().clone();
        assert_eq!(
            cancels,
            vec![(
                rig.handler.run_keys.lock().unwrap()[0].clone(),
                ErrorCode::Cancelled
            )],
            "{mode:?}: the handler was told, by its run key"
        );
        assert!(
            eventually(Duration::from_secs(5), || rig
                .handler
                .returned
                .load(Ordering::SeqCst)
                == 1)
            .await,
            "{mode:?}: the handler stopped"
        );
        // A late cancel (the job is answered) is ignored and counted.
        rig.client
            .publish(
                subject.clone(),
                protocol::encode_cancel("c1", &token).into(),
            )
            .await
            .unwrap();
        assert!(
            eventually(Duration::from_secs(5), || rig
                .worker
                .status()
                .stats
                .cancels_ignored
                == 5)
            .await,
            "{mode:?}: a late cancel is counted"
        );
        // Nothing after the answer (keep-alives sent before it are still queued here); the job
        // ran once: JetStream does not deliver it again after its ack wait (1 s).
        while next_json(&mut progress, Duration::from_millis(50))
            .await
            .is_some()
        {}
        assert!(next_json(&mut progress, Duration::from_millis(1500))
            .await
            .is_none());
        assert!(next_json(&mut answers, Duration::from_millis(500))
            .await
            .is_none());
        assert_eq!(
            rig.handler.runs.load(Ordering::SeqCst),
            1,
            "{mode:?}: not run again"
        );
        let status = rig.worker.status();
        assert_eq!(status.stats.errors_by_code.get("CANCELLED"), Some(&1));
        // Its ledger line, written once the handler call returned.
        let lines = std::fs::read_to_string(&ledger).unwrap_or_default();
        assert!(
            lines
                .lines()
                .any(|l| l.contains("\"CANCELLED\"") && l.contains("\"c1\"")),
            "{mode:?}: {lines}"
        );
        rig.worker.stop().await;
        let _ = std::fs::remove_file(&ledger);
    }
}

fn publisher_config(url: &str, extra: Value) -> pier_connector::config::Config {
    let mut settings = json!({ "publishSubject": "jobs.rust" });
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    config(url, settings)
}

fn watch(
    seen: Arc<Mutex<Vec<Value>>>,
) -> (
    Arc<pier_connector::publisher::Watch>,
    tokio_util::sync::CancellationToken,
) {
    let cancel = tokio_util::sync::CancellationToken::new();
    let watch = pier_connector::publisher::Watch {
        on_progress: Some(Box::new(move |p: &Value| {
            seen.lock().unwrap().push(p.clone())
        })),
        cancel: cancel.clone(),
    };
    (Arc::new(watch), cancel)
}

#[tokio::test]
async fn a_watching_publisher_sees_progress_and_cancels_its_job() {
    use pier_connector::publisher::{PublishOptions, Publisher};
    for mode in MODES {
        let rig = Rig::start(mode, json!({})).await;
        let mut extra = json!({});
        if mode == Mode::JetStream {
            extra["delivery"] = json!("jetstream");
        }
        let publisher = Publisher::connect(
            &publisher_config(&rig.server.url, extra),
            Arc::new(MemoryLogger::default()),
        )
        .await
        .unwrap();
        // Watched to its answer: every message of its job, the partials the result.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (w, _) = watch(seen.clone());
        let options = PublishOptions {
            watch: Some(w),
            ..Default::default()
        };
        let answer = publisher.publish("stream:12:30", options).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[0]["state"], "accepted", "{mode:?}");
        assert_eq!(texts(&seen), answer["result"].as_str().unwrap(), "{mode:?}");
        // Cancelled through its token: the job is answered CANCELLED, the handler stopped.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (w, cancel) = watch(seen.clone());
        let options = PublishOptions {
            watch: Some(w),
            timeout_ms: Some(30_000),
            ..Default::default()
        };
        let asked = tokio::spawn(async move { publisher.publish("hold", options).await });
        assert!(eventually(Duration::from_secs(10), || !seen.lock().unwrap().is_empty()).await);
        let sent = Instant::now();
        cancel.cancel();
        let answer = asked.await.unwrap().unwrap();
        assert_eq!(answer["error"]["code"], "CANCELLED", "{mode:?}: {answer}");
        assert!(sent.elapsed() < Duration::from_secs(1), "{mode:?}");
        assert_eq!(rig.handler.cancels.lock().unwrap().len(), 1, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn a_job_whose_worker_falls_silent_is_lost_after_three_keep_alive_intervals() {
    use pier_connector::publisher::{PublishOptions, Publisher};
    let server = NatsServer::start().await;
    // A worker that says accepted (every 100 ms, keep-alives promised) and then nothing.
    let client = async_nats::connect(&server.url).await.unwrap();
    let mut jobs = client.subscribe("jobs.rust").await.unwrap();
    let fake = tokio::spawn({
        let client = client.clone();
        async move {
            let job = jobs.next().await.unwrap();
            let to = job
                .headers
                .as_ref()
                .and_then(|h| h.get(protocol::PROGRESS_TO_HEADER))
                .unwrap()
                .to_string();
            let id = serde_json::from_slice::<Value>(&job.payload).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            let accepted = json!({ "version": "1.1", "type": "task_progress", "id": id, "seq": 0,
                "state": "accepted", "elapsedMs": 1, "intervalMs": 100,
                "cancel": { "subject": "_INBOX.nowhere", "token": "t".repeat(22) },
                "worker": { "id": "silent", "wallet": null } });
            client
                .publish(to, accepted.to_string().into())
                .await
                .unwrap();
            client.flush().await.unwrap();
        }
    });
    let publisher = Publisher::connect(
        &publisher_config(&server.url, json!({})),
        Arc::new(MemoryLogger::default()),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let options = PublishOptions {
        watch: Some(Arc::new(pier_connector::publisher::Watch::default())),
        timeout_ms: Some(60_000),
        ..Default::default()
    };
    let error = publisher.publish("anything", options).await.unwrap_err();
    let took = started.elapsed();
    fake.await.unwrap();
    assert_eq!(error.code(), "PIER_TIMEOUT", "{error}");
    assert!(error.to_string().contains("lost"), "{error}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "lost after 3 x 100 ms of silence, not after the 60 s timeout: {took:?}"
    );
}

/// The cost of progress (not part of the tests: `cargo test --release --test progress -- --ignored
/// --nocapture`): 4,000 jobs, 256 in flight, each streaming 10 pieces of 30 characters, with
/// and without `Pier-Progress-To`; jobs per second of each.
#[tokio::test]
#[ignore]
async fn measure_the_cost_of_progress() {
    use futures_util::stream::{self, StreamExt as _};
    let rig = Rig::start(
        Mode::Core,
        json!({ "maxConcurrentJobs": 256, "progressIntervalMs": 5000 }),
    )
    .await;
    const JOBS: usize = 4000;
    for round in 0..2 {
        for with_progress in [false, true] {
            let started = Instant::now();
            let client = rig.client.clone();
            let answered = stream::iter(0..JOBS)
                .map(|n| {
                    let client = client.clone();
                    async move {
                        let inbox = client.new_inbox();
                        let mut answers = client.subscribe(inbox.clone()).await.unwrap();
                        let mut headers = HeaderMap::new();
                        let progress_to = format!("{inbox}.p");
                        let _progress = client.subscribe(progress_to.clone()).await.unwrap();
                        if with_progress {
                            headers.insert(protocol::PROGRESS_TO_HEADER, progress_to.as_str());
                        }
                        let payload = json!({ "id": format!("m{n}"), "task": "stream:10:0" });
                        client
                            .publish_with_reply_and_headers(
                                "jobs.rust",
                                inbox,
                                headers,
                                payload.to_string().into(),
                            )
                            .await
                            .unwrap();
                        let answer = answers.next().await.unwrap();
                        serde_json::from_slice::<Value>(&answer.payload).unwrap()["ok"] == true
                    }
                })
                .buffer_unordered(256)
                .filter(|ok| std::future::ready(*ok))
                .count()
                .await;
            let took = started.elapsed();
            assert_eq!(answered, JOBS);
            eprintln!(
                "round {round}: progress {with_progress}: {JOBS} jobs in {took:?}: {:.0} jobs/s",
                JOBS as f64 / took.as_secs_f64()
            );
        }
    }
    eprintln!(
        "progress messages sent: {}",
        rig.worker.status().stats.progress_sent
    );
    rig.worker.stop().await;
}
