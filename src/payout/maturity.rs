//! Whether a block's reward can be paid yet: a coinbase is spendable only 100 blocks after
//! its block (consensus' coinbase maturity), and a block the node accepted can still leave
//! the best chain in a reorganisation, taking its reward with it. So a settled block's
//! payouts are *immature* while it is in the best chain with fewer than
//! [`COINBASE_MATURITY`] confirmations, *mature* (balances a pool can pay from) from then on,
//! and *orphaned* (worth nothing, counted in no balance) while it is out of the best chain.
//! An orphaned block that comes back (the reorganisation undone) is immature again.
//!
//! Pure decision: the shell asks the node which block is at each watched height
//! ([`crate::node::NodeApi::block_hash_at`]) and writes the statuses this module returns.

use bitcoin::BlockHash;

use crate::ledger::BlockStatus;

/// Confirmations a coinbase needs before it can be spent (the block itself counts as one):
/// Bitcoin's COINBASE_MATURITY.
pub const COINBASE_MATURITY: u32 = 100;

/// Orphaned blocks this deep under the tip are not watched any more: their branch would need
/// a reorganisation deeper than coinbase maturity to come back.
pub fn lowest_watched_height(tip_height: u32) -> u32 {
    tip_height.saturating_sub(COINBASE_MATURITY)
}

/// What the node's best chain says about one watched block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainPlace {
    /// The block is in the best chain, whose tip is at `tip_height`.
    InBestChain {
        /// Height of the best chain's tip.
        tip_height: u32,
    },
    /// Another block (or none: the chain is shorter now) is at its height.
    NotInBestChain,
}

impl ChainPlace {
    /// The place of the block `hash` at `height`, given the best chain's block at that height
    /// (`None`: the chain does not reach it) and its tip's height.
    pub fn of(
        hash: BlockHash,
        height: u32,
        at_height: Option<BlockHash>,
        tip_height: u32,
    ) -> ChainPlace {
        if at_height == Some(hash) && height <= tip_height {
            ChainPlace::InBestChain { tip_height }
        } else {
            ChainPlace::NotInBestChain
        }
    }
}

/// Confirmations of a block at `height` under a tip at `tip_height` (the block itself is one).
pub fn confirmations(height: u32, tip_height: u32) -> u32 {
    tip_height.saturating_sub(height).saturating_add(1)
}

/// The status a watched block moves to, or `None` when it stays as it is. Only accepted
/// (immature) and orphaned blocks are watched: pending and rejected ones have no payouts, and
/// a mature block is final.
pub fn next_status(current: &BlockStatus, height: u32, place: ChainPlace) -> Option<BlockStatus> {
    let wanted = match place {
        ChainPlace::InBestChain { tip_height } => {
            if confirmations(height, tip_height) >= COINBASE_MATURITY {
                BlockStatus::Mature
            } else {
                BlockStatus::Accepted
            }
        }
        ChainPlace::NotInBestChain => BlockStatus::Orphaned,
    };
    match current {
        BlockStatus::Accepted | BlockStatus::Orphaned if *current != wanted => Some(wanted),
        _ => None,
    }
}

/// What the pool knows of the best chain between rounds, so that a round asks the node little
/// (a module's requests share the node's budget with its templates and blocks): the blocks
/// seen in the best chain, and the highest of them, the anchor. While the anchor is still at
/// its height, so are all the others (they are its ancestors), and only blocks not seen in the
/// chain yet need a question; an anchor gone means a reorganisation, and everything is asked
/// again.
#[derive(Debug, Default)]
pub struct KnownChain {
    anchor: Option<(u32, BlockHash)>,
    in_chain: std::collections::HashSet<BlockHash>,
}

impl KnownChain {
    /// The height to ask about first, if anything is known.
    pub fn anchor_height(&self) -> Option<u32> {
        self.anchor.map(|(height, _)| height)
    }

    /// The best chain's block at the anchor's height now: unchanged keeps what is known, any
    /// other answer forgets it.
    pub fn check_anchor(&mut self, at_anchor_height: Option<BlockHash>) {
        if self.anchor.map(|(_, hash)| hash) != at_anchor_height {
            self.anchor = None;
            self.in_chain.clear();
        }
    }

    /// Whether `hash` was seen in the best chain and nothing since says otherwise.
    pub fn in_chain(&self, hash: BlockHash) -> bool {
        self.in_chain.contains(&hash)
    }

    /// What the node said of the block `hash` at `height`.
    pub fn learn(&mut self, hash: BlockHash, height: u32, place: ChainPlace) {
        if let ChainPlace::InBestChain { .. } = place {
            self.in_chain.insert(hash);
            if self.anchor.is_none_or(|(h, _)| height > h) {
                self.anchor = Some((height, hash));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    fn hash(n: u8) -> BlockHash {
        BlockHash::from_byte_array([n; 32])
    }

    #[test]
    fn an_accepted_block_matures_at_one_hundred_confirmations() {
        let place = |tip| ChainPlace::of(hash(1), 10, Some(hash(1)), tip);
        // At height 10, the tip at 108 gives 99 confirmations, at 109 one hundred.
        assert_eq!(next_status(&BlockStatus::Accepted, 10, place(10)), None);
        assert_eq!(next_status(&BlockStatus::Accepted, 10, place(108)), None);
        assert_eq!(
            next_status(&BlockStatus::Accepted, 10, place(109)),
            Some(BlockStatus::Mature)
        );
        assert_eq!(confirmations(10, 109), COINBASE_MATURITY);
    }

    #[test]
    fn a_block_out_of_the_best_chain_is_orphaned_and_comes_back_immature() {
        let other = ChainPlace::of(hash(1), 10, Some(hash(2)), 12);
        assert_eq!(other, ChainPlace::NotInBestChain);
        assert_eq!(
            next_status(&BlockStatus::Accepted, 10, other),
            Some(BlockStatus::Orphaned)
        );
        // A chain now shorter than the block's height.
        let shorter = ChainPlace::of(hash(1), 10, None, 9);
        assert_eq!(
            next_status(&BlockStatus::Accepted, 10, shorter),
            Some(BlockStatus::Orphaned)
        );
        assert_eq!(next_status(&BlockStatus::Orphaned, 10, other), None);
        let back = ChainPlace::of(hash(1), 10, Some(hash(1)), 20);
        assert_eq!(
            next_status(&BlockStatus::Orphaned, 10, back),
            Some(BlockStatus::Accepted)
        );
        // Back in a chain long enough: mature at once.
        let deep = ChainPlace::of(hash(1), 10, Some(hash(1)), 200);
        assert_eq!(
            next_status(&BlockStatus::Orphaned, 10, deep),
            Some(BlockStatus::Mature)
        );
    }

    #[test]
    fn final_and_unanswered_blocks_are_left_alone() {
        let gone = ChainPlace::NotInBestChain;
        for status in [
            BlockStatus::Mature,
            BlockStatus::Pending,
            BlockStatus::Rejected("bad-txns".into()),
        ] {
            assert_eq!(next_status(&status, 10, gone), None, "{status:?}");
        }
    }

    #[test]
    fn a_refusal_after_acceptance_changes_nothing_and_mature_is_final() {
        let refused = BlockStatus::Rejected("bad-prevblk".into());
        for accepted in [
            BlockStatus::Accepted,
            BlockStatus::Mature,
            BlockStatus::Orphaned,
        ] {
            assert!(!accepted.may_become(&refused), "{accepted:?}");
            assert!(!accepted.may_become(&BlockStatus::Pending), "{accepted:?}");
        }
        assert!(BlockStatus::Pending.may_become(&refused));
        assert!(BlockStatus::Pending.may_become(&BlockStatus::Accepted));
        assert!(BlockStatus::Orphaned.may_become(&BlockStatus::Accepted));
        assert!(BlockStatus::Accepted.may_become(&BlockStatus::Orphaned));
        assert!(!BlockStatus::Mature.may_become(&BlockStatus::Orphaned));
        assert!(!BlockStatus::Mature.may_become(&BlockStatus::Accepted));
        assert!(!BlockStatus::Pending.may_become(&BlockStatus::Mature));
        assert!(!refused.may_become(&BlockStatus::Orphaned));
    }

    #[test]
    fn the_known_chain_is_kept_while_its_anchor_stands() {
        let mut known = KnownChain::default();
        assert_eq!(known.anchor_height(), None);
        let tip = ChainPlace::InBestChain { tip_height: 12 };
        known.learn(hash(1), 10, tip);
        known.learn(hash(2), 12, tip);
        known.learn(hash(3), 11, ChainPlace::NotInBestChain);
        assert_eq!(known.anchor_height(), Some(12));
        assert!(known.in_chain(hash(1)) && known.in_chain(hash(2)) && !known.in_chain(hash(3)));
        known.check_anchor(Some(hash(2)));
        assert!(known.in_chain(hash(1)));
        // Another block at the anchor's height: a reorganisation, everything asked again.
        known.check_anchor(Some(hash(9)));
        assert!(!known.in_chain(hash(1)) && !known.in_chain(hash(2)));
        assert_eq!(known.anchor_height(), None);
    }

    #[test]
    fn orphans_deeper_than_maturity_are_not_watched() {
        assert_eq!(lowest_watched_height(50), 0);
        assert_eq!(lowest_watched_height(250), 150);
    }
}
