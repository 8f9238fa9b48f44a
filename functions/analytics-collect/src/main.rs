//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use shared::config::Env;

/// mimalloc: the JSON-heavy paths here allocate per field (see the workspace Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = analytics_collect::Config::from_env(&Env::from_process())?;
    let collector = shared::services::analytics::collect::Collector::new(&config.redis_url, config.db.pool()?);
    shared::http::run(analytics_collect::router(collector)).await
}
