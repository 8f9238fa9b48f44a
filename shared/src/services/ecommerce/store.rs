//! Writes the model into the tenant's mirrors, inside the caller's transaction, a batch (a sync
//! page, or a webhook's one record) per statement: one upsert per table, not one per record. A
//! record replaces the stored one only when it is at least as new (`source_updated_at`):
//! applying a delivery twice, late, or overlapping a sync page changes nothing. Within a batch,
//! the newest version of a record wins (a page can hold one twice when it changed mid-pass).
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::types::Json;
use std::collections::HashMap;
use uuid::Uuid;

use super::{Channel, CustomerRecord, OrderRecord, ProductRecord};
use crate::adapters::pg::Tx;
use crate::domain::DomainError;

/// What a batch did: records written, and records whose stored version is newer (unchanged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub written: u64,
    pub stale: u64,
}

/// The newest version of each record of a batch, first appearance first.
fn newest<T>(records: &[T], key: impl Fn(&T) -> (Channel, &str), at: impl Fn(&T) -> DateTime<Utc>) -> Vec<&T> {
    let mut index: HashMap<(Channel, &str), usize> = HashMap::new();
    let mut out: Vec<&T> = Vec::with_capacity(records.len());
    for r in records {
        match index.get(&key(r)).copied() {
            Some(i) => {
                if let Some(slot) = out.get_mut(i)
                    && at(r) >= at(slot)
                {
                    *slot = r;
                }
            }
            None => {
                index.insert(key(r), out.len());
                out.push(r);
            }
        }
    }
    out
}

fn applied(total: usize, written: usize) -> Applied {
    Applied {
        written: written as u64,
        stale: total.saturating_sub(written) as u64,
    }
}

pub async fn orders(tx: &mut Tx, tenant: Uuid, records: &[OrderRecord]) -> Result<Applied, DomainError> {
    let batch = newest(records, |o| (o.channel, o.external_id.as_str()), |o| o.updated_at);
    if batch.is_empty() {
        return Ok(Applied::default());
    }
    let rows: Vec<Value> = batch
        .iter()
        .map(|o| {
            json!({"id": Uuid::now_v7(), "channel": o.channel, "external_id": o.external_id, "number": o.number,
                   "status": o.status, "raw_status": o.raw_status, "financial_status": o.financial_status,
                   "fulfillment_status": o.fulfillment_status, "currency": o.currency, "total_minor": o.total_minor,
                   "subtotal_minor": o.subtotal_minor, "tax_minor": o.tax_minor, "shipping_minor": o.shipping_minor,
                   "discount_minor": o.discount_minor, "refunded_minor": o.refunded_minor,
                   "customer_external_id": o.customer_external_id, "email": o.email, "placed_at": o.placed_at,
                   "cancelled_at": o.cancelled_at, "source_updated_at": o.updated_at, "test": o.test})
        })
        .collect();
    let written: Vec<(Uuid, Channel, String)> = sqlx::query_as(
        "insert into ecom_orders (id, tenant_id, channel, external_id, number, status, raw_status, financial_status, \
         fulfillment_status, currency, total_minor, subtotal_minor, tax_minor, shipping_minor, discount_minor, \
         refunded_minor, customer_external_id, email, placed_at, cancelled_at, source_updated_at, test) \
         select r.id, $1, r.channel, r.external_id, r.number, r.status, r.raw_status, r.financial_status, \
           r.fulfillment_status, r.currency, r.total_minor, r.subtotal_minor, r.tax_minor, r.shipping_minor, \
           r.discount_minor, r.refunded_minor, r.customer_external_id, r.email, r.placed_at, r.cancelled_at, \
           r.source_updated_at, r.test \
         from jsonb_to_recordset($2) as r(id uuid, channel text, external_id text, number text, status text, \
           raw_status text, financial_status text, fulfillment_status text, currency text, total_minor bigint, \
           subtotal_minor bigint, tax_minor bigint, shipping_minor bigint, discount_minor bigint, \
           refunded_minor bigint, customer_external_id text, email text, placed_at timestamptz, \
           cancelled_at timestamptz, source_updated_at timestamptz, test boolean) \
         on conflict (tenant_id, channel, external_id) do update set number = excluded.number, \
           status = excluded.status, raw_status = excluded.raw_status, financial_status = excluded.financial_status, \
           fulfillment_status = excluded.fulfillment_status, currency = excluded.currency, \
           total_minor = excluded.total_minor, subtotal_minor = excluded.subtotal_minor, tax_minor = excluded.tax_minor, \
           shipping_minor = excluded.shipping_minor, discount_minor = excluded.discount_minor, \
           refunded_minor = excluded.refunded_minor, customer_external_id = excluded.customer_external_id, \
           email = excluded.email, placed_at = excluded.placed_at, cancelled_at = excluded.cancelled_at, \
           source_updated_at = excluded.source_updated_at, test = excluded.test, synced_at = now() \
         where ecom_orders.source_updated_at <= excluded.source_updated_at \
         returning id, channel, external_id",
    )
    .bind(tenant)
    .bind(Json(rows))
    .fetch_all(&mut **tx)
    .await?;
    if written.is_empty() {
        return Ok(applied(batch.len(), 0));
    }
    // The written orders' lines are replaced by the version just written.
    let ids: Vec<Uuid> = written.iter().map(|(id, _, _)| *id).collect();
    sqlx::query("delete from ecom_order_lines where order_id = any($1)")
        .bind(&ids)
        .execute(&mut **tx)
        .await?;
    let by_key: HashMap<(Channel, &str), &OrderRecord> = batch
        .iter()
        .map(|o| ((o.channel, o.external_id.as_str()), *o))
        .collect();
    let lines: Vec<Value> = written
        .iter()
        .filter_map(|(id, channel, external_id)| Some((id, by_key.get(&(*channel, external_id.as_str()))?)))
        .flat_map(|(id, o)| {
            o.lines.iter().map(move |l| {
                json!({"order_id": id, "external_id": l.external_id, "product_external_id": l.product_external_id,
                       "variant_external_id": l.variant_external_id, "sku": l.sku, "title": l.title,
                       "quantity": l.quantity, "unit_price_minor": l.unit_price_minor, "total_minor": l.total_minor})
            })
        })
        .collect();
    if !lines.is_empty() {
        sqlx::query(
            "insert into ecom_order_lines (tenant_id, order_id, external_id, product_external_id, variant_external_id, \
             sku, title, quantity, unit_price_minor, total_minor) \
             select $1, r.order_id, r.external_id, r.product_external_id, r.variant_external_id, r.sku, r.title, \
             r.quantity, r.unit_price_minor, r.total_minor from jsonb_to_recordset($2) as r(order_id uuid, \
             external_id text, product_external_id text, variant_external_id text, sku text, title text, \
             quantity integer, unit_price_minor bigint, total_minor bigint) \
             on conflict (order_id, external_id) do nothing",
        )
        .bind(tenant)
        .bind(Json(lines))
        .execute(&mut **tx)
        .await?;
    }
    Ok(applied(batch.len(), written.len()))
}

pub async fn products(tx: &mut Tx, tenant: Uuid, records: &[ProductRecord]) -> Result<Applied, DomainError> {
    let batch = newest(records, |p| (p.channel, p.external_id.as_str()), |p| p.updated_at);
    if batch.is_empty() {
        return Ok(Applied::default());
    }
    let rows: Vec<Value> = batch
        .iter()
        .map(|p| {
            json!({"id": Uuid::now_v7(), "channel": p.channel, "external_id": p.external_id, "title": p.title,
                   "status": p.status, "raw_status": p.raw_status, "vendor": p.vendor,
                   "product_type": p.product_type, "handle": p.handle, "tags": p.tags,
                   "source_created_at": p.created_at, "source_updated_at": p.updated_at})
        })
        .collect();
    let written: Vec<(Uuid, Channel, String)> = sqlx::query_as(
        "insert into ecom_products (id, tenant_id, channel, external_id, title, status, raw_status, vendor, \
         product_type, handle, tags, source_created_at, source_updated_at) \
         select r.id, $1, r.channel, r.external_id, r.title, r.status, r.raw_status, r.vendor, r.product_type, \
           r.handle, coalesce(r.tags, '{}'), r.source_created_at, r.source_updated_at \
         from jsonb_to_recordset($2) as r(id uuid, channel text, external_id text, title text, status text, \
           raw_status text, vendor text, product_type text, handle text, tags text[], source_created_at timestamptz, \
           source_updated_at timestamptz) \
         on conflict (tenant_id, channel, external_id) do update set title = excluded.title, \
           status = excluded.status, raw_status = excluded.raw_status, vendor = excluded.vendor, \
           product_type = excluded.product_type, handle = excluded.handle, tags = excluded.tags, \
           source_created_at = excluded.source_created_at, source_updated_at = excluded.source_updated_at, \
           synced_at = now() \
         where ecom_products.source_updated_at <= excluded.source_updated_at \
         returning id, channel, external_id",
    )
    .bind(tenant)
    .bind(Json(rows))
    .fetch_all(&mut **tx)
    .await?;
    let by_key: HashMap<(Channel, &str), &ProductRecord> = batch
        .iter()
        .map(|p| ((p.channel, p.external_id.as_str()), *p))
        .collect();
    let variants: Vec<Value> = written
        .iter()
        .filter_map(|(id, channel, external_id)| Some((id, by_key.get(&(*channel, external_id.as_str()))?)))
        .flat_map(|(id, p)| {
            p.variants.iter().map(move |v| {
                json!({"id": Uuid::now_v7(), "product_id": id, "external_id": v.external_id, "title": v.title,
                       "sku": v.sku, "price_minor": v.price_minor, "currency": v.currency,
                       "inventory_quantity": v.inventory_quantity})
            })
        })
        .collect();
    // The written products' variants are the new version's: the ones it no longer has go.
    let written_ids: Vec<Uuid> = written.iter().map(|(id, _, _)| *id).collect();
    if !written_ids.is_empty() {
        sqlx::query(
            "delete from ecom_variants v where v.product_id = any($1) and not exists (select 1 \
             from jsonb_to_recordset($2) as r(product_id uuid, external_id text) \
             where r.product_id = v.product_id and r.external_id = v.external_id)",
        )
        .bind(&written_ids)
        .bind(Json(&variants))
        .execute(&mut **tx)
        .await?;
    }
    if !variants.is_empty() {
        sqlx::query(
            "insert into ecom_variants (id, tenant_id, product_id, external_id, title, sku, price_minor, currency, \
             inventory_quantity) \
             select r.id, $1, r.product_id, r.external_id, r.title, r.sku, r.price_minor, r.currency, \
             r.inventory_quantity \
             from jsonb_to_recordset($2) as r(id uuid, product_id uuid, external_id text, title text, sku text, \
             price_minor bigint, currency text, inventory_quantity integer) \
             on conflict (product_id, external_id) do update set title = excluded.title, sku = excluded.sku, \
               price_minor = excluded.price_minor, currency = excluded.currency, \
               inventory_quantity = excluded.inventory_quantity",
        )
        .bind(tenant)
        .bind(Json(variants))
        .execute(&mut **tx)
        .await?;
    }
    Ok(applied(batch.len(), written.len()))
}

pub async fn customers(tx: &mut Tx, tenant: Uuid, records: &[CustomerRecord]) -> Result<Applied, DomainError> {
    let batch = newest(records, |c| (c.channel, c.external_id.as_str()), |c| c.updated_at);
    if batch.is_empty() {
        return Ok(Applied::default());
    }
    let rows: Vec<Value> = batch
        .iter()
        .map(|c| {
            json!({"id": Uuid::now_v7(), "channel": c.channel, "external_id": c.external_id, "email": c.email,
                   "first_name": c.first_name, "last_name": c.last_name, "phone": c.phone, "city": c.city,
                   "country": c.country, "source_created_at": c.created_at, "source_updated_at": c.updated_at})
        })
        .collect();
    let written = sqlx::query(
        "insert into ecom_customers (id, tenant_id, channel, external_id, email, first_name, last_name, phone, city, \
         country, source_created_at, source_updated_at) \
         select r.id, $1, r.channel, r.external_id, r.email, r.first_name, r.last_name, r.phone, r.city, r.country, \
           r.source_created_at, r.source_updated_at \
         from jsonb_to_recordset($2) as r(id uuid, channel text, external_id text, email text, first_name text, \
           last_name text, phone text, city text, country text, source_created_at timestamptz, \
           source_updated_at timestamptz) \
         on conflict (tenant_id, channel, external_id) do update set email = excluded.email, \
           first_name = excluded.first_name, last_name = excluded.last_name, phone = excluded.phone, \
           city = excluded.city, country = excluded.country, source_created_at = excluded.source_created_at, \
           source_updated_at = excluded.source_updated_at, synced_at = now() \
         where ecom_customers.source_updated_at <= excluded.source_updated_at",
    )
    .bind(tenant)
    .bind(Json(rows))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(applied(batch.len(), usize::try_from(written).unwrap_or(usize::MAX)))
}
