-- connector-sync's memory: per tenant, connector kind and resource, the watermark of the last
-- complete pass (the newest `updated_at` seen) and, while a pass runs, where it goes on (the next
-- page) and the newest `updated_at` so far. Each page's records and this state commit together:
-- a pass that fails resumes at its next page, nothing applied twice (the mirrors are newest-wins).
CREATE TABLE connector_sync_state (
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind              text NOT NULL,
    resource          text NOT NULL CHECK (resource IN ('products', 'orders', 'customers')),
    watermark         timestamptz,
    next_page         text,
    pass_newest       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, resource)
);

-- The shop's currency (products do not carry it), read by each pass, used by webhooks too.
ALTER TABLE connectors ADD COLUMN shop_currency text CHECK (shop_currency ~ '^[A-Z]{3}$');

-- Every sync run: what started it, what it did, how it ended.
CREATE TABLE connector_sync_runs (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    trigger     text NOT NULL CHECK (trigger IN ('manual', 'schedule')),
    status      text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    counts      jsonb NOT NULL DEFAULT '{}',
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX connector_sync_runs_idx ON connector_sync_runs (tenant_id, kind, created_at DESC);

GRANT SELECT, INSERT, UPDATE, DELETE ON connector_sync_state, connector_sync_runs TO portal_app;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['connector_sync_state', 'connector_sync_runs'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I TO portal_app USING (tenant_id = app_current_tenant()) '
                       'WITH CHECK (tenant_id = app_current_tenant())', t || '_tenant', t);
        EXECUTE format('CREATE POLICY %I ON %I TO %I USING (true) WITH CHECK (true)', t || '_owner', t, current_user);
    END LOOP;
END
$$;

-- The schedule's list: every tenant's shop connectors (ids only; each sync then runs under its
-- tenant).
CREATE FUNCTION app_shop_connectors()
RETURNS TABLE (tenant_id uuid, kind text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT c.tenant_id, c.kind FROM connectors c WHERE c.kind IN ('shopify', 'woocommerce') ORDER BY 1, 2
$$;
REVOKE ALL ON FUNCTION app_shop_connectors() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_shop_connectors() TO portal_app;
