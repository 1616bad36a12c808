//! A block's payouts explained in words and numbers, step by step, from the shares: what
//! `ledger payouts BLOCKHASH` prints, so a miner can follow the arithmetic (and repeat it from
//! an export) and see whether it equals what the pool recorded.

use std::fmt::Write as _;

use super::identity::coinbase_payee_of;
use super::policy::{PayoutPolicy, PayoutScheme};
use super::pplns::{Split, SplitError, difficulty_of_weight, fee_ppm};
use super::settle::{compute_payouts, same_numbers, scheme_of};
use crate::ledger::{CoinbasePayouts, PayoutComputation, StoredBlock, StoredShare};

/// What the explanation found.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The text, one step a line.
    pub text: String,
    /// The computation from the shares.
    pub computed: PayoutComputation,
    /// Whether the recorded computation has the same numbers (`None`: none recorded).
    pub matches_recorded: Option<bool>,
}

/// Explains `stored`'s payouts from `shares` (its window: the shares up to and including
/// `finding`, newest first or in any order) under `policy`, against `recorded`.
pub fn explain_payouts(
    stored: &StoredBlock,
    finding: &StoredShare,
    shares: &[StoredShare],
    policy: &PayoutPolicy,
    recorded: Option<&PayoutComputation>,
) -> Result<Explanation, SplitError> {
    let block = &stored.block;
    let policy = &*policy.for_block(block);
    let computed_ms = recorded.map_or(0, |r| r.computed_ms);
    let (split, computed) = compute_payouts(block, finding.id, shares, policy, computed_ms)?;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Block {} at height {}, found by `{}` (share {}), node: {}.",
        block.hash,
        block.height,
        block.user,
        finding.id,
        stored.status.name()
    );
    let _ = match &block.payout_terms {
        Some(terms) => writeln!(
            t,
            "Terms recorded with the block when it was found: scheme {}, window {} x the \
             network difficulty, fee {}%, solo accounts [{}].",
            terms.scheme.name(),
            terms.window_multiple,
            terms.fee_percent,
            terms.solo_users.join(", ")
        ),
        None => writeln!(
            t,
            "No terms were recorded with the block (an older program found it): today's \
             configuration's are used."
        ),
    };
    if let Some(payee) = coinbase_payee_of(&block.user) {
        let to_address = split.users.first().map_or(0, |u| u.amount_sat);
        let to_pool = split.fee_sat;
        let _ = writeln!(
            t,
            "Scheme coinbase: the block paid its finder in its own coinbase (the channel's \
             user_identity names the payee); reward {} sat (subsidy and fees of its template).",
            block.reward_sat
        );
        let _ = writeln!(
            t,
            "1. No window: that channel is paid by its own blocks; its shares are in no PPLNS \
             window."
        );
        let _ = writeln!(
            t,
            "2. Donation to the pool's script: floor({} x {} / 100) = {} sat.",
            block.reward_sat, payee.pool_percent, to_pool
        );
        let _ = writeln!(
            t,
            "3. To {}: {} - {} = {} sat, the coinbase's first output.",
            payee.address, block.reward_sat, to_pool, to_address
        );
        let _ = writeln!(t, "No balance moves: the coinbase paid it.");
    } else if let Some(terms) = &block.coinbase_payouts {
        explain_coinbase_pplns(&mut t, stored, terms, policy, &split, &computed);
    } else {
        explain_split(&mut t, stored, finding, policy, &split);
    }
    let matches_recorded = recorded.map(|r| same_numbers(r, &computed));
    let _ = match (recorded, matches_recorded) {
        (None, _) => writeln!(t, "Recorded: no payouts recorded for this block yet."),
        (Some(_), Some(true)) => writeln!(t, "Recorded: equal to this computation."),
        (Some(r), _) => writeln!(
            t,
            "Recorded: DIFFERENT: scheme {}, fee {} sat, shares {}..={}, payouts {}.",
            r.scheme,
            r.fee_sat,
            r.first_share_id,
            r.last_share_id,
            r.payouts
                .iter()
                .map(|p| format!("{} {} sat", p.user, p.amount_sat))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Ok(Explanation {
        text: t,
        computed,
        matches_recorded,
    })
}

/// Steps 1 to 5 of a PPLNS or solo split, and the total.
fn explain_split(
    t: &mut String,
    stored: &StoredBlock,
    finding: &StoredShare,
    policy: &PayoutPolicy,
    split: &super::pplns::Split,
) {
    let block = &stored.block;
    let ppm = fee_ppm(policy.fee_percent);
    let _ = writeln!(
        t,
        "Scheme {}; reward {} sat (subsidy and fees of its template); pool fee {}% = {} ppm.",
        scheme_of(block, policy).name(),
        block.reward_sat,
        policy.fee_percent,
        ppm
    );
    let _ = writeln!(
        t,
        "Weights are difficulties in fixed point: weight = floor(difficulty x 2^64)."
    );
    match scheme_of(block, policy) {
        PayoutScheme::Pplns => {
            let network = bitcoin::Target::from_compact(block.bits).difficulty_float();
            let _ = writeln!(
                t,
                "1. Window: network difficulty {:?} (nBits {:#010x}) x {} = {:?} difficulty, \
                 weight N = {}.",
                network,
                block.bits.to_consensus(),
                policy.window_multiple,
                policy.window_difficulty(block.bits),
                split.window_weight
            );
        }
        PayoutScheme::Solo => {
            let _ = writeln!(t, "1. Window: the finding share alone (solo).");
        }
    }
    if !policy.solo_users.is_empty() {
        let solo: Vec<&str> = policy.solo_users.iter().map(String::as_str).collect();
        let _ = writeln!(
            t,
            "   Solo users' shares are in no window: {}.",
            solo.join(", ")
        );
    }
    explain_steps(t, block.reward_sat, ppm, finding.id, split);
    let paid: u64 = split.users.iter().map(|u| u.amount_sat).sum();
    let _ = writeln!(
        t,
        "Total: payouts {} + fee {} = {} sat (the reward).",
        paid,
        split.fee_sat,
        paid + split.fee_sat
    );
}

/// A block whose coinbase paid the PPLNS window (`coinbase_payouts = true`): the window
/// ending at S, its split of the template's reward, then which users the coinbase paid.
fn explain_coinbase_pplns(
    t: &mut String,
    stored: &StoredBlock,
    terms: &CoinbasePayouts,
    policy: &PayoutPolicy,
    split: &Split,
    computed: &PayoutComputation,
) {
    let block = &stored.block;
    let _ = writeln!(
        t,
        "Scheme coinbase-pplns: the block's coinbase paid the PPLNS window directly (payouts in \
         the coinbase); reward {} sat (subsidy and fees of its template); pool fee {} ppm.",
        block.reward_sat, terms.fee_ppm
    );
    let _ = writeln!(
        t,
        "Weights are difficulties in fixed point: weight = floor(difficulty x 2^64)."
    );
    let _ = writeln!(
        t,
        "1. Window: the one the work carried, ending at share S = {} (the newest share in the \
         ledger when it was read, not the finding share), {:?} difficulty (the pool's multiple \
         of the network difficulty of nBits {:#010x}), weight N = {}.",
        terms.last_share_id,
        terms.window_difficulty,
        block.bits.to_consensus(),
        split.window_weight
    );
    if !policy.solo_users.is_empty() {
        let solo: Vec<&str> = policy.solo_users.iter().map(String::as_str).collect();
        let _ = writeln!(
            t,
            "   Solo users' shares are in no window: {}.",
            solo.join(", ")
        );
    }
    explain_steps(
        t,
        block.reward_sat,
        terms.fee_ppm,
        terms.last_share_id,
        split,
    );
    let _ = writeln!(
        t,
        "6. Paid in the coinbase: users with a payout address whose part is at least {} sat \
         (and the network's dust for their script), the largest first, at most {}; the rest \
         goes to the pool's script:",
        terms.dust_sat, terms.max_outputs
    );
    let mut eligible = 0u32;
    let mut by_amount: Vec<&super::pplns::UserPart> = split.users.iter().collect();
    by_amount.sort_by(|a, b| b.amount_sat.cmp(&a.amount_sat).then(a.user.cmp(&b.user)));
    for u in by_amount {
        let script = policy.payout_script(&u.user);
        let why = match &script {
            None => "not paid: no payout address (its part goes to the pool)".to_owned(),
            Some(script)
                if u.amount_sat < terms.dust_sat.max(1)
                    || u.amount_sat < script.minimal_non_dust().to_sat() =>
            {
                "not paid: below the dust threshold (its part goes to the pool)".to_owned()
            }
            Some(_) if eligible >= terms.max_outputs => {
                eligible += 1;
                "not paid: past the most outputs (its part goes to the pool)".to_owned()
            }
            Some(_) => {
                eligible += 1;
                format!("paid {} sat in the coinbase", u.amount_sat)
            }
        };
        let _ = writeln!(t, "   {:<40} {} sat: {}", u.user, u.amount_sat, why);
    }
    let paid: u64 = computed.payouts.iter().map(|p| p.amount_sat).sum();
    let _ = writeln!(
        t,
        "Total: coinbase outputs to users {} + to the pool's script {} = {} sat (the reward).",
        paid,
        computed.fee_sat,
        paid + computed.fee_sat
    );
    let _ = writeln!(
        t,
        "No balance moves: the coinbase paid the users it pays; a user it did not pay has no \
         balance for this block either (its part went to the pool's script)."
    );
}

/// Steps 2 to 5 of a split: the shares counted newest first from share `from_id`, the fee,
/// each user's part, the leftover.
fn explain_steps(t: &mut String, reward_sat: u64, ppm: u32, from_id: u64, split: &Split) {
    let _ = writeln!(
        t,
        "2. Shares counted, newest first from share {}: {} shares, ids {}..={}, weight W = {} \
         (difficulty {:?}){}.",
        from_id,
        split.shares_counted,
        split.first_share_id,
        split.last_share_id,
        split.counted_weight,
        difficulty_of_weight(split.counted_weight),
        match split.partial_weight {
            Some(w) => format!(
                "; the oldest, share {}, counts only weight {w} of its own to fill N exactly",
                split.first_share_id
            ),
            None if split.counted_weight < split.window_weight => {
                "; the ledger holds less than the window, so W < N".to_owned()
            }
            None => String::new(),
        }
    );
    let distributable = reward_sat - split.fee_by_percent_sat;
    let _ = writeln!(
        t,
        "3. Fee: floor({} x {} / 1000000) = {} sat; to split: D = {} - {} = {} sat.",
        reward_sat,
        ppm,
        split.fee_by_percent_sat,
        reward_sat,
        split.fee_by_percent_sat,
        distributable
    );
    let _ = writeln!(
        t,
        "4. Each user: floor(D x weight / W) sat, then the leftover (step 5):"
    );
    for u in &split.users {
        let _ = writeln!(
            t,
            "   {:<40} difficulty {:<24} weight {:<40} {} sat{}",
            u.user,
            format!("{:?}", difficulty_of_weight(u.weight)),
            u.weight,
            u.amount_sat,
            if u.got_leftover {
                " (incl. 1 leftover)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        t,
        "5. Leftover from rounding: {} sat, one each to the users with the largest remainders \
         of D x weight / W (ties: smaller name first).",
        split.leftover_sat
    );
    if split.donated_sat > 0 {
        let _ = writeln!(
            t,
            "   Full donations (sri/donate): {} sat to the pool, with the fee.",
            split.donated_sat
        );
    }
}
