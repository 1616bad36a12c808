//! One miner connection's protocol state, sans-IO: decoded frames and new work in, encoded
//! frames (in [`Session::output`]) and [`SessionEvent`]s out, the time always passed in.
//!
//! This file holds the [`Session`] type, its state, its one way to emit a frame
//! ([`Session::send`] into [`Session::output`]), frame dispatch and the periodic hook
//! ([`Session::on_tick`]). Each concern has its own file:
//! - `setup`: SetupConnection and extension negotiation;
//! - `channels`: opening, updating and closing channels, target clamping;
//! - `jobs`: jobs, prev hashes and the group channel's fan-out;
//! - `shares`: share validation and duplicate detection (a block is an event emitted before
//!   the share is acknowledged);
//! - `acks`: acknowledgement batching and vardiff retargeting;
//! - `durability`: durable before acknowledged (acknowledgements wait for the share ledger);
//! - `drain`: asking the miner to reconnect when the pool stops (Reconnect);
//! - `extranonce`: pool-wide unique extranonce prefixes;
//! - `config`: [`MiningConfig`] and its defaults;
//! - `liveness`: a channel within a time of setup, idle channels closed;
//! - `flood`: each channel's share rate limit;
//! - `budget`: the pool-wide channel cap ([`ChannelBudget`]);
//! - `events`: [`SessionEvent`], [`FoundBlock`], [`SessionError`].

mod acks;
mod budget;
mod channels;
mod config;
mod drain;
mod durability;
mod events;
mod extranonce;
mod flood;
mod jobs;
mod liveness;
mod setup;
mod shares;

use std::collections::VecDeque;
use std::sync::Arc;

use bitcoin::{BlockHash, Target};

pub use budget::ChannelBudget;
pub use channels::{ChannelInfo, ChannelStats};
pub use config::{DEFAULT_POOL_TAG, HARDWARE_MIN_DIFFICULTY, MiningConfig};
pub use durability::LedgerStatus;
pub use events::{FoundBlock, SessionError, SessionEvent};
pub use extranonce::{ExtranonceAllocator, UNIQUE_PREFIX_LEN};
pub use flood::FLOOD_QUIET_MS;
pub use jobs::{MAX_OLDER_RUNS, MAX_OLDER_WORKS, RETIRED_JOBS_GRACE_MS};
pub use liveness::IDLE_CHANNEL_REASON;
pub use setup::PROTOCOL_VERSION;
pub use shares::{SOLVED_TIP_MS, VERSION_ROLLING_MASK};

use channels::Channel;
use jobs::{OlderJobs, Retirement, SessionJob, TipState};

use super::payee_work::PayeeWorks;
use super::work::Work;
use crate::block::target::target_of_difficulty;
use crate::connection::{Outbox, Protocol};
use crate::wire::mining::{SetCustomMiningJobError, SubmitSharesExtended, SubmitSharesStandard};
use crate::wire::{Frame, Message, Str0_255, Sv2Message};

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
    /// Targets of the configured minimum (for the chain the work is on) and maximum
    /// difficulty, computed once (the minimum again when the chain turns out easy).
    easiest: Target,
    hardest: Target,
    state: State,
    flags: u32,
    worker_tlv: bool,
    /// The last worker name a 0x0002 TLV carried: its shares share the string (a miner names
    /// the same worker share after share; no allocation per share).
    last_worker: Option<Arc<str>>,
    channels: Vec<Channel>,
    next_channel_id: u32,
    group_channel_id: u32,
    /// Jobs of the current tip that earn credit, oldest first (at most `max_jobs`).
    jobs: VecDeque<SessionJob>,
    /// Older jobs of the current tip, folded by work: they can only make blocks.
    older: VecDeque<OlderJobs>,
    /// Sequence number of the next job.
    next_seq: u64,
    /// The jobs of the credit window that just ended, while they still earn credit.
    retirement: Option<Retirement>,
    /// When the last job went to every channel (ms), for the periodic refresh.
    last_announce_ms: u64,
    current: Option<Arc<Work>>,
    /// The tip the jobs are on.
    tip: TipState,
    /// Tips left recently, with the latest nTime accepted on each.
    past_tips: VecDeque<(BlockHash, u32)>,
    /// A tip one of our shares just solved, and until when (ms) shares on it are stale: they
    /// can only make blocks that no longer build on the chain's tip. Expires in case the node
    /// refuses the block.
    solved: Option<(BlockHash, u64)>,
    out: Outbox,
    events: Vec<SessionEvent>,
    /// Since when (ms) the set-up connection has had no channel open.
    no_channel_since: Option<u64>,
    /// The connection's allowance of channel openings (`None` until its first request).
    openings: Option<flood::ShareBucket>,
    /// The pool-wide channel cap, if any.
    budget: Option<Arc<ChannelBudget>>,
    /// Each channel's share allowance (see `flood`), computed once.
    share_rate_per_ms: f64,
    share_burst: f64,
    /// Share numbers and acknowledgements waiting for the share ledger.
    durability: durability::Durability,
    /// Works derived for channels paid in their own coinbase, shared by every session of the
    /// pool ([`Session::with_payee_works`]; otherwise the session's own, made with its first
    /// such channel).
    payee_works: Option<Arc<PayeeWorks>>,
    /// An extranonce prefix handed out before its channel opens (Stratum V1's
    /// mining.subscribe), taken by the next extended channel that opens with its size.
    reserved_prefix: Option<Vec<u8>>,
    /// Whether the miner was asked to reconnect (the pool is stopping).
    draining: bool,
}

impl Session {
    /// A new connection, waiting for SetupConnection.
    pub fn new(config: Arc<MiningConfig>, allocator: Arc<ExtranonceAllocator>) -> Self {
        let (share_rate_per_ms, share_burst) =
            flood::share_allowance(config.shares_per_minute, config.share_rate_multiple);
        Session {
            easiest: Target::from_le_bytes(target_of_difficulty(config.min_difficulty)),
            hardest: Target::from_le_bytes(target_of_difficulty(config.max_difficulty)),
            config,
            allocator,
            state: State::AwaitingSetup,
            flags: 0,
            worker_tlv: false,
            last_worker: None,
            channels: Vec::new(),
            next_channel_id: 1,
            group_channel_id: 0,
            jobs: VecDeque::new(),
            older: VecDeque::new(),
            next_seq: 1,
            retirement: None,
            last_announce_ms: 0,
            current: None,
            tip: TipState::default(),
            past_tips: VecDeque::new(),
            solved: None,
            out: Outbox::new(),
            events: Vec::new(),
            no_channel_since: None,
            openings: None,
            budget: None,
            share_rate_per_ms,
            share_burst,
            durability: durability::Durability::default(),
            payee_works: None,
            reserved_prefix: None,
            draining: false,
        }
    }

    /// Shares the works derived for coinbase-paid channels with every session of the pool:
    /// one derivation per template and payee, however many channels it has.
    pub fn with_payee_works(mut self, works: Arc<PayeeWorks>) -> Self {
        self.payee_works = Some(works);
        self
    }

    /// Counts this session's channels against a pool-wide cap shared by every session.
    pub fn with_channel_budget(mut self, budget: Arc<ChannelBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Encoded frames waiting to be sent, with their boundaries; the caller sends and clears
    /// them.
    pub fn output(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// The one way a session emits a frame.
    fn send<'m, M: Sv2Message<'m>>(&mut self, msg: &M) {
        // Messages we build hold values checked by their constructors; a payload that could
        // not fit a frame cannot be built here.
        let _ = self.out.push(msg);
    }

    /// Takes the events produced so far (blocks first in order of production).
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, SessionEvent> {
        self.events.drain(..)
    }

    /// Whether SetupConnection has succeeded.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Handles one frame from the client. An error means the connection must be closed after
    /// its output is flushed.
    pub fn handle_frame(&mut self, frame: &Frame<'_>, now_ms: u64) -> Result<(), SessionError> {
        // Share submissions, the bulk of the traffic, are decoded straight to their type
        // rather than through the `Message` union, and only here.
        if self.state == State::Ready && frame.header.extension() == 0 {
            match frame.header.msg_type {
                <SubmitSharesStandard as Sv2Message>::MSG_TYPE => {
                    let (m, _) = frame.decode::<SubmitSharesStandard>()?;
                    return self.on_submit_standard(&m, now_ms);
                }
                <SubmitSharesExtended as Sv2Message>::MSG_TYPE => {
                    let (m, tlv) = frame.decode::<SubmitSharesExtended>()?;
                    return self.on_submit_extended(&m, tlv, now_ms);
                }
                _ => {}
            }
        }
        // Unknown messages of other extensions are ignored (03 §3.4.1).
        let Some((msg, _)) = frame.known_message()? else {
            return Ok(());
        };
        match (self.state, msg) {
            (State::AwaitingSetup, Message::SetupConnection(m)) => {
                self.on_setup(&m)?;
                self.no_channel_since = Some(now_ms);
                Ok(())
            }
            (State::AwaitingSetup, other) => Err(SessionError::Unexpected(
                other.name(),
                "before SetupConnection",
            )),
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
                self.on_close_channel(m.channel_id, now_ms);
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

    /// When [`Self::on_tick`] next has something to do (unix ms): a batch of
    /// acknowledgements turning one second old, a channel's vardiff window ending, the grace
    /// of an ended credit window's jobs running out, the periodic job refresh, or a liveness
    /// rule (a channel gone idle, no channel open for too long). `None` with no channel open
    /// and no channel-open deadline: an idle connection has nothing due.
    pub fn next_tick_ms(&self) -> Option<u64> {
        let channels = self
            .channels
            .iter()
            .map(|ch| {
                let retarget = ch.vardiff.next_poll_ms();
                ch.batch.due_at().map_or(retarget, |due| retarget.min(due))
            })
            .min();
        [
            channels,
            self.retirement.map(|r| r.until_ms),
            self.refresh_due_ms(),
            self.liveness_due_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Periodic work: acknowledges batches older than a second, lets vardiff lower the
    /// difficulty of channels that went quiet, ends a credit window's grace and sends the
    /// periodic fresh job. Call at [`Self::next_tick_ms`] (calling it
    /// more often does no harm).
    pub fn on_tick(&mut self, now_ms: u64) {
        if self.retirement.is_some_and(|r| now_ms >= r.until_ms) {
            self.end_retirement();
        }
        if self.refresh_due_ms().is_some_and(|due| now_ms >= due) {
            self.refresh_all(now_ms);
        }
        for idx in 0..self.channels.len() {
            if self.channels[idx].batch.is_due(now_ms) {
                self.flush_batch(idx);
            }
            if self.retarget(idx, now_ms) {
                self.send_jobs_after(idx, true, now_ms);
            }
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

    fn handle_timeout(&mut self, now_ms: u64) -> Result<(), SessionError> {
        self.on_tick(now_ms);
        self.check_liveness(now_ms)
    }

    fn begin_drain(&mut self, _now_ms: u64) -> bool {
        self.ask_to_reconnect()
    }
}

/// A session's channels give their pool-wide slots back when it goes, however it ends.
impl Drop for Session {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(self.channels.len());
        }
    }
}
