//! Our declarations of blvm-node 0.1.83's module IPC types (`blvm_node::module::ipc::protocol`
//! and the blvm-primitives types in them), field for field in the node's order, serde-derived:
//! what we send borrows from the pool's values, what we read owns its data. Only the variants
//! the pool uses are declared, at the node's variant indices (`indexed_enum!`); whatever
//! else the node may send reads as an `Other(index)`.
//!
//! The pool's own view of these messages, and the checked conversions to rust-bitcoin types,
//! are in `protocol.rs`.

// Fields the pool never reads still place the ones it does.
#![allow(dead_code)]

use serde::{Deserialize, Serialize, Serializer};

use super::codec::indexed_enum;

/// blvm's `Hash` (internal byte order).
pub type Hash = [u8; 32];

// ---- blvm-primitives: blocks and transactions (blvm widens integers to 64 bits) ----

/// `BlockHeader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    pub version: i64,
    pub prev_block_hash: Hash,
    pub merkle_root: Hash,
    pub timestamp: u64,
    pub bits: u64,
    pub nonce: u64,
}

/// `OutPoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutPoint {
    pub hash: Hash,
    pub index: u32,
}

/// `TransactionInput` (no witness: the node's IPC type has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionInput {
    pub prevout: OutPoint,
    pub sequence: u64,
    pub script_sig: Vec<u8>,
}

/// `TransactionOutput`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionOutput {
    pub value: i64,
    pub script_pubkey: Vec<u8>,
}

/// `Transaction`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub version: u64,
    pub inputs: Vec<TransactionInput>,
    pub outputs: Vec<TransactionOutput>,
    pub lock_time: u64,
}

/// `Block`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub transactions: Vec<Transaction>,
}

/// blvm-consensus's `BlockTemplate`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockTemplate {
    pub header: BlockHeader,
    pub coinbase_tx: Transaction,
    pub transactions: Vec<Transaction>,
    /// A `U256`, which serialises as hex text; the bits say the same.
    pub target: String,
    pub height: u64,
    pub timestamp: u64,
}

// ---- Enums of unit variants, written only: Rust's discriminants are the node's indices ----

/// `MessageType`: a request's kind, sent beside its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MessageType {
    GetBlockHeader = 1,
    SubscribeEvents = 7,
    GetChainInfo = 14,
    GetBlockByHeight = 15,
    Handshake = 8,
    PublishEvent = 41,
    GetBlockTemplate = 50,
    SubmitBlock = 51,
    GetBlockTemplateDeclared = 72,
}

impl Serialize for MessageType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit_variant("MessageType", *self as u32, "")
    }
}

/// The node's `EventType`: what a module subscribes to and names when it publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum EventType {
    /// A block was connected to the best chain.
    NewBlock = 0,
    /// A transaction entered the mempool.
    NewTransaction = 1,
    /// A block was disconnected from the best chain.
    BlockDisconnected = 2,
    /// The best chain was reorganised.
    ChainReorg = 3,
    /// A block was mined (through the node's mining interface).
    BlockMined = 12,
    /// The node made a new block template (only when someone asks it for one).
    BlockTemplateUpdated = 13,
    /// The network difficulty changed.
    MiningDifficultyChanged = 14,
    /// The pool made new work (published by us).
    MiningJobCreated = 15,
    /// The pool accepted a share (published by us).
    ShareSubmitted = 18,
}

impl EventType {
    /// Its variant index in the node's `EventType`.
    pub fn index(self) -> u32 {
        self as u32
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit_variant("EventType", self.index(), "")
    }
}

/// `LogLevel` (all of it, in the node's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

// ---- What we send ----

indexed_enum! {
    /// `ModuleMessage`, the variants a module sends.
    pub enum Outgoing<'a> {
        Request(RequestMessage<'a>) = 0,
        Log(LogMessage<'a>) = 3,
        InvocationResult(InvocationResultMessage<'a>) = 5,
    }
}

/// `RequestMessage`.
#[derive(Serialize)]
pub struct RequestMessage<'a> {
    pub correlation_id: u64,
    pub request_type: MessageType,
    pub payload: RequestPayload<'a>,
}

indexed_enum! {
    /// `RequestPayload`, the requests the pool makes.
    pub enum RequestPayload<'a> {
        Handshake(Handshake<'a>) = 0,
        GetBlockHeader(HashOf) = 2,
        SubscribeEvents(SubscribeEvents<'a>) = 8,
        GetChainInfo(()) = 14,
        GetBlockByHeight(HeightOf) = 15,
        PublishEvent(PublishEvent<'a>) = 41,
        GetBlockTemplate(GetBlockTemplate<'a>) = 50,
        SubmitBlock(SubmitBlock) = 51,
        GetBlockTemplateDeclared(GetBlockTemplateDeclared<'a>) = 66,
    }
}

/// `RequestPayload::Handshake`.
#[derive(Serialize)]
pub struct Handshake<'a> {
    pub module_id: &'a str,
    pub module_name: &'a str,
    pub version: &'a str,
}

/// `{ hash }` (`GetBlockHeader`).
#[derive(Serialize)]
pub struct HashOf {
    pub hash: Hash,
}

/// `{ height }` (`GetBlockByHeight`).
#[derive(Serialize)]
pub struct HeightOf {
    pub height: u64,
}

/// `RequestPayload::SubscribeEvents`.
#[derive(Serialize)]
pub struct SubscribeEvents<'a> {
    pub event_types: &'a [EventType],
}

/// `RequestPayload::PublishEvent`.
#[derive(Serialize)]
pub struct PublishEvent<'a> {
    pub event_type: EventType,
    pub payload: PublishedPayload<'a>,
}

indexed_enum! {
    /// `EventPayload`, the events the pool publishes.
    pub enum PublishedPayload<'a> {
        MiningJobCreated(MiningJobCreated<'a>) = 15,
        ShareSubmitted(ShareSubmitted<'a>) = 16,
    }
}

/// `EventPayload::MiningJobCreated`.
#[derive(Serialize)]
pub struct MiningJobCreated<'a> {
    pub job_id: &'a str,
    pub prev_hash: &'a Hash,
    pub height: u64,
}

/// `EventPayload::ShareSubmitted`.
#[derive(Serialize)]
pub struct ShareSubmitted<'a> {
    pub job_id: &'a str,
    pub share_hash: &'a Hash,
    pub miner_id: Option<&'a str>,
}

/// `RequestPayload::GetBlockTemplate`.
#[derive(Serialize)]
pub struct GetBlockTemplate<'a> {
    pub rules: &'a [&'a str],
    pub coinbase_script: Option<&'a [u8]>,
    pub coinbase_address: Option<&'a str>,
}

/// `RequestPayload::SubmitBlock`.
#[derive(Serialize)]
pub struct SubmitBlock {
    pub block: Block,
}

/// `RequestPayload::GetBlockTemplateDeclared`.
#[derive(Serialize)]
pub struct GetBlockTemplateDeclared<'a> {
    pub rules: &'a [&'a str],
    pub coinbase_script: Option<&'a [u8]>,
    pub coinbase_outputs: &'a [(i64, &'a [u8])],
    pub declared_txids: &'a [Hash],
}

/// `LogMessage`.
#[derive(Serialize)]
pub struct LogMessage<'a> {
    pub level: LogLevel,
    pub module_id: &'a str,
    pub message: &'a str,
    pub target: &'a str,
    pub timestamp: u64,
}

/// `InvocationResultMessage`.
#[derive(Serialize)]
pub struct InvocationResultMessage<'a> {
    pub correlation_id: u64,
    pub success: bool,
    /// We never send a payload; `None` encodes the same whatever its type.
    pub payload: Option<()>,
    pub error: Option<&'a str>,
}

// ---- What we read ----

indexed_enum! {
    /// `ModuleMessage`, the variants a node sends; a module's own kinds (requests, logs ...)
    /// read as `Other`.
    #[derive(Debug)]
    pub enum Incoming {
        Response(ResponseMessage) = 1,
        Event(EventMessage) = 2,
        Invocation(InvocationHead) = 4,
    }
    other: Other;
}

/// `ResponseMessage`. Read by hand rather than derived: after a payload we do not declare,
/// `error` cannot be found (the payload's length is unknown to us), so it is not read.
#[derive(Debug)]
pub struct ResponseMessage {
    pub correlation_id: u64,
    pub success: bool,
    pub payload: Option<ResponsePayload>,
    pub error: Option<String>,
}

impl<'de> Deserialize<'de> for ResponseMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ResponseMessage;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("struct ResponseMessage")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ResponseMessage, A::Error> {
                fn next<'de, T: Deserialize<'de>, A: serde::de::SeqAccess<'de>>(
                    seq: &mut A,
                    index: usize,
                ) -> Result<T, A::Error> {
                    seq.next_element()?.ok_or_else(|| {
                        serde::de::Error::invalid_length(index, &"struct ResponseMessage")
                    })
                }
                let correlation_id = next(&mut seq, 0)?;
                let success = next(&mut seq, 1)?;
                let payload: Option<ResponsePayload> = next(&mut seq, 2)?;
                let error = match payload {
                    Some(ResponsePayload::Other(_)) => None,
                    _ => next(&mut seq, 3)?,
                };
                Ok(ResponseMessage {
                    correlation_id,
                    success,
                    payload,
                    error,
                })
            }
        }
        d.deserialize_struct(
            "ResponseMessage",
            &["correlation_id", "success", "payload", "error"],
            Visit,
        )
    }
}

indexed_enum! {
    /// `ResponsePayload`, the answers to the pool's requests.
    #[derive(Debug)]
    pub enum ResponsePayload {
        HandshakeAck(HandshakeAck) = 0,
        BlockHeader(Option<BlockHeader>) = 2,
        SubscribeAck(()) = 8,
        ChainInfo(ChainInfo) = 14,
        BlockByHeight(Option<Block>) = 15,
        EventPublished(()) = 39,
        BlockTemplate(BlockTemplate) = 46,
        SubmitBlockResult(SubmitBlockResult) = 47,
    }
    other: Other;
}

/// `ResponsePayload::ChainInfo` (blvm-node's `module::traits::ChainInfo`).
#[derive(Debug, Deserialize)]
pub struct ChainInfo {
    pub tip_hash: Hash,
    pub height: u64,
    pub difficulty: f64,
    pub chain_work: u64,
    pub is_synced: bool,
}

/// `ResponsePayload::HandshakeAck`.
#[derive(Debug, Deserialize)]
pub struct HandshakeAck {
    pub node_version: String,
}

indexed_enum! {
    /// `SubmitBlockResult` (all of it).
    #[derive(Debug)]
    pub enum SubmitBlockResult {
        Accepted(()) = 0,
        Rejected(String) = 1,
        Duplicate(()) = 2,
    }
}

/// `EventMessage`.
#[derive(Debug, Deserialize)]
pub struct EventMessage {
    /// The `EventType` index; the payload says the same.
    pub event_type: u32,
    pub payload: EventPayload,
}

indexed_enum! {
    /// `EventPayload`, the events the pool subscribes to.
    #[derive(Debug)]
    pub enum EventPayload {
        NewBlock(NewBlock) = 0,
        BlockDisconnected(BlockDisconnected) = 2,
        ChainReorg(ChainReorg) = 3,
        BlockMined(BlockMined) = 12,
        BlockTemplateUpdated(BlockTemplateUpdated) = 13,
        MiningDifficultyChanged(MiningDifficultyChanged) = 14,
    }
    other: Other;
}

/// `EventPayload::NewBlock`.
#[derive(Debug, Deserialize)]
pub struct NewBlock {
    pub block_hash: Hash,
    pub height: u64,
}

/// `EventPayload::BlockDisconnected`.
#[derive(Debug, Deserialize)]
pub struct BlockDisconnected {
    pub hash: Hash,
    pub height: u64,
}

/// `EventPayload::ChainReorg`.
#[derive(Debug, Deserialize)]
pub struct ChainReorg {
    pub old_tip: Hash,
    pub new_tip: Hash,
}

/// `EventPayload::BlockMined`.
#[derive(Debug, Deserialize)]
pub struct BlockMined {
    pub block_hash: Hash,
    pub height: u64,
    pub miner_id: Option<String>,
}

/// `EventPayload::BlockTemplateUpdated`.
#[derive(Debug, Deserialize)]
pub struct BlockTemplateUpdated {
    pub prev_hash: Hash,
    pub height: u64,
    pub tx_count: u64,
}

/// `EventPayload::MiningDifficultyChanged`.
#[derive(Debug, Deserialize)]
pub struct MiningDifficultyChanged {
    pub old_difficulty: u32,
    pub new_difficulty: u32,
    pub height: u64,
}

/// The start of `InvocationMessage`: its `invocation_type` may hold JSON, which bincode cannot
/// read, and we refuse every invocation anyway.
#[derive(Debug, Deserialize)]
pub struct InvocationHead {
    pub correlation_id: u64,
}
