//! The worker's lifecycle: connect (retrying through an outage), open the configured delivery
//! source, feed its jobs to the pipeline, answer service discovery, and stop once, draining.

use crate::budget::{DailyUse, TodayStatus};
use crate::config::Config;
use crate::connection::{self, Attempts};
use crate::delivery::{Health, Source};
use crate::discovery;
use crate::error::PierError;
use crate::handler::JobHandler;
use crate::identity::Identity;
use crate::log::{Level, SharedLogger};
use crate::metrics::MetricsServer;
use crate::pipeline::{Pipeline, PipelineParts, FINAL_FLUSH};
use crate::protocol;
use crate::protocol::WorkerIdentity;
use crate::stats::{Stats, StatsSnapshot};
use crate::sync::lock;
use async_nats::Client;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A `stop()` ends every `start()` called before it, wherever that start is: still waiting for a
/// server, making the identity, or not yet begun (the two run as separate tasks, and a stop may
/// be polled first; it then found no start to end and the start retried until stopped again,
/// which nothing did: a gateway account stopped while connecting hung on its stop).
#[derive(Default)]
struct StartGate {
    /// How many `stop()` calls there have been: a start ends when this moved since it was called.
    stops: u64,
    /// Cancelled by `stop()` to end the `start()` waiting for a server.
    abort: Option<CancellationToken>,
}

pub struct Worker {
    config: Arc<Config>,
    handler: Arc<dyn JobHandler>,
    logger: SharedLogger,
    stats: Arc<Stats>,
    identity: WorkerIdentity,
    /// Held by `start` and `stop` for their whole run, so they never interleave.
    lifecycle: tokio::sync::Mutex<Option<Running>>,
    /// What `status()` (and the metrics endpoint) read without waiting for a lifecycle change.
    phase: Arc<Mutex<Phase>>,
    /// How `stop()` ends a `start()` still under way (see [`StartGate`]).
    start_gate: Mutex<StartGate>,
    /// Whether the delivery source can take jobs (JetStream may be re-electing a leader).
    health: Arc<Health>,
    /// The key replies are signed with, from the last start (the identity file is read then).
    signing: Mutex<Option<Identity>>,
    /// How many signed jobs' nonces the replay memory holds at most.
    replay_memory_cap: usize,
    /// What job turns used today, from the last start on (read from the ledger then).
    daily: Mutex<Option<Arc<DailyUse>>>,
}

/// The tasks of a running worker.
struct Running {
    stop: oneshot::Sender<()>,
    jobs: JoinHandle<()>,
    discovery: Option<(CancellationToken, JoinHandle<()>)>,
    metrics: Option<MetricsServer>,
}

#[derive(Clone)]
enum Phase {
    Stopped,
    Connecting,
    Running {
        client: Client,
        started: Instant,
        started_at_ms: u64,
    },
    Stopping {
        client: Client,
    },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// `stopped`, `connecting`, `connected`, `recovering` (connected, but JetStream does not
    /// answer yet: a leader election, a node restarting), `disconnected` or `stopping`.
    pub state: &'static str,
    pub servers: String,
    pub server_name: Option<String>,
    pub server_version: Option<String>,
    pub subject: String,
    pub queue_group: String,
    pub publish_subject: String,
    pub worker_id: String,
    pub wallet_address: Option<String>,
    pub max_concurrent_jobs: u32,
    pub started_at_ms: Option<u64>,
    pub uptime_ms: Option<u64>,
    /// The public key (`U…`) that signs this worker's replies (`Pier-Worker`): what requesters
    /// pin in `trustedWorkers`. Known once the worker has started.
    pub worker_key: Option<String>,
    /// Where that key is kept when it is not `signingSeed`: the identity file.
    pub identity_file: Option<String>,
    /// The last error the worker met: a failed connection attempt, a NATS server error or a
    /// job's `task_error` (`CODE: message`).
    pub last_error: Option<String>,
    /// What job turns used today (UTC) against `maxDailySpend` / `maxDailyTokens`; known once
    /// the worker has started.
    pub today: Option<TodayStatus>,
    pub stats: StatsSnapshot,
}

impl Worker {
    pub fn new(config: Config, handler: Arc<dyn JobHandler>, logger: SharedLogger) -> Worker {
        let stats = Arc::new(Stats::default());
        let health = Health::new(stats.clone(), logger.clone());
        Worker {
            health,
            identity: config.worker_identity(),
            signing: Mutex::new(None),
            config: Arc::new(config),
            handler,
            logger,
            stats,
            lifecycle: tokio::sync::Mutex::new(None),
            phase: Arc::new(Mutex::new(Phase::Stopped)),
            start_gate: Mutex::new(StartGate::default()),
            replay_memory_cap: crate::signature::REPLAY_MEMORY_CAP,
            daily: Mutex::new(None),
        }
    }

    /// A replay memory of `cap` nonces instead of [`crate::signature::REPLAY_MEMORY_CAP`]: for
    /// tests that fill it without sending 100,000 signed jobs.
    #[doc(hidden)]
    pub fn with_replay_memory_cap(mut self, cap: usize) -> Worker {
        self.replay_memory_cap = cap;
        self
    }

    /// Connects, opens the delivery source and starts taking jobs; resolves once jobs can
    /// arrive. While no server answers it keeps trying with backoff (state `connecting`), up
    /// to `maxConnectAttempts` (0: until `stop()`).
    ///
    /// A `stop()` called after this call ends it with `PIER_STOPPED`, even one that runs before
    /// it has begun.
    pub fn start(&self) -> impl std::future::Future<Output = Result<(), PierError>> + '_ {
        let stops = lock(&self.start_gate).stops;
        self.start_unless_stopped(stops)
    }

    /// [`Worker::start`] as a future that owns its worker: what the binding spawns as a task of
    /// its own. Which stops end it is fixed here, at the call, not when the task first runs: a
    /// stop called after it may run first.
    pub fn start_shared(
        self: &Arc<Self>,
    ) -> impl std::future::Future<Output = Result<(), PierError>> + Send + 'static {
        let stops = lock(&self.start_gate).stops;
        let worker = self.clone();
        async move { worker.start_unless_stopped(stops).await }
    }

    async fn start_unless_stopped(&self, stops: u64) -> Result<(), PierError> {
        let mut lifecycle = self.lifecycle.lock().await;
        if lifecycle.is_some() {
            return Err(PierError::AlreadyRunning);
        }
        // Stopped before it began: no identity file made, no metrics port opened for nothing.
        if lock(&self.start_gate).stops != stops {
            return Err(PierError::Stopped);
        }
        // Read at each start: the identity may have been rotated, and a credsFile's seed (which
        // must differ from it) replaced, since the last one. Made on the first start.
        let identity = crate::identity::resolve(&self.config).inspect_err(|error| {
            self.stats
                .set_last_error(&format!("{}: {error}", error.code()));
        })?;
        if let crate::identity::IdentitySource::File {
            path,
            created: true,
        } = &identity.source
        {
            self.logger.log(
                Level::Info,
                &format!(
                    "[pier-connector] made this worker's own signing key {} (kept in {}; back it up)",
                    identity.public_key(),
                    path.display()
                ),
            );
        }
        let signing_key = Some(identity.key.clone());
        *lock(&self.signing) = Some(identity);
        let abort = CancellationToken::new();
        {
            let mut gate = lock(&self.start_gate);
            if gate.stops != stops {
                abort.cancel();
            }
            gate.abort = Some(abort.clone());
        }
        *lock(&self.phase) = Phase::Connecting;
        // Up before the connection, so an operator sees a worker waiting for its server.
        let metrics = match self.serve_metrics().await {
            Ok(metrics) => metrics,
            Err(error) => {
                *lock(&self.phase) = Phase::Stopped;
                return Err(error);
            }
        };
        let opened = tokio::select! {
            opened = self.open() => opened,
            _ = abort.cancelled() => Err(PierError::Stopped),
        };
        lock(&self.start_gate).abort.take();
        let (client, source) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                if let Some(metrics) = metrics {
                    metrics.stop().await;
                }
                *lock(&self.phase) = Phase::Stopped;
                self.stats
                    .set_last_error(&format!("{}: {error}", error.code()));
                return Err(error);
            }
        };
        let config = &self.config;
        self.logger.log(
            Level::Info,
            &format!(
                "[pier-connector] worker {} subscribed to {} ({}), up to {} jobs at once",
                self.identity.id,
                config.subject,
                match config.delivery {
                    crate::config::Delivery::Core => format!("queue {}", config.queue_group),
                    crate::config::Delivery::Jetstream =>
                        format!("JetStream consumer {}", config.consumer_name),
                },
                config.max_concurrent_jobs
            ),
        );
        self.warn_about_names();
        let discovery = config
            .discovery
            .then(|| self.serve_discovery(&client, signing_key.as_ref()));
        let daily = self.count_today();
        let pipeline = Pipeline::new(
            PipelineParts {
                config: self.config.clone(),
                handler: self.handler.clone(),
                logger: self.logger.clone(),
                stats: self.stats.clone(),
                identity: self.identity.clone(),
                signing_key: signing_key.clone(),
                replay_memory_cap: self.replay_memory_cap,
                daily,
            },
            client.clone(),
        );
        pipeline.listen_for_cancels().await;
        let (stop, stop_rx) = oneshot::channel();
        let jobs = {
            let client = client.clone();
            tokio::spawn(async move {
                source.run(pipeline.clone(), stop_rx).await;
                pipeline.finish().await;
                let _ = tokio::time::timeout(FINAL_FLUSH, client.drain()).await;
            })
        };
        *lock(&self.phase) = Phase::Running {
            client,
            started: Instant::now(),
            started_at_ms: unix_ms(),
        };
        *lifecycle = Some(Running {
            stop,
            jobs,
            discovery,
            metrics,
        });
        Ok(())
    }

    /// Today's use from the ledger's lines of the UTC day (from zero without a ledger file).
    fn count_today(&self) -> Arc<DailyUse> {
        let now_ms = i64::try_from(unix_ms()).unwrap_or(i64::MAX);
        let (daily, failed) = DailyUse::starting(self.config.ledger_file.as_deref(), now_ms);
        if let (Some(e), Some(path)) = (failed, &self.config.ledger_file) {
            let why = format!(
                "could not read the ledger {} for today's spending: {e}; the daily budget counts from now",
                path.display()
            );
            self.logger
                .log(Level::Warn, &format!("[pier-connector] {why}"));
            if self.config.max_daily_spend > 0.0 || self.config.max_daily_tokens > 0 {
                self.stats.set_last_error(&format!("PIER_LEDGER: {why}"));
            }
        }
        if daily.unreadable_lines() > 0 {
            if let Some(path) = &self.config.ledger_file {
                self.logger.log(
                    Level::Warn,
                    &format!(
                        "[pier-connector] the ledger {} has {} line(s) that do not read as entries (cut short by a crash, or not the worker's): skipped",
                        path.display(),
                        daily.unreadable_lines()
                    ),
                );
            }
        }
        let daily = Arc::new(daily);
        *lock(&self.daily) = Some(daily.clone());
        daily
    }

    async fn serve_metrics(&self) -> Result<Option<MetricsServer>, PierError> {
        if self.config.metrics_port == 0 {
            return Ok(None);
        }
        let (phase, health) = (self.phase.clone(), self.health.clone());
        MetricsServer::start(
            &self.config.metrics_host,
            self.config.metrics_port,
            self.stats.clone(),
            Box::new(move || state_of(&lock(&phase), &health)),
            self.logger.clone(),
        )
        .await
        .map(Some)
    }

    async fn open(&self) -> Result<(Client, Source), PierError> {
        let client = connection::connect(
            &self.config,
            self.logger.clone(),
            self.stats.clone(),
            &format!("pier-worker {}", self.identity.id),
            Attempts::from_config(self.config.max_connect_attempts),
        )
        .await?;
        match Source::open(&client, &self.config, self.health.clone()).await {
            Ok(source) => Ok((client, source)),
            Err(error) => {
                let _ = tokio::time::timeout(FINAL_FLUSH, client.drain()).await;
                Err(error)
            }
        }
    }

    /// Once per start: `allowedSenders` names are self-declared (`meta.sender`), so anyone can
    /// claim them; keys are what a signature proves.
    fn warn_about_names(&self) {
        let names = self.config.allowed_names();
        if names.is_empty() {
            return;
        }
        let why = match self.config.sender_trust {
            crate::config::SenderTrust::Any => {
                "they match the self-declared meta.sender, which anyone can write"
            }
            crate::config::SenderTrust::Signed => {
                "under senderTrust signed they match nothing (a name is self-declared)"
            }
        };
        self.logger.log(
            Level::Warn,
            &format!(
                "[pier-connector] allowedSenders has {} plain name(s), not user public keys: {why}; list the requesters' keys (U...) and set senderTrust \"signed\"",
                names.len()
            ),
        );
    }

    fn serve_discovery(
        &self,
        client: &Client,
        signing_key: Option<&crate::signature::SigningKey>,
    ) -> (CancellationToken, JoinHandle<()>) {
        let stop = CancellationToken::new();
        let config = &self.config;
        let identity = discovery::ServiceIdentity {
            id: protocol::new_id(),
            worker_id: self.identity.id.clone(),
            wallet: self.identity.wallet.clone(),
            subject: config.subject.clone(),
            queue_group: (config.delivery == crate::config::Delivery::Core)
                .then(|| config.queue_group.clone()),
            started: SystemTime::now(),
            earnings: config.discovery_earnings,
            worker_key: signing_key.map(|k| k.public_key().to_string()),
        };
        let (client, stats, logger, token) = (
            client.clone(),
            self.stats.clone(),
            self.logger.clone(),
            stop.clone(),
        );
        let task = tokio::spawn(async move {
            if let Err(e) = discovery::serve(client, identity, stats, token).await {
                logger.log(Level::Warn, &format!("[pier-connector] {e}"));
            }
        });
        (stop, task)
    }

    /// Stops taking jobs, lets in-flight jobs finish within `drainTimeoutMs`, answers the rest
    /// SHUTTING_DOWN and closes the connection. Resolves when all of that is done; ends every
    /// `start()` called before it (see [`StartGate`]); a no-op when not running.
    pub async fn stop(&self) {
        {
            let mut gate = lock(&self.start_gate);
            gate.stops += 1;
            if let Some(abort) = gate.abort.take() {
                abort.cancel();
            }
        }
        let mut lifecycle = self.lifecycle.lock().await;
        let Some(running) = lifecycle.take() else {
            return;
        };
        {
            let mut phase = lock(&self.phase);
            if let Phase::Running { client, .. } = &*phase {
                *phase = Phase::Stopping {
                    client: client.clone(),
                };
            }
        }
        if let Some((stop, task)) = running.discovery {
            stop.cancel();
            let _ = task.await;
        }
        let _ = running.stop.send(());
        if let Err(e) = running.jobs.await {
            self.logger.log(
                Level::Error,
                &format!("[pier-connector] receive loop ended abnormally: {e}"),
            );
        }
        if let Some(metrics) = running.metrics {
            metrics.stop().await;
        }
        *lock(&self.phase) = Phase::Stopped;
        self.logger
            .log(Level::Info, "[pier-connector] worker stopped");
    }

    pub fn status(&self) -> WorkerStatus {
        let phase = lock(&self.phase).clone();
        let signing = lock(&self.signing).clone();
        let config = &self.config;
        let state = state_of(&phase, &self.health);
        let (client, since) = match &phase {
            Phase::Stopped | Phase::Connecting => (None, None),
            Phase::Stopping { client } => (Some(client), None),
            Phase::Running {
                client,
                started,
                started_at_ms,
            } => (Some(client), Some((started, *started_at_ms))),
        };
        let info = client.map(Client::server_info);
        WorkerStatus {
            state,
            servers: config.servers_for_display(),
            server_name: info.as_ref().map(|i| i.server_name.clone()),
            server_version: info.as_ref().map(|i| i.version.clone()),
            subject: config.subject.clone(),
            queue_group: config.queue_group.clone(),
            publish_subject: config.publish_subject.clone(),
            worker_id: self.identity.id.clone(),
            wallet_address: self.identity.wallet.clone(),
            max_concurrent_jobs: config.max_concurrent_jobs,
            started_at_ms: since.map(|(_, ms)| ms),
            uptime_ms: since.map(|(started, _)| started.elapsed().as_millis() as u64),
            worker_key: signing.as_ref().map(|i| i.public_key().to_string()),
            identity_file: signing
                .as_ref()
                .and_then(|i| i.file())
                .map(|p| p.display().to_string()),
            last_error: self.stats.last_error(),
            today: lock(&self.daily).as_ref().map(|daily| {
                daily.status(
                    i64::try_from(unix_ms()).unwrap_or(i64::MAX),
                    config.max_daily_spend,
                    config.max_daily_tokens,
                )
            }),
            stats: self.stats.snapshot(),
        }
    }

    /// The worker's connection while it runs, so a publisher can share it.
    pub fn client(&self) -> Option<Client> {
        match &*lock(&self.phase) {
            Phase::Running { client, .. } => Some(client.clone()),
            _ => None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The key this worker signs with, once it has started: a publisher sharing its
    /// connection signs requests with it too.
    pub fn signing_key(&self) -> Option<crate::signature::SigningKey> {
        lock(&self.signing).as_ref().map(|i| i.key.clone())
    }
}

/// `stopped`, `connecting`, `connected`, `recovering`, `disconnected` or `stopping`.
fn state_of(phase: &Phase, health: &Health) -> &'static str {
    match phase {
        Phase::Stopped => "stopped",
        Phase::Connecting => "connecting",
        Phase::Stopping { .. } => "stopping",
        Phase::Running { client, .. } => match client.connection_state() {
            async_nats::connection::State::Connected if health.recovering() => "recovering",
            async_nats::connection::State::Connected => "connected",
            async_nats::connection::State::Disconnected => "disconnected",
            async_nats::connection::State::Pending => "connecting",
        },
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
