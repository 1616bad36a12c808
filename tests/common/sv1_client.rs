//! A Stratum V1 miner built on SRI's `sv1_api` crate (its `IsClient` state machine builds and
//! parses every message), for the SV1 end-to-end tests (`#[path = "common/sv1_client.rs"] mod
//! sv1_client;`): configure (version rolling), subscribe, authorize, then real shares with
//! rolled version bits at the pool's difficulty.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{BlockHash, Target, Txid};
use blvm_stratum_v2::block::target::target_of_difficulty;
use blvm_stratum_v2::mining::merkle::fold_merkle_path;
use sv1_api::error::Error as Sv1ApiError;
use sv1_api::json_rpc;
use sv1_api::methods::server_to_client;
use sv1_api::utils::{Extranonce, HexU32Be};
use sv1_api::{ClientStatus, IsClient};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The version bits the miner asks to roll (BIP320's).
pub const MASK: u32 = 0x1fff_e000;

/// The miner's state, kept the way `sv1_api`'s `IsClient` asks for it.
#[derive(Default)]
pub struct Sv1Miner {
    pub extranonce1: Option<Extranonce>,
    pub extranonce2_size: usize,
    pub version_rolling_mask: Option<HexU32Be>,
    pub version_rolling_min_bit: Option<HexU32Be>,
    pub status: Option<ClientStatus>,
    pub last_notify: Option<server_to_client::Notify>,
    pub difficulty: f64,
    pub authorize_requests: Vec<(u64, String)>,
    pub authorized: Vec<String>,
    pub submits: Vec<u64>,
    pub accepted: u64,
    pub refused: Vec<(i32, String)>,
    pub notifies: u64,
    pub clean_notifies: u64,
    /// Every mining.set_version_mask, in order (the mask in force is `version_rolling_mask`).
    pub mask_changes: Vec<u32>,
    /// Every mining.set_extranonce (extranonce1, extranonce2 size), in order.
    pub extranonce_changes: Vec<(Vec<u8>, usize)>,
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

    /// Recorded, and the new extranonce1 used for the jobs from now on.
    fn handle_set_extranonce(
        &mut self,
        _: Option<usize>,
        m: &mut server_to_client::SetExtranonce,
    ) -> Result<(), Sv1ApiError> {
        let size = m.extra_nonce2_size;
        self.extranonce_changes
            .push((m.extra_nonce1.as_ref().to_vec(), size));
        self.extranonce1 = Some(m.extra_nonce1.clone());
        self.extranonce2_size = size;
        Ok(())
    }

    /// Recorded, and rolled from now on (BIP310: valid immediately).
    fn handle_set_version_mask(
        &mut self,
        _: Option<usize>,
        m: &mut server_to_client::SetVersionMask,
    ) -> Result<(), Sv1ApiError> {
        self.mask_changes.push(m.version_mask.0);
        self.version_rolling_mask = Some(m.version_mask.clone());
        Ok(())
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

pub struct Line {
    reader: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    /// Every line both ways (`>` to the pool, `<` from it).
    pub transcript: Vec<String>,
}

impl Line {
    pub async fn send(&mut self, m: json_rpc::Message) {
        let mut text = serde_json::to_string(&m).unwrap();
        self.transcript.push(format!("> {text}"));
        text.push('\n');
        // A pool that closed the connection shows at the next read (`until` says so).
        let _ = self.writer.write_all(text.as_bytes()).await;
    }

    /// The next line from the pool (`None`: closed), kept in the transcript, not handled.
    pub async fn next_line(&mut self, within: Duration) -> Option<String> {
        let line = tokio::time::timeout(within, self.reader.next_line())
            .await
            .expect("a line in time")
            .ok()??;
        self.transcript.push(format!("< {line}"));
        Some(line)
    }

    /// Handles lines until `done` holds.
    pub async fn until(
        &mut self,
        miner: &mut Sv1Miner,
        what: &str,
        done: impl Fn(&Sv1Miner) -> bool,
    ) {
        if let Err(e) = self.try_until(miner, done).await {
            panic!("{what}: {e}");
        }
    }

    /// Handles lines until `done` holds; `Err` if the pool closed the connection first (or
    /// said nothing for 20 s).
    pub async fn try_until(
        &mut self,
        miner: &mut Sv1Miner,
        done: impl Fn(&Sv1Miner) -> bool,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(miner) {
            let line = tokio::time::timeout_at(deadline, self.reader.next_line())
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| format!("closed by the pool: {e}"))?
                .ok_or_else(|| "closed by the pool".to_owned())?;
            self.transcript.push(format!("< {line}"));
            let message: json_rpc::Message =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            if let Some(reply) = miner.handle_message(None, message).unwrap() {
                self.send(reply).await;
            }
        }
        Ok(())
    }

    /// Writes `bytes` as they are (not in the transcript).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }
}

/// A connected, authorized SV1 miner.
pub struct Sv1Conn {
    pub miner: Sv1Miner,
    pub line: Line,
    pub user: String,
    /// The last mining.submit sent, as its line (newline included).
    pub last_submit: Option<String>,
    next_id: u64,
    counter: u64,
}

/// Connects to `addr`, configures version rolling, subscribes and authorizes as `user`, and
/// waits for the first job.
pub async fn connect(addr: SocketAddr, user: &str) -> Sv1Conn {
    connect_stream(TcpStream::connect(addr).await.unwrap(), user).await
}

/// [`connect`] on a connection already made (from a chosen source address, through a load
/// balancer).
pub async fn connect_stream(stream: TcpStream, user: &str) -> Sv1Conn {
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
    Sv1Conn {
        miner,
        line,
        user: user.to_owned(),
        last_submit: None,
        next_id: 10,
        counter: 0,
    }
}

impl Sv1Conn {
    /// Finds and submits one share on the latest job, and waits for its answer.
    pub async fn one_share(&mut self) {
        if let Err(e) = self.try_one_share().await {
            panic!("submit answered: {e}");
        }
    }

    /// [`Self::one_share`]; `Err` if the pool closed the connection before answering.
    pub async fn try_one_share(&mut self) -> Result<(), String> {
        let en1 = self.miner.extranonce1.clone().unwrap().as_ref().to_vec();
        let n = self.miner.last_notify.clone().unwrap();
        let target = Target::from_le_bytes(target_of_difficulty(self.miner.difficulty));
        self.counter += 1;
        let mut en2 = self.counter.to_be_bytes().to_vec();
        en2.resize(self.miner.extranonce2_size, 0);
        // The mask in force: the one agreed, or the pool's last mining.set_version_mask.
        let mask = self.miner.version_rolling_mask.as_ref().map_or(0, |m| m.0);
        let bits = ((self.counter as u32) << 13) & mask;
        let version = (n.version.0 & !mask) | bits;
        let nonce = (0u32..)
            .find(|&nonce| target.is_met_by(header_hash(&n, &en1, &en2, version, nonce)))
            .unwrap();
        self.next_id += 1;
        let id = self.next_id;
        self.miner.submits.push(id);
        let submit = self
            .miner
            .submit(
                None,
                id,
                self.user.clone(),
                Extranonce::try_from(en2).unwrap(),
                i64::from(n.time.0),
                i64::from(nonce),
                Some(HexU32Be(bits)),
            )
            .unwrap();
        let mut text = serde_json::to_string(&submit).unwrap();
        text.push('\n');
        self.last_submit = Some(text);
        self.line.send(submit).await;
        self.line
            .try_until(&mut self.miner, |m| !m.submits.contains(&id))
            .await
    }

    /// Mines until `shares` shares were accepted.
    pub async fn mine(&mut self, shares: u64) {
        while self.miner.accepted < shares {
            self.one_share().await;
        }
    }
}

/// An SV1 miner mining in the background, counting its accepted shares.
pub struct HonestSv1Miner {
    pub accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl HonestSv1Miner {
    pub async fn start(addr: SocketAddr, user: &str) -> HonestSv1Miner {
        let mut conn = connect(addr, user).await;
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                conn.one_share().await;
                count.store(conn.miner.accepted, Ordering::Relaxed);
            }
        });
        HonestSv1Miner { accepted, task }
    }

    /// Waits until `more` shares beyond the current count are accepted, within `within`.
    pub async fn assert_progress(&self, more: u64, within: Duration, when: &str) {
        let from = self.accepted.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + within;
        while self.accepted.load(Ordering::Relaxed) < from + more {
            assert!(
                !self.task.is_finished(),
                "{when}: the honest SV1 miner stopped"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "{when}: the honest SV1 miner got {} of {more} shares accepted",
                self.accepted.load(Ordering::Relaxed) - from
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HonestSv1Miner {
    fn drop(&mut self) {
        self.task.abort();
    }
}
