//! Work built once per template and shared by every channel: the coinbase split, the merkle
//! path, the header fields, and the template's transactions for block assembly. (A channel
//! paid in its own coinbase mines a work derived from it, `payee_work`.)

use std::sync::Arc;

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::{
    Block, BlockHash, CompactTarget, ScriptBuf, Target, Transaction, TxMerkleNode, Txid,
};

use super::MiningError;
use crate::block::BlockTemplate;
use crate::block::coinbase::{CoinbaseConfig, CoinbaseParts};
use crate::block::merkle::{coinbase_merkle_path, fold_merkle_path};
use crate::ledger::CoinbasePayouts;

/// The header functions' old home, kept so that existing callers still find them.
pub use crate::block::header::{header_bytes, header_midstate, sha256d_from_midstate};

/// One template turned into minable work.
#[derive(Debug)]
pub struct Work {
    /// Pool-wide identifier, strictly increasing.
    pub id: u64,
    /// Header version (BIP320 bits may be rolled on top when allowed).
    pub version: u32,
    /// Previous block hash, header byte order.
    pub prev_hash: BlockHash,
    /// Compact network target.
    pub nbits: u32,
    /// Height of the block.
    pub height: u32,
    /// Smallest header time the node allows.
    pub min_time: u32,
    /// Header time miners start from.
    pub cur_time: u32,
    /// Network target: a share at or below it is a block.
    pub network_target: Target,
    /// The coinbase, split.
    pub coinbase: CoinbaseParts,
    /// Merkle path of the coinbase, deepest first.
    pub merkle_path: Vec<[u8; 32]>,
    /// Transactions after the coinbase (shared with the works derived for coinbase-paid
    /// channels, `payee_work`).
    pub transactions: Arc<Vec<Transaction>>,
    /// Total fees and subsidy paid by the coinbase, in satoshis.
    pub coinbase_value: u64,
    /// The pool's script: what the coinbase pays unless it pays the window or a payee, and
    /// where donations and the window's rest go.
    pub pool_script: ScriptBuf,
    /// What the coinbase pays the PPLNS window directly (`coinbase_payouts = true`,
    /// `window_work`); `None`: it pays the pool's script, or a channel's own payee.
    pub coinbase_payouts: Option<Arc<CoinbasePayouts>>,
}

impl Work {
    /// Builds the work for a template.
    pub fn new(
        id: u64,
        template: BlockTemplate,
        cfg: &CoinbaseConfig,
    ) -> Result<Arc<Self>, MiningError> {
        let coinbase = CoinbaseParts::build(&template, cfg)?;
        let merkle_path = coinbase_merkle_path(&template.txids());
        Ok(Arc::new(Work {
            id,
            version: template.version.to_consensus() as u32,
            prev_hash: template.prev_hash,
            nbits: template.bits.to_consensus(),
            height: template.height,
            min_time: template.min_time,
            cur_time: template.cur_time.max(template.min_time),
            network_target: template.target(),
            coinbase,
            merkle_path,
            transactions: Arc::new(template.transactions),
            coinbase_value: template.coinbase_value.to_sat(),
            pool_script: cfg.payout_script.clone(),
            coinbase_payouts: None,
        }))
    }

    /// Merkle root for a full extranonce (channel prefix and miner part).
    #[inline]
    pub fn merkle_root(&self, extranonce_prefix: &[u8], extranonce: &[u8]) -> TxMerkleNode {
        let txid = self.coinbase.txid_with(extranonce_prefix, extranonce);
        fold_merkle_path(Txid::from_byte_array(txid), &self.merkle_path)
    }

    /// SHA-256d of a share's header on this work.
    #[inline]
    pub fn header_hash(
        &self,
        version: u32,
        merkle_root: &TxMerkleNode,
        ntime: u32,
        nonce: u32,
    ) -> [u8; 32] {
        crate::block::header::header_hash(
            version,
            self.prev_hash.as_byte_array(),
            merkle_root.as_byte_array(),
            ntime,
            self.nbits,
            nonce,
        )
    }

    /// The whole block for a winning share.
    pub fn assemble_block(
        &self,
        extranonce_prefix: &[u8],
        extranonce: &[u8],
        version: u32,
        ntime: u32,
        nonce: u32,
    ) -> Block {
        let coinbase = self
            .coinbase
            .transaction_with(extranonce_prefix, extranonce);
        let merkle_root = self.merkle_root(extranonce_prefix, extranonce);
        let header = Header {
            version: Version::from_consensus(version as i32),
            prev_blockhash: self.prev_hash,
            merkle_root,
            time: ntime,
            bits: CompactTarget::from_consensus(self.nbits),
            nonce,
        };
        let mut txdata = Vec::with_capacity(1 + self.transactions.len());
        txdata.push(coinbase);
        txdata.extend(self.transactions.iter().cloned());
        Block { header, txdata }
    }
}
