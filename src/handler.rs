//! The boundary between the worker and whatever runs a job: an OpenClaw agent turn (through
//! the binding), a command, or a test double.

use crate::error::{ErrorCode, JobError};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{Map, Value};

/// What a handler gets for one job.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInput {
    /// The request's `id`: the requester's choice, so two jobs in flight may share it.
    pub id: String,
    /// The worker's own name for this run of the job: unique among the jobs in flight, chosen
    /// by no requester. What [`JobHandler::cancel`] names the job by.
    pub run_key: String,
    pub task: String,
    pub system_prompt: Option<String>,
    /// Time left for this job when the handler is called; the worker answers TIMEOUT after it.
    pub timeout_ms: u64,
    pub meta: Map<String, Value>,
    /// `meta.sender`: a display name the requester chose.
    pub sender: Option<String>,
    /// The user public key whose `Pier-Sender` signature on this job verified: who sent it.
    pub sender_key: Option<String>,
    /// Where pieces of the answer go as the handler produces them, when the requester asked
    /// for progress (`partials.wanted()`); all pieces in order should be the result.
    #[serde(skip)]
    pub partials: crate::progress::Partials,
}

// Where usage is defined (a module of its own: stats and the ledger count it without
// depending on the handler boundary, which depends on progress and so on stats).
pub use crate::usage::Usage;

/// What a handler hands back for one job: the answer, and what the turn used when the
/// handler measures it (`None`: nothing measured, e.g. the echo handler or a command).
/// A failed turn may have spent tokens too, so usage goes with errors as well.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerResult {
    pub answer: Result<String, JobError>,
    pub usage: Option<Usage>,
}

impl HandlerResult {
    pub fn answered(text: impl Into<String>) -> HandlerResult {
        HandlerResult {
            answer: Ok(text.into()),
            usage: None,
        }
    }

    pub fn failed(error: JobError) -> HandlerResult {
        HandlerResult {
            answer: Err(error),
            usage: None,
        }
    }

    pub fn with_usage(mut self, usage: Option<Usage>) -> HandlerResult {
        self.usage = usage;
        self
    }
}

impl From<Result<String, JobError>> for HandlerResult {
    fn from(answer: Result<String, JobError>) -> HandlerResult {
        HandlerResult {
            answer,
            usage: None,
        }
    }
}

pub trait JobHandler: Send + Sync + 'static {
    /// Runs one job. The future is dropped when the job's deadline passes or the worker shuts
    /// down, so it must not rely on running to completion.
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult>;

    /// True for a handler whose `run` is ready on its first poll (no I/O, no other thread):
    /// the worker then runs the job inline instead of spawning a task for it. A handler that
    /// waits for another thread is better off spawned, so that its set-up runs in parallel with
    /// the worker's receive loop.
    fn ready_on_first_poll(&self) -> bool {
        false
    }

    /// Told when the worker gave up on a job (TIMEOUT, SHUTTING_DOWN, or CANCELLED by its
    /// requester), so the handler can stop the work it started. `run_key` is the job's
    /// [`JobInput::run_key`] (a job's id, `job_id`, is the requester's choice and names no job
    /// alone).
    fn cancel(&self, _run_key: &str, _job_id: &str, _reason: ErrorCode) {}
}

/// Codes a handler may choose itself (TIMEOUT for a turn its host cut off at the deadline;
/// SHUTTING_DOWN when its host refused to start the turn because it is stopping, so the job
/// never reached the model); the worker owns the others.
pub fn handler_error_code(code: Option<&str>) -> ErrorCode {
    match code.and_then(ErrorCode::parse) {
        Some(
            c @ (ErrorCode::RuntimeUnavailable
            | ErrorCode::ExecutionFailed
            | ErrorCode::Unauthorized
            | ErrorCode::InvalidRequest
            | ErrorCode::Timeout
            | ErrorCode::ShuttingDown),
        ) => c,
        _ => ErrorCode::ExecutionFailed,
    }
}

/// Answers every job with its own task: the `--echo` worker and the benchmarks' instant handler.
pub struct EchoHandler;

impl JobHandler for EchoHandler {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        Box::pin(std::future::ready(HandlerResult::answered(job.task)))
    }

    fn ready_on_first_poll(&self) -> bool {
        true
    }
}
