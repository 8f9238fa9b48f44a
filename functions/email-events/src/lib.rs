//! `email-events`: `POST /webhooks/email/{provider}/{tenant_key}` (signed by the provider, no
//! bearer credential): SendGrid's Signed Event Webhook (`X-Twilio-Email-Event-Webhook-Signature`
//! and `-Timestamp`: ECDSA P-256 over timestamp + raw body) and Mailgun's webhooks (the body's
//! `signature` block: HMAC-SHA256 of timestamp + token). Rules in
//! `shared::services::marketing::events`: the key finds the tenant's connector, the signature
//! and the timestamp (within `events::TOLERANCE`) are checked and a replay is refused, then the
//! events are recorded once each into the tenant's recipients and campaign stats, with
//! suppressions at once (hard bounce, complaint, unsubscribe; soft bounces at a threshold).
//! Unknown provider or key → 404; forged, stale or replayed, or no verification key configured
//! → 401 (nothing changed); over `events::MAX_BODY_BYTES` → 413; events about nothing of the
//! tenant's → 200, counted as ignored (a refusal would only make the provider retry).
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use shared::config::{ConfigError, ConnectorSettings, DatabaseSettings, Env};
use shared::domain::DomainError;
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Json, RawBody};
use shared::services::connectors::Connectors;
use shared::services::marketing::events::{self, EventsError, Received};
use std::collections::BTreeMap;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const TAG: &str = "marketing";

pub const ROUTES: &[RouteSpec] = &[RouteSpec::new(
    "POST",
    "/webhooks/email/{provider}/{tenant_key}",
    Access::Signed,
)];

/// The function's configuration, read once at start.
pub struct Config {
    pub db: DatabaseSettings,
    /// The connector secrets' key (the verification keys are connector fields).
    pub connectors: ConnectorSettings,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            db: DatabaseSettings::app(env)?,
            connectors: ConnectorSettings::from(env)?,
        })
    }
}

#[derive(Clone)]
pub struct EventsState {
    pub connectors: Connectors,
}

pub fn api() -> OpenApiRouter<EventsState> {
    OpenApiRouter::with_openapi(shared::http::docs::base()).routes(routes!(receive_email_events))
}

pub fn router(state: EventsState) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(state))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// The event webhook's refusals (problem+json).
pub struct EmailWebhookProblems;

impl utoipa::IntoResponses for EmailWebhookProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        };
        BTreeMap::from([
            (
                "401".to_owned(),
                problem(
                    "Missing, forged, stale (more than 10 minutes either way) or replayed signature, or no \
                     verification key saved on the connector: nothing was recorded",
                ),
            ),
            (
                "404".to_owned(),
                problem("No SendGrid or Mailgun connector has this webhook address"),
            ),
            ("413".to_owned(), problem("The delivery is larger than 5 MiB")),
            (
                "503".to_owned(),
                problem("A service this request depends on did not answer: nothing was recorded; the provider retries"),
            ),
        ])
    }
}

/// An email provider's event webhook delivery for one tenant (the URL is the SendGrid or
/// Mailgun connector's `webhook_path`). Signed by the provider; no bearer credential. SendGrid
/// posts a JSON array of events with its signature headers; Mailgun posts one event with a
/// `signature` block in the body. Events about messages the tenant did not send are counted as
/// ignored, never refused.
#[utoipa::path(post, path = "/webhooks/email/{provider}/{tenant_key}", tag = TAG,
    params(("provider" = String, Path, description = "sendgrid or mailgun", pattern = "^(sendgrid|mailgun)$"),
        ("tenant_key" = String, Path, description = "The connector's webhook key", pattern = "^[0-9a-f]{32}$"),
        ("X-Twilio-Email-Event-Webhook-Signature" = Option<String>, Header,
            description = "SendGrid: base64 DER ECDSA P-256/SHA-256 signature of the timestamp header followed by the raw body"),
        ("X-Twilio-Email-Event-Webhook-Timestamp" = Option<String>, Header,
            description = "SendGrid: Unix seconds, signed with the body; within 10 minutes of now")),
    request_body(content = Object, content_type = "application/json",
        description = "The delivery, exactly as sent: SendGrid's array of events, or Mailgun's {signature, event-data}"),
    responses((status = 200, body = Received, description = "Verified; what became of its events"), EmailWebhookProblems))]
async fn receive_email_events(
    State(state): State<EventsState>,
    Path((provider, key)): Path<(String, String)>,
    headers: HeaderMap,
    RawBody(body): RawBody<{ events::MAX_BODY_BYTES }>,
) -> Result<Json<Received>, ApiError> {
    match events::receive(&state.connectors, &provider, &key, &headers, &body, chrono::Utc::now()).await {
        Ok(received) => Ok(Json(received)),
        Err(EventsError::NotFound) => Err(DomainError::NotFound.into()),
        Err(EventsError::TooLarge) => Err(ApiError::PayloadTooLarge),
        Err(EventsError::Unauthorized(reason)) => {
            tracing::warn!(provider = %provider, reason, "email event webhook refused");
            Err(ApiError::Unauthorized("the delivery's signature could not be verified"))
        }
        Err(EventsError::Domain(e)) => Err(e.into()),
    }
}
