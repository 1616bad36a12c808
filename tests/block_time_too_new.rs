//! A block the node refuses as too new for its clock is not invalid: it becomes valid as the
//! node's clock advances. The pool keeps it in `blocks/pending`, submits it again until the
//! node's clock allows it, and never files it under rejected meanwhile.
//!
//! The node is the embedded regtest chain behind a clock the test moves (`ClockedChain`): the
//! pool gets its work while the node's clock is right, then the node's clock falls three hours
//! behind (as after a clock correction), a miner finds a block on that work, and the node
//! calls it too new until the test sets its clock right again.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin::{Block, BlockHash};
use blvm_stratum_v2::client::{ChannelKind, MinerOptions, run_miner};
use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::mining::{MiningConfig, Work};
use blvm_stratum_v2::node::regtest::{BlockRejection, ChainConfig, EmbeddedChain};
use blvm_stratum_v2::node::{BlockTemplate, ChainEvent, NodeApi, NodeChain, NodeError, NodeFuture};
use blvm_stratum_v2::server::StratumV2Server;
use tokio::sync::{broadcast, oneshot};

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The embedded chain, judging blocks by a clock `offset_secs` away from the system's.
struct ClockedChain {
    chain: Mutex<EmbeddedChain>,
    offset_secs: AtomicI64,
    events: broadcast::Sender<ChainEvent>,
    /// Every submission: the block's hash and the node's answer.
    submissions: Mutex<Vec<(BlockHash, Result<(), NodeError>)>>,
}

impl ClockedChain {
    fn new() -> Self {
        ClockedChain {
            chain: Mutex::new(EmbeddedChain::new(ChainConfig::default())),
            offset_secs: AtomicI64::new(0),
            events: broadcast::channel(64).0,
            submissions: Mutex::new(Vec::new()),
        }
    }

    fn clock(&self) -> u32 {
        (unix_now() + self.offset_secs.load(Ordering::SeqCst)) as u32
    }

    fn set_clock_behind(&self, secs: i64) {
        self.offset_secs.store(-secs, Ordering::SeqCst);
    }

    fn submissions(&self) -> Vec<(BlockHash, Result<(), NodeError>)> {
        self.submissions.lock().unwrap().clone()
    }

    fn tip(&self) -> (BlockHash, u32) {
        let c = self.chain.lock().unwrap();
        (c.tip(), c.height())
    }
}

impl NodeApi for ClockedChain {
    fn get_block_template(&self) -> NodeFuture<'_, Result<BlockTemplate, NodeError>> {
        let t = self.chain.lock().unwrap().template(self.clock());
        Box::pin(async move { Ok(t) })
    }

    fn submit_block(&self, block: Block) -> NodeFuture<'_, Result<(), NodeError>> {
        let hash = block.block_hash();
        let mut chain = self.chain.lock().unwrap();
        // The embedded chain's own refusal, typed as its backend types it.
        let answer = chain
            .submit_block(&block, self.clock())
            .map(|_| ())
            .map_err(NodeError::from);
        if answer.is_ok() {
            let _ = self.events.send(ChainEvent::NewTip {
                hash,
                height: chain.height(),
            });
        }
        drop(chain);
        self.submissions
            .lock()
            .unwrap()
            .push((hash, answer.clone()));
        Box::pin(async move { answer })
    }

    fn chain(&self) -> NodeFuture<'_, Result<NodeChain, NodeError>> {
        Box::pin(async { Ok(NodeChain::Known(bitcoin::Network::Regtest)) })
    }

    fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        self.events.subscribe()
    }
}

/// The block files in `DATA_DIR/blocks/STATE`.
fn saved(data_dir: &Path, state: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("blocks").join(state)) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".hex")
                .map(str::to_owned)
        })
        .collect()
}

async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_too_new_for_the_node_clock_is_retried_and_accepted_once_the_clock_allows_it() {
    tokio::time::timeout(Duration::from_secs(90), too_new_then_accepted())
        .await
        .expect("test finished in time");
}

async fn too_new_then_accepted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_path_buf();
    let node = Arc::new(ClockedChain::new());
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(data_dir.clone()),
        min_difficulty: Some(1e-6),
        max_difficulty: Some(1e-6),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&opts, "test").expect("valid test config");
    let api: Arc<dyn NodeApi> = node.clone();
    let server = StratumV2Server::new(config, api).expect("server");
    let addr = server.start().await.expect("start");
    wait_until("the pool has work", Duration::from_secs(10), || {
        server.current_work().is_some()
    })
    .await;
    let work = server.current_work().expect("work");

    // The node's clock falls three hours behind the time of the pool's work.
    node.set_clock_behind(3 * 3600);

    // One accepted share; at regtest's nBits it is a block.
    let (stop_miner, miner_stop) = oneshot::channel::<()>();
    let miner = tokio::spawn(run_miner(
        MinerOptions {
            url: addr.to_string(),
            authority_pubkey: server.authority_public_key().to_owned(),
            threads: 1,
            channel: ChannelKind::Extended,
            user: "early".into(),
            nominal_hash_rate: 0.0,
            max_shares: Some(1),
            duration: Some(Duration::from_secs(60)),
            ..MinerOptions::default()
        },
        async move {
            let _ = miner_stop.await;
        },
    ));

    // The node refuses it as too new, again and again: it stays pending, never rejected.
    wait_until("three refusals as too new", Duration::from_secs(30), || {
        node.submissions()
            .iter()
            .filter(|(_, a)| matches!(a, Err(NodeError::BlockTooNewInTime(_))))
            .count()
            >= 3
    })
    .await;
    let submissions = node.submissions();
    let block = submissions[0].0;
    assert!(
        submissions
            .iter()
            .all(|(h, a)| *h == block && matches!(a, Err(NodeError::BlockTooNewInTime(_)))),
        "only that block, only refused as too new: {submissions:?}"
    );
    assert_eq!(saved(&data_dir, "pending"), [block.to_string()]);
    assert!(saved(&data_dir, "rejected").is_empty());
    let stats = server.get_pool_stats().await;
    assert_eq!(
        (
            stats.blocks_found,
            stats.blocks_accepted,
            stats.blocks_rejected
        ),
        (1, 0, 0)
    );
    assert_eq!(node.tip().1, 0);
    assert_eq!(
        server.current_work().expect("work").prev_hash,
        work.prev_hash
    );

    // The node's clock is right again: the next retry is accepted.
    node.set_clock_behind(0);
    wait_until("the block accepted", Duration::from_secs(40), || {
        node.tip() == (block, 1)
    })
    .await;
    wait_until(
        "the block filed as submitted",
        Duration::from_secs(5),
        || saved(&data_dir, "submitted") == [block.to_string()],
    )
    .await;
    assert!(saved(&data_dir, "pending").is_empty());
    assert!(saved(&data_dir, "rejected").is_empty());
    let stats = server.get_pool_stats().await;
    assert_eq!((stats.blocks_accepted, stats.blocks_rejected), (1, 0));
    let refusals = node
        .submissions()
        .iter()
        .filter(|(h, a)| *h == block && a.is_err())
        .count();
    assert!(refusals >= 3, "{refusals}");

    let _ = stop_miner.send(());
    let _ = miner.await;
    tokio::time::timeout(Duration::from_secs(15), server.stop())
        .await
        .expect("server stops in time")
        .expect("server stops");
}

/// A block on the regtest genesis with header time `time`, solved by brute force.
fn block_on_genesis(time: u32) -> Block {
    let mut chain = EmbeddedChain::new(ChainConfig::default());
    let cfg = MiningConfig::default();
    let work = Work::new(1, chain.template(time), &cfg.coinbase).unwrap();
    let (prefix, extranonce) = ([7u8; 24], [9u8; 8]);
    let nonce = (0u32..)
        .find(|&n| {
            let b = work.assemble_block(&prefix, &extranonce, work.version, time, n);
            work.network_target.is_met_by(b.block_hash())
        })
        .unwrap();
    work.assemble_block(&prefix, &extranonce, work.version, time, nonce)
}

/// The embedded chain tells a block too old (a verdict) from one too new for its clock (a
/// refusal for now), and its backend types them apart.
#[test]
fn the_embedded_chain_refuses_too_old_for_good_and_too_new_for_now() {
    let now = unix_now() as u32;
    let mut chain = EmbeddedChain::new(ChainConfig::default());
    let genesis_time = chain.template(now).min_time - 1;

    let old = block_on_genesis(genesis_time);
    let e = chain.submit_block(&old, now).unwrap_err();
    assert_eq!(e, BlockRejection::TimeTooOld(genesis_time));
    assert!(matches!(NodeError::from(e), NodeError::BlockRejected(_)));

    let early = block_on_genesis(now);
    let behind = now - 2 * 3600 - 1;
    let e = chain.submit_block(&early, behind).unwrap_err();
    assert_eq!(e, BlockRejection::TimeTooNew(now));
    assert_eq!(
        NodeError::from(e),
        NodeError::BlockTooNewInTime(format!("time-too-new: {now}"))
    );
    // Two hours ahead of the clock is allowed: the same block, a second later.
    assert!(chain.submit_block(&early, behind + 1).is_ok());
}
