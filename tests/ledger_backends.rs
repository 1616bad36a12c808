//! The ledger's backends against its reference: the same scripted calls on MemoryLedger,
//! SqliteLedger and PostgresLedger give the same answers (shares, windows across batch
//! boundaries, time and id ranges, blocks and their verdicts, rejected counts, payouts exactly
//! once, balances, pruning); what a backend stores survives closing it; a newer schema is
//! refused; a backend that cannot write says `Unavailable` and works again when it can.
//! Random batches (proptest) give every backend the memory ledger's answers.

#[path = "common/postgres.rs"]
mod postgres;

use std::sync::Barrier;
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{BlockHash, CompactTarget, Target};
use blvm_stratum_v2::ledger::{
    BatchSequence, BlockStatus, CoinbasePayouts, FoundBlockRecord, Ledger, LedgerBatch,
    LedgerError, MemoryLedger, Payout, PayoutComputation, PayoutScheme, PayoutTerms,
    PostgresLedger, RejectedCount, ShareRange, ShareRecord, SqliteLedger, SqliteSettings,
    SqliteSync, StoredShare,
};
use proptest::prelude::*;

use postgres::TempPostgres;

fn hash(n: u64) -> BlockHash {
    BlockHash::from_raw_hash(sha256d::Hash::hash(&n.to_le_bytes()))
}

fn share(n: u64, user: &str, worker: &str, time_ms: u64, difficulty: f64) -> ShareRecord {
    let mut target = [0u8; 32];
    target[28] = (n % 251) as u8 + 1;
    target[3] = 0xa5;
    ShareRecord {
        time_ms,
        user: user.into(),
        worker: worker.into(),
        connection_id: n % 7 + 1,
        channel_id: u32::MAX - (n % 3) as u32,
        job_id: (n * 31) as u32,
        target: Target::from_le_bytes(target),
        difficulty,
        hash: hash(n),
    }
}

fn block(n: u64, user: &str) -> FoundBlockRecord {
    FoundBlockRecord {
        hash: hash(n),
        height: 800_000 + n as u32,
        time_ms: 1_700_000_000_000 + n,
        reward_sat: 312_500_000 + n,
        bits: CompactTarget::from_consensus(0x1703_0ecd),
        user: user.into(),
        worker: "rig".into(),
        coinbase_payouts: None,
        payout_terms: None,
    }
}

/// A block whose coinbase paid the PPLNS window (`coinbase_payouts = true`): what it paid is
/// stored with it, numbers that read back exactly included.
fn paid_block(n: u64, user: &str) -> FoundBlockRecord {
    FoundBlockRecord {
        coinbase_payouts: Some(CoinbasePayouts {
            window_difficulty: 1.5e12 + 0.1,
            counted_difficulty: 0.1 + 0.2,
            first_share_id: 2,
            last_share_id: n,
            fee_ppm: 10_000,
            dust_sat: 10_000,
            max_outputs: 16,
            payouts: vec![
                Payout {
                    user: "bc1qalice".into(),
                    amount_sat: 200_000_000,
                    difficulty: 1.0 / 3.0,
                },
                Payout {
                    user: "bob's \"account\"".into(),
                    amount_sat: 100_000_000,
                    difficulty: 1e-300,
                },
            ],
            pool_sat: 12_500_000 + n,
        }),
        payout_terms: Some(PayoutTerms {
            scheme: PayoutScheme::Pplns,
            window_multiple: 0.1 + 0.2,
            fee_percent: 1.0 / 3.0,
            solo_users: vec!["carol".into(), "dave's \"solo\"".into()],
        }),
        ..block(n, user)
    }
}

fn rejected(user: &str, worker: &str, reason: &str, count: u64) -> RejectedCount {
    RejectedCount {
        user: user.into(),
        worker: worker.into(),
        reason: reason.into(),
        count,
    }
}

fn computation(block_hash: BlockHash, scheme: &str, payouts: &[(&str, u64)]) -> PayoutComputation {
    PayoutComputation {
        block_hash,
        scheme: scheme.into(),
        reward_sat: 312_500_000,
        fee_sat: 3_125_000,
        window_difficulty: 1.5e12,
        counted_difficulty: 1234.5,
        first_share_id: 2,
        last_share_id: 9,
        computed_ms: 1_700_000_000_123,
        payouts: payouts
            .iter()
            .map(|(user, amount)| Payout {
                user: (*user).into(),
                amount_sat: *amount,
                difficulty: *amount as f64 / 3.0,
            })
            .collect(),
    }
}

/// Every answer, as its `Debug` text (f64 prints exactly): equal transcripts, equal answers.
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn note(&mut self, what: &str, answer: impl std::fmt::Debug) {
        self.0.push(format!("{what}: {answer:?}"));
    }
}

/// The scripted calls; every answer goes to the transcript.
fn script(l: &mut dyn Ledger) -> Transcript {
    let mut t = Transcript::default();
    t.note("empty last id", l.last_share_id().unwrap());
    t.note(
        "empty window",
        l.shares(&ShareRange::Window {
            last_id: 100,
            difficulty: 10.0,
        })
        .unwrap(),
    );
    // Three batches: shares of two users (one with two workers), a block, rejected counts.
    let mut n = 0;
    for (batch_index, size) in [3u64, 1, 5].into_iter().enumerate() {
        let mut batch = LedgerBatch::default();
        for _ in 0..size {
            n += 1;
            let user = if n % 3 == 0 { "bc1qbob" } else { "bc1qalice" };
            let worker = if n % 2 == 0 { "rig1" } else { "" };
            batch
                .shares
                .push(share(n, user, worker, 1_000 + 10 * n, 0.5 * n as f64));
        }
        batch.rejected.push(rejected(
            "bc1qalice",
            "rig1",
            "stale-share",
            batch_index as u64 + 1,
        ));
        batch
            .rejected
            .push(rejected("bc1qbob", "", "difficulty-too-low", 2));
        if batch_index == 1 {
            batch.blocks.push(block(n, "bc1qalice"));
        }
        if batch_index == 2 {
            batch.blocks.push(paid_block(n - 1, "bc1qbob"));
        }
        l.append(&batch).unwrap();
        t.note("last id", l.last_share_id().unwrap());
    }
    // An empty batch and a repeated block write nothing new.
    l.append(&LedgerBatch::default()).unwrap();
    l.append(&LedgerBatch {
        blocks: vec![block(4, "bc1qother")],
        ..LedgerBatch::default()
    })
    .unwrap();
    l.append(&LedgerBatch {
        blocks: vec![block(9, "bc1qbob")],
        ..LedgerBatch::default()
    })
    .unwrap();
    t.note("last id", l.last_share_id().unwrap());

    // Windows across batch boundaries, exact and passed, and from an older share.
    for (last_id, difficulty) in [
        (9, 4.5),
        (9, 4.6),
        (9, 8.5),
        (6, 6.0),
        (9, 1e9),
        (9, 0.0),
        (0, 5.0),
    ] {
        t.note(
            &format!("window {last_id} {difficulty}"),
            l.shares(&ShareRange::Window {
                last_id,
                difficulty,
            })
            .unwrap(),
        );
    }
    for (from_ms, to_ms, limit) in [
        (1_020, 1_060, 100),
        (0, u64::MAX, 3),
        (1_090, 1_091, 10),
        (5, 5, 10),
    ] {
        t.note(
            &format!("time {from_ms} {to_ms} {limit}"),
            l.shares(&ShareRange::Time {
                from_ms,
                to_ms,
                limit,
            })
            .unwrap(),
        );
    }
    for (from_id, to_id, limit) in [(2, 5, 100), (1, u64::MAX, 4), (8, 100, 10), (6, 2, 10)] {
        t.note(
            &format!("ids {from_id} {to_id} {limit}"),
            l.shares(&ShareRange::Ids {
                from_id,
                to_id,
                limit,
            })
            .unwrap(),
        );
    }
    t.note("share by hash 4", l.share_by_hash(hash(4)).unwrap());
    t.note("share by hash 99", l.share_by_hash(hash(99)).unwrap());
    // A block appended after its share's batch, and a share that is no block.
    t.note("share by hash 9", l.share_by_hash(hash(9)).unwrap());
    t.note("share by hash 2", l.share_by_hash(hash(2)).unwrap());

    // Blocks and their verdicts.
    t.note("blocks", l.blocks(10).unwrap());
    t.note("blocks 1", l.blocks(1).unwrap());
    l.set_block_status(hash(4), &BlockStatus::Accepted).unwrap();
    l.set_block_status(hash(9), &BlockStatus::Rejected("bad-txns".into()))
        .unwrap();
    l.set_block_status(hash(77), &BlockStatus::Accepted)
        .unwrap();
    t.note("block 4", l.block(hash(4)).unwrap());
    t.note("block 9", l.block(hash(9)).unwrap());
    t.note("block 77", l.block(hash(77)).unwrap());
    t.note("rejected", l.rejected().unwrap());

    // Payouts exactly once per block; coinbase payouts move no balance.
    let pplns = computation(
        hash(4),
        "pplns",
        &[("bc1qalice", 200_000_000), ("bc1qbob", 109_375_000)],
    );
    t.note("record pplns", l.record_payouts(&pplns).unwrap());
    t.note("balances", l.balances().unwrap());
    let again = computation(hash(4), "pplns", &[("bc1qalice", 1), ("bc1qmallory", 5)]);
    t.note("record again", l.record_payouts(&again).unwrap());
    t.note("balances after again", l.balances().unwrap());
    let coinbase = computation(hash(9), "coinbase", &[("bc1qalice", 7), ("bc1qcarol", 8)]);
    t.note("record coinbase", l.record_payouts(&coinbase).unwrap());
    t.note("balances after coinbase", l.balances().unwrap());
    let solo = computation(hash(12), "solo", &[("bc1qbob", 5)]);
    t.note("record solo", l.record_payouts(&solo).unwrap());
    t.note("balances after solo", l.balances().unwrap());
    let in_coinbase = computation(hash(8), "coinbase-pplns", &[("bc1qalice", 11)]);
    t.note(
        "record coinbase-pplns",
        l.record_payouts(&in_coinbase).unwrap(),
    );
    t.note("balances after coinbase-pplns", l.balances().unwrap());
    t.note("block 8", l.block(hash(8)).unwrap());
    t.note("payouts 4", l.payouts(hash(4)).unwrap());
    t.note("payouts 9", l.payouts(hash(9)).unwrap());
    t.note("payouts 5", l.payouts(hash(5)).unwrap());

    // Maturity (issue 15): balances follow the paid block's status; the blocks to confirm are
    // the accepted ones and the orphans at or above the height asked.
    t.note("to confirm", l.blocks_to_confirm(0).unwrap());
    t.note(
        "set mature",
        l.set_block_status(hash(4), &BlockStatus::Mature).unwrap(),
    );
    t.note(
        "set mature again",
        l.set_block_status(hash(4), &BlockStatus::Mature).unwrap(),
    );
    t.note(
        "set unknown block",
        l.set_block_status(hash(99), &BlockStatus::Mature).unwrap(),
    );
    t.note("balances mature", l.balances().unwrap());
    t.note("to confirm mature", l.blocks_to_confirm(0).unwrap());
    l.set_block_status(hash(4), &BlockStatus::Orphaned).unwrap();
    t.note("balances orphaned", l.balances().unwrap());
    t.note("to confirm orphaned low", l.blocks_to_confirm(0).unwrap());
    t.note(
        "to confirm orphaned high",
        l.blocks_to_confirm(800_005).unwrap(),
    );
    l.set_block_status(hash(4), &BlockStatus::Accepted).unwrap();
    t.note("balances back", l.balances().unwrap());

    // Pruning keeps the window: old shares go only below keep_from_id.
    t.note("prune", l.prune(1_050, 3).unwrap());
    t.note(
        "after prune",
        l.shares(&ShareRange::Ids {
            from_id: 0,
            to_id: 100,
            limit: 100,
        })
        .unwrap(),
    );
    t.note("prune again", l.prune(1_050, 3).unwrap());
    t.note("prune time", l.prune(1_035, 100).unwrap());
    t.note(
        "after prune time",
        l.shares(&ShareRange::Ids {
            from_id: 0,
            to_id: 100,
            limit: 100,
        })
        .unwrap(),
    );
    t.note(
        "window after prune",
        l.shares(&ShareRange::Window {
            last_id: 9,
            difficulty: 100.0,
        })
        .unwrap(),
    );
    // Ids are never reused, even when everything was pruned.
    t.note("prune all", l.prune(u64::MAX, u64::MAX).unwrap());
    t.note("last id after prune all", l.last_share_id().unwrap());
    l.append(&LedgerBatch {
        shares: vec![share(50, "bc1qdave", "x", 5_000, 1.0)],
        ..LedgerBatch::default()
    })
    .unwrap();
    t.note(
        "after prune all",
        l.shares(&ShareRange::Ids {
            from_id: 0,
            to_id: 100,
            limit: 100,
        })
        .unwrap(),
    );
    t
}

fn assert_same(backend: &str, got: &Transcript, reference: &Transcript) {
    assert_eq!(
        got.0.len(),
        reference.0.len(),
        "{backend}: transcript length"
    );
    for (g, r) in got.0.iter().zip(&reference.0) {
        assert_eq!(g, r, "{backend} differs from MemoryLedger");
    }
}

fn reference() -> Transcript {
    script(&mut MemoryLedger::new())
}

#[test]
fn memory_reference_answers_what_the_trait_says() {
    let mut l = MemoryLedger::new();
    let t = script(&mut l);
    // A second computation for a paid block is refused and changes nothing.
    let line = |what: &str| t.0.iter().find(|l| l.starts_with(what)).cloned().unwrap();
    assert_eq!(line("record again: "), "record again: false");
    assert_eq!(
        line("balances: ").trim_start_matches("balances: "),
        line("balances after again: ").trim_start_matches("balances after again: ")
    );
    assert_eq!(
        line("balances after again: ").trim_start_matches("balances after again: "),
        line("balances after coinbase: ").trim_start_matches("balances after coinbase: ")
    );
    assert_eq!(
        line("balances after solo: ").trim_start_matches("balances after solo: "),
        line("balances after coinbase-pplns: ")
            .trim_start_matches("balances after coinbase-pplns: "),
        "payouts in the coinbase move no balance"
    );
    assert!(line("block 8: ").contains("pool_sat: 12500008"));
    // Block 4 paid alice 200,000,000 and bob 109,375,000: immature while accepted, mature,
    // then in no balance while orphaned, and immature again when it comes back.
    let alice = |what: &str| {
        line(what)
            .split("Balance { ")
            .find(|b| b.contains("\"bc1qalice\""))
            .map(|b| b.split(" }").next().unwrap().to_owned())
    };
    assert_eq!(
        alice("balances: ").as_deref(),
        Some("user: \"bc1qalice\", earned_sat: 200000000, immature_sat: 200000000")
    );
    assert_eq!(
        alice("balances mature: ").as_deref(),
        Some("user: \"bc1qalice\", earned_sat: 200000000, immature_sat: 0")
    );
    assert_eq!(
        alice("balances orphaned: ").as_deref(),
        Some("user: \"bc1qalice\", earned_sat: 0, immature_sat: 0")
    );
    assert_eq!(alice("balances back: "), alice("balances: "));
    // A write says whether it changed the status: once, not again, not for an unknown block.
    assert_eq!(line("set mature: "), "set mature: true");
    assert_eq!(line("set mature again: "), "set mature again: false");
    assert_eq!(line("set unknown block: "), "set unknown block: false");
    assert!(
        line("to confirm: ").contains("Accepted")
            && !line("to confirm mature: ").contains("Accepted")
    );
    assert!(line("to confirm orphaned low: ").contains("Orphaned"));
    assert!(!line("to confirm orphaned high: ").contains("Orphaned"));
    assert_eq!(
        line("last id after prune all: "),
        "last id after prune all: 0"
    );
}

#[test]
fn sqlite_answers_like_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    assert_same("sqlite", &script(&mut sqlite), &reference());
}

#[test]
fn postgres_answers_like_memory() {
    let pg = TempPostgres::start();
    let mut ledger = PostgresLedger::connect(&pg.url()).unwrap();
    assert_same("postgres", &script(&mut ledger), &reference());
}

#[test]
fn sqlite_file_is_private_and_in_wal_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let _ledger = SqliteLedger::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let check = rusqlite::Connection::open(&path).unwrap();
    let journal: String = check
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let version: i64 = check
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, i64::from(SqliteLedger::schema_version()));
}

/// Appends a few shares, a block and counts, pays the block: what reopening must find.
fn fill(l: &mut dyn Ledger) {
    l.append(&LedgerBatch {
        sequence: None,
        shares: (1..=5)
            .map(|n| share(n, "bc1qalice", "w", 100 * n, 2.0))
            .collect(),
        blocks: vec![block(5, "bc1qalice"), paid_block(4, "bc1qbob")],
        rejected: vec![rejected("bc1qalice", "w", "stale-share", 3)],
    })
    .unwrap();
    l.set_block_status(hash(5), &BlockStatus::Accepted).unwrap();
    assert!(
        l.record_payouts(&computation(hash(5), "pplns", &[("bc1qalice", 9)]))
            .unwrap()
    );
}

/// Every share a ledger holds, oldest first.
fn all_shares(l: &mut dyn Ledger) -> Vec<StoredShare> {
    l.shares(&ShareRange::ALL).unwrap()
}

fn contents(l: &mut dyn Ledger) -> Transcript {
    let mut t = Transcript::default();
    t.note(
        "shares",
        l.shares(&ShareRange::Ids {
            from_id: 0,
            to_id: u64::MAX,
            limit: 100,
        })
        .unwrap(),
    );
    t.note("blocks", l.blocks(10).unwrap());
    t.note("payouts", l.payouts(hash(5)).unwrap());
    t.note("balances", l.balances().unwrap());
    t.note("rejected", l.rejected().unwrap());
    t
}

#[test]
fn sqlite_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let mut memory = MemoryLedger::new();
    fill(&mut memory);
    {
        let mut l = SqliteLedger::open(&path).unwrap();
        fill(&mut l);
    }
    let mut l = SqliteLedger::open(&path).unwrap();
    assert_same("sqlite reopened", &contents(&mut l), &contents(&mut memory));
    // New shares continue the ids; the worker cache starts empty and finds the stored pair.
    l.append(&LedgerBatch {
        shares: vec![share(6, "bc1qalice", "w", 600, 2.0)],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(l.last_share_id().unwrap(), 6);
}

#[test]
fn postgres_reconnect_keeps_everything() {
    let pg = TempPostgres::start();
    let mut memory = MemoryLedger::new();
    fill(&mut memory);
    {
        let mut l = PostgresLedger::connect(&pg.url()).unwrap();
        fill(&mut l);
    }
    let mut l = PostgresLedger::connect(&pg.url()).unwrap();
    assert_same(
        "postgres reconnected",
        &contents(&mut l),
        &contents(&mut memory),
    );
}

#[test]
fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    drop(SqliteLedger::open(&path).unwrap());
    let newer = i64::from(SqliteLedger::schema_version()) + 1;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO schema_version (version, applied_ms) VALUES (?1, 0)",
            [newer],
        )
        .unwrap();
    match SqliteLedger::open(&path) {
        Err(LedgerError::Schema(text)) => assert!(text.contains("newer"), "{text}"),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

/// A newer schema whose newer versions allow this program (a newer program's migration that
/// only added): this program runs on it unchanged, its shares before and after are there. One
/// newer version that does not allow it (it changed what this program uses) is refused, and
/// says which. `open` opens the ledger; `add_version(sql, version, oldest)` runs a newer
/// program's migration (`sql`, then its `schema_version` row).
fn runs_on_a_newer_schema_only_while_its_versions_allow_it<L: Ledger + std::fmt::Debug>(
    known: i64,
    open: impl Fn() -> Result<L, LedgerError>,
    mut add_version: impl FnMut(&str, i64, i64),
) {
    open().unwrap().append(&one_share(1)).unwrap();
    add_version("CREATE TABLE added_later (x integer)", known + 1, known);
    let mut ledger = open().unwrap();
    ledger.append(&one_share(2)).unwrap();
    assert_eq!(ledger.last_share_id().unwrap(), 2);
    drop(ledger);
    add_version("", known + 2, known + 2);
    match open() {
        Err(LedgerError::Schema(text)) => {
            assert!(
                text.contains(&format!("version {} needs", known + 2)),
                "{text}"
            )
        }
        other => panic!("expected a schema error, got {other:?}"),
    }
}

#[test]
fn sqlite_runs_on_a_newer_schema_only_while_its_versions_allow_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let newer = || rusqlite::Connection::open(&path).unwrap();
    runs_on_a_newer_schema_only_while_its_versions_allow_it(
        i64::from(SqliteLedger::schema_version()),
        || SqliteLedger::open(&path),
        |sql, version, oldest| {
            let c = newer();
            c.execute_batch(sql).unwrap();
            c.execute(
                "INSERT INTO schema_version (version, applied_ms, oldest_program_schema) \
                 VALUES (?1, 0, ?2)",
                [version, oldest],
            )
            .unwrap();
        },
    );
}

/// A schema-4 PostgreSQL ledger's share rows become packs with the same ids and fields (a
/// block's link to its share kept), the rows' table goes, and the next commit's ids follow the
/// highest ever handed out (schema 5, as SQLite's).
#[test]
fn postgres_share_rows_of_schema_4_are_moved_into_packs() {
    let pg = TempPostgres::start();
    let url = pg.fresh_database();
    let old = |n: u64| share(n, &format!("u{}", n % 3), "w", 1_000 + n, 1.0 + n as f64);
    {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        client
            .batch_execute(
                "CREATE TABLE schema_version (version bigint PRIMARY KEY, \
                 applied_ms bigint NOT NULL)",
            )
            .unwrap();
        let migrations = [
            include_str!("../migrations/postgres/0001_init.sql"),
            include_str!("../migrations/postgres/0002_coinbase_payouts.sql"),
            include_str!("../migrations/postgres/0003_instances.sql"),
            include_str!("../migrations/postgres/0004_maturity.sql"),
        ];
        for (n, sql) in migrations.iter().enumerate() {
            client.batch_execute(sql).unwrap();
            client
                .execute(
                    "INSERT INTO schema_version VALUES ($1, 0)",
                    &[&(n as i64 + 1)],
                )
                .unwrap();
        }
        client
            .batch_execute(
                "INSERT INTO workers (id, \"user\", worker) \
                 VALUES (1, 'u0', 'w'), (2, 'u1', 'w'), (3, 'u2', 'w')",
            )
            .unwrap();
        let mut tx = client.transaction().unwrap();
        let insert = tx
            .prepare(
                "INSERT INTO shares (time_ms, worker_id, connection_id, channel_id, job_id, \
                 target, difficulty, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .unwrap();
        for n in 0..5000u64 {
            let s = old(n);
            tx.execute(
                &insert,
                &[
                    &(s.time_ms as i64),
                    &((n % 3) as i32 + 1),
                    &(s.connection_id as i64),
                    &(s.channel_id as i32),
                    &(s.job_id as i32),
                    &&s.target.to_le_bytes()[..],
                    &s.difficulty,
                    &&s.hash.as_byte_array()[..],
                ],
            )
            .unwrap();
        }
        // Share 42's block, linked by id.
        tx.execute(
            "INSERT INTO blocks (hash, height, time_ms, reward_sat, bits, \"user\", worker, \
             share_id) VALUES ($1, 1, 1, 1, 545259519, 'u2', 'w', 42)",
            &[&&old(41).hash.as_byte_array()[..]],
        )
        .unwrap();
        // The newest rows pruned: their ids are never handed out again.
        tx.execute("DELETE FROM shares WHERE id > 4990", &[])
            .unwrap();
        tx.commit().unwrap();
    }
    let mut ledger = PostgresLedger::connect(&url).unwrap();
    let stored = all_shares(&mut ledger);
    assert_eq!(stored.len(), 4990);
    for (n, s) in stored.iter().enumerate() {
        assert_eq!((s.id, &s.record), (n as u64 + 1, &old(n as u64)));
    }
    assert_eq!(
        ledger.share_by_hash(old(41).hash).unwrap().map(|s| s.id),
        Some(42)
    );
    ledger
        .append(&LedgerBatch {
            shares: vec![old(9_999)],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ledger.last_share_id().unwrap(), 5001);
    let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let gone: bool = client
        .query_one("SELECT to_regclass('shares_v4') IS NULL", &[])
        .unwrap()
        .get(0);
    assert!(gone, "the rows' table is gone");
    let in_view: i64 = client
        .query_one("SELECT count(*) FROM shares", &[])
        .unwrap()
        .get(0);
    assert_eq!(in_view, 4991, "the view shows every share, a row each");
}

/// `shares` is a view of the packs with a row per share (operators' own SQL), decoded in SQL
/// exactly as the program decodes them: every field, a connection id of 2^63 and up, the
/// largest ids, CompactSize integers of every width, difficulties bit for bit (subnormal
/// included).
#[test]
fn postgres_shares_view_gives_every_field_of_every_share() {
    let pg = TempPostgres::start();
    let url = pg.fresh_database();
    let mut ledger = PostgresLedger::connect(&url).unwrap();
    let difficulties = [
        1e-12,
        65_536.0,
        0.1,
        f64::MIN_POSITIVE / 3.0,
        1.0 / 3.0,
        2.5e300,
        7.0,
    ];
    let shares: Vec<ShareRecord> = difficulties
        .iter()
        .enumerate()
        .map(|(n, d)| {
            let n = n as u64;
            let mut s = share(n, "bc1qalice", &format!("rig{n}"), 0, *d);
            s.time_ms = [0, 200, 70_000, 5_000_000_000, 1, 9, 3][n as usize] + 1_700_000_000_000;
            s.connection_id = [1, u64::MAX, 1 << 63, 300, 70_000, 1 << 40, 252][n as usize];
            s.channel_id = [u32::MAX, 0, 253, 65_536, 7, 1, 2][n as usize];
            s.job_id = [u32::MAX - 1, 254, 0, 1, 65_535, 9, 10][n as usize];
            s
        })
        .collect();
    ledger
        .append(&LedgerBatch {
            shares: shares.clone(),
            ..Default::default()
        })
        .unwrap();
    let stored = all_shares(&mut ledger);
    assert_eq!(stored.len(), shares.len());
    let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let rows = client
        .query(
            "SELECT s.id, s.time_ms, w.\"user\", w.worker, s.connection_id, s.channel_id, \
             s.job_id, s.target, s.difficulty, s.hash FROM shares s \
             JOIN workers w ON w.id = s.worker_id ORDER BY s.id",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), stored.len());
    for (row, s) in rows.iter().zip(&stored) {
        let r = &s.record;
        assert_eq!(row.get::<_, i64>(0) as u64, s.id);
        assert_eq!(row.get::<_, i64>(1) as u64, r.time_ms);
        assert_eq!(row.get::<_, &str>(2), &*r.user);
        assert_eq!(row.get::<_, &str>(3), &*r.worker);
        assert_eq!(row.get::<_, i64>(4) as u64, r.connection_id, "same bits");
        assert_eq!(row.get::<_, i64>(5), i64::from(r.channel_id));
        assert_eq!(row.get::<_, i64>(6), i64::from(r.job_id));
        assert_eq!(row.get::<_, &[u8]>(7), &r.target.to_le_bytes()[..]);
        assert_eq!(
            row.get::<_, f64>(8).to_bits(),
            r.difficulty.to_bits(),
            "difficulty {} bit for bit",
            r.difficulty
        );
        assert_eq!(row.get::<_, &[u8]>(9), &r.hash.as_byte_array()[..]);
    }
    for (s, original) in stored.iter().zip(&shares) {
        assert_eq!(&s.record, original);
    }
}

#[test]
fn postgres_refuses_a_newer_schema() {
    let pg = TempPostgres::start();
    drop(PostgresLedger::connect(&pg.url()).unwrap());
    let newer = i64::from(PostgresLedger::schema_version()) + 1;
    let mut client = ::postgres::Client::connect(&pg.url(), ::postgres::NoTls).unwrap();
    client
        .execute(
            "INSERT INTO schema_version (version, applied_ms) VALUES ($1, 0)",
            &[&newer],
        )
        .unwrap();
    match PostgresLedger::connect(&pg.url()) {
        Err(LedgerError::Schema(text)) => assert!(text.contains("newer"), "{text}"),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

/// As SQLite's: an instance still on this program while another, upgraded, has migrated the
/// shared database.
#[test]
fn postgres_runs_on_a_newer_schema_only_while_its_versions_allow_it() {
    let pg = TempPostgres::start();
    let mut newer = ::postgres::Client::connect(&pg.url(), ::postgres::NoTls).unwrap();
    runs_on_a_newer_schema_only_while_its_versions_allow_it(
        i64::from(PostgresLedger::schema_version()),
        || PostgresLedger::connect(&pg.url()),
        |sql, version, oldest| {
            newer.batch_execute(sql).unwrap();
            newer
                .execute(
                    "INSERT INTO schema_version (version, applied_ms, oldest_program_schema) \
                     VALUES ($1, 0, $2)",
                    &[&version, &oldest],
                )
                .unwrap();
        },
    );
}

fn one_share(n: u64) -> LedgerBatch {
    LedgerBatch {
        shares: vec![share(n, "bc1qalice", "w", n, 1.0)],
        ..Default::default()
    }
}

/// Another process holding the write lock (as root, a file's mode does not stop writes, so
/// the lock is the way to make SQLite refuse): `Unavailable` after the busy timeout, nothing
/// written; once the lock is gone the same ledger writes again.
#[test]
fn sqlite_locked_is_unavailable_then_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let settings = SqliteSettings {
        busy_timeout: Duration::from_millis(100),
        synchronous: SqliteSync::Full,
    };
    let mut l = SqliteLedger::open_with(&path, &settings).unwrap();
    l.append(&one_share(1)).unwrap();
    let mut other = rusqlite::Connection::open(&path).unwrap();
    let lock = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    let err = l.append(&one_share(2)).unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = l
        .record_payouts(&computation(hash(1), "pplns", &[("a", 1)]))
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    drop(lock);
    l.append(&one_share(3)).unwrap();
    let ids: Vec<u64> = l
        .shares(&ShareRange::Ids {
            from_id: 0,
            to_id: 100,
            limit: 100,
        })
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, [1, 2]);
}

/// A file this process may not write: `Unavailable`; writable again: it opens and writes.
/// Root ignores a file's mode, so as root the file is made immutable (`chattr +i`) instead;
/// where even that is not permitted (a container without CAP_LINUX_IMMUTABLE), the lock test
/// above covers the same path.
#[test]
fn sqlite_read_only_file_is_unavailable_then_works() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let mut l = SqliteLedger::open(&path).unwrap();
    l.append(&one_share(1)).unwrap();
    drop(l);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let mut immutable = false;
    if std::fs::OpenOptions::new().write(true).open(&path).is_ok() {
        // Privileged: the mode does not stop us.
        immutable = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    }
    let read_only = std::fs::OpenOptions::new().write(true).open(&path).is_err();
    assert!(read_only || !immutable, "chattr +i left the file writable");
    if read_only {
        let err = SqliteLedger::open(&path).unwrap_err();
        eprintln!("read-only ledger: {err}");
        assert!(err.is_transient(), "{err:?}");
    }
    if immutable {
        let status = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut l = SqliteLedger::open(&path).unwrap();
    l.append(&one_share(2)).unwrap();
    assert_eq!(l.last_share_id().unwrap(), 2);
}

/// The server stopped: `Unavailable`; started again: the same ledger reconnects and writes.
#[test]
fn postgres_down_is_unavailable_then_reconnects() {
    // Numbered as the writer numbers them: once the worker is known, a commit of shares is
    // one call (schema 6), and that way fails and recovers as the transaction's way does.
    let numbered = |n: u64| LedgerBatch {
        sequence: Some(BatchSequence {
            writer: 3,
            number: n,
        }),
        ..one_share(n)
    };
    let mut pg = TempPostgres::start();
    let mut l = PostgresLedger::connect(&pg.url()).unwrap();
    l.append(&numbered(1)).unwrap();
    l.append(&numbered(2)).unwrap();
    pg.stop();
    let err = l.append(&numbered(3)).unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = l.last_share_id().unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    pg.start_again();
    l.append(&numbered(4)).unwrap();
    l.append(&numbered(5)).unwrap();
    let shares = l
        .shares(&ShareRange::Ids {
            from_id: 0,
            to_id: 100,
            limit: 100,
        })
        .unwrap();
    let ids: Vec<u64> = shares.iter().map(|s| s.id).collect();
    assert_eq!(
        ids,
        [1, 2, 3, 4],
        "nothing of the failed commit, ids consecutive"
    );
    for (stored, n) in shares.iter().zip([1, 2, 4, 5]) {
        assert_eq!(stored.record, share(n, "bc1qalice", "w", n, 1.0));
    }
}

/// A ledger whose connection drops and comes back to another database under the same URL (a
/// restored backup, a promoted standby missing the last worker rows) learns worker ids again:
/// a commit never carries an id the old database gave, which the new one may have given to
/// another miner.
#[test]
fn postgres_worker_ids_are_learnt_again_after_a_reconnect() {
    let pg = TempPostgres::start();
    let url = pg.url_of("restored");
    let mut admin = ::postgres::Client::connect(&pg.url_of("postgres"), ::postgres::NoTls).unwrap();
    admin.batch_execute("CREATE DATABASE restored").unwrap();
    let numbered = |n: u64, user: &str| LedgerBatch {
        sequence: Some(BatchSequence {
            writer: 11,
            number: n,
        }),
        shares: vec![share(n, user, "rig", n, 1.0)],
        ..Default::default()
    };
    let mut l = PostgresLedger::connect(&url).unwrap();
    l.append(&numbered(1, "bc1qalice")).unwrap();
    l.append(&numbered(2, "bc1qalice")).unwrap(); // alice/rig's id known: one call
    // The database is replaced under its URL; in the new one another miner has worker id 1.
    // (The ledger's session is ended first; the rename waits until it is gone.)
    let renamed = (0..100).any(|_| {
        admin
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = 'restored' AND pid <> pg_backend_pid()",
            )
            .unwrap();
        let done = admin
            .batch_execute("ALTER DATABASE restored RENAME TO replaced")
            .is_ok();
        if !done {
            std::thread::sleep(Duration::from_millis(50));
        }
        done
    });
    assert!(renamed, "the old database renamed");
    admin.batch_execute("CREATE DATABASE restored").unwrap();
    {
        let mut other = PostgresLedger::connect(&url).unwrap();
        other.append(&numbered(1, "bc1qbob")).unwrap();
    }
    // The first call after the drop fails (the connection is gone) or reconnects; either way
    // the next commits land in the new database, credited to alice.
    let _ = l.append(&numbered(3, "bc1qalice"));
    l.append(&numbered(4, "bc1qalice")).unwrap();
    l.append(&numbered(5, "bc1qalice")).unwrap();
    let users: Vec<(u64, String)> = l
        .shares(&ShareRange::Ids {
            from_id: 0,
            to_id: 100,
            limit: 100,
        })
        .unwrap()
        .into_iter()
        .map(|s| (s.record.time_ms, s.record.user.to_string()))
        .collect();
    assert_eq!(users[0], (1, "bc1qbob".to_string()));
    assert!(users.len() >= 3, "{users:?}");
    for (n, user) in &users[1..] {
        assert_eq!(
            user, "bc1qalice",
            "share {n} credited to its own miner: {users:?}"
        );
    }
}

/// One random batch: shares of a few users and workers, maybe a block, rejected counts.
fn arb_batch() -> impl Strategy<Value = LedgerBatch> {
    let share = (0u64..1_000, 0usize..3, 0usize..2, 0u64..10_000, 1u32..1_000).prop_map(
        |(n, user, worker, time_ms, difficulty)| {
            share(
                n,
                ["u0", "u1", "ü2"][user],
                ["", "w"][worker],
                time_ms,
                f64::from(difficulty) / 8.0,
            )
        },
    );
    let rejected = (0usize..3, 0usize..2, 1u64..5).prop_map(|(user, reason, count)| {
        rejected(
            ["u0", "u1", "ü2"][user],
            "",
            ["stale-share", "duplicate-share"][reason],
            count,
        )
    });
    (
        prop::collection::vec(share, 0..20),
        prop::collection::vec(0u64..1_000, 0..2),
        prop::collection::vec(rejected, 0..3),
        any::<bool>(),
    )
        .prop_map(|(shares, blocks, rejected, numbered)| LedgerBatch {
            // Numbered as the writer numbers its commits (in order: `answers`), or not (tools):
            // PostgreSQL writes a numbered commit of shares alone in one call, the rest in a
            // transaction of statements (schema 6).
            sequence: numbered.then_some(BatchSequence {
                writer: u64::MAX - 1,
                number: 0,
            }),
            shares,
            blocks: blocks.into_iter().map(|n| block(n, "u0")).collect(),
            rejected,
        })
}

/// What a ledger answers after a series of batches: everything readable.
fn answers(l: &mut dyn Ledger, batches: &[LedgerBatch], window: f64, prune_ms: u64) -> Transcript {
    let mut t = Transcript::default();
    for (n, b) in batches.iter().enumerate() {
        let mut b = b.clone();
        if let Some(sequence) = &mut b.sequence {
            sequence.number = n as u64 + 1;
        }
        l.append(&b).unwrap();
    }
    let last = l.last_share_id().unwrap();
    t.note("last", last);
    t.note(
        "window",
        l.shares(&ShareRange::Window {
            last_id: last,
            difficulty: window,
        })
        .unwrap(),
    );
    t.note(
        "older window",
        l.shares(&ShareRange::Window {
            last_id: last / 2,
            difficulty: window,
        })
        .unwrap(),
    );
    t.note(
        "time",
        l.shares(&ShareRange::Time {
            from_ms: 2_000,
            to_ms: 7_000,
            limit: 50,
        })
        .unwrap(),
    );
    t.note("blocks", l.blocks(100).unwrap());
    t.note("rejected", l.rejected().unwrap());
    t.note("prune", l.prune(prune_ms, last / 2).unwrap());
    t.note(
        "all",
        l.shares(&ShareRange::Ids {
            from_id: 0,
            to_id: u64::MAX,
            limit: 10_000,
        })
        .unwrap(),
    );
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_batches_sqlite_equals_memory(
        batches in prop::collection::vec(arb_batch(), 1..6),
        window in 0.0f64..200.0,
        prune_ms in 0u64..10_000,
    ) {
        let reference = answers(&mut MemoryLedger::new(), &batches, window, prune_ms);
        let dir = tempfile::tempdir().unwrap();
        let mut sqlite = SqliteLedger::open(dir.path().join("l.sqlite3")).unwrap();
        let got = answers(&mut sqlite, &batches, window, prune_ms);
        prop_assert_eq!(got.0, reference.0);
    }
}

#[test]
fn random_batches_postgres_equals_memory() {
    // One server for every case (a database per case): starting PostgreSQL takes seconds.
    let pg = TempPostgres::start();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 16,
        ..ProptestConfig::default()
    });
    let strategy = (
        prop::collection::vec(arb_batch(), 1..6),
        0.0f64..200.0,
        0u64..10_000,
    );
    runner
        .run(&strategy, |(batches, window, prune_ms)| {
            let reference = answers(&mut MemoryLedger::new(), &batches, window, prune_ms);
            let url = pg.fresh_database();
            let mut ledger = PostgresLedger::connect(&url).unwrap();
            let got = answers(&mut ledger, &batches, window, prune_ms);
            prop_assert_eq!(got.0, reference.0);
            Ok(())
        })
        .unwrap();
}

/// Two instances on one database pay a block exactly once, racing from two threads; the
/// balances hold one payout.
#[test]
fn postgres_two_instances_pay_a_block_once() {
    let pg = TempPostgres::start();
    let url = pg.url();
    let paid: Vec<bool> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let url = url.clone();
                scope.spawn(move || {
                    let mut l = PostgresLedger::connect(&url).unwrap();
                    l.record_payouts(&computation(
                        hash(1),
                        "pplns",
                        &[("bc1qalice", 10), ("bc1qbob", 5)],
                    ))
                    .unwrap()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(paid.iter().filter(|p| **p).count(), 1, "{paid:?}");
    // Balances count the payouts of blocks in the chain: the block, accepted.
    let mut l = PostgresLedger::connect(&url).unwrap();
    l.append(&LedgerBatch {
        blocks: vec![block(1, "bc1qalice")],
        ..LedgerBatch::default()
    })
    .unwrap();
    l.set_block_status(hash(1), &BlockStatus::Accepted).unwrap();
    let balances = PostgresLedger::connect(&url).unwrap().balances().unwrap();
    assert_eq!(
        balances
            .iter()
            .map(|b| (b.user.as_str(), b.earned_sat))
            .collect::<Vec<_>>(),
        [("bc1qalice", 10), ("bc1qbob", 5)]
    );
}

/// A window longer than one fetch (PostgreSQL reads it in chunks of 1024 rows) and ranges over
/// thousands of shares: the same as memory on every backend.
#[test]
fn long_windows_match_memory() {
    let batches: Vec<LedgerBatch> = (0..6)
        .map(|b| LedgerBatch {
            shares: (0..500)
                .map(|i| share(b * 500 + i, "u", "w", b * 500 + i, 1.0 + (i % 3) as f64))
                .collect(),
            ..Default::default()
        })
        .collect();
    let run = |l: &mut dyn Ledger| {
        let mut t = Transcript::default();
        for b in &batches {
            l.append(b).unwrap();
        }
        for (last_id, difficulty) in [
            (3_000, 2_500.0),
            (2_000, 3_900.0),
            (3_000, 1e12),
            (1_030, 2_048.0),
        ] {
            t.note(
                "window",
                l.shares(&ShareRange::Window {
                    last_id,
                    difficulty,
                })
                .unwrap(),
            );
        }
        t.note(
            "time",
            l.shares(&ShareRange::Time {
                from_ms: 100,
                to_ms: 2_900,
                limit: 2_000,
            })
            .unwrap(),
        );
        t
    };
    let reference = run(&mut MemoryLedger::new());
    let dir = tempfile::tempdir().unwrap();
    assert_same(
        "sqlite",
        &run(&mut SqliteLedger::open(dir.path().join("l.sqlite3")).unwrap()),
        &reference,
    );
    let pg = TempPostgres::start();
    assert_same(
        "postgres",
        &run(&mut PostgresLedger::connect(&pg.url()).unwrap()),
        &reference,
    );
}

/// `open` picks the backend from the location: a path is SQLite, a URL PostgreSQL.
#[test]
fn open_by_location_picks_the_backend() {
    use blvm_stratum_v2::ledger::{LedgerLocation, open};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let pg = TempPostgres::start();
    for text in [path.display().to_string(), pg.url()] {
        let location = LedgerLocation::parse(&text).unwrap();
        let mut ledger = open(&location).unwrap();
        ledger.append(&one_share(1)).unwrap();
        assert_eq!(ledger.last_share_id().unwrap(), 1, "{location}");
    }
    assert!(path.is_file());
}

/// A batch appended again under its writer's sequence number (the retry of a commit whose
/// reply was lost) writes nothing; a later number and another writer's batches are written.
fn retried_batches_are_written_once(l: &mut dyn Ledger) {
    let numbered = |writer: u64, number: u64, share_n: u64| LedgerBatch {
        sequence: Some(BatchSequence { writer, number }),
        ..one_share(share_n)
    };
    let writer = u64::MAX - 7; // above i64::MAX: stored with the same bits
    l.append(&numbered(writer, 1, 1)).unwrap();
    l.append(&numbered(writer, 1, 1)).unwrap();
    assert_eq!(
        l.last_share_id().unwrap(),
        1,
        "the same batch again: nothing"
    );
    l.append(&numbered(writer, 2, 2)).unwrap();
    l.append(&numbered(writer, 1, 3)).unwrap();
    assert_eq!(l.last_share_id().unwrap(), 2, "an older number: nothing");
    l.append(&numbered(5, 1, 3)).unwrap();
    l.append(&one_share(4)).unwrap();
    l.append(&one_share(4)).unwrap();
    assert_eq!(
        l.last_share_id().unwrap(),
        5,
        "another writer's batch, and unnumbered ones, are written"
    );
}

/// Every u64 connection id is stored and read back as it is (the product API's endpoint
/// miners have ids of 2^63 and up): a value a backend could not store would stop every
/// acknowledgement, the batch retried for ever.
fn any_connection_id_is_stored(l: &mut dyn Ledger) {
    for (n, id) in [(1, 0), (2, 1 << 63), (3, u64::MAX)] {
        let mut batch = one_share(n);
        batch.shares[0].connection_id = id;
        l.append(&batch).unwrap();
    }
    let ids: Vec<u64> = l
        .shares(&ShareRange::Ids {
            from_id: 0,
            to_id: u64::MAX,
            limit: 10,
        })
        .unwrap()
        .iter()
        .map(|s| s.record.connection_id)
        .collect();
    assert_eq!(ids, [0, 1 << 63, u64::MAX]);
}

#[test]
fn any_connection_id_is_stored_in_every_backend() {
    any_connection_id_is_stored(&mut MemoryLedger::new());
    let dir = tempfile::tempdir().unwrap();
    any_connection_id_is_stored(
        &mut SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap(),
    );
    let server = postgres::TempPostgres::start();
    any_connection_id_is_stored(&mut PostgresLedger::connect(&server.fresh_database()).unwrap());
}

#[test]
fn retried_batches_are_written_once_in_every_backend() {
    retried_batches_are_written_once(&mut MemoryLedger::new());
    let dir = tempfile::tempdir().unwrap();
    retried_batches_are_written_once(
        &mut SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap(),
    );
    let server = postgres::TempPostgres::start();
    retried_batches_are_written_once(
        &mut PostgresLedger::connect(&server.fresh_database()).unwrap(),
    );
}

/// The pool's opening of a PostgreSQL ledger: a server that is down at start gives a ledger
/// that is unavailable until the server answers, then writes; a database that does not exist
/// stops the start.
#[test]
fn a_postgres_ledger_down_at_start_connects_when_it_answers() {
    use blvm_stratum_v2::server::ledger_writer::open_ledger;
    let mut server = TempPostgres::start();
    let url = server.fresh_database();
    server.stop();
    let mut ledger = open_ledger(&url, SqliteSync::Full).expect("opens while the server is down");
    assert!(matches!(
        ledger.append(&one_share(1)),
        Err(LedgerError::Unavailable(_))
    ));
    server.start_again();
    ledger
        .append(&one_share(1))
        .expect("writes once the server answers");
    assert_eq!(ledger.last_share_id().unwrap(), 1);
    let missing = server.url_of("no_such_database");
    assert!(
        open_ledger(&missing, SqliteSync::Full).is_err(),
        "a database that does not exist is not an outage"
    );
}

/// How one backend spells what [`schema_3_ledger`] writes.
struct Dialect {
    /// The `schema_version` table, as the ledger creates it.
    schema_version: &'static str,
    /// Migrations 1 to 3.
    migrations: [&'static str; 3],
    /// A 32-byte string literal of `hash(n)`.
    blob: fn(u64) -> String,
    /// The user column.
    user: &'static str,
}

/// A ledger of schema 3 (before coinbase maturity), written as that version's SQL left it:
/// its migrations applied and recorded, an accepted block paid to alice and bob with their
/// running balances, a refused block, a pending one. `exec` runs one batch of statements.
fn schema_3_ledger(mut exec: impl FnMut(&str), dialect: &Dialect) {
    let Dialect { blob, user, .. } = dialect;
    exec(dialect.schema_version);
    for (v, sql) in dialect.migrations.iter().enumerate() {
        exec(sql);
        exec(&format!(
            "INSERT INTO schema_version (version, applied_ms) VALUES ({}, 0)",
            v + 1
        ));
    }
    for (n, status, reason) in [
        (1, "accepted", "NULL"),
        (2, "rejected", "'bad-txns'"),
        (3, "pending", "NULL"),
    ] {
        exec(&format!(
            "INSERT INTO blocks (hash, height, time_ms, reward_sat, bits, {user}, worker, status, \
             reason) VALUES ({}, {}, 1000, 5000000000, 486604799, 'bc1qalice', 'rig', '{status}', \
             {reason})",
            blob(n),
            800_000 + n
        ));
    }
    exec(&format!(
        "INSERT INTO payout_computations (block_hash, scheme, reward_sat, fee_sat, \
         window_difficulty, counted_difficulty, first_share_id, last_share_id, computed_ms) \
         VALUES ({}, 'pplns', 5000000000, 50000000, 10.0, 10.0, 1, 2, 2000)",
        blob(1)
    ));
    for (position, who, amount) in [
        (0, "bc1qalice", 3_000_000_000u64),
        (1, "bob", 1_950_000_000),
    ] {
        exec(&format!(
            "INSERT INTO payouts (block_hash, position, {user}, amount_sat, difficulty) \
             VALUES ({}, {position}, '{who}', {amount}, 5.0)",
            blob(1)
        ));
        exec(&format!(
            "INSERT INTO balances ({user}, earned_sat) VALUES ('{who}', {amount})"
        ));
    }
}

/// What a schema-3 ledger holds after the upgrade to 4: the blocks as they were, in order
/// (statuses, reasons), the accepted block's payouts in `earned_sat` and `immature_sat`.
fn assert_upgraded(l: &mut dyn Ledger) {
    let blocks = l.blocks(10).unwrap();
    let seen: Vec<(u64, BlockStatus)> = blocks
        .iter()
        .map(|b| (u64::from(b.block.height) - 800_000, b.status.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (3, BlockStatus::Pending),
            (2, BlockStatus::Rejected("bad-txns".into())),
            (1, BlockStatus::Accepted),
        ]
    );
    let balances: Vec<(String, u64, u64)> = l
        .balances()
        .unwrap()
        .into_iter()
        .map(|b| (b.user, b.earned_sat, b.immature_sat))
        .collect();
    assert_eq!(
        balances,
        [
            ("bc1qalice".to_owned(), 3_000_000_000, 3_000_000_000),
            ("bob".to_owned(), 1_950_000_000, 1_950_000_000),
        ]
    );
    // The new statuses are accepted by the upgraded table.
    l.set_block_status(hash(1), &BlockStatus::Mature).unwrap();
    assert_eq!(l.balances().unwrap()[1].immature_sat, 0);
    assert_eq!(l.blocks_to_confirm(0).unwrap(), Vec::new());
}

fn hash_hex(n: u64) -> String {
    hash(n)
        .as_byte_array()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An operator's SQLite ledger of schema 3 opened by this version: migrated in place (4:
/// `blocks` rebuilt for its new statuses, `balances` a view; then 5, packed shares), nothing
/// lost.
#[test]
fn a_schema_3_sqlite_ledger_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let c = rusqlite::Connection::open(&path).unwrap();
    schema_3_ledger(
        |sql| {
            c.execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        },
        &Dialect {
            schema_version: "CREATE TABLE schema_version \
                             (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)",
            migrations: [
                include_str!("../migrations/sqlite/0001_init.sql"),
                include_str!("../migrations/sqlite/0002_coinbase_payouts.sql"),
                include_str!("../migrations/sqlite/0003_instances.sql"),
            ],
            blob: |n| format!("X'{}'", hash_hex(n)),
            user: "user",
        },
    );
    drop(c);
    let mut l = SqliteLedger::open(&path).unwrap();
    assert_upgraded(&mut l);
}

/// The same for PostgreSQL.
#[test]
fn a_schema_3_postgres_ledger_is_upgraded_in_place() {
    let pg = TempPostgres::start();
    let url = pg.url();
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    schema_3_ledger(
        |sql| {
            c.batch_execute(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        },
        &Dialect {
            schema_version: "CREATE TABLE schema_version \
                             (version bigint PRIMARY KEY, applied_ms bigint NOT NULL)",
            migrations: [
                include_str!("../migrations/postgres/0001_init.sql"),
                include_str!("../migrations/postgres/0002_coinbase_payouts.sql"),
                include_str!("../migrations/postgres/0003_instances.sql"),
            ],
            blob: |n| format!("'\\x{}'::bytea", hash_hex(n)),
            user: "\"user\"",
        },
    );
    drop(c);
    let mut l = PostgresLedger::connect(&url).unwrap();
    assert_upgraded(&mut l);
}

/// Two instances writing the same new status of a block at once (both followed it to
/// maturity): exactly one hears that it changed it, so only one notifies.
#[test]
fn postgres_two_instances_change_a_status_once() {
    let pg = TempPostgres::start();
    let url = pg.url();
    let mut l = PostgresLedger::connect(&url).unwrap();
    l.append(&LedgerBatch {
        blocks: vec![block(1, "bc1qalice")],
        ..LedgerBatch::default()
    })
    .unwrap();
    l.set_block_status(hash(1), &BlockStatus::Accepted).unwrap();
    for _ in 0..5 {
        let barrier = Barrier::new(2);
        let changed: Vec<bool> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let (url, barrier) = (url.clone(), &barrier);
                    scope.spawn(move || {
                        let mut l = PostgresLedger::connect(&url).unwrap();
                        barrier.wait();
                        l.set_block_status(hash(1), &BlockStatus::Orphaned).unwrap()
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(changed.iter().filter(|c| **c).count(), 1, "{changed:?}");
        l.set_block_status(hash(1), &BlockStatus::Accepted).unwrap();
    }
}
