//! The pool's limits on the Stratum V1 port over real TCP, the same as on the SV2 port: a miner
//! that subscribes and never authorizes is closed at the channel-open timeout, an authorized
//! one gone silent at the idle timeout, a peer that does not read as a slow reader (bounded
//! outbound bytes); connections past the per-source cap or the pool's set-up places are
//! refused; a share flood is refused past the share-rate limit and closed after the configured
//! refusals, and a loop of valid requests that are not shares is closed at its allowance.
//! Honest miners (SRI's `sv1_api` client) keep mining meanwhile. Each ending is counted under
//! its reason in the pool's refusal counts.

#[path = "common/pool.rs"]
mod pool;
#[path = "common/sri_client.rs"]
mod sri_client;
#[path = "common/sv1_client.rs"]
mod sv1_client;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use blvm_stratum_v2::sv1::request_budget::REQUEST_BURST;
use pool::{RARE_BLOCKS, TestPool};
use serde_json::Value;
use sri_client::expect_closed;
use sv1_client::HonestSv1Miner;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

const USER: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
const CLOSE_SOON: Duration = Duration::from_secs(5);
const PROGRESS: u64 = 20;
const PROGRESS_WITHIN: Duration = Duration::from_secs(10);

async fn run<F: std::future::Future<Output = ()>>(f: F) {
    timeout(Duration::from_secs(120), f)
        .await
        .expect("test timed out")
}

fn source(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A TCP connection to `addr` from `from` (an ephemeral port).
async fn connect_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends one request line.
async fn send(c: &mut BufReader<TcpStream>, line: &str) {
    c.get_mut().write_all(line.as_bytes()).await.unwrap();
    c.get_mut().write_all(b"\n").await.unwrap();
}

/// Reads one JSON line from the pool (`None`: closed).
async fn read_json(c: &mut BufReader<TcpStream>) -> Option<Value> {
    let mut line = String::new();
    let n = timeout(CLOSE_SOON, c.read_line(&mut line))
        .await
        .expect("an answer in time")
        .unwrap_or(0);
    (n > 0).then(|| serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
}

/// mining.subscribe on a new connection from `from`; returns it after the answer.
async fn subscribed(from: IpAddr, addr: SocketAddr) -> BufReader<TcpStream> {
    let mut c = BufReader::new(connect_from(from, addr).await);
    send(
        &mut c,
        r#"{"id":1,"method":"mining.subscribe","params":[]}"#,
    )
    .await;
    let answer = read_json(&mut c).await.expect("subscribed");
    assert!(answer["error"].is_null(), "{answer}");
    c
}

/// Whether `s` is still open (nothing to read, not closed) after a short wait.
async fn still_open(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    timeout(Duration::from_millis(300), s.peek(&mut b))
        .await
        .is_err()
}

/// The pool's refusal and failure counts, by label.
fn refusals(pool: &TestPool) -> HashMap<&'static str, u64> {
    pool.server
        .observer()
        .refusals()
        .into_iter()
        .map(|(r, n)| (r.label(), n))
        .collect()
}

/// Waits until the pool counted `label` at least `at_least` times (a connection's ending is
/// counted as its task ends, a moment after the socket's close).
async fn counted(pool: &TestPool, label: &str, at_least: u64) {
    let deadline = Instant::now() + CLOSE_SOON;
    while refusals(pool)[label] < at_least {
        assert!(
            Instant::now() < deadline,
            "{label}: not counted {at_least} times: {:?}",
            refusals(pool)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_without_authorize_is_closed_at_the_channel_open_timeout() {
    run(async {
        let pool =
            TestPool::start_with(RARE_BLOCKS, 5, |o| o.channel_open_timeout_secs = Some(1)).await;
        let sv1 = pool.sv1_addr.unwrap();
        let honest = HonestSv1Miner::start(sv1, &format!("{USER}.honest")).await;
        let mut c = subscribed(source(1), sv1).await;
        let started = Instant::now();
        expect_closed(
            c.get_mut(),
            Duration::from_secs(4),
            "subscribed, never authorized",
        )
        .await;
        let lived = started.elapsed();
        assert!(
            lived >= Duration::from_millis(900),
            "closed too early: {lived:?}"
        );
        counted(&pool, "no_channel", 1).await;
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "after the timeout")
            .await;
        drop(honest);
        pool.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorized_miner_gone_silent_is_closed_at_the_idle_timeout() {
    run(async {
        let pool = TestPool::start_with(RARE_BLOCKS, 5, |o| o.idle_timeout_secs = Some(2)).await;
        let sv1 = pool.sv1_addr.unwrap();
        let honest = HonestSv1Miner::start(sv1, &format!("{USER}.honest")).await;
        let mut silent = sv1_client::connect(sv1, &format!("{USER}.silent")).await;
        silent.one_share().await;
        let started = Instant::now();
        // Jobs may still come; the miner sends nothing more.
        while silent
            .line
            .next_line(Duration::from_secs(4))
            .await
            .is_some()
        {}
        let lived = started.elapsed();
        assert!(
            lived >= Duration::from_millis(1_900) && lived < Duration::from_secs(4),
            "closed after {lived:?} (idle timeout 2 s)"
        );
        counted(&pool, "idle_timeout", 1).await;
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "after the idle close")
            .await;
        drop(honest);
        pool.stop().await;
    })
    .await;
}

/// A peer that keeps sending shares (duplicates, each answered with error 22) and never reads
/// its answers: once the pool cannot write them it closes the connection (the driver's bound
/// on what it holds for a peer, or its write timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_closed_as_a_slow_reader() {
    run(async {
        let pool = TestPool::start(RARE_BLOCKS, 5).await;
        let sv1 = pool.sv1_addr.unwrap();
        let honest = HonestSv1Miner::start(sv1, &format!("{USER}.honest")).await;
        let failed_before = refusals(&pool)["connection_failed"];
        // A small receive buffer so the pool's answers back up quickly.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(sv1).await.unwrap();
        let mut reader = sv1_client::connect_stream(stream, &format!("{USER}.never-reads")).await;
        reader.one_share().await;
        let duplicate = reader.last_submit.clone().unwrap();
        let batch = duplicate.repeat(500);
        let started = Instant::now();
        let attacker = tokio::spawn(async move {
            let mut sent = 0u64;
            let end = timeout(Duration::from_secs(40), async {
                loop {
                    if let Err(e) = reader.line.send_raw(batch.as_bytes()).await {
                        return e;
                    }
                    sent += 500;
                }
            })
            .await;
            (end, sent)
        });
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "while a peer does not read")
            .await;
        let (end, sent) = attacker.await.unwrap();
        let e = end.unwrap_or_else(|_| panic!("still connected after {:?}", started.elapsed()));
        println!(
            "non-reading SV1 peer: {sent} submits sent, cut after {:?}: {e}",
            started.elapsed()
        );
        counted(&pool, "connection_failed", failed_before + 1).await;
        assert!(
            pool.stats().await.rejected_shares > 1000,
            "duplicates answered"
        );
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "after the slow reader")
            .await;
        drop(honest);
        pool.stop().await;
    })
    .await;
}

/// Past the per-source cap a connection is refused at once (127.0.0.1, the honest miner's, is
/// on the default allow-list: the others come from 127.0.0.2 and up); with every set-up place
/// taken by miners with channels, a newcomer's mining.subscribe is answered by a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sv1_connections_beyond_the_caps_are_refused() {
    run(async {
        let pool = TestPool::start_with(RARE_BLOCKS, 10, |o| {
            o.max_connections_per_ip = Some(2);
            o.max_connections = Some(3);
        })
        .await;
        let sv1 = pool.sv1_addr.unwrap();
        let honest = HonestSv1Miner::start(sv1, &format!("{USER}.honest")).await;
        // The per-source cap: two from 127.0.0.2, the third closed before any answer.
        let mut first = connect_from(source(2), sv1).await;
        let mut second = connect_from(source(2), sv1).await;
        let mut third = connect_from(source(2), sv1).await;
        let refused_at = Instant::now();
        expect_closed(&mut third, CLOSE_SOON, "a third connection from 127.0.0.2").await;
        assert!(
            refused_at.elapsed() < Duration::from_secs(5),
            "not the setup timeout (10 s)"
        );
        assert!(still_open(&mut first).await && still_open(&mut second).await);
        counted(&pool, "per_ip_cap", 1).await;
        drop((first, second));
        // The set-up places: the honest miner and two more with channels fill the pool.
        let mut miners = Vec::new();
        for (i, from) in [3u8, 4].into_iter().enumerate() {
            let stream = connect_from(source(from), sv1).await;
            let mut m = sv1_client::connect_stream(stream, &format!("{USER}.m{i}")).await;
            m.one_share().await;
            miners.push(m);
        }
        let mut newcomer = BufReader::new(connect_from(source(5), sv1).await);
        send(
            &mut newcomer,
            r#"{"id":1,"method":"mining.subscribe","params":[]}"#,
        )
        .await;
        expect_closed(newcomer.get_mut(), CLOSE_SOON, "a subscribe with no place").await;
        counted(&pool, "pool_full", 1).await;
        for m in &mut miners {
            m.one_share().await;
        }
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "with the pool full")
            .await;
        drop(honest);
        pool.stop().await;
    })
    .await;
}

/// Shares past the share-rate limit (a burst of one minute at 30 shares a minute) are refused
/// with the SV1 error 20 `too-many-shares`, and the connection is closed after the configured
/// refusals; an honest miner on its own channel keeps its shares accepted before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sv1_share_flood_is_refused_then_closed_while_an_honest_miner_goes_on() {
    const CLOSE_AFTER: u32 = 20;
    run(async {
        let pool = TestPool::start_with(RARE_BLOCKS, 5, |o| {
            o.shares_per_minute = Some(30.0);
            o.share_rate_multiple = Some(1.0);
            o.flood_close_refusals = Some(CLOSE_AFTER);
        })
        .await;
        let sv1 = pool.sv1_addr.unwrap();
        let mut honest = sv1_client::connect(sv1, &format!("{USER}.honest")).await;
        honest.mine(5).await;
        let mut flooder = sv1_client::connect(sv1, &format!("{USER}.flooder")).await;
        let mut submitted = 0u64;
        let closed = loop {
            submitted += 1;
            if let Err(e) = flooder.try_one_share().await {
                break e;
            }
            assert!(submitted < 1_000, "still open after {submitted} shares");
        };
        let too_many = flooder
            .miner
            .refused
            .iter()
            .filter(|(code, message)| *code == 20 && message == "too-many-shares")
            .count() as u32;
        println!(
            "flooder: {submitted} submitted, {} accepted, {too_many} refused for the rate, then {closed}",
            flooder.miner.accepted
        );
        assert!(too_many >= CLOSE_AFTER - 1, "{:?}", flooder.miner.refused);
        assert!(flooder.miner.accepted <= 31, "the burst: {}", flooder.miner.accepted);
        counted(&pool, "share_flood", 1).await;
        honest.mine(10).await;
        assert!(honest.miner.refused.is_empty(), "{:?}", honest.miner.refused);
        pool.stop().await;
    })
    .await;
}

/// mining.extranonce.subscribe in a loop (valid, each answered `true`): answered up to the
/// connection's allowance, then error 20 and the end; counted as `request-flood`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_of_valid_non_share_requests_is_closed_at_its_allowance() {
    run(async {
        let pool = TestPool::start(RARE_BLOCKS, 5).await;
        let sv1 = pool.sv1_addr.unwrap();
        let honest = HonestSv1Miner::start(sv1, &format!("{USER}.honest")).await;
        let mut c = subscribed(source(1), sv1).await;
        let flood: String = (0..2 * REQUEST_BURST)
            .map(|i| {
                format!(
                    "{{\"id\":{},\"method\":\"mining.extranonce.subscribe\",\"params\":[]}}\n",
                    10 + i
                )
            })
            .collect();
        let _ = c.get_mut().write_all(flood.as_bytes()).await;
        let mut answered = 0u32;
        let last = loop {
            let answer = read_json(&mut c).await.expect("answered before the close");
            if answer["result"] == true {
                answered += 1;
                continue;
            }
            break answer;
        };
        // The subscribe spent one of the allowance.
        assert_eq!(answered, REQUEST_BURST - 1);
        assert_eq!(last["error"][0], 20, "{last}");
        assert!(read_json(&mut c).await.is_none(), "closed");
        let flood_count = pool
            .server
            .observer()
            .sv1_refusals()
            .into_iter()
            .find(|(r, _)| r.name() == "request-flood")
            .map_or(0, |(_, n)| n);
        assert_eq!(flood_count, 1);
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "after the request flood")
            .await;
        drop(honest);
        pool.stop().await;
    })
    .await;
}
