//! `billing-sync` (SQS: the billing queue): each message names a Stripe event the webhook
//! recorded; the raw body is read from the inbox table and applied to the Postgres mirrors by
//! `shared::services::billing_sync`. A message that fails is reported as a batch item failure,
//! so SQS retries it and, after `maxReceiveCount`, moves it to the DLQ (replayed by the
//! `billing-replay-dlq` command). The others in the batch are not retried.
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use serde::Deserialize;
use shared::config::{ConfigError, Env, StripeSettings};
use shared::services::billing_sync::{Outcome, Syncer};
use shared::services::stripe_inbox;

/// The queue message the webhook sends.
#[derive(Debug, Deserialize)]
pub struct QueuedEvent {
    pub event_id: String,
}

pub struct SyncFunction {
    pub syncer: Syncer,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub events_table: String,
}

/// The `portal_billing` pool and Stripe client from the environment: `BILLING_DATABASE_URL`,
/// the Stripe settings, `DATABASE_MAX_CONNECTIONS` (2).
pub fn syncer(env: &Env) -> anyhow::Result<Syncer> {
    let stripe = StripeSettings::from(env)?;
    let max: u32 = env.parsed_or("DATABASE_MAX_CONNECTIONS", 2)?;
    Ok(Syncer {
        db: shared::adapters::pg::pool(&env.required("BILLING_DATABASE_URL")?, max)?,
        stripe: Some(stripe.client()?),
        livemode: stripe.livemode,
    })
}

pub fn events_table(env: &Env) -> Result<String, ConfigError> {
    env.required("STRIPE_EVENTS_TABLE")
}

impl SyncFunction {
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for record in &event.records {
            if let Err(reason) = self.one(record).await {
                let id = record.message_id.clone().unwrap_or_default();
                tracing::error!(message_id = %id, error = %reason, "billing event not applied; SQS will retry it");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    async fn one(&self, record: &SqsMessage) -> Result<Outcome, String> {
        let body = record.body.as_deref().unwrap_or_default();
        let queued: QueuedEvent =
            serde_json::from_str(body).map_err(|e| format!("not a billing queue message: {e}"))?;
        let raw = stripe_inbox::load_raw(&self.dynamo, &self.events_table, &queued.event_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("event {} is not in the inbox table", queued.event_id))?;
        self.syncer.apply_body(&raw).await.map_err(|e| e.to_string())
    }
}
