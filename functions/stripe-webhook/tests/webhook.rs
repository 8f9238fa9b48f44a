//! `POST /webhooks/stripe` against the moto server (DynamoDB inbox, SQS hand-off) — each test
//! with its own table and queue — and the real Stripe payloads of ../shared/fixtures/stripe.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use shared::domain::signature::stripe::sign;
use shared::services::billing::inbox::{InboxConfig, StripeInbox};
use std::sync::Arc;
use testkit::post;

const SECRET: &str = "whsec_test_current";
const OLD_SECRET: &str = "whsec_test_previous";

struct Stack {
    router: axum::Router,
    dynamo: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    table: String,
    queue_url: String,
}

async fn stack_with_queue(queue_url: Option<String>) -> Stack {
    let aws = testkit::moto().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let (table, real_queue) = testkit::stripe_inbox_resources(&aws, "test").await;
    let config = InboxConfig {
        secrets: vec![SECRET.to_owned(), OLD_SECRET.to_owned()],
        tolerance_secs: 300,
        table: table.clone(),
        queue_url: queue_url.unwrap_or_else(|| real_queue.clone()),
    };
    let inbox = StripeInbox::new(config, dynamo.clone(), sqs.clone());
    let router = stripe_webhook::router(stripe_webhook::WebhookState { inbox: Arc::new(inbox) });
    Stack {
        router,
        dynamo,
        sqs,
        table,
        queue_url: real_queue,
    }
}

async fn stack() -> Stack {
    stack_with_queue(None).await
}

impl Stack {
    async fn deliver(&self, body: &[u8], signature: Option<String>) -> testkit::Resp {
        let mut req = post("/webhooks/stripe").raw_json(body);
        if let Some(sig) = signature {
            req = req.header("stripe-signature", &sig);
        }
        req.send(&self.router).await
    }

    async fn stored(&self) -> Vec<std::collections::HashMap<String, AttributeValue>> {
        self.dynamo
            .scan()
            .table_name(&self.table)
            .send()
            .await
            .unwrap()
            .items()
            .to_vec()
    }

    /// Every message handed on (received and deleted, so a second call sees only new ones).
    async fn handed_on(&self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .unwrap();
            let messages = got.messages();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                out.push(serde_json::from_str(m.body().unwrap()).unwrap());
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn event(id: &str, kind: &str) -> Vec<u8> {
    format!(r#"{{"id":"{id}","object":"event","type":"{kind}","api_version":"2025-04-30.basil","created":1750000000,"livemode":false,"data":{{"object":{{"id":"in_1"}}}}}}"#).into_bytes()
}

#[tokio::test]
async fn a_signed_event_is_recorded_with_its_raw_bytes_and_handed_on_once() {
    let s = stack().await;
    let body = event("evt_1", "invoice.paid");
    let r = s.deliver(&body, Some(sign(SECRET, now(), &body))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["duplicate"], false);
    let stored = s.stored().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0]["raw_body"].as_b().unwrap().as_ref(),
        body.as_slice(),
        "the exact bytes are kept"
    );
    assert_eq!(stored[0]["type"].as_s().unwrap(), "invoice.paid");
    assert_eq!(stored[0]["api_version"].as_s().unwrap(), "2025-04-30.basil");
    assert_eq!(stored[0]["status"].as_s().unwrap(), "forwarded");
    let messages = s.handed_on().await;
    assert_eq!(
        messages,
        vec![serde_json::json!({"event_id": "evt_1", "type": "invoice.paid"})]
    );

    // the same delivery again (Stripe retries): 200, nothing new
    let r = s.deliver(&body, Some(sign(SECRET, now(), &body))).await;
    assert_eq!(r.json["duplicate"], true);
    assert!(s.handed_on().await.is_empty());
    assert_eq!(s.stored().await.len(), 1);
}

#[tokio::test]
async fn missing_forged_stale_and_wrong_secret_signatures_answer_400_and_record_nothing() {
    let s = stack().await;
    let body = event("evt_2", "customer.created");
    let mut tampered = body.clone();
    tampered.push(b' ');
    let cases = [
        ("missing", body.clone(), None),
        ("malformed", body.clone(), Some("t=abc,v1=zz".to_owned())),
        ("stale", body.clone(), Some(sign(SECRET, now() - 301, &body))),
        ("future", body.clone(), Some(sign(SECRET, now() + 301, &body))),
        (
            "wrong secret",
            body.clone(),
            Some(sign("whsec_someone_else", now(), &body)),
        ),
        ("body changed", tampered.clone(), Some(sign(SECRET, now(), &body))),
        (
            "only v0",
            body.clone(),
            Some(sign(SECRET, now(), &body).replace("v1=", "v0=")),
        ),
    ];
    for (case, body, sig) in cases {
        let r = s.deliver(&body, sig).await;
        r.problem(400);
        assert_eq!(r.json["type"], "/problems/invalid-signature", "{case}");
    }
    assert!(s.stored().await.is_empty(), "nothing recorded");
    assert!(s.handed_on().await.is_empty(), "nothing handed on");
}

#[tokio::test]
async fn the_previous_secret_still_verifies_during_rotation() {
    let s = stack().await;
    let body = event("evt_3", "invoice.created");
    let r = s.deliver(&body, Some(sign(OLD_SECRET, now(), &body))).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn a_failed_hand_off_answers_503_and_the_retry_hands_it_on() {
    // The queue URL points nowhere: the record is written, the hand-off fails.
    let broken = stack_with_queue(Some("http://127.0.0.1:5000/000000000000/no-such-queue".to_owned())).await;
    let body = event("evt_4", "invoice.paid");
    let r = broken.deliver(&body, Some(sign(SECRET, now(), &body))).await;
    r.problem(503);
    let stored = broken.stored().await;
    assert_eq!(
        stored[0]["status"].as_s().unwrap(),
        "received",
        "recorded, not yet forwarded"
    );

    // Stripe retries against a working sandbox sharing the table: handed on now, exactly once.
    let config = InboxConfig {
        secrets: vec![SECRET.to_owned()],
        tolerance_secs: 300,
        table: broken.table.clone(),
        queue_url: broken.queue_url.clone(),
    };
    let inbox = StripeInbox::new(config, broken.dynamo.clone(), broken.sqs.clone());
    let router = stripe_webhook::router(stripe_webhook::WebhookState { inbox: Arc::new(inbox) });
    let fixed = Stack { router, ..broken };
    let r = fixed.deliver(&body, Some(sign(SECRET, now(), &body))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["duplicate"], false);
    assert_eq!(fixed.handed_on().await.len(), 1);
    let r = fixed.deliver(&body, Some(sign(SECRET, now(), &body))).await;
    assert_eq!(r.json["duplicate"], true);
    assert!(fixed.handed_on().await.is_empty());
}

#[tokio::test]
async fn a_signed_body_that_is_no_event_is_kept_for_inspection_and_acknowledged() {
    let s = stack().await;
    let body = br#"{"hello":"world"}"#.to_vec();
    let r = s.deliver(&body, Some(sign(SECRET, now(), &body))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let stored = s.stored().await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0]["event_id"].as_s().unwrap().starts_with("unreadable:"));
    assert!(s.handed_on().await.is_empty(), "nothing to apply");
}

#[tokio::test]
async fn concurrent_duplicate_deliveries_hand_on_at_least_once_and_record_once() {
    let s = stack().await;
    let body = event("evt_5", "payment_intent.succeeded");
    let sig = sign(SECRET, now(), &body);
    let (a, b, c) = tokio::join!(
        s.deliver(&body, Some(sig.clone())),
        s.deliver(&body, Some(sig.clone())),
        s.deliver(&body, Some(sig))
    );
    for r in [&a, &b, &c] {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(s.stored().await.len(), 1);
    let handed = s.handed_on().await.len();
    assert!((1..=3).contains(&handed), "handed on {handed} times");
}

/// The real payloads: each signed and delivered (twice, and in reverse order too); one record
/// per event id, the exact bytes kept. Some upstream files share an id (README): the first wins.
#[tokio::test]
async fn the_real_stripe_payloads_are_recorded_once_each() {
    let Some(dir) = testkit::shared_fixtures("stripe") else {
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json") && !p.file_name().unwrap().to_string_lossy().starts_with('_')
        })
        .collect();
    files.sort();
    let s = stack().await;
    let mut ids = std::collections::BTreeSet::new();
    let mut unreadable = 0;
    for file in files.iter().chain(files.iter().rev()) {
        let body = std::fs::read(file).unwrap();
        let r = s.deliver(&body, Some(sign(SECRET, now(), &body))).await;
        assert_eq!(r.status, 200, "{}: {}", file.display(), r.text);
        let v: Value = serde_json::from_slice(&body).unwrap();
        match v["id"].as_str() {
            Some(id) if id.starts_with("evt_") => {
                ids.insert(id.to_owned());
            }
            _ => unreadable += 1,
        }
    }
    let stored = s.stored().await;
    let unreadable_keys = stored
        .iter()
        .filter(|i| i["event_id"].as_s().unwrap().starts_with("unreadable:"))
        .count();
    assert_eq!(stored.len() - unreadable_keys, ids.len(), "one record per event id");
    assert!(unreadable == 0 || unreadable_keys >= 1);
    assert_eq!(s.handed_on().await.len(), ids.len(), "each id handed on once");
}
