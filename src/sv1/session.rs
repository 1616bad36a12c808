//! One Stratum V1 miner, sans-IO: lines of JSON-RPC in, lines out, and the pool's
//! [`SessionEvent`]s, exactly as an SV2 extended channel produces them.
//!
//! Why it wraps an SV2 [`Session`] instead of keeping channels of its own: one rule book. The
//! SV1 miner is an extended channel of an SV2 session held here; its requests become the SV2
//! messages they mean (mining.subscribe a SetupConnection and a reserved extranonce prefix,
//! mining.authorize an OpenExtendedMiningChannel, mining.submit a SubmitSharesExtended,
//! mining.suggest_difficulty an UpdateChannel), and the session's answers become SV1 lines
//! (NewExtendedMiningJob and SetNewPrevHash mining.notify, SetTarget mining.set_difficulty,
//! SubmitShares.Success the `true` of each submit it covers). Jobs from the pool's `Work`,
//! per-job targets, duplicate detection, block detection and assembly, vardiff, the rate
//! limit, liveness and durable acknowledgements (a submit is answered `true` only once the
//! ledger committed the share) are the SV2 session's own code, not a copy of it, and the
//! events the ledger, the statistics and the block submitter take are its events.
//!
//! The SV2 messages are encoded into a scratch buffer and decoded back here: a few hundred
//! bytes per share, against the JSON that SV1 costs anyway.

use std::collections::VecDeque;
use std::sync::Arc;

use bitcoin::hex::DisplayHex;
use serde_json::{Value, json};

use super::refusals::{Sv1Refusal, Sv1Refusals};
use super::request::{self, Configure, Method, Request, Submit};
use super::request_budget::RequestBudget;
use super::version_mask::rollable_mask;
use crate::block::target::{difficulty_of, target_of_difficulty, work_of};
use crate::connection::{Outbox, Protocol};
use crate::mining::session::{
    ChannelBudget, ExtranonceAllocator, LedgerStatus, MiningConfig, PROTOCOL_VERSION, Session,
    SessionError, SessionEvent, VERSION_ROLLING_MASK,
};
use crate::mining::{ShareRejection, Work};
use crate::payout::is_storable_name;
use crate::wire::common::{PROTOCOL_MINING, SetupConnection};
use crate::wire::extensions::RequestExtensions;
use crate::wire::mining::{
    NewExtendedMiningJob, OpenExtendedMiningChannel, SubmitSharesExtended, UpdateChannel,
};
use crate::wire::tlv::{TlvEncoder, USER_IDENTITY};
use crate::wire::{B0_32, Frame, Message, Seq0_64K, Str0_255, Sv2Message};

/// Longest line a miner may send (bytes, newline excluded): a mining.submit is about 200,
/// a mining.authorize with a 255-byte username and a password under 600. Past it the
/// connection ends.
pub const MAX_LINE: usize = 4096;

/// Requests answered with an error in a row (unknown methods, wrong parameters, submits
/// before authorize...) before the connection is closed: a miner that only sends nonsense
/// costs an answer each, not forever.
pub const MAX_BAD_REQUESTS: u32 = 64;

/// Future jobs kept until their SetNewPrevHash (the SV2 session sends the prev hash right
/// after its job; a few cover any order).
const FUTURE_JOBS: usize = 4;
/// Jobs whose version is remembered (to apply rolled version bits); the SV2 session keeps
/// `max_jobs` (10 by default) earning credit, and older ones only make blocks.
const JOB_VERSIONS: usize = 64;
/// Workers of the connection's user authorized beside the first (a proxy's devices).
pub const MAX_EXTRA_WORKERS: usize = 256;
/// The start difficulty on a chain of difficulty 1 or more unless `sv1_start_difficulty` is
/// set: a 1 TH/s device (the smallest common SV1 ASIC class) finds a share in about 2 s, near
/// the vardiff aim; a larger one is raised by vardiff's burst rule within its first 8 shares,
/// a smaller one lowered by its drought rule (12 expected intervals, about 40 s).
pub const DEFAULT_START_DIFFICULTY: f64 = 512.0;

/// The usual Stratum V1 error codes.
pub mod code {
    /// Other / unknown.
    pub const OTHER: i64 = 20;
    /// Job not found (stale).
    pub const JOB_NOT_FOUND: i64 = 21;
    /// Duplicate share.
    pub const DUPLICATE: i64 = 22;
    /// Low difficulty share.
    pub const LOW_DIFFICULTY: i64 = 23;
    /// Unauthorized worker.
    pub const UNAUTHORIZED: i64 = 24;
    /// Not subscribed.
    pub const NOT_SUBSCRIBED: i64 = 25;
}

/// The SV1 error code of a refused share.
pub fn rejection_code(reason: ShareRejection) -> i64 {
    match reason {
        ShareRejection::InvalidJobId | ShareRejection::StaleShare => code::JOB_NOT_FOUND,
        ShareRejection::DuplicateShare => code::DUPLICATE,
        ShareRejection::DifficultyTooLow => code::LOW_DIFFICULTY,
        ShareRejection::InvalidChannelId => code::UNAUTHORIZED,
        _ => code::OTHER,
    }
}

/// Why an SV1 connection ends.
#[derive(Debug, thiserror::Error)]
pub enum Sv1Error {
    /// A line that is not a JSON-RPC request (answered with error 20, id null).
    #[error("not a JSON-RPC request")]
    NotARequest,
    /// Too many requests in a row answered with an error.
    #[error("{0} bad requests in a row")]
    TooManyBadRequests(u32),
    /// More requests that are not shares than the connection's allowance
    /// ([`RequestBudget`](super::request_budget::RequestBudget)).
    #[error("requests that are not shares past the connection's allowance")]
    RequestFlood,
    /// The pool closed the miner's channel (idle, ...): SV1 has no channels, so the
    /// connection ends.
    #[error("channel closed: {0}")]
    ChannelClosed(String),
    /// The SV2 session under it ended (share flood, no authorize in time, ...).
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// What mining.subscribe gave the miner.
#[derive(Debug, Clone)]
struct Subscription {
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
}

/// A job sent before its prev hash (the first job of a new tip).
#[derive(Debug)]
struct FutureJob {
    job_id: u32,
    notify: NotifyJob,
}

/// What mining.notify says of a job, but the prev hash, nTime and clean flag.
#[derive(Debug)]
struct NotifyJob {
    version: u32,
    coinb1: String,
    coinb2: String,
    branch: Vec<String>,
}

/// One Stratum V1 connection's protocol state. See the module documentation.
#[derive(Debug)]
pub struct Sv1Session {
    inner: Session,
    config: Arc<MiningConfig>,
    /// One SV2 frame for `inner` at a time (its buffer is reused).
    to_inner: Outbox,
    out: Outbox,
    subscription: Option<Subscription>,
    /// The username authorized (its channel is open once `channel_id` is set).
    username: Option<String>,
    /// The same, shared by the refusals this layer reports as the channel's.
    user_identity: Option<Arc<str>>,
    /// Further workers of the same user authorized on this connection: their full name and
    /// the worker name their shares carry (extension 0x0002's user_identity TLV).
    extra_workers: Vec<(String, String)>,
    channel_id: Option<u32>,
    /// The id of the mining.authorize waiting for its channel's opening.
    authorizing: Option<Value>,
    /// BIP310's negotiated mask (mining.configure's answer); `None`: no version rolling.
    version_mask: Option<u32>,
    /// The mask the miner has now: the negotiated one, or the last mining.set_version_mask
    /// (see `version_mask`: a job whose template signals bits inside it narrows it).
    announced_mask: Option<u32>,
    /// The miner takes mining.set_extranonce.
    extranonce_subscribed: bool,
    /// The easiest difficulty the miner asked for (minimum-difficulty, suggest_difficulty).
    min_difficulty: Option<f64>,
    /// The current tip, as mining.notify writes it, and its nBits.
    prev_hash: Option<(String, u32)>,
    future: VecDeque<FutureJob>,
    /// Recent jobs' versions, newest last.
    job_versions: VecDeque<(u32, u32)>,
    /// Sequence number of the next share.
    next_seq: u32,
    /// Submits waiting for their answer, by sequence number, oldest first.
    submits: VecDeque<(u32, Value)>,
    bad_requests: u32,
    /// What is left of the connection's allowance of requests that are not shares.
    requests: RequestBudget,
    /// Refusals of this layer, pool-wide.
    refusals: Option<Arc<Sv1Refusals>>,
    /// Share refusals of this layer, reported after the SV2 session's events.
    own_events: Vec<SessionEvent>,
    /// The latest work is of a chain of difficulty 1 or more (where ASICs mine).
    hard_chain: bool,
}

impl Sv1Session {
    /// A new connection, waiting for mining.subscribe. Share acknowledgements go one per share
    /// (SV1 answers each submit): `config.share_batch_size` is set to 1.
    pub fn new(config: Arc<MiningConfig>, allocator: Arc<ExtranonceAllocator>) -> Self {
        let mut own = (*config).clone();
        own.share_batch_size = 1;
        let config = Arc::new(own);
        Sv1Session {
            inner: Session::new(config.clone(), allocator),
            config,
            to_inner: Outbox::new(),
            out: Outbox::new(),
            subscription: None,
            username: None,
            user_identity: None,
            extra_workers: Vec::new(),
            channel_id: None,
            authorizing: None,
            version_mask: None,
            announced_mask: None,
            extranonce_subscribed: false,
            min_difficulty: None,
            prev_hash: None,
            future: VecDeque::new(),
            job_versions: VecDeque::new(),
            next_seq: 1,
            submits: VecDeque::new(),
            bad_requests: 0,
            requests: RequestBudget::default(),
            refusals: None,
            own_events: Vec::new(),
            hard_chain: false,
        }
    }

    /// Counts the miner's channel against the pool-wide cap (like an SV2 channel).
    pub fn with_channel_budget(mut self, budget: Arc<ChannelBudget>) -> Self {
        self.inner = self.inner.with_channel_budget(budget);
        self
    }

    /// Shares the works of coinbase-paid channels (`sri/solo/...`) with the pool.
    pub fn with_payee_works(mut self, works: Arc<crate::mining::payee_work::PayeeWorks>) -> Self {
        self.inner = self.inner.with_payee_works(works);
        self
    }

    /// Counts this layer's refusals in the pool-wide `refusals`.
    pub fn with_refusals(mut self, refusals: Arc<Sv1Refusals>) -> Self {
        self.refusals = Some(refusals);
        self
    }

    /// Shares the ledger's state (durable acknowledgements).
    pub fn with_ledger_status(mut self, status: LedgerStatus) -> Self {
        self.inner = self.inner.with_ledger_status(status);
        self
    }

    /// The SV2 session under this one, for reading (channels, statistics).
    pub fn session(&self) -> &Session {
        &self.inner
    }

    /// Whether mining.authorize succeeded (the miner's channel is open).
    pub fn is_authorized(&self) -> bool {
        self.channel_id.is_some()
    }

    /// The extranonce1 mining.subscribe gave, if it was called.
    pub fn extranonce1(&self) -> Option<&[u8]> {
        self.subscription.as_ref().map(|s| s.extranonce1.as_slice())
    }

    /// New work from the pool: a mining.notify (clean_jobs on a new tip) once authorized.
    pub fn on_work(&mut self, work: &Arc<Work>, now_ms: u64) -> Result<(), Sv1Error> {
        self.hard_chain = work.network_target.difficulty_float() >= 1.0;
        self.inner.on_work(work, now_ms);
        self.translate()
    }

    /// Handles one line from the miner.
    pub fn handle_line(&mut self, line: &[u8], now_ms: u64) -> Result<(), Sv1Error> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let request = match request::parse(line) {
            Ok(r) => r,
            Err(_) => {
                self.refuse(
                    &Value::Null,
                    code::OTHER,
                    "not a JSON-RPC request",
                    Sv1Refusal::InvalidJson,
                );
                return Err(Sv1Error::NotARequest);
            }
        };
        if !matches!(request.method, Method::Submit(_)) && !self.requests.take(now_ms) {
            self.refuse(
                &request.id,
                code::OTHER,
                "too many requests",
                Sv1Refusal::RequestFlood,
            );
            return Err(Sv1Error::RequestFlood);
        }
        let good = self.dispatch(request, now_ms)?;
        if good {
            self.bad_requests = 0;
        } else {
            self.bad_requests += 1;
            if self.bad_requests >= MAX_BAD_REQUESTS {
                self.count(Sv1Refusal::TooManyBadRequests);
                return Err(Sv1Error::TooManyBadRequests(self.bad_requests));
            }
        }
        Ok(())
    }

    /// Serves one request; returns whether it was a good one (not answered with an error of
    /// ours: a refused share is the SV2 session's business, counted there).
    fn dispatch(&mut self, r: Request, now_ms: u64) -> Result<bool, Sv1Error> {
        let id = r.id;
        match r.method {
            Method::Subscribe { user_agent } => {
                self.on_subscribe(&id, user_agent.as_deref(), now_ms)?;
            }
            Method::Authorize { username } => return self.on_authorize(id, username, now_ms),
            Method::Configure(c) => self.on_configure(&id, &c, now_ms)?,
            Method::ExtranonceSubscribe => {
                self.extranonce_subscribed = true;
                self.reply(&id, json!(true));
            }
            Method::SuggestDifficulty(d) => {
                self.min_difficulty = Some(d);
                self.update_channel(now_ms)?;
                self.reply(&id, json!(true));
            }
            Method::Submit(s) => return self.on_submit(id, s, now_ms),
            Method::Unknown(name) => {
                let message = format!(
                    "unknown method {}",
                    name.chars().take(64).collect::<String>()
                );
                self.refuse(&id, code::OTHER, &message, Sv1Refusal::UnknownMethod);
                return Ok(false);
            }
            Method::Invalid(why) => {
                self.refuse(&id, code::OTHER, why, Sv1Refusal::InvalidParams);
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn on_subscribe(
        &mut self,
        id: &Value,
        user_agent: Option<&str>,
        now_ms: u64,
    ) -> Result<(), Sv1Error> {
        if self.subscription.is_none() {
            let vendor = user_agent.unwrap_or("");
            let setup = SetupConnection {
                protocol: PROTOCOL_MINING,
                min_version: PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
                flags: 0,
                endpoint_host: Str0_255::default(),
                endpoint_port: 0,
                vendor: Str0_255::new(vendor).unwrap_or_default(),
                hardware_version: Str0_255::default(),
                firmware: Str0_255::default(),
                device_id: Str0_255::new("stratum-v1").unwrap_or_default(),
            };
            self.hand_to_inner(&setup, now_ms)?;
            // Extension 0x0002: the shares of a further worker of the user name it.
            let extensions = [USER_IDENTITY.extension_type];
            let request = RequestExtensions {
                request_id: 0,
                requested_extensions: Seq0_64K::new(&extensions).map_err(SessionError::Wire)?,
            };
            self.hand_to_inner(&request, now_ms)?;
            self.translate()?;
            let (extranonce1, extranonce2_size) = self
                .inner
                .reserve_extranonce_prefix(0)
                .map_err(SessionError::SetupRefused)?;
            self.subscription = Some(Subscription {
                extranonce1,
                extranonce2_size,
            });
        }
        let s = self.subscription.as_ref().expect("subscribed");
        let sub_id = s.extranonce1.to_lower_hex_string();
        let result = json!([
            [["mining.set_difficulty", sub_id], ["mining.notify", sub_id]],
            s.extranonce1.to_lower_hex_string(),
            s.extranonce2_size,
        ]);
        self.reply(id, result);
        Ok(())
    }

    fn on_authorize(&mut self, id: Value, username: String, now_ms: u64) -> Result<bool, Sv1Error> {
        let Some(subscription) = &self.subscription else {
            self.refuse(
                &id,
                code::NOT_SUBSCRIBED,
                "not subscribed",
                Sv1Refusal::NotSubscribed,
            );
            return Ok(false);
        };
        if self.username.is_some() {
            return Ok(self.authorize_another(&id, username));
        }
        let Ok(user_identity) = Str0_255::new(&username) else {
            self.refuse(
                &id,
                code::UNAUTHORIZED,
                "username too long",
                Sv1Refusal::UserRefused,
            );
            return Ok(false);
        };
        let open = OpenExtendedMiningChannel {
            request_id: 1,
            user_identity,
            nominal_hash_rate: self.start_hash_rate(),
            max_target: self.max_target(),
            min_extranonce_size: subscription.extranonce2_size as u16,
        };
        self.hand_to_inner(&open, now_ms)?;
        self.user_identity = Some(Arc::from(username.as_str()));
        self.username = Some(username);
        self.authorizing = Some(id.clone());
        self.translate()?;
        if self.channel_id.is_some() {
            return Ok(true);
        }
        // Refused: the answer went out in `translate`.
        self.username = None;
        self.user_identity = None;
        if self.authorizing.take().is_some() {
            self.refuse(
                &id,
                code::UNAUTHORIZED,
                "unauthorized",
                Sv1Refusal::UserRefused,
            );
        }
        Ok(false)
    }

    /// mining.authorize once a username is authorized: the same name again, or another worker
    /// of the same user (the text before the first `.`; a proxy authorizes each of its devices
    /// on one connection) is `true`, and that worker's shares are credited to it; another
    /// user is refused (one channel, one payout identity, per connection). Returns whether
    /// it was `true`.
    fn authorize_another(&mut self, id: &Value, username: String) -> bool {
        let Some(current) = &self.username else {
            return false;
        };
        if *current == username || self.extra_workers.iter().any(|(n, _)| *n == username) {
            self.reply(id, json!(true));
            return true;
        }
        let (user, _) = split_user(current);
        let refusal = match split_user(&username) {
            (other, _) if other != user => "one user per connection",
            (_, None) => "one user per connection",
            (_, Some(worker)) if worker.is_empty() || worker.len() > USER_IDENTITY.max_len => {
                "a worker name of 1 to 32 bytes"
            }
            (_, Some(worker)) if !is_storable_name(worker) => {
                "a worker name without control characters"
            }
            _ if self.extra_workers.len() >= MAX_EXTRA_WORKERS => "too many workers",
            (_, Some(worker)) => {
                let worker = worker.to_owned();
                self.extra_workers.push((username, worker));
                self.reply(id, json!(true));
                return true;
            }
        };
        self.refuse(id, code::UNAUTHORIZED, refusal, Sv1Refusal::UserRefused);
        false
    }

    fn on_configure(&mut self, id: &Value, c: &Configure, now_ms: u64) -> Result<(), Sv1Error> {
        let mut result = serde_json::Map::new();
        if let Some(miner_mask) = c.version_rolling {
            let mask = if self.config.version_rolling {
                miner_mask & VERSION_ROLLING_MASK
            } else {
                0
            };
            self.version_mask = (mask != 0).then_some(mask);
            self.announced_mask = self.version_mask;
            result.insert("version-rolling".into(), json!(mask != 0));
            result.insert("version-rolling.mask".into(), json!(format!("{mask:08x}")));
        }
        if let Some(d) = c.minimum_difficulty {
            self.min_difficulty = Some(d);
            self.update_channel(now_ms)?;
            result.insert("minimum-difficulty".into(), json!(true));
        }
        if c.subscribe_extranonce {
            self.extranonce_subscribed = true;
            result.insert("subscribe-extranonce".into(), json!(true));
        }
        for name in &c.unknown {
            result.insert(name.clone(), json!(false));
        }
        self.reply(id, Value::Object(result));
        Ok(())
    }

    /// The hashrate the miner's channel opens with: the one that finds shares at the vardiff
    /// aim at the start difficulty (the miner's own suggestion, else `sv1_start_difficulty`,
    /// else [`DEFAULT_START_DIFFICULTY`] on a chain of difficulty 1 or more); 0, the pool's
    /// easiest difficulty, without one. The SV2 session keeps it within the pool's bounds.
    fn start_hash_rate(&self) -> f32 {
        let start = self
            .min_difficulty
            .or(self.config.sv1_start_difficulty)
            .or(self.hard_chain.then_some(DEFAULT_START_DIFFICULTY));
        start.map_or(0.0, |d| {
            // Capped as `max_target` is: past the pool's hardest the rate would not fit an
            // f32 (infinity: refused as an invalid nominal hash rate).
            let d = d.min(self.config.max_difficulty);
            let hashes_per_share = work_of(&target_of_difficulty(d));
            (hashes_per_share * self.config.shares_per_minute / 60.0) as f32
        })
    }

    /// The easiest target the miner takes (from its minimum difficulty, capped at the pool's
    /// hardest: a miner asking for more than the pool hands out mines at the pool's hardest
    /// rather than being refused), or any.
    fn max_target(&self) -> [u8; 32] {
        self.min_difficulty.map_or([0xff; 32], |d| {
            target_of_difficulty(d.min(self.config.max_difficulty))
        })
    }

    /// A new minimum difficulty for an open channel: UpdateChannel (the channel's target
    /// moves to it now if it was easier, for the jobs from now on).
    fn update_channel(&mut self, now_ms: u64) -> Result<(), Sv1Error> {
        let Some(channel_id) = self.channel_id else {
            return Ok(());
        };
        let update = UpdateChannel {
            channel_id,
            nominal_hash_rate: 0.0,
            maximum_target: self.max_target(),
        };
        self.hand_to_inner(&update, now_ms)?;
        self.translate()
    }

    fn on_submit(&mut self, id: Value, s: Submit, now_ms: u64) -> Result<bool, Sv1Error> {
        let Some(subscription) = &self.subscription else {
            self.refuse(
                &id,
                code::NOT_SUBSCRIBED,
                "not subscribed",
                Sv1Refusal::NotSubscribed,
            );
            return Ok(false);
        };
        let extranonce2_size = subscription.extranonce2_size;
        let (Some(channel_id), Some(username)) = (self.channel_id, &self.username) else {
            self.refuse(
                &id,
                code::UNAUTHORIZED,
                "unauthorized worker",
                Sv1Refusal::Unauthorized,
            );
            return Ok(false);
        };
        // The first worker's shares carry no worker TLV (its name is the channel's); another
        // worker's carry its name.
        let worker = if s.worker == *username {
            None
        } else if let Some((_, w)) = self.extra_workers.iter().find(|(n, _)| *n == s.worker) {
            Some(w.clone())
        } else {
            self.refuse(
                &id,
                code::UNAUTHORIZED,
                "unauthorized worker",
                Sv1Refusal::Unauthorized,
            );
            return Ok(false);
        };
        if s.extranonce2.len() != extranonce2_size {
            let why = "extranonce2 of the wrong length";
            self.refuse_share(
                &id,
                channel_id,
                ShareRejection::BadExtranonceSize,
                why,
                worker,
            );
            return Ok(false);
        }
        let job = u32::from_str_radix(&s.job_id, 16).ok().and_then(|job_id| {
            self.job_versions
                .iter()
                .rev()
                .find(|(j, _)| *j == job_id)
                .map(|&(j, v)| (j, v))
        });
        let Some((job_id, job_version)) = job else {
            let reason = ShareRejection::InvalidJobId;
            self.refuse_share(&id, channel_id, reason, "job not found", worker);
            return Ok(false);
        };
        let job_mask = self.version_mask.map(|m| rollable_mask(m, job_version));
        let version = match (s.version_bits, job_mask) {
            (None, _) => job_version,
            (Some(bits), Some(mask)) if bits & !mask == 0 => (job_version & !mask) | bits,
            (Some(_), _) => {
                let why = "version bits outside the negotiated mask";
                let reason = ShareRejection::InvalidNonRollableVersionBit;
                self.refuse_share(&id, channel_id, reason, why, worker);
                return Ok(false);
            }
        };
        let sequence_number = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let extranonce = B0_32::new(&s.extranonce2).map_err(SessionError::Wire)?;
        let submit = SubmitSharesExtended {
            channel_id,
            sequence_number,
            job_id,
            nonce: s.nonce,
            ntime: s.ntime,
            version,
            extranonce,
        };
        self.submits.push_back((sequence_number, id));
        match &worker {
            None => self.hand_to_inner(&submit, now_ms)?,
            Some(w) => {
                let mut tlv = TlvEncoder::new();
                tlv.push(
                    USER_IDENTITY.extension_type,
                    USER_IDENTITY.field_type,
                    w.as_bytes(),
                )
                .map_err(SessionError::Wire)?;
                self.to_inner.clear();
                self.to_inner
                    .push_with_tlv(&submit, &tlv)
                    .map_err(SessionError::Wire)?;
                let frame: &[u8] = &self.to_inner;
                Protocol::handle_message(&mut self.inner, frame, now_ms)?;
            }
        }
        self.translate()?;
        Ok(true)
    }

    /// Hands one SV2 message to the session under this one.
    fn hand_to_inner<'m, M: Sv2Message<'m>>(
        &mut self,
        msg: &M,
        now_ms: u64,
    ) -> Result<(), Sv1Error> {
        self.to_inner.clear();
        self.to_inner.push(msg).map_err(SessionError::Wire)?;
        let frame: &[u8] = &self.to_inner;
        Protocol::handle_message(&mut self.inner, frame, now_ms)?;
        Ok(())
    }

    /// Turns what the SV2 session queued into SV1 lines.
    fn translate(&mut self) -> Result<(), Sv1Error> {
        let mut frames = std::mem::take(Protocol::outbox(&mut self.inner));
        let mut result = Ok(());
        let mut holds = frames.holds().iter().peekable();
        for (index, bytes) in frames.messages().enumerate() {
            // A held acknowledgement (durable mode) holds its `true` and what follows.
            while let Some(&(_, share)) = holds.next_if(|(at, _)| *at == index) {
                self.out.hold_until(share);
            }
            let Ok(frame) = Frame::parse_exact(bytes) else {
                continue;
            };
            let Ok(Some((message, _))) = frame.known_message() else {
                continue;
            };
            if let Err(e) = self.translate_one(message) {
                result = Err(e);
                break;
            }
        }
        frames.clear();
        *Protocol::outbox(&mut self.inner) = frames;
        result
    }

    fn translate_one(&mut self, message: Message<'_>) -> Result<(), Sv1Error> {
        match message {
            Message::OpenExtendedMiningChannelSuccess(m) => {
                let reserved = self.extranonce1().unwrap_or_default();
                if m.extranonce_prefix.as_bytes() != reserved {
                    // Not the subscription's extranonce1: the miner's coinbases would be
                    // wrong. Cannot happen (the prefix was reserved for this open).
                    return Err(Sv1Error::ChannelClosed("extranonce mismatch".into()));
                }
                self.channel_id = Some(m.channel_id);
                if let Some(id) = self.authorizing.take() {
                    self.reply(&id, json!(true));
                }
                self.set_difficulty(&m.target);
            }
            Message::OpenMiningChannelError(m) => {
                if let Some(id) = self.authorizing.take() {
                    let why = format!("unauthorized: {}", m.error_code.to_string_lossy());
                    self.reply_error(&id, code::UNAUTHORIZED, &why);
                }
            }
            Message::SetTarget(m) => self.set_difficulty(&m.maximum_target),
            Message::NewExtendedMiningJob(m) => self.on_job(&m),
            Message::SetNewPrevHash(m) => {
                let prev = stratum_prev_hash(&m.prev_hash);
                self.prev_hash = Some((prev, m.nbits));
                if let Some(at) = self.future.iter().position(|j| j.job_id == m.job_id)
                    && let Some(job) = self.future.remove(at)
                {
                    self.notify(job.job_id, &job.notify, m.min_ntime, true);
                }
                if self.future.is_empty() {
                    // Held only between a tip's first job and its prev hash: not kept idle.
                    self.future.shrink_to_fit();
                }
            }
            Message::SubmitSharesSuccess(m) => {
                while let Some(&(seq, _)) = self.submits.front() {
                    if seq > m.last_sequence_number {
                        break;
                    }
                    if let Some((_, id)) = self.submits.pop_front() {
                        self.reply(&id, json!(true));
                    }
                }
            }
            Message::SubmitSharesError(m) => {
                let code_text = m.error_code.to_string_lossy();
                let reason = ShareRejection::ALL
                    .into_iter()
                    .find(|r| r.code() == code_text);
                let sv1_code = reason.map_or(code::OTHER, rejection_code);
                if let Some(at) = self
                    .submits
                    .iter()
                    .position(|(seq, _)| *seq == m.sequence_number)
                    && let Some((_, id)) = self.submits.remove(at)
                {
                    self.reply_error(&id, sv1_code, &code_text);
                }
            }
            // Never sent by this pool (a channel keeps its prefix for its life); translated for
            // a session under it that would.
            Message::SetExtranoncePrefix(m) => {
                if !self.extranonce_subscribed {
                    // The miner cannot take a new extranonce1 on this connection: it is asked to
                    // come back (a new subscription), and this connection ends.
                    self.notification("client.reconnect", json!([]));
                    return Err(Sv1Error::ChannelClosed("extranonce changed".into()));
                }
                let size = self.subscription.as_ref().map_or(0, |s| s.extranonce2_size);
                let extranonce1 = m.extranonce_prefix.as_bytes().to_vec();
                self.notification(
                    "mining.set_extranonce",
                    json!([extranonce1.to_lower_hex_string(), size]),
                );
                if let Some(s) = &mut self.subscription {
                    s.extranonce1 = extranonce1;
                }
            }
            // The pool is stopping (issue 18's drain): back through the same address.
            Message::Reconnect(_) => self.notification("client.reconnect", json!([])),
            Message::CloseChannel(m) => {
                return Err(Sv1Error::ChannelClosed(
                    m.reason_code.to_string_lossy().into_owned(),
                ));
            }
            Message::SetupConnectionError(_) => {
                return Err(SessionError::SetupRefused("setup refused").into());
            }
            // SetupConnection.Success, UpdateChannel.Error (the target stays), SetGroupChannel:
            // nothing an SV1 miner is told.
            _ => {}
        }
        Ok(())
    }

    fn on_job(&mut self, m: &NewExtendedMiningJob<'_>) {
        if self.job_versions.len() == JOB_VERSIONS {
            self.job_versions.pop_front();
        }
        self.job_versions.push_back((m.job_id, m.version));
        let notify = NotifyJob {
            version: m.version,
            coinb1: m.coinbase_tx_prefix.as_bytes().to_lower_hex_string(),
            coinb2: m.coinbase_tx_suffix.as_bytes().to_lower_hex_string(),
            branch: m
                .merkle_path
                .iter()
                .map(|h| h.to_lower_hex_string())
                .collect(),
        };
        match m.min_ntime {
            Some(ntime) => self.notify(m.job_id, &notify, ntime, false),
            None => {
                if self.future.len() == FUTURE_JOBS {
                    self.future.pop_front();
                }
                self.future.push_back(FutureJob {
                    job_id: m.job_id,
                    notify,
                });
            }
        }
    }

    fn notify(&mut self, job_id: u32, job: &NotifyJob, ntime: u32, clean: bool) {
        if self.prev_hash.is_none() {
            return;
        }
        self.announce_mask(job.version);
        let Some((prev_hash, nbits)) = &self.prev_hash else {
            return;
        };
        let params = json!([
            format!("{job_id:x}"),
            prev_hash,
            job.coinb1,
            job.coinb2,
            job.branch,
            format!("{:08x}", job.version),
            format!("{nbits:08x}"),
            format!("{ntime:08x}"),
            clean,
        ]);
        self.notification("mining.notify", params);
    }

    /// Sends mining.set_version_mask before a job that needs another mask than the miner's
    /// (its template signals a bit inside the negotiated mask, or stopped signalling one).
    fn announce_mask(&mut self, job_version: u32) {
        let Some(negotiated) = self.version_mask else {
            return;
        };
        let mask = rollable_mask(negotiated, job_version);
        if self.announced_mask != Some(mask) {
            self.announced_mask = Some(mask);
            self.notification("mining.set_version_mask", json!([format!("{mask:08x}")]));
        }
    }

    fn set_difficulty(&mut self, target: &[u8; 32]) {
        self.notification("mining.set_difficulty", json!([difficulty_of(target)]));
    }

    fn reply(&mut self, id: &Value, result: Value) {
        if id.is_null() {
            return;
        }
        self.line(&json!({"id": id, "result": result, "error": null}));
    }

    /// Answers with an error of this layer and counts it.
    fn refuse(&mut self, id: &Value, code: i64, message: &str, reason: Sv1Refusal) {
        self.count(reason);
        self.reply_error(id, code, message);
    }

    fn count(&mut self, reason: Sv1Refusal) {
        if let Some(r) = &self.refusals {
            r.count(reason);
        }
    }

    /// Refuses a share this layer can judge alone (its job, extranonce2 or version bits are
    /// wrong before it is one): answered with the SV1 code of `reason` and reported as the
    /// channel's `ShareRejected`, so it counts with SV2's refusals, per user and worker.
    fn refuse_share(
        &mut self,
        id: &Value,
        channel_id: u32,
        reason: ShareRejection,
        message: &str,
        worker: Option<String>,
    ) {
        self.reply_error(id, rejection_code(reason), message);
        self.own_events.push(SessionEvent::ShareRejected {
            channel_id,
            reason,
            user_identity: self.user_identity.clone(),
            worker: worker.map(Arc::from),
        });
    }

    fn reply_error(&mut self, id: &Value, code: i64, message: &str) {
        self.line(&json!({"id": id, "result": null, "error": [code, message, null]}));
    }

    fn notification(&mut self, method: &str, params: Value) {
        self.line(&json!({"id": null, "method": method, "params": params}));
    }

    fn line(&mut self, v: &Value) {
        let mut bytes = serde_json::to_vec(v).unwrap_or_default();
        bytes.push(b'\n');
        self.out.push_raw(&bytes);
    }
}

/// A username's user (before the first `.`, the ledger's user) and worker (after it), if any.
fn split_user(username: &str) -> (&str, Option<&str>) {
    match username.split_once('.') {
        Some((user, worker)) => (user, Some(worker)),
        None => (username, None),
    }
}

/// A prev hash as mining.notify writes it: the header's bytes with each 4-byte word's bytes
/// reversed, in hex.
pub fn stratum_prev_hash(header_order: &[u8; 32]) -> String {
    let mut swapped = [0u8; 32];
    for (out, word) in swapped
        .chunks_exact_mut(4)
        .zip(header_order.chunks_exact(4))
    {
        out.copy_from_slice(&[word[3], word[2], word[1], word[0]]);
    }
    swapped.to_lower_hex_string()
}

/// An SV1 miner carried by a [`Connection`](crate::connection::Connection) in its plaintext
/// line mode: the SV2 session's events, deadlines and periodic work are its own.
impl Protocol for Sv1Session {
    type Event = SessionEvent;
    type Error = Sv1Error;

    fn handle_message(&mut self, message: &[u8], now_ms: u64) -> Result<(), Sv1Error> {
        self.handle_line(message, now_ms)
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    fn take_events(&mut self, into: &mut VecDeque<SessionEvent>) {
        Protocol::take_events(&mut self.inner, into);
        into.extend(self.own_events.drain(..));
    }

    /// Set up once subscribed (SetupConnection's place); mining.authorize must follow within
    /// the SV2 session's channel-open timeout.
    fn is_set_up(&self) -> bool {
        self.subscription.is_some()
    }

    fn next_deadline(&self) -> Option<u64> {
        Protocol::next_deadline(&self.inner)
    }

    fn handle_timeout(&mut self, now_ms: u64) -> Result<(), Sv1Error> {
        let ended = Protocol::handle_timeout(&mut self.inner, now_ms);
        let translated = self.translate();
        ended?;
        translated
    }

    /// The pool is stopping: the SV2 session's Reconnect goes out as `client.reconnect` (no
    /// parameters: the same host and port, the load balancer's), and the connection is kept
    /// for the answers still owed, exactly as for an SV2 miner.
    fn begin_drain(&mut self, now_ms: u64) -> bool {
        let asked = Protocol::begin_drain(&mut self.inner, now_ms);
        let _ = self.translate();
        asked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mining::SetExtranoncePrefix;

    /// A subscribed session, `subscribe_request` sent first if any (the extranonce
    /// subscription), and its channel's id once authorized.
    fn authorized(subscribe_request: Option<&str>) -> (Sv1Session, u32) {
        let config = MiningConfig {
            payout_network: Some(bitcoin::Network::Regtest),
            ..MiningConfig::default()
        };
        let mut s = Sv1Session::new(Arc::new(config), Arc::new(ExtranonceAllocator::new()));
        let mut lines = vec![r#"{"id":1,"method":"mining.subscribe","params":[]}"#];
        lines.extend(subscribe_request);
        lines.push(
            r#"{"id":3,"method":"mining.authorize","params":["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080.w","x"]}"#,
        );
        for line in lines {
            s.handle_line(line.as_bytes(), 0).unwrap();
        }
        s.out.clear();
        let channel_id = s.channel_id.expect("authorized");
        (s, channel_id)
    }

    /// The SV2 session under this one queues a SetExtranoncePrefix (this pool never does:
    /// see the README); the result of translating it, and the lines sent.
    fn new_prefix(
        s: &mut Sv1Session,
        channel_id: u32,
        prefix: &[u8],
    ) -> (Result<(), Sv1Error>, Vec<Value>) {
        let m = SetExtranoncePrefix {
            channel_id,
            extranonce_prefix: B0_32::new(prefix).unwrap(),
        };
        Protocol::outbox(&mut s.inner).push(&m).unwrap();
        let result = s.translate();
        let lines = s
            .out
            .messages()
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        s.out.clear();
        (result, lines)
    }

    #[test]
    fn a_new_prefix_is_mining_set_extranonce_to_a_subscribed_miner() {
        for subscribe in [
            r#"{"id":2,"method":"mining.extranonce.subscribe","params":[]}"#,
            r#"{"id":2,"method":"mining.configure","params":[["subscribe-extranonce"],{}]}"#,
        ] {
            let (mut s, channel_id) = authorized(Some(subscribe));
            let prefix = [9u8; 24];
            let (result, lines) = new_prefix(&mut s, channel_id, &prefix);
            assert!(result.is_ok(), "{subscribe}");
            assert_eq!(
                lines,
                [
                    json!({"id": null, "method": "mining.set_extranonce", "params": [prefix.to_lower_hex_string(), 8]})
                ]
            );
            assert_eq!(s.extranonce1(), Some(&prefix[..]));
        }
    }

    #[test]
    fn a_new_prefix_asks_an_unsubscribed_miner_to_reconnect_and_ends_the_connection() {
        let (mut s, channel_id) = authorized(None);
        let before = s.extranonce1().unwrap().to_vec();
        let (result, lines) = new_prefix(&mut s, channel_id, &[9u8; 24]);
        assert!(
            matches!(result, Err(Sv1Error::ChannelClosed(_))),
            "{result:?}"
        );
        assert_eq!(
            lines,
            [json!({"id": null, "method": "client.reconnect", "params": []})]
        );
        assert_eq!(s.extranonce1(), Some(&before[..]), "unchanged");
    }
}
