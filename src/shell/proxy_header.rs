//! The PROXY protocol v2 header a trusted load balancer (HAProxy's `send-proxy-v2`) puts
//! before a miner's first byte: the address the miner really connected from, or, with the
//! LOCAL command, a health check of the load balancer's own (`check-send-proxy`). Without it
//! every miner behind the balancer would share its address, and the per-source limits, the
//! logs and the API would see one host.
//!
//! Sans-IO: bytes in, a verdict out; the shell reads the bytes (`proxy_protocol`). The header
//! itself is parsed by the `ppp` crate; what is ours is the bounds (the 16-byte fixed part is
//! read first, then its announced length, refused past [`MAX_PAYLOAD`] before a byte of it is
//! read), what is accepted (version 2; PROXY over TCP on IPv4 or IPv6; LOCAL with anything),
//! every TLV well formed, and the typed errors. Version 1 (text) headers are recognised so
//! that they can be refused by name, never parsed.

use std::net::{IpAddr, SocketAddr};

/// The v2 signature: the header's first 12 bytes.
pub const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// How a v1 (text) header starts.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The fixed part: the signature, version and command, family and protocol, and the length
/// of what follows.
pub const FIXED_LEN: usize = 16;
/// The address block and TLVs at most (bytes after the fixed part). IPv6 addresses take 36;
/// HAProxy's TLVs when enabled (ALPN, authority, a unique id of up to 128 bytes, the SSL
/// block, a CRC) fit in the rest. A longer header is refused before it is read.
pub const MAX_PAYLOAD: usize = 512;

/// What a valid header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied connection: the miner's address and port as the load balancer saw them.
    Proxied(SocketAddr),
    /// The load balancer's own connection (a health check): no miner behind it.
    Local,
}

/// Why the bytes a trusted load balancer sent are not a header we accept.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The first bytes are not a PROXY header at all (a miner connecting directly).
    #[error("no PROXY protocol header")]
    Missing,
    /// A version 1 (text) header.
    #[error("a PROXY protocol v1 (text) header; only v2 is accepted (HAProxy: send-proxy-v2)")]
    Version1,
    /// The connection ended inside the header.
    #[error("truncated PROXY header: {0} bytes")]
    Truncated(usize),
    /// The version nibble is not 2.
    #[error("PROXY protocol version {0} (only 2 is accepted)")]
    Version(u8),
    /// Neither LOCAL nor PROXY.
    #[error("unknown PROXY command {0:#x}")]
    Command(u8),
    /// More than [`MAX_PAYLOAD`] bytes of addresses and TLVs announced.
    #[error("PROXY header announces {0} bytes of addresses and TLVs (at most {MAX_PAYLOAD})")]
    TooLong(usize),
    /// A PROXY command whose addresses are not TCP over IPv4 or IPv6 (UNSPEC, unix, UDP).
    #[error("PROXY header for family and protocol {0:#04x}: only TCP over IPv4 or IPv6")]
    Family(u8),
    /// Malformed by `ppp`'s parser (addresses shorter than their family, a TLV past the end).
    #[error("malformed PROXY header: {0}")]
    Malformed(#[from] ppp::v2::ParseError),
}

/// Which refusal (counted, in the refusal statistics) a connection from a load balancer or
/// with a PROXY header ends as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum ProxyRefusal {
    /// A PROXY header from an address not in `proxy_protocol_from` (not interpreted).
    #[error("PROXY header from an untrusted address")]
    Untrusted,
    /// A trusted address that sent no PROXY header.
    #[error("no PROXY header from a trusted address")]
    Missing,
    /// A trusted address whose PROXY header is not accepted.
    #[error("malformed PROXY header")]
    Malformed,
    /// A trusted address whose header did not come in time.
    #[error("PROXY header timeout")]
    Timeout,
}

impl ProxyHeaderError {
    /// The refusal it counts as.
    pub fn refusal(&self) -> ProxyRefusal {
        match self {
            ProxyHeaderError::Missing => ProxyRefusal::Missing,
            _ => ProxyRefusal::Malformed,
        }
    }
}

/// What a connection's first bytes say about a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// A v2 signature or a v1 prefix.
    Header,
    /// Something else (a Noise handshake, a JSON line).
    Other,
    /// Too few bytes to tell.
    NeedMore,
}

/// Whether `first` (a connection's first bytes, any number) starts a PROXY header.
pub fn sniff(first: &[u8]) -> Sniff {
    let starts = |prefix: &[u8]| {
        let n = first.len().min(prefix.len());
        first[..n] == prefix[..n]
    };
    if first.starts_with(SIGNATURE) || first.starts_with(V1_PREFIX) {
        Sniff::Header
    } else if (first.len() < SIGNATURE.len() && starts(SIGNATURE))
        || (first.len() < V1_PREFIX.len() && starts(V1_PREFIX))
    {
        Sniff::NeedMore
    } else {
        Sniff::Other
    }
}

/// From the fixed part: how many bytes follow it (checked against [`MAX_PAYLOAD`]), or why
/// this is not a header we accept.
pub fn payload_len(fixed: &[u8; FIXED_LEN]) -> Result<usize, ProxyHeaderError> {
    match sniff(fixed) {
        Sniff::Header if fixed.starts_with(V1_PREFIX) => return Err(ProxyHeaderError::Version1),
        Sniff::Header => {}
        Sniff::Other | Sniff::NeedMore => return Err(ProxyHeaderError::Missing),
    }
    let version = fixed[12] >> 4;
    if version != 2 {
        return Err(ProxyHeaderError::Version(version));
    }
    let command = fixed[12] & 0x0f;
    if command > 1 {
        return Err(ProxyHeaderError::Command(command));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_PAYLOAD {
        return Err(ProxyHeaderError::TooLong(len));
    }
    Ok(len)
}

/// A whole header (the fixed part and exactly the length it announces) as what it says.
pub fn parse(header: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let Some(fixed) = header.first_chunk::<FIXED_LEN>() else {
        return Err(match sniff(header) {
            Sniff::Other => ProxyHeaderError::Missing,
            _ => ProxyHeaderError::Truncated(header.len()),
        });
    };
    let len = payload_len(fixed)?;
    if header.len() < FIXED_LEN + len {
        return Err(ProxyHeaderError::Truncated(header.len()));
    }
    let parsed = ppp::v2::Header::try_from(&header[..FIXED_LEN + len])?;
    for tlv in parsed.tlvs() {
        tlv?;
    }
    match parsed.command {
        ppp::v2::Command::Local => Ok(ProxyHeader::Local),
        ppp::v2::Command::Proxy => {
            let family = fixed[13];
            if parsed.protocol != ppp::v2::Protocol::Stream {
                return Err(ProxyHeaderError::Family(family));
            }
            let (ip, port) = match parsed.addresses {
                ppp::v2::Addresses::IPv4(a) => (IpAddr::V4(a.source_address), a.source_port),
                ppp::v2::Addresses::IPv6(a) => (IpAddr::V6(a.source_address), a.source_port),
                _ => return Err(ProxyHeaderError::Family(family)),
            };
            // An IPv4 client of a dual-stack balancer is counted as its IPv4 address.
            Ok(ProxyHeader::Proxied(SocketAddr::new(
                ip.to_canonical(),
                port,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, IPv4, IPv6, Protocol, Type, Version};

    fn proxied_v4() -> Vec<u8> {
        Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            IPv4::new([198, 51, 100, 7], [10, 0, 0, 1], 40_000, 3333),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn a_proxied_ipv4_and_ipv6_connection_gives_the_clients_address() {
        assert_eq!(
            parse(&proxied_v4()),
            Ok(ProxyHeader::Proxied("198.51.100.7:40000".parse().unwrap()))
        );
        let v6 = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            IPv6::new(
                "2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap(),
                "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap(),
                5,
                3334,
            ),
        )
        .write_tlv(Type::Authority, b"pool.example")
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(
            parse(&v6),
            Ok(ProxyHeader::Proxied("[2001:db8::7]:5".parse().unwrap()))
        );
        let mapped = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            IPv6::new(
                "::ffff:203.0.113.9".parse::<std::net::Ipv6Addr>().unwrap(),
                "::1".parse::<std::net::Ipv6Addr>().unwrap(),
                6,
                3333,
            ),
        )
        .build()
        .unwrap();
        assert_eq!(
            parse(&mapped),
            Ok(ProxyHeader::Proxied("203.0.113.9:6".parse().unwrap()))
        );
    }

    #[test]
    fn local_is_a_health_check_whatever_its_addresses() {
        let local = Builder::new(Version::Two | Command::Local, 0x00)
            .build()
            .unwrap();
        assert_eq!(local.len(), FIXED_LEN);
        assert_eq!(parse(&local), Ok(ProxyHeader::Local));
        let local_v4 = Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Stream,
            IPv4::new([127, 0, 0, 1], [127, 0, 0, 1], 1, 2),
        )
        .build()
        .unwrap();
        assert_eq!(parse(&local_v4), Ok(ProxyHeader::Local));
    }

    #[test]
    fn truncated_headers_are_refused() {
        let full = proxied_v4();
        for n in 0..full.len() {
            match parse(&full[..n]) {
                Err(ProxyHeaderError::Truncated(m)) => assert_eq!(m, n),
                other => panic!("{n} bytes: {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_version_and_command_are_refused() {
        let mut h = proxied_v4();
        h[12] = 0x11;
        assert_eq!(parse(&h), Err(ProxyHeaderError::Version(1)));
        h[12] = 0x31;
        assert_eq!(parse(&h), Err(ProxyHeaderError::Version(3)));
        h[12] = 0x22;
        assert_eq!(parse(&h), Err(ProxyHeaderError::Command(2)));
        assert_eq!(
            parse(b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 3333\r\n"),
            Err(ProxyHeaderError::Version1)
        );
    }

    #[test]
    fn unknown_or_unusable_families_are_refused() {
        let mut h = proxied_v4();
        h[13] = 0x41;
        assert!(matches!(parse(&h), Err(ProxyHeaderError::Malformed(_))));
        h[13] = 0x12; // UDP over IPv4
        assert_eq!(parse(&h), Err(ProxyHeaderError::Family(0x12)));
        let unspec = Builder::new(Version::Two | Command::Proxy, 0x00)
            .build()
            .unwrap();
        assert_eq!(parse(&unspec), Err(ProxyHeaderError::Family(0x00)));
        // IPv4 announced with fewer bytes than its 12 of addresses.
        let mut short = proxied_v4();
        short[15] = 8;
        short.truncate(FIXED_LEN + 8);
        assert!(matches!(parse(&short), Err(ProxyHeaderError::Malformed(_))));
    }

    #[test]
    fn oversize_and_overrunning_tlvs_are_refused() {
        let big = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            IPv4::new([198, 51, 100, 7], [10, 0, 0, 1], 1, 2),
        )
        .write_tlv(Type::NoOp, &[0u8; MAX_PAYLOAD])
        .unwrap()
        .build()
        .unwrap();
        let fixed: &[u8; FIXED_LEN] = big.first_chunk().unwrap();
        assert_eq!(
            payload_len(fixed),
            Err(ProxyHeaderError::TooLong(12 + 3 + MAX_PAYLOAD)),
            "refused from its fixed part, before the rest is read"
        );
        // A TLV announcing more bytes than the header holds.
        let mut overrun = proxied_v4();
        overrun.extend_from_slice(&[0x04, 0x00, 0x09, 1, 2]);
        let len = (overrun.len() - FIXED_LEN) as u16;
        overrun[14..16].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            parse(&overrun),
            Err(ProxyHeaderError::Malformed(
                ppp::v2::ParseError::InvalidTLV(4, 9)
            ))
        ));
    }

    #[test]
    fn sniffing_tells_a_header_from_a_miner_early() {
        assert_eq!(sniff(b""), Sniff::NeedMore);
        assert_eq!(sniff(&SIGNATURE[..5]), Sniff::NeedMore);
        assert_eq!(sniff(SIGNATURE), Sniff::Header);
        assert_eq!(sniff(b"PROX"), Sniff::NeedMore);
        assert_eq!(sniff(b"PROXY TCP4"), Sniff::Header);
        assert_eq!(sniff(b"{\"id\":1"), Sniff::Other);
        assert_eq!(sniff(b"\r\n\r\nX"), Sniff::Other);
        assert_eq!(
            parse(b"{\"id\":1,\"method\":\"mining.subscribe\"}"),
            Err(ProxyHeaderError::Missing)
        );
    }
}
