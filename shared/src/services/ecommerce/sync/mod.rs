//! Incremental sync of a shop's products, orders and customers into the mirrors.
//!
//! Per resource, a pass reads pages of records changed since the last pass's watermark (less an
//! overlap of 5 minutes: clocks and in-flight writes), oldest change first — Shopify Admin REST
//! with `updated_at_min` and cursor pages (`Link: <…page_info=…>; rel="next"`), WooCommerce REST
//! v3 with `modified_after` and numbered pages. Each page's records and the pass's state (next
//! page, newest change seen) commit together, so a pass that fails — the shop down, a rate limit
//! that does not lift — resumes at its next page and applies nothing twice (the mirrors are
//! newest-wins besides). Rate limits are respected: `429` waits `Retry-After`; Shopify's call
//! limit header (`X-Shopify-Shop-Api-Call-Limit: 38/40`) slows down before the bucket is full.
mod runs;
pub use runs::*;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

use super::{Channel, MapError, store};
use crate::adapters::pg;
use crate::domain::{DomainError, Scope};
use crate::services::connectors::catalog::Kind;
use crate::services::connectors::{Connectors, Credentials, Retry};
use crate::services::providers::{shopify, woocommerce};

pub const RESOURCES: [&str; 3] = ["products", "orders", "customers"];
const OVERLAP_MINUTES: i64 = 5;

#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Records per page (Shopify at most 250, WooCommerce 100).
    pub page_size: u32,
    /// Tries of one page before the pass fails (429s and 5xx).
    pub tries: u32,
    /// The longest wait honoured from a `Retry-After` (and the backoff's cap).
    pub max_wait: Duration,
}

impl SyncOptions {
    fn retry(&self) -> Retry {
        Retry {
            tries: self.tries,
            max_wait: self.max_wait,
            deadline: None,
        }
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            page_size: 100,
            tries: 5,
            max_wait: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResourceCounts {
    pub pages: u64,
    pub fetched: u64,
    pub written: u64,
    /// Older than the stored version (an overlap or a late page): nothing changed.
    pub unchanged: u64,
    /// Records that could not be mapped (logged with the field), skipped.
    pub invalid: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ShopSyncError {
    #[error("{0}")]
    Provider(String),
    #[error(transparent)]
    Domain(#[from] DomainError),
}

fn channel_of(kind: Kind) -> Option<Channel> {
    match kind {
        Kind::Shopify => Some(Channel::Shopify),
        Kind::Woocommerce => Some(Channel::Woocommerce),
        _ => None,
    }
}

/// A page fetched: its records and where the next one is.
struct Page {
    records: Vec<Value>,
    next: Option<String>,
}

/// The first page of `resource` changed since `since` (less the overlap), in the channel's paging.
fn first_page(channel: Channel, resource: &str, since: Option<DateTime<Utc>>, page_size: u32) -> String {
    let since = since.map(|w| {
        (w - ChronoDuration::minutes(OVERLAP_MINUTES))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    });
    match channel {
        Channel::Shopify => shopify::first_page(resource, since.as_deref(), page_size),
        Channel::Woocommerce => woocommerce::first_page(resource, since.as_deref(), page_size),
    }
}

async fn fetch(svc: &Connectors, creds: &Credentials, path: &str, opts: &SyncOptions) -> Result<Page, ShopSyncError> {
    let channel = channel_of(creds.kind).ok_or_else(|| ShopSyncError::Provider("not a shop".into()))?;
    let resp = svc
        .call(creds, path, opts.retry())
        .await
        .map_err(|e| ShopSyncError::Provider(e.to_string()))?;
    if channel == Channel::Shopify && shopify::bucket_nearly_full(resp.headers()) {
        tokio::time::sleep(Duration::from_millis(500).min(opts.max_wait)).await;
    }
    let host = resp.url().host_str().unwrap_or_default().to_owned();
    let link = resp
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let total_pages = resp
        .headers()
        .get("x-wp-totalpages")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body: Value = crate::services::connectors::answer_json(resp)
        .await
        .map_err(|e| ShopSyncError::Provider(format!("the shop's answer: {e}")))?;
    let records = match channel {
        Channel::Shopify => shopify::records(&body),
        Channel::Woocommerce => woocommerce::records(&body),
    };
    let next = match channel {
        Channel::Shopify => link.as_deref().and_then(|l| shopify::next_page(l, &host)),
        Channel::Woocommerce if records.is_empty() => None,
        Channel::Woocommerce => woocommerce::next_page(path, total_pages),
    };
    Ok(Page { records, next })
}

/// A WooCommerce variable product's variants: its variations (`GET /products/{id}/variations`,
/// every page), which the product itself lists by id only. Other products are left as mapped.
async fn with_variations(
    svc: &Connectors,
    creds: &Credentials,
    product: &mut super::ProductRecord,
    currency: &str,
    opts: &SyncOptions,
) -> Result<(), ShopSyncError> {
    if product.channel != Channel::Woocommerce || product.product_type.as_deref() != Some("variable") {
        return Ok(());
    }
    let mut variants = Vec::new();
    let mut path = woocommerce::variations_path(&product.external_id);
    loop {
        let page = fetch(svc, creds, &path, opts).await?;
        for v in &page.records {
            match woocommerce::variation(v, currency) {
                Ok(variant) => variants.push(variant),
                Err(e) => tracing::warn!(product = %product.external_id, error = %e, "variation skipped"),
            }
        }
        match page.next {
            Some(next) => path = next,
            None => break,
        }
    }
    product.variants = variants;
    Ok(())
}

/// The shop's currency (products do not carry it): Shopify's shop resource, WooCommerce's
/// general setting.
async fn shop_currency(svc: &Connectors, creds: &Credentials, opts: &SyncOptions) -> Result<String, ShopSyncError> {
    let path = match creds.kind {
        Kind::Shopify => shopify::SHOP_PATH,
        _ => woocommerce::CURRENCY_PATH,
    };
    let resp = svc
        .call(creds, path, opts.retry())
        .await
        .map_err(|e| ShopSyncError::Provider(e.to_string()))?;
    let body: Value = crate::services::connectors::answer_json(resp)
        .await
        .map_err(|e| ShopSyncError::Provider(format!("the shop's answer: {e}")))?;
    body.pointer(shopify::SHOP_CURRENCY)
        .or_else(|| body.get("value"))
        .and_then(Value::as_str)
        .filter(|c| c.len() == 3)
        .map(str::to_ascii_uppercase)
        .ok_or_else(|| ShopSyncError::Provider("the shop did not say its currency".into()))
}

enum Mapped {
    Order(Box<super::OrderRecord>),
    Product(Box<super::ProductRecord>),
    Customer(Box<super::CustomerRecord>),
    Skip,
}

fn map(channel: Channel, resource: &str, v: &Value, currency: &str) -> Result<Mapped, MapError> {
    Ok(match (channel, resource) {
        (Channel::Shopify, "orders") => Mapped::Order(Box::new(shopify::order(v)?)),
        (Channel::Shopify, "products") => Mapped::Product(Box::new(shopify::product(v, currency)?)),
        (Channel::Shopify, _) => Mapped::Customer(Box::new(shopify::customer(v)?)),
        (Channel::Woocommerce, "orders") => match woocommerce::order(v)? {
            Some(o) => Mapped::Order(Box::new(o)),
            None => Mapped::Skip,
        },
        (Channel::Woocommerce, "products") => Mapped::Product(Box::new(woocommerce::product(v, currency)?)),
        (Channel::Woocommerce, _) => Mapped::Customer(Box::new(woocommerce::customer(v)?)),
    })
}

/// One pass over every resource of the tenant's shop connector of `kind`.
pub async fn sync(
    svc: &Connectors,
    scope: &Scope,
    kind: Kind,
    opts: &SyncOptions,
) -> Result<Vec<(&'static str, ResourceCounts)>, ShopSyncError> {
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let channel = channel_of(kind).ok_or(DomainError::NotFound)?;
    let creds = svc.credentials(scope, kind).await?.ok_or(DomainError::NotFound)?;
    let currency = shop_currency(svc, &creds, opts).await?;
    remember_currency(svc, scope, kind, &currency).await?;
    let mut report = Vec::new();
    for resource in RESOURCES {
        let mut counts = ResourceCounts::default();
        let state: Option<(Option<DateTime<Utc>>, Option<String>)> = {
            let mut tx = pg::begin(&svc.db, scope).await?;
            let s = sqlx::query_as(
                "select watermark, next_page from connector_sync_state where kind = $1 and resource = $2",
            )
            .bind(kind.as_str())
            .bind(resource)
            .fetch_optional(&mut *tx)
            .await
            .map_err(DomainError::from)?;
            tx.commit().await.map_err(DomainError::from)?;
            s
        };
        let (watermark, resume) = state.unwrap_or((None, None));
        let mut path = resume.unwrap_or_else(|| first_page(channel, resource, watermark, opts.page_size));
        loop {
            let page = fetch(svc, &creds, &path, opts).await?;
            counts.pages += 1;
            counts.fetched += page.records.len() as u64;
            let mut newest: Option<DateTime<Utc>> = None;
            let (mut orders, mut products, mut customers) = (Vec::new(), Vec::new(), Vec::new());
            for record in &page.records {
                match map(channel, resource, record, &currency) {
                    Ok(Mapped::Order(o)) => {
                        newest = newest.max(Some(o.updated_at));
                        orders.push(*o);
                    }
                    Ok(Mapped::Product(p)) => {
                        newest = newest.max(Some(p.updated_at));
                        products.push(*p);
                    }
                    Ok(Mapped::Customer(c)) => {
                        newest = newest.max(Some(c.updated_at));
                        customers.push(*c);
                    }
                    Ok(Mapped::Skip) => {}
                    Err(e) => {
                        tracing::warn!(kind = kind.as_str(), resource, error = %e, "record skipped");
                        counts.invalid += 1;
                    }
                }
            }
            for p in &mut products {
                with_variations(svc, &creds, p, &currency, opts).await?;
            }
            // One statement per table for the page, committed with the pass's position.
            let mut tx = pg::begin(&svc.db, scope).await?;
            pg::fresh_plans(&mut tx).await?;
            for applied in [
                store::orders(&mut tx, tenant, &orders).await?,
                store::products(&mut tx, tenant, &products).await?,
                store::customers(&mut tx, tenant, &customers).await?,
            ] {
                counts.written += applied.written;
                counts.unchanged += applied.stale;
            }
            // The page and where the pass goes on, together. At the end of the pass, its
            // newest change becomes the watermark.
            sqlx::query(
                "insert into connector_sync_state (tenant_id, kind, resource, next_page, pass_newest) \
                 values ($1, $2, $3, $4, $5) \
                 on conflict (tenant_id, kind, resource) do update set next_page = excluded.next_page, \
                   pass_newest = greatest(connector_sync_state.pass_newest, excluded.pass_newest), updated_at = now()",
            )
            .bind(tenant)
            .bind(kind.as_str())
            .bind(resource)
            .bind(&page.next)
            .bind(newest)
            .execute(&mut *tx)
            .await
            .map_err(DomainError::from)?;
            if page.next.is_none() {
                sqlx::query(
                    "update connector_sync_state set watermark = greatest(watermark, pass_newest), \
                     pass_newest = null where kind = $1 and resource = $2",
                )
                .bind(kind.as_str())
                .bind(resource)
                .execute(&mut *tx)
                .await
                .map_err(DomainError::from)?;
            }
            tx.commit().await.map_err(DomainError::from)?;
            match page.next {
                Some(next) => path = next,
                None => break,
            }
        }
        report.push((resource, counts));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_link_headers_and_page_numbers() {
        let link = "<https://shop.example.com/admin/api/2025-01/orders.json?page_info=abc&limit=250>; rel=\"next\", \
                    <https://shop.example.com/admin/api/2025-01/orders.json?page_info=zzz&limit=250>; rel=\"previous\"";
        assert_eq!(
            shopify::next_page(link, "shop.example.com").as_deref(),
            Some("/admin/api/2025-01/orders.json?page_info=abc&limit=250")
        );
        assert_eq!(shopify::next_page(link, "evil.example.com"), None);
        assert_eq!(
            woocommerce::next_page("/wp-json/wc/v3/orders?per_page=100&page=2&orderby=modified", Some(3)).as_deref(),
            Some("/wp-json/wc/v3/orders?per_page=100&page=3&orderby=modified")
        );
        assert_eq!(
            woocommerce::next_page("/wp-json/wc/v3/orders?per_page=100&page=3", Some(3)),
            None
        );
        assert_eq!(
            woocommerce::next_page("/wp-json/wc/v3/products/93/variations?per_page=100&page=1", None).as_deref(),
            Some("/wp-json/wc/v3/products/93/variations?per_page=100&page=2")
        );
        let w = DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(
            first_page(Channel::Shopify, "orders", Some(w), 500)
                .contains("limit=250&status=any&updated_at_min=2026-01-01T00:05:00Z")
        );
        assert!(first_page(Channel::Woocommerce, "customers", Some(w), 100).ends_with("orderby=id&order=asc"));
    }
}

async fn remember_currency(svc: &Connectors, scope: &Scope, kind: Kind, currency: &str) -> Result<(), DomainError> {
    let mut tx = pg::begin(&svc.db, scope).await?;
    sqlx::query("update connectors set shop_currency = $2 where kind = $1")
        .bind(kind.as_str())
        .bind(currency)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// What applying a webhook delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Applied,
    /// Older than the stored record: nothing changed.
    Unchanged,
    /// Applied before (a redelivered message).
    AlreadyApplied,
    /// A topic the mirrors do not keep (recorded as applied).
    Ignored,
    /// The body could not be mapped: recorded with the reason, not retried.
    Invalid,
}

/// Applies one recorded webhook delivery to the mirrors, once.
pub async fn apply_delivery(
    svc: &Connectors,
    message: &crate::services::connectors::webhooks::DeliveryMessage,
    opts: &SyncOptions,
) -> Result<DeliveryOutcome, ShopSyncError> {
    let scope = Scope::worker(message.tenant_id, "", format!("delivery:{}", message.delivery));
    let kind = message.kind;
    let Some(channel) = channel_of(kind) else {
        mark_applied(svc, &scope, message.delivery, None).await?;
        return Ok(DeliveryOutcome::Ignored);
    };
    let currency = {
        let mut tx = pg::begin(&svc.db, &scope).await?;
        let c: Option<Option<String>> = sqlx::query_scalar("select shop_currency from connectors where kind = $1")
            .bind(kind.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(DomainError::from)?;
        tx.commit().await.map_err(DomainError::from)?;
        c.flatten()
    };
    let mut tx = pg::begin(&svc.db, &scope).await?;
    // A pruned body belongs to a delivery applied long ago: `applied_at` is set whenever it is.
    type DeliveryRow = (Option<String>, Option<String>, Option<DateTime<Utc>>);
    let row: Option<DeliveryRow> =
        sqlx::query_as("select topic, body, applied_at from connector_deliveries where id = $1 for update")
            .bind(message.delivery)
            .fetch_optional(&mut *tx)
            .await
            .map_err(DomainError::from)?;
    let Some((topic, body, applied_at)) = row else {
        return Ok(DeliveryOutcome::Ignored);
    };
    let (None, Some(body)) = (applied_at, body) else {
        return Ok(DeliveryOutcome::AlreadyApplied);
    };
    let topic = topic.unwrap_or_default();
    let resource = topic.split(['/', '.']).next().unwrap_or_default();
    let action = topic.split(['/', '.']).nth(1).unwrap_or_default();
    let value: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            finish_delivery(&mut tx, message.delivery, Some(&format!("not JSON: {e}"))).await?;
            tx.commit().await.map_err(DomainError::from)?;
            return Ok(DeliveryOutcome::Invalid);
        }
    };
    let tenant = message.tenant_id;
    let outcome = match (resource, action) {
        ("app", "uninstalled") => {
            sqlx::query(
                "update connectors set status = 'error', last_error = 'The app was uninstalled from the store: \
                 install it again and save a new access token.', updated_at = now() where kind = $1",
            )
            .bind(kind.as_str())
            .execute(&mut *tx)
            .await
            .map_err(DomainError::from)?;
            Ok(DeliveryOutcome::Applied)
        }
        ("orders" | "order" | "products" | "product", "delete" | "deleted") => {
            let table = if resource.starts_with("order") {
                "ecom_orders"
            } else {
                "ecom_products"
            };
            let id = value.get("id").and_then(super::id_of);
            sqlx::query(&format!("delete from {table} where channel = $1 and external_id = $2"))
                .bind(channel)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(DomainError::from)?;
            Ok(DeliveryOutcome::Applied)
        }
        ("orders" | "order", _) => match map(channel, "orders", &value, "") {
            Ok(Mapped::Order(o)) => Ok(applied(
                store::orders(&mut tx, tenant, std::slice::from_ref(&*o)).await?,
            )),
            Ok(_) => Ok(DeliveryOutcome::Ignored),
            Err(e) => Err(e),
        },
        ("customers" | "customer", _) => match map(channel, "customers", &value, "") {
            Ok(Mapped::Customer(c)) => Ok(applied(
                store::customers(&mut tx, tenant, std::slice::from_ref(&*c)).await?,
            )),
            Ok(_) => Ok(DeliveryOutcome::Ignored),
            Err(e) => Err(e),
        },
        ("products" | "product", _) => {
            let currency = match currency {
                Some(c) => c,
                None => {
                    let creds = svc.credentials(&scope, kind).await?.ok_or(DomainError::NotFound)?;
                    let c = shop_currency(svc, &creds, opts).await?;
                    sqlx::query("update connectors set shop_currency = $2 where kind = $1")
                        .bind(kind.as_str())
                        .bind(&c)
                        .execute(&mut *tx)
                        .await
                        .map_err(DomainError::from)?;
                    c
                }
            };
            match map(channel, "products", &value, &currency) {
                Ok(Mapped::Product(mut p)) => {
                    let variations = if p.product_type.as_deref() == Some("variable") {
                        let creds = svc.credentials(&scope, kind).await?.ok_or(DomainError::NotFound)?;
                        with_variations(svc, &creds, &mut p, &currency, opts).await
                    } else {
                        Ok(())
                    };
                    match variations {
                        Ok(()) => Ok(applied(
                            store::products(&mut tx, tenant, std::slice::from_ref(&*p)).await?,
                        )),
                        // Recorded, not retried: the next sync pass reads the product again.
                        Err(ShopSyncError::Provider(why)) => Err(super::map_error("variations", why)),
                        Err(e @ ShopSyncError::Domain(_)) => return Err(e),
                    }
                }
                Ok(_) => Ok(DeliveryOutcome::Ignored),
                Err(e) => Err(e),
            }
        }
        _ => Ok(DeliveryOutcome::Ignored),
    };
    let outcome = match outcome {
        Ok(o) => {
            finish_delivery(&mut tx, message.delivery, None).await?;
            o
        }
        Err(e) => {
            tracing::warn!(delivery = %message.delivery, error = %e, "delivery could not be mapped");
            finish_delivery(&mut tx, message.delivery, Some(&e.to_string())).await?;
            DeliveryOutcome::Invalid
        }
    };
    tx.commit().await.map_err(DomainError::from)?;
    Ok(outcome)
}

fn applied(a: store::Applied) -> DeliveryOutcome {
    if a.written > 0 {
        DeliveryOutcome::Applied
    } else {
        DeliveryOutcome::Unchanged
    }
}

async fn finish_delivery(tx: &mut pg::Tx, id: uuid::Uuid, error: Option<&str>) -> Result<(), DomainError> {
    sqlx::query("update connector_deliveries set applied_at = now(), error = $2 where id = $1")
        .bind(id)
        .bind(error)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn mark_applied(svc: &Connectors, scope: &Scope, id: uuid::Uuid, error: Option<&str>) -> Result<(), DomainError> {
    let mut tx = pg::begin(&svc.db, scope).await?;
    finish_delivery(&mut tx, id, error).await?;
    tx.commit().await?;
    Ok(())
}
