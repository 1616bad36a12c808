//! Our CPU miner for a few seconds against a pool, for the tests that need real shares and
//! blocks but not a particular miner (`#[path = "common/cpu_miner.rs"] mod cpu_miner;`).
#![allow(dead_code)]

use std::time::Duration;

use blvm_stratum_v2::client::{ChannelKind, MinerOptions, MinerReport, run_miner};

/// One hashing thread on one extended channel as `user` against the pool at `url` (its
/// authority key `authority_pubkey`) for `secs` seconds; its report. Bounded: 60 s at most.
pub async fn mine_for(url: String, authority_pubkey: String, user: &str, secs: u64) -> MinerReport {
    let opts = MinerOptions {
        url,
        authority_pubkey,
        threads: 1,
        channel: ChannelKind::Extended,
        user: user.into(),
        duration: Some(Duration::from_secs(secs)),
        ..MinerOptions::default()
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        run_miner(opts, std::future::pending::<()>()),
    )
    .await
    .expect("miner finished in time")
    .expect("miner ran")
}
