//! Admission: the one place that decides whether a delivered job runs, as a pure step.
//!
//! [`admit`] takes what a delivery source saw of one message ([`Message`]: the parsed payload or
//! its rejection, the reply target, the `Pier-Sender` header, the stream's stored time), the
//! worker's [`Policy`] (its config), the wall clock, and the current occupancy ([`Current`]:
//! free slots, ids in flight, the replay memory, draining, the day's use, the senders' shares),
//! and answers: run it ([`Admitted`]), or not ([`NotRun`]): refuse it with a code
//! ([`Refusal`]), give it back to its source, or leave it unanswered. It sends nothing, takes
//! nothing and logs nothing; the pipeline does that with what the verdict says. The same rules
//! hold whatever delivered the job.
//!
//! The order: the reply target (nobody to answer: not run), draining (SHUTTING_DOWN), malformed
//! headers, the signature (UNAUTHORIZED, before the payload's own errors: a message signed in
//! someone else's name is refused as that), the signed reply line, the payload (PARSE_ERROR,
//! INVALID_REQUEST, PAYLOAD_TOO_LARGE), the progress subject (`Pier-Progress-To`:
//! INVALID_REQUEST), `allowedSenders`, `minJobPrice`, the day's budget
//! (`maxDailySpend`, `maxDailyTokens`: BUDGET_EXHAUSTED), the sender's share per minute
//! (`senderJobsPerMinute`, `unsignedJobsPerMinute`: RATE_LIMITED), the deadline (a
//! JetStream job that waited past it in the stream), a duplicate id, a free slot, and room in
//! the replay memory. Everything that costs the worker nothing comes before what it would hold.

use crate::budget::DayUse;
use crate::config::{Config, SenderTrust};
use crate::error::{ErrorCode, JobError};
use crate::log::loggable;
use crate::protocol::{JobRequest, Rejection};
use crate::signature::{self, Accepted, Delivered, Denied, SenderVerifier};
use crate::subject;
use async_nats::Subject;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Where a job's answer can go.
#[derive(Debug, Clone)]
pub(crate) enum ReplyTarget {
    /// A subject that may be published to.
    Subject(Subject),
    /// Nowhere: the message named no usable reply subject. `why` is logged.
    Nowhere { why: String },
}

/// One delivered message, as admission needs to see it.
pub(crate) struct Message<'a> {
    /// The payload read (`protocol::parse_job`), or why it could not be.
    pub parsed: Result<JobRequest, Rejection>,
    /// Where the source says the answer goes.
    pub target: ReplyTarget,
    /// Why the message cannot be taken as sent (malformed NATS headers).
    pub defect: Option<&'a str>,
    /// The `Pier-Sender` header values (more than one is malformed).
    pub sender_headers: Vec<&'a str>,
    /// The `Pier-Progress-To` header values (protocol v1.1; more than one is malformed).
    pub progress_headers: Vec<&'a str>,
    /// The payload exactly as received (what a signature covers).
    pub payload: &'a [u8],
    /// The subject the message arrived on.
    pub subject: &'a str,
    /// The reply line of a signature: `Pier-Reply-To`, else the NATS reply, else empty.
    pub signed_reply: &'a str,
    /// JetStream: when the stream stored the message (Unix ms), and its stream sequence.
    pub stored: Option<(i64, u64)>,
}

/// What the worker is doing right now, as far as admission needs it. Passed in, so admission
/// reads no global state and a test can say what it likes.
pub(crate) trait Current {
    /// The worker is shutting down: nothing new runs.
    fn draining(&self) -> bool;
    /// Concurrency slots free now (including one the source already holds for this message).
    fn slots_free(&self) -> usize;
    /// A job with this claim ([`claim_key`]) is in flight (admitted and not yet stopped).
    fn running(&self, claim: &str) -> bool;
    /// Whether the replay memory would take this verified nonce now (without taking it):
    /// `Denied::Unauthorized` for a replay, `Denied::MemoryFull` when it is full.
    fn nonce(&self, accepted: &Accepted) -> Result<(), Denied>;
    /// What job turns used on the UTC day of `now_ms` (`maxDailySpend`, `maxDailyTokens`).
    fn day_use(&self, now_ms: i64) -> DayUse;
    /// Jobs that ran in the minute before `now_ms` on the share of `sender_key` (a verified
    /// key; `None`: the unsigned jobs' share).
    fn jobs_this_minute(&self, sender_key: Option<&str>, now_ms: i64) -> f64;
}

/// The worker's admission policy: its config, read once.
pub(crate) struct Policy {
    pub config: Arc<Config>,
    /// `allowedSenders`, split into keys and names.
    pub allowed: Option<AllowedSenders>,
    /// Checks `Pier-Sender` signatures (its replay memory is the pipeline's, not admission's).
    pub signatures: SenderVerifier,
    /// The worker signs its replies: a refusal names the request's nonce.
    pub signs: bool,
    /// How many nonces the replay memory holds at most (`signature::REPLAY_MEMORY_CAP`).
    pub replay_memory_cap: usize,
}

impl Policy {
    pub(crate) fn new(config: Arc<Config>, signs: bool, replay_memory_cap: usize) -> Policy {
        Policy {
            allowed: AllowedSenders::of(&config),
            signatures: SenderVerifier::with_cap(config.signature_max_age_ms, replay_memory_cap),
            config,
            signs,
            replay_memory_cap,
        }
    }

    /// The refusal for a signature the replay memory denied.
    pub(crate) fn denied(&self, denied: Denied) -> JobError {
        match denied {
            Denied::Unauthorized(refusal) => JobError::new(ErrorCode::Unauthorized, refusal.0),
            Denied::MemoryFull => JobError::new(
                ErrorCode::Overloaded,
                format!(
                    "this worker's replay memory is full ({} signed jobs inside signatureMaxAgeMs); retry on another worker",
                    self.replay_memory_cap
                ),
            ),
        }
    }
}

/// `allowedSenders`: keys match a verified `Pier-Sender`, names the self-declared
/// `meta.sender` (under `senderTrust: "any"` only).
pub(crate) struct AllowedSenders {
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

/// Who sent a job, as its answer, log line and ledger line name it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SenderFacts {
    /// `meta.sender`, made loggable: a display name the requester chose.
    pub name: Option<String>,
    /// The `Pier-Sender` key, once its signature verified.
    pub key: Option<String>,
    /// The request's `Pier-Sender` nonce, for the reply's `Pier-Worker` signature.
    pub nonce: Option<String>,
    /// `meta.price`, when it is a positive number: what a completed job earns.
    pub price: Option<f64>,
}

impl SenderFacts {
    fn of(job: Option<&JobRequest>) -> SenderFacts {
        SenderFacts {
            name: job.and_then(JobRequest::sender).map(loggable),
            key: None,
            nonce: None,
            price: job
                .and_then(|j| j.meta.get("price"))
                .and_then(serde_json::Value::as_f64)
                .filter(|p| p.is_finite() && *p > 0.0),
        }
    }
}

/// A job that runs.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub job: JobRequest,
    pub target: Subject,
    pub sender: SenderFacts,
    /// The verified `Pier-Sender`, remembered once the job has its slot.
    pub signature: Option<Accepted>,
    /// The job's whole deadline (`timeoutMs` under `maxJobTimeoutMs`).
    pub budget: Duration,
    /// What is left of it now: the budget, less the time a JetStream job waited in the stream.
    pub left: Duration,
    /// What the job's in-flight claim is keyed by ([`claim_key`]); `None`: nothing another job
    /// could collide with (an unsigned job over core NATS).
    pub claim: Option<String>,
    /// Where the job's progress goes (`Pier-Progress-To`), when its requester asked for it.
    pub progress_to: Option<Subject>,
}

/// A job answered with a `task_error` and not run.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub error: JobError,
    /// The request's id when it could be read, else `None` (never the subject).
    pub id: Option<String>,
    pub target: Subject,
    pub sender: SenderFacts,
    /// What was left of the job's deadline, once its payload was read (a source that may give
    /// a refused job back for another worker answers it instead when little is left).
    pub left: Option<Duration>,
}

/// What becomes of a delivered message that does not run.
#[derive(Debug)]
pub(crate) enum NotRun {
    Refuse(Box<Refusal>),
    /// No usable reply target: not run, not answered. `why` is logged.
    Unanswerable {
        id: Option<String>,
        why: String,
    },
}

impl NotRun {
    /// A refusal of the job `id` (when its payload gave one), answered on `target`.
    fn refuse<T>(
        error: JobError,
        id: Option<String>,
        target: &Subject,
        sender: SenderFacts,
        left: Option<Duration>,
    ) -> Result<T, NotRun> {
        Err(NotRun::Refuse(Box::new(Refusal {
            error,
            id,
            target: target.clone(),
            sender,
            left,
        })))
    }
}

/// The refusals the pipeline may also meet when it takes what a verdict said (a slot, an id,
/// a nonce), so they read the same wherever they are decided.
pub(crate) fn overloaded(max_concurrent_jobs: u32) -> JobError {
    JobError::new(
        ErrorCode::Overloaded,
        format!(
            "worker is running its limit of {max_concurrent_jobs} jobs; retry on another worker"
        ),
    )
}

/// RATE_LIMITED: the share of a signed sender (`signed`) or of the unsigned jobs is used up.
pub(crate) fn rate_limited(config: &Config, signed: bool) -> JobError {
    let message = if signed {
        format!(
            "this sender's share of this worker ({} jobs a minute) is used up; retry later or on another worker",
            config.sender_jobs_per_minute
        )
    } else {
        format!(
            "the unsigned jobs' share of this worker ({} jobs a minute, all unsigned senders together) is used up; sign the request (Pier-Sender), retry later or on another worker",
            config.unsigned_jobs_per_minute
        )
    };
    JobError::new(ErrorCode::RateLimited, message)
}

/// The share per minute a job of `sender_key` is counted against (0: no limit).
pub(crate) fn share_of(config: &Config, sender_key: Option<&str>) -> u32 {
    match sender_key {
        Some(_) => config.sender_jobs_per_minute,
        None => config.unsigned_jobs_per_minute,
    }
}

pub(crate) fn duplicate_id() -> JobError {
    JobError::new(
        ErrorCode::InvalidRequest,
        "a job with this id is already running on this worker; give each job its own id",
    )
}

/// Decides what becomes of `message` under `policy`, at wall-clock time `now_ms` (Unix ms),
/// with the worker as `current` says it is.
pub(crate) fn admit(
    message: Message<'_>,
    policy: &Policy,
    now_ms: i64,
    current: &impl Current,
) -> Result<Box<Admitted>, NotRun> {
    let config = &policy.config;
    let Message {
        parsed,
        target,
        defect,
        sender_headers,
        progress_headers,
        payload,
        subject: arrived_on,
        signed_reply,
        stored,
    } = message;
    let id = match &parsed {
        Ok(job) => Some(job.id.clone()),
        Err(rejection) => rejection.id.clone(),
    };
    let mut sender = SenderFacts::of(parsed.as_ref().ok());
    let target = match target {
        ReplyTarget::Subject(subject) => {
            match subject::reply_refusal(&subject, &config.reply_subject_prefixes) {
                None => subject,
                Some(why) => {
                    return Err(NotRun::Unanswerable {
                        id,
                        why: why.into(),
                    })
                }
            }
        }
        ReplyTarget::Nowhere { why } => return Err(NotRun::Unanswerable { id, why }),
    };
    let refuse = |error: JobError, id: Option<String>, sender: SenderFacts| {
        NotRun::refuse(error, id, &target, sender, None)
    };
    // A refusal is signed for the request it refuses, when its nonce reads.
    let refusal_nonce = || {
        sender_headers
            .first()
            .filter(|_| policy.signs)
            .and_then(|value| signature::sender_nonce(value))
    };
    if current.draining() {
        sender.nonce = refusal_nonce();
        let error = JobError::new(ErrorCode::ShuttingDown, "the worker is shutting down");
        return refuse(error, id, sender);
    }
    if let Some(defect) = defect {
        return refuse(JobError::new(ErrorCode::InvalidRequest, defect), id, sender);
    }
    // Before the payload's own errors: a message signed in someone else's name is refused as
    // that, whatever it holds.
    let delivered = Delivered {
        payload,
        subjects: [arrived_on, &config.publish_subject],
        reply: signed_reply,
        time_ms: stored.map_or(now_ms, |(at, _)| at),
        stream_seq: stored.map(|(_, seq)| seq),
    };
    let accepted = match check_signature(&sender_headers, &delivered, policy, now_ms, current) {
        Ok(accepted) => accepted,
        Err(error) => {
            sender.nonce = refusal_nonce();
            return refuse(error, id, sender);
        }
    };
    if let Some(accepted) = &accepted {
        sender.key = Some(accepted.key.clone());
        sender.nonce = Some(accepted.nonce.clone());
    }
    // A signed job is answered where its signature says: on the reply line the requester
    // signed (core: Pier-Reply-To when a relay set it). Headers are not signed, so without
    // this a copy of someone's request with its own NATS reply and their Pier-Reply-To would
    // run in their name and be answered to the copier.
    let target = match (&accepted, signed_reply) {
        (Some(_), signed) if !signed.is_empty() && signed != target.as_str() => {
            if !subject::is_publish_subject(signed)
                || subject::reply_refusal(signed, &config.reply_subject_prefixes).is_some()
            {
                let error = JobError::new(
                    ErrorCode::Unauthorized,
                    "the signed reply subject (Pier-Reply-To) is not one this worker answers on",
                );
                return refuse(error, id, sender);
            }
            Subject::from(signed)
        }
        _ => target,
    };
    let refuse = |error: JobError, id: Option<String>, sender: SenderFacts| {
        NotRun::refuse(error, id, &target, sender, None)
    };
    let job = match parsed {
        Ok(job) => job,
        Err(rejection) => return refuse(rejection.error, rejection.id, sender),
    };
    // A JetStream job's deadline counts from when the stream stored it.
    let budget = config.job_deadline(job.timeout_ms);
    let budget_ms = i64::try_from(budget.as_millis()).unwrap_or(i64::MAX);
    let waited_ms = stored.map_or(0, |(at, _)| now_ms.saturating_sub(at).max(0));
    let left_ms = budget_ms.saturating_sub(waited_ms);
    let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
    // From here on a refusal carries what was left of the deadline.
    let refuse = |error: JobError, id: Option<String>, sender: SenderFacts| {
        NotRun::refuse(error, id, &target, sender, Some(left))
    };
    let progress_to = match progress_subject(&progress_headers, &config.reply_subject_prefixes) {
        Ok(to) => to,
        Err(why) => return refuse(JobError::new(ErrorCode::InvalidRequest, why), id, sender),
    };
    if let Some(allowed) = &policy.allowed {
        if !allowed.allow(sender.key.as_deref(), job.sender()) {
            let error = JobError::new(
                ErrorCode::Unauthorized,
                "this worker does not take jobs from this sender",
            );
            return refuse(error, id, sender);
        }
    }
    // Before a slot or the id is taken: a job that pays too little costs the worker nothing.
    if let Some(error) = price_refusal(config, &job) {
        return refuse(error, id, sender);
    }
    // The day's budget, then the sender's share: both cost nothing to tell.
    if let Some(error) = budget_refusal(config, current.day_use(now_ms)) {
        return refuse(error, id, sender);
    }
    let share = share_of(config, sender.key.as_deref());
    if share > 0 && current.jobs_this_minute(sender.key.as_deref(), now_ms) + 1.0 > f64::from(share)
    {
        return refuse(rate_limited(config, sender.key.is_some()), id, sender);
    }
    // A JetStream job that waited past its deadline in the stream is answered TIMEOUT without
    // running (its requester has given up on it).
    if left_ms <= 0 {
        let error = JobError::new(
            ErrorCode::Timeout,
            format!(
                "the job's {budget_ms} ms deadline passed while it waited in the stream ({waited_ms} ms); not run"
            ),
        );
        return refuse(error, id, sender);
    }
    // A second copy of a job in flight (the same sender and id, or the same stream message)
    // is refused; jobs of different requesters never collide, whatever ids they chose.
    let claim = claim_key(sender.key.as_deref(), &job.id, stored);
    if claim.as_deref().is_some_and(|claim| current.running(claim)) {
        return refuse(duplicate_id(), id, sender);
    }
    // A source whose jobs another worker may take (JetStream) gives this one back instead of
    // answering it (`Inbound::pass_on`).
    if current.slots_free() == 0 {
        return refuse(overloaded(config.max_concurrent_jobs), id, sender);
    }
    // Checked last, so only a job that would run can find the memory full.
    if let Some(accepted) = &accepted {
        if let Err(full) = current.nonce(accepted) {
            return refuse(policy.denied(full), id, sender);
        }
    }
    Ok(Box::new(Admitted {
        job,
        target,
        sender,
        signature: accepted,
        budget,
        left,
        claim,
        progress_to,
    }))
}

/// Where a job's progress goes: the `Pier-Progress-To` header's subject, or `None` when the
/// request has none; the reason to refuse it (INVALID_REQUEST) when it names no subject the
/// worker may publish progress to (protocol v1.1: a publish subject, no wildcards or spaces,
/// never under `$`; and, like replies, inside `replySubjectPrefixes` when that is set).
fn progress_subject(values: &[&str], prefixes: &[String]) -> Result<Option<Subject>, String> {
    let value = match values {
        [] => return Ok(None),
        [value] => value.trim(),
        _ => return Err("Pier-Progress-To header refused: more than one".into()),
    };
    if !subject::is_publish_subject(value) {
        return Err(
            "Pier-Progress-To header refused: not a subject one can publish to (no wildcards, no spaces)"
                .into(),
        );
    }
    if let Some(why) = subject::reply_refusal(value, prefixes) {
        return Err(format!(
            "Pier-Progress-To header refused: {}",
            why.replace("its reply subject", "the subject")
        ));
    }
    Ok(Some(Subject::from(value)))
}

/// What names a job in flight (protocol.md, "Job identity"): a job's id is its requester's
/// choice, so it names a job only together with who sent it. The verified key and the id for a
/// signed job, the stream sequence for an unsigned JetStream job; `None` for an unsigned job
/// over core NATS, which the worker keys by a fresh token of its own (nothing to collide with).
pub(crate) fn claim_key(
    sender_key: Option<&str>,
    id: &str,
    stored: Option<(i64, u64)>,
) -> Option<String> {
    match (sender_key, stored) {
        (Some(key), _) => Some(format!("key:{key}\n{id}")),
        (None, Some((_, seq))) => Some(format!("seq:{seq}")),
        (None, None) => None,
    }
}

/// Verifies the message's `Pier-Sender` header, if it has one (its nonce not yet remembered);
/// without one, refuses it under `senderTrust: "signed"`. A replay is refused here; a full
/// memory only once the job would otherwise run.
fn check_signature(
    headers: &[&str],
    delivered: &Delivered<'_>,
    policy: &Policy,
    now_ms: i64,
    current: &impl Current,
) -> Result<Option<Accepted>, JobError> {
    let unauthorized = |why: &str| JobError::new(ErrorCode::Unauthorized, why);
    let Some(value) = headers.first() else {
        return match policy.config.sender_trust {
            SenderTrust::Any => Ok(None),
            SenderTrust::Signed => Err(unauthorized(
                "this worker takes signed jobs only: the request has no Pier-Sender header",
            )),
        };
    };
    if headers.len() > 1 {
        return Err(unauthorized(
            "Pier-Sender header refused: malformed (more than one)",
        ));
    }
    let header = signature::parse_sender(value).map_err(|r| unauthorized(&r.0))?;
    // A listed key only, where allowedSenders lists keys alone; with names (senderTrust
    // "any") the name may still admit the job, and the full check comes after the payload.
    let admits = |key: &str| {
        policy
            .allowed
            .as_ref()
            .is_none_or(|a| !a.names.is_empty() || a.keys.contains(key))
    };
    let accepted = policy
        .signatures
        .check(&header, delivered, now_ms, admits)
        .map_err(|d| policy.denied(d))?;
    match current.nonce(&accepted) {
        Err(replay @ Denied::Unauthorized(_)) => Err(policy.denied(replay)),
        Ok(()) | Err(Denied::MemoryFull) => Ok(Some(accepted)),
    }
}

/// BUDGET_EXHAUSTED when the day's use has reached `maxDailySpend` or `maxDailyTokens`.
fn budget_refusal(config: &Config, used: DayUse) -> Option<JobError> {
    let until = "retry on another worker (this one takes jobs again after 00:00 UTC)";
    if config.max_daily_spend > 0.0 && used.spent >= config.max_daily_spend {
        return Some(JobError::new(
            ErrorCode::BudgetExhausted,
            format!(
                "this worker's spending cap for the day ({}) is reached; {until}",
                config.max_daily_spend
            ),
        ));
    }
    if config.max_daily_tokens > 0 && used.tokens >= config.max_daily_tokens {
        return Some(JobError::new(
            ErrorCode::BudgetExhausted,
            format!(
                "this worker's token cap for the day ({} tokens) is reached; {until}",
                config.max_daily_tokens
            ),
        ));
    }
    None
}

/// PRICE_TOO_LOW when `minJobPrice` is above 0 and the job's `meta.price` is below it, or is
/// missing or not a number.
fn price_refusal(config: &Config, job: &JobRequest) -> Option<JobError> {
    let floor = config.min_job_price;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol;
    use crate::signature::SigningKey;
    use serde_json::{json, Value};
    use std::time::{Duration, SystemTime};

    /// The worker's state as a test says it is.
    #[derive(Clone)]
    struct Fake {
        draining: bool,
        slots: usize,
        /// Claim keys in flight ([`claim_key`]).
        running: Vec<String>,
        seen_nonces: Vec<String>,
        memory_full: bool,
        /// What the day's turns used.
        day: DayUse,
        /// Jobs in the last minute: of any signed sender, of the unsigned jobs.
        minute_signed: f64,
        minute_unsigned: f64,
    }

    impl Current for Fake {
        fn draining(&self) -> bool {
            self.draining
        }
        fn slots_free(&self) -> usize {
            self.slots
        }
        fn running(&self, claim: &str) -> bool {
            self.running.iter().any(|c| c == claim)
        }
        fn nonce(&self, accepted: &Accepted) -> Result<(), Denied> {
            if self.seen_nonces.contains(&accepted.nonce) {
                Err(Denied::Unauthorized(signature::Refusal(
                    "Pier-Sender header refused: nonce already used by this key (replay)".into(),
                )))
            } else if self.memory_full {
                Err(Denied::MemoryFull)
            } else {
                Ok(())
            }
        }
        fn day_use(&self, _now_ms: i64) -> DayUse {
            self.day
        }
        fn jobs_this_minute(&self, sender_key: Option<&str>, _now_ms: i64) -> f64 {
            match sender_key {
                Some(_) => self.minute_signed,
                None => self.minute_unsigned,
            }
        }
    }

    const IDLE: Fake = Fake {
        draining: false,
        slots: 4,
        running: Vec::new(),
        seen_nonces: Vec::new(),
        memory_full: false,
        day: DayUse {
            spent: 0.0,
            tokens: 0,
        },
        minute_signed: 0.0,
        minute_unsigned: 0.0,
    };

    #[derive(Debug, PartialEq)]
    enum Expect {
        /// Admitted, with this much of its deadline left (ms).
        Admit {
            left_ms: u64,
        },
        /// Refused with this code, a message containing this text, and this id.
        Code(ErrorCode, &'static str, Option<&'static str>),
        Unanswerable,
    }

    struct Case {
        name: &'static str,
        config: Value,
        payload: Vec<u8>,
        /// `None`: the source found no reply target.
        target: Option<&'static str>,
        defect: Option<&'static str>,
        headers: Vec<String>,
        /// `Pier-Progress-To` header values.
        progress: Vec<String>,
        signed_reply: &'static str,
        /// How long ago the stream stored the message (JetStream), ms.
        stored_ago_ms: Option<i64>,
        current: Fake,
        expect: Expect,
    }

    fn job(id: &str, extra: Value) -> Vec<u8> {
        let mut job = json!({ "id": id, "task": "t" });
        if let (Some(job), Some(extra)) = (job.as_object_mut(), extra.as_object()) {
            job.extend(extra.clone());
        }
        job.to_string().into_bytes()
    }

    fn base(name: &'static str, payload: Vec<u8>, expect: Expect) -> Case {
        Case {
            name,
            config: json!({}),
            payload,
            target: Some("_INBOX.a"),
            defect: None,
            headers: Vec::new(),
            progress: Vec::new(),
            signed_reply: "_INBOX.a",
            stored_ago_ms: None,
            current: IDLE,
            expect,
        }
    }

    fn key(byte: u8) -> SigningKey {
        let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, [byte; 32]).unwrap();
        SigningKey::from_seed(&pair.seed().unwrap()).unwrap()
    }

    /// A `Pier-Sender` header by `key` for `payload` on `jobs.worker`, signed at `at`.
    fn signed(key: &SigningKey, payload: &[u8], reply: &str, at: SystemTime) -> String {
        signature::sign_request(key, "jobs.worker", reply, payload, at).header
    }

    fn signed_with_nonce(key: &SigningKey, payload: &[u8], nonce: &str) -> String {
        let ts = signature::format_ts(SystemTime::now());
        signature::sign_request_with(key, "jobs.worker", "_INBOX.a", payload, &ts, nonce).header
    }

    fn decide(case: &Case) -> Result<Box<Admitted>, NotRun> {
        let mut config = json!({ "subject": "jobs.worker", "maxConcurrentJobs": 4 });
        if let (Some(c), Some(extra)) = (config.as_object_mut(), case.config.as_object()) {
            c.extend(extra.clone());
        }
        let config = Arc::new(Config::from_value(config).expect("valid config"));
        let policy = Policy::new(config.clone(), true, signature::REPLAY_MEMORY_CAP);
        let now_ms = signature::unix_ms(SystemTime::now());
        let message = Message {
            parsed: protocol::parse_job(&case.payload, config.max_payload_bytes),
            target: match case.target {
                Some(subject) => ReplyTarget::Subject(Subject::from(subject)),
                None => ReplyTarget::Nowhere {
                    why: "no reply".into(),
                },
            },
            defect: case.defect,
            sender_headers: case.headers.iter().map(String::as_str).collect(),
            progress_headers: case.progress.iter().map(String::as_str).collect(),
            payload: &case.payload,
            subject: "jobs.worker",
            signed_reply: case.signed_reply,
            stored: case.stored_ago_ms.map(|ago| (now_ms - ago, 7)),
        };
        admit(message, &policy, now_ms, &case.current)
    }

    /// Why `got` is not what `case` expects, if it is not.
    fn mismatch(case: &Case, got: &Result<Box<Admitted>, NotRun>) -> Option<String> {
        let fits = match (&case.expect, got) {
            (Expect::Admit { left_ms }, Ok(admitted)) => {
                // The clock moved on between signing and deciding by a few ms at most.
                admitted.left.as_millis().abs_diff(u128::from(*left_ms)) <= 50
            }
            (Expect::Code(code, text, id), Err(NotRun::Refuse(refusal))) => {
                refusal.error.code == *code
                    && refusal.error.message.contains(text)
                    && refusal.id.as_deref() == *id
            }
            (Expect::Unanswerable, Err(NotRun::Unanswerable { .. })) => true,
            _ => false,
        };
        (!fits).then(|| format!("{}: got {got:?}, expected {:?}", case.name, case.expect))
    }

    #[test]
    fn a_refusal_of_a_readable_job_tells_what_is_left_of_its_deadline() {
        let full = Case {
            stored_ago_ms: Some(400),
            current: Fake { slots: 0, ..IDLE },
            ..base(
                "every slot taken",
                job("j7", json!({ "timeoutMs": 1_000 })),
                Expect::Unanswerable,
            )
        };
        let Err(NotRun::Refuse(refusal)) = decide(&full) else {
            panic!("refused");
        };
        assert_eq!(refusal.error.code, ErrorCode::Overloaded);
        let left = refusal.left.expect("the time left").as_millis();
        assert!((550..=600).contains(&left), "{left} ms left");
        let unreadable = base("not JSON", b"{".to_vec(), Expect::Unanswerable);
        let Err(NotRun::Refuse(refusal)) = decide(&unreadable) else {
            panic!("refused");
        };
        assert_eq!(refusal.left, None, "no deadline without a payload");
    }

    #[test]
    fn every_admission_rule_as_a_table() {
        let alice = key(1);
        let stranger = key(2);
        let now = SystemTime::now();
        let ok = job("j1", json!({}));
        let listed = json!({ "allowedSenders": [alice.public_key()] });
        use ErrorCode::*;
        use Expect::*;
        let cases = vec![
            base(
                "a plain job runs with its whole deadline",
                ok.clone(),
                Admit { left_ms: 60_000 },
            ),
            base(
                "timeoutMs is the deadline, under maxJobTimeoutMs",
                job("j1", json!({ "timeoutMs": 999_999_999u64 })),
                Admit { left_ms: 600_000 },
            ),
            Case {
                target: None,
                ..base(
                    "no reply target: not run, not answered",
                    ok.clone(),
                    Unanswerable,
                )
            },
            Case {
                target: Some("$JS.API.STREAM.DELETE.X"),
                ..base(
                    "a reply under $ is never published to",
                    ok.clone(),
                    Unanswerable,
                )
            },
            Case {
                config: json!({ "replySubjectPrefixes": ["results."] }),
                ..base(
                    "a reply outside replySubjectPrefixes",
                    ok.clone(),
                    Unanswerable,
                )
            },
            Case {
                current: Fake {
                    draining: true,
                    ..IDLE
                },
                ..base(
                    "a draining worker runs nothing",
                    ok.clone(),
                    Code(ShuttingDown, "shutting down", Some("j1")),
                )
            },
            Case {
                defect: Some("malformed headers: bad line"),
                ..base(
                    "malformed NATS headers",
                    ok.clone(),
                    Code(InvalidRequest, "malformed headers", Some("j1")),
                )
            },
            base("not JSON", b"{nope".to_vec(), Code(ParseError, "", None)),
            base("JSON null", b"null".to_vec(), Code(ParseError, "", None)),
            base(
                "no task",
                br#"{"id":"j2"}"#.to_vec(),
                Code(InvalidRequest, "", Some("j2")),
            ),
            base(
                "a wrong field type",
                br#"{"id":"j3","task":"t","timeoutMs":"soon"}"#.to_vec(),
                Code(InvalidRequest, "timeoutMs", Some("j3")),
            ),
            Case {
                config: json!({ "maxPayloadBytes": 1024 }),
                ..base(
                    "a payload over maxPayloadBytes",
                    job("j4", json!({ "task": "x".repeat(2000) })),
                    Code(PayloadTooLarge, "", None),
                )
            },
            Case {
                config: json!({ "senderTrust": "signed" }),
                ..base(
                    "unsigned, where only signed jobs run",
                    ok.clone(),
                    Code(Unauthorized, "signed jobs only", Some("j1")),
                )
            },
            Case {
                headers: vec!["{not json".into()],
                ..base(
                    "a malformed Pier-Sender",
                    ok.clone(),
                    Code(Unauthorized, "malformed", Some("j1")),
                )
            },
            Case {
                headers: vec![
                    signed(&alice, &ok, "_INBOX.a", now),
                    signed(&alice, &ok, "_INBOX.a", now),
                ],
                ..base(
                    "two Pier-Sender headers",
                    ok.clone(),
                    Code(Unauthorized, "more than one", Some("j1")),
                )
            },
            Case {
                headers: vec![signed(&alice, b"another payload", "_INBOX.a", now)],
                ..base(
                    "a signature over another payload",
                    ok.clone(),
                    Code(Unauthorized, "bad signature", Some("j1")),
                )
            },
            Case {
                headers: vec![signed(&alice, b"null", "_INBOX.a", now)],
                ..base(
                    "a bad signature is refused before the payload's own error",
                    b"nul".to_vec(),
                    Code(Unauthorized, "bad signature", None),
                )
            },
            Case {
                headers: vec![signed(
                    &alice,
                    &ok,
                    "_INBOX.a",
                    now - Duration::from_secs(120),
                )],
                ..base(
                    "a stale signature",
                    ok.clone(),
                    Code(Unauthorized, "window", Some("j1")),
                )
            },
            Case {
                headers: vec![signed_with_nonce(&alice, &ok, "seen-nonce-0123456789")],
                current: Fake {
                    seen_nonces: vec!["seen-nonce-0123456789".into()],
                    ..IDLE
                },
                ..base(
                    "a replayed nonce",
                    ok.clone(),
                    Code(Unauthorized, "replay", Some("j1")),
                )
            },
            Case {
                headers: vec![signed_with_nonce(&alice, &ok, "seen-nonce-0123456789")],
                current: Fake {
                    seen_nonces: vec!["seen-nonce-0123456789".into()],
                    slots: 0,
                    ..IDLE
                },
                ..base(
                    "a replay is UNAUTHORIZED even when the worker is full",
                    ok.clone(),
                    Code(Unauthorized, "replay", Some("j1")),
                )
            },
            Case {
                config: listed.clone(),
                headers: vec![signed(&stranger, &ok, "_INBOX.a", now)],
                ..base(
                    "a stranger's key where allowedSenders lists keys",
                    ok.clone(),
                    Code(
                        Unauthorized,
                        "does not take jobs from this sender",
                        Some("j1"),
                    ),
                )
            },
            Case {
                config: listed.clone(),
                ..base(
                    "unsigned where allowedSenders lists keys",
                    ok.clone(),
                    Code(
                        Unauthorized,
                        "does not take jobs from this sender",
                        Some("j1"),
                    ),
                )
            },
            Case {
                config: json!({ "allowedSenders": ["alice"] }),
                ..base(
                    "a self-declared name not listed",
                    job("j5", json!({ "meta": { "sender": "mallory" } })),
                    Code(
                        Unauthorized,
                        "does not take jobs from this sender",
                        Some("j5"),
                    ),
                )
            },
            Case {
                config: json!({ "allowedSenders": ["alice"] }),
                ..base(
                    "a listed self-declared name under senderTrust any",
                    job("j5", json!({ "meta": { "sender": "alice" } })),
                    Admit { left_ms: 60_000 },
                )
            },
            Case {
                config: listed.clone(),
                headers: vec![signed(&alice, &ok, "_INBOX.a", now)],
                ..base("a listed key", ok.clone(), Admit { left_ms: 60_000 })
            },
            Case {
                headers: vec![signed(&alice, &ok, "$JS.API.X", now)],
                signed_reply: "$JS.API.X",
                ..base(
                    "a signed reply line this worker never answers on",
                    ok.clone(),
                    Code(Unauthorized, "signed reply subject", Some("j1")),
                )
            },
            Case {
                config: json!({ "minJobPrice": 5 }),
                ..base(
                    "a price under the floor",
                    job("j6", json!({ "meta": { "price": 1 } })),
                    Code(PriceTooLow, "offers 1", Some("j6")),
                )
            },
            Case {
                config: json!({ "minJobPrice": 5 }),
                ..base(
                    "no price under a floor",
                    ok.clone(),
                    Code(PriceTooLow, "names no price", Some("j1")),
                )
            },
            Case {
                config: json!({ "minJobPrice": 5 }),
                ..base(
                    "a price at the floor",
                    job("j6", json!({ "meta": { "price": 5 } })),
                    Admit { left_ms: 60_000 },
                )
            },
            Case {
                config: json!({ "maxDailySpend": 2.5 }),
                current: Fake {
                    day: DayUse {
                        spent: 2.5,
                        tokens: 10,
                    },
                    ..IDLE
                },
                ..base(
                    "the day's spending has reached maxDailySpend",
                    ok.clone(),
                    Code(
                        BudgetExhausted,
                        "spending cap for the day (2.5)",
                        Some("j1"),
                    ),
                )
            },
            Case {
                config: json!({ "maxDailySpend": 2.5 }),
                current: Fake {
                    day: DayUse {
                        spent: 2.49,
                        tokens: 1_000_000,
                    },
                    ..IDLE
                },
                ..base(
                    "the day's spending under maxDailySpend",
                    ok.clone(),
                    Admit { left_ms: 60_000 },
                )
            },
            Case {
                config: json!({ "maxDailyTokens": 1000 }),
                current: Fake {
                    day: DayUse {
                        spent: 0.0,
                        tokens: 1000,
                    },
                    ..IDLE
                },
                ..base(
                    "the day's tokens have reached maxDailyTokens",
                    ok.clone(),
                    Code(
                        BudgetExhausted,
                        "token cap for the day (1000 tokens)",
                        Some("j1"),
                    ),
                )
            },
            Case {
                config: json!({ "maxDailyTokens": 1000, "minJobPrice": 5 }),
                current: Fake {
                    day: DayUse {
                        spent: 0.0,
                        tokens: 5000,
                    },
                    slots: 0,
                    ..IDLE
                },
                ..base(
                    "an exhausted budget is told after the price, before the worker is full",
                    job("j6", json!({ "meta": { "price": 5 } })),
                    Code(BudgetExhausted, "token cap", Some("j6")),
                )
            },
            Case {
                current: Fake {
                    day: DayUse {
                        spent: 1e9,
                        tokens: u64::MAX,
                    },
                    minute_signed: 1e9,
                    minute_unsigned: 1e9,
                    ..IDLE
                },
                ..base(
                    "no budget and no shares set: nothing is limited",
                    ok.clone(),
                    Admit { left_ms: 60_000 },
                )
            },
            Case {
                config: json!({ "senderJobsPerMinute": 3 }),
                headers: vec![signed(&alice, &ok, "_INBOX.a", now)],
                current: Fake {
                    minute_signed: 3.0,
                    ..IDLE
                },
                ..base(
                    "a signed sender whose share is used up",
                    ok.clone(),
                    Code(
                        RateLimited,
                        "this sender's share of this worker (3 jobs",
                        Some("j1"),
                    ),
                )
            },
            Case {
                config: json!({ "senderJobsPerMinute": 3 }),
                headers: vec![signed(&alice, &ok, "_INBOX.a", now)],
                current: Fake {
                    minute_signed: 2.0,
                    ..IDLE
                },
                ..base(
                    "a signed sender with room for one more",
                    ok.clone(),
                    Admit { left_ms: 60_000 },
                )
            },
            Case {
                config: json!({ "senderJobsPerMinute": 3 }),
                current: Fake {
                    minute_signed: 3.0,
                    minute_unsigned: 100.0,
                    ..IDLE
                },
                ..base(
                    "senderJobsPerMinute does not limit unsigned jobs",
                    ok.clone(),
                    Admit { left_ms: 60_000 },
                )
            },
            Case {
                config: json!({ "unsignedJobsPerMinute": 2 }),
                current: Fake {
                    minute_unsigned: 2.0,
                    ..IDLE
                },
                ..base(
                    "the unsigned jobs' share is used up",
                    ok.clone(),
                    Code(RateLimited, "all unsigned senders together", Some("j1")),
                )
            },
            Case {
                config: json!({ "unsignedJobsPerMinute": 2 }),
                headers: vec![signed(&alice, &ok, "_INBOX.a", now)],
                current: Fake {
                    minute_unsigned: 2.0,
                    ..IDLE
                },
                ..base(
                    "unsignedJobsPerMinute does not limit signed jobs",
                    ok.clone(),
                    Admit { left_ms: 60_000 },
                )
            },
            Case {
                config: json!({ "unsignedJobsPerMinute": 2 }),
                current: Fake {
                    minute_unsigned: 2.0,
                    slots: 0,
                    ..IDLE
                },
                ..base(
                    "a used-up share is told before the worker is full",
                    ok.clone(),
                    Code(RateLimited, "", Some("j1")),
                )
            },
            Case {
                config: json!({ "maxDailySpend": 1, "unsignedJobsPerMinute": 2 }),
                current: Fake {
                    day: DayUse {
                        spent: 1.0,
                        tokens: 0,
                    },
                    minute_unsigned: 2.0,
                    ..IDLE
                },
                ..base(
                    "an exhausted budget is told before a used-up share",
                    ok.clone(),
                    Code(BudgetExhausted, "", Some("j1")),
                )
            },
            Case {
                stored_ago_ms: Some(5_000),
                ..base(
                    "a JetStream job that waited past its deadline in the stream",
                    job("j7", json!({ "timeoutMs": 1_000 })),
                    Code(Timeout, "waited in the stream", Some("j7")),
                )
            },
            Case {
                stored_ago_ms: Some(400),
                ..base(
                    "a JetStream job's deadline counts from when it was stored",
                    job("j7", json!({ "timeoutMs": 1_000 })),
                    Admit { left_ms: 600 },
                )
            },
            Case {
                headers: vec![signed(&alice, &ok, "_INBOX.a", now)],
                current: Fake {
                    running: vec![claim_key(Some(alice.public_key()), "j1", None).unwrap()],
                    ..IDLE
                },
                ..base(
                    "a second job of one sender with the id of its job in flight",
                    ok.clone(),
                    Code(InvalidRequest, "already running", Some("j1")),
                )
            },
            Case {
                headers: vec![signed(&stranger, &ok, "_INBOX.a", now)],
                current: Fake {
                    running: vec![claim_key(Some(alice.public_key()), "j1", None).unwrap()],
                    ..IDLE
                },
                ..base(
                    "another sender's job with the id of one in flight runs",
                    ok.clone(),
                    Admit { left_ms: 60_000 },
                )
            },
            Case {
                current: Fake {
                    running: vec![
                        claim_key(Some(alice.public_key()), "j1", None).unwrap(),
                        "j1".to_string(),
                    ],
                    ..IDLE
                },
                ..base(
                    "an unsigned job with the id of one in flight runs (core NATS)",
                    ok.clone(),
                    Admit { left_ms: 60_000 },
                )
            },
            Case {
                stored_ago_ms: Some(0),
                current: Fake {
                    running: vec!["seq:7".to_string()],
                    ..IDLE
                },
                ..base(
                    "a second delivery of a stream message in flight",
                    ok.clone(),
                    Code(InvalidRequest, "already running", Some("j1")),
                )
            },
            Case {
                stored_ago_ms: Some(0),
                current: Fake {
                    running: vec!["seq:6".to_string()],
                    ..IDLE
                },
                ..base(
                    "an unsigned stream message with the id of another in flight runs",
                    ok.clone(),
                    Admit { left_ms: 60_000 },
                )
            },
            Case {
                progress: vec!["_INBOX.progress.1".into()],
                ..base(
                    "a job that asks for progress to a subject it may have runs",
                    ok.clone(),
                    Admit { left_ms: 60_000 },
                )
            },
            Case {
                progress: vec!["_INBOX.*".into()],
                ..base(
                    "progress to a wildcard is refused",
                    ok.clone(),
                    Code(InvalidRequest, "Pier-Progress-To", Some("j1")),
                )
            },
            Case {
                progress: vec!["two words".into()],
                ..base(
                    "progress to a subject with a space is refused",
                    ok.clone(),
                    Code(InvalidRequest, "Pier-Progress-To", Some("j1")),
                )
            },
            Case {
                progress: vec!["$JS.API.STREAM.DELETE.X".into()],
                ..base(
                    "progress under $ is refused",
                    ok.clone(),
                    Code(InvalidRequest, "under $", Some("j1")),
                )
            },
            Case {
                progress: vec!["_INBOX.a".into(), "_INBOX.b".into()],
                ..base(
                    "two Pier-Progress-To headers are refused",
                    ok.clone(),
                    Code(InvalidRequest, "more than one", Some("j1")),
                )
            },
            Case {
                config: json!({ "replySubjectPrefixes": ["_INBOX."] }),
                progress: vec!["progress.elsewhere".into()],
                ..base(
                    "progress outside replySubjectPrefixes is refused",
                    ok.clone(),
                    Code(InvalidRequest, "replySubjectPrefixes", Some("j1")),
                )
            },
            Case {
                current: Fake { slots: 0, ..IDLE },
                ..base(
                    "every slot taken",
                    ok.clone(),
                    Code(Overloaded, "limit of 4 jobs", Some("j1")),
                )
            },
            Case {
                config: json!({ "minJobPrice": 5 }),
                current: Fake { slots: 0, ..IDLE },
                ..base(
                    "a price too low is told before the worker is full",
                    ok.clone(),
                    Code(PriceTooLow, "", Some("j1")),
                )
            },
            Case {
                headers: vec![signed(&alice, &ok, "_INBOX.a", now)],
                current: Fake {
                    memory_full: true,
                    ..IDLE
                },
                ..base(
                    "a full replay memory",
                    ok.clone(),
                    Code(Overloaded, "replay memory is full", Some("j1")),
                )
            },
            Case {
                headers: vec![signed(&alice, &ok, "_INBOX.a", now)],
                current: Fake {
                    memory_full: true,
                    slots: 0,
                    ..IDLE
                },
                ..base(
                    "full on both counts: the slots are told",
                    ok.clone(),
                    Code(Overloaded, "limit of 4 jobs", Some("j1")),
                )
            },
        ];
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|case| mismatch(case, &decide(case)))
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn a_signed_job_is_admitted_with_its_key_and_nonce_and_refusals_name_the_nonce() {
        let alice = key(1);
        let payload = job("s1", json!({ "meta": { "sender": "alice", "price": 3 } }));
        let header = signed_with_nonce(&alice, &payload, "nonce-of-alice-0001");
        let case = Case {
            headers: vec![header.clone()],
            ..base("signed", payload.clone(), Expect::Admit { left_ms: 60_000 })
        };
        let admitted = decide(&case).expect("admitted");
        assert_eq!(admitted.sender.key.as_deref(), Some(alice.public_key()));
        assert_eq!(
            admitted.sender.nonce.as_deref(),
            Some("nonce-of-alice-0001")
        );
        assert_eq!(admitted.sender.name.as_deref(), Some("alice"));
        assert_eq!(admitted.sender.price, Some(3.0));
        assert_eq!(
            admitted.signature.as_ref().map(|a| a.nonce.as_str()),
            Some("nonce-of-alice-0001")
        );
        // Refused while full: the refusal is signed for the request (its nonce), and nothing
        // was remembered (admission remembers nothing).
        let case = Case {
            headers: vec![header],
            current: Fake { slots: 0, ..IDLE },
            ..base(
                "full",
                payload,
                Expect::Code(ErrorCode::Overloaded, "limit", Some("s1")),
            )
        };
        match decide(&case) {
            Err(NotRun::Refuse(refusal)) => {
                assert_eq!(refusal.error.code, ErrorCode::Overloaded);
                assert_eq!(refusal.sender.nonce.as_deref(), Some("nonce-of-alice-0001"));
            }
            other => panic!("{other:?}"),
        }
    }
}
