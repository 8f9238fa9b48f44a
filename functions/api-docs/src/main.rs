//! Wiring only: telemetry, config, the (lazy) pool, run.
use shared::config::{DatabaseSettings, Env};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let db = DatabaseSettings::app(&Env::from_process())?;
    shared::http::run(api_docs::router(api_docs::DocsState { db: db.pool()? })).await
}
