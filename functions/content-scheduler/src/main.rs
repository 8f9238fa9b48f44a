//! `content-scheduler` (schedule, every minute): publishes the scheduled pages and posts that
//! are due (`shared::services::cms::items::publish_due`), each in its own transaction; what is
//! left over (more than a run's batch) waits for the next run. A failed run fails the
//! invocation; nothing it published is published twice. It also rejects media items still
//! pending two hours after their upload link (`cms::media::give_up_stale`).
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};
use shared::config::{DatabaseSettings, Env};

/// Items published per run at most.
const BATCH: i32 = 500;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    // The function's whole configuration: the application role's database.
    let db = DatabaseSettings::app(&Env::from_process())?.pool()?;
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| {
        let db = db.clone();
        async move {
            let now = chrono::Utc::now();
            let run = shared::services::cms::items::publish_due(&db, now, BATCH).await?;
            let media_given_up = shared::services::cms::media::give_up_stale(&db, now).await?;
            Ok::<_, lambda_runtime::Error>(json!({"published": run.published, "failed": run.failed,
                "retrying": run.retrying, "media_given_up": media_given_up}))
        }
    }))
    .await
}
