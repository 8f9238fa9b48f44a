//! The media library's routes against the moto server and a real Postgres: an upload is granted
//! only for an allowed type and size within the plan's storage; items are listed by type, folder,
//! tag and words, renamed, moved and deleted (their objects with them); other tenants get 404;
//! an upload that never arrived is given up after its window. Items are made ready the way the
//! bucket's events make them ready, by media-processor (whose own tests, in
//! `functions/media-processor/tests/`, cover what processing does with the bytes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use media_processor::Processor;
use serde_json::json;
use testkit::media::{World, key_of, png};
use testkit::{delete, get, patch, post};

async fn world() -> World {
    World::new(cms_media::router).await
}

/// media-processor on the world's bucket and database.
fn processor(w: &World) -> Processor {
    Processor {
        db: w.app.core.db.clone(),
        store: w.store.clone(),
    }
}

#[tokio::test]
async fn uploads_are_limited_by_type_size_and_the_plans_storage() {
    let w = world().await;
    let r = w
        .send(
            post("/cms/media/uploads")
                .json(json!({"name": "x.exe", "content_type": "application/x-msdownload", "size": 10})),
        )
        .await;
    assert_eq!(r.error_fields(), ["content_type"]);
    let r = w
        .send(
            post("/cms/media/uploads")
                .json(json!({"name": "big.png", "content_type": "image/png", "size": 21 * 1024 * 1024})),
        )
        .await;
    assert_eq!(r.error_fields(), ["size"]);
    let r = w
        .send(
            post("/cms/media/uploads")
                .json(json!({"name": "../x", "content_type": "image/png", "size": 10, "folder": "a/../b"})),
        )
        .await;
    assert_eq!(r.error_fields(), ["folder"]);
    assert_eq!(w.app.count("cms_media").await, 0);
    // The free plan stores 1 GiB: two 500 MiB videos fit, a third does not.
    let video = json!({"name": "v.mp4", "content_type": "video/mp4", "size": 500 * 1024 * 1024});
    for _ in 0..2 {
        assert_eq!(w.send(post("/cms/media/uploads").json(video.clone())).await.status, 201);
    }
    let r = w.send(post("/cms/media/uploads").json(video)).await;
    let p = r.problem(402);
    assert_eq!(
        (p["limit"]["name"].as_str(), p["limit"]["plan"].as_str()),
        (Some("storage_bytes"), Some("free"))
    );
    assert_eq!(w.app.count("cms_media").await, 2);
}

#[tokio::test]
async fn the_library_lists_edits_deletes_and_keeps_tenants_apart() {
    let w = world().await;
    let processor = processor(&w);
    let a = w
        .upload(
            "Team photo.png",
            "image/png",
            &png(400, 300),
            json!({"folder": "about", "tags": ["People"]}),
        )
        .await;
    let b = w
        .upload(
            "Price list.pdf",
            "application/pdf",
            b"%PDF-1.4\n%%EOF\n",
            json!({"folder": "docs"}),
        )
        .await;
    w.process(2, async |event| processor.handle(event).await).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let w = &w;
    let list = |q: &'static str| async move {
        w.send(get("/cms/media").query(q)).await.json["items"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(list("type=image").await, 1);
    assert_eq!(list("type=document").await, 1);
    assert_eq!(list("folder=about").await, 1);
    assert_eq!(list("tag=people").await, 1);
    assert_eq!(list("q=price").await, 1);
    assert_eq!(w.send(get("/cms/media").query("type=spreadsheet")).await.status, 422);
    let r = w.send(get("/cms/media/folders")).await;
    let folders: Vec<&str> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["folder"].as_str().unwrap())
        .collect();
    assert_eq!(folders, ["about", "docs"]);

    // Rename, alt text, move, tags.
    let r = w
        .send(
            patch(&format!("/cms/media/{a_id}"))
                .json(json!({"name": "Our team.png", "alt": "The team", "folder": "/company/team/"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json["name"].as_str(), r.json["folder"].as_str()),
        (Some("Our team.png"), Some("company/team"))
    );
    assert_eq!(r.json["tags"], json!(["people"]));

    // Another tenant sees none of it.
    let other = w.app.user("other").await;
    let other_tenant = w.app.tenant(&other).await;
    let send = |r: testkit::Req| r.bearer(&other.token).tenant(other_tenant).send(&w.api);
    assert_eq!(send(get(&format!("/cms/media/{a_id}"))).await.status, 404);
    assert_eq!(
        send(patch(&format!("/cms/media/{a_id}")).json(json!({"name": "mine"})))
            .await
            .status,
        404
    );
    assert_eq!(send(delete(&format!("/cms/media/{a_id}"))).await.status, 404);
    assert_eq!(send(get("/cms/media")).await.json["items"], json!([]));
    assert!(w.object(&key_of(w.tenant, &a)).await.is_some());

    // Delete removes the objects (the upload and its thumbnails).
    let m = w.media(a_id).await;
    let thumbs: Vec<String> = m["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["url"]
                .as_str()
                .unwrap()
                .strip_prefix(&format!("{}/", w.store.public_base_url))
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(thumbs.len(), 1);
    assert_eq!(w.send(delete(&format!("/cms/media/{a_id}"))).await.status, 204);
    assert!(!w.exists(&key_of(w.tenant, &a)).await);
    assert!(w.object(&thumbs[0]).await.is_none());
    assert_eq!(w.send(get(&format!("/cms/media/{a_id}"))).await.status, 404);
    assert_eq!(w.media(b_id).await["status"], "ready");
}

/// The upload window's other end: this drives `cms::media::give_up_stale`, the sweep that
/// content-scheduler's scheduled run calls (content-scheduler is a bin-only crate without tests
/// of its own; its other sweep, `publish_due`, is tested beside the content rules in
/// `functions/cms-content/tests/`).
#[tokio::test]
async fn an_item_still_pending_after_its_upload_window_is_rejected_with_why() {
    let w = world().await;
    let mut ids = Vec::new();
    for name in ["stale.png", "fresh.png"] {
        let r = w
            .send(post("/cms/media/uploads").json(json!({"name": name, "content_type": "image/png", "size": 10})))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.json["media"]["id"].as_str().unwrap().to_owned());
    }
    sqlx::query("update cms_media set created_at = now() - interval '3 hours' where id = $1::uuid")
        .bind(&ids[0])
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    let given_up = shared::services::cms::media::give_up_stale(&w.app.core.db, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(given_up, 1);
    let stale = w.media(&ids[0]).await;
    assert_eq!(stale["status"], "rejected");
    assert!(
        stale["reject_reason"]
            .as_str()
            .unwrap()
            .contains("upload the file again"),
        "{stale}"
    );
    assert_eq!(
        w.media(&ids[1]).await["status"],
        "pending",
        "a fresh upload still has its time"
    );
    assert_eq!(
        shared::services::cms::media::give_up_stale(&w.app.core.db, chrono::Utc::now())
            .await
            .unwrap(),
        0
    );
}
