//! A connection's output that waits for the share ledger (issue 15: durable before
//! acknowledged), and its release by the ledger's writer thread.
//!
//! In durable mode a session queues each SubmitShares.Success at once behind a hold on the
//! last share it covers (`Outbox::hold_until`), and the connection encrypts it with the rest
//! ([`Connection::transmit_holds`] says where held bytes start). Before the driver writes, it
//! hands the held ciphertext, and everything queued behind it, to this connection's
//! [`HeldOutput`] ([`HeldOutput::route`]); the writer thread, right after the commit that
//! stores those shares, writes the bytes it released to the socket itself
//! ([`HeldOutput::commit`]). The connection is not woken for it: a second turn of each
//! connection per share (its state cold again by then) cost the pool a third of its
//! throughput, more than the ledger's own work.
//!
//! The writer never blocks on a socket: when the socket does not take all that was released
//! (a full send buffer, an error), the rest is the driver's to write, with its own timeout
//! ([`HeldOutput::wake`] wakes it), and the writer writes nothing more until the driver has
//! written everything released. Bytes leave in the order they were encrypted either way.
//!
//! The socket is known by its descriptor between [`HeldOutput::attach`] and
//! [`HeldOutput::detach`] (the driver's handler detaches before the socket is dropped), and is
//! written only under the lock those take: never after it closed, never to a descriptor number
//! reused by another connection.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::connection::{Connection, ConnectionError, Protocol};
use crate::shell::{AtomicHistogram, Wake};

/// Default `ledger_hold_limit_secs`: how long a connection's output may wait for the ledger
/// before the connection is closed.
pub const DEFAULT_HOLD_LIMIT_SECS: u64 = 10;

/// How often [`HeldOutput::settle`] looks whether what waits was written.
const SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// Output of one connection waiting for the ledger's commit of its shares. See the module
/// documentation.
#[derive(Debug, Default)]
pub struct HeldOutput {
    /// The highest of the connection's share numbers committed.
    committed: AtomicU64,
    /// Bytes in [`Waiting::bytes`], read without the lock: by the driver's fast path (only the
    /// driver adds bytes, so a zero it reads stays zero until it adds some), and by a commit,
    /// which skips the lock when nothing waits. The driver publishes what it adds here before
    /// it reads [`Self::committed`], and a commit raises `committed` before it reads this
    /// (both sequentially consistent): of two that cross, one sees the other, so held bytes
    /// are never left behind by the commit that released them.
    queued: AtomicUsize,
    /// Whether the driver writes what is released (mirrors [`Waiting::driver_writes`]).
    driver_turn: AtomicBool,
    /// Whether every commit wakes [`Self::wake`] (a waiter that polls [`Self::committed`]).
    wake_on_commit: bool,
    /// Where each acknowledgement's wait (from its making to its release) is observed.
    latency: Option<Arc<AtomicHistogram>>,
    waiting: Mutex<Waiting>,
    wake: Arc<Wake>,
}

/// What waits, under the lock.
#[derive(Debug, Default)]
struct Waiting {
    /// The connection's socket while it is open (see the module documentation).
    socket: Option<RawFd>,
    /// Ciphertext not yet written, in order.
    bytes: Vec<u8>,
    /// From byte offset `.0` of `bytes` on, nothing may be written before share `.1` is
    /// committed; `.2`: when that hold was queued (its acknowledgement made).
    holds: VecDeque<(usize, u64, Instant)>,
    /// The socket did not take all that was released: the driver writes what is released
    /// until nothing released is left, and the writer thread writes nothing meanwhile.
    driver_writes: bool,
}

impl HeldOutput {
    /// A connection's, with nothing committed, held or attached; each acknowledgement's wait
    /// is observed in `latency`.
    pub fn new(latency: Arc<AtomicHistogram>) -> Arc<Self> {
        Arc::new(HeldOutput {
            latency: Some(latency),
            ..Self::default()
        })
    }

    /// One whose every commit wakes [`Self::wake`], for a caller that waits on
    /// [`Self::committed`] rather than routing output (the module endpoint).
    pub fn waited_on() -> Arc<Self> {
        Arc::new(HeldOutput {
            wake_on_commit: true,
            ..Self::default()
        })
    }

    /// The highest share number committed.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// What wakes the connection's driver when released bytes are its to write.
    pub fn wake(&self) -> &Arc<Wake> {
        &self.wake
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes released output to `socket` from now on. The caller keeps `socket` open until
    /// it calls [`Self::detach`].
    pub fn attach(&self, socket: RawFd) {
        self.lock().socket = Some(socket);
    }

    /// The socket is closing: nothing is written to it any more, and what waits is dropped
    /// (never written, so never acknowledged).
    pub fn detach(&self) {
        let mut w = self.lock();
        w.socket = None;
        w.bytes = Vec::new();
        w.holds.clear();
        self.queued.store(0, Ordering::Release);
    }

    /// The writer thread: the ledger committed the connection's shares up to `up_to`. Writes
    /// what that releases, or wakes the driver when the released bytes are its to write.
    pub fn commit(&self, up_to: u64) {
        self.committed.fetch_max(up_to, Ordering::SeqCst);
        if self.wake_on_commit {
            self.wake.wake();
        }
        if self.queued.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut w = self.lock();
        if released_len(&w, self.committed()) == 0 {
            return;
        }
        if w.driver_writes || w.socket.is_none() {
            self.wake.wake();
            return;
        }
        if !self.write_released(&mut w) {
            self.hand_to_driver(&mut w);
            self.wake.wake();
        }
    }

    /// The driver, before it writes `conn`'s pending bytes: if any of them are held, or output
    /// already waits here, takes them all here (in order) and writes what is released; what
    /// is left for the driver to write (released bytes the socket did not take) is put back
    /// into `conn`'s pending bytes. Otherwise leaves them for the driver to write as usual.
    /// Fails when more than `max_waiting` bytes would wait: [`ConnectionError::OutputHeld`]
    /// while some wait for the ledger (it has been unable to write for a while), else
    /// [`ConnectionError::SlowReader`] (the peer does not read).
    pub fn route<P: Protocol>(
        &self,
        conn: &mut Connection<P>,
        max_waiting: usize,
    ) -> Result<(), ConnectionError<P::Error>> {
        let nothing_held = conn.transmit_holds().is_empty();
        if nothing_held
            && self.queued.load(Ordering::Acquire) == 0
            && !self.driver_turn.load(Ordering::Acquire)
        {
            return Ok(());
        }
        let mut w = self.lock();
        if !conn.pending_transmit().is_empty() {
            let base = w.bytes.len();
            let waiting = base + conn.pending_transmit().len();
            if waiting > max_waiting {
                // Output waiting for a ledger that does not commit is the ledger's doing;
                // released output nobody reads is the peer's.
                let committed = self.committed();
                let held_since = first_held(&w, committed)
                    .map(|(_, _, since)| *since)
                    .or_else(|| {
                        let holds = conn.transmit_holds();
                        holds
                            .iter()
                            .any(|(_, share)| *share > committed)
                            .then(Instant::now)
                    });
                return Err(match held_since {
                    Some(since) => ConnectionError::OutputHeld(since.elapsed()),
                    None => ConnectionError::SlowReader(waiting),
                });
            }
            w.bytes.extend_from_slice(conn.pending_transmit());
            let now = Instant::now();
            let holds = conn.transmit_holds();
            w.holds
                .extend(holds.iter().map(|&(at, share)| (base + at, share, now)));
            conn.clear_transmit();
        }
        // Published before `committed` is read (see `queued`).
        self.queued.store(w.bytes.len(), Ordering::SeqCst);
        if w.driver_writes {
            // This is called only before the driver writes, and its last write took all it
            // was handed (or the connection ended): the socket may be written here again.
            w.driver_writes = false;
            self.driver_turn.store(false, Ordering::Release);
        }
        if released_len(&w, self.committed()) > 0 && !self.write_released(&mut w) {
            self.hand_to_driver(&mut w);
            let released = released_len(&w, self.committed());
            conn.restore_transmit(&w.bytes[..released]);
            self.drain_front(&mut w, released);
        }
        self.queued.store(w.bytes.len(), Ordering::SeqCst);
        Ok(())
    }

    /// Writes the released bytes to the socket without blocking; true if it took them all.
    fn write_released(&self, w: &mut Waiting) -> bool {
        let released = released_len(w, self.committed());
        let Some(socket) = w.socket else {
            return false;
        };
        let mut written = 0;
        while written < released {
            // SAFETY: `socket` is open: it is attached, and the driver detaches it (under this
            // lock, which is held) before closing it. The buffer is valid for its length.
            let n = unsafe {
                libc::send(
                    socket,
                    w.bytes[written..released].as_ptr().cast(),
                    released - written,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n <= 0 {
                // Would block, or an error: the driver writes the rest, and meets the error.
                break;
            }
            written += n as usize;
        }
        self.drain_front(w, written);
        self.queued.store(w.bytes.len(), Ordering::SeqCst);
        written == released
    }

    /// Whether released bytes are the driver's to write (the socket did not take them from the
    /// writer thread), until the driver has written them all.
    pub fn is_drivers_turn(&self) -> bool {
        self.driver_turn.load(Ordering::Acquire)
    }

    fn hand_to_driver(&self, w: &mut Waiting) {
        w.driver_writes = true;
        self.driver_turn.store(true, Ordering::Release);
    }

    /// Forgets the first `n` waiting bytes (written, or handed to the driver), and the holds
    /// they passed: each one's wait is observed.
    fn drain_front(&self, w: &mut Waiting, n: usize) {
        if n == 0 {
            return;
        }
        w.bytes.drain(..n);
        let now = Instant::now();
        while let Some(&(at, _, queued)) = w.holds.front()
            && (at < n || w.bytes.is_empty())
        {
            w.holds.pop_front();
            if let Some(latency) = &self.latency {
                latency.observe(now.saturating_duration_since(queued));
            }
        }
        for hold in &mut w.holds {
            hold.0 -= n;
        }
        if w.bytes.is_empty() && w.bytes.capacity() > crate::connection::TRANSMIT_BUFFER_KEEP {
            w.bytes.shrink_to(crate::connection::TRANSMIT_BUFFER_KEEP);
        }
    }

    /// The connection is ending: waits, at most `limit`, for what it queued behind held
    /// acknowledgements (a last refusal, say) to be released and written by the ledger's
    /// writer. Returns at once when nothing waits, or when the rest is the driver's to write
    /// (the socket takes no more: nobody reads it).
    pub async fn settle(&self, limit: std::time::Duration) {
        let until = Instant::now() + limit;
        while self.queued.load(Ordering::SeqCst) > 0
            && !self.driver_turn.load(Ordering::Acquire)
            && Instant::now() < until
        {
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// When the oldest output still held was queued, if any is.
    pub fn oldest_hold(&self) -> Option<Instant> {
        if self.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let committed = self.committed();
        first_held(&self.lock(), committed).map(|(_, _, at)| *at)
    }
}

/// The first hold on a share not yet committed: where the released bytes end.
fn first_held(w: &Waiting, committed: u64) -> Option<&(usize, u64, Instant)> {
    w.holds.iter().find(|(_, share, _)| *share > committed)
}

/// How many of the waiting bytes are released: those before [`first_held`].
fn released_len(w: &Waiting, committed: u64) -> usize {
    first_held(w, committed).map_or(w.bytes.len(), |(at, _, _)| *at)
}
