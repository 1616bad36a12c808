//! One SV2 connection, sans-IO, in the style of quinn-proto's `Connection` and rustls'
//! `ConnectionCommon`: the Noise NX handshake (either role), both transport halves after it,
//! and the protocol session it carries, behind the small [`Protocol`] trait.
//!
//! Bytes and the time go in ([`Connection::handle_wire`], [`Connection::handle_timeout`]);
//! ciphertext, the protocol's events and the next deadline come out
//! ([`Connection::poll_transmit`], [`Connection::poll_event`], [`Connection::poll_timeout`]).
//! Protocol-specific inputs (new work, a new template, a share to submit) go through
//! [`Connection::with_protocol`], so what they produce is encrypted and queued the same way.
//! Every frame is encrypted from the [`Outbox`]'s recorded boundaries: our own output is never
//! parsed again. The handshake, setup and idle deadlines live here, not in the drivers.
//! Output the protocol holds for the share ledger ([`Outbox::hold_until`]) is encrypted like
//! the rest, and its place in the ciphertext is reported ([`Connection::transmit_holds`]): the
//! driver writes those bytes only once the ledger has committed (the Noise nonces fix their
//! order, so everything after a hold waits with it).
//!
//! No tokio, no clock reads, no sockets: the pool server, the template provider, the CPU
//! miner and the load generator each drive this object with their own loop.

mod detect;
mod error;
mod lines;
mod outbox;
mod protocol;

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use rand::rngs::StdRng;
use rand::{CryptoRng, Rng};
use secp256k1::XOnlyPublicKey;

pub use detect::{DETECT_LEN, Detected, MISREAD_PROBABILITY, detect};
pub use error::ConnectionError;
pub use lines::{LineReceiver, LineTooLong};
pub use outbox::Outbox;
pub use protocol::Protocol;

use crate::noise::{
    INITIATOR_MESSAGE_LEN, Initiator, RESPONDER_MESSAGE_LEN, Receiver, Responder, Sender,
};

/// Receive buffer capacity kept between frames; more, left by a large frame, is given back.
pub const RECEIVE_BUFFER_KEEP: usize = 4 * 1024;
/// Transmit buffer capacity kept once its bytes are written.
pub const TRANSMIT_BUFFER_KEEP: usize = 16 * 1024;
/// The same for a line protocol (Stratum V1), and its protocol's outbox: a line answering a
/// share (about 40 bytes) fits, so the steady state does not allocate, while a mining.notify
/// (about 1 KiB in hex, at most a few a minute) is not kept on each of thousands of idle
/// connections (issue 17: memory per idle SV1 connection).
pub const LINES_BUFFER_KEEP: usize = 128;

/// The deadlines and limits of one connection; durations in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Time from creation for the Noise handshake to complete.
    pub handshake_timeout_ms: u64,
    /// Time from the end of the handshake for the protocol's setup to complete.
    pub setup_timeout_ms: u64,
    /// Longest time without a whole, authenticated frame from the peer (bytes of an unfinished
    /// frame do not count); `None`: no idle limit.
    pub idle_timeout_ms: Option<u64>,
    /// Largest plaintext payload a received frame may announce.
    pub max_payload_len: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            handshake_timeout_ms: 10_000,
            setup_timeout_ms: 10_000,
            idle_timeout_ms: None,
            max_payload_len: crate::noise::DEFAULT_MAX_PAYLOAD_LEN,
        }
    }
}

/// Where the connection is in its life. Not boxed: `Established` (two cipher states and
/// the receive buffers) is the largest variant and the one a connection lives in, and the
/// handshake states are not much smaller.
#[allow(clippy::large_enum_variant)]
enum Stage {
    /// Server side: waiting for the initiator's `-> e`.
    Accepting {
        responder: Arc<RwLock<Responder>>,
        rng: StdRng,
    },
    /// Client side: `-> e` queued, waiting for the responder's reply.
    Initiating { initiator: Initiator },
    /// Handshake done: frames both ways.
    Established { sender: Sender, receiver: Receiver },
    /// A plaintext line protocol (Stratum V1): no handshake; a message is a line each way
    /// (the protocol's outbox holds whole lines, newline included).
    Lines { receiver: LineReceiver },
    /// Ended (an error was returned); no more input is taken.
    Ended,
}

/// One SV2 connection carrying protocol `P`. See the module documentation.
pub struct Connection<P: Protocol> {
    stage: Stage,
    protocol: P,
    config: ConnectionConfig,
    /// The handshake message being received (it may arrive in pieces).
    handshake: Vec<u8>,
    /// Ciphertext (or handshake bytes) waiting to be written.
    transmit: Vec<u8>,
    /// Holds in `transmit`, in order: from byte offset `.0` on, nothing may be written before
    /// the protocol's share number `.1` is committed.
    transmit_holds: Vec<(usize, u64)>,
    events: VecDeque<P::Event>,
    handshake_deadline: u64,
    /// Set when the handshake completes.
    setup_deadline: u64,
    /// When the handshake completed or the last whole, authenticated frame arrived.
    last_received_ms: u64,
    /// The protocol's deadline is not reported before this (guards against a deadline that
    /// stays in the past after its work was done).
    protocol_floor: u64,
}

impl<P: Protocol> Connection<P> {
    /// A server-side connection accepted at `now_ms`, answering with `responder` (shared by
    /// every connection of the server, behind a lock so its certificate can be renewed).
    pub fn accept(
        protocol: P,
        responder: Arc<RwLock<Responder>>,
        rng: StdRng,
        config: ConnectionConfig,
        now_ms: u64,
    ) -> Self {
        Self::new(
            Stage::Accepting { responder, rng },
            protocol,
            config,
            now_ms,
        )
    }

    /// A client-side connection started at `now_ms` that accepts only servers certified by
    /// `authority`; the first handshake message is queued at once.
    pub fn connect<R: Rng + CryptoRng>(
        protocol: P,
        authority: XOnlyPublicKey,
        rng: &mut R,
        config: ConnectionConfig,
        now_ms: u64,
    ) -> Self {
        Self::with_initiator(protocol, Initiator::new(authority, rng), config, now_ms)
    }

    /// A server-side connection of a plaintext line protocol (Stratum V1) accepted at
    /// `now_ms`: no handshake, each received line (at most `config.max_payload_len` bytes) is
    /// one message, and what the protocol queues goes out as it is. The setup deadline runs
    /// from now; the handshake timeout does not apply.
    pub fn accept_lines(protocol: P, config: ConnectionConfig, now_ms: u64) -> Self {
        let receiver = LineReceiver::new(config.max_payload_len);
        let mut c = Self::new(Stage::Lines { receiver }, protocol, config, now_ms);
        c.setup_deadline = now_ms.saturating_add(config.setup_timeout_ms);
        // Whatever the protocol queued at its creation (a client's first requests) goes out
        // first; the plaintext flush cannot fail.
        let _ = c.flush();
        c
    }

    /// A client-side connection of a plaintext line protocol (Stratum V1) started at `now_ms`:
    /// like [`Self::accept_lines`] (lines both ways, no handshake), from the other side.
    pub fn connect_lines(protocol: P, config: ConnectionConfig, now_ms: u64) -> Self {
        Self::accept_lines(protocol, config, now_ms)
    }

    /// Like [`Self::connect`] with a handshake already started (the load generator makes
    /// its ephemeral keys before it starts the clock).
    pub fn with_initiator(
        protocol: P,
        initiator: Initiator,
        config: ConnectionConfig,
        now_ms: u64,
    ) -> Self {
        let first = initiator.step_0();
        let mut c = Self::new(Stage::Initiating { initiator }, protocol, config, now_ms);
        c.transmit.extend_from_slice(&first);
        c
    }

    fn new(stage: Stage, protocol: P, config: ConnectionConfig, now_ms: u64) -> Self {
        Connection {
            stage,
            protocol,
            config,
            handshake: Vec::new(),
            transmit: Vec::new(),
            transmit_holds: Vec::new(),
            events: VecDeque::new(),
            handshake_deadline: now_ms.saturating_add(config.handshake_timeout_ms),
            setup_deadline: u64::MAX,
            last_received_ms: now_ms,
            protocol_floor: 0,
        }
    }

    /// The protocol state, for reading.
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// Gives the protocol an input of its own (new work, a template, a share to submit) and
    /// queues what it produces. Returns `f`'s result, or the error that ended the connection.
    pub fn with_protocol<T>(
        &mut self,
        f: impl FnOnce(&mut P) -> T,
    ) -> Result<T, ConnectionError<P::Error>> {
        if self.is_ended() {
            return Err(ConnectionError::Ended);
        }
        let value = f(&mut self.protocol);
        self.flush().map_err(|e| self.end(e))?;
        Ok(value)
    }

    /// Whether the Noise handshake has completed (a plaintext connection has none to do: it
    /// is established from the start).
    pub fn is_established(&self) -> bool {
        matches!(self.stage, Stage::Established { .. } | Stage::Lines { .. })
    }

    /// Whether the connection has ended (an error was returned, or [`Self::close`]).
    pub fn is_ended(&self) -> bool {
        matches!(self.stage, Stage::Ended)
    }

    /// Ends the connection: no more input is taken. What is already queued can still be
    /// taken with [`Self::poll_transmit`].
    pub fn close(&mut self) {
        self.stage = Stage::Ended;
    }

    /// Handles bytes received from the peer at `now_ms`, in whatever pieces they came.
    /// An error ends the connection; what was queued before it (e.g. a refusal) is still
    /// in [`Self::poll_transmit`].
    pub fn handle_wire(
        &mut self,
        mut data: &[u8],
        now_ms: u64,
    ) -> Result<(), ConnectionError<P::Error>> {
        if self.is_ended() {
            return Err(ConnectionError::Ended);
        }
        // The idle timer is not restarted here: only a completed handshake or a whole,
        // authenticated frame restarts it (one byte of an unfinished frame now and then must
        // not keep a connection alive).
        let mut result = Ok(());
        while result.is_ok() && !data.is_empty() {
            match self.read(data, now_ms) {
                Ok(rest) => data = rest,
                Err(e) => result = Err(e),
            }
        }
        // Output produced before an error is still encrypted (a refusal goes out).
        let flushed = self.flush();
        result.and(flushed).map_err(|e| self.end(e))
    }

    /// Consumes what the current stage takes from `data`; returns the rest.
    fn read<'d>(
        &mut self,
        data: &'d [u8],
        now_ms: u64,
    ) -> Result<&'d [u8], ConnectionError<P::Error>> {
        match &mut self.stage {
            Stage::Accepting { responder, rng } => {
                let Some(rest) = take_message(&mut self.handshake, data, INITIATOR_MESSAGE_LEN)
                else {
                    return Ok(&[]);
                };
                let (reply, transport) = responder
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .accept(&self.handshake, unix_secs(now_ms), rng)?;
                self.transmit.extend_from_slice(&reply);
                self.established(transport, now_ms);
                Ok(rest)
            }
            Stage::Initiating { .. } => {
                let Some(rest) = take_message(&mut self.handshake, data, RESPONDER_MESSAGE_LEN)
                else {
                    return Ok(&[]);
                };
                let Stage::Initiating { initiator } =
                    std::mem::replace(&mut self.stage, Stage::Ended)
                else {
                    return Err(ConnectionError::Ended);
                };
                let transport = initiator.step_2(&self.handshake, unix_secs(now_ms))?;
                self.established(transport, now_ms);
                Ok(rest)
            }
            Stage::Established { receiver, .. } => {
                receiver.feed(data);
                while let Some(frame) = receiver.next_frame()? {
                    self.last_received_ms = now_ms;
                    self.protocol
                        .handle_message(frame, now_ms)
                        .map_err(ConnectionError::Protocol)?;
                }
                // A large frame (or many small ones in one read) does not stay pinned.
                receiver.release_spare(RECEIVE_BUFFER_KEEP);
                Ok(&[])
            }
            Stage::Lines { receiver } => {
                receiver.feed(data);
                while let Some(line) = receiver.next_line()? {
                    self.last_received_ms = now_ms;
                    self.protocol
                        .handle_message(line, now_ms)
                        .map_err(ConnectionError::Protocol)?;
                }
                receiver.release_spare(RECEIVE_BUFFER_KEEP);
                Ok(&[])
            }
            Stage::Ended => Err(ConnectionError::Ended),
        }
    }

    fn established(&mut self, transport: crate::noise::NoiseTransport, now_ms: u64) {
        let (sender, mut receiver) = transport.into_split();
        receiver.set_max_payload_len(self.config.max_payload_len);
        self.stage = Stage::Established { sender, receiver };
        self.handshake = Vec::new();
        self.last_received_ms = now_ms;
        self.setup_deadline = now_ms.saturating_add(self.config.setup_timeout_ms);
    }

    /// Takes the protocol's events, and encrypts its queued messages once the handshake is
    /// done (before that they wait in its outbox).
    fn flush(&mut self) -> Result<(), ConnectionError<P::Error>> {
        self.protocol.take_events(&mut self.events);
        if let Stage::Established { sender, .. } = &mut self.stage {
            let outbox = self.protocol.outbox();
            let mut holds = outbox.holds().iter().peekable();
            let mut result = Ok(());
            for (index, message) in outbox.messages().enumerate() {
                while let Some(&(_, share)) = holds.next_if(|(at, _)| *at == index) {
                    self.transmit_holds.push((self.transmit.len(), share));
                }
                if let Err(e) = sender.encrypt_frame(message, &mut self.transmit) {
                    result = Err(e);
                    break;
                }
            }
            outbox.clear();
            result?;
        } else if let Stage::Lines { .. } = self.stage {
            let outbox = self.protocol.outbox();
            let base = self.transmit.len();
            for &(index, share) in outbox.holds() {
                if index < outbox.message_count() {
                    let at = base + outbox.message_start(index);
                    self.transmit_holds.push((at, share));
                }
            }
            self.transmit.extend_from_slice(outbox);
            outbox.clear();
            outbox.release_spare(LINES_BUFFER_KEEP);
        }
        Ok(())
    }

    fn end(&mut self, e: ConnectionError<P::Error>) -> ConnectionError<P::Error> {
        self.stage = Stage::Ended;
        e
    }

    /// The next time (unix ms) [`Self::handle_timeout`] has something to do, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        let idle = self
            .config
            .idle_timeout_ms
            .map(|t| self.last_received_ms.saturating_add(t));
        match &self.stage {
            Stage::Ended => None,
            Stage::Accepting { .. } | Stage::Initiating { .. } => {
                min_some(Some(self.handshake_deadline), idle)
            }
            Stage::Established { .. } | Stage::Lines { .. } => {
                let setup = (!self.protocol.is_set_up()).then_some(self.setup_deadline);
                let own = self
                    .protocol
                    .next_deadline()
                    .map(|d| d.max(self.protocol_floor));
                min_some(min_some(setup, idle), own)
            }
        }
    }

    /// Handles the passage of time up to `now_ms`: ends the connection on an expired
    /// handshake, setup or idle deadline, and lets the protocol do its periodic work.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<(), ConnectionError<P::Error>> {
        let expired = match &self.stage {
            Stage::Ended => return Err(ConnectionError::Ended),
            Stage::Accepting { .. } | Stage::Initiating { .. }
                if now_ms >= self.handshake_deadline =>
            {
                Some(ConnectionError::HandshakeTimeout)
            }
            Stage::Established { .. } | Stage::Lines { .. }
                if !self.protocol.is_set_up() && now_ms >= self.setup_deadline =>
            {
                Some(ConnectionError::SetupTimeout)
            }
            _ => None,
        };
        let expired = expired.or_else(|| {
            self.config
                .idle_timeout_ms
                .filter(|t| now_ms >= self.last_received_ms.saturating_add(*t))
                .map(|_| ConnectionError::Idle)
        });
        if let Some(e) = expired {
            return Err(self.end(e));
        }
        if self.is_established()
            && self
                .protocol
                .next_deadline()
                .is_some_and(|d| d.max(self.protocol_floor) <= now_ms)
        {
            let ended = self.protocol.handle_timeout(now_ms);
            self.protocol_floor = now_ms.saturating_add(1);
            if let Err(e) = ended {
                // What the protocol queued (e.g. a closing message) still goes out.
                let _ = self.flush();
                return Err(self.end(ConnectionError::Protocol(e)));
            }
        }
        self.flush().map_err(|e| self.end(e))
    }

    /// Moves the ciphertext waiting to be written into `out` (swapped in when `out` is
    /// empty, so neither buffer is copied or reallocated in the steady state); returns whether
    /// there was any. For a protocol that never holds output (every client side): one that
    /// does is driven with [`Self::pending_transmit`] and [`Self::transmit_holds`].
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        debug_assert!(self.transmit_holds.is_empty(), "held output taken unheld");
        self.transmit_holds.clear();
        if self.transmit.is_empty() {
            return false;
        }
        if out.is_empty() {
            std::mem::swap(out, &mut self.transmit);
        } else {
            out.extend_from_slice(&self.transmit);
            self.transmit.clear();
        }
        true
    }

    /// The ciphertext waiting to be written, for a driver that writes it where it lies instead
    /// of taking it with [`Self::poll_transmit`] (one buffer less per connection): it writes
    /// these bytes, then calls [`Self::clear_transmit`].
    pub fn pending_transmit(&self) -> &[u8] {
        &self.transmit
    }

    /// Where in [`Self::pending_transmit`] held output starts, in order: from byte offset `.0`
    /// on, nothing may be written before the protocol's share number `.1` is committed (the
    /// share ledger's commit; see [`Outbox::hold_until`]). Empty: all of it may go now.
    pub fn transmit_holds(&self) -> &[(usize, u64)] {
        &self.transmit_holds
    }

    /// Forgets the ciphertext [`Self::pending_transmit`] showed (it has been written, or
    /// taken to be written once released) and its holds,
    /// keeping the buffer's capacity up to [`TRANSMIT_BUFFER_KEEP`] ([`LINES_BUFFER_KEEP`] for
    /// a line protocol) (a burst of output, many jobs at once, does not stay pinned).
    pub fn clear_transmit(&mut self) {
        self.transmit.clear();
        self.transmit_holds.clear();
        let keep = match self.stage {
            Stage::Lines { .. } => LINES_BUFFER_KEEP,
            _ => TRANSMIT_BUFFER_KEEP,
        };
        if self.transmit.capacity() > keep {
            self.transmit.shrink_to(keep);
        }
    }

    /// Puts ciphertext taken from [`Self::pending_transmit`] back in front of what is pending,
    /// to be written now (held output, once released, that the socket did not take at once).
    pub fn restore_transmit(&mut self, bytes: &[u8]) {
        self.transmit.splice(0..0, bytes.iter().copied());
        for hold in &mut self.transmit_holds {
            hold.0 += bytes.len();
        }
    }

    /// Bytes waiting in [`Self::poll_transmit`].
    pub fn transmit_len(&self) -> usize {
        self.transmit.len()
    }

    /// The next protocol event, oldest first.
    pub fn poll_event(&mut self) -> Option<P::Event> {
        self.events.pop_front()
    }
}

/// Appends to `buf` what `data` holds of a `len`-byte message; once `buf` is whole, returns
/// the rest of `data`.
fn take_message<'d>(buf: &mut Vec<u8>, data: &'d [u8], len: usize) -> Option<&'d [u8]> {
    let want = len.saturating_sub(buf.len()).min(data.len());
    let (head, rest) = data.split_at(want);
    buf.extend_from_slice(head);
    (buf.len() == len).then_some(rest)
}

fn unix_secs(now_ms: u64) -> u32 {
    u32::try_from(now_ms / 1000).unwrap_or(u32::MAX)
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
