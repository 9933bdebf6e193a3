//! Progress and cancellation (protocol v1.1): what a job whose requester asked for progress
//! (`Pier-Progress-To`) sends while it runs, and the one subscription where cancels arrive.
//!
//! Each such job gets a [`JobProgress`] at admission: a task of its own publishes `accepted`
//! (with the cancel subject and a fresh token), then `working` whenever nothing else was sent
//! for `progressIntervalMs`, and `partial` pieces of the answer as the handler produces them,
//! batched ([`PARTIAL_BATCH_CHARS`] or [`PARTIAL_BATCH_WAIT`]). The job never waits for it:
//! the handler's pieces go into an unbounded channel, and publishing is the task's alone. A
//! NATS publish waits for no subscriber, so a slow or absent one costs the job nothing. When
//! the job ends, [`JobProgress::finish`] sends what is left and stops the task before the
//! answer is sent: nothing follows the answer.
//!
//! [`Progress::listen`] subscribes to the worker's cancel subject. A `task_cancel` whose token
//! and id are those of a job in flight cancels it; anything else is counted
//! (`cancelsIgnored`) and never answered.

use crate::protocol::{self, ProgressState, WorkerIdentity};
use crate::stats::Stats;
use crate::sync::lock;
use async_nats::{Client, Subject};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A partial is sent once this many characters are waiting...
pub const PARTIAL_BATCH_CHARS: usize = 100;
/// ...or once the first of them has waited this long.
pub const PARTIAL_BATCH_WAIT: Duration = Duration::from_millis(500);
/// At most this many bytes of text in one `partial` (a large piece goes as several).
const PARTIAL_MAX_BYTES: usize = 32 * 1024;
/// How long the end of a job waits for its progress task to hand over what is left. Handing a
/// message to the connection takes microseconds; this bounds it when the connection's buffer
/// is full (a long outage), so the answer is never held up by progress.
const FINISH_WAIT: Duration = Duration::from_millis(250);

/// The worker's side of progress: where cancels arrive, and the jobs they may cancel.
pub(crate) struct Progress {
    client: Client,
    /// The subject this worker takes cancels on: an inbox of its own (`_INBOX.…`), which the
    /// README's worker permissions already let it subscribe to.
    cancel_subject: String,
    interval: Duration,
    identity: WorkerIdentity,
    stats: Arc<Stats>,
    /// Jobs in flight that may be cancelled, by their token: the job's id and what cancels it.
    cancellable: Mutex<HashMap<String, (String, CancellationToken)>>,
}

impl Progress {
    pub(crate) fn new(
        client: Client,
        interval: Duration,
        identity: WorkerIdentity,
        stats: Arc<Stats>,
    ) -> Arc<Progress> {
        Arc::new(Progress {
            cancel_subject: client.new_inbox(),
            client,
            interval,
            identity,
            stats,
            cancellable: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn cancel_subject(&self) -> &str {
        &self.cancel_subject
    }

    /// Subscribes to the cancel subject and handles cancels until `stop`.
    pub(crate) async fn listen(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> Result<JoinHandle<()>, async_nats::SubscribeError> {
        let mut cancels = self.client.subscribe(self.cancel_subject.clone()).await?;
        let progress = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = cancels.next() => message,
                    _ = stop.cancelled() => None,
                };
                let Some(message) = message else { break };
                if !progress.cancel(&message.payload) {
                    progress.stats.cancel_ignored();
                }
            }
            let _ = cancels.unsubscribe().await;
        }))
    }

    /// Cancels the job a `task_cancel` names, if its token and id are those of a job in
    /// flight; false when it cancels nothing.
    fn cancel(&self, payload: &[u8]) -> bool {
        let Some((id, token)) = protocol::parse_cancel(payload) else {
            return false;
        };
        let cancellable = lock(&self.cancellable);
        match cancellable.get(&token) {
            Some((job_id, cancel)) if *job_id == id && !cancel.is_cancelled() => {
                cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Starts the progress of job `id`, admitted at `received_at`, for a requester listening
    /// on `to`: sends `accepted` at once (from its own task), and makes the job cancellable.
    pub(crate) fn start_job(
        self: &Arc<Self>,
        id: &str,
        to: Subject,
        received_at: Instant,
    ) -> JobProgress {
        let token = protocol::new_token();
        let cancelled = CancellationToken::new();
        lock(&self.cancellable).insert(token.clone(), (id.to_string(), cancelled.clone()));
        let (events, receiver) = mpsc::unbounded_channel();
        let sender = Sender {
            client: self.client.clone(),
            to,
            id: id.to_string(),
            seq: 0,
            received_at,
            identity: self.identity.clone(),
            stats: self.stats.clone(),
        };
        let task = tokio::spawn(sender.run(
            receiver,
            self.interval,
            self.cancel_subject.clone(),
            token.clone(),
        ));
        JobProgress {
            events: Partials(Some(events)),
            task,
            cancelled,
            token,
            progress: self.clone(),
        }
    }
}

/// One job's progress, from admission to its answer.
pub(crate) struct JobProgress {
    events: Partials,
    task: JoinHandle<()>,
    cancelled: CancellationToken,
    token: String,
    progress: Arc<Progress>,
}

impl JobProgress {
    /// Where the handler sends pieces of its answer.
    pub(crate) fn partials(&self) -> Partials {
        self.events.clone()
    }

    /// Cancelled when the job's requester cancels it.
    pub(crate) fn cancelled(&self) -> CancellationToken {
        self.cancelled.clone()
    }

    /// The job is answered next: it can no longer be cancelled (a later cancel is ignored),
    /// and its progress ends. `result` is its answer's text when it has one: partials already
    /// sent that are the start of it are completed with the rest, so that all of them in
    /// order are the result. Returns once nothing more will be sent.
    pub(crate) async fn finish(self, result: Option<&str>) {
        lock(&self.progress.cancellable).remove(&self.token);
        if let Some(events) = &self.events.0 {
            let _ = events.send(Event::Finish(result.map(str::to_string)));
        }
        drop(self.events);
        let mut task = self.task;
        if tokio::time::timeout(FINISH_WAIT, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// The handler's way to send pieces of a job's answer (a no-op for a job without progress).
/// Cheap to clone; never waits.
#[derive(Clone, Default)]
pub struct Partials(Option<mpsc::UnboundedSender<Event>>);

impl Partials {
    /// No requester listens: pieces go nowhere.
    pub fn none() -> Partials {
        Partials(None)
    }

    /// Whether the job's requester asked for progress (a handler may skip streaming when not).
    pub fn wanted(&self) -> bool {
        self.0.as_ref().is_some_and(|s| !s.is_closed())
    }

    /// Sends the next piece of the answer, in order; all pieces in order should be the
    /// result. Ignored once the job has ended.
    pub fn send(&self, text: impl Into<String>) {
        if let Some(sender) = &self.0 {
            let text = text.into();
            if !text.is_empty() {
                let _ = sender.send(Event::Partial(text));
            }
        }
    }
}

impl std::fmt::Debug for Partials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Partials(wanted)"
        } else {
            "Partials(none)"
        })
    }
}

pub(crate) enum Event {
    Partial(String),
    /// The job ends, with its result's text when it has one.
    Finish(Option<String>),
}

/// The task that publishes one job's progress.
struct Sender {
    client: Client,
    to: Subject,
    id: String,
    seq: u64,
    received_at: Instant,
    identity: WorkerIdentity,
    stats: Arc<Stats>,
}

impl Sender {
    async fn publish(&mut self, state: ProgressState<'_>) {
        let elapsed_ms = self.received_at.elapsed().as_millis() as u64;
        let bytes =
            protocol::encode_progress(&self.id, self.seq, state, elapsed_ms, &self.identity);
        self.seq += 1;
        // Fire and forget: nobody is answered about a progress message that could not be sent.
        if self
            .client
            .publish(self.to.clone(), bytes.into())
            .await
            .is_ok()
        {
            self.stats.progress_sent();
        }
    }

    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        interval: Duration,
        cancel_subject: String,
        token: String,
    ) {
        self.publish(ProgressState::Accepted {
            interval_ms: interval.as_millis() as u64,
            cancel_subject: &cancel_subject,
            token: &token,
        })
        .await;
        let mut last_sent = Instant::now();
        // Text waiting to be sent, since when; and all the text sent so far.
        let mut pending = String::new();
        let mut pending_since: Option<Instant> = None;
        let mut sent = String::new();
        loop {
            let flush_at = pending_since.map(|since| since + PARTIAL_BATCH_WAIT);
            let keep_alive_at = last_sent + interval;
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Partial(text)) => {
                        pending.push_str(&text);
                        pending_since.get_or_insert_with(Instant::now);
                        if pending.chars().count() >= PARTIAL_BATCH_CHARS {
                            self.send_text(&mut pending, &mut sent).await;
                            pending_since = None;
                            last_sent = Instant::now();
                        }
                    }
                    Some(Event::Finish(result)) => {
                        self.send_text(&mut pending, &mut sent).await;
                        // Partials are exactly the result: what they lack of it goes last.
                        if let Some(rest) = result
                            .as_deref()
                            .filter(|_| !sent.is_empty())
                            .and_then(|result| result.strip_prefix(sent.as_str()))
                        {
                            let mut rest = rest.to_string();
                            self.send_text(&mut rest, &mut sent).await;
                        }
                        return;
                    }
                    None => return,
                },
                _ = sleep_until_some(flush_at) => {
                    self.send_text(&mut pending, &mut sent).await;
                    pending_since = None;
                    last_sent = Instant::now();
                }
                _ = tokio::time::sleep_until(keep_alive_at.into()) => {
                    self.publish(ProgressState::Working).await;
                    last_sent = Instant::now();
                }
            }
        }
    }

    /// Sends `pending` as partials (several when it is large), and adds it to `sent`.
    async fn send_text(&mut self, pending: &mut String, sent: &mut String) {
        let mut rest = std::mem::take(pending);
        while !rest.is_empty() {
            let mut cut = rest.len().min(PARTIAL_MAX_BYTES);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let tail = rest.split_off(cut);
            self.publish(ProgressState::Partial(&rest)).await;
            sent.push_str(&rest);
            rest = tail;
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
