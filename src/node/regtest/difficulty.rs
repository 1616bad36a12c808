//! The embedded chain's difficulty: fixed, or adapted so that blocks come at an aimed interval.
//!
//! A fixed target on regtest's powLimit makes every other hash a block: a fresh CPU miner's
//! shares are all blocks, and about half of them arrive after the next block and are refused as
//! stale. An adaptive chain behaves like a real one instead, by a rule as simple as testnet's:
//!
//! * Every [`RETARGET_INTERVAL`] blocks (at heights that are multiples of it) the target is
//!   the previous block's, scaled by how long the last [`RETARGET_INTERVAL`] blocks took
//!   (the time between the headers `RETARGET_INTERVAL + 1` and 1 below the new block) over
//!   how long they should have taken (`RETARGET_INTERVAL` × the interval). The measured time
//!   is clamped to between a sixteenth and four times the aim: one retarget makes the target
//!   at most four times easier, as Bitcoin's, and at most sixteen times harder, because a
//!   chain starts at powLimit, millions of times easier than any miner's aim (block times
//!   have whole seconds, so ten blocks within a second measure 0 s and take the full step).
//! * Between retargets a block's target is the previous block's.
//! * The target is never easier than the chain's configured `bits` (its powLimit).
//!
//! Unlike Bitcoin's rule, the window spans exactly `RETARGET_INTERVAL` block intervals (no
//! off-by-one), and the arithmetic keeps the top 64 bits of the target: the compact form keeps
//! 23, so nothing is lost, and regtest's powLimit times four cannot overflow 256 bits (which
//! rust-bitcoin's `from_next_work_required` would). It is a function of the headers alone:
//! every node computes the same bits, and a block whose bits differ is refused.
//!
//! From a fresh node (history blocks ten minutes apart) the first retargets see a long
//! timespan and stay at powLimit; from there a miner reaches the aim in about
//! `log16(its hash rate × interval / 2)` retargets (a 3 MH/s CPU miner at 10 s: six, sixty
//! blocks). The pool sees a block only when a share meets it, so until then blocks come at
//! most as often as shares.

use bitcoin::block::Header;
use bitcoin::{CompactTarget, Target};

/// Blocks between two retargets, and the window they are measured over.
pub const RETARGET_INTERVAL: u32 = 10;
/// One retarget makes the target at most this many times harder (easier: four).
pub const MAX_HARDENING: u64 = 16;

/// The bits the block after `headers` (genesis first, the tip last) must carry: `limit_bits`
/// when `interval_secs` is 0 (a fixed target), else the adaptive rule of the module docs.
pub(super) fn next_bits(headers: &[Header], limit_bits: u32, interval_secs: u32) -> CompactTarget {
    let limit = CompactTarget::from_consensus(limit_bits);
    let Some(tip) = headers.last() else {
        return limit;
    };
    if interval_secs == 0 {
        return limit;
    }
    let limit_target = Target::from_compact(limit);
    // Blocks made before the rule applied (the history, at regtest's powLimit) count as the limit.
    let (prev_bits, prev_target) = match Target::from_compact(tip.bits) {
        t if t <= limit_target => (tip.bits, t),
        _ => (limit, limit_target),
    };
    let height = headers.len();
    let window = RETARGET_INTERVAL as usize;
    if !height.is_multiple_of(window) || height <= window {
        return prev_bits;
    }
    let first = &headers[height - 1 - window];
    // In 1/MAX_HARDENING seconds, so that the clamp is exact.
    let aim = u64::from(RETARGET_INTERVAL) * u64::from(interval_secs) * MAX_HARDENING;
    let took = (u64::from(tip.time.saturating_sub(first.time)) * MAX_HARDENING)
        .clamp(aim / MAX_HARDENING, aim * 4);
    match scale(prev_target, took, aim) {
        Some(t) if t < limit_target => t.to_compact_lossy(),
        _ => limit,
    }
}

/// `target × num / den`, keeping the target's top 64 bits (the compact form keeps 23), or
/// `None` above 2^256.
fn scale(target: Target, num: u64, den: u64) -> Option<Target> {
    let be = target.to_be_bytes();
    let mut hi = [0u8; 16];
    let mut lo = [0u8; 16];
    hi.copy_from_slice(&be[..16]);
    lo.copy_from_slice(&be[16..]);
    let value = (u128::from_be_bytes(hi), u128::from_be_bytes(lo));
    let bits = significant_bits(value);
    let shift = bits.saturating_sub(64);
    let top = shr(value, shift).1 as u64;
    let scaled = u128::from(top) * u128::from(num) / u128::from(den.max(1));
    if 128 - scaled.leading_zeros() + shift > 256 {
        return None;
    }
    let (h, l) = shl((0, scaled), shift);
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&h.to_be_bytes());
    out[16..].copy_from_slice(&l.to_be_bytes());
    Some(Target::from_be_bytes(out))
}

/// Bits needed to write the 256-bit number `(high, low)`.
fn significant_bits((hi, lo): (u128, u128)) -> u32 {
    if hi != 0 {
        256 - hi.leading_zeros()
    } else {
        128 - lo.leading_zeros()
    }
}

fn shr((hi, lo): (u128, u128), n: u32) -> (u128, u128) {
    match n {
        0 => (hi, lo),
        1..128 => (hi >> n, (lo >> n) | (hi << (128 - n))),
        128..256 => (0, hi >> (n - 128)),
        _ => (0, 0),
    }
}

fn shl((hi, lo): (u128, u128), n: u32) -> (u128, u128) {
    match n {
        0 => (hi, lo),
        1..128 => ((hi << n) | (lo >> (128 - n)), lo << n),
        128..256 => (lo << (n - 128), 0),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::regtest::REGTEST_BITS;
    use bitcoin::block::Version;
    use bitcoin::hashes::Hash;
    use bitcoin::{BlockHash, TxMerkleNode};

    fn header(time: u32, bits: CompactTarget) -> Header {
        Header {
            version: Version::from_consensus(0x2000_0000),
            prev_blockhash: BlockHash::all_zeros(),
            merkle_root: TxMerkleNode::all_zeros(),
            time,
            bits,
            nonce: 0,
        }
    }

    #[test]
    fn scale_multiplies_and_divides_without_overflow() {
        let limit = Target::from_compact(CompactTarget::from_consensus(REGTEST_BITS));
        assert_eq!(scale(limit, 1, 1), Some(limit));
        assert_eq!(scale(limit, 4, 1), None, "powLimit × 4 is above 2^256");
        let quarter = scale(limit, 1, 4).unwrap();
        assert_eq!(scale(quarter, 4, 1), Some(limit));
        let one = Target::from_be_bytes({
            let mut b = [0u8; 32];
            b[31] = 100;
            b
        });
        assert_eq!(
            scale(one, 3, 2).unwrap().to_be_bytes()[31],
            150,
            "small targets are exact"
        );
    }

    #[test]
    fn fixed_target_when_the_interval_is_zero() {
        let headers: Vec<Header> = (0..40)
            .map(|i| header(i, CompactTarget::from_consensus(REGTEST_BITS)))
            .collect();
        assert_eq!(
            next_bits(&headers, 0x1d00_ffff, 0).to_consensus(),
            0x1d00_ffff
        );
    }

    #[test]
    fn retargets_only_at_multiples_of_the_interval_and_within_a_factor_of_four() {
        let limit = CompactTarget::from_consensus(REGTEST_BITS);
        let start = CompactTarget::from_consensus(0x1e00_ffff);
        // Blocks one second apart, aiming at 10 s: ten times harder at the retarget.
        let mut headers: Vec<Header> = (0..20).map(|i| header(1000 + i, start)).collect();
        assert_eq!(next_bits(&headers[..19], REGTEST_BITS, 10), start);
        let harder = Target::from_compact(next_bits(&headers, REGTEST_BITS, 10));
        assert_eq!(
            harder,
            Target::from_compact(
                scale(Target::from_compact(start), 10, 100)
                    .unwrap()
                    .to_compact_lossy()
            )
        );
        // All within one second: sixteen times harder, not more.
        for h in headers.iter_mut() {
            h.time = 1000;
        }
        let hardest = Target::from_compact(next_bits(&headers, REGTEST_BITS, 10));
        assert_eq!(
            hardest,
            Target::from_compact(
                scale(Target::from_compact(start), 1, 16)
                    .unwrap()
                    .to_compact_lossy()
            )
        );
        // Exactly on time: unchanged.
        for (i, h) in headers.iter_mut().enumerate() {
            h.time = 1000 + 10 * i as u32;
        }
        assert_eq!(next_bits(&headers, REGTEST_BITS, 10), start);
        // Twice as slow: twice the target.
        for (i, h) in headers.iter_mut().enumerate() {
            h.time = 1000 + 20 * i as u32;
        }
        let easier = Target::from_compact(next_bits(&headers, REGTEST_BITS, 10));
        assert_eq!(easier, scale(Target::from_compact(start), 2, 1).unwrap());
        // Hours late: four times easier, not more.
        headers[19].time += 100_000;
        let easiest = Target::from_compact(next_bits(&headers, REGTEST_BITS, 10));
        assert_eq!(easiest, scale(Target::from_compact(start), 4, 1).unwrap());
        // Never easier than the limit, even after hours without a block.
        for h in headers.iter_mut() {
            h.bits = limit;
        }
        headers[19].time += 100_000;
        assert_eq!(next_bits(&headers, REGTEST_BITS, 10), limit);
        // Clocks going backwards do not panic: the shortest timespan counts.
        headers[19].time = 0;
        assert!(
            Target::from_compact(next_bits(&headers, REGTEST_BITS, 10))
                < Target::from_compact(limit)
        );
    }
}
