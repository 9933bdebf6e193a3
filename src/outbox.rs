//! Replies of jobs that finished in their own tasks, published together.
//!
//! Such jobs finish one by one (each woken when its JS Promise settles), and async-nats writes
//! to the socket whenever it is woken with something to send: publishing each reply from its
//! own task costs one `writev` per reply. Here the replies queue up, and one task publishes
//! everything queued after letting the other woken jobs run, so a burst leaves in one write.

use crate::sync::lock;
use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub(crate) struct Reply {
    pub subject: Subject,
    pub payload: Bytes,
    pub headers: Option<HeaderMap>,
}

#[derive(Default)]
struct Queue {
    replies: Vec<Reply>,
    closed: bool,
}

#[derive(Default)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    wake: Notify,
}

impl Outbox {
    /// Starts the task that publishes queued replies with `client`; `failed` is told about
    /// each reply the client refused.
    pub(crate) fn start(
        client: Client,
        failed: impl Fn(async_nats::PublishError) + Send + 'static,
    ) -> (Arc<Outbox>, JoinHandle<()>) {
        let outbox = Arc::new(Outbox::default());
        let publisher = tokio::spawn(publish_queued(outbox.clone(), client, failed));
        (outbox, publisher)
    }

    /// Queues a reply; it is sent with the next batch. Returns the reply when the outbox is
    /// already closed, for the caller to send itself.
    pub(crate) fn push(&self, reply: Reply) -> Result<(), Reply> {
        let first = {
            let mut queue = lock(&self.queue);
            if queue.closed {
                return Err(reply);
            }
            queue.replies.push(reply);
            queue.replies.len() == 1
        };
        if first {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Publishes what is queued and ends the publishing task.
    pub(crate) fn close(&self) {
        lock(&self.queue).closed = true;
        self.wake.notify_one();
    }
}

async fn publish_queued(
    outbox: Arc<Outbox>,
    client: Client,
    failed: impl Fn(async_nats::PublishError),
) {
    loop {
        outbox.wake.notified().await;
        // Jobs woken in the same burst as the one that woke this task run first and queue
        // their replies too.
        tokio::task::yield_now().await;
        let (replies, closed) = {
            let mut queue = lock(&outbox.queue);
            (std::mem::take(&mut queue.replies), queue.closed)
        };
        for reply in replies {
            if let Err(e) = publish(&client, reply).await {
                failed(e);
            }
        }
        if closed {
            return;
        }
    }
}

pub(crate) async fn publish(client: &Client, reply: Reply) -> Result<(), async_nats::PublishError> {
    match reply.headers {
        Some(headers) => {
            client
                .publish_with_headers(reply.subject, headers, reply.payload)
                .await
        }
        None => client.publish(reply.subject, reply.payload).await,
    }
}
