//! The miner's side of the Mining Protocol, sans-IO: decoded frames in, encoded plaintext
//! frames (in [`MinerSession::output`]) and [`MinerEvent`]s out, the time passed in.
//!
//! One session opens one channel (standard or extended), keeps the jobs the pool sends
//! (future jobs until their SetNewPrevHash, active jobs at once), and exposes the work to hash
//! as a [`MiningWork`] snapshot whose `generation` changes whenever the hashers must pick up
//! something new. Found shares go back through [`MinerSession::submit`].

use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, Target};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::connection::{Outbox, Protocol};
use crate::wire::common::{
    PROTOCOL_MINING, Reconnect, SetupConnection, SetupConnectionError, SetupConnectionSuccess,
};
use crate::wire::mining::*;
use crate::wire::{B0_32, Frame, Message, Str0_255, U256, WireError};

/// The only SV2 protocol version.
const PROTOCOL_VERSION: u16 = 2;
/// Future jobs remembered; a pool sends one or a few per expected block, so more is abuse.
const MAX_FUTURE_JOBS: usize = 32;
/// request_id of our single OpenStandard/ExtendedMiningChannel.
const OPEN_REQUEST_ID: u32 = 1;

/// Which kind of channel the miner opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelKind {
    /// Header-only mining: the pool computes the merkle root (end devices).
    Standard,
    /// The miner builds the coinbase and rolls its own extranonce (more search space per job,
    /// one channel for many threads).
    #[default]
    Extended,
}

/// How the miner sets a header's nTime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtimePolicy {
    /// `None`: start from the job's min_ntime (the pool's time). `Some(secs)`: the miner's
    /// clock plus `secs`, taken once when a job becomes the one mined and not raised to the
    /// job's min_ntime, as devices that use their own clock do (SRI's mining_device: +60).
    pub clock_offset_secs: Option<i32>,
    /// Whether hashers roll nTime forward, one second at a time, once a job's nonce (and
    /// version) space is spent; without it they stop on that job until the next one.
    pub roll: bool,
}

impl Default for NtimePolicy {
    fn default() -> Self {
        NtimePolicy {
            clock_offset_secs: None,
            roll: true,
        }
    }
}

impl NtimePolicy {
    /// The nTime of a job that becomes the one mined at `now_ms`, whose floor is `min_ntime`.
    fn job_ntime(&self, min_ntime: u32, now_ms: u64) -> u32 {
        match self.clock_offset_secs {
            None => min_ntime,
            Some(offset) => {
                let clock = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
                let ntime = clock.saturating_add(i64::from(offset));
                u32::try_from(ntime.max(0)).unwrap_or(u32::MAX)
            }
        }
    }
}

/// What the miner announces to the pool.
#[derive(Debug, Clone)]
pub struct MinerConfig {
    /// Standard or extended channel.
    pub channel: ChannelKind,
    /// `user_identity` of the channel, e.g. "pool-user.worker1".
    pub user_identity: String,
    /// Expected hashrate in h/s; the pool derives the first share target from it.
    pub nominal_hash_rate: f32,
    /// Miner extranonce bytes asked for on extended channels.
    pub min_extranonce_size: u16,
    /// Whether to set REQUIRES_VERSION_ROLLING in SetupConnection.
    pub version_rolling: bool,
    /// Host the miner connected to (SetupConnection.endpoint_host).
    pub endpoint_host: String,
    /// Port the miner connected to.
    pub endpoint_port: u16,
    /// SetupConnection.vendor.
    pub vendor: String,
    /// How header nTimes are chosen.
    pub ntime: NtimePolicy,
}

impl Default for MinerConfig {
    fn default() -> Self {
        MinerConfig {
            channel: ChannelKind::Extended,
            user_identity: "blvm-cpu-miner".into(),
            nominal_hash_rate: 0.0,
            min_extranonce_size: 8,
            version_rolling: false,
            endpoint_host: String::new(),
            endpoint_port: 0,
            vendor: "blvm-stratum-v2 cpu miner".into(),
            ntime: NtimePolicy::default(),
        }
    }
}

/// The job-specific part of [`MiningWork`].
#[derive(Debug, Clone, PartialEq)]
pub enum JobKind {
    /// Standard channel: the pool computed the merkle root.
    Standard {
        /// Header merkle root.
        merkle_root: U256,
    },
    /// Extended channel: each worker builds `prefix + extranonce_prefix + extranonce + suffix`.
    Extended {
        /// Coinbase bytes before the extranonce.
        coinbase_prefix: Vec<u8>,
        /// Coinbase bytes after the extranonce.
        coinbase_suffix: Vec<u8>,
        /// Merkle path, deepest first.
        merkle_path: Vec<U256>,
        /// The pool's part of the extranonce, as of the job's arrival.
        extranonce_prefix: Vec<u8>,
        /// Bytes of extranonce the miner rolls.
        extranonce_size: usize,
    },
}

/// A snapshot of what to hash, shared read-only by every hashing thread.
#[derive(Debug, Clone, PartialEq)]
pub struct MiningWork {
    /// Changes on every update (new job, new prev hash, new target): hashers restart.
    pub generation: u64,
    /// Changes only when the job itself changes; a new target alone keeps it, so hashers
    /// continue where they were instead of re-finding the same shares.
    pub job_seq: u64,
    /// The channel.
    pub channel_id: u32,
    /// The job.
    pub job_id: u32,
    /// Header version.
    pub version: u32,
    /// Whether BIP320 bits may be rolled (extended jobs; standard: what setup negotiated).
    pub version_rolling_allowed: bool,
    /// Previous block hash, header byte order.
    pub prev_hash: U256,
    /// Header nBits.
    pub nbits: u32,
    /// nTime to start from: the job's or the prev hash's min_ntime, or the miner's clock plus
    /// its offset when the job arrived (see [`NtimePolicy`]).
    pub ntime: u32,
    /// Share target (little-endian U256).
    pub target: U256,
    /// Merkle root or coinbase parts.
    pub job: JobKind,
}

/// A solution found by a hasher, to be submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// The channel of the work.
    pub channel_id: u32,
    /// The job of the work.
    pub job_id: u32,
    /// Generation of the work it was found on.
    pub generation: u64,
    /// Header nonce.
    pub nonce: u32,
    /// Header nTime.
    pub ntime: u32,
    /// Header version.
    pub version: u32,
    /// The miner's extranonce (empty on standard channels).
    pub extranonce: Vec<u8>,
    /// The header's sha256d, so stale-target shares can be dropped before submission.
    pub hash: [u8; 32],
}

/// Why [`MinerSession::submit`] did not send a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShareDropped {
    /// No channel is open.
    #[error("no open channel")]
    NoChannel,
    /// The share's channel or job is no longer valid (a new prev hash came).
    #[error("stale job")]
    Stale,
    /// The hash misses the current target (it was raised since the share was found).
    #[error("hash above the current target")]
    AboveTarget,
    /// The extranonce does not have the negotiated size.
    #[error("bad extranonce size")]
    BadExtranonce,
}

/// What the session tells its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum MinerEvent {
    /// SetupConnection.Success.
    SetupSucceeded {
        /// The server's flags.
        flags: u32,
    },
    /// The channel is open.
    ChannelOpened {
        /// Its id.
        channel_id: u32,
        /// First share target.
        target: U256,
        /// Miner extranonce bytes (0 on standard channels).
        extranonce_size: usize,
    },
    /// A job arrived.
    NewJob {
        /// Its id.
        job_id: u32,
        /// Future job (waits for SetNewPrevHash) or active at once.
        future: bool,
    },
    /// A new block to build on.
    NewPrevHash {
        /// The job it activates.
        job_id: u32,
        /// The prev hash, header byte order.
        prev_hash: U256,
    },
    /// SetTarget.
    TargetChanged {
        /// The new share target.
        target: U256,
    },
    /// SetExtranoncePrefix (applies to jobs that arrive afterwards).
    ExtranoncePrefixChanged,
    /// SubmitShares.Success.
    SharesAccepted {
        /// Shares in this batch.
        count: u32,
        /// Last sequence number acknowledged.
        last_sequence_number: u32,
        /// Difficulty sum of the batch.
        shares_sum: u64,
    },
    /// SubmitShares.Error.
    ShareRejected {
        /// The refused submission.
        sequence_number: u32,
        /// The pool's reason code.
        code: String,
    },
    /// The pool closed the channel.
    ChannelClosed {
        /// Its reason code.
        reason: String,
    },
    /// The pool asks us to reconnect elsewhere (the driver decides what to do).
    Reconnect {
        /// New host; empty means the same host.
        host: String,
        /// New port; 0 means the same port.
        port: u16,
    },
}

/// Why the session cannot go on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MinerSessionError {
    /// Bytes that do not decode.
    #[error("malformed message from the pool: {0}")]
    Wire(#[from] WireError),
    /// A configuration value that cannot be encoded (e.g. a user identity over 255 bytes).
    #[error("invalid miner configuration: {0}")]
    Config(String),
    /// SetupConnection.Error.
    #[error("pool refused the connection: {code} (flags {flags:#x})")]
    SetupRefused {
        /// The pool's error code.
        code: String,
        /// Flags that caused it.
        flags: u32,
    },
    /// OpenMiningChannel.Error.
    #[error("pool refused the channel: {0}")]
    ChannelRefused(String),
    /// A message that makes no sense in the current state.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingSetup,
    AwaitingChannel,
    Open,
    Closed,
}

/// A job as received (before or after activation).
#[derive(Debug, Clone)]
struct Job {
    job_id: u32,
    version: u32,
    version_rolling_allowed: bool,
    kind: JobKind,
}

/// The single channel.
#[derive(Debug, Clone)]
struct Channel {
    id: u32,
    group_id: u32,
    target: U256,
    extranonce_prefix: Vec<u8>,
    extranonce_size: usize,
}

/// Share counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareCounts {
    /// Shares submitted.
    pub submitted: u64,
    /// Shares acknowledged by SubmitShares.Success.
    pub accepted: u64,
    /// Refused shares by error code.
    pub rejected: BTreeMap<String, u64>,
    /// Found shares not sent (stale job, target raised).
    pub dropped: u64,
}

impl ShareCounts {
    /// Shares refused, all codes together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Shares submitted and not yet answered.
    pub fn pending(&self) -> u64 {
        self.submitted
            .saturating_sub(self.accepted)
            .saturating_sub(self.rejected_total())
    }
}

/// One connection's miner state machine.
#[derive(Debug)]
pub struct MinerSession {
    config: MinerConfig,
    state: State,
    server_flags: u32,
    channel: Option<Channel>,
    /// Future jobs by id, waiting for their SetNewPrevHash.
    future: VecDeque<Job>,
    /// Jobs valid on the current prev hash.
    active: Vec<u32>,
    /// prev_hash, min_ntime, nbits of the last SetNewPrevHash.
    prev: Option<(U256, u32, u32)>,
    /// The active job being mined and its starting nTime.
    current: Option<(Job, u32)>,
    work: Option<Arc<MiningWork>>,
    generation: u64,
    job_seq: u64,
    next_sequence: u32,
    counts: ShareCounts,
    jobs_received: u64,
    prev_hashes_received: u64,
    last_prev_hash_ms: Option<u64>,
    out: Outbox,
    events: Vec<MinerEvent>,
}

impl MinerSession {
    /// A new session; SetupConnection is already in [`output`](Self::output).
    pub fn new(config: MinerConfig) -> Result<Self, MinerSessionError> {
        let mut s = MinerSession {
            config,
            state: State::AwaitingSetup,
            server_flags: 0,
            channel: None,
            future: VecDeque::new(),
            active: Vec::new(),
            prev: None,
            current: None,
            work: None,
            generation: 0,
            job_seq: 0,
            next_sequence: 0,
            counts: ShareCounts::default(),
            jobs_received: 0,
            prev_hashes_received: 0,
            last_prev_hash_ms: None,
            out: Outbox::new(),
            events: Vec::new(),
        };
        let c = &s.config;
        let mut flags = 0;
        if c.channel == ChannelKind::Standard {
            flags |= REQUIRES_STANDARD_JOBS;
        }
        if c.version_rolling {
            flags |= REQUIRES_VERSION_ROLLING;
        }
        let setup = SetupConnection {
            protocol: PROTOCOL_MINING,
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            flags,
            endpoint_host: str255(&c.endpoint_host, "endpoint_host")?,
            endpoint_port: c.endpoint_port,
            vendor: str255(&c.vendor, "vendor")?,
            hardware_version: Str0_255::new("cpu").unwrap_or_default(),
            firmware: Str0_255::new(env!("CARGO_PKG_VERSION")).unwrap_or_default(),
            device_id: Str0_255::default(),
        };
        // Validate the identity now rather than after the handshake.
        str255(&c.user_identity, "user_identity")?;
        s.out.push(&setup)?;
        Ok(s)
    }

    /// Encoded plaintext frames waiting to be sent; the driver encrypts, sends and clears them.
    pub fn output(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// Takes the events produced so far.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, MinerEvent> {
        self.events.drain(..)
    }

    /// The work to hash now, if any.
    pub fn work(&self) -> Option<&Arc<MiningWork>> {
        self.work.as_ref()
    }

    /// Generation of the current work (0 before the first).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The open channel's id.
    pub fn channel_id(&self) -> Option<u32> {
        self.channel.as_ref().map(|c| c.id)
    }

    /// Whether a channel is open (and not closed by the pool).
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Share counters.
    pub fn counts(&self) -> &ShareCounts {
        &self.counts
    }

    /// Jobs received (future and active).
    pub fn jobs_received(&self) -> u64 {
        self.jobs_received
    }

    /// SetNewPrevHash messages received.
    pub fn prev_hashes_received(&self) -> u64 {
        self.prev_hashes_received
    }

    /// When the last SetNewPrevHash arrived (ms, as passed in).
    pub fn last_prev_hash_ms(&self) -> Option<u64> {
        self.last_prev_hash_ms
    }

    /// Flags of SetupConnection.Success.
    pub fn server_flags(&self) -> u32 {
        self.server_flags
    }

    /// Handles one frame from the pool. An error means the connection should end.
    pub fn handle_frame(
        &mut self,
        frame: &Frame<'_>,
        now_ms: u64,
    ) -> Result<(), MinerSessionError> {
        // Unknown messages of other extensions are ignored (03 §3.4.1).
        let Some((msg, _tlv)) = frame.known_message()? else {
            return Ok(());
        };
        match (self.state, msg) {
            (State::AwaitingSetup, Message::SetupConnectionSuccess(m)) => self.on_setup_success(&m),
            (_, Message::SetupConnectionError(m)) => self.on_setup_error(&m),
            (State::AwaitingChannel, Message::OpenStandardMiningChannelSuccess(m)) => self.on_open(
                m.request_id,
                m.channel_id,
                m.group_channel_id,
                m.target,
                &m.extranonce_prefix,
                0,
            ),
            (State::AwaitingChannel, Message::OpenExtendedMiningChannelSuccess(m)) => self.on_open(
                m.request_id,
                m.channel_id,
                m.group_channel_id,
                m.target,
                &m.extranonce_prefix,
                usize::from(m.extranonce_size),
            ),
            (State::AwaitingChannel, Message::OpenMiningChannelError(m)) => {
                Err(MinerSessionError::ChannelRefused(m.error_code.to_string()))
            }
            (_, Message::Reconnect(m)) => {
                self.on_reconnect(&m);
                Ok(())
            }
            (State::Open, msg) => self.on_channel_message(msg, now_ms),
            // After the pool closed our channel, stragglers are ignored.
            (State::Closed, _) => Ok(()),
            (_, other) => Err(MinerSessionError::Protocol(format!(
                "unexpected {} in state {:?}",
                other.name(),
                self.state
            ))),
        }
    }

    fn on_setup_success(&mut self, m: &SetupConnectionSuccess) -> Result<(), MinerSessionError> {
        if m.used_version != PROTOCOL_VERSION {
            return Err(MinerSessionError::Protocol(format!(
                "pool chose protocol version {}",
                m.used_version
            )));
        }
        self.server_flags = m.flags;
        if self.config.channel == ChannelKind::Standard && m.flags & REQUIRES_EXTENDED_CHANNELS != 0
        {
            return Err(MinerSessionError::Protocol(
                "pool accepts only extended channels".into(),
            ));
        }
        self.events
            .push(MinerEvent::SetupSucceeded { flags: m.flags });
        let user = str255(&self.config.user_identity, "user_identity")?;
        match self.config.channel {
            ChannelKind::Standard => self.out.push(&OpenStandardMiningChannel {
                request_id: OPEN_REQUEST_ID,
                user_identity: user,
                nominal_hash_rate: self.config.nominal_hash_rate,
                max_target: [0xff; 32],
            })?,
            ChannelKind::Extended => self.out.push(&OpenExtendedMiningChannel {
                request_id: OPEN_REQUEST_ID,
                user_identity: user,
                nominal_hash_rate: self.config.nominal_hash_rate,
                max_target: [0xff; 32],
                min_extranonce_size: self.config.min_extranonce_size,
            })?,
        }
        self.state = State::AwaitingChannel;
        Ok(())
    }

    fn on_setup_error(&mut self, m: &SetupConnectionError<'_>) -> Result<(), MinerSessionError> {
        Err(MinerSessionError::SetupRefused {
            code: m.error_code.to_string(),
            flags: m.flags,
        })
    }

    fn on_open(
        &mut self,
        request_id: u32,
        channel_id: u32,
        group_id: u32,
        target: U256,
        extranonce_prefix: &[u8],
        extranonce_size: usize,
    ) -> Result<(), MinerSessionError> {
        if request_id != OPEN_REQUEST_ID {
            return Err(MinerSessionError::Protocol(format!(
                "channel opened for unknown request {request_id}"
            )));
        }
        if extranonce_prefix.len() + extranonce_size > 32 {
            return Err(MinerSessionError::Protocol(format!(
                "extranonce of {} + {} bytes exceeds 32",
                extranonce_prefix.len(),
                extranonce_size
            )));
        }
        self.channel = Some(Channel {
            id: channel_id,
            group_id,
            target,
            extranonce_prefix: extranonce_prefix.to_vec(),
            extranonce_size,
        });
        self.state = State::Open;
        self.events.push(MinerEvent::ChannelOpened {
            channel_id,
            target,
            extranonce_size,
        });
        Ok(())
    }

    fn on_reconnect(&mut self, m: &Reconnect<'_>) {
        self.events.push(MinerEvent::Reconnect {
            host: m.new_host.to_string(),
            port: m.new_port,
        });
    }

    /// Whether a channel-addressed message is for us (our channel or its group).
    fn addressed_to_us(&self, channel_id: u32) -> bool {
        self.channel
            .as_ref()
            .is_some_and(|c| c.id == channel_id || (c.group_id != 0 && c.group_id == channel_id))
    }

    fn on_channel_message(
        &mut self,
        msg: Message<'_>,
        now_ms: u64,
    ) -> Result<(), MinerSessionError> {
        if let Message::SetGroupChannel(_) = msg {
            // Group membership only matters for addressing, which `group_id` covers.
            return Ok(());
        }
        let Some(channel_id) = channel_of(&msg) else {
            return Err(MinerSessionError::Protocol(format!(
                "unexpected {} on an open channel",
                msg.name()
            )));
        };
        if !self.addressed_to_us(channel_id) {
            // Not ours (another channel of a shared group): nothing to do.
            return Ok(());
        }
        match msg {
            Message::NewMiningJob(m) => {
                if self.config.channel != ChannelKind::Standard {
                    return Err(MinerSessionError::Protocol(
                        "NewMiningJob on an extended channel".into(),
                    ));
                }
                let job = Job {
                    job_id: m.job_id,
                    version: m.version,
                    version_rolling_allowed: self.server_flags & REQUIRES_FIXED_VERSION == 0
                        && self.config.version_rolling,
                    kind: JobKind::Standard {
                        merkle_root: m.merkle_root,
                    },
                };
                self.on_job(job, m.min_ntime, now_ms)
            }
            Message::NewExtendedMiningJob(m) => {
                let Some(ch) = &self.channel else {
                    return Ok(());
                };
                if self.config.channel != ChannelKind::Extended {
                    // A standard channel asked for standard jobs; an extended job cannot be
                    // hashed without an extranonce of our own.
                    return Err(MinerSessionError::Protocol(
                        "NewExtendedMiningJob on a standard channel".into(),
                    ));
                }
                let job = Job {
                    job_id: m.job_id,
                    version: m.version,
                    version_rolling_allowed: m.version_rolling_allowed,
                    kind: JobKind::Extended {
                        coinbase_prefix: m.coinbase_tx_prefix.to_vec(),
                        coinbase_suffix: m.coinbase_tx_suffix.to_vec(),
                        merkle_path: m.merkle_path.to_vec(),
                        extranonce_prefix: ch.extranonce_prefix.clone(),
                        extranonce_size: ch.extranonce_size,
                    },
                };
                self.on_job(job, m.min_ntime, now_ms)
            }
            Message::SetNewPrevHash(m) => {
                let found = self.future.iter().rposition(|j| j.job_id == m.job_id);
                let Some(job) = found.and_then(|i| self.future.remove(i)) else {
                    return Err(MinerSessionError::Protocol(format!(
                        "SetNewPrevHash for job {} that was not sent as a future job",
                        m.job_id
                    )));
                };
                self.prev_hashes_received += 1;
                self.last_prev_hash_ms = Some(now_ms);
                // Only the referenced job stays valid.
                self.future.clear();
                self.active.clear();
                self.active.push(job.job_id);
                self.prev = Some((m.prev_hash, m.min_ntime, m.nbits));
                self.events.push(MinerEvent::NewPrevHash {
                    job_id: m.job_id,
                    prev_hash: m.prev_hash,
                });
                let ntime = self.config.ntime.job_ntime(m.min_ntime, now_ms);
                self.current = Some((job, ntime));
                self.job_seq += 1;
                self.publish();
                Ok(())
            }
            Message::SetTarget(m) => {
                if let Some(ch) = &mut self.channel {
                    ch.target = m.maximum_target;
                }
                self.events.push(MinerEvent::TargetChanged {
                    target: m.maximum_target,
                });
                self.publish();
                Ok(())
            }
            Message::SetExtranoncePrefix(m) => {
                if let Some(ch) = &mut self.channel {
                    if m.extranonce_prefix.len() + ch.extranonce_size > 32 {
                        return Err(MinerSessionError::Protocol(
                            "extranonce prefix too long".into(),
                        ));
                    }
                    ch.extranonce_prefix = m.extranonce_prefix.to_vec();
                }
                self.events.push(MinerEvent::ExtranoncePrefixChanged);
                Ok(())
            }
            Message::SubmitSharesSuccess(m) => {
                self.counts.accepted += u64::from(m.new_submits_accepted_count);
                self.events.push(MinerEvent::SharesAccepted {
                    count: m.new_submits_accepted_count,
                    last_sequence_number: m.last_sequence_number,
                    shares_sum: m.new_shares_sum,
                });
                Ok(())
            }
            Message::SubmitSharesError(m) => {
                let code = m.error_code.to_string();
                *self.counts.rejected.entry(code.clone()).or_default() += 1;
                self.events.push(MinerEvent::ShareRejected {
                    sequence_number: m.sequence_number,
                    code,
                });
                Ok(())
            }
            Message::CloseChannel(m) => {
                self.state = State::Closed;
                self.work = None;
                self.current = None;
                self.generation += 1;
                self.events.push(MinerEvent::ChannelClosed {
                    reason: m.reason_code.to_string(),
                });
                Ok(())
            }
            // Answers to messages we never send, and group membership: harmless, ignored.
            Message::UpdateChannelError(_) | Message::ChannelEndpointChanged(_) => Ok(()),
            other => Err(MinerSessionError::Protocol(format!(
                "unexpected {} on an open channel",
                other.name()
            ))),
        }
    }

    fn on_job(
        &mut self,
        job: Job,
        min_ntime: Option<u32>,
        now_ms: u64,
    ) -> Result<(), MinerSessionError> {
        self.jobs_received += 1;
        let job_id = job.job_id;
        match min_ntime {
            None => {
                self.future.retain(|j| j.job_id != job_id);
                if self.future.len() >= MAX_FUTURE_JOBS {
                    self.future.pop_front();
                }
                self.future.push_back(job);
                self.events.push(MinerEvent::NewJob {
                    job_id,
                    future: true,
                });
            }
            Some(ntime) => {
                if self.prev.is_none() {
                    return Err(MinerSessionError::Protocol(format!(
                        "active job {job_id} before any SetNewPrevHash"
                    )));
                }
                self.events.push(MinerEvent::NewJob {
                    job_id,
                    future: false,
                });
                if !self.active.contains(&job_id) {
                    self.active.push(job_id);
                }
                let ntime = self.config.ntime.job_ntime(ntime, now_ms);
                self.current = Some((job, ntime));
                self.job_seq += 1;
                self.publish();
            }
        }
        Ok(())
    }

    /// Rebuilds the work snapshot from the current job, prev hash and target.
    fn publish(&mut self) {
        let (Some(ch), Some((job, ntime)), Some((prev_hash, _, nbits))) =
            (&self.channel, &self.current, &self.prev)
        else {
            return;
        };
        self.generation += 1;
        self.work = Some(Arc::new(MiningWork {
            generation: self.generation,
            job_seq: self.job_seq,
            channel_id: ch.id,
            job_id: job.job_id,
            version: job.version,
            version_rolling_allowed: job.version_rolling_allowed,
            prev_hash: *prev_hash,
            nbits: *nbits,
            ntime: *ntime,
            target: ch.target,
            job: job.kind.clone(),
        }));
    }

    /// Sends a found share as SubmitSharesStandard or SubmitSharesExtended with the next
    /// sequence number (appended to [`output`](Self::output)); returns that sequence number.
    /// Shares of jobs made invalid by a new prev hash, or that miss a target raised since,
    /// are dropped here instead of earning a rejection.
    pub fn submit(&mut self, share: &Share) -> Result<u32, ShareDropped> {
        let result = self.check_share(share);
        if result.is_err() {
            self.counts.dropped += 1;
        }
        result?;
        let seq = self.next_sequence;
        let encoded = match self.config.channel {
            ChannelKind::Standard => self.out.push(&SubmitSharesStandard {
                channel_id: share.channel_id,
                sequence_number: seq,
                job_id: share.job_id,
                nonce: share.nonce,
                ntime: share.ntime,
                version: share.version,
            }),
            ChannelKind::Extended => {
                let extranonce =
                    B0_32::new(&share.extranonce).map_err(|_| ShareDropped::BadExtranonce)?;
                self.out.push(&SubmitSharesExtended {
                    channel_id: share.channel_id,
                    sequence_number: seq,
                    job_id: share.job_id,
                    nonce: share.nonce,
                    ntime: share.ntime,
                    version: share.version,
                    extranonce,
                })
            }
        };
        // Both messages are fixed-size but for a B0_32 already checked: they always encode.
        encoded.map_err(|_| ShareDropped::BadExtranonce)?;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.counts.submitted += 1;
        Ok(seq)
    }

    fn check_share(&self, share: &Share) -> Result<(), ShareDropped> {
        let ch = match (&self.channel, self.state) {
            (Some(ch), State::Open) => ch,
            _ => return Err(ShareDropped::NoChannel),
        };
        if share.channel_id != ch.id || !self.active.contains(&share.job_id) {
            return Err(ShareDropped::Stale);
        }
        let expected = match self.config.channel {
            ChannelKind::Standard => 0,
            ChannelKind::Extended => ch.extranonce_size,
        };
        if share.extranonce.len() != expected {
            return Err(ShareDropped::BadExtranonce);
        }
        if !Target::from_le_bytes(ch.target).is_met_by(BlockHash::from_byte_array(share.hash)) {
            return Err(ShareDropped::AboveTarget);
        }
        Ok(())
    }

    /// Queues CloseChannel for our channel (a polite goodbye before disconnecting).
    pub fn close(&mut self, reason: &str) {
        if let (Some(ch), State::Open) = (&self.channel, self.state) {
            let msg = CloseChannel {
                channel_id: ch.id,
                reason_code: Str0_255::new(reason).unwrap_or_default(),
            };
            let _ = self.out.push(&msg);
            self.state = State::Closed;
        }
    }
}

/// The channel_id of a channel-addressed message.
fn channel_of(msg: &Message<'_>) -> Option<u32> {
    Some(match msg {
        Message::NewMiningJob(m) => m.channel_id,
        Message::NewExtendedMiningJob(m) => m.channel_id,
        Message::SetNewPrevHash(m) => m.channel_id,
        Message::SetTarget(m) => m.channel_id,
        Message::SetExtranoncePrefix(m) => m.channel_id,
        Message::SubmitSharesSuccess(m) => m.channel_id,
        Message::SubmitSharesError(m) => m.channel_id,
        Message::CloseChannel(m) => m.channel_id,
        Message::UpdateChannelError(m) => m.channel_id,
        Message::ChannelEndpointChanged(m) => m.channel_id,
        _ => return None,
    })
}

fn str255<'a>(s: &'a str, what: &str) -> Result<Str0_255<'a>, MinerSessionError> {
    Str0_255::new(s).map_err(|_| MinerSessionError::Config(format!("{what} exceeds 255 bytes")))
}

/// The miner's session as carried by a [`Connection`](crate::connection::Connection): set up
/// means the channel is open.
impl Protocol for MinerSession {
    type Event = MinerEvent;
    type Error = MinerSessionError;

    fn handle_message(&mut self, message: &[u8], now_ms: u64) -> Result<(), MinerSessionError> {
        self.handle_frame(&Frame::parse_exact(message)?, now_ms)
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    fn take_events(&mut self, into: &mut VecDeque<MinerEvent>) {
        into.extend(self.events.drain(..));
    }

    fn is_set_up(&self) -> bool {
        self.is_open()
    }
}

/// Splits a buffer of concatenated encoded frames (as in [`MinerSession::output`]) into
/// whole frames, so each can be encrypted as one Noise message.
pub fn split_frames(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(
        move || match Frame::parse(rest, crate::wire::MAX_PAYLOAD_LEN) {
            Ok(Some((_, used))) => {
                let (f, tail) = rest.split_at(used);
                rest = tail;
                Some(f)
            }
            _ => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::NtimePolicy;

    #[test]
    fn ntime_is_the_jobs_or_the_clock_plus_the_offset() {
        let now_ms = 1_800_000_000_999;
        assert_eq!(
            NtimePolicy::default().job_ntime(1_700_000_000, now_ms),
            1_700_000_000
        );
        let device = NtimePolicy {
            clock_offset_secs: Some(60),
            roll: false,
        };
        // The clock's whole seconds plus the offset, below min_ntime or not.
        assert_eq!(device.job_ntime(1_900_000_000, now_ms), 1_800_000_060);
        let slow = NtimePolicy {
            clock_offset_secs: Some(-30),
            roll: true,
        };
        assert_eq!(slow.job_ntime(0, now_ms), 1_799_999_970);
        assert_eq!(slow.job_ntime(0, 10_000), 0, "never below the epoch");
    }
}
