//! The load generator against an in-process server on 127.0.0.1: a short bounded run where
//! every connection sets up, shares are acknowledged and nothing fails.

use std::sync::Arc;
use std::time::Duration;

use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::loadgen::{self, LoadgenOptions};
use blvm_stratum_v2::node::NodeApi;
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
use blvm_stratum_v2::server::StratumV2Server;

fn run_against_server(
    opts: impl FnOnce(String, String) -> LoadgenOptions,
) -> loadgen::LoadgenReport {
    run_against_server_sv1(|url, key, _| opts(url, key))
}

/// Like [`run_against_server`], `opts` also given the Stratum V1 port's address.
fn run_against_server_sv1(
    opts: impl FnOnce(String, String, String) -> LoadgenOptions,
) -> loadgen::LoadgenReport {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = PoolConfig::resolve(
        &PoolOptions {
            listen_addr: Some("127.0.0.1:0".into()),
            data_dir: Some(dir.path().to_path_buf()),
            // A target near 2^256: the first nonce is a share. Difficulty-1 blocks: none.
            min_difficulty: Some(1e-12),
            max_difficulty: Some(1e-12),
            chain_bits: Some(0x1d00_ffff),
            // A load test of capacity at a fixed difficulty: no per-channel share rate limit.
            share_rate_multiple: Some(1e9),
            ..PoolOptions::default()
        },
        "test",
    )
    .expect("config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let node: Arc<dyn NodeApi> = Arc::new(EmbeddedNode::new(ChainConfig {
        bits: 0x1d00_ffff,
        ..ChainConfig::default()
    }));
    let server = Arc::new(StratumV2Server::new(config, node).expect("server"));
    let addr = runtime.block_on(server.start()).expect("start");
    let sv1 = runtime
        .block_on(server.sv1_local_addr())
        .expect("an SV1 listener");
    let report = loadgen::run(opts(
        addr.to_string(),
        server.authority_public_key().to_owned(),
        sv1.to_string(),
    ))
    .expect("load generator ran");
    let stats = runtime.block_on(server.get_pool_stats());
    assert!(
        stats.accepted_shares >= report.acked,
        "pool counted {} accepted, load generator {} acknowledged",
        stats.accepted_shares,
        report.acked
    );
    runtime.block_on(server.stop()).expect("stop");
    report
}

#[test]
fn shares_as_fast_as_acknowledged() {
    let report = run_against_server(|url, key| LoadgenOptions {
        url,
        authority_pubkey: key,
        connections: 20,
        rate: 0.0,
        duration: Duration::from_secs(2),
        hold: Duration::from_millis(100),
        grace: Duration::from_secs(2),
        setup_timeout: Duration::from_secs(20),
        server_pid: Some(std::process::id()),
        ..LoadgenOptions::default()
    });
    println!("{}", report.to_text());
    assert_eq!(report.ready, 20, "{report:?}");
    assert!(report.acked > 0, "{report:?}");
    assert_eq!(report.error_count(), 0, "{report:?}");
    assert_eq!(report.rejected, 0);
    assert_eq!(report.unacked, 0);
    assert!(report.latency.count == report.acked && report.latency.p50_us > 0.0);
    assert!(report.server.is_some());
    let json = report.to_json();
    assert!(json.contains("\"acked_per_sec\"") && json.contains("\"error_count\": 0"));
}

#[test]
fn shares_at_a_fixed_rate() {
    let report = run_against_server(|url, key| LoadgenOptions {
        url,
        authority_pubkey: key,
        connections: 20,
        rate: 20.0,
        duration: Duration::from_secs(2),
        hold: Duration::from_millis(100),
        grace: Duration::from_secs(2),
        setup_timeout: Duration::from_secs(20),
        ..LoadgenOptions::default()
    });
    assert_eq!(report.ready, 20, "{report:?}");
    assert_eq!(report.error_count(), 0, "{report:?}");
    // 20 connections x 20 shares/s x 2 s, give or take the first and last tick.
    assert!(
        (700..=840).contains(&report.acked),
        "{} acknowledged: {report:?}",
        report.acked
    );
}

/// The load generator speaking Stratum V1 to the pool's SV1 port: every connection subscribes
/// and authorizes, and every share is answered `true` (after the ledger's commit).
#[test]
fn sv1_shares_as_fast_as_acknowledged() {
    let report = run_against_server_sv1(|_, _, sv1| LoadgenOptions {
        url: sv1,
        sv1: true,
        connections: 20,
        rate: 0.0,
        duration: Duration::from_secs(2),
        hold: Duration::from_millis(100),
        grace: Duration::from_secs(2),
        setup_timeout: Duration::from_secs(20),
        ..LoadgenOptions::default()
    });
    println!("{}", report.to_text());
    assert_eq!(report.ready, 20, "{report:?}");
    assert!(report.acked > 0, "{report:?}");
    assert_eq!(report.error_count(), 0, "{report:?}");
    assert_eq!(report.rejected, 0);
    assert_eq!(report.unacked, 0);
}
