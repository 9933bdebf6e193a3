//! Moves jobs, whatever delivered them: admits, runs and answers each.
//!
//! A delivery source (`delivery::subscription` for core NATS, `delivery::jetstream` for a pull
//! consumer) hands each message to [`Pipeline::admit`] as an [`Inbound`]. What becomes of it is
//! decided in one place, as a pure step ([`admission::admit`]); the pipeline only does what
//! the verdict says: takes the slot, the id, the nonce and the sender's share it names, runs the
//! job under its deadline, and answers it exactly once; the source is then told how it ended
//! ([`Settle`]), which is where JetStream acks.
//!
//! A handler call holds its concurrency slot and its id until it has really returned: a turn
//! past its deadline is answered TIMEOUT at once and told to stop, and keeps both until it has.
//! So no more than `maxConcurrentJobs` handler calls run at once while the worker runs (a stop
//! stops waiting for the calls it told to end; a start after it waits for none of them).

use crate::admission::{self, Admitted, Current, Message, NotRun, Policy, SenderFacts};
use crate::budget::{DailyUse, DayUse};
use crate::config::Config;
use crate::error::{ErrorCode, JobError};
use crate::handler::{HandlerResult, JobHandler, JobInput, Usage};
use crate::ledger::{Ledger, LedgerEntry, RETRIED, UNDELIVERED};
use crate::log::{loggable, JobLine, Level, SharedLogger};
use crate::outbox::{self, Outbox, Reply};
use crate::progress::{JobProgress, Partials, Progress};
use crate::protocol::{self, JobRequest, WorkerIdentity};
use crate::rate::RateLimits;
use crate::signature::{self, Accepted, Denied, SigningKey};
use crate::stats::{Outcome, Stats};
use async_nats::{Client, HeaderMap, Subject};
use futures_util::future::BoxFuture;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use crate::admission::ReplyTarget;

/// How long jobs cancelled at shutdown get to send their SHUTTING_DOWN replies, and the
/// connection to flush them.
pub(crate) const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Room left in a message for the protocol line and the error headers, so a reply judged to
/// fit does fit under the server's `max_payload`.
const REPLY_OVERHEAD: usize = 1024;

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

    /// A refusal for a reason of this worker's own (OVERLOADED, RATE_LIMITED,
    /// BUDGET_EXHAUSTED) need not end a job another worker may take: the source's way to give
    /// it back instead of answering it, or `None` to answer it. `left`: what is left of the
    /// job's deadline, when its payload could be read.
    fn pass_on(&self, _error: &JobError, _left: Option<Duration>) -> Option<Settle> {
        None
    }

    /// Work that keeps a long job's message alive while it runs (JetStream in-progress acks);
    /// aborted when the job ends.
    fn hold_in_progress(&self) -> Option<JoinHandle<()>> {
        None
    }

    /// A source that settles on what became of the answer (JetStream acks a job only once its
    /// answer is confirmed) sends it itself: the future resolves when the server confirmed
    /// it, or with why it could not. The others hand the reply back (`Err`), and the pipeline
    /// sends it on, through the outbox with the other replies finishing together.
    /// `answer_key`: what names the answer of a job that ran where a stream keeps it.
    fn send_reply(
        &self,
        reply: Reply,
        answer_key: Option<&str>,
    ) -> Result<impl Future<Output = Result<(), String>> + Send + 'static, Reply>;

    /// Told how the job ended, after its answer (if any) was sent.
    fn settle(self, how: Settle) -> impl Future<Output = ()> + Send;
}

/// What a job's log line tells besides how it ended (never its task).
struct JobFacts {
    received_at: Instant,
    /// Who sent it, as admission read it.
    sender: SenderFacts,
    /// The job ran (reached the handler): its end goes in the ledger.
    ran: bool,
    /// What its turn used, when the handler measured it.
    usage: Option<Usage>,
    /// What names the job's answer where a stream keeps it (`Nats-Msg-Id`): see [`answer_key`].
    answer_key: Option<String>,
    /// What was left of its deadline when it was admitted or refused (once its payload read).
    left: Option<Duration>,
    /// What names the job across its runs in the ledger (`job`): its answer key, where it can
    /// run again (a JetStream job; a signed one, named by its sender and id). An unsigned job
    /// over core NATS is a run of its own, and nothing need remember it.
    job: Option<String>,
}

/// How a job's answer went: its outcome (`completed`, or the code's bucket), its code, and
/// whether it was handed to the connection. A job that ran writes it in the ledger.
#[derive(Clone, Copy)]
struct Answered {
    outcome: &'static str,
    code: Option<ErrorCode>,
    sent: bool,
}

impl Answered {
    /// What the source is told: answered (`ok` for a result), or undelivered.
    fn settle(self) -> Settle {
        if self.sent {
            Settle::Answered {
                ok: self.code.is_none(),
            }
        } else {
            Settle::Undelivered
        }
    }
}

impl JobFacts {
    fn new(received_at: Instant, sender: SenderFacts) -> JobFacts {
        JobFacts {
            received_at,
            sender,
            ran: false,
            usage: None,
            answer_key: None,
            left: None,
            job: None,
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
    /// Handler calls of answered jobs (TIMEOUT, SHUTTING_DOWN, CANCELLED) that have not
    /// returned: `finish` waits for them once it has told them to stop, so that when a stop
    /// resolves no job is counted in flight and every ledger line is written.
    outliving: TaskTracker,
    cancel: CancellationToken,
    outbox: Arc<Outbox>,
    outbox_task: std::sync::Mutex<Option<JoinHandle<()>>>,
    running_ids: RunningIds,
    /// What admission decides by: the config, `allowedSenders`, the signature checker (whose
    /// replay memory the pipeline fills with the nonces of jobs that run).
    policy: Policy,
    /// Signs every reply (`Pier-Worker`) when the worker has a key.
    signing_key: Option<SigningKey>,
    /// `ledgerFile`: where each job that ran is written down.
    ledger: Option<Ledger>,
    /// What job turns used today (`maxDailySpend`, `maxDailyTokens`).
    daily: Arc<DailyUse>,
    /// The senders' shares per minute (`senderJobsPerMinute`, `unsignedJobsPerMinute`).
    rates: std::sync::Mutex<RateLimits>,
    /// Progress for the jobs that ask for it, and the cancel subscription (protocol v1.1).
    progress: Arc<Progress>,
    /// Stops the cancel subscription's task, once the jobs are done.
    cancels: std::sync::Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

/// The claims ([`admission::claim_key`]) of the jobs admitted whose handler call has not yet
/// stopped.
type RunningIds = Arc<std::sync::Mutex<HashSet<String>>>;

/// A job's claim held from admission until the job is answered and its handler call has
/// stopped; released on drop. Keyed by who sent the job and its id (protocol.md, "Job
/// identity"), never by the id alone: two requesters that chose one id never collide.
pub(crate) struct IdClaim {
    ids: RunningIds,
    id: String,
}

impl IdClaim {
    /// `None` when a job with this claim is already running; `claim` `None` takes a fresh
    /// token of the worker's own, which nothing can collide with.
    fn take(ids: &RunningIds, claim: Option<String>) -> Option<IdClaim> {
        let id = claim.unwrap_or_else(|| format!("run:{}", protocol::new_id()));
        crate::sync::lock(ids).insert(id.clone()).then(|| IdClaim {
            ids: ids.clone(),
            id,
        })
    }
}

impl Drop for IdClaim {
    fn drop(&mut self) {
        crate::sync::lock(&self.ids).remove(&self.id);
    }
}

/// The worker as admission sees it when a message arrives.
struct Occupancy<'a> {
    pipeline: &'a Pipeline,
    /// The source already holds a slot for this message.
    held: bool,
    draining: bool,
}

impl Current for Occupancy<'_> {
    fn draining(&self) -> bool {
        self.draining
    }

    fn slots_free(&self) -> usize {
        self.pipeline.slots.available_permits() + usize::from(self.held)
    }

    fn running(&self, claim: &str) -> bool {
        crate::sync::lock(&self.pipeline.running_ids).contains(claim)
    }

    fn nonce(&self, accepted: &Accepted) -> Result<(), Denied> {
        self.pipeline.policy.signatures.lookup(accepted)
    }

    fn day_use(&self, now_ms: i64) -> DayUse {
        self.pipeline.daily.on(now_ms)
    }

    fn jobs_this_minute(&self, sender_key: Option<&str>, now_ms: i64) -> f64 {
        crate::sync::lock(&self.pipeline.rates).used(sender_key, now_ms)
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
    /// How many nonces the replay memory holds at most.
    pub replay_memory_cap: usize,
    /// What job turns used today, read from the ledger when the worker started.
    pub daily: Arc<DailyUse>,
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
            replay_memory_cap,
            daily,
        } = parts;
        let (outbox, outbox_task) = Outbox::start(client.clone(), {
            let (stats, logger) = (stats.clone(), logger.clone());
            move |e| reply_failed(&stats, &logger, &e)
        });
        let progress = Progress::new(
            client.clone(),
            Duration::from_millis(config.progress_interval_ms),
            identity.clone(),
            stats.clone(),
        );
        Arc::new(Pipeline {
            progress,
            cancels: std::sync::Mutex::new(None),
            slots: Arc::new(Semaphore::new(config.max_concurrent_jobs as usize)),
            policy: Policy::new(config.clone(), signing_key.is_some(), replay_memory_cap),
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
            outliving: TaskTracker::new(),
            cancel: CancellationToken::new(),
            outbox,
            outbox_task: std::sync::Mutex::new(Some(outbox_task)),
            running_ids: Arc::default(),
            daily,
            rates: std::sync::Mutex::new(RateLimits::new(crate::rate::SENDER_MEMORY_CAP)),
        })
    }

    /// Counts what a turn used: in the stats, and in the day's use the budget is held to.
    fn spent(&self, usage: &Usage) {
        self.stats.add_usage(usage);
        self.daily.add(usage, signature::unix_ms(SystemTime::now()));
    }

    pub(crate) fn logger(&self) -> &SharedLogger {
        &self.logger
    }

    /// Subscribes to this worker's cancel subject (protocol v1.1), before jobs arrive. Without
    /// it (the connection refused the subscription) jobs still run and report progress; they
    /// cannot be cancelled, which is logged.
    pub(crate) async fn listen_for_cancels(&self) {
        let stop = CancellationToken::new();
        match self.progress.listen(stop.clone()).await {
            Ok(task) => *crate::sync::lock(&self.cancels) = Some((stop, task)),
            Err(e) => self.logger.log(
                Level::Warn,
                &format!(
                    "[pier-connector] could not subscribe to the cancel subject {}: {e}; jobs cannot be cancelled",
                    self.progress.cancel_subject()
                ),
            ),
        }
    }

    /// The concurrency slots, for sources that take one before they fetch a message.
    pub(crate) fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// What admission says of `inbound`, with the worker as it is now.
    fn judge<I: Inbound>(
        &self,
        inbound: &I,
        held: bool,
        draining: bool,
    ) -> Result<Box<Admitted>, NotRun> {
        let parsed = protocol::parse_job(inbound.payload(), self.config.max_payload_bytes);
        let id = match &parsed {
            Ok(job) => Some(job.id.as_str()),
            Err(rejection) => rejection.id.as_deref(),
        };
        let target = inbound.reply_target(id);
        let values = |name: &str| {
            inbound
                .headers()
                .map(|h| h.get_all(name).map(|v| v.as_str()).collect())
                .unwrap_or_default()
        };
        let sender_headers = values(signature::SENDER_HEADER);
        let progress_headers = values(protocol::PROGRESS_TO_HEADER);
        let message = Message {
            parsed,
            target,
            defect: inbound.defect(),
            sender_headers,
            progress_headers,
            payload: inbound.payload(),
            subject: inbound.subject(),
            signed_reply: inbound.signed_reply(),
            stored: inbound.stored(),
        };
        let current = Occupancy {
            pipeline: self,
            held,
            draining,
        };
        admission::admit(
            message,
            &self.policy,
            signature::unix_ms(SystemTime::now()),
            &current,
        )
    }

    /// Admits one message (`slot` when the source already holds one for it): asks admission,
    /// answers a refusal, or takes the slot, the id and the nonce it names and runs the job in
    /// its own task, or inline when the handler answers on its first poll.
    pub(crate) async fn admit<I: Inbound>(
        self: &Arc<Self>,
        inbound: I,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        let received_at = Instant::now();
        self.stats.received();
        let admitted = match self.judge(&inbound, slot.is_some(), false) {
            Ok(admitted) => admitted,
            Err(not_run) => return self.not_run(inbound, not_run, received_at).await,
        };
        let Admitted {
            job,
            target,
            sender,
            signature,
            budget,
            left,
            claim,
            progress_to,
        } = *admitted;
        let mut facts = JobFacts::new(received_at, sender);
        facts.left = Some(left);
        facts.answer_key = Some(answer_key(
            facts.sender.key.as_deref(),
            &job.id,
            inbound.stored(),
        ));
        if facts.sender.key.is_some() || inbound.stored().is_some() {
            facts.job.clone_from(&facts.answer_key);
        }
        let id = Some(job.id.as_str());
        // Admission saw them free; each is taken here, atomically, and a race lost is answered
        // like the rule it lost to.
        let Some(slot) = slot.or_else(|| self.slots.clone().try_acquire_owned().ok()) else {
            let error = admission::overloaded(self.config.max_concurrent_jobs);
            return self.refuse(inbound, target, id, error, &facts).await;
        };
        let Some(claim) = IdClaim::take(&self.running_ids, claim) else {
            let error = admission::duplicate_id();
            return self.refuse(inbound, target, id, error, &facts).await;
        };
        // The sender's share is used by a job that runs, and only then. A job that lost its
        // share meanwhile to another of the same sender's jobs is refused as admission would.
        let share = admission::share_of(&self.config, facts.sender.key.as_deref());
        if share > 0
            && !crate::sync::lock(&self.rates).take(
                facts.sender.key.as_deref(),
                share,
                signature::unix_ms(SystemTime::now()),
            )
        {
            let error = admission::rate_limited(&self.config, facts.sender.key.is_some());
            return self.refuse(inbound, target, id, error, &facts).await;
        }
        // Only a job that runs is remembered: one refused before it runs may come again, and
        // a flood refused for lack of slots never fills the memory.
        if let Some(Err(denied)) = signature.map(|s| self.policy.signatures.remember(&s)) {
            let error = self.policy.denied(denied);
            return self.refuse(inbound, target, id, error, &facts).await;
        }
        self.stats.job_started();
        // Admitted and holding all it needs: `accepted` goes out now (from its own task).
        let progress = progress_to.map(|to| self.progress.start_job(&job.id, to, received_at));
        // A JetStream job's deadline counts from when the stream stored it (`left`).
        let deadline = received_at + left;
        // A handler that answers on its first poll runs here, in the receive loop, and its
        // reply is published at once (it would gain nothing from waiting in the outbox).
        let inline = self.handler.ready_on_first_poll();
        let run = self.clone().run(
            inbound,
            (job, target),
            facts,
            (slot, claim),
            (deadline, budget),
            (inline, progress),
        );
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

    /// Does what admission said of a job that does not run.
    async fn not_run<I: Inbound>(&self, inbound: I, not_run: NotRun, received_at: Instant) {
        match not_run {
            NotRun::Refuse(refusal) => {
                let mut facts = JobFacts::new(received_at, refusal.sender);
                facts.left = refusal.left;
                self.refuse(
                    inbound,
                    refusal.target,
                    refusal.id.as_deref(),
                    refusal.error,
                    &facts,
                )
                .await
            }
            NotRun::Unanswerable { id, why } => {
                self.stats.record(Outcome::NoReply);
                self.logger.log(
                    Level::Warn,
                    &format!(
                        "[pier-connector] job {} not run: {why}",
                        id.as_deref()
                            .map_or_else(|| "(no id)".to_string(), loggable)
                    ),
                );
                inbound.settle(Settle::Unanswerable).await
            }
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
            facts.sender.nonce.as_deref().unwrap_or_default(),
            payload,
            SystemTime::now(),
        );
        let mut headers = base.unwrap_or_default();
        headers.insert(signature::WORKER_HEADER, header.as_str());
        Some(headers)
    }

    /// Answers a message that arrived while the worker is shutting down: SHUTTING_DOWN (signed
    /// for the request it refuses, so a signed requester reads a refusal it can retry
    /// elsewhere), never run.
    pub(crate) async fn refuse_draining<I: Inbound>(&self, inbound: I) {
        let received_at = Instant::now();
        self.stats.received();
        let not_run = match self.judge(&inbound, false, true) {
            Err(not_run) => not_run,
            // Admission admits nothing while draining; should it, the job is refused all the same.
            Ok(admitted) => NotRun::Refuse(Box::new(admission::Refusal {
                error: JobError::new(ErrorCode::ShuttingDown, "the worker is shutting down"),
                id: Some(admitted.job.id),
                target: admitted.target,
                sender: admitted.sender,
                left: Some(admitted.left),
            })),
        };
        self.not_run(inbound, not_run, received_at).await
    }

    async fn refuse<I: Inbound>(
        &self,
        inbound: I,
        target: Subject,
        id: Option<&str>,
        error: JobError,
        facts: &JobFacts,
    ) {
        // Another worker may take it (JetStream): given back, not answered.
        if let Some(settle) = inbound.pass_on(&error, facts.left) {
            self.stats.passed_on(error.code);
            if self.logger.enabled(Level::Debug) {
                self.logger.log(
                    Level::Debug,
                    &format!(
                        "[pier-connector] job {} given back for another worker: {}",
                        id.map_or_else(|| "(no id)".to_string(), loggable),
                        error.code.as_str()
                    ),
                );
            }
            return inbound.settle(settle).await;
        }
        let answered = self
            .answer_error(&inbound, target, id, error, true, facts)
            .await;
        inbound.settle(answered.settle()).await;
    }

    async fn run<I: Inbound>(
        self: Arc<Self>,
        inbound: I,
        (job, target): (JobRequest, Subject),
        mut facts: JobFacts,
        (slot, claim): (OwnedSemaphorePermit, IdClaim),
        (deadline, budget): (Instant, Duration),
        (inline, progress): (bool, Option<JobProgress>),
    ) {
        let in_progress = inbound.hold_in_progress();
        let received_at = facts.received_at;
        let id = job.id.clone();
        let (outcome, still_running) = self
            .execute(
                job,
                facts.sender.key.clone(),
                (deadline, budget),
                progress.as_ref(),
            )
            .await;
        // A call that returned frees its slot before the reply goes out, so a requester that
        // sends its next job on receiving this reply never finds the worker still full. One
        // that did not keeps it, with its id, until it has (below).
        let still_running = match still_running {
            None => {
                drop(slot);
                None
            }
            Some(turn) => Some((turn, slot)),
        };
        let HandlerResult {
            answer: outcome,
            usage,
        } = outcome;
        // Progress ends before the answer goes out: nothing follows it.
        if let Some(progress) = progress {
            progress
                .finish(outcome.as_ref().ok().map(String::as_str))
                .await;
        }
        // Spent whatever the answer: a failed turn used its tokens too.
        if let Some(usage) = &usage {
            self.spent(usage);
        }
        facts.ran = true;
        facts.usage = usage;
        // Every run counts, timed out or failed too (ADR-32 processing_time).
        self.stats.processed(received_at.elapsed());
        let retry = outcome.as_ref().err().and_then(|e| inbound.retry(e));
        let (settle, line) = match (retry, outcome) {
            (Some(retry), Err(error)) => {
                self.stats.record_error(error.code, &error.message);
                let line = Answered {
                    outcome: RETRIED,
                    code: Some(error.code),
                    sent: false,
                };
                (retry, line)
            }
            (_, Ok(result)) => {
                let answered = self
                    .answer_result(&inbound, target, &id, &facts, &result, inline)
                    .await;
                (answered.settle(), answered)
            }
            (None, Err(error)) => {
                let answered = self
                    .answer_error(&inbound, target, Some(&id), error, inline, &facts)
                    .await;
                (answered.settle(), answered)
            }
        };
        // A call that has returned is written down now; one still running, once it has, with
        // what it spent meanwhile (`outlive`).
        if still_running.is_none() {
            self.write_ledger(&id, &facts, line);
        }
        // The job stays in progress until its answer is confirmed (a JetStream publish may
        // wait out an election): the ack wait must not give it to another worker meanwhile.
        if let Some(task) = in_progress {
            task.abort();
        }
        let Some((turn, slot)) = still_running else {
            // The turn is over and answered: its id is free before the source settles, which
            // may take a while (a JetStream ack waiting out an election), so a redelivery
            // meanwhile runs again instead of being refused as a duplicate of itself.
            drop(claim);
            inbound.settle(settle).await;
            self.stats.job_finished();
            return;
        };
        // Answered (TIMEOUT, SHUTTING_DOWN) and settled, while the handler call, told to stop,
        // has not returned yet: it is still running, so it keeps its slot and its id until it
        // has. A cap that freed them now would let a flood of short deadlines run any number of
        // turns at once.
        inbound.settle(settle).await;
        // Answered: stopping the worker need not wait for the call itself (it was told to
        // stop). `finish` ends this wait once the answered jobs are done, then waits for this
        // task, so the job is counted out and its ledger line written before a stop resolves.
        let outliving = self.outliving.clone();
        outliving.spawn(async move {
            self.outlive(&id, turn, &mut facts, line).await;
            drop(slot);
            drop(claim);
            self.stats.job_finished();
        });
    }

    /// Waits for a handler call the worker stopped waiting for to return (or for the worker to
    /// stop for good), counts what it spent meanwhile, and writes its ledger line.
    async fn outlive(
        &self,
        id: &str,
        turn: BoxFuture<'static, HandlerResult>,
        facts: &mut JobFacts,
        line: Answered,
    ) {
        let late = tokio::select! {
            biased;
            result = turn => Some(result),
            _ = self.cancel.cancelled() => None,
        };
        let after = facts.received_at.elapsed();
        if let Some(usage) = late.and_then(|r| r.usage) {
            self.spent(&usage);
            facts.usage = Some(facts.usage.map_or(usage, |u| u.plus(usage)));
        }
        if self.logger.enabled(Level::Debug) {
            self.logger.log(
                Level::Debug,
                &format!(
                    "[pier-connector] job {}: its handler call stopped {} ms after it was received; its slot is free",
                    loggable(id),
                    after.as_millis()
                ),
            );
        }
        self.write_ledger(id, facts, line);
    }

    /// Calls the handler under the job's deadline. The answer, and the call itself when the
    /// worker stopped waiting for it (its deadline passed, or the worker is shutting down): the
    /// handler was told to stop it, but it runs until it returns.
    async fn execute(
        &self,
        job: JobRequest,
        sender_key: Option<String>,
        (deadline, budget): (Instant, Duration),
        progress: Option<&JobProgress>,
    ) -> (HandlerResult, Option<BoxFuture<'static, HandlerResult>>) {
        let id = job.id.clone();
        let run_key = protocol::new_token();
        let input = JobInput {
            sender: job.sender().map(str::to_string),
            sender_key,
            run_key: run_key.clone(),
            id: job.id,
            task: job.task,
            system_prompt: job.system_prompt,
            timeout_ms: deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
            meta: job.meta,
            partials: progress.map_or_else(Partials::none, JobProgress::partials),
        };
        let cancelled = progress.map(JobProgress::cancelled);
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
        let mut turn = self.handler.run(input);
        let cut = tokio::select! {
            // The handler first: one that is ready at once never arms the deadline timer.
            biased;
            result = &mut turn => return (result, None),
            _ = tokio::time::sleep_until(deadline.into()) => JobError::new(
                ErrorCode::Timeout,
                format!("the job did not finish within its {} ms deadline", budget.as_millis()),
            ),
            _ = self.cancel.cancelled() => JobError::new(
                ErrorCode::ShuttingDown,
                "the worker shut down before the job finished",
            ),
            _ = cancelled_or_never(cancelled.as_ref()) => JobError::new(
                ErrorCode::Cancelled,
                "the requester cancelled the job",
            ),
        };
        self.handler.cancel(&run_key, &id, cut.code);
        (HandlerResult::failed(cut), Some(turn))
    }

    /// Sends a `task_result`, counts and logs it. A result too large for the server becomes a
    /// RESULT_TOO_LARGE `task_error` instead of silence.
    async fn answer_result<I: Inbound>(
        &self,
        inbound: &I,
        target: Subject,
        id: &str,
        facts: &JobFacts,
        result: &str,
        at_once: bool,
    ) -> Answered {
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
                .await;
        }
        let headers = self.reply_headers(None, Some(id), facts, &bytes);
        let sent = self
            .send(
                inbound,
                facts.answer_key.as_deref().filter(|_| facts.ran),
                target,
                bytes,
                headers,
                at_once,
            )
            .await;
        self.stats.record(Outcome::Completed);
        let answered = Answered {
            outcome: "completed",
            code: None,
            sent,
        };
        self.log_end(Level::Info, Some(id), facts, (answered, latency_ms), None);
        answered
    }

    /// Sends a `task_error`, counts and logs it.
    async fn answer_error<I: Inbound>(
        &self,
        inbound: &I,
        target: Subject,
        id: Option<&str>,
        error: JobError,
        at_once: bool,
        facts: &JobFacts,
    ) -> Answered {
        let bytes = protocol::encode_error(id, &error, &self.identity);
        let mut headers = HeaderMap::new();
        for (name, value) in protocol::error_headers(error.code, &error.message) {
            headers.insert(name, value.as_str());
        }
        let headers = self.reply_headers(Some(headers), id, facts, &bytes);
        // Only the answer of a job that ran deduplicates by its id in a results stream: a refusal
        // (a second copy of a running job, say) must never take the place of the real answer.
        let dedupe = facts.answer_key.as_deref().filter(|_| facts.ran);
        let sent = self
            .send(inbound, dedupe, target, bytes, headers, at_once)
            .await;
        self.stats.record_error(error.code, &error.message);
        let level = match error.code {
            ErrorCode::ExecutionFailed | ErrorCode::RuntimeUnavailable => Level::Error,
            _ => Level::Warn,
        };
        let answered = Answered {
            outcome: crate::stats::Stats::bucket_of(error.code),
            code: Some(error.code),
            sent,
        };
        let duration_ms = facts.received_at.elapsed().as_millis() as u64;
        self.log_end(
            level,
            id,
            facts,
            (answered, duration_ms),
            Some(error.message),
        );
        answered
    }

    /// The one line every answered job logs (never its task); a result's duration is the
    /// latency its `task_result` reports.
    fn log_end(
        &self,
        level: Level,
        id: Option<&str>,
        facts: &JobFacts,
        (answered, duration_ms): (Answered, u64),
        message: Option<String>,
    ) {
        if !self.logger.enabled(level) {
            return;
        }
        let line = JobLine {
            job_id: id.map(loggable),
            sender: facts.sender.name.clone(),
            sender_key: facts.sender.key.clone(),
            duration_ms,
            outcome: answered.outcome,
            code: answered.code,
            message,
            price: facts.sender.price,
            usage: facts.usage,
        };
        self.logger.job(level, &line);
    }

    /// The end of a run of a job (refusals earn and spend nothing and are not counted or
    /// written): counted in the day's jobs and earnings, and its ledger line. An answer not
    /// handed to the connection (confirmed, where the source confirms) is `undelivered`, and a
    /// job earns once, at its first delivered result (stats and ledger alike). A rerun (the job
    /// ran before) is marked.
    fn write_ledger(&self, id: &str, facts: &JobFacts, line: Answered) {
        let Answered {
            outcome,
            code,
            sent,
        } = line;
        let outcome = if sent || outcome == RETRIED {
            outcome
        } else {
            UNDELIVERED
        };
        let now = SystemTime::now();
        let (counted, earned) = self.daily.ended(
            facts.job.as_deref(),
            outcome,
            facts.sender.price,
            signature::unix_ms(now),
        );
        if earned > 0.0 {
            self.stats.add_earned(earned);
        }
        let Some(ledger) = self.ledger.as_ref() else {
            return;
        };
        let entry = LedgerEntry {
            time: crate::timestamp::rfc3339(now),
            worker: self.identity.id.clone(),
            id: loggable(id),
            job: facts.job.clone(),
            sender: facts.sender.name.clone(),
            sender_key: facts.sender.key.clone(),
            price: facts.sender.price,
            earned,
            outcome: outcome.to_string(),
            rerun: counted.rerun,
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
    /// `dedupe_id`: what deduplicates the answer where a stream keeps it (the answer key of a
    /// job that ran, [`answer_key`]).
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
        // Handler calls answered at their deadline and still running were told to stop; the
        // worker stops waiting for them, and counts them out.
        self.cancel.cancel();
        self.outliving.close();
        let _ = tokio::time::timeout(FINAL_FLUSH, self.outliving.wait()).await;
        let cancels = crate::sync::lock(&self.cancels).take();
        if let Some((stop, task)) = cancels {
            stop.cancel();
            let _ = tokio::time::timeout(FINAL_FLUSH, task).await;
        }
        self.outbox.close();
        let task = crate::sync::lock(&self.outbox_task).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(FINAL_FLUSH, task).await;
        }
        let _ = self.flush().await;
    }
}

/// What names a job's answer where a stream keeps it (its `Nats-Msg-Id`, by which the stream
/// deduplicates the answer of a redelivered job). A job's id is the requester's choice, so it
/// names a job only with who sent it (protocol.md, "Job identity"): the verified key and the id
/// for a signed job, the stream sequence for an unsigned JetStream job, a fresh random token
/// otherwise. Two requesters that pick the same id never deduplicate away each other's
/// answer. Hashed, so no id can put a line break or any other byte in a header.
fn answer_key(sender_key: Option<&str>, id: &str, stored: Option<(i64, u64)>) -> String {
    match (sender_key, stored) {
        (Some(key), _) => format!(
            "pier-{}",
            signature::sha256_hex(format!("{key}\n{id}").as_bytes())
        ),
        (None, Some((_, seq))) => format!("pier-seq-{seq}"),
        (None, None) => format!("pier-{}", protocol::new_id()),
    }
}

/// Resolves when `token` is cancelled; never without one.
async fn cancelled_or_never(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

fn reply_failed(stats: &Stats, logger: &SharedLogger, error: &dyn std::fmt::Display) {
    stats.reply_failed();
    logger.log(
        Level::Error,
        &format!("[pier-connector] could not send a reply: {error}"),
    );
}
