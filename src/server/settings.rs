//! What the pool server needs to know, and nothing else: the configuration (the composition
//! root, `crate::config`) resolves the file, the flags and the module environment into this, so
//! the server never imports the configuration (the arrow points from config to server).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::mining::MiningConfig;
use crate::shell::{AdmissionConfig, TrustedProxies};

use super::RewardDestination;
use super::ledger_writer::LedgerSettings;

/// The pool server's settings (built from the configuration by `From<config::PoolConfig>`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where miners connect.
    pub listen_addr: SocketAddr,
    /// Where Stratum V1 miners connect (issue 17); `None`: no SV1 listener.
    pub sv1_listen_addr: Option<SocketAddr>,
    /// Authority key (when created here) and found blocks (`blocks/`).
    pub data_dir: PathBuf,
    /// Authority secret key file (None when the key is given inline or lives in `data_dir`).
    pub authority_key_path: Option<PathBuf>,
    /// Inline authority secret key.
    pub authority_secret_key: Option<String>,
    /// Expected authority public key: the start fails if the secret key does not match.
    pub authority_public_key: Option<String>,
    /// Validity of the server certificate (renewed before half of it is left).
    pub cert_validity_secs: u32,
    /// Mining policy of every session.
    pub mining: MiningConfig,
    /// What `mining.coinbase.payout_script` was configured as, checked at start against the
    /// node's chain (unset: regtest only).
    pub reward_destination: RewardDestination,
    /// Close connections silent this long; forget disconnected miners after it (ms).
    pub idle_timeout_ms: u64,
    /// How often disconnected miners are forgotten (ms).
    pub cleanup_interval_ms: u64,
    /// How often a template on the same tip is fetched (ms).
    pub template_refresh_ms: u64,
    /// Time for the Noise handshake (ms).
    pub handshake_timeout_ms: u64,
    /// Time for SetupConnection after the handshake (ms).
    pub setup_timeout_ms: u64,
    /// Set-up connections at once (sockets: this plus `admission.pre_setup_max`).
    pub max_connections: usize,
    /// Admission control per source (issue 14).
    pub admission: AdmissionConfig,
    /// Issue 18: load balancers whose PROXY v2 headers give the miner's address, on both
    /// listeners (empty: off).
    pub proxy_protocol_from: TrustedProxies,
    /// Blocks kept in `blocks/submitted`, oldest removed first (`blocks/pending` is never
    /// pruned).
    pub max_submitted_blocks: usize,
    // Issue 15, the share ledger (helper A).
    /// The share ledger and its group commit; `None`: no ledger (acknowledgements as soon as
    /// due, nothing recorded: benchmarks and the product API).
    pub ledger: Option<LedgerSettings>,
    /// Issue 15: how blocks are paid (scheme, window, fee, retention, `[users]` accounts).
    pub payout: crate::payout::PayoutPolicy,
}
