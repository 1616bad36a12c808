//! Share floods: each channel's valid shares pass a token bucket filled at a generous multiple
//! of the vardiff aim (`MiningConfig::share_rate_multiple`), with a burst of one minute of that
//! rate. A share beyond it is refused with `too-many-shares` (never a block: a block is always
//! taken), the channel's target is raised at once to what the measured rate calls for (with a
//! new job, as for any retarget), and a connection whose channel keeps flooding
//! (`MiningConfig::flood_close_refusals` refusals, none [`FLOOD_QUIET_MS`] after the one
//! before: the shares the refilling bucket lets through do not reset it) is closed.
//!
//! Without it, a client that keeps mining on old, easy jobs gets every share credited: one
//! connection was credited 273,000 shares a second on the easy regtest target.

use bitcoin::Target;

use super::Session;
use super::events::SessionError;
use crate::block::target::target_for_hashrate;

/// A flood ends after this long (ms) without a share refused for the rate: the count towards
/// `flood_close_refusals` starts over.
pub const FLOOD_QUIET_MS: u64 = 10_000;

/// A channel's share allowance.
#[derive(Debug, Clone, Copy)]
pub(super) struct ShareBucket {
    tokens: f64,
    last_ms: u64,
    /// Shares refused for the rate in the current flood: since the last refusal that came
    /// [`FLOOD_QUIET_MS`] or more after the one before.
    flood_refusals: u32,
    last_refused_ms: u64,
    /// The last refused share was credited at the channel's current target: raising it helps.
    raise_due: bool,
}

impl ShareBucket {
    /// A full bucket.
    pub(super) fn new(burst: f64, now_ms: u64) -> Self {
        ShareBucket {
            tokens: burst,
            last_ms: now_ms,
            flood_refusals: 0,
            last_refused_ms: 0,
            raise_due: false,
        }
    }

    /// Takes one share's token; false when the channel is over its rate.
    #[inline]
    pub(super) fn take(&mut self, rate_per_ms: f64, burst: f64, now_ms: u64) -> bool {
        if now_ms > self.last_ms {
            self.tokens = (self.tokens + (now_ms - self.last_ms) as f64 * rate_per_ms).min(burst);
            self.last_ms = now_ms;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Notes a refusal; `at_current_target`: the share was on a job at the channel's current
    /// target.
    pub(super) fn refused(&mut self, at_current_target: bool, now_ms: u64) {
        // A share accepted now and then (the bucket refills) does not end a flood; a quiet
        // spell does.
        if now_ms.saturating_sub(self.last_refused_ms) >= FLOOD_QUIET_MS {
            self.flood_refusals = 0;
        }
        self.last_refused_ms = now_ms;
        self.flood_refusals = self.flood_refusals.saturating_add(1);
        self.raise_due = at_current_target;
    }
}

/// The rate (shares per ms) and burst of every channel's bucket under a configuration.
pub(super) fn share_allowance(shares_per_minute: f64, multiple: f64) -> (f64, f64) {
    let per_minute = (shares_per_minute * multiple).max(1.0);
    (per_minute / 60_000.0, per_minute)
}

impl Session {
    /// After a share refused for the rate on `channel_id`: the target rises at once (if the
    /// flood was at the current target: a client still on older, easier jobs has its raise
    /// already), and the connection ends if the channel keeps flooding.
    pub(super) fn after_flood_refusal(
        &mut self,
        channel_id: u32,
        now_ms: u64,
    ) -> Result<(), SessionError> {
        let Some(idx) = self.channels.iter().position(|c| c.id == channel_id) else {
            return Ok(());
        };
        let ch = &mut self.channels[idx];
        if ch.bucket.flood_refusals >= self.config.flood_close_refusals.max(1) {
            return Err(SessionError::ShareFlood { channel_id });
        }
        if !std::mem::take(&mut ch.bucket.raise_due) {
            return Ok(());
        }
        // The channel finds at least the allowed rate of shares at its current target: its
        // hashrate is at least that much work per second; aim vardiff's rate at it.
        let current = ch.target();
        let share_work = ch.epochs.back().map_or(0.0, |e| e.share_work);
        let hashrate = self.share_rate_per_ms * 1000.0 * share_work;
        let wanted =
            Target::from_le_bytes(target_for_hashrate(hashrate, self.config.shares_per_minute));
        let max_target = ch.max_target;
        let t = self.clamp_target(wanted, max_target);
        if t >= current {
            return Ok(());
        }
        let next_seq = self.next_seq;
        let ch = &mut self.channels[idx];
        ch.vardiff.reset(now_ms);
        let msg = ch.retarget(t, next_seq);
        self.send(&msg);
        self.events.push(super::SessionEvent::TargetChanged {
            channel_id,
            target: t,
        });
        self.send_jobs_after(idx, true, now_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{ShareBucket, share_allowance};

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let (rate, burst) = share_allowance(18.0, 20.0);
        assert_eq!(burst, 360.0);
        let mut b = ShareBucket::new(burst, 0);
        let taken = (0..1000).filter(|_| b.take(rate, burst, 0)).count();
        assert_eq!(taken, 360, "the burst, all at once");
        // 6 shares a second after that.
        let later = (0..1000).filter(|_| b.take(rate, burst, 1000)).count();
        assert_eq!(later, 6);
        assert!(!b.take(rate, burst, 1000));
    }
}
