//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use shared::config::{Env, MediaSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let (config, media) = (shared::Config::from(&env)?, MediaSettings::from(&env)?);
    shared::http::run(cms_public::router(shared::Core::new(config)?, media.public_base_url)).await
}
