//! Our declaration of blvm-node's module IPC messages against bytes blvm-node's own serde
//! types and bincode made (tests/data/blvm_ipc_vectors.txt, from tools/regtest-node's
//! ipc_vectors binary): every request we send byte-for-byte, every response and event we read
//! decoded to the values the node put in. Plus hostile frames: typed errors, no panic.

#[path = "common/ipc_vectors.rs"]
mod ipc_vectors;

use bitcoin::hashes::Hash;
use bitcoin::{Amount, BlockHash, CompactTarget, ScriptBuf, Sequence, Transaction, TxIn, TxOut};
use blvm_stratum_v2::node::module::protocol::{
    self, EventType, Incoming, LogLine, NodeEventMsg, PublishedEvent, Request, ResponseBody,
    SUBSCRIBED_EVENTS, SubmitResult,
};
use ipc_vectors::{vector, vectors};
use proptest::prelude::*;

/// The transaction every vector uses.
fn sample_tx() -> Transaction {
    Transaction {
        version: bitcoin::transaction::Version(2),
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: bitcoin::OutPoint {
                txid: bitcoin::Txid::all_zeros(),
                vout: 0xffff_ffff,
            },
            script_sig: ScriptBuf::from_bytes(vec![1, 2, 3]),
            sequence: Sequence(0xffff_ffff),
            witness: bitcoin::Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(5_000_000_000),
            script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
        }],
    }
}

fn sample_block() -> bitcoin::Block {
    bitcoin::Block {
        header: bitcoin::block::Header {
            version: bitcoin::block::Version::from_consensus(0x2000_0000),
            prev_blockhash: BlockHash::from_byte_array([1; 32]),
            merkle_root: bitcoin::TxMerkleNode::from_byte_array([2; 32]),
            time: 1_700_000_000,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: 7,
        },
        txdata: vec![sample_tx()],
    }
}

#[test]
fn requests_are_byte_identical_to_the_nodes_types() {
    let cases: Vec<(&str, u64, Request)> = vec![
        (
            "handshake",
            1,
            Request::Handshake {
                module_id: "m-1".into(),
                module_name: "blvm-stratum-v2".into(),
                version: "0.1.0".into(),
            },
        ),
        (
            "subscribe",
            2,
            Request::SubscribeEvents(SUBSCRIBED_EVENTS.to_vec()),
        ),
        ("get_block_template", 3, Request::GetBlockTemplate),
        (
            "get_coinbase_only_template",
            7,
            Request::GetCoinbaseOnlyTemplate,
        ),
        ("get_block_header", 8, Request::GetBlockHeader([9; 32])),
        ("get_chain_info", 9, Request::GetChainInfo),
        ("get_block_by_height", 10, Request::GetBlockByHeight(77)),
        ("submit_block", 4, Request::SubmitBlock(sample_block())),
        (
            "publish_job",
            5,
            Request::PublishEvent(PublishedEvent::MiningJobCreated {
                job_id: "7".into(),
                prev_hash: [3; 32],
                height: 101,
            }),
        ),
        (
            "publish_share",
            6,
            Request::PublishEvent(PublishedEvent::ShareSubmitted {
                job_id: "7".into(),
                share_hash: [4; 32],
                miner_id: Some("alice".into()),
            }),
        ),
    ];
    for (name, id, req) in cases {
        assert_eq!(
            protocol::encode_request(id, &req),
            vector(name),
            "{name} differs from blvm-node's encoding"
        );
    }
    let log = LogLine {
        level: 2,
        module_id: "m-1".into(),
        message: "hello".into(),
        target: "blvm-stratum-v2".into(),
        timestamp: 1_700_000_000,
    };
    assert_eq!(protocol::encode_log(&log), vector("log"));
}

#[test]
fn subscribed_event_types_are_the_nodes() {
    // The subscribe vector lists NewBlock, BlockDisconnected, ChainReorg, BlockMined,
    // BlockTemplateUpdated, MiningDifficultyChanged in this order.
    assert_eq!(
        SUBSCRIBED_EVENTS,
        [
            EventType::NewBlock,
            EventType::BlockDisconnected,
            EventType::ChainReorg,
            EventType::BlockMined,
            EventType::BlockTemplateUpdated,
            EventType::MiningDifficultyChanged,
        ]
    );
}

fn response(name: &str) -> (u64, ResponseBody) {
    match protocol::decode_incoming(&vector(name)) {
        Ok(Incoming::Response {
            correlation_id,
            body,
        }) => (correlation_id, body),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn responses_decode_to_what_the_node_sent() {
    assert_eq!(
        response("resp_handshake"),
        (1, ResponseBody::HandshakeAck("0.1.83".into()))
    );
    assert_eq!(response("resp_subscribe"), (2, ResponseBody::SubscribeAck));
    assert_eq!(
        response("resp_accepted"),
        (4, ResponseBody::SubmitBlock(SubmitResult::Accepted))
    );
    assert_eq!(
        response("resp_rejected"),
        (
            4,
            ResponseBody::SubmitBlock(SubmitResult::Rejected("bad-prevblk".into()))
        )
    );
    assert_eq!(
        response("resp_duplicate"),
        (4, ResponseBody::SubmitBlock(SubmitResult::Duplicate))
    );
    assert_eq!(
        response("resp_error"),
        (5, ResponseBody::Error("permission denied".into()))
    );
    assert_eq!(
        response("resp_event_published"),
        (6, ResponseBody::EventPublished)
    );
    assert_eq!(
        response("resp_header_none"),
        (8, ResponseBody::HeaderKnown(false))
    );
    assert_eq!(
        response("resp_header_some"),
        (8, ResponseBody::HeaderKnown(true))
    );
    assert_eq!(
        response("resp_chain_info"),
        (
            9,
            ResponseBody::ChainInfo {
                tip_hash: [7; 32],
                height: 123
            }
        )
    );
    assert_eq!(
        response("resp_block_by_height_none"),
        (10, ResponseBody::BlockAtHeight(None))
    );
    // The block's hash, computed by rust-bitcoin from the header blvm-node sent.
    let header = bitcoin::block::Header {
        version: bitcoin::block::Version::from_consensus(0x2000_0000),
        prev_blockhash: BlockHash::from_byte_array([1; 32]),
        merkle_root: bitcoin::TxMerkleNode::from_byte_array([2; 32]),
        time: 1_700_000_000,
        bits: bitcoin::CompactTarget::from_consensus(0x207f_ffff),
        nonce: 7,
    };
    assert_eq!(
        response("resp_block_by_height_some"),
        (10, ResponseBody::BlockAtHeight(Some(header.block_hash())))
    );

    let (id, body) = response("resp_template");
    assert_eq!(id, 3);
    let ResponseBody::BlockTemplate(t) = body else {
        panic!("not a template: {body:?}");
    };
    assert_eq!(t.prev_hash, BlockHash::from_byte_array([1; 32]));
    assert_eq!(t.bits, CompactTarget::from_consensus(0x207f_ffff));
    assert_eq!(t.version.to_consensus(), 0x2000_0000);
    assert_eq!(t.height, 101);
    assert_eq!(t.cur_time, 1_700_000_000);
    assert_eq!(t.coinbase_value, Amount::from_sat(5_000_000_000));
    assert_eq!(t.transactions, vec![sample_tx()]);
}

#[test]
fn events_decode_to_what_the_node_sent() {
    let event = |name: &str| match protocol::decode_incoming(&vector(name)) {
        Ok(Incoming::Event(e)) => e,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(
        event("ev_new_block"),
        NodeEventMsg::NewBlock {
            hash: [5; 32],
            height: 102
        }
    );
    assert_eq!(
        event("ev_block_disconnected"),
        NodeEventMsg::BlockDisconnected {
            hash: [6; 32],
            height: 102
        }
    );
    assert_eq!(
        event("ev_chain_reorg"),
        NodeEventMsg::ChainReorg { new_tip: [7; 32] }
    );
    assert_eq!(
        event("ev_block_mined"),
        NodeEventMsg::BlockMined {
            hash: [5; 32],
            height: 102
        }
    );
    assert_eq!(
        event("ev_template_updated"),
        NodeEventMsg::BlockTemplateUpdated
    );
    assert_eq!(
        event("ev_difficulty"),
        NodeEventMsg::MiningDifficultyChanged
    );
    // Not subscribed to, but harmless if it comes.
    assert_eq!(event("ev_new_transaction"), NodeEventMsg::Other(1));
}

#[test]
fn our_own_requests_read_back_as_something_else_not_a_crash() {
    // A module never receives requests; if one came, it is "other", not an error.
    assert_eq!(
        protocol::decode_incoming(&vector("handshake")),
        Ok(Incoming::Other(0))
    );
}

proptest! {
    /// Truncations and garbage give a typed error or a value, never a panic or a huge
    /// allocation.
    #[test]
    fn hostile_frames_never_panic(cut in 0usize..400, noise in proptest::collection::vec(any::<u8>(), 0..300)) {
        for (_, bytes) in vectors() {
            let n = cut.min(bytes.len());
            let _ = protocol::decode_incoming(&bytes[..n]);
            let mut flipped = bytes.clone();
            for (i, b) in noise.iter().enumerate() {
                if let Some(x) = flipped.get_mut(i * 7 % bytes.len().max(1)) {
                    *x ^= b;
                }
            }
            let _ = protocol::decode_incoming(&flipped);
        }
        let _ = protocol::decode_incoming(&noise);
    }
}
