//! `delivery: "jetstream"`: at-least-once jobs from a durable pull consumer on a work-queue
//! stream. The pull budget is the free concurrency slots; a running job sends `in_progress`
//! heartbeats; a result is published and flushed before the ack; a failed turn is retried
//! with backoff up to `maxDeliver`; a job that was answered with a final error is terminated,
//! and one whose answer could not be sent is given back (nak), never acked as done.

use crate::config::Config;
use crate::error::{ErrorCode, JobError, PierError, RequestOp};
use crate::pipeline::{Inbound, Pipeline, ReplyTarget, Settle};
use crate::protocol::REPLY_HEADER;
use crate::subject;
use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use async_nats::{Client, HeaderMap, Subject};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) struct PullSource {
    consumer: PullConsumer,
}

impl PullSource {
    /// The stream (created if missing and permitted) and the durable consumer the workers
    /// share. A consumer that exists with other `ackWaitMs` / `maxDeliver` is updated to the
    /// configured values, so a changed setting is never silently ignored.
    pub(crate) async fn open(client: &Client, config: &Config) -> Result<Self, PierError> {
        let js = jetstream::new(client.clone());
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: config.stream_name.clone(),
                subjects: vec![config.subject.clone()],
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                storage: jetstream::stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| PierError::request(RequestOp::JetStreamStream, e))?;
        let wanted = jetstream::consumer::pull::Config {
            durable_name: Some(config.consumer_name.clone()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_millis(config.ack_wait_ms),
            max_deliver: config.max_deliver,
            ..Default::default()
        };
        let mut consumer: PullConsumer = stream
            .get_or_create_consumer(&config.consumer_name, wanted.clone())
            .await
            .map_err(|e| PierError::request(RequestOp::JetStreamConsumer, e))?;
        let current = &consumer.cached_info().config;
        if current.ack_wait != wanted.ack_wait || current.max_deliver != wanted.max_deliver {
            consumer = stream
                .update_consumer(wanted)
                .await
                .map_err(|e| PierError::request(RequestOp::JetStreamConsumerUpdate, e))?;
        }
        Ok(PullSource { consumer })
    }

    /// Pulls as many jobs as there are free slots and admits each, until `stop`. Jobs still
    /// running at shutdown are given back to the stream by the pipeline.
    pub(crate) async fn run(self, pipeline: Arc<Pipeline>, mut stop: oneshot::Receiver<()>) {
        let slots = pipeline.slots().clone();
        loop {
            let slot = tokio::select! {
                biased;
                _ = &mut stop => break,
                slot = slots.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => break },
            };
            let budget = slots.available_permits() + 1;
            let batch = tokio::select! {
                biased;
                _ = &mut stop => break,
                batch = self.consumer.fetch().max_messages(budget).expires(Duration::from_millis(500)).messages() => batch,
            };
            let Ok(mut batch) = batch else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut first = Some(slot);
            while let Some(Ok(message)) = batch.next().await {
                let inbound = StreamMessage {
                    message,
                    pipeline: pipeline.clone(),
                };
                // Without a slot the pipeline gives the message back (`when_full`).
                pipeline.admit(inbound, first.take()).await;
            }
        }
    }
}

struct StreamMessage {
    message: jetstream::Message,
    /// For the config and the connection's flush before the ack.
    pipeline: Arc<Pipeline>,
}

impl StreamMessage {
    fn delivered(&self) -> i64 {
        self.message.info().map(|i| i.delivered).unwrap_or(1)
    }
}

impl Inbound for StreamMessage {
    // The ack must follow the job's own publish.
    const BATCHED_REPLIES: bool = false;

    fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    fn headers(&self) -> Option<&HeaderMap> {
        self.message.headers.as_ref()
    }

    fn subject(&self) -> &str {
        &self.message.subject
    }

    /// `Pier-Reply-To`, else empty. The message's NATS reply is the consumer's `$JS.ACK…`
    /// subject, which no requester saw; the stream keeps no reply subject of the publish (that
    /// one only received the PubAck), so a requester signs its `Pier-Reply-To` or nothing.
    fn signed_reply(&self) -> &str {
        self.message
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLY_HEADER))
            .map_or("", |v| v.as_str())
    }

    /// The age of a signature is taken from when the stream stored the job, so a job that
    /// waited in the stream is not stale; the sequence tells a redelivery from a replay.
    fn stored(&self) -> Option<(i64, u64)> {
        let info = self.message.info().ok()?;
        let ms = info.published.unix_timestamp_nanos() / 1_000_000;
        Some((i64::try_from(ms).ok()?, info.stream_sequence))
    }

    /// The `Pier-Reply-To` header when it is a subject one can publish to; else
    /// `<resultSubject>.<job id as a subject token>`.
    fn reply_target(&self, job_id: Option<&str>) -> ReplyTarget {
        let header = self
            .message
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLY_HEADER))
            .map(|v| v.as_str());
        if let Some(subject) = header.filter(|s| subject::is_publish_subject(s)) {
            return ReplyTarget::Subject(Subject::from(subject));
        }
        let header_note = if header.is_some() {
            "its Pier-Reply-To header is not a subject one can publish to"
        } else {
            "it has no Pier-Reply-To header"
        };
        match (&self.pipeline.config().result_subject, job_id) {
            (Some(prefix), Some(id)) => ReplyTarget::Subject(Subject::from(format!(
                "{prefix}.{}",
                subject::subject_token(id)
            ))),
            (Some(_), None) => ReplyTarget::Nowhere {
                why: format!("{header_note} and its id could not be read"),
            },
            (None, _) => ReplyTarget::Nowhere {
                why: format!("{header_note} and no resultSubject is configured"),
            },
        }
    }

    fn defect(&self) -> Option<&str> {
        super::malformed_headers(&self.message)
    }

    fn retry(&self, error: &JobError) -> Option<Settle> {
        match error.code {
            // Another worker takes it.
            ErrorCode::ShuttingDown => Some(Settle::Retry { delay: None }),
            ErrorCode::ExecutionFailed | ErrorCode::RuntimeUnavailable => {
                let delivered = self.delivered();
                (delivered < self.pipeline.config().max_deliver).then(|| Settle::Retry {
                    delay: Some(Duration::from_millis(250 * (1u64 << delivered.clamp(1, 8)))),
                })
            }
            _ => None,
        }
    }

    fn when_full(&self) -> Option<Settle> {
        Some(Settle::Retry { delay: None })
    }

    fn keep_alive(&self) -> Option<JoinHandle<()>> {
        let message = self.message.clone();
        let every = Duration::from_millis((self.pipeline.config().ack_wait_ms / 2).max(100));
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }))
    }

    async fn settle(self, how: Settle) {
        let ack = match how {
            Settle::Answered { ok } => {
                // The answer must have reached the server before the job is taken off the
                // stream; if that cannot be confirmed, the job comes back.
                match (self.pipeline.flush().await, ok) {
                    (false, _) => AckKind::Nak(None),
                    (true, true) => return drop(self.message.double_ack().await),
                    (true, false) => AckKind::Term,
                }
            }
            Settle::Unanswerable => AckKind::Term,
            Settle::Undelivered => AckKind::Nak(Some(Duration::from_secs(1))),
            Settle::Retry { delay } => AckKind::Nak(delay),
        };
        let _ = self.message.ack_with(ack).await;
    }
}
