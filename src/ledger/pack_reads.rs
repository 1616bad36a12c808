//! What both packed backends (SQLite and PostgreSQL, schema 5 of each) do with the shares of
//! the packs they read: give them their user and worker names, gather a PPLNS window newest
//! first, keep the ones a range asks for, and cut a pack that pruning reaches. The backends
//! differ only in how they fetch pack rows and write them back.

use std::collections::HashMap;
use std::sync::Arc;

use super::share_pack::PackedShare;
use super::{LedgerError, StoredShare};

/// User and worker names by worker id (the `workers` table).
pub type WorkerNames = HashMap<u64, (Arc<str>, Arc<str>)>;

/// Whether `names` lacks the worker of one of `shares` (they are read again first).
pub fn names_missing(shares: &[PackedShare], names: &WorkerNames) -> bool {
    shares.iter().any(|s| !names.contains_key(&s.worker_id))
}

/// Packed shares with their user and worker names; `Corrupt` for a worker `names` lacks.
pub fn named(
    shares: Vec<PackedShare>,
    names: &WorkerNames,
) -> Result<Vec<StoredShare>, LedgerError> {
    shares
        .into_iter()
        .map(|s| {
            let (user, worker) = names.get(&s.worker_id).ok_or_else(|| {
                LedgerError::Corrupt(format!("share {} of unknown worker {}", s.id, s.worker_id))
            })?;
            Ok(s.into_stored(user.clone(), worker.clone()))
        })
        .collect()
}

/// A PPLNS window gathered from packs read newest first: the shares from `last_id` down
/// until their difficulty reaches the window's.
#[derive(Debug)]
pub struct WindowScan {
    last_id: u64,
    difficulty: f64,
    sum: f64,
    shares: Vec<PackedShare>,
}

impl WindowScan {
    /// The window ending at share `last_id` and holding `difficulty`.
    pub fn new(last_id: u64, difficulty: f64) -> Self {
        WindowScan {
            last_id,
            difficulty,
            sum: 0.0,
            shares: Vec::new(),
        }
    }

    /// Takes the next (older) pack's shares; returns whether the window wants more.
    pub fn take(&mut self, pack: Vec<PackedShare>) -> bool {
        for share in pack.into_iter().rev().filter(|s| s.id <= self.last_id) {
            if self.sum >= self.difficulty {
                return false;
            }
            self.sum += share.difficulty;
            self.shares.push(share);
        }
        self.sum < self.difficulty
    }

    /// The window's shares, newest first.
    pub fn into_shares(self) -> Vec<PackedShare> {
        self.shares
    }
}

/// Adds the shares of `pack` that `keep` takes to `out`, up to `limit` in all; returns
/// whether `out` wants more.
pub fn collect(
    out: &mut Vec<PackedShare>,
    pack: Vec<PackedShare>,
    keep: impl Fn(&PackedShare) -> bool,
    limit: usize,
) -> bool {
    let room = limit.saturating_sub(out.len());
    out.extend(pack.into_iter().filter(|s| keep(s)).take(room));
    out.len() < limit
}

/// A pack that pruning reaches: the shares with an id below `keep_from_id` accepted before
/// `before_ms` go. `None` when none of its shares go; else its first id (its key), the shares
/// it keeps (written again as a pack, unless none) and how many went.
pub fn cut(
    pack: Vec<PackedShare>,
    before_ms: u64,
    keep_from_id: u64,
) -> Option<(u64, Vec<PackedShare>, u64)> {
    let first_id = pack.first().map_or(0, |s| s.id);
    let count = pack.len();
    let kept: Vec<PackedShare> = pack
        .into_iter()
        .filter(|s| !(s.id < keep_from_id && s.time_ms < before_ms))
        .collect();
    let pruned = (count - kept.len()) as u64;
    (pruned > 0).then_some((first_id, kept, pruned))
}
