//! `/metrics`: the Prometheus text format (0.0.4), encoded with `prometheus-client`.
//!
//! Why `prometheus-client` (the Prometheus project's Rust client) and not `metrics` with
//! `metrics-exporter-prometheus`: almost every figure here already exists in the pool's
//! statistics, so it is read at scrape time ([`Scrape`], a `Collector`) instead of being
//! mirrored into a second registry per share; `prometheus-client` encodes such values
//! directly, keeps no global recorder (several pools in one process, as in tests, do not
//! share series), and forgotten workers vanish from the output instead of lingering as stale
//! series. The two hot-path histograms are lock-free atomics of our own
//! ([`AtomicHistogram`](crate::shell::AtomicHistogram)), encoded here.
//!
//! Cost: the pool's read lock is held only to copy the figures out (the per-worker label
//! folding and the text encoding run after it is released).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::AppState;
use crate::mining::pool::workers::{WorkerSeries, user_series, worker_series};
use crate::server::{ConnectionCensus, NodeHealth, PoolObserver};
use crate::shell::{HistogramSnapshot, Refused};

/// What one scrape shows, copied out of the pool.
#[derive(Debug)]
pub struct Scrape {
    connections: ConnectionCensus,
    connections_open: usize,
    max_connections: usize,
    channels_extended: usize,
    channels_standard: usize,
    max_channels: usize,
    refusals: Vec<(Refused, u64)>,
    proxy_health_checks: u64,
    sv1_refusals: Vec<(crate::sv1::Sv1Refusal, u64)>,
    accepted: u64,
    rejected_by_reason: Vec<(&'static str, u64)>,
    workers_tracked: usize,
    workers: Vec<WorkerSeries>,
    users: Vec<WorkerSeries>,
    pool_hashrate: f64,
    blocks_found: u64,
    blocks_accepted: u64,
    blocks_rejected: u64,
    node: NodeHealth,
    ack_latency: HistogramSnapshot,
    ledger_commits: HistogramSnapshot,
    process: Option<crate::loadgen::procfs::ProcSample>,
    webhooks: Option<crate::webhook::WebhookTotals>,
}

impl Scrape {
    /// Reads everything `/metrics` shows from `observer` at `now_ms`, with at most
    /// `max_labelled` per-worker and per-user series each (the rest folded into `other`).
    pub fn take(observer: &PoolObserver, max_labelled: usize, now_ms: u64) -> Scrape {
        let (stats, extended, standard, rejected_by_reason, workers, users, tracked, hashrate) =
            observer.read_pool(|p| {
                let s = p.statistics();
                let (mut extended, mut standard) = (0, 0);
                for (_, c) in s.open_channels() {
                    if c.extended {
                        extended += 1;
                    } else {
                        standard += 1;
                    }
                }
                let tracked = s.workers().len();
                let hashrate: f64 = s.workers().iter().map(|w| w.hashrate(now_ms)).sum();
                (
                    p.get_pool_stats(),
                    extended,
                    standard,
                    s.rejected_by_reason().collect::<Vec<_>>(),
                    worker_series(s.workers().iter(), max_labelled, now_ms),
                    user_series(s.workers().iter(), max_labelled, now_ms),
                    tracked,
                    hashrate,
                )
            });
        let limits = observer.limits();
        Scrape {
            connections: observer.connection_census(),
            connections_open: observer.live_connections(),
            max_connections: limits.max_connections,
            channels_extended: extended,
            channels_standard: standard,
            max_channels: limits.max_channels,
            refusals: observer.refusals(),
            proxy_health_checks: observer.proxy_health_checks(),
            sv1_refusals: observer.sv1_refusals(),
            accepted: stats.accepted_shares,
            rejected_by_reason,
            workers_tracked: tracked,
            workers,
            users,
            pool_hashrate: hashrate,
            blocks_found: stats.blocks_found,
            blocks_accepted: stats.blocks_accepted,
            blocks_rejected: stats.blocks_rejected,
            node: observer.node_health(now_ms),
            ack_latency: observer.ack_latency(),
            ledger_commits: observer.ledger_commits(),
            process: crate::loadgen::procfs::sample("self").ok(),
            webhooks: observer.webhook_totals(),
        }
    }

    /// The Prometheus text format.
    pub fn encode(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// Handshake and setup failures and timeouts (`blvm_stratum_connection_failures_total`).
fn is_failure(r: Refused) -> bool {
    matches!(
        r,
        Refused::HandshakeFailed
            | Refused::HandshakeTimeout
            | Refused::SetupTimeout
            | Refused::SetupRefused
            | Refused::NoChannel
            | Refused::IdleTimeout
            | Refused::ShareFlood
            | Refused::ConnectionFailed
            | Refused::Proxy(_)
    )
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + Copy + std::fmt::Debug>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter<V: prometheus_client::encoding::EncodeCounterValue + Copy + std::fmt::Debug>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(h.sum_secs, h.count, &h.buckets, None)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // ----- connections and channels -----
        {
            let mut m = e.encode_descriptor(
                "blvm_stratum_connections",
                "Miner connections open now, by state (set_up: SetupConnection or mining.subscribe done; pre_setup: in the handshake or before it) and protocol (sv1, sv2; unknown: on a port serving both, before the first bytes).",
                None,
                MetricType::Gauge,
            )?;
            for (state, protocol, n) in self.connections.series() {
                m.encode_family(&[("state", state), ("protocol", protocol)])?
                    .encode_gauge(&(n as u64))?;
            }
        }
        gauge(
            &mut e,
            "blvm_stratum_sockets",
            "Miner sockets open now (every state).",
            self.connections_open as u64,
        )?;
        gauge(
            &mut e,
            "blvm_stratum_connections_max",
            "Set-up connections allowed at once (max_connections).",
            self.max_connections as u64,
        )?;
        {
            let mut m = e.encode_descriptor(
                "blvm_stratum_channels",
                "Mining channels open now, by kind.",
                None,
                MetricType::Gauge,
            )?;
            m.encode_family(&[("kind", "extended")])?
                .encode_gauge(&(self.channels_extended as u64))?;
            m.encode_family(&[("kind", "standard")])?
                .encode_gauge(&(self.channels_standard as u64))?;
        }
        gauge(
            &mut e,
            "blvm_stratum_channels_max",
            "Channels allowed at once, pool-wide (max_channels).",
            self.max_channels as u64,
        )?;
        {
            let mut m = e.encode_descriptor(
                "blvm_stratum_connection_failures",
                "Connections that failed or timed out, by cause (handshake, setup, idle, flood, protocol).",
                None,
                MetricType::Counter,
            )?;
            for (r, n) in self.refusals.iter().filter(|(r, _)| is_failure(*r)) {
                m.encode_family(&[("cause", r.label())])?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "blvm_stratum_connection_limit_hits",
                "Connections or channels refused or closed by a limit (admission, socket cap, pool full, eviction, channel refusals), by limit.",
                None,
                MetricType::Counter,
            )?;
            for (r, n) in self.refusals.iter().filter(|(r, _)| !is_failure(*r)) {
                m.encode_family(&[("limit", r.label())])?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        counter(
            &mut e,
            "blvm_stratum_proxy_health_checks",
            "Health checks of a trusted load balancer (PROXY v2 LOCAL headers), closed quietly: not failures.",
            self.proxy_health_checks,
        )?;
        // ----- shares -----
        counter(
            &mut e,
            "blvm_stratum_shares_accepted",
            "Shares accepted (credited) since the start.",
            self.accepted,
        )?;
        {
            let mut m = e.encode_descriptor(
                "blvm_stratum_shares_rejected",
                "Shares refused since the start, by SubmitShares.Error code.",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in &self.rejected_by_reason {
                m.encode_family(&[("reason", *reason)])?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "blvm_stratum_sv1_requests_refused",
                "Stratum V1 requests refused before they reach a channel, by reason (refused SV1 shares are in blvm_stratum_shares_rejected).",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in &self.sv1_refusals {
                m.encode_family(&[("reason", reason.name())])?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        // ----- users and workers -----
        gauge(
            &mut e,
            "blvm_stratum_workers",
            "(user, worker) pairs the pool tracks (seen within the last hour).",
            self.workers_tracked as u64,
        )?;
        gauge(
            &mut e,
            "blvm_stratum_hashrate",
            "Pool hashrate estimated from credited difficulty over the last ten minutes (hashes per second).",
            self.pool_hashrate,
        )?;
        per_series(&mut e, &self.workers, true, "blvm_stratum_worker", "worker")?;
        per_series(&mut e, &self.users, false, "blvm_stratum_user", "user")?;
        // ----- blocks -----
        counter(
            &mut e,
            "blvm_stratum_blocks_found",
            "Blocks found by the pool's miners since the start.",
            self.blocks_found,
        )?;
        {
            let mut m = e.encode_descriptor(
                "blvm_stratum_blocks",
                "Blocks found since the start, by the node's verdict (pending: not answered yet).",
                None,
                MetricType::Gauge,
            )?;
            let decided = self.blocks_accepted + self.blocks_rejected;
            for (status, n) in [
                ("accepted", self.blocks_accepted),
                ("rejected", self.blocks_rejected),
                ("pending", self.blocks_found.saturating_sub(decided)),
            ] {
                m.encode_family(&[("status", status)])?.encode_gauge(&n)?;
            }
        }
        // ----- the node -----
        gauge(
            &mut e,
            "blvm_stratum_node_reachable",
            "1 if the node answered its last request, 0 if it failed.",
            u64::from(self.node.reachable),
        )?;
        counter(
            &mut e,
            "blvm_stratum_node_failures",
            "Requests to the node that failed (unreachable) since the start.",
            self.node.failures,
        )?;
        if let Some((_, height)) = &self.node.tip {
            gauge(
                &mut e,
                "blvm_stratum_node_tip_height",
                "Height of the tip the current work builds on.",
                u64::from(*height),
            )?;
        }
        if let Some(age) = self.node.template_age_ms {
            gauge(
                &mut e,
                "blvm_stratum_template_age_seconds",
                "Seconds since the current work was published.",
                age as f64 / 1000.0,
            )?;
        }
        // ----- latencies -----
        histogram(
            &mut e,
            "blvm_stratum_ack_latency_seconds",
            "From an acknowledgement's making (its last share's arrival) to its release after the ledger's commit (with a ledger).",
            &self.ack_latency,
        )?;
        histogram(
            &mut e,
            "blvm_stratum_ledger_commit_seconds",
            "Duration of the share ledger's group commits.",
            &self.ledger_commits,
        )?;
        // ----- webhooks (only with one configured) -----
        if let Some(w) = &self.webhooks {
            {
                let mut m = e.encode_descriptor(
                    "blvm_stratum_webhook_events",
                    "Events the pool notified since the start, by event (before any queue).",
                    None,
                    MetricType::Counter,
                )?;
                for (kind, n) in &w.events {
                    m.encode_family(&[("event", kind.name())])?
                        .encode_counter::<NoLabelSet, _, u64>(n, None)?;
                }
            }
            {
                let mut m = e.encode_descriptor(
                    "blvm_stratum_webhook_deliveries",
                    "Webhook deliveries since the start, by outcome (delivered: answered 2xx; failed: given up after webhook_max_attempts).",
                    None,
                    MetricType::Counter,
                )?;
                for (outcome, n) in [("delivered", w.delivered), ("failed", w.failed)] {
                    m.encode_family(&[("outcome", outcome)])?
                        .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                }
            }
            counter(
                &mut e,
                "blvm_stratum_webhook_retries",
                "Webhook attempts that failed and were tried again.",
                w.retried,
            )?;
            counter(
                &mut e,
                "blvm_stratum_webhook_dropped",
                "Webhook events dropped from a full queue (the oldest waiting; webhook_queue).",
                w.dropped,
            )?;
            gauge(
                &mut e,
                "blvm_stratum_webhook_queued",
                "Webhook events waiting now, every webhook together.",
                w.queued,
            )?;
        }
        // ----- the process -----
        if let Some(p) = &self.process {
            counter(
                &mut e,
                "process_cpu_seconds",
                "User and system CPU time of the pool process (seconds).",
                p.cpu.as_secs_f64(),
            )?;
            gauge(
                &mut e,
                "process_resident_memory_bytes",
                "Resident memory of the pool process (bytes).",
                p.rss_kib.saturating_mul(1024),
            )?;
        }
        Ok(())
    }
}

/// The per-worker (`with_worker`) or per-user series: accepted and refused shares, credited
/// difficulty, hashrate.
fn per_series(
    e: &mut DescriptorEncoder,
    series: &[WorkerSeries],
    with_worker: bool,
    prefix: &str,
    what: &str,
) -> Result<(), std::fmt::Error> {
    /// A series' value: share counts are integers, difficulty and hashrate are not.
    enum Num {
        Int(u64),
        Float(f64),
    }
    type Get = fn(&WorkerSeries) -> Num;
    let families: [(&str, String, MetricType, Get); 4] = [
        (
            "shares_accepted",
            format!("Shares accepted per {what} (beyond the label limit: user=\"other\")."),
            MetricType::Counter,
            |s| Num::Int(s.accepted_shares),
        ),
        (
            "shares_rejected",
            format!("Shares refused per {what}."),
            MetricType::Counter,
            |s| Num::Int(s.rejected_shares),
        ),
        (
            "credited_difficulty",
            format!("Sum of the difficulty credited to the {what}'s accepted shares."),
            MetricType::Counter,
            |s| Num::Float(s.credited_difficulty),
        ),
        (
            "hashrate",
            format!(
                "Hashrate per {what}, estimated from credited difficulty over the last ten minutes (hashes per second)."
            ),
            MetricType::Gauge,
            |s| Num::Float(s.hashrate),
        ),
    ];
    for (suffix, help, kind, get) in families {
        let name = format!("{prefix}_{suffix}");
        let mut m = e.encode_descriptor(&name, &help, None, kind)?;
        for s in series {
            let v = get(s);
            let user = ("user", &*s.user);
            let mut fam;
            let labels2;
            let labels1;
            if with_worker {
                labels2 = [user, ("worker", &*s.worker)];
                fam = m.encode_family(&labels2)?;
            } else {
                labels1 = [user];
                fam = m.encode_family(&labels1)?;
            }
            match (kind, v) {
                (MetricType::Counter, Num::Int(n)) => {
                    fam.encode_counter::<NoLabelSet, _, u64>(&n, None)?
                }
                (MetricType::Counter, Num::Float(x)) => {
                    fam.encode_counter::<NoLabelSet, _, u64>(&x, None)?
                }
                (_, Num::Int(n)) => fam.encode_gauge(&n)?,
                (_, Num::Float(x)) => fam.encode_gauge(&x)?,
            }
        }
    }
    Ok(())
}

/// `GET /metrics`.
pub(super) async fn scrape(State(app): State<Arc<AppState>>) -> Response {
    let observer = app.observer.clone();
    let max = app.settings.max_labelled_workers;
    // Off the runtime's threads: with many workers the copy and the encoding take a while.
    let text = tokio::task::spawn_blocking(move || {
        Scrape::take(&observer, max, crate::shell::unix_ms()).encode()
    })
    .await;
    match text {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}
