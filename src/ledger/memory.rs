//! A ledger in memory: the reference semantics of [`Ledger`] that every real backend is
//! tested against (same calls, same answers), and a ledger for tests of the layers above.
//! Nothing survives the process.

use std::collections::BTreeMap;

use bitcoin::BlockHash;

use super::instances::{self, ClaimOutcome, InstanceClaim, InstanceRecord};
use super::{
    Balance, BlockStatus, Ledger, LedgerBatch, LedgerError, PayoutComputation, RejectedCount,
    ShareRange, StoredBlock, StoredShare,
};

/// A [`Ledger`] in memory. `fail_writes` makes every write fail as `Unavailable` (a database
/// that went down), to test the layers above.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    shares: Vec<StoredShare>,
    next_id: u64,
    blocks: Vec<StoredBlock>,
    payouts: BTreeMap<BlockHash, PayoutComputation>,
    rejected: BTreeMap<(String, String, String), u64>,
    /// Per writer, the highest batch number committed.
    batches: BTreeMap<u64, u64>,
    /// The instances' registry, by server_id.
    instances: BTreeMap<u16, InstanceRecord>,
    /// When set, every write fails as [`LedgerError::Unavailable`].
    pub fail_writes: bool,
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        MemoryLedger {
            next_id: 1,
            ..Self::default()
        }
    }

    fn check_writable(&self) -> Result<(), LedgerError> {
        if self.fail_writes {
            Err(LedgerError::Unavailable("writes disabled (test)".into()))
        } else {
            Ok(())
        }
    }
}

impl Ledger for MemoryLedger {
    fn append(&mut self, batch: &LedgerBatch) -> Result<(), LedgerError> {
        self.check_writable()?;
        if let Some(sequence) = batch.sequence {
            let last = self.batches.entry(sequence.writer).or_default();
            if sequence.number <= *last {
                return Ok(());
            }
            *last = sequence.number;
        }
        self.next_id = self.next_id.max(1);
        for record in &batch.shares {
            self.shares.push(StoredShare {
                id: self.next_id,
                record: record.clone(),
            });
            self.next_id += 1;
        }
        for block in &batch.blocks {
            if !self.blocks.iter().any(|b| b.block.hash == block.hash) {
                self.blocks.push(StoredBlock {
                    block: block.clone(),
                    status: BlockStatus::Pending,
                });
            }
        }
        for r in &batch.rejected {
            *self
                .rejected
                .entry((r.user.clone(), r.worker.clone(), r.reason.clone()))
                .or_default() += r.count;
        }
        Ok(())
    }

    fn set_block_status(
        &mut self,
        hash: BlockHash,
        status: &BlockStatus,
    ) -> Result<bool, LedgerError> {
        self.check_writable()?;
        match self.blocks.iter_mut().find(|b| b.block.hash == hash) {
            Some(b) if b.status != *status => {
                b.status = status.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn block(&mut self, hash: BlockHash) -> Result<Option<StoredBlock>, LedgerError> {
        Ok(self.blocks.iter().find(|b| b.block.hash == hash).cloned())
    }

    fn blocks(&mut self, limit: usize) -> Result<Vec<StoredBlock>, LedgerError> {
        Ok(self.blocks.iter().rev().take(limit).cloned().collect())
    }

    fn share_by_hash(&mut self, hash: BlockHash) -> Result<Option<StoredShare>, LedgerError> {
        Ok(self.shares.iter().find(|s| s.record.hash == hash).cloned())
    }

    fn shares(&mut self, range: &ShareRange) -> Result<Vec<StoredShare>, LedgerError> {
        Ok(match *range {
            ShareRange::Window {
                last_id,
                difficulty,
            } => {
                let mut out = Vec::new();
                let mut sum = 0.0;
                for s in self.shares.iter().rev().filter(|s| s.id <= last_id) {
                    if sum >= difficulty {
                        break;
                    }
                    sum += s.record.difficulty;
                    out.push(s.clone());
                }
                out
            }
            ShareRange::Time {
                from_ms,
                to_ms,
                limit,
            } => self
                .shares
                .iter()
                .filter(|s| s.record.time_ms >= from_ms && s.record.time_ms < to_ms)
                .take(limit)
                .cloned()
                .collect(),
            ShareRange::Ids {
                from_id,
                to_id,
                limit,
            } => self
                .shares
                .iter()
                .filter(|s| s.id >= from_id && s.id <= to_id)
                .take(limit)
                .cloned()
                .collect(),
        })
    }

    fn last_share_id(&mut self) -> Result<u64, LedgerError> {
        Ok(self.shares.last().map_or(0, |s| s.id))
    }

    fn record_payouts(&mut self, computation: &PayoutComputation) -> Result<bool, LedgerError> {
        self.check_writable()?;
        if self.payouts.contains_key(&computation.block_hash) {
            return Ok(false);
        }
        self.payouts
            .insert(computation.block_hash, computation.clone());
        Ok(true)
    }

    fn payouts(&mut self, block_hash: BlockHash) -> Result<Option<PayoutComputation>, LedgerError> {
        Ok(self.payouts.get(&block_hash).cloned())
    }

    fn balances(&mut self) -> Result<Vec<Balance>, LedgerError> {
        let mut by_user: BTreeMap<String, Balance> = BTreeMap::new();
        for b in &self.blocks {
            let Some(c) = self.payouts.get(&b.block.hash) else {
                continue;
            };
            if !super::moves_balances(&c.scheme) {
                continue;
            }
            for p in &c.payouts {
                let balance = by_user.entry(p.user.clone()).or_insert_with(|| Balance {
                    user: p.user.clone(),
                    earned_sat: 0,
                    immature_sat: 0,
                });
                match b.status {
                    BlockStatus::Mature => balance.earned_sat += p.amount_sat,
                    BlockStatus::Accepted => {
                        balance.earned_sat += p.amount_sat;
                        balance.immature_sat += p.amount_sat;
                    }
                    _ => {}
                }
            }
        }
        Ok(by_user.into_values().collect())
    }

    fn blocks_to_confirm(
        &mut self,
        min_orphan_height: u32,
    ) -> Result<Vec<StoredBlock>, LedgerError> {
        Ok(self
            .blocks
            .iter()
            .filter(|b| match b.status {
                BlockStatus::Accepted => true,
                BlockStatus::Orphaned => b.block.height >= min_orphan_height,
                _ => false,
            })
            .cloned()
            .collect())
    }

    fn rejected(&mut self) -> Result<Vec<RejectedCount>, LedgerError> {
        Ok(self
            .rejected
            .iter()
            .map(|((user, worker, reason), &count)| RejectedCount {
                user: user.clone(),
                worker: worker.clone(),
                reason: reason.clone(),
                count,
            })
            .collect())
    }

    fn prune(&mut self, before_ms: u64, keep_from_id: u64) -> Result<u64, LedgerError> {
        self.check_writable()?;
        let before = self.shares.len();
        self.shares
            .retain(|s| s.record.time_ms >= before_ms || s.id >= keep_from_id);
        Ok((before - self.shares.len()) as u64)
    }

    fn claim_server_id(
        &mut self,
        claim: &InstanceClaim,
        now_ms: u64,
    ) -> Result<ClaimOutcome, LedgerError> {
        self.check_writable()?;
        let holder = self.instances.get(&claim.server_id).cloned();
        let started_ms = match &holder {
            Some(h) if h.instance == claim.instance => h.started_ms,
            _ => now_ms,
        };
        let (outcome, write) = instances::decide(holder, claim, now_ms);
        if write {
            self.instances.insert(
                claim.server_id,
                InstanceRecord {
                    server_id: claim.server_id,
                    instance: claim.instance,
                    host: claim.host.clone(),
                    data_dir: claim.data_dir.clone(),
                    addresses: claim.addresses.clone(),
                    started_ms,
                    heartbeat_ms: now_ms,
                    lease_ms: Some(claim.lease_ms),
                },
            );
        }
        Ok(outcome)
    }

    fn heartbeat(
        &mut self,
        server_id: u16,
        instance: u64,
        now_ms: u64,
    ) -> Result<bool, LedgerError> {
        self.check_writable()?;
        Ok(match self.instances.get_mut(&server_id) {
            Some(row) if row.instance == instance => {
                row.heartbeat_ms = now_ms;
                true
            }
            _ => false,
        })
    }

    fn release_server_id(&mut self, server_id: u16, instance: u64) -> Result<(), LedgerError> {
        self.check_writable()?;
        if self
            .instances
            .get(&server_id)
            .is_some_and(|row| row.instance == instance)
        {
            self.instances.remove(&server_id);
        }
        Ok(())
    }

    fn instances(&mut self) -> Result<Vec<InstanceRecord>, LedgerError> {
        Ok(self.instances.values().cloned().collect())
    }
}
