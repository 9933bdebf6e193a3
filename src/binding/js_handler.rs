//! The JS job handler, called in batches: jobs that arrive while the event loop is busy are
//! handed over in one thread-safe call as one JSON text, which the JS side parses (one string
//! crossing instead of an N-API call per property), and a small JS driver reports each job's
//! outcome through one native `report` function with plain values, so a job costs no N-API
//! function or reference of its own. napi's typed `ThreadsafeFunction` awaited per job
//! (`call_async`) was measured against this: ~7% fewer jobs a second and ~10% more CPU per job
//! at N = 256, and a job's `meta` key `__proto__` set its prototype (bench/RESULTS.md).

use super::Job;
use crate::error::{one_line, ErrorCode, JobError};
use crate::handler::{handler_error_code, HandlerResult, JobHandler, JobInput, Usage};
use crate::progress::Partials;
use crate::sync::lock;
use futures_util::future::BoxFuture;
use napi::bindgen_prelude::{FnArgs, Function, FunctionCallContext, Unknown};
use napi::threadsafe_function::{
    ThreadsafeFunction, ThreadsafeFunctionCallMode, UnknownReturnValue,
};
use napi::Env;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Calls `handler` for each job of a batch and reports each outcome to
/// `report(seq, kind, a, b, usage)` (see `JsOutcome`) as soon as it is known; its own file so it
/// is linted as JavaScript.
const DRIVER: &str = include_str!("driver.js");

/// One job's outcome as the driver reports it: `(seq, 0, result)`, `(seq, 1, code, message)`
/// for a returned `{ error }`, `(seq, 2)` for any other value, `(seq, 3, message)` for a throw
/// or rejection (each padded with nulls to four arguments); the fifth is the turn's `usage`
/// as JSON when the handler returned one.
struct JsOutcome(u32, u32, Option<String>, Option<String>, Option<String>);

impl JsOutcome {
    fn into_result(self) -> (u32, HandlerResult) {
        let JsOutcome(seq, kind, a, b, usage) = self;
        let answer = match kind {
            0 => Ok(a.unwrap_or_default()),
            1 => Err(JobError::new(
                handler_error_code(a.as_deref()),
                b.unwrap_or_else(|| "the agent turn failed".to_string()),
            )),
            3 => {
                let message = one_line(a.as_deref().unwrap_or_default());
                Err(JobError::new(
                    ErrorCode::ExecutionFailed,
                    if message.is_empty() {
                        "the agent turn failed".to_string()
                    } else {
                        message
                    },
                ))
            }
            _ => Err(JobError::new(
                ErrorCode::ExecutionFailed,
                "the handler must return a string, { result, usage } or { error: { code, message }, usage }",
            )),
        };
        let usage = usage.as_deref().and_then(parse_usage);
        (seq, HandlerResult { answer, usage })
    }
}

/// A handler's `usage` (`{ input, output, cacheRead, cacheWrite, cost }`, numbers the driver
/// checked), or `None` when it does not read as one.
fn parse_usage(json: &str) -> Option<Usage> {
    serde_json::from_str::<Usage>(json)
        .ok()
        .filter(|u| u.cost.is_finite() && u.cost >= 0.0)
}

/// `[seq, job, seq, job, …]` as JSON.
type Batch = String;
type ReportFn<'a> =
    Function<'a, FnArgs<(u32, u32, Option<String>, Option<String>, Option<String>)>, ()>;
/// `partial(seq, text)`: the next piece of a job's answer (protocol v1.1 progress).
type PartialFn<'a> = Function<'a, FnArgs<(u32, String)>, ()>;
type DriverFn<'a> = Function<
    'a,
    FnArgs<(Unknown<'a>, ReportFn<'a>, PartialFn<'a>)>,
    Function<'a, Batch, UnknownReturnValue>,
>;
type DispatchFn = ThreadsafeFunction<(), UnknownReturnValue, Batch, napi::Status, false, true>;
use super::CancelFn;

/// The batch being written: `[seq,job,seq,job…` as JSON without its closing bracket, and its
/// seqs, to answer them if the batch can no longer be sent.
#[derive(Default)]
struct BatchBuffer {
    json: Vec<u8>,
    seqs: Vec<u32>,
}

impl BatchBuffer {
    fn push(&mut self, seq: u32, job: &Job) -> serde_json::Result<()> {
        let mark = self.json.len();
        self.json.push(if mark == 0 { b'[' } else { b',' });
        serde_json::to_writer(&mut self.json, &seq)?;
        self.json.push(b',');
        serde_json::to_writer(&mut self.json, job).inspect_err(|_| self.json.truncate(mark))?;
        self.seqs.push(seq);
        Ok(())
    }
}

#[derive(Default)]
struct BatchState {
    queue: Mutex<BatchBuffer>,
    pending: Mutex<HashMap<u32, oneshot::Sender<HandlerResult>>>,
    /// Where each job's partial text goes, for the jobs whose requester asked for progress.
    partials: Mutex<HashMap<u32, Partials>>,
    next_seq: AtomicU32,
}

impl BatchState {
    fn deliver_outcomes(&self, outcomes: impl Iterator<Item = (u32, HandlerResult)>) {
        let mut pending = lock(&self.pending);
        for (seq, outcome) in outcomes {
            if let Some(sender) = pending.remove(&seq) {
                let _ = sender.send(outcome);
            }
        }
    }
}

pub struct JsHandler {
    shared: Arc<BatchState>,
    dispatch: Arc<DispatchFn>,
    on_cancel: Option<Arc<CancelFn>>,
}

impl JsHandler {
    pub fn new(
        env: &Env,
        handler: Unknown<'_>,
        on_cancel: Option<CancelFn>,
    ) -> napi::Result<JsHandler> {
        let shared = Arc::new(BatchState::default());
        let for_report = shared.clone();
        let report = env.create_function_from_closure(
            "pierReport",
            move |ctx: FunctionCallContext| -> napi::Result<()> {
                let outcome = JsOutcome(
                    ctx.get(0)?,
                    ctx.get(1)?,
                    ctx.get(2)?,
                    ctx.get(3)?,
                    ctx.get(4)?,
                );
                for_report.deliver_outcomes(std::iter::once(outcome.into_result()));
                Ok(())
            },
        )?;
        let for_partial = shared.clone();
        let partial = env.create_function_from_closure(
            "pierPartial",
            move |ctx: FunctionCallContext| -> napi::Result<()> {
                let seq: u32 = ctx.get(0)?;
                let text: String = ctx.get(1)?;
                if let Some(partials) = lock(&for_partial.partials).get(&seq) {
                    partials.send(text);
                }
                Ok(())
            },
        )?;
        let driver: DriverFn = env.run_script(DRIVER)?;
        let dispatch = driver.call((handler, report, partial).into())?;
        let queue = shared.clone();
        let dispatch = dispatch
            .build_threadsafe_function::<()>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(move |_ctx| {
                let mut batch = std::mem::take(&mut *lock(&queue.queue)).json;
                batch.push(b']');
                // serde_json writes UTF-8 only, so this never falls back.
                Ok(String::from_utf8(batch).unwrap_or_else(|_| "[]".to_string()))
            })?;
        Ok(JsHandler {
            shared,
            dispatch: Arc::new(dispatch),
            on_cancel: on_cancel.map(Arc::new),
        })
    }
}

impl JobHandler for JsHandler {
    fn run(&self, job: JobInput) -> BoxFuture<'static, HandlerResult> {
        let shared = self.shared.clone();
        let dispatch = self.dispatch.clone();
        Box::pin(async move {
            let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
            let (sender, receiver) = oneshot::channel();
            lock(&shared.pending).insert(seq, sender);
            if job.partials.wanted() {
                lock(&shared.partials).insert(seq, job.partials.clone());
            }
            // Forget the job if the worker gives up on it, whatever JS does later.
            let _forget = ForgetOnDrop {
                shared: &shared,
                seq,
            };
            let first_in_batch = {
                let mut queue = lock(&shared.queue);
                let first = queue.seqs.is_empty();
                if queue.push(seq, &to_js_job(job)).is_err() {
                    return HandlerResult::failed(JobError::new(
                        ErrorCode::ExecutionFailed,
                        "the job could not be handed to JavaScript",
                    ));
                }
                first
            };
            if first_in_batch {
                let status = dispatch.call((), ThreadsafeFunctionCallMode::NonBlocking);
                if status != napi::Status::Ok {
                    let unsent = std::mem::take(&mut *lock(&shared.queue));
                    shared.deliver_outcomes(
                        unsent
                            .seqs
                            .into_iter()
                            .map(|seq| (seq, HandlerResult::failed(runtime_gone()))),
                    );
                }
            }
            receiver
                .await
                .unwrap_or_else(|_| HandlerResult::failed(runtime_gone()))
        })
    }

    fn cancel(&self, run_key: &str, job_id: &str, reason: ErrorCode) {
        if let Some(on_cancel) = &self.on_cancel {
            on_cancel.call(
                (
                    run_key.to_string(),
                    reason.as_str().to_string(),
                    job_id.to_string(),
                )
                    .into(),
                ThreadsafeFunctionCallMode::NonBlocking,
            );
        }
    }
}

struct ForgetOnDrop<'a> {
    shared: &'a BatchState,
    seq: u32,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.seq);
        lock(&self.shared.partials).remove(&self.seq);
    }
}

fn to_js_job(job: JobInput) -> Job {
    Job {
        progress: job.partials.wanted().then_some(true),
        id: job.id,
        run_key: job.run_key,
        task: job.task,
        system_prompt: job.system_prompt,
        timeout_ms: job.timeout_ms as f64,
        meta: Value::Object(job.meta),
        sender: job.sender,
        sender_key: job.sender_key,
    }
}

fn runtime_gone() -> JobError {
    JobError::new(
        ErrorCode::RuntimeUnavailable,
        "the JavaScript runtime is shutting down",
    )
}
