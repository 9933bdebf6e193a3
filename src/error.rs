//! Error values: the protocol's job error codes, and the errors the worker and publisher
//! return to their callers. Every message is one line and carries no secret.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The `error.code` of a `task_error` reply (protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ParseError,
    InvalidRequest,
    RuntimeUnavailable,
    ExecutionFailed,
    PayloadTooLarge,
    Timeout,
    Overloaded,
    ShuttingDown,
    Unauthorized,
    ResultTooLarge,
    PriceTooLow,
    RateLimited,
    BudgetExhausted,
    /// The requester cancelled the job (protocol v1.1, `task_cancel`).
    Cancelled,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::ParseError,
        ErrorCode::InvalidRequest,
        ErrorCode::RuntimeUnavailable,
        ErrorCode::ExecutionFailed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Timeout,
        ErrorCode::Overloaded,
        ErrorCode::ShuttingDown,
        ErrorCode::Unauthorized,
        ErrorCode::ResultTooLarge,
        ErrorCode::PriceTooLow,
        ErrorCode::RateLimited,
        ErrorCode::BudgetExhausted,
        ErrorCode::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::RuntimeUnavailable => "RUNTIME_UNAVAILABLE",
            ErrorCode::ExecutionFailed => "EXECUTION_FAILED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::ResultTooLarge => "RESULT_TOO_LARGE",
            ErrorCode::PriceTooLow => "PRICE_TOO_LOW",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::BudgetExhausted => "BUDGET_EXHAUSTED",
            ErrorCode::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one job was not answered with a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub code: ErrorCode,
    pub message: String,
}

impl JobError {
    pub fn new(code: ErrorCode, message: impl AsRef<str>) -> Self {
        JobError {
            code,
            message: one_line(message.as_ref()),
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

const MAX_MESSAGE_CHARS: usize = 300;

/// A serde_json message without its " at line L column C" suffix: the position in a payload or
/// a config file means nothing to the one reading the error.
pub(crate) fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The first line of `text`, without control characters, cut to a readable length: error
/// messages cross to other clients and must never carry a stack trace.
pub fn one_line(text: &str) -> String {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut out: String = first
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if first.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out.trim().to_string()
}

/// `error`'s message, then each cause in its `source()` chain that the text does not quote
/// already, as one line: `message; caused by: cause; caused by: deeper cause`. The chain says
/// what went wrong underneath (a rustls alert inside an I/O error) where the top message only
/// says what was being done; lancedb's Node binding keeps it the same way.
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = one_line(&error.to_string());
    let mut cause = error.source();
    while let Some(e) = cause {
        let line = one_line(&e.to_string());
        if !line.is_empty() && !text.contains(&line) {
            text.push_str("; caused by: ");
            text.push_str(&line);
        }
        cause = e.source();
    }
    text
}

/// A failure's cause, kept for `Error::source`.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the worker or publisher was doing when a NATS request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOp {
    Subscribe,
    RoundTrip,
    JetStreamStream,
    JetStreamConsumer,
    JetStreamConsumerUpdate,
    JetStreamPublish,
    /// The permissions a JetStream worker needs, asked at start.
    JetStreamPermissions,
    Publish,
    Discovery,
    Metrics,
    Ledger,
}

impl fmt::Display for RequestOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestOp::Subscribe => "subscribe",
            RequestOp::RoundTrip => "round trip to the server",
            RequestOp::JetStreamStream => "JetStream stream",
            RequestOp::JetStreamConsumer => "JetStream consumer",
            RequestOp::JetStreamConsumerUpdate => {
                "JetStream consumer update to the configured ackWaitMs/maxDeliver"
            }
            RequestOp::JetStreamPublish => "JetStream publish",
            RequestOp::JetStreamPermissions => "JetStream permissions",
            RequestOp::Publish => "publish",
            RequestOp::Discovery => "discovery",
            RequestOp::Metrics => "metrics endpoint",
            RequestOp::Ledger => "ledger file",
        })
    }
}

/// Errors of the worker and the publisher, each with a stable code for JS callers. Causes
/// from async-nats and serde are kept (`source()`); `Display` is one line without secrets.
#[derive(Debug)]
pub enum PierError {
    Config(String),
    Connect {
        servers: String,
        /// One line, credentials removed.
        reason: String,
        /// A retry cannot help (authorization, TLS, a bad address).
        permanent: bool,
        source: Option<Cause>,
    },
    AlreadyRunning,
    NotRunning,
    /// `stop()` was called while `start()` still waited for a server.
    Stopped,
    Timeout {
        subject: String,
        timeout_ms: u64,
    },
    NoResponders {
        subject: String,
    },
    /// The job's worker sent no progress for 3 × its keep-alive interval (protocol v1.1): the
    /// job is lost. Code `PIER_TIMEOUT`.
    Lost {
        subject: String,
        silent_ms: u64,
    },
    Request {
        op: RequestOp,
        source: Cause,
    },
    InvalidReply(serde_json::Error),
    InvalidTask(String),
    /// The task is larger than the server accepts in one message.
    TaskTooLarge {
        bytes: usize,
        max_payload: usize,
    },
    /// A reply's `Pier-Worker` header is present but does not verify: why.
    WorkerSignature(String),
    /// `trustedWorkers` is set and the reply is unsigned or signed by another key: why.
    UntrustedWorker(String),
}

impl PierError {
    pub fn request(op: RequestOp, source: impl Into<Cause>) -> PierError {
        PierError::Request {
            op,
            source: source.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            PierError::Config(_) => "PIER_CONFIG",
            PierError::Connect { .. } => "PIER_CONNECT",
            PierError::AlreadyRunning => "PIER_ALREADY_RUNNING",
            PierError::NotRunning => "PIER_NOT_RUNNING",
            PierError::Stopped => "PIER_STOPPED",
            PierError::Timeout { .. } | PierError::Lost { .. } => "PIER_TIMEOUT",
            PierError::NoResponders { .. } => "PIER_NO_RESPONDERS",
            PierError::Request { .. } => "PIER_REQUEST",
            PierError::InvalidReply(_) => "PIER_INVALID_REPLY",
            PierError::InvalidTask(_) | PierError::TaskTooLarge { .. } => "PIER_INVALID_TASK",
            PierError::WorkerSignature(_) => "PIER_WORKER_SIGNATURE",
            PierError::UntrustedWorker(_) => "PIER_UNTRUSTED_WORKER",
        }
    }
}

impl fmt::Display for PierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PierError::Config(m) => write!(f, "invalid pier-connector config: {m}"),
            PierError::Connect {
                servers, reason, ..
            } => {
                write!(f, "could not connect to NATS at {servers}: {reason}")
            }
            PierError::AlreadyRunning => write!(f, "the worker is already running"),
            PierError::NotRunning => {
                write!(f, "the worker is not running; start it before publishing")
            }
            PierError::Stopped => write!(f, "the worker was stopped before it connected"),
            PierError::Timeout {
                subject,
                timeout_ms,
            } => write!(f, "no reply on {subject} within {timeout_ms} ms"),
            PierError::Lost { subject, silent_ms } => write!(
                f,
                "the job sent to {subject} is lost: its worker sent no progress for {silent_ms} ms (3 keep-alive intervals)"
            ),
            PierError::NoResponders { subject } => {
                write!(f, "no worker is listening on {subject} (no responders)")
            }
            PierError::Request { op, source } => {
                write!(f, "request failed: {op}: {}", one_line(&source.to_string()))
            }
            PierError::InvalidReply(e) => {
                write!(f, "the reply is not valid JSON: {}", one_line(&e.to_string()))
            }
            PierError::InvalidTask(m) => write!(f, "invalid task: {m}"),
            PierError::TaskTooLarge { bytes, max_payload } => write!(
                f,
                "invalid task: the request is {bytes} bytes; the NATS server accepts at most {max_payload}"
            ),
            PierError::WorkerSignature(why) => {
                write!(f, "the reply's worker signature does not verify: {why}")
            }
            PierError::UntrustedWorker(why) => {
                write!(f, "the reply is not from a trusted worker: {why}")
            }
        }
    }
}

impl std::error::Error for PierError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PierError::Connect {
                source: Some(s), ..
            } => Some(s.as_ref()),
            PierError::Request { source, .. } => Some(source.as_ref()),
            PierError::InvalidReply(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_names() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
        assert_eq!(ErrorCode::parse("NOPE"), None);
    }

    #[test]
    fn with_causes_appends_each_cause_the_message_does_not_quote() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl fmt::Display for Layer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let deepest = Layer("received fatal alert: CertificateRequired", None);
        let io = Layer("broken pipe", Some(Box::new(deepest)));
        let error = PierError::request(RequestOp::Subscribe, io);
        // "broken pipe" is in the message already; the alert under it is not.
        assert_eq!(
            with_causes(&error),
            "request failed: subscribe: broken pipe; caused by: received fatal alert: CertificateRequired"
        );
        assert_eq!(
            with_causes(&PierError::NotRunning),
            PierError::NotRunning.to_string()
        );
    }

    #[test]
    fn one_line_drops_stack_traces_and_controls() {
        let msg = "Error: boom\u{7}\n    at foo (file.js:1:2)\n    at bar";
        assert_eq!(one_line(msg), "Error: boom");
        assert_eq!(one_line("\n\n  second  \nthird"), "second");
        let long = "x".repeat(1000);
        assert_eq!(one_line(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
