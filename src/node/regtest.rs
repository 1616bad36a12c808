//! An embedded regtest chain, so the pool runs with no Bitcoin node installed.
//!
//! It starts from the real regtest genesis block, builds templates (optionally filled with
//! synthetic transactions, some with witness data, so merkle paths and witness commitments are
//! not trivial), checks every submitted block for real (proof of work against the expected
//! nBits, prev hash is the tip, merkle root, witness commitment, BIP34 height, timestamps,
//! coinbase value) and extends the chain only with valid blocks. It keeps headers, not
//! transactions: synthetic transactions spend made-up outputs, so nothing checks UTXOs.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::block::{Header, Version};
use bitcoin::blockdata::constants::genesis_block;
use bitcoin::hashes::Hash;
use bitcoin::script::Builder;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, Network, OutPoint, ScriptBuf, Sequence, Target,
    Transaction, TxIn, TxOut, Txid, Witness, absolute, transaction,
};
use tokio::sync::broadcast;

use super::{BlockTemplate, ChainEvent, NodeApi, NodeChain, NodeError, NodeFuture};

/// Regtest's easiest target (powLimit), in compact form.
pub const REGTEST_BITS: u32 = 0x207f_ffff;
/// Fee paid by each synthetic transaction, in satoshis.
pub const SYNTHETIC_FEE: u64 = 1_000;
/// Regtest halves the subsidy every 150 blocks.
const HALVING_INTERVAL: u32 = 150;
/// A block's time may be at most this far ahead of the clock (consensus: two hours).
const MAX_FUTURE_BLOCK_TIME: u32 = 2 * 60 * 60;

/// How the embedded chain behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainConfig {
    /// Fixed compact target of every block (default: regtest's).
    pub bits: u32,
    /// Synthetic transactions put in each template (0: empty blocks).
    pub synthetic_transactions: usize,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            bits: REGTEST_BITS,
            synthetic_transactions: 0,
        }
    }
}

/// Why the embedded chain refused a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockRejection {
    /// Its prev hash is not the tip.
    #[error("bad-prevblk: builds on {0}, not on the tip")]
    NotOnTip(BlockHash),
    /// Its nBits is not the chain's.
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

    /// Height of the tip (genesis is 0).
    pub fn height(&self) -> u32 {
        (self.headers.len() - 1) as u32
    }

    /// Hash of the tip.
    pub fn tip(&self) -> BlockHash {
        self.tip
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
            bits: CompactTarget::from_consensus(self.config.bits),
            height,
            min_time,
            cur_time: now.max(min_time),
            coinbase_value: Amount::from_sat(Self::subsidy(height) + fees),
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
        if header.bits.to_consensus() != self.config.bits {
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
    /// A node on a fresh regtest chain.
    pub fn new(config: ChainConfig) -> Self {
        let (events, _) = broadcast::channel(64);
        EmbeddedNode {
            chain: Mutex::new(EmbeddedChain::new(config)),
            events,
        }
    }

    /// Height of the tip.
    pub fn height(&self) -> u32 {
        self.with_chain(|c| c.height())
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

    fn chain(&self) -> NodeFuture<'_, Result<NodeChain, NodeError>> {
        // Whatever its nBits, the embedded chain's blocks are worth nothing outside this process.
        Box::pin(async { Ok(NodeChain::Known(bitcoin::Network::Regtest)) })
    }

    fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        self.events.subscribe()
    }
}
