//! `stripe-webhook`: `POST /webhooks/stripe` (signed). Verifies the `Stripe-Signature` on the
//! exact raw body, records the event in the DynamoDB inbox, hands it to the billing queue (SQS),
//! then answers 200. A bad signature answers 400 and records nothing; a failed record or hand-off
//! answers 503 so Stripe retries. The rules live in `shared::services::billing::inbox`.
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use shared::config::{ConfigError, Env};
use shared::domain::signature::stripe::DEFAULT_TOLERANCE_SECS;
use shared::http::docs::BodyProblems;
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Json, RawBody};
use shared::services::billing::inbox::{InboxConfig, InboxError, MAX_BODY_BYTES, Received, StripeInbox};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const TAG: &str = "billing";

pub const ROUTES: &[RouteSpec] = &[RouteSpec::new("POST", "/webhooks/stripe", Access::Signed)];

#[derive(Clone)]
pub struct WebhookState {
    pub inbox: Arc<StripeInbox>,
}

/// The inbox settings from the environment: `STRIPE_WEBHOOK_SECRETS` (comma-separated, for
/// rotation), `STRIPE_EVENTS_TABLE`, `BILLING_EVENTS_QUEUE_URL`, optional
/// `STRIPE_WEBHOOK_TOLERANCE_SECS` (300).
pub fn inbox_config(env: &Env) -> Result<InboxConfig, ConfigError> {
    let secrets: Vec<String> = env
        .required("STRIPE_WEBHOOK_SECRETS")?
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if secrets.iter().any(|s| !s.starts_with("whsec_")) {
        return Err(ConfigError::Invalid {
            name: "STRIPE_WEBHOOK_SECRETS",
            reason: "each secret starts with whsec_".into(),
        });
    }
    Ok(InboxConfig {
        secrets,
        tolerance_secs: env.parsed_or("STRIPE_WEBHOOK_TOLERANCE_SECS", DEFAULT_TOLERANCE_SECS)?,
        table: env.required("STRIPE_EVENTS_TABLE")?,
        queue_url: env.required("BILLING_EVENTS_QUEUE_URL")?,
    })
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
pub struct WebhookAck {
    pub received: bool,
    /// The event had already been recorded and handed on: nothing more happened.
    pub duplicate: bool,
}

/// Stripe webhook endpoint (signed with `Stripe-Signature`; no bearer credential).
#[utoipa::path(post, path = "/webhooks/stripe", tag = TAG,
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256>[,v1=...]")),
    request_body(content = Object, content_type = "application/json", description = "A Stripe event, exactly as Stripe sent it"),
    responses((status = 200, body = WebhookAck), shared::http::docs::SignatureProblems, BodyProblems))]
async fn receive(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    RawBody(body): RawBody<MAX_BODY_BYTES>,
) -> Result<Json<WebhookAck>, ApiError> {
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    match state.inbox.receive(signature, &body, now).await {
        Ok(Received::Duplicate { .. }) => Ok(Json(WebhookAck {
            received: true,
            duplicate: true,
        })),
        Ok(_) => Ok(Json(WebhookAck {
            received: true,
            duplicate: false,
        })),
        Err(InboxError::Signature(e)) => Err(ApiError::BadRequest {
            slug: "invalid-signature",
            detail: e.to_string(),
        }),
        Err(InboxError::Unavailable(reason)) => Err(ApiError::Unavailable(reason)),
    }
}
