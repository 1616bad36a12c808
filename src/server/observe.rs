//! What the pool shows of itself to the HTTP server (issue 16): a read-only window on the
//! running server ([`PoolObserver`]) and the few things only the shell sees as they happen
//! ([`Observations`]: the node's answers, when work was last published, the acknowledgement
//! and ledger-commit latencies). Everything else (miners, workers, channels, refusals by
//! reason, found blocks) is read at scrape time from the pool's statistics, so the hot path
//! pays nothing per share for metrics beyond what the statistics already cost.
//!
//! Nothing here hands out a secret: the ledger's location leaves only to open a reader, and
//! the configuration itself is not reachable through the observer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::Shared;
use crate::ledger::LedgerLocation;
use crate::mining::StratumV2Pool;
use crate::shell::{AtomicHistogram, HistogramSnapshot, Refused};

/// Events the shell observes for the metrics: cheap atomics, written where they happen.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    /// From an acknowledgement's making (its last share's arrival) to its release after the
    /// ledger's commit (`held_output`).
    pub(crate) ack_latency: Arc<AtomicHistogram>,
    /// Each group commit of the share ledger.
    pub(crate) ledger_commits: Arc<AtomicHistogram>,
    /// Last time the node answered a template request (ms, 0: never).
    node_ok_ms: AtomicU64,
    /// Last time the node could not be asked (ms, 0: never).
    node_error_ms: AtomicU64,
    /// Failed requests to the node since the start.
    node_errors: AtomicU64,
    /// The first failure after the node's last answer (ms, 0: none): when an outage began.
    node_outage_start_ms: AtomicU64,
    /// When the current work was published (ms, 0: none yet).
    work_published_ms: AtomicU64,
}

impl Observations {
    /// The node answered at `now_ms`.
    pub(crate) fn node_answered(&self, now_ms: u64) {
        self.node_ok_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// The node could not be asked at `now_ms`.
    pub(crate) fn node_failed(&self, now_ms: u64) {
        // The first failure since the last answer starts the outage (a race with an answer
        // at the same moment only moves the start by that moment).
        if self.node_outage_start_ms.load(Ordering::Relaxed)
            <= self.node_ok_ms.load(Ordering::Relaxed)
        {
            self.node_outage_start_ms.store(now_ms, Ordering::Relaxed);
        }
        self.node_error_ms.fetch_max(now_ms, Ordering::Relaxed);
        self.node_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// New work went out at `now_ms`.
    pub(crate) fn work_published(&self, now_ms: u64) {
        self.work_published_ms.store(now_ms, Ordering::Relaxed);
        self.node_answered(now_ms);
    }
}

/// The node as the pool last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHealth {
    /// Whether its last answer came after its last failure.
    pub reachable: bool,
    /// Its last answer (ms since the Unix epoch).
    pub last_answer_ms: Option<u64>,
    /// Its last failure (ms since the Unix epoch).
    pub last_failure_ms: Option<u64>,
    /// Failed requests since the start.
    pub failures: u64,
    /// While unreachable: its first failure after its last answer (ms since the Unix epoch).
    pub unreachable_since_ms: Option<u64>,
    /// The tip the current work builds on: its hash and height.
    pub tip: Option<(String, u32)>,
    /// The current work's height (the next block's).
    pub work_height: Option<u32>,
    /// How long ago the current work was published (ms).
    pub template_age_ms: Option<u64>,
}

/// The pool's limits, as configured (no secret among them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Set-up connections at once.
    pub max_connections: usize,
    /// Connections before setup at once.
    pub max_pre_setup_connections: u32,
    /// Channels open at once, pool-wide.
    pub max_channels: usize,
}

/// A read-only window on a running pool server (cheap to clone): what the HTTP server
/// shows. Reads take the pool's lock for reading only, briefly; callers copy what they need
/// and format it after.
#[derive(Clone)]
pub struct PoolObserver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PoolObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolObserver")
    }
}

impl PoolObserver {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        PoolObserver { shared }
    }

    /// Asks the pool to drain (issue 18, the admin API): it begins at once, and whoever runs
    /// the server stops it ([`super::StratumV2Server::stop_requested`]). Returns whether this
    /// call asked first.
    pub fn request_drain(&self) -> bool {
        self.shared.stop_requests.request(super::StopRequest::Drain)
    }

    /// Runs `read` on the pool under its read lock (keep it short: share acknowledgements
    /// wait for the write lock meanwhile).
    pub fn read_pool<R>(&self, read: impl FnOnce(&StratumV2Pool) -> R) -> R {
        let pool = self.shared.pool.read().unwrap_or_else(|p| p.into_inner());
        read(&pool)
    }

    /// The pool object itself (for tools and tests).
    pub fn pool(&self) -> &Arc<RwLock<StratumV2Pool>> {
        &self.shared.pool
    }

    /// Refused and failed connections since the start, per reason.
    pub fn refusals(&self) -> Vec<(Refused, u64)> {
        self.shared.gate.refusal_totals().collect()
    }

    /// A trusted load balancer's health checks (PROXY v2 LOCAL headers) since the start.
    pub fn proxy_health_checks(&self) -> u64 {
        self.shared.gate.health_checks()
    }

    /// Stratum V1 requests refused before they reach a channel since the start, per reason.
    pub fn sv1_refusals(&self) -> Vec<(crate::sv1::Sv1Refusal, u64)> {
        self.shared.sv1_refusals.snapshot()
    }

    /// Connections open now (set up or not).
    pub fn live_connections(&self) -> usize {
        self.shared.gate.live_connections()
    }

    /// Connections open now, by protocol and state.
    pub fn connection_census(&self) -> super::ConnectionCensus {
        self.shared.gate.census()
    }

    /// Channels open pool-wide (the channel budget's count).
    pub fn channels_open(&self) -> usize {
        self.shared.channels.open()
    }

    /// The configured limits.
    pub fn limits(&self) -> PoolLimits {
        PoolLimits {
            max_connections: self.shared.config.max_connections,
            max_pre_setup_connections: self.shared.config.admission.pre_setup_max,
            max_channels: self.shared.channels.max(),
        }
    }

    /// The node's state at `now_ms`.
    pub fn node_health(&self, now_ms: u64) -> NodeHealth {
        let o = &self.shared.observe;
        let some = |ms: u64| (ms > 0).then_some(ms);
        let ok = o.node_ok_ms.load(Ordering::Relaxed);
        let err = o.node_error_ms.load(Ordering::Relaxed);
        let published = some(o.work_published_ms.load(Ordering::Relaxed));
        let (tip, work_height) = self.read_pool(|p| match p.current_work() {
            Some(w) => (
                Some((w.prev_hash.to_string(), w.height.saturating_sub(1))),
                Some(w.height),
            ),
            None => (None, None),
        });
        let reachable = ok > 0 && ok >= err;
        let outage_start = o.node_outage_start_ms.load(Ordering::Relaxed);
        NodeHealth {
            reachable,
            unreachable_since_ms: (!reachable).then(|| some(outage_start).unwrap_or(err)),
            last_answer_ms: some(ok),
            last_failure_ms: some(err),
            failures: o.node_errors.load(Ordering::Relaxed),
            tip,
            work_height,
            template_age_ms: published.map(|t| now_ms.saturating_sub(t)),
        }
    }

    /// Acknowledgement latency: from a SubmitShares.Success's making (its last share's arrival)
    /// to its release after the ledger's commit (with a ledger; without one acknowledgements
    /// are not held).
    pub fn ack_latency(&self) -> HistogramSnapshot {
        self.shared.observe.ack_latency.snapshot()
    }

    /// Duration of the share ledger's group commits.
    pub fn ledger_commits(&self) -> HistogramSnapshot {
        self.shared.observe.ledger_commits.snapshot()
    }

    /// Whether the pool records shares in a ledger.
    pub fn has_ledger(&self) -> bool {
        self.shared.ledger.is_some()
    }

    /// Where the ledger is, to open a reader of it (the location may hold a password: it is
    /// for opening, never for showing; its `Display` redacts it).
    pub fn ledger_location(&self) -> Option<LedgerLocation> {
        let settings = self.shared.config.ledger.as_ref()?;
        LedgerLocation::parse(&settings.url).ok()
    }

    /// What the webhooks delivered, dropped and gave up, if any is configured.
    pub fn webhook_totals(&self) -> Option<crate::webhook::WebhookTotals> {
        self.shared.notifications.as_ref().map(|n| n.hooks.totals())
    }

    /// The pool's ledger, when it is in memory (`memory:`): a handle for a second reader.
    pub fn memory_ledger(&self) -> Option<crate::ledger::SharedMemoryLedger> {
        self.shared.memory_ledger.clone()
    }

    /// How the pool pays (PPLNS window, fee, accounts and their payout addresses: no secret).
    pub fn payout_policy(&self) -> crate::payout::PayoutPolicy {
        self.shared.config.payout.clone()
    }

    /// The idle timeout after which quiet connections close (ms).
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.shared.config.idle_timeout_ms)
    }
}
