//! Same-tip template updates: the pool fetches a template on the same tip every
//! `template_refresh_secs` (and on a node's NewTemplate event) and sends new work only when it
//! pays more; a template on a new tip always goes out. A scripted node hands out whatever
//! template the test sets; a connected SRI client sees which jobs reach a channel.

#[path = "common/sri_client.rs"]
mod sri_client;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::block::Version;
use bitcoin::hashes::Hash;
use bitcoin::{Amount, Block, BlockHash, CompactTarget};
use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::node::{BlockTemplate, ChainEvent, NodeApi, NodeChain, NodeError, NodeFuture};
use blvm_stratum_v2::server::{NodeEvent, StratumV2Server};
use parsers_sv2::{AnyMessageOwned, MiningOwned};
use sri_client::Miner;
use tokio::sync::{broadcast, mpsc};

struct ScriptedNode {
    template: Mutex<BlockTemplate>,
    fetches: Mutex<u64>,
    events: broadcast::Sender<ChainEvent>,
}

impl ScriptedNode {
    fn set(&self, prev: u8, value_sat: u64) {
        *self.template.lock().unwrap() = template(prev, value_sat);
    }
}

impl NodeApi for ScriptedNode {
    fn get_block_template(&self) -> NodeFuture<'_, Result<BlockTemplate, NodeError>> {
        *self.fetches.lock().unwrap() += 1;
        let t = self.template.lock().unwrap().clone();
        Box::pin(async move { Ok(t) })
    }

    fn submit_block(&self, _block: Block) -> NodeFuture<'_, Result<(), NodeError>> {
        Box::pin(async { Err(NodeError::BlockRejected("scripted node".into())) })
    }

    fn chain(&self) -> NodeFuture<'_, Result<NodeChain, NodeError>> {
        Box::pin(async { Ok(NodeChain::Known(bitcoin::Network::Regtest)) })
    }

    fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        self.events.subscribe()
    }
}

fn template(prev: u8, value_sat: u64) -> BlockTemplate {
    BlockTemplate {
        version: Version::from_consensus(0x2000_0000),
        prev_hash: BlockHash::from_byte_array([prev; 32]),
        // Difficulty 1: no share of the test is a block.
        bits: CompactTarget::from_consensus(0x1d00_ffff),
        height: 100 + u32::from(prev),
        min_time: 1_700_000_000,
        cur_time: 1_700_000_100,
        coinbase_value: Amount::from_sat(value_sat),
        transactions: Vec::new(),
        transaction_costs: Vec::new(),
    }
}

/// Reads the client's messages in a task (its reads must not be cancelled) and passes on,
/// for each NewExtendedMiningJob, whether it is a future job.
fn jobs(mut m: Miner) -> mpsc::UnboundedReceiver<bool> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match m.recv().await {
                Ok(AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(j))) => {
                    if tx.send(j.is_future()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// The next job on the channel within `within`: Some(future) or None.
async fn next_job(rx: &mut mpsc::UnboundedReceiver<bool>, within: Duration) -> Option<bool> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_tip_templates_go_out_only_when_they_pay_more() {
    let node = Arc::new(ScriptedNode {
        template: Mutex::new(template(1, 5_000_000_000)),
        fetches: Mutex::new(0),
        events: broadcast::channel(16).0,
    });
    let dir = tempfile::tempdir().unwrap();
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        template_refresh_secs: Some(1),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&opts, "test").unwrap();
    assert_eq!(config.template_refresh_ms, 1000);
    let api: Arc<dyn NodeApi> = node.clone();
    let server = StratumV2Server::new(config, api).unwrap();
    let addr = server.start().await.unwrap();
    let mut m = Miner::ready(addr, server.authority_public_key(), 0)
        .await
        .unwrap();
    m.open(true, "refresh").await.unwrap();
    let mut m = jobs(m);
    let first = server.current_work().unwrap();
    let value = |s: &StratumV2Server| s.current_work().unwrap().coinbase_value;

    // The same template, then one paying less: fetched at every refresh, never sent.
    let fetched = *node.fetches.lock().unwrap();
    assert_eq!(next_job(&mut m, Duration::from_millis(1500)).await, None);
    assert!(
        *node.fetches.lock().unwrap() > fetched,
        "the refresh fetched a template"
    );
    node.set(1, 4_999_999_999);
    server
        .handle_event(NodeEvent::BlockTemplateUpdated)
        .await
        .unwrap();
    assert_eq!(next_job(&mut m, Duration::from_millis(1500)).await, None);
    assert_eq!(server.current_work().unwrap().id, first.id);

    // Paying more on the same tip: out at the next refresh, as a job for now (not future).
    node.set(1, 5_000_001_000);
    assert_eq!(
        next_job(&mut m, Duration::from_secs(3)).await,
        Some(false),
        "a template paying more goes out within the refresh interval"
    );
    assert_eq!(value(&server), 5_000_001_000);
    assert_eq!(server.current_work().unwrap().prev_hash, first.prev_hash);

    // A node event does the same at once.
    node.set(1, 5_000_002_000);
    server
        .handle_event(NodeEvent::BlockTemplateUpdated)
        .await
        .unwrap();
    assert_eq!(value(&server), 5_000_002_000);
    assert_eq!(next_job(&mut m, Duration::from_secs(1)).await, Some(false));

    // A new tip goes out whatever it pays (a future job, then SetNewPrevHash).
    node.set(2, 2_500_000_000);
    let _ = node.events.send(ChainEvent::NewTip {
        hash: BlockHash::from_byte_array([2; 32]),
        height: 102,
    });
    assert_eq!(next_job(&mut m, Duration::from_secs(2)).await, Some(true));
    let w = server.current_work().unwrap();
    assert_eq!(w.prev_hash, BlockHash::from_byte_array([2; 32]));
    assert_eq!(w.coinbase_value, 2_500_000_000);

    // The same tip at another height is a correction (a node that read its tip and its height
    // apart): it goes out whatever it pays, or every block on the old work would be refused.
    let mut corrected = template(2, 2_500_000_000);
    corrected.height += 1;
    *node.template.lock().unwrap() = corrected;
    server
        .handle_event(NodeEvent::BlockTemplateUpdated)
        .await
        .unwrap();
    let w = server.current_work().unwrap();
    assert_eq!(w.height, 103);
    assert_eq!(w.prev_hash, BlockHash::from_byte_array([2; 32]));
    // Sent as a new tip (a future job and SetNewPrevHash, on the same prev hash): the jobs at
    // the wrong height, on which no block is valid, stop earning credit.
    assert_eq!(next_job(&mut m, Duration::from_secs(2)).await, Some(true));

    // The same tip at other nBits (testnet: the minimum difficulty 20 minutes after a block),
    // paying no more: a new tip too, whose SetNewPrevHash carries them to the miner.
    let mut easier = template(2, 2_500_000_000);
    easier.height += 1;
    easier.bits = CompactTarget::from_consensus(0x207f_fffe);
    *node.template.lock().unwrap() = easier;
    server
        .handle_event(NodeEvent::BlockTemplateUpdated)
        .await
        .unwrap();
    assert_eq!(server.current_work().unwrap().nbits, 0x207f_fffe);
    assert_eq!(next_job(&mut m, Duration::from_secs(2)).await, Some(true));
    server.stop().await.unwrap();
}
