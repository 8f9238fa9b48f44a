//! The audit log: every settings change is recorded in the same transaction as the change.
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, PageRequest, ResultPage, Scope};

/// Appends one entry; call it inside the transaction that makes the change.
pub async fn record(
    tx: &mut Tx,
    scope: &Scope,
    tenant_id: Uuid,
    action: &str,
    target_type: &str,
    target_id: &str,
    details: Value,
) -> Result<(), DomainError> {
    sqlx::query(
        "insert into audit_log (tenant_id, actor_user_id, actor_api_key_id, action, target_type, \
         target_id, details, request_id) values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tenant_id)
    .bind(scope.actor.user_id())
    .bind(scope.actor.api_key_id())
    .bind(action)
    .bind(target_type)
    .bind(target_id)
    .bind(details)
    .bind(&scope.request_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub actor_user_id: Option<Uuid>,
    pub actor_api_key_id: Option<Uuid>,
    /// What happened, e.g. `team.member.role_changed`.
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub details: Value,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Newest first; optionally only one action.
pub async fn list(
    pool: &PgPool,
    scope: &Scope,
    action: Option<&str>,
    page: &PageRequest<i64>,
) -> Result<ResultPage<AuditEntry>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let rows: Vec<AuditEntry> = sqlx::query_as(
        "select id, actor_user_id, actor_api_key_id, action, target_type, target_id, details, \
         request_id, created_at from audit_log \
         where ($1::bigint is null or id < $1) and ($2::text is null or action = $2) \
         order by id desc limit $3",
    )
    .bind(page.after)
    .bind(action)
    .bind(page.fetch())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |e| e.id))
}
