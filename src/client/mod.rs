//! A CPU Stratum V2 miner built on our own codec and Noise initiator: a test client for the
//! pool and the base of a load generator.
//!
//! - [`miner`]: the sans-IO miner state machine ([`MinerSession`]) and the work it exposes.
//! - [`hasher`]: the per-thread hashing loop ([`Hasher`]) and the [`WorkSlot`] feeding threads.
//! - [`run`]: the tokio driver, [`run_miner`].
//! - [`reconnect`]: connecting again when the pool asks or the connection drops
//!   ([`run_miner_reconnecting`]).

pub mod hasher;
pub mod miner;
#[cfg(feature = "runtime")]
pub mod reconnect;
#[cfg(feature = "runtime")]
pub mod run;
#[cfg(feature = "sv1")]
pub mod sv1;

pub use hasher::{Hasher, NONCE_BATCH, WorkSlot};
pub use miner::{
    ChannelKind, JobKind, MinerConfig, MinerEvent, MinerSession, MinerSessionError, MiningWork,
    NtimePolicy, Share, ShareCounts, ShareDropped, split_frames,
};
#[cfg(feature = "runtime")]
pub use reconnect::{Backoff, ReconnectingReport, run_miner_reconnecting};
#[cfg(feature = "runtime")]
pub use run::{MinerError, MinerOptions, MinerReport, StopReason, run_miner};
