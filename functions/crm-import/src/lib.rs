//! `crm-import`: the CRM jobs worker.
//!
//! - SQS (`CrmJobsQueue`, one message per job): an import is applied in chunks from its
//!   committed offset (`shared::services::crm::imports`): a CSV file's rows from the bucket, or
//!   Zoho CRM's pages with the tenant's `zoho` connector. Its failed rows are written to the
//!   bucket as CSV at the end; an export pages through the list and writes its CSV. A run that nears
//!   the Lambda's deadline stops between chunks and queues the job again; one that dies is
//!   redelivered by SQS and resumes where the last commit left it (then the DLQ).
//! - Schedule (every 5 minutes): jobs without progress for 10 minutes (a message lost, or
//!   dead-lettered) are queued again.
use serde_json::Value;
use shared::adapters::crm_files::CrmFiles;
use shared::config::{ConfigError, ConnectorSettings, CrmFilesSettings, DatabaseSettings, Env};
use shared::domain::DomainError;
use shared::lambda::{SqsBatchResponse, SqsEvent, run_batch};
use shared::services::connectors::catalog::Kind;
use shared::services::connectors::{Connectors, Retry};
use shared::services::crm::exports;
use shared::services::crm::imports::{self, ImportRow, ImportSource, RunOptions, RunOutcome};
use shared::services::crm::jobs::{self, JobKind, JobMessage, files};
use shared::services::providers::zoho;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// A job without progress this long is queued again by the sweep.
pub const STALLED_AFTER: Duration = Duration::from_secs(10 * 60);
/// Time kept free before the Lambda's deadline: the chunk in flight and the re-queue.
const DEADLINE_MARGIN: Duration = Duration::from_secs(30);

pub struct Worker {
    pub db: PgPool,
    pub files: CrmFiles,
    /// The tenants' Zoho CRM connectors.
    pub connectors: Connectors,
    pub options: RunOptions,
    /// Tries of a Zoho page within a run (429s, 5xx, unreachable) before the queue retries.
    pub retry: Retry,
}

/// The function's configuration, read once at start.
pub struct Config {
    pub db: DatabaseSettings,
    pub files: CrmFilesSettings,
    /// The tenants' Zoho CRM connectors.
    pub connectors: ConnectorSettings,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            db: DatabaseSettings::app(env)?,
            files: CrmFilesSettings::from(env)?,
            connectors: ConnectorSettings::from(env)?,
        })
    }
}

impl Worker {
    pub fn build(config: &Config, aws: &aws_config::SdkConfig) -> anyhow::Result<Self> {
        let db = config.db.pool()?;
        Ok(Self {
            files: CrmFiles::new(aws, &config.files),
            connectors: Connectors::build(db.clone(), &config.connectors, aws)?,
            db,
            options: RunOptions::default(),
            retry: Retry::default(),
        })
    }

    /// An SQS batch (`Records`) or the schedule's event (anything else).
    pub async fn handle(&self, payload: Value, deadline_ms: u64) -> Result<Value, lambda_runtime::Error> {
        let deadline = deadline_instant(deadline_ms);
        if payload.get("Records").is_some() {
            let event: SqsEvent = serde_json::from_value(payload)?;
            Ok(serde_json::to_value(self.handle_sqs(event, deadline).await)?)
        } else {
            let queued = self.sweep().await?;
            Ok(serde_json::json!({"queued": queued}))
        }
    }

    pub async fn handle_sqs(&self, event: SqsEvent, deadline: Option<Instant>) -> SqsBatchResponse {
        run_batch(event, "CRM job", |message: JobMessage| async move {
            self.run(&message, deadline).await
        })
        .await
    }

    /// Runs one job to its end (or to the deadline, then queues it again).
    #[tracing::instrument(skip_all, fields(job = %message.id, kind = ?message.kind, tenant = %message.tenant_id))]
    pub async fn run(&self, message: &JobMessage, deadline: Option<Instant>) -> anyhow::Result<()> {
        match message.kind {
            JobKind::Import => self.import(message, deadline).await,
            JobKind::Export => self.export(message).await,
        }
    }

    async fn import(&self, message: &JobMessage, deadline: Option<Instant>) -> anyhow::Result<()> {
        let Some(job) = imports::load(&self.db, message.tenant_id, message.id).await? else {
            return Ok(());
        };
        let options = RunOptions {
            deadline: deadline.or(self.options.deadline),
            ..self.options
        };
        let outcome = match job.source {
            // Boxed: the runs' futures are deep (the Lambda runtime's would overflow the
            // compiler's layout depth).
            ImportSource::Csv => Box::pin(self.csv(&job, options)).await?,
            ImportSource::Zoho => Box::pin(self.zoho(&job, options)).await?,
        };
        match outcome {
            RunOutcome::Finished { failed } => {
                files::finish_import(&self.db, &self.files, &job, failed).await?;
                tracing::info!(import = %job.id, failed, "import completed");
            }
            RunOutcome::Paused => {
                self.files.jobs.send(message).await?;
                tracing::info!(import = %job.id, "import paused before the deadline; queued again");
            }
            RunOutcome::Superseded => tracing::info!(import = %job.id, "another run is further; this one stopped"),
            RunOutcome::Refused(why) => tracing::warn!(import = %job.id, why, "the source refused; import failed"),
            RunOutcome::GaveUp => {
                tracing::error!(alert = "crm_import_given_up", import = %job.id, "import given up after runs without progress");
            }
        }
        Ok(())
    }

    async fn csv(&self, job: &ImportRow, options: RunOptions) -> anyhow::Result<RunOutcome> {
        let Some(data) = files::import_data(&self.db, &self.files, job).await? else {
            return Ok(RunOutcome::Refused(files::GONE.to_owned()));
        };
        Ok(imports::run(&self.db, job, &data, options).await?)
    }

    async fn zoho(&self, job: &ImportRow, options: RunOptions) -> anyhow::Result<RunOutcome> {
        let Some(creds) = self.connectors.credentials(&job.scope(), Kind::Zoho).await? else {
            let why = "the Zoho CRM connector was removed; connect it again and start a new import";
            imports::fail(&self.db, job, why).await?;
            return Ok(RunOutcome::Refused(why.to_owned()));
        };
        let reader = zoho::Reader {
            connectors: &self.connectors,
            creds: &creds,
            entity: job.entity,
            columns: &job.header,
            // Tries and waits end before the run's deadline: the run then pauses.
            retry: Retry {
                deadline: options.deadline,
                ..self.retry
            },
        };
        Ok(imports::run_pages(&self.db, job, &reader, options).await?)
    }

    async fn export(&self, message: &JobMessage) -> anyhow::Result<()> {
        let Some(job) = exports::load(&self.db, message.tenant_id, message.id).await? else {
            return Ok(());
        };
        let mut upload = self.files.start_csv(&job.object_key()).await?;
        match exports::build(&self.db, &job, &mut upload).await {
            Ok(rows) => {
                let size = i64::try_from(upload.finish().await?).unwrap_or(i64::MAX);
                exports::finish(&self.db, &job, Ok((rows, size))).await?;
                tracing::info!(export = %job.id, rows, size, "export completed");
            }
            // Filters that no longer hold (a custom field deleted since): the export cannot be
            // made, and retrying will not change that.
            Err(DomainError::Invalid(errors)) => {
                let why = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                exports::finish(&self.db, &job, Err(&format!("the filters are no longer valid: {why}"))).await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Queues the jobs that stalled; answers how many.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        let stalled = jobs::stalled(&self.db, STALLED_AFTER).await?;
        for message in &stalled {
            self.files.jobs.send(message).await?;
            tracing::warn!(job = %message.id, kind = ?message.kind, "stalled CRM job queued again");
        }
        Ok(stalled.len())
    }
}

/// The Lambda's deadline (ms since the epoch) as an instant, less the margin.
fn deadline_instant(deadline_ms: u64) -> Option<Instant> {
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).ok()?;
    let left = Duration::from_millis(deadline_ms.checked_sub(now_ms)?);
    Some(Instant::now() + left.checked_sub(DEADLINE_MARGIN).unwrap_or_default())
}
