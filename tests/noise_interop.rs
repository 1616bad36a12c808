//! Interoperability with SRI: our responder against `noise_sv2`'s initiator and our initiator
//! against `noise_sv2`'s responder, with transport frames carried through `codec_sv2`'s noise
//! encoder and decoder on the SRI side.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blvm_stratum_v2::noise::{
    Initiator, MAX_CHUNK_PLAINTEXT_LEN, NoiseTransport, RESPONDER_MESSAGE_LEN, Responder,
};
use codec_sv2::{
    Decrypted, Handshake, NoiseDecoder, NoiseEncoder, TransportDecryptState, TransportEncryptState,
};
use framing_sv2::framing::SerializedFrame;
use rand::SeedableRng;
use rand::rngs::StdRng;
use secp256k1::{Keypair, SECP256K1};

fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// A plaintext SV2 frame with the given header fields and payload.
fn frame(ext: u16, msg_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = ext.to_le_bytes().to_vec();
    f.push(msg_type);
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
    f.extend_from_slice(payload);
    f
}

fn test_frames() -> Vec<Vec<u8>> {
    let big: Vec<u8> = (0..(2 * MAX_CHUNK_PLAINTEXT_LEN + 1234))
        .map(|i| (i * 7) as u8)
        .collect();
    vec![
        frame(0, 0x00, b""),
        frame(0x8000, 0x1b, &[0x11; 42]),
        frame(0, 0x15, &big[..MAX_CHUNK_PLAINTEXT_LEN]),
        frame(0, 0x15, &big[..MAX_CHUNK_PLAINTEXT_LEN + 1]),
        frame(0x0001, 0x71, &big),
    ]
}

/// SRI encrypts, we decrypt; fed in odd-sized pieces.
fn sri_to_ours(enc: &mut TransportEncryptState, ours: &mut NoiseTransport) {
    let mut encoder = NoiseEncoder::new();
    for f in test_frames() {
        let sframe = SerializedFrame::from_bytes(f.clone()).expect("well-formed test frame");
        let wire = encoder.encode_transport(sframe, enc).expect("SRI encrypts");
        let wire: &[u8] = wire.as_ref();
        for piece in wire.chunks(997) {
            ours.feed(piece);
        }
        assert_eq!(ours.next_frame().expect("we decrypt"), Some(&f[..]));
        assert_eq!(ours.next_frame().expect("nothing left"), None);
    }
}

/// We encrypt, SRI decrypts through its decoder's read windows.
fn ours_to_sri(ours: &mut NoiseTransport, mut dec: TransportDecryptState) {
    let mut decoder = NoiseDecoder::new();
    for f in test_frames() {
        let mut wire = Vec::new();
        ours.encrypt_frame(&f, &mut wire).expect("we encrypt");
        let mut offset = 0;
        let decoded = loop {
            let writable = decoder.writable();
            let n = writable.len().min(wire.len() - offset);
            writable[..n].copy_from_slice(&wire[offset..offset + n]);
            offset += n;
            match decoder.next_transport_frame(dec).expect("SRI decrypts") {
                Decrypted::Frame(frame, state) => {
                    dec = state;
                    break frame;
                }
                Decrypted::Incomplete(_, state) => dec = state,
            }
        };
        assert_eq!(offset, wire.len());
        assert_eq!(decoded.as_bytes(), &f[..]);
    }
}

#[test]
fn our_responder_with_sri_initiator() {
    let mut rng = StdRng::seed_from_u64(11);
    let authority = Keypair::new(SECP256K1, &mut rng);
    let t = now();
    let responder = Responder::generate(authority, t, 3600, &mut rng);

    let sri_authority =
        noise_sv2::Initiator::from_raw_k(authority.x_only_public_key().0.serialize())
            .expect("valid authority key");
    let (msg0, sri) = Handshake::initiator(sri_authority)
        .step_0()
        .expect("SRI step 0");
    let (reply, mut ours) = responder
        .accept(msg0.payload(), t, &mut rng)
        .expect("we accept SRI's first message");
    let sri = sri
        .step_2_with_now(reply, t)
        .expect("SRI accepts our certificate");
    let (mut enc, dec) = sri.split();

    sri_to_ours(&mut enc, &mut ours);
    ours_to_sri(&mut ours, dec);
}

#[test]
fn our_initiator_with_sri_responder() {
    let mut rng = StdRng::seed_from_u64(12);
    let authority = Keypair::new(SECP256K1, &mut rng);
    let sri_responder = noise_sv2::Responder::from_authority_kp(
        &authority.x_only_public_key().0.serialize(),
        &authority.secret_bytes(),
        Duration::from_secs(3600),
    )
    .expect("valid authority keypair");

    let initiator = Initiator::new(authority.x_only_public_key().0, &mut rng);
    let msg0 = initiator.step_0();
    let (reply, sri) = Handshake::responder(sri_responder)
        .step_1_with_now_rng(msg0, now(), &mut rng)
        .expect("SRI responds");
    assert_eq!(reply.payload().len(), RESPONDER_MESSAGE_LEN);
    let mut ours = initiator
        .step_2(reply.payload(), now())
        .expect("we accept SRI's certificate");
    let (mut enc, dec) = sri.split();

    sri_to_ours(&mut enc, &mut ours);
    ours_to_sri(&mut ours, dec);
}

#[test]
fn sri_initiator_rejects_certificate_from_another_authority() {
    let mut rng = StdRng::seed_from_u64(13);
    let authority = Keypair::new(SECP256K1, &mut rng);
    let impostor = Keypair::new(SECP256K1, &mut rng);
    let t = now();
    let responder = Responder::generate(impostor, t, 3600, &mut rng);
    let sri_authority =
        noise_sv2::Initiator::from_raw_k(authority.x_only_public_key().0.serialize())
            .expect("valid authority key");
    let (msg0, sri) = Handshake::initiator(sri_authority)
        .step_0()
        .expect("SRI step 0");
    let (reply, _) = responder
        .accept(msg0.payload(), t, &mut rng)
        .expect("accept");
    assert!(sri.step_2_with_now(reply, t).is_err());
}
