//! The media library's bucket: presigned uploads, reading an upload, writing thumbnails,
//! removing objects. Objects live under `media/<tenant>/<media id>/`: the upload is `original`
//! (the bucket notifies media-processor of those only), thumbnails sit beside it.
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::aws::Presigned;
use crate::config::{ConfigError, Env};

#[derive(Clone)]
pub struct MediaStore {
    pub s3: aws_sdk_s3::Client,
    /// `MEDIA_BUCKET`.
    pub bucket: String,
    /// Where the site reads objects (`config::media_public_base`).
    pub public_base_url: String,
}

impl MediaStore {
    pub fn new(aws: &aws_config::SdkConfig, env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            s3: super::aws::s3(aws),
            bucket: env.required("MEDIA_BUCKET")?,
            public_base_url: crate::config::media_public_base(env)?,
        })
    }

    /// The key of a media item's upload.
    pub fn original_key(tenant: uuid::Uuid, id: uuid::Uuid) -> String {
        format!("media/{tenant}/{id}/original")
    }

    pub async fn presign_upload(&self, key: &str, content_type: &str, size: u64) -> anyhow::Result<Presigned> {
        super::aws::presign_put(&self.s3, &self.bucket, key, content_type, size).await
    }

    /// The object's bytes; `None` when there is none under `key`.
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match self.s3.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(object) => Ok(Some(object.body.collect().await?.into_bytes().to_vec())),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> anyhow::Result<()> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .cache_control("public, max-age=31536000, immutable")
            .body(ByteStream::from(bytes))
            .send()
            .await?;
        Ok(())
    }

    /// Removes objects (absent ones are no error).
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
