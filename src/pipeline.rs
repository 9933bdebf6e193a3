//! The one place a job is admitted and answered, whatever delivered it.
//!
//! A delivery source (`delivery::subscription` for core NATS, `delivery::jetstream` for a pull
//! consumer) hands each message to [`Pipeline::admit`] as an [`Inbound`]. Admission is the same
//! for every source, in this order: the payload is read (`protocol::parse_job`), the reply
//! target is resolved and validated, a `Pier-Sender` signature is verified (`signature`), the
//! sender is checked against `allowedSenders`, its price against `minJobPrice`, and a
//! concurrency slot is taken. An admitted job runs under its deadline and is answered exactly
//! once; the source is then told how it ended ([`Settle`]), which is where JetStream acks.

use crate::config::{Config, SenderTrust, WorkerIdentity};
use crate::error::{ErrorCode, JobError};
use crate::handler::{HandlerResult, JobHandler, JobInput, Usage};
use crate::ledger::{Ledger, LedgerEntry};
use crate::log::{loggable, JobLine, Level, SharedLogger};
use crate::outbox::{self, Outbox, Reply};
use crate::protocol::{self, JobRequest};
use crate::signature::{self, Delivered, Denied, SenderVerifier, SigningKey};
use crate::stats::{Outcome, Stats};
use crate::subject;
use async_nats::{Client, HeaderMap, Subject};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long jobs cancelled at shutdown get to send their SHUTTING_DOWN replies, and the
/// connection to flush them.
pub(crate) const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Room left in a message for the protocol line and the error headers, so a reply judged to
/// fit does fit under the server's `max_payload`.
const REPLY_OVERHEAD: usize = 1024;

/// Where a job's answer can go.
pub(crate) enum ReplyTarget {
    /// A subject that may be published to.
    Subject(Subject),
    /// Nowhere: the message named no usable reply subject. `why` is logged.
    Nowhere { why: String },
}

/// How a job ended, as its delivery source needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Answered with a `task_result` (`ok`) or a final `task_error`, and the answer was handed
    /// to the connection.
    Answered { ok: bool },
    /// Nobody could be answered (no usable reply target): not run.
    Unanswerable,
    /// The answer could not be sent: the job must not count as done.
    Undelivered,
    /// Give the job back for another attempt, after `delay` when set.
    Retry { delay: Option<Duration> },
}

/// One delivered message, as a delivery source presents it to the pipeline.
pub(crate) trait Inbound: Send + Sync + 'static {
    fn payload(&self) -> &[u8];

    /// The message's NATS headers, if it has any.
    fn headers(&self) -> Option<&HeaderMap>;

    /// The subject the message arrived on: what a requester that published straight to the
    /// worker signed.
    fn subject(&self) -> &str;

    /// The reply line of a `Pier-Sender` signature (protocol.md): the `Pier-Reply-To` header
    /// if present, else the requester's NATS reply subject, else empty.
    fn signed_reply(&self) -> &str;

    /// JetStream: when the stream stored the message (Unix ms), and its stream sequence.
    fn stored(&self) -> Option<(i64, u64)> {
        None
    }

    /// Where the answer goes; `job_id` is the request's id when it could be read.
    fn reply_target(&self, job_id: Option<&str>) -> ReplyTarget;

    /// A run that failed with `error` goes back to the source for another attempt, instead of
    /// being answered, when this returns the retry to settle with.
    fn retry(&self, _error: &JobError) -> Option<Settle> {
        None
    }

    /// Why the message cannot be taken as sent, though its payload may be fine: its NATS
    /// headers were malformed (the patched client delivers such a message instead of
    /// dropping the connection, and says so in `description`).
    fn defect(&self) -> Option<&str> {
        None
    }

    /// What to do with a job admitted while every slot is taken: `None` answers OVERLOADED.
    fn when_full(&self) -> Option<Settle> {
        None
    }

    /// Work that keeps a long job's message alive while it runs (JetStream in-progress acks);
    /// aborted when the job ends.
    fn keep_alive(&self) -> Option<JoinHandle<()>> {
        None
    }

    /// A source that settles on what became of the answer (JetStream acks a job only once its
    /// answer is confirmed) sends it itself: the future resolves when the server confirmed
    /// it, or with why it could not. The others hand the reply back (`Err`), and the pipeline
    /// sends it on, through the outbox with the other replies finishing together.
    fn send_reply(
        &self,
        reply: Reply,
        job_id: Option<&str>,
    ) -> Result<impl Future<Output = Result<(), String>> + Send + 'static, Reply>;

    /// Told how the job ended, after its answer (if any) was sent.
    fn settle(self, how: Settle) -> impl Future<Output = ()> + Send;
}

/// What a job's log line tells besides how it ended (never its task).
struct JobFacts {
    received_at: Instant,
    sender: Option<String>,
    /// The `Pier-Sender` key, once its signature verified.
    sender_key: Option<String>,
    /// The request's `Pier-Sender` nonce, for the reply's `Pier-Worker` signature.
    nonce: Option<String>,
    /// `meta.price`, when it is a positive number: what a completed job earns.
    price: Option<f64>,
    /// The job ran (reached the handler): its end goes in the ledger.
    ran: bool,
    /// What its turn used, when the handler measured it.
    usage: Option<Usage>,
}

impl JobFacts {
    fn new(received_at: Instant, job: Option<&JobRequest>) -> JobFacts {
        JobFacts {
            received_at,
            sender: job.and_then(JobRequest::sender).map(loggable),
            sender_key: None,
            nonce: None,
            price: job
                .and_then(|j| j.meta.get("price"))
                .and_then(serde_json::Value::as_f64)
                .filter(|p| p.is_finite() && *p > 0.0),
            ran: false,
            usage: None,
        }
    }
}

/// Everything a job needs, shared by the receive loop and every job task.
pub(crate) struct Pipeline {
    config: Arc<Config>,
    handler: Arc<dyn JobHandler>,
    logger: SharedLogger,
    stats: Arc<Stats>,
    identity: WorkerIdentity,
    client: Client,
    slots: Arc<Semaphore>,
    jobs: TaskTracker,
    cancel: CancellationToken,
    outbox: Arc<Outbox>,
    outbox_task: std::sync::Mutex<Option<JoinHandle<()>>>,
    running_ids: RunningIds,
    /// Checks `Pier-Sender` headers, and remembers their nonces.
    verifier: SenderVerifier,
    /// Signs every reply (`Pier-Worker`) when the worker has a key.
    signing_key: Option<SigningKey>,
    /// `allowedSenders`, split once into keys and names.
    allowed: Option<AllowedSenders>,
    /// `ledgerFile`: where each job that ran is written down.
    ledger: Option<Ledger>,
}

/// `allowedSenders`: keys match a verified `Pier-Sender`, names the self-declared
/// `meta.sender` (under `senderTrust: "any"` only).
struct AllowedSenders {
    keys: HashSet<String>,
    names: HashSet<String>,
}

impl AllowedSenders {
    fn of(config: &Config) -> Option<AllowedSenders> {
        let names: HashSet<String> = config
            .allowed_names()
            .into_iter()
            .map(String::from)
            .collect();
        config.allowed_senders.as_ref().map(|all| AllowedSenders {
            keys: all
                .iter()
                .filter(|s| !names.contains(*s))
                .cloned()
                .collect(),
            names: match config.sender_trust {
                SenderTrust::Any => names,
                // Every job is signed: a self-declared name proves nothing.
                SenderTrust::Signed => HashSet::new(),
            },
        })
    }

    fn allow(&self, key: Option<&str>, name: Option<&str>) -> bool {
        key.is_some_and(|k| self.keys.contains(k)) || name.is_some_and(|n| self.names.contains(n))
    }
}

/// Ids of the jobs admitted and not yet answered.
type RunningIds = Arc<std::sync::Mutex<HashSet<String>>>;

/// A job id held from admission until the job is answered; released on drop.
pub(crate) struct IdClaim {
    ids: RunningIds,
    id: String,
}

impl IdClaim {
    /// `None` when a job with this id is already running.
    fn take(ids: &RunningIds, id: &str) -> Option<IdClaim> {
        crate::sync::lock(ids)
            .insert(id.to_string())
            .then(|| IdClaim {
                ids: ids.clone(),
                id: id.to_string(),
            })
    }
}

impl Drop for IdClaim {
    fn drop(&mut self) {
        crate::sync::lock(&self.ids).remove(&self.id);
    }
}

/// The parts of a worker a pipeline is built from.
pub(crate) struct PipelineParts {
    pub config: Arc<Config>,
    pub handler: Arc<dyn JobHandler>,
    pub logger: SharedLogger,
    pub stats: Arc<Stats>,
    pub identity: WorkerIdentity,
    pub signing_key: Option<SigningKey>,
}

impl Pipeline {
    /// Must be called inside the tokio runtime: it starts the outbox's publishing task.
    pub(crate) fn new(parts: PipelineParts, client: Client) -> Arc<Pipeline> {
        let PipelineParts {
            config,
            handler,
            logger,
            stats,
            identity,
            signing_key,
        } = parts;
        let (outbox, outbox_task) = Outbox::start(client.clone(), {
            let (stats, logger) = (stats.clone(), logger.clone());
            move |e| reply_failed(&stats, &logger, &e)
        });
        Arc::new(Pipeline {
            slots: Arc::new(Semaphore::new(config.max_concurrent_jobs as usize)),
            verifier: SenderVerifier::new(config.signature_max_age_ms),
            allowed: AllowedSenders::of(&config),
            ledger: config
                .ledger_file
                .as_ref()
                .map(|path| Ledger::new(path, config.ledger_max_bytes)),
            signing_key,
            config,
            handler,
            logger,
            stats,
            identity,
            client,
            jobs: TaskTracker::new(),
            cancel: CancellationToken::new(),
            outbox,
            outbox_task: std::sync::Mutex::new(Some(outbox_task)),
            running_ids: Arc::default(),
        })
    }

    pub(crate) fn logger(&self) -> &SharedLogger {
        &self.logger
    }

    /// The concurrency slots, for sources that take one before they fetch a message.
    pub(crate) fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// Admits one message: reads it, resolves its reply target, checks its sender, takes a
    /// slot (`slot` when the source already holds one), then runs it in its own task, or
    /// inline when the handler answers on its first poll. Every refusal is answered here.
    pub(crate) async fn admit<I: Inbound>(
        self: &Arc<Self>,
        inbound: I,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        let received_at = Instant::now();
        self.stats.received();
        let parsed = protocol::parse_job(inbound.payload(), self.config.max_payload_bytes);
        let id = match &parsed {
            Ok(job) => Some(job.id.as_str()),
            Err(rejection) => rejection.id.as_deref(),
        };
        let mut facts = JobFacts::new(received_at, parsed.as_ref().ok());
        let target = match self.reply_target(&inbound, id) {
            ReplyTarget::Subject(subject) => subject,
            ReplyTarget::Nowhere { why } => {
                self.stats.record(Outcome::NoReply);
                self.logger.log(
                    Level::Warn,
                    &format!(
                        "[pier-connector] job {} not run: {why}",
                        id.map_or_else(|| "(no id)".to_string(), loggable)
                    ),
                );
                inbound.settle(Settle::Unanswerable).await;
                return;
            }
        };
        if let Some(defect) = inbound.defect() {
            let error = JobError::new(ErrorCode::InvalidRequest, defect);
            let id = id.map(str::to_string);
            return self
                .refuse(inbound, target, id.as_deref(), error, &facts)
                .await;
        }
        // Before the payload's own errors: a message signed in someone else's name is refused
        // as that, whatever it holds.
        if let Err(error) = self.check_signature(&inbound, &mut facts) {
            let id = id.map(str::to_string);
            return self
                .refuse(inbound, target, id.as_deref(), error, &facts)
                .await;
        }
        // A signed job is answered where its signature says: on the reply line the requester
        // signed (core: Pier-Reply-To when a relay set it). Headers are not signed, so without
        // this a copy of someone's request with its own NATS reply and their Pier-Reply-To would
        // run in their name and be answered to the copier.
        let target = match (&facts.sender_key, inbound.signed_reply()) {
            (Some(_), signed) if !signed.is_empty() && signed != target.as_str() => {
                if !subject::is_publish_subject(signed)
                    || subject::reply_refusal(signed, &self.config.reply_subject_prefixes).is_some()
                {
                    let error = JobError::new(
                        ErrorCode::Unauthorized,
                        "the signed reply subject (Pier-Reply-To) is not one this worker answers on",
                    );
                    let id = id.map(str::to_string);
                    return self
                        .refuse(inbound, target, id.as_deref(), error, &facts)
                        .await;
                }
                Subject::from(signed)
            }
            _ => target,
        };
        let job = match parsed {
            Ok(job) => job,
            Err(rejection) => {
                return self
                    .refuse(
                        inbound,
                        target,
                        rejection.id.as_deref(),
                        rejection.error,
                        &facts,
                    )
                    .await;
            }
        };
        if let Some(allowed) = &self.allowed {
            if !allowed.allow(facts.sender_key.as_deref(), job.sender()) {
                let error = JobError::new(
                    ErrorCode::Unauthorized,
                    "this worker does not take jobs from this sender",
                );
                return self
                    .refuse(inbound, target, Some(&job.id), error, &facts)
                    .await;
            }
        }
        // Before a slot or the id is taken: a job that pays too little costs the worker nothing.
        if let Some(error) = self.price_refusal(&job) {
            return self
                .refuse(inbound, target, Some(&job.id), error, &facts)
                .await;
        }
        // Requester-chosen ids key the handler's running turns (their abort handles and the
        // channel's answer slots): a second job with the id of one in flight would take them over.
        let Some(claim) = IdClaim::take(&self.running_ids, &job.id) else {
            let error = JobError::new(
                ErrorCode::InvalidRequest,
                "a job with this id is already running on this worker; give each job its own id",
            );
            return self
                .refuse(inbound, target, Some(&job.id), error, &facts)
                .await;
        };
        let slot = match slot.map_or_else(|| self.slots.clone().try_acquire_owned().ok(), Some) {
            Some(slot) => slot,
            None => match inbound.when_full() {
                Some(settle) => {
                    self.stats.record(Outcome::Errored(ErrorCode::Overloaded));
                    return inbound.settle(settle).await;
                }
                None => {
                    let error = JobError::new(
                        ErrorCode::Overloaded,
                        format!(
                            "worker is running its limit of {} jobs; retry on another worker",
                            self.config.max_concurrent_jobs
                        ),
                    );
                    return self
                        .refuse(inbound, target, Some(&job.id), error, &facts)
                        .await;
                }
            },
        };
        self.stats.job_started();
        // A handler that answers on its first poll runs here, in the receive loop, and its
        // reply is published at once (it would gain nothing from waiting in the outbox).
        let inline = self.handler.ready_on_first_poll();
        let run = self
            .clone()
            .run(inbound, job, target, facts, (slot, claim), inline);
        if !inline {
            self.jobs.spawn(run);
            return;
        }
        // Such a handler finishes on this first poll and costs no task of its own; a job that
        // waits for something after all is spawned.
        let mut run = Box::pin(run);
        if std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx)))
            .await
            .is_pending()
        {
            self.jobs.spawn(run);
        }
    }

    /// PRICE_TOO_LOW when `minJobPrice` is above 0 and the job's `meta.price` is below it, or
    /// is missing or not a number.
    fn price_refusal(&self, job: &JobRequest) -> Option<JobError> {
        let floor = self.config.min_job_price;
        if floor <= 0.0 {
            return None;
        }
        let offered = job
            .meta
            .get("price")
            .and_then(serde_json::Value::as_f64)
            .filter(|p| p.is_finite());
        match offered {
            Some(price) if price >= floor => None,
            Some(price) => Some(JobError::new(
                ErrorCode::PriceTooLow,
                format!("this worker takes jobs paying at least {floor} (meta.price); this one offers {price}"),
            )),
            None => Some(JobError::new(
                ErrorCode::PriceTooLow,
                format!("this worker takes jobs paying at least {floor} (meta.price); this one names no price"),
            )),
        }
    }

    /// Verifies the message's `Pier-Sender` header, if it has one; without one, refuses it
    /// under `senderTrust: "signed"`. A verified key and the nonce go into `facts`. An
    /// unsigned message costs one header lookup.
    fn check_signature<I: Inbound>(
        &self,
        inbound: &I,
        facts: &mut JobFacts,
    ) -> Result<(), JobError> {
        let unauthorized = |why: &str| JobError::new(ErrorCode::Unauthorized, why);
        let headers = inbound.headers();
        let Some(value) = headers.and_then(|h| h.get(signature::SENDER_HEADER)) else {
            return match self.config.sender_trust {
                SenderTrust::Any => Ok(()),
                SenderTrust::Signed => Err(unauthorized(
                    "this worker takes signed jobs only: the request has no Pier-Sender header",
                )),
            };
        };
        let verified = self.verify_sender(inbound, headers, value.as_str());
        match verified {
            Ok((key, nonce)) => {
                facts.sender_key = Some(key);
                facts.nonce = Some(nonce);
                Ok(())
            }
            Err(error) => {
                // The refusal is signed too, for the request it refuses, if its nonce reads.
                if self.signing_key.is_some() {
                    facts.nonce = signature::sender_nonce(value.as_str());
                }
                Err(error)
            }
        }
    }

    /// The verified `(key, nonce)` of a `Pier-Sender` header, or why the job is refused.
    fn verify_sender<I: Inbound>(
        &self,
        inbound: &I,
        headers: Option<&HeaderMap>,
        value: &str,
    ) -> Result<(String, String), JobError> {
        let unauthorized = |why: &str| JobError::new(ErrorCode::Unauthorized, why);
        if headers.is_some_and(|h| h.get_all(signature::SENDER_HEADER).count() > 1) {
            return Err(unauthorized(
                "Pier-Sender header refused: malformed (more than one)",
            ));
        }
        let header = signature::parse_sender(value).map_err(|r| unauthorized(&r.0))?;
        let now_ms = signature::unix_ms(SystemTime::now());
        let stored = inbound.stored();
        let message = Delivered {
            payload: inbound.payload(),
            subjects: [inbound.subject(), &self.config.publish_subject],
            reply: inbound.signed_reply(),
            time_ms: stored.map_or(now_ms, |(at, _)| at),
            stream_seq: stored.map(|(_, seq)| seq),
        };
        // A listed key only, where allowedSenders lists keys alone; with names (senderTrust
        // "any") the name may still admit the job, and the full check comes after the payload.
        let admits = |key: &str| {
            self.allowed
                .as_ref()
                .is_none_or(|a| !a.names.is_empty() || a.keys.contains(key))
        };
        match self.verifier.verify(&header, &message, now_ms, admits) {
            Ok(()) => Ok((header.key, header.nonce)),
            Err(Denied::Unauthorized(refusal)) => Err(unauthorized(&refusal.0)),
            Err(Denied::MemoryFull) => Err(JobError::new(
                ErrorCode::Overloaded,
                format!(
                    "this worker's replay memory is full ({} signed jobs inside signatureMaxAgeMs); retry on another worker",
                    signature::REPLAY_MEMORY_CAP
                ),
            )),
        }
    }

    /// The reply's headers: `base` plus, when the worker has a key, its `Pier-Worker`
    /// signature over `payload` for request `id`.
    fn reply_headers(
        &self,
        base: Option<HeaderMap>,
        id: Option<&str>,
        facts: &JobFacts,
        payload: &[u8],
    ) -> Option<HeaderMap> {
        let Some(key) = &self.signing_key else {
            return base;
        };
        let header = signature::sign_result(
            key,
            id,
            facts.nonce.as_deref().unwrap_or_default(),
            payload,
            SystemTime::now(),
        );
        let mut headers = base.unwrap_or_default();
        headers.insert(signature::WORKER_HEADER, header.as_str());
        Some(headers)
    }

    /// Answers a message without running it (`code` when the worker is shutting down).
    pub(crate) async fn refuse_unrun<I: Inbound>(&self, inbound: I, code: ErrorCode, why: &str) {
        self.stats.received();
        // The id is worth reading so the requester can match the refusal to its request.
        let id = protocol::parse_job(inbound.payload(), self.config.max_payload_bytes)
            .map(|job| job.id)
            .map_err(|rejection| rejection.id);
        let id = match &id {
            Ok(id) => Some(id.as_str()),
            Err(id) => id.as_deref(),
        };
        match self.reply_target(&inbound, id) {
            ReplyTarget::Subject(target) => {
                let mut facts = JobFacts::new(Instant::now(), None);
                // Signed for the request it refuses, so a signed requester reads a refusal it
                // can retry elsewhere (SHUTTING_DOWN), not a signature error.
                if self.signing_key.is_some() {
                    facts.nonce = inbound
                        .headers()
                        .and_then(|h| h.get(signature::SENDER_HEADER))
                        .and_then(|v| signature::sender_nonce(v.as_str()));
                }
                self.refuse(inbound, target, id, JobError::new(code, why), &facts)
                    .await
            }
            ReplyTarget::Nowhere { .. } => {
                self.stats.record(Outcome::NoReply);
                inbound.settle(Settle::Unanswerable).await;
            }
        }
    }

    /// Where the source says the answer goes, unless the worker must not publish there
    /// (`subject::reply_refusal`): one rule for every source.
    fn reply_target<I: Inbound>(&self, inbound: &I, job_id: Option<&str>) -> ReplyTarget {
        match inbound.reply_target(job_id) {
            ReplyTarget::Subject(subject) => {
                match subject::reply_refusal(&subject, &self.config.reply_subject_prefixes) {
                    None => ReplyTarget::Subject(subject),
                    Some(why) => ReplyTarget::Nowhere { why: why.into() },
                }
            }
            nowhere => nowhere,
        }
    }

    async fn refuse<I: Inbound>(
        &self,
        inbound: I,
        target: Subject,
        id: Option<&str>,
        error: JobError,
        facts: &JobFacts,
    ) {
        let delivered = self
            .answer_error(&inbound, target, id, error, true, facts)
            .await;
        inbound
            .settle(if delivered {
                Settle::Answered { ok: false }
            } else {
                Settle::Undelivered
            })
            .await;
    }

    async fn run<I: Inbound>(
        self: Arc<Self>,
        inbound: I,
        job: JobRequest,
        target: Subject,
        mut facts: JobFacts,
        (slot, claim): (OwnedSemaphorePermit, IdClaim),
        inline: bool,
    ) {
        let keep_alive = inbound.keep_alive();
        let received_at = facts.received_at;
        let (
            id,
            HandlerResult {
                answer: outcome,
                usage,
            },
        ) = self
            .execute(job, facts.sender_key.clone(), received_at, slot)
            .await;
        // Spent whatever the answer: a failed turn used its tokens too.
        if let Some(usage) = &usage {
            self.stats.add_usage(usage);
        }
        facts.ran = true;
        facts.usage = usage;
        // Every run counts, timed out or failed too (ADR-32 processing_time).
        self.stats.processed(received_at.elapsed());
        let retry = outcome.as_ref().err().and_then(|e| inbound.retry(e));
        let settle = match (retry, outcome) {
            (Some(retry), Err(error)) => {
                self.stats.record_error(error.code, &error.message);
                self.write_ledger(&id, &facts, "retried", Some(error.code), false);
                retry
            }
            (_, Ok(result)) => {
                let delivered = self
                    .answer_result(&inbound, target, &id, &facts, &result, inline)
                    .await;
                if let (Some(true), Some(price)) = (delivered, facts.price) {
                    self.stats.add_earned(price);
                }
                match delivered {
                    Some(true) => Settle::Answered { ok: true },
                    Some(false) => Settle::Answered { ok: false },
                    None => Settle::Undelivered,
                }
            }
            (None, Err(error)) => {
                if self
                    .answer_error(&inbound, target, Some(&id), error, inline, &facts)
                    .await
                {
                    Settle::Answered { ok: false }
                } else {
                    Settle::Undelivered
                }
            }
        };
        // The job stays in progress until its answer is confirmed (a JetStream publish may
        // wait out an election): the ack wait must not give it to another worker meanwhile.
        if let Some(task) = keep_alive {
            task.abort();
        }
        // The turn is over and answered: its id is free before the source settles, which may
        // take a while (a JetStream ack waiting out an election), so a redelivery meanwhile runs
        // again instead of being refused as a duplicate of itself.
        drop(claim);
        inbound.settle(settle).await;
        self.stats.job_finished();
    }

    /// Runs the handler under the job's deadline; frees the concurrency slot when it ends.
    async fn execute(
        &self,
        job: JobRequest,
        sender_key: Option<String>,
        received_at: Instant,
        slot: OwnedSemaphorePermit,
    ) -> (String, HandlerResult) {
        let budget = self.config.job_deadline(job.timeout_ms);
        let deadline = received_at + budget;
        let id = job.id.clone();
        let input = JobInput {
            sender: job.sender().map(str::to_string),
            sender_key,
            id: job.id,
            task: job.task,
            system_prompt: job.system_prompt,
            timeout_ms: deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
            meta: job.meta,
        };
        if self.logger.enabled(Level::Debug) {
            self.logger.log(
                Level::Debug,
                &format!(
                    "[pier-connector] job {} started ({} chars, {} ms budget)",
                    loggable(&id),
                    input.task.chars().count(),
                    budget.as_millis()
                ),
            );
        }

        let outcome = tokio::select! {
            // The handler first: one that is ready at once never arms the deadline timer.
            biased;
            result = self.handler.run(input) => result,
            _ = tokio::time::sleep_until(deadline.into()) => HandlerResult::failed(JobError::new(
                ErrorCode::Timeout,
                format!("the job did not finish within its {} ms deadline", budget.as_millis()),
            )),
            _ = self.cancel.cancelled() => HandlerResult::failed(JobError::new(
                ErrorCode::ShuttingDown,
                "the worker shut down before the job finished",
            )),
        };
        // The slot frees before the reply goes out, so a requester that sends its next job on
        // receiving this reply never finds the worker still full.
        drop(slot);
        if let Err(error) = &outcome.answer {
            if matches!(error.code, ErrorCode::Timeout | ErrorCode::ShuttingDown) {
                self.handler.cancel(&id, error.code);
            }
        }
        (id, outcome)
    }

    /// Sends a `task_result` and counts it. A result too large for the server becomes a
    /// RESULT_TOO_LARGE `task_error` instead of silence. `Some(ok)` when an answer went to the
    /// connection (`ok` false for that error), `None` when nothing could be sent.
    async fn answer_result<I: Inbound>(
        &self,
        inbound: &I,
        target: Subject,
        id: &str,
        facts: &JobFacts,
        result: &str,
        at_once: bool,
    ) -> Option<bool> {
        let latency_ms = facts.received_at.elapsed().as_millis() as u64;
        let bytes = protocol::encode_result(id, result, latency_ms, &self.identity);
        // The client refuses a message over the server's max_payload; answer that instead.
        let max_payload = self.client.max_payload();
        if bytes.len() + REPLY_OVERHEAD > max_payload {
            let error = JobError::new(
                ErrorCode::ResultTooLarge,
                format!(
                    "the result is {} bytes; the NATS server accepts messages of at most {} bytes",
                    bytes.len(),
                    max_payload
                ),
            );
            return self
                .answer_error(inbound, target, Some(id), error, at_once, facts)
                .await
                .then_some(false);
        }
        let headers = self.reply_headers(None, Some(id), facts, &bytes);
        let sent = self
            .send(
                inbound,
                Some(id).filter(|_| facts.ran),
                target,
                bytes,
                headers,
                at_once,
            )
            .await;
        self.stats.record(Outcome::Completed);
        if self.logger.enabled(Level::Info) {
            let line = JobLine {
                job_id: Some(loggable(id)),
                sender: facts.sender.clone(),
                sender_key: facts.sender_key.clone(),
                duration_ms: latency_ms,
                outcome: "completed",
                code: None,
                message: None,
                price: facts.price,
                usage: facts.usage,
            };
            self.logger.job(Level::Info, &line);
        }
        self.write_ledger(id, facts, "completed", None, sent);
        sent.then_some(true)
    }

    /// Sends a `task_error` and counts it; true when it went to the connection.
    async fn answer_error<I: Inbound>(
        &self,
        inbound: &I,
        target: Subject,
        id: Option<&str>,
        error: JobError,
        at_once: bool,
        facts: &JobFacts,
    ) -> bool {
        let bytes = protocol::encode_error(id, &error, &self.identity);
        let headers = protocol::error_headers(error.code, &error.message);
        let headers = self.reply_headers(Some(headers), id, facts, &bytes);
        // Only the answer of a job that ran deduplicates by its id in a results stream: a refusal
        // (a second copy of a running job, say) must never take the place of the real answer.
        let dedupe = id.filter(|_| facts.ran);
        let sent = self
            .send(inbound, dedupe, target, bytes, headers, at_once)
            .await;
        self.stats.record_error(error.code, &error.message);
        let level = match error.code {
            ErrorCode::ExecutionFailed | ErrorCode::RuntimeUnavailable => Level::Error,
            _ => Level::Warn,
        };
        let line = JobLine {
            job_id: id.map(loggable),
            sender: facts.sender.clone(),
            sender_key: facts.sender_key.clone(),
            duration_ms: facts.received_at.elapsed().as_millis() as u64,
            outcome: crate::stats::Stats::bucket_of(error.code),
            code: Some(error.code),
            message: Some(error.message),
            price: facts.price,
            usage: facts.usage,
        };
        self.logger.job(level, &line);
        self.write_ledger(
            id.unwrap_or_default(),
            facts,
            line.outcome,
            Some(error.code),
            false,
        );
        sent
    }

    /// The ledger's line for a job that ran (refusals earn and spend nothing and are not
    /// written); `earned` when its result was handed to the connection.
    fn write_ledger(
        &self,
        id: &str,
        facts: &JobFacts,
        outcome: &str,
        code: Option<ErrorCode>,
        earned: bool,
    ) {
        let Some(ledger) = self.ledger.as_ref().filter(|_| facts.ran) else {
            return;
        };
        let entry = LedgerEntry {
            time: crate::timestamp::rfc3339(SystemTime::now()),
            worker: self.identity.id.clone(),
            id: loggable(id),
            sender: facts.sender.clone(),
            sender_key: facts.sender_key.clone(),
            price: facts.price,
            earned: if earned {
                facts.price.unwrap_or(0.0)
            } else {
                0.0
            },
            outcome: outcome.to_string(),
            code: code.map(|c| c.as_str().to_string()),
            tokens_in: None,
            tokens_out: None,
            cache_read_tokens: None,
            cache_write_tokens: None,
            cost: 0.0,
            duration_ms: facts.received_at.elapsed().as_millis() as u64,
        }
        .with_usage(facts.usage);
        if let Err(e) = ledger.append(&entry) {
            self.logger.log(
                Level::Error,
                &format!(
                    "[pier-connector] could not write the ledger {}: {e}",
                    ledger.path().display()
                ),
            );
        }
    }

    /// Sends a reply: by the source when it settles on the answer's fate (`send_reply`), else
    /// at once (`at_once`: refusals, and jobs answered on their first poll) or through the
    /// outbox. False when it could not be sent (counted and logged).
    /// `dedupe_id`: what deduplicates the answer where a stream keeps it (the job id of a job
    /// that ran).
    async fn send<I: Inbound>(
        &self,
        inbound: &I,
        dedupe_id: Option<&str>,
        subject: Subject,
        payload: Vec<u8>,
        headers: Option<HeaderMap>,
        at_once: bool,
    ) -> bool {
        let reply = Reply {
            subject,
            payload: payload.into(),
            headers,
        };
        let sent = match inbound.send_reply(reply, dedupe_id) {
            Ok(confirmed) => confirmed.await,
            Err(reply) => {
                let reply = if at_once {
                    reply
                } else {
                    match self.outbox.push(reply) {
                        Ok(()) => return true,
                        Err(closed) => closed,
                    }
                };
                outbox::publish(&self.client, reply)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        match sent {
            Ok(()) => true,
            Err(e) => {
                reply_failed(&self.stats, &self.logger, &e);
                false
            }
        }
    }

    /// Waits (up to [`FINAL_FLUSH`]) for the connection to pass on what was sent so far (at
    /// shutdown).
    pub(crate) async fn flush(&self) -> bool {
        matches!(
            tokio::time::timeout(FINAL_FLUSH, self.client.flush()).await,
            Ok(Ok(()))
        )
    }

    /// Lets running jobs finish within `drainTimeoutMs`, answers the rest SHUTTING_DOWN (or
    /// gives them back to their source), then sends every queued reply.
    pub(crate) async fn finish(&self) {
        self.jobs.close();
        let drain_timeout = Duration::from_millis(self.config.drain_timeout_ms);
        if tokio::time::timeout(drain_timeout, self.jobs.wait())
            .await
            .is_err()
        {
            self.logger.log(
                Level::Warn,
                &format!(
                    "[pier-connector] {} job(s) still running after {} ms: stopping them",
                    self.jobs.len(),
                    drain_timeout.as_millis()
                ),
            );
            self.cancel.cancel();
            let _ = tokio::time::timeout(FINAL_FLUSH, self.jobs.wait()).await;
        }
        self.outbox.close();
        let task = crate::sync::lock(&self.outbox_task).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(FINAL_FLUSH, task).await;
        }
        let _ = self.flush().await;
    }
}

fn reply_failed(stats: &Stats, logger: &SharedLogger, error: &dyn std::fmt::Display) {
    stats.reply_failed();
    logger.log(
        Level::Error,
        &format!("[pier-connector] could not send a reply: {error}"),
    );
}
