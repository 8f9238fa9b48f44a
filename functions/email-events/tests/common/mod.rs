//! What the email-events tests share: a tenant with a SendGrid connector (a P-256 key pair made
//! for the test) and a Mailgun one (a signing key), campaigns written as the sender freezes them,
//! signed deliveries of either provider, and what the tests look at afterwards.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use shared::domain::signature::hmac_sha256;
use shared::domain::{Actor, Role, Scope};
use shared::services::connectors::Connectors;
use shared::services::connectors::catalog::Kind;
use shared::services::marketing::campaigns::report::{self, CampaignStats};
use shared::services::providers::sendgrid;
pub use testkit::email::{SendgridKey, sg_body};
use testkit::{Resp, TestApp, req};
use uuid::Uuid;

pub const SIGNATURE: &str = sendgrid::SIGNATURE_HEADER;
pub const TIMESTAMP: &str = sendgrid::TIMESTAMP_HEADER;
pub const MAILGUN_KEY: &str = "mailgun-webhook-signing-key-for-tests";

pub fn mailgun_signature(key: &str, timestamp: &str, token: &str) -> String {
    hmac_sha256(key.as_bytes(), &[timestamp.as_bytes(), token.as_bytes()])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn owner_scope(tenant: Uuid) -> Scope {
    Scope {
        actor: Actor::User {
            user_id: Uuid::nil(),
            email: String::new(),
        },
        tenant: Some((tenant, Role::Owner)),
        request_id: "test".into(),
    }
}

pub async fn save(
    connectors: &Connectors,
    tenant: Uuid,
    kind: Kind,
    body: Value,
) -> shared::services::connectors::Connector {
    let body: Map<String, Value> = body.as_object().unwrap().clone();
    connectors.put(&owner_scope(tenant), kind, body, None).await.unwrap()
}

/// A campaign of `tenant` already sent to `emails` (one recipient each, status `sent`).
pub async fn campaign(app: &TestApp, tenant: Uuid, emails: &[&str]) -> (Uuid, Vec<Uuid>) {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into marketing_campaigns (id, tenant_id, name, from_name, from_email, status) \
         values ($1, $2, 'Spring sale', 'Shop', 'news@shop.example', 'sent')",
    )
    .bind(id)
    .bind(tenant)
    .execute(&app.db.owner)
    .await
    .unwrap();
    let mut recipients = Vec::new();
    for email in emails {
        let r = Uuid::now_v7();
        sqlx::query(
            "insert into marketing_campaign_recipients (id, tenant_id, campaign_id, email, status, sent_at) \
             values ($1, $2, $3, $4, 'sent', now())",
        )
        .bind(r)
        .bind(tenant)
        .bind(id)
        .bind(email)
        .execute(&app.db.owner)
        .await
        .unwrap();
        recipients.push(r);
    }
    (id, recipients)
}

/// One SendGrid event about our message `recipient` (custom args as the sender sets them).
pub fn sg(event: &str, id: &str, recipient: Uuid, t: i64, extra: Value) -> Value {
    let mut e = json!({
        "email": "someone@example.com", "event": event, "sg_event_id": id, "timestamp": t,
        "sg_message_id": "14c5d75ce93.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>", "message_id": recipient.to_string(),
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

/// One Mailgun `event-data` about our message `recipient`.
pub fn mg(event: &str, id: &str, recipient: Uuid, t: f64, extra: Value) -> Value {
    let mut e = json!({
        "event": event, "id": id, "timestamp": t, "recipient": "someone@example.com",
        "message": {"headers": {"message-id": "20251201.1.ABC@mg.example.com"}},
        "user-variables": {"message_id": recipient.to_string()},
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

pub fn token() -> String {
    format!(
        "{}{}",
        Uuid::new_v4().simple(),
        &Uuid::new_v4().simple().to_string()[..18]
    )
}

pub fn mg_body(key: &str, timestamp: &str, token: &str, event_data: &Value) -> Vec<u8> {
    json!({
        "signature": {"timestamp": timestamp, "token": token, "signature": mailgun_signature(key, timestamp, token)},
        "event-data": event_data,
    })
    .to_string()
    .into_bytes()
}

pub fn received(r: &Resp) -> (u64, u64, u64, u64) {
    assert_eq!(r.status, 200, "{}", r.text);
    let n = |k: &str| r.json[k].as_u64().unwrap();
    (n("stored"), n("duplicates"), n("ignored"), n("malformed"))
}

pub struct World {
    pub app: TestApp,
    pub connectors: Connectors,
    pub tenant: Uuid,
    pub sendgrid: SendgridKey,
    pub sendgrid_path: String,
    pub mailgun_path: String,
}

pub async fn world() -> World {
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    let connectors = testkit::connectors(&app.db.app, []);
    let key = SendgridKey::new();
    let sendgrid_path = save(
        &connectors,
        tenant,
        Kind::Sendgrid,
        json!({"api_key": "SG.test-key-000000", "webhook_public_key": key.public}),
    )
    .await
    .webhook_path
    .unwrap();
    let mailgun_path = save(
        &connectors,
        tenant,
        Kind::Mailgun,
        json!({"region": "eu", "domain": "mg.shop.example", "api_key": "key-00000000000", "webhook_signing_key": MAILGUN_KEY}),
    )
    .await
    .webhook_path
    .unwrap();
    World {
        app,
        connectors,
        tenant,
        sendgrid: key,
        sendgrid_path,
        mailgun_path,
    }
}

impl World {
    pub fn router(&self) -> axum::Router {
        email_events::router(email_events::EventsState {
            connectors: self.connectors.clone(),
        })
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let mut r = req(http::Method::POST, path).header("content-type", "application/json");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send_body(body, &self.router()).await
    }

    /// Posts `body` signed with the tenant's key at `timestamp`.
    pub async fn sendgrid_at(&self, body: &[u8], timestamp: i64) -> Resp {
        let ts = timestamp.to_string();
        let sig = self.sendgrid.sign(&ts, body);
        self.post(
            &self.sendgrid_path,
            &[(SIGNATURE, &sig), (TIMESTAMP, &ts)],
            body.to_vec(),
        )
        .await
    }

    pub async fn sendgrid(&self, events: &[Value]) -> Resp {
        self.sendgrid_at(&sg_body(events), Utc::now().timestamp()).await
    }

    /// Posts one Mailgun event signed now with a fresh token.
    pub async fn mailgun(&self, event_data: Value) -> Resp {
        let ts = Utc::now().timestamp().to_string();
        self.post(
            &self.mailgun_path,
            &[],
            mg_body(MAILGUN_KEY, &ts, &token(), &event_data),
        )
        .await
    }

    pub async fn stats(&self, campaign: Uuid) -> CampaignStats {
        report::stats(&self.app.db.app, &owner_scope(self.tenant), campaign)
            .await
            .unwrap()
    }

    pub async fn suppression(&self, email: &str) -> Option<String> {
        sqlx::query_scalar("select reason from marketing_suppressions where tenant_id = $1 and email = $2")
            .bind(self.tenant)
            .bind(email)
            .fetch_optional(&self.app.db.owner)
            .await
            .unwrap()
    }

    pub async fn suppress(&self, email: &str, reason: &str) {
        sqlx::query("insert into marketing_suppressions (id, tenant_id, email, reason) values ($1, $2, $3, $4)")
            .bind(Uuid::now_v7())
            .bind(self.tenant)
            .bind(email)
            .bind(reason)
            .execute(&self.app.db.owner)
            .await
            .unwrap();
    }

    /// Everything an event could change, across tenants.
    pub async fn fingerprint(&self) -> Value {
        sqlx::query_scalar(
            "select jsonb_build_object( \
               'events', (select count(*) from marketing_email_events), \
               'replays', (select count(*) from marketing_webhook_replays), \
               'suppressions', (select coalesce(jsonb_agg(jsonb_build_array(email, reason) order by email), '[]') \
                                from marketing_suppressions), \
               'recipients', (select coalesce(jsonb_agg(jsonb_build_array(id, delivered_at, opened_at, clicked_at, \
                                bounced_at, bounce_kind, complained_at, unsubscribed_at, status) order by id), '[]') \
                              from marketing_campaign_recipients))",
        )
        .fetch_one(&self.app.db.owner)
        .await
        .unwrap()
    }

    pub async fn recipient(&self, id: Uuid) -> Value {
        type Folded = (
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
            Option<String>,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
        );
        let (delivered, opened, clicked, bounced, bounce_kind, complained, unsubscribed): Folded = sqlx::query_as(
            "select delivered_at, opened_at, clicked_at, bounced_at, bounce_kind, complained_at, unsubscribed_at \
             from marketing_campaign_recipients where id = $1",
        )
        .bind(id)
        .fetch_one(&self.app.db.owner)
        .await
        .unwrap();
        json!({"delivered_at": delivered, "opened_at": opened, "clicked_at": clicked, "bounced_at": bounced,
               "bounce_kind": bounce_kind, "complained_at": complained, "unsubscribed_at": unsubscribed})
    }
}

pub fn at(t: i64) -> Value {
    json!(DateTime::from_timestamp(t, 0).unwrap())
}

pub const T: i64 = 1_764_579_600;

/// A recipient's folded columns, for comparing two campaigns.
pub async fn folded(w: &World, recipients: &[Uuid]) -> Vec<Value> {
    let mut out = Vec::new();
    for r in recipients {
        out.push(w.recipient(*r).await);
    }
    out
}
