//! Our CPU miner against the real server over TCP on 127.0.0.1: shares accepted, blocks found
//! and accepted by the embedded chain, the new prev hash reaches the miner and mining goes on
//! (several blocks in a row), for both channel kinds; then a clean shutdown.

use std::sync::Arc;
use std::time::Duration;

use blvm_stratum_v2::client::{ChannelKind, MinerOptions, StopReason, run_miner};
use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::node::NodeApi;
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode, HISTORY_HEIGHT};
use blvm_stratum_v2::server::StratumV2Server;

fn test_config(dir: &std::path::Path) -> PoolConfig {
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        // About 4,000 hashes a share: on regtest difficulty every other share is a block, and
        // each block's new work reaches the miner before its next share.
        min_difficulty: Some(1e-6),
        max_difficulty: Some(1e-6),
        ..PoolOptions::default()
    };
    PoolConfig::resolve(&opts, "test").expect("valid test config")
}

async fn mine_blocks(channel: ChannelKind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        synthetic_transactions: 6,
        block_interval_secs: 0,
        ..ChainConfig::default()
    }));
    let api: Arc<dyn NodeApi> = node.clone();
    let server = StratumV2Server::new(test_config(dir.path()), api).expect("server");
    let addr = server.start().await.expect("start");
    let opts = MinerOptions {
        url: addr.to_string(),
        authority_pubkey: server.authority_public_key().to_owned(),
        threads: 1,
        channel,
        user: "e2e".into(),
        nominal_hash_rate: 0.0,
        max_shares: Some(12),
        duration: Some(Duration::from_secs(60)),
        ..MinerOptions::default()
    };
    let report = tokio::time::timeout(
        Duration::from_secs(90),
        run_miner(opts, std::future::pending::<()>()),
    )
    .await
    .expect("miner finished in time")
    .expect("miner ran");
    assert_eq!(report.stop, StopReason::MaxShares, "{report:?}");
    assert!(report.shares_accepted >= 12, "{report:?}");
    // On regtest difficulty about half of the shares are blocks: several blocks in a row, each
    // followed by a new prev hash that the miner mined on.
    let mined = node.height() - HISTORY_HEIGHT;
    assert!(mined >= 3, "blocks mined {mined}");
    assert!(
        report.prev_hashes_received >= u64::from(mined),
        "{report:?}"
    );
    // Let the block submitter and the stats catch up, then check them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = server.get_pool_stats().await;
    assert!(stats.accepted_shares >= 12, "{stats:?}");
    assert_eq!(
        stats.blocks_accepted,
        u64::from(node.height() - HISTORY_HEIGHT),
        "{stats:?}"
    );
    // Shares found on a tip the miner already solved are refused as stale, not submitted as
    // blocks the chain would refuse.
    assert_eq!(stats.blocks_rejected, 0, "{stats:?}");
    // Every accepted block was written to the data directory before it was submitted.
    let saved = std::fs::read_dir(dir.path().join("blocks/submitted"))
        .expect("blocks saved")
        .count();
    assert_eq!(saved as u64, stats.blocks_accepted);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_channel_miner_finds_several_blocks() {
    mine_blocks(ChannelKind::Extended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_channel_miner_finds_several_blocks() {
    mine_blocks(ChannelKind::Standard).await;
}
