//! Wiring only: telemetry, config, clients (built once per sandbox), run.
#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let core = shared::Core::new(config)?;
    let env = shared::config::Env::from_process();
    let aws = shared::adapters::aws::sdk_config().await;
    let keys = shared::adapters::kms::connector_keys(&env, &aws)?;
    let service = shared::services::connectors::Connectors::from_env(core.db.clone(), keys, &env)?;
    let sync = shared::services::ecommerce::sync::SyncQueue::new(
        &shared::adapters::aws::sqs(&aws),
        env.required("CONNECTOR_SYNC_QUEUE_URL")?,
    );
    shared::http::run(connectors::router(core, service, sync)).await
}
