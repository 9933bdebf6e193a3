//! Job and connection counters, shared lock-free between the receive loop, job tasks and the
//! connection's event callback.

use crate::error::ErrorCode;
use crate::usage::Usage;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub struct Stats {
    received: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    in_flight: AtomicU64,
    no_reply: AtomicU64,
    reply_failures: AtomicU64,
    passed_on: AtomicU64,
    by_code: [AtomicU64; ErrorCode::ALL.len()],
    disconnects: AtomicU64,
    reconnects: AtomicU64,
    /// Attempts since the connection was last up (0 while it is up).
    connect_attempts: AtomicU64,
    slow_consumer_events: AtomicU64,
    server_errors: AtomicU64,
    /// `task_progress` messages handed to the connection (protocol v1.1).
    progress_sent: AtomicU64,
    /// `task_cancel` messages that cancelled nothing: a wrong or stale token, an id that is
    /// not the token's job's, a job already answered, or not a cancel at all.
    cancels_ignored: AtomicU64,
    processing_nanos: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
    /// Receipt to answer of each job that ran, for the metrics' histogram.
    durations: DurationHistogram,
    /// Sum of `meta.price` of completed jobs, as f64 bits.
    earned_bits: AtomicU64,
    /// Tokens job turns used, by kind (input, output, cache read, cache write).
    tokens: [AtomicU64; 4],
    /// Sum of job turns' cost, in the model cost config's unit, as f64 bits.
    spent_bits: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            received: AtomicU64::default(),
            completed: AtomicU64::default(),
            failed: AtomicU64::default(),
            rejected: AtomicU64::default(),
            timed_out: AtomicU64::default(),
            in_flight: AtomicU64::default(),
            no_reply: AtomicU64::default(),
            reply_failures: AtomicU64::default(),
            passed_on: AtomicU64::default(),
            by_code: Default::default(),
            disconnects: AtomicU64::default(),
            reconnects: AtomicU64::default(),
            connect_attempts: AtomicU64::default(),
            slow_consumer_events: AtomicU64::default(),
            server_errors: AtomicU64::default(),
            progress_sent: AtomicU64::default(),
            cancels_ignored: AtomicU64::default(),
            processing_nanos: AtomicU64::default(),
            last_error: std::sync::Mutex::default(),
            durations: DurationHistogram::default(),
            earned_bits: AtomicU64::new(0f64.to_bits()),
            tokens: Default::default(),
            spent_bits: AtomicU64::new(0f64.to_bits()),
        }
    }
}

/// How a job ended, for counting. Every received message ends in exactly one of these (or is
/// still in flight), so `received == completed + failed + rejected + timedOut + inFlight + noReply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Errored(ErrorCode),
    NoReply,
}

/// The counter a task_error falls in besides its code's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorBucket {
    /// `TIMEOUT`: the job ran past its deadline.
    TimedOut,
    /// The codes that say "not now, not here: send it again or elsewhere" (`OVERLOADED`,
    /// `SHUTTING_DOWN`, `PRICE_TOO_LOW`, `RATE_LIMITED`, `BUDGET_EXHAUSTED`): refused before it
    /// ran, or, for `SHUTTING_DOWN`, a job the stop cut off.
    Rejected,
    /// Every other code.
    Failed,
}

impl ErrorBucket {
    pub fn of(code: ErrorCode) -> ErrorBucket {
        match code {
            ErrorCode::Timeout => ErrorBucket::TimedOut,
            ErrorCode::Overloaded
            | ErrorCode::ShuttingDown
            | ErrorCode::PriceTooLow
            | ErrorCode::RateLimited
            | ErrorCode::BudgetExhausted => ErrorBucket::Rejected,
            _ => ErrorBucket::Failed,
        }
    }

    /// The metric label and log field value; operators' dashboards match these strings.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorBucket::TimedOut => "timed_out",
            ErrorBucket::Rejected => "rejected",
            ErrorBucket::Failed => "failed",
        }
    }
}

impl Stats {
    pub fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }
    pub fn job_started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }
    pub fn job_finished(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }
    pub fn reply_failed(&self) {
        self.reply_failures.fetch_add(1, Relaxed);
    }
    pub fn disconnected(&self) {
        self.disconnects.fetch_add(1, Relaxed);
    }
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }
    /// Connection attempts of the current outage (or first connection); 0 once connected.
    pub fn set_connect_attempts(&self, attempts: u64) {
        self.connect_attempts.store(attempts, Relaxed);
    }
    pub fn slow_consumer(&self) {
        self.slow_consumer_events.fetch_add(1, Relaxed);
    }
    pub fn server_error(&self) {
        self.server_errors.fetch_add(1, Relaxed);
    }
    pub fn progress_sent(&self) {
        self.progress_sent.fetch_add(1, Relaxed);
    }
    pub fn cancel_ignored(&self) {
        self.cancels_ignored.fetch_add(1, Relaxed);
    }

    /// Time from receipt to reply of one job that ran, for discovery's STATS and the metrics.
    pub fn processed(&self, took: std::time::Duration) {
        self.processing_nanos
            .fetch_add(took.as_nanos() as u64, Relaxed);
        self.durations.observe(took);
    }

    pub fn durations(&self) -> &DurationHistogram {
        &self.durations
    }

    /// Adds a completed job's `meta.price` to what this worker earned.
    pub fn add_earned(&self, price: f64) {
        add_f64(&self.earned_bits, price);
    }

    /// Adds what one job's turn used (tokens and cost) to what this worker spent.
    pub fn add_usage(&self, usage: &Usage) {
        let kinds = [
            usage.input,
            usage.output,
            usage.cache_read,
            usage.cache_write,
        ];
        for (counter, n) in self.tokens.iter().zip(kinds) {
            counter.fetch_add(n, Relaxed);
        }
        if usage.cost.is_finite() && usage.cost > 0.0 {
            add_f64(&self.spent_bits, usage.cost);
        }
    }

    /// The label of the counter a task_error code falls in (`outcome` in the metrics and the
    /// job log line): `timed_out`, `rejected` or `failed`.
    pub fn bucket_of(code: ErrorCode) -> &'static str {
        ErrorBucket::of(code).as_str()
    }

    pub fn processing_nanos(&self) -> u64 {
        self.processing_nanos.load(Relaxed)
    }

    /// Records a task_error and keeps it as the last error discovery reports.
    /// A job refused for this worker's own reason (`code`) and given back to its JetStream
    /// stream for another worker: counted under its code and `rejected`, and as passed on.
    pub fn passed_on(&self, code: ErrorCode) {
        self.record(Outcome::Errored(code));
        self.passed_on.fetch_add(1, Relaxed);
    }

    pub fn record_error(&self, code: ErrorCode, message: &str) {
        self.record(Outcome::Errored(code));
        self.set_last_error(&format!("{code}: {message}"));
    }

    /// Keeps `error` (one line, no secrets) as the last error status and discovery report.
    pub fn set_last_error(&self, error: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string());
        }
    }

    /// Forgets the last error when it starts with `kind` (`PIER_CONNECT` once connected
    /// again): status tells the present, and a past outage is in the log.
    pub fn clear_last_error_of(&self, kind: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            if last.as_deref().is_some_and(|e| e.starts_with(kind)) {
                *last = None;
            }
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|l| l.clone())
    }

    pub fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Completed => {
                self.completed.fetch_add(1, Relaxed);
            }
            Outcome::NoReply => {
                self.no_reply.fetch_add(1, Relaxed);
            }
            Outcome::Errored(code) => {
                self.by_code[code.index()].fetch_add(1, Relaxed);
                let bucket = match ErrorBucket::of(code) {
                    ErrorBucket::TimedOut => &self.timed_out,
                    ErrorBucket::Rejected => &self.rejected,
                    ErrorBucket::Failed => &self.failed,
                };
                bucket.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let by_code = ErrorCode::ALL
            .iter()
            .map(|c| {
                (
                    c.as_str().to_string(),
                    self.by_code[c.index()].load(Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        StatsSnapshot {
            received: self.received.load(Relaxed),
            completed: self.completed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            no_reply: self.no_reply.load(Relaxed),
            reply_failures: self.reply_failures.load(Relaxed),
            passed_on: self.passed_on.load(Relaxed),
            errors_by_code: by_code,
            disconnects: self.disconnects.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            connect_attempts: self.connect_attempts.load(Relaxed),
            slow_consumer_events: self.slow_consumer_events.load(Relaxed),
            server_errors: self.server_errors.load(Relaxed),
            progress_sent: self.progress_sent.load(Relaxed),
            cancels_ignored: self.cancels_ignored.load(Relaxed),
            earned: f64::from_bits(self.earned_bits.load(Relaxed)),
            tokens_in: self.tokens[0].load(Relaxed),
            tokens_out: self.tokens[1].load(Relaxed),
            cache_read_tokens: self.tokens[2].load(Relaxed),
            cache_write_tokens: self.tokens[3].load(Relaxed),
            spent: f64::from_bits(self.spent_bits.load(Relaxed)),
            p50_ms: self.durations.quantile_ms(0.5),
        }
    }
}

/// Adds `amount` to the f64 kept as bits in `cell`.
fn add_f64(cell: &AtomicU64, amount: f64) {
    let _ = cell.fetch_update(Relaxed, Relaxed, |bits| {
        Some((f64::from_bits(bits) + amount).to_bits())
    });
}

/// Bucket bounds 1 ms · 2^k, k < 20: from instant handlers to ~9 min agent turns.
const DURATION_BUCKETS: usize = 20;

/// A histogram of job durations with one atomic counter per bucket: every job observes it,
/// on any tokio thread, so it takes no lock (prometheus-client's own histogram locks).
#[derive(Default)]
pub struct DurationHistogram {
    /// Jobs whose duration fell in (bound k-1, bound k]; beyond the last bound only `count`.
    buckets: [AtomicU64; DURATION_BUCKETS],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    pub fn observe(&self, took: std::time::Duration) {
        let nanos = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        // The first k with nanos <= 1 ms · 2^k.
        let ms = nanos.div_ceil(1_000_000);
        let k = if ms <= 1 {
            0
        } else {
            (64 - (ms - 1).leading_zeros()) as usize
        };
        if let Some(bucket) = self.buckets.get(k) {
            bucket.fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// The upper bound (ms) of the bucket holding quantile `q` of the observed durations;
    /// `None` before any job, or when it lies beyond the last bound.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let count = self.count.load(Relaxed);
        let rank = (q * count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (k, n) in self.buckets.iter().enumerate() {
            seen += n.load(Relaxed);
            if count > 0 && seen >= rank {
                return Some((1u64 << k) as f64);
            }
        }
        None
    }

    /// `(sum in seconds, count, [(upper bound in seconds, jobs in that bucket alone)])`; the
    /// jobs beyond the last bound are `count` less the buckets' total.
    pub fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(k, n)| (0.001 * (1u64 << k) as f64, n.load(Relaxed)))
            .collect();
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        (sum, self.count.load(Relaxed), buckets)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    pub received: u64,
    pub completed: u64,
    /// task_errors with a code that is neither TIMEOUT nor one of `rejected`'s.
    pub failed: u64,
    /// task_errors that say "send it again or elsewhere" (OVERLOADED, SHUTTING_DOWN,
    /// PRICE_TOO_LOW, RATE_LIMITED, BUDGET_EXHAUSTED): refused before running, or, for
    /// SHUTTING_DOWN, a job the stop cut off.
    pub rejected: u64,
    pub timed_out: u64,
    pub in_flight: u64,
    /// Messages without a reply subject: counted, never run.
    pub no_reply: u64,
    /// Replies the connection refused to send.
    pub reply_failures: u64,
    /// JetStream jobs refused for this worker's own reason (OVERLOADED, RATE_LIMITED,
    /// BUDGET_EXHAUSTED) and given back to the stream for another worker instead of answered;
    /// also counted in `rejected`.
    pub passed_on: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub disconnects: u64,
    pub reconnects: u64,
    /// Connection attempts since the connection was last up (0 while it is up).
    pub connect_attempts: u64,
    pub slow_consumer_events: u64,
    pub server_errors: u64,
    /// `task_progress` messages sent (protocol v1.1).
    pub progress_sent: u64,
    /// `task_cancel` messages that cancelled nothing (wrong or stale token, wrong id, a job
    /// already answered): counted, never answered.
    pub cancels_ignored: u64,
    /// Sum of `meta.price` of completed jobs.
    pub earned: f64,
    /// Input tokens job turns used (not served from a cache), as their host reported them.
    pub tokens_in: u64,
    /// Output tokens job turns used.
    pub tokens_out: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// Sum of job turns' cost, in the unit of the model's cost config (usually USD).
    pub spent: f64,
    /// Upper bound (ms) of the duration bucket holding the median job; `None` before any.
    pub p50_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_error_is_forgotten_once_connected_again_and_other_errors_are_kept() {
        let stats = Stats::default();
        stats.set_last_error("PIER_CONNECT: cannot reach nats://127.0.0.1:4222: refused");
        stats.clear_last_error_of("PIER_CONNECT");
        assert_eq!(stats.last_error(), None);
        stats.set_last_error("TIMEOUT: the job's deadline passed");
        stats.clear_last_error_of("PIER_CONNECT");
        assert_eq!(
            stats.last_error().as_deref(),
            Some("TIMEOUT: the job's deadline passed")
        );
    }

    #[test]
    fn durations_fall_in_doubling_millisecond_buckets() {
        let h = DurationHistogram::default();
        for ms in [0, 1, 2, 3, 256, 257, 10_000_000] {
            h.observe(std::time::Duration::from_millis(ms));
        }
        let (sum, count, buckets) = h.read();
        assert_eq!(count, 7);
        assert!((sum - 10_000_519.0 / 1000.0).abs() < 1e-6);
        let at = |bound: f64| {
            buckets
                .iter()
                .find(|(b, _)| (*b - bound).abs() < 1e-9)
                .unwrap()
                .1
        };
        assert_eq!(at(0.001), 2); // 0 and 1 ms
        assert_eq!(at(0.002), 1);
        assert_eq!(at(0.004), 1);
        assert_eq!(at(0.256), 1);
        assert_eq!(at(0.512), 1);
        let total: u64 = buckets.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 6, "beyond the last bound: only in count");
        assert_eq!(
            h.quantile_ms(0.5),
            Some(4.0),
            "the 4th of 7: 3 ms, in the 4 ms bucket"
        );
        assert_eq!(h.quantile_ms(1.0), None, "beyond the last bound");
        assert_eq!(DurationHistogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn each_code_counts_in_the_bucket_its_label_names() {
        let s = Stats::default();
        for code in ErrorCode::ALL {
            s.record(Outcome::Errored(code));
        }
        let snap = s.snapshot();
        let labelled = |label| {
            ErrorCode::ALL
                .iter()
                .filter(|c| Stats::bucket_of(**c) == label)
                .count() as u64
        };
        // The metrics' `outcome` labels and the snapshot's counters agree, code by code.
        assert_eq!((snap.timed_out, labelled("timed_out")), (1, 1));
        // OVERLOADED, SHUTTING_DOWN, PRICE_TOO_LOW, RATE_LIMITED and BUDGET_EXHAUSTED: refused
        // without running.
        assert_eq!((snap.rejected, labelled("rejected")), (5, 5));
        assert_eq!(snap.failed, labelled("failed"));
        assert_eq!(snap.failed, ErrorCode::ALL.len() as u64 - 6);
    }

    #[test]
    fn outcomes_land_in_their_buckets() {
        let s = Stats::default();
        for _ in 0..6 {
            s.received();
        }
        s.record(Outcome::Completed);
        s.record(Outcome::Errored(ErrorCode::ParseError));
        s.record(Outcome::Errored(ErrorCode::Timeout));
        s.record(Outcome::Errored(ErrorCode::Overloaded));
        s.record(Outcome::NoReply);
        s.job_started();
        let snap = s.snapshot();
        assert_eq!(
            snap.received,
            snap.completed
                + snap.failed
                + snap.rejected
                + snap.timed_out
                + snap.in_flight
                + snap.no_reply
        );
        assert_eq!(snap.errors_by_code.get("PARSE_ERROR"), Some(&1));
        assert_eq!(snap.errors_by_code.get("EXECUTION_FAILED"), None);
    }

    #[test]
    fn usage_adds_up_by_kind_and_cost() {
        let s = Stats::default();
        let turn = Usage {
            input: 10,
            output: 3,
            cache_read: 2,
            cache_write: 1,
            cost: 0.25,
        };
        s.add_usage(&turn);
        s.add_usage(&turn);
        s.add_usage(&Usage {
            cost: f64::NAN,
            ..Usage::default()
        });
        let snap = s.snapshot();
        assert_eq!(
            (
                snap.tokens_in,
                snap.tokens_out,
                snap.cache_read_tokens,
                snap.cache_write_tokens
            ),
            (20, 6, 4, 2)
        );
        assert_eq!(snap.spent, 0.5);
    }
}
