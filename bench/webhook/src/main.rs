//! Stripe webhook pipeline benchmark, one run, against the AWS endpoint of the local stack
//! (moto at TEST_AWS_ENDPOINT, default http://127.0.0.1:5000):
//!
//! - baseline: one bare DynamoDB PutItem per event (the floor any durable record costs);
//! - inbox: `StripeInbox::receive` — signature verify, conditional record, SQS hand-off, mark
//!   forwarded — for new events, and for duplicate deliveries;
//! - verify alone, in process.
//!
//! Then billing-sync's apply, against a fresh Postgres database of the local stack:
//!
//! - baseline: one bare single-row INSERT per event (the floor of a durable Postgres write);
//! - apply: `Syncer::apply` (ledger insert + gated invoice upsert + its lines, one transaction)
//!   for new events, duplicates, and with 8 in flight.
//!
//! Prints p50/p99 latency, events/s (sequential and with 8 in flight) and ratios to the baseline.
//! Usage: cargo run --release -p bench-webhook [-- EVENTS]
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use aws_sdk_dynamodb::types::AttributeValue;
use shared::domain::signature::stripe;
use shared::services::billing::inbox::{InboxConfig, StripeInbox};
use shared::services::billing::sync::{Outcome, StripeEvent, Syncer};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_bench";

fn body(i: usize, run: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"evt_{run}_{i}","object":"event","type":"invoice.paid","api_version":"2025-04-30.basil","created":1750000000,"livemode":false,"data":{{"object":{{"id":"in_{i}","object":"invoice","amount_paid":4900,"currency":"usd"}}}}}}"#
    )
    .into_bytes()
}

fn stats(name: &str, mut samples: Vec<Duration>, wall: Duration, baseline_p50: Option<f64>) -> f64 {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = ms(samples[samples.len() / 2]);
    let p99 = ms(samples[(samples.len() * 99 / 100).min(samples.len() - 1)]);
    let rate = samples.len() as f64 / wall.as_secs_f64();
    let ratio = baseline_p50
        .map(|b| format!("  p50 ratio {:5.2}x", p50 / b))
        .unwrap_or_default();
    println!("  {name:44} p50 {p50:8.3} ms  p99 {p99:8.3} ms  {rate:8.1} events/s{ratio}");
    p50
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(300);
    let endpoint = std::env::var("TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    let aws = testkit::moto().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (table, queue_url) = testkit::stripe_inbox_resources(&aws, "bench").await;
    let inbox = Arc::new(StripeInbox::new(
        InboxConfig {
            secrets: vec![SECRET.to_owned()],
            tolerance_secs: 300,
            table: table.clone(),
            queue_url,
        },
        dynamo.clone(),
        sqs,
    ));
    println!("Stripe webhook pipeline, {events} events each, against {endpoint}:");

    // Baseline: one bare PutItem per event.
    let mut samples = Vec::new();
    let wall = Instant::now();
    for i in 0..events {
        let t = Instant::now();
        dynamo
            .put_item()
            .table_name(&table)
            .item("event_id", AttributeValue::S(format!("baseline_{i}")))
            .item("raw_body", AttributeValue::B(body(i, &run).into()))
            .send()
            .await
            .unwrap();
        samples.push(t.elapsed());
    }
    let base = stats("baseline: one DynamoDB PutItem", samples, wall.elapsed(), None);

    let now = chrono::Utc::now().timestamp();
    let deliveries: Vec<(Vec<u8>, String)> = (0..events)
        .map(|i| {
            let b = body(i, &run);
            let h = stripe::sign(SECRET, now, &b);
            (b, h)
        })
        .collect();

    // Verify alone, in process.
    let mut samples = Vec::new();
    let wall = Instant::now();
    for (b, h) in &deliveries {
        let t = Instant::now();
        stripe::verify(h, b, &[SECRET], now, 300).unwrap();
        samples.push(t.elapsed());
    }
    stats("verify only (in process)", samples, wall.elapsed(), Some(base));

    // New events, one at a time.
    let mut samples = Vec::new();
    let wall = Instant::now();
    for (b, h) in &deliveries {
        let t = Instant::now();
        inbox.receive(Some(h), b, now).await.unwrap();
        samples.push(t.elapsed());
    }
    stats(
        "inbox: verify + record + hand-off (new)",
        samples,
        wall.elapsed(),
        Some(base),
    );

    // The same deliveries again: duplicates.
    let mut samples = Vec::new();
    let wall = Instant::now();
    for (b, h) in &deliveries {
        let t = Instant::now();
        inbox.receive(Some(h), b, now).await.unwrap();
        samples.push(t.elapsed());
    }
    stats("inbox: duplicate delivery", samples, wall.elapsed(), Some(base));

    // New events, 8 in flight.
    let fresh: Vec<(Vec<u8>, String)> = (0..events)
        .map(|i| {
            let b = body(i + events, &run);
            let h = stripe::sign(SECRET, now, &b);
            (b, h)
        })
        .collect();
    let wall = Instant::now();
    let samples = in_flight(fresh, 8, move |(b, h)| {
        let inbox = inbox.clone();
        async move {
            inbox.receive(Some(&h), &b, now).await.unwrap();
        }
    })
    .await;
    stats("inbox: new, 8 in flight", samples, wall.elapsed(), Some(base));
    let _ = dynamo.delete_table().table_name(&table).send().await;

    apply_bench(events, &run).await;
}

/// Runs `work` over `items` with `lanes` in flight (each lane sequential); the latency of each.
async fn in_flight<T, F, Fut>(items: Vec<T>, lanes: usize, work: F) -> Vec<Duration>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let per_lane = items.len().div_ceil(lanes).max(1);
    let mut lanes_items: Vec<Vec<T>> = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        lanes_items.push(items.by_ref().take(per_lane).collect());
    }
    let handles: Vec<_> = lanes_items
        .into_iter()
        .map(|lane| {
            let work = work.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                for item in lane {
                    let t = Instant::now();
                    work(item).await;
                    samples.push(t.elapsed());
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for h in handles {
        samples.extend(h.await.unwrap());
    }
    samples
}

fn invoice_event(i: usize, run: &str) -> StripeEvent {
    let lines: Vec<serde_json::Value> = (0..3)
        .map(|l| serde_json::json!({"id": format!("il_{i}_{l}"), "amount": 1000 + l, "currency": "usd"}))
        .collect();
    StripeEvent::from_value(serde_json::json!({
        "id": format!("evt_apply_{run}_{i}"), "type": "invoice.paid", "created": 1_750_000_000 + i as i64,
        "livemode": false, "data": {"object": {"object": "invoice", "id": format!("in_{i}"), "customer": "cus_bench",
            "status": "paid", "currency": "usd", "amount_due": 3003, "amount_paid": 3003, "amount_remaining": 0,
            "lines": {"object": "list", "has_more": false, "data": lines}}}
    }))
    .unwrap()
}

async fn apply_bench(events: usize, run: &str) {
    let db = testkit::TestDb::new().await;
    println!(
        "billing-sync apply, {events} events each, Postgres database {}:",
        db.name
    );
    let syncer = Syncer {
        db: db.billing.clone(),
        stripe: None,
        livemode: None,
    };
    let mut samples = Vec::new();
    let wall = Instant::now();
    for i in 0..events {
        let t = Instant::now();
        sqlx::query("insert into stripe_events (id, type, outcome, payload) values ($1, 'bench', 'baseline', '{}')")
            .bind(format!("evt_baseline_{i}"))
            .execute(&db.billing)
            .await
            .unwrap();
        samples.push(t.elapsed());
    }
    let base = stats("baseline: one single-row INSERT", samples, wall.elapsed(), None);

    let batch: Vec<StripeEvent> = (0..events).map(|i| invoice_event(i, run)).collect();
    for (label, round) in [
        ("apply: new invoice.paid (3 lines)", 0),
        ("apply: duplicate delivery", 1),
    ] {
        let mut samples = Vec::new();
        let wall = Instant::now();
        for e in &batch {
            let t = Instant::now();
            let outcome = syncer.apply(e).await.unwrap();
            assert_eq!(outcome == Outcome::Duplicate, round == 1);
            samples.push(t.elapsed());
        }
        stats(label, samples, wall.elapsed(), Some(base));
    }

    let fresh: Vec<StripeEvent> = (events..2 * events).map(|i| invoice_event(i, run)).collect();
    let wall = Instant::now();
    let samples = in_flight(fresh, 8, move |e| {
        let syncer = syncer.clone();
        async move {
            syncer.apply(&e).await.unwrap();
        }
    })
    .await;
    stats("apply: new, 8 in flight", samples, wall.elapsed(), Some(base));
}
