//! `connector-webhook`: `POST /webhooks/connectors/{kind}/{tenant_key}` (signed by the
//! provider, no bearer credential). Rules in `shared::services::connectors::webhooks`: the key
//! finds the connector, the signature is checked on the exact raw body (Shopify
//! `X-Shopify-Hmac-Sha256`, WooCommerce `X-WC-Webhook-Signature`: base64 HMAC-SHA256; WordPress
//! `X-Portal-Webhook-Secret`: the shared secret), the delivery is recorded once and its id
//! handed to the sync queue, then 200 (a body seen before, under any delivery id, is a
//! duplicate: 200, nothing more). Unknown → 404; forged or stale → 401; over
//! `webhooks::MAX_BODY_BYTES` → 413; a failed hand-off → 503 (the provider retries; the retry is
//! queued, not recorded twice).
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Serialize;
use shared::config::{ConfigError, ConnectorSettings, DatabaseSettings, Env};
use shared::domain::DomainError;
use shared::http::docs::BodyProblems;
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Json, RawBody};
use shared::services::connectors::Connectors;
use shared::services::connectors::webhooks::{self, WebhookError};
use shared::services::ecommerce::sync::SyncQueue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const TAG: &str = "connectors";

pub const ROUTES: &[RouteSpec] = &[RouteSpec::new(
    "POST",
    "/webhooks/connectors/{kind}/{tenant_key}",
    Access::Signed,
)];

/// The function's configuration, read once at start.
pub struct Config {
    pub db: DatabaseSettings,
    pub connectors: ConnectorSettings,
    /// `CONNECTOR_SYNC_QUEUE_URL`: where accepted deliveries go.
    pub sync_queue_url: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            db: DatabaseSettings::app(env)?,
            connectors: ConnectorSettings::from(env)?,
            sync_queue_url: env.required("CONNECTOR_SYNC_QUEUE_URL")?,
        })
    }
}

#[derive(Clone)]
pub struct WebhookState {
    pub connectors: Connectors,
    /// `CONNECTOR_SYNC_QUEUE_URL`: connector-sync applies what lands there.
    pub queue: SyncQueue,
}

pub fn api() -> OpenApiRouter<WebhookState> {
    OpenApiRouter::with_openapi(shared::http::docs::base()).routes(routes!(receive))
}

pub fn router(state: WebhookState) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(state))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectorWebhookAck {
    pub received: bool,
    /// Seen and handed on before (the provider's retry): nothing more happened.
    pub duplicate: bool,
}

/// A provider's webhook delivery for one tenant's connector (the URL is the connector's
/// `webhook_path`). Signed by the provider; no bearer credential.
#[utoipa::path(post, path = "/webhooks/connectors/{kind}/{tenant_key}", tag = TAG,
    params(("kind" = String, Path, description = "shopify, woocommerce or wordpress"),
        ("tenant_key" = String, Path, description = "The connector's webhook key"),
        ("X-Shopify-Hmac-Sha256" = Option<String>, Header, description = "Shopify: base64 HMAC-SHA256 of the body"),
        ("X-WC-Webhook-Signature" = Option<String>, Header, description = "WooCommerce: base64 HMAC-SHA256 of the body"),
        ("X-Portal-Webhook-Secret" = Option<String>, Header, description = "WordPress: the shared secret")),
    request_body(content = Object, content_type = "application/json", description = "The delivery, exactly as sent"),
    responses((status = 200, body = ConnectorWebhookAck), shared::http::docs::WebhookProblems, BodyProblems))]
async fn receive(
    State(state): State<WebhookState>,
    Path((kind, key)): Path<(String, String)>,
    headers: HeaderMap,
    RawBody(body): RawBody<{ webhooks::MAX_BODY_BYTES }>,
) -> Result<Json<ConnectorWebhookAck>, ApiError> {
    match webhooks::accept(&state.connectors, &state.queue, &kind, &key, &headers, &body).await {
        Ok(duplicate) => Ok(Json(ConnectorWebhookAck {
            received: true,
            duplicate,
        })),
        Err(WebhookError::NotQueued(e)) => {
            tracing::error!(error = %e, "delivery not queued; the provider will retry");
            Err(ApiError::Unavailable("the delivery could not be queued; retry".into()))
        }
        Err(WebhookError::NotFound) => Err(DomainError::NotFound.into()),
        Err(WebhookError::TooLarge) => Err(ApiError::PayloadTooLarge),
        Err(WebhookError::Unauthorized(reason)) => {
            tracing::warn!(kind = %kind, reason, "connector webhook refused");
            Err(ApiError::Unauthorized("the delivery's signature could not be verified"))
        }
        Err(WebhookError::Domain(e)) => Err(e.into()),
    }
}
