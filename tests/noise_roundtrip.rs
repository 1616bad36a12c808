//! Property: any sequence of frames, of any size up to several Noise chunks, survives
//! encryption and decryption when the ciphertext arrives in arbitrary pieces.

use blvm_stratum_v2::noise::{Initiator, MAX_CHUNK_PLAINTEXT_LEN, NoiseTransport, Responder};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use secp256k1::{Keypair, SECP256K1};

fn pair(seed: u64) -> (NoiseTransport, NoiseTransport) {
    let mut rng = StdRng::seed_from_u64(seed);
    let authority = Keypair::new(SECP256K1, &mut rng);
    let responder = Responder::generate(authority, 1000, 100, &mut rng);
    let initiator = Initiator::new(authority.x_only_public_key().0, &mut rng);
    let (reply, server) = responder
        .accept(&initiator.step_0(), 1000, &mut rng)
        .expect("accept");
    (initiator.step_2(&reply, 1000).expect("handshake"), server)
}

fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..300,
        1 => (MAX_CHUNK_PLAINTEXT_LEN - 2)..(MAX_CHUNK_PLAINTEXT_LEN + 3),
        1 => 0usize..(2 * MAX_CHUNK_PLAINTEXT_LEN + 5000),
    ]
}

fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        (any::<u16>(), any::<u8>(), payload_len(), any::<u8>()),
        1..6,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .map(|(ext, ty, len, fill)| {
                let mut f = ext.to_le_bytes().to_vec();
                f.push(ty);
                f.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
                f.extend((0..len).map(|i| (i as u8).wrapping_mul(31) ^ fill));
                f
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn frames_round_trip_in_random_pieces(
        frames in frames(),
        pieces in prop::collection::vec(1usize..70_000, 1..40),
        to_server in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let (mut client, mut server) = pair(seed);
        let (tx, rx) = if to_server { (&mut client, &mut server) } else { (&mut server, &mut client) };
        let mut wire = Vec::new();
        for f in &frames {
            tx.encrypt_frame(f, &mut wire).expect("well-formed frame");
        }
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut at = 0;
        let mut sizes = pieces.iter().cycle();
        while at < wire.len() {
            let n = sizes.next().copied().unwrap_or(1).min(wire.len() - at);
            rx.feed(&wire[at..at + n]);
            at += n;
            while let Some(f) = rx.next_frame().expect("authentic") {
                got.push(f.to_vec());
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(rx.receiver.buffered_len(), 0);
    }
}
