-- CRM, part 1: companies, contacts, tenant-defined custom fields and the activity timeline.
--
-- Search (name, email, company; prefix and typo-tolerant) reads `search_text`, a lower-cased
-- generated column with a trigram GIN index: `LIKE 'q%'`/`'% q%'` for prefixes and word
-- similarity (`<%`) for typos both use it. Custom field values live in `custom` (jsonb, typed and
-- validated by the service against crm_custom_fields), indexed for containment.
--
-- Same-tenant links are enforced by composite foreign keys on (tenant_id, id): a contact can never
-- point at another tenant's company, whatever the application does.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE crm_custom_fields (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    entity     text NOT NULL CHECK (entity IN ('contact', 'company')),
    key        text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_]{0,39}$'),
    label      text NOT NULL CHECK (char_length(label) BETWEEN 1 AND 80),
    type       text NOT NULL CHECK (type IN ('text', 'number', 'date', 'boolean', 'select')),
    options    text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT crm_custom_fields_key UNIQUE (tenant_id, entity, key)
);

CREATE TABLE crm_companies (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    domain      text CHECK (char_length(domain) <= 253),
    industry    text CHECK (char_length(industry) <= 100),
    phone       text CHECK (char_length(phone) <= 40),
    owner_id    uuid REFERENCES users (id) ON DELETE SET NULL,
    tags        text[] NOT NULL DEFAULT '{}',
    address     jsonb NOT NULL DEFAULT '{}',
    notes       text NOT NULL DEFAULT '' CHECK (char_length(notes) <= 20000),
    source      text NOT NULL DEFAULT 'manual' CHECK (char_length(source) <= 40),
    custom      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1,
    search_text text GENERATED ALWAYS AS (lower(name || ' ' || coalesce(domain, ''))) STORED,
    CONSTRAINT crm_companies_tenant_id_key UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX crm_companies_domain_key ON crm_companies (tenant_id, lower(domain)) WHERE domain IS NOT NULL;
CREATE INDEX crm_companies_created_idx ON crm_companies (tenant_id, created_at DESC, id DESC);
CREATE INDEX crm_companies_name_idx ON crm_companies (tenant_id, lower(name), id);
CREATE INDEX crm_companies_search_idx ON crm_companies USING gin (search_text gin_trgm_ops);
CREATE INDEX crm_companies_tags_idx ON crm_companies USING gin (tags);

CREATE TABLE crm_contacts (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    first_name      text NOT NULL DEFAULT '' CHECK (char_length(first_name) <= 100),
    last_name       text NOT NULL DEFAULT '' CHECK (char_length(last_name) <= 100),
    email           text CHECK (char_length(email) <= 254),
    -- Further addresses, e.g. those of merged duplicates.
    other_emails    text[] NOT NULL DEFAULT '{}',
    phone           text CHECK (char_length(phone) <= 40),
    mobile          text CHECK (char_length(mobile) <= 40),
    title           text CHECK (char_length(title) <= 120),
    company_id      uuid,
    owner_id        uuid REFERENCES users (id) ON DELETE SET NULL,
    lifecycle_stage text NOT NULL DEFAULT 'lead' CHECK (lifecycle_stage IN
        ('subscriber', 'lead', 'marketing_qualified', 'sales_qualified', 'opportunity', 'customer', 'evangelist', 'other')),
    tags            text[] NOT NULL DEFAULT '{}',
    address         jsonb NOT NULL DEFAULT '{}',
    notes           text NOT NULL DEFAULT '' CHECK (char_length(notes) <= 20000),
    source          text NOT NULL DEFAULT 'manual' CHECK (char_length(source) <= 40),
    custom          jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    version         integer NOT NULL DEFAULT 1,
    search_text     text GENERATED ALWAYS AS
        (lower(first_name || ' ' || last_name || ' ' || coalesce(email, ''))) STORED,
    CONSTRAINT crm_contacts_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT crm_contacts_company_fk FOREIGN KEY (tenant_id, company_id)
        REFERENCES crm_companies (tenant_id, id) ON DELETE SET NULL (company_id),
    CONSTRAINT crm_contacts_named CHECK (first_name <> '' OR last_name <> '' OR email IS NOT NULL)
);
CREATE UNIQUE INDEX crm_contacts_email_key ON crm_contacts (tenant_id, lower(email)) WHERE email IS NOT NULL;
CREATE INDEX crm_contacts_created_idx ON crm_contacts (tenant_id, created_at DESC, id DESC);
CREATE INDEX crm_contacts_updated_idx ON crm_contacts (tenant_id, updated_at DESC, id DESC);
CREATE INDEX crm_contacts_last_name_idx ON crm_contacts (tenant_id, lower(last_name), id);
CREATE INDEX crm_contacts_company_idx ON crm_contacts (tenant_id, company_id) WHERE company_id IS NOT NULL;
CREATE INDEX crm_contacts_owner_idx ON crm_contacts (tenant_id, owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX crm_contacts_search_idx ON crm_contacts USING gin (search_text gin_trgm_ops);
CREATE INDEX crm_contacts_tags_idx ON crm_contacts USING gin (tags);
CREATE INDEX crm_contacts_custom_idx ON crm_contacts USING gin (custom jsonb_path_ops);

-- What happened to a contact or company: created, changed (with the fields), merged, imported,
-- deal events. Newest first on the detail pages.
CREATE TABLE crm_activities (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    contact_id uuid,
    company_id uuid,
    kind       text NOT NULL,
    data       jsonb NOT NULL DEFAULT '{}',
    actor      text,
    at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT crm_activities_contact_fk FOREIGN KEY (tenant_id, contact_id)
        REFERENCES crm_contacts (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT crm_activities_company_fk FOREIGN KEY (tenant_id, company_id)
        REFERENCES crm_companies (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX crm_activities_contact_idx ON crm_activities (tenant_id, contact_id, at DESC) WHERE contact_id IS NOT NULL;
CREATE INDEX crm_activities_company_idx ON crm_activities (tenant_id, company_id, at DESC) WHERE company_id IS NOT NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON crm_custom_fields, crm_companies, crm_contacts, crm_activities TO portal_app;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['crm_custom_fields', 'crm_companies', 'crm_contacts', 'crm_activities'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I TO portal_app USING (tenant_id = app_current_tenant()) '
                       'WITH CHECK (tenant_id = app_current_tenant())', t || '_tenant', t);
        EXECUTE format('CREATE POLICY %I ON %I TO %I USING (true) WITH CHECK (true)', t || '_owner', t, current_user);
    END LOOP;
END
$$;
