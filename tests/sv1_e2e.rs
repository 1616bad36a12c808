//! A Stratum V1 miner we did not write against the real server over TCP on 127.0.0.1: a client
//! built on SRI's `sv1_api` crate (its `IsClient` state machine builds and parses every
//! message) configures version rolling, subscribes, authorizes, and mines real shares with
//! rolled version bits on the embedded regtest chain, finding blocks. Beside it our SV2 CPU
//! miner mines for the same user. Checked: the blocks are on the embedded chain, every share
//! is in the SQLite ledger under the right user and worker at the difficulty it was credited
//! at, and the SV1 and SV2 workers add up under one user.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{BlockHash, Target, Txid};
use blvm_stratum_v2::block::target::target_of_difficulty;
use blvm_stratum_v2::client::{ChannelKind, MinerOptions, run_miner};
use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::ledger::{Ledger, ShareRange, SqliteLedger};
use blvm_stratum_v2::mining::merkle::fold_merkle_path;
use blvm_stratum_v2::node::NodeApi;
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode, HISTORY_HEIGHT};
use blvm_stratum_v2::server::StratumV2Server;
use sv1_api::error::Error as Sv1ApiError;
use sv1_api::json_rpc;
use sv1_api::methods::server_to_client;
use sv1_api::utils::{Extranonce, HexU32Be};
use sv1_api::{ClientStatus, IsClient};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
const MASK: u32 = 0x1fff_e000;
const DIFFICULTY: f64 = 1e-6;

/// The miner's state, kept the way `sv1_api`'s `IsClient` asks for it.
#[derive(Default)]
struct Sv1Miner {
    extranonce1: Option<Extranonce>,
    extranonce2_size: usize,
    version_rolling_mask: Option<HexU32Be>,
    version_rolling_min_bit: Option<HexU32Be>,
    status: Option<ClientStatus>,
    last_notify: Option<server_to_client::Notify>,
    difficulty: f64,
    authorize_requests: Vec<(u64, String)>,
    authorized: Vec<String>,
    submits: Vec<u64>,
    accepted: u64,
    refused: Vec<(i32, String)>,
    notifies: u64,
    clean_notifies: u64,
}

impl IsClient for Sv1Miner {
    type Error = Sv1ApiError;

    fn handle_error_message(
        &mut self,
        _: Option<usize>,
        message: json_rpc::Message,
    ) -> Result<Option<json_rpc::Message>, Sv1ApiError> {
        if let json_rpc::Message::ErrorResponse(r) = &message {
            self.submits.retain(|id| *id != r.id);
            if let Some(e) = &r.error {
                self.refused.push((e.code, e.message.clone()));
            }
        }
        Ok(None)
    }

    fn id_is_authorize(
        &mut self,
        _: Option<usize>,
        id: &u64,
    ) -> Result<Option<String>, Sv1ApiError> {
        Ok(self
            .authorize_requests
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, n)| n.clone()))
    }

    /// Counts an accepted submit. Answers `false` all the same: sv1_api 6 routes a general
    /// response that is neither an authorize's nor an extranonce subscription's to a submit's
    /// (and refuses one said to be a submit's).
    fn id_is_submit(&mut self, _: Option<usize>, id: &u64) -> Result<bool, Sv1ApiError> {
        if self.submits.contains(id) {
            self.submits.retain(|i| i != id);
            self.accepted += 1;
        }
        Ok(false)
    }

    fn handle_notify(
        &mut self,
        _: Option<usize>,
        n: server_to_client::Notify,
    ) -> Result<(), Sv1ApiError> {
        self.notifies += 1;
        self.clean_notifies += u64::from(n.clean_jobs);
        self.last_notify = Some(n);
        Ok(())
    }

    fn handle_configure(
        &mut self,
        _: Option<usize>,
        _: &mut server_to_client::Configure,
    ) -> Result<(), Sv1ApiError> {
        Ok(())
    }

    fn handle_set_difficulty(
        &mut self,
        _: Option<usize>,
        m: &mut server_to_client::SetDifficulty,
    ) -> Result<(), Sv1ApiError> {
        self.difficulty = m.value;
        Ok(())
    }

    fn handle_set_extranonce(
        &mut self,
        _: Option<usize>,
        _: &mut server_to_client::SetExtranonce,
    ) -> Result<(), Sv1ApiError> {
        panic!("the pool never changes the extranonce here")
    }

    fn handle_set_version_mask(
        &mut self,
        _: Option<usize>,
        _: &mut server_to_client::SetVersionMask,
    ) -> Result<(), Sv1ApiError> {
        panic!("the pool's mask never changes")
    }

    fn handle_subscribe(
        &mut self,
        _: Option<usize>,
        _: &server_to_client::Subscribe,
    ) -> Result<(), Sv1ApiError> {
        Ok(())
    }

    fn set_extranonce1(&mut self, _: Option<usize>, e: Extranonce) -> Result<(), Sv1ApiError> {
        self.extranonce1 = Some(e);
        Ok(())
    }

    fn extranonce1(&self, _: Option<usize>) -> Result<Extranonce, Sv1ApiError> {
        Ok(self.extranonce1.clone().expect("subscribed"))
    }

    fn set_extranonce2_size(&mut self, _: Option<usize>, size: usize) -> Result<(), Sv1ApiError> {
        self.extranonce2_size = size;
        Ok(())
    }

    fn extranonce2_size(&self, _: Option<usize>) -> Result<usize, Sv1ApiError> {
        Ok(self.extranonce2_size)
    }

    fn version_rolling_mask(&self, _: Option<usize>) -> Result<Option<HexU32Be>, Sv1ApiError> {
        Ok(self.version_rolling_mask.clone())
    }

    fn set_version_rolling_mask(
        &mut self,
        _: Option<usize>,
        mask: Option<HexU32Be>,
    ) -> Result<(), Sv1ApiError> {
        self.version_rolling_mask = mask;
        Ok(())
    }

    fn set_version_rolling_min_bit(
        &mut self,
        _: Option<usize>,
        min: Option<HexU32Be>,
    ) -> Result<(), Sv1ApiError> {
        self.version_rolling_min_bit = min;
        Ok(())
    }

    fn version_rolling_min_bit(
        &mut self,
        _: Option<usize>,
    ) -> Result<Option<HexU32Be>, Sv1ApiError> {
        Ok(self.version_rolling_min_bit.clone())
    }

    fn set_status(&mut self, _: Option<usize>, status: ClientStatus) -> Result<(), Sv1ApiError> {
        self.status = Some(status);
        Ok(())
    }

    fn signature(&self, _: Option<usize>) -> Result<String, Sv1ApiError> {
        Ok("sv1_api-test-miner/6.0".into())
    }

    fn status(&self, _: Option<usize>) -> Result<ClientStatus, Sv1ApiError> {
        Ok(self.status.unwrap_or(ClientStatus::Init))
    }

    fn last_notify(
        &self,
        _: Option<usize>,
    ) -> Result<Option<server_to_client::Notify>, Sv1ApiError> {
        Ok(self.last_notify.clone())
    }

    fn is_authorized(&self, _: Option<usize>, name: &String) -> Result<bool, Sv1ApiError> {
        Ok(self.authorized.contains(name))
    }

    fn authorize_user_name(&mut self, _: Option<usize>, name: String) -> Result<(), Sv1ApiError> {
        self.authorized.push(name);
        Ok(())
    }
}

/// The header hash of `notify` with our extranonces, rolled version and nonce (rust-bitcoin's
/// hashing, from the fields as `sv1_api` parsed them).
fn header_hash(
    n: &server_to_client::Notify,
    en1: &[u8],
    en2: &[u8],
    version: u32,
    nonce: u32,
) -> BlockHash {
    let mut cb: Vec<u8> = n.coin_base1.as_ref().clone();
    cb.extend_from_slice(en1);
    cb.extend_from_slice(en2);
    cb.extend_from_slice(n.coin_base2.as_ref());
    let txid = Txid::from_raw_hash(sha256d::Hash::hash(&cb));
    let path: Vec<[u8; 32]> = n
        .merkle_branch
        .iter()
        .map(|m| m.as_ref().try_into().unwrap())
        .collect();
    let root = fold_merkle_path(txid, &path);
    let mut h = Vec::with_capacity(80);
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(n.prev_hash.as_ref());
    h.extend_from_slice(root.as_byte_array());
    h.extend_from_slice(&n.time.0.to_le_bytes());
    h.extend_from_slice(&n.bits.0.to_le_bytes());
    h.extend_from_slice(&nonce.to_le_bytes());
    BlockHash::from_byte_array(sha256d::Hash::hash(&h).to_byte_array())
}

struct Line {
    reader: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    /// Every line both ways (`>` to the pool, `<` from it).
    transcript: Vec<String>,
}

impl Line {
    async fn send(&mut self, m: json_rpc::Message) {
        let mut text = serde_json::to_string(&m).unwrap();
        self.transcript.push(format!("> {text}"));
        text.push('\n');
        self.writer.write_all(text.as_bytes()).await.unwrap();
    }

    /// Handles lines until `done` holds.
    async fn until(&mut self, miner: &mut Sv1Miner, what: &str, done: impl Fn(&Sv1Miner) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(miner) {
            let line = tokio::time::timeout_at(deadline, self.reader.next_line())
                .await
                .unwrap_or_else(|_| panic!("{what}: timed out"))
                .unwrap()
                .unwrap_or_else(|| panic!("{what}: closed by the pool"));
            self.transcript.push(format!("< {line}"));
            let message: json_rpc::Message =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            if let Some(reply) = miner.handle_message(None, message).unwrap() {
                self.send(reply).await;
            }
        }
    }
}

/// Mines `shares` accepted shares as `user` with sv1_api; returns the miner and the
/// transcript.
async fn mine_sv1(addr: std::net::SocketAddr, user: &str, shares: u64) -> (Sv1Miner, Vec<String>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (r, writer) = stream.into_split();
    let mut line = Line {
        reader: BufReader::new(r).lines(),
        writer,
        transcript: Vec::new(),
    };
    let mut miner = Sv1Miner {
        version_rolling_mask: Some(HexU32Be(MASK)),
        version_rolling_min_bit: Some(HexU32Be(2)),
        ..Sv1Miner::default()
    };
    // mining.configure first; sv1_api answers its response with mining.subscribe itself.
    let configure = miner.configure(None, 1).unwrap();
    line.send(configure).await;
    line.until(&mut miner, "subscribe", |m| {
        m.status == Some(ClientStatus::Subscribed)
    })
    .await;
    assert_eq!(
        miner.version_rolling_mask,
        Some(HexU32Be(MASK)),
        "mask agreed"
    );
    miner.authorize_requests.push((2, user.to_owned()));
    let authorize = miner
        .authorize(None, 2, user.to_owned(), "x".into())
        .unwrap();
    line.send(authorize).await;
    line.until(&mut miner, "authorize and first job", |m| {
        !m.authorized.is_empty() && m.last_notify.is_some() && m.difficulty > 0.0
    })
    .await;
    let en1 = miner.extranonce1.clone().unwrap().as_ref().to_vec();
    let mut id = 10;
    let mut counter = 0u64;
    while miner.accepted < shares {
        let n = miner.last_notify.clone().unwrap();
        let target = Target::from_le_bytes(target_of_difficulty(miner.difficulty));
        counter += 1;
        let mut en2 = counter.to_be_bytes().to_vec();
        en2.resize(miner.extranonce2_size, 0);
        let bits = ((counter as u32) << 13) & MASK;
        let version = (n.version.0 & !MASK) | bits;
        let nonce = (0u32..)
            .find(|&nonce| target.is_met_by(header_hash(&n, &en1, &en2, version, nonce)))
            .unwrap();
        id += 1;
        miner.submits.push(id);
        let submit = miner
            .submit(
                None,
                id,
                user.to_owned(),
                Extranonce::try_from(en2).unwrap(),
                i64::from(n.time.0),
                i64::from(nonce),
                Some(HexU32Be(bits)),
            )
            .unwrap();
        line.send(submit).await;
        line.until(&mut miner, "submit answered", |m| !m.submits.contains(&id))
            .await;
    }
    (miner, line.transcript)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sv1_api_client_mines_blocks_credited_with_an_sv2_miner_of_the_same_user() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        synthetic_transactions: 3,
        block_interval_secs: 0,
        ..ChainConfig::default()
    }));
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        min_difficulty: Some(DIFFICULTY),
        max_difficulty: Some(DIFFICULTY),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&opts, "test").unwrap();
    assert_eq!(config.sv1_listen_addr, Some("127.0.0.1:0".parse().unwrap()));
    let api: Arc<dyn NodeApi> = node.clone();
    let server = StratumV2Server::new(config, api).unwrap();
    let sv2_addr = server.start().await.unwrap();
    let sv1_addr = server.sv1_local_addr().await.expect("an SV1 listener");
    assert_ne!(sv1_addr, sv2_addr);

    let sv1_user = format!("{ADDRESS}.sv1rig");
    let sv1 = tokio::spawn({
        let user = sv1_user.clone();
        async move { mine_sv1(sv1_addr, &user, 12).await }
    });
    let sv2 = run_miner(
        MinerOptions {
            url: sv2_addr.to_string(),
            authority_pubkey: server.authority_public_key().to_owned(),
            threads: 1,
            channel: ChannelKind::Extended,
            user: format!("{ADDRESS}.sv2rig"),
            nominal_hash_rate: 0.0,
            max_shares: Some(6),
            duration: Some(Duration::from_secs(60)),
            ..MinerOptions::default()
        },
        std::future::pending::<()>(),
    );
    let (sv1, sv2) =
        tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(sv1, sv2) })
            .await
            .expect("both miners finish in time");
    let (sv1, transcript) = sv1.unwrap();
    // The session's messages (shown with --nocapture).
    for l in &transcript {
        println!("{l}");
    }
    let sv2 = sv2.expect("the SV2 miner ran");
    assert_eq!(sv1.accepted, 12);
    assert!(sv2.shares_accepted >= 6, "{sv2:?}");
    // Refusals are only stale shares (a block of either miner moved the tip under a share).
    assert!(
        sv1.refused.iter().all(|(code, _)| *code == 21),
        "{:?}",
        sv1.refused
    );
    assert!(sv1.clean_notifies >= 2, "new tips reached the SV1 miner");

    // Blocks: on the embedded chain, each one accepted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mined = node.height() - HISTORY_HEIGHT;
    let stats = server.get_pool_stats().await;
    assert!(mined >= 2, "blocks mined: {mined}");
    assert_eq!(stats.blocks_accepted, u64::from(mined), "{stats:?}");
    assert_eq!(stats.blocks_rejected, 0, "{stats:?}");
    tokio::time::timeout(Duration::from_secs(15), server.stop())
        .await
        .unwrap()
        .unwrap();

    // The ledger: every acknowledged share of both miners, one user, two workers, credited at
    // the channel difficulty.
    let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    let shares = ledger
        .shares(&ShareRange::Time {
            from_ms: 0,
            to_ms: u64::MAX,
            limit: 100_000,
        })
        .unwrap();
    let by_worker = |w: &str| shares.iter().filter(|s| &*s.record.worker == w).count() as u64;
    assert_eq!(
        by_worker("sv1rig"),
        sv1.accepted,
        "every SV1 true is in the ledger"
    );
    assert!(by_worker("sv2rig") >= sv2.shares_accepted);
    assert!(shares.iter().all(|s| &*s.record.user == ADDRESS));
    assert!(
        shares
            .iter()
            .all(|s| (s.record.difficulty - DIFFICULTY).abs() < DIFFICULTY * 1e-9)
    );
    let total: f64 = shares.iter().map(|s| s.record.difficulty).sum();
    assert!((total - DIFFICULTY * shares.len() as f64).abs() < 1e-12);
    // The blocks found by the SV1 miner were found by its shares (credited, in the ledger).
    let blocks = ledger.blocks(100).unwrap();
    assert_eq!(blocks.len() as u32, mined);
    assert!(blocks.iter().all(|b| b.block.user == ADDRESS));
    let sv1_blocks = blocks.iter().filter(|b| b.block.worker == "sv1rig").count();
    assert!(sv1_blocks >= 1, "the SV1 miner found blocks: {blocks:?}");
    for b in blocks.iter().filter(|b| b.block.worker == "sv1rig") {
        let finder = ledger
            .share_by_hash(b.block.hash)
            .unwrap()
            .expect("its share");
        assert_eq!(&*finder.record.worker, "sv1rig");
    }
}
