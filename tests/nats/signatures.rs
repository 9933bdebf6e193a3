//! Signed requests and results (protocol.md) in both delivery modes, against a real
//! nats-server: which signed jobs run, each reason one is refused, the worker's `Pier-Worker`
//! on its replies, and the publisher's checks of it.

use crate::common::{config, NatsServer};
use crate::rig::{self, key_of, seed_of, sender_headers, Mode, RigHandler, MODES, SUBJECT};
use async_nats::HeaderMap;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use pier_connector::error::{ErrorCode, JobError, PierError};
use pier_connector::handler::{HandlerResult, JobHandler, JobInput};
use pier_connector::log::MemoryLogger;
use pier_connector::publisher::{PublishOptions, Publisher};
use pier_connector::signature::{self, SigningKey};
use pier_connector::worker::Worker;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The requester's and the worker's keys (fixed, so failures are reproducible).
fn requester() -> SigningKey {
    key_of(1)
}

fn worker_key() -> SigningKey {
    key_of(2)
}

/// Echoes the task and records each job's verified sender key. A task `fail-once` fails its
/// first run (JetStream then redelivers it).
#[derive(Default)]
struct Recording {
    keys: Arc<Mutex<Vec<Option<String>>>>,
}

impl JobHandler for Recording {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        let keys = self.keys.clone();
        Box::pin(async move {
            let first = {
                let mut keys = keys.lock().unwrap();
                keys.push(job.sender_key.clone());
                keys.len() == 1
            };
            if job.task == "fail-once" && first {
                return HandlerResult::failed(JobError::new(
                    ErrorCode::ExecutionFailed,
                    "first attempt",
                ));
            }
            HandlerResult::answered(job.task)
        })
    }
}

impl RigHandler for Recording {
    /// The worker signs its results with [`worker_key`].
    fn settings() -> Value {
        json!({ "signingSeed": seed_of(2) })
    }
}

type Rig = rig::Rig<Recording>;

impl Rig {
    /// A job signed by `key`: its answer's JSON and the whole reply (its headers).
    async fn ask_signed_reply(
        &self,
        key: &SigningKey,
        payload: &[u8],
    ) -> (Value, async_nats::Message) {
        let reply = self
            .send(payload, |reply| {
                sender_headers(key, SUBJECT, reply, payload, SystemTime::now())
            })
            .await;
        (body(&reply), reply)
    }

    fn runs(&self) -> usize {
        self.handler.keys.lock().unwrap().len()
    }
}

fn body(reply: &async_nats::Message) -> Value {
    serde_json::from_slice(&reply.payload).expect("a JSON reply")
}

fn assert_unauthorized(reply: &Value, why: &str, mode: Mode) {
    assert_eq!(reply["error"]["code"], "UNAUTHORIZED", "{mode:?}: {reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "{mode:?}: {message:?} names {why:?}");
}

fn job(id: &str) -> Vec<u8> {
    json!({ "id": id, "task": "hi", "meta": { "sender": "alice" } })
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn a_signed_job_runs_with_its_key_and_the_reply_is_signed() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({ "senderTrust": "signed" })).await;
        let payload = job("s1");
        let mut nonce = String::new();
        let reply = rig
            .send(&payload, |reply| {
                let s = signature::sign_request(
                    &requester(),
                    "jobs.rust",
                    reply,
                    &payload,
                    SystemTime::now(),
                );
                nonce = s.nonce.clone();
                let mut h = HeaderMap::new();
                h.insert(signature::SENDER_HEADER, s.header.as_str());
                h
            })
            .await;
        let value = body(&reply);
        assert_eq!(value["result"], "hi", "{mode:?}: {value}");
        assert_eq!(
            rig.handler.keys.lock().unwrap().as_slice(),
            &[Some(requester().public_key().to_string())],
            "{mode:?}: the handler gets the verified key"
        );
        let header = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(signature::WORKER_HEADER))
            .expect("a Pier-Worker header");
        let key = signature::verify_result(header.as_str(), "s1", &nonce, &reply.payload)
            .expect("the reply's signature verifies");
        assert_eq!(key, worker_key().public_key(), "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn an_unsigned_job_is_unauthorized_under_signed_trust() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({ "senderTrust": "signed" })).await;
        let reply = rig.send(&job("u1"), |_| HeaderMap::new()).await;
        assert_unauthorized(&body(&reply), "signed jobs only", mode);
        // Refusals are signed too (nonce empty: the request was unsigned).
        let header = reply
            .headers
            .as_ref()
            .unwrap()
            .get(signature::WORKER_HEADER);
        assert!(
            signature::verify_result(header.unwrap().as_str(), "u1", "", &reply.payload).is_ok()
        );
        assert_eq!(rig.runs(), 0, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn a_key_not_in_allowed_senders_is_unauthorized() {
    for mode in MODES {
        let listed = requester().public_key().to_string();
        let rig = Rig::start(
            mode,
            json!({ "allowedSenders": [listed, "alice"], "senderTrust": "signed" }),
        )
        .await;
        let (refused, _) = rig.ask_signed_reply(&key_of(3), &job("k1")).await;
        assert_eq!(refused["error"]["code"], "UNAUTHORIZED", "{mode:?}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("does not take jobs from this sender"),
            "{mode:?}: {refused}: meta.sender alice is a name, and names do not count under signed"
        );
        let (allowed, _) = rig.ask_signed_reply(&requester(), &job("k2")).await;
        assert_eq!(allowed["result"], "hi", "{mode:?}");
        assert_eq!(rig.runs(), 1, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn a_payload_changed_after_signing_is_unauthorized() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({})).await;
        let reply = rig
            .send(&job("changed"), |reply| {
                sender_headers(
                    &requester(),
                    "jobs.rust",
                    reply,
                    &job("original"),
                    SystemTime::now(),
                )
            })
            .await;
        assert_unauthorized(&body(&reply), "bad signature", mode);
        assert_eq!(body(&reply)["id"], "changed");
        assert_eq!(rig.runs(), 0, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn a_job_signed_for_another_subject_is_unauthorized() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({})).await;
        let payload = job("o1");
        let reply = rig
            .send(&payload, |reply| {
                sender_headers(
                    &requester(),
                    "jobs.elsewhere",
                    reply,
                    &payload,
                    SystemTime::now(),
                )
            })
            .await;
        assert_unauthorized(&body(&reply), "bad signature", mode);
        // The publish subject is accepted: a marketplace may relay submitted jobs.
        let payload = job("o2");
        let reply = rig
            .send(&payload, |reply| {
                sender_headers(
                    &requester(),
                    "jobs.submit",
                    reply,
                    &payload,
                    SystemTime::now(),
                )
            })
            .await;
        assert_eq!(body(&reply)["result"], "hi", "{mode:?}");
        assert_eq!(rig.runs(), 1, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn a_replayed_job_is_unauthorized() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({})).await;
        let payload = job("r1");
        let inbox = rig.client.new_inbox();
        let headers = sender_headers(
            &requester(),
            "jobs.rust",
            &inbox,
            &payload,
            SystemTime::now(),
        );
        let mut replies = rig.client.subscribe(inbox.clone()).await.unwrap();
        for _ in 0..2 {
            rig.publish(Some(&inbox), headers.clone(), &payload).await;
        }
        let mut answers = Vec::new();
        for _ in 0..2 {
            let reply = tokio::time::timeout(Duration::from_secs(10), replies.next())
                .await
                .expect("two answers")
                .unwrap();
            answers.push(body(&reply));
        }
        // The refusal may overtake the result (core mode batches results).
        answers.sort_by_key(|a| a["ok"] != json!(true));
        assert_eq!(answers[0]["result"], "hi", "{mode:?}: {answers:?}");
        assert_unauthorized(&answers[1], "replay", mode);
        assert_eq!(rig.runs(), 1, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn an_expired_signature_is_unauthorized() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({ "signatureMaxAgeMs": 5000 })).await;
        let payload = job("e1");
        let then = SystemTime::now() - Duration::from_secs(30);
        let reply = rig
            .send(&payload, |reply| {
                sender_headers(&requester(), "jobs.rust", reply, &payload, then)
            })
            .await;
        assert_unauthorized(&body(&reply), "outside the allowed window", mode);
        assert_eq!(rig.runs(), 0, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn a_forged_header_is_unauthorized_even_under_any_trust() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({ "senderTrust": "any" })).await;
        let payload = job("f1");
        let reply = rig
            .send(&payload, |reply| {
                // Alice's key, signed by someone else.
                let forged = signature::sign_request(
                    &key_of(9),
                    "jobs.rust",
                    reply,
                    &payload,
                    SystemTime::now(),
                );
                let mut header: Value = serde_json::from_str(&forged.header).unwrap();
                header["key"] = json!(requester().public_key());
                let mut h = HeaderMap::new();
                h.insert(signature::SENDER_HEADER, header.to_string().as_str());
                h
            })
            .await;
        assert_unauthorized(&body(&reply), "bad signature", mode);
        let garbage = rig
            .send(&job("f2"), |_| {
                let mut h = HeaderMap::new();
                h.insert(signature::SENDER_HEADER, "not json");
                h
            })
            .await;
        assert_unauthorized(&body(&garbage), "malformed", mode);
        // Unsigned jobs still run under any.
        let unsigned = rig.send(&job("f3"), |_| HeaderMap::new()).await;
        assert_eq!(body(&unsigned)["result"], "hi", "{mode:?}");
        assert_eq!(rig.runs(), 1, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn jetstream_redelivery_of_the_same_message_is_not_a_replay() {
    let rig = Rig::start(Mode::JetStream, json!({})).await;
    let payload = json!({ "id": "again", "task": "fail-once" })
        .to_string()
        .into_bytes();
    let (reply, _) = rig.ask_signed_reply(&requester(), &payload).await;
    assert_eq!(reply["result"], "fail-once", "{reply}");
    let keys = rig.handler.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "failed once, then ran again: {keys:?}");
    assert!(keys
        .iter()
        .all(|k| k.as_deref() == Some(requester().public_key())));
    rig.worker.stop().await;
}

/// The publisher (pier_publish, the CLI) signs with its signingSeed and checks the worker's.
#[tokio::test]
async fn the_publisher_signs_and_checks_the_worker_in_every_mode() {
    for mode in MODES {
        let rig = Rig::start(
            mode,
            json!({ "senderTrust": "signed", "allowedSenders": [requester().public_key()] }),
        )
        .await;
        let mut settings = json!({
            "publishSubject": "jobs.rust",
            "signingSeed": seed_of(1),
            "trustedWorkers": [worker_key().public_key()],
        });
        if mode == Mode::JetStream {
            settings["delivery"] = json!("jetstream");
        }
        let logger = Arc::new(MemoryLogger::default());
        let publisher =
            Publisher::connect(&config(&rig.server.url, settings.clone()), logger.clone())
                .await
                .unwrap();
        let reply = publisher
            .publish("signed both ways", PublishOptions::default())
            .await
            .unwrap();
        assert_eq!(reply["result"], "signed both ways", "{mode:?}: {reply}");
        assert_eq!(reply["workerKey"], worker_key().public_key(), "{mode:?}");
        publisher.close().await;

        settings["trustedWorkers"] = json!([key_of(4).public_key()]);
        let picky = Publisher::connect(&config(&rig.server.url, settings), logger)
            .await
            .unwrap();
        let error = picky
            .publish("who are you", PublishOptions::default())
            .await
            .expect_err("an unknown worker is refused");
        assert_eq!(error.code(), "PIER_UNTRUSTED_WORKER", "{mode:?}: {error}");
        picky.close().await;
        rig.worker.stop().await;
    }
}

/// A responder that signs its replies wrongly, or not at all.
#[tokio::test]
async fn the_publisher_refuses_a_forged_or_missing_worker_signature() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(&server.url).await.unwrap();
    let mut jobs = client.subscribe("jobs.fake").await.unwrap();
    client.flush().await.unwrap();
    let responder = tokio::spawn({
        let client = client.clone();
        async move {
            let mut n = 0;
            while let Some(job) = jobs.next().await {
                n += 1;
                let id: Value = serde_json::from_slice(&job.payload).unwrap();
                let reply =
                    json!({ "version": "1.0", "id": id["id"], "type": "task_result", "ok": true,
                    "result": "r", "latencyMs": 1, "worker": { "id": "w", "wallet": null } })
                    .to_string();
                let mut headers = HeaderMap::new();
                if n == 1 {
                    // Signed over another payload.
                    let forged = signature::sign_result(
                        &worker_key(),
                        id["id"].as_str(),
                        "",
                        b"other",
                        SystemTime::now(),
                    );
                    headers.insert(signature::WORKER_HEADER, forged.as_str());
                }
                client
                    .publish_with_headers(job.reply.unwrap(), headers, reply.into())
                    .await
                    .unwrap();
            }
        }
    });
    let publisher = Publisher::connect(
        &config(&server.url, json!({ "publishSubject": "jobs.fake" })),
        Arc::new(MemoryLogger::default()),
    )
    .await
    .unwrap();
    let forged = publisher.publish("t", PublishOptions::default()).await;
    assert!(
        matches!(&forged, Err(e @ PierError::WorkerSignature(_)) if e.code() == "PIER_WORKER_SIGNATURE"),
        "{forged:?}"
    );
    let unsigned = publisher
        .publish("t", PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(
        unsigned["result"], "r",
        "unsigned replies are fine without trustedWorkers"
    );
    assert!(unsigned.get("workerKey").is_none());
    publisher.close().await;

    let picky = Publisher::connect(
        &config(
            &server.url,
            json!({ "publishSubject": "jobs.fake", "trustedWorkers": [worker_key().public_key()] }),
        ),
        Arc::new(MemoryLogger::default()),
    )
    .await
    .unwrap();
    let error = picky
        .publish("t", PublishOptions::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "PIER_UNTRUSTED_WORKER", "{error}");
    picky.close().await;
    responder.abort();
}

#[tokio::test]
async fn plain_names_in_allowed_senders_are_warned_about_once_and_keys_are_logged() {
    let server = NatsServer::start().await;
    let logger = Arc::new(MemoryLogger::default());
    let worker = Worker::new(
        config(
            &server.url,
            json!({ "allowedSenders": ["alice", requester().public_key()] }),
        ),
        Arc::new(Recording::default()),
        logger.clone(),
    );
    worker.start().await.unwrap();
    let client = async_nats::connect(&server.url).await.unwrap();
    let payload = job("l1");
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    let headers = sender_headers(
        &requester(),
        "jobs.rust",
        &inbox,
        &payload,
        SystemTime::now(),
    );
    client
        .publish_with_reply_and_headers("jobs.rust", inbox, headers, payload.into())
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), replies.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body(&reply)["result"], "hi");
    worker.stop().await;
    let lines = logger.lines();
    let warnings: Vec<_> = lines
        .iter()
        .filter(|(_, l)| l.contains("plain name"))
        .collect();
    assert_eq!(warnings.len(), 1, "{lines:?}");
    assert!(warnings[0].1.contains("self-declared"), "{lines:?}");
    let from = format!("job l1 from {} completed", requester().public_key());
    assert!(lines.iter().any(|(_, l)| l.contains(&from)), "{lines:?}");
}

/// Headers are not signed: a copy of someone's signed request, with the copier's own NATS reply
/// and the victim's inbox as Pier-Reply-To, verifies. It is answered on the reply line the
/// victim signed, never to the copier.
#[tokio::test]
async fn a_signed_job_is_answered_on_the_reply_it_signed_not_the_copiers() {
    let rig = Rig::start(Mode::Core, json!({})).await;
    let payload = job("copied");
    let victim = rig.client.new_inbox();
    let copier = rig.client.new_inbox();
    let mut at_victim = rig.client.subscribe(victim.clone()).await.unwrap();
    let mut at_copier = rig.client.subscribe(copier.clone()).await.unwrap();
    let mut headers = sender_headers(
        &requester(),
        "jobs.rust",
        &victim,
        &payload,
        SystemTime::now(),
    );
    headers.insert("Pier-Reply-To", victim.as_str());
    rig.client
        .publish_with_reply_and_headers("jobs.rust", copier, headers, payload.into())
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), at_victim.next())
        .await
        .expect("the victim is answered")
        .unwrap();
    assert_eq!(body(&answer)["result"], "hi");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), at_copier.next())
            .await
            .is_err(),
        "the copier gets nothing"
    );
    rig.worker.stop().await;
}

/// Holds a job whose task is `hold` until it is released; echoes the others.
#[derive(Default)]
struct Gate {
    open: Arc<tokio::sync::Notify>,
    runs: Arc<Mutex<Vec<String>>>,
}

impl JobHandler for Gate {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        let (open, runs) = (self.open.clone(), self.runs.clone());
        Box::pin(async move {
            runs.lock().unwrap().push(job.id.clone());
            if job.task == "hold" {
                open.notified().await;
            }
            HandlerResult::answered(job.task)
        })
    }
}

/// Publishes `payload` with `headers` and `inbox` as its reply, and reads the next reply there.
async fn exchange(
    client: &async_nats::Client,
    replies: &mut async_nats::Subscriber,
    inbox: &str,
    headers: HeaderMap,
    payload: &[u8],
) -> Value {
    client
        .publish_with_reply_and_headers(
            "jobs.rust",
            inbox.to_string(),
            headers,
            payload.to_vec().into(),
        )
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), replies.next())
        .await
        .expect("a reply in time")
        .expect("a reply");
    body(&reply)
}

/// Core mode: a job refused for lack of slots is answered OVERLOADED. (In JetStream mode the
/// worker pulls only as many jobs as it has free slots, and gives back any it cannot run.)
#[tokio::test]
async fn signed_jobs_refused_for_lack_of_slots_never_fill_the_replay_memory() {
    const CAP: usize = 20;
    let server = NatsServer::start().await;
    let handler = Arc::new(Gate::default());
    let worker = Worker::new(
        config(
            &server.url,
            json!({ "maxConcurrentJobs": 1, "signingSeed": seed_of(2) }),
        ),
        handler.clone(),
        Arc::new(MemoryLogger::default()),
    )
    .with_replay_memory_cap(CAP);
    worker.start().await.expect("worker starts");
    let client = async_nats::connect(&server.url).await.unwrap();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    client.flush().await.unwrap();

    // The one slot is taken.
    let held = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request(
                    "jobs.rust",
                    json!({ "id": "held", "task": "hold" }).to_string().into(),
                )
                .await
                .unwrap()
        }
    });
    let full = crate::common::eventually(Duration::from_secs(5), || {
        worker.status().stats.in_flight == 1
    })
    .await;
    assert!(full, "the held job runs");

    // A flood of validly signed jobs from a key of its own, more than the memory holds: all
    // refused OVERLOADED for lack of slots.
    let stranger = key_of(9);
    let mut kept = None;
    for i in 0..CAP * 2 {
        let payload = job(&format!("flood-{i}"));
        let headers = sender_headers(&stranger, "jobs.rust", &inbox, &payload, SystemTime::now());
        let reply = exchange(&client, &mut replies, &inbox, headers.clone(), &payload).await;
        assert_eq!(reply["error"]["code"], "OVERLOADED", "{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("limit of 1 jobs"),
            "{reply}"
        );
        kept = Some((payload, headers));
    }
    handler.open.notify_one();
    let released = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the held job ends")
        .unwrap();
    assert_eq!(body(&released)["result"], "hold");
    crate::common::eventually(Duration::from_secs(5), || {
        worker.status().stats.in_flight == 0
    })
    .await;

    // A genuine signed job is answered, not refused for a full memory.
    let payload = job("genuine");
    let headers = sender_headers(
        &requester(),
        "jobs.rust",
        &inbox,
        &payload,
        SystemTime::now(),
    );
    let reply = exchange(&client, &mut replies, &inbox, headers, &payload).await;
    assert_eq!(reply["result"], "hi", "{reply}");

    // A job refused before it ran may be sent again as it was: it never ran. Once it has run,
    // the same copy is a replay.
    let (payload, headers) = kept.unwrap();
    let again = exchange(&client, &mut replies, &inbox, headers.clone(), &payload).await;
    assert_eq!(again["result"], "hi", "{again}");
    let replay = exchange(&client, &mut replies, &inbox, headers, &payload).await;
    assert_unauthorized(&replay, "replay", Mode::Core);
    assert_eq!(
        handler.runs.lock().unwrap().as_slice(),
        ["held", "genuine", &format!("flood-{}", CAP * 2 - 1)],
        "only the jobs answered with a result ran"
    );
    worker.stop().await;
}
