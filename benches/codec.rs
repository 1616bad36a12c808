//! Our SV2 codec beside the SRI crates, in one run, on the same bytes.
//!
//! Per message (SubmitSharesStandard, SubmitSharesExtended with an 8-byte extranonce,
//! NewExtendedMiningJob with a 12-level merkle path and ~60/~100-byte coinbase parts, Mining
//! SetNewPrevHash):
//! - `decode/<msg>/ours`: `Frame::parse` + `frame.message()` (dispatch on the header, like a
//!   pool that does not know what comes next).
//! - `decode/<msg>/ours_typed`: `Frame::parse` + `frame.decode::<M>()`.
//! - `decode/<msg>/sri`: `SerializedFrame::from_bytes` + `payload()` +
//!   `AnyMessage::try_from((header, payload))` (parsers_sv2), on a reused buffer.
//! - `encode/<msg>/ours`: `encode_frame` into a reused `Vec` (cleared each iteration).
//! - `encode/<msg>/sri`: `MessageFrame::from_message` + codec_sv2 `Encoder::encode`. The
//!   message is moved into the frame, so each iteration gets a clone made outside the timing.
//!
//! `frame_decode/<msg>/*`: header parse + payload slice only, in place (`Frame::parse`,
//! `SerializedFrame::from_bytes` on a borrowed buffer) and through each streaming decoder
//! (our `FrameDecoder` push + `next_frame`; codec_sv2's `Decoder` `writable` + `next_frame`).

use std::hint::black_box;
use std::time::Duration;

use binary_sv2::{B032, B064K, Seq0255, Sv2Option, U256 as SriU256};
use blvm_stratum_v2::wire::mining::{
    NewExtendedMiningJob, SetNewPrevHash, SubmitSharesExtended, SubmitSharesStandard,
};
use blvm_stratum_v2::wire::{
    B0_32, B0_64K, Frame, FrameDecoder, MAX_PAYLOAD_LEN, Message, Seq0_255, Sv2Message, U256,
    encode_frame,
};
use codec_sv2::{Decoded, Decoder, Encoder, MessageFrame};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use framing_sv2::framing::SerializedFrame;
use parsers_sv2::AnyMessage;

/// Deterministic filler bytes.
fn bytes(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn hash(seed: u8) -> U256 {
    bytes(seed, 32).try_into().unwrap()
}

struct Data {
    extranonce: Vec<u8>,
    path: Vec<U256>,
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    prev_hash: U256,
}

impl Data {
    fn new() -> Self {
        Data {
            extranonce: bytes(0xe0, 8),
            path: (0..12).map(|i| hash(0x40 + i)).collect(),
            // Filler of a real coinbase prefix's size: version, input count, null outpoint,
            // script length, BIP34 height and pool tag (62 bytes). The codec does not look
            // inside, so the content does not matter.
            prefix: bytes(0x10, 62),
            // Same for the suffix: nSequence, a P2WPKH payout and a witness commitment,
            // locktime (102 bytes).
            suffix: bytes(0x20, 102),
            prev_hash: hash(0x77),
        }
    }

    fn submit_standard(&self) -> SubmitSharesStandard {
        SubmitSharesStandard {
            channel_id: 17,
            sequence_number: 123_456,
            job_id: 42,
            nonce: 0xdead_beef,
            ntime: 1_700_000_123,
            version: 0x2000_e000,
        }
    }

    fn submit_extended(&self) -> SubmitSharesExtended<'_> {
        SubmitSharesExtended {
            channel_id: 17,
            sequence_number: 123_456,
            job_id: 42,
            nonce: 0xdead_beef,
            ntime: 1_700_000_123,
            version: 0x2000_e000,
            extranonce: B0_32::new(&self.extranonce).unwrap(),
        }
    }

    fn new_extended_job(&self) -> NewExtendedMiningJob<'_> {
        NewExtendedMiningJob {
            channel_id: 17,
            job_id: 43,
            min_ntime: Some(1_700_000_000),
            version: 0x2000_0000,
            version_rolling_allowed: true,
            merkle_path: Seq0_255::new(&self.path).unwrap(),
            coinbase_tx_prefix: B0_64K::new(&self.prefix).unwrap(),
            coinbase_tx_suffix: B0_64K::new(&self.suffix).unwrap(),
        }
    }

    fn set_new_prev_hash(&self) -> SetNewPrevHash {
        SetNewPrevHash {
            channel_id: 17,
            job_id: 43,
            prev_hash: self.prev_hash,
            min_ntime: 1_700_000_000,
            nbits: 0x1703_4219,
        }
    }

    fn sri_submit_standard(&self) -> mining_sv2::SubmitSharesStandard {
        let m = self.submit_standard();
        mining_sv2::SubmitSharesStandard {
            channel_id: m.channel_id,
            sequence_number: m.sequence_number,
            job_id: m.job_id,
            nonce: m.nonce,
            ntime: m.ntime,
            version: m.version,
        }
    }

    fn sri_submit_extended(&self) -> mining_sv2::SubmitSharesExtended<'_> {
        let m = self.submit_extended();
        mining_sv2::SubmitSharesExtended {
            channel_id: m.channel_id,
            sequence_number: m.sequence_number,
            job_id: m.job_id,
            nonce: m.nonce,
            ntime: m.ntime,
            version: m.version,
            extranonce: B032::new(&self.extranonce).unwrap(),
        }
    }

    fn sri_new_extended_job(&self) -> mining_sv2::NewExtendedMiningJob<'_> {
        let m = self.new_extended_job();
        mining_sv2::NewExtendedMiningJob {
            channel_id: m.channel_id,
            job_id: m.job_id,
            min_ntime: Sv2Option::new(m.min_ntime),
            version: m.version,
            version_rolling_allowed: m.version_rolling_allowed,
            merkle_path: Seq0255::new(self.path.iter().map(SriU256::from).collect()).unwrap(),
            coinbase_tx_prefix: B064K::new(&self.prefix).unwrap(),
            coinbase_tx_suffix: B064K::new(&self.suffix).unwrap(),
        }
    }

    fn sri_set_new_prev_hash(&self) -> mining_sv2::SetNewPrevHash<'_> {
        let m = self.set_new_prev_hash();
        mining_sv2::SetNewPrevHash {
            channel_id: m.channel_id,
            job_id: m.job_id,
            prev_hash: SriU256::from(&self.prev_hash),
            min_ntime: m.min_ntime,
            nbits: m.nbits,
        }
    }
}

/// SRI's frame for a message: `MessageFrame::from_message` written by codec_sv2's `Encoder`.
fn sri_encode<T: binary_sv2::Serialize + binary_sv2::GetSize>(
    encoder: &mut Encoder,
    msg: T,
    msg_type: u8,
    channel_msg: bool,
) -> Vec<u8> {
    let frame = MessageFrame::from_message(msg, msg_type, 0, channel_msg).unwrap();
    encoder.encode(frame).unwrap()
}

/// SRI's decode of a whole frame held in `buf`: frame, header, payload, `AnyMessage`.
#[inline]
fn sri_decode(buf: &mut [u8]) -> AnyMessage<'_> {
    let frame = SerializedFrame::from_bytes(buf).unwrap();
    let header = frame.header();
    let frame_bytes = frame.into_bytes();
    let payload = &mut frame_bytes[framing_sv2::header::Header::SIZE..];
    AnyMessage::try_from((header, payload)).unwrap()
}

/// Our decode of a whole frame: `Frame::parse` + `message()`.
#[inline]
fn ours_decode(bytes: &[u8]) -> Message<'_> {
    let (frame, _) = Frame::parse(bytes, MAX_PAYLOAD_LEN).unwrap().unwrap();
    frame.message().unwrap().0
}

/// Feeds a whole frame to codec_sv2's streaming `Decoder` as a socket reader would: fill
/// `writable()`, call `next_frame()`, until a frame comes out.
#[inline]
fn sri_stream_decode(decoder: &mut Decoder, bytes: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let w = decoder.writable();
        let n = w.len();
        w.copy_from_slice(&bytes[at..at + n]);
        at += n;
        match decoder.next_frame().unwrap() {
            Decoded::Frame(mut f) => return f.payload().len(),
            Decoded::Incomplete(_) => continue,
        }
    }
}

fn bench_case<'a, M, S>(c: &mut Criterion, name: &str, ours: &M, sri: &S, sri_type: (u8, bool))
where
    M: Sv2Message<'a>,
    S: binary_sv2::Serialize + binary_sv2::GetSize + Clone,
{
    let mut sri_encoder = Encoder::new();
    let mut ours_bytes = Vec::new();
    encode_frame(ours, &mut ours_bytes).unwrap();
    // `frame.decode::<M>()` borrows for M's lifetime; the bytes live for the whole run.
    let ours_bytes: &'static [u8] = ours_bytes.leak();
    let sri_bytes = sri_encode(&mut sri_encoder, sri.clone(), sri_type.0, sri_type.1);
    assert_eq!(ours_bytes, &sri_bytes[..], "{name}: both encoders agree");

    // SRI decodes in place from a mutable buffer; check it leaves the bytes as they were, so a
    // reused buffer is a fair stand-in for fresh input.
    let mut sri_buf = sri_bytes.clone();
    let decoded = sri_decode(&mut sri_buf);
    assert!(
        matches!(decoded, AnyMessage::Mining(_)),
        "{name}: SRI decodes a Mining message"
    );
    assert_eq!(
        sri_buf, sri_bytes,
        "{name}: SRI decoding leaves its input as it was"
    );
    assert_eq!(
        ours_decode(ours_bytes).name(),
        M::NAME,
        "{name}: ours decodes"
    );

    let mut g = c.benchmark_group(format!("decode/{name}"));
    g.bench_function("ours", |b| {
        b.iter(|| black_box(ours_decode(black_box(ours_bytes))))
    });
    g.bench_function("ours_typed", |b| {
        b.iter(|| {
            let (frame, _) = Frame::parse(black_box(ours_bytes), MAX_PAYLOAD_LEN)
                .unwrap()
                .unwrap();
            black_box(frame.decode::<M>().unwrap().0)
        })
    });
    g.bench_function("sri", |b| {
        b.iter(|| {
            black_box(sri_decode(black_box(&mut sri_buf)));
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("encode/{name}"));
    let mut out = Vec::with_capacity(1024);
    g.bench_function("ours", |b| {
        b.iter(|| {
            out.clear();
            encode_frame(black_box(ours), &mut out).unwrap();
            black_box(&out);
        })
    });
    g.bench_function("sri", |b| {
        b.iter_batched(
            || sri.clone(),
            |m| black_box(sri_encode(&mut sri_encoder, m, sri_type.0, sri_type.1)),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group(format!("frame_decode/{name}"));
    g.bench_function("ours", |b| {
        b.iter(|| {
            let (frame, used) = Frame::parse(black_box(ours_bytes), MAX_PAYLOAD_LEN)
                .unwrap()
                .unwrap();
            black_box((frame.header, frame.payload, used));
        })
    });
    g.bench_function("sri", |b| {
        b.iter(|| {
            let mut frame = SerializedFrame::from_bytes(black_box(&mut sri_buf[..])).unwrap();
            let header = frame.header();
            black_box((header, frame.payload().len()));
        })
    });
    let mut decoder = FrameDecoder::new(MAX_PAYLOAD_LEN);
    g.bench_function("ours_stream", |b| {
        b.iter(|| {
            decoder.push(black_box(ours_bytes)).unwrap();
            let frame = decoder.next_frame().unwrap().unwrap();
            black_box((frame.header, frame.payload));
        })
    });
    let mut sri_decoder = Decoder::new();
    g.bench_function("sri_stream", |b| {
        b.iter(|| black_box(sri_stream_decode(&mut sri_decoder, black_box(&sri_bytes))))
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let d = Data::new();
    bench_case(
        c,
        "SubmitSharesStandard",
        &d.submit_standard(),
        &d.sri_submit_standard(),
        (
            mining_sv2::MESSAGE_TYPE_SUBMIT_SHARES_STANDARD,
            mining_sv2::CHANNEL_BIT_SUBMIT_SHARES_STANDARD,
        ),
    );
    bench_case(
        c,
        "SubmitSharesExtended",
        &d.submit_extended(),
        &d.sri_submit_extended(),
        (
            mining_sv2::MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED,
            mining_sv2::CHANNEL_BIT_SUBMIT_SHARES_EXTENDED,
        ),
    );
    bench_case(
        c,
        "NewExtendedMiningJob",
        &d.new_extended_job(),
        &d.sri_new_extended_job(),
        (
            mining_sv2::MESSAGE_TYPE_NEW_EXTENDED_MINING_JOB,
            mining_sv2::CHANNEL_BIT_NEW_EXTENDED_MINING_JOB,
        ),
    );
    bench_case(
        c,
        "SetNewPrevHash",
        &d.set_new_prev_hash(),
        &d.sri_set_new_prev_hash(),
        (
            mining_sv2::MESSAGE_TYPE_MINING_SET_NEW_PREV_HASH,
            mining_sv2::CHANNEL_BIT_MINING_SET_NEW_PREV_HASH,
        ),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = codec
}
criterion_main!(benches);
