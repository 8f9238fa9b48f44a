//! Wiring only: telemetry, config, clients (built once per sandbox), run.
#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let core = shared::Core::new(config)?;
    let aws = shared::adapters::aws::sdk_config().await;
    let store = shared::adapters::media_store::MediaStore::new(&aws, &shared::config::Env::from_process())?;
    shared::http::run(cms_media::router(core, store)).await
}
