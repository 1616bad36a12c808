//! How many requests the module sends the node per second. blvm-node 0.1.83 lets a module make
//! 100 requests per second (its request validator counts them per wall-clock second) and closes
//! the connection of a module that makes more: the requests and published events in flight on
//! it are lost, and the block submissions among them wait for the reconnection. A pool
//! publishes one event per accepted share and one per new job, so any real share rate crosses
//! that line (the module-mode test did, one run in a few: 10 blocks and 10 new tips within a
//! second). So every request takes a slot in a sliding one-second window first:
//! - a request that must reach the node (a template, a block, a chain probe, the handshake)
//!   waits for a slot;
//! - a published event (`ShareSubmitted`, `MiningJobCreated`) takes one only while the window
//!   is under the events' share of it, and otherwise waits in the bounded publish queue (which
//!   drops and counts what does not fit): requests that matter always find room.
//!
//! The window is a sliding one, well under the node's limit by default, because the node counts
//! a request when it handles it, not when we send it: requests queued behind a slow one are
//! handled together later.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests per sliding second by default: well under blvm-node 0.1.83's 100 per second.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 60;

const WINDOW: Duration = Duration::from_secs(1);

/// A sliding one-second window of request slots.
#[derive(Debug)]
pub struct RequestBudget {
    /// When each slot of the last second was (or will be) used, in order.
    slots: Mutex<VecDeque<Instant>>,
    /// Slots per second for everything.
    limit: usize,
    /// Of those, at most this many for published events.
    events_limit: usize,
}

impl RequestBudget {
    /// `per_second` requests per sliding second (at least 2); published events get half.
    pub fn new(per_second: u32) -> Self {
        let limit = (per_second as usize).max(2);
        RequestBudget {
            slots: Mutex::new(VecDeque::with_capacity(limit)),
            limit,
            events_limit: limit / 2,
        }
    }

    /// Takes a slot for a request that must go: how long to wait before sending it (zero: now).
    pub fn reserve(&self, now: Instant) -> Duration {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        forget_before(&mut slots, now);
        let at = if slots.len() < self.limit {
            now
        } else {
            // The slot `limit` places back leaves the window a second after it was used.
            slots[slots.len() - self.limit] + WINDOW
        };
        // Kept in order: a reservation is never earlier than the one before it.
        let at = slots.back().map_or(at, |last| at.max(*last));
        slots.push_back(at);
        at.saturating_duration_since(now)
    }

    /// Takes a slot for a published event if the events' share of the window has room;
    /// otherwise says how long until it may have.
    pub fn try_take_for_event(&self, now: Instant) -> Result<(), Duration> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        forget_before(&mut slots, now);
        if slots.len() >= self.events_limit {
            let frees_at = slots[slots.len() - self.events_limit] + WINDOW;
            return Err(frees_at
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)));
        }
        let at = slots.back().map_or(now, |last| now.max(*last));
        slots.push_back(at);
        Ok(())
    }
}

/// Drops the slots used more than a second before `now`.
fn forget_before(slots: &mut VecDeque<Instant>, now: Instant) {
    while slots.front().is_some_and(|t| *t + WINDOW <= now) {
        slots.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However requests and events come, no second holds more than the limit.
    fn assert_never_over(times: &[Instant], limit: usize) {
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().take_while(|u| **u < *t + WINDOW).count();
            assert!(in_window <= limit, "{in_window} requests within a second");
        }
    }

    #[test]
    fn a_burst_of_requests_is_spread_and_events_leave_room() {
        let b = RequestBudget::new(10);
        let t0 = Instant::now();
        let mut sent = Vec::new();
        // 5 events fit (half the window), the 6th waits for the first to leave it.
        for _ in 0..5 {
            assert_eq!(b.try_take_for_event(t0), Ok(()));
            sent.push(t0);
        }
        assert_eq!(b.try_take_for_event(t0), Err(WINDOW));
        // 5 requests still go at once, the next ones wait for the window to slide.
        for _ in 0..5 {
            assert_eq!(b.reserve(t0), Duration::ZERO);
            sent.push(t0);
        }
        let wait = b.reserve(t0);
        assert_eq!(wait, WINDOW);
        sent.push(t0 + wait);
        for _ in 0..20 {
            let wait = b.reserve(t0);
            sent.push(t0 + wait);
        }
        sent.sort();
        assert_never_over(&sent, 10);
        // Events wait their turn too: none while requests fill the window.
        assert!(
            b.try_take_for_event(t0 + Duration::from_millis(1500))
                .is_err()
        );
        // Later, room again.
        assert_eq!(b.try_take_for_event(t0 + Duration::from_secs(5)), Ok(()));
    }

    #[test]
    fn a_steady_rate_under_the_limit_never_waits() {
        let b = RequestBudget::new(60);
        let t0 = Instant::now();
        for i in 0..600u64 {
            // 50 per second.
            assert_eq!(
                b.reserve(t0 + Duration::from_millis(i * 20)),
                Duration::ZERO
            );
        }
    }
}
