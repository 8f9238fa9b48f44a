//! One module per capability; each takes a [`crate::domain::Scope`] and does its work inside
//! one tenant-scoped transaction.
pub mod accounts;
pub mod analytics;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod cms;
pub mod connectors;
pub mod crm;
pub mod ecommerce;
pub mod idempotency;
#[cfg(feature = "email")]
pub mod marketing;
pub mod providers;
pub mod team;
