//! Wiring only: telemetry, the (lazy) pool, run.
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let db = shared::adapters::pg::pool(&env.required("DATABASE_URL")?, 1)?;
    shared::http::run(api_docs::router(api_docs::DocsState { db })).await
}
