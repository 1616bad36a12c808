//! Two `Connection` objects, initiator (CPU miner session) and responder (pool mining
//! session), driven against each other in memory with the real Noise handshake: every byte one
//! writes is what the other reads. No sockets, no tokio, a fake clock.

#[path = "common/inert_protocol.rs"]
mod inert_protocol;

use std::sync::{Arc, RwLock};

use blvm_stratum_v2::client::{ChannelKind, Hasher, MinerConfig, MinerEvent, MinerSession, Share};
use blvm_stratum_v2::connection::{Connection, ConnectionConfig, ConnectionError, Protocol};
use blvm_stratum_v2::mining::{ExtranonceAllocator, MiningConfig, Session, SessionEvent, Work};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain};
use blvm_stratum_v2::noise::{NoiseError, Responder};
use inert_protocol::Inert;
use rand::SeedableRng;
use rand::rngs::StdRng;
use secp256k1::{Keypair, SECP256K1};

const NOW_S: u32 = 1_800_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;

fn config(idle: Option<u64>) -> ConnectionConfig {
    ConnectionConfig {
        handshake_timeout_ms: 5_000,
        setup_timeout_ms: 7_000,
        idle_timeout_ms: idle,
        max_payload_len: 1 << 16,
    }
}

struct Rig {
    pool: Connection<Session>,
    miner: Connection<MinerSession>,
    now_ms: u64,
    /// Feed the peer one byte per `handle_wire` call.
    byte_at_a_time: bool,
    /// One hasher for the whole run, so no share is found twice.
    hasher: Hasher,
}

fn responder(seed: u64) -> (Keypair, Arc<RwLock<Responder>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let authority = Keypair::new(SECP256K1, &mut rng);
    let responder = Responder::generate(authority, NOW_S - 60, 3_600, &mut rng);
    (authority, Arc::new(RwLock::new(responder)))
}

fn pool_session(batch: u32) -> Session {
    let mut chain = EmbeddedChain::new(ChainConfig {
        bits: 0x1d00ffff,
        synthetic_transactions: 3,
        block_interval_secs: 0,
    });
    let config = Arc::new(MiningConfig {
        min_difficulty: 1e-9,
        share_batch_size: batch,
        ..MiningConfig::default()
    });
    let work = Work::new(1, chain.template(NOW_S), &config.coinbase).unwrap();
    let mut pool = Session::new(config, Arc::new(ExtranonceAllocator::new()));
    pool.on_work(&work, NOW_MS);
    pool
}

fn miner_session() -> MinerSession {
    MinerSession::new(MinerConfig {
        channel: ChannelKind::Extended,
        user_identity: "alice.cpu".into(),
        endpoint_host: "127.0.0.1".into(),
        endpoint_port: 3333,
        ..MinerConfig::default()
    })
    .unwrap()
}

impl Rig {
    fn new(batch: u32, idle: Option<u64>) -> Rig {
        let (authority, responder) = responder(1);
        let pool = Connection::accept(
            pool_session(batch),
            responder,
            StdRng::seed_from_u64(2),
            config(idle),
            NOW_MS,
        );
        let miner = Connection::connect(
            miner_session(),
            authority.x_only_public_key().0,
            &mut StdRng::seed_from_u64(3),
            config(None),
            NOW_MS,
        );
        Rig {
            pool,
            miner,
            now_ms: NOW_MS,
            byte_at_a_time: false,
            hasher: Hasher::new(0, 1),
        }
    }

    /// Moves bytes both ways until neither side has anything to write.
    fn pump(&mut self) {
        let mut wire = Vec::new();
        loop {
            let mut moved = false;
            if self.miner.poll_transmit(&mut wire) {
                moved = true;
                feed(&mut self.pool, &wire, self.now_ms, self.byte_at_a_time).unwrap();
                wire.clear();
            }
            if self.pool.poll_transmit(&mut wire) {
                moved = true;
                feed(&mut self.miner, &wire, self.now_ms, self.byte_at_a_time).unwrap();
                wire.clear();
            }
            if !moved {
                return;
            }
        }
    }

    fn miner_events(&mut self) -> Vec<MinerEvent> {
        std::iter::from_fn(|| self.miner.poll_event()).collect()
    }

    fn pool_events(&mut self) -> Vec<SessionEvent> {
        std::iter::from_fn(|| self.pool.poll_event()).collect()
    }

    fn find_share(&mut self) -> Share {
        let work = self.miner.protocol().work().expect("work").clone();
        let mut found = None;
        self.hasher.mine(
            &work,
            |_| true,
            |s| {
                found = Some(s);
                false
            },
        );
        found.expect("a share at an easy target")
    }
}

fn feed<P: Protocol>(
    c: &mut Connection<P>,
    bytes: &[u8],
    now_ms: u64,
    byte_at_a_time: bool,
) -> Result<(), ConnectionError<P::Error>> {
    if byte_at_a_time {
        for b in bytes {
            c.handle_wire(std::slice::from_ref(b), now_ms)?;
        }
        Ok(())
    } else {
        c.handle_wire(bytes, now_ms)
    }
}

fn handshake_setup_channel_shares_and_acks(byte_at_a_time: bool) {
    let mut rig = Rig::new(1, Some(60_000));
    rig.byte_at_a_time = byte_at_a_time;
    assert!(!rig.miner.is_established());
    rig.pump();
    assert!(rig.miner.is_established() && rig.pool.is_established());
    let events = rig.miner_events();
    assert!(
        matches!(
            events[..],
            [
                MinerEvent::SetupSucceeded { .. },
                MinerEvent::ChannelOpened { .. },
                MinerEvent::NewJob { future: true, .. },
                MinerEvent::NewPrevHash { .. },
            ]
        ),
        "{events:?}"
    );
    assert!(rig.pool.protocol().is_ready());
    let _ = rig.pool_events();

    for i in 1..=5u64 {
        let share = rig.find_share();
        rig.now_ms += 1000;
        rig.miner
            .with_protocol(|m| m.submit(&share))
            .unwrap()
            .expect("fresh share is submitted");
        rig.pump();
        let accepted = rig
            .pool_events()
            .into_iter()
            .filter(|e| matches!(e, SessionEvent::ShareAccepted { .. }))
            .count();
        assert_eq!(accepted, 1);
        assert!(
            rig.miner_events()
                .iter()
                .any(|e| matches!(e, MinerEvent::SharesAccepted { .. }))
        );
        assert_eq!(rig.miner.protocol().counts().accepted, i);
    }
    assert_eq!(rig.pool.protocol().channels()[0].stats.accepted, 5);
}

#[test]
fn two_connections_talk_through_noise() {
    handshake_setup_channel_shares_and_acks(false);
}

#[test]
fn bytes_fed_one_at_a_time_work() {
    handshake_setup_channel_shares_and_acks(true);
}

#[test]
fn batched_acks_go_out_at_the_pool_deadline_and_idle_wakes_nothing_else() {
    let mut rig = Rig::new(10, Some(60_000));
    rig.pump();
    let _ = (rig.miner_events(), rig.pool_events());
    // Set up, channel open, no share yet: nothing due before the periodic job refresh (30 s
    // after the work went out), vardiff's drought check (12 share intervals of 60 s / 18) and
    // the idle deadline.
    let quiet = rig.now_ms + 12 * 60_000 / 18;
    let refresh = NOW_MS + 30_000;
    assert_eq!(rig.pool.poll_timeout(), Some(refresh.min(quiet + 1)));

    let share = rig.find_share();
    rig.miner
        .with_protocol(|m| m.submit(&share))
        .unwrap()
        .unwrap();
    rig.pump();
    // Accepted but not acknowledged yet: the batch waits for its deadline.
    assert_eq!(rig.miner.protocol().counts().accepted, 0);
    let due = rig.pool.poll_timeout().expect("a batch deadline");
    assert!(due <= rig.now_ms + 1000, "{due} vs {}", rig.now_ms);
    rig.pool.handle_timeout(due - 1).unwrap();
    rig.pump();
    assert_eq!(rig.miner.protocol().counts().accepted, 0);
    rig.now_ms = due;
    rig.pool.handle_timeout(due).unwrap();
    rig.pump();
    assert_eq!(rig.miner.protocol().counts().accepted, 1);
}

#[test]
fn idle_timeout_fires_from_handle_timeout() {
    let mut rig = Rig::new(1, Some(60_000));
    rig.pump();
    let idle_at = rig.now_ms + 60_000;
    assert!(rig.pool.poll_timeout().is_some_and(|t| t <= idle_at));
    rig.pool.handle_timeout(idle_at - 1).unwrap();
    assert!(matches!(
        rig.pool.handle_timeout(idle_at),
        Err(ConnectionError::Idle)
    ));
    assert!(rig.pool.is_ended());
    assert!(rig.pool.poll_timeout().is_none());
    assert!(matches!(
        rig.pool.handle_wire(&[0], idle_at),
        Err(ConnectionError::Ended)
    ));
}

#[test]
fn handshake_timeout_fires_from_handle_timeout() {
    let (_, responder) = responder(1);
    let mut pool = Connection::accept(
        pool_session(1),
        responder,
        StdRng::seed_from_u64(2),
        config(None),
        NOW_MS,
    );
    assert_eq!(pool.poll_timeout(), Some(NOW_MS + 5_000));
    // Half the first message does not count.
    pool.handle_wire(&[7; 32], NOW_MS + 10).unwrap();
    pool.handle_timeout(NOW_MS + 4_999).unwrap();
    assert!(matches!(
        pool.handle_timeout(NOW_MS + 5_000),
        Err(ConnectionError::HandshakeTimeout)
    ));
}

#[test]
fn setup_timeout_counts_from_the_end_of_the_handshake() {
    let (authority, responder) = responder(1);
    let mut pool = Connection::accept(
        pool_session(1),
        responder,
        StdRng::seed_from_u64(2),
        config(None),
        NOW_MS,
    );
    let mut client = Connection::connect(
        Inert::default(),
        authority.x_only_public_key().0,
        &mut StdRng::seed_from_u64(3),
        config(None),
        NOW_MS,
    );
    let mut wire = Vec::new();
    assert!(client.poll_transmit(&mut wire));
    let done = NOW_MS + 1_000;
    pool.handle_wire(&wire, done).unwrap();
    assert!(pool.is_established());
    wire.clear();
    assert!(pool.poll_transmit(&mut wire));
    client.handle_wire(&wire, done).unwrap();
    assert!(client.is_established());
    assert_eq!(pool.poll_timeout(), Some(done + 7_000));
    pool.handle_timeout(done + 6_999).unwrap();
    assert!(matches!(
        pool.handle_timeout(done + 7_000),
        Err(ConnectionError::SetupTimeout)
    ));
}

#[test]
fn a_tampered_byte_ends_the_connection_with_the_noise_error() {
    let mut rig = Rig::new(1, None);
    rig.pump();
    let share = rig.find_share();
    rig.miner
        .with_protocol(|m| m.submit(&share))
        .unwrap()
        .unwrap();
    let mut wire = Vec::new();
    assert!(rig.miner.poll_transmit(&mut wire));
    wire[3] ^= 1;
    assert!(matches!(
        rig.pool.handle_wire(&wire, rig.now_ms),
        Err(ConnectionError::Noise(
            NoiseError::TransportHeaderAuthentication
        ))
    ));
    assert!(rig.pool.is_ended());
}

#[test]
fn a_tampered_handshake_reply_fails_authentication() {
    let mut rig = Rig::new(1, None);
    let mut wire = Vec::new();
    assert!(rig.miner.poll_transmit(&mut wire));
    rig.pool.handle_wire(&wire, NOW_MS).unwrap();
    wire.clear();
    assert!(rig.pool.poll_transmit(&mut wire));
    wire[100] ^= 1;
    assert!(matches!(
        rig.miner.handle_wire(&wire, NOW_MS),
        Err(ConnectionError::Noise(NoiseError::HandshakeAuthentication(
            _
        )))
    ));
}

#[test]
fn a_wrong_authority_is_refused() {
    let (_, responder) = responder(1);
    let mut pool = Connection::accept(
        pool_session(1),
        responder,
        StdRng::seed_from_u64(2),
        config(None),
        NOW_MS,
    );
    let other = Keypair::new(SECP256K1, &mut StdRng::seed_from_u64(9));
    let mut miner = Connection::connect(
        miner_session(),
        other.x_only_public_key().0,
        &mut StdRng::seed_from_u64(3),
        config(None),
        NOW_MS,
    );
    let mut wire = Vec::new();
    miner.poll_transmit(&mut wire);
    pool.handle_wire(&wire, NOW_MS).unwrap();
    wire.clear();
    pool.poll_transmit(&mut wire);
    assert!(matches!(
        miner.handle_wire(&wire, NOW_MS),
        Err(ConnectionError::Noise(
            NoiseError::CertificateSignatureInvalid
        ))
    ));
}
