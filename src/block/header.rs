//! The 80-byte block header as raw bytes and its SHA-256d: the hashing inner loop of share
//! validation, the one place raw header arrays are built and hashed (a whole
//! [`bitcoin::block::Header`] is built only for a block being assembled).

use bitcoin::hashes::{Hash, sha256d};

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

/// SHA-256d of an 80-byte header (internal byte order, as compared with targets).
#[inline]
pub fn hash_header_bytes(header: &[u8; 80]) -> [u8; 32] {
    sha256d::Hash::hash(header).to_byte_array()
}

/// SHA-256d of the header with these fields.
#[inline]
pub fn header_hash(
    version: u32,
    prev_hash: &[u8; 32],
    merkle_root: &[u8; 32],
    ntime: u32,
    nbits: u32,
    nonce: u32,
) -> [u8; 32] {
    hash_header_bytes(&header_bytes(
        version,
        prev_hash,
        merkle_root,
        ntime,
        nbits,
        nonce,
    ))
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

    #[test]
    fn midstate_hash_equals_sha256d_of_the_header() {
        for seed in 0u8..20 {
            let header: [u8; 80] = std::array::from_fn(|i| (i as u8).wrapping_mul(31) ^ seed);
            let mut tail = [0u8; 16];
            tail.copy_from_slice(&header[64..]);
            assert_eq!(
                sha256d_from_midstate(&header_midstate(&header), &tail),
                hash_header_bytes(&header)
            );
        }
    }
}
