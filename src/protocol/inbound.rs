//! Reading one inbound payload into a [`JobRequest`], or into the [`Rejection`] to answer.
//!
//! The payload is deserialized into [`WireRequest`], whose fields take any JSON value and say
//! what they got, so a wrong type becomes a precise INVALID_REQUEST naming the field (the
//! messages the protocol contract fixes). Payloads the fast path cannot read are looked at
//! again (`scan`): the id is echoed whenever it is readable, nesting is accepted up to
//! [`MAX_NESTING_DEPTH`], lone UTF-16 surrogate escapes (which JavaScript's `JSON.stringify`
//! emits) become U+FFFD, and a number too large for a double is an INVALID_REQUEST naming its
//! field.

use super::scan;
use crate::error::{one_line, strip_position, ErrorCode, JobError};
use serde::de::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// How deeply a payload may nest arrays and objects (in `meta`, say).
pub const MAX_NESTING_DEPTH: usize = 512;

/// One job as the worker runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    pub id: String,
    pub task: String,
    pub system_prompt: Option<String>,
    pub timeout_ms: Option<u64>,
    pub meta: Map<String, Value>,
}

impl JobRequest {
    /// `meta.sender`, when it is a string.
    pub fn sender(&self) -> Option<&str> {
        self.meta.get("sender").and_then(Value::as_str)
    }
}

/// A message that cannot become a job: the error to answer, and the request's id when it
/// could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub id: Option<String>,
    pub error: JobError,
}

impl Rejection {
    fn new(id: Option<String>, code: ErrorCode, message: impl AsRef<str>) -> Self {
        Rejection {
            id,
            error: JobError::new(code, message),
        }
    }
}

/// A field of the wire request: absent, `null`, or a value with its JSON kind.
#[derive(Debug, Default)]
enum Field {
    #[default]
    Absent,
    Present(Value),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Field::Present)
    }
}

impl Field {
    /// `None` when absent or null.
    fn value(self) -> Option<Value> {
        match self {
            Field::Absent | Field::Present(Value::Null) => None,
            Field::Present(v) => Some(v),
        }
    }
}

/// `task_request` as it arrives (legacy payloads have no `type` and name the task `task`,
/// `prompt` or `content`). Unknown fields are ignored.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest {
    #[serde(default)]
    id: Field,
    #[serde(default, rename = "type")]
    kind: Field,
    #[serde(default)]
    task: Field,
    #[serde(default)]
    prompt: Field,
    #[serde(default)]
    content: Field,
    #[serde(default)]
    system_prompt: Field,
    #[serde(default)]
    timeout_ms: Field,
    #[serde(default)]
    meta: Field,
    #[serde(default)]
    version: Field,
}

/// Reads one inbound payload. Never panics, whatever the bytes.
pub fn parse_job(payload: &[u8], max_bytes: usize) -> Result<JobRequest, Rejection> {
    if payload.len() > max_bytes {
        return Err(Rejection::new(
            None,
            ErrorCode::PayloadTooLarge,
            format!(
                "payload is {} bytes; this worker accepts at most {max_bytes}",
                payload.len()
            ),
        ));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| Rejection::new(None, ErrorCode::ParseError, "payload is not valid UTF-8"))?;
    // serde would also read a struct from an array; the protocol wants an object.
    if !text.trim_start().starts_with('{') {
        return Err(not_an_object(text));
    }
    match read_wire(text) {
        Ok(wire) => normalize(wire),
        Err(error) => reread(text, error),
    }
}

fn not_an_object(text: &str) -> Rejection {
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Err(e) if !e.is_data() => Rejection::new(
            None,
            ErrorCode::ParseError,
            format!(
                "payload is not valid JSON: {}",
                strip_position(&e.to_string())
            ),
        ),
        // Valid JSON, or a number too large for a double: not an object either way.
        _ => Rejection::new(
            None,
            ErrorCode::ParseError,
            format!("payload must be a JSON object, not {}", scan::kind_at(text)),
        ),
    }
}

/// A JSON error and the path of the field it happened in (`.` for the payload itself).
type ReadError = (String, serde_json::Error);

fn read_wire(text: &str) -> Result<WireRequest, ReadError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let wire = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| (e.path().to_string(), e.into_inner()))?;
    de.end().map_err(|e| (".".to_string(), e))?;
    Ok(wire)
}

/// The slow path, for payloads the plain read refused: say precisely why, with the id when
/// it can be read, and read what the protocol accepts after all.
fn reread(text: &str, (path, error): ReadError) -> Result<JobRequest, Rejection> {
    let Some(top) = scan::top_level(text) else {
        return Err(not_an_object(text));
    };
    let id = top.id.clone();
    let message = error.to_string();
    if message.starts_with("recursion limit exceeded") {
        let depth = scan::max_depth(text);
        if depth > MAX_NESTING_DEPTH {
            return Err(Rejection::new(
                id,
                ErrorCode::ParseError,
                format!(
                    "payload nests {depth} levels deep; at most {MAX_NESTING_DEPTH} are accepted"
                ),
            ));
        }
        let mut de = serde_json::Deserializer::from_str(text);
        de.disable_recursion_limit();
        let de = serde_stacker::Deserializer::new(&mut de);
        return match WireRequest::deserialize(de) {
            Ok(wire) => normalize(wire),
            Err(e) => Err(classify(id, &top, None, &e)),
        };
    }
    // serde_json says "lone leading surrogate" or "unexpected end of hex escape".
    if message.contains("surrogate") || message.contains("hex escape") {
        if let Some(fixed) = scan::replace_lone_surrogates(text) {
            return match read_wire(&fixed) {
                Ok(wire) => normalize(wire),
                Err((path, e)) => Err(classify(id, &top, Some(path), &e)),
            };
        }
    }
    Err(classify(id, &top, Some(path), &error))
}

/// The rejection for a JSON error in a payload that is an object at its top level.
fn classify(
    id: Option<String>,
    top: &scan::TopLevel,
    path: Option<String>,
    error: &serde_json::Error,
) -> Rejection {
    let message = strip_position(&error.to_string());
    let field = path
        .filter(|p| p != "." && !p.is_empty())
        .map(|p| p.split(['.', '[']).next().unwrap_or_default().to_string())
        .or_else(|| top.field_at(error.column().saturating_sub(1), error.line()));
    if message.starts_with("number out of range") {
        let field = field.unwrap_or_else(|| "a number".to_string());
        return Rejection::new(
            id,
            ErrorCode::InvalidRequest,
            format!("{field}: number out of range (larger than a double)"),
        );
    }
    if error.is_data() {
        return Rejection::new(
            id,
            ErrorCode::InvalidRequest,
            match field {
                Some(field) => format!("{field}: {message}"),
                None => message,
            },
        );
    }
    Rejection::new(
        id,
        ErrorCode::ParseError,
        format!("payload is not valid JSON: {message}"),
    )
}

fn normalize(wire: WireRequest) -> Result<JobRequest, Rejection> {
    let id = read_id(wire.id)?;
    let invalid = |message: String| Rejection::new(id.clone(), ErrorCode::InvalidRequest, message);
    let task = read_task(wire.kind, [wire.task, wire.prompt, wire.content]).map_err(invalid)?;
    let system_prompt = optional_string("systemPrompt", wire.system_prompt).map_err(invalid)?;
    let timeout_ms = read_timeout(wire.timeout_ms).map_err(invalid)?;
    let meta = match wire.meta.value() {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(invalid(format!(
                "meta must be an object, not {}",
                kind_of(&other)
            )))
        }
    };
    if let Some(v) = wire.version.value().filter(|v| !v.is_string()) {
        return Err(invalid(format!(
            "version must be a string, not {}",
            kind_of(&v)
        )));
    }
    Ok(JobRequest {
        id: id.unwrap_or_else(super::new_id),
        task,
        system_prompt,
        timeout_ms,
        meta,
    })
}

/// The request's id: absent, null or empty means "make one"; any other non-string is refused
/// (without an id, since none could be read).
fn read_id(field: Field) -> Result<Option<String>, Rejection> {
    match optional_string("id", field) {
        Ok(id) => Ok(id),
        Err(message) => Err(Rejection::new(None, ErrorCode::InvalidRequest, message)),
    }
}

/// A string field that may be absent, null or empty (all three: `None`).
fn optional_string(name: &str, field: Field) -> Result<Option<String>, String> {
    match field.value() {
        None => Ok(None),
        Some(Value::String(s)) => Ok((!s.is_empty()).then_some(s)),
        Some(other) => Err(format!("{name} must be a string, not {}", kind_of(&other))),
    }
}

/// `task` of a `task_request`; for a legacy payload (no `type`), the first non-empty string
/// of `task`, `prompt`, `content`.
fn read_task(kind: Field, [task, prompt, content]: [Field; 3]) -> Result<String, String> {
    match kind.value() {
        Some(Value::String(t)) if t == "task_request" => match task.value() {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
            None => Err("task_request has no task".into()),
            Some(Value::String(_)) => Err("task is empty".into()),
            Some(other) => Err(format!("task must be a string, not {}", kind_of(&other))),
        },
        Some(Value::String(t)) => Err(format!("type {:?} is not a task_request", one_line(&t))),
        Some(other) => Err(format!("type must be a string, not {}", kind_of(&other))),
        None => [task, prompt, content]
            .into_iter()
            .find_map(|f| match f.value() {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| {
                "no task: expected a non-empty string in task, prompt or content".into()
            }),
    }
}

/// `timeoutMs`: a positive number of milliseconds (fractions rounded down).
fn read_timeout(field: Field) -> Result<Option<u64>, String> {
    match field.value() {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(ms), _) if ms > 0 => Ok(Some(ms)),
            (_, Some(f)) if f >= 1.0 && f.is_finite() => Ok(Some(f as u64)),
            _ => Err("timeoutMs must be a positive number".into()),
        },
        Some(other) => Err(format!(
            "timeoutMs must be a number, not {}",
            kind_of(&other)
        )),
    }
}

pub(super) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
