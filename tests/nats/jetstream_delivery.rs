//! JetStream delivery against real nats-server: a job is acked only after its answer is
//! confirmed (flushed, or stored by the requester's results stream with the job id as
//! `Nats-Msg-Id`), JetStream's unavailability is waited out at start and while running, and a
//! refusal no wait can cure fails the start with its reason.

use crate::common::{config, eventually, free_port, jetstream_with_results, NatsServer, TempDir};
use async_nats::jetstream::{self, stream};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use pier_connector::handler::{HandlerResult, JobHandler, JobInput};
use pier_connector::log::MemoryLogger;
use pier_connector::worker::Worker;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Answers every job with its task after a few milliseconds (so each job runs in a task of
/// its own, as an agent turn does), or after `<ms>` for a task `sleep:<ms>`.
struct Slow;

impl JobHandler for Slow {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        Box::pin(async move {
            let ms = job
                .task
                .strip_prefix("sleep:")
                .and_then(|ms| ms.parse().ok());
            tokio::time::sleep(Duration::from_millis(ms.unwrap_or(5))).await;
            HandlerResult::answered(job.task)
        })
    }
}

fn worker(url: &str, extra: Value) -> Worker {
    let mut settings =
        json!({ "delivery": "jetstream", "ackWaitMs": 1000, "resultSubject": "results" });
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    Worker::new(
        config(url, settings),
        Arc::new(Slow),
        Arc::new(MemoryLogger::default()),
    )
}

/// Publishes a job into the job stream; returns its stream sequence.
async fn publish_job(js: &jetstream::Context, id: &str) -> u64 {
    let payload = json!({ "id": id, "task": format!("task {id}") }).to_string();
    js.publish("jobs.rust", payload.into())
        .await
        .expect("published")
        .await
        .expect("stored")
        .sequence
}

async fn job_stream_messages(js: &jetstream::Context) -> u64 {
    js.get_stream("PIER_JOBS")
        .await
        .expect("the job stream")
        .info()
        .await
        .expect("its info")
        .state
        .messages
}

#[tokio::test]
async fn every_answer_reaches_the_server_before_its_job_is_acked() {
    let server = NatsServer::jetstream().await;
    let worker = worker(&server.url, json!({ "maxConcurrentJobs": 16 }));
    worker.start().await.expect("worker starts");
    let client = async_nats::connect(&server.url).await.unwrap();
    // One subscriber sees both the answers and the acks, in the order the server got them
    // from the worker's one connection.
    let mut seen = client.subscribe(">").await.unwrap();
    client.flush().await.unwrap();
    let js = jetstream::new(client.clone());
    let mut ids_by_seq = HashMap::new();
    for i in 0..200 {
        let id = format!("order-{i}");
        ids_by_seq.insert(publish_job(&js, &id).await, id);
    }
    let mut answered = std::collections::HashSet::new();
    let mut acked = 0;
    while acked < 200 {
        let message = tokio::time::timeout(Duration::from_secs(10), seen.next())
            .await
            .expect("traffic in time")
            .expect("a message");
        let subject = message.subject.as_str();
        if let Some(id) = subject.strip_prefix("results.") {
            answered.insert(id.to_string());
        } else if subject.starts_with("$JS.ACK.") && &message.payload[..] == b"+ACK" {
            let tokens: Vec<&str> = subject.split('.').collect();
            let at = tokens.iter().position(|t| *t == "pier-workers").unwrap();
            let seq: u64 = tokens[at + 2].parse().unwrap();
            let id = &ids_by_seq[&seq];
            assert!(answered.contains(id), "job {id} acked before its answer");
            acked += 1;
        }
    }
    worker.stop().await;
}

#[tokio::test]
async fn an_answer_the_results_stream_refuses_leaves_the_job_in_its_stream_until_it_is_stored() {
    // The requester keeps results in a stream of its own, here with room for one answer.
    let (server, _, js) = jetstream_with_results(stream::Config {
        max_messages: 1,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await;
    let worker = worker(&server.url, json!({}));
    worker.start().await.expect("worker starts");
    publish_job(&js, "kept-1").await;
    let stored_one = eventually(Duration::from_secs(10), || {
        worker.status().stats.completed >= 1
    })
    .await;
    assert!(stored_one, "the first answer is stored");
    let kept_2 = publish_job(&js, "kept-2").await;
    // The results stream is full: the second answer is refused (after the publish attempts),
    // so its job is not acked.
    let refused = eventually(Duration::from_secs(15), || {
        worker.status().stats.reply_failures >= 1
    })
    .await;
    assert!(refused, "the refused answer is counted");
    assert_eq!(
        job_stream_messages(&js).await,
        1,
        "the refused answer's job stays in the work queue"
    );
    // Room again: the job comes back and its answer is stored, then it is acked.
    let mut results = js.get_stream("RESULTS").await.unwrap();
    results.purge().await.unwrap();
    let mut done = false;
    for _ in 0..100 {
        if job_stream_messages(&js).await == 0 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "the job is acked once its answer is stored");
    let info = results.info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    let stored = results
        .get_last_raw_message_by_subject("results.kept-2")
        .await
        .expect("the answer of kept-2 is in the results stream");
    let headers = stored.headers;
    assert_eq!(
        headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(format!("pier-seq-{kept_2}").as_str()),
        "the unsigned job's stream sequence deduplicates a redelivered job's second answer"
    );
    let answer: Value = serde_json::from_slice(&stored.payload).unwrap();
    assert_eq!(answer["result"], "task kept-2");
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_started_before_jetstream_answers_waits_then_serves() {
    let port = free_port();
    // A server without JetStream: its JetStream API does not answer.
    let plain = NatsServer::on_port(port, &[]).await;
    let worker = Arc::new(worker(&plain.url, json!({})));
    let starting = tokio::spawn({
        let worker = worker.clone();
        async move { worker.start().await }
    });
    let waiting = eventually(Duration::from_secs(15), || {
        let status = worker.status();
        status.state == "connecting"
            && status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("JetStream"))
    })
    .await;
    assert!(waiting, "connecting, with why: {:?}", worker.status());
    assert!(!starting.is_finished(), "start waits instead of failing");
    drop(plain);
    let store = TempDir(std::env::temp_dir().join(format!("pier-js-late-{port}")));
    let store_path = store.0.to_string_lossy().to_string();
    let server = NatsServer::on_port(port, &["-js", "-sd", &store_path]).await;
    tokio::time::timeout(Duration::from_secs(20), starting)
        .await
        .expect("start resolves once JetStream answers")
        .unwrap()
        .expect("and succeeds");
    assert_eq!(worker.status().state, "connected");
    let client = async_nats::connect(&server.url).await.unwrap();
    let mut results = client.subscribe("results.late-1").await.unwrap();
    publish_job(&jetstream::new(client.clone()), "late-1").await;
    let answer = tokio::time::timeout(Duration::from_secs(10), results.next())
        .await
        .expect("answered")
        .unwrap();
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(answer["result"], "task late-1");
    worker.stop().await;
}

#[tokio::test]
async fn a_consumer_deleted_under_a_running_worker_is_bound_again() {
    let server = NatsServer::jetstream().await;
    let worker = worker(&server.url, json!({}));
    worker.start().await.expect("worker starts");
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = jetstream::new(client.clone());
    js.get_stream("PIER_JOBS")
        .await
        .unwrap()
        .delete_consumer("pier-workers")
        .await
        .unwrap();
    let mut results = client.subscribe("results.after-1").await.unwrap();
    publish_job(&js, "after-1").await;
    let answer = tokio::time::timeout(Duration::from_secs(15), results.next())
        .await
        .expect("answered after the consumer came back")
        .unwrap();
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(answer["result"], "task after-1");
    assert_eq!(worker.status().state, "connected");
    worker.stop().await;
}

#[tokio::test]
async fn a_refusal_no_wait_can_cure_fails_the_start_with_its_reason() {
    let server = NatsServer::jetstream().await;
    // Three replicas on a single server.
    let replicas = worker(&server.url, json!({ "streamReplicas": 3 }));
    let error = tokio::time::timeout(Duration::from_secs(10), replicas.start())
        .await
        .expect("a prompt refusal")
        .expect_err("no start");
    assert_eq!(error.code(), "PIER_REQUEST");
    assert!(error.to_string().contains("replicas"), "{error}");
    assert_eq!(replicas.status().state, "stopped");
    // Another stream already keeps the job subject.
    let client = async_nats::connect(&server.url).await.unwrap();
    jetstream::new(client)
        .create_stream(stream::Config {
            name: "SOMEONE_ELSES".into(),
            subjects: vec!["jobs.rust".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let overlap = worker(&server.url, json!({}));
    let error = tokio::time::timeout(Duration::from_secs(10), overlap.start())
        .await
        .expect("a prompt refusal")
        .expect_err("no start");
    assert!(error.to_string().contains("overlap"), "{error}");
}

#[tokio::test]
async fn jetstream_api_refused_by_permission_fails_the_start() {
    let store = TempDir(std::env::temp_dir().join(format!("pier-js-perm-{}", free_port())));
    std::fs::create_dir_all(&store.0).unwrap();
    let conf = store.0.join("server.conf");
    std::fs::write(
        &conf,
        format!(
            "jetstream {{ store_dir: \"{}\" }}\nauthorization {{ users: [{{ user: w, password: pw, permissions: {{ publish: {{ deny: [\"$JS.API.>\"] }} }} }}] }}\n",
            store.0.join("js").display()
        ),
    )
    .unwrap();
    let server = NatsServer::with_args(&["-c", &conf.to_string_lossy()]).await;
    let worker = worker(&server.url, json!({ "user": "w", "password": "pw" }));
    let error = tokio::time::timeout(Duration::from_secs(30), worker.start())
        .await
        .expect("no endless wait for an answer the server will never send")
        .expect_err("no start");
    let text = error.to_string().to_ascii_lowercase();
    assert!(text.contains("permissions violation"), "{error}");
    assert_eq!(worker.status().state, "stopped");
}

#[tokio::test]
async fn a_refused_copy_of_a_running_job_never_takes_the_place_of_its_answer() {
    let (server, _, js) = jetstream_with_results(Default::default()).await;
    let worker = worker(&server.url, json!({}));
    worker.start().await.expect("worker starts");
    // Two stream messages with one job id from one signed sender: the second arrives while the
    // first runs and is refused as a duplicate (unsigned, each stream message is a job of its
    // own: protocol.md, "Job identity").
    let sender = crate::rig::key_of(7);
    for _ in 0..2 {
        let payload = json!({ "id": "twice", "task": "sleep:1500" }).to_string();
        let headers = crate::rig::sender_headers(
            &sender,
            "jobs.rust",
            "",
            payload.as_bytes(),
            std::time::SystemTime::now(),
        );
        js.publish_with_headers("jobs.rust", headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let done = eventually(Duration::from_secs(15), || {
        let s = worker.status().stats;
        s.completed == 1 && s.received == 2
    })
    .await;
    assert!(done, "{:?}", worker.status().stats);
    let mut results = js.get_stream("RESULTS").await.unwrap();
    let last = results
        .get_last_raw_message_by_subject("results.twice")
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&last.payload).unwrap();
    assert_eq!(
        answer["result"], "sleep:1500",
        "the real answer is kept: {answer}"
    );
    assert_eq!(results.info().await.unwrap().state.messages, 2);
    worker.stop().await;
}

/// protocol.md "Job identity": the `Nats-Msg-Id` of a stored answer is keyed by who sent the
/// job (the verified key and the id) or, unsigned, by its stream sequence: jobs of two
/// requesters that picked the same id are both answered in a results stream, neither
/// deduplicated away by the other.
#[tokio::test]
async fn answers_of_jobs_with_the_same_id_from_different_requesters_are_all_stored() {
    use pier_connector::signature::{self, SigningKey};
    let (server, _, js) = jetstream_with_results(Default::default()).await;
    let worker = worker(&server.url, json!({}));
    worker.start().await.expect("worker starts");
    let key = |byte: u8| {
        let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, [byte; 32]).unwrap();
        SigningKey::from_seed(&pair.seed().unwrap()).unwrap()
    };
    let mut sent = Vec::new();
    for (who, signer) in [
        ("unsigned-1", None),
        ("unsigned-2", None),
        ("alice", Some(key(1))),
        ("bob", Some(key(2))),
    ] {
        let payload = json!({ "id": "same", "task": who }).to_string();
        let mut headers = async_nats::HeaderMap::new();
        if let Some(signer) = &signer {
            let signed = signature::sign_request(
                signer,
                "jobs.rust",
                "",
                payload.as_bytes(),
                std::time::SystemTime::now(),
            );
            headers.insert(signature::SENDER_HEADER, signed.header.as_str());
        }
        js.publish_with_headers("jobs.rust", headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
        sent.push(who);
        // One after the other, so the order of the stored answers is known.
        let n = sent.len() as u64;
        let ran = eventually(Duration::from_secs(10), || {
            worker.status().stats.completed >= n
        })
        .await;
        assert!(ran, "{who}'s job ran: {:?}", worker.status().stats);
    }
    let mut results = js.get_stream("RESULTS").await.unwrap();
    let stored = results.info().await.unwrap().state.messages;
    let mut answers = Vec::new();
    for seq in 1..=stored {
        let message = results.get_raw_message(seq).await.unwrap();
        let answer: Value = serde_json::from_slice(&message.payload).unwrap();
        answers.push(answer["result"].as_str().unwrap_or_default().to_string());
    }
    answers.sort();
    let mut expected: Vec<String> = sent.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(answers, expected, "every requester's answer is stored");
    worker.stop().await;
}
