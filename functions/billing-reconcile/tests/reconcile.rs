//! billing-reconcile's run (`Syncer::reconcile`, what the scheduled function calls) against a
//! real Postgres (as portal_billing) and Stripe faked by wiremock: a run never undoes a newer
//! event, moves money state back only on a fresh read, and reports an item that fails while the
//! rest still runs. The run end to end against localstripe (a dropped event and an edited row
//! repaired after the whole webhook pipeline made them) is in
//! `functions/billing-sync/tests/localstripe.rs`, beside the pipeline that sets it up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{Value, json};
use shared::adapters::stripe_api::StripeApi;
use testkit::TestDb;
use testkit::billing::{event, invoice, syncer};

/// A Stripe whose lists hold one invoice (as `listed`), whose `GET /v1/invoices/in_own_1`
/// answers `fresh`, and nothing else.
async fn stripe_with_invoice(listed: Value, fresh: Value) -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    let list = |data: Vec<Value>| {
        ResponseTemplate::new(200).set_body_json(json!({"object": "list", "has_more": false, "data": data}))
    };
    for empty in ["/v1/events", "/v1/plans", "/v1/customers", "/v1/subscriptions"] {
        Mock::given(method("GET"))
            .and(path(empty))
            .respond_with(list(vec![]))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/v1/invoices"))
        .respond_with(list(vec![listed]))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/invoices/in_own_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fresh))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn reconciliation_never_undoes_a_newer_event_and_moves_money_back_only_on_a_fresh_read() {
    let now = chrono::Utc::now().timestamp();
    // An event newer than the run's read: the listed (older) state does not replace it.
    let stripe = stripe_with_invoice(invoice("open", 0), invoice("open", 0)).await;
    let db = TestDb::new().await;
    let s = syncer(&db, Some(StripeApi::new(&stripe.uri(), "sk_test_x").unwrap()));
    s.apply(&event(
        "evt_future_paid",
        "invoice.paid",
        now + 3600,
        invoice("paid", 4900),
    ))
    .await
    .unwrap();
    let report = s.reconcile(now).await.unwrap();
    assert_eq!((report.changes, report.failures), (0, 0));
    let status: String = sqlx::query_scalar("select status from stripe_invoices")
        .fetch_one(&db.owner)
        .await
        .unwrap();
    assert_eq!(status, "paid");

    // A paid row that a list shows open, but a fresh read shows paid: left alone.
    let stripe = stripe_with_invoice(invoice("open", 0), invoice("paid", 4900)).await;
    let db = TestDb::new().await;
    let s = syncer(&db, Some(StripeApi::new(&stripe.uri(), "sk_test_x").unwrap()));
    s.apply(&event("evt_paid", "invoice.paid", now - 3600, invoice("paid", 4900)))
        .await
        .unwrap();
    assert_eq!(s.reconcile(now).await.unwrap().changes, 0);

    // Stripe itself says open on a fresh read (the row was edited by hand): repaired, recorded.
    let stripe = stripe_with_invoice(invoice("open", 0), invoice("open", 0)).await;
    let db = TestDb::new().await;
    let s = syncer(&db, Some(StripeApi::new(&stripe.uri(), "sk_test_x").unwrap()));
    s.apply(&event("evt_paid", "invoice.paid", now - 3600, invoice("paid", 4900)))
        .await
        .unwrap();
    let report = s.reconcile(now).await.unwrap();
    assert_eq!(report.changes, 1);
    let (status, action): (String, String) = sqlx::query_as(
        "select i.status, c.action from stripe_invoices i join billing_reconcile_changes c on c.object_id = i.id",
    )
    .fetch_one(&db.owner)
    .await
    .unwrap();
    assert_eq!((status.as_str(), action.as_str()), ("open", "updated"));
}

#[tokio::test]
async fn a_reconciliation_item_that_fails_is_reported_and_the_rest_still_runs() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    let list = |data: Vec<Value>| {
        ResponseTemplate::new(200).set_body_json(json!({"object": "list", "has_more": false, "data": data}))
    };
    let broken = json!({"id": "evt_broken", "type": "invoice.paid", "created": 10,
        "data": {"object": {"object": "invoice", "id": "in_b", "status": "paid",
            "lines": {"object": "list", "has_more": true, "data": []}}}});
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(list(vec![broken]))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/invoices/in_b/lines"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    for empty in ["/v1/plans", "/v1/customers", "/v1/subscriptions"] {
        Mock::given(method("GET"))
            .and(path(empty))
            .respond_with(list(vec![]))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/v1/invoices"))
        .respond_with(list(vec![invoice("paid", 4900)]))
        .mount(&server)
        .await;
    let db = TestDb::new().await;
    let s = syncer(&db, Some(StripeApi::new(&server.uri(), "sk_test_x").unwrap()));
    let err = s.reconcile(1_000).await.unwrap_err();
    assert!(err.to_string().contains("1 item"), "{err}");
    let (cursor, failures, error): (Option<i64>, i32, Option<String>) =
        sqlx::query_as("select events_cursor, failures, error from billing_reconcile_runs")
            .fetch_one(&db.owner)
            .await
            .unwrap();
    assert_eq!(cursor, Some(9), "the cursor stops before the event that failed");
    assert_eq!(failures, 1);
    assert!(error.is_some());
    let inserted: i64 = sqlx::query_scalar("select count(*) from stripe_invoices where id = 'in_own_1'")
        .fetch_one(&db.owner)
        .await
        .unwrap();
    assert_eq!(inserted, 1, "the invoice list was still reconciled");
}
