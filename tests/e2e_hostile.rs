//! Hostile input over real TCP while an honest miner (the SRI-built client of
//! `common/sri_client.rs`) keeps mining: each attack must end with the server closing the
//! hostile connection, and the honest miner's accepted shares must keep growing during and after
//! it.

#[path = "common/pool.rs"]
mod pool;
#[path = "common/sri_client.rs"]
mod sri_client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pool::{RARE_BLOCKS, TestPool};
use sri_client::{HonestMiner, Miner, SriConn, expect_closed, raw_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

/// Handshake timeout of the pool under attack.
const HANDSHAKE_SECS: u64 = 2;
/// How long the server may take to close a connection it should close at once.
const CLOSE_SOON: Duration = Duration::from_secs(5);
/// Shares the honest miner must get accepted at each checkpoint, and within how long.
const PROGRESS: u64 = 20;
const PROGRESS_WITHIN: Duration = Duration::from_secs(10);

/// A pool under attack and its honest miner, already mining.
async fn pool_with_honest_miner() -> (TestPool, HonestMiner) {
    let pool = TestPool::start(RARE_BLOCKS, HANDSHAKE_SECS).await;
    let honest = HonestMiner::start(pool.addr, &pool.key).await;
    honest
        .assert_progress(PROGRESS, PROGRESS_WITHIN, "before the attack")
        .await;
    (pool, honest)
}

/// After an attack: the honest miner still mines, never got a refusal, only it is connected.
async fn after_attack(pool: TestPool, honest: HonestMiner, attack: &str) {
    honest
        .assert_progress(PROGRESS, PROGRESS_WITHIN, &format!("after {attack}"))
        .await;
    pool.wait_stats(CLOSE_SOON, attack, |s| s.miner_count == 1)
        .await;
    let accepted = honest.finish().await;
    let stats = pool.stats().await;
    assert!(stats.accepted_shares >= accepted, "{stats:?}");
    pool.stop().await;
}

async fn run<F: std::future::Future<Output = ()>>(f: F) {
    timeout(Duration::from_secs(90), f)
        .await
        .expect("test timed out")
}

/// A connection that has completed the handshake, SetupConnection and opened a channel.
async fn miner_with_channel(addr: SocketAddr, key: &str) -> (Miner, u32) {
    let mut m = Miner::ready(addr, key, 0).await.expect("setup");
    let ch = m.open(true, "hostile").await.expect("channel");
    (m, ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_handshake_is_closed() {
    run(async {
        let (pool, honest) = pool_with_honest_miner().await;
        // Random bytes, more than the first handshake message.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let garbage: Vec<u8> = (0..256)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut s = TcpStream::connect(pool.addr).await.unwrap();
        s.write_all(&garbage).await.unwrap();
        expect_closed(&mut s, CLOSE_SOON, "256 random bytes").await;
        // Something that is not SV2 at all and shorter than a handshake message: closed by the
        // handshake timeout.
        let mut s = TcpStream::connect(pool.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: pool\r\n\r\n")
            .await
            .unwrap();
        honest
            .assert_progress(
                PROGRESS,
                PROGRESS_WITHIN,
                "during a stalled garbage handshake",
            )
            .await;
        expect_closed(&mut s, CLOSE_SOON, "an HTTP request").await;
        // A finished handshake and then silence: closed by the setup timeout.
        let mut c = SriConn::connect(pool.addr, &pool.key).await.unwrap();
        let since = Instant::now();
        expect_closed(c.stream(), CLOSE_SOON, "no SetupConnection").await;
        assert!(since.elapsed() >= Duration::from_secs(HANDSHAKE_SECS) / 2);
        after_attack(pool, honest, "garbage handshakes").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_after_the_handshake_are_closed() {
    run(async {
        let (pool, honest) = pool_with_honest_miner().await;
        // SubmitSharesExtended (channel message) whose payload stops inside its fields.
        let (mut m, ch) = miner_with_channel(pool.addr, &pool.key).await;
        let mut payload = ch.to_le_bytes().to_vec();
        payload.extend_from_slice(&[1, 0, 0, 0, 7]);
        m.conn
            .send_frame(raw_frame(0x8000, 0x1b, payload.len() as u32, &payload))
            .await
            .unwrap();
        expect_closed(
            m.conn.stream(),
            CLOSE_SOON,
            "truncated SubmitSharesExtended",
        )
        .await;

        // An unknown message type of the base protocol, right after the handshake and after
        // SetupConnection.
        let mut c = SriConn::connect(pool.addr, &pool.key).await.unwrap();
        c.send_frame(raw_frame(0, 0x7f, 3, b"abc")).await.unwrap();
        expect_closed(c.stream(), CLOSE_SOON, "unknown msg_type before setup").await;
        let (mut m, _) = miner_with_channel(pool.addr, &pool.key).await;
        m.conn.send_frame(raw_frame(0, 0x7f, 0, b"")).await.unwrap();
        expect_closed(m.conn.stream(), CLOSE_SOON, "unknown msg_type after setup").await;

        // A SubmitSharesExtended whose length field claims more than the bytes it carries is
        // covered by (c); here one with trailing bytes that make its extranonce too long.
        let (mut m, ch) = miner_with_channel(pool.addr, &pool.key).await;
        let mut payload = ch.to_le_bytes().to_vec();
        payload.extend_from_slice(&[0; 20]);
        payload.push(200); // B0_32 length above 32
        payload.extend_from_slice(&[0; 200]);
        m.conn
            .send_frame(raw_frame(0x8000, 0x1b, payload.len() as u32, &payload))
            .await
            .unwrap();
        expect_closed(m.conn.stream(), CLOSE_SOON, "B0_32 of 200 bytes").await;

        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "during malformed frames")
            .await;
        after_attack(pool, honest, "malformed frames").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_length_in_the_encrypted_header_is_closed() {
    run(async {
        let (pool, honest) = pool_with_honest_miner().await;
        for len in [0xff_ffff, 1 << 20] {
            let (mut m, _) = miner_with_channel(pool.addr, &pool.key).await;
            // Only the 6-byte header is given to SRI's encoder: 22 encrypted bytes that announce
            // a payload that never comes.
            m.conn
                .send_frame(raw_frame(0x8000, 0x1b, len, b""))
                .await
                .unwrap();
            expect_closed(
                m.conn.stream(),
                CLOSE_SOON,
                &format!("msg_length {len:#x} in the encrypted header"),
            )
            .await;
        }
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "during oversized headers")
            .await;
        after_attack(pool, honest, "oversized headers").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_unfinished_handshakes_are_timed_out() {
    run(async {
        const N: usize = 1000;
        let (pool, honest) = pool_with_honest_miner().await;
        let connected = Arc::new(AtomicUsize::new(0));
        let mut flood = JoinSet::new();
        for i in 0..N {
            let (addr, connected) = (pool.addr, connected.clone());
            flood.spawn(async move {
                let mut s = timeout(Duration::from_secs(10), TcpStream::connect(addr))
                    .await
                    .map_err(|_| "connect timed out".to_string())?
                    .map_err(|e| format!("connect: {e}"))?;
                let since = Instant::now();
                connected.fetch_add(1, Ordering::Relaxed);
                if i % 2 == 0 {
                    // Half of them send the start of a handshake message, then stall.
                    let _ = s.write_all(&[0x42; 20]).await;
                }
                let mut buf = [0u8; 256];
                let closed = timeout(Duration::from_secs(HANDSHAKE_SECS + 8), async {
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
                closed
                    .map(|_| since.elapsed())
                    .map_err(|_| format!("connection {i} still open"))
            });
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while connected.load(Ordering::Relaxed) < N {
            assert!(
                Instant::now() < deadline && !flood.is_empty(),
                "only {} of {N} connected",
                connected.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        honest
            .assert_progress(
                PROGRESS,
                PROGRESS_WITHIN,
                "with 1000 stalled handshakes open",
            )
            .await;
        // A new miner is still served: handshake, setup, channel, accepted share.
        let (mut fresh, ch) = miner_with_channel(pool.addr, &pool.key).await;
        let share = fresh.valid_share(ch);
        assert_eq!(
            fresh.submit(&share).await.unwrap(),
            Ok(1),
            "new miner during the flood"
        );
        drop(fresh);
        let mut open_for = Vec::with_capacity(N);
        while let Some(r) = flood.join_next().await {
            open_for.push(r.expect("flood task").expect("closed by the server"));
        }
        let (min, max) = (
            open_for.iter().min().unwrap(),
            open_for.iter().max().unwrap(),
        );
        // Closed by the handshake timeout, not refused at once.
        assert!(
            *min >= Duration::from_millis(HANDSHAKE_SECS * 1000 / 2),
            "closed after {min:?}"
        );
        assert!(
            *max <= Duration::from_secs(HANDSHAKE_SECS + 5),
            "closed after {max:?}"
        );
        eprintln!("{N} stalled handshakes closed after {min:?}..{max:?}");
        after_attack(pool, honest, "1000 stalled handshakes").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected() {
    run(async {
        let (pool, honest) = pool_with_honest_miner().await;
        // A small receive buffer so the pool's replies back up quickly.
        let sock = TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let stream = sock.connect(pool.addr).await.unwrap();
        let conn = SriConn::handshake(stream, &pool.key).await.unwrap();
        let mut m = Miner::from_conn(conn);
        assert!(m.setup(0).await.is_ok());
        let ch = m.open(true, "never-reads").await.expect("channel");
        // From now on it only writes: shares for a job that does not exist, each answered with
        // a SubmitShares.Error it never reads.
        let mut bad = m.valid_share(ch);
        bad.job_id = bad.job_id.wrapping_add(1000);
        let started = Instant::now();
        let attacker = tokio::spawn(async move {
            let (mut sent, mut last_write) = (0u64, started);
            let end = timeout(Duration::from_secs(40), async {
                loop {
                    let mut batch = Vec::new();
                    for _ in 0..500 {
                        batch.extend(m.encrypt_submit(&bad).expect("encrypt"));
                    }
                    if let Err(e) = m.conn.stream().write_all(&batch).await {
                        return e;
                    }
                    sent += 500;
                    last_write = Instant::now();
                }
            })
            .await;
            (end, sent, last_write - started)
        });
        honest
            .assert_progress(PROGRESS, PROGRESS_WITHIN, "while a client does not read")
            .await;
        let (end, sent, blocked_at) = attacker.await.expect("attacker task");
        let elapsed = started.elapsed();
        let e = end.unwrap_or_else(|_| panic!("still connected after {elapsed:?} ({sent} shares)"));
        eprintln!(
            "non-reading client: {sent} shares sent, writes blocked after {blocked_at:?}, \
             cut after {elapsed:?}: {e}"
        );
        let refused = pool.stats().await.rejected_shares;
        assert!(refused > 1000, "the pool answered {refused} shares");
        after_attack(pool, honest, "a client that never reads").await;
    })
    .await;
}
