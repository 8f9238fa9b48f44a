//! The portal's shared crate: the domain and the glue every function links, once.
//!
//! - [`domain`]: entities, newtypes with `parse()`, [`domain::DomainError`] (no HTTP types).
//! - [`services`]: one capability each (accounts, team, API keys, audit, idempotency, auth).
//! - [`adapters`]: the only code that talks to the outside (Postgres, JWKS, AWS, Redis).
//! - [`http`]: request context extractors, problem+json errors, pagination, router helpers.
pub mod adapters;
pub mod config;
pub mod domain;
pub mod http;
pub mod lambda;
pub mod services;
pub mod telemetry;

pub use config::Config;
pub use http::Core;
