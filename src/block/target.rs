//! Targets and difficulty: 256-bit little-endian targets as SV2 carries them (U256), converted
//! to and from `bitcoin::Target`, with floating-point only where policy (vardiff) needs a ratio.
//! A hash is checked against a target only as `bitcoin::Target::is_met_by(BlockHash)`, which
//! cannot be called with a target and a hash swapped.

use crate::wire::U256;
use bitcoin::Target;

/// The difficulty-1 target (0x00000000ffff0000...), as a float.
const DIFF1: f64 = 26959535291011309493156476344723991336010898738574164086137773096960.0;
/// 2^256 as a float.
const TWO_256: f64 = 1.157_920_892_373_162e77;

/// A target as a float (for ratios and difficulty); exact to 53 bits.
pub fn target_to_f64(t: &U256) -> f64 {
    t.iter()
        .rev()
        .fold(0.0, |acc, &b| acc * 256.0 + f64::from(b))
}

/// The 256-bit integer nearest below `x` (clamped to [1, 2^256-1]); deterministic, so the
/// value sent to a miner is exactly the value its shares are checked against.
pub fn target_from_f64(x: f64) -> U256 {
    if x.is_nan() || x < 1.0 {
        let mut one = [0u8; 32];
        one[0] = 1;
        return one;
    }
    if x >= TWO_256 {
        return [0xff; 32];
    }
    // x = m * 2^e with m a 53-bit integer.
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1075;
    let mant = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let mut out = [0u8; 32];
    if exp < 0 {
        let v = mant >> (-exp) as u32;
        out[..8].copy_from_slice(&v.to_le_bytes());
        return out;
    }
    let byte_shift = (exp / 8) as usize;
    let bit_shift = (exp % 8) as u32;
    let wide = (mant as u128) << bit_shift;
    for (i, b) in wide.to_le_bytes().iter().enumerate() {
        if let Some(slot) = out.get_mut(byte_shift + i) {
            *slot = *b;
        }
    }
    out
}

/// Pool difficulty of a target: difficulty-1 target divided by it.
pub fn difficulty_of(t: &U256) -> f64 {
    DIFF1 / target_to_f64(t).max(1.0)
}

/// The target of a pool difficulty.
pub fn target_of_difficulty(difficulty: f64) -> U256 {
    target_from_f64(DIFF1 / difficulty.max(f64::MIN_POSITIVE))
}

/// Expected hashes to find one share at `t`: 2^256 / (t + 1).
pub fn work_of(t: &U256) -> f64 {
    TWO_256 / (target_to_f64(t) + 1.0)
}

/// The target at which `hashrate` (h/s) finds `shares_per_minute` shares a minute.
pub fn target_for_hashrate(hashrate: f64, shares_per_minute: f64) -> U256 {
    if hashrate.is_nan()
        || hashrate <= 0.0
        || shares_per_minute.is_nan()
        || shares_per_minute <= 0.0
    {
        return [0xff; 32];
    }
    let hashes_per_share = hashrate * 60.0 / shares_per_minute;
    target_from_f64(TWO_256 / hashes_per_share - 1.0)
}

/// Converts to rust-bitcoin's target type.
pub fn to_bitcoin_target(t: &U256) -> Target {
    Target::from_le_bytes(*t)
}

/// Converts from rust-bitcoin's target type.
pub fn from_bitcoin_target(t: Target) -> U256 {
    t.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converted_target_compares_hashes_as_le_integers() {
        use bitcoin::BlockHash;
        use bitcoin::hashes::Hash;
        let mut t = [0u8; 32];
        t[31] = 0x10;
        let target = to_bitcoin_target(&t);
        let mut h = [0xffu8; 32];
        h[31] = 0x0f;
        assert!(target.is_met_by(BlockHash::from_byte_array(h)));
        h[31] = 0x10;
        assert!(!target.is_met_by(BlockHash::from_byte_array(h)));
        assert!(target.is_met_by(BlockHash::from_byte_array(t)));
    }

    #[test]
    fn float_round_trip_is_close() {
        for x in [1.0, 255.0, 1e10, 1.5e40, 2.7e67, 1e76] {
            let t = target_from_f64(x);
            let back = target_to_f64(&t);
            assert!((back - x).abs() / x < 1e-12, "{x} -> {back}");
        }
    }

    #[test]
    fn difficulty_one_matches_bitcoin() {
        let diff1 = from_bitcoin_target(Target::MAX_ATTAINABLE_MAINNET);
        assert!((difficulty_of(&diff1) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn hashrate_target_gives_the_share_rate() {
        let t = target_for_hashrate(1e12, 18.0);
        let per_minute = 1e12 * 60.0 / work_of(&t);
        assert!((per_minute - 18.0).abs() < 1e-6);
    }
}
