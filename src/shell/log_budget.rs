//! Logs an attacker cannot fill: a connection refused, a handshake failed, a channel refused
//! are events a remote host decides, so each is counted per reason and only the first few of
//! each reason per period are logged one by one; the rest appear as one summary line per
//! period with the counts. (Before: one WARN per refused connection, 27.8 MB of log in 46 s.)
//!
//! Sans-IO: fed the time, it says whether to log this one; a task of the shell asks it for the
//! summary once per period. Shared by every connection task, so one short lock per event.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

/// How many events of one reason are logged one by one per period.
pub const LOGGED_PER_PERIOD: u32 = 5;
/// The summary period.
pub const PERIOD_MS: u64 = 60_000;

/// Counts events per reason; decides which are logged one by one.
#[derive(Debug)]
pub struct LogBudget<R: Ord + Copy> {
    inner: Mutex<Counts<R>>,
    logged_per_period: u32,
    period_ms: u64,
}

#[derive(Debug)]
struct Counts<R> {
    /// When the current period began (unix ms).
    since_ms: u64,
    /// Per reason: (events this period, of which logged one by one).
    by_reason: BTreeMap<R, (u64, u32)>,
}

/// What happened in one period: the count per reason, and how many were not logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<R> {
    /// Length of the period (ms).
    pub period_ms: u64,
    /// Events per reason, in reason order.
    pub counts: Vec<(R, u64)>,
    /// Events not logged one by one.
    pub suppressed: u64,
}

impl<R: Ord + Copy + fmt::Display> fmt::Display for Summary<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "in the last {} s:", self.period_ms / 1000)?;
        for (i, (reason, n)) in self.counts.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{reason} {n}")?;
        }
        write!(f, " ({} not logged one by one)", self.suppressed)
    }
}

impl<R: Ord + Copy> LogBudget<R> {
    /// The default budget: [`LOGGED_PER_PERIOD`] per reason per [`PERIOD_MS`].
    pub fn new(now_ms: u64) -> Self {
        Self::with_limits(LOGGED_PER_PERIOD, PERIOD_MS, now_ms)
    }

    /// `logged_per_period` events per reason logged one by one per `period_ms`.
    pub fn with_limits(logged_per_period: u32, period_ms: u64, now_ms: u64) -> Self {
        LogBudget {
            inner: Mutex::new(Counts {
                since_ms: now_ms,
                by_reason: BTreeMap::new(),
            }),
            logged_per_period,
            period_ms: period_ms.max(1),
        }
    }

    /// Counts one event of `reason`; true when it may be logged one by one.
    pub fn admit(&self, reason: R) -> bool {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = c.by_reason.entry(reason).or_insert((0, 0));
        entry.0 += 1;
        if entry.1 < self.logged_per_period {
            entry.1 += 1;
            true
        } else {
            false
        }
    }

    /// When the current period ends (unix ms): the time to ask for [`Self::take_summary`].
    pub fn period_end(&self) -> u64 {
        let c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.since_ms + self.period_ms
    }

    /// Once the period is over: its summary if anything happened (log it as one line), and a
    /// new period begins. Before the period's end, or with nothing counted: `None`.
    pub fn take_summary(&self, now_ms: u64) -> Option<Summary<R>> {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if now_ms < c.since_ms + self.period_ms {
            return None;
        }
        let period_ms = now_ms - c.since_ms;
        c.since_ms = now_ms;
        let by_reason = std::mem::take(&mut c.by_reason);
        drop(c);
        let suppressed: u64 = by_reason.values().map(|(n, l)| n - u64::from(*l)).sum();
        if by_reason.is_empty() {
            return None;
        }
        Some(Summary {
            period_ms,
            counts: by_reason.into_iter().map(|(r, (n, _))| (r, n)).collect(),
            suppressed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_few_per_reason_are_logged_then_only_counted() {
        let b = LogBudget::with_limits(3, 60_000, 0);
        let logged = (0..10_000).filter(|_| b.admit("refused")).count();
        assert_eq!(logged, 3);
        assert!(b.admit("handshake"), "another reason has its own budget");
        assert_eq!(b.take_summary(59_999), None, "not before the period ends");
        let s = b.take_summary(60_000).expect("a summary");
        assert_eq!(s.counts, vec![("handshake", 1), ("refused", 10_000)]);
        assert_eq!(s.suppressed, 9_997);
        assert_eq!(
            s.to_string(),
            "in the last 60 s: handshake 1, refused 10000 (9997 not logged one by one)"
        );
        // A new period: the budget is back, and a quiet period says nothing.
        assert!(b.admit("refused"));
        assert!(b.take_summary(120_000).is_some());
        assert_eq!(b.take_summary(180_000), None);
    }
}
