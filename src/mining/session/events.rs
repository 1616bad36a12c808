//! What a session tells the rest of the pool ([`SessionEvent`], [`FoundBlock`]) and why it
//! must end ([`SessionError`]).

use std::sync::Arc;

use bitcoin::{BlockHash, Target};

use crate::mining::share::ShareRejection;
use crate::wire::WireError;

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
        /// The hashrate the client declared for it (h/s; 0: none).
        nominal_hash_rate: f32,
        /// Its first share target.
        target: Target,
    },
    /// The client declared another hashrate for a channel (UpdateChannel accepted).
    ChannelUpdated {
        /// The channel.
        channel_id: u32,
        /// The hashrate it declared (h/s; 0: none).
        nominal_hash_rate: f32,
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
        /// Worker name from the 0x0002 TLV, if the client sent one (shared).
        worker: Option<Arc<str>>,
        /// The pool-wide id of the work it was on.
        work_id: u64,
        /// Its header hash.
        hash: BlockHash,
        /// The channel's user_identity (shared: no allocation per share).
        user_identity: Arc<str>,
        /// The job id it was on (as sent to the miner).
        job_id: u32,
        /// The job's target: the share's credit.
        target: Target,
        /// Its number in this session (1, 2, ...): what its acknowledgement's hold names
        /// (`Outbox::hold_until`), released once the ledger has committed it.
        share_number: u64,
    },
    /// A share was refused.
    ShareRejected {
        /// The channel (as the client named it).
        channel_id: u32,
        /// Why.
        reason: ShareRejection,
        /// The channel's user_identity, if the channel exists.
        user_identity: Option<Arc<str>>,
        /// Worker name from the 0x0002 TLV, if the client sent one (shared).
        worker: Option<Arc<str>>,
    },
    /// A share met the network target: the block to submit, before anything else.
    BlockFound(Box<FoundBlock>),
    /// Vardiff moved a channel's target.
    TargetChanged {
        /// The channel.
        channel_id: u32,
        /// Its new target.
        target: Target,
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
    /// What its coinbase paid the PPLNS window directly, when its work paid it
    /// (`coinbase_payouts = true`; shared with the work).
    pub coinbase_payouts: Option<std::sync::Arc<crate::ledger::CoinbasePayouts>>,
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
    /// No channel was open for this many seconds after SetupConnection (or after the last
    /// channel closed).
    #[error("no channel opened within {0} s")]
    NoChannel(u64),
    /// A channel kept submitting shares beyond its rate limit after being refused.
    #[error("channel {channel_id} kept flooding shares past its rate limit")]
    ShareFlood {
        /// The channel.
        channel_id: u32,
    },
}
