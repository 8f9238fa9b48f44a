//! Lambda glue for event functions: the one SQS batch runner.
#[cfg(feature = "sqs")]
mod sqs_batch;
#[cfg(feature = "sqs")]
pub use sqs_batch::{SqsBatchResponse, SqsEvent, run_batch};
