//! CMS benchmarks, one run each, figures printed (no assertions on them):
//!
//! 1. Public page fetch: `GET /public/sites/{key}/pages/{slug}` through the cms-public handler
//!    in process (site key lookup, the tenant transaction, the live snapshot, its 6 images
//!    resolved to URLs, the ETag over the bytes) for a 40-block page among N published pages
//!    (default 2,000) of the site, vs the raw SQL of the same answer's two lookups (site key,
//!    live snapshot) in the same transaction shape; interleaved, p50/p99.
//! 2. media-processor throughput: 100 images (1600×1200 JPEG and PNG, uploaded to the moto
//!    bucket) processed one after another as S3 events deliver them (read, sniff, checksum,
//!    measure, two thumbnails written, the item updated), vs reading the same 100 objects only.
//!
//! Usage: cargo run --release -p bench-cms [-- PAGES]
//! (the local services up: `local/up --services-only`).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use serde_json::{Value, json};
use shared::services::cms::public::{ITEM_SQL, SITE_SQL};
use std::time::{Duration, Instant};
use testkit::{TestApp, get, percentile_ms};
use uuid::Uuid;

const RUNS: usize = 500;
const IMAGES: usize = 100;

fn body(images: &[Uuid]) -> Value {
    let mut blocks = Vec::new();
    for i in 0..40 {
        blocks.push(match i % 5 {
            0 => json!({"type": "heading", "id": format!("h{i}"), "level": 2, "text": format!("Section {i}")}),
            1 | 2 => json!({"type": "rich_text", "id": format!("t{i}"), "content": [
                {"type": "paragraph", "spans": [{"text": "Our team builds software that people enjoy using, "},
                    {"text": "every day", "marks": ["bold"]}, {"text": ". Read more", "href": "/about"}]},
                {"type": "bullet", "spans": [{"text": "Fast"}]}, {"type": "bullet", "spans": [{"text": "Safe"}]}]}),
            3 => {
                json!({"type": "image", "id": format!("i{i}"), "media_id": images[i % images.len()], "alt": "A photo"})
            }
            _ => json!({"type": "cta", "id": format!("c{i}"), "label": "Contact us", "href": "mailto:hi@example.com",
                "style": "primary"}),
        });
    }
    Value::Array(blocks)
}

async fn public_fetch(pages: i64) {
    println!(
        "public page fetch, a 40-block page among {pages} published pages, {}",
        testkit::machine()
    );
    let app = TestApp::new().await;
    let owner = app.user("bench").await;
    let tenant = app.tenant(&owner).await;
    let (site, key) = app.site(tenant, "example.com").await;
    let images: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    for id in &images {
        sqlx::query(
            "insert into cms_media (id, tenant_id, name, declared_type, declared_size, object_key, status, content_type, \
             size_bytes, width, height, thumbnails) values ($1, $2, 'photo.jpg', 'image/jpeg', 1000, $3, 'ready', \
             'image/jpeg', 1000, 1600, 1200, $4)",
        )
        .bind(id)
        .bind(tenant)
        .bind(format!("media/{tenant}/{id}/original"))
        .bind(json!([{"width": 320, "height": 240, "key": format!("media/{tenant}/{id}/thumb-320.jpg")},
            {"width": 1024, "height": 768, "key": format!("media/{tenant}/{id}/thumb-1024.jpg")}]))
        .execute(&app.db.owner)
        .await
        .unwrap();
    }
    let live = json!({"revision": 1, "title": "About", "slug": "page", "seo": {"description": "About us"},
        "body": body(&images), "categories": [], "tags": []});
    sqlx::query(
        "insert into cms_items (id, tenant_id, site_id, kind, title, slug, body, status, live, live_slug, live_revision, \
         live_at, published_at) \
         select gen_random_uuid(), $1, $2, 'page', 'Page ' || g, 'page-' || g, $3 -> 'body', 'published', \
           jsonb_set($3, '{slug}', to_jsonb('page-' || g)), 'page-' || g, 1, now(), now() \
         from generate_series(1, $4) g",
    )
    .bind(tenant)
    .bind(site)
    .bind(&live)
    .bind(pages)
    .execute(&app.db.owner)
    .await
    .unwrap();
    sqlx::query("analyze cms_items").execute(&app.db.owner).await.unwrap();
    let api = cms_public::router(app.core.clone(), "https://media.example.com".to_owned());
    let slug = format!("page-{}", pages / 2);
    let (mut handler, mut raw) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    let mut bytes = 0;
    for i in 0..RUNS + 20 {
        let start = Instant::now();
        let r = get(&format!("/public/sites/{key}/pages/{slug}")).send(&api).await;
        let took = start.elapsed();
        assert_eq!(r.status, 200, "{}", r.text);
        bytes = r.text.len();
        let start = Instant::now();
        let mut tx = app.core.db.begin().await.unwrap();
        let (site_id, tenant_id): (Uuid, Uuid) = sqlx::query_as(SITE_SQL).bind(&key).fetch_one(&mut *tx).await.unwrap();
        shared::adapters::pg::set_tenant(&mut tx, tenant_id).await.unwrap();
        type Row = (
            Value,
            Option<String>,
            Option<chrono::DateTime<chrono::Utc>>,
            Option<chrono::DateTime<chrono::Utc>>,
        );
        let row: Row = sqlx::query_as(ITEM_SQL)
            .bind(site_id)
            .bind("page")
            .bind(&slug)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let raw_took = start.elapsed();
        assert!(row.0.is_object());
        if i >= 20 {
            handler.push(took);
            raw.push(raw_took);
        }
    }
    report(&format!("page of {bytes} bytes"), &mut handler, &mut raw);
}

fn report(label: &str, handler: &mut [Duration], raw: &mut [Duration]) {
    let (h50, h99) = (percentile_ms(handler, 0.5), percentile_ms(handler, 0.99));
    let (r50, r99) = (percentile_ms(raw, 0.5), percentile_ms(raw, 0.99));
    println!(
        "  {label:<24} handler p50 {h50:>6.2} ms  p99 {h99:>6.2} ms | raw SQL p50 {r50:>6.2} ms  p99 {r99:>6.2} ms | {:.2}x / {:.2}x",
        h50 / r50,
        h99 / r99
    );
}

fn image(n: usize) -> (Vec<u8>, &'static str) {
    let (w, h) = (1600, 1200);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 7 + y * 13 + n as u32 * 31) % 256;
        image::Rgb([v as u8, ((x ^ y) % 256) as u8, ((x * y + n as u32) % 251) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    if n.is_multiple_of(2) {
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        (out.into_inner(), "image/jpeg")
    } else {
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        (out.into_inner(), "image/png")
    }
}

async fn media_throughput() {
    println!(
        "media-processor, {IMAGES} images of 1600x1200 (half JPEG, half PNG), one after another, {}",
        testkit::machine()
    );
    let app = TestApp::new().await;
    let owner = app.user("bench").await;
    let tenant = app.tenant(&owner).await;
    let store = testkit::media_store(&testkit::moto().await, "bench").await;
    let mut keys = Vec::new();
    let mut total = 0;
    for n in 0..IMAGES {
        let (bytes, content_type) = image(n);
        let id = Uuid::now_v7();
        let key = format!("media/{tenant}/{id}/original");
        sqlx::query(
            "insert into cms_media (id, tenant_id, name, declared_type, declared_size, object_key) \
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(tenant)
        .bind(format!("image-{n}"))
        .bind(content_type)
        .bind(bytes.len() as i64)
        .bind(&key)
        .execute(&app.db.owner)
        .await
        .unwrap();
        total += bytes.len();
        store.put(&key, bytes, content_type).await.unwrap();
        keys.push(key);
    }
    // The baseline first and last, the processor between: a warm bucket for both.
    let read = |keys: Vec<String>| {
        let store = store.clone();
        async move {
            let start = Instant::now();
            for key in &keys {
                store.get(key).await.unwrap().unwrap();
            }
            start.elapsed()
        }
    };
    let before = read(keys.clone()).await;
    let start = Instant::now();
    for key in &keys {
        let outcome = shared::services::cms::process::object(&app.core.db, &store, key)
            .await
            .unwrap();
        assert_eq!(outcome, shared::services::cms::process::Outcome::Ready);
    }
    let processing = start.elapsed();
    let after = read(keys.clone()).await;
    let baseline = before.min(after);
    let per_s = |d: Duration| IMAGES as f64 / d.as_secs_f64();
    println!(
        "  {} MiB in all | processor {:.1} images/s ({:.1} ms each) | reading only {:.1} images/s | {:.3}x",
        total / (1024 * 1024),
        per_s(processing),
        processing.as_secs_f64() * 1000.0 / IMAGES as f64,
        per_s(baseline),
        per_s(processing) / per_s(baseline)
    );
}

#[tokio::main]
async fn main() {
    let pages: i64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    public_fetch(pages).await;
    media_throughput().await;
}
