//! Share validation: the channel, the job (current tip, not a tip we just solved), nTime and
//! version rules, the hash against the channel's (or its previous) target, duplicate
//! detection, and turning a share that meets the network target into a whole block.

use std::collections::HashSet;

use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, Target};

use super::Session;
use super::channels::ChannelKind;
use super::events::{FoundBlock, SessionError, SessionEvent};
use super::jobs::SessionJob;
use crate::block::header::sha256d_from_midstate;
use crate::mining::share::ShareRejection;
use crate::mining::work::Work;
use crate::wire::mining::{SubmitSharesExtended, SubmitSharesStandard};
use crate::wire::{TlvDecoder, USER_IDENTITY};

/// The BIP320 bits a miner may roll.
pub const VERSION_ROLLING_MASK: u32 = 0x1fff_e000;

/// How long shares on a tip we just found a block for are refused as stale (the new work is
/// normally there within milliseconds; this only bounds the case where the node refuses it).
pub const SOLVED_TIP_MS: u64 = 10_000;

/// An accepted share, between validation and acknowledgement.
#[derive(Debug, Clone, Copy)]
pub(super) struct Verdict {
    /// Index of its channel.
    pub(super) idx: usize,
    /// The target it is credited at.
    pub(super) credited: Target,
    /// Its header hash.
    pub(super) hash: BlockHash,
    /// The work it was on.
    pub(super) work_id: u64,
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

/// Fingerprints of the shares accepted on the current tip, in two generations: a share is a
/// duplicate if either holds it; new ones go to the newer, and once it holds half the window
/// the older is emptied (keeping its memory) and the two trade places. A duplicate is caught
/// for at least the last `window / 2` shares and at most `window`; memory stays at two tables
/// of `window / 2` (about 9 KiB per channel at the default), allocated only as the channel
/// gets that busy.
#[derive(Debug, Default)]
pub(super) struct SeenShares {
    newer: HashSet<u64, std::hash::BuildHasherDefault<FingerprintHasher>>,
    older: HashSet<u64, std::hash::BuildHasherDefault<FingerprintHasher>>,
}

impl SeenShares {
    /// Inserts a fingerprint; false if it was there already.
    fn insert(&mut self, key: u64, window: usize) -> bool {
        if self.newer.contains(&key) || self.older.contains(&key) {
            return false;
        }
        if self.newer.len() >= (window / 2).max(1) {
            std::mem::swap(&mut self.newer, &mut self.older);
            self.newer.clear();
        }
        self.newer.insert(key);
        true
    }

    /// Forgets every share (new tip) but keeps the memory.
    pub(super) fn clear(&mut self) {
        self.newer.clear();
        self.older.clear();
    }
}

impl Session {
    pub(super) fn on_submit_extended(
        &mut self,
        m: &SubmitSharesExtended<'_>,
        tlv: &[u8],
        now_ms: u64,
    ) -> Result<(), SessionError> {
        let worker = if self.worker_tlv {
            TlvDecoder::new(tlv, &[USER_IDENTITY])
                .find_map(Result::ok)
                .and_then(|t| std::str::from_utf8(t.value).ok().map(str::to_owned))
        } else {
            None
        };
        let verdict = self.validate_extended(m, now_ms);
        self.conclude(m.channel_id, m.sequence_number, verdict, worker, now_ms);
        Ok(())
    }

    pub(super) fn on_submit_standard(&mut self, m: &SubmitSharesStandard, now_ms: u64) {
        let verdict = self.validate_standard(m, now_ms);
        self.conclude(m.channel_id, m.sequence_number, verdict, None, now_ms);
    }

    /// Index of a valid, current job in `self.jobs`.
    fn find_job(&self, job_id: u32, now_ms: u64) -> Result<usize, ShareRejection> {
        let ji = self
            .jobs
            .iter()
            .rposition(|j| j.job_id == job_id)
            .ok_or(ShareRejection::InvalidJobId)?;
        let prev = self.jobs[ji].work.prev_hash;
        if matches!(self.solved, Some((tip, until)) if tip == prev && now_ms <= until) {
            return Err(ShareRejection::StaleShare);
        }
        match self.tip {
            Some(tip) if tip == prev => Ok(ji),
            _ => Err(ShareRejection::StaleShare),
        }
    }

    fn check_time_and_version(
        &self,
        job: &SessionJob,
        ntime: u32,
        version: u32,
        now_ms: u64,
    ) -> Result<(), ShareRejection> {
        if ntime < job.min_ntime {
            return Err(ShareRejection::NtimeTooOld);
        }
        let now_s = now_ms / 1000;
        if u64::from(ntime) > now_s + u64::from(self.config.max_ntime_ahead_secs) {
            return Err(ShareRejection::NtimeTooNew);
        }
        if version != job.work.version {
            if !self.config.version_rolling {
                return Err(ShareRejection::VersionRollingNotAllowed);
            }
            if (version ^ job.work.version) & !VERSION_ROLLING_MASK != 0 {
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
        let ji = self.find_job(m.job_id, now_ms)?;
        let job = &self.jobs[ji];
        let ch = &self.channels[idx];
        if m.extranonce.len() != ch.extranonce_size {
            return Err(ShareRejection::BadExtranonceSize);
        }
        self.check_time_and_version(job, m.ntime, m.version, now_ms)?;
        let root = job.work.merkle_root(&ch.extranonce_prefix, &m.extranonce);
        let hash = job.work.header_hash(m.version, &root, m.ntime, m.nonce);
        self.finish_share(
            idx,
            ji,
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
        let ji = self.find_job(m.job_id, now_ms)?;
        let job = &self.jobs[ji];
        self.check_time_and_version(job, m.ntime, m.version, now_ms)?;
        let sj = self.channels[idx]
            .roots
            .iter()
            .rev()
            .find(|j| j.job_id == m.job_id)
            .ok_or(ShareRejection::InvalidJobId)?;
        let hash = if m.version == sj.version {
            // The cached state covers the first 64 header bytes: hash the last 16.
            let mut tail = [0u8; 16];
            tail[..4].copy_from_slice(&sj.root.as_byte_array()[28..]);
            tail[4..8].copy_from_slice(&m.ntime.to_le_bytes());
            tail[8..12].copy_from_slice(&job.work.nbits.to_le_bytes());
            tail[12..].copy_from_slice(&m.nonce.to_le_bytes());
            sha256d_from_midstate(&sj.head, &tail)
        } else {
            job.work.header_hash(m.version, &sj.root, m.ntime, m.nonce)
        };
        self.finish_share(idx, ji, hash, (m.version, m.ntime, m.nonce), &[], now_ms)
    }

    /// Checks the share's hash against the targets and earlier shares, and builds the block if
    /// it is one.
    fn finish_share(
        &mut self,
        idx: usize,
        ji: usize,
        hash: [u8; 32],
        (version, ntime, nonce): (u32, u32, u32),
        extranonce: &[u8],
        now_ms: u64,
    ) -> Result<Verdict, ShareRejection> {
        let hash = BlockHash::from_byte_array(hash);
        // Field borrows, not methods: the job stays borrowed while the channel changes.
        let work: &Work = &self.jobs[ji].work;
        let ch = &mut self.channels[idx];
        // A block is never refused, even where the channel target is harder than the network's
        // (possible on regtest).
        let is_block = work.network_target.is_met_by(hash);
        let credited = if ch.target.is_met_by(hash) {
            ch.target
        } else {
            match ch.previous_target {
                Some((prev, until)) if now_ms <= until && prev.is_met_by(hash) => prev,
                _ if is_block => ch.target,
                _ => return Err(ShareRejection::DifficultyTooLow),
            }
        };
        let mut key = [0u8; 8];
        key.copy_from_slice(&hash.as_byte_array()[..8]);
        if !ch
            .seen
            .insert(u64::from_le_bytes(key), self.config.duplicate_window)
        {
            return Err(ShareRejection::DuplicateShare);
        }
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
                })));
        }
        Ok(Verdict {
            idx,
            credited,
            hash,
            work_id: work.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::SeenShares;

    #[test]
    fn duplicates_are_caught_for_at_least_half_the_window_and_memory_stays_bounded() {
        let window = 896;
        let mut seen = SeenShares::default();
        for key in 0..10_000u64 {
            assert!(seen.insert(key, window), "{key} is new");
            // Every one of the last window/2 shares is still a duplicate.
            for back in [0, 1, window as u64 / 2 - 1] {
                if let Some(old) = key.checked_sub(back) {
                    assert!(
                        !seen.insert(old, window),
                        "{old} repeated {back} shares later"
                    );
                }
            }
            assert!(seen.newer.len() + seen.older.len() <= window);
        }
        let buckets = seen.newer.capacity() + seen.older.capacity();
        assert!(
            buckets <= 2 * 512,
            "{buckets} slots for a window of {window}"
        );
        seen.clear();
        assert!(seen.insert(9_999, window), "a new tip forgets");
    }
}
