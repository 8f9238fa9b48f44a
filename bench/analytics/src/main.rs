//! Analytics benchmark, one run, against the local stack's Redis and Postgres:
//!
//! 1. Ingest, events/s: the collect handler in process (batches of 1 and of 50) vs (a) raw
//!    pipelined XADD of the same enriched payloads, (b) one INSERT per event into a Postgres
//!    events table (how Umami stores events). Goals: >= 10x (b) and >= 0.5x (a) for batches.
//! 2. Aggregation, events/s: the aggregator folding the stream into Postgres vs the raw
//!    XREADGROUP read rate of the same stream. Goal >= 0.5x.
//! 3. Query: `GET /analytics/traffic` (day buckets) over 90 days of hourly rollups, p50/p99.
//!
//! Usage: cargo run --release -p bench-analytics [-- EVENTS]   (default 20000)
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use serde_json::json;
use shared::domain::hll::Hll;
use shared::services::analytics::aggregate::Aggregator;
use shared::services::analytics::collect::Collector;
use shared::services::analytics::event::{Client, SiteRef, enrich};
use std::time::{Duration, Instant};
use testkit::{TestApp, get, post, redis_url};
use uuid::Uuid;

/// The allocator of the functions measured (see the workspace Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const UA: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn event(i: usize) -> serde_json::Value {
    json!({"url": format!("https://shop.test/page/{}?utm_source=news", i % 40), "referrer": "https://www.google.com/",
        "screen_width": 1280 + (i % 3) * 100})
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    println!(
        "analytics benchmark, {events} events per ingest run (a visitor sends 8; a batch is one visitor's), 40 pages, {}",
        testkit::machine()
    );
    let app = TestApp::new().await;
    let redis = shared::adapters::redis::connect(&redis_url())
        .await
        .expect("Redis: run local/up --services-only");
    let owner = app.user("bench").await;
    let tenant = app.tenant(&owner).await;
    app.subscribe(tenant, "scale").await;
    let query = analytics_query::router(app.core.clone());
    let site = post("/analytics/sites")
        .bearer(&owner.token)
        .tenant(tenant)
        .json(json!({"name": "bench", "domain": "shop.test"}))
        .send(&query)
        .await
        .json;
    let (site_id, key) = (
        site["id"].as_str().unwrap().to_owned(),
        site["site_key"].as_str().unwrap().to_owned(),
    );
    let run = Uuid::new_v4().simple().to_string();
    let mut collector = Collector::with_redis(redis.clone(), app.db.app.clone());
    collector.stream = format!("bench_analytics_{run}");
    let collect = analytics_collect::router(collector.clone());

    // 1. Ingest: batches of 1 once; batches of 50 and the raw XADD baseline in 3 interleaved
    // rounds (the median ratio is printed).
    println!("1. ingest (events/s):");
    // The request bodies are built before the clock starts (the raw XADD baseline gets its
    // payloads ready-made too).
    let bodies = |batch: usize| -> Vec<(Vec<u8>, String)> {
        (0..events)
            .step_by(batch)
            .map(|sent| {
                let n = batch.min(events - sent);
                let body = if batch == 1 {
                    let mut e = event(sent);
                    e["site_key"] = json!(key);
                    e
                } else {
                    json!({"site_key": key, "events": (sent..sent + n).map(event).collect::<Vec<_>>()})
                };
                // A visitor sends 8 events (Plausible sites see ~2-4 pageviews per visit and
                // visitors come back within the day); a batch is one visitor's.
                let ip = format!("10.0.{}.{}", (sent / 8 / 250) % 250, (sent / 8) % 250);
                (body.to_string().into_bytes(), ip)
            })
            .collect()
    };
    let send = |batch: usize| {
        let collect = &collect;
        let requests = bodies(batch);
        async move {
            let start = Instant::now();
            for (body, ip) in requests {
                let r = post("/analytics/collect")
                    .header("content-type", "application/json")
                    .header("user-agent", UA)
                    .header("x-forwarded-for", &ip)
                    .send_body(body, collect)
                    .await;
                assert_eq!(r.status, 202, "{}", r.text);
            }
            rate(events, start.elapsed())
        }
    };
    let single = send(1).await;
    println!("  collect handler, batches of 1           {single:10.0}");
    let site_ref = SiteRef {
        site_id: Uuid::parse_str(&site_id).unwrap(),
        tenant_id: tenant,
        allowed_origins: vec!["*".into()],
    };
    let client = Client {
        ip: "10.0.0.1",
        user_agent: UA,
    };
    let payloads: Vec<String> = (0..events)
        .map(|i| {
            serde_json::to_string(
                &enrich(
                    &site_ref,
                    &event(i),
                    client,
                    b"salt",
                    chrono::Utc::now().timestamp_millis(),
                )
                .unwrap(),
            )
            .unwrap()
        })
        .collect();
    let mut conn = redis.clone();
    let mut rounds = Vec::new();
    for round in 0..3 {
        let batched = send(50).await;
        let raw_stream = format!("bench_raw_{run}_{round}");
        let start = Instant::now();
        for chunk in payloads.chunks(50) {
            let mut pipe = redis::pipe();
            for p in chunk {
                pipe.cmd("XADD").arg(&raw_stream).arg("*").arg("e").arg(p).ignore();
            }
            let _: () = pipe.query_async(&mut conn).await.unwrap();
        }
        let raw_xadd = rate(events, start.elapsed());
        let _: () = redis::cmd("DEL").arg(&raw_stream).query_async(&mut conn).await.unwrap();
        rounds.push((batched / raw_xadd, batched, raw_xadd));
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ratio_a, batched, raw_xadd) = rounds[1];
    println!("  collect handler, batches of 50          {batched:10.0}   (median round)");
    println!("  (a) raw pipelined XADD, batches of 50   {raw_xadd:10.0}");
    sqlx::query(
        "create table bench_events (id bigint generated always as identity primary key, site_id uuid, created_at timestamptz, \
         url text, referrer text, visitor text, browser text, os text, device text, payload jsonb)",
    )
    .execute(&app.db.owner)
    .await
    .unwrap();
    let start = Instant::now();
    for (i, p) in payloads.iter().enumerate() {
        sqlx::query(
            "insert into bench_events (site_id, created_at, url, referrer, visitor, browser, os, device, payload) \
             values ($1, now(), $2, 'https://www.google.com/', $3, 'Chrome', 'Windows', 'desktop', $4::jsonb)",
        )
        .bind(site_ref.site_id)
        .bind(format!("/page/{}", i % 40))
        .bind(format!("v{i}"))
        .bind(p)
        .execute(&app.db.owner)
        .await
        .unwrap();
    }
    let insert = rate(events, start.elapsed());
    println!("  (b) one Postgres INSERT per event       {insert:10.0}");
    println!(
        "  ratios: batches of 50 = {:.1}x (b) [goal >= 10x], {ratio_a:.2}x (a) [goal >= 0.5x]; batches of 1 = {:.1}x (b)",
        batched / insert,
        single / insert
    );
    println!(
        "  (a) all rounds: {}",
        rounds
            .iter()
            .map(|r| format!("{:.2}x", r.0))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // 2. Aggregation: the collected stream (4 x events), copied to a fresh stream per round;
    // each round reads a copy raw with its own group, then the aggregator folds it.
    let copied: redis::streams::StreamRangeReply = redis::AsyncCommands::xrange_all(&mut conn, &collector.stream)
        .await
        .unwrap();
    let copied: Vec<String> = copied.ids.iter().map(|e| e.get::<String>("e").unwrap()).collect();
    let total = copied.len();
    let batch = Aggregator::new(app.db.app.clone(), redis.clone()).batch;
    let mut rounds = Vec::new();
    // Round 0 warms up (first rollup rows and visits of the site, plans): not counted.
    for round in 0..4 {
        let stream = format!("bench_fold_{run}_{round}");
        for chunk in copied.chunks(500) {
            let mut pipe = redis::pipe();
            for p in chunk {
                pipe.cmd("XADD").arg(&stream).arg("*").arg("e").arg(p).ignore();
            }
            let _: () = pipe.query_async(&mut conn).await.unwrap();
        }
        let _: redis::Value = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg("bench_reader")
            .arg("0")
            .query_async(&mut conn)
            .await
            .unwrap();
        let start = Instant::now();
        let mut read = 0;
        loop {
            let reply: redis::streams::StreamReadReply = redis::AsyncCommands::xread_options(
                &mut conn,
                &[&stream],
                &[">"],
                &redis::streams::StreamReadOptions::default()
                    .group("bench_reader", "r1")
                    .count(batch),
            )
            .await
            .unwrap();
            let n: usize = reply.keys.iter().map(|k| k.ids.len()).sum();
            if n == 0 {
                break;
            }
            read += n;
        }
        let raw_read = rate(read, start.elapsed());
        let mut aggregator = Aggregator::new(app.db.app.clone(), redis.clone());
        aggregator.stream = stream.clone();
        let start = Instant::now();
        let report = aggregator.run(10_000).await.unwrap();
        let fold = rate(usize::try_from(report.folded).unwrap(), start.elapsed());
        assert_eq!(usize::try_from(report.folded).unwrap(), total);
        let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await.unwrap();
        if round > 0 {
            rounds.push((fold / raw_read, raw_read, fold, report.micros));
        }
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ratio, raw_read, fold, m) = rounds[1].clone();
    let batches = total.div_ceil(batch) as f64;
    let per = |us: u64| us as f64 / batches / 1000.0;
    println!("2. aggregation (events/s; the median of 3 rounds after a warm-up, batches of {batch}):");
    println!("  raw XREADGROUP of the stream            {raw_read:10.0}");
    println!("  aggregator: fold + commit + XACK        {fold:10.0}   ratio {ratio:.2}x [goal >= 0.5x]");
    println!(
        "  per batch (ms): read {:.1} and parse {:.1} waited for (the rest overlaps the write), load sites and visits {:.1}, fold {:.1}, write + commit {:.1}, read-ahead wait {:.1}, ack {:.1} (the rest overlaps the next batch)",
        per(m.read),
        per(m.parse),
        per(m.load),
        per(m.fold),
        per(m.write),
        per(m.wait),
        per(m.ack)
    );
    println!(
        "  all rounds: {}",
        rounds
            .iter()
            .map(|r| format!("{:.2}x", r.0))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // 3. Query over 90 days of hourly rollups.
    let now = chrono::Utc::now();
    let mut sketch = Hll::new();
    for v in 0..300u64 {
        sketch.insert_hash(v.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    sqlx::query(
        "insert into analytics_rollups (site_id, hour, dimension, value, tenant_id, pageviews, visits, bounces, duration_secs, visitors) \
         select $1, date_trunc('hour', $2::timestamptz) - make_interval(hours => h), '', '', $3, 120, 40, 18, 2400, $4 \
         from generate_series(1, 90 * 24) h on conflict do nothing",
    )
    .bind(site_ref.site_id)
    .bind(now)
    .bind(tenant)
    .bind(sketch.to_bytes())
    .execute(&app.db.owner)
    .await
    .unwrap();
    let (from, to) = (
        (now - chrono::Duration::days(89)).format("%Y-%m-%d"),
        now.format("%Y-%m-%d"),
    );
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = get("/analytics/traffic")
            .bearer(&owner.token)
            .tenant(tenant)
            .query(&format!("site={site_id}&from={from}&to={to}&interval=day"))
            .send(&query)
            .await;
        assert_eq!(r.status, 200);
        samples.push(t.elapsed());
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("3. GET /analytics/traffic, 90 days of hourly rollups (day buckets + previous period), 200 requests:");
    println!("  p50 {:.2} ms  p99 {:.2} ms", ms(samples[100]), ms(samples[197]));
    let _: () = redis::cmd("DEL")
        .arg(&collector.stream)
        .query_async(&mut conn)
        .await
        .unwrap();
}
