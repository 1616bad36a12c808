//! The HTTP server for real (issue 16): the pool on the embedded chain with its SQLite
//! ledger, our CPU miner mining until blocks are found and paid, then `/metrics` parsed with
//! a Prometheus text parser, the JSON API parsed and checked against what the miner did, the
//! OpenAPI document against the routes, the limits (413, 404, 429), no secret anywhere, and
//! the pool mining on when the HTTP port is taken. Failures have their counters too: a
//! garbage handshake, a silent connection and a duplicate share each show under their label,
//! the connections under their protocol (an SV2 and an SV1 miner), the refused share under
//! its worker's reasons in the API, the open channels in `/api/v1/channels`.

#[path = "common/binary.rs"]
mod binary;
#[path = "common/cpu_miner.rs"]
mod cpu_miner;
#[path = "common/http_client.rs"]
mod http_client;
#[path = "common/pool.rs"]
mod pool;
#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/sri_client.rs"]
mod sri_client;
#[path = "common/sv1_client.rs"]
mod sv1_client;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use binary::PoolProcess;
use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::http::{HttpServer, HttpSettings};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
use blvm_stratum_v2::server::StratumV2Server;
use http_body_util::{BodyExt, Full};
use http_client::{
    HttpClient, client, get, get_json, histogram_count, one, parse_metrics, request, request_with,
};
use hyper::body::Bytes;
use serde_json::Value;

const CHAIN_BITS: u32 = 0x1f00_ffff;
/// Configured so that a leak would show: never in a response.
const RPC_PASSWORD: &str = "rpc-pw-Zq8vKx3mT9";
/// The webhook's HMAC secret: signs the webhook's bodies, never in a response.
const WEBHOOK_SECRET: &str = "hook-secret-Vb6Nw2Qe8";
/// The admin API's bearer token (from a secret file): never in a response.
const ADMIN_TOKEN: &str = "admin-token-Jc5Hs9Tz3Wp1";

/// A webhook receiver on 127.0.0.1 that answers 204 to every request and keeps each raw
/// request (headers and body), to be checked for secrets too.
async fn webhook_receiver() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // One request per connection: read until the body's length is in.
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if complete_request(&request) {
                        break;
                    }
                }
                // A connection closed before a byte came (a client giving up) holds nothing.
                if !request.is_empty() {
                    sink.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&request).into_owned());
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, received)
}

/// Whether `request` holds its headers and as many body bytes as its content-length says.
fn complete_request(request: &[u8]) -> bool {
    let text = String::from_utf8_lossy(request);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

/// The admin token's secret file (ours, mode 0600) in `dir`.
fn admin_token_file(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("admin-token");
    std::fs::write(&path, format!("{ADMIN_TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A fresh authority secret key, in its text form (configured inline: never in a response).
fn authority_secret() -> String {
    let key = blvm_stratum_v2::noise::keys::generate_authority_keypair(&mut rand::thread_rng());
    blvm_stratum_v2::noise::keys::encode_secret_key(&key.secret_key())
}

fn pool_options(dir: &std::path::Path, authority_secret: &str) -> PoolOptions {
    PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        min_difficulty: Some(1e-6),
        max_difficulty: Some(1e-6),
        chain_bits: Some(CHAIN_BITS),
        share_rate_multiple: Some(1e9),
        rpc_user: Some("pool".into()),
        rpc_password: Some(RPC_PASSWORD.into()),
        authority_secret_key: Some(authority_secret.into()),
        http_listen_addr: Some("127.0.0.1:0".into()),
        ..PoolOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_api_show_what_the_miner_did() {
    let dir = tempfile::tempdir().unwrap();
    let secret = authority_secret();
    // A webhook with a secret and an admin token: neither may show anywhere either.
    let (hook_addr, hook_requests) = webhook_receiver().await;
    let options = PoolOptions {
        webhooks: Some(vec![blvm_stratum_v2::config::WebhookOptions {
            url: format!("http://{hook_addr}/hook"),
            events: None,
            secret: Some(WEBHOOK_SECRET.into()),
            secret_file: None,
        }]),
        http_admin_token_file: Some(admin_token_file(dir.path())),
        ..pool_options(dir.path(), &secret)
    };
    let config = PoolConfig::resolve(&options, "test").expect("config");
    let http_settings = config.http.clone().expect("the HTTP server is on");
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        bits: CHAIN_BITS,
        synthetic_transactions: 2,
        block_interval_secs: 0,
    }));
    let server = StratumV2Server::new(config, node.clone()).expect("server");
    let pool_addr = server.start().await.expect("started");
    let http = HttpServer::start(http_settings, server.observer())
        .await
        .expect("HTTP server");
    let base = format!("http://{}", http.local_addr());
    let c = client();

    let report = cpu_miner::mine_for(
        pool_addr.to_string(),
        server.authority_public_key().to_owned(),
        "alice.rig1",
        6,
    )
    .await;
    assert!(report.shares_accepted > 0, "{report:?}");
    let mined = node.height() - blvm_stratum_v2::node::regtest::HISTORY_HEIGHT;
    assert!(mined >= 1, "no block found: {report:?}");

    // Blocks are settled by the writer after the node's verdict: wait for a paid block.
    let blocks = wait_for_a_paid_block(&c, &base).await;
    // Folded into the statistics within half a second of the last share.
    tokio::time::sleep(Duration::from_millis(700)).await;

    let mut bodies = Vec::new();

    // ----- /metrics, parsed -----
    let (status, text) = get(&c, &format!("{base}/metrics")).await;
    assert_eq!(status, 200, "{text}");
    let m = parse_metrics(&text);
    let accepted = one(&m, "blvm_stratum_shares_accepted_total", &[]);
    assert!(
        accepted >= report.shares_accepted as f64,
        "{accepted} vs {report:?}"
    );
    assert!(one(&m, "blvm_stratum_blocks_found_total", &[]) >= 1.0);
    assert!(one(&m, "blvm_stratum_blocks", &[("status", "accepted")]) >= 1.0);
    let rig = [("user", "alice"), ("worker", "rig1")];
    assert!(one(&m, "blvm_stratum_worker_hashrate", &rig) > 0.0);
    assert!(one(&m, "blvm_stratum_worker_credited_difficulty_total", &rig) > 0.0);
    assert_eq!(
        one(&m, "blvm_stratum_worker_shares_accepted_total", &rig),
        accepted
    );
    assert!(one(&m, "blvm_stratum_user_hashrate", &[("user", "alice")]) > 0.0);
    assert!(one(&m, "blvm_stratum_hashrate", &[]) > 0.0);
    assert_eq!(one(&m, "blvm_stratum_node_reachable", &[]), 1.0);
    assert!(one(&m, "blvm_stratum_template_age_seconds", &[]) >= 0.0);
    assert!(one(&m, "blvm_stratum_node_tip_height", &[]) >= 10.0);
    // Failures, refusals, channels and protocols with non-zero counts: the test
    // failures_refusals_protocols_and_channels_are_counted_under_their_labels.
    assert!(one(&m, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(one(&m, "process_cpu_seconds_total", &[]) > 0.0);
    let timed_acks = histogram_count(&m, "blvm_stratum_ack_latency_seconds");
    assert!(
        timed_acks >= report.shares_accepted as f64,
        "{timed_acks} acknowledgements timed, {accepted} shares accepted: {report:?}"
    );
    assert!(histogram_count(&m, "blvm_stratum_ledger_commit_seconds") >= 1.0);
    bodies.push(text);

    // ----- the JSON API against the miner -----
    let pool = get_json(&c, &format!("{base}/api/v1/pool")).await;
    assert_eq!(pool["shares"]["accepted"].as_f64(), Some(accepted));
    assert!(pool["blocks"]["found"].as_u64().unwrap() >= 1, "{pool}");
    assert!(pool["hashrate"].as_f64().unwrap() > 0.0, "{pool}");
    assert_eq!(pool["node"]["reachable"], true, "{pool}");
    assert_eq!(pool["ledger"], true);
    assert_eq!(pool["workers"], 1);

    let workers = get_json(&c, &format!("{base}/api/v1/workers")).await;
    let w = &workers["items"][0];
    assert_eq!(
        (w["user"].as_str(), w["worker"].as_str()),
        (Some("alice"), Some("rig1"))
    );
    assert_eq!(w["accepted_shares"].as_f64(), Some(accepted));
    assert!(w["hashrate"].as_f64().unwrap() > 0.0);
    assert!(w["blocks_found"].as_u64().unwrap() >= 1, "{w}");

    let users = get_json(&c, &format!("{base}/api/v1/users")).await;
    assert_eq!(users["items"][0]["user"], "alice");
    assert_eq!(users["next_cursor"], Value::Null);
    let alice = get_json(&c, &format!("{base}/api/v1/users/alice")).await;
    assert_eq!(alice["workers_list"][0]["worker"], "rig1");
    let earned = alice["earned_sat"].as_u64().expect("alice has a balance");
    assert!(earned > 0, "{alice}");

    let balances = get_json(&c, &format!("{base}/api/v1/balances")).await;
    let b = balances["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["user"] == "alice")
        .expect("alice's balance");
    assert_eq!(b["earned_sat"].as_u64(), Some(earned));

    // The paid block's window, from the ledger, a page of one share at a time.
    let paid = blocks["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["payout"].is_object())
        .unwrap();
    assert_eq!(paid["user"], "alice");
    let hash = paid["hash"].as_str().unwrap();
    let payout = &paid["payout"];
    let window =
        payout["last_share_id"].as_u64().unwrap() - payout["first_share_id"].as_u64().unwrap() + 1;
    let first = get_json(
        &c,
        &format!("{base}/api/v1/ledger/export?block={hash}&limit=1"),
    )
    .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    assert_eq!(first["items"][0]["user"], "alice");
    if window > 1 {
        let cursor = first["next_cursor"].as_str().expect("a next page");
        let second = get_json(
            &c,
            &format!("{base}/api/v1/ledger/export?block={hash}&limit=1&cursor={cursor}"),
        )
        .await;
        assert!(second["items"][0]["id"].as_u64() > first["items"][0]["id"].as_u64());
    }
    let all = get_json(
        &c,
        &format!("{base}/api/v1/ledger/export?block={hash}&limit=1000"),
    )
    .await;
    assert_eq!(all["items"].as_array().unwrap().len() as u64, window);
    // Newest first: blocks the ledger took since the page above push the paid one further
    // down, so it is looked for through the pages (a busy machine committed a few more).
    let mut url = format!("{base}/api/v1/payouts");
    let mut pages = 0;
    loop {
        let payouts = get_json(&c, &url).await;
        let items = payouts["items"].as_array().unwrap();
        if items.iter().any(|p| p["block_hash"] == hash) {
            break;
        }
        let cursor = payouts["next_cursor"].as_str();
        pages += 1;
        assert!(
            cursor.is_some() && pages < 50,
            "the paid block {hash} is in no page of /api/v1/payouts"
        );
        url = format!("{base}/api/v1/payouts?cursor={}", cursor.unwrap());
    }
    // The charts' history: the pool's, the user's and the worker's, all non-zero.
    for query in ["", "?user=alice", "?user=alice&worker=rig1"] {
        let h = get_json(&c, &format!("{base}/api/v1/hashrate{query}")).await;
        assert_eq!(h["period_secs"], 300);
        let points = h["points"].as_array().unwrap();
        assert!(!points.is_empty() && points.len() <= 72, "{h}");
        assert!(
            points.iter().all(|p| p["hashrate"].as_f64().unwrap() > 0.0),
            "{h}"
        );
    }
    let (status, _) = get(&c, &format!("{base}/api/v1/hashrate?user=nobody")).await;
    assert_eq!(status, 404);
    let connections = get_json(&c, &format!("{base}/api/v1/connections?limit=1")).await;
    assert_eq!(connections["items"].as_array().unwrap().len(), 1);

    // ----- the OpenAPI document matches the routes, and every path answers 200 -----
    let doc = get_json(&c, &format!("{base}/api/v1/openapi.json")).await;
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routes: BTreeSet<String> = blvm_stratum_v2::http::route_paths()
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        documented, routes,
        "every route documented, every documented path a route"
    );
    for path in &documented {
        // The live feed never ends by itself: read below. The admin API's drain is a POST
        // that needs the token: without it, or with a wrong one, 401 (and no drain).
        if path == blvm_stratum_v2::http::EVENTS_PATH {
            continue;
        }
        if path == blvm_stratum_v2::http::DRAIN_PATH {
            let url = format!("{base}{path}");
            let (status, body) = request(&c, "POST", &url, Vec::new()).await;
            assert_eq!(status, 401, "{body}");
            bodies.push(body);
            let wrong = [("authorization", "Bearer admin-token-not-the-one")];
            let (status, body) = request_with(&c, "POST", &url, &wrong, Vec::new()).await;
            assert_eq!(status, 401, "{body}");
            bodies.push(body);
            continue;
        }
        let url = format!("{base}{}", path.replace("{user}", "alice"));
        let (status, body) = get(&c, &url).await;
        assert_eq!(status, 200, "{url}: {body}");
        bodies.push(body);
    }

    // ----- the live feed: a summary event at once, then one a second -----
    let summaries = first_events(&c, &format!("{base}/api/v1/events"), 2).await;
    for s in &summaries {
        assert!(s["pool"]["shares"]["accepted"].as_u64().unwrap() > 0, "{s}");
        let workers = s["workers"].as_array().unwrap();
        assert!(workers.iter().any(|w| w["user"] == "alice"), "{s}");
        bodies.push(s.to_string());
    }

    // At most 16 streams at once: the 17th is refused, and a place frees when one closes.
    let mut open = Vec::new();
    for _ in 0..16 {
        let req = hyper::Request::get(format!("{base}/api/v1/events"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = c.request(req).await.expect("answered");
        assert_eq!(resp.status(), 200);
        open.push(resp);
    }
    let (status, body) = get(&c, &format!("{base}/api/v1/events")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "too-many-subscribers"
    );
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(10);
    while first_events_status(&c, &format!("{base}/api/v1/events")).await != 200 {
        assert!(Instant::now() < deadline, "no place freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // ----- the dashboard: its pages and files, with the security headers -----
    let assets = blvm_stratum_v2::http::dashboard_assets_size();
    println!("the dashboard's files: {assets} bytes");
    assert!(
        assets < 64 * 1024,
        "the dashboard stays small: {assets} bytes"
    );
    for path in blvm_stratum_v2::http::dashboard_paths() {
        let url = format!("{base}{}", path.replace("{user}", "alice"));
        let req = hyper::Request::get(&url)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = c.request(req).await.expect("answered");
        assert_eq!(resp.status(), 200, "{url}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert_eq!(csp, blvm_stratum_v2::http::CONTENT_SECURITY_POLICY, "{url}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        // Nothing from elsewhere: no URL with a scheme but the SVG namespace.
        assert!(
            !text
                .replace("http://www.w3.org/2000/svg", "")
                .contains("://"),
            "{url} loads something from elsewhere"
        );
        bodies.push(text);
    }
    for url in [
        format!("{base}/api/v1/workers?user=alice&limit=1"),
        format!("{base}/api/v1/ledger/export?from_ms=0&limit=5"),
    ] {
        bodies.push(get_json(&c, &url).await.to_string());
    }

    // ----- limits -----
    let (status, body) = get(&c, &format!("{base}/no/such/route")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "not-found"
    );
    // On a client of its own: the server answers 413 without reading the body and closes
    // the connection, which a pooled client could otherwise reuse for the next request.
    let (status, _) = request(
        &client(),
        "GET",
        &format!("{base}/api/v1/pool"),
        vec![b'x'; 64 * 1024],
    )
    .await;
    assert_eq!(status, 413, "a large body is refused");
    let (status, _) = request(&c, "POST", &format!("{base}/api/v1/pool"), Vec::new()).await;
    assert_eq!(status, 405, "read-only");
    let (status, body) = get(&c, &format!("{base}/api/v1/users?limit=0")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(&c, &format!("{base}/api/v1/users?cursor=zz")).await;
    assert_eq!(status, 400, "{body}");

    // A second server on the same pool with a low rate: past the burst, 429.
    let strict = HttpServer::start(
        HttpSettings {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            requests_per_second: 1,
            ..HttpSettings::default()
        },
        server.observer(),
    )
    .await
    .expect("second HTTP server");
    let strict_base = format!("http://{}", strict.local_addr());
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&c, &format!("{strict_base}/api/v1/pool")).await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses[0], 200, "{statuses:?}");
    // The rate is per source: another address is still answered (one greedy client does
    // not shut out the dashboard or the scraper).
    let from_another = |source: [u8; 4]| {
        let addr = strict.local_addr();
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind((std::net::Ipv4Addr::from(source), 0).into())
                .unwrap();
            let mut stream = socket.connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(b"GET /api/v1/pool HTTP/1.1\r\nHost: pool\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned()
        }
    };
    assert_eq!(from_another([127, 0, 0, 2]).await, "HTTP/1.1 200");
    assert_eq!(
        get(&c, &format!("{strict_base}/api/v1/pool")).await.0,
        429,
        "the greedy source is still refused"
    );
    strict.stop().await;

    // ----- no secret anywhere -----
    bodies.push(blvm_stratum_v2::http::OPENAPI_DOCUMENT.to_owned());
    // The webhook was called (the block events), and its metrics are in the scrape above.
    let (_, text) = http_client::scrape(&c, &base).await;
    assert!(text.contains("blvm_stratum_webhook_events_total"), "{text}");
    bodies.push(text);
    // Delivered in the background: the first may still be on its way on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(20);
    let arrived = |r: &String| complete_request(r.as_bytes());
    while !hook_requests.lock().unwrap().iter().any(arrived) {
        assert!(
            Instant::now() < deadline,
            "no webhook request arrived whole"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hook_requests = hook_requests.lock().unwrap().clone();
    assert!(
        hook_requests.iter().filter(|r| arrived(r)).all(|r| r
            .to_ascii_lowercase()
            .contains("x-blvm-signature-256: sha256=")),
        "every webhook request is signed: {hook_requests:?}"
    );
    bodies.extend(hook_requests);
    for body in &bodies {
        for leaked in [RPC_PASSWORD, secret.as_str(), WEBHOOK_SECRET, ADMIN_TOKEN] {
            assert!(!body.contains(leaked), "a secret in a response: {leaked}");
        }
    }

    http.stop().await;
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("stops in time")
        .expect("stops");
}

/// A pool with a one-second handshake timeout and an SV1 port: an SV2 miner built on SRI's
/// crates sends one share twice (the second refused as a duplicate), an SV1 miner mines a
/// share, one connection sends 128 garbage bytes for a handshake, another sends nothing. The
/// counters show each under its label while the miners are connected, the refused share is
/// in its worker's `rejected_by_reason`, and `/api/v1/channels` lists both channels, paged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_refusals_protocols_and_channels_are_counted_under_their_labels() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pool = pool::TestPool::start_with(pool::RARE_BLOCKS, 1, |o| {
        o.setup_timeout_secs = Some(10);
        o.sv1_listen_addr = Some("127.0.0.1:0".into());
        o.http_listen_addr = Some("127.0.0.1:0".into());
    })
    .await;
    let http = HttpServer::start(pool.http.clone().expect("HTTP on"), pool.server.observer())
        .await
        .expect("HTTP server");
    let base = format!("http://{}", http.local_addr());
    let c = client();

    // An SV2 miner: one share accepted, then the same share again.
    let mut sv2 = sri_client::Miner::ready(pool.addr, &pool.key, 0)
        .await
        .expect("set up");
    let channel = sv2.open(true, "carol.rig7").await.expect("a channel");
    let share = sv2.valid_share(channel);
    assert_eq!(sv2.submit(&share).await.expect("answered"), Ok(1));
    let refused = sv2
        .submit(&share)
        .await
        .expect("answered")
        .expect_err("a share sent twice is refused");
    assert_eq!(refused, "duplicate-share");

    // An SV1 miner with one share.
    let mut sv1 = sv1_client::connect(pool.sv1_addr.expect("an SV1 port"), "dave.sv1rig").await;
    sv1.mine(1).await;

    // Garbage for a handshake: 64 bytes the pool takes for a key, then a frame it cannot
    // decrypt.
    let mut garbage = tokio::net::TcpStream::connect(pool.addr).await.unwrap();
    garbage.write_all(&[0x5a; 128]).await.unwrap();
    sri_client::expect_closed(&mut garbage, Duration::from_secs(10), "a garbage handshake").await;
    // Silence: closed by the pool after the one-second handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(pool.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut byte))
        .await
        .expect("closed within the timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // Counted once the shares are folded in (twice a second) and the endings recorded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let (m, _) = http_client::scrape(&c, &base).await;
        let counted = |name: &str, labels: &[(&str, &str)]| {
            http_client::matching(&m, name, labels)
                .first()
                .is_some_and(|s| http_client::value(s) >= 1.0)
        };
        if counted(
            "blvm_stratum_shares_rejected_total",
            &[("reason", "duplicate-share")],
        ) && counted(
            "blvm_stratum_connection_failures_total",
            &[("cause", "handshake_failed")],
        ) && counted(
            "blvm_stratum_connection_failures_total",
            &[("cause", "handshake_timeout")],
        ) && counted(
            "blvm_stratum_worker_shares_rejected_total",
            &[("user", "carol"), ("worker", "rig7")],
        ) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the failures and the refused share are not all counted: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        one(
            &m,
            "blvm_stratum_shares_rejected_total",
            &[("reason", "duplicate-share")]
        ),
        1.0
    );
    assert_eq!(
        one(
            &m,
            "blvm_stratum_worker_shares_rejected_total",
            &[("user", "carol"), ("worker", "rig7")]
        ),
        1.0
    );
    assert!(one(&m, "blvm_stratum_channels", &[("kind", "extended")]) >= 1.0);
    for protocol in ["sv1", "sv2"] {
        assert_eq!(
            one(
                &m,
                "blvm_stratum_connections",
                &[("state", "set_up"), ("protocol", protocol)]
            ),
            1.0,
            "one {protocol} miner set up"
        );
    }
    // The JSON API counts the same connections as /metrics.
    let pool_view = get_json(&c, &format!("{base}/api/v1/pool")).await;
    assert_eq!(pool_view["connections"]["set_up"], 2, "{pool_view}");
    assert_eq!(pool_view["connections"]["pre_setup"], 0, "{pool_view}");

    // The refused share under its worker's reasons.
    let workers = get_json(&c, &format!("{base}/api/v1/workers?user=carol")).await;
    let rig7 = &workers["items"][0];
    assert_eq!(rig7["worker"], "rig7", "{workers}");
    assert_eq!(rig7["accepted_shares"], 1, "{workers}");
    assert_eq!(
        rig7["rejected_by_reason"],
        serde_json::json!({ "duplicate-share": 1 }),
        "{workers}"
    );
    let dave = get_json(&c, &format!("{base}/api/v1/workers?user=dave")).await;
    assert_eq!(
        dave["items"][0]["rejected_by_reason"],
        serde_json::json!({}),
        "{dave}"
    );

    // The open channels, a page of one at a time.
    let first = get_json(&c, &format!("{base}/api/v1/channels?limit=1")).await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = get_json(
        &c,
        &format!("{base}/api/v1/channels?limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(second["next_cursor"], Value::Null, "{second}");
    let all = get_json(&c, &format!("{base}/api/v1/channels")).await;
    println!("channels: {all}");
    let items = all["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{all}");
    assert_eq!(items[0], first["items"][0]);
    assert_eq!(items[1], second["items"][0]);
    let carol = items
        .iter()
        .find(|ch| ch["user"] == "carol")
        .expect("carol's channel");
    assert_eq!(carol["worker"], "rig7", "{carol}");
    assert_eq!(carol["user_identity"], "carol.rig7", "{carol}");
    assert_eq!(carol["kind"], "extended", "{carol}");
    assert_eq!(carol["channel_id"].as_u64(), Some(u64::from(channel)));
    assert_eq!(
        (
            carol["accepted_shares"].as_u64(),
            carol["rejected_shares"].as_u64()
        ),
        (Some(1), Some(1)),
        "{carol}"
    );
    let target = carol["target"].as_str().expect("a target");
    assert!(
        target.len() == 64 && target.bytes().all(|b| b.is_ascii_hexdigit()),
        "{carol}"
    );
    let difficulty = carol["difficulty"].as_f64().expect("a difficulty");
    assert!((1e-9..=1e-8 * 1.001).contains(&difficulty), "{carol}");
    let sv1_channel = items
        .iter()
        .find(|ch| ch["user"] == "dave")
        .expect("the SV1 miner's channel");
    assert_eq!(sv1_channel["worker"], "sv1rig", "{sv1_channel}");
    assert!(
        sv1_channel["accepted_shares"].as_u64() >= Some(1),
        "{sv1_channel}"
    );
    assert_ne!(carol["connection_id"], sv1_channel["connection_id"]);
    let connections = get_json(&c, &format!("{base}/api/v1/connections")).await;
    let ids: BTreeSet<u64> = connections["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|conn| conn["id"].as_u64().unwrap())
        .collect();
    assert!(
        ids.contains(&carol["connection_id"].as_u64().unwrap()),
        "{connections}"
    );
    let (status, body) = get(&c, &format!("{base}/api/v1/channels?cursor=7")).await;
    assert_eq!(status, 400, "{body}");

    drop(sv1);
    drop(sv2);
    http.stop().await;
    pool.stop().await;
}

/// The status of a request for the stream at `url` (its body is dropped unread).
async fn first_events_status(c: &HttpClient, url: &str) -> u16 {
    let req = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    c.request(req).await.expect("answered").status().as_u16()
}

/// The data of the first `n` `summary` events of the server-sent event stream at `url`.
async fn first_events(c: &HttpClient, url: &str, n: usize) -> Vec<Value> {
    let req = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = c.request(req).await.expect("answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < n {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("events in time")
            .expect("the stream goes on")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
        // Events end with a blank line.
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.lines().any(|l| l == "event: summary") {
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                events.push(serde_json::from_str(&data).expect("a JSON summary"));
            }
        }
    }
    events
}

/// Waits until `/api/v1/blocks` shows an accepted block with its payout; returns the page.
async fn wait_for_a_paid_block(c: &HttpClient, base: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let blocks = get_json(c, &format!("{base}/api/v1/blocks")).await;
        let paid = blocks["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|b| b["status"] == "accepted" && b["payout"].is_object());
        if paid {
            return blocks;
        }
        assert!(Instant::now() < deadline, "no paid block: {blocks}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The same pool on a PostgreSQL ledger whose URL holds a password: the API reads blocks,
/// payouts, balances and the export through its own connection, and the password is in no
/// response (nor in /metrics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reads_a_postgresql_ledger_and_never_shows_its_password() {
    const DB_PASSWORD: &str = "db-pw-Hq2sLw7Ra4";
    // Off the runtime: the test's PostgreSQL client blocks.
    let (server_pg, url) = tokio::task::spawn_blocking(|| {
        let server = postgres::TempPostgres::start();
        let url = server.fresh_database();
        (server, url)
    })
    .await
    .expect("PostgreSQL started");
    // Trust authentication: the password is accepted (and never asked for), as in a URL an
    // operator would configure.
    let url = url.replacen("postgres@", &format!("postgres:{DB_PASSWORD}@"), 1);
    assert!(url.contains(DB_PASSWORD));
    let secret = authority_secret();
    let bodies = mine_and_read_the_ledger_routes(&url, "carol", &secret).await;
    for body in &bodies {
        for leaked in [DB_PASSWORD, RPC_PASSWORD, secret.as_str()] {
            assert!(!body.contains(leaked), "a secret in a response: {leaked}");
        }
    }
    drop(server_pg);
}

/// The same pool on a ledger in memory (`ledger_url = "memory:"`): the API's ledger routes
/// read it through a shared handle (they answered 503 `no-ledger-reader` before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reads_a_ledger_in_memory() {
    mine_and_read_the_ledger_routes("memory:", "dave", &authority_secret()).await;
}

/// A pool on the ledger at `ledger_url` with its HTTP server; `user` mines until a block is
/// paid; then the ledger's routes must answer from it: the paid block, the user's balance, the
/// block's window export (no more shares than were acknowledged), payouts, the user's page.
/// Returns every body read.
async fn mine_and_read_the_ledger_routes(
    ledger_url: &str,
    user: &str,
    secret: &str,
) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = PoolConfig::resolve(
        &PoolOptions {
            ledger_url: Some(ledger_url.into()),
            ..pool_options(dir.path(), secret)
        },
        "test",
    )
    .expect("config");
    let http_settings = config.http.clone().expect("the HTTP server is on");
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        bits: CHAIN_BITS,
        synthetic_transactions: 2,
        block_interval_secs: 0,
    }));
    let server = StratumV2Server::new(config, node).expect("server");
    let pool_addr = server.start().await.expect("started");
    let http = HttpServer::start(http_settings, server.observer())
        .await
        .expect("HTTP server");
    let base = format!("http://{}", http.local_addr());
    let c = client();
    let report = cpu_miner::mine_for(
        pool_addr.to_string(),
        server.authority_public_key().to_owned(),
        &format!("{user}.rig"),
        4,
    )
    .await;
    assert!(report.shares_accepted > 0, "{report:?}");
    // Paid blocks come from the ledger (the pool's memory of found blocks has no payouts).
    let blocks = wait_for_a_paid_block(&c, &base).await;
    let hash = blocks["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["payout"].is_object())
        .unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bodies = vec![blocks.to_string()];
    let balances = get_json(&c, &format!("{base}/api/v1/balances")).await;
    assert!(
        balances["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["user"] == user && b["earned_sat"].as_u64() > Some(0)),
        "{balances}"
    );
    bodies.push(balances.to_string());
    let export = get_json(&c, &format!("{base}/api/v1/ledger/export?block={hash}")).await;
    let shares = export["items"].as_array().unwrap();
    assert!(!shares.is_empty(), "{export}");
    assert!(shares.len() as u64 <= report.shares_accepted, "{export}");
    bodies.push(export.to_string());
    let payouts = get_json(&c, &format!("{base}/api/v1/payouts")).await;
    assert!(
        !payouts["items"].as_array().unwrap().is_empty(),
        "{payouts}"
    );
    bodies.push(payouts.to_string());
    for path in [
        "/metrics".to_owned(),
        "/api/v1/pool".to_owned(),
        format!("/api/v1/users/{user}"),
    ] {
        let (status, body) = get(&c, &format!("{base}{path}")).await;
        assert_eq!(status, 200, "{path}: {body}");
        bodies.push(body);
    }
    http.stop().await;
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("stops in time")
        .expect("stops");
    bodies
}

/// The binary with its HTTP port already taken: it says so, and mines on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_mines_on_when_the_http_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to take");
    let taken_addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut pool = PoolProcess::start(
        dir.path(),
        &[
            "--listen-addr",
            "127.0.0.1:0",
            "--min-difficulty",
            "1e-6",
            "--max-difficulty",
            "1e-6",
            "--share-rate-multiple",
            "1e9",
            "--http-listen-addr",
            &taken_addr,
        ],
    );
    // The HTTP server's state: printed before or after the address and key.
    let mut seen = 0;
    loop {
        if seen == pool.seen.len() {
            pool.next_line(Duration::from_secs(60), "its HTTP state");
        }
        let line = pool.seen[seen].clone();
        seen += 1;
        assert!(
            !line.starts_with("HTTP dashboard on"),
            "bound a taken port? {line}"
        );
        if line.starts_with("HTTP server not started") {
            assert!(line.contains(&taken_addr), "{line}");
            break;
        }
    }
    let report = cpu_miner::mine_for(pool.addr.clone(), pool.key.clone(), "bob.rig", 3).await;
    assert!(report.shares_accepted > 0, "the pool mines on: {report:?}");
    pool.signal(libc::SIGTERM);
    let status = pool.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    drop(taken);
}
