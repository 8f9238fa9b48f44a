//! Entitlements: what the tenant's plan allows. Any function calls [`ensure`] inside its tenant
//! transaction (after [`lock`], before counting) before creating something a plan limits; over
//! the limit it answers 402 with a
//! problem naming the limit. The plan is the one of the tenant's live subscription (trialing,
//! active, past due: Stripe still retries those), else the default plan.
use serde::Serialize;

use crate::adapters::pg::Tx;
use crate::domain::DomainError;

/// A limited quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Seats,
    Contacts,
    Sites,
    AiTasksPerMonth,
    StorageBytes,
    EmailsPerMonth,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Seats => "seats",
            Limit::Contacts => "contacts",
            Limit::Sites => "sites",
            Limit::AiTasksPerMonth => "ai_tasks_per_month",
            Limit::StorageBytes => "storage_bytes",
            Limit::EmailsPerMonth => "emails_per_month",
        }
    }
}

/// Subscription statuses under which the subscribed plan applies.
pub const LIVE_STATUSES: &[&str] = &["trialing", "active", "past_due"];

/// A plan's limits (`None` = unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Limits {
    pub seats: Option<i64>,
    pub contacts: Option<i64>,
    pub sites: Option<i64>,
    pub ai_tasks_per_month: Option<i64>,
    pub storage_bytes: Option<i64>,
    /// Marketing emails a calendar month (UTC): sent, plus those of started campaigns still
    /// to go.
    pub emails_per_month: Option<i64>,
}

impl Limits {
    pub fn get(&self, limit: Limit) -> Option<i64> {
        match limit {
            Limit::Seats => self.seats,
            Limit::Contacts => self.contacts,
            Limit::Sites => self.sites,
            Limit::AiTasksPerMonth => self.ai_tasks_per_month,
            Limit::StorageBytes => self.storage_bytes,
            Limit::EmailsPerMonth => self.emails_per_month,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantPlan {
    pub code: String,
    pub name: String,
    #[sqlx(flatten)]
    pub limits: Limits,
}

/// The plan in force for the transaction's tenant.
pub async fn plan(tx: &mut Tx) -> Result<TenantPlan, DomainError> {
    let plan: Option<TenantPlan> = sqlx::query_as(
        "select p.code, p.name, p.seats, p.contacts, p.sites, p.ai_tasks_per_month, p.storage_bytes, \
         p.emails_per_month \
         from billing_plans p \
         left join lateral ( \
             select coalesce(pr.plan_code, s.raw #>> '{items,data,0,price,metadata,portal_plan}', \
                             s.raw #>> '{items,data,0,plan,metadata,portal_plan}') as plan_code \
             from stripe_subscriptions s left join billing_prices pr on pr.id = s.price_id \
             where s.status = any($1) and s.customer_id = app_current_customer() \
             order by s.created desc nulls last, s.id limit 1) live on true \
         where p.code = live.plan_code or (live.plan_code is null and p.is_default) \
         limit 1",
    )
    .bind(LIVE_STATUSES)
    .fetch_optional(&mut **tx)
    .await?;
    plan.ok_or_else(|| DomainError::Internal(anyhow::anyhow!("no default plan in billing_plans")))
}

/// Serializes the checks of one limit in one tenant for the rest of the transaction: call it
/// before counting what is in use, so two concurrent creations cannot both see room for one.
pub async fn lock(tx: &mut Tx, limit: Limit) -> Result<(), DomainError> {
    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended('entitlement:' || app_current_tenant()::text || ':' || $1, 0))",
    )
    .bind(limit.name())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Refuses (402) when `used + adding` would exceed the plan's `limit`.
pub async fn ensure(tx: &mut Tx, limit: Limit, used: i64, adding: i64) -> Result<(), DomainError> {
    let plan = plan(tx).await?;
    check(&plan, limit, used, adding)
}

/// The rule itself, without the database.
pub fn check(plan: &TenantPlan, limit: Limit, used: i64, adding: i64) -> Result<(), DomainError> {
    match plan.limits.get(limit) {
        Some(allowed) if used.saturating_add(adding) > allowed => Err(DomainError::LimitExceeded {
            limit: limit.name(),
            allowed,
            used,
            plan: plan.code.clone(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seats: Option<i64>) -> TenantPlan {
        TenantPlan {
            code: "free".into(),
            name: "Free".into(),
            limits: Limits {
                seats,
                contacts: None,
                sites: None,
                ai_tasks_per_month: None,
                storage_bytes: None,
                emails_per_month: None,
            },
        }
    }

    #[test]
    fn a_limit_allows_up_to_and_including_its_value() {
        assert!(check(&plan(Some(3)), Limit::Seats, 2, 1).is_ok());
        let err = check(&plan(Some(3)), Limit::Seats, 3, 1).unwrap_err();
        assert!(matches!(
            err,
            DomainError::LimitExceeded {
                limit: "seats",
                allowed: 3,
                used: 3,
                ..
            }
        ));
        assert!(
            check(&plan(None), Limit::Seats, 1_000_000, 1).is_ok(),
            "None is unlimited"
        );
        assert!(check(&plan(Some(3)), Limit::Contacts, 10, 1).is_ok());
    }
}
