//! The billing routes against a real Postgres, with Stripe's HTTP contract faked by wiremock
//! (localstripe is exercised end to end in functions/billing-sync/tests/localstripe.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{Value, json};
use shared::adapters::stripe_api::StripeApi;
use shared::domain::Role;
use shared::services::billing::sync::{StripeEvent, Syncer};
use testkit::{TestApp, TestUser, get, post};
use uuid::Uuid;
use wiremock::matchers::{body_string_contains, header, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

struct World {
    app: TestApp,
    router: axum::Router,
    stripe: MockServer,
    owner: TestUser,
    tenant: Uuid,
}

async fn world() -> World {
    let app = TestApp::new().await;
    let stripe = MockServer::start().await;
    let api = StripeApi::new(&stripe.uri(), "sk_test_billing").unwrap();
    let router = billing::router(billing::BillingState::new(app.core.clone(), api));
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    sqlx::query(
        "insert into billing_prices (id, plan_code, currency, unit_amount, interval) values \
         ('price_starter_m', 'starter', 'usd', 2900, 'month'), ('price_growth_m', 'growth', 'usd', 9900, 'month')",
    )
    .execute(&app.db.owner)
    .await
    .unwrap();
    World {
        app,
        router,
        stripe,
        owner,
        tenant,
    }
}

fn syncer(app: &TestApp) -> Syncer {
    Syncer {
        db: app.db.billing.clone(),
        stripe: None,
        livemode: None,
    }
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> StripeEvent {
    StripeEvent::from_value(json!({"id": id, "type": kind, "created": created, "livemode": false,
        "data": {"object": object}}))
    .unwrap()
}

#[tokio::test]
async fn plans_list_prices_in_minor_units_with_their_limits() {
    let w = world().await;
    let member = w.app.user("member").await;
    w.app.add_member(w.tenant, &member, Role::Viewer).await;
    let r = get("/billing/plans")
        .bearer(&member.token)
        .tenant(w.tenant)
        .send(&w.router)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let plans = r.json.as_array().unwrap();
    let codes: Vec<&str> = plans.iter().map(|p| p["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["free", "starter", "growth", "scale"]);
    assert_eq!(plans[0]["is_default"], true);
    assert_eq!(plans[0]["limits"]["seats"], 3);
    assert_eq!(plans[3]["limits"]["seats"], Value::Null, "unlimited");
    assert_eq!(
        plans[1]["prices"],
        json!([{"id": "price_starter_m", "currency": "usd", "unit_amount": 2900, "interval": "month"}])
    );
}

#[tokio::test]
async fn a_tenant_without_a_subscription_is_on_the_default_plan() {
    let w = world().await;
    let r = get("/billing/subscription")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .send(&w.router)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "none");
    assert_eq!(r.json["plan"]["code"], "free");
    assert_eq!(r.json["limits"]["sites"], 1);
    assert_eq!(r.json["payment_method"], Value::Null);
}

#[tokio::test]
async fn checkout_creates_the_customer_once_and_honours_idempotency_keys() {
    let w = world().await;
    let tenant = w.tenant.to_string();
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .and(header_exists("idempotency-key"))
        .and(header("stripe-version", "2025-04-30.basil"))
        .and(body_string_contains(
            format!("metadata%5Btenant_id%5D={tenant}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "cus_new", "object": "customer"})))
        .expect(1)
        .mount(&w.stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .and(body_string_contains("customer=cus_new"))
        .and(body_string_contains("line_items%5B0%5D%5Bprice%5D=price_growth_m"))
        .and(body_string_contains(format!("client_reference_id={tenant}").as_str()))
        .and(body_string_contains("mode=subscription"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "cs_test_1", "object": "checkout.session", "url": "https://checkout.stripe.test/c/cs_test_1"}),
        ))
        .expect(2)
        .mount(&w.stripe)
        .await;

    // The second checkout finds the customer and asks Stripe whether it already subscribed.
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .and(query_param("customer", "cus_new"))
        .and(query_param("status", "all"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"object": "list", "has_more": false, "data": [{"id": "sub_old", "status": "canceled"}]}),
        ))
        .expect(1)
        .mount(&w.stripe)
        .await;
    let checkout = |key: &str| {
        post("/billing/checkout-session")
            .bearer(&w.owner.token)
            .tenant(w.tenant)
            .header("idempotency-key", key)
            .json(json!({"price_id": "price_growth_m"}))
    };
    let first = checkout("k-1").send(&w.router).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.json["url"], "https://checkout.stripe.test/c/cs_test_1");
    assert_eq!(first.json["customer_id"], "cus_new");
    let replay = checkout("k-1").send(&w.router).await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.json, first.json);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    // A new attempt (new key) makes a new session for the same customer.
    let second = checkout("k-2").send(&w.router).await;
    assert_eq!(second.status, 201, "{}", second.text);
    let accounts: Vec<String> = sqlx::query_scalar("select stripe_customer_id from billing_accounts")
        .fetch_all(&w.app.db.owner)
        .await
        .unwrap();
    assert_eq!(accounts, ["cus_new"]);
}

#[tokio::test]
async fn checkout_refuses_bad_input_lower_roles_live_subscriptions_and_survives_stripe_failures() {
    let w = world().await;
    let member = w.app.user("member").await;
    w.app.add_member(w.tenant, &member, Role::Member).await;
    let body = json!({"price_id": "price_growth_m"});
    let r = post("/billing/checkout-session")
        .bearer(&member.token)
        .tenant(w.tenant)
        .json(body.clone())
        .send(&w.router)
        .await;
    r.problem(403);
    let r = post("/billing/checkout-session")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .json(json!({"price_id": "price_nope"}))
        .send(&w.router)
        .await;
    assert_eq!(r.error_fields(), ["price_id"]);
    let r = post("/billing/checkout-session")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .json(json!({"price_id": "price_growth_m", "quantity": 0}))
        .send(&w.router)
        .await;
    assert_eq!(r.error_fields(), ["quantity"]);

    // Stripe failing: 503, nothing recorded (no account, no idempotency record to replay).
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"error": {"message": "boom"}})))
        .mount(&w.stripe)
        .await;
    let r = post("/billing/checkout-session")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .header("idempotency-key", "k-fail")
        .json(body.clone())
        .send(&w.router)
        .await;
    let problem = r.problem(503);
    assert!(
        !problem.to_string().contains("boom"),
        "Stripe's message is logged, not shown"
    );
    assert_eq!(w.app.count("billing_accounts").await, 0);
    assert_eq!(w.app.count("idempotency_keys").await, 0);

    // Stripe knows of a live subscription the mirror has not seen yet (paid a moment ago).
    w.stripe.reset().await;
    sqlx::query("insert into billing_accounts (tenant_id, stripe_customer_id) values ($1, 'cus_known')")
        .bind(w.tenant)
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .and(query_param("customer", "cus_known"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"object": "list", "has_more": false, "data": [{"id": "sub_new", "status": "active"}]}),
        ))
        .mount(&w.stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "cs_never", "url": "https://x"})))
        .expect(0)
        .mount(&w.stripe)
        .await;
    let r = post("/billing/checkout-session")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .json(body.clone())
        .send(&w.router)
        .await;
    assert_eq!(r.problem(409)["type"], "/problems/already-subscribed");

    // And the mirror's live subscription answers without asking Stripe.
    w.app.subscribe(w.tenant, "starter").await;
    let r = post("/billing/checkout-session")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .json(body)
        .send(&w.router)
        .await;
    assert_eq!(r.problem(409)["type"], "/problems/already-subscribed");
}

#[tokio::test]
async fn the_portal_needs_a_billing_account() {
    let w = world().await;
    let r = post("/billing/portal-session")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .send(&w.router)
        .await;
    assert_eq!(r.problem(409)["type"], "/problems/no-billing-account");
    w.app.subscribe(w.tenant, "growth").await;
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .and(body_string_contains(
            format!("customer=cus_test_{}", w.tenant.simple()).as_str(),
        ))
        .and(body_string_contains("return_url=http%3A%2F%2Fportal.test%2Fbilling"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "bps_1", "url": "https://billing.stripe.test/p/1"})),
        )
        .expect(1)
        .mount(&w.stripe)
        .await;
    let r = post("/billing/portal-session")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .send(&w.router)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["url"], "https://billing.stripe.test/p/1");
}

fn invoice(id: &str, customer: &str, created: i64, amount: i64) -> Value {
    json!({"object": "invoice", "id": id, "customer": customer, "status": "paid", "currency": "eur",
        "amount_due": amount, "amount_paid": amount, "amount_remaining": 0, "total": amount,
        "number": format!("N-{id}"), "created": created, "period_start": created - 100, "period_end": created,
        "hosted_invoice_url": format!("https://invoice.stripe.test/{id}"),
        "invoice_pdf": format!("https://invoice.stripe.test/{id}/pdf"),
        "lines": {"object": "list", "has_more": false, "data": []}})
}

#[tokio::test]
async fn invoices_of_an_unknown_customer_wait_for_the_link_then_page_newest_first_for_that_tenant_only() {
    let w = world().await;
    let other_owner = w.app.user("other").await;
    let other = w.app.tenant(&other_owner).await;
    let sync = syncer(&w.app);
    for i in 0..5 {
        sync.apply(&event(
            &format!("evt_inv_{i}"),
            "invoice.paid",
            1000 + i,
            invoice(&format!("in_{i}"), "cus_late", 1000 + i, 100 * (i + 1)),
        ))
        .await
        .unwrap();
    }
    let list = |who: &TestUser, tenant: Uuid, query: &str| {
        get("/billing/invoices").bearer(&who.token).tenant(tenant).query(query)
    };
    let r = list(&w.owner, w.tenant, "limit=10").send(&w.router).await;
    assert_eq!(r.json["items"], json!([]), "no tenant knows cus_late yet");

    // The customer's own event names the tenant (metadata set when we create customers).
    let customer = json!({"object": "customer", "id": "cus_late", "email": "billing@example.test",
        "metadata": {"tenant_id": w.tenant.to_string()}, "default_source": "card_1",
        "sources": {"object": "list", "data": [{"id": "card_1", "object": "card", "brand": "Visa", "last4": "4242",
            "exp_month": 4, "exp_year": 2031}]}});
    sync.apply(&event("evt_cus", "customer.created", 900, customer))
        .await
        .unwrap();

    let page1 = list(&w.owner, w.tenant, "limit=2").send(&w.router).await;
    assert_eq!(page1.status, 200, "{}", page1.text);
    let ids = |r: &testkit::Resp| -> Vec<String> {
        r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&page1), ["in_4", "in_3"]);
    assert_eq!(page1.json["items"][0]["amount_paid"], 500);
    assert_eq!(page1.json["items"][0]["currency"], "eur");
    assert_eq!(
        page1.json["items"][0]["invoice_pdf"],
        "https://invoice.stripe.test/in_4/pdf"
    );
    let cursor = page1.json["next_cursor"].as_str().unwrap();
    let page2 = list(&w.owner, w.tenant, &format!("limit=2&cursor={cursor}"))
        .send(&w.router)
        .await;
    assert_eq!(ids(&page2), ["in_2", "in_1"]);

    // Another tenant sees none of it.
    let r = list(&other_owner, other, "limit=10").send(&w.router).await;
    assert_eq!(r.json["items"], json!([]));
    let r = get("/billing/subscription")
        .bearer(&other_owner.token)
        .tenant(other)
        .send(&w.router)
        .await;
    assert_eq!(r.json["payment_method"], Value::Null);
    // The tenant sees its card.
    let r = get("/billing/subscription")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .send(&w.router)
        .await;
    assert_eq!(r.json["payment_method"]["last4"], "4242");
}

#[tokio::test]
async fn the_subscription_summary_follows_the_synced_subscription() {
    let w = world().await;
    w.app.subscribe(w.tenant, "starter").await; // links cus_test_<tenant>
    let customer = format!("cus_test_{}", w.tenant.simple());
    let sub = json!({"object": "subscription", "id": "sub_growth", "customer": customer, "status": "trialing",
        "cancel_at_period_end": true, "trial_start": 1_800_000_000, "trial_end": 1_801_209_600,
        "created": 1_900_000_000,
        "items": {"object": "list", "has_more": false, "data": [{"id": "si_1", "price": {"id": "price_growth_m"},
            "quantity": 1, "current_period_start": 1_800_000_000, "current_period_end": 1_802_592_000}]}});
    syncer(&w.app)
        .apply(&event("evt_sub", "customer.subscription.created", 1_900_000_000, sub))
        .await
        .unwrap();
    let r = get("/billing/subscription")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .send(&w.router)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["subscription_id"], "sub_growth", "the newest live one");
    assert_eq!(r.json["status"], "trialing");
    assert_eq!(r.json["plan"]["code"], "growth");
    assert_eq!(r.json["limits"]["seats"], 20);
    assert_eq!(r.json["cancel_at_period_end"], true);
    assert_eq!(r.json["current_period_end"], "2027-02-14T08:00:00Z");
    assert_eq!(r.json["trial_end"], "2027-01-29T08:00:00Z");
}

#[tokio::test]
async fn seats_are_limited_by_the_plan_with_a_402_naming_the_limit() {
    let w = world().await;
    let settings = settings::router(w.app.core.clone());
    let invite = |email: &str| {
        post("/settings/team/invitations")
            .bearer(&w.owner.token)
            .tenant(w.tenant)
            .json(json!({"email": email, "role": "member"}))
    };
    // Free: 3 seats = the owner and two invitations.
    assert_eq!(invite("a@example.test").send(&settings).await.status, 201);
    assert_eq!(invite("b@example.test").send(&settings).await.status, 201);
    assert_eq!(
        invite("b@example.test").send(&settings).await.status,
        201,
        "re-inviting replaces"
    );
    let before = w.app.count("invitations").await;
    let r = invite("c@example.test").send(&settings).await;
    let problem = r.problem(402);
    assert_eq!(problem["type"], "/problems/plan-limit");
    assert_eq!(
        problem["limit"],
        json!({"name": "seats", "allowed": 3, "used": 3, "plan": "free"})
    );
    assert_eq!(w.app.count("invitations").await, before, "nothing created");
    w.app.subscribe(w.tenant, "starter").await;
    assert_eq!(invite("c@example.test").send(&settings).await.status, 201);
}

/// The world's tenant on the starter plan beside another tenant on growth; the owner's scope.
async fn beside_another_subscribed_tenant(w: &World) -> shared::domain::Scope {
    use shared::domain::{Actor, Scope};
    let other_owner = w.app.user("other").await;
    let other = w.app.tenant(&other_owner).await;
    w.app.subscribe(w.tenant, "starter").await;
    w.app.subscribe(other, "growth").await;
    Scope {
        actor: Actor::User {
            user_id: w.owner.id,
            email: w.owner.email.clone(),
        },
        tenant: Some((w.tenant, Role::Owner)),
        request_id: "rls-test".into(),
    }
}

#[tokio::test]
async fn the_application_role_reads_only_its_tenants_mirror_and_writes_none_of_it() {
    let w = world().await;
    let scope = beside_another_subscribed_tenant(&w).await;
    let mut tx = shared::adapters::pg::begin(&w.app.db.app, &scope).await.unwrap();
    let visible: Vec<String> = sqlx::query_scalar("select customer_id from stripe_subscriptions")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        visible,
        [format!("cus_test_{}", w.tenant.simple())],
        "a forgotten filter still sees one tenant"
    );
    let accounts: i64 = sqlx::query_scalar("select count(*) from billing_accounts")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(accounts, 1);
    tx.rollback().await.unwrap();
    for statement in [
        "update stripe_subscriptions set status = 'canceled'",
        "insert into stripe_invoices (id, amount_due, amount_paid, amount_remaining, raw, gate_terminal, gate_created, gate_rank, gate_source) values ('in_x', 0, 0, 0, '{}', false, 0, 0, 'x')",
        "select count(*) from stripe_events",
        "delete from billing_accounts",
    ] {
        let mut tx = shared::adapters::pg::begin(&w.app.db.app, &scope).await.unwrap();
        let result = sqlx::query(statement).execute(&mut *tx).await;
        assert!(result.is_err(), "portal_app may not: {statement}");
    }
}

#[tokio::test]
async fn a_temp_table_named_like_a_real_one_cannot_widen_what_a_tenant_sees() {
    let w = world().await;
    let scope = beside_another_subscribed_tenant(&w).await;
    // The attack: a temp billing_accounts naming the other tenant's customer, which
    // app_current_customer() would read instead of the real table.
    for pool in [&w.app.db.app, &w.app.db.billing] {
        let mut tx = shared::adapters::pg::begin(pool, &scope).await.unwrap();
        let created = sqlx::query("create temp table billing_accounts (tenant_id uuid, stripe_customer_id text)")
            .execute(&mut *tx)
            .await;
        let code = created
            .unwrap_err()
            .into_database_error()
            .unwrap()
            .code()
            .unwrap()
            .into_owned();
        assert_eq!(code, "42501", "the application roles may not create temporary tables");
    }
    // Every helper of ours runs with a pinned search_path, pg_temp last.
    let unpinned: Vec<String> = sqlx::query_scalar(
        "select p.proname::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
         where n.nspname = 'public' and p.proname like 'app\\_%' \
           and not ('search_path=public, pg_temp' = any(coalesce(p.proconfig, '{}')))",
    )
    .fetch_all(&w.app.db.owner)
    .await
    .unwrap();
    assert!(
        unpinned.is_empty(),
        "functions without a pinned search_path: {unpinned:?}"
    );
    let mut tx = shared::adapters::pg::begin(&w.app.db.app, &scope).await.unwrap();
    let visible: Vec<String> = sqlx::query_scalar("select customer_id from stripe_subscriptions")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(visible, [format!("cus_test_{}", w.tenant.simple())]);
}
