-- CMS: the pages and blog posts of a tenant's websites, their revisions, the redirects left by
-- changed slugs, and the media library.
--
-- A website is an analytics site (`analytics_sites`: a domain and a public `site_key`), so one
-- registration gives a site its traffic numbers and its content.
--
-- An item (page or post) has an editable state (title, slug, body, ...) and, once published, a
-- live state: `live` is the snapshot the public API serves, `live_slug` the slug it answers on
-- (a published item with a newer revision scheduled is `scheduled` and still live).
-- Editing a published item changes the draft only; publishing copies the draft to `live`. Every
-- save writes a revision (`revision` is the newest number); a schedule names the revision it
-- will publish (`scheduled_revision`), so later edits do not slip into it.

CREATE TABLE cms_items (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    site_id            uuid NOT NULL REFERENCES analytics_sites (id) ON DELETE CASCADE,
    kind               text NOT NULL CHECK (kind IN ('page', 'post')),
    title              text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    slug               text NOT NULL CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND char_length(slug) <= 100),
    parent_id          uuid,
    seo                jsonb NOT NULL DEFAULT '{}',
    body               jsonb NOT NULL DEFAULT '[]',
    excerpt            text CHECK (char_length(excerpt) <= 1000),
    cover_media_id     uuid,
    categories         text[] NOT NULL DEFAULT '{}',
    tags               text[] NOT NULL DEFAULT '{}',
    author_id          uuid REFERENCES users (id) ON DELETE SET NULL,
    status             text NOT NULL DEFAULT 'draft'
                       CHECK (status IN ('draft', 'scheduled', 'published', 'archived')),
    revision           integer NOT NULL DEFAULT 1,
    publish_at         timestamptz,
    scheduled_revision integer,
    live               jsonb,
    live_slug          text,
    live_revision      integer,
    published_at       timestamptz,
    live_at            timestamptz,
    -- Why the last scheduled publish could not happen (a slug gone live elsewhere meanwhile).
    publish_error      text,
    -- Posts of a WordPress site: its post id and the `modified_gmt` the mirror last saw.
    source             text NOT NULL DEFAULT 'internal' CHECK (source IN ('internal', 'wordpress')),
    external_id        text,
    external_modified  text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    version            integer NOT NULL DEFAULT 1,
    CONSTRAINT cms_items_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT cms_items_slug_key UNIQUE (site_id, kind, slug),
    CONSTRAINT cms_items_parent_fk FOREIGN KEY (tenant_id, parent_id) REFERENCES cms_items (tenant_id, id),
    CONSTRAINT cms_items_parent_page CHECK (parent_id IS NULL OR kind = 'page'),
    CONSTRAINT cms_items_schedule CHECK (
        (status = 'scheduled') = (publish_at IS NOT NULL AND scheduled_revision IS NOT NULL)),
    CONSTRAINT cms_items_live CHECK (
        (live IS NULL) = (live_slug IS NULL) AND (live IS NULL) = (live_revision IS NULL)
        AND (live IS NULL) = (live_at IS NULL)),
    CONSTRAINT cms_items_published_live CHECK (status <> 'published' OR live IS NOT NULL)
);
CREATE UNIQUE INDEX cms_items_live_slug_key ON cms_items (site_id, kind, live_slug) WHERE live_slug IS NOT NULL;
CREATE UNIQUE INDEX cms_items_external_key ON cms_items (site_id, kind, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX cms_items_list_idx ON cms_items (tenant_id, kind, updated_at DESC, id DESC);
CREATE INDEX cms_items_parent_idx ON cms_items (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX cms_items_due_idx ON cms_items (publish_at) WHERE status = 'scheduled';
CREATE INDEX cms_items_public_idx ON cms_items (site_id, kind, published_at DESC, id DESC) WHERE live IS NOT NULL;

-- Every saved state of an item: `content` holds its editable fields.
CREATE TABLE cms_revisions (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL,
    item_id    uuid NOT NULL,
    number     integer NOT NULL CHECK (number >= 1),
    content    jsonb NOT NULL,
    -- What made it: created, edited, restored (from `restored_from`), synced (from WordPress).
    reason     text NOT NULL CHECK (reason IN ('created', 'edited', 'restored', 'synced')),
    restored_from integer,
    author     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cms_revisions_item_fk FOREIGN KEY (tenant_id, item_id)
        REFERENCES cms_items (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT cms_revisions_number_key UNIQUE (item_id, number)
);

-- Slugs an item was published under before: the public API answers them with a redirect.
CREATE TABLE cms_redirects (
    site_id    uuid NOT NULL,
    kind       text NOT NULL,
    slug       text NOT NULL,
    tenant_id  uuid NOT NULL,
    item_id    uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, kind, slug),
    CONSTRAINT cms_redirects_item_fk FOREIGN KEY (tenant_id, item_id)
        REFERENCES cms_items (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX cms_redirects_item_idx ON cms_redirects (item_id);

-- The media library. A row is made when an upload is granted (`pending`, with the declared type
-- and size); media-processor reads the bytes the bucket got and marks it `ready` (sniffed type,
-- size, checksum, dimensions, thumbnails) or `rejected` (the object is removed).
CREATE TABLE cms_media (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    folder          text NOT NULL DEFAULT '' CHECK (char_length(folder) <= 200),
    alt             text NOT NULL DEFAULT '' CHECK (char_length(alt) <= 500),
    tags            text[] NOT NULL DEFAULT '{}',
    declared_type   text NOT NULL,
    declared_size   bigint NOT NULL CHECK (declared_size > 0),
    object_key      text NOT NULL CONSTRAINT cms_media_object_key UNIQUE,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready', 'rejected')),
    content_type    text,
    size_bytes      bigint,
    checksum_sha256 text,
    width           integer,
    height          integer,
    thumbnails      jsonb NOT NULL DEFAULT '[]',
    reject_reason   text,
    processed_at    timestamptz,
    created_by      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    version         integer NOT NULL DEFAULT 1,
    CONSTRAINT cms_media_tenant_id_key UNIQUE (tenant_id, id)
);
CREATE INDEX cms_media_list_idx ON cms_media (tenant_id, created_at DESC, id DESC);
CREATE INDEX cms_media_folder_idx ON cms_media (tenant_id, folder);

GRANT SELECT, INSERT, UPDATE, DELETE ON cms_items, cms_revisions, cms_redirects, cms_media TO portal_app;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['cms_items', 'cms_revisions', 'cms_redirects', 'cms_media'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I TO portal_app USING (tenant_id = app_current_tenant()) '
                       'WITH CHECK (tenant_id = app_current_tenant())', t || '_tenant', t);
        EXECUTE format('CREATE POLICY %I ON %I TO %I USING (true) WITH CHECK (true)', t || '_owner', t, current_user);
    END LOOP;
END
$$;

-- The content scheduler's one look across tenants: scheduled items due by `p_now`, oldest first.
CREATE FUNCTION app_cms_due(p_now timestamptz, p_limit integer)
RETURNS TABLE (tenant_id uuid, item_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT i.tenant_id, i.id FROM cms_items i
    WHERE i.status = 'scheduled' AND i.publish_at <= p_now
    ORDER BY i.publish_at, i.id LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION app_cms_due(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_cms_due(timestamptz, integer) TO portal_app;

-- media-processor's lookup of an uploaded object's row (the key names no tenant it can trust
-- before this answers).
CREATE FUNCTION app_cms_media_by_key(p_key text)
RETURNS TABLE (tenant_id uuid, media_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT m.tenant_id, m.id FROM cms_media m WHERE m.object_key = p_key
$$;
REVOKE ALL ON FUNCTION app_cms_media_by_key(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_cms_media_by_key(text) TO portal_app;
