-- Stream entries the aggregator could not fold (not an event, a text beyond the limits, a value
-- Postgres refuses), set aside with the reason in the transaction that acknowledges them, so no
-- single entry can stop the fold for every tenant. An operator's table, like the positions (no
-- tenant reads it): `entry` keeps at most 64 KiB of what the entry held.
CREATE TABLE analytics_dead_events (
    stream     text NOT NULL,
    entry_id   text NOT NULL,
    tenant_id  uuid,
    site_id    uuid,
    reason     text NOT NULL,
    entry      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, entry_id)
);
CREATE INDEX analytics_dead_events_created_idx ON analytics_dead_events (created_at);

GRANT SELECT, INSERT ON analytics_dead_events TO portal_app;
