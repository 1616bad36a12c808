//! Every way the Noise layer can refuse its input, as one typed error.
//!
//! A connection that hits any of these must be closed: the handshake has no retry, and after a
//! failed transport decryption the two nonce counters can no longer be trusted to agree.

use thiserror::Error;

/// Which encrypted field of the responder's handshake reply failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeField {
    /// The responder's encrypted static public key (64 bytes + MAC).
    StaticKey,
    /// The encrypted `SIGNATURE_NOISE_MESSAGE` (74 bytes + MAC).
    Certificate,
}

impl core::fmt::Display for HandshakeField {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            HandshakeField::StaticKey => "encrypted static key",
            HandshakeField::Certificate => "encrypted certificate",
        })
    }
}

/// Why the Noise handshake or the encrypted transport refused its input.
///
/// Note there is no "bad ElligatorSwift encoding" variant: ElligatorSwift decoding is total
/// (BIP324), every 64-byte string decodes to a valid curve point, so the spec's only
/// structural demand on the first message is its exact length.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoiseError {
    /// A handshake message did not have the fixed length the spec gives it.
    #[error("handshake message is {actual} bytes, expected exactly {expected}")]
    HandshakeMessageLength {
        /// The only length the spec allows for this act.
        expected: usize,
        /// What was received.
        actual: usize,
    },
    /// A MAC in the responder's reply did not verify: tampering, or a different protocol.
    #[error("handshake authentication failed on the {0}")]
    HandshakeAuthentication(HandshakeField),
    /// The certificate carries a format version this implementation does not know.
    #[error("certificate version {0} is not supported")]
    UnsupportedCertificateVersion(u16),
    /// The certificate's Schnorr signature does not verify against the configured authority.
    #[error("certificate signature does not verify against the authority public key")]
    CertificateSignatureInvalid,
    /// The certificate's validity ended before `now` (allowing the clock leeway).
    #[error("certificate expired: not valid after {not_valid_after}, now is {now}")]
    CertificateExpired {
        /// The certificate's `not_valid_after` field.
        not_valid_after: u32,
        /// The time the caller passed in.
        now: u32,
    },
    /// The certificate's validity starts after `now` (allowing the clock leeway).
    #[error("certificate not yet valid: valid from {valid_from}, now is {now}")]
    CertificateNotYetValid {
        /// The certificate's `valid_from` field.
        valid_from: u32,
        /// The time the caller passed in.
        now: u32,
    },
    /// The responder's own certificate does not cover `now`; the server must renew it before
    /// accepting more connections, because initiators would reject it.
    #[error("own certificate (valid {valid_from}..={not_valid_after}) does not cover now = {now}")]
    OwnCertificateNotCurrent {
        /// Start of our certificate's validity.
        valid_from: u32,
        /// End of our certificate's validity.
        not_valid_after: u32,
        /// The time the caller passed in.
        now: u32,
    },
    /// The 22-byte encrypted frame header failed authentication.
    #[error("transport frame header failed authentication")]
    TransportHeaderAuthentication,
    /// An encrypted payload chunk failed authentication.
    #[error("transport payload chunk failed authentication")]
    TransportPayloadAuthentication,
    /// A decrypted header announces a payload larger than this receiver accepts.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The header's `msg_length`.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A plaintext frame given to encrypt is shorter than the 6-byte SV2 header.
    #[error("frame of {0} bytes is shorter than the 6-byte SV2 header")]
    FrameTooShort(usize),
    /// A plaintext frame given to encrypt disagrees with its own header's `msg_length`.
    #[error("frame header announces {header} payload bytes but {actual} follow")]
    FrameLengthMismatch {
        /// The header's `msg_length`.
        header: usize,
        /// The bytes after the header.
        actual: usize,
    },
    /// The 64-bit nonce counter would wrap; the session must be re-established.
    #[error("nonce space exhausted")]
    NonceExhausted,
    /// The AEAD refused a key or an input size; cannot happen with the 32-byte keys and
    /// 64 KiB chunks used here, and is reported rather than panicking.
    #[error("AEAD refused the key or input size")]
    AeadKey,
    /// The receiver already failed once; it stays dead so that no later byte is trusted.
    #[error("transport closed after an earlier failure")]
    TransportClosed,
}
