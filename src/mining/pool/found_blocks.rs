//! Found blocks after the share that found them: the record of recent blocks and the node's
//! verdicts, and the submission schedule. Blocks are submitted one at a time, oldest first
//! (blocks left pending by the last run before any found since); a node that cannot be
//! reached gets the block again after 200 ms, doubling up to 5 s, and at once when the node is
//! reported back; at a stop each block gets one last try and stays pending for the next start
//! if the node still cannot answer.
//!
//! A block whose time is more than two hours ahead of the node's clock is refused by the node
//! for now, not judged invalid: it becomes valid as the node's clock advances. Such a block
//! waits apart (the blocks behind it are not held up) and is submitted again after 1 s,
//! doubling up to 30 s, or sooner at the moment a node whose clock agrees with ours takes it
//! (the block's time minus two hours). It is filed as rejected once the chain has moved to a
//! tip it does not build on (after one last try) or 2 h 10 min after the first such refusal:
//! a node whose clock is that far behind will not take it in time. The shell reports new tips
//! with [`FoundBlocks::new_tip`].
//!
//! Sans-IO: the shell asks [`FoundBlocks::poll_submission`] what to submit, sleeps until
//! [`FoundBlocks::poll_timeout`], and reports the node's answer with
//! [`FoundBlocks::handle_answer`]; time is milliseconds since the Unix epoch.

use std::collections::VecDeque;

use bitcoin::{Block, BlockHash};

use super::block_store::{BlockStore, BlockStoreError, BlockVerdict};

/// First wait before resubmitting a block the node could not take (ms), doubled up to
/// [`RESUBMIT_MAX_DELAY_MS`].
pub const RESUBMIT_FIRST_DELAY_MS: u64 = 200;
/// Longest wait between two submissions of a block (ms).
pub const RESUBMIT_MAX_DELAY_MS: u64 = 5_000;
/// First wait before resubmitting a block the node called too new for its clock (ms), doubled
/// up to [`CLOCK_RETRY_MAX_DELAY_MS`].
pub const CLOCK_RETRY_FIRST_DELAY_MS: u64 = 1_000;
/// Longest wait between two submissions of a block too new for the node's clock (ms).
pub const CLOCK_RETRY_MAX_DELAY_MS: u64 = 30_000;
/// How long after the node first called a block too new for its clock the block is still
/// submitted (ms): the two hours by which a block may lead a node's clock, and ten minutes.
pub const CLOCK_RETRY_GIVE_UP_MS: u64 = (2 * 3600 + 10 * 60) * 1000;
/// Consensus: a block's time may lead the node's clock by at most two hours (s).
const MAX_FUTURE_BLOCK_TIME_SECS: u64 = 2 * 3600;
/// Found blocks remembered for the stats page.
const RECENT_BLOCKS: usize = 64;

/// A block a miner found, and what the node said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRecord {
    /// Block hash (display order hex).
    pub hash: String,
    /// Height.
    pub height: u32,
    /// The finder's user identity.
    pub user_identity: String,
    /// None while the submission is in flight; then whether the node accepted it.
    pub accepted: Option<bool>,
}

/// What the node answered to a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAnswer {
    /// The node took the block.
    Accepted,
    /// The node refused it (a verdict: not retried).
    Rejected,
    /// The node refused it because its time is more than two hours ahead of the node's clock
    /// (not a verdict: retried until the node's clock allows it, within bounds).
    TooNewInTime,
    /// The node could not be asked (down, restarting): retried.
    Unavailable,
}

/// A block to hand to the node now.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The block.
    pub block: Block,
    /// Its hash.
    pub hash: BlockHash,
    /// Its height, when known (blocks from the last run: not known).
    pub height: Option<u32>,
    /// 1 for the first submission.
    pub attempt: u64,
}

/// What follows from the node's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmissionOutcome {
    /// Accepted, at `attempt`, `after_ms` after the first attempt: move to submitted.
    Accepted {
        /// Which attempt.
        attempt: u64,
        /// Milliseconds since the first attempt.
        after_ms: u64,
    },
    /// Refused: move to rejected (the work may be at fault: fetch a template now).
    Rejected,
    /// Not reachable: submitted again at `retry_at_ms` or when the node is back.
    Retrying {
        /// Which attempt failed.
        attempt: u64,
        /// When the next attempt is due.
        retry_at_ms: u64,
    },
    /// Too new for the node's clock: submitted again at `retry_at_ms`; the blocks behind it
    /// are not held up meanwhile.
    WaitingForNodeClock {
        /// Which attempt was refused.
        attempt: u64,
        /// When the next attempt is due.
        retry_at_ms: u64,
        /// Whether this is the node's first such refusal of the block.
        first_refusal: bool,
    },
    /// Not reachable while stopping: the block stays pending for the next start.
    KeptForNextStart,
    /// An answer for a block that is not being submitted: ignored.
    Unexpected,
}

impl SubmissionOutcome {
    /// The verdict the block store must record, if any.
    pub fn verdict(self) -> Option<BlockVerdict> {
        match self {
            SubmissionOutcome::Accepted { .. } => Some(BlockVerdict::Submitted),
            SubmissionOutcome::Rejected => Some(BlockVerdict::Rejected),
            _ => None,
        }
    }

    /// Records the verdict in `store` (nothing for a block that stays pending).
    pub fn settle(self, store: &dyn BlockStore, hash: BlockHash) -> Result<(), BlockStoreError> {
        match self.verdict() {
            Some(v) => store.mark(hash, v),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
struct Queued {
    block: Block,
    hash: BlockHash,
    height: Option<u32>,
    attempts: u64,
    first_try_ms: Option<u64>,
    next_try_ms: u64,
    delay_ms: u64,
    in_flight: bool,
    /// The node was reported back while an attempt was in flight: if it fails, retry at once.
    node_back: bool,
    /// Set once the node has called the block too new for its clock.
    too_new: Option<TooNewInTime>,
}

/// A block the node called too new for its clock, and its retry schedule.
#[derive(Debug, Clone, Copy)]
struct TooNewInTime {
    /// When the node first said so.
    first_answer_ms: u64,
    /// The wait after the next refusal.
    delay_ms: u64,
    /// Waiting apart for the node's clock; false while the node cannot be reached (then the
    /// block waits in order, like any other).
    apart: bool,
    /// The chain has moved to a tip the block does not build on: the next refusal is final.
    stale: bool,
}

impl Queued {
    /// Whether the block waits apart for the node's clock (blocks behind it may go first).
    fn waits_for_node_clock(&self) -> bool {
        self.too_new.is_some_and(|t| t.apart)
    }

    /// The node called the block too new for its clock at `now_ms`: what follows (when to
    /// submit it again), or `None` to give up (its tip is gone, or the node's clock is too far
    /// behind).
    fn wait_for_node_clock(&mut self, now_ms: u64) -> Option<SubmissionOutcome> {
        let first_refusal = self.too_new.is_none();
        let wait = self.too_new.get_or_insert(TooNewInTime {
            first_answer_ms: now_ms,
            delay_ms: CLOCK_RETRY_FIRST_DELAY_MS,
            apart: true,
            stale: false,
        });
        if wait.stale || now_ms.saturating_sub(wait.first_answer_ms) >= CLOCK_RETRY_GIVE_UP_MS {
            return None;
        }
        wait.apart = true;
        let mut at = now_ms.saturating_add(wait.delay_ms);
        wait.delay_ms = wait
            .delay_ms
            .saturating_mul(2)
            .min(CLOCK_RETRY_MAX_DELAY_MS);
        // A node whose clock agrees with ours takes the block once the block's time is no
        // more than two hours ahead: try then if that comes first.
        let takes_it_at_ms = u64::from(self.block.header.time)
            .saturating_sub(MAX_FUTURE_BLOCK_TIME_SECS)
            .saturating_mul(1000);
        if takes_it_at_ms > now_ms {
            at = at.min(takes_it_at_ms);
        }
        self.next_try_ms = at;
        Some(SubmissionOutcome::WaitingForNodeClock {
            attempt: self.attempts,
            retry_at_ms: at,
            first_refusal,
        })
    }
}

/// The found-block record and the submission schedule.
#[derive(Debug, Default)]
pub struct FoundBlocks {
    recent: VecDeque<BlockRecord>,
    accepted: u64,
    rejected: u64,
    queue: VecDeque<Queued>,
    stopping: bool,
    /// The last tip the node announced ([`Self::tip_announced`]).
    last_tip: Option<BlockHash>,
    /// Whether the node was found unreachable since its last news.
    node_down: bool,
}

impl FoundBlocks {
    /// Nothing found yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A miner found a block (for the record; submission is [`queue`](Self::queue)).
    pub fn record_found(&mut self, hash: BlockHash, height: u32, user_identity: &str) {
        self.recent.push_back(BlockRecord {
            hash: hash.to_string(),
            height,
            user_identity: user_identity.to_owned(),
            accepted: None,
        });
        if self.recent.len() > RECENT_BLOCKS {
            self.recent.pop_front();
        }
    }

    /// What the node said about a block (counts and the record).
    pub fn record_verdict(&mut self, hash: &str, accepted: bool) {
        if accepted {
            self.accepted += 1;
        } else {
            self.rejected += 1;
        }
        if let Some(b) = self.recent.iter_mut().rev().find(|b| b.hash == hash) {
            b.accepted = Some(accepted);
        }
    }

    /// Recently found blocks, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &BlockRecord> {
        self.recent.iter()
    }

    /// Blocks the node accepted.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Blocks the node refused.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// A block to submit (already saved as pending in the block store), after those queued
    /// before it; due at once.
    pub fn queue(&mut self, block: Block, height: Option<u32>, now_ms: u64) {
        let hash = block.block_hash();
        if self.queue.iter().any(|q| q.hash == hash) {
            return;
        }
        self.queue.push_back(Queued {
            block,
            hash,
            height,
            attempts: 0,
            first_try_ms: None,
            next_try_ms: now_ms,
            delay_ms: RESUBMIT_FIRST_DELAY_MS,
            in_flight: false,
            node_back: false,
            too_new: None,
        });
    }

    /// Queues every block `store` holds as pending (left by the last run), oldest first;
    /// returns where each was kept, for the log. Call before any new block can be saved, so
    /// that no block is submitted twice.
    pub fn restore(&mut self, store: &dyn BlockStore, now_ms: u64) -> Vec<(BlockHash, String)> {
        store
            .pending()
            .into_iter()
            .map(|s| {
                let hash = s.block.block_hash();
                self.queue(s.block, None, now_ms);
                (hash, s.location)
            })
            .collect()
    }

    /// Blocks waiting for the node's answer (including the one in flight).
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// The block to submit now, if one is due and none is in flight.
    pub fn poll_submission(&mut self, now_ms: u64) -> Option<Submission> {
        if self.queue.iter().any(|q| q.in_flight) {
            return None;
        }
        let index = self.due(now_ms)?;
        let q = &mut self.queue[index];
        q.in_flight = true;
        q.node_back = false;
        q.attempts += 1;
        q.first_try_ms.get_or_insert(now_ms);
        Some(Submission {
            block: q.block.clone(),
            hash: q.hash,
            height: q.height,
            attempt: q.attempts,
        })
    }

    /// Which block goes next: while stopping, the oldest; otherwise a block waiting apart for
    /// the node's clock whose time has come, or else the first of the others, in order, if it
    /// is due.
    fn due(&self, now_ms: u64) -> Option<usize> {
        if self.stopping {
            return (!self.queue.is_empty()).then_some(0);
        }
        for (index, q) in self.queue.iter().enumerate() {
            let due = q.next_try_ms <= now_ms;
            if !q.waits_for_node_clock() {
                return due.then_some(index);
            }
            if due {
                return Some(index);
            }
        }
        None
    }

    /// When the next submission is due, if one waits (none while one is in flight).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.queue.is_empty() || self.queue.iter().any(|q| q.in_flight) {
            return None;
        }
        if self.stopping {
            return Some(0);
        }
        let mut at: Option<u64> = None;
        for q in &self.queue {
            at = Some(at.map_or(q.next_try_ms, |a| a.min(q.next_try_ms)));
            if !q.waits_for_node_clock() {
                break;
            }
        }
        at
    }

    /// The chain's tip is now `tip`. A block waiting for the node's clock that does not build
    /// on it (nor is it) has lost its chance: it gets one last try at once, and is filed as
    /// rejected if the node still calls it too new.
    pub fn new_tip(&mut self, tip: BlockHash) {
        for q in &mut self.queue {
            let Some(wait) = q.too_new.as_mut() else {
                continue;
            };
            if wait.stale || q.block.header.prev_blockhash == tip {
                continue;
            }
            // Our own block as the tip: the node has it; the last try hears so.
            wait.stale = q.hash != tip;
            q.next_try_ms = 0;
        }
    }

    /// The node was found unreachable (its next news says it is back).
    pub fn node_unreachable(&mut self) {
        self.node_down = true;
    }

    /// The node announced `tip`; returns whether that says it is back: a tip not announced
    /// before, or the first news since it was found unreachable. A backend announces the same
    /// tip again and again while its templates fail (a node that answers its tip but throttles
    /// the rest), which must not restart the backoff of a block waiting for it: it was
    /// resubmitted every 50 ms to a node already overloaded.
    pub fn tip_announced(&mut self, tip: BlockHash) -> bool {
        let news = self.last_tip != Some(tip) || self.node_down;
        self.last_tip = Some(tip);
        self.node_down = false;
        news
    }

    /// The node is reachable again (it announced a tip or a template): the block waiting for
    /// it is due at once (or as soon as the attempt in flight fails); blocks waiting for the
    /// node's clock keep their time. Returns whether a block the node could not take was
    /// waiting.
    pub fn node_back(&mut self, now_ms: u64) -> bool {
        self.node_down = false;
        let Some(head) = self
            .queue
            .iter_mut()
            .find(|q| q.in_flight || !q.waits_for_node_clock())
        else {
            return false;
        };
        if head.attempts == 0 {
            return false;
        }
        if head.in_flight {
            head.node_back = true;
        } else {
            head.next_try_ms = head.next_try_ms.min(now_ms);
        }
        true
    }

    /// The pool is stopping: every block gets one last try, at once; one the node cannot take
    /// stays pending for the next start.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// The node's answer for the submission of `hash`.
    pub fn handle_answer(
        &mut self,
        hash: BlockHash,
        answer: NodeAnswer,
        now_ms: u64,
    ) -> SubmissionOutcome {
        let Some(index) = self
            .queue
            .iter()
            .position(|q| q.hash == hash && q.in_flight)
        else {
            return SubmissionOutcome::Unexpected;
        };
        let head = &mut self.queue[index];
        head.in_flight = false;
        let outcome = match answer {
            NodeAnswer::Accepted => SubmissionOutcome::Accepted {
                attempt: head.attempts,
                after_ms: now_ms.saturating_sub(head.first_try_ms.unwrap_or(now_ms)),
            },
            NodeAnswer::Rejected => SubmissionOutcome::Rejected,
            NodeAnswer::Unavailable | NodeAnswer::TooNewInTime if self.stopping => {
                SubmissionOutcome::KeptForNextStart
            }
            NodeAnswer::TooNewInTime => match head.wait_for_node_clock(now_ms) {
                Some(waiting) => return waiting,
                None => SubmissionOutcome::Rejected,
            },
            NodeAnswer::Unavailable => {
                // Back in order with the others until the node answers again.
                if let Some(wait) = head.too_new.as_mut() {
                    wait.apart = false;
                }
                head.next_try_ms = if head.node_back {
                    now_ms
                } else {
                    now_ms.saturating_add(head.delay_ms)
                };
                head.node_back = false;
                head.delay_ms = (head.delay_ms * 2).min(RESUBMIT_MAX_DELAY_MS);
                return SubmissionOutcome::Retrying {
                    attempt: head.attempts,
                    retry_at_ms: head.next_try_ms,
                };
            }
        };
        self.queue.remove(index);
        match outcome {
            SubmissionOutcome::Accepted { .. } => self.record_verdict(&hash.to_string(), true),
            SubmissionOutcome::Rejected => self.record_verdict(&hash.to_string(), false),
            _ => {}
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, CompactTarget, ScriptBuf, Transaction, TxMerkleNode, TxOut};

    use super::*;
    use crate::mining::pool::MemoryBlockStore;

    fn block(n: u32) -> Block {
        let coinbase = Transaction {
            version: bitcoin::transaction::Version::ONE,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: Vec::new(),
            output: vec![TxOut {
                value: Amount::from_sat(u64::from(n)),
                script_pubkey: ScriptBuf::new(),
            }],
        };
        Block {
            header: bitcoin::block::Header {
                version: bitcoin::block::Version::TWO,
                prev_blockhash: BlockHash::all_zeros(),
                merkle_root: TxMerkleNode::all_zeros(),
                time: 1_700_000_000,
                bits: CompactTarget::from_consensus(0x207f_ffff),
                nonce: n,
            },
            txdata: vec![coinbase],
        }
    }

    /// Submits the due block and answers it; `None` if nothing was due.
    fn attempt(
        f: &mut FoundBlocks,
        now: u64,
        answer: NodeAnswer,
    ) -> Option<(u64, SubmissionOutcome)> {
        let s = f.poll_submission(now)?;
        Some((s.attempt, f.handle_answer(s.hash, answer, now)))
    }

    #[test]
    fn backoff_starts_at_200_ms_and_doubles_up_to_5_s() {
        let mut f = FoundBlocks::new();
        f.queue(block(1), Some(1), 1_000);
        assert_eq!(f.poll_timeout(), Some(1_000));
        let mut now = 1_000;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let (_, outcome) = attempt(&mut f, now, NodeAnswer::Unavailable).unwrap();
            let SubmissionOutcome::Retrying { retry_at_ms, .. } = outcome else {
                panic!("{outcome:?}");
            };
            assert_eq!(f.poll_timeout(), Some(retry_at_ms));
            // Not due before its time.
            assert!(f.poll_submission(retry_at_ms - 1).is_none());
            waits.push(retry_at_ms - now);
            now = retry_at_ms;
        }
        assert_eq!(waits, [200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000]);
        let (n, outcome) = attempt(&mut f, now + 7, NodeAnswer::Accepted).unwrap();
        assert_eq!(n, 9);
        assert_eq!(
            outcome,
            SubmissionOutcome::Accepted {
                attempt: 9,
                after_ms: now + 7 - 1_000
            }
        );
        assert_eq!((f.waiting(), f.poll_timeout()), (0, None));
    }

    #[test]
    fn a_node_reported_back_gets_the_block_at_once() {
        let mut f = FoundBlocks::new();
        // Before the first attempt, "node back" changes nothing (the block is due anyway).
        f.queue(block(1), Some(1), 0);
        assert!(!f.node_back(0));
        let (_, o) = attempt(&mut f, 0, NodeAnswer::Unavailable).unwrap();
        assert_eq!(
            o,
            SubmissionOutcome::Retrying {
                attempt: 1,
                retry_at_ms: 200
            }
        );
        attempt(&mut f, 200, NodeAnswer::Unavailable).unwrap();
        assert_eq!(f.poll_timeout(), Some(600));
        // Waiting: the node's return makes it due now.
        assert!(f.node_back(300));
        assert_eq!(f.poll_timeout(), Some(300));
        let s = f.poll_submission(300).unwrap();
        assert_eq!(s.attempt, 3);
        // Announced while an attempt is in flight: a failure is retried at once, and the
        // backoff still grows.
        assert!(f.node_back(310));
        assert_eq!(
            f.handle_answer(s.hash, NodeAnswer::Unavailable, 320),
            SubmissionOutcome::Retrying {
                attempt: 3,
                retry_at_ms: 320
            }
        );
        let (_, o) = attempt(&mut f, 320, NodeAnswer::Unavailable).unwrap();
        assert_eq!(
            o,
            SubmissionOutcome::Retrying {
                attempt: 4,
                retry_at_ms: 320 + 1_600
            }
        );
    }

    #[test]
    fn blocks_go_one_at_a_time_in_order() {
        let mut f = FoundBlocks::new();
        f.queue(block(1), Some(1), 0);
        f.queue(block(2), Some(2), 0);
        f.queue(block(1), Some(1), 0);
        assert_eq!(f.waiting(), 2);
        let first = f.poll_submission(0).unwrap();
        assert_eq!(first.hash, block(1).block_hash());
        // The second waits for the first's answer.
        assert!(f.poll_submission(0).is_none());
        assert_eq!(f.poll_timeout(), None);
        // An answer for another block is not taken for the one in flight.
        assert_eq!(
            f.handle_answer(block(2).block_hash(), NodeAnswer::Accepted, 0),
            SubmissionOutcome::Unexpected
        );
        f.handle_answer(first.hash, NodeAnswer::Rejected, 0);
        assert_eq!(f.poll_submission(0).unwrap().hash, block(2).block_hash());
    }

    #[test]
    fn verdicts_are_counted_recorded_and_settled_in_the_store() {
        let store = MemoryBlockStore::new();
        let mut f = FoundBlocks::new();
        for n in [1, 2] {
            let b = block(n);
            store.save_pending(&b).unwrap();
            f.record_found(b.block_hash(), n, "miner");
            f.queue(b, Some(n), 0);
        }
        for answer in [NodeAnswer::Accepted, NodeAnswer::Rejected] {
            let s = f.poll_submission(0).unwrap();
            let outcome = f.handle_answer(s.hash, answer, 5);
            outcome.settle(&store, s.hash).unwrap();
        }
        assert_eq!((f.accepted(), f.rejected()), (1, 1));
        let verdicts: Vec<_> = f.recent().map(|r| (r.height, r.accepted)).collect();
        assert_eq!(verdicts, [(1, Some(true)), (2, Some(false))]);
        assert_eq!(
            store.state(block(1).block_hash()),
            Some(Some(BlockVerdict::Submitted))
        );
        assert_eq!(
            store.state(block(2).block_hash()),
            Some(Some(BlockVerdict::Rejected))
        );
        assert!(store.pending().is_empty());
    }

    #[test]
    fn a_block_left_pending_at_a_stop_is_submitted_at_the_next_start() {
        let store = MemoryBlockStore::new();
        let mut run1 = FoundBlocks::new();
        store.save_pending(&block(1)).unwrap();
        run1.queue(block(1), Some(1), 0);
        attempt(&mut run1, 0, NodeAnswer::Unavailable).unwrap();
        // Found while the first waits, saved at once.
        store.save_pending(&block(2)).unwrap();
        run1.queue(block(2), Some(2), 50);
        // Stopping: each gets one last try without waiting, then stays pending.
        run1.stop();
        assert_eq!(run1.poll_timeout(), Some(0));
        for _ in 0..2 {
            let (_, o) = attempt(&mut run1, 60, NodeAnswer::Unavailable).unwrap();
            assert_eq!(o, SubmissionOutcome::KeptForNextStart);
            assert_eq!(o.verdict(), None);
        }
        assert_eq!(run1.waiting(), 0);
        assert_eq!(store.pending().len(), 2);

        // The next start: both, oldest first, before anything found since.
        let mut run2 = FoundBlocks::new();
        let restored = run2.restore(&store, 10_000);
        assert_eq!(
            restored.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
            [block(1).block_hash(), block(2).block_hash()]
        );
        run2.queue(block(3), Some(3), 10_000);
        for n in [1, 2, 3] {
            let s = run2.poll_submission(10_000).unwrap();
            assert_eq!(s.hash, block(n).block_hash());
            assert_eq!(s.height, (n == 3).then_some(3));
            if n < 3 {
                run2.handle_answer(s.hash, NodeAnswer::Accepted, 10_001)
                    .settle(&store, s.hash)
                    .unwrap();
            }
        }
        assert!(store.pending().is_empty());
    }

    /// Milliseconds at which a node whose clock agrees with ours takes [`block`]s.
    const TAKEN_AT_MS: u64 = (1_700_000_000 - 2 * 3600) * 1000;

    fn waiting_until(outcome: SubmissionOutcome) -> u64 {
        match outcome {
            SubmissionOutcome::WaitingForNodeClock { retry_at_ms, .. } => retry_at_ms,
            other => panic!("not waiting for the node's clock: {other:?}"),
        }
    }

    #[test]
    fn a_block_too_new_for_the_node_is_retried_from_1_s_up_to_every_30_s_then_accepted() {
        let store = MemoryBlockStore::new();
        let mut f = FoundBlocks::new();
        let b = block(1);
        store.save_pending(&b).unwrap();
        f.record_found(b.block_hash(), 1, "miner");
        // Our clock past the block's time: the node's clock is behind ours.
        let start = 1_700_000_000 * 1000;
        f.queue(b, Some(1), start);
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let (_, outcome) = attempt(&mut f, now, NodeAnswer::TooNewInTime).unwrap();
            assert_eq!(outcome.verdict(), None);
            assert_eq!(
                matches!(
                    outcome,
                    SubmissionOutcome::WaitingForNodeClock {
                        first_refusal: true,
                        ..
                    }
                ),
                waits.is_empty(),
                "only the first refusal is the first"
            );
            outcome.settle(&store, block(1).block_hash()).unwrap();
            let at = waiting_until(outcome);
            assert_eq!(f.poll_timeout(), Some(at));
            assert!(
                f.poll_submission(at - 1).is_none(),
                "not due before its time"
            );
            waits.push(at - now);
            now = at;
        }
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
        // Never counted or filed as rejected while it waits.
        assert_eq!((f.accepted(), f.rejected(), f.waiting()), (0, 0, 1));
        assert_eq!(f.recent().next().unwrap().accepted, None);
        assert_eq!(store.pending().len(), 1);
        // The node's clock has caught up.
        let (n, outcome) = attempt(&mut f, now, NodeAnswer::Accepted).unwrap();
        assert_eq!(n, 9);
        assert_eq!(
            outcome,
            SubmissionOutcome::Accepted {
                attempt: 9,
                after_ms: now - start
            }
        );
        outcome.settle(&store, block(1).block_hash()).unwrap();
        assert_eq!((f.accepted(), f.rejected(), f.waiting()), (1, 0, 0));
        assert_eq!(
            store.state(block(1).block_hash()),
            Some(Some(BlockVerdict::Submitted))
        );
    }

    #[test]
    fn a_retry_comes_when_a_node_whose_clock_agrees_with_ours_takes_the_block() {
        let mut f = FoundBlocks::new();
        let now = TAKEN_AT_MS - 1_500;
        f.queue(block(1), Some(1), now);
        let (_, o) = attempt(&mut f, now, NodeAnswer::TooNewInTime).unwrap();
        // The backoff's 1 s comes first.
        assert_eq!(waiting_until(o), TAKEN_AT_MS - 500);
        // Then the block's time minus two hours, before the backoff's 2 s.
        let (_, o) = attempt(&mut f, TAKEN_AT_MS - 500, NodeAnswer::TooNewInTime).unwrap();
        assert_eq!(waiting_until(o), TAKEN_AT_MS);
        // Past it (the node's clock is behind ours): the backoff alone.
        let (_, o) = attempt(&mut f, TAKEN_AT_MS, NodeAnswer::TooNewInTime).unwrap();
        assert_eq!(waiting_until(o), TAKEN_AT_MS + 4_000);
    }

    #[test]
    fn a_block_waiting_for_the_node_clock_does_not_hold_up_the_others() {
        let mut f = FoundBlocks::new();
        let t0 = TAKEN_AT_MS;
        f.queue(block(1), Some(1), t0);
        f.queue(block(2), Some(2), t0);
        let (_, o) = attempt(&mut f, t0, NodeAnswer::TooNewInTime).unwrap();
        assert_eq!(waiting_until(o), t0 + 1_000);
        // The second goes at once.
        let s = f.poll_submission(t0).unwrap();
        assert_eq!(s.hash, block(2).block_hash());
        assert_eq!(f.poll_timeout(), None, "one at a time");
        f.handle_answer(s.hash, NodeAnswer::Unavailable, t0);
        // The earliest of both is due first: the second's backoff.
        assert_eq!(f.poll_timeout(), Some(t0 + 200));
        // The node back: the second is due now; the first keeps its time.
        assert!(f.node_back(t0 + 10));
        assert_eq!(f.poll_timeout(), Some(t0 + 10));
        let s = f.poll_submission(t0 + 10).unwrap();
        assert_eq!(s.hash, block(2).block_hash());
        f.handle_answer(s.hash, NodeAnswer::Accepted, t0 + 10);
        assert_eq!(f.poll_timeout(), Some(t0 + 1_000));
        assert!(f.poll_submission(t0 + 999).is_none());
        let s = f.poll_submission(t0 + 1_000).unwrap();
        assert_eq!((s.hash, s.attempt), (block(1).block_hash(), 2));
    }

    #[test]
    fn a_block_still_too_new_after_2_h_10_min_is_filed_as_rejected() {
        let store = MemoryBlockStore::new();
        let mut f = FoundBlocks::new();
        store.save_pending(&block(1)).unwrap();
        let start = TAKEN_AT_MS + 1;
        f.queue(block(1), Some(1), start);
        let mut now = start;
        let mut attempts = 0;
        let outcome = loop {
            let (_, o) = attempt(&mut f, now, NodeAnswer::TooNewInTime).unwrap();
            attempts += 1;
            match o {
                SubmissionOutcome::WaitingForNodeClock { retry_at_ms, .. } => now = retry_at_ms,
                other => break other,
            }
        };
        assert_eq!(outcome, SubmissionOutcome::Rejected);
        assert!(now - start >= CLOCK_RETRY_GIVE_UP_MS);
        assert!(now - start < CLOCK_RETRY_GIVE_UP_MS + CLOCK_RETRY_MAX_DELAY_MS);
        // About one try every 30 s.
        assert!((260..=270).contains(&attempts), "{attempts}");
        outcome.settle(&store, block(1).block_hash()).unwrap();
        assert_eq!((f.rejected(), f.waiting()), (1, 0));
        assert_eq!(
            store.state(block(1).block_hash()),
            Some(Some(BlockVerdict::Rejected))
        );
    }

    #[test]
    fn a_new_tip_the_block_is_not_on_ends_its_wait_after_one_last_try() {
        let mut f = FoundBlocks::new();
        let now = TAKEN_AT_MS;
        f.queue(block(1), Some(1), now);
        attempt(&mut f, now, NodeAnswer::TooNewInTime).unwrap();
        // The same tip again (a height correction): nothing changes.
        f.new_tip(block(1).header.prev_blockhash);
        assert_eq!(f.poll_timeout(), Some(now + 1_000));
        // The node has our block as its tip: one try at once, still waiting if refused.
        f.new_tip(block(1).block_hash());
        assert_eq!(f.poll_timeout(), Some(0));
        let (_, o) = attempt(&mut f, now + 5, NodeAnswer::TooNewInTime).unwrap();
        assert_eq!(waiting_until(o), now + 5 + 2_000);
        // Another tip: one last try at once, and a refusal is final.
        f.new_tip(BlockHash::from_byte_array([9; 32]));
        assert_eq!(f.poll_timeout(), Some(0));
        let (n, o) = attempt(&mut f, now + 10, NodeAnswer::TooNewInTime).unwrap();
        assert_eq!((n, o), (3, SubmissionOutcome::Rejected));
        assert_eq!((f.rejected(), f.waiting()), (1, 0));

        // A block that was never called too new is not touched by a new tip.
        f.queue(block(2), Some(2), now);
        attempt(&mut f, now, NodeAnswer::Unavailable).unwrap();
        f.new_tip(BlockHash::from_byte_array([8; 32]));
        assert_eq!(f.poll_timeout(), Some(now + 200));
    }

    #[test]
    fn an_outage_puts_a_block_too_new_back_in_order_without_restarting_its_time_bound() {
        let mut f = FoundBlocks::new();
        let start = TAKEN_AT_MS;
        f.queue(block(1), Some(1), start);
        f.queue(block(2), Some(2), start);
        attempt(&mut f, start, NodeAnswer::TooNewInTime).unwrap();
        // Block 2 goes first, then the node goes away while block 1 is retried.
        let s = f.poll_submission(start).unwrap();
        f.handle_answer(s.hash, NodeAnswer::Unavailable, start);
        let s = f.poll_submission(start + 1_000).unwrap();
        assert_eq!(s.hash, block(1).block_hash());
        f.handle_answer(s.hash, NodeAnswer::Unavailable, start + 1_000);
        // Both wait for the node, in order: the first one first, at once when it is back.
        assert!(f.node_back(start + 1_100));
        assert_eq!(f.poll_submission(start + 1_100).unwrap().hash, s.hash);
        // Refused as too new again late: the bound counts from the first refusal.
        let late = start + CLOCK_RETRY_GIVE_UP_MS;
        assert_eq!(
            f.handle_answer(s.hash, NodeAnswer::TooNewInTime, late),
            SubmissionOutcome::Rejected
        );
    }

    #[test]
    fn a_block_too_new_at_a_stop_stays_pending_for_the_next_start() {
        let mut f = FoundBlocks::new();
        f.queue(block(1), Some(1), TAKEN_AT_MS);
        attempt(&mut f, TAKEN_AT_MS, NodeAnswer::TooNewInTime).unwrap();
        f.stop();
        assert_eq!(f.poll_timeout(), Some(0));
        let (_, o) = attempt(&mut f, TAKEN_AT_MS + 1, NodeAnswer::TooNewInTime).unwrap();
        assert_eq!(o, SubmissionOutcome::KeptForNextStart);
        assert_eq!((f.rejected(), f.waiting()), (0, 0));
    }
}
