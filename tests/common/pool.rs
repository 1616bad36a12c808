//! A pool server on 127.0.0.1 with an ephemeral port, an embedded regtest node and a fresh data
//! dir, for the e2e tests (`#[path = "common/pool.rs"] mod pool;`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::ledger::{Ledger, ShareRange, SqliteLedger, StoredShare};
use blvm_stratum_v2::mining::PoolStats;
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
use blvm_stratum_v2::server::StratumV2Server;

/// Blocks are rare at this nBits (difficulty 1): shares never are blocks.
pub const RARE_BLOCKS: u32 = 0x1d00_ffff;
/// Regtest's nBits: about every other hash is a block.
pub const REGTEST: u32 = 0x207f_ffff;

pub struct TestPool {
    pub server: StratumV2Server,
    pub node: Arc<EmbeddedNode>,
    pub addr: SocketAddr,
    /// The Stratum V1 listener's address (`sv1_listen_addr`), if it listens.
    pub sv1_addr: Option<SocketAddr>,
    pub key: String,
    /// The HTTP server's settings the options resolved to (`http_*`, `metrics_*`), for a test
    /// that starts it; `None` when turned off.
    pub http: Option<blvm_stratum_v2::http::HttpSettings>,
    _dir: tempfile::TempDir,
}

impl TestPool {
    /// Starts a pool whose shares are cheap (difficulty between 1e-9 and 1e-8: tens of hashes) on a chain with
    /// `bits`, three synthetic transactions per template (a real merkle path); the handshake
    /// and SetupConnection must each come within `handshake_timeout_secs`.
    pub async fn start(bits: u32, handshake_timeout_secs: u64) -> TestPool {
        Self::start_with(bits, handshake_timeout_secs, |_| {}).await
    }

    /// Like [`Self::start`], with options of the test's own changed by `tweak`.
    pub async fn start_with(
        bits: u32,
        handshake_timeout_secs: u64,
        tweak: impl FnOnce(&mut PoolOptions),
    ) -> TestPool {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut opts = PoolOptions {
            listen_addr: Some("127.0.0.1:0".into()),
            data_dir: Some(dir.path().to_path_buf()),
            min_difficulty: Some(1e-9),
            max_difficulty: Some(1e-8),
            chain_bits: Some(bits),
            chain_synthetic_transactions: Some(3),
            handshake_timeout_secs: Some(handshake_timeout_secs),
            setup_timeout_secs: Some(handshake_timeout_secs),
            // The difficulty is capped at 1e-8, so vardiff cannot slow a fast miner down: the
            // honest miner's few hundred shares a second stay within the rate limit (3,000/s).
            share_rate_multiple: Some(10_000.0),
            ..PoolOptions::default()
        };
        tweak(&mut opts);
        let config = PoolConfig::resolve(&opts, "test").expect("valid test config");
        let http = config.http.clone();
        let node = Arc::new(EmbeddedNode::new(ChainConfig {
            bits,
            synthetic_transactions: 3,
            block_interval_secs: 0,
        }));
        let server = StratumV2Server::new(config, node.clone()).expect("server");
        let addr = server.start().await.expect("server starts");
        let key = server.authority_public_key().to_owned();
        let sv1_addr = server.sv1_local_addr().await;
        TestPool {
            server,
            node,
            addr,
            sv1_addr,
            key,
            http,
            _dir: dir,
        }
    }

    /// Pool statistics (the product API).
    pub async fn stats(&self) -> PoolStats {
        self.server.get_pool_stats().await
    }

    /// Waits until `cond` holds for the pool's stats, within `within`.
    pub async fn wait_stats(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&PoolStats) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let s = self.stats().await;
            if cond(&s) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not reached in {within:?}; stats {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(15), self.server.stop())
            .await
            .expect("server stops in time")
            .expect("server stops");
    }
}

/// Every share in the SQLite ledger a pool kept in `data_dir` (the default
/// `DATA_DIR/ledger.sqlite3`), by id: what the tests compare with what miners saw acknowledged.
pub fn ledger_shares(data_dir: &Path) -> Vec<StoredShare> {
    SqliteLedger::open(data_dir.join("ledger.sqlite3"))
        .expect("ledger")
        .shares(&ShareRange::Ids {
            from_id: 0,
            to_id: u64::MAX >> 1,
            limit: usize::MAX >> 1,
        })
        .expect("shares")
}
