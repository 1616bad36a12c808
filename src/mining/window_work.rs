//! The pool's work paying the PPLNS window in its coinbase (`coinbase_payouts = true`, issue
//! 15 item 4): the template's reward divided over the current window ([`PayoutWindow`], read by
//! the ledger's writer), the users with a payout address and a part above the dust threshold
//! paid directly, at most the configured number, the rest to the pool's script
//! (`payout::coinbase_outputs`). Nobody trusts the operator with balances.
//!
//! The coinbase must fit the room the template leaves it (`payee_work::MAX_COINBASE_WEIGHT`,
//! sigops): when it would not, the smallest user outputs go to the pool's output, one by one,
//! until it does; never a block the node refuses. The work carries what it pays
//! ([`CoinbasePayouts`]: the window ending at S, the terms, each user's amount), so a block
//! found on it records what it paid, and anyone can recompute it from an export: the cap
//! recorded is the one the outputs were cut to.

use std::sync::Arc;

use bitcoin::{Amount, TxOut};

use super::payee_work::{PayeeWorkError, with_outputs};
use super::work::Work;
use crate::ledger::CoinbasePayouts;
use crate::payout::policy::{CoinbasePayoutTerms, PayoutPolicy};
use crate::payout::pplns::{self, SplitError};
use crate::payout::settle::paid_by_outputs;
use crate::payout::window::PayoutWindow;

/// Why the pool's work cannot pay the window (it then pays the pool's script, and its blocks
/// are settled by PPLNS into balances).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowWorkError {
    /// The window was read for another network difficulty than the template's.
    #[error("the window was counted for nBits {window:#010x}, the template has {template:#010x}")]
    OtherDifficulty {
        /// The window's nBits.
        window: u32,
        /// The template's.
        template: u32,
    },
    /// The split failed (a fee above 100%).
    #[error("the window's split: {0}")]
    Split(#[from] SplitError),
    /// Even the pool's output alone does not fit.
    #[error("{0}")]
    Coinbase(#[from] PayeeWorkError),
}

/// `base` (the pool's work for a template) with its coinbase paying `window` under `policy`
/// (its fee and `[users]` addresses) and `terms` (see the module comment). Same id, tip and
/// transactions as `base`.
pub fn pay_window(
    base: &Work,
    window: &PayoutWindow,
    policy: &PayoutPolicy,
    terms: &CoinbasePayoutTerms,
) -> Result<Work, WindowWorkError> {
    if window.bits.to_consensus() != base.nbits {
        return Err(WindowWorkError::OtherDifficulty {
            window: window.bits.to_consensus(),
            template: base.nbits,
        });
    }
    let fee_ppm = pplns::fee_ppm(policy.fee_percent);
    let reward = base.coinbase_value;
    let split = pplns::divide(&window.counted, reward, fee_ppm)?;
    let mut cap = u32::try_from(terms.max_outputs).unwrap_or(u32::MAX);
    loop {
        let paid = paid_by_outputs(
            &split,
            window.last_share_id,
            window.window_difficulty,
            fee_ppm,
            terms.dust_sat,
            cap,
            reward,
            policy,
        );
        let outputs = coinbase_txouts(&paid, base, policy);
        match with_outputs(base, outputs, "the PPLNS window") {
            Ok(mut work) => {
                work.coinbase_payouts = Some(Arc::new(paid));
                return Ok(work);
            }
            // One user output fewer: the smallest goes to the pool's output.
            Err(_) if !paid.payouts.is_empty() => cap = paid.payouts.len() as u32 - 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The coinbase's payout outputs for `paid`: each user's, in order, then the pool's rest (if
/// any, or alone when nobody is paid).
fn coinbase_txouts(paid: &CoinbasePayouts, base: &Work, policy: &PayoutPolicy) -> Vec<TxOut> {
    let mut outputs: Vec<TxOut> = paid
        .payouts
        .iter()
        .filter_map(|p| {
            Some(TxOut {
                value: Amount::from_sat(p.amount_sat),
                script_pubkey: policy.payout_script(&p.user)?,
            })
        })
        .collect();
    if paid.pool_sat > 0 || outputs.is_empty() {
        outputs.push(TxOut {
            value: Amount::from_sat(paid.pool_sat),
            script_pubkey: base.pool_script.clone(),
        });
    }
    outputs
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use bitcoin::{Address, CompactTarget, Network, ScriptBuf};

    use super::*;
    use crate::block::coinbase::CoinbaseConfig;
    use crate::mining::payee_work::{MAX_COINBASE_WEIGHT, derive};
    use crate::node::regtest::{ChainConfig, EmbeddedChain};
    use crate::payout::CoinbasePayee;
    use crate::payout::pplns::{WindowShare, count};

    const BITS: u32 = 0x207f_ffff;

    fn address(n: u8) -> Address {
        Address::p2wsh(&ScriptBuf::from_bytes(vec![n]), Network::Regtest)
    }

    fn chain() -> EmbeddedChain {
        EmbeddedChain::new(ChainConfig {
            bits: BITS,
            synthetic_transactions: 3,
            block_interval_secs: 0,
        })
    }

    fn pool_work(chain: &mut EmbeddedChain, id: u64) -> Work {
        let cfg = CoinbaseConfig {
            payout_script: Address::from_str("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
                .unwrap()
                .assume_checked()
                .script_pubkey(),
            pool_tag: b"/test/".to_vec(),
            extranonce_len: 12,
        };
        Arc::into_inner(Work::new(id, chain.template(1_700_000_000), &cfg).unwrap()).unwrap()
    }

    /// A window of `users` address users with weights 1, 2, 3, ... plus an account without
    /// an address and a dust user.
    fn window(users: u8) -> (PayoutWindow, Vec<String>) {
        let names: Vec<String> = (1..=users).map(|n| address(n).to_string()).collect();
        let mut shares: Vec<WindowShare<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, u)| WindowShare {
                id: i as u64 + 10,
                user: u,
                difficulty: (i + 1) as f64,
            })
            .collect();
        shares.push(WindowShare {
            id: 1,
            user: "noaddress",
            difficulty: 5.0,
        });
        shares.push(WindowShare {
            id: 2,
            user: "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
            difficulty: 1e-12,
        });
        let counted = count(shares, 1e9).unwrap();
        (
            PayoutWindow {
                bits: CompactTarget::from_consensus(BITS),
                window_difficulty: 1e9,
                last_share_id: 99,
                counted,
            },
            names,
        )
    }

    fn mine_on(chain: &mut EmbeddedChain, work: &Work) -> bitcoin::Block {
        let (prefix, extranonce) = ([7u8; 4], [1u8; 8]);
        for nonce in 0..1_000u32 {
            let block =
                work.assemble_block(&prefix, &extranonce, work.version, work.cur_time, nonce);
            if block.header.validate_pow(work.network_target).is_ok() {
                chain.submit_block(&block, work.cur_time).unwrap();
                return block;
            }
        }
        panic!("no nonce");
    }

    #[test]
    fn the_coinbase_pays_the_window_and_the_chain_accepts_it() {
        let mut chain = chain();
        let base = pool_work(&mut chain, 1);
        let (w, names) = window(3);
        let policy = PayoutPolicy::default();
        let terms = CoinbasePayoutTerms::default();
        let work = pay_window(&base, &w, &policy, &terms).unwrap();
        let paid = work.coinbase_payouts.clone().unwrap();
        // Largest first; the account without an address and the dust user are not paid.
        let users: Vec<_> = paid.payouts.iter().map(|p| p.user.as_str()).collect();
        assert_eq!(users, [&names[2], &names[1], &names[0]]);
        let outs = &work.coinbase.tx.output;
        assert_eq!(
            outs.len(),
            3 + 1 + 1,
            "users, the pool, the witness commitment"
        );
        for (o, p) in outs.iter().zip(&paid.payouts) {
            assert_eq!(o.value.to_sat(), p.amount_sat);
            assert_eq!(Some(o.script_pubkey.clone()), policy.payout_script(&p.user));
        }
        assert_eq!(outs[3].script_pubkey, base.pool_script);
        assert_eq!(outs[3].value.to_sat(), paid.pool_sat);
        let total: u64 = outs.iter().map(|o| o.value.to_sat()).sum();
        assert_eq!(total, base.coinbase_value);
        assert!(paid.pool_sat > pplns::fee_ppm(1.0) as u64 * base.coinbase_value / 1_000_000);
        let block = mine_on(&mut chain, &work);
        assert!(block.check_merkle_root() && block.check_witness_commitment());

        // A solo channel's work derived from it pays its payee alone, donation to the pool.
        let base = pool_work(&mut chain, 2);
        let work = pay_window(&base, &w, &policy, &terms).unwrap();
        let payee = CoinbasePayee {
            address: address(200),
            pool_percent: 10,
        };
        let solo = derive(&work, &payee).unwrap();
        assert!(solo.coinbase_payouts.is_none());
        let outs = &solo.coinbase.tx.output;
        assert_eq!(outs.len(), 3, "payee, donation, witness commitment");
        assert_eq!(outs[0].script_pubkey, address(200).script_pubkey());
        assert_eq!(outs[1].script_pubkey, base.pool_script);
        mine_on(&mut chain, &solo);

        // Another difficulty: not paid.
        let other = PayoutWindow {
            bits: CompactTarget::from_consensus(0x1d00_ffff),
            ..w
        };
        assert!(matches!(
            pay_window(&base, &other, &policy, &terms),
            Err(WindowWorkError::OtherDifficulty { .. })
        ));
    }

    #[test]
    fn too_many_outputs_for_the_room_drop_the_smallest_to_the_pool() {
        let mut chain = chain();
        let base = pool_work(&mut chain, 1);
        let (w, names) = window(60);
        let policy = PayoutPolicy::default();
        let terms = CoinbasePayoutTerms {
            dust_sat: 1,
            max_outputs: 60,
        };
        let work = pay_window(&base, &w, &policy, &terms).unwrap();
        let paid = work.coinbase_payouts.clone().unwrap();
        let n = paid.payouts.len();
        assert!(n < 60 && n > 10, "{n} outputs fit");
        assert_eq!(
            paid.max_outputs as usize, n,
            "the cap recorded is the one cut to"
        );
        assert!(work.coinbase.tx.weight().to_wu() <= MAX_COINBASE_WEIGHT);
        // The largest were kept.
        assert_eq!(paid.payouts[0].user, names[59]);
        assert_eq!(paid.payouts[n - 1].user, names[60 - n]);
        let total: u64 = paid.payouts.iter().map(|p| p.amount_sat).sum::<u64>() + paid.pool_sat;
        assert_eq!(total, base.coinbase_value);
        mine_on(&mut chain, &work);
    }
}
