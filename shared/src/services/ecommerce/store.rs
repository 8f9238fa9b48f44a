//! Writes the model into the tenant's mirrors, inside the caller's transaction. A record
//! replaces the stored one only when it is at least as new (`source_updated_at`): applying a
//! delivery twice, late, or overlapping a sync page changes nothing.
use serde_json::{Value, json};
use sqlx::types::Json;
use uuid::Uuid;

use super::{CustomerRecord, OrderRecord, ProductRecord};
use crate::adapters::pg::Tx;
use crate::domain::DomainError;

/// Whether a write took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Written,
    /// The stored version is newer: nothing changed.
    Stale,
}

pub async fn order(tx: &mut Tx, tenant: Uuid, o: &OrderRecord) -> Result<Applied, DomainError> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "insert into ecom_orders (id, tenant_id, channel, external_id, number, status, raw_status, financial_status, \
         fulfillment_status, currency, total_minor, subtotal_minor, tax_minor, shipping_minor, discount_minor, \
         refunded_minor, customer_external_id, email, placed_at, cancelled_at, source_updated_at, test) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22) \
         on conflict (tenant_id, channel, external_id) do update set number = excluded.number, \
           status = excluded.status, raw_status = excluded.raw_status, financial_status = excluded.financial_status, \
           fulfillment_status = excluded.fulfillment_status, currency = excluded.currency, \
           total_minor = excluded.total_minor, subtotal_minor = excluded.subtotal_minor, tax_minor = excluded.tax_minor, \
           shipping_minor = excluded.shipping_minor, discount_minor = excluded.discount_minor, \
           refunded_minor = excluded.refunded_minor, customer_external_id = excluded.customer_external_id, \
           email = excluded.email, placed_at = excluded.placed_at, cancelled_at = excluded.cancelled_at, \
           source_updated_at = excluded.source_updated_at, test = excluded.test, synced_at = now() \
         where ecom_orders.source_updated_at <= excluded.source_updated_at \
         returning id",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(o.channel)
    .bind(&o.external_id)
    .bind(&o.number)
    .bind(o.status)
    .bind(&o.raw_status)
    .bind(&o.financial_status)
    .bind(&o.fulfillment_status)
    .bind(&o.currency)
    .bind(o.total_minor)
    .bind(o.subtotal_minor)
    .bind(o.tax_minor)
    .bind(o.shipping_minor)
    .bind(o.discount_minor)
    .bind(o.refunded_minor)
    .bind(&o.customer_external_id)
    .bind(&o.email)
    .bind(o.placed_at)
    .bind(o.cancelled_at)
    .bind(o.updated_at)
    .bind(o.test)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(id) = id else { return Ok(Applied::Stale) };
    sqlx::query("delete from ecom_order_lines where order_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    if !o.lines.is_empty() {
        let lines: Vec<Value> = o
            .lines
            .iter()
            .map(|l| {
                json!({"external_id": l.external_id, "product_external_id": l.product_external_id,
                       "variant_external_id": l.variant_external_id, "sku": l.sku, "title": l.title,
                       "quantity": l.quantity, "unit_price_minor": l.unit_price_minor, "total_minor": l.total_minor})
            })
            .collect();
        sqlx::query(
            "insert into ecom_order_lines (tenant_id, order_id, external_id, product_external_id, variant_external_id, \
             sku, title, quantity, unit_price_minor, total_minor) \
             select $1, $2, r.external_id, r.product_external_id, r.variant_external_id, r.sku, r.title, r.quantity, \
             r.unit_price_minor, r.total_minor from jsonb_to_recordset($3) as r(external_id text, \
             product_external_id text, variant_external_id text, sku text, title text, quantity integer, \
             unit_price_minor bigint, total_minor bigint) \
             on conflict (order_id, external_id) do nothing",
        )
        .bind(tenant)
        .bind(id)
        .bind(Json(lines))
        .execute(&mut **tx)
        .await?;
    }
    Ok(Applied::Written)
}

pub async fn product(tx: &mut Tx, tenant: Uuid, p: &ProductRecord) -> Result<Applied, DomainError> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "insert into ecom_products (id, tenant_id, channel, external_id, title, status, raw_status, vendor, \
         product_type, handle, tags, source_created_at, source_updated_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         on conflict (tenant_id, channel, external_id) do update set title = excluded.title, \
           status = excluded.status, raw_status = excluded.raw_status, vendor = excluded.vendor, \
           product_type = excluded.product_type, handle = excluded.handle, tags = excluded.tags, \
           source_created_at = excluded.source_created_at, source_updated_at = excluded.source_updated_at, \
           synced_at = now() \
         where ecom_products.source_updated_at <= excluded.source_updated_at \
         returning id",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(p.channel)
    .bind(&p.external_id)
    .bind(&p.title)
    .bind(p.status)
    .bind(&p.raw_status)
    .bind(&p.vendor)
    .bind(&p.product_type)
    .bind(&p.handle)
    .bind(&p.tags)
    .bind(p.created_at)
    .bind(p.updated_at)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(id) = id else { return Ok(Applied::Stale) };
    if !p.variants.is_empty() {
        let variants: Vec<Value> = p
            .variants
            .iter()
            .map(|v| {
                json!({"id": Uuid::now_v7(), "external_id": v.external_id, "title": v.title, "sku": v.sku,
                       "price_minor": v.price_minor, "currency": v.currency, "inventory_quantity": v.inventory_quantity})
            })
            .collect();
        sqlx::query(
            "insert into ecom_variants (id, tenant_id, product_id, external_id, title, sku, price_minor, currency, \
             inventory_quantity) \
             select r.id, $1, $2, r.external_id, r.title, r.sku, r.price_minor, r.currency, r.inventory_quantity \
             from jsonb_to_recordset($3) as r(id uuid, external_id text, title text, sku text, price_minor bigint, \
             currency text, inventory_quantity integer) \
             on conflict (product_id, external_id) do update set title = excluded.title, sku = excluded.sku, \
               price_minor = excluded.price_minor, currency = excluded.currency, \
               inventory_quantity = excluded.inventory_quantity",
        )
        .bind(tenant)
        .bind(id)
        .bind(Json(variants))
        .execute(&mut **tx)
        .await?;
    }
    Ok(Applied::Written)
}

pub async fn customer(tx: &mut Tx, tenant: Uuid, c: &CustomerRecord) -> Result<Applied, DomainError> {
    let written = sqlx::query(
        "insert into ecom_customers (id, tenant_id, channel, external_id, email, first_name, last_name, phone, city, \
         country, source_created_at, source_updated_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         on conflict (tenant_id, channel, external_id) do update set email = excluded.email, \
           first_name = excluded.first_name, last_name = excluded.last_name, phone = excluded.phone, \
           city = excluded.city, country = excluded.country, source_created_at = excluded.source_created_at, \
           source_updated_at = excluded.source_updated_at, synced_at = now() \
         where ecom_customers.source_updated_at <= excluded.source_updated_at",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(c.channel)
    .bind(&c.external_id)
    .bind(&c.email)
    .bind(&c.first_name)
    .bind(&c.last_name)
    .bind(&c.phone)
    .bind(&c.city)
    .bind(&c.country)
    .bind(c.created_at)
    .bind(c.updated_at)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(if written == 1 { Applied::Written } else { Applied::Stale })
}
