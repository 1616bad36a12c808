//! Accepting connections: the listening socket (with an explicit backlog), the open-files
//! limit, a cap on live connections, and draining them at shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::warn;

/// A listening socket on `addr` with an explicit accept backlog (a burst of connects is queued,
/// not dropped); on failure, the step that failed ("socket", "bind", "listen") and why.
pub fn listen(
    addr: SocketAddr,
    backlog: u32,
) -> Result<TcpListener, (&'static str, std::io::Error)> {
    bind(addr)?.listen(backlog).map_err(|e| ("listen", e))
}

/// A socket bound to `addr` that does not listen yet: its port is taken (a port in use fails
/// here, and an ephemeral port is known), but connections to it are refused until
/// [`TcpSocket::listen`], so that a load balancer's health check fails while the pool cannot
/// serve miners yet (no node, no work).
pub fn bind(addr: SocketAddr) -> Result<TcpSocket, (&'static str, std::io::Error)> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| ("socket", e))?;
    let _ = socket.set_reuseaddr(true);
    socket.bind(addr).map_err(|e| ("bind", e))?;
    Ok(socket)
}

/// Raises the soft open-files limit towards `wanted` (up to the hard limit); returns the soft
/// limit in force afterwards.
pub fn raise_nofile_limit(wanted: u64) -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let current: u64 = lim.rlim_cur;
    if current >= wanted {
        return Ok(current);
    }
    let max: u64 = lim.rlim_max;
    let target = wanted.min(max);
    if target > current {
        lim.rlim_cur = target;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok(target);
    }
    Ok(current)
}

/// How a listener admits and lets go of connections.
#[derive(Debug, Clone, Copy)]
pub struct ListenerConfig {
    /// Live connections at most; more are refused (closed at once).
    pub max_connections: usize,
    /// How long shutdown waits for connections to close before aborting them.
    pub shutdown_grace: Duration,
}

/// Accepts until `shutdown`, running `serve(stream, peer, permit)` as one task per connection;
/// the task holds `permit` (its place under the connection cap) until it ends. Then stops
/// accepting and drains the connections (they see the same shutdown signal), aborting those
/// still open after the grace period.
///
/// The permit goes into `serve`'s future rather than into a wrapper around it: an `async`
/// block that holds a future and awaits it keeps two copies of its state, which doubled a
/// pool connection's task (2,992 to 6,016 bytes, about 2 KiB more per idle connection).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    config: ListenerConfig,
    shutdown: watch::Receiver<bool>,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let max = config.max_connections;
    accept_loop_admitting(
        listener,
        config,
        shutdown,
        |peer| warn!(%peer, max, "connection limit reached; refusing"),
        |stream, peer, permit| Some(serve(stream, peer, permit)),
    )
    .await
}

/// [`accept_loop`] with admission in the caller's hands: `serve` may refuse a connection
/// (returns `None`: the socket is closed at once, no task is spawned, no byte is read, so no
/// handshake is started), and a connection over the cap goes to `over_cap` (to count and log
/// as the caller logs refusals) instead of a line per refusal.
pub async fn accept_loop_admitting<F, Fut, O>(
    listener: TcpListener,
    config: ListenerConfig,
    mut shutdown: watch::Receiver<bool>,
    mut over_cap: O,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Option<Fut>,
    Fut: Future<Output = ()> + Send + 'static,
    O: FnMut(SocketAddr),
{
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    over_cap(peer);
                    drop(stream);
                    continue;
                };
                if let Some(conn) = serve(stream, peer, permit) {
                    conns.spawn(conn);
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(config.shutdown_grace, drain)
        .await
        .is_err()
    {
        warn!("connections did not close in time; aborting them");
        conns.abort_all();
    }
}
