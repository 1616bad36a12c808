//! The pool object, sans-IO (the product API's `StratumV2Pool`, the analogue of quinn's
//! `Endpoint`): every decision the pool makes above one connection, so that each is tested
//! without tokio. Which template becomes work ([`work_selection`]), the extranonce prefix
//! space shared by every session, found blocks and their submission schedule
//! ([`found_blocks`], persisted through [`block_store`]), when the server certificate is
//! renewed ([`certificate`]), the statistics ([`stats`]), and the miners it drives itself by
//! endpoint, with no connection ([`endpoints`]). The shell owns sockets, timers,
//! the node and the files; it hands in templates, session events, node answers and the time
//! (milliseconds since the Unix epoch), and acts on what comes back.

pub mod block_store;
pub mod certificate;
pub mod endpoints;
pub mod found_blocks;
pub mod hashrate;
pub mod stats;
pub mod work_selection;
pub mod workers;

use std::sync::Arc;

use bitcoin::BlockHash;

pub use block_store::{BlockStore, BlockStoreError, BlockVerdict, MemoryBlockStore, StoredBlock};
pub use certificate::{CertificateRenewal, ValidityWindow};
pub use endpoints::{
    DEFAULT_MAX_ENDPOINT_MINERS, ENDPOINT_ID_BASE, EndpointChannel, EndpointError, EndpointJob,
    EndpointMiner, EndpointMiners, FoundBlockSink,
};
pub use found_blocks::{BlockRecord, FoundBlocks, NodeAnswer, Submission, SubmissionOutcome};
pub use stats::{
    AcceptedShares, MinerConnection, MinerStats, OpenChannel, PoolStatistics, PoolStats,
};
pub use work_selection::{SelectedWork, WindowPayer, WorkChange, WorkSelection};
pub use workers::{WorkerSeries, WorkerStats, WorkerTable};

use crate::block::BlockTemplate;
use crate::mining::{CoinbaseConfig, ExtranonceAllocator, MiningError, SessionEvent, Work};
use crate::payout::{PayoutPolicy, PayoutWindow};

/// Validity of the server certificate unless configured otherwise: a year.
pub const DEFAULT_CERT_VALIDITY_SECS: u32 = 365 * 24 * 3600;

/// The pool: its work, its extranonce space, its found blocks, its certificate rule and its
/// statistics.
#[derive(Debug)]
pub struct StratumV2Pool {
    work: WorkSelection,
    allocator: Arc<ExtranonceAllocator>,
    found: FoundBlocks,
    certificate: CertificateRenewal,
    stats: PoolStatistics,
    /// Miners driven by endpoint (the product API and the server's `handle_message`).
    endpoints: EndpointMiners,
    /// Payouts in the coinbase (`coinbase_payouts = true`): the policy whose
    /// `coinbase_payouts` terms are set, and the current window, once read.
    coinbase_payouts: Option<Arc<PayoutPolicy>>,
    payout_window: Option<Arc<PayoutWindow>>,
}

impl Default for StratumV2Pool {
    fn default() -> Self {
        StratumV2Pool {
            work: WorkSelection::new(),
            allocator: Arc::new(ExtranonceAllocator::new()),
            found: FoundBlocks::new(),
            certificate: CertificateRenewal::new(DEFAULT_CERT_VALIDITY_SECS),
            stats: PoolStatistics::new(),
            endpoints: EndpointMiners::default(),
            coinbase_payouts: None,
            payout_window: None,
        }
    }
}

impl StratumV2Pool {
    /// An empty pool: no work, no miner, certificates valid for a year.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same, with certificates valid for `validity_secs`.
    pub fn with_certificate_validity(validity_secs: u32) -> Self {
        StratumV2Pool {
            certificate: CertificateRenewal::new(validity_secs),
            ..Self::default()
        }
    }

    /// This pool with its extranonce prefixes counted from the clock at its start, `unix_us`
    /// (microseconds since the Unix epoch), so that a restarted pool never hands out a prefix
    /// of its previous run ([`ExtranonceAllocator::seeded_from_clock`] says why and how far
    /// that holds). [`StratumV2Pool::new`] counts from 0: fine for one run, not for a pool
    /// that restarts on the same template. Called on a new pool, before any miner: sessions
    /// made earlier keep the allocator they were given.
    pub fn with_extranonce_seed(mut self, unix_us: u64) -> Self {
        self.allocator = Arc::new(ExtranonceAllocator::seeded_from_clock(unix_us));
        self
    }

    // ----- work -----

    /// Payouts in the coinbase: when `policy.coinbase_payouts` is set, the pool's work pays
    /// the window given to [`set_payout_window`](Self::set_payout_window) (by its fee,
    /// `[users]` addresses and limits); otherwise the pool's script.
    pub fn pay_window_in_coinbase(&mut self, policy: PayoutPolicy) {
        self.coinbase_payouts = policy.coinbase_payouts.is_some().then(|| Arc::new(policy));
    }

    /// The current PPLNS window (the ledger's writer reads it): the next work's coinbase pays
    /// it, when payouts are in the coinbase.
    pub fn set_payout_window(&mut self, window: Option<Arc<PayoutWindow>>) {
        self.payout_window = window;
    }

    /// Offers a template from the node: it becomes the work if it is on a new tip (or corrects
    /// the height on the same prev hash) or pays more (or, paying the window in the coinbase,
    /// the window moved on); `Ok(None)`: the current work stays.
    /// A new tip also ends the wait of found blocks too new for the node's clock that are not
    /// on it ([`FoundBlocks::new_tip`]).
    pub fn offer_template(
        &mut self,
        template: BlockTemplate,
        coinbase: &CoinbaseConfig,
    ) -> Result<Option<SelectedWork>, MiningError> {
        let payer = match (&self.coinbase_payouts, &self.payout_window) {
            (Some(policy), Some(window)) => {
                policy.coinbase_payouts.as_ref().map(|terms| WindowPayer {
                    window,
                    policy,
                    terms,
                })
            }
            _ => None,
        };
        let selected = self.work.offer_paying(template, coinbase, payer)?;
        if let Some(s) = &selected
            && s.change.is_new_tip()
        {
            self.found.new_tip(s.work.prev_hash);
        }
        Ok(selected)
    }

    /// The work miners get now.
    pub fn current_work(&self) -> Option<&Arc<Work>> {
        self.work.current()
    }

    /// The rule that picks work (for [`WorkSelection::judge`]).
    pub fn work_selection(&self) -> &WorkSelection {
        &self.work
    }

    // ----- extranonce prefixes -----

    /// The pool's extranonce prefix space, shared by every session so prefixes never repeat.
    pub fn extranonce_allocator(&self) -> &Arc<ExtranonceAllocator> {
        &self.allocator
    }

    // ----- found blocks -----

    /// Found blocks: the record and the submission schedule.
    pub fn found_blocks(&self) -> &FoundBlocks {
        &self.found
    }

    /// Found blocks, to queue, submit and answer (see [`FoundBlocks`]).
    pub fn found_blocks_mut(&mut self) -> &mut FoundBlocks {
        &mut self.found
    }

    /// What the node said about a submitted block (when the submission is not driven through
    /// [`FoundBlocks::handle_answer`], which records it itself).
    pub fn record_block_result(&mut self, hash: &str, accepted: bool) {
        self.found.record_verdict(hash, accepted);
    }

    /// Recently found blocks, oldest first.
    pub fn recent_blocks(&self) -> impl Iterator<Item = &BlockRecord> {
        self.found.recent()
    }

    // ----- certificate -----

    /// The renewal rule of the server certificate.
    pub fn certificate_renewal(&self) -> CertificateRenewal {
        self.certificate
    }

    // ----- statistics -----

    /// Keeps at most `max` miners in the registry (see [`PoolStatistics::set_max_miners`]).
    pub fn set_max_miners(&mut self, max: usize) {
        self.stats.set_max_miners(max);
    }

    /// Miners in the registry, connected or not yet forgotten.
    pub fn registered_miners(&self) -> usize {
        self.stats.len()
    }

    /// A miner `id` from `endpoint`: the server calls it when a connection completes
    /// SetupConnection, not at accept (the product API's `register_miner(endpoint)` is the
    /// facade's, in src/api.rs).
    pub fn connect_miner(&mut self, id: u64, endpoint: String, now_ms: u64) {
        self.stats.register_miner(id, endpoint, now_ms);
    }

    /// Applies what a session of connection `id` reported (a found block is recorded here;
    /// its submission is [`FoundBlocks::queue`]).
    pub fn record(&mut self, id: u64, event: &SessionEvent, now_ms: u64) {
        if let SessionEvent::BlockFound(found) = event {
            self.found
                .record_found(found.block.block_hash(), found.height, &found.user_identity);
        }
        self.stats.record(id, event, now_ms);
    }

    /// Applies `count` accepted shares at once (see [`PoolStatistics::record_accepted`]).
    pub fn record_accepted(&mut self, id: u64, count: u64, difficulty_sum: f64, last_ms: u64) {
        self.stats
            .record_accepted(id, count, difficulty_sum, last_ms);
    }

    /// Folds a connection's gathered accepted shares in and empties them.
    pub fn fold_accepted(&mut self, id: u64, shares: &mut AcceptedShares) {
        self.stats.fold_accepted(id, shares);
    }

    /// The connection closed; its statistics stay until
    /// [`forget_disconnected_miners`](Self::forget_disconnected_miners).
    pub fn disconnect(&mut self, id: u64, now_ms: u64) {
        self.stats.disconnect(id, now_ms);
    }

    /// Forgets disconnected miners with no activity for `timeout_ms`; their counts move into
    /// the pool totals. Returns how many were removed.
    pub fn forget_disconnected_miners(&mut self, timeout_ms: u64, now_ms: u64) -> usize {
        self.stats.cleanup_disconnected_miners(timeout_ms, now_ms)
    }

    /// One miner's record.
    pub fn miner(&self, id: u64) -> Option<&MinerConnection> {
        self.stats.miner(id)
    }

    /// Every miner's record.
    pub fn miners(&self) -> impl Iterator<Item = (u64, &MinerConnection)> {
        self.stats.miners()
    }

    /// The statistics behind [`get_pool_stats`](Self::get_pool_stats): miners, workers,
    /// channels, refusals by reason (issue 16: metrics and the API read them at scrape time).
    pub fn statistics(&self) -> &PoolStatistics {
        &self.stats
    }

    /// Pool-wide totals.
    pub fn get_pool_stats(&self) -> PoolStats {
        let mut s = self.stats.get_pool_stats();
        s.blocks_accepted = self.found.accepted();
        s.blocks_rejected = self.found.rejected();
        s
    }

    /// Whether `hash` is among the recently found blocks.
    pub fn found_recently(&self, hash: BlockHash) -> bool {
        let hash = hash.to_string();
        self.found.recent().any(|b| b.hash == hash)
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, CompactTarget, block::Version};

    use super::*;
    use crate::mining::{FoundBlock, MiningConfig};

    fn template(prev: u8, value_sat: u64) -> BlockTemplate {
        BlockTemplate {
            version: Version::from_consensus(0x2000_0000),
            prev_hash: BlockHash::from_byte_array([prev; 32]),
            bits: CompactTarget::from_consensus(0x207f_ffff),
            height: 100 + u32::from(prev),
            min_time: 1_700_000_000,
            cur_time: 1_700_000_100,
            coinbase_value: Amount::from_sat(value_sat),
            transactions: Vec::new(),
            transaction_costs: Vec::new(),
        }
    }

    /// A pool on template(1, 50), with its work and the block of one share on it.
    fn pool_with_block() -> (StratumV2Pool, Arc<Work>, bitcoin::Block) {
        let mut pool = StratumV2Pool::new();
        let work = pool
            .offer_template(template(1, 50), &MiningConfig::default().coinbase)
            .unwrap()
            .unwrap()
            .work;
        let block = work.assemble_block(&[1; 8], &[2; 8], work.version, work.cur_time, 7);
        (pool, work, block)
    }

    #[test]
    fn a_found_block_is_recorded_submitted_and_counted_by_verdict() {
        let (mut pool, work, block) = pool_with_block();
        assert_eq!(pool.current_work().unwrap().id, work.id);
        pool.connect_miner(1, "127.0.0.1:1".into(), 0);
        let hash = block.block_hash();
        let found = SessionEvent::BlockFound(Box::new(FoundBlock {
            block: block.clone(),
            height: work.height,
            channel_id: 1,
            user_identity: "alice".into(),
            coinbase_payouts: None,
        }));
        pool.record(1, &found, 10);
        assert!(pool.found_recently(hash));
        let store = MemoryBlockStore::new();
        store.save_pending(&block).unwrap();
        pool.found_blocks_mut().queue(block, Some(work.height), 10);
        let s = pool.found_blocks_mut().poll_submission(10).unwrap();
        let outcome = pool
            .found_blocks_mut()
            .handle_answer(s.hash, NodeAnswer::Accepted, 20);
        outcome.settle(&store, s.hash).unwrap();
        let stats = pool.get_pool_stats();
        assert_eq!(
            (
                stats.blocks_found,
                stats.blocks_accepted,
                stats.blocks_rejected
            ),
            (1, 1, 0)
        );
        assert_eq!(pool.miner(1).unwrap().stats.blocks_found, 1);
        let rec: Vec<_> = pool.recent_blocks().cloned().collect();
        assert_eq!(rec.len(), 1);
        assert_eq!(
            (rec[0].user_identity.as_str(), rec[0].accepted),
            ("alice", Some(true))
        );
        assert_eq!(store.state(hash), Some(Some(BlockVerdict::Submitted)));
    }

    #[test]
    fn a_template_on_a_new_tip_ends_the_wait_of_a_block_too_new_for_the_node_clock() {
        let cfg = MiningConfig::default();
        let (mut pool, work, block) = pool_with_block();
        let found = pool.found_blocks_mut();
        found.queue(block, Some(work.height), 10);
        let s = found.poll_submission(10).unwrap();
        let waiting = found.handle_answer(s.hash, NodeAnswer::TooNewInTime, 10);
        assert!(
            matches!(waiting, SubmissionOutcome::WaitingForNodeClock { .. }),
            "{waiting:?}"
        );
        // More fees on the same tip: the block keeps waiting.
        pool.offer_template(template(1, 60), &cfg.coinbase)
            .unwrap()
            .unwrap();
        assert_eq!(pool.found_blocks().poll_timeout(), Some(1_010));
        // Another tip: one last try at once, and a refusal is final.
        pool.offer_template(template(2, 50), &cfg.coinbase)
            .unwrap()
            .unwrap();
        let found = pool.found_blocks_mut();
        assert_eq!(found.poll_timeout(), Some(0));
        let s = found.poll_submission(20).unwrap();
        assert_eq!(
            found.handle_answer(s.hash, NodeAnswer::TooNewInTime, 20),
            SubmissionOutcome::Rejected
        );
        assert_eq!(pool.get_pool_stats().blocks_rejected, 1);
    }

    #[test]
    fn the_certificate_rule_follows_the_configured_validity() {
        assert_eq!(
            StratumV2Pool::new().certificate_renewal().validity_secs(),
            DEFAULT_CERT_VALIDITY_SECS
        );
        assert_eq!(
            StratumV2Pool::with_certificate_validity(120)
                .certificate_renewal()
                .validity_secs(),
            120
        );
    }

    #[test]
    fn every_session_of_the_pool_shares_one_extranonce_space() {
        let pool = StratumV2Pool::new();
        let a = pool.extranonce_allocator().clone();
        assert!(Arc::ptr_eq(&a, pool.extranonce_allocator()));
    }
}
