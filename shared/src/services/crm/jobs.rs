//! The messages of the CRM jobs queue, and the sweep that finds jobs whose message was lost.
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::DomainError;
pub use crate::domain::jobs::{JobKind, JobMessage};

/// Jobs of any tenant still queued or running without progress for `idle` (their message was
/// lost, or every delivery of it died): the scheduled sweep queues them again. A job that is in
/// fact still running loses nothing by a second message: imports resume at their committed
/// offset and stop when another run moved past it; exports are rewritten whole.
pub async fn stalled(pool: &PgPool, idle: std::time::Duration) -> Result<Vec<JobMessage>, DomainError> {
    let seconds = f64::from(u32::try_from(idle.as_secs()).unwrap_or(u32::MAX));
    let rows: Vec<(String, Uuid, Uuid)> =
        sqlx::query_as("select kind, tenant_id, id from app_crm_stalled_jobs(make_interval(secs => $1))")
            .bind(seconds)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(kind, tenant_id, id)| JobMessage {
            kind: if kind == "export" {
                JobKind::Export
            } else {
                JobKind::Import
            },
            tenant_id,
            id,
        })
        .collect())
}
