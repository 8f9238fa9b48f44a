//! Unified e-commerce: one model of products (with variants), orders (with lines) and
//! customers across channels (`shopify`, `woocommerce`), mapped from each channel's JSON
//! (`shopify`, `woocommerce`) and mirrored into Postgres by `store`. Money in minor units
//! (`domain::money`), provider ids as text (64-bit, never through a float), the channel's raw
//! status kept beside the normalised one.
pub mod read;
pub mod shopify;
pub mod store;
pub mod sync;
pub mod woocommerce;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Channel {
    Shopify,
    Woocommerce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Paid,
    Fulfilled,
    PartiallyRefunded,
    Refunded,
    Cancelled,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ProductStatus {
    Active,
    Draft,
    Archived,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRecord {
    pub external_id: String,
    pub product_external_id: Option<String>,
    pub variant_external_id: Option<String>,
    pub sku: Option<String>,
    pub title: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub total_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub channel: Channel,
    pub external_id: String,
    pub number: String,
    pub status: OrderStatus,
    pub raw_status: String,
    pub financial_status: Option<String>,
    pub fulfillment_status: Option<String>,
    pub currency: String,
    pub total_minor: i64,
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    pub shipping_minor: i64,
    pub discount_minor: i64,
    pub refunded_minor: i64,
    pub customer_external_id: Option<String>,
    pub email: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub test: bool,
    pub lines: Vec<LineRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantRecord {
    pub external_id: String,
    pub title: String,
    pub sku: Option<String>,
    pub price_minor: i64,
    pub currency: String,
    pub inventory_quantity: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRecord {
    pub channel: Channel,
    pub external_id: String,
    pub title: String,
    pub status: ProductStatus,
    pub raw_status: String,
    pub vendor: Option<String>,
    pub product_type: Option<String>,
    pub handle: Option<String>,
    pub tags: Vec<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub variants: Vec<VariantRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRecord {
    pub channel: Channel,
    pub external_id: String,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// Why a channel's JSON could not be mapped (names the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct MapError {
    pub field: String,
    pub reason: String,
}

pub(crate) fn map_error(field: &str, reason: impl Into<String>) -> MapError {
    MapError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// A provider id: a JSON integer (read as an integer, never a float) or a string of digits.
pub(crate) fn id_of(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        Value::String(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => Some(s.clone()),
        _ => None,
    }
    .filter(|id| id != "0")
}

pub(crate) fn text(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// RFC 3339 with an offset (Shopify), or WooCommerce's `*_gmt` form without one (UTC).
pub(crate) fn time(value: &Value, key: &str) -> Option<DateTime<Utc>> {
    let raw = value.get(key)?.as_str()?;
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
                .ok()
                .map(|t| t.and_utc())
        })
}

pub(crate) fn money(value: &Value, key: &str, currency: &str) -> Result<i64, MapError> {
    match value.get(key) {
        None => Ok(0),
        Some(v) => crate::domain::money::value_to_minor(v, currency).map_err(|e| map_error(key, e.to_string())),
    }
}

pub(crate) fn currency_of(value: &Value, key: &str) -> Result<String, MapError> {
    let c = text(value, key)
        .ok_or_else(|| map_error(key, "missing"))?
        .to_ascii_uppercase();
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(c)
    } else {
        Err(map_error(key, format!("{c:?} is not an ISO 4217 code")))
    }
}
