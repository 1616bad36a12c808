//! A token bucket in integer arithmetic, fed the time: the rate limiter behind admission
//! (new connections per source, Noise handshakes pool-wide). Sans-IO and 16 bytes, so a
//! per-source table of them stays small.

/// Thousandths of a token: refills exactly at whole-token rates without floating point.
const MILLI: u64 = 1000;

/// `rate` tokens a second, at most `burst` held; starts full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens held, in thousandths.
    milli_tokens: u64,
    /// When `milli_tokens` was last brought up to date (unix ms).
    at_ms: u64,
}

/// A bucket's rate and size: the limits every bucket of one kind shares (kept once, not per
/// bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: u32,
    /// Most tokens held: the burst taken at once after a quiet spell.
    pub burst: u32,
}

impl Rate {
    /// `per_sec` a second with a burst of `burst` (at least 1).
    pub const fn new(per_sec: u32, burst: u32) -> Self {
        Rate {
            per_sec,
            burst: if burst == 0 { 1 } else { burst },
        }
    }

    fn capacity(self) -> u64 {
        u64::from(self.burst) * MILLI
    }
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn full(rate: Rate, now_ms: u64) -> Self {
        TokenBucket {
            milli_tokens: rate.capacity(),
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, rate: Rate, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        // per_sec tokens per 1000 ms = per_sec thousandths per ms.
        let added = elapsed.saturating_mul(u64::from(rate.per_sec));
        self.milli_tokens = self.milli_tokens.saturating_add(added).min(rate.capacity());
        // Now, even when the clock went back (the time fed is the wall clock's: NTP may step
        // it back): kept in the future, the bucket would not refill until the clock caught
        // up, and every connection would be refused meanwhile. A step back adds nothing.
        self.at_ms = now_ms;
    }

    /// Whether a token is there at `now_ms` (nothing taken).
    pub fn has_token(&mut self, rate: Rate, now_ms: u64) -> bool {
        self.refill(rate, now_ms);
        self.milli_tokens >= MILLI
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, rate: Rate, now_ms: u64) -> bool {
        if self.has_token(rate, now_ms) {
            self.milli_tokens -= MILLI;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full at `now_ms`: it then carries no information and a table
    /// may forget it (a new full bucket is the same).
    pub fn is_full(&mut self, rate: Rate, now_ms: u64) -> bool {
        self.refill(rate, now_ms);
        self.milli_tokens >= rate.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let rate = Rate::new(10, 5);
        let mut b = TokenBucket::full(rate, 0);
        assert_eq!((0..100).filter(|_| b.try_take(rate, 0)).count(), 5);
        // 10 a second: one every 100 ms.
        assert!(!b.try_take(rate, 99));
        assert!(b.try_take(rate, 100));
        assert!(!b.try_take(rate, 150));
        assert!(!b.is_full(rate, 500));
        assert!(b.is_full(rate, 10_000));
        assert_eq!((0..100).filter(|_| b.try_take(rate, 10_000)).count(), 5);
    }

    #[test]
    fn time_going_back_adds_nothing() {
        let rate = Rate::new(1, 1);
        let mut b = TokenBucket::full(rate, 5_000);
        assert!(b.try_take(rate, 5_000));
        assert!(!b.try_take(rate, 1_000));
        assert!(b.try_take(rate, 6_000));
    }

    /// A clock stepped back an hour: the bucket refills at its rate from the new time on,
    /// instead of waiting an hour for the clock to come back to where it was.
    #[test]
    fn a_clock_stepped_back_does_not_freeze_the_bucket() {
        let rate = Rate::new(10, 10);
        let hour = 3_600_000;
        let mut b = TokenBucket::full(rate, 10 * hour);
        assert_eq!((0..20).filter(|_| b.try_take(rate, 10 * hour)).count(), 10);
        let back = 9 * hour;
        assert!(!b.try_take(rate, back), "nothing added by the step");
        assert_eq!(
            (0..20).filter(|_| b.try_take(rate, back + 1_000)).count(),
            10,
            "a second later, a second's tokens"
        );
    }
}
