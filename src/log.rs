//! Where the core's one-line log messages go: the binding forwards them to a JS logger, tests
//! collect them.

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
}

pub type SharedLogger = Arc<dyn Logger>;

/// Discards everything; for callers that pass no logger.
pub struct NullLogger;

impl Logger for NullLogger {
    fn log(&self, _level: Level, _message: &str) {}
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
