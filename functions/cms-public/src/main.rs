//! Wiring only: telemetry, config, clients (built once per sandbox), run.
#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let core = shared::Core::new(config)?;
    let env = shared::config::Env::from_process();
    let media_base = shared::config::media_public_base(&env)?;
    shared::http::run(cms_public::router(core, media_base)).await
}
