//! One miner connection of the pool: a [`Connection`] carrying a mining [`Session`], driven
//! by the shell's loop, with the pool's side of it: new work in, session events to [`Shared`],
//! and the connection's accepted-share statistics folded into the pool within
//! [`FOLD_DELAY_MS`] of a share (only when there is one: an idle connection does not wake).
//! With a share ledger, accepted and rejected shares and found blocks go to its writer; the
//! acknowledgements, encrypted at once behind their holds, wait in the connection's
//! [`HeldOutput`], which the writer's commits release to the socket without waking the
//! connection (`server::held_output`).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::gate::Gate;
use super::held_output::{DEFAULT_HOLD_LIMIT_SECS, HeldOutput};
use super::ledger_writer::{self, LedgerSender};
use super::{PendingShares, Shared};
use crate::connection::{Connection, ConnectionConfig, ConnectionError, Protocol};
use crate::mining::{MiningConfig, Session, SessionError, SessionEvent, Work};
use crate::noise::NoiseError;
use crate::shell::{self, DriverLimits, Handler, Refused};

/// A STR0_255 or B0_255 at its longest: a length byte and 255 bytes.
const STR0_255_MAX: usize = 1 + 255;
/// SetupConnection (03 §3.6.1): protocol U8, min and max version U16, flags U32,
/// endpoint_host STR0_255, endpoint_port U16, vendor, hardware_version, firmware and device_id
/// STR0_255: 1,291 bytes.
const SETUP_CONNECTION_MAX: usize = 1 + 2 + 2 + 4 + STR0_255_MAX + 2 + 4 * STR0_255_MAX;
/// OpenExtendedMiningChannel (05 §5.3.4): request_id U32, user_identity STR0_255,
/// nominal_hash_rate F32, max_target U256, min_extranonce_size U16: 298 bytes (the standard
/// one is 2 shorter).
const OPEN_EXTENDED_CHANNEL_MAX: usize = 4 + STR0_255_MAX + 4 + 32 + 2;
/// SubmitSharesExtended (05 §5.3.14): six U32, extranonce B0_32; plus the user_identity TLV
/// of extension 0x0002 (type 3 bytes, length U16, at most 32 bytes): 94 bytes.
const SUBMIT_SHARES_EXTENDED_MAX: usize = 6 * 4 + (1 + 32) + (3 + 2 + 32);
/// CloseChannel: channel_id U32, reason_code STR0_255: 260 bytes.
const CLOSE_CHANNEL_MAX: usize = 4 + STR0_255_MAX;

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// Largest plaintext payload we accept from a miner: the largest message a miner may send
/// this pool, SetupConnection at 1,291 bytes (UpdateChannel is 40, RequestExtensions with
/// up to 643 extension types fits). SetCustomMiningJob (up to ~74 KB with its B0_64K
/// coinbase outputs) is not served here (no job declaration): one that fits is refused with
/// `jd-not-supported`, a larger one ends the connection as too large. Was 64 KiB, which let
/// one ignored frame pin about 140 KB per connection.
pub const MAX_CLIENT_PAYLOAD: usize = max(
    max(SETUP_CONNECTION_MAX, OPEN_EXTENDED_CHANNEL_MAX),
    max(SUBMIT_SHARES_EXTENDED_MAX, CLOSE_CHANNEL_MAX),
);
/// Accepted and refused shares reach the pool's statistics this soon.
const FOLD_DELAY_MS: u64 = 500;

/// Why a miner connection ended.
pub type ConnectionEnd = ConnectionError<SessionError>;

/// What the pool's side of a connection needs of the miner protocol it carries: SV2's
/// [`Session`], or SV1's session (`crate::sv1::Sv1Session`, an SV2 session underneath).
pub(super) trait MinerProtocol: Protocol<Event = SessionEvent> {
    /// New work from the pool.
    fn on_work(&mut self, work: &Arc<Work>, now_ms: u64) -> Result<(), Self::Error>;
}

impl MinerProtocol for Session {
    fn on_work(&mut self, work: &Arc<Work>, now_ms: u64) -> Result<(), SessionError> {
        Session::on_work(self, work, now_ms);
        Ok(())
    }
}

/// The pool's side of one miner connection.
pub(super) struct PoolHandler<'a> {
    id: u64,
    shared: &'a Shared,
    pending: &'a Mutex<PendingShares>,
    /// Reused for every batch of events.
    events: Vec<SessionEvent>,
    /// When accepted shares waiting in `pending` are folded into the pool.
    fold_at: Option<u64>,
    /// The share ledger's writer and this connection's output waiting for its commits, if
    /// there is a ledger.
    ledger: Option<(&'a LedgerSender, Arc<HeldOutput>)>,
    /// When to check that held output is not waiting past `hold_limit` (ms).
    hold_check_at: Option<u64>,
    /// How long output may wait for the ledger before the connection is closed.
    hold_limit: Duration,
}

impl PoolHandler<'_> {
    /// Hands the batch's accepted and rejected shares and found blocks to the ledger's writer.
    fn record(&self, now_ms: u64) {
        let Some((ledger, signal)) = &self.ledger else {
            return;
        };
        for e in &self.events {
            let Some(message) = ledger_writer::ledger_message(e, signal, self.id, now_ms) else {
                continue;
            };
            if !ledger.send(message) {
                warn!(conn = self.id, "the share ledger's writer is gone");
                return;
            }
        }
    }
}

impl<'a> PoolHandler<'a> {
    /// The handler of connection `id`.
    pub(super) fn new(id: u64, shared: &'a Shared, pending: &'a Mutex<PendingShares>) -> Self {
        PoolHandler {
            id,
            shared,
            pending,
            events: Vec::new(),
            fold_at: None,
            hold_check_at: None,
            hold_limit: shared
                .config
                .ledger
                .as_ref()
                .map_or(Duration::from_secs(DEFAULT_HOLD_LIMIT_SECS), |l| {
                    l.hold_limit
                }),
            ledger: shared
                .ledger
                .as_ref()
                .map(|ledger| (ledger, HeldOutput::new(shared.observe.ack_latency.clone()))),
        }
    }

    /// Released acknowledgements are written to `socket`, which stays open until this
    /// handler is dropped.
    pub(super) fn attach(&self, socket: &tokio::net::TcpStream) {
        if let Some((_, held)) = &self.ledger {
            held.attach(socket.as_raw_fd());
        }
    }
}

/// How long an ending connection waits for what it queued behind held acknowledgements (the
/// refusal that ended it, say) to be released by the ledger's next commit and written.
const SETTLE_LIMIT: Duration = Duration::from_secs(1);

impl PoolHandler<'_> {
    /// The connection has ended (`end`): what it queued behind held acknowledgements goes
    /// out with the ledger's next commit, if that comes within [`SETTLE_LIMIT`]. Not when the
    /// ledger cannot write (nothing would be released; the miner's unread shares would only
    /// turn the close into a reset).
    pub(super) async fn settle<E: std::error::Error>(&self, end: &ConnectionError<E>) {
        if let Some((ledger, held)) = &self.ledger
            && ledger.status().is_available()
            && !matches!(end, ConnectionError::OutputHeld(_))
        {
            held.settle(SETTLE_LIMIT).await;
        }
    }
}

/// The socket closes after its handler: held output is never written to it after that.
impl Drop for PoolHandler<'_> {
    fn drop(&mut self) {
        if let Some((_, held)) = &self.ledger {
            held.detach();
        }
    }
}

impl<P: MinerProtocol + Send> Handler<P> for PoolHandler<'_> {
    type Update = Option<Arc<Work>>;

    fn drains_on_stop(&self) -> bool {
        self.shared.gate.is_shutting_down()
    }

    fn on_update(
        &mut self,
        conn: &mut Connection<P>,
        work: &Option<Arc<Work>>,
        now_ms: u64,
    ) -> Result<(), ConnectionError<P::Error>> {
        match work {
            Some(work) => conn
                .with_protocol(|s| s.on_work(work, now_ms))?
                .map_err(ConnectionError::Protocol),
            None => Ok(()),
        }
    }

    async fn on_events(&mut self, conn: &mut Connection<P>, now_ms: u64) {
        // Blocks first: they are submitted before the share is acknowledged (the session
        // orders its events so).
        self.events.extend(std::iter::from_fn(|| conn.poll_event()));
        if self.events.is_empty() {
            return;
        }
        self.record(now_ms);
        if self.fold_at.is_none()
            && self.events.iter().any(|e| {
                matches!(
                    e,
                    SessionEvent::ShareAccepted { .. } | SessionEvent::ShareRejected { .. }
                )
            })
        {
            self.fold_at = Some(now_ms + FOLD_DELAY_MS);
        }
        self.shared
            .on_session_events(self.id, &mut self.events, now_ms, Some(self.pending));
        self.events.clear();
    }

    fn deadline(&self) -> Option<u64> {
        match (self.fold_at, self.hold_check_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_deadline(&mut self, now_ms: u64) -> Result<(), ConnectionError<P::Error>> {
        if self.fold_at.is_some_and(|at| at <= now_ms) {
            self.fold_at = None;
            self.shared.fold_pending(self.id, self.pending);
        }
        if self.hold_check_at.is_some_and(|at| at <= now_ms) {
            self.hold_check_at = None;
            if let Some((_, held)) = &self.ledger
                && let Some(since) = held.oldest_hold()
            {
                let waited = since.elapsed();
                if waited >= self.hold_limit {
                    return Err(ConnectionError::OutputHeld(waited));
                }
                let left = self.hold_limit - waited;
                self.hold_check_at = Some(now_ms + left.as_millis() as u64 + 1);
            }
        }
        Ok(())
    }

    /// Held acknowledgements wait in the [`HeldOutput`]; released ones the socket did not
    /// take at once come back to be written here.
    fn route_output(
        &mut self,
        conn: &mut Connection<P>,
        max_outbound: usize,
    ) -> Result<(), ConnectionError<P::Error>> {
        let Some((_, held)) = &self.ledger else {
            return Ok(());
        };
        if self.hold_check_at.is_none() && !conn.transmit_holds().is_empty() {
            self.hold_check_at = Some(crate::shell::unix_ms() + self.hold_limit.as_millis() as u64);
        }
        held.route(conn, max_outbound)
    }

    /// Wakes the loop when released acknowledgements are its to write (the socket did not
    /// take them from the ledger's writer at once).
    fn waker(&self) -> Option<Arc<crate::shell::Wake>> {
        self.ledger.as_ref().map(|(_, held)| held.wake().clone())
    }
}

/// A miner session's configuration: the pool's, with acknowledgements waiting for the share
/// ledger's commits when there is one (durable mode) and the node's network for payout
/// addresses. SV2 and SV1 sessions alike.
pub(super) fn session_config(shared: &Shared) -> Arc<MiningConfig> {
    let mut mining = shared.config.mining.clone();
    mining.durable_acks = shared.ledger.is_some();
    mining.payout_network = shared.payout_network.get().copied();
    Arc::new(mining)
}

/// A miner's socket as the listener hands it over, SV2 or SV1 alike.
pub struct Accepted<'a> {
    /// The socket (past any PROXY header).
    pub stream: TcpStream,
    /// Bytes already read from it (to tell its protocol on a port for both).
    pub first: &'a [u8],
    /// When it was accepted (ms): the handshake's or setup's time counts from then, a PROXY
    /// header's read included.
    pub accepted_ms: u64,
}

/// Serves one accepted socket until it ends; returns why.
pub async fn serve(
    socket: Accepted<'_>,
    id: u64,
    shared: Arc<Shared>,
    pending: &Mutex<PendingShares>,
    work: watch::Receiver<Option<Arc<Work>>>,
    shutdown: watch::Receiver<bool>,
) -> ConnectionEnd {
    let Accepted {
        mut stream,
        first,
        accepted_ms,
    } = socket;
    let cfg = &shared.config;
    let mut session = Session::new(session_config(&shared), shared.allocator.clone())
        .with_channel_budget(shared.channels.clone())
        .with_payee_works(shared.payee_works.clone());
    if let Some(ledger) = &shared.ledger {
        session = session.with_ledger_status(ledger.status().clone());
    }
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
        accepted_ms,
    );
    let mut handler = PoolHandler::new(id, &shared, pending);
    handler.attach(&stream);
    let end = shell::drive(
        &mut stream,
        &mut conn,
        &mut handler,
        first,
        work,
        shutdown,
        &DriverLimits::default(),
    )
    .await;
    handler.settle(&end).await;
    end
}

/// Why a miner protocol ended a connection, as a refusal or failure a remote host decided.
pub(super) trait ProtocolEnding {
    /// The refusal this ending counts as.
    fn refused(&self) -> Refused;
}

impl ProtocolEnding for SessionError {
    fn refused(&self) -> Refused {
        match self {
            SessionError::SetupRefused(_) => Refused::SetupRefused,
            SessionError::NoChannel(_) => Refused::NoChannel,
            SessionError::ShareFlood { .. } => Refused::ShareFlood,
            _ => Refused::ConnectionFailed,
        }
    }
}

/// Why a connection ended, as a refusal or failure a remote host decided (`None`: it closed,
/// or the pool stopped or evicted it). `set_up`: whether it had completed SetupConnection.
fn ending_reason<E: ProtocolEnding + std::error::Error>(
    end: &ConnectionError<E>,
    set_up_done: bool,
) -> Option<Refused> {
    Some(match end {
        ConnectionError::Closed | ConnectionError::Shutdown | ConnectionError::Ended => {
            return None;
        }
        ConnectionError::HandshakeTimeout => Refused::HandshakeTimeout,
        ConnectionError::SetupTimeout => Refused::SetupTimeout,
        // The pool's own certificate not covering now (its clock jumped; renewed within
        // half a minute) is the pool's failure, not the miner's: not held against its source.
        ConnectionError::Noise(NoiseError::OwnCertificateNotCurrent { .. }) => {
            Refused::ConnectionFailed
        }
        ConnectionError::Noise(_) if !set_up_done => Refused::HandshakeFailed,
        ConnectionError::Idle => Refused::IdleTimeout,
        ConnectionError::Protocol(e) => e.refused(),
        _ => Refused::ConnectionFailed,
    })
}

/// Whether an ending counts as a failed handshake or setup (towards the source's penalty box):
/// a set-up connection that never opens a channel held a place for nothing, like one that
/// never set up.
fn is_handshake_or_setup_failure(reason: Refused) -> bool {
    matches!(
        reason,
        Refused::HandshakeFailed
            | Refused::HandshakeTimeout
            | Refused::SetupTimeout
            | Refused::SetupRefused
            | Refused::NoChannel
    )
}

/// Logs how a connection ended at a level that fits the reason; the endings a remote host
/// decides go through the gate's log budget (the first few per reason and period, then one
/// summary line). Returns whether it failed its handshake or setup.
pub(super) fn log_end<E: ProtocolEnding + std::error::Error>(
    id: u64,
    peer: SocketAddr,
    end: &ConnectionError<E>,
    gate: &Gate,
) -> bool {
    let set_up_done = gate.is_set_up(id);
    if let ConnectionError::OutputHeld(_) = end {
        // The pool's own decision (its ledger cannot write), not the miner's doing.
        warn!(conn = id, %peer, "connection closed: {end}");
        return false;
    }
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

#[cfg(test)]
mod tests {
    use super::MAX_CLIENT_PAYLOAD;
    use crate::connection::Outbox;
    use crate::wire::Str0_255;
    use crate::wire::common::SetupConnection;
    use crate::wire::mining::OpenExtendedMiningChannel;

    /// The cap is the largest SetupConnection as the wire encodes it, and every other client
    /// message at its largest fits.
    #[test]
    fn the_payload_cap_is_the_largest_setup_connection() {
        let long = "x".repeat(255);
        let s = || Str0_255::new(&long).unwrap();
        let mut out = Outbox::new();
        out.push(&SetupConnection {
            protocol: 0,
            min_version: 2,
            max_version: 2,
            flags: 0,
            endpoint_host: s(),
            endpoint_port: 3333,
            vendor: s(),
            hardware_version: s(),
            firmware: s(),
            device_id: s(),
        })
        .unwrap();
        out.push(&OpenExtendedMiningChannel {
            request_id: 1,
            user_identity: s(),
            nominal_hash_rate: 1.0,
            max_target: [0xff; 32],
            min_extranonce_size: 8,
        })
        .unwrap();
        let sizes: Vec<usize> = out.messages().map(|m| m.len() - 6).collect();
        assert_eq!(sizes, [MAX_CLIENT_PAYLOAD, 298]);
    }

    /// A handshake refused because the pool's own certificate does not cover now (its clock
    /// jumped) is not held against the miner's source; a miner's failed handshake is.
    #[test]
    fn the_pools_own_certificate_failure_is_not_the_miners() {
        use super::{ConnectionError, SessionError, ending_reason, is_handshake_or_setup_failure};
        use crate::noise::NoiseError;
        use crate::shell::Refused;
        let own: ConnectionError<SessionError> =
            ConnectionError::Noise(NoiseError::OwnCertificateNotCurrent {
                valid_from: 10,
                not_valid_after: 20,
                now: 5,
            });
        let reason = ending_reason(&own, false).unwrap();
        assert_eq!(reason, Refused::ConnectionFailed);
        assert!(!is_handshake_or_setup_failure(reason));
        let theirs: ConnectionError<SessionError> =
            ConnectionError::Noise(NoiseError::TransportHeaderAuthentication);
        let reason = ending_reason(&theirs, false).unwrap();
        assert_eq!(reason, Refused::HandshakeFailed);
        assert!(is_handshake_or_setup_failure(reason));
    }
}
