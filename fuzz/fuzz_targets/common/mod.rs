//! What the fuzz targets that drive a session share: a message read from the fuzzer's input
//! with its frame header built around it, a frame encoded, a valid SetupConnection.

#![allow(dead_code)]

use blvm_stratum_v2::wire::common::SetupConnection;
use blvm_stratum_v2::wire::{HEADER_LEN, Str0_255, Sv2Message, encode_frame};

/// A message step of the input: extension type (2 bytes), message type (1), payload length
/// (2, at most the bytes left), payload. Returns the frame, its header built from them (so the
/// fuzzer works on payloads, not on getting msg_length right), and the rest of the input;
/// `None` when fewer than five bytes are left.
pub fn message_step(input: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let [e0, e1, msg_type, l0, l1, ..] = *input else {
        return None;
    };
    let len = usize::from(u16::from_le_bytes([l0, l1])).min(input.len() - 5);
    let mut frame = Vec::with_capacity(HEADER_LEN + len);
    frame.extend_from_slice(&[e0, e1, msg_type]);
    frame.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
    frame.extend_from_slice(&input[5..5 + len]);
    Some((frame, &input[5 + len..]))
}

/// `m` as one frame.
pub fn encoded<'a, M: Sv2Message<'a>>(m: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(m, &mut out).expect("encodable");
    out
}

/// SetupConnection for `protocol` (0: Mining, 2: Template Distribution), version 2.
pub fn setup_connection(protocol: u8, flags: u32) -> Vec<u8> {
    encoded(&SetupConnection {
        protocol,
        min_version: 2,
        max_version: 2,
        flags,
        endpoint_host: Str0_255::new("127.0.0.1").unwrap(),
        endpoint_port: 3333,
        vendor: Str0_255::new("fuzz").unwrap(),
        hardware_version: Str0_255::default(),
        firmware: Str0_255::default(),
        device_id: Str0_255::default(),
    })
}
