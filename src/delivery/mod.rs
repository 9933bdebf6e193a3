//! Delivery sources: where jobs come from. Each hands its messages to the one
//! [`Pipeline`](crate::pipeline::Pipeline) and learns from it how each job ended.

mod jetstream;
mod subscription;

use crate::config::{Config, Delivery};
use crate::error::PierError;
use crate::log::{Level, SharedLogger};
use crate::pipeline::Pipeline;
use crate::stats::Stats;
use crate::sync::lock;
use async_nats::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// While a source keeps failing, at most one log line this often.
const TROUBLE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Whether a source can take jobs, as the worker's status shows it: `recovering` while it
/// waits for its server side (JetStream) to answer again, with the reason as the last error.
/// One line when the trouble starts, at most one a minute while it lasts, one when it ends.
pub(crate) struct Health {
    stats: Arc<Stats>,
    logger: SharedLogger,
    recovering: AtomicBool,
    /// When the trouble started, and when it was last logged.
    trouble: Mutex<Option<(Instant, Instant)>>,
}

impl Health {
    pub(crate) fn new(stats: Arc<Stats>, logger: SharedLogger) -> Arc<Health> {
        Arc::new(Health {
            stats,
            logger,
            recovering: AtomicBool::new(false),
            trouble: Mutex::new(None),
        })
    }

    pub(crate) fn recovering(&self) -> bool {
        self.recovering.load(Ordering::Relaxed)
    }

    /// The source cannot take jobs for `why`; it keeps trying.
    pub(crate) fn trouble(&self, why: &str) {
        self.recovering.store(true, Ordering::Relaxed);
        self.stats.set_last_error(why);
        let now = Instant::now();
        let log = {
            let mut trouble = lock(&self.trouble);
            match &mut *trouble {
                None => {
                    *trouble = Some((now, now));
                    true
                }
                Some((_, logged)) if now.duration_since(*logged) >= TROUBLE_LOG_EVERY => {
                    *logged = now;
                    true
                }
                Some(_) => false,
            }
        };
        if log {
            self.logger.log(
                Level::Warn,
                &format!("[pier-connector] {why}; retrying until it answers"),
            );
        }
    }

    /// The source takes jobs again.
    pub(crate) fn healed(&self) {
        self.recovering.store(false, Ordering::Relaxed);
        if let Some((since, _)) = lock(&self.trouble).take() {
            self.logger.log(
                Level::Info,
                &format!(
                    "[pier-connector] JetStream answers again after {} ms",
                    since.elapsed().as_millis()
                ),
            );
        }
    }

    /// The server refused the worker's JetStream API requests by permission: it sends no
    /// answer to such a request, only an -ERR line, which the connection keeps as the last
    /// error. That text is the only place the refusal is told.
    pub(crate) fn jetstream_denied(&self) -> bool {
        self.stats.last_error().is_some_and(|e| {
            let e = e.to_ascii_lowercase();
            e.contains("permissions violation") && e.contains("$js.api")
        })
    }

    /// The server's refusal of a publish to `subject` (or to a subject it starts with) by
    /// permission, in its own words, when the connection recorded one: a request the server
    /// refuses gets no answer, only that -ERR line.
    pub(crate) fn denied_publish(&self, subject: &str) -> Option<String> {
        let error = self.stats.last_error()?;
        let lower = error.to_ascii_lowercase();
        (lower.contains("permissions violation") && lower.contains(&subject.to_ascii_lowercase()))
            .then_some(error)
    }

    /// The permission refusal when there is one, else `why`.
    pub(crate) fn denied_or(&self, why: String) -> String {
        match self.stats.last_error() {
            Some(denied) if self.jetstream_denied() => {
                format!("{denied} (grant the worker's user the JetStream API: see the README's permissions)")
            }
            _ => why,
        }
    }
}

/// The reason the patched async-nats gives a message whose header block it could not parse
/// (vendor/async-nats/PIER.md), as a one-line answer; `None` for a well-formed message.
fn malformed_headers(message: &async_nats::Message) -> Option<&str> {
    match (&message.status, message.description.as_deref()) {
        (None, Some(d)) if d.starts_with("malformed headers") => Some(d),
        _ => None,
    }
}

/// The source a worker's config selects.
pub(crate) enum Source {
    Core(subscription::QueueSubscription),
    JetStream(Box<jetstream::PullSource>),
}

impl Source {
    /// Subscribes (core) or binds the durable consumer (JetStream, waiting out its
    /// unavailability); returns once jobs can arrive.
    pub(crate) async fn open(
        client: &Client,
        config: &Arc<Config>,
        health: Arc<Health>,
    ) -> Result<Source, PierError> {
        Ok(match config.delivery {
            Delivery::Core => {
                Source::Core(subscription::QueueSubscription::open(client, config).await?)
            }
            Delivery::Jetstream => Source::JetStream(Box::new(
                jetstream::PullSource::open(client, config, health).await?,
            )),
        })
    }

    /// Feeds the pipeline until `stop`; returns once the source takes no more jobs.
    pub(crate) async fn run(self, pipeline: Arc<Pipeline>, stop: oneshot::Receiver<()>) {
        match self {
            Source::Core(source) => source.run(pipeline, stop).await,
            Source::JetStream(source) => source.run(pipeline, stop).await,
        }
    }
}
