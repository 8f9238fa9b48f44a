//! media-processor end to end against the moto server and a real Postgres: an upload is
//! granted by the library (cms-media), the bytes go to the presigned URL (a private `uploads/`
//! key), the bucket's real ObjectCreated event (delivered through SQS, as the local stack
//! delivers it) runs media-processor, and the item shows what the bytes are, copied to the
//! public `media/` key with thumbnails beside it. Nothing is under the public key before it was
//! checked; bytes that are not the declared type, SVG with script and unreadable uploads are
//! rejected and removed, never public; a repeated event changes nothing; a passing failure is
//! retried. (The library's own routes are tested in `functions/cms-media/tests/`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use axum::Router;
use media_processor::Processor;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::media::{jpeg, key_of, png, upload_of};
use testkit::post;
use uuid::Uuid;

/// The media library's world (`testkit::media`) and the function under test.
struct World {
    library: testkit::media::World,
    processor: Processor,
}

impl std::ops::Deref for World {
    type Target = testkit::media::World;

    fn deref(&self) -> &testkit::media::World {
        &self.library
    }
}

async fn world() -> World {
    let library = testkit::media::World::new(cms_media::router).await;
    let processor = Processor {
        db: library.app.core.db.clone(),
        store: library.store.clone(),
    };
    World { library, processor }
}

impl World {
    /// The next `want` S3 events of the bucket handled by media-processor; the outcomes.
    async fn process(&self, want: usize) -> Vec<Value> {
        self.library
            .process(want, async |event| self.processor.handle(event).await)
            .await
    }
}

#[tokio::test]
async fn an_uploaded_image_is_measured_checksummed_and_thumbnailed() {
    let w = world().await;
    let bytes = png(1600, 900);
    let item = w
        .upload(
            "Hero.png",
            "image/png",
            &bytes,
            json!({"folder": "home", "alt": "A hero"}),
        )
        .await;
    assert!(w.exists(&upload_of(w.tenant, &item)).await);
    assert!(
        !w.exists(&key_of(w.tenant, &item)).await,
        "nothing is public before it is checked"
    );
    let outcomes = w.process(1).await;
    assert_eq!(outcomes[0]["outcome"], "ready", "{outcomes:?}");
    let m = w.media(item["id"].as_str().unwrap()).await;
    assert_eq!(m["status"], "ready");
    assert_eq!(m["content_type"], "image/png");
    assert_eq!((m["width"].as_i64(), m["height"].as_i64()), (Some(1600), Some(900)));
    assert_eq!(m["size_bytes"], bytes.len());
    assert_eq!(m["checksum_sha256"], hex::encode(Sha256::digest(&bytes)));
    let key = key_of(w.tenant, &m);
    assert_eq!(m["url"], format!("{}/{key}", w.store.public_base_url));
    // The checked bytes are public (shown inline: an image); the upload is gone.
    assert_eq!(w.object(&key).await.unwrap(), bytes);
    let served = w
        .store
        .s3
        .head_object()
        .bucket(&w.store.bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (served.content_type(), served.content_disposition()),
        (Some("image/png"), None)
    );
    assert!(!w.exists(&upload_of(w.tenant, &m)).await);
    let thumbs = m["thumbnails"].as_array().unwrap();
    let sizes: Vec<(i64, i64)> = thumbs
        .iter()
        .map(|t| (t["width"].as_i64().unwrap(), t["height"].as_i64().unwrap()))
        .collect();
    assert_eq!(sizes, [(320, 180), (1024, 576)]);
    for (t, (tw, th)) in thumbs.iter().zip(sizes) {
        let url = t["url"].as_str().unwrap();
        let tkey = url.strip_prefix(&format!("{}/", w.store.public_base_url)).unwrap();
        let data = w.object(tkey).await.expect("the thumbnail is in the bucket");
        let img = image::load_from_memory(&data).unwrap();
        assert_eq!((img.width() as i64, img.height() as i64), (tw, th));
    }
    // A small JPEG: measured, no thumbnail wider than itself.
    let item = w.upload("small.jpg", "image/jpeg", &jpeg(200, 100), json!({})).await;
    w.process(1).await;
    let m = w.media(item["id"].as_str().unwrap()).await;
    assert_eq!(
        (m["width"].as_i64(), m["thumbnails"].as_array().unwrap().len()),
        (Some(200), 0)
    );

    // The same event again (S3 delivers at least once): nothing changes.
    let version = m["version"].clone();
    let event = json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": w.store.bucket}, "object": {"key": upload_of(w.tenant, &m)}}}]});
    let out = w.processor.handle(event).await.unwrap();
    assert_eq!(out["processed"][0]["outcome"], "unchanged");
    assert_eq!(w.media(item["id"].as_str().unwrap()).await["version"], version);
}

#[tokio::test]
async fn bytes_that_are_not_the_declared_type_or_unsafe_svg_are_rejected_and_removed() {
    let w = world().await;
    let pdf = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n".to_vec();
    let fake = w.upload("photo.png", "image/png", &pdf, json!({})).await;
    let evil = br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(document.cookie)</script></svg>"#;
    let bad_svg = w.upload("logo.svg", "image/svg+xml", evil, json!({})).await;
    let fine = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><circle cx="5" cy="5" r="4" fill="teal"/></svg>"#;
    let good_svg = w.upload("mark.svg", "image/svg+xml", fine, json!({})).await;
    let real_pdf = w.upload("terms.pdf", "application/pdf", &pdf, json!({})).await;
    for item in [&fake, &bad_svg, &good_svg, &real_pdf] {
        assert!(
            !w.exists(&key_of(w.tenant, item)).await,
            "nothing is public before it is checked"
        );
    }
    w.process(4).await;

    let m = w.media(fake["id"].as_str().unwrap()).await;
    assert_eq!(m["status"], "rejected");
    assert!(m["reject_reason"].as_str().unwrap().contains("application/pdf"), "{m}");
    assert!(m["url"].is_null());
    assert!(!w.exists(&upload_of(w.tenant, &m)).await, "the object is removed");
    assert!(!w.exists(&key_of(w.tenant, &m)).await, "and never was public");
    let m = w.media(bad_svg["id"].as_str().unwrap()).await;
    assert_eq!(m["status"], "rejected");
    assert!(m["reject_reason"].as_str().unwrap().contains("unsafe SVG"), "{m}");
    assert!(m["url"].is_null());
    assert!(!w.exists(&upload_of(w.tenant, &m)).await);
    assert!(
        !w.exists(&key_of(w.tenant, &m)).await,
        "the SVG with script never was public"
    );
    let m = w.media(good_svg["id"].as_str().unwrap()).await;
    assert_eq!(
        (m["status"].as_str(), m["content_type"].as_str()),
        (Some("ready"), Some("image/svg+xml"))
    );
    assert!(w.exists(&key_of(w.tenant, &m)).await);
    let m = w.media(real_pdf["id"].as_str().unwrap()).await;
    assert_eq!((m["status"].as_str(), m["width"].as_i64()), (Some("ready"), None));
    // Not an image: served as a download.
    let served = w
        .store
        .s3
        .head_object()
        .bucket(&w.store.bucket)
        .key(key_of(w.tenant, &m))
        .send()
        .await
        .unwrap();
    assert_eq!(served.content_disposition(), Some("attachment"));

    // A rejected image is no image a page may show.
    let (site, _) = w.app.site(w.tenant, "example.com").await;
    let pages = cms_content_router(&w);
    let r = post("/cms/pages")
        .json(json!({"site_id": site, "title": "x", "body": [{"type": "image", "media_id": fake["id"], "alt": "a"}]}))
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .send(&pages)
        .await;
    assert_eq!(r.error_fields(), ["body[0].media_id"]);

    // An object no library item owns (a deleted item's late upload) is removed.
    let stray = format!("uploads/{}/{}/original", w.tenant, Uuid::now_v7());
    w.store.put(&stray, png(4, 4), "image/png").await.unwrap();
    let out = w.process(1).await;
    assert_eq!(out[0]["outcome"], "orphan removed");
    assert!(w.object(&stray).await.is_none());
}

fn cms_content_router(w: &World) -> Router {
    cms_content::pages::router(w.app.core.clone(), None)
}

#[tokio::test]
async fn an_upload_that_cannot_be_read_is_rejected_and_removed_not_left_pending() {
    let w = world().await;
    let bytes = png(64, 64);
    let r = w
        .send(
            post("/cms/media/uploads")
                .json(json!({"name": "cold.png", "content_type": "image/png", "size": bytes.len()})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let item = r.json["media"].clone();
    // An object S3 will not serve as it is (an archived storage class): no retry would help.
    w.store
        .s3
        .put_object()
        .bucket(&w.store.bucket)
        .key(upload_of(w.tenant, &item))
        .content_type("image/png")
        .storage_class(aws_sdk_s3::types::StorageClass::Glacier)
        .body(bytes.into())
        .send()
        .await
        .unwrap();
    let out = w.process(1).await;
    assert_eq!(
        out[0]["outcome"], "rejected: the upload cannot be read: it is archived",
        "{out:?}"
    );
    let m = w.media(item["id"].as_str().unwrap()).await;
    assert_eq!(m["status"], "rejected");
    assert!(!w.exists(&upload_of(w.tenant, &item)).await, "the object is removed");
    assert!(!w.exists(&key_of(w.tenant, &item)).await);

    // A passing failure (S3 unreachable) is an error: the event is tried again.
    let item = w.upload("later.png", "image/png", &png(8, 8), json!({})).await;
    let events = w.events(1).await;
    let mut broken = w.processor.store.clone();
    broken.s3 = aws_sdk_s3::Client::from_conf(
        w.store
            .s3
            .config()
            .to_builder()
            .endpoint_url("http://127.0.0.1:9")
            .build(),
    );
    let offline = Processor {
        db: w.processor.db.clone(),
        store: broken,
    };
    assert!(offline.handle(events[0].clone()).await.is_err());
    assert_eq!(w.media(item["id"].as_str().unwrap()).await["status"], "pending");
    // The retry, with S3 back, finishes it.
    let out = w.processor.handle(events[0].clone()).await.unwrap();
    assert_eq!(out["processed"][0]["outcome"], "ready");
}
