//! crm-contacts' import routes (`POST /crm/imports/uploads`, `POST /crm/imports`): what they
//! refuse before a job exists. The jobs themselves (rows, errors file, resuming) are tested with
//! their worker, in functions/crm-import/tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use serde_json::json;
use uuid::Uuid;

type World = testkit::crm::World;

async fn world() -> World {
    World::new("contacts-imports", crm_contacts::router).await
}

#[tokio::test]
async fn bad_uploads_and_mappings_answer_422_and_record_nothing() {
    let w = world().await;
    for size in [0u64, 200 * 1024 * 1024] {
        let r = w.post("/crm/imports/uploads", json!({"size": size})).await;
        assert_eq!(r.status, 422, "{}", r.text);
    }
    let never = format!("imports/{}/{}.csv", w.tenant, Uuid::now_v7());
    let utf16 = w.upload(b"\xFF\xFEE\x00m\x00a\x00i\x00l\x00\n\x00".to_vec()).await;
    let latin = w.upload(b"Pr\xe9nom,Email\nRen\xe9,r@example.com\n".to_vec()).await;
    let good = w.upload(b"Email,Name\na@example.com,A\n".to_vec()).await;
    let empty_header = w.upload(b"\n\n".to_vec()).await;
    for (body, code) in [
        (json!({"entity": "contacts", "upload_key": never}), "not_uploaded"),
        (
            json!({"entity": "contacts", "upload_key": "imports/x/y.csv"}),
            "unknown_upload",
        ),
        (json!({"entity": "contacts", "upload_key": utf16}), "wrong_encoding"),
        (json!({"entity": "contacts", "upload_key": latin}), "wrong_encoding"),
        (json!({"entity": "contacts", "upload_key": empty_header}), "no_header"),
        (
            json!({"entity": "contacts", "upload_key": good, "mapping": {"Mail": "email"}}),
            "unknown_column",
        ),
        (
            json!({"entity": "contacts", "upload_key": good, "mapping": {"Email": "shoe"}}),
            "unknown_field",
        ),
        (
            json!({"entity": "contacts", "upload_key": good, "mapping": {"Email": null, "Name": null}}),
            "required",
        ),
        (
            json!({"entity": "companies", "upload_key": good, "mapping": {"Name": "phone"}}),
            "required",
        ),
    ] {
        let r = w.post("/crm/imports", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        let codes: Vec<&str> = r.json["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["code"].as_str().unwrap())
            .collect();
        assert!(codes.contains(&code), "{body}: {}", r.text);
    }
    assert_eq!(
        w.count("select count(*) from crm_imports where tenant_id = $1").await,
        0
    );
    // A viewer reads imports but starts none.
    let viewer = w.app.user("viewer").await;
    w.app.add_member(w.tenant, &viewer, shared::domain::Role::Viewer).await;
    let r = w
        .post_as(
            &viewer,
            w.tenant,
            "/crm/imports",
            json!({"entity": "contacts", "upload_key": good}),
        )
        .await;
    assert_eq!(r.status, 403);
}
