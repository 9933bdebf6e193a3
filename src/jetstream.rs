//! `delivery: "jetstream"`: at-least-once jobs from a durable pull consumer on a work-queue
//! stream. The pull budget is the free concurrency slots; a running job sends `in_progress`
//! heartbeats; a result is published before the ack; a failed turn is retried with backoff up
//! to `maxDeliver`; unreadable jobs are terminated. Requests name their reply subject in the
//! `Pier-Reply-To` header and are deduplicated by `Nats-Msg-Id` = job id.

use crate::config::Config;
use crate::error::{ErrorCode, PierError};
use crate::protocol;
use crate::worker::JobContext;
use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use async_nats::{Client, HeaderMap, Subject};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const REPLY_HEADER: &str = "Pier-Reply-To";

/// The stream (created if missing and permitted) and the durable consumer the workers share.
pub async fn consumer(client: &Client, config: &Config) -> Result<PullConsumer, PierError> {
    let failed = |what: &str, e: String| PierError::Request(format!("JetStream {what}: {e}"));
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
        .map_err(|e| failed("stream", e.to_string()))?;
    stream
        .get_or_create_consumer(
            &config.consumer_name,
            jetstream::consumer::pull::Config {
                durable_name: Some(config.consumer_name.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_millis(config.ack_wait_ms),
                max_deliver: config.max_deliver,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| failed("consumer", e.to_string()))
}

pub(crate) async fn receive_loop(
    ctx: JobContext,
    consumer: PullConsumer,
    mut stop: oneshot::Receiver<()>,
) {
    let config = ctx.config().clone();
    let permits = Arc::new(Semaphore::new(config.max_concurrent_jobs as usize));
    let jobs = TaskTracker::new();
    let cancel = CancellationToken::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = &mut stop => break,
            permit = permits.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
        };
        let budget = permits.available_permits() + 1;
        let batch = tokio::select! {
            biased;
            _ = &mut stop => break,
            batch = consumer.fetch().max_messages(budget).expires(Duration::from_millis(500)).messages() => batch,
        };
        let Ok(mut batch) = batch else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut first = Some(permit);
        while let Some(Ok(message)) = batch.next().await {
            let permit = match first.take() {
                Some(p) => p,
                None => match permits.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        continue;
                    }
                },
            };
            let (ctx, cancel) = (ctx.clone(), cancel.clone());
            jobs.spawn(async move { ctx.run_jetstream(message, permit, cancel).await });
        }
    }
    jobs.close();
    let drain = Duration::from_millis(config.drain_timeout_ms);
    if tokio::time::timeout(drain, jobs.wait()).await.is_err() {
        // Jobs still running go back to the stream for another worker.
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), jobs.wait()).await;
    }
}

impl JobContext {
    async fn run_jetstream(
        &self,
        message: jetstream::Message,
        permit: tokio::sync::OwnedSemaphorePermit,
        cancel: CancellationToken,
    ) {
        let received_at = Instant::now();
        let config = self.config().clone();
        let stats = self.stats();
        stats.received();
        let header_reply = message
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLY_HEADER))
            .map(|v| Subject::from(v.as_str()));
        let reply_for = |id: &str| {
            header_reply.clone().or_else(|| {
                config
                    .result_subject
                    .as_ref()
                    .map(|p| Subject::from(format!("{p}.{id}")))
            })
        };
        let job = match protocol::parse_job(&message.payload, config.max_payload_bytes) {
            Ok(job) => job,
            Err(rejection) => {
                let reply = rejection
                    .id
                    .as_deref()
                    .and_then(reply_for)
                    .or(header_reply.clone());
                self.answer_error(reply, rejection.id.as_deref(), rejection.error)
                    .await;
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let reply = reply_for(&job.id);
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        stats.job_started();
        let id = job.id.clone();
        let heartbeat = {
            let message = message.clone();
            let every = Duration::from_millis((config.ack_wait_ms / 2).max(100));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            })
        };
        let (_, outcome) = self.execute(job, received_at, permit, cancel).await;
        heartbeat.abort();
        match outcome {
            Ok(result) => {
                self.answer(reply, &id, received_at, Ok(result)).await;
                self.flush().await;
                let _ = message.double_ack().await;
            }
            Err(error) if error.code == ErrorCode::ShuttingDown => {
                stats.record_error(error.code, &error.message);
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
            Err(error)
                if matches!(
                    error.code,
                    ErrorCode::ExecutionFailed | ErrorCode::RuntimeUnavailable
                ) && delivered < config.max_deliver =>
            {
                stats.record_error(error.code, &error.message);
                let backoff = Duration::from_millis(250 * (1u64 << delivered.clamp(1, 8)));
                let _ = message.ack_with(AckKind::Nak(Some(backoff))).await;
            }
            Err(error) => {
                self.answer(reply, &id, received_at, Err(error)).await;
                self.flush().await;
                let _ = message.ack_with(AckKind::Term).await;
            }
        }
        stats.job_finished();
    }
}

/// Publishes a request into the stream (deduplicated by job id) and waits for its reply.
pub async fn publish_and_wait(
    client: &Client,
    subject: &str,
    id: &str,
    payload: Vec<u8>,
    wait: Duration,
) -> Result<async_nats::Message, PierError> {
    let failed = |e: String| PierError::Request(format!("JetStream publish failed: {e}"));
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    headers.insert(REPLY_HEADER, inbox.as_str());
    jetstream::new(client.clone())
        .publish_with_headers(subject.to_string(), headers, payload.into())
        .await
        .map_err(|e| failed(e.to_string()))?
        .await
        .map_err(|e| failed(e.to_string()))?;
    match tokio::time::timeout(wait, replies.next()).await {
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => Err(failed("connection closed".into())),
        Err(_) => Err(PierError::Timeout {
            subject: subject.to_string(),
            timeout_ms: wait.as_millis() as u64,
        }),
    }
}
