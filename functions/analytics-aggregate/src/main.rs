//! `analytics-aggregate` (schedule, every minute): drains the analytics stream into the hourly
//! rollups, batch by batch (`shared::services::analytics::aggregate`: rollups and stream position
//! in one transaction, then XACK; pending entries of a crashed run reclaimed).
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::config::Env;
use shared::services::analytics::aggregate::Aggregator;
use std::sync::Arc;

/// mimalloc: the JSON-heavy paths here allocate per field (see the workspace Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Batches per invocation at most (the next minute's run continues).
const MAX_STEPS: usize = 50;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let db = shared::adapters::pg::app_pool(&env)?;
    let redis = shared::adapters::redis::connect(&env.required("REDIS_URL")?).await?;
    let aggregator = Arc::new(Aggregator::new(db, redis));
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| {
        let aggregator = Arc::clone(&aggregator);
        async move {
            let report = aggregator.run(MAX_STEPS).await?;
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(report)?)
        }
    }))
    .await
}
