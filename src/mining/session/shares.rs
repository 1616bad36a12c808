//! Share validation: the channel, the job (current tip, not a tip we just solved), nTime and
//! version rules, the hash against the job's target, duplicate detection, and turning a share
//! that meets the network target into a whole block.

use std::collections::HashSet;
use std::sync::Arc;

use bitcoin::BlockHash;
use bitcoin::hashes::Hash;

use super::Session;
use super::channels::{ChannelKind, TargetEpoch};
use super::events::{FoundBlock, SessionError, SessionEvent};
use crate::block::header::sha256d_from_midstate;
use crate::mining::share::ShareRejection;
use crate::mining::work::Work;
use crate::payout::is_storable_name;
use crate::wire::mining::{SubmitSharesExtended, SubmitSharesStandard};
use crate::wire::{TlvDecoder, USER_IDENTITY};

/// The general purpose bits of the version a miner may roll: BIP323's 0x1fffffe0, as the
/// specification says everywhere (02, 05 §5.3.15/§5.3.16, 07), not BIP320's narrower
/// 0x1fffe000 (a share rolling bits 5 to 12 is work, and may be a block).
pub const VERSION_ROLLING_MASK: u32 = 0x1fff_ffe0;

/// Seconds a share's nTime may pass its job's min_ntime plus the seconds since the job was
/// sent, where that is above the prev hash's ceiling.
const JOB_NTIME_SLACK_SECS: u64 = 2;

/// How long shares on a tip we just found a block for are refused as stale (the new work is
/// normally there within milliseconds; this only bounds the case where the node refuses it).
pub const SOLVED_TIP_MS: u64 = 10_000;

/// An accepted share, between validation and acknowledgement.
#[derive(Debug, Clone, Copy)]
pub(super) struct Verdict {
    /// Index of its channel.
    pub(super) idx: usize,
    /// The target it is credited at (its job's), with that target's difficulty and work.
    pub(super) credited: TargetEpoch,
    /// Its header hash.
    pub(super) hash: BlockHash,
    /// The work it was on.
    pub(super) work_id: u64,
    /// The job id it named.
    pub(super) job_id: u32,
}

/// Hashes a share fingerprint as itself: fingerprints are bytes of a share's double-SHA256,
/// uniformly random and impossible to choose without doing the work, so SipHash's protection
/// against chosen keys buys nothing here.
#[derive(Debug, Default, Clone, Copy)]
struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Fingerprints (the first 8 bytes of the header hash) of every share a channel had accepted
/// on jobs that can still earn credit. Nothing is evicted: a duplicate is caught for as long
/// as its job can be credited. The sets are bounded by the credit window instead (see
/// `MiningConfig::credit_window_shares` and `Session::restart_credit_window`). Identical
/// headers on two jobs of the same work hash alike, so one set covers all the jobs of a
/// window.
#[derive(Debug, Default)]
pub(super) struct SeenShares {
    set: HashSet<u64, std::hash::BuildHasherDefault<FingerprintHasher>>,
}

impl SeenShares {
    /// Inserts a share's hash; false if it was there already.
    fn insert(&mut self, hash: &BlockHash) -> bool {
        let mut key = [0u8; 8];
        key.copy_from_slice(&hash.as_byte_array()[..8]);
        let key = u64::from_le_bytes(key);
        // Looked up first: inserting, even a key already there, makes room for one more, and
        // a set that is full (as the window's last share leaves it) would double for nothing.
        !self.set.contains(&key) && self.set.insert(key)
    }

    /// Fingerprints held.
    pub(super) fn len(&self) -> usize {
        self.set.len()
    }

    /// Forgets every share but keeps the memory.
    pub(super) fn clear(&mut self) {
        self.set.clear();
    }
}

/// The job a share names.
#[derive(Debug, Clone, Copy)]
enum NamedJob {
    /// One of `Session::jobs`: validated and credited at its target; `retired`: a job of the
    /// credit window that just ended, in its grace (duplicates are in `seen_retired`).
    Credit { ji: usize, retired: bool },
    /// An older job of the tip (an index into `Session::older`): only a block counts.
    BlockOnly(usize),
    /// One of `Session::jobs` whose credit window's grace is over: only a block counts.
    Retired(usize),
}

impl Session {
    pub(super) fn on_submit_extended(
        &mut self,
        m: &SubmitSharesExtended<'_>,
        tlv: &[u8],
        now_ms: u64,
    ) -> Result<(), SessionError> {
        let (worker, verdict) = match self.worker_identity(tlv) {
            Ok(worker) => (worker, self.validate_extended(m, now_ms)),
            Err(reason) => (None, Err(reason)),
        };
        self.conclude(m.channel_id, m.sequence_number, verdict, worker, now_ms)
    }

    /// The worker named by the user_identity TLV of extension 0x0002, if it was negotiated (an
    /// unexpected TLV is ignored otherwise). A malformed or over-long one, or one that is not
    /// UTF-8, rejects the message (03 §3.4.3: "the recipient MUST reject the message"), as
    /// does a name with a control character, which the ledger could not keep as it is
    /// ([`is_storable_name`]).
    fn worker_identity(&mut self, tlv: &[u8]) -> Result<Option<Arc<str>>, ShareRejection> {
        if !self.worker_tlv {
            return Ok(None);
        }
        match TlvDecoder::new(tlv, &[USER_IDENTITY]).next() {
            None => Ok(None),
            Some(Err(_)) => Err(ShareRejection::InvalidTlv),
            Some(Ok(t)) => {
                let name = std::str::from_utf8(t.value).map_err(|_| ShareRejection::InvalidTlv)?;
                if !is_storable_name(name) {
                    return Err(ShareRejection::InvalidTlv);
                }
                match &self.last_worker {
                    Some(last) if **last == *name => Ok(Some(last.clone())),
                    _ => Ok(Some(self.last_worker.insert(Arc::from(name)).clone())),
                }
            }
        }
    }

    pub(super) fn on_submit_standard(
        &mut self,
        m: &SubmitSharesStandard,
        now_ms: u64,
    ) -> Result<(), SessionError> {
        let verdict = self.validate_standard(m, now_ms);
        self.conclude(m.channel_id, m.sequence_number, verdict, None, now_ms)
    }

    /// The job a share names on the current tip.
    fn find_job(&self, job_id: u32, now_ms: u64) -> Result<(u64, NamedJob), ShareRejection> {
        let Some(prev) = self.tip.prev_hash else {
            return Err(ShareRejection::InvalidJobId);
        };
        if matches!(self.solved, Some((tip, until)) if tip == prev && now_ms <= until) {
            return Err(ShareRejection::StaleShare);
        }
        let Some(seq) = self.seq_of(job_id) else {
            // An id of a job sent on an earlier tip: stale rather than unknown.
            let back = u64::from((self.tip.first_seq as u32).wrapping_sub(job_id));
            return if job_id != 0 && back >= 1 && back < self.tip.first_seq {
                Err(ShareRejection::StaleShare)
            } else {
                Err(ShareRejection::InvalidJobId)
            };
        };
        if let Some(ji) = self.jobs.iter().rposition(|j| j.seq == seq) {
            let named = match self.retirement {
                // A job of an ended credit window whose grace ran out before the timer said so.
                Some(r) if seq < r.below_seq && now_ms >= r.until_ms => NamedJob::Retired(ji),
                Some(r) if seq < r.below_seq => NamedJob::Credit { ji, retired: true },
                _ => NamedJob::Credit { ji, retired: false },
            };
            return Ok((seq, named));
        }
        self.older
            .iter()
            .position(|o| o.first_seq <= seq && seq <= o.last_seq)
            .map(|oi| (seq, NamedJob::BlockOnly(oi)))
            // A job of this tip sent and forgotten since (past `MAX_OLDER_RUNS`).
            .ok_or(if seq < self.next_seq {
                ShareRejection::StaleShare
            } else {
                ShareRejection::InvalidJobId
            })
    }

    /// The work of a named job and the nTime floor a share on it must meet.
    fn job_work(&self, job: NamedJob) -> (&Arc<Work>, u32, u64) {
        match job {
            NamedJob::Credit { ji, .. } => {
                let j = &self.jobs[ji];
                (&j.work, j.min_ntime, j.sent_ms)
            }
            NamedJob::Retired(ji) => {
                let j = &self.jobs[ji];
                (&j.work, j.work.min_time, self.tip.sent_ms)
            }
            // Only a block counts on these: the consensus floor is enough.
            NamedJob::BlockOnly(oi) => {
                let o = &self.older[oi];
                (&o.work, o.work.min_time, self.tip.sent_ms)
            }
        }
    }

    /// nTime within [the job's min_ntime, the latest SetNewPrevHash's min_ntime plus the
    /// seconds since it was sent plus the allowance] (05 §5.3.11; a job sent later with a
    /// higher min_ntime moves the ceiling with it), and version bits only within the mask.
    fn check_time_and_version(
        &self,
        job: NamedJob,
        ntime: u32,
        version: u32,
        now_ms: u64,
    ) -> Result<(), ShareRejection> {
        let (work, min_ntime, sent_ms) = self.job_work(job);
        if ntime < min_ntime {
            return Err(ShareRejection::NtimeTooOld);
        }
        let since = |base: u32, sent: u64| u64::from(base) + now_ms.saturating_sub(sent) / 1000;
        // A job sent with a later min_ntime (past the floor of a new credit window) moves the
        // ceiling with it, by a couple of seconds of slack only: each window can then carry the
        // floor at most that far past real time, not the whole allowance.
        let ceiling = (since(self.tip.min_ntime, self.tip.sent_ms)
            + u64::from(self.config.ntime_allowance_secs))
        .max(since(min_ntime, sent_ms) + JOB_NTIME_SLACK_SECS);
        if u64::from(ntime) > ceiling {
            return Err(ShareRejection::NtimeTooNew);
        }
        if version != work.version {
            if !self.config.version_rolling {
                return Err(ShareRejection::VersionRollingNotAllowed);
            }
            if (version ^ work.version) & !VERSION_ROLLING_MASK != 0 {
                return Err(ShareRejection::InvalidNonRollableVersionBit);
            }
        }
        Ok(())
    }

    /// Validates an extended share; on success returns its verdict (a block's event is
    /// already pushed).
    fn validate_extended(
        &mut self,
        m: &SubmitSharesExtended<'_>,
        now_ms: u64,
    ) -> Result<Verdict, ShareRejection> {
        let idx = self
            .channels
            .iter()
            .position(|c| c.id == m.channel_id && c.kind == ChannelKind::Extended)
            .ok_or(ShareRejection::InvalidChannelId)?;
        let (seq, job) = self.find_job(m.job_id, now_ms)?;
        let ch = &self.channels[idx];
        if m.extranonce.len() != ch.extranonce_size {
            return Err(ShareRejection::BadExtranonceSize);
        }
        self.check_time_and_version(job, m.ntime, m.version, now_ms)?;
        let own = self.own_work(idx, job)?;
        let work = own.as_deref().unwrap_or_else(|| self.job_work(job).0);
        let ch = &self.channels[idx];
        let root = work.merkle_root(&ch.extranonce_prefix, &m.extranonce);
        let hash = work.header_hash(m.version, &root, m.ntime, m.nonce);
        self.finish_share(
            idx,
            (seq, job),
            own.as_deref(),
            hash,
            (m.version, m.ntime, m.nonce),
            &m.extranonce,
            now_ms,
        )
    }

    fn validate_standard(
        &mut self,
        m: &SubmitSharesStandard,
        now_ms: u64,
    ) -> Result<Verdict, ShareRejection> {
        let idx = self
            .channels
            .iter()
            .position(|c| c.id == m.channel_id && c.kind == ChannelKind::Standard)
            .ok_or(ShareRejection::InvalidChannelId)?;
        let (seq, job) = self.find_job(m.job_id, now_ms)?;
        self.check_time_and_version(job, m.ntime, m.version, now_ms)?;
        let own = self.own_work(idx, job)?;
        let work = own.as_deref().unwrap_or_else(|| self.job_work(job).0);
        let ch = &self.channels[idx];
        let hash = match ch.roots.iter().rev().find(|r| r.seq == seq) {
            // The job was sent to this channel and its cached state covers the first 64
            // header bytes: hash the last 16.
            Some(sj) if m.version == sj.version => {
                let mut tail = [0u8; 16];
                tail[..4].copy_from_slice(&sj.root.as_byte_array()[28..]);
                tail[4..8].copy_from_slice(&m.ntime.to_le_bytes());
                tail[8..12].copy_from_slice(&work.nbits.to_le_bytes());
                tail[12..].copy_from_slice(&m.nonce.to_le_bytes());
                sha256d_from_midstate(&sj.head, &tail)
            }
            Some(sj) => work.header_hash(m.version, &sj.root, m.ntime, m.nonce),
            // A job that earns credit but was never sent to this channel.
            // A job not sent to this channel (a pool facade's, another channel's first job) or
            // whose cached root is gone: the root is computed, the work is the channel's own.
            None => {
                let root = work.merkle_root(&ch.extranonce_prefix, &[]);
                work.header_hash(m.version, &root, m.ntime, m.nonce)
            }
        };
        self.finish_share(
            idx,
            (seq, job),
            own.as_deref(),
            hash,
            (m.version, m.ntime, m.nonce),
            &[],
            now_ms,
        )
    }

    /// The work a share of channel `idx` on `job` is on when the channel is paid in its own
    /// coinbase (its payee's derivation of the job's work); `None` for a channel of the pool,
    /// which mines the job's work itself: one branch, nothing looked up or cloned.
    fn own_work(&mut self, idx: usize, job: NamedJob) -> Result<Option<Arc<Work>>, ShareRejection> {
        if self.channels[idx].payee.is_none() {
            return Ok(None);
        }
        let base = self.job_work(job).0.clone();
        // No job on it could be sent to this channel: there is no such job for it.
        self.payee_work(idx, &base)
            .map_err(|_| ShareRejection::InvalidJobId)
    }

    /// Checks the share's hash against its job's target and earlier shares, and builds the
    /// block if it is one (from `own`, the channel's own work, when it is paid in its own
    /// coinbase).
    #[allow(clippy::too_many_arguments)]
    fn finish_share(
        &mut self,
        idx: usize,
        (seq, job): (u64, NamedJob),
        own: Option<&Work>,
        hash: [u8; 32],
        (version, ntime, nonce): (u32, u32, u32),
        extranonce: &[u8],
        now_ms: u64,
    ) -> Result<Verdict, ShareRejection> {
        let hash = BlockHash::from_byte_array(hash);
        let ledger_down = self.ledger_refuses();
        // Field borrows, not `job_work`: the job stays borrowed while the channel changes.
        let work: &Work = match (own, job) {
            (Some(own), _) => own,
            (None, NamedJob::Credit { ji, .. } | NamedJob::Retired(ji)) => &self.jobs[ji].work,
            (None, NamedJob::BlockOnly(oi)) => &self.older[oi].work,
        };
        let ch = &mut self.channels[idx];
        let mut credited = *ch.epoch_of(seq);
        // A block is never refused, even where the job's target is harder than the network's
        // (on regtest, or a channel asking for a harder target than the network's), nor on an
        // older job.
        let is_block = work.network_target.is_met_by(hash);
        if is_block && !credited.target.is_met_by(hash) {
            // Credited at the work it proves, the network's target: at the job's, a miner
            // asking for a target past the network's would be paid for work no hash showed.
            credited = TargetEpoch::new(credited.from_seq, work.network_target);
        }
        let retired = match job {
            NamedJob::Credit { retired, .. } => retired,
            NamedJob::BlockOnly(_) | NamedJob::Retired(_) if !is_block => {
                return Err(ShareRejection::StaleShare);
            }
            // A block on a job that no longer earns credit: recorded with the current window.
            NamedJob::BlockOnly(_) | NamedJob::Retired(_) => false,
        };
        if !is_block && !credited.target.is_met_by(hash) {
            return Err(ShareRejection::DifficultyTooLow);
        }
        // A valid share the ledger cannot record now (a block always can) is refused before
        // it counts for anything: not seen (sent again once the ledger is back, it is
        // taken), no share of the channel's rate spent, no nTime raised.
        if !is_block && ledger_down {
            return Err(ShareRejection::LedgerUnavailable);
        }
        // A valid share within the channel's rate (see `flood`); a block always passes.
        if !ch
            .bucket
            .take(self.share_rate_per_ms, self.share_burst, now_ms)
            && !is_block
        {
            let at_current = credited.target == ch.target();
            ch.bucket.refused(at_current, now_ms);
            return Err(ShareRejection::TooManyShares);
        }
        // Every header with an nTime at or past the floor belongs to the current window's set:
        // the new jobs can only make those, so a share of an ended window's job that has one
        // is kept with them (replayed on a new job of the same work, it is caught).
        let seen = if retired && ntime < self.tip.ntime_floor {
            &mut ch.seen_retired
        } else {
            &mut ch.seen
        };
        if !seen.insert(&hash) {
            return Err(ShareRejection::DuplicateShare);
        }
        self.tip.max_accepted_ntime = self.tip.max_accepted_ntime.max(ntime);
        if is_block {
            self.solved = Some((work.prev_hash, now_ms + SOLVED_TIP_MS));
            let ch = &mut self.channels[idx];
            let block =
                work.assemble_block(&ch.extranonce_prefix, extranonce, version, ntime, nonce);
            ch.stats.blocks_found += 1;
            self.events
                .push(SessionEvent::BlockFound(Box::new(FoundBlock {
                    block,
                    height: work.height,
                    channel_id: ch.id,
                    user_identity: ch.user_identity.clone(),
                    coinbase_payouts: work.coinbase_payouts.clone(),
                })));
        }
        Ok(Verdict {
            idx,
            credited,
            hash,
            work_id: work.id,
            job_id: seq as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::BlockHash;
    use bitcoin::hashes::Hash;

    use super::SeenShares;

    #[test]
    fn every_fingerprint_stays_until_the_set_is_cleared_and_memory_is_kept() {
        let mut seen = SeenShares::default();
        let hash = |n: u64| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&n.to_le_bytes());
            BlockHash::from_byte_array(b)
        };
        for n in 0..896u64 {
            assert!(seen.insert(&hash(n)), "{n} is new");
        }
        for n in 0..896u64 {
            assert!(!seen.insert(&hash(n)), "{n} is a duplicate however old");
        }
        let buckets = seen.set.capacity();
        assert!(buckets <= 896, "room for {buckets} shares after 896");
        seen.clear();
        assert_eq!(seen.len(), 0);
        assert_eq!(seen.set.capacity(), buckets, "the memory is kept");
        assert!(seen.insert(&hash(1)), "a cleared set forgets");
    }
}
