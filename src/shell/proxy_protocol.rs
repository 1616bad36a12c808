//! The PROXY protocol at the listener: which peers are trusted load balancers
//! (`proxy_protocol_from`, CIDRs), reading a trusted peer's header before anything else
//! (bounded in size by [`proxy_header`], in time by the caller), and
//! looking at an untrusted peer's first bytes without consuming them, so that a PROXY header
//! from anyone else is refused rather than taken for a miner's handshake.
//!
//! Every connection from a trusted address must start with a header: a load balancer's
//! address then never stands for a miner (no miner is admitted, limited or logged as it), and
//! a host in a trusted range connecting directly is refused.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::proxy_header::{self, FIXED_LEN, MAX_PAYLOAD, ProxyHeader, ProxyHeaderError, Sniff};

/// The load balancers whose PROXY headers are believed (empty: the PROXY protocol is off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts the addresses in `nets`.
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    /// Whether no address is trusted (the PROXY protocol is off).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The trusted ranges.
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    /// Whether `ip` is a trusted load balancer (an IPv4-mapped IPv6 peer, as a dual-stack
    /// listener sees IPv4, counts as its IPv4 address).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Why reading a trusted peer's header ended without one.
#[derive(Debug, thiserror::Error)]
pub enum HeaderReadError {
    /// The peer closed before sending a byte (a plain TCP health check): nothing to refuse.
    #[error("closed before any byte")]
    Closed,
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a header we accept.
    #[error(transparent)]
    Header(#[from] ProxyHeaderError),
}

/// Reads a trusted peer's PROXY v2 header, exactly (never a byte of what follows): the fixed
/// part, then the length it announces if within bounds. Bytes that cannot start a header are
/// refused as soon as they arrive. Unbounded in time: the caller puts it under a deadline.
pub async fn read_header(stream: &mut TcpStream) -> Result<ProxyHeader, HeaderReadError> {
    let mut buf = [0u8; FIXED_LEN + MAX_PAYLOAD];
    let mut got = 0;
    while got < FIXED_LEN {
        let n = stream.read(&mut buf[got..FIXED_LEN]).await?;
        if n == 0 {
            if got == 0 {
                return Err(HeaderReadError::Closed);
            }
            return Err(ProxyHeaderError::Truncated(got).into());
        }
        got += n;
        if proxy_header::sniff(&buf[..got]) == Sniff::Other {
            return Err(ProxyHeaderError::Missing.into());
        }
    }
    let fixed: &[u8; FIXED_LEN] = buf.first_chunk().ok_or(ProxyHeaderError::Missing)?;
    let len = proxy_header::payload_len(fixed)?;
    let whole = FIXED_LEN + len;
    while got < whole {
        let n = stream.read(&mut buf[got..whole]).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Truncated(got).into());
        }
        got += n;
    }
    Ok(proxy_header::parse(&buf[..whole])?)
}

/// Whether an untrusted peer's first bytes are a PROXY header (v2 signature or v1 prefix),
/// looked at without consuming them. Waits for the peer's first bytes (miners speak first in
/// both protocols); `false` once they are something else or the peer closed. Unbounded in
/// time: the caller puts it under a deadline.
pub async fn starts_with_header(stream: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; 12];
    let mut seen = 0;
    let mut pause = FIRST_PEEK_PAUSE;
    loop {
        let n = stream.peek(&mut first).await?;
        match proxy_header::sniff(&first[..n]) {
            Sniff::Header => return Ok(true),
            Sniff::Other => return Ok(false),
            Sniff::NeedMore if n == 0 => return Ok(false),
            // A prefix of a signature and nothing more yet: peek again after a pause (the
            // socket stays readable with the same bytes, so waiting on it would spin), each
            // pause twice the last while nothing comes: a peer that sends `\r` and stops costs
            // a dozen wake-ups before its deadline, not one every 10 ms.
            Sniff::NeedMore => {
                if n == seen {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LAST_PEEK_PAUSE);
                }
                seen = n;
            }
        }
    }
}

/// [`starts_with_header`]'s first pause before looking again at a signature's prefix.
const FIRST_PEEK_PAUSE: Duration = Duration::from_millis(10);
/// Its longest pause.
const LAST_PEEK_PAUSE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    /// A signature's prefix, then a pause, then the rest: still found (the pauses between
    /// looks grow, they do not give up); a prefix followed by other bytes is not a header.
    #[tokio::test]
    async fn a_header_in_pieces_is_found_after_pauses() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (rest, header) in [(&b"\n\r\n\0\r\nQUIT\n"[..], true), (&b"\nGET /"[..], false)] {
            let mut peer = TcpStream::connect(addr).await.unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            peer.write_all(b"\r").await.unwrap();
            let sniffing = tokio::spawn(async move { starts_with_header(&stream).await });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!sniffing.is_finished());
            peer.write_all(rest).await.unwrap();
            let found = tokio::time::timeout(Duration::from_secs(5), sniffing)
                .await
                .expect("looked again within its longest pause")
                .unwrap()
                .unwrap();
            assert_eq!(found, header);
        }
    }

    #[test]
    fn trusted_ranges_contain_their_addresses_and_mapped_ones() {
        let t = TrustedProxies::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(t.trusts("127.0.0.1".parse().unwrap()));
        assert!(!t.trusts("127.0.0.2".parse().unwrap()));
        assert!(t.trusts("10.1.200.3".parse().unwrap()));
        assert!(!t.trusts("10.2.0.1".parse().unwrap()));
        assert!(t.trusts("::1".parse().unwrap()));
        assert!(t.trusts("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!TrustedProxies::default().trusts("127.0.0.1".parse().unwrap()));
    }
}
