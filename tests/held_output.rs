//! A connection's output held for the share ledger (issue 15, `server::held_output`): held
//! bytes and what follows them wait for their commit, the commit writes them to the socket,
//! a socket that does not take them hands them to the driver in order, a closed socket is
//! never written. Real sockets (a Unix socket pair), a line connection whose output the test
//! queues, holds included.

#[path = "common/inert_protocol.rs"]
mod inert_protocol;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use blvm_stratum_v2::connection::{Connection, ConnectionConfig, ConnectionError};
use blvm_stratum_v2::server::held_output::HeldOutput;
use blvm_stratum_v2::shell::AtomicHistogram;
use inert_protocol::Inert;

/// A connection, its held output attached to one end of a socket pair, the other end, and
/// the acknowledgement-latency histogram.
fn rig() -> (
    Connection<Inert>,
    Arc<HeldOutput>,
    UnixStream,
    UnixStream,
    Arc<AtomicHistogram>,
) {
    let conn = Connection::accept_lines(Inert::set_up(), ConnectionConfig::default(), 0);
    let latency = Arc::new(AtomicHistogram::default());
    let held = HeldOutput::new(latency.clone());
    let (ours, peer) = UnixStream::pair().unwrap();
    peer.set_nonblocking(true).unwrap();
    held.attach(ours.as_raw_fd());
    (conn, held, ours, peer, latency)
}

/// Queues `line`, behind a hold on `share` if given.
fn queue(conn: &mut Connection<Inert>, line: &str, share: Option<u64>) {
    conn.with_protocol(|p| {
        if let Some(n) = share {
            p.out.hold_until(n);
        }
        p.out.push_raw(line.as_bytes());
    })
    .unwrap();
}

/// What the peer can read now.
fn received(peer: &mut UnixStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while let Ok(n) = peer.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[test]
fn held_bytes_wait_for_their_commit_and_what_follows_waits_with_them() {
    let (mut conn, held, _ours, mut peer, latency) = rig();
    queue(&mut conn, "job 1\n", None);
    queue(&mut conn, "ack 1\n", Some(1));
    queue(&mut conn, "ack 2\n", Some(2));
    held.route(&mut conn, 1 << 20).unwrap();
    assert!(conn.pending_transmit().is_empty(), "all of it taken");
    assert_eq!(
        received(&mut peer),
        "job 1\n",
        "what precedes the hold goes"
    );
    assert!(held.oldest_hold().is_some());
    // A job made after the held acknowledgements waits behind them.
    queue(&mut conn, "job 2\n", None);
    held.route(&mut conn, 1 << 20).unwrap();
    assert_eq!(received(&mut peer), "");
    held.commit(1);
    assert_eq!(received(&mut peer), "ack 1\n");
    held.commit(1);
    assert_eq!(received(&mut peer), "", "an old commit changes nothing");
    held.commit(2);
    assert_eq!(received(&mut peer), "ack 2\njob 2\n");
    assert!(held.oldest_hold().is_none());
    assert_eq!(latency.snapshot().count, 2, "each acknowledgement's wait");
    // Nothing waits: output goes to the driver as usual.
    queue(&mut conn, "job 3\n", None);
    held.route(&mut conn, 1 << 20).unwrap();
    assert_eq!(conn.pending_transmit(), b"job 3\n");
}

#[test]
fn a_commit_that_came_first_releases_at_once() {
    let (mut conn, held, _ours, mut peer, _) = rig();
    held.commit(3);
    queue(&mut conn, "ack 3\n", Some(3));
    held.route(&mut conn, 1 << 20).unwrap();
    assert_eq!(received(&mut peer), "ack 3\n");
}

#[test]
fn a_full_socket_hands_the_released_bytes_to_the_driver_in_order() {
    let (mut conn, held, ours, mut peer, _) = rig();
    // Fill the socket until it takes no more.
    ours.set_nonblocking(true).unwrap();
    let mut filled = 0usize;
    let chunk = [b'x'; 4096];
    while let Ok(n) = std::io::Write::write(&mut &ours, &chunk) {
        filled += n;
    }
    queue(&mut conn, "ack 1\n", Some(1));
    queue(&mut conn, "ack 2\n", Some(2));
    held.route(&mut conn, 1 << 20).unwrap();
    held.commit(1);
    assert!(held.is_drivers_turn(), "the driver's turn");
    // The driver's turn: the released bytes come back to be written by it, and a commit
    // meanwhile writes nothing (it would overtake them).
    held.route(&mut conn, 1 << 20).unwrap();
    assert_eq!(conn.pending_transmit(), b"ack 1\n");
    held.commit(2);
    let drained = received(&mut peer);
    assert_eq!(drained.len(), filled, "only the filler was written");
    // The driver writes what it took, then comes back (the socket has room again): what was
    // released meanwhile is written at once, after it, and the writer thread may write again.
    std::io::Write::write_all(&mut &ours, conn.pending_transmit()).unwrap();
    conn.clear_transmit();
    held.route(&mut conn, 1 << 20).unwrap();
    assert!(
        conn.pending_transmit().is_empty(),
        "ack 2 written by the route"
    );
    assert!(!held.is_drivers_turn());
    queue(&mut conn, "ack 3\n", Some(3));
    held.route(&mut conn, 1 << 20).unwrap();
    held.commit(3);
    assert_eq!(received(&mut peer), "ack 1\nack 2\nack 3\n");
}

#[test]
fn a_detached_socket_is_never_written_and_too_much_waiting_fails() {
    let (mut conn, held, _ours, mut peer, _) = rig();
    queue(&mut conn, "ack 1\n", Some(1));
    held.route(&mut conn, 1 << 20).unwrap();
    held.detach();
    held.commit(1);
    assert_eq!(received(&mut peer), "");
    assert!(held.oldest_hold().is_none(), "dropped with the socket");
    // Too much waiting for a ledger that does not commit is the ledger's doing; too much
    // released that nobody reads is the peer's.
    let (mut conn, held, _ours, _peer, _) = rig();
    queue(&mut conn, "ack 1\n", Some(1));
    queue(&mut conn, &"j".repeat(100), None);
    assert!(matches!(
        held.route(&mut conn, 64),
        Err(ConnectionError::OutputHeld(_))
    ));
    let (mut conn, held, _ours, _peer, _) = rig();
    held.commit(5);
    queue(&mut conn, "ack 1\n", Some(1));
    queue(&mut conn, &"j".repeat(100), None);
    assert!(matches!(
        held.route(&mut conn, 64),
        Err(ConnectionError::SlowReader(106))
    ));
}

/// A connection that ends with output queued behind a held acknowledgement (the refusal that
/// ended it) waits for the commit that releases it, so the refusal reaches the miner; with
/// nothing waiting it does not wait at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ending_connection_waits_for_its_last_words_to_be_released() {
    let (mut conn, held, _ours, mut peer, _) = rig();
    queue(&mut conn, "ack 1\n", Some(1));
    queue(&mut conn, "refused\n", None);
    held.route(&mut conn, 1 << 20).unwrap();
    let writer = {
        let held = held.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            held.commit(1);
        })
    };
    let started = std::time::Instant::now();
    held.settle(std::time::Duration::from_secs(5)).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    writer.join().unwrap();
    assert_eq!(received(&mut peer), "ack 1\nrefused\n");
    let started = std::time::Instant::now();
    held.settle(std::time::Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "nothing waits"
    );
}
