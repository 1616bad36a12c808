//! One miner connection of the pool: a [`Connection`] carrying a mining [`Session`], driven
//! by the shell's loop, with the pool's side of it: new work in, session events to [`Shared`],
//! and the connection's accepted-share statistics folded into the pool within
//! [`FOLD_DELAY_MS`] of a share (only when there is one: an idle connection does not wake).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::gate::Gate;
use super::{PendingShares, Shared};
use crate::connection::{Connection, ConnectionConfig, ConnectionError};
use crate::mining::{Session, SessionError, SessionEvent, Work};
use crate::shell::{self, DriverLimits, Handler, Refused};

/// Largest plaintext payload we accept from a miner (the biggest client message,
/// SetCustomMiningJob, is far smaller).
const MAX_CLIENT_PAYLOAD: usize = 1 << 16;
/// Accepted shares reach the pool's statistics this soon.
const FOLD_DELAY_MS: u64 = 500;

/// Why a miner connection ended.
pub type ConnectionEnd = ConnectionError<SessionError>;

/// The pool's side of one miner connection.
struct PoolHandler<'a> {
    id: u64,
    shared: &'a Shared,
    pending: &'a Mutex<PendingShares>,
    /// Reused for every batch of events.
    events: Vec<SessionEvent>,
    /// When accepted shares waiting in `pending` are folded into the pool.
    fold_at: Option<u64>,
}

impl Handler<Session> for PoolHandler<'_> {
    type Update = Option<Arc<Work>>;

    fn on_update(
        &mut self,
        conn: &mut Connection<Session>,
        work: &Option<Arc<Work>>,
        now_ms: u64,
    ) -> Result<(), ConnectionEnd> {
        match work {
            Some(work) => conn.with_protocol(|s| s.on_work(work, now_ms)),
            None => Ok(()),
        }
    }

    async fn on_events(&mut self, conn: &mut Connection<Session>, now_ms: u64) {
        // Blocks first: they are submitted before the share is acknowledged (the session
        // orders its events so).
        self.events.extend(std::iter::from_fn(|| conn.poll_event()));
        if self.events.is_empty() {
            return;
        }
        if self.fold_at.is_none()
            && self
                .events
                .iter()
                .any(|e| matches!(e, SessionEvent::ShareAccepted { .. }))
        {
            self.fold_at = Some(now_ms + FOLD_DELAY_MS);
        }
        self.shared
            .on_session_events(self.id, &mut self.events, now_ms, Some(self.pending));
        self.events.clear();
    }

    fn deadline(&self) -> Option<u64> {
        self.fold_at
    }

    fn on_deadline(&mut self, _now_ms: u64) {
        self.fold_at = None;
        self.shared.fold_pending(self.id, self.pending);
    }
}

/// Serves one accepted socket until it ends; returns why.
pub async fn serve(
    mut stream: TcpStream,
    id: u64,
    shared: Arc<Shared>,
    pending: &Mutex<PendingShares>,
    work: watch::Receiver<Option<Arc<Work>>>,
    shutdown: watch::Receiver<bool>,
) -> ConnectionEnd {
    let cfg = &shared.config;
    let session = Session::new(Arc::new(cfg.mining.clone()), shared.allocator.clone());
    let mut conn = Connection::accept(
        session,
        shared.responder.clone(),
        StdRng::from_rng(rand::thread_rng()).unwrap_or_else(|_| StdRng::from_entropy()),
        ConnectionConfig {
            handshake_timeout_ms: cfg.handshake_timeout_ms,
            setup_timeout_ms: cfg.setup_timeout_ms,
            idle_timeout_ms: Some(cfg.idle_timeout_ms),
            max_payload_len: MAX_CLIENT_PAYLOAD,
        },
        shell::unix_ms(),
    );
    let mut handler = PoolHandler {
        id,
        shared: &shared,
        pending,
        events: Vec::new(),
        fold_at: None,
    };
    shell::drive(
        &mut stream,
        &mut conn,
        &mut handler,
        work,
        shutdown,
        &DriverLimits::default(),
    )
    .await
}

/// Why a connection ended, as a refusal or failure a remote host decided (`None`: it closed,
/// or the pool stopped or evicted it). `set_up`: whether it had completed SetupConnection.
fn ending_reason(end: &ConnectionEnd, set_up_done: bool) -> Option<Refused> {
    Some(match end {
        ConnectionError::Closed | ConnectionError::Shutdown | ConnectionError::Ended => {
            return None;
        }
        ConnectionError::HandshakeTimeout => Refused::HandshakeTimeout,
        ConnectionError::SetupTimeout => Refused::SetupTimeout,
        ConnectionError::Protocol(SessionError::SetupRefused(_)) => Refused::SetupRefused,
        ConnectionError::Noise(_) if !set_up_done => Refused::HandshakeFailed,
        ConnectionError::Idle => Refused::IdleTimeout,
        _ => Refused::ConnectionFailed,
    })
}

/// Whether an ending counts as a failed handshake or setup (towards the source's penalty box).
fn is_handshake_or_setup_failure(reason: Refused) -> bool {
    matches!(
        reason,
        Refused::HandshakeFailed
            | Refused::HandshakeTimeout
            | Refused::SetupTimeout
            | Refused::SetupRefused
    )
}

/// Logs how a connection ended at a level that fits the reason; the endings a remote host
/// decides go through the gate's log budget (the first few per reason and period, then one
/// summary line). Returns whether it failed its handshake or setup.
pub(super) fn log_end(id: u64, peer: SocketAddr, end: &ConnectionEnd, gate: &Gate) -> bool {
    let set_up_done = gate.is_set_up(id);
    let Some(reason) = ending_reason(end, set_up_done) else {
        debug!(conn = id, %peer, "connection closed: {end}");
        return false;
    };
    if gate.count(reason) {
        match reason {
            Refused::SetupRefused | Refused::IdleTimeout => {
                info!(conn = id, %peer, "connection closed: {end}")
            }
            _ => warn!(conn = id, %peer, "connection closed: {end}"),
        }
    }
    is_handshake_or_setup_failure(reason)
}
