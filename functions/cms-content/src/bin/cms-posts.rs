//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use shared::config::{ConnectorSettings, Env, MediaSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let config = shared::Config::from(&env)?;
    let (connectors, media) = (ConnectorSettings::from(&env)?, MediaSettings::from(&env)?);
    let core = shared::Core::new(config)?;
    let aws = shared::adapters::aws::sdk_config().await;
    let wordpress = shared::services::providers::wordpress::Wordpress {
        connectors: shared::services::connectors::Connectors::build(core.db.clone(), &connectors, &aws)?,
        media_base: media.public_base_url,
    };
    shared::http::run(cms_content::posts::router(core, Some(wordpress))).await
}
