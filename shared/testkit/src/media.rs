//! The media library's test world, shared by cms-media's tests (the library's routes) and
//! media-processor's (what happens to an uploaded object): a fresh database with an owner and
//! a tenant, a uniquely named media bucket in moto whose `uploads/…/original` objects notify a
//! queue (as template.yaml's `MediaBucket` notifies media-processor; the local stack delivers
//! S3 events through SQS the same way), and the cms-media router over both.
use crate::{Req, Resp, TestApp, TestUser, get, post};
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter, QueueConfiguration,
    S3KeyFilter,
};
use axum::Router;
use serde_json::{Value, json};
use shared::adapters::media_store::MediaStore;
use shared::http::Core;
use uuid::Uuid;

pub struct World {
    pub app: TestApp,
    /// The cms-media router.
    pub api: Router,
    pub store: MediaStore,
    pub sqs: aws_sdk_sqs::Client,
    /// The queue the bucket's ObjectCreated events of uploads go to.
    pub queue: String,
    pub owner: TestUser,
    pub tenant: Uuid,
}

impl World {
    /// The world with `router` (cms-media's `router`) serving the library.
    pub async fn new(router: fn(Core, MediaStore) -> Router) -> Self {
        let aws = crate::moto().await;
        let store = crate::media_store(&aws, "media").await;
        let sqs = aws_sdk_sqs::Client::new(&aws);
        let queue = sqs
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
            .queue_url(&queue)
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
            api: router(app.core.clone(), store.clone()),
            app,
            store,
            sqs,
            queue,
            owner,
            tenant,
        }
    }

    /// `r` sent to the library as the owner, in the owner's tenant.
    pub async fn send(&self, r: Req) -> Resp {
        r.bearer(&self.owner.token).tenant(self.tenant).send(&self.api).await
    }

    /// Grants an upload and PUTs `bytes` to its presigned URL; returns the item.
    pub async fn upload(&self, name: &str, content_type: &str, bytes: &[u8], extra: Value) -> Value {
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
    pub async fn events(&self, want: usize) -> Vec<Value> {
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

    /// The next `want` S3 events of the bucket, each handed to `handle` (media-processor's
    /// handler, as Lambda would call it); the outcomes of their records.
    pub async fn process<E: std::fmt::Debug>(
        &self,
        want: usize,
        handle: impl AsyncFn(Value) -> Result<Value, E>,
    ) -> Vec<Value> {
        let mut outcomes = Vec::new();
        for event in self.events(want).await {
            let out = handle(event).await.unwrap();
            outcomes.extend(out["processed"].as_array().unwrap().iter().cloned());
        }
        outcomes
    }

    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.store.get(key).await.unwrap()
    }

    /// Whether an object is under `key` (HeadObject).
    pub async fn exists(&self, key: &str) -> bool {
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

    /// `GET /cms/media/{id}`, which must answer 200.
    pub async fn media(&self, id: &str) -> Value {
        let r = self.send(get(&format!("/cms/media/{id}"))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }
}

/// Where an item is served once accepted.
pub fn key_of(tenant: Uuid, media: &Value) -> String {
    format!("media/{tenant}/{}/original", media["id"].as_str().unwrap())
}

/// Where an item's bytes are uploaded.
pub fn upload_of(tenant: Uuid, media: &Value) -> String {
    format!("uploads/{tenant}/{}/original", media["id"].as_str().unwrap())
}

/// A PNG of `w`×`h` pixels.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(w, h, |x, y| image::Rgba([(x % 256) as u8, (y % 256) as u8, 90, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A JPEG of `w`×`h` pixels.
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, 40, (y % 256) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}
