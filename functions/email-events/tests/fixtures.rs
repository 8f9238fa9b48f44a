//! The providers' own payloads against real Postgres, from ../shared/fixtures (skipped with a
//! note outside CI when absent; a failure under CI): SendGrid's signed test vectors through the
//! whole path, its documented events and Mailgun's adding up to stats computed by hand. Needs
//! `local/up --services-only`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use chrono::DateTime;
use common::*;
use serde_json::{Value, json};
use shared::services::connectors::catalog::Kind;
use shared::services::marketing::events::{self, EventsError, Received};
use uuid::Uuid;

fn read(dir: &std::path::Path, name: &str) -> Value {
    let path = dir.join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[tokio::test]
async fn sendgrids_signed_test_vectors_verify_through_the_whole_path() {
    let Some(dir) = testkit::shared_fixtures("sendgrid") else {
        return;
    };
    let vectors = read(&dir, "signed-event-webhook__test-vectors__sendgrid-nodejs-spec.json");
    let w = world().await;
    let key = w.sendgrid_path.rsplit('/').next().unwrap().to_owned();
    for v in vectors["vectors"].as_array().unwrap() {
        save(
            &w.connectors,
            w.tenant,
            Kind::Sendgrid,
            json!({"webhook_public_key": v["public_key"]}),
        )
        .await;
        let ts = v["timestamp"].as_str().unwrap();
        let body = v["raw_body"].as_str().unwrap().as_bytes();
        let mut headers = http::HeaderMap::new();
        headers.insert(SIGNATURE, v["signature"].as_str().unwrap().parse().unwrap());
        headers.insert(TIMESTAMP, ts.parse().unwrap());
        let signed_at = DateTime::from_timestamp(ts.parse().unwrap(), 0).unwrap();
        // As of its signing time it verifies; its events name none of our messages.
        let n = v["events"].as_array().unwrap().len();
        let got = events::receive(&w.connectors, "sendgrid", &key, &headers, body, signed_at)
            .await
            .unwrap();
        assert_eq!(
            got,
            Received {
                ignored: n,
                ..Received::default()
            },
            "{}",
            v["name"]
        );
        // Without its trailing CRLF it does not; ten minutes and a second later it is stale.
        let trimmed = body.strip_suffix(b"\r\n").unwrap();
        let later = signed_at + chrono::Duration::seconds(601);
        for (body, now) in [(trimmed, signed_at), (body, later)] {
            let r = events::receive(&w.connectors, "sendgrid", &key, &headers, body, now).await;
            assert!(matches!(r, Err(EventsError::Unauthorized(_))), "{r:?}");
        }
        // And through the router, now, it is stale.
        let r = w
            .post(
                &w.sendgrid_path,
                &[(SIGNATURE, v["signature"].as_str().unwrap()), (TIMESTAMP, ts)],
                body.to_vec(),
            )
            .await;
        r.problem(401);
    }
}

/// Each docs example gets our message id (as the custom args we send put it there).
fn ours(events: &Value, recipient: Uuid) -> Vec<Value> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e["message_id"] = json!(recipient.to_string());
            e
        })
        .collect()
}

#[tokio::test]
async fn sendgrids_documented_events_add_up_to_the_stats_computed_by_hand() {
    let Some(dir) = testkit::shared_fixtures("sendgrid") else {
        return;
    };
    let w = world().await;
    // The per-event examples: 12 events, one address; the two bounces share one
    // sg_event_id (the second a duplicate), group_resubscribe is not tracked.
    let (c, r) = campaign(&w.app, w.tenant, &["example@test.com"]).await;
    let examples = read(&dir, "event-webhook__per-event-examples__sendgrid-docs.json");
    let resp = w.sendgrid(&ours(&examples, r[0])).await;
    assert_eq!(received(&resp), (10, 1, 1, 0));
    let stats = serde_json::to_value(w.stats(c).await).unwrap();
    assert_eq!(
        stats,
        json!({
            "sent": 1, "delivered": 1, "opened": {"total": 1, "unique": 1}, "clicked": {"total": 1, "unique": 1},
            "bounced": {"hard": 1, "soft": 0}, "complained": 1, "unsubscribed": 1,
            "links": [{"url": "http://www.sendgrid.com/", "total": 1, "unique": 1}], "variants": [],
        })
    );
    // A spam report is the strongest of what it says about the address.
    assert_eq!(w.suppression("example@test.com").await.as_deref(), Some("complaint"));
    let t = at(1_513_299_569);
    assert_eq!(
        w.recipient(r[0]).await,
        json!({"delivered_at": t, "opened_at": t, "clicked_at": t, "bounced_at": t, "bounce_kind": "hard",
               "complained_at": t, "unsubscribed_at": t})
    );
    // The all-types example: every event has the placeholder id "sg_event_id", so only the
    // first (processed) is new — in another campaign, after the per-event examples, whose
    // ids differ.
    let (c2, r2) = campaign(&w.app, w.tenant, &["example@test.com"]).await;
    let all = read(&dir, "event-webhook__all-event-types__sendgrid-docs-example.json");
    let resp = w.sendgrid(&ours(&all, r2[0])).await;
    assert_eq!(received(&resp), (1, 9, 1, 0));
    let stats = w.stats(c2).await;
    assert_eq!((stats.sent, stats.delivered, stats.opened.total), (1, 0, 0));
}

#[tokio::test]
async fn mailguns_documented_events_add_up_to_the_stats_computed_by_hand() {
    let Some(dir) = testkit::shared_fixtures("mailgun") else {
        return;
    };
    let w = world().await;
    let files = [
        "event-data__accepted__mailgun-docs.json",
        "event-data__delivered__mailgun-docs.json",
        "event-data__failed-permanent__mailgun-docs.json",
        "event-data__failed-temporary__mailgun-docs.json",
    ];
    let mut data: Vec<Value> = files.iter().map(|f| read(&dir, f)).collect();
    let emails: Vec<String> = data
        .iter()
        .map(|d| d["recipient"].as_str().unwrap().to_lowercase())
        .collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    let (c, r) = campaign(&w.app, w.tenant, &refs).await;
    for (d, id) in data.iter_mut().zip(&r) {
        d["user-variables"] = json!({"message_id": id.to_string()});
    }
    // accepted → processed, delivered, failed permanent `suppress-bounce` → a drop (Mailgun
    // did not try), failed temporary → a deferral: each stored once.
    for d in &data {
        assert_eq!(received(&w.mailgun(d.clone()).await), (1, 0, 0, 0));
    }
    // A retry of the same event (new token and signature) is a duplicate.
    assert_eq!(received(&w.mailgun(data[1].clone()).await), (0, 1, 0, 0));
    let stats = w.stats(c).await;
    assert_eq!(
        (
            stats.delivered,
            stats.opened.total,
            stats.bounced.hard,
            stats.bounced.soft
        ),
        (1, 0, 0, 0)
    );
    let kinds: Vec<String> = sqlx::query_scalar(
        "select kind || ':' || provider_event_id from marketing_email_events where campaign_id = $1 order by occurred_at",
    )
    .bind(c)
    .fetch_all(&w.app.db.owner)
    .await
    .unwrap();
    assert_eq!(
        kinds,
        [
            "processed:jxVuhYlhReaK3QsggHfFRA@2018-06-22",
            "delivered:hK7mQVt1QtqRiOfQXta4sw@2018-06-22",
            "dropped:pl271FzxTTmGRW8Uj3dUWw@2018-06-22",
            "deferred:xYrATi63Rke8EC_s7EoJeA@2022-10-06",
        ]
    );
    assert_eq!(
        w.recipient(r[1]).await["delivered_at"],
        json!(DateTime::from_timestamp_micros(1_529_692_199_626_182).unwrap())
    );
    // Nothing here suppresses (a drop is the provider's own list, not a bounce we saw).
    let suppressed: i64 = sqlx::query_scalar("select count(*) from marketing_suppressions")
        .fetch_one(&w.app.db.owner)
        .await
        .unwrap();
    assert_eq!(suppressed, 0);
    // The documented signature block (its key is not published) is refused.
    let block = read(&dir, "webhook_signature_block.json");
    let body = json!({"signature": block, "event-data": data[1]})
        .to_string()
        .into_bytes();
    w.post(&w.mailgun_path, &[], body).await.problem(401);
}
