//! Wiring only: telemetry, config, clients (built once per sandbox), run.
#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let core = shared::Core::new(config)?;
    let env = shared::config::Env::from_process();
    let aws = shared::adapters::aws::sdk_config().await;
    let keys = shared::adapters::kms::connector_keys(&env, &aws)?;
    let wordpress = shared::services::cms::wordpress::Wordpress {
        connectors: shared::services::connectors::Connectors::from_env(core.db.clone(), keys, &env)?,
        media_base: shared::config::media_public_base(&env)?,
    };
    shared::http::run(cms_content::posts::router(core, Some(wordpress))).await
}
