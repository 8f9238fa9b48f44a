//! `media-processor` (S3 ObjectCreated on `uploads/…/original`): each record's object is
//! processed by `shared::services::cms::process::object` (what the bytes are; accepted bytes
//! copied to the public `media/` key with thumbnails; rejected and removed when they are not
//! what was declared or cannot be read or processed). Every record is processed; when one met a
//! passing failure (S3 or the database unreachable) the invocation fails after the others, and
//! Lambda's asynchronous retries (then the dead-letter queue) take over: a record processed
//! twice changes nothing the second time.
use serde::Deserialize;
use serde_json::{Value, json};
use shared::adapters::media_store::MediaStore;
use shared::config::{ConfigError, DatabaseSettings, Env, MediaSettings};
use shared::services::cms::process::{self, Outcome};
use sqlx::PgPool;

/// The parts of an S3 event the processor reads: each record's bucket and key. (Read leniently:
/// a record's other fields, such as its time format, never fail the event.)
#[derive(Debug, Deserialize)]
pub struct S3Event {
    #[serde(rename = "Records", default)]
    pub records: Vec<S3Record>,
}

#[derive(Debug, Deserialize)]
pub struct S3Record {
    pub s3: S3Entity,
}

#[derive(Debug, Deserialize)]
pub struct S3Entity {
    pub bucket: S3Bucket,
    pub object: S3Object,
}

#[derive(Debug, Deserialize)]
pub struct S3Bucket {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct S3Object {
    pub key: String,
}

pub struct Processor {
    pub db: PgPool,
    pub store: MediaStore,
}

/// An S3 event key as the object's key (`+` is a space, `%XX` a byte).
pub fn object_key(raw: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", raw.replace('&', "%26").replace('=', "%3D")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The function's configuration, read once at start.
pub struct Config {
    pub db: DatabaseSettings,
    pub media: MediaSettings,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            db: DatabaseSettings::app(env)?,
            media: MediaSettings::from(env)?,
        })
    }
}

impl Processor {
    pub fn build(config: &Config, aws: &aws_config::SdkConfig) -> anyhow::Result<Self> {
        Ok(Self {
            db: config.db.pool()?,
            store: MediaStore::new(aws, &config.media),
        })
    }

    /// One S3 event: every record of this bucket's objects, in order. `Err` when a record met
    /// a passing failure (the first one; each is logged), after the other records were done.
    pub async fn handle(&self, payload: Value) -> Result<Value, lambda_runtime::Error> {
        let event: S3Event = serde_json::from_value(payload)?;
        let mut outcomes = Vec::new();
        let mut failure = None;
        for record in event.records {
            let bucket = record.s3.bucket.name.as_str();
            if bucket != self.store.bucket {
                tracing::warn!(bucket, "event of another bucket ignored");
                continue;
            }
            let key = object_key(&record.s3.object.key);
            // Boxed: processing nests the S3 and database futures deep (the layout query's depth limit).
            let outcome = match Box::pin(process::object(&self.db, &self.store, &key)).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    tracing::error!(
                        key,
                        error = format!("{e:#}"),
                        "object not processed; the event is retried"
                    );
                    failure.get_or_insert(e);
                    continue;
                }
            };
            outcomes.push(json!({"key": key, "outcome": match outcome {
                Outcome::Ready => "ready".to_owned(),
                Outcome::Rejected(why) => format!("rejected: {why}"),
                Outcome::Unchanged => "unchanged".to_owned(),
                Outcome::Orphan => "orphan removed".to_owned(),
                Outcome::Gone => "gone".to_owned(),
            }}));
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(json!({ "processed": outcomes })),
        }
    }
}
