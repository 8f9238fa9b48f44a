//! `billing-sync` (SQS: the billing queue): each message names a Stripe event the webhook
//! recorded; the raw body is read from the inbox table and applied to the Postgres mirrors by
//! `shared::services::billing::sync`. A message that fails is reported as a batch item failure,
//! so SQS retries it and, after `maxReceiveCount`, moves it to the DLQ (replayed by the
//! `billing-replay-dlq` command). The others in the batch are not retried.
use shared::config::{ConfigError, DatabaseSettings, Env, StripeSettings};
use shared::lambda::{SqsBatchResponse, SqsEvent, run_batch};
use shared::services::billing::inbox::{self, BillingMessage};
use shared::services::billing::sync::{Outcome, Syncer};

pub struct SyncFunction {
    pub syncer: Syncer,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub events_table: String,
}

/// The function's configuration, read once at start.
pub struct Config {
    /// `BILLING_DATABASE_URL`: the `portal_billing` role.
    pub db: DatabaseSettings,
    pub stripe: StripeSettings,
    /// `STRIPE_EVENTS_TABLE`: the inbox the webhook records events in.
    pub events_table: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            db: DatabaseSettings::billing(env)?,
            stripe: StripeSettings::from(env)?,
            events_table: env.required("STRIPE_EVENTS_TABLE")?,
        })
    }
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
        let raw = inbox::load_raw(&self.dynamo, &self.events_table, &queued.event_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("event {} is not in the inbox table", queued.event_id))?;
        Ok(self.syncer.apply_body(&raw).await?)
    }
}
