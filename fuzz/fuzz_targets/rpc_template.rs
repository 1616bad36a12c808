//! Arbitrary bytes as a node's `getblocktemplate` answer: parsed as JSON, read by
//! `parse_block_template`, and a template it accepts turned into the pool's work and the
//! Template Provider's served template, then given to a mining session with a channel open.
//! A node is not a miner, but it may be another program than the one the operator thinks, a
//! proxy, or broken: nothing it says may crash the pool.
//!
//! Checked besides "no panic": an accepted template's transactions are not coinbases, each has
//! a cost entry, its value is at most 21 million bitcoin, and the work built from it folds its
//! merkle path to the root of the whole block.

#![no_main]

mod common;

use std::sync::{Arc, OnceLock};

use bitcoin::hashes::Hash;
use blvm_stratum_v2::mining::{ExtranonceAllocator, MiningConfig, Session, Work};
use blvm_stratum_v2::node::rpc::parse_block_template;
use blvm_stratum_v2::template_provider::ServedTemplate;
use blvm_stratum_v2::wire::mining::OpenExtendedMiningChannel;
use blvm_stratum_v2::wire::{Frame, Str0_255};
use libfuzzer_sys::fuzz_target;

fn config() -> &'static Arc<MiningConfig> {
    static CONFIG: OnceLock<Arc<MiningConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| Arc::new(MiningConfig::default()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(template) = parse_block_template(&value) else {
        return;
    };
    assert!(template.transactions.iter().all(|tx| !tx.is_coinbase()));
    assert_eq!(
        template.transactions.len(),
        template.transaction_costs.len()
    );
    assert!(template.coinbase_value <= bitcoin::Amount::MAX_MONEY);
    let served = ServedTemplate::new(1, template.clone());
    let _ = served.prev_hash();
    let Ok(work) = Work::new(1, template, &config().coinbase) else {
        return;
    };
    // The work's merkle path folds the coinbase to the whole block's root.
    let block = work.assemble_block(
        &[],
        &vec![0; config().coinbase.extranonce_len],
        work.version,
        work.cur_time,
        0,
    );
    let root = block.compute_merkle_root().expect("a coinbase at least");
    assert_eq!(
        work.merkle_root(&[], &vec![0; config().coinbase.extranonce_len])
            .to_byte_array(),
        root.to_byte_array()
    );
    // A session takes it and opens a channel on it.
    let mut session = Session::new(config().clone(), Arc::new(ExtranonceAllocator::new()));
    session.on_work(&work, 1_800_000_000_000);
    let setup = common::setup_connection(0, 0);
    let _ = session.handle_frame(&Frame::parse_exact(&setup).unwrap(), 1_800_000_000_000);
    let open = common::encoded(&OpenExtendedMiningChannel {
        request_id: 1,
        user_identity: Str0_255::new("fuzz.worker").unwrap(),
        nominal_hash_rate: 1e12,
        max_target: [0xff; 32],
        min_extranonce_size: 4,
    });
    let _ = session.handle_frame(&Frame::parse_exact(&open).unwrap(), 1_800_000_000_000);
});
