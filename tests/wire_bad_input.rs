//! Bad input never panics and always gives a typed error that names what was wrong.
//!
//! Every test asserts the exact `WireError` / `FieldError` variant, with the message and field
//! names and the numbers it carries, and for a few the `Display` text an operator would read.

use blvm_stratum_v2::wire::common::{SetupConnection, SetupConnectionError};
use blvm_stratum_v2::wire::mining::{
    NewExtendedMiningJob, NewMiningJob, SetNewPrevHash, SubmitSharesExtended, SubmitSharesStandard,
};
use blvm_stratum_v2::wire::template_distribution::NewTemplate;
use blvm_stratum_v2::wire::{
    B0_32, B0_64K, B0_255, FieldError, Frame, FrameDecoder, FrameHeader, HEADER_LEN,
    MAX_PAYLOAD_LEN, Message, Seq0_64K, Seq0_255, Str0_255, Sv2Message, Tlv, TlvDecoder,
    TlvEncoder, TlvSpec, U24, U256, USER_IDENTITY, WireError, encode_frame, encode_frame_with_tlv,
    encode_message_frame,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A whole frame for `msg`, as our encoder writes it.
fn frame_of<'a, M: Sv2Message<'a>>(msg: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(msg, &mut out).expect("test messages fit a frame");
    out
}

/// A frame with the given header fields and payload (msg_length = payload length).
fn raw_frame(extension_type: u16, msg_type: u8, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        extension_type,
        msg_type,
        msg_length: payload.len() as u32,
    };
    let mut out = header.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A frame for message type `M` whose payload is `payload`.
fn frame_for<'a, M: Sv2Message<'a>>(payload: &[u8]) -> Vec<u8> {
    raw_frame(M::frame_extension_type(), M::MSG_TYPE, payload)
}

/// The frame header ids of message type `M`.
fn ids<'a, M: Sv2Message<'a>>() -> (u16, u8) {
    (M::frame_extension_type(), M::MSG_TYPE)
}

fn field_err(message: &'static str, field: &'static str, kind: FieldError) -> WireError {
    WireError::Field {
        message,
        field,
        kind,
    }
}

fn truncated(needed: usize, available: usize) -> FieldError {
    FieldError::Truncated { needed, available }
}

/// One field of a message's payload layout, for computing the error a cut inside it gives.
#[derive(Clone, Copy)]
enum Layout {
    /// A fixed-size field (integers, U256, BOOL).
    Fixed(&'static str, usize),
    /// A length/count/tag prefix of `width` bytes followed by `data` bytes (B0_*, STR0_255,
    /// SEQ0_*, OPTION).
    Prefixed(&'static str, usize, usize),
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Fixed(n, _) | Layout::Prefixed(n, _, _) => n,
        }
    }
    fn len(self) -> usize {
        match self {
            Layout::Fixed(_, n) => n,
            Layout::Prefixed(_, w, d) => w + d,
        }
    }
}

/// For every cut `c` strictly inside the payload, the frame holding `payload[..c]` decodes
/// (through `frame.message()` and `frame.decode::<M>()`) to exactly the truncation error of
/// the field the cut falls in.
///
/// `M` is given as its frame ids and two decoders (through the frame and on the bare payload)
/// because the message types borrow from their input.
fn assert_truncations(
    name: &'static str,
    (extension_type, msg_type): (u16, u8),
    decode_frame: fn(&Frame<'_>) -> Result<(), WireError>,
    decode_payload: fn(&[u8]) -> Result<(), WireError>,
    payload: &[u8],
    layout: &[Layout],
) {
    let total: usize = layout.iter().map(|f| f.len()).sum();
    assert_eq!(total, payload.len(), "layout of {name} matches the payload");
    let mut start = 0;
    let mut cuts_checked = 0;
    for f in layout {
        for c in start..start + f.len() {
            let in_field = c - start;
            let kind = match *f {
                Layout::Fixed(_, size) => truncated(size, in_field),
                Layout::Prefixed(_, w, _) if in_field < w => truncated(w, in_field),
                Layout::Prefixed(_, w, data) => truncated(data, in_field - w),
            };
            let expected = field_err(name, f.name(), kind);

            let bytes = raw_frame(extension_type, msg_type, &payload[..c]);
            let frame = Frame::parse_exact(&bytes).expect("the frame itself is whole");
            assert_eq!(
                frame.message().unwrap_err(),
                expected,
                "{name} cut at {c} (inside {})",
                f.name()
            );
            assert_eq!(decode_frame(&frame).unwrap_err(), expected, "cut at {c}");
            assert_eq!(
                decode_payload(&payload[..c]).unwrap_err(),
                expected,
                "cut at {c}"
            );
            cuts_checked += 1;
        }
        start += f.len();
    }
    assert_eq!(cuts_checked, payload.len());
    // The whole payload decodes.
    let bytes = raw_frame(extension_type, msg_type, payload);
    let frame = Frame::parse_exact(&bytes).unwrap();
    assert_eq!(decode_frame(&frame), Ok(()));
    assert_eq!(decode_payload(payload), Ok(()));
    let (_, rest) = frame.message().unwrap();
    assert!(rest.is_empty());
}

fn submit_extended<'a>(extranonce: &'a [u8]) -> SubmitSharesExtended<'a> {
    SubmitSharesExtended {
        channel_id: 7,
        sequence_number: 42,
        job_id: 3,
        nonce: 0xdead_beef,
        ntime: 1_700_000_000,
        version: 0x2000_0000,
        extranonce: B0_32::new(extranonce).unwrap(),
    }
}

fn new_extended_job<'a>(
    path: &'a [U256],
    prefix: &'a [u8],
    suffix: &'a [u8],
) -> NewExtendedMiningJob<'a> {
    NewExtendedMiningJob {
        channel_id: 1,
        job_id: 2,
        min_ntime: Some(1_700_000_000),
        version: 0x2000_0000,
        version_rolling_allowed: true,
        merkle_path: Seq0_255::new(path).unwrap(),
        coinbase_tx_prefix: B0_64K::new(prefix).unwrap(),
        coinbase_tx_suffix: B0_64K::new(suffix).unwrap(),
    }
}

// ---------------------------------------------------------------------------------------------
// Truncated frames
// ---------------------------------------------------------------------------------------------

#[test]
fn header_cut_at_each_of_its_six_positions() {
    let full = frame_of(&submit_extended(&[1; 8]));
    for cut in 0..HEADER_LEN {
        let bytes = &full[..cut];
        assert_eq!(
            Frame::parse(bytes, MAX_PAYLOAD_LEN),
            Ok(None),
            "cut at {cut}"
        );
        // A buffer meant to hold a whole frame: the header alone is what is known to be needed.
        let err = Frame::parse_exact(bytes).unwrap_err();
        assert_eq!(
            err,
            WireError::TruncatedFrame {
                needed: HEADER_LEN,
                available: cut
            },
            "cut at {cut}"
        );
        assert_eq!(
            err.to_string(),
            format!("truncated frame: 6 bytes needed, {cut} available")
        );
        // The streaming decoder waits for more.
        let mut dec = FrameDecoder::new(MAX_PAYLOAD_LEN);
        dec.push(bytes).unwrap();
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(dec.buffered(), cut);
    }
}

#[test]
fn header_only() {
    let full = frame_of(&submit_extended(&[1; 8]));
    let payload_len = full.len() - HEADER_LEN;
    let bytes = &full[..HEADER_LEN];
    assert_eq!(Frame::parse(bytes, MAX_PAYLOAD_LEN), Ok(None));
    assert_eq!(
        Frame::parse_exact(bytes).unwrap_err(),
        WireError::TruncatedFrame {
            needed: HEADER_LEN + payload_len,
            available: HEADER_LEN
        }
    );
    let mut dec = FrameDecoder::new(MAX_PAYLOAD_LEN);
    dec.push(bytes).unwrap();
    assert_eq!(dec.next_frame(), Ok(None));
}

#[test]
fn payload_shorter_than_msg_length() {
    let full = frame_of(&submit_extended(&[1; 8]));
    for missing in 1..=full.len() - HEADER_LEN {
        let bytes = &full[..full.len() - missing];
        let err = Frame::parse_exact(bytes).unwrap_err();
        assert_eq!(
            err,
            WireError::TruncatedFrame {
                needed: full.len(),
                available: full.len() - missing
            },
            "{missing} bytes missing"
        );
        assert_eq!(Frame::parse(bytes, MAX_PAYLOAD_LEN), Ok(None));
    }
    // One byte too many is not silently ignored either.
    let mut long = full.clone();
    long.push(0);
    assert_eq!(
        Frame::parse_exact(&long).unwrap_err(),
        WireError::TrailingBytes { len: 1 }
    );
    assert_eq!(
        WireError::TrailingBytes { len: 1 }.to_string(),
        "1 bytes after the end of the frame"
    );
}

// ---------------------------------------------------------------------------------------------
// Payload truncated inside each field
// ---------------------------------------------------------------------------------------------

#[test]
fn submit_shares_extended_truncated_inside_each_field() {
    let msg = submit_extended(&[0xab; 8]);
    let mut payload = Vec::new();
    msg.encode_payload(&mut payload);
    assert_truncations(
        "SubmitSharesExtended",
        ids::<SubmitSharesExtended<'_>>(),
        |f| f.decode::<SubmitSharesExtended<'_>>().map(|_| ()),
        |p| SubmitSharesExtended::decode_prefix(p).map(|_| ()),
        &payload,
        &[
            Layout::Fixed("channel_id", 4),
            Layout::Fixed("sequence_number", 4),
            Layout::Fixed("job_id", 4),
            Layout::Fixed("nonce", 4),
            Layout::Fixed("ntime", 4),
            Layout::Fixed("version", 4),
            Layout::Prefixed("extranonce", 1, 8),
        ],
    );
}

#[test]
fn submit_shares_extended_truncation_message_names_the_field() {
    let msg = submit_extended(&[0xab; 8]);
    let mut payload = Vec::new();
    msg.encode_payload(&mut payload);
    // Cut after 3 of the 8 extranonce bytes.
    let err = SubmitSharesExtended::decode_prefix(&payload[..24 + 1 + 3]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SubmitSharesExtended.extranonce: truncated: needs 8 more bytes, 3 left"
    );
    let err = SubmitSharesExtended::decode_prefix(&payload[..10]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SubmitSharesExtended.job_id: truncated: needs 4 more bytes, 2 left"
    );
}

#[test]
fn submit_shares_standard_truncated_inside_each_field() {
    let msg = SubmitSharesStandard {
        channel_id: 1,
        sequence_number: 2,
        job_id: 3,
        nonce: 4,
        ntime: 5,
        version: 6,
    };
    let mut payload = Vec::new();
    msg.encode_payload(&mut payload);
    assert_truncations(
        "SubmitSharesStandard",
        ids::<SubmitSharesStandard>(),
        |f| f.decode::<SubmitSharesStandard>().map(|_| ()),
        |p| SubmitSharesStandard::decode_prefix(p).map(|_| ()),
        &payload,
        &[
            Layout::Fixed("channel_id", 4),
            Layout::Fixed("sequence_number", 4),
            Layout::Fixed("job_id", 4),
            Layout::Fixed("nonce", 4),
            Layout::Fixed("ntime", 4),
            Layout::Fixed("version", 4),
        ],
    );
}

#[test]
fn new_extended_mining_job_truncated_inside_each_field() {
    let path = [[0x11; 32], [0x22; 32], [0x33; 32]];
    let prefix = [0x44; 5];
    let suffix = [0x55; 6];
    let msg = new_extended_job(&path, &prefix, &suffix);
    let mut payload = Vec::new();
    msg.encode_payload(&mut payload);
    assert_truncations(
        "NewExtendedMiningJob",
        ids::<NewExtendedMiningJob<'_>>(),
        |f| f.decode::<NewExtendedMiningJob<'_>>().map(|_| ()),
        |p| NewExtendedMiningJob::decode_prefix(p).map(|_| ()),
        &payload,
        &[
            Layout::Fixed("channel_id", 4),
            Layout::Fixed("job_id", 4),
            // OPTION[U32]: a tag byte then the value.
            Layout::Prefixed("min_ntime", 1, 4),
            Layout::Fixed("version", 4),
            Layout::Fixed("version_rolling_allowed", 1),
            Layout::Prefixed("merkle_path", 1, 3 * 32),
            Layout::Prefixed("coinbase_tx_prefix", 2, 5),
            Layout::Prefixed("coinbase_tx_suffix", 2, 6),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Oversized length fields
// ---------------------------------------------------------------------------------------------

#[test]
fn b0_32_length_33() {
    let mut payload = Vec::new();
    submit_extended(&[]).encode_payload(&mut payload);
    payload.pop(); // the empty extranonce's length byte
    payload.push(33);
    payload.extend_from_slice(&[0; 33]);
    let bytes = frame_for::<SubmitSharesExtended<'_>>(&payload);
    let err = Frame::parse_exact(&bytes).unwrap().message().unwrap_err();
    assert_eq!(
        err,
        field_err(
            "SubmitSharesExtended",
            "extranonce",
            FieldError::TooLong {
                kind: "B0_32",
                len: 33,
                max: 32
            }
        )
    );
    assert_eq!(
        err.to_string(),
        "SubmitSharesExtended.extranonce: B0_32 length 33 exceeds its bound of 32"
    );
    // The bound is checked before the length is compared with what is left.
    let short = frame_for::<SubmitSharesExtended<'_>>(&payload[..26]);
    assert_eq!(
        Frame::parse_exact(&short).unwrap().message().unwrap_err(),
        err
    );
}

#[test]
fn str0_255_length_past_the_end() {
    // SetupConnectionError { flags: u32, error_code: STR0_255 } announcing 10 bytes, 3 present.
    let mut payload = 5u32.to_le_bytes().to_vec();
    payload.push(10);
    payload.extend_from_slice(b"abc");
    let bytes = frame_for::<SetupConnectionError<'_>>(&payload);
    let err = Frame::parse_exact(&bytes).unwrap().message().unwrap_err();
    assert_eq!(
        err,
        field_err("SetupConnectionError", "error_code", truncated(10, 3))
    );
    assert_eq!(
        err.to_string(),
        "SetupConnectionError.error_code: truncated: needs 10 more bytes, 3 left"
    );
}

#[test]
fn seq0_255_count_longer_than_the_data() {
    // NewExtendedMiningJob whose merkle_path announces 5 hashes; only 2 hashes follow and the
    // payload ends there.
    let mut payload = Vec::new();
    payload.extend_from_slice(&1u32.to_le_bytes()); // channel_id
    payload.extend_from_slice(&2u32.to_le_bytes()); // job_id
    payload.push(0); // min_ntime: None
    payload.extend_from_slice(&0x2000_0000u32.to_le_bytes()); // version
    payload.push(1); // version_rolling_allowed
    payload.push(5); // merkle_path count
    payload.extend_from_slice(&[0x77; 64]);
    let bytes = frame_for::<NewExtendedMiningJob<'_>>(&payload);
    let err = Frame::parse_exact(&bytes).unwrap().message().unwrap_err();
    assert_eq!(
        err,
        field_err("NewExtendedMiningJob", "merkle_path", truncated(5 * 32, 64))
    );
}

#[test]
fn seq0_64k_count_longer_than_the_data() {
    // RequestExtensions { request_id: u16, requested_extensions: SEQ0_64K[U16] }: 3 announced,
    // one present.
    let payload = [1, 0, 3, 0, 2, 0];
    let bytes = raw_frame(0x0001, 0x00, &payload);
    let err = Frame::parse_exact(&bytes).unwrap().message().unwrap_err();
    assert_eq!(
        err,
        field_err("RequestExtensions", "requested_extensions", truncated(6, 2))
    );
}

#[test]
fn option_length_2() {
    // NewMiningJob { channel_id, job_id, min_ntime: OPTION[U32], version, merkle_root }.
    let mut payload = Vec::new();
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(&2u32.to_le_bytes());
    payload.push(2); // SEQ0_1 length 2
    payload.extend_from_slice(&[0; 4 + 4 + 4 + 32]);
    let bytes = frame_for::<NewMiningJob>(&payload);
    let err = Frame::parse_exact(&bytes).unwrap().message().unwrap_err();
    assert_eq!(
        err,
        field_err(
            "NewMiningJob",
            "min_ntime",
            FieldError::TooLong {
                kind: "OPTION",
                len: 2,
                max: 1
            }
        )
    );
    assert_eq!(
        err.to_string(),
        "NewMiningJob.min_ntime: OPTION length 2 exceeds its bound of 1"
    );
    // Same in NewExtendedMiningJob, with 0xff.
    let path = [[0; 32]];
    let mut payload = Vec::new();
    new_extended_job(&path, &[1], &[2]).encode_payload(&mut payload);
    payload[8] = 0xff;
    assert_eq!(
        NewExtendedMiningJob::decode_prefix(&payload).unwrap_err(),
        field_err(
            "NewExtendedMiningJob",
            "min_ntime",
            FieldError::TooLong {
                kind: "OPTION",
                len: 255,
                max: 1
            }
        )
    );
}

#[test]
fn b0_64k_length_past_the_end() {
    let mut payload = Vec::new();
    payload.extend_from_slice(&1u32.to_le_bytes()); // channel_id
    payload.extend_from_slice(&2u32.to_le_bytes()); // job_id
    payload.push(0); // min_ntime: None
    payload.extend_from_slice(&0x2000_0000u32.to_le_bytes()); // version
    payload.push(0); // version_rolling_allowed
    payload.push(0); // merkle_path: empty
    payload.extend_from_slice(&1000u16.to_le_bytes()); // coinbase_tx_prefix: 1000 bytes ...
    payload.extend_from_slice(&[0x99; 10]); // ... of which 10 are present
    let bytes = frame_for::<NewExtendedMiningJob<'_>>(&payload);
    let err = Frame::parse_exact(&bytes).unwrap().message().unwrap_err();
    assert_eq!(
        err,
        field_err(
            "NewExtendedMiningJob",
            "coinbase_tx_prefix",
            truncated(1000, 10)
        )
    );
    // The largest length a B0_64K can announce, with nothing after it.
    let mut payload = payload[..payload.len() - 12].to_vec();
    payload.extend_from_slice(&u16::MAX.to_le_bytes());
    assert_eq!(
        NewExtendedMiningJob::decode_prefix(&payload).unwrap_err(),
        field_err(
            "NewExtendedMiningJob",
            "coinbase_tx_prefix",
            truncated(65_535, 0)
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Frames larger than the decoder accepts
// ---------------------------------------------------------------------------------------------

fn oversized_header(len: u32) -> [u8; HEADER_LEN] {
    FrameHeader {
        extension_type: 0x8000,
        msg_type: 0x1b,
        msg_length: len,
    }
    .to_bytes()
}

#[test]
fn frame_too_large_is_an_error_as_soon_as_the_header_is_in() {
    let max = 100;
    let expected = WireError::FrameTooLarge { len: 101, max };
    let header = oversized_header(101);

    // All six bytes at once, no payload yet.
    let mut dec = FrameDecoder::new(max);
    assert_eq!(dec.push(&header), Err(expected.clone()));
    assert_eq!(
        expected.to_string(),
        "frame payload of 101 bytes exceeds the maximum of 100"
    );

    // One byte at a time: the first five are accepted, the sixth fails.
    let mut dec = FrameDecoder::new(max);
    for (i, b) in header.iter().enumerate() {
        let r = dec.push(std::slice::from_ref(b));
        if i + 1 < HEADER_LEN {
            assert_eq!(r, Ok(()), "byte {i}");
            assert_eq!(dec.next_frame(), Ok(None));
        } else {
            assert_eq!(r, Err(expected.clone()), "byte {i}");
        }
    }
    // The decoder stays failed: more bytes, even a valid frame, and next_frame all fail.
    let valid = frame_of(&SubmitSharesStandard {
        channel_id: 1,
        sequence_number: 2,
        job_id: 3,
        nonce: 4,
        ntime: 5,
        version: 6,
    });
    assert_eq!(dec.push(&[0; 10]), Err(expected.clone()));
    assert_eq!(dec.push(&valid), Err(expected.clone()));
    assert_eq!(dec.next_frame(), Err(expected.clone()));
    assert_eq!(dec.next_frame(), Err(expected.clone()));
    // The bytes were dropped, not buffered.
    assert_eq!(dec.buffered(), 0);

    // Frame::parse applies the same bound.
    assert_eq!(Frame::parse(&header, max), Err(expected));
    // Exactly the maximum is fine.
    let mut dec = FrameDecoder::new(max);
    assert_eq!(dec.push(&oversized_header(100)), Ok(()));
    assert_eq!(dec.next_frame(), Ok(None));
}

#[test]
fn frame_too_large_after_a_good_frame() {
    let max = 64;
    let good = frame_of(&SubmitSharesStandard {
        channel_id: 1,
        sequence_number: 2,
        job_id: 3,
        nonce: 4,
        ntime: 5,
        version: 6,
    });
    let expected = WireError::FrameTooLarge {
        len: 0x00ff_ffff,
        max,
    };

    // Good frame, handed out, then the bad header a byte at a time.
    let mut dec = FrameDecoder::new(max);
    dec.push(&good).unwrap();
    assert!(matches!(dec.next_frame(), Ok(Some(_))));
    let header = oversized_header(0x00ff_ffff);
    for b in &header[..5] {
        dec.push(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(dec.push(&header[5..]), Err(expected.clone()));
    assert_eq!(dec.next_frame(), Err(expected.clone()));

    // Good frame and bad header in one push: the good frame is delivered, then the error, and
    // the decoder stays failed.
    let mut dec = FrameDecoder::new(max);
    let mut both = good.clone();
    both.extend_from_slice(&header);
    dec.push(&both).unwrap();
    let frame = dec.next_frame().unwrap().unwrap();
    assert_eq!(frame.payload, &good[HEADER_LEN..]);
    assert_eq!(dec.next_frame(), Err(expected.clone()));
    assert_eq!(dec.push(&good), Err(expected.clone()));
    assert_eq!(dec.next_frame(), Err(expected));
}

#[test]
fn decoder_maximum_is_capped_at_u24() {
    // A maximum above what a U24 can announce accepts every header.
    let mut dec = FrameDecoder::new(usize::MAX);
    assert_eq!(dec.push(&oversized_header(0x00ff_ffff)), Ok(()));
    assert_eq!(dec.next_frame(), Ok(None));
}

// ---------------------------------------------------------------------------------------------
// Unknown messages
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_message_ids() {
    let cases: &[(u16, u8, u16)] = &[
        // (extension_type on the wire, msg_type, extension_type reported)
        (0x0000, 0x1e, 0x0000), // reserved in the Mining protocol
        (0x8000, 0x1e, 0x0000), // same, channel_msg bit set
        (0x0000, 0x50, 0x0000), // Job Declaration: not spoken by the pool
        (0x0000, 0x57, 0x0000), // Job Declaration PushSolution
        (0x0000, 0xff, 0x0000), // unassigned
        (0x4000, 0x00, 0x4000), // an extension we do not know
        (0xc000, 0x00, 0x4000), // same, channel_msg bit set
        (0x0001, 0x03, 0x0001), // extension 0x0001 has no msg_type 3
        (0x0002, 0x00, 0x0002), // extension 0x0002 defines only a TLV
        (0x0000, 0x77, 0x0000), // past the Template Distribution messages
        (0x0001, 0x1b, 0x0001), // a mining msg_type under the wrong extension
        (0x7fff, 0x1b, 0x7fff), // largest extension_type
        (0xffff, 0xff, 0x7fff), // everything set
    ];
    for &(ext, msg_type, reported) in cases {
        let expected = WireError::UnknownMessage {
            extension_type: reported,
            msg_type,
        };
        let bytes = raw_frame(ext, msg_type, &[0; 40]);
        let frame = Frame::parse_exact(&bytes).unwrap();
        assert_eq!(
            frame.message().unwrap_err(),
            expected,
            "{ext:#06x}/{msg_type:#04x}"
        );
        assert_eq!(
            Message::decode(ext, msg_type, &[]).unwrap_err(),
            expected,
            "{ext:#06x}/{msg_type:#04x}"
        );
    }
    assert_eq!(
        WireError::UnknownMessage {
            extension_type: 0x4000,
            msg_type: 0
        }
        .to_string(),
        "unknown message: extension_type 0x4000, msg_type 0x00"
    );
    assert_eq!(
        WireError::UnknownMessage {
            extension_type: 0,
            msg_type: 0x1e
        }
        .to_string(),
        "unknown message: extension_type 0x0000, msg_type 0x1e"
    );
}

#[test]
fn decode_as_the_wrong_message() {
    let bytes = frame_of(&submit_extended(&[1; 4]));
    let frame = Frame::parse_exact(&bytes).unwrap();
    assert_eq!(
        frame.decode::<SubmitSharesStandard>().unwrap_err(),
        WireError::UnknownMessage {
            extension_type: 0,
            msg_type: 0x1b
        }
    );
    // The Template Distribution SetNewPrevHash (0x72) is not the Mining one (0x20).
    let bytes = raw_frame(0x8000, 0x72, &[0; 56]);
    let frame = Frame::parse_exact(&bytes).unwrap();
    assert_eq!(
        frame.decode::<SetNewPrevHash>().unwrap_err(),
        WireError::UnknownMessage {
            extension_type: 0,
            msg_type: 0x72
        }
    );
}

// ---------------------------------------------------------------------------------------------
// STR0_255 that is not UTF-8
// ---------------------------------------------------------------------------------------------

/// STR0_255 need not be UTF-8 (03 §3.1 "L bytes"; 05 §5.3.2 "unconstrained sequence of
/// bytes"), and SRI decodes any bytes: so do we. Code that needs text asks `to_str()`, which
/// gives the typed error.
#[test]
fn invalid_utf8_in_str0_255() {
    for bad in [
        &[0xff][..],
        &[0xc3],
        &[b'o', b'k', 0xe2, 0x82],
        &[0xed, 0xa0, 0x80],
    ] {
        let mut payload = 0u32.to_le_bytes().to_vec();
        payload.push(bad.len() as u8);
        payload.extend_from_slice(bad);
        let bytes = frame_for::<SetupConnectionError<'_>>(&payload);
        let (msg, _) = Frame::parse_exact(&bytes).unwrap().message().unwrap();
        let Message::SetupConnectionError(m) = msg else {
            panic!("{msg:?}");
        };
        assert_eq!(m.error_code.as_bytes(), bad);
        assert_eq!(
            m.error_code.to_str(),
            Err(FieldError::InvalidUtf8),
            "{bad:02x?}"
        );
        assert_eq!(
            FieldError::InvalidUtf8.to_string(),
            "STR0_255 is not valid UTF-8"
        );
        // Re-encoding keeps the bytes as they were.
        let mut again = Vec::new();
        encode_frame(&m, &mut again).unwrap();
        assert_eq!(again, bytes);
    }

    // In SetupConnection, the fourth string (firmware) is the odd one: the rest decode as text.
    let ok = SetupConnection {
        protocol: 0,
        min_version: 2,
        max_version: 2,
        flags: 0,
        endpoint_host: Str0_255::new("pool.example").unwrap(),
        endpoint_port: 3333,
        vendor: Str0_255::new("v").unwrap(),
        hardware_version: Str0_255::new("h").unwrap(),
        firmware: Str0_255::new("f").unwrap(),
        device_id: Str0_255::new("").unwrap(),
    };
    let mut payload = Vec::new();
    ok.encode_payload(&mut payload);
    let firmware_at = payload.len() - 1 - 1; // device_id's length byte is last; 'f' before it
    assert_eq!(payload[firmware_at], b'f');
    payload[firmware_at] = 0x80;
    let (m, _) = SetupConnection::decode_prefix(&payload).unwrap();
    assert_eq!(m.firmware.to_str(), Err(FieldError::InvalidUtf8));
    assert_eq!(m.vendor.to_str(), Ok("v"));
    assert_eq!(m.firmware.to_string_lossy(), "\u{fffd}");
}

// ---------------------------------------------------------------------------------------------
// Values too long for their type, refused when a message is built
// ---------------------------------------------------------------------------------------------

#[test]
fn constructors_refuse_values_past_their_bound() {
    let hashes = vec![[0u8; 32]; 256];
    assert_eq!(
        Seq0_255::<U256>::new(&hashes).unwrap_err(),
        WireError::ValueTooLong {
            kind: "SEQ0_255",
            len: 256,
            max: 255
        }
    );
    assert!(Seq0_255::<U256>::new(&hashes[..255]).is_ok());

    let ids = vec![0u16; 65_536];
    assert_eq!(
        Seq0_64K::<u16>::new(&ids).unwrap_err(),
        WireError::ValueTooLong {
            kind: "SEQ0_64K",
            len: 65_536,
            max: 65_535
        }
    );

    let err = B0_32::new(&[0; 33]).unwrap_err();
    assert_eq!(
        err,
        WireError::ValueTooLong {
            kind: "B0_32",
            len: 33,
            max: 32
        }
    );
    assert_eq!(err.to_string(), "B0_32 cannot hold 33 bytes (at most 32)");
    assert!(B0_32::new(&[0; 32]).is_ok());

    let s = "a".repeat(256);
    let err = Str0_255::new(&s).unwrap_err();
    assert_eq!(
        err,
        WireError::ValueTooLong {
            kind: "STR0_255",
            len: 256,
            max: 255
        }
    );
    assert_eq!(
        err.to_string(),
        "STR0_255 cannot hold 256 bytes (at most 255)"
    );
    assert!(Str0_255::new(&s[..255]).is_ok());
    // 128 two-byte characters: 256 bytes although only 128 chars.
    let wide = "é".repeat(128);
    assert_eq!(
        Str0_255::new(&wide).unwrap_err(),
        WireError::ValueTooLong {
            kind: "STR0_255",
            len: 256,
            max: 255
        }
    );

    assert_eq!(
        B0_255::new(&[0; 256]).unwrap_err(),
        WireError::ValueTooLong {
            kind: "B0_255",
            len: 256,
            max: 255
        }
    );
    assert_eq!(
        B0_64K::new(&vec![0; 65_536]).unwrap_err(),
        WireError::ValueTooLong {
            kind: "B0_64K",
            len: 65_536,
            max: 65_535
        }
    );
    assert_eq!(
        U24::new(1 << 24).unwrap_err(),
        WireError::ValueTooLong {
            kind: "U24",
            len: 1 << 24,
            max: 0x00ff_ffff
        }
    );
}

// ---------------------------------------------------------------------------------------------
// TLV fields
// ---------------------------------------------------------------------------------------------

fn tlv_bytes(extension_type: u16, field_type: u8, value: &[u8]) -> Vec<u8> {
    let mut out = extension_type.to_le_bytes().to_vec();
    out.push(field_type);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn collect_tlv<'a>(bytes: &'a [u8], known: &[TlvSpec]) -> Vec<Result<Tlv<'a>, WireError>> {
    TlvDecoder::new(bytes, known).collect()
}

#[test]
fn tlv_truncated() {
    // Cut inside the 5-byte Type+Length.
    let whole = tlv_bytes(0x0002, 0x01, b"worker1");
    for cut in 1..5 {
        assert_eq!(
            collect_tlv(&whole[..cut], &[USER_IDENTITY]),
            vec![Err(WireError::TlvTruncated {
                needed: 5,
                available: cut
            })],
            "cut at {cut}"
        );
    }
    // Cut inside the value.
    for cut in 5..whole.len() {
        assert_eq!(
            collect_tlv(&whole[..cut], &[USER_IDENTITY]),
            vec![Err(WireError::TlvTruncated {
                needed: whole.len(),
                available: cut
            })],
            "cut at {cut}"
        );
    }
    // An unknown field is skipped but must still be whole.
    let unknown = tlv_bytes(0x0003, 0x07, &[1, 2, 3]);
    assert_eq!(
        collect_tlv(&unknown[..6], &[USER_IDENTITY]),
        vec![Err(WireError::TlvTruncated {
            needed: 8,
            available: 6
        })]
    );
    // A good field, then a truncated one: the good one is yielded first.
    let mut two = tlv_bytes(0x0002, 0x01, b"w");
    two.extend_from_slice(&[0x03, 0x00]);
    assert_eq!(
        collect_tlv(&two, &[USER_IDENTITY]),
        vec![
            Ok(Tlv {
                extension_type: 2,
                field_type: 1,
                value: b"w"
            }),
            Err(WireError::TlvTruncated {
                needed: 5,
                available: 2
            })
        ]
    );
    assert_eq!(
        WireError::TlvTruncated {
            needed: 5,
            available: 2
        }
        .to_string(),
        "truncated TLV field: 5 bytes needed, 2 available"
    );
}

#[test]
fn tlv_known_field_longer_than_its_bound() {
    let name = [b'x'; 33];
    let bytes = tlv_bytes(0x0002, 0x01, &name);
    let expected = WireError::TlvTooLong {
        extension_type: 0x0002,
        field_type: 0x01,
        len: 33,
        max: 32,
    };
    assert_eq!(
        collect_tlv(&bytes, &[USER_IDENTITY]),
        vec![Err(expected.clone())]
    );
    assert_eq!(
        expected.to_string(),
        "TLV 0x0002/0x01 is 33 bytes, at most 32 allowed"
    );
    // 32 bytes is fine.
    let ok = tlv_bytes(0x0002, 0x01, &name[..32]);
    assert_eq!(collect_tlv(&ok, &[USER_IDENTITY]).len(), 1);
    assert!(collect_tlv(&ok, &[USER_IDENTITY])[0].is_ok());
    // The same bytes are not checked when the field is not negotiated (unknown: skipped).
    assert_eq!(collect_tlv(&bytes, &[]), vec![]);
}

#[test]
fn tlv_out_of_extension_order() {
    let mut bytes = tlv_bytes(0x0003, 0x01, b"a");
    bytes.extend(tlv_bytes(0x0002, 0x01, b"b"));
    let expected = WireError::TlvOutOfOrder {
        previous: 0x0003,
        found: 0x0002,
    };
    // The first field is unknown (skipped), the second is out of order.
    assert_eq!(
        collect_tlv(&bytes, &[USER_IDENTITY]),
        vec![Err(expected.clone())]
    );
    assert_eq!(
        expected.to_string(),
        "TLV extension_type 0x0002 follows 0x0003: fields must be ordered"
    );
    // The decoder stops after the error.
    let mut dec = TlvDecoder::new(&bytes, &[USER_IDENTITY]);
    assert_eq!(dec.next(), Some(Err(expected)));
    assert_eq!(dec.next(), None);

    // Equal extension types (two fields of one extension) are in order.
    let mut same = tlv_bytes(0x0002, 0x02, b"a");
    same.extend(tlv_bytes(0x0002, 0x01, b"b"));
    assert_eq!(
        collect_tlv(&same, &[USER_IDENTITY]),
        vec![Ok(Tlv {
            extension_type: 2,
            field_type: 1,
            value: b"b"
        })]
    );

    // The encoder refuses the same mistakes.
    let mut enc = TlvEncoder::new();
    enc.push(0x0003, 0x01, b"a").unwrap();
    assert_eq!(
        enc.push(0x0002, 0x01, b"b").unwrap_err(),
        WireError::TlvOutOfOrder {
            previous: 3,
            found: 2
        }
    );
    let big = vec![0u8; 65_536];
    assert_eq!(
        TlvEncoder::new().push(0x0002, 0x01, &big).unwrap_err(),
        WireError::TlvTooLong {
            extension_type: 2,
            field_type: 1,
            len: 65_536,
            max: 65_535
        }
    );
}

#[test]
fn tlv_after_a_message_in_a_frame() {
    let msg = submit_extended(&[9; 8]);
    let mut enc = TlvEncoder::new();
    enc.push(0x0002, 0x01, b"rig-7").unwrap();
    let mut bytes = Vec::new();
    encode_frame_with_tlv(&msg, &enc, &mut bytes).unwrap();
    let frame = Frame::parse_exact(&bytes).unwrap();
    let (m, rest) = frame.message().unwrap();
    assert_eq!(m, Message::SubmitSharesExtended(msg.clone()));
    assert_eq!(
        collect_tlv(rest, &[USER_IDENTITY]),
        vec![Ok(Tlv {
            extension_type: 2,
            field_type: 1,
            value: b"rig-7"
        })]
    );

    // Chop the last TLV byte and fix msg_length: the message decodes, the TLV does not.
    let mut short = bytes[..bytes.len() - 1].to_vec();
    let len = (short.len() - HEADER_LEN) as u32;
    short[3..6].copy_from_slice(&len.to_le_bytes()[..3]);
    let frame = Frame::parse_exact(&short).unwrap();
    let (_, rest) = frame.message().unwrap();
    assert_eq!(
        collect_tlv(rest, &[USER_IDENTITY]),
        vec![Err(WireError::TlvTruncated {
            needed: 10,
            available: 9
        })]
    );
}

// ---------------------------------------------------------------------------------------------
// BOOL: only the least significant bit counts
// ---------------------------------------------------------------------------------------------

/// Spec 03 §3.1: "recipients MUST NOT interpret bits other than the least significant bit", so
/// every byte is a valid BOOL: 0x02 is false and 0x03 true. Deliberate; not an error.
#[test]
fn bool_reads_only_the_least_significant_bit() {
    let path = [[0x11; 32]];
    let msg = new_extended_job(&path, &[1, 2], &[3]);
    let mut payload = Vec::new();
    msg.encode_payload(&mut payload);
    let at = 4 + 4 + 5 + 4; // channel_id, job_id, min_ntime (Some), version
    assert_eq!(payload[at], 1);
    for (byte, expected) in [
        (0x00, false),
        (0x01, true),
        (0x02, false),
        (0x03, true),
        (0xfe, false),
        (0xff, true),
        (0x80, false),
    ] {
        payload[at] = byte;
        let bytes = frame_for::<NewExtendedMiningJob<'_>>(&payload);
        let frame = Frame::parse_exact(&bytes).unwrap();
        let (m, rest) = frame.decode::<NewExtendedMiningJob<'_>>().unwrap();
        assert!(rest.is_empty());
        assert_eq!(m.version_rolling_allowed, expected, "byte {byte:#04x}");
        // Everything else is unaffected.
        assert_eq!(m.merkle_path.as_slice(), &path);
        assert_eq!(&*m.coinbase_tx_prefix, &[1, 2]);
        // We send 0 or 1.
        let mut again = Vec::new();
        m.encode_payload(&mut again);
        assert_eq!(again[at], u8::from(expected));
    }

    // NewTemplate.future_template: the second field.
    let path: [U256; 0] = [];
    let t = NewTemplate {
        template_id: 9,
        future_template: false,
        version: 1,
        coinbase_tx_version: 2,
        coinbase_prefix: B0_255::new(&[]).unwrap(),
        coinbase_tx_input_sequence: 3,
        coinbase_tx_value_remaining: 4,
        coinbase_tx_outputs_count: 0,
        coinbase_tx_outputs: B0_64K::new(&[]).unwrap(),
        coinbase_tx_locktime: 0,
        merkle_path: Seq0_255::new(&path).unwrap(),
    };
    let mut payload = Vec::new();
    t.encode_payload(&mut payload);
    payload[8] = 0x02;
    assert!(
        !NewTemplate::decode_prefix(&payload)
            .unwrap()
            .0
            .future_template
    );
    payload[8] = 0x03;
    assert!(
        NewTemplate::decode_prefix(&payload)
            .unwrap()
            .0
            .future_template
    );
}

// ---------------------------------------------------------------------------------------------
// Arbitrary input never panics
// ---------------------------------------------------------------------------------------------

/// Feeds `bytes` to a decoder in chunks of the given sizes and decodes every frame and its
/// TLV fields; returns the number of frames seen. Panics only if the codec does.
fn drive(bytes: &[u8], chunks: &[usize], max_payload: usize) -> usize {
    let mut dec = FrameDecoder::new(max_payload);
    let mut frames = 0;
    let mut at = 0;
    let mut sizes = chunks.iter().cycle();
    let mut reencoded = Vec::new();
    while at < bytes.len() {
        let n = sizes.next().copied().unwrap_or(bytes.len()).max(1);
        let end = (at + n).min(bytes.len());
        if dec.push(&bytes[at..end]).is_err() {
            assert!(dec.next_frame().is_err(), "a failed decoder stays failed");
            return frames;
        }
        at = end;
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    frames += 1;
                    let _ = frame.channel_id();
                    if let Ok((msg, rest)) = frame.message() {
                        let _ = msg.name();
                        reencoded.clear();
                        encode_message_frame(&msg, &mut reencoded)
                            .expect("a decoded message re-encodes");
                        for tlv in TlvDecoder::new(rest, &[USER_IDENTITY]) {
                            if tlv.is_err() {
                                break;
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(dec.push(&[0]).is_err(), "a failed decoder stays failed");
                    return frames;
                }
            }
        }
    }
    frames
}

/// Known (extension_type, msg_type) pairs, with and without the channel_msg bit, and a few
/// unknown ones, so that random payloads reach every message decoder.
fn header_ids() -> impl Strategy<Value = (u16, u8)> {
    let known: Vec<(u16, u8)> = (0x00u8..=0x04)
        .chain(0x10..=0x25)
        .chain(0x70..=0x76)
        .map(|t| (0u16, t))
        .chain((0u8..=2).map(|t| (1u16, t)))
        .chain([(0x4000, 0), (0x0002, 1)])
        .collect();
    (
        proptest::sample::select(known),
        any::<bool>(),
        any::<Option<(u16, u8)>>(),
    )
        .prop_map(|((ext, t), chan, raw)| match raw {
            Some(r) if r.0 % 8 == 0 => r,
            _ => (if chan { ext | 0x8000 } else { ext }, t),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        chunks in proptest::collection::vec(1usize..64, 1..8),
        max_payload in prop_oneof![Just(MAX_PAYLOAD_LEN), 0usize..512],
    ) {
        drive(&bytes, &chunks, max_payload);
    }

    #[test]
    fn arbitrary_payloads_of_known_messages_never_panic(
        frames in proptest::collection::vec(
            (header_ids(), proptest::collection::vec(any::<u8>(), 0..200)),
            1..8,
        ),
        chunks in proptest::collection::vec(1usize..300, 1..8),
    ) {
        let mut bytes = Vec::new();
        for ((ext, t), payload) in &frames {
            bytes.extend(raw_frame(*ext, *t, payload));
        }
        let seen = drive(&bytes, &chunks, 4096);
        prop_assert_eq!(seen, frames.len());
    }
}
