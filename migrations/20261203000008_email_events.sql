-- Email marketing, part four: the providers' event webhooks (email-events).
--
-- Neither provider's signature expires by itself, and Mailgun's does not even cover the event:
-- a captured delivery could be posted again. email-events refuses a delivery whose timestamp is
-- more than its tolerance away from now, and one whose replay key it has seen: SendGrid's is
-- what the signature covers (timestamp + raw body, so a re-encoded or malleated signature of the
-- same delivery is still a replay), Mailgun's the delivery's random token. Only the SHA-256 of
-- the key is kept (nothing personal).
--
-- A delivery is accepted only within the tolerance of its own timestamp, so a key seen at
-- `seen_at` can only come back fresh until `seen_at` + 2 x tolerance: older rows are pruned by
-- the insert that follows them (same tenant and provider), and the table stays small.
CREATE TABLE marketing_webhook_replays (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    provider   text NOT NULL CHECK (provider IN ('sendgrid', 'mailgun')),
    key_sha256 bytea NOT NULL CHECK (octet_length(key_sha256) = 32),
    seen_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, provider, key_sha256)
);
CREATE INDEX marketing_webhook_replays_seen_idx ON marketing_webhook_replays (tenant_id, provider, seen_at);

-- The soft-bounce threshold counts an address's soft bounces across the tenant's campaigns:
-- from the address to its recipient rows, then to their bounce events.
CREATE INDEX marketing_campaign_recipients_email_idx ON marketing_campaign_recipients (tenant_id, email);
CREATE INDEX marketing_email_events_soft_bounce_idx ON marketing_email_events (tenant_id, recipient_id, occurred_at)
    WHERE kind = 'bounce' AND bounce_kind = 'soft';

GRANT SELECT, INSERT, UPDATE, DELETE ON marketing_webhook_replays TO portal_app;
ALTER TABLE marketing_webhook_replays ENABLE ROW LEVEL SECURITY;
ALTER TABLE marketing_webhook_replays FORCE ROW LEVEL SECURITY;
CREATE POLICY marketing_webhook_replays_tenant ON marketing_webhook_replays TO portal_app
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
DO $$ BEGIN
    EXECUTE format('CREATE POLICY marketing_webhook_replays_owner ON marketing_webhook_replays TO %I USING (true) '
                   'WITH CHECK (true)', current_user);
END $$;
