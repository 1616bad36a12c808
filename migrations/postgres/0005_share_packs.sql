-- The share ledger, version 5 (PostgreSQL): a commit's shares in one row, as SQLite's schema 5.
--
-- Each group commit writes its shares as ONE row of `share_packs` (src/ledger/share_pack.rs
-- has the layout: every field of a share, ids as deltas, each distinct target once) instead of
-- a row per share: one heap tuple and two index entries per commit instead of a tuple and two
-- index entries per share (PostgreSQL's own processes spent about 4 us of CPU a share on the
-- rows, on the pool's cores; BENCHMARKS.md). The program reads, exports, windows and prunes
-- packs as it read the rows; a pack cut by pruning is written again without its pruned shares.
-- The packs are stored out of line without compression (`STORAGE EXTERNAL`): the layout is
-- already compact, and compressing it would cost the server CPU per commit for little.
--
-- Share ids keep their meaning (increasing in commit order across instances, never reused):
-- `share_sequence` holds the last id handed out (under the appends' advisory lock), carried
-- over from the `shares` table's identity. The program then moves the rows of `shares` into
-- packs and drops it (the second half of this migration, in the same transaction:
-- src/ledger/postgres.rs).
CREATE TABLE share_packs (
    first_id bigint PRIMARY KEY,   -- the first share's id
    last_id bigint NOT NULL,       -- the last share's id
    min_time_ms bigint NOT NULL,   -- the earliest share's time
    max_time_ms bigint NOT NULL,   -- the latest share's time
    count bigint NOT NULL,         -- how many shares
    shares bytea NOT NULL          -- the packed shares
);
ALTER TABLE share_packs ALTER COLUMN shares SET STORAGE EXTERNAL;
CREATE INDEX share_packs_max_time ON share_packs (max_time_ms);
CREATE INDEX share_packs_min_time ON share_packs (min_time_ms);

CREATE TABLE share_sequence (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_id bigint NOT NULL
);
INSERT INTO share_sequence (one, last_id) SELECT true, GREATEST(
    COALESCE((SELECT MAX(id) FROM shares), 0),
    COALESCE((SELECT last_value FROM shares_id_seq WHERE is_called), 0)
);
