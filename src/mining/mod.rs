//! The mining core, sans-IO: work from templates, channels, jobs, share validation, block
//! assembly, vardiff and statistics. Time comes in as arguments; nothing here does I/O.

pub mod payee_work;
pub mod pool;
pub mod session;
pub mod share;
pub mod vardiff;
pub mod window_work;
pub mod work;

/// The block modules' old homes under mining, kept so that existing callers still find them.
pub use crate::block::{coinbase, merkle, target};

pub use crate::block::coinbase::{CoinbaseConfig, CoinbaseError, CoinbaseParts};
pub use pool::{
    AcceptedShares, BlockRecord, BlockStore, MinerConnection, MinerStats, PoolStats, StratumV2Pool,
};
pub use session::{
    ChannelBudget, ChannelInfo, ChannelStats, ExtranonceAllocator, FoundBlock,
    HARDWARE_MIN_DIFFICULTY, IDLE_CHANNEL_REASON, LedgerStatus, MiningConfig, Session,
    SessionError, SessionEvent,
};
pub use share::ShareRejection;
pub use work::Work;

/// Errors of the mining core that are not a miner's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MiningError {
    /// A configuration value that cannot work (with the reason).
    #[error("configuration: {0}")]
    Config(String),
    /// The coinbase cannot be built with the configured tag and extranonce space.
    #[error("configuration: {0}")]
    Coinbase(#[from] CoinbaseError),
}
