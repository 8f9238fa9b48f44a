//! billing-sync: applies Stripe events to the Postgres mirrors (one table per Stripe object
//! type, the raw object beside the typed columns).
//!
//! - Idempotent: the event id is inserted `ON CONFLICT DO NOTHING` in the transaction of its
//!   effects; a redelivery finds it and applies nothing.
//! - Order-independent: every mirrored row carries a write [`Gate`] (terminal state, the event's
//!   `created`, the status rank, the event id) and a write replaces the row only when its gate is
//!   greater, compared in the same upsert statement (the row lock makes concurrent deliveries
//!   safe). Terminal money states sort above everything, so paid never becomes failed and
//!   canceled never becomes active again; same-second ties are broken by the status's place in
//!   its lifecycle, then by event id, so every delivery order ends in the same mirror.
//! - Complete: truncated lists (subscription items, invoice lines, a charge's refunds) are
//!   fetched in full from the Stripe API before the transaction opens.
//! - Lenient: the envelope is read first, then our typed views; unknown types, previews
//!   (`invoice.upcoming`, which has no id) and events of the wrong mode are recorded and
//!   acknowledged, not failed. Events for a customer no tenant is linked to yet are applied
//!   all the same: the rows become visible to the tenant once the link exists.
//!
//! One file (over 800 lines) for now: the ledger, the ordering gates and every mirror's upsert
//! share the gate columns stated here. The upserts still repeat those columns (issue #16): once
//! they are one helper, the file splits by object.
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::adapters::pg::Tx;
use crate::adapters::stripe_api::{StripeApi, StripeError};
use crate::domain::stripe_objects::{
    CustomerView, InvoiceView, PaymentIntentView, RefundView, SubscriptionView, ViewError, id_of,
};

/// A Stripe event envelope with its object.
#[derive(Debug, Clone)]
pub struct StripeEvent {
    pub id: String,
    pub event_type: String,
    pub api_version: Option<String>,
    pub created: i64,
    pub livemode: Option<bool>,
    pub object: Value,
    pub raw: Value,
}

impl StripeEvent {
    pub fn parse(body: &[u8]) -> Result<Self, BillingSyncError> {
        let raw: Value = serde_json::from_slice(body).map_err(|e| BillingSyncError::Unreadable(e.to_string()))?;
        Self::from_value(raw)
    }

    pub fn from_value(raw: Value) -> Result<Self, BillingSyncError> {
        let text = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_owned);
        let id = text("id")
            .filter(|i| i.starts_with("evt_"))
            .ok_or_else(|| BillingSyncError::Unreadable("no event id".into()))?;
        let event_type = text("type").ok_or_else(|| BillingSyncError::Unreadable("no event type".into()))?;
        let object = raw
            .pointer("/data/object")
            .cloned()
            .ok_or_else(|| BillingSyncError::Unreadable("no data.object".into()))?;
        Ok(Self {
            id,
            event_type,
            api_version: text("api_version"),
            created: raw.get("created").and_then(Value::as_i64).unwrap_or(0),
            livemode: raw.get("livemode").and_then(Value::as_bool),
            object,
            raw,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BillingSyncError {
    /// Not a Stripe event: retrying will not help (it goes to the DLQ for inspection).
    #[error("unreadable event: {0}")]
    Unreadable(String),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error("a truncated list needs the Stripe API, which is not configured")]
    NoApi,
    /// A reconciliation run that could not apply everything (each failure is logged).
    #[error("{0} item(s) could not be reconciled")]
    Incomplete(i32),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What applying an event did (also recorded in `stripe_events.outcome`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Seen before: nothing happened.
    Duplicate,
    /// Recorded and acknowledged without effects (reason).
    Ignored(&'static str),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored(why) => why,
        }
    }
}

/// The write gate of a mirrored row. Rows compare as tuples, greatest wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub terminal: bool,
    pub created: i64,
    pub rank: i16,
    pub source: String,
}

/// A status's place in its object's lifecycle: (terminal, rank).
pub fn lifecycle(object: &str, status: Option<&str>) -> (bool, i16) {
    let s = status.unwrap_or("");
    match object {
        "invoice" => match s {
            "draft" => (false, 0),
            "open" => (false, 1),
            "uncollectible" => (false, 2),
            "paid" => (true, 3),
            "void" => (true, 3),
            _ => (false, 0),
        },
        "subscription" => match s {
            "incomplete" => (false, 0),
            "trialing" => (false, 1),
            "active" => (false, 2),
            "past_due" => (false, 3),
            "unpaid" | "paused" => (false, 4),
            "canceled" | "incomplete_expired" => (true, 5),
            _ => (false, 0),
        },
        "payment_intent" => match s {
            "requires_payment_method" => (false, 0),
            "requires_confirmation" => (false, 1),
            "requires_action" => (false, 2),
            "processing" => (false, 3),
            "requires_capture" => (false, 4),
            "succeeded" | "canceled" => (true, 5),
            _ => (false, 0),
        },
        "refund" => match s {
            "requires_action" => (false, 0),
            "pending" => (false, 1),
            "succeeded" | "failed" | "canceled" => (true, 2),
            _ => (false, 0),
        },
        "invoice_payment" => match s {
            "open" => (false, 0),
            "paid" | "canceled" => (true, 1),
            _ => (false, 0),
        },
        "customer" => (s == "deleted", i16::from(s == "deleted")),
        _ => (false, 0),
    }
}

fn gate(object: &str, status: Option<&str>, created: i64, source: &str) -> Gate {
    let (terminal, rank) = lifecycle(object, status);
    Gate {
        terminal,
        created,
        rank,
        source: source.to_owned(),
    }
}

/// Where a write comes from: an event (its id and `created`), or a reconciliation run that
/// read Stripe's current state (forced: Stripe is the truth, the row is repaired whatever its
/// gate).
#[derive(Debug, Clone)]
pub struct Source {
    pub id: String,
    pub created: i64,
    pub forced: bool,
}

/// The billing-sync service (the `portal_billing` pool: mirrors of every tenant).
#[derive(Clone)]
pub struct Syncer {
    pub db: PgPool,
    pub stripe: Option<StripeApi>,
    /// When set, events of the other mode are recorded and ignored.
    pub livemode: Option<bool>,
}

impl Syncer {
    /// The `portal_billing` pool and the Stripe client, from the environment (read once, in
    /// `main`): `BILLING_DATABASE_URL`, the Stripe settings, `DATABASE_MAX_CONNECTIONS` (2).
    /// The one way billing-sync and billing-reconcile build it.
    pub fn from_env(env: &crate::config::Env) -> anyhow::Result<Self> {
        let stripe = crate::config::StripeSettings::from(env)?;
        Ok(Self {
            db: crate::adapters::pg::pool(
                &env.required("BILLING_DATABASE_URL")?,
                env.parsed_or("DATABASE_MAX_CONNECTIONS", 2)?,
            )?,
            stripe: Some(stripe.client()?),
            livemode: stripe.livemode,
        })
    }
}

/// What an event's object needs from the API before the transaction (truncated lists).
#[derive(Debug, Default)]
struct Fetched {
    items: Option<Vec<Value>>,
    lines: Option<Vec<Value>>,
    refunds: Option<Vec<Value>>,
    subscription: Option<Value>,
    /// The customer, refetched when an event changes it without carrying it (a card attached).
    customer: Option<Value>,
    /// When the refetches were made (Unix seconds): they show Stripe's state as of then, so
    /// they are gated at that time, not at the event's.
    fetched_at: i64,
}

/// Events that change a customer's payment method without carrying the customer.
fn changes_customer_payment(event_type: &str) -> bool {
    event_type.starts_with("customer.source.")
        || matches!(
            event_type,
            "payment_method.attached"
                | "payment_method.detached"
                | "payment_method.updated"
                | "checkout.session.completed"
        )
}

const MAX_ATTEMPTS: u32 = 3;

impl Syncer {
    /// Applies one event (raw body as Stripe sent it).
    pub async fn apply_body(&self, body: &[u8]) -> Result<Outcome, BillingSyncError> {
        self.apply(&StripeEvent::parse(body)?).await
    }

    #[tracing::instrument(skip_all, fields(event_id = %event.id, event_type = %event.event_type))]
    pub async fn apply(&self, event: &StripeEvent) -> Result<Outcome, BillingSyncError> {
        let fetched = self.prefetch(event).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.apply_once(event, &fetched).await {
                // Two events touching the same rows in opposite orders: retry the loser.
                Err(BillingSyncError::Database(sqlx::Error::Database(db)))
                    if attempt < MAX_ATTEMPTS && matches!(db.code().as_deref(), Some("40P01" | "40001")) =>
                {
                    tracing::warn!(attempt, "deadlock or serialization failure; retrying");
                }
                other => return other,
            }
        }
    }

    async fn prefetch(&self, event: &StripeEvent) -> Result<Fetched, BillingSyncError> {
        let mut fetched = Fetched {
            fetched_at: chrono::Utc::now().timestamp(),
            ..Fetched::default()
        };
        let obj = &event.object;
        match obj.get("object").and_then(Value::as_str) {
            Some("subscription") => {
                let view = SubscriptionView::read(obj)?;
                if view.items_truncated {
                    fetched.items = Some(
                        self.api()?
                            .list_all("subscription_items", &[("subscription", &view.id)])
                            .await?,
                    );
                }
            }
            Some("invoice") => {
                let view = InvoiceView::read(obj)?;
                if view.lines_truncated
                    && let Some(id) = &view.id
                {
                    fetched.lines = Some(self.api()?.list_all(&format!("invoices/{id}/lines"), &[]).await?);
                }
            }
            Some("charge") if event.event_type == "charge.refunded" => {
                let charge_id = obj.get("id").and_then(Value::as_str).unwrap_or_default();
                let complete = obj.get("refunds").is_some_and(|r| {
                    !r.get("has_more").and_then(Value::as_bool).unwrap_or(false) && r.get("data").is_some()
                });
                if !complete {
                    fetched.refunds = Some(self.api()?.list_all("refunds", &[("charge", charge_id)]).await?);
                }
            }
            Some("checkout.session") => {
                if let (Some(sub), Some(api)) = (id_of(obj.get("subscription")), self.stripe.as_ref()) {
                    match api.get(&format!("subscriptions/{sub}"), &[]).await {
                        Ok(s) => {
                            if SubscriptionView::read(&s)?.items_truncated {
                                fetched.items =
                                    Some(api.list_all("subscription_items", &[("subscription", &sub)]).await?);
                            }
                            fetched.subscription = Some(s);
                        }
                        // The subscription's own events bring it; the link is what matters here.
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            _ => {}
        }
        let customer_id =
            if event.event_type.starts_with("customer.") && !event.event_type.starts_with("customer.source.") {
                id_of(obj.get("id"))
            } else {
                id_of(obj.get("customer"))
            };
        if changes_customer_payment(&event.event_type)
            && let (Some(customer), Some(api)) = (customer_id, self.stripe.as_ref())
        {
            match api
                .get(
                    &format!("customers/{customer}"),
                    &[("expand[]", "invoice_settings.default_payment_method")],
                )
                .await
            {
                Ok(c) => fetched.customer = Some(c),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(fetched)
    }

    fn api(&self) -> Result<&StripeApi, BillingSyncError> {
        self.stripe.as_ref().ok_or(BillingSyncError::NoApi)
    }

    async fn apply_once(&self, event: &StripeEvent, fetched: &Fetched) -> Result<Outcome, BillingSyncError> {
        let mut tx = self.db.begin().await?;
        let outcome = self.decide(event);
        let inserted = sqlx::query(
            "insert into stripe_events (id, type, api_version, created, livemode, outcome, payload) \
             values ($1, $2, $3, $4, $5, $6, $7) on conflict (id) do nothing",
        )
        .bind(&event.id)
        .bind(&event.event_type)
        .bind(&event.api_version)
        .bind(event.created)
        .bind(event.livemode)
        .bind(outcome.label())
        .bind(&event.raw)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            tracing::info!("duplicate event: nothing applied");
            return Ok(Outcome::Duplicate);
        }
        if outcome == Outcome::Applied {
            let source = Source {
                id: event.id.clone(),
                created: event.created,
                forced: false,
            };
            apply_object(&mut tx, &event.event_type, &event.object, &source, fetched).await?;
        }
        tx.commit().await?;
        tracing::info!(outcome = outcome.label(), "event recorded");
        Ok(outcome)
    }

    fn decide(&self, event: &StripeEvent) -> Outcome {
        if let (Some(expected), Some(actual)) = (self.livemode, event.livemode)
            && expected != actual
        {
            return Outcome::Ignored("ignored_livemode");
        }
        let kind = event.object.get("object").and_then(Value::as_str).unwrap_or_default();
        match (event.event_type.as_str(), kind) {
            ("invoice.upcoming", _) => Outcome::Ignored("ignored_preview"),
            (_, "invoice") if event.object.get("id").and_then(Value::as_str).is_none() => {
                Outcome::Ignored("ignored_preview")
            }
            (t, "customer") if t.starts_with("customer.") => Outcome::Applied,
            (t, "subscription") if t.starts_with("customer.subscription.") => Outcome::Applied,
            (t, "invoice") if t.starts_with("invoice.") => Outcome::Applied,
            (t, "invoice_payment") if t.starts_with("invoice_payment.") => Outcome::Applied,
            (t, "payment_intent") if t.starts_with("payment_intent.") => Outcome::Applied,
            ("charge.refunded", "charge") => Outcome::Applied,
            (t, "refund") if t.starts_with("charge.refund.") || t.starts_with("refund.") => Outcome::Applied,
            ("checkout.session.completed", "checkout.session") => Outcome::Applied,
            (t, _) if changes_customer_payment(t) && self.stripe.is_some() => Outcome::Applied,
            _ => Outcome::Ignored("ignored_type"),
        }
    }
}

/// Applies one Stripe object to the mirror in `tx` (events and reconciliation share it).
/// Returns whether a mirrored row changed.
async fn apply_object(
    tx: &mut Tx,
    event_type: &str,
    obj: &Value,
    source: &Source,
    fetched: &Fetched,
) -> Result<bool, BillingSyncError> {
    let mut changed = false;
    let refetched = Source {
        created: source.created.max(fetched.fetched_at),
        ..source.clone()
    };
    if let Some(customer) = &fetched.customer {
        changed |= upsert_customer(tx, customer, false, &refetched).await?;
    }
    let applied = match obj.get("object").and_then(Value::as_str).unwrap_or_default() {
        "customer" => {
            let deleted = event_type == "customer.deleted";
            upsert_customer(tx, obj, deleted, source).await
        }
        "subscription" => upsert_subscription(tx, obj, fetched.items.as_deref(), source).await,
        "invoice" => upsert_invoice(tx, obj, fetched.lines.as_deref(), source).await,
        "invoice_payment" => upsert_invoice_payment(tx, obj, source).await,
        "payment_intent" => upsert_payment_intent(tx, obj, source).await,
        "refund" => upsert_refund(tx, obj, source).await,
        "charge" => {
            let refunds: Vec<Value> = match &fetched.refunds {
                Some(all) => all.clone(),
                None => obj
                    .pointer("/refunds/data")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            };
            let mut changed = false;
            for refund in refunds.iter() {
                changed |= upsert_refund(tx, refund, source).await?;
            }
            Ok(changed)
        }
        "checkout.session" => {
            let customer = id_of(obj.get("customer"));
            let tenant = obj
                .get("client_reference_id")
                .and_then(Value::as_str)
                .or_else(|| obj.pointer("/metadata/tenant_id").and_then(Value::as_str))
                .and_then(|t| Uuid::parse_str(t).ok());
            let mut changed = false;
            if let (Some(customer), Some(tenant)) = (customer, tenant) {
                changed |= link_account(tx, tenant, &customer).await?;
            }
            if let Some(sub) = &fetched.subscription {
                changed |= upsert_subscription(tx, sub, fetched.items.as_deref(), &refetched).await?;
            }
            Ok(changed)
        }
        _ => Ok(false),
    }?;
    Ok(changed || applied)
}

/// Links a tenant to its Stripe customer when neither is linked yet and the tenant exists.
async fn link_account(tx: &mut Tx, tenant: Uuid, customer: &str) -> Result<bool, BillingSyncError> {
    let linked = sqlx::query(
        "insert into billing_accounts (tenant_id, stripe_customer_id) \
         select id, $2 from tenants where id = $1 on conflict do nothing",
    )
    .bind(tenant)
    .bind(customer)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if linked == 1 {
        tracing::info!(tenant_id = %tenant, "tenant linked to its Stripe customer");
    }
    Ok(linked == 1)
}

/// An object with its list field (`items`, `lines`) replaced by the complete list when one was
/// fetched, and that list's raw items: read through the same typed view either way.
fn with_full_list(obj: &Value, field: &str, all: Option<&[Value]>) -> (Value, Vec<Value>) {
    let mut whole = obj.clone();
    if let Some(all) = all
        && let Some(list) = whole.get_mut(field)
    {
        *list = serde_json::json!({"object": "list", "data": all, "has_more": false});
    }
    let raw = whole
        .get(field)
        .and_then(|l| l.get("data"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    (whole, raw)
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds a row's gate: the last four parameters of every mirror upsert.
trait BindGate<'q> {
    fn bind_gate(self, g: &'q Gate) -> Self;
}

impl<'q> BindGate<'q> for PgQuery<'q> {
    fn bind_gate(self, g: &'q Gate) -> Self {
        self.bind(g.terminal).bind(g.created).bind(g.rank).bind(&g.source)
    }
}

/// The gate condition every mirror upsert ends with.
const GATE_WINS: &str = "(excluded.gate_terminal, excluded.gate_created, excluded.gate_rank, excluded.gate_source) \
     > (t.gate_terminal, t.gate_created, t.gate_rank, t.gate_source)";

fn gate_for(source: &Source, kind: &str, status: Option<&str>) -> Gate {
    gate(kind, status, source.created, &source.id)
}

/// A repair from Stripe's current state wins unless the row was written from something at
/// least as recent as that read (an event applied meanwhile keeps its state).
const READ_IS_NEWER: &str = "t.gate_created < excluded.gate_created";

/// The `where` of an upsert: the gate, or for a repair the read time.
fn gate_clause(source: &Source) -> &'static str {
    if source.forced { READ_IS_NEWER } else { GATE_WINS }
}

async fn upsert_customer(tx: &mut Tx, obj: &Value, deleted: bool, source: &Source) -> Result<bool, BillingSyncError> {
    let view = CustomerView::read(obj)?;
    let deleted = deleted || view.deleted;
    let g = gate_for(source, "customer", deleted.then_some("deleted"));
    let tenant = view.tenant_id.as_deref().and_then(|t| Uuid::parse_str(t).ok());
    let sql = format!(
        "insert into stripe_customers as t (id, email, name, deleted, tenant_hint, created, livemode, raw, \
             gate_terminal, gate_created, gate_rank, gate_source) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         on conflict (id) do update set email = excluded.email, name = excluded.name, deleted = excluded.deleted, \
             tenant_hint = coalesce(excluded.tenant_hint, t.tenant_hint), created = coalesce(excluded.created, t.created), \
             livemode = excluded.livemode, raw = excluded.raw, gate_terminal = excluded.gate_terminal, \
             gate_created = excluded.gate_created, gate_rank = excluded.gate_rank, gate_source = excluded.gate_source, \
             synced_at = now() \
         where {}",
        gate_clause(source)
    );
    let changed = sqlx::query(&sql)
        .bind(&view.id)
        .bind(&view.email)
        .bind(&view.name)
        .bind(deleted)
        .bind(tenant)
        .bind(view.created)
        .bind(obj.get("livemode").and_then(Value::as_bool))
        .bind(obj)
        .bind_gate(&g)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1;
    if let Some(tenant) = tenant
        && !deleted
    {
        link_account(tx, tenant, &view.id).await?;
    }
    Ok(changed)
}

async fn upsert_subscription(
    tx: &mut Tx,
    obj: &Value,
    all_items: Option<&[Value]>,
    source: &Source,
) -> Result<bool, BillingSyncError> {
    let (whole, raw_items) = with_full_list(obj, "items", all_items);
    let view = SubscriptionView::read(&whole)?;
    let g = gate_for(source, "subscription", view.status.as_deref());
    let first = view.items.first();
    let sql = format!(
        "insert into stripe_subscriptions as t (id, customer_id, status, price_id, quantity, cancel_at_period_end, \
             canceled_at, trial_start, trial_end, current_period_start, current_period_end, created, livemode, raw, \
             gate_terminal, gate_created, gate_rank, gate_source) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
         on conflict (id) do update set customer_id = excluded.customer_id, status = excluded.status, \
             price_id = excluded.price_id, quantity = excluded.quantity, \
             cancel_at_period_end = excluded.cancel_at_period_end, canceled_at = excluded.canceled_at, \
             trial_start = excluded.trial_start, trial_end = excluded.trial_end, \
             current_period_start = excluded.current_period_start, current_period_end = excluded.current_period_end, \
             created = excluded.created, livemode = excluded.livemode, raw = excluded.raw, \
             gate_terminal = excluded.gate_terminal, gate_created = excluded.gate_created, \
             gate_rank = excluded.gate_rank, gate_source = excluded.gate_source, synced_at = now() \
         where {}",
        gate_clause(source)
    );
    let won = sqlx::query(&sql)
        .bind(&view.id)
        .bind(&view.customer)
        .bind(&view.status)
        .bind(first.and_then(|i| i.price_id.clone()))
        .bind(first.map(|i| i.quantity))
        .bind(view.cancel_at_period_end)
        .bind(view.canceled_at)
        .bind(view.trial_start)
        .bind(view.trial_end)
        .bind(view.current_period_start)
        .bind(view.current_period_end)
        .bind(view.created)
        .bind(obj.get("livemode").and_then(Value::as_bool))
        .bind(obj)
        .bind_gate(&g)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1;
    if won {
        sqlx::query("delete from stripe_subscription_items where subscription_id = $1")
            .bind(&view.id)
            .execute(&mut **tx)
            .await?;
        for (item, raw) in view.items.iter().zip(raw_items.iter()) {
            sqlx::query(
                "insert into stripe_subscription_items (subscription_id, id, price_id, quantity, \
                 current_period_start, current_period_end, raw) values ($1, $2, $3, $4, $5, $6, $7) \
                 on conflict (subscription_id, id) do nothing",
            )
            .bind(&view.id)
            .bind(&item.id)
            .bind(&item.price_id)
            .bind(item.quantity)
            .bind(item.current_period_start)
            .bind(item.current_period_end)
            .bind(raw)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(won)
}

async fn upsert_invoice(
    tx: &mut Tx,
    obj: &Value,
    all_lines: Option<&[Value]>,
    source: &Source,
) -> Result<bool, BillingSyncError> {
    let Some(id) = InvoiceView::read(obj)?.id else {
        return Ok(false);
    };
    let (whole, raw_lines) = with_full_list(obj, "lines", all_lines);
    let view = InvoiceView::read(&whole)?;
    let g = gate_for(source, "invoice", view.status.as_deref());
    let sql = format!(
        "insert into stripe_invoices as t (id, customer_id, subscription_id, number, status, currency, amount_due, \
             amount_paid, amount_remaining, total, period_start, period_end, hosted_invoice_url, invoice_pdf, created, \
             livemode, raw, gate_terminal, gate_created, gate_rank, gate_source) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) \
         on conflict (id) do update set customer_id = excluded.customer_id, subscription_id = excluded.subscription_id, \
             number = excluded.number, status = excluded.status, currency = excluded.currency, \
             amount_due = excluded.amount_due, amount_paid = excluded.amount_paid, \
             amount_remaining = excluded.amount_remaining, total = excluded.total, \
             period_start = excluded.period_start, period_end = excluded.period_end, \
             hosted_invoice_url = excluded.hosted_invoice_url, invoice_pdf = excluded.invoice_pdf, \
             created = excluded.created, livemode = excluded.livemode, raw = excluded.raw, \
             gate_terminal = excluded.gate_terminal, gate_created = excluded.gate_created, \
             gate_rank = excluded.gate_rank, gate_source = excluded.gate_source, synced_at = now() \
         where {}",
        gate_clause(source)
    );
    let won = sqlx::query(&sql)
        .bind(&id)
        .bind(&view.customer)
        .bind(&view.subscription)
        .bind(&view.number)
        .bind(&view.status)
        .bind(&view.currency)
        .bind(view.amount_due)
        .bind(view.amount_paid)
        .bind(view.amount_remaining)
        .bind(view.total)
        .bind(view.period_start)
        .bind(view.period_end)
        .bind(&view.hosted_invoice_url)
        .bind(&view.invoice_pdf)
        .bind(view.created)
        .bind(obj.get("livemode").and_then(Value::as_bool))
        .bind(obj)
        .bind_gate(&g)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1;
    if won {
        sqlx::query("delete from stripe_invoice_lines where invoice_id = $1")
            .bind(&id)
            .execute(&mut **tx)
            .await?;
        for (line, raw) in view.lines.iter().zip(raw_lines.iter()) {
            sqlx::query(
                "insert into stripe_invoice_lines (invoice_id, id, amount, currency, description, period_start, \
                 period_end, raw) values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (invoice_id, id) do nothing",
            )
            .bind(&id)
            .bind(&line.id)
            .bind(line.amount)
            .bind(&line.currency)
            .bind(&line.description)
            .bind(line.period_start)
            .bind(line.period_end)
            .bind(raw)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(won)
}

async fn upsert_invoice_payment(tx: &mut Tx, obj: &Value, source: &Source) -> Result<bool, BillingSyncError> {
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
    let Some(id) = text("id") else {
        return Ok(false);
    };
    let status = text("status");
    let g = gate_for(source, "invoice_payment", status.as_deref());
    let sql = format!(
        "insert into stripe_invoice_payments as t (id, invoice_id, payment_intent_id, status, amount_paid, currency, \
             raw, gate_terminal, gate_created, gate_rank, gate_source) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         on conflict (id) do update set invoice_id = excluded.invoice_id, \
             payment_intent_id = excluded.payment_intent_id, status = excluded.status, \
             amount_paid = excluded.amount_paid, currency = excluded.currency, raw = excluded.raw, \
             gate_terminal = excluded.gate_terminal, gate_created = excluded.gate_created, \
             gate_rank = excluded.gate_rank, gate_source = excluded.gate_source, synced_at = now() \
         where {}",
        gate_clause(source)
    );
    Ok(sqlx::query(&sql)
        .bind(&id)
        .bind(id_of(obj.get("invoice")))
        .bind(id_of(obj.pointer("/payment/payment_intent")))
        .bind(&status)
        .bind(obj.get("amount_paid").and_then(Value::as_i64))
        .bind(text("currency"))
        .bind(obj)
        .bind_gate(&g)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1)
}

async fn upsert_payment_intent(tx: &mut Tx, obj: &Value, source: &Source) -> Result<bool, BillingSyncError> {
    let view = PaymentIntentView::read(obj)?;
    let g = gate_for(source, "payment_intent", view.status.as_deref());
    let sql = format!(
        "insert into stripe_payment_intents as t (id, customer_id, invoice_id, status, amount, amount_received, \
             currency, created, livemode, raw, gate_terminal, gate_created, gate_rank, gate_source) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         on conflict (id) do update set customer_id = excluded.customer_id, invoice_id = excluded.invoice_id, \
             status = excluded.status, amount = excluded.amount, amount_received = excluded.amount_received, \
             currency = excluded.currency, created = excluded.created, livemode = excluded.livemode, \
             raw = excluded.raw, gate_terminal = excluded.gate_terminal, gate_created = excluded.gate_created, \
             gate_rank = excluded.gate_rank, gate_source = excluded.gate_source, synced_at = now() \
         where {}",
        gate_clause(source)
    );
    Ok(sqlx::query(&sql)
        .bind(&view.id)
        .bind(&view.customer)
        .bind(&view.invoice)
        .bind(&view.status)
        .bind(view.amount)
        .bind(view.amount_received)
        .bind(&view.currency)
        .bind(view.created)
        .bind(obj.get("livemode").and_then(Value::as_bool))
        .bind(obj)
        .bind_gate(&g)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1)
}

async fn upsert_refund(tx: &mut Tx, obj: &Value, source: &Source) -> Result<bool, BillingSyncError> {
    let view = RefundView::read(obj)?;
    let g = gate_for(source, "refund", view.status.as_deref());
    let sql = format!(
        "insert into stripe_refunds as t (id, charge_id, payment_intent_id, amount, currency, status, created, raw, \
             gate_terminal, gate_created, gate_rank, gate_source) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         on conflict (id) do update set charge_id = excluded.charge_id, \
             payment_intent_id = excluded.payment_intent_id, amount = excluded.amount, currency = excluded.currency, \
             status = excluded.status, created = excluded.created, raw = excluded.raw, \
             gate_terminal = excluded.gate_terminal, gate_created = excluded.gate_created, \
             gate_rank = excluded.gate_rank, gate_source = excluded.gate_source, synced_at = now() \
         where {}",
        gate_clause(source)
    );
    Ok(sqlx::query(&sql)
        .bind(&view.id)
        .bind(&view.charge)
        .bind(&view.payment_intent)
        .bind(view.amount)
        .bind(&view.currency)
        .bind(&view.status)
        .bind(view.created)
        .bind(obj)
        .bind_gate(&g)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1)
}

/// Reconciliation's write: Stripe's current object replaces the mirrored row when they differ.
/// Returns the row before, when it changed.
pub(crate) async fn repair_object(
    tx: &mut Tx,
    obj: &Value,
    source: &Source,
    fetched_items: Option<Vec<Value>>,
    fetched_lines: Option<Vec<Value>>,
) -> Result<bool, BillingSyncError> {
    let fetched = Fetched {
        items: fetched_items,
        lines: fetched_lines,
        ..Fetched::default()
    };
    let kind = obj.get("object").and_then(Value::as_str).unwrap_or_default();
    let event_type = if kind == "customer" && obj.get("deleted").and_then(Value::as_bool) == Some(true) {
        "customer.deleted"
    } else {
        "reconcile"
    };
    apply_object(tx, event_type, obj, source, &fetched).await
}
