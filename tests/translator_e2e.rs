//! SV1 miners behind SRI's own translator proxy (`translator_sv2` from crates.io, the version
//! pinned in tests/common/translator.rs, run as a child process) mining on our pool: the setup
//! an SV1 farm uses to reach an SV2 pool, with none of the SV2 side written by us.
//!
//! - With one aggregated channel and extension 0x0002 required, the translator negotiates it
//!   with RequestExtensions and tags each SubmitSharesExtended with its SV1 worker's name as a
//!   user_identity TLV (issue 16 item 2): the pool credits every share to that worker (its
//!   worker table and the ledger), none to the channel's own name.
//! - With 0x0002 only in its `supported_extensions` (as SRI's example configs have it), 0.6.0
//!   asks for nothing: every share goes to the channel's own name (`USER.translator-proxy`).
//! - With a channel per SV1 miner and no extension, a share that is a block is a block on the
//!   embedded chain, credited in the ledger.

#[path = "common/pool.rs"]
mod pool;
#[path = "common/sv1_client.rs"]
mod sv1_client;
#[path = "common/translator.rs"]
mod translator;

use std::time::Duration;

use blvm_stratum_v2::ledger::{Ledger, SqliteLedger};
use blvm_stratum_v2::node::regtest::HISTORY_HEIGHT;
use pool::{RARE_BLOCKS, REGTEST, TestPool};
use translator::{Translator, TranslatorConfig, WORKER_HASHRATE_TRACKING};

/// The pool's share difficulty, fixed (about 43 hashes a share): no vardiff on either side.
const POOL_DIFFICULTY: f64 = 1e-8;
/// The hashrate the translator announces per SV1 miner; at its 60 shares a minute that is a
/// difficulty of 100 / 2^32 ≈ 2.3e-8 for the SV1 miners, above the pool's: every share the
/// translator takes from a miner meets the channel's target, and goes on to the pool.
const MINER_HASHRATE: f64 = 100.0;
/// The user the translator opens its channels as.
const USER: &str = "proxy";

/// Blocks the SV1 miner finds through the translator, one share each.
const BLOCKS: u64 = 3;

/// Shares each SV1 worker has accepted through the translator.
const WORKERS: [(&str, u64); 2] = [("rig-a", 5), ("rig-b", 3)];
const TOTAL: u64 = WORKERS[0].1 + WORKERS[1].1;

fn pool_options(o: &mut blvm_stratum_v2::config::PoolOptions, data_dir: std::path::PathBuf) {
    o.data_dir = Some(data_dir);
    o.min_difficulty = Some(POOL_DIFFICULTY);
    o.max_difficulty = Some(POOL_DIFFICULTY);
}

/// The pool (rare blocks, fixed difficulty) and the translator in front of it, aggregating every
/// SV1 miner into one channel with these extensions in its config; two SV1 miners (SRI's
/// sv1_api) named `account.worker` as SV1 farms name them mine [`WORKERS`]' shares through it.
/// Returns once the pool has all of them.
async fn two_sv1_workers_on_one_channel(
    data_dir: std::path::PathBuf,
    supported_extensions: &[u16],
    required_extensions: &[u16],
) -> (TestPool, Translator) {
    let pool = TestPool::start_with(RARE_BLOCKS, 10, |o| pool_options(o, data_dir)).await;
    let mut tproxy = Translator::start(&TranslatorConfig {
        upstream: pool.addr,
        authority_pubkey: &pool.key,
        user_identity: USER,
        aggregate_channels: true,
        supported_extensions,
        required_extensions,
        enable_vardiff: false,
        min_individual_miner_hashrate: MINER_HASHRATE,
    });
    let mut a = sv1_client::connect(tproxy.sv1_addr, &format!("farm.{}", WORKERS[0].0)).await;
    let mut b = sv1_client::connect(tproxy.sv1_addr, &format!("farm.{}", WORKERS[1].0)).await;
    assert_ne!(
        a.miner.extranonce1, b.miner.extranonce1,
        "one channel, an extranonce range each"
    );
    tokio::join!(a.mine(WORKERS[0].1), b.mine(WORKERS[1].1));
    for (conn, (worker, shares)) in [(&a, WORKERS[0]), (&b, WORKERS[1])] {
        assert_eq!(conn.miner.accepted, shares, "{worker}");
        assert!(
            conn.miner.refused.is_empty(),
            "{worker}: {:?}",
            conn.miner.refused
        );
    }
    assert!(tproxy.is_running());

    // The translator answers its miners itself; the pool's count follows.
    pool.wait_stats(Duration::from_secs(20), "every share at the pool", |s| {
        s.accepted_shares >= TOTAL
    })
    .await;
    let stats = pool.stats().await;
    assert_eq!(stats.accepted_shares, TOTAL, "{stats:?}");
    // Its log (shown with --nocapture): the negotiation, the channel it opened.
    println!("{}", tproxy.log());
    (pool, tproxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sv1_workers_behind_sris_translator_are_credited_apart_with_extension_0x0002() {
    // Installing the translator (first run only) is bounded by its own timeout, before this one.
    translator::translator_binary();
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let (pool, tproxy) = two_sv1_workers_on_one_channel(
            dir.path().to_path_buf(),
            &[WORKER_HASHRATE_TRACKING],
            &[WORKER_HASHRATE_TRACKING],
        )
        .await;
        {
            let handle = pool.server.get_pool();
            let pool_state = handle.read().unwrap();
            let workers = pool_state.statistics().workers();
            for (worker, shares) in WORKERS {
                let w = workers
                    .get(USER, worker)
                    .unwrap_or_else(|| panic!("{worker} in the worker table"));
                assert_eq!(w.accepted_shares, shares, "{worker}");
                assert!(w.credited_difficulty > 0.0, "{worker}");
            }
            assert!(
                workers.get(USER, "translator-proxy").is_none(),
                "no share credited to the aggregated channel's own name"
            );
        }
        drop(tproxy);
        pool.stop().await;

        // The ledger: a row per share, under its SV1 worker, at the pool's difficulty.
        let rows = pool::ledger_shares(dir.path());
        for (worker, shares) in WORKERS {
            let stored = rows
                .iter()
                .filter(|s| &*s.record.user == USER && &*s.record.worker == worker)
                .count() as u64;
            assert_eq!(stored, shares, "{worker}'s rows");
        }
        assert_eq!(rows.len() as u64, TOTAL, "nothing else");
        assert!(
            rows.iter()
                .all(|s| (s.record.difficulty - POOL_DIFFICULTY).abs() < POOL_DIFFICULTY * 1e-9)
        );
    })
    .await
    .expect("test timed out");
}

/// What SRI's example configs do: 0x0002 in `supported_extensions` only. Translator 0.6.0 then
/// sends no RequestExtensions (it asks only for `required_extensions`), so its shares carry no
/// TLV and the pool credits them all to the aggregated channel's own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_0x0002_only_supported_sris_translator_does_not_negotiate_it() {
    translator::translator_binary();
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let (pool, tproxy) = two_sv1_workers_on_one_channel(
            dir.path().to_path_buf(),
            &[WORKER_HASHRATE_TRACKING],
            &[],
        )
        .await;
        {
            let handle = pool.server.get_pool();
            let pool_state = handle.read().unwrap();
            let workers = pool_state.statistics().workers();
            let channel = workers
                .get(USER, "translator-proxy")
                .expect("the aggregated channel's worker in the worker table");
            assert_eq!(channel.accepted_shares, TOTAL);
            for (worker, _) in WORKERS {
                assert!(workers.get(USER, worker).is_none(), "{worker}");
            }
        }
        drop(tproxy);
        pool.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_found_behind_sris_translator_is_accepted_by_the_chain() {
    translator::translator_binary();
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        // Regtest's nBits: about every other hash is a block, so every share is one.
        let pool = TestPool::start_with(REGTEST, 10, |o| pool_options(o, data_dir)).await;
        let mut tproxy = Translator::start(&TranslatorConfig {
            upstream: pool.addr,
            authority_pubkey: &pool.key,
            user_identity: USER,
            aggregate_channels: false,
            supported_extensions: &[],
            required_extensions: &[],
            enable_vardiff: false,
            min_individual_miner_hashrate: MINER_HASHRATE,
        });

        let mut miner = sv1_client::connect(tproxy.sv1_addr, "farm.rig-c").await;
        for _ in 0..BLOCKS {
            let tips = miner.miner.clean_notifies;
            miner.one_share().await;
            // The share is a block: the new tip's job reaches the miner through the translator
            // before its next share (else that one would be stale).
            miner
                .line
                .until(&mut miner.miner, "the new tip's job", |m| {
                    m.clean_notifies > tips
                })
                .await;
        }
        assert_eq!(miner.miner.accepted, BLOCKS);
        assert!(miner.miner.refused.is_empty(), "{:?}", miner.miner.refused);
        assert!(tproxy.is_running());

        pool.wait_stats(Duration::from_secs(20), "blocks at the pool", |s| {
            s.blocks_accepted >= BLOCKS
        })
        .await;
        let mined = pool.node.height() - HISTORY_HEIGHT;
        let stats = pool.stats().await;
        assert_eq!(u64::from(mined), BLOCKS, "blocks on the chain");
        assert_eq!(stats.blocks_accepted, BLOCKS, "{stats:?}");
        assert_eq!(stats.blocks_rejected, 0, "{stats:?}");
        println!("{}", tproxy.log());
        drop(tproxy);
        pool.stop().await;

        // Each block is in the ledger, found by a share of the translator's channel.
        let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).expect("ledger");
        let blocks = ledger.blocks(100).unwrap();
        assert_eq!(blocks.len() as u64, BLOCKS);
        for b in &blocks {
            assert_eq!(b.block.user, USER);
            assert!(
                b.block.worker.starts_with("miner"),
                "a channel per SV1 miner, named userN by the translator: {b:?}"
            );
            ledger
                .share_by_hash(b.block.hash)
                .unwrap()
                .expect("its share");
        }
    })
    .await
    .expect("test timed out");
}
