//! Billing, one capability in one place:
//!
//! - [`account`] (re-exported here): the plan catalogue, the tenant's subscription and invoices
//!   from the Stripe mirrors, Checkout and customer-portal sessions — the `billing` function;
//! - [`entitlements`]: what the tenant's plan allows (every function that creates something a
//!   plan limits asks it, inside its transaction);
//! - [`inbox`]: the Stripe webhook inbox (verify, record in DynamoDB, hand to the billing
//!   queue) — `stripe-webhook`;
//! - [`sync`]: applying Stripe events to the Postgres mirrors, exactly once — `billing-sync`;
//!   `mirrors`: the mirrors' gated upserts, which events and reconciliation write through;
//! - [`reconcile`]: the scheduled repair of the mirrors from Stripe's lists — `billing-reconcile`.
mod account;
pub mod entitlements;
#[cfg(all(feature = "dynamodb", feature = "sqs"))]
pub mod inbox;
mod mirrors;
pub mod reconcile;
pub mod sync;

pub use account::*;
