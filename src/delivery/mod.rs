//! Delivery sources: where jobs come from. Each hands its messages to the one
//! [`Pipeline`](crate::pipeline::Pipeline) and learns from it how each job ended.

mod jetstream;
mod subscription;

use crate::config::{Config, Delivery};
use crate::error::PierError;
use crate::pipeline::Pipeline;
use async_nats::Client;
use std::sync::Arc;
use tokio::sync::oneshot;

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
    /// Subscribes (core) or binds the durable consumer (JetStream); returns once jobs can
    /// arrive.
    pub(crate) async fn open(client: &Client, config: &Config) -> Result<Source, PierError> {
        Ok(match config.delivery {
            Delivery::Core => {
                Source::Core(subscription::QueueSubscription::open(client, config).await?)
            }
            Delivery::Jetstream => {
                Source::JetStream(Box::new(jetstream::PullSource::open(client, config).await?))
            }
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
