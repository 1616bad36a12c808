//! The loop that drives one server-side [`Connection`] over a TCP socket: read and hand the
//! bytes in; sleep until the connection's (or the shell's own) next deadline, not on a fixed
//! tick; apply outside updates (new work, a new template) and shutdown; write what the
//! connection queued, with a bound on what a peer that does not read can make us hold, once
//! the handler has taken what must wait ([`Handler::route_output`]: acknowledgements held for
//! the share ledger); and a wake-up from outside the connection (released bytes the socket did
//! not take from the ledger's writer) when the handler has one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

use super::{Wake, unix_ms};
use crate::connection::{Connection, ConnectionError, Protocol};

/// Socket limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct DriverLimits {
    /// Bytes read per `read` call (memory per connection matters at 10,000 connections;
    /// bigger messages just take more reads). Fixed: the buffer never grows.
    pub read_buffer: usize,
    /// Encrypted bytes we hold for a peer that does not read; past this it is disconnected.
    pub max_outbound: usize,
    /// A write that cannot complete this fast means the peer is not reading.
    pub write_timeout: Duration,
    /// At shutdown, how long a connection whose protocol asked its peer to go elsewhere
    /// ([`Protocol::begin_drain`]) is kept for the answers still owed and for the peer to
    /// leave on its own; then it is closed.
    pub drain_grace: Duration,
}

/// Default [`DriverLimits::drain_grace`]: long enough for a share ledger's commit and a
/// miner's reconnect, short enough for a rolling restart.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(5);

impl Default for DriverLimits {
    fn default() -> Self {
        DriverLimits {
            read_buffer: 2 * 1024,
            // A new tip sends a job and a prev hash to each of up to 64 channels (about 50 KiB
            // on a busy connection); four times that is a peer that does not read. At 10,000
            // connections this bounds queued output to 2.5 GiB, never reached by readers.
            max_outbound: 256 * 1024,
            write_timeout: Duration::from_secs(10),
            drain_grace: DEFAULT_DRAIN_GRACE,
        }
    }
}

/// What a server adds to the loop: how outside updates reach the protocol, what it does with
/// the protocol's events, and an optional deadline of its own.
pub trait Handler<P: Protocol> {
    /// The value published to every connection (new work, a new template).
    type Update: Clone + Send + Sync;

    /// Applies an update (also called once with the current value at start).
    fn on_update(
        &mut self,
        conn: &mut Connection<P>,
        update: &Self::Update,
        now_ms: u64,
    ) -> Result<(), ConnectionError<P::Error>>;

    /// Takes the connection's events (with [`Connection::poll_event`]).
    fn on_events(
        &mut self,
        conn: &mut Connection<P>,
        now_ms: u64,
    ) -> impl Future<Output = ()> + Send;

    /// The shell's own next deadline (unix ms), if any.
    fn deadline(&self) -> Option<u64> {
        None
    }

    /// Called once the shell's own deadline has passed; an error ends the connection.
    fn on_deadline(&mut self, now_ms: u64) -> Result<(), ConnectionError<P::Error>> {
        let _ = now_ms;
        Ok(())
    }

    /// Called before the loop writes what the connection queued: a handler whose protocol
    /// holds output ([`Connection::transmit_holds`]) takes what may not be written yet, and
    /// puts back what may. `max_outbound` bounds what it may keep. An error ends the
    /// connection.
    fn route_output(
        &mut self,
        conn: &mut Connection<P>,
        max_outbound: usize,
    ) -> Result<(), ConnectionError<P::Error>> {
        let _ = (conn, max_outbound);
        Ok(())
    }

    /// What wakes the loop from outside, if anything (asked once, at start): a turn of the
    /// loop follows each notification, its write going through [`Self::route_output`] (the
    /// share ledger's writer hands released bytes back this way when the socket did not take
    /// them).
    fn waker(&self) -> Option<Arc<Wake>> {
        None
    }

    /// Whether a stop signal now means the server is stopping, so the connection is drained
    /// ([`Protocol::begin_drain`]: the peer asked to go elsewhere, the connection kept for the
    /// answers it is owed) rather than closed at once (eviction, a full pool). Asked when the
    /// stop signal comes.
    fn drains_on_stop(&self) -> bool {
        false
    }
}

/// Waits for the handler's wake-up (forever without one); owns it so the future lives across
/// turns of the loop, like [`next_control`].
async fn next_wake(waker: Option<Arc<Wake>>) -> Option<Arc<Wake>> {
    match &waker {
        Some(w) => w.woken().await,
        None => std::future::pending().await,
    }
    waker
}

/// What woke the loop besides the socket and the timer.
enum Control {
    /// The update channel changed (`false`: its sender is gone).
    Update(bool),
    /// The server is shutting down.
    Shutdown,
}

/// Waits for an update or shutdown; owns the receivers so the future lives across turns of
/// the loop (rebuilding `changed()` futures every turn registers and unregisters a waiter on
/// a server-wide lock per share). With `updates_open` false it waits for shutdown only.
async fn next_control<T>(
    mut updates: watch::Receiver<T>,
    mut shutdown: watch::Receiver<bool>,
    updates_open: bool,
) -> (Control, watch::Receiver<T>, watch::Receiver<bool>) {
    let control = tokio::select! {
        changed = updates.changed(), if updates_open => Control::Update(changed.is_ok()),
        _ = shutdown.changed() => Control::Shutdown,
    };
    (control, updates, shutdown)
}

/// Writes the connection's pending ciphertext where it lies (no second buffer per connection)
/// and clears it, once the handler has taken what must wait ([`Handler::route_output`]); a
/// peer that lets more than `max_outbound` bytes pile up, or does not take them within
/// `write_timeout`, is not reading.
async fn write_out<P: Protocol, H: Handler<P>>(
    stream: &mut TcpStream,
    conn: &mut Connection<P>,
    handler: &mut H,
    limits: &DriverLimits,
) -> Result<(), ConnectionError<P::Error>> {
    handler.route_output(conn, limits.max_outbound)?;
    let wire = conn.pending_transmit();
    if wire.is_empty() {
        return Ok(());
    }
    if wire.len() > limits.max_outbound {
        return Err(ConnectionError::SlowReader(wire.len()));
    }
    // Fast path: the socket takes it all at once (the usual case), with no timer set up.
    let sent = match stream.try_write(wire) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e.into()),
    };
    if sent < wire.len() {
        match timeout(limits.write_timeout, stream.write_all(&wire[sent..])).await {
            Ok(r) => r?,
            Err(_) => return Err(ConnectionError::SlowReader(wire.len() - sent)),
        }
    }
    conn.clear_transmit();
    Ok(())
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Drives `conn` over `stream` until it ends; returns why. `first`: bytes read from `stream`
/// before (a port that tells the protocol by them, [`super::detect_protocol`]), handled after
/// the first update as if they had just arrived.
pub async fn drive<P, H>(
    stream: &mut TcpStream,
    conn: &mut Connection<P>,
    handler: &mut H,
    first: &[u8],
    updates: watch::Receiver<H::Update>,
    shutdown: watch::Receiver<bool>,
    limits: &DriverLimits,
) -> ConnectionError<P::Error>
where
    P: Protocol,
    H: Handler<P>,
{
    let _ = stream.set_nodelay(true);
    let now = unix_ms();
    let mut updates = updates;
    let current = updates.borrow_and_update().clone();
    if let Err(e) = handler.on_update(conn, &current, now) {
        return e;
    }
    drop(current);
    if !first.is_empty() {
        let fed = conn.handle_wire(first, now);
        handler.on_events(conn, now).await;
        if let Err(e) = fed {
            let _ = write_out(stream, conn, handler, limits).await;
            return e;
        }
    }
    let mut buf = vec![0u8; limits.read_buffer];
    // One timer for the connection's life, moved only when the deadline changes.
    let timer = tokio::time::sleep(Duration::from_secs(86_400));
    let mut timer = std::pin::pin!(timer);
    let mut armed: Option<u64> = None;
    // Updates and shutdown: one future kept across turns, re-armed only when it fires.
    let mut control = std::pin::pin!(next_control(updates, shutdown, true));
    // The outside wake-up, if any: also one future kept across turns.
    let mut woken = std::pin::pin!(next_wake(handler.waker()));
    // Since shutdown, when the drain ends (unix ms): the peer was asked to go elsewhere.
    let mut draining_until: Option<u64> = None;
    // The handshake reply, or anything queued at start.
    if let Err(e) = write_out(stream, conn, handler, limits).await {
        return e;
    }
    loop {
        // The timer moves only when the deadline comes earlier than it is set for. A later
        // deadline (vardiff's drought check moves with every share) lets the timer fire early
        // and be set again then: one timer update per firing instead of one per share.
        let due = min_some(
            min_some(conn.poll_timeout(), handler.deadline()),
            draining_until,
        );
        if let Some(due) = due
            && armed.is_none_or(|a| due < a)
        {
            armed = Some(due);
            let wait = due.saturating_sub(unix_ms());
            timer
                .as_mut()
                .reset(Instant::now() + Duration::from_millis(wait));
        }
        let mut result: Result<(), ConnectionError<P::Error>> = Ok(());
        let mut now = None;
        tokio::select! {
            // The socket first: under load it is what is ready, and the other branches are
            // then not polled at all. Tokio's cooperative budget still lets them run when a
            // peer floods.
            biased;
            r = stream.read(&mut buf) => {
                let t = unix_ms();
                now = Some(t);
                result = match r {
                    Ok(0) => Err(ConnectionError::Closed),
                    Ok(n) => conn.handle_wire(&buf[..n], t),
                    Err(e) => Err(e.into()),
                };
            }
            waker = &mut woken => {
                now = Some(unix_ms());
                woken.set(next_wake(waker));
            }
            (what, mut u, s) = &mut control, if draining_until.is_none() => {
                let mut open = true;
                match what {
                    Control::Update(ok) => {
                        open = ok;
                        if ok {
                            let t = unix_ms();
                            now = Some(t);
                            let latest = u.borrow_and_update().clone();
                            result = handler.on_update(conn, &latest, t);
                        }
                    }
                    Control::Shutdown => {
                        let t = unix_ms();
                        now = Some(t);
                        let asked = !limits.drain_grace.is_zero()
                            && handler.drains_on_stop()
                            && conn.with_protocol(|p| p.begin_drain(t)).unwrap_or(false);
                        if asked {
                            draining_until = Some(
                                t.saturating_add(limits.drain_grace.as_millis() as u64),
                            );
                        } else {
                            result = Err(ConnectionError::Shutdown);
                        }
                    }
                }
                control.set(next_control(u, s, open));
            }
            _ = &mut timer, if armed.is_some() => {
                // Re-armed from the clock next turn (the timer and the unix clock may differ
                // by a little; nothing is lost, the deadline is simply asked again).
                armed = None;
                let t = unix_ms();
                now = Some(t);
                if conn.poll_timeout().is_some_and(|d| d <= t) {
                    result = conn.handle_timeout(t);
                }
                if handler.deadline().is_some_and(|d| d <= t) {
                    result = result.and(handler.on_deadline(t));
                }
                if draining_until.is_some_and(|d| d <= t) {
                    result = Err(ConnectionError::Shutdown);
                }
            }
        }
        handler.on_events(conn, now.unwrap_or_else(unix_ms)).await;
        if let Err(e) = write_out(stream, conn, handler, limits).await {
            return e;
        }
        if let Err(e) = result {
            return e;
        }
    }
}
