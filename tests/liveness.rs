//! Liveness and share floods (issue 14 items 2 and 4), sans-IO and over TCP.
//!
//! Sans-IO (a pool `Connection<Session>` and a CPU miner's `Connection<MinerSession>` on a
//! fake clock): bytes of an unfinished frame do not restart the idle timer, a whole frame
//! does; a set-up connection without a channel is closed; a channel with only refused shares
//! is closed; a valid-share flood is refused past the channel's rate, its target raised at
//! once, and the connection closed when it keeps on.
//!
//! Over TCP (the real server on 127.0.0.1, the SRI-built client of `common/sri_client.rs`): a
//! dripping connection is closed at the idle timeout, a connection that never opens a channel
//! is closed, and a one-connection flood is throttled and closed while an honest miner on
//! another connection keeps being accepted (its acknowledgement latency printed, with and
//! without the flood); the pool-wide channel cap refuses channels past it on any connection
//! and gets a closed connection's places back.

#[path = "common/inert_protocol.rs"]
mod inert_protocol;
#[path = "common/pool.rs"]
mod pool;
#[path = "common/sri_client.rs"]
mod sri_client;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use blvm_stratum_v2::client::{ChannelKind, Hasher, MinerConfig, MinerSession, Share};
use blvm_stratum_v2::connection::{Connection, ConnectionConfig, ConnectionError};
use blvm_stratum_v2::mining::{
    ExtranonceAllocator, HARDWARE_MIN_DIFFICULTY, MiningConfig, Session, SessionError,
    SessionEvent, ShareRejection, Work,
};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain};
use blvm_stratum_v2::noise::Responder;
use blvm_stratum_v2::wire::Str0_255;
use blvm_stratum_v2::wire::common::SetupConnection;
use inert_protocol::Inert;
use pool::{RARE_BLOCKS, TestPool};
use rand::SeedableRng;
use rand::rngs::StdRng;
use secp256k1::{Keypair, SECP256K1};
use sri_client::{HonestMiner, Miner, expect_closed};
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, timeout};

const NOW_S: u32 = 1_800_000_000;
/// Distinct shares the flooding connection sends, again and again.
const FLOOD_SHARES: usize = 2_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;

fn responder() -> (Keypair, Arc<RwLock<Responder>>) {
    let mut rng = StdRng::seed_from_u64(1);
    let authority = Keypair::new(SECP256K1, &mut rng);
    let responder = Responder::generate(authority, NOW_S - 60, 3_600, &mut rng);
    (authority, Arc::new(RwLock::new(responder)))
}

fn config(idle: Option<u64>) -> ConnectionConfig {
    ConnectionConfig {
        handshake_timeout_ms: 5_000,
        setup_timeout_ms: 7_000,
        idle_timeout_ms: idle,
        max_payload_len: 1 << 16,
    }
}

/// Easy shares (difficulty 1e-9, a few hashes), blocks rare.
fn mining(tweak: impl FnOnce(&mut MiningConfig)) -> MiningConfig {
    let mut c = MiningConfig {
        min_difficulty: 1e-9,
        ..MiningConfig::default()
    };
    tweak(&mut c);
    c
}

fn pool_session(config: MiningConfig) -> Session {
    pool_session_on(0x1d00ffff, config)
}

fn pool_session_on(bits: u32, config: MiningConfig) -> Session {
    let mut chain = EmbeddedChain::new(ChainConfig {
        bits,
        synthetic_transactions: 3,
        block_interval_secs: 0,
    });
    let config = Arc::new(config);
    let work = Work::new(1, chain.template(NOW_S), &config.coinbase).unwrap();
    let mut pool = Session::new(config, Arc::new(ExtranonceAllocator::new()));
    pool.on_work(&work, NOW_MS);
    pool
}

struct Rig {
    pool: Connection<Session>,
    miner: Connection<MinerSession>,
    hasher: Hasher,
}

impl Rig {
    /// Handshake, setup and an extended channel, all at `NOW_MS`.
    fn new(mining: MiningConfig, idle: Option<u64>) -> Rig {
        Self::on(pool_session(mining), idle)
    }

    fn on(session: Session, idle: Option<u64>) -> Rig {
        let (authority, responder) = responder();
        let pool = Connection::accept(
            session,
            responder,
            StdRng::seed_from_u64(2),
            config(idle),
            NOW_MS,
        );
        let miner = MinerSession::new(MinerConfig {
            channel: ChannelKind::Extended,
            user_identity: "alice.cpu".into(),
            ..MinerConfig::default()
        })
        .unwrap();
        let miner = Connection::connect(
            miner,
            authority.x_only_public_key().0,
            &mut StdRng::seed_from_u64(3),
            config(None),
            NOW_MS,
        );
        let mut rig = Rig {
            pool,
            miner,
            hasher: Hasher::new(0, 1),
        };
        rig.pump(NOW_MS).unwrap();
        assert_eq!(rig.pool.protocol().channel_count(), 1);
        let _ = rig.pool_events();
        rig
    }

    /// Moves bytes both ways until neither side has anything to write; the pool's error, if
    /// it ends the connection.
    fn pump(&mut self, now: u64) -> Result<(), ConnectionError<SessionError>> {
        let mut wire = Vec::new();
        loop {
            let mut moved = false;
            if self.miner.poll_transmit(&mut wire) {
                moved = true;
                self.pool.handle_wire(&wire, now)?;
                wire.clear();
            }
            if self.pool.poll_transmit(&mut wire) {
                moved = true;
                self.miner.handle_wire(&wire, now).unwrap();
                wire.clear();
            }
            if !moved {
                return Ok(());
            }
        }
    }

    fn pool_events(&mut self) -> Vec<SessionEvent> {
        std::iter::from_fn(|| self.pool.poll_event()).collect()
    }

    fn find_share(&mut self) -> Share {
        let work = self.miner.protocol().work().expect("work").clone();
        let mut found = None;
        self.hasher.mine(
            &work,
            |_| true,
            |s| {
                found = Some(s);
                false
            },
        );
        found.expect("a share at an easy target")
    }

    /// Submits `share` at `now`; the pool's events, or the error that ended it.
    fn submit(
        &mut self,
        share: &Share,
        now: u64,
    ) -> Result<Vec<SessionEvent>, ConnectionError<SessionError>> {
        self.miner
            .with_protocol(|m| m.submit(share))
            .unwrap()
            .expect("the miner submits it");
        self.pump(now)?;
        while self.miner.poll_event().is_some() {}
        Ok(self.pool_events())
    }
}

fn rejections(events: &[SessionEvent]) -> Vec<ShareRejection> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::ShareRejected { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn accepted(events: &[SessionEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, SessionEvent::ShareAccepted { .. }))
        .count()
}

#[test]
fn an_unfinished_frame_dripped_in_does_not_restart_the_idle_timer() {
    let mut rig = Rig::new(mining(|_| {}), Some(20_000));
    let share = rig.find_share();
    rig.miner
        .with_protocol(|m| m.submit(&share))
        .unwrap()
        .unwrap();
    let mut wire = Vec::new();
    assert!(rig.miner.poll_transmit(&mut wire));
    // Every byte but the last, one every 100 ms (a byte every 9 s did it before).
    let mut now = NOW_MS;
    for b in &wire[..wire.len() - 1] {
        now += 100;
        rig.pool.handle_wire(std::slice::from_ref(b), now).unwrap();
    }
    assert!(now < NOW_MS + 20_000);
    assert_eq!(rig.pool.poll_timeout(), Some(NOW_MS + 20_000));
    rig.pool.handle_timeout(NOW_MS + 19_999).unwrap();
    assert!(matches!(
        rig.pool.handle_timeout(NOW_MS + 20_000),
        Err(ConnectionError::Idle)
    ));
}

#[test]
fn a_whole_frame_restarts_the_idle_timer() {
    let mut rig = Rig::new(mining(|_| {}), Some(20_000));
    let share = rig.find_share();
    let events = rig.submit(&share, NOW_MS + 15_000).unwrap();
    assert_eq!(accepted(&events), 1);
    rig.pool.handle_timeout(NOW_MS + 20_000).unwrap();
    assert!(matches!(
        rig.pool.handle_timeout(NOW_MS + 35_000),
        Err(ConnectionError::Idle)
    ));
}

/// An inert protocol that sends SetupConnection and nothing else.
fn setup_only() -> Inert {
    let mut p = Inert::set_up();
    let s = |t| Str0_255::new(t).unwrap();
    p.out
        .push(&SetupConnection {
            protocol: 0,
            min_version: 2,
            max_version: 2,
            flags: 0,
            endpoint_host: s("127.0.0.1"),
            endpoint_port: 3333,
            vendor: s("idle"),
            hardware_version: s(""),
            firmware: s(""),
            device_id: s(""),
        })
        .unwrap();
    p
}

#[test]
fn a_set_up_connection_without_a_channel_is_closed() {
    let (authority, responder) = responder();
    let mut pool = Connection::accept(
        pool_session(mining(|c| c.channel_open_timeout_ms = Some(5_000))),
        responder,
        StdRng::seed_from_u64(2),
        config(Some(60_000)),
        NOW_MS,
    );
    let mut client = Connection::connect(
        setup_only(),
        authority.x_only_public_key().0,
        &mut StdRng::seed_from_u64(3),
        config(None),
        NOW_MS,
    );
    let mut wire = Vec::new();
    let at = NOW_MS + 1_000;
    for _ in 0..3 {
        if client.poll_transmit(&mut wire) {
            pool.handle_wire(&wire, at).unwrap();
            wire.clear();
        }
        if pool.poll_transmit(&mut wire) {
            client.handle_wire(&wire, at).unwrap();
            wire.clear();
        }
    }
    assert!(pool.protocol().is_ready(), "set up");
    assert_eq!(pool.poll_timeout(), Some(at + 5_000));
    pool.handle_timeout(at + 4_999).unwrap();
    let end = pool.handle_timeout(at + 5_000).unwrap_err();
    assert!(
        matches!(end, ConnectionError::Protocol(SessionError::NoChannel(5))),
        "{end}"
    );
}

#[test]
fn a_channel_with_only_refused_shares_is_closed_then_the_connection() {
    let mut rig = Rig::new(
        mining(|c| {
            c.channel_idle_ms = Some(60_000);
            c.channel_open_timeout_ms = Some(30_000);
        }),
        None,
    );
    let share = rig.find_share();
    assert_eq!(accepted(&rig.submit(&share, NOW_MS + 1_000).unwrap()), 1);
    // The same share again, twice: refused, and not counted as activity.
    for at in [NOW_MS + 30_000, NOW_MS + 50_000] {
        let events = rig.submit(&share, at).unwrap();
        assert_eq!(rejections(&events), [ShareRejection::DuplicateShare]);
    }
    let idle_at = NOW_MS + 61_000;
    assert!(rig.pool.poll_timeout().is_some_and(|t| t <= idle_at));
    rig.pool.handle_timeout(idle_at - 1).unwrap();
    assert_eq!(rig.pool.protocol().channel_count(), 1);
    rig.pool.handle_timeout(idle_at).unwrap();
    assert_eq!(
        rig.pool.protocol().channel_count(),
        0,
        "the idle channel closed"
    );
    assert!(
        rig.pool_events()
            .iter()
            .any(|e| matches!(e, SessionEvent::ChannelClosed { .. }))
    );
    // No channel left: the connection has the channel-open time to open another.
    assert_eq!(rig.pool.poll_timeout(), Some(idle_at + 30_000));
    let end = rig.pool.handle_timeout(idle_at + 30_000).unwrap_err();
    assert!(
        matches!(end, ConnectionError::Protocol(SessionError::NoChannel(30))),
        "{end}"
    );
}

#[test]
fn a_flood_is_refused_past_the_rate_and_the_target_rises_at_once() {
    // Rate limit 4 x 18 a minute: a burst of 72, then 1.2 a second.
    let mut rig = Rig::new(
        mining(|c| {
            c.share_rate_multiple = 4.0;
            c.max_difficulty = 1e-6;
        }),
        None,
    );
    let at = NOW_MS + 1_000;
    let mut credited = 0;
    for _ in 0..72 {
        let share = rig.find_share();
        credited += accepted(&rig.submit(&share, at).unwrap());
    }
    assert_eq!(credited, 72, "the burst is accepted");
    // (Vardiff saw the burst too and raised the target already.)
    let before = rig.pool.protocol().channels()[0].target;
    let share = rig.find_share();
    let events = rig.submit(&share, at).unwrap();
    assert_eq!(rejections(&events), [ShareRejection::TooManyShares]);
    let raised = events.iter().find_map(|e| match e {
        SessionEvent::TargetChanged { target, .. } => Some(*target),
        _ => None,
    });
    let raised = raised.expect("the target rises at once");
    assert!(raised < before, "harder: {raised:?} vs {before:?}");
    // Four times the difficulty: the allowed rate, aimed at the vardiff rate.
    let ratio = before.difficulty_float() / raised.difficulty_float();
    assert!((ratio - 1.0 / 4.0).abs() < 0.01, "ratio {ratio}");
    // The miner was sent a job at the new target.
    let work = rig.miner.protocol().work().expect("work");
    assert_eq!(work.target, raised.to_le_bytes());
    // 1.2 shares a second come back.
    let share = rig.find_share();
    assert_eq!(accepted(&rig.submit(&share, at + 1_000).unwrap()), 1);
}

#[test]
fn a_channel_that_keeps_flooding_is_closed() {
    let mut rig = Rig::new(
        mining(|c| {
            c.share_rate_multiple = 4.0;
            c.max_difficulty = 1e-8;
            c.flood_close_refusals = 20;
        }),
        None,
    );
    let at = NOW_MS + 1_000;
    let (mut credited, mut refused) = (0, 0);
    let end = loop {
        let share = rig.find_share();
        match rig.submit(&share, at) {
            Ok(events) => {
                credited += accepted(&events);
                refused += rejections(&events)
                    .iter()
                    .filter(|r| **r == ShareRejection::TooManyShares)
                    .count();
            }
            Err(e) => break e,
        }
        assert!(credited + refused < 200, "never closed");
    };
    assert!(
        matches!(
            end,
            ConnectionError::Protocol(SessionError::ShareFlood { .. })
        ),
        "{end}"
    );
    assert_eq!((credited, refused), (72, 19), "closed at the 20th refusal");
}

#[test]
fn the_difficulty_floor_is_real_hardwares_on_a_real_chain_and_easy_on_regtest() {
    let floors = |c: &mut MiningConfig| {
        c.min_difficulty = HARDWARE_MIN_DIFFICULTY;
        c.easy_chain_min_difficulty = Some(1e-6);
    };
    // Difficulty 1 (mainnet's floor): the hardware floor.
    let rig = Rig::on(pool_session_on(0x1d00ffff, mining(floors)), None);
    let d = rig.pool.protocol().channels()[0].target.difficulty_float();
    assert!((d / HARDWARE_MIN_DIFFICULTY - 1.0).abs() < 1e-3, "{d}");
    // Regtest: the easy floor.
    let rig = Rig::on(pool_session_on(0x207fffff, mining(floors)), None);
    let d = rig.pool.protocol().channels()[0].target.difficulty_float();
    assert!((d / 1e-6 - 1.0).abs() < 1e-3, "{d}");
}

// Over TCP.

async fn run<F: std::future::Future<Output = ()>>(f: F) {
    timeout(Duration::from_secs(120), f)
        .await
        .expect("test timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dripping_an_unfinished_frame_is_closed_at_the_idle_timeout() {
    run(async {
        // The honest miner of e2e_hostile.rs mines beside it throughout.
        let pool = TestPool::start_with(RARE_BLOCKS, 5, |o| o.idle_timeout_secs = Some(2)).await;
        let honest = HonestMiner::start(pool.addr, &pool.key).await;
        let mut m = Miner::ready(pool.addr, &pool.key, 0).await.expect("setup");
        let ch = m.open(true, "dripper").await.expect("channel");
        let share = m.valid_share(ch);
        let frame = m.encrypt_submit(&share).expect("frame");
        let started = Instant::now();
        let mut stream = m.conn.into_stream();
        // One byte every 400 ms of a frame never finished: the connection must go at the idle
        // timeout (2 s after the last whole frame), not live for as long as the drip.
        let drip = async {
            for b in &frame[..frame.len() - 1] {
                if stream.write_all(std::slice::from_ref(b)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        };
        let _ = timeout(Duration::from_secs(6), drip).await;
        expect_closed(&mut stream, Duration::from_secs(3), "a dripping connection").await;
        let lived = started.elapsed();
        println!("a dripping connection lived {lived:?} (idle timeout 2 s)");
        assert!(lived < Duration::from_secs(5), "lived {lived:?}");
        honest
            .assert_progress(20, Duration::from_secs(10), "after the drip")
            .await;
        honest.finish().await;
        pool.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_opens_no_channel_is_closed() {
    run(async {
        let pool =
            TestPool::start_with(RARE_BLOCKS, 5, |o| o.channel_open_timeout_secs = Some(1)).await;
        let m = Miner::ready(pool.addr, &pool.key, 0).await.expect("setup");
        let started = Instant::now();
        let mut stream = m.conn.into_stream();
        expect_closed(
            &mut stream,
            Duration::from_secs(4),
            "a connection with no channel",
        )
        .await;
        let lived = started.elapsed();
        assert!(
            lived >= Duration::from_millis(900),
            "closed too early: {lived:?}"
        );
        pool.stop().await;
    })
    .await;
}

/// The pool-wide channel cap over TCP: with `max_channels` channels open across connections,
/// another is refused `channel-capacity-exhausted` on any connection, and a connection's end
/// gives its channels' places back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_wide_channel_cap_refuses_channels_past_it_and_frees_closed_ones() {
    run(async {
        let pool = TestPool::start_with(RARE_BLOCKS, 5, |o| o.max_channels = Some(2)).await;
        let mut first = Miner::ready(pool.addr, &pool.key, 0).await.expect("setup");
        first.open(true, "cap.1").await.expect("the first channel");
        let mut second = Miner::ready(pool.addr, &pool.key, 0).await.expect("setup");
        let ch = second
            .open(false, "cap.2")
            .await
            .expect("the second channel");
        let mut third = Miner::ready(pool.addr, &pool.key, 0).await.expect("setup");
        let refused = third.open(true, "cap.3").await.expect_err("over the cap");
        let capacity = "open refused: channel-capacity-exhausted";
        assert!(refused.to_string().contains(capacity), "{refused}");
        // The second connection still mines: the cap refuses newcomers, not the open channels.
        let share = second.valid_share(ch);
        assert!(second.submit(&share).await.expect("reply").is_ok());
        // The first connection ends: its channel's place is free for the third.
        drop(first);
        let started = Instant::now();
        loop {
            match third.open(true, "cap.3").await {
                Ok(_) => break,
                Err(e) => assert!(
                    started.elapsed() < Duration::from_secs(5) && e.to_string().contains(capacity),
                    "the closed connection's place did not come back: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pool.stop().await;
    })
    .await;
}

/// Acknowledgement latencies of `n` shares, one every `pace`; (p50, p99, max).
async fn honest_latencies(
    m: &mut Miner,
    ch: u32,
    n: usize,
    pace: Duration,
) -> (Duration, Duration, Duration) {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let share = m.valid_share(ch);
        let t = Instant::now();
        let reply = m.submit(&share).await.expect("honest reply");
        lat.push(t.elapsed());
        assert!(reply.is_ok(), "honest share refused: {reply:?}");
        tokio::time::sleep(pace).await;
    }
    lat.sort();
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), lat[lat.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_connection_share_flood_is_throttled_and_closed_while_an_honest_miner_goes_on() {
    run(async {
        // One share a second aimed at, at most 20 a second per channel (a burst of 1,200);
        // the difficulty is capped at 1e-8 so the honest miner's rate stays its own.
        let pool = TestPool::start_with(RARE_BLOCKS, 5, |o| {
            o.shares_per_minute = Some(60.0);
            o.share_rate_multiple = Some(20.0);
            // Enough refusals in a row to measure the honest miner during the flood.
            o.flood_close_refusals = Some(30_000);
            o.credit_window_shares = Some(4096);
        })
        .await;
        let mut honest = Miner::ready(pool.addr, &pool.key, 0).await.expect("setup");
        let hch = honest.open(true, "honest").await.expect("channel");
        let pace = Duration::from_millis(100);
        let quiet = honest_latencies(&mut honest, hch, 40, pace).await;

        // The flood: valid shares found in advance on the first job, then sent again and
        // again (each time a new frame) as fast as the socket takes them, for as long as the
        // pool keeps the connection; the replies are read and thrown away (the pool never sees
        // a slow reader), never acted on (no new job or target is taken).
        let mut flooder = Miner::ready(pool.addr, &pool.key, 0).await.expect("setup");
        let fch = flooder.open(true, "flood").await.expect("channel");
        let shares: Vec<_> = (0..FLOOD_SHARES)
            .map(|_| flooder.valid_share(fch))
            .collect();
        let flood = tokio::spawn(async move {
            let started = Instant::now();
            let (mut sent, mut sink, mut wire) = (0u64, vec![0u8; 64 * 1024], Vec::new());
            'flood: while started.elapsed() < Duration::from_secs(60) {
                for batch in shares.chunks(256) {
                    wire.clear();
                    for share in batch {
                        wire.extend(flooder.encrypt_submit(share).expect("frame"));
                    }
                    if flooder.conn.stream().write_all(&wire).await.is_err() {
                        break 'flood;
                    }
                    sent += batch.len() as u64;
                    loop {
                        match flooder.conn.stream().try_read(&mut sink) {
                            Ok(0) => break 'flood,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => break 'flood,
                        }
                    }
                }
            }
            (
                sent,
                started.elapsed(),
                started.elapsed() < Duration::from_secs(60),
            )
        });
        // The honest miner's latency while the flood goes on (at least 10 shares).
        let mut during = Vec::new();
        while !flood.is_finished() || during.len() < 10 {
            let share = honest.valid_share(hch);
            let t = Instant::now();
            let reply = honest.submit(&share).await.expect("honest reply");
            during.push(t.elapsed());
            assert!(reply.is_ok(), "honest share refused: {reply:?}");
            tokio::time::sleep(pace).await;
        }
        let during_count = during.len();
        let honest_accepted = 40 + during_count as u64 + 10;
        during.sort();
        let at = |q: f64| during[((during.len() - 1) as f64 * q).round() as usize];
        let during = (at(0.5), at(0.99), during[during.len() - 1]);
        let (sent, flood_time, closed) = timeout(Duration::from_secs(90), flood)
            .await
            .expect("the flood ends")
            .expect("flood task");
        assert!(closed, "the flooding connection was never closed");
        // Still accepted after it.
        let after = honest_latencies(&mut honest, hch, 10, pace).await;
        let stats = pool.stats().await;
        let flood_credited = stats.accepted_shares.saturating_sub(honest_accepted);
        println!(
            "flood: {sent} shares sent, connection closed after {flood_time:?}, \
             {flood_credited} credited ({:.0}/s), {} refused; honest ack latency p50/p99/max \
             without the flood {:?}/{:?}/{:?}, during it ({} shares) {:?}/{:?}/{:?}, after \
             {:?}/{:?}/{:?}",
            flood_credited as f64 / flood_time.as_secs_f64(),
            stats.rejected_shares,
            quiet.0,
            quiet.1,
            quiet.2,
            during_count,
            during.0,
            during.1,
            during.2,
            after.0,
            after.1,
            after.2,
        );
        // The burst and 20 a second, however many were sent.
        let allowed = 1_200 + 20 * (flood_time.as_secs() + 1) + 64;
        assert!(
            flood_credited <= allowed,
            "{flood_credited} credited > {allowed}: {stats:?}"
        );
        assert!(stats.rejected_shares >= 30_000, "{stats:?}");
        pool.stop().await;
    })
    .await;
}
