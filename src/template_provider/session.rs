//! One Template Distribution client's protocol state, sans-IO: decoded frames and new
//! templates in, encoded frames (in [`TpSession::output`]) and [`TpEvent`]s out.
//!
//! It answers SetupConnection (protocol 2 only), takes CoinbaseOutputConstraints, then pushes
//! every template it is given: a template on a new tip as NewTemplate (future) followed by
//! SetNewPrevHash, one on the same tip as NewTemplate (not future). It answers
//! RequestTransactionData from the templates it sent and turns SubmitSolution into a whole
//! block for the shell to hand to the node.

use std::collections::VecDeque;
use std::sync::Arc;

use bitcoin::block::{Header, Version};
use bitcoin::consensus::{Encodable, deserialize};
use bitcoin::hashes::Hash;
use bitcoin::script::Builder;
use bitcoin::{Amount, Block, BlockHash, Transaction, TxOut};

use super::coinbase_room::{self, CoinbaseRoom, RoomError};
use crate::block::BlockTemplate;
use crate::block::merkle::{coinbase_merkle_path, fold_merkle_path};
use crate::block::target::from_bitcoin_target;
use crate::connection::{Outbox, Protocol};
use crate::wire::common::{
    PROTOCOL_TEMPLATE_DISTRIBUTION, SetupConnection, SetupConnectionError, SetupConnectionSuccess,
};
use crate::wire::template_distribution::{
    NewTemplate, RequestTransactionDataError, RequestTransactionDataSuccess, SetNewPrevHash,
    SubmitSolution,
};
use crate::wire::{
    B0_16M, B0_64K, B0_255, Frame, Message, Seq0_255, Str0_255, Sv2Message, TxList, U256, WireError,
};

/// The only protocol version there is.
pub const PROTOCOL_VERSION: u16 = 2;
/// Templates a session remembers for RequestTransactionData and SubmitSolution: a solution
/// or a request for an older template is answered as unknown.
pub const REMEMBERED_TEMPLATES: usize = 16;
/// RequestTransactionData.Error code for a template this server never sent (or forgot).
pub const TEMPLATE_ID_NOT_FOUND: &str = "template-id-not-found";
/// RequestTransactionData.Error code (ours) for a template whose transactions this client
/// was already sent: each answer copies every transaction of the template, so a few hundred
/// requests in one read would otherwise queue as many copies (hundreds of megabytes with a
/// full template) before any is written.
pub const TRANSACTION_DATA_ALREADY_SENT: &str = "transaction-data-already-sent";

/// RequestTransactionData.Error code for a template on a tip that is no longer the best.
pub const STALE_TEMPLATE_ID: &str = "stale-template-id";

/// A node template turned into what the Template Distribution Protocol sends: built once per
/// template and shared by every session.
#[derive(Debug)]
pub struct ServedTemplate {
    /// Server-wide template id, strictly increasing.
    pub id: u64,
    /// The node's template (transactions, value, header fields).
    pub template: BlockTemplate,
    /// Start of the coinbase scriptSig: the BIP34 height push (at most 8 bytes).
    pub coinbase_prefix: Vec<u8>,
    /// Outputs the coinbase must end with (the witness commitment), serialized, no count.
    pub coinbase_outputs: Vec<u8>,
    /// Number of outputs in `coinbase_outputs`.
    pub coinbase_outputs_count: u32,
    /// Merkle path of the coinbase, deepest first.
    pub merkle_path: Vec<U256>,
    /// The transactions after the coinbase, witness serialization, in block order.
    pub transactions_wire: Vec<Vec<u8>>,
    /// Network target of the block, little-endian.
    pub target: U256,
    /// Its transactions' weight and sigop cost added up, for every client's coinbase room
    /// (made with the template: never out of step with it).
    costs: coinbase_room::RunningCosts,
    /// The witness merkle root of its blocks (what a coinbase's commitment commits to).
    witness_root: bitcoin::WitnessMerkleNode,
}

impl ServedTemplate {
    /// Builds the served form of `template`. The witness commitment is always included (as
    /// Bitcoin Core does): clients such as SRI's pool put the 32-byte witness reserved value
    /// in every coinbase, which is only valid next to a commitment.
    pub fn new(id: u64, template: BlockTemplate) -> Self {
        let coinbase_prefix = Builder::new()
            .push_int(i64::from(template.height))
            .into_script()
            .into_bytes();
        let commitment = TxOut {
            value: Amount::ZERO,
            script_pubkey: template.witness_commitment_script(),
        };
        let mut coinbase_outputs = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = commitment.consensus_encode(&mut coinbase_outputs);
        let witness_root = template.witness_root();
        let merkle_path = coinbase_merkle_path(&template.txids());
        let transactions_wire = template
            .transactions
            .iter()
            .map(bitcoin::consensus::serialize)
            .collect();
        ServedTemplate {
            id,
            coinbase_prefix,
            coinbase_outputs,
            coinbase_outputs_count: 1,
            merkle_path,
            transactions_wire,
            target: from_bitcoin_target(template.target()),
            costs: coinbase_room::RunningCosts::of(&template),
            witness_root,
            template,
        }
    }

    /// Whether `coinbase`'s witness commitment is this template's (the NewTemplate told the
    /// client to put it among its outputs): its transactions are the ones the client mined
    /// on. Read as Bitcoin Core reads it: the commitment is the last output whose script is
    /// at least 38 bytes and starts with OP_RETURN, a 36-byte push and `aa21a9ed`; its bytes 6
    /// to 38 must be the hash of the template's witness root and the coinbase's witness
    /// reserved value (its one 32-byte witness item; the client may choose it). (rust-bitcoin's
    /// `check_witness_commitment` would not do: it passes a block without witness data
    /// whatever its coinbase commits to, where Core checks a commitment whenever there is
    /// one.)
    pub fn is_committed_to_by(&self, coinbase: &Transaction) -> bool {
        const HEADER: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
        let Some(output) = coinbase.output.iter().rev().find(|o| {
            let script = o.script_pubkey.as_bytes();
            script.len() >= 38 && script[..6] == HEADER
        }) else {
            return false;
        };
        let reserved = match coinbase.input.first().map(|i| &i.witness) {
            Some(w) if w.len() == 1 && w.iter().all(|item| item.len() == 32) => &w[0],
            _ => return false,
        };
        let commitment = Block::compute_witness_commitment(&self.witness_root, reserved);
        output.script_pubkey.as_bytes()[6..38] == commitment.as_byte_array()[..]
    }

    /// Hash of the block this template builds on.
    pub fn prev_hash(&self) -> BlockHash {
        self.template.prev_hash
    }

    /// The whole block for a solution: the client's coinbase, the template's transactions,
    /// the header from the solution's fields and the merkle path.
    pub fn assemble_block(&self, m: &SubmitSolution<'_>) -> Result<Block, SolutionError> {
        let coinbase = solution_coinbase(m)?;
        let header = self.solution_header(m, coinbase.compute_txid());
        Ok(self.block_with(header, coinbase))
    }

    /// The header a solution makes on this template, its coinbase's txid given.
    fn solution_header(&self, m: &SubmitSolution<'_>, coinbase_txid: bitcoin::Txid) -> Header {
        Header {
            version: Version::from_consensus(m.version as i32),
            prev_blockhash: self.template.prev_hash,
            merkle_root: fold_merkle_path(coinbase_txid, &self.merkle_path),
            time: m.header_timestamp,
            bits: self.template.bits,
            nonce: m.header_nonce,
        }
    }

    fn block_with(&self, header: Header, coinbase: Transaction) -> Block {
        let mut txdata = Vec::with_capacity(1 + self.template.transactions.len());
        txdata.push(coinbase);
        txdata.extend(self.template.transactions.iter().cloned());
        Block { header, txdata }
    }
}

/// A SubmitSolution's coinbase, decoded.
fn solution_coinbase(m: &SubmitSolution<'_>) -> Result<Transaction, SolutionError> {
    let coinbase: Transaction =
        deserialize(m.coinbase_tx.as_bytes()).map_err(|e| SolutionError::BadCoinbase {
            template_id: m.template_id,
            reason: e.to_string(),
        })?;
    if !coinbase.is_coinbase() {
        return Err(SolutionError::BadCoinbase {
            template_id: m.template_id,
            reason: "not a coinbase transaction".into(),
        });
    }
    Ok(coinbase)
}

/// Why a SubmitSolution did not give a block (the connection stays open).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SolutionError {
    /// The template id is not one this session remembers.
    #[error("solution for unknown template {0}")]
    UnknownTemplate(u64),
    /// The coinbase does not decode as a coinbase transaction.
    #[error("solution for template {template_id}: bad coinbase: {reason}")]
    BadCoinbase {
        /// The template.
        template_id: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The block does not meet its template's target: not a block, so neither kept nor
    /// given to the node (a client sending these cannot make the provider write them).
    #[error("solution for template {template_id} does not meet its target (header {hash})")]
    HighHash {
        /// The template.
        template_id: u64,
        /// The header's hash.
        hash: BlockHash,
    },
}

impl SolutionError {
    /// A short name of the kind of refusal (for counting them).
    pub fn kind(&self) -> &'static str {
        match self {
            SolutionError::UnknownTemplate(_) => "unknown-template",
            SolutionError::BadCoinbase { .. } => "bad-coinbase",
            SolutionError::HighHash { .. } => "high-hash",
        }
    }
}

/// What a session tells the shell.
#[derive(Debug, Clone)]
pub enum TpEvent {
    /// SetupConnection succeeded.
    Setup {
        /// The client's vendor string.
        vendor: String,
    },
    /// The client said how much room its coinbase outputs take.
    Constraints {
        /// coinbase_output_max_additional_size.
        max_additional_size: u32,
        /// coinbase_output_max_additional_sigops.
        max_additional_sigops: u16,
    },
    /// A solved block to give to the node.
    Solution {
        /// The template it was built on.
        template_id: u64,
        /// The block.
        block: Block,
    },
    /// A SubmitSolution that could not be turned into a block.
    SolutionRefused(SolutionError),
    /// A template not sent to this client: it cannot be made to leave the client's coinbase
    /// its room (the client keeps working on the last one it has).
    TemplateWithheld {
        /// The template.
        template_id: u64,
        /// Why.
        error: RoomError,
    },
}

/// Why a session must end (its output is flushed first).
#[derive(Debug, thiserror::Error)]
pub enum TpSessionError {
    /// Undecodable bytes.
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    /// SetupConnection was refused (SetupConnection.Error is in the output).
    #[error("setup refused: {0}")]
    SetupRefused(&'static str),
    /// A message that is not allowed in the session's state.
    #[error("unexpected {0} {1}")]
    Unexpected(&'static str, &'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingSetup,
    /// Set up; templates start with CoinbaseOutputConstraints.
    AwaitingConstraints,
    Ready,
}

/// One Template Distribution client.
#[derive(Debug)]
pub struct TpSession {
    state: State,
    /// The latest template the shell gave us (sent once the client is ready).
    current: Option<Arc<ServedTemplate>>,
    /// Templates sent, oldest first.
    sent: VecDeque<Arc<ServedTemplate>>,
    /// Templates whose transactions were sent this client, newest last (at most
    /// [`REMEMBERED_TEMPLATES`]).
    data_sent: VecDeque<u64>,
    /// prev hash and nBits of the last SetNewPrevHash sent.
    sent_prev_hash: Option<(BlockHash, bitcoin::CompactTarget)>,
    constraints: Option<(u32, u16)>,
    out: Outbox,
    events: Vec<TpEvent>,
}

impl Default for TpSession {
    fn default() -> Self {
        Self::new()
    }
}

impl TpSession {
    /// A session waiting for SetupConnection.
    pub fn new() -> Self {
        TpSession {
            state: State::AwaitingSetup,
            current: None,
            sent: VecDeque::new(),
            data_sent: VecDeque::new(),
            sent_prev_hash: None,
            constraints: None,
            out: Outbox::new(),
            events: Vec::new(),
        }
    }

    /// Frames to send, concatenated; the shell takes and clears them.
    pub fn output(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// Events since the last call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, TpEvent> {
        self.events.drain(..)
    }

    /// Whether SetupConnection and CoinbaseOutputConstraints have both arrived.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Whether SetupConnection has been accepted.
    pub fn is_set_up(&self) -> bool {
        self.state != State::AwaitingSetup
    }

    /// The client's CoinbaseOutputConstraints (size, sigops), once received.
    pub fn constraints(&self) -> Option<(u32, u16)> {
        self.constraints
    }

    fn send<'m, M: Sv2Message<'m>>(&mut self, msg: &M) {
        // Messages built here hold values checked by their constructors.
        let _ = self.out.push(msg);
    }

    /// A new best template from the node: sent at once to a ready client, kept for later
    /// otherwise.
    pub fn on_template(&mut self, t: &Arc<ServedTemplate>) {
        if self
            .current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, t) || c.id == t.id)
        {
            return;
        }
        self.current = Some(t.clone());
        if self.state == State::Ready {
            self.push_template(t.clone());
        }
    }

    fn push_template(&mut self, t: Arc<ServedTemplate>) {
        // 07 §7.1: never a template that the client's coinbase outputs would make an invalid
        // block; cut (for this client alone) when it does not leave them their room.
        let room = self
            .constraints
            .map(
                |(max_additional_size, max_additional_sigops)| CoinbaseRoom {
                    max_additional_size,
                    max_additional_sigops,
                },
            )
            .unwrap_or_default();
        let t = match coinbase_room::fit_with(&t.template, &t.costs, room) {
            Ok(None) => t,
            Ok(Some(cut)) => Arc::new(ServedTemplate::new(t.id, cut)),
            Err(error) => {
                self.events.push(TpEvent::TemplateWithheld {
                    template_id: t.id,
                    error,
                });
                return;
            }
        };
        // Other nBits on the same tip (testnet's 20-minute rule) need a SetNewPrevHash too.
        let new_tip = self.sent_prev_hash != Some((t.prev_hash(), t.template.bits));
        let (Ok(prefix), Ok(outputs), Ok(path)) = (
            B0_255::new(&t.coinbase_prefix),
            B0_64K::new(&t.coinbase_outputs),
            Seq0_255::new(&t.merkle_path),
        ) else {
            // Not representable (a template with over 2^255 transactions): nothing to send.
            return;
        };
        let msg = NewTemplate {
            template_id: t.id,
            future_template: new_tip,
            version: t.template.version.to_consensus() as u32,
            coinbase_tx_version: 2,
            coinbase_prefix: prefix,
            coinbase_tx_input_sequence: u32::MAX,
            coinbase_tx_value_remaining: t.template.coinbase_value.to_sat(),
            coinbase_tx_outputs_count: t.coinbase_outputs_count,
            coinbase_tx_outputs: outputs,
            coinbase_tx_locktime: 0,
            merkle_path: path,
        };
        self.send(&msg);
        if new_tip {
            let prev = SetNewPrevHash {
                template_id: t.id,
                prev_hash: t.prev_hash().to_byte_array(),
                header_timestamp: t.template.cur_time.max(t.template.min_time),
                n_bits: t.template.bits.to_consensus(),
                target: t.target,
            };
            self.send(&prev);
            self.sent_prev_hash = Some((t.prev_hash(), t.template.bits));
        }
        if self.sent.len() == REMEMBERED_TEMPLATES {
            self.sent.pop_front();
        }
        self.sent.push_back(t);
    }

    fn find_sent(&self, id: u64) -> Option<&Arc<ServedTemplate>> {
        self.sent.iter().rev().find(|t| t.id == id)
    }

    /// Handles one frame from the client. An error means the connection must be closed after
    /// its output is flushed.
    pub fn handle_frame(&mut self, frame: &Frame<'_>) -> Result<(), TpSessionError> {
        // Unknown messages of other extensions are ignored (03 §3.4.1).
        let Some((msg, _tlv)) = frame.known_message()? else {
            return Ok(());
        };
        match (self.state, msg) {
            (State::AwaitingSetup, Message::SetupConnection(m)) => self.on_setup(&m),
            (State::AwaitingSetup, other) => Err(TpSessionError::Unexpected(
                other.name(),
                "before SetupConnection",
            )),
            (_, Message::CoinbaseOutputConstraints(m)) => {
                self.constraints = Some((
                    m.coinbase_output_max_additional_size,
                    m.coinbase_output_max_additional_sigops,
                ));
                self.events.push(TpEvent::Constraints {
                    max_additional_size: m.coinbase_output_max_additional_size,
                    max_additional_sigops: m.coinbase_output_max_additional_sigops,
                });
                // 07: the server MUST immediately reply with the current best template.
                self.state = State::Ready;
                self.sent_prev_hash = None;
                if let Some(t) = self.current.clone() {
                    self.push_template(t);
                }
                Ok(())
            }
            (_, Message::RequestTransactionData(m)) => {
                self.on_request_transaction_data(m.template_id);
                Ok(())
            }
            (_, Message::SubmitSolution(m)) => {
                // One id may have gone out twice with other transactions (a second
                // CoinbaseOutputConstraints re-sends the current template, cut anew): the
                // version the client mined is the one whose witness commitment its coinbase
                // carries (each version's own, among its coinbase outputs), and of those the
                // one whose block meets its target; the newest when none tells them apart.
                // The target alone cannot tell: on an easy chain (regtest: every other hash)
                // a solution that misses it on its own version may meet it on another, whose
                // block the node then refuses (bad-witness-merkle-match).
                let event = self.solution(&m);
                self.events.push(event);
                Ok(())
            }
            (_, other) => Err(TpSessionError::Unexpected(
                other.name(),
                "from a Template Distribution client",
            )),
        }
    }

    /// What a SubmitSolution gives: the block on the version of its template the client
    /// mined on, or why there is none. The coinbase is decoded once and each version only
    /// hashed (its merkle root and header): the block is assembled once, for the version
    /// chosen, so that a client's 100-byte message cannot make the session copy a full
    /// template's transactions for every version it remembers.
    fn solution(&self, m: &SubmitSolution<'_>) -> TpEvent {
        let mut versions = self
            .sent
            .iter()
            .rev()
            .filter(|t| t.id == m.template_id)
            .peekable();
        if versions.peek().is_none() {
            return TpEvent::SolutionRefused(SolutionError::UnknownTemplate(m.template_id));
        }
        let coinbase = match solution_coinbase(m) {
            Ok(coinbase) => coinbase,
            Err(e) => return TpEvent::SolutionRefused(e),
        };
        let txid = coinbase.compute_txid();
        let mut best: Option<(&Arc<ServedTemplate>, Header, (bool, bool))> = None;
        for t in versions {
            let header = t.solution_header(m, txid);
            let rank = (
                t.is_committed_to_by(&coinbase),
                header.validate_pow(header.target()).is_ok(),
            );
            if best.as_ref().is_none_or(|(_, _, r)| rank > *r) {
                best = Some((t, header, rank));
            }
            if rank == (true, true) {
                break;
            }
        }
        match best {
            Some((t, header, (_, true))) => TpEvent::Solution {
                template_id: m.template_id,
                block: t.block_with(header, coinbase),
            },
            Some((_, header, _)) => TpEvent::SolutionRefused(SolutionError::HighHash {
                template_id: m.template_id,
                hash: header.block_hash(),
            }),
            None => TpEvent::SolutionRefused(SolutionError::UnknownTemplate(m.template_id)),
        }
    }

    fn on_setup(&mut self, m: &SetupConnection<'_>) -> Result<(), TpSessionError> {
        let refuse = |s: &mut Self, flags: u32, code: &'static str| {
            let err = SetupConnectionError {
                flags,
                error_code: Str0_255::new(code).unwrap_or_default(),
            };
            s.send(&err);
            Err(TpSessionError::SetupRefused(code))
        };
        if m.protocol != PROTOCOL_TEMPLATE_DISTRIBUTION {
            return refuse(self, 0, "unsupported-protocol");
        }
        if m.min_version > PROTOCOL_VERSION || m.max_version < PROTOCOL_VERSION {
            return refuse(self, 0, "protocol-version-mismatch");
        }
        // The Template Distribution Protocol defines no flags.
        if m.flags != 0 {
            return refuse(self, m.flags, "unsupported-feature-flags");
        }
        self.state = State::AwaitingConstraints;
        self.send(&SetupConnectionSuccess {
            used_version: PROTOCOL_VERSION,
            flags: 0,
        });
        self.events.push(TpEvent::Setup {
            vendor: m.vendor.to_string_lossy().into_owned(),
        });
        Ok(())
    }

    fn on_request_transaction_data(&mut self, template_id: u64) {
        let Some(t) = self.find_sent(template_id).cloned() else {
            return self.refuse_transaction_data(template_id, TEMPLATE_ID_NOT_FOUND);
        };
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.prev_hash() != t.prev_hash())
        {
            return self.refuse_transaction_data(template_id, STALE_TEMPLATE_ID);
        }
        if self.data_sent.contains(&template_id) {
            return self.refuse_transaction_data(template_id, TRANSACTION_DATA_ALREADY_SENT);
        }
        if self.data_sent.len() == REMEMBERED_TEMPLATES {
            self.data_sent.pop_front();
        }
        self.data_sent.push_back(template_id);
        let txs: Result<Vec<B0_16M<'_>>, _> =
            t.transactions_wire.iter().map(|b| B0_16M::new(b)).collect();
        let sent = txs.and_then(|txs| {
            let msg = RequestTransactionDataSuccess {
                template_id,
                excess_data: B0_64K::default(),
                transaction_list: TxList::new(&txs)?,
            };
            self.out.push(&msg)
        });
        if sent.is_err() {
            // More than a frame can carry (16 MiB): say so rather than send nothing.
            self.refuse_transaction_data(template_id, "transaction-data-too-large");
        }
    }

    fn refuse_transaction_data(&mut self, template_id: u64, code: &'static str) {
        let err = RequestTransactionDataError {
            template_id,
            error_code: Str0_255::new(code).unwrap_or_default(),
        };
        self.send(&err);
    }
}

/// The template provider's session as carried by a [`Connection`](crate::connection::Connection).
impl Protocol for TpSession {
    type Event = TpEvent;
    type Error = TpSessionError;

    fn handle_message(&mut self, message: &[u8], _now_ms: u64) -> Result<(), TpSessionError> {
        self.handle_frame(&Frame::parse_exact(message)?)
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    fn take_events(&mut self, into: &mut VecDeque<TpEvent>) {
        into.extend(self.events.drain(..));
    }

    fn is_set_up(&self) -> bool {
        TpSession::is_set_up(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::regtest::{ChainConfig, EmbeddedChain};
    use crate::wire::encode_frame;
    use crate::wire::template_distribution::{CoinbaseOutputConstraints, RequestTransactionData};

    fn frames(out: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut rest = out;
        let mut v = Vec::new();
        while let Ok(Some((f, used))) = Frame::parse(rest, 1 << 24) {
            v.push((f.header.msg_type, rest[..used].to_vec()));
            rest = &rest[used..];
        }
        v
    }

    fn feed<'a, M: Sv2Message<'a>>(s: &mut TpSession, m: &M) -> Result<(), TpSessionError> {
        let mut buf = Vec::new();
        encode_frame(m, &mut buf).unwrap();
        s.handle_frame(&Frame::parse_exact(&buf).unwrap())
    }

    /// A coinbase transaction's bytes (one input, no outputs: the session only decodes it).
    fn one_input_coinbase() -> Vec<u8> {
        bitcoin::consensus::serialize(&Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![bitcoin::TxIn {
                previous_output: bitcoin::OutPoint::null(),
                script_sig: bitcoin::ScriptBuf::from_bytes(vec![1, 2]),
                ..Default::default()
            }],
            output: vec![],
        })
    }

    fn setup(protocol: u8) -> SetupConnection<'static> {
        SetupConnection {
            protocol,
            min_version: 2,
            max_version: 2,
            flags: 0,
            endpoint_host: Str0_255::new("127.0.0.1").unwrap(),
            endpoint_port: 8442,
            vendor: Str0_255::new("test").unwrap(),
            hardware_version: Str0_255::default(),
            firmware: Str0_255::default(),
            device_id: Str0_255::default(),
        }
    }

    #[test]
    fn setup_constraints_template_and_transaction_data() {
        let mut chain = EmbeddedChain::new(ChainConfig {
            bits: 0x207f_ffff,
            synthetic_transactions: 3,
            block_interval_secs: 0,
        });
        let t = Arc::new(ServedTemplate::new(1, chain.template(1_700_000_000)));
        let mut s = TpSession::new();
        s.on_template(&t);
        feed(&mut s, &setup(PROTOCOL_TEMPLATE_DISTRIBUTION)).unwrap();
        assert!(s.output().is_empty() || frames(s.output())[0].0 == 0x01);
        s.output().clear();
        feed(
            &mut s,
            &CoinbaseOutputConstraints {
                coinbase_output_max_additional_size: 100,
                coinbase_output_max_additional_sigops: 4,
            },
        )
        .unwrap();
        let types: Vec<u8> = frames(s.output()).iter().map(|f| f.0).collect();
        assert_eq!(types, vec![0x71, 0x72]);
        s.output().clear();
        feed(&mut s, &RequestTransactionData { template_id: 1 }).unwrap();
        assert_eq!(frames(s.output())[0].0, 0x74);
        s.output().clear();
        // Unknown, then asked again (a template's transactions are sent once per client:
        // hundreds of requests in one read would each copy them all).
        for (id, code) in [
            (9, TEMPLATE_ID_NOT_FOUND),
            (1, TRANSACTION_DATA_ALREADY_SENT),
        ] {
            feed(&mut s, &RequestTransactionData { template_id: id }).unwrap();
            let f = frames(s.output());
            let (m, _) = Frame::parse_exact(&f[0].1).unwrap().message().unwrap();
            match m {
                Message::RequestTransactionDataError(e) => assert_eq!(e.error_code, code),
                other => panic!("{other:?}"),
            }
            s.output().clear();
        }
    }

    /// Template 7 full of transactions (room for 100 bytes of coinbase outputs left), and as
    /// it is cut for a client asking 5,000 bytes.
    fn whole_and_cut() -> (Arc<ServedTemplate>, ServedTemplate) {
        use super::coinbase_room::tests::{template, weighing};
        use super::coinbase_room::{CoinbaseRoom, MAX_BLOCK_WEIGHT, RESERVED_WEIGHT, fit};
        let full = template(weighing(MAX_BLOCK_WEIGHT - RESERVED_WEIGHT - 400), true);
        let room = CoinbaseRoom {
            max_additional_size: 5_000,
            max_additional_sigops: 0,
        };
        let cut = ServedTemplate::new(7, fit(&full, room).unwrap().expect("cut"));
        (Arc::new(ServedTemplate::new(7, full)), cut)
    }

    /// A session sent template 7 twice: whole (a client's first CoinbaseOutputConstraints
    /// asks 100 bytes), then cut under the same id (its second asks 5,000: the newest).
    fn sent_whole_then_cut(whole: &Arc<ServedTemplate>) -> TpSession {
        let mut s = TpSession::new();
        s.on_template(whole);
        feed(&mut s, &setup(PROTOCOL_TEMPLATE_DISTRIBUTION)).unwrap();
        for size in [100, 5_000] {
            feed(
                &mut s,
                &CoinbaseOutputConstraints {
                    coinbase_output_max_additional_size: size,
                    coinbase_output_max_additional_sigops: 0,
                },
            )
            .unwrap();
        }
        let _ = s.drain_events().count();
        s
    }

    /// A SubmitSolution for template 7 with `coinbase` and `nonce`.
    fn solution_with(coinbase: &[u8], nonce: u32) -> SubmitSolution<'_> {
        SubmitSolution {
            template_id: 7,
            version: 0x2000_0000,
            header_timestamp: 0,
            header_nonce: nonce,
            coinbase_tx: B0_64K::new(coinbase).unwrap(),
        }
    }

    /// Whether `m`'s block on version `t` meets its target.
    fn meets(t: &ServedTemplate, m: &SubmitSolution<'_>) -> bool {
        let b = t.assemble_block(m).unwrap();
        b.header.validate_pow(b.header.target()).is_ok()
    }

    /// A template that leaves no room for the client's coinbase outputs: this client gets
    /// it cut (the last transaction left out, its fee off the value), its transaction data
    /// and its solutions are the cut template's; without the fees it is withheld.
    #[test]
    fn a_template_is_cut_to_the_clients_coinbase_room() {
        use super::coinbase_room::tests::{template, weighing};
        use super::coinbase_room::{MAX_BLOCK_WEIGHT, RESERVED_WEIGHT};
        let full = template(weighing(MAX_BLOCK_WEIGHT - RESERVED_WEIGHT - 400), true);
        let ready = |t: &BlockTemplate, size: u32| {
            let mut s = TpSession::new();
            s.on_template(&Arc::new(ServedTemplate::new(7, t.clone())));
            feed(&mut s, &setup(PROTOCOL_TEMPLATE_DISTRIBUTION)).unwrap();
            s.output().clear();
            feed(
                &mut s,
                &CoinbaseOutputConstraints {
                    coinbase_output_max_additional_size: size,
                    coinbase_output_max_additional_sigops: 0,
                },
            )
            .unwrap();
            s
        };
        let value_sent = |s: &mut TpSession| {
            let f = frames(s.output());
            s.output().clear();
            f.iter().find_map(|(_, bytes)| {
                match Frame::parse_exact(bytes).unwrap().message().unwrap().0 {
                    Message::NewTemplate(m) => Some(m.coinbase_tx_value_remaining),
                    _ => None,
                }
            })
        };
        let transactions_sent = |s: &mut TpSession| {
            feed(s, &RequestTransactionData { template_id: 7 }).unwrap();
            let f = frames(s.output());
            s.output().clear();
            match Frame::parse_exact(&f[0].1).unwrap().message().unwrap().0 {
                Message::RequestTransactionDataSuccess(m) => m.transaction_list.len(),
                other => panic!("{other:?}"),
            }
        };
        // Room for 100 bytes: as it is.
        let mut s = ready(&full, 100);
        assert_eq!(value_sent(&mut s), Some(full.coinbase_value.to_sat()));
        assert_eq!(transactions_sent(&mut s), 10);
        // 5,000 bytes: cut.
        let mut s = ready(&full, 5_000);
        assert_eq!(
            value_sent(&mut s),
            Some(full.coinbase_value.to_sat() - 10_009)
        );
        assert_eq!(transactions_sent(&mut s), 9);
        // Its solution is a block of the cut template (rust-bitcoin checks its merkle root).
        let coinbase = one_input_coinbase();
        let (_, cut) = whole_and_cut();
        let solution = (0u32..)
            .map(|nonce| solution_with(&coinbase, nonce))
            .find(|m| meets(&cut, m))
            .unwrap();
        feed(&mut s, &solution).unwrap();
        match s.drain_events().next_back() {
            Some(TpEvent::Solution { block, .. }) => {
                assert_eq!(block.txdata.len(), 10);
                assert!(block.check_merkle_root());
            }
            other => panic!("{other:?}"),
        }
        // No fees from the node: withheld, nothing sent.
        let mut s = ready(&template(full.transactions.clone(), false), 5_000);
        assert_eq!(value_sent(&mut s), None);
        assert!(s.drain_events().any(|e| matches!(
            e,
            TpEvent::TemplateWithheld {
                template_id: 7,
                error: RoomError::FeeUnknown { index: 9 }
            }
        )));
    }

    /// A second CoinbaseOutputConstraints re-sends the current template under its id, cut
    /// anew: a solution mined on the first version is assembled from that version (the one
    /// whose block meets the target), not from the last one sent.
    #[test]
    fn a_solution_is_assembled_from_the_version_it_was_mined_on() {
        let (served, cut) = whole_and_cut();
        let mut s = sent_whole_then_cut(&served);
        let coinbase = one_input_coinbase();
        // Mined on the first version (the whole template), a block on it only: the second
        // (the newest) would win a tie.
        let solution = (0u32..)
            .map(|nonce| solution_with(&coinbase, nonce))
            .find(|m| meets(&served, m) && !meets(&cut, m))
            .unwrap();
        feed(&mut s, &solution).unwrap();
        match s.drain_events().next_back() {
            Some(TpEvent::Solution { block, .. }) => {
                assert_eq!(
                    block.txdata.len(),
                    11,
                    "the whole template's ten and the coinbase"
                );
                assert!(block.header.validate_pow(block.header.target()).is_ok());
            }
            other => panic!("{other:?}"),
        }
    }

    /// Found by the fuzz target `tp_session`: on regtest a solution that misses the target on
    /// the version it was mined on meets it on another version of the same id half the
    /// time, and was assembled from that one (the node refused the block:
    /// bad-witness-merkle-match). The version is the one whose witness commitment the
    /// coinbase carries, even where the newest meets the target too; and a solution that
    /// misses the target on it is no block, whatever other versions say.
    #[test]
    fn a_solution_is_judged_on_the_version_its_coinbase_commits_to() {
        let (whole, cut) = whole_and_cut();
        let mut s = sent_whole_then_cut(&whole);
        // Mined on the first version: its coinbase carries the whole template's commitment.
        let coinbase = bitcoin::consensus::serialize(&Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![bitcoin::TxIn {
                previous_output: bitcoin::OutPoint::null(),
                script_sig: bitcoin::ScriptBuf::from_bytes(vec![1, 2]),
                witness: BlockTemplate::coinbase_witness(),
                ..Default::default()
            }],
            output: vec![TxOut {
                value: Amount::ZERO,
                script_pubkey: whole.template.witness_commitment_script(),
            }],
        });
        // A block on both versions: the whole one, which its coinbase commits to.
        let solution = |nonce| solution_with(&coinbase, nonce);
        let both = (0u32..)
            .map(solution)
            .find(|m| meets(&whole, m) && meets(&cut, m))
            .unwrap();
        feed(&mut s, &both).unwrap();
        match s.drain_events().next_back() {
            Some(TpEvent::Solution { block, .. }) => {
                assert_eq!(block.txdata.len(), whole.template.transactions.len() + 1);
                assert!(block.header.validate_pow(block.header.target()).is_ok());
            }
            other => panic!("{other:?}"),
        }
        // A block only on the cut version, which it was not mined on: no block.
        let cut_only = (0u32..)
            .map(solution)
            .find(|m| !meets(&whole, m) && meets(&cut, m))
            .unwrap();
        feed(&mut s, &cut_only).unwrap();
        match s.drain_events().next_back() {
            Some(TpEvent::SolutionRefused(SolutionError::HighHash { template_id: 7, .. })) => {}
            other => panic!("{other:?}"),
        }
    }

    /// The commitment as Bitcoin Core reads it: the client's own witness reserved value, bytes
    /// after the 38 of the commitment allowed, the last commitment-shaped output the one read.
    #[test]
    fn a_coinbase_commits_to_a_template_as_core_reads_it() {
        let mut chain = EmbeddedChain::new(ChainConfig {
            bits: 0x207f_ffff,
            synthetic_transactions: 3,
            block_interval_secs: 0,
        });
        let t = ServedTemplate::new(1, chain.template(1_700_000_000));
        let coinbase = |reserved: [u8; 32], outputs: Vec<bitcoin::ScriptBuf>| Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![bitcoin::TxIn {
                previous_output: bitcoin::OutPoint::null(),
                script_sig: bitcoin::ScriptBuf::from_bytes(vec![1, 2]),
                witness: bitcoin::Witness::from_slice(&[reserved]),
                ..Default::default()
            }],
            output: outputs
                .into_iter()
                .map(|script_pubkey| TxOut {
                    value: Amount::ZERO,
                    script_pubkey,
                })
                .collect(),
        };
        let commitment = |reserved: [u8; 32], trailing: &[u8]| {
            let hash = Block::compute_witness_commitment(&t.template.witness_root(), &reserved);
            let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
            script.extend_from_slice(hash.as_byte_array());
            script.extend_from_slice(trailing);
            bitcoin::ScriptBuf::from_bytes(script)
        };
        assert!(t.is_committed_to_by(&coinbase(
            [0; 32],
            vec![t.template.witness_commitment_script()]
        )));
        assert!(t.is_committed_to_by(&coinbase([7; 32], vec![commitment([7; 32], &[])])));
        assert!(t.is_committed_to_by(&coinbase([7; 32], vec![commitment([7; 32], &[1, 2, 3])])));
        // Committed with one reserved value, carrying another.
        assert!(!t.is_committed_to_by(&coinbase([0; 32], vec![commitment([7; 32], &[])])));
        // The last commitment-shaped output is the one read.
        assert!(!t.is_committed_to_by(&coinbase(
            [7; 32],
            vec![commitment([7; 32], &[]), commitment([0; 32], &[])]
        )));
        assert!(!t.is_committed_to_by(&coinbase([0; 32], vec![])));
    }

    /// The same tip at other nBits (testnet's 20-minute rule): a future template and a
    /// SetNewPrevHash carrying them, not a template for the old nBits.
    #[test]
    fn other_bits_on_the_same_tip_get_a_set_new_prev_hash() {
        let mut chain = EmbeddedChain::new(ChainConfig {
            bits: 0x207f_ffff,
            synthetic_transactions: 1,
            block_interval_secs: 0,
        });
        let first = chain.template(1_700_000_000);
        let mut s = TpSession::new();
        s.on_template(&Arc::new(ServedTemplate::new(1, first.clone())));
        feed(&mut s, &setup(PROTOCOL_TEMPLATE_DISTRIBUTION)).unwrap();
        feed(
            &mut s,
            &CoinbaseOutputConstraints {
                coinbase_output_max_additional_size: 0,
                coinbase_output_max_additional_sigops: 0,
            },
        )
        .unwrap();
        s.output().clear();
        let easier = BlockTemplate {
            bits: bitcoin::CompactTarget::from_consensus(0x207f_fffe),
            ..first
        };
        s.on_template(&Arc::new(ServedTemplate::new(2, easier)));
        let f = frames(s.output());
        assert_eq!(f.iter().map(|f| f.0).collect::<Vec<_>>(), [0x71, 0x72]);
        match Frame::parse_exact(&f[1].1).unwrap().message().unwrap().0 {
            Message::TemplateSetNewPrevHash(m) => assert_eq!(m.n_bits, 0x207f_fffe),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_protocol_is_refused() {
        let mut s = TpSession::new();
        let r = feed(&mut s, &setup(0));
        assert!(matches!(
            r,
            Err(TpSessionError::SetupRefused("unsupported-protocol"))
        ));
        assert_eq!(frames(s.output())[0].0, 0x02);
    }
}
