-- Email marketing, part two: campaigns, their frozen recipients, the batches the sender sends
-- them in, the provider events that come back, test sends, and the emails-per-month
-- entitlement.
--
-- Exactly once is a property of these tables, not of the sender's care:
-- - a campaign's audience is frozen once, at start, into one row per address
--   (`marketing_campaign_recipients`, UNIQUE (campaign_id, email)): no address can be in a
--   campaign twice, whatever retries happen;
-- - each queued recipient belongs to at most one batch; a batch is claimed (pending -> sending,
--   with a lease) by one sender at a time, handed to the provider once, and its outcome
--   recorded (accepted / failed). A batch still `sending` past its lease (a crash between the
--   provider's answer and our commit) becomes `unknown` and is never re-sent blindly: the
--   provider's events (which carry our recipient id) decide whether it was taken.
-- - provider events are deduplicated by the provider's event id, and stats are computed from
--   them, so order and repetition do not change the numbers.

-- A campaign: a template frozen at start, an audience (segments and/or tags), a sender identity,
-- an optional A/B subject test. Counters are not stored: they are computed from recipients.
CREATE TABLE marketing_campaigns (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name               text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    template_id        uuid,
    from_name          text NOT NULL CHECK (char_length(from_name) BETWEEN 1 AND 100),
    from_email         text NOT NULL CHECK (char_length(from_email) BETWEEN 3 AND 254),
    reply_to           text CHECK (char_length(reply_to) BETWEEN 3 AND 254),
    -- {"segment_ids": [uuid, ...], "tags": [text, ...]}: the union of both.
    audience           jsonb NOT NULL DEFAULT '{"segment_ids": [], "tags": []}',
    -- NULL: the email connector the tenant has (sendgrid first when both are).
    provider           text CHECK (provider IN ('sendgrid', 'mailgun')),
    status             text NOT NULL DEFAULT 'draft'
                       CHECK (status IN ('draft', 'scheduled', 'sending', 'paused', 'sent', 'cancelled', 'failed')),
    status_reason      text CHECK (char_length(status_reason) <= 1000),
    scheduled_at       timestamptz,
    started_at         timestamptz,
    finished_at        timestamptz,
    -- {"variants": [{"subject": ...}, ...], "share": 0.05-0.5, "metric": "opens"|"clicks",
    --  "wait_minutes": n}; NULL: no test.
    ab                 jsonb,
    -- The winning variant's letter, once chosen; `ab_decide_at` is when it is due.
    ab_winner          text CHECK (ab_winner ~ '^[a-e]$'),
    ab_decide_at       timestamptz,
    -- Recipients per batch, fixed at start (the A/B winner's batches use it too).
    batch_size         integer CHECK (batch_size BETWEEN 1 AND 1000),
    -- The template as it was at start: later edits of the template do not change a campaign
    -- in flight.
    snapshot_subject   text,
    snapshot_preheader text,
    snapshot_format    text CHECK (snapshot_format IN ('html', 'mjml')),
    snapshot_body      text,
    snapshot_text_body text,
    created_by         uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    version            integer NOT NULL DEFAULT 1,
    -- A campaign that started is hidden when deleted, not removed: its recipients are the
    -- month's usage and the target of the provider's late events.
    deleted_at         timestamptz,
    CONSTRAINT marketing_campaigns_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT marketing_campaigns_template_fk FOREIGN KEY (tenant_id, template_id)
        REFERENCES marketing_templates (tenant_id, id) ON DELETE SET NULL (template_id),
    CONSTRAINT marketing_campaigns_started_frozen CHECK (
        started_at IS NULL OR (snapshot_subject IS NOT NULL AND snapshot_format IS NOT NULL
                               AND snapshot_body IS NOT NULL AND batch_size IS NOT NULL)),
    CONSTRAINT marketing_campaigns_scheduled_at CHECK (status <> 'scheduled' OR scheduled_at IS NOT NULL)
);
CREATE INDEX marketing_campaigns_list_idx ON marketing_campaigns (tenant_id, updated_at DESC, id DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX marketing_campaigns_template_idx ON marketing_campaigns (tenant_id, template_id)
    WHERE template_id IS NOT NULL;
CREATE INDEX marketing_campaigns_due_idx ON marketing_campaigns (scheduled_at) WHERE status = 'scheduled';
CREATE INDEX marketing_campaigns_ab_due_idx ON marketing_campaigns (ab_decide_at)
    WHERE status = 'sending' AND ab IS NOT NULL AND ab_winner IS NULL;

-- A batch: up to 1,000 recipients of one variant, handed to the provider in one call.
-- pending -> sending (claimed, `lease_until`) -> accepted | failed | pending (retry later,
-- `not_before`) | unknown (the lease ran out: resolved from the provider's events);
-- pending -> cancelled (the campaign was cancelled).
CREATE TABLE marketing_campaign_batches (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    campaign_id       uuid NOT NULL,
    seq               integer NOT NULL CHECK (seq >= 0),
    -- NULL (no A/B test), a variant's letter, or 'winner'.
    variant           text CHECK (variant ~ '^[a-e]$' OR variant = 'winner'),
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'sending', 'accepted', 'unknown', 'failed', 'cancelled')),
    recipients        integer NOT NULL CHECK (recipients BETWEEN 1 AND 1000),
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    not_before        timestamptz NOT NULL DEFAULT now(),
    lease_until       timestamptz,
    provider          text NOT NULL CHECK (provider IN ('sendgrid', 'mailgun')),
    provider_batch_id text CHECK (char_length(provider_batch_id) <= 200),
    error             text CHECK (char_length(error) <= 1000),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT marketing_campaign_batches_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT marketing_campaign_batches_seq_key UNIQUE (campaign_id, seq),
    CONSTRAINT marketing_campaign_batches_campaign_fk FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES marketing_campaigns (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT marketing_campaign_batches_leased CHECK (status <> 'sending' OR lease_until IS NOT NULL)
);
CREATE INDEX marketing_campaign_batches_due_idx ON marketing_campaign_batches (not_before) WHERE status = 'pending';
CREATE INDEX marketing_campaign_batches_lease_idx ON marketing_campaign_batches (lease_until) WHERE status = 'sending';
CREATE INDEX marketing_campaign_batches_open_idx ON marketing_campaign_batches (campaign_id)
    WHERE status IN ('pending', 'sending', 'unknown');

-- A recipient: one address of a campaign's frozen audience. `id` is our message id: it goes to
-- the provider (SendGrid custom_args, Mailgun v: variables) and comes back on every event.
-- queued -> sending -> sent | failed | unknown (-> sent | queued); queued -> cancelled |
-- suppressed (suppressed since the freeze). Addresses suppressed at the freeze are recorded as
-- `suppressed` (so progress shows them) and never batched. An A/B campaign's held recipients
-- are queued with no variant and no batch until the winner is chosen.
-- Its tenant is pinned by the composite key to the campaign (which references the tenant): a
-- second foreign key to `tenants` would be one more check per row of a 100,000-row freeze.
CREATE TABLE marketing_campaign_recipients (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL,
    campaign_id         uuid NOT NULL,
    contact_id          uuid,
    email               text NOT NULL CHECK (char_length(email) <= 254 AND email = lower(email)),
    variant             text CHECK (variant ~ '^[a-e]$' OR variant = 'winner'),
    batch_id            uuid,
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'sending', 'sent', 'unknown', 'failed', 'suppressed', 'cancelled')),
    provider_message_id text CHECK (char_length(provider_message_id) <= 200),
    error               text CHECK (char_length(error) <= 1000),
    sent_at             timestamptz,
    -- Folded from provider events (the first of each kind): per-recipient status and unique
    -- counts. Totals come from marketing_email_events.
    delivered_at        timestamptz,
    opened_at           timestamptz,
    clicked_at          timestamptz,
    bounced_at          timestamptz,
    bounce_kind         text CHECK (bounce_kind IN ('hard', 'soft')),
    complained_at       timestamptz,
    unsubscribed_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT marketing_campaign_recipients_tenant_id_key UNIQUE (tenant_id, id),
    -- Never twice to one address in one campaign: a database fact.
    CONSTRAINT marketing_campaign_recipients_email_key UNIQUE (campaign_id, email),
    CONSTRAINT marketing_campaign_recipients_campaign_fk FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES marketing_campaigns (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT marketing_campaign_recipients_contact_fk FOREIGN KEY (tenant_id, contact_id)
        REFERENCES crm_contacts (tenant_id, id) ON DELETE SET NULL (contact_id),
    CONSTRAINT marketing_campaign_recipients_batch_fk FOREIGN KEY (tenant_id, batch_id)
        REFERENCES marketing_campaign_batches (tenant_id, id),
    CONSTRAINT marketing_campaign_recipients_sent CHECK (status <> 'sent' OR sent_at IS NOT NULL),
    CONSTRAINT marketing_campaign_recipients_bounce CHECK ((bounced_at IS NULL) = (bounce_kind IS NULL))
);
CREATE INDEX marketing_campaign_recipients_progress_idx ON marketing_campaign_recipients (campaign_id, status);
CREATE INDEX marketing_campaign_recipients_batch_idx ON marketing_campaign_recipients (batch_id)
    WHERE batch_id IS NOT NULL;
CREATE INDEX marketing_campaign_recipients_contact_idx ON marketing_campaign_recipients (tenant_id, contact_id)
    WHERE contact_id IS NOT NULL;
-- The emails-per-month usage: what was sent this month and what is still to go.
CREATE INDEX marketing_campaign_recipients_sent_idx ON marketing_campaign_recipients (tenant_id, sent_at)
    WHERE status = 'sent';
CREATE INDEX marketing_campaign_recipients_pending_idx ON marketing_campaign_recipients (tenant_id)
    WHERE status IN ('queued', 'sending', 'unknown');

-- The provider's events, one row per event, deduplicated by the provider's own id
-- (SendGrid `sg_event_id`, Mailgun's event id). Stats are computed from these rows.
-- (Its tenant, like a recipient's, is pinned by the composite keys.)
CREATE TABLE marketing_email_events (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    campaign_id       uuid NOT NULL,
    recipient_id      uuid NOT NULL,
    provider          text NOT NULL CHECK (provider IN ('sendgrid', 'mailgun')),
    provider_event_id text NOT NULL CHECK (char_length(provider_event_id) BETWEEN 1 AND 200),
    kind              text NOT NULL CHECK (kind IN ('processed', 'delivered', 'deferred', 'open', 'click',
                                                    'bounce', 'dropped', 'complaint', 'unsubscribe')),
    bounce_kind       text CHECK (bounce_kind IN ('hard', 'soft')),
    url               text CHECK (char_length(url) <= 2048),
    occurred_at       timestamptz NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT marketing_email_events_dedup_key UNIQUE (tenant_id, provider, provider_event_id),
    CONSTRAINT marketing_email_events_campaign_fk FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES marketing_campaigns (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT marketing_email_events_recipient_fk FOREIGN KEY (tenant_id, recipient_id)
        REFERENCES marketing_campaign_recipients (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT marketing_email_events_bounce CHECK ((kind = 'bounce') = (bounce_kind IS NOT NULL)),
    CONSTRAINT marketing_email_events_url CHECK (kind = 'click' OR url IS NULL)
);
CREATE INDEX marketing_email_events_stats_idx ON marketing_email_events (campaign_id, kind);
CREATE INDEX marketing_email_events_recipient_idx ON marketing_email_events (tenant_id, recipient_id);

-- A test send: the rendered message for one of the tenant's members, queued for the sender
-- (never in the campaign's recipients: a test never blocks or counts as the real send).
CREATE TABLE marketing_test_sends (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    campaign_id         uuid NOT NULL,
    email               text NOT NULL CHECK (char_length(email) <= 254 AND email = lower(email)),
    provider            text NOT NULL CHECK (provider IN ('sendgrid', 'mailgun')),
    from_name           text NOT NULL,
    from_email          text NOT NULL,
    reply_to            text,
    subject             text NOT NULL,
    preheader           text,
    html                text NOT NULL,
    text_body           text NOT NULL,
    status              text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
    provider_message_id text CHECK (char_length(provider_message_id) <= 200),
    error               text CHECK (char_length(error) <= 1000),
    requested_by        uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    CONSTRAINT marketing_test_sends_campaign_fk FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES marketing_campaigns (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX marketing_test_sends_queued_idx ON marketing_test_sends (created_at) WHERE status = 'queued';
CREATE INDEX marketing_test_sends_campaign_idx ON marketing_test_sends (tenant_id, campaign_id);

GRANT SELECT, INSERT, UPDATE, DELETE ON marketing_campaigns, marketing_campaign_batches,
    marketing_campaign_recipients, marketing_email_events, marketing_test_sends TO portal_app;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['marketing_campaigns', 'marketing_campaign_batches', 'marketing_campaign_recipients',
                             'marketing_email_events', 'marketing_test_sends'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I TO portal_app USING (tenant_id = app_current_tenant()) '
                       'WITH CHECK (tenant_id = app_current_tenant())', t || '_tenant', t);
        EXECUTE format('CREATE POLICY %I ON %I TO %I USING (true) WITH CHECK (true)', t || '_owner', t, current_user);
    END LOOP;
END
$$;

-- The emails-per-month usage source: this calendar month's (UTC) sent messages plus those still
-- to go (queued, sending, unknown: committed to the plan when the campaign started). Read
-- under the reader's row-level security (one row: the current tenant's).
CREATE VIEW marketing_emails_this_month WITH (security_invoker = true) AS
    SELECT r.tenant_id, count(*) AS emails
    FROM marketing_campaign_recipients r
    WHERE r.status IN ('queued', 'sending', 'unknown')
       OR (r.status = 'sent' AND r.sent_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
    GROUP BY r.tenant_id;
GRANT SELECT ON marketing_emails_this_month TO portal_app;

-- The plan entitlement (NULL: unlimited).
ALTER TABLE billing_plans ADD COLUMN emails_per_month bigint CHECK (emails_per_month >= 0);
UPDATE billing_plans SET emails_per_month = CASE code
    WHEN 'free' THEN 1000 WHEN 'starter' THEN 10000 WHEN 'growth' THEN 100000 WHEN 'scale' THEN 1000000 END;

-- The campaign sender's looks across tenants (ids only; each piece of work then runs under its
-- tenant): campaigns due to start, batches due to send, leases that ran out, A/B tests due to
-- be decided.
CREATE FUNCTION app_marketing_due_campaigns(p_now timestamptz, p_limit integer)
RETURNS TABLE (tenant_id uuid, campaign_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT c.tenant_id, c.id FROM marketing_campaigns c
    WHERE c.status = 'scheduled' AND c.scheduled_at <= p_now AND c.deleted_at IS NULL
    ORDER BY c.scheduled_at, c.id LIMIT p_limit
$$;
CREATE FUNCTION app_marketing_due_batches(p_now timestamptz, p_limit integer)
RETURNS TABLE (tenant_id uuid, batch_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT b.tenant_id, b.id FROM marketing_campaign_batches b
    JOIN marketing_campaigns c ON c.id = b.campaign_id
    WHERE b.status = 'pending' AND b.not_before <= p_now AND c.status = 'sending'
    ORDER BY b.not_before, b.campaign_id, b.seq LIMIT p_limit
$$;
CREATE FUNCTION app_marketing_expired_batches(p_now timestamptz, p_limit integer)
RETURNS TABLE (tenant_id uuid, batch_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT b.tenant_id, b.id FROM marketing_campaign_batches b
    WHERE b.status = 'sending' AND b.lease_until < p_now
    ORDER BY b.lease_until, b.id LIMIT p_limit
$$;
CREATE FUNCTION app_marketing_due_ab_decisions(p_now timestamptz, p_limit integer)
RETURNS TABLE (tenant_id uuid, campaign_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT c.tenant_id, c.id FROM marketing_campaigns c
    WHERE c.status = 'sending' AND c.ab IS NOT NULL AND c.ab_winner IS NULL AND c.ab_decide_at <= p_now
    ORDER BY c.ab_decide_at, c.id LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION app_marketing_due_campaigns(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_marketing_due_batches(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_marketing_expired_batches(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_marketing_due_ab_decisions(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_marketing_due_campaigns(timestamptz, integer) TO portal_app;
GRANT EXECUTE ON FUNCTION app_marketing_due_batches(timestamptz, integer) TO portal_app;
GRANT EXECUTE ON FUNCTION app_marketing_expired_batches(timestamptz, integer) TO portal_app;
GRANT EXECUTE ON FUNCTION app_marketing_due_ab_decisions(timestamptz, integer) TO portal_app;
