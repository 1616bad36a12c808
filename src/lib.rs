//! blvm-stratum-v2: a Stratum V2 mining-pool server.
//!
//! The crate is a sans-IO core with a thin async shell:
//! - [`wire`]: the SV2 binary encoding (data types, frames, messages, TLV), zero-copy.
//! - [`mining`]: channels, jobs, share validation, block assembly, vardiff (sans-IO).
//! - [`node`]: the Bitcoin node behind the pool ([`node::NodeApi`]) and its backends.
//! - [`noise`]: the Noise NX handshake with authority certificates and the encrypted transport.
//! - [`connection`]: one SV2 connection (Noise + a protocol session), sans-IO, driven by
//!   every shell.
//! - [`template_provider`]: a Template Distribution Protocol server on the embedded chain.
//!
//! Every protocol decision lives in plain state machines fed with bytes (and the time, where it
//! matters); sockets and timers belong to the shell.

pub mod client;
pub mod config;
pub mod connection;
pub mod loadgen;
pub mod mining;
pub mod node;
pub mod noise;
pub mod server;
pub mod shell;
pub mod template_provider;
pub mod wire;
