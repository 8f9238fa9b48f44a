//! `analytics-collect` (public): `POST /analytics/collect` with one event or a batch, keyed by
//! the site's public key. Validates, drops bots, derives device/browser/OS and a daily-rotating
//! visitor id (no cookie, no IP stored), XADDs to the Redis stream and answers 202 — without
//! waiting on Postgres. Redis down: 503 and nothing acknowledged. The rules live in
//! `shared::services::analytics`.
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::config::{ConfigError, DatabaseSettings, Env};
use shared::http::docs::{NotFound, Upstream};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Json, RawBody};
use shared::services::analytics::collect::{Accepted, CollectBody, CollectError, Collector};
use shared::services::analytics::event::{Client, client_ip};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const TAG: &str = "analytics";
/// Requests larger than this answer 413 (50 events of ordinary size fit easily).
/// The function's configuration, read once at start.
pub struct Config {
    /// The sites' lookup (which site a domain is).
    pub db: DatabaseSettings,
    /// `REDIS_URL`: the analytics stream.
    pub redis_url: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            db: DatabaseSettings::app(env)?,
            redis_url: env.required("REDIS_URL")?,
        })
    }
}

pub const MAX_BODY: usize = 64 * 1024;

pub const ROUTES: &[RouteSpec] = &[RouteSpec::new("POST", "/analytics/collect", Access::Public)];

pub fn api() -> OpenApiRouter<Collector> {
    OpenApiRouter::with_openapi(shared::http::docs::base()).routes(routes!(collect))
}

pub fn router(collector: Collector) -> Router {
    let (routes, _) = api().split_for_parts();
    let routes = routes.route("/analytics/collect", axum::routing::options(preflight));
    shared::http::finish(routes.with_state(collector))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

fn cors(response: &mut Response, origin: Option<&str>) {
    if let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// CORS preflight: any origin may ask; the POST itself is checked against the site's origins.
async fn preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    cors(&mut response, headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()));
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}

/// Record pageviews and custom events (public; the site key is in the body). The body is JSON,
/// sent as `application/json` or `text/plain` (a simple request: no preflight). A batch is
/// `{"site_key": ..., "events": [...]}` (at most 50); a single event carries `site_key` itself.
/// Event fields: `name` (default `pageview`), `url`, `referrer`, `screen_width`, `props`
/// (flat, at most 30), `timestamp` (Unix ms; within the last 24 h and at most 5 min ahead).
#[utoipa::path(post, path = "/analytics/collect", tag = TAG,
    request_body(content = CollectBody, content_type = "application/json",
        description = "One event with `site_key`, or `{site_key, events: [...]}` (also as `text/plain`)"),
    responses((status = 202, body = Accepted, description = "Stored in the stream; `dropped` lists the events that were not, with why"),
        (status = 403, description = "The request's Origin is not allowed for this site", body = shared::http::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = shared::http::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not JSON, no site_key, or an empty or oversized batch", body = shared::http::Problem, content_type = "application/problem+json"),
        NotFound, Upstream))]
async fn collect(
    State(collector): State<Collector>,
    context: Option<axum::Extension<lambda_http::request::RequestContext>>,
    headers: HeaderMap,
    RawBody(body): RawBody<MAX_BODY>,
) -> Result<Response, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::validation(vec![shared::domain::FieldError::new(
            "body",
            "invalid_json",
            e.to_string(),
        )])
    })?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = header("origin");
    let context_ip = context.and_then(|axum::Extension(c)| match c {
        lambda_http::request::RequestContext::ApiGatewayV2(c) => c.http.source_ip,
        #[allow(unreachable_patterns)]
        _ => None,
    });
    let ip = client_ip(context_ip.as_deref(), header("x-forwarded-for"));
    let client = Client {
        ip,
        user_agent: header("user-agent").unwrap_or_default(),
    };
    match collector.collect(&value, origin, client).await {
        Ok(accepted) => {
            let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
            cors(&mut response, origin);
            Ok(response)
        }
        Err(CollectError::Unavailable(why)) => {
            tracing::error!(alert = "analytics_stream_unavailable", error = %why, "events not stored; the client may retry");
            Err(ApiError::Unavailable(why))
        }
        Err(other) => Err(ApiError::Domain(other.into())),
    }
}
