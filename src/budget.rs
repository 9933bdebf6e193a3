//! The daily budget (`maxDailySpend`, `maxDailyTokens`): what job turns used on the current UTC
//! day. It starts from the ledger's lines of that day when the worker starts (so a restart does
//! not reset it; without a ledger file it counts from the start), grows with what each turn
//! reports as it ends, and starts again at zero when the UTC day the clock names changes.
//! Admission reads it (`admission::Current::day_use`) and refuses jobs BUDGET_EXHAUSTED once
//! the day's use has reached a cap; a job already running finishes and is counted.

use crate::handler::Usage;
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

const DAY_MS: i64 = 86_400_000;

/// The UTC day (days since 1970-01-01) of Unix time `ms`.
pub(crate) fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// What the turns of one UTC day used.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct DayUse {
    /// In the unit of the model's cost config.
    pub spent: f64,
    /// Input, output, cache read and cache write tokens.
    pub tokens: u64,
}

/// The day's use against the budget, as the worker's status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TodayStatus {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// What today's job turns cost, in the unit of the model's cost config.
    pub spent: f64,
    /// Every token of today's job turns (input, output, cache reads and writes).
    pub tokens: u64,
    /// `maxDailySpend` (0: no cap).
    pub max_daily_spend: f64,
    /// `maxDailyTokens` (0: no cap).
    pub max_daily_tokens: u64,
    /// Where today's use was first read from: `ledger` (the ledger file's lines of the day, when
    /// the worker started) or `start` (no ledger file: counted from the worker's start).
    pub counted_from: &'static str,
}

/// The current day's use, shared by the pipeline (which adds to it) and the worker's status.
#[derive(Debug)]
pub struct DailyUse {
    day: Mutex<(i64, DayUse)>,
    from_ledger: bool,
}

impl DailyUse {
    /// Today's use as the ledger at `ledger` has it at Unix time `now_ms` (zero without one).
    /// A ledger that cannot be read counts from zero, and says why.
    pub fn starting(ledger: Option<&Path>, now_ms: i64) -> (DailyUse, Option<std::io::Error>) {
        let today = day_of(now_ms);
        let mut used = DayUse::default();
        let mut failed = None;
        if let Some(path) = ledger {
            let now = UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64);
            let name = crate::timestamp::rfc3339(now)[..10].to_string();
            match crate::ledger::read_days(path, Some(now)) {
                Ok(days) => {
                    if let Some(day) = days.into_iter().find(|d| d.day == name) {
                        used = DayUse {
                            spent: day.spent,
                            tokens: day.tokens,
                        };
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        let daily = DailyUse {
            day: Mutex::new((today, used)),
            from_ledger: ledger.is_some(),
        };
        (daily, failed)
    }

    /// Adds what one turn used, on the UTC day of `now_ms`.
    pub(crate) fn add(&self, usage: &Usage, now_ms: i64) {
        let today = day_of(now_ms);
        let mut day = crate::sync::lock(&self.day);
        if day.0 != today {
            *day = (today, DayUse::default());
        }
        if usage.cost.is_finite() && usage.cost > 0.0 {
            day.1.spent += usage.cost;
        }
        day.1.tokens = day.1.tokens.saturating_add(usage.tokens());
    }

    /// What the UTC day of `now_ms` used so far (nothing yet on a day not counted).
    pub(crate) fn on(&self, now_ms: i64) -> DayUse {
        let day = crate::sync::lock(&self.day);
        if day.0 == day_of(now_ms) {
            day.1
        } else {
            DayUse::default()
        }
    }

    /// The day's use against `max_daily_spend` and `max_daily_tokens`, at `now_ms`.
    pub fn status(&self, now_ms: i64, max_daily_spend: f64, max_daily_tokens: u64) -> TodayStatus {
        let used = self.on(now_ms);
        let now = UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64);
        TodayStatus {
            day: crate::timestamp::rfc3339(now)[..10].to_string(),
            spent: used.spent,
            tokens: used.tokens,
            max_daily_spend,
            max_daily_tokens,
            counted_from: if self.from_ledger { "ledger" } else { "start" },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEC_2_NOON: i64 = 1_796_169_600_000 + 12 * 3_600_000;

    #[test]
    fn the_day_grows_with_each_turn_and_starts_again_at_midnight_utc() {
        let (daily, failed) = DailyUse::starting(None, DEC_2_NOON);
        assert!(failed.is_none());
        let turn = Usage {
            input: 100,
            output: 20,
            cache_read: 5,
            cache_write: 1,
            cost: 0.25,
        };
        daily.add(&turn, DEC_2_NOON);
        daily.add(&turn, DEC_2_NOON + 1000);
        assert_eq!(
            daily.on(DEC_2_NOON + 2000),
            DayUse {
                spent: 0.5,
                tokens: 252
            }
        );
        let midnight = DEC_2_NOON + 12 * 3_600_000;
        assert_eq!(daily.on(midnight - 1).tokens, 252);
        assert_eq!(daily.on(midnight), DayUse::default(), "a new UTC day");
        daily.add(&turn, midnight + 5);
        assert_eq!(daily.on(midnight + 6).spent, 0.25);
        let status = daily.status(midnight + 6, 1.0, 0);
        assert_eq!(
            (status.day.as_str(), status.counted_from),
            ("2026-12-03", "start")
        );
    }
}
