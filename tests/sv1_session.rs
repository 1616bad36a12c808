//! The Stratum V1 session driven as an SV1 miner would drive it, sans-IO: lines in, lines out,
//! time passed in. The miner here builds coinbases and headers from mining.notify with
//! rust-bitcoin's hashing (not the pool's code), and blocks are checked by the embedded chain.

use std::sync::Arc;

use bitcoin::hashes::{Hash, sha256d};
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::{BlockHash, Target, Txid};
use blvm_stratum_v2::block::target::target_of_difficulty;
use blvm_stratum_v2::connection::{Connection, ConnectionConfig, ConnectionError, Protocol};
use blvm_stratum_v2::mining::ShareRejection;
use blvm_stratum_v2::mining::merkle::fold_merkle_path;
use blvm_stratum_v2::mining::{ExtranonceAllocator, MiningConfig, Session, SessionEvent, Work};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain};
use blvm_stratum_v2::sv1::request_budget::{REQUEST_BURST, REQUEST_REFILL_MS};
use blvm_stratum_v2::sv1::{
    DEFAULT_START_DIFFICULTY, MAX_BAD_REQUESTS, MAX_LINE, Sv1Error, Sv1Refusal, Sv1Refusals,
    Sv1Session, code,
};
use blvm_stratum_v2::wire::common::SetupConnection;
use blvm_stratum_v2::wire::mining::{OpenExtendedMiningChannel, OpenExtendedMiningChannelSuccess};
use blvm_stratum_v2::wire::{Frame, Str0_255, encode_frame};
use serde_json::{Value, json};

const NOW_S: u32 = 1_800_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;
/// Regtest's nBits: about every other hash is a block.
const REGTEST: u32 = 0x207f_ffff;
/// Difficulty 1: no share is a block.
const RARE_BLOCKS: u32 = 0x1d00_ffff;
const USER: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080.rig1";

struct Rig {
    chain: EmbeddedChain,
    config: Arc<MiningConfig>,
    allocator: Arc<ExtranonceAllocator>,
    session: Sv1Session,
    work: Arc<Work>,
    work_id: u64,
}

/// A job as the miner keeps it from mining.notify.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    prev_hash: [u8; 32],
    coinb1: Vec<u8>,
    coinb2: Vec<u8>,
    branch: Vec<[u8; 32]>,
    version: u32,
    nbits: u32,
    ntime: u32,
    clean: bool,
}

fn config(difficulty: f64, durable: bool) -> MiningConfig {
    MiningConfig {
        min_difficulty: difficulty,
        max_difficulty: difficulty,
        durable_acks: durable,
        payout_network: Some(bitcoin::Network::Regtest),
        ..MiningConfig::default()
    }
}

impl Rig {
    fn new(bits: u32, cfg: MiningConfig) -> Rig {
        let mut chain = EmbeddedChain::new(ChainConfig {
            bits,
            synthetic_transactions: 3,
            block_interval_secs: 0,
        });
        let config = Arc::new(cfg);
        let allocator = Arc::new(ExtranonceAllocator::new());
        let work = Work::new(1, chain.template(NOW_S), &config.coinbase).unwrap();
        let mut session = Sv1Session::new(config.clone(), allocator.clone());
        session.on_work(&work, NOW_MS).unwrap();
        Rig {
            chain,
            config,
            allocator,
            session,
            work,
            work_id: 1,
        }
    }

    /// Work on another tip (as if a block came from elsewhere).
    fn next_tip(&mut self) {
        self.next_tip_with_version(0x2000_0000);
    }

    /// Work on another tip whose template's header version is `version` (a node signalling a
    /// deployment sets its bit).
    fn next_tip_with_version(&mut self, version: u32) {
        self.work_id += 1;
        let mut template = self.chain.template(NOW_S);
        template.version = bitcoin::block::Version::from_consensus(version as i32);
        template.prev_hash = BlockHash::hash(format!("tip {}", self.work_id).as_bytes());
        self.work = Work::new(self.work_id, template, &self.config.coinbase).unwrap();
        self.session.on_work(&self.work, NOW_MS).unwrap();
    }

    /// Sends one request line; returns the lines queued in answer.
    fn send(&mut self, line: &str) -> Vec<Value> {
        self.send_at(line, NOW_MS)
    }

    /// [`Self::send`] at `now_ms`.
    fn send_at(&mut self, line: &str, now_ms: u64) -> Vec<Value> {
        self.session.handle_line(line.as_bytes(), now_ms).unwrap();
        self.lines()
    }

    fn lines(&mut self) -> Vec<Value> {
        let out = std::mem::take(Protocol::outbox(&mut self.session));
        out.messages()
            .map(|m| {
                assert_eq!(m.last(), Some(&b'\n'), "one line per message");
                serde_json::from_slice(m).expect("JSON")
            })
            .collect()
    }

    /// Sends one request line; returns the lines queued in answer, each with the share
    /// number it waits for (durable acknowledgements: the outbox's holds; 0 for none).
    fn send_held(&mut self, line: &str) -> Vec<(u64, Value)> {
        self.session.handle_line(line.as_bytes(), NOW_MS).unwrap();
        let out = std::mem::take(Protocol::outbox(&mut self.session));
        let holds = out.holds().to_vec();
        out.messages()
            .enumerate()
            .map(|(i, m)| {
                let waits = holds
                    .iter()
                    .filter(|(at, _)| *at <= i)
                    .map(|(_, n)| *n)
                    .max()
                    .unwrap_or(0);
                (waits, serde_json::from_slice(m).expect("JSON"))
            })
            .collect()
    }

    fn events(&mut self) -> Vec<SessionEvent> {
        let mut q = std::collections::VecDeque::new();
        self.session.take_events(&mut q);
        q.into()
    }

    /// subscribe (+ configure) + authorize; returns extranonce1, extranonce2_size and the job.
    fn start(&mut self, mask: Option<&str>) -> (Vec<u8>, usize, f64, Job) {
        if let Some(mask) = mask {
            let r = self.send(&format!(
                r#"{{"id":1,"method":"mining.configure","params":[["version-rolling"],{{"version-rolling.mask":"{mask}","version-rolling.min-bit-count":2}}]}}"#
            ));
            assert_eq!(r.len(), 1);
        }
        let r = self.send(r#"{"id":2,"method":"mining.subscribe","params":["test-miner/1.0"]}"#);
        let result = &r[0]["result"];
        let en1 = Vec::from_hex(result[1].as_str().unwrap()).unwrap();
        let size = result[2].as_u64().unwrap() as usize;
        let r = self.send(&format!(
            r#"{{"id":3,"method":"mining.authorize","params":["{USER}","x"]}}"#
        ));
        assert_eq!(r[0], json!({"id":3,"result":true,"error":null}), "{r:?}");
        assert_eq!(r[1]["method"], "mining.set_difficulty");
        let difficulty = r[1]["params"][0].as_f64().unwrap();
        let job = notify(&r[2]);
        assert!(job.clean, "the first job cleans");
        (en1, size, difficulty, job)
    }
}

fn notify(v: &Value) -> Job {
    assert_eq!(v["method"], "mining.notify", "{v}");
    assert!(v["id"].is_null());
    let p = &v["params"];
    let hex = |i: usize| Vec::from_hex(p[i].as_str().unwrap()).unwrap();
    let word = |i: usize| u32::from_str_radix(p[i].as_str().unwrap(), 16).unwrap();
    // Stratum's prev hash: each 4-byte word's bytes reversed.
    let swapped = hex(1);
    let mut prev_hash = [0u8; 32];
    for (o, w) in prev_hash.chunks_exact_mut(4).zip(swapped.chunks_exact(4)) {
        o.copy_from_slice(&[w[3], w[2], w[1], w[0]]);
    }
    Job {
        id: p[0].as_str().unwrap().to_owned(),
        prev_hash,
        coinb1: hex(2),
        coinb2: hex(3),
        branch: p[4]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| <[u8; 32]>::from_hex(h.as_str().unwrap()).unwrap())
            .collect(),
        version: word(5),
        nbits: word(6),
        ntime: word(7),
        clean: p[8].as_bool().unwrap(),
    }
}

fn header_hash(job: &Job, en1: &[u8], en2: &[u8], version: u32, nonce: u32) -> BlockHash {
    let mut cb = job.coinb1.clone();
    cb.extend_from_slice(en1);
    cb.extend_from_slice(en2);
    cb.extend_from_slice(&job.coinb2);
    let txid = Txid::from_raw_hash(sha256d::Hash::hash(&cb));
    let root = fold_merkle_path(txid, &job.branch);
    let mut h = Vec::with_capacity(80);
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&job.prev_hash);
    h.extend_from_slice(root.as_byte_array());
    h.extend_from_slice(&job.ntime.to_le_bytes());
    h.extend_from_slice(&job.nbits.to_le_bytes());
    h.extend_from_slice(&nonce.to_le_bytes());
    BlockHash::from_byte_array(sha256d::Hash::hash(&h).to_byte_array())
}

fn target(difficulty: f64) -> Target {
    Target::from_le_bytes(target_of_difficulty(difficulty))
}

/// The first nonce from `start` whose hash meets (`meets`) or misses the target.
fn nonce(
    job: &Job,
    en1: &[u8],
    en2: &[u8],
    version: u32,
    t: Target,
    meets: bool,
    start: u32,
) -> u32 {
    (start..)
        .find(|&n| t.is_met_by(header_hash(job, en1, en2, version, n)) == meets)
        .unwrap()
}

fn submit(id: u64, job: &Job, en2: &[u8], nonce: u32, bits: Option<u32>) -> String {
    let bits = bits.map_or(String::new(), |b| format!(",\"{b:08x}\""));
    format!(
        r#"{{"id":{id},"method":"mining.submit","params":["{USER}","{}","{}","{:08x}","{nonce:08x}"{bits}]}}"#,
        job.id,
        en2.to_lower_hex_string(),
        job.ntime
    )
}

fn error_code(v: &Value) -> i64 {
    v["error"][0]
        .as_i64()
        .unwrap_or_else(|| panic!("an error: {v}"))
}

#[test]
fn subscribe_takes_extranonce1_from_the_pools_allocator() {
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    let (en1, size, _, _) = rig.start(None);
    assert_eq!(size, 8);
    assert_eq!(en1.len(), 32 - 8);
    assert_eq!(rig.session.extranonce1(), Some(en1.as_slice()));
    // An SV2 channel of the same pool gets the next prefix, not the SV1 miner's.
    let mut sv2 = Session::new(rig.config.clone(), rig.allocator.clone());
    let mut frame = Vec::new();
    encode_frame(
        &SetupConnection {
            protocol: 0,
            min_version: 2,
            max_version: 2,
            flags: 0,
            endpoint_host: Str0_255::default(),
            endpoint_port: 0,
            vendor: Str0_255::default(),
            hardware_version: Str0_255::default(),
            firmware: Str0_255::default(),
            device_id: Str0_255::default(),
        },
        &mut frame,
    )
    .unwrap();
    sv2.handle_frame(&Frame::parse_exact(&frame).unwrap(), NOW_MS)
        .unwrap();
    frame.clear();
    encode_frame(
        &OpenExtendedMiningChannel {
            request_id: 1,
            user_identity: Str0_255::new(USER).unwrap(),
            nominal_hash_rate: 0.0,
            max_target: [0xff; 32],
            min_extranonce_size: 8,
        },
        &mut frame,
    )
    .unwrap();
    sv2.handle_frame(&Frame::parse_exact(&frame).unwrap(), NOW_MS)
        .unwrap();
    let out = std::mem::take(sv2.output());
    let first = out.messages().nth(1).unwrap();
    let (ok, _) = Frame::parse_exact(first)
        .unwrap()
        .decode::<OpenExtendedMiningChannelSuccess>()
        .unwrap();
    assert_eq!(
        &ok.extranonce_prefix.as_bytes()[..2],
        &en1[..2],
        "server id"
    );
    assert_ne!(ok.extranonce_prefix.as_bytes(), en1.as_slice());
    // Subscribing again gives the same subscription.
    let again = rig.send(r#"{"id":9,"method":"mining.subscribe","params":[]}"#);
    assert_eq!(again[0]["result"][1], en1.to_lower_hex_string());
}

#[test]
fn a_valid_share_is_credited_like_an_sv2_share_and_refusals_have_sv1_codes() {
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    let (en1, size, difficulty, job) = rig.start(None);
    assert!((difficulty - 1e-6).abs() < 1e-12, "{difficulty}");
    let events = rig.events();
    assert!(
        matches!(events[0], SessionEvent::Setup { ref vendor, .. } if vendor == "test-miner/1.0")
    );
    assert!(
        matches!(events[1], SessionEvent::ChannelOpened { ref user_identity, extended: true, .. } if user_identity == USER)
    );
    let en2 = [1u8; 8];
    assert_eq!(en2.len(), size);
    let t = target(difficulty);
    let good = nonce(&job, &en1, &en2, job.version, t, true, 0);
    assert_eq!(
        rig.send(&submit(10, &job, &en2, good, None)),
        [json!({"id":10,"result":true,"error":null})]
    );
    let events = rig.events();
    match &events[..] {
        [
            SessionEvent::ShareAccepted {
                user_identity,
                difficulty: d,
                hash,
                ..
            },
        ] => {
            assert_eq!(&**user_identity, USER);
            assert!((d - 1e-6).abs() < 1e-12);
            assert_eq!(*hash, header_hash(&job, &en1, &en2, job.version, good));
        }
        other => panic!("{other:?}"),
    }
    // The same share again: duplicate.
    let r = rig.send(&submit(11, &job, &en2, good, None));
    assert_eq!(
        (r[0]["id"].clone(), error_code(&r[0])),
        (json!(11), code::DUPLICATE)
    );
    // A hash above the target: low difficulty.
    let low = nonce(&job, &en1, &en2, job.version, t, false, 0);
    let r = rig.send(&submit(12, &job, &en2, low, None));
    assert_eq!(error_code(&r[0]), code::LOW_DIFFICULTY);
    // A job never sent.
    let mut unknown = job.clone();
    unknown.id = "ffff".into();
    let r = rig.send(&submit(13, &unknown, &en2, good, None));
    assert_eq!(error_code(&r[0]), code::JOB_NOT_FOUND);
    // extranonce2 of the wrong length.
    let r = rig.send(&submit(14, &job, &[1u8; 4], good, None));
    assert_eq!(error_code(&r[0]), code::OTHER);
    // Version bits without version rolling negotiated.
    let r = rig.send(&submit(15, &job, &en2, good, Some(0x2000)));
    assert_eq!(error_code(&r[0]), code::OTHER);
    // Another worker than the one authorized.
    let r = rig.send(&submit(16, &job, &en2, good, None).replace(".rig1", ".rig2"));
    assert_eq!(error_code(&r[0]), code::UNAUTHORIZED);
    // A new tip: clean_jobs, and the old job is stale.
    rig.next_tip();
    let lines = rig.lines();
    let fresh = notify(&lines[0]);
    assert!(fresh.clean);
    assert_ne!(fresh.prev_hash, job.prev_hash);
    let r = rig.send(&submit(17, &job, &en2, good, None));
    assert_eq!(error_code(&r[0]), code::JOB_NOT_FOUND);
    let good = nonce(&fresh, &en1, &en2, fresh.version, t, true, 0);
    assert_eq!(
        rig.send(&submit(18, &fresh, &en2, good, None))[0]["result"],
        true
    );
}

#[test]
fn version_rolling_is_negotiated_per_bip310_and_rolled_shares_count() {
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    let r = rig.send(
        r#"{"id":1,"method":"mining.configure","params":[["version-rolling","minimum-difficulty","subscribe-extranonce","x-unknown"],{"version-rolling.mask":"ffffffff","minimum-difficulty.value":0.000001}]}"#,
    );
    assert_eq!(
        r[0]["result"],
        json!({"version-rolling":true,"version-rolling.mask":"1fffffe0","minimum-difficulty":true,"subscribe-extranonce":true,"x-unknown":false})
    );
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    let (en1, _, difficulty, job) = rig.start(Some("1fffe000"));
    let en2 = [2u8; 8];
    let bits = 0x0aaa_e000 & 0x1fff_e000;
    let version = (job.version & !0x1fff_e000) | bits;
    let good = nonce(&job, &en1, &en2, version, target(difficulty), true, 0);
    assert_eq!(
        rig.send(&submit(20, &job, &en2, good, Some(bits)))[0]["result"],
        true
    );
    // Bits outside the negotiated mask.
    let r = rig.send(&submit(21, &job, &en2, good, Some(0x0000_1000)));
    assert_eq!(error_code(&r[0]), code::OTHER);
    // The same rolled share again: a duplicate.
    let r = rig.send(&submit(22, &job, &en2, good, Some(bits)));
    assert_eq!(error_code(&r[0]), code::DUPLICATE);
}

/// A template that signals a deployment on a bit inside the negotiated mask (regtest's
/// testdummy, bit 28): the miner is sent mining.set_version_mask without that bit before the
/// job, its shares keep the template's bit, and rolling the bit is refused; a template that
/// stops signalling gives the bit back with another mining.set_version_mask.
#[test]
fn a_signalled_bit_leaves_the_mask_by_mining_set_version_mask() {
    const SIGNALLING: u32 = 0x3000_0000;
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    rig.next_tip_with_version(SIGNALLING);
    let r = rig.send(
        r#"{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"1fffe000"}]}"#,
    );
    assert_eq!(r[0]["result"]["version-rolling.mask"], "1fffe000");
    let r = rig.send(r#"{"id":2,"method":"mining.subscribe","params":[]}"#);
    let en1 = Vec::from_hex(r[0]["result"][1].as_str().unwrap()).unwrap();
    let r = rig.send(&format!(
        r#"{{"id":3,"method":"mining.authorize","params":["{USER}","x"]}}"#
    ));
    assert_eq!(r[0]["result"], true);
    assert_eq!(r[1]["method"], "mining.set_difficulty");
    assert_eq!(
        r[2],
        json!({"id": null, "method": "mining.set_version_mask", "params": ["0fffe000"]}),
        "before the job: {r:?}"
    );
    let job = notify(&r[3]);
    assert_eq!(job.version, SIGNALLING);
    let t = target(1e-6);
    let en2 = [7u8; 8];
    // Rolled within the new mask: accepted, and the header keeps bit 28.
    let bits = 0x0aaa_e000;
    let version = SIGNALLING | bits;
    let good = nonce(&job, &en1, &en2, version, t, true, 0);
    assert_eq!(
        rig.send(&submit(10, &job, &en2, good, Some(bits)))[0]["result"],
        true
    );
    let events = rig.events();
    let hash = events.iter().find_map(|e| match e {
        SessionEvent::ShareAccepted { hash, .. } => Some(*hash),
        _ => None,
    });
    assert_eq!(
        hash,
        Some(header_hash(&job, &en1, &en2, version, good)),
        "the signalled bit is in the header"
    );
    // Rolling the signalled bit: outside the mask.
    let r = rig.send(&submit(11, &job, &en2, good, Some(0x1000_0000)));
    assert_eq!(error_code(&r[0]), code::OTHER);
    // Another signalling tip: the mask is unchanged, nothing is sent but the job.
    rig.next_tip_with_version(SIGNALLING);
    let lines = rig.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    notify(&lines[0]);
    // The deployment locked in: the bit is the miner's again.
    rig.next_tip_with_version(0x2000_0000);
    let lines = rig.lines();
    assert_eq!(
        lines[0],
        json!({"id": null, "method": "mining.set_version_mask", "params": ["1fffe000"]})
    );
    let job = notify(&lines[1]);
    let bits = 0x1000_2000;
    let version = job.version | bits;
    let good = nonce(&job, &en1, &en2, version, t, true, 0);
    assert_eq!(
        rig.send(&submit(12, &job, &en2, good, Some(bits)))[0]["result"],
        true
    );
    // Without version rolling negotiated no mask is ever sent.
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    rig.next_tip_with_version(SIGNALLING);
    rig.start(None);
    rig.next_tip_with_version(0x2000_0000);
    let lines = rig.lines();
    assert!(
        lines.iter().all(|l| l["method"] == "mining.notify"),
        "{lines:?}"
    );
}

#[test]
fn a_share_that_is_a_block_is_assembled_and_accepted_by_the_chain() {
    let mut rig = Rig::new(REGTEST, config(1e-6, false));
    let (en1, _, difficulty, job) = rig.start(Some("1fffe000"));
    let en2 = [3u8; 8];
    let network = Target::from_compact(bitcoin::CompactTarget::from_consensus(REGTEST));
    let t = target(difficulty).max(network);
    let bits = 0x0000_4000;
    let version = job.version | bits;
    let good = (0..)
        .find(|&n| {
            network.is_met_by(header_hash(&job, &en1, &en2, version, n))
                && t.is_met_by(header_hash(&job, &en1, &en2, version, n))
        })
        .unwrap();
    assert_eq!(
        rig.send(&submit(30, &job, &en2, good, Some(bits)))[0]["result"],
        true
    );
    let events = rig.events();
    let block = events
        .iter()
        .find_map(|e| match e {
            SessionEvent::BlockFound(b) => Some(b.block.clone()),
            _ => None,
        })
        .expect("a block");
    assert!(
        matches!(events.last(), Some(SessionEvent::ShareAccepted { .. })),
        "the block first"
    );
    assert_eq!(block.header.version.to_consensus() as u32, version);
    let before = rig.chain.height();
    rig.chain
        .submit_block(&block, NOW_S)
        .expect("the chain accepts it");
    assert_eq!(rig.chain.height(), before + 1);
}

#[test]
fn with_durable_acks_the_true_waits_for_the_ledger() {
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, true));
    let (en1, _, difficulty, job) = rig.start(None);
    let en2 = [4u8; 8];
    let t = target(difficulty);
    let a = nonce(&job, &en1, &en2, job.version, t, true, 0);
    let b = nonce(&job, &en1, &en2, job.version, t, true, a + 1);
    // Each `true` is made at once, behind a hold on its share: the shell writes it once the
    // ledger has committed that share.
    assert_eq!(
        rig.send_held(&submit(40, &job, &en2, a, None)),
        [(1, json!({"id":40,"result":true,"error":null}))]
    );
    assert_eq!(
        rig.send_held(&submit(41, &job, &en2, b, None)),
        [(2, json!({"id":41,"result":true,"error":null}))]
    );
    let numbers: Vec<u64> = rig
        .events()
        .iter()
        .filter_map(|e| match e {
            SessionEvent::ShareAccepted { share_number, .. } => Some(*share_number),
            _ => None,
        })
        .collect();
    assert_eq!(numbers, [1, 2]);
    // Without a ledger nothing is held.
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    let (en1, _, difficulty, job) = rig.start(None);
    let a = nonce(&job, &en1, &en2, job.version, target(difficulty), true, 0);
    assert_eq!(
        rig.send_held(&submit(42, &job, &en2, a, None)),
        [(0, json!({"id":42,"result":true,"error":null}))]
    );
}

#[test]
fn requests_out_of_order_get_their_codes() {
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    let r = rig.send(r#"{"id":1,"method":"mining.authorize","params":["u","p"]}"#);
    assert_eq!(error_code(&r[0]), code::NOT_SUBSCRIBED);
    let r = rig
        .send(r#"{"id":2,"method":"mining.submit","params":["u","1","00","00000000","00000000"]}"#);
    assert_eq!(error_code(&r[0]), code::NOT_SUBSCRIBED);
    rig.send(r#"{"id":3,"method":"mining.subscribe","params":[]}"#);
    let r = rig
        .send(r#"{"id":4,"method":"mining.submit","params":["u","1","00","00000000","00000000"]}"#);
    assert_eq!(error_code(&r[0]), code::UNAUTHORIZED);
    // A mainnet address on a regtest pool, a malformed one, and names with a control
    // character (JSON escapes: a NUL, an escape), are refused.
    for bad in [
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kdl3v7t.w",
        "bcrt1qnotanaddress.w",
        r"alice.\u0000",
        r"bob\u001b.w",
    ] {
        let r = rig.send(&format!(
            r#"{{"id":5,"method":"mining.authorize","params":["{bad}","x"]}}"#
        ));
        assert_eq!(error_code(&r[0]), code::UNAUTHORIZED, "{bad}: {r:?}");
        assert!(!rig.session.is_authorized());
    }
    // Then a good one opens the channel with the subscription's extranonce1.
    let r = rig.send(&format!(
        r#"{{"id":6,"method":"mining.authorize","params":["{USER}","x"]}}"#
    ));
    assert_eq!(r[0]["result"], true);
    assert_eq!(
        rig.session.session().channels()[0].extranonce_prefix,
        rig.session.extranonce1().unwrap()
    );
    // A second, different username on the same connection is refused; the same one is fine.
    let r = rig.send(r#"{"id":7,"method":"mining.authorize","params":["someone.else","x"]}"#);
    assert_eq!(error_code(&r[0]), code::UNAUTHORIZED);
    let r = rig.send(&format!(
        r#"{{"id":8,"method":"mining.authorize","params":["{USER}","x"]}}"#
    ));
    assert_eq!(r[0]["result"], true);
    // suggest_difficulty and extranonce.subscribe are answered.
    let r = rig.send(r#"{"id":9,"method":"mining.suggest_difficulty","params":[0.001]}"#);
    assert!(
        r.iter().any(|l| l["id"] == 9 && l["result"] == true),
        "{r:?}"
    );
    let r = rig.send(r#"{"id":10,"method":"mining.extranonce.subscribe","params":[]}"#);
    assert_eq!(r[0]["result"], true);
}

#[test]
fn bad_input_is_an_error_or_a_close_never_a_panic() {
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    // Unknown methods and wrong parameters: an error each, the connection goes on.
    let r = rig.send(r#"{"id":1,"method":"mining.nonsense","params":[]}"#);
    assert_eq!(
        (r[0]["id"].clone(), error_code(&r[0])),
        (json!(1), code::OTHER)
    );
    let r = rig
        .send(r#"{"id":2,"method":"mining.submit","params":["w","1","zz","00000000","00000000"]}"#);
    assert_eq!(error_code(&r[0]), code::OTHER);
    let r = rig.send(r#"{"id":3,"method":"mining.authorize","params":[1,2]}"#);
    assert_eq!(error_code(&r[0]), code::OTHER);
    // Blank lines are ignored.
    assert!(rig.send("  ").is_empty());
    // Not JSON: an error with id null, then the end.
    let e = rig.session.handle_line(b"{not json", NOW_MS).unwrap_err();
    assert!(matches!(e, Sv1Error::NotARequest));
    let r = rig.lines();
    assert!(r[0]["id"].is_null() && error_code(&r[0]) == code::OTHER);
    // Nothing but bad requests: closed after MAX_BAD_REQUESTS.
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    let mut ended = None;
    for i in 0..MAX_BAD_REQUESTS {
        if let Err(e) = rig
            .session
            .handle_line(format!(r#"{{"id":{i},"method":"x"}}"#).as_bytes(), NOW_MS)
        {
            ended = Some((i, e));
            break;
        }
    }
    assert!(
        matches!(ended, Some((i, Sv1Error::TooManyBadRequests(_))) if i + 1 == MAX_BAD_REQUESTS)
    );
}

/// Through the connection's plaintext line mode: lines in pieces, CRLF, answers as lines, and a
/// line past the maximum ends the connection.
#[test]
fn the_connection_frames_lines_and_refuses_an_endless_one() {
    let rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    let config = ConnectionConfig {
        max_payload_len: MAX_LINE,
        ..ConnectionConfig::default()
    };
    let mut conn = Connection::accept_lines(rig.session, config, NOW_MS);
    assert!(conn.is_established());
    assert_eq!(conn.poll_timeout(), Some(NOW_MS + config.setup_timeout_ms));
    conn.handle_wire(b"{\"id\":1,\"method\":\"mining.subscribe\",", NOW_MS)
        .unwrap();
    assert_eq!(conn.transmit_len(), 0);
    conn.handle_wire(b"\"params\":[]}\r\n", NOW_MS).unwrap();
    let mut out = Vec::new();
    assert!(conn.poll_transmit(&mut out));
    let answer: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(answer["id"], 1);
    assert!(out.ends_with(b"\n"));
    assert!(conn.protocol().is_set_up());
    let long = vec![b'x'; MAX_LINE + 2];
    assert!(matches!(
        conn.handle_wire(&long, NOW_MS),
        Err(ConnectionError::LineTooLong(_))
    ));
    assert!(conn.is_ended());
}

/// Without mining.subscribe within the setup timeout the connection ends.
#[test]
fn no_subscribe_within_the_setup_timeout_ends_the_connection() {
    let rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    let config = ConnectionConfig {
        max_payload_len: MAX_LINE,
        setup_timeout_ms: 5_000,
        ..ConnectionConfig::default()
    };
    let mut conn = Connection::accept_lines(rig.session, config, NOW_MS);
    assert!(matches!(
        conn.handle_timeout(NOW_MS + 5_000),
        Err(ConnectionError::SetupTimeout)
    ));
}

/// What the fuzz target `sv1_session` does, under proptest on stable: lines built from the
/// methods' shapes with arbitrary fields, and arbitrary bytes, in arbitrary pieces, through the
/// connection's line mode. Nothing panics, every line sent back is JSON, an ended connection
/// stays ended.
mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    fn field() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-f]{0,20}".prop_map(|s| format!("\"{s}\"")),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| if f.is_finite() {
                f.to_string()
            } else {
                "null".into()
            }),
            Just("null".to_owned()),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
            Just(format!("\"{USER}\"")),
            Just("\"2\"".to_owned()),
            Just("\"0000000000000001\"".to_owned()),
        ]
    }

    fn line() -> impl Strategy<Value = Vec<u8>> {
        let method = prop_oneof![
            Just("mining.subscribe"),
            Just("mining.authorize"),
            Just("mining.configure"),
            Just("mining.submit"),
            Just("mining.suggest_difficulty"),
            Just("mining.extranonce.subscribe"),
            Just("mining.other"),
        ];
        prop_oneof![
            4 => (method, any::<u8>(), proptest::collection::vec(field(), 0..7)).prop_map(
                |(m, id, params)| {
                    format!(
                        "{{\"id\":{id},\"method\":\"{m}\",\"params\":[{}]}}\n",
                        params.join(",")
                    )
                    .into_bytes()
                }
            ),
            1 => proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_lines_never_panic(
            lines in proptest::collection::vec(line(), 0..24),
            chunk in 1usize..64,
            prelude in any::<bool>(),
        ) {
            let rig = Rig::new(RARE_BLOCKS, config(1e-9, false));
            let mut conn = Connection::accept_lines(
                rig.session,
                ConnectionConfig { max_payload_len: MAX_LINE, ..ConnectionConfig::default() },
                NOW_MS,
            );
            let mut input = Vec::new();
            if prelude {
                input.extend_from_slice(b"{\"id\":1,\"method\":\"mining.subscribe\"}\n");
                input.extend_from_slice(
                    format!("{{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"{USER}\"]}}\n")
                        .as_bytes(),
                );
            }
            input.extend(lines.concat());
            let mut out = Vec::new();
            let mut now = NOW_MS;
            for piece in input.chunks(chunk) {
                now += 3;
                let ended = conn.handle_wire(piece, now).is_err() || conn.handle_timeout(now).is_err();
                conn.poll_transmit(&mut out);
                if ended {
                    prop_assert!(conn.is_ended());
                    prop_assert!(conn.handle_wire(b"\n", now).is_err());
                    break;
                }
            }
            for l in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: Result<Value, _> = serde_json::from_slice(l);
                prop_assert!(v.is_ok(), "{:?}", String::from_utf8_lossy(l));
            }
        }
    }
}

/// A minimum difficulty above the pool's hardest is capped there, not refused.
#[test]
fn a_minimum_difficulty_above_the_pools_hardest_is_capped() {
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    rig.send(
        r#"{"id":1,"method":"mining.configure","params":[["minimum-difficulty"],{"minimum-difficulty.value":1000000}]}"#,
    );
    rig.send(r#"{"id":2,"method":"mining.subscribe","params":[]}"#);
    let r = rig.send(&format!(
        r#"{{"id":3,"method":"mining.authorize","params":["{USER}","x"]}}"#
    ));
    assert_eq!(r[0]["result"], true, "{r:?}");
    let difficulty = r[1]["params"][0].as_f64().unwrap();
    assert!((difficulty - 1e-6).abs() < 1e-12, "{difficulty}");
}

/// A proxy's devices: further workers of the connection's user are authorized on it and
/// their shares credited to them (extension 0x0002's worker name); another user is refused.
/// Refusals of the SV1 layer are counted by reason; refused shares are the channel's
/// `ShareRejected`, like SV2's.
#[test]
fn workers_of_one_user_share_a_connection_and_refusals_are_counted() {
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    let refusals = Arc::new(Sv1Refusals::default());
    rig.session =
        Sv1Session::new(rig.config.clone(), rig.allocator.clone()).with_refusals(refusals.clone());
    rig.session.on_work(&rig.work, NOW_MS).unwrap();
    let count = |r: Sv1Refusal| {
        refusals
            .snapshot()
            .into_iter()
            .find(|(x, _)| *x == r)
            .unwrap()
            .1
    };
    // Before subscribe and authorize.
    rig.send(r#"{"id":1,"method":"mining.authorize","params":["u.w","p"]}"#);
    assert_eq!(count(Sv1Refusal::NotSubscribed), 1);
    let (en1, _, difficulty, job) = rig.start(None);
    rig.events();
    // Another worker of the same user: true; another user, a worker name over 32 bytes or
    // with a control character: 24.
    let rig2 = USER.replace(".rig1", ".rig2");
    let r = rig.send(&format!(
        r#"{{"id":20,"method":"mining.authorize","params":["{rig2}","x"]}}"#
    ));
    assert_eq!(r, [json!({"id":20,"result":true,"error":null})]);
    let other = "bcrt1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq.rig1";
    let long = format!("{}.{}", USER.split('.').next().unwrap(), "w".repeat(33));
    let control = format!(r"{}.rig\u0000", USER.split('.').next().unwrap());
    for (id, name) in [(21, other), (22, long.as_str()), (23, control.as_str())] {
        let r = rig.send(&format!(
            r#"{{"id":{id},"method":"mining.authorize","params":["{name}","x"]}}"#
        ));
        assert_eq!(error_code(&r[0]), code::UNAUTHORIZED, "{name}");
    }
    assert_eq!(count(Sv1Refusal::UserRefused), 3);
    // Shares of both workers: the first's carry the channel's name, the second's its own.
    let t = target(difficulty);
    let (en2a, en2b) = ([1u8; 8], [2u8; 8]);
    let a = nonce(&job, &en1, &en2a, job.version, t, true, 0);
    let b = nonce(&job, &en1, &en2b, job.version, t, true, 0);
    assert_eq!(
        rig.send(&submit(30, &job, &en2a, a, None))[0]["result"],
        true
    );
    let r = rig.send(&submit(31, &job, &en2b, b, None).replace(".rig1", ".rig2"));
    assert_eq!(r[0]["result"], true, "{r:?}");
    let workers: Vec<Option<String>> = rig
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::ShareAccepted {
                user_identity,
                worker,
                ..
            } => {
                assert_eq!(&*user_identity, USER);
                Some(worker.map(|w| w.to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(workers, [None, Some("rig2".to_owned())]);
    // A worker never authorized: 24, counted; the share-shaped refusals are the channel's.
    let r = rig.send(&submit(32, &job, &en2a, a, None).replace(".rig1", ".rig3"));
    assert_eq!(error_code(&r[0]), code::UNAUTHORIZED);
    assert_eq!(count(Sv1Refusal::Unauthorized), 1);
    let mut unknown = job.clone();
    unknown.id = "ffff".into();
    let r = rig.send(&submit(33, &unknown, &en2a, a, None).replace(".rig1", ".rig2"));
    assert_eq!(error_code(&r[0]), code::JOB_NOT_FOUND);
    let r = rig.send(&submit(34, &job, &[1u8; 4], a, None));
    assert_eq!(error_code(&r[0]), code::OTHER);
    let rejected: Vec<(ShareRejection, Option<String>)> = rig
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::ShareRejected { reason, worker, .. } => {
                Some((reason, worker.map(|w| w.to_string())))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (ShareRejection::InvalidJobId, Some("rig2".to_owned())),
            (ShareRejection::BadExtranonceSize, None),
        ]
    );
    // Unknown methods, wrong parameters, a line that is not JSON.
    rig.send(r#"{"id":40,"method":"mining.nothing","params":[]}"#);
    rig.send(r#"{"id":41,"method":"mining.authorize","params":[1]}"#);
    assert!(rig.session.handle_line(b"not json", NOW_MS).is_err());
    assert_eq!(count(Sv1Refusal::UnknownMethod), 1);
    assert_eq!(count(Sv1Refusal::InvalidParams), 1);
    assert_eq!(count(Sv1Refusal::InvalidJson), 1);
}

/// The difficulty an SV1 miner starts at: on a chain of difficulty 1 or more the default
/// (512) or `sv1_start_difficulty`, the miner's own suggestion first (however large), always
/// within the pool's bounds; on an easier chain the pool's easiest.
#[test]
fn the_start_difficulty_suits_asics_on_real_chains() {
    let start = |bits: u32, cfg: MiningConfig, suggest: Option<f64>| {
        let mut rig = Rig::new(bits, cfg);
        if let Some(d) = suggest {
            rig.send(&format!(
                r#"{{"id":1,"method":"mining.suggest_difficulty","params":[{d}]}}"#
            ));
        }
        rig.start(None).2
    };
    let wide = MiningConfig {
        min_difficulty: 1e-6,
        max_difficulty: 1e15,
        payout_network: Some(bitcoin::Network::Regtest),
        ..MiningConfig::default()
    };
    let close = |a: f64, b: f64| (a / b - 1.0).abs() < 1e-3;
    let d = start(RARE_BLOCKS, wide.clone(), None);
    assert!(close(d, DEFAULT_START_DIFFICULTY), "{d}");
    let configured = MiningConfig {
        sv1_start_difficulty: Some(64.0),
        ..wide.clone()
    };
    let d = start(RARE_BLOCKS, configured.clone(), None);
    assert!(close(d, 64.0), "{d}");
    let d = start(RARE_BLOCKS, configured, Some(2.0));
    assert!(close(d, 2.0), "{d}");
    // Within the pool's bounds: a suggestion past the pool's hardest (whose hash rate would
    // not even fit the open request's f32) starts at the hardest.
    let d = start(RARE_BLOCKS, wide.clone(), Some(1e30));
    assert!(close(d, 1e15), "{d}");
    let d = start(RARE_BLOCKS, config(1e-6, false), None);
    assert!(close(d, 1e-6), "{d}");
    // An easy chain (regtest): the pool's easiest, for CPU miners.
    let d = start(REGTEST, wide, None);
    assert!(close(d, 1e-6), "{d}");
}

/// A stopping pool asks an authorized SV1 miner to reconnect (issue 18's drain).
#[test]
fn a_drain_sends_client_reconnect() {
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    rig.start(None);
    rig.lines();
    assert!(rig.session.begin_drain(NOW_MS));
    let lines = rig.lines();
    assert_eq!(
        lines,
        [json!({"id": null, "method": "client.reconnect", "params": []})]
    );
}

/// Valid requests that are not shares, in a loop (mining.extranonce.subscribe, suggest_difficulty
/// which retargets the channel each time): answered up to the connection's allowance, then the
/// connection ends, counted; shares do not spend it, and a quiet second gives one back.
#[test]
fn a_loop_of_valid_requests_that_are_not_shares_is_bounded() {
    let mut rig = Rig::new(RARE_BLOCKS, config(1e-6, false));
    let refusals = Arc::new(Sv1Refusals::default());
    rig.session =
        Sv1Session::new(rig.config.clone(), rig.allocator.clone()).with_refusals(refusals.clone());
    rig.session.on_work(&rig.work, NOW_MS).unwrap();
    let (en1, _, difficulty, job) = rig.start(None);
    // start() spent two: mining.subscribe and mining.authorize.
    let mut left = REQUEST_BURST - 2;
    // Shares do not count.
    let en2 = [5u8; 8];
    let mut from = 0;
    for id in 0..20u64 {
        let n = nonce(
            &job,
            &en1,
            &en2,
            job.version,
            target(difficulty),
            true,
            from,
        );
        from = n + 1;
        assert_eq!(
            rig.send(&submit(100 + id, &job, &en2, n, None))[0]["result"],
            true
        );
    }
    let lines = [
        r#"{"id":7,"method":"mining.extranonce.subscribe","params":[]}"#,
        r#"{"id":8,"method":"mining.suggest_difficulty","params":[0.000001]}"#,
    ];
    while left > 1 {
        rig.send(lines[left as usize % 2]);
        left -= 1;
    }
    // The last one of the allowance; a second later, one more.
    rig.send(lines[0]);
    rig.session
        .handle_line(lines[0].as_bytes(), NOW_MS + REQUEST_REFILL_MS)
        .unwrap();
    rig.lines();
    let end = rig
        .session
        .handle_line(lines[1].as_bytes(), NOW_MS + REQUEST_REFILL_MS)
        .unwrap_err();
    assert!(matches!(end, Sv1Error::RequestFlood), "{end:?}");
    let r = rig.lines();
    assert_eq!(
        (r[0]["id"].clone(), error_code(&r[0])),
        (json!(8), code::OTHER)
    );
    let flood = refusals
        .snapshot()
        .into_iter()
        .find(|(r, _)| *r == Sv1Refusal::RequestFlood);
    assert_eq!(flood, Some((Sv1Refusal::RequestFlood, 1)));
}

/// Vardiff over SV1 with room to move (min < max): a burst of shares raises the difficulty
/// with a new mining.set_difficulty before the next job; a share on the earlier job is still
/// credited at the difficulty that job was sent with. A mining.suggest_difficulty after
/// authorize above the current difficulty moves it there with a mining.set_difficulty.
#[test]
fn vardiff_and_suggest_difficulty_send_set_difficulty_and_old_jobs_keep_theirs() {
    let cfg = MiningConfig {
        min_difficulty: 1e-8,
        max_difficulty: 1e-3,
        payout_network: Some(bitcoin::Network::Regtest),
        ..MiningConfig::default()
    };
    let mut rig = Rig::new(RARE_BLOCKS, cfg);
    // The start difficulty: the miner's suggestion before authorize.
    rig.send(r#"{"id":1,"method":"mining.suggest_difficulty","params":[1e-7]}"#);
    let (en1, _, start, job) = rig.start(None);
    assert!((start / 1e-7 - 1.0).abs() < 1e-6, "{start}");
    rig.events();
    let old = target(start);
    let mut from = 0;
    let mut id: u64 = 100;
    // A share every 10 ms, far above the 18 a minute aimed at: a burst.
    let (raised, new_job) = loop {
        let en2 = id.to_be_bytes();
        let n = nonce(&job, &en1, &en2, job.version, old, true, from);
        from = n + 1;
        let r = rig.send_at(&submit(id, &job, &en2, n, None), NOW_MS + 10 * (id - 99));
        id += 1;
        assert_eq!(r[0]["result"], true, "{r:?}");
        if r.len() > 1 {
            assert_eq!(r[1]["method"], "mining.set_difficulty", "{r:?}");
            break (r[1]["params"][0].as_f64().unwrap(), notify(&r[2]));
        }
        assert!(id < 120, "no retarget after {} shares", id - 100);
    };
    assert!(raised > start, "{raised} after {start}");
    assert!(!new_job.clean, "the same tip");
    rig.events();
    // A share on the earlier job, good at its difficulty but not at the new one: accepted and
    // credited at the old difficulty.
    let en2 = [0xee; 8];
    let new = target(raised);
    let n = (0..)
        .find(|&n| {
            let h = header_hash(&job, &en1, &en2, job.version, n);
            old.is_met_by(h) && !new.is_met_by(h)
        })
        .unwrap();
    let later = NOW_MS + 2_000;
    assert_eq!(
        rig.send_at(&submit(200, &job, &en2, n, None), later)[0]["result"],
        true
    );
    let credited: Vec<f64> = rig
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::ShareAccepted { difficulty, .. } => Some(difficulty),
            _ => None,
        })
        .collect();
    assert_eq!(credited.len(), 1);
    assert!((credited[0] / start - 1.0).abs() < 1e-6, "{credited:?}");
    // On the new job the same hash is too easy now.
    let too_easy = (0..)
        .find(|&n| {
            let h = header_hash(&new_job, &en1, &en2, new_job.version, n);
            old.is_met_by(h) && !new.is_met_by(h)
        })
        .unwrap();
    let r = rig.send_at(&submit(201, &new_job, &en2, too_easy, None), later);
    assert_eq!(error_code(&r[0]), code::LOW_DIFFICULTY);
    // suggest_difficulty after authorize, above the current difficulty: set_difficulty.
    let suggested = raised * 8.0;
    let r = rig.send_at(
        &format!(r#"{{"id":300,"method":"mining.suggest_difficulty","params":[{suggested}]}}"#),
        later,
    );
    let set = r
        .iter()
        .find(|l| l["method"] == "mining.set_difficulty")
        .unwrap_or_else(|| panic!("{r:?}"));
    let d = set["params"][0].as_f64().unwrap();
    assert!((d / suggested - 1.0).abs() < 1e-3, "{d} for {suggested}");
    assert!(
        r.iter().any(|l| l["id"] == 300 && l["result"] == true),
        "{r:?}"
    );
}
