//! The cost of one `/metrics` scrape (issue 16: under 50 ms of server CPU with 10,000
//! connections and 1,000 workers): a pool whose statistics hold 10,000 set-up connections,
//! each with an extended channel and accepted and refused shares, spread over 1,000 (user,
//! worker) pairs of 250 users; one scrape is what `GET /metrics` runs on its blocking
//! thread: the copy out of the pool under its read lock, the label folding, the text
//! encoding. Criterion reports wall time per scrape (on one thread, so CPU time too); the
//! thread's CPU time per scrape is also printed from CLOCK_THREAD_CPUTIME_ID.
//! BENCHMARKS.md, "Metrics scrape (issue 16)", keeps the figure.

use std::sync::Arc;
use std::time::Duration;

use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::http::Scrape;
use blvm_stratum_v2::mining::pool::AcceptedShares;
use blvm_stratum_v2::mining::{SessionEvent, ShareRejection};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
use blvm_stratum_v2::server::StratumV2Server;
use criterion::Criterion;

const CONNECTIONS: u64 = 10_000;
const WORKERS: u64 = 1_000;

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn loaded_server(dir: &std::path::Path) -> StratumV2Server {
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        ledger: Some(false),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&opts, "bench").expect("config");
    let server = StratumV2Server::new(config, Arc::new(EmbeddedNode::new(ChainConfig::default())))
        .expect("server");
    let now = blvm_stratum_v2::shell::unix_ms();
    let pool = server.get_pool();
    let mut pool = pool.write().unwrap();
    let identities: Vec<Arc<str>> = (0..WORKERS)
        .map(|i| format!("user{}.rig{}", i / 4, i % 4).into())
        .collect();
    for id in 1..=CONNECTIONS {
        pool.connect_miner(
            id,
            format!("10.0.{}.{}:4000", id / 256, id % 256),
            now - 60_000,
        );
        let identity = &identities[(id % WORKERS) as usize];
        pool.record(
            id,
            &SessionEvent::ChannelOpened {
                channel_id: 1,
                user_identity: identity.to_string(),
                extended: true,
                nominal_hash_rate: 0.0,
                target: bitcoin::Target::MAX,
            },
            now - 60_000,
        );
        let mut shares = AcceptedShares::default();
        for s in 0..20 {
            shares.add_share(1, identity, None, 1024.0, now - 60_000 + s * 3_000);
        }
        shares.add_rejected_share(1, Some(identity), None, ShareRejection::StaleShare, now);
        pool.fold_accepted(id, &mut shares);
    }
    drop(pool);
    server
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let server = loaded_server(dir.path());
    let observer = server.observer();
    let now = blvm_stratum_v2::shell::unix_ms();
    let text = Scrape::take(&observer, 1_000, now).encode().unwrap();
    let rounds = 50;
    let cpu = thread_cpu();
    for _ in 0..rounds {
        std::hint::black_box(Scrape::take(&observer, 1_000, now).encode().unwrap());
    }
    let per_scrape = (thread_cpu() - cpu) / rounds;
    println!(
        "one scrape of {CONNECTIONS} connections and {WORKERS} workers: {per_scrape:?} of CPU (thread), {} bytes, {} lines",
        text.len(),
        text.lines().count()
    );
    c.bench_function("metrics_scrape_10k_connections_1k_workers", |b| {
        b.iter(|| Scrape::take(&observer, 1_000, now).encode().unwrap())
    });
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    bench(&mut c);
    c.final_summary();
}
