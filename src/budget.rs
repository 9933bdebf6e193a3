//! The daily budget (`maxDailySpend`, `maxDailyTokens`): what job turns used on the current UTC
//! day. It starts from the ledger's lines of that day when the worker starts (so a restart does
//! not reset it; without a ledger file it counts from the start), grows with what each turn
//! reports as it ends, and starts again at zero when the UTC day the clock names changes.
//! Admission reads it (`admission::Current::day_use`) and refuses jobs BUDGET_EXHAUSTED once
//! the day's use has reached a cap; a job already running finishes and is counted.
//!
//! It also counts the day's jobs and earnings as the ledger does ([`DailyUse::ended`], the rule
//! of `ledger::Jobs`: each job once, its earnings once, a rerun marked), so the worker's status
//! shows the same day as the ledger without reading it.

use crate::handler::Usage;
use crate::ledger::{self, Counted, DaySum, Jobs};
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
    /// Jobs that ended today, each once (as the ledger counts them).
    pub jobs: u64,
    /// Of those, completed.
    pub completed: u64,
    /// Runs whose answer could not be delivered.
    pub undelivered: u64,
    /// Runs of jobs that had run before (JetStream redeliveries).
    pub reruns: u64,
    /// Each job's `meta.price` once, when its result was delivered.
    pub earned: f64,
    /// `earned - spent`.
    pub margin: f64,
}

/// The current day's use, shared by the pipeline (which adds to it) and the worker's status.
#[derive(Debug)]
pub struct DailyUse {
    /// The UTC day, what its turns used, and its jobs and earnings.
    day: Mutex<(i64, DayUse, DaySum)>,
    /// The jobs of the ledger's recent lines and of the runs since the start.
    jobs: Mutex<Jobs>,
    from_ledger: bool,
    /// Ledger lines that could not be read at the start.
    unreadable: u64,
}

impl DailyUse {
    /// Today's use as the ledger at `ledger` has it at Unix time `now_ms` (zero without one),
    /// with the jobs of its lines since yesterday (so a rerun after a restart is known). A
    /// ledger that cannot be read counts from zero, and says why.
    pub fn starting(ledger: Option<&Path>, now_ms: i64) -> (DailyUse, Option<std::io::Error>) {
        let today = day_of(now_ms);
        let name = day_name(now_ms);
        let mut used = DayUse::default();
        let mut sum = DaySum {
            day: name.clone(),
            ..DaySum::default()
        };
        let mut jobs = Jobs::with_cap(ledger::JOBS_REMEMBERED);
        let mut unreadable = 0;
        let mut failed = None;
        if let Some(path) = ledger {
            let yesterday = UNIX_EPOCH + Duration::from_millis((now_ms - DAY_MS).max(0) as u64);
            match ledger::read(path, Some(yesterday), ledger::JOBS_REMEMBERED) {
                Ok(read) => {
                    if let Some(day) = read.days.into_iter().find(|d| d.day == name) {
                        used = DayUse {
                            spent: day.spent,
                            tokens: day.tokens,
                        };
                        sum = day;
                    }
                    jobs = read.jobs;
                    unreadable = read.unreadable;
                }
                Err(e) => failed = Some(e),
            }
        }
        let daily = DailyUse {
            day: Mutex::new((today, used, sum)),
            jobs: Mutex::new(jobs),
            from_ledger: ledger.is_some(),
            unreadable,
        };
        (daily, failed)
    }

    /// Ledger lines that could not be read when the worker started (skipped).
    pub fn unreadable_lines(&self) -> u64 {
        self.unreadable
    }

    /// Counts the end of one run of job `job` (its answer key) with `outcome`, at `now_ms`:
    /// whether it is a rerun, ends the job, and earns `price` (only a delivered `completed`
    /// result earns, and a job only once). Returns how it counted and what it earned.
    pub(crate) fn ended(
        &self,
        job: Option<&str>,
        outcome: &str,
        price: Option<f64>,
        now_ms: i64,
    ) -> (Counted, f64) {
        let price = price.filter(|p| p.is_finite() && *p > 0.0);
        let earning = outcome == "completed" && price.is_some();
        let counted = crate::sync::lock(&self.jobs).count(job, ledger::ends_job(outcome), earning);
        let earned = if counted.earns {
            price.unwrap_or(0.0)
        } else {
            0.0
        };
        let mut day = self.counts_on(now_ms);
        day.2.count(outcome, counted, earned);
        (counted, earned)
    }

    /// The counts of the UTC day of `now_ms`, locked: begun afresh when that day is a new one.
    fn counts_on(&self, now_ms: i64) -> std::sync::MutexGuard<'_, (i64, DayUse, DaySum)> {
        let today = day_of(now_ms);
        let mut day = crate::sync::lock(&self.day);
        if day.0 != today {
            *day = (
                today,
                DayUse::default(),
                DaySum {
                    day: day_name(now_ms),
                    ..DaySum::default()
                },
            );
        }
        day
    }

    /// Adds what one turn used, on the UTC day of `now_ms`.
    pub(crate) fn add(&self, usage: &Usage, now_ms: i64) {
        let mut day = self.counts_on(now_ms);
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

    /// The day's use against `max_daily_spend` and `max_daily_tokens`, and its jobs and
    /// earnings, at `now_ms`.
    pub fn status(&self, now_ms: i64, max_daily_spend: f64, max_daily_tokens: u64) -> TodayStatus {
        let (used, sum) = {
            let day = crate::sync::lock(&self.day);
            if day.0 == day_of(now_ms) {
                (day.1, day.2.clone())
            } else {
                (DayUse::default(), DaySum::default())
            }
        };
        TodayStatus {
            day: day_name(now_ms),
            spent: used.spent,
            tokens: used.tokens,
            max_daily_spend,
            max_daily_tokens,
            counted_from: if self.from_ledger { "ledger" } else { "start" },
            jobs: sum.jobs,
            completed: sum.completed,
            undelivered: sum.undelivered,
            reruns: sum.reruns,
            earned: sum.earned,
            margin: sum.earned - used.spent,
        }
    }
}

/// `YYYY-MM-DD`, the UTC day of Unix time `ms`.
fn day_name(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    crate::timestamp::rfc3339(at)[..10].to_string()
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

    #[test]
    fn the_days_jobs_count_each_job_once_and_its_earnings_once_delivered() {
        let (daily, _) = DailyUse::starting(None, DEC_2_NOON);
        // Undelivered: no job, no earnings.
        let (first, earned) = daily.ended(Some("pier-seq-3"), "undelivered", Some(5.0), DEC_2_NOON);
        assert_eq!((first.rerun, first.job, earned), (false, false, 0.0));
        // Run again and delivered: a rerun, the job, its price.
        let (second, earned) = daily.ended(Some("pier-seq-3"), "completed", Some(5.0), DEC_2_NOON);
        assert_eq!((second.rerun, second.job, earned), (true, true, 5.0));
        // Once more (its ack was lost): a rerun that earns nothing.
        let (third, earned) = daily.ended(Some("pier-seq-3"), "completed", Some(5.0), DEC_2_NOON);
        assert_eq!((third.rerun, third.job, earned), (true, false, 0.0));
        daily.add(
            &Usage {
                cost: 1.5,
                ..Usage::default()
            },
            DEC_2_NOON,
        );
        let today = daily.status(DEC_2_NOON, 0.0, 0);
        assert_eq!(
            (today.jobs, today.completed, today.undelivered, today.reruns),
            (1, 1, 1, 2)
        );
        assert_eq!((today.earned, today.spent, today.margin), (5.0, 1.5, 3.5));
    }
}
