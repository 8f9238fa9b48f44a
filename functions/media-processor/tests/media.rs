//! The media library end to end against the moto server and a real Postgres: an upload is
//! granted (type, size, storage quota), the bytes go to the presigned URL (a private
//! `uploads/` key), the bucket's real ObjectCreated event (delivered through SQS, as the local
//! stack delivers it) runs media-processor, and the item shows what the bytes are, copied to
//! the public `media/` key with thumbnails beside it. Nothing is under the public key before
//! it was checked; bytes that are not the declared type, SVG with script and unreadable
//! uploads are rejected and removed, never public; a repeated event changes nothing; deleting
//! removes the objects; other tenants get 404.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter, QueueConfiguration,
    S3KeyFilter,
};
use axum::Router;
use media_processor::Processor;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::adapters::media_store::MediaStore;
use testkit::{Resp, TestApp, TestUser, delete, get, patch, post};
use uuid::Uuid;

struct World {
    app: TestApp,
    api: Router,
    store: MediaStore,
    processor: Processor,
    sqs: aws_sdk_sqs::Client,
    queue: String,
    owner: TestUser,
    tenant: Uuid,
}

/// A bucket whose `uploads/…/original` objects notify a queue, as template.yaml's `MediaBucket`
/// notifies media-processor.
async fn world() -> World {
    let aws = testkit::moto().await;
    let store = testkit::media_store(&aws, "media").await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("media-events-{}", Uuid::new_v4().simple()))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let filter = NotificationConfigurationFilter::builder()
        .key(
            S3KeyFilter::builder()
                .filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::Prefix)
                        .value("uploads/")
                        .build(),
                )
                .filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::Suffix)
                        .value("/original")
                        .build(),
                )
                .build(),
        )
        .build();
    store
        .s3
        .put_bucket_notification_configuration()
        .bucket(&store.bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .filter(filter)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    World {
        api: cms_media::router(app.core.clone(), store.clone()),
        processor: Processor {
            db: app.core.db.clone(),
            store: store.clone(),
        },
        app,
        store,
        sqs,
        queue: queue_url,
        owner,
        tenant,
    }
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(w, h, |x, y| image::Rgba([(x % 256) as u8, (y % 256) as u8, 90, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, 40, (y % 256) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

impl World {
    async fn send(&self, r: testkit::Req) -> Resp {
        r.bearer(&self.owner.token).tenant(self.tenant).send(&self.api).await
    }

    /// Grants an upload and PUTs `bytes` to its presigned URL; returns the item.
    async fn upload(&self, name: &str, content_type: &str, bytes: &[u8], extra: Value) -> Value {
        let mut body = json!({"name": name, "content_type": content_type, "size": bytes.len()});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        let r = self.send(post("/cms/media/uploads").json(body)).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["media"]["status"], "pending");
        let ticket = &r.json["upload"];
        let url = ticket["url"].as_str().unwrap();
        assert!(url.contains(&upload_of(self.tenant, &r.json["media"])), "{url}");
        let mut put = reqwest::Client::new().put(ticket["url"].as_str().unwrap());
        for (k, v) in ticket["headers"].as_object().unwrap() {
            put = put.header(k, v.as_str().unwrap());
        }
        let sent = put.body(bytes.to_vec()).send().await.unwrap();
        assert!(sent.status().is_success(), "{}", sent.text().await.unwrap());
        r.json["media"].clone()
    }

    /// The S3 events the bucket sent since the last call (the test event skipped).
    async fn events(&self, want: usize) -> Vec<Value> {
        let mut events = Vec::new();
        for _ in 0..50 {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for m in out.messages() {
                let body: Value = serde_json::from_str(m.body().unwrap()).unwrap_or_else(|e| panic!("{e}: {m:?}"));
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
                if body.get("Records").is_some() {
                    events.push(body);
                }
            }
            if events.len() >= want {
                break;
            }
        }
        assert_eq!(events.len(), want, "S3 events received");
        events
    }

    async fn process(&self, want: usize) -> Vec<Value> {
        let mut outcomes = Vec::new();
        for event in self.events(want).await {
            let out = self.processor.handle(event).await.unwrap();
            outcomes.extend(out["processed"].as_array().unwrap().iter().cloned());
        }
        outcomes
    }

    async fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.store.get(key).await.unwrap()
    }

    /// Whether an object is under `key` (HeadObject).
    async fn exists(&self, key: &str) -> bool {
        match self
            .store
            .s3
            .head_object()
            .bucket(&self.store.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => false,
            Err(e) => panic!("{e:?}"),
        }
    }

    async fn media(&self, id: &str) -> Value {
        let r = self.send(get(&format!("/cms/media/{id}"))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }
}

/// Where an item is served once accepted.
fn key_of(tenant: Uuid, media: &Value) -> String {
    format!("media/{tenant}/{}/original", media["id"].as_str().unwrap())
}

/// Where an item's bytes are uploaded.
fn upload_of(tenant: Uuid, media: &Value) -> String {
    format!("uploads/{tenant}/{}/original", media["id"].as_str().unwrap())
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
    w.process(2).await;
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
