//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use billing_sync::SyncFunction;
use lambda_runtime::{LambdaEvent, service_fn};
use shared::config::Env;
use shared::lambda::SqsEvent;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let aws = shared::adapters::aws::sdk_config().await;
    let function = Arc::new(SyncFunction {
        syncer: shared::services::billing::sync::Syncer::from_env(&env)?,
        dynamo: shared::adapters::aws::dynamodb(&aws),
        events_table: billing_sync::events_table(&env)?,
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let function = Arc::clone(&function);
        async move { Ok::<_, lambda_runtime::Error>(function.handle(event.payload).await) }
    }))
    .await
}
