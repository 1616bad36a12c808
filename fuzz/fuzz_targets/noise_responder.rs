//! Arbitrary bytes against the server side of the Noise layer.
//!
//! The first byte picks a mode:
//! - raw: the next bytes are the initiator's first message (any length) and the rest is
//!   transport ciphertext fed in pieces; nothing may panic, and garbage must never decrypt.
//! - authentic: a real initiator completes the handshake and encrypts frames whose header
//!   fields and payloads come from the input; the ciphertext is fed in input-chosen pieces,
//!   optionally with one byte flipped. Unflipped, every frame must come back identical;
//!   flipped, the receiver must fail with an authentication error.

#![no_main]

use std::sync::OnceLock;

use blvm_stratum_v2::noise::{Initiator, NoiseError, Responder};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;
use secp256k1::{Keypair, SECP256K1};

const NOW: u32 = 1_700_000_000;

fn server() -> &'static (Keypair, Responder) {
    static SERVER: OnceLock<(Keypair, Responder)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(0);
        let authority = Keypair::new(SECP256K1, &mut rng);
        let responder = Responder::generate(authority, NOW, 3600, &mut rng);
        (authority, responder)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        raw(mode, rest);
    } else {
        authentic(mode, rest);
    }
});

fn raw(mode: u8, data: &[u8]) {
    let (_, responder) = server();
    let mut rng = StdRng::seed_from_u64(1);
    // Usually exactly 64 bytes, sometimes a length taken from the mode byte.
    let m1_len = if mode & 2 == 0 {
        64
    } else {
        usize::from(mode >> 2) * 2
    };
    let (m1, ct) = data.split_at(m1_len.min(data.len()));
    let Ok((_, mut transport)) = responder.accept(m1, NOW, &mut rng) else {
        assert_ne!(m1.len(), 64);
        return;
    };
    for piece in ct.chunks(usize::from(mode >> 1).max(1)) {
        transport.feed(piece);
        match transport.next_frame() {
            Ok(None) => {}
            Ok(Some(_)) => panic!("random ciphertext authenticated"),
            Err(_) => return,
        }
    }
}

fn authentic(mode: u8, data: &[u8]) {
    let (authority, responder) = server();
    let mut rng = StdRng::seed_from_u64(2);
    let initiator = Initiator::new(authority.x_only_public_key().0, &mut rng);
    let Ok((reply, mut server)) = responder.accept(&initiator.step_0(), NOW, &mut rng) else {
        panic!("handshake with a valid message failed");
    };
    let Ok(mut client) = initiator.step_2(&reply, NOW) else {
        panic!("initiator rejected our certificate");
    };
    if mode & 2 != 0 {
        server.receiver.set_max_payload_len(usize::from(mode) * 64);
    }

    // Frames: [ext lo, ext hi, type, len lo, len hi (x 8)] then payload bytes from the input.
    let mut frames = Vec::new();
    let mut input = data;
    while let [e0, e1, ty, l0, l1, tail @ ..] = input {
        let want = usize::from(u16::from_le_bytes([*l0, *l1])) * 8;
        let len = want.min(tail.len() * 64);
        let mut f = vec![*e0, *e1, *ty];
        f.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
        f.extend(tail.iter().cycle().take(len));
        frames.push(f);
        input = tail.get(len.min(tail.len())..).unwrap_or(&[]);
        if frames.len() >= 8 {
            break;
        }
    }
    let mut wire = Vec::new();
    for f in &frames {
        if client.encrypt_frame(f, &mut wire).is_err() {
            panic!("well-formed frame refused");
        }
    }
    let flip = if mode & 4 != 0 && !wire.is_empty() {
        let at = usize::from(mode) * 7919 % wire.len();
        wire[at] ^= 1 << (mode % 8);
        true
    } else {
        false
    };

    let mut got = Vec::new();
    let mut failed = None;
    let step = usize::from(mode >> 3).max(1) * 97;
    'feed: for piece in wire.chunks(step) {
        server.feed(piece);
        loop {
            match server.next_frame() {
                Ok(Some(f)) => got.push(f.to_vec()),
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break 'feed;
                }
            }
        }
    }
    match failed {
        None => {
            assert!(!flip, "tampered ciphertext decrypted");
            assert_eq!(got, frames);
        }
        Some(NoiseError::FrameTooLarge { .. }) => assert!(mode & 2 != 0),
        Some(NoiseError::TransportHeaderAuthentication)
        | Some(NoiseError::TransportPayloadAuthentication) => assert!(flip),
        Some(e) => panic!("unexpected error {e}"),
    }
}
