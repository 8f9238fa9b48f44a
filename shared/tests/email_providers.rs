//! The email providers against wiremock fakes of their send APIs, at their documented paths and
//! shapes (SendGrid `POST /v3/mail/send`, Mailgun `POST /v3/{domain}/messages`), through the
//! tenant's connector: the exact request (auth, one personalization per recipient, custom args,
//! recipient variables, form fields) and every outcome (accepted with the provider's id, 429
//! waits, refusals in the provider's words, 5xx and unreachable). Then the real payloads of
//! ../shared/fixtures/{sendgrid,mailgun}: SendGrid's signed-webhook test vectors, its event
//! examples and error bodies, Mailgun's event-data examples, answers and signature block
//! (skipped, saying so, where the fixtures are absent; failing under CI).
//!
//! One file (over 800 lines): both providers answer through the one `EmailProvider::send`, and
//! their fakes, batches and outcome checks are shared.
#![cfg(feature = "email")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use shared::services::connectors::catalog::Kind;
use shared::services::connectors::{Connectors, Credentials};
use shared::services::providers::email::{
    BatchError, BatchRecipient, DEFAULT_RATE_LIMIT_WAIT, EmailProvider, EventKind, MAX_BATCH, MAX_RATE_LIMIT_WAIT,
    Mailbox, OutboundBatch, SendOutcome, fresh, token,
};
use shared::services::providers::{mailgun, sendgrid};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SENDGRID_KEY: &str = "SG.test-key.0123456789abcdef";
const MAILGUN_KEY: &str = "key-0123456789abcdef0123456789abcdef";
const MAILGUN_DOMAIN: &str = "mg.shop.example";

/// The connector service with `kind`'s API at `base`. A send touches no database: the pool
/// is lazy and never connects.
fn connectors(kind: Kind, base: &str) -> Connectors {
    let db = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://unused@127.0.0.1:1/unused")
        .unwrap();
    testkit::connectors(&db, [(kind, base.to_owned())])
}

fn map(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn sendgrid_creds() -> Credentials {
    Credentials {
        kind: Kind::Sendgrid,
        settings: Map::new(),
        secrets: map(json!({ "api_key": SENDGRID_KEY })),
    }
}

fn mailgun_creds() -> Credentials {
    Credentials {
        kind: Kind::Mailgun,
        settings: map(json!({ "region": "eu", "domain": MAILGUN_DOMAIN })),
        secrets: map(json!({ "api_key": MAILGUN_KEY })),
    }
}

fn recipient(i: usize) -> BatchRecipient {
    BatchRecipient {
        message_id: Uuid::new_v4(),
        to: Mailbox::named(format!("contact{i}@example.org"), format!("Contact {i}")),
        substitutions: vec![
            ("first_name".into(), format!("Ann-{i}")),
            (
                "unsubscribe_url".into(),
                format!("https://portal.example/u/tok{i}?x=1&y=2"),
            ),
        ],
        headers: vec![
            ("List-Unsubscribe".into(), format!("<https://portal.example/u/tok{i}>")),
            ("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into()),
        ],
    }
}

fn batch(n: usize) -> OutboundBatch {
    OutboundBatch {
        from: Mailbox::named("news@shop.example", "Shop"),
        reply_to: Some(Mailbox::new("care@shop.example")),
        subject: format!("{}, our spring sale", token("first_name")),
        html: format!(
            "<p>Hello {}</p><p><a href=\"{}\">Unsubscribe</a></p>",
            token("first_name"),
            token("unsubscribe_url")
        ),
        text: format!(
            "Hello {}\n\nUnsubscribe: {}",
            token("first_name"),
            token("unsubscribe_url")
        ),
        recipients: (0..n).map(recipient).collect(),
        campaign_id: Uuid::new_v4(),
        tenant_id: Uuid::new_v4(),
    }
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

/// A base URL where nothing listens (a port just bound and released).
fn dead_base() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn fixture(dir: &str, name: &str) -> Option<Vec<u8>> {
    let path = testkit::shared_fixtures(dir)?.join(name);
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

// --- SendGrid: sending ---------------------------------------------------------------------

async fn sendgrid_answering(resp: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(resp)
        .mount(&server)
        .await;
    server
}

async fn send_sendgrid(server: &MockServer, b: &OutboundBatch) -> SendOutcome {
    EmailProvider::Sendgrid
        .send(&connectors(Kind::Sendgrid, &server.uri()), &sendgrid_creds(), b)
        .await
}

#[tokio::test]
async fn sendgrid_takes_a_batch_as_one_personalization_per_recipient_with_our_ids() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .and(header("authorization", format!("Bearer {SENDGRID_KEY}").as_str()))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "W86EgYT6SQKk0lRflfLRsA"))
        .expect(1)
        .mount(&server)
        .await;
    let b = batch(3);
    let outcome = send_sendgrid(&server, &b).await;
    assert_eq!(
        outcome,
        SendOutcome::Accepted {
            provider_id: Some("W86EgYT6SQKk0lRflfLRsA".into())
        }
    );

    let sent = requests(&server).await;
    assert_eq!(sent.len(), 1);
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    let ps = body["personalizations"].as_array().unwrap();
    assert_eq!(ps.len(), 3);
    for (p, r) in ps.iter().zip(&b.recipients) {
        // Nobody sees another's address: each personalization names its recipient only.
        assert_eq!(p["to"], json!([{ "email": r.to.email, "name": r.to.name }]));
        let text = p.to_string();
        for other in b.recipients.iter().filter(|o| o.message_id != r.message_id) {
            assert!(!text.contains(&other.to.email));
        }
        assert_eq!(p["custom_args"], json!({ "message_id": r.message_id.to_string() }));
        assert_eq!(p["substitutions"]["[%t:first_name%]"], json!(r.substitutions[0].1));
        assert_eq!(
            p["substitutions"]["[%h:unsubscribe_url%]"],
            json!(r.substitutions[1].1.replace('&', "&amp;"))
        );
        assert_eq!(p["headers"]["List-Unsubscribe"], json!(r.headers[0].1));
        assert_eq!(
            p["headers"]["List-Unsubscribe-Post"],
            json!("List-Unsubscribe=One-Click")
        );
    }
    assert_eq!(
        body["custom_args"],
        json!({ "campaign_id": b.campaign_id.to_string(), "tenant_id": b.tenant_id.to_string() })
    );
    assert_eq!(body["from"], json!({ "email": "news@shop.example", "name": "Shop" }));
    assert_eq!(body["reply_to"], json!({ "email": "care@shop.example" }));
    assert_eq!(body["subject"], json!("[%t:first_name%], our spring sale"));
    let types: Vec<_> = body["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["text/plain", "text/html"]);
    assert!(!body.to_string().contains("%%pp:"), "no neutral token reaches SendGrid");
}

#[tokio::test]
async fn sendgrid_sends_a_thousand_in_one_request_and_refuses_more_before_any() {
    let server = sendgrid_answering(ResponseTemplate::new(202).insert_header("X-Message-Id", "m")).await;
    let full = batch(MAX_BATCH);
    assert!(matches!(
        send_sendgrid(&server, &full).await,
        SendOutcome::Accepted { .. }
    ));
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 1);
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    let ids: HashSet<_> = body["personalizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["custom_args"]["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), MAX_BATCH);

    let outcome = send_sendgrid(&server, &batch(MAX_BATCH + 1)).await;
    assert_eq!(
        outcome,
        SendOutcome::Invalid(BatchError::TooMany { count: MAX_BATCH + 1 })
    );
    assert_eq!(requests(&server).await.len(), 1, "nothing more was sent");
}

#[tokio::test]
async fn sendgrid_substitutions_over_its_limit_are_refused_without_a_request() {
    let server = sendgrid_answering(ResponseTemplate::new(202)).await;
    let mut b = batch(2);
    b.recipients[1].substitutions[0].1 = "é".repeat(3_000);
    let outcome = send_sendgrid(&server, &b).await;
    let SendOutcome::Invalid(BatchError::ProviderLimit { message_id, why }) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(message_id, b.recipients[1].message_id);
    assert!(why.contains("10000"), "{why}");
    assert!(requests(&server).await.is_empty());
}

#[tokio::test]
async fn rate_limits_are_waits_from_the_providers_headers_capped_and_never_a_panic() {
    let now = Utc::now();
    // (the 429's headers, the shortest and the longest acceptable wait)
    type Case = (Vec<(&'static str, String)>, Duration, Duration);
    let cases: Vec<Case> = vec![
        (
            vec![("Retry-After", "1".into())],
            Duration::from_secs(1),
            Duration::from_secs(1),
        ),
        (
            vec![("Retry-After", "1e300".into())],
            MAX_RATE_LIMIT_WAIT,
            MAX_RATE_LIMIT_WAIT,
        ),
        (
            vec![("Retry-After", http_date(now + chrono::Duration::seconds(120)))],
            Duration::from_secs(100),
            Duration::from_secs(120),
        ),
        (
            vec![("Retry-After", "soon, maybe".into())],
            DEFAULT_RATE_LIMIT_WAIT,
            DEFAULT_RATE_LIMIT_WAIT,
        ),
        (
            vec![("X-RateLimit-Reset", (now.timestamp() + 30).to_string())],
            Duration::from_secs(25),
            Duration::from_secs(30),
        ),
        (
            vec![("X-RateLimit-Reset", "1e300".into())],
            MAX_RATE_LIMIT_WAIT,
            MAX_RATE_LIMIT_WAIT,
        ),
        (vec![], DEFAULT_RATE_LIMIT_WAIT, DEFAULT_RATE_LIMIT_WAIT),
    ];
    for (headers, low, high) in cases {
        let mut resp = ResponseTemplate::new(429)
            .set_body_json(json!({"errors": [{"field": null, "message": "too many requests"}]}));
        for (k, v) in &headers {
            resp = resp.insert_header(*k, v.as_str());
        }
        let server = sendgrid_answering(resp.clone()).await;
        let SendOutcome::RateLimited { retry_after } = send_sendgrid(&server, &batch(2)).await else {
            panic!("{headers:?}")
        };
        assert!(
            low <= retry_after && retry_after <= high,
            "{headers:?}: {retry_after:?}"
        );

        // Mailgun's 429 reads the same way.
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!("/v3/{MAILGUN_DOMAIN}/messages")))
            .respond_with(resp)
            .mount(&server)
            .await;
        let SendOutcome::RateLimited { retry_after } = EmailProvider::Mailgun
            .send(&connectors(Kind::Mailgun, &server.uri()), &mailgun_creds(), &batch(2))
            .await
        else {
            panic!("{headers:?}")
        };
        assert!(
            low <= retry_after && retry_after <= high,
            "{headers:?}: {retry_after:?}"
        );
    }
}

#[tokio::test]
async fn sendgrid_refusals_carry_its_words_and_say_whether_every_batch_would_fail() {
    let cases = [
        (
            401,
            json!({"errors": [{"field": null, "message": "The provided authorization grant is invalid, expired, or revoked", "help": null}]}),
            "The provided authorization grant is invalid, expired, or revoked",
            true,
        ),
        (
            403,
            json!({"errors": [{"field": null, "message": "You are not authorized to access Marketing Campaigns."}]}),
            "You are not authorized to access Marketing Campaigns.",
            true,
        ),
        (
            400,
            json!({"errors": [{"field": "personalizations.0.to.0.email", "message": "Does not contain a valid address."}]}),
            "personalizations.0.to.0.email: Does not contain a valid address.",
            false,
        ),
        (
            413,
            json!({"errors": [{"field": null, "message": "Payload too large"}]}),
            "Payload too large",
            false,
        ),
    ];
    for (status, body, reason, account_level) in cases {
        let server = sendgrid_answering(ResponseTemplate::new(status).set_body_json(body)).await;
        assert_eq!(
            send_sendgrid(&server, &batch(2)).await,
            SendOutcome::Refused {
                status,
                reason: reason.into(),
                account_level
            },
            "{status}"
        );
    }
    // No words: ours.
    let server = sendgrid_answering(ResponseTemplate::new(401)).await;
    let SendOutcome::Refused { reason, .. } = send_sendgrid(&server, &batch(1)).await else {
        panic!()
    };
    assert!(reason.contains("SendGrid did not accept the api key"), "{reason}");
    // A 200 is sandbox mode: validated, not sent.
    let server = sendgrid_answering(ResponseTemplate::new(200)).await;
    assert!(matches!(
        send_sendgrid(&server, &batch(1)).await,
        SendOutcome::Refused {
            status: 200,
            account_level: true,
            ..
        }
    ));
}

#[tokio::test]
async fn sendgrid_server_errors_and_silence_are_unknown_outcomes_but_a_refused_connection_is_not() {
    let server = sendgrid_answering(
        ResponseTemplate::new(500).set_body_json(json!({"errors": [{"message": "internal error"}]})),
    )
    .await;
    assert_eq!(
        send_sendgrid(&server, &batch(2)).await,
        SendOutcome::Unavailable {
            reason: "SendGrid answered HTTP 500: internal error".into(),
            maybe_sent: true
        }
    );
    let dead = dead_base();
    let outcome = EmailProvider::Sendgrid
        .send(&connectors(Kind::Sendgrid, &dead), &sendgrid_creds(), &batch(2))
        .await;
    assert_eq!(
        outcome,
        SendOutcome::Unavailable {
            reason: "could not connect to SendGrid".into(),
            maybe_sent: false
        }
    );
    // Credentials of another provider, or without a key: refused before any request.
    let outcome = EmailProvider::Sendgrid
        .send(&connectors(Kind::Sendgrid, &server.uri()), &mailgun_creds(), &batch(1))
        .await;
    assert!(matches!(
        outcome,
        SendOutcome::Refused {
            status: 0,
            account_level: true,
            ..
        }
    ));
    let mut creds = sendgrid_creds();
    creds.secrets.clear();
    let outcome = EmailProvider::Sendgrid
        .send(&connectors(Kind::Sendgrid, &server.uri()), &creds, &batch(1))
        .await;
    assert!(matches!(
        outcome,
        SendOutcome::Refused {
            status: 0,
            account_level: true,
            ..
        }
    ));
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn sendgrids_real_403_answer_pauses_with_its_message() {
    let Some(body) = fixture("sendgrid", "mail_send_error_403.json") else {
        return;
    };
    let server = sendgrid_answering(
        ResponseTemplate::new(403)
            .insert_header("content-type", "application/json")
            .set_body_raw(body, "application/json"),
    )
    .await;
    let SendOutcome::Refused {
        status,
        reason,
        account_level,
    } = send_sendgrid(&server, &batch(2)).await
    else {
        panic!()
    };
    assert_eq!((status, account_level), (403, true));
    assert!(
        reason.starts_with("from: The from address does not match a verified Sender Identity."),
        "{reason}"
    );
}

// --- Mailgun: sending ----------------------------------------------------------------------

async fn mailgun_answering(resp: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/v3/{MAILGUN_DOMAIN}/messages")))
        .respond_with(resp)
        .mount(&server)
        .await;
    server
}

async fn send_mailgun(server: &MockServer, b: &OutboundBatch) -> SendOutcome {
    EmailProvider::Mailgun
        .send(&connectors(Kind::Mailgun, &server.uri()), &mailgun_creds(), b)
        .await
}

fn form_of(request: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    form.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
}

#[tokio::test]
async fn mailgun_takes_a_batch_with_every_recipient_and_their_variables() {
    let server = MockServer::start().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("api:{MAILGUN_KEY}"));
    Mock::given(method("POST"))
        .and(path(format!("/v3/{MAILGUN_DOMAIN}/messages")))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains("recipient-variables"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"id": "<20260301120000.1.ABCDEF@mg.shop.example>", "message": "Queued. Thank you."}),
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    let b = batch(3);
    assert_eq!(
        send_mailgun(&server, &b).await,
        SendOutcome::Accepted {
            provider_id: Some("20260301120000.1.ABCDEF@mg.shop.example".into())
        }
    );
    let sent = requests(&server).await;
    let form = form_of(&sent[0]);
    assert_eq!(
        field(&form, "to"),
        b.recipients
            .iter()
            .map(|r| format!("\"{}\" <{}>", r.to.name.as_deref().unwrap(), r.to.email))
            .collect::<Vec<_>>()
    );
    let vars: Value = serde_json::from_str(field(&form, "recipient-variables")[0]).unwrap();
    assert_eq!(vars.as_object().unwrap().len(), 3);
    for r in &b.recipients {
        let v = &vars[&r.to.email];
        assert_eq!(v["message_id"], json!(r.message_id.to_string()));
        assert_eq!(v["t_first_name"], json!(r.substitutions[0].1));
        assert_eq!(
            v["h_unsubscribe_url"],
            json!(r.substitutions[1].1.replace('&', "&amp;"))
        );
        assert_eq!(v["hdr_0"], json!(r.headers[0].1));
    }
    assert_eq!(field(&form, "from"), ["\"Shop\" <news@shop.example>"]);
    assert_eq!(field(&form, "h:Reply-To"), ["care@shop.example"]);
    assert_eq!(field(&form, "subject"), ["%recipient.t_first_name%, our spring sale"]);
    assert_eq!(
        field(&form, "html"),
        ["<p>Hello %recipient.h_first_name%</p><p><a href=\"%recipient.h_unsubscribe_url%\">Unsubscribe</a></p>"]
    );
    assert_eq!(
        field(&form, "text"),
        ["Hello %recipient.t_first_name%\n\nUnsubscribe: %recipient.t_unsubscribe_url%"]
    );
    assert_eq!(field(&form, "v:message_id"), ["%recipient.message_id%"]);
    assert_eq!(field(&form, "v:campaign_id"), [b.campaign_id.to_string()]);
    assert_eq!(field(&form, "v:tenant_id"), [b.tenant_id.to_string()]);
    assert_eq!(field(&form, "h:List-Unsubscribe"), ["%recipient.hdr_0%"]);
    assert_eq!(field(&form, "h:List-Unsubscribe-Post"), ["List-Unsubscribe=One-Click"]);
}

#[tokio::test]
async fn mailgun_refuses_a_duplicate_address_before_sending() {
    let server = mailgun_answering(ResponseTemplate::new(200).set_body_json(json!({"id": "<x@y>"}))).await;
    let mut b = batch(3);
    b.recipients[2].to.email = "Contact0@Example.org".into();
    assert_eq!(
        send_mailgun(&server, &b).await,
        SendOutcome::Invalid(BatchError::DuplicateAddress {
            first: b.recipients[0].message_id,
            second: b.recipients[2].message_id
        })
    );
    assert!(requests(&server).await.is_empty());
}

#[tokio::test]
async fn mailgun_answers_become_outcomes() {
    let cases = [
        (
            ResponseTemplate::new(401).set_body_string("Forbidden"),
            SendOutcome::Refused {
                status: 401,
                reason: "Forbidden".into(),
                account_level: true,
            },
        ),
        (
            ResponseTemplate::new(400)
                .set_body_json(json!({"message": "'to' parameter is not a valid address. please check documentation"})),
            SendOutcome::Refused {
                status: 400,
                reason: "'to' parameter is not a valid address. please check documentation".into(),
                account_level: false,
            },
        ),
        (
            ResponseTemplate::new(404).set_body_json(json!({"message": "Domain not found: mg.shop.example"})),
            SendOutcome::Refused {
                status: 404,
                reason: "Domain not found: mg.shop.example".into(),
                account_level: true,
            },
        ),
        (
            ResponseTemplate::new(503).set_body_string("<html>busy</html>"),
            SendOutcome::Unavailable {
                reason: "Mailgun answered HTTP 503".into(),
                maybe_sent: true,
            },
        ),
        // What Mailgun answers a malformed path: a 200 that queued nothing.
        (
            ResponseTemplate::new(200).set_body_string("Mailgun Magnificent API"),
            SendOutcome::Unavailable {
                reason: "Mailgun answered HTTP 200 without a message id: Mailgun Magnificent API".into(),
                maybe_sent: true,
            },
        ),
    ];
    for (resp, expected) in cases {
        let server = mailgun_answering(resp).await;
        assert_eq!(send_mailgun(&server, &batch(2)).await, expected);
    }
    let outcome = EmailProvider::Mailgun
        .send(&connectors(Kind::Mailgun, &dead_base()), &mailgun_creds(), &batch(2))
        .await;
    assert_eq!(
        outcome,
        SendOutcome::Unavailable {
            reason: "could not connect to Mailgun".into(),
            maybe_sent: false
        }
    );
    // A sending domain that is not one never reaches the path.
    let server = mailgun_answering(ResponseTemplate::new(200)).await;
    let mut creds = mailgun_creds();
    creds.settings.insert("domain".into(), json!("mg.shop.example/../x"));
    let outcome = EmailProvider::Mailgun
        .send(&connectors(Kind::Mailgun, &server.uri()), &creds, &batch(1))
        .await;
    assert!(matches!(
        outcome,
        SendOutcome::Refused {
            status: 0,
            account_level: true,
            ..
        }
    ));
    assert!(requests(&server).await.is_empty());
}

#[tokio::test]
async fn mailguns_real_answers_read_as_outcomes() {
    let (Some(ok), Some(bad_to), Some(no_domain)) = (
        fixture("mailgun", "send_response_200.json"),
        fixture("mailgun", "error_400_invalid_to.json"),
        fixture("mailgun", "error_404_domain_not_found.json"),
    ) else {
        return;
    };
    let server = mailgun_answering(ResponseTemplate::new(200).set_body_raw(ok, "application/json")).await;
    assert_eq!(
        send_mailgun(&server, &batch(2)).await,
        SendOutcome::Accepted {
            provider_id: Some("20160306015544.116301.25145@example.com".into())
        }
    );
    let server = mailgun_answering(ResponseTemplate::new(400).set_body_raw(bad_to, "application/json")).await;
    assert!(matches!(
        send_mailgun(&server, &batch(2)).await,
        SendOutcome::Refused { status: 400, account_level: false, reason } if reason.starts_with("'to' parameter is not a valid address")
    ));
    let server = mailgun_answering(ResponseTemplate::new(404).set_body_raw(no_domain, "application/json")).await;
    assert!(matches!(
        send_mailgun(&server, &batch(2)).await,
        SendOutcome::Refused { status: 404, account_level: true, reason } if reason == "Domain not found: example.com"
    ));
}

// --- Events: the real payloads -------------------------------------------------------------

#[test]
fn sendgrid_signed_webhook_test_vectors_verify_and_any_tampering_fails() {
    let Some(raw) = fixture(
        "sendgrid",
        "signed-event-webhook__test-vectors__sendgrid-nodejs-spec.json",
    ) else {
        return;
    };
    let vectors: Value = serde_json::from_slice(&raw).unwrap();
    let vectors = vectors["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    for (i, v) in vectors.iter().enumerate() {
        let key = v["public_key"].as_str().unwrap();
        let signature = v["signature"].as_str().unwrap();
        let timestamp = v["timestamp"].as_str().unwrap();
        let body = v["raw_body"].as_str().unwrap().as_bytes();
        assert!(sendgrid::verify(key, signature, timestamp, body), "vector {i}");
        // The exact bytes: without the trailing CRLF, with one byte changed, another time.
        assert!(!sendgrid::verify(key, signature, timestamp, &body[..body.len() - 2]));
        let mut tampered = body.to_vec();
        let at = tampered.iter().position(|&b| b == b'@').unwrap();
        tampered[at - 1] ^= 1;
        assert!(!sendgrid::verify(key, signature, timestamp, &tampered));
        assert!(!sendgrid::verify(
            key,
            signature,
            &(timestamp.parse::<i64>().unwrap() + 1).to_string(),
            body
        ));
        // The other vector's key or signature: forged.
        let other = &vectors[1 - i];
        assert!(!sendgrid::verify(
            other["public_key"].as_str().unwrap(),
            signature,
            timestamp,
            body
        ));
        assert!(!sendgrid::verify(
            key,
            other["signature"].as_str().unwrap(),
            timestamp,
            body
        ));
        // Fresh within the tolerance of its own time; stale long after.
        let signed_at = DateTime::from_timestamp(timestamp.parse().unwrap(), 0).unwrap();
        let tolerance = Duration::from_secs(300);
        assert!(fresh(timestamp, signed_at + chrono::Duration::seconds(60), tolerance));
        assert!(!fresh(timestamp, Utc::now(), tolerance));
        // Its events read: the same number, ids the request's X-Message-Id.
        let parsed = sendgrid::parse_events(body).unwrap();
        assert_eq!(parsed.events.len(), v["events"].as_array().unwrap().len());
        assert!(parsed.malformed.is_empty());
    }
    let dropped = &sendgrid::parse_events(vectors[0]["raw_body"].as_str().unwrap().as_bytes())
        .unwrap()
        .events[0];
    assert_eq!(dropped.kind, EventKind::Dropped);
    assert_eq!(
        dropped.provider_event_id,
        "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA"
    );
    assert_eq!(dropped.provider_message_id.as_deref(), Some("LRzXl_NHStOGhQ4kofSm_A"));
    assert_eq!(dropped.reason.as_deref(), Some("Bounced Address"));
    assert_eq!(dropped.occurred_at.timestamp(), 1_600_112_492);
    let pair = sendgrid::parse_events(vectors[1]["raw_body"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(pair.events[0].kind, EventKind::Accepted);
    // A `blocked` bounce is SendGrid's temporary refusal: soft, whatever its status.
    assert_eq!(pair.events[1].kind, EventKind::Bounced { hard: false });
}

#[test]
fn sendgrids_documented_events_all_read() {
    let (Some(all), Some(each)) = (
        fixture("sendgrid", "event-webhook__all-event-types__sendgrid-docs-example.json"),
        fixture("sendgrid", "event-webhook__per-event-examples__sendgrid-docs.json"),
    ) else {
        return;
    };
    let all = sendgrid::parse_events(&all).unwrap();
    assert!(all.malformed.is_empty(), "{:?}", all.malformed);
    assert_eq!(all.skipped, 1, "group_resubscribe is not tracked");
    let kinds: Vec<_> = all.events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Accepted,
            EventKind::Deferred,
            EventKind::Delivered,
            EventKind::Opened,
            EventKind::Clicked {
                url: "http://www.sendgrid.com/".into()
            },
            EventKind::Bounced { hard: true },
            EventKind::Dropped,
            EventKind::Complained,
            EventKind::Unsubscribed,
            EventKind::Unsubscribed,
        ]
    );
    assert!(
        all.events
            .iter()
            .all(|e| e.email == "example@test.com" && e.message_id.is_none())
    );
    assert_eq!(all.events[1].reason.as_deref(), Some("400 try again later"));

    let each = sendgrid::parse_events(&each).unwrap();
    assert!(each.malformed.is_empty(), "{:?}", each.malformed);
    assert_eq!((each.events.len(), each.skipped), (11, 1));
    let bounces: Vec<_> = each
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Bounced { .. }))
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(
        bounces,
        [EventKind::Bounced { hard: true }, EventKind::Bounced { hard: false }]
    );
    let ids: HashSet<_> = each.events.iter().map(|e| e.provider_event_id.as_str()).collect();
    assert_eq!(ids.len(), 10, "the docs reuse one sg_event_id for both bounce examples");
    assert!(
        each.events
            .iter()
            .all(|e| e.provider_message_id.as_deref() == Some("14c5d75ce93"))
    );
}

#[test]
fn mailguns_documented_events_read_and_its_signature_block_is_checked() {
    let Some(block) = fixture("mailgun", "webhook_signature_block.json") else {
        return;
    };
    let block: Value = serde_json::from_slice(&block).unwrap();
    let timestamp = block["timestamp"].as_str().unwrap();
    let token = block["token"].as_str().unwrap();
    let signature = block["signature"].as_str().unwrap();
    // Mailgun does not publish the key that signed it: any key we have is a forgery's.
    assert!(!mailgun::verify("key-not-the-signing-key", timestamp, token, signature));
    // Signed with a key of ours, the same block verifies; a changed token or timestamp does not.
    let key = "a-webhook-signing-key-of-ours";
    let ours = hex::encode(shared::domain::signature::hmac_sha256(
        key.as_bytes(),
        &[timestamp.as_bytes(), token.as_bytes()],
    ));
    assert!(mailgun::verify(key, timestamp, token, &ours));
    assert!(!mailgun::verify(key, timestamp, &token.replace('e', "f"), &ours));
    assert!(!mailgun::verify(key, "1770920773", token, &ours));
    let signed_at = DateTime::from_timestamp(timestamp.parse().unwrap(), 0).unwrap();
    assert!(fresh(
        timestamp,
        signed_at + chrono::Duration::seconds(10),
        Duration::from_secs(15)
    ));
    assert!(!fresh(
        timestamp,
        signed_at + chrono::Duration::hours(1),
        Duration::from_secs(15)
    ));

    let cases = [
        ("event-data__accepted__mailgun-docs.json", EventKind::Accepted, None),
        (
            "event-data__delivered__mailgun-docs.json",
            EventKind::Delivered,
            Some("OK"),
        ),
        (
            "event-data__failed-permanent__mailgun-docs.json",
            EventKind::Dropped,
            Some("Not delivering to previously bounced address"),
        ),
        (
            "event-data__failed-temporary__mailgun-docs.json",
            EventKind::Deferred,
            Some("4.7.652 The mail server [xxx.xxx.xxx.xxx] has exceeded the maximum number of connections."),
        ),
    ];
    for (name, kind, reason) in cases {
        let data: Value = serde_json::from_slice(&fixture("mailgun", name).unwrap()).unwrap();
        let body = json!({ "signature": block, "event-data": data }).to_string();
        let hook = mailgun::parse_event(body.as_bytes()).unwrap();
        assert_eq!(hook.signature.token, token);
        assert_eq!(hook.signature.timestamp, timestamp);
        let event = hook.event.unwrap().unwrap();
        assert_eq!(event.kind, kind, "{name}");
        assert_eq!(event.reason.as_deref(), reason, "{name}");
        assert_eq!(event.provider_event_id, data["id"].as_str().unwrap());
        assert_eq!(event.email, data["recipient"].as_str().unwrap());
        assert_eq!(
            event.occurred_at.timestamp_micros(),
            (data["timestamp"].as_f64().unwrap() * 1e6).round() as i64
        );
        assert_eq!(
            event.provider_message_id.as_deref(),
            data["message"]["headers"]["message-id"].as_str()
        );
        assert_eq!(
            event.message_id, None,
            "the docs' messages carry no user variables of ours"
        );
    }
}
