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
