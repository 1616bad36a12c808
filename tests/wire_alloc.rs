//! Heap allocations on the decode path of share submissions: ours must be zero; SRI's count is
//! printed for comparison (`cargo test --test wire_alloc -- --nocapture`).
//!
//! A counting global allocator counts, per thread, the allocations (alloc, alloc_zeroed,
//! realloc) made while a closure runs, and the bytes they asked for, so tests running in
//! parallel do not disturb each other.

use binary_sv2::B032;
use blvm_stratum_v2::wire::mining::{SubmitSharesExtended, SubmitSharesStandard};
use blvm_stratum_v2::wire::{
    B0_32, Frame, FrameDecoder, FrameHeader, HEADER_LEN, MAX_PAYLOAD_LEN, Message, TlvDecoder,
    TlvEncoder, USER_IDENTITY, encode_frame, encode_frame_with_tlv,
};
use codec_sv2::{Decoded, Decoder, Encoder, MessageFrame};
use framing_sv2::framing::SerializedFrame;
use framing_sv2::header::Header;
use parsers_sv2::{AnyMessage, Mining};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{count, count_bytes};

const EXTRANONCE: [u8; 8] = [0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7];

fn standard() -> SubmitSharesStandard {
    SubmitSharesStandard {
        channel_id: 17,
        sequence_number: 123_456,
        job_id: 42,
        nonce: 0xdead_beef,
        ntime: 1_700_000_123,
        version: 0x2000_e000,
    }
}

fn extended() -> SubmitSharesExtended<'static> {
    SubmitSharesExtended {
        channel_id: 17,
        sequence_number: 123_456,
        job_id: 42,
        nonce: 0xdead_beef,
        ntime: 1_700_000_123,
        version: 0x2000_e000,
        extranonce: B0_32::new(&EXTRANONCE).unwrap(),
    }
}

fn frames() -> [(&'static str, Vec<u8>); 2] {
    let mut s = Vec::new();
    encode_frame(&standard(), &mut s).unwrap();
    let mut e = Vec::new();
    encode_frame(&extended(), &mut e).unwrap();
    [("SubmitSharesStandard", s), ("SubmitSharesExtended", e)]
}

/// Decodes a whole frame the way the pool does: parse in place, dispatch on the header.
fn ours_decode(bytes: &[u8]) -> Message<'_> {
    let (frame, used) = Frame::parse(bytes, MAX_PAYLOAD_LEN).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    let (msg, rest) = frame.message().unwrap();
    assert!(rest.is_empty());
    msg
}

#[test]
fn ours_decodes_share_submissions_without_allocating() {
    // The counter works.
    let (_, n) = count(|| std::hint::black_box(vec![1u8; 3]));
    assert_eq!(n, 1, "the counting allocator sees a Vec allocation");

    for (name, bytes) in frames() {
        let (msg, n) = count(|| ours_decode(std::hint::black_box(&bytes)));
        assert_eq!(n, 0, "{name}: Frame::parse + message() allocated {n} times");
        assert_eq!(msg.name(), name);

        // The typed path too.
        let (_, n) = count(|| {
            let (frame, _) = Frame::parse(&bytes, MAX_PAYLOAD_LEN).unwrap().unwrap();
            match name {
                "SubmitSharesStandard" => {
                    let (m, _) = frame.decode::<SubmitSharesStandard>().unwrap();
                    assert_eq!(m, standard());
                }
                _ => {
                    let (m, _) = frame.decode::<SubmitSharesExtended<'_>>().unwrap();
                    assert_eq!(m, extended());
                }
            }
        });
        assert_eq!(
            n, 0,
            "{name}: Frame::parse + decode::<M>() allocated {n} times"
        );
        println!("ours {name}: {n} allocations (parse + message decode)");
    }
}

#[test]
fn ours_decodes_tlv_fields_without_allocating() {
    let mut tlv = TlvEncoder::new();
    tlv.push(0x0002, 0x01, b"rig-7").unwrap();
    let mut bytes = Vec::new();
    encode_frame_with_tlv(&extended(), &tlv, &mut bytes).unwrap();
    let (fields, n) = count(|| {
        let (frame, _) = Frame::parse(&bytes, MAX_PAYLOAD_LEN).unwrap().unwrap();
        let (_, rest) = frame.message().unwrap();
        TlvDecoder::new(rest, &[USER_IDENTITY])
            .map(|t| t.unwrap().value.len())
            .sum::<usize>()
    });
    assert_eq!(fields, 5);
    assert_eq!(n, 0, "message + TLV decode allocated {n} times");
}

#[test]
fn ours_streaming_decoder_does_not_allocate_in_steady_state() {
    for (name, bytes) in frames() {
        let mut dec = FrameDecoder::new(MAX_PAYLOAD_LEN);
        // Warm up: the buffer grows to hold a frame once.
        for _ in 0..4 {
            dec.push(&bytes).unwrap();
            dec.next_frame().unwrap().unwrap();
        }
        let (_, n) = count(|| {
            for _ in 0..100 {
                // Split each frame to exercise the partial path.
                dec.push(&bytes[..5]).unwrap();
                assert!(dec.next_frame().unwrap().is_none());
                dec.push(&bytes[5..]).unwrap();
                let frame = dec.next_frame().unwrap().unwrap();
                let (msg, _) = frame.message().unwrap();
                assert_eq!(msg.name(), name);
            }
        });
        assert_eq!(
            n, 0,
            "{name}: 100 frames through FrameDecoder allocated {n} times"
        );
    }
}

fn header_announcing(msg_length: u32) -> [u8; 6] {
    FrameHeader {
        extension_type: 0x8000,
        msg_type: 0x1b,
        msg_length,
    }
    .to_bytes()
}

/// What a peer's 6-byte header costs before any payload: the decoder reserves room for the
/// announced payload, bounded by the configured maximum.
#[test]
fn streaming_decoder_reservation_is_bounded_by_its_maximum() {
    for max in [1, 1024, 65_535] {
        let mut dec = FrameDecoder::new(max);
        let ((), _, bytes) = count_bytes(|| {
            dec.push(&header_announcing(max as u32)).unwrap();
            assert!(dec.next_frame().unwrap().is_none());
        });
        println!("FrameDecoder::new({max}): a 6-byte header made it allocate {bytes} bytes");
        assert!(
            bytes <= 2 * (HEADER_LEN + max) + 64,
            "max {max}: {bytes} bytes"
        );
    }
}

/// With the default maximum (2^24-1), a 6-byte header alone must not make `FrameDecoder`
/// reserve the whole announced payload (16 MiB): it grows in steps as bytes arrive, as
/// codec_sv2 does.
#[test]
fn streaming_decoder_reserves_little_before_the_payload_arrives() {
    let mut dec = FrameDecoder::new(MAX_PAYLOAD_LEN);
    let ((), _, bytes) = count_bytes(|| {
        dec.push(&header_announcing(MAX_PAYLOAD_LEN as u32))
            .unwrap();
        assert!(dec.next_frame().unwrap().is_none());
    });
    println!("FrameDecoder::new(MAX_PAYLOAD_LEN): a 6-byte header made it allocate {bytes} bytes");
    assert!(
        bytes <= 64 * 1024,
        "a 6-byte header made the decoder allocate {bytes} bytes"
    );
}

/// SRI's decode of a whole frame held in `buf`: `SerializedFrame::from_bytes` + header +
/// payload + `AnyMessage::try_from`.
fn sri_decode(buf: &mut [u8]) -> AnyMessage<'_> {
    let frame = SerializedFrame::from_bytes(buf).unwrap();
    let header = frame.header();
    let payload = &mut frame.into_bytes()[Header::SIZE..];
    AnyMessage::try_from((header, payload)).unwrap()
}

#[test]
fn sri_allocations_on_the_same_decode_path() {
    // SRI's bytes for the same messages are ours (checked by the interop tests; checked here
    // again for these two).
    let sri_std = mining_sv2::SubmitSharesStandard {
        channel_id: 17,
        sequence_number: 123_456,
        job_id: 42,
        nonce: 0xdead_beef,
        ntime: 1_700_000_123,
        version: 0x2000_e000,
    };
    let sri_ext = mining_sv2::SubmitSharesExtended {
        channel_id: 17,
        sequence_number: 123_456,
        job_id: 42,
        nonce: 0xdead_beef,
        ntime: 1_700_000_123,
        version: 0x2000_e000,
        extranonce: B032::new(&EXTRANONCE).unwrap(),
    };
    let mut enc = Encoder::new();
    let (s, enc_std) = count(|| {
        enc.encode(
            MessageFrame::from_message(
                sri_std,
                mining_sv2::MESSAGE_TYPE_SUBMIT_SHARES_STANDARD,
                0,
                true,
            )
            .unwrap(),
        )
        .unwrap()
    });
    let (e, enc_ext) = count(|| {
        enc.encode(
            MessageFrame::from_message(
                sri_ext,
                mining_sv2::MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED,
                0,
                true,
            )
            .unwrap(),
        )
        .unwrap()
    });
    let [(_, ours_s), (_, ours_e)] = frames();
    assert_eq!(s, ours_s);
    assert_eq!(e, ours_e);
    println!(
        "SRI encode (MessageFrame + Encoder): SubmitSharesStandard {enc_std} allocations, SubmitSharesExtended {enc_ext} allocations"
    );

    for (name, bytes) in frames() {
        // In place, on a buffer the caller owns.
        let mut buf = bytes.clone();
        let (is_share, n) = count(|| {
            matches!(
                sri_decode(&mut buf),
                AnyMessage::Mining(Mining::SubmitSharesStandard(_))
                    | AnyMessage::Mining(Mining::SubmitSharesExtended(_))
            )
        });
        assert!(is_share);
        println!(
            "SRI {name}: {n} allocations (SerializedFrame::from_bytes + AnyMessage::try_from)"
        );

        // Through codec_sv2's streaming Decoder, which hands out each frame as its own Vec.
        let mut decoder = Decoder::new();
        let (_, warm) = count(|| stream_decode(&mut decoder, &bytes));
        let (_, n) = count(|| stream_decode(&mut decoder, &bytes));
        println!(
            "SRI {name}: {n} allocations (codec_sv2 Decoder + AnyMessage::try_from; first frame {warm})"
        );
        assert!(n > 0, "SRI's codec hands each frame out as an owned buffer");
    }
}

fn stream_decode(decoder: &mut Decoder, bytes: &[u8]) -> bool {
    let mut at = 0;
    loop {
        let w = decoder.writable();
        let n = w.len();
        w.copy_from_slice(&bytes[at..at + n]);
        at += n;
        if let Decoded::Frame(mut f) = decoder.next_frame().unwrap() {
            let header = f.header();
            return AnyMessage::try_from((header, f.payload())).is_ok();
        }
    }
}
