-- The share ledger, version 7 (SQLite): the payout terms a block was found under.
--
-- An operator may change the fee, the PPLNS window or the solo accounts and restart; a block
-- found before must still be settled, and recomputed by anyone, by the terms its miners mined
-- under. Each block found is written with them: one JSON object, `{scheme, window_multiple,
-- fee_percent, solo_users}` (src/ledger/columns.rs, `payout_terms_json`). NULL for blocks
-- written before this version, or by an older program still running on this schema: those
-- are settled by the configuration of the day, as before.
ALTER TABLE blocks ADD COLUMN payout_terms TEXT;
