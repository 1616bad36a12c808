//! blvm-stratum-v2: a Stratum V2 mining-pool server.
//!
//! The crate is a sans-IO core with a thin async shell:
//! - [`wire`]: the SV2 binary encoding (data types, frames, messages, TLV), zero-copy.
//! - [`block`]: block templates, the coinbase, merkle paths, targets, header hashing.
//! - [`mining`]: the mining session (channels, jobs, share validation, block assembly,
//!   vardiff) and the pool object (work selection, found blocks, statistics), sans-IO.
//! - [`node`]: the Bitcoin node behind the pool ([`node::NodeApi`]) and its backends.
//! - [`noise`]: the Noise NX handshake with authority certificates and the encrypted transport.
//! - [`connection`]: one SV2 connection (Noise + a protocol session), sans-IO, driven by
//!   every shell.
//! - [`ledger`]: the share ledger the pool pays from ([`ledger::Ledger`]), its backends.
//! - [`payout`]: user_identity's payout forms, the PPLNS split, settling a block, pruning.
//! - [`template_provider`]: a Template Distribution Protocol server on the embedded chain.
//! - [`client`]: a CPU miner (sans-IO session, hashing threads, tokio driver).
//! - [`loadgen`]: a load generator built on the client.
//! - [`shell`]: the one tokio shell of the servers: listener and deadline-driven driver loop.
//! - [`server`]: the pool server on that shell.
//! - [`http`]: the HTTP server beside the pool: Prometheus `/metrics` and the JSON API.
//! - [`webhook`]: notifications by webhook (blocks, workers offline, the node unreachable).
//! - [`config`]: the configuration file and flags, resolved into each part's settings.
//! - [`api`]: the product API (the seed's names) as a thin facade over the above, re-exported
//!   here.
//!
//! Every protocol decision lives in plain state machines fed with bytes (and the time, where it
//! matters); sockets and timers belong to the shell.
//!
//! Module graph (an arrow points at what a module uses; no cycles):
//!
//! ```text
//! main ──> config, server, http, template_provider, client, loadgen, node, noise
//! http ──> server (its observer), ledger, mining, shell, loadgen (procfs), webhook   /metrics, JSON API
//! api ──> server, config, node, mining, block, wire      the product API's facade
//! config ──> server, http, webhook, node, mining      the composition root: file, flags, module env into settings
//! server ──> shell, connection, mining, node, noise, wire, webhook    the pool's tokio shell
//! webhook ──> shell (clock), client (backoff)    what to notify (sans-IO), its delivery
//! template_provider ──> shell, connection, mining, node, block, noise, wire
//! loadgen ──> shell, client, connection, mining, noise, wire
//! shell ──> connection, mining (certificate rule), noise     listener, driver loop, renewal
//! client ──> connection, block, mining, noise, wire
//! node ──> block                       the backends
//! mining ──> connection (Outbox, Protocol), block, wire, payout (identities)   sessions, pool
//! connection ──> noise, wire           one SV2 connection, sans-IO
//! payout ──> ledger                    identities, the split, settlement, pruning
//! ledger ──> (bitcoin only)            the share ledger trait, the memory reference, backends
//! block ──> wire (its U256 alias)      the bottom: templates, coinbase, merkle, target, header
//! noise, wire ──> (nothing)
//! ```
//!
//! `mining::{coinbase, merkle, target}` are re-exports of the `block` modules (their old
//! home), so a path through them is an edge to `block`, not to `mining`.

// The sans-IO protocol core: builds without the `runtime` feature (no tokio, no sockets).
pub mod block;
pub mod client;
pub mod connection;
pub mod ledger;
pub mod mining;
pub mod noise;
pub mod payout;
#[cfg(feature = "runtime")]
pub mod shell;
#[cfg(feature = "sv1")]
pub mod sv1;
pub mod wire;

// The shell: needs the `runtime` feature.
#[cfg(feature = "runtime")]
pub mod api;
#[cfg(feature = "runtime")]
pub mod config;
#[cfg(feature = "runtime")]
pub mod http;
#[cfg(feature = "runtime")]
pub mod loadgen;
#[cfg(feature = "runtime")]
pub mod node;
#[cfg(feature = "runtime")]
pub mod server;
#[cfg(feature = "runtime")]
pub mod template_provider;
#[cfg(feature = "runtime")]
pub mod webhook;

/// The product API (the seed's names), a thin facade over the core: see [`api`].
#[cfg(feature = "runtime")]
pub use api::{
    BlockTemplateGenerator, ChannelInfo, JobInfo, MinerConnection, MinerStats, PoolStats,
    ShareData, StratumV2Error, StratumV2Message, StratumV2Pool, StratumV2Server, TlvDecoder,
    TlvEncoder,
};

/// Without the `runtime` feature, the template provider is only its sans-IO session and the
/// cutting of templates to a client's coinbase room (the same files as with the feature; the
/// tokio server is left out).
#[cfg(not(feature = "runtime"))]
pub mod template_provider {
    pub mod coinbase_room;
    pub mod session;
    pub use session::{ServedTemplate, SolutionError, TpEvent, TpSession, TpSessionError};
}
