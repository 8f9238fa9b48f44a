//! `analytics-aggregate` (schedule, every minute): drains the analytics stream into the hourly
//! rollups, batch by batch (`shared::services::analytics::aggregate`: rollups and stream position
//! in one transaction, then XACK; pending entries of a crashed run reclaimed).
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::config::{ConfigError, DatabaseSettings, Env};
use shared::services::analytics::aggregate::Aggregator;
use std::sync::Arc;

/// mimalloc: the JSON-heavy paths here allocate per field (see the workspace Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Batches per invocation at most (the next minute's run continues).
const MAX_STEPS: usize = 50;

/// The function's configuration, read once at start.
struct Config {
    db: DatabaseSettings,
    /// `REDIS_URL`: the analytics stream.
    redis_url: String,
}

impl Config {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            db: DatabaseSettings::app(env)?,
            redis_url: env.required("REDIS_URL")?,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = Config::from_env(&Env::from_process())?;
    let redis = shared::adapters::redis::connect(&config.redis_url).await?;
    let aggregator = Arc::new(Aggregator::new(config.db.pool()?, redis));
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| {
        let aggregator = Arc::clone(&aggregator);
        async move {
            let report = aggregator.run(MAX_STEPS).await?;
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(report)?)
        }
    }))
    .await
}
