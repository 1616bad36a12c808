//! Who a miner connection is, behind a load balancer or not (issue 18): the address the
//! gate admits, the logs print and the API shows. A peer outside `proxy_protocol_from` is
//! admitted as itself at accept (no byte read), then refused if its first bytes are a PROXY
//! header (counted, not interpreted; towards its penalty box). A trusted load balancer's
//! connection is read first: its PROXY v2 header's source address is admitted (per-source
//! caps, rates and the penalty box apply to the miner, never to the balancer), a LOCAL header
//! is a health check (closed quietly, counted apart, no penalty), anything else is refused and
//! counted. Both within the handshake timeout from accept.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::debug;

use super::{Shared, now_ms};
use crate::shell::proxy_protocol::{self, HeaderReadError};
use crate::shell::{ProxyHeader, ProxyRefusal, Refused};

/// How a connection came in, decided at accept.
pub(super) enum Arrival {
    /// An untrusted peer, already admitted as itself (its stop signal).
    Direct(watch::Receiver<bool>),
    /// A trusted load balancer's connection: admitted once its header names the miner.
    FromBalancer,
}

/// The admitted connection's peer (the miner's address) and stop signal; `None`: it was
/// refused or was a health check (counted here; the caller closes the socket and, for a
/// [`Arrival::Direct`] one, has been told of its end through the gate).
pub(super) async fn enter(
    stream: &mut TcpStream,
    id: u64,
    peer: SocketAddr,
    arrival: Arrival,
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
    accepted_ms: u64,
) -> Option<(SocketAddr, watch::Receiver<bool>)> {
    let within = Duration::from_millis(
        (accepted_ms + shared.config.handshake_timeout_ms).saturating_sub(now_ms()),
    );
    match arrival {
        Arrival::Direct(stop) => {
            // A clone: the driver must still see the stop signal change.
            let mut stopped = stop.clone();
            let sniffed = tokio::select! {
                r = tokio::time::timeout(within, proxy_protocol::starts_with_header(stream)) => r,
                _ = stopped.changed() => return Some((peer, stop)),
            };
            // A timeout or a socket error: the connection's own timers and reads end it.
            if let Ok(Ok(true)) = sniffed {
                shared
                    .gate
                    .refused(Refused::Proxy(ProxyRefusal::Untrusted), peer);
                shared.gate.on_end(id, true, now_ms());
                return None;
            }
            Some((peer, stop))
        }
        Arrival::FromBalancer => {
            let read = tokio::select! {
                r = tokio::time::timeout(within, proxy_protocol::read_header(stream)) => r,
                _ = shutdown.changed() => return None,
            };
            let refusal = match read {
                Ok(Ok(ProxyHeader::Proxied(miner))) => {
                    let stop = shared.gate.admit(id, miner, now_ms())?;
                    debug!(conn = id, %peer, %miner, "proxied connection accepted");
                    return Some((miner, stop));
                }
                Ok(Ok(ProxyHeader::Local)) => {
                    shared.gate.health_check();
                    return None;
                }
                Ok(Err(HeaderReadError::Closed)) => return None,
                Ok(Err(HeaderReadError::Io(e))) => {
                    debug!(conn = id, %peer, "load balancer connection failed: {e}");
                    return None;
                }
                Ok(Err(HeaderReadError::Header(e))) => {
                    debug!(conn = id, %peer, "refused: {e}");
                    e.refusal()
                }
                Err(_) => ProxyRefusal::Timeout,
            };
            shared.gate.refused(Refused::Proxy(refusal), peer);
            None
        }
    }
}
