//! The template provider (Template Distribution Protocol server) against a client built from
//! the SRI crates (noise_sv2 and codec_sv2 through `common/sri_client.rs`, parsers_sv2,
//! template_distribution_sv2, common_messages_sv2) and rust-bitcoin: set up, templates, a
//! solved block that moves the embedded chain, and bad input.

#[path = "common/sri_client.rs"]
mod sri_client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use binary_sv2::{B064K, Str0255};
use bitcoin::absolute::LockTime;
use bitcoin::block::{Header, Version};
use bitcoin::consensus::{Decodable, deserialize, serialize};
use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxMerkleNode, TxOut, Witness, transaction,
};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode, HISTORY_HEIGHT};
use blvm_stratum_v2::node::{BlockTemplate, ChainEvent, NodeApi, NodeChain, NodeError, NodeFuture};
use blvm_stratum_v2::template_provider::{TemplateProvider, TemplateProviderConfig};
use common_messages_sv2::{Protocol, SetupConnection};
use parsers_sv2::{
    AnyMessage, AnyMessageOwned, CommonMessages, CommonMessagesOwned, TemplateDistribution,
    TemplateDistributionOwned,
};
use sri_client::{SriConn, expect_closed, raw_frame};
use template_distribution_sv2::{
    CoinbaseOutputConstraints, NewTemplateOwned, RequestTransactionData, SetNewPrevHashOwned,
    SubmitSolution,
};

/// Bound of every test: it stops by itself.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The easiest regtest target: about every second nonce is a block.
const EASY_BITS: u32 = 0x207f_ffff;

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out");
}

struct Tp {
    tp: TemplateProvider,
    node: Arc<EmbeddedNode>,
    addr: SocketAddr,
    key: String,
    _dir: tempfile::TempDir,
}

async fn start_tp(synthetic_transactions: usize) -> Tp {
    start_tp_on(synthetic_transactions, |node| node).await
}

/// A template provider on the embedded chain as `wrap` presents it.
async fn start_tp_on(
    synthetic_transactions: usize,
    wrap: impl FnOnce(Arc<EmbeddedNode>) -> Arc<dyn NodeApi>,
) -> Tp {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        bits: EASY_BITS,
        synthetic_transactions,
        block_interval_secs: 0,
    }));
    let config = TemplateProviderConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        handshake_timeout: Duration::from_secs(2),
        setup_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let tp = TemplateProvider::new(config, wrap(node.clone())).expect("template provider");
    let addr = tp.start().await.expect("start");
    let key = tp.authority_public_key().to_owned();
    Tp {
        tp,
        node,
        addr,
        key,
        _dir: dir,
    }
}

fn str255(s: &'static str) -> Str0255<'static> {
    Str0255::new(s.as_bytes()).expect("short string")
}

fn setup_message(protocol: Protocol) -> AnyMessage<'static> {
    AnyMessage::Common(CommonMessages::SetupConnection(SetupConnection {
        protocol,
        min_version: 2,
        max_version: 2,
        flags: 0,
        endpoint_host: str255("127.0.0.1"),
        endpoint_port: 8442,
        vendor: str255("sri-tdp-test"),
        hardware_version: str255(""),
        firmware: str255(""),
        device_id: str255(""),
    }))
}

fn td(m: TemplateDistribution<'_>) -> AnyMessage<'_> {
    AnyMessage::TemplateDistribution(m)
}

/// Connects, sets up for Template Distribution, sends CoinbaseOutputConstraints and returns
/// the connection with the first NewTemplate and SetNewPrevHash.
async fn ready_client(tp: &Tp) -> (SriConn, NewTemplateOwned, SetNewPrevHashOwned) {
    let mut c = SriConn::connect(tp.addr, &tp.key).await.expect("noise");
    c.send(setup_message(Protocol::TemplateDistributionProtocol))
        .await
        .unwrap();
    match c.recv().await.unwrap() {
        AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(s)) => {
            assert_eq!(s.used_version, 2)
        }
        other => panic!("setup answered with {other:?}"),
    }
    c.send(td(TemplateDistribution::CoinbaseOutputConstraints(
        CoinbaseOutputConstraints {
            coinbase_output_max_additional_size: 100,
            coinbase_output_max_additional_sigops: 4,
        },
    )))
    .await
    .unwrap();
    let (t, p) = next_tip(&mut c).await;
    (c, t, p)
}

/// Sends `block` (solved on template `template_id`) as a SubmitSolution.
async fn submit_solution(c: &mut SriConn, template_id: u64, block: &Block) {
    let coinbase = serialize(&block.txdata[0]);
    c.send(td(TemplateDistribution::SubmitSolution(SubmitSolution {
        template_id,
        version: block.header.version.to_consensus() as u32,
        header_timestamp: block.header.time,
        header_nonce: block.header.nonce,
        coinbase_tx: B064K::new(&coinbase).expect("coinbase fits"),
    })))
    .await
    .unwrap();
}

/// Reads the NewTemplate (future) and the SetNewPrevHash activating it.
async fn next_tip(c: &mut SriConn) -> (NewTemplateOwned, SetNewPrevHashOwned) {
    let t = match c.recv().await.unwrap() {
        AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::NewTemplate(t)) => t,
        other => panic!("expected NewTemplate, got {other:?}"),
    };
    assert!(
        t.future_template,
        "a template on a new tip is a future template"
    );
    let p = match c.recv().await.unwrap() {
        AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::SetNewPrevHash(p)) => p,
        other => panic!("expected SetNewPrevHash, got {other:?}"),
    };
    assert_eq!(p.template_id, t.template_id);
    (t, p)
}

async fn request_transactions(c: &mut SriConn, template_id: u64) -> Result<Vec<Vec<u8>>, String> {
    c.send(td(TemplateDistribution::RequestTransactionData(
        RequestTransactionData { template_id },
    )))
    .await
    .unwrap();
    match c.recv().await.unwrap() {
        AnyMessageOwned::TemplateDistribution(
            TemplateDistributionOwned::RequestTransactionDataSuccess(s),
        ) => {
            assert_eq!(s.template_id, template_id);
            Ok(s.transaction_list
                .iter()
                .map(|t| t.as_bytes().to_vec())
                .collect())
        }
        AnyMessageOwned::TemplateDistribution(
            TemplateDistributionOwned::RequestTransactionDataError(e),
        ) => {
            assert_eq!(e.template_id, template_id);
            Err(String::from_utf8_lossy(e.error_code.as_bytes()).into_owned())
        }
        other => panic!("expected RequestTransactionData.Success/Error, got {other:?}"),
    }
}

/// The coinbase a pool would build from the template: the template's prefix, a tag, the
/// payout, then the template's outputs, with the 32-byte witness reserved value.
fn build_coinbase(t: &NewTemplateOwned) -> Transaction {
    let mut script_sig = t.coinbase_prefix.as_bytes().to_vec();
    script_sig.extend_from_slice(&[8, b's', b'r', b'i', b'-', b't', b'e', b's', b't']);
    let mut outputs = vec![TxOut {
        value: Amount::from_sat(t.coinbase_tx_value_remaining),
        script_pubkey: ScriptBuf::new_op_return([1, 2, 3]),
    }];
    let mut rest = t.coinbase_tx_outputs.as_bytes();
    for _ in 0..t.coinbase_tx_outputs_count {
        outputs.push(TxOut::consensus_decode(&mut rest).expect("template output"));
    }
    assert!(rest.is_empty(), "outputs_count covers coinbase_tx_outputs");
    Transaction {
        version: transaction::Version(t.coinbase_tx_version as i32),
        lock_time: LockTime::from_consensus(t.coinbase_tx_locktime),
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(script_sig),
            sequence: Sequence(t.coinbase_tx_input_sequence),
            witness: Witness::from_slice(&[[0u8; 32]]),
        }],
        output: outputs,
    }
}

/// Builds the block for the template and grinds a nonce that meets the target.
fn solve(t: &NewTemplateOwned, p: &SetNewPrevHashOwned, txs: &[Vec<u8>]) -> Block {
    let coinbase = build_coinbase(t);
    let mut txdata = vec![coinbase.clone()];
    txdata.extend(
        txs.iter()
            .map(|b| deserialize::<Transaction>(b).expect("template transaction")),
    );
    // The template's merkle path folds the coinbase txid to the same root as the whole block.
    let path_root =
        t.merkle_path
            .iter()
            .fold(coinbase.compute_txid().to_byte_array(), |acc, node| {
                let mut buf = [0u8; 64];
                buf[..32].copy_from_slice(&acc);
                buf[32..].copy_from_slice(&node.to_array());
                sha256d::Hash::hash(&buf).to_byte_array()
            });
    let mut block = Block {
        header: Header {
            version: Version::from_consensus(t.version as i32),
            prev_blockhash: BlockHash::from_byte_array(p.prev_hash.to_array()),
            merkle_root: TxMerkleNode::all_zeros(),
            time: p.header_timestamp,
            bits: CompactTarget::from_consensus(p.n_bits),
            nonce: 0,
        },
        txdata,
    };
    let root = block.compute_merkle_root().expect("transactions");
    assert_eq!(root.to_byte_array(), path_root, "merkle path");
    block.header.merkle_root = root;
    assert!(block.check_witness_commitment(), "witness commitment");
    let target = bitcoin::Target::from_le_bytes(p.target.to_array());
    while !target.is_met_by(block.block_hash()) {
        block.header.nonce += 1;
    }
    block
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_client_gets_templates_submits_a_block_and_follows_the_new_tip() {
    bounded(async {
        let tp = start_tp(3).await;
        let (mut a, t, p) = ready_client(&tp).await;
        let (mut b, t_b, _) = ready_client(&tp).await;
        assert_eq!(
            t_b.template_id, t.template_id,
            "both clients get the best template"
        );
        assert_eq!(p.n_bits, EASY_BITS);
        assert_eq!(p.prev_hash.to_array(), tp.node.tip().to_byte_array());
        assert_eq!(
            t.coinbase_tx_value_remaining,
            50 * 100_000_000 + 3 * 1_000,
            "subsidy and the synthetic fees"
        );
        assert_eq!(
            t.merkle_path.len(),
            2,
            "three transactions after the coinbase"
        );

        let txs = request_transactions(&mut a, t.template_id)
            .await
            .expect("transaction data");
        assert_eq!(txs.len(), 3);
        assert_eq!(
            request_transactions(&mut a, t.template_id + 1000).await,
            Err("template-id-not-found".to_owned())
        );
        // Once per template and client: each answer copies every transaction.
        assert_eq!(
            request_transactions(&mut a, t.template_id).await,
            Err("transaction-data-already-sent".to_owned())
        );

        let block = solve(&t, &p, &txs);
        submit_solution(&mut a, t.template_id, &block).await;

        // Every client moves to the new tip: a future template and its SetNewPrevHash.
        let (t2, p2) = next_tip(&mut a).await;
        assert_eq!(
            BlockHash::from_byte_array(p2.prev_hash.to_array()),
            block.block_hash()
        );
        assert!(t2.template_id > t.template_id);
        let (t2b, p2b) = next_tip(&mut b).await;
        assert_eq!(t2b.template_id, t2.template_id);
        assert_eq!(p2b.prev_hash.to_array(), p2.prev_hash.to_array());
        assert_eq!(tp.node.height(), HISTORY_HEIGHT + 1);
        assert_eq!(
            t2.coinbase_prefix.as_bytes(),
            &[0x5c][..],
            "BIP34 height 12 (OP_12): the second block above the node's history"
        );

        // The old template is stale now.
        assert_eq!(
            request_transactions(&mut b, t.template_id).await,
            Err("stale-template-id".to_owned())
        );
        // A second block on the new tip, from the other client.
        let txs2 = request_transactions(&mut b, t2.template_id)
            .await
            .expect("transaction data");
        let block2 = solve(&t2, &p2, &txs2);
        submit_solution(&mut b, t2.template_id, &block2).await;
        let (_, p3) = next_tip(&mut a).await;
        assert_eq!(
            BlockHash::from_byte_array(p3.prev_hash.to_array()),
            block2.block_hash()
        );
        assert_eq!(tp.node.height(), HISTORY_HEIGHT + 2);
        tp.tp.stop().await;
    })
    .await;
}

/// The embedded chain behind a node that cannot take the first `busy` blocks offered: it
/// answers that it cannot now (unreachable, throttling), or with `hangs` never answers at
/// all. Counts the offers.
struct Reluctant {
    inner: Arc<EmbeddedNode>,
    busy: AtomicU32,
    hangs: bool,
    offers: AtomicU32,
}

/// A template provider in front of a [`Reluctant`] node.
async fn start_tp_reluctant(busy: u32, hangs: bool) -> (Tp, Arc<Reluctant>) {
    let node = Arc::new(std::sync::OnceLock::<Arc<Reluctant>>::new());
    let slot = node.clone();
    let tp = start_tp_on(2, move |inner| {
        let node = Arc::new(Reluctant {
            inner,
            busy: AtomicU32::new(busy),
            hangs,
            offers: AtomicU32::new(0),
        });
        let _ = slot.set(node.clone());
        node
    })
    .await;
    let node = node.get().expect("made by start_tp_on").clone();
    (tp, node)
}

impl NodeApi for Reluctant {
    fn get_block_template(&self) -> NodeFuture<'_, Result<BlockTemplate, NodeError>> {
        self.inner.get_block_template()
    }

    fn submit_block(&self, block: Block) -> NodeFuture<'_, Result<(), NodeError>> {
        self.offers.fetch_add(1, Ordering::SeqCst);
        if self
            .busy
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            if self.hangs {
                return Box::pin(std::future::pending());
            }
            return Box::pin(async { Err(NodeError::Unavailable("throttled".into())) });
        }
        self.inner.submit_block(block)
    }

    fn chain(&self) -> NodeFuture<'_, Result<NodeChain, NodeError>> {
        self.inner.chain()
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ChainEvent> {
        self.inner.subscribe()
    }
}

/// A solved block the node cannot take at once is offered again (07: the Template Provider
/// MUST attempt to broadcast blocks mined on its work) until it takes it: the chain moves and
/// every client gets the new tip. Before, one "not now" lost the block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_solution_the_node_cannot_take_yet_is_offered_again() {
    bounded(async {
        let (tp, busy) = start_tp_reluctant(2, false).await;
        let (mut c, t, p) = ready_client(&tp).await;
        let txs = request_transactions(&mut c, t.template_id).await.unwrap();
        let block = solve(&t, &p, &txs);
        submit_solution(&mut c, t.template_id, &block).await;
        let (_, p2) = next_tip(&mut c).await;
        assert_eq!(
            BlockHash::from_byte_array(p2.prev_hash.to_array()),
            block.block_hash()
        );
        assert_eq!(tp.node.height(), HISTORY_HEIGHT + 1);
        assert_eq!(busy.offers.load(Ordering::SeqCst), 3);
        tp.tp.stop().await;
    })
    .await;
}

/// A solved block is on disk (`DATA_DIR/blocks/pending`) before the node is asked for it, and
/// offered once however often the client sends it; a stop waits for the first offer at most
/// `FIRST_OFFER_LIMIT` (the node here never answers), leaves the file, and the provider's next
/// start offers it again and the node's verdict moves the file. Before, the offers lived in
/// memory only and a stop lost the block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_solution_left_pending_at_a_stop_is_offered_again_at_the_next_start() {
    bounded(async {
        let (tp, node) = start_tp_reluctant(u32::MAX, true).await;
        let (mut c, t, p) = ready_client(&tp).await;
        let txs = request_transactions(&mut c, t.template_id).await.unwrap();
        let block = solve(&t, &p, &txs);
        submit_solution(&mut c, t.template_id, &block).await;
        let dir = tp._dir.path().to_path_buf();
        let file = |state: &str| {
            dir.join("blocks")
                .join(state)
                .join(format!("{}.hex", block.block_hash()))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !file("pending").exists() || node.offers.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the block was not saved and offered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Sent again while its first offer waits for the node: not offered a second time.
        submit_solution(&mut c, t.template_id, &block).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(node.offers.load(Ordering::SeqCst), 1);
        // The stop waits for the first offer's limit, not for the node, and leaves the file.
        tokio::time::timeout(Duration::from_secs(15), tp.tp.stop())
            .await
            .expect("a stop does not wait for the node past the first offer's limit");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            node.offers.load(Ordering::SeqCst),
            1,
            "no offer after the stop"
        );
        assert_eq!(tp.node.height(), HISTORY_HEIGHT);
        assert!(file("pending").exists());

        let again = TemplateProvider::new(
            TemplateProviderConfig {
                listen_addr: "127.0.0.1:0".parse().unwrap(),
                data_dir: dir.clone(),
                ..Default::default()
            },
            tp.node.clone(),
        )
        .expect("template provider");
        again.start().await.expect("start");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !file("submitted").exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pending block was not offered again"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(tp.node.height(), HISTORY_HEIGHT + 1);
        assert_eq!(tp.node.tip(), block.block_hash());
        assert!(!file("pending").exists());
        again.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_templates_still_carry_the_witness_commitment() {
    bounded(async {
        let tp = start_tp(0).await;
        let (mut c, t, p) = ready_client(&tp).await;
        assert_eq!(t.coinbase_tx_outputs_count, 1);
        assert!(t.merkle_path.is_empty());
        let txs = request_transactions(&mut c, t.template_id).await.unwrap();
        assert!(txs.is_empty());
        let block = solve(&t, &p, &txs);
        submit_solution(&mut c, t.template_id, &block).await;
        let (_, p2) = next_tip(&mut c).await;
        assert_eq!(
            BlockHash::from_byte_array(p2.prev_hash.to_array()),
            block.block_hash()
        );
        tp.tp.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_is_refused_with_the_spec_error_code() {
    bounded(async {
        let tp = start_tp(0).await;
        for protocol in [Protocol::MiningProtocol, Protocol::JobDeclarationProtocol] {
            let mut c = SriConn::connect(tp.addr, &tp.key).await.unwrap();
            c.send(setup_message(protocol)).await.unwrap();
            match c.recv().await.unwrap() {
                AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(e)) => {
                    assert_eq!(e.error_code.as_bytes(), b"unsupported-protocol");
                    assert_eq!(e.flags, 0);
                }
                other => panic!("expected SetupConnection.Error, got {other:?}"),
            }
            expect_closed(
                c.stream(),
                Duration::from_secs(5),
                "after SetupConnection.Error",
            )
            .await;
        }
        tp.tp.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_the_connection_and_others_are_still_served() {
    bounded(async {
        let tp = start_tp(1).await;
        let (mut honest, t, _) = ready_client(&tp).await;

        // Bytes that are not Noise after the handshake.
        let mut c = SriConn::connect(tp.addr, &tp.key).await.unwrap();
        use tokio::io::AsyncWriteExt;
        c.stream().write_all(&[0xa5; 300]).await.unwrap();
        expect_closed(
            c.stream(),
            Duration::from_secs(5),
            "after garbage ciphertext",
        )
        .await;

        // A well-encrypted frame that is not a message.
        let mut c = SriConn::connect(tp.addr, &tp.key).await.unwrap();
        c.send_frame(raw_frame(0, 0x71, 3, &[1, 2, 3]))
            .await
            .unwrap();
        expect_closed(
            c.stream(),
            Duration::from_secs(5),
            "after a truncated message",
        )
        .await;

        // A template message before SetupConnection.
        let mut c = SriConn::connect(tp.addr, &tp.key).await.unwrap();
        c.send(td(TemplateDistribution::RequestTransactionData(
            RequestTransactionData { template_id: 1 },
        )))
        .await
        .unwrap();
        expect_closed(c.stream(), Duration::from_secs(5), "a message before setup").await;

        // A garbage handshake (fewer than 64 bytes, then silence) ends at the handshake
        // deadline; meanwhile others are served.
        let mut raw = tokio::net::TcpStream::connect(tp.addr).await.unwrap();
        raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();

        // A new client is still served, and the honest one still gets answers.
        let (_, t2, _) = ready_client(&tp).await;
        assert_eq!(t2.template_id, t.template_id);
        assert_eq!(
            request_transactions(&mut honest, t.template_id)
                .await
                .map(|v| v.len()),
            Ok(1)
        );
        expect_closed(&mut raw, Duration::from_secs(15), "a garbage handshake").await;
        tp.tp.stop().await;
    })
    .await;
}
