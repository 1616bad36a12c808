//! A job of a channel's own on a connection with many channels: what one UpdateChannel that
//! moves a channel's target costs the pool (05 §5.3.21: a job at the new target follows), as
//! the connection's channels grow. A proxy (SRI's translator) opens one extended channel per
//! downstream miner, so an operator facing proxies raises `max_channels_per_connection` into
//! the thousands; each channel keeps its newest job, so the session holds up to `max_jobs` plus
//! one job a channel, and every job pushed retires the oldest job no channel has as its newest.
//!
//! Measured: `Session::handle_frame` of an UpdateChannel for the next channel in turn (nominal
//! hash rate alternating between two values, so the target moves every time), the
//! OpenExtendedMiningChannel setup untimed; the output is cleared and the events drained.
//!
//! Run: `cargo bench --bench session_jobs -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;

use blvm_stratum_v2::mining::{ExtranonceAllocator, MiningConfig, Session, Work};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain};
use blvm_stratum_v2::wire::common::SetupConnection;
use blvm_stratum_v2::wire::mining::{OpenExtendedMiningChannel, UpdateChannel};
use blvm_stratum_v2::wire::{Frame, Message, Str0_255, Sv2Message, encode_frame};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const NOW_MS: u64 = 1_800_000_000_000;

fn frame<'a, M: Sv2Message<'a>>(m: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(m, &mut out).expect("encodable");
    out
}

fn feed(session: &mut Session, bytes: &[u8]) {
    session
        .handle_frame(&Frame::parse_exact(bytes).expect("one frame"), NOW_MS)
        .expect("accepted");
}

/// A set-up session with `channels` extended channels open; their ids.
fn session_with(channels: usize) -> (Session, Vec<u32>) {
    let config = Arc::new(MiningConfig {
        min_difficulty: 1e-12,
        max_channels_per_connection: channels,
        max_channels: channels,
        ..MiningConfig::default()
    });
    let mut chain = EmbeddedChain::new(ChainConfig {
        bits: 0x207f_ffff,
        synthetic_transactions: 100,
        block_interval_secs: 0,
    });
    let work = Work::new(1, chain.template(1_800_000_000), &config.coinbase).expect("work");
    let mut session = Session::new(config, Arc::new(ExtranonceAllocator::new()));
    session.on_work(&work, NOW_MS);
    feed(
        &mut session,
        &frame(&SetupConnection {
            protocol: 0,
            min_version: 2,
            max_version: 2,
            flags: 0,
            endpoint_host: Str0_255::new("127.0.0.1").unwrap(),
            endpoint_port: 3333,
            vendor: Str0_255::new("bench").unwrap(),
            hardware_version: Str0_255::default(),
            firmware: Str0_255::default(),
            device_id: Str0_255::default(),
        }),
    );
    let mut ids = Vec::with_capacity(channels);
    for request_id in 0..channels as u32 {
        // Openings are rate-limited per connection: each one a little later.
        let now = NOW_MS + u64::from(request_id) * 1_000;
        let open = frame(&OpenExtendedMiningChannel {
            request_id,
            user_identity: Str0_255::new("proxy.worker").unwrap(),
            nominal_hash_rate: 0.0,
            max_target: [0xff; 32],
            min_extranonce_size: 4,
        });
        session
            .handle_frame(&Frame::parse_exact(&open).unwrap(), now)
            .expect("opened");
        let out = std::mem::take(session.output());
        let mut rest: &[u8] = &out;
        while let Some((f, used)) = Frame::parse(rest, 1 << 24).expect("valid output") {
            if let Ok((Message::OpenExtendedMiningChannelSuccess(m), _)) = f.message() {
                ids.push(m.channel_id);
            }
            rest = &rest[used..];
        }
        let _ = session.drain_events().count();
    }
    assert_eq!(ids.len(), channels, "every channel opened");
    (session, ids)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("update_channel_job");
    for channels in [64usize, 1_000, 4_000] {
        let (mut session, ids) = session_with(channels);
        let updates: Vec<[Vec<u8>; 2]> = ids
            .iter()
            .map(|&channel_id| {
                [1e3f32, 2e3].map(|nominal_hash_rate| {
                    frame(&UpdateChannel {
                        channel_id,
                        nominal_hash_rate,
                        maximum_target: [0xff; 32],
                    })
                })
            })
            .collect();
        // Each update moves the target, so a job follows it.
        for pair in &updates[..2] {
            for bytes in pair {
                feed(&mut session, bytes);
                let out = std::mem::take(session.output());
                let f = Frame::parse(&out, 1 << 24).unwrap().expect("a message");
                assert!(matches!(
                    f.0.message().unwrap().0,
                    Message::NewExtendedMiningJob(_) | Message::SetTarget(_)
                ));
                let jobs = out.len();
                assert!(
                    jobs > 100,
                    "a job follows the new target ({jobs} bytes out)"
                );
                let _ = session.drain_events().count();
            }
        }
        let mut turn = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(channels), &channels, |b, _| {
            b.iter(|| {
                let [first, second] = &updates[turn % updates.len()];
                let bytes = if (turn / updates.len()).is_multiple_of(2) {
                    first
                } else {
                    second
                };
                turn += 1;
                let f = Frame::parse_exact(bytes).expect("one frame");
                let _ = black_box(session.handle_frame(&f, NOW_MS + 86_400_000));
                session.output().clear();
                let _ = session.drain_events().count();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
