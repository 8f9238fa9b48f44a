//! Email marketing benchmark, one run, against the local stack's Postgres and moto (the send
//! queue) with SendGrid faked by wiremock on loopback:
//!
//! 1. **Fan-out**: a campaign to N contacts (default 100,000) frozen in batches of 1,000, then
//!    every batch sent by the sender as campaign-sender does per SQS message (pace, claim, render
//!    once, one provider request with 1,000 personalizations, record), one after another;
//!    vs the baseline of posting the same request bodies (as the fake received them) with the
//!    same connector client and nothing else. Prints recipients/s of each and the ratio (goal
//!    >= 0.7x), and the freeze on its own.
//! 2. **Event ingest**: one event per recipient (processed, delivered, open, click in turn) in
//!    signed SendGrid batches of 1,000 through email-events' handler (verify, parse, replay
//!    guard, insert, fold into recipients), bodies and signatures made before the clock starts,
//!    vs a bare insert of the same rows (one `unnest` INSERT per 1,000 in a tenant-scoped
//!    transaction, nothing else), before and after the handler's run.
//! 3. **Stats read**: `GET /marketing/campaigns/{id}/stats` over the campaign's recipients and
//!    events, p50/p99 of 200 requests.
//!
//! Usage: cargo run --release -p bench-marketing [-- RECIPIENTS]
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value, json};
use shared::adapters::queue::Queue;
use shared::domain::Scope;
use shared::services::connectors::catalog::Kind;
use shared::services::marketing::campaigns::lifecycle;
use shared::services::marketing::sender::{SendMessage, Sender, SenderOptions, Sent};
use testkit::email::{SendgridKey, sg_body};
use testkit::{TestApp, get, post, req};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BATCH: u32 = 1000;
const SEND_PATH: &str = "/v3/mail/send";

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    println!(
        "email marketing benchmark, {n} recipients in batches of {BATCH}, {}",
        testkit::machine()
    );
    let app = TestApp::new().await;
    let owner = app.user("bench").await;
    let tenant = app.tenant(&owner).await;
    app.subscribe(tenant, "scale").await;
    let scope = Scope::worker(tenant, &format!("user:{}", owner.id), "bench".into());
    let provider = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "sg-bench"))
        .mount(&provider)
        .await;
    let connectors = testkit::connectors(&app.core.db, [(Kind::Sendgrid, provider.uri())]);
    let key = SendgridKey::new();
    let settings: Map<String, Value> = json!({"api_key": "SG.bench-key-0123456789", "webhook_public_key": key.public})
        .as_object()
        .unwrap()
        .clone();
    let webhook_path = connectors
        .put(&scope, Kind::Sendgrid, settings, None)
        .await
        .unwrap()
        .webhook_path
        .unwrap();
    sqlx::query(
        "insert into crm_contacts (id, tenant_id, first_name, last_name, email, tags, lifecycle_stage) \
         select gen_random_uuid(), $1, 'Ann' || i, 'Smith ' || i, 'reader' || i || '@example.com', array['news'], \
                case when i % 2 = 0 then 'customer' else 'lead' end \
         from generate_series(1, $2) i",
    )
    .bind(tenant)
    .bind(n as i64)
    .execute(&app.db.owner)
    .await
    .unwrap();
    let api = marketing_campaigns::router(app.core.clone(), testkit::link_keys());
    let created = |path: &'static str, body: Value| {
        let api = api.clone();
        let token = owner.token.clone();
        async move {
            let r = post(path).bearer(&token).tenant(tenant).json(body).send(&api).await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.json
        }
    };
    let template = created(
        "/marketing/templates",
        json!({"name": "News", "subject": "News for {{ contact.first_name }}",
            "body": "<h1>Hello {{ contact.first_name }} {{ contact.last_name }}</h1><p>This month at {{ tenant.name }}: \
                     three new products and a sale.</p><p><a href=\"https://shop.example/sale\">Shop the sale</a></p>\
                     <p><a href=\"{{ view_in_browser_url }}\">View in browser</a> · \
                     <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>"}),
    )
    .await;
    let campaign = created(
        "/marketing/campaigns",
        json!({"name": "Bench", "template_id": template["id"], "from_name": "Acme",
            "from_email": "news@acme.example", "audience": {"tags": ["news"]}}),
    )
    .await;
    let campaign_id: Uuid = campaign["id"].as_str().unwrap().parse().unwrap();

    // 1. Fan-out.
    let start = Instant::now();
    lifecycle::start(&app.core.db, &scope, campaign_id, Some(BATCH))
        .await
        .unwrap();
    let freeze = start.elapsed();
    let aws = testkit::moto().await;
    let sqs = shared::adapters::aws::sqs(&aws);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("bench-campaign-send-{}", Uuid::new_v4().simple()))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let sender = Sender {
        db: app.core.db.clone(),
        connectors: connectors.clone(),
        links: testkit::link_keys(),
        public_base: "https://api.portal.test".into(),
        queue: Queue::new(&sqs, queue_url),
        options: SenderOptions {
            rate: 100_000_000,
            ..SenderOptions::default()
        },
    };
    let batches: Vec<Uuid> =
        sqlx::query_scalar("select id from marketing_campaign_batches where campaign_id = $1 order by seq")
            .bind(campaign_id)
            .fetch_all(&app.db.owner)
            .await
            .unwrap();
    let start = Instant::now();
    for batch_id in &batches {
        let sent = sender
            .send(&SendMessage {
                tenant_id: tenant,
                batch_id: *batch_id,
            })
            .await
            .unwrap();
        assert!(matches!(sent, Sent::Accepted(_)), "{sent:?}");
    }
    let fan_out = start.elapsed();
    let sent: i64 = sqlx::query_scalar(
        "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'sent'",
    )
    .bind(campaign_id)
    .fetch_one(&app.db.owner)
    .await
    .unwrap();
    assert_eq!(sent as usize, n);
    let bodies: Vec<Vec<u8>> = provider
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == SEND_PATH)
        .map(|r| r.body)
        .collect();
    assert_eq!(bodies.len(), batches.len());
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    provider.reset().await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "sg-bench"))
        .mount(&provider)
        .await;
    let creds = connectors.credentials(&scope, Kind::Sendgrid).await.unwrap().unwrap();
    let start = Instant::now();
    for body in &bodies {
        let resp = connectors
            .request(&creds, reqwest::Method::POST, SEND_PATH)
            .await
            .unwrap()
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
    }
    let bare = start.elapsed();
    println!(
        "fan-out ({} requests, {:.1} MiB of bodies):",
        bodies.len(),
        bytes as f64 / 1048576.0
    );
    println!(
        "  freeze the audience        {:>9.0} recipients/s  ({:.2} s)",
        rate(n, freeze),
        freeze.as_secs_f64()
    );
    println!(
        "  post the bodies (baseline) {:>9.0} recipients/s  ({:.2} s)",
        rate(n, bare),
        bare.as_secs_f64()
    );
    println!(
        "  send every batch           {:>9.0} recipients/s  ({:.2} s, {:.1} ms a batch)",
        rate(n, fan_out),
        fan_out.as_secs_f64(),
        fan_out.as_secs_f64() * 1000.0 / batches.len() as f64
    );
    println!(
        "  send / post: {:.2}x (goal >= 0.7x); with the freeze: {:.2}x",
        bare.as_secs_f64() / fan_out.as_secs_f64(),
        bare.as_secs_f64() / (fan_out + freeze).as_secs_f64()
    );

    // 2. Event ingest.
    let recipients: Vec<Uuid> =
        sqlx::query_scalar("select id from marketing_campaign_recipients where campaign_id = $1 order by id")
            .bind(campaign_id)
            .fetch_all(&app.db.owner)
            .await
            .unwrap();
    let kinds = ["processed", "delivered", "open", "click"];
    let t0 = Utc::now().timestamp();
    let events: Vec<Vec<Value>> = recipients
        .chunks(1000)
        .enumerate()
        .map(|(b, chunk)| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let kind = kinds[(b * 1000 + i) % kinds.len()];
                    let mut e = json!({
                        "email": "reader@example.com", "event": kind, "sg_event_id": format!("ev-{b}-{i}"),
                        "timestamp": t0, "sg_message_id": "14c5d75ce93.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
                        "message_id": r.to_string(),
                    });
                    if kind == "click" {
                        e["url"] = json!("https://shop.example/sale");
                    }
                    e
                })
                .collect()
        })
        .collect();
    let owner_db = app.db.owner.clone();
    let insert_bare = |prefix: &'static str| {
        let pool = app.core.db.clone();
        let owner_db = owner_db.clone();
        let scope = scope.clone();
        let events = &events;
        async move {
            let start = Instant::now();
            for batch in events {
                let mut tx = shared::adapters::pg::begin(&pool, &scope).await.unwrap();
                let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
                let recipients: Vec<Uuid> = batch
                    .iter()
                    .map(|e| e["message_id"].as_str().unwrap().parse().unwrap())
                    .collect();
                let event_ids: Vec<String> = batch
                    .iter()
                    .map(|e| format!("{prefix}{}", e["sg_event_id"].as_str().unwrap()))
                    .collect();
                let kinds: Vec<&str> = batch.iter().map(|e| e["event"].as_str().unwrap()).collect();
                let urls: Vec<Option<&str>> = batch.iter().map(|e| e["url"].as_str()).collect();
                sqlx::query(
                    "insert into marketing_email_events (id, tenant_id, campaign_id, recipient_id, provider, \
                     provider_event_id, kind, url, occurred_at) \
                     select u.id, $1, $2, u.recipient_id, 'sendgrid', u.event_id, u.kind, u.url, to_timestamp($8) \
                     from unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[]) \
                       as u(id, recipient_id, event_id, kind, url)",
                )
                .bind(tenant)
                .bind(campaign_id)
                .bind(&ids)
                .bind(&recipients)
                .bind(&event_ids)
                .bind(&kinds)
                .bind(&urls)
                .bind(t0 as f64)
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
            let took = start.elapsed();
            sqlx::query("delete from marketing_email_events where provider_event_id like $1")
                .bind(format!("{prefix}%"))
                .execute(&owner_db)
                .await
                .unwrap();
            took
        }
    };
    let ts = Utc::now().timestamp().to_string();
    let signed: Vec<(Vec<u8>, String)> = events
        .iter()
        .map(|batch| {
            let body = sg_body(batch);
            let signature = key.sign(&ts, &body);
            (body, signature)
        })
        .collect();
    let router = email_events::router(email_events::EventsState {
        connectors: connectors.clone(),
    });
    let bare_before = insert_bare("bare1-").await;
    let start = Instant::now();
    for (body, signature) in signed {
        let r = req(reqwest::Method::POST, &webhook_path)
            .header("content-type", "application/json")
            .header(shared::services::providers::sendgrid::SIGNATURE_HEADER, &signature)
            .header(shared::services::providers::sendgrid::TIMESTAMP_HEADER, &ts)
            .send_body(body, &router)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["stored"], 1000, "{}", r.text);
    }
    let ingest = start.elapsed();
    let bare_after = insert_bare("bare2-").await;
    let bare = (bare_before + bare_after) / 2;
    println!("event ingest ({n} events in signed batches of 1,000):");
    println!(
        "  bare insert (baseline)     {:>9.0} events/s  (before {:.2} s, after {:.2} s)",
        rate(n, bare),
        bare_before.as_secs_f64(),
        bare_after.as_secs_f64()
    );
    println!(
        "  email-events handler       {:>9.0} events/s  ({:.2} s, {:.1} ms a batch)",
        rate(n, ingest),
        ingest.as_secs_f64(),
        ingest.as_secs_f64() * 1000.0 / events.len() as f64
    );
    println!(
        "  handler / bare insert: {:.2}x",
        bare.as_secs_f64() / ingest.as_secs_f64()
    );

    // 3. Stats read.
    let stats_path = format!("/marketing/campaigns/{campaign_id}/stats");
    let r = get(&stats_path).bearer(&owner.token).tenant(tenant).send(&api).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let start = Instant::now();
        let r = get(&stats_path).bearer(&owner.token).tenant(tenant).send(&api).await;
        samples.push(start.elapsed());
        assert_eq!(r.status, 200);
    }
    println!(
        "stats read (GET {{id}}/stats, {n} recipients, {n} events): p50 {:.1} ms, p99 {:.1} ms",
        testkit::percentile_ms(&mut samples, 0.5),
        testkit::percentile_ms(&mut samples, 0.99)
    );
    println!("  {}", r.text);
}
