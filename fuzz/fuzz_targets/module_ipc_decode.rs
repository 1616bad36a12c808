//! Arbitrary bytes as a frame body from blvm-node's module socket: `decode_incoming` must give a
//! message or a typed error, never panic, and never allocate without bound (bincode's size
//! limit and slice reader refuse lengths beyond the input before allocating; serde reserves at
//! most 1 MiB for a sequence before its elements run out).

#![no_main]

use blvm_stratum_v2::node::module::protocol::decode_incoming;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_incoming(data);
});
