//! Arbitrary bytes through the whole decode path: `FrameDecoder` (in chunks) -> every frame ->
//! `message()` -> `TlvDecoder`. Nothing may panic, and every message that decodes must
//! re-encode to bytes that decode to an equal message.
//!
//! The first input byte picks the chunk size (low 6 bits: 1..=63 bytes, 0x3f = everything at
//! once) and, with its two high bits, the decoder's maximum payload: 64 KiB - 1, 256 bytes,
//! 2^24-1 or 1 KiB. (The largest maximum is not the default because `FrameDecoder` reserves the
//! announced msg_length as soon as a header is in: 16 MiB per input, which under ASan costs
//! more than the decoding.)

#![no_main]

use blvm_stratum_v2::wire::{
    Frame, FrameDecoder, MAX_PAYLOAD_LEN, TlvDecoder, USER_IDENTITY, encode_message_frame,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let chunk = match control & 0x3f {
        0x3f => input.len().max(1),
        n => n as usize + 1,
    };
    let max_payload = match control >> 6 {
        0 => 65_535,
        1 => 256,
        2 => MAX_PAYLOAD_LEN,
        _ => 1024,
    };

    let mut decoder = FrameDecoder::new(max_payload);
    let mut out = Vec::new();
    let mut out2 = Vec::new();
    for piece in input.chunks(chunk) {
        if decoder.push(piece).is_err() {
            assert!(
                decoder.next_frame().is_err(),
                "a failed decoder stays failed"
            );
            return;
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => check_frame(&frame, &mut out, &mut out2),
                Ok(None) => break,
                Err(_) => {
                    assert!(decoder.push(&[0]).is_err(), "a failed decoder stays failed");
                    return;
                }
            }
        }
    }
});

fn check_frame(frame: &Frame<'_>, out: &mut Vec<u8>, out2: &mut Vec<u8>) {
    assert_eq!(frame.payload.len(), frame.header.msg_length as usize);
    let _ = frame.channel_id();
    let Ok((msg, rest)) = frame.message() else {
        return;
    };
    for tlv in TlvDecoder::new(rest, &[USER_IDENTITY]) {
        match tlv {
            Ok(t) => assert!(t.value.len() <= USER_IDENTITY.max_len),
            Err(_) => break,
        }
    }

    // The message took exactly the bytes its encoding takes (BOOL bytes other than 0/1 are
    // re-encoded as 0/1 but keep their length).
    assert_eq!(
        msg.payload_len(),
        frame.payload.len() - rest.len(),
        "{msg:?}"
    );
    assert_eq!(msg.msg_type(), frame.header.msg_type);
    assert_eq!(
        msg.frame_extension_type() & 0x7fff,
        frame.header.extension()
    );

    out.clear();
    encode_message_frame(&msg, out).expect("a decoded message fits a frame");
    let again = Frame::parse_exact(out).expect("our encoding is one whole frame");
    let (msg2, rest2) = again
        .message()
        .expect("our encoding of a decoded message decodes");
    assert!(rest2.is_empty(), "no bytes after the re-encoded message");
    if msg2 != msg {
        // Only a NaN f32 (nominal_hash_rate) is unequal to itself; its bits survive, which
        // the byte comparison below checks.
        assert_eq!(format!("{msg2:?}"), format!("{msg:?}"));
        assert!(format!("{msg:?}").contains("NaN"), "{msg:?} != {msg2:?}");
    }
    // Encoding is a fixed point after one round.
    out2.clear();
    encode_message_frame(&msg2, out2).expect("re-encodes");
    assert_eq!(out, out2);
}
