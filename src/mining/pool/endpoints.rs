//! Miners the pool drives itself, by endpoint, with no connection object of their own: the
//! product API's per-endpoint calls (`register_miner(endpoint)`, `open_channel`,
//! `handle_share`, in src/api.rs) and the server's `handle_message` (plaintext frames from a
//! transport that is already secured). Each such miner is a real [`Session`], fed encoded
//! frames exactly as one from the wire, so a share validated here is validated exactly like a
//! share from a socket.
//!
//! The state stays bounded: at most [`EndpointMiners::capacity`] miners (the least recently
//! used is evicted to make room), each with at most `max_jobs` jobs, and idle miners are
//! forgotten by [`StratumV2Pool::forget_idle_endpoints`]. Each miner is registered in the
//! pool statistics under its own id (the top bit set, so it never meets a connection id of
//! the shell), and catches up with the pool's current work before each of its messages.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bitcoin::Target;
use bitcoin::hashes::Hash;

use super::StratumV2Pool;
use crate::block::target::target_of_difficulty;
use crate::mining::{FoundBlock, MiningConfig, Session, SessionError, SessionEvent, Work};
use crate::wire::common::SetupConnection;
use crate::wire::mining::{
    OpenStandardMiningChannel, REQUIRES_STANDARD_JOBS, SubmitSharesStandard,
};
use crate::wire::{Frame, MAX_PAYLOAD_LEN, Str0_255, Sv2Message, WireError, encode_frame};

/// Miners driven by endpoint unless configured otherwise.
pub const DEFAULT_MAX_ENDPOINT_MINERS: usize = 1024;

/// Statistics ids of endpoint miners start here (the top bit set): the shell numbers its
/// connections from 1, so the two never meet.
pub const ENDPOINT_ID_BASE: u64 = 1 << 63;

/// Why a call on an endpoint miner failed (the miner's shares are not at fault: refused
/// shares are answers, not errors).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EndpointError {
    /// No miner is registered at the endpoint.
    #[error("no miner registered at {0}")]
    UnknownMiner(String),
    /// The miner has no channel with that id.
    #[error("no channel {0} on this miner")]
    UnknownChannel(u32),
    /// The miner already has a channel with that id.
    #[error("channel {0} is already open")]
    ChannelExists(u32),
    /// A minimum difficulty of 0 has no target.
    #[error("the minimum difficulty must be at least 1")]
    ZeroDifficulty,
    /// The session refused the channel, with the spec's error code.
    #[error("channel refused: {0}")]
    ChannelRefused(&'static str),
    /// The share's merkle root is not the one of its channel and job (on a standard channel
    /// the pool decides the coinbase, hence the root).
    #[error("merkle root is not the job's for this channel")]
    MerkleRootMismatch,
    /// Bytes that are not whole SV2 frames.
    #[error("malformed frames: {0}")]
    Wire(#[from] WireError),
    /// The bytes end inside a frame.
    #[error("truncated frame")]
    TruncatedFrame,
    /// The session ended the conversation (the miner is forgotten).
    #[error("session: {0}")]
    Session(#[from] SessionError),
}

/// A channel as the endpoint's caller named it, and the session's own id for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointChannel {
    /// The caller's id.
    pub channel_id: u32,
    /// The session's id.
    pub session_channel_id: u32,
    /// The minimum difficulty it was opened with.
    pub min_difficulty: u32,
}

/// A job the miner has: the pool-wide work id, the session's job id, the work.
#[derive(Debug, Clone)]
pub struct EndpointJob {
    /// Pool-wide work id (the job id callers of the product API see).
    pub work_id: u64,
    /// The session's job id.
    pub session_job_id: u32,
    /// The work.
    pub work: Arc<Work>,
}

/// One miner driven by endpoint.
#[derive(Debug)]
pub struct EndpointMiner {
    /// Its id in the pool statistics.
    pub id: u64,
    /// Its protocol state.
    pub session: Session,
    /// Channels opened through the product API's `open_channel`.
    pub channels: Vec<EndpointChannel>,
    /// Its jobs, oldest first (at most `max_jobs`).
    pub jobs: VecDeque<EndpointJob>,
    next_sequence: u32,
    /// Recency stamp for eviction.
    used: u64,
    /// Last call (ms).
    pub last_activity_ms: u64,
}

/// Where a block found by an endpoint miner goes when a server runs the pool: the server saves
/// it to disk and submits it at once, exactly like a block found on a connection. Without a
/// sink (a pool used on its own) the block waits in [`FoundBlocks`](super::FoundBlocks) for
/// whoever drives the submissions.
pub trait FoundBlockSink: Send + Sync + std::fmt::Debug {
    /// A block was found (called under the pool's lock: must not block).
    fn block_found(&self, found: &FoundBlock);
}

/// Every endpoint miner, bounded.
#[derive(Debug)]
pub struct EndpointMiners {
    config: Arc<MiningConfig>,
    capacity: usize,
    miners: HashMap<String, EndpointMiner>,
    stamp: u64,
    next_id: u64,
    /// Where found blocks go (the server's), if anywhere but the pool's own queue.
    block_sink: Option<Arc<dyn FoundBlockSink>>,
}

impl Default for EndpointMiners {
    fn default() -> Self {
        EndpointMiners {
            config: Arc::new(MiningConfig::default()),
            capacity: DEFAULT_MAX_ENDPOINT_MINERS,
            miners: HashMap::new(),
            stamp: 0,
            next_id: ENDPOINT_ID_BASE,
            block_sink: None,
        }
    }
}

impl EndpointMiners {
    /// The most miners kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Miners kept now.
    pub fn len(&self) -> usize {
        self.miners.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.miners.is_empty()
    }

    /// The mining policy of their sessions.
    pub fn config(&self) -> &Arc<MiningConfig> {
        &self.config
    }

    /// The miner at `endpoint`, without touching its recency.
    pub fn get(&self, endpoint: &str) -> Option<&EndpointMiner> {
        self.miners.get(endpoint)
    }

    /// Every miner, by endpoint.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &EndpointMiner)> {
        self.miners.iter()
    }

    fn touch(&mut self, endpoint: &str, now_ms: u64) -> Option<&mut EndpointMiner> {
        self.stamp += 1;
        let stamp = self.stamp;
        let m = self.miners.get_mut(endpoint)?;
        m.used = stamp;
        m.last_activity_ms = now_ms;
        Some(m)
    }

    /// The least recently used miner's endpoint.
    fn least_recent(&self) -> Option<String> {
        self.miners
            .iter()
            .min_by_key(|(_, m)| m.used)
            .map(|(e, _)| e.clone())
    }
}

/// Brings a miner's session to the pool's current work (its job for it goes into the
/// session's output, like any new job) and keeps its job list bounded.
fn catch_up(m: &mut EndpointMiner, work: Option<&Arc<Work>>, max_jobs: usize, now_ms: u64) {
    let Some(work) = work else {
        return;
    };
    if m.jobs.back().is_some_and(|j| j.work_id == work.id) {
        return;
    }
    m.session.on_work(work, now_ms);
    if let Some((session_job_id, _)) = m.session.latest_job() {
        m.jobs.push_back(EndpointJob {
            work_id: work.id,
            session_job_id,
            work: work.clone(),
        });
    }
    while m.jobs.len() > max_jobs.max(1) {
        m.jobs.pop_front();
    }
}

/// Feeds one message to a session as its encoded frame, exactly as from the wire.
fn feed<'m, M: Sv2Message<'m>>(
    session: &mut Session,
    msg: &M,
    now_ms: u64,
) -> Result<(), EndpointError> {
    let mut bytes = Vec::with_capacity(64);
    encode_frame(msg, &mut bytes)?;
    let frame = Frame::parse_exact(&bytes)?;
    session.handle_frame(&frame, now_ms)?;
    Ok(())
}

impl StratumV2Pool {
    /// The miners driven by endpoint.
    pub fn endpoint_miners(&self) -> &EndpointMiners {
        &self.endpoints
    }

    /// Sets the mining policy of endpoint sessions opened from now on and the most endpoint
    /// miners kept (at least 1).
    pub fn configure_endpoints(&mut self, config: Arc<MiningConfig>, capacity: usize) {
        self.endpoints.config = config;
        self.endpoints.capacity = capacity.max(1);
    }

    /// Hands blocks found by endpoint miners to `sink` instead of queueing them here.
    pub fn set_found_block_sink(&mut self, sink: Arc<dyn FoundBlockSink>) {
        self.endpoints.block_sink = Some(sink);
    }

    /// The miner at `endpoint`, registered now if new (evicting the least recently used one
    /// when full), brought to the current work; returns its statistics id.
    pub fn connect_endpoint(&mut self, endpoint: &str, now_ms: u64) -> u64 {
        let work = self.work.current().cloned();
        let max_jobs = self.endpoints.config.max_jobs;
        if let Some(m) = self.endpoints.touch(endpoint, now_ms) {
            catch_up(m, work.as_ref(), max_jobs, now_ms);
            return m.id;
        }
        while self.endpoints.miners.len() >= self.endpoints.capacity {
            let Some(oldest) = self.endpoints.least_recent() else {
                break;
            };
            self.drop_endpoint(&oldest, now_ms);
        }
        let id = self.endpoints.next_id;
        self.endpoints.next_id += 1;
        self.endpoints.stamp += 1;
        let mut m = EndpointMiner {
            id,
            session: Session::new(self.endpoints.config.clone(), self.allocator.clone()),
            channels: Vec::new(),
            jobs: VecDeque::new(),
            next_sequence: 0,
            used: self.endpoints.stamp,
            last_activity_ms: now_ms,
        };
        catch_up(&mut m, work.as_ref(), max_jobs, now_ms);
        self.endpoints.miners.insert(endpoint.to_owned(), m);
        self.stats.register_miner(id, endpoint.to_owned(), now_ms);
        id
    }

    /// Forgets an endpoint miner; its statistics stay, disconnected, until
    /// [`forget_disconnected_miners`](Self::forget_disconnected_miners). Returns whether there
    /// was one.
    pub fn drop_endpoint(&mut self, endpoint: &str, now_ms: u64) -> bool {
        match self.endpoints.miners.remove(endpoint) {
            Some(m) => {
                self.stats.disconnect(m.id, now_ms);
                true
            }
            None => false,
        }
    }

    /// Handles plaintext SV2 frames from `endpoint` (registered if new) and returns the
    /// miner's statistics id, the reply frames (any new job first) and the session's events,
    /// which the caller applies with [`record`](Self::record) (or through the shell, which
    /// also submits found blocks). A session error forgets the miner.
    pub fn drive_endpoint(
        &mut self,
        endpoint: &str,
        mut data: &[u8],
        now_ms: u64,
    ) -> Result<(u64, Vec<u8>, Vec<SessionEvent>), EndpointError> {
        let id = self.connect_endpoint(endpoint, now_ms);
        let Some(m) = self.endpoints.miners.get_mut(endpoint) else {
            return Err(EndpointError::UnknownMiner(endpoint.to_owned()));
        };
        let mut failure = None;
        while !data.is_empty() {
            let (frame, used) = match Frame::parse(data, MAX_PAYLOAD_LEN) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    failure = Some(EndpointError::TruncatedFrame);
                    break;
                }
                Err(e) => {
                    failure = Some(e.into());
                    break;
                }
            };
            if let Err(e) = m.session.handle_frame(&frame, now_ms) {
                failure = Some(e.into());
                break;
            }
            data = &data[used..];
        }
        let events: Vec<SessionEvent> = m.session.drain_events().collect();
        let reply = std::mem::take(m.session.output()).into_bytes();
        if let Some(e) = failure {
            if matches!(e, EndpointError::Session(_)) {
                self.drop_endpoint(endpoint, now_ms);
            }
            return Err(e);
        }
        Ok((id, reply, events))
    }

    /// Opens channel `channel_id` of the miner at `endpoint` at `min_difficulty` (the share
    /// target never easier than that difficulty's); returns the channel target. The session
    /// gets SetupConnection (standard jobs) and OpenStandardMiningChannel frames.
    pub fn open_endpoint_channel(
        &mut self,
        endpoint: &str,
        channel_id: u32,
        min_difficulty: u32,
        now_ms: u64,
    ) -> Result<Target, EndpointError> {
        if min_difficulty == 0 {
            return Err(EndpointError::ZeroDifficulty);
        }
        let work = self.work.current().cloned();
        let max_jobs = self.endpoints.config.max_jobs;
        let Some(m) = self.endpoints.touch(endpoint, now_ms) else {
            return Err(EndpointError::UnknownMiner(endpoint.to_owned()));
        };
        if m.channels.iter().any(|c| c.channel_id == channel_id) {
            return Err(EndpointError::ChannelExists(channel_id));
        }
        catch_up(m, work.as_ref(), max_jobs, now_ms);
        if !m.session.is_ready() {
            let setup = SetupConnection {
                protocol: 0,
                min_version: 2,
                max_version: 2,
                flags: REQUIRES_STANDARD_JOBS,
                endpoint_host: Str0_255::default(),
                endpoint_port: 0,
                vendor: Str0_255::new("blvm-stratum-v2 api").unwrap_or_default(),
                hardware_version: Str0_255::default(),
                firmware: Str0_255::default(),
                device_id: Str0_255::default(),
            };
            feed(&mut m.session, &setup, now_ms)?;
        }
        let open = OpenStandardMiningChannel {
            request_id: channel_id,
            user_identity: Str0_255::new(endpoint).unwrap_or_default(),
            nominal_hash_rate: 0.0,
            max_target: target_of_difficulty(f64::from(min_difficulty)),
        };
        feed(&mut m.session, &open, now_ms)?;
        m.session.output().clear();
        let events: Vec<SessionEvent> = m.session.drain_events().collect();
        let mut result = Err(EndpointError::ChannelRefused("no answer"));
        for e in &events {
            match e {
                SessionEvent::ChannelOpened {
                    channel_id: session_channel_id,
                    ..
                } => {
                    let target = m
                        .session
                        .channels()
                        .iter()
                        .find(|c| c.channel_id == *session_channel_id)
                        .map(|c| c.target);
                    if let Some(target) = target {
                        m.channels.push(EndpointChannel {
                            channel_id,
                            session_channel_id: *session_channel_id,
                            min_difficulty,
                        });
                        result = Ok(target);
                    }
                }
                SessionEvent::ChannelRefused { code, .. } => {
                    result = Err(EndpointError::ChannelRefused(code));
                }
                _ => {}
            }
        }
        let id = m.id;
        for e in &events {
            self.record(id, e, now_ms);
        }
        result
    }

    /// A share of the miner at `endpoint` on its channel `channel_id` and the pool-wide job
    /// `work_id`, validated by its session as a SubmitSharesStandard frame; returns
    /// `(is_valid_share, is_valid_block)`. The statistics count it; a block is recorded and
    /// queued for submission ([`found_blocks_mut`](Self::found_blocks_mut)).
    #[allow(clippy::too_many_arguments)]
    pub fn endpoint_share(
        &mut self,
        endpoint: &str,
        channel_id: u32,
        work_id: u64,
        (version, ntime, nonce): (u32, u32, u32),
        merkle_root: &[u8; 32],
        now_ms: u64,
    ) -> Result<(bool, bool), EndpointError> {
        let work = self.work.current().cloned();
        let max_jobs = self.endpoints.config.max_jobs;
        let Some(m) = self.endpoints.touch(endpoint, now_ms) else {
            return Err(EndpointError::UnknownMiner(endpoint.to_owned()));
        };
        catch_up(m, work.as_ref(), max_jobs, now_ms);
        m.session.output().clear();
        let Some(channel) = m
            .channels
            .iter()
            .find(|c| c.channel_id == channel_id)
            .copied()
        else {
            return Err(EndpointError::UnknownChannel(channel_id));
        };
        // A job the miner does not have goes to the session as job 0, which no session hands
        // out: it is refused (and counted) as invalid-job-id like one from the wire.
        let mut session_job_id = 0;
        if let Some(job) = m.jobs.iter().find(|j| j.work_id == work_id) {
            let prefix = m
                .session
                .channels()
                .into_iter()
                .find(|c| c.channel_id == channel.session_channel_id)
                .map(|c| c.extranonce_prefix)
                .unwrap_or_default();
            if job.work.merkle_root(&prefix, &[]).to_byte_array() != *merkle_root {
                return Err(EndpointError::MerkleRootMismatch);
            }
            session_job_id = job.session_job_id;
        }
        let share = SubmitSharesStandard {
            channel_id: channel.session_channel_id,
            sequence_number: m.next_sequence,
            job_id: session_job_id,
            nonce,
            ntime,
            version,
        };
        m.next_sequence = m.next_sequence.wrapping_add(1);
        feed(&mut m.session, &share, now_ms)?;
        m.session.output().clear();
        let events: Vec<SessionEvent> = m.session.drain_events().collect();
        let id = m.id;
        let (mut valid, mut block) = (false, false);
        for e in &events {
            match e {
                SessionEvent::ShareAccepted { .. } => valid = true,
                SessionEvent::BlockFound(found) => {
                    block = true;
                    match &self.endpoints.block_sink {
                        Some(sink) => sink.block_found(found),
                        None => self
                            .found
                            .queue(found.block.clone(), Some(found.height), now_ms),
                    }
                }
                _ => {}
            }
            self.record(id, e, now_ms);
        }
        Ok((valid, block))
    }

    /// Forgets jobs beyond `max_jobs` of every endpoint miner.
    pub fn cleanup_endpoint_jobs(&mut self) {
        let max = self.endpoints.config.max_jobs.max(1);
        for m in self.endpoints.miners.values_mut() {
            m.session.cleanup_old_jobs();
            while m.jobs.len() > max {
                m.jobs.pop_front();
            }
        }
    }

    /// Forgets endpoint miners with no call for `timeout_ms` (their statistics are
    /// disconnected, then forgotten with the other disconnected miners idle as long); returns
    /// how many endpoint miners were forgotten.
    pub fn forget_idle_endpoints(&mut self, timeout_ms: u64, now_ms: u64) -> usize {
        let idle: Vec<String> = self
            .endpoints
            .miners
            .iter()
            .filter(|(_, m)| now_ms.saturating_sub(m.last_activity_ms) >= timeout_ms)
            .map(|(e, _)| e.clone())
            .collect();
        for e in &idle {
            if let Some(m) = self.endpoints.miners.remove(e) {
                // Disconnected as of its last call, so the same timeout forgets its record.
                self.stats.disconnect(m.id, m.last_activity_ms);
            }
        }
        self.forget_disconnected_miners(timeout_ms, now_ms);
        idle.len()
    }
}
