//! Where the core's one-line log messages go: the binding forwards them to a JS logger, tests
//! collect them. A finished job is one [`JobLine`] with its fields; `logFormat: "json"` turns
//! every line into one JSON object ([`JsonLines`]).

use crate::error::{one_line, ErrorCode};
use crate::handler::Usage;
use serde_json::{json, Map, Value};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

pub trait Logger: Send + Sync + 'static {
    fn log(&self, level: Level, message: &str);

    /// One finished job; as text unless the logger keeps fields.
    fn job(&self, level: Level, line: &JobLine) {
        self.log(level, &line.text());
    }

    /// Whether a line at `level` would be kept, so hot paths skip formatting it.
    fn enabled(&self, _level: Level) -> bool {
        true
    }
}

pub type SharedLogger = Arc<dyn Logger>;

impl Level {
    pub fn parse(name: &str) -> Option<Level> {
        match name {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

impl Logger for Box<dyn Logger> {
    fn log(&self, level: Level, message: &str) {
        (**self).log(level, message)
    }

    fn job(&self, level: Level, line: &JobLine) {
        (**self).job(level, line)
    }

    fn enabled(&self, level: Level) -> bool {
        (**self).enabled(level)
    }
}

/// How one job ended, for its log line: no task body, no secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct JobLine {
    /// The requester's id as it may appear in a log line (one line, bounded).
    pub job_id: Option<String>,
    pub sender: Option<String>,
    /// The verified `Pier-Sender` key (a public key, never secret).
    pub sender_key: Option<String>,
    pub duration_ms: u64,
    /// `completed`, or the counter its code falls in (`failed`, `rejected`, `timed_out`).
    pub outcome: &'static str,
    pub code: Option<ErrorCode>,
    /// The task_error's message (one line).
    pub message: Option<String>,
    pub price: Option<f64>,
    /// What the job's turn used, when its handler measured it (a job that did not run: none).
    pub usage: Option<Usage>,
}

impl JobLine {
    pub fn text(&self) -> String {
        let id = self.job_id.as_deref().unwrap_or("(no id)");
        let from = self
            .sender_key
            .as_deref()
            .map(|k| format!(" from {k}"))
            .unwrap_or_default();
        let used = self
            .usage
            .map(|u| {
                let cached = if u.cache_read + u.cache_write > 0 {
                    format!(
                        ", cache read {}, cache write {}",
                        u.cache_read, u.cache_write
                    )
                } else {
                    String::new()
                };
                format!(
                    " (tokens in {}, out {}{cached}, cost {})",
                    u.input, u.output, u.cost
                )
            })
            .unwrap_or_default();
        match (self.code, &self.message) {
            (Some(code), Some(message)) => {
                format!("[pier-connector] job {id}{from} answered {code}: {message}{used}")
            }
            _ => format!(
                "[pier-connector] job {id}{from} completed in {} ms{used}",
                self.duration_ms
            ),
        }
    }

    fn fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("jobId".into(), json!(self.job_id));
        fields.insert("sender".into(), json!(self.sender));
        fields.insert("senderKey".into(), json!(self.sender_key));
        fields.insert("durationMs".into(), json!(self.duration_ms));
        fields.insert("outcome".into(), json!(self.outcome));
        fields.insert("code".into(), json!(self.code.map(ErrorCode::as_str)));
        fields.insert("price".into(), json!(self.price));
        if let Some(u) = self.usage {
            fields.insert("tokensIn".into(), json!(u.input));
            fields.insert("tokensOut".into(), json!(u.output));
            fields.insert("cacheReadTokens".into(), json!(u.cache_read));
            fields.insert("cacheWriteTokens".into(), json!(u.cache_write));
            fields.insert("cost".into(), json!(u.cost));
        }
        fields
    }
}

/// `logFormat: "json"`: every line as one JSON object, `{"time","level","msg"}` plus, for a
/// finished job, its fields.
pub struct JsonLines<L>(pub L);

impl<L: Logger> JsonLines<L> {
    fn write(&self, level: Level, message: &str, fields: Map<String, Value>) {
        let mut object = Map::new();
        object.insert(
            "time".into(),
            json!(crate::timestamp::rfc3339(std::time::SystemTime::now())),
        );
        object.insert("level".into(), json!(level.as_str()));
        object.insert(
            "msg".into(),
            json!(message.strip_prefix("[pier-connector] ").unwrap_or(message)),
        );
        object.extend(fields);
        self.0.log(level, &Value::Object(object).to_string());
    }
}

impl<L: Logger> Logger for JsonLines<L> {
    fn log(&self, level: Level, message: &str) {
        self.write(level, message, Map::new());
    }

    fn job(&self, level: Level, line: &JobLine) {
        self.write(level, &line.text(), line.fields());
    }

    fn enabled(&self, level: Level) -> bool {
        self.0.enabled(level)
    }
}

/// Drops lines below `min` before they reach `inner`: with a JS logger every line is a call
/// onto the event loop, so lines below it must not cross unless asked for.
pub struct LevelFilter<L> {
    pub min: Level,
    pub inner: L,
}

impl<L: Logger> Logger for LevelFilter<L> {
    fn log(&self, level: Level, message: &str) {
        if self.enabled(level) {
            self.inner.log(level, message);
        }
    }

    fn job(&self, level: Level, line: &JobLine) {
        if self.enabled(level) {
            self.inner.job(level, line);
        }
    }

    fn enabled(&self, level: Level) -> bool {
        level >= self.min
    }
}

/// Discards everything; for callers that pass no logger.
pub struct NullLogger;

impl Logger for NullLogger {
    fn log(&self, _level: Level, _message: &str) {}

    fn enabled(&self, _level: Level) -> bool {
        false
    }
}

/// Keeps every line; used by tests to assert what was (and was not) logged.
#[derive(Default)]
pub struct MemoryLogger {
    lines: std::sync::Mutex<Vec<(Level, String)>>,
}

impl MemoryLogger {
    pub fn lines(&self) -> Vec<(Level, String)> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Logger for MemoryLogger {
    fn log(&self, level: Level, message: &str) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push((level, message.to_string()));
        }
    }
}

/// A requester-chosen id as it may appear in a log line: one line, bounded.
pub(crate) fn loggable(id: &str) -> String {
    let mut line: String = one_line(id).chars().take(80).collect();
    if line.is_empty() {
        line.push_str("(blank id)");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::loggable;

    #[test]
    fn requester_ids_cannot_forge_log_lines() {
        assert_eq!(loggable("abc\n[pier-connector] fake line"), "abc");
        assert_eq!(loggable(&"x".repeat(500)).chars().count(), 80);
        assert_eq!(loggable("\u{1b}[31mred"), "[31mred");
        assert_eq!(loggable(" \n "), "(blank id)");
    }
}
