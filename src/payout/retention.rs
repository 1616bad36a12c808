//! Keeping the ledger bounded: shares no window can need any more, older than the retention,
//! are deleted. A share is kept while it is in the newest window (at the current network
//! difficulty), in the window of a block not settled yet, or younger than
//! `retention_secs`.

use bitcoin::CompactTarget;

use super::policy::PayoutPolicy;
use super::settle::window_shares;
use crate::ledger::{BlockStatus, FoundBlockRecord, Ledger, LedgerError, StoredShare};

/// Blocks looked at for unsettled windows (the newest ones; an older unsettled block's
/// shares are past the retention anyway, or kept by it).
const UNSETTLED_BLOCKS_LOOKED_AT: usize = 64;

/// The oldest share id the window of a block found by `last` holds (`last.id` if none).
fn window_start(
    ledger: &mut dyn Ledger,
    block: &FoundBlockRecord,
    last: &StoredShare,
    policy: &PayoutPolicy,
) -> Result<u64, LedgerError> {
    let shares = window_shares(ledger, block, last, policy)?;
    Ok(shares.iter().map(|s| s.id).min().unwrap_or(last.id))
}

/// Deletes the shares no window needs that are older than the retention (`bits`: the
/// network's current nBits); returns how many went.
pub fn prune_before(
    ledger: &mut dyn Ledger,
    policy: &PayoutPolicy,
    bits: CompactTarget,
    now_ms: u64,
) -> Result<u64, LedgerError> {
    let last_id = ledger.last_share_id()?;
    let Some(last) = ledger
        .shares(&crate::ledger::ShareRange::Ids {
            from_id: last_id,
            to_id: last_id,
            limit: 1,
        })?
        .pop()
    else {
        return Ok(0);
    };
    // The newest window: a block the newest share would find now, by a pool user.
    let next_block = FoundBlockRecord {
        hash: last.record.hash,
        height: 0,
        time_ms: now_ms,
        reward_sat: 0,
        bits,
        user: String::new(),
        worker: String::new(),
        coinbase_payouts: None,
        payout_terms: None,
    };
    let mut keep_from = window_start(ledger, &next_block, &last, policy)?;
    for stored in ledger.blocks(UNSETTLED_BLOCKS_LOOKED_AT)? {
        let settled = ledger.payouts(stored.block.hash)?.is_some();
        if settled || matches!(stored.status, BlockStatus::Rejected(_)) {
            continue;
        }
        if let Some(share) = ledger.share_by_hash(stored.block.hash)? {
            let start = window_start(ledger, &stored.block, &share, policy)?;
            keep_from = keep_from.min(start);
        }
    }
    let before_ms = now_ms.saturating_sub(policy.retention_secs.saturating_mul(1000));
    ledger.prune(before_ms, keep_from)
}
