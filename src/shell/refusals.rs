//! Every reason a connection is refused or fails that a remote host decides, as one key for
//! the [`LogBudget`](super::LogBudget): each is counted and only the first few per period are
//! logged one by one, with one summary line per period (an attacker cannot fill the log).
//! The counts are also what a metrics exporter reads later.

use std::fmt;

use super::admission::Refusal;
use super::proxy_header::ProxyRefusal;

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
    /// The PROXY protocol (issue 18): a header from an untrusted address, or a trusted load
    /// balancer's connection without a valid header in time.
    Proxy(ProxyRefusal),
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
            Refused::Proxy(r) => write!(f, "{r}"),
        }
    }
}

impl Refused {
    /// Every reason, in [`Refused::index`] order.
    pub const ALL: [Refused; 23] = [
        Refused::Admission(Refusal::PenaltyBox),
        Refused::Admission(Refusal::PerIpCap),
        Refused::Admission(Refusal::PreSetupPerIp),
        Refused::Admission(Refusal::PreSetupBudget),
        Refused::Admission(Refusal::PerIpRate),
        Refused::Admission(Refusal::HandshakeRate),
        Refused::Admission(Refusal::TooManySources),
        Refused::SocketCap,
        Refused::PoolFull,
        Refused::Evicted,
        Refused::HandshakeFailed,
        Refused::HandshakeTimeout,
        Refused::SetupTimeout,
        Refused::SetupRefused,
        Refused::ChannelRefused,
        Refused::IdleTimeout,
        Refused::NoChannel,
        Refused::ShareFlood,
        Refused::ConnectionFailed,
        Refused::Proxy(ProxyRefusal::Untrusted),
        Refused::Proxy(ProxyRefusal::Missing),
        Refused::Proxy(ProxyRefusal::Malformed),
        Refused::Proxy(ProxyRefusal::Timeout),
    ];

    /// Its place in [`Refused::ALL`] and in a table of counts.
    pub fn index(self) -> usize {
        match self {
            Refused::Admission(r) => match r {
                Refusal::PenaltyBox => 0,
                Refusal::PerIpCap => 1,
                Refusal::PreSetupPerIp => 2,
                Refusal::PreSetupBudget => 3,
                Refusal::PerIpRate => 4,
                Refusal::HandshakeRate => 5,
                Refusal::TooManySources => 6,
            },
            Refused::SocketCap => 7,
            Refused::PoolFull => 8,
            Refused::Evicted => 9,
            Refused::HandshakeFailed => 10,
            Refused::HandshakeTimeout => 11,
            Refused::SetupTimeout => 12,
            Refused::SetupRefused => 13,
            Refused::ChannelRefused => 14,
            Refused::IdleTimeout => 15,
            Refused::NoChannel => 16,
            Refused::ShareFlood => 17,
            Refused::ConnectionFailed => 18,
            Refused::Proxy(r) => match r {
                ProxyRefusal::Untrusted => 19,
                ProxyRefusal::Missing => 20,
                ProxyRefusal::Malformed => 21,
                ProxyRefusal::Timeout => 22,
            },
        }
    }

    /// A short stable name for metric labels (`snake_case`, no spaces).
    pub fn label(self) -> &'static str {
        match self {
            Refused::Admission(r) => match r {
                Refusal::PenaltyBox => "penalty_box",
                Refusal::PerIpCap => "per_ip_cap",
                Refusal::PreSetupPerIp => "pre_setup_per_ip",
                Refusal::PreSetupBudget => "pre_setup_budget",
                Refusal::PerIpRate => "per_ip_rate",
                Refusal::HandshakeRate => "handshake_rate",
                Refusal::TooManySources => "too_many_sources",
            },
            Refused::SocketCap => "socket_cap",
            Refused::PoolFull => "pool_full",
            Refused::Evicted => "evicted",
            Refused::HandshakeFailed => "handshake_failed",
            Refused::HandshakeTimeout => "handshake_timeout",
            Refused::SetupTimeout => "setup_timeout",
            Refused::SetupRefused => "setup_refused",
            Refused::ChannelRefused => "channel_refused",
            Refused::IdleTimeout => "idle_timeout",
            Refused::NoChannel => "no_channel",
            Refused::ShareFlood => "share_flood",
            Refused::ConnectionFailed => "connection_failed",
            Refused::Proxy(r) => match r {
                ProxyRefusal::Untrusted => "proxy_header_untrusted",
                ProxyRefusal::Missing => "proxy_header_missing",
                ProxyRefusal::Malformed => "proxy_header_malformed",
                ProxyRefusal::Timeout => "proxy_header_timeout",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Refused;

    #[test]
    fn every_reason_has_its_own_index_and_label() {
        let mut labels = std::collections::BTreeSet::new();
        for (i, r) in Refused::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(labels.insert(r.label()), "{}", r.label());
        }
    }
}
