//! The JSON-RPC backend against a real node: blvm-node in regtest mode, run by
//! tools/regtest-node as a child process on 127.0.0.1 (built here with cargo the first time:
//! several minutes; cargo skips it when fresh).
//!
//! (a) Our pool on the RPC backend and our CPU miner mine blocks the node accepts; a block
//!     mined elsewhere (generatetoaddress) reaches the pool's work within a second.
//! (b) A solved block with a broken merkle root is refused by the node (`BlockRejected`), the
//!     same block done right is accepted (BIP34 height 1 as OP_1, user/password auth).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::block::Header;
use bitcoin::hashes::Hash;
use bitcoin::script::Builder;
use bitcoin::{
    Amount, Block, BlockHash, OutPoint, ScriptBuf, Sequence, Target, Transaction, TxIn,
    TxMerkleNode, TxOut, Witness, absolute, transaction,
};
use blvm_stratum_v2::client::{ChannelKind, MinerOptions, StopReason, run_miner};
use blvm_stratum_v2::config::{Backend, PoolConfig, PoolOptions};
use blvm_stratum_v2::node::rpc::{RpcAuth, RpcClient, RpcConfig, RpcNode};
use blvm_stratum_v2::node::{BlockTemplate, NodeApi, NodeError};
use blvm_stratum_v2::server::StratumV2Server;
use serde_json::{Value, json};

/// Bound on building tools/regtest-node (cold: several minutes on a busy machine).
const BUILD_TIMEOUT: Duration = Duration::from_secs(40 * 60);
/// Bound on the node answering RPC after its start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// BIP 173's regtest P2WPKH test vector.
const REGTEST_ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

/// Builds tools/regtest-node once per test binary; returns its executable.
fn regtest_node_binary() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/regtest-node");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = Instant::now();
    let mut child = Command::new(cargo)
        .args(["build", "--release", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        // Its own target dir, not ours: its build must not wait for our build's lock.
        .env_remove("CARGO_TARGET_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run cargo build for tools/regtest-node");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for cargo") {
            break s;
        }
        if started.elapsed() > BUILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("building tools/regtest-node took more than {BUILD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "building tools/regtest-node failed");
    eprintln!(
        "tools/regtest-node built (or fresh) in {:?}",
        started.elapsed()
    );
    let bin = dir.join("target/release/regtest-node");
    assert!(bin.exists(), "{} missing", bin.display());
    *built = Some(bin.clone());
    bin
}

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A blvm-node regtest node in a child process, killed on drop.
struct RegtestNode {
    child: Child,
    rpc_port: u16,
    datadir: tempfile::TempDir,
    auth: RpcAuth,
}

impl RegtestNode {
    /// Starts a node with cookie auth (`user_password: None`) or user/password auth, and
    /// waits until its RPC answers.
    async fn start(user_password: Option<(&str, &str)>) -> RegtestNode {
        let bin = tokio::task::spawn_blocking(regtest_node_binary)
            .await
            .expect("build task");
        let datadir = tempfile::tempdir().expect("temp dir");
        let rpc_port = free_port();
        let p2p_port = free_port();
        let (auth_arg, auth) = match user_password {
            None => (
                "cookie".to_owned(),
                RpcAuth::CookieFile(datadir.path().join(".cookie")),
            ),
            Some((u, p)) => (
                format!("{u}:{p}"),
                RpcAuth::UserPassword {
                    user: u.into(),
                    password: p.into(),
                },
            ),
        };
        let log = std::fs::File::create(datadir.path().join("node.log")).expect("log file");
        let child = Command::new(bin)
            .args(["--rpc-port", &rpc_port.to_string()])
            .args(["--p2p-port", &p2p_port.to_string()])
            .arg("--datadir")
            .arg(datadir.path())
            .args(["--auth", &auth_arg])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start regtest-node");
        let node = RegtestNode {
            child,
            rpc_port,
            datadir,
            auth,
        };
        let started = Instant::now();
        let client = RpcClient::new(node.rpc_config());
        // Ready when it gives a template: blvm-node answers RPC (getblockcount: 0) a moment
        // before it has anchored its chain at genesis.
        let mut seen = Vec::new();
        loop {
            match client
                .call("getblocktemplate", json!([{"rules": ["segwit"]}]))
                .await
            {
                Ok(_) => break,
                Err(e) if started.elapsed() > START_TIMEOUT => {
                    panic!("node RPC not up in {START_TIMEOUT:?}: {e}\n{}", node.log())
                }
                Err(e) => {
                    let e = e.to_string();
                    if !e.contains("connect") && !seen.contains(&e) {
                        eprintln!("node starting: {e}");
                        seen.push(e);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        eprintln!(
            "blvm-node RPC serves templates {:?} after start",
            started.elapsed()
        );
        node
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    fn rpc_config(&self) -> RpcConfig {
        RpcConfig::new(&self.url(), self.auth.clone()).expect("valid url")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.datadir.path().join("node.log")).unwrap_or_default()
    }
}

impl Drop for RegtestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(client: &RpcClient, method: &str, params: Value) -> Value {
    client
        .call(method, params.clone())
        .await
        .unwrap_or_else(|e| panic!("{method} {params}: {e}"))
}

async fn block_count(client: &RpcClient) -> u64 {
    call(client, "getblockcount", json!([]))
        .await
        .as_u64()
        .expect("getblockcount is a number")
}

async fn best_hash(client: &RpcClient) -> String {
    call(client, "getbestblockhash", json!([]))
        .await
        .as_str()
        .expect("getbestblockhash is a string")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_on_rpc_backend_mines_blocks_the_node_accepts() {
    tokio::time::timeout(Duration::from_secs(45 * 60), mine_through_the_pool())
        .await
        .expect("test finished in time");
}

async fn mine_through_the_pool() {
    let node = RegtestNode::start(None).await;
    let RpcAuth::CookieFile(cookie) = node.auth.clone() else {
        unreachable!("started with cookie auth")
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // The pool's own configuration path: backend = "rpc" with a cookie file.
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        min_difficulty: Some(1e-6),
        max_difficulty: Some(1e-6),
        backend: Some("rpc".into()),
        rpc_url: Some(node.url()),
        rpc_cookie_file: Some(cookie),
        rpc_poll_interval_ms: Some(200),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&opts, "test").expect("valid test config");
    let Backend::Rpc(rpc) = config.backend.clone() else {
        panic!("not the rpc backend: {:?}", config.backend)
    };
    let backend = Arc::new(RpcNode::new(rpc));
    let api: Arc<dyn NodeApi> = backend.clone();
    let server = StratumV2Server::new(config, api).expect("server");
    let addr = server.start().await.expect("start");
    let client = backend.client();
    assert_eq!(block_count(client).await, 0, "a fresh regtest chain");

    let opts = MinerOptions {
        url: addr.to_string(),
        authority_pubkey: server.authority_public_key().to_owned(),
        threads: 1,
        channel: ChannelKind::Extended,
        user: "node-rpc".into(),
        nominal_hash_rate: 0.0,
        max_shares: Some(12),
        duration: Some(Duration::from_secs(90)),
    };
    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(150),
        run_miner(opts, std::future::pending::<()>()),
    )
    .await
    .expect("miner finished in time")
    .expect("miner ran");
    eprintln!("miner: {report:?} in {:?}", started.elapsed());
    assert_eq!(report.stop, StopReason::MaxShares, "{report:?}");

    // Let the submitter finish, then compare the pool's blocks with the node's chain.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = server.get_pool_stats().await;
    eprintln!("pool: {stats:?}");
    let submitted: Vec<String> = std::fs::read_dir(dir.path().join("blocks/submitted"))
        .expect("blocks saved")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".hex"))
                .map(str::to_owned)
        })
        .collect();
    let height = block_count(client).await;
    let best = best_hash(client).await;
    eprintln!(
        "node: height {height}, best {best}; pool submitted {} blocks",
        submitted.len()
    );
    assert!(height >= 3, "chain height {height}\n{}", node.log());
    assert_eq!(stats.blocks_accepted, height, "{stats:?}");
    assert_eq!(submitted.len() as u64, height);
    assert!(
        submitted.contains(&best),
        "best {best} not one of {submitted:?}"
    );
    assert_eq!(stats.blocks_rejected, 0, "{stats:?}");
    assert!(
        report.prev_hashes_received >= height,
        "each block's new tip reached the miner: {report:?}"
    );

    // A block mined elsewhere: its tip reaches the pool's work within a second.
    let before = server.current_work().expect("work").prev_hash;
    let mined_at = Instant::now();
    let mined = call(client, "generatetoaddress", json!([1, REGTEST_ADDRESS])).await;
    let new_tip: BlockHash = mined[0]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("generatetoaddress gave {mined}"));
    assert_ne!(new_tip, before);
    loop {
        let work = server.current_work().expect("work");
        if work.prev_hash == new_tip {
            assert_eq!(u64::from(work.height), height + 2);
            break;
        }
        assert!(
            mined_at.elapsed() < Duration::from_secs(1),
            "new tip {new_tip} not in the pool's work after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "external block to new pool work: {:?} (poll interval 200 ms)",
        mined_at.elapsed()
    );
    server.stop().await.expect("clean stop");
}

/// A coinbase-only block on `t` paying `value`, with `height_push` as BIP34 height, solved.
fn solved_block(
    t: &BlockTemplate,
    height_push: i64,
    value: Amount,
    mangle: impl Fn(&mut Header),
) -> Block {
    let coinbase = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: Builder::new()
                .push_int(height_push)
                .push_slice(b"/node_rpc test/")
                .into_script(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value,
            script_pubkey: ScriptBuf::new_op_return([]),
        }],
    };
    assert!(t.transactions.is_empty(), "empty mempool expected");
    let mut block = Block {
        header: Header {
            version: t.version,
            prev_blockhash: t.prev_hash,
            merkle_root: TxMerkleNode::all_zeros(),
            time: t.cur_time.max(t.min_time),
            bits: t.bits,
            nonce: 0,
        },
        txdata: vec![coinbase],
    };
    block.header.merkle_root = block.compute_merkle_root().expect("one transaction");
    mangle(&mut block.header);
    // Regtest's target: about every other nonce solves it.
    let target = Target::from_compact(t.bits);
    while block.header.validate_pow(target).is_err() {
        block.header.nonce = block
            .header
            .nonce
            .checked_add(1)
            .expect("a nonce solves it");
    }
    block
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_refuses_a_block_with_a_broken_merkle_root() {
    tokio::time::timeout(Duration::from_secs(45 * 60), broken_merkle_root())
        .await
        .expect("test finished in time");
}

async fn broken_merkle_root() {
    let node = RegtestNode::start(Some(("pool", "s3cret"))).await;
    let backend = RpcNode::new(node.rpc_config());
    let client = backend.client();
    let t = backend.get_block_template().await.expect("template");
    assert_eq!(t.height, 1);
    let value = t.coinbase_value;

    let mut refused = Vec::new();
    // The merkle root altered after the fact, the header solved again.
    let broken = solved_block(&t, 1, value, |h| {
        let mut root = h.merkle_root.to_byte_array();
        root[0] ^= 1;
        h.merkle_root = TxMerkleNode::from_byte_array(root);
    });
    assert!(!broken.check_merkle_root());
    refused.push(("bad merkle root", broken));
    // Paying one satoshi more than the template allows.
    refused.push((
        "overpaying coinbase",
        solved_block(&t, 1, value + Amount::from_sat(1), |_| {}),
    ));
    // BIP34: height 2 claimed at height 1.
    refused.push(("bad BIP34 height", solved_block(&t, 2, value, |_| {})));
    for (what, block) in refused {
        match backend.submit_block(block).await {
            Err(NodeError::BlockRejected(reason)) => eprintln!("{what}: refused: {reason}"),
            other => panic!("{what}: {other:?}\n{}", node.log()),
        }
    }
    assert_eq!(
        block_count(client).await,
        0,
        "no refused block was connected"
    );

    // The same block done right: accepted (height 1 pushed as OP_1, as Bitcoin Core does).
    let good = solved_block(&t, 1, value, |_| {});
    assert_eq!(good.txdata[0].input[0].script_sig.as_bytes()[0], 0x51);
    let hash = good.block_hash();
    backend
        .submit_block(good.clone())
        .await
        .unwrap_or_else(|e| panic!("valid block refused: {e}\n{}", node.log()));
    assert_eq!(block_count(client).await, 1);
    assert_eq!(best_hash(client).await, hash.to_string());
    // Resubmitting it (a lost answer retried) counts as accepted, whatever the node says.
    let raw = client
        .call(
            "submitblock",
            json!([bitcoin::consensus::encode::serialize_hex(&good)]),
        )
        .await;
    eprintln!("resubmission, raw answer: {raw:?}");
    assert_eq!(backend.submit_block(good).await, Ok(()));
    // A valid sibling of the tip (a stale block): whatever the node says, the tip stays.
    let sibling = solved_block(&t, 1, value - Amount::from_sat(1), |_| {});
    eprintln!(
        "stale sibling block: {:?}",
        backend.submit_block(sibling).await
    );
    assert_eq!(best_hash(client).await, hash.to_string());
    assert_eq!(block_count(client).await, 1);
    // Wrong credentials are a transport failure, not a rejection.
    let bad = RpcNode::new(
        RpcConfig::new(
            &node.url(),
            RpcAuth::UserPassword {
                user: "pool".into(),
                password: "wrong".into(),
            },
        )
        .expect("url"),
    );
    match bad.get_block_template().await {
        Err(NodeError::Unavailable(m)) => eprintln!("wrong password: {m}"),
        other => panic!("wrong password: {other:?}"),
    }
}
