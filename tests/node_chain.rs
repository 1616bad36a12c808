//! No silent loss of a block reward (issue #13, item 4), on the JSON-RPC backend against a fake
//! node that says which chain it is on in `getblockchaininfo`: off regtest, a pool with no
//! `coinbase_reward_script` does not start (a typed error that says what to set), nor one whose
//! reward address is of another network (the error names both networks); on regtest it starts
//! without one, and with an address of the node's network it starts anywhere. The binary
//! itself stops at start with the message.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::Network;
use blvm_stratum_v2::config::{Backend, PoolConfig, PoolOptions};
use blvm_stratum_v2::node::NodeChain;
use blvm_stratum_v2::node::rpc::RpcNode;
use blvm_stratum_v2::server::{RewardCheckError, StratumV2Error, StratumV2Server};

#[path = "common/fake_rpc_node.rs"]
mod fake_rpc_node;
use fake_rpc_node::FakeNode;

const MAIN_ADDRESS: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
const TEST_ADDRESS: &str = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx";

/// A fake JSON-RPC node on 127.0.0.1 whose `getblockchaininfo` says `chain`; it serves a
/// template on a fixed tip. Returns its URL.
async fn fake_node(chain: &'static str) -> String {
    FakeNode {
        chain,
        bits: "1d00ffff",
        coinbase_value: 312_500_000,
    }
    .serve(Arc::default())
    .await
}

/// Starts a pool on a fake node on `chain` with `reward` as its coinbase_reward_script; the
/// start's outcome (the pool is stopped again if it started).
async fn start_on(chain: &'static str, reward: Option<&str>) -> Result<(), StratumV2Error> {
    let url = fake_node(chain).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        backend: Some("rpc".into()),
        rpc_url: Some(url),
        coinbase_reward_script: reward.map(str::to_owned),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&opts, "test").expect("valid config");
    let Backend::Rpc(rpc) = config.backend.clone() else {
        panic!("not the rpc backend: {:?}", config.backend)
    };
    let server = StratumV2Server::new(config, Arc::new(RpcNode::new(rpc))).expect("server");
    let started = tokio::time::timeout(Duration::from_secs(20), server.start())
        .await
        .expect("the start ends in time");
    if started.is_ok() {
        assert!(
            server.current_work().is_some(),
            "work on the node's template"
        );
        server.stop().await.expect("stops");
    }
    started.map(|_| ())
}

#[tokio::test]
async fn off_regtest_without_a_reward_script_the_start_fails_and_says_what_to_set() {
    let e = start_on("main", None).await.expect_err("must not start");
    let StratumV2Error::RewardDestination(RewardCheckError::NoRewardScript { chain }) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*chain, NodeChain::Known(Network::Bitcoin));
    let text = e.to_string();
    assert!(
        text.contains("the node is on main") && text.contains("set coinbase_reward_script"),
        "{text}"
    );
    for chain in ["test", "testnet4", "signet"] {
        assert!(
            matches!(
                start_on(chain, None).await,
                Err(StratumV2Error::RewardDestination(
                    RewardCheckError::NoRewardScript { .. }
                ))
            ),
            "{chain}"
        );
    }
}

#[tokio::test]
async fn on_regtest_the_pool_starts_without_a_reward_script() {
    start_on("regtest", None).await.expect("starts on regtest");
}

#[tokio::test]
async fn an_address_of_another_network_fails_naming_both() {
    let reward = format!("addr({TEST_ADDRESS})");
    let e = start_on("main", Some(&reward))
        .await
        .expect_err("must not start");
    assert!(
        matches!(
            &e,
            StratumV2Error::RewardDestination(RewardCheckError::AddressOfAnotherNetwork { .. })
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("is for test, testnet4 or signet") && text.contains("the node is on main"),
        "{text}"
    );
    let reward = format!("addr({MAIN_ADDRESS})");
    let e = start_on("regtest", Some(&reward)).await.unwrap_err();
    assert!(
        e.to_string().contains("is for main") && e.to_string().contains("node is on regtest"),
        "{e}"
    );
}

#[tokio::test]
async fn a_reward_script_for_the_nodes_network_starts_anywhere() {
    start_on("main", Some(&format!("addr({MAIN_ADDRESS})")))
        .await
        .expect("a main address on main");
    start_on("signet", Some(&format!("addr({TEST_ADDRESS})")))
        .await
        .expect("a test address on signet");
    start_on("main", Some("raw(6a)"))
        .await
        .expect("a raw script names no network");
}

/// The operator's view: the binary, pointed at a main node without a reward script, exits
/// with a failure and says what to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_to_start_and_says_why() {
    let url = fake_node("main").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_blvm-stratum-v2"))
        .args([
            "--listen-addr",
            "127.0.0.1:0",
            "--backend",
            "rpc",
            "--rpc-url",
        ])
        .arg(&url)
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary runs");
    // Bounded: killed if it has not stopped by itself in 30 s (then the asserts fail).
    let waited = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("output")
    });
    let out = waited.await.expect("waited for the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the node is on main") && stderr.contains("coinbase_reward_script"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "it never listened"
    );
}

/// Until the node has answered (its chain, a first template) the pool's port refuses
/// connections: it is bound (a port another program listens on fails the start) but not
/// listening, so miners and a
/// load balancer's health check are not accepted by a pool that cannot serve them. Before,
/// the kernel completed their connects into a backlog nobody read.
#[tokio::test]
async fn the_port_refuses_connections_until_the_node_has_answered() {
    // A node that is not there: nothing listens on this port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = PoolOptions {
        listen_addr: Some(format!("127.0.0.1:{port}")),
        data_dir: Some(dir.path().to_path_buf()),
        backend: Some("rpc".into()),
        rpc_url: Some(dead_url),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&opts, "test").expect("valid config");
    let Backend::Rpc(rpc) = config.backend.clone() else {
        panic!("not the rpc backend")
    };
    let server = Arc::new(StratumV2Server::new(config, Arc::new(RpcNode::new(rpc))).unwrap());
    let starting = tokio::spawn({
        let server = server.clone();
        async move { server.start().await }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!starting.is_finished(), "still waiting for the node");
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(
        connect.is_err(),
        "a connection was accepted before the node answered"
    );
    starting.abort();
}
