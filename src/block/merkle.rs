//! The merkle path of the coinbase (leaf 0) and folding a txid up that path. The path stays
//! raw bytes (it is what NewExtendedMiningJob carries and what miners fold); the txid going in
//! and the root coming out are rust-bitcoin's `Txid` and `TxMerkleNode`.

use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{TxMerkleNode, Txid};

/// sha256d(left || right), the merkle tree's node hash.
#[inline]
pub fn merkle_node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(left);
    buf[32..].copy_from_slice(right);
    sha256d::Hash::hash(&buf).to_byte_array()
}

/// The siblings of the coinbase, deepest first, for a block whose other transactions have
/// `txids` (in block order). This is `merkle_path` of NewExtendedMiningJob.
pub fn coinbase_merkle_path(txids: &[Txid]) -> Vec<[u8; 32]> {
    let mut path = Vec::new();
    // The level's nodes except the leftmost one (which depends on the coinbase).
    let mut level: Vec<[u8; 32]> = txids.iter().map(|t| t.to_byte_array()).collect();
    while !level.is_empty() {
        path.push(level[0]);
        // Pair (coinbase-branch, level[0]) is replaced by the branch; pair up the rest.
        let rest = &level[1..];
        let mut next = Vec::with_capacity(rest.len().div_ceil(2));
        for pair in rest.chunks(2) {
            let right = pair.get(1).unwrap_or(&pair[0]);
            next.push(merkle_node(&pair[0], right));
        }
        level = next;
    }
    path
}

/// Folds a coinbase txid up the path into the merkle root.
#[inline]
pub fn fold_merkle_path(coinbase_txid: Txid, path: &[[u8; 32]]) -> TxMerkleNode {
    TxMerkleNode::from_byte_array(
        path.iter()
            .fold(coinbase_txid.to_byte_array(), |acc, h| merkle_node(&acc, h)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_folds_to_rust_bitcoins_root() {
        for n in 0..40usize {
            let leaves: Vec<Txid> = (0..=n)
                .map(|i| Txid::hash(&(i as u64).to_le_bytes()))
                .collect();
            let expected = bitcoin::merkle_tree::calculate_root(
                leaves
                    .iter()
                    .map(|t| TxMerkleNode::from_raw_hash(t.to_raw_hash())),
            );
            let path = coinbase_merkle_path(&leaves[1..]);
            let root = fold_merkle_path(leaves[0], &path);
            assert_eq!(Some(root), expected, "{n} transactions after the coinbase");
        }
    }
}
