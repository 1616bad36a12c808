//! Statistics per (user, worker), the pair the ledger pays and an operator watches: shares
//! accepted and refused (by reason: a worker sending stale or duplicate shares shows which),
//! credited difficulty, blocks found, the recent hashrate
//! ([`HashrateWindow`]). A channel's user_identity (and the worker name of a 0x0002 TLV, when
//! a proxy sends one) is split into the pair once per identity, as the ledger splits it
//! ([`ledger_user`]); shares reach the table in batches at fold time, never one by one under
//! the pool's lock.
//!
//! Each pair keeps a six-hour history of five-minute periods ([`HashrateHistory`], at most 576
//! bytes), and the table one for the whole pool, for the charts.
//!
//! Bounded: at most [`DEFAULT_MAX_WORKERS`] pairs (at the cap, shares of a new pair are counted
//! under ([`OTHER`], [`OTHER`]) in constant time: a proxy inventing worker names cannot make
//! each share scan the table under the pool's lock), and pairs with no share for [`WORKER_RETENTION_MS`] are forgotten by the pool's
//! clean-up. Metrics label each pair only up to a limit ([`worker_series`], [`user_series`]): the rest are summed
//! under [`OTHER`], so a crowd of worker names cannot blow up a time-series database.

use std::collections::HashMap;
use std::sync::Arc;

use super::hashrate::{HashrateHistory, HashrateWindow};
use crate::mining::ShareRejection;
use crate::payout::identity::ledger_user;

/// Pairs kept at most.
pub const DEFAULT_MAX_WORKERS: usize = 50_000;
/// A pair with no share (accepted or refused) for this long is forgotten (ms): an hour.
pub const WORKER_RETENTION_MS: u64 = 3_600_000;
/// The label value of the pairs folded together beyond the label limit.
pub const OTHER: &str = "other";
/// (identity, TLV worker) spellings remembered per pair at most before the alias table is
/// cleared (it is rebuilt from the next shares).
const MAX_ALIASES: usize = 4 * DEFAULT_MAX_WORKERS;

/// A (user, worker) pair: the ledger's user (payout address or account) and worker name
/// (empty if none).
pub type WorkerKey = (Arc<str>, Arc<str>);

/// What the pool knows of one (user, worker).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStats {
    /// The user.
    pub user: Arc<str>,
    /// The worker, empty if none.
    pub worker: Arc<str>,
    /// Shares accepted (credited).
    pub accepted_shares: u64,
    /// Shares refused.
    pub rejected_shares: u64,
    /// Shares refused, per [`ShareRejection::index`] (see [`Self::rejected_by_reason`]).
    pub rejected_per_reason: [u64; ShareRejection::ALL.len()],
    /// Sum of the difficulty its accepted shares were credited at.
    pub credited_difficulty: f64,
    /// Blocks its shares found.
    pub blocks_found: u64,
    /// When it was first seen (ms).
    pub first_seen_ms: u64,
    /// Its last share, accepted or refused (ms).
    pub last_share_ms: u64,
    /// Its last accepted share (ms), if any.
    pub last_accepted_ms: Option<u64>,
    /// Credited difficulty of the last minutes.
    pub window: HashrateWindow,
    /// Credited difficulty per five-minute period, the last six hours (the chart's).
    pub history: HashrateHistory,
}

impl WorkerStats {
    fn new(user: Arc<str>, worker: Arc<str>, now_ms: u64) -> Self {
        WorkerStats {
            user,
            worker,
            accepted_shares: 0,
            rejected_shares: 0,
            rejected_per_reason: [0; ShareRejection::ALL.len()],
            credited_difficulty: 0.0,
            blocks_found: 0,
            first_seen_ms: now_ms,
            last_share_ms: now_ms,
            last_accepted_ms: None,
            window: HashrateWindow::new(),
            history: HashrateHistory::new(),
        }
    }

    /// Its refused shares by reason, the reasons it had only.
    pub fn rejected_by_reason(&self) -> impl Iterator<Item = (ShareRejection, u64)> + '_ {
        ShareRejection::ALL
            .iter()
            .zip(self.rejected_per_reason)
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| (*reason, n))
    }

    /// Estimated hashrate (h/s) over the last minutes, at `now_ms`.
    pub fn hashrate(&self, now_ms: u64) -> f64 {
        self.window.hashrate(self.first_seen_ms, now_ms)
    }
}

/// The pair a channel's user_identity and TLV worker name are credited to ([`ledger_user`]).
fn worker_key(identity: &str, tlv_worker: Option<&Arc<str>>) -> WorkerKey {
    let (user, worker) = ledger_user(identity, tlv_worker.map(|w| &**w));
    (user.into(), worker.into())
}

/// Every (user, worker) of the pool.
#[derive(Debug, Default)]
pub struct WorkerTable {
    workers: HashMap<WorkerKey, WorkerStats>,
    /// A channel's (user_identity, TLV worker) → its pair, so the split is done once.
    aliases: HashMap<(Arc<str>, Option<Arc<str>>), WorkerKey>,
    /// Pairs kept at most (0: [`DEFAULT_MAX_WORKERS`]).
    max_workers: usize,
    /// Every pair's credited difficulty together, per five-minute period (the pool's chart).
    history: HashrateHistory,
}

impl WorkerTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps at most `max` pairs (and the overflow pair, ([`OTHER`], [`OTHER`])).
    pub fn set_max_workers(&mut self, max: usize) {
        self.max_workers = max.max(1);
    }

    fn max_workers(&self) -> usize {
        if self.max_workers == 0 {
            DEFAULT_MAX_WORKERS
        } else {
            self.max_workers
        }
    }

    /// The pair of a channel's user_identity and TLV worker name.
    fn key(&mut self, identity: &Arc<str>, tlv_worker: Option<&Arc<str>>) -> WorkerKey {
        let alias = (identity.clone(), tlv_worker.cloned());
        if let Some(key) = self.aliases.get(&alias) {
            return key.clone();
        }
        let key = worker_key(identity, tlv_worker);
        if self.aliases.len() >= MAX_ALIASES {
            self.aliases.clear();
        }
        self.aliases.insert(alias, key.clone());
        key
    }

    /// The pair a channel's user_identity is credited to (with no TLV worker).
    pub fn pair_of(&self, identity: &Arc<str>) -> WorkerKey {
        match self.aliases.get(&(identity.clone(), None)) {
            Some(key) => key.clone(),
            None => worker_key(identity, None),
        }
    }

    fn entry(
        &mut self,
        identity: &Arc<str>,
        tlv_worker: Option<&Arc<str>>,
        now_ms: u64,
    ) -> &mut WorkerStats {
        let mut key = self.key(identity, tlv_worker);
        if !self.workers.contains_key(&key) && self.workers.len() >= self.max_workers() {
            key = (OTHER.into(), OTHER.into());
        }
        self.workers
            .entry(key.clone())
            .or_insert_with(|| WorkerStats::new(key.0, key.1, now_ms))
    }

    /// `count` accepted shares worth `difficulty` together, the last at `last_ms`.
    pub fn credit(
        &mut self,
        identity: &Arc<str>,
        tlv_worker: Option<&Arc<str>>,
        count: u64,
        difficulty: f64,
        last_ms: u64,
    ) {
        if count == 0 {
            return;
        }
        let w = self.entry(identity, tlv_worker, last_ms);
        w.accepted_shares += count;
        w.credited_difficulty += difficulty;
        w.last_share_ms = w.last_share_ms.max(last_ms);
        w.last_accepted_ms = Some(w.last_accepted_ms.unwrap_or(0).max(last_ms));
        w.window.add(difficulty, last_ms);
        w.history.add(difficulty, last_ms);
        self.history.add(difficulty, last_ms);
    }

    /// `count` shares refused for `reason`, the last at `last_ms`.
    pub fn reject(
        &mut self,
        identity: &Arc<str>,
        tlv_worker: Option<&Arc<str>>,
        reason: ShareRejection,
        count: u64,
        last_ms: u64,
    ) {
        if count == 0 {
            return;
        }
        // A worker named only by refused shares is not a worker: counted under the channel's
        // own, so junk shares naming a new worker each make no entries (nor the webhooks'
        // worker_online and worker_offline events they would bring).
        let tlv_worker =
            tlv_worker.filter(|w| self.workers.contains_key(&worker_key(identity, Some(w))));
        let w = self.entry(identity, tlv_worker, last_ms);
        w.rejected_shares += count;
        w.rejected_per_reason[reason.index()] += count;
        w.last_share_ms = w.last_share_ms.max(last_ms);
    }

    /// A block found by a share of `identity`.
    pub fn block_found(&mut self, identity: &str, now_ms: u64) {
        let identity: Arc<str> = identity.into();
        self.entry(&identity, None, now_ms).blocks_found += 1;
    }

    /// Forgets pairs with no share for `retention_ms`; returns how many.
    pub fn forget_idle(&mut self, retention_ms: u64, now_ms: u64) -> usize {
        let before = self.workers.len();
        self.workers
            .retain(|_, w| now_ms.saturating_sub(w.last_share_ms) < retention_ms);
        let forgotten = before - self.workers.len();
        if forgotten > 0 {
            let workers = &self.workers;
            self.aliases.retain(|_, key| workers.contains_key(key));
            if self.workers.capacity() > 4 * self.workers.len() + 64 {
                self.workers.shrink_to_fit();
                self.aliases.shrink_to_fit();
            }
        }
        forgotten
    }

    /// The pool's history: every pair's credited difficulty per five-minute period.
    pub fn history(&self) -> &HashrateHistory {
        &self.history
    }

    /// Pairs in the table.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// One pair's statistics.
    pub fn get(&self, user: &str, worker: &str) -> Option<&WorkerStats> {
        let key: WorkerKey = (user.into(), worker.into());
        self.workers.get(&key)
    }

    /// Every pair, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &WorkerStats> {
        self.workers.values()
    }
}

/// One labelled series of per-worker metrics: a pair, or the pairs beyond the label limit
/// summed (`user` and `worker` both [`OTHER`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSeries {
    /// The `user` label.
    pub user: Arc<str>,
    /// The `worker` label.
    pub worker: Arc<str>,
    /// Accepted shares.
    pub accepted_shares: u64,
    /// Refused shares.
    pub rejected_shares: u64,
    /// Credited difficulty.
    pub credited_difficulty: f64,
    /// Estimated hashrate (h/s).
    pub hashrate: f64,
    /// Pairs in this series (1, or how many were folded).
    pub workers: u64,
}

/// The per-(user, worker) series to label at `now_ms`: the `max_labelled` pairs seen first
/// (the oldest keep their labels as newer ones come and go, so series do not flap between
/// scrapes) each under its own labels, the rest summed into one series labelled [`OTHER`].
/// Ordered by (user, worker), the folded series last.
pub fn worker_series<'a>(
    workers: impl Iterator<Item = &'a WorkerStats>,
    max_labelled: usize,
    now_ms: u64,
) -> Vec<WorkerSeries> {
    let items = workers
        .map(|w| {
            let series = WorkerSeries {
                user: w.user.clone(),
                worker: w.worker.clone(),
                accepted_shares: w.accepted_shares,
                rejected_shares: w.rejected_shares,
                credited_difficulty: w.credited_difficulty,
                hashrate: w.hashrate(now_ms),
                workers: 1,
            };
            (w.first_seen_ms, series)
        })
        .collect();
    fold(items, max_labelled)
}

/// The per-user series (every worker of a user summed; `worker` empty), folded like
/// [`worker_series`]: the `max_labelled` users seen first, the rest under [`OTHER`].
pub fn user_series<'a>(
    workers: impl Iterator<Item = &'a WorkerStats>,
    max_labelled: usize,
    now_ms: u64,
) -> Vec<WorkerSeries> {
    let mut users: HashMap<Arc<str>, (u64, WorkerSeries)> = HashMap::new();
    for w in workers {
        let (first, s) = users.entry(w.user.clone()).or_insert_with(|| {
            let series = WorkerSeries {
                user: w.user.clone(),
                worker: "".into(),
                accepted_shares: 0,
                rejected_shares: 0,
                credited_difficulty: 0.0,
                hashrate: 0.0,
                workers: 0,
            };
            (w.first_seen_ms, series)
        });
        *first = (*first).min(w.first_seen_ms);
        s.accepted_shares += w.accepted_shares;
        s.rejected_shares += w.rejected_shares;
        s.credited_difficulty += w.credited_difficulty;
        s.hashrate += w.hashrate(now_ms);
        s.workers += 1;
    }
    fold(users.into_values().collect(), max_labelled)
}

/// Keeps the `max_labelled` series first seen, sums the rest into one [`OTHER`] series.
fn fold(mut items: Vec<(u64, WorkerSeries)>, max_labelled: usize) -> Vec<WorkerSeries> {
    let by_labels =
        |a: &WorkerSeries, b: &WorkerSeries| (&a.user, &a.worker).cmp(&(&b.user, &b.worker));
    if items.len() <= max_labelled {
        let mut out: Vec<WorkerSeries> = items.into_iter().map(|(_, s)| s).collect();
        out.sort_by(by_labels);
        return out;
    }
    items.sort_unstable_by(|(fa, a), (fb, b)| {
        (fa, &a.user, &a.worker).cmp(&(fb, &b.user, &b.worker))
    });
    let folded = items.split_off(max_labelled);
    let mut out: Vec<WorkerSeries> = items.into_iter().map(|(_, s)| s).collect();
    out.sort_by(by_labels);
    let mut other = WorkerSeries {
        user: OTHER.into(),
        worker: OTHER.into(),
        accepted_shares: 0,
        rejected_shares: 0,
        credited_difficulty: 0.0,
        hashrate: 0.0,
        workers: 0,
    };
    for (_, s) in folded {
        other.accepted_shares += s.accepted_shares;
        other.rejected_shares += s.rejected_shares;
        other.credited_difficulty += s.credited_difficulty;
        other.hashrate += s.hashrate;
        other.workers += s.workers;
    }
    out.push(other);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Arc<str> {
        s.into()
    }

    #[test]
    fn identities_split_as_the_ledger_splits_them() {
        let mut t = WorkerTable::new();
        let alice = id("alice.rig1");
        t.credit(&alice, None, 2, 4.0, 1_000);
        t.credit(&alice, None, 1, 2.0, 2_000);
        // A proxy's channel: the TLV names the worker.
        let proxy = id("alice.proxy");
        t.credit(&proxy, Some(&id("rig2")), 1, 1.0, 3_000);
        t.reject(
            &proxy,
            Some(&id("rig2")),
            ShareRejection::StaleShare,
            2,
            4_000,
        );
        t.reject(
            &proxy,
            Some(&id("rig2")),
            ShareRejection::DuplicateShare,
            1,
            3_500,
        );
        t.block_found("alice.rig1", 2_000);
        let rig1 = t.get("alice", "rig1").unwrap();
        assert_eq!(
            (
                rig1.accepted_shares,
                rig1.credited_difficulty,
                rig1.blocks_found
            ),
            (3, 6.0, 1)
        );
        assert_eq!(rig1.last_accepted_ms, Some(2_000));
        let rig2 = t.get("alice", "rig2").unwrap();
        assert_eq!((rig2.accepted_shares, rig2.rejected_shares), (1, 3));
        let reasons: Vec<_> = rig2.rejected_by_reason().collect();
        assert_eq!(
            reasons,
            [
                (ShareRejection::StaleShare, 2),
                (ShareRejection::DuplicateShare, 1)
            ]
        );
        assert_eq!(rig2.last_share_ms, 4_000);
        assert_eq!(t.len(), 2);
        assert!(rig1.hashrate(2_000) > 0.0);
    }

    /// Refused shares naming a worker never seen accepted are counted under the channel's
    /// own worker: a thousand junk names make no entries.
    #[test]
    fn a_worker_named_only_by_refused_shares_makes_no_entry() {
        let mut t = WorkerTable::new();
        let proxy = id("alice.proxy");
        for n in 0..1_000 {
            t.reject(
                &proxy,
                Some(&id(&format!("junk{n}"))),
                ShareRejection::InvalidJobId,
                1,
                1_000,
            );
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.get("alice", "proxy").unwrap().rejected_shares, 1_000);
        // Once accepted, its refusals are its own.
        t.credit(&proxy, Some(&id("junk7")), 1, 1.0, 2_000);
        t.reject(
            &proxy,
            Some(&id("junk7")),
            ShareRejection::StaleShare,
            2,
            3_000,
        );
        assert_eq!(t.get("alice", "junk7").unwrap().rejected_shares, 2);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_quiet_pairs() {
        let mut t = WorkerTable::new();
        t.set_max_workers(3);
        for (i, name) in ["u.a", "u.b", "u.c", "u.d"].iter().enumerate() {
            t.credit(&id(name), None, 1, 1.0, 1_000 * (i as u64 + 1));
        }
        // The fourth pair is counted under the overflow pair.
        assert_eq!(t.len(), 4);
        assert!(t.get("u", "d").is_none());
        assert_eq!(t.get(OTHER, OTHER).unwrap().accepted_shares, 1);
        assert_eq!(
            t.forget_idle(WORKER_RETENTION_MS, 3_000 + WORKER_RETENTION_MS),
            3
        );
        assert_eq!(t.len(), 1);
        assert!(t.get(OTHER, OTHER).is_some());
    }

    #[test]
    fn labels_beyond_the_limit_fold_into_other_and_keep_the_totals() {
        let mut t = WorkerTable::new();
        for i in 0..10u64 {
            t.credit(&id(&format!("u{i}.w")), None, i + 1, 1.0, 1_000 + i);
        }
        let series = worker_series(t.iter(), 4, 2_000);
        assert_eq!(series.len(), 5);
        // The four seen first keep their labels, in label order; the rest are one series.
        let names: Vec<&str> = series.iter().map(|s| &*s.user).collect();
        assert_eq!(names, ["u0", "u1", "u2", "u3", OTHER]);
        let other = series.last().unwrap();
        assert_eq!((&*other.worker, other.workers), (OTHER, 6));
        let total: u64 = series.iter().map(|s| s.accepted_shares).sum();
        assert_eq!(total, (1..=10).sum::<u64>());
        // Under the limit: every pair labelled, no "other".
        let all = worker_series(t.iter(), 10, 2_000);
        assert_eq!(all.len(), 10);
        assert!(all.iter().all(|s| s.workers == 1));
    }

    #[test]
    fn users_sum_their_workers_and_fold_likewise() {
        let mut t = WorkerTable::new();
        t.credit(&id("a.w1"), None, 1, 1.0, 1_000);
        t.credit(&id("a.w2"), None, 2, 2.0, 2_000);
        t.credit(&id("b.w1"), None, 4, 4.0, 3_000);
        t.credit(&id("c"), None, 8, 8.0, 4_000);
        let users = user_series(t.iter(), 2, 5_000);
        let got: Vec<(&str, u64, u64)> = users
            .iter()
            .map(|s| (&*s.user, s.accepted_shares, s.workers))
            .collect();
        assert_eq!(got, [("a", 3, 2), ("b", 4, 1), (OTHER, 8, 1)]);
    }
}
