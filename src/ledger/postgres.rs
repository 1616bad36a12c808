//! The ledger in PostgreSQL (`ledger_url = "postgres://..."`), for operators who run several
//! pool instances on one database or want their own queries. The same semantics as SQLite:
//! one transaction per [`Ledger::append`] (the shares in one multi-row `INSERT ... SELECT
//! FROM unnest(...)` of arrays: one round trip for the whole batch), the schema migrated at
//! connect from `migrations/postgres/` (embedded) under an advisory lock, a block paid exactly
//! once even with several instances (`INSERT ... ON CONFLICT DO NOTHING` on the computation,
//! balances in the same transaction).
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
    compact_target, limit_i64, status_reason, target, to_i64, to_u64, u32_bits, u32_from_bits,
};
use super::instances::{self, ClaimOutcome, InstanceClaim, InstanceRecord};
use super::{
    Balance, BlockStatus, FoundBlockRecord, Ledger, LedgerBatch, LedgerError, Payout,
    PayoutComputation, RejectedCount, ShareRange, ShareRecord, StoredBlock, StoredShare,
};

/// The schema's migrations, in order: version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_coinbase_payouts.sql"),
    include_str!("../../migrations/postgres/0003_instances.sql"),
    include_str!("../../migrations/postgres/0004_maturity.sql"),
];

/// The advisory lock that serializes migrations of instances starting together ("ledger").
const MIGRATION_LOCK: i64 = 0x6c65_6467_6572;

/// The advisory lock ("shares") each append holds from its first share id to its commit, so
/// that share ids commit in order across the instances writing one database: once a reader
/// sees share N, every share below N is committed (or never will be). Without it, instance A
/// could take ids 100-199 and commit after instance B committed 200-299; a PPLNS window read
/// in between (a settlement, the coinbase's window read from the last id seen) would miss
/// A's shares below its end, and a recomputation from the export would not match it.
const SHARES_LOCK: i64 = 0x7368_6172_6573;

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

/// Rows fetched at a time while a PPLNS window is read (it stops where the window is full).
const WINDOW_CHUNK: i32 = 1024;

const SHARE_COLUMNS: &str = "s.id, s.time_ms, w.\"user\", w.worker, s.connection_id, \
     s.channel_id, s.job_id, s.target, s.difficulty, s.hash \
     FROM shares s JOIN workers w ON w.id = s.worker_id";

const BLOCK_COLUMNS: &str = "hash, height, time_ms, reward_sat, bits, \"user\", worker, status, reason, \
     coinbase_payouts FROM blocks";

/// A live connection and its prepared statements.
struct Connection {
    client: Client,
    insert_shares: Statement,
    insert_worker: Statement,
    select_worker: Statement,
    insert_block: Statement,
    add_rejected: Statement,
    advance_batch: Statement,
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
        let insert_shares = client
            .prepare(
                "INSERT INTO shares (time_ms, connection_id, difficulty, worker_id, channel_id, \
                 job_id, target, hash) \
                 SELECT t, c, d, w, ch, j, tg, h FROM unnest($1::int8[], $2::int8[], \
                 $3::float8[], $4::int4[], $5::int4[], $6::int4[], $7::bytea[], $8::bytea[]) \
                 WITH ORDINALITY AS u (t, c, d, w, ch, j, tg, h, ord) ORDER BY ord",
            )
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
                // The finding share: among the shares after $8 (this batch's: a primary-key
                // range), else anywhere (a scan, only when it came in an earlier batch).
                "INSERT INTO blocks (hash, height, time_ms, reward_sat, bits, \"user\", worker, \
                 share_id, coinbase_payouts) VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE( \
                 (SELECT id FROM shares WHERE id > $8 AND hash = $1 ORDER BY id LIMIT 1), \
                 (SELECT id FROM shares WHERE hash = $1 ORDER BY id LIMIT 1)), $9) \
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
        Ok(Connection {
            client,
            insert_shares,
            insert_worker,
            select_worker,
            insert_block,
            add_rejected,
            advance_batch,
        })
    }
}

/// Applies the migrations the database lacks, in one transaction under an advisory lock (two
/// instances starting together migrate once); refuses a newer schema.
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
        return Err(LedgerError::Schema(format!(
            "the ledger's schema is version {current}, newer than this program's {known}"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        tx.batch_execute(sql)
            .map_err(|e| LedgerError::Schema(format!("migration {version} failed: {e}")))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_ms) \
             VALUES ($1, (extract(epoch FROM now()) * 1000)::bigint)",
            &[&version],
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
        let connection = match &mut self.connection {
            Some(c) if !c.client.is_closed() => c,
            slot => slot.insert(Connection::open(&self.config)?),
        };
        let result = f(connection, &mut self.worker_ids);
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
    let n = batch.shares.len();
    let mut times = Vec::with_capacity(n);
    let mut connections = Vec::with_capacity(n);
    let mut difficulties = Vec::with_capacity(n);
    let mut workers = Vec::with_capacity(n);
    let mut channels = Vec::with_capacity(n);
    let mut jobs = Vec::with_capacity(n);
    let mut targets = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let target_bytes: Vec<[u8; 32]> = batch
        .shares
        .iter()
        .map(|s| s.target.to_le_bytes())
        .collect();
    // Split borrows: the statements stay readable while the transaction borrows the client.
    let Connection {
        client,
        insert_shares,
        insert_worker,
        select_worker,
        insert_block,
        add_rejected,
        advance_batch,
    } = connection;
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
    if n > 0 {
        // Share ids in commit order across instances (see SHARES_LOCK); released at commit.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SHARES_LOCK])
            .map_err(postgres_error)?;
    }
    // Where this batch's shares start, for linking its blocks to their shares.
    let before: i64 = if batch.blocks.is_empty() {
        0
    } else {
        tx.query_one("SELECT COALESCE(MAX(id), 0) FROM shares", &[])
            .map_err(postgres_error)?
            .try_get(0)
            .map_err(postgres_error)?
    };
    for (share, target) in batch.shares.iter().zip(&target_bytes) {
        workers.push(worker_id(
            insert_worker,
            select_worker,
            worker_ids,
            &mut tx,
            &share.user,
            &share.worker,
        )?);
        times.push(to_i64(share.time_ms, "time_ms")?);
        // Same bits as u64: ids of the product API's endpoint miners are 2^63 and up.
        connections.push(share.connection_id as i64);
        difficulties.push(share.difficulty);
        channels.push(u32_bits(share.channel_id));
        jobs.push(u32_bits(share.job_id));
        targets.push(&target[..]);
        hashes.push(&share.hash.as_byte_array()[..]);
    }
    if n > 0 {
        tx.execute(
            &*insert_shares,
            &[
                &times,
                &connections,
                &difficulties,
                &workers,
                &channels,
                &jobs,
                &targets,
                &hashes,
            ],
        )
        .map_err(postgres_error)?;
    }
    for block in &batch.blocks {
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
                &before,
                &block.coinbase_payouts.as_ref().map(coinbase_payouts_json),
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

/// The worker id of `user`/`worker`, inserting the pair if new (inside `tx`).
fn worker_id(
    insert_worker: &Statement,
    select_worker: &Statement,
    worker_ids: &mut WorkerIds,
    tx: &mut Transaction<'_>,
    user: &str,
    worker: &str,
) -> Result<i32, LedgerError> {
    if let Some(id) = worker_ids.get(user).and_then(|w| w.get(worker)) {
        return Ok(*id);
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

const INSTANCE_COLUMNS: &str =
    "server_id, instance, host, data_dir, addresses, started_ms, heartbeat_ms FROM instances";

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
             heartbeat_ms) VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (server_id) DO NOTHING",
            &[
                &server_id,
                &instance,
                &claim.host,
                &claim.data_dir,
                &claim.addresses,
                &now,
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
             heartbeat_ms) VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (server_id) DO UPDATE \
             SET instance = excluded.instance, host = excluded.host, \
             data_dir = excluded.data_dir, addresses = excluded.addresses, \
             started_ms = CASE WHEN $7 THEN instances.started_ms ELSE excluded.started_ms END, \
             heartbeat_ms = excluded.heartbeat_ms",
            &[
                &server_id,
                &instance,
                &claim.host,
                &claim.data_dir,
                &claim.addresses,
                &now,
                &same,
            ],
        )
        .map_err(postgres_error)?;
    }
    tx.commit().map_err(postgres_error)?;
    Ok(outcome)
}

/// A PPLNS window read in chunks through a portal: the scan stops where it is full.
fn window(
    client: &mut Client,
    last_id: u64,
    difficulty: f64,
) -> Result<Vec<StoredShare>, LedgerError> {
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .map_err(postgres_error)?;
    let portal = tx
        .bind(
            &format!("SELECT {SHARE_COLUMNS} WHERE s.id <= $1 ORDER BY s.id DESC"),
            &[&bound_i64(last_id)],
        )
        .map_err(postgres_error)?;
    let mut out = Vec::new();
    let mut sum = 0.0;
    'chunks: while sum < difficulty {
        let rows = tx
            .query_portal(&portal, WINDOW_CHUNK)
            .map_err(postgres_error)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            if sum >= difficulty {
                break 'chunks;
            }
            let share = stored_share(row)?;
            sum += share.record.difficulty;
            out.push(share);
        }
    }
    tx.commit().map_err(postgres_error)?;
    Ok(out)
}

fn collect_shares(
    client: &mut Client,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<StoredShare>, LedgerError> {
    client
        .query(query, params)
        .map_err(postgres_error)?
        .iter()
        .map(stored_share)
        .collect()
}

fn get<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, LedgerError> {
    row.try_get(index)
        .map_err(|e| LedgerError::Corrupt(format!("column {index}: {e}")))
}

fn stored_share(row: &Row) -> Result<StoredShare, LedgerError> {
    Ok(StoredShare {
        id: to_u64(get(row, 0)?, "share id")?,
        record: ShareRecord {
            time_ms: to_u64(get(row, 1)?, "time_ms")?,
            user: get::<&str>(row, 2)?.into(),
            worker: get::<&str>(row, 3)?.into(),
            connection_id: get::<i64>(row, 4)? as u64,
            channel_id: u32_from_bits(get(row, 5)?),
            job_id: u32_from_bits(get(row, 6)?),
            target: target(get(row, 7)?)?,
            difficulty: get(row, 8)?,
            hash: block_hash(get(row, 9)?)?,
        },
    })
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
        self.with(|c, _| {
            let hash = &hash.as_byte_array()[..];
            // A block's share through the block's link (an index lookup); any other hash by
            // a scan (no index on hashes: see migrations/postgres/0001_init.sql).
            let linked = collect_shares(
                &mut c.client,
                &format!(
                    "SELECT {SHARE_COLUMNS} WHERE s.id = \
                     (SELECT share_id FROM blocks WHERE hash = $1) AND s.hash = $1"
                ),
                &[&hash],
            )?;
            if let Some(share) = linked.into_iter().next() {
                return Ok(Some(share));
            }
            let scanned = collect_shares(
                &mut c.client,
                &format!("SELECT {SHARE_COLUMNS} WHERE s.hash = $1 ORDER BY s.id LIMIT 1"),
                &[&hash],
            )?;
            Ok(scanned.into_iter().next())
        })
    }

    fn shares(&mut self, range: &ShareRange) -> Result<Vec<StoredShare>, LedgerError> {
        self.with(|c, _| match *range {
            ShareRange::Window {
                last_id,
                difficulty,
            } => window(&mut c.client, last_id, difficulty),
            ShareRange::Time {
                from_ms,
                to_ms,
                limit,
            } => collect_shares(
                &mut c.client,
                &format!(
                    "SELECT {SHARE_COLUMNS} WHERE s.time_ms >= $1 AND s.time_ms < $2 \
                     ORDER BY s.id LIMIT $3"
                ),
                &[&bound_i64(from_ms), &bound_i64(to_ms), &limit_i64(limit)],
            ),
            ShareRange::Ids {
                from_id,
                to_id,
                limit,
            } => collect_shares(
                &mut c.client,
                &format!(
                    "SELECT {SHARE_COLUMNS} WHERE s.id >= $1 AND s.id <= $2 ORDER BY s.id LIMIT $3"
                ),
                &[&bound_i64(from_id), &bound_i64(to_id), &limit_i64(limit)],
            ),
        })
    }

    fn last_share_id(&mut self) -> Result<u64, LedgerError> {
        self.with(|c, _| {
            let row = c
                .client
                .query_one("SELECT COALESCE(MAX(id), 0) FROM shares", &[])
                .map_err(postgres_error)?;
            to_u64(get(&row, 0)?, "share id")
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
        self.with(|c, _| {
            c.client
                .execute(
                    "DELETE FROM shares WHERE id < $2 AND time_ms < $1",
                    &[&bound_i64(before_ms), &bound_i64(keep_from_id)],
                )
                .map_err(postgres_error)
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
