//! A latency histogram a hot path can feed without a lock: fixed bucket bounds, one relaxed
//! atomic add per observation in its bucket, one for the count and one for the sum
//! (microseconds). Read as a whole at scrape time ([`AtomicHistogram::snapshot`]). The counts read while observations land may be a few
//! observations apart from each other; each is exact on its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets: 100 µs to 10 s.
pub const LATENCY_BOUNDS_SECS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// Observations of a duration, in [`LATENCY_BOUNDS_SECS`] buckets.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; LATENCY_BOUNDS_SECS.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, observations in the bucket: above the previous bound, at or
    /// under this one), ending with `+Inf`; not cumulative (the Prometheus encoder sums them).
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_secs: f64,
}

impl AtomicHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// One observation.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS_SECS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS_SECS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The histogram now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut count = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            count += n;
            let bound = LATENCY_BOUNDS_SECS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        HistogramSnapshot {
            buckets,
            // The buckets' total: consistent with them even while observations land.
            count,
            sum_secs: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_buckets() {
        let h = AtomicHistogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets.len(), LATENCY_BOUNDS_SECS.len() + 1);
        assert_eq!(s.buckets[0], (0.0001, 1));
        // 3 ms: above 2.5 ms, at most 5 ms.
        assert_eq!(s.buckets[5], (0.005, 1));
        assert_eq!(s.buckets[13], (10.0, 0));
        assert_eq!(*s.buckets.last().unwrap(), (f64::INFINITY, 1));
        assert!((s.sum_secs - 60.00305).abs() < 1e-9);
    }
}
