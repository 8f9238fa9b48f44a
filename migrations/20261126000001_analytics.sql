-- Analytics: sites (a public site key and the origins allowed to send to it), hourly rollups
-- with mergeable visitor sketches, the visit state the aggregator folds pageviews into, and the
-- stream position it commits with the rollups (one transaction: nothing lost, nothing twice).
--
-- The aggregator connects as portal_app and switches the transaction's tenant per site
-- (shared::adapters::pg::set_tenant), so row-level security applies to every rollup it writes.

CREATE TABLE analytics_sites (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 120),
    domain          text NOT NULL CHECK (char_length(domain) BETWEEN 1 AND 253),
    site_key        text NOT NULL CONSTRAINT analytics_sites_key UNIQUE,
    allowed_origins text[] NOT NULL,
    timezone        text NOT NULL DEFAULT 'UTC',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    version         integer NOT NULL DEFAULT 1,
    CONSTRAINT analytics_sites_domain_key UNIQUE (tenant_id, domain)
);
CREATE INDEX analytics_sites_tenant_created_idx ON analytics_sites (tenant_id, created_at DESC, id DESC);

-- One row per site, hour (UTC), dimension and value. Dimension '' with value '' is the site's
-- total; the others: page, entry, source, utm_source, utm_medium, utm_campaign, device,
-- browser, os, event. Counters only ever grow by what a committed batch adds; `visitors` is a
-- HyperLogLog sketch (shared::domain::hll), merged on write.
CREATE TABLE analytics_rollups (
    site_id       uuid NOT NULL REFERENCES analytics_sites (id) ON DELETE CASCADE,
    hour          timestamptz NOT NULL,
    dimension     text NOT NULL,
    value         text NOT NULL,
    tenant_id     uuid NOT NULL,
    pageviews     bigint NOT NULL DEFAULT 0,
    visits        bigint NOT NULL DEFAULT 0,
    bounces       bigint NOT NULL DEFAULT 0,
    duration_secs bigint NOT NULL DEFAULT 0,
    events        bigint NOT NULL DEFAULT 0,
    visitors      bytea NOT NULL,
    PRIMARY KEY (site_id, dimension, hour, value)
);

-- A visit in progress (30 minutes without a pageview ends it): where it started, what it is
-- attributed to, and how far it got. Rows older than a day are pruned by the aggregator.
CREATE TABLE analytics_visits (
    site_id    uuid NOT NULL REFERENCES analytics_sites (id) ON DELETE CASCADE,
    visitor    bytea NOT NULL,
    tenant_id  uuid NOT NULL,
    start_hour timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    pageviews  integer NOT NULL,
    dims       jsonb NOT NULL,
    PRIMARY KEY (site_id, visitor)
);
CREATE INDEX analytics_visits_last_seen_idx ON analytics_visits (last_seen);

-- Where the aggregator got to in each stream, committed with the rollups it produced.
CREATE TABLE analytics_stream_positions (
    stream         text NOT NULL,
    consumer_group text NOT NULL,
    last_id        text NOT NULL,
    events_folded  bigint NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, consumer_group)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON analytics_sites, analytics_rollups, analytics_visits TO portal_app;
GRANT SELECT, INSERT, UPDATE ON analytics_stream_positions TO portal_app;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['analytics_sites', 'analytics_rollups', 'analytics_visits'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I TO portal_app USING (tenant_id = app_current_tenant()) '
                       'WITH CHECK (tenant_id = app_current_tenant())', t || '_tenant', t);
        EXECUTE format('CREATE POLICY %I ON %I TO %I USING (true) WITH CHECK (true)', t || '_owner', t, current_user);
    END LOOP;
END
$$;

-- The public collect endpoint knows only a site key: this narrow lookup answers the site, its
-- tenant and allowed origins (and nothing else) before any tenant is set.
CREATE FUNCTION app_analytics_site(p_key text)
RETURNS TABLE (site_id uuid, tenant_id uuid, allowed_origins text[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT s.id, s.tenant_id, s.allowed_origins FROM analytics_sites s WHERE s.site_key = p_key
$$;
REVOKE ALL ON FUNCTION app_analytics_site(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_analytics_site(text) TO portal_app;
