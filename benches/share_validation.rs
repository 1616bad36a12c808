//! Share validation, ours beside SRI's channels_sv2 in one run, on the same job, plus the
//! hashing no validator can avoid.
//!
//! The job: an `EmbeddedChain` template with 3000 synthetic transactions (a 12-level merkle path,
//! and witness data, so the coinbase has a witness-commitment output), a P2TR payout and the
//! longest pool tag SRI's scriptSig budget allows with a 32-byte extranonce: a 235-byte
//! coinbase (non-witness serialization). SRI's channel is fed the equivalent `NewTemplate` +
//! `SetNewPrevHash`, so both validate the very same coinbase, merkle path and header (the
//! differential test `tests/mining_vs_channels_sv2.rs` checks that the two build the same job).
//! Every share is accepted: channel target all ones (ours: `min_difficulty` tiny, nominal
//! hashrate 0, `max_target` all ones; SRI: `set_target`), a network target no share meets, and
//! a fresh nonce per share so none is a duplicate.
//!
//! - `extended/ours`, `standard/ours`: `Session::handle_frame` on a pre-encoded
//!   SubmitSharesExtended / SubmitSharesStandard frame whose nonce is patched in place, then the
//!   caller's chores (clear `output()`, drain the events). Frame parsing and message decoding
//!   are included; the SubmitShares.Success is encoded.
//! - `extended/channels_sv2`, `standard/channels_sv2`: `validate_share` on an owned share
//!   built outside the timing (decoding is not included). SRI keeps every accepted share's hash
//!   until the tip changes (up to a budget, then it refuses shares); the channel is rebuilt,
//!   untimed, every 65 536 shares, the size of our duplicate window, so both sides keep the
//!   same number of remembered shares.
//! - `baseline/extended_unavoidable`: coinbase txid from a cached SHA-256 midstate of the
//!   coinbase prefix (extranonce and suffix hashed per share), twelve merkle levels, header
//!   sha256d: what any validator of this job must hash.
//! - `baseline/sha256d_80`: sha256d of an 80-byte header alone (the standard channel's
//!   unavoidable work).
//!
//! After criterion's figures (wall time, one benchmark after the other), an interleaved summary
//! (workloads taking turns in 50 ms rounds timed with the thread's CPU clock) prints the mean ns
//! per share and the ratios: on a shared machine it is the steadier comparison.
//!
//! Run: `cargo bench --bench share_validation -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bitcoin::consensus::Encodable;
use bitcoin::hashes::{Hash, HashEngine, sha256, sha256d};
use bitcoin::{Target, TxOut};
use blvm_stratum_v2::mining::work::header_bytes;
use blvm_stratum_v2::mining::{
    CoinbaseConfig, ExtranonceAllocator, MiningConfig, Session, SessionEvent, Work,
};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain};
use blvm_stratum_v2::wire::common::SetupConnection;
use blvm_stratum_v2::wire::mining::*;
use blvm_stratum_v2::wire::{B0_32, Frame, Message, Str0_255, Sv2Message, encode_frame};
use channels_sv2::extranonce_manager::ExtranonceAllocator as SriAllocator;
use channels_sv2::server::extended::ExtendedChannel;
use channels_sv2::server::standard::StandardChannel;
use criterion::{Criterion, criterion_group, criterion_main};
use mining_sv2::{SubmitSharesExtendedOwned, SubmitSharesStandardOwned};
use template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};

const NOW_S: u32 = 1_800_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;
const HARD_BITS: u32 = 0x1d00_ffff;
const SYNTHETIC_TRANSACTIONS: usize = 3000;
const MERKLE_LEVELS: usize = 12;
/// 52 characters: the longest tag SRI accepts with a 32-byte extranonce (its scriptSig budget
/// assumes an 8-byte template coinbase prefix).
const SRI_POOL_TAG: &str = "blvm-stratum-v2/share-validation-benchmark/pool-tag!";
/// Shares SRI remembers before its channel is rebuilt: our default duplicate window.
const SRI_WINDOW: u64 = 1 << 16;
/// Shares built per untimed batch for SRI.
const CHUNK: u64 = 4096;
const NONCE_MARK: u32 = 0xa5c3_7e19;

/// Which clock the workloads read: wall time for criterion, this thread's CPU time for the
/// interleaved summary (time spent descheduled by other processes' load is not counted).
static CPU_CLOCK: AtomicBool = AtomicBool::new(false);

fn now() -> Duration {
    if CPU_CLOCK.load(Ordering::Relaxed)
        && let Some(t) = thread_cpu_time()
    {
        return t;
    }
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_time() -> Option<Duration> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec (two 64-bit fields on 64-bit Linux) and the
    // clock id is Linux's CLOCK_THREAD_CPUTIME_ID.
    let r = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (r == 0).then(|| Duration::new(ts.sec as u64, ts.nsec as u32))
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

fn frame<'a, M: Sv2Message<'a>>(m: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(m, &mut out).expect("encodable");
    out
}

fn pool_config() -> MiningConfig {
    MiningConfig {
        coinbase: CoinbaseConfig {
            // P2TR payout.
            payout_script: bitcoin::ScriptBuf::from_hex(
                "5120a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c",
            )
            .unwrap(),
            pool_tag: format!("Sv2/{SRI_POOL_TAG}//").into_bytes(),
            extranonce_len: 32,
        },
        min_difficulty: 1e-30,
        share_batch_size: 1,
        server_id: 0xbeef,
        // Shares go in far faster than any miner's (all at one fake time): the share rate
        // limit, which would refuse them, is not what is measured here.
        share_rate_multiple: 1e9,
        // Every share on one job, millions of them: one credit window for the whole run (with
        // the default, the window's end retires the job and the shares turn stale).
        credit_window_shares: 1 << 30,
        ..MiningConfig::default()
    }
}

fn work() -> Arc<Work> {
    let mut chain = EmbeddedChain::new(ChainConfig {
        bits: HARD_BITS,
        synthetic_transactions: SYNTHETIC_TRANSACTIONS,
        block_interval_secs: 0,
    });
    let work = Work::new(1, chain.template(NOW_S), &pool_config().coinbase).unwrap();
    assert_eq!(work.merkle_path.len(), MERKLE_LEVELS);
    assert_eq!(
        work.coinbase.tx.output.len(),
        2,
        "payout and witness commitment"
    );
    work
}

/// A ready session (after SetupConnection with `flags`) on `work`.
fn session(work: &Arc<Work>, flags: u32) -> Session {
    let mut s = Session::new(
        Arc::new(pool_config()),
        Arc::new(ExtranonceAllocator::new()),
    );
    s.on_work(work, NOW_MS);
    let setup = SetupConnection {
        protocol: 0,
        min_version: 2,
        max_version: 2,
        flags,
        endpoint_host: Str0_255::new("127.0.0.1").unwrap(),
        endpoint_port: 3333,
        vendor: Str0_255::new("bench").unwrap(),
        hardware_version: Str0_255::default(),
        firmware: Str0_255::default(),
        device_id: Str0_255::default(),
    };
    s.handle_frame(&Frame::parse_exact(&frame(&setup)).unwrap(), NOW_MS)
        .unwrap();
    s
}

/// (channel id, job id, extranonce prefix, extranonce size) from the opening frames.
fn opened(s: &mut Session) -> (u32, u32, Vec<u8>, usize) {
    let out = std::mem::take(s.output());
    let _ = s.drain_events().count();
    let (mut channel, mut job, mut prefix, mut size) = (0, 0, vec![], 0);
    let mut rest = &out[..];
    while let Some((f, used)) = Frame::parse(rest, 1 << 24).unwrap() {
        match f.message().unwrap().0 {
            Message::OpenExtendedMiningChannelSuccess(m) => {
                channel = m.channel_id;
                prefix = m.extranonce_prefix.to_vec();
                size = usize::from(m.extranonce_size);
                assert_eq!(m.target, [0xff; 32]);
            }
            Message::OpenStandardMiningChannelSuccess(m) => {
                channel = m.channel_id;
                prefix = m.extranonce_prefix.to_vec();
                assert_eq!(m.target, [0xff; 32]);
            }
            Message::NewExtendedMiningJob(m) => job = m.job_id,
            Message::NewMiningJob(m) => job = m.job_id,
            _ => {}
        }
        rest = &rest[used..];
    }
    (channel, job, prefix, size)
}

/// A pre-encoded share frame; the nonce is patched per share.
struct OurShare {
    session: Session,
    bytes: Vec<u8>,
    nonce_at: usize,
    nonce: u32,
}

impl OurShare {
    fn new(session: Session, bytes: Vec<u8>) -> Self {
        let nonce_at = bytes
            .windows(4)
            .position(|w| w == NONCE_MARK.to_le_bytes())
            .unwrap();
        OurShare {
            session,
            bytes,
            nonce_at,
            nonce: 0,
        }
    }

    #[inline]
    fn submit(&mut self) {
        self.nonce = self.nonce.wrapping_add(1);
        self.bytes[self.nonce_at..self.nonce_at + 4].copy_from_slice(&self.nonce.to_le_bytes());
        let f = Frame::parse_exact(&self.bytes).unwrap();
        self.session.handle_frame(&f, NOW_MS).unwrap();
        let out = self.session.output();
        // 26 bytes: one SubmitShares.Success.
        debug_assert_eq!(out.len(), 26);
        black_box(&out[..]);
        out.clear();
        for e in self.session.drain_events() {
            if !matches!(e, SessionEvent::ShareAccepted { .. }) {
                panic!("share not accepted: {e:?}");
            }
        }
    }
}

fn our_extended(work: &Arc<Work>) -> (OurShare, Vec<u8>, usize) {
    let mut s = session(work, 0);
    let open = OpenExtendedMiningChannel {
        request_id: 1,
        user_identity: Str0_255::new("alice").unwrap(),
        nominal_hash_rate: 0.0,
        max_target: [0xff; 32],
        min_extranonce_size: 8,
    };
    s.handle_frame(&Frame::parse_exact(&frame(&open)).unwrap(), NOW_MS)
        .unwrap();
    let (channel_id, job_id, prefix, size) = opened(&mut s);
    let en = vec![0x11u8; size];
    let share = SubmitSharesExtended {
        channel_id,
        sequence_number: 1,
        job_id,
        nonce: NONCE_MARK,
        ntime: NOW_S,
        version: work.version,
        extranonce: B0_32::new(&en).unwrap(),
    };
    (OurShare::new(s, frame(&share)), prefix, size)
}

fn our_standard(work: &Arc<Work>) -> (OurShare, Vec<u8>) {
    let mut s = session(work, REQUIRES_STANDARD_JOBS);
    let open = OpenStandardMiningChannel {
        request_id: 1,
        user_identity: Str0_255::new("bob").unwrap(),
        nominal_hash_rate: 0.0,
        max_target: [0xff; 32],
    };
    s.handle_frame(&Frame::parse_exact(&frame(&open)).unwrap(), NOW_MS)
        .unwrap();
    let (channel_id, job_id, prefix, _) = opened(&mut s);
    let share = SubmitSharesStandard {
        channel_id,
        sequence_number: 1,
        job_id,
        nonce: NONCE_MARK,
        ntime: NOW_S,
        version: work.version,
    };
    (OurShare::new(s, frame(&share)), prefix)
}

/// SRI's `NewTemplate` for our work (see tests/mining_vs_channels_sv2.rs).
fn sri_template(work: &Work) -> NewTemplateOwned {
    let height_push = bitcoin::script::Builder::new()
        .push_int(i64::from(work.height))
        .into_script();
    let mut outputs = Vec::new();
    for o in &work.coinbase.tx.output[1..] {
        o.consensus_encode(&mut outputs).unwrap();
    }
    NewTemplateOwned {
        template_id: 1,
        future_template: true,
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

fn sri_prev_hash(work: &Work) -> SetNewPrevHashOwned {
    SetNewPrevHashOwned {
        template_id: 1,
        prev_hash: work.prev_hash.to_byte_array().into(),
        header_timestamp: work.cur_time,
        n_bits: work.nbits,
        target: work.network_target.to_le_bytes().into(),
    }
}

fn sri_payout(work: &Work) -> Vec<TxOut> {
    vec![work.coinbase.tx.output[0].clone()]
}

/// An SRI allocator whose first prefix is ours (8 unique bytes, then zeros).
fn sri_allocator(ours: &[u8]) -> SriAllocator {
    assert!(ours[23..].iter().all(|&b| b == 0));
    SriAllocator::new(ours[..23].to_vec(), 32, 256).unwrap()
}

fn sri_extended(work: &Work, prefix: &[u8], size: usize) -> ExtendedChannel {
    let mut alloc = sri_allocator(prefix);
    let mut ch = ExtendedChannel::new_for_pool(
        2,
        "alice".into(),
        alloc.allocate_extended(size).unwrap(),
        Target::from_le_bytes([0xff; 32]),
        1.0,
        true,
        size as u16,
        1,
        // Large, so SRI's duplicate budget never bites before the untimed rebuild.
        100_000.0,
        SRI_POOL_TAG.into(),
        None,
    )
    .unwrap();
    ch.set_target(Target::from_le_bytes([0xff; 32])).unwrap();
    ch.on_new_template(sri_template(work), sri_payout(work))
        .unwrap();
    ch.on_set_new_prev_hash(sri_prev_hash(work)).unwrap();
    ch
}

fn sri_standard(work: &Work, prefix: &[u8]) -> StandardChannel {
    let mut alloc = sri_allocator(prefix);
    let mut ch = StandardChannel::new_for_pool(
        2,
        "bob".into(),
        alloc.allocate_standard().unwrap(),
        Target::from_le_bytes([0xff; 32]),
        1.0,
        1,
        100_000.0,
        SRI_POOL_TAG.into(),
        None,
    )
    .unwrap();
    ch.set_target(Target::from_le_bytes([0xff; 32])).unwrap();
    ch.on_new_template(sri_template(work), sri_payout(work))
        .unwrap();
    ch.on_set_new_prev_hash(sri_prev_hash(work)).unwrap();
    ch
}

/// Times `validate` over `iters` shares made by `make` outside the timing, rebuilding the
/// channel (untimed) every [`SRI_WINDOW`] shares.
fn sri_iter<C, S>(
    iters: u64,
    channel: &mut C,
    since_rebuild: &mut u64,
    nonce: &mut u32,
    rebuild: impl Fn() -> C,
    make: impl Fn(u32) -> S,
    mut validate: impl FnMut(&mut C, S) -> bool,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    let mut shares = Vec::with_capacity(CHUNK as usize);
    while left > 0 {
        let n = left.min(CHUNK);
        if *since_rebuild + n > SRI_WINDOW {
            *channel = rebuild();
            *since_rebuild = 0;
        }
        shares.extend((0..n).map(|_| {
            *nonce = nonce.wrapping_add(1);
            make(*nonce)
        }));
        let start = now();
        for s in shares.drain(..) {
            if !validate(channel, s) {
                panic!("SRI refused a share");
            }
        }
        total += now() - start;
        *since_rebuild += n;
        left -= n;
    }
    total
}

/// What any validator of an extended share must hash: the coinbase after a cached midstate of
/// its prefix, the merkle path, the header.
struct Unavoidable {
    prefix_state: sha256::HashEngine,
    extranonce: Vec<u8>,
    suffix: Vec<u8>,
    path: Vec<[u8; 32]>,
    version: u32,
    prev_hash: [u8; 32],
    nbits: u32,
}

impl Unavoidable {
    #[inline]
    fn hash(&self, nonce: u32) -> [u8; 32] {
        let mut e = self.prefix_state.clone();
        e.input(&self.extranonce);
        e.input(&self.suffix);
        let first = sha256::Hash::from_engine(e);
        let mut node = sha256::Hash::hash(first.as_byte_array()).to_byte_array();
        let mut buf = [0u8; 64];
        for sibling in &self.path {
            buf[..32].copy_from_slice(&node);
            buf[32..].copy_from_slice(sibling);
            node = sha256d::Hash::hash(&buf).to_byte_array();
        }
        let header = header_bytes(
            self.version,
            &self.prev_hash,
            &node,
            NOW_S,
            self.nbits,
            nonce,
        );
        sha256d::Hash::hash(&header).to_byte_array()
    }
}

fn bench(c: &mut Criterion) {
    let work = work();
    let coinbase_len = work.coinbase.prefix.len() + 32 + work.coinbase.suffix.len();
    eprintln!(
        "job: coinbase {coinbase_len} bytes (prefix {}, extranonce 32, suffix {}), merkle path {} levels",
        work.coinbase.prefix.len(),
        work.coinbase.suffix.len(),
        work.merkle_path.len()
    );

    let (mut ours_ext, ext_prefix, ext_size) = our_extended(&work);
    let (mut ours_std, std_prefix) = our_standard(&work);

    // The same job on SRI's side: same coinbase bytes.
    let probe = sri_extended(&work, &ext_prefix, ext_size);
    let job = probe.get_active_job().unwrap();
    assert_eq!(
        job.get_coinbase_tx_prefix_without_bip141(),
        work.coinbase.prefix
    );
    assert_eq!(
        job.get_coinbase_tx_suffix_without_bip141(),
        work.coinbase.suffix
    );
    let ext_job = job.get_job_id();
    let probe = sri_standard(&work, &std_prefix);
    let std_job = probe.get_active_job().unwrap().get_job_id();

    // Each workload times `n` shares (setup outside the timing) and returns the elapsed time.
    let mut ours_ext_run = |n: u64| {
        let start = now();
        for _ in 0..n {
            ours_ext.submit();
        }
        now() - start
    };
    let mut sri_ext_ch = sri_extended(&work, &ext_prefix, ext_size);
    let (mut sri_ext_since, mut sri_ext_nonce) = (0u64, 0u32);
    let version = work.version;
    let mut sri_ext_run = |n: u64| {
        sri_iter(
            n,
            &mut sri_ext_ch,
            &mut sri_ext_since,
            &mut sri_ext_nonce,
            || sri_extended(&work, &ext_prefix, ext_size),
            |nonce| SubmitSharesExtendedOwned {
                channel_id: 2,
                sequence_number: nonce,
                job_id: ext_job,
                nonce,
                ntime: NOW_S,
                version,
                extranonce: vec![0x11; ext_size].try_into().unwrap(),
            },
            |ch, s| black_box(ch.validate_share(s)).is_ok(),
        )
    };
    let unavoidable = Unavoidable {
        prefix_state: work.coinbase.prefix_state.clone(),
        extranonce: [&ext_prefix[..], &[0x11u8; 8][..]].concat(),
        suffix: work.coinbase.suffix.clone(),
        path: work.merkle_path.clone(),
        version: work.version,
        prev_hash: work.prev_hash.to_byte_array(),
        nbits: work.nbits,
    };
    let mut unavoidable_nonce = 0u32;
    let mut unavoidable_run = |n: u64| {
        let start = now();
        for _ in 0..n {
            unavoidable_nonce = unavoidable_nonce.wrapping_add(1);
            black_box(unavoidable.hash(black_box(unavoidable_nonce)));
        }
        now() - start
    };
    let mut ours_std_run = |n: u64| {
        let start = now();
        for _ in 0..n {
            ours_std.submit();
        }
        now() - start
    };
    let mut sri_std_ch = sri_standard(&work, &std_prefix);
    let (mut sri_std_since, mut sri_std_nonce) = (0u64, 0u32);
    let mut sri_std_run = |n: u64| {
        sri_iter(
            n,
            &mut sri_std_ch,
            &mut sri_std_since,
            &mut sri_std_nonce,
            || sri_standard(&work, &std_prefix),
            |nonce| SubmitSharesStandardOwned {
                channel_id: 2,
                sequence_number: nonce,
                job_id: std_job,
                nonce,
                ntime: NOW_S,
                version,
            },
            |ch, s| black_box(ch.validate_share(s)).is_ok(),
        )
    };
    let mut header = header_bytes(
        work.version,
        &work.prev_hash.to_byte_array(),
        &[7; 32],
        NOW_S,
        work.nbits,
        0,
    );
    let mut sha_nonce = 0u32;
    let mut sha256d_run = |n: u64| {
        let start = now();
        for _ in 0..n {
            sha_nonce = sha_nonce.wrapping_add(1);
            header[76..].copy_from_slice(&sha_nonce.to_le_bytes());
            black_box(sha256d::Hash::hash(black_box(&header)));
        }
        now() - start
    };

    let mut workloads: [(&str, &mut dyn FnMut(u64) -> Duration); 6] = [
        ("extended/ours", &mut ours_ext_run),
        ("extended/channels_sv2", &mut sri_ext_run),
        ("baseline/extended_unavoidable", &mut unavoidable_run),
        ("standard/ours", &mut ours_std_run),
        ("standard/channels_sv2", &mut sri_std_run),
        ("baseline/sha256d_80", &mut sha256d_run),
    ];

    let mut g = c.benchmark_group("share_validation");
    for (name, run) in workloads.iter_mut() {
        g.bench_function(*name, |b| b.iter_custom(&mut *run));
    }
    g.finish();

    // Not when profiling or running a subset (a filter argument).
    if !profiling_or_filtered() {
        summary(&mut workloads);
    }
}

/// Whether criterion was asked to profile or to run only some benchmarks (a positional filter
/// argument, i.e. one that is not an option nor an option's value).
fn profiling_or_filtered() -> bool {
    const VALUED: [&str; 16] = [
        "--warm-up-time",
        "--measurement-time",
        "--profile-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
        "--output-format",
        "--color",
        "--plotting-backend",
        "--format",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--profile-time" || !a.starts_with('-') {
            return true;
        }
        if VALUED.contains(&a.as_str()) || ["-s", "-b", "-c"].contains(&a.as_str()) {
            args.next();
        }
    }
    false
}

/// The machine is shared: criterion's figures above are wall time, measured one benchmark after
/// the other, so load on other processes skews them and their ratios. Here the workloads take
/// turns in short rounds timed with this thread's CPU clock (where there is one, so time spent
/// descheduled is not counted), and the ratios come from the mean over all rounds.
fn summary(workloads: &mut [(&str, &mut dyn FnMut(u64) -> Duration)]) {
    // Rounds long enough for each workload to warm its caches again (our duplicate set is
    // ~1 MiB at the default window; with 2 ms rounds it was mostly cold and our standard share
    // looked ~1.4x slower than when run alone), short enough to alternate often.
    const ROUNDS: usize = 20;
    const ROUND: Duration = Duration::from_millis(50);
    CPU_CLOCK.store(thread_cpu_time().is_some(), Ordering::Relaxed);
    let clock = if CPU_CLOCK.load(Ordering::Relaxed) {
        "thread CPU time"
    } else {
        "wall time"
    };
    // Shares per round, from a first calibration pass.
    let per_round: Vec<u64> = workloads
        .iter_mut()
        .map(|(_, run)| {
            let t = run(1000);
            ((ROUND.as_secs_f64() / (t.as_secs_f64() / 1000.0)) as u64).max(100)
        })
        .collect();
    let mut best = vec![f64::INFINITY; workloads.len()];
    let mut total = vec![Duration::ZERO; workloads.len()];
    for _ in 0..ROUNDS {
        for (i, (_, run)) in workloads.iter_mut().enumerate() {
            let t = run(per_round[i]);
            best[i] = best[i].min(t.as_secs_f64() * 1e9 / per_round[i] as f64);
            total[i] += t;
        }
    }
    let mean: Vec<f64> = total
        .iter()
        .zip(&per_round)
        .map(|(t, n)| t.as_secs_f64() * 1e9 / (*n as f64 * ROUNDS as f64))
        .collect();
    eprintln!(
        "\ninterleaved, {ROUNDS} rounds of ~{ROUND:?} each, {clock}: ns per share (mean / best round)"
    );
    for (i, (name, _)) in workloads.iter().enumerate() {
        eprintln!("  {name:<32} {:>9.1} {:>9.1}", mean[i], best[i]);
    }
    let r = |a: usize, b: usize| mean[a] / mean[b];
    eprintln!(
        "  extended: ours / channels_sv2 = {:.2}, ours / unavoidable hashing = {:.2}",
        r(0, 1),
        r(0, 2)
    );
    eprintln!(
        "  standard: ours / channels_sv2 = {:.2}, ours / sha256d_80 = {:.2}",
        r(3, 4),
        r(3, 5)
    );
    eprintln!(
        "  (means: SRI's duplicate set grows from empty to {SRI_WINDOW} and is rebuilt, ours stays \
         full at its window, so a best round favours SRI)"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
