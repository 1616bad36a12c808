//! The CPU miner speaking Stratum V1 (`miner --sv1`): the SV2 [`MinerSession`] with a
//! translation in front of it, the mirror of the pool's `Sv1Session`. The session's SV2
//! requests become SV1 lines (SetupConnection mining.configure and mining.subscribe,
//! OpenExtendedMiningChannel mining.authorize, SubmitSharesExtended mining.submit with the
//! rolled version bits), and the pool's lines become the SV2 messages the session expects
//! (the channel's opening once subscribed, authorized and told a difficulty; mining.notify a
//! job, with a prev hash when it cleans or moves the tip; mining.set_difficulty SetTarget; a
//! submit's answer SubmitShares.Success or .Error). Hashing, jobs, share bookkeeping and the
//! driver are the SV2 miner's.
//!
//! Job ids are the pool's strings, numbered here for the session (any pool's ids work).

use std::collections::VecDeque;

use bitcoin::hex::{DisplayHex, FromHex};
use serde_json::{Value, json};

use super::miner::{MinerConfig, MinerEvent, MinerSession, MinerSessionError};
use crate::block::target::target_of_difficulty;
use crate::connection::{Outbox, Protocol};
use crate::wire::common::{Reconnect, SetupConnectionSuccess};
use crate::wire::mining::{
    NewExtendedMiningJob, OpenExtendedMiningChannelSuccess, SetNewPrevHash, SetTarget,
    SubmitSharesError, SubmitSharesSuccess,
};
use crate::wire::{B0_32, B0_64K, Frame, Message, Seq0_255, Str0_255, Sv2Message, U256};

/// The version bits asked for (BIP320's, the ones the hashers roll).
pub const SV1_VERSION_MASK: u32 = 0x1fff_e000;
/// The one channel's id, as the session knows it.
const CHANNEL_ID: u32 = 1;
/// Job ids remembered (string to number).
const JOB_IDS: usize = 64;

const CONFIGURE_ID: u64 = 1;
const SUBSCRIBE_ID: u64 = 2;
const AUTHORIZE_ID: u64 = 3;

/// One SV1 pool connection's state. See the module documentation.
#[derive(Debug)]
pub struct Sv1MinerSession {
    inner: MinerSession,
    out: Outbox,
    to_inner: Outbox,
    user: String,
    version_rolling: bool,
    /// BIP310's negotiated mask (0: none).
    mask: u32,
    extranonce: Option<(Vec<u8>, usize)>,
    difficulty: Option<f64>,
    /// The session's OpenExtendedMiningChannel request id, once it asked.
    open_request: Option<u32>,
    authorized: bool,
    open: bool,
    /// Notifications that came before the channel was open.
    early: Vec<Value>,
    prev_hash: Option<U256>,
    job_ids: VecDeque<(u32, String)>,
    next_job: u32,
    next_id: u64,
    /// Submits in flight: request id, sequence number.
    submits: VecDeque<(u64, u32)>,
}

impl Sv1MinerSession {
    /// A session for `config` (extended channel); mining.configure and mining.subscribe are
    /// queued at once.
    pub fn new(config: MinerConfig) -> Result<Self, MinerSessionError> {
        let user = config.user_identity.clone();
        let version_rolling = config.version_rolling;
        let mut s = Sv1MinerSession {
            inner: MinerSession::new(config)?,
            out: Outbox::new(),
            to_inner: Outbox::new(),
            user,
            version_rolling,
            mask: 0,
            extranonce: None,
            difficulty: None,
            open_request: None,
            authorized: false,
            open: false,
            early: Vec::new(),
            prev_hash: None,
            job_ids: VecDeque::new(),
            next_job: 1,
            next_id: 10,
            submits: VecDeque::new(),
        };
        s.translate_out()?;
        Ok(s)
    }

    /// The SV2 session underneath (counts, work).
    pub fn session(&self) -> &MinerSession {
        &self.inner
    }

    /// The SV2 session underneath, to submit shares or close; what it queues is translated
    /// when the connection takes the output.
    pub fn session_mut(&mut self) -> &mut MinerSession {
        &mut self.inner
    }

    fn line(&mut self, v: &Value) {
        let mut bytes = serde_json::to_vec(v).unwrap_or_default();
        bytes.push(b'\n');
        self.out.push_raw(&bytes);
    }

    fn request(&mut self, id: u64, method: &str, params: Value) {
        self.line(&json!({"id": id, "method": method, "params": params}));
    }

    fn feed<'m, M: Sv2Message<'m>>(&mut self, msg: &M) -> Result<(), MinerSessionError> {
        self.to_inner.clear();
        self.to_inner.push(msg)?;
        let frame: &[u8] = &self.to_inner;
        self.inner.handle_frame(&Frame::parse_exact(frame)?, 0)
    }

    /// Turns what the SV2 session queued into SV1 lines.
    fn translate_out(&mut self) -> Result<(), MinerSessionError> {
        loop {
            let frames = std::mem::take(self.inner.output());
            if frames.message_count() == 0 {
                *self.inner.output() = frames;
                return Ok(());
            }
            for bytes in frames.messages() {
                let frame = Frame::parse_exact(bytes)?;
                let Some((message, _)) = frame.known_message()? else {
                    continue;
                };
                self.request_for(message)?;
            }
        }
    }

    fn request_for(&mut self, message: Message<'_>) -> Result<(), MinerSessionError> {
        match message {
            Message::SetupConnection(m) => {
                if self.version_rolling {
                    self.request(
                        CONFIGURE_ID,
                        "mining.configure",
                        json!([["version-rolling"], {
                            "version-rolling.mask": format!("{SV1_VERSION_MASK:08x}"),
                            "version-rolling.min-bit-count": 2,
                        }]),
                    );
                }
                let agent = m.vendor.to_string_lossy().into_owned();
                self.request(SUBSCRIBE_ID, "mining.subscribe", json!([agent]));
                self.feed(&SetupConnectionSuccess {
                    used_version: 2,
                    flags: 0,
                })?;
            }
            Message::OpenExtendedMiningChannel(m) => {
                self.open_request = Some(m.request_id);
                let user = self.user.clone();
                self.request(AUTHORIZE_ID, "mining.authorize", json!([user, "x"]));
            }
            Message::OpenStandardMiningChannel(_) => {
                return Err(MinerSessionError::Config(
                    "Stratum V1 mines on extended channels only".into(),
                ));
            }
            Message::SubmitSharesExtended(m) => {
                let Some(job) = self
                    .job_ids
                    .iter()
                    .find(|(n, _)| *n == m.job_id)
                    .map(|(_, s)| s.clone())
                else {
                    return Ok(());
                };
                self.next_id += 1;
                let id = self.next_id;
                self.submits.push_back((id, m.sequence_number));
                let mut params = vec![
                    json!(self.user),
                    json!(job),
                    json!(m.extranonce.as_bytes().to_lower_hex_string()),
                    json!(format!("{:08x}", m.ntime)),
                    json!(format!("{:08x}", m.nonce)),
                ];
                if self.mask != 0 {
                    params.push(json!(format!("{:08x}", m.version & self.mask)));
                }
                self.request(id, "mining.submit", Value::Array(params));
            }
            // CloseChannel and the rest: nothing to say over SV1 (the driver closes the
            // socket).
            _ => {}
        }
        Ok(())
    }

    fn handle_line(&mut self, line: &[u8]) -> Result<(), MinerSessionError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(line)
            .map_err(|e| MinerSessionError::Protocol(format!("not JSON from the pool: {e}")))?;
        if let Some(method) = v.get("method").and_then(Value::as_str) {
            if !self.open && method == "mining.notify" {
                self.early.push(v);
                return Ok(());
            }
            return self.on_notification(method, &v["params"]);
        }
        let id = v.get("id").and_then(Value::as_u64).unwrap_or(0);
        let error = v.get("error").filter(|e| !e.is_null());
        let result = &v["result"];
        match id {
            CONFIGURE_ID => {
                let mask = result
                    .get("version-rolling.mask")
                    .and_then(Value::as_str)
                    .and_then(|h| u32::from_str_radix(h, 16).ok());
                if result["version-rolling"] == true {
                    self.mask = mask.unwrap_or(0) & SV1_VERSION_MASK;
                }
            }
            SUBSCRIBE_ID => {
                if let Some(e) = error {
                    return Err(MinerSessionError::SetupRefused {
                        code: e.to_string(),
                        flags: 0,
                    });
                }
                let en1 = result[1]
                    .as_str()
                    .and_then(|h| Vec::<u8>::from_hex(h).ok())
                    .filter(|e| e.len() <= 32);
                let size = result[2].as_u64().filter(|s| (1..=32).contains(s));
                let (Some(en1), Some(size)) = (en1, size) else {
                    return Err(MinerSessionError::Protocol(format!(
                        "mining.subscribe answer {result}"
                    )));
                };
                self.extranonce = Some((en1, size as usize));
            }
            AUTHORIZE_ID => {
                if error.is_some() || *result != true {
                    return Err(MinerSessionError::ChannelRefused(
                        error.map_or_else(|| result.to_string(), Value::to_string),
                    ));
                }
                self.authorized = true;
            }
            _ => {
                let Some(at) = self.submits.iter().position(|(i, _)| *i == id) else {
                    return Ok(());
                };
                let Some((_, seq)) = self.submits.remove(at) else {
                    return Ok(());
                };
                match error {
                    None if *result == true => self.feed(&SubmitSharesSuccess {
                        channel_id: CHANNEL_ID,
                        last_sequence_number: seq,
                        new_submits_accepted_count: 1,
                        new_shares_sum: 0,
                    })?,
                    _ => {
                        let text = error.map_or_else(|| "rejected".to_owned(), Value::to_string);
                        let code: String = text.chars().take(255).collect();
                        self.feed(&SubmitSharesError {
                            channel_id: CHANNEL_ID,
                            sequence_number: seq,
                            error_code: Str0_255::new(&code).unwrap_or_default(),
                        })?;
                    }
                }
            }
        }
        self.try_open()
    }

    /// Opens the session's channel once subscribed, authorized and told a difficulty.
    fn try_open(&mut self) -> Result<(), MinerSessionError> {
        if self.open || !self.authorized {
            return Ok(());
        }
        let (Some((en1, size)), Some(difficulty), Some(request_id)) =
            (self.extranonce.clone(), self.difficulty, self.open_request)
        else {
            return Ok(());
        };
        self.feed(&OpenExtendedMiningChannelSuccess {
            request_id,
            channel_id: CHANNEL_ID,
            target: target_of_difficulty(difficulty),
            extranonce_size: size as u16,
            extranonce_prefix: B0_32::new(&en1)?,
            group_channel_id: 0,
        })?;
        self.open = true;
        for v in std::mem::take(&mut self.early) {
            if let Some(method) = v.get("method").and_then(Value::as_str) {
                self.on_notification(method, &v["params"])?;
            }
        }
        Ok(())
    }

    fn on_notification(&mut self, method: &str, params: &Value) -> Result<(), MinerSessionError> {
        let bad = || MinerSessionError::Protocol(format!("{method} {params}"));
        match method {
            "mining.set_difficulty" => {
                let d = params[0]
                    .as_f64()
                    .filter(|d| d.is_finite() && *d > 0.0)
                    .ok_or_else(bad)?;
                self.difficulty = Some(d);
                if self.open {
                    self.feed(&SetTarget {
                        channel_id: CHANNEL_ID,
                        maximum_target: target_of_difficulty(d),
                    })?;
                }
                self.try_open()?;
            }
            "mining.notify" => {
                let text = |i: usize| params[i].as_str().ok_or_else(bad);
                let hex = |i: usize| Vec::<u8>::from_hex(text(i)?).map_err(|_| bad());
                let word = |i: usize| u32::from_str_radix(text(i)?, 16).map_err(|_| bad());
                let job = text(0)?.to_owned();
                let swapped = <[u8; 32]>::from_hex(text(1)?).map_err(|_| bad())?;
                let mut prev_hash = [0u8; 32];
                for (o, w) in prev_hash.chunks_exact_mut(4).zip(swapped.chunks_exact(4)) {
                    o.copy_from_slice(&[w[3], w[2], w[1], w[0]]);
                }
                let (coinb1, coinb2) = (hex(2)?, hex(3)?);
                let branch: Vec<U256> = params[4]
                    .as_array()
                    .ok_or_else(bad)?
                    .iter()
                    .map(|h| h.as_str().and_then(|h| <[u8; 32]>::from_hex(h).ok()))
                    .collect::<Option<_>>()
                    .ok_or_else(bad)?;
                let (version, nbits, ntime) = (word(5)?, word(6)?, word(7)?);
                let clean = params[8].as_bool().unwrap_or(false);
                let job_id = self.next_job;
                self.next_job = self.next_job.wrapping_add(1).max(1);
                if self.job_ids.len() == JOB_IDS {
                    self.job_ids.pop_front();
                }
                self.job_ids.push_back((job_id, job));
                let new_tip = clean || self.prev_hash != Some(prev_hash);
                self.feed(&NewExtendedMiningJob {
                    channel_id: CHANNEL_ID,
                    job_id,
                    min_ntime: (!new_tip).then_some(ntime),
                    version,
                    version_rolling_allowed: self.mask & SV1_VERSION_MASK == SV1_VERSION_MASK,
                    merkle_path: Seq0_255::new(&branch)?,
                    coinbase_tx_prefix: B0_64K::new(&coinb1)?,
                    coinbase_tx_suffix: B0_64K::new(&coinb2)?,
                })?;
                if new_tip {
                    self.prev_hash = Some(prev_hash);
                    self.feed(&SetNewPrevHash {
                        channel_id: CHANNEL_ID,
                        job_id,
                        prev_hash,
                        min_ntime: ntime,
                        nbits,
                    })?;
                }
            }
            "mining.set_version_mask" => {
                let mask = params[0]
                    .as_str()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .ok_or_else(bad)?;
                self.mask = mask & SV1_VERSION_MASK;
            }
            // The pool is stopping: the session's Reconnect (the driver decides what follows).
            "client.reconnect" => {
                let host = params[0].as_str().unwrap_or("").to_owned();
                let port = params[1]
                    .as_u64()
                    .or_else(|| params[1].as_str().and_then(|p| p.parse().ok()))
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0);
                self.feed(&Reconnect {
                    new_host: Str0_255::new(&host).unwrap_or_default(),
                    new_port: port,
                })?;
            }
            // mining.set_extranonce, client.show_message...: not followed.
            _ => {}
        }
        Ok(())
    }
}

impl Protocol for Sv1MinerSession {
    type Event = MinerEvent;
    type Error = MinerSessionError;

    fn handle_message(&mut self, message: &[u8], _now_ms: u64) -> Result<(), MinerSessionError> {
        self.handle_line(message)?;
        self.translate_out()
    }

    /// The lines to send, with whatever the SV2 session queued since (a share submitted, a
    /// close) translated first.
    fn outbox(&mut self) -> &mut Outbox {
        // A translation error here can only be a frame of our own session that does not
        // decode; it is dropped (the next input reports errors).
        let _ = self.translate_out();
        &mut self.out
    }

    fn take_events(&mut self, into: &mut VecDeque<MinerEvent>) {
        Protocol::take_events(&mut self.inner, into);
    }

    fn is_set_up(&self) -> bool {
        self.inner.is_open()
    }
}
