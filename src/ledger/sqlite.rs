//! The ledger in SQLite, the default: one file (`DATA_DIR/ledger.sqlite3`, mode 0600) in WAL
//! mode, one immediate transaction per [`Ledger::append`] with cached prepared statements, the
//! schema migrated at open from `migrations/sqlite/` (embedded).
//!
//! Durability: `synchronous = FULL`. In WAL mode NORMAL skips the fsync of the WAL at each
//! commit (it syncs only at checkpoints): a commit survives a `kill -9` of the pool (the data
//! is in the OS page cache) but not a power loss or a kernel crash, and the pool acknowledges
//! a share only after its commit, so an acknowledged share could be lost. FULL fsyncs the WAL
//! at every commit; with group commit that is one fsync per flush, not per share
//! (BENCHMARKS.md, "Ledger backends (issue 15)", measures both).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use bitcoin::BlockHash;
use bitcoin::hashes::Hash;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};

use super::columns::{
    block_hash, block_status, bound_i64, coinbase_payouts_from_json, coinbase_payouts_json,
    compact_target, limit_i64, payout_terms_from_json, payout_terms_json, status_reason, target,
    to_i64, to_u64,
};
use super::instances::{self, ClaimOutcome, InstanceClaim, InstanceRecord};
use super::pack_reads::{self, WindowScan, WorkerNames};
use super::schema::{self, Migration};
use super::share_pack::{self, EncodedPack, PackedShare};
use super::{
    Balance, BlockStatus, FoundBlockRecord, Ledger, LedgerBatch, LedgerError, Payout,
    PayoutComputation, RejectedCount, ShareRange, StoredBlock, StoredShare,
};

/// The schema's migrations, in order: version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[Migration] = &[
    Migration {
        sql: include_str!("../../migrations/sqlite/0001_init.sql"),
        oldest_program_schema: 1,
    },
    Migration {
        sql: include_str!("../../migrations/sqlite/0002_coinbase_payouts.sql"),
        oldest_program_schema: 2,
    },
    Migration {
        sql: include_str!("../../migrations/sqlite/0003_instances.sql"),
        oldest_program_schema: 3,
    },
    Migration {
        sql: include_str!("../../migrations/sqlite/0004_maturity.sql"),
        oldest_program_schema: 4,
    },
    Migration {
        sql: include_str!("../../migrations/sqlite/0005_share_packs.sql"),
        oldest_program_schema: 5,
    },
    // A column that schema 5's program never reads.
    Migration {
        sql: include_str!("../../migrations/sqlite/0006_older_programs.sql"),
        oldest_program_schema: 5,
    },
    // A column that programs before it leave NULL (their blocks have no recorded terms).
    Migration {
        sql: include_str!("../../migrations/sqlite/0007_payout_terms.sql"),
        oldest_program_schema: 5,
    },
    // A column that programs before it leave NULL (their rows judged by the claimant's lease).
    Migration {
        sql: include_str!("../../migrations/sqlite/0008_instance_lease.sql"),
        oldest_program_schema: 5,
    },
];

/// The version whose migration moves the rows of `shares` into packs after its SQL.
const SHARE_PACKS_VERSION: i64 = 5;

/// Most shares in one pack when rows of the old `shares` table are moved into packs.
const MOVED_SHARES_PER_PACK: usize = 4096;

/// When SQLite syncs a commit to disk (see the module comment for why FULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteSync {
    /// fsync the WAL at every commit: a returned `append` survives a power loss.
    Full,
    /// fsync at checkpoints only: survives a process kill, not a power loss (benchmarks).
    Normal,
}

/// How a [`SqliteLedger`] is opened.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// How long a statement waits for another connection's lock before `Unavailable`.
    pub busy_timeout: Duration,
    /// When commits reach the disk.
    pub synchronous: SqliteSync,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        SqliteSettings {
            busy_timeout: Duration::from_secs(5),
            synchronous: SqliteSync::Full,
        }
    }
}

const BLOCK_COLUMNS: &str = "hash, height, time_ms, reward_sat, bits, user, worker, status, reason, coinbase_payouts, \
     payout_terms FROM blocks";

/// A [`Ledger`] in an SQLite file.
pub struct SqliteLedger {
    conn: Connection,
    /// Worker ids by user and worker, as committed (cleared when a transaction fails).
    worker_ids: HashMap<String, HashMap<String, i64>>,
    /// User and worker by worker id, for reading packs (reloaded when an id is missing: the
    /// writer may have added workers through another connection).
    worker_names: WorkerNames,
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("path", &self.conn.path())
            .finish_non_exhaustive()
    }
}

impl SqliteLedger {
    /// Opens (creating it, mode 0600) the ledger at `path` with the default settings
    /// (synchronous=FULL, 5 s busy timeout), migrating its schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LedgerError> {
        Self::open_with(path, &SqliteSettings::default())
    }

    /// Opens the ledger at `path` with these settings.
    pub fn open_with(
        path: impl AsRef<Path>,
        settings: &SqliteSettings,
    ) -> Result<Self, LedgerError> {
        let path = path.as_ref();
        // Create the file ourselves so that it (and the WAL and shared-memory files SQLite
        // gives the same mode) is readable by this user only.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    LedgerError::Location(format!("{}: {e}", path.display()))
                }
                _ => LedgerError::Unavailable(format!("{}: {e}", path.display())),
            })?;
        let conn = Connection::open(path).map_err(sqlite_error)?;
        conn.busy_timeout(settings.busy_timeout)
            .map_err(sqlite_error)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(sqlite_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::Unavailable(format!(
                "{}: journal mode {mode}, not WAL",
                path.display()
            )));
        }
        let synchronous = match settings.synchronous {
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(sqlite_error)?;
        conn.set_prepared_statement_cache_capacity(32);
        let mut ledger = SqliteLedger {
            conn,
            worker_ids: HashMap::new(),
            worker_names: HashMap::new(),
        };
        ledger.migrate()?;
        Ok(ledger)
    }

    /// The schema version this program writes (the number of its migrations).
    pub fn schema_version() -> u32 {
        MIGRATIONS.len() as u32
    }

    /// Applies the migrations the file lacks, in one transaction; refuses a newer schema unless
    /// its newer versions allow this program (src/ledger/schema.rs).
    fn migrate(&mut self) -> Result<(), LedgerError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version INTEGER PRIMARY KEY,
                 applied_ms INTEGER NOT NULL
             )",
        )
        .map_err(sqlite_error)?;
        let current: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |row| row.get(0),
            )
            .map_err(sqlite_error)?;
        let known = MIGRATIONS.len() as i64;
        if current > known {
            // This program knows the version that added `oldest_program_schema`.
            let newer: Vec<(i64, Option<i64>)> = tx
                .prepare(
                    "SELECT version, oldest_program_schema FROM schema_version WHERE version > ?1",
                )
                .and_then(|mut q| {
                    q.query_map([known], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect()
                })
                .map_err(sqlite_error)?;
            schema::may_run_on_newer(known as u32, &newer)?;
            return tx.commit().map_err(sqlite_error);
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let version = index as i64 + 1;
            tx.execute_batch(migration.sql)
                .map_err(|e| LedgerError::Schema(format!("migration {version} failed: {e}")))?;
            if version == SHARE_PACKS_VERSION {
                move_share_rows_into_packs(&tx)
                    .map_err(|e| LedgerError::Schema(format!("migration {version} failed: {e}")))?;
            }
        }
        // Recorded once every migration ran (the column for the older programs came with one).
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute(
                "INSERT INTO schema_version (version, applied_ms, oldest_program_schema) \
                 VALUES (?1, ?2, ?3)",
                params![index as i64 + 1, now_ms(), migration.oldest_program_schema],
            )
            .map_err(sqlite_error)?;
        }
        tx.commit().map_err(sqlite_error)
    }

    /// The worker id of `user`/`worker`, inserting the pair if new (inside `tx`).
    fn worker_id(
        worker_ids: &mut HashMap<String, HashMap<String, i64>>,
        tx: &rusqlite::Transaction<'_>,
        user: &str,
        worker: &str,
    ) -> rusqlite::Result<i64> {
        if let Some(id) = worker_ids.get(user).and_then(|w| w.get(worker)) {
            return Ok(*id);
        }
        tx.prepare_cached(
            "INSERT INTO workers (user, worker) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )?
        .execute(params![user, worker])?;
        let id: i64 = tx
            .prepare_cached("SELECT id FROM workers WHERE user = ?1 AND worker = ?2")?
            .query_row(params![user, worker], |row| row.get(0))?;
        worker_ids
            .entry(user.to_owned())
            .or_default()
            .insert(worker.to_owned(), id);
        Ok(id)
    }

    fn try_append(&mut self, batch: &LedgerBatch) -> Result<(), LedgerError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error)?;
        if let Some(sequence) = batch.sequence {
            // Same bits as u64 (the writer's number is random over the whole range).
            let advanced = tx
                .prepare_cached(
                    "INSERT INTO writer_batches (writer, last_batch, updated_ms) \
                     VALUES (?1, ?2, ?3) ON CONFLICT (writer) DO UPDATE \
                     SET last_batch = excluded.last_batch, updated_ms = excluded.updated_ms \
                     WHERE writer_batches.last_batch < excluded.last_batch",
                )
                .map_err(sqlite_error)?
                .execute(params![
                    sequence.writer as i64,
                    to_i64(sequence.number, "batch number")?,
                    now_ms(),
                ])
                .map_err(sqlite_error)?;
            if advanced == 0 {
                // Committed before (its reply was lost): nothing to write again.
                return Ok(());
            }
        }
        {
            // The shares as one pack (src/ledger/share_pack.rs), their ids the next ones of
            // the sequence (under the transaction's write lock: consecutive).
            let first_id = if batch.shares.is_empty() {
                0
            } else {
                let count = to_i64(batch.shares.len() as u64, "share count")?;
                let last: i64 = tx
                    .prepare_cached(
                        "UPDATE share_sequence SET last_id = last_id + ?1 RETURNING last_id",
                    )
                    .map_err(sqlite_error)?
                    .query_row(params![count], |row| row.get(0))
                    .map_err(sqlite_error)?;
                to_u64(last - count + 1, "share id")?
            };
            let mut packed = Vec::with_capacity(batch.shares.len());
            for (n, share) in batch.shares.iter().enumerate() {
                let worker_id =
                    Self::worker_id(&mut self.worker_ids, &tx, &share.user, &share.worker)
                        .map_err(sqlite_error)?;
                packed.push(PackedShare::of(
                    share,
                    first_id + n as u64,
                    to_u64(worker_id, "worker id")?,
                ));
            }
            if let Some(pack) = share_pack::encode(&packed) {
                insert_pack(&tx, &pack)?;
            }
            let mut insert_block = tx
                .prepare_cached(
                    "INSERT INTO blocks (hash, height, time_ms, reward_sat, bits, user, worker, \
                     share_id, coinbase_payouts, payout_terms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                     ON CONFLICT (hash) DO NOTHING",
                )
                .map_err(sqlite_error)?;
            for block in &batch.blocks {
                // The finding share: in this batch (usual), else searched in the ledger, newest
                // first (a share's hash is unique: the pool refuses a duplicate).
                let share_id = match batch.shares.iter().position(|s| s.hash == block.hash) {
                    Some(index) => Some(to_i64(first_id + index as u64, "share id")?),
                    None => find_packed(
                        &tx,
                        "SELECT first_id, min_time_ms, shares FROM share_packs ORDER BY first_id DESC",
                        [],
                        |s| s.hash == block.hash,
                    )?
                    .map(|s| to_i64(s.id, "share id"))
                    .transpose()?,
                };
                insert_block
                    .execute(params![
                        &block.hash.as_byte_array()[..],
                        block.height,
                        to_i64(block.time_ms, "time_ms")?,
                        to_i64(block.reward_sat, "reward_sat")?,
                        block.bits.to_consensus(),
                        block.user,
                        block.worker,
                        share_id,
                        block.coinbase_payouts.as_ref().map(coinbase_payouts_json),
                        block.payout_terms.as_ref().map(payout_terms_json),
                    ])
                    .map_err(sqlite_error)?;
            }
            let mut add_rejected = tx
                .prepare_cached(
                    "INSERT INTO rejected (user, worker, reason, count) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (user, worker, reason) DO UPDATE SET count = count + excluded.count",
                )
                .map_err(sqlite_error)?;
            for r in &batch.rejected {
                add_rejected
                    .execute(params![
                        r.user,
                        r.worker,
                        r.reason,
                        to_i64(r.count, "count")?
                    ])
                    .map_err(sqlite_error)?;
            }
        }
        tx.commit().map_err(sqlite_error)
    }

    fn try_record_payouts(&mut self, c: &PayoutComputation) -> Result<bool, LedgerError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error)?;
        let hash = &c.block_hash.as_byte_array()[..];
        let inserted = tx
            .prepare_cached(
                "INSERT INTO payout_computations (block_hash, scheme, reward_sat, fee_sat, \
                 window_difficulty, counted_difficulty, first_share_id, last_share_id, \
                 computed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (block_hash) DO NOTHING",
            )
            .map_err(sqlite_error)?
            .execute(params![
                hash,
                c.scheme,
                to_i64(c.reward_sat, "reward_sat")?,
                to_i64(c.fee_sat, "fee_sat")?,
                c.window_difficulty,
                c.counted_difficulty,
                to_i64(c.first_share_id, "first_share_id")?,
                to_i64(c.last_share_id, "last_share_id")?,
                to_i64(c.computed_ms, "computed_ms")?,
            ])
            .map_err(sqlite_error)?;
        if inserted == 0 {
            // Already paid: write nothing (the transaction rolls back on drop).
            return Ok(false);
        }
        {
            let mut insert_payout = tx
                .prepare_cached(
                    "INSERT INTO payouts (block_hash, position, user, amount_sat, difficulty) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sqlite_error)?;
            for (position, p) in c.payouts.iter().enumerate() {
                let amount = to_i64(p.amount_sat, "amount_sat")?;
                insert_payout
                    .execute(params![hash, position as i64, p.user, amount, p.difficulty])
                    .map_err(sqlite_error)?;
            }
        }
        tx.commit().map_err(sqlite_error)?;
        Ok(true)
    }

    fn try_payouts(&mut self, block: BlockHash) -> Result<Option<PayoutComputation>, LedgerError> {
        let hash = &block.as_byte_array()[..];
        let head = self
            .conn
            .prepare_cached(
                "SELECT scheme, reward_sat, fee_sat, window_difficulty, counted_difficulty, \
                 first_share_id, last_share_id, computed_ms FROM payout_computations \
                 WHERE block_hash = ?1",
            )
            .map_err(sqlite_error)?
            .query_row(params![hash], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, f64>(3)?,
                    row.get::<_, f64>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                    row.get::<_, i64>(7)?,
                ))
            })
            .optional()
            .map_err(sqlite_error)?;
        let Some((scheme, reward, fee, window, counted, first, last, computed)) = head else {
            return Ok(None);
        };
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT user, amount_sat, difficulty FROM payouts WHERE block_hash = ?1 \
                 ORDER BY position",
            )
            .map_err(sqlite_error)?;
        let mut rows = statement.query(params![hash]).map_err(sqlite_error)?;
        let mut payouts = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            payouts.push(Payout {
                user: row.get(0).map_err(sqlite_error)?,
                amount_sat: to_u64(row.get(1).map_err(sqlite_error)?, "amount_sat")?,
                difficulty: row.get(2).map_err(sqlite_error)?,
            });
        }
        Ok(Some(PayoutComputation {
            block_hash: block,
            scheme,
            reward_sat: to_u64(reward, "reward_sat")?,
            fee_sat: to_u64(fee, "fee_sat")?,
            window_difficulty: window,
            counted_difficulty: counted,
            first_share_id: to_u64(first, "first_share_id")?,
            last_share_id: to_u64(last, "last_share_id")?,
            computed_ms: to_u64(computed, "computed_ms")?,
            payouts,
        }))
    }

    fn collect_blocks(
        &self,
        query: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<StoredBlock>, LedgerError> {
        let mut statement = self.conn.prepare_cached(query).map_err(sqlite_error)?;
        let mut rows = statement.query(params).map_err(sqlite_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            out.push(stored_block(row)?);
        }
        Ok(out)
    }

    /// A PPLNS window: from share `last_id` back, newest first, until `difficulty` is
    /// reached (packs are read newest first and the scan stops there).
    fn window(&mut self, last_id: u64, difficulty: f64) -> Result<Vec<StoredShare>, LedgerError> {
        let mut window = WindowScan::new(last_id, difficulty);
        scan_packs(
            &self.conn,
            "SELECT first_id, min_time_ms, shares FROM share_packs WHERE first_id <= ?1 \
             ORDER BY first_id DESC",
            params![bound_i64(last_id)],
            |shares| window.take(shares),
        )?;
        self.stored(window.into_shares())
    }

    /// Packed shares read from `query` (columns `first_id, min_time_ms, shares`, in the order wanted),
    /// those `keep` takes, at most `limit`.
    fn packed_shares(
        &mut self,
        query: &str,
        params: impl rusqlite::Params,
        keep: impl Fn(&PackedShare) -> bool,
        limit: usize,
    ) -> Result<Vec<StoredShare>, LedgerError> {
        let mut out = Vec::new();
        if limit > 0 {
            scan_packs(&self.conn, query, params, |shares| {
                pack_reads::collect(&mut out, shares, &keep, limit)
            })?;
        }
        self.stored(out)
    }

    /// Packed shares with their user and worker names.
    fn stored(&mut self, shares: Vec<PackedShare>) -> Result<Vec<StoredShare>, LedgerError> {
        if pack_reads::names_missing(&shares, &self.worker_names) {
            self.load_worker_names()?;
        }
        pack_reads::named(shares, &self.worker_names)
    }

    fn load_worker_names(&mut self) -> Result<(), LedgerError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT id, user, worker FROM workers")
            .map_err(sqlite_error)?;
        let mut rows = statement.query([]).map_err(sqlite_error)?;
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            let id = to_u64(row.get(0).map_err(sqlite_error)?, "worker id")?;
            let user: String = row.get(1).map_err(sqlite_error)?;
            let worker: String = row.get(2).map_err(sqlite_error)?;
            self.worker_names.insert(id, (user.into(), worker.into()));
        }
        Ok(())
    }
}

/// Hands the shares of each pack `query` returns (columns `first_id, min_time_ms, shares`) to `each`, in
/// the query's order, until it returns false.
fn scan_packs(
    conn: &Connection,
    query: &str,
    params: impl rusqlite::Params,
    mut each: impl FnMut(Vec<PackedShare>) -> bool,
) -> Result<(), LedgerError> {
    let mut statement = conn.prepare_cached(query).map_err(sqlite_error)?;
    let mut rows = statement.query(params).map_err(sqlite_error)?;
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        let first_id = to_u64(row.get(0).map_err(sqlite_error)?, "share id")?;
        let min_time_ms = to_u64(row.get(1).map_err(sqlite_error)?, "time_ms")?;
        let bytes = row
            .get_ref(2)
            .and_then(|v| v.as_blob().map_err(Into::into))
            .map_err(sqlite_error)?;
        if !each(share_pack::decode(first_id, min_time_ms, bytes)?) {
            break;
        }
    }
    Ok(())
}

/// The first share `matches` takes in the packs of `query`, in its order.
fn find_packed(
    conn: &Connection,
    query: &str,
    params: impl rusqlite::Params,
    matches: impl Fn(&PackedShare) -> bool,
) -> Result<Option<PackedShare>, LedgerError> {
    let mut found = None;
    scan_packs(conn, query, params, |shares| {
        found = shares.into_iter().find(|s| matches(s));
        found.is_none()
    })?;
    Ok(found)
}

fn insert_pack(conn: &Connection, pack: &EncodedPack) -> Result<(), LedgerError> {
    conn.prepare_cached(
        "INSERT INTO share_packs (first_id, last_id, min_time_ms, max_time_ms, count, shares) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .map_err(sqlite_error)?
    .execute(params![
        to_i64(pack.first_id, "share id")?,
        to_i64(pack.last_id, "share id")?,
        to_i64(pack.min_time_ms, "time_ms")?,
        to_i64(pack.max_time_ms, "time_ms")?,
        to_i64(pack.count, "share count")?,
        &pack.bytes,
    ])
    .map_err(sqlite_error)?;
    Ok(())
}

/// The second half of migration 5: the rows of `shares` (schema 1 to 4) moved into packs of
/// consecutive rows, then the table dropped.
fn move_share_rows_into_packs(tx: &rusqlite::Transaction<'_>) -> Result<(), LedgerError> {
    let mut statement = tx
        .prepare(
            "SELECT id, time_ms, worker_id, connection_id, channel_id, job_id, target, \
             difficulty, hash FROM shares ORDER BY id",
        )
        .map_err(sqlite_error)?;
    let mut rows = statement.query([]).map_err(sqlite_error)?;
    let mut pending = Vec::with_capacity(MOVED_SHARES_PER_PACK);
    let flush = |pending: &mut Vec<PackedShare>| -> Result<(), LedgerError> {
        if let Some(pack) = share_pack::encode(pending) {
            insert_pack(tx, &pack)?;
        }
        pending.clear();
        Ok(())
    };
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        let blob = |i: usize| -> Result<Vec<u8>, LedgerError> { row.get(i).map_err(sqlite_error) };
        pending.push(PackedShare {
            id: to_u64(row.get(0).map_err(sqlite_error)?, "share id")?,
            time_ms: to_u64(row.get(1).map_err(sqlite_error)?, "time_ms")?,
            worker_id: to_u64(row.get(2).map_err(sqlite_error)?, "worker id")?,
            // Same bits as u64 (ids of the product API's endpoint miners are 2^63 and up).
            connection_id: row.get::<_, i64>(3).map_err(sqlite_error)? as u64,
            channel_id: row.get(4).map_err(sqlite_error)?,
            job_id: row.get(5).map_err(sqlite_error)?,
            target: target(&blob(6)?)?,
            difficulty: row.get(7).map_err(sqlite_error)?,
            hash: block_hash(&blob(8)?)?,
        });
        if pending.len() == MOVED_SHARES_PER_PACK {
            flush(&mut pending)?;
        }
    }
    flush(&mut pending)?;
    drop(rows);
    drop(statement);
    tx.execute_batch("DROP TABLE shares").map_err(sqlite_error)
}

fn stored_block(row: &Row<'_>) -> Result<StoredBlock, LedgerError> {
    let hash: Vec<u8> = row.get(0).map_err(sqlite_error)?;
    let status: String = row.get(7).map_err(sqlite_error)?;
    Ok(StoredBlock {
        block: FoundBlockRecord {
            hash: block_hash(&hash)?,
            height: row.get(1).map_err(sqlite_error)?,
            time_ms: to_u64(row.get(2).map_err(sqlite_error)?, "time_ms")?,
            reward_sat: to_u64(row.get(3).map_err(sqlite_error)?, "reward_sat")?,
            bits: compact_target(row.get(4).map_err(sqlite_error)?)?,
            user: row.get(5).map_err(sqlite_error)?,
            worker: row.get(6).map_err(sqlite_error)?,
            coinbase_payouts: row
                .get::<_, Option<String>>(9)
                .map_err(sqlite_error)?
                .as_deref()
                .map(coinbase_payouts_from_json)
                .transpose()?,
            payout_terms: row
                .get::<_, Option<String>>(10)
                .map_err(sqlite_error)?
                .as_deref()
                .map(payout_terms_from_json)
                .transpose()?,
        },
        status: block_status(&status, row.get(8).map_err(sqlite_error)?)?,
    })
}

impl Ledger for SqliteLedger {
    fn append(&mut self, batch: &LedgerBatch) -> Result<(), LedgerError> {
        let result = self.try_append(batch);
        if result.is_err() {
            // Worker ids inserted by the rolled-back transaction do not exist.
            self.worker_ids.clear();
        }
        result
    }

    fn set_block_status(
        &mut self,
        hash: BlockHash,
        status: &BlockStatus,
    ) -> Result<bool, LedgerError> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE blocks SET status = ?2, reason = ?3 WHERE hash = ?1 \
                 AND (status IS NOT ?2 OR reason IS NOT ?3)",
            )
            .map_err(sqlite_error)?
            .execute(params![
                &hash.as_byte_array()[..],
                status.name(),
                status_reason(status)
            ])
            .map_err(sqlite_error)?;
        Ok(changed > 0)
    }

    fn block(&mut self, hash: BlockHash) -> Result<Option<StoredBlock>, LedgerError> {
        let mut statement = self
            .conn
            .prepare_cached(&format!("SELECT {BLOCK_COLUMNS} WHERE hash = ?1"))
            .map_err(sqlite_error)?;
        let mut rows = statement
            .query(params![&hash.as_byte_array()[..]])
            .map_err(sqlite_error)?;
        match rows.next().map_err(sqlite_error)? {
            Some(row) => Ok(Some(stored_block(row)?)),
            None => Ok(None),
        }
    }

    fn blocks(&mut self, limit: usize) -> Result<Vec<StoredBlock>, LedgerError> {
        self.collect_blocks(
            &format!("SELECT {BLOCK_COLUMNS} ORDER BY seq DESC LIMIT ?1"),
            params![limit_i64(limit)],
        )
    }

    fn share_by_hash(&mut self, hash: BlockHash) -> Result<Option<StoredShare>, LedgerError> {
        // A block's share through the block's link (one pack by its key); any other hash by
        // a scan, oldest first (no index on hashes: see migrations/sqlite/0001_init.sql).
        let linked: Option<i64> = self
            .conn
            .prepare_cached("SELECT share_id FROM blocks WHERE hash = ?1")
            .map_err(sqlite_error)?
            .query_row(params![&hash.as_byte_array()[..]], |row| row.get(0))
            .optional()
            .map_err(sqlite_error)?
            .flatten();
        if let Some(id) = linked {
            let id = to_u64(id, "share id")?;
            let share = self.shares(&ShareRange::Ids {
                from_id: id,
                to_id: id,
                limit: 1,
            })?;
            if let Some(share) = share.into_iter().find(|s| s.record.hash == hash) {
                return Ok(Some(share));
            }
        }
        let found = find_packed(
            &self.conn,
            "SELECT first_id, min_time_ms, shares FROM share_packs ORDER BY first_id",
            [],
            |s| s.hash == hash,
        )?;
        Ok(self.stored(found.into_iter().collect())?.pop())
    }

    fn shares(&mut self, range: &ShareRange) -> Result<Vec<StoredShare>, LedgerError> {
        match *range {
            ShareRange::Window {
                last_id,
                difficulty,
            } => self.window(last_id, difficulty),
            ShareRange::Time {
                from_ms,
                to_ms,
                limit,
            } => self.packed_shares(
                "SELECT first_id, min_time_ms, shares FROM share_packs \
                 WHERE max_time_ms >= ?1 AND min_time_ms < ?2 ORDER BY first_id",
                params![bound_i64(from_ms), bound_i64(to_ms)],
                |s| s.time_ms >= from_ms && s.time_ms < to_ms,
                limit,
            ),
            ShareRange::Ids {
                from_id,
                to_id,
                limit,
            } => self.packed_shares(
                // From the pack holding `from_id` (the last one starting at or before it).
                "SELECT first_id, min_time_ms, shares FROM share_packs WHERE first_id >= COALESCE( \
                 (SELECT MAX(first_id) FROM share_packs WHERE first_id <= ?1), 0) \
                 AND first_id <= ?2 ORDER BY first_id",
                params![bound_i64(from_id), bound_i64(to_id)],
                |s| s.id >= from_id && s.id <= to_id,
                limit,
            ),
        }
    }

    fn last_share_id(&mut self) -> Result<u64, LedgerError> {
        // Packs do not overlap and their ids grow: the last pack holds the highest id.
        let id: Option<i64> = self
            .conn
            .prepare_cached("SELECT last_id FROM share_packs ORDER BY first_id DESC LIMIT 1")
            .map_err(sqlite_error)?
            .query_row([], |row| row.get(0))
            .optional()
            .map_err(sqlite_error)?;
        to_u64(id.unwrap_or(0), "share id")
    }

    fn record_payouts(&mut self, computation: &PayoutComputation) -> Result<bool, LedgerError> {
        self.try_record_payouts(computation)
    }

    fn payouts(&mut self, block_hash: BlockHash) -> Result<Option<PayoutComputation>, LedgerError> {
        self.try_payouts(block_hash)
    }

    fn balances(&mut self) -> Result<Vec<Balance>, LedgerError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT user, earned_sat, immature_sat FROM balances ORDER BY user")
            .map_err(sqlite_error)?;
        let mut rows = statement.query([]).map_err(sqlite_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            out.push(Balance {
                user: row.get(0).map_err(sqlite_error)?,
                earned_sat: to_u64(row.get(1).map_err(sqlite_error)?, "earned_sat")?,
                immature_sat: to_u64(row.get(2).map_err(sqlite_error)?, "immature_sat")?,
            });
        }
        Ok(out)
    }

    fn blocks_to_confirm(
        &mut self,
        min_orphan_height: u32,
    ) -> Result<Vec<StoredBlock>, LedgerError> {
        self.collect_blocks(
            &format!(
                "SELECT {BLOCK_COLUMNS} WHERE status = 'accepted' \
                 OR (status = 'orphaned' AND height >= ?1) ORDER BY seq"
            ),
            params![i64::from(min_orphan_height)],
        )
    }

    fn rejected(&mut self) -> Result<Vec<RejectedCount>, LedgerError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT user, worker, reason, count FROM rejected ORDER BY user, worker, reason",
            )
            .map_err(sqlite_error)?;
        let mut rows = statement.query([]).map_err(sqlite_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            out.push(RejectedCount {
                user: row.get(0).map_err(sqlite_error)?,
                worker: row.get(1).map_err(sqlite_error)?,
                reason: row.get(2).map_err(sqlite_error)?,
                count: to_u64(row.get(3).map_err(sqlite_error)?, "count")?,
            });
        }
        Ok(out)
    }

    fn prune(&mut self, before_ms: u64, keep_from_id: u64) -> Result<u64, LedgerError> {
        // Shares with an id below `keep_from_id` accepted before `before_ms` go: whole packs
        // at once, and the packs holding some of them (at either bound) written again
        // without them.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error)?;
        let (before, keep) = (bound_i64(before_ms), bound_i64(keep_from_id));
        let mut pruned = 0u64;
        {
            let mut whole = tx
                .prepare_cached(
                    "DELETE FROM share_packs WHERE max_time_ms < ?1 AND last_id < ?2 \
                     RETURNING count",
                )
                .map_err(sqlite_error)?;
            let mut counts = whole.query(params![before, keep]).map_err(sqlite_error)?;
            while let Some(row) = counts.next().map_err(sqlite_error)? {
                pruned += to_u64(row.get(0).map_err(sqlite_error)?, "share count")?;
            }
        }
        let mut cut = Vec::new();
        scan_packs(
            &tx,
            "SELECT first_id, min_time_ms, shares FROM share_packs WHERE min_time_ms < ?1 AND first_id < ?2 \
             ORDER BY first_id",
            params![before, keep],
            |shares| {
                cut.push(shares);
                true
            },
        )?;
        for shares in cut {
            let Some((first_id, kept, went)) = pack_reads::cut(shares, before_ms, keep_from_id)
            else {
                continue;
            };
            pruned += went;
            tx.prepare_cached("DELETE FROM share_packs WHERE first_id = ?1")
                .map_err(sqlite_error)?
                .execute(params![to_i64(first_id, "share id")?])
                .map_err(sqlite_error)?;
            if let Some(pack) = share_pack::encode(&kept) {
                insert_pack(&tx, &pack)?;
            }
        }
        tx.commit().map_err(sqlite_error)?;
        Ok(pruned)
    }

    fn claim_server_id(
        &mut self,
        claim: &InstanceClaim,
        now_ms: u64,
    ) -> Result<ClaimOutcome, LedgerError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error)?;
        let holder = tx
            .query_row(
                &format!("SELECT {INSTANCE_COLUMNS} WHERE server_id = ?1"),
                params![claim.server_id],
                instance_row,
            )
            .optional()
            .map_err(sqlite_error)?
            .map(instance_record)
            .transpose()?;
        let started_ms = match &holder {
            Some(h) if h.instance == claim.instance => h.started_ms,
            _ => now_ms,
        };
        let (outcome, write) = instances::decide(holder, claim, now_ms);
        if write {
            tx.execute(
                "INSERT OR REPLACE INTO instances (server_id, instance, host, data_dir, \
                 addresses, started_ms, heartbeat_ms, lease_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    claim.server_id,
                    claim.instance as i64,
                    claim.host,
                    claim.data_dir,
                    claim.addresses,
                    bound_i64(started_ms),
                    bound_i64(now_ms),
                    bound_i64(claim.lease_ms),
                ],
            )
            .map_err(sqlite_error)?;
        }
        tx.commit().map_err(sqlite_error)?;
        Ok(outcome)
    }

    fn heartbeat(
        &mut self,
        server_id: u16,
        instance: u64,
        now_ms: u64,
    ) -> Result<bool, LedgerError> {
        let updated = self
            .conn
            .execute(
                "UPDATE instances SET heartbeat_ms = ?3 WHERE server_id = ?1 AND instance = ?2",
                params![server_id, instance as i64, bound_i64(now_ms)],
            )
            .map_err(sqlite_error)?;
        Ok(updated == 1)
    }

    fn release_server_id(&mut self, server_id: u16, instance: u64) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "DELETE FROM instances WHERE server_id = ?1 AND instance = ?2",
                params![server_id, instance as i64],
            )
            .map_err(sqlite_error)?;
        Ok(())
    }

    fn instances(&mut self) -> Result<Vec<InstanceRecord>, LedgerError> {
        let mut statement = self
            .conn
            .prepare_cached(&format!("SELECT {INSTANCE_COLUMNS} ORDER BY server_id"))
            .map_err(sqlite_error)?;
        let rows = statement
            .query_map([], instance_row)
            .map_err(sqlite_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite_error)?;
        rows.into_iter().map(instance_record).collect()
    }
}

const INSTANCE_COLUMNS: &str = "server_id, instance, host, data_dir, addresses, started_ms, \
     heartbeat_ms, lease_ms FROM instances";

/// A registry row's columns as read.
type InstanceRow = (i64, i64, String, String, String, i64, i64, Option<i64>);

fn instance_row(row: &Row<'_>) -> rusqlite::Result<InstanceRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

fn instance_record(
    (server_id, instance, host, data_dir, addresses, started_ms, heartbeat_ms, lease_ms): InstanceRow,
) -> Result<InstanceRecord, LedgerError> {
    Ok(InstanceRecord {
        server_id: u16::try_from(server_id)
            .map_err(|_| LedgerError::Corrupt(format!("server_id {server_id}")))?,
        instance: instance as u64,
        host,
        data_dir,
        addresses,
        started_ms: to_u64(started_ms, "started_ms")?,
        heartbeat_ms: to_u64(heartbeat_ms, "heartbeat_ms")?,
        lease_ms: lease_ms.map(|l| to_u64(l, "lease_ms")).transpose()?,
    })
}

/// Sorts an SQLite error into the ledger's kinds: what may pass (disk full, I/O, locks,
/// read-only, cannot open) is `Unavailable`; a damaged file or unreadable value is `Corrupt`;
/// the rest (unknown tables or columns: a schema this program does not know) is `Schema`.
fn sqlite_error(error: rusqlite::Error) -> LedgerError {
    let text = error.to_string();
    match error.sqlite_error_code() {
        Some(
            ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::OutOfMemory
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::OperationInterrupted
            | ErrorCode::NoLargeFileSupport,
        ) => LedgerError::Unavailable(text),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => LedgerError::Corrupt(text),
        Some(_) => LedgerError::Schema(text),
        None => match error {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => LedgerError::Corrupt(text),
            _ => LedgerError::Schema(text),
        },
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::sha256d;
    use bitcoin::{CompactTarget, Target};

    use super::*;
    use crate::ledger::ShareRecord;

    #[test]
    fn each_version_allows_no_program_newer_than_itself() {
        schema::check_list(MIGRATIONS);
    }

    fn share(n: u64) -> ShareRecord {
        ShareRecord {
            time_ms: 1_000 + n,
            user: format!("u{}", n % 3).into(),
            worker: "w".into(),
            connection_id: n % 7 + 1,
            channel_id: 1,
            job_id: 1,
            target: Target::MAX,
            difficulty: 1.0,
            hash: BlockHash::from_raw_hash(sha256d::Hash::hash(&n.to_le_bytes())),
        }
    }

    fn found(share: &ShareRecord) -> FoundBlockRecord {
        FoundBlockRecord {
            hash: share.hash,
            height: 1,
            time_ms: share.time_ms,
            reward_sat: 1,
            bits: CompactTarget::from_consensus(0x207fffff),
            user: share.user.to_string(),
            worker: share.worker.to_string(),
            coinbase_payouts: None,
            payout_terms: None,
        }
    }

    fn all_shares(ledger: &mut SqliteLedger) -> Vec<StoredShare> {
        ledger.shares(&ShareRange::ALL).unwrap()
    }

    fn append_shares(ledger: &mut SqliteLedger, shares: Vec<ShareRecord>, blocks: Vec<usize>) {
        let blocks = blocks.into_iter().map(|i| found(&shares[i])).collect();
        ledger
            .append(&LedgerBatch {
                shares,
                blocks,
                ..LedgerBatch::default()
            })
            .unwrap();
    }

    /// Commits of any size are packs whose shares keep their order and ids, and each block
    /// links to its own share (in its commit or an earlier one).
    #[test]
    fn packs_keep_order_and_link_blocks_to_their_shares() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = SqliteLedger::open(dir.path().join("l.sqlite3")).unwrap();
        let mut next = 0u64;
        for size in [3u64, 150, 1, 85] {
            let shares: Vec<ShareRecord> = (next..next + size).map(share).collect();
            let blocks = [0, 15, 64, 149]
                .into_iter()
                .filter(|&i| i < size as usize)
                .collect();
            append_shares(&mut ledger, shares, blocks);
            next += size;
        }
        // A block whose share was committed before it.
        let mut late = found(&share(100));
        late.hash = share(100).hash;
        ledger
            .append(&LedgerBatch {
                blocks: vec![late],
                ..LedgerBatch::default()
            })
            .unwrap();
        let stored = all_shares(&mut ledger);
        assert_eq!(stored.len() as u64, next);
        for (n, s) in stored.iter().enumerate() {
            assert_eq!(s.id, n as u64 + 1);
            assert_eq!(s.record, share(n as u64));
        }
        assert_eq!(ledger.last_share_id().unwrap(), next);
        let links: Vec<(Vec<u8>, i64)> = ledger
            .conn
            .prepare("SELECT hash, share_id FROM blocks")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(links.len(), 1 + 4 + 1 + 3 + 1);
        for (hash, id) in links {
            let own = stored[id as usize - 1].record.hash;
            assert_eq!(
                &own.as_byte_array()[..],
                &hash[..],
                "a block links to its share"
            );
            assert_eq!(
                ledger.share_by_hash(own).unwrap().map(|s| s.id),
                Some(id as u64)
            );
        }
        // A hash no block has: found by the scan.
        assert_eq!(
            ledger.share_by_hash(share(7).hash).unwrap().map(|s| s.id),
            Some(8)
        );
        assert_eq!(ledger.share_by_hash(share(10_000).hash).unwrap(), None);
    }

    /// Pruning takes exactly the shares below both bounds, cutting the packs that straddle
    /// them, and ids keep growing after it.
    #[test]
    fn pruning_cuts_packs_at_both_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = SqliteLedger::open(dir.path().join("l.sqlite3")).unwrap();
        for from in (0..100).step_by(10) {
            append_shares(&mut ledger, (from..from + 10).map(share).collect(), vec![]);
        }
        // Shares 1..=100 at times 1000..=1099: prune ids below 46 accepted before 1_033.
        assert_eq!(ledger.prune(1_033, 46).unwrap(), 33);
        let left: Vec<u64> = all_shares(&mut ledger).iter().map(|s| s.id).collect();
        assert_eq!(left, (34..=100).collect::<Vec<_>>());
        // Now the id bound binds (46 and up stay).
        assert_eq!(ledger.prune(u64::MAX, 46).unwrap(), 12);
        assert_eq!(all_shares(&mut ledger).first().map(|s| s.id), Some(46));
        append_shares(&mut ledger, vec![share(500)], vec![]);
        assert_eq!(ledger.last_share_id().unwrap(), 101);
        let window = ledger
            .shares(&ShareRange::Window {
                last_id: 100,
                difficulty: 3.5,
            })
            .unwrap();
        assert_eq!(
            window.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![100, 99, 98, 97]
        );
        let by_time = ledger
            .shares(&ShareRange::Time {
                from_ms: 1_050,
                to_ms: 1_053,
                limit: 10,
            })
            .unwrap();
        assert_eq!(
            by_time.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![51, 52, 53]
        );
    }

    /// A schema-4 ledger's share rows become packs with the same ids, and the next commit's
    /// ids follow the highest ever handed out.
    #[test]
    fn share_rows_of_schema_4_are_moved_into_packs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite3");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, \
                 applied_ms INTEGER NOT NULL)",
            )
            .unwrap();
            for (n, migration) in MIGRATIONS[..4].iter().enumerate() {
                conn.execute_batch(migration.sql).unwrap();
                conn.execute(
                    "INSERT INTO schema_version VALUES (?1, 0)",
                    params![n as i64 + 1],
                )
                .unwrap();
            }
            conn.execute("INSERT INTO workers (id, user, worker) VALUES (1, 'u0', 'w'), (2, 'u1', 'w'), (3, 'u2', 'w')", []).unwrap();
            for n in 0..5000u64 {
                let s = share(n);
                let worker = (n % 3) as i64 + 1;
                conn.execute(
                    "INSERT INTO shares (time_ms, worker_id, connection_id, channel_id, job_id, \
                     target, difficulty, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        s.time_ms as i64,
                        worker,
                        s.connection_id as i64,
                        s.channel_id,
                        s.job_id,
                        &s.target.to_le_bytes()[..],
                        s.difficulty,
                        &s.hash.as_byte_array()[..]
                    ],
                )
                .unwrap();
            }
            // The newest rows pruned: their ids are never handed out again.
            conn.execute("DELETE FROM shares WHERE id > 4990", [])
                .unwrap();
        }
        let mut ledger = SqliteLedger::open(&path).unwrap();
        let stored = all_shares(&mut ledger);
        assert_eq!(stored.len(), 4990);
        for (n, s) in stored.iter().enumerate() {
            assert_eq!((s.id, &s.record), (n as u64 + 1, &share(n as u64)));
        }
        append_shares(&mut ledger, vec![share(9_999)], vec![]);
        assert_eq!(ledger.last_share_id().unwrap(), 5001);
        let tables: i64 = ledger
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'shares'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "the rows' table is gone");
    }
}
