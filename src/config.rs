//! Pool configuration: a TOML file, command-line flags over it, defaults under both.
//!
//! The file may hold the options at its top level, or in the `[modules.blvm-stratum-v2]`
//! section blvm-node uses for its modules (both may appear; the section wins). Where the SRI
//! pool has a key for the same thing, its name is accepted too (`listen_address`,
//! `max_past_jobs`, `pool_signature` ...), so an operator's config moves over. Every bad value
//! fails at start with the file, the key and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bitcoin::{Address, ScriptBuf};
use clap::Args;
use serde::Deserialize;

use crate::ledger::SqliteSync;
use crate::mining::{CoinbaseConfig, HARDWARE_MIN_DIFFICULTY, MiningConfig};
use crate::node::module::ModuleSettings;
use crate::node::regtest::{
    ADAPTIVE_CHAIN_BITS, ChainConfig, DEFAULT_BLOCK_INTERVAL_SECS, REGTEST_BITS,
};
use crate::node::rpc::{RpcAuth, RpcConfig};
use crate::payout::{PayoutPolicy, PayoutScheme};
use crate::server::ledger_writer::{LedgerSettings, WriterSettings};
use crate::server::{RewardDestination, ServerConfig};
use crate::shell::{AdmissionConfig, Rate, TrustedProxies};

mod http_options;
mod module_env;
pub mod secrets;
mod sv1_listen;
mod webhook_options;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key and the line).
        message: String,
    },
    /// A secret file (issue 14, part C) that cannot be used: see [`secrets`].
    #[error("key `{key}`: {source}")]
    SecretFile {
        /// The key that named the file.
        key: &'static str,
        /// Why it was refused.
        source: secrets::SecretFileError,
    },
    /// A value of the right type that cannot work.
    #[error("{source_name}: key `{key}`: {reason}")]
    Invalid {
        /// The file, or "command line".
        source_name: String,
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// Every option, as the file and the command line give them (unset = default). Field names
/// are the TOML keys; the flags are their kebab-case forms.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct PoolOptions {
    /// Run at all (blvm-node module switch). Default: true.
    #[arg(long, value_name = "BOOL")]
    pub enabled: Option<bool>,
    /// Address to listen on for miners. Default: 0.0.0.0:3333. (SRI: listen_address)
    #[serde(alias = "listen_address")]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen_addr: Option<String>,
    /// Address to listen on for Stratum V1 miners, or `off`. Default: the SV2 address's host
    /// with the next port (0.0.0.0:3334 beside 0.0.0.0:3333; port 0 stays 0).
    #[arg(long, value_name = "HOST:PORT|off")]
    pub sv1_listen_addr: Option<String>,
    /// Take Stratum V1 miners on listen_addr too, told from Stratum V2 ones by their first
    /// bytes (`{` and 15 printable bytes). Default: false.
    #[arg(long, value_name = "BOOL")]
    pub sv1_on_sv2_port: Option<bool>,
    /// Directory for the authority key and found blocks. Default: ./blvm-stratum-v2-data
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// File holding the pool authority secret key. Default: DATA_DIR/authority_secret_key,
    /// created on first start. Owned by us, not accessible by group or others, not a symlink.
    #[arg(long, value_name = "FILE")]
    pub authority_key_path: Option<PathBuf>,
    /// The authority secret key itself, in SRI's base58check text form (SRI:
    /// authority_secret_key). As a flag it is visible to every local user (ps, /proc): prefer
    /// authority_key_path or the BLVM_STRATUM_V2_AUTHORITY_SECRET_KEY environment variable.
    #[arg(long, value_name = "KEY")]
    pub authority_secret_key: Option<String>,
    /// Expected authority public key; start-up fails if the secret key does not match it.
    #[arg(long, value_name = "KEY")]
    pub authority_public_key: Option<String>,
    /// Validity of the server certificate signed at start, in seconds. Default: 31536000.
    #[arg(long, value_name = "SECS")]
    pub cert_validity_sec: Option<u64>,
    /// Where block rewards go: addr(ADDRESS) or raw(HEX SCRIPT). Default: an unspendable
    /// OP_RETURN, on regtest only: with a node on any other chain the start fails without it.
    /// An address must be of the node's network (checked at start).
    #[arg(long, value_name = "DESCRIPTOR")]
    pub coinbase_reward_script: Option<String>,
    /// Tag in every coinbase scriptSig. Default: /blvm-stratum-v2/. (SRI: pool_signature)
    #[serde(alias = "coinbase_tag")]
    #[arg(long, value_name = "TEXT")]
    pub pool_signature: Option<String>,
    /// Vardiff aim per channel. Default: 18 (see docs: ~18% hashrate error per window).
    #[arg(long, value_name = "N")]
    pub shares_per_minute: Option<f64>,
    /// Accepted shares per SubmitShares.Success. Default: 1 (acknowledge at once).
    #[arg(long, value_name = "N")]
    pub share_batch_size: Option<u32>,
    /// Put in every extranonce prefix so pools sharing a payout never overlap. Default: 0.
    #[arg(long, value_name = "N")]
    pub server_id: Option<u16>,
    /// Jobs per connection that earn credit; older jobs of the tip still make blocks. Default:
    /// 10. (SRI: max_past_jobs)
    #[serde(alias = "max_past_jobs")]
    #[arg(long, value_name = "N")]
    pub max_jobs: Option<usize>,
    /// Easiest share difficulty handed out. Default: 16 on chains of difficulty 1 or more
    /// (mainnet, testnet), 0.000001 on easier ones (regtest, the embedded chain, signet).
    #[arg(long, value_name = "DIFF")]
    pub min_difficulty: Option<f64>,
    /// Hardest share difficulty handed out. Default: 1e15.
    #[arg(long, value_name = "DIFF")]
    pub max_difficulty: Option<f64>,
    /// Difficulty a Stratum V1 miner starts at (within min_difficulty and max_difficulty;
    /// mining.suggest_difficulty overrides it). Default: 512 on chains of difficulty 1 or
    /// more, min_difficulty on easier ones.
    #[arg(long, value_name = "DIFF")]
    pub sv1_start_difficulty: Option<f64>,
    /// Close connections silent for this long. Default: 300.
    #[arg(long, value_name = "SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// How often disconnected miners are forgotten. Default: 300.
    #[arg(long, value_name = "SECS")]
    pub cleanup_interval_secs: Option<u64>,
    /// How often a template on the same tip is fetched; it goes out only if it pays more.
    /// Default: 30.
    #[arg(long, value_name = "SECS")]
    pub template_refresh_secs: Option<u64>,
    /// A fresh job (nTime from the present) goes to every channel when none went out for this
    /// long, also on the same template. Default: 30.
    #[arg(long, value_name = "SECS")]
    pub job_refresh_secs: Option<u64>,
    /// Seconds a share's nTime may pass the latest prev hash's min_ntime plus the seconds since
    /// it was sent (clock skew, devices that set nTime ahead of their clock). Default: 120.
    #[arg(long, value_name = "SECS")]
    pub ntime_allowance_secs: Option<u32>,
    /// Shares a channel may have in one credit window before its jobs are retired (every
    /// duplicate is caught within a window; two windows of fingerprints per channel at most).
    /// Default: 448.
    #[arg(long, value_name = "N")]
    pub credit_window_shares: Option<usize>,
    /// Time allowed for the Noise handshake. Default: 10.
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout_secs: Option<u64>,
    /// Time allowed between the handshake and SetupConnection. Default: 10.
    #[arg(long, value_name = "SECS")]
    pub setup_timeout_secs: Option<u64>,
    /// Most connections at once. Default: 10000.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most channels per connection. Default: 64.
    #[arg(long, value_name = "N")]
    pub max_channels_per_connection: Option<usize>,
    // ----- admission control (issue 14, part A: helper h14a) -----
    /// Live connections per source IP (IPv6: per /64). Default: 256.
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<u32>,
    /// Sources exempt from the per-source limits (a load balancer's addresses),
    /// comma-separated. Default: 127.0.0.1,::1.
    #[arg(long, value_name = "IPS", value_delimiter = ',')]
    pub connection_allow_list: Option<Vec<String>>,
    /// New connections per source IP per second (bursts of four seconds' worth). Default: 16.
    #[arg(long, value_name = "N")]
    pub new_connections_per_ip_per_sec: Option<u32>,
    /// Noise handshakes per second, pool-wide (beyond it a connection is closed before any
    /// Diffie-Hellman). Default: 2000.
    #[arg(long, value_name = "N")]
    pub handshakes_per_sec: Option<u32>,
    /// Connections that have not finished the handshake and SetupConnection, pool-wide (on
    /// top of max_connections). Default: 1024.
    #[arg(long, value_name = "N")]
    pub max_pre_setup_connections: Option<u32>,
    /// Connections that have not finished the handshake and SetupConnection, per source IP.
    /// Default: 16.
    #[arg(long, value_name = "N")]
    pub max_pre_setup_per_ip: Option<u32>,
    /// Failed handshakes or setups (within penalty_secs of each other) that put a source IP in
    /// the penalty box. Default: 10.
    #[arg(long, value_name = "N")]
    pub handshake_failures_before_penalty: Option<u32>,
    /// Seconds a source IP stays in the penalty box. Default: 60.
    #[arg(long, value_name = "SECS")]
    pub penalty_secs: Option<u64>,
    // ----- end of admission control -----
    /// Load balancers (CIDRs, or single addresses) whose connections start with a PROXY
    /// protocol v2 header giving the miner's address (HAProxy's send-proxy-v2), on both the
    /// SV2 and the SV1 port; every connection from them must carry one, and a header from any
    /// other address is refused. Comma-separated. Default: none (off).
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub proxy_protocol_from: Option<Vec<String>>,
    // Issue 14, liveness, share floods and channel cap (helper B).
    /// A set-up connection with no channel open for this long is closed. Default: 30.
    #[arg(long, value_name = "SECS")]
    pub channel_open_timeout_secs: Option<u64>,
    /// Shares a channel may submit, as a multiple of shares_per_minute (a burst of one minute
    /// of that rate); beyond it shares are refused with too-many-shares. Default: 20.
    #[arg(long, value_name = "X")]
    pub share_rate_multiple: Option<f64>,
    /// Shares refused for the rate (less than 10 s apart) that close the connection.
    /// Default: 1000.
    #[arg(long, value_name = "N")]
    pub flood_close_refusals: Option<u32>,
    /// Most channels open at once across the pool. Default: 20000.
    #[arg(long, value_name = "N")]
    pub max_channels: Option<usize>,
    /// Where templates come from: "embedded" (built-in regtest chain), "rpc" (a node's
    /// JSON-RPC: Bitcoin Core, blvm-node ...) or "module" (blvm-node's module socket). Default:
    /// module when started by blvm-node or given --socket-path, else embedded.
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// Embedded chain: compact target (nBits) of every block with chain_block_interval_secs =
    /// 0 (default then: 0x207fffff, regtest's powLimit); otherwise the first and easiest
    /// target (default: 0x1e0fffff, 2^20 hashes a block).
    #[arg(long, value_name = "BITS", value_parser = parse_u32_auto)]
    pub chain_bits: Option<u32>,
    /// Embedded chain: synthetic transactions per template. Default: 0.
    #[arg(long, value_name = "N")]
    pub chain_synthetic_transactions: Option<usize>,
    /// RPC backend: the node's JSON-RPC URL, http://HOST:PORT[/PATH] (Bitcoin Core regtest:
    /// http://127.0.0.1:18443). Required with backend = "rpc".
    #[arg(long, value_name = "URL")]
    pub rpc_url: Option<String>,
    /// RPC backend: user name for HTTP Basic auth (with rpc_password).
    #[arg(long, value_name = "USER")]
    pub rpc_user: Option<String>,
    /// RPC backend: password for HTTP Basic auth (with rpc_user). As a flag it is visible to
    /// every local user (ps, /proc): prefer rpc_password_file or the
    /// BLVM_STRATUM_V2_RPC_PASSWORD environment variable.
    #[arg(long, value_name = "PASSWORD")]
    pub rpc_password: Option<String>,
    /// RPC backend: the node's cookie file (e.g. ~/.bitcoin/regtest/.cookie), read for every
    /// new connection. Instead of rpc_user/rpc_password.
    #[arg(long, value_name = "FILE")]
    pub rpc_cookie_file: Option<PathBuf>,
    /// RPC backend: how often the node's tip is polled, in milliseconds. Default: 50.
    #[arg(long, value_name = "MS")]
    pub rpc_poll_interval_ms: Option<u64>,
    /// Module backend: blvm-node's IPC socket (the node sets SOCKET_PATH).
    #[arg(long, value_name = "PATH")]
    pub socket_path: Option<PathBuf>,
    /// Module backend: our module id at the node (the node sets MODULE_ID).
    #[arg(long, value_name = "ID")]
    pub module_id: Option<String>,
    /// Module backend: our module name at the node (the node sets MODULE_NAME). Default:
    /// blvm-stratum-v2.
    #[arg(long, value_name = "NAME")]
    pub module_name: Option<String>,
    /// Module backend: requests per second to the node at most (a sliding second; published
    /// events get half and are dropped beyond it, blocks and templates wait). blvm-node 0.1.83
    /// closes the connection of a module that makes more than 100 per second. Default: 60.
    #[arg(long, value_name = "N")]
    pub node_requests_per_second: Option<u32>,

    // Issue 14, part C (embedded chain, block files, secrets, module log): keys below.
    /// Embedded chain: aimed seconds between blocks; the target adapts every 10 blocks and is
    /// never easier than chain_bits. 0: every block at chain_bits (on regtest's, every share of
    /// an easy miner is a block). Default: 10.
    #[arg(long, value_name = "SECS")]
    pub chain_block_interval_secs: Option<u32>,
    /// Blocks kept in DATA_DIR/blocks/submitted, oldest removed first (blocks/pending, blocks
    /// the node has not accepted yet, is never pruned). Default: 1000.
    #[arg(long, value_name = "N")]
    pub max_submitted_blocks: Option<usize>,
    /// RPC backend: a file holding the password (its first line), instead of rpc_password or
    /// the BLVM_STRATUM_V2_RPC_PASSWORD environment variable. Owned by us, not readable by
    /// group or others, not a symlink.
    #[arg(long, value_name = "FILE")]
    pub rpc_password_file: Option<PathBuf>,
    /// Started by blvm-node: size at which DATA_DIR/blvm-stratum-v2.log is renamed to
    /// blvm-stratum-v2.log.1 (replacing it) and a new log begun, so the log takes at most
    /// about twice this on disk. Default: 16777216 (16 MiB).
    #[arg(long, value_name = "BYTES")]
    pub log_max_bytes: Option<u64>,

    // Issue 15, the share ledger's durability (helper A): keys below.
    /// Record every accepted share in the share ledger before acknowledging it (issue 15).
    /// Default: true. false (or the flag --no-ledger): no ledger, shares acknowledged as soon
    /// as due and recorded nowhere (benchmarks, the product API).
    #[arg(long, value_name = "BOOL")]
    pub ledger: Option<bool>,
    /// Same as `ledger = false` (command line only).
    #[serde(skip)]
    #[arg(long)]
    pub no_ledger: bool,
    /// Where the share ledger is: a SQLite file's path, or postgres://USER@HOST/DB for
    /// PostgreSQL. Default: DATA_DIR/ledger.sqlite3.
    #[arg(long, value_name = "URL")]
    pub ledger_url: Option<String>,
    /// Group commit: after the first share queued, wait at most this long (ms) for more
    /// before writing them in one transaction. Default: 0 (what is queued; shares arriving
    /// during a commit go into the next).
    #[arg(long, value_name = "MS")]
    pub ledger_flush_ms: Option<u64>,
    /// Group commit: most shares written per transaction. Default: 4096.
    #[arg(long, value_name = "N")]
    pub ledger_flush_shares: Option<usize>,
    /// A connection whose output (acknowledgements, and what was queued after them) has
    /// waited this long (seconds) for a ledger that cannot write is closed: its miner comes
    /// back to a connection with nothing held, where refusals reach it at once. Default: 10.
    #[arg(long, value_name = "SECS")]
    pub ledger_hold_limit_secs: Option<u64>,
    /// Issue 18, several instances on one ledger: seconds between two heartbeats of this
    /// instance's claim of its server_id in the ledger's registry; a claim not beaten for 3
    /// intervals is dead and may be taken over. Default: 5.
    #[arg(long, value_name = "SECS")]
    pub instance_heartbeat_secs: Option<u64>,
    // ----- issue 15, the ledger's cost (helper P) -----
    /// When the SQLite ledger's commits reach the disk: "full" (fsync at every commit: an
    /// acknowledged share survives a power cut) or "normal" (WAL synced at checkpoints only:
    /// survives `kill -9` of the pool, not a power cut or a kernel crash; commits cost no
    /// fsync). Default: full.
    #[arg(long, value_name = "full|normal")]
    pub ledger_sqlite_sync: Option<String>,
    // ----- issue 15, payouts (helper C) -----
    /// How a found block's reward is divided: "pplns" (over the last N units of difficulty)
    /// or "solo" (to the user whose share found it). Default: pplns.
    #[arg(long, value_name = "SCHEME")]
    pub payout_scheme: Option<String>,
    /// The PPLNS window: this many times the network difficulty of the block. Default: 2.
    #[arg(long, value_name = "N")]
    pub pplns_window_multiple: Option<f64>,
    /// The pool's fee, percent of each block's reward (0 to 100). Default: 1.
    #[arg(long, value_name = "PERCENT")]
    pub pool_fee_percent: Option<f64>,
    /// Shares older than the newest PPLNS window are kept this long more, then pruned.
    /// Default: 604800 (7 days).
    #[arg(long, value_name = "SECS")]
    pub ledger_retention_secs: Option<u64>,
    /// The `[users]` table: accounts miners name in user_identity (`ACCOUNT.worker`) and their
    /// payout addresses (`[users.alice] address = "bc1..."`), checked at start against the
    /// node's network. File only.
    #[arg(skip)]
    pub users: Option<std::collections::BTreeMap<String, UserAccountOptions>>,
    /// Payouts in the coinbase: each template's coinbase pays the current PPLNS window's users
    /// directly (users with a payout address, above the dust threshold, at most
    /// `coinbase_max_outputs`; the rest to the pool's script), and no balance moves. Needs
    /// the ledger and the pplns scheme. Default: false.
    #[arg(long, value_name = "BOOL")]
    pub coinbase_payouts: Option<bool>,
    /// Payouts in the coinbase: a part below this many satoshis (or below the network's dust
    /// for the user's script) is not paid in the coinbase; it goes to the pool's script.
    /// Default: 10000.
    #[arg(long, value_name = "SAT")]
    pub coinbase_payout_dust_sat: Option<u64>,
    /// Payouts in the coinbase: most users paid in one coinbase (1 to 1000; fewer when the
    /// room the template leaves the coinbase holds fewer outputs). Default: 16.
    #[arg(long, value_name = "N")]
    pub coinbase_max_outputs: Option<usize>,
    // ----- end of payouts -----
    // ----- issue 16, the HTTP server -----
    /// Where the HTTP server (/metrics, the JSON API) listens. Default: 127.0.0.1:8080
    /// (loopback only). "" turns it off.
    #[arg(long, value_name = "HOST:PORT")]
    pub http_listen_addr: Option<String>,
    /// Run the HTTP server at all. Default: true.
    #[arg(long, value_name = "BOOL")]
    pub http_enabled: Option<bool>,
    /// Per-worker (and per-user) series labelled in /metrics; the rest are summed under
    /// user="other", worker="other". Default: 1000.
    #[arg(long, value_name = "N")]
    pub metrics_max_workers: Option<usize>,
    /// HTTP requests per second of each source, an address or IPv6 /64 (bursts of twice
    /// that); beyond it 429 for that source. Default: 50.
    #[arg(long, value_name = "N")]
    pub http_requests_per_second: Option<u32>,
    /// A file holding the admin API's bearer token (first line; a secret file: ours, mode
    /// 0600): with it, `POST /api/v1/admin/drain` drains the pool. Without it, no admin API.
    #[arg(long, value_name = "FILE")]
    pub http_admin_token_file: Option<PathBuf>,
    // ----- issue 16, webhooks -----
    /// The webhooks: `[[webhooks]] url = "http://..."`, optional `events` (default: all),
    /// `secret` or `secret_file` (HMAC-SHA256 signature header). File only.
    #[arg(skip)]
    pub webhooks: Option<Vec<WebhookOptions>>,
    /// Webhooks: a worker with no share for this long is notified offline (1 to 3599: the
    /// pool forgets a worker after an hour). Default: 600.
    #[arg(long, value_name = "SECS")]
    pub webhook_worker_offline_secs: Option<u64>,
    /// Webhooks: events waiting per webhook at most; beyond it the oldest waiting is dropped.
    /// Default: 256.
    #[arg(long, value_name = "N")]
    pub webhook_queue: Option<usize>,
    /// Webhooks: time for one delivery attempt. Default: 5.
    #[arg(long, value_name = "SECS")]
    pub webhook_timeout_secs: Option<u64>,
    /// Webhooks: attempts per event (the first and its retries, 1 s doubling to 60 s with
    /// jitter between them). Default: 5.
    #[arg(long, value_name = "N")]
    pub webhook_max_attempts: Option<u32>,
    /// Webhooks: the `pool_id` of every body. Default: pool_signature.
    #[arg(long, value_name = "TEXT")]
    pub webhook_pool_id: Option<String>,
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookOptions {
    /// `http://HOST[:PORT][/PATH]`.
    pub url: String,
    /// Events sent (`block_found`, `block_accepted`, `block_refused`, `block_orphaned`,
    /// `block_mature`, `worker_offline`, `worker_online`, `node_unreachable`,
    /// `node_reachable`). Default: all.
    pub events: Option<Vec<String>>,
    /// Signs each body with HMAC-SHA256 (`X-Blvm-Signature-256: sha256=HEX`).
    pub secret: Option<String>,
    /// The secret from a file (a secret file: ours, mode 600, not a link). Not with `secret`.
    pub secret_file: Option<PathBuf>,
}

/// One account of the `[users]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAccountOptions {
    /// Where the account's balance is paid.
    pub address: String,
    /// "solo": the account's blocks pay it alone (less the fee) and its shares are in no PPLNS
    /// window; "pplns" or unset: the pool's scheme.
    pub scheme: Option<String>,
}

/// The payout keys (issue 15, helper C), each checked; the `[users]` addresses are checked
/// against the node's network when the server starts.
fn payout_policy(o: &PoolOptions, source_name: &str) -> Result<PayoutPolicy, ConfigError> {
    let d = PayoutPolicy::default();
    let scheme = match o.payout_scheme.as_deref() {
        None => d.scheme,
        Some(name) => PayoutScheme::from_name(name).ok_or_else(|| {
            invalid(
                source_name,
                "payout_scheme",
                format!("`{name}` is not a payout scheme (known: pplns, solo)"),
            )
        })?,
    };
    let window_multiple = match o.pplns_window_multiple {
        None => d.window_multiple,
        Some(m) if m.is_finite() && m > 0.0 => m,
        Some(m) => {
            return Err(invalid(
                source_name,
                "pplns_window_multiple",
                format!("{m} is not a positive number"),
            ));
        }
    };
    let fee_percent = match o.pool_fee_percent {
        None => d.fee_percent,
        Some(p) if (0.0..=100.0).contains(&p) => p,
        Some(p) => {
            return Err(invalid(
                source_name,
                "pool_fee_percent",
                format!("{p} is not 0 to 100"),
            ));
        }
    };
    let mut accounts = std::collections::BTreeMap::new();
    let mut solo_users = std::collections::BTreeSet::new();
    for (name, entry) in o.users.iter().flatten() {
        let refuse = |why: String| invalid(source_name, "users", format!("[users.{name}]: {why}"));
        if name.is_empty() || name.contains('.') || name.starts_with("sri/") {
            return Err(refuse(
                "an account name is not empty, has no `.` (it separates the worker) and does \
                 not start with sri/"
                    .into(),
            ));
        }
        if crate::payout::identity::looks_like_address(name) {
            return Err(refuse(
                "an account name must not look like an address (miners name an address directly)"
                    .into(),
            ));
        }
        let address = entry
            .address
            .parse::<Address<bitcoin::address::NetworkUnchecked>>()
            .map_err(|e| refuse(format!("address `{}`: {e}", entry.address)))?;
        accounts.insert(name.clone(), address);
        match entry.scheme.as_deref().map(PayoutScheme::from_name) {
            None | Some(Some(PayoutScheme::Pplns)) => {}
            Some(Some(PayoutScheme::Solo)) => {
                solo_users.insert(name.clone());
            }
            Some(None) => {
                return Err(refuse(format!(
                    "scheme `{}` is not a payout scheme (known: pplns, solo)",
                    entry.scheme.as_deref().unwrap_or_default()
                )));
            }
        }
    }
    let coinbase_payouts = coinbase_payout_terms(o, scheme, source_name)?;
    // A solo account mines the pool's work, whose coinbase pays the window: its blocks would
    // pay it nothing (and its shares are in no window). Solo with payouts in the coinbase is
    // a channel of its own: `sri/solo/ADDRESS/worker`.
    if coinbase_payouts.is_some()
        && let Some(name) = solo_users.first()
    {
        return Err(invalid(
            source_name,
            "users",
            format!(
                "[users.{name}]: scheme `solo` with coinbase_payouts = true: its blocks' \
                 coinbase would pay the window, not it; its miners can mine solo as \
                 sri/solo/ADDRESS/worker"
            ),
        ));
    }
    Ok(PayoutPolicy {
        scheme,
        window_multiple,
        fee_percent,
        retention_secs: o.ledger_retention_secs.unwrap_or(d.retention_secs),
        accounts,
        solo_users,
        coinbase_payouts,
    })
}

/// Most users one coinbase may be configured to pay (the room a template leaves the coinbase,
/// 4,000 weight units, holds about 25 outputs anyway).
pub const MAX_COINBASE_MAX_OUTPUTS: usize = 1000;

/// Payouts in the coinbase (`coinbase_payouts`, `coinbase_payout_dust_sat`,
/// `coinbase_max_outputs`): `None` unless on; refused with a scheme they cannot work with
/// (solo: no window) or the ledger off (the window is read from it), and with limits out of
/// range.
fn coinbase_payout_terms(
    o: &PoolOptions,
    scheme: PayoutScheme,
    source_name: &str,
) -> Result<Option<crate::payout::CoinbasePayoutTerms>, ConfigError> {
    let d = crate::payout::CoinbasePayoutTerms::default();
    if o.coinbase_payouts != Some(true) {
        return Ok(None);
    }
    if scheme != PayoutScheme::Pplns {
        return Err(invalid(
            source_name,
            "coinbase_payouts",
            format!(
                "payouts in the coinbase pay the PPLNS window; payout_scheme is `{}`",
                scheme.name()
            ),
        ));
    }
    if o.no_ledger || o.ledger == Some(false) {
        return Err(invalid(
            source_name,
            "coinbase_payouts",
            "payouts in the coinbase need the share ledger (ledger = false)".to_owned(),
        ));
    }
    let max_outputs = match o.coinbase_max_outputs {
        None => d.max_outputs,
        Some(n @ 1..=MAX_COINBASE_MAX_OUTPUTS) => n,
        Some(n) => {
            return Err(invalid(
                source_name,
                "coinbase_max_outputs",
                format!("{n} is not 1 to {MAX_COINBASE_MAX_OUTPUTS}"),
            ));
        }
    };
    Ok(Some(crate::payout::CoinbasePayoutTerms {
        dust_sat: o.coinbase_payout_dust_sat.unwrap_or(d.dust_sat),
        max_outputs,
    }))
}

fn parse_u32_auto(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| e.to_string())
}

macro_rules! overlay {
    ($base:ident, $top:ident, $($f:ident),*) => {
        $( if $top.$f.is_some() { $base.$f = $top.$f.clone(); } )*
    };
}

impl PoolOptions {
    /// `self` with every option set in `top` replaced.
    pub fn overlay(mut self, top: &PoolOptions) -> PoolOptions {
        overlay!(
            self,
            top,
            enabled,
            listen_addr,
            sv1_listen_addr,
            sv1_on_sv2_port,
            data_dir,
            authority_key_path,
            authority_secret_key,
            authority_public_key,
            cert_validity_sec,
            coinbase_reward_script,
            pool_signature,
            shares_per_minute,
            share_batch_size,
            server_id,
            max_jobs,
            min_difficulty,
            max_difficulty,
            sv1_start_difficulty,
            idle_timeout_secs,
            cleanup_interval_secs,
            template_refresh_secs,
            job_refresh_secs,
            ntime_allowance_secs,
            credit_window_shares,
            handshake_timeout_secs,
            setup_timeout_secs,
            max_connections,
            max_channels_per_connection,
            max_connections_per_ip,
            connection_allow_list,
            new_connections_per_ip_per_sec,
            handshakes_per_sec,
            max_pre_setup_connections,
            max_pre_setup_per_ip,
            handshake_failures_before_penalty,
            penalty_secs,
            proxy_protocol_from,
            channel_open_timeout_secs,
            share_rate_multiple,
            flood_close_refusals,
            max_channels,
            backend,
            chain_bits,
            chain_synthetic_transactions,
            rpc_url,
            rpc_user,
            rpc_password,
            rpc_cookie_file,
            rpc_poll_interval_ms,
            socket_path,
            module_id,
            module_name,
            node_requests_per_second,
            // Issue 14, part C.
            chain_block_interval_secs,
            max_submitted_blocks,
            rpc_password_file,
            log_max_bytes,
            // Issue 15 (helper A).
            ledger,
            ledger_url,
            ledger_flush_ms,
            ledger_flush_shares,
            ledger_hold_limit_secs,
            instance_heartbeat_secs,
            // Issue 15, the ledger's cost (helper P).
            ledger_sqlite_sync,
            // Issue 15, payouts.
            payout_scheme,
            pplns_window_multiple,
            pool_fee_percent,
            ledger_retention_secs,
            users,
            coinbase_payouts,
            coinbase_payout_dust_sat,
            coinbase_max_outputs,
            // Issue 16, the HTTP server.
            http_listen_addr,
            http_enabled,
            metrics_max_workers,
            http_requests_per_second,
            http_admin_token_file,
            // Issue 16, webhooks.
            webhooks,
            webhook_worker_offline_secs,
            webhook_queue,
            webhook_timeout_secs,
            webhook_max_attempts,
            webhook_pool_id
        );
        self.no_ledger |= top.no_ledger;
        self
    }

    /// Reads a config file: top-level options and/or `[modules.blvm-stratum-v2]`.
    pub fn from_file(path: &Path) -> Result<PoolOptions, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses config text (`path` names it in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<PoolOptions, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut root: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let section = match root.remove("modules") {
            None => None,
            Some(toml::Value::Table(mut modules)) => match modules.remove("blvm-stratum-v2") {
                Some(toml::Value::Table(t)) => Some(t),
                Some(_) => {
                    return Err(parse_err(
                        "`modules.blvm-stratum-v2` must be a table".into(),
                    ));
                }
                // Other modules' sections are the node's business.
                None => None,
            },
            Some(_) => return Err(parse_err("`modules` must be a table".into())),
        };
        let base: PoolOptions = toml::Value::Table(root)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        match section {
            None => Ok(base),
            Some(t) => {
                let module: PoolOptions =
                    toml::Value::Table(t)
                        .try_into()
                        .map_err(|e: toml::de::Error| {
                            parse_err(format!("[modules.blvm-stratum-v2]: {e}"))
                        })?;
                Ok(base.overlay(&module))
            }
        }
    }
}

/// Where templates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The built-in regtest chain.
    Embedded(ChainConfig),
    /// A node's JSON-RPC interface.
    Rpc(RpcConfig),
    /// blvm-node's module socket.
    Module(ModuleSettings),
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Run at all.
    pub enabled: bool,
    /// Listening address.
    pub listen_addr: SocketAddr,
    /// Stratum V1 listening address (`None`: off).
    pub sv1_listen_addr: Option<SocketAddr>,
    /// Stratum V1 miners on the SV2 port too.
    pub sv1_on_sv2_port: bool,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Authority secret key file (None when the key is given inline).
    pub authority_key_path: Option<PathBuf>,
    /// Inline authority secret key.
    pub authority_secret_key: Option<String>,
    /// Expected authority public key.
    pub authority_public_key: Option<String>,
    /// Certificate validity.
    pub cert_validity_secs: u32,
    /// Mining policy.
    pub mining: MiningConfig,
    /// What the reward script was configured as (checked at start against the node's chain).
    pub reward_destination: RewardDestination,
    /// Idle timeout (ms).
    pub idle_timeout_ms: u64,
    /// Cleanup interval (ms).
    pub cleanup_interval_ms: u64,
    /// Same-tip template refresh interval (ms).
    pub template_refresh_ms: u64,
    /// Handshake timeout (ms).
    pub handshake_timeout_ms: u64,
    /// Setup timeout (ms).
    pub setup_timeout_ms: u64,
    /// Connection limit.
    pub max_connections: usize,
    /// Admission control per source (issue 14).
    pub admission: AdmissionConfig,
    /// Issue 18: trusted load balancers speaking the PROXY protocol v2 (empty: off).
    pub proxy_protocol_from: TrustedProxies,
    /// Template source.
    pub backend: Backend,
    // Issue 14, part C.
    /// Blocks kept in `blocks/submitted`.
    pub max_submitted_blocks: usize,
    /// Started by blvm-node: size at which the log file is rotated.
    pub log_max_bytes: u64,
    // Issue 15 (helper A).
    /// The share ledger (`None`: `ledger = false`).
    pub ledger: Option<LedgerSettings>,
    /// Issue 15: how blocks are paid.
    pub payout: PayoutPolicy,
    /// Issue 16: the HTTP server (`None`: off).
    pub http: Option<crate::http::HttpSettings>,
    /// Issue 16: the webhooks (none by default).
    pub webhooks: crate::webhook::WebhookSettings,
}

/// The data directory unless configured.
pub const DEFAULT_DATA_DIR: &str = "blvm-stratum-v2-data";

/// The share ledger's file in the data directory unless `ledger_url` says otherwise.
pub const DEFAULT_LEDGER_FILE: &str = "ledger.sqlite3";

/// Blocks kept in `blocks/submitted` unless configured.
pub const DEFAULT_MAX_SUBMITTED_BLOCKS: usize = 1000;
/// Size of the module's log file before it is rotated, unless configured.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The server's part of the configuration: everything but the module switch and the backend.
impl From<PoolConfig> for ServerConfig {
    fn from(c: PoolConfig) -> Self {
        ServerConfig {
            listen_addr: c.listen_addr,
            sv1_listen_addr: c.sv1_listen_addr,
            sv1_on_sv2_port: c.sv1_on_sv2_port,
            data_dir: c.data_dir,
            authority_key_path: c.authority_key_path,
            authority_secret_key: c.authority_secret_key,
            authority_public_key: c.authority_public_key,
            cert_validity_secs: c.cert_validity_secs,
            mining: c.mining,
            reward_destination: c.reward_destination,
            idle_timeout_ms: c.idle_timeout_ms,
            cleanup_interval_ms: c.cleanup_interval_ms,
            template_refresh_ms: c.template_refresh_ms,
            handshake_timeout_ms: c.handshake_timeout_ms,
            setup_timeout_ms: c.setup_timeout_ms,
            max_connections: c.max_connections,
            admission: c.admission,
            proxy_protocol_from: c.proxy_protocol_from,
            max_submitted_blocks: c.max_submitted_blocks,
            ledger: c.ledger,
            payout: c.payout,
            webhooks: c.webhooks,
        }
    }
}

/// The share ledger's keys (issue 15, helper A): on unless `ledger = false` or `--no-ledger`.
fn ledger_settings(
    o: &PoolOptions,
    data_dir: &Path,
    source_name: &str,
) -> Result<Option<LedgerSettings>, ConfigError> {
    if o.no_ledger || o.ledger == Some(false) {
        return Ok(None);
    }
    let defaults = WriterSettings::default();
    let flush_shares = o.ledger_flush_shares.unwrap_or(defaults.flush_shares);
    if flush_shares == 0 {
        return Err(invalid(
            source_name,
            "ledger_flush_shares",
            "0: must be at least 1",
        ));
    }
    let flush_ms = o.ledger_flush_ms.unwrap_or(defaults.flush_ms);
    if flush_ms > 1_000 {
        return Err(invalid(
            source_name,
            "ledger_flush_ms",
            format!("{flush_ms}: at most 1000 (every acknowledgement waits for it)"),
        ));
    }
    let url = match &o.ledger_url {
        Some(url) if url.is_empty() => {
            return Err(invalid(source_name, "ledger_url", "empty"));
        }
        Some(url) => url.clone(),
        None => data_dir
            .join(DEFAULT_LEDGER_FILE)
            .to_string_lossy()
            .into_owned(),
    };
    // Issue 15, the ledger's cost (helper P).
    let sqlite_sync = match o.ledger_sqlite_sync.as_deref() {
        None => SqliteSync::Full,
        Some(s) if s.eq_ignore_ascii_case("full") => SqliteSync::Full,
        Some(s) if s.eq_ignore_ascii_case("normal") => SqliteSync::Normal,
        Some(other) => {
            return Err(invalid(
                source_name,
                "ledger_sqlite_sync",
                format!("{other:?}: \"full\" or \"normal\""),
            ));
        }
    };
    let heartbeat_secs = o
        .instance_heartbeat_secs
        .unwrap_or(crate::server::DEFAULT_HEARTBEAT_SECS);
    if !(1..=3_600).contains(&heartbeat_secs) {
        return Err(invalid(
            source_name,
            "instance_heartbeat_secs",
            format!("{heartbeat_secs}: from 1 to 3600"),
        ));
    }
    let hold_limit_secs = o
        .ledger_hold_limit_secs
        .unwrap_or(crate::server::DEFAULT_HOLD_LIMIT_SECS);
    if !(1..=3_600).contains(&hold_limit_secs) {
        return Err(invalid(
            source_name,
            "ledger_hold_limit_secs",
            format!("{hold_limit_secs}: from 1 to 3600"),
        ));
    }
    Ok(Some(LedgerSettings {
        url,
        writer: WriterSettings {
            flush_shares,
            flush_ms,
            // The payout policy's and the data directory's file, set where the writer
            // starts (`server`).
            payout_terms: None,
            unwritten_path: None,
        },
        sqlite_sync,
        heartbeat: std::time::Duration::from_secs(heartbeat_secs),
        hold_limit: std::time::Duration::from_secs(hold_limit_secs),
    }))
}

/// The admission keys (issue 14, part A), each checked: a zero rate or budget would refuse
/// every miner.
///
/// Behind a load balancer speaking the PROXY protocol (`proxies` not empty), the allow-list is
/// empty unless configured: loopback is exempt by default only because a local proxy used to
/// hide every miner behind 127.0.0.1; with the PROXY protocol the limits apply to each miner's
/// real address, a local one included, and the balancer's own address is never admitted as a
/// miner (`shell::proxy_protocol`).
fn admission_config(
    o: &PoolOptions,
    proxies: &TrustedProxies,
    source_name: &str,
) -> Result<AdmissionConfig, ConfigError> {
    let mut d = AdmissionConfig::default();
    if !proxies.is_empty() {
        d.allow_list.clear();
    }
    let at_least_1 = |v: Option<u32>, key: &'static str, default: u32| match v {
        Some(0) => Err(invalid(source_name, key, "must be at least 1")),
        v => Ok(v.unwrap_or(default)),
    };
    let allow_list = match &o.connection_allow_list {
        None => d.allow_list.clone(),
        Some(list) => list
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<std::net::IpAddr>().map_err(|e| {
                    invalid(source_name, "connection_allow_list", format!("{s:?}: {e}"))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let connects = at_least_1(
        o.new_connections_per_ip_per_sec,
        "new_connections_per_ip_per_sec",
        d.connect_rate_per_ip.per_sec,
    )?;
    let handshakes = at_least_1(
        o.handshakes_per_sec,
        "handshakes_per_sec",
        d.handshake_rate.per_sec,
    )?;
    let penalty_ms = match o.penalty_secs {
        Some(0) => {
            return Err(invalid(
                source_name,
                "penalty_secs",
                "must be at least 1 second",
            ));
        }
        Some(s) => s.saturating_mul(1000),
        None => d.penalty_ms,
    };
    Ok(AdmissionConfig {
        max_per_ip: at_least_1(
            o.max_connections_per_ip,
            "max_connections_per_ip",
            d.max_per_ip,
        )?,
        allow_list,
        connect_rate_per_ip: Rate::new(connects, connects.saturating_mul(4)),
        handshake_rate: Rate::new(handshakes, handshakes),
        pre_setup_max: at_least_1(
            o.max_pre_setup_connections,
            "max_pre_setup_connections",
            d.pre_setup_max,
        )?,
        pre_setup_per_ip: at_least_1(
            o.max_pre_setup_per_ip,
            "max_pre_setup_per_ip",
            d.pre_setup_per_ip,
        )?,
        failures_before_penalty: at_least_1(
            o.handshake_failures_before_penalty,
            "handshake_failures_before_penalty",
            d.failures_before_penalty,
        )?,
        penalty_ms,
        max_sources: d.max_sources,
    })
}

/// `proxy_protocol_from`: CIDRs (`10.0.0.0/8`, `::1/128`) or single addresses, each parsed
/// by `ipnet`; a bad entry fails the start naming the key and the entry.
fn proxy_protocol_from(o: &PoolOptions, source_name: &str) -> Result<TrustedProxies, ConfigError> {
    let nets = o
        .proxy_protocol_from
        .iter()
        .flatten()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|e| {
                    invalid(
                        source_name,
                        "proxy_protocol_from",
                        format!("{s:?}: {e} (a CIDR such as 10.0.0.0/8 or an address)"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TrustedProxies::new(nets))
}

fn invalid(source_name: &str, key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        source_name: source_name.to_owned(),
        key,
        reason: reason.into(),
    }
}

/// Parses `addr(ADDRESS)` (any network's address; regtest ones included) or `raw(HEX)`.
pub fn parse_reward_script(text: &str) -> Result<ScriptBuf, String> {
    parse_reward_destination(text).map(|(script, _)| script)
}

/// [`parse_reward_script`], with what the script was given as: the network of an address is
/// checked at start against the node's (any network parses here).
pub fn parse_reward_destination(text: &str) -> Result<(ScriptBuf, RewardDestination), String> {
    let text = text.trim();
    if let Some(inner) = text.strip_prefix("addr(").and_then(|s| s.strip_suffix(')')) {
        let addr = Address::from_str(inner).map_err(|e| format!("bad address `{inner}`: {e}"))?;
        let script = addr.assume_checked_ref().script_pubkey();
        return Ok((script, RewardDestination::Address(addr)));
    }
    if let Some(inner) = text.strip_prefix("raw(").and_then(|s| s.strip_suffix(')')) {
        let script = ScriptBuf::from_hex(inner).map_err(|e| format!("bad script hex: {e}"))?;
        return Ok((script, RewardDestination::Script));
    }
    Err(format!("`{text}` is not addr(ADDRESS) or raw(HEX)"))
}

/// The `rpc` backend's settings: a URL, at most one way to authenticate, a poll interval.
fn resolve_rpc(o: &PoolOptions, source_name: &str) -> Result<RpcConfig, ConfigError> {
    let url = o
        .rpc_url
        .as_deref()
        .ok_or_else(|| invalid(source_name, "rpc_url", "required with backend = \"rpc\""))?;
    let auth = match (&o.rpc_user, &o.rpc_password, &o.rpc_cookie_file) {
        (None, None, None) => RpcAuth::None,
        (None, None, Some(path)) => RpcAuth::CookieFile(path.clone()),
        (Some(user), Some(password), None) => RpcAuth::UserPassword {
            user: user.clone(),
            password: password.clone(),
        },
        (Some(_), Some(_), Some(_)) => {
            return Err(invalid(
                source_name,
                "rpc_cookie_file",
                "give either rpc_cookie_file or rpc_user/rpc_password, not both",
            ));
        }
        (Some(_), None, _) => {
            return Err(invalid(
                source_name,
                "rpc_password",
                "required with rpc_user",
            ));
        }
        (None, Some(_), _) => {
            return Err(invalid(
                source_name,
                "rpc_user",
                "required with rpc_password",
            ));
        }
    };
    let mut config =
        RpcConfig::new(url, auth).map_err(|e| invalid(source_name, "rpc_url", e.to_string()))?;
    match o.rpc_poll_interval_ms {
        None => {}
        Some(ms @ 1..=60_000) => config.poll_interval = std::time::Duration::from_millis(ms),
        Some(ms) => {
            return Err(invalid(
                source_name,
                "rpc_poll_interval_ms",
                format!("{ms}: must be 1..=60000"),
            ));
        }
    }
    Ok(config)
}

impl PoolConfig {
    /// Resolves options to a configuration, checking every value; `source_name` (the file or
    /// "command line") goes into errors.
    pub fn resolve(o: &PoolOptions, source_name: &str) -> Result<PoolConfig, ConfigError> {
        let listen_text = o.listen_addr.as_deref().unwrap_or("0.0.0.0:3333");
        let listen_addr = listen_text
            .parse()
            .map_err(|e| invalid(source_name, "listen_addr", format!("`{listen_text}`: {e}")))?;
        let sv1_listen_addr = sv1_listen::resolve(o.sv1_listen_addr.as_deref(), listen_addr)
            .map_err(|reason| invalid(source_name, "sv1_listen_addr", reason))?;
        let data_dir = o
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        // Mining defaults come from the mining core: one copy of the numbers.
        let defaults = MiningConfig::default();
        let (payout_script, reward_destination) = match &o.coinbase_reward_script {
            None => (
                defaults.coinbase.payout_script.clone(),
                RewardDestination::Unset,
            ),
            Some(t) => parse_reward_destination(t)
                .map_err(|r| invalid(source_name, "coinbase_reward_script", r))?,
        };
        let pool_tag = match &o.pool_signature {
            None => defaults.coinbase.pool_tag.clone(),
            Some(tag) => tag.clone().into_bytes(),
        };
        if pool_tag.len() > 60 {
            return Err(invalid(
                source_name,
                "pool_signature",
                format!(
                    "{} bytes; at most 60 fit the coinbase scriptSig",
                    pool_tag.len()
                ),
            ));
        }
        let positive = |v: Option<f64>, key: &'static str, default: f64| match v {
            None => Ok(default),
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            Some(x) => Err(invalid(
                source_name,
                key,
                format!("{x} is not a positive number"),
            )),
        };
        let shares_per_minute = positive(
            o.shares_per_minute,
            "shares_per_minute",
            defaults.shares_per_minute,
        )?;
        let max_difficulty = positive(o.max_difficulty, "max_difficulty", defaults.max_difficulty)?;
        // Issue 14 (helper B): unless set, real hardware's floor on real chains and the
        // library's easy one on chains easier than difficulty 1 (regtest, embedded, signet);
        // a value set applies to every chain.
        let (min_difficulty, easy_chain_min_difficulty) = match o.min_difficulty {
            Some(_) => (
                positive(o.min_difficulty, "min_difficulty", defaults.min_difficulty)?,
                None,
            ),
            None => (
                HARDWARE_MIN_DIFFICULTY.min(max_difficulty),
                Some(defaults.min_difficulty.min(max_difficulty)),
            ),
        };
        if min_difficulty > max_difficulty {
            return Err(invalid(
                source_name,
                "min_difficulty",
                format!("{min_difficulty} is above max_difficulty {max_difficulty}"),
            ));
        }
        let max_jobs = o.max_jobs.unwrap_or(defaults.max_jobs);
        if max_jobs == 0 {
            return Err(invalid(source_name, "max_jobs", "must be at least 1"));
        }
        let share_batch_size = o.share_batch_size.unwrap_or(defaults.share_batch_size);
        if share_batch_size == 0 {
            return Err(invalid(
                source_name,
                "share_batch_size",
                "must be at least 1",
            ));
        }
        let secs = |v: Option<u64>, key: &'static str, default: u64| match v.unwrap_or(default) {
            0 => Err(invalid(source_name, key, "must be at least 1 second")),
            s => s
                .checked_mul(1000)
                .ok_or_else(|| invalid(source_name, key, format!("{s} seconds is too long"))),
        };
        let cert_validity = o.cert_validity_sec.unwrap_or(365 * 24 * 3600);
        let cert_validity_secs = u32::try_from(cert_validity)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| invalid(source_name, "cert_validity_sec", "must be 1..=4294967295"))?;
        let default_backend = if o.socket_path.is_some() {
            "module"
        } else {
            "embedded"
        };
        let backend = match o.backend.as_deref().unwrap_or(default_backend) {
            "embedded" => {
                let block_interval_secs = o
                    .chain_block_interval_secs
                    .unwrap_or(DEFAULT_BLOCK_INTERVAL_SECS);
                let default_bits = if block_interval_secs > 0 {
                    ADAPTIVE_CHAIN_BITS
                } else {
                    REGTEST_BITS
                };
                Backend::Embedded(ChainConfig {
                    bits: o.chain_bits.unwrap_or(default_bits),
                    synthetic_transactions: o.chain_synthetic_transactions.unwrap_or(0),
                    block_interval_secs,
                })
            }
            "rpc" => Backend::Rpc(resolve_rpc(o, source_name)?),
            "module" => {
                let socket = o.socket_path.clone().ok_or_else(|| {
                    invalid(
                        source_name,
                        "socket_path",
                        "required with backend = \"module\"",
                    )
                })?;
                let name = o
                    .module_name
                    .clone()
                    .unwrap_or_else(|| "blvm-stratum-v2".into());
                let id = o.module_id.clone().unwrap_or_else(|| name.clone());
                let mut settings = ModuleSettings::new(socket, id, name);
                if let Some(n) = o.node_requests_per_second {
                    if n < 2 {
                        return Err(invalid(
                            source_name,
                            "node_requests_per_second",
                            "at least 2 (half of them for published events)",
                        ));
                    }
                    settings.requests_per_second = n;
                }
                if o.rpc_url.is_some() {
                    settings.rpc = Some(resolve_rpc(o, source_name)?);
                }
                Backend::Module(settings)
            }
            other => {
                return Err(invalid(
                    source_name,
                    "backend",
                    format!("`{other}` is not a backend (known: embedded, rpc, module)"),
                ));
            }
        };
        let idle_timeout_ms = secs(o.idle_timeout_secs, "idle_timeout_secs", 300)?;
        let mining = MiningConfig {
            coinbase: CoinbaseConfig {
                payout_script,
                pool_tag,
                ..defaults.coinbase.clone()
            },
            max_jobs,
            shares_per_minute,
            share_batch_size,
            min_difficulty,
            easy_chain_min_difficulty,
            max_difficulty,
            sv1_start_difficulty: match o.sv1_start_difficulty {
                None => None,
                d => Some(positive(d, "sv1_start_difficulty", 0.0)?),
            },
            server_id: o.server_id.unwrap_or(defaults.server_id),
            job_refresh_ms: secs(o.job_refresh_secs, "job_refresh_secs", 30)?,
            ntime_allowance_secs: o
                .ntime_allowance_secs
                .unwrap_or(defaults.ntime_allowance_secs),
            credit_window_shares: match o
                .credit_window_shares
                .unwrap_or(defaults.credit_window_shares)
            {
                0 => {
                    return Err(invalid(
                        source_name,
                        "credit_window_shares",
                        "must be at least 1",
                    ));
                }
                n => n,
            },
            max_channels_per_connection: o
                .max_channels_per_connection
                .unwrap_or(defaults.max_channels_per_connection)
                .max(1),
            // Issue 14, liveness, share floods and channel cap (helper B).
            channel_open_timeout_ms: Some(secs(
                o.channel_open_timeout_secs,
                "channel_open_timeout_secs",
                30,
            )?),
            channel_idle_ms: Some(idle_timeout_ms),
            share_rate_multiple: positive(
                o.share_rate_multiple,
                "share_rate_multiple",
                defaults.share_rate_multiple,
            )?,
            flood_close_refusals: o
                .flood_close_refusals
                .unwrap_or(defaults.flood_close_refusals)
                .max(1),
            max_channels: o.max_channels.unwrap_or(defaults.max_channels).max(1),
            ..defaults
        };
        // Issue 15 (helper A).
        let ledger = ledger_settings(o, &data_dir, source_name)?;
        let proxy_protocol_from = proxy_protocol_from(o, source_name)?;
        Ok(PoolConfig {
            enabled: o.enabled.unwrap_or(true),
            listen_addr,
            sv1_listen_addr,
            sv1_on_sv2_port: o.sv1_on_sv2_port.unwrap_or(false),
            data_dir,
            authority_key_path: o.authority_key_path.clone(),
            authority_secret_key: o.authority_secret_key.clone(),
            authority_public_key: o.authority_public_key.clone(),
            cert_validity_secs,
            mining,
            reward_destination,
            idle_timeout_ms,
            cleanup_interval_ms: secs(o.cleanup_interval_secs, "cleanup_interval_secs", 300)?,
            template_refresh_ms: secs(o.template_refresh_secs, "template_refresh_secs", 30)?,
            handshake_timeout_ms: secs(o.handshake_timeout_secs, "handshake_timeout_secs", 10)?,
            setup_timeout_ms: secs(o.setup_timeout_secs, "setup_timeout_secs", 10)?,
            max_connections: o.max_connections.unwrap_or(10_000).max(1),
            admission: admission_config(o, &proxy_protocol_from, source_name)?,
            proxy_protocol_from,
            backend,
            max_submitted_blocks: o
                .max_submitted_blocks
                .unwrap_or(DEFAULT_MAX_SUBMITTED_BLOCKS),
            ledger,
            log_max_bytes: match o.log_max_bytes.unwrap_or(DEFAULT_LOG_MAX_BYTES) {
                n @ 4096.. => n,
                n => {
                    return Err(invalid(
                        source_name,
                        "log_max_bytes",
                        format!("{n}: must be at least 4096"),
                    ));
                }
            },
            // Issue 15, payouts.
            payout: payout_policy(o, source_name)?,
            // Issue 16.
            http: http_options::http_settings(o, source_name)?,
            webhooks: webhook_options::webhook_settings(o, source_name)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_section_and_sri_names_are_accepted() {
        let text = r#"
            shares_per_minute = 6.0
            [modules.blvm-stratum-v2]
            enabled = true
            listen_addr = "127.0.0.1:4444"
            max_past_jobs = 4
            pool_signature = "/test/"
            coinbase_reward_script = "raw(0014751e76e8199196d454941c45d1b3a323f1433bd6)"
        "#;
        let o = PoolOptions::from_toml(text, Path::new("pool.toml")).unwrap();
        let c = PoolConfig::resolve(&o, "pool.toml").unwrap();
        assert_eq!(c.listen_addr, "127.0.0.1:4444".parse().unwrap());
        assert_eq!(c.mining.max_jobs, 4);
        assert_eq!(c.mining.shares_per_minute, 6.0);
        assert_eq!(c.mining.coinbase.pool_tag, b"/test/");
        assert_eq!(c.mining.coinbase.payout_script.len(), 22);
    }

    #[test]
    fn share_credit_and_job_refresh_keys() {
        let text = "ntime_allowance_secs = 60\ncredit_window_shares = 100\njob_refresh_secs = 10";
        let o = PoolOptions::from_toml(text, Path::new("pool.toml")).unwrap();
        let c = PoolConfig::resolve(&o, "pool.toml").unwrap();
        assert_eq!(c.mining.ntime_allowance_secs, 60);
        assert_eq!(c.mining.credit_window_shares, 100);
        assert_eq!(c.mining.job_refresh_ms, 10_000);
        let defaults = PoolConfig::resolve(&PoolOptions::default(), "x").unwrap();
        assert_eq!(
            (
                defaults.mining.ntime_allowance_secs,
                defaults.mining.credit_window_shares,
                defaults.mining.job_refresh_ms
            ),
            (120, 448, 30_000)
        );
        let o = PoolOptions::from_toml("credit_window_shares = 0", Path::new("z.toml")).unwrap();
        let e = PoolConfig::resolve(&o, "z.toml").unwrap_err().to_string();
        assert!(e.contains("credit_window_shares"), "{e}");
    }

    // Issue 15 (helper A).
    #[test]
    fn the_share_ledger_is_on_by_default_in_the_data_dir_and_can_be_turned_off() {
        let o = PoolOptions {
            data_dir: Some(PathBuf::from("/tmp/pool-data")),
            ..PoolOptions::default()
        };
        let c = PoolConfig::resolve(&o, "x").unwrap();
        let ledger = c.ledger.expect("on by default");
        assert_eq!(ledger.url, "/tmp/pool-data/ledger.sqlite3");
        assert_eq!(ledger.writer, WriterSettings::default());
        let text = "ledger_url = \"postgres://pool@db/ledger\"\nledger_flush_ms = 2\nledger_flush_shares = 100";
        let o = PoolOptions::from_toml(text, Path::new("l.toml")).unwrap();
        let ledger = PoolConfig::resolve(&o, "l.toml").unwrap().ledger.unwrap();
        assert_eq!(ledger.url, "postgres://pool@db/ledger");
        assert_eq!(
            (ledger.writer.flush_ms, ledger.writer.flush_shares),
            (2, 100)
        );
        let o = PoolOptions::from_toml("ledger = false", Path::new("l.toml")).unwrap();
        assert!(PoolConfig::resolve(&o, "l.toml").unwrap().ledger.is_none());
        let flag = PoolOptions {
            no_ledger: true,
            ..PoolOptions::default()
        };
        let o = PoolOptions::default().overlay(&flag);
        assert!(PoolConfig::resolve(&o, "x").unwrap().ledger.is_none());
        let o = PoolOptions::from_toml("ledger_flush_shares = 0", Path::new("l.toml")).unwrap();
        let e = PoolConfig::resolve(&o, "l.toml").unwrap_err().to_string();
        assert!(e.contains("ledger_flush_shares"), "{e}");
    }

    // Issue 15, the ledger's cost (helper P).
    #[test]
    fn the_sqlite_ledger_syncs_fully_unless_told_normal() {
        let resolve = |text: &str| {
            let o = PoolOptions::from_toml(text, Path::new("l.toml")).unwrap();
            PoolConfig::resolve(&o, "l.toml")
        };
        let sync = |text: &str| resolve(text).unwrap().ledger.unwrap().sqlite_sync;
        assert_eq!(sync(""), SqliteSync::Full);
        assert_eq!(sync("ledger_sqlite_sync = \"FULL\""), SqliteSync::Full);
        assert_eq!(sync("ledger_sqlite_sync = \"normal\""), SqliteSync::Normal);
        let e = resolve("ledger_sqlite_sync = \"off\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ledger_sqlite_sync"), "{e}");
    }

    #[test]
    fn bad_values_name_the_file_and_key() {
        let o = PoolOptions::from_toml("listen_addr = \"nowhere\"", Path::new("x.toml")).unwrap();
        let e = PoolConfig::resolve(&o, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("listen_addr"), "{e}");
        let e = PoolOptions::from_toml("no_such_key = 1", Path::new("y.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("y.toml") && e.contains("no_such_key"), "{e}");
        let e = PoolOptions::from_toml("max_jobs = \"ten\"", Path::new("z.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("z.toml") && e.contains("max_jobs"), "{e}");
    }

    #[test]
    fn rpc_backend() {
        let text = r#"
            backend = "rpc"
            rpc_url = "http://127.0.0.1:18443"
            rpc_cookie_file = "/tmp/.cookie"
            rpc_poll_interval_ms = 100
        "#;
        let o = PoolOptions::from_toml(text, Path::new("r.toml")).unwrap();
        let c = PoolConfig::resolve(&o, "r.toml").unwrap();
        let Backend::Rpc(rpc) = c.backend else {
            panic!("{:?}", c.backend)
        };
        assert_eq!((rpc.host(), rpc.port()), ("127.0.0.1", 18443));
        assert_eq!(rpc.auth, RpcAuth::CookieFile("/tmp/.cookie".into()));
        assert_eq!(rpc.poll_interval, std::time::Duration::from_millis(100));
        for (text, key) in [
            ("backend = \"rpc\"", "rpc_url"),
            ("backend = \"rpc\"\nrpc_url = \"https://x:1\"", "rpc_url"),
            (
                "backend = \"rpc\"\nrpc_url = \"x:1\"\nrpc_user = \"u\"",
                "rpc_password",
            ),
            (
                "backend = \"rpc\"\nrpc_url = \"x:1\"\nrpc_poll_interval_ms = 0",
                "rpc_poll_interval_ms",
            ),
        ] {
            let o = PoolOptions::from_toml(text, Path::new("r.toml")).unwrap();
            let e = PoolConfig::resolve(&o, "r.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn embedded_chain_adapts_by_default() {
        let c = PoolConfig::resolve(&PoolOptions::default(), "defaults").unwrap();
        assert_eq!(
            c.backend,
            Backend::Embedded(ChainConfig {
                bits: ADAPTIVE_CHAIN_BITS,
                synthetic_transactions: 0,
                block_interval_secs: DEFAULT_BLOCK_INTERVAL_SECS,
            })
        );
        let o = PoolOptions::from_toml("chain_block_interval_secs = 0", Path::new("f")).unwrap();
        let c = PoolConfig::resolve(&o, "f").unwrap();
        assert_eq!(c.backend, Backend::Embedded(ChainConfig::default()));
        assert_eq!(c.max_submitted_blocks, DEFAULT_MAX_SUBMITTED_BLOCKS);
        let o = PoolOptions::from_toml("log_max_bytes = 100", Path::new("f")).unwrap();
        let e = PoolConfig::resolve(&o, "f").unwrap_err().to_string();
        assert!(e.contains("log_max_bytes"), "{e}");
    }

    #[test]
    fn mining_defaults_are_the_mining_cores() {
        let c = PoolConfig::resolve(&PoolOptions::default(), "defaults").unwrap();
        // The pool closes a channel idle for its connection idle timeout; the library's
        // default has no channel idle rule.
        let expected = MiningConfig {
            channel_idle_ms: Some(c.idle_timeout_ms),
            min_difficulty: HARDWARE_MIN_DIFFICULTY,
            easy_chain_min_difficulty: Some(1e-6),
            ..MiningConfig::default()
        };
        assert_eq!(format!("{:?}", c.mining), format!("{expected:?}"));
    }

    #[test]
    fn command_line_overrides_file() {
        let file = PoolOptions::from_toml("max_jobs = 3\nserver_id = 2", Path::new("f")).unwrap();
        let cli = PoolOptions {
            max_jobs: Some(7),
            ..PoolOptions::default()
        };
        let merged = file.overlay(&cli);
        assert_eq!((merged.max_jobs, merged.server_id), (Some(7), Some(2)));
    }

    // Issue 15, payouts (helper C).
    #[test]
    fn payout_keys_are_read_and_checked() {
        let d = PoolConfig::resolve(&PoolOptions::default(), "defaults").unwrap();
        assert_eq!(d.payout, PayoutPolicy::default());
        let regtest = Address::p2wsh(&ScriptBuf::new(), bitcoin::Network::Regtest).to_string();
        let text = format!(
            r#"
            payout_scheme = "solo"
            [modules.blvm-stratum-v2]
            pplns_window_multiple = 3.5
            pool_fee_percent = 0.25
            ledger_retention_secs = 60
            [modules.blvm-stratum-v2.users.alice]
            address = "{regtest}"
            scheme = "solo"
            [modules.blvm-stratum-v2.users.bob]
            address = "{regtest}"
            scheme = "pplns"
            "#
        );
        let o = PoolOptions::from_toml(&text, Path::new("f")).unwrap();
        let c = PoolConfig::resolve(&o, "f").unwrap();
        assert_eq!(c.payout.scheme, PayoutScheme::Solo);
        assert_eq!(c.payout.window_multiple, 3.5);
        assert_eq!(c.payout.fee_percent, 0.25);
        assert_eq!(c.payout.retention_secs, 60);
        assert_eq!(
            c.payout.solo_users.iter().collect::<Vec<_>>(),
            ["alice"],
            "{:?}",
            c.payout
        );
        assert!(c.payout.check_accounts(bitcoin::Network::Regtest).is_ok());
        let e = c
            .payout
            .check_accounts(bitcoin::Network::Bitcoin)
            .unwrap_err();
        assert_eq!(e.account, "alice");
        let top = format!("[users.bob]\naddress = \"{regtest}\"");
        let o = PoolOptions::from_toml(&top, Path::new("f")).unwrap();
        assert!(
            PoolConfig::resolve(&o, "f")
                .unwrap()
                .payout
                .accounts
                .contains_key("bob")
        );
        for (bad, key) in [
            ("payout_scheme = \"pps\"", "payout_scheme"),
            ("pplns_window_multiple = 0.0", "pplns_window_multiple"),
            ("pool_fee_percent = 101.0", "pool_fee_percent"),
            ("pool_fee_percent = -1.0", "pool_fee_percent"),
            ("[users.alice]\naddress = \"nope\"", "users"),
            ("[users.\"a.b\"]\naddress = \"nope\"", "users"),
        ] {
            let o = PoolOptions::from_toml(bad, Path::new("f")).unwrap();
            match PoolConfig::resolve(&o, "f") {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        // Payouts in the coinbase: off by default; on with its defaults or limits; refused
        // with the solo scheme, without the ledger, or with a cap out of range.
        assert_eq!(d.payout.coinbase_payouts, None);
        let o = PoolOptions::from_toml("coinbase_payouts = true", Path::new("f")).unwrap();
        assert_eq!(
            PoolConfig::resolve(&o, "f")
                .unwrap()
                .payout
                .coinbase_payouts,
            Some(crate::payout::CoinbasePayoutTerms::default())
        );
        let o = PoolOptions::from_toml(
            "coinbase_payouts = true\ncoinbase_payout_dust_sat = 600\ncoinbase_max_outputs = 3",
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(
            PoolConfig::resolve(&o, "f")
                .unwrap()
                .payout
                .coinbase_payouts,
            Some(crate::payout::CoinbasePayoutTerms {
                dust_sat: 600,
                max_outputs: 3
            })
        );
        for (bad, key) in [
            (
                "coinbase_payouts = true\npayout_scheme = \"solo\"",
                "coinbase_payouts",
            ),
            (
                "coinbase_payouts = true\nledger = false",
                "coinbase_payouts",
            ),
            (
                "coinbase_payouts = true\ncoinbase_max_outputs = 0",
                "coinbase_max_outputs",
            ),
            (
                &format!(
                    "coinbase_payouts = true\n[users.soloist]\naddress = \"{regtest}\"\n\
                     scheme = \"solo\""
                ),
                "users",
            ),
        ] {
            let o = PoolOptions::from_toml(bad, Path::new("f")).unwrap();
            match PoolConfig::resolve(&o, "f") {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        // An unknown scheme of an account is refused.
        let o = PoolOptions::from_toml(
            &format!("[users.alice]\naddress = \"{regtest}\"\nscheme = \"pps\""),
            Path::new("f"),
        )
        .unwrap();
        match PoolConfig::resolve(&o, "f") {
            Err(ConfigError::Invalid { reason, .. }) => assert!(reason.contains("pps"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // An account named like an address is refused.
        let o = PoolOptions::from_toml(
            &format!("[users.{regtest}]\naddress = \"{regtest}\""),
            Path::new("f"),
        )
        .unwrap();
        assert!(PoolConfig::resolve(&o, "f").is_err());
        // Unknown keys of an account are refused.
        assert!(PoolOptions::from_toml("[users.a]\naddres = \"x\"", Path::new("f")).is_err());
    }

    #[test]
    fn proxy_protocol_from_is_read_and_checked() {
        let d = PoolConfig::resolve(&PoolOptions::default(), "defaults").unwrap();
        assert!(d.proxy_protocol_from.is_empty(), "off by default");
        let text =
            r#"proxy_protocol_from = ["127.0.0.1/32", "::1/128", "10.1.0.0/16", "192.0.2.7"]"#;
        let o = PoolOptions::from_toml(text, Path::new("a.toml")).unwrap();
        let c = PoolConfig::resolve(&o, "a.toml").unwrap();
        let nets: Vec<String> = c
            .proxy_protocol_from
            .nets()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            nets,
            ["127.0.0.1/32", "::1/128", "10.1.0.0/16", "192.0.2.7/32"]
        );
        assert!(
            c.admission.allow_list.is_empty(),
            "behind a balancer, loopback miners are limited like any"
        );
        let text = r#"
            proxy_protocol_from = ["127.0.0.1/32"]
            connection_allow_list = ["10.0.0.1"]
        "#;
        let o = PoolOptions::from_toml(text, Path::new("a.toml")).unwrap();
        let c = PoolConfig::resolve(&o, "a.toml").unwrap();
        assert_eq!(c.admission.allow_list.len(), 1, "a configured list stays");
        for bad in ["10.0.0.0/33", "pool.example", "10.0.0.0/8/8"] {
            let o = PoolOptions {
                proxy_protocol_from: Some(vec!["127.0.0.1/32".into(), bad.into()]),
                ..PoolOptions::default()
            };
            match PoolConfig::resolve(&o, "test") {
                Err(ConfigError::Invalid { key, reason, .. }) => {
                    assert_eq!(key, "proxy_protocol_from");
                    assert!(reason.contains(bad), "{reason}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn admission_keys_are_read_and_checked() {
        let d = PoolConfig::resolve(&PoolOptions::default(), "defaults").unwrap();
        assert_eq!(d.admission, AdmissionConfig::default());
        let text = r#"
            max_connections_per_ip = 8
            connection_allow_list = ["10.0.0.1", "2001:db8::1"]
            new_connections_per_ip_per_sec = 3
            handshakes_per_sec = 500
            max_pre_setup_connections = 100
            max_pre_setup_per_ip = 4
            handshake_failures_before_penalty = 5
            penalty_secs = 30
        "#;
        let o = PoolOptions::from_toml(text, Path::new("a.toml")).unwrap();
        let a = PoolConfig::resolve(&o, "a.toml").unwrap().admission;
        assert_eq!(a.max_per_ip, 8);
        assert_eq!(
            a.allow_list,
            vec![
                "10.0.0.1".parse::<std::net::IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(a.connect_rate_per_ip, Rate::new(3, 12));
        assert_eq!(a.handshake_rate, Rate::new(500, 500));
        assert_eq!((a.pre_setup_max, a.pre_setup_per_ip), (100, 4));
        assert_eq!((a.failures_before_penalty, a.penalty_ms), (5, 30_000));
        for (text, key) in [
            ("handshakes_per_sec = 0", "handshakes_per_sec"),
            ("max_pre_setup_per_ip = 0", "max_pre_setup_per_ip"),
            (
                "connection_allow_list = [\"pool.example\"]",
                "connection_allow_list",
            ),
        ] {
            let o = PoolOptions::from_toml(text, Path::new("a.toml")).unwrap();
            let e = PoolConfig::resolve(&o, "a.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
