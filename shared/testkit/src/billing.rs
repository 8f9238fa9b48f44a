//! The billing mirrors' test helpers, shared by billing-sync's tests (events applied) and
//! billing-reconcile's (runs against a faked Stripe): the syncer on a test database, Stripe
//! events, and one invoice in the shapes Stripe sends.
use crate::TestDb;
use serde_json::{Value, json};
use shared::adapters::stripe_api::StripeApi;
use shared::services::billing::sync::{StripeEvent, Syncer};

/// The syncer on `db` as `portal_billing` (what billing-sync and billing-reconcile use), with
/// Stripe's API at `stripe` when given, for either mode.
pub fn syncer(db: &TestDb, stripe: Option<StripeApi>) -> Syncer {
    Syncer {
        db: db.billing.clone(),
        stripe,
        livemode: None,
    }
}

/// A test-mode Stripe event of `kind` (API version basil) carrying `object`.
pub fn event(id: &str, kind: &str, created: i64, object: Value) -> StripeEvent {
    StripeEvent::from_value(json!({
        "id": id, "object": "event", "type": kind, "created": created, "livemode": false,
        "api_version": "2025-04-30.basil", "data": {"object": object}
    }))
    .unwrap()
}

/// The invoice `in_own_1` (customer `cus_own_1`, subscription `sub_own_1`: 49.00 EUR, one line)
/// in `status` with `amount_paid`.
pub fn invoice(status: &str, amount_paid: i64) -> Value {
    json!({"object": "invoice", "id": "in_own_1", "customer": "cus_own_1", "status": status, "currency": "eur",
        "amount_due": 4900, "amount_paid": amount_paid, "amount_remaining": 4900 - amount_paid, "total": 4900,
        "number": "OWN-0001", "created": 100,
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_own_1"}},
        "lines": {"object": "list", "has_more": false, "data": [
            {"id": "il_1", "amount": 4900, "currency": "eur", "description": "Growth", "period": {"start": 100, "end": 200}}]}})
}
