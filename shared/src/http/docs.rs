//! OpenAPI building blocks every function's document shares: the base document (info,
//! security, problem schemas), documented problem responses, and the tenant header.
use std::collections::BTreeMap;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{IntoParams, OpenApi};

use super::{LimitDetail, Problem};
use crate::domain::FieldError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Client Portal API",
        description = "The API behind the business Client Portal. JSON in and out; errors are RFC 9457 \
            application/problem+json. Authenticate with `Authorization: Bearer <JWT>` or an API key \
            (`Bearer pk_...`); choose the tenant with `X-Tenant-Id` when you belong to several.",
        version = "1.0.0"
    ),
    components(schemas(Problem, FieldError, LimitDetail)),
    modifiers(&Security)
)]
struct Base;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or API key (pk_...)")
                    .description(Some("A user's JWT (RS256) or a tenant API key `pk_...`"))
                    .build(),
            ),
        );
    }
}

/// The document every function's routes are added to.
pub fn base() -> utoipa::openapi::OpenApi {
    Base::openapi()
}

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
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
}

macro_rules! problem_set {
    ($(#[$doc:meta])* $name:ident { $($code:literal => $desc:expr),* $(,)? }) => {
        $(#[$doc])*
        pub struct $name;
        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
                BTreeMap::from([$(($code.to_string(), problem($desc))),*])
            }
        }
    };
}

/// The 503 of every set: one text, so whichever set an operation lists last, its 503 says what
/// is true of it. A 503 comes from authentication or from a service the operation calls (a
/// provider, a queue), so it names none.
const UNAVAILABLE: &str = "A service this request depends on did not answer: retry shortly";

problem_set!(
    /// Any authenticated route.
    AuthProblems { "401" => "Missing, expired or forged credentials", "503" => UNAVAILABLE }
);
problem_set!(
    /// A route acting in a tenant: a wrong tenant is 404, a too-low role 403.
    TenantProblems {
        "400" => "No tenant chosen: send X-Tenant-Id",
        "401" => "Missing, expired or forged credentials",
        "403" => "Your role is too low for this",
        "404" => "Not found (or not in this tenant)",
        "503" => UNAVAILABLE,
    }
);
problem_set!(
    /// A route with a JSON body.
    BodyProblems {
        "413" => "Body too large",
        "415" => "Body is not application/json",
        "422" => "Invalid input, with field errors",
    }
);
problem_set!(
    /// A list route (bad limit or cursor).
    ListProblems { "422" => "Invalid limit, cursor or filter" }
);

/// `X-Tenant-Id`: which of the caller's tenants the request acts in (optional when the caller
/// has one tenant; API keys are bound to theirs).
#[derive(IntoParams, serde::Deserialize)]
#[into_params(parameter_in = Header)]
pub struct TenantHeader {
    #[serde(rename = "X-Tenant-Id")]
    #[param(value_type = Option<uuid::Uuid>)]
    pub x_tenant_id: Option<String>,
}

/// `Idempotency-Key` of a creating route (checked by `IdempotencyKey::new`).
#[derive(IntoParams, serde::Deserialize)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// Retry-safe creation: 1–255 visible ASCII characters, fresh for each new request. The
    /// same key with the same body within 24 hours answers the first answer again
    /// (`Idempotent-Replayed: true`) instead of creating twice; with another body it is a 422.
    #[serde(rename = "Idempotency-Key")]
    #[param(min_length = 1, max_length = 255, pattern = r"^[!-~]+$", nullable = false)]
    pub idempotency_key: Option<String>,
}

/// `If-Match` of a versioned resource's writes (parsed by `IfMatch`).
#[derive(IntoParams, serde::Deserialize)]
#[into_params(parameter_in = Header)]
pub struct IfMatchHeader {
    /// The resource's ETag as its last read or write answered it (`"3"`, or weak `W/"3"`): a
    /// stale one answers 412 and changes nothing. Absent or `*`: no check.
    #[serde(rename = "If-Match")]
    #[param(pattern = r#"^(\*|(W/)?"(0|[1-9][0-9]{0,8})")$"#, nullable = false)]
    pub if_match: Option<String>,
}

problem_set!(
    /// The caller may not do this (e.g. an API key where a user is needed).
    Forbidden { "403" => "Not allowed for this caller" }
);
problem_set!(
    /// The resource does not exist (or is not the caller's).
    NotFound { "404" => "Not found" }
);
problem_set!(
    /// The request conflicts with the current state.
    Conflict { "409" => "Conflicts with the current state (duplicate, last owner, already used, in progress)" }
);
problem_set!(
    /// A provider the tenant connected failed or refused the call the request depends on.
    ProviderProblems {
        "502" => "A service the tenant connected failed or refused the call: the problem's `detail` gives its reason; nothing was changed"
    }
);
problem_set!(
    /// The resource is no longer usable.
    Gone { "410" => "No longer valid (expired or withdrawn)" }
);
problem_set!(
    /// Optimistic concurrency.
    PreconditionFailed { "412" => "The If-Match ETag is not the current version" }
);
problem_set!(
    /// A signed webhook: the signature is checked before anything is recorded.
    SignatureProblems {
        "400" => "Missing, malformed, stale or forged signature: nothing was recorded",
        "503" => "The event could not be recorded or handed on: retry",
    }
);
problem_set!(
    /// A connector webhook's refusals: the provider's signature could not be verified.
    WebhookProblems {
        "401" => "Missing, forged, stale or replayed signature: nothing was recorded or queued",
        "404" => "No connector has this webhook address",
        "503" => "The delivery could not be recorded or queued: the provider retries",
    }
);
problem_set!(
    /// The tenant's plan does not allow more of something (the body's `limit` names it).
    PlanLimit { "402" => "A plan limit is reached (the problem's `limit` names it): upgrade the plan" }
);
problem_set!(
    /// A service the operation calls (a provider, a store) did not answer: nothing was changed.
    /// Listed with [`AuthProblems`] or [`TenantProblems`], theirs is the 503 the document shows.
    Upstream { "503" => "A service this request depends on did not answer: nothing was changed; retry shortly" }
);
