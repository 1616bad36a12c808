//! Work built once per template and shared by every channel: the coinbase split, the merkle
//! path, the header fields, and the template's transactions for block assembly.

use std::sync::Arc;

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::{Block, BlockHash, CompactTarget, Transaction, TxMerkleNode};

use super::MiningError;
use super::coinbase::{CoinbaseConfig, CoinbaseParts};
use super::merkle::{coinbase_merkle_path, fold_merkle_path};
use super::target::from_bitcoin_target;
use crate::node::BlockTemplate;
use crate::wire::U256;

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
    pub network_target: U256,
    /// The coinbase, split.
    pub coinbase: CoinbaseParts,
    /// Merkle path of the coinbase, deepest first.
    pub merkle_path: Vec<[u8; 32]>,
    /// Transactions after the coinbase.
    pub transactions: Vec<Transaction>,
    /// Total fees and subsidy paid by the coinbase, in satoshis.
    pub coinbase_value: u64,
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
            network_target: from_bitcoin_target(template.target()),
            coinbase,
            merkle_path,
            transactions: template.transactions,
            coinbase_value: template.coinbase_value.to_sat(),
        }))
    }

    /// Merkle root for a full extranonce (channel prefix and miner part).
    #[inline]
    pub fn merkle_root(&self, extranonce_prefix: &[u8], extranonce: &[u8]) -> [u8; 32] {
        let txid = self.coinbase.txid_with(extranonce_prefix, extranonce);
        fold_merkle_path(txid, &self.merkle_path)
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
            merkle_root: TxMerkleNode::from_byte_array(merkle_root),
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

/// The 80-byte header of a share.
#[inline]
pub fn header_bytes(
    version: u32,
    prev_hash: &[u8; 32],
    merkle_root: &[u8; 32],
    ntime: u32,
    nbits: u32,
    nonce: u32,
) -> [u8; 80] {
    let mut h = [0u8; 80];
    h[0..4].copy_from_slice(&version.to_le_bytes());
    h[4..36].copy_from_slice(prev_hash);
    h[36..68].copy_from_slice(merkle_root);
    h[68..72].copy_from_slice(&ntime.to_le_bytes());
    h[72..76].copy_from_slice(&nbits.to_le_bytes());
    h[76..80].copy_from_slice(&nonce.to_le_bytes());
    h
}

/// SHA-256's initial state.
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    let block = *sha2::digest::generic_array::GenericArray::from_slice(block);
    sha2::compress256(state, &[block]);
}

/// SHA-256 state after the first 64 bytes of an 80-byte header (version, prev hash and 28
/// bytes of the merkle root): fixed per job and version, so each share hashes one block less.
pub fn header_midstate(header: &[u8; 80]) -> [u32; 8] {
    let mut state = SHA256_IV;
    let mut first = [0u8; 64];
    first.copy_from_slice(&header[..64]);
    compress(&mut state, &first);
    state
}

/// SHA-256d of an 80-byte header from its [`header_midstate`] and its last 16 bytes: exactly
/// two compressions, no hashing-engine bookkeeping.
#[inline]
pub fn sha256d_from_midstate(midstate: &[u32; 8], tail: &[u8; 16]) -> [u8; 32] {
    let mut state = *midstate;
    let mut block = [0u8; 64];
    block[..16].copy_from_slice(tail);
    block[16] = 0x80;
    block[56..].copy_from_slice(&(80u64 * 8).to_be_bytes());
    compress(&mut state, &block);
    let mut second = [0u8; 64];
    for (chunk, word) in second[..32].chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    second[32] = 0x80;
    second[56..].copy_from_slice(&(32u64 * 8).to_be_bytes());
    let mut out_state = SHA256_IV;
    compress(&mut out_state, &second);
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(out_state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::{Hash, sha256d};

    #[test]
    fn midstate_hash_equals_sha256d_of_the_header() {
        for seed in 0u8..20 {
            let header: [u8; 80] = std::array::from_fn(|i| (i as u8).wrapping_mul(31) ^ seed);
            let mut tail = [0u8; 16];
            tail.copy_from_slice(&header[64..]);
            assert_eq!(
                sha256d_from_midstate(&header_midstate(&header), &tail),
                sha256d::Hash::hash(&header).to_byte_array()
            );
        }
    }
}
