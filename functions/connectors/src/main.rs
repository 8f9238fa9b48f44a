//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use shared::config::Env;
use shared::services::connectors::Connectors;
use shared::services::ecommerce::sync::SyncQueue;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = connectors::Config::from_env(&Env::from_process())?;
    let core = shared::Core::new(config.core)?;
    let aws = shared::adapters::aws::sdk_config().await;
    let service = Connectors::build(core.db.clone(), &config.connectors, &aws)?;
    let sync = SyncQueue::new(&shared::adapters::aws::sqs(&aws), config.sync_queue_url);
    shared::http::run(connectors::router(core, service, sync)).await
}
