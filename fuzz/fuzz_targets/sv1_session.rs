//! Arbitrary bytes into a Stratum V1 connection on real work: the plaintext line framing
//! (`Connection::accept_lines`), the JSON-RPC parsing and every method of `Sv1Session` down to
//! the SV2 session under it. Nothing may panic; an error ends the connection and it stays
//! ended; whatever the session sends is whole lines of JSON.
//!
//! The first input byte picks the chunk size (low 6 bits: 1..=63 bytes, 0x3f = everything at
//! once) and, with its high bit, whether a valid mining.configure, mining.subscribe and
//! mining.authorize come first (so the fuzzer reaches mining.submit and the share paths at
//! once); bit 6 asks for the periodic work (deadlines) after every chunk.

#![no_main]

use std::sync::{Arc, OnceLock};

use blvm_stratum_v2::connection::{Connection, ConnectionConfig};
use blvm_stratum_v2::mining::{ExtranonceAllocator, MiningConfig, Work};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain};
use blvm_stratum_v2::sv1::{MAX_LINE, Sv1Session};
use libfuzzer_sys::fuzz_target;

const NOW_S: u32 = 1_800_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;

const PRELUDE: &[u8] = b"{\"id\":1,\"method\":\"mining.configure\",\"params\":[[\"version-rolling\"],{\"version-rolling.mask\":\"1fffe000\"}]}\n\
{\"id\":2,\"method\":\"mining.subscribe\",\"params\":[\"fuzz\"]}\n\
{\"id\":3,\"method\":\"mining.authorize\",\"params\":[\"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080.f\",\"x\"]}\n";

fn setup() -> &'static (Arc<MiningConfig>, Arc<Work>) {
    static SETUP: OnceLock<(Arc<MiningConfig>, Arc<Work>)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config = Arc::new(MiningConfig {
            min_difficulty: 1e-9,
            max_difficulty: 1e-9,
            payout_network: Some(bitcoin::Network::Regtest),
            ..MiningConfig::default()
        });
        let mut chain = EmbeddedChain::new(ChainConfig {
            bits: 0x207f_ffff,
            synthetic_transactions: 3,
            block_interval_secs: 0,
        });
        let work = Work::new(1, chain.template(NOW_S), &config.coinbase).unwrap();
        (config, work)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let chunk = match control & 0x3f {
        0x3f => input.len().max(1),
        n => n as usize + 1,
    };
    let (config, work) = setup();
    let mut session = Sv1Session::new(config.clone(), Arc::new(ExtranonceAllocator::new()));
    session.on_work(work, NOW_MS).unwrap();
    let cfg = ConnectionConfig {
        max_payload_len: MAX_LINE,
        idle_timeout_ms: Some(60_000),
        ..ConnectionConfig::default()
    };
    let mut conn = Connection::accept_lines(session, cfg, NOW_MS);
    let mut now = NOW_MS;
    let mut out = Vec::new();
    let prelude: &[u8] = if control & 0x80 != 0 { PRELUDE } else { &[] };
    for piece in prelude.chunks(chunk).chain(input.chunks(chunk)) {
        now += 7;
        let ended = conn.handle_wire(piece, now).is_err()
            || (control & 0x40 != 0 && conn.handle_timeout(now).is_err());
        conn.poll_transmit(&mut out);
        if ended {
            assert!(conn.is_ended());
            assert!(
                conn.handle_wire(b"\n", now).is_err(),
                "an ended connection stays ended"
            );
            break;
        }
    }
    let _ = conn.handle_timeout(now + 3_600_000);
    conn.poll_transmit(&mut out);
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(
            serde_json_check(line),
            "the pool sent a line that is not JSON: {:?}",
            String::from_utf8_lossy(line)
        );
    }
    assert!(out.is_empty() || out.ends_with(b"\n"), "whole lines only");
});

/// Whether `line` is one JSON object (a cheap structural check: no JSON crate in the fuzz
/// build; braces balanced outside strings, starting with `{`).
fn serde_json_check(line: &[u8]) -> bool {
    if line.first() != Some(&b'{') {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0i32, false, false);
    for &b in line {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => depth += 1,
            (false, _, b'}' | b']') => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    depth == 0 && !in_string
}
