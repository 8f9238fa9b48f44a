//! `billing-reconcile` (schedule): one reconciliation run per invocation
//! (`shared::services::billing::reconcile`); the run and every change it made are recorded in
//! `billing_reconcile_runs` / `billing_reconcile_changes`. A failed run fails the invocation
//! (the schedule's retry policy and on-failure destination take over).
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::config::Env;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let syncer = Arc::new(shared::services::billing::sync::Syncer::from_env(&Env::from_process())?);
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| {
        let syncer = Arc::clone(&syncer);
        async move {
            let report = syncer.reconcile(chrono::Utc::now().timestamp()).await?;
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(report)?)
        }
    }))
    .await
}
