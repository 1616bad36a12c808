//! A restarted pool does not hand out the extranonce prefixes of its previous run: the server is
//! stopped and started again on the same embedded chain (same tip, same template) and the same
//! data directory, and the channels opened after the restart get prefixes no channel of the
//! first run had. Counting from 0 at each start, they were the same prefixes again: the same
//! search space on the same template, so the first run's shares would have been new work.

#[path = "common/sri_client.rs"]
mod sri_client;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
use blvm_stratum_v2::server::StratumV2Server;
use sri_client::Miner;

/// Blocks are rare at this nBits: no share of the test changes the tip.
const RARE_BLOCKS: u32 = 0x1d00_ffff;

/// Starts a server on `node` and `data_dir`, opens an extended and a standard channel, stops
/// it; returns their prefixes and the tip the work was on.
async fn one_run(node: &Arc<EmbeddedNode>, data_dir: &std::path::Path) -> (Vec<Vec<u8>>, String) {
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(data_dir.to_path_buf()),
        chain_bits: Some(RARE_BLOCKS),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&opts, "test").expect("valid test config");
    let server = StratumV2Server::new(config, node.clone()).expect("server");
    let addr = server.start().await.expect("server starts");
    let tip = server.current_work().expect("work").prev_hash.to_string();
    let mut miner = Miner::ready(addr, server.authority_public_key(), 0)
        .await
        .expect("miner set up");
    let extended = miner.open(true, "restart").await.expect("extended channel");
    let standard = miner
        .open(false, "restart")
        .await
        .expect("standard channel");
    let prefixes = vec![
        miner.channel(extended).extranonce_prefix.clone(),
        miner.channel(standard).extranonce_prefix.clone(),
    ];
    drop(miner);
    tokio::time::timeout(Duration::from_secs(15), server.stop())
        .await
        .expect("server stops in time")
        .expect("server stops");
    (prefixes, tip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_pool_hands_out_new_extranonce_prefixes_on_the_same_template() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = Arc::new(EmbeddedNode::new(ChainConfig {
            bits: RARE_BLOCKS,
            synthetic_transactions: 0,
            block_interval_secs: 0,
        }));
        let (first, first_tip) = one_run(&node, dir.path()).await;
        let (second, second_tip) = one_run(&node, dir.path()).await;
        assert_eq!(first_tip, second_tip, "both runs on the same tip");
        let earlier: HashSet<&Vec<u8>> = first.iter().collect();
        assert_eq!(earlier.len(), 2, "unique within a run: {first:?}");
        for p in &second {
            assert!(
                !earlier.contains(p),
                "prefix {p:02x?} of the first run handed out again after the restart"
            );
        }
    })
    .await
    .expect("test finished in time");
}
