//! The PPLNS split, pure: a block's reward over the last N units of credited difficulty
//! before it, in exact integer arithmetic, so that anyone holding the same shares gets the
//! same satoshis.
//!
//! The rules, in order:
//! 1. Each share weighs its difficulty in fixed point: `floor(difficulty × 2^64)` as a `u128`
//!    ([`weight_of`]; exact for every f64 the ledger stores, since × 2^64 only moves the
//!    exponent). The window is `N = floor(window_difficulty × 2^64)`.
//! 2. Shares are taken newest first (highest id first, whatever order they are given in),
//!    from the block's own share back, until their weights reach N; the oldest one taken
//!    counts only the part that fills N exactly. With fewer shares, the window is what there
//!    is.
//! 3. The fee is `floor(reward × fee_ppm / 1,000,000)` (ppm: millionths, from the pool's
//!    percent); the rest, D, is split: each user gets `floor(D × W_user / W)`, W being the
//!    weight counted.
//! 4. Leftover satoshis from rounding (fewer than the users) go one each to the users with
//!    the largest remainders of that division, ties to the smaller user name: every user is
//!    within one satoshi of their exact part, and the sum of payouts and fee is the reward.
//! 5. The part of [`DONATION_USER`](super::identity::DONATION_USER) (full donations) is
//!    added to the fee.
//!
//! Rules 1 and 2 are [`count`] (a window's per-user weights and bounds), rules 3 to 5
//! [`divide`] (a reward over them); [`split`] is the one after the other, so a window counted
//! once and divided for several rewards (each template's, with payouts in the coinbase) gives
//! the satoshis a split of the same shares gives, bit for bit.

use std::collections::BTreeMap;

use super::identity::DONATION_USER;
use crate::ledger::StoredShare;

/// 2^64 as f64: the fixed point of weights.
const WEIGHT_ONE: f64 = 18_446_744_073_709_551_616.0;

/// One share as the split needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowShare<'a> {
    /// Its ledger id (newer shares have higher ids).
    pub id: u64,
    /// Who it pays.
    pub user: &'a str,
    /// Its credited difficulty.
    pub difficulty: f64,
}

impl<'a> From<&'a StoredShare> for WindowShare<'a> {
    fn from(s: &'a StoredShare) -> Self {
        WindowShare {
            id: s.id,
            user: &s.record.user,
            difficulty: s.record.difficulty,
        }
    }
}

/// What is split and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitTerms {
    /// The window's size in difficulty (a multiple of the network difficulty).
    pub window_difficulty: f64,
    /// The block's reward (satoshis).
    pub reward_sat: u64,
    /// The pool's fee in millionths of the reward.
    pub fee_ppm: u32,
}

/// One user's part of the split.
#[derive(Debug, Clone, PartialEq)]
pub struct UserPart {
    /// The user.
    pub user: String,
    /// The weight of their shares counted (difficulty × 2^64).
    pub weight: u128,
    /// Satoshis, leftover included.
    pub amount_sat: u64,
    /// Whether one leftover satoshi was added to `amount_sat`.
    pub got_leftover: bool,
}

/// A split, with every number that went into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// N (difficulty × 2^64).
    pub window_weight: u128,
    /// W, the weight counted (N, or less when the shares run out).
    pub counted_weight: u128,
    /// Ids of the oldest and newest share counted (0, 0 if none).
    pub first_share_id: u64,
    /// Newest share counted.
    pub last_share_id: u64,
    /// Shares counted (the oldest perhaps in part).
    pub shares_counted: usize,
    /// The oldest share's weight counted, if only part of it was.
    pub partial_weight: Option<u128>,
    /// The fee by the pool's percent, before donations and without leftovers.
    pub fee_by_percent_sat: u64,
    /// Satoshis given out as leftovers.
    pub leftover_sat: u64,
    /// Full donations' part, added to the fee.
    pub donated_sat: u64,
    /// The fee in all: by percent plus donations.
    pub fee_sat: u64,
    /// Users paid, by name (donations excluded).
    pub users: Vec<UserPart>,
}

/// Why the shares cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The same share id twice: a share counted twice.
    #[error("share {id} appears twice")]
    DuplicateShare {
        /// The id.
        id: u64,
    },
    /// A fee of more than 100%.
    #[error("fee of {fee_ppm} ppm is more than the reward")]
    FeeTooHigh {
        /// The fee.
        fee_ppm: u32,
    },
}

/// A share's weight: its difficulty in fixed point (× 2^64, truncated; NaN or negative: 0).
pub fn weight_of(difficulty: f64) -> u128 {
    // `as` saturates and maps NaN to 0; × 2^64 is exact in binary floating point.
    (difficulty * WEIGHT_ONE) as u128
}

/// A weight back in difficulty (for display and the ledger's f64 columns).
pub fn difficulty_of_weight(weight: u128) -> f64 {
    weight as f64 / WEIGHT_ONE
}

/// The fee percent as millionths of the reward (rounded to the nearest; clamped to 0..=100%).
pub fn fee_ppm(percent: f64) -> u32 {
    (percent.clamp(0.0, 100.0) * 10_000.0).round() as u32
}

/// `floor(a × b / c)` and the remainder, exactly (`b <= c`, `c > 0`): a 192-bit product
/// divided by long division.
fn mul_div(a: u64, b: u128, c: u128) -> (u64, u128) {
    debug_assert!(c > 0 && b <= c);
    let (b_hi, b_lo) = (b >> 64, b & u128::from(u64::MAX));
    let (p_lo, p_hi) = (u128::from(a) * b_lo, u128::from(a) * b_hi);
    // product = p_hi × 2^64 + p_lo, as (hi, lo) 128-bit halves.
    let (lo, carry) = p_lo.overflowing_add(p_hi << 64);
    let hi = (p_hi >> 64) + u128::from(carry);
    let mut remainder: u128 = 0;
    let mut quotient: u128 = 0;
    for i in (0..256).rev() {
        let bit = if i >= 128 {
            (hi >> (i - 128)) & 1
        } else {
            (lo >> i) & 1
        };
        let overflow = remainder >> 127 == 1;
        remainder = (remainder << 1) | bit;
        quotient <<= 1;
        if overflow || remainder >= c {
            remainder = remainder.wrapping_sub(c);
            quotient |= 1;
        }
    }
    // b <= c, so the quotient is at most a.
    (quotient as u64, remainder)
}

/// A window's shares counted (rules 1 and 2 of the module comment): each user's weight in
/// it, and the window's bounds. What a split depends on besides the reward and the fee, so a
/// window counted once can be divided for any reward ([`divide`]): the coinbase of every
/// template pays the same counted window (`coinbase_payouts`).
#[derive(Debug, Clone, PartialEq)]
pub struct CountedWindow {
    /// N (difficulty × 2^64).
    pub window_weight: u128,
    /// W, the weight counted (N, or less when the shares run out).
    pub counted_weight: u128,
    /// Ids of the oldest and newest share counted (0, 0 if none).
    pub first_share_id: u64,
    /// Newest share counted.
    pub last_share_id: u64,
    /// Shares counted (the oldest perhaps in part).
    pub shares_counted: usize,
    /// The oldest share's weight counted, if only part of it was.
    pub partial_weight: Option<u128>,
    /// Each user's weight counted, by user name (users whose weight is 0 included).
    pub by_user: Vec<(String, u128)>,
}

/// Counts `shares` (any order) into a window of `window_difficulty`: rules 1 and 2.
pub fn count<'a>(
    shares: impl IntoIterator<Item = WindowShare<'a>>,
    window_difficulty: f64,
) -> Result<CountedWindow, SplitError> {
    let mut shares: Vec<WindowShare<'a>> = shares.into_iter().collect();
    shares.sort_unstable_by_key(|s| std::cmp::Reverse(s.id));
    if let Some(w) = shares.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(SplitError::DuplicateShare { id: w[0].id });
    }
    let window_weight = weight_of(window_difficulty);
    let mut counted: u128 = 0;
    let mut by_user: BTreeMap<&str, u128> = BTreeMap::new();
    let (mut first, mut last, mut n, mut partial) = (0, 0, 0, None);
    for s in &shares {
        if counted >= window_weight {
            break;
        }
        let w = weight_of(s.difficulty);
        let take = w.min(window_weight - counted);
        if take < w {
            partial = Some(take);
        }
        counted += take;
        *by_user.entry(s.user).or_default() += take;
        if n == 0 {
            last = s.id;
        }
        first = s.id;
        n += 1;
    }
    Ok(CountedWindow {
        window_weight,
        counted_weight: counted,
        first_share_id: first,
        last_share_id: last,
        shares_counted: n,
        partial_weight: partial,
        by_user: by_user
            .into_iter()
            .map(|(user, weight)| (user.to_owned(), weight))
            .collect(),
    })
}

/// Divides `reward_sat` over a counted window, the pool taking `fee_ppm`: rules 3 to 5.
pub fn divide(window: &CountedWindow, reward_sat: u64, fee_ppm: u32) -> Result<Split, SplitError> {
    if fee_ppm > 1_000_000 {
        return Err(SplitError::FeeTooHigh { fee_ppm });
    }
    let counted = window.counted_weight;
    let fee_by_percent = mul_div(reward_sat, u128::from(fee_ppm), 1_000_000).0;
    let distributable = reward_sat - fee_by_percent;
    let mut parts: Vec<(UserPart, u128)> = window
        .by_user
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|(user, weight)| {
            let (amount, rem) = mul_div(distributable, *weight, counted);
            let part = UserPart {
                user: user.clone(),
                weight: *weight,
                amount_sat: amount,
                got_leftover: false,
            };
            (part, rem)
        })
        .collect();
    let paid: u64 = parts.iter().map(|(p, _)| p.amount_sat).sum();
    // No shares: nothing is paid to users, the reward is the pool's.
    let leftover = if parts.is_empty() {
        0
    } else {
        distributable - paid
    };
    let mut order: Vec<usize> = (0..parts.len()).collect();
    // Largest remainder first; `parts` is sorted by user, and the sort is stable.
    order.sort_by(|&a, &b| parts[b].1.cmp(&parts[a].1));
    for &i in order.iter().take(leftover as usize) {
        parts[i].0.amount_sat += 1;
        parts[i].0.got_leftover = true;
    }
    let mut users: Vec<UserPart> = parts.into_iter().map(|(p, _)| p).collect();
    let donated: u64 = users
        .iter()
        .filter(|p| p.user == DONATION_USER)
        .map(|p| p.amount_sat)
        .sum();
    users.retain(|p| p.user != DONATION_USER);
    let unpaid = if users.is_empty() && donated == 0 {
        distributable
    } else {
        0
    };
    Ok(Split {
        window_weight: window.window_weight,
        counted_weight: counted,
        first_share_id: window.first_share_id,
        last_share_id: window.last_share_id,
        shares_counted: window.shares_counted,
        partial_weight: window.partial_weight,
        fee_by_percent_sat: fee_by_percent,
        leftover_sat: leftover,
        donated_sat: donated,
        fee_sat: fee_by_percent + donated + unpaid,
        users,
    })
}

/// Splits `terms.reward_sat` over `shares` (any order; see the module comment): [`count`]
/// then [`divide`].
pub fn split<'a>(
    shares: impl IntoIterator<Item = WindowShare<'a>>,
    terms: &SplitTerms,
) -> Result<Split, SplitError> {
    if terms.fee_ppm > 1_000_000 {
        return Err(SplitError::FeeTooHigh {
            fee_ppm: terms.fee_ppm,
        });
    }
    divide(
        &count(shares, terms.window_difficulty)?,
        terms.reward_sat,
        terms.fee_ppm,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(id: u64, user: &str, difficulty: f64) -> WindowShare<'_> {
        WindowShare {
            id,
            user,
            difficulty,
        }
    }

    fn terms(window: f64, reward: u64, fee_ppm: u32) -> SplitTerms {
        SplitTerms {
            window_difficulty: window,
            reward_sat: reward,
            fee_ppm,
        }
    }

    fn total(sp: &Split) -> u64 {
        sp.fee_sat + sp.users.iter().map(|u| u.amount_sat).sum::<u64>()
    }

    #[test]
    fn mul_div_is_exact() {
        assert_eq!(mul_div(10, 1, 3), (3, 1));
        assert_eq!(mul_div(u64::MAX, u128::MAX, u128::MAX), (u64::MAX, 0));
        assert_eq!(
            mul_div(u64::MAX, u128::MAX - 1, u128::MAX),
            (u64::MAX - 1, u128::MAX - u128::from(u64::MAX))
        );
        let c = (1u128 << 100) + 7;
        let (q, r) = mul_div(1_000_000_007, c / 3, c);
        assert_eq!(q, 333_333_335);
        assert!(r < c);
    }

    #[test]
    fn the_oldest_share_counts_in_part_and_the_window_is_exact() {
        // Window 10: newest 4 + 4, then 4 of which 2 count; the oldest is outside.
        let shares = [
            s(4, "a", 4.0),
            s(3, "b", 4.0),
            s(2, "a", 4.0),
            s(1, "b", 4.0),
        ];
        let sp = split(shares, &terms(10.0, 1_000, 0)).unwrap();
        assert_eq!(sp.counted_weight, weight_of(10.0));
        assert_eq!(
            (sp.first_share_id, sp.last_share_id, sp.shares_counted),
            (2, 4, 3)
        );
        assert_eq!(sp.partial_weight, Some(weight_of(2.0)));
        let amounts: Vec<_> = sp
            .users
            .iter()
            .map(|u| (u.user.as_str(), u.amount_sat))
            .collect();
        assert_eq!(amounts, [("a", 600), ("b", 400)]);
    }

    #[test]
    fn fee_leftover_and_donations() {
        // Three equal users, 100 sat, 1% fee: 99 split 33 each, no leftover.
        let shares = [s(3, "a", 1.0), s(2, "b", 1.0), s(1, "c", 1.0)];
        let sp = split(shares, &terms(100.0, 100, 10_000)).unwrap();
        assert_eq!((sp.fee_sat, sp.leftover_sat), (1, 0));
        // 100 sat, no fee: 33.33 each, one leftover satoshi to the tie's smallest name.
        let sp = split(shares, &terms(100.0, 100, 0)).unwrap();
        assert_eq!(sp.leftover_sat, 1);
        let a = &sp.users[0];
        assert_eq!(
            (a.user.as_str(), a.amount_sat, a.got_leftover),
            ("a", 34, true)
        );
        assert_eq!(total(&sp), 100);
        // A full donation's part goes to the fee.
        let shares = [s(2, DONATION_USER, 1.0), s(1, "b", 1.0)];
        let sp = split(shares, &terms(100.0, 1000, 0)).unwrap();
        assert_eq!((sp.donated_sat, sp.fee_sat, sp.users.len()), (500, 500, 1));
        // No shares: the pool keeps the reward.
        let sp = split([], &terms(100.0, 1000, 10_000)).unwrap();
        assert_eq!((sp.fee_sat, sp.users.len()), (1000, 0));
    }

    #[test]
    fn a_share_counted_twice_is_refused() {
        let shares = [s(2, "a", 1.0), s(1, "b", 1.0), s(2, "a", 1.0)];
        assert_eq!(
            split(shares, &terms(100.0, 1000, 0)),
            Err(SplitError::DuplicateShare { id: 2 })
        );
    }

    fn arb_shares() -> impl Strategy<Value = Vec<(u64, u8, f64)>> {
        proptest::collection::vec((1u64..10_000, 0u8..6, 1e-9f64..1e6), 0..60).prop_map(|v| {
            let mut seen = std::collections::HashSet::new();
            v.into_iter()
                .filter(|(id, _, _)| seen.insert(*id))
                .collect()
        })
    }

    const USERS: [&str; 6] = ["a", "b", "c", "d", "e", DONATION_USER];

    proptest! {
        #[test]
        fn sums_are_exact_and_parts_proportional(
            shares in arb_shares(),
            window in 1e-6f64..1e7,
            reward in 0u64..2_100_000_000_000_000,
            fee in 0u32..=1_000_000,
        ) {
            let input: Vec<_> = shares.iter().map(|&(id, u, d)| s(id, USERS[u as usize], d)).collect();
            let sp = split(input.clone(), &terms(window, reward, fee)).unwrap();
            prop_assert_eq!(total(&sp), reward);
            prop_assert!(sp.counted_weight <= sp.window_weight);
            prop_assert!(sp.leftover_sat < 6);
            let distributable = reward - sp.fee_by_percent_sat;
            for u in &sp.users {
                // Within one satoshi of the exact part.
                let exact = distributable as f64 * (u.weight as f64 / sp.counted_weight as f64);
                prop_assert!((u.amount_sat as f64 - exact).abs() <= 1.0 + exact * 1e-15, "{} vs {}", u.amount_sat, exact);
                let (floor, _) = mul_div(distributable, u.weight, sp.counted_weight);
                prop_assert!(u.amount_sat == floor + u64::from(u.got_leftover));
            }
            // Counted once, divided for this reward: the same split.
            let counted = count(input.clone(), window).unwrap();
            prop_assert_eq!(&divide(&counted, reward, fee).unwrap(), &sp);
            // Order independence: the input's order does not matter.
            let mut reversed = input.clone();
            reversed.reverse();
            prop_assert_eq!(split(reversed, &terms(window, reward, fee)).unwrap(), sp.clone());
            // A whole window: the shares beyond it change nothing.
            if sp.counted_weight == sp.window_weight {
                let mut more = input.clone();
                more.push(s(0, "z", 1e9));
                prop_assert_eq!(split(more, &terms(window, reward, fee)).unwrap(), sp);
            }
        }
    }
}
