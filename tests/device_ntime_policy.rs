//! A device that takes nTime from its own clock, as SRI's mining_device does (clock + 60 s,
//! set once per job, never rolled, on a standard channel), mines through the pool on the
//! embedded chain for 60 s: after its first block its shares keep being accepted and it finds
//! further blocks. First the critical moment alone, in memory with a fixed clock: blocks
//! found and new jobs received within the same second.
//!
//! Issue 19: on a chain that started at genesis, block 1 (a minute ahead) made the next
//! template's minimum time one second past it, so a job that reached the device within the
//! same second carried an nTime one second too old; every share on it was refused
//! `ntime-too-old` and, with no new job on the same tip, the device never recovered. The
//! embedded node's history (src/node/regtest.rs, "Block times") keeps the median time past
//! behind the clock as on a mature chain.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blvm_stratum_v2::client::{
    ChannelKind, Hasher, JobKind, MinerConfig, MinerOptions, MinerSession, MiningWork, NtimePolicy,
    Share, StopReason, run_miner, split_frames,
};
use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::mining::{ExtranonceAllocator, MiningConfig, Session, SessionEvent, Work};
use blvm_stratum_v2::node::NodeApi;
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain, EmbeddedNode, HISTORY_HEIGHT};
use blvm_stratum_v2::server::StratumV2Server;
use blvm_stratum_v2::wire::Frame;

/// How long the device mines.
const RUN: Duration = Duration::from_secs(60);
/// The device's nTime: its clock plus this.
const NTIME_OFFSET_SECS: i32 = 60;

/// The device's policy.
const DEVICE_NTIME: NtimePolicy = NtimePolicy {
    clock_offset_secs: Some(NTIME_OFFSET_SECS),
    roll: false,
};

/// The fixed clock of the in-memory run (2027).
const NOW_S: u32 = 1_800_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;

/// Moves frames both ways until neither side has anything to say.
fn pump(pool: &mut Session, miner: &mut MinerSession) {
    loop {
        let to_pool = std::mem::take(miner.output());
        let to_miner = std::mem::take(pool.output());
        if to_pool.is_empty() && to_miner.is_empty() {
            return;
        }
        for f in split_frames(&to_pool) {
            let frame = Frame::parse_exact(f).expect("whole frame");
            pool.handle_frame(&frame, NOW_MS).expect("pool takes it");
        }
        for f in split_frames(&to_miner) {
            let frame = Frame::parse_exact(f).expect("whole frame");
            miner.handle_frame(&frame, NOW_MS).expect("miner takes it");
        }
    }
}

/// Runs the device on `chain` with the clock stopped at `NOW_S`: each block found, submitted
/// to the chain, and the next job received, all within that second. Returns the blocks the
/// chain took and the shares the pool refused, by code, once `blocks` blocks were tried.
fn same_second_blocks(mut chain: EmbeddedChain, blocks: u32) -> (u32, Vec<String>) {
    // A share target harder than regtest's: every share is a block.
    let config = Arc::new(MiningConfig {
        min_difficulty: 1e-9,
        ..MiningConfig::default()
    });
    let mut pool = Session::new(config.clone(), Arc::new(ExtranonceAllocator::new()));
    let start = chain.height();
    pool.on_work(
        &Work::new(1, chain.template(NOW_S), &config.coinbase).expect("work"),
        NOW_MS,
    );
    let mut miner = MinerSession::new(MinerConfig {
        channel: ChannelKind::Standard,
        user_identity: "device".into(),
        ntime: DEVICE_NTIME,
        ..MinerConfig::default()
    })
    .expect("miner");
    let mut hasher = Hasher::new(0, 1).with_ntime_rolling(false);
    pump(&mut pool, &mut miner);
    for id in 2..2 + u64::from(blocks) {
        let work = miner.work().expect("work").clone();
        assert_eq!(work.ntime, NOW_S + 60, "the device's clock + 60");
        let mut share: Option<Share> = None;
        hasher.mine(
            &work,
            |_| true,
            |s| {
                share = Some(s);
                false
            },
        );
        miner.submit(&share.expect("a share")).expect("sent");
        pump(&mut pool, &mut miner);
        let Some(found) = pool.drain_events().find_map(|e| match e {
            SessionEvent::BlockFound(b) => Some(b.block),
            _ => None,
        }) else {
            break;
        };
        chain
            .submit_block(&found, NOW_S)
            .expect("the chain takes it");
        pool.on_work(
            &Work::new(id, chain.template(NOW_S), &config.coinbase).expect("work"),
            NOW_MS,
        );
        pump(&mut pool, &mut miner);
    }
    let refused = miner.counts().rejected.keys().cloned().collect();
    (chain.height() - start, refused)
}

#[test]
fn blocks_a_minute_ahead_within_one_second_leave_the_next_job_minable() {
    // The node's chain: five blocks in a row, each found and followed within the same second.
    let (mined, refused) =
        same_second_blocks(EmbeddedChain::with_history(ChainConfig::default()), 5);
    assert_eq!((mined, refused), (5, vec![]));
    // The same on a chain from genesis alone (the node before it had a history): block 1's
    // time, a minute ahead, becomes the median, and the next job's nTime is one second below
    // the minimum.
    let (mined, refused) = same_second_blocks(EmbeddedChain::new(ChainConfig::default()), 5);
    assert_eq!((mined, refused), (1, vec!["ntime-too-old".to_owned()]));
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// This build's hashrate on one thread, measured as SRI's device measures its own before it
/// opens the channel, so the pool's first target (and vardiff's aim, the default 18 shares a
/// minute, every share a block on regtest) gives a few blocks a minute.
fn measured_hash_rate() -> f32 {
    let work = MiningWork {
        generation: 1,
        job_seq: 1,
        channel_id: 1,
        job_id: 1,
        version: 0x2000_0000,
        version_rolling_allowed: false,
        prev_hash: [7; 32],
        nbits: 0x207f_ffff,
        ntime: unix_now(),
        // Nothing meets it: every nonce is hashed, none is a share.
        target: [0; 32],
        job: JobKind::Standard {
            merkle_root: [9; 32],
        },
    };
    let started = Instant::now();
    let hashes = Hasher::new(0, 1).mine(
        &work,
        |_| started.elapsed() < Duration::from_millis(500),
        |_| true,
    );
    (hashes as f64 / started.elapsed().as_secs_f64()) as f32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_clock_plus_60_ntime_keeps_mining_after_its_first_block() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The pool as it runs by default, on its embedded chain.
    let options = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&options, "test").expect("valid config");
    let node = Arc::new(EmbeddedNode::new(ChainConfig::default()));
    let api: Arc<dyn NodeApi> = node.clone();
    let server = StratumV2Server::new(config, api).expect("server");
    let addr = server.start().await.expect("start");

    let opts = MinerOptions {
        url: addr.to_string(),
        authority_pubkey: server.authority_public_key().to_owned(),
        threads: 1,
        channel: ChannelKind::Standard,
        user: "device".into(),
        nominal_hash_rate: measured_hash_rate(),
        max_shares: None,
        duration: Some(RUN),
        ntime: DEVICE_NTIME,
        sv1: false,
    };
    let started_at = unix_now();
    let miner = tokio::spawn(run_miner(opts, std::future::pending::<()>()));
    // Halfway through, the chain has grown; it must grow in the second half too.
    tokio::time::sleep(RUN / 2).await;
    let mined_first_half = node.height() - HISTORY_HEIGHT;
    let report = tokio::time::timeout(RUN, miner)
        .await
        .expect("miner finished in time")
        .expect("miner task")
        .expect("miner ran");
    let mined = node.height() - HISTORY_HEIGHT;
    eprintln!("{mined} blocks ({mined_first_half} in the first half); {report:?}");

    assert_eq!(report.stop, StopReason::Duration, "{report:?}");
    assert_eq!(
        report.shares_rejected.get("ntime-too-old"),
        None,
        "{report:?}"
    );
    assert!(mined_first_half >= 1, "no block in 30 s: {report:?}");
    assert!(
        mined > mined_first_half,
        "no block after {mined_first_half} in the second half: {report:?}"
    );
    assert!(mined >= 3, "{mined} blocks in 60 s: {report:?}");
    // Every block was a share the pool accepted, and shares went on being accepted.
    assert!(report.shares_accepted >= u64::from(mined), "{report:?}");

    // The blocks carry the device's nTime: its clock a minute ahead, not the pool's time.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let saved: Vec<bitcoin::Block> = std::fs::read_dir(dir.path().join("blocks/submitted"))
        .expect("blocks saved")
        .map(|entry| {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            bitcoin::consensus::encode::deserialize_hex(text.trim()).expect("a block")
        })
        .collect();
    assert_eq!(saved.len() as u32, mined);
    for block in &saved {
        let ahead = i64::from(block.header.time) - i64::from(started_at);
        assert!(
            ahead >= i64::from(NTIME_OFFSET_SECS),
            "block time {} not the device's clock + 60 (start {started_at})",
            block.header.time
        );
    }
    server.stop().await.expect("clean stop");
}
