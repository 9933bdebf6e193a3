//! Per-sender shares (`senderJobsPerMinute`, `unsignedJobsPerMinute`): how many jobs each
//! verified sender key, and all unsigned jobs together, ran in the last minute.
//!
//! Each share is a sliding one-minute window, counted the usual cheap way: the jobs of the
//! current minute plus those of the previous minute weighted by how much of it still lies in
//! the last 60 s. A burst from a sender is cut at exactly its limit; memory is two counters per
//! key. A key is forgotten once both its minutes have passed (it has used nothing in the last
//! minute), and at most [`SENDER_MEMORY_CAP`] keys are kept: when that many keys ran jobs in the
//! last two minutes, further new keys share one window together (they are counted as one
//! sender) until keys are forgotten, so a flood of fresh keys never grows the memory and never
//! takes the shares of the senders already counted.
//!
//! Only jobs that run use a share: admission reads the windows ([`RateLimits::used`]), and the
//! pipeline counts a job ([`RateLimits::take`]) once it has taken the job's slot.

use std::collections::HashMap;

/// Sender keys whose windows are kept at most.
pub const SENDER_MEMORY_CAP: usize = 10_000;

const MINUTE_MS: i64 = 60_000;

/// Jobs counted in one sender's sliding minute.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Window {
    /// When the current minute began (Unix ms).
    start: i64,
    /// Jobs of the minute before it.
    prev: u32,
    /// Jobs of the current minute.
    curr: u32,
}

impl Window {
    /// The window as it stands at `now_ms`.
    fn at(self, now_ms: i64) -> Window {
        if now_ms < self.start + MINUTE_MS {
            self
        } else if now_ms < self.start + 2 * MINUTE_MS {
            Window {
                start: self.start + MINUTE_MS,
                prev: self.curr,
                curr: 0,
            }
        } else {
            Window {
                start: now_ms,
                prev: 0,
                curr: 0,
            }
        }
    }

    /// Jobs in the minute before `now_ms`, estimated.
    fn used(self, now_ms: i64) -> f64 {
        let w = self.at(now_ms);
        let into = (now_ms - w.start).clamp(0, MINUTE_MS) as f64 / MINUTE_MS as f64;
        f64::from(w.prev) * (1.0 - into) + f64::from(w.curr)
    }

    /// Nothing left in it at `now_ms`: it can be forgotten.
    fn idle(self, now_ms: i64) -> bool {
        now_ms >= self.start + 2 * MINUTE_MS || (self.prev == 0 && self.curr == 0)
    }

    /// Counts a job at `now_ms` if the window has room under `limit`.
    fn take(&mut self, limit: u32, now_ms: i64) -> bool {
        if self.used(now_ms) + 1.0 > f64::from(limit) {
            return false;
        }
        *self = self.at(now_ms);
        self.curr = self.curr.saturating_add(1);
        true
    }
}

/// The windows of every sender counted, and the one of the unsigned jobs.
#[derive(Debug)]
pub(crate) struct RateLimits {
    senders: HashMap<String, Window>,
    unsigned: Window,
    /// New keys past the cap, together.
    overflow: Window,
    cap: usize,
    /// When idle keys were last swept out at the cap.
    swept_ms: i64,
}

impl RateLimits {
    pub(crate) fn new(cap: usize) -> RateLimits {
        RateLimits {
            senders: HashMap::new(),
            unsigned: Window::default(),
            overflow: Window::default(),
            cap: cap.max(1),
            swept_ms: i64::MIN,
        }
    }

    /// The window a job of `sender` (a verified key; `None`: unsigned) is counted in, if it has
    /// one yet.
    fn window(&self, sender: Option<&str>) -> Option<Window> {
        match sender {
            None => Some(self.unsigned),
            Some(key) => match self.senders.get(key) {
                Some(w) => Some(*w),
                None if self.senders.len() >= self.cap => Some(self.overflow),
                None => None,
            },
        }
    }

    /// Jobs `sender` ran in the minute before `now_ms` (its share's use), estimated.
    pub(crate) fn used(&self, sender: Option<&str>, now_ms: i64) -> f64 {
        self.window(sender).map_or(0.0, |w| w.used(now_ms))
    }

    /// Counts a job of `sender` at `now_ms`, if its share has room under `limit`.
    pub(crate) fn take(&mut self, sender: Option<&str>, limit: u32, now_ms: i64) -> bool {
        let Some(key) = sender else {
            return self.unsigned.take(limit, now_ms);
        };
        if let Some(window) = self.senders.get_mut(key) {
            return window.take(limit, now_ms);
        }
        // A new key: forget the idle ones first when the memory is full (at most once a second,
        // so a flood of new keys at the cap does not sweep the map on every job).
        if self.senders.len() >= self.cap && now_ms.saturating_sub(self.swept_ms) >= 1000 {
            self.swept_ms = now_ms;
            self.senders.retain(|_, w| !w.idle(now_ms));
        }
        if self.senders.len() >= self.cap {
            return self.overflow.take(limit, now_ms);
        }
        let mut window = Window::default();
        let taken = window.take(limit, now_ms);
        if taken {
            self.senders.insert(key.to_string(), window);
        }
        taken
    }

    /// Keys counted now.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn a_burst_is_cut_at_the_limit_and_the_share_comes_back_as_the_minute_slides() {
        let mut rates = RateLimits::new(SENDER_MEMORY_CAP);
        let taken: Vec<bool> = (0..5).map(|i| rates.take(Some("A"), 3, T0 + i)).collect();
        assert_eq!(taken, [true, true, true, false, false]);
        // Another key and the unsigned jobs have shares of their own.
        assert!(rates.take(Some("B"), 3, T0 + 10));
        assert!(rates.take(None, 1, T0 + 10));
        assert!(!rates.take(None, 1, T0 + 11));
        assert_eq!(rates.used(Some("A"), T0 + 20), 3.0);
        // 30 s into the next minute, half of the last one still counts: 1.5 of 3 used.
        let later = T0 + MINUTE_MS + MINUTE_MS / 2;
        assert_eq!(rates.used(Some("A"), later), 1.5);
        assert!(rates.take(Some("A"), 3, later));
        assert!(
            !rates.take(Some("A"), 3, later),
            "2.5 used: no room for one more"
        );
        // Two minutes on, nothing is left.
        assert_eq!(rates.used(Some("A"), T0 + 3 * MINUTE_MS), 0.0);
        assert!(rates.take(Some("A"), 3, T0 + 3 * MINUTE_MS));
    }

    #[test]
    fn the_memory_of_keys_is_bounded_and_idle_keys_are_forgotten() {
        let mut rates = RateLimits::new(3);
        for key in ["k1", "k2", "k3"] {
            assert!(rates.take(Some(key), 2, T0));
        }
        // At the cap, new keys share one window: two of them, then no more.
        assert!(rates.take(Some("k4"), 2, T0 + 1));
        assert!(rates.take(Some("k5"), 2, T0 + 1));
        assert!(!rates.take(Some("k6"), 2, T0 + 1));
        assert_eq!(rates.keys(), 3);
        // The keys already counted keep their own shares.
        assert!(rates.take(Some("k1"), 2, T0 + 2));
        // Once their minutes have passed, the idle keys are forgotten and new keys counted.
        let later = T0 + 2 * MINUTE_MS + 5;
        assert!(rates.take(Some("k7"), 2, later));
        assert_eq!(rates.keys(), 1, "k1..k3 forgotten, k7 kept");
    }
}
