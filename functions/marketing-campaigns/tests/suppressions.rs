//! The suppression list against a real Postgres: adding (normalised, duplicates refused),
//! listing with filters and keyset pages, removing what consent allows, who may do what.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::{fields, id, world};
use serde_json::json;

#[tokio::test]
async fn addresses_are_added_in_lower_case_once() {
    let w = world().await;
    let s = w
        .created(
            "/marketing/suppressions",
            json!({"email": " Ann.Lee@Example.COM ", "detail": "Asked by phone"}),
        )
        .await;
    assert_eq!(s["email"], "ann.lee@example.com");
    assert_eq!(s["reason"], "manual", "the default reason");
    assert_eq!(s["detail"], "Asked by phone");
    assert_eq!(s["created_by"], json!(w.owner.id));

    // The same address in any case: 409, and the first row keeps its reason.
    let r = w
        .post(
            "/marketing/suppressions",
            json!({"email": "ANN.LEE@example.com", "reason": "unsubscribed"}),
        )
        .await;
    assert_eq!(r.problem(409)["type"], "/problems/already-suppressed");
    assert_eq!(w.app.count("marketing_suppressions").await, 1);

    // A retry with the same Idempotency-Key replays the first answer instead.
    let body = json!({"email": "cy@example.com"});
    let send = || {
        testkit::post("/marketing/suppressions")
            .bearer(&w.owner.token)
            .tenant(w.tenant)
            .header("idempotency-key", "add-cy-1")
            .json(body.clone())
            .send(&w.api)
    };
    let first = send().await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = send().await;
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json["id"], first.json["id"]);

    // Bad input names its field; a provider-only reason is not the tenant's to claim.
    let r = w
        .post(
            "/marketing/suppressions",
            json!({"email": "not an email", "detail": "x".repeat(1001)}),
        )
        .await;
    assert_eq!(fields(&r), ["detail", "email"]);
    let r = w
        .post(
            "/marketing/suppressions",
            json!({"email": "dee@example.com", "reason": "complaint"}),
        )
        .await;
    assert_eq!(fields(&r), ["reason"]);
}

#[tokio::test]
async fn the_list_filters_by_reason_and_address_in_keyset_pages() {
    let w = world().await;
    w.suppression(w.tenant, "bounced@example.com", "hard_bounce").await;
    w.suppression(w.tenant, "spam@example.org", "complaint").await;
    w.suppression(w.tenant, "gone@example.com", "unsubscribed").await;
    w.created("/marketing/suppressions", json!({"email": "manual@example.com"}))
        .await;
    let emails = |r: &testkit::Resp| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["email"].as_str().unwrap().to_owned())
            .collect()
    };
    let r = w.get("/marketing/suppressions", "").await;
    assert_eq!(
        emails(&r),
        [
            "manual@example.com",
            "gone@example.com",
            "spam@example.org",
            "bounced@example.com"
        ]
    );
    let r = w.get("/marketing/suppressions", "reason=complaint").await;
    assert_eq!(emails(&r), ["spam@example.org"]);
    let r = w.get("/marketing/suppressions", "q=EXAMPLE.COM").await;
    assert_eq!(emails(&r).len(), 3);
    let r = w
        .get("/marketing/suppressions", "q=example.com&reason=unsubscribed")
        .await;
    assert_eq!(emails(&r), ["gone@example.com"]);
    // Pages of two: no gap, no repeat.
    let r = w.get("/marketing/suppressions", "limit=2").await;
    let mut seen = emails(&r);
    let cursor = r.json["next_cursor"].as_str().unwrap().to_owned();
    let r = w
        .get("/marketing/suppressions", &format!("limit=2&cursor={cursor}"))
        .await;
    seen.extend(emails(&r));
    assert!(r.json["next_cursor"].is_null());
    assert_eq!(seen.len(), 4);
    // A reason that is none, a limit out of range: 422.
    w.get("/marketing/suppressions", "reason=bored").await.problem(422);
    w.get("/marketing/suppressions", "limit=0").await.problem(422);
}

#[tokio::test]
async fn only_manual_entries_and_bounces_can_be_removed() {
    let w = world().await;
    let manual = w
        .created("/marketing/suppressions", json!({"email": "manual@example.com"}))
        .await;
    assert_eq!(
        w.delete(&format!("/marketing/suppressions/{}", id(&manual)))
            .await
            .status,
        204
    );
    let hard = w.suppression(w.tenant, "hard@example.com", "hard_bounce").await;
    let soft = w.suppression(w.tenant, "soft@example.com", "soft_bounce").await;
    for bounce in [hard, soft] {
        assert_eq!(w.delete(&format!("/marketing/suppressions/{bounce}")).await.status, 204);
    }
    // An opt-out stays: added by hand as `unsubscribed`, or a complaint from the provider.
    let unsubscribed = w
        .created(
            "/marketing/suppressions",
            json!({"email": "gone@example.com", "reason": "unsubscribed", "detail": "Replied STOP"}),
        )
        .await;
    let complaint = w.suppression(w.tenant, "spam@example.com", "complaint").await;
    for path in [
        format!("/marketing/suppressions/{}", id(&unsubscribed)),
        format!("/marketing/suppressions/{complaint}"),
    ] {
        let r = w.delete(&path).await;
        assert_eq!(r.problem(409)["type"], "/problems/consent-required");
        assert!(r.json["detail"].as_str().unwrap().contains("CAN-SPAM"));
    }
    assert_eq!(w.app.count("marketing_suppressions").await, 2);
    w.delete("/marketing/suppressions/00000000-0000-4000-8000-000000000999")
        .await
        .problem(404);
}

#[tokio::test]
async fn admins_manage_the_list_and_members_read_it() {
    let w = world().await;
    let s = w
        .created("/marketing/suppressions", json!({"email": "a@example.com"}))
        .await;
    assert_eq!(w.get_as(&w.member, "/marketing/suppressions", "").await.status, 200);
    w.get_as(&w.viewer, "/marketing/suppressions", "").await.problem(403);
    w.post_as(&w.member, "/marketing/suppressions", json!({"email": "b@example.com"}))
        .await
        .problem(403);
    w.delete_as(&w.member, &format!("/marketing/suppressions/{}", id(&s)))
        .await
        .problem(403);
}
