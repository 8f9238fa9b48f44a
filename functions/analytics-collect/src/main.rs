//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use shared::config::Env;

/// mimalloc: the JSON-heavy paths here allocate per field (see the workspace Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let db = shared::adapters::pg::app_pool(&env)?;
    let collector = shared::services::analytics::collect::Collector::new(&env.required("REDIS_URL")?, db);
    shared::http::run(analytics_collect::router(collector)).await
}
