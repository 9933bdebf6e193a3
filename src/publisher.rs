//! Sending a `task_request` and waiting for its reply: the `pier_publish` tool and the CLI's
//! `publish`. Every request is signed (`Pier-Sender`) with the requester's own key: its
//! `signingSeed`, else the key kept in its identity file (made on the first publish), never the
//! NATS login key. A reply's `Pier-Worker` is verified when present (required when
//! `trustedWorkers` is set).

use crate::config::{Config, Delivery};
use crate::connection::{self, Attempts};
use crate::error::{PierError, RequestOp};
use crate::log::SharedLogger;
use crate::protocol::{self, REPLY_HEADER};
use crate::signature::{self, SigningKey};
use crate::stats::Stats;
use async_nats::{Client, HeaderMap, StatusCode};
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How much longer than the job's own `timeoutMs` the publisher waits, so a worker's TIMEOUT
/// reply, sent at the deadline, still arrives.
pub const REPLY_GRACE_MS: u64 = 1000;

#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    pub system_prompt: Option<String>,
    pub timeout_ms: Option<u64>,
    pub meta: Option<Value>,
    /// Ask the worker for progress (protocol v1.1) and watch it: see [`Watch`].
    pub watch: Option<Arc<Watch>>,
}

/// How a requester watches its job (protocol v1.1): it asks for progress
/// (`Pier-Progress-To`, an inbox of the request's own), hands each `task_progress` of its job
/// to `on_progress`, and sends the job's `task_cancel` once `cancel` is cancelled (as soon as
/// the worker's `accepted` names where; the answer, `CANCELLED` or whatever came first, is
/// still awaited). Once the worker said `accepted`, 3 × its `intervalMs` without any message
/// makes the job lost ([`PierError::Lost`]) before the fixed timeout would.
#[derive(Default)]
pub struct Watch {
    pub on_progress: Option<OnProgress>,
    pub cancel: tokio_util::sync::CancellationToken,
}

/// Called with each `task_progress` of a watched job.
pub type OnProgress = Box<dyn Fn(&Value) + Send + Sync>;

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("on_progress", &self.on_progress.is_some())
            .field("cancelled", &self.cancel.is_cancelled())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ConnectionReport {
    pub connected: bool,
    pub server_name: String,
    pub server_version: String,
    pub rtt_ms: f64,
}

pub struct Publisher {
    client: Client,
    subject: String,
    default_timeout_ms: u64,
    delivery: Delivery,
    /// The requester's key: given (a worker's, whose connection this is), or resolved from
    /// the config on the first publish, so a client that only asks for status or the live
    /// workers makes no key.
    signing_key: std::sync::OnceLock<SigningKey>,
    /// The config the key is resolved from when none was given.
    identity_config: Option<Box<Config>>,
    trusted_workers: Option<HashSet<String>>,
}

impl Publisher {
    pub async fn connect(config: &Config, logger: SharedLogger) -> Result<Publisher, PierError> {
        // A publisher tries once: a script that publishes wants an answer, not a wait.
        let client = connection::connect(
            config,
            logger,
            Arc::new(Stats::default()),
            "pier-publisher",
            Attempts::AtMost(1),
        )
        .await?;
        Ok(Publisher::with_client(client, config, None))
    }

    /// A publisher over `client`, signing with `key` (a running worker's), or when `None` with
    /// the config's identity, resolved on the first publish.
    pub fn with_client(client: Client, config: &Config, key: Option<SigningKey>) -> Publisher {
        let signing_key = std::sync::OnceLock::new();
        let identity_config = match key {
            Some(key) => {
                let _ = signing_key.set(key);
                None
            }
            None => Some(Box::new(config.clone())),
        };
        Publisher {
            client,
            subject: config.publish_subject.clone(),
            default_timeout_ms: config.job_timeout_ms,
            delivery: config.delivery,
            signing_key,
            identity_config,
            trusted_workers: config
                .trusted_workers
                .as_ref()
                .map(|keys| keys.iter().cloned().collect()),
        }
    }

    /// The key requests are signed with (resolved, and its file made, on first use).
    pub fn signing_key(&self) -> Result<&SigningKey, PierError> {
        if let Some(key) = self.signing_key.get() {
            return Ok(key);
        }
        let config = self
            .identity_config
            .as_ref()
            .ok_or_else(|| PierError::Config("no signing key".into()))?;
        let identity = crate::identity::resolve(config)?;
        Ok(self.signing_key.get_or_init(|| identity.key))
    }

    /// Sends one task and returns the reply, parsed. A `task_error` reply is a reply, not an
    /// error: the caller reads `ok`.
    pub async fn publish(&self, task: &str, options: PublishOptions) -> Result<Value, PierError> {
        if task.trim().is_empty() {
            return Err(PierError::InvalidTask(
                "task must be a non-empty string".into(),
            ));
        }
        let meta = match options.meta {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(m @ Value::Object(_)) => m,
            Some(_) => return Err(PierError::InvalidTask("meta must be an object".into())),
        };
        let timeout_ms = options.timeout_ms.unwrap_or(self.default_timeout_ms).max(1);
        let id = protocol::new_id();
        let payload = protocol::encode_request(
            &id,
            task,
            options.system_prompt.as_deref(),
            timeout_ms,
            &meta,
        );
        let max_payload = self.client.max_payload();
        if payload.len() > max_payload {
            return Err(PierError::TaskTooLarge {
                bytes: payload.len(),
                max_payload,
            });
        }
        let wait_ms = timeout_ms.saturating_add(REPLY_GRACE_MS);
        let wait = Duration::from_millis(wait_ms);
        let key = self.signing_key()?;
        let progress = match &options.watch {
            Some(watch) => Some(self.progress_inbox(&id, watch.clone()).await?),
            None => None,
        };
        let (reply, nonce) = match self.delivery {
            Delivery::Jetstream => {
                self.publish_to_stream(key, &id, payload, wait, progress)
                    .await?
            }
            Delivery::Core => self.signed_request(key, payload, wait, progress).await?,
        };
        self.read_reply(reply, &id, nonce.as_deref())
    }

    /// Core mode, signed: the signature covers the reply subject, so the request gets an
    /// inbox of its own that is known before it is sent. Returns the reply and the nonce.
    async fn signed_request(
        &self,
        key: &SigningKey,
        payload: Vec<u8>,
        wait: Duration,
        progress: Option<Watching>,
    ) -> Result<(async_nats::Message, Option<String>), PierError> {
        let op = RequestOp::Publish;
        let (inbox, replies) = self.reply_inbox(op).await?;
        let signed =
            signature::sign_request(key, &self.subject, &inbox, &payload, SystemTime::now());
        let mut headers = HeaderMap::new();
        headers.insert(signature::SENDER_HEADER, signed.header.as_str());
        if let Some(watching) = &progress {
            headers.insert(protocol::PROGRESS_TO_HEADER, watching.inbox.as_str());
        }
        self.client
            .publish_with_reply_and_headers(self.subject.clone(), inbox, headers, payload.into())
            .await
            .map_err(|e| PierError::request(op, e))?;
        let reply = self.first_reply(replies, wait, op, progress).await?;
        if reply.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(PierError::NoResponders {
                subject: self.subject.clone(),
            });
        }
        Ok((reply, Some(signed.nonce)))
    }

    fn timed_out(&self, wait: Duration) -> PierError {
        PierError::Timeout {
            subject: self.subject.clone(),
            timeout_ms: wait.as_millis() as u64,
        }
    }

    /// The reply, parsed; its `Pier-Worker` verified for the request this publisher sent (`id`,
    /// and `nonce` when signed: the reply's own id field could be anybody's) and its key added
    /// as `workerKey`. A bad signature is an error, never a result.
    fn read_reply(
        &self,
        reply: async_nats::Message,
        id: &str,
        nonce: Option<&str>,
    ) -> Result<Value, PierError> {
        let mut value: Value =
            serde_json::from_slice(&reply.payload).map_err(PierError::InvalidReply)?;
        let header = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(signature::WORKER_HEADER));
        let Some(header) = header else {
            return match self.trusted_workers {
                Some(_) => Err(PierError::UntrustedWorker(
                    "the reply is not signed (no Pier-Worker header) and trustedWorkers is set"
                        .into(),
                )),
                None => Ok(value),
            };
        };
        let key = signature::verify_result(
            header.as_str(),
            id,
            nonce.unwrap_or_default(),
            &reply.payload,
        )
        .map_err(|r| PierError::WorkerSignature(r.0))?;
        if let Some(trusted) = &self.trusted_workers {
            if !trusted.contains(&key) {
                return Err(PierError::UntrustedWorker(format!(
                    "the reply is signed by {key}, which is not in trustedWorkers"
                )));
            }
        }
        if let Value::Object(fields) = &mut value {
            fields.insert("workerKey".into(), Value::String(key));
        }
        Ok(value)
    }

    /// JetStream mode: publishes the request into the stream (deduplicated by job id, the
    /// reply inbox in `Pier-Reply-To`, which is the reply line a signature covers) and waits
    /// for its reply. Returns the reply and the request's nonce, when signed.
    async fn publish_to_stream(
        &self,
        key: &SigningKey,
        id: &str,
        payload: Vec<u8>,
        wait: Duration,
        progress: Option<Watching>,
    ) -> Result<(async_nats::Message, Option<String>), PierError> {
        let op = RequestOp::JetStreamPublish;
        let (inbox, replies) = self.reply_inbox(op).await?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        headers.insert(REPLY_HEADER, inbox.as_str());
        if let Some(watching) = &progress {
            headers.insert(protocol::PROGRESS_TO_HEADER, watching.inbox.as_str());
        }
        let signed =
            signature::sign_request(key, &self.subject, &inbox, &payload, SystemTime::now());
        headers.insert(signature::SENDER_HEADER, signed.header.as_str());
        let nonce = Some(signed.nonce);
        async_nats::jetstream::new(self.client.clone())
            .publish_with_headers(self.subject.clone(), headers, payload.into())
            .await
            .map_err(|e| PierError::request(op, e))?
            .await
            .map_err(|e| PierError::request(op, e))?;
        Ok((self.first_reply(replies, wait, op, progress).await?, nonce))
    }

    /// An inbox of this request's own, subscribed before the request leaves (a signature
    /// covers the reply subject, and a JetStream request names it in Pier-Reply-To).
    async fn reply_inbox(
        &self,
        op: RequestOp,
    ) -> Result<(String, async_nats::Subscriber), PierError> {
        let inbox = self.client.new_inbox();
        let replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| PierError::request(op, e))?;
        Ok((inbox, replies))
    }

    /// An inbox for job `id`'s progress, subscribed before the request leaves.
    async fn progress_inbox(&self, id: &str, watch: Arc<Watch>) -> Result<Watching, PierError> {
        let inbox = self.client.new_inbox();
        let messages = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| PierError::request(RequestOp::Publish, e))?;
        Ok(Watching {
            inbox,
            messages,
            id: id.to_string(),
            watch,
        })
    }

    /// The first message on `replies` within `wait`; while watching progress, each progress
    /// message is handed on, a cancel is sent when asked for, and a job silent for 3 ×
    /// `intervalMs` after its `accepted` is lost.
    async fn first_reply(
        &self,
        mut replies: async_nats::Subscriber,
        wait: Duration,
        op: RequestOp,
        progress: Option<Watching>,
    ) -> Result<async_nats::Message, PierError> {
        let Some(mut watching) = progress else {
            return match tokio::time::timeout(wait, replies.next()).await {
                Ok(Some(reply)) => Ok(reply),
                Ok(None) => Err(PierError::request(op, "connection closed")),
                Err(_) => Err(self.timed_out(wait)),
            };
        };
        let deadline = tokio::time::Instant::now() + wait;
        // From the worker's `accepted`: where to cancel, and how long silence may last.
        let mut cancel_at: Option<(String, String)> = None;
        let mut silence: Option<Duration> = None;
        let mut last_heard = tokio::time::Instant::now();
        let mut cancel_sent = false;
        let watch = watching.watch.clone();
        let mut progress_open = true;
        loop {
            let lost_at = silence.map(|s| last_heard + s);
            let want_cancel = !cancel_sent && cancel_at.is_some();
            // Progress first: the worker sends its last partial before its answer, and the
            // connection hands both to their subscriptions in that order, so every progress
            // message of the job is already waiting when its answer is; an unbiased select
            // could return the answer with some of them still unread.
            tokio::select! {
                biased;
                message = watching.messages.next(), if progress_open => {
                    let Some(message) = message else {
                        // Its subscription ended (the connection closing): the reply decides.
                        progress_open = false;
                        continue;
                    };
                    let Ok(progress) = serde_json::from_slice::<Value>(&message.payload) else {
                        continue;
                    };
                    if progress["type"] != "task_progress" || progress["id"] != watching.id.as_str() {
                        continue;
                    }
                    last_heard = tokio::time::Instant::now();
                    if progress["state"] == "accepted" {
                        let cancel = &progress["cancel"];
                        if let (Some(subject), Some(token)) =
                            (cancel["subject"].as_str(), cancel["token"].as_str())
                        {
                            cancel_at = Some((subject.to_string(), token.to_string()));
                        }
                        silence = progress["intervalMs"]
                            .as_u64()
                            .filter(|ms| *ms > 0)
                            .map(|ms| Duration::from_millis(ms.saturating_mul(3)));
                    }
                    if let Some(on_progress) = &watch.on_progress {
                        on_progress(&progress);
                    }
                }
                reply = replies.next() => {
                    return reply.ok_or_else(|| PierError::request(op, "connection closed"));
                }
                _ = watch.cancel.cancelled(), if want_cancel => {
                    if let Some((subject, token)) = &cancel_at {
                        let cancel = protocol::encode_cancel(&watching.id, token);
                        self.client
                            .publish(subject.clone(), cancel.into())
                            .await
                            .map_err(|e| PierError::request(op, e))?;
                    }
                    cancel_sent = true;
                }
                _ = sleep_until_some(lost_at) => {
                    return Err(PierError::Lost {
                        subject: self.subject.clone(),
                        silent_ms: silence.map_or(0, |s| s.as_millis() as u64),
                    });
                }
                _ = tokio::time::sleep_until(deadline) => return Err(self.timed_out(wait)),
            }
        }
    }

    /// The connection as seen from here: state, server and a measured round trip.
    pub async fn connection_report(&self) -> Result<ConnectionReport, PierError> {
        let rtt = connection::round_trip(&self.client, Duration::from_secs(5)).await?;
        let info = self.client.server_info();
        Ok(ConnectionReport {
            connected: matches!(
                self.client.connection_state(),
                async_nats::connection::State::Connected
            ),
            server_name: info.server_name,
            server_version: info.version,
            rtt_ms: rtt.as_secs_f64() * 1000.0,
        })
    }

    /// The live workers (`$SRV.STATS.pier-worker` answers within `wait`).
    pub async fn workers(&self, wait: Duration) -> Result<Vec<Value>, PierError> {
        crate::discovery::discover(&self.client, wait).await
    }

    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.drain()).await;
    }
}

/// A request's progress being watched: its inbox, the subscription, the job's id.
struct Watching {
    inbox: String,
    messages: async_nats::Subscriber,
    id: String,
    watch: Arc<Watch>,
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
