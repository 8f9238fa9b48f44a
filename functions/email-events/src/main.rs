//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use shared::config::Env;
use shared::services::connectors::Connectors;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = email_events::Config::from_env(&Env::from_process())?;
    let aws = shared::adapters::aws::sdk_config().await;
    let state = email_events::EventsState {
        connectors: Connectors::build(config.db.pool()?, &config.connectors, &aws)?,
    };
    shared::http::run(email_events::router(state)).await
}
