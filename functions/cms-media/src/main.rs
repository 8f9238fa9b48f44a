//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use shared::config::{Env, MediaSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let (config, media) = (shared::Config::from(&env)?, MediaSettings::from(&env)?);
    let aws = shared::adapters::aws::sdk_config().await;
    let store = shared::adapters::media_store::MediaStore::new(&aws, &media);
    shared::http::run(cms_media::router(shared::Core::new(config)?, store)).await
}
