//! An object written to S3 as it is produced (multipart upload): the writer keeps at most one
//! part in memory, whatever the object's size, so a million-row export needs no more memory
//! than a thousand-row one. Parts are `PART_BYTES` (S3 wants at least 5 MiB for all but the
//! last); an upload that fails or is dropped unfinished is aborted (the bucket's lifecycle rule
//! for incomplete uploads is the backstop for a crash).
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

/// The most bytes buffered for one part (its capacity is reserved once, never doubled).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// S3's smallest part (but the last).
const MIN_PART_BYTES: usize = 5 * 1024 * 1024;

pub struct MultipartUpload {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    buffer: Vec<u8>,
    size: u64,
    finished: bool,
}

impl MultipartUpload {
    /// Starts an upload of `key` with the object's content type.
    #[tracing::instrument(skip_all, fields(bucket = %bucket, key = %key))]
    pub async fn start(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, content_type: &str) -> anyhow::Result<Self> {
        let created = s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| anyhow::anyhow!("S3 started an upload without an id"))?
            .to_owned();
        Ok(Self {
            s3: s3.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id,
            parts: Vec::new(),
            buffer: Vec::with_capacity(PART_BYTES),
            size: 0,
            finished: false,
        })
    }

    /// Appends bytes; a part is sent first when they would not fit in the buffer (and it holds
    /// at least S3's smallest part), so the buffer never grows past its capacity.
    #[tracing::instrument(skip_all, fields(key = %self.key, bytes = bytes.len()))]
    pub async fn write(&mut self, mut bytes: &[u8]) -> anyhow::Result<()> {
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.buffer.len() + bytes.len() > PART_BYTES && self.buffer.len() >= MIN_PART_BYTES {
                self.send_part().await?;
            }
            let room = PART_BYTES.saturating_sub(self.buffer.len()).max(1);
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = later;
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    async fn send_part(&mut self) -> anyhow::Result<()> {
        let number = i32::try_from(self.parts.len() + 1)?;
        let body = std::mem::replace(&mut self.buffer, Vec::with_capacity(PART_BYTES));
        let sent = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(sent.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    /// Sends what is left and completes the object; its size in bytes.
    #[tracing::instrument(skip_all, fields(key = %self.key))]
    pub async fn finish(mut self) -> anyhow::Result<u64> {
        if !self.buffer.is_empty() || self.parts.is_empty() {
            self.send_part().await?;
        }
        self.s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.parts)))
                    .build(),
            )
            .send()
            .await?;
        self.finished = true;
        Ok(self.size)
    }

    /// Gives the upload up: S3 drops the parts sent.
    #[tracing::instrument(skip_all, fields(key = %self.key))]
    pub async fn abort(mut self) -> anyhow::Result<()> {
        self.finished = true;
        self.s3
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await?;
        Ok(())
    }
}

impl Drop for MultipartUpload {
    fn drop(&mut self) {
        if !self.finished {
            // Dropped on an error path: abort in the background (best effort; the bucket's
            // lifecycle rule removes what a crash leaves).
            let (s3, bucket, key, id) = (
                self.s3.clone(),
                self.bucket.clone(),
                self.key.clone(),
                self.upload_id.clone(),
            );
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = s3
                        .abort_multipart_upload()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await;
                });
            }
        }
    }
}
