//! Arbitrary messages into the Template Provider's session on a real chain: what a Template
//! Distribution client (a pool, a job declarator) can send after the Noise handshake
//! (SetupConnection, CoinbaseOutputConstraints, RequestTransactionData, SubmitSolution with
//! any coinbase), between templates on the same tip and on new tips. The Noise layer is left
//! out (`noise_responder` fuzzes it).
//!
//! Checked besides "no panic":
//! - every message the provider sends is one whole frame that our decoder reads as a message
//!   a Template Provider may send;
//! - a solution the session turns into a block has a valid merkle root and meets its target
//!   (one that does not is refused, never kept nor given to the node);
//! - an honest solution (its coinbase built from the NewTemplate as 07 says: the template's
//!   prefix, sequence, version, locktime and outputs, the value remaining to the client) is
//!   either a block, or refused only for missing the target; on the current tip that block is
//!   one the embedded chain takes;
//! - an error ends the session for good.
//!
//! The first input byte: bit 7, a valid SetupConnection and CoinbaseOutputConstraints (of the
//! sizes in the next three bytes) come first; bit 6, a new template after every step.
//!
//! Steps, each chosen by its first byte:
//! - `0x00..=0xef`: a message: extension type (2 bytes), message type (1), payload length
//!   (2, at most the bytes left), payload; the frame header is built from them;
//! - `0xf0`: a new template on the same tip; `0xf1`: a new tip (a block of the chain's own);
//! - `0xf2`: an honest solution on the last template sent: nonce (4), the length of the
//!   client's part of the scriptSig (1, at most 60) and its bytes;
//! - `0xf3`: RequestTransactionData for the last template sent;
//! - anything else is skipped.

#![no_main]

mod common;

use std::sync::Arc;

use bitcoin::consensus::{Decodable, serialize};
use bitcoin::{
    Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness, absolute::LockTime,
    transaction,
};
use blvm_stratum_v2::connection::Protocol;
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain};
use blvm_stratum_v2::template_provider::session::{
    ServedTemplate, SolutionError, TpEvent, TpSession,
};
use blvm_stratum_v2::wire::template_distribution::{
    CoinbaseOutputConstraints, RequestTransactionData, SubmitSolution,
};
use blvm_stratum_v2::wire::{B0_64K, Frame, MAX_PAYLOAD_LEN, Message, encode_frame};
use libfuzzer_sys::fuzz_target;

const NOW_S: u32 = 1_800_000_000;

/// What a client keeps of the last NewTemplate to build its coinbase.
struct TemplateView {
    id: u64,
    version: u32,
    coinbase_tx_version: u32,
    coinbase_prefix: Vec<u8>,
    coinbase_tx_input_sequence: u32,
    coinbase_tx_value_remaining: u64,
    outputs: Vec<TxOut>,
    coinbase_tx_locktime: u32,
}

struct Rig {
    chain: EmbeddedChain,
    session: TpSession,
    template_id: u64,
    /// The last template sent, and the header time of the last SetNewPrevHash.
    last: Option<TemplateView>,
    header_time: u32,
    /// The target of the last SetNewPrevHash.
    target: bitcoin::Target,
    ended: bool,
}

impl Rig {
    fn new() -> Rig {
        let chain = EmbeddedChain::new(ChainConfig {
            bits: 0x207f_ffff,
            synthetic_transactions: 3,
            block_interval_secs: 0,
            ..ChainConfig::default()
        });
        let mut rig = Rig {
            chain,
            session: TpSession::new(),
            template_id: 0,
            last: None,
            header_time: 0,
            target: bitcoin::Target::MAX,
            ended: false,
        };
        rig.new_template();
        rig
    }

    fn new_template(&mut self) {
        self.template_id += 1;
        let template = self.chain.template(NOW_S);
        let served = Arc::new(ServedTemplate::new(self.template_id, template));
        self.session.on_template(&served);
        self.check_output();
    }

    /// A block of the chain's own (a coinbase of its own, as another miner's): a new tip.
    fn new_tip(&mut self) {
        let template = self.chain.template(NOW_S);
        let coinbase = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: bitcoin::script::Builder::new()
                    .push_int(i64::from(template.height))
                    .push_slice([0xab; 4])
                    .into_script(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(1),
                script_pubkey: ScriptBuf::new_op_return([7]),
            }],
        };
        let mut block = bitcoin::Block {
            header: bitcoin::block::Header {
                version: template.version,
                prev_blockhash: template.prev_hash,
                merkle_root: bitcoin::TxMerkleNode::from_raw_hash(
                    coinbase.compute_txid().to_raw_hash(),
                ),
                time: template.cur_time.max(template.min_time),
                bits: template.bits,
                nonce: 0,
            },
            txdata: vec![coinbase],
        };
        while block.header.validate_pow(block.header.target()).is_err() {
            block.header.nonce += 1;
        }
        self.chain
            .submit_block(&block, NOW_S)
            .expect("the chain's own block");
        self.new_template();
    }

    fn feed(&mut self, frame: &[u8]) {
        if self.ended {
            return;
        }
        if self
            .session
            .handle_message(frame, u64::from(NOW_S) * 1000)
            .is_err()
        {
            self.ended = true;
        }
        self.check_output();
    }

    fn check_output(&mut self) {
        let out = std::mem::take(self.session.output());
        let mut rest: &[u8] = &out;
        while !rest.is_empty() {
            let (frame, used) = Frame::parse(rest, MAX_PAYLOAD_LEN)
                .expect("the provider sends valid frames")
                .expect("the provider sends whole frames");
            match frame
                .message()
                .expect("the provider sends known messages")
                .0
            {
                Message::NewTemplate(t) => {
                    let mut bytes = t.coinbase_tx_outputs.as_bytes();
                    let outputs = (0..t.coinbase_tx_outputs_count)
                        .map(|_| TxOut::consensus_decode(&mut bytes).expect("template output"))
                        .collect();
                    assert!(
                        bytes.is_empty(),
                        "coinbase_tx_outputs_count covers the outputs"
                    );
                    self.last = Some(TemplateView {
                        id: t.template_id,
                        version: t.version,
                        coinbase_tx_version: t.coinbase_tx_version,
                        coinbase_prefix: t.coinbase_prefix.as_bytes().to_vec(),
                        coinbase_tx_input_sequence: t.coinbase_tx_input_sequence,
                        coinbase_tx_value_remaining: t.coinbase_tx_value_remaining,
                        outputs,
                        coinbase_tx_locktime: t.coinbase_tx_locktime,
                    });
                }
                Message::TemplateSetNewPrevHash(p) => {
                    self.header_time = p.header_timestamp;
                    self.target = bitcoin::Target::from_le_bytes(p.target);
                }
                Message::SetupConnectionSuccess(_)
                | Message::SetupConnectionError(_)
                | Message::RequestTransactionDataSuccess(_)
                | Message::RequestTransactionDataError(_) => {}
                other => panic!("a Template Provider does not send {}", other.name()),
            }
            rest = &rest[used..];
        }
        let events: Vec<TpEvent> = self.session.drain_events().collect();
        for event in events {
            // The fuzzer's own SubmitSolutions: any coinbase. (Honest ones: `solve`.)
            if let TpEvent::Solution { block, .. } = event {
                assert!(block.check_merkle_root(), "a solution's merkle root");
                assert!(block.header.validate_pow(block.header.target()).is_ok());
            }
        }
    }

    /// An honest solution on the last template: its coinbase as 07 describes.
    fn solve(&mut self, step: &[u8]) -> usize {
        let [n0, n1, n2, n3, len, ..] = *step else {
            return step.len();
        };
        let len = usize::from(len % 61).min(step.len() - 5);
        let extra = &step[5..5 + len];
        let Some(t) = &self.last else {
            return 5 + len;
        };
        let mut script_sig = t.coinbase_prefix.clone();
        script_sig.push(len as u8);
        script_sig.extend_from_slice(extra);
        let mut output = vec![TxOut {
            value: Amount::from_sat(t.coinbase_tx_value_remaining),
            script_pubkey: ScriptBuf::new_op_return([1, 2, 3]),
        }];
        output.extend(t.outputs.iter().cloned());
        let coinbase = Transaction {
            version: transaction::Version(t.coinbase_tx_version as i32),
            lock_time: LockTime::from_consensus(t.coinbase_tx_locktime),
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script_sig),
                sequence: Sequence(t.coinbase_tx_input_sequence),
                witness: Witness::from_slice(&[[0u8; 32]]),
            }],
            output,
        };
        let bytes = serialize(&coinbase);
        let message = SubmitSolution {
            template_id: t.id,
            version: t.version,
            header_timestamp: self.header_time,
            header_nonce: u32::from_le_bytes([n0, n1, n2, n3]),
            coinbase_tx: B0_64K::new(&bytes).expect("a coinbase under 64 KiB"),
        };
        if self.ended {
            return 5 + len;
        }
        let tip = self.chain.tip();
        let mut frame = Vec::new();
        encode_frame(&message, &mut frame).expect("encodable");
        if self
            .session
            .handle_message(&frame, u64::from(NOW_S) * 1000)
            .is_err()
        {
            self.ended = true;
        }
        let events: Vec<TpEvent> = self.session.drain_events().collect();
        for event in events {
            match event {
                TpEvent::Solution { block, .. } => {
                    assert!(block.check_merkle_root(), "a solution's merkle root");
                    assert_eq!(block.txdata[0], coinbase, "the client's coinbase, as sent");
                    assert!(block.header.validate_pow(block.header.target()).is_ok());
                    if block.header.prev_blockhash == tip {
                        self.chain
                            .submit_block(&block, NOW_S)
                            .expect("the chain takes an honest solution on its tip");
                        self.new_template();
                    }
                }
                TpEvent::SolutionRefused(SolutionError::HighHash { hash, .. }) => assert!(
                    !self.target.is_met_by(hash),
                    "an honest block refused as missing its target"
                ),
                TpEvent::SolutionRefused(e) => {
                    panic!("an honest solution on the last template sent was refused: {e}")
                }
                _ => {}
            }
        }
        self.check_output();
        5 + len
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, mut input)) = data.split_first() else {
        return;
    };
    let mut rig = Rig::new();
    if control & 0x80 != 0 {
        let [s0, s1, sigops, rest @ ..] = input else {
            return;
        };
        input = rest;
        rig.feed(&common::setup_connection(2, 0));
        rig.feed(&common::encoded(&CoinbaseOutputConstraints {
            coinbase_output_max_additional_size: u32::from(u16::from_le_bytes([*s0, *s1])),
            coinbase_output_max_additional_sigops: u16::from(*sigops),
        }));
    }
    let templates = control & 0x40 != 0;
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        match op {
            0x00..=0xef => {
                let Some((frame, rest)) = common::message_step(input) else {
                    break;
                };
                input = rest;
                rig.feed(&frame);
            }
            0xf0 => rig.new_template(),
            0xf1 => rig.new_tip(),
            0xf2 => {
                let used = rig.solve(input);
                input = &input[used..];
            }
            0xf3 => {
                if let Some(id) = rig.last.as_ref().map(|t| t.id) {
                    rig.feed(&common::encoded(&RequestTransactionData {
                        template_id: id,
                    }));
                }
            }
            _ => {}
        }
        if templates {
            rig.new_template();
        }
    }
});
