//! campaign-sender against real Postgres, moto's SQS and wiremock fakes of SendGrid's and
//! Mailgun's send APIs (at their documented paths): every recipient gets the campaign exactly
//! once across crashes, redeliveries and rate limits; refusals pause; branching templates split.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::Router;
use campaign_sender::Worker;
use chrono::Utc;
use serde_json::{Map, Value, json};
use shared::adapters::queue::Queue;
use shared::domain::Scope;
use shared::services::connectors::catalog::Kind;
use shared::services::marketing::campaigns::{delivery, lifecycle};
use shared::services::marketing::sender::{SendMessage, Sender, SenderOptions, Sent};
use shared::services::marketing::unsubscribe::{self, LinkKeys};
use testkit::{TestApp, TestUser, get, post};
use uuid::Uuid;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEYS: &str = "test-link-key-0123456789abcdef0123456789";

struct World {
    app: TestApp,
    api: Router,
    owner: TestUser,
    tenant: Uuid,
    provider: MockServer,
    worker: Worker,
}

fn scope(tenant: Uuid) -> Scope {
    Scope::worker(tenant, "campaign-sender", "test".into())
}

async fn world(kind: Kind, options: SenderOptions) -> World {
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    let provider = MockServer::start().await;
    let connectors = testkit::connectors(&app.core.db, [(kind, provider.uri())]);
    let mut creds = Map::new();
    creds.insert("api_key".into(), json!("SG.test-key-0123456789"));
    if kind == Kind::Mailgun {
        creds.insert("api_key".into(), json!("key-0123456789abcdef"));
        creds.insert("domain".into(), json!("mg.acme.example"));
        creds.insert("region".into(), json!("us"));
    }
    connectors
        .put(
            &Scope::worker(tenant, &format!("user:{}", owner.id), "t".into()),
            kind,
            creds,
            None,
        )
        .await
        .unwrap();
    let aws = testkit::moto().await;
    let sqs = aws_sdk_sqs_client(&aws);
    let url = sqs
        .create_queue()
        .queue_name(format!("campaign-send-{}", Uuid::new_v4().simple()))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let worker = Worker {
        sender: Sender {
            db: app.core.db.clone(),
            connectors,
            links: LinkKeys::parse(KEYS).unwrap(),
            public_base: "https://api.portal.test".into(),
            queue: Queue::new(&sqs, url),
            options,
        },
    };
    let api = marketing_campaigns::router(app.core.clone(), testkit::link_keys());
    World {
        app,
        api,
        owner,
        tenant,
        provider,
        worker,
    }
}

fn aws_sdk_sqs_client(aws: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    shared::adapters::aws::sqs(aws)
}

fn fast() -> SenderOptions {
    SenderOptions {
        rate: 1_000_000,
        ..SenderOptions::default()
    }
}

impl World {
    async fn created(&self, path: &str, body: Value) -> Value {
        let r = post(path)
            .bearer(&self.owner.token)
            .tenant(self.tenant)
            .json(body)
            .send(&self.api)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json
    }

    /// `n` contacts tagged `tag`, lifecycle stage alternating lead / customer.
    async fn contacts(&self, n: i64, tag: &str) {
        sqlx::query(
            "insert into crm_contacts (id, tenant_id, first_name, last_name, email, tags, lifecycle_stage) \
             select gen_random_uuid(), $1, 'Ann' || i, 'O''Hara <' || i || '>', $3 || i || '@example.com', array[$3], \
                    case when i % 2 = 0 then 'customer' else 'lead' end \
             from generate_series(1, $2) i",
        )
        .bind(self.tenant)
        .bind(n)
        .bind(tag)
        .execute(&self.app.db.owner)
        .await
        .unwrap();
    }

    /// A started campaign to the contacts tagged `tag`, in batches of `size`.
    async fn started(&self, body: &str, tag: &str, size: u32) -> Uuid {
        let t = self
            .created(
                "/marketing/templates",
                json!({"name": "News", "subject": "Hello {{ contact.first_name }}", "body": body}),
            )
            .await;
        let c = self
            .created(
                "/marketing/campaigns",
                json!({"name": "Spring", "template_id": t["id"], "from_name": "Acme",
                    "from_email": "news@acme.example", "audience": {"tags": [tag]}}),
            )
            .await;
        let id: Uuid = c["id"].as_str().unwrap().parse().unwrap();
        lifecycle::start(&self.app.core.db, &scope(self.tenant), id, Some(size))
            .await
            .unwrap();
        id
    }

    /// Everything on the send queue now, taken off it (as Lambda's poller does).
    async fn drain(&self) -> Vec<SendMessage> {
        let q = &self.worker.sender.queue;
        let mut out = Vec::new();
        loop {
            let got = q
                .client()
                .receive_message()
                .queue_url(q.url())
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .unwrap();
            let messages = got.messages();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                out.push(serde_json::from_str(m.body().unwrap()).unwrap());
                q.client()
                    .delete_message()
                    .queue_url(q.url())
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// Ticks and sends until nothing is left to send (at most `rounds` rounds).
    async fn run(&self, rounds: usize) -> Vec<Sent> {
        let mut all = Vec::new();
        for _ in 0..rounds {
            self.worker.sender.tick(Utc::now()).await.unwrap();
            let messages = self.drain().await;
            if messages.is_empty() {
                break;
            }
            for m in messages {
                all.push(self.worker.sender.send(&m).await.unwrap());
            }
        }
        all
    }

    async fn count(&self, sql: &str, campaign: Uuid) -> i64 {
        sqlx::query_scalar(sql)
            .bind(campaign)
            .fetch_one(&self.app.db.owner)
            .await
            .unwrap()
    }

    async fn status(&self, campaign: Uuid) -> (String, Option<String>) {
        sqlx::query_as("select status, status_reason from marketing_campaigns where id = $1")
            .bind(campaign)
            .fetch_one(&self.app.db.owner)
            .await
            .unwrap()
    }

    /// Our recipient ids in every SendGrid request the fake took, with the number of times each.
    async fn sendgrid_deliveries(&self) -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for r in self.provider.received_requests().await.unwrap_or_default() {
            if r.url.path() != "/v3/mail/send" {
                continue;
            }
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            for p in body["personalizations"].as_array().unwrap() {
                assert_eq!(p["to"].as_array().unwrap().len(), 1, "one address per personalization");
                let id = p["custom_args"]["message_id"].as_str().unwrap().to_owned();
                *seen.entry(id).or_insert(0) += 1;
            }
        }
        seen
    }
}

fn accepted() -> ResponseTemplate {
    ResponseTemplate::new(202).insert_header("X-Message-Id", "sg-batch-1")
}

#[tokio::test]
async fn a_thousand_contacts_get_exactly_a_thousand_emails_through_a_crash_and_redeliveries() {
    let w = world(Kind::Sendgrid, fast()).await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(accepted())
        .mount(&w.provider)
        .await;
    w.contacts(1000, "news").await;
    let campaign = w
        .started(
            "<p>Hello {{ contact.first_name }} {{ contact.last_name }}</p>\
             <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a>",
            "news",
            100,
        )
        .await;

    // The schedule queues the ten batches; one is redelivered (the same message twice).
    w.worker.sender.tick(Utc::now()).await.unwrap();
    let messages = w.drain().await;
    assert_eq!(messages.len(), 10);
    // A crash between the provider's 202 and our commit: the batch is claimed and sent, then
    // nothing is recorded.
    let crashed = messages[0];
    let delivery::Claim::Ready(claimed) = delivery::claim_batch(
        &w.app.core.db,
        &scope(w.tenant),
        crashed.batch_id,
        chrono::Duration::milliseconds(1),
    )
    .await
    .unwrap() else {
        panic!("the claim")
    };
    let body = json!({"personalizations": claimed.recipients.iter().map(|r| json!({
        "to": [{"email": r.email}], "custom_args": {"message_id": r.id.to_string()}})).collect::<Vec<_>>()});
    reqwest::Client::new()
        .post(format!("{}/v3/mail/send", w.provider.uri()))
        .json(&body)
        .send()
        .await
        .unwrap();
    for m in &messages {
        assert!(!matches!(w.worker.sender.send(m).await.unwrap(), Sent::Failed(_)));
    }
    // Redelivered: nothing is sent twice.
    assert_eq!(w.worker.sender.send(&messages[3]).await.unwrap(), Sent::Nothing);
    assert_eq!(w.worker.sender.send(&crashed).await.unwrap(), Sent::Nothing);
    assert_eq!(w.sendgrid_deliveries().await.len(), 1000);

    // The crashed batch's lease runs out: unknown, shown in progress, never re-sent blindly.
    tokio::time::sleep(Duration::from_millis(20)).await;
    w.run(3).await;
    let unknown = "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'unknown'";
    assert_eq!(w.count(unknown, campaign).await, 100);
    assert_eq!(w.status(campaign).await.0, "sending");
    // The provider's event for one of its recipients settles it: taken, all sent.
    let r = &claimed.recipients[7];
    let mut tx = shared::adapters::pg::begin(&w.app.core.db, &scope(w.tenant))
        .await
        .unwrap();
    shared::services::marketing::campaigns::report::record_event(
        &mut tx,
        &shared::services::marketing::campaigns::report::EmailEvent {
            provider: shared::services::marketing::campaigns::EmailProvider::Sendgrid,
            provider_event_id: "evt-1".into(),
            recipient_id: r.id,
            kind: shared::services::marketing::campaigns::report::EventKind::Processed,
            hard_bounce: None,
            url: None,
            occurred_at: Utc::now(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    w.run(3).await;

    let sent = "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'sent'";
    assert_eq!(w.count(sent, campaign).await, 1000);
    assert_eq!(w.status(campaign).await.0, "sent");
    let deliveries = w.sendgrid_deliveries().await;
    assert_eq!(deliveries.len(), 1000, "every recipient");
    assert!(deliveries.values().all(|n| *n == 1), "nobody twice");
}

#[tokio::test]
async fn every_message_carries_its_own_one_click_unsubscribe_and_values() {
    let w = world(Kind::Sendgrid, fast()).await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(accepted())
        .mount(&w.provider)
        .await;
    w.contacts(3, "few").await;
    w.started(
        "<p>Hi {{ contact.last_name }}</p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a>",
        "few",
        10,
    )
    .await;
    w.run(3).await;
    let requests = w.provider.received_requests().await.unwrap();
    let sends: Vec<&Request> = requests.iter().filter(|r| r.url.path() == "/v3/mail/send").collect();
    assert_eq!(sends.len(), 1, "one request for the batch");
    let body: Value = serde_json::from_slice(&sends[0].body).unwrap();
    let keys = LinkKeys::parse(KEYS).unwrap();
    let mut tokens = HashSet::new();
    for p in body["personalizations"].as_array().unwrap() {
        let id: Uuid = p["custom_args"]["message_id"].as_str().unwrap().parse().unwrap();
        let header = p["headers"]["List-Unsubscribe"].as_str().unwrap();
        let token = header
            .trim_start_matches("<https://api.portal.test/public/unsubscribe/")
            .trim_end_matches('>');
        assert_eq!(keys.open(token), Some((w.tenant, id)), "{header}");
        assert_eq!(p["headers"]["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click");
        tokens.insert(token.to_owned());
    }
    assert_eq!(tokens.len(), 3);
    // Each recipient's own value, and HTML-escaped for the HTML part (names hold `'` and `<`).
    let values: Vec<String> = body["personalizations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["substitutions"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_str().unwrap().to_owned())
        })
        .collect();
    for i in 1..=3 {
        assert!(values.iter().any(|v| v == &format!("O'Hara <{i}>")), "{values:?}");
        assert!(values.iter().any(|v| v.contains(&format!("&lt;{i}&gt;"))), "{values:?}");
    }
    let html = body["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "text/html")
        .unwrap()["value"]
        .as_str()
        .unwrap();
    assert!(
        !html.contains("O'Hara"),
        "the HTML holds tokens, not one recipient's name: {html}"
    );

    // The same token opens each message's web copy ("view in browser"): that recipient's own
    // values, sandboxed, with its unsubscribe link beside it.
    for token in &tokens {
        let (_, id) = keys.open(token).unwrap();
        let email: String = sqlx::query_scalar("select email from marketing_campaign_recipients where id = $1")
            .bind(id)
            .fetch_one(&w.app.db.owner)
            .await
            .unwrap();
        let i = email.trim_start_matches("few").trim_end_matches("@example.com");
        let r = get(&format!("/public/view/{token}")).send(&w.api).await;
        assert_eq!(r.status, 200, "{}", r.text);
        for j in 1..=3 {
            let shown = r.text.contains(&format!("&lt;{j}&gt;"));
            assert_eq!(
                shown,
                j.to_string() == i,
                "recipient {i} sees only their own name: {}",
                r.text
            );
        }
        assert!(!r.text.contains(&format!("<{i}>")), "escaped: {}", r.text);
        assert!(r.text.contains(&format!("../unsubscribe/{token}")), "{}", r.text);
        assert!(
            r.headers["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("sandbox")
        );
        assert_eq!(r.headers["cache-control"], "private, no-store");
    }
    // A tampered token, and a recipient never sent (another tenant's ids are another key's).
    let token = tokens.iter().next().unwrap();
    let tampered = format!(
        "{}{}",
        &token[..60],
        if &token[60..61] == "A" { "BAAA" } else { "AAAA" }
    );
    assert_eq!(get(&format!("/public/view/{tampered}")).send(&w.api).await.status, 404);
    let stranger = keys.token(w.tenant, Uuid::now_v7());
    let r = get(&format!("/public/view/{stranger}")).send(&w.api).await;
    assert_eq!(r.status, 404);
    assert!(r.text.contains("not available"), "{}", r.text);
}

#[tokio::test]
async fn a_429_slows_the_campaign_and_loses_nothing() {
    let w = world(Kind::Sendgrid, fast()).await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&w.provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(accepted())
        .with_priority(2)
        .mount(&w.provider)
        .await;
    w.contacts(40, "rl").await;
    let campaign = w.started("<p>{{ contact.first_name }}</p>", "rl", 20).await;
    w.worker.sender.tick(Utc::now()).await.unwrap();
    let messages = w.drain().await;
    let outcomes = [
        w.worker.sender.send(&messages[0]).await.unwrap(),
        w.worker.sender.send(&messages[1]).await.unwrap(),
    ];
    assert!(outcomes.iter().any(|o| matches!(o, Sent::Later(_))), "{outcomes:?}");
    // The pace holds the tenant back for the provider's second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for m in w.drain().await {
        w.worker.sender.send(&m).await.unwrap();
    }
    w.run(3).await;
    let sent = "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'sent'";
    assert_eq!(w.count(sent, campaign).await, 40);
    // The refused batch went out once more after the wait; everyone else once.
    let deliveries = w.sendgrid_deliveries().await;
    assert_eq!(deliveries.len(), 40);
    assert_eq!(deliveries.values().filter(|n| **n == 2).count(), 20, "{deliveries:?}");
    assert_eq!(deliveries.values().filter(|n| **n == 1).count(), 20, "{deliveries:?}");
    assert_eq!(w.provider.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn refusals_of_the_account_pause_the_campaign_with_the_providers_words() {
    let w = world(
        Kind::Sendgrid,
        SenderOptions {
            refusals_before_pause: 2,
            ..fast()
        },
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked", "field": null}]}),
        ))
        .mount(&w.provider)
        .await;
    w.contacts(10, "deny").await;
    let campaign = w.started("<p>{{ contact.first_name }}</p>", "deny", 5).await;
    w.worker.sender.tick(Utc::now()).await.unwrap();
    let messages = w.drain().await;
    let first = w.worker.sender.send(&messages[0]).await.unwrap();
    assert_eq!(first, Sent::Refused { paused: false });
    let second = w.worker.sender.send(&messages[1]).await.unwrap();
    assert_eq!(second, Sent::Refused { paused: true });
    let (status, reason) = w.status(campaign).await;
    assert_eq!(status, "paused");
    assert!(reason.unwrap().contains("authorization grant is invalid"));
    let sent = "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'sent'";
    assert_eq!(w.count(sent, campaign).await, 0, "nothing marked sent");
    let queued = "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'queued'";
    assert_eq!(w.count(queued, campaign).await, 10, "everyone still to send on resume");
}

/// The test sends of a campaign: `(email, status, error, provider message id)`, oldest first.
async fn test_sends(w: &World, campaign: &str) -> Vec<(String, String, Option<String>, Option<String>)> {
    sqlx::query_as(
        "select email, status, error, provider_message_id from marketing_test_sends \
         where campaign_id = $1::uuid order by created_at, id",
    )
    .bind(campaign)
    .fetch_all(&w.app.db.owner)
    .await
    .unwrap()
}

#[tokio::test]
async fn test_sends_go_out_once_from_the_schedule_and_a_refusal_is_recorded_with_the_providers_words() {
    let w = world(Kind::Sendgrid, fast()).await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "2"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&w.provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(accepted())
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&w.provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"errors": [{"message": "The from address does not match a verified Sender Identity", "field": "from"}]}),
        ))
        .with_priority(3)
        .mount(&w.provider)
        .await;
    let t = w
        .created(
            "/marketing/templates",
            json!({"name": "News", "subject": "Hello {{ contact.first_name }}", "body": "<p>Hi {{ contact.first_name }}</p>"}),
        )
        .await;
    let c = w
        .created(
            "/marketing/campaigns",
            json!({"name": "Spring", "template_id": t["id"], "from_name": "Acme",
                "from_email": "news@acme.example", "audience": {"tags": ["x"]}}),
        )
        .await;
    let campaign = c["id"].as_str().unwrap().to_owned();
    let test = format!("/marketing/campaigns/{campaign}/test");
    w.created(&test, json!({"addresses": [w.owner.email]})).await;

    // The provider's 429: queued again after its wait, nothing else.
    let tick = w.worker.sender.tick(Utc::now()).await.unwrap();
    assert_eq!(tick.tests, 1);
    assert_eq!(test_sends(&w, &campaign).await[0].1, "queued");
    assert_eq!(
        w.worker.sender.tick(Utc::now()).await.unwrap().tests,
        0,
        "not before its wait"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(w.worker.sender.tick(Utc::now()).await.unwrap().tests, 1);
    let sends = test_sends(&w, &campaign).await;
    assert_eq!(sends[0].1, "sent", "{sends:?}");
    assert_eq!(sends[0].3.as_deref(), Some("sg-batch-1"));
    // Sent as it was rendered, to the member alone; never again.
    assert_eq!(w.worker.sender.tick(Utc::now()).await.unwrap().tests, 0);
    let requests = w.provider.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    let body: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(body["personalizations"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["personalizations"][0]["to"][0]["email"],
        w.owner.email.to_lowercase()
    );
    let subject = body["subject"]
        .as_str()
        .or(body["personalizations"][0]["subject"].as_str())
        .unwrap();
    assert_eq!(subject, "[Test] Hello Jane");
    assert!(body.to_string().contains("Hi Jane"), "{body}");

    // A refusal: failed with the provider's words, not tried again.
    w.created(&test, json!({"addresses": [w.owner.email]})).await;
    assert_eq!(w.worker.sender.tick(Utc::now()).await.unwrap().tests, 1);
    let sends = test_sends(&w, &campaign).await;
    assert_eq!(sends[1].1, "failed");
    let error = sends[1].2.clone().unwrap();
    assert!(
        error.contains("SendGrid refused it") && error.contains("verified Sender Identity"),
        "{error}"
    );
    assert_eq!(w.worker.sender.tick(Utc::now()).await.unwrap().tests, 0);
    assert_eq!(w.provider.received_requests().await.unwrap().len(), 3);

    // A send taken but never recorded (the sender stopped): failed after 15 minutes, not re-sent.
    w.created(&test, json!({"addresses": [w.owner.email]})).await;
    sqlx::query(
        "update marketing_test_sends set status = 'sending', claimed_at = now() - interval '16 minutes' \
         where status = 'queued'",
    )
    .execute(&w.app.db.owner)
    .await
    .unwrap();
    assert_eq!(w.worker.sender.tick(Utc::now()).await.unwrap().tests, 0);
    let sends = test_sends(&w, &campaign).await;
    assert_eq!(sends[2].1, "failed");
    assert!(sends[2].2.as_deref().unwrap().contains("may or may not have arrived"));
    assert_eq!(w.provider.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_template_that_branches_on_a_field_splits_its_batch_and_everyone_gets_theirs() {
    let w = world(Kind::Sendgrid, fast()).await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(accepted())
        .mount(&w.provider)
        .await;
    w.contacts(10, "branch").await;
    let campaign = w
        .started(
            "{% if contact.lifecycle_stage == \"customer\" %}<p>Thanks, customer</p>{% else %}<p>Welcome, lead</p>{% endif %}",
            "branch",
            10,
        )
        .await;
    w.run(4).await;
    let sent = "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'sent'";
    assert_eq!(w.count(sent, campaign).await, 10);
    let mut by_content: HashMap<String, usize> = HashMap::new();
    for r in w.provider.received_requests().await.unwrap() {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let html = body["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "text/html")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_owned();
        let kind = if html.contains("Thanks, customer") {
            "customer"
        } else {
            "lead"
        };
        *by_content.entry(kind.into()).or_default() += body["personalizations"].as_array().unwrap().len();
    }
    assert_eq!(by_content.get("customer"), Some(&5));
    assert_eq!(by_content.get("lead"), Some(&5));
    assert_eq!(w.sendgrid_deliveries().await.len(), 10);
}

#[tokio::test]
async fn an_unsubscribe_stops_the_next_campaign() {
    let w = world(Kind::Sendgrid, fast()).await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(accepted())
        .mount(&w.provider)
        .await;
    w.contacts(4, "u").await;
    let first = w.started("<p>{{ contact.first_name }}</p>", "u", 10).await;
    w.run(3).await;
    let (recipient, email): (Uuid, String) = sqlx::query_as(
        "select id, email from marketing_campaign_recipients where campaign_id = $1 order by email limit 1",
    )
    .bind(first)
    .fetch_one(&w.app.db.owner)
    .await
    .unwrap();
    let keys = LinkKeys::parse(KEYS).unwrap();
    let token = keys.token(w.tenant, recipient);
    // A tampered token is nobody's.
    let mut forged = token.clone().into_bytes();
    forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
    assert!(
        unsubscribe::look(&w.app.core.db, &keys, &String::from_utf8(forged).unwrap())
            .await
            .is_err()
    );
    let page = unsubscribe::look(&w.app.core.db, &keys, &token).await.unwrap();
    assert!(page.unsubscribed_at.is_none(), "a GET changes nothing");
    let done = unsubscribe::unsubscribe(&w.app.core.db, &keys, &token).await.unwrap();
    assert!(done.unsubscribed_at.is_some());
    unsubscribe::unsubscribe(&w.app.core.db, &keys, &token).await.unwrap();

    w.provider.reset().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(accepted())
        .mount(&w.provider)
        .await;
    let second = w.started("<p>Again {{ contact.first_name }}</p>", "u", 10).await;
    w.run(3).await;
    let sent = "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'sent'";
    assert_eq!(w.count(sent, second).await, 3);
    let requests = w.provider.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains(&email))
    );
    let stats = w
        .count(
            "select count(*) from marketing_campaign_recipients where campaign_id = $1 and unsubscribed_at is not null",
            first,
        )
        .await;
    assert_eq!(stats, 1, "the first campaign counts the unsubscribe once");
}

#[tokio::test]
async fn mailgun_takes_the_batch_with_recipient_variables() {
    let w = world(Kind::Mailgun, fast()).await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/v3/mg\.acme\.example/messages$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "<20261203.1@mg.acme.example>", "message": "Queued. Thank you."})),
        )
        .mount(&w.provider)
        .await;
    w.contacts(5, "mg").await;
    let campaign = w.started("<p>Hi {{ contact.first_name }}</p>", "mg", 10).await;
    w.run(3).await;
    let sent = "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'sent'";
    assert_eq!(w.count(sent, campaign).await, 5);
    let requests = w.provider.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&requests[0].body).into_owned().collect();
    let vars: Value = serde_json::from_str(&form.iter().find(|(k, _)| k == "recipient-variables").unwrap().1).unwrap();
    assert_eq!(vars.as_object().unwrap().len(), 5);
    let to: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "to")
        .flat_map(|(_, v)| v.split(',').map(|a| a.trim().to_owned()).collect::<Vec<_>>())
        .collect();
    assert_eq!(to.len(), 5, "{to:?}");
    for i in 1..=5 {
        assert!(to.iter().any(|a| a.contains(&format!("mg{i}@example.com"))), "{to:?}");
    }
}

#[tokio::test]
async fn the_sample_events_run_through_the_handler() {
    let w = world(Kind::Sendgrid, fast()).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/campaign-sender");
    let sqs: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/sqs-send-batch.json")).unwrap()).unwrap();
    // A batch that does not exist (the sample's placeholder): nothing to do, not a failure.
    let answer = w.worker.handle(sqs).await.unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let schedule: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/schedule.json")).unwrap()).unwrap();
    let tick = w.worker.handle(schedule).await.unwrap();
    assert!(tick.get("queued").is_some(), "{tick}");
    // A message that is not a batch is reported as the batch's failure, for SQS to retry.
    let mut bad: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/sqs-send-batch.json")).unwrap()).unwrap();
    bad["Records"][0]["body"] = json!("{\"tenant_id\": 1}");
    let answer = w.worker.handle(bad).await.unwrap();
    assert_eq!(answer["batchItemFailures"].as_array().unwrap().len(), 1, "{answer}");
}
