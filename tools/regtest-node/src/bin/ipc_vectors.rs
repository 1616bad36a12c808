//! Golden vectors for blvm-node 0.1.83's module IPC messages, built from blvm-node's own types.
//!
//! ```text
//! cargo run --release --offline --manifest-path tools/regtest-node/Cargo.toml --bin ipc_vectors \
//!     > tests/data/blvm_ipc_vectors.txt
//! ```
//!
//! Prints a `#` comment line, then one line per case: `<name> <hex>`, where the hex is
//! `bincode::serialize(&ModuleMessage)` with bincode 1.3's default options, exactly as
//! blvm-node's `module/ipc/client.rs` and `server.rs` encode a frame's body (the frame itself is
//! a 4-byte big-endian length prefix, tokio's `LengthDelimitedCodec`, not included here).

use blvm_node::module::ipc::protocol::{
    EventMessage, EventPayload, LogLevel, LogMessage, MessageType, ModuleMessage, RequestMessage,
    RequestPayload, ResponseMessage, ResponsePayload,
};
use blvm_node::module::traits::{ChainInfo, EventType, SubmitBlockResult};
use blvm_node::{Block, BlockHeader, OutPoint, Transaction, TransactionInput, TransactionOutput};
use blvm_protocol::mining::BlockTemplate;
use blvm_protocol::pow::expand_target;

const REGENERATE: &str = "# regenerate: cargo run --release --offline --manifest-path \
                          tools/regtest-node/Cargo.toml --bin ipc_vectors > tests/data/blvm_ipc_vectors.txt";

fn header() -> BlockHeader {
    BlockHeader {
        version: 0x2000_0000,
        prev_block_hash: [1; 32],
        merkle_root: [2; 32],
        timestamp: 1_700_000_000,
        bits: 0x207f_ffff,
        nonce: 7,
    }
}

fn transaction() -> Transaction {
    Transaction {
        version: 2,
        inputs: blvm_node::tx_inputs![TransactionInput {
            prevout: OutPoint {
                hash: [0; 32],
                index: 0xffff_ffff,
            },
            sequence: 0xffff_ffff,
            script_sig: vec![1, 2, 3],
        }],
        outputs: blvm_node::tx_outputs![TransactionOutput {
            value: 5_000_000_000,
            script_pubkey: vec![0x51],
        }],
        lock_time: 0,
    }
}

fn request(correlation_id: u64, request_type: MessageType, payload: RequestPayload) -> ModuleMessage {
    ModuleMessage::Request(RequestMessage {
        correlation_id,
        request_type,
        payload,
    })
}

fn ok(correlation_id: u64, payload: ResponsePayload) -> ModuleMessage {
    ModuleMessage::Response(ResponseMessage {
        correlation_id,
        success: true,
        payload: Some(payload),
        error: None,
    })
}

fn event(event_type: EventType, payload: EventPayload) -> ModuleMessage {
    ModuleMessage::Event(EventMessage {
        event_type,
        payload,
    })
}

fn cases() -> Vec<(&'static str, ModuleMessage)> {
    let template = BlockTemplate {
        header: header(),
        coinbase_tx: transaction(),
        transactions: vec![transaction()],
        target: expand_target(0x207f_ffff).expect("0x207fffff expands"),
        height: 101,
        timestamp: 1_700_000_000,
    };
    vec![
        (
            "handshake",
            request(
                1,
                MessageType::Handshake,
                RequestPayload::Handshake {
                    module_id: "m-1".into(),
                    module_name: "blvm-stratum-v2".into(),
                    version: "0.1.0".into(),
                },
            ),
        ),
        (
            "subscribe",
            request(
                2,
                MessageType::SubscribeEvents,
                RequestPayload::SubscribeEvents {
                    event_types: vec![
                        EventType::NewBlock,
                        EventType::BlockDisconnected,
                        EventType::ChainReorg,
                        EventType::BlockMined,
                        EventType::BlockTemplateUpdated,
                        EventType::MiningDifficultyChanged,
                    ],
                },
            ),
        ),
        (
            "get_block_template",
            request(
                3,
                MessageType::GetBlockTemplate,
                RequestPayload::GetBlockTemplate {
                    rules: vec!["segwit".into()],
                    coinbase_script: None,
                    coinbase_address: None,
                },
            ),
        ),
        (
            "get_coinbase_only_template",
            request(
                7,
                MessageType::GetBlockTemplateDeclared,
                RequestPayload::GetBlockTemplateDeclared {
                    rules: vec!["segwit".into()],
                    coinbase_script: None,
                    coinbase_outputs: vec![(0, vec![0x6a])],
                    declared_txids: vec![],
                },
            ),
        ),
        (
            "submit_block",
            request(
                4,
                MessageType::SubmitBlock,
                RequestPayload::SubmitBlock {
                    block: Block::from_parts(header(), vec![transaction()].into_boxed_slice()),
                },
            ),
        ),
        (
            "publish_job",
            request(
                5,
                MessageType::PublishEvent,
                RequestPayload::PublishEvent {
                    event_type: EventType::MiningJobCreated,
                    payload: EventPayload::MiningJobCreated {
                        job_id: "7".into(),
                        prev_hash: [3; 32],
                        height: 101,
                    },
                },
            ),
        ),
        (
            "publish_share",
            request(
                6,
                MessageType::PublishEvent,
                RequestPayload::PublishEvent {
                    event_type: EventType::ShareSubmitted,
                    payload: EventPayload::ShareSubmitted {
                        job_id: "7".into(),
                        share_hash: [4; 32],
                        miner_id: Some("alice".into()),
                    },
                },
            ),
        ),
        (
            "log",
            ModuleMessage::Log(LogMessage {
                level: LogLevel::Info,
                module_id: "m-1".into(),
                message: "hello".into(),
                target: "blvm-stratum-v2".into(),
                timestamp: 1_700_000_000,
            }),
        ),
        (
            "resp_handshake",
            ok(
                1,
                ResponsePayload::HandshakeAck {
                    node_version: "0.1.83".into(),
                },
            ),
        ),
        ("resp_subscribe", ok(2, ResponsePayload::SubscribeAck)),
        ("resp_template", ok(3, ResponsePayload::BlockTemplate(template))),
        (
            "resp_accepted",
            ok(4, ResponsePayload::SubmitBlockResult(SubmitBlockResult::Accepted)),
        ),
        (
            "resp_rejected",
            ok(
                4,
                ResponsePayload::SubmitBlockResult(SubmitBlockResult::Rejected(
                    "bad-prevblk".into(),
                )),
            ),
        ),
        (
            "resp_duplicate",
            ok(4, ResponsePayload::SubmitBlockResult(SubmitBlockResult::Duplicate)),
        ),
        (
            "resp_error",
            ModuleMessage::Response(ResponseMessage {
                correlation_id: 5,
                success: false,
                payload: None,
                error: Some("permission denied".into()),
            }),
        ),
        ("resp_event_published", ok(6, ResponsePayload::EventPublished)),
        (
            "get_block_header",
            request(
                8,
                MessageType::GetBlockHeader,
                RequestPayload::GetBlockHeader { hash: [9; 32] },
            ),
        ),
        ("resp_header_none", ok(8, ResponsePayload::BlockHeader(None))),
        ("resp_header_some", ok(8, ResponsePayload::BlockHeader(Some(header())))),
        (
            "get_chain_info",
            request(9, MessageType::GetChainInfo, RequestPayload::GetChainInfo),
        ),
        (
            "resp_chain_info",
            ok(
                9,
                ResponsePayload::ChainInfo(ChainInfo {
                    tip_hash: [7; 32],
                    height: 123,
                    difficulty: 4.6e-10,
                    chain_work: 248,
                    is_synced: true,
                }),
            ),
        ),
        (
            "get_block_by_height",
            request(
                10,
                MessageType::GetBlockByHeight,
                RequestPayload::GetBlockByHeight { height: 77 },
            ),
        ),
        ("resp_block_by_height_none", ok(10, ResponsePayload::BlockByHeight(None))),
        (
            "resp_block_by_height_some",
            ok(
                10,
                ResponsePayload::BlockByHeight(Some(Block::from_parts(
                    header(),
                    vec![transaction()].into_boxed_slice(),
                ))),
            ),
        ),
        (
            "ev_new_block",
            event(
                EventType::NewBlock,
                EventPayload::NewBlock {
                    block_hash: [5; 32],
                    height: 102,
                },
            ),
        ),
        (
            "ev_block_disconnected",
            event(
                EventType::BlockDisconnected,
                EventPayload::BlockDisconnected {
                    hash: [6; 32],
                    height: 102,
                },
            ),
        ),
        (
            "ev_chain_reorg",
            event(
                EventType::ChainReorg,
                EventPayload::ChainReorg {
                    old_tip: [6; 32],
                    new_tip: [7; 32],
                },
            ),
        ),
        (
            "ev_block_mined",
            event(
                EventType::BlockMined,
                EventPayload::BlockMined {
                    block_hash: [5; 32],
                    height: 102,
                    miner_id: Some("x".into()),
                },
            ),
        ),
        (
            "ev_template_updated",
            event(
                EventType::BlockTemplateUpdated,
                EventPayload::BlockTemplateUpdated {
                    prev_hash: [5; 32],
                    height: 103,
                    tx_count: 3,
                },
            ),
        ),
        (
            "ev_difficulty",
            event(
                EventType::MiningDifficultyChanged,
                EventPayload::MiningDifficultyChanged {
                    old_difficulty: 1,
                    new_difficulty: 2,
                    height: 103,
                },
            ),
        ),
        (
            "ev_new_transaction",
            event(
                EventType::NewTransaction,
                EventPayload::NewTransaction { tx_hash: [8; 32] },
            ),
        ),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() {
    println!("{REGENERATE}");
    for (name, message) in cases() {
        let bytes = bincode::serialize(&message).expect("bincode serializes every case");
        // Each vector must decode back with blvm-node's own types, as the node's server does.
        let back: ModuleMessage = bincode::deserialize(&bytes).expect("round trip");
        assert_eq!(bincode::serialize(&back).unwrap(), bytes, "{name} round trip");
        println!("{name} {}", hex(&bytes));
    }
}
