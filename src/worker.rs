//! The worker: a queue subscription whose messages become jobs, each run by the handler under
//! its deadline, at most `maxConcurrentJobs` at once, each answered exactly once.

use crate::config::{Config, Delivery, WorkerIdentity};
use crate::connection;
use crate::discovery;
use crate::error::{ErrorCode, JobError, PierError};
use crate::handler::{JobHandler, JobInput};
use crate::jetstream;
use crate::log::{Level, SharedLogger};
use crate::outbox::{self, Outbox, Reply};
use crate::protocol::{self, Job};
use crate::stats::{Outcome, Stats, StatsSnapshot};
use async_nats::{Client, Message, Subject, Subscriber};
use futures_util::StreamExt;
use serde::Serialize;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long jobs cancelled at shutdown get to send their SHUTTING_DOWN replies, and the
/// connection to flush them.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

pub struct Worker {
    shared: Arc<Shared>,
    lifecycle: tokio::sync::Mutex<Option<Running>>,
    view: Mutex<Option<RunningView>>,
}

struct Shared {
    config: Arc<Config>,
    handler: Arc<dyn JobHandler>,
    logger: SharedLogger,
    stats: Arc<Stats>,
    identity: WorkerIdentity,
}

impl Shared {
    fn reply_failed(&self, error: &dyn std::fmt::Display) {
        self.stats.reply_failed();
        self.logger.log(
            Level::Error,
            &format!("[pier-connector] could not send a reply: {error}"),
        );
    }
}

enum JobSource {
    Core(Subscriber),
    Jetstream(Box<async_nats::jetstream::consumer::PullConsumer>),
}

struct Running {
    stop: oneshot::Sender<()>,
    receive_loop: JoinHandle<()>,
    discovery: Option<(CancellationToken, JoinHandle<()>)>,
}

#[derive(Clone)]
struct RunningView {
    client: Client,
    started: Instant,
    started_at_ms: u64,
    stopping: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// `stopped`, `connecting`, `connected`, `disconnected` or `stopping`.
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
    pub stats: StatsSnapshot,
}

impl Worker {
    pub fn new(config: Config, handler: Arc<dyn JobHandler>, logger: SharedLogger) -> Worker {
        let identity = config.worker_identity();
        Worker {
            shared: Arc::new(Shared {
                config: Arc::new(config),
                handler,
                logger,
                stats: Arc::new(Stats::default()),
                identity,
            }),
            lifecycle: tokio::sync::Mutex::new(None),
            view: Mutex::new(None),
        }
    }

    /// Connects, subscribes and starts taking jobs. Resolves once the subscription is
    /// registered with the server.
    pub async fn start(&self) -> Result<(), PierError> {
        let mut lifecycle = self.lifecycle.lock().await;
        if lifecycle.is_some() {
            return Err(PierError::AlreadyRunning);
        }
        let shared = &self.shared;
        let config = &shared.config;
        let client = connection::connect(
            config,
            shared.logger.clone(),
            shared.stats.clone(),
            &format!("pier-worker {}", shared.identity.id),
        )
        .await?;
        let source = match config.delivery {
            Delivery::Core => {
                let subscription = client
                    .queue_subscribe(config.subject.clone(), config.queue_group.clone())
                    .await
                    .map_err(|e| PierError::Request(format!("subscribe failed: {e}")))?;
                connection::round_trip(&client, Duration::from_millis(config.connect_timeout_ms))
                    .await?;
                JobSource::Core(subscription)
            }
            Delivery::Jetstream => {
                JobSource::Jetstream(Box::new(jetstream::consumer(&client, config).await?))
            }
        };
        shared.logger.log(
            Level::Info,
            &format!(
                "[pier-connector] worker {} subscribed to {} (queue {}), up to {} jobs at once",
                shared.identity.id, config.subject, config.queue_group, config.max_concurrent_jobs
            ),
        );

        let discovery = config.discovery.then(|| {
            let stop = CancellationToken::new();
            let identity = discovery::ServiceIdentity {
                id: protocol::new_id(),
                worker_id: shared.identity.id.clone(),
                wallet: shared.identity.wallet.clone(),
                subject: config.subject.clone(),
                queue_group: config.queue_group.clone(),
                started: SystemTime::now(),
            };
            let (client, stats, logger, token) = (
                client.clone(),
                shared.stats.clone(),
                shared.logger.clone(),
                stop.clone(),
            );
            let task = tokio::spawn(async move {
                if let Err(e) = discovery::serve(client, identity, stats, token).await {
                    logger.log(Level::Warn, &format!("[pier-connector] {e}"));
                }
            });
            (stop, task)
        });

        let (stop, stop_rx) = oneshot::channel();
        let receive_loop = match source {
            JobSource::Core(subscription) => tokio::spawn(receive_loop(
                shared.clone(),
                client.clone(),
                subscription,
                stop_rx,
            )),
            JobSource::Jetstream(consumer) => {
                let ctx = JobContext {
                    shared: shared.clone(),
                    client: client.clone(),
                    outbox: None,
                };
                tokio::spawn(jetstream::receive_loop(ctx, *consumer, stop_rx))
            }
        };
        *self.lock_view() = Some(RunningView {
            client,
            started: Instant::now(),
            started_at_ms: unix_ms(),
            stopping: false,
        });
        *lifecycle = Some(Running {
            stop,
            receive_loop,
            discovery,
        });
        Ok(())
    }

    /// Stops taking jobs, lets in-flight jobs finish within `drainTimeoutMs`, answers the rest
    /// SHUTTING_DOWN and closes the connection. Resolves when all of that is done; a no-op when
    /// not running.
    pub async fn stop(&self) {
        let mut lifecycle = self.lifecycle.lock().await;
        let Some(running) = lifecycle.take() else {
            return;
        };
        if let Some(view) = self.lock_view().as_mut() {
            view.stopping = true;
        }
        if let Some((stop, task)) = running.discovery {
            stop.cancel();
            let _ = task.await;
        }
        let _ = running.stop.send(());
        if let Err(e) = running.receive_loop.await {
            self.shared.logger.log(
                Level::Error,
                &format!("[pier-connector] receive loop ended abnormally: {e}"),
            );
        }
        *self.lock_view() = None;
        self.shared
            .logger
            .log(Level::Info, "[pier-connector] worker stopped");
    }

    pub fn status(&self) -> WorkerStatus {
        let view = self.lock_view().clone();
        let config = &self.shared.config;
        let (state, info) = match &view {
            None => ("stopped", None),
            Some(v) if v.stopping => ("stopping", Some(v.client.server_info())),
            Some(v) => (
                match v.client.connection_state() {
                    async_nats::connection::State::Connected => "connected",
                    async_nats::connection::State::Disconnected => "disconnected",
                    async_nats::connection::State::Pending => "connecting",
                },
                Some(v.client.server_info()),
            ),
        };
        WorkerStatus {
            state,
            servers: config.servers_for_display(),
            server_name: info.as_ref().map(|i| i.server_name.clone()),
            server_version: info.as_ref().map(|i| i.version.clone()),
            subject: config.subject.clone(),
            queue_group: config.queue_group.clone(),
            publish_subject: config.publish_subject.clone(),
            worker_id: self.shared.identity.id.clone(),
            wallet_address: self.shared.identity.wallet.clone(),
            max_concurrent_jobs: config.max_concurrent_jobs,
            started_at_ms: view.as_ref().map(|v| v.started_at_ms),
            uptime_ms: view
                .as_ref()
                .map(|v| v.started.elapsed().as_millis() as u64),
            stats: self.shared.stats.snapshot(),
        }
    }

    /// The worker's connection while it runs, so a publisher can share it.
    pub fn client(&self) -> Option<Client> {
        self.lock_view().as_ref().map(|v| v.client.clone())
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    fn lock_view(&self) -> std::sync::MutexGuard<'_, Option<RunningView>> {
        crate::sync::lock(&self.view)
    }
}

async fn receive_loop(
    shared: Arc<Shared>,
    client: Client,
    mut subscription: Subscriber,
    mut stop: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(shared.config.max_concurrent_jobs as usize));
    let jobs = TaskTracker::new();
    let cancel = CancellationToken::new();
    let ctx = JobContext {
        shared: shared.clone(),
        client: client.clone(),
        outbox: None,
    };
    let (outbox, publisher) = Outbox::start(client.clone(), {
        let shared = shared.clone();
        move |e| shared.reply_failed(&e)
    });

    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            message = subscription.next() => match message {
                Some(message) => ctx.dispatch(message, &permits, &jobs, &cancel, &outbox).await,
                None => {
                    shared.logger.log(Level::Warn, "[pier-connector] subscription ended");
                    break;
                }
            },
        }
    }

    // Messages the server sent before it saw the unsubscribe still arrive: refuse them.
    let drain_timeout = Duration::from_millis(shared.config.drain_timeout_ms);
    if subscription.drain().await.is_ok() {
        let refuse_rest = async {
            while let Some(message) = subscription.next().await {
                ctx.refuse_without_running(
                    message,
                    ErrorCode::ShuttingDown,
                    "the worker is shutting down",
                )
                .await;
            }
        };
        let _ = tokio::time::timeout(FINAL_FLUSH, refuse_rest).await;
    }
    drop(subscription);

    jobs.close();
    if tokio::time::timeout(drain_timeout, jobs.wait())
        .await
        .is_err()
    {
        shared.logger.log(
            Level::Warn,
            &format!(
                "[pier-connector] {} job(s) still running after {} ms: answering SHUTTING_DOWN",
                jobs.len(),
                drain_timeout.as_millis()
            ),
        );
        cancel.cancel();
        let _ = tokio::time::timeout(FINAL_FLUSH, jobs.wait()).await;
    }
    outbox.close();
    let _ = tokio::time::timeout(FINAL_FLUSH, publisher).await;
    let _ = tokio::time::timeout(FINAL_FLUSH, client.flush()).await;
    let _ = tokio::time::timeout(FINAL_FLUSH, client.drain()).await;
}

#[derive(Clone)]
pub(crate) struct JobContext {
    shared: Arc<Shared>,
    client: Client,
    /// Where replies go when they are not published at once (jobs in their own tasks, core
    /// delivery only: JetStream acks must follow their own publish).
    outbox: Option<Arc<Outbox>>,
}

impl JobContext {
    pub(crate) fn config(&self) -> &Config {
        &self.shared.config
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub(crate) async fn flush(&self) {
        let _ = tokio::time::timeout(FINAL_FLUSH, self.client.flush()).await;
    }

    async fn dispatch(
        &self,
        message: Message,
        permits: &Arc<Semaphore>,
        jobs: &TaskTracker,
        cancel: &CancellationToken,
        outbox: &Arc<Outbox>,
    ) {
        let received_at = Instant::now();
        let shared = &self.shared;
        shared.stats.received();
        let Some(reply) = message.reply.clone() else {
            shared.stats.record(Outcome::NoReply);
            shared.logger.log(
                Level::Warn,
                &format!(
                    "[pier-connector] message on {} has no reply subject: not run",
                    message.subject
                ),
            );
            return;
        };
        let job = match protocol::parse_job(&message.payload, shared.config.max_payload_bytes) {
            Ok(job) => job,
            Err(rejection) => {
                self.answer_error(Some(reply), rejection.id.as_deref(), rejection.error)
                    .await;
                return;
            }
        };
        if let Some(allowed) = &shared.config.allowed_senders {
            if !job.sender().is_some_and(|s| allowed.iter().any(|a| a == s)) {
                let error = JobError::new(
                    ErrorCode::Unauthorized,
                    "this worker does not take jobs from this sender",
                );
                self.answer_error(Some(reply), Some(&job.id), error).await;
                return;
            }
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let error = JobError::new(
                ErrorCode::Overloaded,
                format!(
                    "worker is running its limit of {} jobs; retry on another worker",
                    shared.config.max_concurrent_jobs
                ),
            );
            self.answer_error(Some(reply), Some(&job.id), error).await;
            return;
        };
        shared.stats.job_started();
        let cancel = cancel.clone();
        let inline = shared.handler.answers_at_once();
        // A job run inline replies at once, in the same burst as the receive loop's other work.
        let ctx = JobContext {
            outbox: (!inline).then(|| outbox.clone()),
            ..self.clone()
        };
        let run = async move { ctx.run(job, reply, received_at, permit, cancel).await };
        if !inline {
            jobs.spawn(run);
            return;
        }
        // Such a handler finishes on this first poll and costs no task of its own; a job that
        // waits for something after all is spawned.
        let mut run = Box::pin(run);
        if std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx)))
            .await
            .is_pending()
        {
            jobs.spawn(run);
        }
    }

    async fn run(
        &self,
        job: Job,
        reply: Subject,
        received_at: Instant,
        permit: OwnedSemaphorePermit,
        cancel: CancellationToken,
    ) {
        let (id, outcome) = self.execute(job, received_at, permit, cancel).await;
        self.answer(Some(reply), &id, received_at, outcome).await;
        self.shared.stats.job_finished();
    }

    /// Runs the handler under the job's deadline; frees the concurrency slot when it ends.
    pub(crate) async fn execute(
        &self,
        job: Job,
        received_at: Instant,
        permit: OwnedSemaphorePermit,
        cancel: CancellationToken,
    ) -> (String, crate::handler::HandlerResult) {
        let shared = &self.shared;
        let budget = shared.config.job_deadline(job.timeout_ms);
        let deadline = received_at + budget;
        let id = job.id.clone();
        let input = JobInput {
            sender: job.sender().map(str::to_string),
            id: job.id,
            task: job.task,
            system_prompt: job.system_prompt,
            timeout_ms: deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
            meta: job.meta,
        };
        if shared.logger.enabled(Level::Debug) {
            shared.logger.log(
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
            result = shared.handler.run(input) => result,
            _ = tokio::time::sleep_until(deadline.into()) => Err(JobError::new(
                ErrorCode::Timeout,
                format!("the job did not finish within its {} ms deadline", budget.as_millis()),
            )),
            _ = cancel.cancelled() => Err(JobError::new(
                ErrorCode::ShuttingDown,
                "the worker shut down before the job finished",
            )),
        };
        // The slot frees before the reply goes out, so a requester that sends its next job on
        // receiving this reply never finds the worker still full.
        drop(permit);
        if let Err(error) = &outcome {
            if matches!(error.code, ErrorCode::Timeout | ErrorCode::ShuttingDown) {
                shared.handler.cancel(&id, error.code);
            }
        }
        (id, outcome)
    }

    /// Sends the job's reply (when there is somewhere to send it) and counts the outcome.
    pub(crate) async fn answer(
        &self,
        reply: Option<Subject>,
        id: &str,
        received_at: Instant,
        outcome: crate::handler::HandlerResult,
    ) {
        let shared = &self.shared;
        let latency_ms = received_at.elapsed().as_millis() as u64;
        match outcome {
            Ok(result) => {
                if let Some(reply) = reply {
                    let bytes = protocol::encode_result(id, &result, latency_ms, &shared.identity);
                    self.send(reply, bytes, None).await;
                }
                shared.stats.record(Outcome::Completed);
                shared.stats.processed(received_at.elapsed());
                if shared.logger.enabled(Level::Debug) {
                    shared.logger.log(
                        Level::Debug,
                        &format!(
                            "[pier-connector] job {} completed in {latency_ms} ms",
                            loggable(id)
                        ),
                    );
                }
            }
            Err(error) => self.answer_error(reply, Some(id), error).await,
        }
    }

    async fn refuse_without_running(&self, message: Message, code: ErrorCode, why: &str) {
        self.shared.stats.received();
        let Some(reply) = message.reply else {
            self.shared.stats.record(Outcome::NoReply);
            return;
        };
        // The id is worth reading so the requester can match the refusal to its request.
        let id = protocol::parse_job(&message.payload, self.shared.config.max_payload_bytes)
            .ok()
            .map(|job| job.id);
        self.answer_error(Some(reply), id.as_deref(), JobError::new(code, why))
            .await;
    }

    pub(crate) async fn answer_error(
        &self,
        reply: Option<Subject>,
        id: Option<&str>,
        error: JobError,
    ) {
        if let Some(reply) = reply {
            let bytes = protocol::encode_error(id, &error, &self.shared.identity);
            let headers = discovery::error_headers(error.code, &error.message);
            self.send(reply, bytes, Some(headers)).await;
        }
        self.shared.stats.record_error(error.code, &error.message);
        let level = match error.code {
            ErrorCode::ExecutionFailed | ErrorCode::RuntimeUnavailable => Level::Error,
            _ => Level::Warn,
        };
        self.shared.logger.log(
            level,
            &format!(
                "[pier-connector] job {} answered {}: {}",
                id.map_or_else(|| "(no id)".to_string(), loggable),
                error.code,
                error.message
            ),
        );
    }

    async fn send(&self, reply: Subject, bytes: Vec<u8>, headers: Option<async_nats::HeaderMap>) {
        let reply = Reply {
            subject: reply,
            payload: bytes.into(),
            headers,
        };
        let reply = match &self.outbox {
            Some(outbox) => match outbox.push(reply) {
                Ok(()) => return,
                Err(closed) => closed,
            },
            None => reply,
        };
        if let Err(e) = outbox::publish(&self.client, reply).await {
            self.shared.reply_failed(&e);
        }
    }
}

/// A requester-chosen id as it may appear in a log line: one line, bounded.
fn loggable(id: &str) -> String {
    let mut line: String = crate::error::one_line(id).chars().take(80).collect();
    if line.is_empty() {
        line.push_str("(blank id)");
    }
    line
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::loggable;

    #[test]
    fn requester_ids_cannot_forge_log_lines() {
        assert_eq!(loggable("abc\n[pier-connector] fake line"), "abc");
        assert_eq!(loggable(&"x".repeat(500)).chars().count(), 80);
        assert_eq!(loggable("\u{1b}[31mred"), "[31mred");
        assert_eq!(loggable(" \n "), "(blank id)");
    }
}
