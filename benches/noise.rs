//! Ours next to SRI's noise_sv2 / codec_sv2 in one run, so ratios come from the same machine
//! state: per-connection handshake cost, frame encryption/decryption, an encrypted
//! SubmitSharesExtended, and the two AEAD crates we could build the transport on.
//!
//! Run: `cargo bench --bench noise -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use blvm_stratum_v2::noise::{Initiator, NoiseTransport, Responder};
use codec_sv2::{
    Decrypted, Handshake, NoiseDecoder, NoiseEncoder, TransportDecryptState, TransportEncryptState,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use framing_sv2::framing::{MessageFrame, SerializedFrame};
use rand::SeedableRng;
use rand::rngs::StdRng;
use secp256k1::{Keypair, SECP256K1};

const NOW: u32 = 1_700_000_000;

fn our_pair(rng: &mut StdRng) -> (NoiseTransport, NoiseTransport) {
    let authority = Keypair::new(SECP256K1, rng);
    let responder = Responder::generate(authority, NOW, 3600, rng);
    let initiator = Initiator::new(authority.x_only_public_key().0, rng);
    let (reply, server) = responder
        .accept(&initiator.step_0(), NOW, rng)
        .expect("accept");
    (initiator.step_2(&reply, NOW).expect("handshake"), server)
}

fn sri_authority() -> secp256k1_028::Keypair {
    let secp = secp256k1_028::Secp256k1::new();
    secp256k1_028::Keypair::new(&secp, &mut rand::thread_rng())
}

/// (initiator encrypt, responder decrypt) of an SRI session.
fn sri_pair() -> (TransportEncryptState, TransportDecryptState) {
    let authority = sri_authority();
    let initiator = noise_sv2::Initiator::new(Some(authority.x_only_public_key().0));
    let responder = noise_sv2::Responder::new(authority, 3600);
    let (m0, initiator) = Handshake::initiator(initiator).step_0().expect("step 0");
    let m0: [u8; 64] = m0.payload().try_into().expect("64 bytes");
    let (m1, responder) = Handshake::responder(responder)
        .step_1_with_now_rng(m0, NOW, &mut rand::thread_rng())
        .expect("step 1");
    let m1: [u8; 234] = m1.payload().try_into().expect("234 bytes");
    let initiator = initiator.step_2_with_now(m1, NOW).expect("step 2");
    let (enc, _) = initiator.split();
    let (_, dec) = responder.split();
    (enc, dec)
}

fn handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    let mut rng = StdRng::seed_from_u64(1);

    // Ours: the Responder is built once per server; accept is the per-connection cost.
    let authority = Keypair::new(SECP256K1, &mut rng);
    let responder = Responder::generate(authority, NOW, 3600, &mut rng);
    let m1 = Initiator::new(authority.x_only_public_key().0, &mut rng).step_0();
    g.bench_function("ours/responder_accept", |b| {
        b.iter(|| responder.accept(black_box(&m1), NOW, &mut rng).map(|r| r.0))
    });
    g.bench_function("ours/responder_new_once_per_server", |b| {
        b.iter(|| Responder::generate(authority, NOW, 3600, &mut rng))
    });
    g.bench_function("ours/full_handshake_both_sides", |b| {
        b.iter(|| {
            let i = Initiator::new(authority.x_only_public_key().0, &mut rng);
            let (reply, _) = responder
                .accept(&i.step_0(), NOW, &mut rng)
                .expect("accept");
            i.step_2(&reply, NOW).map(|_| ())
        })
    });

    // noise_sv2: Responder::new per connection (it holds the handshake state), then step_1.
    let sri_a = sri_authority();
    let sri_m1 = noise_sv2::Initiator::new(Some(sri_a.x_only_public_key().0))
        .step_0()
        .expect("step 0");
    g.bench_function("noise_sv2/responder_new", |b| {
        b.iter(|| noise_sv2::Responder::new(black_box(sri_a), 3600))
    });
    g.bench_function("noise_sv2/responder_new+step_1", |b| {
        b.iter(|| {
            let mut r = noise_sv2::Responder::new(sri_a, 3600);
            r.step_1_with_now_rng(black_box(sri_m1), NOW, &mut rng)
                .map(|x| x.0)
        })
    });
    g.bench_function("noise_sv2/full_handshake_both_sides", |b| {
        b.iter(|| {
            let mut i = noise_sv2::Initiator::new(Some(sri_a.x_only_public_key().0));
            let mut r = noise_sv2::Responder::new(sri_a, 3600);
            let m0 = i.step_0().expect("step 0");
            let (m1, _) = r.step_1_with_now_rng(m0, NOW, &mut rng).expect("step 1");
            i.step_2_with_now(m1, NOW).map(|_| ())
        })
    });
    g.finish();
}

fn frame(len: usize) -> Vec<u8> {
    let payload = len - 6;
    let mut f = vec![0, 0, 0x15];
    f.extend_from_slice(&(payload as u32).to_le_bytes()[..3]);
    f.extend((0..payload).map(|i| i as u8));
    f
}

/// Times `iters` decryptions of ciphertexts made (untimed) in batches by `encrypt`.
fn timed_batches(
    iters: u64,
    mut encrypt: impl FnMut(&mut Vec<Vec<u8>>, usize),
    mut decrypt: impl FnMut(&[u8]),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    let mut batch = Vec::new();
    while left > 0 {
        let n = left.min(512) as usize;
        batch.clear();
        encrypt(&mut batch, n);
        let start = Instant::now();
        for ct in &batch {
            decrypt(ct);
        }
        total += start.elapsed();
        left -= n as u64;
    }
    total
}

fn transport(c: &mut Criterion) {
    let mut g = c.benchmark_group("transport");
    let mut rng = StdRng::seed_from_u64(2);
    for len in [60usize, 16 * 1024] {
        let plain = frame(len);
        g.throughput(Throughput::Bytes(len as u64));

        let (mut client, _) = our_pair(&mut rng);
        let mut out = Vec::with_capacity(len + 64);
        g.bench_with_input(BenchmarkId::new("ours/encrypt", len), &plain, |b, p| {
            b.iter(|| {
                out.clear();
                client.encrypt_frame(black_box(p), &mut out)
            })
        });

        let (mut enc, _) = sri_pair();
        let mut encoder = NoiseEncoder::new();
        g.bench_with_input(
            BenchmarkId::new("codec_sv2/encrypt", len),
            &plain,
            |b, p| {
                b.iter(|| {
                    let f = SerializedFrame::from_bytes(p.clone()).expect("frame");
                    encoder.encode_transport(f, &mut enc).map(|s| s.len())
                })
            },
        );

        let (mut client, mut server) = our_pair(&mut rng);
        g.bench_with_input(BenchmarkId::new("ours/decrypt", len), &plain, |b, p| {
            b.iter_custom(|iters| {
                timed_batches(
                    iters,
                    |batch, n| {
                        for _ in 0..n {
                            let mut ct = Vec::new();
                            client.encrypt_frame(p, &mut ct).expect("encrypt");
                            batch.push(ct);
                        }
                    },
                    |ct| {
                        server.feed(ct);
                        black_box(server.next_frame().expect("decrypt").map(|f| f.len()));
                    },
                )
            })
        });

        let (mut enc, dec) = sri_pair();
        let mut dec = Some(dec);
        let mut encoder = NoiseEncoder::new();
        let mut decoder = NoiseDecoder::new();
        g.bench_with_input(
            BenchmarkId::new("codec_sv2/decrypt", len),
            &plain,
            |b, p| {
                b.iter_custom(|iters| {
                    timed_batches(
                        iters,
                        |batch, n| {
                            for _ in 0..n {
                                let f = SerializedFrame::from_bytes(p.clone()).expect("frame");
                                let ct = encoder.encode_transport(f, &mut enc).expect("encrypt");
                                let ct: &[u8] = ct.as_ref();
                                batch.push(ct.to_vec());
                            }
                        },
                        |ct| {
                            let state = dec.take().expect("state");
                            dec = Some(sri_decode(&mut decoder, state, ct, |f| {
                                black_box(f.as_bytes().len());
                            }));
                        },
                    )
                })
            },
        );
    }
    g.finish();
}

/// Feeds one encrypted frame through codec_sv2's decoder and hands the frame to `use_frame`.
fn sri_decode(
    decoder: &mut NoiseDecoder,
    mut state: TransportDecryptState,
    ct: &[u8],
    mut use_frame: impl FnMut(&mut codec_sv2::SerializedFrame),
) -> TransportDecryptState {
    let mut at = 0;
    loop {
        let w = decoder.writable();
        let n = w.len().min(ct.len() - at);
        w[..n].copy_from_slice(&ct[at..at + n]);
        at += n;
        match decoder.next_transport_frame(state).expect("decrypt") {
            Decrypted::Frame(mut f, s) => {
                use_frame(&mut f);
                return s;
            }
            Decrypted::Incomplete(_, s) => state = s,
        }
    }
}

/// SubmitSharesExtended fields, as a pool receives them for every share.
#[derive(Clone, Copy)]
struct Share {
    channel_id: u32,
    sequence_number: u32,
    job_id: u32,
    nonce: u32,
    ntime: u32,
    version: u32,
    extranonce: [u8; 16],
}

const SHARE: Share = Share {
    channel_id: 7,
    sequence_number: 1234,
    job_id: 99,
    nonce: 0xdead_beef,
    ntime: 1_700_000_123,
    version: 0x2000_0000,
    extranonce: [0x5a; 16],
};

/// Hand serialization: header (ext 0x8000 = channel_msg bit, type 0x1b, U24 length), then
/// six U32 LE and a B0_32 extranonce.
fn write_share(s: &Share, out: &mut Vec<u8>) {
    let payload_len = 24 + 1 + s.extranonce.len();
    out.extend_from_slice(&0x8000u16.to_le_bytes());
    out.push(0x1b);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes()[..3]);
    for v in [
        s.channel_id,
        s.sequence_number,
        s.job_id,
        s.nonce,
        s.ntime,
        s.version,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(s.extranonce.len() as u8);
    out.extend_from_slice(&s.extranonce);
}

/// A parsed share borrowing the frame, as a zero-copy decoder would return it.
struct ShareView<'a> {
    /// channel_id, sequence_number, job_id, nonce, ntime, version.
    fields: [u32; 6],
    extranonce: &'a [u8],
}

/// Hand parse of the fields above; `None` if malformed.
fn read_share(frame: &[u8]) -> Option<ShareView<'_>> {
    let p = frame.get(6..)?;
    let mut fields = [0u32; 6];
    for (i, f) in fields.iter_mut().enumerate() {
        *f = u32::from_le_bytes(p.get(4 * i..4 * i + 4)?.try_into().ok()?);
    }
    let n = usize::from(*p.get(24)?);
    Some(ShareView {
        fields,
        extranonce: p.get(25..25 + n)?,
    })
}

static EXTRANONCE: [u8; 16] = SHARE.extranonce;

fn sri_share() -> mining_sv2::SubmitSharesExtended<'static> {
    mining_sv2::SubmitSharesExtended {
        channel_id: SHARE.channel_id,
        sequence_number: SHARE.sequence_number,
        job_id: SHARE.job_id,
        nonce: SHARE.nonce,
        ntime: SHARE.ntime,
        version: SHARE.version,
        extranonce: (&EXTRANONCE[..]).try_into().expect("<= 32 bytes"),
    }
}

fn submit_shares_extended(c: &mut Criterion) {
    let mut g = c.benchmark_group("submit_shares_extended");
    let mut rng = StdRng::seed_from_u64(3);

    let (mut client, _) = our_pair(&mut rng);
    let mut plain = Vec::with_capacity(64);
    let mut wire = Vec::with_capacity(128);
    g.bench_function("ours/encode", |b| {
        b.iter(|| {
            plain.clear();
            wire.clear();
            write_share(black_box(&SHARE), &mut plain);
            client.encrypt_frame(&plain, &mut wire)
        })
    });
    // Fresh session: the encode-only run above advanced the client's nonce alone.
    let (mut client, mut server) = our_pair(&mut rng);
    g.bench_function("ours/encode+decode", |b| {
        b.iter(|| {
            plain.clear();
            wire.clear();
            write_share(black_box(&SHARE), &mut plain);
            client.encrypt_frame(&plain, &mut wire).expect("encrypt");
            server.feed(&wire);
            let f = server.next_frame().expect("decrypt").expect("whole frame");
            black_box(read_share(f).map(|s| (s.fields[3], s.extranonce.len())))
        })
    });

    let (mut enc, _) = sri_pair();
    let mut encoder = NoiseEncoder::new();
    let mut decoder = NoiseDecoder::new();
    let mt = mining_sv2::MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED;
    let cb = mining_sv2::CHANNEL_BIT_SUBMIT_SHARES_EXTENDED;
    g.bench_function("codec_sv2/encode", |b| {
        b.iter(|| {
            let f = MessageFrame::from_message(black_box(sri_share()), mt, 0, cb).expect("frame");
            encoder.encode_transport(f, &mut enc).map(|s| s.len())
        })
    });
    let (mut enc2, dec) = sri_pair();
    let mut dec = Some(dec);
    g.bench_function("codec_sv2/encode+decode", |b| {
        b.iter(|| {
            let f = MessageFrame::from_message(black_box(sri_share()), mt, 0, cb).expect("frame");
            let ct = encoder.encode_transport(f, &mut enc2).expect("encrypt");
            let state = dec.take().expect("state");
            let ct: &[u8] = ct.as_ref();
            dec = Some(sri_decode(&mut decoder, state, ct, |f| {
                let m: mining_sv2::SubmitSharesExtended =
                    binary_sv2::from_bytes(f.payload()).expect("decode");
                black_box(m.nonce);
            }));
        })
    });
    g.finish();
}

fn aead(c: &mut Criterion) {
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
    use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

    let mut g = c.benchmark_group("aead");
    let key = [7u8; 32];
    let rc = ChaCha20Poly1305::new((&key).into());
    let ring_key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).expect("32 bytes"));
    for len in [6usize, 60, 16 * 1024] {
        let mut buf = vec![0u8; len];
        g.throughput(Throughput::Bytes(len as u64));
        let mut n = 0u64;
        g.bench_function(BenchmarkId::new("chacha20poly1305/seal", len), |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                rc.encrypt_in_place_detached((&nonce).into(), &[], &mut buf)
                    .map(|t| t[0])
            })
        });
        g.bench_function(BenchmarkId::new("ring/seal", len), |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                ring_key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut buf,
                    )
                    .map(|t| t.as_ref()[0])
            })
        });
        // Opening with a wrong tag costs the same MAC computation plus no decryption; open a
        // valid ciphertext instead by sealing once per nonce value reused (benchmark only).
        let nonce = [0u8; 12];
        let mut ct = vec![1u8; len];
        let tag = rc
            .encrypt_in_place_detached((&nonce).into(), &[], &mut ct)
            .expect("seal");
        let mut work = ct.clone();
        g.bench_function(BenchmarkId::new("chacha20poly1305/open", len), |b| {
            b.iter(|| {
                work.copy_from_slice(&ct);
                rc.decrypt_in_place_detached((&nonce).into(), &[], &mut work, &tag)
            })
        });
        let ring_tag = ring::aead::Tag::try_from(&tag[..]).expect("16 bytes");
        g.bench_function(BenchmarkId::new("ring/open", len), |b| {
            b.iter(|| {
                work.copy_from_slice(&ct);
                ring_key
                    .open_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        ring_tag,
                        &mut work,
                        0..,
                    )
                    .map(|p| p.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, handshake, transport, submit_shares_extended, aead);
criterion_main!(benches);
