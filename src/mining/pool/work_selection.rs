//! Which template becomes the pool's work: the one rule for node events, the periodic
//! same-tip refresh and the first template at start. A template on a new tip always goes out;
//! one on the same tip only if it pays more; a different height on the same prev hash is a
//! correction, handled as a new tip. Work ids are handed out here, so they never repeat.
//!
//! With payouts in the coinbase (`coinbase_payouts = true`), the work pays the current PPLNS
//! window ([`WindowPayer`], `window_work`), and a template on the same tip that pays no more
//! still goes out when the window moved on (newer shares) since the current work's: the
//! coinbase follows the window at the pace of the template refresh.

use std::sync::Arc;

use crate::block::BlockTemplate;
use crate::mining::window_work::{WindowWorkError, pay_window};
use crate::mining::{CoinbaseConfig, MiningError, Work};
use crate::payout::policy::{CoinbasePayoutTerms, PayoutPolicy};
use crate::payout::window::PayoutWindow;

/// What the pool's work pays when payouts are in the coinbase: the window and the policy
/// (fee, `[users]` addresses, the limits).
#[derive(Debug, Clone, Copy)]
pub struct WindowPayer<'a> {
    /// The current window.
    pub window: &'a PayoutWindow,
    /// The pool's payout policy.
    pub policy: &'a PayoutPolicy,
    /// Its coinbase payout limits.
    pub terms: &'a CoinbasePayoutTerms,
}

/// Why a template replaces the current work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkChange {
    /// No work yet, another prev hash, or another height on the same prev hash (a node that
    /// reads its tip and its height apart, as blvm-node does under load, can hand out a
    /// template whose BIP34 height does not follow its prev hash, and every block on it would
    /// be refused): miners must drop their jobs.
    NewTip,
    /// Same tip, a larger coinbase value (more fees): a future-less update of the jobs.
    PaysMore,
    /// Same tip and value, but the PPLNS window its coinbase pays moved on
    /// (`coinbase_payouts`): a future-less update of the jobs.
    WindowMoved,
}

impl WorkChange {
    /// Whether miners must drop their current jobs.
    pub fn is_new_tip(self) -> bool {
        self == WorkChange::NewTip
    }
}

/// What [`WorkSelection::offer`] decided for a template that is taken.
#[derive(Debug, Clone)]
pub struct SelectedWork {
    /// The new work, already the current one.
    pub work: Arc<Work>,
    /// Why it replaced the previous work.
    pub change: WorkChange,
    /// Why its coinbase does not pay the window, when a window was given and it does not (it
    /// pays the pool's script instead).
    pub window_error: Option<WindowWorkError>,
}

/// The current work and the next work id.
#[derive(Debug)]
pub struct WorkSelection {
    current: Option<Arc<Work>>,
    next_id: u64,
}

impl Default for WorkSelection {
    fn default() -> Self {
        WorkSelection {
            current: None,
            next_id: 1,
        }
    }
}

impl WorkSelection {
    /// No work yet; the first work id is 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// The work miners get now, if any.
    pub fn current(&self) -> Option<&Arc<Work>> {
        self.current.as_ref()
    }

    /// Whether `template` would replace the current work, and why; `None`: it would not.
    pub fn judge(&self, template: &BlockTemplate) -> Option<WorkChange> {
        self.judge_paying(template, None)
    }

    /// [`judge`](Self::judge) for work paying `window` (see the module comment).
    pub fn judge_paying(
        &self,
        template: &BlockTemplate,
        window: Option<&PayoutWindow>,
    ) -> Option<WorkChange> {
        let Some(current) = &self.current else {
            return Some(WorkChange::NewTip);
        };
        let paid_up_to = current.coinbase_payouts.as_ref().map(|p| p.last_share_id);
        // Another height or nBits on the same prev hash is a new tip too: testnet's
        // getblocktemplate gives the same tip the minimum difficulty 20 minutes after its
        // block, and the miners must get it with a SetNewPrevHash (which carries nBits).
        if current.prev_hash != template.prev_hash
            || current.height != template.height
            || current.nbits != template.bits.to_consensus()
        {
            Some(WorkChange::NewTip)
        } else if template.coinbase_value.to_sat() > current.coinbase_value {
            Some(WorkChange::PaysMore)
        } else if let Some(w) = window
            && w.bits == template.bits
            && paid_up_to != Some(w.last_share_id)
        {
            Some(WorkChange::WindowMoved)
        } else {
            None
        }
    }

    /// Takes `template` as the current work if [`judge`](Self::judge) says so, with the next
    /// work id; `Ok(None)`: the current work stays.
    pub fn offer(
        &mut self,
        template: BlockTemplate,
        coinbase: &CoinbaseConfig,
    ) -> Result<Option<SelectedWork>, MiningError> {
        self.offer_paying(template, coinbase, None)
    }

    /// [`offer`](Self::offer), the work's coinbase paying the window of `payer` when given (or
    /// the pool's script when it cannot: [`SelectedWork::window_error`]).
    pub fn offer_paying(
        &mut self,
        template: BlockTemplate,
        coinbase: &CoinbaseConfig,
        payer: Option<WindowPayer<'_>>,
    ) -> Result<Option<SelectedWork>, MiningError> {
        let Some(change) = self.judge_paying(&template, payer.map(|p| p.window)) else {
            return Ok(None);
        };
        let mut work = Work::new(self.next_id, template, coinbase)?;
        let mut window_error = None;
        if let Some(p) = payer {
            match pay_window(&work, p.window, p.policy, p.terms) {
                Ok(paying) => work = Arc::new(paying),
                Err(e) => window_error = Some(e),
            }
        }
        self.next_id += 1;
        self.current = Some(work.clone());
        Ok(Some(SelectedWork {
            work,
            change,
            window_error,
        }))
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, BlockHash, CompactTarget, block::Version};

    use super::*;
    use crate::mining::MiningConfig;

    fn template(prev: u8, height: u32, value_sat: u64) -> BlockTemplate {
        BlockTemplate {
            version: Version::from_consensus(0x2000_0000),
            prev_hash: BlockHash::from_byte_array([prev; 32]),
            bits: CompactTarget::from_consensus(0x207f_ffff),
            height,
            min_time: 1_700_000_000,
            cur_time: 1_700_000_100,
            coinbase_value: Amount::from_sat(value_sat),
            transactions: Vec::new(),
            transaction_costs: Vec::new(),
        }
    }

    fn offer(s: &mut WorkSelection, t: BlockTemplate) -> Option<(u64, WorkChange)> {
        let cfg = MiningConfig::default().coinbase;
        s.offer(t, &cfg).unwrap().map(|w| (w.work.id, w.change))
    }

    #[test]
    fn the_first_template_is_a_new_tip_with_work_id_1() {
        let mut s = WorkSelection::new();
        assert!(s.current().is_none());
        assert_eq!(
            offer(&mut s, template(1, 101, 50)),
            Some((1, WorkChange::NewTip))
        );
        assert_eq!(s.current().unwrap().height, 101);
    }

    #[test]
    fn a_new_tip_always_goes_out_even_when_it_pays_less() {
        let mut s = WorkSelection::new();
        offer(&mut s, template(1, 101, 5_000));
        assert_eq!(
            offer(&mut s, template(2, 102, 10)),
            Some((2, WorkChange::NewTip))
        );
        assert_eq!(s.current().unwrap().coinbase_value, 10);
    }

    #[test]
    fn the_same_tip_goes_out_only_when_it_pays_more() {
        let mut s = WorkSelection::new();
        offer(&mut s, template(1, 101, 1_000));
        assert_eq!(offer(&mut s, template(1, 101, 1_000)), None);
        assert_eq!(offer(&mut s, template(1, 101, 999)), None);
        assert_eq!(s.current().unwrap().id, 1);
        assert_eq!(
            offer(&mut s, template(1, 101, 1_001)),
            Some((2, WorkChange::PaysMore))
        );
        assert!(!WorkChange::PaysMore.is_new_tip());
        assert_eq!(s.current().unwrap().coinbase_value, 1_001);
    }

    #[test]
    fn another_height_on_the_same_prev_hash_is_a_correction_sent_as_a_new_tip() {
        let mut s = WorkSelection::new();
        offer(&mut s, template(1, 101, 1_000));
        // Pays less, same prev hash, but the height differs: it goes out, as a new tip.
        assert_eq!(
            offer(&mut s, template(1, 103, 500)),
            Some((2, WorkChange::NewTip))
        );
        assert_eq!(s.current().unwrap().height, 103);
    }

    /// Testnet's 20-minute rule: the same tip's template at another nBits (the minimum
    /// difficulty) goes out as a new tip whatever it pays; before, it was ignored when it
    /// paid no more (blocks found past the 20 minutes were bad-diffbits) or sent as a job
    /// update without SetNewPrevHash (miners hashed at the old nBits, every share refused).
    #[test]
    fn other_bits_on_the_same_tip_are_a_new_tip() {
        let mut s = WorkSelection::new();
        assert_eq!(
            offer(&mut s, template(1, 101, 100)),
            Some((1, WorkChange::NewTip))
        );
        let easier = |value| BlockTemplate {
            bits: CompactTarget::from_consensus(0x1d00_ffff),
            ..template(1, 101, value)
        };
        assert_eq!(s.judge(&easier(100)), Some(WorkChange::NewTip));
        assert_eq!(offer(&mut s, easier(101)), Some((2, WorkChange::NewTip)));
        assert_eq!(offer(&mut s, easier(101)), None);
    }

    #[test]
    fn paying_the_window_the_work_follows_it_on_the_same_tip() {
        use crate::payout::pplns::{WindowShare, count};
        let address = bitcoin::Address::p2wsh(
            &bitcoin::ScriptBuf::from_bytes(vec![0x51]),
            bitcoin::Network::Regtest,
        )
        .to_string();
        let window = |last: u64, bits: u32| PayoutWindow {
            bits: CompactTarget::from_consensus(bits),
            window_difficulty: 10.0,
            last_share_id: last,
            counted: count(
                [WindowShare {
                    id: last,
                    user: &address,
                    difficulty: 1.0,
                }],
                10.0,
            )
            .unwrap(),
        };
        let policy = PayoutPolicy::default();
        let terms = CoinbasePayoutTerms::default();
        let cfg = MiningConfig::default().coinbase;
        let mut s = WorkSelection::new();
        let mut offer = |t: BlockTemplate, w: &PayoutWindow| {
            let payer = WindowPayer {
                window: w,
                policy: &policy,
                terms: &terms,
            };
            s.offer_paying(t, &cfg, Some(payer)).unwrap()
        };
        let first = offer(template(1, 101, 5_000_000_000), &window(7, 0x207f_ffff)).unwrap();
        assert_eq!(first.change, WorkChange::NewTip);
        let paid = first
            .work
            .coinbase_payouts
            .clone()
            .expect("pays the window");
        assert_eq!(paid.last_share_id, 7);
        assert_eq!(paid.payouts.len(), 1);
        assert_eq!(paid.payouts[0].user, address);
        // The same window: the work stays; the window moved on: a new work on the same tip.
        assert!(offer(template(1, 101, 5_000_000_000), &window(7, 0x207f_ffff)).is_none());
        let moved = offer(template(1, 101, 5_000_000_000), &window(9, 0x207f_ffff)).unwrap();
        assert_eq!(moved.change, WorkChange::WindowMoved);
        assert!(!moved.change.is_new_tip());
        assert_eq!(
            moved.work.coinbase_payouts.as_ref().unwrap().last_share_id,
            9
        );
        // A window of another difficulty pays nothing (and moves nothing on the same tip).
        assert!(offer(template(1, 101, 5_000_000_000), &window(11, 0x1d00_ffff)).is_none());
        let other = offer(template(2, 102, 5_000_000_000), &window(11, 0x1d00_ffff)).unwrap();
        assert!(other.work.coinbase_payouts.is_none());
        assert!(matches!(
            other.window_error,
            Some(WindowWorkError::OtherDifficulty { .. })
        ));
    }

    #[test]
    fn work_ids_strictly_increase_and_skipped_templates_use_none() {
        let mut s = WorkSelection::new();
        let mut ids = Vec::new();
        for (prev, value) in [(1, 10), (1, 10), (1, 11), (2, 1), (2, 1), (3, 1)] {
            if let Some((id, _)) = offer(&mut s, template(prev, 100 + u32::from(prev), value)) {
                ids.push(id);
            }
        }
        assert_eq!(ids, [1, 2, 3, 4]);
    }
}
