//! The pool's side of the webhooks ([`crate::webhook`]): where the shell learns each event and
//! hands it to the sans-IO [`Watcher`], whose answers go to the delivery queues. Found blocks
//! and the node's verdicts come from the block submitter as they happen; the node's health
//! (the server's observations of its answers and failures) and the workers' last shares (the
//! pool's worker table) are looked at by [`watch_loop`] once a second (the workers less often
//! when the offline time is long), and only if some webhook wants those events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{Shared, now_ms};
use crate::mining::FoundBlock;
use crate::mining::pool::workers::OTHER;
use crate::node::NodeError;
use crate::payout::identity::ledger_user;
use crate::webhook::{
    BlockInfo, Event, EventKind, NodeSeen, Watcher, WebhookSettings, Webhooks, WorkerSeen,
};

/// How often the node's health is looked at.
const NODE_LOOK: Duration = Duration::from_secs(1);

/// The webhooks and their decisions.
pub(crate) struct Notifications {
    pub(crate) hooks: Webhooks,
    watcher: Mutex<Watcher>,
}

impl Notifications {
    /// `None` without a webhook.
    pub(crate) fn new(settings: &WebhookSettings) -> Option<Notifications> {
        let watcher = Watcher::new(settings.worker_offline_after.as_millis() as u64);
        Some(Notifications {
            hooks: Webhooks::new(settings.clone())?,
            watcher: Mutex::new(watcher),
        })
    }

    fn watcher(&self) -> std::sync::MutexGuard<'_, Watcher> {
        self.watcher.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A block was found (it is saved and about to be submitted).
    pub(crate) fn block_found(&self, found: &FoundBlock) {
        let (user, worker) = ledger_user(&found.user_identity, None);
        let reward = found
            .block
            .txdata
            .first()
            .map(|cb| cb.output.iter().map(|o| o.value.to_sat()).sum());
        let event = self.watcher().block_found(BlockInfo {
            hash: found.block.block_hash(),
            height: Some(found.height),
            reward_sat: reward,
            user: Some(user),
            worker: Some(worker),
        });
        self.hooks.notify(&event, now_ms());
    }

    /// The node's final answer on a block: accepted (`Ok`) or refused for good.
    pub(crate) fn verdict(
        &self,
        hash: bitcoin::BlockHash,
        height: Option<u32>,
        answer: &Result<(), NodeError>,
    ) {
        let mut watcher = self.watcher();
        let event = match answer {
            Ok(()) => watcher.block_accepted(hash, height),
            Err(NodeError::BlockRejected(reason)) => {
                watcher.block_refused(hash, height, "rejected", reason.clone())
            }
            Err(NodeError::BlockTooNewInTime(reason)) => {
                watcher.block_refused(hash, height, "too_new_in_time", reason.clone())
            }
            // Not a verdict: the block is submitted again.
            Err(NodeError::Unavailable(_)) => return,
        };
        drop(watcher);
        self.hooks.notify(&event, now_ms());
    }
}

impl Notifications {
    /// A block of ours left the best chain (`orphaned`) or reached 100 confirmations
    /// (`mature`): `stored` is what the ledger holds of it.
    pub(crate) fn block_chain_status(
        &self,
        stored: &crate::ledger::StoredBlock,
        status: &crate::ledger::BlockStatus,
    ) {
        use crate::ledger::BlockStatus;
        let b = &stored.block;
        let info = BlockInfo {
            hash: b.hash,
            height: Some(b.height),
            reward_sat: Some(b.reward_sat),
            user: Some(b.user.clone()),
            worker: Some(b.worker.clone()),
        };
        let event = match status {
            BlockStatus::Orphaned => Event::BlockOrphaned(info),
            BlockStatus::Mature => Event::BlockMature(info),
            _ => return,
        };
        self.hooks.notify(&event, now_ms());
    }
}

/// Looks at the node (and the workers) for the webhooks until shutdown.
pub(crate) async fn watch_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let Some(notes) = shared.notifications.as_ref() else {
        return;
    };
    let wanted = notes.hooks.settings().wanted();
    let offline_after = notes.hooks.settings().worker_offline_after;
    let workers_every = (offline_after / 10).clamp(NODE_LOOK, Duration::from_secs(30));
    let mut tick = tokio::time::interval(NODE_LOOK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_workers_look = tokio::time::Instant::now();
    let observer = super::PoolObserver::new(shared.clone());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = now_ms();
        if wanted.contains(EventKind::NodeUnreachable) || wanted.contains(EventKind::NodeReachable)
        {
            let health = observer.node_health(now);
            let seen = NodeSeen {
                reachable: health.reachable,
                last_answer_ms: health.last_answer_ms,
                last_failure_ms: health.unreachable_since_ms.or(health.last_failure_ms),
                failures: health.failures,
            };
            let event = notes.watcher().node(seen, now);
            if let Some(event) = event {
                notes.hooks.notify(&event, now);
            }
        }
        if wanted.wants_workers() && last_workers_look.elapsed() >= workers_every {
            last_workers_look = tokio::time::Instant::now();
            // Copied out under the pool's read lock (names are shared, not copied), decided
            // after it is released.
            let seen: Vec<WorkerSeen> = observer.read_pool(|p| {
                p.statistics()
                    .workers()
                    .iter()
                    .filter(|w| !(&*w.user == OTHER && &*w.worker == OTHER))
                    .map(|w| WorkerSeen {
                        user: w.user.clone(),
                        worker: w.worker.clone(),
                        last_share_ms: w.last_share_ms,
                    })
                    .collect()
            });
            let events = notes.watcher().workers(seen, now);
            for event in events {
                notes.hooks.notify(&event, now);
            }
        }
    }
}
