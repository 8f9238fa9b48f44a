//! The connector service against real Postgres and faked providers (wiremock at a configured
//! base URL): credentials sealed at rest and masked, the connection test's real call and its
//! answers in words, the SSRF guard, tenant isolation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use serde_json::{Map, Value, json};
use shared::adapters::keys::Keys;
use shared::domain::envelope::LocalKek;
use shared::domain::{Actor, DomainError, Role, Scope};
use shared::services::connectors::catalog::Kind;
use shared::services::connectors::{ConnectorStatus, Connectors};
use std::collections::HashMap;
use testkit::TestApp;
use uuid::Uuid;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn scope(tenant: Uuid, user: Uuid) -> Scope {
    Scope {
        actor: Actor::User {
            user_id: user,
            email: String::new(),
        },
        tenant: Some((tenant, Role::Owner)),
        request_id: "test".into(),
    }
}

fn service(app: &TestApp, bases: HashMap<Kind, String>, allow_private: bool) -> Connectors {
    Connectors::new(
        app.core.db.clone(),
        Keys::Local(LocalKek::from_hex(&"ab".repeat(32)).unwrap()),
        bases,
        allow_private,
    )
    .unwrap()
}

fn body(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[tokio::test]
async fn credentials_are_sealed_masked_tested_for_real_and_isolated() {
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    let s = scope(tenant, owner.id);
    let shop = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/shop.json"))
        .and(header("X-Shopify-Access-Token", "shpat_0123456789abcdef"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"shop": {"id": 548380009_i64, "name": "Super Toys"}})),
        )
        .mount(&shop)
        .await;
    Mock::given(method("GET"))
        .and(path("/admin/api/2025-01/shop.json"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"errors": "[API] Invalid API key or access token"})),
        )
        .mount(&shop)
        .await;
    let svc = service(&app, HashMap::new(), true);

    // The catalog: every kind, none configured.
    let list = svc.list(&s).await.unwrap();
    assert_eq!(list.len(), 10);
    assert!(list.iter().all(|c| c.status == ConnectorStatus::NotConfigured));

    // Bad input: 422 naming each field, nothing stored.
    let DomainError::Invalid(errors) = svc
        .put(
            &s,
            Kind::Shopify,
            body(json!({"store_url": "ftp://x", "colour": "red"})),
            None,
        )
        .await
        .unwrap_err()
    else {
        panic!("not invalid")
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["colour", "store_url", "access_token"]);
    assert_eq!(app.count("connectors").await, 0);

    let saved = svc
        .put(
            &s,
            Kind::Shopify,
            body(json!({"store_url": format!("{}/", shop.uri()), "access_token": "shpat_0123456789abcdef"})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(saved.status, ConnectorStatus::Untested);
    assert_eq!(saved.settings["store_url"], json!(shop.uri()));
    assert_eq!(saved.secrets["access_token"], "••••cdef");
    assert!(
        saved
            .webhook_path
            .as_deref()
            .unwrap()
            .starts_with("/webhooks/connectors/shopify/")
    );

    // Not readable in the database without the key.
    let raw: (Vec<u8>, Value, Value) = sqlx::query_as("select secret, settings, masked from connectors")
        .fetch_one(&app.db.owner)
        .await
        .unwrap();
    let all = format!("{:?}{}{}", String::from_utf8_lossy(&raw.0), raw.1, raw.2);
    assert!(
        !all.contains("shpat_0123456789abcdef") && !all.contains("0123456789"),
        "{all}"
    );

    let ok = svc.test(&s, Kind::Shopify).await.unwrap();
    assert!(ok.ok, "{}", ok.message);
    assert_eq!(
        svc.get(&s, Kind::Shopify).await.unwrap().status,
        ConnectorStatus::Connected
    );

    // A new token (the store URL kept): the test says in words what is wrong.
    svc.put(
        &s,
        Kind::Shopify,
        body(json!({"access_token": "shpat_revoked000000000"})),
        None,
    )
    .await
    .unwrap();
    let bad = svc.test(&s, Kind::Shopify).await.unwrap();
    assert!(!bad.ok);
    assert_eq!(bad.provider_status, Some(401));
    assert!(
        bad.message.contains("did not accept the admin api access token"),
        "{}",
        bad.message
    );
    let after = svc.get(&s, Kind::Shopify).await.unwrap();
    assert_eq!(after.status, ConnectorStatus::Error);
    assert_eq!(after.last_error.as_deref(), Some(bad.message.as_str()));

    // Another tenant sees none of it.
    let other = app.user("other").await;
    let other_tenant = app.tenant(&other).await;
    let o = scope(other_tenant, other.id);
    assert_eq!(
        svc.get(&o, Kind::Shopify).await.unwrap().status,
        ConnectorStatus::NotConfigured
    );
    assert!(matches!(svc.test(&o, Kind::Shopify).await, Err(DomainError::NotFound)));
    assert!(matches!(
        svc.delete(&o, Kind::Shopify).await,
        Err(DomainError::NotFound)
    ));
    // A sealed secret moved to another tenant's row does not open there.
    sqlx::query("insert into connectors (tenant_id, kind, settings, secret, webhook_key) select $1, kind, settings, secret, md5(random()::text) from connectors where tenant_id = $2")
        .bind(other_tenant)
        .bind(tenant)
        .execute(&app.db.owner)
        .await
        .unwrap();
    assert!(matches!(
        svc.test(&o, Kind::Shopify).await,
        Err(DomainError::Internal(_))
    ));

    svc.delete(&s, Kind::Shopify).await.unwrap();
    assert_eq!(
        svc.get(&s, Kind::Shopify).await.unwrap().status,
        ConnectorStatus::NotConfigured
    );
}

#[tokio::test]
async fn provider_kinds_call_their_configured_base_with_their_auth() {
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    let s = scope(tenant, owner.id);
    let fake = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v3/domains/mg.example.com"))
        .and(header("authorization", "Basic YXBpOmtleS0wMTIzNDU2Nzg5"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"domain": {"name": "mg.example.com"}})))
        .mount(&fake)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/scopes"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&fake)
        .await;
    Mock::given(method("GET"))
        .and(path("/v19.0/12345"))
        .and(query_param("access_token", "EAAB-page-token"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&fake)
        .await;
    let bases: HashMap<Kind, String> = [Kind::Mailgun, Kind::Sendgrid, Kind::Facebook]
        .into_iter()
        .map(|k| (k, fake.uri()))
        .collect();
    let svc = service(&app, bases, false);
    svc.put(
        &s,
        Kind::Mailgun,
        body(json!({"region": "eu", "domain": "mg.example.com", "api_key": "key-0123456789"})),
        None,
    )
    .await
    .unwrap();
    assert!(svc.test(&s, Kind::Mailgun).await.unwrap().ok);
    svc.put(
        &s,
        Kind::Sendgrid,
        body(json!({"api_key": "SG.abcdefghijklmnop"})),
        None,
    )
    .await
    .unwrap();
    let r = svc.test(&s, Kind::Sendgrid).await.unwrap();
    assert!(
        !r.ok && r.message.contains("lack a permission") && r.message.contains("Mail Send"),
        "{}",
        r.message
    );
    svc.put(
        &s,
        Kind::Facebook,
        body(json!({"page_id": "12345", "page_access_token": "EAAB-page-token"})),
        None,
    )
    .await
    .unwrap();
    let r = svc.test(&s, Kind::Facebook).await.unwrap();
    assert!(!r.ok && r.message.contains("check the page id"), "{}", r.message);

    // With the guard on, a store on a private address is refused when saved.
    let DomainError::Invalid(errors) = svc
        .put(
            &s,
            Kind::Woocommerce,
            body(json!({"store_url": "https://localhost:8443", "consumer_key": "ck_0123456789", "consumer_secret": "cs_0123456789"})),
            None,
        )
        .await
        .unwrap_err()
    else {
        panic!("not invalid")
    };
    assert_eq!(errors[0].field, "store_url");
    assert!(errors[0].message.contains("private or local"), "{}", errors[0].message);
    let unreachable = service(&app, HashMap::new(), true);
    unreachable
        .put(
            &s,
            Kind::Woocommerce,
            body(json!({"store_url": "http://127.0.0.1:9", "consumer_key": "ck_0123456789", "consumer_secret": "cs_0123456789"})),
            None,
        )
        .await
        .unwrap();
    let r = unreachable.test(&s, Kind::Woocommerce).await.unwrap();
    assert!(
        !r.ok && r.message.starts_with("Could not connect to 127.0.0.1"),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn a_site_that_redirects_is_not_followed_elsewhere() {
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    let s = scope(tenant, owner.id);
    // The tenant's site sends every call on to another address (the metadata service, say).
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"secret": "instance credentials"})))
        .mount(&elsewhere)
        .await;
    let site = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("Location", format!("{}/latest/meta-data", elsewhere.uri())),
        )
        .mount(&site)
        .await;
    let svc = service(&app, HashMap::new(), true);
    svc.put(
        &s,
        Kind::Woocommerce,
        body(json!({"store_url": site.uri(), "consumer_key": "ck_0000000000", "consumer_secret": "cs_0000000000"})),
        None,
    )
    .await
    .unwrap();
    let result = svc.test(&s, Kind::Woocommerce).await.unwrap();
    assert!(!result.ok);
    assert_eq!(result.provider_status, Some(302));
    assert!(result.message.contains("redirect"), "{}", result.message);
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "the redirect was followed"
    );
}

/// A tenant's owner's scope.
async fn owner_scope(app: &TestApp) -> Scope {
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    scope(tenant, owner.id)
}

/// The connectors with Facebook's API at `base`, and the tenant's page connector saved.
async fn facebook_at(app: &TestApp, s: &Scope, base: String, token: &str) -> Connectors {
    let svc = service(app, HashMap::from([(Kind::Facebook, base)]), true);
    svc.put(
        s,
        Kind::Facebook,
        body(json!({"page_id": "12345", "page_access_token": token})),
        None,
    )
    .await
    .unwrap();
    svc
}

/// A server that answers every request with bytes that are not HTTP.
async fn not_http() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"garbage, not a status line\r\n\r\n").await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn provider_errors_never_carry_the_url_and_its_token() {
    let app = TestApp::new().await;
    let s = owner_scope(&app).await;
    let token = "EAAB-secret-page-token-0042";
    // A transport error (no HTTP answer) in the connection test: the page token rides in the
    // query string of Facebook's URL, and reqwest's errors print the URL.
    let svc = facebook_at(&app, &s, not_http().await, token).await;
    let r = svc.test(&s, Kind::Facebook).await.unwrap();
    assert!(
        !r.ok && r.message.starts_with("The call to 127.0.0.1 failed"),
        "{}",
        r.message
    );
    let listed = serde_json::to_string(&svc.list(&s).await.unwrap()).unwrap();
    assert!(!r.message.contains("access_token"), "{}", r.message);
    for shown in [&r.message, &listed] {
        assert!(!shown.contains(token), "{shown}");
    }
    // An answer that is not JSON, read through the one reader of provider answers.
    let fake = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v19.0/12345"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>not json</html>"))
        .mount(&fake)
        .await;
    let svc = service(&app, HashMap::from([(Kind::Facebook, fake.uri())]), true);
    let creds = svc.credentials(&s, Kind::Facebook).await.unwrap().unwrap();
    let resp = svc.call(&creds, "/v19.0/12345", Default::default()).await.unwrap();
    let err = shared::services::connectors::answer_json::<Value>(resp)
        .await
        .unwrap_err();
    assert!(
        err.starts_with("the answer is not the JSON expected") && !err.contains(token),
        "{err}"
    );
}

#[tokio::test]
async fn a_retry_after_no_clock_can_hold_waits_the_cap_and_kills_nothing() {
    let app = TestApp::new().await;
    let s = owner_scope(&app).await;
    let fake = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v19.0/12345"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1e300"))
        .expect(2)
        .mount(&fake)
        .await;
    let svc = facebook_at(&app, &s, fake.uri(), "EAAB-token").await;
    let creds = svc.credentials(&s, Kind::Facebook).await.unwrap().unwrap();
    let started = std::time::Instant::now();
    let retry = shared::services::connectors::Retry {
        tries: 2,
        max_wait: std::time::Duration::from_millis(300),
        deadline: None,
    };
    let err = svc.call(&creds, "/v19.0/12345", retry).await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(err, shared::services::connectors::CallError::Unavailable(_)),
        "{err:?}"
    );
    assert!(
        waited >= std::time::Duration::from_millis(300) && waited < std::time::Duration::from_secs(5),
        "{waited:?}"
    );
}
