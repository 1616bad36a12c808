//! Pool-wide unique extranonce prefixes: each channel searches its own part of the coinbase
//! space, pools behind one payout (different server ids) never overlap, and a restarted pool
//! does not hand out the prefixes of its previous run again.
//!
//! Why restarts matter: on the same template (the tip and the coinbase outputs did not change
//! over a quick restart) a channel given a prefix of the previous run searches exactly the space
//! a channel of that run searched, so the shares found there before the restart are valid work
//! again, and the duplicate check, which lives in memory, cannot know them. So the counter does
//! not start at 0 in a pool that restarts: it starts at the clock ([`seeded_from_clock`]), and
//! the sans-IO core is handed that time by its caller.
//!
//! [`seeded_from_clock`]: ExtranonceAllocator::seeded_from_clock

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of an extranonce prefix that make it unique (server id and a counter).
pub const UNIQUE_PREFIX_LEN: usize = 8;

/// Hands out pool-wide unique extranonce prefixes.
#[derive(Debug, Default)]
pub struct ExtranonceAllocator {
    next: AtomicU64,
}

impl ExtranonceAllocator {
    /// An allocator counting from 0: for one run only (tests, tools). A pool that may restart
    /// on the same template uses [`Self::seeded_from_clock`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An allocator whose first prefix carries `counter` (its low 48 bits, after the server
    /// id's 16; the counter wraps there).
    pub fn starting_at(counter: u64) -> Self {
        ExtranonceAllocator {
            next: AtomicU64::new(counter),
        }
    }

    /// An allocator for a pool starting at `unix_us` (microseconds since the Unix epoch): the
    /// counter starts at the clock, modulo 2^48.
    ///
    /// Why the clock in microseconds: a run's prefixes run from its start time upwards, one per
    /// channel, so a later run (started at a later time) hands out a prefix of an earlier one
    /// only if that earlier run opened more channels than microseconds passed between the two
    /// starts: more than a million channels a second, sustained for the whole run, far beyond
    /// what a pool does (the connection and channel limits cap a run's burst; each channel
    /// costs a Noise connection's setup or an OpenChannel round trip). The 48 bits wrap every
    /// 2^48 us, about 8.9 years, long after any template of the earlier run is stale (the
    /// arithmetic is modular, so a run across the wrap keeps the same rule). What the clock
    /// cannot cover: a clock stepped back between two runs (then a restart within the step
    /// may repeat prefixes; a different `server_id` per run would still separate them).
    /// Persisting the counter instead would put a disk write on the channel-open path, or
    /// reserve blocks of it ahead and still need the clock after a crash that lost the last
    /// reservation.
    pub fn seeded_from_clock(unix_us: u64) -> Self {
        Self::starting_at(unix_us)
    }

    /// A unique prefix of `len` bytes (at least [`UNIQUE_PREFIX_LEN`]): server id, counter,
    /// zero padding.
    pub(super) fn allocate(&self, server_id: u16, len: usize) -> Vec<u8> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut p = Vec::with_capacity(len);
        p.extend_from_slice(&server_id.to_be_bytes());
        p.extend_from_slice(&n.to_be_bytes()[2..]);
        p.resize(len.max(UNIQUE_PREFIX_LEN), 0);
        p
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// The counter part of `count` prefixes from `a`.
    fn counters(a: &ExtranonceAllocator, count: usize) -> Vec<[u8; 6]> {
        (0..count)
            .map(|_| {
                let p = a.allocate(7, UNIQUE_PREFIX_LEN);
                assert_eq!(&p[..2], &7u16.to_be_bytes());
                p[2..8].try_into().unwrap()
            })
            .collect()
    }

    #[test]
    fn a_prefix_carries_the_server_id_and_the_counter() {
        let a = ExtranonceAllocator::starting_at(0x0102_0304_0506);
        assert_eq!(a.allocate(0xabcd, 8), [0xab, 0xcd, 1, 2, 3, 4, 5, 6]);
        assert_eq!(a.allocate(0xabcd, 10), [0xab, 0xcd, 1, 2, 3, 4, 5, 7, 0, 0]);
        // Only the low 48 bits go into the prefix: the counter wraps there.
        let a = ExtranonceAllocator::starting_at((1 << 48) - 1);
        assert_eq!(a.allocate(0, 8), [0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(a.allocate(0, 8), [0; 8]);
    }

    /// A run that opened half a million channels (a busy pool's whole day) and a run started
    /// one second after it began never share a prefix, also across the 48-bit wrap; a pool
    /// counting from 0 at each start would repeat every one of them.
    #[test]
    fn runs_started_at_different_times_never_repeat_a_prefix() {
        const CHANNELS: usize = 500_000;
        const SECOND_US: u64 = 1_000_000;
        let now_us = 1_780_000_000_000_000u64;
        let wrap_us = (1u64 << 48) * 6 - 200_000;
        for first_start in [now_us, wrap_us] {
            let first = ExtranonceAllocator::seeded_from_clock(first_start);
            let earlier: HashSet<[u8; 6]> = counters(&first, CHANNELS).into_iter().collect();
            assert_eq!(earlier.len(), CHANNELS, "unique within a run");
            let second = ExtranonceAllocator::seeded_from_clock(first_start + SECOND_US);
            let repeated = counters(&second, CHANNELS)
                .into_iter()
                .filter(|c| earlier.contains(c))
                .count();
            assert_eq!(repeated, 0, "run started at {first_start} us");
        }
        let restart = |_| counters(&ExtranonceAllocator::new(), 10);
        assert_eq!(restart(1), restart(2), "from 0, a restart repeats them all");
    }
}
