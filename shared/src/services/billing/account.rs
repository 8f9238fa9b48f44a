//! Billing for the portal's own API: the plan catalogue, the tenant's subscription and
//! invoices (read from the Stripe mirrors under the tenant's row-level security), and the
//! Stripe Checkout and customer-portal sessions (the Stripe customer is created once per
//! tenant, under a per-tenant lock and a Stripe idempotency key).
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::entitlements::{self, LIVE_STATUSES, Limits};
use crate::adapters::pg;
use crate::adapters::stripe_api::{StripeApi, StripeError, form};
use crate::domain::{DomainError, PageRequest, ResultPage, Scope};
use crate::services::idempotency::{self, Created, IdempotencyKey};

/// Where Stripe sends people back to (the portal's billing page).
#[derive(Debug, Clone)]
pub struct BillingLinks {
    pub success_url: String,
    pub cancel_url: String,
    pub portal_return_url: String,
}

impl BillingLinks {
    pub fn under(portal_base_url: &str) -> Self {
        let base = portal_base_url.trim_end_matches('/');
        Self {
            success_url: format!("{base}/billing?checkout=success&session_id={{CHECKOUT_SESSION_ID}}"),
            cancel_url: format!("{base}/billing?checkout=canceled"),
            portal_return_url: format!("{base}/billing"),
        }
    }
}

/// A Stripe failure: 503 (retry) — except Stripe no longer knowing the tenant's customer
/// (deleted in the dashboard), which a retry cannot fix: 409.
fn upstream(e: StripeError) -> DomainError {
    if e.is_not_found() {
        tracing::error!(alert = "stripe_customer_missing", error = %e, "Stripe no longer has an object we link to");
        return DomainError::conflict(
            "billing_account_missing",
            "the tenant's billing account no longer exists at the payment provider; contact support",
        );
    }
    DomainError::Upstream(e.to_string())
}

fn tenant(scope: &Scope) -> Result<uuid::Uuid, DomainError> {
    scope.tenant_id().ok_or(DomainError::NotFound)
}

fn at(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Price {
    /// The Stripe price id to pass to `POST /billing/checkout-session`.
    pub id: String,
    pub currency: String,
    /// In the currency's minor unit (cents).
    pub unit_amount: i64,
    /// `month` or `year` (also `day`, `week`).
    pub interval: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Plan {
    pub code: String,
    pub name: String,
    pub description: String,
    /// The plan of tenants without a live subscription.
    pub is_default: bool,
    pub limits: Limits,
    pub prices: Vec<Price>,
}

#[derive(sqlx::FromRow)]
struct PlanRow {
    code: String,
    name: String,
    description: String,
    is_default: bool,
    #[sqlx(flatten)]
    limits: Limits,
}

/// Every plan with its active prices and limits, cheapest first.
pub async fn plans(pool: &PgPool) -> Result<Vec<Plan>, DomainError> {
    let rows: Vec<PlanRow> = sqlx::query_as(
        "select code, name, description, is_default, seats, contacts, sites, ai_tasks_per_month, storage_bytes, \
         emails_per_month from billing_plans order by sort, code",
    )
    .fetch_all(pool)
    .await?;
    let prices: Vec<(String, Price)> = sqlx::query_as::<_, (String, String, String, i64, String)>(
        "select plan_code, id, currency, unit_amount, interval from billing_prices where active \
         order by interval, unit_amount, id",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(plan, id, currency, unit_amount, interval)| {
        (
            plan,
            Price {
                id,
                currency,
                unit_amount,
                interval,
            },
        )
    })
    .collect();
    Ok(rows
        .into_iter()
        .map(|r| Plan {
            prices: prices
                .iter()
                .filter(|(p, _)| *p == r.code)
                .map(|(_, price)| price.clone())
                .collect(),
            code: r.code,
            name: r.name,
            description: r.description,
            is_default: r.is_default,
            limits: r.limits,
        })
        .collect())
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanRef {
    pub code: String,
    pub name: String,
}

/// The card that pays, as far as Stripe tells us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PaymentMethodSummary {
    pub brand: Option<String>,
    pub last4: Option<String>,
    pub exp_month: Option<i64>,
    pub exp_year: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriptionSummary {
    /// Stripe's status (`trialing`, `active`, `past_due`, `canceled`, ...), or `none` when the
    /// tenant never subscribed.
    pub status: String,
    /// The plan in force (the default plan unless a subscription is live).
    pub plan: PlanRef,
    pub limits: Limits,
    pub subscription_id: Option<String>,
    pub price_id: Option<String>,
    pub quantity: Option<i64>,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub trial_start: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub payment_method: Option<PaymentMethodSummary>,
}

type SubscriptionRow = (
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    bool,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Value,
);

/// The tenant's subscription: the live one, else the latest.
pub async fn subscription(pool: &PgPool, scope: &Scope) -> Result<SubscriptionSummary, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let plan = entitlements::plan(&mut tx).await?;
    let row: Option<SubscriptionRow> = sqlx::query_as(
        "select id, status, price_id, quantity, cancel_at_period_end, canceled_at, trial_start, trial_end, \
             current_period_start, current_period_end, raw \
         from stripe_subscriptions where customer_id = app_current_customer() \
         order by (status = any($1)) desc nulls last, created desc nulls last, id limit 1",
    )
    .bind(LIVE_STATUSES)
    .fetch_optional(&mut *tx)
    .await?;
    let customer: Option<Value> =
        sqlx::query_scalar("select raw from stripe_customers where id = app_current_customer()")
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    let payment_method = payment_method(row.as_ref().map(|r| &r.10), customer.as_ref());
    let mut summary = SubscriptionSummary {
        status: "none".into(),
        plan: PlanRef {
            code: plan.code,
            name: plan.name,
        },
        limits: plan.limits,
        subscription_id: None,
        price_id: None,
        quantity: None,
        current_period_start: None,
        current_period_end: None,
        trial_start: None,
        trial_end: None,
        cancel_at_period_end: false,
        canceled_at: None,
        payment_method,
    };
    if let Some((id, status, price, quantity, cancel, canceled_at, trial_start, trial_end, start, end, _)) = row {
        summary.status = status.unwrap_or_else(|| "unknown".into());
        summary.subscription_id = Some(id);
        summary.price_id = price;
        summary.quantity = quantity;
        summary.cancel_at_period_end = cancel;
        summary.canceled_at = at(canceled_at);
        summary.trial_start = at(trial_start);
        summary.trial_end = at(trial_end);
        summary.current_period_start = at(start);
        summary.current_period_end = at(end);
    }
    Ok(summary)
}

fn card_of(pm: &Value) -> Option<PaymentMethodSummary> {
    // A payment method (`card: {...}`) or a legacy card source (the fields at the top).
    let card = pm.get("card").filter(|c| c.is_object()).unwrap_or(pm);
    let text = |k: &str| card.get(k).and_then(Value::as_str).map(str::to_owned);
    let last4 = text("last4")?;
    Some(PaymentMethodSummary {
        brand: text("brand"),
        last4: Some(last4),
        exp_month: card.get("exp_month").and_then(Value::as_i64),
        exp_year: card.get("exp_year").and_then(Value::as_i64),
    })
}

/// The paying card: the subscription's default payment method when Stripe expanded it, else
/// the customer's default payment method or default source.
pub fn payment_method(subscription: Option<&Value>, customer: Option<&Value>) -> Option<PaymentMethodSummary> {
    if let Some(pm) = subscription
        .and_then(|s| s.get("default_payment_method"))
        .filter(|p| p.is_object())
        && let Some(card) = card_of(pm)
    {
        return Some(card);
    }
    let customer = customer?;
    if let Some(pm) = customer
        .pointer("/invoice_settings/default_payment_method")
        .filter(|p| p.is_object())
        && let Some(card) = card_of(pm)
    {
        return Some(card);
    }
    let default_source = customer.get("default_source").and_then(Value::as_str)?;
    customer
        .pointer("/sources/data")
        .and_then(Value::as_array)?
        .iter()
        .find(|s| s.get("id").and_then(Value::as_str) == Some(default_source))
        .and_then(card_of)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct InvoiceSummary {
    pub id: String,
    pub number: Option<String>,
    /// Stripe's status: `draft`, `open`, `paid`, `void`, `uncollectible`.
    pub status: Option<String>,
    pub currency: Option<String>,
    /// Amounts in the currency's minor unit.
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub total: Option<i64>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
    pub created: Option<DateTime<Utc>>,
    #[serde(skip)]
    #[schema(ignore)]
    pub created_key: i64,
}

/// The tenant's invoices, newest first.
pub async fn invoices(
    pool: &PgPool,
    scope: &Scope,
    page: &PageRequest<(i64, String)>,
) -> Result<ResultPage<InvoiceSummary>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let rows: Vec<InvoiceSummary> = sqlx::query_as(
        "select id, number, status, currency, amount_due, amount_paid, amount_remaining, total, \
             to_timestamp(period_start) as period_start, to_timestamp(period_end) as period_end, \
             hosted_invoice_url, invoice_pdf, to_timestamp(created) as created, coalesce(created, 0) as created_key \
         from stripe_invoices where customer_id = app_current_customer() \
           and ($1::bigint is null or (coalesce(created, 0), id) < ($1, $2)) \
         order by coalesce(created, 0) desc, id desc limit $3",
    )
    .bind(page.after.as_ref().map(|a| a.0))
    .bind(page.after.as_ref().map(|a| a.1.clone()))
    .bind(page.fetch())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |i| {
        (i.created_key, i.id.clone())
    }))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCheckout {
    /// An active price of `GET /billing/plans` (another answers 422 `unknown_price`).
    pub price_id: String,
    /// Units of the price, 1–10,000 (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10_000)]
    pub quantity: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckoutSession {
    pub id: String,
    /// Send the user here to pay.
    pub url: String,
    pub customer_id: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PortalSession {
    /// Send the user here to manage the subscription and payment methods.
    pub url: String,
}

/// The tenant's Stripe customer, created at Stripe the first time and linked in a short
/// transaction of its own (a per-tenant lock here, a Stripe idempotency key there), so a later
/// failure never strands a customer Stripe already made.
async fn customer_for(pool: &PgPool, scope: &Scope, stripe: &StripeApi) -> Result<(String, bool), DomainError> {
    let tenant_id = tenant(scope)?;
    let mut tx = pg::begin(pool, scope).await?;
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('billing_account:' || $1::text, 0))")
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
    if let Some(existing) = sqlx::query_scalar::<_, String>("select stripe_customer_id from billing_accounts")
        .fetch_optional(&mut *tx)
        .await?
    {
        tx.commit().await?;
        return Ok((existing, false));
    }
    let (name, email): (String, Option<String>) = sqlx::query_as(
        "select t.name, (select u.email from users u where u.id = app_current_user()) from tenants t where t.id = $1",
    )
    .bind(tenant_id)
    .fetch_one(&mut *tx)
    .await?;
    let tenant_text = tenant_id.to_string();
    // The key covers the parameters: Stripe refuses a key reused with other ones.
    let key = hex::encode(Sha256::digest(format!(
        "{tenant_text}\0{name}\0{}",
        email.as_deref().unwrap_or_default()
    )));
    let customer = stripe
        .post(
            "customers",
            &form([
                ("name", Some(name)),
                ("email", email),
                ("metadata[tenant_id]", Some(tenant_text)),
            ]),
            Some(&format!("portal-customer-{key}")),
        )
        .await
        .map_err(upstream)?;
    let id = customer
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| DomainError::Upstream("Stripe created a customer without an id".into()))?
        .to_owned();
    sqlx::query("insert into billing_accounts (tenant_id, stripe_customer_id) values ($1, $2)")
        .bind(tenant_id)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((id, true))
}

fn already_subscribed() -> DomainError {
    DomainError::conflict(
        "already_subscribed",
        "the tenant has a live subscription: change plans with POST /billing/portal-session",
    )
}

/// Starts Stripe Checkout for a price. Honours `Idempotency-Key` (ours, and Stripe's for the
/// session). A tenant with a live subscription changes plans in the customer portal instead.
pub async fn checkout(
    pool: &PgPool,
    scope: &Scope,
    stripe: &StripeApi,
    links: &BillingLinks,
    input: NewCheckout,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<CheckoutSession>, DomainError> {
    let tenant_id = tenant(scope)?;
    let quantity = input.quantity.unwrap_or(1);
    if !(1..=10_000).contains(&quantity) {
        return Err(DomainError::invalid(
            "quantity",
            "out_of_range",
            "must be between 1 and 10000",
        ));
    }
    let known: bool = sqlx::query_scalar("select exists (select 1 from billing_prices where id = $1 and active)")
        .bind(&input.price_id)
        .fetch_one(pool)
        .await?;
    if !known {
        return Err(DomainError::invalid(
            "price_id",
            "unknown_price",
            "is not an active price of GET /billing/plans",
        ));
    }
    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    let live: bool = sqlx::query_scalar(
        "select exists (select 1 from stripe_subscriptions where customer_id = app_current_customer() \
         and status = any($1))",
    )
    .bind(LIVE_STATUSES)
    .fetch_one(&mut *tx)
    .await?;
    if live {
        return Err(already_subscribed());
    }
    let (customer_id, new) = customer_for(pool, scope, stripe).await?;
    if !new {
        // The mirror lags behind Stripe (a payment a moment ago): ask Stripe itself.
        let subscriptions = stripe
            .list_all(
                "subscriptions",
                &[("customer", customer_id.as_str()), ("status", "all")],
            )
            .await
            .map_err(upstream)?;
        if subscriptions.iter().any(|s| {
            s.get("status")
                .and_then(Value::as_str)
                .is_some_and(|st| LIVE_STATUSES.contains(&st))
        }) {
            return Err(already_subscribed());
        }
    }
    let tenant_text = tenant_id.to_string();
    let stripe_key = idem.map(|k| {
        let digest = Sha256::digest(format!("{tenant_text}\0{}", k.key).as_bytes());
        format!("portal-checkout-{}", hex::encode(digest))
    });
    let session = stripe
        .post(
            "checkout/sessions",
            &form([
                ("mode", Some("subscription".to_owned())),
                ("customer", Some(customer_id.clone())),
                ("line_items[0][price]", Some(input.price_id.clone())),
                ("line_items[0][quantity]", Some(quantity.to_string())),
                ("success_url", Some(links.success_url.clone())),
                ("cancel_url", Some(links.cancel_url.clone())),
                ("client_reference_id", Some(tenant_text.clone())),
                ("metadata[tenant_id]", Some(tenant_text.clone())),
                ("subscription_data[metadata][tenant_id]", Some(tenant_text)),
            ]),
            stripe_key.as_deref(),
        )
        .await
        .map_err(upstream)?;
    let text = |k: &str| session.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(id), Some(url)) = (text("id"), text("url")) else {
        return Err(DomainError::Upstream(
            "Stripe answered a session without id or url".into(),
        ));
    };
    let created = CheckoutSession { id, url, customer_id };
    idempotency::store(&mut tx, scope, idem, 201, &created).await?;
    tx.commit().await?;
    Ok(Created::Fresh(created))
}

/// A Stripe customer-portal session (manage the subscription, cards, invoices).
pub async fn portal(
    pool: &PgPool,
    scope: &Scope,
    stripe: &StripeApi,
    links: &BillingLinks,
) -> Result<PortalSession, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let customer: Option<String> = sqlx::query_scalar("select stripe_customer_id from billing_accounts")
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    let Some(customer) = customer else {
        return Err(DomainError::conflict(
            "no_billing_account",
            "the tenant has no billing account yet: subscribe with POST /billing/checkout-session first",
        ));
    };
    let session = stripe
        .post(
            "billing_portal/sessions",
            &form([
                ("customer", Some(customer)),
                ("return_url", Some(links.portal_return_url.clone())),
            ]),
            None,
        )
        .await
        .map_err(upstream)?;
    let url = session
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| DomainError::Upstream("Stripe answered a portal session without url".into()))?;
    Ok(PortalSession { url: url.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_paying_card_comes_from_the_customer_default_source() {
        let customer = json!({"default_source": "card_2", "sources": {"data": [
            {"id": "card_1", "object": "card", "brand": "Amex", "last4": "0005"},
            {"id": "card_2", "object": "card", "brand": "Visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}]}});
        let card = payment_method(None, Some(&customer)).unwrap();
        assert_eq!(card.last4.as_deref(), Some("4242"));
        assert_eq!(card.exp_year, Some(2030));
        let sub = json!({"default_payment_method": {"id": "pm_1", "card": {"brand": "mastercard", "last4": "4444"}}});
        assert_eq!(
            payment_method(Some(&sub), Some(&customer)).unwrap().last4.as_deref(),
            Some("4444")
        );
        assert_eq!(
            payment_method(Some(&json!({"default_payment_method": "pm_1"})), None),
            None
        );
    }
}
