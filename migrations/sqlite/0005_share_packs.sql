-- The share ledger, version 5 (SQLite): a commit's shares in one row.
--
-- Each group commit writes its shares as ONE row of `share_packs` (src/ledger/share_pack.rs
-- has the layout: every field of a share, ids as deltas, each distinct target once) instead of
-- a row per share: one insert per commit instead of one per share, and 52 bytes a share at
-- 4,096 a commit instead of 115 (154 when every share is a commit of its own; BENCHMARKS.md,
-- "Packed shares in SQLite"). The program reads, exports, windows and prunes them as
-- it read the rows (`ledger export` prints one line per share as before); a pack cut by
-- pruning is written again without its pruned shares.
--
-- Share ids keep their meaning (strictly increasing in commit order, never reused):
-- `share_sequence` holds the last id handed out, carried over from the `shares` table's
-- AUTOINCREMENT. The program then moves the rows of `shares` into packs and drops it (the
-- second half of this migration, in the same transaction: src/ledger/sqlite.rs).
CREATE TABLE share_packs (
    first_id INTEGER PRIMARY KEY,   -- the first share's id
    last_id INTEGER NOT NULL,       -- the last share's id
    min_time_ms INTEGER NOT NULL,   -- the earliest share's time
    max_time_ms INTEGER NOT NULL,   -- the latest share's time
    count INTEGER NOT NULL,         -- how many shares
    shares BLOB NOT NULL            -- the packed shares
);
CREATE INDEX share_packs_max_time ON share_packs (max_time_ms);
CREATE INDEX share_packs_min_time ON share_packs (min_time_ms);

CREATE TABLE share_sequence (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    last_id INTEGER NOT NULL
);
INSERT INTO share_sequence (one, last_id) VALUES (1, MAX(
    COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'shares'), 0),
    COALESCE((SELECT MAX(id) FROM shares), 0)
));
