//! One miner connection: Noise handshake, then bytes between the socket and the sans-IO
//! [`Session`], plus the timers (handshake, setup, idle) and the outbound bound.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};

use super::{PendingShares, Shared, now_ms};
use crate::mining::{Session, SessionError, SessionEvent, Work};
use crate::noise::{INITIATOR_MESSAGE_LEN, NoiseError, Sender};
use crate::wire::{Frame, MAX_PAYLOAD_LEN, WireError};
use std::sync::Mutex;

/// Largest plaintext payload we accept from a miner (the biggest client message,
/// SetCustomMiningJob, is far smaller).
const MAX_CLIENT_PAYLOAD: usize = 1 << 16;
/// Encrypted bytes we hold for a client that does not read; past this it is disconnected.
const MAX_OUTBOUND: usize = 1 << 20;
/// A write that cannot complete this fast means the client is not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionEnd {
    /// The client closed the socket.
    #[error("closed by the client")]
    Closed,
    /// A socket error.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// SetupConnection did not come in time.
    #[error("setup timed out")]
    SetupTimeout,
    /// Nothing received for the idle timeout.
    #[error("idle timeout")]
    Idle,
    /// Noise failed (bad handshake, MAC failure ...).
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    /// A frame that is not SV2.
    #[error("framing: {0}")]
    Wire(#[from] WireError),
    /// The protocol session ended (reason logged by it).
    #[error("{0}")]
    Session(#[from] SessionError),
    /// The client does not read what we send.
    #[error("client not reading ({0} bytes pending)")]
    SlowReader(usize),
    /// The server is shutting down.
    #[error("server shutting down")]
    Shutdown,
}

/// Encrypts every frame in `plain` (concatenated SV2 frames) into `wire`.
fn encrypt_all(tx: &mut Sender, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), ConnectionEnd> {
    let mut rest = plain;
    while let Some((_, used)) = Frame::parse(rest, MAX_PAYLOAD_LEN)? {
        tx.encrypt_frame(&rest[..used], wire)?;
        rest = &rest[used..];
    }
    Ok(())
}

async fn write_out(stream: &mut TcpStream, wire: &mut Vec<u8>) -> Result<(), ConnectionEnd> {
    if wire.is_empty() {
        return Ok(());
    }
    if wire.len() > MAX_OUTBOUND {
        return Err(ConnectionEnd::SlowReader(wire.len()));
    }
    // Fast path: the socket takes it all at once (the usual case), with no timer set up.
    let sent = match stream.try_write(wire) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e.into()),
    };
    if sent < wire.len() {
        match timeout(WRITE_TIMEOUT, stream.write_all(&wire[sent..])).await {
            Ok(r) => r?,
            Err(_) => return Err(ConnectionEnd::SlowReader(wire.len() - sent)),
        }
    }
    wire.clear();
    Ok(())
}

/// What woke the connection besides its socket and its tick.
enum Control {
    /// The work channel changed (`false`: its sender is gone).
    Work(bool),
    /// The server is shutting down.
    Shutdown,
}

/// Waits for new work or shutdown; owns the receivers so the future lives across turns of the
/// connection loop (rebuilding `changed()` futures every turn registers and unregisters a
/// waiter on a pool-wide lock per share).
/// With `work_open` false (the work sender is gone) it waits for shutdown only.
async fn next_control(
    mut work_rx: watch::Receiver<Option<Arc<Work>>>,
    mut shutdown: watch::Receiver<bool>,
    work_open: bool,
) -> (
    Control,
    watch::Receiver<Option<Arc<Work>>>,
    watch::Receiver<bool>,
) {
    let control = tokio::select! {
        changed = work_rx.changed(), if work_open => Control::Work(changed.is_ok()),
        _ = shutdown.changed() => Control::Shutdown,
    };
    (control, work_rx, shutdown)
}

/// Serves one accepted socket until it ends; returns why.
pub async fn serve(
    mut stream: TcpStream,
    id: u64,
    shared: Arc<Shared>,
    pending: &Mutex<PendingShares>,
    mut work_rx: watch::Receiver<Option<Arc<Work>>>,
    mut shutdown: watch::Receiver<bool>,
) -> ConnectionEnd {
    match serve_inner(
        &mut stream,
        id,
        &shared,
        pending,
        &mut work_rx,
        &mut shutdown,
    )
    .await
    {
        Ok(()) => ConnectionEnd::Closed,
        Err(e) => e,
    }
}

async fn serve_inner(
    stream: &mut TcpStream,
    id: u64,
    shared: &Arc<Shared>,
    pending: &Mutex<PendingShares>,
    work_rx: &mut watch::Receiver<Option<Arc<Work>>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ConnectionEnd> {
    let _ = stream.set_nodelay(true);
    let cfg = &shared.config;
    // Noise act 1 and 2, bounded in time.
    let mut m1 = [0u8; INITIATOR_MESSAGE_LEN];
    let handshake = async {
        stream.read_exact(&mut m1).await?;
        let now = (now_ms() / 1000) as u32;
        let (m2, transport) = shared
            .responder
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .accept(&m1, now, &mut rand::thread_rng())?;
        stream.write_all(&m2).await?;
        Ok::<_, ConnectionEnd>(transport)
    };
    let transport = timeout(Duration::from_millis(cfg.handshake_timeout_ms), handshake)
        .await
        .map_err(|_| ConnectionEnd::HandshakeTimeout)??;
    let (mut tx, mut rx) = transport.into_split();
    rx.set_max_payload_len(MAX_CLIENT_PAYLOAD);

    let mut session = Session::new(Arc::new(cfg.mining.clone()), shared.allocator.clone());
    if let Some(w) = work_rx.borrow_and_update().clone() {
        session.on_work(&w, now_ms());
    }
    let started = Instant::now();
    let mut last_rx = Instant::now();
    // Set by every read, turned into `last_rx` on the tick: one clock read less per share.
    let mut received = false;
    // Small: a share is about 100 bytes on the wire, and memory per connection matters at
    // 10,000 connections; bigger messages just take more reads.
    let mut buf = vec![0u8; 2 * 1024];
    let mut wire = Vec::new();
    let mut events: Vec<SessionEvent> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Work and shutdown: one future kept across turns, re-armed only when it fires.
    let mut control = std::pin::pin!(next_control(work_rx.clone(), shutdown.clone(), true));

    loop {
        let mut result: Result<(), ConnectionEnd> = Ok(());
        let mut now = None;
        tokio::select! {
            // The socket first: under load it is what is ready, and the other branches are
            // then not polled at all. Tokio's cooperative budget still lets them run when a
            // client floods.
            biased;
            r = stream.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Err(ConnectionEnd::Closed);
                }
                received = true;
                rx.feed(&buf[..n]);
                let t = now_ms();
                now = Some(t);
                loop {
                    let frame_bytes = match rx.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => { result = Err(e.into()); break; }
                    };
                    let handled = Frame::parse_exact(frame_bytes)
                        .map_err(ConnectionEnd::from)
                        .and_then(|f| session.handle_frame(&f, t).map_err(ConnectionEnd::from));
                    if let Err(e) = handled {
                        result = Err(e);
                        break;
                    }
                }
            }
            (what, mut w, s) = &mut control => {
                let mut work_open = true;
                match what {
                    Control::Work(ok) => {
                        let latest = w.borrow_and_update().clone();
                        if ok && let Some(latest) = latest {
                            session.on_work(&latest, now_ms());
                        }
                        work_open = ok;
                    }
                    Control::Shutdown => result = Err(ConnectionEnd::Shutdown),
                }
                control.set(next_control(w, s, work_open));
            }
            _ = tick.tick() => {
                if received {
                    received = false;
                    last_rx = Instant::now();
                }
                session.on_tick(now_ms());
                shared.fold_pending(id, pending);
                if !session.is_ready() && started.elapsed() > Duration::from_millis(cfg.setup_timeout_ms) {
                    result = Err(ConnectionEnd::SetupTimeout);
                } else if last_rx.elapsed() > Duration::from_millis(cfg.idle_timeout_ms) {
                    result = Err(ConnectionEnd::Idle);
                }
            }
        }
        // Blocks first: they are submitted before the share is acknowledged.
        events.extend(session.drain_events());
        if !events.is_empty() {
            shared.on_session_events(id, &mut events, now.unwrap_or_else(now_ms), Some(pending));
        }
        let plain = std::mem::take(session.output());
        encrypt_all(&mut tx, &plain, &mut wire)?;
        *session.output() = plain;
        session.output().clear();
        write_out(stream, &mut wire).await?;
        result?;
    }
}

/// Logs how a connection ended at a level that fits the reason.
pub fn log_end(id: u64, peer: &str, end: &ConnectionEnd) {
    match end {
        ConnectionEnd::Closed | ConnectionEnd::Shutdown => {
            debug!(conn = id, %peer, "connection closed: {end}")
        }
        ConnectionEnd::Session(SessionError::SetupRefused(_)) | ConnectionEnd::Idle => {
            info!(conn = id, %peer, "connection closed: {end}")
        }
        _ => warn!(conn = id, %peer, "connection closed: {end}"),
    }
}
