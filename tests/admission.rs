//! Admission control over real TCP (issue 14): other sources are client sockets bound to
//! 127.0.0.2, 127.0.0.3 ... before connecting (127.0.0.1, where the honest miner of
//! `tests/e2e_hostile.rs` mines, is on the default allow-list). A source over its cap is
//! refused while others connect and a set-up miner gets in (evicting a connection without a
//! channel when the pool is full); the handshake rate and the penalty box; 10,000 refused
//! connections log a bounded number of lines; 50,000 connect-and-close cycles leave the pool's
//! memory within a bound. The honest miner is accepted throughout.

#[path = "common/sri_client.rs"]
mod sri_client;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
use blvm_stratum_v2::server::StratumV2Server;
use sri_client::{HonestMiner, Miner, SriConn, expect_closed};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;

/// Blocks are rare at this nBits: shares never are blocks.
const RARE_BLOCKS: u32 = 0x1d00_ffff;
const PROGRESS: u64 = 20;
const PROGRESS_WITHIN: Duration = Duration::from_secs(10);
const CLOSE_SOON: Duration = Duration::from_secs(5);

fn source(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

async fn run<F: std::future::Future<Output = ()>>(f: F) {
    timeout(Duration::from_secs(120), f)
        .await
        .expect("test timed out")
}

/// A TCP connection to `addr` from `from` (an ephemeral port).
async fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    timeout(Duration::from_secs(10), socket.connect(addr))
        .await
        .map_err(std::io::Error::other)?
}

/// A finished Noise handshake from `from`, or the error (refused: closed before any reply).
async fn handshake_from(from: IpAddr, addr: SocketAddr, key: &str) -> std::io::Result<SriConn> {
    SriConn::handshake(connect_from(from, addr).await?, key).await
}

/// A miner from `from` that completed the handshake and SetupConnection.
async fn miner_from(from: IpAddr, addr: SocketAddr, key: &str) -> std::io::Result<Miner> {
    let mut m = Miner::from_conn(handshake_from(from, addr, key).await?);
    match m.setup(0).await? {
        sri_client_setup_ok!() => Ok(m),
        other => Err(std::io::Error::other(format!("setup answered {other:?}"))),
    }
}

macro_rules! sri_client_setup_ok {
    () => {
        parsers_sv2::AnyMessageOwned::Common(
            parsers_sv2::CommonMessagesOwned::SetupConnectionSuccess(_),
        )
    };
}
use sri_client_setup_ok;

/// An in-process pool on 127.0.0.1 with cheap shares and `opts` on top.
struct Pool {
    server: StratumV2Server,
    addr: SocketAddr,
    key: String,
    _dir: tempfile::TempDir,
}

impl Pool {
    async fn start(opts: PoolOptions) -> Pool {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = PoolOptions {
            listen_addr: Some("127.0.0.1:0".into()),
            data_dir: Some(dir.path().to_path_buf()),
            min_difficulty: Some(1e-9),
            max_difficulty: Some(1e-8),
            // The difficulty is capped at 1e-8, so vardiff cannot slow the honest miner's few
            // hundred shares a second: the share rate limit is raised past them, as in TestPool.
            share_rate_multiple: Some(10_000.0),
            chain_bits: Some(RARE_BLOCKS),
            handshake_timeout_secs: Some(2),
            setup_timeout_secs: Some(2),
            ..opts
        };
        let config = PoolConfig::resolve(&opts, "test").expect("valid test config");
        let node = Arc::new(EmbeddedNode::new(ChainConfig {
            bits: RARE_BLOCKS,
            synthetic_transactions: 0,
            block_interval_secs: 0,
        }));
        let server = StratumV2Server::new(config, node).expect("server");
        let addr = server.start().await.expect("server starts");
        let key = server.authority_public_key().to_owned();
        Pool {
            server,
            addr,
            key,
            _dir: dir,
        }
    }

    async fn stop(self) {
        timeout(Duration::from_secs(15), self.server.stop())
            .await
            .expect("server stops in time")
            .expect("server stops");
    }
}

/// A share found and accepted on a new channel of `m`.
async fn mines(m: &mut Miner, what: &str) {
    let ch = m.open(true, what).await.expect("channel");
    let share = m.valid_share(ch);
    assert_eq!(m.submit(&share).await.unwrap(), Ok(1), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_over_its_cap_is_refused_while_others_and_set_up_miners_get_in() {
    run(async {
        let pool = Pool::start(PoolOptions {
            max_connections_per_ip: Some(4),
            max_connections: Some(6),
            ..PoolOptions::default()
        })
        .await;
        let honest = HonestMiner::start(pool.addr, &pool.key).await;
        // Four set-up connections without a channel from one source: its cap.
        let mut parked = Vec::new();
        for _ in 0..4 {
            parked.push(
                miner_from(source(2), pool.addr, &pool.key)
                    .await
                    .expect("under the cap"),
            );
        }
        let refused = handshake_from(source(2), pool.addr, &pool.key).await;
        assert!(
            refused.is_err(),
            "a fifth connection of the source is refused"
        );
        // Another source still connects, sets up and mines.
        let mut other = miner_from(source(3), pool.addr, &pool.key)
            .await
            .expect("another source");
        mines(&mut other, "another source").await;
        // The pool is full now (6 set-up: honest, 4 parked, other). A new miner still gets in:
        // the oldest connection without a channel makes room.
        let mut newcomer = miner_from(source(4), pool.addr, &pool.key)
            .await
            .expect("a set-up miner gets in when the pool is full");
        mines(&mut newcomer, "newcomer in a full pool").await;
        expect_closed(
            parked[0].conn.stream(),
            CLOSE_SOON,
            "the oldest parked connection",
        )
        .await;
        // The rest of the parked ones are still there.
        for p in parked.iter_mut().skip(1) {
            let mut b = [0u8; 1];
            let still = timeout(Duration::from_millis(200), p.conn.stream().peek(&mut b)).await;
            assert!(still.is_err(), "a newer parked connection was kept");
        }
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "after the cap and the eviction")
            .await;
        honest.finish().await;
        pool.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_full_of_miners_with_channels_refuses_setup_and_keeps_them() {
    run(async {
        let pool = Pool::start(PoolOptions {
            max_connections: Some(2),
            ..PoolOptions::default()
        })
        .await;
        let honest = HonestMiner::start(pool.addr, &pool.key).await;
        let mut second = miner_from(source(5), pool.addr, &pool.key)
            .await
            .expect("second");
        mines(&mut second, "second").await;
        // Full, and everyone mines: the newcomer's setup is answered by a close.
        let third = miner_from(source(6), pool.addr, &pool.key).await;
        if let Ok(mut m) = third {
            expect_closed(m.conn.stream(), CLOSE_SOON, "a setup with no place").await;
        }
        mines(&mut second, "second, still there").await;
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "with the pool full")
            .await;
        honest.finish().await;
        pool.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_beyond_the_pool_wide_rate_are_refused_before_any_work() {
    run(async {
        let pool = Pool::start(PoolOptions {
            handshakes_per_sec: Some(2),
            ..PoolOptions::default()
        })
        .await;
        let honest = HonestMiner::start(pool.addr, &pool.key).await;
        // Let the bucket fill (2 a second, bursts of 2).
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let a = handshake_from(source(7), pool.addr, &pool.key).await;
        let b = handshake_from(source(8), pool.addr, &pool.key).await;
        assert!(a.is_ok() && b.is_ok(), "within the burst");
        let c = handshake_from(source(9), pool.addr, &pool.key).await;
        assert!(c.is_err(), "beyond the rate: closed before the handshake");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert!(
            handshake_from(source(9), pool.addr, &pool.key)
                .await
                .is_ok(),
            "the rate refills"
        );
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "with handshakes refused")
            .await;
        honest.finish().await;
        pool.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_keeps_failing_handshakes_is_refused_for_a_while() {
    run(async {
        let pool = Pool::start(PoolOptions {
            handshake_failures_before_penalty: Some(3),
            penalty_secs: Some(2),
            ..PoolOptions::default()
        })
        .await;
        let honest = HonestMiner::start(pool.addr, &pool.key).await;
        for _ in 0..3 {
            let mut s = connect_from(source(10), pool.addr).await.unwrap();
            s.write_all(&[0x42; 256]).await.unwrap();
            expect_closed(&mut s, CLOSE_SOON, "garbage").await;
        }
        // Its failures are counted as its connections end: give the server a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            handshake_from(source(10), pool.addr, &pool.key)
                .await
                .is_err(),
            "in the penalty box"
        );
        assert!(
            miner_from(source(11), pool.addr, &pool.key).await.is_ok(),
            "another source is not punished"
        );
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        assert!(
            miner_from(source(10), pool.addr, &pool.key).await.is_ok(),
            "the penalty expires"
        );
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "after the penalty box")
            .await;
        honest.finish().await;
        pool.stop().await;
    })
    .await;
}

/// The pool binary as a child: where it listens, its key, and its stderr lines counted.
struct ChildPool {
    child: Child,
    addr: SocketAddr,
    key: String,
    log_lines: Arc<AtomicUsize>,
    /// The first lines of its log (stderr), for what they say.
    log_text: Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl ChildPool {
    /// `ADMISSION_BEFORE_BIN`: another build of the pool (one without admission control, to
    /// measure the figures before it), run without `extra`.
    fn start(extra: &[&str]) -> ChildPool {
        let dir = tempfile::tempdir().expect("temp dir");
        // The share rate limit raised past the honest miner's few hundred shares a second (its
        // difficulty is capped at 1e-8, so vardiff cannot slow it), as in TestPool.
        let raised = ["--share-rate-multiple", "10000"];
        let (bin, extra, raised) = match std::env::var("ADMISSION_BEFORE_BIN") {
            Ok(bin) => (bin, &[][..], &[][..]),
            Err(_) => (
                env!("CARGO_BIN_EXE_blvm-stratum-v2").to_owned(),
                extra,
                &raised[..],
            ),
        };
        let mut child = Command::new(bin)
            .args(["--listen-addr", "127.0.0.1:0", "--chain-bits", "0x1d00ffff"])
            .args(["--min-difficulty", "1e-9", "--max-difficulty", "1e-8"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .args(raised)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pool starts");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log_lines = Arc::new(AtomicUsize::new(0));
        let counted = log_lines.clone();
        let log_text = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log_text.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                counted.fetch_add(1, Ordering::Relaxed);
                let mut kept = kept.lock().unwrap();
                if kept.len() < 100_000 {
                    kept.push(line);
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut key) = (None, None);
        while addr.is_none() || key.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the pool prints its address and key");
            if let Some(rest) = line.strip_prefix("blvm-stratum-v2 listening on ") {
                addr = rest
                    .split_whitespace()
                    .next()
                    .map(|a| a.parse().expect("address"));
            }
            if let Some(k) = line.strip_prefix("authority public key: ") {
                key = Some(k.to_owned());
            }
        }
        ChildPool {
            child,
            addr: addr.unwrap(),
            key: key.unwrap(),
            log_lines,
            log_text,
            _dir: dir,
        }
    }

    /// The child's resident memory (kB), from /proc.
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the pool's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    fn lines(&self) -> usize {
        self.log_lines.load(Ordering::Relaxed)
    }

    /// The log so far (its first 100,000 lines).
    fn log(&self) -> Vec<String> {
        self.log_text.lock().unwrap().clone()
    }
}

impl Drop for ChildPool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` connections from `from` (`concurrency` at a time), each closed by us at once (with a
/// reset: no TIME_WAIT left on our side) or, with `wait_close`, by the server first.
async fn connect_and_close(from: IpAddr, addr: SocketAddr, n: usize, wait_close: bool) {
    const CONCURRENCY: usize = 32;
    let mut tasks = JoinSet::new();
    for t in 0..CONCURRENCY {
        let count = n / CONCURRENCY + usize::from(t < n % CONCURRENCY);
        tasks.spawn(async move {
            for _ in 0..count {
                let Ok(mut s) = connect_from(from, addr).await else {
                    continue;
                };
                if wait_close {
                    expect_closed(&mut s, CLOSE_SOON, "a refused connection").await;
                } else {
                    // A zero linger never blocks: the close is a reset at once.
                    #[allow(deprecated)]
                    let _ = s.set_linger(Some(Duration::ZERO));
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("connect task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_refused_connections_log_a_bounded_number_of_lines() {
    run(async {
        // One new connection a second for the attacking source (bursts of 4): the rest of its
        // 10,000 are refused at accept.
        let pool = ChildPool::start(&[
            "--new-connections-per-ip-per-sec",
            "1",
            "--handshake-timeout-secs",
            "1",
        ]);
        let honest = HonestMiner::start(pool.addr, &pool.key).await;
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "before the flood")
            .await;
        let before = pool.lines();
        // The first few (and one a second after) are admitted and closed at the handshake
        // timeout.
        connect_and_close(source(12), pool.addr, 10_000, true).await;
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "after 10,000 refused")
            .await;
        let logged = pool.lines() - before;
        eprintln!("10,000 refused connections: {logged} log lines");
        assert!(
            logged <= 20,
            "{logged} log lines for 10,000 refused connections"
        );
        honest.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_connect_and_close_cycles_leave_memory_bounded() {
    run(async {
        // Every connection admitted (the flood comes from the allow-listed loopback, and the
        // handshake rate is lifted): the whole accept path runs 50,000 times.
        let pool = ChildPool::start(&["--handshakes-per-sec", "1000000"]);
        let honest = HonestMiner::start(pool.addr, &pool.key).await;
        let loopback = source(1);
        connect_and_close(loopback, pool.addr, 2_000, false).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let baseline = pool.rss_kb();
        connect_and_close(loopback, pool.addr, 50_000, false).await;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let after = pool.rss_kb();
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "after 50,000 connect-and-close")
            .await;
        let grown = after.saturating_sub(baseline);
        eprintln!("50,000 connect-and-close: VmRSS {baseline} kB -> {after} kB (+{grown} kB)");
        assert!(grown <= 16 * 1024, "memory grew by {grown} kB");
        honest.finish().await;
    })
    .await;
}

/// Client text reaches the log escaped: a vendor carrying a newline and a terminal escape
/// forges no log line and sends no escape to the operator's terminal (a user identity with
/// them opens no channel: `unknown-user`); and 10,000 refused channel requests on one
/// connection log a bounded number of lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_log_lines_appear_escaped_and_ten_thousand_refused_channels_log_little() {
    run(async {
        let pool = ChildPool::start(&["--max-channels-per-connection", "1"]);
        let honest = HonestMiner::start(pool.addr, &pool.key).await;
        let forged = "x\n2026-12-04T00:00:00.000000Z  INFO blvm_stratum_v2::server: block accepted by the node\u{1b}[2J";
        let mut m = Miner::from_conn(
            SriConn::connect(pool.addr, &pool.key)
                .await
                .expect("connects"),
        );
        m.setup_as(0, forged).await.expect("set up");
        let refused = m.open(true, forged).await.expect_err("no channel for that name");
        assert!(refused.to_string().contains("unknown-user"), "{refused}");
        m.open(true, "plain.rig").await.expect("the one channel opens");
        let before = pool.lines();
        for _ in 0..10_000 {
            // Each answered with OpenMiningChannel.Error (one channel per connection).
            assert!(m.open(true, forged).await.is_err(), "refused");
        }
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "after 10,000 refused channels")
            .await;
        let logged = pool.lines() - before;
        eprintln!("10,000 refused channels: {logged} log lines");
        assert!(logged <= 20, "{logged} log lines for 10,000 refused channels");
        let log = pool.log();
        assert!(
            log.iter()
                .all(|l| !l.starts_with("2026-12-04T00:00:00.000000Z") && !l.contains('\u{1b}')),
            "a forged line or a raw escape in the log"
        );
        let escaped = "x\\n2026-12-04T00:00:00.000000Z  INFO blvm_stratum_v2::server: block accepted by the node\\u{1b}[2J";
        assert!(
            log.iter().any(|l| l.contains(&format!("vendor={escaped}"))),
            "the vendor not logged escaped:\n{}",
            log.join("\n")
        );
        honest.finish().await;
    })
    .await;
}
