//! The part of blvm-node's module IPC protocol (`blvm_node::module::ipc::protocol`, node
//! 0.1.83) the pool speaks, as plain values with their bincode encodings. Sans-IO: bytes of one
//! frame in, a message out, and back.
//!
//! Variant indices are the node's, counted in its source (see `MESSAGE_TYPE` and friends) and
//! checked against vectors the node's own types made (`tests/data/blvm_ipc_vectors.txt`).
//! Whatever else the node may send (other responses, events, invocations) decodes to
//! [`Incoming::Other`] with what little we must answer, never to an error that would drop the
//! connection.

use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, BlockHash, CompactTarget, ScriptBuf, Sequence, Transaction, TxIn, TxOut};

use super::bincode::{DecodeError, Reader, Writer};
use crate::node::BlockTemplate;

/// Correlation id pairing a request with its response.
pub type CorrelationId = u64;

/// `ModuleMessage` variants.
mod message {
    pub const REQUEST: u32 = 0;
    pub const RESPONSE: u32 = 1;
    pub const EVENT: u32 = 2;
    pub const LOG: u32 = 3;
    pub const INVOCATION: u32 = 4;
    pub const INVOCATION_RESULT: u32 = 5;
}

/// `MessageType` variants (the request's kind, sent beside its payload).
mod message_type {
    pub const GET_BLOCK_HEADER: u32 = 1;
    pub const SUBSCRIBE_EVENTS: u32 = 7;
    pub const HANDSHAKE: u32 = 8;
    pub const PUBLISH_EVENT: u32 = 41;
    pub const GET_BLOCK_TEMPLATE: u32 = 50;
    pub const SUBMIT_BLOCK: u32 = 51;
    pub const GET_BLOCK_TEMPLATE_DECLARED: u32 = 72;
}

/// `RequestPayload` variants.
mod request {
    pub const HANDSHAKE: u32 = 0;
    pub const GET_BLOCK_HEADER: u32 = 2;
    pub const SUBSCRIBE_EVENTS: u32 = 8;
    pub const PUBLISH_EVENT: u32 = 41;
    pub const GET_BLOCK_TEMPLATE: u32 = 50;
    pub const SUBMIT_BLOCK: u32 = 51;
    pub const GET_BLOCK_TEMPLATE_DECLARED: u32 = 66;
}

/// `ResponsePayload` variants.
mod response {
    pub const HANDSHAKE_ACK: u32 = 0;
    pub const BLOCK_HEADER: u32 = 2;
    pub const SUBSCRIBE_ACK: u32 = 8;
    pub const EVENT_PUBLISHED: u32 = 39;
    pub const BLOCK_TEMPLATE: u32 = 46;
    pub const SUBMIT_BLOCK_RESULT: u32 = 47;
}

/// `EventPayload` variants (not the same numbers as `EventType`'s).
mod payload {
    pub const NEW_BLOCK: u32 = 0;
    pub const BLOCK_DISCONNECTED: u32 = 2;
    pub const CHAIN_REORG: u32 = 3;
    pub const BLOCK_MINED: u32 = 12;
    pub const BLOCK_TEMPLATE_UPDATED: u32 = 13;
    pub const MINING_DIFFICULTY_CHANGED: u32 = 14;
    pub const MINING_JOB_CREATED: u32 = 15;
    pub const SHARE_SUBMITTED: u32 = 16;
}

/// The node's `EventType`: what a module subscribes to and names when it publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A block was connected to the best chain.
    NewBlock,
    /// A transaction entered the mempool.
    NewTransaction,
    /// A block was disconnected from the best chain.
    BlockDisconnected,
    /// The best chain was reorganised.
    ChainReorg,
    /// A block was mined (through the node's mining interface).
    BlockMined,
    /// The node made a new block template (only when someone asks it for one).
    BlockTemplateUpdated,
    /// The network difficulty changed.
    MiningDifficultyChanged,
    /// The pool made new work (published by us).
    MiningJobCreated,
    /// The pool accepted a share (published by us).
    ShareSubmitted,
}

impl EventType {
    /// Its variant index in the node's `EventType`.
    pub fn index(self) -> u32 {
        match self {
            EventType::NewBlock => 0,
            EventType::NewTransaction => 1,
            EventType::BlockDisconnected => 2,
            EventType::ChainReorg => 3,
            EventType::BlockMined => 12,
            EventType::BlockTemplateUpdated => 13,
            EventType::MiningDifficultyChanged => 14,
            EventType::MiningJobCreated => 15,
            EventType::ShareSubmitted => 18,
        }
    }
}

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
    let mut w = Writer::new();
    w.variant(message::REQUEST).u64(correlation_id);
    match req {
        Request::Handshake {
            module_id,
            module_name,
            version,
        } => {
            w.variant(message_type::HANDSHAKE)
                .variant(request::HANDSHAKE)
                .str(module_id)
                .str(module_name)
                .str(version);
        }
        Request::SubscribeEvents(types) => {
            w.variant(message_type::SUBSCRIBE_EVENTS)
                .variant(request::SUBSCRIBE_EVENTS)
                .len(types.len());
            for t in types {
                w.variant(t.index());
            }
        }
        Request::GetBlockTemplate => {
            // rules ["segwit"], no coinbase script or address: the pool builds its own coinbase
            // and only takes the value from the node's.
            w.variant(message_type::GET_BLOCK_TEMPLATE)
                .variant(request::GET_BLOCK_TEMPLATE)
                .len(1)
                .str("segwit")
                .none()
                .none();
        }
        Request::GetCoinbaseOnlyTemplate => {
            // One coinbase output (value 0: the node puts the reward there), an OP_RETURN: the
            // node requires one; the pool builds its own coinbase and takes only the value.
            w.variant(message_type::GET_BLOCK_TEMPLATE_DECLARED)
                .variant(request::GET_BLOCK_TEMPLATE_DECLARED)
                .len(1)
                .str("segwit")
                .none()
                .len(1)
                .i64(0)
                .bytes(&[0x6a])
                .len(0);
        }
        Request::GetBlockHeader(hash) => {
            w.variant(message_type::GET_BLOCK_HEADER)
                .variant(request::GET_BLOCK_HEADER)
                .array(hash);
        }
        Request::SubmitBlock(block) => {
            w.variant(message_type::SUBMIT_BLOCK)
                .variant(request::SUBMIT_BLOCK);
            write_block(&mut w, block);
        }
        Request::PublishEvent(event) => {
            w.variant(message_type::PUBLISH_EVENT)
                .variant(request::PUBLISH_EVENT);
            match event {
                PublishedEvent::MiningJobCreated {
                    job_id,
                    prev_hash,
                    height,
                } => {
                    w.variant(EventType::MiningJobCreated.index())
                        .variant(payload::MINING_JOB_CREATED)
                        .str(job_id)
                        .array(prev_hash)
                        .u64(*height);
                }
                PublishedEvent::ShareSubmitted {
                    job_id,
                    share_hash,
                    miner_id,
                } => {
                    w.variant(EventType::ShareSubmitted.index())
                        .variant(payload::SHARE_SUBMITTED)
                        .str(job_id)
                        .array(share_hash)
                        .opt_str(miner_id.as_deref());
                }
            }
        }
    }
    w.into_bytes()
}

/// Encodes a log message frame body.
pub fn encode_log(line: &LogLine) -> Vec<u8> {
    let mut w = Writer::new();
    w.variant(message::LOG)
        .variant(line.level.min(4).into())
        .str(&line.module_id)
        .str(&line.message)
        .str(&line.target)
        .u64(line.timestamp);
    w.into_bytes()
}

/// Encodes the answer to a node invocation we do not serve (CLI or RPC dispatch).
pub fn encode_invocation_refusal(correlation_id: CorrelationId, error: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.variant(message::INVOCATION_RESULT)
        .u64(correlation_id)
        .u8(0) // success: false
        .none() // payload
        .some()
        .str(error);
    w.into_bytes()
}

/// blvm's `Block`: header fields widened to its integer types, transactions without witnesses
/// (the node's IPC block type has no place for them).
fn write_block(w: &mut Writer, block: &bitcoin::Block) {
    let h = &block.header;
    w.i64(h.version.to_consensus().into())
        .array(h.prev_blockhash.as_byte_array())
        .array(h.merkle_root.as_byte_array())
        .u64(h.time.into())
        .u64(h.bits.to_consensus().into())
        .u64(h.nonce.into())
        .len(block.txdata.len());
    for tx in &block.txdata {
        write_transaction(w, tx);
    }
}

fn write_transaction(w: &mut Writer, tx: &Transaction) {
    // blvm's version is a u64: the 4 consensus bytes as an unsigned number.
    w.u64(u64::from(tx.version.0 as u32)).len(tx.input.len());
    for i in &tx.input {
        w.array(i.previous_output.txid.as_byte_array())
            .u32(i.previous_output.vout)
            .u64(i.sequence.0.into())
            .bytes(i.script_sig.as_bytes());
    }
    w.len(tx.output.len());
    for o in &tx.output {
        // Amounts fit in i64 (21e14 sat at most).
        w.i64(o.value.to_sat() as i64)
            .bytes(o.script_pubkey.as_bytes());
    }
    w.u64(tx.lock_time.to_consensus_u32().into());
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

/// Decodes one frame body from the node.
pub fn decode_incoming(bytes: &[u8]) -> Result<Incoming, DecodeError> {
    let mut r = Reader::new(bytes);
    match r.variant("ModuleMessage")? {
        message::RESPONSE => {
            let correlation_id = r.u64("correlation_id")?;
            let success = r.bool("success")?;
            let body = if r.option("payload")? {
                decode_response_payload(&mut r)?
            } else {
                let error = r.opt_string("error")?;
                ResponseBody::Error(error.unwrap_or_else(|| "no payload and no error".into()))
            };
            let body = match body {
                ResponseBody::Error(_) => body,
                _ if !success => ResponseBody::Error(
                    // A failed response with a payload: say what the node said.
                    format!("request failed ({body:?})"),
                ),
                _ => body,
            };
            Ok(Incoming::Response {
                correlation_id,
                body,
            })
        }
        message::EVENT => {
            let _event_type = r.variant("EventType")?;
            Ok(Incoming::Event(decode_event_payload(&mut r)?))
        }
        message::INVOCATION => Ok(Incoming::Invocation(r.u64("correlation_id")?)),
        other => Ok(Incoming::Other(other)),
    }
}

fn decode_response_payload(r: &mut Reader<'_>) -> Result<ResponseBody, DecodeError> {
    Ok(match r.variant("ResponsePayload")? {
        response::HANDSHAKE_ACK => ResponseBody::HandshakeAck(r.str("node_version")?.to_owned()),
        response::SUBSCRIBE_ACK => ResponseBody::SubscribeAck,
        response::EVENT_PUBLISHED => ResponseBody::EventPublished,
        response::BLOCK_HEADER => ResponseBody::HeaderKnown(r.option("BlockHeader")?),
        response::BLOCK_TEMPLATE => ResponseBody::BlockTemplate(read_template(r)?),
        response::SUBMIT_BLOCK_RESULT => {
            ResponseBody::SubmitBlock(match r.variant("SubmitBlockResult")? {
                0 => SubmitResult::Accepted,
                1 => SubmitResult::Rejected(r.str("reason")?.to_owned()),
                2 => SubmitResult::Duplicate,
                index => {
                    return Err(DecodeError::Variant {
                        what: "SubmitBlockResult",
                        index,
                    });
                }
            })
        }
        other => ResponseBody::Other(other),
    })
}

fn decode_event_payload(r: &mut Reader<'_>) -> Result<NodeEventMsg, DecodeError> {
    Ok(match r.variant("EventPayload")? {
        payload::NEW_BLOCK => NodeEventMsg::NewBlock {
            hash: r.hash("block_hash")?,
            height: r.u64("height")?,
        },
        payload::BLOCK_DISCONNECTED => NodeEventMsg::BlockDisconnected {
            hash: r.hash("hash")?,
            height: r.u64("height")?,
        },
        payload::CHAIN_REORG => {
            let _old = r.hash("old_tip")?;
            NodeEventMsg::ChainReorg {
                new_tip: r.hash("new_tip")?,
            }
        }
        payload::BLOCK_MINED => NodeEventMsg::BlockMined {
            hash: r.hash("block_hash")?,
            height: r.u64("height")?,
        },
        payload::BLOCK_TEMPLATE_UPDATED => NodeEventMsg::BlockTemplateUpdated,
        payload::MINING_DIFFICULTY_CHANGED => NodeEventMsg::MiningDifficultyChanged,
        other => NodeEventMsg::Other(other),
    })
}

/// A block header as blvm encodes it.
struct Header {
    version: i64,
    prev: [u8; 32],
    bits: u64,
    time: u64,
}

fn read_header(r: &mut Reader<'_>) -> Result<Header, DecodeError> {
    let version = r.i64("header.version")?;
    let prev = r.hash("header.prev_block_hash")?;
    let _merkle = r.hash("header.merkle_root")?;
    let time = r.u64("header.timestamp")?;
    let bits = r.u64("header.bits")?;
    let _nonce = r.u64("header.nonce")?;
    Ok(Header {
        version,
        prev,
        bits,
        time,
    })
}

/// Smallest encoded transaction: version, two empty sequences, lock time.
const MIN_TX_LEN: usize = 8 + 8 + 8 + 8;

fn read_transaction(r: &mut Reader<'_>) -> Result<Transaction, DecodeError> {
    let version = r.u64("tx.version")?;
    let n_in = r.len("tx.inputs", 32 + 4 + 8 + 8)?;
    let mut input = Vec::with_capacity(n_in);
    for _ in 0..n_in {
        let txid = r.hash("prevout.hash")?;
        let vout = r.u32("prevout.index")?;
        let sequence = r.u64("sequence")?;
        let script_sig = r.bytes("script_sig")?;
        input.push(TxIn {
            previous_output: bitcoin::OutPoint {
                txid: bitcoin::Txid::from_byte_array(txid),
                vout,
            },
            script_sig: ScriptBuf::from_bytes(script_sig.to_vec()),
            sequence: Sequence(sequence as u32),
            witness: bitcoin::Witness::new(),
        });
    }
    let n_out = r.len("tx.outputs", 8 + 8)?;
    let mut output = Vec::with_capacity(n_out);
    for _ in 0..n_out {
        let value = r.i64("output.value")?;
        let script = r.bytes("script_pubkey")?;
        output.push(TxOut {
            value: Amount::from_sat(value.max(0) as u64),
            script_pubkey: ScriptBuf::from_bytes(script.to_vec()),
        });
    }
    let lock_time = r.u64("tx.lock_time")?;
    Ok(Transaction {
        version: bitcoin::transaction::Version(version as u32 as i32),
        lock_time: bitcoin::absolute::LockTime::from_consensus(lock_time as u32),
        input,
        output,
    })
}

/// blvm's `BlockTemplate` → ours: tip, bits, height and time from its header, the coinbase
/// value from its coinbase's outputs (subsidy plus fees), its transactions as they are.
fn read_template(r: &mut Reader<'_>) -> Result<BlockTemplate, DecodeError> {
    let header = read_header(r)?;
    let coinbase = read_transaction(r)?;
    let n = r.len("transactions", MIN_TX_LEN)?;
    let mut transactions = Vec::with_capacity(n);
    for _ in 0..n {
        transactions.push(read_transaction(r)?);
    }
    let _target = r.str("target")?; // hex; the bits say the same
    let height = r.u64("height")?;
    let timestamp = r.u64("timestamp")?;
    let time = u32::try_from(timestamp.max(header.time)).unwrap_or(u32::MAX);
    let coinbase_value = coinbase
        .output
        .iter()
        .map(|o| o.value)
        .fold(Amount::ZERO, |a, b| {
            a.checked_add(b).unwrap_or(Amount::MAX_MONEY)
        });
    let version =
        i32::try_from(header.version).map_err(|_| DecodeError::Range("header.version"))?;
    let bits = u32::try_from(header.bits).map_err(|_| DecodeError::Range("header.bits"))?;
    Ok(BlockTemplate {
        version: bitcoin::block::Version::from_consensus(version),
        prev_hash: BlockHash::from_byte_array(header.prev),
        bits: CompactTarget::from_consensus(bits),
        height: u32::try_from(height).unwrap_or(u32::MAX),
        min_time: time,
        cur_time: time,
        coinbase_value,
        transactions,
    })
}
