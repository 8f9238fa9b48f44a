//! Every real Stripe payload of ../shared/fixtures/stripe reads into our typed views, in its
//! API version's shape (pre-basil and basil). Skipped, saying so, where the fixtures are absent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::Value;
use shared::domain::stripe_objects::{CustomerView, InvoiceView, PaymentIntentView, RefundView, SubscriptionView};

#[test]
fn every_fixture_object_reads_into_its_view() {
    let Some(dir) = testkit::shared_fixtures("stripe") else {
        return;
    };
    let mut read = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.starts_with('_') {
            continue;
        }
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        // Two files are `event.data` only (no envelope).
        let object = doc
            .pointer("/data/object")
            .or_else(|| doc.get("object").filter(|o| o.is_object()))
            .unwrap();
        match object["object"].as_str().unwrap() {
            "invoice" => {
                let v = InvoiceView::read(object).unwrap();
                assert!(v.customer.is_some() && v.currency.is_some(), "{name}");
                // A subscription's invoices name it, in either shape; a manual invoice has none.
                let manual = object["billing_reason"].as_str() == Some("manual");
                assert_eq!(v.subscription.is_some(), !manual, "{name}");
                if name.contains("upcoming") {
                    assert_eq!(v.id, None, "{name}");
                } else {
                    assert!(v.id.is_some(), "{name}");
                }
                assert!(v.amount_due >= 0 && v.amount_paid >= 0, "{name}");
                if name.starts_with("invoice.paid") {
                    // (the upstream file is a zero-amount invoice: paid, nothing remaining)
                    assert_eq!(v.status.as_deref(), Some("paid"), "{name}");
                    assert_eq!(v.amount_remaining, 0, "{name}");
                }
            }
            "subscription" => {
                let v = SubscriptionView::read(object).unwrap();
                assert!(!v.id.is_empty() && v.customer.is_some() && v.status.is_some(), "{name}");
                assert!(v.current_period_end >= v.current_period_start, "{name}");
                assert!(
                    !v.items.is_empty() && v.items.iter().all(|i| i.price_id.is_some()),
                    "{name}"
                );
            }
            "customer" => {
                let v = CustomerView::read(object).unwrap();
                assert!(v.id.starts_with("cus_"), "{name}");
            }
            "payment_intent" => {
                let v = PaymentIntentView::read(object).unwrap();
                assert!(
                    v.id.starts_with("pi_") && v.currency.is_some() && v.amount > 0,
                    "{name}"
                );
            }
            "refund" => {
                let v = RefundView::read(object).unwrap();
                assert!(v.id.starts_with("re_") && v.amount > 0, "{name}");
            }
            "charge" => {
                let (refunds, _) = RefundView::from_charge(object).unwrap();
                assert!(!refunds.is_empty(), "{name}: a refunded charge carries its refunds");
            }
            // checkout.session and invoice_payment link objects; the sync consumer reads their ids.
            _ => continue,
        }
        read += 1;
    }
    assert!(read >= 20, "read only {read} fixture objects");
}
