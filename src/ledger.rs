//! The ledger (`ledgerFile`): one JSON line per job that ran, with what it earned and what its
//! turn cost, so "what did I earn and spend this week" survives restarts. It holds no task or
//! result text. The file is rotated by size (`ledgerMaxBytes`): when a line would take it past
//! the limit it becomes `<file>.1` (and `.1` becomes `.2`, the oldest kept), so the ledger stays
//! within three files. [`read_days`] sums every kept file per UTC day.
//!
//! Jobs refused before they ran (PRICE_TOO_LOW, OVERLOADED, a bad payload, ...) earn and cost
//! nothing and are not written: a flood of refused junk could otherwise rotate the real history
//! away. They are counted in the metrics and stats.

use crate::handler::Usage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// Rotated generations kept besides the live file: `<file>.1`, `<file>.2`.
pub const KEPT_GENERATIONS: usize = 2;

/// One job that ran. `time` is when it ended (RFC 3339 UTC); `price` what the request offered
/// (`meta.price`), `earned` what it earned (the price when a result was delivered, else 0);
/// `cost` in the unit of the model's cost config. Token fields are absent when the handler
/// measured nothing (echo, a command).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub time: String,
    pub worker: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_key: Option<String>,
    #[serde(default)]
    pub price: Option<f64>,
    #[serde(default)]
    pub earned: f64,
    /// `completed`, `failed`, `timed_out`, `rejected` (SHUTTING_DOWN) or `retried` (given back
    /// to JetStream for another attempt: its spending counts, the job does not yet).
    pub outcome: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    #[serde(default)]
    pub cost: f64,
    pub duration_ms: u64,
}

impl LedgerEntry {
    /// Sets the token fields and the cost from a turn's usage (`None`: left absent, cost 0).
    pub fn with_usage(mut self, usage: Option<Usage>) -> LedgerEntry {
        if let Some(u) = usage {
            self.tokens_in = Some(u.input);
            self.tokens_out = Some(u.output);
            self.cache_read_tokens = Some(u.cache_read);
            self.cache_write_tokens = Some(u.cache_write);
            self.cost = if u.cost.is_finite() { u.cost } else { 0.0 };
        }
        self
    }
}

/// The ledger file a worker appends to; one writer per file.
pub struct Ledger {
    path: PathBuf,
    max_bytes: u64,
    /// The open file and its size, opened on the first line.
    open: Mutex<Option<(File, u64)>>,
    /// Set after a failed write, so a failing disk is reported once, not once per job.
    failing: AtomicBool,
}

impl Ledger {
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64) -> Ledger {
        Ledger {
            path: path.into(),
            max_bytes: max_bytes.max(1),
            open: Mutex::new(None),
            failing: AtomicBool::new(false),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line. `Err` only for the first failure after a success (or after start):
    /// the caller logs it; later failures are silent until a line is written again.
    pub fn append(&self, entry: &LedgerEntry) -> io::Result<()> {
        let result = self.write_line(entry);
        match &result {
            Ok(()) => {
                self.failing.store(false, Ordering::Relaxed);
            }
            Err(_) if self.failing.swap(true, Ordering::Relaxed) => return Ok(()),
            Err(_) => {}
        }
        result
    }

    fn write_line(&self, entry: &LedgerEntry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let mut open = crate::sync::lock(&self.open);
        if open.is_none() {
            *open = Some(open_append(&self.path)?);
        }
        let size = open.as_ref().map_or(0, |(_, size)| *size);
        if size > 0 && size + line.len() as u64 > self.max_bytes {
            *open = None;
            rotate(&self.path)?;
            *open = Some(open_append(&self.path)?);
        }
        let Some((file, size)) = open.as_mut() else {
            return Err(io::Error::other("the ledger file is not open"));
        };
        // One write of the whole line: an O_APPEND write of this size is not interleaved.
        if let Err(e) = file.write_all(&line) {
            // Reopen next time: the file may have been removed or the disk may have room again.
            *open = None;
            return Err(e);
        }
        *size += line.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Who paid this worker what is the operator's business.
        options.mode(0o600);
    }
    let file = options.open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

/// `<file>.<n>`.
fn generation(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Shifts `<file>.1` to `.2` (dropping the oldest) and the live file to `.1`.
fn rotate(path: &Path) -> io::Result<()> {
    for n in (1..KEPT_GENERATIONS).rev() {
        let from = generation(path, n);
        if from.exists() {
            std::fs::rename(&from, generation(path, n + 1))?;
        }
    }
    std::fs::rename(path, generation(path, 1))
}

/// The ledger's files that exist, oldest first.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = (1..=KEPT_GENERATIONS)
        .rev()
        .map(|n| generation(path, n))
        .collect();
    all.push(path.to_path_buf());
    all.into_iter().filter(|p| p.exists()).collect()
}

/// One UTC day of the ledger. `jobs` counts the jobs that ran and ended that day (a JetStream
/// attempt given back for a retry is not a job yet, but what it spent counts); `margin` is
/// `earned - spent`, which means something when requesters' prices and the models' cost config
/// are in the same unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DaySum {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub jobs: u64,
    pub completed: u64,
    pub earned: f64,
    pub spent: f64,
    pub margin: f64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Every token of the day's turns: input, output, cache reads and cache writes (what
    /// `maxDailyTokens` counts).
    pub tokens: u64,
}

/// The fields of a ledger line the day sums read, borrowed from the line (the sums run over
/// every kept file whenever `/pier` is asked, so a line costs no allocation).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summed<'a> {
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    outcome: std::borrow::Cow<'a, str>,
    #[serde(default)]
    earned: f64,
    #[serde(default)]
    cost: f64,
    #[serde(default)]
    tokens_in: Option<u64>,
    #[serde(default)]
    tokens_out: Option<u64>,
    #[serde(default)]
    cache_read_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

/// `{"time":"YYYY-MM-DD`: the day of a line as the worker writes it (time first), read without
/// parsing the line.
fn day_prefix(line: &[u8]) -> Option<&[u8]> {
    line.strip_prefix(b"{\"time\":\"")?.get(..10)
}

/// Per-day sums of the ledger at `path` (with its rotated files), oldest day first, from the
/// UTC day of `since` on (every day when `None`). A missing ledger is no day at all; lines
/// that do not read as entries (a line cut by a crash) are skipped.
pub fn read_days(path: &Path, since: Option<SystemTime>) -> io::Result<Vec<DaySum>> {
    let first_day = since.map(|t| crate::timestamp::rfc3339(t)[..10].to_string());
    let mut days: BTreeMap<String, DaySum> = BTreeMap::new();
    for file in files(path) {
        let reader = match File::open(&file) {
            Ok(f) => BufReader::new(f),
            // Rotated away between the listing and the open.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in reader.split(b'\n') {
            let line = line?;
            // Days before `since` are skipped before any parsing.
            if let (Some(first), Some(day)) = (first_day.as_deref(), day_prefix(&line)) {
                if day < first.as_bytes() {
                    continue;
                }
            }
            let Ok(entry) = serde_json::from_slice::<Summed>(&line) else {
                continue;
            };
            let Some(day) = entry.time.get(..10) else {
                continue;
            };
            if first_day.as_deref().is_some_and(|first| day < first) {
                continue;
            }
            let sum = days.entry(day.to_string()).or_insert_with(|| DaySum {
                day: day.to_string(),
                ..DaySum::default()
            });
            if entry.outcome != "retried" {
                sum.jobs += 1;
            }
            if entry.outcome == "completed" {
                sum.completed += 1;
            }
            if entry.earned.is_finite() {
                sum.earned += entry.earned;
            }
            if entry.cost.is_finite() {
                sum.spent += entry.cost;
            }
            sum.tokens_in += entry.tokens_in.unwrap_or(0);
            sum.tokens_out += entry.tokens_out.unwrap_or(0);
            sum.tokens += [
                entry.tokens_in,
                entry.tokens_out,
                entry.cache_read_tokens,
                entry.cache_write_tokens,
            ]
            .into_iter()
            .map(|n| n.unwrap_or(0))
            .fold(0u64, u64::saturating_add);
        }
    }
    Ok(days
        .into_values()
        .map(|mut d| {
            d.margin = d.earned - d.spent;
            d
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn temp_ledger(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pier-ledger-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        dir.join("nested").join("ledger.jsonl")
    }

    fn entry(time: &str, outcome: &str, earned: f64, cost: f64) -> LedgerEntry {
        LedgerEntry {
            time: time.to_string(),
            worker: "w1".into(),
            id: format!("job-{time}-{outcome}"),
            sender: Some("alice".into()),
            sender_key: None,
            price: Some(earned),
            earned,
            outcome: outcome.to_string(),
            code: None,
            tokens_in: None,
            tokens_out: None,
            cache_read_tokens: None,
            cache_write_tokens: None,
            cost,
            duration_ms: 12,
        }
        .with_usage(Some(Usage {
            input: 100,
            output: 10,
            cache_read: 0,
            cache_write: 0,
            cost,
        }))
    }

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
    }

    #[test]
    fn rotation_keeps_the_ledger_bounded_and_the_newest_lines() {
        let path = temp_ledger("rotate");
        let one = serde_json::to_vec(&entry("2026-12-01T10:00:00.000Z", "completed", 1.0, 0.5))
            .unwrap()
            .len() as u64
            + 1;
        // Room for three lines per file.
        let ledger = Ledger::new(&path, one * 3);
        for _ in 0..20 {
            ledger
                .append(&entry("2026-12-01T10:00:00.000Z", "completed", 1.0, 0.5))
                .unwrap();
        }
        let kept = files(&path);
        assert_eq!(kept.len(), 1 + KEPT_GENERATIONS, "{kept:?}");
        for file in &kept {
            let size = std::fs::metadata(file).unwrap().len();
            assert!(size <= one * 3, "{file:?} is {size} bytes");
        }
        // 20 lines in files of 3: the live file holds the last 2, .1 and .2 three each.
        assert_eq!(lines(&path), 2);
        assert_eq!(lines(&generation(&path, 1)), 3);
        assert_eq!(lines(&generation(&path, 2)), 3);
        assert!(!generation(&path, 3).exists());
        let days = read_days(&path, None).unwrap();
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].jobs, 8, "what rotation kept");
        // A new writer (a restart) appends to the same file and rotates at the same size.
        let again = Ledger::new(&path, one * 3);
        again
            .append(&entry("2026-12-01T11:00:00.000Z", "completed", 1.0, 0.5))
            .unwrap();
        assert_eq!(lines(&path), 3);
        again
            .append(&entry("2026-12-01T11:00:00.000Z", "completed", 1.0, 0.5))
            .unwrap();
        assert_eq!(lines(&path), 1, "rotated at the limit after the restart");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn days_sum_jobs_earnings_and_spending_from_every_kept_file() {
        let path = temp_ledger("days");
        let rows = [
            entry("2026-12-01T23:59:59.000Z", "completed", 5.0, 0.25),
            entry("2026-12-02T00:00:00.000Z", "completed", 5.0, 0.5),
            entry("2026-12-02T08:00:00.000Z", "failed", 0.0, 0.125),
            entry("2026-12-02T09:00:00.000Z", "retried", 0.0, 0.125),
            entry("2026-12-03T09:00:00.000Z", "completed", 2.5, 0.0),
        ];
        // Two lines per file.
        let longest = rows
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap().len() as u64 + 1)
            .max()
            .unwrap();
        let ledger = Ledger::new(&path, longest * 2);
        for row in &rows {
            ledger.append(row).unwrap();
        }
        assert_eq!(files(&path).len(), 3);
        // A torn last line (a crash mid-write) and a stranger's line are skipped.
        let mut live = OpenOptions::new().append(true).open(&path).unwrap();
        live.write_all(b"{\"time\":\"2026-12-03T1").unwrap();
        live.write_all(b"\nnot json\n").unwrap();

        let days = read_days(&path, None).unwrap();
        let wanted = [
            ("2026-12-01", 1, 1, 5.0, 0.25),
            ("2026-12-02", 2, 1, 5.0, 0.75),
            ("2026-12-03", 1, 1, 2.5, 0.0),
        ];
        assert_eq!(days.len(), wanted.len(), "{days:?}");
        for (day, (name, jobs, completed, earned, spent)) in days.iter().zip(wanted) {
            assert_eq!(day.day, name);
            assert_eq!(day.jobs, jobs, "{name}");
            assert_eq!(day.completed, completed, "{name}");
            assert_eq!(day.earned, earned, "{name}");
            assert_eq!(day.spent, spent, "{name}");
            assert_eq!(day.margin, earned - spent, "{name}");
        }
        assert_eq!(days[1].tokens_in, 300, "three lines of 100 on the 2nd");
        assert_eq!(days[1].tokens_out, 30);
        assert_eq!(days[1].tokens, 330, "every kind of token");

        // From the 2nd on (any time of that UTC day).
        let dec_2_noon = UNIX_EPOCH + Duration::from_secs(1_796_169_600 + 12 * 3600);
        assert_eq!(
            crate::timestamp::rfc3339(dec_2_noon)[..10].to_string(),
            "2026-12-02"
        );
        let since = read_days(&path, Some(dec_2_noon)).unwrap();
        assert_eq!(
            since.iter().map(|d| d.day.as_str()).collect::<Vec<_>>(),
            ["2026-12-02", "2026-12-03"]
        );
        assert!(read_days(&path.with_extension("missing"), None)
            .unwrap()
            .is_empty());
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_turn_without_usage_records_no_tokens() {
        let mut e = entry("2026-12-01T10:00:00.000Z", "completed", 1.0, 0.0);
        e.tokens_in = None;
        e.tokens_out = None;
        e.cache_read_tokens = None;
        e.cache_write_tokens = None;
        let line = serde_json::to_string(&e.with_usage(None)).unwrap();
        assert!(!line.contains("tokensIn"), "{line}");
        assert!(line.contains("\"cost\":0.0"), "{line}");
    }
}
