//! The pool's gate: what the listener and the connection tasks share to decide who gets in and
//! who is let go. Admission at accept ([`Admission`]: per source, the pre-setup budget, the
//! handshake rate, the penalty box), the set-up places and their eviction ([`SetupSlots`]),
//! each live connection's stop signal (a per-connection watch the driver loop already watches
//! as its shutdown), and the refusal counts behind the logs ([`LogBudget`]: the first few of
//! each reason per period logged, then one summary line).
//!
//! How a connection learns it is set up or has a channel: the pool's event handler calls
//! [`Gate::on_setup`] and [`Gate::channel_opened`] / [`Gate::channel_closed`] from the
//! session's events; eviction and "pool full" are a `send(true)` on the connection's stop
//! signal. Locks are taken one at a time and never around the pool's lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tracing::{info, warn};

use super::census::{ConnectionCensus, StratumProtocol};

use crate::shell::{
    Admission, AdmissionConfig, Claim, Ending, LogBudget, Refused, SetupSlots, Summary, lock,
};

/// A live connection as the gate knows it.
#[derive(Debug)]
struct LiveConn {
    peer: SocketAddr,
    /// The connection's shutdown: set at pool shutdown, eviction or "pool full".
    stop: watch::Sender<bool>,
    /// Whether it holds a set-up place (and is out of the pre-setup budget).
    set_up: bool,
    /// The protocol it speaks, once told (a port serving both tells by the first bytes).
    protocol: Option<StratumProtocol>,
}

#[derive(Debug, Default)]
struct Live {
    conns: HashMap<u64, LiveConn>,
    shutting_down: bool,
}

/// Admission, set-up places, stop signals and refusal counts of one pool server.
#[derive(Debug)]
pub(crate) struct Gate {
    admission: Mutex<Admission>,
    places: Mutex<SetupSlots>,
    live: Mutex<Live>,
    refusals: LogBudget<Refused>,
    /// Every refusal and failure since the start, per [`Refused::index`] (metrics).
    totals: [AtomicU64; Refused::ALL.len()],
    /// A trusted load balancer's health checks (PROXY v2 LOCAL) since the start: neither
    /// refusals nor failures, counted apart (metrics).
    health_checks: AtomicU64,
}

impl Gate {
    /// `set_up_places` set-up connections at most (the pool's `max_connections`).
    pub(crate) fn new(config: AdmissionConfig, set_up_places: usize, now_ms: u64) -> Self {
        Gate {
            admission: Mutex::new(Admission::new(config, now_ms)),
            places: Mutex::new(SetupSlots::new(set_up_places)),
            live: Mutex::new(Live::default()),
            refusals: LogBudget::new(now_ms),
            totals: std::array::from_fn(|_| AtomicU64::new(0)),
            health_checks: AtomicU64::new(0),
        }
    }

    /// A new connection `id` from `peer`: admitted (its stop signal returned), or refused
    /// (counted and perhaps logged here; the caller closes the socket).
    pub(crate) fn admit(
        &self,
        id: u64,
        peer: SocketAddr,
        now_ms: u64,
    ) -> Option<watch::Receiver<bool>> {
        let mut live = lock(&self.live);
        if live.shutting_down {
            return None;
        }
        if let Err(refusal) = lock(&self.admission).admit(peer.ip(), now_ms) {
            drop(live);
            self.refused(Refused::Admission(refusal), peer);
            return None;
        }
        let (stop, stopped) = watch::channel(false);
        live.conns.insert(
            id,
            LiveConn {
                peer,
                stop,
                set_up: false,
                protocol: None,
            },
        );
        Some(stopped)
    }

    /// Counts a refusal of `peer`; logs it if the budget allows.
    pub(crate) fn refused(&self, reason: Refused, peer: SocketAddr) {
        self.totals[reason.index()].fetch_add(1, Ordering::Relaxed);
        if self.refusals.admit(reason) {
            warn!(%peer, %reason, "connection refused");
        }
    }

    /// Counts a refusal or failure; true when it may be logged one by one.
    pub(crate) fn count(&self, reason: Refused) -> bool {
        self.totals[reason.index()].fetch_add(1, Ordering::Relaxed);
        self.refusals.admit(reason)
    }

    /// A trusted load balancer's health check (a PROXY v2 LOCAL header) came and was closed.
    pub(crate) fn health_check(&self) {
        self.health_checks.fetch_add(1, Ordering::Relaxed);
    }

    /// Health checks since the start.
    pub(crate) fn health_checks(&self) -> u64 {
        self.health_checks.load(Ordering::Relaxed)
    }

    /// Connection `id` completed SetupConnection at `now_ms`: it takes a set-up place (the
    /// oldest channel-less connection is closed to make room when the pool is full) and its
    /// peer is returned, to register the miner. `None`: not a connection of the listener (a
    /// miner driven by endpoint), or no place (it is closed).
    pub(crate) fn on_setup(&self, id: u64, now_ms: u64) -> Option<SocketAddr> {
        let peer = lock(&self.live).conns.get(&id).map(|c| c.peer)?;
        let claim = lock(&self.places).claim(id, now_ms);
        let mut live = lock(&self.live);
        match claim {
            Claim::Full => {
                if let Some(c) = live.conns.get(&id) {
                    c.stop.send_replace(true);
                }
                drop(live);
                self.refused(Refused::PoolFull, peer);
                return None;
            }
            Claim::Evicting(victim) => {
                if let Some(v) = live.conns.get(&victim) {
                    v.stop.send_replace(true);
                    if self.refusals.admit(Refused::Evicted) {
                        info!(conn = victim, peer = %v.peer, by = id, "closing a connection without a channel to make room for a miner");
                    }
                }
            }
            Claim::Granted => {}
        }
        if let Some(c) = live.conns.get_mut(&id) {
            c.set_up = true;
        }
        drop(live);
        lock(&self.admission).set_up(peer.ip());
        Some(peer)
    }

    /// Connection `id` speaks `protocol` (its port's, or told by its first bytes).
    pub(crate) fn protocol_told(&self, id: u64, protocol: StratumProtocol) {
        if let Some(c) = lock(&self.live).conns.get_mut(&id) {
            c.protocol = Some(protocol);
        }
    }

    /// The live connections, by protocol and state (one pass over the table, for a scrape).
    pub(crate) fn census(&self) -> ConnectionCensus {
        let mut census = ConnectionCensus::default();
        for c in lock(&self.live).conns.values() {
            census.count(c.protocol, c.set_up);
        }
        census
    }

    /// Whether connection `id` holds a set-up place.
    pub(crate) fn is_set_up(&self, id: u64) -> bool {
        lock(&self.live).conns.get(&id).is_some_and(|c| c.set_up)
    }

    /// Connection `id` opened a channel (it is no longer evicted to make room).
    pub(crate) fn channel_opened(&self, id: u64) {
        lock(&self.places).channel_opened(id);
    }

    /// Connection `id` closed a channel.
    pub(crate) fn channel_closed(&self, id: u64) {
        lock(&self.places).channel_closed(id);
    }

    /// Connection `id` ended at `now_ms`; `failed`: it failed its handshake or setup (towards
    /// the penalty box). Returns whether it had set up (then it was a registered miner).
    pub(crate) fn on_end(&self, id: u64, failed: bool, now_ms: u64) -> bool {
        let Some(conn) = lock(&self.live).conns.remove(&id) else {
            return false;
        };
        lock(&self.places).release(id);
        let ending = match (failed, conn.set_up) {
            (true, set_up) => Ending::Failed { set_up },
            (false, true) => Ending::AfterSetup,
            (false, false) => Ending::BeforeSetup,
        };
        lock(&self.admission).closed(conn.peer.ip(), ending, now_ms);
        conn.set_up
    }

    /// Whether the pool is shutting down: a connection's stop signal then means "drain" (ask
    /// the miner to reconnect elsewhere), not eviction or "pool full" (close at once).
    pub(crate) fn is_shutting_down(&self) -> bool {
        lock(&self.live).shutting_down
    }

    /// Pool shutdown: every live connection is told, and no new one is admitted.
    pub(crate) fn shut_down_all(&self) {
        let mut live = lock(&self.live);
        live.shutting_down = true;
        for c in live.conns.values() {
            c.stop.send_replace(true);
        }
    }

    /// Forgets sources with nothing to remember and shrinks the tables far under capacity.
    pub(crate) fn sweep(&self, now_ms: u64) -> usize {
        let forgotten = lock(&self.admission).sweep(now_ms);
        let mut live = lock(&self.live);
        if live.conns.capacity() > 4 * live.conns.len() + 64 {
            live.conns.shrink_to_fit();
        }
        forgotten
    }

    /// When the refusal counts' period ends (unix ms).
    pub(crate) fn summary_due(&self) -> u64 {
        self.refusals.period_end()
    }

    /// The refusal counts of the period just ended, if any.
    pub(crate) fn take_summary(&self, now_ms: u64) -> Option<Summary<Refused>> {
        self.refusals.take_summary(now_ms)
    }

    /// Refusals and failures since the start, per reason (every reason, in
    /// [`Refused::ALL`] order).
    pub(crate) fn refusal_totals(&self) -> impl Iterator<Item = (Refused, u64)> + '_ {
        Refused::ALL
            .iter()
            .zip(&self.totals)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
    }

    /// Connections live (admitted, not yet ended), set up or not.
    pub(crate) fn live_connections(&self) -> usize {
        lock(&self.live).conns.len()
    }

    /// Connections not yet set up, pool-wide (for tests and metrics).
    pub(crate) fn pre_setup(&self) -> u32 {
        lock(&self.admission).pre_setup()
    }
}
