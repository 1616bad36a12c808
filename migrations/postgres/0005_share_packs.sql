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
-- over from the rows' identity. The rows' table is renamed `shares_v4`; the program moves its
-- rows into packs and drops it (the second half of this migration, in the same transaction:
-- src/ledger/postgres.rs), and `shares` becomes a view of the packs, a row per share (below).
ALTER TABLE shares RENAME TO shares_v4;

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
    COALESCE((SELECT MAX(id) FROM shares_v4), 0),
    COALESCE((SELECT last_value FROM shares_id_seq WHERE is_called), 0)
);

-- Operators' own queries: `shares` is now a read-only view with a row per share, decoded from
-- the packs in SQL (layout version 1 of src/ledger/share_pack.rs: CompactSize integers, the
-- difficulty as little-endian IEEE 754 bits, rebuilt exactly). Channel and job ids are their
-- u32 values; a connection id of 2^63 and up (the product API's endpoint miners) keeps its
-- bits, as before. Slower than the program's own reads (`ledger export`), which never use it.

-- A CompactSize integer of `pack` at byte `at` (0-based): its value (same bits as u64) and the
-- byte after it.
CREATE FUNCTION share_pack_varint(pack bytea, at integer, OUT value bigint, OUT next integer)
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    first integer := get_byte(pack, at);
    width integer;
BEGIN
    IF first < 253 THEN
        value := first;
        next := at + 1;
        RETURN;
    END IF;
    width := CASE first WHEN 253 THEN 2 WHEN 254 THEN 4 ELSE 8 END;
    value := 0;
    FOR i IN 0 .. width - 1 LOOP
        value := value | (get_byte(pack, at + 1 + i)::bigint << (8 * i));
    END LOOP;
    next := at + 1 + width;
END
$$;

-- Eight little-endian bytes of `pack` at `at` as the float8 they are the bits of.
CREATE FUNCTION share_pack_float8(pack bytea, at integer) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    bits bigint := 0;
    exponent integer;
    mantissa bigint;
    magnitude double precision;
BEGIN
    FOR i IN 0 .. 7 LOOP
        bits := bits | (get_byte(pack, at + i)::bigint << (8 * i));
    END LOOP;
    exponent := ((bits >> 52) & 2047)::integer;
    mantissa := bits & 4503599627370495;  -- 2^52 - 1
    IF exponent = 2047 THEN
        IF mantissa <> 0 THEN
            RETURN 'NaN'::double precision;
        END IF;
        magnitude := 'Infinity'::double precision;
    ELSIF exponent = 0 THEN
        -- Subnormal: mantissa x 2^-1074, in two exact steps.
        magnitude := mantissa::double precision * power(2::double precision, -537)
            * power(2::double precision, -537);
    ELSE
        magnitude := (mantissa + 4503599627370496)::double precision
            * power(2::double precision, exponent - 1075);
    END IF;
    IF bits < 0 THEN
        RETURN -magnitude;
    END IF;
    RETURN magnitude;
END
$$;

-- The shares of one pack, in id order.
CREATE FUNCTION share_pack_rows(first_id bigint, min_time_ms bigint, pack bytea)
RETURNS TABLE (id bigint, time_ms bigint, worker_id bigint, connection_id bigint,
               channel_id bigint, job_id bigint, target bytea, difficulty double precision,
               hash bytea)
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    at integer;
    share_count bigint;
    target_count bigint;
    targets_at integer;
    target_index bigint;
    v bigint;
BEGIN
    IF get_byte(pack, 0) <> 1 THEN
        RAISE EXCEPTION 'share pack version %, not 1', get_byte(pack, 0);
    END IF;
    SELECT * INTO share_count, at FROM share_pack_varint(pack, 1);
    SELECT * INTO target_count, at FROM share_pack_varint(pack, at);
    targets_at := at;
    at := at + 32 * target_count::integer;
    id := first_id;
    FOR n IN 1 .. share_count LOOP
        SELECT * INTO v, at FROM share_pack_varint(pack, at);
        id := id + v;
        SELECT * INTO v, at FROM share_pack_varint(pack, at);
        time_ms := min_time_ms + v;
        SELECT * INTO worker_id, at FROM share_pack_varint(pack, at);
        SELECT * INTO connection_id, at FROM share_pack_varint(pack, at);
        SELECT * INTO channel_id, at FROM share_pack_varint(pack, at);
        SELECT * INTO job_id, at FROM share_pack_varint(pack, at);
        SELECT * INTO target_index, at FROM share_pack_varint(pack, at);
        target := substring(pack FROM targets_at + 32 * target_index::integer + 1 FOR 32);
        difficulty := share_pack_float8(pack, at);
        hash := substring(pack FROM at + 9 FOR 32);
        at := at + 40;
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE VIEW shares AS
    SELECT r.id, r.time_ms, r.worker_id, r.connection_id, r.channel_id, r.job_id, r.target,
           r.difficulty, r.hash
    FROM share_packs p, LATERAL share_pack_rows(p.first_id, p.min_time_ms, p.shares) r;
