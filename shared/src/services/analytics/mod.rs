//! Web analytics, privacy-friendly: collect (public, site key, CORS) -> Redis stream ->
//! scheduled aggregation into hourly rollups in Postgres -> the traffic API.
#[cfg(feature = "redis")]
pub mod aggregate;
#[cfg(feature = "redis")]
pub mod collect;
pub mod event;
pub mod query;
pub mod rollup;
pub mod sites;
