//! The pool behind Debian's HAProxy with the PROXY protocol v2 (issue 18, item 3), for real:
//! HAProxy in TCP mode in front of both of the pool's ports, sending `send-proxy-v2` headers
//! and `check-send-proxy` health checks, the pool trusting only 127.0.0.1/32. Miners on
//! distinct source addresses (an SRI client from 127.0.0.2, an sv1_api client from 127.0.0.3)
//! mine through it; the API shows their addresses, not HAProxy's; the per-source cap applies
//! to each miner's address; health checks are neither failures nor penalties; a forged header
//! from an untrusted address and a trusted address without a header are refused and counted.

#[path = "common/haproxy.rs"]
mod haproxy;
#[path = "common/sri_client.rs"]
mod sri_client;
#[path = "common/sv1_client.rs"]
mod sv1_client;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::http::HttpServer;
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
use blvm_stratum_v2::server::StratumV2Server;
use haproxy::{Haproxy, Route, connect_from};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sri_client::{Miner, SriConn, expect_closed};
use tokio::io::AsyncWriteExt;

/// Blocks are rare at this nBits: shares never are blocks.
const RARE_BLOCKS: u32 = 0x1d00_ffff;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// The helper itself: HAProxy sends each server a PROXY v2 header carrying the client's
/// address, and health checks that are PROXY v2 LOCAL headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_sends_proxy_v2_headers_and_local_health_checks() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let lb = Haproxy::start(&[Route::new("sv2", &[addr])]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in server.incoming() {
            let Ok(mut s) = s else { return };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut fixed = [0u8; 16];
            if s.read_exact(&mut fixed).is_err() {
                continue;
            }
            let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
            let mut rest = vec![0u8; len];
            let _ = s.read_exact(&mut rest);
            let _ = tx.send((fixed, rest));
        }
    });
    let _client = connect_from(ip(2), lb.frontend("sv2")).await;
    let (mut local, mut proxied) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (local < 2 || proxied < 1) && std::time::Instant::now() < deadline {
        let Ok((fixed, rest)) = rx.recv_timeout(Duration::from_secs(5)) else {
            break;
        };
        assert_eq!(&fixed[..12], b"\r\n\r\n\0\r\nQUIT\n", "{}", lb.log());
        match fixed[12] {
            0x20 => local += 1,
            0x21 => {
                if rest[..4] == [127, 0, 0, 2] {
                    proxied += 1;
                }
            }
            other => panic!("version/command {other:#x}"),
        }
    }
    assert!(
        local >= 2 && proxied >= 1,
        "{local} checks, {proxied} proxied; {}",
        lb.log()
    );
    lb.wait_server("sv20", true, Duration::from_secs(5));
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// GET `url`: its body (panics unless 200).
async fn get(c: &HttpClient, url: &str) -> String {
    let req = hyper::Request::builder()
        .uri(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), c.request(req))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

/// One sample of `/metrics` text: `series` is the name with its labels as printed
/// (`blvm_stratum_connection_limit_hits_total{limit="per_ip_cap"}`).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Every sample of a labelled counter family, summed.
fn family_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The source addresses /api/v1/connections shows for connected miners.
async fn connection_ips(c: &HttpClient, base: &str) -> BTreeSet<IpAddr> {
    let page: Value =
        serde_json::from_str(&get(c, &format!("{base}/api/v1/connections")).await).expect("JSON");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|c| c["connected"] == true)
        .map(|c| {
            let endpoint = c["endpoint"].as_str().expect("endpoint");
            endpoint
                .parse::<SocketAddr>()
                .unwrap_or_else(|e| panic!("{endpoint}: {e}"))
                .ip()
        })
        .collect()
}

/// An SRI miner through `addr` from `source`: handshake, setup, an extended channel.
async fn sri_miner(source: IpAddr, addr: SocketAddr, key: &str, user: &str) -> (Miner, u32) {
    let stream = connect_from(source, addr).await;
    let conn = SriConn::handshake(stream, key).await.expect("handshake");
    let mut miner = Miner::from_conn(conn);
    let reply = miner.setup(0).await.expect("setup");
    assert!(
        matches!(
            reply,
            parsers_sv2::AnyMessageOwned::Common(
                parsers_sv2::CommonMessagesOwned::SetupConnectionSuccess(_)
            )
        ),
        "{reply:?}"
    );
    let channel = miner.open(true, user).await.expect("channel");
    (miner, channel)
}

/// Submits valid shares until `n` are accepted.
async fn mine(miner: &mut Miner, channel: u32, n: u32) {
    let mut accepted = 0;
    for _ in 0..n * 10 {
        let share = miner.valid_share(channel);
        if let Ok(k) = miner.submit(&share).await.expect("submit answered") {
            accepted += k;
        }
        if accepted >= n {
            return;
        }
    }
    panic!("only {accepted} of {n} shares accepted");
}

/// Waits until `/metrics` satisfies `cond`, within 20 s.
async fn wait_metrics(c: &HttpClient, base: &str, what: &str, cond: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = get(c, &format!("{base}/metrics")).await;
        if cond(&text) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached; /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_behind_haproxy_are_seen_limited_and_refused_by_their_real_address() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        sv1_listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        min_difficulty: Some(1e-9),
        max_difficulty: Some(1e-8),
        chain_bits: Some(RARE_BLOCKS),
        share_rate_multiple: Some(10_000.0),
        http_listen_addr: Some("127.0.0.1:0".into()),
        proxy_protocol_from: Some(vec!["127.0.0.1/32".into()]),
        // Two connections per miner address; two failures would put an address in the
        // penalty box (health checks must never count as one).
        max_connections_per_ip: Some(2),
        handshake_failures_before_penalty: Some(2),
        // A trusted peer's header must come within it.
        handshake_timeout_secs: Some(2),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&opts, "test").expect("config");
    let http_settings = config.http.clone().expect("HTTP on");
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        bits: RARE_BLOCKS,
        synthetic_transactions: 2,
        block_interval_secs: 0,
    }));
    let server = StratumV2Server::new(config, node).expect("server");
    let sv2 = server.start().await.expect("started");
    let sv1 = server.sv1_local_addr().await.expect("SV1 port");
    let key = server.authority_public_key().to_owned();
    let http = HttpServer::start(http_settings, server.observer())
        .await
        .expect("HTTP server");
    let base = format!("http://{}", http.local_addr());
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let lb = Haproxy::start(&[Route::new("sv2", &[sv2]), Route::new("sv1", &[sv1])]);
    lb.wait_server("sv20", true, Duration::from_secs(10));
    lb.wait_server("sv10", true, Duration::from_secs(10));

    // ----- miners through HAProxy, each from its own address -----
    let (mut alice, alice_channel) = sri_miner(ip(2), lb.frontend("sv2"), &key, "alice.rig2").await;
    mine(&mut alice, alice_channel, 3).await;
    let mut bob =
        sv1_client::connect_stream(connect_from(ip(3), lb.frontend("sv1")).await, "bob.rig3").await;
    bob.mine(3).await;
    let ips = connection_ips(&c, &base).await;
    assert_eq!(
        ips,
        BTreeSet::from([ip(2), ip(3)]),
        "the miners' addresses, not HAProxy's"
    );

    // ----- the per-source cap applies to each miner's address -----
    let (_alice_second, _) = sri_miner(ip(2), lb.frontend("sv2"), &key, "alice.spare").await;
    let over = connect_from(ip(2), lb.frontend("sv2")).await;
    assert!(
        SriConn::handshake(over, &key).await.is_err(),
        "a third connection from 127.0.0.2 is over its cap of 2"
    );
    let (mut bob_sv2, bob_channel) = sri_miner(ip(3), lb.frontend("sv2"), &key, "bob.sv2").await;
    mine(&mut bob_sv2, bob_channel, 1).await;
    wait_metrics(&c, &base, "the cap refusal counted", |m| {
        metric(
            m,
            r#"blvm_stratum_connection_limit_hits_total{limit="per_ip_cap"}"#,
        ) == 1.0
    })
    .await;

    // ----- health checks: counted apart, never failures nor penalties -----
    wait_metrics(&c, &base, "HAProxy's health checks seen", |m| {
        metric(m, "blvm_stratum_proxy_health_checks_total") >= 4.0
    })
    .await;
    let m = get(&c, &format!("{base}/metrics")).await;
    assert_eq!(
        family_sum(&m, "blvm_stratum_connection_failures_total"),
        0.0,
        "no failure so far:\n{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"blvm_stratum_connection_limit_hits_total{limit="penalty_box"}"#
        ),
        0.0
    );

    // ----- a forged header from an untrusted address: refused, counted, not believed -----
    let forged = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        ppp::v2::IPv4::new([203, 0, 113, 50], [127, 0, 0, 1], 4242, sv2.port()),
    )
    .build()
    .unwrap();
    let mut direct = connect_from(ip(5), sv2).await;
    direct.write_all(&forged).await.unwrap();
    expect_closed(&mut direct, Duration::from_secs(5), "a forged v2 header").await;
    let mut direct = connect_from(ip(5), sv1).await;
    direct
        .write_all(b"PROXY TCP4 203.0.113.50 127.0.0.1 4242 3334\r\n")
        .await
        .unwrap();
    expect_closed(&mut direct, Duration::from_secs(5), "a forged v1 header").await;
    wait_metrics(&c, &base, "the forged headers counted", |m| {
        metric(
            m,
            r#"blvm_stratum_connection_failures_total{cause="proxy_header_untrusted"}"#,
        ) == 2.0
    })
    .await;

    // ----- the trusted address connecting directly, without a header: refused -----
    let trusted = connect_from(ip(1), sv2).await;
    assert!(
        SriConn::handshake(trusted, &key).await.is_err(),
        "127.0.0.1 without a PROXY header"
    );
    wait_metrics(&c, &base, "the missing header counted", |m| {
        metric(
            m,
            r#"blvm_stratum_connection_failures_total{cause="proxy_header_missing"}"#,
        ) == 1.0
    })
    .await;

    // A malformed header (more TLV bytes announced than allowed) and none in time.
    let mut oversize = connect_from(ip(1), sv2).await;
    let mut header = forged.clone();
    header[14..16].copy_from_slice(&4096u16.to_be_bytes());
    oversize.write_all(&header).await.unwrap();
    expect_closed(&mut oversize, Duration::from_secs(5), "an oversize header").await;
    let mut silent = connect_from(ip(1), sv1).await;
    expect_closed(&mut silent, Duration::from_secs(10), "no header in time").await;
    wait_metrics(&c, &base, "the malformed and late headers counted", |m| {
        metric(
            m,
            r#"blvm_stratum_connection_failures_total{cause="proxy_header_malformed"}"#,
        ) == 1.0
            && metric(
                m,
                r#"blvm_stratum_connection_failures_total{cause="proxy_header_timeout"}"#,
            ) == 1.0
    })
    .await;

    // The forged headers counted towards 127.0.0.5's penalty box (two failures).
    let mut penalized = connect_from(ip(5), sv2).await;
    expect_closed(
        &mut penalized,
        Duration::from_secs(5),
        "127.0.0.5 penalized",
    )
    .await;
    wait_metrics(&c, &base, "the penalty box", |m| {
        metric(
            m,
            r#"blvm_stratum_connection_limit_hits_total{limit="penalty_box"}"#,
        ) == 1.0
    })
    .await;

    // The miners mine on, and the API still shows only them.
    mine(&mut alice, alice_channel, 2).await;
    bob.mine(bob.miner.accepted + 2).await;
    let ips = connection_ips(&c, &base).await;
    assert_eq!(ips, BTreeSet::from([ip(2), ip(3)]), "{ips:?}");

    drop(lb);
    http.stop().await;
    tokio::time::timeout(Duration::from_secs(15), server.stop())
        .await
        .expect("stops in time")
        .expect("stops");
}
