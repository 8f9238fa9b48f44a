//! The bucket and queue of CRM imports and exports: presigned uploads and downloads, reading an
//! uploaded file (its head, or the rest from an offset), writing an export, queueing a job.
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;

use super::queue::Queue;
use crate::config::CrmFilesSettings;
use crate::domain::jobs::{FileHead, JobMessage};

#[derive(Clone)]
pub struct CrmFiles {
    pub s3: aws_sdk_s3::Client,
    /// `CRM_FILES_BUCKET`.
    pub bucket: String,
    /// `CRM_JOBS_QUEUE_URL`: the crm-import worker's jobs.
    pub jobs: Queue<JobMessage>,
}

pub use super::aws::{LINK_TTL, Presigned};

impl CrmFiles {
    pub fn new(aws: &aws_config::SdkConfig, settings: &CrmFilesSettings) -> Self {
        Self {
            s3: super::aws::s3(aws),
            bucket: settings.bucket.clone(),
            jobs: Queue::new(&super::aws::sqs(aws), settings.jobs_queue_url.clone()),
        }
    }

    /// A PUT of exactly `size` bytes of CSV to `key`.
    #[tracing::instrument(skip_all, fields(key = %key))]
    pub async fn presign_upload(&self, key: &str, size: u64) -> anyhow::Result<Presigned> {
        super::aws::presign_put(&self.s3, &self.bucket, key, "text/csv", size).await
    }

    /// A GET of `key` that saves as `file_name`.
    #[tracing::instrument(skip_all, fields(key = %key))]
    pub async fn presign_download(&self, key: &str, file_name: &str) -> anyhow::Result<String> {
        let request = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_disposition(format!("attachment; filename=\"{file_name}\""))
            .response_content_type("text/csv; charset=utf-8")
            .presigned(PresigningConfig::expires_in(LINK_TTL)?)
            .await?;
        Ok(request.uri().to_owned())
    }

    /// Copies an upload to a key of its own for the job (`imports/<tenant>/jobs/<id>.csv`): the
    /// upload's presigned URL stays valid for a while, and a second PUT must not change a file
    /// an import is reading by offsets. `None` when nothing was uploaded under `upload_key`.
    #[tracing::instrument(skip_all, fields(key = %upload_key))]
    pub async fn copy_for_job(&self, upload_key: &str) -> anyhow::Result<Option<String>> {
        let prefix = upload_key.rsplit_once('/').map(|(p, _)| p).unwrap_or_default();
        let job_key = format!("{prefix}/jobs/{}.csv", uuid::Uuid::now_v7());
        match self
            .s3
            .copy_object()
            .bucket(&self.bucket)
            .key(&job_key)
            .copy_source(format!("{}/{upload_key}", self.bucket))
            .send()
            .await
        {
            Ok(_) => Ok(Some(job_key)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.meta().code() == Some("NoSuchKey")) =>
            {
                Ok(None)
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The object's size and first `head_bytes`; `None` when nothing was uploaded under `key`.
    #[tracing::instrument(skip_all, fields(key = %key))]
    pub async fn head(&self, key: &str, head_bytes: u64) -> anyhow::Result<Option<FileHead>> {
        let head = match self.s3.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => head,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size = u64::try_from(head.content_length().unwrap_or_default()).unwrap_or_default();
        if size == 0 {
            return Ok(Some(FileHead {
                object_key: key.to_owned(),
                size,
                bytes: Vec::new(),
            }));
        }
        let bytes = self
            .read_range(key, &format!("bytes=0-{}", head_bytes.max(1) - 1))
            .await?;
        Ok(bytes.map(|bytes| FileHead {
            object_key: key.to_owned(),
            size,
            bytes,
        }))
    }

    /// The object from `offset` to its end; `None` when it is gone.
    #[tracing::instrument(skip_all, fields(key = %key, offset))]
    pub async fn read_from(&self, key: &str, offset: u64) -> anyhow::Result<Option<Vec<u8>>> {
        let head = match self.s3.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => head,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size = u64::try_from(head.content_length().unwrap_or_default()).unwrap_or_default();
        if offset >= size {
            return Ok(Some(Vec::new()));
        }
        self.read_range(key, &format!("bytes={offset}-")).await
    }

    async fn read_range(&self, key: &str, range: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(range)
            .send()
            .await
        {
            Ok(object) => Ok(Some(object.body.collect().await?.into_bytes().to_vec())),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A CSV object written as it is produced (an export of any size in flat memory).
    #[tracing::instrument(skip_all, fields(key = %key))]
    pub async fn start_csv(&self, key: &str) -> anyhow::Result<super::s3_upload::MultipartUpload> {
        super::s3_upload::MultipartUpload::start(&self.s3, &self.bucket, key, "text/csv; charset=utf-8").await
    }

    #[tracing::instrument(skip_all, fields(key = %key, bytes = bytes.len()))]
    pub async fn put_csv(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("text/csv; charset=utf-8")
            .body(ByteStream::from(bytes))
            .send()
            .await?;
        Ok(())
    }
}
