//! Payouts in the coinbase (`coinbase_payouts = true`, issue 15 item 4), the pure part: which
//! outputs a template's coinbase carries to pay the current PPLNS window's users directly.
//!
//! The rules, in order (the split is [`pplns::split`]'s, so the amounts are the ones a PPLNS
//! settlement of a block with that reward would credit):
//! 1. the window's shares (channels paid in their own coinbase and solo users left out, as in
//!    every window) are split: the fee, then each user's part;
//! 2. a user gets an output when it has a payout address and its part is at least `dust_sat`
//!    and at least the network's dust for its script (`ScriptBuf::minimal_non_dust`: an
//!    output below it would make the block's coinbase unspendable by relay rules);
//! 3. at most `max_outputs` of them, the largest parts first (ties: the smaller user name);
//! 4. everything else (the fee, donations, users without an address, dust, users past the
//!    cap) goes to the pool's script, the last payout output.
//!
//! The outputs are ordered as taken (largest first), the pool's last; amounts sum to the
//! reward exactly. The split depends only on the window's per-user weights, so a window is
//! counted once ([`pplns::count`]) and each template's reward divided over it
//! ([`outputs_of_split`]); `mining::window_work` builds the work from it.

use bitcoin::ScriptBuf;

use super::pplns::{self, Split, SplitError, SplitTerms, WindowShare};

/// The limits of [`coinbase_outputs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoinbaseOutputTerms {
    /// The split's terms: the window, the template's reward, the pool's fee.
    pub split: SplitTerms,
    /// Parts below this are not paid out (they go to the pool's script).
    pub dust_sat: u64,
    /// Most users paid in one coinbase.
    pub max_outputs: usize,
}

/// One output of a coinbase paying the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinbaseOutput {
    /// Who it pays: the ledger user, or `None` for the pool's output.
    pub user: Option<String>,
    /// The script paid.
    pub script_pubkey: ScriptBuf,
    /// Satoshis.
    pub amount_sat: u64,
}

/// The outputs paying the window's users (see the module comment); `address_of` names a
/// user's payout script (an address user's own, an account's from `[users]`), `None` when it
/// has none.
pub fn coinbase_outputs<'a>(
    shares: impl IntoIterator<Item = WindowShare<'a>>,
    terms: &CoinbaseOutputTerms,
    pool_script: &ScriptBuf,
    address_of: impl Fn(&str) -> Option<ScriptBuf>,
) -> Result<Vec<CoinbaseOutput>, SplitError> {
    let split = pplns::split(shares, &terms.split)?;
    Ok(outputs_of_split(
        &split,
        terms.split.reward_sat,
        terms.dust_sat,
        terms.max_outputs,
        pool_script,
        address_of,
    ))
}

/// Rules 2 to 4 on a split of `reward_sat` already made (see [`coinbase_outputs`]).
pub fn outputs_of_split(
    split: &Split,
    reward_sat: u64,
    dust_sat: u64,
    max_outputs: usize,
    pool_script: &ScriptBuf,
    address_of: impl Fn(&str) -> Option<ScriptBuf>,
) -> Vec<CoinbaseOutput> {
    let mut paid: Vec<CoinbaseOutput> = split
        .users
        .iter()
        .filter(|u| u.amount_sat >= dust_sat.max(1))
        .filter_map(|u| {
            let script_pubkey = address_of(&u.user)?;
            (u.amount_sat >= script_pubkey.minimal_non_dust().to_sat()).then(|| CoinbaseOutput {
                user: Some(u.user.clone()),
                script_pubkey,
                amount_sat: u.amount_sat,
            })
        })
        .collect();
    paid.sort_by(|a, b| b.amount_sat.cmp(&a.amount_sat).then(a.user.cmp(&b.user)));
    paid.truncate(max_outputs);
    let to_users: u64 = paid.iter().map(|o| o.amount_sat).sum();
    let to_pool = reward_sat - to_users;
    if to_pool > 0 || paid.is_empty() {
        paid.push(CoinbaseOutput {
            user: None,
            script_pubkey: pool_script.clone(),
            amount_sat: to_pool,
        });
    }
    paid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payout::identity::DONATION_USER;

    fn share(id: u64, user: &str, difficulty: f64) -> WindowShare<'_> {
        WindowShare {
            id,
            user,
            difficulty,
        }
    }

    fn script(n: u8) -> ScriptBuf {
        ScriptBuf::from_bytes(vec![0x51, n])
    }

    #[test]
    fn the_window_is_paid_by_address_above_dust_up_to_the_cap_the_rest_to_the_pool() {
        let shares = [
            share(1, "a", 5.0),
            share(2, "b", 3.0),
            share(3, "noaddr", 1.0),
            share(4, "dust", 0.0001),
            share(5, DONATION_USER, 1.0),
        ];
        let terms = CoinbaseOutputTerms {
            split: SplitTerms {
                window_difficulty: 1e9,
                reward_sat: 1_000_000,
                fee_ppm: 10_000,
            },
            dust_sat: 100,
            max_outputs: 8,
        };
        let pool = script(0);
        let address_of = |u: &str| match u {
            "a" => Some(script(1)),
            "b" => Some(script(2)),
            "dust" => Some(script(3)),
            _ => None,
        };
        let outs = coinbase_outputs(shares, &terms, &pool, address_of).unwrap();
        let split = pplns::split(shares, &terms.split).unwrap();
        let part = |u: &str| split.users.iter().find(|p| p.user == u).unwrap().amount_sat;
        assert_eq!(
            outs.iter()
                .map(|o| (o.user.as_deref(), o.amount_sat))
                .collect::<Vec<_>>(),
            vec![
                (Some("a"), part("a")),
                (Some("b"), part("b")),
                (None, 1_000_000 - part("a") - part("b")),
            ]
        );
        assert!(part("dust") < 100, "below the dust threshold");
        assert_eq!(outs.iter().map(|o| o.amount_sat).sum::<u64>(), 1_000_000);

        // The cap keeps the largest parts.
        let one = CoinbaseOutputTerms {
            max_outputs: 1,
            ..terms
        };
        let outs = coinbase_outputs(shares, &one, &pool, address_of).unwrap();
        assert_eq!(outs.len(), 2);
        assert_eq!(outs[0].user.as_deref(), Some("a"));
        assert_eq!(outs[1].amount_sat, 1_000_000 - part("a"));

        // An empty window: the pool's output alone.
        let outs = coinbase_outputs([], &terms, &pool, address_of).unwrap();
        assert_eq!(outs.len(), 1);
        assert_eq!(
            (outs[0].user.as_ref(), outs[0].amount_sat),
            (None, 1_000_000)
        );
    }
}
