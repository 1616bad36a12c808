//! Arbitrary bytes as a frame body from blvm-node's module socket: `decode_incoming` must give a
//! message or a typed error, never panic, and never allocate more than the input could hold
//! (sequence lengths are checked against the bytes left before anything is reserved).

#![no_main]

use blvm_stratum_v2::node::module::protocol::decode_incoming;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_incoming(data);
});
