-- The share ledger, version 1 (SQLite). Applied once, in a transaction, by src/ledger/sqlite.rs;
-- schema_version (created by the program) records it. Never edit a released migration: add
-- 0002_*.sql.
--
-- Rows are kept compact (a pool writes millions of shares): user and worker are stored once in
-- `workers` and referenced by a small integer; integers are SQLite varints. Shares have no
-- index on their hash: hashes are random, so such an index takes an insert into a random page
-- per share, and with a commit per batch it rewrote most of the index each commit (1,000,000
-- shares appended in 12.7 s with it, 2.7 s without). The hash that is looked up is a block's:
-- `blocks.share_id` links a block to its finding share; any other hash is found by a scan.

-- Each (user, worker) pair once.
CREATE TABLE workers (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    worker TEXT NOT NULL,
    UNIQUE (user, worker)
);

-- Every accepted share. AUTOINCREMENT: an id is never reused, even after pruning the newest.
CREATE TABLE shares (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    worker_id INTEGER NOT NULL REFERENCES workers (id),
    connection_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    target BLOB NOT NULL,      -- 32 bytes, little-endian
    difficulty REAL NOT NULL,
    hash BLOB NOT NULL         -- 32 bytes, internal byte order
);
CREATE INDEX shares_time ON shares (time_ms);

-- Found blocks, in the order they were found (seq), with the node's verdict.
CREATE TABLE blocks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL UNIQUE,
    height INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    reward_sat INTEGER NOT NULL,
    bits INTEGER NOT NULL,
    user TEXT NOT NULL,
    worker TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
    reason TEXT,
    share_id INTEGER           -- the finding share (NULL if it was not in the ledger)
);

-- Rejected shares, counted (an append adds to the count).
CREATE TABLE rejected (
    user TEXT NOT NULL,
    worker TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (user, worker, reason)
) WITHOUT ROWID;

-- One payout computation per block: the primary key is what makes a block paid exactly once.
CREATE TABLE payout_computations (
    block_hash BLOB PRIMARY KEY,
    scheme TEXT NOT NULL,
    reward_sat INTEGER NOT NULL,
    fee_sat INTEGER NOT NULL,
    window_difficulty REAL NOT NULL,
    counted_difficulty REAL NOT NULL,
    first_share_id INTEGER NOT NULL,
    last_share_id INTEGER NOT NULL,
    computed_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- The payouts a computation produced, in its order (position).
CREATE TABLE payouts (
    block_hash BLOB NOT NULL REFERENCES payout_computations (block_hash),
    position INTEGER NOT NULL,
    user TEXT NOT NULL,
    amount_sat INTEGER NOT NULL,
    difficulty REAL NOT NULL,
    PRIMARY KEY (block_hash, position)
) WITHOUT ROWID;

-- What each user has earned (PPLNS and solo payouts; coinbase payouts move no balance),
-- updated in the transaction that records the payouts.
CREATE TABLE balances (
    user TEXT PRIMARY KEY,
    earned_sat INTEGER NOT NULL
) WITHOUT ROWID;

-- Per group-commit writer, the highest batch number it committed (written in the batch's own
-- transaction): a batch retried after a commit whose reply was lost is recognised and not
-- written twice (src/ledger/mod.rs, BatchSequence). One row per writer start.
CREATE TABLE writer_batches (
    writer bigint PRIMARY KEY,
    last_batch bigint NOT NULL,
    updated_ms bigint NOT NULL
);
