//! Every tampered, mis-sized or mis-certified input gives its typed error and never a panic.

use blvm_stratum_v2::noise::{
    ENCRYPTED_HEADER_LEN, HandshakeField, INITIATOR_MESSAGE_LEN, Initiator, NoiseError,
    NoiseTransport, RESPONDER_MESSAGE_LEN, Responder,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use secp256k1::{Keypair, SECP256K1};

const T0: u32 = 1_700_000_000;

struct Fixture {
    authority: Keypair,
    responder: Responder,
}

fn fixture() -> Fixture {
    let mut rng = StdRng::seed_from_u64(99);
    let authority = Keypair::new(SECP256K1, &mut rng);
    let responder = Responder::new(
        authority,
        Keypair::new(SECP256K1, &mut rng),
        T0,
        T0 + 3600,
        &mut rng,
    );
    Fixture {
        authority,
        responder,
    }
}

/// The same initiator every time (seeded), so one reply can be replayed with bits flipped.
fn initiator(f: &Fixture) -> Initiator {
    Initiator::new(
        f.authority.x_only_public_key().0,
        &mut StdRng::seed_from_u64(5),
    )
}

fn established(f: &Fixture) -> (NoiseTransport, NoiseTransport) {
    let i = initiator(f);
    let (reply, server) = f
        .responder
        .accept(&i.step_0(), T0, &mut StdRng::seed_from_u64(6))
        .expect("accept");
    let client = i.step_2(&reply, T0).expect("handshake");
    (client, server)
}

#[test]
fn flipped_bit_in_act_1_is_caught_by_the_initiator() {
    let f = fixture();
    for bit in 0..INITIATOR_MESSAGE_LEN * 8 {
        let i = initiator(&f);
        let mut m1 = i.step_0();
        m1[bit / 8] ^= 1 << (bit % 8);
        // Every 64-byte string is a valid ElligatorSwift encoding, so the responder cannot
        // tell; the transcripts then differ and the first MAC the initiator checks fails.
        let (reply, _) = f
            .responder
            .accept(&m1, T0, &mut StdRng::seed_from_u64(6))
            .expect("any 64 bytes decode");
        assert_eq!(
            i.step_2(&reply, T0).err(),
            Some(NoiseError::HandshakeAuthentication(
                HandshakeField::StaticKey
            )),
            "bit {bit}"
        );
    }
}

#[test]
fn flipped_bit_in_act_2_gives_the_field_that_failed() {
    let f = fixture();
    let (reply, _) = f
        .responder
        .accept(&initiator(&f).step_0(), T0, &mut StdRng::seed_from_u64(6))
        .expect("accept");
    for bit in 0..RESPONDER_MESSAGE_LEN * 8 {
        let mut m2 = reply;
        m2[bit / 8] ^= 1 << (bit % 8);
        let field = if bit / 8 < 64 + 80 {
            HandshakeField::StaticKey
        } else {
            HandshakeField::Certificate
        };
        assert_eq!(
            initiator(&f).step_2(&m2, T0).err(),
            Some(NoiseError::HandshakeAuthentication(field)),
            "bit {bit}"
        );
    }
}

#[test]
fn wrong_handshake_lengths() {
    let f = fixture();
    let mut rng = StdRng::seed_from_u64(1);
    for len in [0, 1, 32, 63, 65, 128, 234] {
        assert_eq!(
            f.responder.accept(&vec![7; len], T0, &mut rng).err(),
            Some(NoiseError::HandshakeMessageLength {
                expected: 64,
                actual: len
            })
        );
    }
    for len in [0, 64, 170, 233, 235, 1000] {
        assert_eq!(
            initiator(&f).step_2(&vec![7; len], T0).err(),
            Some(NoiseError::HandshakeMessageLength {
                expected: 234,
                actual: len
            })
        );
    }
}

#[test]
fn every_64_byte_string_is_a_valid_ellswift_key() {
    // The spec's only demand on act 1 is its length: ElligatorSwift decoding is total.
    let f = fixture();
    let mut rng = StdRng::seed_from_u64(2);
    let mut candidates = vec![[0u8; 64], [0xff; 64]];
    let mut field_p = [0xffu8; 64];
    field_p[28..32].copy_from_slice(&[0xff, 0xff, 0xfc, 0x2f]);
    candidates.push(field_p);
    for _ in 0..100 {
        let mut m = [0u8; 64];
        rng.fill_bytes(&mut m);
        candidates.push(m);
    }
    for m in candidates {
        assert!(f.responder.accept(&m, T0, &mut rng).is_ok());
    }
}

#[test]
fn certificate_from_another_authority() {
    let f = fixture();
    let mut rng = StdRng::seed_from_u64(3);
    let other = Keypair::new(SECP256K1, &mut rng);
    let i = Initiator::new(other.x_only_public_key().0, &mut rng);
    let (reply, _) = f
        .responder
        .accept(&i.step_0(), T0, &mut rng)
        .expect("accept");
    assert_eq!(
        i.step_2(&reply, T0).err(),
        Some(NoiseError::CertificateSignatureInvalid)
    );
}

#[test]
fn expired_and_not_yet_valid_certificates() {
    let f = fixture();
    let (reply, _) = f
        .responder
        .accept(&initiator(&f).step_0(), T0, &mut StdRng::seed_from_u64(6))
        .expect("accept");
    let late = T0 + 3600 + 11;
    assert_eq!(
        initiator(&f).step_2(&reply, late).err(),
        Some(NoiseError::CertificateExpired {
            not_valid_after: T0 + 3600,
            now: late
        })
    );
    let early = T0 - 11;
    assert_eq!(
        initiator(&f).step_2(&reply, early).err(),
        Some(NoiseError::CertificateNotYetValid {
            valid_from: T0,
            now: early
        })
    );
    // Within the default 10 s leeway both ends still pass; with no leeway they do not.
    assert!(initiator(&f).step_2(&reply, T0 + 3610).is_ok());
    assert!(
        initiator(&f)
            .with_clock_leeway(0)
            .step_2(&reply, T0 + 3601)
            .is_err()
    );
}

#[test]
fn responder_refuses_to_present_a_stale_certificate_until_renewed() {
    let mut f = fixture();
    let mut rng = StdRng::seed_from_u64(4);
    let later = T0 + 7200;
    let m1 = initiator(&f).step_0();
    assert_eq!(
        f.responder.accept(&m1, later, &mut rng).err(),
        Some(NoiseError::OwnCertificateNotCurrent {
            valid_from: T0,
            not_valid_after: T0 + 3600,
            now: later
        })
    );
    f.responder.renew_certificate(later, later + 3600, &mut rng);
    let i = initiator(&f);
    let (reply, _) = f.responder.accept(&m1, later, &mut rng).expect("renewed");
    assert!(i.step_2(&reply, later).is_ok());
}

fn frame(payload_len: usize) -> Vec<u8> {
    let mut f = vec![0x00, 0x80, 0x1b];
    f.extend_from_slice(&(payload_len as u32).to_le_bytes()[..3]);
    f.extend((0..payload_len).map(|i| i as u8));
    f
}

#[test]
fn flipped_bit_in_transport_frame() {
    let f = fixture();
    // Two chunks of payload, so a flip in the second chunk is covered too.
    let plain = frame(70_000);
    let (mut client, _) = established(&f);
    let mut wire = Vec::new();
    client.encrypt_frame(&plain, &mut wire).expect("encrypt");
    // Checking every bit of 70 KB is slow in debug builds; take every byte of the header,
    // the chunk boundaries, and a stride through the rest.
    let mut positions: Vec<usize> = (0..ENCRYPTED_HEADER_LEN + 40).collect();
    positions.extend((ENCRYPTED_HEADER_LEN..wire.len()).step_by(4099));
    positions.extend(ENCRYPTED_HEADER_LEN + 65_519..ENCRYPTED_HEADER_LEN + 65_535 + 8);
    positions.extend(wire.len() - 20..wire.len());
    for pos in positions {
        let (_, mut server) = established(&f);
        let mut bad = wire.clone();
        bad[pos] ^= 1 << (pos % 8);
        server.feed(&bad);
        let expected = if pos < ENCRYPTED_HEADER_LEN {
            NoiseError::TransportHeaderAuthentication
        } else {
            NoiseError::TransportPayloadAuthentication
        };
        assert_eq!(server.next_frame().err(), Some(expected), "byte {pos}");
        assert_eq!(server.next_frame().err(), Some(NoiseError::TransportClosed));
    }
    let (_, mut server) = established(&f);
    server.feed(&wire);
    assert_eq!(server.next_frame().expect("intact"), Some(&plain[..]));
}

#[test]
fn replayed_or_reordered_frames_fail() {
    let f = fixture();
    let (mut client, mut server) = established(&f);
    let mut first = Vec::new();
    let mut second = Vec::new();
    client
        .encrypt_frame(&frame(10), &mut first)
        .expect("encrypt");
    client
        .encrypt_frame(&frame(20), &mut second)
        .expect("encrypt");
    server.feed(&second);
    assert_eq!(
        server.next_frame().err(),
        Some(NoiseError::TransportHeaderAuthentication)
    );
    let (_, mut server) = established(&f);
    server.feed(&first);
    server.feed(&first);
    assert!(server.next_frame().expect("first").is_some());
    assert_eq!(
        server.next_frame().err(),
        Some(NoiseError::TransportHeaderAuthentication)
    );
}

#[test]
fn random_garbage_after_handshake_never_panics() {
    let f = fixture();
    let mut rng = StdRng::seed_from_u64(8);
    for _ in 0..200 {
        let (_, mut server) = established(&f);
        let mut junk = vec![0u8; (rng.next_u32() % 200) as usize];
        rng.fill_bytes(&mut junk);
        server.feed(&junk);
        match server.next_frame() {
            Ok(None) => assert!(junk.len() < ENCRYPTED_HEADER_LEN),
            Ok(Some(_)) => panic!("garbage authenticated"),
            Err(e) => assert_eq!(e, NoiseError::TransportHeaderAuthentication),
        }
    }
}

#[test]
fn every_bit_of_a_small_transport_frame() {
    let f = fixture();
    let (mut client, _) = established(&f);
    let mut wire = Vec::new();
    client
        .encrypt_frame(&frame(50), &mut wire)
        .expect("encrypt");
    for bit in 0..wire.len() * 8 {
        let (_, mut server) = established(&f);
        let mut bad = wire.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        server.feed(&bad);
        let expected = if bit / 8 < ENCRYPTED_HEADER_LEN {
            NoiseError::TransportHeaderAuthentication
        } else {
            NoiseError::TransportPayloadAuthentication
        };
        assert_eq!(server.next_frame().err(), Some(expected), "bit {bit}");
    }
}
