//! Noise NX handshake and encrypted transport (Stratum V2 spec chapter 04):
//! `Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256` with a pool-authority certificate.
//!
//! Sans-IO: bytes in, bytes out, the time and the randomness passed in by the caller.
//! - [`Responder`] (server): built once, [`Responder::accept`] per connection.
//! - [`Initiator`] (client): [`Initiator::step_0`], then [`Initiator::step_2`].
//! - [`NoiseTransport`]: frame encryption and streaming decryption after the handshake.
//! - [`keys`]: authority keys in SRI's text form and on disk.

mod certificate;
mod cipher;
mod error;
mod handshake;
mod initiator;
pub mod keys;
mod responder;
mod transport;

pub use certificate::{
    CERTIFICATE_VERSION, DEFAULT_CLOCK_LEEWAY_SECS, SIGNATURE_NOISE_MESSAGE_LEN,
    SignatureNoiseMessage,
};
pub use cipher::MAC_LEN;
pub use error::{HandshakeField, NoiseError};
pub use initiator::Initiator;
pub use responder::Responder;
pub use transport::{
    DEFAULT_MAX_PAYLOAD_LEN, ENCRYPTED_HEADER_LEN, FRAME_HEADER_LEN, MAX_CHUNK_CIPHERTEXT_LEN,
    MAX_CHUNK_PLAINTEXT_LEN, MAX_PAYLOAD_LEN, NoiseTransport, Receiver, Sender,
    payload_ciphertext_len,
};

/// Length of an ElligatorSwift-encoded public key.
pub const ELLSWIFT_LEN: usize = 64;
/// Length of act 1 (`-> e`): the initiator's ephemeral key.
pub const INITIATOR_MESSAGE_LEN: usize = ELLSWIFT_LEN;
/// Length of act 2 (`<- e, ee, s, es, SIGNATURE_NOISE_MESSAGE`): 64 + (64 + 16) + (74 + 16).
/// The spec's prose says 170, but its own field list adds up to 234, which is what SRI sends.
pub const RESPONDER_MESSAGE_LEN: usize =
    ELLSWIFT_LEN + ELLSWIFT_LEN + MAC_LEN + SIGNATURE_NOISE_MESSAGE_LEN + MAC_LEN;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use secp256k1::{Keypair, SECP256K1};

    #[test]
    fn handshake_then_frames_both_ways() {
        let mut rng = StdRng::seed_from_u64(7);
        let authority = Keypair::new(SECP256K1, &mut rng);
        let responder = Responder::generate(authority, 1_000, 3_600, &mut rng);
        let initiator = Initiator::new(authority.x_only_public_key().0, &mut rng);
        let m1 = initiator.step_0();
        let (m2, mut server) = responder.accept(&m1, 1_000, &mut rng).unwrap();
        let mut client = initiator.step_2(&m2, 1_001).unwrap();

        let frame = [0, 0x80, 0x1b, 3, 0, 0, 1, 2, 3];
        let mut wire = Vec::new();
        client.encrypt_frame(&frame, &mut wire).unwrap();
        server.feed(&wire);
        assert_eq!(server.next_frame().unwrap(), Some(&frame[..]));
        wire.clear();
        server.encrypt_frame(&frame, &mut wire).unwrap();
        client.feed(&wire);
        assert_eq!(client.next_frame().unwrap(), Some(&frame[..]));
    }
}
