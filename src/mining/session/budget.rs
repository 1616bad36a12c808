//! The pool-wide channel cap: one counter shared by every session, so that no set of
//! connections can open more channels (each holding duplicate sets, jobs' roots and vardiff
//! state) than the pool was sized for. A channel takes a slot when it opens and gives it back
//! when it closes, however it closes (by the client, by the idle rule, or with its connection).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Channels open across the pool, and the most there may be.
#[derive(Debug)]
pub struct ChannelBudget {
    open: AtomicUsize,
    max: usize,
}

impl ChannelBudget {
    /// At most `max` channels open at once.
    pub fn new(max: usize) -> Self {
        ChannelBudget {
            open: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes a slot; false when the pool is at its cap.
    pub fn try_take(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back `n` slots.
    pub fn release(&self, n: usize) {
        if n > 0 {
            let _ = self
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                    Some(open.saturating_sub(n))
                });
        }
    }

    /// Channels open now (a metrics exporter can read it).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::ChannelBudget;

    #[test]
    fn slots_are_taken_up_to_the_cap_and_given_back() {
        let b = ChannelBudget::new(2);
        assert!(b.try_take());
        assert!(b.try_take());
        assert!(!b.try_take(), "the cap holds");
        b.release(1);
        assert!(b.try_take());
        b.release(5);
        assert_eq!(b.open(), 0, "never below zero");
    }
}
