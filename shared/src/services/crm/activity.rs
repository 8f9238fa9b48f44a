//! The activity timeline of contacts and companies: what happened, who did it, when.
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::adapters::pg::Tx;
use crate::domain::{DomainError, Scope};

/// What the timeline entry is about.
#[derive(Debug, Clone, Copy)]
pub enum Subject {
    Contact(Uuid),
    Company(Uuid),
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Activity {
    pub id: Uuid,
    /// `created`, `updated` (`data.fields` names the changed fields), `merged`
    /// (`data.duplicate`), `imported`, ...
    pub kind: String,
    pub data: Value,
    /// `user:<id>` or `key:<id>`.
    pub actor: Option<String>,
    pub at: DateTime<Utc>,
}

/// Entries shown on a detail page.
pub const RECENT: i64 = 20;

pub async fn record(tx: &mut Tx, scope: &Scope, subject: Subject, kind: &str, data: Value) -> Result<(), DomainError> {
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let (contact, company) = match subject {
        Subject::Contact(id) => (Some(id), None),
        Subject::Company(id) => (None, Some(id)),
    };
    sqlx::query(
        "insert into crm_activities (id, tenant_id, contact_id, company_id, kind, data, actor) \
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(contact)
    .bind(company)
    .bind(kind)
    .bind(data)
    .bind(scope.actor.principal())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The newest entries of a subject.
pub async fn recent(tx: &mut Tx, subject: Subject) -> Result<Vec<Activity>, DomainError> {
    let (column, id) = match subject {
        Subject::Contact(id) => ("contact_id", id),
        Subject::Company(id) => ("company_id", id),
    };
    Ok(sqlx::query_as(&format!(
        "select id, kind, data, actor, at from crm_activities where {column} = $1 order by at desc, id desc limit $2"
    ))
    .bind(id)
    .bind(RECENT)
    .fetch_all(&mut **tx)
    .await?)
}
