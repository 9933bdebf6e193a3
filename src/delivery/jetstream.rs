//! `delivery: "jetstream"`: at-least-once jobs from a durable pull consumer on a work-queue
//! stream. The pull budget is the free concurrency slots; a running job sends `in_progress`
//! heartbeats; a failed turn is retried with backoff up to `maxDeliver`; a job answered with a
//! final error is terminated, and one whose answer could not be confirmed is given back (nak),
//! never acked as done. A job this worker will not run for a reason of its own (OVERLOADED,
//! RATE_LIMITED, BUDGET_EXHAUSTED) is given back for another worker, after a short delay, until
//! its last delivery or its deadline is near; then it is answered with the refusal.
//!
//! A job is acked only after its answer is confirmed: to a reply subject that a stream keeps,
//! the answer is published the JetStream way (PubAck awaited, the job's answer key as
//! `Nats-Msg-Id`: its sender's key and id, or its stream sequence when unsigned, so the answer of
//! a redelivered job is deduplicated and two requesters' same ids never are); to any other subject it goes over core
//! NATS, flushed before the ack, and is at most once like every core message.
//!
//! Whether a stream keeps a reply subject is asked once per subject class (the subject without
//! its last token) and kept for a minute (5 s when none does), not asked before every answer.
//!
//! JetStream being briefly unavailable (a leader election, a node restarting) is waited out,
//! at start and while running; only a refusal that no wait can heal (a missing permission, a
//! stream whose config conflicts) fails the start. The permissions a worker needs are asked at
//! start ([`StreamContext::check_permissions`]), so a missing one blocks the start with its
//! name instead of costing a paid turn on every job.

use super::Health;
use crate::config::Config;
use crate::error::{ErrorCode, JobError, PierError, RequestOp};
use crate::outbox::{self, Reply};
use crate::pipeline::{Inbound, Pipeline, ReplyTarget, Settle, FINAL_FLUSH};
use crate::protocol::REPLY_HEADER;
use crate::subject;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamByNameErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{ConsumerErrorKind, ConsumerUpdateErrorKind};
use async_nats::jetstream::ErrorCode as ApiCode;
use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, HeaderMap, Subject};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Attempts at a JetStream publish of an answer (each waits for its PubAck) before the job is
/// given back; a leader election usually ends within them.
const PUBLISH_ATTEMPTS: u32 = 4;

/// At most this long an answered job's ack is retried (an election here takes 5–8 s).
const ACK_RETRY_FOR: Duration = Duration::from_secs(15);

/// How long a pull asks the server for jobs.
const PULL_EXPIRES: Duration = Duration::from_millis(500);

/// Past its expiry, how long a pull waits for the server's word that it ended. The client's own
/// limit is 5 s, which a consumer leader that died holding the pull makes every worker wait.
const PULL_GRACE: Duration = Duration::from_secs(1);

/// How long one look at the consumer may take while recovering: during an election nobody
/// answers, and the next look comes sooner than the client's 5 s request timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a permission probe at start waits for its answer. A request the server refuses by
/// permission is never answered (the refusal comes as an -ERR line); one merely unanswered is
/// asked again.
const PERMISSION_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a verdict on whether a stream keeps a reply subject class is used without asking
/// again: a minute when one does (should the stream go, the JetStream publish fails at once
/// and the subject is asked again), a few seconds when none does (a stream made meanwhile
/// would store the answers published over core NATS, but unconfirmed).
const REPLY_STREAMS_TTL: Duration = Duration::from_secs(60);
const NO_REPLY_STREAM_TTL: Duration = Duration::from_secs(5);

/// At most this many subject classes are remembered (each requester's own inbox is one).
const REPLY_STREAMS_CAP: usize = 1024;

/// A job refused for a reason of this worker's own is given back after this delay, doubled at
/// each delivery, at most [`PASS_ON_MAX_DELAY`]: long enough that the worker does not pull it
/// straight back, short enough that another worker soon has it.
const PASS_ON_DELAY: Duration = Duration::from_millis(100);
const PASS_ON_MAX_DELAY: Duration = Duration::from_secs(2);

/// A job with less than this (plus its next delay) left of its deadline is answered with the
/// refusal instead of given back, while its requester still waits for it.
const PASS_ON_MARGIN: Duration = Duration::from_secs(1);

pub(crate) struct PullSource {
    consumer: PullConsumer,
    stream: Arc<StreamContext>,
    health: Arc<Health>,
}

/// What every job of the source needs: the JetStream context its answers are published with,
/// and the settings that decide where they go and how the job is settled.
struct StreamContext {
    js: jetstream::Context,
    client: Client,
    config: Arc<Config>,
    /// Whether a stream keeps a reply subject, by subject class.
    replies: ReplyStreams,
}

/// What the worker learned of which reply subjects a stream keeps: a verdict per subject class
/// (the subject without its last token: `results.<id>` is `results`), with when it was learned.
#[derive(Default)]
struct ReplyStreams(Mutex<HashMap<String, (bool, Instant)>>);

/// A reply subject's class: all but its last token (a one-token subject is its own class).
fn subject_class(subject: &str) -> &str {
    subject.rsplit_once('.').map_or(subject, |(class, _)| class)
}

impl ReplyStreams {
    /// The verdict on `subject`'s class, and whether it is still fresh.
    fn get(&self, subject: &str) -> Option<(bool, bool)> {
        let known = crate::sync::lock(&self.0);
        known.get(subject_class(subject)).map(|(kept, at)| {
            let ttl = if *kept {
                REPLY_STREAMS_TTL
            } else {
                NO_REPLY_STREAM_TTL
            };
            (*kept, at.elapsed() < ttl)
        })
    }

    fn set(&self, subject: &str, kept: bool) {
        let mut known = crate::sync::lock(&self.0);
        if known.len() >= REPLY_STREAMS_CAP {
            known.retain(|_, (_, at)| at.elapsed() < REPLY_STREAMS_TTL);
            if known.len() >= REPLY_STREAMS_CAP {
                known.clear();
            }
        }
        known.insert(subject_class(subject).to_string(), (kept, Instant::now()));
    }

    fn forget(&self, subject: &str) {
        crate::sync::lock(&self.0).remove(subject_class(subject));
    }
}

/// Why the stream or the consumer could not be bound, and whether waiting can cure it.
#[derive(Debug)]
struct Refusal {
    why: String,
    heals: bool,
    /// What the start failed at: the stream and consumer, or the permissions.
    op: RequestOp,
}

impl Refusal {
    /// A refusal with the server's JetStream API error: an election or a node coming back
    /// cures some; the others (a config conflict, JetStream off, a bad name) need the operator.
    fn api(op: &str, error: &jetstream::Error) -> Refusal {
        let code = error.error_code();
        let heals = [
            ApiCode::CLUSTER_NOT_AVAILABLE,
            ApiCode::CLUSTER_NO_PEERS,
            ApiCode::INSUFFICIENT_RESOURCES,
            ApiCode::CLUSTER_NOT_ASSIGNED,
            ApiCode::CLUSTER_NOT_LEADER,
            ApiCode::CLUSTER_INCOMPLETE,
            ApiCode::CLUSTER_PEER_NOT_MEMBER,
            ApiCode::STREAM_OFFLINE,
            ApiCode::CONSUMER_OFFLINE,
            ApiCode::STREAM_NOT_FOUND,
            ApiCode::CONSUMER_NOT_FOUND,
            ApiCode::PEER_REMAP,
            ApiCode::CLUSTER_SERVER_MEMBER_CHANGE_INFLIGHT,
        ]
        .contains(&code);
        Refusal {
            why: format!("JetStream {op}: {error}"),
            heals,
            op: RequestOp::JetStreamStream,
        }
    }

    /// No answer, or no JetStream answering yet: what an election or a restart looks like.
    fn unanswered(op: &str, error: impl std::fmt::Display) -> Refusal {
        Refusal {
            why: format!("JetStream {op}: {error}"),
            heals: true,
            op: RequestOp::JetStreamStream,
        }
    }

    fn permanent(op: &str, error: impl std::fmt::Display) -> Refusal {
        Refusal {
            why: format!("JetStream {op}: {error}"),
            heals: false,
            op: RequestOp::JetStreamStream,
        }
    }

    /// The server refused a publish the worker needs by permission: no wait cures it.
    fn denied(why: String) -> Refusal {
        Refusal {
            why,
            heals: false,
            op: RequestOp::JetStreamPermissions,
        }
    }

    fn of_stream(op: &str, error: &jetstream::context::CreateStreamError) -> Refusal {
        match error.kind() {
            CreateStreamErrorKind::JetStream(api) => Refusal::api(op, &api),
            CreateStreamErrorKind::EmptyStreamName
            | CreateStreamErrorKind::InvalidStreamName
            | CreateStreamErrorKind::DomainAndExternalSet => Refusal::permanent(op, error),
            _ => Refusal::unanswered(op, error),
        }
    }

    fn of_consumer(op: &str, error: &jetstream::stream::ConsumerError) -> Refusal {
        match error.kind() {
            ConsumerErrorKind::JetStream(api) => Refusal::api(op, &api),
            ConsumerErrorKind::InvalidName | ConsumerErrorKind::InvalidConsumerType => {
                Refusal::permanent(op, error)
            }
            _ => Refusal::unanswered(op, error),
        }
    }

    fn of_consumer_update(op: &str, error: &jetstream::stream::ConsumerUpdateError) -> Refusal {
        match error.kind() {
            ConsumerUpdateErrorKind::JetStream(api) => Refusal::api(op, &api),
            ConsumerUpdateErrorKind::InvalidName | ConsumerUpdateErrorKind::InvalidConsumerType => {
                Refusal::permanent(op, error)
            }
            _ => Refusal::unanswered(op, error),
        }
    }
}

/// Waits between attempts: 250 ms, doubling, at most 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(250))
    }

    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        wait
    }
}

/// The work-queue stream over the job subject, with the configured replicas.
fn stream_config(config: &Config) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: config.stream_name.clone(),
        subjects: vec![config.subject.clone()],
        retention: jetstream::stream::RetentionPolicy::WorkQueue,
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        num_replicas: config.stream_replicas,
        ..Default::default()
    }
}

/// The stream (created if missing) and the durable consumer the workers share. A stream whose
/// replicas, or a consumer whose `ackWaitMs` / `maxDeliver`, differ from the config is updated,
/// so a changed setting is never silently ignored. The consumer's replicas are left at 0: it
/// follows the stream's.
async fn bind(js: &jetstream::Context, config: &Config) -> Result<PullConsumer, Refusal> {
    let stream = js
        .get_or_create_stream(stream_config(config))
        .await
        .map_err(|e| Refusal::of_stream("stream", &e))?;
    let current = &stream.cached_info().config;
    if current.num_replicas != config.stream_replicas {
        let mut wanted = current.clone();
        wanted.num_replicas = config.stream_replicas;
        js.update_stream(wanted)
            .await
            .map_err(|e| Refusal::of_stream("stream update to streamReplicas", &e))?;
    }
    let wanted = jetstream::consumer::pull::Config {
        durable_name: Some(config.consumer_name.clone()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_millis(config.ack_wait_ms),
        max_deliver: config.max_deliver,
        ..Default::default()
    };
    let consumer: PullConsumer = stream
        .get_or_create_consumer(&config.consumer_name, wanted.clone())
        .await
        .map_err(|e| Refusal::of_consumer("consumer", &e))?;
    let current = &consumer.cached_info().config;
    if current.ack_wait == wanted.ack_wait && current.max_deliver == wanted.max_deliver {
        return Ok(consumer);
    }
    stream.update_consumer(wanted).await.map_err(|e| {
        Refusal::of_consumer_update("consumer update to the configured ackWaitMs/maxDeliver", &e)
    })
}

impl PullSource {
    /// Binds the stream and the consumer, waiting out JetStream's unavailability (reported
    /// through `health`) until it answers; fails only on a refusal no wait can cure. The
    /// worker ends this wait when it is stopped.
    pub(crate) async fn open(
        client: &Client,
        config: &Arc<Config>,
        health: Arc<Health>,
    ) -> Result<Self, PierError> {
        let js = jetstream::new(client.clone());
        let mut backoff = Backoff::new();
        loop {
            let refusal = match bind(&js, config).await {
                Ok(consumer) => {
                    let stream = Arc::new(StreamContext {
                        js: js.clone(),
                        client: client.clone(),
                        config: config.clone(),
                        replies: ReplyStreams::default(),
                    });
                    match stream.check_permissions(&health).await {
                        Ok(()) => {
                            health.healed();
                            return Ok(PullSource {
                                consumer,
                                stream,
                                health,
                            });
                        }
                        Err(refusal) => refusal,
                    }
                }
                Err(refusal) => refusal,
            };
            // A request the server's permissions drop never gets an answer: the server says so
            // only in an -ERR line, which the connection recorded.
            if !refusal.heals {
                return Err(PierError::request(refusal.op, refusal.why));
            }
            if health.jetstream_denied() {
                return Err(PierError::request(
                    refusal.op,
                    health.denied_or(refusal.why),
                ));
            }
            health.trouble(&refusal.why);
            tokio::time::sleep(backoff.next()).await;
        }
    }

    /// Pulls as many jobs as there are free slots and admits each, until `stop`. A failed pull
    /// waits for the consumer to answer again (`recover`). Jobs still running at shutdown are
    /// given back to the stream by the pipeline.
    pub(crate) async fn run(mut self, pipeline: Arc<Pipeline>, mut stop: oneshot::Receiver<()>) {
        let slots = pipeline.slots().clone();
        // Pulls that failed in a row: a consumer that answers its info but not its pulls (a
        // permission on CONSUMER.MSG.NEXT, too many waiting pulls) must show, not fail silently.
        let mut failed_pulls = 0u32;
        loop {
            let slot = tokio::select! {
                biased;
                _ = &mut stop => break,
                slot = slots.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => break },
            };
            let budget = slots.available_permits() + 1;
            let batch = tokio::select! {
                biased;
                _ = &mut stop => break,
                batch = self.consumer.fetch().max_messages(budget).expires(PULL_EXPIRES).messages() => batch,
            };
            let mut failure = None;
            match batch {
                Ok(mut batch) => {
                    let mut first = Some(slot);
                    let mut ends = tokio::time::Instant::now() + PULL_EXPIRES + PULL_GRACE;
                    loop {
                        let Ok(next) = tokio::time::timeout_at(ends, batch.next()).await else {
                            failure = Some("JetStream pull: the consumer did not answer".into());
                            break;
                        };
                        match next {
                            None => break,
                            Some(Ok(message)) => {
                                // Admitting may take a while (a refusal's answer is confirmed
                                // here): the pull's time counts from its last message.
                                let admitted_by = tokio::time::Instant::now();
                                let inbound = StreamMessage {
                                    message,
                                    stream: self.stream.clone(),
                                };
                                // Without a slot the pipeline gives the message back (`when_full`).
                                pipeline.admit(inbound, first.take()).await;
                                ends += admitted_by.elapsed();
                            }
                            Some(Err(error)) => {
                                failure = Some(format!("JetStream pull: {error}"));
                                break;
                            }
                        }
                    }
                }
                Err(error) => failure = Some(format!("JetStream pull: {error}")),
            }
            match failure {
                Some(why) => {
                    failed_pulls += 1;
                    if failed_pulls >= 2 {
                        self.health.trouble(&why);
                    }
                    if !self.recover(&mut stop, why).await {
                        break;
                    }
                }
                None if failed_pulls > 0 => {
                    failed_pulls = 0;
                    self.health.healed();
                }
                None => {}
            }
        }
    }

    /// After a failed pull, waits until the consumer answers again: bound anew when it or its
    /// stream is gone, state `recovering` while it takes longer than one short pause (or the
    /// pulls keep failing). Looks at least every second, so pulling resumes soon after an
    /// election. False when the worker stopped meanwhile.
    async fn recover(&mut self, stop: &mut oneshot::Receiver<()>, mut why: String) -> bool {
        let mut backoff = Backoff::new();
        loop {
            let wait = backoff.next().min(Duration::from_secs(1));
            tokio::select! {
                biased;
                _ = &mut *stop => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            // Healed only once a pull works again (`run`).
            let missing = match tokio::time::timeout(PROBE_TIMEOUT, self.consumer.info()).await {
                Ok(Ok(_)) => return true,
                Ok(Err(error)) => {
                    use async_nats::jetstream::context::ConsumerInfoErrorKind as Kind;
                    let missing = matches!(error.kind(), Kind::NotFound | Kind::StreamNotFound);
                    if !missing {
                        why = format!("JetStream consumer: {error}");
                    }
                    missing
                }
                Err(_) => {
                    why = "JetStream consumer: no answer (a leader election?)".into();
                    false
                }
            };
            if missing {
                match bind(&self.stream.js, &self.stream.config).await {
                    Ok(consumer) => {
                        self.consumer = consumer;
                        return true;
                    }
                    Err(refusal) => why = refusal.why,
                }
            }
            self.health.trouble(&why);
        }
    }
}

impl StreamContext {
    /// Asks, once, what the worker will need besides the stream and the consumer it bound, each
    /// with a request that changes nothing: `$JS.API.STREAM.NAMES` (whether a stream keeps a
    /// reply subject: the answer for the result subjects is kept), `$JS.API.CONSUMER.MSG.NEXT`
    /// (a pull that no message fits: `max_bytes` 1, `no_wait`) and `$JS.ACK` (an in-progress
    /// ack of a sequence the consumer does not hold). A request the server refuses by
    /// permission gets no answer, only an -ERR line naming its subject: that refusal is final
    /// and names the permission; a request merely unanswered (an election) is asked again.
    async fn check_permissions(&self, health: &Health) -> Result<(), Refusal> {
        let config = &self.config;
        let (stream, consumer) = (&config.stream_name, &config.consumer_name);
        // The result subjects' class is learned here, so the first answers ask nothing.
        let names_probe = match &config.result_subject {
            Some(prefix) => format!("{prefix}.{}", crate::protocol::new_id()),
            None => config.subject.clone(),
        };
        let names = async {
            let kept = self.look_up(&names_probe).await?;
            self.replies.set(&names_probe, kept);
            Ok::<_, String>(())
        };
        self.probe(
            health,
            "$JS.API.STREAM.NAMES",
            "$JS.API.STREAM.NAMES",
            "to learn whether a stream keeps a reply subject",
            names,
        )
        .await?;
        let next = format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}");
        let pull = self.client.request(
            next.clone(),
            r#"{"batch":1,"no_wait":true,"max_bytes":1}"#.into(),
        );
        self.probe(health, &next, &next, "to pull jobs", async {
            pull.await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await?;
        let ack_prefix = format!("$JS.ACK.{stream}.{consumer}.");
        let ack = self.client.request(
            format!("{ack_prefix}1.{0}.{0}.0.0", u32::MAX),
            "+WPI".into(),
        );
        self.probe(
            health,
            &ack_prefix,
            &format!("$JS.ACK.{stream}.>"),
            "to acknowledge jobs (ack, nak, term, in progress)",
            async { ack.await.map(|_| ()).map_err(|e| e.to_string()) },
        )
        .await
    }

    /// One permission probe: `Ok` once `request` is answered (whatever it says), a final
    /// refusal naming `permission` when the server refused a publish to `subject` by
    /// permission, else a refusal that heals.
    async fn probe(
        &self,
        health: &Health,
        subject: &str,
        permission: &str,
        what_for: &str,
        request: impl Future<Output = Result<(), String>>,
    ) -> Result<(), Refusal> {
        let unanswered = match tokio::time::timeout(PERMISSION_PROBE_TIMEOUT, request).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => "no answer".to_string(),
        };
        match health.denied_publish(subject) {
            Some(server) => Err(Refusal::denied(format!(
                "this worker's NATS user may not publish to {permission}, which a JetStream worker needs {what_for}; grant it (docs/security.md, NATS permissions). The server said: {server}"
            ))),
            None => Err(Refusal::unanswered(
                "permission check",
                format!("{subject}: {unanswered}"),
            )),
        }
    }

    /// Whether a stream keeps `subject`, asked of the server (`$JS.API.STREAM.NAMES`); during
    /// an election the question may go unanswered, so it is asked a few times.
    async fn look_up(&self, subject: &str) -> Result<bool, String> {
        let mut backoff = Backoff::new();
        let mut attempt = 1;
        loop {
            match self.js.stream_by_subject(subject).await {
                Ok(_) => return Ok(true),
                Err(error) if error.kind() == GetStreamByNameErrorKind::NotFound => {
                    return Ok(false)
                }
                Err(error) if attempt >= PUBLISH_ATTEMPTS => {
                    return Err(format!(
                        "could not learn whether a stream keeps the reply subject: {error}"
                    ))
                }
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }

    /// Whether a stream keeps `subject`: the verdict on its class while fresh, else asked
    /// again; when asking fails, a stale verdict is used rather than none (a job whose answer
    /// cannot go out runs again, a paid turn).
    async fn keeps(&self, subject: &str) -> Result<bool, String> {
        let known = self.replies.get(subject);
        if let Some((kept, true)) = known {
            return Ok(kept);
        }
        match self.look_up(subject).await {
            Ok(kept) => {
                self.replies.set(subject, kept);
                Ok(kept)
            }
            Err(error) => known.map(|(kept, _)| kept).ok_or(error),
        }
    }

    /// Sends an answer and confirms it reached the server: the JetStream way (PubAck) when a
    /// stream keeps its subject, else over core NATS and flushed.
    async fn send_confirmed(&self, reply: Reply, answer_key: Option<String>) -> Result<(), String> {
        let subject = reply.subject.to_string();
        if !self.keeps(&subject).await? {
            return self.publish_core(reply).await;
        }
        let Err(failed) = self.publish_to_stream(&reply, answer_key.as_deref()).await else {
            return Ok(());
        };
        // The verdict was its class's, or is out of date (the stream was deleted): this one
        // subject is asked, and an answer no stream keeps goes over core NATS.
        self.replies.forget(&subject);
        match self.look_up(&subject).await {
            Ok(false) => self.publish_core(reply).await,
            _ => Err(failed),
        }
    }

    /// Publishes over core NATS and waits for the server to confirm it has it (flush).
    async fn publish_core(&self, reply: Reply) -> Result<(), String> {
        outbox::publish(&self.client, reply)
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(FINAL_FLUSH, self.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err("the server did not confirm the answer (flush)".into()),
        }
    }

    /// Publishes into the stream that keeps the reply subject, with the job's answer key as
    /// `Nats-Msg-Id`, until a PubAck confirms it (or the attempts run out, or no stream keeps
    /// the subject after all).
    async fn publish_to_stream(
        &self,
        reply: &Reply,
        answer_key: Option<&str>,
    ) -> Result<(), String> {
        use async_nats::jetstream::context::PublishErrorKind;
        let mut backoff = Backoff::new();
        let mut last = String::new();
        for _ in 0..PUBLISH_ATTEMPTS {
            let mut publish = PublishMessage::build().payload(reply.payload.clone());
            if let Some(headers) = reply.headers.clone() {
                publish = publish.headers(headers);
            }
            if let Some(key) = answer_key {
                publish = publish.message_id(key);
            }
            match self.js.send_publish(reply.subject.clone(), publish).await {
                Ok(ack) => match ack.await {
                    Ok(_) => return Ok(()),
                    Err(error) if error.kind() == PublishErrorKind::StreamNotFound => {
                        return Err(format!("JetStream publish of the answer: {error}"))
                    }
                    Err(error) => last = error.to_string(),
                },
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(backoff.next()).await;
        }
        Err(format!("JetStream publish of the answer: {last}"))
    }
}

struct StreamMessage {
    message: jetstream::Message,
    stream: Arc<StreamContext>,
}

impl StreamMessage {
    fn delivered(&self) -> i64 {
        self.message.info().map(|i| i.delivered).unwrap_or(1)
    }

    /// Acks (or terminates) a job that was answered, until the server confirms it, the ack wait
    /// would give the job to another worker anyway, or [`ACK_RETRY_FOR`] passed: an ack sent
    /// while the consumer's leader is being elected is lost, and the job would run again for
    /// nothing.
    async fn ack_confirmed(self, kind: AckKind) {
        let give_up = tokio::time::Instant::now()
            + Duration::from_millis(self.stream.config.ack_wait_ms).min(ACK_RETRY_FOR);
        let mut backoff = Backoff::new();
        while self.message.double_ack_with(kind).await.is_err() {
            let wait = backoff.next().min(Duration::from_secs(1));
            if tokio::time::Instant::now() + wait >= give_up {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

impl Inbound for StreamMessage {
    fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    fn headers(&self) -> Option<&HeaderMap> {
        self.message.headers.as_ref()
    }

    fn subject(&self) -> &str {
        &self.message.subject
    }

    /// `Pier-Reply-To`, else empty. The message's NATS reply is the consumer's `$JS.ACK…`
    /// subject, which no requester saw; the stream keeps no reply subject of the publish (that
    /// one only received the PubAck), so a requester signs its `Pier-Reply-To` or nothing.
    fn signed_reply(&self) -> &str {
        self.message
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLY_HEADER))
            .map_or("", |v| v.as_str())
    }

    /// The age of a signature is taken from when the stream stored the job, so a job that
    /// waited in the stream is not stale; the sequence tells a redelivery from a replay.
    fn stored(&self) -> Option<(i64, u64)> {
        let info = self.message.info().ok()?;
        let ms = info.published.unix_timestamp_nanos() / 1_000_000;
        Some((i64::try_from(ms).ok()?, info.stream_sequence))
    }

    /// The `Pier-Reply-To` header when it is a subject one can publish to; else
    /// `<resultSubject>.<job id as a subject token>`.
    fn reply_target(&self, job_id: Option<&str>) -> ReplyTarget {
        let header = self
            .message
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLY_HEADER))
            .map(|v| v.as_str());
        if let Some(subject) = header.filter(|s| subject::is_publish_subject(s)) {
            return ReplyTarget::Subject(Subject::from(subject));
        }
        let header_note = if header.is_some() {
            "its Pier-Reply-To header is not a subject one can publish to"
        } else {
            "it has no Pier-Reply-To header"
        };
        match (&self.stream.config.result_subject, job_id) {
            (Some(prefix), Some(id)) => ReplyTarget::Subject(Subject::from(format!(
                "{prefix}.{}",
                subject::subject_token(id)
            ))),
            (Some(_), None) => ReplyTarget::Nowhere {
                why: format!("{header_note} and its id could not be read"),
            },
            (None, _) => ReplyTarget::Nowhere {
                why: format!("{header_note} and no resultSubject is configured"),
            },
        }
    }

    fn defect(&self) -> Option<&str> {
        super::malformed_headers(&self.message)
    }

    /// The job is acked after its answer, so the answer is sent here and confirmed.
    fn send_reply(
        &self,
        reply: Reply,
        answer_key: Option<&str>,
    ) -> Result<impl Future<Output = Result<(), String>> + Send + 'static, Reply> {
        let stream = self.stream.clone();
        let answer_key = answer_key.map(str::to_string);
        Ok(async move { stream.send_confirmed(reply, answer_key).await })
    }

    fn retry(&self, error: &JobError) -> Option<Settle> {
        match error.code {
            // Another worker takes it.
            ErrorCode::ShuttingDown => Some(Settle::Retry { delay: None }),
            ErrorCode::ExecutionFailed | ErrorCode::RuntimeUnavailable => {
                let delivered = self.delivered();
                (delivered < self.stream.config.max_deliver).then(|| Settle::Retry {
                    delay: Some(Duration::from_millis(250 * (1u64 << delivered.clamp(1, 8)))),
                })
            }
            _ => None,
        }
    }

    /// OVERLOADED, RATE_LIMITED and BUDGET_EXHAUSTED are this worker's reasons, not the job's:
    /// it goes back to the stream for another worker, after [`pass_on_delay`]. Bounded: on its
    /// last delivery (`maxDeliver`), or with less than the delay and [`PASS_ON_MARGIN`] left of
    /// its deadline, it is answered with the refusal (and terminated), so its requester hears.
    fn pass_on(&self, error: &JobError, left: Option<Duration>) -> Option<Settle> {
        if !matches!(
            error.code,
            ErrorCode::Overloaded | ErrorCode::RateLimited | ErrorCode::BudgetExhausted
        ) {
            return None;
        }
        let delivered = self.delivered();
        if delivered >= self.stream.config.max_deliver {
            return None;
        }
        let delay = pass_on_delay(delivered);
        if left.is_some_and(|left| left < delay + PASS_ON_MARGIN) {
            return None;
        }
        Some(Settle::Retry { delay: Some(delay) })
    }

    fn hold_in_progress(&self) -> Option<JoinHandle<()>> {
        let message = self.message.clone();
        let every = Duration::from_millis((self.stream.config.ack_wait_ms / 2).max(100));
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }))
    }

    /// The answer (if any) is confirmed by now (`send_reply`), so the ack never precedes it.
    async fn settle(self, how: Settle) {
        let ack = match how {
            Settle::Answered { ok: true } => return self.ack_confirmed(AckKind::Ack).await,
            // A lost Term would run an answered job again after the ack wait.
            Settle::Answered { ok: false } | Settle::Unanswerable => {
                return self.ack_confirmed(AckKind::Term).await
            }
            Settle::Undelivered => AckKind::Nak(Some(Duration::from_secs(1))),
            Settle::Retry { delay } => AckKind::Nak(delay),
        };
        let _ = self.message.ack_with(ack).await;
    }
}

/// The delay before a job given back for another worker is delivered again, after its
/// `delivered`-th delivery: [`PASS_ON_DELAY`], doubled each time, at most [`PASS_ON_MAX_DELAY`].
fn pass_on_delay(delivered: i64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    (PASS_ON_DELAY * 2u32.pow(doublings)).min(PASS_ON_MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_given_back_waits_longer_each_time_up_to_two_seconds() {
        let waits: Vec<u128> = (1..=7).map(|d| pass_on_delay(d).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(pass_on_delay(i64::MAX), PASS_ON_MAX_DELAY);
    }

    #[test]
    fn reply_subjects_are_classed_by_all_but_their_last_token() {
        assert_eq!(subject_class("results.job-1"), "results");
        assert_eq!(subject_class("_INBOX.abc.7"), "_INBOX.abc");
        assert_eq!(subject_class("single"), "single");
        let replies = ReplyStreams::default();
        replies.set("results.a", true);
        assert_eq!(replies.get("results.b"), Some((true, true)));
        assert_eq!(replies.get("other.b"), None);
        replies.forget("results.zzz");
        assert_eq!(replies.get("results.a"), None);
    }

    fn api(code: u64) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 503, "err_code": code, "description": "test"
        }))
        .expect("an API error")
    }

    #[test]
    fn elections_and_offline_nodes_heal_config_conflicts_do_not() {
        for code in [10008, 10005, 10023, 10118, 10009] {
            assert!(Refusal::api("stream", &api(code)).heals, "{code}");
        }
        // stream name in use with another config, subjects overlap, JetStream off for the
        // account, replicas > 1 on a single server
        for code in [10058, 10065, 10039, 10074] {
            assert!(!Refusal::api("stream", &api(code)).heals, "{code}");
        }
    }

    #[test]
    fn backoff_doubles_to_five_seconds() {
        let mut b = Backoff::new();
        let waits: Vec<u128> = (0..7).map(|_| b.next().as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);
    }
}
