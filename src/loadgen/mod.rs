//! A load generator for the pool: many real encrypted Stratum V2 connections (our Noise
//! initiator, codec and [`MinerSession`](crate::client::MinerSession)), each with one extended
//! channel submitting real shares, and a report of what the pool sustained.
//!
//! A run has three phases, every connection moving through them together:
//! 1. **setup**: N connections connect, do the Noise handshake, SetupConnection and open a
//!    channel (at most `connect_concurrency` at a time); this measures handshakes per second
//!    and, with a server pid, the server's CPU time per new connection; then the connections
//!    stay idle for `hold` and the server's resident memory per held connection is read;
//! 2. **load** (if `duration` > 0): every connection submits shares, `rate` per second or (rate
//!    0) keeping `window` shares in flight, for `duration`, then waits up to `grace` for the
//!    last acknowledgements; this measures shares acknowledged per second, the ack latency
//!    (submit to the SubmitShares.Success covering the share), the server CPU per share and
//!    its memory at the end;
//! 3. **close**: channels are closed and sockets shut down.
//!
//! Shares are real but cheap: run the pool with a target near 2^256 (e.g. `--min-difficulty
//! 1e-12 --max-difficulty 1e-12`) on a chain where blocks are rare (`--chain-bits 0x1d00ffff`),
//! so the first nonce tried nearly always qualifies.

mod conn;
pub mod hist;
pub mod procfs;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use crate::client::{ChannelKind, MinerConfig};
use crate::noise::Initiator;
use crate::noise::keys::decode_public_key;
use hist::Histogram;
use procfs::ProcSample;
use secp256k1::XOnlyPublicKey;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Pool address, `host:port`.
    pub url: String,
    /// The pool's authority public key (SRI text form).
    pub authority_pubkey: String,
    /// Connections, each with one extended channel.
    pub connections: usize,
    /// Shares per second per connection; 0: as fast as acknowledged (see `window`).
    pub rate: f64,
    /// With rate 0: shares in flight per connection (1: the next share goes when the previous
    /// is acknowledged).
    pub window: usize,
    /// Length of the load phase; zero: connect, hold, close.
    pub duration: Duration,
    /// Idle time after setup before the server's memory is read and the load starts.
    pub hold: Duration,
    /// How long to wait for the last acknowledgements after the load phase.
    pub grace: Duration,
    /// Connections in setup at the same time.
    pub connect_concurrency: usize,
    /// Setup deadline of each connection.
    pub setup_timeout: Duration,
    /// Worker threads of the load generator's runtime.
    pub threads: usize,
    /// The pool's process id, for its CPU time and memory from /proc.
    pub server_pid: Option<u32>,
    /// user_identity prefix of the channels (".N" is appended).
    pub user: String,
    /// Speak Stratum V1 (the pool's SV1 port; `authority_pubkey` is not used) instead of SV2.
    pub sv1: bool,
    /// Connect again when the pool asks (Reconnect) or a connection drops during the load,
    /// as real miners do (issue 18): the same channel name, the shares in flight counted as
    /// unacknowledged, a delay of up to 250 ms after a Reconnect and a backoff from 100 ms
    /// doubling to 2 s after a failure. Off: such a connection ends and is an error.
    pub reconnect: bool,
}

impl Default for LoadgenOptions {
    fn default() -> Self {
        LoadgenOptions {
            url: "127.0.0.1:3333".into(),
            authority_pubkey: String::new(),
            connections: 1000,
            rate: 0.0,
            window: 1,
            duration: Duration::from_secs(10),
            hold: Duration::from_secs(1),
            grace: Duration::from_secs(2),
            connect_concurrency: 1000,
            setup_timeout: Duration::from_secs(30),
            threads: 1,
            server_pid: None,
            user: "loadgen".into(),
            sv1: false,
            reconnect: false,
        }
    }
}

/// Why a run could not happen at all (failures of single connections are in the report).
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// Options that cannot work.
    #[error("invalid options: {0}")]
    Options(String),
    /// The runtime could not start.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

/// The orchestrator's phase, watched by every connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    Setup,
    /// Load starts at this instant.
    Load(Instant),
    Close,
}

/// State shared by the orchestrator and every connection task.
pub(crate) struct Ctx {
    addr: SocketAddr,
    /// The pool's authority key: new initiators for reconnections (`None`: Stratum V1).
    authority: Option<XOnlyPublicKey>,
    reconnect: bool,
    /// Connections made again during the load.
    reconnects: AtomicU64,
    miner: MinerConfig,
    rate: f64,
    window: usize,
    duration: Duration,
    grace: Duration,
    setup_timeout: Duration,
    connect_permits: Semaphore,
    t0: Instant,
    phase: watch::Receiver<Phase>,
    ready: AtomicUsize,
    setup_settled: AtomicUsize,
    load_settled: AtomicUsize,
    last_ready_ns: AtomicU64,
    notify: Notify,
    setup_latency: Histogram,
    latency: Histogram,
    errors: Mutex<BTreeMap<String, u64>>,
    samples: Mutex<Vec<String>>,
}

/// Error samples kept for the report.
const MAX_SAMPLES: usize = 8;

impl Ctx {
    fn error(&self, category: &str, detail: &dyn std::fmt::Display) {
        self.count_error(category.to_owned(), || detail.to_string());
    }

    fn error_code(&self, category: &str, code: &str) {
        self.count_error(format!("{category}: {code}"), || code.to_owned());
    }

    fn count_error(&self, key: String, detail: impl FnOnce() -> String) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() < MAX_SAMPLES {
            samples.push(format!("{key}: {}", detail()));
        }
        drop(samples);
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Waits until `counter` reaches `n` or `deadline` passes; true if it was reached.
    async fn wait_for(&self, counter: &AtomicUsize, n: usize, deadline: Instant) -> bool {
        loop {
            let notified = self.notify.notified();
            if counter.load(Ordering::Acquire) >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return counter.load(Ordering::Acquire) >= n;
            }
        }
    }
}

/// Latency quantiles in microseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl Latency {
    fn of(h: &Histogram) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.count(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.quantile(0.5)),
            p90_us: us(h.quantile(0.9)),
            p99_us: us(h.quantile(0.99)),
            p999_us: us(h.quantile(0.999)),
            max_us: us(h.max()),
        }
    }

    fn json(&self) -> String {
        format!(
            "{{\"count\": {}, \"mean_us\": {:.1}, \"p50_us\": {:.1}, \"p90_us\": {:.1}, \"p99_us\": {:.1}, \"p999_us\": {:.1}, \"max_us\": {:.1}}}",
            self.count,
            self.mean_us,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us
        )
    }
}

/// How evenly the acknowledgements spread over the connections: with shares sent as fast as
/// acknowledged, a pool that serves some connections again and again while others wait (their
/// state stays in the cache) can show a higher total than one that serves all in turn; this
/// says which one was measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AckSpread {
    /// The fewest any connection had acknowledged.
    pub min: u64,
    /// Tenth percentile.
    pub p10: u64,
    /// Median.
    pub p50: u64,
    /// Ninetieth percentile.
    pub p90: u64,
    /// The most.
    pub max: u64,
    /// The part of all acknowledgements that went to the tenth of the connections with the
    /// most (0.1 when all had the same).
    pub busiest_tenth: f64,
}

impl AckSpread {
    /// The spread of `counts` (one per connection), `None` when there are none.
    pub fn of(counts: impl IntoIterator<Item = u64>) -> Option<Self> {
        let mut sorted: Vec<u64> = counts.into_iter().collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        let total: u64 = sorted.iter().sum();
        let tenth = sorted.len().div_ceil(10);
        let busiest: u64 = sorted.iter().rev().take(tenth).sum();
        Some(AckSpread {
            min: sorted[0],
            p10: at(0.1),
            p50: at(0.5),
            p90: at(0.9),
            max: sorted[sorted.len() - 1],
            busiest_tenth: if total > 0 {
                busiest as f64 / total as f64
            } else {
                0.0
            },
        })
    }

    fn json(&self) -> String {
        format!(
            "{{\"min\": {}, \"p10\": {}, \"p50\": {}, \"p90\": {}, \"max\": {}, \"busiest_tenth\": {:.4}}}",
            self.min, self.p10, self.p50, self.p90, self.max, self.busiest_tenth
        )
    }
}

/// The server's figures (with a server pid).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerFigures {
    /// Server CPU time during the setup phase per connection set up, µs.
    pub cpu_per_connection_us: f64,
    /// Server CPU during the load phase per acknowledged share, µs.
    pub cpu_per_share_us: f64,
    /// Server CPU use during the load phase, in cores.
    pub load_cores: f64,
    /// VmRSS before the first connection, KiB.
    pub rss_before_kib: u64,
    /// VmRSS with every connection set up and idle, KiB.
    pub rss_idle_kib: u64,
    /// (rss_idle - rss_before) per connection, bytes.
    pub rss_idle_per_connection_bytes: f64,
    /// VmRSS at the end of the load phase (connections still open), KiB.
    pub rss_end_kib: u64,
    /// (rss_end - rss_before) per connection, bytes.
    pub rss_end_per_connection_bytes: f64,
    /// Server CPU while the connections were held idle, s (the periodic job refresh and
    /// timers are all it should spend it on).
    pub hold_cpu_s: f64,
    /// How long they were held, s.
    pub hold_secs: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadgenReport {
    /// Connections asked for.
    pub connections: usize,
    /// Connections that completed setup (channel open, first work received).
    pub ready: usize,
    /// Shares per second per connection asked for (0: as fast as acknowledged).
    pub rate: f64,
    /// Shares in flight per connection with rate 0.
    pub window: usize,
    /// Time from the first connect to the last channel open, s.
    pub setup_secs: f64,
    /// ready / setup_secs.
    pub handshakes_per_sec: f64,
    /// Per-connection setup time (connect + Noise + SetupConnection + channel + first job).
    pub setup_latency: Latency,
    /// Length of the load phase, s (0 without one).
    pub duration_secs: f64,
    /// Shares sent.
    pub submitted: u64,
    /// Shares acknowledged by SubmitShares.Success.
    pub acked: u64,
    /// Shares acknowledged per channel (one per connection), by the channel's user_identity
    /// (`USER.INDEX`), in index order: what a share ledger must hold for each (issue 15).
    pub acked_by_channel: Vec<(String, u64)>,
    /// acked / duration.
    pub acked_per_sec: f64,
    /// Submit-to-ack latency.
    pub latency: Latency,
    /// Shares refused by the pool.
    pub rejected: u64,
    /// Shares neither acknowledged nor refused by the end of the grace period, or lost with
    /// their connection.
    pub unacked: u64,
    /// Connections made again during the load (with `reconnect`).
    pub reconnects: u64,
    /// Hashes computed to make shares, per share.
    pub hashes_per_share: f64,
    /// Errors by category (none is the expected result).
    pub errors: BTreeMap<String, u64>,
    /// A few error messages.
    pub error_samples: Vec<String>,
    /// The load generator's own CPU time during setup per connection, µs.
    pub client_cpu_per_connection_us: f64,
    /// The load generator's own CPU time during load per acknowledged share, µs.
    pub client_cpu_per_share_us: f64,
    /// The server's figures, given its pid.
    pub server: Option<ServerFigures>,
}

impl LoadgenReport {
    /// Errors of all kinds.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// A human-readable summary.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "setup: {}/{} connections in {:.3} s = {:.0} handshakes/s (connect+Noise+SetupConnection+channel+first job; per connection p50 {:.2} ms, p99 {:.2} ms)",
            self.ready,
            self.connections,
            self.setup_secs,
            self.handshakes_per_sec,
            self.setup_latency.p50_us / 1000.0,
            self.setup_latency.p99_us / 1000.0
        );
        if self.duration_secs > 0.0 {
            let mode = if self.rate > 0.0 {
                format!("{} shares/s per connection", self.rate)
            } else {
                format!(
                    "as fast as acknowledged, {} in flight per connection",
                    self.window
                )
            };
            let _ = writeln!(
                s,
                "load ({mode}, {:.1} s): {} submitted, {} acknowledged = {:.0} shares/s; {} rejected, {} unacknowledged; {:.2} hashes/share",
                self.duration_secs,
                self.submitted,
                self.acked,
                self.acked_per_sec,
                self.rejected,
                self.unacked,
                self.hashes_per_share
            );
            if self.reconnects > 0 {
                let _ = writeln!(s, "reconnections during the load: {}", self.reconnects);
            }
            let l = &self.latency;
            let _ = writeln!(
                s,
                "ack latency: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs, mean {:.1} µs",
                l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us
            );
            if let Some(a) = self.acked_spread() {
                let _ = writeln!(
                    s,
                    "acknowledged per connection: min {}, p10 {}, median {}, p90 {}, max {}; the busiest tenth of the connections had {:.1}% of them",
                    a.min,
                    a.p10,
                    a.p50,
                    a.p90,
                    a.max,
                    a.busiest_tenth * 100.0
                );
            }
        }
        if self.duration_secs > 0.0 {
            let _ = writeln!(
                s,
                "load generator CPU: {:.1} µs per connection set up, {:.2} µs per acknowledged share",
                self.client_cpu_per_connection_us, self.client_cpu_per_share_us
            );
        } else {
            let _ = writeln!(
                s,
                "load generator CPU: {:.1} µs per connection set up",
                self.client_cpu_per_connection_us
            );
        }
        if let Some(sv) = &self.server {
            if self.duration_secs > 0.0 {
                let _ = writeln!(
                    s,
                    "server CPU: {:.1} µs per new connection, {:.2} µs per acknowledged share ({:.2} cores busy under load)",
                    sv.cpu_per_connection_us, sv.cpu_per_share_us, sv.load_cores
                );
                let _ = writeln!(
                    s,
                    "server memory (VmRSS): {} KiB before, {} KiB with the connections idle = {:.0} bytes per connection; {} KiB at the end of the load = {:.0} bytes per connection",
                    sv.rss_before_kib,
                    sv.rss_idle_kib,
                    sv.rss_idle_per_connection_bytes,
                    sv.rss_end_kib,
                    sv.rss_end_per_connection_bytes
                );
            } else {
                let _ = writeln!(
                    s,
                    "server CPU: {:.1} µs per new connection",
                    sv.cpu_per_connection_us
                );
                let _ = writeln!(
                    s,
                    "server memory (VmRSS): {} KiB before, {} KiB with the connections idle = {:.0} bytes per connection",
                    sv.rss_before_kib, sv.rss_idle_kib, sv.rss_idle_per_connection_bytes
                );
            }
            let _ = writeln!(
                s,
                "server CPU while the connections were held idle: {:.3} s in {:.1} s",
                sv.hold_cpu_s, sv.hold_secs
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(s, "errors: none");
        } else {
            let _ = writeln!(s, "errors: {:?}", self.errors);
            for e in &self.error_samples {
                let _ = writeln!(s, "  e.g. {e}");
            }
        }
        s
    }

    /// How the acknowledgements spread over the connections (none without a load phase).
    pub fn acked_spread(&self) -> Option<AckSpread> {
        if self.duration_secs <= 0.0 {
            return None;
        }
        AckSpread::of(self.acked_by_channel.iter().map(|(_, n)| *n))
    }

    /// The report as a JSON object.
    pub fn to_json(&self) -> String {
        let mut s = String::from("{\n");
        let mut field = |k: &str, v: String| {
            let _ = writeln!(s, "  \"{k}\": {v},");
        };
        field("connections", self.connections.to_string());
        field("ready", self.ready.to_string());
        field("rate", num(self.rate));
        field("window", self.window.to_string());
        field("setup_secs", num(self.setup_secs));
        field("handshakes_per_sec", num(self.handshakes_per_sec));
        field("setup_latency", self.setup_latency.json());
        field("duration_secs", num(self.duration_secs));
        field("submitted", self.submitted.to_string());
        field("acked", self.acked.to_string());
        field("acked_per_sec", num(self.acked_per_sec));
        field("latency", self.latency.json());
        field(
            "acked_per_connection",
            self.acked_spread()
                .map_or_else(|| "null".to_owned(), |a| a.json()),
        );
        field("rejected", self.rejected.to_string());
        field("unacked", self.unacked.to_string());
        field("reconnects", self.reconnects.to_string());
        field("hashes_per_share", num(self.hashes_per_share));
        field(
            "client_cpu_per_connection_us",
            num(self.client_cpu_per_connection_us),
        );
        field("client_cpu_per_share_us", num(self.client_cpu_per_share_us));
        let server = match &self.server {
            None => "null".to_owned(),
            Some(sv) => format!(
                "{{\"cpu_per_connection_us\": {}, \"cpu_per_share_us\": {}, \"load_cores\": {}, \"rss_before_kib\": {}, \"rss_idle_kib\": {}, \"rss_idle_per_connection_bytes\": {}, \"rss_end_kib\": {}, \"rss_end_per_connection_bytes\": {}, \"hold_cpu_s\": {}, \"hold_secs\": {}}}",
                num(sv.cpu_per_connection_us),
                num(sv.cpu_per_share_us),
                num(sv.load_cores),
                sv.rss_before_kib,
                sv.rss_idle_kib,
                num(sv.rss_idle_per_connection_bytes),
                sv.rss_end_kib,
                num(sv.rss_end_per_connection_bytes),
                num(sv.hold_cpu_s),
                num(sv.hold_secs)
            ),
        };
        field("server", server);
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{}: {v}", json_str(k)))
            .collect();
        field("errors", format!("{{{}}}", errors.join(", ")));
        field("error_count", self.error_count().to_string());
        let samples: Vec<String> = self.error_samples.iter().map(|e| json_str(e)).collect();
        let _ = write!(s, "  \"error_samples\": [{}]\n}}\n", samples.join(", "));
        s
    }
}

/// A JSON number (non-finite values become null).
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

/// A JSON string literal.
fn json_str(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Runs the load generator on a runtime of its own (`opts.threads` workers) and reports.
pub fn run(opts: LoadgenOptions) -> Result<LoadgenReport, LoadgenError> {
    if opts.connections == 0 {
        return Err(LoadgenError::Options(
            "connections must be at least 1".into(),
        ));
    }
    if !(opts.rate.is_finite() && opts.rate >= 0.0) {
        return Err(LoadgenError::Options("rate must be 0 or positive".into()));
    }
    if opts.window == 0 || opts.threads == 0 || opts.connect_concurrency == 0 {
        return Err(LoadgenError::Options(
            "window, threads and connect-concurrency must be at least 1".into(),
        ));
    }
    let authority = if opts.sv1 {
        None
    } else {
        Some(
            decode_public_key(opts.authority_pubkey.trim())
                .map_err(|e| LoadgenError::Options(format!("authority public key: {e}")))?,
        )
    };
    let url = opts.url.split_once("://").map_or(&opts.url[..], |(_, r)| r);
    let addr = url
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| LoadgenError::Options(format!("{:?} is not host:port", opts.url)))?;
    // Our sockets, plus a margin for the runtime and files.
    let wanted = opts.connections as u64 + 64;
    match crate::shell::raise_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => eprintln!(
            "warning: open-files limit is {limit} (hard limit), below the {wanted} needed; raise it (ulimit -Hn)"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: cannot raise the open-files limit: {e}"),
    }
    // Ephemeral keys up front: the setup phase then measures the pool, not our key generation.
    let mut rng = rand::thread_rng();
    // (None: Stratum V1, no handshake.)
    let initiators: Vec<Option<Initiator>> = (0..opts.connections)
        .map(|_| authority.map(|a| Initiator::new(a, &mut rng)))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_all()
        .build()
        .map_err(LoadgenError::Runtime)?;
    let report = runtime.block_on(orchestrate(opts, addr, authority, initiators));
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}

fn sample_server(pid: Option<u32>) -> Option<ProcSample> {
    let pid = pid?;
    match procfs::sample(&pid.to_string()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("warning: cannot read /proc/{pid}: {e}");
            None
        }
    }
}

fn sample_self() -> ProcSample {
    procfs::sample("self").unwrap_or(ProcSample {
        cpu: Duration::ZERO,
        rss_kib: 0,
    })
}

async fn orchestrate(
    opts: LoadgenOptions,
    addr: SocketAddr,
    authority: Option<XOnlyPublicKey>,
    initiators: Vec<Option<Initiator>>,
) -> LoadgenReport {
    let n = initiators.len();
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let ctx = Arc::new(Ctx {
        addr,
        authority,
        reconnect: opts.reconnect,
        reconnects: AtomicU64::new(0),
        miner: MinerConfig {
            channel: ChannelKind::Extended,
            user_identity: opts.user.clone(),
            nominal_hash_rate: 0.0,
            endpoint_host: addr.ip().to_string(),
            endpoint_port: addr.port(),
            vendor: "blvm-stratum-v2 loadgen".into(),
            ..MinerConfig::default()
        },
        rate: opts.rate,
        window: opts.window,
        duration: opts.duration,
        grace: opts.grace,
        setup_timeout: opts.setup_timeout,
        connect_permits: Semaphore::new(opts.connect_concurrency),
        t0: Instant::now(),
        phase: phase_rx,
        ready: AtomicUsize::new(0),
        setup_settled: AtomicUsize::new(0),
        load_settled: AtomicUsize::new(0),
        last_ready_ns: AtomicU64::new(0),
        notify: Notify::new(),
        setup_latency: Histogram::new(),
        latency: Histogram::new(),
        errors: Mutex::new(BTreeMap::new()),
        samples: Mutex::new(Vec::new()),
    });

    let server0 = sample_server(opts.server_pid);
    let client0 = sample_self();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, initiator) in initiators.into_iter().enumerate() {
        tasks.spawn(conn::connection(ctx.clone(), i, initiator));
    }
    let setup_deadline = t0 + opts.setup_timeout + Duration::from_secs(5);
    ctx.wait_for(&ctx.setup_settled, n, setup_deadline).await;
    let ready = ctx.ready.load(Ordering::Acquire);
    let setup_secs = Duration::from_nanos(ctx.last_ready_ns.load(Ordering::Relaxed))
        .saturating_sub(t0.saturating_duration_since(ctx.t0))
        .as_secs_f64();
    let server1 = sample_server(opts.server_pid);
    let client1 = sample_self();
    eprintln!("{ready}/{n} connections ready in {setup_secs:.3} s; holding them idle");

    tokio::time::sleep(opts.hold).await;
    let server_idle = sample_server(opts.server_pid);

    let mut server_load = None;
    let mut client_load = None;
    let load = !opts.duration.is_zero() && ready > 0;
    if load {
        let server2 = sample_server(opts.server_pid);
        let client2 = sample_self();
        let go = Instant::now() + Duration::from_millis(20);
        let _ = phase_tx.send(Phase::Load(go));
        eprintln!("load for {:.1} s", opts.duration.as_secs_f64());
        let deadline = go + opts.duration + opts.grace + Duration::from_secs(5);
        ctx.wait_for(&ctx.load_settled, n, deadline).await;
        let elapsed = go.elapsed();
        let server3 = sample_server(opts.server_pid);
        let client3 = sample_self();
        server_load = server2.zip(server3).map(|(a, b)| (a, b, elapsed));
        client_load = Some((client2, client3));
    }
    let _ = phase_tx.send(Phase::Close);

    let mut totals = Vec::with_capacity(n);
    let collect = async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(t) = r {
                totals.push(t);
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .is_err()
    {
        eprintln!("warning: some connections did not close in time");
        tasks.abort_all();
    }

    let sum = |f: fn(&conn::ConnTotals) -> u64| totals.iter().map(f).sum::<u64>();
    let submitted = sum(|t| t.submitted);
    let acked = sum(|t| t.acked);
    let mut acked_by_channel: Vec<(usize, u64)> = totals
        .iter()
        .filter_map(|t| t.index.map(|i| (i, t.acked)))
        .collect();
    acked_by_channel.sort_unstable();
    let acked_by_channel = acked_by_channel
        .into_iter()
        .map(|(i, n)| (format!("{}.{i}", opts.user), n))
        .collect();
    let attempts = sum(|t| t.hash_attempts);
    let duration_secs = if load {
        opts.duration.as_secs_f64()
    } else {
        0.0
    };
    let per = |d: Duration, count: f64| {
        if count > 0.0 {
            d.as_secs_f64() * 1e6 / count
        } else {
            0.0
        }
    };
    let server = match (server0, server1, server_idle) {
        (Some(s0), Some(s1), Some(si)) => {
            let per_conn_bytes = |rss: u64| {
                if ready > 0 {
                    (rss as f64 - s0.rss_kib as f64) * 1024.0 / ready as f64
                } else {
                    0.0
                }
            };
            let (cpu_per_share_us, load_cores, rss_end_kib) = match server_load {
                Some((a, b, wall)) => (
                    per(b.cpu.saturating_sub(a.cpu), acked as f64),
                    b.cpu.saturating_sub(a.cpu).as_secs_f64() / wall.as_secs_f64(),
                    b.rss_kib,
                ),
                None => (0.0, 0.0, si.rss_kib),
            };
            Some(ServerFigures {
                cpu_per_connection_us: per(s1.cpu.saturating_sub(s0.cpu), ready as f64),
                cpu_per_share_us,
                load_cores,
                rss_before_kib: s0.rss_kib,
                rss_idle_kib: si.rss_kib,
                rss_idle_per_connection_bytes: per_conn_bytes(si.rss_kib),
                rss_end_kib,
                rss_end_per_connection_bytes: per_conn_bytes(rss_end_kib),
                hold_cpu_s: si.cpu.saturating_sub(s1.cpu).as_secs_f64(),
                hold_secs: opts.hold.as_secs_f64(),
            })
        }
        _ => None,
    };
    let errors = ctx.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let error_samples = ctx
        .samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    LoadgenReport {
        connections: n,
        ready,
        rate: opts.rate,
        window: opts.window,
        setup_secs,
        handshakes_per_sec: if setup_secs > 0.0 {
            ready as f64 / setup_secs
        } else {
            0.0
        },
        setup_latency: Latency::of(&ctx.setup_latency),
        duration_secs,
        submitted,
        acked,
        acked_by_channel,
        acked_per_sec: if duration_secs > 0.0 {
            acked as f64 / duration_secs
        } else {
            0.0
        },
        latency: Latency::of(&ctx.latency),
        rejected: sum(|t| t.rejected),
        unacked: sum(|t| t.unacked),
        reconnects: ctx.reconnects.load(Ordering::Relaxed),
        hashes_per_share: if submitted > 0 {
            attempts as f64 / submitted as f64
        } else {
            0.0
        },
        errors,
        error_samples,
        client_cpu_per_connection_us: per(client1.cpu.saturating_sub(client0.cpu), ready as f64),
        client_cpu_per_share_us: client_load
            .map_or(0.0, |(a, b)| per(b.cpu.saturating_sub(a.cpu), acked as f64)),
        server,
    }
}

#[cfg(test)]
mod tests {
    use super::AckSpread;

    #[test]
    fn an_even_spread_gives_the_busiest_tenth_a_tenth() {
        let a = AckSpread::of(vec![7; 20]).unwrap();
        assert_eq!((a.min, a.p10, a.p50, a.p90, a.max), (7, 7, 7, 7, 7));
        assert!((a.busiest_tenth - 0.1).abs() < 1e-12);
    }

    #[test]
    fn a_skewed_spread_is_seen() {
        // Ten connections served 100 times each, ninety once each.
        let counts = (0..100).map(|i| if i < 10 { 100 } else { 1 });
        let a = AckSpread::of(counts).unwrap();
        assert_eq!((a.min, a.p50, a.max), (1, 1, 100));
        assert!((a.busiest_tenth - 1000.0 / 1090.0).abs() < 1e-12);
        assert_eq!(AckSpread::of(Vec::new()), None);
        assert_eq!(AckSpread::of(vec![0, 0]).unwrap().busiest_tenth, 0.0);
    }
}
