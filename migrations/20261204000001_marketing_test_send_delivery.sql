-- Test sends are sent by campaign-sender's schedule, one at a time, never twice:
-- - taken across tenants (queued -> sending, `claimed_at`) in their own statement, then sent
--   under their tenant and the outcome recorded (sent, failed with the reason, or queued again
--   after a provider's `Retry-After` in `not_before`);
-- - one still `sending` 15 minutes after its claim (the sender stopped between the provider's
--   answer and the record) fails with that reason rather than going out a second time.
ALTER TABLE marketing_test_sends
    ADD COLUMN claimed_at timestamptz,
    ADD COLUMN not_before timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT marketing_test_sends_claimed CHECK (status <> 'sending' OR claimed_at IS NOT NULL);
DROP INDEX marketing_test_sends_queued_idx;
CREATE INDEX marketing_test_sends_queued_idx ON marketing_test_sends (not_before) WHERE status = 'queued';
CREATE INDEX marketing_test_sends_sending_idx ON marketing_test_sends (claimed_at) WHERE status = 'sending';

CREATE FUNCTION app_marketing_take_test_send(p_now timestamptz)
RETURNS TABLE (tenant_id uuid, id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH due AS (
        SELECT t.id FROM marketing_test_sends t
        WHERE t.status = 'queued' AND t.not_before <= p_now
        ORDER BY t.not_before, t.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE marketing_test_sends t SET status = 'sending', claimed_at = p_now
    FROM due WHERE t.id = due.id
    RETURNING t.tenant_id, t.id
$$;

CREATE FUNCTION app_marketing_fail_stale_test_sends(p_now timestamptz)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH failed AS (
        UPDATE marketing_test_sends SET status = 'failed',
            error = 'the sender stopped before it recorded the provider''s answer: the test may or may not have arrived'
        WHERE status = 'sending' AND claimed_at < p_now - interval '15 minutes'
        RETURNING 1
    )
    SELECT count(*)::integer FROM failed
$$;

REVOKE ALL ON FUNCTION app_marketing_take_test_send(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_marketing_fail_stale_test_sends(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_marketing_take_test_send(timestamptz) TO portal_app;
GRANT EXECUTE ON FUNCTION app_marketing_fail_stale_test_sends(timestamptz) TO portal_app;
