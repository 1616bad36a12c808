-- The share ledger, version 4 (PostgreSQL): coinbase maturity and reorganisations.
--
-- A block's payouts are immature while it is in the best chain with fewer than 100
-- confirmations (status `accepted`), spendable once it has them (`mature`), and worth nothing
-- while a reorganisation has put it out of the best chain (`orphaned`; `accepted` again if it
-- comes back): src/payout/maturity.rs.
--
-- Balances stop being a running sum (which a reorganisation would leave wrong): `balances` is
-- now a view of the payouts by their block's status, so it is right by construction, and the
-- queries operators ran on the table keep working: `earned_sat` is what the blocks still in
-- the best chain paid the user, `immature_sat` the part of it not spendable yet (blocks with
-- fewer than 100 confirmations); orphaned blocks count in neither.
ALTER TABLE blocks DROP CONSTRAINT blocks_status_check;
ALTER TABLE blocks ADD CONSTRAINT blocks_status_check
    CHECK (status IN ('pending', 'accepted', 'mature', 'orphaned', 'rejected'));
-- The blocks still watched for their place in the chain (`Ledger::blocks_to_confirm`).
CREATE INDEX blocks_unsettled_status ON blocks (status) WHERE status IN ('accepted', 'orphaned');

DROP TABLE balances;
CREATE VIEW balances AS
    SELECT p."user" AS "user",
           SUM(CASE WHEN b.status IN ('accepted', 'mature') THEN p.amount_sat ELSE 0 END)::bigint AS earned_sat,
           SUM(CASE WHEN b.status = 'accepted' THEN p.amount_sat ELSE 0 END)::bigint AS immature_sat
    FROM payouts p
    JOIN payout_computations c ON c.block_hash = p.block_hash
    JOIN blocks b ON b.hash = p.block_hash
    WHERE c.scheme NOT IN ('coinbase', 'coinbase-pplns')
    GROUP BY p."user";
