//! What follows a share's verdict: SubmitShares.Error at once for a refused share; for an
//! accepted one, credit, a place in the channel's acknowledgement batch (SubmitShares.Success
//! once the batch is full or a second old) and a vardiff retarget when the estimate moved.

use bitcoin::Target;

use super::Session;
use super::events::SessionEvent;
use super::shares::Verdict;
use crate::block::target::{difficulty_of, work_of};
use crate::mining::share::ShareRejection;
use crate::wire::Str0_255;
use crate::wire::mining::{SubmitSharesError, SubmitSharesSuccess};

/// How long an accepted share may wait for its acknowledgement when the batch is not full.
pub(super) const BATCH_MAX_AGE_MS: u64 = 1000;

/// A channel's accepted shares not acknowledged yet.
#[derive(Debug)]
pub(super) struct Batch {
    count: u32,
    sum: f64,
    last_seq: u32,
    started_ms: u64,
}

impl Batch {
    pub(super) fn new(now_ms: u64) -> Self {
        Batch {
            count: 0,
            sum: 0.0,
            last_seq: 0,
            started_ms: now_ms,
        }
    }

    fn add(&mut self, difficulty: f64, sequence_number: u32, now_ms: u64) {
        if self.count == 0 {
            self.started_ms = now_ms;
        }
        self.count += 1;
        self.sum += difficulty;
        self.last_seq = sequence_number;
    }

    /// Whether shares have waited [`BATCH_MAX_AGE_MS`] or more.
    pub(super) fn is_due(&self, now_ms: u64) -> bool {
        self.count > 0 && now_ms.saturating_sub(self.started_ms) >= BATCH_MAX_AGE_MS
    }

    /// When the oldest share of the batch turns [`BATCH_MAX_AGE_MS`] old; `None` if empty.
    pub(super) fn due_at(&self) -> Option<u64> {
        (self.count > 0).then(|| self.started_ms.saturating_add(BATCH_MAX_AGE_MS))
    }

    /// The acknowledgement of the batch, which starts over; `None` if it is empty.
    fn take(&mut self, channel_id: u32) -> Option<SubmitSharesSuccess> {
        if self.count == 0 {
            return None;
        }
        let msg = SubmitSharesSuccess {
            channel_id,
            last_sequence_number: self.last_seq,
            new_submits_accepted_count: self.count,
            new_shares_sum: self.sum.round() as u64,
        };
        self.count = 0;
        self.sum = 0.0;
        Some(msg)
    }
}

impl Session {
    /// Answers a share: an error at once, or credit, batching and retargeting.
    pub(super) fn conclude(
        &mut self,
        channel_id: u32,
        sequence_number: u32,
        verdict: Result<Verdict, ShareRejection>,
        worker: Option<String>,
        now_ms: u64,
    ) {
        match verdict {
            Err(reason) => {
                if let Some(ch) = self.channels.iter_mut().find(|c| c.id == channel_id) {
                    ch.stats.rejected[reason.index()] += 1;
                    ch.stats.last_share_ms = Some(now_ms);
                }
                let err = SubmitSharesError {
                    channel_id,
                    sequence_number,
                    error_code: Str0_255::new(reason.code()).unwrap_or_default(),
                };
                self.send(&err);
                self.events
                    .push(SessionEvent::ShareRejected { channel_id, reason });
            }
            Ok(Verdict {
                idx,
                credited,
                hash,
                work_id,
            }) => {
                let batch_size = self.config.share_batch_size.max(1);
                let ch = &mut self.channels[idx];
                let (difficulty, share_work) = if credited == ch.target {
                    (ch.difficulty, ch.share_work)
                } else {
                    let wire = credited.to_le_bytes();
                    (difficulty_of(&wire), work_of(&wire))
                };
                ch.stats.accepted += 1;
                ch.stats.difficulty_sum += difficulty;
                ch.stats.last_share_ms = Some(now_ms);
                ch.batch.add(difficulty, sequence_number, now_ms);
                ch.vardiff.on_share(share_work);
                let full = ch.batch.count >= batch_size;
                self.events.push(SessionEvent::ShareAccepted {
                    channel_id,
                    difficulty,
                    worker,
                    work_id,
                    hash,
                });
                if full {
                    self.flush_batch(idx);
                }
                self.retarget(idx, now_ms);
            }
        }
    }

    /// Acknowledges a channel's batch, if it holds any share.
    pub(super) fn flush_batch(&mut self, idx: usize) {
        let ch = &mut self.channels[idx];
        if let Some(msg) = ch.batch.take(ch.id) {
            self.send(&msg);
        }
    }

    /// Lets vardiff move a channel's target (clamped like every target).
    pub(super) fn retarget(&mut self, idx: usize, now_ms: u64) {
        let ch = &mut self.channels[idx];
        let Some(t) = ch.vardiff.poll(&ch.target.to_le_bytes(), now_ms) else {
            return;
        };
        let max_target = ch.max_target;
        let t = self.clamp_target(Target::from_le_bytes(t), max_target);
        let ch = &mut self.channels[idx];
        if t == ch.target {
            return;
        }
        let msg = ch.retarget(t, now_ms);
        self.send(&msg);
        self.events.push(SessionEvent::TargetChanged {
            channel_id: msg.channel_id,
            target: Target::from_le_bytes(msg.maximum_target),
        });
    }
}
