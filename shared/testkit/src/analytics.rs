//! The web analytics test world, shared by analytics-collect's tests (what collect accepts and
//! refuses), analytics-aggregate's (the fold, with crashes between its steps) and
//! analytics-query's (sites and the traffic API): a fresh database with an owner and a tenant,
//! the local Redis with a stream of the test's own, the collect router writing to it (in
//! process), an aggregator reading it, and the query router over the rollups.
use crate::{Resp, TestApp, TestUser, get, post, redis_url};
use axum::Router;
use serde_json::{Value, json};
use shared::adapters::redis::Redis;
use shared::http::Core;
use shared::services::analytics::aggregate::Aggregator;
use shared::services::analytics::collect::Collector;
use uuid::Uuid;

pub const CHROME: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
pub const FIREFOX_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:132.0) Gecko/20100101 Firefox/132.0";

pub struct World {
    pub app: TestApp,
    /// The analytics-query router.
    pub query: Router,
    /// The analytics-collect router over `collector`.
    pub collect: Router,
    /// Writes to a stream of this world's own (`analytics_test_<uuid>`).
    pub collector: Collector,
    pub redis: Redis,
    pub owner: TestUser,
    pub tenant: Uuid,
}

impl World {
    /// The world with `query` (analytics-query's `router`) and `collect` (analytics-collect's
    /// `router`) serving it.
    pub async fn new(query: fn(Core) -> Router, collect: fn(Collector) -> Router) -> Self {
        let app = TestApp::new().await;
        let redis = shared::adapters::redis::connect(&redis_url())
            .await
            .expect("Redis: run local/up --services-only");
        let mut collector = Collector::with_redis(redis.clone(), app.db.app.clone());
        collector.stream = format!("analytics_test_{}", Uuid::new_v4().simple());
        let collect = collect(collector.clone());
        let query = query(app.core.clone());
        let owner = app.user("owner").await;
        let tenant = app.tenant(&owner).await;
        World {
            app,
            query,
            collect,
            collector,
            redis,
            owner,
            tenant,
        }
    }

    /// `POST /analytics/sites` as the owner, which must answer 201; the site.
    pub async fn site(&self, domain: &str) -> Value {
        let r = post("/analytics/sites")
            .bearer(&self.owner.token)
            .tenant(self.tenant)
            .json(json!({"name": domain, "domain": domain}))
            .send(&self.query)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json
    }

    /// An aggregator of this world's stream, in small batches (many steps).
    pub fn aggregator(&self) -> Aggregator {
        let mut a = Aggregator::new(self.app.db.app.clone(), self.redis.clone());
        a.stream = self.collector.stream.clone();
        a.batch = 7; // small batches: many steps
        a
    }

    /// `POST /analytics/collect` of `body` as a browser with this agent, address and `Origin`.
    pub async fn send(&self, body: Value, ua: &str, ip: &str, origin: Option<&str>) -> Resp {
        let mut r = post("/analytics/collect")
            .json(body)
            .header("user-agent", ua)
            .header("x-forwarded-for", ip);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send(&self.collect).await
    }

    /// `GET /analytics/traffic?site=<site>&<query>` as the owner, which must answer 200.
    pub async fn traffic(&self, site: &str, query: &str) -> Value {
        let r = get("/analytics/traffic")
            .bearer(&self.owner.token)
            .tenant(self.tenant)
            .query(&format!("site={site}&{query}"))
            .send(&self.query)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }
}

/// Today in UTC, `YYYY-MM-DD`.
pub fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// 3 visitors: A views 3 pages (one visit), B 1 page from Google (a bounce), C 2 pages via a
/// newsletter UTM, plus a custom event and a bot.
pub async fn traffic_of_three(w: &World, key: &str) {
    let ev = |url: &str, referrer: Option<&str>| json!({"url": url, "referrer": referrer, "screen_width": 1280});
    let r = w
        .send(
            json!({"site_key": key, "events": [ev("https://shop.test/", None), ev("https://shop.test/pricing", Some("https://shop.test/")), ev("https://shop.test/signup", None)]}),
            CHROME,
            "198.51.100.1",
            Some("https://shop.test"),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["accepted"], 3);
    assert_eq!(r.headers["access-control-allow-origin"], "https://shop.test");
    let r = w
        .send(
            json!({"site_key": key, "url": "https://shop.test/blog", "referrer": "https://www.google.com/"}),
            FIREFOX_MAC,
            "198.51.100.2",
            None,
        )
        .await;
    assert_eq!(r.json["accepted"], 1);
    let r = w
        .send(
            json!({"site_key": key, "events": [
                {"url": "https://shop.test/?utm_source=newsletter&utm_medium=email"},
                {"url": "https://shop.test/pricing"},
                {"name": "Signup", "url": "https://shop.test/pricing", "props": {"plan": "pro"}},
                {"url": "not a url"}]}),
            CHROME,
            "198.51.100.3",
            None,
        )
        .await;
    assert_eq!(r.json["accepted"], 3);
    assert_eq!(r.json["dropped"], json!([{"index": 3, "reason": "url_invalid"}]));
    let bot = w
        .send(
            json!({"site_key": key, "url": "https://shop.test/"}),
            "Googlebot/2.1 (+http://www.google.com/bot.html)",
            "66.249.66.1",
            None,
        )
        .await;
    assert_eq!(bot.json["dropped"][0]["reason"], "bot");
}

/// The totals of [`traffic_of_three`] folded once: 6 pageviews, 3 visits and visitors, one bounce.
pub fn expect_totals(t: &Value) {
    let totals = &t["totals"];
    assert_eq!(totals["pageviews"], 6, "{t}");
    assert_eq!(totals["visits"], 3);
    assert_eq!(totals["visitors"], 3);
    assert_eq!(totals["bounce_rate"], 0.333);
}
