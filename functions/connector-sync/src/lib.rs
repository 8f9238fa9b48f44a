//! `connector-sync`: applies what the connectors bring in.
//!
//! - SQS (`ConnectorSyncQueue`): a webhook delivery (`{tenant_id, kind, delivery}`, sent by
//!   connector-webhook) is applied to the e-commerce mirrors once; a sync run (`{tenant_id,
//!   kind, run}`, from `POST /connectors/{kind}/sync` or the schedule) makes one incremental pass
//!   over the shop (`shared::services::ecommerce::sync`). A shop that fails ends its run as
//!   failed (the next run resumes at the page it stopped on); a database failure is reported
//!   as a batch item failure, so SQS retries the message (then the DLQ).
//! - Schedule (hourly): a run for every tenant's shop connector that has none queued or running.
use serde_json::Value;
use shared::config::{ConfigError, ConnectorSettings, DatabaseSettings, Env};
use shared::lambda::{SqsBatchResponse, SqsEvent, run_batch};
use shared::services::connectors::Connectors;
use shared::services::ecommerce::sync::{self, SyncMessage, SyncOptions, SyncQueue};

/// What the queue carries (one type for its producers and this consumer).
pub use shared::services::ecommerce::sync::SyncMessage as QueueMessage;

pub struct SyncWorker {
    pub connectors: Connectors,
    /// `CONNECTOR_SYNC_QUEUE_URL`: where the schedule queues runs.
    pub queue: SyncQueue,
    pub options: SyncOptions,
}

/// The function's configuration, read once at start.
pub struct Config {
    pub db: DatabaseSettings,
    pub connectors: ConnectorSettings,
    /// `CONNECTOR_SYNC_QUEUE_URL`: where the schedule queues runs.
    pub sync_queue_url: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            db: DatabaseSettings::app(env)?,
            connectors: ConnectorSettings::from(env)?,
            sync_queue_url: env.required("CONNECTOR_SYNC_QUEUE_URL")?,
        })
    }
}

impl SyncWorker {
    pub fn build(config: &Config, aws: &aws_config::SdkConfig) -> anyhow::Result<Self> {
        Ok(Self {
            connectors: Connectors::build(config.db.pool()?, &config.connectors, aws)?,
            queue: SyncQueue::new(&shared::adapters::aws::sqs(aws), config.sync_queue_url.clone()),
            options: SyncOptions::default(),
        })
    }

    /// An SQS batch (`Records`) or the schedule's event (anything else).
    pub async fn handle(&self, payload: Value) -> Result<Value, lambda_runtime::Error> {
        if payload.get("Records").is_some() {
            let event: SqsEvent = serde_json::from_value(payload)?;
            Ok(serde_json::to_value(self.handle_sqs(event).await)?)
        } else {
            let queued = self.schedule().await?;
            Ok(serde_json::json!({"queued": queued}))
        }
    }

    pub async fn handle_sqs(&self, event: SqsEvent) -> SqsBatchResponse {
        run_batch(event, "connector-sync", |message: QueueMessage| async move {
            self.run(&message).await
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(tenant = %message.tenant_id(), kind = ?message.kind()))]
    pub async fn run(&self, message: &QueueMessage) -> anyhow::Result<()> {
        match message {
            QueueMessage::Delivery(d) => {
                // Boxed: the pass's futures are deep (the layout query's depth limit).
                let outcome = Box::pin(sync::apply_delivery(&self.connectors, d, &self.options))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                tracing::info!(delivery = %d.delivery, ?outcome, "delivery applied");
            }
            QueueMessage::Run(r) => {
                match Box::pin(sync::execute_run(&self.connectors, r, &self.options)).await {
                    Ok(run) => {
                        tracing::info!(run = %run.id, status = %run.status, error = ?run.error, "sync run ended")
                    }
                    // The run (or its tenant) is gone: nothing to do, nothing to retry.
                    Err(shared::domain::DomainError::NotFound) => tracing::warn!(run = %r.run, "no such sync run"),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Queues a run for every shop connector, and prunes old webhook bodies; answers how many
    /// runs were queued.
    pub async fn schedule(&self) -> anyhow::Result<usize> {
        let pruned =
            shared::services::connectors::webhooks::prune_deliveries(&self.connectors.db, chrono::Utc::now()).await?;
        tracing::info!(?pruned, "webhook deliveries pruned");
        let runs = sync::schedule_runs(&self.connectors).await?;
        let messages: Vec<SyncMessage> = runs.into_iter().map(SyncMessage::Run).collect();
        self.queue.send_batch(&messages).await?;
        Ok(messages.len())
    }
}
