//! The pool's places for set-up connections: `max_connections` miners that completed the
//! handshake and SetupConnection. When every place is taken, a newly set-up miner takes the
//! place of the oldest set-up connection that has no channel (it mines nothing; a miner that
//! does is never evicted), so sessions parked without a channel cannot lock miners out. Sans-IO:
//! connection ids in, the id to evict out; the shell closes it.

use std::collections::HashMap;

/// What a connection that just set up gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A free place.
    Granted,
    /// The place of this connection, which must now be closed.
    Evicting(u64),
    /// No place: every set-up connection has a channel. This one must be closed.
    Full,
}

#[derive(Debug, Clone, Copy)]
struct Place {
    since_ms: u64,
    channels: u32,
}

/// The set-up connections, up to a capacity.
#[derive(Debug)]
pub struct SetupSlots {
    capacity: usize,
    places: HashMap<u64, Place>,
}

impl SetupSlots {
    /// Room for `capacity` set-up connections (at least 1).
    pub fn new(capacity: usize) -> Self {
        SetupSlots {
            capacity: capacity.max(1),
            places: HashMap::new(),
        }
    }

    /// Connection `id` set up at `now_ms`.
    pub fn claim(&mut self, id: u64, now_ms: u64) -> Claim {
        if self.places.contains_key(&id) {
            return Claim::Granted;
        }
        let place = Place {
            since_ms: now_ms,
            channels: 0,
        };
        if self.places.len() < self.capacity {
            self.places.insert(id, place);
            return Claim::Granted;
        }
        // Only when full: a scan of the places (10,000 at most by default, a few µs).
        let oldest = self
            .places
            .iter()
            .filter(|(_, p)| p.channels == 0)
            .min_by_key(|(other, p)| (p.since_ms, **other))
            .map(|(other, _)| *other);
        match oldest {
            Some(victim) => {
                self.places.remove(&victim);
                self.places.insert(id, place);
                Claim::Evicting(victim)
            }
            None => Claim::Full,
        }
    }

    /// Connection `id` opened a channel.
    pub fn channel_opened(&mut self, id: u64) {
        if let Some(p) = self.places.get_mut(&id) {
            p.channels += 1;
        }
    }

    /// Connection `id` closed a channel.
    pub fn channel_closed(&mut self, id: u64) {
        if let Some(p) = self.places.get_mut(&id) {
            p.channels = p.channels.saturating_sub(1);
        }
    }

    /// Connection `id` ended (or was evicted): its place is free. Whether it held one.
    pub fn release(&mut self, id: u64) -> bool {
        let held = self.places.remove(&id).is_some();
        if self.places.capacity() > 4 * self.places.len() + 64 {
            self.places.shrink_to_fit();
        }
        held
    }

    /// Set-up connections now.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    /// Whether no connection is set up.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pool_evicts_the_oldest_connection_without_a_channel() {
        let mut s = SetupSlots::new(3);
        assert_eq!(s.claim(1, 10), Claim::Granted);
        assert_eq!(s.claim(2, 20), Claim::Granted);
        assert_eq!(s.claim(3, 30), Claim::Granted);
        s.channel_opened(1);
        assert_eq!(s.claim(4, 40), Claim::Evicting(2));
        assert_eq!(s.claim(5, 50), Claim::Evicting(3));
        s.channel_opened(4);
        s.channel_opened(5);
        assert_eq!(s.claim(6, 60), Claim::Full, "every place mines");
        s.channel_closed(5);
        assert_eq!(s.claim(6, 60), Claim::Evicting(5));
        assert!(!s.release(2), "evicted: its place is gone already");
        assert!(s.release(6));
        assert_eq!(s.len(), 2);
    }
}
