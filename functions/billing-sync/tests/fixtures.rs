//! The real Stripe payloads of ../shared/fixtures/stripe (read by path; skipped when absent)
//! applied in order, shuffled, duplicated and concurrently: the mirror is identical every time.
//!
//! Upstream edited some files so that different events share an id (all of stripe-ruby-mock's
//! are `evt_000…`; sync-engine's invoice.paid and invoice.voided share one). Delivered as they
//! are, only the first of each group applies — whichever that is — which
//! `colliding_ids_apply_once` checks. For the convergence test each member of such a group gets
//! its own id (`<id>__<file stem>`), so every object of every file takes part. The two
//! `DATA-ONLY` files get an envelope.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{Value, json};
use shared::services::billing::sync::{Outcome, StripeEvent};
use std::collections::HashMap;
use testkit::billing::syncer;
use testkit::{TestDb, billing_snapshot, shared_fixtures};

struct Fixture {
    stem: String,
    raw: Value,
}

fn load() -> Option<Vec<Fixture>> {
    let dir = shared_fixtures("stripe")?;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('_'))
        .collect();
    files.sort();
    Some(
        files
            .into_iter()
            .map(|p| Fixture {
                stem: p.file_stem().unwrap().to_string_lossy().into_owned(),
                raw: serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
            })
            .collect(),
    )
}

/// The fixtures as events; `distinct` gives colliding ids their own.
fn events(fixtures: &[Fixture], distinct: bool) -> Vec<StripeEvent> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for f in fixtures {
        if let Some(id) = f.raw["id"].as_str() {
            *counts.entry(id.to_owned()).or_default() += 1;
        }
    }
    fixtures
        .iter()
        .map(|f| {
            let mut raw = f.raw.clone();
            if raw.get("type").is_none() {
                // DATA-ONLY: `{object, previous_attributes}`; the type is the file name's prefix.
                let kind = f.stem.split("__").next().unwrap();
                raw = json!({"id": format!("evt_dataonly_{}", kind.replace('.', "_")), "object": "event",
                    "type": kind, "created": 1_700_000_000, "data": raw});
            }
            let id = raw["id"].as_str().unwrap().to_owned();
            if distinct && counts.get(&id).copied().unwrap_or(0) > 1 {
                raw["id"] = json!(format!("{id}__{}", f.stem));
            }
            StripeEvent::from_value(raw).unwrap_or_else(|e| panic!("{}: {e}", f.stem))
        })
        .collect()
}

/// A deterministic shuffle (xorshift), so a failure names its seed.
fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut v = items.to_vec();
    let mut x = seed.max(1);
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

async fn mirror_after(events: &[StripeEvent]) -> Value {
    let db = TestDb::new().await;
    let s = syncer(&db, None);
    for e in events {
        s.apply(e).await.unwrap_or_else(|err| panic!("{}: {err}", e.id));
    }
    billing_snapshot(&db.owner).await
}

#[tokio::test]
async fn real_stripe_events_converge_in_order_shuffled_duplicated_and_concurrent() {
    let Some(fixtures) = load() else { return };
    let events = events(&fixtures, true);
    assert!(events.len() >= 25, "expected the 25 event files and 2 data-only ones");
    let reference = mirror_after(&events).await;

    // What the mirror holds, checked against the files.
    let inv = reference["stripe_invoices"].as_array().unwrap();
    let paid_or_void = inv.iter().find(|i| i["id"] == "in_1KJqKBJDPojXS6LNJbvLUgEy").unwrap();
    assert!(
        paid_or_void["status"] == "paid" || paid_or_void["status"] == "void",
        "terminal either way"
    );
    assert!(
        inv.iter().all(|i| i["id"].is_string()),
        "upcoming invoices (no id) are not invoice rows"
    );
    let basil = inv.iter().find(|i| i["id"] == "in_1234").unwrap();
    assert!(
        basil["subscription_id"].is_string(),
        "basil parent.subscription_details is read"
    );
    let subs = reference["stripe_subscriptions"].as_array().unwrap();
    let lifecycle = subs.iter().find(|s| s["id"] == "sub_JdIzvfy6o5GZRd").unwrap();
    assert_eq!(lifecycle["status"], "canceled", "created then deleted: canceled");
    assert!(!reference["stripe_refunds"].as_array().unwrap().is_empty());
    assert!(!reference["stripe_payment_intents"].as_array().unwrap().is_empty());
    assert!(!reference["stripe_invoice_payments"].as_array().unwrap().is_empty());
    let outcomes: Vec<&str> = reference["stripe_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert!(outcomes.contains(&"ignored_preview"));

    for seed in [7, 1_234_567, 98_765_431] {
        assert_eq!(
            mirror_after(&shuffled(&events, seed)).await,
            reference,
            "shuffled with seed {seed}"
        );
    }
    let mut doubled = events.clone();
    doubled.extend(events.iter().cloned());
    assert_eq!(
        mirror_after(&shuffled(&doubled, 42)).await,
        reference,
        "every event delivered twice"
    );

    let db = TestDb::new().await;
    let s = syncer(&db, None);
    let tasks: Vec<_> = shuffled(&doubled, 99)
        .into_iter()
        .map(|e| {
            let s = s.clone();
            tokio::spawn(async move { s.apply(&e).await.unwrap() })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        if t.await.unwrap() != Outcome::Duplicate {
            applied += 1;
        }
    }
    assert_eq!(applied, events.len(), "each event once, concurrently");
    assert_eq!(billing_snapshot(&db.owner).await, reference, "concurrent deliveries");
}

#[tokio::test]
async fn colliding_ids_apply_once() {
    let Some(fixtures) = load() else { return };
    let events = events(&fixtures, false);
    let distinct: std::collections::HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let db = TestDb::new().await;
    let s = syncer(&db, None);
    let mut applied = 0;
    for e in &events {
        if s.apply(e).await.unwrap() != Outcome::Duplicate {
            applied += 1;
        }
    }
    assert_eq!(applied, distinct.len());
    let recorded: i64 = sqlx::query_scalar("select count(*) from stripe_events")
        .fetch_one(&db.owner)
        .await
        .unwrap();
    assert_eq!(recorded as usize, distinct.len());
    // invoice.paid sorts before invoice.voided: the voided copy (same event id) changed nothing.
    let status: String =
        sqlx::query_scalar("select status from stripe_invoices where id = 'in_1KJqKBJDPojXS6LNJbvLUgEy'")
            .fetch_one(&db.owner)
            .await
            .unwrap();
    assert_eq!(status, "paid");
}
