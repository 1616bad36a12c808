//! Channels of one connection: opening (standard and extended), UpdateChannel, closing, the
//! one place a target is clamped to the pool's difficulty bounds and the client's maximum, and
//! each channel's targets by job.
//!
//! A target belongs to the jobs sent after it (05 §5.3.21: SetTarget "is not applicable for
//! already received jobs with min_ntime=nTime, as their maximum target remains stable"), so a
//! channel keeps its targets as epochs starting at a job sequence number: a share is validated
//! and credited at its job's target, whatever the channel's target is now. Moving the target
//! (UpdateChannel, vardiff) cannot raise the credit of work already done or in flight.

use std::collections::VecDeque;
use std::sync::Arc;

use bitcoin::Target;

use super::Session;
use super::acks::Batch;
use super::events::SessionEvent;
use super::extranonce::UNIQUE_PREFIX_LEN;
use super::flood::ShareBucket;
use super::jobs::StandardJob;
use super::shares::SeenShares;
use crate::block::target::{difficulty_of, target_for_hashrate, work_of};
use crate::mining::payee_work::{PayeeWorkError, PayeeWorks};
use crate::mining::share::ShareRejection;
use crate::mining::vardiff::Vardiff;
use crate::mining::work::Work;
use crate::payout::{CoinbasePayee, parse_identity};
use crate::wire::mining::{
    OpenExtendedMiningChannel, OpenExtendedMiningChannelSuccess, OpenMiningChannelError,
    OpenStandardMiningChannel, OpenStandardMiningChannelSuccess, SetTarget, UpdateChannel,
    UpdateChannelError,
};
use crate::wire::{B0_32, Str0_255};

/// OpenMiningChannel.Error code when the connection's or the pool's channel cap is reached.
const CHANNEL_CAPACITY_EXHAUSTED: &str = "channel-capacity-exhausted";
/// OpenMiningChannel.Error code (ours) for a connection opening channels faster than
/// [`OPENINGS_PER_SEC`] after its first burst.
pub const TOO_MANY_CHANNEL_OPENINGS: &str = "too-many-channel-openings";
/// Channel openings a connection may make a second, after a burst of
/// `max_channels_per_connection`: a proxy opens all its channels at once and then few, while
/// each opening costs the pool a job, a write lock and log lines, and open-close pairs could
/// otherwise go on without end (and wrap the connection's channel ids).
pub const OPENINGS_PER_SEC: f64 = 1.0;
/// OpenMiningChannel.Error code for a user_identity no payout can go to: an address that is
/// malformed or of another network, an `sri/` form SRI does not define, or a coinbase for its
/// address that the template has no room for (the specification's code for a user the pool
/// does not accept).
const UNKNOWN_USER: &str = "unknown-user";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChannelKind {
    Standard,
    Extended,
}

/// Per-channel counters (product API `MinerStats` aggregates these).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelStats {
    /// Shares accepted.
    pub accepted: u64,
    /// Shares refused, per [`ShareRejection::index`].
    pub rejected: [u64; ShareRejection::ALL.len()],
    /// Sum of the difficulty of accepted shares.
    pub difficulty_sum: f64,
    /// Time of the last share (ms).
    pub last_share_ms: Option<u64>,
    /// Blocks found.
    pub blocks_found: u64,
}

/// A read-only view of a channel, for stats and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInfo {
    /// Channel id.
    pub channel_id: u32,
    /// Extended (true) or standard.
    pub extended: bool,
    /// Who mines on it.
    pub user_identity: String,
    /// Current share target.
    pub target: Target,
    /// The channel's extranonce prefix.
    pub extranonce_prefix: Vec<u8>,
    /// Miner extranonce bytes.
    pub extranonce_size: usize,
    /// Vardiff's hashrate estimate (h/s).
    pub hashrate: f64,
    /// Whether vardiff's estimate has settled.
    pub vardiff_converged: bool,
    /// Counters.
    pub stats: ChannelStats,
}

#[derive(Debug)]
pub(super) struct Channel {
    pub(super) id: u32,
    pub(super) kind: ChannelKind,
    pub(super) user_identity: String,
    pub(super) extranonce_prefix: Vec<u8>,
    /// Miner extranonce bytes (0 for standard channels).
    pub(super) extranonce_size: usize,
    /// Targets by the jobs they apply to, oldest first; never empty. The last one is the
    /// channel's current target, for jobs sent from now on.
    pub(super) epochs: VecDeque<TargetEpoch>,
    pub(super) max_target: Target,
    /// When the channel last got a job (its own or its group's), ms.
    pub(super) last_job_ms: u64,
    /// The sequence number of the newest job it got (its own or its group's): kept earning
    /// credit whatever other channels of the connection were sent since.
    pub(super) last_job_seq: u64,
    /// Merkle roots of standard channels, by job id (bounded like the jobs).
    pub(super) roots: VecDeque<StandardJob>,
    /// Fingerprints of shares on the jobs that earn credit.
    pub(super) seen: SeenShares,
    /// Fingerprints of shares on the jobs of the previous credit window, while they still earn
    /// credit (see `Retirement`).
    pub(super) seen_retired: SeenShares,
    /// Accepted shares not acknowledged yet.
    pub(super) batch: Batch,
    pub(super) vardiff: Vardiff,
    pub(super) stats: ChannelStats,
    /// When the channel last did something valid (opened, an accepted share, UpdateChannel).
    pub(super) last_valid_ms: u64,
    /// The channel's share allowance.
    pub(super) bucket: ShareBucket,
    /// Who the channel's blocks pay in its own coinbase (`sri/solo`, `sri/donate/PERCENT`);
    /// `None`: the pool's coinbase, the pool's scheme.
    pub(super) payee: Option<CoinbasePayee>,
    /// The payee's works (derived from the pool's, shared pool-wide), newest last, at most
    /// [`OWN_WORKS`]: what its jobs and shares are on.
    pub(super) own_works: VecDeque<Arc<Work>>,
    /// A channel paid in its own coinbase is in a group of its own (it cannot take the
    /// connection's group jobs, whose coinbase pays the pool): that group's id.
    pub(super) own_group: Option<u32>,
}

/// Payee works a channel keeps at hand (older ones come back from the pool-wide cache).
const OWN_WORKS: usize = 8;

/// A target and the jobs it applies to: those from `from_seq` on (until the next epoch).
#[derive(Debug, Clone, Copy)]
pub(super) struct TargetEpoch {
    pub(super) from_seq: u64,
    pub(super) target: Target,
    /// Difficulty of `target`, kept with it (shares credit it; computing it per share is a
    /// 32-step float chain).
    pub(super) difficulty: f64,
    /// Expected hashes per share at `target`, for vardiff.
    pub(super) share_work: f64,
}

impl TargetEpoch {
    pub(super) fn new(from_seq: u64, target: Target) -> Self {
        let wire = target.to_le_bytes();
        TargetEpoch {
            from_seq,
            target,
            difficulty: difficulty_of(&wire),
            share_work: work_of(&wire),
        }
    }
}

impl Channel {
    /// Moves to a new target for the jobs from `next_seq` on. Returns the SetTarget to send.
    pub(super) fn retarget(&mut self, t: Target, next_seq: u64) -> SetTarget {
        let epoch = TargetEpoch::new(next_seq, t);
        // A change with no job since replaces the last epoch, and `prune_epochs` drops those
        // no job earning credit uses, so a channel holds at most one epoch more than the jobs
        // that earn credit (`max_jobs`): a client moving its target cannot grow the list, and
        // no epoch a credited job needs is ever dropped.
        match self.epochs.back_mut() {
            Some(last) if last.from_seq >= next_seq => *last = epoch,
            _ => self.epochs.push_back(epoch),
        }
        SetTarget {
            channel_id: self.id,
            maximum_target: t.to_le_bytes(),
        }
    }

    /// The current target: the one jobs sent from now on get.
    pub(super) fn target(&self) -> Target {
        self.epochs
            .back()
            .expect("a channel always has a target")
            .target
    }

    /// The target of the job with sequence number `seq` (a job older than every epoch kept
    /// takes the oldest).
    pub(super) fn epoch_of(&self, seq: u64) -> &TargetEpoch {
        self.epochs
            .iter()
            .rev()
            .find(|e| e.from_seq <= seq)
            .or(self.epochs.front())
            .expect("a channel always has a target")
    }

    /// Drops the cached roots of jobs that no longer earn credit (a block on one is checked
    /// with the root computed again).
    pub(super) fn prune_roots(&mut self, oldest_seq: u64) {
        while self.roots.front().is_some_and(|r| r.seq < oldest_seq) {
            self.roots.pop_front();
        }
    }

    /// Drops epochs that no job earning credit uses any more.
    pub(super) fn prune_epochs(&mut self, oldest_seq: u64) {
        while self.epochs.len() > 1 && self.epochs[1].from_seq <= oldest_seq {
            self.epochs.pop_front();
        }
    }

    /// A new tip: only the current target remains, for the jobs from `next_seq` on.
    pub(super) fn restart_epochs(&mut self, next_seq: u64) {
        let current = TargetEpoch::new(next_seq, self.target());
        self.epochs.clear();
        self.epochs.push_back(current);
    }
}

/// What a client asked for when opening a channel, standard or extended.
struct ChannelRequest<'a> {
    kind: ChannelKind,
    request_id: u32,
    user_identity: &'a Str0_255<'a>,
    nominal_hash_rate: f32,
    max_target: Target,
    /// Miner extranonce bytes to give, or the error code if the request cannot be met.
    extranonce_size: Result<usize, &'static str>,
}

impl Session {
    /// Number of open channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// A view of every open channel.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.channels
            .iter()
            .map(|c| ChannelInfo {
                channel_id: c.id,
                extended: c.kind == ChannelKind::Extended,
                user_identity: c.user_identity.clone(),
                target: c.target(),
                extranonce_prefix: c.extranonce_prefix.clone(),
                extranonce_size: c.extranonce_size,
                hashrate: c.vardiff.hashrate(),
                vardiff_converged: c.vardiff.converged(),
                stats: c.stats.clone(),
            })
            .collect()
    }

    /// The easiest target on `work`'s chain: `easy_chain_min_difficulty`, if set, on a chain
    /// easier than difficulty 1 (regtest, signet), `min_difficulty` otherwise.
    pub(super) fn easiest_for(&self, work: &crate::mining::work::Work) -> Target {
        let floor = match self.config.easy_chain_min_difficulty {
            Some(easy) if work.network_target.difficulty_float() < 1.0 => easy,
            _ => self.config.min_difficulty,
        };
        Target::from_le_bytes(crate::block::target::target_of_difficulty(floor))
    }

    /// `t` within the pool's difficulty bounds, then never easier than `max_target` (the
    /// client's limit wins over the pool's easiest difficulty).
    pub(super) fn clamp_target(&self, t: Target, max_target: Target) -> Target {
        t.min(self.easiest).max(self.hardest).min(max_target)
    }

    /// The initial target: from the announced hashrate and the share rate, within the pool's
    /// difficulty bounds, never above the client's max_target.
    fn initial_target(
        &self,
        nominal_hash_rate: f32,
        max_target: Target,
    ) -> Result<Target, &'static str> {
        if !nominal_hash_rate.is_finite() || nominal_hash_rate < 0.0 {
            return Err("invalid-nominal-hashrate");
        }
        if self.hardest > max_target {
            return Err("max-target-out-of-range");
        }
        let t = if nominal_hash_rate > 0.0 {
            Target::from_le_bytes(target_for_hashrate(
                f64::from(nominal_hash_rate),
                self.config.shares_per_minute,
            ))
        } else {
            self.easiest
        };
        Ok(self.clamp_target(t, max_target))
    }

    fn refuse_channel(&mut self, request_id: u32, code: &'static str) {
        let err = OpenMiningChannelError {
            request_id,
            error_code: Str0_255::new(code).unwrap_or_default(),
        };
        self.send(&err);
        self.events
            .push(SessionEvent::ChannelRefused { request_id, code });
    }

    /// Checks a request (capacity, extranonce size, target) and opens the channel, or sends
    /// OpenMiningChannel.Error. Returns the new channel's index.
    fn open_channel(&mut self, r: ChannelRequest<'_>, now_ms: u64) -> Option<usize> {
        if self.channels.len() >= self.config.max_channels_per_connection {
            self.refuse_channel(r.request_id, CHANNEL_CAPACITY_EXHAUSTED);
            return None;
        }
        let user_identity = r.user_identity.to_string_lossy().into_owned();
        let payee = match parse_identity(&user_identity, self.config.payout_network) {
            Err(_) => {
                self.refuse_channel(r.request_id, UNKNOWN_USER);
                return None;
            }
            Ok(id) => id.coinbase_payee(),
        };
        // A coinbase paid to the address must fit the template (it always does for the
        // address types there are; checked rather than finding out with a block).
        if let Some(payee) = &payee
            && let Some(work) = self.current.clone()
            && self.payee_works().get(&work, payee).is_err()
        {
            self.refuse_channel(r.request_id, UNKNOWN_USER);
            return None;
        }
        let extranonce_size = match r.extranonce_size {
            Ok(size) => size,
            Err(code) => {
                self.refuse_channel(r.request_id, code);
                return None;
            }
        };
        let target = match self.initial_target(r.nominal_hash_rate, r.max_target) {
            Ok(t) => t,
            Err(code) => {
                self.refuse_channel(r.request_id, code);
                return None;
            }
        };
        // The pool-wide cap: a slot is taken only for a channel that opens.
        if self.budget.as_ref().is_some_and(|b| !b.try_take()) {
            self.refuse_channel(r.request_id, CHANNEL_CAPACITY_EXHAUSTED);
            return None;
        }
        // Last, openings that succeed spend the connection's allowance (a refusal costs the
        // pool little more than its answer; a proxy retrying while the pool is full keeps
        // its allowance for when there is room).
        let burst = self.config.max_channels_per_connection.max(1) as f64;
        if !self
            .openings
            .get_or_insert_with(|| super::flood::ShareBucket::new(burst, now_ms))
            .take(OPENINGS_PER_SEC / 1_000.0, burst, now_ms)
        {
            if let Some(b) = &self.budget {
                b.release(1);
            }
            self.refuse_channel(r.request_id, TOO_MANY_CHANNEL_OPENINGS);
            return None;
        }
        self.no_channel_since = None;
        let id = self.next_channel_id;
        self.next_channel_id += 1;
        let prefix_len = self.config.coinbase.extranonce_len - extranonce_size;
        let extranonce_prefix = match self.reserved_prefix.take() {
            Some(p) if p.len() == prefix_len && r.kind == ChannelKind::Extended => p,
            _ => self.allocator.allocate(self.config.server_id, prefix_len),
        };
        self.channels.push(Channel {
            id,
            kind: r.kind,
            user_identity: user_identity.clone(),
            extranonce_prefix,
            extranonce_size,
            epochs: VecDeque::from([TargetEpoch::new(self.next_seq, target)]),
            max_target: r.max_target,
            last_job_ms: now_ms,
            last_job_seq: 0,
            roots: VecDeque::new(),
            seen: SeenShares::default(),
            seen_retired: SeenShares::default(),
            batch: Batch::new(now_ms),
            vardiff: Vardiff::new(
                self.config.shares_per_minute,
                f64::from(r.nominal_hash_rate),
                now_ms,
            ),
            stats: ChannelStats::default(),
            last_valid_ms: now_ms,
            bucket: ShareBucket::new(self.share_burst, now_ms),
            payee,
            own_works: VecDeque::new(),
            own_group: None,
        });
        self.events.push(SessionEvent::ChannelOpened {
            channel_id: id,
            user_identity,
            extended: r.kind == ChannelKind::Extended,
            nominal_hash_rate: r.nominal_hash_rate,
            target,
        });
        Some(self.channels.len() - 1)
    }

    /// The group a channel just opened is in: the connection's, or for a channel paid in its
    /// own coinbase a group of its own (05 §5.2.3: every channel is in a group; a job sent to
    /// the connection's group would have it mine the pool's coinbase). No job is ever sent to
    /// such a group: the channel gets its own.
    fn group_of(&mut self, idx: usize) -> u32 {
        if self.channels[idx].payee.is_none() {
            return self.group_channel_id;
        }
        let group = self.next_channel_id;
        self.next_channel_id += 1;
        self.channels[idx].own_group = Some(group);
        group
    }

    pub(super) fn on_open_standard(&mut self, m: &OpenStandardMiningChannel<'_>, now_ms: u64) {
        let request = ChannelRequest {
            kind: ChannelKind::Standard,
            request_id: m.request_id,
            user_identity: &m.user_identity,
            nominal_hash_rate: m.nominal_hash_rate,
            max_target: Target::from_le_bytes(m.max_target),
            extranonce_size: Ok(0),
        };
        let Some(idx) = self.open_channel(request, now_ms) else {
            return;
        };
        let group_channel_id = self.group_of(idx);
        let ch = &self.channels[idx];
        let prefix = ch.extranonce_prefix.clone();
        let ok = OpenStandardMiningChannelSuccess {
            request_id: m.request_id,
            channel_id: ch.id,
            target: ch.target().to_le_bytes(),
            extranonce_prefix: B0_32::new(&prefix).unwrap_or_default(),
            group_channel_id,
        };
        self.send(&ok);
        self.send_current_work_to(idx, now_ms);
    }

    pub(super) fn on_open_extended(&mut self, m: &OpenExtendedMiningChannel<'_>, now_ms: u64) {
        let extranonce_size = self.extended_extranonce_size(m.min_extranonce_size);
        let request = ChannelRequest {
            kind: ChannelKind::Extended,
            request_id: m.request_id,
            user_identity: &m.user_identity,
            nominal_hash_rate: m.nominal_hash_rate,
            max_target: Target::from_le_bytes(m.max_target),
            extranonce_size,
        };
        let Some(idx) = self.open_channel(request, now_ms) else {
            return;
        };
        let group_channel_id = self.group_of(idx);
        let ch = &self.channels[idx];
        let prefix = ch.extranonce_prefix.clone();
        let ok = OpenExtendedMiningChannelSuccess {
            request_id: m.request_id,
            channel_id: ch.id,
            target: ch.target().to_le_bytes(),
            extranonce_size: ch.extranonce_size as u16,
            extranonce_prefix: B0_32::new(&prefix).unwrap_or_default(),
            group_channel_id,
        };
        self.send(&ok);
        self.send_current_work_to(idx, now_ms);
    }

    /// The extranonce size an extended channel asking for `min_extranonce_size` bytes gets, or
    /// the error code its opening would be refused with.
    pub fn extended_extranonce_size(
        &self,
        min_extranonce_size: u16,
    ) -> Result<usize, &'static str> {
        let room = self.config.coinbase.extranonce_len - UNIQUE_PREFIX_LEN;
        let wanted = usize::from(min_extranonce_size);
        if wanted > room {
            return Err("min-extranonce-size-too-large");
        }
        Ok(wanted
            .max(usize::from(self.config.default_extranonce_size))
            .min(room))
    }

    /// Allocates now, from the pool-wide allocator, the extranonce prefix of the extended
    /// channel this session opens next asking for `min_extranonce_size` bytes, and returns it
    /// with the miner's extranonce size: Stratum V1 tells a miner its extranonce1 at
    /// mining.subscribe, before mining.authorize names who mines (when the channel opens).
    pub fn reserve_extranonce_prefix(
        &mut self,
        min_extranonce_size: u16,
    ) -> Result<(Vec<u8>, usize), &'static str> {
        let size = self.extended_extranonce_size(min_extranonce_size)?;
        let prefix_len = self.config.coinbase.extranonce_len - size;
        let prefix = self.allocator.allocate(self.config.server_id, prefix_len);
        self.reserved_prefix = Some(prefix.clone());
        Ok((prefix, size))
    }

    pub(super) fn on_update_channel(&mut self, m: &UpdateChannel, now_ms: u64) {
        let refuse = |s: &mut Self, code: &str| {
            let err = UpdateChannelError {
                channel_id: m.channel_id,
                error_code: Str0_255::new(code).unwrap_or_default(),
            };
            s.send(&err);
        };
        let Some(idx) = self.channels.iter().position(|c| c.id == m.channel_id) else {
            return refuse(self, "invalid-channel-id");
        };
        let target = match self
            .initial_target(m.nominal_hash_rate, Target::from_le_bytes(m.maximum_target))
        {
            Ok(t) => t,
            Err(code) => return refuse(self, code),
        };
        // The new target applies to jobs sent from now on (05 §5.3.21), so a new job on the
        // current work follows it at once (05 §5.3.7: SetTarget comes with "new job
        // readiness"), as after vardiff's: without it a miner keeps the job it has at the old
        // target (a proxy that opened at hashrate 0 and then announced its devices flooded
        // the pool with easy shares until it was closed) or mines the new target on a job
        // credited at the old one. Vardiff keeps its measurement, so announcing another
        // hashrate does not reset what it has seen.
        let next_seq = self.next_seq;
        let ch = &mut self.channels[idx];
        ch.last_valid_ms = now_ms;
        ch.max_target = Target::from_le_bytes(m.maximum_target);
        if ch.target() != target {
            let msg = ch.retarget(target, next_seq);
            self.send(&msg);
            self.refresh_channel(idx, now_ms);
        }
        self.events.push(SessionEvent::ChannelUpdated {
            channel_id: m.channel_id,
            nominal_hash_rate: m.nominal_hash_rate,
        });
    }

    /// CloseChannel: the channel's accepted shares not yet acknowledged are acknowledged
    /// first; a group channel's id closes every channel of the group (05 §5.3.9), which on
    /// this pool is every channel of the connection (all are opened into its one group).
    pub(super) fn on_close_channel(&mut self, channel_id: u32, now_ms: u64) {
        let whole_group = channel_id == self.group_channel_id;
        let mut idx = 0;
        while idx < self.channels.len() {
            let id = self.channels[idx].id;
            // The connection's group holds the channels not put in a group of their own
            // (a channel paid in its own coinbase was told its own group, 05 §5.3.9 closes
            // a group's channels only).
            let own_group = self.channels[idx].own_group;
            if (whole_group && own_group.is_none())
                || id == channel_id
                || own_group == Some(channel_id)
            {
                self.flush_batch(idx);
                self.remove_channel(idx, now_ms);
                self.events
                    .push(SessionEvent::ChannelClosed { channel_id: id });
            } else {
                idx += 1;
            }
        }
    }

    /// The work a channel paid in its own coinbase mines for the pool's `base`: its payee's
    /// derivation (kept by the channel, else from the pool-wide cache). `Ok(None)` for a
    /// channel of the pool: it mines `base` itself (no lookup, nothing cloned). An error (a
    /// coinbase the template has no room for; checked when the channel opened, and the
    /// outputs' size does not depend on the template) means the channel gets no job on
    /// `base`: never the pool's coinbase instead.
    pub(super) fn payee_work(
        &mut self,
        idx: usize,
        base: &Work,
    ) -> Result<Option<Arc<Work>>, PayeeWorkError> {
        if self.channels[idx].payee.is_none() {
            return Ok(None);
        }
        let works = self.payee_works().clone();
        let ch = &mut self.channels[idx];
        let Some(payee) = ch.payee.as_ref() else {
            return Ok(None);
        };
        if let Some(w) = ch
            .own_works
            .iter()
            .rev()
            .find(|w| w.id == base.id && w.prev_hash == base.prev_hash)
        {
            return Ok(Some(w.clone()));
        }
        let work = works.get(base, payee)?;
        if ch.own_works.len() == OWN_WORKS {
            ch.own_works.pop_front();
        }
        ch.own_works.push_back(work.clone());
        Ok(Some(work))
    }

    /// The works derived for coinbase-paid channels: the pool's, or this session's own.
    fn payee_works(&mut self) -> &Arc<PayeeWorks> {
        self.payee_works.get_or_insert_with(Arc::default)
    }

    /// Removes a channel: its pool-wide slot is given back, and a connection left with no
    /// channel starts its channel-open timer again.
    pub(super) fn remove_channel(&mut self, idx: usize, now_ms: u64) {
        self.channels.remove(idx);
        if let Some(budget) = &self.budget {
            budget.release(1);
        }
        if self.channels.is_empty() {
            self.no_channel_since = Some(now_ms);
        }
    }
}
