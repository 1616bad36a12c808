//! The current PPLNS window, counted once, for payouts in the coinbase (`coinbase_payouts =
//! true`): the writer thread, which owns the ledger, reads the window ending at the newest
//! share S (the same shares settlement would count: solo users and channels paid in their own
//! coinbase left out) at start, on each new tip and now and then after commits, and publishes
//! it; the pool divides each template's reward over it (`mining::window_work`). The split
//! depends only on the per-user weights, their sum and the reward ([`pplns::count`],
//! [`pplns::divide`]), so a template costs no ledger read.

use bitcoin::CompactTarget;

use super::policy::PayoutPolicy;
use super::pplns::{self, CountedWindow};
use super::settle::{shares_of_window, window_members};
use crate::ledger::{Ledger, LedgerError};

/// The window as the pool's work sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PayoutWindow {
    /// The nBits whose network difficulty its size is a multiple of: it pays only templates
    /// with these bits (another difficulty is another window).
    pub bits: CompactTarget,
    /// Its size in difficulty.
    pub window_difficulty: f64,
    /// S: the newest share in the ledger when it was read; the window ends at it.
    pub last_share_id: u64,
    /// The shares counted: the users' weights.
    pub counted: CountedWindow,
}

/// Reads the window ending at the ledger's newest share for a network of `bits`.
pub fn read_window(
    ledger: &mut dyn Ledger,
    policy: &PayoutPolicy,
    bits: CompactTarget,
) -> Result<PayoutWindow, LedgerError> {
    let last_share_id = ledger.last_share_id()?;
    let window_difficulty = policy.window_difficulty(bits);
    let shares = shares_of_window(ledger, last_share_id, window_difficulty, policy)?;
    let counted = pplns::count(
        window_members(&shares, last_share_id, policy),
        window_difficulty,
    )
    .map_err(|e| LedgerError::Corrupt(format!("the window ending at {last_share_id}: {e}")))?;
    Ok(PayoutWindow {
        bits,
        window_difficulty,
        last_share_id,
        counted,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bitcoin::hashes::Hash;
    use bitcoin::{BlockHash, Target};

    use super::*;
    use crate::ledger::{LedgerBatch, MemoryLedger, ShareRecord};

    fn share(n: u64, user: &str, difficulty: f64) -> ShareRecord {
        ShareRecord {
            time_ms: n,
            user: Arc::from(user),
            worker: Arc::from(""),
            connection_id: 1,
            channel_id: 1,
            job_id: 1,
            target: Target::MAX,
            difficulty,
            hash: BlockHash::from_byte_array([n as u8; 32]),
        }
    }

    #[test]
    fn the_window_is_the_newest_shares_without_solo_and_coinbase_paid_channels() {
        let mut ledger = MemoryLedger::new();
        let shares = vec![
            share(1, "old", 1.0),
            share(2, "alice", 1.0),
            share(3, "sri/solo/bcrt1qxyz", 5.0),
            share(4, "bob", 0.5),
            share(5, "carol", 0.25),
            share(6, "soloist", 3.0),
        ];
        ledger
            .append(&LedgerBatch {
                shares,
                ..LedgerBatch::default()
            })
            .unwrap();
        let policy = PayoutPolicy {
            // A window of 1.5 at difficulty 1.
            window_multiple: 1.5,
            solo_users: ["soloist".to_owned()].into(),
            ..PayoutPolicy::default()
        };
        let bits = CompactTarget::from_consensus(0x1d00_ffff);
        let w = read_window(&mut ledger, &policy, bits).unwrap();
        assert_eq!(w.last_share_id, 6);
        assert_eq!(w.bits, bits);
        let weights: Vec<_> = w
            .counted
            .by_user
            .iter()
            .map(|(u, wt)| (u.as_str(), pplns::difficulty_of_weight(*wt)))
            .collect();
        assert_eq!(weights, [("alice", 0.75), ("bob", 0.5), ("carol", 0.25)]);
        assert_eq!((w.counted.first_share_id, w.counted.last_share_id), (2, 5));
        // Empty ledger: an empty window ending at 0.
        let w = read_window(&mut MemoryLedger::new(), &policy, bits).unwrap();
        assert_eq!((w.last_share_id, w.counted.counted_weight), (0, 0));
    }
}
