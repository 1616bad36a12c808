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
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use bitcoin::BlockHash;
use bitcoin::hashes::Hash;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};

use super::columns::{
    block_hash, block_status, bound_i64, coinbase_payouts_from_json, coinbase_payouts_json,
    compact_target, limit_i64, status_reason, target, to_i64, to_u64,
};
use super::instances::{self, ClaimOutcome, InstanceClaim, InstanceRecord};
use super::{
    Balance, BlockStatus, FoundBlockRecord, Ledger, LedgerBatch, LedgerError, Payout,
    PayoutComputation, RejectedCount, ShareRange, ShareRecord, StoredBlock, StoredShare,
};

/// The schema's migrations, in order: version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_coinbase_payouts.sql"),
    include_str!("../../migrations/sqlite/0003_instances.sql"),
    include_str!("../../migrations/sqlite/0004_maturity.sql"),
];

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

const SHARE_COLUMNS: &str = "s.id, s.time_ms, w.user, w.worker, s.connection_id, s.channel_id, \
     s.job_id, s.target, s.difficulty, s.hash FROM shares s JOIN workers w ON w.id = s.worker_id";

const BLOCK_COLUMNS: &str = "hash, height, time_ms, reward_sat, bits, user, worker, status, reason, coinbase_payouts \
     FROM blocks";

/// Rows per multi-row share INSERT, largest first: a batch is cut into statements of these
/// sizes (each prepared once and cached), so a large batch costs one statement execution per
/// 64 shares instead of one per share. 64 rows bind 512 parameters (SQLite allows 32,766).
const SHARE_ROWS_PER_INSERT: [usize; 4] = [64, 16, 4, 1];

/// Parameters per share row in the INSERT.
const SHARE_PARAMS: usize = 8;

/// The share INSERT of each size in [`SHARE_ROWS_PER_INSERT`] (built once: the statement
/// cache is keyed by the SQL text).
fn insert_shares_sql(rows: usize) -> &'static str {
    static SQL: OnceLock<[String; SHARE_ROWS_PER_INSERT.len()]> = OnceLock::new();
    let all = SQL.get_or_init(|| SHARE_ROWS_PER_INSERT.map(build_insert_shares_sql));
    let index = SHARE_ROWS_PER_INSERT
        .iter()
        .position(|&r| r == rows)
        .unwrap_or(SHARE_ROWS_PER_INSERT.len() - 1);
    &all[index]
}

/// `INSERT INTO shares ... VALUES (...), (...)` with `rows` rows of numbered parameters.
fn build_insert_shares_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO shares (time_ms, worker_id, connection_id, channel_id, job_id, target, \
         difficulty, hash) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..SHARE_PARAMS {
            if column > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "?{}", row * SHARE_PARAMS + column + 1);
        }
        sql.push(')');
    }
    sql
}

/// Why binding a share failed: a value out of range, or SQLite itself.
enum BindError {
    Ledger(LedgerError),
    Sqlite(rusqlite::Error),
}

fn sqlite_error_or(e: BindError) -> LedgerError {
    match e {
        BindError::Ledger(e) => e,
        BindError::Sqlite(e) => sqlite_error(e),
    }
}

/// Binds one share's columns at parameters `first + 1 ..= first + SHARE_PARAMS`.
fn bind_share(
    insert: &mut rusqlite::CachedStatement<'_>,
    first: usize,
    share: &ShareRecord,
    worker_id: i64,
) -> Result<(), BindError> {
    let time_ms = to_i64(share.time_ms, "time_ms").map_err(BindError::Ledger)?;
    // Same bits as u64: ids of the product API's endpoint miners are 2^63 and up.
    let connection_id = share.connection_id as i64;
    let bind = |insert: &mut rusqlite::CachedStatement<'_>| -> rusqlite::Result<()> {
        insert.raw_bind_parameter(first + 1, time_ms)?;
        insert.raw_bind_parameter(first + 2, worker_id)?;
        insert.raw_bind_parameter(first + 3, connection_id)?;
        insert.raw_bind_parameter(first + 4, share.channel_id)?;
        insert.raw_bind_parameter(first + 5, share.job_id)?;
        insert.raw_bind_parameter(first + 6, &share.target.to_le_bytes()[..])?;
        insert.raw_bind_parameter(first + 7, share.difficulty)?;
        insert.raw_bind_parameter(first + 8, &share.hash.as_byte_array()[..])
    };
    bind(insert).map_err(BindError::Sqlite)
}

/// A [`Ledger`] in an SQLite file.
pub struct SqliteLedger {
    conn: Connection,
    /// Worker ids by user and worker, as committed (cleared when a transaction fails).
    worker_ids: HashMap<String, HashMap<String, i64>>,
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
        };
        ledger.migrate()?;
        Ok(ledger)
    }

    /// The schema version this program writes (the number of its migrations).
    pub fn schema_version() -> u32 {
        MIGRATIONS.len() as u32
    }

    /// Applies the migrations the file lacks, in one transaction; refuses a newer schema.
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
            return Err(LedgerError::Schema(format!(
                "the ledger's schema is version {current}, newer than this program's {known}"
            )));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let version = index as i64 + 1;
            tx.execute_batch(sql)
                .map_err(|e| LedgerError::Schema(format!("migration {version} failed: {e}")))?;
            tx.execute(
                "INSERT INTO schema_version (version, applied_ms) VALUES (?1, ?2)",
                params![version, now_ms()],
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
            // Worker ids first (a new pair is inserted, so not while a share statement is
            // bound), then the shares, many rows per statement.
            let mut worker_ids = Vec::with_capacity(batch.shares.len());
            for share in &batch.shares {
                worker_ids.push(
                    Self::worker_id(&mut self.worker_ids, &tx, &share.user, &share.worker)
                        .map_err(sqlite_error)?,
                );
            }
            // Ids of this batch's shares, kept only when a block needs its share's id.
            let mut ids = Vec::with_capacity(if batch.blocks.is_empty() {
                0
            } else {
                batch.shares.len()
            });
            let mut at = 0;
            while at < batch.shares.len() {
                let rows = SHARE_ROWS_PER_INSERT
                    .iter()
                    .copied()
                    .find(|&rows| rows <= batch.shares.len() - at)
                    .unwrap_or(1);
                let chunk = &batch.shares[at..at + rows];
                let mut insert = tx
                    .prepare_cached(insert_shares_sql(rows))
                    .map_err(sqlite_error)?;
                for (row, (share, worker_id)) in
                    chunk.iter().zip(&worker_ids[at..at + rows]).enumerate()
                {
                    bind_share(&mut insert, row * SHARE_PARAMS, share, *worker_id)
                        .map_err(sqlite_error_or)?;
                }
                insert.raw_execute().map_err(sqlite_error)?;
                if !batch.blocks.is_empty() {
                    // One statement under the transaction's write lock: its AUTOINCREMENT ids
                    // are consecutive, the last one is the last row's.
                    let last = tx.last_insert_rowid();
                    ids.extend((0..rows as i64).rev().map(|back| last - back));
                }
                at += rows;
            }
            let mut insert_block = tx
                .prepare_cached(
                    "INSERT INTO blocks (hash, height, time_ms, reward_sat, bits, user, worker, \
                     share_id, coinbase_payouts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (hash) DO NOTHING",
                )
                .map_err(sqlite_error)?;
            for block in &batch.blocks {
                // The finding share: in this batch (usual), else searched in the ledger.
                let share_id = match batch.shares.iter().position(|s| s.hash == block.hash) {
                    Some(index) => Some(ids[index]),
                    None => tx
                        .prepare_cached("SELECT id FROM shares WHERE hash = ?1 ORDER BY id LIMIT 1")
                        .map_err(sqlite_error)?
                        .query_row(params![&block.hash.as_byte_array()[..]], |row| {
                            row.get::<_, i64>(0)
                        })
                        .optional()
                        .map_err(sqlite_error)?,
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

    /// Runs `query` (whose columns are [`SHARE_COLUMNS`]) and collects its shares.
    fn collect_shares(
        &self,
        query: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<StoredShare>, LedgerError> {
        let mut statement = self.conn.prepare_cached(query).map_err(sqlite_error)?;
        let mut rows = statement.query(params).map_err(sqlite_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            out.push(stored_share(row)?);
        }
        Ok(out)
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

    fn window(&self, last_id: u64, difficulty: f64) -> Result<Vec<StoredShare>, LedgerError> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT {SHARE_COLUMNS} WHERE s.id <= ?1 ORDER BY s.id DESC"
            ))
            .map_err(sqlite_error)?;
        // Rows are stepped lazily: the scan stops where the window is full.
        let mut rows = statement
            .query(params![bound_i64(last_id)])
            .map_err(sqlite_error)?;
        let mut out = Vec::new();
        let mut sum = 0.0;
        while sum < difficulty {
            let Some(row) = rows.next().map_err(sqlite_error)? else {
                break;
            };
            let share = stored_share(row)?;
            sum += share.record.difficulty;
            out.push(share);
        }
        Ok(out)
    }
}

fn stored_share(row: &Row<'_>) -> Result<StoredShare, LedgerError> {
    let get_blob = |i: usize| -> Result<Vec<u8>, LedgerError> { row.get(i).map_err(sqlite_error) };
    Ok(StoredShare {
        id: to_u64(row.get(0).map_err(sqlite_error)?, "share id")?,
        record: ShareRecord {
            time_ms: to_u64(row.get(1).map_err(sqlite_error)?, "time_ms")?,
            user: row.get(2).map_err(sqlite_error)?,
            worker: row.get(3).map_err(sqlite_error)?,
            connection_id: row.get::<_, i64>(4).map_err(sqlite_error)? as u64,
            channel_id: row.get(5).map_err(sqlite_error)?,
            job_id: row.get(6).map_err(sqlite_error)?,
            target: target(&get_blob(7)?)?,
            difficulty: row.get(8).map_err(sqlite_error)?,
            hash: block_hash(&get_blob(9)?)?,
        },
    })
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
        let hash = &hash.as_byte_array()[..];
        // A block's share through the block's link (an index lookup); any other hash by a
        // scan (no index on hashes: see migrations/sqlite/0001_init.sql).
        let linked = self.collect_shares(
            &format!(
                "SELECT {SHARE_COLUMNS} WHERE s.id = \
                 (SELECT share_id FROM blocks WHERE hash = ?1) AND s.hash = ?1"
            ),
            params![hash],
        )?;
        if let Some(share) = linked.into_iter().next() {
            return Ok(Some(share));
        }
        let scanned = self.collect_shares(
            &format!("SELECT {SHARE_COLUMNS} WHERE s.hash = ?1 ORDER BY s.id LIMIT 1"),
            params![hash],
        )?;
        Ok(scanned.into_iter().next())
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
            } => self.collect_shares(
                &format!(
                    "SELECT {SHARE_COLUMNS} WHERE s.time_ms >= ?1 AND s.time_ms < ?2 \
                     ORDER BY s.id LIMIT ?3"
                ),
                params![bound_i64(from_ms), bound_i64(to_ms), limit_i64(limit)],
            ),
            ShareRange::Ids {
                from_id,
                to_id,
                limit,
            } => self.collect_shares(
                &format!(
                    "SELECT {SHARE_COLUMNS} WHERE s.id >= ?1 AND s.id <= ?2 ORDER BY s.id LIMIT ?3"
                ),
                params![bound_i64(from_id), bound_i64(to_id), limit_i64(limit)],
            ),
        }
    }

    fn last_share_id(&mut self) -> Result<u64, LedgerError> {
        let id: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM shares")
            .map_err(sqlite_error)?
            .query_row([], |row| row.get(0))
            .map_err(sqlite_error)?;
        to_u64(id, "share id")
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
        let deleted = self
            .conn
            .prepare_cached("DELETE FROM shares WHERE id < ?2 AND time_ms < ?1")
            .map_err(sqlite_error)?
            .execute(params![bound_i64(before_ms), bound_i64(keep_from_id)])
            .map_err(sqlite_error)?;
        Ok(deleted as u64)
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
                 addresses, started_ms, heartbeat_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    claim.server_id,
                    claim.instance as i64,
                    claim.host,
                    claim.data_dir,
                    claim.addresses,
                    bound_i64(started_ms),
                    bound_i64(now_ms),
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

const INSTANCE_COLUMNS: &str =
    "server_id, instance, host, data_dir, addresses, started_ms, heartbeat_ms FROM instances";

/// A registry row's columns as read.
type InstanceRow = (i64, i64, String, String, String, i64, i64);

fn instance_row(row: &Row<'_>) -> rusqlite::Result<InstanceRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn instance_record(
    (server_id, instance, host, data_dir, addresses, started_ms, heartbeat_ms): InstanceRow,
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
        }
    }

    /// Batches cut into 64-, 16-, 4- and 1-row statements keep the shares in order and link
    /// each block to its own share, wherever the statement boundaries fall.
    #[test]
    fn multi_row_inserts_keep_order_and_link_blocks_to_their_shares() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = SqliteLedger::open(dir.path().join("l.sqlite3")).unwrap();
        let mut next = 0u64;
        for size in [3u64, 150, 64, 85] {
            let shares: Vec<ShareRecord> = (next..next + size).map(share).collect();
            let blocks = [0, 15, 16, 63, 64, 127, 128, 148, 149]
                .into_iter()
                .filter(|&i| i < size as usize)
                .map(|i| found(&shares[i]))
                .collect();
            ledger
                .append(&LedgerBatch {
                    shares,
                    blocks,
                    ..LedgerBatch::default()
                })
                .unwrap();
            next += size;
        }
        let stored = ledger
            .shares(&ShareRange::Ids {
                from_id: 0,
                to_id: u64::MAX,
                limit: 1_000,
            })
            .unwrap();
        assert_eq!(stored.len() as u64, next);
        for (n, s) in stored.iter().enumerate() {
            assert_eq!(s.id, n as u64 + 1);
            assert_eq!(s.record, share(n as u64));
        }
        let mut links = ledger
            .conn
            .prepare("SELECT b.share_id, s.id FROM blocks b JOIN shares s ON s.hash = b.hash")
            .unwrap();
        let pairs: Vec<(i64, i64)> = links
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(pairs.len(), 1 + 9 + 4 + 5);
        for (linked, own) in pairs {
            assert_eq!(linked, own, "a block links to its own share");
        }
    }
}
