//! The JS job handler, called in batches: jobs that arrive while the event loop is busy are
//! handed over in one thread-safe call as one JSON text (V8's `JSON.parse` builds the job
//! objects far faster than one N-API call per property), and a small JS driver settles each
//! job through one native `settle` function, so a job costs no N-API function or reference of
//! its own.

use super::Job;
use crate::error::{one_line, ErrorCode, JobError};
use crate::handler::{handler_error_code, HandlerResult, JobHandler, JobInput};
use crate::sync::lock;
use futures_util::future::BoxFuture;
use napi::bindgen_prelude::JsObjectValue;
use napi::bindgen_prelude::{FnArgs, Function, FunctionCallContext, Unknown};
use napi::threadsafe_function::{
    ThreadsafeFunction, ThreadsafeFunctionCallMode, UnknownReturnValue,
};
use napi::{Env, JsValue, ValueType};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Calls `handler` for each job of a batch and reports each outcome to `settle(seq, ok, value)`.
const DRIVER: &str = r#"(function pierDriver(handler, settle) {
  return function pierDispatch(batch) {
    const jobs = JSON.parse(batch)
    for (let i = 0; i < jobs.length; i += 2) {
      const seq = jobs[i]
      let result
      try {
        result = handler(jobs[i + 1])
      } catch (error) {
        settle(seq, false, error)
        continue
      }
      if (typeof result === 'string') settle(seq, true, result)
      else Promise.resolve(result).then((v) => settle(seq, true, v), (e) => settle(seq, false, e))
    }
  }
})"#;

/// `[seq, job, seq, job, …]` as JSON.
type Batch = String;
type SettleFn<'a> = Function<'a, FnArgs<(u32, bool, Unknown<'a>)>, ()>;
type DriverFn<'a> =
    Function<'a, FnArgs<(Unknown<'a>, SettleFn<'a>)>, Function<'a, Batch, UnknownReturnValue>>;
type DispatchFn = ThreadsafeFunction<(), UnknownReturnValue, Batch, napi::Status, false, true>;
type CancelFn = super::LogFn;

/// The batch being written: `[seq,job,seq,job…` as JSON without its closing bracket, and its
/// seqs, to settle them if the batch can no longer be sent.
#[derive(Default)]
struct Queue {
    json: Vec<u8>,
    seqs: Vec<u32>,
}

impl Queue {
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
struct Shared {
    queue: Mutex<Queue>,
    pending: Mutex<HashMap<u32, oneshot::Sender<HandlerResult>>>,
    next_seq: AtomicU32,
}

impl Shared {
    fn settle(&self, seq: u32, outcome: HandlerResult) {
        let sender = lock(&self.pending).remove(&seq);
        if let Some(sender) = sender {
            let _ = sender.send(outcome);
        }
    }
}

pub struct JsHandler {
    shared: Arc<Shared>,
    dispatch: Arc<DispatchFn>,
    on_cancel: Option<Arc<CancelFn>>,
}

impl JsHandler {
    pub fn new(
        env: &Env,
        handler: Unknown<'_>,
        on_cancel: Option<CancelFn>,
    ) -> napi::Result<JsHandler> {
        let shared = Arc::new(Shared::default());
        let for_settle = shared.clone();
        let settle = env.create_function_from_closure(
            "pierSettle",
            move |ctx: FunctionCallContext| -> napi::Result<()> {
                let seq: u32 = ctx.get(0)?;
                let ok: bool = ctx.get(1)?;
                let value: Unknown = ctx.get(2)?;
                let outcome = if ok {
                    result_of(value)
                } else {
                    Err(failure_of(value))
                };
                for_settle.settle(seq, outcome);
                Ok(())
            },
        )?;
        let driver: DriverFn = env.run_script(DRIVER)?;
        let dispatch = driver.call((handler, settle).into())?;
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
            // Forget the job if the worker gives up on it, whatever JS does later.
            let _forget = Forget {
                shared: &shared,
                seq,
            };
            let first_in_batch = {
                let mut queue = lock(&shared.queue);
                let first = queue.seqs.is_empty();
                if queue.push(seq, &to_js_job(job)).is_err() {
                    return Err(JobError::new(
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
                    for seq in unsent.seqs {
                        shared.settle(seq, Err(runtime_gone()));
                    }
                }
            }
            receiver.await.unwrap_or_else(|_| Err(runtime_gone()))
        })
    }

    fn cancel(&self, job_id: &str, reason: ErrorCode) {
        if let Some(on_cancel) = &self.on_cancel {
            on_cancel.call(
                (job_id.to_string(), reason.as_str().to_string()).into(),
                ThreadsafeFunctionCallMode::NonBlocking,
            );
        }
    }
}

struct Forget<'a> {
    shared: &'a Shared,
    seq: u32,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.seq);
    }
}

fn to_js_job(job: JobInput) -> Job {
    Job {
        id: job.id,
        task: job.task,
        system_prompt: job.system_prompt,
        timeout_ms: job.timeout_ms as f64,
        meta: Value::Object(job.meta),
        sender: job.sender,
    }
}

fn runtime_gone() -> JobError {
    JobError::new(
        ErrorCode::RuntimeUnavailable,
        "the JavaScript runtime is shutting down",
    )
}

/// A resolved handler value: the result string, or `{ error: { code, message } }`.
fn result_of(value: Unknown) -> HandlerResult {
    let not_a_string = || {
        JobError::new(
            ErrorCode::ExecutionFailed,
            "the handler must return a string or { error: { code, message } }",
        )
    };
    match value.get_type() {
        Ok(ValueType::String) => value
            .coerce_to_string()
            .and_then(|s| s.into_utf8())
            .and_then(|s| s.into_owned())
            .map_err(|_| not_a_string()),
        Ok(ValueType::Object) => {
            let raw = value.value();
            let value: Value = unsafe {
                napi::bindgen_prelude::FromNapiValue::from_napi_value(raw.env, raw.value)
            }
            .map_err(|_| not_a_string())?;
            match value.get("error") {
                Some(Value::Object(error)) => Err(JobError::new(
                    handler_error_code(error.get("code").and_then(Value::as_str)),
                    error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("the agent turn failed"),
                )),
                _ => Err(not_a_string()),
            }
        }
        _ => Err(not_a_string()),
    }
}

/// A thrown or rejected value: its message's first line, never its stack.
fn failure_of(value: Unknown) -> JobError {
    let text = |v: &Unknown| -> Option<String> {
        v.coerce_to_string()
            .ok()?
            .into_utf8()
            .ok()?
            .into_owned()
            .ok()
    };
    let message = match value.get_type() {
        Ok(ValueType::Object) => value
            .coerce_to_object()
            .ok()
            .and_then(|o| o.get_named_property::<Unknown>("message").ok())
            .and_then(|m| text(&m)),
        _ => text(&value),
    };
    let message = one_line(&message.unwrap_or_default());
    JobError::new(
        ErrorCode::ExecutionFailed,
        if message.is_empty() {
            "the agent turn failed".to_string()
        } else {
            message
        },
    )
}
