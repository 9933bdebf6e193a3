//! Every admission rule in every delivery mode (core request/reply and JetStream pull), and
//! what only one mode has: reply-target fallback, consumer drift, results too large, URL
//! credentials, and a worker started before its server. Real nats-server, no Node.

use crate::common::{config, eventually, free_port, NatsServer};
use crate::rig::{self, key_of, Mode, RigHandler, MODES};
use async_nats::HeaderMap;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use pier_connector::error::PierError;
use pier_connector::handler::{HandlerResult, JobHandler, JobInput};
use pier_connector::log::MemoryLogger;
use pier_connector::worker::Worker;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Echoes the task after sleeping `sleep:<ms>` when the task says so, and records how many
/// jobs ran at once.
#[derive(Default)]
struct Tracking {
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
}

impl JobHandler for Tracking {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        let (running, most, runs) = (self.running.clone(), self.most.clone(), self.runs.clone());
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            if let Some(ms) = job.task.strip_prefix("sleep:") {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            }
            running.fetch_sub(1, Ordering::SeqCst);
            HandlerResult::answered(job.task)
        })
    }
}

/// A worker with a [`Tracking`] handler and a memory logger.
fn tracked_worker(url: &str, extra: Value) -> Worker {
    Worker::new(
        config(url, extra),
        Arc::new(Tracking::default()),
        Arc::new(MemoryLogger::default()),
    )
}

impl RigHandler for Tracking {}

type Rig = rig::Rig<Tracking>;

#[tokio::test]
async fn a_job_nobody_could_be_answered_on_is_never_run() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({})).await;
        rig.publish(None, HeaderMap::new(), &br#"{"id":"n1","task":"x"}"#[..])
            .await;
        let counted = eventually(Duration::from_secs(5), || {
            rig.worker.status().stats.no_reply == 1
        })
        .await;
        assert!(counted, "{mode:?}: counted as noReply");
        // JetStream: terminated, so not redelivered after ackWaitMs (1 s).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let stats = rig.worker.status().stats;
        assert_eq!((stats.received, stats.no_reply), (1, 1), "{mode:?}");
        assert_eq!(rig.handler.runs.load(Ordering::SeqCst), 0, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn an_unreadable_payload_is_answered_and_not_run() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({})).await;
        let reply = rig.ask(&b"{\"id\":\"p1\",\"task\":"[..]).await;
        assert_eq!(reply["error"]["code"], "PARSE_ERROR", "{mode:?}");
        assert_eq!(
            reply["id"], "p1",
            "{mode:?}: the id is echoed when readable"
        );
        let reply = rig
            .ask(&br#"{"id":"p2","task":5,"type":"task_request"}"#[..])
            .await;
        assert_eq!(reply["error"]["code"], "INVALID_REQUEST", "{mode:?}");
        assert_eq!(rig.handler.runs.load(Ordering::SeqCst), 0, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn a_sender_not_allowed_is_unauthorized_in_every_mode() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({ "allowedSenders": ["alice"] })).await;
        let job =
            |sender: &str| json!({ "id": sender, "task": "hi", "meta": { "sender": sender } });
        let refused = rig.ask(job("mallory").to_string()).await;
        assert_eq!(refused["error"]["code"], "UNAUTHORIZED", "{mode:?}");
        let anonymous = rig
            .ask(json!({ "id": "a", "task": "hi" }).to_string())
            .await;
        assert_eq!(anonymous["error"]["code"], "UNAUTHORIZED", "{mode:?}");
        let allowed = rig.ask(job("alice").to_string()).await;
        assert_eq!(allowed["result"], "hi", "{mode:?}");
        assert_eq!(rig.handler.runs.load(Ordering::SeqCst), 1, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn no_more_jobs_run_at_once_than_there_are_slots() {
    for mode in MODES {
        let rig = Rig::start(mode, json!({ "maxConcurrentJobs": 2 })).await;
        let replies =
            futures_util::future::join_all((0..5).map(|i| {
                rig.ask(json!({ "id": format!("c{i}"), "task": "sleep:300" }).to_string())
            }))
            .await;
        let codes: Vec<&str> = replies
            .iter()
            .map(|r| r["error"]["code"].as_str().unwrap_or("ok"))
            .collect();
        assert_eq!(rig.handler.most.load(Ordering::SeqCst), 2, "{mode:?}");
        match mode {
            // The excess is refused at once, for the requester to retry elsewhere.
            Mode::Core => assert_eq!(
                codes.iter().filter(|c| **c == "OVERLOADED").count(),
                3,
                "{codes:?}"
            ),
            // The excess waits in the stream and runs when a slot frees.
            Mode::JetStream => assert!(codes.iter().all(|c| *c == "ok"), "{codes:?}"),
        }
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn a_result_too_large_for_the_server_is_answered_result_too_large() {
    let conf = std::env::temp_dir().join(format!("pier-maxpayload-{}.conf", std::process::id()));
    std::fs::write(&conf, "max_payload: 4096\njetstream: enabled\n").unwrap();
    for mode in MODES {
        let store = std::env::temp_dir().join(format!("pier-mp-{mode:?}-{}", free_port()));
        let server =
            NatsServer::with_args(&["-c", conf.to_str().unwrap(), "-sd", store.to_str().unwrap()])
                .await;
        let rig = Rig::on(server, mode, json!({})).await;
        let reply = rig
            .ask(json!({ "id": "big", "task": "x".repeat(3500) }).to_string())
            .await;
        assert_eq!(reply["error"]["code"], "RESULT_TOO_LARGE", "{mode:?}");
        assert_eq!(reply["id"], "big");
        let small = rig.ask(json!({ "task": "fits" }).to_string()).await;
        assert_eq!(small["result"], "fits", "{mode:?}");
        assert_eq!(rig.worker.status().stats.reply_failures, 0, "{mode:?}");
        rig.worker.stop().await;
        let _ = std::fs::remove_dir_all(store);
    }
}

#[tokio::test]
async fn jetstream_falls_back_to_the_result_subject_for_unusable_reply_headers() {
    let rig = Rig::start(Mode::JetStream, json!({ "resultSubject": "results" })).await;
    let mut results = rig.client.subscribe("results.>").await.unwrap();
    rig.client.flush().await.unwrap();
    for (header, id, subject) in [
        ("", "j1", "results.j1"),
        ("has space", "j2", "results.j2"),
        ("results.*", "j3", "results.j3"),
        ("ok.x", "a b\r\nc.d", "results.a_b__c_d"),
    ] {
        let mut headers = HeaderMap::new();
        headers.insert("Pier-Reply-To", header);
        let payload = json!({ "id": id, "task": "t" }).to_string();
        let expected = if header == "ok.x" { "ok.x" } else { subject };
        let mut direct = rig.client.subscribe(expected.to_string()).await.unwrap();
        rig.client.flush().await.unwrap();
        rig.publish(None, headers, payload).await;
        let reply = tokio::time::timeout(Duration::from_secs(5), direct.next())
            .await
            .unwrap_or_else(|_| panic!("answer for {id:?} on {expected}"))
            .unwrap();
        let body: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(body["id"], id);
    }
    let _ = tokio::time::timeout(Duration::from_millis(100), results.next()).await;
    assert_eq!(rig.worker.status().stats.reply_failures, 0);
    rig.worker.stop().await;
}

#[tokio::test]
async fn jetstream_consumer_settings_changed_in_the_config_are_applied() {
    let server = NatsServer::jetstream().await;
    let url = server.url.clone();
    let first = tracked_worker(
        &url,
        json!({ "delivery": "jetstream", "ackWaitMs": 30000, "maxDeliver": 5 }),
    );
    first.start().await.unwrap();
    first.stop().await;
    let second = tracked_worker(
        &url,
        json!({ "delivery": "jetstream", "ackWaitMs": 700, "maxDeliver": 3 }),
    );
    second.start().await.unwrap();
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("PIER_JOBS")
        .await
        .unwrap()
        .get_consumer("pier-workers")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_millis(700));
    assert_eq!(info.config.max_deliver, 3);
    second.stop().await;
}

#[tokio::test]
async fn a_token_in_the_url_authenticates_and_never_shows() {
    let server = NatsServer::with_args(&["--auth", "s3cret-token-in-url"]).await;
    let url = format!("nats://s3cret-token-in-url@127.0.0.1:{}", server.port);
    let worker = tracked_worker(&url, json!({}));
    worker.start().await.expect("the URL's token is used");
    let status = worker.status();
    assert_eq!(status.state, "connected");
    assert!(!format!("{status:?}").contains("s3cret"), "{status:?}");
    worker.stop().await;

    let wrong = format!("nats://wrong@127.0.0.1:{}", server.port);
    let refused = tracked_worker(&wrong, json!({}));
    let error = refused
        .start()
        .await
        .expect_err("a wrong token is refused at once");
    assert!(
        matches!(
            error,
            PierError::Connect {
                permanent: true,
                ..
            }
        ),
        "{error}"
    );
    assert!(!error.to_string().contains("wrong@"), "{error}");
}

#[tokio::test]
async fn a_worker_started_before_its_server_takes_jobs_once_it_is_up() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let worker = Arc::new(tracked_worker(&url, json!({ "connectTimeoutMs": 500 })));
    let starting = tokio::spawn({
        let worker = worker.clone();
        async move { worker.start().await }
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(worker.status().state, "connecting");
    assert!(worker
        .status()
        .last_error
        .is_some_and(|e| e.contains("PIER_CONNECT")));
    let server = NatsServer::on_port(port, &[]).await;
    tokio::time::timeout(Duration::from_secs(10), starting)
        .await
        .expect("start resolves once the server is up")
        .unwrap()
        .expect("started");
    let client = async_nats::connect(&server.url).await.unwrap();
    let reply = client
        .request("jobs.rust", json!({ "task": "late" }).to_string().into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["result"], "late");
    worker.stop().await;

    // Bounded for scripts, and stop() ends a start still waiting.
    let bounded = tracked_worker(
        "nats://127.0.0.1:1",
        json!({ "maxConnectAttempts": 2, "connectTimeoutMs": 200 }),
    );
    assert!(matches!(
        bounded.start().await,
        Err(PierError::Connect { .. })
    ));
    let waiting = Arc::new(tracked_worker(
        "nats://127.0.0.1:1",
        json!({ "connectTimeoutMs": 200 }),
    ));
    let start = tokio::spawn({
        let waiting = waiting.clone();
        async move { waiting.start().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    waiting.stop().await;
    assert!(matches!(start.await.unwrap(), Err(PierError::Stopped)));
    assert_eq!(waiting.status().state, "stopped");
}

/// The requester names the reply subject; the worker publishes there with its own permissions.
/// A subject under `$` would let a stranger use them, e.g. to delete a stream.
#[tokio::test]
async fn a_reply_subject_under_dollar_is_refused_in_every_mode() {
    for mode in MODES {
        let rig = Rig::on(NatsServer::jetstream().await, mode, json!({})).await;
        let js = async_nats::jetstream::new(rig.client.clone());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "VICTIM".into(),
            subjects: vec!["victim.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        let deleter = "$JS.API.STREAM.DELETE.VICTIM";
        let job = br#"{"id":"d1","task":"x"}"#;
        match mode {
            Mode::Core => rig
                .client
                .publish_with_reply("jobs.rust", deleter, job[..].into())
                .await
                .unwrap(),
            Mode::JetStream => {
                let mut headers = HeaderMap::new();
                headers.insert("Pier-Reply-To", deleter);
                rig.publish(None, headers, job.to_vec()).await;
            }
        }
        rig.client.flush().await.unwrap();
        let counted = eventually(Duration::from_secs(5), || {
            rig.worker.status().stats.no_reply == 1
        })
        .await;
        assert!(counted, "{mode:?}: not run, counted as noReply");
        assert_eq!(rig.handler.runs.load(Ordering::SeqCst), 0, "{mode:?}");
        assert!(
            js.get_stream("VICTIM").await.is_ok(),
            "{mode:?}: the stream is still there"
        );
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn reply_subject_prefixes_narrow_where_answers_go() {
    let rig = Rig::start(Mode::Core, json!({ "replySubjectPrefixes": ["_INBOX."] })).await;
    let answered = rig.ask(&br#"{"id":"r1","task":"hi"}"#[..]).await;
    assert_eq!(answered["result"], "hi", "an _INBOX. reply is answered");
    let mut elsewhere = rig.client.subscribe("results.r2").await.unwrap();
    rig.client
        .publish_with_reply(
            "jobs.rust",
            "results.r2",
            br#"{"id":"r2","task":"hi"}"#[..].into(),
        )
        .await
        .unwrap();
    let counted = eventually(Duration::from_secs(5), || {
        rig.worker.status().stats.no_reply == 1
    })
    .await;
    assert!(counted, "a reply outside the prefixes is not run");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), elsewhere.next())
            .await
            .is_err(),
        "and nothing is published there"
    );
    assert_eq!(rig.handler.runs.load(Ordering::SeqCst), 1);
    rig.worker.stop().await;
}

/// protocol.md "Job identity": a job in flight is claimed by who sent it and its id. The same
/// sender's second copy of a job in flight is refused, and the id is free again once the first
/// is answered; another sender's job with that id runs beside it.
#[tokio::test]
async fn a_second_job_of_one_sender_with_the_id_of_its_job_in_flight_is_refused_in_every_mode() {
    let (alice, bob) = (key_of(11), key_of(12));
    for mode in MODES {
        let rig = Arc::new(Rig::start(mode, json!({})).await);
        let first = tokio::spawn({
            let (rig, alice) = (rig.clone(), alice.clone());
            async move {
                rig.ask_signed(&alice, br#"{"id":"same","task":"sleep:800"}"#)
                    .await
            }
        });
        assert!(
            eventually(Duration::from_secs(5), || rig
                .worker
                .status()
                .stats
                .in_flight
                == 1)
            .await,
            "{mode:?}: the first job runs"
        );
        let second = rig
            .ask_signed(&alice, br#"{"id":"same","task":"again"}"#)
            .await;
        assert_eq!(second["error"]["code"], "INVALID_REQUEST", "{mode:?}");
        assert_eq!(second["id"], "same", "{mode:?}");
        let others = rig
            .ask_signed(&bob, br#"{"id":"same","task":"bob's"}"#)
            .await;
        assert_eq!(
            others["result"], "bob's",
            "{mode:?}: another sender's job runs"
        );
        assert_eq!(
            first.await.unwrap()["result"],
            "sleep:800",
            "{mode:?}: the first is unharmed"
        );
        let third = rig
            .ask_signed(&alice, br#"{"id":"same","task":"again"}"#)
            .await;
        assert_eq!(
            third["result"], "again",
            "{mode:?}: the id is free once answered"
        );
        assert_eq!(rig.handler.runs.load(Ordering::SeqCst), 3, "{mode:?}");
        rig.worker.stop().await;
    }
}

#[tokio::test]
async fn a_job_paying_less_than_the_floor_is_answered_price_too_low_before_a_slot() {
    for mode in MODES {
        let ledger =
            std::env::temp_dir().join(format!("pier-floor-{mode:?}-{}/ledger.jsonl", free_port()));
        let rig = Rig::start(
            mode,
            json!({ "minJobPrice": 5, "maxConcurrentJobs": 1, "ledgerFile": ledger }),
        )
        .await;
        let job = |id: &str, task: &str, meta: Value| {
            json!({ "id": id, "task": task, "meta": meta }).to_string()
        };
        // The one slot is busy: a job refused for its price is refused at once in core mode,
        // not OVERLOADED; JetStream takes it once the slot frees and refuses it then.
        let busy = rig.ask(job("busy", "sleep:1500", json!({ "price": 5 })));
        let cheap = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let asked = std::time::Instant::now();
            (
                rig.ask(job("cheap", "secret-task-text", json!({ "price": 1 })))
                    .await,
                asked.elapsed(),
            )
        };
        let (busy, (cheap, waited)) = tokio::join!(busy, cheap);
        assert_eq!(busy["result"], "sleep:1500", "{mode:?}");
        assert_eq!(cheap["error"]["code"], "PRICE_TOO_LOW", "{mode:?}: {cheap}");
        assert_eq!(cheap["id"], "cheap");
        let message = cheap["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("at least 5") && message.contains("offers 1"),
            "{message}"
        );
        if mode == Mode::Core {
            assert!(waited < Duration::from_millis(1000), "{mode:?}: {waited:?}");
        }
        for (id, meta) in [
            ("none", json!({})),
            ("text", json!({ "price": "9" })),
            ("low", json!({ "price": 4.99 })),
        ] {
            let reply = rig.ask(job(id, "x", meta)).await;
            assert_eq!(reply["error"]["code"], "PRICE_TOO_LOW", "{mode:?} {id}");
        }
        let paid = rig.ask(job("paid", "ok", json!({ "price": 5 }))).await;
        assert_eq!(paid["result"], "ok", "{mode:?}");
        // Refused jobs never reached the handler; JetStream terminated them (ackWaitMs is 1 s:
        // a refusal left unacked would come back and be answered again).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(rig.handler.runs.load(Ordering::SeqCst), 2, "{mode:?}");
        let stats = rig.worker.status().stats;
        assert_eq!(stats.received, 6, "{mode:?}: nothing redelivered");
        assert_eq!(
            stats.errors_by_code.get("PRICE_TOO_LOW"),
            Some(&4),
            "{mode:?}"
        );
        assert_eq!(stats.rejected, 4, "{mode:?}");
        assert_eq!(stats.earned, 10.0, "{mode:?}");
        rig.worker.stop().await;

        // The ledger: the two jobs that ran, what they earned, never a task.
        let text = std::fs::read_to_string(&ledger).expect("a ledger");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{mode:?}: {text}");
        assert_eq!(lines[0]["id"], "busy");
        assert_eq!(lines[1]["id"], "paid");
        for line in &lines {
            assert_eq!(line["outcome"], "completed");
            assert_eq!(line["earned"], 5.0);
            assert_eq!(line["cost"], 0.0);
            assert!(line.get("tokensIn").is_none(), "the echo measures nothing");
        }
        assert!(
            !text.contains("sleep:") && !text.contains("secret-task-text"),
            "{text}"
        );
        let days = pier_connector::ledger::read_days(&ledger, None).unwrap();
        assert_eq!((days.len(), days[0].jobs, days[0].earned), (1, 2, 10.0));
        let _ = std::fs::remove_dir_all(ledger.parent().unwrap());
    }
}

/// Reports what each attempt used; `fail-once` fails its first attempt (JetStream retries it).
#[derive(Default)]
struct Metered {
    attempts: Arc<AtomicUsize>,
}

impl JobHandler for Metered {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        let usage = Some(pier_connector::handler::Usage {
            input: 100,
            output: 20,
            cost: 0.25,
            ..Default::default()
        });
        Box::pin(async move {
            let answer = if job.task == "fail-once" && attempt == 0 {
                HandlerResult::failed(pier_connector::error::JobError::new(
                    pier_connector::error::ErrorCode::ExecutionFailed,
                    "first attempt",
                ))
            } else {
                HandlerResult::answered(job.task)
            };
            answer.with_usage(usage)
        })
    }
}

#[tokio::test]
async fn a_retried_attempt_counts_what_it_spent_and_the_job_once() {
    let ledger = std::env::temp_dir().join(format!("pier-retry-{}/ledger.jsonl", free_port()));
    let rig = rig::Rig::start_with(
        Mode::JetStream,
        json!({ "ledgerFile": ledger }),
        Metered::default(),
    )
    .await;
    let handler = rig.handler.clone();
    let reply = rig
        .ask(json!({ "id": "r1", "task": "fail-once", "meta": { "price": 3 } }).to_string())
        .await;
    assert_eq!(reply["result"], "fail-once");
    assert_eq!(handler.attempts.load(Ordering::SeqCst), 2);
    let stats = rig.worker.status().stats;
    assert_eq!(
        (stats.tokens_in, stats.tokens_out),
        (200, 40),
        "both attempts"
    );
    assert_eq!(stats.spent, 0.5);
    rig.worker.stop().await;
    let text = std::fs::read_to_string(&ledger).unwrap();
    let outcomes: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["outcome"].to_string())
        .collect();
    assert_eq!(outcomes, ["\"retried\"", "\"completed\""], "{text}");
    let days = pier_connector::ledger::read_days(&ledger, None).unwrap();
    assert_eq!(
        (
            days[0].jobs,
            days[0].earned,
            days[0].spent,
            days[0].tokens_in
        ),
        (1, 3.0, 0.5, 200)
    );
    let _ = std::fs::remove_dir_all(ledger.parent().unwrap());
}
