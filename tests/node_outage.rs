//! Node outages on the JSON-RPC backend, against a real blvm-node regtest node
//! (tools/regtest-node, persistent data directory): the node is stopped mid-mining, once by
//! SIGTERM and once by SIGKILL, and started again on the same data directory and ports.
//!
//! While it is down the miner stays connected and the pool keeps answering its shares; the
//! blocks found while the node is down are saved in `blocks/pending` at once and resubmitted
//! until the node answers; after the restart the node accepts the first of them and mining
//! resumes on its tip.
//!
//! The rule for "no found block is lost", checked over every block the pool saved: each one is
//! in the node's main chain, or is stale, meaning the main chain holds, at the same height, a
//! block on the same parent that the pool found and submitted before it (the pool submits
//! found blocks in the order found; with one miner a sibling only appears when an outage
//! outlasts the 10 s during which the pool refuses shares on a tip it has just solved; a stale
//! block is not a lost one). And the first block found during each outage is in the main chain.
//!
//! The stop is timed by a thin wrapper around the real backend (`Gated`): it holds one
//! template on a new tip until the test has stopped the node, so the pool's work is on the
//! node's durable tip when the node goes away and the block the miner finds next is found
//! while the node is down (without the hold, the node might go away after accepting a block
//! but before the pool fetched a template on it, and every block found during the outage
//! would then be a stale sibling of that block).

#[path = "common/regtest_node.rs"]
mod regtest_node;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::{Block, BlockHash};
use blvm_stratum_v2::client::{ChannelKind, MinerOptions, run_miner};
use blvm_stratum_v2::config::{Backend, PoolConfig, PoolOptions};
use blvm_stratum_v2::mining::coinbase::bip34_height;
use blvm_stratum_v2::node::rpc::{RpcClient, RpcNode};
use blvm_stratum_v2::node::{BlockTemplate, ChainEvent, NodeApi, NodeChain, NodeError, NodeFuture};
use blvm_stratum_v2::server::StratumV2Server;
use regtest_node::{RegtestNode, Stop, best_hash, block_count, hash_at};
use tokio::sync::oneshot;

/// The real backend, with a hold the test can put on the next template.
struct Gated {
    inner: Arc<RpcNode>,
    /// Armed by the test: the template's prev hash goes out on the first sender, and the
    /// template is handed to the pool once the second channel fires.
    hold: Mutex<Option<(oneshot::Sender<BlockHash>, oneshot::Receiver<()>)>>,
}

impl NodeApi for Gated {
    fn get_block_template(&self) -> NodeFuture<'_, Result<BlockTemplate, NodeError>> {
        Box::pin(async move {
            let t = self.inner.get_block_template().await?;
            let armed = self.hold.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some((reached, release)) = armed {
                let _ = reached.send(t.prev_hash);
                let _ = release.await;
            }
            Ok(t)
        })
    }

    fn submit_block(&self, block: Block) -> NodeFuture<'_, Result<(), NodeError>> {
        self.inner.submit_block(block)
    }

    fn chain(&self) -> NodeFuture<'_, Result<NodeChain, NodeError>> {
        self.inner.chain()
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ChainEvent> {
        self.inner.subscribe()
    }
}

/// The BIP34 height in a block's coinbase.
fn coinbase_height(block: &Block) -> u64 {
    bip34_height(block)
        .map(u64::from)
        .unwrap_or_else(|| panic!("no BIP34 height in {block:?}"))
}

/// The blocks saved in `DATA_DIR/blocks/STATE`, by hash.
fn saved(data_dir: &Path, state: &str) -> Vec<(String, Block)> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("blocks").join(state)) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".hex")?.to_owned();
            let text = std::fs::read_to_string(e.path()).ok()?;
            let block = bitcoin::consensus::encode::deserialize_hex(text.trim()).ok()?;
            Some((name, block))
        })
        .collect()
}

fn all_saved(data_dir: &Path) -> Vec<(String, Block)> {
    ["pending", "submitted", "rejected"]
        .iter()
        .flat_map(|s| saved(data_dir, s))
        .collect()
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_found_while_the_node_is_down_are_accepted_when_it_returns() {
    tokio::time::timeout(Duration::from_secs(45 * 60), outages())
        .await
        .expect("test finished in time");
}

async fn outages() {
    let mut node = RegtestNode::start(None).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_path_buf();
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(data_dir.clone()),
        min_difficulty: Some(1e-6),
        max_difficulty: Some(1e-6),
        backend: Some("rpc".into()),
        rpc_url: Some(node.url()),
        rpc_cookie_file: Some(node.datadir.path().join(".cookie")),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&opts, "test").expect("valid test config");
    let Backend::Rpc(rpc) = config.backend.clone() else {
        panic!("not the rpc backend: {:?}", config.backend)
    };
    let gated = Arc::new(Gated {
        inner: Arc::new(RpcNode::new(rpc)),
        hold: Mutex::new(None),
    });
    let api: Arc<dyn NodeApi> = gated.clone();
    let server = StratumV2Server::new(config, api).expect("server");
    let addr = server.start().await.expect("start");
    // The test's own client: the node's cookie is re-read for each new connection.
    let client = RpcClient::new(node.rpc_config());

    let (stop_miner, miner_stop) = oneshot::channel::<()>();
    let miner = tokio::spawn(run_miner(
        MinerOptions {
            url: addr.to_string(),
            authority_pubkey: server.authority_public_key().to_owned(),
            threads: 1,
            channel: ChannelKind::Extended,
            user: "outage".into(),
            nominal_hash_rate: 0.0,
            max_shares: None,
            duration: Some(Duration::from_secs(600)),
            ..MinerOptions::default()
        },
        async move {
            let _ = miner_stop.await;
        },
    ));

    let mut found_during_outages = Vec::new();
    for how in [Stop::Term, Stop::Kill] {
        // Mining through the pool, the node accepting the blocks.
        let start_height = block_count(&client).await;
        wait_until("the chain grows", Duration::from_secs(60), || async {
            block_count(&client).await >= start_height + 3
        })
        .await;

        // Hold the next template on a new tip, stop the node, then hand the template over.
        let (tip, release) = loop {
            let (reached_tx, reached) = oneshot::channel();
            let (release, release_rx) = oneshot::channel();
            *gated.hold.lock().unwrap() = Some((reached_tx, release_rx));
            let tip = tokio::time::timeout(Duration::from_secs(30), reached)
                .await
                .expect("a template within 30 s")
                .expect("gate");
            let current = server.current_work().expect("work").prev_hash;
            if tip != current {
                break (tip, release);
            }
            // A refresh on the tip the pool already mines on: not the moment wanted.
            let _ = release.send(());
        };
        assert_eq!(best_hash(&client).await, tip.to_string());
        let tip_height = block_count(&client).await;
        let before: HashSet<String> = all_saved(&data_dir).into_iter().map(|(h, _)| h).collect();
        node.stop(how).await;
        let down_at = Instant::now();
        let _ = release.send(());

        // The miner finds the next block on the node's tip while the node is down: saved in
        // blocks/pending, not lost.
        let mut found: Option<(String, Block)> = None;
        wait_until(
            "a block found during the outage is saved in blocks/pending",
            Duration::from_secs(20),
            || {
                found = saved(&data_dir, "pending")
                    .into_iter()
                    .find(|(h, b)| !before.contains(h) && b.header.prev_blockhash == tip);
                std::future::ready(found.is_some())
            },
        )
        .await;
        let (hash, block) = found.expect("found");
        let height = coinbase_height(&block);
        assert_eq!(height, tip_height + 1);
        eprintln!(
            "{how:?}: block {hash} (height {height}) found {:?} into the outage, pending",
            down_at.elapsed()
        );

        // Down for a while: the miner stays connected and the pool answers its shares. The
        // SIGTERM outage lasts until the miner finds a second block on the same tip (the pool
        // refuses shares on a tip it solved for 10 s, then takes them again): it is on disk at
        // once, though the submitter is still busy resubmitting the first.
        let shares_before = server.get_pool_stats().await.total_shares;
        tokio::time::sleep(Duration::from_secs(3)).await;
        if how == Stop::Term {
            wait_until(
                "a second block found during the outage is saved at once",
                Duration::from_secs(20),
                || {
                    let n = saved(&data_dir, "pending")
                        .iter()
                        .filter(|(_, b)| b.header.prev_blockhash == tip)
                        .count();
                    std::future::ready(n >= 2)
                },
            )
            .await;
            eprintln!(
                "{how:?}: a second block on the same tip pending {:?} into the outage",
                down_at.elapsed()
            );
        }
        let stats = server.get_pool_stats().await;
        assert_eq!(stats.channel_count, 1, "miner still connected: {stats:?}");
        assert!(
            stats.total_shares > shares_before,
            "the pool answered shares during the outage: {stats:?}"
        );
        assert!(
            saved(&data_dir, "pending").iter().any(|(h, _)| *h == hash),
            "still pending while the node is down"
        );
        assert!(!miner.is_finished(), "the miner is still mining");

        // The node comes back on the same data directory: it kept its chain, takes the
        // pending block, and mining resumes on its tip.
        node.restart().await;
        let back_at = Instant::now();
        let restarted_height = block_count(&client).await;
        eprintln!(
            "{how:?}: node back after {:?} down, height {restarted_height}",
            down_at.elapsed()
        );
        assert!(
            restarted_height >= tip_height,
            "the node lost blocks across {how:?}: height {restarted_height} < {tip_height}"
        );
        let submitted = data_dir.join(format!("blocks/submitted/{hash}.hex"));
        wait_until(
            "the pending block is accepted after the restart",
            Duration::from_secs(10),
            || std::future::ready(submitted.exists()),
        )
        .await;
        eprintln!(
            "{how:?}: pending block accepted {:?} after the node came back",
            back_at.elapsed()
        );
        assert_eq!(hash_at(&client, height).await, hash, "{}", node.log());
        wait_until(
            "mining resumes on the node's tip",
            Duration::from_secs(30),
            || async { block_count(&client).await >= height + 3 },
        )
        .await;
        found_during_outages.push((hash, height));
    }

    let _ = stop_miner.send(());
    let report = miner.await.expect("miner task").expect("miner ran");
    eprintln!("miner: {report:?}");
    server.stop().await.expect("clean stop");
    let stats = server.get_pool_stats().await;
    eprintln!("pool: {stats:?}");

    // The node's tip is a block our pool found; no found block is lost.
    let ours = all_saved(&data_dir);
    let best = best_hash(&client).await;
    assert!(
        ours.iter().any(|(h, _)| *h == best),
        "best {best} is not a block of the pool"
    );
    assert!(
        saved(&data_dir, "pending").is_empty(),
        "blocks left pending with the node up"
    );
    let mut in_chain = HashSet::new();
    for (hash, block) in &ours {
        let height = coinbase_height(block);
        if hash_at(&client, height).await == *hash {
            in_chain.insert(hash.clone());
        }
    }
    for (hash, block) in &ours {
        if in_chain.contains(hash) {
            continue;
        }
        let height = coinbase_height(block);
        let winner = hash_at(&client, height).await;
        let sibling = ours
            .iter()
            .find(|(h, b)| *h == winner && b.header.prev_blockhash == block.header.prev_blockhash);
        assert!(
            sibling.is_some(),
            "block {hash} at height {height} is lost: not in the chain, and the chain's block \
             there ({winner}) is not a sibling the pool found"
        );
        eprintln!("block {hash} at height {height} is stale: {winner} was accepted first");
    }
    for (hash, height) in &found_during_outages {
        assert!(
            in_chain.contains(hash),
            "block {hash} (height {height}) found during an outage is not in the chain"
        );
    }
    eprintln!(
        "{} blocks found, {} in the node's chain (height {})",
        ours.len(),
        in_chain.len(),
        block_count(&client).await
    );
}
