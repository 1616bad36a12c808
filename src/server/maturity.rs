//! The shell of coinbase maturity (`payout::maturity` decides): after each new tip, and once a
//! minute in case a tip was missed, asks the ledger's writer which accepted and orphaned blocks
//! are still followed, asks the node which block is at each one's height, and sends the writer
//! the statuses that changed. A block becomes `mature` (its payouts spendable balances) at 100
//! confirmations, `orphaned` (its payouts in no balance) when a reorganisation takes it out
//! of the best chain, and `accepted` (immature) again if it comes back.
//!
//! A node that cannot answer leaves every status as it is until the next round: a block is
//! never called orphaned for want of an answer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use super::Shared;
use super::ledger_writer::{LedgerMessage, LedgerSender, OnChanged};
use crate::ledger::BlockStatus;
use crate::mining::Work;
use crate::payout::maturity::{self, ChainPlace, KnownChain};

/// Rounds without a new tip: a reorganisation always brings one, so this is only a safety net.
const EVERY: Duration = Duration::from_secs(60);

/// Runs rounds until `shutdown`; nothing to do without a ledger.
pub(crate) async fn maturity_loop(
    shared: Arc<Shared>,
    mut work: watch::Receiver<Option<Arc<Work>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(ledger) = shared.ledger.as_ref() else {
        return;
    };
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prev = None;
    let mut known = KnownChain::default();
    let mut node_failing = false;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            changed = work.changed() => {
                if changed.is_err() {
                    return;
                }
                // Only a new tip can change a block's place in the chain.
                let prev = work.borrow_and_update().as_ref().map(|w| w.prev_hash);
                if prev == last_prev {
                    continue;
                }
                last_prev = prev;
            }
        }
        let Some(tip_height) = work.borrow().as_ref().map(|w| w.height.saturating_sub(1)) else {
            continue;
        };
        // A node that cannot tell is said once per streak (the blocks stay as they are).
        match round(&shared, ledger, &mut known, tip_height).await {
            Ok(()) if node_failing => {
                node_failing = false;
                info!("following our blocks' maturity again");
            }
            Ok(()) => {}
            Err(e) if !node_failing => {
                node_failing = true;
                warn!("cannot follow our blocks' maturity now (their statuses wait): {e}");
            }
            Err(e) => debug!("still cannot follow our blocks' maturity: {e}"),
        }
    }
}

/// One round: every followed block placed in the node's best chain, asking the node only
/// about the anchor of what is known and the blocks not known in the chain yet.
async fn round(
    shared: &Arc<Shared>,
    ledger: &LedgerSender,
    known: &mut KnownChain,
    tip_height: u32,
) -> Result<(), crate::node::NodeError> {
    let (reply, answer) = oneshot::channel();
    ledger.send(LedgerMessage::BlocksToConfirm {
        min_orphan_height: maturity::lowest_watched_height(tip_height),
        reply,
    });
    let blocks = match answer.await {
        Ok(Ok(blocks)) => blocks,
        Ok(Err(e)) => {
            warn!("cannot read the blocks to confirm from the ledger: {e}");
            return Ok(());
        }
        // The writer stopped.
        Err(_) => return Ok(()),
    };
    if blocks.is_empty() {
        return Ok(());
    }
    // The node's tip height, and whether what is known still holds.
    let mut node_tip = None;
    if let Some(anchor) = known.anchor_height() {
        let at = shared.node.block_hash_at(anchor).await?;
        known.check_anchor(at.hash);
        node_tip = Some(at.tip_height);
    }
    for stored in blocks {
        let (hash, height) = (stored.block.hash, stored.block.height);
        let place = match node_tip {
            Some(tip_height) if known.in_chain(hash) => ChainPlace::InBestChain { tip_height },
            _ => {
                let at = shared.node.block_hash_at(height).await?;
                node_tip = Some(at.tip_height);
                let place = ChainPlace::of(hash, height, at.hash, at.tip_height);
                known.learn(hash, height, place);
                place
            }
        };
        let Some(next) = maturity::next_status(&stored.status, height, place) else {
            continue;
        };
        match (&next, place) {
            (BlockStatus::Orphaned, _) => warn!(
                %hash,
                height,
                "a block of ours left the best chain: its payouts are void unless it comes back"
            ),
            (BlockStatus::Mature, ChainPlace::InBestChain { tip_height }) => info!(
                %hash,
                height,
                confirmations = maturity::confirmations(height, tip_height),
                "a block of ours is mature: its payouts are spendable balances"
            ),
            _ => info!(%hash, height, "a block of ours is back in the best chain (immature)"),
        }
        // Notified only by the instance whose write changed the status (several instances
        // on one ledger follow the same blocks).
        let notify = shared.notifications.is_some().then(|| {
            let (shared, stored, next) = (shared.clone(), stored.clone(), next.clone());
            OnChanged(Box::new(move || {
                if let Some(n) = &shared.notifications {
                    n.block_chain_status(&stored, &next);
                }
            }))
        });
        ledger.send(LedgerMessage::Verdict(hash, next, notify));
    }
    Ok(())
}
