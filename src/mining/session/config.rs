//! The pool's mining policy shared by every session ([`MiningConfig`]), and its defaults: the
//! one place the default numbers live (src/config.rs starts from [`MiningConfig::default`]).

use crate::block::coinbase::CoinbaseConfig;

/// The pool tag put in every coinbase unless configured otherwise.
pub const DEFAULT_POOL_TAG: &[u8] = b"/blvm-stratum-v2/";

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
                pool_tag: DEFAULT_POOL_TAG.to_vec(),
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
