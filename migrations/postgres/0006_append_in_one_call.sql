-- The share ledger, version 6 (PostgreSQL): a commit of shares in one round trip.
--
-- Until version 5 the writer's usual commit (shares only) was seven round trips to the server:
-- BEGIN, the batch's number (`writer_batches`), the advisory lock that keeps share ids in
-- commit order across instances (an unprepared statement: two), the ids (`share_sequence`),
-- the pack, COMMIT. Each one woke the server's process and the writer's thread again, on the
-- pool's cores, and held the acknowledgements of the commit's shares a little longer
-- (BENCHMARKS.md, "PostgreSQL in one round trip"). This function does the same four statements, in the same order, inside the
-- implicit transaction of one call: the program sends it as one statement outside BEGIN and
-- waits for the server's ReadyForQuery, which follows the commit; the answer is the commit's
-- first share id. The program takes this way only when it knows every worker's id (a new
-- worker is added in the same transaction as its first shares, the old way).
--
-- A batch whose number is not past the writer's last one was committed before (a reply lost
-- with its connection): nothing is written again and the answer is NULL. The advisory lock's
-- key comes from the program (src/ledger/postgres.rs, SHARES_LOCK), which also takes it in
-- the commits that carry blocks or rejected counts (still a transaction of statements).
-- The pack's bytes hold the ids as deltas from the row's first_id, so they are made before
-- the ids are known.
CREATE FUNCTION append_share_pack(
    p_writer bigint,        -- the writer's random number
    p_batch bigint,         -- the batch's number in its writer's sequence
    p_lock bigint,          -- the shares' advisory lock
    p_min_time_ms bigint,   -- the earliest share's time
    p_max_time_ms bigint,   -- the latest share's time
    p_count bigint,         -- how many shares
    p_shares bytea          -- the packed shares
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
BEGIN
    INSERT INTO writer_batches (writer, last_batch, updated_ms)
    VALUES (p_writer, p_batch, (extract(epoch FROM now()) * 1000)::bigint)
    ON CONFLICT (writer) DO UPDATE
    SET last_batch = excluded.last_batch, updated_ms = excluded.updated_ms
    WHERE writer_batches.last_batch < excluded.last_batch;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(p_lock);
    UPDATE share_sequence SET last_id = last_id + p_count RETURNING last_id INTO v_last;
    INSERT INTO share_packs (first_id, last_id, min_time_ms, max_time_ms, count, shares)
    VALUES (v_last - p_count + 1, v_last, p_min_time_ms, p_max_time_ms, p_count, p_shares);
    RETURN v_last - p_count + 1;
END
$$;
