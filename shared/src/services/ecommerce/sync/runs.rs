//! Sync runs: recorded (one queued or running per connector), queued on `ConnectorSyncQueue`,
//! executed by connector-sync (a pass per resource, outcome on the run and the connector), and
//! the hourly schedule's runs for every shop connector.
use super::*;

/// A sync run as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SyncRun {
    pub id: uuid::Uuid,
    pub kind: String,
    /// `manual` or `schedule`.
    pub trigger: String,
    /// `queued`, `running`, `completed`, `failed`.
    pub status: String,
    /// Per resource: pages, fetched, written, unchanged, invalid.
    #[schema(value_type = Object)]
    pub counts: sqlx::types::Json<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The queue message of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunMessage {
    pub tenant_id: uuid::Uuid,
    pub kind: Kind,
    pub run: uuid::Uuid,
}

pub(super) const RUN_COLUMNS: &str = "id, kind, trigger, status, counts, error, created_at, started_at, finished_at";

/// Records a run to queue: 404 when the kind is not a shop or not configured; 409 while another
/// run of it is queued or running.
pub async fn create_run(svc: &Connectors, scope: &Scope, kind: Kind, trigger: &str) -> Result<SyncRun, DomainError> {
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    channel_of(kind).ok_or(DomainError::NotFound)?;
    let mut tx = pg::begin(&svc.db, scope).await?;
    let configured: Option<String> = sqlx::query_scalar("select kind from connectors where kind = $1 for update")
        .bind(kind.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    configured.ok_or(DomainError::NotFound)?;
    let busy: bool = sqlx::query_scalar(
        "select exists (select 1 from connector_sync_runs where kind = $1 and status in ('queued', 'running') \
         and created_at > now() - interval '1 hour')",
    )
    .bind(kind.as_str())
    .fetch_one(&mut *tx)
    .await?;
    if busy {
        return Err(DomainError::conflict(
            "sync-in-progress",
            "a sync of this connector is already queued or running",
        ));
    }
    let run: SyncRun = sqlx::query_as(&format!(
        "insert into connector_sync_runs (id, tenant_id, kind, trigger) values ($1, $2, $3, $4) returning {RUN_COLUMNS}"
    ))
    .bind(uuid::Uuid::now_v7())
    .bind(tenant)
    .bind(kind.as_str())
    .bind(trigger)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(run)
}

/// What `ConnectorSyncQueue` carries (connector-sync takes it): a sync run, or a verified
/// webhook delivery to apply. Untagged: each is told apart by its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum SyncMessage {
    Run(RunMessage),
    Delivery(crate::services::connectors::webhooks::DeliveryMessage),
}

impl SyncMessage {
    pub fn tenant_id(&self) -> uuid::Uuid {
        match self {
            Self::Run(r) => r.tenant_id,
            Self::Delivery(d) => d.tenant_id,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::Run(r) => r.kind,
            Self::Delivery(d) => d.kind,
        }
    }
}

/// The queue connector-sync takes its work from.
#[cfg(feature = "sqs")]
pub type SyncQueue = crate::adapters::queue::Queue<SyncMessage>;

/// Records a manual run and hands it to the queue. A hand-off that fails fails the run (so it
/// blocks no later sync) and answers 503: nothing will run until the caller tries again.
#[cfg(feature = "sqs")]
pub async fn queue_run(svc: &Connectors, scope: &Scope, kind: Kind, queue: &SyncQueue) -> Result<SyncRun, DomainError> {
    let run = create_run(svc, scope, kind, "manual").await?;
    let message = SyncMessage::Run(RunMessage {
        tenant_id: scope.tenant_id().ok_or(DomainError::NotFound)?,
        kind,
        run: run.id,
    });
    if let Err(e) = queue.send(&message).await {
        tracing::error!(run = %run.id, error = %e, "sync run not queued");
        let mut tx = pg::begin(&svc.db, scope).await?;
        sqlx::query(
            "update connector_sync_runs set status = 'failed', error = $2, finished_at = now() where id = $1 and status = 'queued'",
        )
        .bind(run.id)
        .bind("the run could not be queued; try again")
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Err(DomainError::Upstream(format!(
            "the sync queue did not take the run: {e}"
        )));
    }
    Ok(run)
}

/// Runs a queued run: the pass, then its outcome on the run and the connector. A provider's
/// failure ends the run as failed (the next run resumes where this one stopped); only the
/// database's failures are errors (the message is retried).
pub async fn execute_run(svc: &Connectors, message: &RunMessage, opts: &SyncOptions) -> Result<SyncRun, DomainError> {
    let scope = Scope::worker(message.tenant_id, "", format!("sync:{}", message.run));
    let mut tx = pg::begin(&svc.db, &scope).await?;
    let started: Option<uuid::Uuid> = sqlx::query_scalar(
        "update connector_sync_runs set status = 'running', started_at = now() \
         where id = $1 and status in ('queued', 'running') returning id",
    )
    .bind(message.run)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    if started.is_none() {
        return finished_run(svc, &scope, message.run).await;
    }
    let (status, counts, error) = match sync(svc, &scope, message.kind, opts).await {
        Ok(report) => {
            let counts: serde_json::Map<String, Value> = report
                .into_iter()
                .map(|(r, c)| (r.to_owned(), serde_json::to_value(c).unwrap_or_default()))
                .collect();
            ("completed", Value::Object(counts), None)
        }
        Err(ShopSyncError::Provider(why)) => ("failed", Value::Object(Default::default()), Some(why)),
        Err(ShopSyncError::Domain(DomainError::NotFound)) => (
            "failed",
            Value::Object(Default::default()),
            Some("the connector was removed".to_owned()),
        ),
        Err(ShopSyncError::Domain(e)) => return Err(e),
    };
    let mut tx = pg::begin(&svc.db, &scope).await?;
    sqlx::query(
        "update connector_sync_runs set status = $2, counts = $3, error = $4, finished_at = now() where id = $1",
    )
    .bind(message.run)
    .bind(status)
    .bind(sqlx::types::Json(&counts))
    .bind(&error)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update connectors set last_sync_at = now(), last_sync_status = $2, \
         status = case when $2 = 'failed' then 'error' else status end, \
         last_error = case when $2 = 'failed' then $3 else last_error end where kind = $1",
    )
    .bind(message.kind.as_str())
    .bind(status)
    .bind(&error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    finished_run(svc, &scope, message.run).await
}

pub(super) async fn finished_run(svc: &Connectors, scope: &Scope, id: uuid::Uuid) -> Result<SyncRun, DomainError> {
    let mut tx = pg::begin(&svc.db, scope).await?;
    let run: SyncRun = sqlx::query_as(&format!("select {RUN_COLUMNS} from connector_sync_runs where id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(DomainError::NotFound)?;
    tx.commit().await?;
    Ok(run)
}

/// The schedule: a run for every tenant's shop connector that has none queued or running.
pub async fn schedule_runs(svc: &Connectors) -> Result<Vec<RunMessage>, DomainError> {
    let shops: Vec<(uuid::Uuid, String)> = sqlx::query_as("select tenant_id, kind from app_shop_connectors()")
        .fetch_all(&svc.db)
        .await?;
    let mut queued = Vec::new();
    for (tenant, kind) in shops {
        let Some(kind) = Kind::parse(&kind) else { continue };
        let scope = Scope::worker(tenant, "", "sync-schedule".into());
        match create_run(svc, &scope, kind, "schedule").await {
            Ok(run) => queued.push(RunMessage {
                tenant_id: tenant,
                kind,
                run: run.id,
            }),
            Err(DomainError::Conflict { .. } | DomainError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(queued)
}
