-- The share ledger, version 4 (SQLite): coinbase maturity and reorganisations.
--
-- A block's payouts are immature while it is in the best chain with fewer than 100
-- confirmations (status `accepted`), spendable once it has them (`mature`), and worth nothing
-- while a reorganisation has put it out of the best chain (`orphaned`; `accepted` again if it
-- comes back): src/payout/maturity.rs. SQLite cannot change a CHECK constraint in place, so
-- `blocks` is copied into a table with the new one (same columns, same `seq` values).
--
-- Balances stop being a running sum (which a reorganisation would leave wrong): `balances` is
-- now a view of the payouts by their block's status, so it is right by construction, and the
-- queries operators ran on the table keep working: `earned_sat` is what the blocks still in
-- the best chain paid the user, `immature_sat` the part of it not spendable yet (blocks with
-- fewer than 100 confirmations); orphaned blocks count in neither.
DROP TABLE balances;

CREATE TABLE blocks_v4 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL UNIQUE,
    height INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    reward_sat INTEGER NOT NULL,
    bits INTEGER NOT NULL,
    user TEXT NOT NULL,
    worker TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'accepted', 'mature', 'orphaned', 'rejected')),
    reason TEXT,
    share_id INTEGER,          -- the finding share (NULL if it was not in the ledger)
    coinbase_payouts TEXT
);
INSERT INTO blocks_v4 (seq, hash, height, time_ms, reward_sat, bits, user, worker, status,
                       reason, share_id, coinbase_payouts)
    SELECT seq, hash, height, time_ms, reward_sat, bits, user, worker, status, reason, share_id,
           coinbase_payouts
    FROM blocks;
DROP TABLE blocks;
ALTER TABLE blocks_v4 RENAME TO blocks;
-- The blocks still watched for their place in the chain (`Ledger::blocks_to_confirm`).
CREATE INDEX blocks_unsettled_status ON blocks (status) WHERE status IN ('accepted', 'orphaned');

CREATE VIEW balances AS
    SELECT p.user AS user,
           SUM(CASE WHEN b.status IN ('accepted', 'mature') THEN p.amount_sat ELSE 0 END) AS earned_sat,
           SUM(CASE WHEN b.status = 'accepted' THEN p.amount_sat ELSE 0 END) AS immature_sat
    FROM payouts p
    JOIN payout_computations c ON c.block_hash = p.block_hash
    JOIN blocks b ON b.hash = p.block_hash
    WHERE c.scheme NOT IN ('coinbase', 'coinbase-pplns')
    GROUP BY p.user;
