//! Memory a connection keeps after a large frame (issue 14 item 5): the receive buffers give
//! back what a large frame made them grow to, and the pool's payload cap refuses a frame larger
//! than any message a miner may send. Heap bytes live on the test's thread are counted by a
//! global allocator of the test's own (allocations minus frees).

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/inert_protocol.rs"]
mod inert_protocol;

use std::sync::{Arc, RwLock};

use blvm_stratum_v2::connection::{
    Connection, ConnectionConfig, ConnectionError, RECEIVE_BUFFER_KEEP,
};
use blvm_stratum_v2::mining::{ExtranonceAllocator, MiningConfig, Session};
use blvm_stratum_v2::noise::{NoiseError, Responder};
use counting_alloc::live;
use inert_protocol::Inert;
use rand::SeedableRng;
use rand::rngs::StdRng;
use secp256k1::{Keypair, SECP256K1};

const NOW_S: u32 = 1_800_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;
/// The cap the pool used to accept (64 KiB).
const OLD_CAP: usize = 1 << 16;
/// What the driver reads per call.
const READ: usize = 2 * 1024;

/// A frame of an extension the pool does not know (ignored, 03 §3.4.1) of `len` bytes.
fn unknown_extension_frame(len: usize) -> Vec<u8> {
    let mut f = vec![0x42, 0x00, 0x01];
    f.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
    f.resize(6 + len, 0x5a);
    f
}

/// A pool connection past its handshake, and a raw client, with the pool's payload cap.
fn pair(max_payload_len: usize) -> (Connection<Session>, Connection<Inert>) {
    let mut rng = StdRng::seed_from_u64(1);
    let authority = Keypair::new(SECP256K1, &mut rng);
    let responder = Arc::new(RwLock::new(Responder::generate(
        authority,
        NOW_S - 60,
        3_600,
        &mut rng,
    )));
    let session = Session::new(
        Arc::new(MiningConfig::default()),
        Arc::new(ExtranonceAllocator::new()),
    );
    let cfg = ConnectionConfig {
        max_payload_len,
        ..ConnectionConfig::default()
    };
    let mut pool = Connection::accept(session, responder, StdRng::seed_from_u64(2), cfg, NOW_MS);
    let mut client = Connection::connect(
        Inert::set_up(),
        authority.x_only_public_key().0,
        &mut rng,
        ConnectionConfig::default(),
        NOW_MS,
    );
    let mut wire = Vec::new();
    assert!(client.poll_transmit(&mut wire));
    pool.handle_wire(&wire, NOW_MS).unwrap();
    wire.clear();
    assert!(pool.poll_transmit(&mut wire));
    client.handle_wire(&wire, NOW_MS).unwrap();
    assert!(pool.is_established() && client.is_established());
    (pool, client)
}

type End = ConnectionError<blvm_stratum_v2::mining::SessionError>;

/// Sends a `len`-byte frame to the pool in driver-sized reads; the heap bytes the pool holds
/// more afterwards (the client's own buffers are not counted), or the error that ended it.
fn send(
    pool: &mut Connection<Session>,
    client: &mut Connection<Inert>,
    len: usize,
) -> Result<isize, End> {
    let frame = unknown_extension_frame(len);
    client
        .with_protocol(|p| p.out.push_raw(&frame))
        .expect("queued");
    let mut wire = Vec::new();
    assert!(client.poll_transmit(&mut wire));
    let before = live();
    for piece in wire.chunks(READ) {
        pool.handle_wire(piece, NOW_MS)?;
    }
    Ok(live() - before)
}

#[test]
fn a_large_frame_leaves_no_more_than_the_kept_buffers_and_the_cap_refuses_larger() {
    // Under the old 64 KiB cap, a frame of nearly that size is taken, then its memory given
    // back.
    let (mut pool, mut client) = pair(OLD_CAP);
    send(&mut pool, &mut client, 100).unwrap();
    let pinned = send(&mut pool, &mut client, OLD_CAP - 16).unwrap();
    println!("bytes pinned after one ignored 64 KiB frame: {pinned}");
    assert!(
        pinned <= 2 * RECEIVE_BUFFER_KEEP as isize,
        "{pinned} bytes pinned after a 64 KiB frame"
    );
    // The pool's cap: the largest message a miner may send (SetupConnection, 1,291 bytes).
    let cap = 1_291;
    let (mut pool, mut client) = pair(cap);
    send(&mut pool, &mut client, cap).unwrap();
    let end = send(&mut pool, &mut client, cap + 1).unwrap_err();
    assert!(
        matches!(
            end,
            ConnectionError::Noise(NoiseError::FrameTooLarge { .. })
        ),
        "{end}"
    );
}
