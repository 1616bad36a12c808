//! The Stratum V1 requests the pool refuses before they reach the SV2 session under them, by
//! reason, counted pool-wide for the statistics and `/metrics` the way SV2's refusals are.
//!
//! Why a counter of its own: a refused share (stale, duplicate, low difficulty, a job not
//! found, an extranonce2 of the wrong size, version bits outside the mask) is the SV2 session's
//! `ShareRejected` event and counts with SV2's, per user and worker, in the same statistics and
//! ledger. What has no channel to count against (a line that is not JSON, an unknown method,
//! a submit before mining.subscribe or mining.authorize, another user's name) is counted here.
//! Atomics shared by every SV1 connection: no lock, no tokio.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a Stratum V1 request (or line) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sv1Refusal {
    /// A line that is not a JSON-RPC request (the connection is closed).
    InvalidJson,
    /// A line longer than the maximum (the connection is closed).
    LineTooLong,
    /// A method the pool does not serve.
    UnknownMethod,
    /// Parameters of the wrong number, type or form.
    InvalidParams,
    /// A request that needs mining.subscribe first.
    NotSubscribed,
    /// A submit before mining.authorize, or for a worker not authorized on the connection.
    Unauthorized,
    /// mining.authorize with another user than the connection's, a worker name not of 1 to
    /// 32 bytes, or past the workers a connection may have (a username the channel's opening
    /// refuses, a malformed address, counts as SV2's channel refusals do).
    UserRefused,
    /// Too many requests in a row answered with an error (the connection is closed).
    TooManyBadRequests,
    /// Requests that are not shares past the connection's allowance (the connection is
    /// closed).
    RequestFlood,
}

impl Sv1Refusal {
    /// Every reason, in [`Self::index`] order.
    pub const ALL: [Sv1Refusal; 9] = [
        Sv1Refusal::InvalidJson,
        Sv1Refusal::LineTooLong,
        Sv1Refusal::UnknownMethod,
        Sv1Refusal::InvalidParams,
        Sv1Refusal::NotSubscribed,
        Sv1Refusal::Unauthorized,
        Sv1Refusal::UserRefused,
        Sv1Refusal::TooManyBadRequests,
        Sv1Refusal::RequestFlood,
    ];

    /// The reason as the metrics and the JSON API name it.
    pub fn name(self) -> &'static str {
        match self {
            Sv1Refusal::InvalidJson => "invalid-json",
            Sv1Refusal::LineTooLong => "line-too-long",
            Sv1Refusal::UnknownMethod => "unknown-method",
            Sv1Refusal::InvalidParams => "invalid-params",
            Sv1Refusal::NotSubscribed => "not-subscribed",
            Sv1Refusal::Unauthorized => "unauthorized",
            Sv1Refusal::UserRefused => "user-refused",
            Sv1Refusal::TooManyBadRequests => "too-many-bad-requests",
            Sv1Refusal::RequestFlood => "request-flood",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Refusals by reason since the start, pool-wide.
#[derive(Debug, Default)]
pub struct Sv1Refusals {
    counts: [AtomicU64; Sv1Refusal::ALL.len()],
}

impl Sv1Refusals {
    /// Counts one refusal.
    pub fn count(&self, reason: Sv1Refusal) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Every reason with its count (zeros included), in [`Sv1Refusal::ALL`] order.
    pub fn snapshot(&self) -> Vec<(Sv1Refusal, u64)> {
        Sv1Refusal::ALL
            .into_iter()
            .map(|r| (r, self.counts[r.index()].load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_by_reason() {
        let r = Sv1Refusals::default();
        r.count(Sv1Refusal::UnknownMethod);
        r.count(Sv1Refusal::UnknownMethod);
        r.count(Sv1Refusal::LineTooLong);
        let s = r.snapshot();
        assert_eq!(s.len(), Sv1Refusal::ALL.len());
        assert!(s.contains(&(Sv1Refusal::UnknownMethod, 2)));
        assert!(s.contains(&(Sv1Refusal::LineTooLong, 1)));
        assert!(s.contains(&(Sv1Refusal::InvalidJson, 0)));
        for (i, r) in Sv1Refusal::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
