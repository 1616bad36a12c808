//! Every reason a connection is refused or fails that a remote host decides, as one key for
//! the [`LogBudget`](super::LogBudget): each is counted and only the first few per period are
//! logged one by one, with one summary line per period (an attacker cannot fill the log).
//! The counts are also what a metrics exporter reads later.

use std::fmt;

use super::admission::Refusal;

/// Why a connection was refused, closed early or denied something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refused {
    /// Refused at the listener by admission control.
    Admission(Refusal),
    /// Refused at the listener: every socket place taken.
    SocketCap,
    /// Set up, but every set-up place holds a connection with a channel.
    PoolFull,
    /// Closed to give its place to a newly set-up miner (it had no channel).
    Evicted,
    /// The Noise handshake failed (garbage, a bad message).
    HandshakeFailed,
    /// The Noise handshake did not finish in time.
    HandshakeTimeout,
    /// SetupConnection did not come in time.
    SetupTimeout,
    /// SetupConnection was refused.
    SetupRefused,
    /// A channel was refused.
    ChannelRefused,
    /// Nothing valid came for the idle timeout.
    IdleTimeout,
    /// Set up, but no channel opened in time.
    NoChannel,
    /// Closed for flooding shares past its rate.
    ShareFlood,
    /// Another failure after setup (protocol error, a peer that does not read, a socket error).
    ConnectionFailed,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Admission(r) => write!(f, "{r}"),
            Refused::SocketCap => f.write_str("socket cap"),
            Refused::PoolFull => f.write_str("pool full"),
            Refused::Evicted => f.write_str("evicted without a channel"),
            Refused::HandshakeFailed => f.write_str("handshake failed"),
            Refused::HandshakeTimeout => f.write_str("handshake timeout"),
            Refused::SetupTimeout => f.write_str("setup timeout"),
            Refused::SetupRefused => f.write_str("setup refused"),
            Refused::ChannelRefused => f.write_str("channel refused"),
            Refused::IdleTimeout => f.write_str("idle timeout"),
            Refused::NoChannel => f.write_str("no channel in time"),
            Refused::ShareFlood => f.write_str("share flood"),
            Refused::ConnectionFailed => f.write_str("connection failed"),
        }
    }
}
