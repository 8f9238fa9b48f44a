//! Campaigns against a real Postgres: the lifecycle and every illegal transition, the checks
//! made before anything is frozen (empty audience, no email connector, the plan), the freeze
//! itself (segments ∪ tags, minus suppressions, one row per address, batches covering everyone
//! once, idempotent), A/B splits and winners, the sender's claim-and-record cycle, stats that
//! do not depend on event order, test sends, tenant isolation and roles.
//!
//! One file over 800 lines: every test here drives one campaign through the same lifecycle
//! (create, schedule or start, claim, record) with the same helpers; split it by concept
//! (lifecycle, freeze, sender, stats) when a second campaign test file appears.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use chrono::{Duration, Utc};
use common::{World, fields, id, world};
use serde_json::{Value, json};
use shared::domain::{Actor, Role, Scope};
use shared::services::marketing::campaigns::delivery::{self, Claim};
use shared::services::marketing::campaigns::lifecycle;
use shared::services::marketing::campaigns::report::{self, EmailEvent, EventKind};
use shared::services::marketing::campaigns::{CampaignStatus, EmailProvider};
use uuid::Uuid;

fn later(days: i64) -> String {
    (Utc::now() + Duration::days(days)).to_rfc3339()
}

fn path(c: &Value) -> String {
    format!("/marketing/campaigns/{}", id(c))
}

fn uuid(c: &Value) -> Uuid {
    Uuid::parse_str(id(c)).unwrap()
}

/// A 409 with this problem type; answers its detail.
fn conflict(r: &testkit::Resp, code: &str) -> String {
    let p = r.problem(409);
    assert_eq!(p["type"], format!("/problems/{code}"), "{}", r.text);
    p["detail"].as_str().unwrap().to_owned()
}

/// `n` contacts of `tenant` tagged `tag`, `prefix{i}@example.com`, in one statement.
async fn many(w: &World, tenant: Uuid, n: i64, prefix: &str, tag: &str) {
    sqlx::query(
        "insert into crm_contacts (id, tenant_id, first_name, email, tags) \
         select gen_random_uuid(), $1, 'C' || i, $3 || i || '@example.com', array[$4] \
         from generate_series(1, $2) i",
    )
    .bind(tenant)
    .bind(n)
    .bind(prefix)
    .bind(tag)
    .execute(&w.app.db.owner)
    .await
    .unwrap();
}

async fn count(w: &World, sql: &str, campaign: &Value) -> i64 {
    sqlx::query_scalar(sql)
        .bind(uuid(campaign))
        .fetch_one(&w.app.db.owner)
        .await
        .unwrap()
}

/// Every recipient of the campaign that is queued is in exactly one pending batch of at most
/// `size`, the batches' counts are their rows, and no batch is empty.
async fn assert_batches_cover(w: &World, campaign: &Value, size: i64) {
    let unbatched = count(
        w,
        "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'queued' \
         and batch_id is null and variant is not null",
        campaign,
    )
    .await;
    assert_eq!(unbatched, 0, "every queued recipient with a variant is batched");
    let wrong: i64 = count(
        w,
        "select count(*) from marketing_campaign_batches b where b.campaign_id = $1 and b.recipients <> \
         (select count(*) from marketing_campaign_recipients r where r.batch_id = b.id)",
        campaign,
    )
    .await;
    assert_eq!(wrong, 0, "each batch counts its own recipients");
    let largest = count(
        w,
        "select coalesce(max(recipients), 0)::bigint from marketing_campaign_batches where campaign_id = $1",
        campaign,
    )
    .await;
    assert!(largest <= size, "batches of at most {size}: {largest}");
    let batched = count(
        w,
        "select count(*) from marketing_campaign_recipients where campaign_id = $1 and batch_id is not null",
        campaign,
    )
    .await;
    let in_batches = count(
        w,
        "select coalesce(sum(recipients), 0)::bigint from marketing_campaign_batches where campaign_id = $1",
        campaign,
    )
    .await;
    assert_eq!(batched, in_batches, "every batched recipient once");
}

#[tokio::test]
async fn a_campaign_goes_from_draft_to_scheduled_to_cancelled_and_refuses_illegal_moves() {
    let w = world().await;
    w.connect(w.tenant, "sendgrid").await;
    w.contact(
        w.tenant,
        json!({"first_name": "Ada", "email": "ada@example.com", "tags": ["news"]}),
    )
    .await;
    let t = w.template("Spring news").await;
    let c = w.campaign(&t, json!({"audience": {"tags": ["News"]}})).await;
    assert_eq!(c["status"], "draft");
    assert_eq!(c["audience"], json!({"segment_ids": [], "tags": ["news"]}));
    assert_eq!(c["progress"]["total"], 0);
    let p = path(&c);

    // A draft cannot be paused, resumed or cancelled: 409 naming its status.
    for action in ["pause", "resume", "cancel"] {
        let detail = conflict(&w.post(&format!("{p}/{action}"), json!({})).await, "illegal-transition");
        assert!(detail.contains("is draft"), "{action}: {detail}");
    }
    // Scheduled for tomorrow: checked, nothing frozen.
    let r = w.post(&format!("{p}/schedule"), json!({"send_at": later(1)})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "scheduled");
    assert_eq!(r.headers["etag"], format!("\"{}\"", r.json["version"]));
    assert_eq!(w.app.count("marketing_campaign_recipients").await, 0);
    // Rescheduled, and still editable while scheduled.
    let r = w.post(&format!("{p}/schedule"), json!({"send_at": later(2)})).await;
    assert_eq!(r.json["status"], "scheduled");
    let r = w.patch(&p, json!({"name": "Spring sale (final)"}), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A time in the past or more than a year ahead is the request's fault.
    let r = w.post(&format!("{p}/schedule"), json!({"send_at": later(-1)})).await;
    assert_eq!(fields(&r), ["send_at"]);
    let r = w.post(&format!("{p}/schedule"), json!({"send_at": later(400)})).await;
    assert_eq!(fields(&r), ["send_at"]);
    // Paused before it started: not editable; resumed, scheduled again.
    let r = w.post(&format!("{p}/pause"), json!({})).await;
    assert_eq!(r.json["status"], "paused");
    let detail = conflict(&w.patch(&p, json!({"name": "x"}), None).await, "illegal-transition");
    assert!(detail.contains("is paused"), "{detail}");
    let r = w.post(&format!("{p}/resume"), json!({})).await;
    assert_eq!(r.json["status"], "scheduled");
    // Cancelled: for good.
    let r = w.post(&format!("{p}/cancel"), json!({})).await;
    assert_eq!(r.json["status"], "cancelled");
    assert!(r.json["finished_at"].is_string());
    for action in ["pause", "resume", "cancel", "schedule"] {
        let detail = conflict(&w.post(&format!("{p}/{action}"), json!({})).await, "illegal-transition");
        assert!(detail.contains("is cancelled"), "{action}: {detail}");
    }
    conflict(&w.patch(&p, json!({"name": "x"}), None).await, "illegal-transition");
    // A cancelled campaign that never started is removed.
    assert_eq!(w.delete(&p).await.status, 204);
    w.get(&p, "").await.problem(404);
    assert_eq!(w.app.count("marketing_campaigns").await, 0);
}

#[tokio::test]
async fn a_sending_campaign_cannot_be_edited_or_deleted_and_cancel_stops_what_is_left() {
    let w = world().await;
    w.connect(w.tenant, "mailgun").await;
    many(&w, w.tenant, 5, "r", "news").await;
    let t = w.template("Hi").await;
    let c = w.campaign(&t, json!({"audience": {"tags": ["news"]}})).await;
    let p = path(&c);
    let r = w.post(&format!("{p}/schedule"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "sending");
    assert_eq!(r.json["provider"], "mailgun", "the connected provider is frozen in");
    assert_eq!(r.json["progress"]["queued"], 5);

    // Edits while sending: 409 campaign-sending; with a stale ETag too (state first).
    conflict(&w.patch(&p, json!({"name": "New"}), None).await, "campaign-sending");
    conflict(
        &w.patch(&p, json!({"name": "New"}), Some("\"1\"")).await,
        "campaign-sending",
    );
    conflict(&w.delete(&p).await, "illegal-transition");
    let detail = conflict(&w.post(&format!("{p}/schedule"), json!({})).await, "illegal-transition");
    assert!(detail.contains("is sending"), "{detail}");
    conflict(&w.post(&format!("{p}/resume"), json!({})).await, "illegal-transition");

    // Paused and resumed: sending again.
    assert_eq!(w.post(&format!("{p}/pause"), json!({})).await.json["status"], "paused");
    assert_eq!(
        w.post(&format!("{p}/resume"), json!({})).await.json["status"],
        "sending"
    );

    // Cancelled: its pending batch and queued recipients with it.
    let scope = w.worker(w.tenant);
    let r = w.post(&format!("{p}/cancel"), json!({})).await;
    assert_eq!(r.json["status"], "cancelled");
    assert_eq!(r.json["progress"]["cancelled"], 5);
    assert_eq!(
        count(
            &w,
            "select count(*) from marketing_campaign_batches where campaign_id = $1 and status <> 'cancelled'",
            &c
        )
        .await,
        0
    );
    // No batch of a cancelled campaign can be claimed.
    let batch: Uuid = sqlx::query_scalar("select id from marketing_campaign_batches where campaign_id = $1 limit 1")
        .bind(uuid(&c))
        .fetch_one(&w.app.db.owner)
        .await
        .unwrap();
    let claim = delivery::claim_batch(&w.app.core.db, &scope, batch, Duration::minutes(5))
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Nothing));
    // A campaign that started is hidden when deleted; its recipients stay (the month's usage).
    assert_eq!(w.delete(&p).await.status, 204);
    w.get(&p, "").await.problem(404);
    assert_eq!(w.recipients(id(&c), "cancelled").await, 5);
    let r = w.get("/marketing/campaigns", "").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn an_empty_audience_is_refused_before_anything_is_frozen() {
    let w = world().await;
    w.connect(w.tenant, "sendgrid").await;
    w.contact(
        w.tenant,
        json!({"first_name": "Ann", "email": "Ann@Example.com", "tags": ["vip"]}),
    )
    .await;
    w.contact(w.tenant, json!({"first_name": "No address", "tags": ["vip"]}))
        .await;
    w.suppression(w.tenant, "ann@example.com", "unsubscribed").await;
    let t = w.template("Hi").await;
    for audience in [
        json!({}),
        json!({"tags": ["nobody-has-this"]}),
        json!({"tags": ["vip"]}),
    ] {
        let c = w.campaign(&t, json!({"audience": audience})).await;
        for body in [json!({}), json!({"send_at": later(1)})] {
            let r = w.post(&format!("{}/schedule", path(&c)), body).await;
            let detail = conflict(&r, "empty-audience");
            if audience["tags"] == json!(["vip"]) {
                assert!(detail.contains("1 addresses match, 1 of them suppressed"), "{detail}");
            }
        }
        let r = w.get(&path(&c), "").await;
        assert_eq!(r.json["status"], "draft");
        assert!(r.json["started_at"].is_null());
    }
    assert_eq!(w.app.count("marketing_campaign_recipients").await, 0);
    assert_eq!(w.app.count("marketing_campaign_batches").await, 0);
    let frozen: i64 = sqlx::query_scalar("select count(*) from marketing_campaigns where snapshot_body is not null")
        .fetch_one(&w.app.db.owner)
        .await
        .unwrap();
    assert_eq!(frozen, 0);
}

#[tokio::test]
async fn without_an_email_connector_scheduling_names_the_ones_to_set_up() {
    let w = world().await;
    w.contact(
        w.tenant,
        json!({"first_name": "Ann", "email": "ann@example.com", "tags": ["vip"]}),
    )
    .await;
    let t = w.template("Hi").await;
    let c = w.campaign(&t, json!({"audience": {"tags": ["vip"]}})).await;
    let p = path(&c);
    for body in [json!({}), json!({"send_at": later(1)})] {
        let detail = conflict(&w.post(&format!("{p}/schedule"), body).await, "no-email-connector");
        assert!(detail.contains("sendgrid") && detail.contains("mailgun"), "{detail}");
    }
    let detail = conflict(
        &w.post(&format!("{p}/test"), json!({"addresses": [w.owner.email]}))
            .await,
        "no-email-connector",
    );
    assert!(detail.contains("sendgrid") && detail.contains("mailgun"), "{detail}");
    // Another tenant's connector is not this tenant's.
    let (_, other) = w.other_tenant().await;
    w.connect(other, "sendgrid").await;
    conflict(&w.post(&format!("{p}/schedule"), json!({})).await, "no-email-connector");
    // A chosen provider must be the connected one.
    w.connect(w.tenant, "sendgrid").await;
    let r = w.patch(&p, json!({"provider": "mailgun"}), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let detail = conflict(&w.post(&format!("{p}/schedule"), json!({})).await, "no-email-connector");
    assert!(detail.contains("mailgun"), "{detail}");
    assert_eq!(w.app.count("marketing_campaign_recipients").await, 0);
    assert_eq!(w.get(&p, "").await.json["status"], "draft");
    // Without the choice, the connected one sends.
    w.patch(&p, json!({"provider": null}), None).await;
    let r = w.post(&format!("{p}/schedule"), json!({})).await;
    assert_eq!(r.json["provider"], "sendgrid", "{}", r.text);
}

#[tokio::test]
async fn the_freeze_unites_segments_and_tags_minus_suppressions_once_per_address() {
    let w = world().await;
    w.connect(w.tenant, "sendgrid").await;
    // In the segment (customers): Ada, Bob (suppressed, in mixed case), Cy (no address).
    let ada = w
        .contact(
            w.tenant,
            json!({"first_name": "Ada", "email": "Ada@Example.com", "lifecycle_stage": "customer", "tags": ["vip"]}),
        )
        .await;
    w.contact(
        w.tenant,
        json!({"first_name": "Bob", "email": "BOB@example.com", "lifecycle_stage": "customer"}),
    )
    .await;
    w.contact(w.tenant, json!({"first_name": "Cy", "lifecycle_stage": "customer"}))
        .await;
    // With the tag: Ada again (once), Dee; Eve has the tag but no address.
    w.contact(
        w.tenant,
        json!({"first_name": "Dee", "email": "dee@example.com", "tags": ["vip"]}),
    )
    .await;
    w.contact(w.tenant, json!({"first_name": "Eve", "tags": ["vip"]})).await;
    // Neither: Fay. Another tenant's customer with Ada's address counts nowhere here.
    w.contact(
        w.tenant,
        json!({"first_name": "Fay", "email": "fay@example.com", "lifecycle_stage": "lead"}),
    )
    .await;
    let (_, other) = w.other_tenant().await;
    w.contact(
        other,
        json!({"first_name": "Ada", "email": "ada@example.com", "lifecycle_stage": "customer"}),
    )
    .await;
    w.suppression(w.tenant, "bob@example.com", "hard_bounce").await;
    let customers = w
        .created(
            "/marketing/segments",
            json!({"name": "Customers", "filter": {"lifecycle_stages": ["customer"]}}),
        )
        .await;
    let t = w.template("Hello {{ contact.first_name }}").await;
    let c = w
        .campaign(
            &t,
            json!({"audience": {"segment_ids": [customers["id"]], "tags": ["vip"]}}),
        )
        .await;
    let scope = w.worker(w.tenant);
    let started = lifecycle::start(&w.app.core.db, &scope, uuid(&c), Some(1))
        .await
        .unwrap();
    assert_eq!(started.status, CampaignStatus::Sending);
    let progress = started.progress.unwrap();
    assert_eq!((progress.total, progress.queued, progress.suppressed), (3, 2, 1));
    let rows: Vec<(String, String, Option<Uuid>)> = sqlx::query_as(
        "select email, status, contact_id from marketing_campaign_recipients where campaign_id = $1 order by email",
    )
    .bind(uuid(&c))
    .fetch_all(&w.app.db.owner)
    .await
    .unwrap();
    let emails: Vec<(&str, &str)> = rows.iter().map(|(e, s, _)| (e.as_str(), s.as_str())).collect();
    assert_eq!(
        emails,
        [
            ("ada@example.com", "queued"),
            ("bob@example.com", "suppressed"),
            ("dee@example.com", "queued")
        ]
    );
    assert_eq!(rows[0].2, Some(ada));
    // Batches of 1: two, one recipient each; the suppressed address is in none.
    assert_batches_cover(&w, &c, 1).await;
    assert_eq!(
        count(
            &w,
            "select count(*) from marketing_campaign_batches where campaign_id = $1",
            &c
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &w,
            "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'suppressed' \
             and batch_id is not null",
            &c
        )
        .await,
        0
    );
    // The template is frozen: a later edit does not reach the campaign.
    let before: String = sqlx::query_scalar("select snapshot_subject from marketing_campaigns where id = $1")
        .bind(uuid(&c))
        .fetch_one(&w.app.db.owner)
        .await
        .unwrap();
    assert_eq!(before, "Hello {{ contact.first_name }}");
    w.patch(
        &format!("/marketing/templates/{}", id(&t)),
        json!({"subject": "Changed"}),
        None,
    )
    .await;

    // A second start changes nothing: same rows, same batches, same version.
    let again = lifecycle::start(&w.app.core.db, &scope, uuid(&c), Some(1))
        .await
        .unwrap();
    assert_eq!(again.version, started.version);
    assert_eq!(again.progress, started.progress);
    assert_eq!(
        count(
            &w,
            "select count(*) from marketing_campaign_batches where campaign_id = $1",
            &c
        )
        .await,
        2
    );
    let after: String = sqlx::query_scalar("select snapshot_subject from marketing_campaigns where id = $1")
        .bind(uuid(&c))
        .fetch_one(&w.app.db.owner)
        .await
        .unwrap();
    assert_eq!(after, before);
    // An address twice in one campaign is refused by the database itself.
    let twice = sqlx::query(
        "insert into marketing_campaign_recipients (id, tenant_id, campaign_id, email) values ($1, $2, $3, 'dee@example.com')",
    )
    .bind(Uuid::new_v4())
    .bind(w.tenant)
    .bind(uuid(&c))
    .execute(&w.app.db.owner)
    .await;
    assert!(twice.is_err(), "UNIQUE (campaign_id, email)");
    // Batch sizes are checked.
    let other = w.campaign(&t, json!({"audience": {"tags": ["vip"]}})).await;
    let e = lifecycle::start(&w.app.core.db, &scope, uuid(&other), Some(1001)).await;
    assert!(matches!(e, Err(shared::domain::DomainError::Invalid(_))));
}

#[tokio::test]
async fn batches_of_n_cover_every_recipient_exactly_once() {
    let w = world().await;
    w.connect(w.tenant, "sendgrid").await;
    w.app.subscribe(w.tenant, "starter").await;
    many(&w, w.tenant, 1234, "b", "all").await;
    let t = w.template("Hi").await;
    let c = w.campaign(&t, json!({"audience": {"tags": ["all"]}})).await;
    let scope = w.worker(w.tenant);
    lifecycle::start(&w.app.core.db, &scope, uuid(&c), Some(500))
        .await
        .unwrap();
    assert_batches_cover(&w, &c, 500).await;
    let sizes: Vec<(i32, i32)> =
        sqlx::query_as("select seq, recipients from marketing_campaign_batches where campaign_id = $1 order by seq")
            .bind(uuid(&c))
            .fetch_all(&w.app.db.owner)
            .await
            .unwrap();
    assert_eq!(sizes, [(0, 500), (1, 500), (2, 234)]);
    assert_eq!(w.recipients(id(&c), "queued").await, 1234);
}

#[tokio::test]
async fn an_ab_test_splits_its_share_and_the_winner_goes_to_the_rest() {
    let w = world().await;
    w.connect(w.tenant, "sendgrid").await;
    many(&w, w.tenant, 100, "ab", "ab").await;
    let t = w.template("Plain subject").await;
    // A bad test is named field by field.
    let r = w
        .post(
            "/marketing/campaigns",
            json!({"name": "AB", "template_id": t["id"], "from_name": "Acme", "from_email": "news@acme.example",
                "ab": {"variants": [{"subject": "A {{ contact.nick }}"}], "share": 0.9, "wait_minutes": 1}}),
        )
        .await;
    assert_eq!(
        fields(&r),
        ["ab.share", "ab.variants", "ab.variants[0].subject", "ab.wait_minutes"]
    );
    let c = w
        .campaign(
            &t,
            json!({"audience": {"tags": ["ab"]}, "ab": {"variants": [{"subject": "Subject A"},
                {"subject": "Subject B, {{ contact.first_name }}"}], "share": 0.2, "metric": "opens",
                "wait_minutes": 60}}),
        )
        .await;
    let p = path(&c);
    let r = w.post(&format!("{p}/schedule"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // 20% of 100: 10 each for a and b, 80 held without a batch.
    assert_eq!(r.json["progress"]["queued"], 100);
    assert_eq!(r.json["progress"]["held"], 80);
    assert!(r.json["ab_decide_at"].is_string());
    assert!(r.json["ab_winner"].is_null());
    let by_variant: Vec<(Option<String>, i64, i64)> = sqlx::query_as(
        "select variant, count(*), count(batch_id) from marketing_campaign_recipients where campaign_id = $1 \
         group by variant order by variant nulls last",
    )
    .bind(uuid(&c))
    .fetch_all(&w.app.db.owner)
    .await
    .unwrap();
    assert_eq!(
        by_variant,
        [
            (Some("a".to_owned()), 10, 10),
            (Some("b".to_owned()), 10, 10),
            (None, 80, 0)
        ]
    );
    assert_batches_cover(&w, &c, 500).await;
    let scope = w.worker(w.tenant);
    // Each test batch is one variant, with its subject.
    let batches: Vec<(Uuid, String)> =
        sqlx::query_as("select id, variant from marketing_campaign_batches where campaign_id = $1 order by seq")
            .bind(uuid(&c))
            .fetch_all(&w.app.db.owner)
            .await
            .unwrap();
    assert_eq!(batches.len(), 2);
    for (batch, variant) in &batches {
        let Claim::Ready(claimed) = delivery::claim_batch(&w.app.core.db, &scope, *batch, Duration::minutes(5))
            .await
            .unwrap()
        else {
            panic!("batch {variant} claimable");
        };
        let expected = if variant == "a" {
            "Subject A"
        } else {
            "Subject B, {{ contact.first_name }}"
        };
        assert_eq!(claimed.message.source.subject, expected);
        assert_eq!(claimed.recipients.len(), 10);
        let ids: Vec<(Uuid, String)> = claimed
            .recipients
            .iter()
            .map(|r| (r.id, format!("msg-{}", r.id)))
            .collect();
        assert!(
            delivery::record_accepted(&w.app.core.db, &scope, *batch, Some("x"), &ids)
                .await
                .unwrap()
        );
    }
    // Nothing finishes while the winner is still to be chosen.
    assert_eq!(w.get(&p, "").await.json["status"], "sending");
    // b's recipients open more (3 unique, one of them twice), a's one.
    let opened: Vec<(Uuid, String)> = sqlx::query_as(
        "select id, variant from marketing_campaign_recipients where campaign_id = $1 and variant is not null \
         order by variant, id",
    )
    .bind(uuid(&c))
    .fetch_all(&w.app.db.owner)
    .await
    .unwrap();
    let a: Vec<Uuid> = opened.iter().filter(|(_, v)| v == "a").map(|(i, _)| *i).collect();
    let b: Vec<Uuid> = opened.iter().filter(|(_, v)| v == "b").map(|(i, _)| *i).collect();
    let mut tx = shared::adapters::pg::begin(&w.app.core.db, &scope).await.unwrap();
    for (n, recipient) in [a[0], b[0], b[1], b[2], b[2]].into_iter().enumerate() {
        let event = EmailEvent {
            provider: EmailProvider::Sendgrid,
            provider_event_id: format!("open-{n}"),
            recipient_id: recipient,
            kind: EventKind::Open,
            hard_bounce: None,
            url: None,
            occurred_at: Utc::now(),
        };
        report::record_event(&mut tx, &event).await.unwrap();
    }
    tx.commit().await.unwrap();
    // Not due yet for the scheduler; due once its time has come.
    let due = delivery::due_ab_decisions(&w.app.core.db, Utc::now(), 10)
        .await
        .unwrap();
    assert!(due.iter().all(|d| d.id != uuid(&c)));
    let due = delivery::due_ab_decisions(&w.app.core.db, Utc::now() + Duration::minutes(61), 10)
        .await
        .unwrap();
    assert!(due.iter().any(|d| d.id == uuid(&c) && d.tenant_id == w.tenant));
    let decided = lifecycle::choose_winner(&w.app.core.db, &scope, uuid(&c))
        .await
        .unwrap();
    assert_eq!(decided.ab_winner.as_deref(), Some("b"));
    let progress = decided.progress.unwrap();
    assert_eq!((progress.held, progress.queued, progress.sent), (0, 80, 20));
    assert_eq!(
        count(
            &w,
            "select count(*) from marketing_campaign_recipients where campaign_id = $1 and variant = 'winner' \
             and batch_id is not null",
            &c
        )
        .await,
        80
    );
    assert_batches_cover(&w, &c, 500).await;
    // A second choice changes nothing.
    let again = lifecycle::choose_winner(&w.app.core.db, &scope, uuid(&c))
        .await
        .unwrap();
    assert_eq!(again.version, decided.version);
    assert_eq!(
        count(
            &w,
            "select count(*) from marketing_campaign_batches where campaign_id = $1",
            &c
        )
        .await,
        3
    );
    // The winner's batch carries b's subject; once accepted the campaign is sent.
    let winner_batch: Uuid =
        sqlx::query_scalar("select id from marketing_campaign_batches where campaign_id = $1 and variant = 'winner'")
            .bind(uuid(&c))
            .fetch_one(&w.app.db.owner)
            .await
            .unwrap();
    let Claim::Ready(claimed) = delivery::claim_batch(&w.app.core.db, &scope, winner_batch, Duration::minutes(5))
        .await
        .unwrap()
    else {
        panic!("the winner's batch is claimable");
    };
    assert_eq!(claimed.message.source.subject, "Subject B, {{ contact.first_name }}");
    assert_eq!(claimed.recipients.len(), 80);
    delivery::record_accepted(&w.app.core.db, &scope, winner_batch, None, &[])
        .await
        .unwrap();
    let r = w.get(&p, "").await;
    assert_eq!(r.json["status"], "sent");
    assert_eq!(r.json["progress"]["sent"], 100);
    let stats = w.get(&format!("{p}/stats"), "").await;
    assert_eq!(stats.json["opened"], json!({"total": 5, "unique": 4}));
    assert_eq!(
        stats.json["variants"],
        json!([{"variant": "a", "sent": 10, "opened": 1, "clicked": 0},
               {"variant": "b", "sent": 10, "opened": 3, "clicked": 0},
               {"variant": "winner", "sent": 80, "opened": 0, "clicked": 0}])
    );
    // A campaign without a test has no winner to choose.
    let plain = w.campaign(&t, json!({"audience": {"tags": ["ab"]}})).await;
    let e = lifecycle::choose_winner(&w.app.core.db, &scope, uuid(&plain)).await;
    assert!(matches!(
        e,
        Err(shared::domain::DomainError::Conflict { code: "no-ab-test", .. })
    ));
}

#[tokio::test]
async fn the_emails_per_month_limit_refuses_before_anything_is_frozen() {
    let w = world().await;
    w.connect(w.tenant, "sendgrid").await;
    many(&w, w.tenant, 5, "p", "plan").await;
    sqlx::query("update billing_plans set emails_per_month = 7 where code = 'free'")
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    let t = w.template("Hi").await;
    // 5 of 7 go out.
    let first = w.campaign(&t, json!({"audience": {"tags": ["plan"]}})).await;
    let r = w.post(&format!("{}/schedule", path(&first)), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The next 5 would make 10: 402 naming the limit, scheduled or now, nothing frozen.
    let second = w.campaign(&t, json!({"audience": {"tags": ["plan"]}})).await;
    for body in [json!({}), json!({"send_at": later(1)})] {
        let r = w.post(&format!("{}/schedule", path(&second)), body).await;
        let p = r.problem(402);
        assert_eq!(
            p["limit"],
            json!({"name": "emails_per_month", "allowed": 7, "used": 5, "plan": "free"})
        );
    }
    assert_eq!(w.get(&path(&second), "").await.json["status"], "draft");
    assert_eq!(w.app.count("marketing_campaign_recipients").await, 5);
    // A larger plan lets it through.
    w.app.subscribe(w.tenant, "starter").await;
    let r = w.post(&format!("{}/schedule", path(&second)), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(w.app.count("marketing_campaign_recipients").await, 10);
}

#[tokio::test]
async fn the_sender_claims_once_records_outcomes_and_settles_unknown_batches() {
    let w = world().await;
    w.connect(w.tenant, "sendgrid").await;
    many(&w, w.tenant, 6, "s", "send").await;
    let t = w.template("Hi {{ contact.first_name }}").await;
    let c = w.campaign(&t, json!({"audience": {"tags": ["send"]}})).await;
    let scope = w.worker(w.tenant);
    lifecycle::start(&w.app.core.db, &scope, uuid(&c), Some(2))
        .await
        .unwrap();
    let due = delivery::due_batches(&w.app.core.db, Utc::now() + Duration::seconds(1), 100)
        .await
        .unwrap();
    let mine: Vec<Uuid> = due.iter().filter(|d| d.tenant_id == w.tenant).map(|d| d.id).collect();
    assert_eq!(mine.len(), 3);
    let (b1, b2, b3) = (mine[0], mine[1], mine[2]);

    // A claim is exclusive: a redelivery finds nothing to do.
    let Claim::Ready(claimed) = delivery::claim_batch(&w.app.core.db, &scope, b1, Duration::minutes(5))
        .await
        .unwrap()
    else {
        panic!("first claim");
    };
    assert_eq!(claimed.recipients.len(), 2);
    assert_eq!(claimed.message.from_email, "news@acme.example");
    assert!(
        claimed
            .recipients
            .iter()
            .all(|r| r.contact.email == r.email && !r.contact.first_name.is_empty())
    );
    assert!(matches!(
        delivery::claim_batch(&w.app.core.db, &scope, b1, Duration::minutes(5))
            .await
            .unwrap(),
        Claim::Nothing
    ));
    let ids: Vec<(Uuid, String)> = claimed
        .recipients
        .iter()
        .map(|r| (r.id, format!("sg-{}", r.id)))
        .collect();
    assert!(
        delivery::record_accepted(&w.app.core.db, &scope, b1, Some("batch-1"), &ids)
            .await
            .unwrap()
    );
    assert!(
        !delivery::record_accepted(&w.app.core.db, &scope, b1, Some("batch-1"), &ids)
            .await
            .unwrap()
    );
    assert_eq!(w.recipients(id(&c), "sent").await, 2);

    // A 429: pending again from the provider's time, recipients queued, nothing lost.
    let Claim::Ready(_) = delivery::claim_batch(&w.app.core.db, &scope, b2, Duration::minutes(5))
        .await
        .unwrap()
    else {
        panic!("claim b2");
    };
    let retry_at = Utc::now() + Duration::minutes(1);
    assert!(
        delivery::record_refused(&w.app.core.db, &scope, b2, "429 Too Many Requests", Some(retry_at))
            .await
            .unwrap()
    );
    match delivery::claim_batch(&w.app.core.db, &scope, b2, Duration::minutes(5))
        .await
        .unwrap()
    {
        Claim::Later(at) => assert!((at - retry_at).num_milliseconds().abs() < 1000),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.recipients(id(&c), "queued").await, 4);

    // A crash after handing b3 over: the lease runs out, the batch is unknown, never re-sent
    // blindly; the provider's events show it never had it: pending again.
    let Claim::Ready(_) = delivery::claim_batch(&w.app.core.db, &scope, b3, Duration::milliseconds(1))
        .await
        .unwrap()
    else {
        panic!("claim b3");
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let expired = delivery::expired_batches(&w.app.core.db, Utc::now(), 100)
        .await
        .unwrap();
    assert!(expired.iter().any(|d| d.id == b3));
    assert!(delivery::mark_unknown(&w.app.core.db, &scope, b3).await.unwrap());
    let r = w.get(&path(&c), "").await;
    assert_eq!(r.json["progress"]["unknown"], 2);
    assert!(matches!(
        delivery::claim_batch(&w.app.core.db, &scope, b3, Duration::minutes(5))
            .await
            .unwrap(),
        Claim::Nothing
    ));
    assert!(
        delivery::resolve_unknown(&w.app.core.db, &scope, b3, false)
            .await
            .unwrap()
    );
    let Claim::Ready(_) = delivery::claim_batch(&w.app.core.db, &scope, b3, Duration::minutes(5))
        .await
        .unwrap()
    else {
        panic!("b3 again");
    };
    // This time it crashes after the provider took it: the events say so.
    sqlx::query("update marketing_campaign_batches set lease_until = now() - interval '1 second' where id = $1")
        .bind(b3)
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    assert!(delivery::mark_unknown(&w.app.core.db, &scope, b3).await.unwrap());
    assert!(
        delivery::resolve_unknown(&w.app.core.db, &scope, b3, true)
            .await
            .unwrap()
    );
    assert_eq!(w.recipients(id(&c), "sent").await, 4);

    // A recipient unsubscribed since the freeze is not sent to; a refusal for good fails the rest.
    let queued: String = sqlx::query_scalar(
        "select email from marketing_campaign_recipients where batch_id = $1 order by email limit 1",
    )
    .bind(b2)
    .fetch_one(&w.app.db.owner)
    .await
    .unwrap();
    w.suppression(w.tenant, &queued, "unsubscribed").await;
    sqlx::query("update marketing_campaign_batches set not_before = now() where id = $1")
        .bind(b2)
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    let Claim::Ready(claimed) = delivery::claim_batch(&w.app.core.db, &scope, b2, Duration::minutes(5))
        .await
        .unwrap()
    else {
        panic!("b2 again");
    };
    assert_eq!(claimed.recipients.len(), 1);
    assert!(
        delivery::record_refused(&w.app.core.db, &scope, b2, "550 mailbox unavailable", None)
            .await
            .unwrap()
    );
    let r = w.get(&path(&c), "").await;
    assert_eq!(r.json["status"], "sent", "every batch is done");
    assert!(r.json["finished_at"].is_string());
    assert_eq!(
        r.json["progress"],
        json!({"total": 6, "queued": 0, "held": 0, "sending": 0, "sent": 4, "failed": 1, "unknown": 0,
               "suppressed": 1, "cancelled": 0})
    );
    // The provider's refusals pause a campaign with its reason.
    let other = w.campaign(&t, json!({"audience": {"tags": ["send"]}})).await;
    lifecycle::start(&w.app.core.db, &scope, uuid(&other), None)
        .await
        .unwrap();
    assert!(
        delivery::pause_for_provider(&w.app.core.db, &scope, uuid(&other), "401: invalid API key")
            .await
            .unwrap()
    );
    let r = w.get(&path(&other), "").await;
    assert_eq!(
        (r.json["status"].as_str(), r.json["status_reason"].as_str()),
        (Some("paused"), Some("401: invalid API key"))
    );
}

#[tokio::test]
async fn a_due_campaign_that_cannot_start_is_paused_with_the_reason() {
    let w = world().await;
    w.connect(w.tenant, "sendgrid").await;
    many(&w, w.tenant, 3, "d", "due").await;
    let t = w.template("Hi").await;
    let c = w.campaign(&t, json!({"audience": {"tags": ["due"]}})).await;
    let r = w
        .post(&format!("{}/schedule", path(&c)), json!({"send_at": later(1)}))
        .await;
    assert_eq!(r.json["status"], "scheduled");
    let scope = w.worker(w.tenant);
    // Not due yet: unchanged.
    let same = lifecycle::start_due(&w.app.core.db, &scope, uuid(&c), None)
        .await
        .unwrap();
    assert_eq!(same.status, CampaignStatus::Scheduled);
    let due = delivery::due_campaigns(&w.app.core.db, Utc::now() + Duration::days(2), 10)
        .await
        .unwrap();
    assert!(due.iter().any(|d| d.id == uuid(&c)));
    sqlx::query("update marketing_campaigns set scheduled_at = now() - interval '1 minute' where id = $1")
        .bind(uuid(&c))
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    sqlx::query("delete from connectors where tenant_id = $1")
        .bind(w.tenant)
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    let paused = lifecycle::start_due(&w.app.core.db, &scope, uuid(&c), None)
        .await
        .unwrap();
    assert_eq!(paused.status, CampaignStatus::Paused);
    assert!(paused.status_reason.unwrap().contains("no email connector"));
    assert_eq!(w.app.count("marketing_campaign_recipients").await, 0);
    // Fixed and resumed: scheduled (its time has passed), and the scheduler starts it.
    w.connect(w.tenant, "mailgun").await;
    assert_eq!(
        w.post(&format!("{}/resume", path(&c)), json!({})).await.json["status"],
        "scheduled"
    );
    let started = lifecycle::start_due(&w.app.core.db, &scope, uuid(&c), None)
        .await
        .unwrap();
    assert_eq!(started.status, CampaignStatus::Sending);
    assert_eq!(started.provider, Some(EmailProvider::Mailgun));
}

/// Events for the recipients of `campaign`, by address: (event id, address, kind, url, hard).
type Script = Vec<(
    &'static str,
    &'static str,
    EventKind,
    Option<&'static str>,
    Option<bool>,
)>;

async fn play(w: &World, campaign: &Value, script: &Script) {
    let scope = w.worker(w.tenant);
    let ids: Vec<(Uuid, String)> =
        sqlx::query_as("select id, email from marketing_campaign_recipients where campaign_id = $1")
            .bind(uuid(campaign))
            .fetch_all(&w.app.db.owner)
            .await
            .unwrap();
    let mut tx = shared::adapters::pg::begin(&w.app.core.db, &scope).await.unwrap();
    for (event_id, email, kind, url, hard) in script {
        let recipient = ids.iter().find(|(_, e)| e == email).unwrap().0;
        report::record_event(
            &mut tx,
            &EmailEvent {
                provider: EmailProvider::Sendgrid,
                provider_event_id: format!("{}-{event_id}", id(campaign)),
                recipient_id: recipient,
                kind: *kind,
                hard_bounce: *hard,
                url: url.map(str::to_owned),
                occurred_at: Utc::now(),
            },
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn stats_come_out_the_same_whatever_the_order_and_repetition_of_events() {
    let w = world().await;
    w.connect(w.tenant, "sendgrid").await;
    for name in ["ann", "bo", "cy", "di"] {
        w.contact(
            w.tenant,
            json!({"first_name": name, "email": format!("{name}@example.com"), "tags": ["s"]}),
        )
        .await;
    }
    let t = w.template("Hi").await;
    let one = w.campaign(&t, json!({"audience": {"tags": ["s"]}})).await;
    let two = w.campaign(&t, json!({"audience": {"tags": ["s"]}})).await;
    let scope = w.worker(w.tenant);
    for c in [&one, &two] {
        lifecycle::start(&w.app.core.db, &scope, uuid(c), None).await.unwrap();
    }
    use EventKind::*;
    let script: Script = vec![
        ("1", "ann@example.com", Delivered, None, None),
        ("2", "bo@example.com", Delivered, None, None),
        ("3", "cy@example.com", Delivered, None, None),
        ("4", "ann@example.com", Open, None, None),
        ("5", "ann@example.com", Open, None, None),
        ("6", "bo@example.com", Open, None, None),
        ("7", "ann@example.com", Click, Some("https://acme.example/a"), None),
        ("8", "ann@example.com", Click, Some("https://acme.example/a"), None),
        ("9", "bo@example.com", Click, Some("https://acme.example/b"), None),
        ("10", "bo@example.com", Click, Some("https://acme.example/a"), None),
        ("11", "di@example.com", Bounce, None, Some(false)),
        ("12", "di@example.com", Bounce, None, Some(true)),
        ("13", "cy@example.com", Bounce, None, Some(false)),
        ("14", "cy@example.com", Complaint, None, None),
        ("15", "bo@example.com", Unsubscribe, None, None),
    ];
    play(&w, &one, &script).await;
    // The same events backwards, every one twice.
    let mut shuffled: Script = script.iter().rev().cloned().collect();
    shuffled.extend(script.iter().cloned());
    play(&w, &two, &shuffled).await;
    let s1 = w.get(&format!("{}/stats", path(&one)), "").await;
    let s2 = w.get(&format!("{}/stats", path(&two)), "").await;
    assert_eq!(s1.status, 200, "{}", s1.text);
    assert_eq!(s1.json, s2.json);
    assert_eq!(
        s1.json,
        json!({"sent": 0, "delivered": 3, "opened": {"total": 3, "unique": 2}, "clicked": {"total": 4, "unique": 2},
            "bounced": {"hard": 1, "soft": 1}, "complained": 1, "unsubscribed": 1,
            "links": [{"url": "https://acme.example/a", "total": 3, "unique": 2},
                      {"url": "https://acme.example/b", "total": 1, "unique": 1}],
            "variants": []})
    );
    // The recipients' own state is the same too.
    let state = |c: &Value| {
        let c = uuid(c);
        let db = w.app.db.owner.clone();
        async move {
            let rows: Vec<(String, bool, bool, bool, Option<String>)> = sqlx::query_as(
                "select email, opened_at is not null, clicked_at is not null, delivered_at is not null, bounce_kind \
                 from marketing_campaign_recipients where campaign_id = $1 order by email",
            )
            .bind(c)
            .fetch_all(&db)
            .await
            .unwrap();
            rows
        }
    };
    assert_eq!(state(&one).await, state(&two).await);
    assert_eq!(
        state(&one).await[3].4.as_deref(),
        Some("hard"),
        "di: a hard bounce outranks soft ones"
    );
}

#[tokio::test]
async fn a_test_goes_only_to_members_rendered_and_queued() {
    let w = world().await;
    let t = w.template("Hello {{ contact.first_name }}").await;
    let c = w.campaign(&t, json!({})).await;
    let p = format!("{}/test", path(&c));
    w.connect(w.tenant, "sendgrid").await;
    // A stranger (and a malformed address) are named; nothing is queued.
    let r = w
        .post(
            &p,
            json!({"addresses": [w.member.email, "stranger@example.com", "nope"]}),
        )
        .await;
    assert_eq!(fields(&r), ["addresses[2]"]);
    let r = w
        .post(&p, json!({"addresses": [w.member.email, "stranger@example.com"]}))
        .await;
    assert_eq!(fields(&r), ["addresses[1]"]);
    let r = w.post(&p, json!({"addresses": []})).await;
    assert_eq!(fields(&r), ["addresses"]);
    assert_eq!(w.app.count("marketing_test_sends").await, 0);
    // Members, in any case: one message each, rendered, with an idempotent retry.
    let body = json!({"addresses": [w.owner.email.to_uppercase(), w.viewer.email]});
    let r = testkit::post(&p)
        .bearer(&w.member.token)
        .tenant(w.tenant)
        .header("idempotency-key", "test-1")
        .json(body.clone())
        .send(&w.api)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let messages = r.json["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["email"], w.owner.email.to_lowercase());
    assert_eq!(messages[0]["subject"], "[Test] Hello Jane");
    assert_eq!(messages[0]["status"], "queued");
    assert_eq!(messages[0]["provider"], "sendgrid");
    assert!(messages[0]["html"].as_str().unwrap().contains("Hello Jane"));
    let again = testkit::post(&p)
        .bearer(&w.member.token)
        .tenant(w.tenant)
        .header("idempotency-key", "test-1")
        .json(body)
        .send(&w.api)
        .await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(w.app.count("marketing_test_sends").await, 2);
    assert_eq!(
        w.app.count("marketing_campaign_recipients").await,
        0,
        "a test is not the campaign"
    );
    // Without a template there is nothing to test.
    let bare = w
        .created(
            "/marketing/campaigns",
            json!({"name": "Bare", "from_name": "Acme", "from_email": "news@acme.example"}),
        )
        .await;
    let r = w
        .post(&format!("{}/test", path(&bare)), json!({"addresses": [w.owner.email]}))
        .await;
    conflict(&r, "campaign-incomplete");
    // A tenant's unsent tests are capped (the schedule's queue is shared): past it, 409 and
    // nothing queued.
    sqlx::query(
        "insert into marketing_test_sends (id, tenant_id, campaign_id, email, provider, from_name, from_email, \
         subject, html, text_body) select gen_random_uuid(), tenant_id, campaign_id, email, provider, from_name, \
         from_email, subject, html, text_body from marketing_test_sends, generate_series(1, 9) limit 17",
    )
    .execute(&w.app.db.owner)
    .await
    .unwrap();
    assert_eq!(w.app.count("marketing_test_sends").await, 19);
    let r = w.post(&p, json!({"addresses": [w.owner.email, w.viewer.email]})).await;
    conflict(&r, "tests-pending");
    assert_eq!(w.app.count("marketing_test_sends").await, 19);
    // Viewers may not send tests.
    w.post_as(&w.viewer, &p, json!({"addresses": [w.owner.email]}))
        .await
        .problem(403);
}

#[tokio::test]
async fn campaigns_are_validated_listed_patched_with_etags() {
    let w = world().await;
    let t = w.template("Hi").await;
    let (_, other) = w.other_tenant().await;
    let theirs: Uuid = sqlx::query_scalar(
        "insert into marketing_segments (id, tenant_id, name) values (gen_random_uuid(), $1, 'Theirs') returning id",
    )
    .bind(other)
    .fetch_one(&w.app.db.owner)
    .await
    .unwrap();
    let r = w
        .post(
            "/marketing/campaigns",
            json!({"name": " ", "template_id": Uuid::new_v4(), "from_name": "", "from_email": "not-an-address",
                "reply_to": "also not", "audience": {"segment_ids": [theirs], "tags": [""]}}),
        )
        .await;
    assert_eq!(
        fields(&r),
        [
            "audience.segment_ids[0]",
            "audience.tags",
            "from_email",
            "from_name",
            "name",
            "reply_to",
            "template_id"
        ]
    );
    let r = w
        .post(
            "/marketing/campaigns",
            json!({"name": "X", "from_name": "A", "from_email": "a@b.example", "provider": "postmark"}),
        )
        .await;
    assert_eq!(fields(&r), ["provider"]);
    assert_eq!(w.app.count("marketing_campaigns").await, 0);

    let c = w.campaign(&t, json!({"reply_to": "Help@Acme.example"})).await;
    assert_eq!(c["reply_to"], "Help@acme.example");
    assert_eq!(c["created_by"], json!(w.owner.id));
    let p = path(&c);
    let r = w.get(&p, "").await;
    assert_eq!(r.headers["etag"], "\"1\"");
    let r = w
        .patch(&p, json!({"reply_to": null, "name": "Renamed"}), Some("\"1\""))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["etag"], "\"2\"");
    assert!(r.json["reply_to"].is_null());
    w.patch(&p, json!({"name": "Stale"}), Some("\"1\"")).await.problem(412);
    let r = w.patch(&p, json!({"from_email": "bad"}), Some("\"1\"")).await;
    assert_eq!(fields(&r), ["from_email"], "the body is checked before the ETag");

    for name in ["Alpha", "Beta"] {
        w.campaign(&t, json!({"name": name})).await;
    }
    let r = w.get("/marketing/campaigns", "limit=2").await;
    let names: Vec<&str> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Beta", "Alpha"]);
    assert!(r.json["items"][0].get("progress").is_none(), "lists leave progress out");
    let cursor = r.json["next_cursor"].as_str().unwrap();
    let r = w.get("/marketing/campaigns", &format!("limit=2&cursor={cursor}")).await;
    assert_eq!(r.json["items"][0]["name"], "Renamed");
    assert_eq!(
        w.get("/marketing/campaigns", "q=alp").await.json["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        w.get("/marketing/campaigns", "status=sent").await.json["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    w.get("/marketing/campaigns", "status=nope").await.problem(422);
    // Deleting the template leaves the draft without one; it cannot be scheduled.
    assert_eq!(w.delete(&format!("/marketing/templates/{}", id(&t))).await.status, 204);
    assert!(w.get(&p, "").await.json["template_id"].is_null());
    w.connect(w.tenant, "sendgrid").await;
    conflict(
        &w.post(&format!("{p}/schedule"), json!({})).await,
        "campaign-incomplete",
    );
}

#[tokio::test]
async fn another_tenants_campaign_answers_404_on_every_route() {
    let w = world().await;
    w.connect(w.tenant, "sendgrid").await;
    many(&w, w.tenant, 2, "i", "iso").await;
    let t = w.template("Hi").await;
    let c = w.campaign(&t, json!({"audience": {"tags": ["iso"]}})).await;
    let p = path(&c);
    let (intruder, theirs) = w.other_tenant().await;
    w.connect(theirs, "sendgrid").await;
    let as_them = |r: testkit::Req| r.bearer(&intruder.token).tenant(theirs);
    for r in [
        as_them(testkit::get(&p)),
        as_them(testkit::patch(&p)).json(json!({"name": "Theirs"})),
        as_them(testkit::delete(&p)),
        as_them(testkit::post(&format!("{p}/test"))).json(json!({"addresses": [intruder.email]})),
        as_them(testkit::post(&format!("{p}/schedule"))).json(json!({})),
        as_them(testkit::post(&format!("{p}/pause"))),
        as_them(testkit::post(&format!("{p}/resume"))),
        as_them(testkit::post(&format!("{p}/cancel"))),
        as_them(testkit::get(&format!("{p}/stats"))),
    ] {
        r.send(&w.api).await.problem(404);
    }
    // Their campaign cannot name this tenant's template or segment either.
    let segment = w.created("/marketing/segments", json!({"name": "Mine"})).await;
    let r = as_them(testkit::post("/marketing/campaigns"))
        .json(
            json!({"name": "X", "template_id": t["id"], "from_name": "A", "from_email": "a@b.example",
            "audience": {"segment_ids": [segment["id"]]}}),
        )
        .send(&w.api)
        .await;
    assert_eq!(fields(&r), ["audience.segment_ids[0]", "template_id"]);
    let list = as_them(testkit::get("/marketing/campaigns")).send(&w.api).await;
    assert!(!list.text.contains(id(&c)));
    // Nothing of this tenant's changed.
    let r = w.get(&p, "").await;
    assert_eq!(
        (r.json["name"].as_str(), r.json["status"].as_str()),
        (Some("Spring sale"), Some("draft"))
    );
    assert_eq!(w.app.count("marketing_campaign_recipients").await, 0);
    assert_eq!(w.app.count("marketing_test_sends").await, 0);
}

#[tokio::test]
async fn viewers_read_campaigns_and_members_write_them() {
    let w = world().await;
    w.connect(w.tenant, "sendgrid").await;
    many(&w, w.tenant, 2, "v", "v").await;
    let t = w.template("Hi").await;
    let c = w.campaign(&t, json!({"audience": {"tags": ["v"]}})).await;
    let p = path(&c);
    for read in [p.clone(), format!("{p}/stats"), "/marketing/campaigns".to_owned()] {
        assert_eq!(w.get_as(&w.viewer, &read, "").await.status, 200, "{read}");
    }
    let body = json!({"name": "V", "from_name": "A", "from_email": "a@b.example"});
    w.post_as(&w.viewer, "/marketing/campaigns", body.clone())
        .await
        .problem(403);
    for action in ["schedule", "pause", "resume", "cancel"] {
        w.post_as(&w.viewer, &format!("{p}/{action}"), json!({}))
            .await
            .problem(403);
    }
    w.delete_as(&w.viewer, &p).await.problem(403);
    let r = testkit::patch(&p)
        .bearer(&w.viewer.token)
        .tenant(w.tenant)
        .json(json!({"name": "V"}))
        .send(&w.api)
        .await;
    r.problem(403);
    assert_eq!(w.get(&p, "").await.json["version"], 1, "nothing changed");
    // Members may.
    assert_eq!(w.post_as(&w.member, "/marketing/campaigns", body).await.status, 201);
    let r = w.post_as(&w.member, &format!("{p}/schedule"), json!({})).await;
    assert_eq!(r.json["status"], "sending", "{}", r.text);
    assert_eq!(
        w.post_as(&w.member, &format!("{p}/cancel"), json!({})).await.json["status"],
        "cancelled"
    );
}

#[tokio::test]
async fn row_level_security_holds_on_the_campaign_tables() {
    let w = world().await;
    let (other_owner, other) = w.other_tenant().await;
    for tenant in [w.tenant, other] {
        w.connect(tenant, "sendgrid").await;
        many(&w, tenant, 2, &format!("t{}-", tenant.simple()), "rls").await;
        let scope = w.worker(tenant);
        let mut tx = shared::adapters::pg::begin(&w.app.core.db, &scope).await.unwrap();
        let template = Uuid::now_v7();
        sqlx::query(
            "insert into marketing_templates (id, tenant_id, name, subject, format, body) values ($1, $2, 'T', 'S', 'html', '<p>x</p>')",
        )
        .bind(template)
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .unwrap();
        let campaign = Uuid::now_v7();
        sqlx::query(
            "insert into marketing_campaigns (id, tenant_id, name, template_id, from_name, from_email, audience) \
             values ($1, $2, 'C', $3, 'A', 'a@b.example', '{\"segment_ids\": [], \"tags\": [\"rls\"]}')",
        )
        .bind(campaign)
        .bind(tenant)
        .bind(template)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        lifecycle::start(&w.app.core.db, &scope, campaign, None).await.unwrap();
        let recipient: Uuid =
            sqlx::query_scalar("select id from marketing_campaign_recipients where campaign_id = $1 limit 1")
                .bind(campaign)
                .fetch_one(&w.app.db.owner)
                .await
                .unwrap();
        sqlx::query(
            "insert into marketing_email_events (id, tenant_id, campaign_id, recipient_id, provider, provider_event_id, kind, occurred_at) \
             values (gen_random_uuid(), $1, $2, $3, 'sendgrid', 'e1', 'delivered', now())",
        )
        .bind(tenant)
        .bind(campaign)
        .bind(recipient)
        .execute(&w.app.db.owner)
        .await
        .unwrap();
        sqlx::query(
            "insert into marketing_test_sends (id, tenant_id, campaign_id, email, provider, from_name, from_email, subject, html, text_body) \
             values (gen_random_uuid(), $1, $2, 'm@example.com', 'sendgrid', 'A', 'a@b.example', 'S', '<p>x</p>', 'x')",
        )
        .bind(tenant)
        .bind(campaign)
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    }
    let scope = Scope {
        actor: Actor::User {
            user_id: other_owner.id,
            email: other_owner.email.clone(),
        },
        tenant: Some((other, Role::Owner)),
        request_id: "rls".into(),
    };
    for table in [
        "marketing_campaigns",
        "marketing_campaign_batches",
        "marketing_campaign_recipients",
        "marketing_email_events",
        "marketing_test_sends",
    ] {
        let mut tx = shared::adapters::pg::begin(&w.app.db.app, &scope).await.unwrap();
        let visible: Vec<Uuid> = sqlx::query_scalar(&format!("select distinct tenant_id from {table}"))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(
            visible,
            [other],
            "{table}: only the other tenant's rows, with no WHERE clause"
        );
        let touched = sqlx::query(&format!("update {table} set tenant_id = tenant_id"))
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        let theirs: i64 = sqlx::query_scalar(&format!("select count(*) from {table} where tenant_id = $1"))
            .bind(other)
            .fetch_one(&w.app.db.owner)
            .await
            .unwrap();
        assert_eq!(touched as i64, theirs, "{table}");
        // Moving a row to this tenant is refused by the policy.
        let moved = sqlx::query(&format!("update {table} set tenant_id = $1"))
            .bind(w.tenant)
            .execute(&mut *tx)
            .await;
        assert!(moved.is_err(), "{table}");
        tx.rollback().await.unwrap();
        let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&w.app.db.app)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}: no tenant, nothing visible");
    }
    // The usage view is the current tenant's only.
    let mut tx = shared::adapters::pg::begin(&w.app.db.app, &scope).await.unwrap();
    assert_eq!(lifecycle::emails_used(&mut tx).await.unwrap(), 2);
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn twenty_thousand_contacts_freeze_in_one_transaction() {
    let w = world().await;
    w.connect(w.tenant, "sendgrid").await;
    w.app.subscribe(w.tenant, "scale").await;
    many(&w, w.tenant, 20_000, "bulk", "bulk").await;
    // Some suppressed, some in a segment too (counted once).
    sqlx::query(
        "insert into marketing_suppressions (id, tenant_id, email, reason) \
         select gen_random_uuid(), $1, 'bulk' || i || '@example.com', 'unsubscribed' from generate_series(1, 500) i",
    )
    .bind(w.tenant)
    .execute(&w.app.db.owner)
    .await
    .unwrap();
    sqlx::query("update crm_contacts set lifecycle_stage = 'customer' where tenant_id = $1 and first_name like 'C1%'")
        .bind(w.tenant)
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    let customers = w
        .created(
            "/marketing/segments",
            json!({"name": "Customers", "filter": {"lifecycle_stages": ["customer"]}}),
        )
        .await;
    let t = w.template("Hi").await;
    let c = w
        .campaign(
            &t,
            json!({"audience": {"segment_ids": [customers["id"]], "tags": ["bulk"]}}),
        )
        .await;
    let started = std::time::Instant::now();
    let r = w.post(&format!("{}/schedule", path(&c)), json!({})).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text);
    println!("froze 20,000 contacts (19,500 queued in 39 batches) in {elapsed:?}");
    assert_eq!(r.json["progress"]["total"], 20_000);
    assert_eq!(r.json["progress"]["queued"], 19_500);
    assert_eq!(r.json["progress"]["suppressed"], 500);
    assert_eq!(
        count(
            &w,
            "select count(*) from marketing_campaign_batches where campaign_id = $1",
            &c
        )
        .await,
        39
    );
    assert_batches_cover(&w, &c, 500).await;
}
