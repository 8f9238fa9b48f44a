-- Unified e-commerce: products (with variants), orders (with lines) and customers of the
-- tenant's shops (Shopify, WooCommerce), one model across channels. Read-only mirrors, written
-- by connector-sync (syncs and webhook deliveries).
--
-- Money is integer minor units of `currency` (exact decimal strings converted, never floats).
-- Provider ids are 64-bit: kept as text. A record is replaced only by a version at least as new
-- (`source_updated_at`): a late webhook or an overlapping sync page never rolls one back.

CREATE TABLE ecom_products (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel           text NOT NULL CHECK (channel IN ('shopify', 'woocommerce')),
    external_id       text NOT NULL CHECK (external_id ~ '^[0-9]{1,20}$'),
    title             text NOT NULL,
    status            text NOT NULL CHECK (status IN ('active', 'draft', 'archived')),
    raw_status        text NOT NULL,
    vendor            text,
    product_type      text,
    handle            text,
    tags              text[] NOT NULL DEFAULT '{}',
    source_created_at timestamptz,
    source_updated_at timestamptz NOT NULL,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ecom_products_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT ecom_products_external_key UNIQUE (tenant_id, channel, external_id)
);

CREATE TABLE ecom_variants (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL,
    product_id         uuid NOT NULL,
    external_id        text NOT NULL CHECK (external_id ~ '^[0-9]{1,20}$'),
    title              text NOT NULL,
    sku                text,
    price_minor        bigint NOT NULL,
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    inventory_quantity integer,
    CONSTRAINT ecom_variants_product_fk FOREIGN KEY (tenant_id, product_id)
        REFERENCES ecom_products (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT ecom_variants_external_key UNIQUE (product_id, external_id)
);

CREATE TABLE ecom_customers (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel           text NOT NULL CHECK (channel IN ('shopify', 'woocommerce')),
    external_id       text NOT NULL CHECK (external_id ~ '^[0-9]{1,20}$'),
    email             text,
    first_name        text NOT NULL DEFAULT '',
    last_name         text NOT NULL DEFAULT '',
    phone             text,
    city              text,
    country           text,
    source_created_at timestamptz,
    source_updated_at timestamptz NOT NULL,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ecom_customers_external_key UNIQUE (tenant_id, channel, external_id)
);

-- status: pending, paid, fulfilled, partially_refunded, refunded, cancelled, failed (the
-- channel's own status is kept in raw_status / financial_status / fulfillment_status).
CREATE TABLE ecom_orders (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel              text NOT NULL CHECK (channel IN ('shopify', 'woocommerce')),
    external_id          text NOT NULL CHECK (external_id ~ '^[0-9]{1,20}$'),
    number               text NOT NULL,
    status               text NOT NULL CHECK (status IN
        ('pending', 'paid', 'fulfilled', 'partially_refunded', 'refunded', 'cancelled', 'failed')),
    raw_status           text NOT NULL,
    financial_status     text,
    fulfillment_status   text,
    currency             text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total_minor          bigint NOT NULL,
    subtotal_minor       bigint NOT NULL,
    tax_minor            bigint NOT NULL,
    shipping_minor       bigint NOT NULL,
    discount_minor       bigint NOT NULL,
    refunded_minor       bigint NOT NULL DEFAULT 0,
    customer_external_id text,
    email                text,
    placed_at            timestamptz NOT NULL,
    cancelled_at         timestamptz,
    source_updated_at    timestamptz NOT NULL,
    test                 boolean NOT NULL DEFAULT false,
    synced_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ecom_orders_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT ecom_orders_external_key UNIQUE (tenant_id, channel, external_id)
);
CREATE INDEX ecom_orders_placed_idx ON ecom_orders (tenant_id, placed_at DESC, id DESC);
CREATE INDEX ecom_orders_channel_placed_idx ON ecom_orders (tenant_id, channel, placed_at DESC);

CREATE TABLE ecom_order_lines (
    tenant_id           uuid NOT NULL,
    order_id            uuid NOT NULL,
    external_id         text NOT NULL,
    product_external_id text,
    variant_external_id text,
    sku                 text,
    title               text NOT NULL,
    quantity            integer NOT NULL,
    unit_price_minor    bigint NOT NULL,
    total_minor         bigint NOT NULL,
    PRIMARY KEY (order_id, external_id),
    CONSTRAINT ecom_order_lines_order_fk FOREIGN KEY (tenant_id, order_id)
        REFERENCES ecom_orders (tenant_id, id) ON DELETE CASCADE
);

GRANT SELECT, INSERT, UPDATE, DELETE ON ecom_products, ecom_variants, ecom_customers, ecom_orders, ecom_order_lines
    TO portal_app;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ecom_products', 'ecom_variants', 'ecom_customers', 'ecom_orders', 'ecom_order_lines'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I TO portal_app USING (tenant_id = app_current_tenant()) '
                       'WITH CHECK (tenant_id = app_current_tenant())', t || '_tenant', t);
        EXECUTE format('CREATE POLICY %I ON %I TO %I USING (true) WITH CHECK (true)', t || '_owner', t, current_user);
    END LOOP;
END
$$;
