//! Wiring only: telemetry, config, clients (built once per sandbox), run.
#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let env = shared::config::Env::from_process();
    let config = shared::Config::from(&env)?;
    let stripe = shared::config::StripeSettings::from(&env)?.client()?;
    let state = billing::BillingState::new(shared::Core::new(config)?, stripe);
    shared::http::run(billing::router(state)).await
}
