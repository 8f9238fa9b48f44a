-- CRM, part 2: pipelines with ordered stages, deals on a board, and each deal's stage history.
--
-- A deal's place in its stage's column is `rank`, a fractional key (shared::domain::rank) compared
-- bytewise (COLLATE "C"): a move writes one row, the column is never renumbered. Moves into a
-- column lock its stage row, so two concurrent moves never take the same key.
--
-- Amounts are integer minor units with an ISO 4217 currency; sums are per currency.

CREATE TABLE crm_pipelines (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    version    integer NOT NULL DEFAULT 1,
    CONSTRAINT crm_pipelines_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT crm_pipelines_name_key UNIQUE (tenant_id, name)
);

CREATE TABLE crm_stages (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    pipeline_id uuid NOT NULL,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    position    integer NOT NULL CHECK (position >= 0),
    -- Win probability in percent: a deal's weighted amount is amount * probability / 100.
    probability integer NOT NULL CHECK (probability BETWEEN 0 AND 100),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT crm_stages_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT crm_stages_pipeline_fk FOREIGN KEY (tenant_id, pipeline_id)
        REFERENCES crm_pipelines (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT crm_stages_position_key UNIQUE (pipeline_id, position) DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE crm_deals (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    pipeline_id    uuid NOT NULL,
    stage_id       uuid NOT NULL,
    rank           text COLLATE "C" NOT NULL,
    title          text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    amount_minor   bigint NOT NULL DEFAULT 0 CHECK (amount_minor >= 0),
    currency       text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    owner_id       uuid REFERENCES users (id) ON DELETE SET NULL,
    contact_id     uuid,
    company_id     uuid,
    expected_close date,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'won', 'lost')),
    lost_reason    text CHECK (char_length(lost_reason) <= 500),
    won_at         timestamptz,
    lost_at        timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    version        integer NOT NULL DEFAULT 1,
    CONSTRAINT crm_deals_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT crm_deals_stage_fk FOREIGN KEY (tenant_id, stage_id) REFERENCES crm_stages (tenant_id, id),
    CONSTRAINT crm_deals_pipeline_fk FOREIGN KEY (tenant_id, pipeline_id) REFERENCES crm_pipelines (tenant_id, id),
    CONSTRAINT crm_deals_contact_fk FOREIGN KEY (tenant_id, contact_id)
        REFERENCES crm_contacts (tenant_id, id) ON DELETE SET NULL (contact_id),
    CONSTRAINT crm_deals_company_fk FOREIGN KEY (tenant_id, company_id)
        REFERENCES crm_companies (tenant_id, id) ON DELETE SET NULL (company_id),
    CONSTRAINT crm_deals_outcome CHECK (
        (status = 'open' AND won_at IS NULL AND lost_at IS NULL)
        OR (status = 'won' AND won_at IS NOT NULL AND lost_at IS NULL)
        OR (status = 'lost' AND lost_at IS NOT NULL AND won_at IS NULL))
);
CREATE INDEX crm_deals_board_idx ON crm_deals (stage_id, rank, id);
CREATE INDEX crm_deals_created_idx ON crm_deals (tenant_id, created_at DESC, id DESC);
CREATE INDEX crm_deals_contact_idx ON crm_deals (tenant_id, contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX crm_deals_company_idx ON crm_deals (tenant_id, company_id) WHERE company_id IS NOT NULL;

-- Every stage a deal entered, and its outcome changes.
CREATE TABLE crm_deal_history (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL,
    deal_id    uuid NOT NULL,
    from_stage uuid,
    to_stage   uuid,
    status     text NOT NULL,
    actor      text,
    at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT crm_deal_history_deal_fk FOREIGN KEY (tenant_id, deal_id)
        REFERENCES crm_deals (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX crm_deal_history_deal_idx ON crm_deal_history (deal_id, at);

GRANT SELECT, INSERT, UPDATE, DELETE ON crm_pipelines, crm_stages, crm_deals, crm_deal_history TO portal_app;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['crm_pipelines', 'crm_stages', 'crm_deals', 'crm_deal_history'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I TO portal_app USING (tenant_id = app_current_tenant()) '
                       'WITH CHECK (tenant_id = app_current_tenant())', t || '_tenant', t);
        EXECUTE format('CREATE POLICY %I ON %I TO %I USING (true) WITH CHECK (true)', t || '_owner', t, current_user);
    END LOOP;
END
$$;
