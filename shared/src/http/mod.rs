//! HTTP glue shared by every HTTP function: the request context, problem+json errors, body,
//! query and path extractors that answer problems, pagination parameters and the router frame.
mod ctx;
pub mod docs;
mod error;
mod extract;
mod router;
pub mod routes;

pub use ctx::{Authed, Core, TenantCtx, min};
pub use error::{ApiError, LimitDetail, Problem};
pub use extract::{
    Body, IfMatch, Json, MAX_BODY_BYTES, PageParams, Params, PathId, RawBody, RawIdempotencyKey, created, etag,
    parse_json, replayed_or,
};
pub use router::{RequestId, finish, run};
