//! Statistics of the pool: who is connected, per-miner and pool-wide counters, batches of
//! accepted shares folded in at once, and the clean-up of miners that went away. Sans-IO:
//! sessions report [`SessionEvent`]s, time comes in as milliseconds since the Unix epoch.

use std::collections::{BTreeMap, HashMap};

use crate::mining::{SessionEvent, ShareRejection};

/// Work of a difficulty-1 share, in hashes.
const HASHES_PER_DIFF1: f64 = 4_294_967_296.0;

/// Statistics of one miner connection (product API name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MinerStats {
    /// Shares received (accepted and rejected).
    pub total_shares: u64,
    /// Shares accepted.
    pub accepted_shares: u64,
    /// Shares rejected.
    pub rejected_shares: u64,
    /// Rejected shares by error code.
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// When the last share arrived (ms since the Unix epoch).
    pub last_share_time: Option<u64>,
    /// Hashrate estimated from accepted work since the miner connected (h/s).
    pub estimated_hashrate: f64,
    /// Blocks found.
    pub blocks_found: u64,
    /// Sum of the difficulty of accepted shares.
    pub accepted_difficulty: f64,
}

/// One miner connection as the pool sees it (product API name).
#[derive(Debug, Clone, PartialEq)]
pub struct MinerConnection {
    /// Remote address.
    pub endpoint: String,
    /// Vendor string from SetupConnection.
    pub vendor: String,
    /// Open channels.
    pub channels: usize,
    /// Whether the connection is still open.
    pub connected: bool,
    /// When it connected (ms).
    pub connected_at: u64,
    /// Last message or disconnection (ms).
    pub last_activity: u64,
    /// Its counters.
    pub stats: MinerStats,
}

/// Pool-wide statistics (product API name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    /// Connected miners.
    pub miner_count: usize,
    /// Open channels.
    pub channel_count: usize,
    /// Shares received.
    pub total_shares: u64,
    /// Shares accepted.
    pub accepted_shares: u64,
    /// Shares rejected.
    pub rejected_shares: u64,
    /// Blocks found by miners.
    pub blocks_found: u64,
    /// Blocks the node accepted.
    pub blocks_accepted: u64,
    /// Blocks the node refused.
    pub blocks_rejected: u64,
    /// Sum of the miners' hashrate estimates (h/s).
    pub estimated_hashrate: f64,
}

/// Accepted shares of one connection not yet in the statistics: a shell gathers them under
/// the connection's own lock (no pool-wide lock per share) and folds them in now and then with
/// [`PoolStatistics::fold_accepted`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AcceptedShares {
    count: u64,
    difficulty_sum: f64,
    last_ms: u64,
    /// Refused shares, per [`ShareRejection::index`] (counted here too, not under the
    /// pool-wide lock: a miner sending bad shares must not contend it per share).
    rejected: [u64; ShareRejection::ALL.len()],
    rejected_total: u64,
    last_rejected_ms: u64,
}

impl AcceptedShares {
    /// One more accepted share of `difficulty`, at `now_ms`.
    #[inline]
    pub fn add(&mut self, difficulty: f64, now_ms: u64) {
        self.count += 1;
        self.difficulty_sum += difficulty;
        self.last_ms = now_ms;
    }

    /// One more refused share, at `now_ms`.
    #[inline]
    pub fn add_rejected(&mut self, reason: ShareRejection, now_ms: u64) {
        self.rejected[reason.index()] += 1;
        self.rejected_total += 1;
        self.last_rejected_ms = now_ms;
    }

    /// Whether there is nothing to fold.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.rejected_total == 0
    }
}

/// The registry of miners and their statistics.
#[derive(Debug, Default)]
pub struct PoolStatistics {
    miners: HashMap<u64, MinerConnection>,
    retired: PoolStats,
    /// Miners kept at most (0: the default, [`DEFAULT_MAX_MINERS`]).
    max_miners: usize,
}

/// Miners the registry keeps unless told otherwise.
pub const DEFAULT_MAX_MINERS: usize = 100_000;

impl PoolStatistics {
    /// No miner yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps at most `max` miners: at the cap, registering one forgets the disconnected miner
    /// quiet the longest (its counts move into the pool totals).
    pub fn set_max_miners(&mut self, max: usize) {
        self.max_miners = max.max(1);
    }

    fn max_miners(&self) -> usize {
        if self.max_miners == 0 {
            DEFAULT_MAX_MINERS
        } else {
            self.max_miners
        }
    }

    /// A new miner from `endpoint` (a connection that completed SetupConnection, or a miner
    /// driven by endpoint). At the cap, the disconnected miner quiet the longest is forgotten
    /// first; with none, the registry goes over its cap rather than lose a live miner (live
    /// ones are bounded by the connection cap).
    pub fn register_miner(&mut self, id: u64, endpoint: String, now_ms: u64) {
        if self.miners.len() >= self.max_miners() && !self.miners.contains_key(&id) {
            let quietest = self
                .miners
                .iter()
                .filter(|(_, m)| !m.connected)
                .min_by_key(|(id, m)| (m.last_activity, **id))
                .map(|(id, _)| *id);
            if let Some(old) = quietest {
                self.retire(old);
            }
        }
        self.miners.insert(
            id,
            MinerConnection {
                endpoint,
                vendor: String::new(),
                channels: 0,
                connected: true,
                connected_at: now_ms,
                last_activity: now_ms,
                stats: MinerStats::default(),
            },
        );
    }

    /// Applies what a session reported.
    pub fn record(&mut self, id: u64, event: &SessionEvent, now_ms: u64) {
        let Some(m) = self.miners.get_mut(&id) else {
            return;
        };
        m.last_activity = now_ms;
        match event {
            SessionEvent::Setup { vendor, .. } => m.vendor.clone_from(vendor),
            SessionEvent::ChannelOpened { .. } => m.channels += 1,
            SessionEvent::ChannelClosed { .. } => m.channels = m.channels.saturating_sub(1),
            SessionEvent::ShareAccepted { difficulty, .. } => {
                m.stats.total_shares += 1;
                m.stats.accepted_shares += 1;
                m.stats.accepted_difficulty += difficulty;
                m.stats.last_share_time = Some(now_ms);
                let secs = (now_ms.saturating_sub(m.connected_at) as f64 / 1000.0).max(1.0);
                m.stats.estimated_hashrate = m.stats.accepted_difficulty * HASHES_PER_DIFF1 / secs;
            }
            SessionEvent::ShareRejected { reason, .. } => {
                m.stats.total_shares += 1;
                m.stats.rejected_shares += 1;
                *m.stats.rejected_by_reason.entry(reason.code()).or_default() += 1;
                m.stats.last_share_time = Some(now_ms);
            }
            SessionEvent::BlockFound(_) => m.stats.blocks_found += 1,
            SessionEvent::TargetChanged { .. } | SessionEvent::ChannelRefused { .. } => {}
        }
    }

    /// Applies `count` accepted shares at once, the last at `last_ms`, worth `difficulty_sum`
    /// together: the same counters as `count` [`SessionEvent::ShareAccepted`] records, for a
    /// shell that gathers a connection's accepted shares and folds them in now and then
    /// instead of taking the pool's lock per share.
    pub fn record_accepted(&mut self, id: u64, count: u64, difficulty_sum: f64, last_ms: u64) {
        if count == 0 {
            return;
        }
        let Some(m) = self.miners.get_mut(&id) else {
            return;
        };
        m.last_activity = m.last_activity.max(last_ms);
        m.stats.total_shares += count;
        m.stats.accepted_shares += count;
        m.stats.accepted_difficulty += difficulty_sum;
        m.stats.last_share_time = Some(last_ms);
        let secs = (last_ms.saturating_sub(m.connected_at) as f64 / 1000.0).max(1.0);
        m.stats.estimated_hashrate = m.stats.accepted_difficulty * HASHES_PER_DIFF1 / secs;
    }

    /// Folds a connection's gathered accepted shares into miner `id` and empties them.
    pub fn fold_accepted(&mut self, id: u64, shares: &mut AcceptedShares) {
        let s = std::mem::take(shares);
        self.record_accepted(id, s.count, s.difficulty_sum, s.last_ms);
        if s.rejected_total == 0 {
            return;
        }
        let Some(m) = self.miners.get_mut(&id) else {
            return;
        };
        m.stats.total_shares += s.rejected_total;
        m.stats.rejected_shares += s.rejected_total;
        for (reason, n) in ShareRejection::ALL.iter().zip(s.rejected) {
            if n > 0 {
                *m.stats.rejected_by_reason.entry(reason.code()).or_default() += n;
            }
        }
        let last = m.stats.last_share_time.unwrap_or(0).max(s.last_rejected_ms);
        m.stats.last_share_time = Some(last);
    }

    /// The connection closed; its statistics stay until [`cleanup_disconnected_miners`].
    ///
    /// [`cleanup_disconnected_miners`]: Self::cleanup_disconnected_miners
    pub fn disconnect(&mut self, id: u64, now_ms: u64) {
        if let Some(m) = self.miners.get_mut(&id) {
            m.connected = false;
            m.channels = 0;
            m.last_activity = now_ms;
        }
    }

    /// Forgets disconnected miners with no activity for `timeout_ms`; their counts move into
    /// the pool totals. Returns how many were removed.
    pub fn cleanup_disconnected_miners(&mut self, timeout_ms: u64, now_ms: u64) -> usize {
        let stale: Vec<u64> = self
            .miners
            .iter()
            .filter(|(_, m)| !m.connected && now_ms.saturating_sub(m.last_activity) >= timeout_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in &stale {
            self.retire(*id);
        }
        // Memory back after a crowd left: the map keeps its largest size otherwise.
        if self.miners.capacity() > 4 * self.miners.len() + 64 {
            self.miners.shrink_to_fit();
        }
        stale.len()
    }

    /// Forgets miner `id`; its counts move into the pool totals.
    fn retire(&mut self, id: u64) {
        if let Some(m) = self.miners.remove(&id) {
            self.retired.total_shares += m.stats.total_shares;
            self.retired.accepted_shares += m.stats.accepted_shares;
            self.retired.rejected_shares += m.stats.rejected_shares;
            self.retired.blocks_found += m.stats.blocks_found;
        }
    }

    /// Miners in the registry (connected or not yet forgotten).
    pub fn len(&self) -> usize {
        self.miners.len()
    }

    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.miners.is_empty()
    }

    /// One miner's record.
    pub fn miner(&self, id: u64) -> Option<&MinerConnection> {
        self.miners.get(&id)
    }

    /// Every miner's record.
    pub fn miners(&self) -> impl Iterator<Item = (u64, &MinerConnection)> {
        self.miners.iter().map(|(id, m)| (*id, m))
    }

    /// Pool-wide totals (the node's verdicts on blocks are not counted here).
    pub fn get_pool_stats(&self) -> PoolStats {
        let mut s = self.retired.clone();
        for m in self.miners.values() {
            if m.connected {
                s.miner_count += 1;
                s.channel_count += m.channels;
                s.estimated_hashrate += m.stats.estimated_hashrate;
            }
            s.total_shares += m.stats.total_shares;
            s.accepted_shares += m.stats.accepted_shares;
            s.rejected_shares += m.stats.rejected_shares;
            s.blocks_found += m.stats.blocks_found;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mining::ShareRejection;
    use bitcoin::hashes::Hash;

    #[test]
    fn accepted_shares_folded_at_once_count_as_one_by_one() {
        let mut one = PoolStatistics::new();
        let mut folded = PoolStatistics::new();
        one.register_miner(1, "127.0.0.1:5000".into(), 0);
        folded.register_miner(1, "127.0.0.1:5000".into(), 0);
        let acc = SessionEvent::ShareAccepted {
            channel_id: 1,
            difficulty: 2.0,
            worker: None,
            work_id: 1,
            hash: bitcoin::BlockHash::all_zeros(),
            user_identity: "u".into(),
            job_id: 1,
            target: bitcoin::Target::MAX,
            share_number: 1,
        };
        for t in [1_000, 2_000, 4_000] {
            one.record(1, &acc, t);
        }
        folded.record_accepted(1, 3, 6.0, 4_000);
        folded.record_accepted(1, 0, 0.0, 9_000);
        folded.record_accepted(7, 1, 1.0, 9_000);
        assert_eq!(one.miner(1), folded.miner(1));
        assert_eq!(one.get_pool_stats(), folded.get_pool_stats());

        // The same through a connection's batch, which is empty once folded.
        let mut batched = PoolStatistics::new();
        batched.register_miner(1, "127.0.0.1:5000".into(), 0);
        let mut shares = AcceptedShares::default();
        for t in [1_000, 2_000, 4_000] {
            shares.add(2.0, t);
        }
        assert!(!shares.is_empty());
        batched.fold_accepted(1, &mut shares);
        assert!(shares.is_empty());
        batched.fold_accepted(1, &mut shares);
        assert_eq!(one.miner(1), batched.miner(1));
    }

    #[test]
    fn stats_follow_events_and_cleanup_keeps_totals() {
        let mut p = PoolStatistics::new();
        p.register_miner(1, "127.0.0.1:5000".into(), 0);
        p.register_miner(2, "127.0.0.1:5001".into(), 0);
        let acc = SessionEvent::ShareAccepted {
            channel_id: 1,
            difficulty: 2.0,
            worker: None,
            work_id: 1,
            hash: bitcoin::BlockHash::all_zeros(),
            user_identity: "u".into(),
            job_id: 1,
            target: bitcoin::Target::MAX,
            share_number: 1,
        };
        let rej = SessionEvent::ShareRejected {
            channel_id: 1,
            reason: ShareRejection::StaleShare,
            user_identity: None,
            worker: None,
        };
        p.record(1, &acc, 1_000);
        p.record(1, &rej, 2_000);
        p.record(2, &acc, 2_000);
        let s = p.get_pool_stats();
        assert_eq!(
            (
                s.miner_count,
                s.total_shares,
                s.accepted_shares,
                s.rejected_shares
            ),
            (2, 3, 2, 1)
        );
        assert_eq!(
            p.miner(1).unwrap().stats.rejected_by_reason["stale-share"],
            1
        );
        p.disconnect(1, 3_000);
        assert_eq!(p.cleanup_disconnected_miners(300_000, 100_000), 0);
        assert_eq!(p.cleanup_disconnected_miners(300_000, 303_000), 1);
        let s = p.get_pool_stats();
        assert_eq!(
            (s.miner_count, s.total_shares, s.accepted_shares),
            (1, 3, 2)
        );
    }

    #[test]
    fn the_registry_is_capped_and_shrinks_after_a_sweep() {
        let mut p = PoolStatistics::new();
        p.set_max_miners(3);
        for id in 1..=3 {
            p.register_miner(id, format!("10.0.0.{id}:1"), id);
        }
        p.disconnect(2, 10);
        p.disconnect(1, 20);
        // At the cap: the disconnected miner quiet the longest (2) goes, its counts kept.
        p.register_miner(4, "10.0.0.4:1".into(), 30);
        assert_eq!(p.len(), 3);
        assert!(p.miner(2).is_none() && p.miner(1).is_some());
        // Only connected miners left: the registry goes over its cap rather than lose one.
        p.disconnect(1, 40);
        p.register_miner(5, "10.0.0.5:1".into(), 50);
        p.register_miner(6, "10.0.0.6:1".into(), 60);
        assert_eq!(p.len(), 4);

        // A crowd that left: the map gives its memory back once swept.
        let mut p = PoolStatistics::new();
        for id in 0..10_000 {
            p.register_miner(id, String::new(), 0);
            p.disconnect(id, 0);
        }
        let crowd = p.miners.capacity();
        assert_eq!(p.cleanup_disconnected_miners(1, 10), 10_000);
        assert!(
            p.miners.capacity() < crowd / 4,
            "{} of {crowd}",
            p.miners.capacity()
        );
    }
}
