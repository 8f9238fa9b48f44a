//! Unified e-commerce: one model of products (with variants), orders (with lines) and
//! customers across channels (Shopify, WooCommerce), mapped from each channel's JSON by its
//! provider client (`providers::shopify`, `providers::woocommerce`) and mirrored into Postgres
//! by `store`. Money in minor units
//! (`domain::money`), provider ids as text (64-bit, never through a float), the channel's raw
//! status kept beside the normalised one.
pub mod read;
pub mod store;
pub mod sync;

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

/// The items of the array at `key` (none when it is absent or not an array).
pub(crate) fn items<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// A whole number that fits an `i32` (quantities, stock).
pub(crate) fn count(value: &Value, key: &str) -> Option<i32> {
    value
        .get(key)
        .and_then(Value::as_i64)
        .and_then(|q| i32::try_from(q).ok())
}

/// The last change: the time at `key`, else the creation; neither is an error naming `key`.
pub(crate) fn updated_at(value: &Value, key: &str, created: Option<DateTime<Utc>>) -> Result<DateTime<Utc>, MapError> {
    time(value, key)
        .or(created)
        .ok_or_else(|| map_error(key, "missing or not a time"))
}

/// Where a channel keeps a customer's fields: names and email at the top, the place (and for
/// some the phone) in an address object, the times under the channel's own names.
pub(crate) struct CustomerFields {
    pub channel: Channel,
    /// The address object: `default_address` (Shopify), `billing` (WooCommerce).
    pub address: &'static str,
    /// The phone is the address's, not the customer's own.
    pub phone_in_address: bool,
    /// The address's country code.
    pub country: &'static str,
    pub created: &'static str,
    pub updated: &'static str,
}

impl CustomerFields {
    /// The customer `v`, known by `external_id` (each channel reads its id its own way).
    pub(crate) fn customer(&self, v: &Value, external_id: String) -> Result<CustomerRecord, MapError> {
        let address = v.get(self.address).unwrap_or(&Value::Null);
        let created = time(v, self.created);
        Ok(CustomerRecord {
            channel: self.channel,
            external_id,
            email: text(v, "email"),
            first_name: text(v, "first_name").unwrap_or_default(),
            last_name: text(v, "last_name").unwrap_or_default(),
            phone: text(if self.phone_in_address { address } else { v }, "phone"),
            city: text(address, "city"),
            country: text(address, self.country),
            updated_at: updated_at(v, self.updated, created)?,
            created_at: created,
        })
    }
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
