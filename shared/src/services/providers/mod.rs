//! Provider clients, one file per provider, named by it: what the portal knows of each
//! provider's API (its paths, paging, auth headers, answers) and how its records map to ours.
//! Every call goes through the tenant's connector (`services::connectors`: sealed credentials,
//! the SSRF guard, retries on 429/5xx with a capped `Retry-After`).
//!
//! - [`zoho`]: Zoho CRM API v2, read page by page for CRM imports.
//! - [`shopify`]: the Shopify Admin REST API: paging (Link headers), the call-limit bucket, and
//!   its orders, products and customers mapped to the unified e-commerce model.
//! - [`woocommerce`]: the WooCommerce REST API v3: paging (page numbers), variations, and its
//!   records mapped to the same model.
//! - [`wordpress`]: the WordPress REST API's posts, mirrored into the CMS (`cms::content`).
#[cfg(feature = "email")]
pub mod email;
#[cfg(feature = "email")]
pub mod mailgun;
#[cfg(feature = "email")]
pub mod sendgrid;
pub mod shopify;
pub mod woocommerce;
pub mod wordpress;
pub mod zoho;
