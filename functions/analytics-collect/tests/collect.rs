//! analytics-collect's `POST /analytics/collect` on real Redis and Postgres: what it refuses
//! stores nothing, and Redis refusing the write answers 503. The world is `testkit::analytics`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::json;
use testkit::analytics::{CHROME, World};
use testkit::post;
use uuid::Uuid;

/// The analytics world (`testkit::analytics`) over the collect and query functions.
async fn world() -> World {
    World::new(analytics_query::router, analytics_collect::router).await
}

#[tokio::test]
async fn bad_requests_are_refused_and_store_nothing() {
    let w = world().await;
    let site = w.site("shop.test").await;
    let key = site["site_key"].as_str().unwrap();
    let r = w
        .send(
            json!({"site_key": "site_nope", "url": "https://shop.test/"}),
            CHROME,
            "1.1.1.1",
            None,
        )
        .await;
    let problem = r.problem(404);
    assert!(problem.get("detail").is_none(), "no detail for an unknown key");
    let r = w
        .send(
            json!({"site_key": key, "url": "https://shop.test/"}),
            CHROME,
            "1.1.1.1",
            Some("https://evil.test"),
        )
        .await;
    r.problem(403);
    let r = w
        .send(json!({"url": "https://shop.test/"}), CHROME, "1.1.1.1", None)
        .await;
    r.problem(422);
    let r = w
        .send(json!({"site_key": key, "events": []}), CHROME, "1.1.1.1", None)
        .await;
    r.problem(422);
    let big = "x".repeat(70 * 1024);
    let r = w
        .send(json!({"site_key": key, "url": big}), CHROME, "1.1.1.1", None)
        .await;
    r.problem(413);
    let r = post("/analytics/collect").raw_json(b"{not json").send(&w.collect).await;
    r.problem(422);
    // text/plain (a simple request, no preflight) is read as JSON too.
    let r = post("/analytics/collect")
        .header("content-type", "text/plain")
        .header("user-agent", CHROME)
        .header("x-forwarded-for", "1.1.1.1")
        .send_body(
            json!({"site_key": key, "url": "https://shop.test/"})
                .to_string()
                .into_bytes(),
            &w.collect,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let length: i64 = redis::cmd("XLEN")
        .arg(&w.collector.stream)
        .query_async(&mut w.redis.clone())
        .await
        .unwrap();
    assert_eq!(length, 1, "only the good request reached the stream");

    // Redis refusing the write (here: the stream key holds a string): 503, nothing acknowledged.
    let mut broken = w.collector.clone();
    broken.stream = format!("analytics_broken_{}", Uuid::new_v4().simple());
    let _: () = redis::cmd("SET")
        .arg(&broken.stream)
        .arg("x")
        .query_async(&mut w.redis.clone())
        .await
        .unwrap();
    let router = analytics_collect::router(broken);
    let r = post("/analytics/collect")
        .json(json!({"site_key": key, "url": "https://shop.test/"}))
        .header("user-agent", CHROME)
        .send(&router)
        .await;
    r.problem(503);
}
