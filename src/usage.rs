//! What one job's turn used: its tokens and cost.

use serde::Serialize;

/// What one job's turn used, as its host measured it. Tokens by kind; `cost` is in the unit
/// of the model's cost config (OpenClaw: per-million-token prices, usually USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub cost: f64,
}

impl Usage {
    /// Every token of the turn: input, output, cache reads and cache writes.
    pub fn tokens(&self) -> u64 {
        [self.input, self.output, self.cache_read, self.cache_write]
            .into_iter()
            .fold(0u64, u64::saturating_add)
    }

    /// `self` with `other` added, as the sums of several turns.
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            input: self.input.saturating_add(other.input),
            output: self.output.saturating_add(other.output),
            cache_read: self.cache_read.saturating_add(other.cache_read),
            cache_write: self.cache_write.saturating_add(other.cache_write),
            cost: self.cost + other.cost,
        }
    }
}
