//! The only code that talks to the outside world.
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(all(feature = "s3", feature = "sqs"))]
pub mod crm_files;
pub mod jwt;
pub mod keys;
#[cfg(feature = "kms")]
pub mod kms;
#[cfg(feature = "s3")]
pub mod media_store;
pub mod pg;
#[cfg(feature = "sqs")]
pub mod queue;
#[cfg(feature = "sqs")]
pub mod queue_replay;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "s3")]
pub mod s3_upload;
pub mod stripe_api;
