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

/// The CRM files routes' orchestration over the bucket and the jobs queue: the handlers call
/// one function each.
#[cfg(all(feature = "s3", feature = "sqs"))]
pub mod files {
    use super::{JobKind, JobMessage};
    use crate::adapters::crm_files::CrmFiles;
    use crate::domain::{DomainError, Scope};
    use crate::services::crm::exports::{self, Export, NewExport};
    use crate::services::crm::imports::{self, Import, NewImport, NewUpload, Upload};
    use crate::services::idempotency::{Created, IdempotencyKey};
    use sqlx::PgPool;
    use uuid::Uuid;

    fn storage(err: anyhow::Error) -> DomainError {
        DomainError::Internal(err.context("crm files"))
    }

    /// Queues a new job. A lost message is not a lost job: the worker's scheduled sweep queues
    /// jobs that stay without progress again (`stalled`), so the job stands and the caller's
    /// answer is its record; the failure is logged for the operator.
    async fn enqueue(files: &CrmFiles, kind: JobKind, scope: &Scope, id: Uuid) {
        let Some(tenant_id) = scope.tenant_id() else { return };
        if let Err(e) = files.jobs.send(&JobMessage { kind, tenant_id, id }).await {
            tracing::warn!(job = %id, error = %e, "job not queued; the worker's sweep will queue it");
        }
    }

    /// Where to PUT an import's CSV file, for 15 minutes.
    pub async fn upload(files: &CrmFiles, scope: &Scope, input: &NewUpload) -> Result<Upload, DomainError> {
        let key = imports::upload_key(scope, input)?;
        let presigned = files.presign_upload(&key, input.size).await.map_err(storage)?;
        Ok(Upload {
            upload_key: key,
            method: "PUT".to_owned(),
            url: presigned.url,
            headers: presigned.headers,
            expires_at: presigned.expires_at,
        })
    }

    /// Starts an import: the upload copied for the job and its head read (a CSV), the job
    /// recorded, and queued when new.
    pub async fn start_import(
        pool: &PgPool,
        files: &CrmFiles,
        scope: &Scope,
        input: NewImport,
        idem: Option<&IdempotencyKey>,
    ) -> Result<Created<Import>, DomainError> {
        let head = match imports::upload_of(scope, &input)? {
            Some(upload_key) => match files.copy_for_job(upload_key).await.map_err(storage)? {
                Some(job_key) => files.head(&job_key, imports::HEAD_BYTES).await.map_err(storage)?,
                None => None,
            },
            None => None,
        };
        let outcome = imports::create(pool, scope, input, head, idem).await?;
        if let Created::Fresh(import) = &outcome {
            enqueue(files, JobKind::Import, scope, import.id).await;
        }
        Ok(outcome)
    }

    /// Ends a finished import: the CSV of its failed rows written beside its upload (when any
    /// failed: `imports/<tenant>/<id>-errors.csv`, kept with the bucket's 7 days), then the job
    /// marked completed with it.
    pub async fn finish_import(
        pool: &PgPool,
        files: &CrmFiles,
        job: &imports::ImportRow,
        failed: i64,
    ) -> Result<(), DomainError> {
        let errors_key = if failed > 0 {
            let key = format!("imports/{}/{}-errors.csv", job.tenant_id, job.id);
            files
                .put_csv(&key, imports::errors_csv(pool, job).await?)
                .await
                .map_err(storage)?;
            Some(key)
        } else {
            None
        };
        imports::complete(pool, job, errors_key.as_deref()).await
    }

    /// The rest of an import's uploaded file from its committed offset; `None` (the job failed
    /// with the reason) when the upload is gone (uploads are kept 7 days).
    pub async fn import_data(
        pool: &PgPool,
        files: &CrmFiles,
        job: &imports::ImportRow,
    ) -> Result<Option<Vec<u8>>, DomainError> {
        let offset = u64::try_from(job.byte_offset).unwrap_or_default();
        let data = match job.object_key.as_deref() {
            Some(key) => files.read_from(key, offset).await.map_err(storage)?,
            None => None,
        };
        if data.is_none() {
            imports::fail(pool, job, GONE).await?;
        }
        Ok(data)
    }

    /// Why an import whose upload is gone failed.
    pub const GONE: &str = "the uploaded file is gone (uploads are kept for 7 days); upload it again";

    /// An import with, once it ended, a link to the CSV of its failed rows.
    pub async fn import(pool: &PgPool, files: &CrmFiles, scope: &Scope, id: Uuid) -> Result<Import, DomainError> {
        let (mut import, errors_key) = imports::get(pool, scope, id).await?;
        if let Some(key) = errors_key {
            let name = format!("import-errors-{id}.csv");
            import.errors_url = Some(files.presign_download(&key, &name).await.map_err(storage)?);
        }
        Ok(import)
    }

    /// Starts an export: recorded, and queued when new.
    pub async fn start_export(
        pool: &PgPool,
        files: &CrmFiles,
        scope: &Scope,
        input: NewExport,
        idem: Option<&IdempotencyKey>,
    ) -> Result<Created<Export>, DomainError> {
        let outcome = exports::create(pool, scope, input, idem).await?;
        if let Created::Fresh(export) = &outcome {
            enqueue(files, JobKind::Export, scope, export.id).await;
        }
        Ok(outcome)
    }

    /// An export; when completed, with its download link (valid 15 minutes).
    pub async fn export(pool: &PgPool, files: &CrmFiles, scope: &Scope, id: Uuid) -> Result<Export, DomainError> {
        let row = exports::get(pool, scope, id).await?;
        let key = row.object_key.clone();
        let name = row.file_name();
        let mut export = row.view();
        if let Some(key) = key {
            export.download_url = Some(files.presign_download(&key, &name).await.map_err(storage)?);
        }
        Ok(export)
    }
}
