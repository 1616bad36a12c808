-- The share ledger, version 9 (PostgreSQL): each instance's own lease in the registry.
--
-- A holder of a server_id is dead once silent for longer than three of its own heartbeat
-- intervals; the claimant used its own interval to judge, so a newcomer beating every 5 s
-- took the row of a live instance beating every 30 s between two of its beats, and the
-- healthy one was then refused and drained. Each claim now records its lease; a row written
-- by an older program has none (NULL) and is judged by the claimant's, as before.
ALTER TABLE instances ADD COLUMN lease_ms bigint;
