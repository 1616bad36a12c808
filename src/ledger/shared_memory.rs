//! A ledger in memory that two parties can hold: the pool's ledger writer and the HTTP API's
//! reader. A [`MemoryLedger`] is a value owned by one thread, so a pool with `ledger_url =
//! "memory:"` used to have nothing for the API to read (its ledger routes answered 503); the
//! files and PostgreSQL have a second connection for that, memory has this shared handle.
//!
//! Each call takes the lock for its own duration, as each call on a database is one
//! transaction: a read sees whole commits only. A long read (an export of a large range)
//! holds the writer's next commit back meanwhile; the in-memory ledger is for tests and
//! benchmarks, where that is acceptable, and a real pool's ledger is a file or a database.

use std::sync::{Arc, Mutex, MutexGuard};

use bitcoin::BlockHash;

use super::{
    Balance, BlockStatus, ClaimOutcome, InstanceClaim, InstanceRecord, Ledger, LedgerBatch,
    LedgerError, MemoryLedger, PayoutComputation, RejectedCount, ShareRange, StoredBlock,
    StoredShare,
};

/// A [`MemoryLedger`] behind a shared lock: every clone is the same ledger.
#[derive(Debug, Clone, Default)]
pub struct SharedMemoryLedger(Arc<Mutex<MemoryLedger>>);

impl SharedMemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        SharedMemoryLedger(Arc::new(Mutex::new(MemoryLedger::new())))
    }

    fn lock(&self) -> MutexGuard<'_, MemoryLedger> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Ledger for SharedMemoryLedger {
    fn append(&mut self, batch: &LedgerBatch) -> Result<(), LedgerError> {
        self.lock().append(batch)
    }

    fn set_block_status(
        &mut self,
        hash: BlockHash,
        status: &BlockStatus,
    ) -> Result<bool, LedgerError> {
        self.lock().set_block_status(hash, status)
    }

    fn block(&mut self, hash: BlockHash) -> Result<Option<StoredBlock>, LedgerError> {
        self.lock().block(hash)
    }

    fn blocks(&mut self, limit: usize) -> Result<Vec<StoredBlock>, LedgerError> {
        self.lock().blocks(limit)
    }

    fn share_by_hash(&mut self, hash: BlockHash) -> Result<Option<StoredShare>, LedgerError> {
        self.lock().share_by_hash(hash)
    }

    fn shares(&mut self, range: &ShareRange) -> Result<Vec<StoredShare>, LedgerError> {
        self.lock().shares(range)
    }

    fn last_share_id(&mut self) -> Result<u64, LedgerError> {
        self.lock().last_share_id()
    }

    fn record_payouts(&mut self, computation: &PayoutComputation) -> Result<bool, LedgerError> {
        self.lock().record_payouts(computation)
    }

    fn payouts(&mut self, block_hash: BlockHash) -> Result<Option<PayoutComputation>, LedgerError> {
        self.lock().payouts(block_hash)
    }

    fn balances(&mut self) -> Result<Vec<Balance>, LedgerError> {
        self.lock().balances()
    }

    fn blocks_to_confirm(
        &mut self,
        min_orphan_height: u32,
    ) -> Result<Vec<StoredBlock>, LedgerError> {
        self.lock().blocks_to_confirm(min_orphan_height)
    }

    fn rejected(&mut self) -> Result<Vec<RejectedCount>, LedgerError> {
        self.lock().rejected()
    }

    fn prune(&mut self, before_ms: u64, keep_from_id: u64) -> Result<u64, LedgerError> {
        self.lock().prune(before_ms, keep_from_id)
    }

    fn claim_server_id(
        &mut self,
        claim: &InstanceClaim,
        now_ms: u64,
    ) -> Result<ClaimOutcome, LedgerError> {
        self.lock().claim_server_id(claim, now_ms)
    }

    fn heartbeat(
        &mut self,
        server_id: u16,
        instance: u64,
        now_ms: u64,
    ) -> Result<bool, LedgerError> {
        self.lock().heartbeat(server_id, instance, now_ms)
    }

    fn release_server_id(&mut self, server_id: u16, instance: u64) -> Result<(), LedgerError> {
        self.lock().release_server_id(server_id, instance)
    }

    fn instances(&mut self) -> Result<Vec<InstanceRecord>, LedgerError> {
        self.lock().instances()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_clone_writes_the_other_reads() {
        let mut writer = SharedMemoryLedger::new();
        let mut reader = writer.clone();
        assert!(reader.rejected().unwrap().is_empty());
        let batch = LedgerBatch {
            sequence: None,
            shares: Vec::new(),
            blocks: Vec::new(),
            rejected: vec![RejectedCount {
                user: "alice".into(),
                worker: "rig".into(),
                reason: "stale-share".into(),
                count: 3,
            }],
        };
        writer.append(&batch).unwrap();
        let seen = reader.rejected().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].count, 3);
        assert_eq!(reader.last_share_id().unwrap(), 0);
    }
}
