//! A worker on a real nats-server of its own, in either delivery mode (core request/reply or a
//! JetStream pull consumer), with a test handler; and a requester that sends jobs the way that
//! mode's requesters do. The rule tests run each case in both modes through it.

use crate::common::{config, NatsServer};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use pier_connector::handler::JobHandler;
use pier_connector::log::MemoryLogger;
use pier_connector::signature::{self, SigningKey};
use pier_connector::worker::Worker;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Core,
    JetStream,
}

pub const MODES: [Mode; 2] = [Mode::Core, Mode::JetStream];

/// Where the rig's worker takes jobs (and, in JetStream mode, what its stream stores).
pub const SUBJECT: &str = "jobs.rust";

/// A test handler a rig can make by itself, with the settings its tests assume.
pub trait RigHandler: JobHandler + Default + 'static {
    /// Worker settings under each test's own.
    fn settings() -> Value {
        json!({})
    }
}

pub struct Rig<H> {
    pub server: NatsServer,
    pub client: async_nats::Client,
    pub worker: Worker,
    pub handler: Arc<H>,
    pub mode: Mode,
}

impl<H: RigHandler> Rig<H> {
    /// A fresh server for `mode` and a started worker on it with a new handler: `settings` over
    /// the handler's, `ackWaitMs` 1000 (a redelivery within a test's time) and the mode's
    /// delivery.
    pub async fn start(mode: Mode, settings: Value) -> Rig<H> {
        Rig::start_with(mode, merged(H::settings(), settings), H::default()).await
    }

    /// The same on a server the test started.
    pub async fn on(server: NatsServer, mode: Mode, settings: Value) -> Rig<H> {
        Rig::on_with(server, mode, merged(H::settings(), settings), H::default()).await
    }
}

impl<H: JobHandler + 'static> Rig<H> {
    /// [`Rig::start`] with a handler the test made.
    pub async fn start_with(mode: Mode, settings: Value, handler: H) -> Rig<H> {
        let server = match mode {
            Mode::Core => NatsServer::start().await,
            Mode::JetStream => NatsServer::jetstream().await,
        };
        Rig::on_with(server, mode, settings, handler).await
    }

    pub async fn on_with(server: NatsServer, mode: Mode, settings: Value, handler: H) -> Rig<H> {
        let mut base = json!({ "ackWaitMs": 1000 });
        if mode == Mode::JetStream {
            base["delivery"] = json!("jetstream");
        }
        let all = merged(base, settings);
        let handler = Arc::new(handler);
        let worker = Worker::new(
            config(&server.url, all),
            handler.clone(),
            Arc::new(MemoryLogger::default()),
        );
        worker.start().await.expect("worker starts");
        let client = async_nats::connect(&server.url).await.unwrap();
        Rig {
            server,
            client,
            worker,
            handler,
            mode,
        }
    }

    /// Publishes a job as this mode's requesters do: `reply` as its NATS reply (core), or into
    /// the stream with `Pier-Reply-To: reply` (JetStream); with no reply at all when `None`.
    pub async fn publish(
        &self,
        reply: Option<&str>,
        mut headers: HeaderMap,
        payload: impl AsRef<[u8]>,
    ) {
        let payload = bytes::Bytes::copy_from_slice(payload.as_ref());
        match (self.mode, reply) {
            // A plain PUB, as most requesters send it, unless there are headers to carry.
            (Mode::Core, Some(reply)) if headers.is_empty() => self
                .client
                .publish_with_reply(SUBJECT, reply.to_string(), payload)
                .await
                .unwrap(),
            (Mode::Core, Some(reply)) => self
                .client
                .publish_with_reply_and_headers(SUBJECT, reply.to_string(), headers, payload)
                .await
                .unwrap(),
            (Mode::Core, None) => self.client.publish(SUBJECT, payload).await.unwrap(),
            (Mode::JetStream, reply) => {
                if let Some(reply) = reply {
                    headers.insert("Pier-Reply-To", reply);
                }
                async_nats::jetstream::new(self.client.clone())
                    .publish_with_headers(SUBJECT, headers, payload)
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
        self.client.flush().await.unwrap();
    }

    /// Sends a job with the headers `headers_for(reply subject)` makes, and waits (10 s at
    /// most) for its answer.
    pub async fn send(
        &self,
        payload: impl AsRef<[u8]>,
        headers_for: impl FnOnce(&str) -> HeaderMap,
    ) -> async_nats::Message {
        let inbox = self.client.new_inbox();
        let mut replies = self.client.subscribe(inbox.clone()).await.unwrap();
        self.publish(Some(&inbox), headers_for(&inbox), payload)
            .await;
        tokio::time::timeout(Duration::from_secs(10), replies.next())
            .await
            .expect("a reply in time")
            .expect("a reply")
    }

    /// Sends an unsigned job and returns its answer's JSON.
    pub async fn ask(&self, payload: impl AsRef<[u8]>) -> Value {
        self.ask_as(None, payload).await
    }

    /// Sends a job signed by `key` (`Pier-Sender`) and returns its answer's JSON.
    pub async fn ask_signed(&self, key: &SigningKey, payload: impl AsRef<[u8]>) -> Value {
        self.ask_as(Some(key), payload).await
    }

    /// Sends a job, signed by `key` when given, and returns its answer's JSON.
    pub async fn ask_as(&self, key: Option<&SigningKey>, payload: impl AsRef<[u8]>) -> Value {
        let payload = payload.as_ref();
        let reply = self
            .send(payload, |reply| match key {
                Some(key) => sender_headers(key, SUBJECT, reply, payload, SystemTime::now()),
                None => HeaderMap::new(),
            })
            .await;
        serde_json::from_slice(&reply.payload).expect("a JSON reply")
    }
}

/// `over` with `settings`' keys set on it.
fn merged(mut over: Value, settings: Value) -> Value {
    if let (Some(all), Some(settings)) = (over.as_object_mut(), settings.as_object()) {
        all.extend(settings.clone());
    }
    over
}

/// `Pier-Sender` for a job on `subject` signed by `key` for the reply line `reply`, at `at`.
pub fn sender_headers(
    key: &SigningKey,
    subject: &str,
    reply: &str,
    payload: &[u8],
    at: SystemTime,
) -> HeaderMap {
    let signed = signature::sign_request(key, subject, reply, payload, at);
    let mut headers = HeaderMap::new();
    headers.insert(signature::SENDER_HEADER, signed.header.as_str());
    headers
}

/// A requester's key made from one repeated byte: fixed, so a failure is reproducible.
pub fn key_of(byte: u8) -> SigningKey {
    SigningKey::from_seed(&seed_of(byte)).unwrap()
}

/// The seed of [`key_of`]`(byte)`, as a config's `signingSeed` takes it.
pub fn seed_of(byte: u8) -> String {
    nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, [byte; 32])
        .unwrap()
        .seed()
        .unwrap()
}
