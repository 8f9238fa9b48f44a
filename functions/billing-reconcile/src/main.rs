//! `billing-reconcile` (schedule): one reconciliation run per invocation
//! (`shared::services::billing::reconcile`); the run and every change it made are recorded in
//! `billing_reconcile_runs` / `billing_reconcile_changes`. A failed run fails the invocation
//! (the schedule's retry policy and on-failure destination take over).
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::config::{ConfigError, DatabaseSettings, Env, StripeSettings};
use shared::services::billing::sync::Syncer;
use std::sync::Arc;

/// The function's configuration, read once at start.
struct Config {
    /// `BILLING_DATABASE_URL`: the `portal_billing` role.
    db: DatabaseSettings,
    stripe: StripeSettings,
}

impl Config {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            db: DatabaseSettings::billing(env)?,
            stripe: StripeSettings::from(env)?,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = Config::from_env(&Env::from_process())?;
    let syncer = Arc::new(Syncer::build(&config.db, &config.stripe)?);
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| {
        let syncer = Arc::clone(&syncer);
        async move {
            let report = syncer.reconcile(chrono::Utc::now().timestamp()).await?;
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(report)?)
        }
    }))
    .await
}
