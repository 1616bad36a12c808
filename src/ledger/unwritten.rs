//! Found blocks the ledger could not take before the pool stopped, kept in a file for the next
//! start. A block may be found and accepted by the node while the ledger cannot write (its
//! database down, its disk full); if the pool is stopped before it can, the writer gives up
//! the shares it holds (none of them was acknowledged) but a block is not a share: its record,
//! its finding share (where its PPLNS window ends) and the node's verdict are what it is paid
//! from. They are written here at the stop and put back in the writer's first commit at the
//! next start, so the block is recorded and settled as if the ledger had never failed.
//!
//! Every batch that failed is kept whole, under the number the stopped writer gave it
//! ([`BatchSequence`]), and goes back in order: if one did land after all (a database that
//! committed and lost its reply), the ledger recognises its number and writes nothing twice;
//! a block's finding share may be in an earlier batch than the block. The shares in them
//! were never acknowledged; they are credited when written.
//!
//! One JSON object: `{"batches": [{"sequence": {writer, number}, "blocks": [...], "shares":
//! [...]}], "verdicts": [...]}`, numbers that read back to the same f64, written to a
//! temporary name, flushed and renamed.

use std::path::Path;

use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::{BlockHash, CompactTarget, Target};
use serde_json::{Value, json};

use super::columns::{
    StoredJson, block_status, coinbase_payouts_from_json, coinbase_payouts_json,
    payout_terms_from_json, payout_terms_json, status_reason,
};
use super::{BatchSequence, BlockStatus, FoundBlockRecord, LedgerError, ShareRecord};

/// What a stopping writer could not commit, for the next start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unwritten {
    /// The batches that failed, in their order, each whole under its own number: a block's
    /// finding share may be in an earlier batch than the block, and each number tells the
    /// ledger whether that batch landed after all.
    pub batches: Vec<KeptBatch>,
    /// The node's answers about blocks, not recorded (written after the batches).
    pub verdicts: Vec<(BlockHash, BlockStatus)>,
}

/// One batch a stopping writer could not commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeptBatch {
    /// Its number in its writer's sequence.
    pub sequence: Option<BatchSequence>,
    /// Its found blocks.
    pub blocks: Vec<FoundBlockRecord>,
    /// Its shares (none acknowledged: they are credited when the batch is written).
    pub shares: Vec<ShareRecord>,
}

impl Unwritten {
    /// Whether there is nothing to keep.
    pub fn is_empty(&self) -> bool {
        self.batches
            .iter()
            .all(|b| b.blocks.is_empty() && b.shares.is_empty())
            && self.verdicts.is_empty()
    }

    /// Writes `self` to `path` for good (a temporary name, flushed, renamed, the directory
    /// flushed).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = self.to_json().to_string();
        let partial = path.with_extension("partial");
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&partial)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&partial, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// What `path` holds (`Ok(None)`: no such file).
    pub fn load(path: &Path) -> Result<Option<Unwritten>, LedgerError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(LedgerError::Corrupt(format!("{}: {e}", path.display())));
            }
        };
        Self::from_json(&text).map(Some)
    }

    fn to_json(&self) -> Value {
        json!({
            "batches": self.batches.iter().map(|b| json!({
                "sequence": b.sequence.map(|s| json!({"writer": s.writer, "number": s.number})),
                "blocks": b.blocks.iter().map(block_json).collect::<Vec<_>>(),
                "shares": b.shares.iter().map(share_json).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "verdicts": self.verdicts.iter().map(|(hash, status)| json!({
                "hash": hash.to_string(),
                "status": status.name(),
                "reason": status_reason(status),
            })).collect::<Vec<_>>(),
        })
    }

    fn from_json(text: &str) -> Result<Unwritten, LedgerError> {
        let v = READ.parse(text)?;
        let batch = |b: &Value| -> Result<KeptBatch, LedgerError> {
            let sequence = match b.get("sequence") {
                None | Some(Value::Null) => None,
                Some(s) => Some(BatchSequence {
                    writer: READ.u64(s, "writer")?,
                    number: READ.u64(s, "number")?,
                }),
            };
            Ok(KeptBatch {
                sequence,
                blocks: READ
                    .array(b, "blocks")?
                    .iter()
                    .map(block_from_json)
                    .collect::<Result<_, _>>()?,
                shares: READ
                    .array(b, "shares")?
                    .iter()
                    .map(share_from_json)
                    .collect::<Result<_, _>>()?,
            })
        };
        Ok(Unwritten {
            batches: READ
                .array(&v, "batches")?
                .iter()
                .map(batch)
                .collect::<Result<_, _>>()?,
            verdicts: READ
                .array(&v, "verdicts")?
                .iter()
                .map(|v| {
                    let status = block_status(
                        READ.str(v, "status")?,
                        v.get("reason").and_then(Value::as_str).map(str::to_owned),
                    )?;
                    Ok((hash_of(v, "hash")?, status))
                })
                .collect::<Result<_, LedgerError>>()?,
        })
    }
}

/// How the file's fields are read.
const READ: StoredJson = StoredJson("unwritten blocks file");

fn hash_of(v: &Value, key: &str) -> Result<BlockHash, LedgerError> {
    READ.str(v, key)?
        .parse()
        .map_err(|_| READ.corrupt(&format!("`{key}` is not a block hash")))
}

fn block_json(b: &FoundBlockRecord) -> Value {
    json!({
        "hash": b.hash.to_string(),
        "height": b.height,
        "time_ms": b.time_ms,
        "reward_sat": b.reward_sat,
        "bits": b.bits.to_consensus(),
        "user": b.user,
        "worker": b.worker,
        "coinbase_payouts": b.coinbase_payouts.as_ref().map(coinbase_payouts_json),
        "payout_terms": b.payout_terms.as_ref().map(payout_terms_json),
    })
}

fn block_from_json(v: &Value) -> Result<FoundBlockRecord, LedgerError> {
    let text = |key: &str| v.get(key).and_then(Value::as_str);
    Ok(FoundBlockRecord {
        hash: hash_of(v, "hash")?,
        height: READ.u32(v, "height")?,
        time_ms: READ.u64(v, "time_ms")?,
        reward_sat: READ.u64(v, "reward_sat")?,
        bits: CompactTarget::from_consensus(READ.u32(v, "bits")?),
        user: READ.str(v, "user")?.to_owned(),
        worker: READ.str(v, "worker")?.to_owned(),
        coinbase_payouts: text("coinbase_payouts")
            .map(coinbase_payouts_from_json)
            .transpose()?,
        payout_terms: text("payout_terms")
            .map(payout_terms_from_json)
            .transpose()?,
    })
}

fn share_json(s: &ShareRecord) -> Value {
    json!({
        "time_ms": s.time_ms,
        "user": &*s.user,
        "worker": &*s.worker,
        "connection_id": s.connection_id,
        "channel_id": s.channel_id,
        "job_id": s.job_id,
        "target": s.target.to_le_bytes().to_lower_hex_string(),
        "difficulty": s.difficulty,
        "hash": s.hash.to_string(),
    })
}

fn share_from_json(v: &Value) -> Result<ShareRecord, LedgerError> {
    let target = <[u8; 32]>::from_hex(READ.str(v, "target")?)
        .map_err(|_| READ.corrupt("`target` is not 32 bytes of hex"))?;
    Ok(ShareRecord {
        time_ms: READ.u64(v, "time_ms")?,
        user: READ.str(v, "user")?.into(),
        worker: READ.str(v, "worker")?.into(),
        connection_id: READ.u64(v, "connection_id")?,
        channel_id: READ.u32(v, "channel_id")?,
        job_id: READ.u32(v, "job_id")?,
        target: Target::from_le_bytes(target),
        difficulty: READ.f64(v, "difficulty")?,
        hash: hash_of(v, "hash")?,
    })
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;

    use super::*;
    use crate::ledger::{CoinbasePayouts, Payout, PayoutScheme, PayoutTerms};

    #[test]
    fn what_is_kept_reads_back_exactly() {
        let hash = BlockHash::from_byte_array([7; 32]);
        let u = Unwritten {
            batches: vec![
                KeptBatch {
                    sequence: Some(BatchSequence {
                        writer: u64::MAX - 1,
                        number: 12,
                    }),
                    blocks: vec![FoundBlockRecord {
                        hash,
                        height: 800_000,
                        time_ms: 1_700_000_000_123,
                        reward_sat: 312_500_000 + 12_345,
                        bits: CompactTarget::from_consensus(0x1703_1abe),
                        user: "bc1q\"alice\"".into(),
                        worker: "rig\u{e9}".into(),
                        coinbase_payouts: Some(CoinbasePayouts {
                            window_difficulty: 1.5e14 + 0.1,
                            counted_difficulty: 0.1 + 0.2,
                            first_share_id: 3,
                            last_share_id: 9,
                            fee_ppm: 10_000,
                            dust_sat: 10_000,
                            max_outputs: 16,
                            payouts: vec![Payout {
                                user: "bc1qalice".into(),
                                amount_sat: 1,
                                difficulty: 1.0 / 3.0,
                            }],
                            pool_sat: 2,
                        }),
                        payout_terms: Some(PayoutTerms {
                            scheme: PayoutScheme::Pplns,
                            window_multiple: 2.0,
                            fee_percent: 1.0 / 3.0,
                            solo_users: vec!["bob".into()],
                        }),
                    }],
                    shares: vec![ShareRecord {
                        time_ms: 1_700_000_000_100,
                        user: "bc1q\"alice\"".into(),
                        worker: "rig\u{e9}".into(),
                        connection_id: 42,
                        channel_id: 3,
                        job_id: u32::MAX,
                        target: Target::from_le_bytes([0x5a; 32]),
                        difficulty: 1.0 / 7.0,
                        hash,
                    }],
                },
                KeptBatch::default(),
            ],
            verdicts: vec![
                (hash, BlockStatus::Accepted),
                (
                    BlockHash::from_byte_array([8; 32]),
                    BlockStatus::Rejected("bad-txns \"x\"".into()),
                ),
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger-unwritten.json");
        assert_eq!(Unwritten::load(&path).unwrap(), None);
        u.save(&path).unwrap();
        assert_eq!(Unwritten::load(&path).unwrap(), Some(u));
        std::fs::write(&path, "{\"blocks\": 1}").unwrap();
        assert!(matches!(
            Unwritten::load(&path),
            Err(LedgerError::Corrupt(_))
        ));
    }
}
