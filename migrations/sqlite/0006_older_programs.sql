-- The share ledger, version 6 (SQLite): which older programs may run on a newer schema.
--
-- A pool upgraded and then taken back to its older program (a rollback) meets a schema newer
-- than its own; until this version it refused it. From now on each version says, here, the
-- oldest schema a program may know and still run on a database it was applied to: a migration
-- that only adds (a table, a column with a default, a function) lets older programs go on; one
-- that changes what they read or write names itself, and they refuse it as before. NULL, in
-- the rows of the versions written before this column: only programs that know that version
-- (src/ledger/schema.rs; PostgreSQL's version 7 is the same, for instances upgraded one by one).
ALTER TABLE schema_version ADD COLUMN oldest_program_schema INTEGER;
