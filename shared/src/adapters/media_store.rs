//! The media library's bucket: presigned uploads, reading an upload a chunk at a time,
//! publishing it, writing thumbnails, removing objects.
//!
//! Two prefixes, one per trust level. An upload lands under `uploads/<tenant>/<media id>/original`
//! (private: the bucket notifies media-processor of those only, and nothing serves them). What
//! media-processor accepted is copied to `media/<tenant>/<media id>/original`, its thumbnails
//! beside it: `media/*` is all the CDN may read, so bytes are served only once they were checked.
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, MetadataDirective, ObjectIdentifier};
use axum::body::Bytes;

use super::aws::Presigned;
use crate::config::MediaSettings;

/// Where uploads land, unchecked and never served.
pub const UPLOADS: &str = "uploads/";
/// What the CDN serves: accepted objects and their thumbnails.
pub const PUBLIC: &str = "media/";
/// How long a served object may be cached.
const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

#[derive(Clone)]
pub struct MediaStore {
    pub s3: aws_sdk_s3::Client,
    /// `MEDIA_BUCKET`.
    pub bucket: String,
    /// Where the site reads objects (`config::media_public_base`).
    pub public_base_url: String,
}

/// What opening an object found.
pub enum Opened {
    /// No object under the key.
    Missing,
    /// S3 answered that this object cannot be read, and asking again will not change that
    /// (an archived storage class, a customer-key encryption, a request it refuses as such).
    Unreadable(String),
    Reading(Reading),
}

/// An object being read, a chunk at a time: only the chunk in hand is in memory.
pub struct Reading {
    /// The size S3 gives for the object.
    pub size: Option<i64>,
    /// The version being read (its ETag): [`MediaStore::publish`] copies this version or nothing.
    pub etag: Option<String>,
    body: ByteStream,
}

impl Reading {
    /// The next chunk; `None` at the end. An error is a passing one (the connection broke).
    pub async fn next_chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
        Ok(self.body.try_next().await?)
    }
}

impl MediaStore {
    pub fn new(aws: &aws_config::SdkConfig, settings: &MediaSettings) -> Self {
        Self {
            s3: super::aws::s3(aws),
            bucket: settings.bucket.clone(),
            public_base_url: settings.public_base_url.clone(),
        }
    }

    /// The key a media item is served from once accepted (the item's `object_key`).
    pub fn public_key(tenant: uuid::Uuid, id: uuid::Uuid) -> String {
        format!("{PUBLIC}{tenant}/{id}/original")
    }

    /// The key a media item's bytes are uploaded to.
    pub fn upload_key(tenant: uuid::Uuid, id: uuid::Uuid) -> String {
        format!("{UPLOADS}{tenant}/{id}/original")
    }

    /// The upload key of a public key (`media/x` → `uploads/x`).
    pub fn upload_key_of(public: &str) -> Option<String> {
        public.strip_prefix(PUBLIC).map(|rest| format!("{UPLOADS}{rest}"))
    }

    /// The public key of an upload key (`uploads/x` → `media/x`).
    pub fn public_key_of(upload: &str) -> Option<String> {
        upload.strip_prefix(UPLOADS).map(|rest| format!("{PUBLIC}{rest}"))
    }

    #[tracing::instrument(skip_all, fields(key = %key, size))]
    pub async fn presign_upload(&self, key: &str, content_type: &str, size: u64) -> anyhow::Result<Presigned> {
        super::aws::presign_put(&self.s3, &self.bucket, key, content_type, size).await
    }

    /// The object's bytes, whole; `None` when there is none under `key`. For small objects
    /// (tests, tools): media-processor reads with [`MediaStore::open`].
    #[tracing::instrument(skip_all, fields(key = %key))]
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match self.s3.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(object) => Ok(Some(object.body.collect().await?.into_bytes().to_vec())),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts reading the object under `key`. `Err` is a passing failure (S3 unreachable,
    /// throttling, a 5xx, access denied by a policy being fixed): the caller tries again later.
    #[tracing::instrument(skip_all, fields(key = %key))]
    pub async fn open(&self, key: &str) -> anyhow::Result<Opened> {
        match self.s3.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(object) => Ok(Opened::Reading(Reading {
                size: object.content_length(),
                etag: object.e_tag().map(str::to_owned),
                body: object.body,
            })),
            Err(e) => {
                if let Some(service) = e.as_service_error() {
                    if service.is_no_such_key() {
                        return Ok(Opened::Missing);
                    }
                    if service.is_invalid_object_state() {
                        return Ok(Opened::Unreadable("it is archived".to_owned()));
                    }
                }
                match e.raw_response().map(|r| r.status().as_u16()) {
                    Some(404) => Ok(Opened::Missing),
                    // A 4xx other than these says the request itself cannot succeed.
                    Some(status) if (400..500).contains(&status) && ![401, 403, 408, 429].contains(&status) => {
                        let code = e.as_service_error().and_then(|s| s.meta().code()).unwrap_or("no code");
                        Ok(Opened::Unreadable(format!("S3 answered {status} ({code})")))
                    }
                    _ => Err(e.into()),
                }
            }
        }
    }

    /// Copies the upload `from` (server-side) to the public key `to`, served as `content_type`
    /// (and as a download when `attachment`). Only the version `etag` is copied: `false` when
    /// the upload changed or went since it was read (its newer bytes are checked on their own).
    #[tracing::instrument(skip_all, fields(from = %from, to = %to))]
    pub async fn publish(
        &self,
        from: &str,
        to: &str,
        etag: Option<&str>,
        content_type: &str,
        attachment: bool,
    ) -> anyhow::Result<bool> {
        let copied = self
            .s3
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(format!("{}/{from}", self.bucket))
            .set_copy_source_if_match(etag.map(str::to_owned))
            .metadata_directive(MetadataDirective::Replace)
            .content_type(content_type)
            .cache_control(CACHE_CONTROL)
            .set_content_disposition(attachment.then(|| "attachment".to_owned()))
            .send()
            .await;
        match copied {
            Ok(_) => Ok(true),
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 404 | 412)) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    #[tracing::instrument(skip_all, fields(key = %key, bytes = bytes.len()))]
    pub async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> anyhow::Result<()> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .cache_control(CACHE_CONTROL)
            .body(ByteStream::from(bytes))
            .send()
            .await?;
        Ok(())
    }

    /// Removes objects (absent ones are no error).
    #[tracing::instrument(skip_all, fields(objects = keys.len()))]
    pub async fn delete(&self, keys: &[String]) -> anyhow::Result<()> {
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .s3
                .delete_objects()
                .bucket(&self.bucket)
                .delete(Delete::builder().set_objects(Some(objects)).quiet(true).build()?)
                .send()
                .await?;
            if let Some(e) = out.errors().first() {
                anyhow::bail!("could not delete {:?}: {:?}", e.key(), e.message());
            }
        }
        Ok(())
    }
}
