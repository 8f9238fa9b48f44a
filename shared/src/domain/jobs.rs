//! What the CRM jobs queue carries and what an uploaded file's start looks like: plain data
//! shared by the CRM services and the bucket/queue adapter (adapters never import services).
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Import,
    Export,
}

/// One queue message: run this job of this tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub kind: JobKind,
    pub tenant_id: Uuid,
    pub id: Uuid,
}

/// The start of an uploaded file, as the bucket gave it.
pub struct FileHead {
    /// The object the job reads (the upload's copy of its own).
    pub object_key: String,
    pub size: u64,
    pub bytes: Vec<u8>,
}
