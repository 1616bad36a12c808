//! The steady-state share path through two `Connection` objects (CPU miner session as
//! initiator, pool mining session as responder, Noise included) does not allocate: a share
//! submitted, encrypted, decrypted, validated, acknowledged, encrypted, decrypted and
//! accounted, with every buffer reused. Counted on the test's own thread
//! (tests/common/counting_alloc.rs), so the harness's threads cannot disturb the count.

use std::sync::{Arc, RwLock};

use blvm_stratum_v2::client::{ChannelKind, Hasher, MinerConfig, MinerSession, Share};
use blvm_stratum_v2::connection::{Connection, ConnectionConfig};
use blvm_stratum_v2::mining::{ExtranonceAllocator, MiningConfig, Session, Work};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain};
use blvm_stratum_v2::noise::Responder;
use rand::SeedableRng;
use rand::rngs::StdRng;
use secp256k1::{Keypair, SECP256K1};

const NOW_S: u32 = 1_800_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::count;

#[test]
fn the_share_path_through_two_connections_does_not_allocate() {
    let mut rng = StdRng::seed_from_u64(1);
    let authority = Keypair::new(SECP256K1, &mut rng);
    let responder = Arc::new(RwLock::new(Responder::generate(
        authority,
        NOW_S - 60,
        3_600,
        &mut rng,
    )));
    let mut chain = EmbeddedChain::new(ChainConfig {
        bits: 0x1d00ffff,
        synthetic_transactions: 3,
        block_interval_secs: 0,
    });
    // One fixed difficulty: vardiff has nothing to change.
    let config = Arc::new(MiningConfig {
        min_difficulty: 1e-9,
        max_difficulty: 1e-9,
        // One credit window for the whole run: the shares are mined in advance on one job,
        // which a new window would retire.
        credit_window_shares: 4096,
        // The shares go in a thousand a second (one per fake millisecond): far past the share
        // rate limit, which this test of the accepted path does not measure.
        share_rate_multiple: 1e9,
        ..MiningConfig::default()
    });
    let work = Work::new(1, chain.template(NOW_S), &config.coinbase).unwrap();
    let mut session = Session::new(config, Arc::new(ExtranonceAllocator::new()));
    session.on_work(&work, NOW_MS);
    let cfg = ConnectionConfig {
        idle_timeout_ms: Some(60_000),
        ..ConnectionConfig::default()
    };
    let mut pool = Connection::accept(session, responder, StdRng::seed_from_u64(2), cfg, NOW_MS);
    let miner = MinerSession::new(MinerConfig {
        channel: ChannelKind::Extended,
        user_identity: "alice.cpu".into(),
        ..MinerConfig::default()
    })
    .unwrap();
    let mut miner = Connection::connect(
        miner,
        authority.x_only_public_key().0,
        &mut rng,
        ConnectionConfig::default(),
        NOW_MS,
    );
    let mut to_pool = Vec::with_capacity(1024);
    let mut to_miner = Vec::with_capacity(1024);
    loop {
        let a = miner.poll_transmit(&mut to_pool);
        if a {
            pool.handle_wire(&to_pool, NOW_MS).unwrap();
            to_pool.clear();
        }
        let b = pool.poll_transmit(&mut to_miner);
        if b {
            miner.handle_wire(&to_miner, NOW_MS).unwrap();
            to_miner.clear();
        }
        if !a && !b {
            break;
        }
    }
    while pool.poll_event().is_some() {}
    while miner.poll_event().is_some() {}
    let work = miner.protocol().work().expect("work").clone();
    let mut hasher = Hasher::new(0, 1);
    let shares: Vec<Share> = (0..2100)
        .map(|_| {
            let mut found = None;
            hasher.mine(
                &work,
                |_| true,
                |s| {
                    found = Some(s);
                    false
                },
            );
            found.expect("a share")
        })
        .collect();

    let mut one = |share: &Share, now: u64| {
        miner.with_protocol(|m| m.submit(share)).unwrap().unwrap();
        assert!(miner.poll_transmit(&mut to_pool));
        pool.handle_wire(&to_pool, now).unwrap();
        to_pool.clear();
        let mut accepted = 0;
        while pool.poll_event().is_some() {
            accepted += 1;
        }
        assert_eq!(accepted, 1);
        assert!(pool.poll_transmit(&mut to_miner));
        miner.handle_wire(&to_miner, now).unwrap();
        to_miner.clear();
        while miner.poll_event().is_some() {}
    };
    // Buffers grow during the warm-up (the pool's duplicate filter up to its window).
    // Past 1,792 shares the duplicate set has grown to its last size before the run's end.
    for (i, share) in shares[..1800].iter().enumerate() {
        one(share, NOW_MS + i as u64);
    }
    let ((), during) = count(|| {
        for (i, share) in shares[1800..].iter().enumerate() {
            one(share, NOW_MS + 1800 + i as u64);
        }
    });
    assert_eq!(during, 0, "{during} allocations for 300 shares");
    assert_eq!(miner.protocol().counts().accepted, 2100);
}
