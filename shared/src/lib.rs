//! The portal's shared crate: the domain and the glue every function links, once.
//!
//! - [`domain`]: entities and rules with no I/O — newtypes with `parse()`, money, ranks, the
//!   signature schemes, `Retry-After`, jobs' messages, [`domain::DomainError`] (no HTTP types).
//! - [`services`]: one capability each, free functions over `&PgPool` and typed clients:
//!   accounts, team, API keys, audit, idempotency, auth, billing (account, entitlements, the
//!   Stripe inbox, sync, reconcile), analytics (collect, aggregate, query, sites), CRM
//!   (contacts, companies, fields, deals and pipelines, imports, exports), connectors
//!   (catalog, credentials, guarded provider calls, webhooks), e-commerce (the unified model,
//!   the sync, the mirrors, the read API), CMS (blocks, items, content, public delivery,
//!   media, processing, SVG, slugs, diff), email marketing (behind the `email` feature: the
//!   template engine, templates, segments, suppressions, campaigns), and the provider clients
//!   named by provider (`services::providers`: Zoho CRM, WordPress, Shopify, WooCommerce;
//!   SendGrid and Mailgun behind `email`).
//! - [`adapters`]: the only code that talks to the outside — Postgres, Redis, the one
//!   `Queue<T>` and the DLQ replay, S3 (CRM files, media, multipart uploads), KMS and the
//!   secret keys, Stripe, JWKS. Adapters never import services.
//! - [`lambda`]: the one SQS batch runner.
//! - [`http`]: request context extractors, problem+json errors, body/raw-body/query
//!   extractors, pagination, the router frame.
pub mod adapters;
pub mod config;
pub mod domain;
pub mod http;
pub mod lambda;
pub mod services;
pub mod telemetry;

pub use config::Config;
pub use http::Core;
