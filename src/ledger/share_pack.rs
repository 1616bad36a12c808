//! How the ledger stores a commit's shares, in SQLite (schema 5) and in PostgreSQL (schema 5):
//! one row per group commit holding all of them packed (`share_packs.shares`), instead of one
//! row per share.
//!
//! Why: with a row per share, SQLite bound nine columns, built a record and made two B-tree
//! inserts per share; the ledger took at most 0.4 to 0.5 million shares a second on this
//! machine and 115 bytes a share. A pack is one insert per commit: 2 to 3.7 million shares a
//! second, 52 bytes a share at 4,096 a commit (154 when every share is a commit of its own).
//! The ids are deltas, the time a delta from the pack's earliest, the job's target stored once
//! per distinct target, small integers as Bitcoin's CompactSize. Under full load at 1,000
//! connections the pool's own throughput did not move measurably with it: what the ledger
//! costs there is the acknowledgement's wait, not the insert (BENCHMARKS.md, "Packed shares in
//! SQLite"). PostgreSQL's server, which runs on the pool's cores, spent about 4 us of CPU a
//! share on the rows (a tuple and two index entries each); packs take that to a tuple per
//! commit (BENCHMARKS.md, "Packed shares in PostgreSQL").
//!
//! The pack keeps every field of [`ShareRecord`] exactly (the credit's target, its f64
//! difficulty bit for bit, the hash), so reads, exports and payouts see what a row held.
//! Decoding checks everything and fails with [`LedgerError::Corrupt`], never a panic.
//!
//! Layout (version 1), after the row's `first_id` (the first share's id) and `min_time_ms`
//! (the earliest share's time): `u8 1`, `count`, `targets`, `targets x 32 bytes`
//! (little-endian), then per share `id_delta` (0 for the first, then at least 1),
//! `time_ms - min_time_ms`,
//! `worker_id`, `connection_id`, `channel_id`, `job_id`, `target_index`, difficulty (f64,
//! little-endian), hash (32 bytes, internal order); every unnamed width a CompactSize.

use bitcoin::consensus::{Decodable, Encodable};
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, Target, VarInt};

use std::sync::Arc;

use super::{LedgerError, ShareRecord, StoredShare};

/// The layout this program writes and reads.
const VERSION: u8 = 1;

/// One share as a pack holds it: a [`ShareRecord`] with its worker as the
/// ledger's worker id, and its id.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedShare {
    /// The share's id.
    pub id: u64,
    /// When it was accepted (ms since the Unix epoch).
    pub time_ms: u64,
    /// The `workers` row of its user and worker.
    pub worker_id: u64,
    /// The pool's connection id.
    pub connection_id: u64,
    /// The channel.
    pub channel_id: u32,
    /// The job.
    pub job_id: u32,
    /// The job's target (the credit).
    pub target: Target,
    /// The credited difficulty.
    pub difficulty: f64,
    /// The share's hash.
    pub hash: BlockHash,
}

impl PackedShare {
    /// `record` as share `id` of the worker whose `workers` row is `worker_id`.
    pub fn of(record: &ShareRecord, id: u64, worker_id: u64) -> Self {
        PackedShare {
            id,
            time_ms: record.time_ms,
            worker_id,
            connection_id: record.connection_id,
            channel_id: record.channel_id,
            job_id: record.job_id,
            target: record.target,
            difficulty: record.difficulty,
            hash: record.hash,
        }
    }

    /// The stored share, its worker id's names given.
    pub fn into_stored(self, user: Arc<str>, worker: Arc<str>) -> StoredShare {
        StoredShare {
            id: self.id,
            record: ShareRecord {
                time_ms: self.time_ms,
                user,
                worker,
                connection_id: self.connection_id,
                channel_id: self.channel_id,
                job_id: self.job_id,
                target: self.target,
                difficulty: self.difficulty,
                hash: self.hash,
            },
        }
    }
}

/// A pack's bytes and what its row records beside them.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPack {
    /// The first share's id (the row's key).
    pub first_id: u64,
    /// The last share's id.
    pub last_id: u64,
    /// The earliest share time.
    pub min_time_ms: u64,
    /// The latest share time.
    pub max_time_ms: u64,
    /// How many shares.
    pub count: u64,
    /// The packed shares.
    pub bytes: Vec<u8>,
}

/// Packs `shares`, whose ids must strictly increase; `None` for no shares.
pub fn encode(shares: &[PackedShare]) -> Option<EncodedPack> {
    let first = shares.first()?;
    let last = shares.last()?;
    debug_assert!(shares.windows(2).all(|w| w[0].id < w[1].id));
    let base_time = shares.iter().map(|s| s.time_ms).min().unwrap_or(0);
    let max_time = shares.iter().map(|s| s.time_ms).max().unwrap_or(0);
    // Distinct targets in first-seen order; a commit holds few (one per job and channel
    // difficulty), so a linear search over them is cheaper than a map.
    let mut targets: Vec<Target> = Vec::new();
    let mut indices = Vec::with_capacity(shares.len());
    for share in shares {
        let index = match targets.iter().rposition(|t| *t == share.target) {
            Some(i) => i,
            None => {
                targets.push(share.target);
                targets.len() - 1
            }
        };
        indices.push(index as u64);
    }
    let mut bytes = Vec::with_capacity(16 + targets.len() * 32 + shares.len() * 56);
    bytes.push(VERSION);
    put(&mut bytes, shares.len() as u64);
    put(&mut bytes, targets.len() as u64);
    for target in &targets {
        bytes.extend_from_slice(&target.to_le_bytes());
    }
    let mut previous = first.id;
    for (share, index) in shares.iter().zip(indices) {
        put(&mut bytes, share.id - previous);
        previous = share.id;
        put(&mut bytes, share.time_ms - base_time);
        put(&mut bytes, share.worker_id);
        put(&mut bytes, share.connection_id);
        put(&mut bytes, u64::from(share.channel_id));
        put(&mut bytes, u64::from(share.job_id));
        put(&mut bytes, index);
        bytes.extend_from_slice(&share.difficulty.to_le_bytes());
        bytes.extend_from_slice(share.hash.as_byte_array());
    }
    Some(EncodedPack {
        first_id: first.id,
        last_id: last.id,
        min_time_ms: base_time,
        max_time_ms: max_time,
        count: shares.len() as u64,
        bytes,
    })
}

/// Unpacks the shares of the pack whose first share is `first_id` and earliest time
/// `min_time_ms` (what its row records), in id order.
pub fn decode(
    first_id: u64,
    min_time_ms: u64,
    bytes: &[u8],
) -> Result<Vec<PackedShare>, LedgerError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.take(1)?[0];
    if version != VERSION {
        return Err(corrupt(format!(
            "share pack version {version}, not {VERSION}"
        )));
    }
    let count = reader.varint()?;
    let base_time = min_time_ms;
    let target_count = reader.varint()?;
    // Every share takes at least 45 bytes and every target 32: counts the bytes cannot hold
    // are refused before anything is allocated for them.
    if count > (bytes.len() / 45) as u64 || target_count > (bytes.len() / 32) as u64 {
        return Err(corrupt(format!(
            "share pack of {} bytes claims {count} shares and {target_count} targets",
            bytes.len()
        )));
    }
    let mut targets = Vec::with_capacity(target_count as usize);
    for _ in 0..target_count {
        targets.push(Target::from_le_bytes(reader.array32()?));
    }
    let mut shares = Vec::with_capacity(count as usize);
    let mut id = first_id;
    for n in 0..count {
        let delta = reader.varint()?;
        if (n == 0) != (delta == 0) {
            return Err(corrupt(format!("share pack id step {delta} at share {n}")));
        }
        id = id
            .checked_add(delta)
            .ok_or_else(|| corrupt("share pack id past u64".into()))?;
        let time_ms = base_time
            .checked_add(reader.varint()?)
            .ok_or_else(|| corrupt("share pack time past u64".into()))?;
        let worker_id = reader.varint()?;
        let connection_id = reader.varint()?;
        let channel_id = reader.u32()?;
        let job_id = reader.u32()?;
        let index = reader.varint()?;
        let target = *targets
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .ok_or_else(|| corrupt(format!("share pack target {index} of {target_count}")))?;
        let difficulty = f64::from_le_bytes(
            reader
                .take(8)?
                .try_into()
                .map_err(|_| corrupt("share pack difficulty".into()))?,
        );
        let hash = BlockHash::from_byte_array(reader.array32()?);
        shares.push(PackedShare {
            id,
            time_ms,
            worker_id,
            connection_id,
            channel_id,
            job_id,
            target,
            difficulty,
            hash,
        });
    }
    if reader.at != bytes.len() {
        return Err(corrupt(format!(
            "share pack has {} bytes after its {count} shares",
            bytes.len() - reader.at
        )));
    }
    Ok(shares)
}

fn put(bytes: &mut Vec<u8>, value: u64) {
    // Writing into a Vec cannot fail.
    let _ = VarInt(value).consensus_encode(bytes);
}

fn corrupt(why: String) -> LedgerError {
    LedgerError::Corrupt(why)
}

/// A cursor over a pack's bytes whose every read is checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LedgerError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| corrupt(format!("share pack cut short at byte {}", self.at)))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array32(&mut self) -> Result<[u8; 32], LedgerError> {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.take(32)?);
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, LedgerError> {
        let mut rest = &self.bytes[self.at..];
        let before = rest.len();
        let VarInt(value) = VarInt::consensus_decode(&mut rest)
            .map_err(|e| corrupt(format!("share pack at byte {}: {e}", self.at)))?;
        self.at += before - rest.len();
        Ok(value)
    }

    fn u32(&mut self) -> Result<u32, LedgerError> {
        let value = self.varint()?;
        u32::try_from(value).map_err(|_| corrupt(format!("share pack value {value} past u32")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::sha256d;
    use proptest::prelude::*;

    fn share(id: u64, time_ms: u64, n: u8) -> PackedShare {
        let mut target = [0u8; 32];
        target[27] = n % 3;
        target[26] = 0xff;
        PackedShare {
            id,
            time_ms,
            worker_id: u64::from(n % 5) + 1,
            connection_id: u64::MAX - u64::from(n),
            channel_id: u32::from(n) + 1,
            job_id: u32::from(n) * 1000,
            target: Target::from_le_bytes(target),
            difficulty: 1.0 / (f64::from(n) + 3.0),
            hash: BlockHash::from_raw_hash(sha256d::Hash::hash(&[n])),
        }
    }

    #[test]
    fn a_pack_gives_back_every_field_and_records_its_bounds() {
        let shares = vec![share(7, 1_000, 1), share(8, 999, 2), share(12, 1_005, 4)];
        let pack = encode(&shares).unwrap();
        assert_eq!(
            (
                pack.first_id,
                pack.last_id,
                pack.min_time_ms,
                pack.max_time_ms,
                pack.count
            ),
            (7, 12, 999, 1_005, 3)
        );
        assert_eq!(decode(7, 999, &pack.bytes).unwrap(), shares);
        // Three shares on two distinct targets: each target is stored once.
        assert!(
            pack.bytes.len() < 3 * 60 + 2 * 32,
            "{} bytes",
            pack.bytes.len()
        );
        assert!(encode(&[]).is_none());
    }

    #[test]
    fn a_damaged_pack_is_corrupt_not_a_panic() {
        let pack = encode(&[share(1, 5, 1), share(2, 6, 2)]).unwrap();
        for cut in 0..pack.bytes.len() {
            assert!(matches!(
                decode(1, 5, &pack.bytes[..cut]),
                Err(LedgerError::Corrupt(_))
            ));
        }
        let mut trailing = pack.bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode(1, 5, &trailing),
            Err(LedgerError::Corrupt(_))
        ));
        let mut version = pack.bytes.clone();
        version[0] = 2;
        assert!(matches!(
            decode(1, 5, &version),
            Err(LedgerError::Corrupt(_))
        ));
    }

    proptest! {
        #[test]
        fn packs_round_trip(
            first in 1u64..u64::MAX / 4,
            steps in proptest::collection::vec((1u64..1_000, 0u64..100_000, any::<u8>()), 1..200),
            difficulty in any::<f64>(),
        ) {
            let mut id = first;
            let mut shares = Vec::new();
            for (n, (step, time, byte)) in steps.into_iter().enumerate() {
                if n > 0 {
                    id += step;
                }
                let mut s = share(id, 1_764_800_000_000 + time, byte);
                if n == 0 {
                    s.difficulty = difficulty;
                }
                shares.push(s);
            }
            let pack = encode(&shares).unwrap();
            let back = decode(first, pack.min_time_ms, &pack.bytes).unwrap();
            // Bit for bit (NaN included).
            prop_assert_eq!(back.len(), shares.len());
            for (a, b) in back.iter().zip(&shares) {
                prop_assert_eq!(a.difficulty.to_bits(), b.difficulty.to_bits());
                prop_assert_eq!((a.id, a.time_ms, a.worker_id, a.connection_id), (b.id, b.time_ms, b.worker_id, b.connection_id));
                prop_assert_eq!((a.channel_id, a.job_id, a.target, a.hash), (b.channel_id, b.job_id, b.target, b.hash));
            }
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..400), first in any::<u64>()) {
            let _ = decode(first, 0, &bytes);
        }
    }
}
