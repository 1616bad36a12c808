//! Draining (issue 18): a stopping pool sends each miner the spec's Reconnect (empty host,
//! port 0: the same address, which behind a load balancer is another instance), keeps the
//! connection for the acknowledgements it still owes, and exits 0; our CPU miner follows the
//! Reconnect, and reconnects with backoff while nothing answers, so a restart of the pool on
//! the same address finds it mining again. Every share the miner saw acknowledged, before and
//! after, is in the ledger.

#[path = "common/binary.rs"]
mod binary;
#[path = "common/pool.rs"]
mod pool;
#[path = "common/sri_client.rs"]
mod sri_client;
#[path = "common/sv1_client.rs"]
mod sv1_client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use binary::PoolProcess;
use blvm_stratum_v2::client::{Backoff, ChannelKind, MinerOptions, run_miner_reconnecting};
use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
use blvm_stratum_v2::server::StratumV2Server;
use parsers_sv2::{AnyMessageOwned, CommonMessagesOwned};
use pool::{RARE_BLOCKS, TestPool};
use sri_client::{Miner, expect_closed};

const CHAIN_BITS: u32 = 0x1f00_ffff;

fn pool_on(dir: &std::path::Path, listen: &str, node: Arc<EmbeddedNode>) -> StratumV2Server {
    let config = PoolConfig::resolve(
        &PoolOptions {
            listen_addr: Some(listen.into()),
            data_dir: Some(dir.to_path_buf()),
            min_difficulty: Some(1e-6),
            max_difficulty: Some(1e-6),
            chain_bits: Some(CHAIN_BITS),
            share_rate_multiple: Some(1e9),
            ..PoolOptions::default()
        },
        "test",
    )
    .expect("config");
    StratumV2Server::new(config, node).expect("server")
}

/// Waits until `server` has acknowledged at least `n` shares.
async fn until_accepted(server: &StratumV2Server, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get_pool_stats().await.accepted_shares < n {
        assert!(Instant::now() < deadline, "no shares accepted in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_pool_sends_its_miner_away_and_a_restarted_one_gets_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        bits: CHAIN_BITS,
        synthetic_transactions: 2,
        block_interval_secs: 0,
    }));
    let first = pool_on(dir.path(), "127.0.0.1:0", node.clone());
    let addr = first.start().await.expect("started");
    let key = first.authority_public_key().to_owned();
    let (stop_miner, miner_stopped) = tokio::sync::oneshot::channel::<()>();
    let miner = tokio::spawn(run_miner_reconnecting(
        MinerOptions {
            url: addr.to_string(),
            authority_pubkey: key.clone(),
            threads: 1,
            channel: ChannelKind::Extended,
            user: "drained.rig".into(),
            duration: Some(Duration::from_secs(60)),
            ..MinerOptions::default()
        },
        Backoff::new(Duration::from_millis(50), Duration::from_millis(400)),
        async {
            let _ = miner_stopped.await;
        },
    ));
    until_accepted(&first, 20).await;
    tokio::time::timeout(Duration::from_secs(20), first.stop())
        .await
        .expect("the first pool stopped in time")
        .expect("stopped");
    let acknowledged_by_first = first.get_pool_stats().await.accepted_shares;
    drop(first);

    // Nothing listens for a while: the miner keeps trying, with backoff.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = pool_on(dir.path(), &addr.to_string(), node);
    assert_eq!(
        second.authority_public_key(),
        key,
        "same data dir, same key"
    );
    assert_eq!(second.start().await.expect("restarted"), addr);
    until_accepted(&second, 20).await;
    let _ = stop_miner.send(());
    let report = tokio::time::timeout(Duration::from_secs(30), miner)
        .await
        .expect("the miner stopped in time")
        .unwrap()
        .expect("the miner ran");
    tokio::time::timeout(Duration::from_secs(20), second.stop())
        .await
        .expect("the second pool stopped in time")
        .expect("stopped");

    assert!(report.reconnects_asked >= 1, "{report:?}");
    assert!(report.connections >= 2, "{report:?}");
    assert!(
        report.failures >= 1,
        "refused while no pool listened: {report:?}"
    );
    // It came back: the second pool acknowledged 20 of its shares (`until_accepted`).
    assert!(report.total.shares_accepted > 0, "{report:?}");
    assert!(acknowledged_by_first >= 20);
    // Every acknowledged share, on either pool, is in the ledger the two shared.
    let rows = pool::ledger_shares(dir.path());
    let mine = rows.iter().filter(|s| &*s.record.user == "drained").count() as u64;
    assert!(
        mine >= report.total.shares_accepted,
        "{mine} rows for {} acknowledged",
        report.total.shares_accepted
    );
}

/// The Reconnect `miner` gets from the draining `pool` (panics with the pool's log if the
/// connection closes first).
async fn reconnect_of(
    miner: &mut Miner,
    pool: &PoolProcess,
) -> common_messages_sv2::ReconnectOwned {
    loop {
        match miner.recv().await {
            Ok(AnyMessageOwned::Common(CommonMessagesOwned::Reconnect(r))) => return r,
            Ok(_) => continue,
            Err(e) => panic!(
                "no Reconnect before the close ({e}); the pool's log:\n{}",
                pool.log()
            ),
        }
    }
}

#[test]
fn on_sigterm_the_pool_sends_reconnect_and_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut pool = PoolProcess::start(dir.path(), &["--listen-addr", "127.0.0.1:0"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // A miner built on SRI's crates, set up with a channel open: then the operator's
        // SIGTERM. What it receives is read with SRI's parser.
        let addr: std::net::SocketAddr = pool.addr.parse().unwrap();
        let mut miner = Miner::ready(addr, &pool.key, 0).await.expect("set up");
        miner.open(true, "sigterm.rig").await.expect("channel");
        pool.signal(libc::SIGTERM);
        let reconnect = reconnect_of(&mut miner, &pool).await;
        assert_eq!(reconnect.new_port, 0);
        assert!(reconnect.new_host.as_bytes().is_empty(), "{reconnect:?}");
        // It follows: the connection goes, and the pool has no one left to wait for.
    });
    let status = pool.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
}

/// SRI's parser reads our Reconnect (empty host, port 0); a client that does not follow it is
/// closed once the drain is over, and the pool's stop does not wait longer than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_reconnect_is_closed_after_the_drain() {
    let pool = TestPool::start(RARE_BLOCKS, 10).await;
    let mut miner = Miner::ready(pool.addr, &pool.key, 0).await.expect("set up");
    miner.open(true, "ignores.rig").await.expect("channel");
    let started = Instant::now();
    let stopping = tokio::spawn(async move { pool.stop().await });
    let reconnect = loop {
        match miner.recv().await.expect("a message before the close") {
            AnyMessageOwned::Common(CommonMessagesOwned::Reconnect(r)) => break r,
            _ => continue,
        }
    };
    assert_eq!(reconnect.new_port, 0);
    assert!(reconnect.new_host.as_bytes().is_empty(), "{reconnect:?}");
    // Not followed: the pool closes it when the drain is over.
    expect_closed(
        miner.conn.stream(),
        blvm_stratum_v2::shell::DEFAULT_DRAIN_GRACE + Duration::from_secs(3),
        "after the drain",
    )
    .await;
    assert!(
        started.elapsed()
            >= blvm_stratum_v2::shell::DEFAULT_DRAIN_GRACE - Duration::from_millis(500),
        "kept for the drain"
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the pool stopped after the drain")
        .unwrap();
}

/// The load generator with `reconnect` follows a drained pool's Reconnect and comes back when
/// it restarts on the same address, each connection under its own channel name; every share
/// it saw acknowledged, before the restart and after, is in the ledger.
#[test]
fn the_load_generator_follows_a_restart_and_every_acknowledged_share_is_kept() {
    use std::collections::HashMap;

    use blvm_stratum_v2::loadgen::{self, LoadgenOptions};

    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        bits: CHAIN_BITS,
        synthetic_transactions: 2,
        block_interval_secs: 0,
    }));
    let first = pool_on(dir.path(), "127.0.0.1:0", node.clone());
    let addr = runtime.block_on(first.start()).expect("started");
    let key = first.authority_public_key().to_owned();
    let (url, authority_pubkey) = (addr.to_string(), key);
    let load = std::thread::spawn(move || {
        loadgen::run(LoadgenOptions {
            url,
            authority_pubkey,
            connections: 20,
            rate: 0.0,
            window: 2,
            duration: Duration::from_secs(6),
            hold: Duration::from_millis(100),
            grace: Duration::from_secs(2),
            setup_timeout: Duration::from_secs(30),
            threads: 1,
            user: "restart".into(),
            reconnect: true,
            ..LoadgenOptions::default()
        })
        .expect("load generator ran")
    });
    runtime.block_on(async {
        until_accepted(&first, 200).await;
        tokio::time::timeout(Duration::from_secs(20), first.stop())
            .await
            .expect("stopped in time")
            .expect("stopped");
    });
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let second = pool_on(dir.path(), &addr.to_string(), node);
    runtime.block_on(async {
        second.start().await.expect("restarted");
        until_accepted(&second, 200).await;
    });
    let report = load.join().expect("load generator");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), second.stop())
            .await
            .expect("stopped in time")
            .expect("stopped");
    });
    assert!(report.reconnects >= 20, "{}", report.to_text());
    // Refused reconnects while no pool listened, and shares gone stale on the blocks found.
    assert!(
        report
            .errors
            .keys()
            .all(|k| k.starts_with("reconnect failed") || k == "share rejected: stale-share"),
        "{:?}",
        report.errors
    );
    let rows = pool::ledger_shares(dir.path());
    let mut by_worker: HashMap<String, u64> = HashMap::new();
    for s in &rows {
        *by_worker.entry(s.record.worker.to_string()).or_default() += 1;
    }
    assert_eq!(report.acked_by_channel.len(), 20);
    for (identity, acked) in &report.acked_by_channel {
        let worker = identity.split_once('.').map_or("", |(_, w)| w);
        let stored = by_worker.get(worker).copied().unwrap_or(0);
        assert!(*acked > 0, "{identity} mined");
        assert!(
            stored >= *acked,
            "{identity}: {acked} acknowledged, {stored} in the ledger"
        );
    }
}

/// An SV1 miner (SRI's `sv1_api`) of a stopping pool gets `client.reconnect` (no parameters:
/// this address again), and its connection is kept until it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_pool_sends_its_sv1_miners_client_reconnect() {
    let pool = TestPool::start(RARE_BLOCKS, 10).await;
    let sv1 = pool.sv1_addr.expect("the SV1 port listens");
    let mut miner = sv1_client::connect(sv1, "sv1drain.rig").await;
    miner.one_share().await;
    let stopping = tokio::spawn(async move { pool.stop().await });
    let reconnect = loop {
        let line = miner
            .line
            .next_line(Duration::from_secs(10))
            .await
            .expect("client.reconnect before the close");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        if v["method"] == "client.reconnect" {
            break v;
        }
    };
    assert_eq!(reconnect["params"], serde_json::json!([]), "{reconnect}");
    assert!(reconnect["id"].is_null(), "a notification: {reconnect}");
    drop(miner);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the pool stopped once the miner left")
        .unwrap();
}

/// `POST path` to the HTTP server at `addr` (HTTP/1.1, the connection closed after it), with a
/// bearer `token` if any: the answer's status.
fn post(addr: &str, path: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("HTTP server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"))
}

/// The admin API's drain (issue 18): refused without the token (401), with the wrong one
/// (401), and with it (202) the pool sends its miner Reconnect and exits 0, as at SIGTERM.
#[test]
fn the_admin_api_drains_the_pool_with_its_token_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let token = "drain-token-0123456789abcdef";
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut pool = PoolProcess::start(
        dir.path(),
        &[
            "--listen-addr",
            "127.0.0.1:0",
            "--http-listen-addr",
            "127.0.0.1:0",
            "--http-admin-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let http = loop {
        let line = pool.next_line(Duration::from_secs(30), "the HTTP server's address");
        if let Some(rest) = line.strip_prefix("HTTP dashboard on http://") {
            break rest.split('/').next().unwrap().to_owned();
        }
    };
    let drain = blvm_stratum_v2::http::DRAIN_PATH;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let addr: std::net::SocketAddr = pool.addr.parse().unwrap();
        let mut miner = Miner::ready(addr, &pool.key, 0).await.expect("set up");
        miner.open(true, "admin.rig").await.expect("channel");
        assert_eq!(post(&http, drain, None), 401);
        assert_eq!(
            post(&http, drain, Some("drain-token-0123456789abcdeX")),
            401
        );
        // Nothing was drained.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!pool.log().contains("drain asked"), "{}", pool.log());
        assert_eq!(post(&http, drain, Some(token)), 202);
        let reconnect = reconnect_of(&mut miner, &pool).await;
        assert_eq!(reconnect.new_port, 0);
    });
    let status = pool.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}\n{}", pool.log());
    assert!(pool.log().contains("drain asked through the admin API"));
}
