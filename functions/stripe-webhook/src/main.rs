//! Wiring only: telemetry, config, AWS clients (built once per sandbox), run.
use shared::config::Env;
use shared::services::billing::inbox::StripeInbox;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = stripe_webhook::inbox_config(&Env::from_process())?;
    let aws = shared::adapters::aws::sdk_config().await;
    let dynamo = shared::adapters::aws::dynamodb(&aws);
    let inbox = StripeInbox::new(config, dynamo, shared::adapters::aws::sqs(&aws));
    shared::http::run(stripe_webhook::router(stripe_webhook::WebhookState {
        inbox: Arc::new(inbox),
    }))
    .await
}
