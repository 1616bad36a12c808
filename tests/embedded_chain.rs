//! The embedded chain behaves like a chain (issue 14, item 7): with an aimed block interval its
//! difficulty adapts to the miners, so a fresh CPU miner with the pool's default settings finds
//! blocks about that often and is rarely answered stale-share. On the fixed chain
//! (`block_interval_secs` 0, the old default) every other share of such a miner is a block,
//! and the share after each block is stale.
//!
//! Bounded in time: a 1 s interval instead of the default 10 s, and ten shares a second, 20 s
//! of mining.

use std::sync::Arc;
use std::time::Duration;

use blvm_stratum_v2::client::{MinerOptions, MinerReport, run_miner};
use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::node::NodeApi;
use blvm_stratum_v2::node::regtest::{
    ADAPTIVE_CHAIN_BITS, ChainConfig, EmbeddedNode, HISTORY_HEIGHT, REGTEST_BITS,
};
use blvm_stratum_v2::server::StratumV2Server;

/// What a fresh CPU miner saw in `secs` seconds on a chain of `block_interval_secs`, and the
/// chain's height `sample_at` seconds in and at the end.
struct Run {
    report: MinerReport,
    height_at_sample: u32,
    height_at_end: u32,
}

impl Run {
    fn rejected(&self) -> u64 {
        self.report.shares_rejected.values().sum()
    }

    fn rejected_share(&self) -> f64 {
        self.rejected() as f64 / (self.report.shares_accepted + self.rejected()).max(1) as f64
    }
}

async fn mine(block_interval_secs: u32, secs: u64, sample_at: u64) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    // The pool's defaults (min_difficulty, vardiff) but for the share rate: ten shares a
    // second. The chain sees a block only when a share meets its target, so until it has
    // caught up with the miner its blocks come at most as often as shares, and each retarget
    // hardens it by the shares per aimed interval (at most 16): ten here, so that it catches
    // up with a 3 MH/s miner within the test (at the defaults, 18 shares a minute and 10 s,
    // it takes about 130 blocks).
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        shares_per_minute: Some(600.0),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&opts, "test").expect("valid config");
    // The pool's default chain: adaptive from ADAPTIVE_CHAIN_BITS, or the old fixed one.
    let bits = if block_interval_secs > 0 {
        ADAPTIVE_CHAIN_BITS
    } else {
        REGTEST_BITS
    };
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        bits,
        block_interval_secs,
        ..ChainConfig::default()
    }));
    let api: Arc<dyn NodeApi> = node.clone();
    let server = StratumV2Server::new(config, api).expect("server");
    let addr = server.start().await.expect("start");
    let opts = MinerOptions {
        url: addr.to_string(),
        authority_pubkey: server.authority_public_key().to_owned(),
        threads: 1,
        user: "newcomer".into(),
        duration: Some(Duration::from_secs(secs)),
        ..MinerOptions::default()
    };
    let miner = tokio::spawn(run_miner(opts, std::future::pending::<()>()));
    tokio::time::sleep(Duration::from_secs(sample_at)).await;
    let height_at_sample = node.height();
    let report = tokio::time::timeout(Duration::from_secs(secs + 30), miner)
        .await
        .expect("miner finished in time")
        .expect("miner task")
        .expect("miner ran");
    let height_at_end = node.height();
    server.stop().await.expect("clean stop");
    Run {
        report,
        height_at_sample,
        height_at_end,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_cpu_miner_is_rarely_stale_and_the_adaptive_chain_slows_to_its_interval() {
    let fixed = mine(0, 4, 1).await;
    let adaptive = mine(1, 20, 6).await;
    let blocks_late = adaptive.height_at_end - adaptive.height_at_sample;
    eprintln!(
        "fixed chain: {} accepted, {} rejected ({:.1}%), {} blocks in 4 s; \
         adaptive (1 s): {} accepted, {} rejected ({:.1}%), {} blocks in 20 s, {} in the last 14 s, {:.0} h/s",
        fixed.report.shares_accepted,
        fixed.rejected(),
        100.0 * fixed.rejected_share(),
        fixed.height_at_end - HISTORY_HEIGHT,
        adaptive.report.shares_accepted,
        adaptive.rejected(),
        100.0 * adaptive.rejected_share(),
        adaptive.height_at_end - HISTORY_HEIGHT,
        blocks_late,
        adaptive.report.hashrate(),
    );
    assert!(
        adaptive.report.shares_accepted >= 5,
        "{:?}",
        adaptive.report
    );
    assert!(
        adaptive.rejected_share() < 0.1,
        "stale shares of a fresh miner: {:?}",
        adaptive.report
    );
    // About one block a second once the difficulty has caught up (Poisson: 14 ± 4), but a
    // retarget can overshoot: block times are whole seconds, so the last catch-up step can
    // measure ten blocks at 0 s and harden sixteenfold when fewer would have done, and a CPU
    // miner on a busy machine hashes slower than the one the chain caught up with. Two blocks in
    // these 14 s were seen once in some twenty runs. What is asserted is what the test is for:
    // the chain keeps making blocks (none would be a stall) and far fewer than the fixed
    // chain's several a second.
    assert!(
        (1..=42).contains(&blocks_late),
        "{blocks_late} blocks in 14 s at a 1 s interval"
    );
}
