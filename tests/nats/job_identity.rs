//! protocol.md "Job identity", for jobs in flight: a job's id is its requester's choice, so
//! the worker claims a running job by who sent it and its id (signed), or by a token of its own
//! (unsigned). Two requesters that choose one id never collide; one requester's second copy of
//! a job in flight is still refused. Against a real nats-server.

use crate::common::{config, eventually, NatsServer};
use crate::rig::key_of;
use async_nats::HeaderMap;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use pier_connector::handler::{HandlerResult, JobHandler, JobInput};
use pier_connector::log::MemoryLogger;
use pier_connector::signature::{self, SigningKey};
use pier_connector::worker::Worker;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Holds every job until the test opens the gate, then answers it with its task; records the
/// run key each job was given.
struct Gate {
    open: watch::Receiver<bool>,
    run_keys: Arc<Mutex<Vec<String>>>,
}

impl JobHandler for Gate {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        let mut open = self.open.clone();
        self.run_keys.lock().unwrap().push(job.run_key.clone());
        Box::pin(async move {
            let _ = open.wait_for(|open| *open).await;
            HandlerResult::answered(job.task)
        })
    }
}

struct Rig {
    _server: NatsServer,
    client: async_nats::Client,
    worker: Worker,
    open: watch::Sender<bool>,
    run_keys: Arc<Mutex<Vec<String>>>,
}

impl Rig {
    async fn start() -> Rig {
        let server = NatsServer::start().await;
        let (open, gate) = watch::channel(false);
        let run_keys = Arc::new(Mutex::new(Vec::new()));
        let worker = Worker::new(
            config(&server.url, json!({})),
            Arc::new(Gate {
                open: gate,
                run_keys: run_keys.clone(),
            }),
            Arc::new(MemoryLogger::default()),
        );
        worker.start().await.expect("worker starts");
        let client = async_nats::connect(&server.url).await.unwrap();
        Rig {
            _server: server,
            client,
            worker,
            open,
            run_keys,
        }
    }

    /// Sends job `id` with `task`, signed by `key` when given; returns where its answer arrives.
    async fn send(&self, key: Option<&SigningKey>, id: &str, task: &str) -> async_nats::Subscriber {
        let payload = json!({ "id": id, "task": task }).to_string();
        let inbox = self.client.new_inbox();
        let replies = self.client.subscribe(inbox.clone()).await.unwrap();
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            let signed = signature::sign_request(
                key,
                "jobs.rust",
                &inbox,
                payload.as_bytes(),
                SystemTime::now(),
            );
            headers.insert(signature::SENDER_HEADER, signed.header.as_str());
        }
        self.client
            .publish_with_reply_and_headers("jobs.rust", inbox, headers, payload.into())
            .await
            .unwrap();
        replies
    }

    async fn running(&self, n: usize) -> bool {
        eventually(Duration::from_secs(10), || {
            self.worker.status().stats.in_flight == n as u64
        })
        .await
    }
}

async fn answer(replies: &mut async_nats::Subscriber) -> Value {
    let message = tokio::time::timeout(Duration::from_secs(10), replies.next())
        .await
        .expect("an answer in time")
        .expect("an answer");
    serde_json::from_slice(&message.payload).expect("a JSON answer")
}

#[tokio::test]
async fn two_signed_requesters_that_choose_one_id_both_run_and_each_gets_its_own_answer() {
    let rig = Rig::start().await;
    let (alice, bob) = (key_of(1), key_of(2));
    let mut to_alice = rig.send(Some(&alice), "same", "alice's task").await;
    let mut to_bob = rig.send(Some(&bob), "same", "bob's task").await;
    assert!(
        rig.running(2).await,
        "both run at once: {:?}",
        rig.worker.status().stats
    );
    // Alice again, with the id of her job in flight: refused, as any second copy is.
    let mut again = rig.send(Some(&alice), "same", "alice's copy").await;
    let refused = answer(&mut again).await;
    assert_eq!(refused["error"]["code"], "INVALID_REQUEST", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already running"),
        "{refused}"
    );
    rig.open.send_replace(true);
    let (a, b) = (answer(&mut to_alice).await, answer(&mut to_bob).await);
    assert_eq!(a["result"], "alice's task", "{a}");
    assert_eq!(b["result"], "bob's task", "{b}");
    assert_eq!(
        (a["id"].as_str(), b["id"].as_str()),
        (Some("same"), Some("same"))
    );
    let keys = rig.run_keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "the refused copy never reached the handler");
    assert_ne!(keys[0], keys[1], "each job has a run key of its own");
    assert!(
        keys.iter().all(|k| !k.contains("same") && k.len() >= 22),
        "{keys:?}"
    );
    rig.worker.stop().await;
}

#[tokio::test]
async fn two_unsigned_jobs_with_one_id_both_run() {
    let rig = Rig::start().await;
    let mut first = rig.send(None, "same", "first").await;
    let mut second = rig.send(None, "same", "second").await;
    assert!(
        rig.running(2).await,
        "both run at once: {:?}",
        rig.worker.status().stats
    );
    rig.open.send_replace(true);
    assert_eq!(answer(&mut first).await["result"], "first");
    assert_eq!(answer(&mut second).await["result"], "second");
    assert_eq!(rig.worker.status().stats.completed, 2);
    rig.worker.stop().await;
}
