-- Raw webhook bodies hold customers' personal data (names, addresses, emails): they are kept
-- only as long as they are useful. Once a delivery is applied (or set aside with its error), its
-- body is removed after 30 days (`body` null, `pruned_at` set); the row — its delivery id and the
-- body's SHA-256 — stays 180 days, so the provider's late retries are still recognised as
-- duplicates, and is then deleted. connector-sync's hourly run prunes
-- (shared::services::connectors::webhooks::prune_deliveries).
ALTER TABLE connector_deliveries ALTER COLUMN body DROP NOT NULL;
ALTER TABLE connector_deliveries ADD COLUMN pruned_at timestamptz;
ALTER TABLE connector_deliveries ADD CONSTRAINT connector_deliveries_body_kept
    CHECK (body IS NOT NULL OR (applied_at IS NOT NULL AND pruned_at IS NOT NULL));
CREATE INDEX connector_deliveries_applied_idx ON connector_deliveries (applied_at) WHERE applied_at IS NOT NULL;

-- Across tenants, for the scheduled run: at most p_limit rows of each step per call.
CREATE FUNCTION app_prune_connector_deliveries(p_body_before timestamptz, p_row_before timestamptz, p_limit integer)
RETURNS TABLE (bodies_removed bigint, rows_deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE b bigint; r bigint;
BEGIN
    WITH due AS (
        SELECT id FROM connector_deliveries
        WHERE applied_at < p_body_before AND body IS NOT NULL
        ORDER BY applied_at LIMIT p_limit FOR UPDATE SKIP LOCKED
    )
    UPDATE connector_deliveries d SET body = NULL, pruned_at = now() FROM due WHERE d.id = due.id;
    GET DIAGNOSTICS b = ROW_COUNT;
    WITH old AS (
        SELECT id FROM connector_deliveries
        WHERE applied_at < p_row_before
        ORDER BY applied_at LIMIT p_limit FOR UPDATE SKIP LOCKED
    )
    DELETE FROM connector_deliveries d USING old WHERE d.id = old.id;
    GET DIAGNOSTICS r = ROW_COUNT;
    RETURN QUERY SELECT b, r;
END
$$;
REVOKE ALL ON FUNCTION app_prune_connector_deliveries(timestamptz, timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_prune_connector_deliveries(timestamptz, timestamptz, integer) TO portal_app;
