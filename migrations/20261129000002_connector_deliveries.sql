-- Webhook deliveries of connectors (Shopify, WooCommerce, WordPress), kept as received (the raw
-- body, exactly) once their signature is verified, until connector-sync applies them.
--
-- Replays are refused twice over: by the provider's delivery id, and by the SHA-256 of the
-- signed body (the delivery id header is not signed: a captured body sent again under a new id
-- is still the same body). `queued_at` says the hand-off to the sync queue happened; a
-- redelivery of one that was recorded but not queued is queued then.

CREATE TABLE connector_deliveries (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind ~ '^[a-z]{1,20}$'),
    delivery_id text NOT NULL CHECK (char_length(delivery_id) BETWEEN 1 AND 200),
    body_sha256 bytea NOT NULL CHECK (octet_length(body_sha256) = 32),
    topic       text CHECK (char_length(topic) <= 200),
    body        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    queued_at   timestamptz,
    applied_at  timestamptz,
    error       text,
    CONSTRAINT connector_deliveries_delivery_key UNIQUE (tenant_id, kind, delivery_id),
    CONSTRAINT connector_deliveries_body_key UNIQUE (tenant_id, kind, body_sha256)
);
CREATE INDEX connector_deliveries_pending_idx ON connector_deliveries (received_at) WHERE applied_at IS NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON connector_deliveries TO portal_app;
ALTER TABLE connector_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE connector_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY connector_deliveries_tenant ON connector_deliveries TO portal_app
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
DO $$ BEGIN
    EXECUTE format('CREATE POLICY connector_deliveries_owner ON connector_deliveries TO %I USING (true) WITH CHECK (true)',
                   current_user);
END $$;
