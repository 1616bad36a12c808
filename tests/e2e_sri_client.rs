//! End to end over real TCP: the pool server against an independent client built only from the
//! SRI crates (see `common/sri_client.rs`). The client takes the authority key in SRI's text
//! form, runs SRI's Noise handshake, frames with SRI's codec, and mines by brute force with the
//! spec's merkle root and header formula computed here with bitcoin's hashes.

#[path = "common/pool.rs"]
mod pool;
#[path = "common/sri_client.rs"]
mod sri_client;

use std::time::Duration;

use blvm_stratum_v2::node::regtest::HISTORY_HEIGHT;
use parsers_sv2::{AnyMessageOwned, CommonMessagesOwned, MiningOwned};
use pool::{RARE_BLOCKS, REGTEST, TestPool};
use sri_client::{
    IO_TIMEOUT, Miner, REQUIRES_STANDARD_JOBS, REQUIRES_WORK_SELECTION, expect_closed,
    network_target, share_target,
};

/// Bound of every test: it stops by itself.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out");
}

fn error_code(r: Result<u32, String>) -> String {
    r.expect_err("share should have been refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_client_mines_on_extended_and_standard_channels() {
    bounded(async {
        let pool = TestPool::start(RARE_BLOCKS, 10).await;

        // Extended channel on a connection that takes extended jobs.
        let mut ext = Miner::ready(pool.addr, &pool.key, 0).await.expect("setup");
        let e = ext.open(true, "sri.ext").await.expect("extended channel");
        assert!(ext.channel(e).extended && ext.channel(e).extranonce_size >= 4);
        assert!(
            !ext.channel(e)
                .jobs
                .values()
                .next()
                .unwrap()
                .merkle_path
                .is_empty(),
            "three transactions give the coinbase a merkle path"
        );

        let good = ext.valid_share(e);
        assert_eq!(
            ext.submit(&good).await.unwrap(),
            Ok(1),
            "valid extended share"
        );
        assert_eq!(
            error_code(ext.submit(&good).await.unwrap()),
            "duplicate-share"
        );

        let target = share_target(&ext.channel(e).target);
        let miss = ext.find_share(e, |h| !target.is_met_by(h));
        assert_eq!(
            error_code(ext.submit(&miss).await.unwrap()),
            "difficulty-too-low"
        );

        let mut wrong_job = ext.valid_share(e);
        wrong_job.job_id = wrong_job.job_id.wrapping_add(1000);
        assert_eq!(
            error_code(ext.submit(&wrong_job).await.unwrap()),
            "invalid-job-id"
        );

        let mut wrong_size = ext.valid_share(e);
        wrong_size.extranonce.push(0);
        assert_eq!(
            error_code(ext.submit(&wrong_size).await.unwrap()),
            "bad-extranonce-size"
        );

        // Standard channel on a connection that requires standard jobs.
        let mut sta = Miner::ready(pool.addr, &pool.key, REQUIRES_STANDARD_JOBS)
            .await
            .expect("setup");
        let s = sta.open(false, "sri.std").await.expect("standard channel");
        let root = sta.channel(s).jobs.values().next().unwrap().merkle_root;
        assert!(root.is_some(), "standard jobs carry the merkle root");
        let good = sta.valid_share(s);
        assert_eq!(
            sta.submit(&good).await.unwrap(),
            Ok(1),
            "valid standard share"
        );
        let target = share_target(&sta.channel(s).target);
        let miss = sta.find_share(s, |h| !target.is_met_by(h));
        assert_eq!(
            error_code(sta.submit(&miss).await.unwrap()),
            "difficulty-too-low"
        );

        let stats = pool.stats().await;
        assert_eq!(
            (
                stats.miner_count,
                stats.channel_count,
                stats.total_shares,
                stats.accepted_shares,
                stats.rejected_shares,
                stats.blocks_found,
            ),
            (2, 2, 7, 2, 5, 0),
            "{stats:?}"
        );
        assert!(stats.estimated_hashrate > 0.0);
        assert_eq!(pool.node.height(), HISTORY_HEIGHT, "no share was a block");
        pool.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_selection_is_refused_with_the_flag_echoed() {
    bounded(async {
        let pool = TestPool::start(RARE_BLOCKS, 10).await;
        let mut m = Miner::connect(pool.addr, &pool.key)
            .await
            .expect("handshake");
        match m
            .setup(REQUIRES_WORK_SELECTION | REQUIRES_STANDARD_JOBS)
            .await
            .unwrap()
        {
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(e)) => {
                assert_eq!(
                    e.flags, REQUIRES_WORK_SELECTION,
                    "only the unsupported flag"
                );
                assert_eq!(e.error_code.as_bytes(), b"unsupported-feature-flags");
            }
            other => panic!("expected SetupConnection.Error, got {other:?}"),
        }
        expect_closed(m.conn.stream(), IO_TIMEOUT, "after SetupConnection.Error").await;
        pool.wait_stats(IO_TIMEOUT, "refused miner gone", |s| s.miner_count == 0)
            .await;
        pool.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_that_are_blocks_extend_the_chain() {
    bounded(async {
        let pool = TestPool::start(REGTEST, 10).await;
        let mut ext = Miner::ready(pool.addr, &pool.key, 0).await.expect("setup");
        let e = ext.open(true, "sri.ext").await.expect("extended channel");
        let mut sta = Miner::ready(pool.addr, &pool.key, REQUIRES_STANDARD_JOBS)
            .await
            .expect("setup");
        let s = sta.open(false, "sri.std").await.expect("standard channel");

        const BLOCKS: u32 = 6;
        let before_first_block = ext.channels.clone();
        for i in 0..BLOCKS {
            // Extended and standard channels take turns finding the block.
            let (finder, channel) = if i % 2 == 0 {
                (&mut ext, e)
            } else {
                (&mut sta, s)
            };
            let ch = finder.channel(channel).clone();
            let net = network_target(ch.prev.unwrap().nbits);
            let share = share_target(&ch.target);
            let block = finder.find_share(channel, |h| share.is_met_by(h) && net.is_met_by(h));
            assert_eq!(finder.submit(&block).await.unwrap(), Ok(1), "block {i}");
            // Both miners are moved to the new tip: the block's hash is the new prev hash.
            for (m, c) in [(&mut ext, e), (&mut sta, s)] {
                // With the share ledger the block's acknowledgement waits for its commit, so the
                // new prev hash may come first (taken while waiting for the acknowledgement).
                if m.channel(c).prev.is_some_and(|p| p.prev_hash == block.hash) {
                    continue;
                }
                let prev = m
                    .wait_for(|msg| match msg {
                        AnyMessageOwned::Mining(MiningOwned::SetNewPrevHash(p))
                            if p.channel_id == c =>
                        {
                            Some(p.prev_hash.to_array())
                        }
                        _ => None,
                    })
                    .await
                    .expect("SetNewPrevHash after the block");
                assert_eq!(prev, block.hash, "block {i}: new tip is the block found");
            }
            assert_eq!(pool.node.height(), HISTORY_HEIGHT + i + 1);
        }
        // A share on the job of the first tip, now six blocks old.
        let current = std::mem::replace(&mut ext.channels, before_first_block);
        let stale = ext.valid_share(e);
        ext.channels = current;
        assert_eq!(error_code(ext.submit(&stale).await.unwrap()), "stale-share");
        pool.wait_stats(IO_TIMEOUT, "blocks accepted", |st| {
            st.blocks_found == u64::from(BLOCKS) && st.blocks_accepted == u64::from(BLOCKS)
        })
        .await;
        let st = pool.stats().await;
        assert_eq!((st.accepted_shares, st.rejected_shares), (6, 1), "{st:?}");
        pool.stop().await;
    })
    .await;
}
