//! One miner connection's protocol state, sans-IO: decoded frames and new work in, encoded
//! frames (in [`Session::output`]) and [`SessionEvent`]s out, the time always passed in.
//!
//! It answers SetupConnection and extension negotiation, opens standard and extended
//! channels, sends jobs and prev hashes as work changes, validates shares, acknowledges them in
//! batches, retargets with vardiff, and turns a share that meets the network target into a
//! whole block (an event emitted before the share is acknowledged).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bitcoin::hashes::{Hash, sha256d};

use super::coinbase::CoinbaseConfig;
use super::share::ShareRejection;
use super::target::{
    difficulty_of, hash_meets_target, le_u256_le, target_for_hashrate, target_of_difficulty,
    work_of,
};
use super::vardiff::Vardiff;
use super::work::{Work, header_bytes, header_midstate, sha256d_from_midstate};
use crate::connection::{Outbox, Protocol};
use crate::wire::common::{
    PROTOCOL_MINING, SetupConnection, SetupConnectionError, SetupConnectionSuccess,
};
use crate::wire::extensions::{
    EXTENSION_TYPE_WORKER_HASHRATE, RequestExtensions, RequestExtensionsError,
    RequestExtensionsSuccess,
};
use crate::wire::mining::*;
use crate::wire::{
    B0_32, B0_64K, Frame, Message, Seq0_64K, Seq0_255, Str0_255, Sv2Message, TlvDecoder, U256,
    USER_IDENTITY, WireError,
};

/// The BIP320 bits a miner may roll.
pub const VERSION_ROLLING_MASK: u32 = 0x1fff_e000;
/// The only protocol version there is.
pub const PROTOCOL_VERSION: u16 = 2;

/// Pool policy shared by every session.
#[derive(Debug, Clone)]
pub struct MiningConfig {
    /// Coinbase payout, tag and extranonce space.
    pub coinbase: CoinbaseConfig,
    /// Jobs remembered per connection (older ones are answered as unknown).
    pub max_jobs: usize,
    /// Vardiff aim.
    pub shares_per_minute: f64,
    /// Accepted shares acknowledged per SubmitShares.Success (1 = each share at once).
    pub share_batch_size: u32,
    /// Easiest share difficulty the pool hands out.
    pub min_difficulty: f64,
    /// Hardest share difficulty the pool hands out.
    pub max_difficulty: f64,
    /// Miner extranonce bytes given when the client asks for fewer.
    pub default_extranonce_size: u16,
    /// How far ahead of the pool's clock a share's nTime may be.
    pub max_ntime_ahead_secs: u32,
    /// Channels one connection may open.
    pub max_channels_per_connection: usize,
    /// Accepted-share fingerprints remembered per channel and tip for duplicate detection
    /// (default 896: a duplicate among the last 448 to 896 shares on a tip is caught, in at
    /// most ~9 KiB per channel; a vardiff'd channel sends about 18 shares a minute, so that is
    /// the last 25 to 50 minutes of a tip). A duplicate of a share older than that is not
    /// caught, but a channel that sends more to replay old shares gets a harder target from
    /// vardiff, which the replayed shares do not meet. The channel is never closed for sending
    /// many shares.
    pub duplicate_window: usize,
    /// Whether miners may roll the BIP320 version bits (version_rolling_allowed in jobs).
    pub version_rolling: bool,
    /// Put in the top two bytes of every extranonce prefix, so pools behind one payout never
    /// hand out the same search space.
    pub server_id: u16,
}

impl Default for MiningConfig {
    fn default() -> Self {
        MiningConfig {
            coinbase: CoinbaseConfig {
                payout_script: bitcoin::ScriptBuf::new_op_return([]),
                pool_tag: b"/blvm-stratum-v2/".to_vec(),
                extranonce_len: 32,
            },
            max_jobs: 10,
            shares_per_minute: 18.0,
            share_batch_size: 1,
            min_difficulty: 1e-6,
            max_difficulty: 1e15,
            default_extranonce_size: 8,
            max_ntime_ahead_secs: 7200,
            max_channels_per_connection: 64,
            duplicate_window: 896,
            version_rolling: true,
            server_id: 0,
        }
    }
}

/// How long shares on a tip we just found a block for are refused as stale (the new work is
/// normally there within milliseconds; this only bounds the case where the node refuses it).
pub const SOLVED_TIP_MS: u64 = 10_000;

/// How long shares meeting a channel's previous target still count after SetTarget: the
/// miner may have found them before the new target reached it.
pub const TARGET_GRACE_MS: u64 = 10_000;

/// Bytes of an extranonce prefix that make it unique (server id and a counter).
pub const UNIQUE_PREFIX_LEN: usize = 8;

/// Hands out pool-wide unique extranonce prefixes.
#[derive(Debug, Default)]
pub struct ExtranonceAllocator {
    next: AtomicU64,
}

impl ExtranonceAllocator {
    /// A fresh allocator.
    pub fn new() -> Self {
        Self::default()
    }

    /// A unique prefix of `len` bytes (at least [`UNIQUE_PREFIX_LEN`]): server id, counter,
    /// zero padding.
    fn allocate(&self, server_id: u16, len: usize) -> Vec<u8> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut p = Vec::with_capacity(len);
        p.extend_from_slice(&server_id.to_be_bytes());
        p.extend_from_slice(&n.to_be_bytes()[2..]);
        p.resize(len.max(UNIQUE_PREFIX_LEN), 0);
        p
    }
}

/// What a session tells the rest of the pool.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// SetupConnection succeeded.
    Setup {
        /// The client's flags.
        flags: u32,
        /// The client's vendor string.
        vendor: String,
    },
    /// A channel was opened.
    ChannelOpened {
        /// Its id.
        channel_id: u32,
        /// Who mines on it.
        user_identity: String,
        /// Extended (true) or standard.
        extended: bool,
    },
    /// A channel could not be opened (OpenMiningChannel.Error sent).
    ChannelRefused {
        /// The client's request id.
        request_id: u32,
        /// The error code sent.
        code: &'static str,
    },
    /// A channel was closed by the client.
    ChannelClosed {
        /// Its id.
        channel_id: u32,
    },
    /// A share was accepted.
    ShareAccepted {
        /// The channel.
        channel_id: u32,
        /// The channel difficulty it was accepted at.
        difficulty: f64,
        /// Worker name from the 0x0002 TLV, if the client sent one.
        worker: Option<String>,
        /// The pool-wide id of the work it was on.
        work_id: u64,
        /// Its header hash (internal byte order).
        hash: [u8; 32],
    },
    /// A share was refused.
    ShareRejected {
        /// The channel (as the client named it).
        channel_id: u32,
        /// Why.
        reason: ShareRejection,
    },
    /// A share met the network target: the block to submit, before anything else.
    BlockFound(Box<FoundBlock>),
    /// Vardiff moved a channel's target.
    TargetChanged {
        /// The channel.
        channel_id: u32,
        /// Its new target.
        target: U256,
    },
}

/// A block found by a miner.
#[derive(Debug, Clone)]
pub struct FoundBlock {
    /// The whole block, ready for submission.
    pub block: bitcoin::Block,
    /// Its height.
    pub height: u32,
    /// The channel whose share it was.
    pub channel_id: u32,
    /// The channel's user identity.
    pub user_identity: String,
}

/// Why a session must end (after its output, which may hold the spec's error message, is sent).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
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
enum ChannelKind {
    Standard,
    Extended,
}

/// An accepted share, between validation and acknowledgement.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    /// Index of its channel.
    idx: usize,
    /// The target it is credited at.
    credited: U256,
    /// Its header hash.
    hash: [u8; 32],
    /// The work it was on.
    work_id: u64,
}

/// A job as this connection knows it.
#[derive(Debug, Clone)]
struct SessionJob {
    job_id: u32,
    work: Arc<Work>,
    /// nTime floor announced for it (jobs are activated as soon as they are sent).
    min_ntime: u32,
}

/// Hashes a share fingerprint as itself: fingerprints are bytes of a share's double-SHA256,
/// uniformly random and impossible to choose without doing the work, so SipHash's protection
/// against chosen keys buys nothing here.
#[derive(Debug, Default, Clone, Copy)]
struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Fingerprints of the shares accepted on the current tip, in two generations: a share is a
/// duplicate if either holds it; new ones go to the newer, and once it holds half the window
/// the older is emptied (keeping its memory) and the two trade places. A duplicate is caught
/// for at least the last `window / 2` shares and at most `window`; memory stays at two tables
/// of `window / 2` (about 9 KiB per channel at the default), allocated only as the channel
/// gets that busy.
#[derive(Debug, Default)]
struct SeenShares {
    newer: HashSet<u64, std::hash::BuildHasherDefault<FingerprintHasher>>,
    older: HashSet<u64, std::hash::BuildHasherDefault<FingerprintHasher>>,
}

impl SeenShares {
    /// Inserts a fingerprint; false if it was there already.
    fn insert(&mut self, key: u64, window: usize) -> bool {
        if self.newer.contains(&key) || self.older.contains(&key) {
            return false;
        }
        if self.newer.len() >= (window / 2).max(1) {
            std::mem::swap(&mut self.newer, &mut self.older);
            self.newer.clear();
        }
        self.newer.insert(key);
        true
    }

    /// Forgets every share (new tip) but keeps the memory.
    fn clear(&mut self) {
        self.newer.clear();
        self.older.clear();
    }
}

/// Per-channel counters (product API `MinerStats` aggregates these).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelStats {
    /// Shares accepted.
    pub accepted: u64,
    /// Shares refused, per [`ShareRejection::index`].
    pub rejected: [u64; ShareRejection::ALL.len()],
    /// Sum of the difficulty of accepted shares.
    pub difficulty_sum: f64,
    /// Time of the last share (ms).
    pub last_share_ms: Option<u64>,
    /// Blocks found.
    pub blocks_found: u64,
}

#[derive(Debug)]
struct Channel {
    id: u32,
    kind: ChannelKind,
    user_identity: String,
    extranonce_prefix: Vec<u8>,
    /// Miner extranonce bytes (0 for standard channels).
    extranonce_size: usize,
    target: U256,
    /// The target before the last change and until when (ms) shares meeting it still count:
    /// shares already in flight when SetTarget went out are not lost.
    previous_target: Option<(U256, u64)>,
    max_target: U256,
    /// Difficulty of `target`, kept with it (shares credit it; computing it per share is a
    /// 32-step float chain).
    difficulty: f64,
    /// Expected hashes per share at `target`, for vardiff.
    share_work: f64,
    /// Merkle roots of standard channels, by job id (bounded like the jobs).
    roots: VecDeque<StandardJob>,
    seen: SeenShares,
    batch_count: u32,
    batch_sum: f64,
    batch_last_seq: u32,
    batch_started_ms: u64,
    vardiff: Vardiff,
    stats: ChannelStats,
}

/// A standard channel's view of a job: its merkle root, and the SHA-256 state after the first
/// 64 header bytes (version, prev hash, most of the root) so a share hashes one block less.
#[derive(Debug, Clone)]
struct StandardJob {
    job_id: u32,
    version: u32,
    root: [u8; 32],
    head: [u32; 8],
}

impl Channel {
    /// Changes the target, keeping its difficulty and work in step.
    fn set_target(&mut self, t: U256) {
        self.target = t;
        self.difficulty = difficulty_of(&t);
        self.share_work = work_of(&t);
    }
}

/// A read-only view of a channel, for stats and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInfo {
    /// Channel id.
    pub channel_id: u32,
    /// Extended (true) or standard.
    pub extended: bool,
    /// Who mines on it.
    pub user_identity: String,
    /// Current share target.
    pub target: U256,
    /// The channel's extranonce prefix.
    pub extranonce_prefix: Vec<u8>,
    /// Miner extranonce bytes.
    pub extranonce_size: usize,
    /// Vardiff's hashrate estimate (h/s).
    pub hashrate: f64,
    /// Whether vardiff's estimate has settled.
    pub vardiff_converged: bool,
    /// Counters.
    pub stats: ChannelStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingSetup,
    Ready,
}

/// One connection's mining protocol state.
#[derive(Debug)]
pub struct Session {
    config: Arc<MiningConfig>,
    allocator: Arc<ExtranonceAllocator>,
    /// Targets of the configured minimum and maximum difficulty, computed once.
    easiest: U256,
    hardest: U256,
    state: State,
    flags: u32,
    worker_tlv: bool,
    channels: Vec<Channel>,
    next_channel_id: u32,
    group_channel_id: u32,
    jobs: VecDeque<SessionJob>,
    next_job_id: u32,
    current: Option<Arc<Work>>,
    /// Prev hash of the jobs that are not stale.
    tip: Option<[u8; 32]>,
    /// A tip one of our shares just solved, and until when (ms) shares on it are stale: they
    /// can only make blocks that no longer build on the chain's tip. Expires in case the node
    /// refuses the block.
    solved: Option<([u8; 32], u64)>,
    out: Outbox,
    events: Vec<SessionEvent>,
}

impl Session {
    /// A new connection, waiting for SetupConnection.
    pub fn new(config: Arc<MiningConfig>, allocator: Arc<ExtranonceAllocator>) -> Self {
        Session {
            easiest: target_of_difficulty(config.min_difficulty),
            hardest: target_of_difficulty(config.max_difficulty),
            config,
            allocator,
            state: State::AwaitingSetup,
            flags: 0,
            worker_tlv: false,
            channels: Vec::new(),
            next_channel_id: 1,
            group_channel_id: 0,
            jobs: VecDeque::new(),
            next_job_id: 1,
            current: None,
            tip: None,
            solved: None,
            out: Outbox::new(),
            events: Vec::new(),
        }
    }

    /// Encoded frames waiting to be sent, with their boundaries; the caller sends and clears
    /// them.
    pub fn output(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// Takes the events produced so far (blocks first in order of production).
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, SessionEvent> {
        self.events.drain(..)
    }

    /// Whether SetupConnection has succeeded.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Number of open channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// A view of every open channel.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.channels
            .iter()
            .map(|c| ChannelInfo {
                channel_id: c.id,
                extended: c.kind == ChannelKind::Extended,
                user_identity: c.user_identity.clone(),
                target: c.target,
                extranonce_prefix: c.extranonce_prefix.clone(),
                extranonce_size: c.extranonce_size,
                hashrate: c.vardiff.hashrate(),
                vardiff_converged: c.vardiff.converged(),
                stats: c.stats.clone(),
            })
            .collect()
    }

    fn send<'m, M: Sv2Message<'m>>(&mut self, msg: &M) {
        // Messages we build hold values checked by their constructors; a payload that could
        // not fit a frame cannot be built here.
        let _ = self.out.push(msg);
    }

    /// Handles one frame from the client. An error means the connection must be closed after
    /// its output is flushed.
    pub fn handle_frame(&mut self, frame: &Frame<'_>, now_ms: u64) -> Result<(), SessionError> {
        // Share submissions, the bulk of the traffic, are decoded straight to their type
        // rather than through the `Message` union.
        if self.state == State::Ready && frame.header.extension() == 0 {
            match frame.header.msg_type {
                <SubmitSharesStandard as Sv2Message>::MSG_TYPE => {
                    let (m, _) = frame.decode::<SubmitSharesStandard>()?;
                    self.on_submit_standard(&m, now_ms);
                    return Ok(());
                }
                <SubmitSharesExtended as Sv2Message>::MSG_TYPE => {
                    let (m, tlv) = frame.decode::<SubmitSharesExtended>()?;
                    return self.on_submit_extended(&m, tlv, now_ms);
                }
                _ => {}
            }
        }
        // Unknown messages of other extensions are ignored (03 §3.4.1).
        let Some((msg, tlv)) = frame.known_message()? else {
            return Ok(());
        };
        match (self.state, msg) {
            (State::AwaitingSetup, Message::SetupConnection(m)) => self.on_setup(&m),
            (State::AwaitingSetup, other) => Err(SessionError::Unexpected(
                other.name(),
                "before SetupConnection",
            )),
            (State::Ready, Message::SubmitSharesExtended(m)) => {
                self.on_submit_extended(&m, tlv, now_ms)
            }
            (State::Ready, Message::SubmitSharesStandard(m)) => {
                self.on_submit_standard(&m, now_ms);
                Ok(())
            }
            (State::Ready, Message::RequestExtensions(m)) => {
                self.on_request_extensions(&m);
                Ok(())
            }
            (State::Ready, Message::OpenStandardMiningChannel(m)) => {
                self.on_open_standard(&m, now_ms);
                Ok(())
            }
            (State::Ready, Message::OpenExtendedMiningChannel(m)) => {
                self.on_open_extended(&m, now_ms);
                Ok(())
            }
            (State::Ready, Message::UpdateChannel(m)) => {
                self.on_update_channel(&m, now_ms);
                Ok(())
            }
            (State::Ready, Message::CloseChannel(m)) => {
                self.on_close_channel(m.channel_id);
                Ok(())
            }
            (State::Ready, Message::SetCustomMiningJob(m)) => {
                let err = SetCustomMiningJobError {
                    channel_id: m.channel_id,
                    request_id: m.request_id,
                    error_code: Str0_255::new("jd-not-supported").unwrap_or_default(),
                };
                self.send(&err);
                Ok(())
            }
            (State::Ready, other) => Err(SessionError::Unexpected(other.name(), "from a client")),
        }
    }

    fn on_setup(&mut self, m: &SetupConnection<'_>) -> Result<(), SessionError> {
        let refuse = |s: &mut Self, flags: u32, code: &'static str| {
            let err = SetupConnectionError {
                flags,
                error_code: Str0_255::new(code).unwrap_or_default(),
            };
            s.send(&err);
            Err(SessionError::SetupRefused(code))
        };
        if m.protocol != PROTOCOL_MINING {
            return refuse(self, 0, "unsupported-protocol");
        }
        if m.min_version > PROTOCOL_VERSION || m.max_version < PROTOCOL_VERSION {
            return refuse(self, 0, "protocol-version-mismatch");
        }
        // Job declaration (custom work) is not served; version rolling only if configured.
        let mut unsupported = m.flags & REQUIRES_WORK_SELECTION;
        if !self.config.version_rolling {
            unsupported |= m.flags & REQUIRES_VERSION_ROLLING;
        }
        if unsupported != 0 {
            return refuse(self, unsupported, "unsupported-feature-flags");
        }
        self.flags = m.flags;
        self.state = State::Ready;
        // The connection's group channel takes the first id; mining channels follow.
        self.group_channel_id = self.next_channel_id;
        self.next_channel_id += 1;
        let flags = if self.config.version_rolling {
            0
        } else {
            REQUIRES_FIXED_VERSION
        };
        self.send(&SetupConnectionSuccess {
            used_version: PROTOCOL_VERSION,
            flags,
        });
        self.events.push(SessionEvent::Setup {
            flags: m.flags,
            vendor: m.vendor.to_string_lossy().into_owned(),
        });
        Ok(())
    }

    fn on_request_extensions(&mut self, m: &RequestExtensions<'_>) {
        let supported: Vec<u16> = m
            .requested_extensions
            .iter()
            .filter(|&e| e == EXTENSION_TYPE_WORKER_HASHRATE)
            .collect();
        let unsupported: Vec<u16> = m
            .requested_extensions
            .iter()
            .filter(|&e| e != EXTENSION_TYPE_WORKER_HASHRATE)
            .collect();
        self.worker_tlv = !supported.is_empty();
        if supported.is_empty() {
            let err = RequestExtensionsError {
                request_id: m.request_id,
                unsupported_extensions: Seq0_64K::new(&unsupported).unwrap_or_default(),
                required_extensions: Seq0_64K::default(),
            };
            self.send(&err);
        } else {
            let ok = RequestExtensionsSuccess {
                request_id: m.request_id,
                supported_extensions: Seq0_64K::new(&supported).unwrap_or_default(),
            };
            self.send(&ok);
        }
    }

    /// The initial target: from the announced hashrate and the share rate, within the pool's
    /// difficulty bounds, never above the client's max_target.
    fn initial_target(
        &self,
        nominal_hash_rate: f32,
        max_target: &U256,
    ) -> Result<U256, &'static str> {
        if !nominal_hash_rate.is_finite() || nominal_hash_rate < 0.0 {
            return Err("invalid-nominal-hashrate");
        }
        let (easiest, hardest) = (self.easiest, self.hardest);
        if !le_u256_le(&hardest, max_target) {
            return Err("max-target-out-of-range");
        }
        let mut t = if nominal_hash_rate > 0.0 {
            target_for_hashrate(f64::from(nominal_hash_rate), self.config.shares_per_minute)
        } else {
            easiest
        };
        if le_u256_le(&easiest, &t) {
            t = easiest;
        }
        if le_u256_le(&t, &hardest) {
            t = hardest;
        }
        if !le_u256_le(&t, max_target) {
            t = *max_target;
        }
        Ok(t)
    }

    fn refuse_channel(&mut self, request_id: u32, code: &'static str) {
        let err = OpenMiningChannelError {
            request_id,
            error_code: Str0_255::new(code).unwrap_or_default(),
        };
        self.send(&err);
        self.events
            .push(SessionEvent::ChannelRefused { request_id, code });
    }

    #[allow(clippy::too_many_arguments)]
    fn new_channel(
        &mut self,
        kind: ChannelKind,
        user_identity: &str,
        nominal_hash_rate: f32,
        target: U256,
        max_target: U256,
        extranonce_size: usize,
        now_ms: u64,
    ) -> u32 {
        let id = self.next_channel_id;
        self.next_channel_id += 1;
        let prefix_len = self.config.coinbase.extranonce_len - extranonce_size;
        let extranonce_prefix = self.allocator.allocate(self.config.server_id, prefix_len);
        self.channels.push(Channel {
            id,
            kind,
            user_identity: user_identity.to_owned(),
            extranonce_prefix,
            extranonce_size,
            target,
            previous_target: None,
            max_target,
            difficulty: difficulty_of(&target),
            share_work: work_of(&target),
            roots: VecDeque::new(),
            seen: SeenShares::default(),
            batch_count: 0,
            batch_sum: 0.0,
            batch_last_seq: 0,
            batch_started_ms: now_ms,
            vardiff: Vardiff::new(
                self.config.shares_per_minute,
                f64::from(nominal_hash_rate),
                now_ms,
            ),
            stats: ChannelStats::default(),
        });
        self.events.push(SessionEvent::ChannelOpened {
            channel_id: id,
            user_identity: user_identity.to_owned(),
            extended: kind == ChannelKind::Extended,
        });
        id
    }

    fn on_open_standard(&mut self, m: &OpenStandardMiningChannel<'_>, now_ms: u64) {
        if self.channels.len() >= self.config.max_channels_per_connection {
            return self.refuse_channel(m.request_id, "channel-capacity-exhausted");
        }
        let target = match self.initial_target(m.nominal_hash_rate, &m.max_target) {
            Ok(t) => t,
            Err(code) => return self.refuse_channel(m.request_id, code),
        };
        let id = self.new_channel(
            ChannelKind::Standard,
            &m.user_identity.to_string_lossy(),
            m.nominal_hash_rate,
            target,
            m.max_target,
            0,
            now_ms,
        );
        let idx = self.channels.len() - 1;
        let ok = OpenStandardMiningChannelSuccess {
            request_id: m.request_id,
            channel_id: id,
            target,
            extranonce_prefix: B0_32::new(&self.channels[idx].extranonce_prefix)
                .unwrap_or_default(),
            group_channel_id: self.group_channel_id,
        };
        let _ = self.out.push(&ok);
        self.send_current_work_to(idx);
    }

    fn on_open_extended(&mut self, m: &OpenExtendedMiningChannel<'_>, now_ms: u64) {
        if self.channels.len() >= self.config.max_channels_per_connection {
            return self.refuse_channel(m.request_id, "channel-capacity-exhausted");
        }
        let room = self.config.coinbase.extranonce_len - UNIQUE_PREFIX_LEN;
        let wanted = usize::from(m.min_extranonce_size);
        if wanted > room {
            return self.refuse_channel(m.request_id, "min-extranonce-size-too-large");
        }
        let size = wanted
            .max(usize::from(self.config.default_extranonce_size))
            .min(room);
        let target = match self.initial_target(m.nominal_hash_rate, &m.max_target) {
            Ok(t) => t,
            Err(code) => return self.refuse_channel(m.request_id, code),
        };
        let id = self.new_channel(
            ChannelKind::Extended,
            &m.user_identity.to_string_lossy(),
            m.nominal_hash_rate,
            target,
            m.max_target,
            size,
            now_ms,
        );
        let idx = self.channels.len() - 1;
        let ok = OpenExtendedMiningChannelSuccess {
            request_id: m.request_id,
            channel_id: id,
            target,
            extranonce_size: size as u16,
            extranonce_prefix: B0_32::new(&self.channels[idx].extranonce_prefix)
                .unwrap_or_default(),
            group_channel_id: self.group_channel_id,
        };
        let _ = self.out.push(&ok);
        self.send_current_work_to(idx);
    }

    fn on_update_channel(&mut self, m: &UpdateChannel, now_ms: u64) {
        let Some(idx) = self.channels.iter().position(|c| c.id == m.channel_id) else {
            let err = UpdateChannelError {
                channel_id: m.channel_id,
                error_code: Str0_255::new("invalid-channel-id").unwrap_or_default(),
            };
            return self.send(&err);
        };
        let target = match self.initial_target(m.nominal_hash_rate, &m.maximum_target) {
            Ok(t) => t,
            Err(code) => {
                let err = UpdateChannelError {
                    channel_id: m.channel_id,
                    error_code: Str0_255::new(code).unwrap_or_default(),
                };
                return self.send(&err);
            }
        };
        let ch = &mut self.channels[idx];
        ch.max_target = m.maximum_target;
        ch.vardiff = Vardiff::new(
            self.config.shares_per_minute,
            f64::from(m.nominal_hash_rate),
            now_ms,
        );
        if ch.target != target {
            ch.previous_target = Some((ch.target, now_ms + TARGET_GRACE_MS));
            ch.set_target(target);
            let msg = SetTarget {
                channel_id: ch.id,
                maximum_target: target,
            };
            self.send(&msg);
        }
    }

    fn on_close_channel(&mut self, channel_id: u32) {
        if let Some(idx) = self.channels.iter().position(|c| c.id == channel_id) {
            self.channels.swap_remove(idx);
            self.events.push(SessionEvent::ChannelClosed { channel_id });
        }
    }

    /// New work from the pool. On a new prev hash, the job goes out as a future job followed
    /// by SetNewPrevHash; on the same tip, as a job active at once (with min_ntime).
    pub fn on_work(&mut self, work: &Arc<Work>, now_ms: u64) {
        let new_tip = self
            .current
            .as_ref()
            .is_none_or(|c| c.prev_hash != work.prev_hash);
        self.current = Some(work.clone());
        let job_id = self.push_job(work);
        if new_tip {
            self.tip = Some(work.prev_hash.to_byte_array());
            for ch in &mut self.channels {
                ch.seen.clear();
            }
        }
        if self.state != State::Ready {
            return;
        }
        // Standard channels of a connection that takes extended jobs get one job for the
        // whole group (05 §5.3.16); the pool still keeps each channel's merkle root.
        let group = self.flags & REQUIRES_STANDARD_JOBS == 0;
        let mut grouped = false;
        for idx in 0..self.channels.len() {
            if group && self.channels[idx].kind == ChannelKind::Standard {
                self.record_root(idx, job_id, work);
                grouped = true;
            } else {
                self.send_job(idx, job_id, work, new_tip);
            }
        }
        if grouped {
            let msg = self.extended_job(self.group_channel_id, job_id, work, new_tip);
            let _ = self.out.push(&msg);
        }
        if new_tip {
            for idx in 0..self.channels.len() {
                if !(group && self.channels[idx].kind == ChannelKind::Standard) {
                    let id = self.channels[idx].id;
                    self.send_prev_hash(id, job_id, work);
                }
            }
            if grouped {
                self.send_prev_hash(self.group_channel_id, job_id, work);
            }
        }
        let _ = now_ms;
    }

    fn extended_job<'w>(
        &self,
        channel_id: u32,
        job_id: u32,
        work: &'w Work,
        future: bool,
    ) -> NewExtendedMiningJob<'w> {
        NewExtendedMiningJob {
            channel_id,
            job_id,
            min_ntime: if future { None } else { Some(work.cur_time) },
            version: work.version,
            version_rolling_allowed: self.config.version_rolling,
            merkle_path: Seq0_255::new(&work.merkle_path).unwrap_or_default(),
            coinbase_tx_prefix: B0_64K::new(&work.coinbase.prefix).unwrap_or_default(),
            coinbase_tx_suffix: B0_64K::new(&work.coinbase.suffix).unwrap_or_default(),
        }
    }

    /// Computes and remembers a standard channel's merkle root for a job.
    fn record_root(&mut self, idx: usize, job_id: u32, work: &Work) -> [u8; 32] {
        let max = self.config.max_jobs.max(1);
        let ch = &mut self.channels[idx];
        let root = work.merkle_root(&ch.extranonce_prefix, &[]);
        let head = header_midstate(&header_bytes(
            work.version,
            work.prev_hash.as_byte_array(),
            &root,
            0,
            0,
            0,
        ));
        ch.roots.push_back(StandardJob {
            job_id,
            version: work.version,
            root,
            head,
        });
        while ch.roots.len() > max {
            ch.roots.pop_front();
        }
        root
    }

    fn push_job(&mut self, work: &Arc<Work>) -> u32 {
        let job_id = self.next_job_id;
        self.next_job_id = self.next_job_id.wrapping_add(1).max(1);
        self.jobs.push_back(SessionJob {
            job_id,
            work: work.clone(),
            min_ntime: work.cur_time,
        });
        self.cleanup_old_jobs();
        job_id
    }

    /// Forgets jobs beyond `max_jobs` (product API name); called whenever a job is added, so
    /// the history of a connection never grows past the bound.
    pub fn cleanup_old_jobs(&mut self) {
        let max = self.config.max_jobs.max(1);
        while self.jobs.len() > max {
            self.jobs.pop_front();
        }
        for ch in &mut self.channels {
            while ch.roots.len() > max {
                ch.roots.pop_front();
            }
        }
    }

    /// Number of jobs remembered (bounded by `max_jobs`).
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// A channel just opened gets the current work as a future job and the prev hash.
    fn send_current_work_to(&mut self, idx: usize) {
        let Some(job) = self.jobs.back().cloned() else {
            return;
        };
        // The newest job's id is new to this channel: it goes out as a future job followed
        // by SetNewPrevHash, the order the spec requires for a channel's first job.
        self.send_job(idx, job.job_id, &job.work, true);
        let id = self.channels[idx].id;
        self.send_prev_hash(id, job.job_id, &job.work);
    }

    fn send_job(&mut self, idx: usize, job_id: u32, work: &Arc<Work>, future: bool) {
        match self.channels[idx].kind {
            ChannelKind::Extended => {
                let msg = self.extended_job(self.channels[idx].id, job_id, work, future);
                let _ = self.out.push(&msg);
            }
            ChannelKind::Standard => {
                let merkle_root = self.record_root(idx, job_id, work);
                let msg = NewMiningJob {
                    channel_id: self.channels[idx].id,
                    job_id,
                    min_ntime: if future { None } else { Some(work.cur_time) },
                    version: work.version,
                    merkle_root,
                };
                self.send(&msg);
            }
        }
    }

    fn send_prev_hash(&mut self, channel_id: u32, job_id: u32, work: &Arc<Work>) {
        let msg = SetNewPrevHash {
            channel_id,
            job_id,
            prev_hash: work.prev_hash.to_byte_array(),
            min_ntime: work.cur_time,
            nbits: work.nbits,
        };
        self.send(&msg);
    }

    /// Index of a valid, current job in `self.jobs`.
    fn find_job(&self, job_id: u32, now_ms: u64) -> Result<usize, ShareRejection> {
        let ji = self
            .jobs
            .iter()
            .rposition(|j| j.job_id == job_id)
            .ok_or(ShareRejection::InvalidJobId)?;
        let prev = self.jobs[ji].work.prev_hash.to_byte_array();
        if matches!(self.solved, Some((tip, until)) if tip == prev && now_ms <= until) {
            return Err(ShareRejection::StaleShare);
        }
        match self.tip {
            Some(tip) if tip == prev => Ok(ji),
            _ => Err(ShareRejection::StaleShare),
        }
    }

    fn check_time_and_version(
        &self,
        job: &SessionJob,
        ntime: u32,
        version: u32,
        now_ms: u64,
    ) -> Result<(), ShareRejection> {
        if ntime < job.min_ntime {
            return Err(ShareRejection::NtimeTooOld);
        }
        let now_s = now_ms / 1000;
        if u64::from(ntime) > now_s + u64::from(self.config.max_ntime_ahead_secs) {
            return Err(ShareRejection::NtimeTooNew);
        }
        if version != job.work.version {
            if !self.config.version_rolling {
                return Err(ShareRejection::VersionRollingNotAllowed);
            }
            if (version ^ job.work.version) & !VERSION_ROLLING_MASK != 0 {
                return Err(ShareRejection::InvalidNonRollableVersionBit);
            }
        }
        Ok(())
    }

    fn on_submit_extended(
        &mut self,
        m: &SubmitSharesExtended<'_>,
        tlv: &[u8],
        now_ms: u64,
    ) -> Result<(), SessionError> {
        let worker = if self.worker_tlv {
            TlvDecoder::new(tlv, &[USER_IDENTITY])
                .find_map(Result::ok)
                .and_then(|t| std::str::from_utf8(t.value).ok().map(str::to_owned))
        } else {
            None
        };
        let verdict = self.validate_extended(m, now_ms);
        self.conclude(m.channel_id, m.sequence_number, verdict, worker, now_ms);
        Ok(())
    }

    fn on_submit_standard(&mut self, m: &SubmitSharesStandard, now_ms: u64) {
        let verdict = self.validate_standard(m, now_ms);
        self.conclude(m.channel_id, m.sequence_number, verdict, None, now_ms);
    }

    /// Validates an extended share; on success returns the channel index and whether it is a
    /// block (the block event is already pushed).
    fn validate_extended(
        &mut self,
        m: &SubmitSharesExtended<'_>,
        now_ms: u64,
    ) -> Result<Verdict, ShareRejection> {
        let idx = self
            .channels
            .iter()
            .position(|c| c.id == m.channel_id && c.kind == ChannelKind::Extended)
            .ok_or(ShareRejection::InvalidChannelId)?;
        let ji = self.find_job(m.job_id, now_ms)?;
        let job = &self.jobs[ji];
        let ch = &self.channels[idx];
        if m.extranonce.len() != ch.extranonce_size {
            return Err(ShareRejection::BadExtranonceSize);
        }
        self.check_time_and_version(job, m.ntime, m.version, now_ms)?;
        let root = job.work.merkle_root(&ch.extranonce_prefix, &m.extranonce);
        let hash = header_hash(m.version, &job.work, &root, m.ntime, m.nonce);
        self.finish_share(
            idx,
            ji,
            hash,
            (m.version, m.ntime, m.nonce),
            &m.extranonce,
            now_ms,
        )
    }

    fn validate_standard(
        &mut self,
        m: &SubmitSharesStandard,
        now_ms: u64,
    ) -> Result<Verdict, ShareRejection> {
        let idx = self
            .channels
            .iter()
            .position(|c| c.id == m.channel_id && c.kind == ChannelKind::Standard)
            .ok_or(ShareRejection::InvalidChannelId)?;
        let ji = self.find_job(m.job_id, now_ms)?;
        let job = &self.jobs[ji];
        self.check_time_and_version(job, m.ntime, m.version, now_ms)?;
        let sj = self.channels[idx]
            .roots
            .iter()
            .rev()
            .find(|j| j.job_id == m.job_id)
            .ok_or(ShareRejection::InvalidJobId)?;
        let hash = if m.version == sj.version {
            // The cached state covers the first 64 header bytes: hash the last 16.
            let mut tail = [0u8; 16];
            tail[..4].copy_from_slice(&sj.root[28..]);
            tail[4..8].copy_from_slice(&m.ntime.to_le_bytes());
            tail[8..12].copy_from_slice(&job.work.nbits.to_le_bytes());
            tail[12..].copy_from_slice(&m.nonce.to_le_bytes());
            sha256d_from_midstate(&sj.head, &tail)
        } else {
            header_hash(m.version, &job.work, &sj.root, m.ntime, m.nonce)
        };
        self.finish_share(idx, ji, hash, (m.version, m.ntime, m.nonce), &[], now_ms)
    }

    /// Checks the share's hash against the targets and earlier shares, and builds the block if
    /// it is one.
    fn finish_share(
        &mut self,
        idx: usize,
        ji: usize,
        hash: [u8; 32],
        (version, ntime, nonce): (u32, u32, u32),
        extranonce: &[u8],
        now_ms: u64,
    ) -> Result<Verdict, ShareRejection> {
        // Field borrows, not methods: the job stays borrowed while the channel changes.
        let work: &Work = &self.jobs[ji].work;
        let ch = &mut self.channels[idx];
        // A block is never refused, even where the channel target is harder than the network's
        // (possible on regtest).
        let is_block = hash_meets_target(&hash, &work.network_target);
        let credited = if hash_meets_target(&hash, &ch.target) {
            ch.target
        } else {
            match ch.previous_target {
                Some((prev, until)) if now_ms <= until && hash_meets_target(&hash, &prev) => prev,
                _ if is_block => ch.target,
                _ => return Err(ShareRejection::DifficultyTooLow),
            }
        };
        let mut key = [0u8; 8];
        key.copy_from_slice(&hash[..8]);
        if !ch
            .seen
            .insert(u64::from_le_bytes(key), self.config.duplicate_window)
        {
            return Err(ShareRejection::DuplicateShare);
        }
        if is_block {
            self.solved = Some((work.prev_hash.to_byte_array(), now_ms + SOLVED_TIP_MS));
            let ch = &mut self.channels[idx];
            let block =
                work.assemble_block(&ch.extranonce_prefix, extranonce, version, ntime, nonce);
            ch.stats.blocks_found += 1;
            self.events
                .push(SessionEvent::BlockFound(Box::new(FoundBlock {
                    block,
                    height: work.height,
                    channel_id: ch.id,
                    user_identity: ch.user_identity.clone(),
                })));
        }
        Ok(Verdict {
            idx,
            credited,
            hash,
            work_id: work.id,
        })
    }

    fn conclude(
        &mut self,
        channel_id: u32,
        sequence_number: u32,
        verdict: Result<Verdict, ShareRejection>,
        worker: Option<String>,
        now_ms: u64,
    ) {
        match verdict {
            Err(reason) => {
                if let Some(ch) = self.channels.iter_mut().find(|c| c.id == channel_id) {
                    ch.stats.rejected[reason.index()] += 1;
                    ch.stats.last_share_ms = Some(now_ms);
                }
                let err = SubmitSharesError {
                    channel_id,
                    sequence_number,
                    error_code: Str0_255::new(reason.code()).unwrap_or_default(),
                };
                self.send(&err);
                self.events
                    .push(SessionEvent::ShareRejected { channel_id, reason });
            }
            Ok(Verdict {
                idx,
                credited,
                hash,
                work_id,
            }) => {
                let batch = self.config.share_batch_size.max(1);
                let ch = &mut self.channels[idx];
                let difficulty = if credited == ch.target {
                    ch.difficulty
                } else {
                    difficulty_of(&credited)
                };
                let share_work = if credited == ch.target {
                    ch.share_work
                } else {
                    work_of(&credited)
                };
                ch.stats.accepted += 1;
                ch.stats.difficulty_sum += difficulty;
                ch.stats.last_share_ms = Some(now_ms);
                if ch.batch_count == 0 {
                    ch.batch_started_ms = now_ms;
                }
                ch.batch_count += 1;
                ch.batch_sum += difficulty;
                ch.batch_last_seq = sequence_number;
                ch.vardiff.on_share(share_work);
                self.events.push(SessionEvent::ShareAccepted {
                    channel_id,
                    difficulty,
                    worker,
                    work_id,
                    hash,
                });
                if self.channels[idx].batch_count >= batch {
                    self.flush_batch(idx);
                }
                self.retarget(idx, now_ms);
            }
        }
    }

    fn flush_batch(&mut self, idx: usize) {
        let ch = &mut self.channels[idx];
        if ch.batch_count == 0 {
            return;
        }
        let msg = SubmitSharesSuccess {
            channel_id: ch.id,
            last_sequence_number: ch.batch_last_seq,
            new_submits_accepted_count: ch.batch_count,
            new_shares_sum: ch.batch_sum.round() as u64,
        };
        ch.batch_count = 0;
        ch.batch_sum = 0.0;
        let _ = self.out.push(&msg);
    }

    fn retarget(&mut self, idx: usize, now_ms: u64) {
        let (easiest, hardest) = (self.easiest, self.hardest);
        let ch = &mut self.channels[idx];
        let Some(mut t) = ch.vardiff.poll(&ch.target, now_ms) else {
            return;
        };
        if le_u256_le(&easiest, &t) {
            t = easiest;
        }
        if le_u256_le(&t, &hardest) {
            t = hardest;
        }
        if !le_u256_le(&t, &ch.max_target) {
            t = ch.max_target;
        }
        if t == ch.target {
            return;
        }
        ch.previous_target = Some((ch.target, now_ms + TARGET_GRACE_MS));
        ch.set_target(t);
        let msg = SetTarget {
            channel_id: ch.id,
            maximum_target: t,
        };
        let id = ch.id;
        let _ = self.out.push(&msg);
        self.events.push(SessionEvent::TargetChanged {
            channel_id: id,
            target: t,
        });
    }

    /// When [`Self::on_tick`] next has something to do (unix ms): a batch of
    /// acknowledgements turning one second old, or a channel's vardiff window ending. `None`
    /// with no channel open: an idle connection has nothing due.
    pub fn next_tick_ms(&self) -> Option<u64> {
        self.channels
            .iter()
            .map(|ch| {
                let retarget = ch.vardiff.next_poll_ms();
                if ch.batch_count > 0 {
                    retarget.min(ch.batch_started_ms.saturating_add(1000))
                } else {
                    retarget
                }
            })
            .min()
    }

    /// Periodic work: acknowledges batches older than a second and lets vardiff lower the
    /// difficulty of channels that went quiet. Call at [`Self::next_tick_ms`] (calling it
    /// more often does no harm).
    pub fn on_tick(&mut self, now_ms: u64) {
        for idx in 0..self.channels.len() {
            let ch = &self.channels[idx];
            if ch.batch_count > 0 && now_ms.saturating_sub(ch.batch_started_ms) >= 1000 {
                self.flush_batch(idx);
            }
            self.retarget(idx, now_ms);
        }
    }
}

/// The pool's mining session as carried by a [`Connection`](crate::connection::Connection):
/// its periodic work ([`Session::on_tick`]) becomes the connection's deadline.
impl Protocol for Session {
    type Event = SessionEvent;
    type Error = SessionError;

    #[inline]
    fn handle_message(&mut self, message: &[u8], now_ms: u64) -> Result<(), SessionError> {
        self.handle_frame(&Frame::parse_exact(message)?, now_ms)
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    fn take_events(&mut self, into: &mut VecDeque<SessionEvent>) {
        into.extend(self.events.drain(..));
    }

    fn is_set_up(&self) -> bool {
        self.is_ready()
    }

    fn next_deadline(&self) -> Option<u64> {
        self.next_tick_ms()
    }

    fn handle_timeout(&mut self, now_ms: u64) {
        self.on_tick(now_ms);
    }
}

/// SHA-256d of a share's 80-byte header.
#[inline]
fn header_hash(version: u32, work: &Work, root: &[u8; 32], ntime: u32, nonce: u32) -> [u8; 32] {
    let header = header_bytes(
        version,
        work.prev_hash.as_byte_array(),
        root,
        ntime,
        work.nbits,
        nonce,
    );
    sha256d::Hash::hash(&header).to_byte_array()
}

#[cfg(test)]
mod tests {
    use super::SeenShares;

    #[test]
    fn duplicates_are_caught_for_at_least_half_the_window_and_memory_stays_bounded() {
        let window = 896;
        let mut seen = SeenShares::default();
        for key in 0..10_000u64 {
            assert!(seen.insert(key, window), "{key} is new");
            // Every one of the last window/2 shares is still a duplicate.
            for back in [0, 1, window as u64 / 2 - 1] {
                if let Some(old) = key.checked_sub(back) {
                    assert!(
                        !seen.insert(old, window),
                        "{old} repeated {back} shares later"
                    );
                }
            }
            assert!(seen.newer.len() + seen.older.len() <= window);
        }
        let buckets = seen.newer.capacity() + seen.older.capacity();
        assert!(
            buckets <= 2 * 512,
            "{buckets} slots for a window of {window}"
        );
        seen.clear();
        assert!(seen.insert(9_999, window), "a new tip forgets");
    }
}
