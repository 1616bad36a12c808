//! The CPU hashing loop of one thread, and the slot through which the driver hands work to
//! hashing threads.
//!
//! Per nonce the header costs two SHA-256 compressions: the first 64 header bytes (version,
//! prev hash, 28 bytes of merkle root) are compressed once per (job, extranonce, nTime) into a
//! midstate, then each nonce compresses the last 16 bytes plus padding, and the second SHA-256
//! compresses the 32-byte digest. rust-bitcoin's SHA-256 uses SHA-NI when the CPU has it.
//! A quick check on the top 32 bits of the hash skips building the full hash for almost every
//! nonce.
//!
//! Threads search disjoint spaces: on extended channels each thread rolls its own extranonces
//! (thread index + k * threads) over the whole nonce range; on standard channels (or an
//! extended channel without miner extranonce) the nonce range is split between threads and
//! the BIP320 version bits (when the job allows it), then nTime (unless the miner's policy
//! forbids it: then the thread waits for the next job), are rolled when a thread's part
//! is exhausted. The search position survives a change of
//! target on the same job, so a SetTarget does not make the threads re-find the same shares.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bitcoin::hashes::{Hash, HashEngine, sha256};
use bitcoin::{BlockHash, Target, Txid};

use super::miner::{JobKind, MiningWork, Share};
use crate::block::merkle::fold_merkle_path;

/// sha256d of an 80-byte header (reference path for tests and share checks).
pub use crate::block::header::hash_header_bytes as header_hash;

/// Nonces hashed between two checks of `keep_going`: about a millisecond or two per thread,
/// so a thread stops promptly when the work changes.
pub const NONCE_BATCH: u64 = 1 << 14;

/// One SHA-256 compression of `block` on top of `state` (no padding added): rust-bitcoin's
/// engine restarted from a midstate, which uses SHA-NI when the CPU has it.
#[inline(always)]
pub(crate) fn compress(state: sha256::Midstate, block: &[u8; 64]) -> [u8; 32] {
    let mut e = sha256::HashEngine::from_midstate(state, 64);
    e.input(block);
    e.midstate().to_byte_array()
}

/// The 80-byte header prepared for nonce iteration.
struct HeaderMidstate {
    /// State after the first 64 bytes.
    mid: sha256::Midstate,
    /// Bytes 64..80 of the header and the padding of an 80-byte message; nonce at 12..16.
    tail: [u8; 64],
}

impl HeaderMidstate {
    fn new(version: u32, prev_hash: &[u8; 32], root: &[u8; 32], ntime: u32, nbits: u32) -> Self {
        let mut first = [0u8; 64];
        first[0..4].copy_from_slice(&version.to_le_bytes());
        first[4..36].copy_from_slice(prev_hash);
        first[36..64].copy_from_slice(&root[..28]);
        let mut e = sha256::HashEngine::default();
        e.input(&first);
        let mid = e.midstate();
        let mut tail = [0u8; 64];
        tail[0..4].copy_from_slice(&root[28..]);
        tail[4..8].copy_from_slice(&ntime.to_le_bytes());
        tail[8..12].copy_from_slice(&nbits.to_le_bytes());
        tail[16] = 0x80;
        tail[56..].copy_from_slice(&(80u64 * 8).to_be_bytes());
        HeaderMidstate { mid, tail }
    }
}

/// Lowest BIP320 general-purpose version bit (mask 0x1fffe000).
const VERSION_ROLL_SHIFT: u32 = 13;
/// Largest roll counter: 16 bits fit the BIP320 mask.
const MAX_VERSION_ROLL: u32 = 0xffff;

/// SHA-256 initial state, as a midstate.
pub(crate) const IV: sha256::Midstate = sha256::Midstate([
    0x6a, 0x09, 0xe6, 0x67, 0xbb, 0x67, 0xae, 0x85, 0x3c, 0x6e, 0xf3, 0x72, 0xa5, 0x4f, 0xf5, 0x3a,
    0x51, 0x0e, 0x52, 0x7f, 0x9b, 0x05, 0x68, 0x8c, 0x1f, 0x83, 0xd9, 0xab, 0x5b, 0xe0, 0xcd, 0x19,
]);

/// A 32-byte message's single padded block, digest at 0..32.
fn digest_block() -> [u8; 64] {
    let mut b = [0u8; 64];
    b[32] = 0x80;
    b[56..].copy_from_slice(&(32u64 * 8).to_be_bytes());
    b
}

/// Where a thread is in its search space.
#[derive(Debug, Clone)]
struct Cursor {
    job_seq: u64,
    channel_id: u32,
    extranonce: Vec<u8>,
    ntime: u32,
    /// BIP320 roll counter, XORed into the version at bit 13 (0: the job's version).
    version_roll: u32,
    next_nonce: u64,
}

/// One thread's hasher: its share of the search space and its position in it.
#[derive(Debug)]
pub struct Hasher {
    index: u32,
    count: u32,
    /// Extranonces used so far by this thread.
    extranonce_counter: u64,
    cursor: Option<Cursor>,
    hashes: u64,
    /// Whether nTime may be rolled once the nonce and version space is spent.
    roll_ntime: bool,
}

impl Hasher {
    /// Thread `index` of `count` (count >= 1).
    pub fn new(index: u32, count: u32) -> Self {
        let count = count.max(1);
        Hasher {
            index: index % count,
            count,
            extranonce_counter: 0,
            cursor: None,
            hashes: 0,
            roll_ntime: true,
        }
    }

    /// Whether this hasher rolls nTime once a job's nonce and version space is spent
    /// (default: yes); without it, it stops on that job until the next one.
    pub fn with_ntime_rolling(mut self, roll: bool) -> Self {
        self.roll_ntime = roll;
        self
    }

    /// Total hashes computed by this hasher.
    pub fn hashes(&self) -> u64 {
        self.hashes
    }

    /// Whether this work's threads each roll an extranonce of their own.
    fn own_extranonce(work: &MiningWork) -> bool {
        matches!(work.job, JobKind::Extended { extranonce_size, .. } if extranonce_size > 0)
    }

    /// This thread's nonce range for `work`: all of it with an own extranonce, else a slice.
    fn nonce_range(&self, work: &MiningWork) -> (u64, u64) {
        if Self::own_extranonce(work) {
            return (0, 1 << 32);
        }
        let span = (1u64 << 32) / u64::from(self.count);
        let start = span * u64::from(self.index);
        let end = if self.index + 1 == self.count {
            1 << 32
        } else {
            start + span
        };
        (start, end)
    }

    /// The next extranonce of this thread, `size` bytes (little-endian counter, zero padded).
    fn next_extranonce(&mut self, size: usize) -> Vec<u8> {
        let value = self.extranonce_counter * u64::from(self.count) + u64::from(self.index);
        self.extranonce_counter += 1;
        let mut e = vec![0u8; size];
        for (slot, b) in e.iter_mut().zip(value.to_le_bytes()) {
            *slot = b;
        }
        e
    }

    /// Hashes `work` until `keep_going(hashes_so_far_in_this_call)` returns false (checked
    /// every [`NONCE_BATCH`] nonces) or `on_share` returns false. Every hash meeting
    /// `work.target` is passed to `on_share`. Returns the hashes computed in this call.
    pub fn mine(
        &mut self,
        work: &MiningWork,
        mut keep_going: impl FnMut(u64) -> bool,
        mut on_share: impl FnMut(Share) -> bool,
    ) -> u64 {
        let (start, end) = self.nonce_range(work);
        let own_extranonce = Self::own_extranonce(work);
        let resume = self
            .cursor
            .as_ref()
            .is_some_and(|c| c.job_seq == work.job_seq && c.channel_id == work.channel_id);
        if !resume {
            let extranonce = match &work.job {
                JobKind::Extended {
                    extranonce_size, ..
                } => self.next_extranonce(*extranonce_size),
                JobKind::Standard { .. } => Vec::new(),
            };
            self.cursor = Some(Cursor {
                job_seq: work.job_seq,
                channel_id: work.channel_id,
                extranonce,
                ntime: work.ntime,
                version_roll: 0,
                next_nonce: start,
            });
        }
        let Some(mut cursor) = self.cursor.take() else {
            return 0;
        };
        // Coinbase state after prefix + extranonce_prefix: per extranonce only the rest.
        let coinbase_state = match &work.job {
            JobKind::Extended {
                coinbase_prefix,
                extranonce_prefix,
                ..
            } => {
                let mut e = sha256::Hash::engine();
                e.input(coinbase_prefix);
                e.input(extranonce_prefix);
                Some(e)
            }
            JobKind::Standard { .. } => None,
        };
        let merkle_root = |extranonce: &[u8]| -> [u8; 32] {
            match (&work.job, &coinbase_state) {
                (JobKind::Standard { merkle_root }, _) => *merkle_root,
                (
                    JobKind::Extended {
                        coinbase_suffix,
                        merkle_path,
                        ..
                    },
                    Some(state),
                ) => {
                    let mut e = state.clone();
                    e.input(extranonce);
                    e.input(coinbase_suffix);
                    let first = sha256::Hash::from_engine(e);
                    let txid = sha256::Hash::hash(first.as_byte_array()).to_byte_array();
                    fold_merkle_path(Txid::from_byte_array(txid), merkle_path).to_byte_array()
                }
                (JobKind::Extended { .. }, None) => [0; 32],
            }
        };
        let target = work.target;
        let target_top = u32::from_le_bytes([target[28], target[29], target[30], target[31]]);
        let share_target = Target::from_le_bytes(target);
        let mut done = 0u64;
        let version_of = |roll: u32| work.version ^ (roll << VERSION_ROLL_SHIFT);
        let mut header = HeaderMidstate::new(
            version_of(cursor.version_roll),
            &work.prev_hash,
            &merkle_root(&cursor.extranonce),
            cursor.ntime,
            work.nbits,
        );
        let mut digest = digest_block();
        'outer: loop {
            if !keep_going(done) {
                break;
            }
            if cursor.next_nonce >= end {
                // This thread's space for the current extranonce/nTime is exhausted.
                if own_extranonce {
                    let size = cursor.extranonce.len();
                    cursor.extranonce = self.next_extranonce(size);
                } else if work.version_rolling_allowed && cursor.version_roll < MAX_VERSION_ROLL {
                    // BIP320 bits first: they do not move the header time.
                    cursor.version_roll += 1;
                } else if self.roll_ntime {
                    cursor.version_roll = 0;
                    cursor.ntime = cursor.ntime.wrapping_add(1);
                } else {
                    // Spent, and nTime stays: nothing left to hash on this job.
                    break;
                }
                cursor.next_nonce = start;
                header = HeaderMidstate::new(
                    version_of(cursor.version_roll),
                    &work.prev_hash,
                    &merkle_root(&cursor.extranonce),
                    cursor.ntime,
                    work.nbits,
                );
            }
            let batch_end = (cursor.next_nonce + NONCE_BATCH).min(end);
            let mut tail = header.tail;
            for nonce in cursor.next_nonce..batch_end {
                let nonce = nonce as u32;
                tail[12..16].copy_from_slice(&nonce.to_le_bytes());
                let first = compress(header.mid, &tail);
                digest[..32].copy_from_slice(&first);
                let hash = compress(IV, &digest);
                // The hash read as a little-endian integer: its top 32 bits are bytes 28..32.
                if u32::from_le_bytes([hash[28], hash[29], hash[30], hash[31]]) > target_top {
                    continue;
                }
                if !share_target.is_met_by(BlockHash::from_byte_array(hash)) {
                    continue;
                }
                let share = Share {
                    channel_id: work.channel_id,
                    job_id: work.job_id,
                    generation: work.generation,
                    nonce,
                    ntime: cursor.ntime,
                    version: version_of(cursor.version_roll),
                    extranonce: cursor.extranonce.clone(),
                    hash,
                };
                if !on_share(share) {
                    let hashed = u64::from(nonce) + 1 - cursor.next_nonce;
                    done += hashed;
                    cursor.next_nonce = u64::from(nonce) + 1;
                    break 'outer;
                }
            }
            done += batch_end - cursor.next_nonce;
            cursor.next_nonce = batch_end;
        }
        self.cursor = Some(cursor);
        self.hashes += done;
        done
    }
}

/// Hands the current work from the driver to hashing threads: a mutex-protected snapshot, an
/// epoch the threads poll between batches (cheap) and a condvar for idle threads.
#[derive(Debug, Default)]
pub struct WorkSlot {
    work: Mutex<Option<Arc<MiningWork>>>,
    ready: Condvar,
    epoch: AtomicU64,
    stop: AtomicBool,
    hashes: AtomicU64,
}

impl WorkSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the work (None: stop hashing until new work comes); threads notice within a
    /// batch.
    pub fn publish(&self, work: Option<Arc<MiningWork>>) {
        let mut slot = self.work.lock().unwrap_or_else(|e| e.into_inner());
        *slot = work;
        self.epoch.fetch_add(1, Ordering::Release);
        self.ready.notify_all();
    }

    /// Tells every thread to exit.
    pub fn stop(&self) {
        let _slot = self.work.lock().unwrap_or_else(|e| e.into_inner());
        self.stop.store(true, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::Release);
        self.ready.notify_all();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Hashes reported by the threads so far.
    pub fn hashes(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }

    /// Blocks until there is work newer than `seen_epoch`; None once stopped.
    fn wait(&self, seen_epoch: u64) -> Option<(Arc<MiningWork>, u64)> {
        let mut slot = self.work.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.is_stopped() {
                return None;
            }
            let epoch = self.epoch.load(Ordering::Acquire);
            if epoch != seen_epoch
                && let Some(w) = slot.as_ref()
            {
                return Some((w.clone(), epoch));
            }
            slot = self.ready.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The body of a hashing thread: `hasher` hashes whatever work is published until
    /// stopped, passing shares to `on_share` (returning false stops the thread, e.g. when the
    /// driver is gone).
    pub fn run_worker(&self, mut hasher: Hasher, mut on_share: impl FnMut(Share) -> bool) {
        let mut seen = u64::MAX;
        let mut alive = true;
        while alive {
            let Some((work, epoch)) = self.wait(seen) else {
                return;
            };
            seen = epoch;
            let mut reported = 0u64;
            let done = hasher.mine(
                &work,
                |done| {
                    self.hashes.fetch_add(done - reported, Ordering::Relaxed);
                    reported = done;
                    self.epoch.load(Ordering::Acquire) == epoch
                },
                |share| {
                    alive = on_share(share);
                    alive
                },
            );
            // Hashes since the last check (a share may have ended the call mid-batch).
            self.hashes.fetch_add(done - reported, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standard_work(target: [u8; 32]) -> MiningWork {
        MiningWork {
            generation: 1,
            job_seq: 1,
            channel_id: 1,
            job_id: 1,
            version: 0x2000_0000,
            version_rolling_allowed: false,
            prev_hash: [7; 32],
            nbits: 0x1d00ffff,
            ntime: 1_800_000_000,
            target,
            job: JobKind::Standard {
                merkle_root: [9; 32],
            },
        }
    }

    #[test]
    fn midstate_path_matches_plain_sha256d() {
        let work = standard_work([0xff; 32]);
        let mut h = Hasher::new(0, 1);
        let mut shares = Vec::new();
        h.mine(
            &work,
            |_| true,
            |s| {
                shares.push(s);
                shares.len() < 5
            },
        );
        assert_eq!(shares.len(), 5);
        for s in shares {
            let header = crate::block::header::header_bytes(
                s.version,
                &work.prev_hash,
                &[9; 32],
                s.ntime,
                work.nbits,
                s.nonce,
            );
            assert_eq!(header_hash(&header), s.hash);
        }
    }

    #[test]
    fn exhausted_range_rolls_version_bits_then_ntime() {
        let mut work = standard_work([0xff; 32]);
        work.version_rolling_allowed = true;
        // 2^20 threads: 4096 nonces each, exhausted after a quarter batch.
        let mut h = Hasher::new(3, 1 << 20);
        let mut seen = Vec::new();
        h.mine(
            &work,
            |d| d < 3 * 4096,
            |s| {
                seen.push((s.version, s.ntime));
                true
            },
        );
        assert_eq!(seen.first(), Some(&(work.version, work.ntime)));
        assert_eq!(seen.last(), Some(&(work.version ^ (2 << 13), work.ntime)));
        assert!(
            seen.iter()
                .all(|(v, _)| (v ^ work.version) & !0x1fff_e000 == 0)
        );

        work.version_rolling_allowed = false;
        work.job_seq = 2;
        seen.clear();
        h.mine(
            &work,
            |d| d < 2 * 4096,
            |s| {
                seen.push((s.version, s.ntime));
                true
            },
        );
        assert_eq!(seen.last(), Some(&(work.version, work.ntime + 1)));
    }

    #[test]
    fn without_ntime_rolling_a_spent_range_stops_until_the_next_job() {
        let mut work = standard_work([0xff; 32]);
        let mut h = Hasher::new(3, 1 << 20).with_ntime_rolling(false);
        let mut ntimes = Vec::new();
        let done = h.mine(
            &work,
            |d| d < 3 * 4096,
            |s| {
                ntimes.push(s.ntime);
                true
            },
        );
        assert_eq!(done, 4096, "only this thread's nonces, once");
        assert!(ntimes.iter().all(|&t| t == work.ntime));
        // A new target on the same job: still nothing to hash.
        work.generation = 2;
        assert_eq!(h.mine(&work, |_| true, |_| true), 0);
        // The next job starts afresh.
        work.job_seq = 2;
        assert_eq!(h.mine(&work, |d| d < 1, |_| true), 4096);
    }

    #[test]
    fn threads_split_the_nonce_space_and_resume() {
        let mut target = [0xff; 32];
        target[31] = 0x0f;
        let work = standard_work(target);
        let mut a = Hasher::new(0, 2);
        let mut b = Hasher::new(1, 2);
        let mut nonces = Vec::new();
        for h in [&mut a, &mut b] {
            h.mine(
                &work,
                |d| d < 4 * NONCE_BATCH,
                |s| {
                    nonces.push(s.nonce);
                    true
                },
            );
        }
        assert!(nonces.iter().any(|&n| n < 1 << 31));
        assert!(nonces.iter().any(|&n| n >= 1 << 31));
        // A new target on the same job resumes, never repeating a nonce.
        let mut again = work.clone();
        again.generation = 2;
        let first = nonces.clone();
        a.mine(
            &again,
            |d| d < NONCE_BATCH,
            |s| {
                assert!(!first.contains(&s.nonce));
                true
            },
        );
    }
}
