//! Settling a block: once the node has accepted it, its reward is split by the pool's
//! scheme (or the finder's own, `[users.NAME] scheme = "solo"`) over the shares in the ledger
//! and recorded, exactly once. The same computation ([`compute_payouts`]) is what `ledger
//! payouts` shows and what a miner repeats from an export.
//!
//! Solo users take no part in PPLNS windows: their shares are left out of every window (which
//! reaches further back to stay N), and their blocks pay them alone.
//!
//! Channels paid in their own coinbase (`sri/solo/ADDRESS`, `sri/donate/PERCENT/ADDRESS`) are
//! left out of every window likewise, and their blocks were paid by the block itself: such a
//! block is settled as scheme `coinbase` ([`coinbase_settlement`]), recording what its
//! coinbase paid the address (and the pool's donation as the fee), and moves no balance.
//!
//! With payouts in the coinbase (`coinbase_payouts = true`), a block mined on work whose
//! coinbase paid the PPLNS window directly carries what it paid (the window ending at share S,
//! the users paid, the pool's rest: [`CoinbasePayouts`]); it is settled as scheme
//! `coinbase-pplns` from that record ([`coinbase_pplns_settlement`]), moving no balance.
//! Users of the window the coinbase did not pay (no payout address, a part below the dust
//! threshold, past the most outputs) get no balance either: their part went to the pool's
//! script, and the record says so (its fee). A block mined on work that paid no window (the
//! first seconds after a start, before the window was read) is settled by PPLNS into balances.

use bitcoin::BlockHash;

use super::coinbase_outputs::outputs_of_split;
use super::identity::{coinbase_payee_of, is_paid_in_coinbase};
use super::policy::{PayoutPolicy, PayoutScheme};
use super::pplns::{self, Split, SplitError, SplitTerms, WindowShare};
use crate::ledger::{
    COINBASE_PPLNS_SCHEME, CoinbasePayouts, FoundBlockRecord, Ledger, LedgerError, Payout,
    PayoutComputation, ShareRange, StoredShare,
};

/// Most times the window is read again to make up for solo users' shares in it (each read
/// at least twice as far as the one before: never reached but for a window of 2^64).
const MAX_WINDOW_READS: usize = 64;

/// The share range a ledger is asked for to cover a block's window: a little more than the
/// window (its f64 sum and the split's fixed-point sum may differ in the last bits); the split
/// cuts it exactly.
pub fn window_range(last_share_id: u64, window_difficulty: f64) -> ShareRange {
    ShareRange::Window {
        last_id: last_share_id,
        difficulty: window_difficulty * (1.0 + 1e-6),
    }
}

/// The scheme name of a block paid in its own coinbase.
pub const COINBASE_SCHEME: &str = "coinbase";

/// Whether `user`'s shares are left out of PPLNS windows: a solo user of the `[users]` table,
/// or a channel paid in its own coinbase.
pub fn out_of_windows(policy: &PayoutPolicy, user: &str) -> bool {
    is_paid_in_coinbase(user) || policy.solo_users.contains(user)
}

/// The settlement of a block found by a channel paid in its own coinbase (`None` for any
/// other block): scheme `coinbase`, the window the finding share alone, the address paid what
/// the coinbase paid it ([`CoinbasePayee::split`](super::identity::CoinbasePayee::split) of
/// the template's reward) and the pool's donation as the fee. It moves no balance.
pub fn coinbase_settlement(
    block: &FoundBlockRecord,
    finding: &StoredShare,
    now_ms: u64,
) -> Option<PayoutComputation> {
    let payee = coinbase_payee_of(&block.user)?;
    let (to_address, to_pool) = payee.split(block.reward_sat);
    let difficulty = finding.record.difficulty;
    Some(PayoutComputation {
        block_hash: block.hash,
        scheme: COINBASE_SCHEME.to_owned(),
        reward_sat: block.reward_sat,
        fee_sat: to_pool,
        window_difficulty: difficulty,
        counted_difficulty: difficulty,
        first_share_id: finding.id,
        last_share_id: finding.id,
        computed_ms: now_ms,
        payouts: vec![Payout {
            user: payee.address.to_string(),
            amount_sat: to_address,
            difficulty,
        }],
    })
}

/// The scheme `block` is paid by: the finder's own when it is a solo user, else the pool's.
pub fn scheme_of(block: &FoundBlockRecord, policy: &PayoutPolicy) -> PayoutScheme {
    if policy.solo_users.contains(&block.user) {
        PayoutScheme::Solo
    } else {
        policy.scheme
    }
}

/// The split's terms for `block` under `policy`.
pub fn split_terms(block: &FoundBlockRecord, policy: &PayoutPolicy) -> SplitTerms {
    SplitTerms {
        window_difficulty: match scheme_of(block, policy) {
            PayoutScheme::Pplns => policy.window_difficulty(block.bits),
            // Solo: the window is the finding share alone.
            PayoutScheme::Solo => f64::MAX,
        },
        reward_sat: block.reward_sat,
        fee_ppm: pplns::fee_ppm(policy.fee_percent),
    }
}

/// The shares `block`'s computation needs from the ledger, `finding` being its share: the
/// window up to it (reaching past solo users' shares), or the finding share alone (solo); a
/// block whose coinbase paid the window, the window its coinbase paid (ending at its S).
pub fn window_shares(
    ledger: &mut dyn Ledger,
    block: &FoundBlockRecord,
    finding: &StoredShare,
    policy: &PayoutPolicy,
) -> Result<Vec<StoredShare>, LedgerError> {
    let policy = &*policy.for_block(block);
    if let Some(paid) = &block.coinbase_payouts {
        return shares_of_window(ledger, paid.last_share_id, paid.window_difficulty, policy);
    }
    if scheme_of(block, policy) == PayoutScheme::Solo || is_paid_in_coinbase(&block.user) {
        return Ok(vec![finding.clone()]);
    }
    shares_of_window(
        ledger,
        finding.id,
        policy.window_difficulty(block.bits),
        policy,
    )
}

/// The shares of the window of `window` difficulty ending at share `last_id` (inclusive),
/// newest first: enough of them that, the shares of solo users and of channels paid in their
/// own coinbase left out, the rest fills the window (or all there are). May hold a few more:
/// the split cuts the window exactly.
pub fn shares_of_window(
    ledger: &mut dyn Ledger,
    last_id: u64,
    window: f64,
    policy: &PayoutPolicy,
) -> Result<Vec<StoredShare>, LedgerError> {
    let mut wanted = window;
    let mut reads = 0;
    loop {
        let shares = ledger.shares(&window_range(last_id, wanted))?;
        reads += 1;
        if reads == MAX_WINDOW_READS {
            return Ok(shares);
        }
        let sum = |solo: bool| -> f64 {
            shares
                .iter()
                .filter(|s| out_of_windows(policy, &s.record.user) == solo)
                .map(|s| s.record.difficulty)
                .sum()
        };
        let (pool, solo) = (sum(false), sum(true));
        // None left out, enough without them, or the ledger has no more.
        if solo == 0.0 || pool >= window * (1.0 + 1e-6) || pool + solo < wanted {
            return Ok(shares);
        }
        // Past the solo shares read, and at least twice as far: each read adds a window's
        // worth of what it lacks times the pool's part, so where the pool's part is small
        // (most of the hashrate solo) reading only that much more would take a read per
        // few percent and stop at `MAX_WINDOW_READS` short of the window.
        wanted = (window + solo).max(wanted * 2.0);
    }
}

/// The shares of `shares` a window ending at share `last_id` counts: not newer than it, not
/// of a solo user nor of a channel paid in its own coinbase.
pub fn window_members<'a>(
    shares: &'a [StoredShare],
    last_id: u64,
    policy: &'a PayoutPolicy,
) -> impl Iterator<Item = WindowShare<'a>> + 'a {
    shares
        .iter()
        .filter(move |s| s.id <= last_id && !out_of_windows(policy, &s.record.user))
        .map(WindowShare::from)
}

/// The settlement of a block whose coinbase paid the PPLNS window (`None` for any other
/// block): scheme [`COINBASE_PPLNS_SCHEME`], what its coinbase paid as it was recorded with
/// the block (the users paid, the pool's rest as the fee, the window ending at S). It moves no
/// balance: the coinbase paid them, and a user it did not pay (no address, dust, past the
/// cap) gets nothing either: its part went to the pool's script.
pub fn coinbase_pplns_settlement(
    block: &FoundBlockRecord,
    now_ms: u64,
) -> Option<PayoutComputation> {
    let paid = block.coinbase_payouts.as_ref()?;
    Some(coinbase_pplns_computation(block, paid, now_ms))
}

/// The computation recording what `block`'s coinbase paid (`paid`).
fn coinbase_pplns_computation(
    block: &FoundBlockRecord,
    paid: &CoinbasePayouts,
    now_ms: u64,
) -> PayoutComputation {
    PayoutComputation {
        block_hash: block.hash,
        scheme: COINBASE_PPLNS_SCHEME.to_owned(),
        reward_sat: block.reward_sat,
        fee_sat: paid.pool_sat,
        window_difficulty: paid.window_difficulty,
        counted_difficulty: paid.counted_difficulty,
        first_share_id: paid.first_share_id,
        last_share_id: paid.last_share_id,
        computed_ms: now_ms,
        payouts: paid.payouts.clone(),
    }
}

/// What a coinbase paying the window ending at `last_share_id` pays for `reward_sat`, from
/// the window's shares (any order, more than the window allowed) and the terms recorded with
/// the block: the split of the reward (the pool's `fee_ppm`), then the dust, address and cap
/// filter of [`outputs_of_split`], the rest to the pool. Returns the split and the record; the
/// same arithmetic the pool's work was built with (`mining::window_work`), so a recomputation
/// from an export gets the coinbase's outputs.
pub fn coinbase_pplns_payouts(
    shares: &[StoredShare],
    terms: &CoinbasePayouts,
    reward_sat: u64,
    policy: &PayoutPolicy,
) -> Result<(Split, CoinbasePayouts), SplitError> {
    let counted = pplns::count(
        window_members(shares, terms.last_share_id, policy),
        terms.window_difficulty,
    )?;
    let split = pplns::divide(&counted, reward_sat, terms.fee_ppm)?;
    let paid = paid_by_outputs(
        &split,
        terms.last_share_id,
        terms.window_difficulty,
        terms.fee_ppm,
        terms.dust_sat,
        terms.max_outputs,
        reward_sat,
        policy,
    );
    Ok((split, paid))
}

/// The record of a coinbase paying `split` of the window ending at `last_share_id` (see
/// [`coinbase_pplns_payouts`]): the users [`outputs_of_split`] pays, the pool's rest.
#[allow(clippy::too_many_arguments)]
pub fn paid_by_outputs(
    split: &Split,
    last_share_id: u64,
    window_difficulty: f64,
    fee_ppm: u32,
    dust_sat: u64,
    max_outputs: u32,
    reward_sat: u64,
    policy: &PayoutPolicy,
) -> CoinbasePayouts {
    // The pool's script is not needed to know who is paid what: any script stands for it.
    let outputs = outputs_of_split(
        split,
        reward_sat,
        dust_sat,
        max_outputs as usize,
        &bitcoin::ScriptBuf::new(),
        |user| policy.payout_script(user),
    );
    let weight_of = |user: &str| {
        split
            .users
            .iter()
            .find(|u| u.user == user)
            .map_or(0, |u| u.weight)
    };
    let payouts: Vec<Payout> = outputs
        .iter()
        .filter_map(|o| {
            let user = o.user.as_ref()?;
            Some(Payout {
                user: user.clone(),
                amount_sat: o.amount_sat,
                difficulty: pplns::difficulty_of_weight(weight_of(user)),
            })
        })
        .collect();
    let to_users: u64 = payouts.iter().map(|p| p.amount_sat).sum();
    CoinbasePayouts {
        window_difficulty,
        counted_difficulty: pplns::difficulty_of_weight(split.counted_weight),
        first_share_id: split.first_share_id,
        last_share_id,
        fee_ppm,
        dust_sat,
        max_outputs,
        payouts,
        pool_sat: reward_sat - to_users,
    }
}

/// The split of `block`'s reward over `shares` (the finding share is the one with id
/// `finding_share_id`; shares newer than it, and the shares of solo users and of channels paid
/// in their own coinbase, are not counted), and the computation to record. A block paid in its
/// own coinbase: see [`coinbase_settlement`] (the split is its one payee's, for display).
pub fn compute_payouts(
    block: &FoundBlockRecord,
    finding_share_id: u64,
    shares: &[StoredShare],
    policy: &PayoutPolicy,
    now_ms: u64,
) -> Result<(Split, PayoutComputation), SplitError> {
    let policy = &*policy.for_block(block);
    if let Some(recorded) = &block.coinbase_payouts {
        let (split, paid) = coinbase_pplns_payouts(shares, recorded, block.reward_sat, policy)?;
        return Ok((split, coinbase_pplns_computation(block, &paid, now_ms)));
    }
    if let Some(finding) = shares.iter().find(|s| s.id == finding_share_id)
        && let Some(computation) = coinbase_settlement(block, finding, now_ms)
    {
        let weight = pplns::weight_of(finding.record.difficulty);
        let paid = &computation.payouts[0];
        let split = Split {
            window_weight: weight,
            counted_weight: weight,
            first_share_id: finding.id,
            last_share_id: finding.id,
            shares_counted: 1,
            partial_weight: None,
            fee_by_percent_sat: computation.fee_sat,
            leftover_sat: 0,
            donated_sat: 0,
            fee_sat: computation.fee_sat,
            users: vec![pplns::UserPart {
                user: paid.user.clone(),
                weight,
                amount_sat: paid.amount_sat,
                got_leftover: false,
            }],
        };
        return Ok((split, computation));
    }
    let scheme = scheme_of(block, policy);
    let terms = split_terms(block, policy);
    let counted = shares.iter().filter(|s| match scheme {
        PayoutScheme::Pplns => s.id <= finding_share_id && !out_of_windows(policy, &s.record.user),
        PayoutScheme::Solo => s.id == finding_share_id,
    });
    let split = pplns::split(counted.map(WindowShare::from), &terms)?;
    let computation = PayoutComputation {
        block_hash: block.hash,
        scheme: scheme.name().to_owned(),
        reward_sat: block.reward_sat,
        fee_sat: split.fee_sat,
        window_difficulty: match scheme {
            PayoutScheme::Pplns => terms.window_difficulty,
            PayoutScheme::Solo => pplns::difficulty_of_weight(split.counted_weight),
        },
        counted_difficulty: pplns::difficulty_of_weight(split.counted_weight),
        first_share_id: split.first_share_id,
        last_share_id: split.last_share_id,
        computed_ms: now_ms,
        payouts: split
            .users
            .iter()
            .map(|u| Payout {
                user: u.user.clone(),
                amount_sat: u.amount_sat,
                difficulty: pplns::difficulty_of_weight(u.weight),
            })
            .collect(),
    };
    Ok((split, computation))
}

/// Whether two computations have the same numbers (everything but when they were made).
pub fn same_numbers(a: &PayoutComputation, b: &PayoutComputation) -> bool {
    PayoutComputation {
        computed_ms: 0,
        ..a.clone()
    } == PayoutComputation {
        computed_ms: 0,
        ..b.clone()
    }
}

/// Settles block `hash`: when the node has accepted it and it has no payouts yet, reads its
/// finding share and window, splits the reward and records it. Returns the block's
/// computation (the existing one, writing nothing, when it was settled before), or `None`
/// when the block is unknown or not accepted.
pub fn settle_block(
    ledger: &mut dyn Ledger,
    hash: BlockHash,
    policy: &PayoutPolicy,
    now_ms: u64,
) -> Result<Option<PayoutComputation>, LedgerError> {
    let Some(stored) = ledger.block(hash)? else {
        return Ok(None);
    };
    if let Some(existing) = ledger.payouts(hash)? {
        return Ok(Some(existing));
    }
    // Settled once the node accepted it, whatever its place in the chain since: an orphaned
    // block's payouts count in no balance, but are there if it comes back.
    if !stored.status.was_accepted() {
        return Ok(None);
    }
    // Its coinbase paid the window: recorded as it paid, nothing to read or split.
    if let Some(computation) = coinbase_pplns_settlement(&stored.block, now_ms) {
        return if ledger.record_payouts(&computation)? {
            Ok(Some(computation))
        } else {
            ledger.payouts(hash)
        };
    }
    let finding = ledger.share_by_hash(hash)?.ok_or_else(|| {
        LedgerError::Corrupt(format!("block {hash} has no finding share in the ledger"))
    })?;
    let shares = window_shares(ledger, &stored.block, &finding, policy)?;
    let (_, computation) = compute_payouts(&stored.block, finding.id, &shares, policy, now_ms)
        .map_err(|e| LedgerError::Corrupt(format!("block {hash}: {e}")))?;
    if ledger.record_payouts(&computation)? {
        Ok(Some(computation))
    } else {
        ledger.payouts(hash)
    }
}

/// Blocks looked at by [`settle_unsettled`]: the newest ones.
const UNSETTLED_LOOKED_AT: usize = 64;

/// Settles the accepted blocks among the newest that have no payouts yet: a block whose
/// verdict was written but whose settlement was not (the process ended in between, or the
/// settlement failed). Returns how many were settled; a block that cannot be (its finding
/// share gone) is skipped with its error in the list, never stopping the others.
pub fn settle_unsettled(
    ledger: &mut dyn Ledger,
    policy: &PayoutPolicy,
    now_ms: u64,
) -> Result<(usize, Vec<(BlockHash, LedgerError)>), LedgerError> {
    let mut settled = 0;
    let mut failed = Vec::new();
    for stored in ledger.blocks(UNSETTLED_LOOKED_AT)? {
        if !stored.status.was_accepted() || ledger.payouts(stored.block.hash)?.is_some() {
            continue;
        }
        match settle_block(ledger, stored.block.hash, policy, now_ms) {
            Ok(Some(_)) => settled += 1,
            Ok(None) => {}
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => failed.push((stored.block.hash, e)),
        }
    }
    Ok((settled, failed))
}
