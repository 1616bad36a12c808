//! What to notify and when, decided without I/O: the [`Watcher`] is fed what the shell observes
//! (found blocks and the node's verdicts as they happen; the node's health and the workers'
//! last shares each time the shell looks) with the time, and answers with the [`Event`]s to
//! send. No clock, no socket, no task: its tests replay observations deterministically.
//!
//! The rules:
//! * a block found is notified at once; its verdict (accepted, refused) carries the finder and
//!   the reward remembered from the find (the last [`REMEMBERED_BLOCKS`] finds);
//! * a worker whose last share is `offline_after_ms` old is notified offline once, and online
//!   once when a newer share arrives; a worker the pool forgets (an hour without a share) is
//!   forgotten here too, silently; a worker first seen is not an event;
//! * the node is notified unreachable when the shell sees its last failure after its last
//!   answer, and reachable again at its next answer, once each per outage.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bitcoin::BlockHash;

use super::event::{BlockInfo, Event, NodeInfo, WorkerInfo};

/// Found blocks remembered for their verdicts.
pub const REMEMBERED_BLOCKS: usize = 64;

/// What the shell saw of the node (from the server's observations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSeen {
    /// Its last answer came after its last failure.
    pub reachable: bool,
    /// Its last answer (ms), if any.
    pub last_answer_ms: Option<u64>,
    /// While unreachable: when the outage began (its first failure after its last answer);
    /// otherwise its last failure (ms), if any.
    pub last_failure_ms: Option<u64>,
    /// Failed requests since the start.
    pub failures: u64,
}

/// One worker's last share, as the pool's worker table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSeen {
    /// The ledger user.
    pub user: Arc<str>,
    /// The worker name.
    pub worker: Arc<str>,
    /// Its last share (ms).
    pub last_share_ms: u64,
}

#[derive(Debug)]
struct WorkerState {
    last_share_ms: u64,
    /// Notified offline, with its last share then.
    offline_since: Option<u64>,
    /// The pass that last saw it (those not seen in a pass were forgotten by the pool).
    seen_in_pass: u64,
}

/// The decisions (see the module's comment).
#[derive(Debug)]
pub struct Watcher {
    offline_after_ms: u64,
    blocks: VecDeque<BlockInfo>,
    workers: HashMap<(Arc<str>, Arc<str>), WorkerState>,
    pass: u64,
    /// The outage notified, if the node is notified unreachable.
    outage: Option<NodeInfo>,
}

impl Watcher {
    /// A watcher calling a worker offline after `offline_after_ms` without a share.
    pub fn new(offline_after_ms: u64) -> Self {
        Watcher {
            offline_after_ms: offline_after_ms.max(1),
            blocks: VecDeque::new(),
            workers: HashMap::new(),
            pass: 0,
            outage: None,
        }
    }

    /// A block was found.
    pub fn block_found(&mut self, block: BlockInfo) -> Event {
        if let Some(old) = self.blocks.iter().position(|b| b.hash == block.hash) {
            self.blocks.remove(old);
        }
        if self.blocks.len() >= REMEMBERED_BLOCKS {
            self.blocks.pop_front();
        }
        self.blocks.push_back(block.clone());
        Event::BlockFound(block)
    }

    /// What is remembered of block `hash` (its height from `height` when not).
    fn block(&self, hash: BlockHash, height: Option<u32>) -> BlockInfo {
        self.blocks
            .iter()
            .find(|b| b.hash == hash)
            .cloned()
            .unwrap_or(BlockInfo {
                hash,
                height,
                reward_sat: None,
                user: None,
                worker: None,
            })
    }

    /// The node accepted block `hash`.
    pub fn block_accepted(&mut self, hash: BlockHash, height: Option<u32>) -> Event {
        Event::BlockAccepted(self.block(hash, height))
    }

    /// The node refused block `hash` for good (`kind`: `rejected` or `too_new_in_time`).
    pub fn block_refused(
        &mut self,
        hash: BlockHash,
        height: Option<u32>,
        kind: &'static str,
        reason: String,
    ) -> Event {
        Event::BlockRefused {
            block: self.block(hash, height),
            kind,
            reason,
        }
    }

    /// The node as seen at `now_ms`: an event when it changed from reachable to not, or back.
    pub fn node(&mut self, seen: NodeSeen, now_ms: u64) -> Option<Event> {
        match (&self.outage, seen.reachable) {
            (None, false) => {
                let info = NodeInfo {
                    unreachable_since_ms: seen.last_failure_ms.unwrap_or(now_ms),
                    last_answer_ms: seen.last_answer_ms,
                    failures: seen.failures,
                };
                self.outage = Some(info.clone());
                Some(Event::NodeUnreachable(info))
            }
            (Some(_), true) => {
                let mut node = self.outage.take()?;
                node.failures = seen.failures;
                Some(Event::NodeReachable {
                    node,
                    answered_ms: seen.last_answer_ms.unwrap_or(now_ms),
                })
            }
            _ => None,
        }
    }

    /// Every worker of the pool's table, seen at `now_ms`: the workers that went offline or
    /// came back. Workers missing from `workers` were forgotten by the pool.
    pub fn workers(
        &mut self,
        workers: impl IntoIterator<Item = WorkerSeen>,
        now_ms: u64,
    ) -> Vec<Event> {
        self.pass += 1;
        let pass = self.pass;
        let mut events = Vec::new();
        for seen in workers {
            let state = self
                .workers
                .entry((seen.user.clone(), seen.worker.clone()))
                .or_insert(WorkerState {
                    last_share_ms: seen.last_share_ms,
                    offline_since: None,
                    seen_in_pass: pass,
                });
            state.seen_in_pass = pass;
            state.last_share_ms = state.last_share_ms.max(seen.last_share_ms);
            let info = || WorkerInfo {
                user: seen.user.clone(),
                worker: seen.worker.clone(),
                last_share_ms: state.last_share_ms,
            };
            match state.offline_since {
                Some(before) if state.last_share_ms > before => {
                    state.offline_since = None;
                    events.push(Event::WorkerOnline {
                        worker: info(),
                        offline_ms: state.last_share_ms - before,
                    });
                }
                None => {
                    let quiet = now_ms.saturating_sub(state.last_share_ms);
                    if quiet >= self.offline_after_ms {
                        state.offline_since = Some(state.last_share_ms);
                        events.push(Event::WorkerOffline {
                            worker: info(),
                            quiet_ms: quiet,
                        });
                    }
                }
                Some(_) => {}
            }
        }
        self.workers.retain(|_, w| w.seen_in_pass == pass);
        events
    }

    /// Workers watched now.
    pub fn workers_watched(&self) -> usize {
        self.workers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    fn seen(user: &str, worker: &str, last: u64) -> WorkerSeen {
        WorkerSeen {
            user: user.into(),
            worker: worker.into(),
            last_share_ms: last,
        }
    }

    fn names(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind().name()).collect()
    }

    #[test]
    fn a_quiet_worker_is_offline_once_and_online_once_when_it_shares_again() {
        let mut w = Watcher::new(10_000);
        // First seen: not an event, even if quiet for a while already.
        assert!(w.workers([seen("alice", "rig", 1_000)], 5_000).is_empty());
        assert!(w.workers([seen("alice", "rig", 1_000)], 10_999).is_empty());
        let off = w.workers([seen("alice", "rig", 1_000)], 11_000);
        assert_eq!(names(&off), ["worker_offline"]);
        match &off[0] {
            Event::WorkerOffline { worker, quiet_ms } => {
                assert_eq!((&*worker.user, &*worker.worker), ("alice", "rig"));
                assert_eq!((worker.last_share_ms, *quiet_ms), (1_000, 10_000));
            }
            other => panic!("{other:?}"),
        }
        // Said once.
        assert!(w.workers([seen("alice", "rig", 1_000)], 60_000).is_empty());
        let on = w.workers([seen("alice", "rig", 61_000)], 61_500);
        assert_eq!(names(&on), ["worker_online"]);
        match &on[0] {
            Event::WorkerOnline { offline_ms, .. } => assert_eq!(*offline_ms, 60_000),
            other => panic!("{other:?}"),
        }
        assert!(w.workers([seen("alice", "rig", 61_000)], 70_000).is_empty());
        // And offline again, later.
        assert_eq!(
            names(&w.workers([seen("alice", "rig", 61_000)], 71_000)),
            ["worker_offline"]
        );
    }

    #[test]
    fn workers_are_separate_and_forgotten_with_the_pool() {
        let mut w = Watcher::new(1_000);
        let both = [seen("alice", "a", 0), seen("alice", "b", 500)];
        assert!(w.workers(both.clone(), 0).is_empty());
        assert_eq!(names(&w.workers(both.clone(), 1_000)), ["worker_offline"]);
        assert_eq!(names(&w.workers(both.clone(), 1_500)), ["worker_offline"]);
        assert_eq!(w.workers_watched(), 2);
        // The pool forgot "a": so does the watcher, silently; it comes back as new.
        assert!(w.workers([seen("alice", "b", 500)], 2_000).is_empty());
        assert_eq!(w.workers_watched(), 1);
        assert!(w.workers([seen("alice", "a", 3_000)], 3_000).is_empty());
    }

    #[test]
    fn the_node_is_unreachable_once_per_outage_and_reachable_after() {
        let mut w = Watcher::new(1_000);
        let up = |answer| NodeSeen {
            reachable: true,
            last_answer_ms: Some(answer),
            last_failure_ms: None,
            failures: 0,
        };
        assert_eq!(w.node(up(100), 100), None);
        let down = NodeSeen {
            reachable: false,
            last_answer_ms: Some(100),
            last_failure_ms: Some(400),
            failures: 3,
        };
        let e = w.node(down, 500).expect("an event");
        assert_eq!(
            e,
            Event::NodeUnreachable(NodeInfo {
                unreachable_since_ms: 400,
                last_answer_ms: Some(100),
                failures: 3,
            })
        );
        assert_eq!(
            w.node(
                NodeSeen {
                    failures: 9,
                    ..down
                },
                900
            ),
            None
        );
        let back = NodeSeen {
            failures: 9,
            ..up(2_000)
        };
        match w.node(back, 2_100) {
            Some(Event::NodeReachable { node, answered_ms }) => {
                assert_eq!((node.unreachable_since_ms, node.failures), (400, 9));
                assert_eq!(answered_ms, 2_000);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(w.node(back, 3_000), None);
    }

    #[test]
    fn verdicts_carry_what_the_find_said_and_memory_is_bounded() {
        let mut w = Watcher::new(1_000);
        let hash = |n: u8| BlockHash::from_byte_array([n; 32]);
        for n in 0..=REMEMBERED_BLOCKS as u8 {
            w.block_found(BlockInfo {
                hash: hash(n),
                height: Some(u32::from(n)),
                reward_sat: Some(50),
                user: Some("alice".into()),
                worker: Some("rig".into()),
            });
        }
        match w.block_accepted(hash(REMEMBERED_BLOCKS as u8), None) {
            Event::BlockAccepted(b) => {
                assert_eq!(b.user.as_deref(), Some("alice"));
                assert_eq!(b.height, Some(REMEMBERED_BLOCKS as u32));
            }
            other => panic!("{other:?}"),
        }
        // The oldest was forgotten: its verdict says what the submitter knows.
        match w.block_refused(hash(0), Some(7), "rejected", "bad".into()) {
            Event::BlockRefused { block, .. } => {
                assert_eq!((block.user, block.height), (None, Some(7)));
            }
            other => panic!("{other:?}"),
        }
    }
}
