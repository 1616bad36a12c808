//! Steady-state transport traffic does not allocate: after the buffers have grown once,
//! encrypting and decrypting frames reuses them. Counted per thread (tests/common/
//! counting_alloc.rs): a count of every thread's allocations failed now and then, when the test
//! harness's main thread allocated during the measured loop.

use blvm_stratum_v2::noise::{Initiator, Responder};
use rand::SeedableRng;
use rand::rngs::StdRng;
use secp256k1::{Keypair, SECP256K1};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::count;

#[test]
fn transport_does_not_allocate_per_message() {
    let mut rng = StdRng::seed_from_u64(1);
    let authority = Keypair::new(SECP256K1, &mut rng);
    let responder = Responder::generate(authority, 1000, 100, &mut rng);
    let initiator = Initiator::new(authority.x_only_public_key().0, &mut rng);
    let (reply, mut server) = responder
        .accept(&initiator.step_0(), 1000, &mut rng)
        .expect("accept");
    let mut client = initiator.step_2(&reply, 1000).expect("handshake");

    let mut share = vec![0x00, 0x80, 0x1b, 41, 0, 0];
    share.extend_from_slice(&[7u8; 41]);
    let mut wire = Vec::with_capacity(256);
    let mut run = |n: usize| {
        for _ in 0..n {
            wire.clear();
            client.encrypt_frame(&share, &mut wire).expect("encrypt");
            // Arrives in two pieces, like a socket read split mid-frame.
            let (a, b) = wire.split_at(30);
            server.feed(a);
            assert!(server.next_frame().expect("authentic").is_none());
            server.feed(b);
            let frame = server
                .next_frame()
                .expect("authentic")
                .expect("whole frame");
            assert_eq!(frame.len(), share.len());
        }
    };
    run(10); // buffers grow to their working size here
    let ((), allocations) = count(|| run(10_000));
    assert_eq!(allocations, 0);
}
