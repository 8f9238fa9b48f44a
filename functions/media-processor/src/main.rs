//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use lambda_runtime::{LambdaEvent, service_fn};
use media_processor::{Config, Processor};
use shared::config::Env;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = Config::from_env(&Env::from_process())?;
    let aws = shared::adapters::aws::sdk_config().await;
    let processor = Arc::new(Processor::build(&config, &aws)?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let processor = Arc::clone(&processor);
        async move { processor.handle(event.payload).await }
    }))
    .await
}
