//! The tokio driver of the CPU miner: TCP, and a [`Connection`] (Noise NX as initiator, its
//! deadlines) carrying the [`MinerSession`] state machine, with hashing threads fed through a
//! [`WorkSlot`]. A client with needs of its own (hashing threads, a share queue), so it has
//! its own loop rather than the servers' shell.
//!
//! One task owns the socket and the session; hashing runs on plain `std::thread`s (CPU-bound
//! work must not sit on the async runtime) and sends found shares back over a bounded channel,
//! so a flood of easy shares slows the hashers instead of growing memory.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};

use super::hasher::{Hasher, WorkSlot};
use super::miner::{
    ChannelKind, MinerConfig, MinerEvent, MinerSession, MinerSessionError, NtimePolicy, Share,
};
use super::sv1::Sv1MinerSession;
use crate::connection::{Connection, ConnectionConfig, ConnectionError, Protocol};
use crate::noise::NoiseError;
use crate::noise::keys::{KeyError, decode_public_key};
use crate::wire::WireError;

/// How long TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the pool may take to answer the Noise handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Found shares buffered between hashers and the driver.
const SHARE_QUEUE: usize = 1024;
/// How long the pool may take to set up the connection and open the channel.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the hashrate is logged.
const HASHRATE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What to mine, where, and for how long.
#[derive(Debug, Clone)]
pub struct MinerOptions {
    /// Pool address, `host:port` (a `scheme://` prefix and a `/...` suffix are ignored).
    pub url: String,
    /// The pool's authority public key in SRI's base58check text form.
    pub authority_pubkey: String,
    /// Hashing threads (at least 1).
    pub threads: usize,
    /// Standard or extended channel.
    pub channel: ChannelKind,
    /// `user_identity` of the channel.
    pub user: String,
    /// Announced hashrate in h/s (0: let the pool start at its easiest target).
    pub nominal_hash_rate: f32,
    /// Stop after this many accepted shares.
    pub max_shares: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// How header nTimes are chosen (default: the job's, rolled when a job's space is spent).
    pub ntime: NtimePolicy,
    /// Speak Stratum V1 (plaintext JSON-RPC; `authority_pubkey` is not used) instead of SV2.
    pub sv1: bool,
}

impl Default for MinerOptions {
    fn default() -> Self {
        MinerOptions {
            url: "127.0.0.1:3333".into(),
            authority_pubkey: String::new(),
            threads: 1,
            channel: ChannelKind::Extended,
            user: "blvm-cpu-miner".into(),
            nominal_hash_rate: 0.0,
            max_shares: None,
            duration: None,
            ntime: NtimePolicy::default(),
            sv1: false,
        }
    }
}

/// Why [`run_miner`] returned normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// `max_shares` shares were accepted.
    MaxShares,
    /// `duration` elapsed.
    Duration,
    /// The shutdown future completed.
    Shutdown,
    /// The pool closed the channel (with its reason code).
    ChannelClosed(String),
    /// The pool asked us to reconnect elsewhere (reconnecting is the caller's choice).
    Reconnect {
        /// New host; empty means the same host.
        host: String,
        /// New port; 0 means the same port.
        port: u16,
    },
}

/// What a mining run achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct MinerReport {
    /// Why the run ended.
    pub stop: StopReason,
    /// Shares sent to the pool.
    pub shares_submitted: u64,
    /// Shares the pool acknowledged.
    pub shares_accepted: u64,
    /// Shares the pool refused, by error code.
    pub shares_rejected: BTreeMap<String, u64>,
    /// Shares found but not sent (stale job or target raised meanwhile).
    pub shares_dropped: u64,
    /// Jobs received.
    pub jobs_received: u64,
    /// SetNewPrevHash messages received.
    pub prev_hashes_received: u64,
    /// Hashes computed by all threads.
    pub hashes: u64,
    /// Time from connection to the end of the run.
    pub elapsed: Duration,
}

impl MinerReport {
    /// Average hashrate over the run, in h/s.
    pub fn hashrate(&self) -> f64 {
        self.hashes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Why a mining run failed.
#[derive(Debug, thiserror::Error)]
pub enum MinerError {
    /// The options cannot work.
    #[error("invalid miner options: {0}")]
    Options(String),
    /// The authority key does not decode.
    #[error("authority public key: {0}")]
    AuthorityKey(#[from] KeyError),
    /// TCP connect failed.
    #[error("connecting to {url}: {source}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        source: std::io::Error,
    },
    /// A step took too long.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// Socket error after connecting.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// Handshake or transport failure (bad certificate, bad MAC, ...).
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    /// A decrypted frame that is not one SV2 frame.
    #[error("framing: {0}")]
    Wire(#[from] WireError),
    /// The mining protocol failed (setup or channel refused, protocol violation).
    #[error(transparent)]
    Session(#[from] MinerSessionError),
    /// The pool closed the TCP connection.
    #[error("pool closed the connection")]
    Closed,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl From<ConnectionError<MinerSessionError>> for MinerError {
    fn from(e: ConnectionError<MinerSessionError>) -> Self {
        match e {
            ConnectionError::Io(e) => MinerError::Io(e),
            ConnectionError::HandshakeTimeout => {
                MinerError::Timeout("waiting for the Noise handshake reply")
            }
            ConnectionError::SetupTimeout => MinerError::Timeout("waiting for the channel to open"),
            ConnectionError::Noise(e) => MinerError::Noise(e),
            ConnectionError::Protocol(e) => MinerError::Session(e),
            ConnectionError::Idle => MinerError::Timeout("idle"),
            ConnectionError::SlowReader(_) => MinerError::Timeout("writing to the pool"),
            // A line too long cannot happen on a Noise connection, nor held output (a pool's)
            // on a miner's.
            ConnectionError::Closed
            | ConnectionError::Shutdown
            | ConnectionError::Ended
            | ConnectionError::LineTooLong(_)
            | ConnectionError::OutputHeld(_) => MinerError::Closed,
        }
    }
}

/// `host:port` from a URL-ish string (an IPv6 host without its brackets).
pub(crate) fn host_port(url: &str) -> Result<(String, u16), MinerError> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let addr = rest.split('/').next().unwrap_or(rest);
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| MinerError::Options(format!("url {url:?} is not host:port")))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| MinerError::Options(format!("url {url:?} has no valid port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), port))
}

/// Connects to the pool, mines until `max_shares` accepted shares, `duration`, the pool
/// closing the channel, or `shutdown` completing, and reports what happened.
///
/// ```no_run
/// # async fn f() -> Result<(), blvm_stratum_v2::client::MinerError> {
/// use blvm_stratum_v2::client::{ChannelKind, MinerOptions, run_miner};
/// let report = run_miner(
///     MinerOptions {
///         url: "127.0.0.1:3333".into(),
///         authority_pubkey: "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72".into(),
///         threads: 2,
///         channel: ChannelKind::Extended,
///         max_shares: Some(10),
///         ..Default::default()
///     },
///     async { let _ = tokio::signal::ctrl_c().await; },
/// )
/// .await?;
/// println!("{} accepted", report.shares_accepted);
/// # Ok(()) }
/// ```
pub async fn run_miner(
    opts: MinerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<MinerReport, MinerError> {
    if opts.threads == 0 {
        return Err(MinerError::Options("threads must be at least 1".into()));
    }
    let threads =
        u32::try_from(opts.threads).map_err(|_| MinerError::Options("too many threads".into()))?;
    let (host, port) = host_port(&opts.url)?;
    let config = MinerConfig {
        channel: opts.channel,
        user_identity: opts.user.clone(),
        nominal_hash_rate: opts.nominal_hash_rate,
        endpoint_host: host.clone(),
        endpoint_port: port,
        ntime: opts.ntime,
        // Over SV1, BIP310's mining.configure asks for the bits the hashers roll.
        version_rolling: opts.sv1 || MinerConfig::default().version_rolling,
        ..MinerConfig::default()
    };
    let conn_config = ConnectionConfig {
        handshake_timeout_ms: HANDSHAKE_TIMEOUT.as_millis() as u64,
        setup_timeout_ms: SETUP_TIMEOUT.as_millis() as u64,
        idle_timeout_ms: None,
        max_payload_len: crate::noise::DEFAULT_MAX_PAYLOAD_LEN,
    };
    if opts.sv1 {
        if opts.channel != ChannelKind::Extended {
            return Err(MinerError::Options(
                "Stratum V1 mines on extended channels only".into(),
            ));
        }
        let session = Sv1MinerSession::new(config)?;
        let started = Instant::now();
        let stream = connect(&opts.url, &host, port).await?;
        // No handshake: mining.configure and mining.subscribe go out at once.
        let conn = Connection::connect_lines(session, conn_config, unix_ms());
        return mine(conn, stream, &opts, threads, started, shutdown).await;
    }
    let authority = decode_public_key(opts.authority_pubkey.trim())?;
    let session = MinerSession::new(config)?;
    let started = Instant::now();
    let stream = connect(&opts.url, &host, port).await?;
    // The Noise handshake (its first message is queued at once), then SetupConnection and
    // the channel: all through one connection object, with its deadlines.
    let conn = Connection::connect(
        session,
        authority,
        &mut rand::thread_rng(),
        conn_config,
        unix_ms(),
    );
    mine(conn, stream, &opts, threads, started, shutdown).await
}

/// TCP to the pool.
async fn connect(url: &str, host: &str, port: u16) -> Result<TcpStream, MinerError> {
    let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| MinerError::Timeout("connecting"))?
        .map_err(|source| MinerError::Connect {
            url: url.to_owned(),
            source,
        })?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What the driver (and the load generator) needs of the miner's protocol: the SV2
/// [`MinerSession`], or the same behind the Stratum V1 translation ([`Sv1MinerSession`]).
pub(crate) trait ClientProtocol:
    Protocol<Event = MinerEvent, Error = MinerSessionError> + Send
{
    /// The SV2 miner session (counts, work).
    fn session(&self) -> &MinerSession;
    /// The same, to submit shares or close.
    fn session_mut(&mut self) -> &mut MinerSession;
}

impl ClientProtocol for MinerSession {
    fn session(&self) -> &MinerSession {
        self
    }
    fn session_mut(&mut self) -> &mut MinerSession {
        self
    }
}

impl ClientProtocol for Sv1MinerSession {
    fn session(&self) -> &MinerSession {
        Sv1MinerSession::session(self)
    }
    fn session_mut(&mut self) -> &mut MinerSession {
        Sv1MinerSession::session_mut(self)
    }
}

/// Mines over `conn` with the hashing threads until a stop; the report.
async fn mine<P: ClientProtocol>(
    conn: Connection<P>,
    stream: TcpStream,
    opts: &MinerOptions,
    threads: u32,
    started: Instant,
    shutdown: impl Future<Output = ()>,
) -> Result<MinerReport, MinerError> {
    let slot = Arc::new(WorkSlot::new());
    let (tx, mut rx) = mpsc::channel::<Share>(SHARE_QUEUE);
    let mut handles = Vec::with_capacity(opts.threads);
    for index in 0..threads {
        let slot = slot.clone();
        let tx = tx.clone();
        let hasher = Hasher::new(index, threads).with_ntime_rolling(opts.ntime.roll);
        let handle = std::thread::Builder::new()
            .name(format!("hasher-{index}"))
            .spawn(move || slot.run_worker(hasher, |share| tx.blocking_send(share).is_ok()))?;
        handles.push(handle);
    }
    drop(tx);

    let mut driver = Driver {
        conn,
        stream,
        wire: Vec::new(),
        slot: slot.clone(),
        published: 0,
        max_shares: opts.max_shares,
        pool: opts.url.clone(),
    };
    let result = driver.drive(&mut rx, opts.duration, shutdown).await;

    // Stop the threads whatever happened: wake idle ones, unblock any stuck on a full queue.
    slot.stop();
    drop(rx);
    let _ = tokio::task::spawn_blocking(move || {
        for h in handles {
            let _ = h.join();
        }
    })
    .await;

    let stop = result?;
    let session = driver.conn.protocol().session();
    let counts = session.counts();
    let report = MinerReport {
        stop,
        shares_submitted: counts.submitted,
        shares_accepted: counts.accepted,
        shares_rejected: counts.rejected.clone(),
        shares_dropped: counts.dropped,
        jobs_received: session.jobs_received(),
        prev_hashes_received: session.prev_hashes_received(),
        hashes: slot.hashes(),
        elapsed: started.elapsed(),
    };
    info!(
        stop = ?report.stop,
        accepted = report.shares_accepted,
        rejected = report.shares_rejected.values().sum::<u64>(),
        hashrate = report.hashrate(),
        "miner stopped"
    );
    Ok(report)
}

/// What woke the driver.
enum Wake {
    Read(usize),
    Share(Share),
    Tick,
    Timeout,
    Stop(StopReason),
}

struct Driver<P: ClientProtocol> {
    conn: Connection<P>,
    stream: TcpStream,
    /// Ciphertext staging buffer, reused.
    wire: Vec<u8>,
    slot: Arc<WorkSlot>,
    /// Generation of the work last handed to the threads.
    published: u64,
    max_shares: Option<u64>,
    /// For the log.
    pool: String,
}

impl<P: ClientProtocol> Driver<P> {
    async fn drive(
        &mut self,
        shares: &mut mpsc::Receiver<Share>,
        duration: Option<Duration>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<StopReason, MinerError> {
        tokio::pin!(shutdown);
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        let deadline = tokio::time::sleep(duration.unwrap_or(far));
        tokio::pin!(deadline);
        // The connection's own deadlines (handshake, channel open).
        let timer = tokio::time::sleep(far);
        tokio::pin!(timer);
        let mut armed = None;
        let mut ticker = tokio::time::interval(HASHRATE_LOG_INTERVAL);
        ticker.tick().await;
        let mut last_hashes = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        self.flush().await?;
        loop {
            let due = self.conn.poll_timeout();
            if due != armed {
                armed = due;
                if let Some(due) = due {
                    let wait = Duration::from_millis(due.saturating_sub(unix_ms()));
                    timer.as_mut().reset(Instant::now() + wait);
                }
            }
            let wake = tokio::select! {
                _ = &mut shutdown => Wake::Stop(StopReason::Shutdown),
                _ = &mut deadline, if duration.is_some() => Wake::Stop(StopReason::Duration),
                _ = &mut timer, if armed.is_some() => Wake::Timeout,
                n = self.stream.read(&mut buf) => Wake::Read(n?),
                Some(share) = shares.recv() => Wake::Share(share),
                _ = ticker.tick() => Wake::Tick,
            };
            match wake {
                Wake::Stop(reason) => {
                    let _ = self.conn.with_protocol(|s| {
                        s.session_mut().close(match reason {
                            StopReason::Shutdown => "shutdown",
                            _ => "done",
                        })
                    });
                    let _ = self.flush().await;
                    let _ = self.stream.shutdown().await;
                    return Ok(reason);
                }
                Wake::Read(0) => return Err(MinerError::Closed),
                Wake::Read(n) => {
                    let was_established = self.conn.is_established();
                    let handled = self.conn.handle_wire(&buf[..n], unix_ms());
                    if !was_established && self.conn.is_established() {
                        info!(pool = %self.pool, "connected, Noise handshake done");
                    }
                    handled?;
                    if let Some(reason) = self.handle_events() {
                        let _ = self.flush().await;
                        return Ok(reason);
                    }
                    self.publish_work();
                }
                Wake::Timeout => {
                    armed = None;
                    let now = unix_ms();
                    if self.conn.poll_timeout().is_some_and(|d| d <= now) {
                        self.conn.handle_timeout(now)?;
                    }
                }
                Wake::Share(share) => {
                    self.submit(&share);
                    // Take whatever else is queued so that one write carries them all.
                    while let Ok(share) = shares.try_recv() {
                        self.submit(&share);
                    }
                }
                Wake::Tick => {
                    let hashes = self.slot.hashes();
                    let rate = (hashes - last_hashes) as f64 / HASHRATE_LOG_INTERVAL.as_secs_f64();
                    last_hashes = hashes;
                    let counts = self.conn.protocol().session().counts();
                    info!(
                        hashrate = format!("{:.2} MH/s", rate / 1e6),
                        accepted = counts.accepted,
                        rejected = counts.rejected_total(),
                        "hashing"
                    );
                }
            }
            self.flush().await?;
            if let Some(max) = self.max_shares
                && self.conn.protocol().session().counts().accepted >= max
            {
                let _ = self.conn.with_protocol(|s| s.session_mut().close("done"));
                let _ = self.flush().await;
                let _ = self.stream.shutdown().await;
                return Ok(StopReason::MaxShares);
            }
        }
    }

    fn submit(&mut self, share: &Share) {
        // Near the goal, keep only as many shares in flight as could still be needed, so a run
        // stops at exactly `max_shares` accepted.
        if let Some(max) = self.max_shares {
            let counts = self.conn.protocol().session().counts();
            if counts.accepted + counts.pending() >= max {
                return;
            }
        }
        match self.conn.with_protocol(|s| s.session_mut().submit(share)) {
            Err(e) => debug!(job_id = share.job_id, "share not sent: {e}"),
            Ok(Ok(seq)) => debug!(
                seq,
                job_id = share.job_id,
                nonce = share.nonce,
                "share submitted"
            ),
            Ok(Err(why)) => debug!(job_id = share.job_id, %why, "share dropped"),
        }
    }

    /// Logs the session's events; returns a reason to stop if the pool ended the channel.
    fn handle_events(&mut self) -> Option<StopReason> {
        let mut stop = None;
        let accepted_total = self.conn.protocol().session().counts().accepted;
        while let Some(event) = self.conn.poll_event() {
            match event {
                MinerEvent::SetupSucceeded { flags } => {
                    info!(flags = format!("{flags:#x}"), "setup accepted")
                }
                MinerEvent::ChannelOpened {
                    channel_id,
                    extranonce_size,
                    ..
                } => info!(channel_id, extranonce_size, "channel open"),
                MinerEvent::NewJob { job_id, future } => info!(job_id, future, "new job"),
                MinerEvent::NewPrevHash { job_id, prev_hash } => {
                    let mut be = prev_hash;
                    be.reverse();
                    let hex: String = be.iter().map(|b| format!("{b:02x}")).collect();
                    info!(job_id, prev_hash = %hex, "new prev hash")
                }
                MinerEvent::TargetChanged { target } => {
                    let difficulty = crate::mining::target::difficulty_of(&target);
                    info!(difficulty, "new share target")
                }
                MinerEvent::ExtranoncePrefixChanged => info!("new extranonce prefix"),
                MinerEvent::SharesAccepted {
                    count,
                    last_sequence_number,
                    ..
                } => info!(
                    count,
                    last_sequence_number,
                    total = accepted_total,
                    "shares accepted"
                ),
                MinerEvent::ShareRejected {
                    sequence_number,
                    code,
                } => warn!(sequence_number, %code, "share rejected"),
                MinerEvent::ChannelClosed { reason } => {
                    warn!(%reason, "pool closed the channel");
                    stop = Some(StopReason::ChannelClosed(reason));
                }
                MinerEvent::Reconnect { host, port } => {
                    warn!(%host, port, "pool asks to reconnect");
                    stop = Some(StopReason::Reconnect { host, port });
                }
            }
        }
        stop
    }

    /// Hands new work (or none) to the threads when the session's generation moved.
    fn publish_work(&mut self) {
        let session = self.conn.protocol().session();
        let generation = session.generation();
        if generation != self.published {
            self.published = generation;
            self.slot.publish(session.work().cloned());
        }
    }

    /// Sends whatever the connection has queued (handshake bytes or encrypted frames).
    async fn flush(&mut self) -> Result<(), MinerError> {
        if self.conn.poll_transmit(&mut self.wire) {
            self.stream.write_all(&self.wire).await?;
            self.wire.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            host_port("127.0.0.1:3333").unwrap(),
            ("127.0.0.1".into(), 3333)
        );
        assert_eq!(
            host_port("stratum2+tcp://pool.example:34254/9auq").unwrap(),
            ("pool.example".into(), 34254)
        );
        assert!(host_port("nohost").is_err());
    }
}
