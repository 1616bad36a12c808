//! The ledger in PostgreSQL (`ledger_url = "postgres://..."`), for operators who run several
//! pool instances on one database or want their own queries. The same semantics as SQLite:
//! one transaction per [`Ledger::append`] (since schema 5 the batch's shares are ONE row of
//! `share_packs`, packed as src/ledger/share_pack.rs says, with ids from `share_sequence`: the
//! server's CPU per share was the rows' cost, on the pool's cores; since schema 6 the writer's
//! usual commit, shares alone of workers already known, is one call of `append_share_pack`,
//! one round trip instead of seven, see migrations/postgres/0006_append_in_one_call.sql), the
//! schema migrated at connect from `migrations/postgres/` (embedded) under an advisory lock, a
//! block paid exactly once even with several instances (`INSERT ... ON CONFLICT DO NOTHING` on
//! the computation, balances in the same transaction).
//!
//! A dropped connection (server down, restarted, network) is `Unavailable`; the next call
//! connects again. The client is the sync `postgres` crate: call it from a plain thread (the
//! ledger's writer thread, the command line), never from inside a tokio runtime.

use std::collections::HashMap;
use std::time::Duration;

use bitcoin::BlockHash;
use bitcoin::hashes::Hash;
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement, Transaction};

use super::columns::{
    block_hash, block_status, bound_i64, coinbase_payouts_from_json, coinbase_payouts_json,
    compact_target, limit_i64, payout_terms_from_json, payout_terms_json, status_reason, target,
    to_i64, to_u64, u32_from_bits,
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
        sql: include_str!("../../migrations/postgres/0001_init.sql"),
        oldest_program_schema: 1,
    },
    Migration {
        sql: include_str!("../../migrations/postgres/0002_coinbase_payouts.sql"),
        oldest_program_schema: 2,
    },
    Migration {
        sql: include_str!("../../migrations/postgres/0003_instances.sql"),
        oldest_program_schema: 3,
    },
    Migration {
        sql: include_str!("../../migrations/postgres/0004_maturity.sql"),
        oldest_program_schema: 4,
    },
    Migration {
        sql: include_str!("../../migrations/postgres/0005_share_packs.sql"),
        oldest_program_schema: 5,
    },
    // A function that schema 5's program never calls.
    Migration {
        sql: include_str!("../../migrations/postgres/0006_append_in_one_call.sql"),
        oldest_program_schema: 5,
    },
    // A column that schema 6's program never reads.
    Migration {
        sql: include_str!("../../migrations/postgres/0007_older_programs.sql"),
        oldest_program_schema: 6,
    },
    // A column that programs before it leave NULL (their blocks have no recorded terms).
    Migration {
        sql: include_str!("../../migrations/postgres/0008_payout_terms.sql"),
        oldest_program_schema: 6,
    },
    // A column that programs before it leave NULL (their rows judged by the claimant's lease).
    Migration {
        sql: include_str!("../../migrations/postgres/0009_instance_lease.sql"),
        oldest_program_schema: 6,
    },
];

/// Schema 5 moves the rows of `shares` into packs of this many (consecutive ids).
const MOVED_SHARES_PER_PACK: usize = 4096;

/// Packs fetched at a time by a scan that may stop early (a PPLNS window, a search).
const PACK_CHUNK: i32 = 8;

/// The columns a pack scan reads, in this order.
const PACK_COLUMNS: &str = "first_id, min_time_ms, shares FROM share_packs";

/// The advisory lock that serializes migrations of instances starting together ("ledger").
const MIGRATION_LOCK: i64 = 0x6c65_6467_6572;

/// The advisory lock ("shares") each append holds from its first share id to its commit, so
/// that share ids commit in order across the instances writing one database: once a reader
/// sees share N, every share below N is committed (or never will be). Without it, instance A
/// could take ids 100-199 and commit after instance B committed 200-299; a PPLNS window read
/// in between (a settlement, the coinbase's window read from the last id seen) would miss
/// A's shares below its end, and a recomputation from the export would not match it.
const SHARES_LOCK: i64 = 0x7368_6172_6573;

/// Advisory lock (held to the end of its transaction) that one instance's pruning takes: two
/// instances pruning at once would both cut the pack that straddles the bound, and both
/// write its kept part again, each share of it then stored twice.
const PRUNE_LOCK: i64 = 0x7072_756e_6500;

/// How long the server lets a session sit idle inside a transaction before it ends it (and
/// releases its locks): far longer than any pause of the writer between two statements.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(30);

/// Milliseconds since the Unix epoch on the database's clock.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// How long a connection attempt may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long sent data may stay unacknowledged before the connection counts as dropped (a
/// server that vanished without closing: the writer must say `Unavailable`, not hang).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(15);

const BLOCK_COLUMNS: &str = "hash, height, time_ms, reward_sat, bits, \"user\", worker, status, reason, \
     coinbase_payouts, payout_terms FROM blocks";

/// A live connection and its prepared statements.
struct Connection {
    client: Client,
    insert_pack: Statement,
    next_share_ids: Statement,
    insert_worker: Statement,
    select_worker: Statement,
    insert_block: Statement,
    add_rejected: Statement,
    advance_batch: Statement,
    /// Takes the advisory lock it is given (SHARES_LOCK, PRUNE_LOCK) until the transaction
    /// ends.
    advisory_lock: Statement,
    /// A commit of shares only, in one call (migrations/postgres/0006_append_in_one_call.sql).
    append_pack: Statement,
}

impl Connection {
    fn open(config: &Config) -> Result<Self, LedgerError> {
        let mut client = config.connect(NoTls).map_err(postgres_error)?;
        // An instance that vanishes inside an append (a lost machine, a cut network) would
        // keep SHARES_LOCK, and every other instance's appends waiting, until the server
        // notices; a transaction idle this long is ended by the server instead.
        client
            .batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = {}",
                IDLE_IN_TRANSACTION.as_millis()
            ))
            .map_err(postgres_error)?;
        migrate(&mut client)?;
        let insert_pack = client
            .prepare(
                "INSERT INTO share_packs (first_id, last_id, min_time_ms, max_time_ms, count, \
                 shares) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .map_err(postgres_error)?;
        let next_share_ids = client
            .prepare("UPDATE share_sequence SET last_id = last_id + $1 RETURNING last_id")
            .map_err(postgres_error)?;
        let insert_worker = client
            .prepare(
                "INSERT INTO workers (\"user\", worker) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .map_err(postgres_error)?;
        let select_worker = client
            .prepare("SELECT id FROM workers WHERE \"user\" = $1 AND worker = $2")
            .map_err(postgres_error)?;
        let insert_block = client
            .prepare(
                "INSERT INTO blocks (hash, height, time_ms, reward_sat, bits, \"user\", worker, \
                 share_id, coinbase_payouts, payout_terms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (hash) DO NOTHING",
            )
            .map_err(postgres_error)?;
        let add_rejected = client
            .prepare(
                "INSERT INTO rejected (\"user\", worker, reason, count) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (\"user\", worker, reason) \
                 DO UPDATE SET count = rejected.count + excluded.count",
            )
            .map_err(postgres_error)?;
        let advance_batch = client
            .prepare(
                "INSERT INTO writer_batches (writer, last_batch, updated_ms) \
                 VALUES ($1, $2, (extract(epoch FROM now()) * 1000)::bigint) \
                 ON CONFLICT (writer) DO UPDATE \
                 SET last_batch = excluded.last_batch, updated_ms = excluded.updated_ms \
                 WHERE writer_batches.last_batch < excluded.last_batch",
            )
            .map_err(postgres_error)?;
        let advisory_lock = client
            .prepare("SELECT pg_advisory_xact_lock($1)")
            .map_err(postgres_error)?;
        let append_pack = client
            .prepare("SELECT append_share_pack($1, $2, $3, $4, $5, $6, $7)")
            .map_err(postgres_error)?;
        Ok(Connection {
            client,
            insert_pack,
            next_share_ids,
            insert_worker,
            select_worker,
            insert_block,
            add_rejected,
            advance_batch,
            advisory_lock,
            append_pack,
        })
    }
}

/// Applies the migrations the database lacks, in one transaction under an advisory lock (two
/// instances starting together migrate once); refuses a newer schema unless its newer versions
/// allow this program (src/ledger/schema.rs).
fn migrate(client: &mut Client) -> Result<(), LedgerError> {
    let mut tx = client.transaction().map_err(postgres_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(postgres_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version bigint PRIMARY KEY,
             applied_ms bigint NOT NULL
         )",
    )
    .map_err(postgres_error)?;
    let current: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .map_err(postgres_error)?
        .try_get(0)
        .map_err(postgres_error)?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        // This program knows the version that added `oldest_program_schema`: the column is there.
        let newer: Vec<(i64, Option<i64>)> = tx
            .query(
                "SELECT version, oldest_program_schema FROM schema_version WHERE version > $1",
                &[&known],
            )
            .map_err(postgres_error)?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, ::postgres::Error>>()
            .map_err(postgres_error)?;
        schema::may_run_on_newer(known as u32, &newer)?;
        return tx.commit().map_err(postgres_error);
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        tx.batch_execute(migration.sql)
            .map_err(|e| LedgerError::Schema(format!("migration {version} failed: {e}")))?;
        if version == 5 {
            move_share_rows_into_packs(&mut tx)?;
        }
    }
    // Recorded once every migration ran (the column for the older programs came with one).
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute(
            "INSERT INTO schema_version (version, applied_ms, oldest_program_schema) \
             VALUES ($1, (extract(epoch FROM now()) * 1000)::bigint, $2)",
            &[
                &(index as i64 + 1),
                &i64::from(migration.oldest_program_schema),
            ],
        )
        .map_err(postgres_error)?;
    }
    tx.commit().map_err(postgres_error)
}

/// A [`Ledger`] in a PostgreSQL database.
pub struct PostgresLedger {
    config: Config,
    /// The connection, `None` after it failed (the next call connects again).
    connection: Option<Connection>,
    /// Worker ids by user and worker, as committed (cleared when a transaction fails).
    worker_ids: HashMap<String, HashMap<String, i32>>,
    /// User and worker by worker id, for the shares read back (loaded when one is missing).
    worker_names: WorkerNames,
}

impl std::fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: show where, never how.
        f.debug_struct("PostgresLedger")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("connected", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

impl PostgresLedger {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname` or
    /// the key=value form), migrating its schema. A malformed URL is `Location`; a server
    /// that does not answer, `Unavailable`.
    pub fn connect(url: &str) -> Result<Self, LedgerError> {
        let mut ledger = Self::connect_later(url)?;
        ledger.connection = Some(Connection::open(&ledger.config)?);
        Ok(ledger)
    }

    /// The ledger at `url`, connected (and migrated) by its first call: for a pool that
    /// starts while its database is down (each call then fails as `Unavailable` until the
    /// server answers). A malformed URL is `Location`.
    pub fn connect_later(url: &str) -> Result<Self, LedgerError> {
        // The parser's message may quote the URL, password included: say only what it is.
        let mut config: Config = url.parse().map_err(|_| {
            LedgerError::Location("not a PostgreSQL connection URL (password not shown)".into())
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("blvm-stratum-v2");
        }
        Ok(PostgresLedger {
            config,
            connection: None,
            worker_ids: HashMap::new(),
            worker_names: HashMap::new(),
        })
    }

    /// The schema version this program writes (the number of its migrations).
    pub fn schema_version() -> u32 {
        MIGRATIONS.len() as u32
    }

    /// Runs `f` on the connection (connecting first if the last one failed); an error that
    /// leaves the connection unusable drops it, so the next call reconnects.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, &mut WorkerIds) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.with_names(|c, ids, _| f(c, ids))
    }

    /// [`Self::with`], with the worker names for reading shares back.
    fn with_names<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, &mut WorkerIds, &mut WorkerNames) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let connection = match &mut self.connection {
            Some(c) if !c.client.is_closed() => c,
            slot => {
                let opened = Connection::open(&self.config)?;
                // What the last connection's database said may not hold for this one (a
                // restored backup, a promoted standby that lost the last worker rows): ids
                // are learnt again, never carried over into a commit.
                self.worker_ids.clear();
                self.worker_names.clear();
                slot.insert(opened)
            }
        };
        let result = f(connection, &mut self.worker_ids, &mut self.worker_names);
        if result.is_err() {
            // Worker ids inserted by a rolled-back transaction do not exist.
            self.worker_ids.clear();
            if matches!(result, Err(LedgerError::Unavailable(_))) {
                self.connection = None;
            }
        }
        result
    }
}

type WorkerIds = HashMap<String, HashMap<String, i32>>;

fn append(
    connection: &mut Connection,
    worker_ids: &mut WorkerIds,
    batch: &LedgerBatch,
) -> Result<(), LedgerError> {
    // Split borrows: the statements stay readable while the transaction borrows the client.
    let Connection {
        client,
        insert_pack,
        next_share_ids,
        insert_worker,
        select_worker,
        insert_block,
        add_rejected,
        advance_batch,
        advisory_lock,
        append_pack,
    } = connection;
    if let Some(sequence) = batch.sequence
        && !batch.shares.is_empty()
        && batch.blocks.is_empty()
        && batch.rejected.is_empty()
        && append_shares_in_one_call(client, append_pack, worker_ids, sequence, &batch.shares)?
    {
        return Ok(());
    }
    let mut tx = client.transaction().map_err(postgres_error)?;
    if let Some(sequence) = batch.sequence {
        // Same bits as u64 (the writer's number is random over the whole range).
        let advanced = tx
            .execute(
                &*advance_batch,
                &[
                    &(sequence.writer as i64),
                    &to_i64(sequence.number, "batch number")?,
                ],
            )
            .map_err(postgres_error)?;
        if advanced == 0 {
            // Committed before (its reply was lost): nothing to write again.
            return Ok(());
        }
    }
    // The shares as one pack (src/ledger/share_pack.rs), their ids the next ones of the
    // sequence: consecutive, and in commit order across instances (SHARES_LOCK, released at
    // commit).
    let n = batch.shares.len();
    let first_id = if n == 0 {
        0
    } else {
        tx.execute(&*advisory_lock, &[&SHARES_LOCK])
            .map_err(postgres_error)?;
        let count = to_i64(n as u64, "share count")?;
        let last: i64 = tx
            .query_one(&*next_share_ids, &[&count])
            .map_err(postgres_error)?
            .try_get(0)
            .map_err(postgres_error)?;
        to_u64(last - count + 1, "share id")?
    };
    let mut packed = Vec::with_capacity(n);
    for (index, share) in batch.shares.iter().enumerate() {
        let worker_id = worker_id(
            insert_worker,
            select_worker,
            worker_ids,
            &mut tx,
            &share.user,
            &share.worker,
        )?;
        let worker_id = stored_worker_id(worker_id)?;
        packed.push(PackedShare::of(share, first_id + index as u64, worker_id));
    }
    if let Some(pack) = share_pack::encode(&packed) {
        insert_packed(&mut tx, insert_pack, &pack)?;
    }
    for block in &batch.blocks {
        // The finding share: in this batch (usual), else searched in the ledger, newest first
        // (a share's hash is unique: the pool refuses a duplicate).
        let share_id = match batch.shares.iter().position(|s| s.hash == block.hash) {
            Some(index) => Some(to_i64(first_id + index as u64, "share id")?),
            None => find_packed(
                &mut tx,
                &format!("SELECT {PACK_COLUMNS} ORDER BY first_id DESC"),
                &[],
                |s| s.hash == block.hash,
            )?
            .map(|s| to_i64(s.id, "share id"))
            .transpose()?,
        };
        tx.execute(
            &*insert_block,
            &[
                &&block.hash.as_byte_array()[..],
                &i64::from(block.height),
                &to_i64(block.time_ms, "time_ms")?,
                &to_i64(block.reward_sat, "reward_sat")?,
                &i64::from(block.bits.to_consensus()),
                &block.user,
                &block.worker,
                &share_id,
                &block.coinbase_payouts.as_ref().map(coinbase_payouts_json),
                &block.payout_terms.as_ref().map(payout_terms_json),
            ],
        )
        .map_err(postgres_error)?;
    }
    for r in &batch.rejected {
        tx.execute(
            &*add_rejected,
            &[&r.user, &r.worker, &r.reason, &to_i64(r.count, "count")?],
        )
        .map_err(postgres_error)?;
    }
    tx.commit().map_err(postgres_error)
}

/// The usual commit (shares only, numbered by the writer) as one call of `append_share_pack`,
/// when every worker's id is known (false, nothing written, when one is not): one round trip
/// instead of seven (BEGIN, the batch's number, the lock, which as an unprepared statement was
/// two, the ids, the pack, COMMIT). A commit with a worker seen for the first time goes the
/// transaction's way, which adds the worker in the same commit (each added alone would be a
/// commit, an fsync, of its own: a thousand new miners would hold the first acknowledgements
/// for a tenth of a second).
///
/// Outside BEGIN the call is its own transaction, committed when the server handles the Sync
/// that follows it; the answer's row comes before that commit, but `query_one` reads on to the
/// ReadyForQuery sent after it (tokio-postgres' row stream ends there), so it returns only once
/// the shares are committed, and a failed commit, or a connection lost before it, is its error.
fn append_shares_in_one_call(
    client: &mut Client,
    append_pack: &Statement,
    worker_ids: &WorkerIds,
    sequence: super::BatchSequence,
    shares: &[super::ShareRecord],
) -> Result<bool, LedgerError> {
    let mut packed = Vec::with_capacity(shares.len());
    for (index, share) in shares.iter().enumerate() {
        let Some(worker_id) = cached_worker_id(worker_ids, &share.user, &share.worker) else {
            return Ok(false);
        };
        let worker_id = stored_worker_id(worker_id)?;
        // Ids from 0: the pack holds deltas, the same whatever the first id turns out to be.
        packed.push(PackedShare::of(share, index as u64, worker_id));
    }
    let Some(pack) = share_pack::encode(&packed) else {
        return Ok(true);
    };
    client
        .query_one(
            append_pack,
            &[
                &(sequence.writer as i64),
                &to_i64(sequence.number, "batch number")?,
                &SHARES_LOCK,
                &to_i64(pack.min_time_ms, "time_ms")?,
                &to_i64(pack.max_time_ms, "time_ms")?,
                &to_i64(pack.count, "share count")?,
                &pack.bytes,
            ],
        )
        .map_err(postgres_error)?;
    Ok(true)
}

fn insert_packed(
    tx: &mut Transaction<'_>,
    insert_pack: &Statement,
    pack: &EncodedPack,
) -> Result<(), LedgerError> {
    tx.execute(
        insert_pack,
        &[
            &to_i64(pack.first_id, "share id")?,
            &to_i64(pack.last_id, "share id")?,
            &to_i64(pack.min_time_ms, "time_ms")?,
            &to_i64(pack.max_time_ms, "time_ms")?,
            &to_i64(pack.count, "share count")?,
            &pack.bytes,
        ],
    )
    .map_err(postgres_error)?;
    Ok(())
}

/// Hands the shares of each pack `query` returns (`PACK_COLUMNS`) to `each`, in the query's
/// order, until it returns false; fetched a few packs at a time, so a scan that stops early
/// reads little.
fn scan_packs(
    tx: &mut Transaction<'_>,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
    mut each: impl FnMut(Vec<PackedShare>) -> bool,
) -> Result<(), LedgerError> {
    let portal = tx.bind(query, params).map_err(postgres_error)?;
    loop {
        let rows = tx
            .query_portal(&portal, PACK_CHUNK)
            .map_err(postgres_error)?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in &rows {
            let first_id = to_u64(get(row, 0)?, "share id")?;
            let min_time_ms = to_u64(get(row, 1)?, "time_ms")?;
            let bytes: &[u8] = get(row, 2)?;
            if !each(share_pack::decode(first_id, min_time_ms, bytes)?) {
                return Ok(());
            }
        }
    }
}

/// The first share `matches` takes in the packs of `query`, in its order.
fn find_packed(
    tx: &mut Transaction<'_>,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
    matches: impl Fn(&PackedShare) -> bool,
) -> Result<Option<PackedShare>, LedgerError> {
    let mut found = None;
    scan_packs(tx, query, params, |shares| {
        found = shares.into_iter().find(|s| matches(s));
        found.is_none()
    })?;
    Ok(found)
}

/// Packed shares read from `query` (`PACK_COLUMNS`, in the order wanted), those `keep` takes,
/// at most `limit`, with their user and worker names.
fn packed_shares(
    client: &mut Client,
    names: &mut WorkerNames,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
    keep: impl Fn(&PackedShare) -> bool,
    limit: usize,
) -> Result<Vec<StoredShare>, LedgerError> {
    let mut out = Vec::new();
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .map_err(postgres_error)?;
    if limit > 0 {
        scan_packs(&mut tx, query, params, |shares| {
            pack_reads::collect(&mut out, shares, &keep, limit)
        })?;
    }
    let stored = stored(&mut tx, names, out)?;
    tx.commit().map_err(postgres_error)?;
    Ok(stored)
}

/// A PPLNS window: the shares from `last_id` down, newest first, until their difficulty
/// reaches `difficulty` (the scan stops there).
fn window(
    client: &mut Client,
    names: &mut WorkerNames,
    last_id: u64,
    difficulty: f64,
) -> Result<Vec<StoredShare>, LedgerError> {
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .map_err(postgres_error)?;
    let mut window = WindowScan::new(last_id, difficulty);
    scan_packs(
        &mut tx,
        &format!("SELECT {PACK_COLUMNS} WHERE first_id <= $1 ORDER BY first_id DESC"),
        &[&bound_i64(last_id)],
        |shares| window.take(shares),
    )?;
    let stored = stored(&mut tx, names, window.into_shares())?;
    tx.commit().map_err(postgres_error)?;
    Ok(stored)
}

/// Packed shares with their user and worker names (`names` loaded again when one is missing).
fn stored(
    tx: &mut Transaction<'_>,
    names: &mut WorkerNames,
    shares: Vec<PackedShare>,
) -> Result<Vec<StoredShare>, LedgerError> {
    if pack_reads::names_missing(&shares, names) {
        for row in tx
            .query("SELECT id, \"user\", worker FROM workers", &[])
            .map_err(postgres_error)?
        {
            let id: i32 = get(&row, 0)?;
            let id =
                u64::try_from(id).map_err(|_| LedgerError::Corrupt(format!("worker id {id}")))?;
            let user: &str = get(&row, 1)?;
            let worker: &str = get(&row, 2)?;
            names.insert(id, (user.into(), worker.into()));
        }
    }
    pack_reads::named(shares, names)
}

/// The second half of migration 5: the rows of schema 1 to 4 (renamed `shares_v4` by its
/// first half) moved into packs of consecutive rows, then their table dropped.
fn move_share_rows_into_packs(tx: &mut Transaction<'_>) -> Result<(), LedgerError> {
    let insert = tx
        .prepare(
            "INSERT INTO share_packs (first_id, last_id, min_time_ms, max_time_ms, count, \
             shares) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .map_err(postgres_error)?;
    let mut after: i64 = 0;
    loop {
        let rows = tx
            .query(
                "SELECT id, time_ms, worker_id, connection_id, channel_id, job_id, target, \
                 difficulty, hash FROM shares_v4 WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &(MOVED_SHARES_PER_PACK as i64)],
            )
            .map_err(postgres_error)?;
        let Some(last) = rows.last() else {
            break;
        };
        after = get(last, 0)?;
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            pending.push(PackedShare {
                id: to_u64(get(row, 0)?, "share id")?,
                time_ms: to_u64(get(row, 1)?, "time_ms")?,
                worker_id: stored_worker_id(get(row, 2)?)?,
                // Same bits as u64 (ids of the product API's endpoint miners are 2^63 and up).
                connection_id: get::<i64>(row, 3)? as u64,
                channel_id: u32_from_bits(get(row, 4)?),
                job_id: u32_from_bits(get(row, 5)?),
                target: target(get(row, 6)?)?,
                difficulty: get(row, 7)?,
                hash: block_hash(get(row, 8)?)?,
            });
        }
        if let Some(pack) = share_pack::encode(&pending) {
            insert_packed(tx, &insert, &pack)?;
        }
    }
    tx.batch_execute("DROP TABLE shares_v4")
        .map_err(postgres_error)
}

/// The id of `user`'s `worker` as this connection's database gave it, if it is known.
fn cached_worker_id(worker_ids: &WorkerIds, user: &str, worker: &str) -> Option<i32> {
    worker_ids.get(user).and_then(|w| w.get(worker)).copied()
}

/// A `workers.id` (a PostgreSQL integer) as a pack holds it.
fn stored_worker_id(id: i32) -> Result<u64, LedgerError> {
    u64::try_from(id).map_err(|_| LedgerError::Corrupt(format!("worker id {id}")))
}

/// The worker id of `user`/`worker`, inserting the pair if new (inside `tx`).
fn worker_id(
    insert_worker: &Statement,
    select_worker: &Statement,
    worker_ids: &mut WorkerIds,
    tx: &mut Transaction<'_>,
    user: &str,
    worker: &str,
) -> Result<i32, LedgerError> {
    if let Some(id) = cached_worker_id(worker_ids, user, worker) {
        return Ok(id);
    }
    tx.execute(insert_worker, &[&user, &worker])
        .map_err(postgres_error)?;
    let id: i32 = tx
        .query_one(select_worker, &[&user, &worker])
        .map_err(postgres_error)?
        .try_get(0)
        .map_err(postgres_error)?;
    worker_ids
        .entry(user.to_owned())
        .or_default()
        .insert(worker.to_owned(), id);
    Ok(id)
}

fn record_payouts(client: &mut Client, c: &PayoutComputation) -> Result<bool, LedgerError> {
    let hash = &c.block_hash.as_byte_array()[..];
    let mut tx = client.transaction().map_err(postgres_error)?;
    let inserted = tx
        .execute(
            "INSERT INTO payout_computations (block_hash, scheme, reward_sat, fee_sat, \
             window_difficulty, counted_difficulty, first_share_id, last_share_id, computed_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (block_hash) DO NOTHING",
            &[
                &hash,
                &c.scheme,
                &to_i64(c.reward_sat, "reward_sat")?,
                &to_i64(c.fee_sat, "fee_sat")?,
                &c.window_difficulty,
                &c.counted_difficulty,
                &to_i64(c.first_share_id, "first_share_id")?,
                &to_i64(c.last_share_id, "last_share_id")?,
                &to_i64(c.computed_ms, "computed_ms")?,
            ],
        )
        .map_err(postgres_error)?;
    if inserted == 0 {
        // Already paid (by this instance or another): write nothing.
        return Ok(false);
    }
    let insert_payout = tx
        .prepare(
            "INSERT INTO payouts (block_hash, position, \"user\", amount_sat, difficulty) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .map_err(postgres_error)?;
    for (position, p) in c.payouts.iter().enumerate() {
        let amount = to_i64(p.amount_sat, "amount_sat")?;
        let position =
            i32::try_from(position).map_err(|_| LedgerError::Corrupt("too many payouts".into()))?;
        tx.execute(
            &insert_payout,
            &[&hash, &position, &p.user, &amount, &p.difficulty],
        )
        .map_err(postgres_error)?;
    }
    tx.commit().map_err(postgres_error)?;
    Ok(true)
}

fn payouts(
    client: &mut Client,
    block: BlockHash,
) -> Result<Option<PayoutComputation>, LedgerError> {
    let hash = &block.as_byte_array()[..];
    let Some(head) = client
        .query_opt(
            "SELECT scheme, reward_sat, fee_sat, window_difficulty, counted_difficulty, \
             first_share_id, last_share_id, computed_ms FROM payout_computations \
             WHERE block_hash = $1",
            &[&hash],
        )
        .map_err(postgres_error)?
    else {
        return Ok(None);
    };
    let rows = client
        .query(
            "SELECT \"user\", amount_sat, difficulty FROM payouts WHERE block_hash = $1 \
             ORDER BY position",
            &[&hash],
        )
        .map_err(postgres_error)?;
    let mut list = Vec::with_capacity(rows.len());
    for row in &rows {
        list.push(Payout {
            user: get(row, 0)?,
            amount_sat: to_u64(get(row, 1)?, "amount_sat")?,
            difficulty: get(row, 2)?,
        });
    }
    Ok(Some(PayoutComputation {
        block_hash: block,
        scheme: get(&head, 0)?,
        reward_sat: to_u64(get(&head, 1)?, "reward_sat")?,
        fee_sat: to_u64(get(&head, 2)?, "fee_sat")?,
        window_difficulty: get(&head, 3)?,
        counted_difficulty: get(&head, 4)?,
        first_share_id: to_u64(get(&head, 5)?, "first_share_id")?,
        last_share_id: to_u64(get(&head, 6)?, "last_share_id")?,
        computed_ms: to_u64(get(&head, 7)?, "computed_ms")?,
        payouts: list,
    }))
}

const INSTANCE_COLUMNS: &str = "server_id, instance, host, data_dir, addresses, started_ms, \
     heartbeat_ms, lease_ms FROM instances";

fn instance_record(row: &Row) -> Result<InstanceRecord, LedgerError> {
    let server_id: i32 = get(row, 0)?;
    Ok(InstanceRecord {
        server_id: u16::try_from(server_id)
            .map_err(|_| LedgerError::Corrupt(format!("server_id {server_id}")))?,
        instance: get::<i64>(row, 1)? as u64,
        host: get(row, 2)?,
        data_dir: get(row, 3)?,
        addresses: get(row, 4)?,
        started_ms: to_u64(get(row, 5)?, "started_ms")?,
        heartbeat_ms: to_u64(get(row, 6)?, "heartbeat_ms")?,
        lease_ms: get::<Option<i64>>(row, 7)?
            .map(|l| to_u64(l, "lease_ms"))
            .transpose()?,
    })
}

/// Claims a server_id: the holder's row locked (or a new one inserted), the rule applied, the
/// claim written, in one transaction on the database's clock.
fn claim_server_id(
    client: &mut Client,
    claim: &InstanceClaim,
) -> Result<ClaimOutcome, LedgerError> {
    let server_id = i32::from(claim.server_id);
    // Same bits as u64.
    let instance = claim.instance as i64;
    let mut tx = client.transaction().map_err(postgres_error)?;
    let now: i64 = get(
        &tx.query_one(&format!("SELECT {DB_NOW_MS}"), &[])
            .map_err(postgres_error)?,
        0,
    )?;
    // A free server_id: taken at once. Two instances inserting together: the second waits for
    // the first's commit, inserts nothing and reads its row below.
    let inserted = tx
        .execute(
            "INSERT INTO instances (server_id, instance, host, data_dir, addresses, started_ms, \
             heartbeat_ms, lease_ms) VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
             ON CONFLICT (server_id) DO NOTHING",
            &[
                &server_id,
                &instance,
                &claim.host,
                &claim.data_dir,
                &claim.addresses,
                &now,
                &bound_i64(claim.lease_ms),
            ],
        )
        .map_err(postgres_error)?;
    if inserted == 1 {
        tx.commit().map_err(postgres_error)?;
        return Ok(ClaimOutcome::Claimed { replaced: None });
    }
    let holder = tx
        .query_opt(
            &format!("SELECT {INSTANCE_COLUMNS} WHERE server_id = $1 FOR UPDATE"),
            &[&server_id],
        )
        .map_err(postgres_error)?
        .as_ref()
        .map(instance_record)
        .transpose()?;
    let same = holder
        .as_ref()
        .is_some_and(|h| h.instance == claim.instance);
    let (outcome, write) = instances::decide(holder, claim, to_u64(now, "now")?);
    if write {
        tx.execute(
            "INSERT INTO instances (server_id, instance, host, data_dir, addresses, started_ms, \
             heartbeat_ms, lease_ms) VALUES ($1, $2, $3, $4, $5, $6, $6, $8) \
             ON CONFLICT (server_id) DO UPDATE \
             SET instance = excluded.instance, host = excluded.host, \
             data_dir = excluded.data_dir, addresses = excluded.addresses, \
             started_ms = CASE WHEN $7 THEN instances.started_ms ELSE excluded.started_ms END, \
             heartbeat_ms = excluded.heartbeat_ms, lease_ms = excluded.lease_ms",
            &[
                &server_id,
                &instance,
                &claim.host,
                &claim.data_dir,
                &claim.addresses,
                &now,
                &same,
                &bound_i64(claim.lease_ms),
            ],
        )
        .map_err(postgres_error)?;
    }
    tx.commit().map_err(postgres_error)?;
    Ok(outcome)
}

fn get<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, LedgerError> {
    row.try_get(index)
        .map_err(|e| LedgerError::Corrupt(format!("column {index}: {e}")))
}

fn stored_block(row: &Row) -> Result<StoredBlock, LedgerError> {
    let height: i64 = get(row, 1)?;
    Ok(StoredBlock {
        block: FoundBlockRecord {
            hash: block_hash(get(row, 0)?)?,
            height: u32::try_from(height)
                .map_err(|_| LedgerError::Corrupt(format!("stored height {height}")))?,
            time_ms: to_u64(get(row, 2)?, "time_ms")?,
            reward_sat: to_u64(get(row, 3)?, "reward_sat")?,
            bits: compact_target(get(row, 4)?)?,
            user: get(row, 5)?,
            worker: get(row, 6)?,
            coinbase_payouts: get::<Option<&str>>(row, 9)?
                .map(coinbase_payouts_from_json)
                .transpose()?,
            payout_terms: get::<Option<&str>>(row, 10)?
                .map(payout_terms_from_json)
                .transpose()?,
        },
        status: block_status(get(row, 7)?, get(row, 8)?)?,
    })
}

impl Ledger for PostgresLedger {
    fn append(&mut self, batch: &LedgerBatch) -> Result<(), LedgerError> {
        self.with(|c, worker_ids| append(c, worker_ids, batch))
    }

    fn set_block_status(
        &mut self,
        hash: BlockHash,
        status: &BlockStatus,
    ) -> Result<bool, LedgerError> {
        // Two instances writing the same change: the second waits for the first's row and
        // finds nothing left to change (read committed re-checks the condition).
        self.with(|c, _| {
            let changed = c
                .client
                .execute(
                    "UPDATE blocks SET status = $2, reason = $3 WHERE hash = $1 \
                     AND (status IS DISTINCT FROM $2 OR reason IS DISTINCT FROM $3)",
                    &[
                        &&hash.as_byte_array()[..],
                        &status.name(),
                        &status_reason(status),
                    ],
                )
                .map_err(postgres_error)?;
            Ok(changed > 0)
        })
    }

    fn block(&mut self, hash: BlockHash) -> Result<Option<StoredBlock>, LedgerError> {
        self.with(|c, _| {
            c.client
                .query_opt(
                    &format!("SELECT {BLOCK_COLUMNS} WHERE hash = $1"),
                    &[&&hash.as_byte_array()[..]],
                )
                .map_err(postgres_error)?
                .as_ref()
                .map(stored_block)
                .transpose()
        })
    }

    fn blocks(&mut self, limit: usize) -> Result<Vec<StoredBlock>, LedgerError> {
        self.with(|c, _| {
            c.client
                .query(
                    &format!("SELECT {BLOCK_COLUMNS} ORDER BY seq DESC LIMIT $1"),
                    &[&limit_i64(limit)],
                )
                .map_err(postgres_error)?
                .iter()
                .map(stored_block)
                .collect()
        })
    }

    fn share_by_hash(&mut self, hash: BlockHash) -> Result<Option<StoredShare>, LedgerError> {
        self.with_names(|c, _, names| {
            // A block's share through the block's link (one pack by its key); any other hash
            // by a scan, oldest first (no index on hashes: see migrations/postgres/0001_init.sql).
            let linked: Option<i64> = c
                .client
                .query_opt(
                    "SELECT share_id FROM blocks WHERE hash = $1",
                    &[&&hash.as_byte_array()[..]],
                )
                .map_err(postgres_error)?
                .map(|row| get::<Option<i64>>(&row, 0))
                .transpose()?
                .flatten();
            if let Some(id) = linked {
                let id = to_u64(id, "share id")?;
                let found = packed_shares(
                    &mut c.client,
                    names,
                    &format!(
                        "SELECT {PACK_COLUMNS} WHERE first_id = \
                         (SELECT MAX(first_id) FROM share_packs WHERE first_id <= $1)"
                    ),
                    &[&bound_i64(id)],
                    |s| s.id == id && s.hash == hash,
                    1,
                )?;
                if let Some(share) = found.into_iter().next() {
                    return Ok(Some(share));
                }
            }
            let found = packed_shares(
                &mut c.client,
                names,
                &format!("SELECT {PACK_COLUMNS} ORDER BY first_id"),
                &[],
                |s| s.hash == hash,
                1,
            )?;
            Ok(found.into_iter().next())
        })
    }

    fn shares(&mut self, range: &ShareRange) -> Result<Vec<StoredShare>, LedgerError> {
        self.with_names(|c, _, names| match *range {
            ShareRange::Window {
                last_id,
                difficulty,
            } => window(&mut c.client, names, last_id, difficulty),
            ShareRange::Time {
                from_ms,
                to_ms,
                limit,
            } => packed_shares(
                &mut c.client,
                names,
                &format!(
                    "SELECT {PACK_COLUMNS} WHERE max_time_ms >= $1 AND min_time_ms < $2 \
                     ORDER BY first_id"
                ),
                &[&bound_i64(from_ms), &bound_i64(to_ms)],
                |s| s.time_ms >= from_ms && s.time_ms < to_ms,
                limit,
            ),
            ShareRange::Ids {
                from_id,
                to_id,
                limit,
            } => packed_shares(
                &mut c.client,
                names,
                // From the pack holding `from_id` (the last one starting at or before it).
                &format!(
                    "SELECT {PACK_COLUMNS} WHERE first_id >= COALESCE( \
                     (SELECT MAX(first_id) FROM share_packs WHERE first_id <= $1), 0) \
                     AND first_id <= $2 ORDER BY first_id"
                ),
                &[&bound_i64(from_id), &bound_i64(to_id)],
                |s| s.id >= from_id && s.id <= to_id,
                limit,
            ),
        })
    }

    fn last_share_id(&mut self) -> Result<u64, LedgerError> {
        // Packs do not overlap and their ids grow in commit order: the last pack holds the
        // highest id.
        self.with(|c, _| {
            let row = c
                .client
                .query_opt(
                    "SELECT last_id FROM share_packs ORDER BY first_id DESC LIMIT 1",
                    &[],
                )
                .map_err(postgres_error)?;
            match row {
                Some(row) => to_u64(get(&row, 0)?, "share id"),
                None => Ok(0),
            }
        })
    }

    fn record_payouts(&mut self, computation: &PayoutComputation) -> Result<bool, LedgerError> {
        self.with(|c, _| record_payouts(&mut c.client, computation))
    }

    fn payouts(&mut self, block_hash: BlockHash) -> Result<Option<PayoutComputation>, LedgerError> {
        self.with(|c, _| payouts(&mut c.client, block_hash))
    }

    fn balances(&mut self) -> Result<Vec<Balance>, LedgerError> {
        self.with(|c, _| {
            let rows = c
                .client
                .query(
                    "SELECT \"user\", earned_sat, immature_sat FROM balances \
                     ORDER BY \"user\" COLLATE \"C\"",
                    &[],
                )
                .map_err(postgres_error)?;
            rows.iter()
                .map(|row| {
                    Ok(Balance {
                        user: get(row, 0)?,
                        earned_sat: to_u64(get(row, 1)?, "earned_sat")?,
                        immature_sat: to_u64(get(row, 2)?, "immature_sat")?,
                    })
                })
                .collect()
        })
    }

    fn blocks_to_confirm(
        &mut self,
        min_orphan_height: u32,
    ) -> Result<Vec<StoredBlock>, LedgerError> {
        self.with(|c, _| {
            c.client
                .query(
                    &format!(
                        "SELECT {BLOCK_COLUMNS} WHERE status = 'accepted' \
                         OR (status = 'orphaned' AND height >= $1) ORDER BY seq"
                    ),
                    &[&i64::from(min_orphan_height)],
                )
                .map_err(postgres_error)?
                .iter()
                .map(stored_block)
                .collect()
        })
    }

    fn rejected(&mut self) -> Result<Vec<RejectedCount>, LedgerError> {
        self.with(|c, _| {
            let rows = c
                .client
                .query(
                    "SELECT \"user\", worker, reason, count FROM rejected ORDER BY \
                     \"user\" COLLATE \"C\", worker COLLATE \"C\", reason COLLATE \"C\"",
                    &[],
                )
                .map_err(postgres_error)?;
            rows.iter()
                .map(|row| {
                    Ok(RejectedCount {
                        user: get(row, 0)?,
                        worker: get(row, 1)?,
                        reason: get(row, 2)?,
                        count: to_u64(get(row, 3)?, "count")?,
                    })
                })
                .collect()
        })
    }

    fn prune(&mut self, before_ms: u64, keep_from_id: u64) -> Result<u64, LedgerError> {
        // Shares with an id below `keep_from_id` accepted before `before_ms` go: whole packs
        // at once, and the packs holding some of them (at either bound) written again without
        // them, in one transaction.
        self.with(|c, _| {
            let (before, keep) = (bound_i64(before_ms), bound_i64(keep_from_id));
            let Connection {
                client,
                insert_pack,
                advisory_lock,
                ..
            } = c;
            let mut tx = client.transaction().map_err(postgres_error)?;
            // One pruning at a time over the instances: the next one sees this one's result.
            tx.execute(&*advisory_lock, &[&PRUNE_LOCK])
                .map_err(postgres_error)?;
            let mut pruned = 0u64;
            for row in tx
                .query(
                    "DELETE FROM share_packs WHERE max_time_ms < $1 AND last_id < $2 \
                     RETURNING count",
                    &[&before, &keep],
                )
                .map_err(postgres_error)?
            {
                pruned += to_u64(get(&row, 0)?, "share count")?;
            }
            let mut cut = Vec::new();
            scan_packs(
                &mut tx,
                &format!(
                    "SELECT {PACK_COLUMNS} WHERE min_time_ms < $1 AND first_id < $2 \
                     ORDER BY first_id"
                ),
                &[&before, &keep],
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
                tx.execute(
                    "DELETE FROM share_packs WHERE first_id = $1",
                    &[&to_i64(first_id, "share id")?],
                )
                .map_err(postgres_error)?;
                if let Some(pack) = share_pack::encode(&kept) {
                    insert_packed(&mut tx, insert_pack, &pack)?;
                }
            }
            tx.commit().map_err(postgres_error)?;
            Ok(pruned)
        })
    }

    fn claim_server_id(
        &mut self,
        claim: &InstanceClaim,
        _now_ms: u64,
    ) -> Result<ClaimOutcome, LedgerError> {
        self.with(|c, _| claim_server_id(&mut c.client, claim))
    }

    fn heartbeat(
        &mut self,
        server_id: u16,
        instance: u64,
        _now_ms: u64,
    ) -> Result<bool, LedgerError> {
        self.with(|c, _| {
            let updated = c
                .client
                .execute(
                    &format!(
                        "UPDATE instances SET heartbeat_ms = {DB_NOW_MS} \
                         WHERE server_id = $1 AND instance = $2"
                    ),
                    &[&i32::from(server_id), &(instance as i64)],
                )
                .map_err(postgres_error)?;
            Ok(updated == 1)
        })
    }

    fn release_server_id(&mut self, server_id: u16, instance: u64) -> Result<(), LedgerError> {
        self.with(|c, _| {
            c.client
                .execute(
                    "DELETE FROM instances WHERE server_id = $1 AND instance = $2",
                    &[&i32::from(server_id), &(instance as i64)],
                )
                .map_err(postgres_error)?;
            Ok(())
        })
    }

    fn instances(&mut self) -> Result<Vec<InstanceRecord>, LedgerError> {
        self.with(|c, _| {
            c.client
                .query(
                    &format!("SELECT {INSTANCE_COLUMNS} ORDER BY server_id"),
                    &[],
                )
                .map_err(postgres_error)?
                .iter()
                .map(instance_record)
                .collect()
        })
    }
}

/// Sorts a PostgreSQL error into the ledger's kinds. Without a server answer (connection
/// refused, closed, timed out, I/O) it is `Unavailable` and the connection is dropped; the
/// server's SQLSTATE decides the rest: connection, resources (disk full), shutdown, lock and
/// serialization failures, read-only are `Unavailable`; bad data is `Corrupt`; everything else
/// (an undefined table or column: a schema this program does not know) is `Schema`.
fn postgres_error(error: postgres::Error) -> LedgerError {
    let text = match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        // The client's own words, then its cause ("error connecting to server: Connection
        // refused (os error 111)").
        None => match std::error::Error::source(&error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    };
    let Some(code) = error.code() else {
        return LedgerError::Unavailable(text);
    };
    let class = &code.code()[..2];
    if matches!(class, "08" | "53" | "57" | "58" | "40" | "55")
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
    {
        LedgerError::Unavailable(text)
    } else if matches!(class, "22" | "23") {
        LedgerError::Corrupt(text)
    } else {
        LedgerError::Schema(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_allows_no_program_newer_than_itself() {
        schema::check_list(MIGRATIONS);
    }
}
