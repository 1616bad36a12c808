//! What a webhook says: the events the pool notifies ([`Event`]), their names as the
//! configuration's `events` list and the `X-Blvm-Event` header spell them ([`EventKind`]), and
//! their JSON bodies ([`Event::to_json`]).
//!
//! A body carries what an operator acts on and nothing secret: no key, no RPC credential, no
//! ledger location; the node's refusal reason is the node's BIP22 reason text.

use std::sync::Arc;

use bitcoin::BlockHash;
use serde_json::{Value, json};

/// The kinds of event, as configured and as sent in the body's `event` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A miner's share met the network target: a block, saved and about to be submitted.
    BlockFound,
    /// The node accepted a found block.
    BlockAccepted,
    /// The node refused a found block (its reason in the body).
    BlockRefused,
    /// An accepted block left the best chain (a reorganisation): its payouts are void.
    BlockOrphaned,
    /// An accepted block has 100 confirmations: its payouts are spendable balances.
    BlockMature,
    /// A worker sent no share for `webhook_worker_offline_secs`.
    WorkerOffline,
    /// A worker notified offline sent a share again.
    WorkerOnline,
    /// The node could not be asked (a template or a block submission failed).
    NodeUnreachable,
    /// The node answered again after being notified unreachable.
    NodeReachable,
}

impl EventKind {
    /// Whether it is a worker's coming or going (the many, miner-named events), not a
    /// block's or the node's.
    pub fn is_about_a_worker(self) -> bool {
        matches!(self, EventKind::WorkerOffline | EventKind::WorkerOnline)
    }

    /// Every kind, in a stable order (metrics, defaults).
    pub const ALL: [EventKind; 9] = [
        EventKind::BlockFound,
        EventKind::BlockAccepted,
        EventKind::BlockRefused,
        EventKind::BlockOrphaned,
        EventKind::BlockMature,
        EventKind::WorkerOffline,
        EventKind::WorkerOnline,
        EventKind::NodeUnreachable,
        EventKind::NodeReachable,
    ];

    /// The name in the configuration, the body and the `X-Blvm-Event` header.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::BlockFound => "block_found",
            EventKind::BlockAccepted => "block_accepted",
            EventKind::BlockRefused => "block_refused",
            EventKind::BlockOrphaned => "block_orphaned",
            EventKind::BlockMature => "block_mature",
            EventKind::WorkerOffline => "worker_offline",
            EventKind::WorkerOnline => "worker_online",
            EventKind::NodeUnreachable => "node_unreachable",
            EventKind::NodeReachable => "node_reachable",
        }
    }

    /// The kind named `name`, if any.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Its bit in an [`EventSet`].
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of event kinds (a webhook's subscription).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSet(u16);

impl EventSet {
    /// Every kind.
    pub fn all() -> Self {
        EventSet::from_kinds(EventKind::ALL)
    }

    /// The given kinds.
    pub fn from_kinds(kinds: impl IntoIterator<Item = EventKind>) -> Self {
        EventSet(kinds.into_iter().fold(0, |bits, k| bits | k.bit()))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Whether any worker event is in the set (the worker table is only watched then).
    pub fn wants_workers(self) -> bool {
        self.contains(EventKind::WorkerOffline) || self.contains(EventKind::WorkerOnline)
    }
}

/// A found block as the events show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    /// Its hash.
    pub hash: BlockHash,
    /// Its height, when known (a block saved by an earlier run and resubmitted may not say).
    pub height: Option<u32>,
    /// What its coinbase pays in all (subsidy and fees, satoshis), when known.
    pub reward_sat: Option<u64>,
    /// The ledger user of the share that found it (payout address or account), when known.
    pub user: Option<String>,
    /// Its worker name (empty if none), when known.
    pub worker: Option<String>,
}

/// A worker as the events show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// The ledger user (payout address or account).
    pub user: Arc<str>,
    /// The worker name, empty if none.
    pub worker: Arc<str>,
    /// Its last share, accepted or refused (ms since the Unix epoch).
    pub last_share_ms: u64,
}

/// The node as the events show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// When the pool first saw it unreachable (ms since the Unix epoch).
    pub unreachable_since_ms: u64,
    /// Its last answer before that (ms), if any.
    pub last_answer_ms: Option<u64>,
    /// Failed requests to it since the pool started.
    pub failures: u64,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A block was found.
    BlockFound(BlockInfo),
    /// The node accepted it.
    BlockAccepted(BlockInfo),
    /// It left the best chain.
    BlockOrphaned(BlockInfo),
    /// It has 100 confirmations.
    BlockMature(BlockInfo),
    /// The node refused it.
    BlockRefused {
        /// The block.
        block: BlockInfo,
        /// `rejected` (the node's verdict) or `too_new_in_time` (its clock never caught up).
        kind: &'static str,
        /// The node's reason (BIP22 text).
        reason: String,
    },
    /// A worker went quiet.
    WorkerOffline {
        /// The worker.
        worker: WorkerInfo,
        /// How long it had been quiet when noticed (ms).
        quiet_ms: u64,
    },
    /// A worker notified offline is back.
    WorkerOnline {
        /// The worker.
        worker: WorkerInfo,
        /// How long it was quiet (ms: from its last share before, to its first share after).
        offline_ms: u64,
    },
    /// The node could not be asked.
    NodeUnreachable(NodeInfo),
    /// The node answers again.
    NodeReachable {
        /// The outage.
        node: NodeInfo,
        /// Its first answer after the outage (ms).
        answered_ms: u64,
    },
}

impl Event {
    /// Its kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::BlockFound(_) => EventKind::BlockFound,
            Event::BlockAccepted(_) => EventKind::BlockAccepted,
            Event::BlockRefused { .. } => EventKind::BlockRefused,
            Event::BlockOrphaned(_) => EventKind::BlockOrphaned,
            Event::BlockMature(_) => EventKind::BlockMature,
            Event::WorkerOffline { .. } => EventKind::WorkerOffline,
            Event::WorkerOnline { .. } => EventKind::WorkerOnline,
            Event::NodeUnreachable(_) => EventKind::NodeUnreachable,
            Event::NodeReachable { .. } => EventKind::NodeReachable,
        }
    }

    /// The JSON body: `id` (unique within a run, the same on every retry), `event`, `time_ms`
    /// (when the pool noticed it), `pool_id`, and the event's object (`block`, `worker` or
    /// `node`).
    pub fn to_json(&self, id: u64, time_ms: u64, pool_id: &str) -> Value {
        let mut body = json!({
            "id": id,
            "event": self.kind().name(),
            "time_ms": time_ms,
            "pool_id": pool_id,
        });
        let (key, value) = match self {
            Event::BlockFound(b) => ("block", block_json(b, "found", None)),
            Event::BlockAccepted(b) => ("block", block_json(b, "accepted", None)),
            Event::BlockOrphaned(b) => ("block", block_json(b, "orphaned", None)),
            Event::BlockMature(b) => ("block", block_json(b, "mature", None)),
            Event::BlockRefused {
                block,
                kind,
                reason,
            } => ("block", block_json(block, kind, Some(reason))),
            Event::WorkerOffline { worker, quiet_ms } => {
                let mut w = worker_json(worker);
                w["quiet_secs"] = json!(quiet_ms / 1000);
                ("worker", w)
            }
            Event::WorkerOnline { worker, offline_ms } => {
                let mut w = worker_json(worker);
                w["offline_secs"] = json!(offline_ms / 1000);
                ("worker", w)
            }
            Event::NodeUnreachable(n) => ("node", node_json(n, None)),
            Event::NodeReachable { node, answered_ms } => {
                ("node", node_json(node, Some(*answered_ms)))
            }
        };
        body[key] = value;
        body
    }
}

fn block_json(b: &BlockInfo, status: &str, reason: Option<&String>) -> Value {
    json!({
        "hash": b.hash.to_string(),
        "height": b.height,
        "reward_sat": b.reward_sat,
        "user": b.user,
        "worker": b.worker,
        "status": status,
        "reason": reason,
    })
}

fn worker_json(w: &WorkerInfo) -> Value {
    json!({
        "user": &*w.user,
        "worker": &*w.worker,
        "last_share_ms": w.last_share_ms,
    })
}

fn node_json(n: &NodeInfo, answered_ms: Option<u64>) -> Value {
    let mut v = json!({
        "reachable": answered_ms.is_some(),
        "unreachable_since_ms": n.unreachable_since_ms,
        "last_answer_ms": n.last_answer_ms,
        "failures": n.failures,
        "error": "unavailable",
    });
    if let Some(at) = answered_ms {
        v["answered_ms"] = json!(at);
        v["down_secs"] = json!(at.saturating_sub(n.unreachable_since_ms) / 1000);
        v.as_object_mut().map(|o| o.remove("error"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    #[test]
    fn names_round_trip_and_sets_hold_what_they_were_given() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_name(k.name()), Some(k));
        }
        assert_eq!(EventKind::from_name("block"), None);
        let s = EventSet::from_kinds([EventKind::BlockFound, EventKind::NodeReachable]);
        assert!(s.contains(EventKind::BlockFound) && s.contains(EventKind::NodeReachable));
        assert!(!s.contains(EventKind::BlockAccepted) && !s.wants_workers());
        assert!(EventSet::all().wants_workers());
    }

    #[test]
    fn a_refused_block_says_why_and_who_found_it() {
        let e = Event::BlockRefused {
            block: BlockInfo {
                hash: BlockHash::all_zeros(),
                height: Some(12),
                reward_sat: Some(5_000_000_000),
                user: Some("alice".into()),
                worker: Some("rig1".into()),
            },
            kind: "rejected",
            reason: "bad-diffbits".into(),
        };
        let j = e.to_json(7, 1_000, "/pool/");
        assert_eq!(j["event"], "block_refused");
        assert_eq!(j["id"], 7);
        assert_eq!(j["pool_id"], "/pool/");
        assert_eq!(j["block"]["height"], 12);
        assert_eq!(j["block"]["user"], "alice");
        assert_eq!(j["block"]["worker"], "rig1");
        assert_eq!(j["block"]["status"], "rejected");
        assert_eq!(j["block"]["reason"], "bad-diffbits");
    }
}
