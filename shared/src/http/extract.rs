//! Extractors that answer problem+json when the input is wrong (axum's own rejections would
//! answer plain text), and small response helpers.
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{CONTENT_TYPE, ETAG, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ApiError;
pub use crate::domain::PageParams;
use crate::domain::{DomainError, FieldError};
use crate::services::idempotency::{Created, IdempotencyKey};

pub use axum::Json;

/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A JSON request body: content type checked, size bounded, unknown fields refused (by the
/// DTO's `deny_unknown_fields`), and each error reported with the path of the field.
pub struct Body<T> {
    pub value: T,
    /// The exact bytes received (for idempotency fingerprints and signatures).
    pub raw: Bytes,
}

fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses JSON bytes into `T`, or the field errors that say why not.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, Vec<FieldError>> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(vec![FieldError::new("", "required", "a JSON body is required")]);
    }
    // Syntax first, so a shape error below is never mistaken for malformed JSON.
    if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(raw) {
        let message = err.to_string();
        let message = message.split(" at line ").next().unwrap_or_default().to_owned();
        return Err(vec![FieldError::new("", "malformed_json", message)]);
    }
    // Every body of this API is an object; serde would also read a struct from an array, by
    // position, where no member names exist for `deny_unknown_fields` to check.
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(vec![FieldError::new(
            "",
            "invalid_value",
            "the body must be a JSON object",
        )]);
    }
    let mut de = serde_json::Deserializer::from_slice(raw);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => Ok(value),
        // JSON Schema counts a number with a zero fraction (`16.0`) as an integer, and so does
        // this API: the body is read again with such numbers as integers (only on this path).
        Err(err) if err.inner().to_string().starts_with("invalid type: floating point") => {
            let mut value: serde_json::Value =
                serde_json::from_slice(raw).map_err(|e| vec![FieldError::new("", "malformed_json", e.to_string())])?;
            if integral_numbers(&mut value) {
                serde_path_to_error::deserialize(value).map_err(field_errors)
            } else {
                Err(field_errors(err))
            }
        }
        Err(err) => Err(field_errors(err)),
    }
}

/// Turns each number with a zero fraction that an integer type can hold into that integer;
/// `true` when one was.
fn integral_numbers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) => match n.as_f64() {
            // Within ±9·10^15 an f64 holds every integer exactly.
            Some(f) if n.is_f64() && f.fract() == 0.0 && (-9.0e15..=9.0e15).contains(&f) => {
                *n = serde_json::Number::from(f as i64);
                true
            }
            _ => false,
        },
        Value::Array(items) => items.iter_mut().fold(false, |any, v| integral_numbers(v) | any),
        Value::Object(members) => members.values_mut().fold(false, |any, v| integral_numbers(v) | any),
        _ => false,
    }
}

/// A body's shape error as the field it is about.
fn field_errors(err: serde_path_to_error::Error<serde_json::Error>) -> Vec<FieldError> {
    {
        let message = err.inner().to_string();
        let message = message.split(" at line ").next().unwrap_or_default().to_owned();
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let named = |prefix: &str| {
            message
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned)
        };
        let child = |name: String| {
            if path.is_empty() {
                name
            } else {
                format!("{path}.{name}")
            }
        };
        let (field, code) = if let Some(name) = named("unknown field `") {
            // The path already ends at the unknown field.
            (if path.is_empty() { name } else { path.clone() }, "unknown_field")
        } else if let Some(name) = named("missing field `") {
            (child(name), "required")
        } else if let Some(name) = named("duplicate field `") {
            (child(name), "invalid_value")
        } else {
            (path.clone(), "invalid_value")
        };
        vec![FieldError::new(&field, code, message)]
    }
}

impl<T, S> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let raw = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        let value = parse_json(&raw).map_err(ApiError::validation)?;
        Ok(Self { value, raw })
    }
}

/// A body taken as it came (signed webhooks verify these exact bytes), at most `MAX` bytes:
/// more is a problem+json 413, whatever the route's content type. Each raw-body route names its
/// own limit: `RawBody<{ webhooks::MAX_BODY_BYTES }>`.
pub struct RawBody<const MAX: usize>(pub Bytes);

impl<const MAX: usize, S: Send + Sync> FromRequest<S> for RawBody<MAX> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let too_large = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > MAX as u64);
        if too_large {
            return Err(ApiError::PayloadTooLarge);
        }
        axum::body::to_bytes(req.into_body(), MAX)
            .await
            .map(Self)
            .map_err(|_| ApiError::PayloadTooLarge)
    }
}

/// Query parameters; a wrong one answers 422 naming it.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Postgres refuses NUL in text: a `%00` in any parameter is the client's error (422),
        // never a 500 from the query it would reach.
        let query = parts.uri.query().unwrap_or_default();
        if let Some((name, _)) =
            url::form_urlencoded::parse(query.as_bytes()).find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(ApiError::validation(vec![FieldError::new(
                &name.replace('\0', ""),
                "invalid_query",
                "must not contain NUL characters",
            )]));
        }
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => {
                let message = rejection.body_text();
                let message = message
                    .trim_start_matches("Failed to deserialize query string: ")
                    .to_owned();
                let field = message
                    .strip_prefix("unknown field `")
                    .or_else(|| message.strip_prefix("missing field `"))
                    .and_then(|rest| rest.split('`').next())
                    .unwrap_or_default()
                    .to_owned();
                Err(ApiError::validation(vec![FieldError::new(
                    &field,
                    "invalid_query",
                    message,
                )]))
            }
        }
    }
}

/// A path parameter. One that does not parse (a malformed id) names no resource: 404.
pub struct PathId<T>(pub T);

impl<T, S> FromRequestParts<S> for PathId<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|_| DomainError::NotFound.into())
    }
}

/// `If-Match: "<version>"` for optimistic concurrency (absent or `*`: no check). Only parsed
/// here (a value not shaped like our ETags is a 422); whether it is current is the service's
/// call (412), after the body has been validated.
pub struct IfMatch(pub Option<i32>);

impl IfMatch {
    pub fn parse(raw: &str) -> Result<Option<i32>, FieldError> {
        let raw = raw.trim();
        if raw == "*" {
            return Ok(None);
        }
        let tag = raw.strip_prefix("W/").unwrap_or(raw);
        tag.strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            // Only the digits we write: no sign, no leading zero.
            .filter(|t| t.bytes().all(|b| b.is_ascii_digit()) && (t.len() == 1 || !t.starts_with('0')))
            .and_then(|t| t.parse::<i32>().ok())
            .map(Some)
            .ok_or_else(invalid_etag)
    }
}

fn invalid_etag() -> FieldError {
    FieldError::new(
        "If-Match",
        "invalid_etag",
        "must be an ETag this API returned, like \"3\"",
    )
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(raw) = parts.headers.get(IF_MATCH) else {
            return Ok(Self(None));
        };
        let parsed = raw.to_str().map_err(|_| invalid_etag()).and_then(Self::parse);
        parsed.map(Self).map_err(|e| ApiError::validation(vec![e]))
    }
}

/// The ETag of a versioned resource.
pub fn etag(version: i32) -> (axum::http::HeaderName, String) {
    (ETAG, format!("\"{version}\""))
}

/// The raw `Idempotency-Key` header, if sent.
pub struct RawIdempotencyKey(pub Option<String>);

impl RawIdempotencyKey {
    /// The key with this request's fingerprint (`operation` names the route).
    pub fn with_request(&self, operation: &str, body: &[u8]) -> Result<Option<IdempotencyKey>, ApiError> {
        self.0
            .as_deref()
            .map(|k| IdempotencyKey::new(k, operation, body))
            .transpose()
            .map_err(ApiError::from)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RawIdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("idempotency-key") {
            None => Ok(Self(None)),
            Some(v) => v.to_str().map(|s| Self(Some(s.to_owned()))).map_err(|_| {
                ApiError::validation(vec![FieldError::new(
                    "Idempotency-Key",
                    "invalid_idempotency_key",
                    "must be visible ASCII",
                )])
            }),
        }
    }
}

/// 201 with the JSON body.
pub fn created<T: Serialize>(body: T) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

/// 201 for a fresh creation, or the stored status and body of an idempotent replay (marked
/// with `Idempotent-Replayed: true`).
pub fn replayed_or<T: Serialize>(outcome: Created<T>) -> Response {
    match outcome {
        Created::Fresh(body) => created(body),
        Created::Replayed(replay) => {
            let status = StatusCode::from_u16(replay.status).unwrap_or(StatusCode::OK);
            let mut response = (status, Json(replay.body)).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
    }
}
