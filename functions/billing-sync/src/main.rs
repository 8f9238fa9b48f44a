//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use billing_sync::{Config, SyncFunction};
use lambda_runtime::{LambdaEvent, service_fn};
use shared::config::Env;
use shared::lambda::SqsEvent;
use shared::services::billing::sync::Syncer;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = Config::from_env(&Env::from_process())?;
    let aws = shared::adapters::aws::sdk_config().await;
    let function = Arc::new(SyncFunction {
        syncer: Syncer::build(&config.db, &config.stripe)?,
        dynamo: shared::adapters::aws::dynamodb(&aws),
        events_table: config.events_table,
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let function = Arc::clone(&function);
        async move { Ok::<_, lambda_runtime::Error>(function.handle(event.payload).await) }
    }))
    .await
}
