//! A Stratum V1 miner we did not write against the real server over TCP on 127.0.0.1: a client
//! built on SRI's `sv1_api` crate (its `IsClient` state machine builds and parses every
//! message) configures version rolling, subscribes, authorizes, and mines real shares with
//! rolled version bits on the embedded regtest chain, finding blocks. Beside it our SV2 CPU
//! miner mines for the same user. Checked: the blocks are on the embedded chain, every share
//! is in the SQLite ledger under the right user and worker at the difficulty it was credited
//! at, and the SV1 and SV2 workers add up under one user.

#[path = "common/sv1_client.rs"]
mod sv1_client;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blvm_stratum_v2::block::BlockTemplate;
use blvm_stratum_v2::client::{ChannelKind, MinerOptions, StopReason, run_miner};
use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::ledger::{Ledger, ShareRange, SqliteLedger, StoredShare};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode, HISTORY_HEIGHT};
use blvm_stratum_v2::node::{ChainEvent, NodeApi, NodeChain, NodeError};
use blvm_stratum_v2::server::StratumV2Server;
use sv1_api::IsClient;

const ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
const DIFFICULTY: f64 = 1e-6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sv1_api_client_mines_blocks_credited_with_an_sv2_miner_of_the_same_user() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        synthetic_transactions: 3,
        block_interval_secs: 0,
        ..ChainConfig::default()
    }));
    let opts = options(dir.path());
    let config = PoolConfig::resolve(&opts, "test").unwrap();
    assert_eq!(config.sv1_listen_addr, Some("127.0.0.1:0".parse().unwrap()));
    let api: Arc<dyn NodeApi> = node.clone();
    let server = StratumV2Server::new(config, api).unwrap();
    let sv2_addr = server.start().await.unwrap();
    let sv1_addr = server.sv1_local_addr().await.expect("an SV1 listener");
    assert_ne!(sv1_addr, sv2_addr);

    let sv1_user = format!("{ADDRESS}.sv1rig");
    // One miner after the other: two miners finding blocks on the same tip at once would race,
    // and the later block is rightly refused by the chain (not what this test is about).
    let (sv1, transcript) = tokio::time::timeout(Duration::from_secs(60), async {
        let mut conn = sv1_client::connect(sv1_addr, &sv1_user).await;
        conn.mine(12).await;
        (conn.miner, conn.line.transcript)
    })
    .await
    .expect("the SV1 miner finishes in time");
    // The session's messages (shown with --nocapture).
    for l in &transcript {
        println!("{l}");
    }
    let sv1_mined = node.height() - HISTORY_HEIGHT;
    let sv2 = tokio::time::timeout(
        Duration::from_secs(90),
        run_miner(sv2_rig(&server, sv2_addr, 6), std::future::pending::<()>()),
    )
    .await
    .expect("the SV2 miner finishes in time");
    let sv2 = sv2.expect("the SV2 miner ran");
    assert_eq!(sv1.accepted, 12);
    assert!(sv2.shares_accepted >= 6, "{sv2:?}");
    assert!(sv1_mined >= 2, "the SV1 miner's blocks: {sv1_mined}");
    // Refusals are only stale shares (its own block moved the tip under a share).
    assert!(
        sv1.refused.iter().all(|(code, _)| *code == 21),
        "{:?}",
        sv1.refused
    );
    assert!(sv1.clean_notifies >= 2, "new tips reached the SV1 miner");

    // Blocks: on the embedded chain, each one accepted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mined = node.height() - HISTORY_HEIGHT;
    let stats = server.get_pool_stats().await;
    assert!(mined >= 2, "blocks mined: {mined}");
    assert_eq!(stats.blocks_accepted, u64::from(mined), "{stats:?}");
    assert_eq!(stats.blocks_rejected, 0, "{stats:?}");
    // The ledger: every acknowledged share of both miners, one user, two workers, credited at
    // the channel difficulty.
    let shares = stop_and_read_ledger(&server, dir.path()).await;
    let by_worker = |w: &str| shares.iter().filter(|s| &*s.record.worker == w).count() as u64;
    assert_eq!(
        by_worker("sv1rig"),
        sv1.accepted,
        "every SV1 true is in the ledger"
    );
    assert!(by_worker("sv2rig") >= sv2.shares_accepted);
    assert!(shares.iter().all(|s| &*s.record.user == ADDRESS));
    assert!(
        shares
            .iter()
            .all(|s| (s.record.difficulty - DIFFICULTY).abs() < DIFFICULTY * 1e-9)
    );
    let total: f64 = shares.iter().map(|s| s.record.difficulty).sum();
    assert!((total - DIFFICULTY * shares.len() as f64).abs() < 1e-12);
    // The blocks found by the SV1 miner were found by its shares (credited, in the ledger).
    let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    let blocks = ledger.blocks(100).unwrap();
    assert_eq!(blocks.len() as u32, mined);
    assert!(blocks.iter().all(|b| b.block.user == ADDRESS));
    let sv1_blocks = blocks.iter().filter(|b| b.block.worker == "sv1rig").count();
    assert!(sv1_blocks >= 1, "the SV1 miner found blocks: {blocks:?}");
    for b in blocks.iter().filter(|b| b.block.worker == "sv1rig") {
        let finder = ledger
            .share_by_hash(b.block.hash)
            .unwrap()
            .expect("its share");
        assert_eq!(&*finder.record.worker, "sv1rig");
    }
}

/// Our CPU miner's `--sv1` mode against the pool's SV1 port: shares accepted with rolled
/// version bits, blocks found and accepted by the embedded chain, each in the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_cpu_miner_mines_blocks_over_sv1() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        synthetic_transactions: 3,
        block_interval_secs: 0,
        ..ChainConfig::default()
    }));
    let opts = options(dir.path());
    let api: Arc<dyn NodeApi> = node.clone();
    let server = StratumV2Server::new(PoolConfig::resolve(&opts, "test").unwrap(), api).unwrap();
    server.start().await.unwrap();
    let sv1_addr = server.sv1_local_addr().await.unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(90),
        run_miner(
            MinerOptions {
                url: format!("stratum+tcp://{sv1_addr}"),
                sv1: true,
                threads: 1,
                user: format!("{ADDRESS}.cpu"),
                max_shares: Some(10),
                duration: Some(Duration::from_secs(60)),
                ..MinerOptions::default()
            },
            std::future::pending::<()>(),
        ),
    )
    .await
    .expect("the miner finishes in time")
    .expect("the miner ran");
    assert_eq!(report.shares_accepted, 10, "{report:?}");
    assert!(report.prev_hashes_received >= 2, "{report:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mined = node.height() - HISTORY_HEIGHT;
    let stats = server.get_pool_stats().await;
    assert!(mined >= 2, "blocks mined: {mined}");
    assert_eq!(stats.blocks_accepted, u64::from(mined), "{stats:?}");
    assert_eq!(stats.blocks_rejected, 0, "{stats:?}");
    let shares = stop_and_read_ledger(&server, dir.path()).await;
    assert_eq!(shares.len() as u64, report.shares_accepted);
    assert!(
        shares
            .iter()
            .all(|s| &*s.record.user == ADDRESS && &*s.record.worker == "cpu")
    );
    let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    assert_eq!(ledger.blocks(100).unwrap().len() as u32, mined);
}

/// A stopping pool drains its SV1 miners: `client.reconnect`, which our CPU miner in `--sv1`
/// mode reports as the pool's Reconnect (same host, same port), after its acknowledged shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_pool_sends_sv1_miners_client_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let (server, sv1_addr) = pool_with_rare_blocks(dir.path()).await;
    let server = Arc::new(server);
    let miner = tokio::spawn(run_miner(
        MinerOptions {
            url: sv1_addr.to_string(),
            sv1: true,
            user: format!("{ADDRESS}.drained"),
            duration: Some(Duration::from_secs(60)),
            ..MinerOptions::default()
        },
        std::future::pending::<()>(),
    ));
    // Mining first: some shares acknowledged (their answers released by the ledger's commit,
    // not only accepted: on a busy machine a commit can take longer than the statistics' fold).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.observer().ack_latency().count < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no shares");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .unwrap()
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(20), miner)
        .await
        .expect("the miner ends")
        .unwrap()
        .expect("the miner ran");
    assert_eq!(
        report.stop,
        StopReason::Reconnect {
            host: String::new(),
            port: 0
        },
        "{report:?}"
    );
    assert!(report.shares_accepted >= 3, "{report:?}");
}

/// A proxy's devices on one SV1 connection: an `sv1_api` client authorizes a second worker of
/// the same user beside its first, mines with both names, and the ledger credits each share
/// to the worker that submitted it (one channel, the second worker's shares named by the
/// worker TLV underneath); another user on the same connection is refused with 24.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_of_one_user_share_an_sv1_connection_and_are_credited_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, sv1_addr) = pool_with_rare_blocks(dir.path()).await;
    let first = format!("{ADDRESS}.rig1");
    let second = format!("{ADDRESS}.rig2");
    let (rig1, rig2, refused) = tokio::time::timeout(Duration::from_secs(60), async {
        let mut conn = sv1_client::connect(sv1_addr, &first).await;
        conn.mine(5).await;
        let rig1 = conn.miner.accepted;
        // The second worker, and another user, through sv1_api's own authorize.
        for (id, name) in [(3, second.clone()), (4, "someoneelse.rig1".to_owned())] {
            conn.miner.authorize_requests.push((id, name.clone()));
            let authorize = conn.miner.authorize(None, id, name, "x".into()).unwrap();
            conn.line.send(authorize).await;
        }
        conn.line
            .until(&mut conn.miner, "the second worker authorized", |m| {
                m.authorized.len() == 2 && !m.refused.is_empty()
            })
            .await;
        let refused = conn.miner.refused.clone();
        conn.user = second.clone();
        conn.mine(rig1 + 7).await;
        (rig1, conn.miner.accepted - rig1, refused)
    })
    .await
    .expect("the SV1 miner finishes in time");
    assert_eq!((rig1, rig2), (5, 7));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, 24, "another user: {refused:?}");
    let shares = stop_and_read_ledger(&server, dir.path()).await;
    assert!(shares.iter().all(|s| &*s.record.user == ADDRESS));
    let by_worker = |w: &str| shares.iter().filter(|s| &*s.record.worker == w).count() as u64;
    assert_eq!((by_worker("rig1"), by_worker("rig2")), (rig1, rig2));
}

/// The options every pool here starts from: SV2 and SV1 on ephemeral ports, data in `dir`,
/// every share at [`DIFFICULTY`].
fn options(dir: &Path) -> PoolOptions {
    PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        min_difficulty: Some(DIFFICULTY),
        max_difficulty: Some(DIFFICULTY),
        ..PoolOptions::default()
    }
}

/// A started pool in `data_dir` whose shares (at [`DIFFICULTY`]) are never blocks (difficulty-1
/// chain), and its SV1 listener's address.
async fn pool_with_rare_blocks(
    data_dir: &std::path::Path,
) -> (StratumV2Server, std::net::SocketAddr) {
    let node: Arc<dyn NodeApi> = Arc::new(EmbeddedNode::new(ChainConfig {
        bits: 0x1d00_ffff,
        ..ChainConfig::default()
    }));
    let opts = PoolOptions {
        chain_bits: Some(0x1d00_ffff),
        ..options(data_dir)
    };
    let server = StratumV2Server::new(PoolConfig::resolve(&opts, "test").unwrap(), node).unwrap();
    server.start().await.unwrap();
    let sv1_addr = server.sv1_local_addr().await.unwrap();
    (server, sv1_addr)
}

/// A node that signals a deployment on bit 28 (regtest's testdummy) in every template: the
/// embedded chain with the bit set in its templates' version.
struct SignallingNode(Arc<EmbeddedNode>);

/// The deployment's bit, inside the mask the `sv1_api` miner asks for (BIP320's).
const SIGNALLED_BIT: u32 = 0x1000_0000;

impl NodeApi for SignallingNode {
    fn get_block_template(
        &self,
    ) -> blvm_stratum_v2::node::NodeFuture<'_, Result<BlockTemplate, NodeError>> {
        Box::pin(async {
            let mut template = self.0.get_block_template().await?;
            let signalling = template.version.to_consensus() as u32 | SIGNALLED_BIT;
            template.version = bitcoin::block::Version::from_consensus(signalling as i32);
            Ok(template)
        })
    }

    fn submit_block(
        &self,
        block: bitcoin::Block,
    ) -> blvm_stratum_v2::node::NodeFuture<'_, Result<(), NodeError>> {
        self.0.submit_block(block)
    }

    fn chain(&self) -> blvm_stratum_v2::node::NodeFuture<'_, Result<NodeChain, NodeError>> {
        self.0.chain()
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ChainEvent> {
        self.0.subscribe()
    }
}

/// Behind a node signalling on a bit the `sv1_api` miner would roll, the pool sends it
/// mining.set_version_mask without the bit before the first job; the miner rolls the narrower
/// mask (keeping the template's bit) and every share is accepted and in the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signalling_node_narrows_the_sv1_miners_version_mask() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        bits: 0x1d00_ffff,
        ..ChainConfig::default()
    }));
    let opts = PoolOptions {
        chain_bits: Some(0x1d00_ffff),
        ..options(dir.path())
    };
    let api: Arc<dyn NodeApi> = Arc::new(SignallingNode(node));
    let server = StratumV2Server::new(PoolConfig::resolve(&opts, "test").unwrap(), api).unwrap();
    server.start().await.unwrap();
    let sv1_addr = server.sv1_local_addr().await.unwrap();
    let miner = tokio::time::timeout(Duration::from_secs(60), async {
        let mut conn = sv1_client::connect(sv1_addr, &format!("{ADDRESS}.signal")).await;
        conn.mine(8).await;
        conn.miner
    })
    .await
    .expect("the SV1 miner finishes in time");
    assert_eq!(miner.mask_changes, [sv1_client::MASK & !SIGNALLED_BIT]);
    let job_version = miner.last_notify.as_ref().unwrap().version.0;
    assert_ne!(job_version & SIGNALLED_BIT, 0, "the job signals");
    assert_eq!(miner.accepted, 8);
    assert!(miner.refused.is_empty(), "{:?}", miner.refused);
    let shares = stop_and_read_ledger(&server, dir.path()).await;
    assert_eq!(shares.len(), 8);
}

/// Our SV2 CPU miner as worker `sv2rig` of [`ADDRESS`], on one extended channel, stopping
/// after `max_shares` accepted shares (or a minute).
fn sv2_rig(
    server: &StratumV2Server,
    sv2_addr: std::net::SocketAddr,
    max_shares: u64,
) -> MinerOptions {
    MinerOptions {
        url: sv2_addr.to_string(),
        authority_pubkey: server.authority_public_key().to_owned(),
        threads: 1,
        channel: ChannelKind::Extended,
        user: format!("{ADDRESS}.sv2rig"),
        nominal_hash_rate: 0.0,
        max_shares: Some(max_shares),
        duration: Some(Duration::from_secs(60)),
        ..MinerOptions::default()
    }
}

/// Stops `server` (its ledger's last commits written) and reads every share of the SQLite
/// ledger in `dir`.
async fn stop_and_read_ledger(server: &StratumV2Server, dir: &Path) -> Vec<StoredShare> {
    tokio::time::timeout(Duration::from_secs(15), server.stop())
        .await
        .expect("the pool stops in time")
        .expect("the pool stops");
    SqliteLedger::open(dir.join("ledger.sqlite3"))
        .expect("the ledger opens")
        .shares(&ShareRange::Time {
            from_ms: 0,
            to_ms: u64::MAX,
            limit: 100_000,
        })
        .expect("the ledger's shares")
}

/// `GET url` on a fresh HTTP/1 client: the JSON body of a 200.
async fn get_json(url: &str) -> serde_json::Value {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<hyper::body::Bytes>>();
    let req = hyper::Request::get(url)
        .body(http_body_util::Full::default())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(resp.status(), 200, "{url}");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

/// One user mining over SV1 (an `sv1_api` client) and SV2 (our CPU miner) at the same time
/// sees one total: `GET /api/v1/users/{user}` counts both workers' shares and credited
/// difficulty, each worker's as its miner saw them acknowledged, and the ledger holds the same
/// total under that user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sv1_and_an_sv2_miner_of_one_user_at_once_add_up_to_one_total() {
    const SV1_SHARES: u64 = 15;
    let dir = tempfile::tempdir().unwrap();
    let node: Arc<dyn NodeApi> = Arc::new(EmbeddedNode::new(ChainConfig {
        bits: 0x1d00_ffff,
        ..ChainConfig::default()
    }));
    let opts = PoolOptions {
        chain_bits: Some(0x1d00_ffff),
        http_listen_addr: Some("127.0.0.1:0".into()),
        ..options(dir.path())
    };
    let config = PoolConfig::resolve(&opts, "test").unwrap();
    let http_settings = config.http.clone().expect("the HTTP server is on");
    let server = StratumV2Server::new(config, node).unwrap();
    let sv2_addr = server.start().await.unwrap();
    let sv1_addr = server.sv1_local_addr().await.unwrap();
    let http = blvm_stratum_v2::http::HttpServer::start(http_settings, server.observer())
        .await
        .unwrap();
    let user_url = format!("http://{}/api/v1/users/{ADDRESS}", http.local_addr());

    let sv1 = async {
        let mut conn = sv1_client::connect(sv1_addr, &format!("{ADDRESS}.sv1rig")).await;
        conn.mine(SV1_SHARES).await;
        conn.miner
    };
    let sv2 = run_miner(sv2_rig(&server, sv2_addr, 10), std::future::pending::<()>());
    let (sv1, sv2) =
        tokio::time::timeout(Duration::from_secs(90), async { tokio::join!(sv1, sv2) })
            .await
            .expect("both miners finish in time");
    let sv2 = sv2.expect("the SV2 miner ran");
    assert_eq!(sv1.accepted, SV1_SHARES);
    assert!(sv1.refused.is_empty(), "{:?}", sv1.refused);
    assert!(sv2.shares_accepted >= 10, "{sv2:?}");

    // Both connections are gone: the statistics settle (a connection's shares are folded in
    // now and then and at its end).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = serde_json::Value::Null;
    loop {
        let user = get_json(&user_url).await;
        let settled = user == last
            && user["accepted_shares"].as_u64().unwrap() >= SV1_SHARES + sv2.shares_accepted;
        if settled {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{user}");
        last = user;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let user = last;
    let worker = |name: &str| {
        user["workers_list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["worker"] == name)
            .unwrap_or_else(|| panic!("{name}: {user}"))
            .clone()
    };
    let (api_sv1, api_sv2) = (worker("sv1rig"), worker("sv2rig"));
    let shares = |w: &serde_json::Value| w["accepted_shares"].as_u64().unwrap();
    let difficulty = |w: &serde_json::Value| w["credited_difficulty"].as_f64().unwrap();
    assert_eq!(user["workers"], 2, "{user}");
    assert_eq!(shares(&api_sv1), SV1_SHARES);
    assert!(shares(&api_sv2) >= sv2.shares_accepted, "{user}");
    assert_eq!(shares(&user), shares(&api_sv1) + shares(&api_sv2));
    assert!((difficulty(&user) - difficulty(&api_sv1) - difficulty(&api_sv2)).abs() < 1e-12);
    assert!((difficulty(&user) - DIFFICULTY * shares(&user) as f64).abs() < 1e-12);

    http.stop().await;
    let stored = stop_and_read_ledger(&server, dir.path()).await;
    let of_user: Vec<_> = stored
        .iter()
        .filter(|s| &*s.record.user == ADDRESS)
        .collect();
    let by_worker = |w: &str| of_user.iter().filter(|s| &*s.record.worker == w).count() as u64;
    assert_eq!(
        of_user.len() as u64,
        shares(&user),
        "the ledger's total is the API's"
    );
    assert_eq!(
        (by_worker("sv1rig"), by_worker("sv2rig")),
        (shares(&api_sv1), shares(&api_sv2))
    );
    let ledger_difficulty: f64 = of_user.iter().map(|s| s.record.difficulty).sum();
    assert!((ledger_difficulty - difficulty(&user)).abs() < 1e-12);
}

/// Solo and donate usernames over SV1 (`sri/solo/ADDRESS/w`, `sri/donate/10/ADDRESS/w`): the
/// `sv1_api` miner's jobs carry the channel's own coinbase, and every block it finds, as the
/// pool submitted it and the embedded chain accepted it, pays the address (all of the reward
/// for solo, all but the pool's 10% for donate); the ledger records them paid in the coinbase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solo_and_donate_blocks_over_sv1_pay_the_address_in_their_coinbase() {
    use bitcoin::{Address, Block, Network, ScriptBuf};
    let address = |n: u8| Address::p2wsh(&ScriptBuf::from_bytes(vec![0x51, n]), Network::Regtest);
    let (pool_address, solo, donor) = (address(0), address(1), address(2));
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(EmbeddedNode::new(ChainConfig::default()));
    let opts = PoolOptions {
        coinbase_reward_script: Some(format!("addr({pool_address})")),
        ..options(dir.path())
    };
    let api: Arc<dyn NodeApi> = node.clone();
    let server = StratumV2Server::new(PoolConfig::resolve(&opts, "test").unwrap(), api).unwrap();
    server.start().await.unwrap();
    let sv1_addr = server.sv1_local_addr().await.unwrap();
    // One miner after the other (two finding blocks on one tip would race).
    for name in [
        format!("sri/solo/{solo}/w"),
        format!("sri/donate/10/{donor}/w"),
    ] {
        let before = node.height();
        tokio::time::timeout(Duration::from_secs(60), async {
            let mut conn = sv1_client::connect(sv1_addr, &name).await;
            // On regtest about every other share is a block.
            while node.height() < before + 2 {
                conn.one_share().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: no blocks in time"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = server.get_pool_stats().await;
    assert_eq!(stats.blocks_rejected, 0, "{stats:?}");
    tokio::time::timeout(Duration::from_secs(15), server.stop())
        .await
        .unwrap()
        .unwrap();

    let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    let blocks = ledger.blocks(100).unwrap();
    assert_eq!(blocks.len() as u64, stats.blocks_accepted, "{stats:?}");
    let submitted = dir.path().join("blocks").join("submitted");
    let mut by_user: std::collections::BTreeMap<String, usize> = Default::default();
    for b in &blocks {
        let hash = b.block.hash;
        let hex = std::fs::read_to_string(submitted.join(format!("{hash}.hex"))).unwrap();
        let block: Block = bitcoin::consensus::encode::deserialize_hex(hex.trim()).unwrap();
        assert_eq!(block.block_hash(), hash);
        assert!(block.check_merkle_root() && block.check_witness_commitment());
        assert!(b.status.was_accepted(), "{hash}: {:?}", b.status);
        let paid: Vec<(ScriptBuf, u64)> = block.txdata[0]
            .output
            .iter()
            .filter(|o| o.value.to_sat() > 0)
            .map(|o| (o.script_pubkey.clone(), o.value.to_sat()))
            .collect();
        let reward: u64 = paid.iter().map(|(_, v)| v).sum();
        assert_eq!(reward, b.block.reward_sat);
        let user = b.block.user.clone();
        let expected = if user == format!("sri/solo/{solo}") {
            vec![(solo.script_pubkey(), reward)]
        } else {
            assert_eq!(user, format!("sri/donate/10/{donor}"));
            vec![
                (donor.script_pubkey(), reward - reward / 10),
                (pool_address.script_pubkey(), reward / 10),
            ]
        };
        assert_eq!(paid, expected, "{hash} found by {user}");
        let settled = ledger.payouts(hash).unwrap().expect("settled");
        assert_eq!(settled.scheme, "coinbase", "{settled:?}");
        *by_user.entry(user).or_default() += 1;
    }
    assert_eq!(by_user.len(), 2, "both miners found blocks: {by_user:?}");
    assert!(by_user.values().all(|&n| n >= 2), "{by_user:?}");
}
