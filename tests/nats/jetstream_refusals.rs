//! JetStream refusals that cost nothing, against a real nats-server: a job one worker will not
//! run for a reason of its own (OVERLOADED, RATE_LIMITED, BUDGET_EXHAUSTED) stays in the work
//! queue for another worker, and is answered with the refusal only on its last delivery or near
//! its deadline; and a worker whose NATS user lacks a permission it needs does not start.

use crate::common::{config, eventually, free_port, jetstream_with_results, NatsServer, TempDir};
use crate::rig::{key_of, sender_headers};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use pier_connector::handler::{HandlerResult, JobHandler, JobInput};
use pier_connector::log::MemoryLogger;
use pier_connector::worker::Worker;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Every handler call, as `(worker, job id)`, whichever worker made it.
type Calls = Arc<Mutex<Vec<(String, String)>>>;

/// Answers each job with its task; a task `hold` waits until `release` is notified.
struct Recorder {
    worker: String,
    calls: Calls,
    release: Arc<tokio::sync::Notify>,
}

impl JobHandler for Recorder {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        self.calls
            .lock()
            .unwrap()
            .push((self.worker.clone(), job.id.clone()));
        let release = self.release.clone();
        Box::pin(async move {
            if job.task == "hold" {
                release.notified().await;
            }
            HandlerResult::answered(job.task)
        })
    }
}

struct Node {
    worker: Worker,
    release: Arc<tokio::sync::Notify>,
}

/// A JetStream worker named `name` (its `workerId`) on the shared consumer, recording its
/// handler calls in `calls`; `extra` config keys on top.
fn node(url: &str, name: &str, calls: &Calls, extra: Value) -> Node {
    let mut settings = json!({
        "delivery": "jetstream", "ackWaitMs": 2000, "resultSubject": "results", "workerId": name
    });
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let release = Arc::new(tokio::sync::Notify::new());
    let worker = Worker::new(
        config(url, settings),
        Arc::new(Recorder {
            worker: name.to_string(),
            calls: calls.clone(),
            release: release.clone(),
        }),
        Arc::new(MemoryLogger::default()),
    );
    Node { worker, release }
}

async fn publish(js: &jetstream::Context, headers: HeaderMap, payload: &Value) {
    js.publish_with_headers("jobs.rust", headers, payload.to_string().into())
        .await
        .expect("published")
        .await
        .expect("stored");
}

fn job(id: &str, task: &str) -> Value {
    json!({ "id": id, "task": task })
}

fn body(message: &async_nats::Message) -> Value {
    serde_json::from_slice(&message.payload).expect("a JSON answer")
}

async fn next_answer(answers: &mut async_nats::Subscriber, within: Duration) -> Value {
    let message = tokio::time::timeout(within, answers.next())
        .await
        .expect("an answer in time")
        .expect("an answer");
    body(&message)
}

fn calls_of(calls: &Calls, id: &str) -> Vec<String> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, job)| job == id)
        .map(|(worker, _)| worker.clone())
        .collect()
}

/// The job stream's messages (a work queue: a job leaves it once acked or terminated).
async fn queued(js: &jetstream::Context) -> u64 {
    js.get_stream("PIER_JOBS")
        .await
        .expect("the job stream")
        .info()
        .await
        .expect("its info")
        .state
        .messages
}

/// Waits until the job stream is empty: every job acked or terminated.
async fn drained(js: &jetstream::Context, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if queued(js).await == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_worker_at_its_cap_leaves_the_next_job_to_another_worker() {
    let server = NatsServer::jetstream().await;
    let calls = Calls::default();
    let a = node(&server.url, "A", &calls, json!({ "maxConcurrentJobs": 1 }));
    let b = node(&server.url, "B", &calls, json!({ "maxConcurrentJobs": 4 }));
    a.worker.start().await.expect("A starts");
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut answers = client.subscribe("results.>").await.unwrap();
    client.flush().await.unwrap();
    // A alone takes the held job: its one slot is taken.
    publish(&js, HeaderMap::new(), &job("held", "hold")).await;
    let full = eventually(Duration::from_secs(10), || {
        a.worker.status().stats.in_flight == 1
    })
    .await;
    assert!(full, "A runs the held job");
    b.worker.start().await.expect("B starts");
    publish(&js, HeaderMap::new(), &job("next", "task next")).await;
    let answer = next_answer(&mut answers, Duration::from_secs(10)).await;
    assert_eq!(answer["id"], "next", "{answer}");
    assert_eq!(answer["result"], "task next", "{answer}");
    assert_eq!(
        answer["worker"]["id"], "B",
        "the free worker answers it: {answer}"
    );
    assert_eq!(calls_of(&calls, "next"), ["B"], "run once, by B");
    let a_stats = a.worker.status().stats;
    assert_eq!(a_stats.received, 1, "A never saw it: {a_stats:?}");
    assert_eq!(a_stats.passed_on, 0);
    a.release.notify_one();
    let held = next_answer(&mut answers, Duration::from_secs(10)).await;
    assert_eq!(
        (held["id"].as_str(), held["worker"]["id"].as_str()),
        (Some("held"), Some("A"))
    );
    assert!(
        drained(&js, Duration::from_secs(10)).await,
        "both jobs acked"
    );
    a.worker.stop().await;
    b.worker.stop().await;
}

#[tokio::test]
async fn a_worker_over_a_senders_share_gives_the_job_back_and_another_runs_it_once() {
    let server = NatsServer::jetstream().await;
    let calls = Calls::default();
    // Many deliveries, so that the job is not answered for A's reason before B has it.
    let shared = json!({ "maxDeliver": 20 });
    let mut over = shared.clone();
    over["unsignedJobsPerMinute"] = json!(1);
    let a = node(&server.url, "A", &calls, over);
    let b = node(&server.url, "B", &calls, shared);
    a.worker.start().await.expect("A starts");
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut first = client.subscribe("results.first").await.unwrap();
    let mut second = client.subscribe("results.second").await.unwrap();
    client.flush().await.unwrap();
    // A's share of unsigned jobs (one a minute) goes to the first.
    publish(&js, HeaderMap::new(), &job("first", "task first")).await;
    let answer = next_answer(&mut first, Duration::from_secs(10)).await;
    assert_eq!(answer["worker"]["id"], "A", "{answer}");
    // The second is over A's share: A gives it back instead of answering RATE_LIMITED.
    publish(&js, HeaderMap::new(), &job("second", "task second")).await;
    let passed = eventually(Duration::from_secs(10), || {
        a.worker.status().stats.passed_on >= 1
    })
    .await;
    assert!(passed, "A gave the job back: {:?}", a.worker.status().stats);
    b.worker.start().await.expect("B starts");
    let answer = next_answer(&mut second, Duration::from_secs(30)).await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["result"], "task second");
    assert_eq!(answer["worker"]["id"], "B", "{answer}");
    assert!(
        drained(&js, Duration::from_secs(10)).await,
        "the job was acked"
    );
    // A round trip through the server: an answer sent before the ack would be here by now.
    client.flush().await.unwrap();
    assert!(
        futures_util::FutureExt::now_or_never(second.next()).is_none(),
        "the job was answered once, by B"
    );
    assert_eq!(
        calls_of(&calls, "second"),
        ["B"],
        "it ran exactly once, on B"
    );
    let a_stats = a.worker.status().stats;
    assert_eq!(a_stats.completed, 1, "A ran only the first: {a_stats:?}");
    assert_eq!(
        a_stats.errors_by_code.get("RATE_LIMITED").copied(),
        Some(a_stats.passed_on),
        "every refusal of A was a give-back, none an answer: {a_stats:?}"
    );
    a.worker.stop().await;
    b.worker.stop().await;
}

#[tokio::test]
async fn one_full_worker_answers_overloaded_on_the_jobs_last_delivery() {
    let server = NatsServer::jetstream().await;
    let calls = Calls::default();
    // Its replay memory holds no nonce: every signed job finds the worker full (OVERLOADED),
    // and no other worker takes it.
    let a = node(&server.url, "A", &calls, json!({ "maxDeliver": 4 }));
    let worker = a.worker.with_replay_memory_cap(0);
    worker.start().await.expect("A starts");
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut answers = client.subscribe("results.full-1").await.unwrap();
    client.flush().await.unwrap();
    let payload = job("full-1", "task");
    let bytes = payload.to_string().into_bytes();
    let headers = sender_headers(&key_of(7), "jobs.rust", "", &bytes, SystemTime::now());
    let sent = Instant::now();
    publish(&js, headers, &payload).await;
    let answer = next_answer(&mut answers, Duration::from_secs(20)).await;
    assert_eq!(answer["error"]["code"], "OVERLOADED", "{answer}");
    // Given back after its first three deliveries (100, 200 and 400 ms), answered on its
    // fourth and last.
    assert!(
        sent.elapsed() >= Duration::from_millis(700),
        "{:?}",
        sent.elapsed()
    );
    let stats = worker.status().stats;
    assert_eq!(stats.passed_on, 3, "{stats:?}");
    assert_eq!(stats.received, 4, "{stats:?}");
    assert!(calls.lock().unwrap().is_empty(), "never run");
    assert!(
        drained(&js, Duration::from_secs(10)).await,
        "answered, so terminated"
    );
    worker.stop().await;
}

#[tokio::test]
async fn one_worker_over_a_share_answers_rate_limited_while_the_requester_still_waits() {
    let server = NatsServer::jetstream().await;
    let calls = Calls::default();
    let a = node(
        &server.url,
        "A",
        &calls,
        json!({ "unsignedJobsPerMinute": 1, "maxDeliver": 20 }),
    );
    a.worker.start().await.expect("A starts");
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut answers = client.subscribe("results.>").await.unwrap();
    client.flush().await.unwrap();
    publish(&js, HeaderMap::new(), &job("used", "task")).await;
    assert_eq!(
        next_answer(&mut answers, Duration::from_secs(10)).await["ok"],
        true
    );
    // 1.8 s to live: given back while more than a delay and a second is left, then answered,
    // well before its last delivery (20) and before its deadline.
    let sent = Instant::now();
    publish(
        &js,
        HeaderMap::new(),
        &json!({ "id": "short", "task": "t", "timeoutMs": 1800 }),
    )
    .await;
    let answer = next_answer(&mut answers, Duration::from_secs(10)).await;
    let took = sent.elapsed();
    assert_eq!(answer["id"], "short");
    assert_eq!(answer["error"]["code"], "RATE_LIMITED", "{answer}");
    assert!(
        took < Duration::from_millis(1800),
        "heard before its deadline: {took:?}"
    );
    let stats = a.worker.status().stats;
    assert!(
        (1..5).contains(&stats.passed_on),
        "given back a few times, not until maxDeliver: {stats:?}"
    );
    assert_eq!(calls_of(&calls, "short"), Vec::<String>::new(), "never run");
    a.worker.stop().await;
}

/// A server whose user `w` may publish anything but `denied`; `admin` may do everything.
async fn server_denying(denied: &str) -> (NatsServer, TempDir) {
    let store = TempDir(std::env::temp_dir().join(format!("pier-js-deny-{}", free_port())));
    std::fs::create_dir_all(&store.0).unwrap();
    let conf = store.0.join("server.conf");
    std::fs::write(
        &conf,
        format!(
            "jetstream {{ store_dir: \"{}\" }}\nauthorization {{ users: [\n  {{ user: admin, password: pa }}\n  {{ user: w, password: pw, permissions: {{ publish: {{ allow: [\">\"], deny: [\"{denied}\"] }} }} }}\n] }}\n",
            store.0.join("js").display()
        ),
    )
    .unwrap();
    let server = NatsServer::with_args(&["-c", &conf.to_string_lossy()]).await;
    (server, store)
}

#[tokio::test]
async fn a_user_without_a_permission_the_worker_needs_cannot_start_and_no_job_runs() {
    // (what the server config denies, what the error must name)
    let cases = [
        ("$JS.API.STREAM.NAMES", "$JS.API.STREAM.NAMES"),
        (
            "$JS.API.CONSUMER.MSG.NEXT.>",
            "$JS.API.CONSUMER.MSG.NEXT.PIER_JOBS.pier-workers",
        ),
        ("$JS.ACK.>", "$JS.ACK.PIER_JOBS.>"),
    ];
    for (denied, named) in cases {
        let (server, _store) = server_denying(denied).await;
        let admin = async_nats::ConnectOptions::with_user_and_password("admin".into(), "pa".into())
            .connect(&server.url)
            .await
            .unwrap();
        let js = jetstream::new(admin.clone());
        // A job waits in the stream before the worker starts.
        js.create_stream(stream::Config {
            name: "PIER_JOBS".into(),
            subjects: vec!["jobs.rust".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
        publish(&js, HeaderMap::new(), &job("waiting", "task")).await;
        let calls = Calls::default();
        let w = node(
            &server.url,
            "W",
            &calls,
            json!({ "user": "w", "password": "pw" }),
        );
        let error = tokio::time::timeout(Duration::from_secs(30), w.worker.start())
            .await
            .expect("no endless wait for answers the server will never send")
            .expect_err("no start without the permission");
        let text = error.to_string();
        assert_eq!(error.code(), "PIER_REQUEST", "{denied}: {text}");
        assert!(
            text.contains(&format!("may not publish to {named}")),
            "{denied}: the permission is named: {text}"
        );
        assert!(text.contains("JetStream permissions"), "{text}");
        assert_eq!(w.worker.status().state, "stopped", "{denied}");
        assert!(calls.lock().unwrap().is_empty(), "{denied}: no job ran");
        let consumer = js
            .get_stream("PIER_JOBS")
            .await
            .unwrap()
            .consumer_info("pier-workers")
            .await
            .unwrap();
        assert_eq!(
            (consumer.delivered.stream_sequence, consumer.num_pending),
            (0, 1),
            "{denied}: the job is still waiting, never delivered"
        );
    }
}

#[tokio::test]
async fn answers_do_not_ask_which_stream_keeps_their_subject_each_time() {
    // The requester keeps its results in a stream: answers are published the JetStream way.
    let (server, client, js) = jetstream_with_results(Default::default()).await;
    let mut lookups = client.subscribe("$JS.API.STREAM.NAMES").await.unwrap();
    client.flush().await.unwrap();
    let calls = Calls::default();
    let a = node(&server.url, "A", &calls, json!({ "maxConcurrentJobs": 4 }));
    a.worker.start().await.expect("A starts");
    for i in 0..10 {
        publish(&js, HeaderMap::new(), &job(&format!("n{i}"), "task")).await;
    }
    assert!(
        drained(&js, Duration::from_secs(15)).await,
        "all answered and acked"
    );
    let mut results = js.get_stream("RESULTS").await.unwrap();
    let stored = results.info().await.unwrap().state.messages;
    assert_eq!(stored, 10, "every answer stored (PubAck)");
    client.flush().await.unwrap();
    let mut asked = 0;
    while futures_util::FutureExt::now_or_never(lookups.next()).is_some() {
        asked += 1;
    }
    assert_eq!(asked, 1, "asked once, at start, not once per answer");
    a.worker.stop().await;
}
