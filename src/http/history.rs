//! The hashrate charts after a restart: the pool's statistics keep six hours of five-minute
//! periods in memory ([`HashrateHistory`](crate::mining::pool::hashrate::HashrateHistory)),
//! which a restart empties. The ledger still has the shares, so at start the HTTP server reads
//! the shares of the six hours before it started (through its own ledger reader, never the
//! writer) and sums their difficulty per period, for the pool and per (user, worker); the
//! charts add these periods to the statistics' own. Shares accepted from then on are the
//! statistics', so nothing is counted twice (but for shares acknowledged in the few
//! milliseconds between the pool's start and the HTTP server's).
//!
//! Bounded: at most [`MAX_SHARES`] shares are read, oldest first (a pool busier than that
//! gets back the older part of the six hours, not the last minutes before the restart), and
//! per-worker periods are kept for at most [`MAX_WORKERS`] (user, worker) pairs; the pool's
//! periods count every share read.

use std::collections::{BTreeMap, HashMap};

use crate::ledger::{Ledger, LedgerError, ShareRange};
use crate::mining::pool::hashrate::{
    HISTORY_PERIOD_MS, HISTORY_PERIODS, HashratePoint, MIN_SPAN_MS, hashrate,
};

/// Shares read from the ledger at most.
pub const MAX_SHARES: usize = 2_000_000;
/// (user, worker) pairs whose periods are kept at most.
pub const MAX_WORKERS: usize = 10_000;
/// Shares per ledger read.
const PAGE: usize = 20_000;

/// Credited difficulty per five-minute period (period number: ms / [`HISTORY_PERIOD_MS`]).
type Periods = BTreeMap<u64, f64>;

/// What the ledger held of the six hours before the server started.
#[derive(Debug, Default)]
pub struct LedgerHistory {
    pool: Periods,
    workers: HashMap<(String, String), Periods>,
    /// Shares read.
    pub shares: usize,
}

impl LedgerHistory {
    /// Reads the shares accepted in `[until_ms - six hours, until_ms)`.
    pub fn read(ledger: &mut dyn Ledger, until_ms: u64) -> Result<Self, LedgerError> {
        let from_ms = until_ms.saturating_sub(HISTORY_PERIOD_MS * HISTORY_PERIODS as u64);
        let mut history = LedgerHistory::default();
        let mut page = ledger.shares(&ShareRange::Time {
            from_ms,
            to_ms: until_ms,
            limit: PAGE,
        })?;
        while let Some(last_id) = page.last().map(|s| s.id) {
            let mut past_end = false;
            for s in &page {
                if s.record.time_ms >= until_ms {
                    past_end = true;
                    break;
                }
                history.add(
                    &s.record.user,
                    &s.record.worker,
                    s.record.difficulty,
                    s.record.time_ms,
                );
            }
            if past_end || page.len() < PAGE || history.shares >= MAX_SHARES {
                break;
            }
            page = ledger.shares(&ShareRange::Ids {
                from_id: last_id.saturating_add(1),
                to_id: u64::MAX,
                limit: PAGE,
            })?;
        }
        Ok(history)
    }

    fn add(&mut self, user: &str, worker: &str, difficulty: f64, time_ms: u64) {
        let period = time_ms / HISTORY_PERIOD_MS;
        self.shares += 1;
        *self.pool.entry(period).or_default() += difficulty;
        let key = (user.to_owned(), worker.to_owned());
        if let Some(periods) = self.workers.get_mut(&key) {
            *periods.entry(period).or_default() += difficulty;
        } else if self.workers.len() < MAX_WORKERS {
            self.workers
                .insert(key, Periods::from([(period, difficulty)]));
        }
    }

    /// The pool's periods.
    pub fn pool(&self) -> &Periods {
        &self.pool
    }

    /// One (user, worker)'s periods.
    pub fn worker(&self, user: &str, worker: &str) -> Option<&Periods> {
        self.workers.get(&(user.to_owned(), worker.to_owned()))
    }

    /// Every (user, worker) with periods, each with them (in no order).
    pub fn workers(&self) -> impl Iterator<Item = (&str, &str, &Periods)> {
        self.workers
            .iter()
            .map(|((u, w), p)| (u.as_str(), w.as_str(), p))
    }

    /// Every worker of `user`, each its periods.
    pub fn user(&self, user: &str) -> impl Iterator<Item = &Periods> {
        self.workers
            .iter()
            .filter(move |((u, _), _)| u == user)
            .map(|(_, p)| p)
    }
}

/// `points` (the statistics', oldest first) with the ledger's `periods` added, as hashrates
/// computed the way the statistics compute them (a period's difficulty over five minutes, the
/// current period's over what has passed of it), limited to the last six hours at `now_ms`.
pub fn merge(points: Vec<HashratePoint>, periods: &[&Periods], now_ms: u64) -> Vec<HashratePoint> {
    if periods.iter().all(|p| p.is_empty()) {
        return points;
    }
    let current = now_ms / HISTORY_PERIOD_MS;
    let oldest = current.saturating_sub(HISTORY_PERIODS as u64 - 1);
    let mut sum: BTreeMap<u64, f64> = BTreeMap::new();
    for p in points {
        *sum.entry(p.start_ms).or_default() += p.hashrate;
    }
    for periods in periods {
        for (&period, &difficulty) in periods.range(oldest..=current) {
            let start_ms = period * HISTORY_PERIOD_MS;
            let span = if period == current {
                now_ms.saturating_sub(start_ms).max(MIN_SPAN_MS)
            } else {
                HISTORY_PERIOD_MS
            };
            *sum.entry(start_ms).or_default() += hashrate(difficulty, span);
        }
    }
    sum.into_iter()
        .map(|(start_ms, hashrate)| HashratePoint { start_ms, hashrate })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bitcoin::hashes::Hash;
    use bitcoin::{BlockHash, Target};

    use super::*;
    use crate::ledger::{LedgerBatch, MemoryLedger, ShareRecord};

    fn share(user: &str, worker: &str, time_ms: u64, difficulty: f64) -> ShareRecord {
        ShareRecord {
            time_ms,
            user: Arc::from(user),
            worker: Arc::from(worker),
            connection_id: 1,
            channel_id: 1,
            job_id: 1,
            target: Target::MAX,
            difficulty,
            hash: BlockHash::all_zeros(),
        }
    }

    #[test]
    fn the_six_hours_before_the_start_come_back_per_period_and_worker() {
        let start = 1_700_000_000_000 / HISTORY_PERIOD_MS * HISTORY_PERIOD_MS;
        let mut ledger = MemoryLedger::new();
        let batch = LedgerBatch {
            shares: vec![
                // Older than six hours: left out.
                share("alice", "rig1", start - 7 * 3_600_000, 100.0),
                share("alice", "rig1", start - 2 * HISTORY_PERIOD_MS, 300.0),
                share("alice", "rig2", start - 2 * HISTORY_PERIOD_MS + 1, 300.0),
                share("bob", "", start - HISTORY_PERIOD_MS, 600.0),
                // After the start: the statistics' own.
                share("bob", "", start + 1, 1_000.0),
            ],
            ..LedgerBatch::default()
        };
        ledger.append(&batch).unwrap();
        let h = LedgerHistory::read(&mut ledger, start).unwrap();
        assert_eq!(h.shares, 3);
        let now = start + 60_000;
        let pool = merge(Vec::new(), &[h.pool()], now);
        let one = hashrate(600.0, HISTORY_PERIOD_MS);
        assert_eq!(pool.len(), 2);
        assert_eq!(pool[0].start_ms, start - 2 * HISTORY_PERIOD_MS);
        assert!((pool[0].hashrate - one).abs() < 1.0);
        assert!((pool[1].hashrate - one).abs() < 1.0);
        assert!(h.worker("alice", "rig2").is_some());
        assert_eq!(h.user("alice").count(), 2);
        assert_eq!(h.user("carol").count(), 0);
        // The statistics' points are added to, period by period.
        let live = vec![HashratePoint {
            start_ms: start - HISTORY_PERIOD_MS,
            hashrate: 5.0,
        }];
        let merged = merge(live, &[h.worker("bob", "").unwrap()], now);
        assert_eq!(merged.len(), 1);
        assert!((merged[0].hashrate - one - 5.0).abs() < 1.0);
    }
}
