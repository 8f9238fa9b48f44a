-- Connectors: a tenant's credentials and settings for one kind of outside system (Shopify,
-- WooCommerce, WordPress, Zoho, SendGrid, Mailgun, LinkedIn, X, Facebook, OpenAI-compatible).
--
-- Secret fields are stored sealed (`secret`: AES-256-GCM under a per-secret data key, wrapped by
-- KMS or the local key: shared::domain::envelope), bound to (tenant, kind) by the associated
-- data; `masked` is what the API shows of them. `webhook_key` is the unguessable {tenant_key} of
-- the connector's webhook URL.

CREATE TABLE connectors (
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind ~ '^[a-z]{1,20}$'),
    settings         jsonb NOT NULL DEFAULT '{}',
    secret           bytea NOT NULL,
    masked           jsonb NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'untested' CHECK (status IN ('untested', 'connected', 'error')),
    last_error       text CHECK (char_length(last_error) <= 1000),
    last_tested_at   timestamptz,
    last_sync_at     timestamptz,
    last_sync_status text,
    webhook_key      text NOT NULL CHECK (webhook_key ~ '^[a-f0-9]{32}$'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    version          integer NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, kind),
    CONSTRAINT connectors_webhook_key UNIQUE (webhook_key)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON connectors TO portal_app;
ALTER TABLE connectors ENABLE ROW LEVEL SECURITY;
ALTER TABLE connectors FORCE ROW LEVEL SECURITY;
CREATE POLICY connectors_tenant ON connectors TO portal_app
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
DO $$ BEGIN
    EXECUTE format('CREATE POLICY connectors_owner ON connectors TO %I USING (true) WITH CHECK (true)', current_user);
END $$;

-- connector-webhook knows only the kind and the key in the URL: it finds the tenant and the
-- sealed secret (to verify the signature) here, before any tenant is set.
CREATE FUNCTION app_connector_for_webhook(p_kind text, p_key text)
RETURNS TABLE (tenant_id uuid, secret bytea, settings jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT c.tenant_id, c.secret, c.settings FROM connectors c
     WHERE c.kind = p_kind AND c.webhook_key = p_key
$$;
REVOKE ALL ON FUNCTION app_connector_for_webhook(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_connector_for_webhook(text, text) TO portal_app;
