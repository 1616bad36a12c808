-- The share ledger, version 2 (PostgreSQL): payouts in the coinbase (`coinbase_payouts = true`).
--
-- A block mined on work whose coinbase paid the PPLNS window directly records what it paid:
-- the window (ending at share S), the terms of the split, the users paid and the pool's rest,
-- as one JSON object (src/ledger/columns.rs, `coinbase_payouts_json`; text, so it reads back
-- byte for byte: `coinbase_payouts::jsonb` for queries), NULL for every other block. Its
-- settlement (scheme `coinbase-pplns`) reads it, after a restart too.
ALTER TABLE blocks ADD COLUMN coinbase_payouts text;
