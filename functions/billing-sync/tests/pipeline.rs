//! The whole billing pipeline on the local stack's moto server: a signed delivery recorded by
//! the webhook inbox and queued, the queue's messages handled by billing-sync as Lambda hands
//! them over (partial batch failures), and the DLQ replayed by the command's code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use billing_sync::SyncFunction;
use serde_json::json;
use shared::adapters::queue::Queue;
use shared::adapters::queue_replay::{ReplayOptions, replay};
use shared::domain::signature::stripe::sign;
use shared::services::billing::inbox::{InboxConfig, StripeInbox};
use shared::services::billing::sync::Syncer;
use testkit::{TestDb, billing_snapshot, moto, stripe_inbox_resources};

const SECRET: &str = "whsec_pipeline_test";

async fn drain(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<SqsMessage> {
    let mut all = Vec::new();
    loop {
        let batch = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        if batch.messages().is_empty() {
            return all;
        }
        for m in batch.messages() {
            let mut message = SqsMessage::default();
            message.message_id = m.message_id().map(str::to_owned);
            message.body = m.body().map(str::to_owned);
            message.receipt_handle = m.receipt_handle().map(str::to_owned);
            all.push(message);
        }
    }
}

async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned()
}

fn sqs_event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

#[tokio::test]
async fn a_signed_delivery_reaches_the_mirror_once_and_a_missing_record_is_retried() {
    let aws = moto().await;
    let (table, queue) = stripe_inbox_resources(&aws, "billing-sync").await;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let inbox = StripeInbox::new(
        InboxConfig {
            secrets: vec![SECRET.to_owned()],
            tolerance_secs: 300,
            table: table.clone(),
            queue_url: queue.clone(),
        },
        dynamo.clone(),
        sqs.clone(),
    );
    let body = serde_json::to_vec(&json!({"id": "evt_pipe_1", "object": "event", "type": "invoice.paid",
        "created": 1_700_000_100, "livemode": false, "api_version": "2025-04-30.basil",
        "data": {"object": {"object": "invoice", "id": "in_pipe_1", "customer": "cus_pipe", "status": "paid",
            "currency": "usd", "amount_due": 2500, "amount_paid": 2500, "amount_remaining": 0,
            "lines": {"object": "list", "has_more": false, "data": []}}}}))
    .unwrap();
    let now = chrono::Utc::now().timestamp();
    let header = sign(SECRET, now, &body);
    inbox.receive(Some(&header), &body, now).await.unwrap();
    inbox.receive(Some(&header), &body, now).await.unwrap(); // Stripe retried: no second message

    let db = TestDb::new().await;
    let function = SyncFunction {
        syncer: Syncer {
            db: db.billing.clone(),
            stripe: None,
            livemode: Some(false),
        },
        dynamo,
        events_table: table,
    };
    let mut messages = drain(&sqs, &queue).await;
    assert_eq!(messages.len(), 1, "one hand-off for two deliveries");
    let mut missing = SqsMessage::default();
    missing.message_id = Some("m-missing".into());
    missing.body = Some(json!({"event_id": "evt_never_recorded", "type": "invoice.paid"}).to_string());
    let mut garbage = SqsMessage::default();
    garbage.message_id = Some("m-garbage".into());
    garbage.body = Some("not json".into());
    messages.push(missing);
    messages.push(garbage);

    let response = function.handle(sqs_event(messages.clone())).await;
    let mut failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    failed.sort();
    assert_eq!(
        failed,
        vec!["m-garbage", "m-missing"],
        "only the bad messages are retried"
    );
    let first = billing_snapshot(&db.owner).await;
    assert_eq!(first["stripe_invoices"][0]["amount_paid"], 2500);

    // SQS redelivers the good message too (at-least-once): nothing changes.
    let response = function.handle(sqs_event(messages[..1].to_vec())).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(billing_snapshot(&db.owner).await, first);
}

#[tokio::test]
async fn the_dlq_replay_moves_every_message_back_once() {
    let aws = moto().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let dlq = queue(&sqs, &format!("replay-dlq-{unique}")).await;
    let main = queue(&sqs, &format!("replay-main-{unique}")).await;
    let dead_letters = Queue::<serde_json::Value>::new(&sqs, dlq.clone());
    for i in 0..13 {
        dead_letters
            .send(&json!({"event_id": format!("evt_dlq_{i}")}))
            .await
            .unwrap();
    }
    let dry = replay(
        &sqs,
        &dlq,
        &main,
        &ReplayOptions {
            dry_run: true,
            max: 100,
        },
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(dry.moved, 13, "a dry run lists them");
    assert!(drain(&sqs, &main).await.is_empty(), "and moves nothing");

    let mut seen = Vec::new();
    let report = replay(&sqs, &dlq, &main, &ReplayOptions::default(), |_, body| {
        seen.push(body.to_owned())
    })
    .await
    .unwrap();
    assert_eq!(report.moved, 13, "the dry run left every message in the DLQ, visible");
    let mut bodies: Vec<String> = drain(&sqs, &main).await.into_iter().filter_map(|m| m.body).collect();
    bodies.sort();
    seen.sort();
    assert_eq!(bodies, seen);
    assert_eq!(bodies.len(), 13);
    assert!(drain(&sqs, &dlq).await.is_empty(), "the DLQ is empty");
}
