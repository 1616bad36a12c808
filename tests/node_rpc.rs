//! The JSON-RPC backend against a real node: blvm-node in regtest mode, run by
//! tools/regtest-node as a child process on 127.0.0.1 (built here with cargo the first time:
//! several minutes; cargo skips it when fresh).
//!
//! (a) Our pool on the RPC backend and our CPU miner mine blocks the node accepts; a block
//!     mined elsewhere (generatetoaddress) reaches the pool's work within a second.
//! (b) A solved block with a broken merkle root is refused by the node (`BlockRejected`), the
//!     same block done right is accepted (BIP34 height 1 as OP_1, user/password auth).
//! (c) Blocks whose coinbase pays its own payee (`sri/solo`, `sri/donate`) or the PPLNS
//!     window's users (`coinbase_payouts = true`) are accepted by the node.

#[path = "common/regtest_node.rs"]
mod regtest_node;
#[path = "common/sv1_client.rs"]
mod sv1_client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash;
use bitcoin::{Amount, BlockHash, TxMerkleNode};
use blvm_stratum_v2::client::{ChannelKind, MinerOptions, MinerReport, StopReason, run_miner};
use blvm_stratum_v2::config::{Backend, PoolConfig, PoolOptions};
use blvm_stratum_v2::node::rpc::{RpcAuth, RpcConfig, RpcNode};
use blvm_stratum_v2::node::{NodeApi, NodeError};
use blvm_stratum_v2::server::StratumV2Server;
use regtest_node::{REGTEST_ADDRESS, RegtestNode, best_hash, block_count, call, solved_block};
use serde_json::json;

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
        ..MinerOptions::default()
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

/// A pool started on `node` over JSON-RPC, its data in `dir`, every share at difficulty 1e-6
/// (at regtest's difficulty about every other share is a block), the node polled every 200 ms;
/// `tweak` sets the rest. Returns the pool, where it listens and its backend (for the node's
/// RPC client).
async fn pool_on_node(
    node: &RegtestNode,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut PoolOptions),
) -> (StratumV2Server, std::net::SocketAddr, Arc<RpcNode>) {
    let mut options = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        min_difficulty: Some(1e-6),
        max_difficulty: Some(1e-6),
        rpc_poll_interval_ms: Some(200),
        ..PoolOptions::default()
    };
    tweak(&mut options);
    let config = PoolConfig::resolve(&options, "test").expect("valid test config");
    let backend = Arc::new(RpcNode::new(node.rpc_config()));
    let api: Arc<dyn NodeApi> = backend.clone();
    let server = StratumV2Server::new(config, api).expect("server");
    let addr = server.start().await.expect("start");
    (server, addr, backend)
}

/// Our CPU miner on `server` (at `addr`) as `user`, on an extended channel, until `shares` are
/// accepted; it must get there.
async fn mine_shares(
    server: &StratumV2Server,
    addr: std::net::SocketAddr,
    user: &str,
    shares: u64,
) -> MinerReport {
    let opts = MinerOptions {
        url: addr.to_string(),
        authority_pubkey: server.authority_public_key().to_owned(),
        threads: 1,
        channel: ChannelKind::Extended,
        user: user.to_owned(),
        nominal_hash_rate: 0.0,
        max_shares: Some(shares),
        duration: Some(Duration::from_secs(90)),
        ..MinerOptions::default()
    };
    let report = tokio::time::timeout(
        Duration::from_secs(150),
        run_miner(opts, std::future::pending::<()>()),
    )
    .await
    .expect("miner finished in time")
    .expect("miner ran");
    assert_eq!(report.stop, StopReason::MaxShares, "{user}: {report:?}");
    report
}

/// Solo and donate channels (`sri/solo/ADDRESS/w`, `sri/donate/10/ADDRESS/w`) on the real
/// node: each block is built from the channel's own coinbase, the node accepts it (its chain
/// grows by exactly the pool's blocks, the best block is one of them), and its coinbase pays
/// the address the whole reward, or 90% with 10% to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solo_and_donate_blocks_are_accepted_by_the_node() {
    tokio::time::timeout(Duration::from_secs(45 * 60), solo_and_donate_blocks())
        .await
        .expect("test finished in time");
}

async fn solo_and_donate_blocks() {
    use bitcoin::consensus::encode::deserialize_hex;
    use bitcoin::{Address, Block, Network};

    let node = RegtestNode::start(None).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, addr, backend) = pool_on_node(&node, dir.path(), |_| {}).await;
    let client = backend.client();
    let solo: Address = REGTEST_ADDRESS
        .parse::<Address<_>>()
        .unwrap()
        .require_network(Network::Regtest)
        .unwrap();
    let donor = Address::p2wsh(&bitcoin::ScriptBuf::new(), Network::Regtest);
    for (user, address) in [
        (format!("sri/solo/{solo}/w1"), &solo),
        (format!("sri/donate/10/{donor}/w2"), &donor),
    ] {
        let before = block_count(client).await;
        mine_shares(&server, addr, &user, 6).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let height = block_count(client).await;
        assert!(height > before, "{user}: no block accepted\n{}", node.log());
        // Every block the node added since is the pool's, from this channel's coinbase.
        let best = best_hash(client).await;
        let mut seen_best = false;
        for entry in std::fs::read_dir(dir.path().join("blocks/submitted")).unwrap() {
            let path = entry.unwrap().path();
            let block: Block = deserialize_hex(std::fs::read_to_string(&path).unwrap().trim())
                .expect("a block file is a block");
            let coinbase = &block.txdata[0];
            if !coinbase
                .output
                .iter()
                .any(|o| o.script_pubkey == address.script_pubkey())
            {
                continue; // the other channel's
            }
            seen_best |= block.block_hash().to_string() == best;
            assert!(block.check_merkle_root() && block.check_witness_commitment());
            let total: u64 = coinbase.output.iter().map(|o| o.value.to_sat()).sum();
            let to_address: u64 = coinbase
                .output
                .iter()
                .filter(|o| o.script_pubkey == address.script_pubkey())
                .map(|o| o.value.to_sat())
                .sum();
            if address == &solo {
                assert_eq!(to_address, total, "solo: the whole reward");
            } else {
                assert_eq!(to_address, total - total * 10 / 100, "donate 10%");
            }
        }
        assert!(
            seen_best,
            "{user}: the node's best block {best} is not this channel's"
        );
    }
    let stats = server.get_pool_stats().await;
    assert_eq!(stats.blocks_rejected, 0, "{stats:?}");
    assert_eq!(
        stats.blocks_accepted,
        block_count(client).await,
        "{stats:?}"
    );
    server.stop().await.expect("clean stop");
}

/// Payouts in the coinbase (`coinbase_payouts = true`) on the real node: miners of two
/// address users and of an account without an address take turns (every share is a block at
/// regtest's difficulty; a window of 10,000 x the network difficulty holds about five shares
/// of 1e-6), so coinbases pay one or two users and the pool's script. The node accepts every
/// block (its chain grows by exactly the pool's blocks), and each accepted block mined on work
/// that paid the window has a coinbase paying exactly what its ledger record says, settled as
/// `coinbase-pplns`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_paying_the_window_in_the_coinbase_are_accepted_by_the_node() {
    tokio::time::timeout(
        Duration::from_secs(45 * 60),
        window_in_the_coinbase_blocks(),
    )
    .await
    .expect("test finished in time");
}

async fn window_in_the_coinbase_blocks() {
    use bitcoin::consensus::encode::deserialize_hex;
    use bitcoin::{Address, Block, Network, ScriptBuf};
    use blvm_stratum_v2::ledger::{BlockStatus, Ledger, SqliteLedger};

    let node = RegtestNode::start(None).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, addr, backend) = pool_on_node(&node, dir.path(), |o| {
        o.template_refresh_secs = Some(1);
        o.coinbase_payouts = Some(true);
        o.pplns_window_multiple = Some(10_000.0);
    })
    .await;
    let client = backend.client();
    let before = block_count(client).await;
    let alice = Address::p2wsh(&ScriptBuf::from_bytes(vec![0x51, 1]), Network::Regtest);
    let bob: Address = REGTEST_ADDRESS
        .parse::<Address<_>>()
        .unwrap()
        .require_network(Network::Regtest)
        .unwrap();
    for (user, shares) in [
        (format!("{alice}.w1"), 4),
        (format!("{bob}.w2"), 4),
        ("dave.w3".to_owned(), 3),
        (format!("{alice}.w1"), 3),
    ] {
        mine_shares(&server, addr, &user, shares).await;
        // The next miner's work pays a window holding this one's shares.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    let height = block_count(client).await;
    assert!(height > before, "no block accepted\n{}", node.log());
    let stats = server.get_pool_stats().await;
    assert_eq!(stats.blocks_rejected, 0, "{stats:?}");
    assert_eq!(stats.blocks_accepted, height - before, "{stats:?}");
    server.stop().await.expect("clean stop");

    let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    let scripts = |user: &str| -> ScriptBuf {
        user.parse::<Address<_>>()
            .unwrap()
            .assume_checked()
            .script_pubkey()
    };
    let mut in_coinbase = 0;
    let mut most_users = 0;
    for stored in ledger.blocks(1000).unwrap() {
        assert_eq!(stored.status, BlockStatus::Accepted, "{stored:?}");
        let Some(paid) = &stored.block.coinbase_payouts else {
            continue;
        };
        in_coinbase += 1;
        let hash = stored.block.hash;
        let c = ledger.payouts(hash).unwrap().expect("settled");
        assert_eq!(c.scheme, "coinbase-pplns");
        assert!(paid.payouts.iter().all(|p| p.user != "dave"), "{paid:?}");
        let file = dir.path().join(format!("blocks/submitted/{hash}.hex"));
        let block: Block = deserialize_hex(std::fs::read_to_string(&file).unwrap().trim())
            .expect("a block file is a block");
        assert!(block.check_merkle_root() && block.check_witness_commitment());
        let outputs = &block.txdata[0].output;
        for (o, p) in outputs.iter().zip(&paid.payouts) {
            assert_eq!(o.value.to_sat(), p.amount_sat, "{hash}");
            assert_eq!(o.script_pubkey, scripts(&p.user), "{hash}");
        }
        if paid.pool_sat > 0 {
            assert_eq!(outputs[paid.payouts.len()].value.to_sat(), paid.pool_sat);
        }
        let total: u64 = outputs.iter().map(|o| o.value.to_sat()).sum();
        assert_eq!(total, stored.block.reward_sat);
        most_users = most_users.max(paid.payouts.len());
    }
    assert!(in_coinbase >= 3, "{in_coinbase} blocks paid the window");
    assert_eq!(most_users, 2, "a coinbase paid both address users");
}

/// A Stratum V1 miner built on SRI's `sv1_api` (issue 17) on the real node: its blocks, which
/// the pool submits before answering `true`, are accepted (the node's chain grows and its best
/// block is one the pool submitted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sv1_blocks_are_accepted_by_the_node() {
    tokio::time::timeout(Duration::from_secs(45 * 60), sv1_blocks())
        .await
        .expect("test finished in time");
}

async fn sv1_blocks() {
    let node = RegtestNode::start(None).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, _, backend) = pool_on_node(&node, dir.path(), |_| {}).await;
    let sv1 = server.sv1_local_addr().await.expect("the SV1 port listens");
    let client = backend.client();
    let before = block_count(client).await;
    let mut miner = sv1_client::connect(sv1, &format!("{REGTEST_ADDRESS}.sv1rig")).await;
    tokio::time::timeout(Duration::from_secs(150), miner.mine(6))
        .await
        .expect("six SV1 shares accepted in time");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = server.get_pool_stats().await;
    let height = block_count(client).await;
    assert!(
        stats.blocks_accepted >= 1 && height > before,
        "no SV1 block accepted ({stats:?})\n{}",
        node.log()
    );
    let best = best_hash(client).await;
    let submitted: Vec<String> = std::fs::read_dir(dir.path().join("blocks/submitted"))
        .expect("submitted blocks")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        submitted.iter().any(|name| name.starts_with(&best)),
        "the node's best block {best} is not one the pool submitted: {submitted:?}"
    );
    drop(miner);
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("stopped in time")
        .expect("stopped");
}

/// Coinbase maturity and reorganisations on the real node (issue 15): the pool's blocks are
/// settled at once but immature; one of them taken out of the best chain (`invalidateblock`,
/// then other blocks on its parent: a reorganisation) becomes `orphaned` and its payouts leave
/// every balance; 100 blocks later the others are `mature` and nothing is immature any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorganised_blocks_are_orphaned_and_deep_ones_mature() {
    tokio::time::timeout(Duration::from_secs(45 * 60), maturity_and_reorg())
        .await
        .expect("test finished in time");
}

async fn maturity_and_reorg() {
    use blvm_stratum_v2::ledger::{BlockStatus, Ledger, SqliteLedger, StoredBlock};
    use std::collections::BTreeMap;

    let node = RegtestNode::start(None).await;
    let dir = tempfile::tempdir().expect("temp dir");
    // A webhook receiver: the events' names and block hashes, in order.
    let events: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let hook = {
        let events = events.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let events = events.clone();
                async move {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    events.lock().unwrap().push((
                        v["event"].as_str().unwrap_or_default().to_owned(),
                        v["block"]["hash"].as_str().unwrap_or_default().to_owned(),
                    ));
                    axum::http::StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/hook")
    };
    let (server, addr, backend) = pool_on_node(&node, dir.path(), |o| {
        o.webhooks = Some(vec![blvm_stratum_v2::config::WebhookOptions {
            url: hook,
            events: Some(vec!["block_orphaned".into(), "block_mature".into()]),
            secret: None,
            secret_file: None,
        }]);
    })
    .await;
    let client = backend.client();
    mine_shares(&server, addr, "alice", 8).await;
    let file = dir.path().join("ledger.sqlite3");
    // The pool's ledger as it is now (read beside the running pool: SQLite in WAL mode).
    let read = || -> (Vec<StoredBlock>, BTreeMap<String, (u64, u64)>) {
        let mut ledger = SqliteLedger::open(&file).unwrap();
        let blocks = ledger.blocks(1000).unwrap();
        let balances = ledger
            .balances()
            .unwrap()
            .into_iter()
            .map(|b| (b.user, (b.earned_sat, b.immature_sat)))
            .collect();
        (blocks, balances)
    };
    let paid_to_alice = |hash: BlockHash| -> u64 {
        let mut ledger = SqliteLedger::open(&file).unwrap();
        let c = ledger.payouts(hash).unwrap().expect("settled");
        c.payouts
            .iter()
            .filter(|p| p.user == "alice")
            .map(|p| p.amount_sat)
            .sum()
    };
    // The ledger against the node's best chain: a block the node took is `accepted` (or
    // `mature`) while it is in the best chain and `orphaned` while it is not (a sibling found
    // on the same parent a moment too late is accepted by blvm-node and then orphaned; an
    // invalidation below may bring it back), and balances hold exactly the payouts of the
    // blocks in the chain. Waits (20 s at most) until the pool has caught up with the node.
    async fn agrees_with_the_node(
        client: &blvm_stratum_v2::node::rpc::RpcClient,
        read: &impl Fn() -> (Vec<StoredBlock>, BTreeMap<String, (u64, u64)>),
        paid_to_alice: &impl Fn(BlockHash) -> u64,
        want_mature: bool,
    ) -> (Vec<StoredBlock>, u64) {
        let started = Instant::now();
        loop {
            let (blocks, balances) = read();
            let tip = block_count(client).await;
            let mut in_chain = Vec::new();
            let mut agree = true;
            for b in blocks.iter().filter(|b| b.status.was_accepted()) {
                let at = b.block.height as u64;
                let there = at <= tip
                    && regtest_node::hash_at(client, at).await == b.block.hash.to_string();
                let deep = there && tip + 1 - at >= 100;
                agree &= match &b.status {
                    BlockStatus::Accepted => there && !deep,
                    BlockStatus::Mature => there && deep,
                    BlockStatus::Orphaned => !there,
                    _ => false,
                };
                if there {
                    in_chain.push(b.clone());
                }
            }
            let earned: u64 = in_chain.iter().map(|b| paid_to_alice(b.block.hash)).sum();
            let immature = if want_mature { 0 } else { earned };
            // Every block answered by the node, at least one of them in the chain.
            let settled =
                blocks.iter().all(|b| b.status != BlockStatus::Pending) && !in_chain.is_empty();
            if agree && settled && balances.get("alice") == Some(&(earned, immature)) {
                return (blocks, earned);
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the ledger does not match the node (tip {tip}): {blocks:?}, balances \
                 {balances:?}, {earned} earned in the chain"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (blocks, total) = agrees_with_the_node(client, &read, &paid_to_alice, false).await;
    let accepted: Vec<StoredBlock> = blocks
        .into_iter()
        .filter(|b| b.status == BlockStatus::Accepted)
        .collect();
    assert!(accepted.len() >= 2, "{accepted:?}");

    // A reorganisation takes the pool's newest block out of the best chain.
    let tip: BlockHash = best_hash(client).await.parse().unwrap();
    assert!(
        accepted.iter().any(|b| b.block.hash == tip),
        "the tip {tip} is the pool's, accepted: {accepted:?}"
    );
    call(client, "invalidateblock", json!([tip.to_string()])).await;
    assert_ne!(best_hash(client).await, tip.to_string(), "the tip went");
    let mined = call(client, "generatetoaddress", json!([2, REGTEST_ADDRESS])).await;
    assert_eq!(mined.as_array().map(Vec::len), Some(2), "{mined}");
    let (blocks, after) = agrees_with_the_node(client, &read, &paid_to_alice, false).await;
    let status = |blocks: &[StoredBlock], hash: BlockHash| {
        blocks
            .iter()
            .find(|b| b.block.hash == hash)
            .map(|b| b.status.clone())
    };
    assert_eq!(status(&blocks, tip), Some(BlockStatus::Orphaned));
    assert!(
        after < total,
        "the orphan's payout left alice's balance: {after} < {total}"
    );

    // 100 blocks on top: the blocks in the chain are mature, nothing is immature; the orphan
    // stays one.
    for _ in 0..10 {
        call(client, "generatetoaddress", json!([10, REGTEST_ADDRESS])).await;
    }
    let (blocks, _) = agrees_with_the_node(client, &read, &paid_to_alice, true).await;
    assert_eq!(status(&blocks, tip), Some(BlockStatus::Orphaned));
    let mature: ::std::collections::BTreeSet<String> = blocks
        .iter()
        .filter(|b| b.status == BlockStatus::Mature)
        .map(|b| b.block.hash.to_string())
        .collect();
    assert!(!mature.is_empty());
    // Each change was notified once: the orphan, then every block that matured.
    let started = Instant::now();
    loop {
        let got = events.lock().unwrap().clone();
        let notified: ::std::collections::BTreeSet<String> = got
            .iter()
            .filter(|e| e.0 == "block_mature")
            .map(|e| e.1.clone())
            .collect();
        if notified == mature {
            assert!(
                got.iter()
                    .any(|e| e.0 == "block_orphaned" && e.1 == tip.to_string()),
                "{got:?}"
            );
            assert_eq!(
                got.iter().filter(|e| e.0 == "block_mature").count(),
                mature.len(),
                "once each: {got:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "webhooks: {got:?}, mature {mature:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await.expect("clean stop");
}
