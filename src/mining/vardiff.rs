//! Variable difficulty: each channel's target follows its measured hashrate so it submits near
//! the configured shares per minute.
//!
//! The hashrate estimate is the work of the accepted shares over the time they took. Its
//! relative error is about 1/sqrt(n) for n shares, which is why the default rate is 18 shares
//! a minute rather than SRI's 6: a one-minute window then holds ~18 shares (~24% error) instead
//! of ~6 (~41%), and a retarget needs [`RETARGET_SHARES`] shares (~18%) without waiting
//! minutes; once converged, windows grow to 120 shares (~9%). The target only moves when the estimate leaves a band of x1.5 around the current
//! one (hysteresis: a steady miner does not oscillate), and a burst far above the expected rate
//! (or a drought far below it) retargets at once instead of waiting for a fixed cycle.

use crate::block::target::{target_for_hashrate, work_of};
use crate::wire::U256;

/// Shares (or expected shares) in a window while the target is still being found: relative
/// error ~1/sqrt(30) = 18%.
pub const SEEKING_WINDOW: f64 = 30.0;
/// Window once converged: ~1/sqrt(120) = 9%, so the x1.5 band is about 4.5 sigma away and a
/// steady miner's target stays put.
pub const CONVERGED_WINDOW: f64 = 120.0;
/// Ratio the estimate must leave before the target moves.
const BAND: f64 = 1.5;
/// A burst: this many times the expected shares, after at least `BURST_MIN_SHARES`.
const BURST_FACTOR: f64 = 4.0;
const BURST_MIN_SHARES: u32 = 8;
/// A drought: after this many expected intervals, fewer than a quarter of the expected shares.
const DROUGHT_INTERVALS: f64 = 12.0;

/// Per-channel vardiff state. Time is in milliseconds and always passed in.
#[derive(Debug, Clone)]
pub struct Vardiff {
    shares_per_minute: f64,
    window_start_ms: u64,
    shares: u32,
    work: f64,
    /// Last hashrate estimate in h/s (nominal until measured).
    hashrate: f64,
    converged: bool,
}

impl Vardiff {
    /// Starts with the miner's announced hashrate.
    pub fn new(shares_per_minute: f64, nominal_hashrate: f64, now_ms: u64) -> Self {
        Vardiff {
            shares_per_minute,
            window_start_ms: now_ms,
            shares: 0,
            work: 0.0,
            hashrate: nominal_hashrate.max(0.0),
            converged: false,
        }
    }

    /// Records an accepted share worth `work` expected hashes (see `target::work_of`).
    pub fn on_share(&mut self, work: f64) {
        self.shares += 1;
        self.work += work;
    }

    /// The current hashrate estimate in h/s.
    pub fn hashrate(&self) -> f64 {
        self.hashrate
    }

    /// Whether the last full window confirmed the current target (no change needed).
    pub fn converged(&self) -> bool {
        self.converged
    }

    /// Restarts measuring (after the channel's target was changed from outside).
    pub fn reset(&mut self, now_ms: u64) {
        self.window_start_ms = now_ms;
        self.shares = 0;
        self.work = 0.0;
    }

    /// The earliest time (unix ms) at which [`Self::poll`] can change the target without a
    /// new share: the end of the window, or a drought (more than four times the shares so
    /// far expected, and at least `DROUGHT_INTERVALS`). One millisecond late, so that the
    /// conditions hold despite rounding.
    pub fn next_poll_ms(&self) -> u64 {
        let interval_ms = 60_000.0 / self.shares_per_minute;
        let window = if self.converged {
            CONVERGED_WINDOW
        } else {
            SEEKING_WINDOW
        };
        let expected = DROUGHT_INTERVALS
            .max(4.0 * f64::from(self.shares))
            .min(window);
        // `as` saturates: a zero rate gives u64::MAX (never).
        let wait = (expected * interval_ms).ceil() as u64;
        self.window_start_ms.saturating_add(wait).saturating_add(1)
    }

    /// Decides whether `current` should change; returns the new target if so. Call on each
    /// accepted share and on a timer.
    pub fn poll(&mut self, current: &U256, now_ms: u64) -> Option<U256> {
        let elapsed_s = now_ms.saturating_sub(self.window_start_ms) as f64 / 1000.0;
        if elapsed_s <= 0.0 {
            return None;
        }
        let interval_s = 60.0 / self.shares_per_minute;
        let expected = elapsed_s / interval_s;
        let n = f64::from(self.shares);
        let window = if self.converged {
            CONVERGED_WINDOW
        } else {
            SEEKING_WINDOW
        };
        let burst = self.shares >= BURST_MIN_SHARES && n > BURST_FACTOR * expected;
        let drought = expected >= DROUGHT_INTERVALS && n < expected / 4.0;
        let full = n >= window || expected >= window;
        if !(burst || drought || full) {
            return None;
        }
        // With no share at all, the rate is below one share's work over the window.
        let work = if self.shares == 0 {
            work_of(current)
        } else {
            self.work
        };
        let estimate = work / elapsed_s;
        let current_rate = work_of(current) / interval_s;
        self.hashrate = estimate;
        self.reset(now_ms);
        let ratio = estimate / current_rate;
        if (1.0 / BAND..=BAND).contains(&ratio) {
            self.converged = true;
            return None;
        }
        self.converged = false;
        Some(target_for_hashrate(estimate, self.shares_per_minute))
    }
}
