//! End to end against the local stack's localstripe and moto: checkout through the billing API,
//! the customer paying (localstripe's checkout page), Stripe's signed webhooks delivered to the
//! running stripe-webhook function (served on a local port), billing-sync draining the queue as
//! Lambda would, and the API showing what Stripe shows. Then reconciliation repairs a dropped
//! event and an edited row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use billing_sync::SyncFunction;
use serde_json::{Value, json};
use shared::adapters::stripe_api::{StripeApi, form};
use shared::services::billing::inbox::{InboxConfig, StripeInbox};
use shared::services::billing::sync::Syncer;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::{TestApp, get, localstripe_url, moto, post, stripe_inbox_resources};

struct Stack {
    app: TestApp,
    billing: axum::Router,
    stripe: StripeApi,
    sync: SyncFunction,
    sqs: aws_sdk_sqs::Client,
    queue: String,
    unique: String,
}

/// The webhook function on a local port, registered with localstripe under a fresh secret.
async fn stack() -> Stack {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let aws = moto().await;
    let (table, queue) = stripe_inbox_resources(&aws, "e2e").await;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let secret = format!("whsec_e2e_{unique}");
    let inbox = StripeInbox::new(
        InboxConfig {
            secrets: vec![secret.clone()],
            tolerance_secs: 300,
            table: table.clone(),
            queue_url: queue.clone(),
        },
        dynamo.clone(),
        sqs.clone(),
    );
    let webhook = stripe_webhook::router(stripe_webhook::WebhookState { inbox: Arc::new(inbox) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, webhook).await.unwrap() });

    let base = localstripe_url();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/_config/webhooks/e2e_{unique}"))
        .form(&[
            ("url", format!("http://127.0.0.1:{port}/webhooks/stripe")),
            ("secret", secret),
        ])
        .send()
        .await
        .expect("localstripe answers: run local/up --services-only first");
    assert!(r.status().is_success());

    let app = TestApp::new().await;
    let stripe = StripeApi::new(&base, "sk_test_e2e").unwrap();
    let billing = billing::router(billing::BillingState::new(app.core.clone(), stripe.clone()));
    let sync = SyncFunction {
        syncer: Syncer {
            db: app.db.billing.clone(),
            stripe: Some(stripe.clone()),
            livemode: Some(false),
        },
        dynamo,
        events_table: table,
    };
    Stack {
        app,
        billing,
        stripe,
        sync,
        sqs,
        queue,
        unique,
    }
}

impl Stack {
    /// One receive from the billing queue handed to billing-sync; successes are deleted as the
    /// Lambda integration does. Returns how many messages there were.
    async fn pump_once(&self) -> usize {
        let batch = self
            .sqs
            .receive_message()
            .queue_url(&self.queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let mut event = SqsEvent::default();
        for m in batch.messages() {
            let mut message = SqsMessage::default();
            message.message_id = m.message_id().map(str::to_owned);
            message.body = m.body().map(str::to_owned);
            event.records.push(message);
        }
        let n = event.records.len();
        let failed: Vec<String> = self
            .sync
            .handle(event)
            .await
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        assert!(failed.is_empty(), "billing-sync failed messages: {failed:?}");
        for m in batch.messages() {
            self.sqs
                .delete_message()
                .queue_url(&self.queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        n
    }

    /// Pumps until `done` holds (or 30 s pass).
    async fn pump_until(&self, what: &str, mut done: impl AsyncFnMut() -> bool) {
        let start = Instant::now();
        while !done().await {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}"
            );
            self.pump_once().await;
        }
    }
}

#[tokio::test]
async fn checkout_to_invoice_through_localstripe_shows_what_stripe_shows_and_reconciliation_repairs_drift() {
    let s = stack().await;
    let owner = s.app.user("owner").await;
    let tenant = s.app.tenant(&owner).await;
    let price = format!("plan_e2e_{}", s.unique);
    s.stripe
        .post(
            "plans",
            &form([
                ("id", Some(price.clone())),
                ("amount", Some("2900".to_owned())),
                ("currency", Some("usd".to_owned())),
                ("interval", Some("month".to_owned())),
                ("product[name]", Some("Starter".to_owned())),
                ("metadata[portal_plan]", Some("starter".to_owned())),
            ]),
            None,
        )
        .await
        .unwrap();
    sqlx::query("insert into billing_prices (id, plan_code, currency, unit_amount, interval) values ($1, 'starter', 'usd', 2900, 'month')")
        .bind(&price)
        .execute(&s.app.db.owner)
        .await
        .unwrap();

    // 1. Checkout through our API: the customer is created at Stripe for the tenant.
    let r = post("/billing/checkout-session")
        .bearer(&owner.token)
        .tenant(tenant)
        .header("idempotency-key", &s.unique)
        .json(json!({"price_id": price}))
        .send(&s.billing)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let session = r.json["id"].as_str().unwrap().to_owned();
    let customer = r.json["customer_id"].as_str().unwrap().to_owned();
    let at_stripe = s.stripe.get(&format!("customers/{customer}"), &[]).await.unwrap();
    assert_eq!(at_stripe["metadata"]["tenant_id"], tenant.to_string());

    // 2. The customer pays on Stripe's page.
    let done: Value = reqwest::Client::new()
        .post(format!("{}/_local/checkout/{session}/complete", localstripe_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subscription = done["subscription"].as_str().unwrap().to_owned();

    // 3. The webhooks arrive, are recorded, queued and applied.
    let subscription_route = || async {
        get("/billing/subscription")
            .bearer(&owner.token)
            .tenant(tenant)
            .send(&s.billing)
            .await
    };
    let invoices_route = || async {
        get("/billing/invoices")
            .bearer(&owner.token)
            .tenant(tenant)
            .send(&s.billing)
            .await
    };
    // Done when the API shows it and every event of the subscription was recorded (the
    // checkout's refetch can show the subscription before its own event arrives).
    let subscription_event_seen = || {
        let db = s.app.db.owner.clone();
        let id = subscription.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "select exists (select 1 from stripe_events where type = 'customer.subscription.created' \
                 and payload->'data'->'object'->>'id' = $1)",
            )
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    s.pump_until("the subscription, its paid invoice and its event", async || {
        let sub = subscription_route().await;
        let inv = invoices_route().await;
        sub.json["status"] == "active"
            && inv.json["items"]
                .as_array()
                .is_some_and(|i| i.iter().any(|i| i["status"] == "paid"))
            && subscription_event_seen().await
    })
    .await;

    // 4. The API shows what Stripe shows.
    let stripe_sub = s
        .stripe
        .get(&format!("subscriptions/{subscription}"), &[])
        .await
        .unwrap();
    let ours = subscription_route().await.json;
    assert_eq!(ours["subscription_id"], subscription.as_str());
    assert_eq!(ours["status"], stripe_sub["status"]);
    assert_eq!(ours["plan"]["code"], "starter");
    assert_eq!(ours["price_id"], price.as_str());
    assert_eq!(
        ours["current_period_end"],
        chrono::DateTime::from_timestamp(stripe_sub["current_period_end"].as_i64().unwrap(), 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert_eq!(ours["payment_method"]["last4"], "4242");
    let stripe_invoices = s
        .stripe
        .list_all("invoices", &[("customer", customer.as_str())])
        .await
        .unwrap();
    let ours = invoices_route().await.json;
    let mut theirs: Vec<(String, String, i64, i64)> = stripe_invoices
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["status"].as_str().unwrap().to_owned(),
                i["amount_paid"].as_i64().unwrap(),
                i["amount_due"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut mine: Vec<(String, String, i64, i64)> = ours["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["status"].as_str().unwrap().to_owned(),
                i["amount_paid"].as_i64().unwrap(),
                i["amount_due"].as_i64().unwrap(),
            )
        })
        .collect();
    theirs.sort();
    mine.sort();
    assert_eq!(mine, theirs);
    assert!(mine.iter().any(|i| i.2 == 2900), "the plan's price was paid: {mine:?}");

    // 5. Drift: an event the mirror never saw, and a row someone edited.
    let invoice_id = mine[0].0.clone();
    let owner_db = &s.app.db.owner;
    sqlx::query("update stripe_invoices set status = 'open', amount_paid = 0 where id = $1")
        .bind(&invoice_id)
        .execute(owner_db)
        .await
        .unwrap();
    let dropped: String = sqlx::query_scalar(
        "delete from stripe_events where type = 'customer.subscription.created' and payload->'data'->'object'->>'id' = $1 returning id",
    )
    .bind(&subscription)
    .fetch_one(owner_db)
    .await
    .unwrap();
    sqlx::query("delete from stripe_subscriptions where id = $1")
        .bind(&subscription)
        .execute(owner_db)
        .await
        .unwrap();
    assert_eq!(
        subscription_route().await.json["status"],
        "none",
        "the drift is visible"
    );

    let report = s.sync.syncer.reconcile(chrono::Utc::now().timestamp()).await.unwrap();
    assert!(report.events_applied >= 1, "{report:?}");
    let repaired: Vec<(String, String)> = sqlx::query_as(
        "select object_id, action from billing_reconcile_changes where run_id = $1 and object_id = any($2) order by object_id",
    )
    .bind(report.run_id)
    .bind(vec![dropped.clone(), invoice_id.clone()])
    .fetch_all(owner_db)
    .await
    .unwrap();
    assert_eq!(
        repaired,
        vec![
            (dropped, "event_applied".to_owned()),
            (invoice_id.clone(), "updated".to_owned())
        ],
        "the dropped event was applied from Stripe's event list and the edited invoice repaired"
    );
    assert_eq!(subscription_route().await.json["status"], "active");
    let inv = invoices_route().await.json;
    let fixed = inv["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == invoice_id.as_str())
        .unwrap();
    assert_eq!(fixed["status"], "paid");
    assert_eq!(fixed["amount_paid"], 2900);
    assert_eq!(
        sqlx::query_scalar::<_, i64>("select count(*) from billing_prices where id = $1")
            .bind(&price)
            .fetch_one(owner_db)
            .await
            .unwrap(),
        1
    );

    // A second run finds nothing left to repair for this tenant.
    let again = s.sync.syncer.reconcile(chrono::Utc::now().timestamp()).await.unwrap();
    let changed: i64 =
        sqlx::query_scalar("select count(*) from billing_reconcile_changes where run_id = $1 and object_id = any($2)")
            .bind(again.run_id)
            .bind(vec![subscription, invoice_id, customer])
            .fetch_one(owner_db)
            .await
            .unwrap();
    assert_eq!(changed, 0);
}
