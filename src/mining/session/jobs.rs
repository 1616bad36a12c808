//! Jobs and prev hashes: new work becomes a job on every channel (standard channels of a
//! connection that takes extended jobs share one group-channel job, 05 §5.3.16), a channel
//! just opened gets a job of its own, and every job of the current tip stays known.
//!
//! Why every job of the tip: a share on any of them can still be a block (SRI keeps them
//! all too). Only the newest `max_jobs` are kept whole and earn credit; older ones are folded
//! into one entry per distinct work ([`OlderJobs`], a few words each, the work itself shared by
//! the whole pool), enough to recognise a block on them. Credit is bounded that way and
//! duplicates stay exact: the fingerprints of a channel cover every job that can still earn
//! credit (see `shares`).
//!
//! Job ids are the low 32 bits of a connection-wide sequence number (`seq`, never 0 in its
//! low bits), so an id is never sent twice on one connection, whichever channel or group it
//! went to, and ids map back to sequence numbers while a tip lasts.

use std::collections::VecDeque;
use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, TxMerkleNode};

use super::channels::ChannelKind;
use super::{Session, State};
use crate::block::header::{header_bytes, header_midstate};
use crate::mining::work::Work;
use crate::wire::mining::{
    NewExtendedMiningJob, NewMiningJob, REQUIRES_STANDARD_JOBS, SetNewPrevHash,
};
use crate::wire::{B0_64K, Seq0_255};

/// How long the jobs of a credit window that just ended still earn credit: shares in flight
/// when the new job went out are work done honestly.
pub const RETIRED_JOBS_GRACE_MS: u64 = 10_000;

/// Tips remembered after they were left, with the latest nTime accepted on each, so that a
/// tip that comes back (a reorg back to an earlier prev hash) cannot be mined with old shares.
const PAST_TIPS: usize = 8;

/// A job as this connection knows it, while it can earn credit.
#[derive(Debug, Clone)]
pub(super) struct SessionJob {
    pub(super) job_id: u32,
    /// Connection-wide order of jobs; targets are kept per channel by it.
    pub(super) seq: u64,
    pub(super) work: Arc<Work>,
    /// nTime floor announced for it (jobs are activated as soon as they are sent).
    pub(super) min_ntime: u32,
    /// When it was sent (ms): the nTime ceiling grows with the time since.
    pub(super) sent_ms: u64,
}

/// The jobs of the credit window that just ended: those below `below_seq` earn credit until
/// `until_ms` (duplicates checked against each channel's `seen_retired`), then only blocks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retirement {
    pub(super) below_seq: u64,
    pub(super) until_ms: u64,
}

/// Templates a connection's block-only jobs hold at most: a tip that lasts (an hour on
/// mainnet, a template every 30 s) kept every template of it alive until the next tip. A share
/// on a job past them is `stale-share`.
pub const MAX_OLDER_WORKS: usize = 32;

/// Runs of block-only jobs a connection keeps at most (a run is consecutive jobs of one
/// template; jobs sent to one channel each start one).
pub const MAX_OLDER_RUNS: usize = 1_024;

/// How many templates `older` holds.
fn distinct_works(older: &VecDeque<OlderJobs>) -> usize {
    let mut seen: Vec<*const Work> = Vec::with_capacity(MAX_OLDER_WORKS + 1);
    for o in older {
        let p = Arc::as_ptr(&o.work);
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    seen.len()
}

/// Jobs of the current tip past the newest `max_jobs` (or of an ended credit window), folded by
/// work: shares on them are checked only for being a block.
#[derive(Debug, Clone)]
pub(super) struct OlderJobs {
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    pub(super) work: Arc<Work>,
}

/// A standard channel's view of a job: its merkle root, and the SHA-256 state after the first
/// 64 header bytes (version, prev hash, most of the root) so a share hashes one block less.
#[derive(Debug, Clone)]
pub(super) struct StandardJob {
    pub(super) seq: u64,
    pub(super) version: u32,
    pub(super) root: TxMerkleNode,
    pub(super) head: [u32; 8],
}

/// The current tip as this connection mines it.
#[derive(Debug, Clone, Default)]
pub(super) struct TipState {
    /// Its prev hash.
    pub(super) prev_hash: Option<BlockHash>,
    /// First job sequence number on it.
    pub(super) first_seq: u64,
    /// min_ntime of its SetNewPrevHash and when that went out: the spec's nTime ceiling is
    /// that value plus the seconds since (05 §5.3.11).
    pub(super) min_ntime: u32,
    pub(super) sent_ms: u64,
    /// Latest nTime of a share accepted on it.
    pub(super) max_accepted_ntime: u32,
    /// Every job sent from now on starts at this nTime or later: set past every accepted
    /// share's nTime when the credit window restarts or the tip comes back, so no old share
    /// can be replayed on a new job of the same work.
    pub(super) ntime_floor: u32,
    /// Whether the group channel has this tip's SetNewPrevHash.
    pub(super) group_has_prev_hash: bool,
}

impl Session {
    /// New work from the pool. On a new prev hash, the job goes out as a future job followed
    /// by SetNewPrevHash; on the same tip, as a job active at once (with min_ntime). Another
    /// height on the same prev hash is a new tip too (the pool's correction of a template
    /// whose BIP34 height did not follow its prev hash: no block on the old jobs is valid, so
    /// they must stop earning credit), and so are other nBits (testnet's minimum difficulty
    /// 20 minutes after a block: only SetNewPrevHash tells the miner the new nBits).
    pub fn on_work(&mut self, work: &Arc<Work>, now_ms: u64) {
        let new_tip = self.tip.prev_hash != Some(work.prev_hash)
            || self.current.as_ref().is_some_and(|current| {
                current.height != work.height || current.nbits != work.nbits
            });
        self.current = Some(work.clone());
        if new_tip {
            self.easiest = self.easiest_for(work);
            self.begin_tip(work.prev_hash, now_ms);
        }
        self.announce(work, new_tip, now_ms);
    }

    /// Forgets the jobs of the previous tip and starts the new one: its duplicate sets are
    /// empty, and if it is a tip seen before, its jobs start past the nTime of every share
    /// accepted on it then.
    fn begin_tip(&mut self, prev_hash: BlockHash, now_ms: u64) {
        if let Some(old) = self.tip.prev_hash {
            self.past_tips.retain(|(h, _)| *h != old);
            if self.past_tips.len() == PAST_TIPS {
                self.past_tips.pop_front();
            }
            // Its shares' latest nTime, of this visit and of the earlier ones (the floor is
            // past those): a visit with no share must not lower it.
            let latest = self
                .tip
                .max_accepted_ntime
                .max(self.tip.ntime_floor.saturating_sub(1));
            self.past_tips.push_back((old, latest));
        }
        let floor = self
            .past_tips
            .iter()
            .find(|(h, _)| *h == prev_hash)
            .map_or(0, |&(_, ntime)| ntime.saturating_add(1));
        self.tip = TipState {
            prev_hash: Some(prev_hash),
            first_seq: self.next_seq,
            min_ntime: 0,
            sent_ms: now_ms,
            max_accepted_ntime: 0,
            ntime_floor: floor,
            group_has_prev_hash: false,
        };
        self.jobs.clear();
        self.older.clear();
        self.retirement = None;
        for ch in &mut self.channels {
            ch.seen.clear();
            ch.seen_retired.clear();
            ch.roots.clear();
            ch.restart_epochs(self.next_seq);
        }
    }

    /// Sends `work` as one new job to every channel (grouped standard channels through the
    /// group channel), with the prev hash after it on a new tip.
    fn announce(&mut self, work: &Arc<Work>, new_tip: bool, now_ms: u64) {
        self.last_announce_ms = now_ms;
        let job = self.push_job(work, now_ms);
        if new_tip {
            self.tip.min_ntime = job.min_ntime;
            self.tip.sent_ms = now_ms;
        }
        if self.state != State::Ready {
            return;
        }
        let mut grouped = false;
        for idx in 0..self.channels.len() {
            if self.is_grouped(idx) {
                self.record_root(idx, &job);
                grouped = true;
            } else {
                let id = self.channels[idx].id;
                if self.send_job(idx, &job, new_tip) && new_tip {
                    self.send_prev_hash(id, &job);
                }
            }
        }
        if grouped {
            let msg = self.extended_job(self.group_channel_id, &job, &job.work, new_tip);
            self.send(&msg);
            if new_tip {
                self.send_prev_hash(self.group_channel_id, &job);
                self.tip.group_has_prev_hash = true;
            }
        }
    }

    /// A new job on the current work for one channel (for a grouped standard channel: for
    /// its group), active at once: after its target changed, so the new target is mined now.
    pub(super) fn refresh_channel(&mut self, idx: usize, now_ms: u64) {
        let Some(work) = self.current.clone() else {
            return;
        };
        let job = self.push_job(&work, now_ms);
        if self.is_grouped(idx) {
            for i in 0..self.channels.len() {
                if self.is_grouped(i) {
                    self.record_root(i, &job);
                }
            }
            let msg = self.extended_job(self.group_channel_id, &job, &job.work, false);
            self.send(&msg);
        } else {
            self.send_job(idx, &job, false);
        }
    }

    /// Starts the connection's credit window over: the jobs sent so far earn credit for
    /// [`RETIRED_JOBS_GRACE_MS`] more (the shares in flight), then can only make blocks; the
    /// duplicate sets move aside for that grace; every channel gets a new job whose nTime
    /// starts past every share accepted on this tip, so none of those can come again.
    pub(super) fn restart_credit_window(&mut self, now_ms: u64) {
        let Some(work) = self.current.clone() else {
            return;
        };
        self.end_retirement();
        for ch in &mut self.channels {
            std::mem::swap(&mut ch.seen, &mut ch.seen_retired);
        }
        self.retirement = Some(Retirement {
            below_seq: self.next_seq,
            until_ms: now_ms.saturating_add(RETIRED_JOBS_GRACE_MS),
        });
        self.tip.ntime_floor = self
            .tip
            .ntime_floor
            .max(self.tip.max_accepted_ntime.saturating_add(1));
        self.announce(&work, false, now_ms);
    }

    /// Ends the grace of the previous credit window's jobs: they can only make blocks from
    /// now on, and their duplicate sets empty (keeping their memory).
    pub(super) fn end_retirement(&mut self) {
        let Some(r) = self.retirement.take() else {
            return;
        };
        while self.jobs.front().is_some_and(|j| j.seq < r.below_seq) {
            if let Some(job) = self.jobs.pop_front() {
                self.fold_older(job);
            }
        }
        let oldest = self.oldest_credited_seq();
        for ch in &mut self.channels {
            ch.seen_retired.clear();
            ch.prune_roots(oldest);
        }
    }

    /// When every channel is due a fresh job on the current work (ms): `job_refresh_ms` after
    /// the last job went to all of them. `None` with no channel or no work.
    pub(super) fn refresh_due_ms(&self) -> Option<u64> {
        (self.state == State::Ready && !self.channels.is_empty() && self.current.is_some()).then(
            || {
                self.last_announce_ms
                    .saturating_add(self.config.job_refresh_ms.max(1))
            },
        )
    }

    /// A fresh job on the current work for every channel, with min_ntime at the present time:
    /// the periodic refresh on the same tip.
    pub(super) fn refresh_all(&mut self, now_ms: u64) {
        if let Some(work) = self.current.clone() {
            self.announce(&work, false, now_ms);
        }
    }

    /// A channel whose shares come with an nTime below its job's min_ntime gets a fresh job
    /// at once, at most once a second: a device that sets nTime from its own clock once per
    /// job can finish none of that job's headers, and needs a new job rather than the next
    /// periodic one.
    pub(super) fn refresh_after_old_ntime(&mut self, channel_id: u32, now_ms: u64) {
        const MIN_INTERVAL_MS: u64 = 1_000;
        if let Some(idx) = self.channels.iter().position(|c| c.id == channel_id)
            && now_ms
                >= self.channels[idx]
                    .last_job_ms
                    .saturating_add(MIN_INTERVAL_MS)
        {
            self.refresh_channel(idx, now_ms);
        }
    }

    /// Whether a channel takes its jobs through the group channel: a standard channel on a
    /// connection that did not ask for standard jobs (05 §5.3.16), paid by the pool (a channel
    /// paid in its own coinbase has a merkle root of its own: it gets its own jobs).
    pub(super) fn is_grouped(&self, idx: usize) -> bool {
        let ch = &self.channels[idx];
        self.flags & REQUIRES_STANDARD_JOBS == 0
            && ch.kind == ChannelKind::Standard
            && ch.payee.is_none()
    }

    /// Folds jobs beyond `max_jobs` into the older, block-only jobs (product API name); called
    /// whenever a job is added. Each channel's newest job stays whatever was sent since: jobs
    /// sent to one channel alone (its target moved, its nTime fell behind) must not retire
    /// the only job another channel of the connection has (its miner mines it until told
    /// otherwise, 05 §5.3.15-16: an SRI translator's eleventh channel made the first one's
    /// shares `stale-share`). So a connection holds at most `max_jobs` plus one a channel.
    pub fn cleanup_old_jobs(&mut self) {
        let max = self.config.max_jobs.max(1);
        if self.jobs.len() > max {
            // Each channel's newest job, gathered once (asking every channel about every job
            // made a push cost jobs x channels: a proxy with thousands of channels, each
            // getting jobs of its own as vardiff moves it, made that squared).
            let mut newest: Vec<u64> = self.channels.iter().map(|c| c.last_job_seq).collect();
            newest.sort_unstable();
            // Oldest first; the job just added is not any channel's yet (it is being sent)
            // and stays.
            let mut i = 0;
            while self.jobs.len() > max && i + 1 < self.jobs.len() {
                if newest.binary_search(&self.jobs[i].seq).is_ok() {
                    i += 1;
                } else if let Some(job) = self.jobs.remove(i) {
                    self.fold_older(job);
                }
            }
        }
        let oldest = self.oldest_credited_seq();
        for ch in &mut self.channels {
            ch.prune_roots(oldest);
            ch.prune_epochs(oldest);
        }
    }

    /// Sequence number of the oldest job that earns credit (the next one's if none does).
    fn oldest_credited_seq(&self) -> u64 {
        self.jobs.front().map_or(self.next_seq, |j| j.seq)
    }

    fn fold_older(&mut self, job: SessionJob) {
        // Only a run of consecutive jobs on one work is one entry: a job kept back as a
        // channel's newest and folded later must not be covered by a range of another work.
        match self.older.back_mut() {
            Some(last) if Arc::ptr_eq(&last.work, &job.work) && last.last_seq + 1 == job.seq => {
                last.last_seq = job.seq
            }
            _ => {
                let new_work = !self.older.iter().any(|o| Arc::ptr_eq(&o.work, &job.work));
                self.older.push_back(OlderJobs {
                    first_seq: job.seq,
                    last_seq: job.seq,
                    work: job.work,
                });
                // The oldest runs go once more than MAX_OLDER_WORKS templates are held (a
                // template is many runs when channels get jobs of their own), or past
                // MAX_OLDER_RUNS runs.
                if new_work {
                    while distinct_works(&self.older) > MAX_OLDER_WORKS {
                        self.older.pop_front();
                    }
                }
                while self.older.len() > MAX_OLDER_RUNS {
                    self.older.pop_front();
                }
            }
        }
    }

    /// Number of jobs that can earn credit (bounded by `max_jobs`).
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// The id of the newest job and the work it is on (the job [`on_work`](Self::on_work)
    /// just made), for drivers that name work by its pool-wide id.
    pub fn latest_job(&self) -> Option<(u32, &Arc<Work>)> {
        self.jobs.back().map(|j| (j.job_id, &j.work))
    }

    /// The sequence number a job id of the current tip stands for, if it was ever sent.
    pub(super) fn seq_of(&self, job_id: u32) -> Option<u64> {
        let first = self.tip.first_seq;
        let seq = first + u64::from(job_id.wrapping_sub(first as u32));
        (seq < self.next_seq && job_id != 0).then_some(seq)
    }

    /// The extended job for `job` on `work`: the job's own work, or a coinbase-paid channel's
    /// derivation of it.
    fn extended_job<'w>(
        &self,
        channel_id: u32,
        job: &SessionJob,
        work: &'w Work,
        future: bool,
    ) -> NewExtendedMiningJob<'w> {
        NewExtendedMiningJob {
            channel_id,
            job_id: job.job_id,
            min_ntime: if future { None } else { Some(job.min_ntime) },
            version: work.version,
            version_rolling_allowed: self.config.version_rolling,
            merkle_path: Seq0_255::new(&work.merkle_path).unwrap_or_default(),
            coinbase_tx_prefix: B0_64K::new(&work.coinbase.prefix).unwrap_or_default(),
            coinbase_tx_suffix: B0_64K::new(&work.coinbase.suffix).unwrap_or_default(),
        }
    }

    /// Computes and remembers a standard channel's merkle root for a job (on the channel's
    /// own coinbase when it is paid in it; `None` if that cannot be built).
    fn record_root(&mut self, idx: usize, job: &SessionJob) -> Option<[u8; 32]> {
        let own = self.payee_work(idx, &job.work).ok()?;
        let (seq, work) = (job.seq, own.as_deref().unwrap_or(&job.work));
        let ch = &mut self.channels[idx];
        ch.last_job_ms = ch.last_job_ms.max(job.sent_ms);
        ch.last_job_seq = ch.last_job_seq.max(job.seq);
        let root = work.merkle_root(&ch.extranonce_prefix, &[]);
        let head = header_midstate(&header_bytes(
            work.version,
            work.prev_hash.as_byte_array(),
            root.as_byte_array(),
            0,
            0,
            0,
        ));
        ch.roots.push_back(StandardJob {
            seq,
            version: work.version,
            root,
            head,
        });
        Some(root.to_byte_array())
    }

    /// A new job on `work`: the next sequence number; min_ntime the present time (as an SV1
    /// pool's notify says), never below the template's time nor the tip's floor.
    fn push_job(&mut self, work: &Arc<Work>, now_ms: u64) -> SessionJob {
        let mut seq = self.next_seq;
        if seq as u32 == 0 {
            seq += 1;
        }
        self.next_seq = seq + 1;
        let job = SessionJob {
            job_id: seq as u32,
            seq,
            work: work.clone(),
            min_ntime: work
                .cur_time
                .max(self.tip.ntime_floor)
                .max(u32::try_from(now_ms / 1000).unwrap_or(u32::MAX)),
            sent_ms: now_ms,
        };
        self.jobs.push_back(job.clone());
        self.cleanup_old_jobs();
        job
    }

    /// A channel just opened gets a job of its own on the current work, as a future job
    /// followed by SetNewPrevHash (the order the spec requires for a channel's first job).
    /// A grouped standard channel's group gets the prev hash too if it has not had it on
    /// this tip, so that later group jobs (active at once) have a prev hash to build on.
    pub(super) fn send_current_work_to(&mut self, idx: usize, now_ms: u64) {
        let Some(work) = self.current.clone() else {
            return;
        };
        let job = self.push_job(&work, now_ms);
        if self.send_job(idx, &job, true) {
            let id = self.channels[idx].id;
            self.send_prev_hash(id, &job);
        }
        if self.is_grouped(idx) && !self.tip.group_has_prev_hash {
            let group_job = self.push_job(&work, now_ms);
            self.record_root(idx, &group_job);
            let msg = self.extended_job(self.group_channel_id, &group_job, &group_job.work, true);
            self.send(&msg);
            self.send_prev_hash(self.group_channel_id, &group_job);
            self.tip.group_has_prev_hash = true;
        }
    }

    /// Sends `job` to one channel (on its own coinbase when it is paid in it); false if it
    /// could not be built for it (see `payee_work`).
    fn send_job(&mut self, idx: usize, job: &SessionJob, future: bool) -> bool {
        let ch = &mut self.channels[idx];
        ch.last_job_ms = ch.last_job_ms.max(job.sent_ms);
        ch.last_job_seq = ch.last_job_seq.max(job.seq);
        match self.channels[idx].kind {
            ChannelKind::Extended => {
                let Ok(own) = self.payee_work(idx, &job.work) else {
                    return false;
                };
                let work = own.as_deref().unwrap_or(&job.work);
                let msg = self.extended_job(self.channels[idx].id, job, work, future);
                self.send(&msg);
            }
            ChannelKind::Standard => {
                let Some(merkle_root) = self.record_root(idx, job) else {
                    return false;
                };
                let msg = NewMiningJob {
                    channel_id: self.channels[idx].id,
                    job_id: job.job_id,
                    min_ntime: if future { None } else { Some(job.min_ntime) },
                    version: job.work.version,
                    merkle_root,
                };
                self.send(&msg);
            }
        }
        true
    }

    fn send_prev_hash(&mut self, channel_id: u32, job: &SessionJob) {
        let msg = SetNewPrevHash {
            channel_id,
            job_id: job.job_id,
            prev_hash: job.work.prev_hash.to_byte_array(),
            min_ntime: job.min_ntime,
            nbits: job.work.nbits,
        };
        self.send(&msg);
    }
}
