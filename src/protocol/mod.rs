//! Pier wire protocol v1.0 (shared/docs/protocol.md): reading inbound jobs (`inbound`), v1 and
//! legacy, and writing `task_request`, `task_result` and `task_error`. Pure functions, no I/O.

mod inbound;
mod scan;

pub use inbound::{parse_job, JobRequest, Rejection, MAX_NESTING_DEPTH};

use crate::error::{ErrorCode, JobError};
use serde::Serialize;
use serde_json::Value;

pub const PROTOCOL_VERSION: &str = "1.0";

/// `worker` in every reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerIdentity {
    pub id: String,
    pub wallet: Option<String>,
}

/// JetStream mode: the header a request names its reply subject in.
pub const REPLY_HEADER: &str = "Pier-Reply-To";

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fresh random token of 22 URL-safe characters (122 random bits): a job's run key, a cancel
/// token. Nobody can choose or guess one.
pub fn new_token() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskRequest<'a> {
    version: &'static str,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    task: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_prompt: Option<&'a str>,
    timeout_ms: u64,
    meta: &'a Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskResult<'a> {
    version: &'static str,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    ok: bool,
    result: &'a str,
    latency_ms: u64,
    worker: &'a WorkerIdentity,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: ErrorCode,
    message: &'a str,
}

#[derive(Serialize)]
struct TaskError<'a> {
    version: &'static str,
    id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    ok: bool,
    error: ErrorBody<'a>,
    worker: &'a WorkerIdentity,
}

/// The protocol version of `task_progress` and `task_cancel` (v1.1); the final answer stays
/// v1.0.
pub const PROGRESS_VERSION: &str = "1.1";

/// The request header that asks for progress (protocol v1.1): where `task_progress` goes.
pub const PROGRESS_TO_HEADER: &str = "Pier-Progress-To";

/// What a `task_progress` message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState<'a> {
    /// First, once, at admission: how to cancel, and the keep-alive interval.
    Accepted {
        interval_ms: u64,
        cancel_subject: &'a str,
        token: &'a str,
    },
    /// Nothing else was sent for the interval; the job runs.
    Working,
    /// The next piece of the answer.
    Partial(&'a str),
}

#[derive(Serialize)]
struct CancelHow<'a> {
    subject: &'a str,
    token: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskProgress<'a> {
    version: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    seq: u64,
    state: &'static str,
    elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel: Option<CancelHow<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    worker: &'a WorkerIdentity,
}

/// A `task_progress` message (protocol v1.1).
pub fn encode_progress(
    id: &str,
    seq: u64,
    state: ProgressState<'_>,
    elapsed_ms: u64,
    worker: &WorkerIdentity,
) -> Vec<u8> {
    let (name, interval_ms, cancel, text) = match state {
        ProgressState::Accepted {
            interval_ms,
            cancel_subject,
            token,
        } => (
            "accepted",
            Some(interval_ms),
            Some(CancelHow {
                subject: cancel_subject,
                token,
            }),
            None,
        ),
        ProgressState::Working => ("working", None, None, None),
        ProgressState::Partial(text) => ("partial", None, None, Some(text)),
    };
    to_bytes(&TaskProgress {
        version: PROGRESS_VERSION,
        kind: "task_progress",
        id,
        seq,
        state: name,
        elapsed_ms,
        interval_ms,
        cancel,
        text,
        worker,
    })
}

/// A `task_cancel` as read: the job id and the token, when the payload is one (any version
/// that names the type; unknown fields ignored). `None` for anything else.
pub fn parse_cancel(payload: &[u8]) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct TaskCancel {
        #[serde(rename = "type")]
        kind: String,
        id: String,
        token: String,
    }
    let cancel: TaskCancel = serde_json::from_slice(payload).ok()?;
    (cancel.kind == "task_cancel").then_some((cancel.id, cancel.token))
}

/// A `task_cancel` for job `id` with `token` (protocol v1.1).
pub fn encode_cancel(id: &str, token: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct TaskCancel<'a> {
        version: &'static str,
        #[serde(rename = "type")]
        kind: &'static str,
        id: &'a str,
        token: &'a str,
    }
    to_bytes(&TaskCancel {
        version: PROGRESS_VERSION,
        kind: "task_cancel",
        id,
        token,
    })
}

fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these structs of strings and numbers cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// A `task_request` with the given id.
pub fn encode_request(
    id: &str,
    task: &str,
    system_prompt: Option<&str>,
    timeout_ms: u64,
    meta: &Value,
) -> Vec<u8> {
    to_bytes(&TaskRequest {
        version: PROTOCOL_VERSION,
        id,
        kind: "task_request",
        task,
        system_prompt,
        timeout_ms,
        meta,
    })
}

pub fn encode_result(id: &str, result: &str, latency_ms: u64, worker: &WorkerIdentity) -> Vec<u8> {
    to_bytes(&TaskResult {
        version: PROTOCOL_VERSION,
        id,
        kind: "task_result",
        ok: true,
        result,
        latency_ms,
        worker,
    })
}

pub fn encode_error(id: Option<&str>, error: &JobError, worker: &WorkerIdentity) -> Vec<u8> {
    to_bytes(&TaskError {
        version: PROTOCOL_VERSION,
        id,
        kind: "task_error",
        ok: false,
        error: ErrorBody {
            code: error.code,
            message: &error.message,
        },
        worker,
    })
}

/// The headers of every `task_error` reply, as (name, value): the NATS service (micro)
/// protocol's error headers, so discovery clients count the error and can read its code without
/// parsing the body.
pub fn error_headers(code: ErrorCode, message: &str) -> [(&'static str, String); 2] {
    let status: u16 = match code {
        ErrorCode::ParseError | ErrorCode::InvalidRequest => 400,
        ErrorCode::PriceTooLow => 402,
        ErrorCode::Unauthorized => 403,
        ErrorCode::PayloadTooLarge => 413,
        ErrorCode::RateLimited => 429,
        ErrorCode::ExecutionFailed | ErrorCode::ResultTooLarge => 500,
        ErrorCode::RuntimeUnavailable
        | ErrorCode::Overloaded
        | ErrorCode::ShuttingDown
        | ErrorCode::BudgetExhausted => 503,
        ErrorCode::Timeout => 504,
        // What HTTP servers answer a request its client closed.
        ErrorCode::Cancelled => 499,
    };
    [
        ("Nats-Service-Error", format!("{code}: {message}")),
        ("Nats-Service-Error-Code", status.to_string()),
    ]
}

#[cfg(test)]
mod tests {

    #[test]
    fn task_progress_bytes_are_the_contracts() {
        let worker = WorkerIdentity {
            id: "agent-001".into(),
            wallet: Some("0xABC123".into()),
        };
        let accepted = ProgressState::Accepted {
            interval_ms: 5000,
            cancel_subject: "_INBOX.c",
            token: "tok",
        };
        assert_eq!(
            String::from_utf8(encode_progress("j", 0, accepted, 3, &worker)).unwrap(),
            r#"{"version":"1.1","type":"task_progress","id":"j","seq":0,"state":"accepted","elapsedMs":3,"intervalMs":5000,"cancel":{"subject":"_INBOX.c","token":"tok"},"worker":{"id":"agent-001","wallet":"0xABC123"}}"#
        );
        assert_eq!(
            String::from_utf8(encode_progress("j", 1, ProgressState::Working, 9, &worker)).unwrap(),
            r#"{"version":"1.1","type":"task_progress","id":"j","seq":1,"state":"working","elapsedMs":9,"worker":{"id":"agent-001","wallet":"0xABC123"}}"#
        );
        let partial = encode_progress("j", 2, ProgressState::Partial("a\"b"), 9, &worker);
        let v: Value = serde_json::from_slice(&partial).unwrap();
        assert_eq!(
            (v["state"].as_str(), v["text"].as_str()),
            (Some("partial"), Some("a\"b"))
        );
        assert_eq!(
            parse_cancel(&encode_cancel("j", "tok")),
            Some(("j".to_string(), "tok".to_string()))
        );
        for not_a_cancel in [
            &br#"{"type":"task_progress","id":"j","token":"t"}"#[..],
            br#"{"type":"task_cancel","id":"j"}"#,
            br#"{"type":"task_cancel","id":1,"token":"t"}"#,
            b"null",
            b"\xff",
        ] {
            assert_eq!(parse_cancel(not_a_cancel), None);
        }
    }

    use super::*;

    #[test]
    fn error_headers_carry_code_and_status() {
        assert_eq!(
            error_headers(ErrorCode::Overloaded, "full"),
            [
                ("Nats-Service-Error", "OVERLOADED: full".to_string()),
                ("Nats-Service-Error-Code", "503".to_string())
            ]
        );
    }
    use serde_json::json;

    const MAX: usize = 1 << 20;

    fn parse(v: Value) -> Result<JobRequest, Rejection> {
        parse_job(v.to_string().as_bytes(), MAX)
    }

    fn code_of(bytes: &[u8]) -> (Option<String>, ErrorCode) {
        let r = parse_job(bytes, MAX).unwrap_err();
        (r.id, r.error.code)
    }

    #[test]
    fn v1_request_is_read_whole() {
        let job = parse(json!({
            "version": "1.0", "id": "j1", "type": "task_request", "task": "hi",
            "systemPrompt": "be brief", "timeoutMs": 1500, "meta": { "sender": "u1", "price": 5 }
        }))
        .unwrap();
        assert_eq!(job.id, "j1");
        assert_eq!(job.task, "hi");
        assert_eq!(job.system_prompt.as_deref(), Some("be brief"));
        assert_eq!(job.timeout_ms, Some(1500));
        assert_eq!(job.sender(), Some("u1"));
    }

    #[test]
    fn legacy_takes_the_first_non_empty_of_task_prompt_content() {
        assert_eq!(parse(json!({ "prompt": "p" })).unwrap().task, "p");
        assert_eq!(
            parse(json!({ "task": "", "prompt": 3, "content": "c" }))
                .unwrap()
                .task,
            "c"
        );
        assert_eq!(
            parse(json!({ "task": "t", "prompt": "p" })).unwrap().task,
            "t"
        );
    }

    #[test]
    fn missing_id_gets_a_uuid() {
        let job = parse(json!({ "task": "x" })).unwrap();
        assert!(uuid::Uuid::parse_str(&job.id).is_ok());
    }

    #[test]
    fn unreadable_payloads_are_parse_errors_with_null_id() {
        for bytes in [
            &b"null"[..],
            b"[]",
            b"\"x\"",
            b"42",
            b"{",
            b"",
            b"\xff\xfe{}",
        ] {
            assert_eq!(code_of(bytes), (None, ErrorCode::ParseError), "{bytes:?}");
        }
    }

    #[test]
    fn empty_object_is_an_invalid_request() {
        assert_eq!(code_of(b"{}"), (None, ErrorCode::InvalidRequest));
    }

    #[test]
    fn wrong_field_types_are_invalid_requests_keeping_the_id() {
        for v in [
            json!({ "id": "a", "type": "task_request", "task": 5 }),
            json!({ "id": "a", "task": "t", "timeoutMs": "soon" }),
            json!({ "id": "a", "task": "t", "timeoutMs": -1 }),
            json!({ "id": "a", "task": "t", "meta": [1] }),
            json!({ "id": "a", "task": "t", "systemPrompt": {} }),
            json!({ "id": "a", "type": 7, "task": "t" }),
            json!({ "id": "a", "type": "task_result", "task": "t" }),
        ] {
            let r = parse(v.clone()).unwrap_err();
            assert_eq!(
                (r.id.as_deref(), r.error.code),
                (Some("a"), ErrorCode::InvalidRequest),
                "{v}"
            );
        }
        let r = parse(json!({ "id": 12, "task": "t" })).unwrap_err();
        assert_eq!((r.id, r.error.code), (None, ErrorCode::InvalidRequest));
    }

    #[test]
    fn oversized_payload_is_rejected_before_parsing() {
        let big = vec![b'x'; 100];
        let r = parse_job(&big, 99).unwrap_err();
        assert_eq!(r.error.code, ErrorCode::PayloadTooLarge);
        assert_eq!(r.id, None);
    }

    #[test]
    fn deep_nesting_is_a_parse_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert_eq!(code_of(deep.as_bytes()).1, ErrorCode::ParseError);
        let deep_obj = format!("{{\"task\":\"t\",\"meta\":{}}}", "{\"a\":".repeat(10_000));
        assert_eq!(code_of(deep_obj.as_bytes()).1, ErrorCode::ParseError);
    }

    #[test]
    fn nesting_is_accepted_to_the_documented_depth_with_the_id_echoed() {
        let nested = |levels: usize| {
            format!(
                r#"{{"id":"deep","task":"t","meta":{}1{}}}"#,
                r#"{"a":"#.repeat(levels),
                "}".repeat(levels)
            )
        };
        let job = parse_job(nested(129).as_bytes(), MAX).unwrap();
        assert_eq!((job.id.as_str(), job.task.as_str()), ("deep", "t"));
        assert!(parse_job(nested(MAX_NESTING_DEPTH - 1).as_bytes(), MAX).is_ok());
        let r = parse_job(nested(MAX_NESTING_DEPTH + 1).as_bytes(), MAX).unwrap_err();
        assert_eq!(
            (r.id.as_deref(), r.error.code),
            (Some("deep"), ErrorCode::ParseError)
        );
    }

    #[test]
    fn numbers_beyond_a_double_are_invalid_requests_naming_the_field() {
        let r = parse_job(br#"{"id":"n1","task":"t","timeoutMs":1e309}"#, MAX).unwrap_err();
        assert_eq!(
            (r.id.as_deref(), r.error.code),
            (Some("n1"), ErrorCode::InvalidRequest)
        );
        assert!(
            r.error.message.starts_with("timeoutMs:"),
            "{}",
            r.error.message
        );
        let r = parse_job(br#"{"task":"t","meta":{"price":-1e400},"id":"n2"}"#, MAX).unwrap_err();
        assert_eq!(r.id.as_deref(), Some("n2"));
        assert!(r.error.message.starts_with("meta:"), "{}", r.error.message);
    }

    #[test]
    fn lone_surrogate_escapes_are_replaced() {
        let job = parse_job(
            br#"{"id":"s1","task":"a\ud800b","meta":{"x":"\udc00"}}"#,
            MAX,
        )
        .unwrap();
        assert_eq!(job.task, "a\u{fffd}b");
        assert_eq!(job.meta["x"], "\u{fffd}");
        let pair = parse_job(br#"{"task":"\ud83d\ude00"}"#, MAX).unwrap();
        assert_eq!(pair.task, "\u{1f600}");
    }

    #[test]
    fn the_id_is_echoed_when_a_later_field_breaks_the_json() {
        let r = parse_job(br#"{"id":"e1","task":"t","meta":{"a":}}"#, MAX).unwrap_err();
        assert_eq!(
            (r.id.as_deref(), r.error.code),
            (Some("e1"), ErrorCode::ParseError)
        );
    }

    #[test]
    fn replies_match_the_protocol_shapes() {
        let w = WorkerIdentity {
            id: "agent-001".into(),
            wallet: Some("0xABC".into()),
        };
        let v: Value = serde_json::from_slice(&encode_result("j", "out", 12, &w)).unwrap();
        assert_eq!(
            v,
            json!({ "version": "1.0", "id": "j", "type": "task_result", "ok": true,
                    "result": "out", "latencyMs": 12, "worker": { "id": "agent-001", "wallet": "0xABC" } })
        );
        let e = JobError::new(ErrorCode::Timeout, "too slow");
        let anon = WorkerIdentity {
            id: "anonymous-worker".into(),
            wallet: None,
        };
        let v: Value = serde_json::from_slice(&encode_error(None, &e, &anon)).unwrap();
        assert_eq!(
            v,
            json!({ "version": "1.0", "id": null, "type": "task_error", "ok": false,
                    "error": { "code": "TIMEOUT", "message": "too slow" },
                    "worker": { "id": "anonymous-worker", "wallet": null } })
        );
        let v: Value =
            serde_json::from_slice(&encode_request("r", "t", None, 500, &json!({}))).unwrap();
        assert_eq!(
            v,
            json!({ "version": "1.0", "id": "r", "type": "task_request", "task": "t",
                    "timeoutMs": 500, "meta": {} })
        );
    }

    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse_job(&bytes, MAX);
            }

            #[test]
            fn json_shaped_text(text in r#"[\{\}\[\]":,a-z0-9 \\nult-]{0,200}"#) {
                let _ = parse_job(text.as_bytes(), MAX);
            }

            #[test]
            fn objects_with_arbitrary_field_values(
                id in any::<Option<String>>(),
                task in prop_oneof![Just(json!(null)), any::<String>().prop_map(Value::from), any::<f64>().prop_map(|f| json!(f)), Just(json!([]))],
                timeout in prop_oneof![Just(json!(null)), any::<i64>().prop_map(Value::from), any::<f64>().prop_map(|f| json!(f)), any::<String>().prop_map(Value::from)],
            ) {
                let v = json!({ "id": id, "type": "task_request", "task": task, "timeoutMs": timeout });
                match parse(v) {
                    Ok(job) => prop_assert!(!job.task.trim().is_empty()),
                    Err(r) => prop_assert!(matches!(r.error.code, ErrorCode::InvalidRequest | ErrorCode::ParseError)),
                }
            }
        }
    }
}
