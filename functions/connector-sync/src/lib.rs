//! `connector-sync`: applies what the connectors bring in.
//!
//! - SQS (`ConnectorSyncQueue`): a webhook delivery (`{tenant_id, kind, delivery}`, sent by
//!   connector-webhook) is applied to the e-commerce mirrors once; a sync run (`{tenant_id,
//!   kind, run}`, from `POST /connectors/{kind}/sync` or the schedule) makes one incremental pass
//!   over the shop (`shared::services::ecommerce::sync`). A shop that fails ends its run as
//!   failed (the next run resumes at the page it stopped on); a database failure is reported
//!   as a batch item failure, so SQS retries the message (then the DLQ).
//! - Schedule (hourly): a run for every tenant's shop connector that has none queued or running.
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde::Deserialize;
use serde_json::Value;
use shared::config::Env;
use shared::services::connectors::Connectors;
use shared::services::connectors::webhooks::DeliveryMessage;
use shared::services::ecommerce::sync::{self, RunMessage, SyncOptions};

/// What the queue carries.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum QueueMessage {
    Run(RunMessage),
    Delivery(DeliveryMessage),
}

pub struct SyncWorker {
    pub connectors: Connectors,
    pub sqs: aws_sdk_sqs::Client,
    /// `CONNECTOR_SYNC_QUEUE_URL`: where the schedule queues runs.
    pub queue_url: String,
    pub options: SyncOptions,
}

impl SyncWorker {
    pub fn from_env(env: &Env, aws: &aws_config::SdkConfig) -> anyhow::Result<Self> {
        let keys = shared::adapters::kms::connector_keys(env, aws)?;
        let db = shared::adapters::pg::app_pool(env)?;
        Ok(Self {
            connectors: Connectors::from_env(db, keys, env)?,
            sqs: shared::adapters::aws::sqs(aws),
            queue_url: env.required("CONNECTOR_SYNC_QUEUE_URL")?,
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
        let mut response = SqsBatchResponse::default();
        for record in &event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let outcome = match serde_json::from_str::<QueueMessage>(record.body.as_deref().unwrap_or_default()) {
                Ok(message) => self.run(&message).await,
                Err(e) => {
                    tracing::error!(message_id = %id, error = %e, "not a connector-sync message; dropped");
                    Ok(())
                }
            };
            if let Err(e) = outcome {
                tracing::error!(message_id = %id, error = %format!("{e:#}"), "connector-sync failed; SQS will retry");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

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
        for run in &runs {
            self.sqs
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(serde_json::to_string(run)?)
                .send()
                .await?;
        }
        Ok(runs.len())
    }
}
