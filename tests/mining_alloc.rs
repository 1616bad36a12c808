//! Heap allocations on our share validation path, `Session::handle_frame` for a
//! SubmitSharesExtended / SubmitSharesStandard frame plus the caller's per-share chores (clear
//! the output, drain the events): zero per accepted share in steady state. SRI's
//! `validate_share` count is printed next to ours
//! (`cargo test --test mining_alloc -- --nocapture`).
//!
//! Steady state means the buffers that grow with use have grown: the output and event buffers
//! (kept by `clear` and `drain`) and the per-channel duplicate-share set, which holds every
//! share of the credit window and doubles as it fills. The shares here are all on one job, so
//! the credit window is set larger than the run (a new window would retire that job), and the
//! measured shares stay within the set's last doubling.
//!
//! A counting global allocator counts, per thread, the allocations (alloc, alloc_zeroed,
//! realloc) made while a closure runs, so tests running in parallel do not disturb each other.

use std::sync::Arc;

use bitcoin::Target;
use bitcoin::hashes::Hash;
use blvm_stratum_v2::mining::{ExtranonceAllocator, MiningConfig, Session, SessionEvent, Work};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain};
use blvm_stratum_v2::wire::common::SetupConnection;
use blvm_stratum_v2::wire::mining::*;
use blvm_stratum_v2::wire::{B0_32, Frame, Message, Str0_255, Sv2Message, encode_frame};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::count;

const NOW_S: u32 = 1_800_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;
/// A hard network target: no share is a block (a block is assembled, which allocates by
/// design).
const HARD_BITS: u32 = 0x1d00_ffff;

fn frame<'a, M: Sv2Message<'a>>(m: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(m, &mut out).expect("encodable");
    out
}

/// A session past setup, with every share accepted (target all ones), on a template with
/// `txs` synthetic transactions.
fn session(config: MiningConfig, flags: u32, txs: usize) -> Session {
    let mut chain = EmbeddedChain::new(ChainConfig {
        bits: HARD_BITS,
        synthetic_transactions: txs,
        block_interval_secs: 0,
    });
    let config = Arc::new(config);
    let work = Work::new(1, chain.template(NOW_S), &config.coinbase).unwrap();
    let mut s = Session::new(config, Arc::new(ExtranonceAllocator::new()));
    s.on_work(&work, NOW_MS);
    let setup = SetupConnection {
        protocol: 0,
        min_version: 2,
        max_version: 2,
        flags,
        endpoint_host: Str0_255::new("127.0.0.1").unwrap(),
        endpoint_port: 3333,
        vendor: Str0_255::new("alloc").unwrap(),
        hardware_version: Str0_255::default(),
        firmware: Str0_255::default(),
        device_id: Str0_255::default(),
    };
    s.handle_frame(&Frame::parse_exact(&frame(&setup)).unwrap(), NOW_MS)
        .unwrap();
    s.output().clear();
    let _ = s.drain_events().count();
    s
}

fn accept_all() -> MiningConfig {
    MiningConfig {
        min_difficulty: 1e-30,
        credit_window_shares: 1 << 20,
        // Shares go in far faster than any miner's (all at one fake time): the share rate
        // limit, which would refuse them, is not what is measured here.
        share_rate_multiple: 1e9,
        ..MiningConfig::default()
    }
}

/// (channel id, job id, version, min_ntime, extranonce size) from the channel's opening frames.
fn opened(s: &mut Session) -> (u32, u32, u32, u32, usize) {
    let out = std::mem::take(s.output());
    let _ = s.drain_events().count();
    let (mut channel, mut job, mut version, mut ntime, mut size) = (0, 0, 0, 0, 0);
    let mut rest = &out[..];
    while let Some((f, used)) = Frame::parse(rest, 1 << 24).unwrap() {
        match f.message().unwrap().0 {
            Message::OpenExtendedMiningChannelSuccess(m) => {
                channel = m.channel_id;
                size = usize::from(m.extranonce_size);
                assert_eq!(m.target, [0xff; 32]);
            }
            Message::OpenStandardMiningChannelSuccess(m) => {
                channel = m.channel_id;
                assert_eq!(m.target, [0xff; 32]);
            }
            Message::NewExtendedMiningJob(m) => {
                job = m.job_id;
                version = m.version;
            }
            Message::NewMiningJob(m) => {
                job = m.job_id;
                version = m.version;
            }
            Message::SetNewPrevHash(m) => ntime = m.min_ntime,
            other => panic!("unexpected {other:?}"),
        }
        rest = &rest[used..];
    }
    (channel, job, version, ntime, size)
}

/// The frame of one share, and where its nonce sits in it (patched per share).
struct ShareFrame {
    bytes: Vec<u8>,
    nonce_at: usize,
}

impl ShareFrame {
    fn new(bytes: Vec<u8>, nonce: u32) -> Self {
        let needle = nonce.to_le_bytes();
        let nonce_at = bytes
            .windows(4)
            .position(|w| w == needle)
            .expect("nonce in the frame");
        ShareFrame { bytes, nonce_at }
    }

    /// Submits the share with `nonce` and does the caller's per-share chores; returns whether
    /// it was accepted.
    fn submit(&mut self, s: &mut Session, nonce: u32) -> bool {
        self.bytes[self.nonce_at..self.nonce_at + 4].copy_from_slice(&nonce.to_le_bytes());
        let f = Frame::parse_exact(&self.bytes).unwrap();
        s.handle_frame(&f, NOW_MS).unwrap();
        let out = s.output();
        // A SubmitShares.Success is 6 + 20 bytes; an error is longer.
        let accepted = out.len() == 26;
        out.clear();
        for e in s.drain_events() {
            assert!(!matches!(e, SessionEvent::BlockFound(_)), "a block");
        }
        accepted
    }
}

/// A nonce that is not a small number, so [`ShareFrame::new`] finds it unambiguously.
const NONCE_MARK: u32 = 0xa5c3_7e19;

fn extended(config: MiningConfig, txs: usize) -> (Session, ShareFrame) {
    let mut s = session(config, 0, txs);
    let open = OpenExtendedMiningChannel {
        request_id: 1,
        user_identity: Str0_255::new("alice").unwrap(),
        nominal_hash_rate: 0.0,
        max_target: [0xff; 32],
        min_extranonce_size: 8,
    };
    s.handle_frame(&Frame::parse_exact(&frame(&open)).unwrap(), NOW_MS)
        .unwrap();
    let (channel_id, job_id, version, ntime, size) = opened(&mut s);
    let en = vec![0x11u8; size];
    let share = SubmitSharesExtended {
        channel_id,
        sequence_number: 1,
        job_id,
        nonce: NONCE_MARK,
        ntime,
        version,
        extranonce: B0_32::new(&en).unwrap(),
    };
    (s, ShareFrame::new(frame(&share), NONCE_MARK))
}

fn standard(config: MiningConfig, txs: usize) -> (Session, ShareFrame) {
    let mut s = session(config, REQUIRES_STANDARD_JOBS, txs);
    let open = OpenStandardMiningChannel {
        request_id: 1,
        user_identity: Str0_255::new("bob").unwrap(),
        nominal_hash_rate: 0.0,
        max_target: [0xff; 32],
    };
    s.handle_frame(&Frame::parse_exact(&frame(&open)).unwrap(), NOW_MS)
        .unwrap();
    let (channel_id, job_id, version, ntime, _) = opened(&mut s);
    let share = SubmitSharesStandard {
        channel_id,
        sequence_number: 1,
        job_id,
        nonce: NONCE_MARK,
        ntime,
        version,
    };
    (s, ShareFrame::new(frame(&share), NONCE_MARK))
}

/// Submits `warm` shares, then counts the allocations of `measure` more; every share must be
/// accepted (distinct nonces). Returns (allocations while warming, while measuring).
fn run(s: &mut Session, f: &mut ShareFrame, warm: u32, measure: u32) -> (usize, usize) {
    let (_, warm_allocs) = count(|| {
        for n in 0..warm {
            assert!(f.submit(s, n), "share {n} refused");
        }
    });
    let (accepted, allocs) = count(|| (warm..warm + measure).filter(|&n| f.submit(s, n)).count());
    assert_eq!(accepted, measure as usize);
    (warm_allocs, allocs)
}

/// The duplicate set's last doubling before 110,000 shares is at share 57,345 (room for
/// 114,688); the ones before it and the output and event buffers' first growth are warm-up.
const WARM_DEFAULT_WINDOW: u32 = 100_000;
const MEASURE: u32 = 10_000;

#[test]
fn extended_share_validation_does_not_allocate_in_steady_state() {
    let (mut s, mut f) = extended(accept_all(), 40);
    let (warm, steady) = run(&mut s, &mut f, WARM_DEFAULT_WINDOW, MEASURE);
    println!(
        "ours, extended: {warm} allocations over {WARM_DEFAULT_WINDOW} warm-up shares, \
         {steady} over {MEASURE} steady-state shares"
    );
    assert_eq!(steady, 0, "allocations on the extended validation path");
}

#[test]
fn standard_share_validation_does_not_allocate_in_steady_state() {
    let (mut s, mut f) = standard(accept_all(), 40);
    let (warm, steady) = run(&mut s, &mut f, WARM_DEFAULT_WINDOW, MEASURE);
    println!(
        "ours, standard: {warm} allocations over {WARM_DEFAULT_WINDOW} warm-up shares, \
         {steady} over {MEASURE} steady-state shares"
    );
    assert_eq!(steady, 0, "allocations on the standard validation path");
}

/// A refused share (duplicate) must not allocate either.
#[test]
fn refused_shares_do_not_allocate() {
    let (mut s, mut f) = extended(accept_all(), 7);
    let _ = run(&mut s, &mut f, 20_000, 1000);
    // Duplicates of the last accepted shares. The first refusal grows the output buffer once
    // (a SubmitShares.Error frame is longer than a Success): warm-up, not steady state.
    assert!(!f.submit(&mut s, 20_999));
    let (refused, allocs) = count(|| (20_500..21_000).filter(|&n| !f.submit(&mut s, n)).count());
    assert_eq!(refused, 500);
    assert_eq!(allocs, 0, "allocations on the duplicate-refusal path");
}

/// SRI's allocations per `validate_share`, for the report (not asserted: it is their code).
#[test]
fn channels_sv2_allocations_per_share_for_comparison() {
    use channels_sv2::extranonce_manager::ExtranonceAllocator as SriAllocator;
    use channels_sv2::server::extended::ExtendedChannel;
    use channels_sv2::server::standard::StandardChannel;
    use mining_sv2::{SubmitSharesExtendedOwned, SubmitSharesStandardOwned};
    use template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};

    let mut chain = EmbeddedChain::new(ChainConfig {
        bits: HARD_BITS,
        synthetic_transactions: 40,
        block_interval_secs: 0,
    });
    let template = chain.template(NOW_S);
    let prev_hash = template.prev_hash.to_byte_array();
    let value = template.coinbase_value;
    let payout = bitcoin::TxOut {
        value,
        script_pubkey: bitcoin::ScriptBuf::new_op_return([]),
    };
    let path: Vec<[u8; 32]> =
        blvm_stratum_v2::mining::merkle::coinbase_merkle_path(&template.txids());
    let new_template = || NewTemplateOwned {
        template_id: 1,
        future_template: true,
        version: 0x2000_0000,
        coinbase_tx_version: 2,
        coinbase_prefix: vec![0x51].try_into().unwrap(),
        coinbase_tx_input_sequence: u32::MAX,
        coinbase_tx_value_remaining: value.to_sat(),
        coinbase_tx_outputs_count: 0,
        coinbase_tx_outputs: Vec::new().try_into().unwrap(),
        coinbase_tx_locktime: 0,
        merkle_path: path
            .iter()
            .map(|h| (*h).into())
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
    };
    let prev = || SetNewPrevHashOwned {
        template_id: 1,
        prev_hash: prev_hash.into(),
        header_timestamp: NOW_S,
        n_bits: HARD_BITS,
        target: [0; 32].into(),
    };
    let mut alloc = SriAllocator::new(vec![0xbe, 0xef], 32, 256).unwrap();
    let mut ext = ExtendedChannel::new_for_pool(
        2,
        "alice".into(),
        alloc.allocate_extended(8).unwrap(),
        Target::from_le_bytes([0xff; 32]),
        1.0,
        true,
        8,
        1,
        1000.0,
        "blvm".into(),
        None,
    )
    .unwrap();
    ext.set_target(Target::from_le_bytes([0xff; 32])).unwrap();
    ext.on_new_template(new_template(), vec![payout.clone()])
        .unwrap();
    ext.on_set_new_prev_hash(prev()).unwrap();
    let ext_job = ext.get_active_job().unwrap().get_job_id();
    let mut std_ch = StandardChannel::new_for_pool(
        3,
        "bob".into(),
        alloc.allocate_standard().unwrap(),
        Target::from_le_bytes([0xff; 32]),
        1.0,
        1,
        1000.0,
        "blvm".into(),
        None,
    )
    .unwrap();
    std_ch
        .set_target(Target::from_le_bytes([0xff; 32]))
        .unwrap();
    std_ch
        .on_new_template(new_template(), vec![payout])
        .unwrap();
    std_ch.on_set_new_prev_hash(prev()).unwrap();
    let std_job = std_ch.get_active_job().unwrap().get_job_id();

    let n = 20_000u32;
    let mut total_ext = 0;
    let mut total_std = 0;
    for nonce in 0..n {
        let share = SubmitSharesExtendedOwned {
            channel_id: 2,
            sequence_number: nonce,
            job_id: ext_job,
            nonce,
            ntime: NOW_S,
            version: 0x2000_0000,
            extranonce: vec![0x11; 8].try_into().unwrap(),
        };
        let (r, a) = count(|| ext.validate_share(share).is_ok());
        assert!(r);
        total_ext += a;
        let share = SubmitSharesStandardOwned {
            channel_id: 3,
            sequence_number: nonce,
            job_id: std_job,
            nonce,
            ntime: NOW_S,
            version: 0x2000_0000,
        };
        let (r, a) = count(|| std_ch.validate_share(share).is_ok());
        assert!(r);
        total_std += a;
    }
    println!(
        "channels_sv2: {:.2} allocations per extended share, {:.2} per standard share \
         (over {n} accepted shares, duplicate set growing)",
        total_ext as f64 / f64::from(n),
        total_std as f64 / f64::from(n)
    );
}
