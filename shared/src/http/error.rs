//! One error type for every HTTP function, answered as RFC 9457 `application/problem+json`.
//! 5xx bodies say nothing internal; the cause chain goes to the log with the request id.
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::{DomainError, FieldError};

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type (`/problems/<slug>`, or `about:blank`).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Field-level details of a 422.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The plan limit a 402 names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitDetail>,
    /// A value that would not conflict (a 409 on a taken slug names the next free one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

/// Which entitlement of the tenant's plan refused the request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LimitDetail {
    /// `seats`, `contacts`, `sites`, `ai_tasks_per_month`, `storage_bytes` or `emails_per_month`.
    pub name: String,
    pub allowed: i64,
    pub used: i64,
    /// The plan's code.
    pub plan: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("bad request: {detail}")]
    BadRequest { slug: &'static str, detail: String },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("precondition required")]
    PreconditionRequired,
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Domain(#[from] DomainError),
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ApiError::Domain(err.into())
    }
}

impl ApiError {
    pub fn validation(errors: Vec<FieldError>) -> Self {
        ApiError::Domain(DomainError::Invalid(errors))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Domain(d) => match d {
                DomainError::NotFound => StatusCode::NOT_FOUND,
                DomainError::Forbidden(_) => StatusCode::FORBIDDEN,
                DomainError::Conflict { .. } => StatusCode::CONFLICT,
                DomainError::Gone(_) => StatusCode::GONE,
                DomainError::StaleVersion => StatusCode::PRECONDITION_FAILED,
                DomainError::LimitExceeded { .. } => StatusCode::PAYMENT_REQUIRED,
                DomainError::Upstream(_) => StatusCode::SERVICE_UNAVAILABLE,
                DomainError::ProviderFailed(_) => StatusCode::BAD_GATEWAY,
                DomainError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                DomainError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status();
        let (slug, title, detail, errors): (&str, &str, Option<String>, Vec<FieldError>) = match self {
            ApiError::Unauthorized(why) => (
                "unauthorized",
                "Authentication required",
                Some((*why).to_owned()),
                vec![],
            ),
            ApiError::BadRequest { slug, detail } => (slug, "Bad request", Some(detail.clone()), vec![]),
            ApiError::UnsupportedMediaType => (
                "unsupported-media-type",
                "Unsupported media type",
                Some("send the body as application/json".into()),
                vec![],
            ),
            ApiError::PayloadTooLarge => ("payload-too-large", "Payload too large", None, vec![]),
            ApiError::MethodNotAllowed => ("method-not-allowed", "Method not allowed", None, vec![]),
            ApiError::PreconditionRequired => (
                "precondition-required",
                "Precondition required",
                Some("send If-Match with the resource's ETag".into()),
                vec![],
            ),
            ApiError::Unavailable(_) => (
                "unavailable",
                "Service unavailable",
                Some("try again shortly".into()),
                vec![],
            ),
            ApiError::Domain(d) => match d {
                DomainError::NotFound => ("not-found", "Not found", None, vec![]),
                DomainError::Forbidden(why) => ("forbidden", "Forbidden", Some(why.clone()), vec![]),
                DomainError::Conflict { code, detail, .. } => (code, "Conflict", Some(detail.clone()), vec![]),
                DomainError::Gone(why) => ("gone", "Gone", Some(why.clone()), vec![]),
                DomainError::StaleVersion => (
                    "stale-version",
                    "Precondition failed",
                    Some("the resource changed since you read it; reload and retry".into()),
                    vec![],
                ),
                DomainError::LimitExceeded {
                    limit,
                    allowed,
                    used,
                    plan,
                } => (
                    "plan-limit",
                    "Plan limit reached",
                    Some(format!(
                        "the {plan} plan allows {allowed} {}; {used} in use. Upgrade the plan to add more",
                        limit.replace('_', " ")
                    )),
                    vec![],
                ),
                DomainError::Invalid(errors) => (
                    "validation",
                    "Your request is not valid",
                    Some("see errors for each field".into()),
                    errors.clone(),
                ),
                DomainError::Upstream(_) => (
                    "upstream-unavailable",
                    "A provider did not answer",
                    Some(
                        "a service this request depends on did not answer; nothing was changed, try again shortly"
                            .into(),
                    ),
                    vec![],
                ),
                DomainError::ProviderFailed(reason) => (
                    "upstream-failed",
                    "A connected service failed",
                    Some(format!("{reason}; nothing was changed")),
                    vec![],
                ),
                DomainError::Internal(_) => ("internal", "Internal server error", None, vec![]),
            },
        };
        Problem {
            kind: format!("/problems/{}", slug.replace('_', "-")),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
            limit: match self {
                ApiError::Domain(DomainError::LimitExceeded {
                    limit,
                    allowed,
                    used,
                    plan,
                }) => Some(LimitDetail {
                    name: (*limit).to_owned(),
                    allowed: *allowed,
                    used: *used,
                    plan: plan.clone(),
                }),
                _ => None,
            },
            suggestion: match self {
                ApiError::Domain(DomainError::Conflict { suggestion, .. }) => suggestion.clone(),
                _ => None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Domain(DomainError::Internal(cause)) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
            }
            ApiError::Unavailable(cause)
            | ApiError::Domain(DomainError::Upstream(cause) | DomainError::ProviderFailed(cause)) => {
                tracing::warn!(error = %cause, "dependency unavailable")
            }
            other => tracing::info!(status = status.as_u16(), error = %other, "request refused"),
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
