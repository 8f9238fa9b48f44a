//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let aws = shared::adapters::aws::sdk_config().await;
    let keys = shared::adapters::kms::connector_keys(&env, &aws)?;
    let db = shared::adapters::pg::app_pool(&env)?;
    let connectors = shared::services::connectors::Connectors::from_env(db, keys, &env)?;
    let state = connector_webhook::WebhookState {
        connectors,
        queue: shared::services::ecommerce::sync::SyncQueue::new(
            &shared::adapters::aws::sqs(&aws),
            env.required("CONNECTOR_SYNC_QUEUE_URL")?,
        ),
    };
    shared::http::run(connector_webhook::router(state)).await
}
