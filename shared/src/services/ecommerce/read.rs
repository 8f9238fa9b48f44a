//! The read side of the unified e-commerce mirrors (`GET /ecommerce/...`): products with their
//! variants, orders with their lines and customer, and the sales summary per channel, currency
//! and period. Read-only: the mirrors are written by `connector-sync` alone.
//!
//! Sales are counted the way a shop's own reports do: orders that were paid (`paid`,
//! `fulfilled`, `partially_refunded`, `refunded`), test orders left out, each in the period of
//! the day it was placed in the asked time zone. Money is never added across currencies: every
//! figure is per currency.
use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{Channel, OrderStatus, ProductStatus};
use crate::adapters::pg::{self, TimeKey, Tx};
use crate::domain::validate::OptionalTextSchema;
use crate::domain::{DomainError, PageParams, PageRequest, ResultPage, Scope, Text, Validator};

/// Days outside these years are refused.
const FIRST_YEAR: i32 = 2000;
const LAST_YEAR: i32 = 2100;
const MAX_Q: usize = 200;

// --------------------------------------------------------------------------------- ranges

/// A range of whole days, inclusive, in a time zone.
#[derive(Debug, Clone)]
struct DayRange {
    from: NaiveDate,
    to: NaiveDate,
    tz: String,
}

/// Checks `from`/`to`/`tz` (`tz` must be an IANA zone Postgres knows; UTC by default).
async fn day_range(
    tx: &mut Tx,
    v: &mut Validator,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    tz: Option<&str>,
    max_days: Option<i64>,
) -> Result<Option<DayRange>, DomainError> {
    // Blank is UTC; past 64 characters as sent is too long, blank or not.
    let tz = tz
        .filter(|t| !t.trim().is_empty() || t.chars().count() > 64)
        .unwrap_or("UTC");
    let tz = v
        .field("tz", Text::parse(tz, 1, 64))
        .map(Text::into_inner)
        .unwrap_or_default();
    let known = pg::known_timezone(&mut **tx, &tz).await?;
    if !known && !tz.is_empty() {
        v.error(
            "tz",
            "unknown_timezone",
            "must be an IANA time zone such as Europe/Berlin",
        );
    }
    for (field, day) in [("from", from), ("to", to)] {
        if let Some(day) = day
            && !(FIRST_YEAR..=LAST_YEAR).contains(&day.year())
        {
            v.error(
                field,
                "out_of_range",
                format!("must be a day between {FIRST_YEAR} and {LAST_YEAR}"),
            );
        }
    }
    let (from, to) = match (from, to, max_days) {
        (Some(f), Some(t), _) => (f, t),
        (None, None, None) => return Ok(None),
        (f, t, _) => {
            if f.is_none() && max_days.is_some() {
                v.error("from", "required", "is required (YYYY-MM-DD)");
            }
            if t.is_none() && max_days.is_some() {
                v.error("to", "required", "is required (YYYY-MM-DD)");
            }
            let lo = NaiveDate::from_ymd_opt(FIRST_YEAR, 1, 1).unwrap_or_default();
            let hi = NaiveDate::from_ymd_opt(LAST_YEAR, 12, 31).unwrap_or_default();
            (f.unwrap_or(lo), t.unwrap_or(hi))
        }
    };
    let days = (to - from).num_days() + 1;
    if days < 1 {
        v.error("to", "before_from", "must not be before from");
    } else if let Some(max) = max_days
        && days > max
    {
        v.error(
            "to",
            "range_too_long",
            format!("the range may span at most {max} days at this interval"),
        );
    }
    Ok(Some(DayRange { from, to, tz }))
}

fn search_term(q: Option<&str>, v: &mut Validator) -> Option<String> {
    let q = q.map(str::trim).filter(|q| !q.is_empty())?;
    v.field("q", Text::parse(q, 1, MAX_Q))
        .map(|t| t.into_inner().to_lowercase())
}

// ------------------------------------------------------------------------------- products

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProductListParams {
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
    #[param(value_type = Option<Channel>)]
    pub channel: Option<Channel>,
    #[param(value_type = Option<ProductStatus>)]
    pub status: Option<ProductStatus>,
    /// Words of the title, a SKU, the vendor or the product type (case-insensitive, contained;
    /// at most 200 characters).
    #[param(value_type = Option<OptionalTextSchema<200>>, inline)]
    pub q: Option<String>,
}

/// Prices of a product's variants in one currency.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PriceRange {
    pub currency: String,
    pub min_minor: i64,
    pub max_minor: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Product {
    pub id: Uuid,
    pub channel: Channel,
    /// The channel's id (64-bit, as text).
    pub external_id: String,
    pub title: String,
    pub status: ProductStatus,
    /// The channel's own status (`publish`, `private`, `active`, ...).
    pub raw_status: String,
    pub vendor: Option<String>,
    pub product_type: Option<String>,
    pub handle: Option<String>,
    pub tags: Vec<String>,
    pub variant_count: i64,
    /// Units in stock over the variants that track inventory (`null`: none does).
    pub inventory_quantity: Option<i64>,
    #[sqlx(json)]
    #[schema(value_type = Vec<PriceRange>)]
    pub prices: Vec<PriceRange>,
    pub created_at: Option<DateTime<Utc>>,
    /// When the channel last changed it.
    pub updated_at: DateTime<Utc>,
    pub synced_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Variant {
    pub id: Uuid,
    pub external_id: String,
    pub title: String,
    pub sku: Option<String>,
    pub price_minor: i64,
    pub currency: String,
    pub inventory_quantity: Option<i32>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProductDetail {
    #[serde(flatten)]
    pub product: Product,
    pub variants: Vec<Variant>,
}

const PRODUCT_COLUMNS: &str = "p.id, p.channel, p.external_id, p.title, p.status, p.raw_status, p.vendor, \
    p.product_type, p.handle, p.tags, \
    (select count(*) from ecom_variants v where v.product_id = p.id) as variant_count, \
    (select sum(v.inventory_quantity)::bigint from ecom_variants v where v.product_id = p.id) as inventory_quantity, \
    (select coalesce(jsonb_agg(jsonb_build_object('currency', x.currency, 'min_minor', x.lo, 'max_minor', x.hi) \
        order by x.currency), '[]') from (select v.currency, min(v.price_minor) as lo, max(v.price_minor) as hi \
        from ecom_variants v where v.product_id = p.id group by v.currency) x) as prices, \
    p.source_created_at as created_at, p.source_updated_at as updated_at, p.synced_at";

/// Products, most recently changed first.
pub async fn products(
    pool: &PgPool,
    scope: &Scope,
    params: ProductListParams,
) -> Result<ResultPage<Product>, DomainError> {
    let page: PageRequest<TimeKey> = pg::time_page_request(&params.page)?;
    let mut v = Validator::new();
    let q = search_term(params.q.as_deref(), &mut v);
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    let rows: Vec<Product> = sqlx::query_as(&format!(
        "select {PRODUCT_COLUMNS} from ecom_products p \
         where ($1::timestamptz is null or (p.source_updated_at, p.id) < ($1, $2)) \
           and ($4::text is null or p.channel = $4) and ($5::text is null or p.status = $5) \
           and ($6::text is null or strpos(lower(p.title), $6) > 0 \
                or strpos(lower(coalesce(p.vendor, '')), $6) > 0 \
                or strpos(lower(coalesce(p.product_type, '')), $6) > 0 \
                or exists (select 1 from ecom_variants v where v.product_id = p.id and lower(v.sku) = $6)) \
         order by p.source_updated_at desc, p.id desc limit $3"
    ))
    .bind(page.after.map(|a| a.0))
    .bind(page.after.map(|a| a.1))
    .bind(page.fetch())
    .bind(params.channel)
    .bind(params.status)
    .bind(q)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |p| (p.updated_at, p.id)))
}

/// One product with its variants.
pub async fn product(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<ProductDetail, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let product: Product = sqlx::query_as(&format!(
        "select {PRODUCT_COLUMNS} from ecom_products p where p.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(DomainError::NotFound)?;
    let variants: Vec<Variant> = sqlx::query_as(
        "select id, external_id, title, sku, price_minor, currency, inventory_quantity from ecom_variants \
         where product_id = $1 order by price_minor, title, external_id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ProductDetail { product, variants })
}

// --------------------------------------------------------------------------------- orders

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderListParams {
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
    #[param(value_type = Option<Channel>)]
    pub channel: Option<Channel>,
    #[param(value_type = Option<OrderStatus>)]
    pub status: Option<OrderStatus>,
    /// First day placed (YYYY-MM-DD, in `tz`; years 2000 to 2100).
    #[param(pattern = r"^(20[0-9]{2}|2100)-")]
    pub from: Option<NaiveDate>,
    /// Last day placed, inclusive: not before `from`.
    #[param(pattern = r"^(20[0-9]{2}|2100)-")]
    pub to: Option<NaiveDate>,
    /// IANA time zone of the days, one Postgres knows (default and blank: UTC).
    #[param(value_type = Option<OptionalTextSchema<64>>, inline)]
    pub tz: Option<String>,
    /// The order number (`1001` or `#1001`), the email or the customer's name (contained,
    /// case-insensitive; at most 200 characters).
    #[param(value_type = Option<OptionalTextSchema<200>>, inline)]
    pub q: Option<String>,
    /// Test orders too (default: left out).
    pub test: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Order {
    pub id: Uuid,
    pub channel: Channel,
    pub external_id: String,
    /// As the shop shows it (`#1001`).
    pub number: String,
    pub status: OrderStatus,
    /// The channel's own status.
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
    pub email: Option<String>,
    pub customer_external_id: Option<String>,
    /// The customer's name, when the customer is mirrored.
    pub customer_name: Option<String>,
    pub line_count: i64,
    pub placed_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub test: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct OrderLine {
    pub external_id: String,
    pub product_external_id: Option<String>,
    pub variant_external_id: Option<String>,
    /// The mirrored product of the line, when there is one.
    pub product_id: Option<Uuid>,
    pub sku: Option<String>,
    pub title: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub total_minor: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct OrderCustomer {
    pub external_id: String,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderDetail {
    #[serde(flatten)]
    pub order: Order,
    pub lines: Vec<OrderLine>,
    pub customer: Option<OrderCustomer>,
}

const ORDER_COLUMNS: &str = "o.id, o.channel, o.external_id, o.number, o.status, o.raw_status, o.financial_status, \
    o.fulfillment_status, o.currency, o.total_minor, o.subtotal_minor, o.tax_minor, o.shipping_minor, \
    o.discount_minor, o.refunded_minor, o.email, o.customer_external_id, \
    nullif(trim(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')), '') as customer_name, \
    (select count(*) from ecom_order_lines l where l.order_id = o.id) as line_count, \
    o.placed_at, o.cancelled_at, o.source_updated_at as updated_at, o.test";
const ORDER_FROM: &str = "ecom_orders o left join ecom_customers c on c.tenant_id = o.tenant_id \
    and c.channel = o.channel and c.external_id = o.customer_external_id";

/// Orders, newest placed first.
pub async fn orders(pool: &PgPool, scope: &Scope, params: OrderListParams) -> Result<ResultPage<Order>, DomainError> {
    let page: PageRequest<TimeKey> = pg::time_page_request(&params.page)?;
    let mut v = Validator::new();
    let q = search_term(params.q.as_deref(), &mut v);
    let mut tx = pg::begin(pool, scope).await?;
    let range = day_range(&mut tx, &mut v, params.from, params.to, params.tz.as_deref(), None).await?;
    v.finish()?;
    let (tz, from, to) = match range {
        Some(r) => (Some(r.tz), Some(r.from), Some(r.to)),
        None => (None, None, None),
    };
    let rows: Vec<Order> = sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from {ORDER_FROM} \
         where ($1::timestamptz is null or (o.placed_at, o.id) < ($1, $2)) \
           and ($4::text is null or o.channel = $4) and ($5::text is null or o.status = $5) \
           and ($6::date is null or o.placed_at >= ($6::date::timestamp at time zone $8)) \
           and ($7::date is null or o.placed_at < (($7::date + 1)::timestamp at time zone $8)) \
           and ($9 or not o.test) \
           and ($10::text is null or strpos(lower(o.number), $10) > 0 \
                or strpos(lower(coalesce(o.email, '')), $10) > 0 \
                or strpos(lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')), $10) > 0) \
         order by o.placed_at desc, o.id desc limit $3"
    ))
    .bind(page.after.map(|a| a.0))
    .bind(page.after.map(|a| a.1))
    .bind(page.fetch())
    .bind(params.channel)
    .bind(params.status)
    .bind(from)
    .bind(to)
    .bind(tz)
    .bind(params.test.unwrap_or(false))
    .bind(q)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |o| (o.placed_at, o.id)))
}

/// One order with its lines and customer.
pub async fn order(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<OrderDetail, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let order: Order = sqlx::query_as(&format!("select {ORDER_COLUMNS} from {ORDER_FROM} where o.id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(DomainError::NotFound)?;
    let lines: Vec<OrderLine> = sqlx::query_as(
        "select l.external_id, l.product_external_id, l.variant_external_id, p.id as product_id, l.sku, l.title, \
                l.quantity, l.unit_price_minor, l.total_minor \
         from ecom_order_lines l left join ecom_products p on p.tenant_id = l.tenant_id \
              and p.channel = $2 and p.external_id = l.product_external_id \
         where l.order_id = $1 order by l.external_id",
    )
    .bind(id)
    .bind(order.channel)
    .fetch_all(&mut *tx)
    .await?;
    let customer: Option<OrderCustomer> = match &order.customer_external_id {
        Some(ext) => {
            sqlx::query_as(
                "select external_id, email, first_name, last_name, phone, city, country from ecom_customers \
                 where channel = $1 and external_id = $2",
            )
            .bind(order.channel)
            .bind(ext)
            .fetch_optional(&mut *tx)
            .await?
        }
        None => None,
    };
    tx.commit().await?;
    Ok(OrderDetail { order, lines, customer })
}

// -------------------------------------------------------------------------------- summary

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SalesPeriod {
    #[default]
    Day,
    /// Weeks start on Monday.
    Week,
    Month,
}

impl SalesPeriod {
    pub fn unit(self) -> &'static str {
        match self {
            SalesPeriod::Day => "day",
            SalesPeriod::Week => "week",
            SalesPeriod::Month => "month",
        }
    }

    /// The longest range in days.
    fn max_days(self) -> i64 {
        match self {
            SalesPeriod::Day => 400,
            SalesPeriod::Week => 3 * 366,
            SalesPeriod::Month => 10 * 366,
        }
    }

    fn start(self, day: NaiveDate) -> NaiveDate {
        match self {
            SalesPeriod::Day => day,
            SalesPeriod::Week => day - Days::new(u64::from(day.weekday().num_days_from_monday())),
            SalesPeriod::Month => day.with_day(1).unwrap_or(day),
        }
    }

    fn next(self, start: NaiveDate) -> Option<NaiveDate> {
        match self {
            SalesPeriod::Day => start.checked_add_days(Days::new(1)),
            SalesPeriod::Week => start.checked_add_days(Days::new(7)),
            SalesPeriod::Month => start.checked_add_months(Months::new(1)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryParams {
    /// First day (YYYY-MM-DD, in `tz`; years 2000 to 2100).
    #[param(pattern = r"^(20[0-9]{2}|2100)-")]
    pub from: NaiveDate,
    /// Last day, inclusive: not before `from` (day periods: at most 400 days; weeks 3 years;
    /// months 10).
    #[param(pattern = r"^(20[0-9]{2}|2100)-")]
    pub to: NaiveDate,
    /// IANA time zone of the days, one Postgres knows (default and blank: UTC).
    #[param(value_type = Option<OptionalTextSchema<64>>, inline)]
    pub tz: Option<String>,
    /// `day` (default), `week` (from Monday) or `month`.
    #[param(value_type = Option<SalesPeriod>)]
    pub period: Option<SalesPeriod>,
    /// One channel only.
    #[param(value_type = Option<Channel>)]
    pub channel: Option<Channel>,
}

/// Sales of a set of orders in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Sales {
    /// Orders paid (test orders left out).
    pub orders: i64,
    /// Their totals, as charged.
    pub gross_minor: i64,
    pub refunded_minor: i64,
    /// Gross less refunds.
    pub revenue_minor: i64,
    /// Revenue per order, rounded half away from zero (0 without orders).
    pub average_order_minor: i64,
}

impl Sales {
    /// Saturating: no shop's sums come near 9.2 * 10^18 minor units, and none may wrap into a
    /// negative figure (or abort) on the way there.
    fn add(&mut self, orders: i64, gross: i64, refunded: i64) {
        self.orders = self.orders.saturating_add(orders);
        self.gross_minor = self.gross_minor.saturating_add(gross);
        self.refunded_minor = self.refunded_minor.saturating_add(refunded);
        self.revenue_minor = self.gross_minor.saturating_sub(self.refunded_minor);
        self.average_order_minor = round_div(self.revenue_minor, self.orders);
    }
}

/// `n / d` rounded half away from zero; 0 when `d` is 0.
fn round_div(n: i64, d: i64) -> i64 {
    if d == 0 {
        return 0;
    }
    let (n, d) = (i128::from(n), i128::from(d));
    let q = (2 * n.abs() + d.abs()) / (2 * d.abs());
    let signed = if (n < 0) != (d < 0) { -q } else { q };
    i64::try_from(signed).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CurrencySales {
    pub currency: String,
    #[serde(flatten)]
    pub sales: Sales,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelSales {
    pub channel: Channel,
    pub currency: String,
    #[serde(flatten)]
    pub sales: Sales,
}

/// One period of one channel in one currency (every period of the range is there, zeros too).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SalesPoint {
    /// The period's first day.
    pub period: NaiveDate,
    pub channel: Channel,
    pub currency: String,
    #[serde(flatten)]
    pub sales: Sales,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub tz: String,
    pub period: SalesPeriod,
    /// Per currency, all channels.
    pub totals: Vec<CurrencySales>,
    /// Per channel and currency.
    pub channels: Vec<ChannelSales>,
    /// Per period, channel and currency, in that order.
    pub series: Vec<SalesPoint>,
}

/// The summary's one query (public for the benchmark's raw-SQL baseline): `$1`/`$2` the first
/// and last day, `$3` the time zone, `$4` the period's unit, `$5` a channel or null.
pub const SUMMARY_SQL: &str = "select date_trunc($4, o.placed_at at time zone $3)::date as period, o.channel, \
    o.currency, count(*), sum(o.total_minor)::bigint, sum(o.refunded_minor)::bigint \
    from ecom_orders o \
    where o.placed_at >= ($1::date::timestamp at time zone $3) and o.placed_at < (($2::date + 1)::timestamp at time zone $3) \
      and not o.test and o.status in ('paid', 'fulfilled', 'partially_refunded', 'refunded') \
      and ($5::text is null or o.channel = $5) \
    group by 1, 2, 3";

/// Revenue, orders and average order value per channel, currency and period.
pub async fn summary(pool: &PgPool, scope: &Scope, params: SummaryParams) -> Result<Summary, DomainError> {
    let period = params.period.unwrap_or_default();
    let mut v = Validator::new();
    let mut tx = pg::begin(pool, scope).await?;
    let range = day_range(
        &mut tx,
        &mut v,
        Some(params.from),
        Some(params.to),
        params.tz.as_deref(),
        Some(period.max_days()),
    )
    .await?;
    v.finish()?;
    let range = range.ok_or_else(|| DomainError::invalid("from", "required", "is required (YYYY-MM-DD)"))?;
    let rows: Vec<(NaiveDate, Channel, String, i64, i64, i64)> = sqlx::query_as(SUMMARY_SQL)
        .bind(range.from)
        .bind(range.to)
        .bind(&range.tz)
        .bind(period.unit())
        .bind(params.channel)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;

    let mut totals: BTreeMap<String, Sales> = BTreeMap::new();
    let mut channels: BTreeMap<(Channel, String), Sales> = BTreeMap::new();
    let mut points: BTreeMap<(NaiveDate, Channel, String), Sales> = BTreeMap::new();
    for (start, channel, currency, orders, gross, refunded) in rows {
        totals.entry(currency.clone()).or_default().add(orders, gross, refunded);
        channels
            .entry((channel, currency.clone()))
            .or_default()
            .add(orders, gross, refunded);
        points
            .entry((start, channel, currency))
            .or_default()
            .add(orders, gross, refunded);
    }
    let mut series = Vec::new();
    let mut start = period.start(range.from);
    while start <= range.to {
        for (channel, currency) in channels.keys() {
            let sales = points.remove(&(start, *channel, currency.clone())).unwrap_or_default();
            series.push(SalesPoint {
                period: start,
                channel: *channel,
                currency: currency.clone(),
                sales,
            });
        }
        match period.next(start) {
            Some(next) => start = next,
            None => break,
        }
    }
    Ok(Summary {
        from: range.from,
        to: range.to,
        tz: range.tz,
        period,
        totals: totals
            .into_iter()
            .map(|(currency, sales)| CurrencySales { currency, sales })
            .collect(),
        channels: channels
            .into_iter()
            .map(|((channel, currency), sales)| ChannelSales {
                channel,
                currency,
                sales,
            })
            .collect(),
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_round_half_away_from_zero() {
        assert_eq!(round_div(10, 4), 3);
        assert_eq!(round_div(10, 3), 3);
        assert_eq!(round_div(-10, 4), -3);
        assert_eq!(round_div(5, 0), 0);
        assert_eq!(round_div(i64::MAX, 1), i64::MAX);
    }

    #[test]
    fn periods_start_on_their_first_day() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap_or_default();
        assert_eq!(
            SalesPeriod::Week.start(d),
            NaiveDate::from_ymd_opt(2026, 11, 23).unwrap_or_default()
        );
        assert_eq!(
            SalesPeriod::Month.start(d),
            NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or_default()
        );
        assert_eq!(
            SalesPeriod::Month.next(NaiveDate::from_ymd_opt(2026, 1, 31).unwrap_or_default()),
            NaiveDate::from_ymd_opt(2026, 2, 28)
        );
    }
}
