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
    pub id: String,
    pub task: String,
    pub system_prompt: Option<String>,
    /// Time left for this job when the handler is called; the worker answers TIMEOUT after it.
    pub timeout_ms: u64,
    pub meta: Map<String, Value>,
    /// `meta.sender`: a display name the requester chose.
    pub sender: Option<String>,
    /// The user public key whose `Pier-Sender` signature on this job verified: who sent it.
    pub sender_key: Option<String>,
}

pub type HandlerResult = Result<String, JobError>;

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

    /// Told when the worker gave up on a job (TIMEOUT or SHUTTING_DOWN), so the handler can
    /// stop the work it started.
    fn cancel(&self, _job_id: &str, _reason: ErrorCode) {}
}

/// Codes a handler may choose itself (TIMEOUT for a turn its host cut off at the deadline);
/// the worker owns the others.
pub fn handler_error_code(code: Option<&str>) -> ErrorCode {
    match code.and_then(ErrorCode::parse) {
        Some(
            c @ (ErrorCode::RuntimeUnavailable
            | ErrorCode::ExecutionFailed
            | ErrorCode::Unauthorized
            | ErrorCode::InvalidRequest
            | ErrorCode::Timeout),
        ) => c,
        _ => ErrorCode::ExecutionFailed,
    }
}

/// Answers every job with its own task: the `--echo` worker and the benchmarks' instant handler.
pub struct EchoHandler;

impl JobHandler for EchoHandler {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        Box::pin(std::future::ready(Ok(job.task)))
    }

    fn ready_on_first_poll(&self) -> bool {
        true
    }
}
