//! The part of blvm-node's module IPC protocol (`blvm_node::module::ipc::protocol`, node
//! 0.1.83) the pool speaks, as plain values. Sans-IO: bytes of one frame in, a message out, and
//! back. The node's own types, as we declare them for bincode, are in `wire.rs`; here they are
//! mapped to the pool's values with checked conversions (blvm widens Bitcoin's integers to 64
//! bits: a number that does not fit back is an error, never truncated).
//!
//! Variant indices are the node's, counted in its source and checked against vectors the node's
//! own types made (`tests/data/blvm_ipc_vectors.txt`). Whatever else the node may send (other
//! responses, events, invocations) decodes to [`Incoming::Other`] with what little we must
//! answer, never to an error that would drop the connection.

use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, BlockHash, CompactTarget, ScriptBuf, Sequence, Transaction, TxIn, TxOut};

pub use super::codec::DecodeError;
use super::codec::{decode, encode};
pub use super::wire::EventType;
use super::wire::{self, MessageType, Outgoing, RequestPayload};
use crate::node::BlockTemplate;

/// Correlation id pairing a request with its response.
pub type CorrelationId = u64;

/// The events the pool subscribes to: the seed's list plus the chain events that are the only
/// reliable news of a new tip (the node publishes `BlockTemplateUpdated` only when someone
/// calls getblocktemplate).
pub const SUBSCRIBED_EVENTS: [EventType; 6] = [
    EventType::NewBlock,
    EventType::BlockDisconnected,
    EventType::ChainReorg,
    EventType::BlockMined,
    EventType::BlockTemplateUpdated,
    EventType::MiningDifficultyChanged,
];

/// An event the pool publishes to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishedEvent {
    /// New work went out to the miners.
    MiningJobCreated {
        /// The pool-wide work id.
        job_id: String,
        /// The tip it builds on (internal byte order).
        prev_hash: [u8; 32],
        /// The height of the block it makes.
        height: u64,
    },
    /// A share was accepted.
    ShareSubmitted {
        /// The pool-wide work id.
        job_id: String,
        /// The share's header hash (internal byte order).
        share_hash: [u8; 32],
        /// The channel's user identity.
        miner_id: Option<String>,
    },
}

/// A request from the pool to the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// The first message: who we are.
    Handshake {
        /// MODULE_ID from the node.
        module_id: String,
        /// MODULE_NAME from the node.
        module_name: String,
        /// Our version.
        version: String,
    },
    /// Events we want.
    SubscribeEvents(Vec<EventType>),
    /// A template for the next block, with the node's mempool transactions.
    GetBlockTemplate,
    /// A template for the next block with no transactions but the coinbase
    /// (GetBlockTemplateDeclared with no txids): its coinbase value is the subsidy alone.
    GetCoinbaseOnlyTemplate,
    /// A solved block.
    SubmitBlock(bitcoin::Block),
    /// Whether the node has a block's header (internal byte order hash).
    GetBlockHeader([u8; 32]),
    /// The best chain's tip and height.
    GetChainInfo,
    /// The best chain's block at a height.
    GetBlockByHeight(u64),
    /// An event for the node's other modules.
    PublishEvent(PublishedEvent),
}

/// A log line sent to the node (it prints it in its own log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// 0 trace .. 4 error, the node's `LogLevel` order.
    pub level: u8,
    /// MODULE_ID.
    pub module_id: String,
    /// The text.
    pub message: String,
    /// Component.
    pub target: String,
    /// Unix seconds.
    pub timestamp: u64,
}

/// Encodes one request frame body.
pub fn encode_request(correlation_id: CorrelationId, req: &Request) -> Vec<u8> {
    // The pool builds its own coinbase and takes only the value from the node's: rules
    // ["segwit"], no coinbase script or address.
    const RULES: &[&str] = &["segwit"];
    // GetBlockTemplateDeclared needs one coinbase output (value 0: the node puts the reward
    // there); an OP_RETURN will do.
    const OP_RETURN_OUTPUT: &[(i64, &[u8])] = &[(0, &[0x6a])];
    let (request_type, payload) = match req {
        Request::Handshake {
            module_id,
            module_name,
            version,
        } => (
            MessageType::Handshake,
            RequestPayload::Handshake(wire::Handshake {
                module_id,
                module_name,
                version,
            }),
        ),
        Request::SubscribeEvents(event_types) => (
            MessageType::SubscribeEvents,
            RequestPayload::SubscribeEvents(wire::SubscribeEvents { event_types }),
        ),
        Request::GetBlockTemplate => (
            MessageType::GetBlockTemplate,
            RequestPayload::GetBlockTemplate(wire::GetBlockTemplate {
                rules: RULES,
                coinbase_script: None,
                coinbase_address: None,
            }),
        ),
        Request::GetCoinbaseOnlyTemplate => (
            MessageType::GetBlockTemplateDeclared,
            RequestPayload::GetBlockTemplateDeclared(wire::GetBlockTemplateDeclared {
                rules: RULES,
                coinbase_script: None,
                coinbase_outputs: OP_RETURN_OUTPUT,
                declared_txids: &[],
            }),
        ),
        Request::GetBlockHeader(hash) => (
            MessageType::GetBlockHeader,
            RequestPayload::GetBlockHeader(wire::HashOf { hash: *hash }),
        ),
        Request::GetChainInfo => (MessageType::GetChainInfo, RequestPayload::GetChainInfo(())),
        Request::GetBlockByHeight(height) => (
            MessageType::GetBlockByHeight,
            RequestPayload::GetBlockByHeight(wire::HeightOf { height: *height }),
        ),
        Request::SubmitBlock(block) => (
            MessageType::SubmitBlock,
            RequestPayload::SubmitBlock(wire::SubmitBlock {
                block: wire_block(block),
            }),
        ),
        Request::PublishEvent(event) => {
            let (event_type, payload) = match event {
                PublishedEvent::MiningJobCreated {
                    job_id,
                    prev_hash,
                    height,
                } => (
                    EventType::MiningJobCreated,
                    wire::PublishedPayload::MiningJobCreated(wire::MiningJobCreated {
                        job_id,
                        prev_hash,
                        height: *height,
                    }),
                ),
                PublishedEvent::ShareSubmitted {
                    job_id,
                    share_hash,
                    miner_id,
                } => (
                    EventType::ShareSubmitted,
                    wire::PublishedPayload::ShareSubmitted(wire::ShareSubmitted {
                        job_id,
                        share_hash,
                        miner_id: miner_id.as_deref(),
                    }),
                ),
            };
            (
                MessageType::PublishEvent,
                RequestPayload::PublishEvent(wire::PublishEvent {
                    event_type,
                    payload,
                }),
            )
        }
    };
    encode(&Outgoing::Request(wire::RequestMessage {
        correlation_id,
        request_type,
        payload,
    }))
}

/// Encodes a log message frame body.
pub fn encode_log(line: &LogLine) -> Vec<u8> {
    let level = match line.level {
        0 => wire::LogLevel::Trace,
        1 => wire::LogLevel::Debug,
        2 => wire::LogLevel::Info,
        3 => wire::LogLevel::Warn,
        _ => wire::LogLevel::Error,
    };
    encode(&Outgoing::Log(wire::LogMessage {
        level,
        module_id: &line.module_id,
        message: &line.message,
        target: &line.target,
        timestamp: line.timestamp,
    }))
}

/// Encodes the answer to a node invocation we do not serve (CLI or RPC dispatch).
pub fn encode_invocation_refusal(correlation_id: CorrelationId, error: &str) -> Vec<u8> {
    encode(&Outgoing::InvocationResult(wire::InvocationResultMessage {
        correlation_id,
        success: false,
        payload: None,
        error: Some(error),
    }))
}

/// blvm's `Block`: header fields widened to its integer types, transactions without witnesses
/// (the node's IPC block type has no place for them).
fn wire_block(block: &bitcoin::Block) -> wire::Block {
    let h = &block.header;
    wire::Block {
        header: wire::BlockHeader {
            version: h.version.to_consensus().into(),
            prev_block_hash: h.prev_blockhash.to_byte_array(),
            merkle_root: h.merkle_root.to_byte_array(),
            timestamp: h.time.into(),
            bits: h.bits.to_consensus().into(),
            nonce: h.nonce.into(),
        },
        transactions: block.txdata.iter().map(wire_transaction).collect(),
    }
}

fn wire_transaction(tx: &Transaction) -> wire::Transaction {
    wire::Transaction {
        // blvm's version is a u64: the 4 consensus bytes as an unsigned number.
        version: u64::from(tx.version.0 as u32),
        inputs: tx
            .input
            .iter()
            .map(|i| wire::TransactionInput {
                prevout: wire::OutPoint {
                    hash: i.previous_output.txid.to_byte_array(),
                    index: i.previous_output.vout,
                },
                sequence: i.sequence.0.into(),
                script_sig: i.script_sig.to_bytes(),
            })
            .collect(),
        outputs: tx
            .output
            .iter()
            .map(|o| wire::TransactionOutput {
                // Amounts fit in i64 (21e14 sat at most; rust-bitcoin's `Amount` is a u64 we
                // never fill beyond that).
                value: i64::try_from(o.value.to_sat()).unwrap_or(i64::MAX),
                script_pubkey: o.script_pubkey.to_bytes(),
            })
            .collect(),
        lock_time: tx.lock_time.to_consensus_u32().into(),
    }
}

/// What the node's `SubmitBlockResult` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitResult {
    /// Accepted.
    Accepted,
    /// Refused, with the node's reason.
    Rejected(String),
    /// The node already has it.
    Duplicate,
}

/// The payload of a response, as far as the pool cares.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseBody {
    /// Handshake accepted; the node's version.
    HandshakeAck(String),
    /// Subscription accepted.
    SubscribeAck,
    /// A template, already in the pool's form.
    BlockTemplate(BlockTemplate),
    /// The fate of a submitted block.
    SubmitBlock(SubmitResult),
    /// A published event was taken.
    EventPublished,
    /// Whether the node has the header asked for.
    HeaderKnown(bool),
    /// The best chain's tip (internal byte order) and height.
    ChainInfo {
        /// The tip's hash.
        tip_hash: [u8; 32],
        /// Its height.
        height: u64,
    },
    /// The hash of the best chain's block at the height asked, `None` above the tip.
    BlockAtHeight(Option<bitcoin::BlockHash>),
    /// The request failed; the node's message.
    Error(String),
    /// A payload we never ask for (variant index).
    Other(u32),
}

/// A chain event from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEventMsg {
    /// A block joined the best chain.
    NewBlock {
        /// Its hash (internal byte order).
        hash: [u8; 32],
        /// Its height.
        height: u64,
    },
    /// A block left the best chain.
    BlockDisconnected {
        /// Its hash.
        hash: [u8; 32],
        /// Its height.
        height: u64,
    },
    /// The best chain was reorganised.
    ChainReorg {
        /// The new tip.
        new_tip: [u8; 32],
    },
    /// A block was mined.
    BlockMined {
        /// Its hash.
        hash: [u8; 32],
        /// Its height.
        height: u64,
    },
    /// The node made a new template.
    BlockTemplateUpdated,
    /// The difficulty changed.
    MiningDifficultyChanged,
    /// Any other event (its payload variant index).
    Other(u32),
}

/// A message from the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The answer to request `correlation_id`.
    Response {
        /// The request's id.
        correlation_id: CorrelationId,
        /// What it says.
        body: ResponseBody,
    },
    /// A chain event.
    Event(NodeEventMsg),
    /// The node asks us to run a CLI command or RPC method: we answer that we have none.
    Invocation(CorrelationId),
    /// Something only modules send (request, log ...), or a kind we do not know (its index).
    Other(u32),
}

/// Whether the node's refusal of a SubmitBlock says it cannot connect blocks over its socket
/// at all (blvm-node 0.1.83: "submitblock: protocol engine is required to connect the block").
/// The node gives no code for it, only this text: it is read here, once, at the boundary.
pub fn lacks_protocol_engine(node_message: &str) -> bool {
    node_message.contains("protocol engine is required")
}

/// Decodes one frame body from the node.
pub fn decode_incoming(bytes: &[u8]) -> Result<Incoming, DecodeError> {
    Ok(match decode::<wire::Incoming>(bytes)? {
        wire::Incoming::Response(r) => {
            let body = match (r.payload, r.error) {
                (Some(payload), _) => response_body(payload)?,
                (None, error) => {
                    ResponseBody::Error(error.unwrap_or_else(|| "no payload and no error".into()))
                }
            };
            let body = match body {
                // A failed response with a payload: say what the node said.
                ResponseBody::Error(_) => body,
                _ if !r.success => ResponseBody::Error(format!("request failed ({body:?})")),
                _ => body,
            };
            Incoming::Response {
                correlation_id: r.correlation_id,
                body,
            }
        }
        wire::Incoming::Event(e) => Incoming::Event(event(e.payload)),
        wire::Incoming::Invocation(i) => Incoming::Invocation(i.correlation_id),
        wire::Incoming::Other(index) => Incoming::Other(index),
    })
}

/// The correlation id of a response whose payload could not be decoded, if the frame starts
/// like a response (so its request can be failed at once instead of timing out).
pub fn response_correlation_id(bytes: &[u8]) -> Option<CorrelationId> {
    const RESPONSE: u32 = 1;
    match decode::<(u32, CorrelationId)>(bytes) {
        Ok((RESPONSE, id)) => Some(id),
        _ => None,
    }
}

fn response_body(payload: wire::ResponsePayload) -> Result<ResponseBody, DecodeError> {
    use wire::ResponsePayload as P;
    Ok(match payload {
        P::HandshakeAck(ack) => ResponseBody::HandshakeAck(ack.node_version),
        P::SubscribeAck(()) => ResponseBody::SubscribeAck,
        P::EventPublished(()) => ResponseBody::EventPublished,
        P::BlockHeader(header) => ResponseBody::HeaderKnown(header.is_some()),
        P::ChainInfo(info) => ResponseBody::ChainInfo {
            tip_hash: info.tip_hash,
            height: info.height,
        },
        P::BlockByHeight(block) => {
            ResponseBody::BlockAtHeight(block.map(|b| header_hash(&b.header)).transpose()?)
        }
        P::BlockTemplate(t) => ResponseBody::BlockTemplate(template(t)?),
        P::SubmitBlockResult(r) => ResponseBody::SubmitBlock(match r {
            wire::SubmitBlockResult::Accepted(()) => SubmitResult::Accepted,
            wire::SubmitBlockResult::Rejected(reason) => SubmitResult::Rejected(reason),
            wire::SubmitBlockResult::Duplicate(()) => SubmitResult::Duplicate,
        }),
        P::Other(index) => ResponseBody::Other(index),
    })
}

/// The hash of a header the node sent (blvm widens its integers to 64 bits: one that does
/// not fit Bitcoin's header is malformed, never truncated into another hash).
fn header_hash(h: &wire::BlockHeader) -> Result<bitcoin::BlockHash, DecodeError> {
    let narrow = |field: &str, v: u64| {
        u32::try_from(v).map_err(|_| DecodeError::Malformed(format!("header {field} {v}")))
    };
    let version = i32::try_from(h.version)
        .map_err(|_| DecodeError::Malformed(format!("header version {}", h.version)))?;
    Ok(bitcoin::block::Header {
        version: bitcoin::block::Version::from_consensus(version),
        prev_blockhash: bitcoin::BlockHash::from_byte_array(h.prev_block_hash),
        merkle_root: bitcoin::TxMerkleNode::from_byte_array(h.merkle_root),
        time: narrow("time", h.timestamp)?,
        bits: bitcoin::CompactTarget::from_consensus(narrow("bits", h.bits)?),
        nonce: narrow("nonce", h.nonce)?,
    }
    .block_hash())
}

fn event(payload: wire::EventPayload) -> NodeEventMsg {
    use wire::EventPayload as P;
    match payload {
        P::NewBlock(e) => NodeEventMsg::NewBlock {
            hash: e.block_hash,
            height: e.height,
        },
        P::BlockDisconnected(e) => NodeEventMsg::BlockDisconnected {
            hash: e.hash,
            height: e.height,
        },
        P::ChainReorg(e) => NodeEventMsg::ChainReorg { new_tip: e.new_tip },
        P::BlockMined(e) => NodeEventMsg::BlockMined {
            hash: e.block_hash,
            height: e.height,
        },
        P::BlockTemplateUpdated(_) => NodeEventMsg::BlockTemplateUpdated,
        P::MiningDifficultyChanged(_) => NodeEventMsg::MiningDifficultyChanged,
        P::Other(index) => NodeEventMsg::Other(index),
    }
}

fn narrow<T: TryFrom<u64>>(v: u64, what: &'static str) -> Result<T, DecodeError> {
    T::try_from(v).map_err(|_| DecodeError::Range(what))
}

fn transaction(tx: wire::Transaction) -> Result<Transaction, DecodeError> {
    let input = tx
        .inputs
        .into_iter()
        .map(|i| {
            Ok(TxIn {
                previous_output: bitcoin::OutPoint {
                    txid: bitcoin::Txid::from_byte_array(i.prevout.hash),
                    vout: i.prevout.index,
                },
                script_sig: ScriptBuf::from_bytes(i.script_sig),
                sequence: Sequence(narrow(i.sequence, "input sequence")?),
                witness: bitcoin::Witness::new(),
            })
        })
        .collect::<Result<_, DecodeError>>()?;
    let output = tx
        .outputs
        .into_iter()
        .map(|o| {
            let sats = u64::try_from(o.value)
                .ok()
                .filter(|v| *v <= Amount::MAX_MONEY.to_sat())
                .ok_or(DecodeError::Range("output value"))?;
            Ok(TxOut {
                value: Amount::from_sat(sats),
                script_pubkey: ScriptBuf::from_bytes(o.script_pubkey),
            })
        })
        .collect::<Result<_, DecodeError>>()?;
    let version: u32 = narrow(tx.version, "transaction version")?;
    let lock_time: u32 = narrow(tx.lock_time, "lock time")?;
    Ok(Transaction {
        // The 4 consensus bytes, read back as rust-bitcoin's signed number.
        version: bitcoin::transaction::Version(version as i32),
        lock_time: bitcoin::absolute::LockTime::from_consensus(lock_time),
        input,
        output,
    })
}

/// blvm's `BlockTemplate` → ours: tip, bits, height and time from its header, the coinbase
/// value from its coinbase's outputs (subsidy plus fees), its transactions as they are.
fn template(t: wire::BlockTemplate) -> Result<BlockTemplate, DecodeError> {
    let coinbase = transaction(t.coinbase_tx)?;
    let transactions = t
        .transactions
        .into_iter()
        .map(transaction)
        .collect::<Result<Vec<_>, _>>()?;
    let time: u32 = narrow(t.timestamp.max(t.header.timestamp), "template time")?;
    let coinbase_value = coinbase
        .output
        .iter()
        .try_fold(Amount::ZERO, |sum, o| sum.checked_add(o.value))
        .filter(|v| *v <= Amount::MAX_MONEY)
        .ok_or(DecodeError::Range("coinbase value"))?;
    let version =
        i32::try_from(t.header.version).map_err(|_| DecodeError::Range("header version"))?;
    Ok(BlockTemplate {
        version: bitcoin::block::Version::from_consensus(version),
        prev_hash: BlockHash::from_byte_array(t.header.prev_block_hash),
        bits: CompactTarget::from_consensus(narrow(t.header.bits, "header bits")?),
        height: narrow(t.height, "template height")?,
        min_time: time,
        cur_time: time,
        coinbase_value,
        transactions,
        // blvm's template gives no fee or sigop cost per transaction.
        transaction_costs: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vector the node made (tests/data/blvm_ipc_vectors.txt).
    fn vector(name: &str) -> Vec<u8> {
        let line = include_str!("../../../tests/data/blvm_ipc_vectors.txt")
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .expect("vector");
        (0..line.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn numbers_that_do_not_fit_bitcoins_fields_are_errors_not_truncated() {
        let good = vector("resp_template");
        assert!(matches!(
            decode_incoming(&good),
            Ok(Incoming::Response {
                body: ResponseBody::BlockTemplate(_),
                ..
            })
        ));
        // The template's tail: height (u64), timestamp (u64), then the response's error tag.
        let height_at = good.len() - 1 - 8 - 8;
        assert_eq!(good[height_at..height_at + 8], 101u64.to_le_bytes());
        let mut high = good.clone();
        high[height_at + 4] = 1;
        assert_eq!(
            decode_incoming(&high),
            Err(DecodeError::Range("template height"))
        );
        let mut late = good.clone();
        late[height_at + 8 + 4] = 1;
        assert_eq!(
            decode_incoming(&late),
            Err(DecodeError::Range("template time"))
        );
    }

    #[test]
    fn a_response_we_cannot_read_still_names_its_request() {
        let mut broken = vector("resp_template");
        broken.truncate(40);
        assert!(decode_incoming(&broken).is_err());
        assert_eq!(response_correlation_id(&broken), Some(3));
        assert_eq!(response_correlation_id(&vector("ev_new_block")), None);
        assert_eq!(response_correlation_id(&[1, 0]), None);
    }

    #[test]
    fn the_nodes_refusal_for_want_of_a_protocol_engine_is_recognised() {
        assert!(lacks_protocol_engine(
            "submitblock: protocol engine is required to connect the block"
        ));
        assert!(!lacks_protocol_engine("bad-prevblk"));
    }
}
