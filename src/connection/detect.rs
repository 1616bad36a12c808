//! Telling a Stratum V1 miner from a Stratum V2 one by the first bytes it sends, so that one
//! port can take both (`sv1_on_sv2_port`). Both speak first: an SV1 miner a line of JSON-RPC
//! (`{"id":1,"method":"mining.subscribe",...`, `{"method":"mining.configure",...`), an SV2
//! miner the Noise NX initiator's 64-byte message, its ephemeral public key in ElligatorSwift
//! encoding: 64 bytes indistinguishable from uniformly random ones (that is what the
//! encoding is for).
//!
//! The rule: Stratum V1 if and only if the first byte is `{` and each of the next
//! [`DETECT_LEN`]` - 1` = 15 bytes is printable ASCII (0x20 to 0x7e, 95 of the 256 values).
//! No leading whitespace: every SV1 miner and proxy writes its request object from the first
//! byte (cgminer, bfgminer, Braiins and Bitmain firmware, SRI's `sv1_api`), and allowing it
//! would multiply the error below by the number of whitespace values allowed. Every real
//! first request is longer than 16 bytes (a bare `mining.subscribe` is 48).
//!
//! The chance that a Noise initiator message, 64 uniform bytes, is taken for SV1:
//! (1/256) · (95/256)^15 ≈ 1.36 · 10⁻⁹, about one handshake in 734 million. Such a miner's
//! connection would be answered as SV1 and closed (not JSON), and its next connection, with a
//! new ephemeral key, passes. The other way round nothing can go wrong: a line of JSON never
//! starts with a byte other than `{` here, and its first 16 bytes are printable.
//!
//! Sans-IO: the caller feeds what it has read so far; the answer comes as soon as a byte
//! breaks the rule (usually the first byte of an SV2 handshake) or 16 bytes fit it. The shell
//! bounds the wait for those bytes with the setup timeout.

/// Bytes that decide: `{` and 15 printable ones.
pub const DETECT_LEN: usize = 16;

/// The probability that uniformly random bytes (a Noise initiator message) are classified as
/// Stratum V1: (1/256) · (95/256)^15.
pub const MISREAD_PROBABILITY: f64 = 1.361_490_559_595_745_7e-9;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// Stratum V1: plaintext JSON-RPC lines.
    StratumV1,
    /// Stratum V2: the Noise handshake, then encrypted frames.
    StratumV2,
}

/// The protocol of a connection whose first bytes are `first` (everything read so far);
/// `None`: they fit Stratum V1 so far, more are needed (at most [`DETECT_LEN`]).
pub fn detect(first: &[u8]) -> Option<Detected> {
    let (&head, rest) = first.split_first()?;
    if head != b'{' {
        return Some(Detected::StratumV2);
    }
    let rest = &rest[..rest.len().min(DETECT_LEN - 1)];
    if !rest.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Some(Detected::StratumV2);
    }
    (rest.len() == DETECT_LEN - 1).then_some(Detected::StratumV1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_requests_are_stratum_v1() {
        for line in [
            &br#"{"id":1,"method":"mining.subscribe","params":[]}"#[..],
            br#"{"method":"mining.configure","params":[[],{}],"id":0}"#,
            br#"{ "id": 1, "method": "mining.subscribe" }"#,
        ] {
            assert_eq!(detect(line), Some(Detected::StratumV1));
            assert_eq!(detect(&line[..DETECT_LEN]), Some(Detected::StratumV1));
            for n in 0..DETECT_LEN {
                assert_eq!(detect(&line[..n]), None, "{n} bytes");
            }
        }
    }

    #[test]
    fn anything_else_is_stratum_v2_at_the_first_byte_that_breaks_the_rule() {
        assert_eq!(detect(b"x"), Some(Detected::StratumV2));
        assert_eq!(detect(b" {\"id\""), Some(Detected::StratumV2));
        assert_eq!(detect(b"{\x00"), Some(Detected::StratumV2));
        assert_eq!(detect(b"{\"id\":1\n"), Some(Detected::StratumV2));
        assert_eq!(detect(b"{\"id\xff"), Some(Detected::StratumV2));
    }

    #[test]
    fn the_stated_probability_is_the_rule_s() {
        let p = (1.0 / 256.0) * (95.0f64 / 256.0).powi(DETECT_LEN as i32 - 1);
        assert!((p - MISREAD_PROBABILITY).abs() < 1e-20);
    }
}
