//! Connector benchmark, one run: a faked Shopify (wiremock on loopback) serves N orders
//! (default 10,000) in Admin REST cursor pages of 250 with Link headers; one incremental pass of
//! `shared::services::ecommerce::sync` brings them into the mirrors (orders with lines, each
//! page committed with the pass's position), timed, vs the baseline of reading and parsing the
//! same pages only (no database) in the same run. Prints orders/s of each and the ratio.
//!
//! `summary [ORDERS]`: `GET /ecommerce/summary` p50/p99 over a year of orders (default 100,000)
//! vs the raw SQL it runs (`summary.rs`).
//!
//! Usage: cargo run --release -p bench-connectors [-- ORDERS | summary ORDERS]
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use serde_json::{Map, Value, json};
use shared::domain::Scope;
use shared::services::connectors::catalog::Kind;
use shared::services::ecommerce::sync::{SyncOptions, sync};
use std::time::{Duration, Instant};
use testkit::TestApp;
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PAGE: usize = 250;

fn order(n: usize) -> Value {
    let id = 5_000_000_000_000_000_000_u64 + n as u64;
    json!({
        "id": id, "admin_graphql_api_id": format!("gid://shopify/Order/{id}"), "name": format!("#{n}"),
        "email": format!("buyer{n}@example.com"), "currency": "EUR", "financial_status": "paid",
        "fulfillment_status": if n.is_multiple_of(3) { Value::from("fulfilled") } else { Value::Null },
        "total_price": format!("{}.{:02}", 20 + n % 500, n % 100), "subtotal_price": "19.99", "total_tax": "3.19",
        "total_discounts": "0.00", "total_shipping_price_set": {"shop_money": {"amount": "4.90", "currency_code": "EUR"}},
        "created_at": "2026-11-01T00:00:00Z", "updated_at": format!("2026-11-01T{:02}:{:02}:{:02}Z", (n / 3600) % 24, (n / 60) % 60, n % 60),
        "customer": {"id": 115310627314723954_u64 + n as u64 % 1000},
        "line_items": [
            {"id": id * 2 % 9_000_000_000_000_000_000, "product_id": 632910392, "variant_id": 808950810, "sku": "SHIRT-M",
             "title": "Shirt", "quantity": 1, "price": "9.99", "total_discount": "0.00"},
            {"id": id * 2 % 9_000_000_000_000_000_000 + 1, "product_id": 632910393, "variant_id": 808950811, "sku": "MUG",
             "title": "Mug", "quantity": 2, "price": "5.00", "total_discount": "0.00"}]
    })
}

mod summary;

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("summary") {
        let n = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
        summary::run(n).await;
        return;
    }
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    println!(
        "connector sync benchmark, {n} orders in pages of {PAGE}, {}",
        testkit::machine()
    );
    let shop = MockServer::start().await;
    let pages = n.div_ceil(PAGE);
    for p in 0..pages {
        let orders: Vec<Value> = (p * PAGE..((p + 1) * PAGE).min(n)).map(order).collect();
        let mut resp = ResponseTemplate::new(200).set_body_json(json!({"orders": orders}));
        if p + 1 < pages {
            resp = resp.insert_header(
                "Link",
                format!(
                    "<{}/admin/api/2025-01/orders.json?limit=250&page_info=p{}>; rel=\"next\"",
                    shop.uri(),
                    p + 1
                )
                .as_str(),
            );
        }
        let mock = Mock::given(method("GET")).and(path("/admin/api/2025-01/orders.json"));
        let mock = if p == 0 {
            mock.and(query_param_is_missing("page_info"))
        } else {
            mock.and(query_param("page_info", format!("p{p}").as_str()))
        };
        mock.respond_with(resp).mount(&shop).await;
    }
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/shop.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"shop": {"currency": "EUR"}})))
        .mount(&shop)
        .await;
    for resource in ["products", "customers"] {
        Mock::given(method("GET"))
            .and(path(format!("/admin/api/2025-01/{resource}.json")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({resource: []})))
            .mount(&shop)
            .await;
    }

    // Baseline: the same pages read and parsed, nothing else.
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut url = format!("{}/admin/api/2025-01/orders.json?limit=250&status=any", shop.uri());
    let mut read = 0;
    loop {
        let resp = http.get(&url).send().await.unwrap();
        let next = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.split_once('<'))
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(u, _)| u.to_owned());
        let body: Value = resp.json().await.unwrap();
        read += body["orders"].as_array().unwrap().len();
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    let base = start.elapsed();
    assert_eq!(read, n);

    let app = TestApp::new().await;
    let owner = app.user("bench").await;
    let tenant = app.tenant(&owner).await;
    let scope = Scope::worker(tenant, "", "bench".into());
    let svc = testkit::connectors(&app.core.db, []);
    let settings: Map<String, Value> = json!({"store_url": shop.uri(), "access_token": "shpat_benchmark0000"})
        .as_object()
        .unwrap()
        .clone();
    svc.put(&scope, Kind::Shopify, settings, None).await.unwrap();
    let opts = SyncOptions {
        page_size: 250,
        tries: 3,
        max_wait: Duration::from_millis(50),
    };
    let start = Instant::now();
    let report = sync(&svc, &scope, Kind::Shopify, &opts).await.unwrap();
    let took = start.elapsed();
    let orders = &report.iter().find(|(r, _)| *r == "orders").unwrap().1;
    assert_eq!(orders.written as usize, n);
    let stored: i64 = sqlx::query_scalar("select count(*) from ecom_order_lines where tenant_id = $1")
        .bind(tenant)
        .fetch_one(&app.db.owner)
        .await
        .unwrap();
    assert_eq!(stored as usize, 2 * n);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "  read pages only (baseline) {:>8.0} orders/s  ({:.2} s)",
        rate(base),
        base.as_secs_f64()
    );
    println!(
        "  sync into the mirrors      {:>8.0} orders/s  ({:.2} s, {} pages, lines {})",
        rate(took),
        took.as_secs_f64(),
        orders.pages,
        stored
    );
    println!("  sync / read: {:.4}x", base.as_secs_f64() / took.as_secs_f64());
}
