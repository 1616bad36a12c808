//! Arbitrary messages into the pool's Stratum V2 mining session on real work: every message a
//! miner can send after the Noise handshake (SetupConnection, channel openings with any
//! user_identity, UpdateChannel, CloseChannel, share submissions standard and extended, with
//! and without TLVs), new templates and new tips between them, and time passing. The Noise
//! layer is left out on purpose (`noise_responder` fuzzes it): what reaches the session is
//! what an authenticated miner sent, the pool's widest surface.
//!
//! Checked besides "no panic":
//! - every message the pool sends is one whole frame that our decoder reads as a message the
//!   pool may send;
//! - every credited share's hash meets the target it is credited at, and its credit is that
//!   target's difficulty (money is never given for work no hash showed), and no hash is
//!   credited twice in a session (a share resent, on a job still open or retired, is not
//!   paid again);
//! - every found block passes rust-bitcoin's proof-of-work and merkle-root checks, and one on
//!   the chain's tip is taken by the embedded chain (one on a tip that has moved is not
//!   submitted: the chain would only keep it as a sibling);
//! - an error ends the session for good (the caller closes the connection).
//!
//! The first input byte: bit 7, a valid SetupConnection and two channels (a standard one paid
//! to the pool, an extended solo one) come first, so the fuzzer reaches the share paths at
//! once; bit 6, the periodic work after every step; bit 5, durable acknowledgements (the
//! ledger's holds); bits 0-1, the version-rolling and worker-TLV setup flags of the prelude.
//!
//! The rest is a sequence of steps, each chosen by its first byte:
//! - `0x00..=0xef`: a message: extension type (2 bytes), message type (1), payload length (2,
//!   at most the bytes left), payload; the frame header is built from them, so the fuzzer
//!   works on the payloads;
//! - `0xf0`: a new template on the same tip; `0xf1`: a new tip (a block of the chain's own);
//! - `0xf2`: 70 s pass (liveness, vardiff, retired jobs' grace);
//! - `0xf3`: a share on the last job the pool sent: channel index (1 byte, modulo the channels
//!   the pool opened), nonce (4), nTime offset from the job's (1), version bits (4), the
//!   extranonce (1 length byte, then the bytes), so that the fuzzer's shares meet the easy
//!   targets and reach crediting and block assembly;
//! - `0xf4`: the pool asks the miner to reconnect (a drain);
//! - `0xf5`: the last share of `0xf3` sent again (its sequence number too, or the next one
//!   when the step's next byte is odd);
//! - anything else is skipped.

#![no_main]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use blvm_stratum_v2::connection::Protocol;
use blvm_stratum_v2::mining::{ExtranonceAllocator, MiningConfig, Session, SessionEvent, Work};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain};
use blvm_stratum_v2::wire::mining::{
    OpenExtendedMiningChannel, OpenStandardMiningChannel, SubmitSharesExtended,
    SubmitSharesStandard,
};
use blvm_stratum_v2::wire::{
    B0_32, Frame, HEADER_LEN, MAX_PAYLOAD_LEN, Message, Str0_255, encode_frame,
};
use libfuzzer_sys::fuzz_target;

const NOW_S: u32 = 1_800_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;
const ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

/// What the miner knows of a channel from the pool's messages.
#[derive(Default, Clone)]
struct ChannelView {
    extended: bool,
    /// The last job sent on it, and its nTime floor (from SetNewPrevHash or the job).
    job_id: Option<u32>,
    version: u32,
    min_ntime: u32,
    extranonce_size: usize,
}

struct Rig {
    chain: EmbeddedChain,
    config: Arc<MiningConfig>,
    session: Session,
    work_id: u64,
    now: u64,
    channels: BTreeMap<u32, ChannelView>,
    ended: bool,
    sequence: u32,
    /// The last share built by a `0xf3` step, as sent.
    last_share: Option<Vec<u8>>,
    /// Every hash credited so far.
    credited: std::collections::HashSet<bitcoin::BlockHash>,
}

impl Rig {
    fn new(durable: bool) -> Rig {
        let config = Arc::new(MiningConfig {
            // Targets between a quarter and a fortieth of all hashes: the fuzzer's shares are
            // credited, and vardiff has room to move.
            min_difficulty: 1e-9,
            max_difficulty: 1e-8,
            payout_network: Some(bitcoin::Network::Regtest),
            durable_acks: durable,
            ..MiningConfig::default()
        });
        // Every other hash is a block: the fuzzer finds them without searching.
        let chain = EmbeddedChain::new(ChainConfig {
            bits: 0x207f_ffff,
            synthetic_transactions: 3,
            block_interval_secs: 0,
            ..ChainConfig::default()
        });
        let session = Session::new(config.clone(), Arc::new(ExtranonceAllocator::new()));
        let mut rig = Rig {
            chain,
            config,
            session,
            work_id: 0,
            now: NOW_MS,
            channels: BTreeMap::new(),
            ended: false,
            sequence: 0,
            last_share: None,
            credited: std::collections::HashSet::new(),
        };
        rig.new_work();
        rig
    }

    fn new_work(&mut self) {
        self.work_id += 1;
        let template = self.chain.template((self.now / 1000) as u32);
        let work = Work::new(self.work_id, template, &self.config.coinbase).expect("work");
        self.session.on_work(&work, self.now);
        self.check_output();
    }

    /// A block of the chain's own: a new tip for the session.
    fn new_tip(&mut self) {
        let template = self.chain.template((self.now / 1000) as u32);
        let work = Work::new(u64::MAX, template, &self.config.coinbase).expect("work");
        let extranonce = vec![0xee; self.config.coinbase.extranonce_len];
        let block = (0..u32::MAX)
            .map(|nonce| work.assemble_block(&[], &extranonce, work.version, work.cur_time, nonce))
            .find(|b| b.header.validate_pow(b.header.target()).is_ok())
            .expect("a nonce on regtest's powLimit");
        self.chain
            .submit_block(&block, (self.now / 1000) as u32)
            .expect("the chain's own block");
        self.new_work();
    }

    fn feed(&mut self, frame: &[u8]) {
        if self.ended {
            return;
        }
        if self.session.handle_message(frame, self.now).is_err() {
            self.ended = true;
        }
        self.check_output();
    }

    fn tick(&mut self) {
        if self.ended {
            return;
        }
        if self.session.handle_timeout(self.now).is_err() {
            self.ended = true;
        }
        self.check_output();
    }

    /// Reads what the pool sent (frames, events) and checks it.
    fn check_output(&mut self) {
        let out = std::mem::take(self.session.output());
        let mut rest: &[u8] = &out;
        while !rest.is_empty() {
            let (frame, used) = Frame::parse(rest, MAX_PAYLOAD_LEN)
                .expect("the pool sends valid frames")
                .expect("the pool sends whole frames");
            let (message, _) = frame.message().expect("the pool sends known messages");
            self.learn(&message);
            rest = &rest[used..];
        }
        let mut events = std::collections::VecDeque::new();
        self.session.take_events(&mut events);
        for event in events {
            self.check_event(event);
        }
    }

    fn learn(&mut self, message: &Message<'_>) {
        match message {
            Message::OpenStandardMiningChannelSuccess(m) => {
                self.channels.insert(m.channel_id, ChannelView::default());
            }
            Message::OpenExtendedMiningChannelSuccess(m) => {
                self.channels.insert(
                    m.channel_id,
                    ChannelView {
                        extended: true,
                        extranonce_size: usize::from(m.extranonce_size),
                        ..ChannelView::default()
                    },
                );
            }
            Message::NewMiningJob(m) => self.job(m.channel_id, m.job_id, m.version, m.min_ntime),
            Message::NewExtendedMiningJob(m) => {
                self.job(m.channel_id, m.job_id, m.version, m.min_ntime)
            }
            Message::SetNewPrevHash(m) => {
                let group = !self.channels.contains_key(&m.channel_id);
                for (id, ch) in self.channels.iter_mut() {
                    if *id == m.channel_id || (group && !ch.extended) {
                        ch.min_ntime = m.min_ntime;
                    }
                }
            }
            Message::CloseChannel(m) => {
                self.channels.remove(&m.channel_id);
            }
            Message::SetupConnectionSuccess(_)
            | Message::SetupConnectionError(_)
            | Message::OpenMiningChannelError(_)
            | Message::UpdateChannelError(_)
            | Message::SetExtranoncePrefix(_)
            | Message::SetTarget(_)
            | Message::SubmitSharesSuccess(_)
            | Message::SubmitSharesError(_)
            | Message::SetCustomMiningJobError(_)
            | Message::Reconnect(_)
            | Message::SetGroupChannel(_)
            | Message::RequestExtensionsSuccess(_)
            | Message::RequestExtensionsError(_) => {}
            other => panic!(
                "the pool sent a message only a client sends: {}",
                other.name()
            ),
        }
    }

    /// A job on a channel, or on the group of the standard channels (the pool sends a group
    /// extended jobs when the miner did not ask for standard jobs).
    fn job(&mut self, channel_id: u32, job_id: u32, version: u32, min_ntime: Option<u32>) {
        let group = !self.channels.contains_key(&channel_id);
        for (id, ch) in self.channels.iter_mut() {
            if *id == channel_id || (group && !ch.extended) {
                ch.job_id = Some(job_id);
                ch.version = version;
                if let Some(t) = min_ntime {
                    ch.min_ntime = t;
                }
            }
        }
    }

    fn check_event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::ShareAccepted {
                hash,
                target,
                difficulty,
                ..
            } => {
                assert!(
                    target.is_met_by(hash),
                    "credited at a target its hash does not meet"
                );
                assert!(self.credited.insert(hash), "share {hash} credited twice");
                let expected = target.difficulty_float();
                assert!(
                    (difficulty - expected).abs() <= expected * 1e-9,
                    "credit {difficulty} is not its target's difficulty {expected}"
                );
            }
            SessionEvent::BlockFound(found) => {
                let block = &found.block;
                assert!(block.check_merkle_root(), "a found block's merkle root");
                assert!(
                    block.header.validate_pow(block.header.target()).is_ok(),
                    "a found block's proof of work"
                );
                // Blocks on the current tip connect; one on a tip that has moved (the session
                // keeps crediting recent jobs) is refused as such, never as invalid.
                if block.header.prev_blockhash == self.chain.tip() {
                    self.chain
                        .submit_block(block, (self.now / 1000) as u32)
                        .expect("the embedded chain takes a block the pool found");
                    self.new_work();
                }
            }
            _ => {}
        }
    }

    /// A share on the last job of channel number `pick` (in id order).
    fn share(&mut self, step: &[u8]) -> usize {
        let [pick, n0, n1, n2, n3, dt, v0, v1, v2, v3, en_len, ..] = *step else {
            return step.len();
        };
        let en_len = usize::from(en_len % 33);
        let used = 11 + en_len.min(step.len() - 11);
        let extranonce = &step[11..used];
        if self.channels.is_empty() {
            return used;
        }
        let (&channel_id, ch) = self
            .channels
            .iter()
            .nth(usize::from(pick) % self.channels.len())
            .expect("in range");
        let Some(job_id) = ch.job_id else {
            return used;
        };
        self.sequence = self.sequence.wrapping_add(1);
        let nonce = u32::from_le_bytes([n0, n1, n2, n3]);
        let ntime = ch.min_ntime.wrapping_add(u32::from(dt % 8));
        let version = ch.version ^ (u32::from_le_bytes([v0, v1, v2, v3]) & 0x1fff_e000);
        let mut frame = Vec::new();
        if ch.extended {
            // The extranonce of the size agreed, unless the input asks for another.
            let mut en = extranonce.to_vec();
            if en_len == 0 {
                en = vec![0x5a; ch.extranonce_size];
            }
            let m = SubmitSharesExtended {
                channel_id,
                sequence_number: self.sequence,
                job_id,
                nonce,
                ntime,
                version,
                extranonce: B0_32::new(&en).expect("at most 32 bytes"),
            };
            encode_frame(&m, &mut frame).expect("encodable");
        } else {
            let m = SubmitSharesStandard {
                channel_id,
                sequence_number: self.sequence,
                job_id,
                nonce,
                ntime,
                version,
            };
            encode_frame(&m, &mut frame).expect("encodable");
        }
        self.feed(&frame);
        self.last_share = Some(frame);
        used
    }

    /// The last share sent again, under the same sequence number or the next.
    fn resend(&mut self, next_sequence: bool) {
        let Some(mut frame) = self.last_share.clone() else {
            return;
        };
        if next_sequence {
            // The sequence number follows the channel id, right after the frame header.
            self.sequence = self.sequence.wrapping_add(1);
            frame[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&self.sequence.to_le_bytes());
        }
        self.feed(&frame);
    }
}

fn prelude(rig: &mut Rig, flags: u32) {
    rig.feed(&common::setup_connection(0, flags));
    let standard_user = format!("{ADDRESS}.rig1");
    rig.feed(&common::encoded(&OpenStandardMiningChannel {
        request_id: 1,
        user_identity: Str0_255::new(&standard_user).unwrap(),
        nominal_hash_rate: 0.0,
        max_target: [0xff; 32],
    }));
    let solo_user = format!("sri/solo/{ADDRESS}/rig2");
    rig.feed(&common::encoded(&OpenExtendedMiningChannel {
        request_id: 2,
        user_identity: Str0_255::new(&solo_user).unwrap(),
        nominal_hash_rate: 0.0,
        max_target: [0xff; 32],
        min_extranonce_size: 4,
    }));
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, mut input)) = data.split_first() else {
        return;
    };
    let mut rig = Rig::new(control & 0x20 != 0);
    if control & 0x80 != 0 {
        // Version rolling (bit 2) and the worker TLV's extension are the prelude's choice.
        let flags = match control & 0x03 {
            0 => 0,
            1 => 1 << 2,
            2 => 1,
            _ => (1 << 2) | 1,
        };
        prelude(&mut rig, flags);
    }
    let ticks = control & 0x40 != 0;
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
            0xf0 => rig.new_work(),
            0xf1 => rig.new_tip(),
            0xf2 => {
                rig.now += 70_000;
                rig.tick();
            }
            0xf3 => {
                let used = rig.share(input);
                input = &input[used..];
            }
            0xf5 => {
                let next = input.first().is_some_and(|b| b & 1 == 1);
                input = input.get(1..).unwrap_or_default();
                rig.resend(next);
            }
            0xf4 => {
                if !rig.ended {
                    rig.session.begin_drain(rig.now);
                    rig.check_output();
                }
            }
            _ => {}
        }
        rig.now += 13;
        if ticks {
            rig.tick();
        }
    }
    rig.now += 3_600_000;
    rig.tick();
    if rig.ended {
        // An ended session is never fed again by its connection; whatever it does with more
        // input must still not panic.
        rig.ended = false;
        rig.feed(&[0, 0, 0x1a, 0, 0, 0]);
    }
});
