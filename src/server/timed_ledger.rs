//! A ledger that times its commits: wraps the pool's ledger on its writer thread and adds the
//! duration of each [`Ledger::append`] (one group commit) to a histogram the metrics read.
//! A decorator, so the writer (its batching, retries and acknowledgements) is not touched.

use std::sync::Arc;
use std::time::Instant;

use bitcoin::BlockHash;

use crate::ledger::{
    Balance, BlockStatus, Ledger, LedgerBatch, LedgerError, PayoutComputation, RejectedCount,
    ShareRange, StoredBlock, StoredShare,
};
use crate::shell::AtomicHistogram;

/// `inner`, with the duration of every append that writes something observed in `commits`.
pub(crate) struct TimedLedger {
    inner: Box<dyn Ledger>,
    commits: Arc<AtomicHistogram>,
}

impl TimedLedger {
    pub(crate) fn new(inner: Box<dyn Ledger>, commits: Arc<AtomicHistogram>) -> Self {
        TimedLedger { inner, commits }
    }
}

impl Ledger for TimedLedger {
    fn append(&mut self, batch: &LedgerBatch) -> Result<(), LedgerError> {
        let started = Instant::now();
        let result = self.inner.append(batch);
        if result.is_ok() && !batch.is_empty() {
            self.commits.observe(started.elapsed());
        }
        result
    }

    fn set_block_status(
        &mut self,
        hash: BlockHash,
        status: &BlockStatus,
    ) -> Result<bool, LedgerError> {
        self.inner.set_block_status(hash, status)
    }

    fn block(&mut self, hash: BlockHash) -> Result<Option<StoredBlock>, LedgerError> {
        self.inner.block(hash)
    }

    fn blocks(&mut self, limit: usize) -> Result<Vec<StoredBlock>, LedgerError> {
        self.inner.blocks(limit)
    }

    fn share_by_hash(&mut self, hash: BlockHash) -> Result<Option<StoredShare>, LedgerError> {
        self.inner.share_by_hash(hash)
    }

    fn shares(&mut self, range: &ShareRange) -> Result<Vec<StoredShare>, LedgerError> {
        self.inner.shares(range)
    }

    fn last_share_id(&mut self) -> Result<u64, LedgerError> {
        self.inner.last_share_id()
    }

    fn record_payouts(&mut self, computation: &PayoutComputation) -> Result<bool, LedgerError> {
        self.inner.record_payouts(computation)
    }

    fn payouts(&mut self, block_hash: BlockHash) -> Result<Option<PayoutComputation>, LedgerError> {
        self.inner.payouts(block_hash)
    }

    fn balances(&mut self) -> Result<Vec<Balance>, LedgerError> {
        self.inner.balances()
    }

    fn blocks_to_confirm(
        &mut self,
        min_orphan_height: u32,
    ) -> Result<Vec<StoredBlock>, LedgerError> {
        self.inner.blocks_to_confirm(min_orphan_height)
    }

    fn rejected(&mut self) -> Result<Vec<RejectedCount>, LedgerError> {
        self.inner.rejected()
    }

    fn prune(&mut self, before_ms: u64, keep_from_id: u64) -> Result<u64, LedgerError> {
        self.inner.prune(before_ms, keep_from_id)
    }

    fn claim_server_id(
        &mut self,
        claim: &crate::ledger::InstanceClaim,
        now_ms: u64,
    ) -> Result<crate::ledger::ClaimOutcome, LedgerError> {
        self.inner.claim_server_id(claim, now_ms)
    }

    fn heartbeat(
        &mut self,
        server_id: u16,
        instance: u64,
        now_ms: u64,
    ) -> Result<bool, LedgerError> {
        self.inner.heartbeat(server_id, instance, now_ms)
    }

    fn release_server_id(&mut self, server_id: u16, instance: u64) -> Result<(), LedgerError> {
        self.inner.release_server_id(server_id, instance)
    }

    fn instances(&mut self) -> Result<Vec<crate::ledger::InstanceRecord>, LedgerError> {
        self.inner.instances()
    }
}
