//! The module client's behaviour on the socket, against a scripted node whose every reply is
//! bytes blvm-node's own types made (tests/data/blvm_ipc_vectors.txt, correlation ids patched
//! in): events arriving between a request and its answer, a stray answer, a refusal, the
//! socket dropping mid-request, reconnection with a fresh handshake and subscription.
//! The real node is in tests/node_module.rs.

#[path = "common/ipc_vectors.rs"]
mod ipc_vectors;

use std::path::Path;
use std::time::Duration;

use bitcoin::BlockHash;
use bitcoin::hashes::Hash;
use blvm_stratum_v2::node::module::{ModuleNode, ModuleSettings};
use blvm_stratum_v2::node::{ChainEvent, NodeApi, NodeError};
use ipc_vectors::vector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// A node-made response with its correlation id replaced (bytes 4..12 of a Response).
fn reply(name: &str, correlation_id: u64) -> Vec<u8> {
    let mut bytes = vector(name);
    bytes[4..12].copy_from_slice(&correlation_id.to_le_bytes());
    bytes
}

async fn read_frame(s: &mut UnixStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.expect("frame length");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.expect("frame body");
    body
}

async fn write_frame(s: &mut UnixStream, body: &[u8]) {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    s.write_all(&f).await.expect("write frame");
}

/// Reads one request: (correlation id, RequestPayload variant index).
async fn read_request(s: &mut UnixStream) -> (u64, u32) {
    let body = read_frame(s).await;
    assert_eq!(&body[..4], &[0, 0, 0, 0], "not a Request");
    let id = u64::from_le_bytes(body[4..12].try_into().expect("8 bytes"));
    let payload = u32::from_le_bytes(body[16..20].try_into().expect("4 bytes"));
    (id, payload)
}

/// Handshake and subscription, with an event slipped in before the subscription's answer.
async fn accept_module(listener: &UnixListener) -> UnixStream {
    let (mut s, _) = listener.accept().await.expect("module connects");
    let (id, kind) = read_request(&mut s).await;
    assert_eq!(kind, 0, "Handshake first");
    write_frame(&mut s, &reply("resp_handshake", id)).await;
    let (id, kind) = read_request(&mut s).await;
    assert_eq!(kind, 8, "then SubscribeEvents");
    write_frame(&mut s, &vector("ev_new_block")).await;
    write_frame(&mut s, &reply("resp_subscribe", id)).await;
    s
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("in time")
}

/// Until the client has read the subscription's answer.
async fn until_connected(node: &ModuleNode) {
    within(async {
        while !node.is_connected() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

fn settings(path: &Path) -> ModuleSettings {
    let mut s = ModuleSettings::new(path.to_path_buf(), "m-1".into(), "blvm-stratum-v2".into());
    s.request_timeout = Duration::from_secs(5);
    s.max_backoff = Duration::from_millis(100);
    s
}

#[tokio::test]
async fn requests_events_refusals_and_reconnection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let node = ModuleNode::new(settings(&path));
    let mut events = node.subscribe();

    let mut s = within(accept_module(&listener)).await;
    let served = tokio::spawn(async move {
        // The pool's own request: answer with a stray response first, events in between.
        let (id, kind) = read_request(&mut s).await;
        assert_eq!(kind, 66, "GetBlockTemplateDeclared (coinbase-only)");
        write_frame(&mut s, &vector("ev_block_mined")).await;
        write_frame(&mut s, &reply("resp_accepted", id + 1000)).await;
        write_frame(&mut s, &vector("ev_chain_reorg")).await;
        write_frame(&mut s, &reply("resp_template", id)).await;

        // Before a block, the client asks whether the node has it already: no.
        let (id, kind) = read_request(&mut s).await;
        assert_eq!(kind, 2, "GetBlockHeader");
        write_frame(&mut s, &reply("resp_header_none", id)).await;
        let (id, kind) = read_request(&mut s).await;
        assert_eq!(kind, 51, "SubmitBlock");
        write_frame(&mut s, &reply("resp_rejected", id)).await;

        // Take the next request and drop the connection without answering.
        let (_, kind) = read_request(&mut s).await;
        assert_eq!(kind, 66);
        drop(s);
    });

    until_connected(&node).await;
    let t = within(node.get_block_template()).await.expect("template");
    assert_eq!(t.prev_hash, BlockHash::from_byte_array([1; 32]));
    assert_eq!(t.height, 101);
    // The events the node sent around it, in order, as the pool sees them.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match within(events.recv()).await.expect("event") {
            ChainEvent::NewTip { hash, height } => seen.push((hash, height)),
            ChainEvent::NewTemplate | ChainEvent::Unreachable => {}
        }
    }
    assert_eq!(
        seen,
        vec![
            (BlockHash::from_byte_array([5; 32]), 102),
            (BlockHash::from_byte_array([5; 32]), 102)
        ]
    );

    let block = bitcoin::constants::genesis_block(bitcoin::Network::Regtest);
    assert_eq!(
        within(node.submit_block(block)).await,
        Err(NodeError::BlockRejected("bad-prevblk".into()))
    );

    let lost = within(node.get_block_template()).await;
    assert!(
        matches!(lost, Err(NodeError::Unavailable(_))),
        "a request cut off by the socket fails as Unavailable: {lost:?}"
    );
    served.await.expect("scripted node");

    // The client comes back by itself: handshake and subscription again, then requests work.
    let mut s = within(accept_module(&listener)).await;
    let serve_again = tokio::spawn(async move {
        loop {
            let (id, kind) = read_request(&mut s).await;
            assert_eq!(kind, 66);
            write_frame(&mut s, &reply("resp_template", id)).await;
        }
    });
    let t = within(async {
        loop {
            match node.get_block_template().await {
                Ok(t) => break t,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert_eq!(t.height, 101);
    assert!(node.is_connected());
    serve_again.abort();
}

#[tokio::test]
async fn no_node_means_unavailable_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = ModuleNode::new(settings(&dir.path().join("absent.sock")));
    let r = within(node.get_block_template()).await;
    assert!(matches!(r, Err(NodeError::Unavailable(_))), "{r:?}");
    assert!(!node.is_connected());
}

#[tokio::test]
async fn a_node_that_never_answers_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let mut s = ModuleSettings::new(path.clone(), "m-1".into(), "blvm-stratum-v2".into());
    s.request_timeout = Duration::from_millis(300);
    let node = ModuleNode::new(s);
    let _conn = within(accept_module(&listener)).await;
    until_connected(&node).await;
    // Silence: the pool's own request times out as Unavailable.
    let r = within(node.get_block_template()).await;
    assert!(matches!(r, Err(NodeError::Unavailable(_))), "{r:?}");
}

/// The node's reason `time-too-new` (the block's time more than two hours ahead of its clock)
/// is a refusal for now, typed apart from a rejection so that the pool submits the block again.
#[tokio::test]
async fn a_block_too_new_for_the_node_clock_is_typed_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let node = ModuleNode::new(settings(&path));
    let mut s = within(accept_module(&listener)).await;
    // blvm-node's refusal with its reason swapped: a bincode string is its u64 length, then
    // its bytes.
    let refusal = reply("resp_rejected", 0);
    let old_reason = [&11u64.to_le_bytes()[..], b"bad-prevblk"].concat();
    let at = refusal
        .windows(old_reason.len())
        .position(|w| w == old_reason)
        .expect("the reason in the vector");
    let new_reason = [&12u64.to_le_bytes()[..], b"time-too-new"].concat();
    let too_new = [
        &refusal[..at],
        &new_reason[..],
        &refusal[at + old_reason.len()..],
    ]
    .concat();
    let served = tokio::spawn(async move {
        let (id, kind) = read_request(&mut s).await;
        assert_eq!(kind, 2, "GetBlockHeader");
        write_frame(&mut s, &reply("resp_header_none", id)).await;
        let (id, kind) = read_request(&mut s).await;
        assert_eq!(kind, 51, "SubmitBlock");
        let mut answer = too_new;
        answer[4..12].copy_from_slice(&id.to_le_bytes());
        write_frame(&mut s, &answer).await;
        s
    });
    until_connected(&node).await;
    let block = bitcoin::constants::genesis_block(bitcoin::Network::Regtest);
    assert_eq!(
        within(node.submit_block(block)).await,
        Err(NodeError::BlockTooNewInTime("time-too-new".into()))
    );
    let _conn = served.await.expect("scripted node");
}

/// The node's network, as the module learns it: the socket has no call naming it, so the
/// client asks GetBlockHeader for each network's genesis block and takes the one the node has.
#[tokio::test]
async fn the_nodes_network_is_the_one_whose_genesis_block_it_has() {
    use blvm_stratum_v2::node::NodeChain;
    use blvm_stratum_v2::node::chain::genesis_hash;
    for has in [
        Some(bitcoin::Network::Regtest),
        Some(bitcoin::Network::Bitcoin),
        Some(bitcoin::Network::Signet),
        None,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let node = ModuleNode::new(settings(&path));
        let mut s = within(accept_module(&listener)).await;
        let known = has.map(|n| genesis_hash(n).to_byte_array());
        let served = tokio::spawn(async move {
            let mut asked = Vec::new();
            loop {
                let body = read_frame(&mut s).await;
                let id = u64::from_le_bytes(body[4..12].try_into().expect("8 bytes"));
                let kind = u32::from_le_bytes(body[16..20].try_into().expect("4 bytes"));
                assert_eq!(kind, 2, "GetBlockHeader");
                let hash: [u8; 32] = body[20..52].try_into().expect("32 bytes");
                asked.push(hash);
                let answer = if Some(hash) == known {
                    "resp_header_some"
                } else {
                    "resp_header_none"
                };
                write_frame(&mut s, &reply(answer, id)).await;
                if Some(hash) == known || asked.len() == 5 {
                    return asked;
                }
            }
        });
        until_connected(&node).await;
        let chain = within(node.chain()).await.expect("the node answers");
        let asked = served.await.expect("scripted node");
        match has {
            Some(n) => {
                assert_eq!(chain, NodeChain::Known(n));
                assert_eq!(asked.last(), Some(&genesis_hash(n).to_byte_array()));
            }
            None => {
                assert!(matches!(chain, NodeChain::Unknown(_)), "{chain:?}");
                assert_eq!(asked.len(), 5, "every known genesis asked for");
            }
        }
    }
}
