//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use crm_import::{Config, Worker};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::config::Env;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = Config::from_env(&Env::from_process())?;
    let aws = shared::adapters::aws::sdk_config().await;
    let worker = Arc::new(Worker::build(&config, &aws)?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let worker = Arc::clone(&worker);
        async move { worker.handle(event.payload, event.context.deadline).await }
    }))
    .await
}
