//! The N-API edge: `PierWorker` and `PierClient` for JavaScript. Every core error is mapped to a
//! JS `Error` here, once (`js_error`: `code` property, message prefixed with the code); JS
//! callbacks are thread-safe functions awaited from Rust.

mod js_handler;
mod pier_config;

use crate::config::{Config, LogFormat};
use crate::error::PierError;
use crate::handler::EchoHandler;
use crate::log::{JsonLines, Level, LevelFilter, Logger, SharedLogger};
use crate::publisher::{OnProgress, PublishOptions, Publisher, Watch};
use crate::sync::lock;
use crate::worker::{Worker, WorkerStatus};
use js_handler::JsHandler;
use napi::bindgen_prelude::{
    AsyncTask, FnArgs, Function, JsObjectValue, Object, PromiseRaw, ToNapiValue, Unknown,
};
use napi::threadsafe_function::{
    ThreadsafeFunction, ThreadsafeFunctionCallMode, UnknownReturnValue,
};
use napi::Env;
use napi_derive::napi;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A job as the JS handler receives it; optional fields that are not set are absent.
// Jobs cross to JS as this struct's JSON (see js_handler), hence the serde attributes.
#[napi(object, object_to_js = false, object_from_js = false)]
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// The request's `id`, as its requester chose it: two jobs in flight may share it (from
    /// different requesters, or unsigned). Name a running job by `runKey`.
    pub id: String,
    /// The worker's own name for this run of the job: unique among the jobs in flight, chosen
    /// by no requester. What `onCancel` names the job by.
    pub run_key: String,
    pub task: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Milliseconds left before the worker answers TIMEOUT.
    pub timeout_ms: f64,
    pub meta: Value,
    /// `meta.sender`: a display name the requester chose; anyone can write it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The user public key (`U…`) whose `Pier-Sender` signature on this job verified: who
    /// really sent it. Absent for an unsigned job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_key: Option<String>,
    /// `true` when the requester asked for progress (protocol v1.1): pieces of the answer the
    /// handler passes to `context.partial(text)` reach it as they come. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<bool>,
}

#[napi(object, object_to_js = false)]
pub struct WorkerOptions {
    /// `(level, message)`; level is `debug`, `info`, `warn` or `error`.
    #[napi(ts_type = "(level: string, message: string) => void")]
    pub logger: Option<LogFn>,
    /// Called with `(runKey, reason, jobId)` when the worker gives up on a job (`TIMEOUT`,
    /// `SHUTTING_DOWN`, or `CANCELLED` by its requester), so the handler can abort its work.
    /// `runKey` is the job's `runKey`: key running work by it, never by the requester-chosen id.
    #[napi(ts_type = "(runKey: string, reason: string, jobId: string) => void")]
    pub on_cancel: Option<CancelFn>,
    /// Lowest level passed to `logger`: `debug`, `info` (default), `warn` or `error`.
    /// Every finished job is one line: `info` when completed, `warn`/`error` for a task_error.
    pub log_level: Option<String>,
}

#[napi(object, object_to_js = false)]
pub struct ClientOptions {
    #[napi(ts_type = "(level: string, message: string) => void")]
    pub logger: Option<LogFn>,
    pub log_level: Option<String>,
}

#[napi(object, object_to_js = false)]
pub struct PublishRequestOptions<'a> {
    pub system_prompt: Option<String>,
    pub timeout_ms: Option<f64>,
    pub meta: Option<Value>,
    /// Ask the worker for progress (protocol v1.1, `Pier-Progress-To`): set by `onProgress` or
    /// `signal` too. Once the worker said `accepted`, 3 × its `intervalMs` without any message
    /// rejects with `PIER_TIMEOUT` (the job is lost) before `timeoutMs` would.
    pub progress: Option<bool>,
    /// Each `task_progress` of the job, as it arrives: `accepted`, `working`, `partial` (with
    /// `text`, the next piece of the answer).
    #[napi(ts_type = "(progress: TaskProgress) => void")]
    pub on_progress: Option<Function<'a, Value, UnknownReturnValue>>,
    /// Aborting it cancels the job (`task_cancel`, sent once the worker's `accepted` says
    /// where); the promise still resolves to the answer: `CANCELLED`, or whatever came first.
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
}

/// A `task_progress` message (protocol v1.1) as a requester receives it.
#[napi(object)]
#[allow(dead_code)] // declared for index.d.ts; the worker's JSON is passed on as is
pub struct TaskProgress {
    /// `"1.1"`.
    pub version: String,
    /// `"task_progress"`.
    #[napi(js_name = "type")]
    pub kind: String,
    pub id: String,
    /// 0 for the first message of the job, then one more with each.
    pub seq: f64,
    /// `accepted` (first, once: with `intervalMs` and `cancel`), `working` (a keep-alive) or
    /// `partial` (with `text`).
    pub state: String,
    pub elapsed_ms: f64,
    pub interval_ms: Option<f64>,
    pub cancel: Option<TaskProgressCancel>,
    pub text: Option<String>,
    pub worker: ReplyWorker,
}

/// Where and how to cancel a job: publish `{"version":"1.1","type":"task_cancel","id","token"}`
/// to `subject`.
#[napi(object)]
#[allow(dead_code)] // declared for index.d.ts
pub struct TaskProgressCancel {
    pub subject: String,
    pub token: String,
}

#[napi(object, js_name = "WorkerStats")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsStats {
    pub received: f64,
    pub completed: f64,
    pub failed: f64,
    pub rejected: f64,
    pub timed_out: f64,
    pub in_flight: f64,
    pub no_reply: f64,
    pub reply_failures: f64,
    /// JetStream jobs refused for this worker's own reason (OVERLOADED, RATE_LIMITED,
    /// BUDGET_EXHAUSTED) and given back to the stream for another worker instead of answered
    /// (until their last delivery or near their deadline); also counted in `rejected`.
    pub passed_on: f64,
    pub errors_by_code: HashMap<String, f64>,
    pub disconnects: f64,
    pub reconnects: f64,
    /// Connection attempts since the connection was last up: the current outage's (or the first
    /// connection's) retries; 0 while connected.
    pub connect_attempts: f64,
    pub slow_consumer_events: f64,
    pub server_errors: f64,
    /// `task_progress` messages sent to requesters that asked for progress (protocol v1.1).
    pub progress_sent: f64,
    /// `task_cancel` messages that cancelled nothing (a wrong or stale token, an id that is not
    /// the token's job's, a job already answered): counted, never answered.
    pub cancels_ignored: f64,
    /// Sum of `meta.price` of completed jobs, in the unit requesters price in.
    pub earned: f64,
    /// Input tokens job turns used (not served from a prompt cache), as the handler reported.
    pub tokens_in: f64,
    /// Output tokens job turns used.
    pub tokens_out: f64,
    pub cache_read_tokens: f64,
    pub cache_write_tokens: f64,
    /// Sum of job turns' cost, in the unit of the model's cost config (usually USD).
    pub spent: f64,
    /// Upper bound (ms) of the duration bucket holding the median job (buckets 1 ms · 2^k).
    pub p50_ms: Option<f64>,
}

/// One UTC day's use against `maxDailySpend` / `maxDailyTokens`. Jobs are answered
/// `BUDGET_EXHAUSTED` once `spent` reaches `maxDailySpend` or `tokens` reaches
/// `maxDailyTokens` (when above 0), until the next UTC day; a job already running finishes.
#[napi(object, js_name = "WorkerToday")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsToday {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// What today's job turns cost, in the unit of the model's cost config.
    pub spent: f64,
    /// Every token of today's job turns: input, output, cache reads and writes.
    pub tokens: f64,
    /// `maxDailySpend` (0: no cap).
    pub max_daily_spend: f64,
    /// `maxDailyTokens` (0: no cap).
    pub max_daily_tokens: f64,
    /// `ledger`: counted from the ledger file's lines of the day when the worker started (a
    /// restart keeps the day's use); `start`: no ledger file, counted from the worker's start.
    pub counted_from: String,
    /// Jobs that ended today, each once, as the ledger counts them (a run whose answer was
    /// undelivered, or given back for a retry, is not a job yet).
    pub jobs: f64,
    /// Of those, completed.
    pub completed: f64,
    /// Runs whose answer could not be delivered (`undelivered` in the ledger).
    pub undelivered: f64,
    /// Runs of jobs that had run before (JetStream redeliveries; `rerun` in the ledger).
    pub reruns: f64,
    /// Each job's `meta.price` once, when its result was delivered.
    pub earned: f64,
    /// `earned - spent`: meaningful when prices and model costs share a unit.
    pub margin: f64,
}

#[napi(object, js_name = "WorkerStatus")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsWorkerStatus {
    /// `stopped`, `connecting`, `connected`, `recovering` (connected, but JetStream does not
    /// answer yet: a leader election, a node restarting), `disconnected` or `stopping`.
    pub state: String,
    pub servers: String,
    pub server_name: Option<String>,
    pub server_version: Option<String>,
    pub subject: String,
    pub queue_group: String,
    pub publish_subject: String,
    pub worker_id: String,
    pub wallet_address: Option<String>,
    pub max_concurrent_jobs: u32,
    pub started_at_ms: Option<f64>,
    pub uptime_ms: Option<f64>,
    /// The public key (`U…`) that signs this worker's replies (`Pier-Worker`): what a requester
    /// pins in `trustedWorkers`. Set once the worker has started.
    pub worker_key: Option<String>,
    /// The file that key is kept in (absent when it is `signingSeed`).
    pub identity_file: Option<String>,
    /// The last error: a failed connection attempt, a NATS server error or a job's task_error.
    pub last_error: Option<String>,
    /// What job turns used today (UTC) against the daily budget; set once the worker started.
    pub today: Option<JsToday>,
    pub stats: JsStats,
}

/// What a handler may resolve to instead of a string, to answer with a chosen error code
/// (`RUNTIME_UNAVAILABLE`, `EXECUTION_FAILED`, `UNAUTHORIZED`, `INVALID_REQUEST`, `TIMEOUT`, or
/// `SHUTTING_DOWN` when its host is stopping and never started the turn), with what the failed
/// turn used, if it used anything.
#[napi(object)]
#[allow(dead_code)] // declared for index.d.ts; JS builds and reads these shapes
pub struct HandlerError {
    pub error: ReplyError,
    pub usage: Option<TurnUsage>,
}

/// What a handler gets besides its job: `partial(text)` sends the next piece of the answer to
/// a requester that asked for progress (`job.progress`; a no-op otherwise). Pieces are batched
/// (100 characters or 500 ms); all of them in order should be the final result (what they
/// lack of it is sent last).
#[napi(object)]
#[allow(dead_code)] // declared for index.d.ts; the JS driver builds it
pub struct JobContext {
    #[napi(ts_type = "(text: string) => void")]
    pub partial: Unknown<'static>,
}

/// A result with what its turn used: counted in the stats and metrics, written in the log line
/// and the ledger.
#[napi(object)]
#[allow(dead_code)] // declared for index.d.ts; JS builds and reads these shapes
pub struct HandlerAnswer {
    pub result: String,
    pub usage: Option<TurnUsage>,
}

/// What one job's turn used: tokens by kind, and its cost in the unit of the model's cost
/// config (OpenClaw's `result.meta.agentMeta.usage`, whose `cost.total` is accepted too).
#[napi(object)]
#[allow(dead_code)] // declared for index.d.ts; JS builds and reads these shapes
pub struct TurnUsage {
    pub input: Option<f64>,
    pub output: Option<f64>,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
    pub cost: Option<f64>,
}

/// One UTC day of a ledger (`ledgerDays`).
#[napi(object)]
pub struct LedgerDay {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Jobs that ended that day, each once (a run whose answer was undelivered, or given back
    /// for a retry, is not a job yet; a rerun of a job already counted is not another).
    pub jobs: f64,
    pub completed: f64,
    /// Runs whose answer could not be delivered (`undelivered` lines).
    pub undelivered: f64,
    /// Runs of jobs that had run before (JetStream redeliveries).
    pub reruns: f64,
    /// Each job's `meta.price` once, when its result was delivered.
    pub earned: f64,
    /// Sum of every run's cost, in the unit of the model's cost config.
    pub spent: f64,
    /// `earned - spent`: meaningful when prices and model costs share a unit.
    pub margin: f64,
    pub tokens_in: f64,
    pub tokens_out: f64,
    /// Every token of the day's turns: input, output, cache reads and writes (what
    /// `maxDailyTokens` counts).
    pub tokens: f64,
}

/// A ledger read by `ledgerDays`.
#[napi(object)]
pub struct LedgerDays {
    /// Oldest day first.
    pub days: Vec<LedgerDay>,
    /// Lines that do not read as ledger entries (cut short by a crash, or not the worker's):
    /// skipped.
    pub unreadable_lines: f64,
}

/// Reads a ledger off the JavaScript thread (libuv's thread pool): the event loop never waits
/// for the file.
pub struct ReadLedger {
    file: String,
    since: Option<std::time::SystemTime>,
}

impl napi::Task for ReadLedger {
    type Output = std::io::Result<crate::ledger::LedgerRead>;
    type JsValue = LedgerDays;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        Ok(crate::ledger::read(
            std::path::Path::new(&self.file),
            self.since,
            usize::MAX,
        ))
    }

    /// On the JS thread, where a failure becomes the coded error (`PIER_REQUEST`).
    fn resolve(&mut self, env: Env, read: Self::Output) -> napi::Result<LedgerDays> {
        let read = read
            .map_err(|e| js_error(&env, PierError::request(crate::error::RequestOp::Ledger, e)))?;
        Ok(LedgerDays {
            days: read
                .days
                .into_iter()
                .map(|d| LedgerDay {
                    day: d.day,
                    jobs: d.jobs as f64,
                    completed: d.completed as f64,
                    undelivered: d.undelivered as f64,
                    reruns: d.reruns as f64,
                    earned: d.earned,
                    spent: d.spent,
                    margin: d.margin,
                    tokens_in: d.tokens_in as f64,
                    tokens_out: d.tokens_out as f64,
                    tokens: d.tokens as f64,
                })
                .collect(),
            unreadable_lines: read.unreadable as f64,
        })
    }
}

/// Per-day sums of the ledger at `file` (with its rotated files `<file>.1`, `.2`), oldest day
/// first, from the UTC day of `sinceMs` (Unix ms) on, read off the JavaScript thread. Each job
/// and its earnings count once; every run's spending counts. A missing ledger has no days; an
/// unreadable one rejects with the error `PIER_REQUEST`.
#[napi(ts_return_type = "Promise<LedgerDays>")]
#[cfg_attr(test, allow(dead_code))] // test builds leave out napi's registration of functions
pub fn ledger_days(file: String, since_ms: Option<f64>) -> AsyncTask<ReadLedger> {
    let since = since_ms
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64));
    AsyncTask::new(ReadLedger { file, since })
}

/// A `task_error`'s error. `code` is one of the wire protocol's codes: `PARSE_ERROR`,
/// `INVALID_REQUEST`, `RUNTIME_UNAVAILABLE`, `EXECUTION_FAILED`, `PAYLOAD_TOO_LARGE`, `TIMEOUT`,
/// `OVERLOADED`, `SHUTTING_DOWN`, `UNAUTHORIZED`, `RESULT_TOO_LARGE` (the result did not fit
/// in the server's `max_payload`), `PRICE_TOO_LOW` (the job's `meta.price` is below the
/// worker's `minJobPrice`, or missing while that is above 0: offer more, or try another worker),
/// `RATE_LIMITED` (this sender's share of the worker, `senderJobsPerMinute` or
/// `unsignedJobsPerMinute`, is used up: retry later or elsewhere) or `BUDGET_EXHAUSTED` (the
/// worker's `maxDailySpend` / `maxDailyTokens` for the UTC day is reached: retry elsewhere),
/// and `CANCELLED` (the requester cancelled the job: protocol v1.1 `task_cancel`). A job
/// refused with `RATE_LIMITED` or `BUDGET_EXHAUSTED` never reached the model.
#[napi(object)]
#[allow(dead_code)] // declared for index.d.ts; JS builds and reads these shapes
pub struct ReplyError {
    pub code: String,
    pub message: String,
}

#[napi(object)]
#[allow(dead_code)] // declared for index.d.ts; JS builds and reads these shapes
pub struct ReplyWorker {
    pub id: String,
    pub wallet: Option<String>,
}

/// A `task_result` (`ok: true`) or `task_error` (`ok: false`) as received by a publisher.
#[napi(object)]
#[allow(dead_code)] // declared for index.d.ts; JS builds and reads these shapes
pub struct TaskReply {
    pub version: String,
    pub id: Option<String>,
    #[napi(js_name = "type")]
    pub kind: String,
    pub ok: bool,
    pub result: Option<String>,
    pub latency_ms: Option<f64>,
    pub error: Option<ReplyError>,
    pub worker: ReplyWorker,
    /// The user public key whose `Pier-Worker` signature on this reply verified (absent when
    /// the reply is unsigned). A `Pier-Worker` that does not verify is the error
    /// `PIER_WORKER_SIGNATURE`, never a reply.
    pub worker_key: Option<String>,
}

/// A new NATS user nkey: `seed` (`SU…`, a secret: use it as `signingSeed`) and `publicKey`
/// (`U…`, for `allowedSenders` and `trustedWorkers`).
#[napi(object)]
#[cfg_attr(test, allow(dead_code))] // test builds leave out napi's registration of functions
pub struct UserKey {
    pub seed: String,
    pub public_key: String,
}

/// Makes a new user key for signing (`pier-connector keygen`).
#[napi]
#[cfg_attr(test, allow(dead_code))] // test builds leave out napi's registration of functions
pub fn generate_user_key(env: Env) -> napi::Result<UserKey> {
    // nkeys draws from the OS random source and would panic if it failed: never across N-API.
    let made = std::panic::catch_unwind(crate::signature::SigningKey::generate)
        .unwrap_or_else(|_| Err("the system random source failed".to_string()));
    let (seed, public_key) = made.map_err(|why| {
        js_error(
            &env,
            PierError::Config(format!("could not make a key: {why}")),
        )
    })?;
    Ok(UserKey { seed, public_key })
}

/// The key a worker signs its results with and a requester its requests: `signingSeed`, or
/// the key of its own kept in the identity file (`identityFile`, else the default path).
#[napi(object)]
#[cfg_attr(test, allow(dead_code))] // test builds leave out napi's registration of functions
pub struct IdentityInfo {
    /// The public key (`U…`): what requesters pin in `trustedWorkers`, and workers list in
    /// `allowedSenders`. Absent when the identity file does not exist yet.
    pub public_key: Option<String>,
    /// `signingSeed` or `file`.
    pub source: String,
    /// The identity file (absent for `signingSeed`).
    pub file: Option<String>,
    /// Whether the key was made by this call.
    pub created: bool,
    /// After a rotation: the key it replaced, and the file the old seed was kept in.
    pub previous_public_key: Option<String>,
    pub backup_file: Option<String>,
}

impl IdentityInfo {
    fn of(identity: Option<&crate::identity::Identity>, file: Option<String>) -> IdentityInfo {
        use crate::identity::IdentitySource;
        let (source, created) = match identity.map(|i| &i.source) {
            Some(IdentitySource::SigningSeed) => ("signingSeed", false),
            Some(IdentitySource::File { created, .. }) => ("file", *created),
            None => ("file", false),
        };
        IdentityInfo {
            public_key: identity.map(|i| i.public_key().to_string()),
            source: source.to_string(),
            file: match identity {
                Some(i) => i.file().map(|p| p.display().to_string()),
                None => file,
            },
            created,
            previous_public_key: None,
            backup_file: None,
        }
    }
}

/// The identity of `config`: the key its worker signs results with (`Pier-Worker`) and its
/// requests are signed with (`Pier-Sender`). It is `signingSeed` when set (a secret: keep it in
/// a SecretRef or `PIER_SIGNING_SEED`), else a key of its own, made on first use and kept in
/// the identity file: `identityFile`, by default `~/.config/pier-connector/identity.seed`
/// (`$XDG_CONFIG_HOME` when set; under OpenClaw `<stateDir>/pier/identity/<account>.seed`),
/// mode 0600, never in openclaw.json. Back that file up like a private key; `rotateIdentity`
/// replaces its key. Requesters pin the `publicKey` in `trustedWorkers` (workers list a
/// requester's in `allowedSenders`), taken from the operator rather than from a reply. The NATS
/// login key (`nkeySeed`, the `credsFile` seed) never signs.
///
/// Nothing is made unless `create` is true. Rejects with `PIER_CONFIG` for an unreadable file,
/// a file others can read, or a key equal to the NATS login key.
#[napi]
#[cfg_attr(test, allow(dead_code))] // test builds leave out napi's registration of functions
pub fn identity(
    env: Env,
    #[napi(ts_arg_type = "PierConfig")] config: Value,
    create: Option<bool>,
) -> napi::Result<IdentityInfo> {
    let config = Config::from_value(config).map_err(|e| js_error(&env, e))?;
    let found = std::panic::catch_unwind(|| {
        if create == Some(true) {
            crate::identity::resolve(&config).map(Some)
        } else {
            crate::identity::peek(&config)
        }
    })
    .unwrap_or_else(|_| Err(PierError::Config("the system random source failed".into())))
    .map_err(|e| js_error(&env, e))?;
    let file = crate::identity::identity_file_of(&config)
        .ok()
        .map(|p| p.display().to_string());
    Ok(IdentityInfo::of(found.as_ref(), file))
}

/// Replaces the identity file's key with a new one (the old file is kept as `<file>.old`). A
/// worker signs with the new key from its next start. Rejects with `PIER_CONFIG` when the
/// config has a `signingSeed`.
#[napi]
#[cfg_attr(test, allow(dead_code))] // test builds leave out napi's registration of functions
pub fn rotate_identity(
    env: Env,
    #[napi(ts_arg_type = "PierConfig")] config: Value,
) -> napi::Result<IdentityInfo> {
    let config = Config::from_value(config).map_err(|e| js_error(&env, e))?;
    // nkeys draws from the OS random source and would panic if it failed: never across N-API.
    let rotated = std::panic::catch_unwind(|| crate::identity::rotate(&config))
        .unwrap_or_else(|_| Err(PierError::Config("the system random source failed".into())))
        .map_err(|e| js_error(&env, e))?;
    let mut info = IdentityInfo::of(Some(&rotated.identity), None);
    info.previous_public_key = rotated.previous_public_key;
    info.backup_file = rotated.backup.map(|p| p.display().to_string());
    Ok(info)
}

#[napi(object)]
pub struct ServerStatus {
    pub state: String,
    pub servers: String,
    pub server_name: String,
    pub server_version: String,
    pub rtt_ms: f64,
    pub subject: String,
    pub publish_subject: String,
    pub queue_group: String,
}

/// `(level, message)`: where the addon's log lines go.
type LogFn = ThreadsafeFunction<
    FnArgs<(String, String)>,
    UnknownReturnValue,
    FnArgs<(String, String)>,
    napi::Status,
    false,
    true,
>;

/// `(runKey, reason, jobId)`: asks the handler to abort a job the worker gave up on
/// (`TIMEOUT`, `SHUTTING_DOWN`, `CANCELLED`).
pub(crate) type CancelFn = ThreadsafeFunction<
    FnArgs<(String, String, String)>,
    UnknownReturnValue,
    FnArgs<(String, String, String)>,
    napi::Status,
    false,
    true,
>;

/// A Pier worker: takes jobs from NATS and runs each through `handler`, which returns (or
/// resolves to) the result text, or `{ result, usage }` to report what the turn used, or
/// `{ error: { code, message }, usage? }` to choose the error code.
///
/// Its methods (and `PierClient`'s) throw or reject with an `Error` whose `code` property is one
/// of `PIER_CONFIG`, `PIER_CONNECT`, `PIER_ALREADY_RUNNING`, `PIER_NOT_RUNNING`, `PIER_STOPPED`,
/// `PIER_TIMEOUT`, `PIER_NO_RESPONDERS`, `PIER_INVALID_TASK`, `PIER_INVALID_REPLY`,
/// `PIER_REQUEST`, `PIER_WORKER_SIGNATURE` (a reply's `Pier-Worker` signature does not verify)
/// or `PIER_UNTRUSTED_WORKER` (`trustedWorkers` is set and the reply is unsigned or signed by
/// another key); the message starts with the same code.
#[napi]
pub struct PierWorker {
    worker: Arc<Worker>,
    logger: SharedLogger,
    loop_hold: Arc<Mutex<Option<(LoopHold, RuntimeHold)>>>,
}

/// A non-weak thread-safe function that is never called: holding it keeps the event loop alive.
type LoopHold = ThreadsafeFunction<(), (), (), napi::Status, false, false>;

/// Running workers and open clients of this copy of the addon. A host that reloads a plugin
/// loads the addon again from a new path while the old copy stays mapped (NODELETE), each copy
/// with its own async runtime: `releaseRuntime` ends this copy's runtime threads once this is 0.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// One running worker or open client, counted in [`LIVE`] while it is held.
struct RuntimeHold;

impl RuntimeHold {
    fn new() -> RuntimeHold {
        LIVE.fetch_add(1, Ordering::SeqCst);
        RuntimeHold
    }
}

impl Drop for RuntimeHold {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The async runtime, started again if `releaseRuntime` ended it; before anything is spawned.
fn ensure_runtime() {
    napi::bindgen_prelude::start_async_runtime();
}

/// Ends this copy of the addon's async runtime (its threads, timers and tasks) when no worker
/// of it runs and no client of it is open, and returns whether it did. What a host calls when it
/// retires the plugin: OpenClaw loads a fresh copy of the addon on every plugin reload or
/// in-process restart, and the old copy stays mapped. A later `PierWorker.start()` or client
/// call starts the runtime again.
#[napi]
#[cfg_attr(test, allow(dead_code))] // test builds leave out napi's registration of functions
pub fn release_runtime() -> bool {
    if LIVE.load(Ordering::SeqCst) > 0 {
        return false;
    }
    napi::bindgen_prelude::shutdown_async_runtime();
    true
}

#[napi]
impl PierWorker {
    #[napi(constructor)]
    pub fn new(
        env: Env,
        #[napi(ts_arg_type = "PierConfig")] config: Value,
        #[napi(
            ts_arg_type = "(job: Job, context: JobContext) => Promise<string | HandlerAnswer | HandlerError> | string | HandlerAnswer | HandlerError"
        )]
        handler: Unknown<'_>,
        options: Option<WorkerOptions>,
    ) -> napi::Result<Self> {
        if handler.get_type()? != napi::ValueType::Function {
            return Err(js_error(
                &env,
                PierError::Config("the job handler must be a function".into()),
            ));
        }
        let config = Config::from_value(config).map_err(|e| js_error(&env, e))?;
        let (logger, on_cancel, level) = match options {
            Some(o) => (o.logger, o.on_cancel, o.log_level),
            None => (None, None, None),
        };
        let logger = js_logger(logger, level.as_deref(), config.log_format)
            .map_err(|e| js_error(&env, e))?;
        let handler = Arc::new(JsHandler::new(&env, handler, on_cancel)?);
        Ok(PierWorker {
            worker: Arc::new(Worker::new(config, handler, logger.clone())),
            logger,
            loop_hold: Arc::default(),
        })
    }

    /// A worker that answers every job with its own task, entirely in Rust (no JS call per job):
    /// for connectivity checks and benchmarks.
    #[napi(factory)]
    pub fn echo(
        env: Env,
        #[napi(ts_arg_type = "PierConfig")] config: Value,
        options: Option<WorkerOptions>,
    ) -> napi::Result<Self> {
        let config = Config::from_value(config).map_err(|e| js_error(&env, e))?;
        let (logger, level) = options.map(|o| (o.logger, o.log_level)).unwrap_or_default();
        let logger = js_logger(logger, level.as_deref(), config.log_format)
            .map_err(|e| js_error(&env, e))?;
        Ok(PierWorker {
            worker: Arc::new(Worker::new(config, Arc::new(EchoHandler), logger.clone())),
            logger,
            loop_hold: Arc::default(),
        })
    }

    /// Connects and subscribes; resolves once jobs can arrive. While no server answers it
    /// keeps trying with backoff (`status().state` is `connecting`) up to `maxConnectAttempts`
    /// (0, the default: until `stop()`, which makes it reject with `PIER_STOPPED`);
    /// authorization and TLS failures reject at once with `PIER_CONNECT`. While the worker runs
    /// it keeps the Node process alive, like a listening server does.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn start<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let loop_hold = self.loop_hold.clone();
        {
            let mut slot = lock(&loop_hold);
            if slot.is_none() {
                let noop =
                    env.create_function_from_closure::<(), (), _>("pierLoopHold", |_| Ok(()))?;
                *slot = Some((
                    noop.build_threadsafe_function::<()>().build()?,
                    RuntimeHold::new(),
                ));
            }
        }
        let worker = self.worker.clone();
        // Begun here, at the call: a stop() called after this one ends it even if its task runs
        // first (an OpenClaw account stopped as it started hung on a start that never ended).
        let start = worker.start_shared();
        promise(env, async move {
            let started = start.await;
            if started.is_err() && worker.client().is_none() {
                lock(&loop_hold).take();
            }
            started
        })
    }

    /// Drains in-flight jobs (up to `drainTimeoutMs`) and disconnects; resolves when done.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn stop<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let worker = self.worker.clone();
        let loop_hold = self.loop_hold.clone();
        promise(env, async move {
            worker.stop().await;
            // Releasing the loop hold lets the process exit once nothing else holds it.
            lock(&loop_hold).take();
            Ok(())
        })
    }

    #[napi]
    pub fn status(&self) -> napi::Result<JsWorkerStatus> {
        status_to_js(self.worker.status())
    }

    /// Publishes a task over this worker's connection (the worker must be running).
    #[napi(ts_return_type = "Promise<TaskReply>")]
    pub fn publish<'env>(
        &self,
        env: &'env Env,
        task: String,
        options: Option<PublishRequestOptions>,
    ) -> napi::Result<PromiseRaw<'env, Value>> {
        let options = publish_options(env, options)?;
        let publisher = self.worker.client().map(|client| {
            Publisher::with_client(client, self.worker.config(), self.worker.signing_key())
        });
        promise(env, async move {
            publisher
                .ok_or(PierError::NotRunning)?
                .publish(&task, options)
                .await
        })
    }

    #[napi(getter)]
    pub fn running(&self) -> bool {
        self.worker.client().is_some()
    }

    /// Logs through the worker's logger (used by the CLI and the OpenClaw shim).
    #[napi]
    pub fn log(&self, level: String, message: String) {
        self.logger.log(parse_level(&level), &message);
    }
}

/// A publisher with its own connection, opened on first use.
#[napi]
pub struct PierClient {
    shared: Arc<ClientState>,
}

struct ClientState {
    config: Config,
    logger: SharedLogger,
    /// The connection, once opened, and its place in [`LIVE`].
    publisher: tokio::sync::Mutex<Option<(Arc<Publisher>, RuntimeHold)>>,
}

#[napi]
impl PierClient {
    #[napi(constructor)]
    pub fn new(
        env: Env,
        #[napi(ts_arg_type = "PierConfig")] config: Value,
        options: Option<ClientOptions>,
    ) -> napi::Result<Self> {
        let (logger, level) = options.map(|o| (o.logger, o.log_level)).unwrap_or_default();
        let config = Config::from_value(config).map_err(|e| js_error(&env, e))?;
        let logger = js_logger(logger, level.as_deref(), config.log_format)
            .map_err(|e| js_error(&env, e))?;
        Ok(PierClient {
            shared: Arc::new(ClientState {
                config,
                logger,
                publisher: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Sends a `task_request` to `publishSubject`, signed (`Pier-Sender`) with the requester's
    /// own key (`signingSeed`, else the identity file's, made on the first publish), and resolves to the parsed reply (`task_result` or `task_error`),
    /// with `workerKey` when its `Pier-Worker` signature verified. Rejects with `PIER_TIMEOUT`,
    /// `PIER_NO_RESPONDERS`, `PIER_WORKER_SIGNATURE` or `PIER_UNTRUSTED_WORKER`.
    #[napi(ts_return_type = "Promise<TaskReply>")]
    pub fn publish<'env>(
        &self,
        env: &'env Env,
        task: String,
        options: Option<PublishRequestOptions>,
    ) -> napi::Result<PromiseRaw<'env, Value>> {
        let options = publish_options(env, options)?;
        let shared = self.shared.clone();
        promise(env, async move {
            let publisher = shared.publisher().await?;
            publisher.publish(&task, options).await
        })
    }

    /// Connects (if needed) and reports the server, subjects and a measured round trip.
    #[napi(ts_return_type = "Promise<ServerStatus>")]
    pub fn server_status<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<PromiseRaw<'env, ServerStatus>> {
        let shared = self.shared.clone();
        promise(env, async move { shared.server_status().await })
    }

    /// Lists live workers through NATS service discovery: one `$SRV.STATS` answer per worker
    /// (id, metadata.workerId, endpoints[0].num_requests / num_errors / data = live counters),
    /// gathered for `waitMs` (default 500).
    #[napi(ts_return_type = "Promise<Array<Record<string, any>>>")]
    pub fn workers<'env>(
        &self,
        env: &'env Env,
        wait_ms: Option<u32>,
    ) -> napi::Result<PromiseRaw<'env, Vec<Value>>> {
        let shared = self.shared.clone();
        let wait = std::time::Duration::from_millis(u64::from(wait_ms.unwrap_or(500)));
        promise(
            env,
            async move { shared.publisher().await?.workers(wait).await },
        )
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let shared = self.shared.clone();
        promise(env, async move {
            let taken = shared.publisher.lock().await.take();
            if let Some(publisher) = taken.and_then(|(p, _hold)| Arc::try_unwrap(p).ok()) {
                publisher.close().await;
            }
            Ok(())
        })
    }
}

impl ClientState {
    async fn server_status(&self) -> Result<ServerStatus, PierError> {
        let report = self.publisher().await?.connection_report().await?;
        Ok(ServerStatus {
            state: if report.connected {
                "connected"
            } else {
                "disconnected"
            }
            .to_string(),
            servers: self.config.servers_for_display(),
            server_name: report.server_name,
            server_version: report.server_version,
            rtt_ms: report.rtt_ms,
            subject: self.config.subject.clone(),
            publish_subject: self.config.publish_subject.clone(),
            queue_group: self.config.queue_group.clone(),
        })
    }

    async fn publisher(&self) -> Result<Arc<Publisher>, PierError> {
        let mut slot = self.publisher.lock().await;
        if let Some((publisher, _)) = slot.as_ref() {
            return Ok(publisher.clone());
        }
        let publisher = Arc::new(Publisher::connect(&self.config, self.logger.clone()).await?);
        *slot = Some((publisher.clone(), RuntimeHold::new()));
        Ok(publisher)
    }
}

/// An `AbortSignal`'s `addEventListener(type, listener)`.
type AddEventListener<'a> =
    Function<'a, FnArgs<(String, Function<'a, (), ()>)>, UnknownReturnValue>;

/// `(progress)`: a requester's progress callback.
type ProgressFn = ThreadsafeFunction<Value, UnknownReturnValue, Value, napi::Status, false, true>;

/// The core's options from JS ones; on the JS thread, so an `AbortSignal` can be listened to.
fn publish_options(
    env: &Env,
    options: Option<PublishRequestOptions>,
) -> napi::Result<PublishOptions> {
    let Some(o) = options else {
        return Ok(PublishOptions::default());
    };
    let watched = o.progress == Some(true) || o.on_progress.is_some() || o.signal.is_some();
    let watch = if watched {
        let on_progress: Option<OnProgress> = match o.on_progress {
            Some(f) => {
                let f: ProgressFn = f
                    .build_threadsafe_function()
                    .callee_handled::<false>()
                    .weak::<true>()
                    .build()?;
                Some(Box::new(move |progress: &Value| {
                    f.call(progress.clone(), ThreadsafeFunctionCallMode::NonBlocking);
                }))
            }
            None => None,
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        if let Some(signal) = o.signal {
            if signal.get::<bool>("aborted")?.unwrap_or(false) {
                cancel.cancel();
            } else {
                let token = cancel.clone();
                let on_abort =
                    env.create_function_from_closure::<(), (), _>("pierCancelJob", move |_| {
                        token.cancel();
                        Ok(())
                    })?;
                let add: AddEventListener = signal.get_named_property("addEventListener")?;
                add.apply(signal, ("abort".to_string(), on_abort).into())?;
            }
        }
        Some(Arc::new(Watch {
            on_progress,
            cancel,
        }))
    } else {
        None
    };
    Ok(PublishOptions {
        system_prompt: o.system_prompt,
        timeout_ms: o
            .timeout_ms
            .filter(|t| t.is_finite() && *t >= 1.0)
            .map(|t| t as u64),
        meta: o.meta,
        watch,
    })
}

/// The one place where core errors become JS errors: an `Error` whose `code` property is the
/// stable code, and whose message starts with it too, so a caller that only prints or matches
/// `message` (a log line, an agent's tool result, a regex in a script) still sees the code.
fn js_error(env: &Env, error: PierError) -> napi::Error {
    let code = error.code();
    // A connect error's reason is its cause's text with credentials removed: the raw causes
    // under it are not, and stay out.
    let message = match &error {
        PierError::Connect { .. } => error.to_string(),
        _ => crate::error::with_causes(&error),
    };
    let js = napi::JsError::from(napi::Error::new(code, format!("{code}: {message}")));
    napi::Error::from(js.into_unknown(*env))
}

/// A Promise for `work`, settled on the JS thread so a failure can reject with a coded error.
fn promise<'env, T, F>(env: &'env Env, work: F) -> napi::Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Result<T, PierError>> + Send + 'static,
{
    ensure_runtime();
    // A call in progress keeps the runtime as a running worker does.
    let hold = RuntimeHold::new();
    env.spawn_future_with_callback(
        async move {
            let _hold = hold;
            Ok(work.await)
        },
        |env, outcome| outcome.map_err(|error| js_error(env, error)),
    )
}

struct JsLogger(LogFn);

impl Logger for JsLogger {
    fn log(&self, level: Level, message: &str) {
        self.0.call(
            (level.as_str().to_string(), message.to_string()).into(),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }
}

/// Without a JS logger, warnings and errors still reach stderr.
struct StderrLogger;

impl Logger for StderrLogger {
    fn log(&self, level: Level, message: &str) {
        eprintln!("{} {message}", level.as_str());
    }
}

fn js_logger(
    logger: Option<LogFn>,
    level: Option<&str>,
    format: LogFormat,
) -> Result<SharedLogger, PierError> {
    let min = match level {
        None => Level::Info,
        Some(name) => Level::parse(name).ok_or_else(|| {
            PierError::Config(format!(
                "logLevel: {name:?} is not one of debug, info, warn, error"
            ))
        })?,
    };
    // Lines below the level are dropped before they are formatted or cross into JS.
    let filtered = |min: Level, inner: Box<dyn Logger>| -> SharedLogger {
        match format {
            LogFormat::Text => Arc::new(LevelFilter { min, inner }),
            LogFormat::Json => Arc::new(LevelFilter {
                min,
                inner: JsonLines(inner),
            }),
        }
    };
    Ok(match logger {
        Some(f) => filtered(min, Box::new(JsLogger(f))),
        None => filtered(min.max(Level::Warn), Box::new(StderrLogger)),
    })
}

fn parse_level(level: &str) -> Level {
    Level::parse(level).unwrap_or(Level::Info)
}

/// The core's status as its JS declaration, converted once through serde: a counter the core
/// adds reaches JS by name, and its u64 becomes a JS number.
fn status_to_js(s: WorkerStatus) -> napi::Result<JsWorkerStatus> {
    serde_json::to_value(s)
        .and_then(serde_json::from_value)
        .map_err(|e| napi::Error::from_reason(format!("PIER_STATUS: {e}")))
}
