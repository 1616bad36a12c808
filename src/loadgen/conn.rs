//! One load-generator connection: TCP connect, Noise NX as initiator, SetupConnection and one
//! extended channel through [`MinerSession`], then shares at a fixed rate or as fast as they
//! are acknowledged, with each share's ack latency recorded.
//!
//! Steady state does not allocate: the share is one reused [`Share`] whose nonce and hash
//! change, its header is hashed from a midstate computed once per job (two SHA-256
//! compressions per nonce), the session's outbox, the connection's ciphertext buffers and the
//! queue of shares in flight are reused, and socket reads go through one scratch buffer per
//! worker thread rather than one per connection.
//!
//! The Noise handshake, the session and the encryption are the same [`Connection`] object the
//! pool and the CPU miner use; this file only adds the loop (many connections per task, fixed
//! rate or windowed submission, latency accounting).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::{Hash, HashEngine, sha256};
use bitcoin::{BlockHash, Target, Txid};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior, timeout};

use super::{Ctx, Phase};
use crate::client::hasher::{IV, compress};
use crate::client::reconnect::{Backoff, RECONNECT_JITTER, jitter};
use crate::client::run::ClientProtocol;
use crate::client::sv1::Sv1MinerSession;
use crate::client::{
    JobKind, MinerConfig, MinerEvent, MinerSession, MinerSessionError, MiningWork, Share,
};
use crate::connection::{Connection, ConnectionConfig, ConnectionError};
use crate::mining::merkle::fold_merkle_path;
use crate::noise::{Initiator, NoiseError};
use crate::wire::WireError;

/// Nonces tried for one share before giving up on it (the load generator expects a target
/// near 2^256, where the first nonce nearly always qualifies).
const MAX_ATTEMPTS_PER_SHARE: u32 = 1 << 16;
/// Bytes of the per-thread read buffer.
const SCRATCH_LEN: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN]);
}

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    #[error("framing: {0}")]
    Wire(#[from] WireError),
    #[error("session: {0}")]
    Session(#[from] MinerSessionError),
    #[error("the pool closed the connection")]
    Disconnected,
    #[error("the pool closed the channel: {0}")]
    ChannelClosed(String),
    #[error("the pool asked to reconnect")]
    Reconnect,
    #[error("timed out {0}")]
    Timeout(&'static str),
}

impl From<ConnectionError<MinerSessionError>> for ConnError {
    fn from(e: ConnectionError<MinerSessionError>) -> Self {
        match e {
            ConnectionError::Io(e) => ConnError::Io(e),
            ConnectionError::Noise(e) => ConnError::Noise(e),
            ConnectionError::Protocol(e) => ConnError::Session(e),
            ConnectionError::HandshakeTimeout => ConnError::Timeout("in the handshake"),
            ConnectionError::SetupTimeout => ConnError::Timeout("setting up"),
            ConnectionError::Idle => ConnError::Timeout("idle"),
            ConnectionError::SlowReader(_) => ConnError::Timeout("writing"),
            // A line too long cannot happen on a Noise connection, nor held output (a pool's)
            // on a miner's.
            ConnectionError::Closed
            | ConnectionError::Shutdown
            | ConnectionError::Ended
            | ConnectionError::LineTooLong(_)
            | ConnectionError::OutputHeld(_) => ConnError::Disconnected,
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ConnError {
    /// The error's category in the report.
    pub(crate) fn category(&self, during_setup: bool) -> &'static str {
        match self {
            ConnError::Connect(_) => "connect",
            ConnError::Noise(_) => "noise",
            ConnError::Session(MinerSessionError::SetupRefused { .. })
            | ConnError::Session(MinerSessionError::ChannelRefused(_)) => "setup refused",
            ConnError::Timeout(_) => "timeout",
            ConnError::Disconnected | ConnError::Io(_) if during_setup => "disconnect during setup",
            ConnError::Disconnected | ConnError::Io(_) => "disconnect",
            ConnError::ChannelClosed(_) | ConnError::Reconnect => "channel closed",
            ConnError::Wire(_) | ConnError::Session(_) => "protocol",
        }
    }

    /// The SV2 error code the pool gave (SetupConnection.Error, OpenMiningChannel.Error,
    /// CloseChannel), so that the report counts each code apart.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            ConnError::Session(MinerSessionError::SetupRefused { code, .. })
            | ConnError::Session(MinerSessionError::ChannelRefused(code))
            | ConnError::ChannelClosed(code) => Some(code),
            _ => None,
        }
    }

    /// Whether a connection that failed this way is worth making again (with `--reconnect`):
    /// the pool asked, or the connection broke; not a refusal or a protocol error.
    fn worth_reconnecting(&self) -> bool {
        matches!(
            self,
            ConnError::Reconnect
                | ConnError::Disconnected
                | ConnError::Io(_)
                | ConnError::ChannelClosed(_)
        )
    }

    /// Counts the error in the report: by category and, where the pool gave one, its code.
    fn report(&self, ctx: &Ctx, during_setup: bool) {
        match self.code() {
            Some(code) => ctx.error_code(self.category(during_setup), code),
            None => ctx.error(self.category(during_setup), self),
        }
    }
}

/// What one connection did under load.
#[derive(Debug, Default, Clone)]
pub(crate) struct ConnTotals {
    /// The connection's index (its channel's user_identity ends in `.index`); `None` for one
    /// that never set up.
    pub index: Option<usize>,
    pub submitted: u64,
    pub acked: u64,
    pub rejected: u64,
    pub unacked: u64,
    pub dropped: u64,
    pub hash_attempts: u64,
    pub too_hard: u64,
}

/// A connection and its socket.
struct Conn<P: ClientProtocol> {
    stream: TcpStream,
    conn: Connection<P>,
    /// Ciphertext staging buffer (swapped with the connection's, never copied).
    wire: Vec<u8>,
}

impl<P: ClientProtocol> Conn<P> {
    /// Reads what the socket has (through the thread's scratch buffer) into the connection,
    /// which decrypts it and hands it to the session; 0 means end of stream.
    async fn read_some(&mut self) -> Result<usize, ConnError> {
        let Conn { stream, conn, .. } = self;
        std::future::poll_fn(|cx| {
            SCRATCH.with_borrow_mut(|buf| {
                let mut rb = ReadBuf::new(&mut buf[..]);
                match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let filled = rb.filled();
                        if filled.is_empty() {
                            return Poll::Ready(Ok(0));
                        }
                        Poll::Ready(
                            conn.handle_wire(filled, unix_ms())
                                .map(|()| filled.len())
                                .map_err(ConnError::from),
                        )
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                    Poll::Pending => Poll::Pending,
                }
            })
        })
        .await
    }

    /// Sends whatever the connection queued.
    async fn flush(&mut self) -> Result<(), ConnError> {
        if self.conn.poll_transmit(&mut self.wire) {
            self.stream.write_all(&self.wire).await?;
            self.wire.clear();
        }
        Ok(())
    }

    /// Closes the channel politely and the socket.
    async fn close(mut self) {
        let _ = self.conn.with_protocol(|s| s.session_mut().close("done"));
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

/// Makes real shares on one job cheaply: the header's first 64 bytes are compressed once, so
/// each nonce costs two compressions (SHA-NI where the CPU has it).
struct ShareMaker {
    generation: u64,
    mid: sha256::Midstate,
    /// Header bytes 64..80 and padding; the nonce at 12..16.
    tail: [u8; 64],
    /// The first digest and the padding of a 32-byte message.
    digest: [u8; 64],
    target: Target,
    share: Share,
}

impl ShareMaker {
    /// Prepares shares for `work` with this connection's fixed extranonce (the pool's
    /// per-channel extranonce prefix already makes it unique).
    fn new(work: &MiningWork) -> Self {
        let (root, extranonce) = match &work.job {
            JobKind::Standard { merkle_root } => (*merkle_root, Vec::new()),
            JobKind::Extended {
                coinbase_prefix,
                coinbase_suffix,
                merkle_path,
                extranonce_prefix,
                extranonce_size,
            } => {
                let extranonce = vec![0u8; *extranonce_size];
                let mut e = sha256::Hash::engine();
                e.input(coinbase_prefix);
                e.input(extranonce_prefix);
                e.input(&extranonce);
                e.input(coinbase_suffix);
                let first = sha256::Hash::from_engine(e);
                let txid = sha256::Hash::hash(first.as_byte_array()).to_byte_array();
                let root = fold_merkle_path(Txid::from_byte_array(txid), merkle_path);
                (root.to_byte_array(), extranonce)
            }
        };
        let mut first = [0u8; 64];
        first[0..4].copy_from_slice(&work.version.to_le_bytes());
        first[4..36].copy_from_slice(&work.prev_hash);
        first[36..64].copy_from_slice(&root[..28]);
        let mid = compress(IV, &first);
        let mut tail = [0u8; 64];
        tail[0..4].copy_from_slice(&root[28..]);
        tail[4..8].copy_from_slice(&work.ntime.to_le_bytes());
        tail[8..12].copy_from_slice(&work.nbits.to_le_bytes());
        tail[16] = 0x80;
        tail[56..].copy_from_slice(&(80u64 * 8).to_be_bytes());
        let mut digest = [0u8; 64];
        digest[32] = 0x80;
        digest[56..].copy_from_slice(&(32u64 * 8).to_be_bytes());
        ShareMaker {
            generation: work.generation,
            mid: sha256::Midstate(mid),
            tail,
            digest,
            target: Target::from_le_bytes(work.target),
            share: Share {
                channel_id: work.channel_id,
                job_id: work.job_id,
                generation: work.generation,
                nonce: 0,
                ntime: work.ntime,
                version: work.version,
                extranonce,
                hash: [0; 32],
            },
        }
    }

    /// The next share: tries nonces until one meets the target. `attempts` counts hashes.
    #[inline]
    fn next(&mut self, attempts: &mut u64) -> Option<&Share> {
        for _ in 0..MAX_ATTEMPTS_PER_SHARE {
            let nonce = self.share.nonce.wrapping_add(1);
            self.share.nonce = nonce;
            self.tail[12..16].copy_from_slice(&nonce.to_le_bytes());
            let h1 = compress(self.mid, &self.tail);
            self.digest[..32].copy_from_slice(&h1);
            let hash = compress(IV, &self.digest);
            *attempts += 1;
            if self.target.is_met_by(BlockHash::from_byte_array(hash)) {
                self.share.hash = hash;
                return Some(&self.share);
            }
        }
        None
    }
}

/// Shares in flight and the counters of one connection.
struct Load<'a> {
    ctx: &'a Ctx,
    maker: Option<ShareMaker>,
    /// (sequence number, sent at), oldest first.
    pending: VecDeque<(u32, Instant)>,
    totals: ConnTotals,
}

impl Load<'_> {
    /// Rebuilds the share maker when the session's work changed.
    fn refresh<P: ClientProtocol>(&mut self, conn: &Connection<P>) {
        let session = conn.protocol().session();
        let generation = session.generation();
        if self.maker.as_ref().map(|m| m.generation) == Some(generation) {
            return;
        }
        self.maker = session.work().map(|w| ShareMaker::new(w));
    }

    /// Makes and queues one share; false if none could be made.
    fn submit<P: ClientProtocol>(&mut self, conn: &mut Connection<P>) -> bool {
        let Some(maker) = self.maker.as_mut() else {
            return false;
        };
        let Some(share) = maker.next(&mut self.totals.hash_attempts) else {
            self.totals.too_hard += 1;
            self.ctx.error(
                "no share found",
                &format_args!("{MAX_ATTEMPTS_PER_SHARE} nonces missed the target (is the pool's difficulty near 1e-12?)"),
            );
            return false;
        };
        match conn.with_protocol(|s| s.session_mut().submit(share)) {
            Ok(Ok(seq)) => {
                self.pending.push_back((seq, Instant::now()));
                self.totals.submitted += 1;
                true
            }
            Err(e) => {
                self.totals.dropped += 1;
                self.ctx.error("share not sent", &e);
                false
            }
            Ok(Err(why)) => {
                self.totals.dropped += 1;
                self.ctx.error("share dropped by the miner session", &why);
                false
            }
        }
    }

    /// Accounts acknowledgements and rejections; an error ends the connection.
    fn events<P: ClientProtocol>(
        &mut self,
        conn: &mut Connection<P>,
        now: Instant,
    ) -> Result<(), ConnError> {
        let mut fatal = None;
        while let Some(event) = conn.poll_event() {
            match event {
                MinerEvent::SharesAccepted {
                    last_sequence_number,
                    ..
                } => {
                    // Every share up to last_sequence_number (wrapping) is covered.
                    while let Some(&(seq, sent)) = self.pending.front() {
                        if (last_sequence_number.wrapping_sub(seq) as i32) < 0 {
                            break;
                        }
                        self.pending.pop_front();
                        self.totals.acked += 1;
                        self.ctx
                            .latency
                            .record(now.saturating_duration_since(sent).as_nanos() as u64);
                    }
                }
                MinerEvent::ShareRejected {
                    sequence_number,
                    code,
                } => {
                    if let Some(i) = self.pending.iter().position(|p| p.0 == sequence_number) {
                        self.pending.remove(i);
                    }
                    self.totals.rejected += 1;
                    self.ctx.error_code("share rejected", &code);
                }
                MinerEvent::ChannelClosed { reason } => {
                    fatal = Some(ConnError::ChannelClosed(reason));
                }
                MinerEvent::Reconnect { .. } => fatal = Some(ConnError::Reconnect),
                _ => {}
            }
        }
        fatal.map_or(Ok(()), Err)
    }
}

/// The first steps of connection `index`, either protocol: a place among the connections
/// setting up (held until the first work), the setup's start, the TCP connection, and the
/// channel's configuration (user_identity `USER.index`).
struct Dialed<'a> {
    _permit: Result<tokio::sync::SemaphorePermit<'a>, tokio::sync::AcquireError>,
    started: Instant,
    stream: TcpStream,
    config: MinerConfig,
}

async fn dial(ctx: &Ctx, index: usize) -> Result<Dialed<'_>, ConnError> {
    let permit = ctx.connect_permits.acquire().await;
    let started = Instant::now();
    let stream = TcpStream::connect(ctx.addr)
        .await
        .map_err(ConnError::Connect)?;
    stream.set_nodelay(true)?;
    let mut config = ctx.miner.clone();
    config.user_identity = format!("{}.{index}", ctx.miner.user_identity);
    Ok(Dialed {
        _permit: permit,
        started,
        stream,
        config,
    })
}

/// Connect, handshake, setup, channel open and first work.
async fn establish(
    ctx: &Ctx,
    index: usize,
    initiator: Initiator,
) -> Result<Conn<MinerSession>, ConnError> {
    let Dialed {
        _permit,
        started,
        stream,
        config,
    } = dial(ctx, index).await?;
    let session = MinerSession::new(config)?;
    // The whole setup is bounded by the caller's `setup_timeout`; the connection's own
    // deadlines say the same and are not polled here.
    let conn = Connection::with_initiator(session, initiator, conn_config(ctx), unix_ms());
    first_work(ctx, stream, conn, started).await
}

/// Connect, mining.configure/subscribe/authorize (Stratum V1) and first work.
async fn establish_sv1(ctx: &Ctx, index: usize) -> Result<Conn<Sv1MinerSession>, ConnError> {
    let Dialed {
        _permit,
        started,
        stream,
        config,
    } = dial(ctx, index).await?;
    let session = Sv1MinerSession::new(config)?;
    let conn = Connection::connect_lines(session, conn_config(ctx), unix_ms());
    first_work(ctx, stream, conn, started).await
}

/// How a connection of protocol `P` is made again (a reconnection during the load).
trait Establish: ClientProtocol + Sized {
    fn again(ctx: &Ctx, index: usize)
    -> impl Future<Output = Result<Conn<Self>, ConnError>> + Send;
}

impl Establish for MinerSession {
    /// With a fresh Noise initiator.
    async fn again(ctx: &Ctx, index: usize) -> Result<Conn<Self>, ConnError> {
        let authority = ctx.authority.ok_or(ConnError::Disconnected)?;
        let initiator = Initiator::new(authority, &mut StdRng::from_entropy());
        establish(ctx, index, initiator).await
    }
}

impl Establish for Sv1MinerSession {
    fn again(
        ctx: &Ctx,
        index: usize,
    ) -> impl Future<Output = Result<Conn<Self>, ConnError>> + Send {
        establish_sv1(ctx, index)
    }
}

fn conn_config(ctx: &Ctx) -> ConnectionConfig {
    let limit = ctx.setup_timeout.as_millis() as u64;
    ConnectionConfig {
        handshake_timeout_ms: limit,
        setup_timeout_ms: limit,
        idle_timeout_ms: None,
        max_payload_len: crate::noise::DEFAULT_MAX_PAYLOAD_LEN,
    }
}

/// Runs the connection until the session has work (its channel is open).
async fn first_work<P: ClientProtocol>(
    ctx: &Ctx,
    stream: TcpStream,
    conn: Connection<P>,
    started: Instant,
) -> Result<Conn<P>, ConnError> {
    let mut conn = Conn {
        stream,
        conn,
        wire: Vec::with_capacity(256),
    };
    conn.flush().await?;
    while conn.conn.protocol().session().work().is_none() {
        if conn.read_some().await? == 0 {
            return Err(ConnError::Disconnected);
        }
        while let Some(event) = conn.conn.poll_event() {
            match event {
                MinerEvent::ChannelClosed { reason } => {
                    return Err(ConnError::ChannelClosed(reason));
                }
                MinerEvent::Reconnect { .. } => return Err(ConnError::Reconnect),
                _ => {}
            }
        }
        conn.flush().await?;
    }
    ctx.setup_latency
        .record(started.elapsed().as_nanos() as u64);
    Ok(conn)
}

/// Settles the phase counters the orchestrator waits on, however the task ends.
struct Settle<'a> {
    ctx: &'a Ctx,
    setup: bool,
    load: bool,
}

impl Settle<'_> {
    fn setup_done(&mut self, ready: bool) {
        if !self.setup {
            self.setup = true;
            if ready {
                self.ctx.ready.fetch_add(1, Ordering::Relaxed);
                let at = self.ctx.t0.elapsed().as_nanos() as u64;
                self.ctx.last_ready_ns.fetch_max(at, Ordering::Relaxed);
            }
            self.ctx.setup_settled.fetch_add(1, Ordering::AcqRel);
            self.ctx.notify.notify_one();
        }
    }

    fn load_done(&mut self) {
        if !self.load {
            self.load = true;
            self.ctx.load_settled.fetch_add(1, Ordering::AcqRel);
            self.ctx.notify.notify_one();
        }
    }
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        self.setup_done(false);
        self.load_done();
    }
}

/// Waits for the orchestrator to move past `Phase::Setup`; None means close.
async fn wait_phase(
    phase: &mut tokio::sync::watch::Receiver<Phase>,
    past: fn(&Phase) -> bool,
) -> Phase {
    loop {
        let p = *phase.borrow_and_update();
        if past(&p) {
            return p;
        }
        if phase.changed().await.is_err() {
            return Phase::Close;
        }
    }
}

/// One connection's whole life: SV2 with a Noise initiator, Stratum V1 without.
pub(crate) async fn connection(
    ctx: Arc<Ctx>,
    index: usize,
    initiator: Option<Initiator>,
) -> ConnTotals {
    let ctx = &*ctx;
    match initiator {
        Some(initiator) => life(ctx, index, establish(ctx, index, initiator)).await,
        None => life(ctx, index, establish_sv1(ctx, index)).await,
    }
}

async fn life<P: Establish>(
    ctx: &Ctx,
    index: usize,
    establish: impl std::future::Future<Output = Result<Conn<P>, ConnError>>,
) -> ConnTotals {
    let mut settle = Settle {
        ctx,
        setup: false,
        load: false,
    };
    let mut phase = ctx.phase.clone();
    let established = timeout(ctx.setup_timeout, establish)
        .await
        .unwrap_or(Err(ConnError::Timeout("setting up")));
    let mut conn = match established {
        Ok(c) => c,
        Err(e) => {
            e.report(ctx, true);
            return ConnTotals::default();
        }
    };
    settle.setup_done(true);
    let mut load = Load {
        ctx,
        maker: None,
        pending: VecDeque::with_capacity(ctx.window.max(8)),
        totals: ConnTotals {
            index: Some(index),
            ..ConnTotals::default()
        },
    };
    if let Phase::Load(go) = wait_phase(&mut phase, |p| *p != Phase::Setup).await {
        let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
        loop {
            let Err(e) = run_load(&mut conn, &mut load, index, go).await else {
                break;
            };
            load.totals.unacked += load.pending.len() as u64;
            load.pending.clear();
            let asked = matches!(e, ConnError::Reconnect);
            if !(ctx.reconnect && e.worth_reconnecting() && Instant::now() < go + ctx.duration) {
                e.report(ctx, false);
                return load.totals;
            }
            conn.close().await;
            match reconnect(ctx, index, go, asked, &mut backoff).await {
                Some(c) => conn = c,
                None => {
                    settle.load_done();
                    return load.totals;
                }
            }
            // The new session's work and extranonce: shares are made afresh.
            load.maker = None;
            ctx.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        settle.load_done();
        wait_phase(&mut phase, |p| *p == Phase::Close).await;
    }
    settle.load_done();
    conn.close().await;
    load.totals
}

/// Shortest and longest wait before connecting again after a failure.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Connects again for connection `index` during the load that started at `go`: after a
/// little jitter when the pool asked (`asked`), else after `backoff`'s delay, and again after
/// each failure, until the load's end (`None` then).
async fn reconnect<P: Establish>(
    ctx: &Ctx,
    index: usize,
    go: Instant,
    asked: bool,
    backoff: &mut Backoff,
) -> Option<Conn<P>> {
    let end = go + ctx.duration;
    // `StdRng`: the generator is held across awaits (the thread's is not `Send`).
    let mut rng = StdRng::from_entropy();
    let mut delay = if asked {
        jitter(RECONNECT_JITTER, &mut rng)
    } else {
        backoff.next_delay(&mut rng)
    };
    loop {
        if Instant::now() + delay >= end {
            return None;
        }
        tokio::time::sleep(delay).await;
        match timeout(ctx.setup_timeout, P::again(ctx, index)).await {
            Ok(Ok(conn)) => {
                backoff.reset();
                return Some(conn);
            }
            Ok(Err(e)) => ctx.error("reconnect failed (retried)", &e),
            Err(_) => ctx.error("reconnect failed (retried)", &"timed out setting up"),
        }
        delay = backoff.next_delay(&mut rng);
    }
}

/// What woke the load loop.
enum Wake {
    Read(Result<usize, ConnError>),
    Tick,
    End,
    GraceOver,
}

async fn run_load<P: ClientProtocol>(
    conn: &mut Conn<P>,
    load: &mut Load<'_>,
    index: usize,
    go: Instant,
) -> Result<(), ConnError> {
    let ctx = load.ctx;
    let end = go + ctx.duration;
    let mut ticker = (ctx.rate > 0.0).then(|| {
        let period = Duration::from_secs_f64(1.0 / ctx.rate);
        // Spread the connections' ticks over the period.
        let offset = period.mul_f64((index as f64 * 0.618_034).fract());
        let mut t = tokio::time::interval_at(go + offset, period);
        t.set_missed_tick_behavior(MissedTickBehavior::Skip);
        t
    });
    let deadline = tokio::time::sleep_until(end);
    tokio::pin!(deadline);
    let mut running = true;
    tokio::time::sleep_until(go).await;
    load.refresh(&conn.conn);
    loop {
        if running && ticker.is_none() {
            while load.pending.len() < ctx.window {
                if !load.submit(&mut conn.conn) {
                    break;
                }
            }
        }
        conn.flush().await?;
        if !running && load.pending.is_empty() {
            return Ok(());
        }
        let wake = tokio::select! {
            r = conn.read_some() => Wake::Read(r),
            _ = async {
                match ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            }, if running && ticker.is_some() => Wake::Tick,
            _ = &mut deadline => if running { Wake::End } else { Wake::GraceOver },
        };
        match wake {
            Wake::Read(r) => {
                if r? == 0 {
                    return Err(ConnError::Disconnected);
                }
                let now = Instant::now();
                load.events(&mut conn.conn, now)?;
                load.refresh(&conn.conn);
            }
            Wake::Tick => {
                load.submit(&mut conn.conn);
            }
            Wake::End => {
                running = false;
                deadline.as_mut().reset(end + ctx.grace);
            }
            Wake::GraceOver => {
                let n = load.pending.len() as u64;
                load.totals.unacked += n;
                load.pending.clear();
                ctx.error_code("unacknowledged at the end", &n.to_string());
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_maker_hash_is_the_header_sha256d() {
        let work = MiningWork {
            generation: 1,
            job_seq: 1,
            channel_id: 3,
            job_id: 9,
            version: 0x2000_0000,
            version_rolling_allowed: false,
            prev_hash: [7; 32],
            nbits: 0x1d00_ffff,
            ntime: 1_700_000_000,
            target: [0xff; 32],
            job: JobKind::Standard {
                merkle_root: [5; 32],
            },
        };
        let mut maker = ShareMaker::new(&work);
        let mut attempts = 0;
        let share = maker.next(&mut attempts).unwrap().clone();
        let mut header = [0u8; 80];
        header[0..4].copy_from_slice(&work.version.to_le_bytes());
        header[4..36].copy_from_slice(&work.prev_hash);
        header[36..68].copy_from_slice(&[5; 32]);
        header[68..72].copy_from_slice(&work.ntime.to_le_bytes());
        header[72..76].copy_from_slice(&work.nbits.to_le_bytes());
        header[76..80].copy_from_slice(&share.nonce.to_le_bytes());
        assert_eq!(share.hash, crate::client::hasher::header_hash(&header));
        assert_eq!(attempts, 1);
    }
}
