//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use shared::config::Env;
use shared::services::connectors::Connectors;
use shared::services::ecommerce::sync::SyncQueue;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = connector_webhook::Config::from_env(&Env::from_process())?;
    let aws = shared::adapters::aws::sdk_config().await;
    let state = connector_webhook::WebhookState {
        connectors: Connectors::build(config.db.pool()?, &config.connectors, &aws)?,
        queue: SyncQueue::new(&shared::adapters::aws::sqs(&aws), config.sync_queue_url),
    };
    shared::http::run(connector_webhook::router(state)).await
}
