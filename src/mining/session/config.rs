//! The pool's mining policy shared by every session ([`MiningConfig`]), and its defaults: the
//! one place the default numbers live (src/config.rs starts from [`MiningConfig::default`]).

use crate::block::coinbase::CoinbaseConfig;

/// The pool tag put in every coinbase unless configured otherwise.
pub const DEFAULT_POOL_TAG: &[u8] = b"/blvm-stratum-v2/";

/// The pool's default easiest share difficulty on a real chain: a 20 GH/s USB stick (the
/// smallest device worth pointing at a pool) finds one share of difficulty 16 every 3.4 s, the
/// vardiff aim of 18 a minute; a 500 GH/s small ASIC starts there and is raised within its
/// first window; a share cannot be made without 69 billion hashes, so nobody floods valid ones
/// without the hashrate to back them.
pub const HARDWARE_MIN_DIFFICULTY: f64 = 16.0;

/// Pool policy shared by every session.
#[derive(Debug, Clone)]
pub struct MiningConfig {
    /// Coinbase payout, tag and extranonce space.
    pub coinbase: CoinbaseConfig,
    /// Jobs per connection that earn credit (older jobs of the current tip are kept, folded by
    /// work, and still make blocks; see `jobs`).
    pub max_jobs: usize,
    /// Vardiff aim.
    pub shares_per_minute: f64,
    /// Accepted shares acknowledged per SubmitShares.Success (1 = each share at once).
    pub share_batch_size: u32,
    /// Easiest share difficulty the pool hands out on a chain whose own difficulty is 1 or
    /// more (mainnet, testnet).
    pub min_difficulty: f64,
    /// Easiest share difficulty on a chain easier than difficulty 1 (regtest, the embedded
    /// chain, signet), where CPU miners mine; `None`: `min_difficulty` everywhere (the
    /// default). The pool's configuration, unless told a `min_difficulty`, uses
    /// [`HARDWARE_MIN_DIFFICULTY`] with 1e-6 here.
    pub easy_chain_min_difficulty: Option<f64>,
    /// Hardest share difficulty the pool hands out.
    pub max_difficulty: f64,
    /// The difficulty a Stratum V1 miner starts at (`crate::sv1`; SV1 miners announce no
    /// hashrate); `None`: the SV1 session's default for the chain.
    pub sv1_start_difficulty: Option<f64>,
    /// Miner extranonce bytes given when the client asks for fewer.
    pub default_extranonce_size: u16,
    /// Seconds a share's nTime may pass the specification's ceiling (the latest
    /// SetNewPrevHash's min_ntime plus the seconds since it was sent, 05 §5.3.11): room for
    /// clock skew and for devices that set nTime ahead of their clock (SRI's mining_device
    /// uses its clock plus 60 s). Default 120.
    pub ntime_allowance_secs: u32,
    /// Channels one connection may open.
    pub max_channels_per_connection: usize,
    /// Accepted shares a channel may have in one credit window (default 448, about 25
    /// minutes of one tip at the vardiff rate; a window ends an eighth short of it, leaving
    /// room for the shares in flight). Every duplicate is caught while its job earns
    /// credit: each channel keeps the fingerprint of every share accepted on those jobs. When a
    /// channel's window is full, the connection's jobs so far earn credit for
    /// `RETIRED_JOBS_GRACE_MS` more (the shares in flight), then only make blocks; every
    /// channel gets a new job whose nTime starts past every share accepted on the tip, so no
    /// old share can be replayed on it. A channel therefore holds at most two sets of this
    /// many fingerprints (about 4.6 KiB each at 448). A channel far above its expected share
    /// rate gets its target raised by vardiff; one whose target cannot rise (a fixed
    /// difficulty) sees its window start over more often, never unbounded memory.
    pub credit_window_shares: usize,
    /// A new job on the current work goes to every channel when none has gone out for this
    /// long (ms), also when no template pays more: devices that take nTime from their own
    /// clock, or that exhaust their search space on one nTime, keep getting headers they can
    /// finish (SV1 pools send mining.notify about as often). Default 30 s.
    pub job_refresh_ms: u64,
    /// Whether miners may roll the BIP320 version bits (version_rolling_allowed in jobs).
    pub version_rolling: bool,
    /// Put in the top two bytes of every extranonce prefix, so pools behind one payout never
    /// hand out the same search space.
    pub server_id: u16,
    // Issue 15, payouts (helper C).
    /// The network a payout address in user_identity must be of (the node's, set by the
    /// server once the node says its chain); `None`: addresses are checked for syntax only.
    /// A malformed or wrong-network address is refused with `unknown-user` at open.
    pub payout_network: Option<bitcoin::Network>,
    // Issue 14, liveness and share floods (helper B).
    /// A set-up connection with no channel open is closed after this long (ms) without one:
    /// from SetupConnection, or from its last channel's closing. `None`: never.
    pub channel_open_timeout_ms: Option<u64>,
    /// A channel with neither an accepted share nor a channel message for this long (ms) is
    /// closed (CloseChannel, reason `idle-timeout`); refused shares do not count. `None`:
    /// never (the pool sets it to its idle timeout).
    pub channel_idle_ms: Option<u64>,
    /// Shares a channel may submit, as a multiple of the vardiff aim (`shares_per_minute`),
    /// over a burst of a minute of that rate; past it shares are refused with
    /// `too-many-shares` and the target is raised at once. Default 20.
    pub share_rate_multiple: f64,
    /// A connection whose channel had this many shares refused for the rate, with less than
    /// 10 s between one refusal and the next, is closed. Default 1000.
    pub flood_close_refusals: u32,
    /// Channels open at once across the pool (the server shares one [`ChannelBudget`] of this
    /// size among its sessions; beyond it OpenMiningChannel is refused with
    /// `channel-capacity-exhausted`). Default 20,000.
    ///
    /// [`ChannelBudget`]: super::ChannelBudget
    pub max_channels: usize,
    // Issue 15, durable acknowledgements (helper A).
    /// Durable before acknowledged: accepted shares are numbered and each SubmitShares.Success
    /// is queued behind a hold on the last share it covers (`Outbox::hold_until`: the shell
    /// writes it once the share ledger committed that share); while the ledger is down valid shares are refused with
    /// `ledger-unavailable`. Off by default (acknowledgements as soon as a batch is due); the
    /// server turns it on for its connections when a ledger is configured.
    pub durable_acks: bool,
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
            easy_chain_min_difficulty: None,
            max_difficulty: 1e15,
            sv1_start_difficulty: None,
            default_extranonce_size: 8,
            ntime_allowance_secs: 120,
            max_channels_per_connection: 64,
            credit_window_shares: 448,
            job_refresh_ms: 30_000,
            version_rolling: true,
            server_id: 0,
            payout_network: None,
            channel_open_timeout_ms: Some(30_000),
            channel_idle_ms: None,
            share_rate_multiple: 20.0,
            flood_close_refusals: 1000,
            max_channels: 20_000,
            durable_acks: false,
        }
    }
}
