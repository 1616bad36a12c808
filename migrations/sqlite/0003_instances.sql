-- The share ledger, version 3 (SQLite): the pool instances sharing this ledger (issue 18).
--
-- One row per server_id in use (the extranonce namespace, the first two bytes of every
-- prefix an instance hands out): the instance holding it (a random number drawn at its
-- start), its host and data directory, where it listens, when it claimed the row and its last
-- heartbeat. An instance claims its row before it serves miners and is refused while a live
-- one holds it (src/ledger/instances.rs); it releases the row when it stops cleanly; a row
-- whose heartbeat is older than the lease is taken over.
CREATE TABLE instances (
    server_id INTEGER PRIMARY KEY CHECK (server_id BETWEEN 0 AND 65535),
    instance INTEGER NOT NULL,
    host TEXT NOT NULL,
    data_dir TEXT NOT NULL,
    addresses TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL
);
