//! The client side of the NX handshake (spec 4.5.1.1, 4.5.2.2 and 4.5.3): sends an ephemeral
//! key, then authenticates the server by the authority's signature over its static key.

use rand::{CryptoRng, Rng};
use secp256k1::ellswift::{ElligatorSwift, ElligatorSwiftParty};
use secp256k1::{PublicKey, SECP256K1, SecretKey, XOnlyPublicKey};

use super::certificate::{
    DEFAULT_CLOCK_LEEWAY_SECS, SIGNATURE_NOISE_MESSAGE_LEN, SignatureNoiseMessage,
};
use super::cipher::MAC_LEN;
use super::error::HandshakeField;
use super::handshake::{SymmetricState, ecdh};
use super::{
    ELLSWIFT_LEN, INITIATOR_MESSAGE_LEN, NoiseError, NoiseTransport, RESPONDER_MESSAGE_LEN,
};

/// A client handshake in progress: created with the pool's authority key, it produces the
/// first message and then checks the server's reply.
pub struct Initiator {
    authority: XOnlyPublicKey,
    e_secret: SecretKey,
    e: ElligatorSwift,
    state: SymmetricState,
    leeway: u32,
}

impl Initiator {
    /// Starts a handshake that will only accept servers certified by `authority`.
    pub fn new<R: Rng + CryptoRng>(authority: XOnlyPublicKey, rng: &mut R) -> Self {
        let e_secret = SecretKey::new(rng);
        let e = ElligatorSwift::from_seckey(SECP256K1, e_secret, Some(rng.r#gen()));
        let mut state = SymmetricState::new();
        // MixHash(e.public_key), then EncryptAndHash("") with empty k = MixHash("").
        state.mix_hash(&e.to_array());
        state.mix_hash(&[]);
        Initiator {
            authority,
            e_secret,
            e,
            state,
            leeway: DEFAULT_CLOCK_LEEWAY_SECS,
        }
    }

    /// Sets how many seconds of clock skew to tolerate on the certificate's validity window.
    pub fn with_clock_leeway(mut self, secs: u32) -> Self {
        self.leeway = secs;
        self
    }

    /// Act 1 (`-> e`): the 64-byte ElligatorSwift encoding of our ephemeral key.
    pub fn step_0(&self) -> [u8; INITIATOR_MESSAGE_LEN] {
        self.e.to_array()
    }

    /// Act 2 and server authentication: processes the responder's reply, verifies the
    /// certificate against the authority key at time `now` (unix seconds) and returns the
    /// transport.
    pub fn step_2(mut self, reply: &[u8], now: u32) -> Result<NoiseTransport, NoiseError> {
        let mut msg: [u8; RESPONDER_MESSAGE_LEN] =
            reply
                .try_into()
                .map_err(|_| NoiseError::HandshakeMessageLength {
                    expected: RESPONDER_MESSAGE_LEN,
                    actual: reply.len(),
                })?;
        let (re_part, rest) = msg.split_at_mut(ELLSWIFT_LEN);
        let (s_part, cert_part) = rest.split_at_mut(ELLSWIFT_LEN + MAC_LEN);

        let mut re_bytes = [0u8; ELLSWIFT_LEN];
        re_bytes.copy_from_slice(re_part);
        let re = ElligatorSwift::from_array(re_bytes);
        self.state.mix_hash(&re_bytes);
        // ee
        let ee = ecdh(self.e, re, self.e_secret, ElligatorSwiftParty::A);
        self.state.mix_key(&ee)?;
        // s
        let (s_plain, s_tag) = s_part.split_at_mut(ELLSWIFT_LEN);
        let tag = mac(s_tag);
        self.state
            .decrypt_and_hash(s_plain, &tag)
            .map_err(|_| NoiseError::HandshakeAuthentication(HandshakeField::StaticKey))?;
        let mut rs_bytes = [0u8; ELLSWIFT_LEN];
        rs_bytes.copy_from_slice(s_plain);
        let rs = ElligatorSwift::from_array(rs_bytes);
        // es
        let es = ecdh(self.e, rs, self.e_secret, ElligatorSwiftParty::A);
        self.state.mix_key(&es)?;
        // SIGNATURE_NOISE_MESSAGE
        let (c_plain, c_tag) = cert_part.split_at_mut(SIGNATURE_NOISE_MESSAGE_LEN);
        let tag = mac(c_tag);
        self.state
            .decrypt_and_hash(c_plain, &tag)
            .map_err(|_| NoiseError::HandshakeAuthentication(HandshakeField::Certificate))?;
        let mut cert_bytes = [0u8; SIGNATURE_NOISE_MESSAGE_LEN];
        cert_bytes.copy_from_slice(c_plain);
        let certificate = SignatureNoiseMessage::from_bytes(&cert_bytes);

        let server_key = PublicKey::from_ellswift(rs).x_only_public_key().0;
        certificate.verify(&self.authority, &server_key, now, self.leeway)?;

        let (c1, c2) = self.state.split()?;
        Ok(NoiseTransport::new(c1, c2))
    }
}

/// Copies a 16-byte MAC out of the message (the slices are fixed-size splits).
fn mac(bytes: &[u8]) -> [u8; MAC_LEN] {
    let mut tag = [0u8; MAC_LEN];
    for (t, b) in tag.iter_mut().zip(bytes) {
        *t = *b;
    }
    tag
}
