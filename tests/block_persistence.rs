//! A found block is on disk before it is submitted; a block left in `blocks/pending` by a
//! stop (node unreachable, crash) is submitted at the next start, so a restart never loses it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::consensus::encode::serialize_hex;
use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::mining::{MiningConfig, Work};
use blvm_stratum_v2::node::NodeApi;
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain, EmbeddedNode, HISTORY_HEIGHT};
use blvm_stratum_v2::server::StratumV2Server;

/// A valid block on a fresh node's tip (the history's last block), found by brute force.
fn block_on_fresh_tip() -> bitcoin::Block {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let mut chain = EmbeddedChain::with_history(ChainConfig::default());
    let cfg = MiningConfig::default();
    let work = Work::new(1, chain.template(now), &cfg.coinbase).unwrap();
    let prefix = [7u8; 24];
    let extranonce = [9u8; 8];
    let nonce = (0u32..)
        .find(|&n| {
            let b = work.assemble_block(&prefix, &extranonce, work.version, work.cur_time, n);
            work.network_target.is_met_by(b.block_hash())
        })
        .unwrap();
    work.assemble_block(&prefix, &extranonce, work.version, work.cur_time, nonce)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_left_pending_is_submitted_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let block = block_on_fresh_tip();
    let hash = block.block_hash().to_string();
    let pending = dir.path().join("blocks/pending");
    std::fs::create_dir_all(&pending).unwrap();
    std::fs::write(pending.join(format!("{hash}.hex")), serialize_hex(&block)).unwrap();

    let node = Arc::new(EmbeddedNode::new(ChainConfig::default()));
    let api: Arc<dyn NodeApi> = node.clone();
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        ..PoolOptions::default()
    };
    let server = StratumV2Server::new(PoolConfig::resolve(&opts, "test").unwrap(), api).unwrap();
    server.start().await.unwrap();
    let submitted = dir.path().join(format!("blocks/submitted/{hash}.hex"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(submitted.exists() && node.height() == HISTORY_HEIGHT + 1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "block not resubmitted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.height(), HISTORY_HEIGHT + 1);
    assert!(!pending.join(format!("{hash}.hex")).exists());
    server.stop().await.unwrap();
}
