//! Segments against a real Postgres: counts by hand-computed numbers, validation naming each
//! field, unique names, merge patches with ETags, filters that outlive a custom field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::{fields, id, world};
use serde_json::json;

#[tokio::test]
async fn a_segment_counts_its_contacts_their_emails_and_the_suppressed_ones() {
    let w = world().await;
    w.field(w.tenant, "seats", "number", &[]).await;
    let long_ago = "2020-01-01T00:00:00Z";
    // Matching: any of the tags vip/beta, a customer, 5 <= seats <= 10, created this year.
    w.contact(
        w.tenant,
        json!({"first_name": "Ada", "email": "ada@example.com", "tags": ["vip"],
        "lifecycle_stage": "customer", "custom": {"seats": 10}}),
    )
    .await;
    w.contact(
        w.tenant,
        json!({"first_name": "Bob", "email": "Bob@Example.com", "tags": ["vip", "beta"],
        "lifecycle_stage": "customer", "custom": {"seats": 5}}),
    )
    .await;
    w.contact(
        w.tenant,
        json!({"first_name": "Cy", "tags": ["beta"], "lifecycle_stage": "customer",
        "custom": {"seats": 8}}),
    )
    .await;
    // Not matching, each for one reason.
    for c in [
        json!({"first_name": "Dee", "email": "dee@example.com", "tags": ["vip"], "lifecycle_stage": "lead",
            "custom": {"seats": 6}}),
        json!({"first_name": "Eve", "email": "eve@example.com", "tags": ["vip"], "lifecycle_stage": "customer",
            "custom": {"seats": 2}}),
        json!({"first_name": "Fay", "email": "fay@example.com", "tags": ["vip"], "lifecycle_stage": "customer",
            "custom": {"seats": 7}, "created_at": long_ago}),
        json!({"first_name": "Gus", "email": "gus@example.com", "tags": ["other"], "lifecycle_stage": "customer",
            "custom": {"seats": 9}}),
        json!({"first_name": "Hal", "email": "hal@example.com", "tags": ["vip"], "lifecycle_stage": "customer"}),
    ] {
        w.contact(w.tenant, c).await;
    }
    // Bob's address is suppressed (lower case, as the list keeps it); so is Eve's, who is not in
    // the segment.
    w.suppression(w.tenant, "bob@example.com", "unsubscribed").await;
    w.suppression(w.tenant, "eve@example.com", "hard_bounce").await;
    // Another tenant's contact that would match counts nowhere here.
    let (_, other) = w.other_tenant().await;
    w.contact(
        other,
        json!({"first_name": "Ada", "email": "ada@example.com", "tags": ["vip"],
        "lifecycle_stage": "customer"}),
    )
    .await;

    let segment = w
        .created(
            "/marketing/segments",
            json!({"name": "VIP customers", "filter": {"tags": ["VIP", "beta"], "lifecycle_stages": ["customer"],
                "custom": {"seats": {"gte": 5, "lte": 10}}, "created_after": "2025-06-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(
        segment["filter"]["tags"],
        json!(["vip", "beta"]),
        "tags are stored as tags are"
    );
    let r = w.get(&format!("/marketing/segments/{}/count", id(&segment)), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"contacts": 3, "with_email": 2, "suppressed": 1, "reachable": 1})
    );

    // An empty filter is every contact of the tenant: 8, 7 with an email, 2 of them suppressed.
    let everyone = w.created("/marketing/segments", json!({"name": "Everyone"})).await;
    let r = w.get(&format!("/marketing/segments/{}/count", id(&everyone)), "").await;
    assert_eq!(
        r.json,
        json!({"contacts": 8, "with_email": 7, "suppressed": 2, "reachable": 5})
    );

    // The created range: only Fay was created before 2021.
    let old = w
        .created(
            "/marketing/segments",
            json!({"name": "Old", "filter": {"created_before": "2021-01-01T00:00:00Z"}}),
        )
        .await;
    let r = w.get(&format!("/marketing/segments/{}/count", id(&old)), "").await;
    assert_eq!(
        r.json,
        json!({"contacts": 1, "with_email": 1, "suppressed": 0, "reachable": 1})
    );
}

#[tokio::test]
async fn owners_and_companies_narrow_a_segment() {
    let w = world().await;
    let acme = w.company(w.tenant, "Acme").await;
    let globex = w.company(w.tenant, "Globex").await;
    w.contact(
        w.tenant,
        json!({"first_name": "A", "email": "a@example.com", "company_id": acme.to_string(),
        "owner_id": w.member.id.to_string()}),
    )
    .await;
    w.contact(
        w.tenant,
        json!({"first_name": "B", "email": "b@example.com", "company_id": globex.to_string(),
        "owner_id": w.owner.id.to_string()}),
    )
    .await;
    w.contact(w.tenant, json!({"first_name": "C", "company_id": acme.to_string()}))
        .await;
    let by_company = w
        .created(
            "/marketing/segments",
            json!({"name": "Acme people", "filter": {"company_ids": [acme]}}),
        )
        .await;
    let r = w
        .get(&format!("/marketing/segments/{}/count", id(&by_company)), "")
        .await;
    assert_eq!(
        r.json,
        json!({"contacts": 2, "with_email": 1, "suppressed": 0, "reachable": 1})
    );
    let by_owner = w
        .created(
            "/marketing/segments",
            json!({"name": "Mine", "filter": {"owner_ids": [w.member.id, w.owner.id]}}),
        )
        .await;
    let r = w.get(&format!("/marketing/segments/{}/count", id(&by_owner)), "").await;
    assert_eq!(r.json["contacts"], 2);
}

#[tokio::test]
async fn a_bad_filter_is_refused_naming_each_field() {
    let w = world().await;
    w.field(w.tenant, "seats", "number", &[]).await;
    let (other_owner, other) = w.other_tenant().await;
    let their_company = w.company(other, "Theirs").await;
    let before = w.app.count("marketing_segments").await;
    let r = w
        .post(
            "/marketing/segments",
            json!({"name": "", "filter": {
                "lifecycle_stages": ["customer", "champion"],
                "custom": {"seats": {"gt": 1}, "plan": "pro"},
                "owner_ids": [other_owner.id],
                "company_ids": [their_company],
            }}),
        )
        .await;
    assert_eq!(
        fields(&r),
        [
            "filter.company_ids[0]",
            "filter.custom.plan",
            "filter.custom.seats",
            "filter.lifecycle_stages[1]",
            "filter.owner_ids[0]",
            "name",
        ]
    );
    assert_eq!(w.app.count("marketing_segments").await, before, "nothing stored");

    // Not an object, a field of the wrong type: the body's own checks name them.
    let r = w
        .post(
            "/marketing/segments",
            json!({"name": "X", "filter": {"owner_ids": ["nope"]}}),
        )
        .await;
    assert_eq!(fields(&r), ["filter.owner_ids[0]"]);
    let r = w
        .post("/marketing/segments", json!({"name": "X", "filter": {"stage": "lead"}}))
        .await;
    assert_eq!(fields(&r), ["filter.stage"]);
}

#[tokio::test]
async fn names_are_unique_per_tenant_whatever_their_case() {
    let w = world().await;
    w.created("/marketing/segments", json!({"name": "Newsletter"})).await;
    let r = w.post("/marketing/segments", json!({"name": " NEWSLETTER "})).await;
    assert_eq!(r.problem(409)["type"], "/problems/segment-name-taken");
    // Another tenant may use the name.
    let (other_owner, other) = w.other_tenant().await;
    let r = testkit::post("/marketing/segments")
        .bearer(&other_owner.token)
        .tenant(other)
        .json(json!({"name": "Newsletter"}))
        .send(&w.api)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // A rename onto a taken name is refused too.
    let second = w.created("/marketing/segments", json!({"name": "Second"})).await;
    let r = w
        .patch(
            &format!("/marketing/segments/{}", id(&second)),
            json!({"name": "newsletter"}),
            None,
        )
        .await;
    r.problem(409);
}

#[tokio::test]
async fn segments_are_read_listed_patched_with_etags_and_deleted() {
    let w = world().await;
    let s = w
        .created(
            "/marketing/segments",
            json!({"name": "Beta testers", "description": "Tagged beta", "filter": {"tags": ["beta"]}}),
        )
        .await;
    assert_eq!(s["version"], 1);
    let path = format!("/marketing/segments/{}", id(&s));
    let r = w.get(&path, "").await;
    assert_eq!(r.headers["etag"], "\"1\"");
    assert_eq!(r.json["filter"], json!({"tags": ["beta"]}));

    // A merge patch: the tags replaced, a stage added, the description cleared.
    let r = w
        .patch(
            &path,
            json!({"description": null, "filter": {"tags": ["beta", "vip"], "lifecycle_stages": ["lead"]}}),
            Some("\"1\""),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["etag"], "\"2\"");
    assert_eq!(r.json["description"], "");
    assert_eq!(
        r.json["filter"],
        json!({"tags": ["beta", "vip"], "lifecycle_stages": ["lead"]})
    );
    // A stale ETag: 412, nothing changed.
    let r = w.patch(&path, json!({"name": "Stale"}), Some("\"1\"")).await;
    r.problem(412);
    // An invalid patch names its field even with a stale ETag (the body is checked first).
    let r = w
        .patch(&path, json!({"filter": {"lifecycle_stages": ["nope"]}}), Some("\"1\""))
        .await;
    assert_eq!(fields(&r), ["filter.lifecycle_stages[0]"]);
    assert_eq!(w.get(&path, "").await.json["name"], "Beta testers");

    // Lists: newest change first, `q` on the name, keyset pages.
    for n in ["Alpha", "Gamma"] {
        w.created("/marketing/segments", json!({"name": n})).await;
    }
    let r = w.get("/marketing/segments", "limit=2").await;
    let names: Vec<&str> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Gamma", "Alpha"]);
    let cursor = r.json["next_cursor"].as_str().unwrap();
    let r = w.get("/marketing/segments", &format!("limit=2&cursor={cursor}")).await;
    assert_eq!(r.json["items"][0]["name"], "Beta testers");
    assert!(r.json["next_cursor"].is_null());
    let r = w.get("/marketing/segments", "q=amm").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    w.get("/marketing/segments", "cursor=nope").await.problem(422);

    assert_eq!(w.delete(&path).await.status, 204);
    w.get(&path, "").await.problem(404);
    w.delete(&path).await.problem(404);
}

#[tokio::test]
async fn a_segment_whose_custom_field_was_removed_must_be_edited_before_it_counts() {
    let w = world().await;
    let plan = w.field(w.tenant, "plan", "select", &["free", "pro"]).await;
    let s = w
        .created(
            "/marketing/segments",
            json!({"name": "Pro", "filter": {"custom": {"plan": "pro"}}}),
        )
        .await;
    let count = format!("/marketing/segments/{}/count", id(&s));
    assert_eq!(w.get(&count, "").await.status, 200);
    sqlx::query("delete from crm_custom_fields where id = $1")
        .bind(plan)
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    let r = w.get(&count, "").await;
    assert_eq!(r.problem(409)["type"], "/problems/segment-outdated");
    assert!(r.json["detail"].as_str().unwrap().contains("filter.custom.plan"));
    // Editing the filter makes it count again.
    let r = w
        .patch(
            &format!("/marketing/segments/{}", id(&s)),
            json!({"filter": {"custom": null}}),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(w.get(&count, "").await.status, 200);
}

#[tokio::test]
async fn viewers_read_and_count_but_do_not_write() {
    let w = world().await;
    let s = w.created("/marketing/segments", json!({"name": "All"})).await;
    let path = format!("/marketing/segments/{}", id(&s));
    assert_eq!(w.get_as(&w.viewer, &path, "").await.status, 200);
    assert_eq!(w.get_as(&w.viewer, &format!("{path}/count"), "").await.status, 200);
    w.post_as(&w.viewer, "/marketing/segments", json!({"name": "Mine"}))
        .await
        .problem(403);
    w.delete_as(&w.viewer, &path).await.problem(403);
    let r = w
        .post_as(&w.member, "/marketing/segments", json!({"name": "Members may"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}
