-- Email marketing, part three: the campaign sender's pacing.
--
-- A batch handed to the send queue is marked `queued_until` (a few minutes): the schedule does
-- not queue it again while its message is on the way, and does once that time has passed (a
-- message lost on the way is sent again; a claim is idempotent besides).
ALTER TABLE marketing_campaign_batches ADD COLUMN queued_until timestamptz;

-- One pace per tenant and provider: when its next batch may go (`next_at`, advanced by each
-- batch's recipients over the configured rate, and by the provider's own Retry-After), and how
-- many account-level refusals came in a row (a bad key, a suspended account: at a threshold
-- the campaign pauses with the provider's reason).
CREATE TABLE marketing_send_pace (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    provider    text NOT NULL CHECK (provider IN ('sendgrid', 'mailgun')),
    next_at     timestamptz NOT NULL DEFAULT now(),
    refusals    integer NOT NULL DEFAULT 0 CHECK (refusals >= 0),
    last_reason text CHECK (char_length(last_reason) <= 1000),
    PRIMARY KEY (tenant_id, provider)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON marketing_send_pace TO portal_app;
ALTER TABLE marketing_send_pace ENABLE ROW LEVEL SECURITY;
ALTER TABLE marketing_send_pace FORCE ROW LEVEL SECURITY;
CREATE POLICY marketing_send_pace_tenant ON marketing_send_pace TO portal_app
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
DO $$ BEGIN
    EXECUTE format('CREATE POLICY marketing_send_pace_owner ON marketing_send_pace TO %I USING (true) WITH CHECK (true)',
                   current_user);
END $$;

-- Batches due to send, taken for the queue: pending, their time come, their campaign sending,
-- not already on the way. Marked on the way for `p_hold` (the function runs as the owner: the
-- schedule looks across tenants; each batch is then claimed under its tenant).
CREATE FUNCTION app_marketing_take_due_batches(p_now timestamptz, p_limit integer, p_hold interval)
RETURNS TABLE (tenant_id uuid, batch_id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH due AS (
        SELECT b.id FROM marketing_campaign_batches b
        JOIN marketing_campaigns c ON c.id = b.campaign_id
        WHERE b.status = 'pending' AND b.not_before <= p_now AND c.status = 'sending'
          AND (b.queued_until IS NULL OR b.queued_until <= p_now)
        ORDER BY b.not_before, b.campaign_id, b.seq
        LIMIT p_limit
        FOR UPDATE OF b SKIP LOCKED
    )
    UPDATE marketing_campaign_batches b SET queued_until = p_now + p_hold
    FROM due WHERE b.id = due.id
    RETURNING b.tenant_id, b.id
$$;
-- Batches whose outcome is unknown (a crash between the provider's answer and our record),
-- for the schedule to settle from the provider's events.
CREATE FUNCTION app_marketing_unknown_batches(p_limit integer)
RETURNS TABLE (tenant_id uuid, batch_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT b.tenant_id, b.id FROM marketing_campaign_batches b
    WHERE b.status = 'unknown' ORDER BY b.updated_at, b.id LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION app_marketing_take_due_batches(timestamptz, integer, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_marketing_unknown_batches(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_marketing_take_due_batches(timestamptz, integer, interval) TO portal_app;
GRANT EXECUTE ON FUNCTION app_marketing_unknown_batches(integer) TO portal_app;
