//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use marketing_campaigns::Config;
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = Config::from_env(&Env::from_process())?;
    let core = shared::Core::new(config.core)?;
    shared::http::run(marketing_campaigns::router(core, config.links)).await
}
