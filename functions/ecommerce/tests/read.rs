//! The e-commerce read API against real Postgres: the summary's figures to the cent per
//! channel, currency, period and time zone; order and product lists with every filter and
//! keyset pages; details with lines, customer and variants; 422s; other tenants' ids are 404.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use axum::Router;
use serde_json::{Value, json};
use testkit::{TestApp, TestUser, get};
use uuid::Uuid;

struct World {
    app: TestApp,
    api: Router,
    owner: TestUser,
    tenant: Uuid,
}

impl World {
    async fn new() -> Self {
        let app = TestApp::new().await;
        let owner = app.user("owner").await;
        let tenant = app.tenant(&owner).await;
        let api = ecommerce::router(app.core.clone());
        Self {
            app,
            api,
            owner,
            tenant,
        }
    }

    async fn get(&self, path: &str, query: &str) -> testkit::Resp {
        get(path)
            .bearer(&self.owner.token)
            .tenant(self.tenant)
            .query(query)
            .send(&self.api)
            .await
    }

    /// An order as connector-sync mirrors it: (channel, number, status, currency, total,
    /// refunded, placed_at, test).
    #[allow(clippy::too_many_arguments)]
    async fn order(
        &self,
        tenant: Uuid,
        channel: &str,
        number: &str,
        status: &str,
        currency: &str,
        total: i64,
        refunded: i64,
        placed_at: &str,
        test: bool,
    ) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            "insert into ecom_orders (id, tenant_id, channel, external_id, number, status, raw_status, currency, \
             total_minor, subtotal_minor, tax_minor, shipping_minor, discount_minor, refunded_minor, email, \
             customer_external_id, placed_at, source_updated_at, test) \
             values ($1, $2, $3, $4, $5, $6, $6, $7, $8, $8, 0, 0, 0, $9, $10, '9007199254740993', $11::timestamptz, \
             $11::timestamptz, $12)",
        )
        .bind(id)
        .bind(tenant)
        .bind(channel)
        .bind((id.as_u128() as u64 >> 1).to_string())
        .bind(number)
        .bind(status)
        .bind(currency)
        .bind(total)
        .bind(refunded)
        .bind(format!("buyer{}@example.com", number.trim_start_matches('#')))
        .bind(placed_at)
        .bind(test)
        .execute(&self.app.db.owner)
        .await
        .unwrap();
        id
    }
}

async fn seed(w: &World) -> Vec<Uuid> {
    let t = w.tenant;
    vec![
        w.order(
            t,
            "shopify",
            "#1001",
            "paid",
            "EUR",
            10000,
            0,
            "2026-11-02T10:00:00Z",
            false,
        )
        .await,
        // 23:30 UTC is the next day in Berlin.
        w.order(
            t,
            "shopify",
            "#1002",
            "partially_refunded",
            "EUR",
            5000,
            1500,
            "2026-11-02T23:30:00Z",
            false,
        )
        .await,
        w.order(
            t,
            "shopify",
            "#1003",
            "cancelled",
            "EUR",
            7000,
            0,
            "2026-11-03T09:00:00Z",
            false,
        )
        .await,
        w.order(
            t,
            "shopify",
            "#1004",
            "paid",
            "EUR",
            9999,
            0,
            "2026-11-04T09:00:00Z",
            true,
        )
        .await,
        w.order(
            t,
            "shopify",
            "#1005",
            "pending",
            "EUR",
            3000,
            0,
            "2026-11-05T09:00:00Z",
            false,
        )
        .await,
        w.order(
            t,
            "woocommerce",
            "#2001",
            "fulfilled",
            "USD",
            2550,
            0,
            "2026-11-10T12:00:00Z",
            false,
        )
        .await,
        w.order(
            t,
            "woocommerce",
            "#2002",
            "refunded",
            "USD",
            1000,
            1000,
            "2026-11-10T13:00:00Z",
            false,
        )
        .await,
        w.order(
            t,
            "shopify",
            "#1006",
            "paid",
            "USD",
            333,
            0,
            "2026-11-05T08:00:00Z",
            false,
        )
        .await,
        // Outside the month.
        w.order(
            t,
            "shopify",
            "#999",
            "paid",
            "EUR",
            100,
            0,
            "2026-10-31T23:30:00Z",
            false,
        )
        .await,
    ]
}

fn sales(v: &Value) -> [i64; 5] {
    [
        "orders",
        "gross_minor",
        "refunded_minor",
        "revenue_minor",
        "average_order_minor",
    ]
    .map(|k| v[k].as_i64().unwrap())
}

#[tokio::test]
async fn the_summary_counts_paid_orders_to_the_cent_per_channel_currency_and_period() {
    let w = World::new().await;
    seed(&w).await;
    // Another tenant's big order is nowhere in A's figures.
    let other = w.app.user("other").await;
    let other_tenant = w.app.tenant(&other).await;
    w.order(
        other_tenant,
        "shopify",
        "#1",
        "paid",
        "EUR",
        1_000_000,
        0,
        "2026-11-02T10:00:00Z",
        false,
    )
    .await;

    let r = w.get("/ecommerce/summary", "from=2026-11-01&to=2026-11-30").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((&r.json["tz"], &r.json["period"]), (&json!("UTC"), &json!("day")));
    let totals: Vec<(String, [i64; 5])> = r.json["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["currency"].as_str().unwrap().to_owned(), sales(t)))
        .collect();
    assert_eq!(
        totals,
        [
            ("EUR".to_owned(), [2, 15000, 1500, 13500, 6750]),
            ("USD".to_owned(), [3, 3883, 1000, 2883, 961]),
        ]
    );
    let channels: Vec<(String, String, [i64; 5])> = r.json["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap().to_owned(),
                c["currency"].as_str().unwrap().to_owned(),
                sales(c),
            )
        })
        .collect();
    assert_eq!(
        channels,
        [
            ("shopify".to_owned(), "EUR".to_owned(), [2, 15000, 1500, 13500, 6750]),
            ("shopify".to_owned(), "USD".to_owned(), [1, 333, 0, 333, 333]),
            ("woocommerce".to_owned(), "USD".to_owned(), [2, 3550, 1000, 2550, 1275]),
        ]
    );
    let series = r.json["series"].as_array().unwrap();
    assert_eq!(series.len(), 30 * 3, "every day, zeros too");
    let point = |series: &[Value], day: &str, channel: &str, currency: &str| -> [i64; 5] {
        sales(
            series
                .iter()
                .find(|p| p["period"] == day && p["channel"] == channel && p["currency"] == currency)
                .unwrap_or_else(|| panic!("{day} {channel} {currency}")),
        )
    };
    assert_eq!(
        point(series, "2026-11-02", "shopify", "EUR"),
        [2, 15000, 1500, 13500, 6750]
    );
    assert_eq!(point(series, "2026-11-03", "shopify", "EUR"), [0, 0, 0, 0, 0]);

    // Days in Berlin: the 23:30 UTC order is on the 3rd, the 31 October 23:30 one on 1 November.
    let r = w
        .get("/ecommerce/summary", "from=2026-11-01&to=2026-11-30&tz=Europe/Berlin")
        .await;
    let series = r.json["series"].as_array().unwrap();
    assert_eq!(point(series, "2026-11-01", "shopify", "EUR"), [1, 100, 0, 100, 100]);
    assert_eq!(
        point(series, "2026-11-02", "shopify", "EUR"),
        [1, 10000, 0, 10000, 10000]
    );
    assert_eq!(
        point(series, "2026-11-03", "shopify", "EUR"),
        [1, 5000, 1500, 3500, 3500]
    );

    // Weeks start on Monday (26 October holds 1 November); one channel only.
    let r = w
        .get(
            "/ecommerce/summary",
            "from=2026-11-01&to=2026-11-30&period=week&channel=woocommerce",
        )
        .await;
    let weeks: Vec<&str> = r.json["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["period"].as_str().unwrap())
        .collect();
    assert_eq!(
        weeks,
        [
            "2026-10-26",
            "2026-11-02",
            "2026-11-09",
            "2026-11-16",
            "2026-11-23",
            "2026-11-30"
        ]
    );
    assert_eq!(sales(&r.json["series"][2]), [2, 3550, 1000, 2550, 1275]);
    let r = w
        .get("/ecommerce/summary", "from=2026-01-01&to=2026-12-31&period=month")
        .await;
    assert_eq!(r.json["series"].as_array().unwrap().len(), 12 * 3);

    for (query, field) in [
        ("from=2026-11-30&to=2026-11-01", "to"),
        ("from=2026-11-01&to=2026-11-30&tz=Mars/Olympus", "tz"),
        ("from=2025-01-01&to=2026-11-30", "to"),
        ("from=1999-12-31&to=2000-01-02", "from"),
        ("from=2026-11-01&to=2026-11-30&channel=amazon", "channel"),
        ("from=2026-11-01&to=2026-11-30&period=year", "period"),
    ] {
        let r = w.get("/ecommerce/summary", query).await;
        assert_eq!(r.status, 422, "{query}: {}", r.text);
        assert!(r.text.contains(&format!("\"{field}")), "{query}: {}", r.text);
    }
    let r = w.get("/ecommerce/summary", "to=2026-11-30").await;
    assert_eq!(r.status, 422, "{}", r.text);
}

#[tokio::test]
async fn orders_filter_search_and_page_and_details_carry_lines_and_customer() {
    let w = World::new().await;
    let ids = seed(&w).await;
    sqlx::query(
        "insert into ecom_customers (id, tenant_id, channel, external_id, email, first_name, last_name, city, \
         country, source_updated_at) values (gen_random_uuid(), $1, 'shopify', '9007199254740993', \
         'ada@example.com', 'Ada', 'Lovelace', 'London', 'GB', now())",
    )
    .bind(w.tenant)
    .execute(&w.app.db.owner)
    .await
    .unwrap();
    let product = Uuid::now_v7();
    sqlx::query(
        "insert into ecom_products (id, tenant_id, channel, external_id, title, status, raw_status, source_updated_at) \
         values ($1, $2, 'shopify', '9007199254740995', 'Tee', 'active', 'active', now())",
    )
    .bind(product)
    .bind(w.tenant)
    .execute(&w.app.db.owner)
    .await
    .unwrap();
    sqlx::query(
        "insert into ecom_order_lines (tenant_id, order_id, external_id, product_external_id, sku, title, quantity, \
         unit_price_minor, total_minor) values ($1, $2, '1', '9007199254740995', 'TEE-M', 'Tee M', 2, 2500, 5000), \
         ($1, $2, '2', null, null, 'Gift wrap', 1, 0, 0)",
    )
    .bind(w.tenant)
    .bind(ids[1])
    .execute(&w.app.db.owner)
    .await
    .unwrap();

    let numbers = |r: &testkit::Resp| -> Vec<String> {
        r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["number"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = w.get("/ecommerce/orders", "").await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(
        numbers(&all),
        ["#2002", "#2001", "#1005", "#1006", "#1003", "#1002", "#1001", "#999"],
        "newest first, the test order left out"
    );
    assert_eq!(numbers(&w.get("/ecommerce/orders", "test=true").await).len(), 9);
    assert_eq!(
        numbers(&w.get("/ecommerce/orders", "channel=woocommerce").await),
        ["#2002", "#2001"]
    );
    assert_eq!(
        numbers(&w.get("/ecommerce/orders", "status=paid").await),
        ["#1006", "#1001", "#999"]
    );
    assert_eq!(
        numbers(&w.get("/ecommerce/orders", "from=2026-11-02&to=2026-11-03").await),
        ["#1003", "#1002", "#1001"]
    );
    assert_eq!(
        numbers(
            &w.get("/ecommerce/orders", "from=2026-11-03&to=2026-11-03&tz=Europe/Berlin")
                .await
        ),
        ["#1003", "#1002"]
    );
    assert_eq!(numbers(&w.get("/ecommerce/orders", "q=%231002").await), ["#1002"]);
    assert_eq!(numbers(&w.get("/ecommerce/orders", "q=BUYER2001").await), ["#2001"]);
    assert_eq!(
        numbers(
            &w.get("/ecommerce/orders", "q=lovelace&channel=shopify&status=paid")
                .await
        ),
        ["#1006", "#1001", "#999"]
    );
    assert_eq!(
        numbers(&w.get("/ecommerce/orders", "q=100%25").await),
        Vec::<String>::new()
    );

    // Keyset pages: every order once, in order.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = w.get("/ecommerce/orders", &format!("limit=3&cursor={cursor}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        seen.extend(numbers(&r));
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, numbers(&all));

    let r = w.get(&format!("/ecommerce/orders/{}", ids[1]), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (
            &r.json["status"],
            &r.json["total_minor"],
            &r.json["refunded_minor"],
            &r.json["line_count"]
        ),
        (&json!("partially_refunded"), &json!(5000), &json!(1500), &json!(2))
    );
    assert_eq!(r.json["customer_name"], "Ada Lovelace");
    assert_eq!(r.json["customer"]["city"], "London");
    assert_eq!(r.json["lines"][0]["product_id"], product.to_string());
    assert_eq!(
        (&r.json["lines"][0]["quantity"], &r.json["lines"][0]["total_minor"]),
        (&json!(2), &json!(5000))
    );
    assert_eq!(r.json["lines"][1]["product_id"], Value::Null);

    // A cursor naming a time the database cannot hold is refused, not a 500.
    let far = chrono::NaiveDate::from_ymd_opt(200_000, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let far_cursor = format!(
        "cursor={}",
        shared::domain::Cursor::encode(&(far, Uuid::now_v7())).as_str()
    );
    for (query, field) in [
        ("status=shipped", "status"),
        ("limit=0", "limit"),
        ("cursor=nonsense", "cursor"),
        ("from=2026-11-05&to=2026-11-01", "to"),
        ("tz=Nowhere", "tz"),
        ("tz=UTC%00", "tz"),
        (far_cursor.as_str(), "cursor"),
        ("q=a%00b", "q"),
    ] {
        let r = w.get("/ecommerce/orders", query).await;
        assert_eq!(r.status, 422, "{query}: {}", r.text);
        assert!(r.text.contains(&format!("\"{field}")), "{query}: {}", r.text);
    }

    // Another tenant: A's orders are 404 and not listed.
    let other = w.app.user("other").await;
    let other_tenant = w.app.tenant(&other).await;
    let as_other = |path: String| get(&path).bearer(&other.token).tenant(other_tenant).send(&w.api);
    assert_eq!(as_other(format!("/ecommerce/orders/{}", ids[1])).await.status, 404);
    assert_eq!(as_other("/ecommerce/orders".to_owned()).await.json["items"], json!([]));
    assert_eq!(as_other(format!("/ecommerce/products/{product}")).await.status, 404);
}

#[tokio::test]
async fn products_list_with_price_ranges_stock_and_search_and_detail_variants() {
    let w = World::new().await;
    let tee = Uuid::now_v7();
    let mug = Uuid::now_v7();
    sqlx::query(
        "insert into ecom_products (id, tenant_id, channel, external_id, title, status, raw_status, vendor, \
         product_type, tags, source_updated_at) values \
         ($1, $3, 'shopify', '9007199254740993', 'Organic Tee', 'active', 'active', 'Acme', 'Shirts', '{summer}', \
          '2026-11-20T10:00:00Z'), \
         ($2, $3, 'woocommerce', '42', 'Coffee Mug', 'draft', 'draft', null, null, '{}', '2026-11-21T10:00:00Z')",
    )
    .bind(tee)
    .bind(mug)
    .bind(w.tenant)
    .execute(&w.app.db.owner)
    .await
    .unwrap();
    sqlx::query(
        "insert into ecom_variants (id, tenant_id, product_id, external_id, title, sku, price_minor, currency, \
         inventory_quantity) values \
         (gen_random_uuid(), $2, $1, '1', 'S', 'TEE-S', 1999, 'EUR', 5), \
         (gen_random_uuid(), $2, $1, '2', 'L', 'TEE-L', 2499, 'EUR', 7), \
         (gen_random_uuid(), $2, $1, '3', 'L (US)', 'TEE-L-US', 2999, 'USD', null)",
    )
    .bind(tee)
    .bind(w.tenant)
    .execute(&w.app.db.owner)
    .await
    .unwrap();
    let r = w.get("/ecommerce/products", "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let titles: Vec<&str> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Coffee Mug", "Organic Tee"]);
    let t = &r.json["items"][1];
    assert_eq!((&t["variant_count"], &t["inventory_quantity"]), (&json!(3), &json!(12)));
    assert_eq!(
        t["prices"],
        json!([{"currency": "EUR", "min_minor": 1999, "max_minor": 2499},
               {"currency": "USD", "min_minor": 2999, "max_minor": 2999}])
    );
    assert_eq!(t["external_id"], "9007199254740993");
    assert_eq!(r.json["items"][0]["inventory_quantity"], Value::Null);
    for (query, expected) in [
        ("status=draft", vec!["Coffee Mug"]),
        ("channel=shopify", vec!["Organic Tee"]),
        ("q=tee-l", vec!["Organic Tee"]),
        ("q=acme", vec!["Organic Tee"]),
        ("q=mug", vec!["Coffee Mug"]),
        ("q=shirts&status=draft", vec![]),
    ] {
        let r = w.get("/ecommerce/products", query).await;
        let titles: Vec<&str> = r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, expected, "{query}");
    }
    let r = w.get(&format!("/ecommerce/products/{tee}"), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let skus: Vec<&str> = r.json["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["TEE-S", "TEE-L", "TEE-L-US"]);
    assert_eq!(
        w.get(&format!("/ecommerce/products/{}", Uuid::now_v7()), "")
            .await
            .status,
        404
    );
    assert_eq!(w.get("/ecommerce/products", "status=deleted").await.status, 422);
}
