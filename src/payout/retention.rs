//! Keeping the ledger bounded: shares no window can need any more, older than the retention,
//! are deleted. A share is kept while it is in the newest window (at the current network
//! difficulty), in the window of a block not settled yet, or younger than
//! `retention_secs`.

use bitcoin::CompactTarget;

use super::policy::PayoutPolicy;
use super::settle::window_range;
use crate::ledger::{BlockStatus, Ledger, LedgerError};

/// Blocks looked at for unsettled windows (the newest ones; an older unsettled block's
/// shares are past the retention anyway, or kept by it).
const UNSETTLED_BLOCKS_LOOKED_AT: usize = 64;

/// The oldest share id a window ending at `last_id` holds (`last_id + 1` if none).
fn window_start(
    ledger: &mut dyn Ledger,
    last_id: u64,
    difficulty: f64,
) -> Result<u64, LedgerError> {
    let shares = ledger.shares(&window_range(last_id, difficulty))?;
    Ok(shares.iter().map(|s| s.id).min().unwrap_or(last_id + 1))
}

/// Deletes the shares no window needs that are older than the retention (`bits`: the
/// network's current nBits); returns how many went.
pub fn prune_before(
    ledger: &mut dyn Ledger,
    policy: &PayoutPolicy,
    bits: CompactTarget,
    now_ms: u64,
) -> Result<u64, LedgerError> {
    let last = ledger.last_share_id()?;
    if last == 0 {
        return Ok(0);
    }
    let mut keep_from = window_start(ledger, last, policy.window_difficulty(bits))?;
    for stored in ledger.blocks(UNSETTLED_BLOCKS_LOOKED_AT)? {
        let settled = ledger.payouts(stored.block.hash)?.is_some();
        if settled || matches!(stored.status, BlockStatus::Rejected(_)) {
            continue;
        }
        if let Some(share) = ledger.share_by_hash(stored.block.hash)? {
            let start = window_start(
                ledger,
                share.id,
                policy.window_difficulty(stored.block.bits),
            )?;
            keep_from = keep_from.min(start);
        }
    }
    let before_ms = now_ms.saturating_sub(policy.retention_secs.saturating_mul(1000));
    ledger.prune(before_ms, keep_from)
}
