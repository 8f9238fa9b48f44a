-- Deals, after review (these changes were first made in 20261127000002 itself, which had already
-- landed: that file is back as it landed, and they are made here). Written to converge from
-- either state.
--
-- Amounts are capped at 10^13 minor units, so the board's sums cannot overflow a bigint.
ALTER TABLE crm_deals DROP CONSTRAINT IF EXISTS crm_deals_amount_minor_check;
ALTER TABLE crm_deals ADD CONSTRAINT crm_deals_amount_minor_check CHECK (amount_minor BETWEEN 0 AND 10000000000000);

-- A column's ranks are distinct (moves take the stage's lock; this is the backstop).
DROP INDEX IF EXISTS crm_deals_board_idx;
CREATE UNIQUE INDEX crm_deals_board_idx ON crm_deals (stage_id, rank);
