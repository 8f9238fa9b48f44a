//! Wiring only: telemetry, config, clients (built once per sandbox), run.
#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    let core = shared::Core::new(config)?;
    shared::http::run(cms_content::pages::router(core, None)).await
}
