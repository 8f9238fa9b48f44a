-- Billing: the plan catalogue and its entitlements, the tenant <-> Stripe customer link, the
-- Postgres mirrors of Stripe objects, the applied-event ledger and reconciliation records.
--
-- Mirrors follow Stripe, not us: text statuses (Stripe adds states), no foreign keys between
-- Stripe tables (children arrive before parents; a customer may be unknown for a while), the raw
-- object as jsonb beside the typed columns. Every mirrored row carries its write gate
-- (gate_terminal, gate_created, gate_rank, gate_source): a write replaces the row only when its
-- gate is greater (row comparison), so the final mirror is the same whatever order events
-- arrive in, and money state never moves backwards (terminal states sort above everything).
--
-- Roles: `portal_billing` (the billing-sync and reconciliation functions) writes the mirrors for
-- every tenant and nothing else; `portal_app` reads a tenant's rows through billing_accounts.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'portal_billing') THEN
        CREATE ROLE portal_billing NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO portal_billing;

-- The catalogue. NULL limit = unlimited. The default plan applies to tenants with no live
-- subscription.
CREATE TABLE billing_plans (
    code               text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{0,31}$'),
    name               text NOT NULL,
    description        text NOT NULL DEFAULT '',
    sort               integer NOT NULL,
    is_default         boolean NOT NULL DEFAULT false,
    seats              bigint CHECK (seats >= 0),
    contacts           bigint CHECK (contacts >= 0),
    sites              bigint CHECK (sites >= 0),
    ai_tasks_per_month bigint CHECK (ai_tasks_per_month >= 0),
    storage_bytes      bigint CHECK (storage_bytes >= 0)
);
CREATE UNIQUE INDEX billing_plans_one_default ON billing_plans (is_default) WHERE is_default;

-- Stripe prices (or plans: the same ids) of each plan, synced from Stripe by reconciliation
-- (prices whose metadata names `portal_plan`) and seeded locally.
CREATE TABLE billing_prices (
    id          text PRIMARY KEY,
    plan_code   text NOT NULL REFERENCES billing_plans (code),
    currency    text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    unit_amount bigint NOT NULL CHECK (unit_amount >= 0),
    interval    text NOT NULL CHECK (interval IN ('day', 'week', 'month', 'year')),
    active      boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_prices_plan_idx ON billing_prices (plan_code);

INSERT INTO billing_plans (code, name, description, sort, is_default, seats, contacts, sites, ai_tasks_per_month, storage_bytes) VALUES
    ('free',    'Free',    'One site and a small team, to get started.', 0, true,  3,    500,    1,  50,    1073741824),
    ('starter', 'Starter', 'For a growing business.',                    1, false, 5,    5000,   3,  500,   10737418240),
    ('growth',  'Growth',  'Marketing automation at scale.',             2, false, 20,   50000,  10, 5000,  107374182400),
    ('scale',   'Scale',   'No seat limit, the largest quotas.',         3, false, NULL, 500000, 50, 50000, 1099511627776);

GRANT SELECT ON billing_plans, billing_prices TO portal_app;
GRANT SELECT, INSERT, UPDATE ON billing_prices TO portal_billing;
GRANT SELECT ON billing_plans TO portal_billing;

-- One Stripe customer per tenant, created once (by the checkout route, or learnt from a signed
-- event whose customer or session names the tenant).
CREATE TABLE billing_accounts (
    tenant_id          uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    stripe_customer_id text NOT NULL CONSTRAINT billing_accounts_customer_key UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- The Stripe mirrors.
CREATE TABLE stripe_customers (
    id            text PRIMARY KEY,
    email         text,
    name          text,
    deleted       boolean NOT NULL DEFAULT false,
    tenant_hint   uuid,
    created       bigint,
    livemode      boolean,
    raw           jsonb NOT NULL,
    gate_terminal boolean NOT NULL,
    gate_created  bigint NOT NULL,
    gate_rank     smallint NOT NULL,
    gate_source   text NOT NULL,
    synced_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stripe_subscriptions (
    id                   text PRIMARY KEY,
    customer_id          text,
    status               text,
    price_id             text,
    quantity             bigint,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    canceled_at          bigint,
    trial_start          bigint,
    trial_end            bigint,
    current_period_start bigint,
    current_period_end   bigint,
    created              bigint,
    livemode             boolean,
    raw                  jsonb NOT NULL,
    gate_terminal        boolean NOT NULL,
    gate_created         bigint NOT NULL,
    gate_rank            smallint NOT NULL,
    gate_source          text NOT NULL,
    synced_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_subscriptions_customer_idx ON stripe_subscriptions (customer_id, created DESC);

CREATE TABLE stripe_subscription_items (
    subscription_id      text NOT NULL,
    id                   text NOT NULL,
    price_id             text,
    quantity             bigint NOT NULL,
    current_period_start bigint,
    current_period_end   bigint,
    raw                  jsonb NOT NULL,
    PRIMARY KEY (subscription_id, id)
);

CREATE TABLE stripe_invoices (
    id                 text PRIMARY KEY,
    customer_id        text,
    subscription_id    text,
    number             text,
    status             text,
    currency           text,
    amount_due         bigint NOT NULL,
    amount_paid        bigint NOT NULL,
    amount_remaining   bigint NOT NULL,
    total              bigint,
    period_start       bigint,
    period_end         bigint,
    hosted_invoice_url text,
    invoice_pdf        text,
    created            bigint,
    livemode           boolean,
    raw                jsonb NOT NULL,
    gate_terminal      boolean NOT NULL,
    gate_created       bigint NOT NULL,
    gate_rank          smallint NOT NULL,
    gate_source        text NOT NULL,
    synced_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_invoices_customer_idx ON stripe_invoices (customer_id, created DESC, id DESC);

CREATE TABLE stripe_invoice_lines (
    invoice_id   text NOT NULL,
    id           text NOT NULL,
    amount       bigint NOT NULL,
    currency     text,
    description  text,
    period_start bigint,
    period_end   bigint,
    raw          jsonb NOT NULL,
    PRIMARY KEY (invoice_id, id)
);

CREATE TABLE stripe_invoice_payments (
    id                text PRIMARY KEY,
    invoice_id        text,
    payment_intent_id text,
    status            text,
    amount_paid       bigint,
    currency          text,
    raw               jsonb NOT NULL,
    gate_terminal     boolean NOT NULL,
    gate_created      bigint NOT NULL,
    gate_rank         smallint NOT NULL,
    gate_source       text NOT NULL,
    synced_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stripe_payment_intents (
    id              text PRIMARY KEY,
    customer_id     text,
    invoice_id      text,
    status          text,
    amount          bigint NOT NULL,
    amount_received bigint NOT NULL,
    currency        text,
    created         bigint,
    livemode        boolean,
    raw             jsonb NOT NULL,
    gate_terminal   boolean NOT NULL,
    gate_created    bigint NOT NULL,
    gate_rank       smallint NOT NULL,
    gate_source     text NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stripe_refunds (
    id                text PRIMARY KEY,
    charge_id         text,
    payment_intent_id text,
    amount            bigint NOT NULL,
    currency          text,
    status            text,
    created           bigint,
    raw               jsonb NOT NULL,
    gate_terminal     boolean NOT NULL,
    gate_created      bigint NOT NULL,
    gate_rank         smallint NOT NULL,
    gate_source       text NOT NULL,
    synced_at         timestamptz NOT NULL DEFAULT now()
);

-- Every event billing-sync has seen, inserted ON CONFLICT DO NOTHING in the transaction of its
-- effects: a redelivery finds it and applies nothing. Unknown types are kept here too.
CREATE TABLE stripe_events (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    api_version text,
    created     bigint,
    livemode    boolean,
    outcome     text NOT NULL,
    payload     jsonb NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_events_created_idx ON stripe_events (created);

-- Reconciliation runs and every change they made.
CREATE TABLE billing_reconcile_runs (
    id             uuid PRIMARY KEY,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    events_cursor  bigint,
    events_applied integer NOT NULL DEFAULT 0,
    objects_seen   integer NOT NULL DEFAULT 0,
    changes        integer NOT NULL DEFAULT 0,
    error          text
);
CREATE TABLE billing_reconcile_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      uuid NOT NULL REFERENCES billing_reconcile_runs (id) ON DELETE CASCADE,
    object_type text NOT NULL,
    object_id   text NOT NULL,
    action      text NOT NULL CHECK (action IN ('inserted', 'updated', 'event_applied')),
    before      jsonb,
    after       jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Privileges and row-level security.
GRANT SELECT, INSERT, UPDATE, DELETE ON stripe_customers, stripe_subscriptions, stripe_subscription_items,
    stripe_invoices, stripe_invoice_lines, stripe_invoice_payments, stripe_payment_intents, stripe_refunds,
    stripe_events, billing_reconcile_runs, billing_reconcile_changes TO portal_billing;
GRANT SELECT, INSERT ON billing_accounts TO portal_billing;
GRANT SELECT, INSERT ON billing_accounts TO portal_app;
GRANT SELECT ON stripe_customers, stripe_subscriptions, stripe_subscription_items, stripe_invoices,
    stripe_invoice_lines TO portal_app;
-- Tenants are unknown to billing_accounts' lookup of a customer's tenant otherwise.
GRANT SELECT (id) ON tenants TO portal_billing;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['billing_accounts', 'stripe_customers', 'stripe_subscriptions',
        'stripe_subscription_items', 'stripe_invoices', 'stripe_invoice_lines', 'stripe_invoice_payments',
        'stripe_payment_intents', 'stripe_refunds', 'stripe_events', 'billing_reconcile_runs',
        'billing_reconcile_changes']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I TO portal_billing USING (true) WITH CHECK (true)', t || '_billing', t);
        EXECUTE format('CREATE POLICY %I ON %I TO %I USING (true) WITH CHECK (true)', t || '_owner', t, current_user);
    END LOOP;
END
$$;
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenants_billing ON tenants FOR SELECT TO portal_billing USING (true);

-- The application sees its own tenant's account and, through it, its Stripe rows.
CREATE POLICY billing_accounts_app ON billing_accounts TO portal_app
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
CREATE FUNCTION app_current_customer() RETURNS text
    LANGUAGE sql STABLE AS $$
        SELECT stripe_customer_id FROM billing_accounts WHERE tenant_id = app_current_tenant() $$;
CREATE POLICY stripe_customers_app ON stripe_customers FOR SELECT TO portal_app
    USING (id = app_current_customer());
CREATE POLICY stripe_subscriptions_app ON stripe_subscriptions FOR SELECT TO portal_app
    USING (customer_id = app_current_customer());
CREATE POLICY stripe_invoices_app ON stripe_invoices FOR SELECT TO portal_app
    USING (customer_id = app_current_customer());
CREATE POLICY stripe_subscription_items_app ON stripe_subscription_items FOR SELECT TO portal_app
    USING (EXISTS (SELECT 1 FROM stripe_subscriptions s WHERE s.id = subscription_id));
CREATE POLICY stripe_invoice_lines_app ON stripe_invoice_lines FOR SELECT TO portal_app
    USING (EXISTS (SELECT 1 FROM stripe_invoices i WHERE i.id = invoice_id));
