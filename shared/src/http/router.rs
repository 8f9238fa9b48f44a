//! The frame every HTTP function's router gets: a request id and a JSON log span per request,
//! and problem+json for unknown routes and wrong methods. Also the Lambda entry point.
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use lambda_http::RequestExt;
use tracing::Instrument;

use super::ApiError;
use crate::domain::DomainError;

/// The id that ties a request's log lines, audit entries and response together.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn sane_client_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')).then(|| s.to_owned())
}

async fn request_frame(mut req: Request, next: Next) -> Response {
    let request_id = req
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty())
        .or_else(|| req.headers().get("x-request-id").and_then(sane_client_id))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        function = %function_name(),
        method = %req.method(),
        route = %route,
        tenant_id = tracing::field::Empty,
    );
    req.extensions_mut().insert(RequestId(request_id.clone()));
    async move {
        let started = std::time::Instant::now();
        let mut response = next.run(req).await;
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", value);
        }
        response
    }
    .instrument(span)
    .await
}

fn function_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".to_owned()))
}

async fn not_found() -> Response {
    ApiError::from(DomainError::NotFound).into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// Adds the request frame and problem+json fallbacks to a function's routes.
pub fn finish(router: Router) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_frame))
}

/// Serves the router on the Lambda runtime (locally: under `cargo lambda watch`).
pub async fn run(router: Router) -> Result<(), lambda_http::Error> {
    lambda_http::run(router).await
}
