//! `delivery: "core"`: jobs are NATS requests on `subject`, shared by the queue group
//! `queueGroup`. A job arriving while every slot is taken is answered OVERLOADED at once, so
//! the requester can retry on another worker.

use crate::config::Config;
use crate::connection;
use crate::error::{PierError, RequestOp};
use crate::log::Level;
use crate::outbox::Reply;
use crate::pipeline::{Inbound, Pipeline, ReplyTarget, Settle, FINAL_FLUSH};
use crate::protocol::REPLY_HEADER;
use crate::subject;
use async_nats::{Client, HeaderMap, Message, Subscriber};
use futures_util::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

pub(crate) struct QueueSubscription {
    subscriber: Subscriber,
}

impl QueueSubscription {
    /// Subscribes, and returns once the server has registered the subscription.
    pub(crate) async fn open(client: &Client, config: &Config) -> Result<Self, PierError> {
        let subscriber = client
            .queue_subscribe(config.subject.clone(), config.queue_group.clone())
            .await
            .map_err(|e| PierError::request(RequestOp::Subscribe, e))?;
        connection::round_trip(client, Duration::from_millis(config.connect_timeout_ms)).await?;
        Ok(QueueSubscription { subscriber })
    }

    /// Admits every message until `stop`, then unsubscribes and answers SHUTTING_DOWN to the
    /// messages the server had already sent.
    pub(crate) async fn run(mut self, pipeline: Arc<Pipeline>, mut stop: oneshot::Receiver<()>) {
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                message = self.subscriber.next() => match message {
                    Some(message) => pipeline.admit(CoreMessage(message), None).await,
                    None => {
                        pipeline.logger().log(Level::Warn, "[pier-connector] subscription ended");
                        break;
                    }
                },
            }
        }
        if self.subscriber.drain().await.is_ok() {
            let refuse_rest = async {
                while let Some(message) = self.subscriber.next().await {
                    pipeline.refuse_draining(CoreMessage(message)).await;
                }
            };
            let _ = tokio::time::timeout(FINAL_FLUSH, refuse_rest).await;
        }
    }
}

/// A core NATS request: answered on its reply subject.
struct CoreMessage(Message);

impl Inbound for CoreMessage {
    fn payload(&self) -> &[u8] {
        &self.0.payload
    }

    fn headers(&self) -> Option<&HeaderMap> {
        self.0.headers.as_ref()
    }

    fn subject(&self) -> &str {
        &self.0.subject
    }

    /// A relay keeps the requester's reply in `Pier-Reply-To`; a requester that published
    /// here itself signed its NATS reply subject.
    fn signed_reply(&self) -> &str {
        match self.0.headers.as_ref().and_then(|h| h.get(REPLY_HEADER)) {
            Some(relayed) => relayed.as_str(),
            None => self.0.reply.as_deref().unwrap_or_default(),
        }
    }

    fn defect(&self) -> Option<&str> {
        super::malformed_headers(&self.0)
    }

    fn reply_target(&self, _job_id: Option<&str>) -> ReplyTarget {
        match &self.0.reply {
            Some(reply) if subject::is_publish_subject(reply) => {
                ReplyTarget::Subject(reply.clone())
            }
            Some(_) => ReplyTarget::Nowhere {
                why: "its reply subject is not a subject one can publish to".into(),
            },
            None => ReplyTarget::Nowhere {
                why: format!(
                    "the message on {} has no reply subject",
                    crate::log::loggable(&self.0.subject)
                ),
            },
        }
    }

    /// Core NATS confirms nothing: the pipeline sends the reply (at most once, like every
    /// core message).
    fn send_reply(
        &self,
        reply: Reply,
        _answer_key: Option<&str>,
    ) -> Result<impl Future<Output = Result<(), String>> + Send + 'static, Reply> {
        Err::<std::future::Ready<_>, _>(reply)
    }

    async fn settle(self, _how: Settle) {}
}
