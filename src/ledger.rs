//! The ledger (`ledgerFile`): one JSON line per job that ran, with what it earned and what its
//! turn cost, so "what did I earn and spend this week" survives restarts. It holds no task or
//! result text. The file is rotated by size (`ledgerMaxBytes`): when a line would take it past
//! the limit it becomes `<file>.1` (and `.1` becomes `.2`, the oldest kept), so the ledger stays
//! within three files. [`read_days`] sums every kept file per UTC day.
//!
//! Jobs refused before they ran (PRICE_TOO_LOW, OVERLOADED, a bad payload, ...) earn and cost
//! nothing and are not written: a flood of refused junk could otherwise rotate the real history
//! away. They are counted in the metrics and stats.
//!
//! Every run is a line, and its spending counts; a job counts once and earns once. A line names
//! its job (`job`: the key its answer is stored under, see `pipeline::answer_key`), so a
//! JetStream redelivery of a job that already ran is marked `rerun`, and [`Jobs`] (one rule for
//! the writer and the readers) counts the job at its first line that ends it and its earnings
//! at its first delivered result. An answer that was never delivered is `undelivered`, never
//! `completed`, and earns nothing.
//!
//! A line cut short by a crash never swallows the next: an append to a file that does not end
//! with a line break starts with one, and readers skip lines they cannot read, and count them.

use crate::handler::Usage;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// Rotated generations kept besides the live file: `<file>.1`, `<file>.2`.
pub const KEPT_GENERATIONS: usize = 2;

/// `outcome` of a run given back to JetStream for another attempt.
pub const RETRIED: &str = "retried";
/// `outcome` of a run whose answer could not be delivered.
pub const UNDELIVERED: &str = "undelivered";

/// Whether a line with `outcome` ends its job (counts it): every outcome but `retried` and
/// `undelivered`, after which the job runs again.
pub fn ends_job(outcome: &str) -> bool {
    outcome != RETRIED && outcome != UNDELIVERED
}

/// One run of a job. `time` is when it ended (RFC 3339 UTC); `price` what the request offered
/// (`meta.price`), `earned` what it earned (the price when its result was delivered and the job
/// had not earned before, else 0); `cost` in the unit of the model's cost config. Token fields
/// are absent when the handler measured nothing (echo, a command).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub time: String,
    pub worker: String,
    pub id: String,
    /// What names the job across its runs (its answer key), where it can run again: a
    /// JetStream job, or a signed one. Absent for an unsigned job over core NATS (a run of its
    /// own), and in lines of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_key: Option<String>,
    #[serde(default)]
    pub price: Option<f64>,
    #[serde(default)]
    pub earned: f64,
    /// `completed`, `failed`, `timed_out`, `rejected` (SHUTTING_DOWN: the stop cut it off; of
    /// stats' `rejected` codes, the one a job that ran can end with), `retried` (given back to
    /// JetStream for another attempt: its spending counts, the job does not yet) or
    /// `undelivered` (its answer could not be sent: its spending counts, the job does not, and
    /// JetStream runs it again; `code` is the error it answered, if it was one).
    pub outcome: String,
    /// The job had run before (a JetStream redelivery): its spending counts, the job and its
    /// earnings only if no earlier run counted them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rerun: bool,
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
    /// The open file, its size, and whether it ends with a line break (or is empty), opened on
    /// the first line.
    open: Mutex<Option<(File, u64, bool)>>,
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
        let mut line = Vec::with_capacity(320);
        // Room for a line break first, in case the file ends with a line cut short.
        line.push(b'\n');
        serde_json::to_writer(&mut line, entry)?;
        line.push(b'\n');
        let mut open = crate::sync::lock(&self.open);
        if open.is_none() {
            *open = Some(open_append(&self.path)?);
        }
        // What this line adds: without the leading line break when the file ends clean.
        let adds = |clean: bool| line.len() as u64 - u64::from(clean);
        let (size, clean) = open
            .as_ref()
            .map_or((0, true), |(_, size, clean)| (*size, *clean));
        if size > 0 && size + adds(clean) > self.max_bytes {
            *open = None;
            rotate(&self.path)?;
            *open = Some(open_append(&self.path)?);
        }
        let Some((file, size, clean)) = open.as_mut() else {
            return Err(io::Error::other("the ledger file is not open"));
        };
        // A file that ends with a line cut short (a crash mid-write) gets a line break first,
        // so that line stays alone and this one reads.
        let line = if *clean { &line[1..] } else { &line[..] };
        // One write of the whole line: an O_APPEND write of this size is not interleaved.
        if let Err(e) = file.write_all(line) {
            // Reopen next time: the file may have been removed or the disk may have room again
            // (and may end with part of this line).
            *open = None;
            return Err(e);
        }
        *size += line.len() as u64;
        *clean = true;
        Ok(())
    }
}

/// Whether the file at `path` is empty or ends with a line break.
fn ends_clean(path: &Path, size: u64) -> io::Result<bool> {
    if size == 0 {
        return Ok(true);
    }
    let mut file = File::open(path)?;
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

fn open_append(path: &Path) -> io::Result<(File, u64, bool)> {
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
    Ok((file, size, ends_clean(path, size)?))
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

/// How one line counts, by [`Jobs::count`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    /// The job had a line before: this run is a rerun.
    pub rerun: bool,
    /// The line ends its job, and no earlier line did: the job counts here.
    pub job: bool,
    /// The line's delivered result earns, and no earlier line earned for the job.
    pub earns: bool,
}

/// What a ledger's lines say of the jobs they name (by the `job` key), so that the writer
/// marks a rerun and earns a job once, and the readers count each job and its earnings once,
/// by the same rule. Holds at most `cap` jobs (the oldest forgotten first).
#[derive(Debug)]
pub struct Jobs {
    /// Per job: it has counted (a line ended it), it has earned.
    seen: HashMap<String, (bool, bool)>,
    order: VecDeque<String>,
    cap: usize,
}

/// How many jobs a worker remembers: far more than a JetStream redelivery can span.
pub const JOBS_REMEMBERED: usize = 100_000;

impl Jobs {
    pub fn with_cap(cap: usize) -> Jobs {
        Jobs {
            seen: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Counts one line of job `job` (`None`: a line that names no job, counted on its own)
    /// whose outcome `ends` the job (see [`ends_job`]) and whose result was delivered with a
    /// price (`earning`).
    pub fn count(&mut self, job: Option<&str>, ends: bool, earning: bool) -> Counted {
        let Some(job) = job else {
            return Counted {
                rerun: false,
                job: ends,
                earns: earning,
            };
        };
        let (counted, earned) = match self.seen.get_mut(job) {
            Some(seen) => {
                let before = *seen;
                seen.0 |= ends;
                seen.1 |= earning;
                return Counted {
                    rerun: true,
                    job: ends && !before.0,
                    earns: earning && !before.1,
                };
            }
            None => (ends, earning),
        };
        if self.seen.len() >= self.cap {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(job.to_string(), (counted, earned));
        self.order.push_back(job.to_string());
        Counted {
            rerun: false,
            job: ends,
            earns: earning,
        }
    }
}

/// One UTC day of the ledger. `jobs` counts the jobs that ended that day, each once (a
/// JetStream attempt given back for a retry, or a run whose answer was undelivered, is not a
/// job yet, but what it spent counts); `margin` is `earned - spent`, which means something when
/// requesters' prices and the models' cost config are in the same unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DaySum {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub jobs: u64,
    pub completed: u64,
    /// Runs whose answer could not be delivered (`undelivered` lines).
    pub undelivered: u64,
    /// Runs of jobs that had run before (JetStream redeliveries).
    pub reruns: u64,
    /// Each job's `meta.price` once, when its result was delivered.
    pub earned: f64,
    pub spent: f64,
    pub margin: f64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Every token of the day's turns: input, output, cache reads and cache writes (what
    /// `maxDailyTokens` counts).
    pub tokens: u64,
}

impl DaySum {
    /// Adds one line's count: its job, completion, earnings, undelivered answer and rerun.
    pub fn count(&mut self, outcome: &str, counted: Counted, earned: f64) {
        if counted.job {
            self.jobs += 1;
            if outcome == "completed" {
                self.completed += 1;
            }
        }
        if outcome == UNDELIVERED {
            self.undelivered += 1;
        }
        if counted.rerun {
            self.reruns += 1;
        }
        if counted.earns && earned.is_finite() {
            self.earned += earned;
        }
        self.margin = self.earned - self.spent;
    }

    /// Adds what one run spent.
    fn spend(&mut self, cost: f64, tokens: [Option<u64>; 4]) {
        if cost.is_finite() {
            self.spent += cost;
        }
        self.tokens_in += tokens[0].unwrap_or(0);
        self.tokens_out += tokens[1].unwrap_or(0);
        self.tokens = tokens
            .into_iter()
            .map(|n| n.unwrap_or(0))
            .fold(self.tokens, u64::saturating_add);
        self.margin = self.earned - self.spent;
    }
}

/// The fields of a ledger line the day sums read, borrowed from the line (the sums run over
/// every kept file whenever `/pier` is asked, so a line costs no allocation).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summed<'a> {
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    job: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    outcome: std::borrow::Cow<'a, str>,
    #[serde(default)]
    rerun: bool,
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

/// What the ledger's kept files say: the per-day sums, how many lines could not be read (a
/// line cut by a crash, a stranger's line), and the jobs the lines named.
#[derive(Debug)]
pub struct LedgerRead {
    /// Oldest day first.
    pub days: Vec<DaySum>,
    pub unreadable: u64,
    pub jobs: Jobs,
}

/// Per-day sums of the ledger at `path` (with its rotated files), oldest day first, from the
/// UTC day of `since` on (every day when `None`). A missing ledger is no day at all; lines
/// that do not read as entries (a line cut by a crash) are skipped.
pub fn read_days(path: &Path, since: Option<SystemTime>) -> io::Result<Vec<DaySum>> {
    read(path, since, usize::MAX).map(|read| read.days)
}

/// Reads the ledger at `path` (with its rotated files) from the UTC day of `since` on (every
/// day when `None`): per-day sums, each job and its earnings counted once ([`Jobs`], holding
/// at most `jobs_cap` jobs), unreadable lines skipped and counted. A missing ledger is no day
/// at all.
pub fn read(path: &Path, since: Option<SystemTime>, jobs_cap: usize) -> io::Result<LedgerRead> {
    let first_day = since.map(|t| crate::timestamp::rfc3339(t)[..10].to_string());
    let mut days: BTreeMap<String, DaySum> = BTreeMap::new();
    let mut jobs = Jobs::with_cap(jobs_cap);
    let mut unreadable = 0;
    for file in files(path) {
        let reader = match File::open(&file) {
            Ok(f) => BufReader::new(f),
            // Rotated away between the listing and the open.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in reader.split(b'\n') {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Days before `since` are skipped before any parsing.
            if let (Some(first), Some(day)) = (first_day.as_deref(), day_prefix(&line)) {
                if day < first.as_bytes() {
                    continue;
                }
            }
            let Ok(entry) = serde_json::from_slice::<Summed>(&line) else {
                unreadable += 1;
                continue;
            };
            let Some(day) = entry.time.get(..10) else {
                unreadable += 1;
                continue;
            };
            if first_day.as_deref().is_some_and(|first| day < first) {
                continue;
            }
            let sum = days.entry(day.to_string()).or_insert_with(|| DaySum {
                day: day.to_string(),
                ..DaySum::default()
            });
            let earning = entry.outcome == "completed" && entry.earned > 0.0;
            let mut counted = jobs.count(entry.job.as_deref(), ends_job(&entry.outcome), earning);
            // A rerun of a job whose first run is not in what was read.
            counted.rerun |= entry.rerun;
            sum.count(&entry.outcome, counted, entry.earned);
            sum.spend(
                entry.cost,
                [
                    entry.tokens_in,
                    entry.tokens_out,
                    entry.cache_read_tokens,
                    entry.cache_write_tokens,
                ],
            );
        }
    }
    Ok(LedgerRead {
        days: days.into_values().collect(),
        unreadable,
        jobs,
    })
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
            job: None,
            sender: Some("alice".into()),
            sender_key: None,
            price: Some(earned),
            earned,
            outcome: outcome.to_string(),
            rerun: false,
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
        assert_eq!(
            read(&path, None, usize::MAX).unwrap().unreadable,
            2,
            "the torn line and the stranger's, counted"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_line_cut_short_by_a_crash_never_swallows_the_next() {
        let path = temp_ledger("torn");
        let ledger = Ledger::new(&path, 1 << 20);
        ledger
            .append(&entry("2026-12-03T10:00:00.000Z", "completed", 5.0, 0.5))
            .unwrap();
        // The worker dies in the middle of its next line.
        let mut live = OpenOptions::new().append(true).open(&path).unwrap();
        live.write_all(b"{\"time\":\"2026-12-03T11:00:00.000Z\",\"wor")
            .unwrap();
        drop(live);
        // Started again, it writes its next line after the cut one, not onto it.
        let again = Ledger::new(&path, 1 << 20);
        again
            .append(&entry("2026-12-03T12:00:00.000Z", "completed", 2.0, 0.25))
            .unwrap();
        again
            .append(&entry("2026-12-03T13:00:00.000Z", "completed", 1.0, 0.25))
            .unwrap();
        let read = read(&path, None, usize::MAX).unwrap();
        assert_eq!(read.unreadable, 1, "the cut line, skipped and counted");
        assert_eq!(read.days.len(), 1);
        let day = &read.days[0];
        assert_eq!((day.jobs, day.earned, day.spent), (3, 8.0, 1.0), "{day:?}");
        assert_eq!(lines(&path), 4, "the cut line stands alone");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    /// A line of job `job` (its answer key) that ended at `time` with `outcome`.
    fn run(time: &str, job: &str, outcome: &str, earned: f64, rerun: bool) -> LedgerEntry {
        LedgerEntry {
            job: Some(job.to_string()),
            rerun,
            ..entry(time, outcome, earned, 0.25)
        }
    }

    #[test]
    fn a_job_counts_once_and_earns_once_and_every_run_spends() {
        let path = temp_ledger("reruns");
        let ledger = Ledger::new(&path, 1 << 20);
        let rows = [
            // Its answer could not be delivered: spent, not a job, no earnings.
            run(
                "2026-12-04T10:00:00.000Z",
                "pier-seq-7",
                UNDELIVERED,
                0.0,
                false,
            ),
            // Redelivered and run again: delivered, so the job counts and earns here.
            run(
                "2026-12-04T10:00:05.000Z",
                "pier-seq-7",
                "completed",
                5.0,
                true,
            ),
            // Its ack was lost: run once more by a worker that did not know (it wrote the
            // price again); the reader counts neither the job nor its price twice.
            run(
                "2026-12-04T10:01:00.000Z",
                "pier-seq-7",
                "completed",
                5.0,
                true,
            ),
            // Another job, given back for a retry, then completed.
            run("2026-12-04T11:00:00.000Z", "pier-k-1", RETRIED, 0.0, false),
            run(
                "2026-12-04T11:00:02.000Z",
                "pier-k-1",
                "completed",
                3.0,
                true,
            ),
            // A job whose every run was undelivered: no job, no earnings.
            run(
                "2026-12-04T12:00:00.000Z",
                "pier-seq-9",
                UNDELIVERED,
                0.0,
                false,
            ),
        ];
        for row in &rows {
            ledger.append(row).unwrap();
        }
        let read = read(&path, None, usize::MAX).unwrap();
        let day = &read.days[0];
        assert_eq!((day.jobs, day.completed), (2, 2), "{day:?}");
        assert_eq!(day.earned, 8.0, "each job's price once: {day:?}");
        assert_eq!(day.spent, 1.5, "every run's spending: {day:?}");
        assert_eq!((day.undelivered, day.reruns), (2, 3), "{day:?}");
        assert_eq!(day.margin, 6.5);
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(
            written.contains("\"outcome\":\"completed\",\"rerun\":true"),
            "{written}"
        );
        assert!(
            !written.lines().next().unwrap().contains("rerun"),
            "a first run says nothing of reruns"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn the_writers_rule_marks_a_rerun_and_earns_a_job_once() {
        let mut jobs = Jobs::with_cap(2);
        let first = jobs.count(Some("a"), false, false);
        assert_eq!(first, Counted::default(), "undelivered: nothing yet");
        let second = jobs.count(Some("a"), true, true);
        assert_eq!(
            second,
            Counted {
                rerun: true,
                job: true,
                earns: true
            }
        );
        let third = jobs.count(Some("a"), true, true);
        assert_eq!(
            third,
            Counted {
                rerun: true,
                job: false,
                earns: false
            }
        );
        // A line that names no job (an older version's) counts on its own.
        assert!(jobs.count(None, true, true).job);
        assert!(!jobs.count(None, true, true).rerun);
        // Beyond its cap the oldest job is forgotten.
        jobs.count(Some("b"), true, false);
        jobs.count(Some("c"), true, false);
        assert!(!jobs.count(Some("a"), true, false).rerun, "forgotten");
        assert!(jobs.count(Some("c"), true, false).rerun);
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
