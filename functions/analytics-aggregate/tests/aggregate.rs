//! The analytics-aggregate worker (`shared::services::analytics::aggregate`) on real Redis and
//! Postgres: stopped between its steps (read, commit, XACK) and with a batch read ahead, it
//! neither loses nor double-counts; entries it cannot store are set aside with their reason and
//! never stall it. Traffic goes in through the collect function's router (or straight into the
//! stream) and is read back through the traffic API. The world is `testkit::analytics`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{Value, json};
use shared::services::analytics::aggregate::StopAfter;
use testkit::analytics::{CHROME, FIREFOX_MAC, World, expect_totals, today, traffic_of_three};
use uuid::Uuid;

/// The analytics world (`testkit::analytics`) over the collect and query functions.
async fn world() -> World {
    World::new(analytics_query::router, analytics_collect::router).await
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
