//! Settling a block: once the node has accepted it, its reward is split by the pool's
//! scheme over the shares in the ledger and recorded, exactly once. The same computation
//! ([`compute_payouts`]) is what `ledger payouts` shows and what a miner repeats from an
//! export.

use bitcoin::BlockHash;

use super::policy::{PayoutPolicy, PayoutScheme};
use super::pplns::{self, Split, SplitError, SplitTerms, WindowShare};
use crate::ledger::{
    BlockStatus, FoundBlockRecord, Ledger, LedgerError, Payout, PayoutComputation, ShareRange,
    StoredShare,
};

/// The share range a ledger is asked for to cover a block's window: a little more than the
/// window (its f64 sum and the split's fixed-point sum may differ in the last bits); the split
/// cuts it exactly.
pub fn window_range(last_share_id: u64, window_difficulty: f64) -> ShareRange {
    ShareRange::Window {
        last_id: last_share_id,
        difficulty: window_difficulty * (1.0 + 1e-6),
    }
}

/// The split's terms for `block` under `policy`.
pub fn split_terms(block: &FoundBlockRecord, policy: &PayoutPolicy) -> SplitTerms {
    SplitTerms {
        window_difficulty: match policy.scheme {
            PayoutScheme::Pplns => policy.window_difficulty(block.bits),
            // Solo: the window is the finding share alone.
            PayoutScheme::Solo => f64::MAX,
        },
        reward_sat: block.reward_sat,
        fee_ppm: pplns::fee_ppm(policy.fee_percent),
    }
}

/// The split of `block`'s reward over `shares` (the finding share is the one with the
/// block's hash; shares newer than it are not counted), and the computation to record.
pub fn compute_payouts(
    block: &FoundBlockRecord,
    finding_share_id: u64,
    shares: &[StoredShare],
    policy: &PayoutPolicy,
    now_ms: u64,
) -> Result<(Split, PayoutComputation), SplitError> {
    let terms = split_terms(block, policy);
    let counted = shares.iter().filter(|s| match policy.scheme {
        PayoutScheme::Pplns => s.id <= finding_share_id,
        PayoutScheme::Solo => s.id == finding_share_id,
    });
    let split = pplns::split(counted.map(WindowShare::from), &terms)?;
    let computation = PayoutComputation {
        block_hash: block.hash,
        scheme: policy.scheme.name().to_owned(),
        reward_sat: block.reward_sat,
        fee_sat: split.fee_sat,
        window_difficulty: match policy.scheme {
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
    if stored.status != BlockStatus::Accepted {
        return Ok(None);
    }
    let finding = ledger.share_by_hash(hash)?.ok_or_else(|| {
        LedgerError::Corrupt(format!("block {hash} has no finding share in the ledger"))
    })?;
    let shares = match policy.scheme {
        PayoutScheme::Pplns => ledger.shares(&window_range(
            finding.id,
            policy.window_difficulty(stored.block.bits),
        ))?,
        PayoutScheme::Solo => vec![finding.clone()],
    };
    let (_, computation) = compute_payouts(&stored.block, finding.id, &shares, policy, now_ms)
        .map_err(|e| LedgerError::Corrupt(format!("block {hash}: {e}")))?;
    if ledger.record_payouts(&computation)? {
        Ok(Some(computation))
    } else {
        ledger.payouts(hash)
    }
}
