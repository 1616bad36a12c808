//! What follows a share's verdict: SubmitShares.Error at once for a refused share; for an
//! accepted one, credit at its job's target, a place in the channel's acknowledgement batch
//! (SubmitShares.Success once the batch is full or a second old), a vardiff retarget when the
//! estimate moved (with a new job, so the new target is mined at once), and a new credit
//! window once the channel's duplicate set is full.

use std::sync::Arc;

use bitcoin::Target;

use super::Session;
use super::events::{SessionError, SessionEvent};
use super::shares::Verdict;
use crate::mining::share::ShareRejection;
use crate::wire::Str0_255;
use crate::wire::mining::{SubmitSharesError, SubmitSharesSuccess};

/// How long an accepted share may wait for its acknowledgement when the batch is not full.
pub(super) const BATCH_MAX_AGE_MS: u64 = 1000;

/// A channel's accepted shares not acknowledged yet.
///
/// new_shares_sum is an integer on the wire; shares below difficulty 1 would round to 0 batch
/// after batch. The channel's running total is kept instead and each acknowledgement carries
/// what the rounded total grew by, so the sums a client adds up always equal its credit,
/// rounded once.
#[derive(Debug)]
pub(super) struct Batch {
    count: u32,
    /// Difficulty credited on the channel so far, acknowledged or not.
    total: f64,
    /// Sum of the new_shares_sum values sent so far.
    acknowledged: u64,
    last_seq: u32,
    started_ms: u64,
    /// Session number of the batch's last share (what its commit is waited for).
    last_share: u64,
}

impl Batch {
    pub(super) fn new(now_ms: u64) -> Self {
        Batch {
            count: 0,
            total: 0.0,
            acknowledged: 0,
            last_seq: 0,
            started_ms: now_ms,
            last_share: 0,
        }
    }

    fn add(&mut self, difficulty: f64, sequence_number: u32, share_number: u64, now_ms: u64) {
        if self.count == 0 {
            self.started_ms = now_ms;
        }
        self.count += 1;
        self.total += difficulty;
        self.last_seq = sequence_number;
        self.last_share = share_number;
    }

    /// Whether shares have waited [`BATCH_MAX_AGE_MS`] or more.
    pub(super) fn is_due(&self, now_ms: u64) -> bool {
        self.count > 0 && now_ms.saturating_sub(self.started_ms) >= BATCH_MAX_AGE_MS
    }

    /// When the oldest share of the batch turns [`BATCH_MAX_AGE_MS`] old; `None` if empty.
    pub(super) fn due_at(&self) -> Option<u64> {
        (self.count > 0).then(|| self.started_ms.saturating_add(BATCH_MAX_AGE_MS))
    }

    /// The acknowledgement of the batch, which starts over, with the session number of its
    /// last share; `None` if it is empty.
    fn take(&mut self, channel_id: u32) -> Option<(SubmitSharesSuccess, u64)> {
        if self.count == 0 {
            return None;
        }
        // `as` saturates; the total only grows, so the difference never underflows.
        let rounded = self.total.round() as u64;
        let msg = SubmitSharesSuccess {
            channel_id,
            last_sequence_number: self.last_seq,
            new_submits_accepted_count: self.count,
            new_shares_sum: rounded.saturating_sub(self.acknowledged),
        };
        self.acknowledged = rounded.max(self.acknowledged);
        self.count = 0;
        Some((msg, self.last_share))
    }
}

impl Session {
    /// Answers a share: an error at once, or credit, batching and retargeting. (In durable
    /// mode a valid share that the ledger cannot record now came refused, `finish_share`; a
    /// block does not: it was emitted, and is acknowledged once stored.)
    pub(super) fn conclude(
        &mut self,
        channel_id: u32,
        sequence_number: u32,
        verdict: Result<Verdict, ShareRejection>,
        worker: Option<Arc<str>>,
        now_ms: u64,
    ) -> Result<(), SessionError> {
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
                let user_identity = self.channel_identity(channel_id);
                self.events.push(SessionEvent::ShareRejected {
                    channel_id,
                    reason,
                    user_identity,
                    worker,
                });
                match reason {
                    ShareRejection::NtimeTooOld => self.refresh_after_old_ntime(channel_id, now_ms),
                    ShareRejection::TooManyShares => {
                        return self.after_flood_refusal(channel_id, now_ms);
                    }
                    _ => {}
                }
            }
            Ok(Verdict {
                idx,
                credited,
                hash,
                work_id,
                job_id,
            }) => {
                let batch_size = self.config.share_batch_size.max(1);
                let cap = self.credit_window().1;
                let share_number = self.number_share();
                let user_identity = self
                    .channel_identity(channel_id)
                    .unwrap_or_else(|| Arc::from(""));
                let ch = &mut self.channels[idx];
                let (difficulty, share_work) = (credited.difficulty, credited.share_work);
                ch.stats.accepted += 1;
                ch.stats.difficulty_sum += difficulty;
                ch.stats.last_share_ms = Some(now_ms);
                ch.last_valid_ms = now_ms;
                ch.batch
                    .add(difficulty, sequence_number, share_number, now_ms);
                ch.vardiff.on_share(share_work);
                let full = ch.batch.count >= batch_size;
                let grace_full = ch.seen_retired.len() >= cap;
                self.events.push(SessionEvent::ShareAccepted {
                    channel_id,
                    difficulty,
                    worker,
                    work_id,
                    hash,
                    user_identity,
                    job_id,
                    target: credited.target,
                    share_number,
                });
                if full {
                    self.flush_batch(idx);
                }
                if grace_full {
                    // Bounded memory: the ended window's jobs stop earning credit early.
                    self.end_retirement();
                }
                let moved = self.retarget(idx, now_ms);
                self.send_jobs_after(idx, moved, now_ms);
            }
        }
        Ok(())
    }

    /// When a channel's credit window is full, and how many fingerprints a set may hold at
    /// most: the window ends an eighth short of the bound, so the shares still in flight on its
    /// jobs fit in the set it leaves behind (more than that ends their grace early).
    pub(super) fn credit_window(&self) -> (usize, usize) {
        let cap = self.config.credit_window_shares.max(1);
        ((cap - cap / 8).max(1), cap)
    }

    /// Acknowledges a channel's batch, if it holds any share.
    pub(super) fn flush_batch(&mut self, idx: usize) {
        let ch = &mut self.channels[idx];
        if let Some((msg, last_share)) = ch.batch.take(ch.id) {
            self.acknowledge(msg, last_share);
        }
    }

    /// Lets vardiff move a channel's target (clamped like every target): SetTarget goes out
    /// for the jobs sent after it (see [`Self::send_jobs_after`]). Returns whether the target
    /// moved.
    pub(super) fn retarget(&mut self, idx: usize, now_ms: u64) -> bool {
        let ch = &mut self.channels[idx];
        let Some(t) = ch.vardiff.poll(&ch.target().to_le_bytes(), now_ms) else {
            return false;
        };
        let max_target = ch.max_target;
        let t = self.clamp_target(Target::from_le_bytes(t), max_target);
        let next_seq = self.next_seq;
        let ch = &mut self.channels[idx];
        if t == ch.target() {
            return false;
        }
        let msg = ch.retarget(t, next_seq);
        self.send(&msg);
        self.events.push(SessionEvent::TargetChanged {
            channel_id: msg.channel_id,
            target: Target::from_le_bytes(msg.maximum_target),
        });
        true
    }

    /// The jobs that follow a channel's accepted share or moved target: a full credit window
    /// starts over (a new job for every channel, which also carries a new target); otherwise a
    /// moved target gets a new job on the current work at once, so the miner mines at it now
    /// rather than at the next template.
    pub(super) fn send_jobs_after(&mut self, idx: usize, target_moved: bool, now_ms: u64) {
        if self.channels[idx].seen.len() >= self.credit_window().0 {
            self.restart_credit_window(now_ms);
        } else if target_moved {
            self.refresh_channel(idx, now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Batch;

    /// new_shares_sum is an integer: with shares below difficulty 1 each acknowledgement
    /// carries what the rounded running total grew by, so the sums add up to the credit
    /// (before, every acknowledgement of a 0.3-difficulty share said 0).
    #[test]
    fn new_shares_sum_adds_up_below_difficulty_one() {
        let mut batch = Batch::new(0);
        let mut sum = 0;
        for seq in 0..20 {
            batch.add(0.3, seq, u64::from(seq), 0);
            sum += batch.take(1).expect("one share").0.new_shares_sum;
        }
        assert_eq!(sum, 6);
        for seq in 0..1000 {
            batch.add(1e-6, seq, u64::from(seq), 0);
        }
        batch.add(2.5, 1000, 1000, 0);
        assert_eq!(batch.take(1).expect("a batch").0.new_shares_sum, 3);
        assert!(batch.take(1).is_none());
    }
}
