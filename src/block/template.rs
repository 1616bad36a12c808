//! A block template as the pool needs it, whatever node it came from.

use bitcoin::block::Version;
use bitcoin::hashes::Hash;
use bitcoin::{
    Amount, BlockHash, CompactTarget, ScriptBuf, Target, Transaction, Txid, Witness, Wtxid,
};

/// Everything a pool needs to build jobs for the next block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockTemplate {
    /// Block header version.
    pub version: Version,
    /// Hash of the block this one builds on.
    pub prev_hash: BlockHash,
    /// Compact network target of the next block.
    pub bits: CompactTarget,
    /// Height of the next block (BIP34 puts it in the coinbase).
    pub height: u32,
    /// Smallest allowed header time (median time past + 1).
    pub min_time: u32,
    /// The node's current time; jobs start from here.
    pub cur_time: u32,
    /// Subsidy plus fees: what the coinbase may pay out.
    pub coinbase_value: Amount,
    /// The transactions after the coinbase, in block order.
    pub transactions: Vec<Transaction>,
    /// What the node said of each transaction besides its bytes, in the same order; empty
    /// when it said nothing (a template may then not be cut: see [`TransactionCost`]).
    pub transaction_costs: Vec<TransactionCost>,
}

/// What the node says of one of a template's transactions besides its bytes
/// (getblocktemplate's `fee` and `sigops`): what leaving it out of the block takes off the
/// coinbase's value and off the block's sigop cost. A template provider needs them to cut a
/// template down to the room a client's coinbase outputs need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransactionCost {
    /// Its fee; `None`: not given.
    pub fee: Option<Amount>,
    /// Its sigop cost (legacy sigops x 4 plus witness sigops); `None`: not given.
    pub sigop_cost: Option<u32>,
}

impl BlockTemplate {
    /// The network target this template's block must meet.
    pub fn target(&self) -> Target {
        Target::from_compact(self.bits)
    }

    /// Whether any transaction carries witness data, so the coinbase needs a BIP141
    /// commitment.
    pub fn has_witness_data(&self) -> bool {
        self.transactions
            .iter()
            .any(|tx| tx.input.iter().any(|i| !i.witness.is_empty()))
    }

    /// What the node said of transaction `index` (nothing when it gave no costs).
    pub fn cost_of(&self, index: usize) -> TransactionCost {
        self.transaction_costs
            .get(index)
            .copied()
            .unwrap_or_default()
    }

    /// Txids of the template's transactions, in order.
    pub fn txids(&self) -> Vec<Txid> {
        self.transactions
            .iter()
            .map(Transaction::compute_txid)
            .collect()
    }

    /// The witness merkle root of a block of this template (the coinbase's wtxid taken as
    /// zero, as BIP141 says).
    pub fn witness_root(&self) -> bitcoin::WitnessMerkleNode {
        let wtxids = std::iter::once(Wtxid::all_zeros())
            .chain(self.transactions.iter().map(Transaction::compute_wtxid))
            .map(|w| w.to_raw_hash());
        bitcoin::merkle_tree::calculate_root(wtxids)
            .map(bitcoin::WitnessMerkleNode::from_raw_hash)
            .unwrap_or_else(bitcoin::WitnessMerkleNode::all_zeros)
    }

    /// The BIP141 witness commitment output script: OP_RETURN with 0xaa21a9ed and the hash of
    /// the witness merkle root (coinbase wtxid taken as zero) and a zero witness reserved value.
    pub fn witness_commitment_script(&self) -> ScriptBuf {
        let root = self.witness_root();
        let reserved = [0u8; 32];
        let commitment = bitcoin::Block::compute_witness_commitment(&root, &reserved);
        let mut bytes = [0u8; 36];
        bytes[..4].copy_from_slice(&[0xaa, 0x21, 0xa9, 0xed]);
        bytes[4..].copy_from_slice(commitment.as_byte_array());
        ScriptBuf::new_op_return(bytes)
    }

    /// The coinbase witness that goes with [`witness_commitment_script`]: one 32-byte zero item.
    pub fn coinbase_witness() -> Witness {
        Witness::from_slice(&[[0u8; 32]])
    }
}
