//! `billing-sync` (SQS: the billing queue): each message names a Stripe event the webhook
//! recorded; the raw body is read from the inbox table and applied to the Postgres mirrors by
//! `shared::services::billing_sync`. A message that fails is reported as a batch item failure,
//! so SQS retries it and, after `maxReceiveCount`, moves it to the DLQ (replayed by the
//! `billing-replay-dlq` command). The others in the batch are not retried.
use shared::config::{ConfigError, Env, StripeSettings};
use shared::lambda::{SqsBatchResponse, SqsEvent, run_batch};
use shared::services::billing_sync::{Outcome, Syncer};
use shared::services::stripe_inbox::{self, BillingMessage};

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
        run_batch(event, "billing event", |queued: BillingMessage| async move {
            let outcome = self.one(&queued).await?;
            tracing::info!(event = %queued.event_id, ?outcome, "billing event applied");
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(event = %queued.event_id))]
    async fn one(&self, queued: &BillingMessage) -> anyhow::Result<Outcome> {
        let raw = stripe_inbox::load_raw(&self.dynamo, &self.events_table, &queued.event_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("event {} is not in the inbox table", queued.event_id))?;
        Ok(self.syncer.apply_body(&raw).await?)
    }
}
