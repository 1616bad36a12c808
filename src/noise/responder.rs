//! The server side of the NX handshake (spec 4.5.1.2 and 4.5.2.1).
//!
//! A [`Responder`] is built once per server: it holds the static key, its ElligatorSwift
//! encoding and the authority-signed certificate, so that each connection costs only an
//! ephemeral key and two ECDHs. [`Responder::accept`] takes `&self` and can be shared.

use rand::{CryptoRng, Rng};
use secp256k1::ellswift::{ElligatorSwift, ElligatorSwiftParty};
use secp256k1::{Keypair, SECP256K1, SecretKey};

use super::certificate::{SIGNATURE_NOISE_MESSAGE_LEN, SignatureNoiseMessage};
use super::cipher::MAC_LEN;
use super::handshake::{SymmetricState, ecdh};
use super::{
    ELLSWIFT_LEN, INITIATOR_MESSAGE_LEN, NoiseError, NoiseTransport, RESPONDER_MESSAGE_LEN,
};

/// Server-wide handshake state: static key and certificate, reused for every connection.
pub struct Responder {
    authority: Keypair,
    static_key: Keypair,
    /// One encoding of the static key; any valid encoding is fine, it travels encrypted.
    static_ellswift: ElligatorSwift,
    certificate: SignatureNoiseMessage,
}

impl Responder {
    /// Creates the responder and signs its certificate for `valid_from..=not_valid_after`
    /// (unix seconds) with the authority key.
    pub fn new<R: Rng + CryptoRng>(
        authority: Keypair,
        static_key: Keypair,
        valid_from: u32,
        not_valid_after: u32,
        rng: &mut R,
    ) -> Self {
        let static_ellswift =
            ElligatorSwift::from_seckey(SECP256K1, static_key.secret_key(), Some(rng.r#gen()));
        let certificate = SignatureNoiseMessage::sign(
            &authority,
            &static_key.x_only_public_key().0,
            valid_from,
            not_valid_after,
            rng,
        );
        Responder {
            authority,
            static_key,
            static_ellswift,
            certificate,
        }
    }

    /// Creates a responder with a fresh random static key and a certificate valid from `now`
    /// for `validity_secs`: the usual server start-up.
    pub fn generate<R: Rng + CryptoRng>(
        authority: Keypair,
        now: u32,
        validity_secs: u32,
        rng: &mut R,
    ) -> Self {
        let static_key = Keypair::new(SECP256K1, rng);
        Self::new(
            authority,
            static_key,
            now,
            now.saturating_add(validity_secs),
            rng,
        )
    }

    /// The certificate this responder presents.
    pub fn certificate(&self) -> &SignatureNoiseMessage {
        &self.certificate
    }

    /// Re-signs the certificate for a new window; the shell calls this before the current
    /// one runs out (see [`SignatureNoiseMessage::covers`]).
    pub fn renew_certificate<R: Rng + CryptoRng>(
        &mut self,
        valid_from: u32,
        not_valid_after: u32,
        rng: &mut R,
    ) {
        self.certificate = SignatureNoiseMessage::sign(
            &self.authority,
            &self.static_key.x_only_public_key().0,
            valid_from,
            not_valid_after,
            rng,
        );
    }

    /// Handles the initiator's `-> e` message and produces the `<- e, ee, s, es, SIGNATURE`
    /// reply together with the established transport.
    ///
    /// Errors if `message` is not exactly 64 bytes, or if our own certificate does not cover
    /// `now` (initiators would reject it anyway).
    pub fn accept<R: Rng + CryptoRng>(
        &self,
        message: &[u8],
        now: u32,
        rng: &mut R,
    ) -> Result<([u8; RESPONDER_MESSAGE_LEN], NoiseTransport), NoiseError> {
        let re: [u8; ELLSWIFT_LEN] =
            message
                .try_into()
                .map_err(|_| NoiseError::HandshakeMessageLength {
                    expected: INITIATOR_MESSAGE_LEN,
                    actual: message.len(),
                })?;
        if !self.certificate.covers(now) {
            return Err(NoiseError::OwnCertificateNotCurrent {
                valid_from: self.certificate.valid_from,
                not_valid_after: self.certificate.not_valid_after,
                now,
            });
        }
        let re = ElligatorSwift::from_array(re);
        let mut state = SymmetricState::new();
        // Act 1, responder side: MixHash(re), DecryptAndHash("") with empty k.
        state.mix_hash(&re.to_array());
        state.mix_hash(&[]);

        let mut out = [0u8; RESPONDER_MESSAGE_LEN];
        let (e_part, rest) = out.split_at_mut(ELLSWIFT_LEN);
        let (s_part, cert_part) = rest.split_at_mut(ELLSWIFT_LEN + MAC_LEN);

        // e
        let e_secret = SecretKey::new(rng);
        let e = ElligatorSwift::from_seckey(SECP256K1, e_secret, Some(rng.r#gen()));
        e_part.copy_from_slice(&e.to_array());
        state.mix_hash(e_part);
        // ee
        state.mix_key(&ecdh(re, e, e_secret, ElligatorSwiftParty::B))?;
        // s
        let (s_plain, s_tag) = s_part.split_at_mut(ELLSWIFT_LEN);
        s_plain.copy_from_slice(&self.static_ellswift.to_array());
        s_tag.copy_from_slice(&state.encrypt_and_hash(s_plain)?);
        // es
        let es = ecdh(
            re,
            self.static_ellswift,
            self.static_key.secret_key(),
            ElligatorSwiftParty::B,
        );
        state.mix_key(&es)?;
        // SIGNATURE_NOISE_MESSAGE
        let (c_plain, c_tag) = cert_part.split_at_mut(SIGNATURE_NOISE_MESSAGE_LEN);
        c_plain.copy_from_slice(&self.certificate.to_bytes());
        c_tag.copy_from_slice(&state.encrypt_and_hash(c_plain)?);

        let (c1, c2) = state.split()?;
        Ok((out, NoiseTransport::new(c2, c1)))
    }
}
