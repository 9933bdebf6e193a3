//! The plugin config (`plugins.entries["pier-connector"].config`): one typed struct with the
//! original plugin's defaults, strict about unknown and ill-typed fields, and secrets that never
//! print.

use crate::error::{strip_position, PierError};
use crate::protocol::WorkerIdentity;
use crate::signature::{is_user_public_key, SigningKey};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_NATS_URL: &str = "wss://pier.gholl.com/nexus";
pub const ANONYMOUS_WORKER: &str = "anonymous-worker";

/// A credential. Its `Debug` and `Display` print `[redacted]`, so no log line or error built
/// from a config can carry it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

// For the schema dump only: a secret serializes (as a default) redacted, and its schema marks
// it sensitive.
#[cfg(test)]
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

#[cfg(test)]
impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "x-sensitive": true })
    }
}

const SECRET_FIELDS: [&str; 4] = ["token", "password", "nkeySeed", "signingSeed"];

/// The one declaration of the config. `config.schema.json` is generated from it (a unit test
/// in `config_schema.rs` fails when it is stale), and `scripts/gen-config.mjs` derives from that
/// the manifest's `configSchema` and `uiHints`, the `PierConfig` type of `index.d.ts`, the CLI
/// flags and the README table. On each field: the first doc line is its label, the rest its
/// help; `x-advanced` marks tuning keys, `x-host` keys only the OpenClaw shim reads.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[cfg_attr(test, derive(serde::Serialize, schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// NATS URL
    ///
    /// Server URL, or several separated by commas (nats://, tls://, ws://, wss://). User-info
    /// in the URL (nats://TOKEN@host, nats://user:password@host) is used as credentials.
    #[cfg_attr(test, schemars(example = "wss://pier.gholl.com/nexus"))]
    pub nats_url: String,
    /// Server list
    ///
    /// An explicit server list; when set it replaces natsUrl.
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub servers: Vec<String>,
    /// Job subject
    ///
    /// Subject the worker takes jobs from.
    #[cfg_attr(test, schemars(example = "jobs.worker"))]
    pub subject: String,
    /// Publish subject
    ///
    /// Subject pier_publish and the CLI's publish send tasks to.
    #[cfg_attr(test, schemars(example = "jobs.submit"))]
    pub publish_subject: String,
    /// Queue group
    ///
    /// Queue group the workers share (core delivery).
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub queue_group: String,
    /// Worker ID
    ///
    /// This worker's id in replies (empty: anonymous-worker).
    #[cfg_attr(test, schemars(example = "agent-001"))]
    pub worker_id: String,
    /// Wallet address
    ///
    /// Wallet address or account that receives rewards (empty: null in replies).
    #[cfg_attr(test, schemars(example = "0xABC123"))]
    pub wallet_address: String,
    /// Agent
    ///
    /// The agent whose turns answer jobs. Empty: pier-jobs once you add it (openclaw agents add
    /// pier-jobs), else your default agent. Whatever agent runs them, job turns get the job
    /// workspace (empty, under the state dir), no bootstrap files and no owner rights.
    #[cfg_attr(test, schemars(extend("x-host" = true)))]
    pub agent_id: String,

    /// Job timeout (ms)
    ///
    /// Deadline for jobs that name none.
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub job_timeout_ms: u64,
    /// Max job timeout (ms)
    ///
    /// Cap on any job's deadline.
    #[cfg_attr(test, schemars(range(min = 1), extend("x-advanced" = true)))]
    pub max_job_timeout_ms: u64,
    /// Concurrent jobs
    ///
    /// Jobs run at once; more are answered OVERLOADED (JetStream: left in the stream).
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub max_concurrent_jobs: u32,
    /// Max payload (bytes)
    ///
    /// Larger requests are answered PAYLOAD_TOO_LARGE.
    #[cfg_attr(test, schemars(range(min = 1), extend("x-advanced" = true)))]
    pub max_payload_bytes: usize,
    /// Drain timeout (ms)
    ///
    /// How long stopping waits for in-flight jobs before answering them SHUTTING_DOWN.
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub drain_timeout_ms: u64,
    /// Progress interval (ms)
    ///
    /// Jobs whose requester asks for progress (Pier-Progress-To, protocol v1.1) get a working
    /// keep-alive whenever no other progress message was sent for this long; requesters treat 3
    /// times it without one as a lost job.
    #[cfg_attr(test, schemars(range(min = 100, max = 600000), extend("x-advanced" = true)))]
    pub progress_interval_ms: u64,
    /// Connect timeout (ms)
    ///
    /// Per connection attempt.
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub connect_timeout_ms: u64,
    /// Max connect attempts
    ///
    /// Worker start: connection attempts while no server answers before start fails (0: keep
    /// trying with backoff until stopped). Publishers try once.
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub max_connect_attempts: u32,
    /// Log format
    ///
    /// text (one line each) or json (one JSON object per line: time, level, msg, and for a
    /// finished job jobId, sender, durationMs, outcome, code, price).
    pub log_format: LogFormat,
    /// Metrics port
    ///
    /// Serve Prometheus metrics on http://<metricsHost>:<port>/metrics (0: off).
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub metrics_port: u16,
    /// Metrics address
    ///
    /// The address the metrics endpoint binds to (loopback unless you mean otherwise).
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub metrics_host: String,
    /// Allowed senders
    ///
    /// When set, only jobs from a listed sender run; others get UNAUTHORIZED. A user public
    /// key (U..., 56 characters) matches a job signed by that key (Pier-Sender); a plain name
    /// matches the self-declared meta.sender, and only under senderTrust any.
    pub allowed_senders: Option<Vec<String>>,
    /// Sender trust
    ///
    /// any: unsigned jobs run too (v1.0 requesters); signed: a job without a Pier-Sender
    /// signature gets UNAUTHORIZED. A signed job is verified either way.
    pub sender_trust: SenderTrust,
    /// Signature max age (ms)
    ///
    /// How far a Pier-Sender ts may be from the worker's clock (JetStream: from the time the
    /// stream stored the job), either side; also how long nonces are remembered (at most an
    /// hour: a longer window would fill the replay memory with nonces it can never forget).
    #[cfg_attr(test, schemars(range(min = 1, max = 3600000), extend("x-advanced" = true)))]
    pub signature_max_age_ms: u64,
    /// Trusted workers
    ///
    /// When set, pier_publish and the CLI's publish accept only replies signed (Pier-Worker)
    /// by one of these worker public keys (U...); others are the error PIER_UNTRUSTED_WORKER.
    pub trusted_workers: Option<Vec<String>>,
    /// Service discovery
    ///
    /// Answer NATS service discovery ($SRV.PING|INFO|STATS) as service pier-worker.
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub discovery: bool,
    /// Delivery
    ///
    /// core (request/reply) or jetstream (at-least-once from a durable pull consumer).
    pub delivery: Delivery,
    /// Stream name
    ///
    /// JetStream mode: the work-queue stream over the job subject.
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub stream_name: String,
    /// Stream replicas
    ///
    /// JetStream mode: copies of the job stream the cluster keeps (1 on one server; 3 on a
    /// cluster, so losing a node loses no queued job). A stream with other replicas is updated
    /// to this; the consumer follows the stream.
    #[cfg_attr(test, schemars(range(min = 1, max = 5), extend("x-advanced" = true)))]
    pub stream_replicas: usize,
    /// Consumer name
    ///
    /// JetStream mode: the durable pull consumer the workers share.
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub consumer_name: String,
    /// Result subject
    ///
    /// JetStream mode: results of jobs without a usable Pier-Reply-To header go to
    /// <resultSubject>.<jobId>.
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub result_subject: Option<String>,
    /// Max deliveries
    ///
    /// JetStream mode: attempts of a failing job before it is answered.
    #[cfg_attr(test, schemars(range(min = 1), extend("x-advanced" = true)))]
    pub max_deliver: i64,
    /// Ack wait (ms)
    ///
    /// JetStream mode: redelivery delay of a job without ack or heartbeat.
    #[cfg_attr(test, schemars(range(min = 1), extend("x-advanced" = true)))]
    pub ack_wait_ms: u64,

    /// Minimum job price
    ///
    /// Jobs whose meta.price is below this (or missing, when this is above 0) are answered
    /// PRICE_TOO_LOW before they take a slot or reach the model (0: every job runs).
    #[cfg_attr(test, schemars(range(min = 0.0)))]
    pub min_job_price: f64,
    /// Daily spending cap
    ///
    /// What job turns may cost per UTC day, in the unit of the model's cost config (usually
    /// USD). Once the day's turns have cost this much, jobs are answered BUDGET_EXHAUSTED before
    /// they reach the model, until the next UTC day; jobs already running finish. Counted from
    /// the ledger, so it holds across restarts (without a ledger file: from the worker's start).
    /// 0: no cap.
    #[cfg_attr(test, schemars(range(min = 0.0)))]
    pub max_daily_spend: f64,
    /// Daily token cap
    ///
    /// Like maxDailySpend, in tokens (input, output, cache reads and writes of every job turn):
    /// for models without a cost config. 0: no cap.
    pub max_daily_tokens: u64,
    /// Jobs per sender per minute
    ///
    /// Jobs one signed sender (a verified Pier-Sender key) may run per minute; more are answered
    /// RATE_LIMITED, never run. Only jobs that run use the share. 0: no limit.
    pub sender_jobs_per_minute: u32,
    /// Unsigned jobs per minute
    ///
    /// Jobs without a Pier-Sender signature may run this many per minute, all together (their
    /// sender names are self-declared); more are answered RATE_LIMITED, never run. 0: no limit.
    pub unsigned_jobs_per_minute: u32,
    /// Max output tokens
    ///
    /// Caps every model request of a job turn (max_tokens), so a stranger's task cannot spend
    /// more than this per request (0: the model's own limit).
    #[cfg_attr(test, schemars(extend("x-host" = true)))]
    pub max_output_tokens: u32,
    /// Job model
    ///
    /// provider/model that runs job turns instead of the agent's model, e.g. a cheaper one
    /// (empty: the agent's model).
    #[cfg_attr(test, schemars(example = "openai/gpt-5-mini", extend("x-host" = true)))]
    pub job_model: String,
    /// Ledger file
    ///
    /// One JSON line per job that ran (id, sender, price, outcome, code, tokens, cost,
    /// duration, time; never its task or result), rotated by size; read it with
    /// pier-connector ledger. Unset: no ledger, except under OpenClaw, which keeps one per
    /// account at <stateDir>/pier/ledger/<account>.jsonl.
    #[cfg_attr(test, schemars(example = "/var/lib/pier/ledger.jsonl"))]
    pub ledger_file: Option<PathBuf>,
    /// Ledger size (bytes)
    ///
    /// The ledger file is rotated at this size; two rotated files are kept (<file>.1, .2).
    #[cfg_attr(test, schemars(range(min = 4096), extend("x-advanced" = true)))]
    pub ledger_max_bytes: u64,

    /// Max publish price
    ///
    /// The pier_publish tool refuses a task whose meta.price is above this (0: only
    /// unpaid tasks).
    #[cfg_attr(test, schemars(range(min = 0.0), extend("x-host" = true)))]
    pub max_publish_price: f64,
    /// Kept job sessions
    ///
    /// 0: job turns are detached and store no session. N: every job's session is stored and
    /// the newest N kept for debugging; older ones are deleted once their job is answered.
    #[cfg_attr(test, schemars(extend("x-host" = true, "x-advanced" = true)))]
    pub keep_sessions: u32,
    /// Job tools
    ///
    /// The only OpenClaw tools a job's agent turn may offer the model, on top of the agent's
    /// own tool policy; [] (the default) offers none. A job is a stranger's task: group:web is
    /// the safe opt-in. Host tools (runtime, files, process, sessions, messaging other
    /// channels, automation, gateway, nodes, browser, memory) are refused unless the job agent
    /// runs in OpenClaw's sandbox.
    #[cfg_attr(test, schemars(extend("x-host" = true)))]
    pub tools_allow: Vec<String>,
    /// Unsafe: host tools without a sandbox
    ///
    /// Lets toolsAllow give job turns host tools although the job agent has no sandbox, so a
    /// stranger's task can run commands and touch files on this host. Reported as critical by
    /// openclaw security audit.
    #[cfg_attr(test, schemars(extend("x-host" = true, "x-advanced" = true)))]
    pub unsafe_host_tools: bool,
    /// Job disk (MiB)
    ///
    /// The most a sandboxed job's workspace may hold (and at most 100000 files): past it the job
    /// ends EXECUTION_FAILED and its files are removed. Where the gateway runs as root on Linux
    /// the workspace is a tmpfs of this size; elsewhere it is measured while the job runs.
    #[cfg_attr(test, schemars(range(min = 1), extend("x-host" = true, "x-advanced" = true)))]
    pub job_disk_mb: u32,
    /// Reply subject prefixes
    ///
    /// When set, a job's reply subject must start with one of these (e.g. _INBOX.); others are
    /// not run. Reply subjects under $ ($JS., $KV., $SYS., ...) are always refused.
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub reply_subject_prefixes: Vec<String>,
    /// Earnings in discovery
    ///
    /// Report this worker's earnings to anyone who asks $SRV.STATS (the fleet view's EARNED
    /// column). Off: discovery carries no earnings.
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub discovery_earnings: bool,

    /// NATS token
    ///
    /// Token auth.
    pub token: Option<Secret>,
    /// NATS user
    ///
    /// User/password auth: the user.
    pub user: Option<String>,
    /// NATS password
    ///
    /// User/password auth: the password.
    pub password: Option<Secret>,
    /// NATS nkey seed
    ///
    /// Nkey auth with a user seed (SU...).
    pub nkey_seed: Option<Secret>,
    /// Signing seed
    ///
    /// User nkey seed (SU...) that signs this worker's replies (Pier-Worker) and this
    /// publisher's requests (Pier-Sender); a secret, best kept as a SecretRef. Never the NATS
    /// login key (nkeySeed, the credsFile seed): that is refused. Unset: a key of its own, made
    /// on first start and kept in identityFile.
    pub signing_seed: Option<Secret>,
    /// Identity file
    ///
    /// Where the worker's and requester's own signing key is kept when signingSeed is unset:
    /// made on first start (mode 0600) and kept; back it up, rotate it with pier-connector
    /// identity --rotate. Unset: ~/.config/pier-connector/identity.seed (under
    /// $XDG_CONFIG_HOME when set); under OpenClaw one per account at
    /// <stateDir>/pier/identity/<account>.seed.
    #[cfg_attr(test, schemars(example = "/var/lib/pier/identity.seed"))]
    pub identity_file: Option<PathBuf>,
    /// NATS creds file
    ///
    /// Path to a .creds file (JWT and nkey seed).
    #[cfg_attr(test, schemars(example = "/path/to/user.creds"))]
    pub creds_file: Option<PathBuf>,
    /// TLS CA file
    ///
    /// CA certificate(s) to verify the server with.
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub tls_ca_file: Option<PathBuf>,
    /// TLS client certificate
    ///
    /// Client certificate file, for servers that require one (with tlsKeyFile).
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS client key
    ///
    /// Client key file (with tlsCertFile).
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub tls_key_file: Option<PathBuf>,
    /// Require TLS
    ///
    /// Refuse servers that do not offer TLS.
    #[cfg_attr(test, schemars(extend("x-advanced" = true)))]
    pub tls_required: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nats_url: DEFAULT_NATS_URL.to_string(),
            servers: Vec::new(),
            subject: "jobs.worker".to_string(),
            publish_subject: "jobs.submit".to_string(),
            queue_group: "openclaw-workers".to_string(),
            worker_id: String::new(),
            wallet_address: String::new(),
            agent_id: String::new(),
            job_timeout_ms: 60_000,
            max_job_timeout_ms: 600_000,
            max_concurrent_jobs: 4,
            max_payload_bytes: 1024 * 1024,
            drain_timeout_ms: 10_000,
            progress_interval_ms: 5_000,
            connect_timeout_ms: 10_000,
            max_connect_attempts: 0,
            log_format: LogFormat::Text,
            metrics_port: 0,
            metrics_host: "127.0.0.1".to_string(),
            allowed_senders: None,
            sender_trust: SenderTrust::Any,
            signature_max_age_ms: 60_000,
            trusted_workers: None,
            discovery: true,
            delivery: Delivery::Core,
            stream_name: "PIER_JOBS".to_string(),
            stream_replicas: 1,
            consumer_name: "pier-workers".to_string(),
            result_subject: None,
            max_deliver: 5,
            ack_wait_ms: 30_000,
            min_job_price: 0.0,
            max_daily_spend: 0.0,
            max_daily_tokens: 0,
            sender_jobs_per_minute: 0,
            unsigned_jobs_per_minute: 0,
            max_output_tokens: 0,
            job_model: String::new(),
            ledger_file: None,
            ledger_max_bytes: 8 * 1024 * 1024,
            max_publish_price: 0.0,
            keep_sessions: 0,
            tools_allow: Vec::new(),
            unsafe_host_tools: false,
            job_disk_mb: 1024,
            reply_subject_prefixes: Vec::new(),
            discovery_earnings: false,
            token: None,
            user: None,
            password: None,
            nkey_seed: None,
            signing_seed: None,
            identity_file: None,
            creds_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
        }
    }
}

impl Config {
    /// Reads a config from a JSON value. `null` means "all defaults".
    pub fn from_value(value: serde_json::Value) -> Result<Config, PierError> {
        let value = match value {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            other => other,
        };
        let config: Config = serde_path_to_error::deserialize(value).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner().to_string();
            let detail = if SECRET_FIELDS.iter().any(|f| path.starts_with(f)) {
                // serde's message may quote the offending value: for a secret, say only what is wanted.
                "must be a string".to_string()
            } else {
                strip_position(&inner)
            };
            if path == "." {
                PierError::Config(detail)
            } else {
                PierError::Config(format!("{path}: {detail}"))
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_json(text: &str) -> Result<Config, PierError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            PierError::Config(format!("not JSON: {}", strip_position(&e.to_string())))
        })?;
        Config::from_value(value)
    }

    fn validate(&self) -> Result<(), PierError> {
        let bad = |m: String| Err(PierError::Config(m));
        for (name, subject) in [
            ("subject", &self.subject),
            ("publishSubject", &self.publish_subject),
            ("queueGroup", &self.queue_group),
        ] {
            if subject.is_empty() || subject.chars().any(char::is_whitespace) {
                return bad(format!(
                    "{name}: must be a non-empty NATS subject without spaces"
                ));
            }
        }
        if let Some(prefix) = &self.result_subject {
            if !crate::subject::is_publish_subject(prefix) {
                return bad(
                    "resultSubject: must be a subject one can publish to (no spaces, no wildcards)"
                        .into(),
                );
            }
        }
        if let Some(prefix) = &self.result_subject {
            if prefix.starts_with('$') {
                return bad(
                    "resultSubject: must not be under $ (NATS system and JetStream APIs)".into(),
                );
            }
        }
        if let Some(p) = self
            .reply_subject_prefixes
            .iter()
            .find(|p| p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return bad(format!(
                "replySubjectPrefixes: {p:?} must be a non-empty subject prefix without spaces"
            ));
        }
        if let Some(seed) = &self.signing_seed {
            let key = SigningKey::from_seed(seed.expose())
                .map_err(|why| PierError::Config(format!("signingSeed: {why}")))?;
            // The credsFile seed is compared when the identity is resolved (the file is read then).
            let login = self
                .nkey_seed
                .as_ref()
                .map(|s| SigningKey::from_seed(s.expose()));
            if let Some(Ok(login)) = login {
                if login.public_key() == key.public_key() {
                    return Err(login_key_refused("signingSeed", "nkeySeed"));
                }
            }
        }
        if !(1..=3_600_000).contains(&self.signature_max_age_ms) {
            return bad("signatureMaxAgeMs: must be from 1 to 3600000 (an hour)".into());
        }
        for key in self.allowed_senders.iter().flatten() {
            if looks_like_user_key(key) && !is_user_public_key(key) {
                return bad(format!(
                    "allowedSenders: {key:?} looks like a user public key but is not a valid one"
                ));
            }
        }
        if let Some(bad_key) = self
            .trusted_workers
            .iter()
            .flatten()
            .find(|k| !is_user_public_key(k))
        {
            return bad(format!(
                "trustedWorkers: {:?} is not a user public key (U..., 56 characters)",
                crate::error::one_line(bad_key)
            ));
        }
        if !(1..=5).contains(&self.stream_replicas) {
            return bad("streamReplicas: must be 1 to 5 (NATS keeps at most 5 copies)".into());
        }
        if self.max_deliver < 1 {
            return bad("maxDeliver: must be at least 1".into());
        }
        if !(self.min_job_price.is_finite() && self.min_job_price >= 0.0) {
            return bad("minJobPrice: must be a number of at least 0".into());
        }
        if !(self.max_daily_spend.is_finite() && self.max_daily_spend >= 0.0) {
            return bad("maxDailySpend: must be a number of at least 0".into());
        }
        if self.ledger_max_bytes < 4096 {
            return bad("ledgerMaxBytes: must be at least 4096".into());
        }
        if !self.job_model.is_empty() && !is_model_ref(&self.job_model) {
            return bad(format!(
                "jobModel: {:?} must be provider/model (e.g. openai/gpt-5-mini)",
                crate::error::one_line(&self.job_model)
            ));
        }
        if self.job_disk_mb == 0 {
            return bad("jobDiskMb: must be at least 1 (MiB)".into());
        }
        if !(self.max_publish_price.is_finite() && self.max_publish_price >= 0.0) {
            return bad("maxPublishPrice: must be a number of at least 0".into());
        }
        if self.max_concurrent_jobs == 0 {
            return bad("maxConcurrentJobs: must be at least 1".into());
        }
        if self.job_timeout_ms == 0 || self.max_job_timeout_ms == 0 {
            return bad("jobTimeoutMs and maxJobTimeoutMs: must be at least 1".into());
        }
        if self.max_payload_bytes == 0 {
            return bad("maxPayloadBytes: must be at least 1".into());
        }
        if !(100..=600_000).contains(&self.progress_interval_ms) {
            return bad("progressIntervalMs: must be between 100 and 600000".into());
        }
        if self.user.is_some() != self.password.is_some() {
            return bad("user and password: set both or neither".into());
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return bad("tlsCertFile and tlsKeyFile: set both or neither".into());
        }
        let methods = [
            self.token.is_some(),
            self.user.is_some(),
            self.nkey_seed.is_some(),
            self.creds_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return bad("token, user/password, nkeySeed and credsFile: choose one".into());
        }
        for url in self.server_urls() {
            let scheme = url.split("://").next().unwrap_or_default();
            if !url.contains("://") || !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                return bad(format!(
                    "server URL {:?}: must start with nats://, tls://, ws:// or wss://",
                    redact_url(&url)
                ));
            }
        }
        if self.server_urls().is_empty() {
            return bad("natsUrl: no server given".into());
        }
        Ok(())
    }

    /// The servers to use, in order: `servers` when set, else the comma list in `natsUrl`.
    pub fn server_urls(&self) -> Vec<String> {
        let list: Vec<String> = if self.servers.is_empty() {
            self.nats_url.split(',').map(str::to_string).collect()
        } else {
            self.servers.clone()
        };
        list.into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The server list for logs and status, with any `user:pass@` part removed.
    pub fn servers_for_display(&self) -> String {
        self.server_urls()
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A job's time budget: the request's own `timeoutMs` (or `jobTimeoutMs`), never above
    /// `maxJobTimeoutMs`.
    pub fn job_deadline(&self, requested_ms: Option<u64>) -> Duration {
        let ms = requested_ms
            .unwrap_or(self.job_timeout_ms)
            .min(self.max_job_timeout_ms);
        Duration::from_millis(ms)
    }

    /// The `allowedSenders` entries that are names, not keys: they match the self-declared
    /// `meta.sender` only.
    pub fn allowed_names(&self) -> Vec<&str> {
        self.allowed_senders
            .iter()
            .flatten()
            .map(String::as_str)
            .filter(|s| !is_user_public_key(s))
            .collect()
    }

    pub fn worker_identity(&self) -> WorkerIdentity {
        WorkerIdentity {
            id: if self.worker_id.is_empty() {
                ANONYMOUS_WORKER.to_string()
            } else {
                self.worker_id.clone()
            },
            wallet: (!self.wallet_address.is_empty()).then(|| self.wallet_address.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    Core,
    Jetstream,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Whether unsigned jobs run (`senderTrust`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum SenderTrust {
    Any,
    Signed,
}

/// `provider/model`: both parts non-empty, no spaces.
fn is_model_ref(text: &str) -> bool {
    text.split_once('/').is_some_and(|(provider, model)| {
        !provider.is_empty()
            && !model.is_empty()
            && !text.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

/// An `allowedSenders` entry meant as a key: such an entry that is not a valid key is a typo
/// to report, not a name to match.
fn looks_like_user_key(entry: &str) -> bool {
    entry.len() == 56
        && entry.starts_with('U')
        && entry
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// The user seed in a `.creds` file: the line after `-----BEGIN USER NKEY SEED-----`.
pub(crate) fn creds_seed(path: &std::path::Path) -> Option<Secret> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines().map(str::trim);
    lines
        .by_ref()
        .find(|l| l.contains("BEGIN USER NKEY SEED"))?;
    lines.find(|l| !l.is_empty()).map(Secret::new)
}

/// The refusal of a signing key that is the NATS login key (protocol.md, "Keys are for Pier
/// signatures only"): `what` signs, `login` names where the login key comes from.
pub(crate) fn login_key_refused(what: &str, login: &str) -> PierError {
    PierError::Config(format!(
        "{what} is the NATS login key ({login}): a key that logs in to NATS must never sign Pier requests or results (a server could have it sign them as its nonce); give Pier a key of its own (unset signingSeed to use a generated one, or pier-connector keygen)"
    ))
}

/// Removes credentials embedded in a URL (`nats://user:pass@host`).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://[redacted]@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_config_has_the_original_defaults() {
        let c = Config::from_value(json!({})).unwrap();
        assert_eq!(c.nats_url, "wss://pier.gholl.com/nexus");
        assert_eq!(c.subject, "jobs.worker");
        assert_eq!(c.publish_subject, "jobs.submit");
        assert_eq!(c.queue_group, "openclaw-workers");
        assert_eq!(c.job_timeout_ms, 60_000);
        assert_eq!(c.max_concurrent_jobs, 4);
        assert_eq!(Config::from_value(json!(null)).unwrap(), c);
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Config::from_value(json!({ "natsURL": "nats://x" })).unwrap_err();
        assert!(err.to_string().contains("natsURL"), "{err}");
    }

    #[test]
    fn ill_typed_field_is_named() {
        let err = Config::from_value(json!({ "maxConcurrentJobs": "many" })).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("maxConcurrentJobs"), "{text}");
        assert!(!text.contains("line"), "{text}");
    }

    #[test]
    fn ill_typed_secret_is_named_without_its_value() {
        let err = Config::from_value(json!({ "token": 123456789 })).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("token"), "{text}");
        assert!(!text.contains("123456789"), "{text}");
    }

    #[test]
    fn secrets_never_print() {
        let c = Config::from_value(json!({
            "token": "tok-SECRET", "nkeySeed": null
        }))
        .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("tok-SECRET"), "{debug}");
        assert!(debug.contains("[redacted]"));
        let c = Config::from_value(json!({ "user": "u", "password": "pw-SECRET-2" })).unwrap();
        assert!(!format!("{c:?}").contains("pw-SECRET-2"));
    }

    #[test]
    fn the_signature_window_is_bounded() {
        for bad in [0, 3_600_001] {
            let err = Config::from_value(json!({ "signatureMaxAgeMs": bad })).unwrap_err();
            assert!(err.to_string().contains("signatureMaxAgeMs"), "{err}");
        }
        assert!(Config::from_value(json!({ "signatureMaxAgeMs": 3_600_000 })).is_ok());
    }

    #[test]
    fn half_credentials_are_rejected() {
        assert!(Config::from_value(json!({ "user": "u" })).is_err());
        assert!(Config::from_value(json!({ "tlsCertFile": "/c" })).is_err());
        assert!(Config::from_value(json!({ "token": "a", "nkeySeed": "b" })).is_err());
    }

    #[test]
    fn server_lists_and_schemes() {
        let c = Config::from_value(json!({ "natsUrl": "nats://a:1, ws://b:2" })).unwrap();
        assert_eq!(c.server_urls(), vec!["nats://a:1", "ws://b:2"]);
        let c = Config::from_value(json!({ "natsUrl": "x", "servers": ["tls://c:3"] })).unwrap();
        assert_eq!(c.server_urls(), vec!["tls://c:3"]);
        let err = Config::from_value(json!({ "natsUrl": "http://a" })).unwrap_err();
        assert!(err.to_string().contains("http://a"));
    }

    #[test]
    fn urls_with_credentials_are_redacted() {
        let c = Config::from_value(json!({ "natsUrl": "nats://bob:hunter2@h:4222" })).unwrap();
        assert_eq!(c.servers_for_display(), "nats://[redacted]@h:4222");
        let err = Config::from_value(json!({ "natsUrl": "http://bob:hunter2@h" })).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn deadline_is_the_request_timeout_capped_by_the_max() {
        let c =
            Config::from_value(json!({ "jobTimeoutMs": 1000, "maxJobTimeoutMs": 5000 })).unwrap();
        assert_eq!(c.job_deadline(None), Duration::from_millis(1000));
        assert_eq!(c.job_deadline(Some(3000)), Duration::from_millis(3000));
        assert_eq!(c.job_deadline(Some(90_000)), Duration::from_millis(5000));
    }

    #[test]
    fn signing_settings_are_checked() {
        let seed = "SUAAOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBZ5FE";
        let key = "UDVEU3DD4KOFECV66VIHWEZOYX4ZKR3WV27L464SIIPOU2IUI3JCYSJF";
        let c = Config::from_value(json!({ "signingSeed": seed })).unwrap();
        assert!(!format!("{c:?}").contains(seed));
        // The login key never signs: as signingSeed beside it, it is refused at once.
        let err = Config::from_value(json!({ "nkeySeed": seed, "signingSeed": seed })).unwrap_err();
        assert_eq!(err.code(), "PIER_CONFIG");
        assert!(
            err.to_string()
                .contains("signingSeed is the NATS login key"),
            "{err}"
        );
        assert!(!err.to_string().contains(seed), "{err}");
        let err = Config::from_value(json!({ "signingSeed": "SUsecret-typo" })).unwrap_err();
        assert!(err.to_string().contains("signingSeed"), "{err}");
        assert!(!err.to_string().contains("secret-typo"), "{err}");
        assert!(Config::from_value(json!({ "signingSeed": 5 }))
            .unwrap_err()
            .to_string()
            .contains("must be a string"));
        assert!(Config::from_value(json!({ "trustedWorkers": ["alice"] })).is_err());
        let typo = format!("{}A", &key[..55]);
        assert!(Config::from_value(json!({ "allowedSenders": [typo] })).is_err());
        let c = Config::from_value(
            json!({ "allowedSenders": [key, "alice"], "senderTrust": "signed" }),
        )
        .unwrap();
        assert_eq!(c.allowed_names(), vec!["alice"]);
        assert_eq!(c.sender_trust, SenderTrust::Signed);
        assert!(Config::from_value(json!({ "senderTrust": "maybe" })).is_err());
    }

    #[test]
    fn economics_settings_are_checked() {
        let c = Config::from_value(json!({
            "minJobPrice": 5, "maxOutputTokens": 300, "jobModel": "vllm/cheap",
            "ledgerFile": "/tmp/l.jsonl"
        }))
        .unwrap();
        assert_eq!(c.min_job_price, 5.0);
        assert_eq!(c.max_output_tokens, 300);
        assert!(Config::from_value(json!({ "minJobPrice": -1 })).is_err());
        assert_eq!(Config::from_value(json!({})).unwrap().job_disk_mb, 1024);
        assert!(Config::from_value(json!({ "jobDiskMb": 0 })).is_err());
        assert!(Config::from_value(json!({ "maxOutputTokens": -1 })).is_err());
        assert!(Config::from_value(json!({ "ledgerMaxBytes": 100 })).is_err());
        for bad in ["cheap", "/cheap", "vllm/", "vllm/a b"] {
            let err = Config::from_value(json!({ "jobModel": bad })).unwrap_err();
            assert!(err.to_string().contains("jobModel"), "{err}");
        }
    }

    #[test]
    fn identity_defaults() {
        let c = Config::default();
        assert_eq!(
            c.worker_identity(),
            WorkerIdentity {
                id: "anonymous-worker".into(),
                wallet: None
            }
        );
    }
}
