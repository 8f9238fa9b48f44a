//! connector-sync end to end: `POST /connectors/shopify/sync` (connectors) queues a run in the
//! moto server's SQS, the worker takes it and syncs a faked Shopify (wiremock); the schedule
//! queues a run per shop connector and none while one is pending. Needs `local/up --services-only`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use connector_sync::{QueueMessage, SyncWorker};
use serde_json::{Value, json};

use shared::services::ecommerce::sync::SyncOptions;
use std::time::Duration;
use testkit::{TestApp, post, req};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn a_manual_sync_is_queued_run_and_recorded_and_the_schedule_queues_the_rest() {
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    let shop = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/shop.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"shop": {"currency": "EUR"}})))
        .mount(&shop)
        .await;
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/orders.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"orders": [{
            "admin_graphql_api_id": "gid://shopify/Order/9007199254740993", "name": "#1", "currency": "EUR",
            "financial_status": "paid", "total_price": "10.00", "created_at": "2026-11-01T00:00:00Z",
            "updated_at": "2026-11-01T00:00:00Z", "line_items": []}]})))
        .mount(&shop)
        .await;
    for resource in ["products", "customers"] {
        Mock::given(method("GET"))
            .and(path(format!("/admin/api/2025-01/{resource}.json")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({resource: []})))
            .mount(&shop)
            .await;
    }
    let aws = testkit::moto().await;
    let sqs = aws_sdk_sqs_client(&aws);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("connector-sync-{}", uuid::Uuid::new_v4().simple()))
        .send()
        .await
        .expect("the moto server answers: run local/up --services-only first")
        .queue_url()
        .unwrap()
        .to_owned();
    let connectors = testkit::connectors(&app.core.db, []);
    let api = connectors::router(
        app.core.clone(),
        connectors.clone(),
        shared::services::ecommerce::sync::SyncQueue::new(&sqs, &queue_url),
    );
    let r = req(http::Method::PUT, "/connectors/shopify")
        .bearer(&owner.token)
        .tenant(tenant)
        .json(json!({"store_url": shop.uri(), "access_token": "shpat_0000000000000"}))
        .send(&api)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The queue down: the hand-off failure is answered (503), and the run it left is failed,
    // so it blocks no later sync.
    let down = connectors::router(
        app.core.clone(),
        connectors.clone(),
        shared::services::ecommerce::sync::SyncQueue::new(&sqs, format!("{queue_url}-missing")),
    );
    let r = post("/connectors/shopify/sync")
        .bearer(&owner.token)
        .tenant(tenant)
        .send(&down)
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    let failed: (String, Option<String>) =
        sqlx::query_as("select status, error from connector_sync_runs where tenant_id = $1")
            .bind(tenant)
            .fetch_one(&app.db.owner)
            .await
            .unwrap();
    assert_eq!(failed.0, "failed");
    assert!(failed.1.unwrap().contains("could not be queued"));
    let r = post("/connectors/shopify/sync")
        .bearer(&owner.token)
        .tenant(tenant)
        .send(&api)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "queued");
    let again = post("/connectors/shopify/sync")
        .bearer(&owner.token)
        .tenant(tenant)
        .send(&api)
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
    let none = post("/connectors/sendgrid/sync")
        .bearer(&owner.token)
        .tenant(tenant)
        .send(&api)
        .await;
    assert_eq!(none.status, 404);

    let worker = SyncWorker {
        connectors,
        queue: shared::services::ecommerce::sync::SyncQueue::new(&sqs, &queue_url),
        options: SyncOptions {
            max_wait: Duration::from_millis(10),
            ..SyncOptions::default()
        },
    };
    let message = take(&sqs, &queue_url).await;
    worker
        .run(&serde_json::from_value::<QueueMessage>(message).unwrap())
        .await
        .unwrap();
    let view = testkit::get("/connectors/shopify")
        .bearer(&owner.token)
        .tenant(tenant)
        .send(&api)
        .await;
    assert_eq!(view.json["last_sync_status"], "completed", "{}", view.text);
    let (external_id, total): (String, i64) =
        sqlx::query_as("select external_id, total_minor from ecom_orders where tenant_id = $1")
            .bind(tenant)
            .fetch_one(&app.db.owner)
            .await
            .unwrap();
    assert_eq!((external_id.as_str(), total), ("9007199254740993", 1000));

    // The schedule: one run for the shop (none pending now), queued.
    assert_eq!(worker.schedule().await.unwrap(), 1);
    let message = take(&sqs, &queue_url).await;
    assert_eq!(message["kind"], "shopify");
    assert_eq!(worker.schedule().await.unwrap(), 0, "a run is still queued");
}

fn aws_sdk_sqs_client(aws: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(aws)
}

async fn take(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Value {
    let out = sqs
        .receive_message()
        .queue_url(queue_url)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    let m = out.messages().first().expect("a message was queued").clone();
    sqs.delete_message()
        .queue_url(queue_url)
        .receipt_handle(m.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
    serde_json::from_str(m.body().unwrap()).unwrap()
}
