-- Email marketing, part one: the templates campaigns are written in, the saved CRM segments
-- their audiences are drawn from, and each tenant's suppression list (addresses that never
-- receive marketing again). Campaigns, recipients and provider events follow in their own
-- migration.

-- A template: subject, preheader, body (HTML or MJML) and an optional text part, with
-- variables (`{{ contact.first_name }}`) checked against the vocabulary when saved.
CREATE TABLE marketing_templates (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    subject     text NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 998),
    preheader   text CHECK (char_length(preheader) <= 500),
    format      text NOT NULL CHECK (format IN ('html', 'mjml')),
    body        text NOT NULL CHECK (char_length(body) <= 204800),
    text_body   text CHECK (char_length(text_body) <= 131072),
    created_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1,
    CONSTRAINT marketing_templates_tenant_id_key UNIQUE (tenant_id, id)
);
CREATE INDEX marketing_templates_list_idx ON marketing_templates (tenant_id, updated_at DESC, id DESC);

-- A segment: a named filter over the tenant's contacts (the contacts list's filters),
-- evaluated when it is counted and when a campaign starts, never frozen.
CREATE TABLE marketing_segments (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 1000),
    filter      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1,
    CONSTRAINT marketing_segments_tenant_id_key UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX marketing_segments_name_key ON marketing_segments (tenant_id, lower(name));
CREATE INDEX marketing_segments_list_idx ON marketing_segments (tenant_id, updated_at DESC, id DESC);

-- The suppression list: one row per address (lower case), with why. A suppressed address is
-- left out of every campaign's audience.
CREATE TABLE marketing_suppressions (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email       text NOT NULL CHECK (char_length(email) <= 254 AND email = lower(email)),
    reason      text NOT NULL CHECK (reason IN ('unsubscribed', 'hard_bounce', 'soft_bounce', 'complaint', 'manual')),
    detail      text CHECK (char_length(detail) <= 1000),
    created_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT marketing_suppressions_email_key UNIQUE (tenant_id, email)
);
CREATE INDEX marketing_suppressions_list_idx ON marketing_suppressions (tenant_id, created_at DESC, id DESC);

GRANT SELECT, INSERT, UPDATE, DELETE ON marketing_templates, marketing_segments, marketing_suppressions TO portal_app;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['marketing_templates', 'marketing_segments', 'marketing_suppressions'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I TO portal_app USING (tenant_id = app_current_tenant()) '
                       'WITH CHECK (tenant_id = app_current_tenant())', t || '_tenant', t);
        EXECUTE format('CREATE POLICY %I ON %I TO %I USING (true) WITH CHECK (true)', t || '_owner', t, current_user);
    END LOOP;
END
$$;
