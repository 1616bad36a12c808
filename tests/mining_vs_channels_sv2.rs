//! Differential test of share validation: the same extended (and standard) shares, checked by
//! our [`Session`] (through `handle_frame`, the production path) and by the SRI crate
//! `channels_sv2` (`ExtendedChannel::validate_share`, `StandardChannel::validate_share`), must
//! get the same verdict.
//!
//! Both sides are put on the same job: our `Work` is built from an `EmbeddedChain` template, and
//! the SRI channel is fed the equivalent Template Distribution messages (a `NewTemplate` carrying
//! our merkle path, our BIP34 height push as `coinbase_prefix`, our non-payout coinbase outputs,
//! then a `SetNewPrevHash` with our prev hash, nBits and `cur_time`). The pool tag is chosen so the
//! two coinbases are byte for byte the same (SRI writes `Sv2/<tag>//`; ours is given exactly that),
//! the SRI extranonce allocator is set up to hand out our channel's prefix, and the SRI channel's
//! target is set to ours. The test first asserts that the jobs are the same (coinbase prefix and
//! suffix, merkle path, version, job id) and that the merkle roots agree for the same extranonce;
//! only then are verdicts compared, share by share, and where both accept, the credit too (the
//! difficulty of the share's job's target on both sides).
//!
//! Rules both sides have, compared with no difference: a target per job (05 §5.3.21: a new
//! target, from UpdateChannel or a vardiff retarget, applies to the jobs sent after it; SRI's
//! `job_id_to_target`), in both directions, on extended and standard channels; duplicates
//! caught across every job of a tip, including one header under two job ids of the same work,
//! after 900 accepted shares as after one; BIP323's version mask `0x1fffffe0`; a block on any
//! job both still know is a block.
//!
//! Known, documented differences (asserted as such, so a change on either side is noticed):
//! - nTime: SRI answers `invalid-share` where we answer `ntime-too-old` / `ntime-too-new`, so
//!   the code is mapped. The upper bound differs: SRI takes `min_ntime + 7200`; we take the
//!   specification's (05 §5.3.11: the latest SetNewPrevHash's min_ntime plus the seconds since
//!   it was sent) plus `ntime_allowance_secs` (120), so a share between the two bounds
//!   (`ntime-at-sri-limit`) is refused by us and accepted by SRI. We follow the specification:
//!   SRI's bound lets a miner run two hours ahead of the tip's time from its first second.
//!   The lower bound of a later job on a tip differs too: ours is its template's time, SRI's
//!   the tip's (see the later-template test).
//! - After our session finds a block on a tip, it answers further shares on that tip
//!   `stale-share` for `SOLVED_TIP_MS`; SRI keeps validating them (see the block test).
//! - Duplicate memory: SRI keeps every hash of a tip up to a budget, then refuses everything
//!   and wants the channel closed; we keep one exact set per credit window and stop crediting
//!   an ended window's jobs `RETIRED_JOBS_GRACE_MS` after the new window's job. Every
//!   duplicate on a tip is refused on both sides (the codes differ on jobs that no longer earn
//!   credit with us); a fresh share on such a job is credited only by SRI (see the duplicates
//!   test for why). A tip that comes back: SRI credits its old headers again; we do not.
//! - A block that misses its channel's target (the channel's target harder than the network's,
//!   as on regtest): SRI credits it at the channel's target, we at the network's, the work it
//!   proves (at the channel's, a miner asking for a target past the network's would be paid
//!   many times its work for each such block); the verdict is the same.
//! - Old jobs: SRI credits its 16 past jobs and answers `invalid-job-id` beyond, even for a
//!   block; we credit the newest `max_jobs` (10) and keep the tip's older jobs for blocks (see
//!   the old-jobs test).
//!
//! Everything is deterministic: extranonces and nTime offsets come from a fixed-seed xorshift, and
//! nonces are found by brute force from fixed starting points.

use std::sync::Arc;

use bitcoin::consensus::Encodable;
use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{BlockHash, Target, TxMerkleNode, TxOut, Txid};
use blvm_stratum_v2::mining::merkle::fold_merkle_path;
use blvm_stratum_v2::mining::session::RETIRED_JOBS_GRACE_MS;
use blvm_stratum_v2::mining::{
    CoinbaseConfig, ExtranonceAllocator, MiningConfig, Session, SessionEvent, Work,
};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain, REGTEST_BITS};
use blvm_stratum_v2::wire::common::SetupConnection;
use blvm_stratum_v2::wire::mining::*;
use blvm_stratum_v2::wire::{B0_32, Frame, Message, Str0_255, Sv2Message, U256, encode_frame};
use channels_sv2::extranonce_manager::ExtranonceAllocator as SriAllocator;
use channels_sv2::merkle_root::merkle_root_from_path;
use channels_sv2::server::extended::ExtendedChannel;
use channels_sv2::server::share_accounting::{ShareValidationError, ShareValidationResult};
use channels_sv2::server::standard::StandardChannel;
use mining_sv2::{SubmitSharesExtendedOwned, SubmitSharesStandardOwned};
use template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};

const NOW_S: u32 = 1_800_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;
/// SRI's pool tag; SRI writes `Sv2/<tag>//` into the scriptSig, so ours is that string.
const SRI_POOL_TAG: &str = "blvm-differential";
/// Channel target: the top byte of the hash must be zero (one hash in 256 is a share).
const SHARE_TARGET: U256 = {
    let mut t = [0xff; 32];
    t[31] = 0;
    t
};
/// A hard network target, so shares are just shares.
const HARD_BITS: u32 = 0x1d00_ffff;

/// xorshift64*: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn frame<'a, M: Sv2Message<'a>>(m: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(m, &mut out).expect("encodable");
    out
}

fn take_frames(s: &mut Session) -> Vec<Vec<u8>> {
    let out = std::mem::take(s.output());
    let mut frames = Vec::new();
    let mut rest = &out[..];
    while let Some((_, used)) = Frame::parse(rest, 1 << 24).expect("valid output") {
        frames.push(rest[..used].to_vec());
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    frames
}

/// A verdict, comparable across the two implementations.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Block,
    Rejected(String),
}

/// Our rejection codes as SRI names them (see the module docs).
fn normalize_ours(v: Verdict) -> Verdict {
    match v {
        Verdict::Rejected(code) if code == "ntime-too-old" || code == "ntime-too-new" => {
            Verdict::Rejected("invalid-share".into())
        }
        other => other,
    }
}

fn sri_verdict(r: Result<ShareValidationResult, ShareValidationError>) -> Verdict {
    match r {
        Ok(ShareValidationResult::Valid(_)) => Verdict::Accepted,
        Ok(ShareValidationResult::BlockFound(..)) => Verdict::Block,
        Err(
            ShareValidationError::Invalid(c)
            | ShareValidationError::Stale(c)
            | ShareValidationError::InvalidJobId(c)
            | ShareValidationError::DoesNotMeetTarget(c)
            | ShareValidationError::VersionRollingNotAllowed(c)
            | ShareValidationError::DuplicateShare(c)
            | ShareValidationError::BadExtranonceSize(c),
        ) => Verdict::Rejected(c.to_string()),
        Err(other) => panic!("SRI refused the share for a non-protocol reason: {other:?}"),
    }
}

/// One share submission, as a miner would send it (job ids are ours; the SRI job id is looked
/// up in the pair of jobs the test keeps).
#[derive(Debug, Clone)]
struct Share {
    label: &'static str,
    job: usize,
    extranonce: Vec<u8>,
    version: u32,
    ntime: u32,
    nonce: u32,
}

/// What both sides agreed a job is (checked when the job is set up).
#[derive(Debug, Clone)]
struct JobView {
    our_job_id: u32,
    sri_job_id: u32,
    version: u32,
    prev_hash: U256,
    nbits: u32,
    min_ntime: u32,
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    path: Vec<U256>,
}

impl JobView {
    /// The header hash a miner computes (the spec's formula, with rust-bitcoin's sha256d; no
    /// code of either pool).
    fn hash(&self, extranonce_prefix: &[u8], s: &Share) -> BlockHash {
        let h = self.header(extranonce_prefix, s);
        BlockHash::from_byte_array(sha256d::Hash::hash(&h).to_byte_array())
    }

    /// The 80-byte header of a share.
    fn header(&self, extranonce_prefix: &[u8], s: &Share) -> [u8; 80] {
        let mut cb = self.prefix.clone();
        cb.extend_from_slice(extranonce_prefix);
        cb.extend_from_slice(&s.extranonce);
        cb.extend_from_slice(&self.suffix);
        let txid = Txid::from_raw_hash(sha256d::Hash::hash(&cb));
        let root = fold_merkle_path(txid, &self.path);
        let mut h = Vec::with_capacity(80);
        h.extend_from_slice(&s.version.to_le_bytes());
        h.extend_from_slice(&self.prev_hash);
        h.extend_from_slice(root.as_byte_array());
        h.extend_from_slice(&s.ntime.to_le_bytes());
        h.extend_from_slice(&self.nbits.to_le_bytes());
        h.extend_from_slice(&s.nonce.to_le_bytes());
        h.try_into().expect("80 bytes")
    }
}

fn pool_config() -> MiningConfig {
    MiningConfig {
        coinbase: CoinbaseConfig {
            // P2WPKH payout.
            payout_script: bitcoin::ScriptBuf::from_hex(
                "0014ebe1b7dcc293ccaa0ee743a86f89df8258c208fc",
            )
            .unwrap(),
            pool_tag: format!("Sv2/{SRI_POOL_TAG}//").into_bytes(),
            extranonce_len: 32,
        },
        min_difficulty: 1e-12,
        share_batch_size: 1,
        server_id: 0xbeef,
        // Shares go in all at one fake time, to compare verdicts with channels_sv2 (which has
        // no rate limit): ours is lifted.
        share_rate_multiple: 1e9,
        ..MiningConfig::default()
    }
}

/// The SRI `NewTemplate` equivalent to our work: our BIP34 push as `coinbase_prefix`, our
/// outputs after the payout as the template's outputs, our merkle path.
fn sri_template(work: &Work, template_id: u64, future: bool) -> NewTemplateOwned {
    let script_sig = work.coinbase.tx.input[0].script_sig.as_bytes();
    let height_push = bitcoin::script::Builder::new()
        .push_int(i64::from(work.height))
        .into_script();
    assert!(script_sig.starts_with(height_push.as_bytes()));
    let mut outputs = Vec::new();
    for o in &work.coinbase.tx.output[1..] {
        o.consensus_encode(&mut outputs).unwrap();
    }
    NewTemplateOwned {
        template_id,
        future_template: future,
        version: work.version,
        coinbase_tx_version: work.coinbase.tx.version.0 as u32,
        coinbase_prefix: height_push.as_bytes().to_vec().try_into().unwrap(),
        coinbase_tx_input_sequence: work.coinbase.tx.input[0].sequence.0,
        coinbase_tx_value_remaining: work.coinbase_value,
        coinbase_tx_outputs_count: (work.coinbase.tx.output.len() - 1) as u32,
        coinbase_tx_outputs: outputs.try_into().unwrap(),
        coinbase_tx_locktime: work.coinbase.tx.lock_time.to_consensus_u32(),
        merkle_path: work
            .merkle_path
            .iter()
            .map(|h| (*h).into())
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
    }
}

fn sri_prev_hash(work: &Work, template_id: u64) -> SetNewPrevHashOwned {
    SetNewPrevHashOwned {
        template_id,
        prev_hash: work.prev_hash.to_byte_array().into(),
        header_timestamp: work.cur_time,
        n_bits: work.nbits,
        target: work.network_target.to_le_bytes().into(),
    }
}

/// The SRI payout output (the "additional coinbase output" SRI adds before the template's).
fn sri_payout(work: &Work) -> Vec<TxOut> {
    vec![work.coinbase.tx.output[0].clone()]
}

/// An SRI extranonce allocator whose first extended (or standard) prefix is `ours`: the local
/// prefix is its first 23 bytes and the one-byte channel index 0 is byte 23 (our prefixes are
/// 8 unique bytes then zero padding, so bytes 23.. are zero).
fn sri_allocator(ours: &[u8]) -> SriAllocator {
    assert!(ours[23..].iter().all(|&b| b == 0), "{ours:02x?}");
    SriAllocator::new(ours[..23].to_vec(), 32, 256).unwrap()
}

struct Harness {
    chain: EmbeddedChain,
    config: Arc<MiningConfig>,
    session: Session,
    works: Vec<Arc<Work>>,
    jobs: Vec<JobView>,
    channel_id: u32,
    extranonce_prefix: Vec<u8>,
    extranonce_size: usize,
    sri: ExtendedChannel,
    seq: u32,
    /// Our session's clock for the next share.
    now_ms: u64,
    /// Frames our session sent unasked while answering a share (a new credit window's job, a
    /// vardiff SetTarget and its job), for [`Harness::follow_announced_jobs`].
    announced: Vec<Vec<u8>>,
    /// Difficulty our session credited the last share at, if it accepted it.
    last_credit: Option<f64>,
    /// The target our last credited share was credited at.
    last_credited_target: Option<Target>,
}

impl Harness {
    /// A session with one extended channel at [`SHARE_TARGET`] and the SRI channel on the same
    /// job.
    fn new(bits: u32, synthetic_transactions: usize) -> Harness {
        Harness::with_config(bits, synthetic_transactions, pool_config())
    }

    /// [`Harness::new`] with another pool configuration.
    fn with_config(bits: u32, synthetic_transactions: usize, config: MiningConfig) -> Harness {
        let mut chain = EmbeddedChain::new(ChainConfig {
            bits,
            synthetic_transactions,
            block_interval_secs: 0,
        });
        let config = Arc::new(config);
        let work = Work::new(1, chain.template(NOW_S), &config.coinbase).unwrap();
        assert_eq!(work.cur_time, NOW_S);
        let mut session = Session::new(config.clone(), Arc::new(ExtranonceAllocator::new()));
        session.on_work(&work, NOW_MS);
        setup(&mut session, 0);

        let open = OpenExtendedMiningChannel {
            request_id: 1,
            user_identity: Str0_255::new("alice.rig1").unwrap(),
            nominal_hash_rate: 0.0,
            max_target: SHARE_TARGET,
            min_extranonce_size: 8,
        };
        session
            .handle_frame(&Frame::parse_exact(&frame(&open)).unwrap(), NOW_MS)
            .unwrap();
        let frames = take_frames(&mut session);
        let (mut channel_id, mut target, mut enp, mut size) = (0, [0; 32], vec![], 0);
        let mut job = None;
        for f in &frames {
            match Frame::parse_exact(f).unwrap().message().unwrap().0 {
                Message::OpenExtendedMiningChannelSuccess(m) => {
                    channel_id = m.channel_id;
                    target = m.target;
                    enp = m.extranonce_prefix.to_vec();
                    size = usize::from(m.extranonce_size);
                }
                Message::NewExtendedMiningJob(m) => {
                    assert!(m.version_rolling_allowed);
                    job = Some((
                        m.job_id,
                        m.version,
                        m.coinbase_tx_prefix.to_vec(),
                        m.coinbase_tx_suffix.to_vec(),
                        m.merkle_path.to_vec(),
                    ));
                }
                Message::SetNewPrevHash(m) => {
                    let j = job.as_ref().unwrap();
                    assert_eq!(m.job_id, j.0);
                    assert_eq!(m.min_ntime, NOW_S);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(target, SHARE_TARGET);
        assert_eq!((enp.len(), size), (24, 8));
        let (our_job_id, version, prefix, suffix, path) = job.unwrap();

        let mut alloc = sri_allocator(&enp);
        let sri_prefix = alloc.allocate_extended(8).unwrap();
        assert_eq!(sri_prefix.as_bytes(), &enp[..]);
        let mut sri = ExtendedChannel::new_for_pool(
            channel_id,
            "alice.rig1".into(),
            sri_prefix,
            Target::from_le_bytes([0xff; 32]),
            1.0,
            true,
            8,
            1,
            6.0,
            SRI_POOL_TAG.into(),
            None,
        )
        .unwrap();
        sri.set_target(Target::from_le_bytes(SHARE_TARGET)).unwrap();
        sri.on_new_template(sri_template(&work, 1, true), sri_payout(&work))
            .unwrap();
        sri.on_set_new_prev_hash(sri_prev_hash(&work, 1)).unwrap();
        let sri_job = sri.get_active_job().expect("active job").clone();
        let msg = sri_job.get_job_message();
        // Same job: coinbase split, merkle path, version.
        assert_eq!(
            msg.coinbase_tx_prefix.as_bytes(),
            &prefix[..],
            "coinbase prefix"
        );
        assert_eq!(
            msg.coinbase_tx_suffix.as_bytes(),
            &suffix[..],
            "coinbase suffix"
        );
        let sri_path: Vec<U256> = msg.merkle_path.iter().map(|h| h.to_array()).collect();
        assert_eq!(sri_path, path, "merkle path");
        assert_eq!(msg.version, version);
        assert_eq!(sri_job.get_min_ntime(), Some(NOW_S));

        let view = JobView {
            our_job_id,
            sri_job_id: sri_job.get_job_id(),
            version,
            prev_hash: work.prev_hash.to_byte_array(),
            nbits: work.nbits,
            min_ntime: NOW_S,
            prefix,
            suffix,
            path,
        };
        let h = Harness {
            chain,
            config,
            session,
            works: vec![work],
            jobs: vec![view],
            channel_id,
            extranonce_prefix: enp,
            extranonce_size: size,
            sri,
            seq: 0,
            now_ms: NOW_MS,
            announced: Vec::new(),
            last_credit: None,
            last_credited_target: None,
        };
        h.assert_same_merkle_roots(0);
        h
    }

    /// Same merkle root on both sides, for several extranonces.
    fn assert_same_merkle_roots(&self, job: usize) {
        let mut rng = Rng(0x5eed_0000 + job as u64);
        let view = &self.jobs[job];
        let sri_job = self.sri_job(view.sri_job_id);
        for _ in 0..8 {
            let en = rng.bytes(self.extranonce_size);
            let ours = self.works[job].merkle_root(&self.extranonce_prefix, &en);
            let mut full = self.extranonce_prefix.clone();
            full.extend_from_slice(&en);
            let theirs = merkle_root_from_path(
                &sri_job.get_coinbase_tx_prefix_without_bip141(),
                &sri_job.get_coinbase_tx_suffix_without_bip141(),
                &full,
                sri_job.get_merkle_path().as_slice(),
            )
            .expect("SRI builds the coinbase");
            assert_eq!(
                ours,
                TxMerkleNode::from_byte_array(theirs),
                "merkle root for extranonce {en:02x?}"
            );
        }
    }

    fn sri_job(&self, job_id: u32) -> channels_sv2::server::jobs::extended::ExtendedJob {
        self.sri
            .get_active_job()
            .filter(|j| j.get_job_id() == job_id)
            .or_else(|| self.sri.get_past_job(job_id))
            .expect("SRI job")
            .clone()
    }

    /// New work on the same tip: an immediately active job on both sides.
    fn same_tip_job(&mut self) -> usize {
        self.same_tip_job_at(NOW_S)
    }

    /// New work on the same tip from a template made at `time`.
    fn same_tip_job_at(&mut self, time: u32) -> usize {
        let id = self.works.len() as u64 + 1;
        let work = Work::new(id, self.chain.template(time), &self.config.coinbase).unwrap();
        assert_eq!(work.prev_hash, self.works[0].prev_hash);
        assert_eq!(work.cur_time, time);
        let idx = self.job_on(work);
        assert_eq!(self.jobs[idx].min_ntime, time);
        idx
    }

    /// The latest work again, as a new job on both sides (same coinbase, same merkle path:
    /// a header fits both jobs).
    fn same_work_job(&mut self) -> usize {
        let work = self.works.last().unwrap().clone();
        self.job_on(work)
    }

    /// `work`, on the current tip, given to our session and mirrored on SRI.
    fn job_on(&mut self, work: Arc<Work>) -> usize {
        self.session.on_work(&work, self.now_ms);
        let frames = take_frames(&mut self.session);
        let job = frames
            .iter()
            .find(|f| {
                matches!(
                    Frame::parse_exact(f).unwrap().message().unwrap().0,
                    Message::NewExtendedMiningJob(_)
                )
            })
            .expect("a job was sent");
        self.mirror_job(job, work)
    }

    /// What our session sent while answering shares, mirrored on SRI: a vardiff retarget
    /// (`set_target`) and the jobs on the current work (a new credit window's, the one after a
    /// retarget) as new templates on the same work. Returns the index of the last job.
    fn follow_announced_jobs(&mut self) -> Option<usize> {
        let work = self.works.last().unwrap().clone();
        let mut last = None;
        for f in std::mem::take(&mut self.announced) {
            match Frame::parse_exact(&f).unwrap().message().unwrap().0 {
                Message::SetTarget(m) => {
                    assert_eq!(m.channel_id, self.channel_id);
                    self.sri
                        .set_target(Target::from_le_bytes(m.maximum_target))
                        .unwrap();
                }
                _ => last = Some(self.mirror_job(&f, work.clone())),
            }
        }
        last
    }

    /// Mirrors on SRI a job our session announced, active at once, on `work` (same tip): SRI
    /// gets `work` as a non-future template. The jobs must be the same; SRI's min_ntime is its
    /// chain tip's (a job of ours may start later, see the duplicates test).
    fn mirror_job(&mut self, job_frame: &[u8], work: Arc<Work>) -> usize {
        let mut view = match Frame::parse_exact(job_frame).unwrap().message().unwrap().0 {
            Message::NewExtendedMiningJob(m) => JobView {
                our_job_id: m.job_id,
                sri_job_id: 0,
                version: m.version,
                prev_hash: work.prev_hash.to_byte_array(),
                nbits: work.nbits,
                min_ntime: m.min_ntime.expect("a job active at once"),
                prefix: m.coinbase_tx_prefix.to_vec(),
                suffix: m.coinbase_tx_suffix.to_vec(),
                path: m.merkle_path.to_vec(),
            },
            other => panic!("not a job: {other:?}"),
        };
        assert!(view.min_ntime >= NOW_S);
        let id = self.works.len() as u64 + 1;
        self.sri
            .on_new_template(sri_template(&work, id, false), sri_payout(&work))
            .unwrap();
        let sri_job = self.sri.get_active_job().unwrap().clone();
        let msg = sri_job.get_job_message();
        assert_eq!(msg.coinbase_tx_prefix.as_bytes(), &view.prefix[..]);
        assert_eq!(msg.coinbase_tx_suffix.as_bytes(), &view.suffix[..]);
        assert_eq!(sri_job.get_min_ntime(), Some(NOW_S));
        view.sri_job_id = sri_job.get_job_id();
        self.works.push(work);
        self.jobs.push(view);
        let idx = self.jobs.len() - 1;
        self.assert_same_merkle_roots(idx);
        idx
    }

    /// The channel's maximum target changes, on both sides: ours through UpdateChannel (which
    /// answers SetTarget), SRI's through `update_channel` (1 h/s at its 6 shares a minute is
    /// far easier than any target here, so the maximum is the target on both sides).
    fn update_channel(&mut self, maximum_target: U256) {
        let msg = UpdateChannel {
            channel_id: self.channel_id,
            nominal_hash_rate: 0.0,
            maximum_target,
        };
        self.session
            .handle_frame(&Frame::parse_exact(&frame(&msg)).unwrap(), self.now_ms)
            .unwrap();
        // SetTarget, then a job on the current work at the new target (ours; SRI's
        // channel leaves jobs to its caller): not tracked here, the earlier jobs keep theirs.
        let frames = take_frames(&mut self.session);
        assert_eq!(frames.len(), 2, "SetTarget and a new job");
        match Frame::parse_exact(&frames[0]).unwrap().message().unwrap().0 {
            Message::SetTarget(m) => {
                assert_eq!(m.channel_id, self.channel_id);
                assert_eq!(m.maximum_target, maximum_target);
            }
            other => panic!("unexpected {other:?}"),
        }
        match Frame::parse_exact(&frames[1]).unwrap().message().unwrap().0 {
            Message::NewExtendedMiningJob(m) => {
                assert_eq!(m.channel_id, self.channel_id);
                assert!(m.min_ntime.is_some(), "active at once");
            }
            other => panic!("unexpected {other:?}"),
        }
        let target = Target::from_le_bytes(maximum_target);
        self.sri.update_channel(1.0, Some(target)).unwrap();
        assert_eq!(*self.sri.get_target(), target);
    }

    /// A new tip on both sides: every earlier job becomes stale.
    fn new_tip(&mut self) {
        let id = self.works.len() as u64 + 1;
        let mut template = self.chain.template(NOW_S);
        template.prev_hash = bitcoin::BlockHash::hash(b"another tip");
        let work = Work::new(id, template, &self.config.coinbase).unwrap();
        self.session.on_work(&work, self.now_ms);
        let _ = take_frames(&mut self.session);
        self.sri
            .on_new_template(sri_template(&work, id, true), sri_payout(&work))
            .unwrap();
        self.sri
            .on_set_new_prev_hash(sri_prev_hash(&work, id))
            .unwrap();
    }

    /// `work`'s tip, again, after another tip (a reorg back, or a pool flipping between two
    /// tips): its job on both sides, a future job and then the prev hash, as on any new tip.
    fn return_to(&mut self, work: Arc<Work>) -> usize {
        self.new_tip();
        assert_ne!(
            self.session.latest_job().unwrap().1.prev_hash,
            work.prev_hash
        );
        self.session.on_work(&work, self.now_ms);
        let (mut job, mut min_ntime) = (None, None);
        for f in take_frames(&mut self.session) {
            match Frame::parse_exact(&f).unwrap().message().unwrap().0 {
                Message::NewExtendedMiningJob(m) => {
                    assert_eq!(m.min_ntime, None, "a future job");
                    job = Some(JobView {
                        our_job_id: m.job_id,
                        sri_job_id: 0,
                        version: m.version,
                        prev_hash: work.prev_hash.to_byte_array(),
                        nbits: work.nbits,
                        min_ntime: 0,
                        prefix: m.coinbase_tx_prefix.to_vec(),
                        suffix: m.coinbase_tx_suffix.to_vec(),
                        path: m.merkle_path.to_vec(),
                    });
                }
                Message::SetNewPrevHash(m) => min_ntime = Some(m.min_ntime),
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut view = job.expect("a job");
        view.min_ntime = min_ntime.expect("the prev hash");
        let id = self.works.len() as u64 + 1;
        self.sri
            .on_new_template(sri_template(&work, id, true), sri_payout(&work))
            .unwrap();
        self.sri
            .on_set_new_prev_hash(sri_prev_hash(&work, id))
            .unwrap();
        let sri_job = self.sri.get_active_job().unwrap().clone();
        assert_eq!(sri_job.get_min_ntime(), Some(work.cur_time));
        view.sri_job_id = sri_job.get_job_id();
        self.works.push(work);
        self.jobs.push(view);
        let idx = self.jobs.len() - 1;
        self.assert_same_merkle_roots(idx);
        idx
    }

    fn hash(&self, s: &Share) -> BlockHash {
        self.jobs[s.job].hash(&self.extranonce_prefix, s)
    }

    /// A nonce from `start` on whose hash meets (or misses, with `hit` false) the share target.
    fn nonce(&self, s: Share, start: u32, hit: bool) -> Share {
        let target = Target::from_le_bytes(SHARE_TARGET);
        self.nonce_where(s, start, |h| target.is_met_by(h) == hit)
    }

    /// The first nonce from `start` on whose header hash satisfies `wanted` (the merkle root
    /// is computed once).
    fn nonce_where(&self, mut s: Share, start: u32, wanted: impl Fn(BlockHash) -> bool) -> Share {
        let mut header = self.jobs[s.job].header(&self.extranonce_prefix, &s);
        s.nonce = (start..)
            .find(|&n| {
                header[76..].copy_from_slice(&n.to_le_bytes());
                wanted(BlockHash::from_byte_array(
                    sha256d::Hash::hash(&header).to_byte_array(),
                ))
            })
            .unwrap();
        s
    }

    fn ours(&mut self, s: &Share, job_id: u32) -> Verdict {
        self.seq += 1;
        let msg = SubmitSharesExtended {
            channel_id: self.channel_id,
            sequence_number: self.seq,
            job_id,
            nonce: s.nonce,
            ntime: s.ntime,
            version: s.version,
            extranonce: B0_32::new(&s.extranonce).unwrap(),
        };
        self.session
            .handle_frame(&Frame::parse_exact(&frame(&msg)).unwrap(), self.now_ms)
            .unwrap();
        let (mut block, mut credit) = (false, None);
        for e in self.session.drain_events() {
            match e {
                SessionEvent::BlockFound(_) => block = true,
                SessionEvent::ShareAccepted {
                    difficulty, target, ..
                } => {
                    credit = Some(difficulty);
                    self.last_credited_target = Some(target);
                }
                _ => {}
            }
        }
        self.last_credit = credit;
        let mut answer = None;
        for f in take_frames(&mut self.session) {
            let verdict = match Frame::parse_exact(&f).unwrap().message().unwrap().0 {
                Message::SubmitSharesSuccess(m) => {
                    assert_eq!(m.last_sequence_number, self.seq);
                    assert!(credit.is_some());
                    Some(if block {
                        Verdict::Block
                    } else {
                        Verdict::Accepted
                    })
                }
                Message::SubmitSharesError(m) => {
                    assert!(!block && credit.is_none());
                    Some(Verdict::Rejected(m.error_code.to_string()))
                }
                // After the answer: a new credit window's job, or a vardiff retarget and the
                // job that follows it.
                Message::NewExtendedMiningJob(_) | Message::SetTarget(_) if answer.is_some() => {
                    None
                }
                other => panic!("unexpected answer {other:?}"),
            };
            match verdict {
                Some(v) => {
                    assert!(answer.is_none(), "one answer per share");
                    answer = Some(v);
                }
                None => self.announced.push(f),
            }
        }
        answer.expect("an answer")
    }

    fn sri(&mut self, s: &Share, job_id: u32) -> Verdict {
        let share = SubmitSharesExtendedOwned {
            channel_id: self.channel_id,
            sequence_number: self.seq,
            job_id,
            nonce: s.nonce,
            ntime: s.ntime,
            version: s.version,
            extranonce: s.extranonce.clone().try_into().unwrap(),
        };
        sri_verdict(self.sri.validate_share(share))
    }

    /// Both verdicts for one share (our job id and SRI's are the job's own on each side;
    /// `job_id_offset` moves both to an unknown id).
    fn verdicts(&mut self, s: &Share, job_id_offset: u32) -> (Verdict, Verdict) {
        let view = &self.jobs[s.job];
        let (ours_id, sri_id) = (
            view.our_job_id + job_id_offset,
            view.sri_job_id + job_id_offset,
        );
        let network = Target::from_compact(bitcoin::CompactTarget::from_consensus(view.nbits));
        let ours = normalize_ours(self.ours(s, ours_id));
        let before = self.sri.get_share_accounting().get_share_work_sum();
        let theirs = self.sri(s, sri_id);
        if ours == Verdict::Block && self.last_credited_target == Some(network) {
            // A block that misses the channel's (harder) target: we credit the work it proves,
            // the network's target; SRI the channel's (the known difference above).
            let credit = self.last_credit.expect("credited");
            let proven = network.difficulty_float();
            assert!(
                (credit - proven).abs() <= 1e-9 * proven,
                "{}: credited {credit}, the network's difficulty is {proven}",
                s.label
            );
            // (Where SRI takes it too: on a job it no longer knows it refuses it, see above.)
            if theirs == Verdict::Block {
                let sri_credit = self.sri.get_share_accounting().get_share_work_sum() - before;
                assert!(
                    sri_credit > credit * 2.0,
                    "{}: SRI credits the channel's target: {sri_credit} against our {credit}",
                    s.label
                );
            }
        } else if ours == theirs && matches!(ours, Verdict::Accepted | Verdict::Block) {
            // Same credit: both take the difficulty of the job's target.
            let sri_credit = self.sri.get_share_accounting().get_share_work_sum() - before;
            let credit = self.last_credit.expect("credited");
            assert!(
                (credit - sri_credit).abs() <= 1e-9 * credit,
                "{}: credited {credit} by us, {sri_credit} by channels_sv2",
                s.label
            );
        }
        (ours, theirs)
    }
}

/// Everything our session sent unasked must have been mirrored on SRI (or the verdicts that
/// followed compared different channels).
impl Drop for Harness {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(
                self.announced.is_empty(),
                "{} frames sent by our session were not mirrored on SRI",
                self.announced.len()
            );
        }
    }
}

fn setup(session: &mut Session, flags: u32) {
    let setup = SetupConnection {
        protocol: 0,
        min_version: 2,
        max_version: 2,
        flags,
        endpoint_host: Str0_255::new("127.0.0.1").unwrap(),
        endpoint_port: 3333,
        vendor: Str0_255::new("differential").unwrap(),
        hardware_version: Str0_255::default(),
        firmware: Str0_255::default(),
        device_id: Str0_255::default(),
    };
    session
        .handle_frame(&Frame::parse_exact(&frame(&setup)).unwrap(), NOW_MS)
        .unwrap();
    let _ = take_frames(session);
}

/// Runs `cases` through both sides; every verdict must agree except where `expected_divergence`
/// names the pair. Returns the verdicts for the caller's own checks.
fn compare(
    h: &mut Harness,
    cases: &[(Share, u32)],
    expected_divergence: &[(&str, Verdict, Verdict)],
) -> Vec<(Verdict, Verdict)> {
    let mut out = Vec::new();
    let mut mismatches = Vec::new();
    for (s, offset) in cases {
        let (ours, theirs) = h.verdicts(s, *offset);
        if ours != theirs {
            let documented = expected_divergence
                .iter()
                .any(|(l, o, t)| *l == s.label && *o == ours && *t == theirs);
            if !documented {
                mismatches.push(format!(
                    "{}: ours {ours:?}, channels_sv2 {theirs:?}, share {s:?} (job id offset {offset})",
                    s.label
                ));
            }
        } else {
            assert!(
                !expected_divergence.iter().any(|(l, ..)| *l == s.label),
                "{}: documented divergence is gone, both say {ours:?}",
                s.label
            );
        }
        out.push((ours, theirs));
    }
    assert!(
        mismatches.is_empty(),
        "divergences:\n{}",
        mismatches.join("\n")
    );
    out
}

#[test]
fn extended_share_verdicts_match_channels_sv2() {
    let mut h = Harness::new(HARD_BITS, 40);
    assert_eq!(
        h.jobs[0].path.len(),
        6,
        "40 transactions after the coinbase"
    );
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let v = h.jobs[0].version;
    let t = h.jobs[0].min_ntime;
    let base = |rng: &mut Rng, h: &Harness, job: usize, label: &'static str| Share {
        label,
        job,
        extranonce: rng.bytes(h.extranonce_size),
        version: v,
        ntime: t + (rng.next() % 100) as u32,
        nonce: 0,
    };

    let mut cases: Vec<(Share, u32)> = Vec::new();
    let mut valid = Vec::new();
    for i in 0..16 {
        let s = base(&mut rng, &h, 0, "valid");
        let s = h.nonce(s, (rng.next() as u32) >> 4, true);
        if i % 4 == 0 {
            valid.push(s.clone());
        }
        cases.push((s, 0));
    }
    for _ in 0..4 {
        // BIP323 bits rolled: valid on both sides.
        let mut s = base(&mut rng, &h, 0, "valid-rolled");
        s.version = v ^ ((rng.next() as u32) & 0x1fff_ffe0);
        cases.push((h.nonce(s, 0, true), 0));
    }
    for _ in 0..8 {
        let s = base(&mut rng, &h, 0, "target-miss");
        cases.push((h.nonce(s, (rng.next() as u32) >> 4, false), 0));
    }
    for s in &valid {
        cases.push((
            Share {
                label: "duplicate",
                ..s.clone()
            },
            0,
        ));
    }
    let s = h.nonce(base(&mut rng, &h, 0, "wrong-job-id"), 0, true);
    cases.push((s.clone(), 1000));
    for len in [0, 7, 9, 32] {
        let mut bad = s.clone();
        bad.label = "bad-extranonce-size";
        bad.extranonce = rng.bytes(len);
        cases.push((bad, 0));
    }
    let mut old = h.nonce(base(&mut rng, &h, 0, "ntime-before-min"), 0, true);
    old.ntime = t - 1;
    cases.push((h.nonce(old, 0, true), 0));
    let mut new = base(&mut rng, &h, 0, "ntime-too-far-ahead");
    new.ntime = t + 7201;
    cases.push((h.nonce(new, 0, true), 0));
    let mut edge = base(&mut rng, &h, 0, "ntime-at-sri-limit");
    edge.ntime = t + 7200;
    cases.push((h.nonce(edge, 0, true), 0));
    let mut edge = base(&mut rng, &h, 0, "ntime-at-limit");
    edge.ntime = t + pool_config().ntime_allowance_secs;
    cases.push((h.nonce(edge, 0, true), 0));
    for bit in [
        0x0000_0001u32,
        0x0000_0010,
        0x2000_0000,
        0x4000_0000,
        0x8000_0000,
    ] {
        let mut s = base(&mut rng, &h, 0, "non-rollable-version-bit");
        s.version = v ^ bit;
        cases.push((h.nonce(s, 0, true), 0));
    }
    // Bits 5..12: rollable under BIP323 (both sides), not under BIP320.
    for bit in [0x0000_0020u32, 0x0000_1000] {
        let mut s = base(&mut rng, &h, 0, "bip323-only-version-bit");
        s.version = v ^ bit;
        cases.push((h.nonce(s, 0, true), 0));
    }
    let divergence = [(
        "ntime-at-sri-limit",
        Verdict::Rejected("invalid-share".into()),
        Verdict::Accepted,
    )];
    let verdicts = compare(&mut h, &cases, &divergence);
    let accepted = verdicts
        .iter()
        .filter(|(o, _)| *o == Verdict::Accepted)
        .count();
    assert_eq!(
        accepted,
        16 + 4 + 1 + 2,
        "valid, rolled, ntime-at-limit and BIP323-rolled shares"
    );
    for ((s, _), (ours, _)) in cases.iter().zip(&verdicts) {
        let expected = match s.label {
            "valid" | "valid-rolled" | "ntime-at-limit" | "bip323-only-version-bit" => {
                Verdict::Accepted
            }
            "target-miss" => Verdict::Rejected("difficulty-too-low".into()),
            "duplicate" => Verdict::Rejected("duplicate-share".into()),
            "wrong-job-id" => Verdict::Rejected("invalid-job-id".into()),
            "bad-extranonce-size" => Verdict::Rejected("bad-extranonce-size".into()),
            "ntime-before-min" | "ntime-too-far-ahead" | "ntime-at-sri-limit" => {
                Verdict::Rejected("invalid-share".into())
            }
            _ => Verdict::Rejected("invalid-non-rollable-version-bit".into()),
        };
        assert_eq!(*ours, expected, "{s:?}");
    }

    // A second job on the same tip: shares on both the past and the new job are valid on both
    // sides, and the duplicate set spans jobs.
    let j2 = h.same_tip_job();
    let mut cases = Vec::new();
    for job in [0, j2, 0, j2] {
        let s = base(&mut rng, &h, job, "valid-after-new-job");
        cases.push((h.nonce(s, 0, true), 0));
        let s = base(&mut rng, &h, job, "target-miss-after-new-job");
        cases.push((h.nonce(s, 0, false), 0));
    }
    cases.push((cases[0].0.clone(), 0));
    cases.last_mut().unwrap().0.label = "duplicate-after-new-job";
    let verdicts = compare(&mut h, &cases, &[]);
    assert_eq!(
        verdicts
            .iter()
            .filter(|(o, _)| *o == Verdict::Accepted)
            .count(),
        4
    );

    // A new tip: every earlier job is stale on both sides.
    let old: Vec<_> = cases.iter().step_by(2).take(4).cloned().collect();
    h.new_tip();
    let mut stale = Vec::new();
    for (s, _) in old {
        stale.push((
            Share {
                label: "stale",
                ..s
            },
            0,
        ));
    }
    let verdicts = compare(&mut h, &stale, &[]);
    assert!(
        verdicts
            .iter()
            .all(|(o, _)| *o == Verdict::Rejected("stale-share".into()))
    );
}

/// On regtest about every other hash is a block: both sides must call the same shares blocks
/// (whatever the channel target) and build the same coinbase.
///
/// Documented difference: once our session has found a block on a tip, it answers further
/// shares on that tip `stale-share` for `SOLVED_TIP_MS` (they could only make competing blocks
/// or shares of a dead tip), where SRI keeps validating them. So the harness is rebuilt (same
/// deterministic job) after each block, and the solved-tip behaviour is asserted on its own.
#[test]
fn block_verdicts_and_coinbase_match_channels_sv2() {
    let fresh = || Harness::new(REGTEST_BITS, 7);
    let mut h = fresh();
    let mut rng = Rng(42);
    let v = h.jobs[0].version;
    let t = h.jobs[0].min_ntime;
    let mut blocks = 0;
    let mut last = None;
    for i in 0..32u32 {
        let s = Share {
            label: "any",
            job: 0,
            extranonce: rng.bytes(h.extranonce_size),
            version: v ^ ((i & 3) << 13),
            ntime: t + i,
            nonce: rng.next() as u32,
        };
        let verdicts = compare(&mut h, &[(s.clone(), 0)], &[]);
        if verdicts[0].0 == Verdict::Block {
            blocks += 1;
            h = fresh();
        } else if verdicts[0].0 == Verdict::Accepted {
            last = Some(s);
        }
    }
    assert!(blocks > 4 && blocks < 28, "{blocks} blocks of 32");
    if let Some(s) = last {
        // A duplicate of an accepted share that is not a block.
        let dup = Share {
            label: "duplicate",
            ..s
        };
        let verdicts = compare(&mut h, &[(dup, 0)], &[]);
        assert_eq!(verdicts[0].0, Verdict::Rejected("duplicate-share".into()));
    }

    // A block: the coinbase SRI returns is the one our block carries.
    let mut h = fresh();
    let network = h.works[0].network_target;
    let find_block = |h: &Harness, rng: &mut Rng| {
        let s = Share {
            label: "block",
            job: 0,
            extranonce: rng.bytes(h.extranonce_size),
            version: v,
            ntime: t,
            nonce: 0,
        };
        Share {
            nonce: (0..)
                .find(|&n| {
                    network.is_met_by(h.hash(&Share {
                        nonce: n,
                        ..s.clone()
                    }))
                })
                .unwrap(),
            ..s
        }
    };
    let s = find_block(&h, &mut rng);
    h.seq += 1;
    let msg = SubmitSharesExtended {
        channel_id: h.channel_id,
        sequence_number: h.seq,
        job_id: h.jobs[0].our_job_id,
        nonce: s.nonce,
        ntime: s.ntime,
        version: s.version,
        extranonce: B0_32::new(&s.extranonce).unwrap(),
    };
    h.session
        .handle_frame(&Frame::parse_exact(&frame(&msg)).unwrap(), NOW_MS)
        .unwrap();
    let _ = take_frames(&mut h.session);
    let ours = h
        .session
        .drain_events()
        .find_map(|e| match e {
            SessionEvent::BlockFound(b) => Some(b),
            _ => None,
        })
        .expect("our block");
    let sri_job_id = h.jobs[0].sri_job_id;
    let share = SubmitSharesExtendedOwned {
        channel_id: h.channel_id,
        sequence_number: h.seq,
        job_id: sri_job_id,
        nonce: s.nonce,
        ntime: s.ntime,
        version: s.version,
        extranonce: s.extranonce.clone().try_into().unwrap(),
    };
    match h.sri.validate_share(share) {
        Ok(ShareValidationResult::BlockFound(hash, template_id, coinbase)) => {
            assert_eq!(template_id, Some(1));
            assert_eq!(
                hash.to_byte_array(),
                ours.block.block_hash().to_byte_array()
            );
            assert_eq!(
                coinbase,
                bitcoin::consensus::serialize(&ours.block.txdata[0]),
                "coinbase with witness"
            );
        }
        other => panic!("SRI: {other:?}"),
    }

    // The solved tip: another block and a duplicate of the block, after the block.
    let again = Share {
        label: "after-our-block",
        ..find_block(&h, &mut rng)
    };
    let dup = Share {
        label: "after-our-block-duplicate",
        ..s
    };
    let stale = Verdict::Rejected("stale-share".into());
    let divergence = [
        ("after-our-block", stale.clone(), Verdict::Block),
        (
            "after-our-block-duplicate",
            stale.clone(),
            Verdict::Rejected("duplicate-share".into()),
        ),
    ];
    compare(&mut h, &[(again, 0), (dup, 0)], &divergence);
}

/// Standard channels: SRI builds the merkle root into the job; the roots must agree and so must
/// the verdicts.
#[test]
fn standard_share_verdicts_match_channels_sv2() {
    let mut chain = EmbeddedChain::new(ChainConfig {
        bits: HARD_BITS,
        synthetic_transactions: 40,
        block_interval_secs: 0,
    });
    let config = Arc::new(pool_config());
    let work = Work::new(1, chain.template(NOW_S), &config.coinbase).unwrap();
    let mut session = Session::new(config.clone(), Arc::new(ExtranonceAllocator::new()));
    session.on_work(&work, NOW_MS);
    setup(&mut session, REQUIRES_STANDARD_JOBS);
    let open = OpenStandardMiningChannel {
        request_id: 1,
        user_identity: Str0_255::new("bob.rig").unwrap(),
        nominal_hash_rate: 0.0,
        max_target: SHARE_TARGET,
    };
    session
        .handle_frame(&Frame::parse_exact(&frame(&open)).unwrap(), NOW_MS)
        .unwrap();
    let (mut channel_id, mut enp, mut job_id, mut root) = (0, vec![], 0, [0; 32]);
    for f in take_frames(&mut session) {
        match Frame::parse_exact(&f).unwrap().message().unwrap().0 {
            Message::OpenStandardMiningChannelSuccess(m) => {
                channel_id = m.channel_id;
                enp = m.extranonce_prefix.to_vec();
                assert_eq!(m.target, SHARE_TARGET);
            }
            Message::NewMiningJob(m) => {
                job_id = m.job_id;
                root = m.merkle_root;
            }
            Message::SetNewPrevHash(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(enp.len(), 32);
    let mut alloc = sri_allocator(&enp);
    let sri_prefix = alloc.allocate_standard().unwrap();
    assert_eq!(sri_prefix.as_bytes(), &enp[..]);
    let mut sri = StandardChannel::new_for_pool(
        channel_id,
        "bob.rig".into(),
        sri_prefix,
        Target::from_le_bytes([0xff; 32]),
        1.0,
        1,
        6.0,
        SRI_POOL_TAG.into(),
        None,
    )
    .unwrap();
    sri.set_target(Target::from_le_bytes(SHARE_TARGET)).unwrap();
    sri.on_new_template(sri_template(&work, 1, true), sri_payout(&work))
        .unwrap();
    sri.on_set_new_prev_hash(sri_prev_hash(&work, 1)).unwrap();
    let sri_job = sri.get_active_job().unwrap().clone();
    assert_eq!(sri_job.get_job_message().merkle_root.to_array(), root);
    let sri_job_id = sri_job.get_job_id();

    let header_hash = |version: u32, ntime: u32, nonce: u32| {
        let h = blvm_stratum_v2::mining::work::header_bytes(
            version,
            &work.prev_hash.to_byte_array(),
            &root,
            ntime,
            work.nbits,
            nonce,
        );
        BlockHash::from_byte_array(sha256d::Hash::hash(&h).to_byte_array())
    };
    let find = |version: u32, ntime: u32, start: u32, hit: bool| {
        (start..)
            .find(|&n| {
                Target::from_le_bytes(SHARE_TARGET).is_met_by(header_hash(version, ntime, n)) == hit
            })
            .unwrap()
    };
    let v = work.version;
    let t = NOW_S;
    let n0 = find(v, t, 0, true);
    // (label, job id offset, version, ntime, nonce)
    let cases: Vec<(&str, u32, u32, u32, u32)> = vec![
        ("valid", 0, v, t, n0),
        ("valid", 0, v, t + 5, find(v, t + 5, 1000, true)),
        (
            "valid-rolled",
            0,
            v ^ 0x0040_0000,
            t,
            find(v ^ 0x0040_0000, t, 0, true),
        ),
        ("duplicate", 0, v, t, n0),
        ("target-miss", 0, v, t, find(v, t, 0, false)),
        ("wrong-job-id", 1000, v, t, find(v, t, 5000, true)),
        ("ntime-before-min", 0, v, t - 1, find(v, t - 1, 0, true)),
        (
            "ntime-too-far-ahead",
            0,
            v,
            t + 7201,
            find(v, t + 7201, 0, true),
        ),
        (
            "non-rollable-version-bit",
            0,
            v ^ 1,
            t,
            find(v ^ 1, t, 0, true),
        ),
        (
            "bip323-only-version-bit",
            0,
            v ^ 0x20,
            t,
            find(v ^ 0x20, t, 0, true),
        ),
    ];
    let mut mismatches = Vec::new();
    for (seq, (label, offset, version, ntime, nonce)) in cases.into_iter().enumerate() {
        let msg = SubmitSharesStandard {
            channel_id,
            sequence_number: seq as u32,
            job_id: job_id + offset,
            nonce,
            ntime,
            version,
        };
        let (ours, theirs) = standard_verdicts(&mut session, &mut sri, &msg, sri_job_id + offset);
        if ours != theirs {
            mismatches.push(format!("{label}: ours {ours:?}, channels_sv2 {theirs:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "divergences:\n{}",
        mismatches.join("\n")
    );

    // Per-job target on a standard channel: a harder target after the job was sent holds for
    // the next job only, on both sides. The next job is on the same work, so it has the same
    // merkle root and the shares found above fit it.
    let msg = UpdateChannel {
        channel_id,
        nominal_hash_rate: 0.0,
        maximum_target: HARDER_TARGET,
    };
    session
        .handle_frame(&Frame::parse_exact(&frame(&msg)).unwrap(), NOW_MS)
        .unwrap();
    let _ = take_frames(&mut session);
    sri.update_channel(1.0, Some(Target::from_le_bytes(HARDER_TARGET)))
        .unwrap();
    session.on_work(&work, NOW_MS);
    let mut next_job_id = None;
    for f in take_frames(&mut session) {
        if let Message::NewMiningJob(m) = Frame::parse_exact(&f).unwrap().message().unwrap().0 {
            assert_eq!(m.merkle_root, root);
            next_job_id = Some(m.job_id);
        }
    }
    let next_job_id = next_job_id.expect("a job");
    sri.on_new_template(sri_template(&work, 2, false), sri_payout(&work))
        .unwrap();
    let sri_next = sri.get_active_job().unwrap().clone();
    assert_eq!(sri_next.get_job_message().merkle_root.to_array(), root);
    let sri_next_id = sri_next.get_job_id();
    let harder = Target::from_le_bytes(HARDER_TARGET);
    let mut seq = 100;
    for (n, start) in (0..3).map(|i| (i, 100_000 * (i + 1))) {
        // A hash that meets the channel's first target only: credited on the first job, too
        // low on the next; a hash that meets both: credited on either.
        let easy_only = (start..)
            .find(|&nonce| {
                let hash = header_hash(v, t + n, nonce);
                Target::from_le_bytes(SHARE_TARGET).is_met_by(hash) && !harder.is_met_by(hash)
            })
            .unwrap();
        let both = (start..)
            .find(|&nonce| harder.is_met_by(header_hash(v, t + n, nonce)))
            .unwrap();
        for (nonce, ours_job, sri_job, want) in [
            (easy_only, next_job_id, sri_next_id, "difficulty-too-low"),
            (easy_only, job_id, sri_job_id, "accepted"),
            (both, next_job_id, sri_next_id, "accepted"),
        ] {
            seq += 1;
            let msg = SubmitSharesStandard {
                channel_id,
                sequence_number: seq,
                job_id: ours_job,
                nonce,
                ntime: t + n,
                version: v,
            };
            let (ours, theirs) = standard_verdicts(&mut session, &mut sri, &msg, sri_job);
            assert_eq!(ours, theirs, "nonce {nonce} on job {ours_job}");
            let want = match want {
                "accepted" => Verdict::Accepted,
                code => Verdict::Rejected(code.into()),
            };
            assert_eq!(ours, want, "nonce {nonce} on job {ours_job}");
        }
    }
}

/// Both verdicts for one standard share (SRI's under `sri_job_id`), with the same credit where
/// both accept.
fn standard_verdicts(
    session: &mut Session,
    sri: &mut StandardChannel,
    msg: &SubmitSharesStandard,
    sri_job_id: u32,
) -> (Verdict, Verdict) {
    session
        .handle_frame(&Frame::parse_exact(&frame(msg)).unwrap(), NOW_MS)
        .unwrap();
    let frames = take_frames(session);
    let credit = session.drain_events().find_map(|e| match e {
        SessionEvent::ShareAccepted { difficulty, .. } => Some(difficulty),
        _ => None,
    });
    assert_eq!(frames.len(), 1, "one answer per share");
    let ours = normalize_ours(
        match Frame::parse_exact(&frames[0]).unwrap().message().unwrap().0 {
            Message::SubmitSharesSuccess(_) => Verdict::Accepted,
            Message::SubmitSharesError(e) => Verdict::Rejected(e.error_code.to_string()),
            other => panic!("{other:?}"),
        },
    );
    let before = sri.get_share_accounting().get_share_work_sum();
    let theirs = sri_verdict(sri.validate_share(SubmitSharesStandardOwned {
        channel_id: msg.channel_id,
        sequence_number: msg.sequence_number,
        job_id: sri_job_id,
        nonce: msg.nonce,
        ntime: msg.ntime,
        version: msg.version,
    }));
    if ours == Verdict::Accepted && theirs == Verdict::Accepted {
        let credit = credit.expect("credited");
        let sri_credit = sri.get_share_accounting().get_share_work_sum() - before;
        assert!(
            (credit - sri_credit).abs() <= 1e-9 * credit,
            "credited {credit} by us, {sri_credit} by channels_sv2"
        );
    }
    (ours, theirs)
}

/// A target four times harder than [`SHARE_TARGET`] (one hash in 1,024 meets it).
const HARDER_TARGET: U256 = {
    let mut t = [0xff; 32];
    t[31] = 0;
    t[30] = 0x3f;
    t
};

/// A share on `job` of `h` whose hash meets [`SHARE_TARGET`] and meets [`HARDER_TARGET`] or not
/// (`harder`).
fn share_between_targets(
    h: &Harness,
    rng: &mut Rng,
    job: usize,
    label: &'static str,
    harder: bool,
) -> Share {
    let (easy, hard) = (
        Target::from_le_bytes(SHARE_TARGET),
        Target::from_le_bytes(HARDER_TARGET),
    );
    let s = Share {
        label,
        job,
        extranonce: rng.bytes(h.extranonce_size),
        version: h.jobs[job].version,
        ntime: h.jobs[job].min_ntime + (rng.next() % 60) as u32,
        nonce: 0,
    };
    h.nonce_where(s, rng.next() as u32 >> 8, |hash| {
        easy.is_met_by(hash) && hard.is_met_by(hash) == harder
    })
}

/// Per-job target (05 §5.3.21): a new target applies to the jobs sent after it. SRI keeps a
/// target per job id (`job_id_to_target`, set when the job becomes active, untouched by
/// `set_target` / `update_channel`), so the rule is the same on both sides, in both
/// directions, and so is the credit (each share at its job's target's difficulty; `compare`
/// checks it share by share). No divergence.
#[test]
fn per_job_target_matches_channels_sv2() {
    let mut h = Harness::new(HARD_BITS, 40);
    let mut rng = Rng(0x7a96_e7a5);
    let accepted = Verdict::Accepted;
    let too_low = Verdict::Rejected("difficulty-too-low".into());
    let expect = |h: &mut Harness, cases: &[(Share, u32)], expected: &[(&str, Verdict)]| {
        let verdicts = compare(h, cases, &[]);
        for ((s, _), (ours, _)) in cases.iter().zip(&verdicts) {
            let want = &expected.iter().find(|(l, _)| *l == s.label).unwrap().1;
            assert_eq!(ours, want, "{s:?}");
        }
    };

    // The target gets harder after job 0 was sent: job 0 keeps its target on both sides.
    h.update_channel(HARDER_TARGET);
    let mut cases = Vec::new();
    for _ in 0..4 {
        cases.push((
            share_between_targets(&h, &mut rng, 0, "earlier-job", false),
            0,
        ));
        cases.push((
            share_between_targets(&h, &mut rng, 0, "earlier-job-hard", true),
            0,
        ));
    }
    expect(
        &mut h,
        &cases,
        &[
            ("earlier-job", accepted.clone()),
            ("earlier-job-hard", accepted.clone()),
        ],
    );

    // A job sent after the change is held to the new target; the earlier one to its own.
    let hard_job = h.same_tip_job();
    let mut cases = Vec::new();
    for _ in 0..3 {
        cases.push((
            share_between_targets(&h, &mut rng, hard_job, "later-job", false),
            0,
        ));
        cases.push((
            share_between_targets(&h, &mut rng, hard_job, "later-job-hard", true),
            0,
        ));
        cases.push((
            share_between_targets(&h, &mut rng, 0, "earlier-job-after-later", false),
            0,
        ));
    }
    expect(
        &mut h,
        &cases,
        &[
            ("later-job", too_low.clone()),
            ("later-job-hard", accepted.clone()),
            ("earlier-job-after-later", accepted.clone()),
        ],
    );

    // Target shopping: the target eases back after the hard job; a share found at the easy
    // target is still refused on the hard job, on both sides. The job after gets the easy one.
    h.update_channel(SHARE_TARGET);
    let mut cases = Vec::new();
    for _ in 0..3 {
        cases.push((
            share_between_targets(&h, &mut rng, hard_job, "hard-job-after-easing", false),
            0,
        ));
        cases.push((
            share_between_targets(&h, &mut rng, hard_job, "hard-job-hard", true),
            0,
        ));
    }
    let easy_job = h.same_tip_job();
    for _ in 0..3 {
        cases.push((
            share_between_targets(&h, &mut rng, easy_job, "eased-job", false),
            0,
        ));
    }
    expect(
        &mut h,
        &cases,
        &[
            ("hard-job-after-easing", too_low.clone()),
            ("hard-job-hard", accepted.clone()),
            ("eased-job", accepted.clone()),
        ],
    );

    // Credit: 4 + 4 + 3 + 3 easy shares at the easy difficulty, 3 + 3 at four times it.
    let easy = Target::from_le_bytes(SHARE_TARGET).difficulty_float();
    let hard = Target::from_le_bytes(HARDER_TARGET).difficulty_float();
    assert!((hard / easy - 4.0).abs() < 1e-6);
    let ours = h.session.channels()[0].stats.difficulty_sum;
    let theirs = h.sri.get_share_accounting().get_share_work_sum();
    let expected = 14.0 * easy + 6.0 * hard;
    assert!(
        (ours - expected).abs() <= 1e-9 * expected,
        "{ours} vs {expected}"
    );
    assert!(
        (theirs - expected).abs() <= 1e-9 * expected,
        "{theirs} vs {expected}"
    );
}

/// Duplicates on a tip. SRI keeps every accepted hash of a tip in one set, across all jobs,
/// bounded by a budget (`seen_shares_budget`: 7,200 hashes at 6 shares a minute; once full,
/// every share is refused with `SeenSharesBudgetExhausted` and the channel must be closed).
/// Ours keeps one exact set per credit window (`credit_window_shares`, 448: a window ends at
/// 392 accepted shares, and the channel gets a new job on the same work whose nTime starts
/// past every accepted one); the ended window's jobs earn credit `RETIRED_JOBS_GRACE_MS` more
/// (their duplicates still checked), then only make blocks.
///
/// So both refuse every duplicate, on the same job or under another job id of the same work,
/// after 900 accepted shares as after one. Documented differences, each a share both refuse
/// or one only SRI credits:
/// - `replay-on-new-job`: an old header on a new window's job is `ntime-too-old` for us (the
///   job starts past it), `duplicate-share` for SRI.
/// - `replay-two-windows-back`, `replay-after-grace`: a duplicate on a job that no longer earns
///   credit is `stale-share` for us, `duplicate-share` for SRI.
/// - `fresh-on-ended-window`: a new share on a job replaced by a new window's job more than
///   `RETIRED_JOBS_GRACE_MS` ago is `stale-share` for us; SRI credits it (it credits any job
///   of the tip among its last 17). Ours is the rule for a pool that pays: the miner had the
///   replacing job (same work, same target) for 10 s, so no honest share in flight is lost,
///   a block still counts, and the duplicate memory stays within two sets of 448 fingerprints
///   per channel (~9 KiB) however long the tip lasts, where SRI's set grows with the tip and
///   ends in a closed channel.
/// - `replay-on-returned-tip`: a tip that comes back (after another tip) with the same work:
///   SRI empties its set on every prev-hash change, so it credits an old header again on the
///   returned tip's job; ours starts that job past every nTime accepted on the tip before
///   (`ntime-too-old`). A header is credited once (issue #13: a tip that comes back does not
///   reopen its old jobs with empty duplicate sets); SRI pays the same work twice.
#[test]
fn duplicates_on_a_tip_match_channels_sv2() {
    let duplicate = Verdict::Rejected("duplicate-share".into());
    let stale = Verdict::Rejected("stale-share".into());
    let mut rng = Rng(0xd0b1_1ca7);

    // The same header under two job ids of the same work (identical coinbase and merkle path).
    let mut h = Harness::new(HARD_BITS, 40);
    let other = h.same_work_job();
    assert_eq!(h.jobs[0].prefix, h.jobs[other].prefix);
    assert_eq!(h.jobs[0].suffix, h.jobs[other].suffix);
    assert_eq!(h.jobs[0].path, h.jobs[other].path);
    let mut cases = Vec::new();
    for (first, second) in [(0, other), (other, 0)] {
        let s = Share {
            label: "first",
            job: first,
            extranonce: rng.bytes(h.extranonce_size),
            version: h.jobs[first].version,
            ntime: NOW_S,
            nonce: 0,
        };
        let s = h.nonce(s, 0, true);
        let again = Share {
            label: "same-header-other-job",
            job: second,
            ..s.clone()
        };
        assert_eq!(h.hash(&s), h.hash(&again));
        cases.push((s, 0));
        cases.push((again, 0));
    }
    let verdicts = compare(&mut h, &cases, &[]);
    let ours: Vec<_> = verdicts.into_iter().map(|(o, _)| o).collect();
    assert_eq!(
        ours,
        [
            Verdict::Accepted,
            duplicate.clone(),
            Verdict::Accepted,
            duplicate.clone()
        ]
    );

    // 900 honest shares (more than the 897 the replay needed), each on the newest job
    // our session sent: its credit window restarts twice.
    let mut h = Harness::new(HARD_BITS, 40);
    let (cap, config_window) = (
        h.config.credit_window_shares,
        h.config.credit_window_shares - h.config.credit_window_shares / 8,
    );
    assert_eq!((cap, config_window), (448, 392));
    let mut windows = vec![0];
    let mut accepted: Vec<(Share, usize)> = Vec::new();
    for i in 0..900 {
        let job = *windows.last().unwrap();
        let s = Share {
            label: "honest",
            job,
            extranonce: rng.bytes(h.extranonce_size),
            version: h.jobs[job].version,
            ntime: h.jobs[job].min_ntime,
            nonce: 0,
        };
        let s = h.nonce(s, 0, true);
        assert_eq!(
            compare(&mut h, &[(s.clone(), 0)], &[])[0].0,
            Verdict::Accepted
        );
        accepted.push((s, windows.len() - 1));
        if let Some(next) = h.follow_announced_jobs() {
            assert_eq!(
                (i + 1) % config_window,
                0,
                "a window ends at {config_window} shares"
            );
            assert_eq!(h.jobs[next].min_ntime, h.jobs[job].min_ntime + 1);
            windows.push(next);
        }
    }
    assert_eq!(windows.len(), 3);
    let newest = *windows.last().unwrap();

    // Every one of them replayed on its own job: refused on both sides.
    let mut cases = Vec::new();
    for (s, window) in &accepted {
        let label = match window {
            0 => "replay-two-windows-back",
            1 => "replay-previous-window",
            _ => "replay-current-window",
        };
        cases.push((Share { label, ..s.clone() }, 0));
    }
    // Old headers on the newest job (same work, so the same header and hash).
    for i in [0, config_window + 8] {
        let s = Share {
            label: "replay-on-new-job",
            job: newest,
            ..accepted[i].0.clone()
        };
        assert_eq!(h.hash(&s), h.hash(&accepted[i].0));
        cases.push((s, 0));
    }
    // A share on the previous window's job (in its grace) at the newest job's nTime, then the
    // same header on the newest job: the second is a duplicate on both sides.
    let prev_job = windows[1];
    let s = Share {
        label: "in-grace-at-new-ntime",
        job: prev_job,
        extranonce: rng.bytes(h.extranonce_size),
        version: h.jobs[prev_job].version,
        ntime: h.jobs[newest].min_ntime,
        nonce: 0,
    };
    let s = h.nonce(s, 0, true);
    cases.push((s.clone(), 0));
    cases.push((
        Share {
            label: "same-header-on-new-job",
            job: newest,
            ..s
        },
        0,
    ));
    // And the other way round: first on the newest job, then on the job in its grace.
    let s = Share {
        label: "new-job",
        job: newest,
        extranonce: rng.bytes(h.extranonce_size),
        version: h.jobs[newest].version,
        ntime: h.jobs[newest].min_ntime,
        nonce: 0,
    };
    let s = h.nonce(s, 0, true);
    cases.push((s.clone(), 0));
    cases.push((
        Share {
            label: "same-header-on-job-in-grace",
            job: prev_job,
            ..s
        },
        0,
    ));
    let divergence = [
        ("replay-two-windows-back", stale.clone(), duplicate.clone()),
        (
            "replay-on-new-job",
            Verdict::Rejected("invalid-share".into()),
            duplicate.clone(),
        ),
    ];
    let verdicts = compare(&mut h, &cases, &divergence);
    for ((s, _), (ours, _)) in cases.iter().zip(&verdicts) {
        let want = match s.label {
            "replay-two-windows-back" => stale.clone(),
            "replay-on-new-job" => Verdict::Rejected("invalid-share".into()),
            "in-grace-at-new-ntime" | "new-job" => Verdict::Accepted,
            _ => duplicate.clone(),
        };
        assert_eq!(*ours, want, "{s:?}");
    }

    // Credit: 902 shares at the channel's difficulty on both sides, nothing for a replay.
    let d = Target::from_le_bytes(SHARE_TARGET).difficulty_float();
    let ours = h.session.channels()[0].stats.difficulty_sum;
    let theirs = h.sri.get_share_accounting().get_share_work_sum();
    for credit in [ours, theirs] {
        assert!((credit - 902.0 * d).abs() <= 1e-9 * credit, "{credit}");
    }

    // Past the previous window's grace: its jobs no longer earn credit with us.
    h.now_ms = NOW_MS + RETIRED_JOBS_GRACE_MS + 1000;
    let mut cases = vec![(
        Share {
            label: "replay-after-grace",
            ..accepted[config_window + 8].0.clone()
        },
        0,
    )];
    for job in [0, prev_job] {
        let s = Share {
            label: "fresh-on-ended-window",
            job,
            extranonce: rng.bytes(h.extranonce_size),
            version: h.jobs[job].version,
            ntime: h.jobs[job].min_ntime,
            nonce: 0,
        };
        cases.push((h.nonce(s, 0, true), 0));
    }
    cases.push((
        Share {
            label: "replay-current-window",
            ..accepted[899].0.clone()
        },
        0,
    ));
    let divergence = [
        ("replay-after-grace", stale.clone(), duplicate.clone()),
        ("fresh-on-ended-window", stale.clone(), Verdict::Accepted),
    ];
    let verdicts = compare(&mut h, &cases, &divergence);
    assert_eq!(verdicts[3].0, duplicate);

    // A tip that comes back with the same work (so the same headers).
    let mut h = Harness::new(HARD_BITS, 40);
    let mut first = Vec::new();
    for i in 0..4 {
        let s = Share {
            label: "first-time",
            job: 0,
            extranonce: rng.bytes(h.extranonce_size),
            version: h.jobs[0].version,
            ntime: NOW_S + 10 * i,
            nonce: 0,
        };
        first.push((h.nonce(s, 0, true), 0));
    }
    for (ours, _) in compare(&mut h, &first, &[]) {
        assert_eq!(ours, Verdict::Accepted);
    }
    let work = h.works[0].clone();
    let back = h.return_to(work);
    assert_eq!(
        h.jobs[back].min_ntime,
        NOW_S + 31,
        "past every accepted nTime"
    );
    let mut cases = Vec::new();
    for (s, _) in &first {
        let again = Share {
            label: "replay-on-returned-tip",
            job: back,
            ..s.clone()
        };
        assert_eq!(h.hash(&again), h.hash(s));
        cases.push((again, 0));
    }
    let s = Share {
        label: "fresh-on-returned-tip",
        job: back,
        extranonce: rng.bytes(h.extranonce_size),
        version: h.jobs[back].version,
        ntime: h.jobs[back].min_ntime,
        nonce: 0,
    };
    cases.push((h.nonce(s, 0, true), 0));
    // The old job id, from the tip's first time, two tips back: refused on both sides, as
    // `stale-share` by us (our job ids are a connection-wide sequence, so any id below the
    // tip's first was a job of an earlier tip) and `invalid-job-id` by SRI (it keeps the jobs
    // of one tip back as stale, forgets older ones).
    cases.push((
        Share {
            label: "old-job-of-returned-tip",
            ..first[0].0.clone()
        },
        0,
    ));
    let divergence = [
        (
            "replay-on-returned-tip",
            Verdict::Rejected("invalid-share".into()),
            Verdict::Accepted,
        ),
        (
            "old-job-of-returned-tip",
            stale.clone(),
            Verdict::Rejected("invalid-job-id".into()),
        ),
    ];
    let verdicts = compare(&mut h, &cases, &divergence);
    assert_eq!(verdicts[4].0, Verdict::Accepted);
    assert_eq!(verdicts[5].0, stale);
}

/// Old jobs of a tip. SRI keeps the active job and `MAX_PAST_JOBS` (16) past jobs per channel
/// and answers `invalid-job-id` for an older one, even when the share is a block; we credit the
/// newest `max_jobs` (10) jobs and keep every older job of the tip for blocks only
/// (`stale-share` otherwise). Documented differences:
/// - `beyond-max-jobs`: a share on a job 11 to 17 jobs back is `stale-share` for us, credited
///   by SRI: our bound on jobs that earn credit is ours to choose (memory per job), and a miner
///   is sent each new job at once.
/// - `beyond-sri-past-jobs`: further back, `stale-share` for us (the job is of this tip; it is
///   not unknown), `invalid-job-id` for SRI.
/// - `block-beyond-sri-past-jobs`: a block on such a job is a block for us and refused by SRI.
///   A block on the current tip is the pool's reward, whatever job it came from (issue #13).
#[test]
fn old_jobs_of_a_tip_match_channels_sv2() {
    let max_jobs = pool_config().max_jobs;
    assert_eq!(max_jobs, 10);
    let stale = Verdict::Rejected("stale-share".into());
    let mut rng = Rng(0x0001_d0b5);
    let share = |h: &Harness, rng: &mut Rng, job: usize, label: &'static str| {
        let s = Share {
            label,
            job,
            extranonce: rng.bytes(h.extranonce_size),
            version: h.jobs[job].version,
            ntime: NOW_S + (rng.next() % 60) as u32,
            nonce: 0,
        };
        h.nonce(s, 0, true)
    };

    // 18 jobs on one tip: we credit jobs 8 to 17; SRI keeps jobs 1 to 17.
    let mut h = Harness::new(HARD_BITS, 40);
    for _ in 0..17 {
        h.same_tip_job();
    }
    let cases = vec![
        (share(&h, &mut rng, 17, "newest"), 0),
        (share(&h, &mut rng, 18 - max_jobs, "oldest-credited"), 0),
        (share(&h, &mut rng, 17 - max_jobs, "beyond-max-jobs"), 0),
        (share(&h, &mut rng, 1, "beyond-max-jobs"), 0),
        (share(&h, &mut rng, 0, "beyond-sri-past-jobs"), 0),
    ];
    let divergence = [
        ("beyond-max-jobs", stale.clone(), Verdict::Accepted),
        (
            "beyond-sri-past-jobs",
            stale.clone(),
            Verdict::Rejected("invalid-job-id".into()),
        ),
    ];
    let verdicts = compare(&mut h, &cases, &divergence);
    assert_eq!(verdicts[0].0, Verdict::Accepted);
    assert_eq!(verdicts[1].0, Verdict::Accepted);

    // Blocks on old jobs (regtest: about every other hash is one). A harness per block: after
    // a block our session answers the solved tip `stale-share` (see the block test).
    for (job, label) in [
        (1, "block-beyond-max-jobs"),
        (0, "block-beyond-sri-past-jobs"),
    ] {
        let mut h = Harness::new(REGTEST_BITS, 7);
        for _ in 0..17 {
            h.same_tip_job();
        }
        let network = h.works[job].network_target;
        let s = Share {
            label,
            job,
            extranonce: rng.bytes(h.extranonce_size),
            version: h.jobs[job].version,
            ntime: NOW_S,
            nonce: 0,
        };
        let s = h.nonce_where(s, 0, |hash| network.is_met_by(hash));
        let divergence = [(
            "block-beyond-sri-past-jobs",
            Verdict::Block,
            Verdict::Rejected("invalid-job-id".into()),
        )];
        let verdicts = compare(&mut h, &[(s, 0)], &divergence);
        assert_eq!(verdicts[0].0, Verdict::Block, "{label}");
    }
}

/// A vardiff retarget is a target change like any other: it applies to the job that follows
/// it (SRI: `set_target`, then the new job takes the channel's target). A miner that hoards
/// shares found on the earlier job until vardiff raises the target gets them credited at the
/// earlier job's target on both sides, and the new job is held to the new target.
#[test]
fn vardiff_retarget_applies_to_later_jobs_like_channels_sv2() {
    let mut h = Harness::new(HARD_BITS, 40);
    let mut rng = Rng(0x0a2d_1ff5);
    let easy = Target::from_le_bytes(SHARE_TARGET);
    // Shares one second after the channel opened: far above 18 a minute, so vardiff raises
    // the target after its minimum burst.
    h.now_ms = NOW_MS + 1000;
    let mut hoarded = Vec::new();
    let mut new_job = None;
    for _ in 0..32 {
        let s = Share {
            label: "burst",
            job: 0,
            extranonce: rng.bytes(h.extranonce_size),
            version: h.jobs[0].version,
            ntime: NOW_S,
            nonce: 0,
        };
        let s = h.nonce(s, 0, true);
        if new_job.is_none() {
            assert_eq!(compare(&mut h, &[(s, 0)], &[])[0].0, Verdict::Accepted);
            new_job = h.follow_announced_jobs();
        } else {
            hoarded.push((
                Share {
                    label: "hoarded",
                    ..s
                },
                0,
            ));
        }
    }
    let new_job = new_job.expect("vardiff raised the target");
    let raised = *h.sri.get_target();
    assert!(raised < easy, "harder than the share target");
    assert_eq!(h.session.channels()[0].target, raised);

    // The hoarded shares, sent after the retarget, on the earlier job: credited at its target.
    let mut cases = hoarded;
    // On the new job: a hash between the two targets is too low; one below both is a share.
    for (label, raised_too) in [("new-job-easy-only", false), ("new-job-raised", true)] {
        for _ in 0..3 {
            let s = Share {
                label,
                job: new_job,
                extranonce: rng.bytes(h.extranonce_size),
                version: h.jobs[new_job].version,
                ntime: h.jobs[new_job].min_ntime,
                nonce: 0,
            };
            let s = h.nonce_where(s, 0, |hash| {
                easy.is_met_by(hash) && raised.is_met_by(hash) == raised_too
            });
            cases.push((s, 0));
        }
    }
    let verdicts = compare(&mut h, &cases, &[]);
    for ((s, _), (ours, _)) in cases.iter().zip(&verdicts) {
        let want = match s.label {
            "new-job-easy-only" => Verdict::Rejected("difficulty-too-low".into()),
            _ => Verdict::Accepted,
        };
        assert_eq!(*ours, want, "{s:?}");
    }
    let ours = h.session.channels()[0].stats.difficulty_sum;
    let theirs = h.sri.get_share_accounting().get_share_work_sum();
    let expected = 32.0 * easy.difficulty_float() + 3.0 * raised.difficulty_float();
    for credit in [ours, theirs] {
        assert!(
            (credit - expected).abs() <= 1e-9 * expected,
            "{credit} vs {expected}"
        );
    }
}

/// A later template on the same tip: our job's min_ntime is the template's time (the job says
/// so to the miner, 05 §5.3.16), where every SRI job of a tip carries the tip's min_ntime (a
/// Template Distribution NewTemplate has no time). Documented difference
/// (`ntime-below-job-min`): a share on that job with an nTime between the tip's and the job's
/// min_ntime is `ntime-too-old` for us, valid for SRI. Ours holds the miner to the min_ntime
/// of the job it was sent, which a miner that follows the job never goes below.
#[test]
fn later_template_on_a_tip_matches_channels_sv2() {
    let mut h = Harness::new(HARD_BITS, 40);
    let mut rng = Rng(0x1a7e_0001);
    let later = h.same_tip_job_at(NOW_S + 30);
    let mut cases = Vec::new();
    for (label, job, ntime) in [
        ("ntime-below-job-min", later, NOW_S + 29),
        ("at-job-min", later, NOW_S + 30),
        ("earlier-job", 0, NOW_S + 29),
    ] {
        let s = Share {
            label,
            job,
            extranonce: rng.bytes(h.extranonce_size),
            version: h.jobs[job].version,
            ntime,
            nonce: 0,
        };
        cases.push((h.nonce(s, 0, true), 0));
    }
    let divergence = [(
        "ntime-below-job-min",
        Verdict::Rejected("invalid-share".into()),
        Verdict::Accepted,
    )];
    let verdicts = compare(&mut h, &cases, &divergence);
    assert_eq!(verdicts[1].0, Verdict::Accepted);
    assert_eq!(verdicts[2].0, Verdict::Accepted);
}

/// A job keeps its target however many target changes follow it while it earns credit. A
/// client that alternates its maximum target with UpdateChannel before each new job, with
/// `max_jobs` at 32, once made a channel drop its oldest target epochs (a fixed cap of 16) while
/// their jobs still earned credit: job 2, sent at the easy target, was then credited at the hard
/// one, four times what SRI credits. Epochs are now dropped only when no credited job uses
/// them, like SRI, which keeps each job's target as long as the job.
#[test]
fn job_target_survives_many_target_changes() {
    // Room for every job: each UpdateChannel here also brings a job of ours (not SRI's).
    let config = MiningConfig {
        max_jobs: 64,
        ..pool_config()
    };
    let mut h = Harness::with_config(HARD_BITS, 40, config);
    let mut rng = Rng(0xe90c_5001);
    // Jobs 1, 3, 5, ... at the hard target, 2, 4, 6, ... at the easy one: 19 epochs in all.
    for k in 0..18 {
        h.update_channel(if k % 2 == 0 {
            HARDER_TARGET
        } else {
            SHARE_TARGET
        });
        h.same_tip_job();
    }
    let mut cases = Vec::new();
    // Jobs 2 and 3 (SRI keeps the active job and the last 16 past jobs of a tip: 2 to 18). With
    // a fixed cap of 16 epochs, those of jobs 0 to 2 were gone and job 2 took job 3's target.
    for _ in 0..3 {
        // Job 3 was sent at the hard target: an easy-only share is too low on both sides.
        cases.push((share_between_targets(&h, &mut rng, 3, "hard-job", false), 0));
        // Job 2 was sent at the easy target: a hard share is credited at the easy difficulty.
        cases.push((share_between_targets(&h, &mut rng, 2, "easy-job", true), 0));
    }
    compare(&mut h, &cases, &[]);
}
