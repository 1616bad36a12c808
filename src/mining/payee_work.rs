//! Work for a channel paid in its own coinbase (`sri/solo/ADDRESS`,
//! `sri/donate/PERCENT/ADDRESS`): the pool's work for a template with the coinbase paying the
//! channel's address (and the pool's script its donation) instead of the pool.
//!
//! The pool-wide [`Work`] of a template is untouched: pool channels keep sharing it. A payee's
//! work is derived from it once per (work, payee) and shared by every channel with that payee
//! through [`PayeeWorks`], a small bounded cache (1,000 solo miners of one address cost one
//! derivation per template). A derivation changes only the coinbase's outputs: the prefix
//! before the extranonce, its hash state, the merkle path and the template's transactions
//! (shared, not copied) are the pool work's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bitcoin::{Amount, BlockHash, TxOut};

use super::work::Work;
use crate::payout::CoinbasePayee;

/// Most coinbase weight a template leaves room for: the node reserves 4,000 weight units of
/// a block for its coinbase (Bitcoin Core's `BlockAssembler`, and blvm's templates alike).
pub const MAX_COINBASE_WEIGHT: u64 = 4_000;

/// Most signature operations (cost) a template leaves to its coinbase: 400, as reserved by
/// the node.
pub const MAX_COINBASE_SIGOPS_COST: usize = 400;

/// Derivations [`PayeeWorks`] keeps, oldest dropped first: a few templates' worth of payees.
pub const DEFAULT_CAPACITY: usize = 4_096;

/// Pool works whose derivations [`PayeeWorks`] keeps: each holds its template's transactions
/// (megabytes on mainnet), so the derivations of older works go, however few they are (one
/// solo miner and a template every 30 seconds kept 4,096 templates, a day and more, alive).
/// Channels still mining an older work hold their own jobs' works; the cache only shares
/// derivations, and new jobs are on the newest works.
pub const KEPT_WORKS: usize = 4;

/// Why a payee's coinbase cannot be built within the template's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayeeWorkError {
    /// The coinbase would be heavier than the room the template leaves.
    #[error("the coinbase for {address} would weigh {weight} WU (at most {MAX_COINBASE_WEIGHT})")]
    TooHeavy {
        /// The payee's address.
        address: String,
        /// The coinbase's weight.
        weight: u64,
    },
    /// The coinbase would have more signature operations than the template allows.
    #[error(
        "the coinbase for {address} would cost {cost} sigops (at most {MAX_COINBASE_SIGOPS_COST})"
    )]
    TooManySigops {
        /// The payee's address.
        address: String,
        /// Its sigop cost.
        cost: usize,
    },
}

/// The coinbase outputs that pay `payee` a reward of `value_sat`: the address first, then
/// the pool's script its donation (left out when it rounds to nothing).
pub fn payee_outputs(
    payee: &CoinbasePayee,
    pool_script: &bitcoin::Script,
    value_sat: u64,
) -> Vec<TxOut> {
    let (to_address, to_pool) = payee.split(value_sat);
    let mut outputs = vec![TxOut {
        value: Amount::from_sat(to_address),
        script_pubkey: payee.address.script_pubkey(),
    }];
    if to_pool > 0 {
        outputs.push(TxOut {
            value: Amount::from_sat(to_pool),
            script_pubkey: pool_script.to_owned(),
        });
    }
    outputs
}

/// `base` (the pool's work for a template, paying the pool's script or the PPLNS window) with
/// its coinbase paying `payee` instead; donations go to `base.pool_script`. Same id, tip and
/// transactions as `base`.
pub fn derive(base: &Work, payee: &CoinbasePayee) -> Result<Work, PayeeWorkError> {
    let outputs = payee_outputs(payee, &base.pool_script, base.coinbase_value);
    with_outputs(base, outputs, &payee.address.to_string())
}

/// `base` with its coinbase paying `outputs` (they must sum to at most the reward) instead of
/// the pool's payout, within the room the template leaves (`payee` names who they pay, for
/// the error). Same id, tip and transactions as `base`; it pays no window
/// (`coinbase_payouts: None`). Also what a coinbase paying the PPLNS window is built with
/// (`window_work`).
pub fn with_outputs(base: &Work, outputs: Vec<TxOut>, payee: &str) -> Result<Work, PayeeWorkError> {
    let coinbase = base.coinbase.with_payouts(outputs);
    let weight = coinbase.tx.weight().to_wu();
    if weight > MAX_COINBASE_WEIGHT {
        return Err(PayeeWorkError::TooHeavy {
            address: payee.to_owned(),
            weight,
        });
    }
    // Legacy sigops count four times (BIP141); a coinbase has no inputs to count.
    let cost: usize = coinbase
        .tx
        .output
        .iter()
        .map(|o| o.script_pubkey.count_sigops_legacy() * 4)
        .sum();
    if cost > MAX_COINBASE_SIGOPS_COST {
        return Err(PayeeWorkError::TooManySigops {
            address: payee.to_owned(),
            cost,
        });
    }
    Ok(Work {
        id: base.id,
        version: base.version,
        prev_hash: base.prev_hash,
        nbits: base.nbits,
        height: base.height,
        min_time: base.min_time,
        cur_time: base.cur_time,
        network_target: base.network_target,
        coinbase,
        merkle_path: base.merkle_path.clone(),
        transactions: base.transactions.clone(),
        coinbase_value: base.coinbase_value,
        pool_script: base.pool_script.clone(),
        coinbase_payouts: None,
    })
}

/// What a derivation is keyed by: the pool work (its id and tip, so that two works that happen
/// to share an id are never confused) and the payee.
type Key = (u64, BlockHash, CoinbasePayee);

/// Payees' works, derived once and shared (see the module comment). Bounded: past
/// `capacity` derivations the oldest go (a channel keeps the few it mines on), and only the
/// derivations of the newest [`KEPT_WORKS`] pool works are kept.
#[derive(Debug)]
pub struct PayeeWorks {
    inner: Mutex<Derived>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Derived {
    by_key: HashMap<Key, Arc<Work>>,
    order: VecDeque<Key>,
    /// The pool works derived from, newest last (at most [`KEPT_WORKS`]).
    works: VecDeque<(u64, BlockHash)>,
    derivations: u64,
}

impl Default for PayeeWorks {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl PayeeWorks {
    /// An empty cache keeping at most `capacity` derivations (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        PayeeWorks {
            inner: Mutex::new(Derived::default()),
            capacity: capacity.max(1),
        }
    }

    /// `base` for `payee`: the shared derivation if there is one, else derived now.
    pub fn get(&self, base: &Work, payee: &CoinbasePayee) -> Result<Arc<Work>, PayeeWorkError> {
        let key = (base.id, base.prev_hash, payee.clone());
        // A poisoned lock only means another thread panicked mid-insert: the map is whole.
        let mut d = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(work) = d.by_key.get(&key) {
            return Ok(work.clone());
        }
        // Derived under the lock: a few microseconds (one transaction re-serialized), and
        // channels of one payee arriving together derive it once.
        let work = Arc::new(derive(base, payee)?);
        d.derivations += 1;
        let base_key = (base.id, base.prev_hash);
        if !d.works.contains(&base_key) {
            d.works.push_back(base_key);
            if d.works.len() > KEPT_WORKS
                && let Some((id, prev)) = d.works.pop_front()
            {
                d.by_key.retain(|k, _| (k.0, k.1) != (id, prev));
                d.order.retain(|k| (k.0, k.1) != (id, prev));
            }
        }
        if d.order.len() >= self.capacity
            && let Some(oldest) = d.order.pop_front()
        {
            d.by_key.remove(&oldest);
        }
        d.order.push_back(key.clone());
        d.by_key.insert(key, work.clone());
        Ok(work)
    }

    /// Derivations made so far (cache misses).
    pub fn derivations(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .derivations
    }

    /// Derivations held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_key
            .len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use bitcoin::hashes::Hash;
    use bitcoin::{Address, Network, ScriptBuf, Txid};

    use super::*;
    use crate::block::coinbase::CoinbaseConfig;
    use crate::block::merkle::fold_merkle_path;
    use crate::node::regtest::{ChainConfig, EmbeddedChain};

    fn address(n: u8) -> Address {
        Address::p2wsh(&ScriptBuf::from_bytes(vec![n]), Network::Regtest)
    }

    fn payee(n: u8, pool_percent: u8) -> CoinbasePayee {
        CoinbasePayee {
            address: address(n),
            pool_percent,
        }
    }

    fn chain() -> EmbeddedChain {
        EmbeddedChain::new(ChainConfig {
            bits: 0x207f_ffff,
            synthetic_transactions: 3,
            block_interval_secs: 0,
        })
    }

    fn pool_work(id: u64) -> Work {
        pool_work_on(&mut chain(), id)
    }

    fn pool_work_on(chain: &mut EmbeddedChain, id: u64) -> Work {
        let cfg = CoinbaseConfig {
            payout_script: Address::from_str("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
                .unwrap()
                .assume_checked()
                .script_pubkey(),
            pool_tag: b"/test/".to_vec(),
            extranonce_len: 12,
        };
        Arc::into_inner(Work::new(id, chain.template(1_700_000_000), &cfg).unwrap()).unwrap()
    }

    #[test]
    fn a_derived_coinbase_pays_the_payee_and_keeps_the_rest() {
        let base = pool_work(7);
        let pool_script = base.coinbase.tx.output[0].script_pubkey.clone();
        let value = base.coinbase_value;
        let solo = derive(&base, &payee(1, 0)).unwrap();
        assert_eq!(solo.coinbase.prefix, base.coinbase.prefix, "prefix kept");
        assert_ne!(solo.coinbase.suffix, base.coinbase.suffix);
        let outs = &solo.coinbase.tx.output;
        assert_eq!(outs.len(), base.coinbase.tx.output.len());
        assert_eq!(outs[0].script_pubkey, address(1).script_pubkey());
        assert_eq!(outs[0].value.to_sat(), value, "the whole reward");
        // The witness commitment stays last.
        assert_eq!(outs.last(), base.coinbase.tx.output.last());
        assert!(
            Arc::ptr_eq(&solo.transactions, &base.transactions),
            "shared"
        );

        let donate = derive(&base, &payee(2, 10)).unwrap();
        let outs = &donate.coinbase.tx.output;
        assert_eq!(outs.len(), base.coinbase.tx.output.len() + 1);
        let (miner, pool) = payee(2, 10).split(value);
        assert_eq!(
            (outs[0].value.to_sat(), outs[1].value.to_sat()),
            (miner, pool)
        );
        assert_eq!(outs[1].script_pubkey, pool_script);
        assert_eq!(miner + pool, value);

        // The split form and the whole transaction agree: the txid from prefix, extranonce
        // and suffix is the assembled coinbase's, and the merkle root is the block's.
        let (prefix, extranonce) = ([1u8, 2, 3, 4], [9u8; 8]);
        let block = donate.assemble_block(&prefix, &extranonce, donate.version, donate.cur_time, 0);
        let txid = Txid::from_byte_array(donate.coinbase.txid_with(&prefix, &extranonce));
        assert_eq!(block.txdata[0].compute_txid(), txid);
        assert_eq!(
            fold_merkle_path(txid, &donate.merkle_path),
            block.compute_merkle_root().unwrap()
        );
        assert!(block.check_merkle_root());
        assert!(block.check_witness_commitment());
        assert_eq!(block.txdata.len(), 1 + base.transactions.len());
    }

    /// Mines `work` (every other hash is a block at regtest's bits) and submits it.
    fn mine_on(chain: &mut EmbeddedChain, work: &Work) -> Result<bitcoin::Block, String> {
        let (prefix, extranonce) = ([7u8; 4], [1u8; 8]);
        for nonce in 0..1_000u32 {
            let block =
                work.assemble_block(&prefix, &extranonce, work.version, work.cur_time, nonce);
            if block.header.validate_pow(work.network_target).is_ok() {
                return chain
                    .submit_block(&block, work.cur_time)
                    .map(|_| block)
                    .map_err(|e| format!("{e:?}"));
            }
        }
        Err("no nonce".into())
    }

    #[test]
    fn derived_blocks_are_valid_for_the_chain() {
        let mut chain = chain();
        for (n, pool_percent) in [(1u8, 0u8), (2, 10), (3, 99)] {
            let base = pool_work_on(&mut chain, u64::from(n));
            let work = derive(&base, &payee(n, pool_percent)).unwrap();
            let block = mine_on(&mut chain, &work).unwrap();
            let paid: u64 = block.txdata[0]
                .output
                .iter()
                .map(|o| o.value.to_sat())
                .sum();
            assert_eq!(paid, base.coinbase_value, "the whole reward, nothing more");
        }
        // A coinbase paying many outputs (payouts in the coinbase) within the room left.
        let base = pool_work_on(&mut chain, 9);
        let outputs: Vec<TxOut> = (0..16u8)
            .map(|n| TxOut {
                value: Amount::from_sat(base.coinbase_value / 16),
                script_pubkey: address(n).script_pubkey(),
            })
            .collect();
        let work = with_outputs(&base, outputs, "the window").unwrap();
        let block = mine_on(&mut chain, &work).unwrap();
        assert_eq!(block.txdata[0].output.len(), 17);
        // Too many for the room a template leaves: refused, not a block the node would not take.
        let outputs: Vec<TxOut> = (0..40u8)
            .map(|n| TxOut {
                value: Amount::from_sat(1),
                script_pubkey: address(n).script_pubkey(),
            })
            .collect();
        assert!(matches!(
            with_outputs(&base, outputs, "the window"),
            Err(PayeeWorkError::TooHeavy { .. })
        ));
    }

    #[test]
    fn one_derivation_per_work_and_payee_and_the_cache_is_bounded() {
        let works = PayeeWorks::with_capacity(3);
        let (w1, w2) = (pool_work(1), pool_work(2));
        let a = works.get(&w1, &payee(1, 0)).unwrap();
        for _ in 0..1_000 {
            assert!(Arc::ptr_eq(&a, &works.get(&w1, &payee(1, 0)).unwrap()));
        }
        assert_eq!(
            works.derivations(),
            1,
            "1,000 channels of one payee: one derivation"
        );
        works.get(&w1, &payee(1, 5)).unwrap();
        works.get(&w2, &payee(1, 0)).unwrap();
        assert_eq!((works.derivations(), works.len()), (3, 3));
        works.get(&w2, &payee(3, 0)).unwrap();
        assert_eq!(works.len(), 3, "bounded");
        // The oldest went: derived again.
        works.get(&w1, &payee(1, 0)).unwrap();
        assert_eq!(works.derivations(), 5);
    }

    /// One solo miner and a new template every so often: the derivations of older works
    /// go, and with them the older templates' transactions (nothing else holds them).
    #[test]
    fn older_works_are_not_kept_alive() {
        let works = PayeeWorks::default();
        let mut chain = chain();
        let mut kept = Vec::new();
        for id in 0..100 {
            let base = pool_work_on(&mut chain, id);
            kept.push(Arc::downgrade(&base.transactions));
            works.get(&base, &payee(1, 0)).unwrap();
        }
        let alive = kept.iter().filter(|w| w.strong_count() > 0).count();
        assert_eq!(alive, KEPT_WORKS, "the newest works' transactions only");
        assert_eq!(works.len(), KEPT_WORKS);
    }
}
