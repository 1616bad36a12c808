//! Webhooks for real (issue 16, item 3): the pool on the embedded chain, our CPU miner, and a
//! small HTTP receiver in the test (axum on 127.0.0.1) recording every POST. A block found
//! and its acceptance arrive as signed JSON naming the finder; a worker that stops is notified
//! offline after the configured time and online when it mines again; a receiver that answers
//! 500 twice gets the event on the third attempt; a JSON-RPC node (a fake one in the test, on
//! the real RPC backend) that stops answering and comes back is notified once each way; a
//! block the node refuses carries its reason; a receiver that is down costs nothing but its
//! own bounded queue: the pool mines on and counts the events it drops; and the binary does
//! it all from its configuration file.

#[path = "common/binary.rs"]
mod binary;
#[path = "common/cpu_miner.rs"]
mod cpu_miner;
#[path = "common/fake_rpc_node.rs"]
mod fake_rpc_node;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bitcoin::Block;
use blvm_stratum_v2::client::MinerReport;
use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::http::Scrape;
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode, HISTORY_HEIGHT};
use blvm_stratum_v2::node::{BlockTemplate, ChainEvent, NodeApi, NodeChain, NodeError, NodeFuture};
use blvm_stratum_v2::server::{PoolObserver, StratumV2Server};
use fake_rpc_node::FakeNode;
use serde_json::Value;

/// 2^16 hashes a block: a CPU miner finds several a second.
const CHAIN_BITS: u32 = 0x1f00_ffff;
/// Configured so that a leak would show: never in a body.
const RPC_PASSWORD: &str = "rpc-pw-Webhook7Qx";
const SECRET: &str = "hook-secret-Lm4Rt";

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    /// What it answered.
    status: u16,
    event: String,
    id: String,
    signature: Option<String>,
    body: Vec<u8>,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// The test's HTTP receiver: answers each POST with the next scripted status (200 once the
/// script is used up) and records it.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Delivery>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> (SocketAddr, Receiver) {
        let r = Receiver {
            got: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .route("/hook", post(record))
            .with_state(r.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, r)
    }

    fn all(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// The delivered (2xx) events of `name`.
    fn delivered(&self, name: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|d| d.event == name && d.status == 200)
            .map(|d| d.json())
            .collect()
    }
}

async fn record(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let status = r.script.lock().unwrap().pop_front().unwrap_or(200);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    r.got.lock().unwrap().push(Delivery {
        status,
        event: header("x-blvm-event").unwrap_or_default(),
        id: header("x-blvm-delivery").unwrap_or_default(),
        signature: header("x-blvm-signature-256"),
        body: body.to_vec(),
    });
    StatusCode::from_u16(status).expect("a status")
}

/// The pool's options as an operator's file would give them, with `extra` lines.
fn pool_options(dir: &Path, extra: &str) -> PoolOptions {
    let text = format!(
        r#"
        listen_addr = "127.0.0.1:0"
        sv1_listen_addr = "off"
        data_dir = "{dir}"
        min_difficulty = 1e-6
        max_difficulty = 1e-6
        share_rate_multiple = 1e9
        rpc_user = "pool"
        rpc_password = "{RPC_PASSWORD}"
        ledger = false
        {extra}
        "#,
        dir = dir.display()
    );
    PoolOptions::from_toml(&text, Path::new("webhooks-test.toml")).expect("the file parses")
}

fn embedded() -> Arc<EmbeddedNode> {
    Arc::new(EmbeddedNode::new(ChainConfig {
        bits: CHAIN_BITS,
        synthetic_transactions: 2,
        block_interval_secs: 0,
    }))
}

/// Our CPU miner as `user` on `server` (listening on `addr`) for `secs` seconds.
async fn mine(server: &StratumV2Server, addr: SocketAddr, user: &str, secs: u64) -> MinerReport {
    let key = server.authority_public_key().to_owned();
    cpu_miner::mine_for(addr.to_string(), key, user, secs).await
}

async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/metrics` as the HTTP server would encode it, parsed: (name, labels) → value.
fn metrics(observer: &PoolObserver) -> Vec<prometheus_parse::Sample> {
    let text = Scrape::take(observer, 100, blvm_stratum_v2::shell::unix_ms())
        .encode()
        .expect("encodes");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the Prometheus text parses")
        .samples
}

fn metric(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name}{labels:?}"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_and_a_worker_going_quiet_arrive_as_signed_json() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, receiver) = Receiver::start(&[]).await;
    let extra = format!(
        r#"
        pool_signature = "/hook-pool/"
        webhook_worker_offline_secs = 2
        [[webhooks]]
        url = "http://{hook}/hook"
        secret = "{SECRET}"
        "#
    );
    let config = PoolConfig::resolve(&pool_options(dir.path(), &extra), "test").expect("config");
    let node = embedded();
    let server = StratumV2Server::new(config, node.clone()).expect("server");
    let addr = server.start().await.expect("started");

    let report = mine(&server, addr, "alice.rig1", 4).await;
    assert!(report.shares_accepted > 0, "{report:?}");
    let mined = node.height() - HISTORY_HEIGHT;
    assert!(mined >= 1, "no block found: {report:?}");

    wait_until(
        "block_found and block_accepted delivered",
        Duration::from_secs(20),
        || {
            !receiver.delivered("block_found").is_empty()
                && !receiver.delivered("block_accepted").is_empty()
        },
    )
    .await;
    let found = receiver.delivered("block_found");
    let first = &found[0];
    assert_eq!(first["event"], "block_found");
    assert_eq!(first["pool_id"], "/hook-pool/");
    let block = &first["block"];
    assert_eq!(block["status"], "found");
    assert_eq!(block["user"], "alice");
    assert_eq!(block["worker"], "rig1");
    assert!(
        block["height"].as_u64().unwrap() > u64::from(HISTORY_HEIGHT),
        "{first}"
    );
    // The regtest subsidy at these heights is 50 BTC, fees on top.
    assert!(
        block["reward_sat"].as_u64().unwrap() >= 5_000_000_000,
        "{first}"
    );
    let hash = block["hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);
    assert!(first["time_ms"].as_u64().unwrap() > 0);
    // Its verdict names the same block and finder.
    wait_until("the first block's verdict", Duration::from_secs(20), || {
        receiver
            .delivered("block_accepted")
            .iter()
            .any(|a| a["block"]["hash"] == hash.as_str())
    })
    .await;
    let accepted = receiver
        .delivered("block_accepted")
        .into_iter()
        .find(|a| a["block"]["hash"] == hash.as_str())
        .unwrap();
    assert_eq!(accepted["block"]["status"], "accepted");
    assert_eq!(accepted["block"]["user"], "alice");
    assert_eq!(accepted["block"]["height"], block["height"]);
    assert!(receiver.delivered("block_refused").is_empty());

    // Every body is signed with the secret (GitHub's scheme), and carries no secret.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    for d in receiver.all() {
        let sig = d.signature.as_deref().expect("signed");
        let hex = sig.strip_prefix("sha256=").expect("sha256=");
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        ring::hmac::verify(&key, &d.body, &tag).expect("the signature verifies");
        let text = String::from_utf8(d.body.clone()).unwrap();
        assert!(
            !text.contains(RPC_PASSWORD) && !text.contains(SECRET),
            "{text}"
        );
        assert_eq!(
            d.json()["id"].to_string(),
            d.id,
            "the id header is the body's id"
        );
    }

    // The miner stopped: after 2 s without a share the worker is notified offline.
    wait_until("worker_offline", Duration::from_secs(15), || {
        !receiver.delivered("worker_offline").is_empty()
    })
    .await;
    let off = &receiver.delivered("worker_offline")[0];
    assert_eq!(off["worker"]["user"], "alice");
    assert_eq!(off["worker"]["worker"], "rig1");
    assert!(off["worker"]["quiet_secs"].as_u64().unwrap() >= 2, "{off}");
    let last_share = off["worker"]["last_share_ms"].as_u64().unwrap();
    assert!(
        off["time_ms"].as_u64().unwrap() >= last_share + 2_000,
        "{off}"
    );
    // It mines again: online.
    mine(&server, addr, "alice.rig1", 1).await;
    wait_until("worker_online", Duration::from_secs(15), || {
        !receiver.delivered("worker_online").is_empty()
    })
    .await;
    let on = &receiver.delivered("worker_online")[0];
    assert_eq!(on["worker"]["worker"], "rig1");
    assert!(
        on["worker"]["last_share_ms"].as_u64().unwrap() > last_share,
        "{on}"
    );

    let m = metrics(&server.observer());
    let delivered = metric(
        &m,
        "blvm_stratum_webhook_deliveries_total",
        &[("outcome", "delivered")],
    );
    assert_eq!(delivered as usize, receiver.all().len());
    assert_eq!(
        metric(
            &m,
            "blvm_stratum_webhook_deliveries_total",
            &[("outcome", "failed")]
        ),
        0.0
    );
    assert_eq!(metric(&m, "blvm_stratum_webhook_dropped_total", &[]), 0.0);
    assert!(
        metric(
            &m,
            "blvm_stratum_webhook_events_total",
            &[("event", "block_found")]
        ) >= 1.0
    );
    server.stop().await.expect("stops");
}

/// The embedded chain behind a node that refuses every block (as a node whose consensus
/// rules the block breaks).
struct Refusing {
    inner: Arc<EmbeddedNode>,
}

impl NodeApi for Refusing {
    fn get_block_template(&self) -> NodeFuture<'_, Result<BlockTemplate, NodeError>> {
        self.inner.get_block_template()
    }

    fn submit_block(&self, _block: Block) -> NodeFuture<'_, Result<(), NodeError>> {
        Box::pin(async { Err(NodeError::BlockRejected("bad-test-refusal".into())) })
    }

    fn chain(&self) -> NodeFuture<'_, Result<NodeChain, NodeError>> {
        self.inner.chain()
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ChainEvent> {
        self.inner.subscribe()
    }
}

/// A pool on the JSON-RPC backend against [`FakeNode`] (templates asked for every
/// `template_refresh_secs`), started, with one webhook at `hook` for the node's events; the
/// flag takes the node down.
async fn pool_on_a_fake_node(
    dir: &Path,
    hook: SocketAddr,
    template_refresh_secs: u64,
) -> (StratumV2Server, Arc<AtomicBool>) {
    let down = Arc::new(AtomicBool::new(false));
    let rpc_url = FakeNode {
        chain: "regtest",
        bits: "207fffff",
        coinbase_value: 5_000_000_000,
    }
    .serve(down.clone())
    .await;
    let extra = format!(
        r#"
        backend = "rpc"
        rpc_url = "{rpc_url}"
        template_refresh_secs = {template_refresh_secs}
        [[webhooks]]
        url = "http://{hook}/hook"
        events = ["node_unreachable", "node_reachable"]
        "#
    );
    let config = PoolConfig::resolve(&pool_options(dir, &extra), "test").expect("config");
    let blvm_stratum_v2::config::Backend::Rpc(rpc) = config.backend.clone() else {
        panic!("not the rpc backend: {:?}", config.backend)
    };
    let node = Arc::new(blvm_stratum_v2::node::rpc::RpcNode::new(rpc));
    let server = StratumV2Server::new(config, node).expect("server");
    server.start().await.expect("started");
    (server, down)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_going_away_is_notified_after_two_refused_attempts_and_its_return_too() {
    let dir = tempfile::tempdir().unwrap();
    // The receiver answers 500 twice, then 200.
    let (hook, receiver) = Receiver::start(&[500, 500]).await;
    let (server, down) = pool_on_a_fake_node(dir.path(), hook, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receiver.all().is_empty(),
        "nothing to say while the node answers"
    );

    down.store(true, Ordering::SeqCst);
    wait_until(
        "node_unreachable delivered",
        Duration::from_secs(30),
        || !receiver.delivered("node_unreachable").is_empty(),
    )
    .await;
    let tries: Vec<Delivery> = receiver
        .all()
        .into_iter()
        .filter(|d| d.event == "node_unreachable")
        .collect();
    assert_eq!(
        tries.iter().map(|d| d.status).collect::<Vec<_>>(),
        [500, 500, 200],
        "two refusals, then delivered"
    );
    assert!(
        tries
            .iter()
            .all(|d| d.id == tries[0].id && d.body == tries[0].body),
        "the same event each time"
    );
    let outage = tries[2].json();
    assert_eq!(outage["node"]["reachable"], false);
    assert_eq!(outage["node"]["error"], "unavailable");
    assert!(
        outage["node"]["failures"].as_u64().unwrap() >= 1,
        "{outage}"
    );
    assert!(
        outage["node"]["last_answer_ms"].as_u64().unwrap()
            <= outage["node"]["unreachable_since_ms"].as_u64().unwrap()
    );
    assert!(!String::from_utf8_lossy(&tries[2].body).contains(RPC_PASSWORD));

    down.store(false, Ordering::SeqCst);
    wait_until("node_reachable delivered", Duration::from_secs(30), || {
        !receiver.delivered("node_reachable").is_empty()
    })
    .await;
    let up = &receiver.delivered("node_reachable")[0];
    assert_eq!(up["node"]["reachable"], true);
    assert_eq!(
        up["node"]["unreachable_since_ms"],
        outage["node"]["unreachable_since_ms"]
    );
    assert!(
        up["node"]["answered_ms"].as_u64().unwrap()
            > up["node"]["unreachable_since_ms"].as_u64().unwrap()
    );
    assert_eq!(
        receiver.delivered("node_unreachable").len(),
        1,
        "once per outage"
    );

    let m = metrics(&server.observer());
    assert_eq!(metric(&m, "blvm_stratum_webhook_retries_total", &[]), 2.0);
    assert_eq!(
        metric(
            &m,
            "blvm_stratum_webhook_deliveries_total",
            &[("outcome", "delivered")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "blvm_stratum_webhook_deliveries_total",
            &[("outcome", "failed")]
        ),
        0.0
    );
    server.stop().await.expect("stops");
}

/// With templates asked for once an hour, only the backend's tip poller can notice the node
/// going away (ChainEvent::Unreachable) and its return (a template fetched at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tip_poller_notices_the_node_going_away_between_template_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, receiver) = Receiver::start(&[]).await;
    let (server, down) = pool_on_a_fake_node(dir.path(), hook, 3600).await;
    wait_until("the first template", Duration::from_secs(30), || {
        server.observer().node_health(u64::MAX).reachable
    })
    .await;

    down.store(true, Ordering::SeqCst);
    wait_until(
        "node_unreachable from the tip poller",
        Duration::from_secs(60),
        || !receiver.delivered("node_unreachable").is_empty(),
    )
    .await;
    assert!(!server.observer().node_health(u64::MAX).reachable);

    down.store(false, Ordering::SeqCst);
    wait_until("node_reachable", Duration::from_secs(60), || {
        !receiver.delivered("node_reachable").is_empty()
    })
    .await;
    assert_eq!(
        receiver.delivered("node_unreachable").len(),
        1,
        "once per outage"
    );
    server.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_fills_only_its_bounded_queue_and_mining_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: every attempt is refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let extra = format!(
        r#"
        webhook_queue = 2
        webhook_max_attempts = 2
        webhook_timeout_secs = 1
        [[webhooks]]
        url = "http://{dead}/hook"
        events = ["block_found", "block_accepted"]
        "#
    );
    let config = PoolConfig::resolve(&pool_options(dir.path(), &extra), "test").expect("config");
    let node = embedded();
    let server = StratumV2Server::new(config, node.clone()).expect("server");
    let addr = server.start().await.expect("started");

    let mut accepted = 0;
    let started = Instant::now();
    while node.height() - HISTORY_HEIGHT < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "too few blocks"
        );
        let report = mine(&server, addr, "bob.rig", 3).await;
        assert!(report.shares_accepted > 0, "the pool mines on: {report:?}");
        accepted += report.shares_accepted;
    }
    let blocks = f64::from(node.height() - HISTORY_HEIGHT);
    // Each block: found and accepted; one event in flight, two waiting, the rest dropped.
    wait_until("every verdict notified", Duration::from_secs(10), || {
        let m = metrics(&server.observer());
        metric(
            &m,
            "blvm_stratum_webhook_events_total",
            &[("event", "block_accepted")],
        ) >= blocks
    })
    .await;
    let m = metrics(&server.observer());
    let events = metric(
        &m,
        "blvm_stratum_webhook_events_total",
        &[("event", "block_found")],
    ) + metric(
        &m,
        "blvm_stratum_webhook_events_total",
        &[("event", "block_accepted")],
    );
    assert!(
        events >= 2.0 * blocks,
        "{events} events for {blocks} blocks"
    );
    let dropped = metric(&m, "blvm_stratum_webhook_dropped_total", &[]);
    let queued = metric(&m, "blvm_stratum_webhook_queued", &[]);
    let failed = metric(
        &m,
        "blvm_stratum_webhook_deliveries_total",
        &[("outcome", "failed")],
    );
    assert!(queued <= 2.0, "bounded: {queued}");
    assert!(
        dropped >= events - 3.0 - failed,
        "dropped {dropped} of {events} (failed {failed})"
    );
    assert!(dropped >= 1.0);
    assert_eq!(
        metric(
            &m,
            "blvm_stratum_webhook_deliveries_total",
            &[("outcome", "delivered")]
        ),
        0.0
    );
    assert!(accepted > 0);
    // The stop waits a bounded time for what is queued, not for the dead receiver.
    let stopping = Instant::now();
    server.stop().await.expect("stops");
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "{:?}",
        stopping.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_the_node_refuses_is_notified_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, receiver) = Receiver::start(&[]).await;
    let extra = format!(
        r#"
        [[webhooks]]
        url = "http://{hook}/hook"
        events = ["block_refused"]
        "#
    );
    let config = PoolConfig::resolve(&pool_options(dir.path(), &extra), "test").expect("config");
    let node = Arc::new(Refusing { inner: embedded() });
    let server = StratumV2Server::new(config, node.clone()).expect("server");
    let addr = server.start().await.expect("started");
    mine(&server, addr, "carol.rig9", 2).await;
    wait_until("block_refused delivered", Duration::from_secs(20), || {
        !receiver.delivered("block_refused").is_empty()
    })
    .await;
    let refused = &receiver.delivered("block_refused")[0];
    assert_eq!(refused["block"]["status"], "rejected");
    assert_eq!(refused["block"]["reason"], "bad-test-refusal");
    assert_eq!(refused["block"]["user"], "carol");
    assert_eq!(refused["block"]["worker"], "rig9");
    // Only the subscribed events are sent.
    assert!(receiver.all().iter().all(|d| d.event == "block_refused"));
    server.stop().await.expect("stops");
}

/// The operator's way: the pool binary with `[[webhooks]]` in its configuration file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_notifies_from_its_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, receiver) = Receiver::start(&[]).await;
    let file = dir.path().join("pool.toml");
    std::fs::write(
        &file,
        format!(
            r#"
            listen_addr = "127.0.0.1:0"
            sv1_listen_addr = "off"
            http_enabled = false
            min_difficulty = 1e-6
            max_difficulty = 1e-6
            share_rate_multiple = 1e9
            chain_bits = {CHAIN_BITS}
            chain_block_interval_secs = 0
            [[webhooks]]
            url = "http://{hook}/hook"
            events = ["block_found", "block_accepted"]
            secret = "{SECRET}"
            "#
        ),
    )
    .unwrap();
    let mut pool = binary::PoolProcess::start(dir.path(), &["--config", file.to_str().unwrap()]);
    let report = cpu_miner::mine_for(pool.addr.clone(), pool.key.clone(), "erin.rig2", 3).await;
    assert!(report.shares_accepted > 0, "{report:?}");
    wait_until(
        "block_accepted from the binary",
        Duration::from_secs(20),
        || !receiver.delivered("block_accepted").is_empty(),
    )
    .await;
    let found = receiver.delivered("block_found");
    assert!(!found.is_empty());
    assert_eq!(found[0]["block"]["user"], "erin");
    assert_eq!(found[0]["pool_id"], "/blvm-stratum-v2/");
    assert!(receiver.all().iter().all(|d| d.signature.is_some()));
    pool.signal(libc::SIGTERM);
    let status = pool.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    assert!(!pool.log().contains(SECRET), "the secret in the log");
}
