//! The Postgres mirrors of Stripe objects and their write gates: one upsert per object type,
//! each written by [`Mirror::upsert_sql`] (the typed columns, the raw object, the gate columns)
//! and replacing the row only where the incoming gate wins. Events (`sync`) and reconciliation
//! (`reconcile`) both write through [`apply_object`].
use serde_json::Value;
use uuid::Uuid;

use super::sync::BillingSyncError;
use crate::adapters::pg::Tx;
use crate::domain::stripe_objects::{
    CustomerView, InvoiceView, PaymentIntentView, RefundView, SubscriptionView, id_of,
};

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

/// What an event's object needs from the API before the transaction (truncated lists).
#[derive(Debug, Default)]
pub(super) struct Fetched {
    pub(super) items: Option<Vec<Value>>,
    pub(super) lines: Option<Vec<Value>>,
    pub(super) refunds: Option<Vec<Value>>,
    pub(super) subscription: Option<Value>,
    /// The customer, refetched when an event changes it without carrying it (a card attached).
    pub(super) customer: Option<Value>,
    /// When the refetches were made (Unix seconds): they show Stripe's state as of then, so
    /// they are gated at that time, not at the event's.
    pub(super) fetched_at: i64,
}

/// Applies one Stripe object to the mirror in `tx` (events and reconciliation share it).
/// Returns whether a mirrored row changed.
pub(super) async fn apply_object(
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

/// Runs a mirror's upsert with the row's gate bound as its last four parameters: whether the
/// row was written (its gate won).
async fn gated<'q>(tx: &mut Tx, query: PgQuery<'q>, g: &'q Gate) -> Result<bool, BillingSyncError> {
    let query = query.bind(g.terminal).bind(g.created).bind(g.rank).bind(&g.source);
    Ok(query.execute(&mut **tx).await?.rows_affected() == 1)
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

/// The gate's columns of every mirrored row, in the order `gated` binds them.
pub(super) const GATE_COLUMNS: [&str; 4] = ["gate_terminal", "gate_created", "gate_rank", "gate_source"];

/// A mirror table as its upsert writes it.
struct Mirror {
    table: &'static str,
    /// The typed and raw columns, the conflict key `id` first, in bind order (the gate follows).
    columns: &'static str,
    /// Columns an update keeps when the incoming value is null.
    keep_known: &'static [&'static str],
}

impl Mirror {
    /// The one upsert of a mirrored row: its columns and gate inserted; on conflict every
    /// column but the key replaced, with the gate and `synced_at`, where [`gate_clause`] holds.
    fn upsert_sql(&self, source: &Source) -> String {
        let columns: Vec<&str> = self.columns.split(", ").chain(GATE_COLUMNS).collect();
        let values: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let set: Vec<String> = columns
            .iter()
            .skip(1)
            .map(|c| {
                if self.keep_known.contains(c) {
                    format!("{c} = coalesce(excluded.{c}, t.{c})")
                } else {
                    format!("{c} = excluded.{c}")
                }
            })
            .collect();
        format!(
            "insert into {table} as t ({columns}) values ({values}) \
             on conflict (id) do update set {set}, synced_at = now() where {gate}",
            table = self.table,
            columns = columns.join(", "),
            values = values.join(", "),
            set = set.join(", "),
            gate = gate_clause(source),
        )
    }
}

const CUSTOMERS: Mirror = Mirror {
    table: "stripe_customers",
    columns: "id, email, name, deleted, tenant_hint, created, livemode, raw",
    keep_known: &["tenant_hint", "created"],
};

const SUBSCRIPTIONS: Mirror = Mirror {
    table: "stripe_subscriptions",
    columns: "id, customer_id, status, price_id, quantity, cancel_at_period_end, canceled_at, trial_start, \
        trial_end, current_period_start, current_period_end, created, livemode, raw",
    keep_known: &[],
};

const INVOICES: Mirror = Mirror {
    table: "stripe_invoices",
    columns: "id, customer_id, subscription_id, number, status, currency, amount_due, amount_paid, \
        amount_remaining, total, period_start, period_end, hosted_invoice_url, invoice_pdf, created, livemode, raw",
    keep_known: &[],
};

const INVOICE_PAYMENTS: Mirror = Mirror {
    table: "stripe_invoice_payments",
    columns: "id, invoice_id, payment_intent_id, status, amount_paid, currency, raw",
    keep_known: &[],
};

const PAYMENT_INTENTS: Mirror = Mirror {
    table: "stripe_payment_intents",
    columns: "id, customer_id, invoice_id, status, amount, amount_received, currency, created, livemode, raw",
    keep_known: &[],
};

const REFUNDS: Mirror = Mirror {
    table: "stripe_refunds",
    columns: "id, charge_id, payment_intent_id, amount, currency, status, created, raw",
    keep_known: &[],
};

async fn upsert_customer(tx: &mut Tx, obj: &Value, deleted: bool, source: &Source) -> Result<bool, BillingSyncError> {
    let view = CustomerView::read(obj)?;
    let deleted = deleted || view.deleted;
    let g = gate_for(source, "customer", deleted.then_some("deleted"));
    let tenant = view.tenant_id.as_deref().and_then(|t| Uuid::parse_str(t).ok());
    let sql = CUSTOMERS.upsert_sql(source);
    let query = sqlx::query(&sql)
        .bind(&view.id)
        .bind(&view.email)
        .bind(&view.name)
        .bind(deleted)
        .bind(tenant)
        .bind(view.created)
        .bind(obj.get("livemode").and_then(Value::as_bool))
        .bind(obj);
    let changed = gated(tx, query, &g).await?;
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
    let sql = SUBSCRIPTIONS.upsert_sql(source);
    let query = sqlx::query(&sql)
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
        .bind(obj);
    let won = gated(tx, query, &g).await?;
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
    let sql = INVOICES.upsert_sql(source);
    let query = sqlx::query(&sql)
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
        .bind(obj);
    let won = gated(tx, query, &g).await?;
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
    let sql = INVOICE_PAYMENTS.upsert_sql(source);
    let query = sqlx::query(&sql)
        .bind(&id)
        .bind(id_of(obj.get("invoice")))
        .bind(id_of(obj.pointer("/payment/payment_intent")))
        .bind(&status)
        .bind(obj.get("amount_paid").and_then(Value::as_i64))
        .bind(text("currency"))
        .bind(obj);
    gated(tx, query, &g).await
}

async fn upsert_payment_intent(tx: &mut Tx, obj: &Value, source: &Source) -> Result<bool, BillingSyncError> {
    let view = PaymentIntentView::read(obj)?;
    let g = gate_for(source, "payment_intent", view.status.as_deref());
    let sql = PAYMENT_INTENTS.upsert_sql(source);
    let query = sqlx::query(&sql)
        .bind(&view.id)
        .bind(&view.customer)
        .bind(&view.invoice)
        .bind(&view.status)
        .bind(view.amount)
        .bind(view.amount_received)
        .bind(&view.currency)
        .bind(view.created)
        .bind(obj.get("livemode").and_then(Value::as_bool))
        .bind(obj);
    gated(tx, query, &g).await
}

async fn upsert_refund(tx: &mut Tx, obj: &Value, source: &Source) -> Result<bool, BillingSyncError> {
    let view = RefundView::read(obj)?;
    let g = gate_for(source, "refund", view.status.as_deref());
    let sql = REFUNDS.upsert_sql(source);
    let query = sqlx::query(&sql)
        .bind(&view.id)
        .bind(&view.charge)
        .bind(&view.payment_intent)
        .bind(view.amount)
        .bind(&view.currency)
        .bind(&view.status)
        .bind(view.created)
        .bind(obj);
    gated(tx, query, &g).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_upsert_writes_the_gate_last_and_replaces_the_row_only_where_it_wins() {
        // Given an event and a reconciliation read of a customer.
        let event = Source {
            id: "evt_1".to_owned(),
            created: 1,
            forced: false,
        };
        let repair = Source {
            forced: true,
            ..event.clone()
        };
        // When their upserts are written.
        let sql = CUSTOMERS.upsert_sql(&event);
        // Then every column is inserted with the gate last, the known tenant and creation time are
        // kept over nulls, and the row changes only where the gate wins (a repair: where the read
        // is newer).
        assert_eq!(
            sql,
            "insert into stripe_customers as t (id, email, name, deleted, tenant_hint, created, livemode, raw, \
             gate_terminal, gate_created, gate_rank, gate_source) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             on conflict (id) do update set email = excluded.email, name = excluded.name, deleted = excluded.deleted, \
             tenant_hint = coalesce(excluded.tenant_hint, t.tenant_hint), \
             created = coalesce(excluded.created, t.created), livemode = excluded.livemode, raw = excluded.raw, gate_terminal = excluded.gate_terminal, \
             gate_created = excluded.gate_created, gate_rank = excluded.gate_rank, gate_source = excluded.gate_source, \
             synced_at = now() \
             where (excluded.gate_terminal, excluded.gate_created, excluded.gate_rank, excluded.gate_source) \
             > (t.gate_terminal, t.gate_created, t.gate_rank, t.gate_source)"
        );
        assert!(
            CUSTOMERS
                .upsert_sql(&repair)
                .ends_with("synced_at = now() where t.gate_created < excluded.gate_created")
        );
        for mirror in [SUBSCRIPTIONS, INVOICES, INVOICE_PAYMENTS, PAYMENT_INTENTS, REFUNDS] {
            let sql = mirror.upsert_sql(&event);
            assert!(!sql.contains("coalesce"), "{sql}");
            assert!(
                sql.contains("raw, gate_terminal, gate_created, gate_rank, gate_source)"),
                "{sql}"
            );
        }
    }
}
