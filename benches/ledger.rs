//! The ledger's backends at their limit on this machine: shares per second through
//! `Ledger::append` with 1, 64, 1024 and 4096 shares per append (one transaction each, as the
//! group-commit writer does), for SQLite with synchronous=FULL (what the pool runs) and NORMAL,
//! and for PostgreSQL (a throwaway server with fsync on). Criterion reports elements (shares)
//! per second; BENCHMARKS.md, "Ledger backends (issue 15)", keeps the figures.
//!
//! `LEDGER_SIZE=1` first appends 1,000,000 shares to each backend and prints the bytes they
//! take (the README's "Ledger size").
//!
//! `LEDGER_WRITERS=1` first measures PostgreSQL with 1, 2 and 3 writers appending at once (pool
//! instances on one database, issue 18: their appends take turns under an advisory lock) and
//! prints the rows per second of all of them; `LEDGER_WRITERS=only` does only that.

#[path = "../tests/common/postgres.rs"]
mod postgres;

use std::time::{Duration, Instant};

use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{BlockHash, Target};
use blvm_stratum_v2::ledger::{
    Ledger, LedgerBatch, PostgresLedger, ShareRecord, SqliteLedger, SqliteSettings, SqliteSync,
};
use criterion::{BenchmarkId, Criterion, Throughput};

use postgres::TempPostgres;

/// A realistic share: a mainnet-length address, a worker, a pool-difficulty target.
fn share(n: u64) -> ShareRecord {
    let hash = BlockHash::from_raw_hash(sha256d::Hash::hash(&n.to_le_bytes()));
    let mut target = [0u8; 32];
    target[26] = 0xff;
    target[25] = (n % 7) as u8;
    ShareRecord {
        time_ms: 1_764_800_000_000 + n / 100,
        user: format!("bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0w{:03}", n % 1000).into(),
        worker: format!("rig{}", n % 4).into(),
        connection_id: n % 1000 + 1,
        channel_id: (n % 1000) as u32 + 1,
        job_id: (n / 5000) as u32 + 1,
        target: Target::from_le_bytes(target),
        difficulty: 65_536.0,
        hash,
    }
}

fn batch(from: u64, size: usize) -> LedgerBatch {
    LedgerBatch {
        shares: (from..from + size as u64).map(share).collect(),
        ..LedgerBatch::default()
    }
}

const SIZES: [usize; 4] = [1, 64, 1024, 4096];

fn bench_backend(c: &mut Criterion, name: &str, ledger: &mut dyn Ledger) {
    let mut group = c.benchmark_group(format!("ledger_append/{name}"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    let mut next = 0u64;
    for size in SIZES {
        let prepared: Vec<LedgerBatch> = (0..16).map(|i| batch(i * size as u64, size)).collect();
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                next += 1;
                ledger
                    .append(&prepared[(next % 16) as usize])
                    .expect("append");
            })
        });
    }
    group.finish();
}

/// Appends a million shares in batches of 4096; returns the seconds it took.
fn fill_million(ledger: &mut dyn Ledger) -> f64 {
    fill(ledger, 1_000_000, 4096)
}

/// Appends `count` shares in batches of `size`; returns the seconds it took.
fn fill(ledger: &mut dyn Ledger, count: u64, size: u64) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while n < count {
        let size = size.min(count - n) as usize;
        ledger.append(&batch(n, size)).expect("append");
        n += size as u64;
    }
    start.elapsed().as_secs_f64()
}

fn sqlite_file_bytes(path: &std::path::Path) -> u64 {
    // After a checkpoint the WAL is empty: the database is the main file.
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    std::fs::metadata(path).expect("size").len()
}

fn ledger_size(pg: &TempPostgres) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.sqlite3");
    let seconds = fill_million(&mut SqliteLedger::open(&path).expect("sqlite"));
    let bytes = sqlite_file_bytes(&path);
    println!(
        "ledger size: sqlite 1,000,000 shares: {bytes} bytes ({:.0} bytes/share), filled in {seconds:.1} s",
        bytes as f64 / 1e6
    );
    // A quiet pool commits a share or two at a time: its packs are small. Measured on 100,000
    // shares (commits without fsync, for time) and scaled to a million.
    for size in [1u64, 16] {
        let path = dir.path().join(format!("ledger-{size}.sqlite3"));
        let settings = SqliteSettings {
            synchronous: SqliteSync::Normal,
            ..SqliteSettings::default()
        };
        fill(
            &mut SqliteLedger::open_with(&path, &settings).expect("sqlite"),
            100_000,
            size,
        );
        let bytes = sqlite_file_bytes(&path);
        println!(
            "ledger size: sqlite with {size} share(s) a commit: {:.0} bytes/share",
            bytes as f64 / 1e5
        );
    }
    let url = pg.fresh_database();
    let seconds = fill_million(&mut PostgresLedger::connect(&url).expect("postgres"));
    let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).expect("connect");
    client
        .batch_execute("VACUUM ANALYZE share_packs")
        .expect("vacuum");
    let shares = pg.total_relation_size(&url, "share_packs");
    let workers = pg.total_relation_size(&url, "workers");
    println!(
        "ledger size: postgres 1,000,000 shares: shares {shares} bytes + workers {workers} bytes ({:.0} bytes/share), filled in {seconds:.1} s",
        (shares + workers) as f64 / 1e6
    );
}

/// The two ways to send a batch of shares to PostgreSQL as rows, on a table of the ledger's
/// schema-4 shape outside the ledger (the same rows, one transaction each): a multi-row
/// `INSERT ... SELECT FROM unnest(arrays)` (what `PostgresLedger` did before it stored packs)
/// and a binary `COPY`.
fn bench_postgres_insert_methods(c: &mut Criterion, url: &str) {
    use ::postgres::binary_copy::BinaryCopyInWriter;
    use ::postgres::types::Type;
    drop(PostgresLedger::connect(url).expect("migrate"));
    let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).expect("connect");
    // The ledger stores packs since schema 5: the rows go to a table of schema 4's shape.
    client
        .batch_execute(
            "CREATE TABLE shares (
                 id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                 time_ms bigint NOT NULL,
                 connection_id bigint NOT NULL,
                 difficulty double precision NOT NULL,
                 worker_id integer NOT NULL,
                 channel_id integer NOT NULL,
                 job_id integer NOT NULL,
                 target bytea NOT NULL,
                 hash bytea NOT NULL
             );
             CREATE INDEX shares_time ON shares (time_ms);",
        )
        .expect("the rows' table");
    let worker: i32 = client
        .query_one(
            "INSERT INTO workers (\"user\", worker) VALUES ('u', 'w') RETURNING id",
            &[],
        )
        .expect("worker")
        .get(0);
    let mut group = c.benchmark_group("postgres_insert_method");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for size in [64usize, 1024, 4096] {
        let shares: Vec<ShareRecord> = (0..size as u64).map(share).collect();
        let targets: Vec<[u8; 32]> = shares.iter().map(|s| s.target.to_le_bytes()).collect();
        group.throughput(Throughput::Elements(size as u64));
        let insert = client
            .prepare(
                "INSERT INTO shares (time_ms, connection_id, difficulty, worker_id, channel_id, \
                 job_id, target, hash) \
                 SELECT t, c, d, w, ch, j, tg, h FROM unnest($1::int8[], $2::int8[], \
                 $3::float8[], $4::int4[], $5::int4[], $6::int4[], $7::bytea[], $8::bytea[]) \
                 WITH ORDINALITY AS u (t, c, d, w, ch, j, tg, h, ord) ORDER BY ord",
            )
            .expect("prepare");
        group.bench_with_input(BenchmarkId::new("unnest", size), &size, |b, _| {
            b.iter(|| {
                let times: Vec<i64> = shares.iter().map(|s| s.time_ms as i64).collect();
                let conns: Vec<i64> = shares.iter().map(|s| s.connection_id as i64).collect();
                let diffs: Vec<f64> = shares.iter().map(|s| s.difficulty).collect();
                let workers: Vec<i32> = vec![worker; size];
                let chans: Vec<i32> = shares.iter().map(|s| s.channel_id as i32).collect();
                let jobs: Vec<i32> = shares.iter().map(|s| s.job_id as i32).collect();
                let tgs: Vec<&[u8]> = targets.iter().map(|t| &t[..]).collect();
                let hs: Vec<&[u8]> = shares.iter().map(|s| &s.hash.as_byte_array()[..]).collect();
                let mut tx = client.transaction().expect("begin");
                tx.execute(
                    &insert,
                    &[&times, &conns, &diffs, &workers, &chans, &jobs, &tgs, &hs],
                )
                .expect("insert");
                tx.commit().expect("commit");
            })
        });
        group.bench_with_input(BenchmarkId::new("copy", size), &size, |b, _| {
            b.iter(|| {
                let mut tx = client.transaction().expect("begin");
                let sink = tx
                    .copy_in(
                        "COPY shares (time_ms, connection_id, difficulty, worker_id, channel_id, \
                         job_id, target, hash) FROM STDIN BINARY",
                    )
                    .expect("copy");
                let types = [
                    Type::INT8,
                    Type::INT8,
                    Type::FLOAT8,
                    Type::INT4,
                    Type::INT4,
                    Type::INT4,
                    Type::BYTEA,
                    Type::BYTEA,
                ];
                let mut writer = BinaryCopyInWriter::new(sink, &types);
                for (s, t) in shares.iter().zip(&targets) {
                    writer
                        .write(&[
                            &(s.time_ms as i64),
                            &(s.connection_id as i64),
                            &s.difficulty,
                            &worker,
                            &(s.channel_id as i32),
                            &(s.job_id as i32),
                            &&t[..],
                            &&s.hash.as_byte_array()[..],
                        ])
                        .expect("row");
                }
                writer.finish().expect("finish");
                tx.commit().expect("commit");
            })
        });
    }
    group.finish();
}

/// Rows per second of `writers` PostgreSQL writers appending batches of `size` shares at once
/// for `seconds` (each its own connection, as pool instances are).
fn concurrent_writers(url: &str, writers: u64, size: usize, seconds: f64) -> f64 {
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(seconds);
    let rows: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                scope.spawn(move || {
                    let mut ledger = PostgresLedger::connect(url).expect("postgres");
                    let prepared: Vec<LedgerBatch> = (0..8)
                        .map(|i| batch((w << 40) + i * size as u64, size))
                        .collect();
                    std::thread::sleep(start.saturating_duration_since(Instant::now()));
                    let mut rows = 0u64;
                    let mut i = 0;
                    while Instant::now() < end {
                        ledger
                            .append(&prepared[i % prepared.len()])
                            .expect("append");
                        rows += size as u64;
                        i += 1;
                    }
                    rows
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    rows as f64 / start.elapsed().as_secs_f64()
}

fn ledger_writers(pg: &TempPostgres) {
    for size in [1024, 4096] {
        for writers in 1..=3 {
            let url = pg.fresh_database();
            let per_sec = concurrent_writers(&url, writers, size, 5.0);
            println!(
                "ledger writers: postgres, {writers} writer(s) x {size} shares per append: \
                 {per_sec:.0} rows/s in all"
            );
        }
    }
}

fn main() {
    let pg = TempPostgres::start_durable();
    if std::env::var_os("LEDGER_SIZE").is_some() {
        ledger_size(&pg);
    }
    match std::env::var("LEDGER_WRITERS").as_deref() {
        Ok("only") => return ledger_writers(&pg),
        Ok(_) => ledger_writers(&pg),
        Err(_) => {}
    }
    let mut c = Criterion::default().configure_from_args();
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, synchronous) in [
        ("sqlite_full", SqliteSync::Full),
        ("sqlite_normal", SqliteSync::Normal),
    ] {
        let settings = SqliteSettings {
            synchronous,
            ..SqliteSettings::default()
        };
        let mut ledger =
            SqliteLedger::open_with(dir.path().join(format!("{name}.sqlite3")), &settings)
                .expect("sqlite");
        bench_backend(&mut c, name, &mut ledger);
    }
    let mut ledger = PostgresLedger::connect(&pg.fresh_database()).expect("postgres");
    bench_backend(&mut c, "postgres", &mut ledger);
    bench_postgres_insert_methods(&mut c, &pg.fresh_database());
    c.final_summary();
}
