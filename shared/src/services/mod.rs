//! One module per capability; each takes a [`crate::domain::Scope`] and does its work inside
//! one tenant-scoped transaction.
pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod idempotency;
pub mod team;
