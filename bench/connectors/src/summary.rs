//! `GET /ecommerce/summary` latency over a year of orders: the handler in process (auth, the
//! tenant transaction, the query, zero-filling, JSON) vs the raw SQL it runs (the same text, in
//! the same tenant-scoped transaction), interleaved, p50/p99.
use shared::domain::Scope;
use shared::services::ecommerce::read::SUMMARY_SQL;
use std::time::{Duration, Instant};
use testkit::{TestApp, get, percentile_ms};

const RUNS: usize = 100;

/// `n` orders over the 365 days before `2026-11-24`: two channels, EUR and USD, every status,
/// one in 50 a test order.
async fn seed(app: &TestApp, tenant: uuid::Uuid, n: i64) {
    sqlx::query(
        "insert into ecom_orders (id, tenant_id, channel, external_id, number, status, raw_status, currency, \
         total_minor, subtotal_minor, tax_minor, shipping_minor, discount_minor, refunded_minor, placed_at, \
         source_updated_at, test) \
         select gen_random_uuid(), $1, case when g % 3 = 0 then 'woocommerce' else 'shopify' end, g::text, '#' || g, \
           (array['paid', 'fulfilled', 'partially_refunded', 'refunded', 'cancelled', 'pending'])[1 + g % 6], 'x', \
           case when g % 5 = 0 then 'USD' else 'EUR' end, 1000 + (g * 37) % 20000, 1000, 0, 0, 0, \
           case when g % 6 = 2 then 500 when g % 6 = 3 then 1000 + (g * 37) % 20000 else 0 end, \
           timestamptz '2026-11-24T00:00:00Z' - (g % 365) * interval '1 day' - (g % 1440) * interval '1 minute', \
           now(), g % 50 = 0 \
         from generate_series(1, $2) g",
    )
    .bind(tenant)
    .bind(n)
    .execute(&app.db.owner)
    .await
    .unwrap();
}

pub async fn run(n: i64) {
    println!(
        "e-commerce summary benchmark, {n} orders over 365 days (and another tenant's {n}), {}",
        testkit::machine()
    );
    let app = TestApp::new().await;
    let owner = app.user("bench").await;
    let tenant = app.tenant(&owner).await;
    let other = app.user("other").await;
    let other_tenant = app.tenant(&other).await;
    seed(&app, tenant, n).await;
    seed(&app, other_tenant, n).await;
    sqlx::query("analyze ecom_orders").execute(&app.db.owner).await.unwrap();
    let api = ecommerce::router(app.core.clone());
    let scope = Scope::worker(tenant, "", "bench".into());
    for (label, period) in [("by day, 365 days", "day"), ("by month, 365 days", "month")] {
        let query = format!("from=2025-11-24&to=2026-11-23&tz=Europe/Berlin&period={period}");
        let (mut handler, mut raw) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
        for i in 0..RUNS + 5 {
            let start = Instant::now();
            let r = get("/ecommerce/summary")
                .bearer(&owner.token)
                .tenant(tenant)
                .query(&query)
                .send(&api)
                .await;
            let took = start.elapsed();
            assert_eq!(r.status, 200, "{}", r.text);
            let start = Instant::now();
            let mut tx = shared::adapters::pg::begin(&app.core.db, &scope).await.unwrap();
            let rows: Vec<(chrono::NaiveDate, String, String, i64, i64, i64)> = sqlx::query_as(SUMMARY_SQL)
                .bind(chrono::NaiveDate::from_ymd_opt(2025, 11, 24))
                .bind(chrono::NaiveDate::from_ymd_opt(2026, 11, 23))
                .bind("Europe/Berlin")
                .bind(period)
                .bind(None::<String>)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            let raw_took = start.elapsed();
            assert!(!rows.is_empty());
            if i >= 5 {
                handler.push(took);
                raw.push(raw_took);
            }
        }
        report(label, &mut handler, &mut raw);
    }
}

fn report(label: &str, handler: &mut [Duration], raw: &mut [Duration]) {
    let (h50, h99) = (percentile_ms(handler, 0.5), percentile_ms(handler, 0.99));
    let (r50, r99) = (percentile_ms(raw, 0.5), percentile_ms(raw, 0.99));
    println!(
        "  {label:<20} handler p50 {h50:>7.2} ms  p99 {h99:>7.2} ms | raw SQL p50 {r50:>7.2} ms  p99 {r99:>7.2} ms | {:.2}x / {:.2}x",
        h50 / r50,
        h99 / r99
    );
}
