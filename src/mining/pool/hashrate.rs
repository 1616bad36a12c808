//! Hashrate estimated from credited difficulty: a share credited at difficulty `d` stands for
//! `d × 2³²` hashes on average, so the hashes behind a time span are the credited difficulty
//! in it times 2³². A worker's recent hashrate comes from a small ring of per-minute buckets
//! ([`HashrateWindow`]: ten minutes, 160 bytes), fed at fold time (batches of shares, never
//! per share under the pool's lock) and read at scrape time. The history a chart draws is a
//! bounded ring of five-minute periods ([`HashrateHistory`]: six hours, at most 576 bytes).
//! Sans-IO: time is milliseconds since the Unix epoch.

/// Work of a difficulty-1 share, in hashes.
pub const HASHES_PER_DIFF1: f64 = 4_294_967_296.0;

/// Length of one bucket of the window (ms).
pub const BUCKET_MS: u64 = 60_000;
/// Buckets in the window: the estimate covers the last ten minutes.
pub const BUCKETS: usize = 10;
/// The shortest span an estimate divides by (ms): a worker seen for a second does not show
/// its first share's work as done in that second.
pub const MIN_SPAN_MS: u64 = 10_000;

/// Hashes per second behind `difficulty` credited over `span_ms`.
pub fn hashrate(difficulty: f64, span_ms: u64) -> f64 {
    if span_ms == 0 {
        return 0.0;
    }
    difficulty * HASHES_PER_DIFF1 * 1000.0 / span_ms as f64
}

/// Credited difficulty of the last [`BUCKETS`] minutes, per minute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HashrateWindow {
    /// Difficulty credited in each bucket's minute.
    sums: [f64; BUCKETS],
    /// Which minute (ms / [`BUCKET_MS`]) each bucket holds; a bucket of an older minute than
    /// the window is empty.
    minutes: [u64; BUCKETS],
}

impl HashrateWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// `difficulty` credited at `now_ms`.
    pub fn add(&mut self, difficulty: f64, now_ms: u64) {
        let minute = now_ms / BUCKET_MS;
        let i = (minute % BUCKETS as u64) as usize;
        if self.minutes[i] != minute {
            self.minutes[i] = minute;
            self.sums[i] = 0.0;
        }
        self.sums[i] += difficulty;
    }

    /// Difficulty credited in the window ending at `now_ms`.
    pub fn difficulty(&self, now_ms: u64) -> f64 {
        let minute = now_ms / BUCKET_MS;
        self.sums
            .iter()
            .zip(self.minutes)
            .filter(|(_, m)| *m <= minute && minute - *m < BUCKETS as u64)
            .map(|(s, _)| *s)
            .sum()
    }

    /// How long the window ending at `now_ms` covers (ms): the nine whole minutes before the
    /// current one and what has passed of it.
    pub fn covered_ms(now_ms: u64) -> u64 {
        (BUCKETS as u64 - 1) * BUCKET_MS + now_ms % BUCKET_MS
    }

    /// Hashes per second over the window ending at `now_ms`, for a worker first seen at
    /// `first_seen_ms`: the credited difficulty divided by the window's span, or by the time
    /// since the worker was first seen if shorter (at least [`MIN_SPAN_MS`]).
    pub fn hashrate(&self, first_seen_ms: u64, now_ms: u64) -> f64 {
        let span = Self::covered_ms(now_ms)
            .min(now_ms.saturating_sub(first_seen_ms))
            .max(MIN_SPAN_MS);
        hashrate(self.difficulty(now_ms), span)
    }
}

/// Length of one period of the history (ms): five minutes.
pub const HISTORY_PERIOD_MS: u64 = 300_000;
/// Periods kept in a history: six hours.
pub const HISTORY_PERIODS: usize = 72;

/// Credited difficulty per five-minute period, the last [`HISTORY_PERIODS`] periods that had
/// any (a period without shares is absent: its hashrate is zero).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HashrateHistory {
    /// (period number: ms / [`HISTORY_PERIOD_MS`], difficulty credited in it), oldest first.
    periods: std::collections::VecDeque<(u32, f32)>,
}

/// One point of a history: the hashrate of the period that starts at `start_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HashratePoint {
    /// The period's start (ms since the Unix epoch).
    pub start_ms: u64,
    /// Hashes per second over the period (the current one: over what has passed of it).
    pub hashrate: f64,
}

impl HashrateHistory {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// `difficulty` credited at `now_ms` (times only move forward; an earlier one is added
    /// to the newest period).
    pub fn add(&mut self, difficulty: f64, now_ms: u64) {
        let period = u32::try_from(now_ms / HISTORY_PERIOD_MS).unwrap_or(u32::MAX);
        match self.periods.back_mut() {
            Some((p, d)) if *p >= period => *d += difficulty as f32,
            _ => {
                if self.periods.len() == HISTORY_PERIODS {
                    self.periods.pop_front();
                }
                self.periods.push_back((period, difficulty as f32));
            }
        }
    }

    /// The points of the last [`HISTORY_PERIODS`] periods up to `now_ms`, oldest first (only
    /// periods with shares).
    pub fn points(&self, now_ms: u64) -> Vec<HashratePoint> {
        let current = now_ms / HISTORY_PERIOD_MS;
        let oldest = current.saturating_sub(HISTORY_PERIODS as u64 - 1);
        self.periods
            .iter()
            .filter(|(p, _)| (oldest..=current).contains(&u64::from(*p)))
            .map(|(p, d)| {
                let start_ms = u64::from(*p) * HISTORY_PERIOD_MS;
                let span = if u64::from(*p) == current {
                    now_ms.saturating_sub(start_ms).max(MIN_SPAN_MS)
                } else {
                    HISTORY_PERIOD_MS
                };
                HashratePoint {
                    start_ms,
                    hashrate: hashrate(f64::from(*d), span),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000 / BUCKET_MS * BUCKET_MS;

    #[test]
    fn difficulty_one_a_second_is_two_to_the_32_hashes_a_second() {
        assert_eq!(hashrate(1.0, 1_000), HASHES_PER_DIFF1);
        assert_eq!(hashrate(60.0, 60_000), HASHES_PER_DIFF1);
        assert_eq!(hashrate(5.0, 0), 0.0);
    }

    #[test]
    fn a_steady_worker_is_estimated_at_its_rate() {
        let mut w = HashrateWindow::new();
        // Difficulty 2 every second for 20 minutes: 2 × 2^32 h/s.
        for s in 0..1_200 {
            w.add(2.0, T0 + s * 1_000);
        }
        let now = T0 + 1_200 * 1_000;
        let rate = w.hashrate(T0, now);
        let want = 2.0 * HASHES_PER_DIFF1;
        assert!((rate - want).abs() / want < 0.02, "{rate} vs {want}");
    }

    #[test]
    fn a_new_worker_is_divided_by_its_time_not_the_window() {
        let mut w = HashrateWindow::new();
        for s in 0..30 {
            w.add(1.0, T0 + s * 1_000);
        }
        let rate = w.hashrate(T0, T0 + 30_000);
        assert_eq!(rate, hashrate(30.0, 30_000));
        // One share just now: divided by the minimum span, not by zero.
        let mut one = HashrateWindow::new();
        one.add(1.0, T0);
        assert_eq!(one.hashrate(T0, T0), hashrate(1.0, MIN_SPAN_MS));
    }

    #[test]
    fn old_minutes_leave_the_window() {
        let mut w = HashrateWindow::new();
        w.add(100.0, T0);
        assert_eq!(w.difficulty(T0 + 9 * BUCKET_MS), 100.0);
        assert_eq!(w.difficulty(T0 + 10 * BUCKET_MS), 0.0);
        // A bucket reused for a later minute starts from zero.
        w.add(1.0, T0 + 10 * BUCKET_MS);
        assert_eq!(w.difficulty(T0 + 10 * BUCKET_MS), 1.0);
        assert_eq!(w.hashrate(T0, T0 + 30 * BUCKET_MS), 0.0);
    }

    #[test]
    fn the_history_keeps_six_hours_of_five_minute_periods() {
        let t0 = T0 / HISTORY_PERIOD_MS * HISTORY_PERIOD_MS;
        let mut h = HashrateHistory::new();
        // Difficulty 300 in each period for eight hours: 2^32 h/s in every closed period.
        for p in 0..96u64 {
            h.add(100.0, t0 + p * HISTORY_PERIOD_MS);
            h.add(200.0, t0 + p * HISTORY_PERIOD_MS + 1_000);
        }
        let now = t0 + 96 * HISTORY_PERIOD_MS - 1;
        let points = h.points(now);
        assert_eq!(points.len(), HISTORY_PERIODS);
        assert_eq!(points[0].start_ms, t0 + 24 * HISTORY_PERIOD_MS);
        assert!(
            points[..HISTORY_PERIODS - 1]
                .iter()
                .all(|p| (p.hashrate - HASHES_PER_DIFF1).abs() < 1.0)
        );
        // A quiet hour leaves no points; old periods leave the window.
        assert!(h.points(now + 10 * 3_600_000).is_empty());
        let mut gap = HashrateHistory::new();
        gap.add(1.0, t0);
        gap.add(1.0, t0 + 3 * HISTORY_PERIOD_MS);
        let p = gap.points(t0 + 3 * HISTORY_PERIOD_MS + 60_000);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].hashrate, hashrate(1.0, 60_000));
    }
}
