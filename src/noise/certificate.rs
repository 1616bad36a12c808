//! The server certificate (spec 4.5.3): `SIGNATURE_NOISE_MESSAGE` plus the server's static key,
//! signed by the pool authority with BIP340 Schnorr over
//! `SHA-256(version || valid_from || not_valid_after || server_xonly_pubkey)`.

use rand::{CryptoRng, Rng};
use secp256k1::schnorr::Signature;
use secp256k1::{Keypair, Message, SECP256K1, XOnlyPublicKey};
use sha2::{Digest, Sha256};

use super::NoiseError;

/// Length of the serialized `SIGNATURE_NOISE_MESSAGE`.
pub const SIGNATURE_NOISE_MESSAGE_LEN: usize = 74;

/// The only certificate format version defined so far (SRI uses 0 too).
pub const CERTIFICATE_VERSION: u16 = 0;

/// How many seconds of clock disagreement an initiator tolerates at either end of the validity
/// window (SRI's noise_sv2 allows the same 10 seconds).
pub const DEFAULT_CLOCK_LEEWAY_SECS: u32 = 10;

/// The signed part of a server certificate as it travels in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureNoiseMessage {
    /// Certificate format version.
    pub version: u16,
    /// Unix time from which the certificate is valid.
    pub valid_from: u32,
    /// Unix time after which the certificate is no longer valid.
    pub not_valid_after: u32,
    /// BIP340 signature by the authority key.
    pub signature: [u8; 64],
}

impl SignatureNoiseMessage {
    /// Signs a certificate for `server_key` with the authority keypair; done once per server
    /// start (or renewal), not per connection.
    pub fn sign<R: Rng + CryptoRng>(
        authority: &Keypair,
        server_key: &XOnlyPublicKey,
        valid_from: u32,
        not_valid_after: u32,
        rng: &mut R,
    ) -> Self {
        let digest = signed_digest(CERTIFICATE_VERSION, valid_from, not_valid_after, server_key);
        let signature = SECP256K1.sign_schnorr_with_rng(&digest, authority, rng);
        SignatureNoiseMessage {
            version: CERTIFICATE_VERSION,
            valid_from,
            not_valid_after,
            signature: *signature.as_ref(),
        }
    }

    /// Wire form: version U16 LE, valid_from U32 LE, not_valid_after U32 LE, signature.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_NOISE_MESSAGE_LEN] {
        let mut out = [0u8; SIGNATURE_NOISE_MESSAGE_LEN];
        out[0..2].copy_from_slice(&self.version.to_le_bytes());
        out[2..6].copy_from_slice(&self.valid_from.to_le_bytes());
        out[6..10].copy_from_slice(&self.not_valid_after.to_le_bytes());
        out[10..].copy_from_slice(&self.signature);
        out
    }

    /// Parses the fixed 74-byte wire form; every byte string of that length parses.
    pub fn from_bytes(b: &[u8; SIGNATURE_NOISE_MESSAGE_LEN]) -> Self {
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&b[10..]);
        SignatureNoiseMessage {
            version: u16::from_le_bytes([b[0], b[1]]),
            valid_from: u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
            not_valid_after: u32::from_le_bytes([b[6], b[7], b[8], b[9]]),
            signature,
        }
    }

    /// Checks version, authority signature and validity window (with `leeway` seconds of
    /// tolerance at both ends) for the server key learned in the handshake.
    pub fn verify(
        &self,
        authority: &XOnlyPublicKey,
        server_key: &XOnlyPublicKey,
        now: u32,
        leeway: u32,
    ) -> Result<(), NoiseError> {
        if self.version != CERTIFICATE_VERSION {
            return Err(NoiseError::UnsupportedCertificateVersion(self.version));
        }
        let digest = signed_digest(
            self.version,
            self.valid_from,
            self.not_valid_after,
            server_key,
        );
        let signature = Signature::from_slice(&self.signature)
            .map_err(|_| NoiseError::CertificateSignatureInvalid)?;
        SECP256K1
            .verify_schnorr(&signature, &digest, authority)
            .map_err(|_| NoiseError::CertificateSignatureInvalid)?;
        if now < self.valid_from.saturating_sub(leeway) {
            return Err(NoiseError::CertificateNotYetValid {
                valid_from: self.valid_from,
                now,
            });
        }
        if now > self.not_valid_after.saturating_add(leeway) {
            return Err(NoiseError::CertificateExpired {
                not_valid_after: self.not_valid_after,
                now,
            });
        }
        Ok(())
    }

    /// Whether `now` lies inside the validity window, without leeway (the server's own view).
    pub fn covers(&self, now: u32) -> bool {
        self.valid_from <= now && now <= self.not_valid_after
    }
}

/// `m = SHA-256(version || valid_from || not_valid_after || server_public_key)`.
fn signed_digest(
    version: u16,
    valid_from: u32,
    not_valid_after: u32,
    server_key: &XOnlyPublicKey,
) -> Message {
    let digest: [u8; 32] = Sha256::new()
        .chain_update(version.to_le_bytes())
        .chain_update(valid_from.to_le_bytes())
        .chain_update(not_valid_after.to_le_bytes())
        .chain_update(server_key.serialize())
        .finalize()
        .into();
    Message::from_digest(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn setup() -> (StdRng, Keypair, XOnlyPublicKey) {
        let mut rng = StdRng::seed_from_u64(1);
        let authority = Keypair::new(SECP256K1, &mut rng);
        let server = Keypair::new(SECP256K1, &mut rng).x_only_public_key().0;
        (rng, authority, server)
    }

    #[test]
    fn sign_verify_round_trip_through_bytes() {
        let (mut rng, authority, server) = setup();
        let cert = SignatureNoiseMessage::sign(&authority, &server, 1000, 2000, &mut rng);
        let parsed = SignatureNoiseMessage::from_bytes(&cert.to_bytes());
        assert_eq!(parsed, cert);
        let a = authority.x_only_public_key().0;
        assert_eq!(parsed.verify(&a, &server, 1500, 0), Ok(()));
        assert_eq!(parsed.verify(&a, &server, 1000, 0), Ok(()));
        assert_eq!(parsed.verify(&a, &server, 2000, 0), Ok(()));
    }

    #[test]
    fn window_and_leeway() {
        let (mut rng, authority, server) = setup();
        let a = authority.x_only_public_key().0;
        let cert = SignatureNoiseMessage::sign(&authority, &server, 1000, 2000, &mut rng);
        assert_eq!(
            cert.verify(&a, &server, 989, 10),
            Err(NoiseError::CertificateNotYetValid {
                valid_from: 1000,
                now: 989
            })
        );
        assert_eq!(cert.verify(&a, &server, 990, 10), Ok(()));
        assert_eq!(cert.verify(&a, &server, 2010, 10), Ok(()));
        assert_eq!(
            cert.verify(&a, &server, 2011, 10),
            Err(NoiseError::CertificateExpired {
                not_valid_after: 2000,
                now: 2011
            })
        );
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let (mut rng, authority, server) = setup();
        let a = authority.x_only_public_key().0;
        let cert = SignatureNoiseMessage::sign(&authority, &server, 1000, 2000, &mut rng);
        let bytes = cert.to_bytes();
        for i in 2..SIGNATURE_NOISE_MESSAGE_LEN {
            let mut b = bytes;
            b[i] ^= 0x01;
            let c = SignatureNoiseMessage::from_bytes(&b);
            assert_eq!(
                c.verify(&a, &server, 1500, 0),
                Err(NoiseError::CertificateSignatureInvalid),
                "byte {i}"
            );
        }
        let mut b = bytes;
        b[0] ^= 1;
        assert_eq!(
            SignatureNoiseMessage::from_bytes(&b).verify(&a, &server, 1500, 0),
            Err(NoiseError::UnsupportedCertificateVersion(1))
        );
        let other = Keypair::new(SECP256K1, &mut rng).x_only_public_key().0;
        assert_eq!(
            cert.verify(&other, &server, 1500, 0),
            Err(NoiseError::CertificateSignatureInvalid)
        );
        assert_eq!(
            cert.verify(&a, &other, 1500, 0),
            Err(NoiseError::CertificateSignatureInvalid)
        );
    }
}
