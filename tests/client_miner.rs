//! The CPU miner (`blvm_stratum_v2::client`) against the pool's own mining core: first in
//! memory (frames pumped between the two state machines, no sockets), then over real TCP with
//! the Noise handshake, through `run_miner`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin::BlockHash;
use bitcoin::hashes::Hash;
use blvm_stratum_v2::client::{
    ChannelKind, Hasher, JobKind, MinerConfig, MinerError, MinerEvent, MinerOptions, MinerSession,
    MiningWork, Share, ShareDropped, StopReason, run_miner, split_frames,
};
use blvm_stratum_v2::mining::{ExtranonceAllocator, MiningConfig, Session, SessionEvent, Work};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain};
use blvm_stratum_v2::noise::keys::{encode_public_key, generate_authority_keypair};
use blvm_stratum_v2::noise::{INITIATOR_MESSAGE_LEN, Responder};
use blvm_stratum_v2::wire::Frame;
use secp256k1::Keypair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const NOW_S: u32 = 1_800_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;

/// A chain whose blocks are rare (difficulty 1: one in 2^32 hashes), so shares stay shares.
fn hard_chain() -> ChainConfig {
    ChainConfig {
        bits: 0x1d00ffff,
        synthetic_transactions: 3,
        block_interval_secs: 0,
    }
}

fn pool_config(min_difficulty: f64) -> Arc<MiningConfig> {
    Arc::new(MiningConfig {
        min_difficulty,
        ..MiningConfig::default()
    })
}

/// Moves frames both ways until neither side has anything to say; returns the miner's events.
fn pump(pool: &mut Session, miner: &mut MinerSession, now_ms: u64) -> Vec<MinerEvent> {
    let mut events = Vec::new();
    loop {
        let to_pool = std::mem::take(miner.output());
        let to_miner = std::mem::take(pool.output());
        if to_pool.is_empty() && to_miner.is_empty() {
            return events;
        }
        for f in split_frames(&to_pool) {
            let frame = Frame::parse_exact(f).expect("miner sends whole frames");
            pool.handle_frame(&frame, now_ms)
                .expect("pool accepts the miner's messages");
        }
        for f in split_frames(&to_miner) {
            let frame = Frame::parse_exact(f).expect("pool sends whole frames");
            miner
                .handle_frame(&frame, now_ms)
                .expect("miner accepts the pool's messages");
        }
        events.extend(miner.drain_events());
    }
}

/// Hashes until one share is found.
fn find_share(hasher: &mut Hasher, work: &MiningWork) -> Share {
    let mut found = None;
    hasher.mine(
        work,
        |_| true,
        |s| {
            found = Some(s);
            false
        },
    );
    found.expect("a share at an easy target")
}

struct Rig {
    chain: EmbeddedChain,
    config: Arc<MiningConfig>,
    pool: Session,
    miner: MinerSession,
    work_id: u64,
    now_ms: u64,
}

impl Rig {
    fn new(kind: ChannelKind) -> Rig {
        let mut chain = EmbeddedChain::new(hard_chain());
        let config = pool_config(1e-9);
        let work = Work::new(1, chain.template(NOW_S), &config.coinbase).unwrap();
        let mut pool = Session::new(config.clone(), Arc::new(ExtranonceAllocator::new()));
        pool.on_work(&work, NOW_MS);
        let miner = MinerSession::new(MinerConfig {
            channel: kind,
            user_identity: "alice.cpu".into(),
            endpoint_host: "127.0.0.1".into(),
            endpoint_port: 3333,
            ..MinerConfig::default()
        })
        .unwrap();
        Rig {
            chain,
            config,
            pool,
            miner,
            work_id: 1,
            now_ms: NOW_MS,
        }
    }

    fn pump(&mut self) -> Vec<MinerEvent> {
        pump(&mut self.pool, &mut self.miner, self.now_ms)
    }

    /// Mines and submits until `n` more shares are accepted; one simulated second a share.
    fn mine_accepted(&mut self, hasher: &mut Hasher, n: u64) {
        let goal = self.miner.counts().accepted + n;
        let mut rounds = 0;
        while self.miner.counts().accepted < goal {
            rounds += 1;
            assert!(rounds < 10 * n + 20, "shares are not being accepted");
            let work = self.miner.work().expect("work").clone();
            let share = find_share(hasher, &work);
            self.miner.submit(&share).expect("fresh share is submitted");
            self.now_ms += 1000;
            self.pump();
        }
        assert!(
            self.miner.counts().rejected.is_empty(),
            "{:?}",
            self.miner.counts()
        );
    }

    /// New work on a new tip (a template whose prev hash we change, as after a block).
    fn new_tip(&mut self, tip: [u8; 32]) {
        self.work_id += 1;
        let mut template = self.chain.template(NOW_S);
        template.prev_hash = BlockHash::from_byte_array(tip);
        let work = Work::new(self.work_id, template, &self.config.coinbase).unwrap();
        self.pool.on_work(&work, self.now_ms);
    }

    /// New work on the same tip `tip` (a fresher template).
    fn same_tip(&mut self, tip: [u8; 32]) {
        self.work_id += 1;
        let mut template = self.chain.template(NOW_S);
        template.prev_hash = BlockHash::from_byte_array(tip);
        let work = Work::new(self.work_id, template, &self.config.coinbase).unwrap();
        self.pool.on_work(&work, self.now_ms);
    }
}

fn in_memory(kind: ChannelKind) {
    let mut rig = Rig::new(kind);
    let events = rig.pump();
    assert!(matches!(
        events[..],
        [
            MinerEvent::SetupSucceeded { .. },
            MinerEvent::ChannelOpened { .. },
            MinerEvent::NewJob { future: true, .. },
            MinerEvent::NewPrevHash { .. },
        ]
    ));
    let work = rig
        .miner
        .work()
        .expect("work after the first prev hash")
        .clone();
    match (&work.job, kind) {
        (JobKind::Standard { .. }, ChannelKind::Standard) => {}
        (
            JobKind::Extended {
                extranonce_size, ..
            },
            ChannelKind::Extended,
        ) => {
            assert_eq!(*extranonce_size, 8)
        }
        other => panic!("job kind {other:?}"),
    }
    assert_eq!(work.ntime, NOW_S);
    assert_eq!(work.prev_hash, rig.chain.tip().to_byte_array());

    let mut hasher = Hasher::new(0, 1);
    rig.mine_accepted(&mut hasher, 10);
    assert_eq!(rig.miner.counts().accepted, 10);
    assert_eq!(rig.miner.counts().submitted, 10);

    // A share found on the old tip, kept until after the new tip arrives.
    let old_share = find_share(&mut hasher, rig.miner.work().unwrap());

    let old_generation = rig.miner.generation();
    rig.new_tip([0x42; 32]);
    let events = rig.pump();
    let (job, prev) = match events[..] {
        [
            MinerEvent::NewJob {
                job_id,
                future: true,
            },
            MinerEvent::NewPrevHash {
                job_id: activated,
                prev_hash,
            },
        ] => (job_id, (activated, prev_hash)),
        ref other => panic!("expected a future job then SetNewPrevHash, got {other:?}"),
    };
    assert_eq!(prev, (job, [0x42; 32]));
    let work = rig.miner.work().unwrap().clone();
    assert_eq!((work.job_id, work.prev_hash), (job, [0x42; 32]));
    assert!(work.generation > old_generation);
    assert_eq!(rig.miner.prev_hashes_received(), 2);

    // The old tip's share is stale: dropped by the miner, never rejected by the pool.
    assert_eq!(rig.miner.submit(&old_share), Err(ShareDropped::Stale));
    rig.mine_accepted(&mut hasher, 5);
    assert_eq!(rig.miner.counts().accepted, 15);

    // A fresher template on the same tip arrives as a job active at once.
    rig.same_tip([0x42; 32]);
    let events = rig.pump();
    assert!(
        matches!(events[..], [MinerEvent::NewJob { future: false, job_id }] if job_id != job),
        "{events:?}"
    );
    assert_ne!(rig.miner.work().unwrap().job_id, job);
    rig.mine_accepted(&mut hasher, 5);
    assert_eq!(rig.miner.counts().accepted, 20);
    assert_eq!(rig.miner.counts().dropped, 1);
    assert_eq!(rig.miner.jobs_received(), 3);

    let stats = &rig.pool.channels()[0].stats;
    assert_eq!(stats.accepted, 20);
    assert_eq!(stats.rejected.iter().sum::<u64>(), 0);
}

#[test]
fn in_memory_extended_channel_mines_and_follows_a_new_tip() {
    in_memory(ChannelKind::Extended);
}

#[test]
fn in_memory_standard_channel_mines_and_follows_a_new_tip() {
    in_memory(ChannelKind::Standard);
}

#[test]
fn a_raised_target_drops_shares_that_miss_it() {
    let mut rig = Rig::new(ChannelKind::Extended);
    rig.pump();
    let mut hasher = Hasher::new(0, 1);
    let share = find_share(&mut hasher, rig.miner.work().unwrap());
    // The pool asks for a target no share of ours meets.
    let channel_id = rig.miner.channel_id().unwrap();
    let mut frame = Vec::new();
    blvm_stratum_v2::wire::encode_frame(
        &blvm_stratum_v2::wire::mining::SetTarget {
            channel_id,
            maximum_target: [0; 32],
        },
        &mut frame,
    )
    .unwrap();
    let before = rig.miner.work().unwrap().clone();
    rig.miner
        .handle_frame(&Frame::parse_exact(&frame).unwrap(), rig.now_ms)
        .unwrap();
    let after = rig.miner.work().unwrap().clone();
    assert_eq!(after.target, [0; 32]);
    assert!(after.generation > before.generation);
    assert_eq!(after.job_seq, before.job_seq, "same job: hashers resume");
    assert_eq!(rig.miner.submit(&share), Err(ShareDropped::AboveTarget));
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// A one-connection pool: Noise responder, then the mining core over the encrypted transport
/// until the miner hangs up. Returns the number of shares the pool accepted.
async fn serve_one(listener: TcpListener, authority: Keypair) -> Result<u64, String> {
    let (mut stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
    let now = unix_now().as_secs() as u32;
    let responder = Responder::generate(authority, now, 3600, &mut rand::thread_rng());
    let mut m1 = [0u8; INITIATOR_MESSAGE_LEN];
    stream
        .read_exact(&mut m1)
        .await
        .map_err(|e| e.to_string())?;
    let (m2, mut transport) = responder
        .accept(&m1, now, &mut rand::thread_rng())
        .map_err(|e| e.to_string())?;
    stream.write_all(&m2).await.map_err(|e| e.to_string())?;

    let config = pool_config(1e-6);
    let mut chain = EmbeddedChain::new(hard_chain());
    let work = Work::new(1, chain.template(now), &config.coinbase).map_err(|e| e.to_string())?;
    let mut session = Session::new(config, Arc::new(ExtranonceAllocator::new()));
    session.on_work(&work, unix_now().as_millis() as u64);
    let mut buf = vec![0u8; 64 * 1024];
    let mut wire = Vec::new();
    let mut accepted = 0u64;
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        transport.feed(&buf[..n]);
        let now_ms = unix_now().as_millis() as u64;
        while let Some(plain) = transport.next_frame().map_err(|e| e.to_string())? {
            let frame = Frame::parse_exact(plain).map_err(|e| e.to_string())?;
            session
                .handle_frame(&frame, now_ms)
                .map_err(|e| e.to_string())?;
        }
        session.on_tick(now_ms);
        accepted += session
            .drain_events()
            .filter(|e| matches!(e, SessionEvent::ShareAccepted { .. }))
            .count() as u64;
        let out = std::mem::take(session.output());
        wire.clear();
        for f in split_frames(&out) {
            transport
                .encrypt_frame(f, &mut wire)
                .map_err(|e| e.to_string())?;
        }
        // The miner may already be gone after its last share: a failed write ends the session.
        if stream.write_all(&wire).await.is_err() {
            break;
        }
    }
    Ok(accepted)
}

async fn tcp_run(
    channel: ChannelKind,
    threads: usize,
) -> (blvm_stratum_v2::client::MinerReport, u64) {
    let authority = generate_authority_keypair(&mut rand::thread_rng());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_one(listener, authority));
    let opts = MinerOptions {
        url: addr.to_string(),
        authority_pubkey: encode_public_key(&authority.x_only_public_key().0),
        threads,
        channel,
        user: "bob.cpu".into(),
        nominal_hash_rate: 0.0,
        max_shares: Some(5),
        duration: Some(Duration::from_secs(60)),
        ..MinerOptions::default()
    };
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        run_miner(opts, std::future::pending()),
    )
    .await
    .expect("miner stops by itself")
    .expect("mining run succeeds");
    let pool_accepted = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server ends when the miner hangs up")
        .unwrap()
        .expect("server ran cleanly");
    (report, pool_accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_extended_run_miner_stops_at_five_accepted_shares() {
    let (report, pool_accepted) = tcp_run(ChannelKind::Extended, 2).await;
    assert_eq!(report.stop, StopReason::MaxShares);
    assert_eq!(report.shares_accepted, 5, "{report:?}");
    assert!(pool_accepted >= 5);
    assert_eq!(report.jobs_received, 1);
    assert_eq!(report.prev_hashes_received, 1);
    assert!(report.hashes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_standard_run_miner_stops_at_five_accepted_shares() {
    let (report, pool_accepted) = tcp_run(ChannelKind::Standard, 1).await;
    assert_eq!(report.stop, StopReason::MaxShares);
    assert_eq!(report.shares_accepted, 5, "{report:?}");
    assert!(pool_accepted >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_wrong_authority_key_fails_the_handshake() {
    let authority = generate_authority_keypair(&mut rand::thread_rng());
    let impostor = generate_authority_keypair(&mut rand::thread_rng());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_one(listener, authority));
    let opts = MinerOptions {
        url: addr.to_string(),
        authority_pubkey: encode_public_key(&impostor.x_only_public_key().0),
        max_shares: Some(1),
        ..MinerOptions::default()
    };
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        run_miner(opts, std::future::pending()),
    )
    .await
    .expect("fails promptly");
    assert!(matches!(result, Err(MinerError::Noise(_))), "{result:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_shutdown_future_stops_the_miner() {
    let authority = generate_authority_keypair(&mut rand::thread_rng());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_one(listener, authority));
    let opts = MinerOptions {
        url: addr.to_string(),
        authority_pubkey: encode_public_key(&authority.x_only_public_key().0),
        threads: 1,
        ..MinerOptions::default()
    };
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        run_miner(opts, tokio::time::sleep(Duration::from_millis(700))),
    )
    .await
    .expect("stops on shutdown")
    .expect("clean run");
    assert_eq!(report.stop, StopReason::Shutdown);
    assert_eq!(report.prev_hashes_received, 1);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

/// Single-thread hashrate of the hashing loop (meaningful with `--release`).
#[test]
fn single_thread_hashrate() {
    let mut rig = Rig::new(ChannelKind::Extended);
    rig.pump();
    let mut work = rig.miner.work().unwrap().as_ref().clone();
    // A target no hash meets: pure hashing, no share handling.
    work.target = [0; 32];
    let mut hasher = Hasher::new(0, 1);
    let budget = if cfg!(debug_assertions) {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };
    let cpu_start = thread_cpu_ns();
    let start = Instant::now();
    let hashes = hasher.mine(&work, |_| start.elapsed() < budget, |_| true);
    let rate = hashes as f64 / start.elapsed().as_secs_f64();
    println!(
        "single-thread hashrate: {:.2} MH/s ({hashes} hashes in {:?})",
        rate / 1e6,
        start.elapsed()
    );
    // On a shared machine wall time includes waiting for a core; CPU time does not.
    if let (Some(a), Some(b)) = (cpu_start, thread_cpu_ns())
        && b > a
    {
        println!(
            "single-thread hashrate per CPU second: {:.2} MH/s",
            hashes as f64 / ((b - a) as f64 / 1e9) / 1e6
        );
    }
    assert!(hashes > 0);
}

/// Encodes `msg` and feeds it to the miner.
fn deliver<'a, M: blvm_stratum_v2::wire::Sv2Message<'a>>(
    miner: &mut MinerSession,
    msg: &M,
) -> Result<Vec<MinerEvent>, blvm_stratum_v2::client::MinerSessionError> {
    let mut bytes = Vec::new();
    blvm_stratum_v2::wire::encode_frame(msg, &mut bytes).unwrap();
    miner.handle_frame(&Frame::parse_exact(&bytes).unwrap(), NOW_MS)?;
    Ok(miner.drain_events().collect())
}

#[test]
fn setup_and_channel_refusals_are_errors() {
    use blvm_stratum_v2::client::MinerSessionError;
    use blvm_stratum_v2::wire::Str0_255;
    use blvm_stratum_v2::wire::common::{SetupConnectionError, SetupConnectionSuccess};
    use blvm_stratum_v2::wire::mining::OpenMiningChannelError;

    let mut miner = MinerSession::new(MinerConfig::default()).unwrap();
    let err = deliver(
        &mut miner,
        &SetupConnectionError {
            flags: 4,
            error_code: Str0_255::new("unsupported-feature-flags").unwrap(),
        },
    );
    assert_eq!(
        err,
        Err(MinerSessionError::SetupRefused {
            code: "unsupported-feature-flags".into(),
            flags: 4
        })
    );

    let mut miner = MinerSession::new(MinerConfig::default()).unwrap();
    miner.output().clear();
    deliver(
        &mut miner,
        &SetupConnectionSuccess {
            used_version: 2,
            flags: 0,
        },
    )
    .unwrap();
    assert!(
        !miner.output().is_empty(),
        "OpenExtendedMiningChannel queued"
    );
    let err = deliver(
        &mut miner,
        &OpenMiningChannelError {
            request_id: 1,
            error_code: Str0_255::new("max-target-out-of-range").unwrap(),
        },
    );
    assert_eq!(
        err,
        Err(MinerSessionError::ChannelRefused(
            "max-target-out-of-range".into()
        ))
    );
}

#[test]
fn extranonce_prefix_close_reconnect_and_unknown_prev_hash() {
    use blvm_stratum_v2::client::MinerSessionError;
    use blvm_stratum_v2::wire::common::Reconnect;
    use blvm_stratum_v2::wire::mining::{
        CloseChannel, NewExtendedMiningJob, SetExtranoncePrefix, SetNewPrevHash,
    };
    use blvm_stratum_v2::wire::{B0_32, B0_64K, Seq0_255, Str0_255};

    let mut rig = Rig::new(ChannelKind::Extended);
    rig.pump();
    let channel_id = rig.miner.channel_id().unwrap();
    let before = rig.miner.work().unwrap().clone();

    // A new prefix applies to jobs sent afterwards, not to the work being mined.
    let prefix = [0xab; 24];
    let events = deliver(
        &mut rig.miner,
        &SetExtranoncePrefix {
            channel_id,
            extranonce_prefix: B0_32::new(&prefix).unwrap(),
        },
    )
    .unwrap();
    assert_eq!(events, [MinerEvent::ExtranoncePrefixChanged]);
    assert_eq!(rig.miner.work().unwrap().generation, before.generation);
    let path: [[u8; 32]; 0] = [];
    deliver(
        &mut rig.miner,
        &NewExtendedMiningJob {
            channel_id,
            job_id: 77,
            min_ntime: None,
            version: 0x2000_0000,
            version_rolling_allowed: true,
            merkle_path: Seq0_255::new(&path).unwrap(),
            coinbase_tx_prefix: B0_64K::new(&[1, 2, 3]).unwrap(),
            coinbase_tx_suffix: B0_64K::new(&[4, 5]).unwrap(),
        },
    )
    .unwrap();
    assert_eq!(
        rig.miner.work().unwrap().job_id,
        before.job_id,
        "future job waits"
    );
    deliver(
        &mut rig.miner,
        &SetNewPrevHash {
            channel_id,
            job_id: 77,
            prev_hash: [5; 32],
            min_ntime: NOW_S + 10,
            nbits: 0x1d00ffff,
        },
    )
    .unwrap();
    let work = rig.miner.work().unwrap().clone();
    assert_eq!((work.job_id, work.ntime), (77, NOW_S + 10));
    match &work.job {
        JobKind::Extended {
            extranonce_prefix, ..
        } => assert_eq!(extranonce_prefix[..], prefix[..]),
        other => panic!("{other:?}"),
    }

    // SetNewPrevHash for a job never sent is a protocol violation.
    let err = deliver(
        &mut rig.miner,
        &SetNewPrevHash {
            channel_id,
            job_id: 999,
            prev_hash: [6; 32],
            min_ntime: NOW_S,
            nbits: 0x1d00ffff,
        },
    );
    assert!(
        matches!(err, Err(MinerSessionError::Protocol(_))),
        "{err:?}"
    );

    let events = deliver(
        &mut rig.miner,
        &Reconnect {
            new_host: Str0_255::new("pool2.example").unwrap(),
            new_port: 3334,
        },
    )
    .unwrap();
    assert_eq!(
        events,
        [MinerEvent::Reconnect {
            host: "pool2.example".into(),
            port: 3334
        }]
    );

    let mut hasher = Hasher::new(0, 1);
    let share = find_share(&mut hasher, &work);
    let events = deliver(
        &mut rig.miner,
        &CloseChannel {
            channel_id,
            reason_code: Str0_255::new("pool-maintenance").unwrap(),
        },
    )
    .unwrap();
    assert_eq!(
        events,
        [MinerEvent::ChannelClosed {
            reason: "pool-maintenance".into()
        }]
    );
    assert!(rig.miner.work().is_none());
    assert!(!rig.miner.is_open());
    assert_eq!(rig.miner.submit(&share), Err(ShareDropped::NoChannel));
}

/// This thread's CPU time in ns (Linux schedstat), if available.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
