//! Analytics end to end on real Redis and Postgres: sites, collect (in-process through the
//! collect function's router), the aggregator (with crashes between its steps), and the
//! traffic API with exact totals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{Value, json};
use shared::domain::Role;
use shared::services::analytics::aggregate::{Aggregator, StopAfter};
use shared::services::analytics::collect::Collector;
use testkit::{Resp, TestApp, TestUser, get, post, redis_url};
use uuid::Uuid;

const CHROME: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const FIREFOX_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:132.0) Gecko/20100101 Firefox/132.0";

struct World {
    app: TestApp,
    query: axum::Router,
    collect: axum::Router,
    collector: Collector,
    redis: shared::adapters::redis::Redis,
    owner: TestUser,
    tenant: Uuid,
}

async fn world() -> World {
    let app = TestApp::new().await;
    let redis = shared::adapters::redis::connect(&redis_url())
        .await
        .expect("Redis: run local/up --services-only");
    let mut collector = Collector::with_redis(redis.clone(), app.db.app.clone());
    collector.stream = format!("analytics_test_{}", Uuid::new_v4().simple());
    let collect = analytics_collect::router(collector.clone());
    let query = analytics_query::router(app.core.clone());
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

impl World {
    async fn site(&self, domain: &str) -> Value {
        let r = post("/analytics/sites")
            .bearer(&self.owner.token)
            .tenant(self.tenant)
            .json(json!({"name": domain, "domain": domain}))
            .send(&self.query)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json
    }

    fn aggregator(&self) -> Aggregator {
        let mut a = Aggregator::new(self.app.db.app.clone(), self.redis.clone());
        a.stream = self.collector.stream.clone();
        a.batch = 7; // small batches: many steps
        a
    }

    async fn send(&self, body: Value, ua: &str, ip: &str, origin: Option<&str>) -> Resp {
        let mut r = post("/analytics/collect")
            .json(body)
            .header("user-agent", ua)
            .header("x-forwarded-for", ip);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send(&self.collect).await
    }

    async fn traffic(&self, site: &str, query: &str) -> Value {
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

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// 3 visitors: A views 3 pages (one visit), B 1 page from Google (a bounce), C 2 pages via a
/// newsletter UTM, plus a custom event and a bot.
async fn traffic_of_three(w: &World, key: &str) {
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

fn expect_totals(t: &Value) {
    let totals = &t["totals"];
    assert_eq!(totals["pageviews"], 6, "{t}");
    assert_eq!(totals["visits"], 3);
    assert_eq!(totals["visitors"], 3);
    assert_eq!(totals["bounce_rate"], 0.333);
}

#[tokio::test]
async fn collected_traffic_shows_up_exactly_in_the_traffic_api() {
    let w = world().await;
    let site = w.site("shop.test").await;
    let (id, key) = (site["id"].as_str().unwrap(), site["site_key"].as_str().unwrap());
    assert_eq!(
        site["allowed_origins"],
        json!(["https://shop.test", "https://www.shop.test"])
    );
    traffic_of_three(&w, key).await;
    let report = w.aggregator().run(100).await.unwrap();
    assert_eq!(report.folded, 7, "6 pageviews and 1 custom event");
    assert_eq!(report.lag, Some(0), "nothing left unread");

    let day = today();
    let t = w.traffic(id, &format!("from={day}&to={day}&interval=hour")).await;
    expect_totals(&t);
    assert_eq!(t["series"].as_array().unwrap().len(), 24);
    assert_eq!(t["previous"]["totals"]["pageviews"], 0);
    let t = w.traffic(id, &format!("from={day}&to={day}")).await;
    assert_eq!(t["series"].as_array().unwrap().len(), 1);
    assert_eq!(t["series"][0]["pageviews"], 6);

    let pages = get("/analytics/top-pages")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .query(&format!("site={id}&from={day}&to={day}"))
        .send(&w.query)
        .await;
    // "/" (A and C) and "/pricing" (A and C) have 2 pageviews each; ties go by value.
    assert_eq!(pages.json[0], json!({"value": "/", "pageviews": 2, "visitors": 2}));
    assert_eq!(
        pages.json[1],
        json!({"value": "/pricing", "pageviews": 2, "visitors": 2})
    );
    assert_eq!(pages.json.as_array().unwrap().len(), 4);
    let sources = get("/analytics/referrers")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .query(&format!("site={id}&from={day}&to={day}"))
        .send(&w.query)
        .await;
    let sources: Vec<(String, i64)> = sources
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["value"].as_str().unwrap().to_owned(), s["visits"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        sources,
        [
            ("Direct / None".to_owned(), 1),
            ("newsletter".to_owned(), 1),
            ("google.com".to_owned(), 1)
        ]
    );
    let utm = get("/analytics/referrers")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .query(&format!("site={id}&from={day}&to={day}&by=utm_medium"))
        .send(&w.query)
        .await;
    assert_eq!(utm.json[0]["value"], "email");

    // Filters: the referrers of one page, the pages of one source or UTM value.
    let ranked = |path: &'static str, q: &str| {
        let q = format!("site={id}&from={day}&to={day}&{q}");
        let w = &w;
        async move {
            get(path)
                .bearer(&w.owner.token)
                .tenant(w.tenant)
                .query(&q)
                .send(&w.query)
                .await
        }
    };
    let r = ranked("/analytics/referrers", "page=/pricing").await;
    assert_eq!(
        r.json,
        json!([{"value": "Direct / None", "pageviews": 1, "visitors": 1},
               {"value": "newsletter", "pageviews": 1, "visitors": 1}])
    );
    let r = ranked("/analytics/referrers", "page=/pricing&by=utm_medium").await;
    assert_eq!(r.json, json!([{"value": "email", "pageviews": 1, "visitors": 1}]));
    let r = ranked("/analytics/referrers", "page=/pricing&filter=Direct%20/%20None").await;
    assert_eq!(r.json.as_array().unwrap().len(), 1);
    let values = |r: &Resp| -> Vec<String> {
        r.json
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["value"].as_str().unwrap().to_owned())
            .collect()
    };
    let r = ranked("/analytics/top-pages", "source=newsletter").await;
    assert_eq!(values(&r), ["/", "/pricing"]);
    let r = ranked("/analytics/top-pages", "source=Direct%20/%20None").await;
    assert_eq!(values(&r), ["/", "/pricing", "/signup"]);
    let r = ranked("/analytics/top-pages", "source=google.com").await;
    assert_eq!(values(&r), ["/blog"]);
    let r = ranked("/analytics/top-pages", "utm_medium=email&filter=/pricing").await;
    assert_eq!(values(&r), ["/pricing"]);
    let r = ranked("/analytics/top-pages", "source=google.com&utm_medium=email").await;
    assert_eq!(r.error_fields(), ["source"]);

    // Running again folds nothing more.
    assert_eq!(w.aggregator().run(10).await.unwrap().folded, 0);
    expect_totals(&w.traffic(id, &format!("from={day}&to={day}")).await);
    // What arrives after a run is its lag until the next one.
    w.send(
        json!({"site_key": key, "url": "https://shop.test/later"}),
        FIREFOX_MAC,
        "203.0.113.77",
        None,
    )
    .await;
    assert_eq!(w.aggregator().lag().await.unwrap(), Some(1));
    let report = w.aggregator().run(10).await.unwrap();
    assert_eq!((report.folded, report.lag), (1, Some(0)));
}

#[tokio::test]
async fn a_crash_between_read_and_commit_or_commit_and_ack_neither_loses_nor_double_counts() {
    let w = world().await;
    let site = w.site("shop.test").await;
    let (id, key) = (site["id"].as_str().unwrap(), site["site_key"].as_str().unwrap());
    traffic_of_three(&w, key).await;
    let day = today();

    // Killed after reading: the batch stays pending, the next run (another consumer) reclaims it.
    let first = w.aggregator();
    let read = first.step(StopAfter::Read).await.unwrap();
    assert_eq!(read.read, 7);
    // Killed after committing, before XACK: the next run finds the entries already folded.
    let second = w.aggregator();
    let step = second.step(StopAfter::Commit).await.unwrap();
    assert!(step.reclaimed, "the pending batch of the dead consumer was reclaimed");
    assert_eq!(step.folded, 7);
    let third = w.aggregator();
    let step = third.step(StopAfter::Nothing).await.unwrap();
    assert_eq!(
        (step.read, step.folded, step.skipped),
        (7, 0, 7),
        "acknowledged, not folded again"
    );
    expect_totals(&w.traffic(id, &format!("from={day}&to={day}")).await);

    // New traffic after the crashes still adds up.
    w.send(
        json!({"site_key": key, "url": "https://shop.test/"}),
        FIREFOX_MAC,
        "203.0.113.9",
        None,
    )
    .await;
    w.aggregator().run(10).await.unwrap();
    let t = w.traffic(id, &format!("from={day}&to={day}")).await;
    assert_eq!(
        (t["totals"]["pageviews"].as_i64(), t["totals"]["visitors"].as_i64()),
        (Some(7), Some(4))
    );
}

#[tokio::test]
async fn a_batch_read_ahead_is_neither_lost_in_a_crash_nor_folded_twice_after_a_takeover() {
    let w = world().await;
    let site = w.site("shop.test").await;
    let (id, key) = (site["id"].as_str().unwrap(), site["site_key"].as_str().unwrap());
    traffic_of_three(&w, key).await;
    let day = today();
    let small = |batch| {
        let mut a = w.aggregator();
        a.batch = batch;
        a
    };

    // Folds 3, reads the next 3 ahead, then dies: those stay pending and the next run folds them.
    let first = small(3);
    let (step, ahead) = first.step_ahead(StopAfter::Nothing, None, true).await.unwrap();
    assert_eq!((step.read, step.folded), (3, 3));
    assert!(ahead.is_some());
    drop(ahead);
    let report = small(2).run(100).await.unwrap();
    assert_eq!(report.folded, 4, "the read-ahead entries and the rest");
    assert!(report.reclaimed);
    expect_totals(&w.traffic(id, &format!("from={day}&to={day}")).await);

    // A run reads ahead, another run takes the entries over and folds them, then the first goes
    // on with what it read: acknowledged, not folded again.
    w.send(
        json!({"site_key": key, "url": "https://shop.test/"}),
        FIREFOX_MAC,
        "203.0.113.9",
        None,
    )
    .await;
    w.send(
        json!({"site_key": key, "url": "https://shop.test/about"}),
        FIREFOX_MAC,
        "203.0.113.10",
        None,
    )
    .await;
    let slow = small(1);
    let (step, ahead) = slow.step_ahead(StopAfter::Nothing, None, true).await.unwrap();
    assert_eq!(step.folded, 1);
    assert_eq!(
        small(5).run(10).await.unwrap().folded,
        1,
        "the takeover folds the read-ahead entry"
    );
    let (step, _) = slow.step_ahead(StopAfter::Nothing, ahead, true).await.unwrap();
    assert_eq!((step.read, step.folded, step.skipped), (1, 0, 1));
    let t = w.traffic(id, &format!("from={day}&to={day}")).await;
    assert_eq!(
        (t["totals"]["pageviews"].as_i64(), t["totals"]["visitors"].as_i64()),
        (Some(8), Some(5))
    );
    // Nothing is left pending.
    assert_eq!(small(5).run(10).await.unwrap().read, 0);
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

#[tokio::test]
async fn sites_are_validated_limited_by_the_plan_and_isolated_per_tenant() {
    let w = world().await;
    let r = post("/analytics/sites")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .json(json!({"name": "x", "domain": "https://bad/path", "timezone": "Mars/Olympus", "allowed_origins": ["example.com"]}))
        .send(&w.query)
        .await;
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(fields, ["allowed_origins", "domain", "timezone"]);
    let site = w.site("one.test").await;
    assert!(site["site_key"].as_str().unwrap().starts_with("site_"));
    // Free allows one site.
    let r = post("/analytics/sites")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .json(json!({"name": "two", "domain": "two.test"}))
        .send(&w.query)
        .await;
    assert_eq!(r.problem(402)["limit"]["name"], "sites");
    w.app.subscribe(w.tenant, "growth").await;
    let r = post("/analytics/sites")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .json(json!({"name": "again", "domain": "one.test"}))
        .send(&w.query)
        .await;
    r.problem(409);

    // Another tenant: its id answers 404, its list is empty.
    let other = w.app.user("other").await;
    let other_tenant = w.app.tenant(&other).await;
    let day = today();
    let r = get("/analytics/traffic")
        .bearer(&other.token)
        .tenant(other_tenant)
        .query(&format!("site={}&from={day}&to={day}", site["id"].as_str().unwrap()))
        .send(&w.query)
        .await;
    r.problem(404);
    let r = get("/analytics/sites")
        .bearer(&other.token)
        .tenant(other_tenant)
        .send(&w.query)
        .await;
    assert_eq!(r.json["items"], json!([]));
    let viewer = w.app.user("viewer").await;
    w.app.add_member(w.tenant, &viewer, Role::Viewer).await;
    let r = post("/analytics/sites")
        .bearer(&viewer.token)
        .tenant(w.tenant)
        .json(json!({"name": "v", "domain": "v.test"}))
        .send(&w.query)
        .await;
    r.problem(403);
    let r = get("/analytics/traffic")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .query(&format!(
            "site={}&from={day}&to=2020-01-01",
            site["id"].as_str().unwrap()
        ))
        .send(&w.query)
        .await;
    assert_eq!(r.error_fields(), ["to"]);
    let r = get("/analytics/traffic")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .query(&format!(
            "site={}&from=1999-12-31&to=2000-01-01",
            site["id"].as_str().unwrap()
        ))
        .send(&w.query)
        .await;
    assert_eq!(r.error_fields(), ["from"]);
}

#[tokio::test]
async fn entries_that_cannot_be_stored_never_stall_the_aggregator() {
    let w = world().await;
    let site = w.site("shop.test").await;
    let (id, key) = (site["id"].as_str().unwrap(), site["site_key"].as_str().unwrap());
    // Written by something other than collect: a NUL in a text, and not an event at all.
    let poisoned = json!({"site": id, "tenant": w.tenant, "ts": chrono::Utc::now().timestamp_millis(),
        "name": "pageview", "path": "/x\u{0}", "source": "", "utm_source": "", "utm_medium": "", "utm_campaign": "",
        "device": "desktop", "browser": "Chrome", "os": "Linux", "visitor": "00ff"});
    for entry in [poisoned.to_string(), "not json".to_owned()] {
        let _: String = redis::cmd("XADD")
            .arg(&w.collector.stream)
            .arg("*")
            .arg("e")
            .arg(entry)
            .query_async(&mut w.redis.clone())
            .await
            .unwrap();
    }
    // And events of a site that is deleted before they are folded.
    w.app.subscribe(w.tenant, "scale").await;
    let doomed = w.site("gone.test").await;
    let r = w
        .send(
            json!({"site_key": doomed["site_key"], "url": "https://gone.test/"}),
            CHROME,
            "1.2.3.4",
            None,
        )
        .await;
    assert_eq!(r.status, 202);
    sqlx::query("delete from analytics_sites where id = $1::uuid")
        .bind(doomed["id"].as_str().unwrap())
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    w.send(
        json!({"site_key": key, "url": "https://shop.test/"}),
        CHROME,
        "1.2.3.5",
        None,
    )
    .await;

    let report = w.aggregator().run(10).await.unwrap();
    assert_eq!(
        (report.malformed, report.orphaned, report.folded),
        (2, 1, 1),
        "{report:?}"
    );
    let day = today();
    assert_eq!(
        w.traffic(id, &format!("from={day}&to={day}")).await["totals"]["pageviews"],
        1
    );
    let pending: (i64,) = redis::cmd("XPENDING")
        .arg(&w.collector.stream)
        .arg("aggregator")
        .query_async::<redis::Value>(&mut w.redis.clone())
        .await
        .map(|v| match v {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => (*n,),
                _ => (-1,),
            },
            _ => (-1,),
        })
        .unwrap();
    assert_eq!(pending, (0,), "everything acknowledged");
}

/// Random hex (incompressible enough that Postgres cannot squeeze it into an index row).
fn random_text(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        s.push_str(&Uuid::new_v4().simple().to_string());
    }
    s.truncate(len);
    s
}

/// A host of `len` bytes: labels of 60 random characters.
fn random_host(len: usize) -> String {
    let mut host = String::new();
    while host.len() < len {
        host.push_str(&random_text(60));
        host.push('.');
    }
    host.truncate(len - 5);
    format!("{host}.test")
}

async fn xadd(w: &World, entry: &Value) {
    let _: String = redis::cmd("XADD")
        .arg(&w.collector.stream)
        .arg("*")
        .arg("e")
        .arg(entry.to_string())
        .query_async(&mut w.redis.clone())
        .await
        .unwrap();
}

#[tokio::test]
async fn one_poisoned_event_never_stops_the_fold_it_is_set_aside_with_its_reason() {
    let w = world().await;
    let site = w.site("shop.test").await;
    let (id, key) = (site["id"].as_str().unwrap(), site["site_key"].as_str().unwrap());
    traffic_of_three(&w, key).await;
    // Through collect: a 3 KB referrer host is clipped to a DNS name's 253 bytes and counts; a
    // 10 KB UTM value makes the URL too long and the event is dropped.
    let long_host = random_host(3000);
    let r = w
        .send(
            json!({"site_key": key, "events": [
                {"url": "https://shop.test/deals", "referrer": format!("https://{long_host}/x")},
                {"url": format!("https://shop.test/?utm_campaign={}", random_text(10_000))}]}),
            CHROME,
            "198.51.100.9",
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["accepted"], 1);
    assert_eq!(r.json["dropped"], json!([{"index": 1, "reason": "url_too_long"}]));
    // Written by something else (an older collect, a script): the same texts unclipped, and an
    // event Postgres itself refuses (a time before 4713 BC) among the good ones.
    let now = chrono::Utc::now().timestamp_millis();
    let raw = |ts: i64, source: &str, campaign: &str| {
        json!({"site": id, "tenant": w.tenant, "ts": ts, "name": "pageview", "path": "/raw", "source": source,
            "utm_source": "", "utm_medium": "", "utm_campaign": campaign, "device": "desktop", "browser": "Chrome",
            "os": "Linux", "visitor": "00ff00ff00ff00ff00ff00ff00ff00ff"})
    };
    xadd(&w, &raw(now, &random_host(3000), "")).await;
    xadd(&w, &raw(now, "", &random_text(10_000))).await;
    xadd(&w, &raw(-400_000_000_000_000, "", "")).await;
    w.send(
        json!({"site_key": key, "url": "https://shop.test/after"}),
        FIREFOX_MAC,
        "198.51.100.10",
        None,
    )
    .await;

    let report = w.aggregator().run(100).await.unwrap();
    assert_eq!(
        (
            report.folded,
            report.malformed,
            report.refused,
            report.set_aside,
            report.lag
        ),
        (9, 2, 1, Some(3), Some(0)),
        "{report:?}"
    );
    let day = today();
    let totals = &w.traffic(id, &format!("from={day}&to={day}")).await["totals"];
    assert_eq!(
        (&totals["pageviews"], &totals["visits"], &totals["visitors"]),
        (&json!(8), &json!(5), &json!(5)),
        "the good events exactly: 6 + the clipped referrer + the one after"
    );
    let clipped: (String,) = sqlx::query_as(
        "select value from analytics_rollups where site_id = $1::uuid and dimension = 'source' and value like '%.%' \
         and value <> 'google.com'",
    )
    .bind(id)
    .fetch_one(&w.app.db.owner)
    .await
    .unwrap();
    assert_eq!(clipped.0.len(), 253);
    assert!(long_host.starts_with(&clipped.0));

    let aside: Vec<(String, Option<Uuid>, i64)> = sqlx::query_as(
        "select reason, tenant_id, length(entry)::bigint from analytics_dead_events where stream = $1 order by entry_id",
    )
    .bind(&w.collector.stream)
    .fetch_all(&w.app.db.owner)
    .await
    .unwrap();
    let reasons: Vec<&str> = aside.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(reasons[..2], ["source_too_long", "utm_too_long"]);
    assert!(reasons[2].starts_with("postgres 22008"), "{reasons:?}");
    assert!(aside.iter().all(|(_, t, len)| *t == Some(w.tenant) && *len > 0));

    // The next run is not stuck: nothing pending, new events fold.
    w.send(
        json!({"site_key": key, "url": "https://shop.test/next"}),
        FIREFOX_MAC,
        "198.51.100.11",
        None,
    )
    .await;
    let report = w.aggregator().run(100).await.unwrap();
    assert_eq!((report.folded, report.refused, report.set_aside), (1, 0, Some(3)));
    assert_eq!(
        w.traffic(id, &format!("from={day}&to={day}")).await["totals"]["pageviews"],
        9
    );
}
