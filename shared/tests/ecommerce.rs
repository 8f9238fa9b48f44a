//! The unified e-commerce model against real Postgres: the channels' JSON mapped (the real
//! Shopify and WooCommerce payloads when ../shared/fixtures is present, and data of our own)
//! and mirrored newest-wins, exact to the cent, per tenant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use serde_json::{Value, json};
use shared::adapters::pg;
use shared::domain::Scope;
use shared::services::ecommerce::store::{self, Applied};

const WRITTEN: Applied = Applied { written: 1, stale: 0 };
const STALE: Applied = Applied { written: 0, stale: 1 };
use shared::services::ecommerce::OrderStatus;
use shared::services::providers::{shopify, woocommerce};
use testkit::TestApp;

fn fixture(dir: &str, name: &str) -> Option<Value> {
    let path = testkit::shared_fixtures(dir)?.join(name);
    Some(serde_json::from_slice(&std::fs::read(path).ok()?).unwrap())
}

#[tokio::test]
async fn orders_and_products_mirror_newest_wins_exactly_and_per_tenant() {
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    let other = app.tenant(&owner).await;
    let scope = Scope::worker(tenant, "", "test".into());

    let created = json!({
        "id": 727, "number": "727", "status": "processing", "currency": "USD", "customer_id": 25,
        "total": "29.35", "total_tax": "1.35", "shipping_total": "10.00", "discount_total": "0.00",
        "date_created_gmt": "2017-03-22T19:28:02", "date_modified_gmt": "2017-03-22T19:28:02",
        "line_items": [{"id": 315, "name": "Woo Single #1", "product_id": 93, "quantity": 2,
                        "subtotal": "6.00", "total": "6.00", "price": 3}]
    });
    let mut completed = created.clone();
    completed["status"] = json!("completed");
    completed["date_modified_gmt"] = json!("2017-03-22T19:30:35");

    let mut tx = pg::begin(&app.core.db, &scope).await.unwrap();
    let newer = woocommerce::order(&completed).unwrap().unwrap();
    let older = woocommerce::order(&created).unwrap().unwrap();
    assert_eq!(
        store::orders(&mut tx, tenant, std::slice::from_ref(&newer))
            .await
            .unwrap(),
        WRITTEN
    );
    // The older version arriving late (a retried webhook, an overlapping page) changes nothing.
    assert_eq!(
        store::orders(&mut tx, tenant, std::slice::from_ref(&older))
            .await
            .unwrap(),
        STALE
    );
    // The same version again: written (idempotent), still one order with one line.
    assert_eq!(
        store::orders(&mut tx, tenant, std::slice::from_ref(&newer))
            .await
            .unwrap(),
        WRITTEN
    );
    // One batch holding both versions (a page read while the order changed): the newest wins.
    assert_eq!(
        store::orders(&mut tx, tenant, &[newer.clone(), older.clone()])
            .await
            .unwrap(),
        WRITTEN
    );
    tx.commit().await.unwrap();
    let (status, raw, total, lines): (String, String, i64, i64) = sqlx::query_as(
        "select status, raw_status, total_minor, (select count(*) from ecom_order_lines l where l.order_id = o.id) \
         from ecom_orders o where tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&app.db.owner)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), raw.as_str(), total, lines),
        ("fulfilled", "completed", 2935, 1)
    );

    // Another tenant's transaction sees none of it.
    let theirs = Scope::worker(other, "", "test".into());
    let mut tx = pg::begin(&app.core.db, &theirs).await.unwrap();
    let seen: i64 = sqlx::query_scalar("select count(*) from ecom_orders")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    tx.rollback().await.unwrap();

    // A product with a 64-bit id and its variants.
    let product = json!({
        "id": 788032119674292922_u64, "title": "Example T-Shirt", "status": "active", "vendor": "Acme",
        "tags": "example, mens", "updated_at": "2026-01-01T00:00:00Z",
        "variants": [{"id": 642667041472713922_u64, "title": "Small", "price": "19.99", "inventory_quantity": 75},
                     {"id": 757650484644203962_u64, "title": "Medium", "price": "19.99", "inventory_quantity": 50}]
    });
    let mut tx = pg::begin(&app.core.db, &scope).await.unwrap();
    let p = shopify::product(&product, "USD").unwrap();
    store::products(&mut tx, tenant, std::slice::from_ref(&p))
        .await
        .unwrap();
    store::products(&mut tx, tenant, std::slice::from_ref(&p))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let rows: Vec<(String, String, i64, Option<i32>)> = sqlx::query_as(
        "select p.external_id, v.external_id, v.price_minor, v.inventory_quantity from ecom_variants v \
         join ecom_products p on p.id = v.product_id order by v.external_id",
    )
    .fetch_all(&app.db.owner)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (
                "788032119674292922".to_owned(),
                "642667041472713922".to_owned(),
                1999,
                Some(75)
            ),
            (
                "788032119674292922".to_owned(),
                "757650484644203962".to_owned(),
                1999,
                Some(50)
            ),
        ]
    );

    // A newer version without the Medium variant: the mirror loses it too.
    let mut newer = product.clone();
    newer["updated_at"] = json!("2026-01-02T00:00:00Z");
    newer["variants"].as_array_mut().unwrap().pop();
    let mut tx = pg::begin(&app.core.db, &scope).await.unwrap();
    let p = shopify::product(&newer, "USD").unwrap();
    store::products(&mut tx, tenant, std::slice::from_ref(&p))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let left: Vec<String> = sqlx::query_scalar("select external_id from ecom_variants where tenant_id = $1")
        .bind(tenant)
        .fetch_all(&app.db.owner)
        .await
        .unwrap();
    assert_eq!(left, ["642667041472713922"]);
}

#[tokio::test]
async fn the_real_payloads_map_and_mirror() {
    let Some(order) = fixture("shopify", "orders_create__shopify-docs-example_2026-04.json") else {
        eprintln!("../shared/fixtures is absent: the real payloads are not checked here");
        return;
    };
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    let scope = Scope::worker(tenant, "", "test".into());
    let mut tx = pg::begin(&app.core.db, &scope).await.unwrap();

    let o = shopify::order(&order).unwrap();
    // The GID, not the rounded number the docs example carries.
    assert_eq!(o.external_id, "820982911946154508");
    assert_eq!(o.status, OrderStatus::Cancelled);
    assert_eq!(o.total_minor, 40495);
    assert_eq!(o.lines.len(), order["line_items"].as_array().unwrap().len());
    store::orders(&mut tx, tenant, std::slice::from_ref(&o)).await.unwrap();

    let product = fixture("shopify", "products_update__shopify-docs-example_2026-04.json").unwrap();
    let p = shopify::product(&product, "USD").unwrap();
    assert_eq!(p.external_id, "788032119674292922");
    assert_eq!(p.variants[0].price_minor, 1999);
    store::products(&mut tx, tenant, std::slice::from_ref(&p))
        .await
        .unwrap();

    let created = fixture(
        "woocommerce",
        "order.created__wc-rest-docs-create-order-response_v3.json",
    )
    .unwrap();
    let updated = fixture(
        "woocommerce",
        "order.updated__wc-rest-docs-update-order-response_v3.json",
    )
    .unwrap();
    let c = woocommerce::order(&created).unwrap().unwrap();
    let u = woocommerce::order(&updated).unwrap().unwrap();
    assert_eq!((c.status, u.status), (OrderStatus::Paid, OrderStatus::Fulfilled));
    assert_eq!(c.total_minor, 2935);
    assert_eq!(
        store::orders(&mut tx, tenant, std::slice::from_ref(&u)).await.unwrap(),
        WRITTEN
    );
    assert_eq!(
        store::orders(&mut tx, tenant, std::slice::from_ref(&c)).await.unwrap(),
        STALE
    );
    let wp = fixture(
        "woocommerce",
        "product.updated__wc-rest-docs-update-product-response_v3.json",
    )
    .unwrap();
    let p = woocommerce::product(&wp, "USD").unwrap();
    assert_eq!((p.external_id.as_str(), p.variants[0].price_minor), ("794", 2454));
    store::products(&mut tx, tenant, std::slice::from_ref(&p))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let orders: Vec<(String, String, String)> =
        sqlx::query_as("select channel, external_id, status from ecom_orders where tenant_id = $1 order by channel")
            .bind(tenant)
            .fetch_all(&app.db.owner)
            .await
            .unwrap();
    assert_eq!(
        orders,
        [
            (
                "shopify".to_owned(),
                "820982911946154508".to_owned(),
                "cancelled".to_owned()
            ),
            ("woocommerce".to_owned(), "727".to_owned(), "fulfilled".to_owned()),
        ]
    );
}
