//! Pool-wide unique extranonce prefixes: each channel searches its own part of the coinbase
//! space, and pools behind one payout (different server ids) never overlap.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of an extranonce prefix that make it unique (server id and a counter).
pub const UNIQUE_PREFIX_LEN: usize = 8;

/// Hands out pool-wide unique extranonce prefixes.
#[derive(Debug, Default)]
pub struct ExtranonceAllocator {
    next: AtomicU64,
}

impl ExtranonceAllocator {
    /// A fresh allocator.
    pub fn new() -> Self {
        Self::default()
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
