//! An independent Stratum V2 mining client built only from the SRI crates (noise_sv2,
//! codec_sv2, framing_sv2, parsers_sv2, mining_sv2, common_messages_sv2, binary_sv2, key-utils),
//! tokio's TcpStream and bitcoin's hashes for the CPU hashing. Nothing from the crate under test.
//!
//! Included by the e2e tests with `#[path = "common/sri_client.rs"] mod sri_client;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use binary_sv2::{B032, Str0255, U256};
use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{BlockHash, Target};
use codec_sv2::{
    Decrypted, EncodableFrame, Handshake, MessageFrame, NoiseDecoder, NoiseEncoder,
    TransportDecryptState, TransportEncryptState,
};
use common_messages_sv2::{Protocol, SetupConnection};
use key_utils::Secp256k1PublicKey;
use mining_sv2::{
    OpenExtendedMiningChannel, OpenStandardMiningChannel, SubmitSharesExtended,
    SubmitSharesStandard,
};
use noise_sv2::INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE;
use parsers_sv2::{AnyMessage, AnyMessageOwned, CommonMessages, Mining, MiningOwned};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Every read and write of the client is bounded by this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Mining SetupConnection flags (spec 05 §5.3.2).
pub const REQUIRES_STANDARD_JOBS: u32 = 1 << 0;
/// The client wants to select its own work (job declaration).
pub const REQUIRES_WORK_SELECTION: u32 = 1 << 1;

static MAX_TARGET: [u8; 32] = [0xff; 32];

fn err(e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("{e:?}"))
}

/// Raw frame bytes (header and payload, possibly inconsistent) that SRI's encoder encrypts as
/// given: lets a test send frames no well-behaved encoder would build.
pub struct RawFrame(pub Vec<u8>);

impl EncodableFrame for RawFrame {
    fn encoded_length(&self) -> usize {
        self.0.len()
    }
    fn encode_into(self, dst: &mut [u8]) -> Result<(), framing_sv2::Error> {
        dst.copy_from_slice(&self.0);
        Ok(())
    }
}

/// A plaintext SV2 frame: extension type, msg_type, the given msg_length and payload.
pub fn raw_frame(ext: u16, msg_type: u8, msg_length: u32, payload: &[u8]) -> RawFrame {
    let mut f = ext.to_le_bytes().to_vec();
    f.push(msg_type);
    f.extend_from_slice(&msg_length.to_le_bytes()[..3]);
    f.extend_from_slice(payload);
    RawFrame(f)
}

/// One Noise-encrypted SV2 connection, SRI codec on both directions.
pub struct SriConn {
    stream: TcpStream,
    enc: TransportEncryptState,
    dec: Option<TransportDecryptState>,
    encoder: NoiseEncoder,
    decoder: NoiseDecoder,
}

impl SriConn {
    /// Connects and runs the Noise NX handshake against `authority` (SRI's base58check text).
    pub async fn connect(addr: SocketAddr, authority: &str) -> io::Result<Self> {
        let stream = timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(err)??;
        Self::handshake(stream, authority).await
    }

    /// The handshake over an already connected stream.
    pub async fn handshake(mut stream: TcpStream, authority: &str) -> io::Result<Self> {
        let key = Secp256k1PublicKey::from_str(authority).map_err(err)?;
        let initiator = noise_sv2::Initiator::from_raw_k(key.into_bytes()).map_err(err)?;
        let (m0, hs) = Handshake::initiator(initiator).step_0().map_err(err)?;
        let mut reply = [0u8; INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE];
        timeout(IO_TIMEOUT, async {
            stream.write_all(m0.payload()).await?;
            stream.read_exact(&mut reply).await
        })
        .await
        .map_err(err)??;
        let (enc, dec) = hs.step_2(reply).map_err(err)?.split();
        Ok(SriConn {
            stream,
            enc,
            dec: Some(dec),
            encoder: NoiseEncoder::new(),
            decoder: NoiseDecoder::new(),
        })
    }

    /// Encrypts one frame (advancing the cipher) without sending it.
    pub fn encrypt<F: EncodableFrame>(&mut self, frame: F) -> io::Result<Vec<u8>> {
        let wire = self
            .encoder
            .encode_transport(frame, &mut self.enc)
            .map_err(err)?;
        Ok(wire)
    }

    /// Encrypts and sends one frame.
    pub async fn send_frame<F: EncodableFrame>(&mut self, frame: F) -> io::Result<()> {
        let wire = self.encrypt(frame)?;
        timeout(IO_TIMEOUT, self.stream.write_all(&wire))
            .await
            .map_err(err)?
    }

    /// Frames and sends one message with SRI's `MessageFrame`.
    pub async fn send(&mut self, msg: AnyMessage<'_>) -> io::Result<()> {
        let frame: MessageFrame<AnyMessage<'_>> = msg.try_into().map_err(err)?;
        self.send_frame(frame).await
    }

    /// Reads, decrypts and parses the next message.
    pub async fn recv(&mut self) -> io::Result<AnyMessageOwned> {
        timeout(IO_TIMEOUT, self.recv_inner())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no message in time"))?
    }

    async fn recv_inner(&mut self) -> io::Result<AnyMessageOwned> {
        let mut dec = self
            .dec
            .take()
            .ok_or_else(|| err("decoder failed before"))?;
        loop {
            if self.decoder.writable_len() > 0 {
                self.stream.read_exact(self.decoder.writable()).await?;
            }
            match self.decoder.next_transport_frame(dec).map_err(err)? {
                Decrypted::Frame(mut frame, state) => {
                    self.dec = Some(state);
                    let header = frame.header();
                    let msg = AnyMessage::try_from((header, frame.payload())).map_err(err)?;
                    return Ok(msg.into_owned());
                }
                Decrypted::Incomplete(_, state) => dec = state,
            }
        }
    }

    /// The socket, for tests that go on with raw bytes.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Gives up the Noise state and keeps the socket.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

/// Reads until the peer closes (EOF or reset); panics if it stays open past `within`.
pub async fn expect_closed(stream: &mut TcpStream, within: Duration, what: &str) {
    let mut buf = vec![0u8; 64 * 1024];
    let closed = timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{what}: the server kept the connection open for {within:?}"
    );
}

fn str255(s: &str) -> Str0255<'_> {
    Str0255::new(s.as_bytes()).expect("short string")
}

fn sha256d(data: &[u8]) -> [u8; 32] {
    sha256d::Hash::hash(data).to_byte_array()
}

/// A channel target as SRI carries it (little-endian U256), as rust-bitcoin's type, so a hash
/// is checked as `Target::is_met_by(BlockHash)` and never compared with the arguments swapped.
pub fn share_target(le: &[u8; 32]) -> Target {
    Target::from_le_bytes(*le)
}

/// The network target of a compact nBits.
pub fn network_target(nbits: u32) -> Target {
    Target::from_compact(bitcoin::CompactTarget::from_consensus(nbits))
}

/// Spec 05 §5.3.14: txid of prefix || extranonce_prefix || extranonce || suffix, folded up the
/// merkle path with sha256d(acc || node).
pub fn merkle_root(job: &Job, extranonce_prefix: &[u8], extranonce: &[u8]) -> [u8; 32] {
    if let Some(root) = job.merkle_root {
        return root;
    }
    let coinbase = [
        &job.coinbase_prefix[..],
        extranonce_prefix,
        extranonce,
        &job.coinbase_suffix[..],
    ]
    .concat();
    job.merkle_path
        .iter()
        .fold(sha256d(&coinbase), |acc, node| {
            sha256d(&[&acc[..], &node[..]].concat())
        })
}

/// The 80-byte header's sha256d, in the order Bitcoin hashes it.
pub fn header_hash(
    version: u32,
    prev_hash: &[u8; 32],
    root: &[u8; 32],
    ntime: u32,
    nbits: u32,
    nonce: u32,
) -> [u8; 32] {
    let mut h = Vec::with_capacity(80);
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(prev_hash);
    h.extend_from_slice(root);
    h.extend_from_slice(&ntime.to_le_bytes());
    h.extend_from_slice(&nbits.to_le_bytes());
    h.extend_from_slice(&nonce.to_le_bytes());
    sha256d(&h)
}

/// A job as the client keeps it: a standard job's merkle root, or an extended job's coinbase
/// parts and merkle path.
#[derive(Debug, Clone)]
pub struct Job {
    pub job_id: u32,
    pub version: u32,
    pub min_ntime: Option<u32>,
    pub merkle_root: Option<[u8; 32]>,
    pub coinbase_prefix: Vec<u8>,
    pub coinbase_suffix: Vec<u8>,
    pub merkle_path: Vec<[u8; 32]>,
}

/// The chain tip a channel mines on (from SetNewPrevHash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrevHash {
    pub job_id: u32,
    pub prev_hash: [u8; 32],
    pub min_ntime: u32,
    pub nbits: u32,
}

/// One open channel.
#[derive(Debug, Clone)]
pub struct Channel {
    pub id: u32,
    pub extended: bool,
    pub target: [u8; 32],
    pub extranonce_prefix: Vec<u8>,
    pub extranonce_size: usize,
    pub jobs: HashMap<u32, Job>,
    pub active_job: Option<u32>,
    pub prev: Option<PrevHash>,
}

/// A share found by brute force, ready to submit (fields may be spoiled by a test).
#[derive(Debug, Clone)]
pub struct Share {
    pub channel_id: u32,
    pub extended: bool,
    pub job_id: u32,
    pub nonce: u32,
    pub ntime: u32,
    pub version: u32,
    pub extranonce: Vec<u8>,
    pub hash: [u8; 32],
}

/// A mining client: the connection and what the pool told it.
pub struct Miner {
    pub conn: SriConn,
    pub channels: Vec<Channel>,
    next_nonce: u32,
    next_extranonce: u64,
    next_seq: u32,
    next_request: u32,
}

impl Miner {
    /// Handshake only.
    pub async fn connect(addr: SocketAddr, authority: &str) -> io::Result<Self> {
        Ok(Self::from_conn(SriConn::connect(addr, authority).await?))
    }

    /// A miner on an established connection.
    pub fn from_conn(conn: SriConn) -> Self {
        Miner {
            conn,
            channels: Vec::new(),
            next_nonce: 0,
            next_extranonce: 1,
            next_seq: 0,
            next_request: 1,
        }
    }

    /// Sends SetupConnection (Mining, versions 2..2, `flags`) and returns the reply.
    pub async fn setup(&mut self, flags: u32) -> io::Result<AnyMessageOwned> {
        self.setup_as(flags, "sri-e2e").await
    }

    /// [`Self::setup`] with the vendor string `vendor`.
    pub async fn setup_as(&mut self, flags: u32, vendor: &str) -> io::Result<AnyMessageOwned> {
        let msg = SetupConnection {
            protocol: Protocol::MiningProtocol,
            min_version: 2,
            max_version: 2,
            flags,
            endpoint_host: str255("127.0.0.1"),
            endpoint_port: 0,
            vendor: str255(vendor),
            hardware_version: str255("cpu"),
            firmware: str255("test"),
            device_id: str255("e2e"),
        };
        self.conn
            .send(AnyMessage::Common(CommonMessages::SetupConnection(msg)))
            .await?;
        self.recv().await
    }

    /// Connects and sets up; panics unless SetupConnection.Success comes back.
    pub async fn ready(addr: SocketAddr, authority: &str, flags: u32) -> io::Result<Self> {
        let mut m = Self::connect(addr, authority).await?;
        match m.setup(flags).await? {
            AnyMessageOwned::Common(parsers_sv2::CommonMessagesOwned::SetupConnectionSuccess(
                s,
            )) if s.used_version == 2 => Ok(m),
            other => Err(err(format!("setup answered with {other:?}"))),
        }
    }

    /// Opens a channel (extended if `extended`), returns its id once the success, its first
    /// job (a future job) and the SetNewPrevHash activating it have arrived, in that order.
    pub async fn open(&mut self, extended: bool, user: &str) -> io::Result<u32> {
        let request_id = self.next_request;
        self.next_request += 1;
        let max_target = U256::from(&MAX_TARGET);
        let msg = if extended {
            Mining::OpenExtendedMiningChannel(OpenExtendedMiningChannel {
                request_id,
                user_identity: str255(user),
                nominal_hash_rate: 0.0,
                max_target,
                min_extranonce_size: 4,
            })
        } else {
            Mining::OpenStandardMiningChannel(OpenStandardMiningChannel {
                request_id,
                user_identity: str255(user),
                nominal_hash_rate: 0.0,
                max_target,
            })
        };
        self.conn.send(AnyMessage::Mining(msg)).await?;
        let id = match self.recv().await? {
            AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(s))
                if extended && s.request_id == request_id =>
            {
                s.channel_id
            }
            AnyMessageOwned::Mining(MiningOwned::OpenStandardMiningChannelSuccess(s))
                if !extended && s.request_id == request_id =>
            {
                s.channel_id
            }
            AnyMessageOwned::Mining(MiningOwned::OpenMiningChannelError(e)) => {
                let code = String::from_utf8_lossy(e.error_code.as_bytes()).into_owned();
                return Err(err(format!("open refused: {code}")));
            }
            other => return Err(err(format!("open answered with {other:?}"))),
        };
        let job = match self.recv().await? {
            AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(j))
                if extended && j.channel_id == id && j.is_future() =>
            {
                j.job_id
            }
            AnyMessageOwned::Mining(MiningOwned::NewMiningJob(j))
                if !extended && j.channel_id == id && j.is_future() =>
            {
                j.job_id
            }
            other => return Err(err(format!("expected a future job, got {other:?}"))),
        };
        match self.recv().await? {
            AnyMessageOwned::Mining(MiningOwned::SetNewPrevHash(p))
                if p.channel_id == id && p.job_id == job => {}
            other => return Err(err(format!("expected SetNewPrevHash, got {other:?}"))),
        }
        Ok(id)
    }

    pub fn channel(&self, id: u32) -> &Channel {
        self.channels
            .iter()
            .find(|c| c.id == id)
            .expect("no such channel")
    }

    /// Reads one message and applies it to the channels.
    pub async fn recv(&mut self) -> io::Result<AnyMessageOwned> {
        let msg = self.conn.recv().await?;
        self.apply(&msg);
        Ok(msg)
    }

    /// Reads (and applies) messages until `f` picks one.
    pub async fn wait_for<T>(
        &mut self,
        mut f: impl FnMut(&AnyMessageOwned) -> Option<T>,
    ) -> io::Result<T> {
        loop {
            let msg = self.recv().await?;
            if let Some(t) = f(&msg) {
                return Ok(t);
            }
        }
    }

    fn channel_mut(&mut self, id: u32) -> Option<&mut Channel> {
        self.channels.iter_mut().find(|c| c.id == id)
    }

    fn apply(&mut self, msg: &AnyMessageOwned) {
        let AnyMessageOwned::Mining(m) = msg else {
            return;
        };
        let new_channel = |id: u32, extended, target: [u8; 32], prefix: Vec<u8>, size| Channel {
            id,
            extended,
            target,
            extranonce_prefix: prefix,
            extranonce_size: size,
            jobs: HashMap::new(),
            active_job: None,
            prev: None,
        };
        match m {
            MiningOwned::OpenExtendedMiningChannelSuccess(s) => self.channels.push(new_channel(
                s.channel_id,
                true,
                s.target.to_array(),
                s.extranonce_prefix.as_bytes().to_vec(),
                usize::from(s.extranonce_size),
            )),
            MiningOwned::OpenStandardMiningChannelSuccess(s) => self.channels.push(new_channel(
                s.channel_id,
                false,
                s.target.to_array(),
                s.extranonce_prefix.as_bytes().to_vec(),
                0,
            )),
            MiningOwned::NewExtendedMiningJob(j) => {
                let job = Job {
                    job_id: j.job_id,
                    version: j.version,
                    min_ntime: j.min_ntime.clone().into_inner(),
                    merkle_root: None,
                    coinbase_prefix: j.coinbase_tx_prefix.as_bytes().to_vec(),
                    coinbase_suffix: j.coinbase_tx_suffix.as_bytes().to_vec(),
                    merkle_path: j.merkle_path.iter().map(|h| h.to_array()).collect(),
                };
                self.add_job(j.channel_id, job);
            }
            MiningOwned::NewMiningJob(j) => {
                let job = Job {
                    job_id: j.job_id,
                    version: j.version,
                    min_ntime: j.min_ntime.clone().into_inner(),
                    merkle_root: Some(j.merkle_root.to_array()),
                    coinbase_prefix: Vec::new(),
                    coinbase_suffix: Vec::new(),
                    merkle_path: Vec::new(),
                };
                self.add_job(j.channel_id, job);
            }
            MiningOwned::SetNewPrevHash(p) => {
                if let Some(ch) = self.channel_mut(p.channel_id) {
                    ch.prev = Some(PrevHash {
                        job_id: p.job_id,
                        prev_hash: p.prev_hash.to_array(),
                        min_ntime: p.min_ntime,
                        nbits: p.nbits,
                    });
                    ch.active_job = Some(p.job_id);
                    ch.jobs.retain(|id, _| *id >= p.job_id);
                }
            }
            MiningOwned::SetTarget(t) => {
                if let Some(ch) = self.channel_mut(t.channel_id) {
                    ch.target = t.maximum_target.to_array();
                }
            }
            _ => {}
        }
    }

    fn add_job(&mut self, channel_id: u32, job: Job) {
        if let Some(ch) = self.channel_mut(channel_id) {
            if job.min_ntime.is_some() {
                ch.active_job = Some(job.job_id);
            }
            ch.jobs.insert(job.job_id, job);
        }
    }

    /// Brute-forces a share on the channel's active job whose hash satisfies `accept`.
    pub fn find_share(&mut self, channel_id: u32, accept: impl Fn(BlockHash) -> bool) -> Share {
        let ch = self.channel(channel_id).clone();
        let prev = ch.prev.expect("no prev hash yet");
        let job = &ch.jobs[&ch.active_job.expect("no active job")];
        let extranonce: Vec<u8> = self
            .next_extranonce
            .to_le_bytes()
            .iter()
            .copied()
            .cycle()
            .take(ch.extranonce_size)
            .collect();
        self.next_extranonce += 1;
        let root = merkle_root(job, &ch.extranonce_prefix, &extranonce);
        let ntime = job.min_ntime.unwrap_or(prev.min_ntime);
        loop {
            let nonce = self.next_nonce;
            self.next_nonce = self.next_nonce.wrapping_add(1);
            let hash = header_hash(
                job.version,
                &prev.prev_hash,
                &root,
                ntime,
                prev.nbits,
                nonce,
            );
            if accept(BlockHash::from_byte_array(hash)) {
                return Share {
                    channel_id,
                    extended: ch.extended,
                    job_id: job.job_id,
                    nonce,
                    ntime,
                    version: job.version,
                    extranonce,
                    hash,
                };
            }
        }
    }

    /// A share that meets the channel's target.
    pub fn valid_share(&mut self, channel_id: u32) -> Share {
        let target = share_target(&self.channel(channel_id).target);
        self.find_share(channel_id, |h| target.is_met_by(h))
    }

    /// The SubmitShares message for `share`, with the next sequence number.
    pub fn submit_message<'a>(&mut self, share: &'a Share) -> (u32, Mining<'a>) {
        let sequence_number = self.next_seq;
        self.next_seq += 1;
        let msg = if share.extended {
            Mining::SubmitSharesExtended(SubmitSharesExtended {
                channel_id: share.channel_id,
                sequence_number,
                job_id: share.job_id,
                nonce: share.nonce,
                ntime: share.ntime,
                version: share.version,
                extranonce: B032::new(&share.extranonce).expect("<= 32 bytes"),
            })
        } else {
            Mining::SubmitSharesStandard(SubmitSharesStandard {
                channel_id: share.channel_id,
                sequence_number,
                job_id: share.job_id,
                nonce: share.nonce,
                ntime: share.ntime,
                version: share.version,
            })
        };
        (sequence_number, msg)
    }

    /// The encrypted SubmitShares frame for `share`, not sent.
    pub fn encrypt_submit(&mut self, share: &Share) -> io::Result<Vec<u8>> {
        let (_, msg) = self.submit_message(share);
        let frame: MessageFrame<AnyMessage<'_>> =
            AnyMessage::Mining(msg).try_into().map_err(err)?;
        self.conn.encrypt(frame)
    }

    /// Submits `share`; returns the reply for its sequence number: Ok(accepted count) for
    /// SubmitShares.Success, Err(error code) for SubmitShares.Error.
    pub async fn submit(&mut self, share: &Share) -> io::Result<Result<u32, String>> {
        let (seq, msg) = self.submit_message(share);
        self.conn.send(AnyMessage::Mining(msg)).await?;
        let channel = share.channel_id;
        self.wait_for(|m| match m {
            AnyMessageOwned::Mining(MiningOwned::SubmitSharesSuccess(s))
                if s.channel_id == channel && s.last_sequence_number == seq =>
            {
                Some(Ok(s.new_submits_accepted_count))
            }
            AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e))
                if e.channel_id == channel && e.sequence_number == seq =>
            {
                Some(Err(
                    String::from_utf8_lossy(e.error_code.as_bytes()).into_owned()
                ))
            }
            _ => None,
        })
        .await
    }
}

/// An honest miner mining in the background on an extended channel; counts accepted shares.
pub struct HonestMiner {
    pub accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl HonestMiner {
    /// Connects, opens a channel and mines until stopped; any refusal ends it with an error.
    pub async fn start(addr: SocketAddr, authority: &str) -> HonestMiner {
        let mut miner = Miner::ready(addr, authority, 0)
            .await
            .expect("honest miner set up");
        let channel = miner.open(true, "honest").await.expect("honest channel");
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (accepted.clone(), stop.clone());
        let failure = Arc::new(std::sync::Mutex::new(None));
        let failed = failure.clone();
        let task = tokio::spawn(async move {
            let r = Self::mine(miner, channel, count, halt).await;
            if let Err(e) = &r {
                *failed.lock().unwrap() = Some(e.to_string());
            }
            r
        });
        HonestMiner {
            accepted,
            stop,
            failure,
            task,
        }
    }

    async fn mine(
        mut miner: Miner,
        channel: u32,
        count: Arc<AtomicU64>,
        halt: Arc<AtomicBool>,
    ) -> io::Result<()> {
        {
            while !halt.load(Ordering::Relaxed) {
                let target = miner.channel(channel).target;
                let share = miner.valid_share(channel);
                match miner.submit(&share).await? {
                    Ok(n) => {
                        count.fetch_add(u64::from(n), Ordering::Relaxed);
                    }
                    // Vardiff raised the target (SetTarget sent right after the previous
                    // SubmitShares.Success) while this share, mined at the old one, was in
                    // flight: the new target applies at once (as in SRI's channels_sv2).
                    Err(code)
                        if code == "difficulty-too-low"
                            && miner.channel(channel).target != target => {}
                    Err(code) => return Err(err(format!("honest share refused: {code}"))),
                }
                // Pacing: the machine is shared, a few hundred shares a second is plenty.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            Ok(())
        }
    }

    pub fn count(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more shares than now are accepted, within `within`.
    pub async fn assert_progress(&self, n: u64, within: Duration, during: &str) {
        let start = self.count();
        let deadline = tokio::time::Instant::now() + within;
        while self.count() < start + n {
            assert!(
                !self.task.is_finished(),
                "{during}: the honest miner stopped: {:?}",
                self.failure.lock().unwrap()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "{during}: the honest miner got only {} shares accepted in {within:?}",
                self.count() - start
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops it and checks it never failed.
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        timeout(IO_TIMEOUT, self.task)
            .await
            .expect("honest miner stops")
            .expect("honest miner task")
            .expect("honest miner never refused");
        self.accepted.load(Ordering::Relaxed)
    }
}
