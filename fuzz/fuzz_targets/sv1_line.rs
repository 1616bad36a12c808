//! Arbitrary bytes through the Stratum V1 parsers alone, without a session: the plaintext line
//! framing (`connection::LineReceiver`, in chunks) and the JSON-RPC request parser
//! (`sv1::request::parse`) on every whole line. Cheaper per input than `sv1_session`, so the
//! fuzzer explores the parsers' corners faster.
//!
//! Checked besides "no panic": the lines are the input's `\n`-separated pieces (one `\r` before
//! the newline dropped), none longer than the maximum, and an over-long one ends the framing;
//! a parsed request's values are what the line said: a submit's nTime, nonce and version bits
//! are its 8-digit hex strings, its extranonce2 their bytes, names within their bounds.
//!
//! The first input byte picks the chunk size (low 6 bits: 1..=63 bytes, 0x3f = everything).

#![no_main]

use bitcoin::hex::DisplayHex;
use blvm_stratum_v2::connection::LineReceiver;
use blvm_stratum_v2::sv1::MAX_LINE;
use blvm_stratum_v2::sv1::request::{self, MAX_USERNAME_LEN, Method};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Whether `s` is exactly `value` written as 8 hex digits (either case).
fn is_hex8(s: Option<&str>, value: u32) -> bool {
    s.is_some_and(|s| s.eq_ignore_ascii_case(&format!("{value:08x}")))
}

fn check_request(line: &[u8]) {
    let Ok(r) = request::parse(line) else {
        return;
    };
    let json: Value = serde_json::from_slice(line).expect("a request is JSON");
    let params = json.get("params").and_then(Value::as_array);
    let param = |i: usize| params.and_then(|p| p.get(i)).and_then(Value::as_str);
    match r.method {
        Method::Submit(s) => {
            assert!(is_hex8(param(3), s.ntime), "ntime {:?}", param(3));
            assert!(is_hex8(param(4), s.nonce), "nonce {:?}", param(4));
            if let Some(bits) = s.version_bits {
                assert!(is_hex8(param(5), bits), "version bits {:?}", param(5));
            }
            let en2 = param(2).expect("extranonce2");
            assert!(en2.eq_ignore_ascii_case(&s.extranonce2.to_lower_hex_string()));
            assert!(s.worker.len() <= MAX_USERNAME_LEN);
            assert!(s.job_id.len() <= 16);
        }
        Method::Authorize { username } => assert!(username.len() <= MAX_USERNAME_LEN),
        Method::SuggestDifficulty(d) => assert!(d.is_finite() && d > 0.0),
        Method::Configure(c) => {
            assert!(
                c.minimum_difficulty
                    .is_none_or(|d| d.is_finite() && d > 0.0)
            );
            assert!(c.unknown.len() <= 16);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let chunk = match first & 0x3f {
        0x3f => input.len().max(1),
        n => usize::from(n).max(1),
    };
    // What the framing must give: the complete pieces, each without one trailing `\r`.
    let mut expected: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    expected.pop();
    for piece in &mut expected {
        if let Some((b'\r', head)) = piece.split_last() {
            *piece = head;
        }
    }
    let mut receiver = LineReceiver::new(MAX_LINE);
    let mut got = 0;
    for piece in input.chunks(chunk) {
        receiver.feed(piece);
        loop {
            match receiver.next_line() {
                Ok(Some(line)) => {
                    assert!(line.len() <= MAX_LINE);
                    assert_eq!(line, expected[got], "line {got}");
                    got += 1;
                    check_request(line);
                }
                Ok(None) => break,
                Err(_) => {
                    // Only a line past the maximum ends the framing.
                    let next_long = expected.get(got).is_none_or(|l| l.len() > MAX_LINE);
                    assert!(next_long, "refused line {got}");
                    return;
                }
            }
        }
        assert!(receiver.buffered() <= MAX_LINE + 1);
    }
    assert_eq!(got, expected.len(), "every whole line came out");
});
