//! Reconciliation (scheduled): pages Stripe's events since the last run and applies any the
//! webhook path missed (the ledger makes that idempotent), then lists customers, subscriptions
//! (status=all) and invoices and repairs every mirrored row that differs from Stripe, recording
//! each change. Stripe keeps events for 30 days, so the lists are also the backfill. Prices
//! whose metadata names a `portal_plan` are synced into the catalogue.
use serde_json::Value;
use uuid::Uuid;

use super::mirrors::{GATE_COLUMNS, Source, lifecycle, repair_object};
use super::sync::{BillingSyncError, Outcome, StripeEvent, Syncer};
use crate::domain::stripe_objects::{InvoiceView, SubscriptionView};

/// Stripe keeps events this long: the first run looks back this far.
const EVENT_HORIZON_SECS: i64 = 30 * 24 * 3600;

/// How far each run re-reads before the last cursor (Stripe's list is eventually consistent).
const CURSOR_OVERLAP_SECS: i64 = 600;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub run_id: Uuid,
    pub events_applied: i32,
    pub objects_seen: i32,
    pub changes: i32,
    pub prices_synced: i32,
    /// Events or objects that could not be applied (logged; the run reports an error).
    pub failures: i32,
}

/// The typed columns of a mirrored row (what reconciliation compares), as JSON.
fn projection_sql(table: &str) -> String {
    let gate: String = GATE_COLUMNS.iter().map(|c| format!(" - '{c}'")).collect();
    format!(
        "select to_jsonb(t) - 'raw'{gate} - 'synced_at' \
         || jsonb_build_object('children', {children}) from {table} t where id = $1",
        children = match table {
            "stripe_subscriptions" => {
                "(select coalesce(jsonb_agg(to_jsonb(i) - 'raw' order by i.id), '[]') \
                  from stripe_subscription_items i where i.subscription_id = t.id)"
            }
            "stripe_invoices" => {
                "(select coalesce(jsonb_agg(to_jsonb(l) - 'raw' order by l.id), '[]') \
                  from stripe_invoice_lines l where l.invoice_id = t.id)"
            }
            _ => "null",
        }
    )
}

impl Syncer {
    /// One reconciliation run; `now` is Unix seconds at its start.
    #[tracing::instrument(skip_all)]
    pub async fn reconcile(&self, now: i64) -> Result<Report, BillingSyncError> {
        let api = self.stripe.as_ref().ok_or(BillingSyncError::NoApi)?;
        let mut report = Report {
            run_id: Uuid::now_v7(),
            ..Report::default()
        };
        sqlx::query("insert into billing_reconcile_runs (id) values ($1)")
            .bind(report.run_id)
            .execute(&self.db)
            .await?;
        let result = self.reconcile_run(api, now, &mut report).await;
        let error = result.as_ref().err().map(ToString::to_string);
        sqlx::query(
            "update billing_reconcile_runs set finished_at = now(), events_applied = $2, objects_seen = $3, \
             changes = $4, failures = $5, error = $6 where id = $1",
        )
        .bind(report.run_id)
        .bind(report.events_applied)
        .bind(report.objects_seen)
        .bind(report.changes)
        .bind(report.failures)
        .bind(&error)
        .execute(&self.db)
        .await?;
        result.map(|()| report)
    }

    async fn reconcile_run(
        &self,
        api: &crate::adapters::stripe_api::StripeApi,
        now: i64,
        report: &mut Report,
    ) -> Result<(), BillingSyncError> {
        // 1. Missed events, oldest first, from where the last run got to (minus an overlap:
        //    Stripe's event list is eventually consistent; the ledger makes re-reading free).
        let cursor: Option<i64> =
            sqlx::query_scalar("select max(events_cursor) from billing_reconcile_runs where events_cursor is not null")
                .fetch_one(&self.db)
                .await?;
        let since = cursor.map_or(now - EVENT_HORIZON_SECS, |c| c - CURSOR_OVERLAP_SECS);
        let since_text = since.to_string();
        let mut events = api.list_all("events", &[("created[gte]", since_text.as_str())]).await?;
        events.sort_by_key(|e| e.get("created").and_then(Value::as_i64).unwrap_or(0));
        // The cursor moves to the newest event seen, but never past an event that failed.
        let mut newest = cursor.unwrap_or(since).max(since);
        let mut first_failure: Option<i64> = None;
        for raw in events {
            let created = raw.get("created").and_then(Value::as_i64).unwrap_or(0);
            newest = newest.max(created);
            let applied = match StripeEvent::from_value(raw) {
                Ok(event) => self.apply(&event).await.map(|o| (o, event.id)),
                Err(e) => Err(e),
            };
            match applied {
                Ok((Outcome::Applied, id)) => {
                    report.events_applied += 1;
                    record_change(&self.db, report.run_id, "event", &id, "event_applied", None, None).await?;
                }
                Ok(_) => {}
                Err(e) => {
                    report.failures += 1;
                    first_failure = Some(first_failure.map_or(created, |f| f.min(created)));
                    tracing::error!(error = %e, created, "reconciliation could not apply an event; continuing");
                }
            }
        }
        let cursor = first_failure.map_or(newest, |f| (f - 1).min(newest));
        sqlx::query("update billing_reconcile_runs set events_cursor = $2 where id = $1")
            .bind(report.run_id)
            .bind(cursor)
            .execute(&self.db)
            .await?;

        // 2. Prices of the catalogue (plans: the same ids, and what localstripe serves).
        for plan in api.list_all("plans", &[("active", "true")]).await? {
            report.prices_synced += self.sync_price(&plan).await?;
        }

        // 3. Current state of every object we mirror. Each list is gated at the time it was
        //    read: a row that an event changed after that keeps the event's state.
        for (path, table, query) in [
            ("customers", "stripe_customers", vec![]),
            ("subscriptions", "stripe_subscriptions", vec![("status", "all")]),
            ("invoices", "stripe_invoices", vec![]),
        ] {
            let source = Source {
                id: format!("reconcile:{}", report.run_id),
                created: chrono::Utc::now().timestamp(),
                forced: true,
            };
            for obj in api.list_all(path, &query).await? {
                report.objects_seen += 1;
                match self.repair(api, table, &obj, &source, report.run_id).await {
                    Ok(true) => report.changes += 1,
                    Ok(false) => {}
                    Err(e) => {
                        report.failures += 1;
                        tracing::error!(error = %e, table, "reconciliation could not repair an object; continuing");
                    }
                }
            }
        }
        tracing::info!(
            run_id = %report.run_id,
            events_applied = report.events_applied,
            objects_seen = report.objects_seen,
            changes = report.changes,
            failures = report.failures,
            "reconciliation finished"
        );
        if report.failures > 0 {
            return Err(BillingSyncError::Incomplete(report.failures));
        }
        Ok(())
    }

    async fn sync_price(&self, plan: &Value) -> Result<i32, BillingSyncError> {
        let text = |k: &str| plan.get(k).and_then(Value::as_str);
        let (Some(id), Some(code), Some(currency)) = (
            text("id"),
            plan.pointer("/metadata/portal_plan").and_then(Value::as_str),
            text("currency"),
        ) else {
            return Ok(0);
        };
        let amount = plan
            .get("amount")
            .or_else(|| plan.get("unit_amount"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let interval = text("interval")
            .or_else(|| plan.pointer("/recurring/interval").and_then(Value::as_str))
            .unwrap_or("month");
        let changed = sqlx::query(
            "insert into billing_prices (id, plan_code, currency, unit_amount, interval, active) \
             select $1, code, $3, $4, $5, true from billing_plans where code = $2 \
             on conflict (id) do update set plan_code = excluded.plan_code, currency = excluded.currency, \
                 unit_amount = excluded.unit_amount, interval = excluded.interval, active = true, updated_at = now() \
             where (billing_prices.plan_code, billing_prices.currency, billing_prices.unit_amount, \
                    billing_prices.interval, billing_prices.active) \
                   is distinct from (excluded.plan_code, excluded.currency, excluded.unit_amount, excluded.interval, true)",
        )
        .bind(id)
        .bind(code)
        .bind(currency.to_ascii_lowercase())
        .bind(amount)
        .bind(interval)
        .execute(&self.db)
        .await?
        .rows_affected();
        Ok(i32::try_from(changed).unwrap_or(0))
    }

    /// Repairs one mirrored row from Stripe's current object; true when it changed.
    async fn repair(
        &self,
        api: &crate::adapters::stripe_api::StripeApi,
        table: &str,
        obj: &Value,
        source: &Source,
        run_id: Uuid,
    ) -> Result<bool, BillingSyncError> {
        let Some(id) = obj.get("id").and_then(Value::as_str) else {
            return Ok(false);
        };
        let items = match table {
            "stripe_subscriptions" if SubscriptionView::read(obj)?.items_truncated => {
                Some(api.list_all("subscription_items", &[("subscription", id)]).await?)
            }
            _ => None,
        };
        let lines = match table {
            "stripe_invoices" if InvoiceView::read(obj)?.lines_truncated => {
                Some(api.list_all(&format!("invoices/{id}/lines"), &[]).await?)
            }
            _ => None,
        };
        let projection = projection_sql(table);
        let mut tx = self.db.begin().await?;
        let before: Option<Value> = sqlx::query_scalar(&projection)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        // Money state only moves back on a fresh read of the object itself.
        let (kind, path) = match table {
            "stripe_subscriptions" => ("subscription", "subscriptions"),
            "stripe_invoices" => ("invoice", "invoices"),
            _ => ("customer", "customers"),
        };
        let was_terminal = before
            .as_ref()
            .and_then(|b| b.get("status").or_else(|| b.get("deleted")))
            .is_some_and(|s| s.as_bool().unwrap_or(false) || lifecycle(kind, s.as_str()).0);
        let listed_terminal = lifecycle(kind, obj.get("status").and_then(Value::as_str)).0
            || obj.get("deleted").and_then(Value::as_bool).unwrap_or(false);
        let mut source = source.clone();
        let fresh;
        let obj = if was_terminal && !listed_terminal {
            source.created = chrono::Utc::now().timestamp();
            fresh = api.get(&format!("{path}/{id}"), &[]).await?;
            &fresh
        } else {
            obj
        };
        repair_object(&mut tx, obj, &source, items, lines).await?;
        let after: Option<Value> = sqlx::query_scalar(&projection)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if before == after {
            // Nothing drifted: leave the row (and its gate) as it was.
            tx.rollback().await?;
            return Ok(false);
        }
        let action = if before.is_none() { "inserted" } else { "updated" };
        let kind = obj.get("object").and_then(Value::as_str).unwrap_or_default();
        record_change(&mut *tx, run_id, kind, id, action, before.as_ref(), after.as_ref()).await?;
        tx.commit().await?;
        tracing::warn!(object_id = id, action, "reconciliation repaired drift");
        Ok(true)
    }
}

async fn record_change<'e>(
    db: impl sqlx::PgExecutor<'e>,
    run_id: Uuid,
    object_type: &str,
    object_id: &str,
    action: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) -> Result<(), BillingSyncError> {
    sqlx::query(
        "insert into billing_reconcile_changes (run_id, object_type, object_id, action, before, after) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(run_id)
    .bind(object_type)
    .bind(object_id)
    .bind(action)
    .bind(before)
    .bind(after)
    .execute(db)
    .await?;
    Ok(())
}
