//! analytics-query end to end on real Redis and Postgres: sites (validation, the plan's limit,
//! tenants), and the traffic API with exact totals over traffic collected in process (through
//! the collect function's router) and folded by the aggregator. The world is
//! `testkit::analytics`; collect's refusals are tested in analytics-collect, the aggregator's
//! crashes and poisoned entries in analytics-aggregate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::json;
use shared::domain::Role;
use testkit::analytics::{FIREFOX_MAC, World, expect_totals, today, traffic_of_three};
use testkit::{Resp, get, post};

/// The analytics world (`testkit::analytics`) over the collect and query functions.
async fn world() -> World {
    World::new(analytics_query::router, analytics_collect::router).await
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
