//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use shared::config::{Env, StripeSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let (config, stripe) = (shared::Config::from(&env)?, StripeSettings::from(&env)?);
    let state = billing::BillingState::new(shared::Core::new(config)?, stripe.client()?);
    shared::http::run(billing::router(state)).await
}
