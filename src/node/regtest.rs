//! An embedded regtest chain, so the pool runs with no Bitcoin node installed.
//!
//! It starts from the real regtest genesis block (the node: with a synthetic history behind it,
//! see "Block times" below), builds templates (optionally filled with
//! synthetic transactions, some with witness data, so merkle paths and witness commitments are
//! not trivial), checks every submitted block for real (proof of work against the expected
//! nBits, prev hash is the tip, merkle root, witness commitment, BIP34 height, timestamps,
//! coinbase value) and extends the chain only with valid blocks. It keeps headers, not
//! transactions: synthetic transactions spend made-up outputs, so nothing checks UTXOs.
//!
//! # Block times
//!
//! The consensus rules stay as they are: a block's time must be above the median time past
//! (MTP, the median of the last 11 blocks' times) and at most two hours ahead of the clock;
//! a template's `min_time` is MTP + 1 and its `cur_time` is the clock, raised to `min_time`
//! if the clock is behind it (as Bitcoin Core's getblocktemplate). What is chosen here is the
//! chain's history, because on a chain that starts at genesis the median is the newest
//! block's time: after block 1, MTP is block 1's time. Devices that take nTime from their own
//! clock plus an offset (SRI's mining_device uses its clock + 60 s, set once per job) then
//! put block 1 a minute ahead, and the next template's minimum is one second past that: a
//! job they get within the same second carries an nTime one second too old, and every share
//! on it is refused.
//!
//! On a mature chain this cannot happen: the median is the 6th newest of 11 blocks, about an
//! hour behind the clock, so one block ahead of the clock (or five) does not move the minimum
//! past what honest devices send. [`EmbeddedNode`] therefore starts from such a chain:
//! genesis plus [`HISTORY_HEIGHT`] coinbase-only regtest blocks whose times follow genesis's
//! (2011, ten minutes apart), so a fresh node's 11-block window is full and its median sits
//! years behind the clock. After the first five blocks mined on it, whatever their times, the
//! median is still a history block's; from the sixth on it is the 6th newest mined block's
//! time, which a device with a fixed clock offset has already passed unless six of its blocks
//! land within one second (the consensus rule itself, which a new job on the same tip
//! resolves). Templates keep `cur_time` = the clock (above `min_time` here), so devices that
//! use the job's time send the clock too. The history's times are
//! fixed (not taken from the clock), so its hashes are the same on every start and in tests.
//! [`EmbeddedChain::new`] is the bare chain from genesis alone, for sans-IO tests that count
//! heights from 0.
//!
//! # Difficulty
//!
//! With [`ChainConfig::block_interval_secs`] 0 every block carries the configured `bits` (on
//! regtest's powLimit, about every other hash is a block: tests that want every share to be a
//! block use this). Otherwise the target adapts so that blocks come about that many seconds
//! apart, never easier than `bits`; the rule is in [`difficulty`], and both the templates and
//! the check of submitted blocks follow it. The pool's own default is
//! [`DEFAULT_BLOCK_INTERVAL_SECS`]; [`ChainConfig::default`] is the fixed chain.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::block::{Header, Version};
use bitcoin::blockdata::constants::genesis_block;
use bitcoin::hashes::Hash;
use bitcoin::script::Builder;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, Network, OutPoint, ScriptBuf, Sequence, Target,
    Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness, absolute, transaction,
};
use tokio::sync::broadcast;

use super::{BlockTemplate, ChainAt, ChainEvent, NodeApi, NodeChain, NodeError, NodeFuture};

pub mod difficulty;
pub use difficulty::RETARGET_INTERVAL;

/// Regtest's easiest target (powLimit), in compact form.
pub const REGTEST_BITS: u32 = 0x207f_ffff;
/// Fee paid by each synthetic transaction, in satoshis.
pub const SYNTHETIC_FEE: u64 = 1_000;
/// Regtest halves the subsidy every 150 blocks.
const HALVING_INTERVAL: u32 = 150;
/// A block's time may be at most this far ahead of the clock (consensus: two hours).
const MAX_FUTURE_BLOCK_TIME: u32 = 2 * 60 * 60;
/// Height of a fresh [`EmbeddedNode`]'s tip: genesis and this many history blocks fill the
/// 11-block median-time-past window (see "Block times" in the module docs).
pub const HISTORY_HEIGHT: u32 = 10;
/// Seconds between two history blocks (the network's target spacing).
const HISTORY_SPACING: u32 = 600;

/// The pool's default aim between two blocks of the embedded chain, in seconds: a CPU
/// miner's shares are then rarely stale (module docs, "Difficulty").
pub const DEFAULT_BLOCK_INTERVAL_SECS: u32 = 10;
/// The pool's default first (and easiest) target of an adaptive chain: 2^20 hashes a block,
/// 244 times the pool's easiest share (difficulty 1e-6, about 4,300 hashes). A fresh miner
/// starts at that share difficulty, and each block makes the shares it finds before the new
/// work arrives stale (a 3 MH/s miner finds about eight in the 10 ms that takes): at
/// regtest's powLimit every share is a block (and the chain would see blocks only as often as
/// shares while it catches up), here one in 244 is. A 3 MH/s miner finds a first-target block
/// every 0.3 s, a 100 kH/s one every 10 s.
pub const ADAPTIVE_CHAIN_BITS: u32 = 0x1e0f_ffff;

/// How the embedded chain behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainConfig {
    /// Compact target of every block when `block_interval_secs` is 0; otherwise the easiest
    /// (and first) target of the adaptive chain. Default: regtest's powLimit.
    pub bits: u32,
    /// Synthetic transactions put in each template (0: empty blocks).
    pub synthetic_transactions: usize,
    /// Aimed seconds between blocks; the target adapts every [`RETARGET_INTERVAL`] blocks
    /// ([`difficulty`]). 0: the fixed target `bits`. Default: 0 (the pool's configuration
    /// defaults to [`DEFAULT_BLOCK_INTERVAL_SECS`]).
    pub block_interval_secs: u32,
}

impl Default for ChainConfig {
    /// The fixed chain at regtest's powLimit, empty blocks.
    fn default() -> Self {
        ChainConfig {
            bits: REGTEST_BITS,
            synthetic_transactions: 0,
            block_interval_secs: 0,
        }
    }
}

/// Why the embedded chain refused a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockRejection {
    /// Its prev hash is not the tip.
    #[error("bad-prevblk: builds on {0}, not on the tip")]
    NotOnTip(BlockHash),
    /// Its nBits is not what the chain's difficulty rule says.
    #[error("bad-diffbits: {0:#010x}")]
    BadBits(u32),
    /// Its hash is above the target.
    #[error("high-hash: proof of work does not meet the target")]
    HighHash,
    /// Its merkle root does not commit to its transactions.
    #[error("bad-txnmrklroot")]
    BadMerkleRoot,
    /// Its witness commitment is missing or wrong.
    #[error("bad-witness-merkle-match")]
    BadWitnessCommitment,
    /// No coinbase first, or a coinbase elsewhere.
    #[error("bad-cb-missing")]
    BadCoinbase,
    /// BIP34 height missing or wrong.
    #[error("bad-cb-height: expected {expected}, found {found:?}")]
    BadHeight {
        /// The height the block must have.
        expected: u32,
        /// What its coinbase says.
        found: Option<u64>,
    },
    /// Time not above the median of the last 11 blocks (a verdict).
    #[error("time-too-old: {0}")]
    TimeTooOld(u32),
    /// Time more than two hours ahead of the clock: refused for now, valid once the clock
    /// has caught up.
    #[error("time-too-new: {0}")]
    TimeTooNew(u32),
    /// The coinbase pays more than subsidy and fees.
    #[error("bad-cb-amount: pays {paid} sat, at most {allowed} allowed")]
    BadCoinbaseValue {
        /// What it pays.
        paid: u64,
        /// Subsidy plus fees.
        allowed: u64,
    },
}

impl From<BlockRejection> for NodeError {
    /// A block too new for the clock is refused for now ([`NodeError::BlockTooNewInTime`]);
    /// every other refusal is a verdict.
    fn from(rejection: BlockRejection) -> NodeError {
        match rejection {
            BlockRejection::TimeTooNew(_) => NodeError::BlockTooNewInTime(rejection.to_string()),
            _ => NodeError::BlockRejected(rejection.to_string()),
        }
    }
}

/// The chain itself, without I/O: time is passed in.
#[derive(Debug)]
pub struct EmbeddedChain {
    config: ChainConfig,
    /// Headers from genesis to the tip.
    headers: Vec<Header>,
    tip: BlockHash,
    /// Bumped for every template so synthetic transactions differ between templates.
    template_seq: u64,
}

impl EmbeddedChain {
    /// A chain holding only the regtest genesis block.
    pub fn new(config: ChainConfig) -> Self {
        let genesis = genesis_block(Network::Regtest);
        EmbeddedChain {
            config,
            tip: genesis.block_hash(),
            headers: vec![genesis.header],
            template_seq: 0,
        }
    }

    /// A chain of genesis and [`HISTORY_HEIGHT`] history blocks, as a fresh [`EmbeddedNode`]
    /// has: its median time past is in 2011, so blocks ahead of the clock do not push the
    /// next template's minimum time past the clock (module docs, "Block times").
    pub fn with_history(config: ChainConfig) -> Self {
        let mut chain = Self::new(config);
        let genesis_time = chain.headers[0].time;
        for height in 1..=HISTORY_HEIGHT {
            let header = history_header(chain.tip, height, genesis_time + height * HISTORY_SPACING);
            chain.tip = header.block_hash();
            chain.headers.push(header);
        }
        chain
    }

    /// Height of the tip (genesis is 0).
    pub fn height(&self) -> u32 {
        (self.headers.len() - 1) as u32
    }

    /// Hash of the tip.
    pub fn tip(&self) -> BlockHash {
        self.tip
    }

    /// Hash of the chain's block at `height`, `None` above the tip.
    pub fn hash_at(&self, height: u32) -> Option<BlockHash> {
        self.headers.get(height as usize).map(Header::block_hash)
    }

    /// The compact target the next block must carry (module docs, "Difficulty").
    pub fn next_bits(&self) -> CompactTarget {
        difficulty::next_bits(
            &self.headers,
            self.config.bits,
            self.config.block_interval_secs,
        )
    }

    /// Median time of the last 11 blocks.
    fn median_time_past(&self) -> u32 {
        let mut times: Vec<u32> = self.headers.iter().rev().take(11).map(|h| h.time).collect();
        times.sort_unstable();
        times[times.len() / 2]
    }

    /// Block subsidy at `height` on regtest.
    pub fn subsidy(height: u32) -> u64 {
        let halvings = height / HALVING_INTERVAL;
        if halvings >= 64 {
            0
        } else {
            (50 * 100_000_000u64) >> halvings
        }
    }

    /// A template for the next block at clock time `now` (unix seconds).
    pub fn template(&mut self, now: u32) -> BlockTemplate {
        self.template_seq += 1;
        let height = self.height() + 1;
        let min_time = self.median_time_past() + 1;
        let transactions: Vec<Transaction> = (0..self.config.synthetic_transactions)
            .map(|i| synthetic_transaction(self.template_seq, i))
            .collect();
        let fees = SYNTHETIC_FEE * transactions.len() as u64;
        BlockTemplate {
            version: Version::from_consensus(0x2000_0000),
            prev_hash: self.tip,
            bits: self.next_bits(),
            height,
            min_time,
            cur_time: now.max(min_time),
            coinbase_value: Amount::from_sat(Self::subsidy(height) + fees),
            transaction_costs: transactions
                .iter()
                .map(|_| crate::block::TransactionCost {
                    fee: Some(Amount::from_sat(SYNTHETIC_FEE)),
                    // No signature check: an empty scriptSig and an OP_RETURN output.
                    sigop_cost: Some(0),
                })
                .collect(),
            transactions,
        }
    }

    /// Checks a block against every rule listed in the module docs and, if valid, makes it
    /// the new tip.
    pub fn submit_block(&mut self, block: &Block, now: u32) -> Result<BlockHash, BlockRejection> {
        let header = &block.header;
        if header.prev_blockhash != self.tip {
            return Err(BlockRejection::NotOnTip(header.prev_blockhash));
        }
        if header.bits != self.next_bits() {
            return Err(BlockRejection::BadBits(header.bits.to_consensus()));
        }
        let target = Target::from_compact(header.bits);
        let hash = header
            .validate_pow(target)
            .map_err(|_| BlockRejection::HighHash)?;
        let Some((coinbase, rest)) = block.txdata.split_first() else {
            return Err(BlockRejection::BadCoinbase);
        };
        if !coinbase.is_coinbase() || rest.iter().any(Transaction::is_coinbase) {
            return Err(BlockRejection::BadCoinbase);
        }
        if !block.check_merkle_root() {
            return Err(BlockRejection::BadMerkleRoot);
        }
        if !block.check_witness_commitment() {
            return Err(BlockRejection::BadWitnessCommitment);
        }
        let height = self.height() + 1;
        // As Bitcoin Core checks BIP34: the scriptSig starts with `CScript() << height`, which
        // is OP_1..OP_16 for heights up to 16 (rust-bitcoin's bip34_block_height only reads
        // data pushes, so it cannot check those).
        let expected = Builder::new().push_int(i64::from(height)).into_script();
        if !coinbase.input[0]
            .script_sig
            .as_bytes()
            .starts_with(expected.as_bytes())
        {
            return Err(BlockRejection::BadHeight {
                expected: height,
                found: crate::block::coinbase::bip34_height(block).map(u64::from),
            });
        }
        if header.time <= self.median_time_past() {
            return Err(BlockRejection::TimeTooOld(header.time));
        }
        if header.time > now.saturating_add(MAX_FUTURE_BLOCK_TIME) {
            return Err(BlockRejection::TimeTooNew(header.time));
        }
        let paid: u64 = coinbase.output.iter().map(|o| o.value.to_sat()).sum();
        let allowed = Self::subsidy(height) + SYNTHETIC_FEE * rest.len() as u64;
        if paid > allowed {
            return Err(BlockRejection::BadCoinbaseValue { paid, allowed });
        }
        self.headers.push(*header);
        self.tip = hash;
        Ok(hash)
    }
}

/// A history block's header: coinbase-only (BIP34 height, the subsidy to an empty OP_RETURN),
/// at regtest's powLimit whatever the chain's bits, with a nonce that meets it (about every
/// other nonce does).
fn history_header(prev: BlockHash, height: u32, time: u32) -> Header {
    let coinbase = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: Builder::new().push_int(i64::from(height)).into_script(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(EmbeddedChain::subsidy(height)),
            script_pubkey: ScriptBuf::new_op_return([]),
        }],
    };
    let mut header = Header {
        version: Version::from_consensus(0x2000_0000),
        prev_blockhash: prev,
        merkle_root: TxMerkleNode::from_raw_hash(coinbase.compute_txid().to_raw_hash()),
        time,
        bits: CompactTarget::from_consensus(REGTEST_BITS),
        nonce: 0,
    };
    let target = Target::from_compact(header.bits);
    while header.validate_pow(target).is_err() {
        header.nonce += 1;
    }
    header
}

/// A made-up transaction: one input spending an invented outpoint, one output; every other one
/// carries witness data so templates need a witness commitment.
fn synthetic_transaction(seq: u64, i: usize) -> Transaction {
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&seq.to_le_bytes());
    seed[8..].copy_from_slice(&(i as u64).to_le_bytes());
    let witness = if i.is_multiple_of(2) {
        Witness::from_slice(&[seed.to_vec()])
    } else {
        Witness::new()
    };
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::hash(&seed),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness,
        }],
        output: vec![TxOut {
            value: Amount::from_sat(10_000),
            script_pubkey: ScriptBuf::new_op_return(seed),
        }],
    }
}

/// Seconds since the Unix epoch from the system clock (the backend's clock, not the core's).
fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// The embedded chain as a [`NodeApi`] backend, with the system clock and chain events.
#[derive(Debug)]
pub struct EmbeddedNode {
    chain: Mutex<EmbeddedChain>,
    events: broadcast::Sender<ChainEvent>,
}

impl EmbeddedNode {
    /// A node on a fresh regtest chain: genesis and the history blocks, tip at
    /// [`HISTORY_HEIGHT`] (module docs, "Block times").
    pub fn new(config: ChainConfig) -> Self {
        let (events, _) = broadcast::channel(64);
        EmbeddedNode {
            chain: Mutex::new(EmbeddedChain::with_history(config)),
            events,
        }
    }

    /// Height of the tip.
    pub fn height(&self) -> u32 {
        self.with_chain(|c| c.height())
    }

    /// Hash of the tip.
    pub fn tip(&self) -> BlockHash {
        self.with_chain(|c| c.tip())
    }

    fn with_chain<T>(&self, f: impl FnOnce(&mut EmbeddedChain) -> T) -> T {
        // A panic while holding the lock cannot leave the chain half-updated (headers and tip
        // change together after all checks), so a poisoned lock is still safe to use.
        let mut guard = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl NodeApi for EmbeddedNode {
    fn get_block_template(&self) -> NodeFuture<'_, Result<BlockTemplate, NodeError>> {
        let t = self.with_chain(|c| c.template(unix_now()));
        Box::pin(async move { Ok(t) })
    }

    fn submit_block(&self, block: Block) -> NodeFuture<'_, Result<(), NodeError>> {
        let result = self.with_chain(|c| {
            c.submit_block(&block, unix_now())
                .map(|hash| (hash, c.height()))
        });
        let outcome = match result {
            Ok((hash, height)) => {
                // No subscriber is not an error: nobody is waiting for the tip yet.
                let _ = self.events.send(ChainEvent::NewTip { hash, height });
                Ok(())
            }
            Err(e) => Err(e.into()),
        };
        Box::pin(async move { outcome })
    }

    fn block_hash_at(&self, height: u32) -> NodeFuture<'_, Result<ChainAt, NodeError>> {
        let at = self.with_chain(|c| ChainAt {
            hash: c.hash_at(height),
            tip_height: c.height(),
        });
        Box::pin(async move { Ok(at) })
    }

    fn chain(&self) -> NodeFuture<'_, Result<NodeChain, NodeError>> {
        // Whatever its nBits, the embedded chain's blocks are worth nothing outside this process.
        Box::pin(async { Ok(NodeChain::Known(bitcoin::Network::Regtest)) })
    }

    fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// About now (2026), as a fixed clock.
    const NOW: u32 = 1_790_000_000;

    /// A coinbase-only block on the template's tip with header time `time`, solved.
    fn block_at(template: &BlockTemplate, time: u32) -> Block {
        let mut block = block_at_nonce(template, time, 0);
        while block.header.validate_pow(block.header.target()).is_err() {
            block.header.nonce += 1;
        }
        block
    }

    /// [`block_at`] without solving: `nonce` as given.
    fn block_at_nonce(template: &BlockTemplate, time: u32, nonce: u32) -> Block {
        let coinbase = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: Builder::new()
                    .push_int(i64::from(template.height))
                    .push_slice([7u8; 8])
                    .into_script(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: template.coinbase_value,
                script_pubkey: ScriptBuf::new_op_return([]),
            }],
        };
        let mut block = Block {
            header: Header {
                version: template.version,
                prev_blockhash: template.prev_hash,
                merkle_root: TxMerkleNode::all_zeros(),
                time,
                bits: template.bits,
                nonce: 0,
            },
            txdata: vec![coinbase],
        };
        block.header.merkle_root = block.compute_merkle_root().expect("one transaction");
        block.header.nonce = nonce;
        block
    }

    #[test]
    fn history_fills_the_median_window_with_genesis_era_times() {
        let mut chain = EmbeddedChain::with_history(ChainConfig::default());
        assert_eq!(chain.height(), HISTORY_HEIGHT);
        assert_eq!(
            chain.headers.len(),
            11,
            "genesis and the history: one full window"
        );
        let genesis = genesis_block(Network::Regtest);
        assert_eq!(chain.headers[1].prev_blockhash, genesis.block_hash());
        for pair in chain.headers.windows(2) {
            assert_eq!(pair[1].prev_blockhash, pair[0].block_hash());
            assert_eq!(pair[1].time, pair[0].time + HISTORY_SPACING);
            let target = Target::from_compact(pair[1].bits);
            assert!(pair[1].validate_pow(target).is_ok());
        }
        // Deterministic: the same history on every start.
        let again = EmbeddedChain::with_history(ChainConfig::default());
        assert_eq!(again.tip(), chain.tip());
        let t = chain.template(NOW);
        assert_eq!(t.height, HISTORY_HEIGHT + 1);
        assert_eq!(t.min_time, genesis.header.time + 5 * HISTORY_SPACING + 1);
        assert_eq!(t.cur_time, NOW);
    }

    /// The device of issue 19: every block a minute ahead of the clock, found within the same
    /// second. On the bare chain block 1 pushes the next minimum past the device's next nTime;
    /// with the history five such blocks leave the minimum in 2011 and the template's time at
    /// the clock.
    #[test]
    fn blocks_ahead_of_the_clock_do_not_push_the_minimum_past_the_clock() {
        let device_ntime = NOW + 60;

        let mut bare = EmbeddedChain::new(ChainConfig::default());
        let t = bare.template(NOW);
        bare.submit_block(&block_at(&t, device_ntime), NOW)
            .expect("block 1 valid");
        let next = bare.template(NOW);
        assert_eq!(next.min_time, device_ntime + 1);
        assert!(
            next.cur_time > device_ntime,
            "the device's next nTime is too old"
        );

        let mut chain = EmbeddedChain::with_history(ChainConfig::default());
        for _ in 0..5 {
            let t = chain.template(NOW);
            chain
                .submit_block(&block_at(&t, device_ntime), NOW)
                .expect("valid block");
            let next = chain.template(NOW);
            assert!(next.min_time < NOW, "{next:?}");
            assert_eq!(next.cur_time, NOW);
        }
        // The sixth makes the median a block of this device: its own time, which the next
        // second's nTime passes (the consensus rule, unchanged).
        let t = chain.template(NOW);
        chain
            .submit_block(&block_at(&t, device_ntime), NOW)
            .expect("valid block");
        assert_eq!(chain.template(NOW + 1).min_time, device_ntime + 1);
        assert_eq!(chain.height(), HISTORY_HEIGHT + 6);
    }

    /// A miner of known hash rate on a simulated clock (each hash takes `1 / rate` s), real
    /// proof of work against the chain's bits: after the retargets from powLimit, blocks come
    /// about the aimed interval apart, and every block carries the bits the rule says.
    #[test]
    fn adaptive_chain_brings_blocks_at_the_interval() {
        const RATE: u64 = 4_000;
        let config = ChainConfig {
            block_interval_secs: 1,
            ..ChainConfig::default()
        };
        let mut chain = EmbeddedChain::with_history(config);
        let mut hashes: u64 = 0;
        let mut found_at = Vec::new();
        while chain.height() < HISTORY_HEIGHT + 150 {
            let now = NOW + (hashes / RATE) as u32;
            let t = chain.template(now);
            assert_eq!(t.bits, chain.next_bits());
            let mut block = block_at_nonce(&t, now.max(t.min_time), 0);
            loop {
                hashes += 1;
                if block.header.validate_pow(block.header.target()).is_ok() {
                    break;
                }
                block.header.nonce += 1;
                let clock = NOW + (hashes / RATE) as u32;
                if clock > block.header.time {
                    block.header.time = clock;
                }
            }
            let now = NOW + (hashes / RATE) as u32;
            chain.submit_block(&block, now).expect("valid block");
            found_at.push(hashes as f64 / RATE as f64);
        }
        // The first blocks are at powLimit, a few hashes each.
        assert!(found_at[19] < 0.1, "{:?}", &found_at[..20]);
        // The last 60 (after six retargets from powLimit): about a second apart.
        let last = &found_at[found_at.len() - 61..];
        let mean = (last[60] - last[0]) / 60.0;
        assert!((0.6..=1.6).contains(&mean), "mean interval {mean} s");
        // A wrong bits is refused.
        let t = chain.template(NOW + 10_000);
        let mut block = block_at(&t, t.cur_time);
        block.header.bits = CompactTarget::from_consensus(REGTEST_BITS);
        assert!(matches!(
            chain.submit_block(&block, NOW + 10_000),
            Err(BlockRejection::BadBits(_))
        ));
    }

    #[test]
    fn the_time_rules_still_hold_on_the_history() {
        let mut chain = EmbeddedChain::with_history(ChainConfig::default());
        let t = chain.template(NOW);
        assert_eq!(
            chain.submit_block(&block_at(&t, t.min_time - 1), NOW),
            Err(BlockRejection::TimeTooOld(t.min_time - 1)),
            "not above the median time past"
        );
        let too_new = NOW + MAX_FUTURE_BLOCK_TIME + 1;
        assert_eq!(
            chain.submit_block(&block_at(&t, too_new), NOW),
            Err(BlockRejection::TimeTooNew(too_new)),
            "more than two hours ahead"
        );
        let ok = block_at(&t, t.min_time);
        assert_eq!(chain.submit_block(&ok, NOW), Ok(ok.block_hash()));
    }
}
