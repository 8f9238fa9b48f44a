//! billing-sync against a real Postgres (as portal_billing): idempotent, order-independent,
//! monotonic money state, complete lists, lenient about what it does not mirror.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{Value, json};
use shared::adapters::stripe_api::StripeApi;
use shared::services::billing::sync::{Outcome, StripeEvent, Syncer};
use testkit::billing::{event, invoice, syncer};
use testkit::{TestDb, billing_snapshot};

/// Every permutation of `items` (Heap's algorithm; small inputs only).
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    fn heap<T: Clone>(k: usize, a: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        heap(k - 1, a, out);
        for i in 0..k - 1 {
            if k.is_multiple_of(2) {
                a.swap(i, k - 1)
            } else {
                a.swap(0, k - 1)
            }
            heap(k - 1, a, out);
        }
    }
    let mut out = Vec::new();
    heap(items.len(), &mut items.to_vec(), &mut out);
    out
}

async fn apply_all(s: &Syncer, events: &[StripeEvent]) {
    for e in events {
        s.apply(e).await.unwrap();
    }
}

#[tokio::test]
async fn paid_never_goes_back_whatever_the_order_and_same_second_ties_resolve_by_lifecycle() {
    // draft and open in the same second, paid a second later, then a late payment_failed that
    // still carries `open` (Stripe sends retries' failures after a manual payment, for example).
    let events = vec![
        event("evt_own_created", "invoice.created", 100, invoice("draft", 0)),
        event("evt_own_finalized", "invoice.finalized", 100, invoice("open", 0)),
        event("evt_own_paid", "invoice.paid", 101, invoice("paid", 4900)),
        event("evt_own_failed", "invoice.payment_failed", 102, invoice("open", 0)),
    ];
    let mut reference: Option<Value> = None;
    for (i, order) in permutations(&events).into_iter().enumerate() {
        let db = TestDb::new().await;
        let s = syncer(&db, None);
        apply_all(&s, &order).await;
        let snapshot = billing_snapshot(&db.owner).await;
        let inv = &snapshot["stripe_invoices"][0];
        assert_eq!(inv["status"], "paid", "order {i}: {inv}");
        assert_eq!(inv["amount_paid"], 4900);
        assert_eq!(inv["subscription_id"], "sub_own_1", "basil parent.subscription_details");
        assert_eq!(snapshot["stripe_invoice_lines"].as_array().unwrap().len(), 1);
        match &reference {
            None => reference = Some(snapshot),
            Some(r) => assert_eq!(r, &snapshot, "order {i} gave another mirror"),
        }
        if i >= 7 {
            break; // 8 of the 24 orders (each needs its own database) cover every position of paid.
        }
    }
}

#[tokio::test]
async fn canceled_never_becomes_active_again_and_a_tie_prefers_the_later_lifecycle_state() {
    let sub = |status: &str, created_note: i64| {
        json!({"object": "subscription", "id": "sub_own_2", "customer": "cus_own_2", "status": status,
            "cancel_at_period_end": false, "created": 50, "note": created_note,
            "items": {"object": "list", "has_more": false, "data": [
                {"id": "si_1", "price": {"id": "price_growth"}, "quantity": 3,
                 "current_period_start": 50, "current_period_end": 150}]}})
    };
    let db = TestDb::new().await;
    let s = syncer(&db, None);
    // The cancellation first, then older and same-second events.
    s.apply(&event(
        "evt_s3",
        "customer.subscription.deleted",
        300,
        sub("canceled", 3),
    ))
    .await
    .unwrap();
    s.apply(&event("evt_s1", "customer.subscription.created", 100, sub("active", 1)))
        .await
        .unwrap();
    s.apply(&event("evt_s4", "customer.subscription.updated", 400, sub("active", 4)))
        .await
        .unwrap();
    s.apply(&event(
        "evt_s2",
        "customer.subscription.updated",
        300,
        sub("past_due", 2),
    ))
    .await
    .unwrap();
    let row: (String, Option<String>, Option<i64>, Option<i64>) = sqlx::query_as(
        "select status, price_id, quantity, current_period_end from stripe_subscriptions where id = 'sub_own_2'",
    )
    .fetch_one(&db.owner)
    .await
    .unwrap();
    assert_eq!(
        row,
        ("canceled".into(), Some("price_growth".into()), Some(3), Some(150))
    );

    // Non-terminal same-second tie: the later lifecycle state wins in either order.
    for order in [["evt_t1", "evt_t2"], ["evt_t2", "evt_t1"]] {
        let db = TestDb::new().await;
        let s = syncer(&db, None);
        for id in order {
            let status = if id == "evt_t1" { "trialing" } else { "active" };
            let mut obj = sub(status, 0);
            obj["id"] = json!("sub_own_3");
            s.apply(&event(id, "customer.subscription.updated", 500, obj))
                .await
                .unwrap();
        }
        let status: String = sqlx::query_scalar("select status from stripe_subscriptions where id = 'sub_own_3'")
            .fetch_one(&db.owner)
            .await
            .unwrap();
        assert_eq!(status, "active", "order {order:?}");
    }
}

#[tokio::test]
async fn a_redelivered_event_applies_nothing_even_with_another_body() {
    let db = TestDb::new().await;
    let s = syncer(&db, None);
    let first = event("evt_dup", "invoice.finalized", 100, invoice("open", 0));
    assert_eq!(s.apply(&first).await.unwrap(), Outcome::Applied);
    let before = billing_snapshot(&db.owner).await;
    assert_eq!(s.apply(&first).await.unwrap(), Outcome::Duplicate);
    // Same id, other content (two fixture files upstream edited this way): still nothing.
    let edited = event("evt_dup", "invoice.voided", 100, invoice("void", 0));
    assert_eq!(s.apply(&edited).await.unwrap(), Outcome::Duplicate);
    assert_eq!(billing_snapshot(&db.owner).await, before);
}

#[tokio::test]
async fn concurrent_deliveries_of_the_same_events_converge() {
    let events = vec![
        event("evt_c1", "invoice.created", 100, invoice("draft", 0)),
        event("evt_c2", "invoice.finalized", 100, invoice("open", 0)),
        event("evt_c3", "invoice.paid", 101, invoice("paid", 4900)),
    ];
    let serial = TestDb::new().await;
    apply_all(&syncer(&serial, None), &events).await;
    let db = TestDb::new().await;
    let s = syncer(&db, None);
    let mut tasks = Vec::new();
    for round in 0..4 {
        for e in &events {
            let (s, e) = (s.clone(), e.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(round)).await;
                s.apply(&e).await.unwrap()
            }));
        }
    }
    let mut applied = 0;
    for t in tasks {
        if t.await.unwrap() == Outcome::Applied {
            applied += 1;
        }
    }
    assert_eq!(applied, 3, "each event applied exactly once");
    assert_eq!(billing_snapshot(&db.owner).await, billing_snapshot(&serial.owner).await);
}

#[tokio::test]
async fn what_is_not_mirrored_is_recorded_and_acknowledged() {
    let db = TestDb::new().await;
    let mut s = syncer(&db, None);
    let upcoming = json!({"object": "invoice", "customer": "cus_1", "status": "draft", "amount_due": 100});
    assert_eq!(
        s.apply(&event("evt_u", "invoice.upcoming", 1, upcoming)).await.unwrap(),
        Outcome::Ignored("ignored_preview")
    );
    assert_eq!(
        s.apply(&event(
            "evt_x",
            "issuing_card.created",
            1,
            json!({"object": "issuing.card", "id": "ic_1"})
        ))
        .await
        .unwrap(),
        Outcome::Ignored("ignored_type")
    );
    s.livemode = Some(true);
    assert_eq!(
        s.apply(&event("evt_t", "invoice.paid", 1, invoice("paid", 4900)))
            .await
            .unwrap(),
        Outcome::Ignored("ignored_livemode"),
        "a test-mode event on a live stage changes nothing"
    );
    let outcomes: Vec<(String, String)> = sqlx::query_as("select id, outcome from stripe_events order by id")
        .fetch_all(&db.owner)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 3);
    let snapshot = billing_snapshot(&db.owner).await;
    assert_eq!(snapshot["stripe_invoices"], json!([]));
}

#[tokio::test]
async fn truncated_lists_are_fetched_in_full_before_applying() {
    use wiremock::matchers::{method, path, query_param, query_param_is_missing};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let stripe = MockServer::start().await;
    let line = |i: u32| json!({"id": format!("il_{i}"), "object": "line_item", "amount": 1000 + i, "currency": "usd"});
    Mock::given(method("GET"))
        .and(path("/v1/invoices/in_long/lines"))
        .and(query_param("limit", "100"))
        .and(query_param_is_missing("starting_after"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "has_more": true,
            "data": (0..100).map(line).collect::<Vec<_>>()})),
        )
        .expect(1)
        .mount(&stripe)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/invoices/in_long/lines"))
        .and(query_param("starting_after", "il_99"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "has_more": false,
            "data": (100..130).map(line).collect::<Vec<_>>()})),
        )
        .expect(1)
        .mount(&stripe)
        .await;
    let db = TestDb::new().await;
    let s = syncer(&db, Some(StripeApi::new(&stripe.uri(), "sk_test_x").unwrap()));
    let truncated = json!({"object": "invoice", "id": "in_long", "customer": "cus_1", "status": "open",
        "amount_due": 0, "amount_paid": 0, "amount_remaining": 0,
        "lines": {"object": "list", "has_more": true, "data": (0..10).map(line).collect::<Vec<_>>()}});
    s.apply(&event("evt_long", "invoice.finalized", 5, truncated))
        .await
        .unwrap();
    let (count, sum): (i64, i64) =
        sqlx::query_as("select count(*), sum(amount)::bigint from stripe_invoice_lines where invoice_id = 'in_long'")
            .fetch_one(&db.owner)
            .await
            .unwrap();
    assert_eq!(count, 130);
    assert_eq!(sum, (0..130).map(|i| 1000 + i).sum::<i64>());

    // Without the API (or with it down) the event is not applied: SQS retries it.
    let db = TestDb::new().await;
    let down = syncer(&db, Some(StripeApi::new("http://127.0.0.1:9", "sk_test_x").unwrap()));
    let again = json!({"object": "invoice", "id": "in_long", "status": "open",
        "lines": {"object": "list", "has_more": true, "data": []}});
    assert!(
        down.apply(&event("evt_long2", "invoice.finalized", 5, again))
            .await
            .is_err()
    );
    assert_eq!(
        billing_snapshot(&db.owner).await["stripe_events"],
        json!([]),
        "nothing recorded"
    );
}
