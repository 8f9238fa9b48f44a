//! Wiring only: telemetry, config, clients (built once per sandbox), run.
use shared::config::{CrmFilesSettings, Env};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let (config, files) = (shared::Config::from(&env)?, CrmFilesSettings::from(&env)?);
    let aws = shared::adapters::aws::sdk_config().await;
    let files = shared::adapters::crm_files::CrmFiles::new(&aws, &files);
    shared::http::run(crm_contacts::router(shared::Core::new(config)?, files)).await
}
