//! Statistics of the pool: who is connected, per-miner and pool-wide counters, batches of
//! accepted shares folded in at once, and the clean-up of miners that went away. Sans-IO:
//! sessions report [`SessionEvent`]s, time comes in as milliseconds since the Unix epoch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bitcoin::Target;

use super::hashrate::HASHES_PER_DIFF1;
use super::workers::{WORKER_RETENTION_MS, WorkerKey, WorkerTable};
use crate::mining::{SessionEvent, ShareRejection};

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
    /// The same shares per channel and worker (usually one entry: one channel), for the
    /// per-worker and per-channel statistics; at most [`MAX_WORKERS_PER_BATCH`] entries,
    /// shares beyond them count for the connection only.
    by_worker: Vec<WorkerShares>,
}

/// Entries of [`AcceptedShares::by_worker`] at most: a proxy naming a new worker in every
/// share's TLV cannot grow a connection's batch without bound.
const MAX_WORKERS_PER_BATCH: usize = 64;

/// A connection's shares of one (channel, TLV worker) not yet folded.
#[derive(Debug, Clone, PartialEq)]
struct WorkerShares {
    channel_id: u32,
    /// The channel's user_identity.
    identity: Arc<str>,
    worker: Option<Arc<str>>,
    count: u64,
    difficulty: f64,
    last_ms: u64,
    /// Refused shares, per [`ShareRejection::index`].
    rejected: [u64; ShareRejection::ALL.len()],
}

/// A channel open on a connection, as the statistics know it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenChannel {
    /// Its id on the connection.
    pub channel_id: u32,
    /// Extended (true) or standard.
    pub extended: bool,
    /// Who mines on it.
    pub user_identity: Arc<str>,
    /// When it opened (ms).
    pub opened_ms: u64,
    /// The hashrate the client declared for it, at opening or by UpdateChannel (h/s; 0:
    /// none).
    pub nominal_hash_rate: f64,
    /// Its share target now (at opening, then as vardiff moves it).
    pub target: Target,
    /// Shares accepted on it.
    pub accepted_shares: u64,
    /// Shares refused on it.
    pub rejected_shares: u64,
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

    /// One more accepted share of `difficulty` at `now_ms`, on channel `channel_id` of
    /// `identity` (and the 0x0002 TLV's `worker`, if sent): counted for the connection, the
    /// channel and the worker.
    #[inline]
    pub fn add_share(
        &mut self,
        channel_id: u32,
        identity: &Arc<str>,
        worker: Option<&Arc<str>>,
        difficulty: f64,
        now_ms: u64,
    ) {
        self.add(difficulty, now_ms);
        if let Some(w) = self.worker_entry(channel_id, Some(identity), worker) {
            w.count += 1;
            w.difficulty += difficulty;
            w.last_ms = now_ms;
        }
    }

    /// One more refused share at `now_ms`, on channel `channel_id` of `identity` if the
    /// channel exists.
    #[inline]
    pub fn add_rejected_share(
        &mut self,
        channel_id: u32,
        identity: Option<&Arc<str>>,
        worker: Option<&Arc<str>>,
        reason: ShareRejection,
        now_ms: u64,
    ) {
        self.add_rejected(reason, now_ms);
        if let Some(w) = self.worker_entry(channel_id, identity, worker) {
            w.rejected[reason.index()] += 1;
            w.last_ms = now_ms;
        }
    }

    /// The batch's entry of (channel, identity, worker): found by pointer first (a channel's
    /// identity and a worker name are shared `Arc`s), made if there is room.
    #[inline]
    fn worker_entry(
        &mut self,
        channel_id: u32,
        identity: Option<&Arc<str>>,
        worker: Option<&Arc<str>>,
    ) -> Option<&mut WorkerShares> {
        let identity = identity?;
        let same_worker = |a: &Option<Arc<str>>| match (a, worker) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        };
        let i = self.by_worker.iter().position(|w| {
            w.channel_id == channel_id
                && (Arc::ptr_eq(&w.identity, identity) || w.identity == *identity)
                && same_worker(&w.worker)
        });
        let i = match i {
            Some(i) => i,
            None if self.by_worker.len() < MAX_WORKERS_PER_BATCH => {
                self.by_worker.push(WorkerShares {
                    channel_id,
                    identity: identity.clone(),
                    worker: worker.cloned(),
                    count: 0,
                    difficulty: 0.0,
                    last_ms: 0,
                    rejected: [0; ShareRejection::ALL.len()],
                });
                self.by_worker.len() - 1
            }
            None => return None,
        };
        self.by_worker.get_mut(i)
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
    /// Per (user, worker) statistics (issue 16: metrics and the API).
    workers: WorkerTable,
    /// Each set-up miner's open channels, by miner id.
    channels: HashMap<u64, Vec<OpenChannel>>,
    /// Refused shares pool-wide since the start, per [`ShareRejection::index`].
    rejected_by_reason: [u64; ShareRejection::ALL.len()],
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
        self.record_pool_wide(id, event, now_ms);
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
            SessionEvent::TargetChanged { .. }
            | SessionEvent::ChannelRefused { .. }
            | SessionEvent::ChannelUpdated { .. } => {}
        }
    }

    /// What an event changes beyond the miner's own record: workers, channels, refusals.
    fn record_pool_wide(&mut self, id: u64, event: &SessionEvent, now_ms: u64) {
        match event {
            SessionEvent::ChannelOpened {
                channel_id,
                user_identity,
                extended,
                nominal_hash_rate,
                target,
            } if self.miners.contains_key(&id) => {
                self.channels.entry(id).or_default().push(OpenChannel {
                    channel_id: *channel_id,
                    extended: *extended,
                    user_identity: user_identity.as_str().into(),
                    opened_ms: now_ms,
                    nominal_hash_rate: f64::from(*nominal_hash_rate),
                    target: *target,
                    accepted_shares: 0,
                    rejected_shares: 0,
                });
            }
            SessionEvent::TargetChanged { channel_id, target } => {
                if let Some(c) = self.channel_mut(id, *channel_id) {
                    c.target = *target;
                }
            }
            SessionEvent::ChannelUpdated {
                channel_id,
                nominal_hash_rate,
            } => {
                if let Some(c) = self.channel_mut(id, *channel_id) {
                    c.nominal_hash_rate = f64::from(*nominal_hash_rate);
                }
            }
            SessionEvent::ChannelClosed { channel_id } => {
                if let Some(open) = self.channels.get_mut(&id) {
                    open.retain(|c| c.channel_id != *channel_id);
                }
            }
            SessionEvent::ShareAccepted {
                channel_id,
                difficulty,
                worker,
                user_identity,
                ..
            } => {
                self.workers
                    .credit(user_identity, worker.as_ref(), 1, *difficulty, now_ms);
                self.count_channel_shares(id, *channel_id, 1, 0);
            }
            SessionEvent::ShareRejected {
                channel_id,
                reason,
                user_identity,
                worker,
            } => {
                self.rejected_by_reason[reason.index()] += 1;
                self.count_channel_shares(id, *channel_id, 0, 1);
                if let Some(identity) = user_identity {
                    self.workers
                        .reject(identity, worker.as_ref(), *reason, 1, now_ms);
                }
            }
            SessionEvent::BlockFound(found) => {
                self.workers.block_found(&found.user_identity, now_ms);
            }
            _ => {}
        }
    }

    /// Channel `channel_id` of miner `id`, if open.
    fn channel_mut(&mut self, id: u64, channel_id: u32) -> Option<&mut OpenChannel> {
        self.channels
            .get_mut(&id)?
            .iter_mut()
            .find(|c| c.channel_id == channel_id)
    }

    /// `accepted` and `rejected` more shares on channel `channel_id` of miner `id`, if open.
    fn count_channel_shares(&mut self, id: u64, channel_id: u32, accepted: u64, rejected: u64) {
        if let Some(c) = self.channel_mut(id, channel_id) {
            c.accepted_shares += accepted;
            c.rejected_shares += rejected;
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
        let mut s = std::mem::take(shares);
        self.record_accepted(id, s.count, s.difficulty_sum, s.last_ms);
        for w in s.by_worker.drain(..) {
            let rejected = w.rejected.iter().sum();
            self.count_channel_shares(id, w.channel_id, w.count, rejected);
            let worker = w.worker.as_ref();
            self.workers
                .credit(&w.identity, worker, w.count, w.difficulty, w.last_ms);
            for (reason, n) in ShareRejection::ALL.iter().zip(w.rejected) {
                self.workers
                    .reject(&w.identity, worker, *reason, n, w.last_ms);
            }
        }
        // The batch's memory goes back for the next one (no allocation per fold).
        shares.by_worker = s.by_worker;
        for (total, n) in self.rejected_by_reason.iter_mut().zip(s.rejected) {
            *total += n;
        }
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
        self.channels.remove(&id);
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
        self.workers.forget_idle(WORKER_RETENTION_MS, now_ms);
        if self.channels.capacity() > 4 * self.channels.len() + 64 {
            self.channels.shrink_to_fit();
        }
        // Memory back after a crowd left: the map keeps its largest size otherwise.
        if self.miners.capacity() > 4 * self.miners.len() + 64 {
            self.miners.shrink_to_fit();
        }
        stale.len()
    }

    /// Forgets miner `id`; its counts move into the pool totals.
    fn retire(&mut self, id: u64) {
        self.channels.remove(&id);
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

    /// Per (user, worker) statistics.
    pub fn workers(&self) -> &WorkerTable {
        &self.workers
    }

    /// Per (user, worker) statistics, to bound (see [`WorkerTable::set_max_workers`]).
    pub fn workers_mut(&mut self) -> &mut WorkerTable {
        &mut self.workers
    }

    /// Open channels of set-up miners: (miner id, channel).
    pub fn open_channels(&self) -> impl Iterator<Item = (u64, &OpenChannel)> {
        self.channels
            .iter()
            .flat_map(|(id, open)| open.iter().map(move |c| (*id, c)))
    }

    /// The hashrate declared by the open channels of each (user, worker) that declared one
    /// (h/s, summed over its channels; a proxy's channel counts for the pair its own
    /// user_identity names, not for the workers of its 0x0002 TLVs).
    pub fn declared_hashrates(&self) -> HashMap<WorkerKey, f64> {
        let mut declared: HashMap<WorkerKey, f64> = HashMap::new();
        for (_, c) in self.open_channels() {
            if c.nominal_hash_rate > 0.0 {
                *declared
                    .entry(self.workers.pair_of(&c.user_identity))
                    .or_default() += c.nominal_hash_rate;
            }
        }
        declared
    }

    /// Open channels of one miner.
    pub fn channels_of(&self, id: u64) -> &[OpenChannel] {
        self.channels.get(&id).map_or(&[], |c| c.as_slice())
    }

    /// Refused shares pool-wide since the start, by SubmitShares.Error code (every code, zero
    /// or not, in [`ShareRejection::ALL`] order).
    pub fn rejected_by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ShareRejection::ALL
            .iter()
            .zip(self.rejected_by_reason)
            .map(|(r, n)| (r.code(), n))
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
    fn channels_declare_hashrate_per_worker_until_they_close() {
        let mut p = PoolStatistics::new();
        p.register_miner(1, "127.0.0.1:5000".into(), 0);
        let open = |channel_id, identity: &str, nominal_hash_rate| SessionEvent::ChannelOpened {
            channel_id,
            user_identity: identity.into(),
            extended: true,
            nominal_hash_rate,
            target: Target::MAX,
        };
        p.record(1, &open(1, "alice.rig1", 1e6), 10);
        p.record(1, &open(2, "alice.rig1", 5e5), 10);
        // No declaration: no entry.
        p.record(1, &open(3, "bob", 0.0), 10);
        let declared = p.declared_hashrates();
        let rig1: WorkerKey = ("alice".into(), "rig1".into());
        assert_eq!(declared.get(&rig1), Some(&1.5e6));
        assert_eq!(declared.len(), 1);
        p.record(
            1,
            &SessionEvent::ChannelUpdated {
                channel_id: 2,
                nominal_hash_rate: 2e6,
            },
            20,
        );
        p.record(1, &SessionEvent::ChannelClosed { channel_id: 1 }, 30);
        assert_eq!(p.declared_hashrates().get(&rig1), Some(&2e6));
        p.disconnect(1, 40);
        assert!(p.declared_hashrates().is_empty());
    }

    #[test]
    fn batches_reach_workers_channels_and_refusal_totals() {
        let mut p = PoolStatistics::new();
        p.register_miner(1, "127.0.0.1:5000".into(), 0);
        let alice: Arc<str> = "alice.rig1".into();
        let proxy: Arc<str> = "bob.proxy".into();
        let tlv: Arc<str> = "farm7".into();
        for (channel_id, identity, extended) in [(1, &alice, true), (2, &proxy, false)] {
            p.record(
                1,
                &SessionEvent::ChannelOpened {
                    channel_id,
                    user_identity: identity.to_string(),
                    extended,
                    nominal_hash_rate: 0.0,
                    target: Target::MAX,
                },
                10,
            );
        }
        let mut batch = AcceptedShares::default();
        batch.add_share(1, &alice, None, 2.0, 1_000);
        batch.add_share(1, &alice, None, 2.0, 2_000);
        batch.add_share(2, &proxy, Some(&tlv), 8.0, 2_500);
        batch.add_rejected_share(1, Some(&alice), None, ShareRejection::StaleShare, 3_000);
        // A refusal on a channel that does not exist counts pool-wide, for no worker.
        batch.add_rejected_share(9, None, None, ShareRejection::InvalidChannelId, 3_000);
        p.fold_accepted(1, &mut batch);
        assert!(batch.is_empty());

        let rig1 = p.workers().get("alice", "rig1").unwrap();
        assert_eq!(
            (
                rig1.accepted_shares,
                rig1.credited_difficulty,
                rig1.rejected_shares
            ),
            (2, 4.0, 1)
        );
        let farm = p.workers().get("bob", "farm7").unwrap();
        assert_eq!((farm.accepted_shares, farm.credited_difficulty), (1, 8.0));
        assert_eq!(p.workers().len(), 2);
        let refused: BTreeMap<_, _> = p.rejected_by_reason().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            refused,
            BTreeMap::from([("stale-share", 1), ("invalid-channel-id", 1)])
        );
        let kinds: Vec<(u32, bool)> = {
            let mut k: Vec<_> = p
                .open_channels()
                .map(|(_, c)| (c.channel_id, c.extended))
                .collect();
            k.sort();
            k
        };
        assert_eq!(kinds, [(1, true), (2, false)]);
        let shares: Vec<(u32, u64, u64)> = {
            let mut k: Vec<_> = p
                .open_channels()
                .map(|(_, c)| (c.channel_id, c.accepted_shares, c.rejected_shares))
                .collect();
            k.sort();
            k
        };
        assert_eq!(shares, [(1, 2, 1), (2, 1, 0)]);
        let tighter = Target::from_be_bytes([0x0f; 32]);
        p.record(
            1,
            &SessionEvent::TargetChanged {
                channel_id: 1,
                target: tighter,
            },
            3_500,
        );
        assert_eq!(p.channels_of(1)[0].target, tighter);
        p.record(1, &SessionEvent::ChannelClosed { channel_id: 2 }, 4_000);
        assert_eq!(p.channels_of(1).len(), 1);
        p.disconnect(1, 5_000);
        assert_eq!(p.open_channels().count(), 0);
        // The workers outlive the connection, until their retention passes.
        assert_eq!(p.cleanup_disconnected_miners(300_000, 305_000), 1);
        assert_eq!(p.workers().len(), 2);
        p.cleanup_disconnected_miners(300_000, 3_000 + WORKER_RETENTION_MS);
        assert_eq!(p.workers().len(), 0);
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
