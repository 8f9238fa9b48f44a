//! email-events against real Postgres: SendGrid's signed batches and Mailgun's signed events
//! folded into recipients and campaign stats once each, in any order; forged, tampered, stale,
//! replayed and unkeyed deliveries refused with nothing changed; other tenants' messages
//! ignored; the set-based recording equal to `record_event`; the events/ files. Needs
//! `local/up --services-only`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::{Value, json};
use shared::services::connectors::catalog::Kind;
use shared::services::marketing::campaigns::EmailProvider;
use shared::services::marketing::campaigns::report::{self, EventKind};
use shared::services::marketing::events::{self, Received};
use shared::services::providers::mailgun;
use testkit::{Resp, TestApp};
use uuid::Uuid;

/// One campaign's worth of SendGrid events for recipients `[a, b, c]`: 12 that count, and an
/// event without our id, one naming a message nobody has, an untracked type and a malformed one.
fn campaign_events(prefix: &str, r: &[Uuid]) -> Vec<Value> {
    let id = |s: &str| format!("{prefix}-{s}");
    let none = json!({});
    vec![
        sg("processed", &id("p-a"), r[0], T, none.clone()),
        sg("processed", &id("p-b"), r[1], T, none.clone()),
        sg("processed", &id("p-c"), r[2], T, none.clone()),
        sg("delivered", &id("d-a"), r[0], T + 10, json!({"response": "250 OK"})),
        sg("delivered", &id("d-b"), r[1], T + 12, json!({"response": "250 OK"})),
        sg("open", &id("o-a1"), r[0], T + 30, none.clone()),
        sg("open", &id("o-a2"), r[0], T + 20, none.clone()),
        sg("open", &id("o-b"), r[1], T + 40, none.clone()),
        sg(
            "click",
            &id("c-a1"),
            r[0],
            T + 50,
            json!({"url": "https://shop.example/sale"}),
        ),
        sg(
            "click",
            &id("c-a2"),
            r[0],
            T + 55,
            json!({"url": "https://shop.example/sale"}),
        ),
        sg(
            "click",
            &id("c-b"),
            r[1],
            T + 60,
            json!({"url": "https://shop.example/new"}),
        ),
        sg(
            "bounce",
            &id("b-c"),
            r[2],
            T + 5,
            json!({"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 no such user"}),
        ),
        json!({"email": "x@example.com", "event": "open", "sg_event_id": id("o-foreign"), "timestamp": T}),
        sg("open", &id("o-nobody"), Uuid::now_v7(), T, none.clone()),
        sg("group_resubscribe", &id("g-a"), r[0], T, json!({"asm_group_id": 10})),
        json!({"email": "x@example.com", "event": "open", "timestamp": T}),
    ]
}

fn expected_stats() -> Value {
    json!({
        "sent": 3, "delivered": 2, "opened": {"total": 3, "unique": 2}, "clicked": {"total": 3, "unique": 2},
        "bounced": {"hard": 1, "soft": 0}, "complained": 0, "unsubscribed": 0,
        "links": [{"url": "https://shop.example/sale", "total": 2, "unique": 1},
                  {"url": "https://shop.example/new", "total": 1, "unique": 1}],
        "variants": [],
    })
}

#[tokio::test]
async fn a_signed_sendgrid_batch_is_folded_once_and_any_order_gives_the_same_stats() {
    let w = world().await;
    let (c1, r) = campaign(
        &w.app,
        w.tenant,
        &["ann@example.com", "bob@example.com", "cy@example.com"],
    )
    .await;
    // Given a signed batch, when it is posted, then its events are stored and counted
    let body = sg_body(&campaign_events("one", &r));
    let first = w.sendgrid_at(&body, Utc::now().timestamp()).await;
    assert_eq!(received(&first), (12, 0, 3, 1));
    // and folded into the recipients (the first time of each kind, whatever the order)
    assert_eq!(
        w.recipient(r[0]).await,
        json!({"delivered_at": at(T + 10), "opened_at": at(T + 20), "clicked_at": at(T + 50), "bounced_at": null,
               "bounce_kind": null, "complained_at": null, "unsubscribed_at": null})
    );
    assert_eq!(w.recipient(r[2]).await["bounce_kind"], "hard");
    assert_eq!(w.recipient(r[2]).await["bounced_at"], at(T + 5));
    let stats = w.stats(c1).await;
    assert_eq!(serde_json::to_value(&stats).unwrap(), expected_stats());
    // and the hard bounce suppressed its address at once.
    assert_eq!(w.suppression("cy@example.com").await.as_deref(), Some("hard_bounce"));

    // The same batch again (SendGrid's retry, signed anew): all duplicates, nothing changes.
    let before = w.fingerprint().await;
    let again = w.sendgrid_at(&body, Utc::now().timestamp() + 1).await;
    assert_eq!(received(&again), (0, 12, 3, 1));
    assert_eq!(w.stats(c1).await, stats);
    let after = w.fingerprint().await;
    assert_eq!(after["recipients"], before["recipients"]);
    assert_eq!(after["events"], before["events"]);

    // Another campaign's same events, reversed and split over two overlapping deliveries,
    // give the same stats.
    let (c2, r2) = campaign(
        &w.app,
        w.tenant,
        &["dee@example.com", "eve@example.com", "fay@example.com"],
    )
    .await;
    let mut events = campaign_events("two", &r2);
    events.reverse();
    // (reversed: the four uncounted events first, then the twelve that count)
    let (late, early) = events.split_at(9);
    let mut overlap = early.to_vec();
    overlap.extend_from_slice(&late[4..7]);
    assert_eq!(received(&w.sendgrid(&overlap).await), (10, 0, 0, 0));
    assert_eq!(received(&w.sendgrid(late).await), (2, 3, 3, 1));
    assert_eq!(w.stats(c2).await, stats);
    assert_eq!(w.recipient(r2[0]).await, w.recipient(r[0]).await);
}

#[tokio::test]
async fn forged_tampered_stale_replayed_or_unkeyed_deliveries_are_refused_and_change_nothing() {
    let w = world().await;
    let (_, r) = campaign(&w.app, w.tenant, &["ann@example.com"]).await;
    let events = vec![
        sg("delivered", "sg-d", r[0], T, json!({})),
        sg("bounce", "sg-b", r[0], T, json!({"status": "5.1.1"})),
    ];
    let body = sg_body(&events);
    let now = Utc::now().timestamp();
    let ts = now.to_string();
    let before = w.fingerprint().await;
    let refused = |r: &Resp| {
        r.problem(401);
    };

    // Forged: signed with another key.
    let forged = SendgridKey::new().sign(&ts, &body);
    refused(
        &w.post(
            &w.sendgrid_path,
            &[(SIGNATURE, &forged), (TIMESTAMP, &ts)],
            body.clone(),
        )
        .await,
    );
    // Tampered: signed, then one byte changed.
    let sig = w.sendgrid.sign(&ts, &body);
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("5.1.1", "4.1.1")
        .into_bytes();
    refused(
        &w.post(&w.sendgrid_path, &[(SIGNATURE, &sig), (TIMESTAMP, &ts)], tampered)
            .await,
    );
    // The timestamp is signed too: another one with the same signature fails.
    let other_ts = (now + 1).to_string();
    refused(
        &w.post(
            &w.sendgrid_path,
            &[(SIGNATURE, &sig), (TIMESTAMP, &other_ts)],
            body.clone(),
        )
        .await,
    );
    // Stale and from the future, though correctly signed.
    for t in [now - 601, now + 601] {
        refused(&w.sendgrid_at(&body, t).await);
    }
    // Missing or unreadable headers.
    refused(&w.post(&w.sendgrid_path, &[(TIMESTAMP, &ts)], body.clone()).await);
    refused(&w.post(&w.sendgrid_path, &[(SIGNATURE, &sig)], body.clone()).await);
    refused(
        &w.post(
            &w.sendgrid_path,
            &[(SIGNATURE, "not base64!"), (TIMESTAMP, &ts)],
            body.clone(),
        )
        .await,
    );
    refused(
        &w.post(
            &w.sendgrid_path,
            &[(SIGNATURE, &sig), (TIMESTAMP, "1.7e9")],
            body.clone(),
        )
        .await,
    );
    // Mailgun: a forged HMAC, a stale timestamp, no signature block, the documented example.
    let event = mg("delivered", "mg-d", r[0], T as f64, json!({}));
    let mut forged = serde_json::from_slice::<Value>(&mg_body(MAILGUN_KEY, &ts, &token(), &event)).unwrap();
    forged["signature"]["signature"] = json!(mailgun_signature("another-key", &ts, "tok"));
    refused(&w.post(&w.mailgun_path, &[], forged.to_string().into_bytes()).await);
    let stale = (now - 601).to_string();
    refused(
        &w.post(&w.mailgun_path, &[], mg_body(MAILGUN_KEY, &stale, &token(), &event))
            .await,
    );
    refused(
        &w.post(
            &w.mailgun_path,
            &[],
            json!({"event-data": event}).to_string().into_bytes(),
        )
        .await,
    );
    refused(&w.post(&w.mailgun_path, &[], b"not json".to_vec()).await);
    assert_eq!(w.fingerprint().await, before, "nothing changed");

    // Replays: a delivery accepted once is refused the second time, however it is re-signed.
    assert_eq!(
        received(
            &w.post(&w.sendgrid_path, &[(SIGNATURE, &sig), (TIMESTAMP, &ts)], body.clone())
                .await
        )
        .0,
        2
    );
    let accepted = w.fingerprint().await;
    refused(
        &w.post(&w.sendgrid_path, &[(SIGNATURE, &sig), (TIMESTAMP, &ts)], body.clone())
            .await,
    );
    let resigned = w.sendgrid.sign(&ts, &body);
    assert_ne!(resigned, sig, "ECDSA signatures are randomised");
    refused(
        &w.post(
            &w.sendgrid_path,
            &[(SIGNATURE, &resigned), (TIMESTAMP, &ts)],
            body.clone(),
        )
        .await,
    );
    let tok = token();
    let open = mg("opened", "mg-o", r[0], T as f64, json!({}));
    assert_eq!(
        received(
            &w.post(&w.mailgun_path, &[], mg_body(MAILGUN_KEY, &ts, &tok, &open))
                .await
        )
        .0,
        1
    );
    let accepted_mailgun = w.fingerprint().await;
    assert_ne!(accepted_mailgun, accepted);
    refused(
        &w.post(&w.mailgun_path, &[], mg_body(MAILGUN_KEY, &ts, &tok, &open))
            .await,
    );
    // Mailgun's signature does not cover the event: the token alone stops a swapped one.
    let click = mg(
        "clicked",
        "mg-c",
        r[0],
        T as f64,
        json!({"url": "https://evil.example"}),
    );
    refused(
        &w.post(&w.mailgun_path, &[], mg_body(MAILGUN_KEY, &other_ts, &tok, &click))
            .await,
    );
    assert_eq!(w.fingerprint().await, accepted_mailgun, "replays changed nothing");

    // No verification key saved: refused (another tenant whose connectors have none).
    let owner = w.app.user("other").await;
    let other = w.app.tenant(&owner).await;
    let keyless = save(
        &w.connectors,
        other,
        Kind::Sendgrid,
        json!({"api_key": "SG.test-key-000000"}),
    )
    .await;
    let path = keyless.webhook_path.unwrap();
    let sig = w.sendgrid.sign(&ts, &body);
    refused(
        &w.post(&path, &[(SIGNATURE, &sig), (TIMESTAMP, &ts)], body.clone())
            .await,
    );
    let keyless = save(
        &w.connectors,
        other,
        Kind::Mailgun,
        json!({"region": "us", "domain": "mg.other.example", "api_key": "key-00000000000"}),
    )
    .await;
    let path = keyless.webhook_path.unwrap();
    refused(&w.post(&path, &[], mg_body(MAILGUN_KEY, &ts, &token(), &event)).await);

    // Unknown provider or key: 404.
    let key = w.sendgrid_path.rsplit('/').next().unwrap();
    for path in [
        format!("/webhooks/email/sendgrid/{}", Uuid::new_v4().simple()),
        "/webhooks/email/sendgrid/not-a-key".to_owned(),
        format!("/webhooks/email/shopify/{key}"),
        format!("/webhooks/email/postmark/{key}"),
        format!("/webhooks/email/mailgun/{key}"),
    ] {
        let sig = w.sendgrid.sign(&ts, &body);
        w.post(&path, &[(SIGNATURE, &sig), (TIMESTAMP, &ts)], body.clone())
            .await
            .problem(404);
    }
    // Over the limit: 413.
    let huge = vec![b' '; events::MAX_BODY_BYTES + 1];
    let r = w
        .post(&w.sendgrid_path, &[(SIGNATURE, &sig), (TIMESTAMP, &ts)], huge)
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(w.fingerprint().await, accepted_mailgun, "nothing changed");
}

#[tokio::test]
async fn the_connectors_show_the_email_webhook_and_the_connector_route_does_not_take_it() {
    let w = world().await;
    let key = w.sendgrid_path.rsplit('/').next().unwrap().to_owned();
    assert_eq!(w.sendgrid_path, format!("/webhooks/email/sendgrid/{key}"));
    assert!(w.mailgun_path.starts_with("/webhooks/email/mailgun/"));
    let view = w.connectors.get(&owner_scope(w.tenant), Kind::Sendgrid).await.unwrap();
    assert_eq!(view.webhook_signature_header, Some(SIGNATURE));
    assert!(view.secrets.contains_key("webhook_public_key"));
    let view = w.connectors.get(&owner_scope(w.tenant), Kind::Mailgun).await.unwrap();
    assert_eq!(view.webhook_signature_header, None, "Mailgun signs in the body");
    // connector-webhook's route answers 404 for the email kinds, even with their key.
    let ts = Utc::now().timestamp().to_string();
    let body = b"[]".to_vec();
    let mut headers = http::HeaderMap::new();
    headers.insert(SIGNATURE, w.sendgrid.sign(&ts, &body).parse().unwrap());
    headers.insert(TIMESTAMP, ts.parse().unwrap());
    let r = shared::services::connectors::webhooks::receive(&w.connectors, "sendgrid", &key, &headers, &body).await;
    assert!(
        matches!(r, Err(shared::services::connectors::webhooks::WebhookError::NotFound)),
        "{r:?}"
    );
}

#[tokio::test]
async fn events_about_another_tenants_messages_are_ignored_and_replay_keys_are_tenant_private() {
    let w = world().await;
    let (_, mine) = campaign(&w.app, w.tenant, &["ann@example.com"]).await;
    let owner = w.app.user("other").await;
    let other = w.app.tenant(&owner).await;
    let (theirs_campaign, theirs) = campaign(&w.app, other, &["zed@example.com"]).await;
    // Given an event naming the other tenant's message (and its tenant and campaign ids),
    let foreign = sg(
        "bounce",
        "sg-foreign",
        theirs[0],
        T,
        json!({"status": "5.1.1", "tenant_id": other.to_string(), "campaign_id": theirs_campaign.to_string()}),
    );
    // naming our message but another tenant,
    let mislabelled = sg(
        "open",
        "sg-mislabelled",
        mine[0],
        T,
        json!({"tenant_id": other.to_string()}),
    );
    // when it comes through this tenant's webhook, then it is ignored, not an error,
    let r = w
        .sendgrid(&[foreign, mislabelled, sg("open", "sg-mine", mine[0], T, json!({}))])
        .await;
    assert_eq!(received(&r), (1, 0, 2, 0));
    // and the other tenant's recipient, events and suppressions are untouched.
    assert_eq!(w.recipient(theirs[0]).await["bounced_at"], Value::Null);
    let theirs_events: i64 = sqlx::query_scalar("select count(*) from marketing_email_events where tenant_id = $1")
        .bind(other)
        .fetch_one(&w.app.db.owner)
        .await
        .unwrap();
    assert_eq!(theirs_events, 0);
    let suppressions: i64 = sqlx::query_scalar("select count(*) from marketing_suppressions")
        .fetch_one(&w.app.db.owner)
        .await
        .unwrap();
    assert_eq!(suppressions, 0);

    // Row-level security on the replay keys: the other tenant sees none of ours and cannot
    // write any for us.
    let mut tx = shared::adapters::pg::begin(&w.app.db.app, &owner_scope(other))
        .await
        .unwrap();
    let visible: i64 = sqlx::query_scalar("select count(*) from marketing_webhook_replays")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(visible, 0);
    let written = sqlx::query(
        "insert into marketing_webhook_replays (tenant_id, provider, key_sha256, seen_at) values ($1, 'sendgrid', $2, now())",
    )
    .bind(w.tenant)
    .bind(vec![7u8; 32])
    .execute(&mut *tx)
    .await;
    assert!(written.is_err(), "the policy refuses another tenant's row");
    drop(tx);
    let ours: i64 = sqlx::query_scalar("select count(*) from marketing_webhook_replays where tenant_id = $1")
        .bind(w.tenant)
        .fetch_one(&w.app.db.owner)
        .await
        .unwrap();
    assert_eq!(ours, 1);
}

#[tokio::test]
async fn set_based_recording_gives_what_record_event_gives() {
    let w = world().await;
    let emails = ["a@example.com", "b@example.com", "c@example.com", "d@example.com"];
    let (c1, r1) = campaign(&w.app, w.tenant, &emails).await;
    let (c2, r2) = campaign(&w.app, w.tenant, &emails).await;
    let nobody = Uuid::now_v7();
    // The same story for each campaign: duplicates within the slice (the first wins, even of
    // another kind), an unknown recipient whose id comes back later for a known one, bounces
    // soft then hard and hard then soft, repeated opens and clicks out of order, both providers.
    let story = |prefix: &str, r: &[Uuid]| -> Vec<report::EmailEvent> {
        let e =
            |provider, id: &str, recipient, kind, hard: Option<bool>, url: Option<&str>, t: i64| report::EmailEvent {
                provider,
                provider_event_id: format!("{prefix}-{id}"),
                recipient_id: recipient,
                kind,
                hard_bounce: hard,
                url: url.map(str::to_owned),
                occurred_at: DateTime::from_timestamp(t, 0).unwrap(),
            };
        let (sg, mg) = (EmailProvider::Sendgrid, EmailProvider::Mailgun);
        vec![
            e(sg, "p0", r[0], EventKind::Processed, None, None, T),
            e(sg, "d0", r[0], EventKind::Delivered, None, None, T + 9),
            e(sg, "d0", r[0], EventKind::Open, None, None, T + 1),
            e(mg, "d0", r[1], EventKind::Delivered, None, None, T + 7),
            e(sg, "o0", r[0], EventKind::Open, None, None, T + 30),
            e(sg, "o1", r[0], EventKind::Open, None, None, T + 20),
            e(
                sg,
                "k0",
                r[0],
                EventKind::Click,
                None,
                Some("https://x.example/1"),
                T + 40,
            ),
            e(
                sg,
                "k1",
                r[1],
                EventKind::Click,
                None,
                Some("https://x.example/2"),
                T + 35,
            ),
            e(
                sg,
                "k2",
                r[1],
                EventKind::Click,
                None,
                Some("https://x.example/1"),
                T + 45,
            ),
            e(sg, "u0", nobody, EventKind::Open, None, None, T),
            e(sg, "u0", r[2], EventKind::Delivered, None, None, T + 3),
            e(mg, "b0", r[2], EventKind::Bounce, Some(false), None, T + 50),
            e(mg, "b1", r[2], EventKind::Bounce, Some(true), None, T + 60),
            e(sg, "b2", r[3], EventKind::Bounce, Some(true), None, T + 70),
            e(sg, "b3", r[3], EventKind::Bounce, Some(false), None, T + 65),
            e(mg, "x0", r[3], EventKind::Complaint, None, None, T + 80),
            e(mg, "x1", r[3], EventKind::Unsubscribe, None, None, T + 81),
            e(sg, "dr", r[1], EventKind::Dropped, None, None, T + 2),
            e(sg, "df", r[1], EventKind::Deferred, None, None, T + 2),
        ]
    };
    let (one, two) = (story("one", &r1), story("two", &r2));
    let scope = owner_scope(w.tenant);
    // Some of each stored before (the provider's earlier delivery).
    let mut tx = shared::adapters::pg::begin(&w.app.db.app, &scope).await.unwrap();
    for e in [&one[4], &one[12]] {
        assert!(report::record_event(&mut tx, e).await.unwrap());
    }
    events::record_events(&mut tx, &[two[4].clone(), two[12].clone()])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // When the rest go through record_event one by one, and through record_events at once,
    let mut tx = shared::adapters::pg::begin(&w.app.db.app, &scope).await.unwrap();
    let mut one_stored = 0;
    for e in &one {
        one_stored += usize::from(report::record_event(&mut tx, e).await.unwrap());
    }
    let recorded = events::record_events(&mut tx, &two).await.unwrap();
    tx.commit().await.unwrap();
    // then both stored the same, and the stats and recipients are the same.
    assert_eq!(recorded.stored.len(), one_stored);
    assert_eq!(recorded.unknown, 1);
    assert_eq!(recorded.duplicates, two.len() - one_stored - 1);
    assert_eq!(w.stats(c1).await, w.stats(c2).await);
    assert_eq!(folded(&w, &r1).await, folded(&w, &r2).await);
    let stats = serde_json::to_value(w.stats(c2).await).unwrap();
    assert_eq!(stats["delivered"], 3, "{stats}");
    assert_eq!(stats["bounced"], json!({"hard": 2, "soft": 0}));
    assert_eq!(w.recipient(r2[3]).await["bounced_at"], at(T + 65));
    assert_eq!(w.recipient(r2[0]).await["opened_at"], at(T + 20));
}

#[tokio::test]
async fn a_batch_of_a_thousand_events_is_one_delivery() {
    let w = world().await;
    let emails: Vec<String> = (0..500).map(|i| format!("r{i}@example.com")).collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    let (c, r) = campaign(&w.app, w.tenant, &refs).await;
    let mut batch = Vec::new();
    for (i, id) in r.iter().enumerate() {
        batch.push(sg("delivered", &format!("d{i}"), *id, T + 1, json!({})));
        batch.push(sg("open", &format!("o{i}"), *id, T + 2, json!({})));
    }
    let started = std::time::Instant::now();
    let resp = w.sendgrid(&batch).await;
    println!("1,000 SendGrid events in one delivery: {:?}", started.elapsed());
    assert_eq!(received(&resp), (1000, 0, 0, 0));
    let stats = w.stats(c).await;
    assert_eq!((stats.delivered, stats.opened.unique), (500, 500));
}

/// The sample events' SendGrid key (a throwaway pair made for them; its private half was not
/// kept: a changed sample body needs a new pair, its public half here).
const SAMPLE_SENDGRID_PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9tUZ/oyJ2NrqLA8L199GrS+x0NrykM0W/42qKogz73Ot+pY2U50HdseSMdH5FethlJw94BwnJaAJOh2IwP7lOg==";
const SAMPLE_MAILGUN_SIGNING_KEY: &str = "sample-mailgun-webhook-signing-key-0001";
/// The tenant, campaign and messages the samples' custom args name.
const SAMPLE_TENANT: &str = "01938a52-7c00-7000-8000-00000000e001";
const SAMPLE_CAMPAIGN: &str = "01938a52-7c00-7000-8000-00000000c001";
const SAMPLE_MESSAGES: [(&str, &str); 2] = [
    ("01938a52-7c00-7000-8000-00000000a001", "ann@example.com"),
    ("01938a52-7c00-7000-8000-00000000a002", "bob@example.com"),
];

/// The events/ files are what `cargo lambda invoke --data-file` sends; they drive the router
/// (signed long ago: 401 now), and the service as of their own time (verified and stored).
#[tokio::test]
async fn the_events_files_drive_the_router() {
    let app = TestApp::new().await;
    let tenant: Uuid = SAMPLE_TENANT.parse().unwrap();
    sqlx::query("insert into tenants (id, name) values ($1, 'Sample shop')")
        .bind(tenant)
        .execute(&app.db.owner)
        .await
        .unwrap();
    let connectors = testkit::connectors(&app.db.app, []);
    let files = [
        (
            "post-webhooks-email-provider-tenant-key.json",
            Kind::Sendgrid,
            json!({"api_key": "SG.sample-000000", "webhook_public_key": SAMPLE_SENDGRID_PUBLIC_KEY}),
        ),
        (
            "post-webhooks-email-mailgun-tenant-key.json",
            Kind::Mailgun,
            json!({"region": "us", "domain": "mg.example.com", "api_key": "key-sample-0000",
                   "webhook_signing_key": SAMPLE_MAILGUN_SIGNING_KEY}),
        ),
    ];
    for (file, kind, fields) in &files {
        save(&connectors, tenant, *kind, fields.clone()).await;
        let request = testkit::event_request(&format!("email-events/{file}"));
        let webhook_key = request.uri().path().rsplit('/').next().unwrap().to_owned();
        sqlx::query("update connectors set webhook_key = $2 where tenant_id = $1 and kind = $3")
            .bind(tenant)
            .bind(&webhook_key)
            .bind(kind.as_str())
            .execute(&app.db.owner)
            .await
            .unwrap();
    }
    sqlx::query(
        "insert into marketing_campaigns (id, tenant_id, name, from_name, from_email, status) \
         values ($1::uuid, $2, 'Sample', 'Shop', 'news@shop.example', 'sent')",
    )
    .bind(SAMPLE_CAMPAIGN)
    .bind(tenant)
    .execute(&app.db.owner)
    .await
    .unwrap();
    for (id, email) in SAMPLE_MESSAGES {
        sqlx::query(
            "insert into marketing_campaign_recipients (id, tenant_id, campaign_id, email, status, sent_at) \
             values ($1::uuid, $2, $3::uuid, $4, 'sent', now())",
        )
        .bind(id)
        .bind(tenant)
        .bind(SAMPLE_CAMPAIGN)
        .bind(email)
        .execute(&app.db.owner)
        .await
        .unwrap();
    }
    let router = email_events::router(email_events::EventsState {
        connectors: connectors.clone(),
    });
    let mut got = Vec::new();
    for (file, _, _) in &files {
        // Now, through the router: signed long ago, so stale.
        testkit::send(&router, testkit::event_request(&format!("email-events/{file}")))
            .await
            .problem(401);
        // As of its signing time, through the service: verified and stored.
        let (parts, body) = testkit::event_request(&format!("email-events/{file}")).into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let segments: Vec<&str> = parts.uri.path().split('/').collect();
        let signed_at = match parts.headers.get(TIMESTAMP) {
            Some(v) => v.to_str().unwrap().to_owned(),
            None => mailgun::parse_event(&bytes).unwrap().signature.timestamp,
        };
        let now = DateTime::from_timestamp(signed_at.parse().unwrap(), 0).unwrap();
        got.push(
            events::receive(&connectors, segments[3], segments[4], &parts.headers, &bytes, now)
                .await
                .unwrap(),
        );
    }
    let stored = |n| Received {
        stored: n,
        ..Received::default()
    };
    assert_eq!(got, [stored(6), stored(1)]);
    let stats = report::stats(&app.db.app, &owner_scope(tenant), SAMPLE_CAMPAIGN.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (
            stats.delivered,
            stats.opened.total,
            stats.opened.unique,
            stats.clicked.total,
            stats.bounced.hard
        ),
        (1, 2, 2, 1, 1)
    );
}
