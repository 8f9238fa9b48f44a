//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let db = shared::adapters::pg::pool(
        &env.required("DATABASE_URL")?,
        env.parsed_or("DATABASE_MAX_CONNECTIONS", 2)?,
    )?;
    let redis = shared::adapters::redis::connect(&env.required("REDIS_URL")?).await?;
    let collector = shared::services::analytics::collect::Collector::new(redis, db);
    shared::http::run(analytics_collect::router(collector)).await
}
