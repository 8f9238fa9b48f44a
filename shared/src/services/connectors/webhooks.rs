//! Connector webhooks (`POST /webhooks/connectors/{kind}/{tenant_key}`): the key in the URL
//! finds the tenant's connector; the delivery's signature is verified on the exact raw body
//! with the connector's webhook secret, by the kind's scheme (`catalog::WebhookScheme`); a
//! verified delivery is recorded once (by delivery id and by body hash) and handed to the sync
//! queue by the caller.
//!
//! A verified body seen before under another delivery id is acknowledged as a duplicate and
//! changes nothing: WooCommerce and Shopify send identical bodies for the create and the update
//! of one save, and refusing them makes the provider retry and then switch the subscription off
//! (a replay of a signed body gains an attacker nothing either: the body was applied once).
//!
//! Answers: unknown kind or key, or an email kind (SendGrid's and Mailgun's event webhooks are
//! `email-events`' route, `/webhooks/email/...`) → 404 with no detail; missing, forged or unverifiable
//! signature, a stale Shopify delivery → 401; nothing is recorded or queued for any of them.
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Connectors;
use super::catalog::{Kind, WebhookScheme};
use crate::adapters::pg;
use crate::domain::signature::{hmac_sha256, same};
use crate::domain::{DomainError, Scope};

/// Shopify retries a delivery for 48 hours; one triggered longer ago than this is refused.
pub const MAX_AGE_HOURS: i64 = 72;
/// The largest delivery taken (a big order or product; Lambda's 6 MB request limit is above).
/// The function's body limit is this one constant.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no such webhook")]
    NotFound,
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("the delivery is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// Recorded, but the sync queue did not take it: the provider's retry queues it.
    #[error("the delivery could not be queued: {0}")]
    NotQueued(String),
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// What the sync queue gets: which delivery to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryMessage {
    pub tenant_id: Uuid,
    pub kind: Kind,
    pub delivery: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// WooCommerce's unsigned ping when a webhook is created: answered 200, nothing kept.
    Ping,
    /// Recorded now, or recorded before but never handed on: queue it.
    ToQueue(DeliveryMessage),
    /// Seen and handed on before (the provider's retry): acknowledged, nothing queued.
    Duplicate,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn is_woo_ping(kind: Kind, headers: &HeaderMap, body: &[u8]) -> bool {
    kind == Kind::Woocommerce
        && header(headers, "X-WC-Webhook-Signature").is_none()
        && body.starts_with(b"webhook_id=")
        && body.len() < 40
        && body.iter().skip(11).all(u8::is_ascii_digit)
}

/// Verifies and records one delivery.
pub async fn receive(
    svc: &Connectors,
    kind: &str,
    key: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Received, WebhookError> {
    let kind = Kind::parse(kind).ok_or(WebhookError::NotFound)?;
    let scheme = kind.spec().webhook.ok_or(WebhookError::NotFound)?;
    // (header, secret field, delivery header, base64 HMAC or shared secret). The email
    // providers' event webhooks are email-events' route (`/webhooks/email/...`), not this one.
    let (header_name, secret_field, delivery_header, hmac) = match scheme {
        WebhookScheme::HmacSha256Base64 {
            header,
            secret_field,
            delivery_header,
        } => (header, secret_field, delivery_header, true),
        WebhookScheme::SharedSecret {
            header,
            secret_field,
            delivery_header,
        } => (header, secret_field, delivery_header, false),
        WebhookScheme::SendgridEcdsa { .. } | WebhookScheme::MailgunHmac { .. } => {
            return Err(WebhookError::NotFound);
        }
    };
    if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WebhookError::NotFound);
    }
    let found: Option<(Uuid, Vec<u8>)> =
        sqlx::query_as("select tenant_id, secret from app_connector_for_webhook($1, $2)")
            .bind(kind.as_str())
            .bind(key)
            .fetch_optional(&svc.db)
            .await
            .map_err(DomainError::from)?;
    let (tenant_id, sealed) = found.ok_or(WebhookError::NotFound)?;
    if is_woo_ping(kind, headers, body) {
        return Ok(Received::Ping);
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(WebhookError::TooLarge);
    }
    let secrets = svc.open(tenant_id, kind, &sealed).await?;
    let secret = secrets
        .get(secret_field)
        .and_then(|v| v.as_str())
        .ok_or(WebhookError::Unauthorized("no webhook secret is configured"))?;
    let given = header(headers, header_name).ok_or(WebhookError::Unauthorized("signature missing"))?;
    let valid = if hmac {
        use base64::Engine;
        let expected = hmac_sha256(secret.as_bytes(), &[body]);
        base64::engine::general_purpose::STANDARD
            .decode(given)
            .is_ok_and(|sig| same(&sig, &expected))
    } else {
        same(given.as_bytes(), secret.as_bytes())
    };
    if !valid {
        return Err(WebhookError::Unauthorized("signature does not match"));
    }
    if kind == Kind::Shopify
        && let Some(at) = header(headers, "X-Shopify-Triggered-At").and_then(|t| t.parse::<DateTime<Utc>>().ok())
        && Utc::now() - at > chrono::Duration::hours(MAX_AGE_HOURS)
    {
        return Err(WebhookError::Unauthorized("stale delivery"));
    }
    let delivery_id = header(headers, delivery_header)
        .filter(|d| !d.is_empty() && d.len() <= 200)
        .ok_or(WebhookError::Unauthorized("delivery id missing"))?
        .to_owned();
    let topic = header(headers, "X-Shopify-Topic")
        .or_else(|| header(headers, "X-WC-Webhook-Topic"))
        .or_else(|| header(headers, "X-Portal-Topic"))
        .map(|t| t.chars().take(200).collect::<String>());
    let text = std::str::from_utf8(body).map_err(|_| WebhookError::Unauthorized("body is not UTF-8"))?;
    if text.contains('\0') {
        return Err(WebhookError::Unauthorized("body holds NUL bytes"));
    }
    let hash = crate::domain::secret::sha256_bytes(body);
    let scope = Scope::worker(tenant_id, "", format!("webhook:{}:{delivery_id}", kind.as_str()));
    let mut tx = pg::begin(&svc.db, &scope).await?;
    // The delivery itself (the provider's retry) or the same body under another id (one save
    // sent as create and update): either way it is recorded once.
    let existing: Option<(Uuid, Option<DateTime<Utc>>)> = sqlx::query_as(
        "select id, queued_at from connector_deliveries \
         where kind = $1 and (delivery_id = $2 or body_sha256 = $3) order by delivery_id = $2 desc limit 1 for update",
    )
    .bind(kind.as_str())
    .bind(&delivery_id)
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await
    .map_err(DomainError::from)?;
    let received = match existing {
        Some((_, Some(_))) => Received::Duplicate,
        Some((id, None)) => Received::ToQueue(DeliveryMessage {
            tenant_id,
            kind,
            delivery: id,
        }),
        None => {
            let id = Uuid::now_v7();
            // Two identical deliveries at once: the second waits on the first's unique key,
            // then records nothing.
            let inserted = sqlx::query(
                "insert into connector_deliveries (id, tenant_id, kind, delivery_id, body_sha256, topic, body) \
                 values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing",
            )
            .bind(id)
            .bind(tenant_id)
            .bind(kind.as_str())
            .bind(&delivery_id)
            .bind(&hash)
            .bind(&topic)
            .bind(text)
            .execute(&mut *tx)
            .await
            .map_err(DomainError::from)?
            .rows_affected();
            if inserted == 0 {
                Received::Duplicate
            } else {
                Received::ToQueue(DeliveryMessage {
                    tenant_id,
                    kind,
                    delivery: id,
                })
            }
        }
    };
    tx.commit().await.map_err(DomainError::from)?;
    Ok(received)
}

/// The tenant and opened credentials of the connector of `kind` whose webhook key is `key`
/// (`None`: no such connector, or a key that is not 32 hex characters). For webhook routes
/// that verify their own way (email-events); looked up before any tenant is known.
pub async fn connector_for_key(
    svc: &Connectors,
    kind: Kind,
    key: &str,
) -> Result<Option<(Uuid, super::Credentials)>, DomainError> {
    if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    type Found = (
        Uuid,
        Vec<u8>,
        sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
    );
    let found: Option<Found> =
        sqlx::query_as("select tenant_id, secret, settings from app_connector_for_webhook($1, $2)")
            .bind(kind.as_str())
            .bind(key)
            .fetch_optional(&svc.db)
            .await?;
    let Some((tenant_id, sealed, settings)) = found else {
        return Ok(None);
    };
    let secrets = svc.open(tenant_id, kind, &sealed).await?;
    Ok(Some((
        tenant_id,
        super::Credentials {
            kind,
            settings: settings.0,
            secrets,
        },
    )))
}

/// How long an applied delivery's raw body is kept (customer data: only as long as useful).
pub const BODY_RETENTION_DAYS: i64 = 30;
/// How long an applied delivery's id and body hash are kept (late retries are duplicates).
pub const ROW_RETENTION_DAYS: i64 = 180;
/// Rows of each step per call (the hourly run repeats calls until one removes nothing).
const PRUNE_BATCH: i32 = 5_000;

/// What one prune removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub bodies_removed: i64,
    pub rows_deleted: i64,
}

/// Removes the raw bodies of deliveries applied more than `BODY_RETENTION_DAYS` ago and the
/// rows of those applied more than `ROW_RETENTION_DAYS` ago, across tenants, as of `now`.
pub async fn prune_deliveries(db: &sqlx::PgPool, now: DateTime<Utc>) -> Result<Pruned, DomainError> {
    let mut total = Pruned::default();
    loop {
        let (bodies, rows): (i64, i64) =
            sqlx::query_as("select bodies_removed, rows_deleted from app_prune_connector_deliveries($1, $2, $3)")
                .bind(now - chrono::Duration::days(BODY_RETENTION_DAYS))
                .bind(now - chrono::Duration::days(ROW_RETENTION_DAYS))
                .bind(PRUNE_BATCH)
                .fetch_one(db)
                .await?;
        total.bodies_removed += bodies;
        total.rows_deleted += rows;
        if bodies < i64::from(PRUNE_BATCH) && rows < i64::from(PRUNE_BATCH) {
            return Ok(total);
        }
    }
}

/// Verifies and records a delivery, hands it to connector-sync's queue and marks it handed
/// on; answers whether it was a duplicate (nothing more done). The one call of the webhook
/// function's handler.
#[cfg(feature = "sqs")]
pub async fn accept(
    svc: &Connectors,
    queue: &crate::services::ecommerce::sync::SyncQueue,
    kind: &str,
    key: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<bool, WebhookError> {
    match receive(svc, kind, key, headers, body).await? {
        Received::Ping => Ok(false),
        Received::Duplicate => Ok(true),
        Received::ToQueue(message) => {
            queue
                .send(&crate::services::ecommerce::sync::SyncMessage::Delivery(
                    message.clone(),
                ))
                .await
                .map_err(|e| WebhookError::NotQueued(e.to_string()))?;
            mark_queued(svc, &message).await?;
            Ok(false)
        }
    }
}

/// Marks a delivery handed to the sync queue.
pub async fn mark_queued(svc: &Connectors, message: &DeliveryMessage) -> Result<(), DomainError> {
    let scope = Scope::worker(message.tenant_id, "", format!("webhook:{}", message.delivery));
    let mut tx = pg::begin(&svc.db, &scope).await?;
    sqlx::query("update connector_deliveries set queued_at = coalesce(queued_at, now()) where id = $1")
        .bind(message.delivery)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
