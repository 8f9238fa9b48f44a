//! Shop sync against faithful fakes of the Shopify Admin REST and WooCommerce REST v3 APIs
//! (wiremock, shaped like the real payloads): full and incremental passes, cursor and numbered
//! pages, rate limits, and a pass that fails mid-way resuming at its next page.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use serde_json::{Map, Value, json};
use shared::domain::Scope;
use shared::services::connectors::Connectors;
use shared::services::connectors::catalog::Kind;
use shared::services::ecommerce::sync::{SyncOptions, sync};
use std::time::Duration;
use testkit::TestApp;
use uuid::Uuid;
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn order(n: u64) -> Value {
    json!({
        "id": 5_000_000_000_000_000_000_u64 + n,
        "admin_graphql_api_id": format!("gid://shopify/Order/{}", 5_000_000_000_000_000_000_u64 + n),
        "name": format!("#{}", 1000 + n), "currency": "EUR", "financial_status": "paid",
        "total_price": format!("{n}.99"), "subtotal_price": format!("{n}.99"), "total_tax": "0.00",
        "total_discounts": "0.00", "created_at": format!("2026-11-01T10:{n:02}:00Z"),
        "updated_at": format!("2026-11-02T10:{n:02}:00Z"),
        "line_items": [{"id": 7_000_000_000_000_000_000_u64 + n, "title": "Shirt", "quantity": 1, "price": format!("{n}.99")}]
    })
}

async fn setup(app: &TestApp, kind: Kind, settings: Value) -> (Connectors, Scope, Uuid) {
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    let scope = Scope::worker(tenant, "", "test".into());
    let svc = testkit::connectors(&app.core.db, []);
    let body: Map<String, Value> = settings.as_object().unwrap().clone();
    svc.put(&scope, kind, body, None).await.unwrap();
    (svc, scope, tenant)
}

fn quick() -> SyncOptions {
    SyncOptions {
        page_size: 2,
        tries: 2,
        max_wait: Duration::from_millis(10),
    }
}

async fn count(app: &TestApp, tenant: Uuid, table: &str) -> i64 {
    sqlx::query_scalar(&format!("select count(*) from {table} where tenant_id = $1"))
        .bind(tenant)
        .fetch_one(&app.db.owner)
        .await
        .unwrap()
}

async fn mount_shopify_basics(shop: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/shop.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"shop": {"id": 548380009, "currency": "EUR"}})))
        .mount(shop)
        .await;
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/products.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"products": [{
            "id": 788032119674292922_u64, "title": "Example T-Shirt", "status": "active", "tags": "a, b",
            "updated_at": "2026-11-02T09:00:00Z",
            "variants": [{"id": 642667041472713922_u64, "title": "Small", "price": "19.99", "inventory_quantity": 75}]}]})))
        .mount(shop)
        .await;
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/customers.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"customers": [{
            "id": 115310627314723954_u64, "email": "john@example.com", "first_name": "John", "last_name": "Smith",
            "created_at": "2026-10-01T00:00:00Z", "updated_at": "2026-11-01T00:00:00Z",
            "default_address": {"city": "Ottawa", "country_code": "CA"}}]})))
        .mount(shop)
        .await;
}

fn page(shop: &MockServer, orders: Vec<Value>, next: Option<&str>) -> ResponseTemplate {
    let mut r = ResponseTemplate::new(200)
        .set_body_json(json!({"orders": orders}))
        .insert_header("X-Shopify-Shop-Api-Call-Limit", "39/40");
    if let Some(next) = next {
        r = r.insert_header(
            "Link",
            format!(
                "<{}/admin/api/2025-01/orders.json?limit=2&page_info={next}>; rel=\"next\"",
                shop.uri()
            )
            .as_str(),
        );
    }
    r
}

#[tokio::test]
async fn shopify_full_pass_resumes_after_a_failure_then_goes_incremental() {
    let app = TestApp::new().await;
    let shop = MockServer::start().await;
    let (svc, scope, tenant) = setup(
        &app,
        Kind::Shopify,
        json!({"store_url": shop.uri(), "access_token": "shpat_0000000000000"}),
    )
    .await;
    mount_shopify_basics(&shop).await;
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/orders.json"))
        .and(query_param("status", "any"))
        .and(query_param_is_missing("page_info"))
        .and(query_param_is_missing("updated_at_min"))
        .respond_with(page(&shop, vec![order(1), order(2)], Some("p2")))
        .expect(1)
        .mount(&shop)
        .await;
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/orders.json"))
        .and(query_param("page_info", "p2"))
        .respond_with(page(&shop, vec![order(3), order(4)], Some("p3")))
        .expect(1)
        .mount(&shop)
        .await;
    // Page 3: the shop fails (every try).
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/orders.json"))
        .and(query_param("page_info", "p3"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(2)
        .mount(&shop)
        .await;
    let err = sync(&svc, &scope, Kind::Shopify, &quick()).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 502"), "{err}");
    assert_eq!(count(&app, tenant, "ecom_orders").await, 4);

    // The shop is back: a 429 first (Retry-After honoured), then page 3. Pages 1 and 2 are not
    // read again (their mocks expect one call each).
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/orders.json"))
        .and(query_param("page_info", "p3"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0.01"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&shop)
        .await;
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/orders.json"))
        .and(query_param("page_info", "p3"))
        .respond_with(page(&shop, vec![order(5)], None))
        .with_priority(2)
        .mount(&shop)
        .await;
    let report = sync(&svc, &scope, Kind::Shopify, &quick()).await.unwrap();
    let orders = &report.iter().find(|(r, _)| *r == "orders").unwrap().1;
    assert_eq!((orders.pages, orders.written), (1, 1));
    assert_eq!(count(&app, tenant, "ecom_orders").await, 5);
    assert_eq!(count(&app, tenant, "ecom_order_lines").await, 5);
    assert_eq!(count(&app, tenant, "ecom_products").await, 1);
    assert_eq!(count(&app, tenant, "ecom_customers").await, 1);
    let ids: Vec<(String, i64)> =
        sqlx::query_as("select external_id, total_minor from ecom_orders where tenant_id = $1 order by external_id")
            .bind(tenant)
            .fetch_all(&app.db.owner)
            .await
            .unwrap();
    assert_eq!(ids[0], ("5000000000000000001".to_owned(), 199));
    assert_eq!(ids[4], ("5000000000000000005".to_owned(), 599));

    // The next pass asks only for changes since the newest seen (10:05 less the 5 minutes).
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/orders.json"))
        .and(query_param("updated_at_min", "2026-11-02T10:00:00Z"))
        .respond_with(page(&shop, vec![order(5)], None))
        .expect(1)
        .mount(&shop)
        .await;
    let report = sync(&svc, &scope, Kind::Shopify, &quick()).await.unwrap();
    let orders = &report.iter().find(|(r, _)| *r == "orders").unwrap().1;
    assert_eq!((orders.fetched, orders.written, orders.unchanged), (1, 1, 0));
    assert_eq!(count(&app, tenant, "ecom_orders").await, 5);
}

#[tokio::test]
async fn woocommerce_numbered_pages_and_drafts() {
    let app = TestApp::new().await;
    let store = MockServer::start().await;
    let (svc, scope, tenant) = setup(
        &app,
        Kind::Woocommerce,
        json!({"store_url": store.uri(), "consumer_key": "ck_00000000", "consumer_secret": "cs_00000000"}),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/wp-json/wc/v3/settings/general/woocommerce_currency"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "woocommerce_currency", "value": "USD"})))
        .mount(&store)
        .await;
    let woo_order = |id: u64, status: &str| {
        json!({"id": id, "number": id.to_string(), "status": status, "currency": "USD", "total": "29.35",
               "total_tax": "1.35", "shipping_total": "10.00", "discount_total": "0.00", "customer_id": 0,
               "date_created_gmt": "2026-11-01T10:00:00", "date_modified_gmt": format!("2026-11-01T10:{:02}:00", id % 60),
               "line_items": [{"id": id * 10, "name": "Woo", "product_id": 93, "quantity": 1, "subtotal": "18.00",
                               "total": "18.00", "price": 18}]})
    };
    for (n, orders) in [
        (1, vec![woo_order(727, "processing"), woo_order(728, "checkout-draft")]),
        (2, vec![woo_order(729, "completed")]),
    ] {
        Mock::given(method("GET"))
            .and(path("/wp-json/wc/v3/orders"))
            .and(query_param("page", n.to_string().as_str()))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(Value::Array(orders))
                    .insert_header("X-WP-Total", "3")
                    .insert_header("X-WP-TotalPages", "2"),
            )
            .expect(1)
            .mount(&store)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/wp-json/wc/v3/customers"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .insert_header("X-WP-TotalPages", "0"),
        )
        .mount(&store)
        .await;
    // A variable product lists its variations by id only; they are read from their own pages.
    Mock::given(method("GET"))
        .and(path("/wp-json/wc/v3/products"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([
                    {"id": 93, "name": "Ship Your Idea", "type": "variable", "status": "publish", "sku": "",
                     "price": "", "variations": [130, 131, 132], "date_created_gmt": "2026-11-01T10:00:00",
                     "date_modified_gmt": "2026-11-01T10:00:00"},
                    {"id": 94, "name": "Poster", "type": "simple", "status": "publish", "sku": "POSTER",
                     "price": "12.50", "stock_quantity": 3, "date_created_gmt": "2026-11-01T10:00:00",
                     "date_modified_gmt": "2026-11-01T10:00:00"}]))
                .insert_header("X-WP-TotalPages", "1"),
        )
        .mount(&store)
        .await;
    let variation = |id: u64, color: &str, price: &str| {
        json!({"id": id, "sku": format!("SHIP-{color}"), "price": price, "stock_quantity": 5,
               "attributes": [{"id": 6, "name": "Color", "option": color}]})
    };
    for (n, variations) in [
        (
            1,
            vec![variation(130, "Black", "20.00"), variation(131, "Green", "20.00")],
        ),
        (2, vec![variation(132, "Red", "24.99")]),
    ] {
        Mock::given(method("GET"))
            .and(path("/wp-json/wc/v3/products/93/variations"))
            .and(query_param("page", n.to_string().as_str()))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(Value::Array(variations))
                    .insert_header("X-WP-TotalPages", "2"),
            )
            .expect(1)
            .mount(&store)
            .await;
    }
    let report = sync(&svc, &scope, Kind::Woocommerce, &quick()).await.unwrap();
    let variants: Vec<(String, String, String, i64)> = sqlx::query_as(
        "select p.external_id, v.title, v.sku, v.price_minor from ecom_variants v join ecom_products p \
         on p.id = v.product_id where v.tenant_id = $1 order by v.external_id",
    )
    .bind(tenant)
    .fetch_all(&app.db.owner)
    .await
    .unwrap();
    let expected = [
        ("93", "Black", "SHIP-Black", 2000),
        ("93", "Green", "SHIP-Green", 2000),
        ("93", "Red", "SHIP-Red", 2499),
        ("94", "Poster", "POSTER", 1250),
    ]
    .map(|(p, t, s, m)| (p.to_owned(), t.to_owned(), s.to_owned(), m));
    assert_eq!(variants, expected);
    let orders = &report.iter().find(|(r, _)| *r == "orders").unwrap().1;
    assert_eq!((orders.pages, orders.fetched, orders.written), (2, 3, 2));
    let statuses: Vec<(String, String)> =
        sqlx::query_as("select external_id, status from ecom_orders where tenant_id = $1 order by external_id")
            .bind(tenant)
            .fetch_all(&app.db.owner)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        [
            ("727".to_owned(), "paid".to_owned()),
            ("729".to_owned(), "fulfilled".to_owned())
        ]
    );
}

#[tokio::test]
async fn webhook_deliveries_apply_once_newest_wins() {
    use shared::services::connectors::webhooks::DeliveryMessage;
    use shared::services::ecommerce::sync::{DeliveryOutcome, apply_delivery};
    let app = TestApp::new().await;
    let shop = MockServer::start().await;
    let (svc, _scope, tenant) = setup(
        &app,
        Kind::Shopify,
        json!({"store_url": shop.uri(), "access_token": "shpat_0000000000000"}),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/shop.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"shop": {"currency": "CAD"}})))
        .expect(1)
        .mount(&shop)
        .await;
    let deliver = |topic: &'static str, body: Value| {
        let app = &app;
        async move {
            let id = Uuid::now_v7();
            sqlx::query(
                "insert into connector_deliveries (id, tenant_id, kind, delivery_id, body_sha256, topic, body) \
                 values ($1, $2, 'shopify', $3, sha256($4::bytea), $5, $6)",
            )
            .bind(id)
            .bind(tenant)
            .bind(id.to_string())
            .bind(body.to_string().into_bytes())
            .bind(topic)
            .bind(body.to_string())
            .execute(&app.db.owner)
            .await
            .unwrap();
            DeliveryMessage {
                tenant_id: tenant,
                kind: Kind::Shopify,
                delivery: id,
            }
        }
    };
    let opts = quick();
    let mut newer = order(7);
    newer["financial_status"] = json!("refunded");
    let first = deliver("orders/updated", newer).await;
    assert_eq!(
        apply_delivery(&svc, &first, &opts).await.unwrap(),
        DeliveryOutcome::Applied
    );
    assert_eq!(
        apply_delivery(&svc, &first, &opts).await.unwrap(),
        DeliveryOutcome::AlreadyApplied
    );
    let mut older = order(7);
    older["updated_at"] = json!("2026-11-01T00:00:00Z");
    let late = deliver("orders/create", older).await;
    assert_eq!(
        apply_delivery(&svc, &late, &opts).await.unwrap(),
        DeliveryOutcome::Unchanged
    );
    let status: String = sqlx::query_scalar("select status from ecom_orders where tenant_id = $1")
        .bind(tenant)
        .fetch_one(&app.db.owner)
        .await
        .unwrap();
    assert_eq!(status, "refunded");
    // A product: the shop's currency is read once and kept.
    let product = json!({"id": 1, "title": "Mug", "updated_at": "2026-11-02T00:00:00Z",
                         "variants": [{"id": 2, "title": "Default", "price": "12.50"}]});
    for minute in 0..2 {
        let mut p = product.clone();
        p["updated_at"] = json!(format!("2026-11-02T00:0{minute}:00Z"));
        let m = deliver("products/update", p).await;
        assert_eq!(apply_delivery(&svc, &m, &opts).await.unwrap(), DeliveryOutcome::Applied);
    }
    let (price, currency): (i64, String) =
        sqlx::query_as("select price_minor, currency from ecom_variants where tenant_id = $1")
            .bind(tenant)
            .fetch_one(&app.db.owner)
            .await
            .unwrap();
    assert_eq!((price, currency.as_str()), (1250, "CAD"));
    // A body that cannot be mapped is kept with its reason and not retried.
    let bad = deliver("orders/create", json!({"id": 9, "currency": "EURO"})).await;
    assert_eq!(
        apply_delivery(&svc, &bad, &opts).await.unwrap(),
        DeliveryOutcome::Invalid
    );
    let error: Option<String> = sqlx::query_scalar("select error from connector_deliveries where id = $1")
        .bind(bad.delivery)
        .fetch_one(&app.db.owner)
        .await
        .unwrap();
    assert!(error.unwrap().contains("currency"));
    // Deleting, and the app's uninstall marking the connector.
    let del = deliver("products/delete", json!({"id": 1})).await;
    apply_delivery(&svc, &del, &opts).await.unwrap();
    let gone = deliver("app/uninstalled", json!({"id": 548380009})).await;
    apply_delivery(&svc, &gone, &opts).await.unwrap();
    let (products, status): (i64, String) = sqlx::query_as(
        "select (select count(*) from ecom_products where tenant_id = $1), \
         (select status from connectors where tenant_id = $1 and kind = 'shopify')",
    )
    .bind(tenant)
    .fetch_one(&app.db.owner)
    .await
    .unwrap();
    assert_eq!((products, status.as_str()), (0, "error"));
}

#[tokio::test]
async fn applied_webhook_bodies_are_pruned_after_their_retention_and_their_hash_outlives_them() {
    use shared::services::connectors::webhooks::{
        BODY_RETENTION_DAYS, DeliveryMessage, ROW_RETENTION_DAYS, prune_deliveries,
    };
    use shared::services::ecommerce::sync::{DeliveryOutcome, apply_delivery};
    let app = TestApp::new().await;
    let (svc, _scope, tenant) = setup(
        &app,
        Kind::Shopify,
        json!({"store_url": "http://127.0.0.1:9", "access_token": "shpat_0000000000000"}),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = Uuid::now_v7();
        let body = order(n).to_string();
        sqlx::query(
            "insert into connector_deliveries (id, tenant_id, kind, delivery_id, body_sha256, topic, body) \
             values ($1, $2, 'shopify', $3, sha256($4::bytea), 'orders/create', $5)",
        )
        .bind(id)
        .bind(tenant)
        .bind(format!("d{n}"))
        .bind(body.as_bytes())
        .bind(&body)
        .execute(&app.db.owner)
        .await
        .unwrap();
        ids.push(id);
    }
    let message = |id: Uuid| DeliveryMessage {
        tenant_id: tenant,
        kind: Kind::Shopify,
        delivery: id,
    };
    // Two applied (one 31 days ago, one today), one never applied (pending: always kept).
    for id in &ids[..2] {
        assert_eq!(
            apply_delivery(&svc, &message(*id), &quick()).await.unwrap(),
            DeliveryOutcome::Applied
        );
    }
    let set_applied = |id: Uuid, days: i64| {
        let app = &app;
        async move {
            sqlx::query(
                "update connector_deliveries set applied_at = now() - make_interval(days => $2::int) where id = $1",
            )
            .bind(id)
            .bind(days as i32)
            .execute(&app.db.owner)
            .await
            .unwrap();
        }
    };
    set_applied(ids[0], BODY_RETENTION_DAYS + 1).await;
    let now = chrono::Utc::now();
    let pruned = prune_deliveries(&app.core.db, now).await.unwrap();
    assert_eq!((pruned.bodies_removed, pruned.rows_deleted), (1, 0));
    let bodies: Vec<(Uuid, Option<String>, bool)> = sqlx::query_as(
        "select id, body, pruned_at is not null from connector_deliveries where tenant_id = $1 order by id",
    )
    .bind(tenant)
    .fetch_all(&app.db.owner)
    .await
    .unwrap();
    assert_eq!(
        bodies.iter().map(|(_, b, p)| (b.is_some(), *p)).collect::<Vec<_>>(),
        [(false, true), (true, false), (true, false)]
    );
    // The pruned delivery's message again (an SQS redelivery): applied already, nothing read.
    assert_eq!(
        apply_delivery(&svc, &message(ids[0]), &quick()).await.unwrap(),
        DeliveryOutcome::AlreadyApplied
    );
    // The hash outlives the body: the provider's late retry of it is still a duplicate.
    let hash_kept: bool = sqlx::query_scalar(
        "select exists (select 1 from connector_deliveries where id = $1 and body_sha256 = sha256($2::bytea))",
    )
    .bind(ids[0])
    .bind(order(0).to_string().into_bytes())
    .fetch_one(&app.db.owner)
    .await
    .unwrap();
    assert!(hash_kept);
    // After the row retention the row goes too; nothing pending is ever touched.
    set_applied(ids[0], ROW_RETENTION_DAYS + 1).await;
    let pruned = prune_deliveries(&app.core.db, now).await.unwrap();
    assert_eq!((pruned.bodies_removed, pruned.rows_deleted), (0, 1));
    assert_eq!(count(&app, tenant, "connector_deliveries").await, 2);
    let pending: Option<String> = sqlx::query_scalar("select body from connector_deliveries where id = $1")
        .bind(ids[2])
        .fetch_one(&app.db.owner)
        .await
        .unwrap();
    assert!(pending.is_some());
}
