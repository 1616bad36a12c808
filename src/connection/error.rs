//! Why a connection ended: one enum for every driver (pool, template provider, CPU miner, load
//! generator), generic only over the protocol's own error.

use crate::noise::NoiseError;

/// Why a connection ended. `E` is the carried protocol's error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError<E: std::error::Error + 'static> {
    /// The peer closed the socket.
    #[error("closed by the peer")]
    Closed,
    /// A socket error.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The Noise handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The protocol's setup did not finish in time.
    #[error("setup timed out")]
    SetupTimeout,
    /// Nothing was received for the idle timeout.
    #[error("idle timeout")]
    Idle,
    /// Noise failed (bad handshake, certificate, MAC failure ...).
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    /// A line of a plaintext line protocol (Stratum V1) passed the maximum length.
    #[error("{0}")]
    LineTooLong(#[from] super::LineTooLong),
    /// The protocol ended the connection (the reason is its error).
    #[error("{0}")]
    Protocol(#[source] E),
    /// The peer does not read what we send.
    #[error("peer not reading ({0} bytes pending)")]
    SlowReader(usize),
    /// Output held for the share ledger (acknowledgements, and what was queued after them)
    /// waited this long without the ledger committing: the connection is given up.
    #[error("output held {0:?} for a share ledger that cannot write")]
    OutputHeld(std::time::Duration),
    /// Our side is shutting down.
    #[error("shutting down")]
    Shutdown,
    /// Input arrived after the connection had already ended.
    #[error("connection already ended")]
    Ended,
}
