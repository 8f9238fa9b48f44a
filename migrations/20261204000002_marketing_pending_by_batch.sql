-- A batch's recipients still to send are found by (tenant, batch) in one index: the claim and
-- the record of a batch (`where batch_id = $1 and status ...`, under the tenant's row-level
-- security) otherwise went through the tenant's whole pending set whenever the planner's
-- statistics lagged a freeze (a 100,000-recipient campaign's first batches read ~100,000 index
-- entries each). The emails-per-month usage still counts a tenant's pending rows from it.
DROP INDEX marketing_campaign_recipients_pending_idx;
CREATE INDEX marketing_campaign_recipients_pending_idx ON marketing_campaign_recipients (tenant_id, batch_id)
    WHERE status IN ('queued', 'sending', 'unknown');
