//! Several pool instances on one ledger (issue 18), at the ledger: the registry of instances
//! (a server_id held by a live instance is refused with its holder named, a dead holder's
//! row is taken over, a released row is free) on every backend; and on one PostgreSQL
//! database written by several handles at once, as instances write it: two instances settling
//! the same blocks at the same moment pay each block once (balances credited once); share ids
//! commit in order, so a reader that reads "the shares after the last one I saw" misses none of
//! another instance's; and the PPLNS window kept up to date that way (payouts in the coinbase)
//! is the window read whole, whichever instance wrote its shares.

#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/sri_client.rs"]
mod sri_client;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{BlockHash, CompactTarget, Target};
use blvm_stratum_v2::ledger::{
    BatchSequence, BlockStatus, ClaimOutcome, FoundBlockRecord, InstanceClaim, Ledger, LedgerBatch,
    MemoryLedger, PostgresLedger, ShareRange, ShareRecord, SqliteLedger,
};
use blvm_stratum_v2::payout::{PayoutPolicy, WindowTracker, read_window, settle_unsettled};

use postgres::TempPostgres;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn hash(n: u64) -> BlockHash {
    BlockHash::from_raw_hash(sha256d::Hash::hash(&n.to_le_bytes()))
}

fn share(n: u64, user: &str, difficulty: f64) -> ShareRecord {
    ShareRecord {
        time_ms: now_ms(),
        user: user.into(),
        worker: "rig".into(),
        connection_id: 1,
        channel_id: 1,
        job_id: 1,
        target: Target::MAX,
        difficulty,
        hash: hash(n),
    }
}

fn claim(server_id: u16, instance: u64, host: &str, lease_ms: u64) -> InstanceClaim {
    InstanceClaim {
        server_id,
        instance,
        host: host.into(),
        data_dir: "/var/lib/pool".into(),
        addresses: format!("sv2 10.0.0.{instance}:3333"),
        lease_ms,
    }
}

/// The registry's rules on one backend: claim, refusal naming the holder, heartbeat, takeover
/// of a silent holder, release.
fn registry(l: &mut dyn Ledger) {
    const LEASE: u64 = 300;
    let a = claim(7, 1, "a", LEASE);
    let b = claim(7, 2, "b", LEASE);
    assert_eq!(
        l.claim_server_id(&a, now_ms()).unwrap(),
        ClaimOutcome::Claimed { replaced: None }
    );
    // Another server_id is another namespace.
    assert_eq!(
        l.claim_server_id(&claim(8, 2, "b", LEASE), now_ms())
            .unwrap(),
        ClaimOutcome::Claimed { replaced: None }
    );
    match l.claim_server_id(&b, now_ms()).unwrap() {
        ClaimOutcome::Held { holder, .. } => {
            assert_eq!((holder.server_id, holder.instance), (7, 1));
            assert_eq!(holder.host, "a");
            assert_eq!(holder.addresses, "sv2 10.0.0.1:3333");
        }
        other => panic!("a live holder's server_id was {other:?}"),
    }
    // Beating keeps it live past the lease.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(LEASE / 2));
        assert!(l.heartbeat(7, 1, now_ms()).unwrap());
    }
    assert!(matches!(
        l.claim_server_id(&b, now_ms()).unwrap(),
        ClaimOutcome::Held { .. }
    ));
    // Silent for longer than the lease: dead, taken over; the old holder's beat says so.
    std::thread::sleep(Duration::from_millis(LEASE + 200));
    match l.claim_server_id(&b, now_ms()).unwrap() {
        ClaimOutcome::Claimed {
            replaced: Some(dead),
        } => assert_eq!(dead.instance, 1),
        other => panic!("a dead holder's server_id was {other:?}"),
    }
    assert!(!l.heartbeat(7, 1, now_ms()).unwrap(), "taken over");
    assert!(l.heartbeat(7, 2, now_ms()).unwrap());
    // The same host and data directory again: the same instance restarted.
    let restarted = InstanceClaim {
        instance: 3,
        ..b.clone()
    };
    assert!(matches!(
        l.claim_server_id(&restarted, now_ms()).unwrap(),
        ClaimOutcome::Claimed { replaced: Some(_) }
    ));
    // A release by someone else does nothing; by the holder, frees it.
    l.release_server_id(7, 2).unwrap();
    assert_eq!(l.instances().unwrap().len(), 2);
    l.release_server_id(7, 3).unwrap();
    let rows = l.instances().unwrap();
    assert_eq!(rows.iter().map(|r| r.server_id).collect::<Vec<_>>(), [8]);
    assert_eq!(
        l.claim_server_id(&a, now_ms()).unwrap(),
        ClaimOutcome::Claimed { replaced: None }
    );
}

#[test]
fn the_registry_refuses_a_live_holder_and_takes_over_a_dead_one_on_every_backend() {
    registry(&mut MemoryLedger::new());
    let dir = tempfile::tempdir().unwrap();
    registry(&mut SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap());
    let pg = TempPostgres::start();
    registry(&mut PostgresLedger::connect(&pg.fresh_database()).unwrap());
}

/// Two instances claiming one server_id at the same moment: one gets it.
#[test]
fn two_instances_claiming_one_server_id_together_get_it_once() {
    let pg = TempPostgres::start();
    let url = pg.fresh_database();
    drop(PostgresLedger::connect(&url).unwrap());
    for round in 0..10u16 {
        let barrier = Barrier::new(2);
        let outcomes: Vec<ClaimOutcome> = std::thread::scope(|scope| {
            let racers: Vec<_> = (1..=2u64)
                .map(|instance| {
                    let (url, barrier) = (url.clone(), &barrier);
                    scope.spawn(move || {
                        let mut l = PostgresLedger::connect(&url).unwrap();
                        barrier.wait();
                        l.claim_server_id(
                            &claim(round, instance, &format!("h{instance}"), 60_000),
                            now_ms(),
                        )
                        .unwrap()
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let claimed = outcomes
            .iter()
            .filter(|o| matches!(o, ClaimOutcome::Claimed { .. }))
            .count();
        assert_eq!(claimed, 1, "round {round}: {outcomes:?}");
    }
}

/// Two instances' writers settling the same accepted blocks at the same moment (each runs
/// `settle_unsettled` at start and on each new tip): each block has one computation, and the
/// balances are the sum of those computations, credited once.
#[test]
fn two_instances_settling_the_same_blocks_at_once_pay_each_block_once() {
    let pg = TempPostgres::start();
    let url = pg.fresh_database();
    let policy = PayoutPolicy::default();
    let mut setup = PostgresLedger::connect(&url).unwrap();
    let bits = CompactTarget::from_consensus(0x207f_ffff);
    let mut blocks = Vec::new();
    let mut n = 0u64;
    for round in 0..8u64 {
        // Shares of three users, then a block every few shares, all accepted, none settled.
        let mut shares = Vec::new();
        let mut found = Vec::new();
        for i in 0..30u64 {
            n += 1;
            let user = ["bc1qalice", "bc1qbob", "carol"][(i % 3) as usize];
            shares.push(share(n, user, 1e-9 * (1 + i % 4) as f64));
            if i % 6 == 5 {
                found.push(FoundBlockRecord {
                    hash: hash(n),
                    height: (round * 10 + i) as u32,
                    time_ms: now_ms(),
                    reward_sat: 5_000_000_000 - n,
                    bits,
                    user: user.into(),
                    worker: "rig".into(),
                    coinbase_payouts: None,
                    payout_terms: None,
                });
            }
        }
        setup
            .append(&LedgerBatch {
                shares,
                blocks: found.clone(),
                ..LedgerBatch::default()
            })
            .unwrap();
        for b in &found {
            setup
                .set_block_status(b.hash, &BlockStatus::Accepted)
                .unwrap();
        }
        blocks.extend(found.iter().map(|b| b.hash));
        // The two instances settle at the same moment.
        let barrier = Barrier::new(2);
        let settled: Vec<usize> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let (url, barrier, policy) = (url.clone(), &barrier, &policy);
                    scope.spawn(move || {
                        let mut l = PostgresLedger::connect(&url).unwrap();
                        barrier.wait();
                        let (settled, failed) = settle_unsettled(&mut l, policy, now_ms()).unwrap();
                        assert!(failed.is_empty(), "{failed:?}");
                        settled
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        // Between them, this round's blocks (a racer may count a block the other recorded
        // first: its record_payouts wrote nothing).
        assert!(settled.iter().sum::<usize>() >= found.len(), "{settled:?}");
    }
    let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let computations: i64 = client
        .query_one("SELECT count(*) FROM payout_computations", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        computations as usize,
        blocks.len(),
        "one computation per block"
    );
    // The balances are the computations' payouts, each counted once.
    let mut expected: std::collections::BTreeMap<String, u64> = Default::default();
    for b in &blocks {
        let c = setup.payouts(*b).unwrap().expect("settled");
        for p in &c.payouts {
            *expected.entry(p.user.clone()).or_default() += p.amount_sat;
        }
    }
    let balances: std::collections::BTreeMap<String, u64> = setup
        .balances()
        .unwrap()
        .into_iter()
        .map(|b| (b.user, b.earned_sat))
        .collect();
    assert_eq!(balances, expected);
    let paid: u64 = balances.values().sum();
    assert!(paid > 0);
}

/// Two instances appending at once while a third reads "the shares after the last id I saw",
/// over and over: it sees every share (ids commit in order across instances), and the window
/// it keeps that way (payouts in the coinbase) is the window read whole at the end.
/// Two instances pruning one database at the same moment, each at its own bound, inside a
/// pack (so each cuts it and writes its kept part again): the shares left are each stored
/// once, those past the later bound, whichever instance pruned first.
#[test]
fn two_instances_pruning_at_once_leave_each_share_once() {
    let pg = TempPostgres::start();
    for round in 0..12u64 {
        let url = pg.fresh_database();
        let mut setup = PostgresLedger::connect(&url).unwrap();
        // One pack of 100 shares, 1 ms apart.
        let start = 1_000_000 + round;
        let shares: Vec<ShareRecord> = (0..100u64)
            .map(|i| ShareRecord {
                time_ms: start + i,
                ..share(round * 1_000 + i, "bc1qalice", 1e-9)
            })
            .collect();
        setup
            .append(&LedgerBatch {
                shares,
                ..LedgerBatch::default()
            })
            .unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let pruners: Vec<_> = [40u64, 41]
            .into_iter()
            .map(|cut| {
                let (url, barrier) = (url.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut l = PostgresLedger::connect(&url).unwrap();
                    barrier.wait();
                    l.prune(start + cut, u64::MAX).unwrap()
                })
            })
            .collect();
        let pruned: u64 = pruners.into_iter().map(|p| p.join().unwrap()).sum();
        let left = setup.shares(&ShareRange::ALL).unwrap();
        let ids: BTreeSet<u64> = left.iter().map(|s| s.id).collect();
        assert_eq!(ids.len(), left.len(), "round {round}: a share stored twice");
        assert_eq!(
            left.len(),
            59,
            "round {round}: the shares from the later bound on"
        );
        assert_eq!(pruned, 41, "round {round}: each share pruned once");
        assert!(left.iter().all(|s| s.record.time_ms >= start + 41));
    }
}

#[test]
fn a_reader_of_new_shares_misses_none_of_two_concurrent_writers() {
    let pg = TempPostgres::start();
    let url = pg.fresh_database();
    drop(PostgresLedger::connect(&url).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    const BATCHES: u64 = 150;
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut l = PostgresLedger::connect(&url).unwrap();
                for b in 0..BATCHES {
                    let shares = (0..1 + (b % 5))
                        .map(|i| {
                            let n = (w << 40) | (b << 8) | i;
                            share(n, if w == 0 { "bc1qalice" } else { "bc1qbob" }, 1.0)
                        })
                        .collect();
                    // Numbered as a pool's writer numbers its commits (PostgreSQL then writes
                    // them in one call, schema 6), or not (a transaction of statements): writer
                    // 0 numbers every batch, writer 1 every other one, so both ways race.
                    let numbered = w == 0 || b % 2 == 0;
                    l.append(&LedgerBatch {
                        sequence: numbered.then_some(BatchSequence {
                            writer: 100 + w,
                            number: b + 1,
                        }),
                        shares,
                        ..LedgerBatch::default()
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    let policy = PayoutPolicy {
        window_multiple: 1e12,
        ..PayoutPolicy::default()
    };
    let bits = CompactTarget::from_consensus(0x1d00_ffff);
    let reader = {
        let (url, done, policy) = (url.clone(), done.clone(), policy.clone());
        std::thread::spawn(move || {
            let mut l = PostgresLedger::connect(&url).unwrap();
            let mut seen = BTreeSet::new();
            let mut last = 0u64;
            let mut tracker = WindowTracker::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                for s in l
                    .shares(&ShareRange::Ids {
                        from_id: last + 1,
                        to_id: u64::MAX >> 1,
                        limit: usize::MAX >> 1,
                    })
                    .unwrap()
                {
                    last = last.max(s.id);
                    seen.insert(s.id);
                }
                tracker.update(&mut l, &policy, bits).unwrap();
                if finished {
                    return (seen, tracker.update(&mut l, &policy, bits).unwrap());
                }
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let (seen, tracked) = reader.join().unwrap();
    let mut l = PostgresLedger::connect(&url).unwrap();
    let all: BTreeSet<u64> = l
        .shares(&ShareRange::Ids {
            from_id: 0,
            to_id: u64::MAX >> 1,
            limit: usize::MAX >> 1,
        })
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    let expected: u64 = (0..BATCHES).map(|b| 1 + b % 5).sum::<u64>() * 2;
    assert_eq!(all.len() as u64, expected);
    assert_eq!(
        seen, all,
        "every share seen by reading after the last id seen"
    );
    let whole = read_window(&mut l, &policy, bits).unwrap();
    assert_eq!(tracked, whole, "the kept window is the window read whole");
    assert_eq!(whole.counted.by_user.len(), 2, "both instances' users");
}

/// Two pools on one ledger with one server_id: the second's start is refused with the first
/// named (its address), and succeeds once the first has stopped (released its claim); with
/// another server_id both run. The same authority key file gives both the same public key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pool_with_a_held_server_id_is_refused_until_the_first_stops() {
    use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
    use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
    use blvm_stratum_v2::server::{RegistrationError, StratumV2Error, StratumV2Server};

    let shared = tempfile::tempdir().unwrap();
    let ledger = shared.path().join("ledger.sqlite3");
    let key = shared.path().join("authority_secret_key");
    let node = Arc::new(EmbeddedNode::new(ChainConfig::default()));
    let pool = |server_id: u16| {
        let dir = tempfile::tempdir().unwrap();
        let config = PoolConfig::resolve(
            &PoolOptions {
                listen_addr: Some("127.0.0.1:0".into()),
                sv1_listen_addr: Some("off".into()),
                data_dir: Some(dir.path().to_path_buf()),
                ledger_url: Some(ledger.display().to_string()),
                authority_key_path: Some(key.clone()),
                server_id: Some(server_id),
                ..PoolOptions::default()
            },
            "test",
        )
        .expect("config");
        (
            StratumV2Server::new(config, node.clone()).expect("server"),
            dir,
        )
    };
    // One key file for every instance, as `keygen` writes it (0600).
    let keypair = blvm_stratum_v2::noise::keys::generate_authority_keypair(&mut rand::thread_rng());
    blvm_stratum_v2::noise::keys::write_secret_key_file(&key, &keypair).unwrap();
    let (first, _d1) = pool(4);
    let first_addr = first.start().await.expect("the first starts");
    let (second, _d2) = pool(4);
    match second.start().await {
        Err(StratumV2Error::Registration(RegistrationError::Held {
            server_id,
            addresses,
            ..
        })) => {
            assert_eq!(server_id, 4);
            assert!(
                addresses.contains(&first_addr.to_string()),
                "{addresses} names {first_addr}"
            );
        }
        other => panic!("a held server_id gave {:?}", other.map(|_| ())),
    }
    let (third, _d3) = pool(5);
    third.start().await.expect("another server_id starts");
    let expected = blvm_stratum_v2::noise::keys::encode_public_key(&keypair.x_only_public_key().0);
    assert_eq!(first.authority_public_key(), expected);
    assert_eq!(third.authority_public_key(), expected);
    first.stop().await.expect("stopped");
    let (again, _d4) = pool(4);
    again
        .start()
        .await
        .expect("the server_id is free once its holder stopped");
    assert_eq!(again.authority_public_key(), third.authority_public_key());
    let rows = SqliteLedger::open(&ledger).unwrap().instances().unwrap();
    assert_eq!(rows.iter().map(|r| r.server_id).collect::<Vec<_>>(), [4, 5]);
    again.stop().await.unwrap();
    third.stop().await.unwrap();
    assert!(
        SqliteLedger::open(&ledger)
            .unwrap()
            .instances()
            .unwrap()
            .is_empty()
    );
}

/// An instance whose `server_id` is taken over while it runs (its heartbeats lost to a long
/// ledger outage, another instance claimed the row and is live) stops serving miners: it would
/// hand out prefixes of the other's extranonce namespace. It drains (its miner is sent
/// Reconnect) and says why, as a failure; the row stays the other instance's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_server_id_is_taken_over_stops_serving() {
    use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
    use blvm_stratum_v2::ledger::{ClaimOutcome, InstanceClaim};
    use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
    use blvm_stratum_v2::server::{StopRequest, StratumV2Server};
    use parsers_sv2::{AnyMessageOwned, CommonMessagesOwned};

    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite3");
    let config = PoolConfig::resolve(
        &PoolOptions {
            listen_addr: Some("127.0.0.1:0".into()),
            sv1_listen_addr: Some("off".into()),
            http_enabled: Some(false),
            data_dir: Some(dir.path().to_path_buf()),
            ledger_url: Some(ledger.display().to_string()),
            server_id: Some(6),
            instance_heartbeat_secs: Some(1),
            ..PoolOptions::default()
        },
        "test",
    )
    .expect("config");
    let node = Arc::new(EmbeddedNode::new(ChainConfig::default()));
    let server = StratumV2Server::new(config, node).expect("server");
    let addr = server.start().await.expect("starts");
    let mut miner = sri_client::Miner::ready(addr, server.authority_public_key(), 0)
        .await
        .expect("set up");
    miner.open(true, "taken.rig").await.expect("channel");

    // Another instance takes the row over: on its clock, the first one's heartbeat is long
    // past the lease (as after an outage), and its own is fresh for as long as this test runs.
    let later = now_ms() + 3_600_000;
    let intruder = InstanceClaim {
        server_id: 6,
        instance: 4242,
        host: "intruder".into(),
        data_dir: "/elsewhere".into(),
        addresses: "sv2 127.0.0.9:3333".into(),
        lease_ms: 3_000,
    };
    let outcome = SqliteLedger::open(&ledger)
        .unwrap()
        .claim_server_id(&intruder, later)
        .unwrap();
    assert!(
        matches!(outcome, ClaimOutcome::Claimed { replaced: Some(_) }),
        "{outcome:?}"
    );

    let why = tokio::time::timeout(Duration::from_secs(10), server.stop_requested())
        .await
        .expect("the instance asks to stop after its next heartbeat");
    let StopRequest::ServerIdTakenOver(text) = &why else {
        panic!("{why:?}");
    };
    assert!(why.is_failure());
    assert!(
        text.contains("intruder") && text.contains("127.0.0.9:3333"),
        "{text}"
    );
    let reconnect = loop {
        match tokio::time::timeout(Duration::from_secs(10), miner.recv())
            .await
            .expect("the miner hears from the draining pool")
        {
            Ok(AnyMessageOwned::Common(CommonMessagesOwned::Reconnect(r))) => break r,
            Ok(_) => continue,
            Err(e) => panic!("no Reconnect before the close: {e}"),
        }
    };
    assert_eq!(reconnect.new_port, 0);
    server.stop().await.expect("stops");
    let rows = SqliteLedger::open(&ledger).unwrap().instances().unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.server_id, r.host.as_str()))
            .collect::<Vec<_>>(),
        [(6, "intruder")],
        "the row stays the other instance's"
    );
}
