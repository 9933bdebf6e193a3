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

/// Drops lines below `min` before they reach `inner`: with a JS logger every line is a call
/// onto the event loop, so per-job debug lines must not cross unless asked for.
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
