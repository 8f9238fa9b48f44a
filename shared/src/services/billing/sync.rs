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
//!   its lifecycle, then by event id, so every delivery order ends in the same mirror. The gates
//!   and the one upsert every mirror is written with are in `mirrors`.
//! - Complete: truncated lists (subscription items, invoice lines, a charge's refunds) are
//!   fetched in full from the Stripe API before the transaction opens.
//! - Lenient: the envelope is read first, then our typed views; unknown types, previews
//!   (`invoice.upcoming`, which has no id) and events of the wrong mode are recorded and
//!   acknowledged, not failed. Events for a customer no tenant is linked to yet are applied
//!   all the same: the rows become visible to the tenant once the link exists.
use serde_json::Value;
use sqlx::PgPool;

use super::mirrors::{Fetched, apply_object};
pub use super::mirrors::{Gate, Source, lifecycle};
use crate::adapters::stripe_api::{StripeApi, StripeError};
use crate::domain::stripe_objects::{InvoiceView, SubscriptionView, ViewError, id_of};

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

/// The billing-sync service (the `portal_billing` pool: mirrors of every tenant).
#[derive(Clone)]
pub struct Syncer {
    pub db: PgPool,
    pub stripe: Option<StripeApi>,
    /// When set, events of the other mode are recorded and ignored.
    pub livemode: Option<bool>,
}

impl Syncer {
    /// The `portal_billing` pool and the Stripe client from their settings (read once, in
    /// `main`): the one way billing-sync and billing-reconcile build it.
    pub fn build(db: &crate::config::DatabaseSettings, stripe: &crate::config::StripeSettings) -> anyhow::Result<Self> {
        Ok(Self {
            db: db.pool()?,
            stripe: Some(stripe.client()?),
            livemode: stripe.livemode,
        })
    }
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
