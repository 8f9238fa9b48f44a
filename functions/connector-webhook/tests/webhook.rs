//! connector-webhook against real Postgres and the moto server's SQS: the providers' signature
//! schemes on the exact raw body, records once, replays and forgeries refused with nothing
//! queued, 64-bit ids kept exactly, a failed hand-off retried. Needs `local/up --services-only`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use shared::domain::{Actor, Role, Scope};
use shared::services::connectors::Connectors;
use shared::services::connectors::catalog::Kind;
use testkit::{Resp, TestApp, req};
use uuid::Uuid;

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

struct World {
    app: TestApp,
    connectors: Connectors,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    tenant: Uuid,
    shopify: String,
    woo: String,
    wordpress: String,
}

fn scope(tenant: Uuid) -> Scope {
    Scope {
        actor: Actor::User {
            user_id: Uuid::nil(),
            email: String::new(),
        },
        tenant: Some((tenant, Role::Owner)),
        request_id: "test".into(),
    }
}

async fn save(connectors: &Connectors, tenant: Uuid, kind: Kind, body: Value) -> String {
    let body: Map<String, Value> = body.as_object().unwrap().clone();
    let saved = connectors.put(&scope(tenant), kind, body, None).await.unwrap();
    saved.webhook_path.unwrap()
}

async fn world() -> World {
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    let connectors = testkit::connectors(&app.core.db, []);
    let shopify = save(
        &connectors,
        tenant,
        Kind::Shopify,
        json!({"store_url": "http://127.0.0.1:9", "access_token": "shpat_000000000000", "webhook_secret": "shopify-app-secret"}),
    )
    .await;
    let woo = save(
        &connectors,
        tenant,
        Kind::Woocommerce,
        json!({"store_url": "http://127.0.0.1:9", "consumer_key": "ck_000000000", "consumer_secret": "cs_000000000",
               "webhook_secret": "woo-webhook-secret"}),
    )
    .await;
    let wordpress = save(
        &connectors,
        tenant,
        Kind::Wordpress,
        json!({"site_url": "http://127.0.0.1:9", "username": "editor", "application_password": "abcd efgh ijkl".replace(' ', ""),
               "webhook_secret": "wp-shared-secret"}),
    )
    .await;
    let aws = testkit::moto().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("connector-sync-{}", Uuid::new_v4().simple()))
        .send()
        .await
        .expect("the moto server answers: run local/up --services-only first")
        .queue_url()
        .unwrap()
        .to_owned();
    World {
        app,
        connectors,
        sqs,
        queue_url,
        tenant,
        shopify,
        woo,
        wordpress,
    }
}

impl World {
    fn router(&self, queue_url: &str) -> axum::Router {
        connector_webhook::router(connector_webhook::WebhookState {
            connectors: self.connectors.clone(),
            queue: shared::services::ecommerce::sync::SyncQueue::new(&self.sqs, queue_url),
        })
    }

    async fn deliver(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.deliver_to(&self.queue_url, path, headers, body).await
    }

    async fn deliver_to(&self, queue: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut r = req(http::Method::POST, path).header("content-type", "application/json");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send_body(body.to_vec(), &self.router(queue)).await
    }

    async fn queued(&self) -> Vec<Value> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let mut bodies = Vec::new();
        for m in out.messages() {
            bodies.push(serde_json::from_str(m.body().unwrap()).unwrap());
            self.sqs
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        bodies
    }

    async fn recorded(&self) -> i64 {
        sqlx::query_scalar("select count(*) from connector_deliveries where tenant_id = $1")
            .bind(self.tenant)
            .fetch_one(&self.app.db.owner)
            .await
            .unwrap()
    }
}

const ORDER: &[u8] = br##"{"id":820982911946154508,"name":"#1001","currency":"EUR","total_price":"404.95","line_items":[{"id":866550311766439020,"price":"199.99"}]}"##;

#[tokio::test]
async fn shopify_deliveries_are_verified_recorded_once_and_queued() {
    let w = world().await;
    let now = chrono::Utc::now().to_rfc3339();
    let sig = sign("shopify-app-secret", ORDER);
    let headers = [
        ("X-Shopify-Hmac-Sha256", sig.as_str()),
        ("X-Shopify-Webhook-Id", "d1"),
        ("X-Shopify-Topic", "orders/create"),
        ("X-Shopify-Triggered-At", now.as_str()),
    ];
    let r = w.deliver(&w.shopify, &headers, ORDER).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"received": true, "duplicate": false}));
    let queued = w.queued().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["kind"], "shopify");
    assert_eq!(queued[0]["tenant_id"], json!(w.tenant));
    // Kept byte for byte: the 64-bit ids never went through a float.
    let (body, topic): (String, String) =
        sqlx::query_as("select body, topic from connector_deliveries where id = $1::uuid")
            .bind(queued[0]["delivery"].as_str().unwrap())
            .fetch_one(&w.app.db.owner)
            .await
            .unwrap();
    assert_eq!(body.as_bytes(), ORDER);
    assert_eq!(topic, "orders/create");

    // Shopify's retry of the same delivery: acknowledged, nothing queued again.
    let r = w.deliver(&w.shopify, &headers, ORDER).await;
    assert_eq!(r.json, json!({"received": true, "duplicate": true}));
    // The same signed body under a new delivery id (Shopify and WooCommerce send one save as a
    // create and an update with identical bodies; or a replay): 200, a duplicate, nothing more.
    let again = [
        headers[0],
        ("X-Shopify-Webhook-Id", "d2"),
        ("X-Shopify-Topic", "orders/updated"),
        headers[3],
    ];
    let r = w.deliver(&w.shopify, &again, ORDER).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"received": true, "duplicate": true}));
    // Forged, missing, over a changed body (one byte more), stale.
    let forged = sign("another-secret", ORDER);
    let longer = [ORDER, b"\n"].concat();
    let stale = (chrono::Utc::now() - chrono::Duration::days(4)).to_rfc3339();
    let other = br#"{"id":1}"#;
    let other_sig = sign("shopify-app-secret", other);
    for (headers, body) in [
        (
            vec![
                ("X-Shopify-Hmac-Sha256", forged.as_str()),
                ("X-Shopify-Webhook-Id", "d3"),
            ],
            ORDER.to_vec(),
        ),
        (vec![("X-Shopify-Webhook-Id", "d4")], ORDER.to_vec()),
        (
            vec![("X-Shopify-Hmac-Sha256", sig.as_str()), ("X-Shopify-Webhook-Id", "d5")],
            longer,
        ),
        (
            vec![("X-Shopify-Hmac-Sha256", "not base64!"), ("X-Shopify-Webhook-Id", "d6")],
            ORDER.to_vec(),
        ),
        (
            vec![
                ("X-Shopify-Hmac-Sha256", other_sig.as_str()),
                ("X-Shopify-Webhook-Id", "d7"),
                ("X-Shopify-Triggered-At", stale.as_str()),
            ],
            other.to_vec(),
        ),
    ] {
        let r = w.deliver(&w.shopify, &headers, &body).await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.text);
        assert_eq!(r.content_type(), "application/problem+json");
    }
    assert_eq!(w.recorded().await, 1);
    assert!(w.queued().await.is_empty());

    // Unknown key, unknown kind, a kind without webhooks, another kind's key: 404.
    let key = w.shopify.rsplit('/').next().unwrap();
    for path in [
        "/webhooks/connectors/shopify/ffffffffffffffffffffffffffffffff".to_owned(),
        format!("/webhooks/connectors/magento/{key}"),
        format!("/webhooks/connectors/sendgrid/{key}"),
        format!("/webhooks/connectors/woocommerce/{key}"),
        "/webhooks/connectors/shopify/short".to_owned(),
    ] {
        assert_eq!(w.deliver(&path, &headers, ORDER).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn woocommerce_and_wordpress_schemes_and_a_failed_hand_off() {
    let w = world().await;
    let body = br#"{"id":727,"status":"processing","total":"29.35","currency":"USD"}"#;
    let sig = sign("woo-webhook-secret", body);
    let headers = [
        ("X-WC-Webhook-Signature", sig.as_str()),
        ("X-WC-Webhook-Delivery-ID", "9f0f4c"),
        ("X-WC-Webhook-Topic", "order.created"),
    ];
    // The queue is down: 503, recorded but not queued; WooCommerce's retry queues it, once.
    let down = format!("{}-missing", w.queue_url);
    assert_eq!(w.deliver_to(&down, &w.woo, &headers, body).await.status, 503);
    assert!(w.queued().await.is_empty());
    let r = w.deliver(&w.woo, &headers, body).await;
    assert_eq!(r.json, json!({"received": true, "duplicate": false}), "{}", r.text);
    assert_eq!(w.queued().await.len(), 1);
    assert_eq!(w.deliver(&w.woo, &headers, body).await.json["duplicate"], true);
    assert_eq!(w.recorded().await, 1);
    // The unsigned ping WooCommerce sends when a webhook is created: 200, nothing kept.
    let r = w.deliver(&w.woo, &[], b"webhook_id=12").await;
    assert_eq!(r.status, 200);
    assert_eq!(w.recorded().await, 1);
    // A WooCommerce signature made with the Shopify connector's secret does not pass.
    let wrong = sign("shopify-app-secret", body);
    let r = w
        .deliver(
            &w.woo,
            &[
                ("X-WC-Webhook-Signature", wrong.as_str()),
                ("X-WC-Webhook-Delivery-ID", "x"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status, 401);

    let post = br#"{"post_id":42,"action":"updated"}"#;
    let r = w
        .deliver(
            &w.wordpress,
            &[
                ("X-Portal-Webhook-Secret", "wp-shared-secret"),
                ("X-Portal-Delivery-Id", "wp-1"),
            ],
            post,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = w
        .deliver(
            &w.wordpress,
            &[
                ("X-Portal-Webhook-Secret", "wp-shared-secreT"),
                ("X-Portal-Delivery-Id", "wp-2"),
            ],
            br#"{"post_id":43}"#,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(w.recorded().await, 2);
}

#[tokio::test]
async fn the_real_shopify_and_woocommerce_payloads_are_recorded_exactly() {
    let w = world().await;
    let mut seen = 0;
    for (kind, dir, secret, sig_header, id_header) in [
        (
            "shopify",
            "shopify",
            "shopify-app-secret",
            "X-Shopify-Hmac-Sha256",
            "X-Shopify-Webhook-Id",
        ),
        (
            "woocommerce",
            "woocommerce",
            "woo-webhook-secret",
            "X-WC-Webhook-Signature",
            "X-WC-Webhook-Delivery-ID",
        ),
    ] {
        let Some(dir) = testkit::shared_fixtures(dir) else {
            eprintln!("../shared/fixtures/{dir} is absent: the real payloads are not checked here");
            return;
        };
        let path = if kind == "shopify" { &w.shopify } else { &w.woo };
        for entry in std::fs::read_dir(dir).unwrap() {
            let file = entry.unwrap().path();
            if file.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let body = std::fs::read(&file).unwrap();
            let sig = sign(secret, &body);
            let id = format!("{}", file.display());
            let r = w
                .deliver(path, &[(sig_header, sig.as_str()), (id_header, id.as_str())], &body)
                .await;
            assert_eq!(r.status, 200, "{}: {}", file.display(), r.text);
            let stored: String = sqlx::query_scalar("select body from connector_deliveries where delivery_id = $1")
                .bind(&id)
                .fetch_one(&w.app.db.owner)
                .await
                .unwrap();
            assert_eq!(stored.as_bytes(), body.as_slice(), "{}", file.display());
            seen += 1;
        }
    }
    assert!(seen >= 7, "{seen} fixtures");
}

#[tokio::test]
async fn large_deliveries_up_to_the_one_limit_are_taken_and_larger_ones_are_413() {
    let w = world().await;
    // A 1 MiB order (many lines): above the JSON API's 256 KiB, within the webhook limit.
    let lines: Vec<Value> = (0..7000)
        .map(|i| json!({"id": 900000000000000000_u64 + i, "price": "1.00", "title": "x".repeat(120)}))
        .collect();
    let big = serde_json::to_vec(&json!({"id": 1, "currency": "EUR", "line_items": lines})).unwrap();
    assert!(big.len() > 1024 * 1024, "{}", big.len());
    let sig = sign("shopify-app-secret", &big);
    let r = w
        .deliver(
            &w.shopify,
            &[("X-Shopify-Hmac-Sha256", sig.as_str()), ("X-Shopify-Webhook-Id", "big")],
            &big,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(w.recorded().await, 1);
    assert_eq!(w.queued().await.len(), 1);
    // Past the limit: a problem, nothing recorded.
    let huge = vec![b' '; shared::services::connectors::webhooks::MAX_BODY_BYTES + 1];
    let sig = sign("shopify-app-secret", &huge);
    let r = w
        .deliver(
            &w.shopify,
            &[
                ("X-Shopify-Hmac-Sha256", sig.as_str()),
                ("X-Shopify-Webhook-Id", "huge"),
            ],
            &huge,
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.content_type(), "application/problem+json");
    assert_eq!(w.recorded().await, 1);
}
