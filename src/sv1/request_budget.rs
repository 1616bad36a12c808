//! A connection's allowance of requests that are not shares (mining.subscribe, authorize,
//! configure, extranonce.subscribe, suggest_difficulty, unknown methods...): a token bucket
//! with a burst for the connection's start and a slow refill.
//!
//! Why: each of them is valid on its own and answered, and a few are real work
//! (suggest_difficulty retargets the channel and sends a new job), so a miner sending them in a
//! loop costs an answer each forever: the bad-request count never closes it (they are good
//! requests, or bad ones interleaved with good ones), and the share-rate limit only counts
//! shares. A real miner sends a handful at its start (a proxy one mining.authorize per device,
//! up to [`MAX_EXTRA_WORKERS`] beside its first) and almost none afterwards; past its
//! allowance the connection ends.
//!
//! [`MAX_EXTRA_WORKERS`]: super::MAX_EXTRA_WORKERS

use super::session::MAX_EXTRA_WORKERS;

/// Requests a connection may send at once: a proxy authorizing every device it may have, with
/// room for its subscribe, configure and suggestions.
pub const REQUEST_BURST: u32 = MAX_EXTRA_WORKERS as u32 + 64;

/// One more request is allowed per this many milliseconds (a difficulty suggestion or a new
/// device now and then).
pub const REQUEST_REFILL_MS: u64 = 1_000;

/// What is left of a connection's allowance.
#[derive(Debug, Clone, Copy)]
pub struct RequestBudget {
    tokens: u32,
    /// When the tokens were last counted (ms); `None` before the first request.
    counted_ms: Option<u64>,
}

impl Default for RequestBudget {
    fn default() -> Self {
        RequestBudget {
            tokens: REQUEST_BURST,
            counted_ms: None,
        }
    }
}

impl RequestBudget {
    /// Takes one request's token at `now_ms`; false when the allowance is spent.
    pub fn take(&mut self, now_ms: u64) -> bool {
        let since = self.counted_ms.get_or_insert(now_ms);
        let refilled = now_ms.saturating_sub(*since) / REQUEST_REFILL_MS;
        if refilled > 0 {
            *since += refilled * REQUEST_REFILL_MS;
            let room = u64::from(REQUEST_BURST - self.tokens);
            self.tokens += refilled.min(room) as u32;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_then_one_a_second() {
        let mut b = RequestBudget::default();
        let taken = (0..2 * REQUEST_BURST).filter(|_| b.take(5_000)).count();
        assert_eq!(taken, REQUEST_BURST as usize);
        assert!(!b.take(5_999));
        assert!(b.take(6_000));
        assert!(!b.take(6_000));
        // A long quiet spell refills up to the burst, not beyond.
        let taken = (0..2 * REQUEST_BURST)
            .filter(|_| b.take(10_000_000))
            .count();
        assert_eq!(taken, REQUEST_BURST as usize);
    }
}
