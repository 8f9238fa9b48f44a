//! Test-only function for the local event pump (never deployed: it is declared only in
//! `local/tests/pump-template.yaml`). It parses each event into its `aws_lambda_events` type, which
//! proves the pump delivers real shapes, and records a one-line summary in a Redis list
//! `pump-probe:<kind>` so the pump test can see what arrived. SQS messages whose body contains
//! `"fail"` are reported as batch item failures so the redrive path can be tested.
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use redis::AsyncCommands;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let url = std::env::var("REDIS_URL").map_err(|_| "REDIS_URL is not set")?;
    let client = redis::Client::open(url)?;
    let redis = redis::aio::ConnectionManager::new(client).await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let redis = redis.clone();
        async move { handle(redis, event.payload).await }
    }))
    .await
}

async fn handle(mut redis: redis::aio::ConnectionManager, payload: Value) -> Result<Value, Error> {
    let source = payload
        .pointer("/Records/0/eventSource")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (kind, summary, response) = match source.as_str() {
        "aws:sqs" => {
            let event: SqsEvent = serde_json::from_value(payload)?;
            let mut failures = Vec::new();
            let mut bodies = Vec::new();
            for record in &event.records {
                let body = record.body.clone().unwrap_or_default();
                if body.contains("fail") {
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = record.message_id.clone().unwrap_or_default();
                    failures.push(failure);
                }
                bodies.push(json!({
                    "body": body,
                    "queue": record.event_source_arn,
                    "receive_count": record.attributes.get("ApproximateReceiveCount"),
                }));
            }
            let mut response = SqsBatchResponse::default();
            response.batch_item_failures = failures;
            ("sqs", json!({ "records": bodies }), serde_json::to_value(response)?)
        }
        "aws:s3" => {
            let event: S3Event = serde_json::from_value(payload)?;
            let objects: Vec<Value> = event
                .records
                .iter()
                .map(|r| {
                    json!({
                        "event": r.event_name,
                        "bucket": r.s3.bucket.name,
                        "key": r.s3.object.url_decoded_key.clone().or_else(|| r.s3.object.key.clone()),
                        "size": r.s3.object.size,
                    })
                })
                .collect();
            ("s3", json!({ "objects": objects }), Value::Null)
        }
        _ => {
            let event: EventBridgeEvent<Value> = serde_json::from_value(payload)?;
            let kind = if event.detail_type == "Scheduled Event" {
                "schedule"
            } else {
                "eventbridge"
            };
            (
                kind,
                json!({
                    "source": event.source,
                    "detail_type": event.detail_type,
                    "resources": event.resources,
                    "detail": event.detail,
                }),
                Value::Null,
            )
        }
    };
    let _: () = redis.rpush(format!("pump-probe:{kind}"), summary.to_string()).await?;
    tracing::info!(kind, "recorded");
    Ok(response)
}
