//! The one way a message goes on an SQS queue: typed (`Queue<T>` sends `T` as JSON), one at a
//! time or in batches of up to 10, with message attributes, and the invocation's X-Ray trace
//! header carried along (`AWSTraceHeader`), so one request can be followed into the worker
//! that takes its message. A send that fails is an error the caller answers (a 503, a retry),
//! never a log line.
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
    SendMessageBatchRequestEntry,
};
use serde::Serialize;
use std::collections::HashMap;
use std::marker::PhantomData;

/// SQS takes at most this many messages per batch request.
pub const MAX_BATCH: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the message could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the queue did not take the message: {0}")]
    Send(String),
}

/// A queue of `T` messages.
pub struct Queue<T> {
    sqs: aws_sdk_sqs::Client,
    url: String,
    message: PhantomData<fn(&T)>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self {
            sqs: self.sqs.clone(),
            url: self.url.clone(),
            message: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("url", &self.url).finish()
    }
}

/// The X-Ray trace header of the running invocation (the Lambda runtime sets it per request).
fn trace_header() -> Option<MessageSystemAttributeValue> {
    let trace = std::env::var("_X_AMZN_TRACE_ID").ok().filter(|t| !t.is_empty())?;
    MessageSystemAttributeValue::builder()
        .data_type("String")
        .string_value(trace)
        .build()
        .ok()
}

fn attribute(value: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| QueueError::Send(e.to_string()))
}

fn sdk_error<E: std::error::Error + 'static>(e: aws_sdk_sqs::error::SdkError<E>) -> QueueError {
    QueueError::Send(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
}

impl<T> Queue<T> {
    pub fn new(sqs: &aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            sqs: sqs.clone(),
            url: url.into(),
            message: PhantomData,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The SDK client (tests and the DLQ replay read the queue with it).
    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.sqs
    }

    /// Sends a body exactly as given, with its attributes (the DLQ replay moves messages
    /// unchanged; everything else sends typed messages).
    #[tracing::instrument(skip_all, fields(queue = %self.url))]
    pub async fn send_raw(
        &self,
        body: &str,
        attributes: Option<HashMap<String, MessageAttributeValue>>,
    ) -> Result<(), QueueError> {
        // Boxed: the SDK's futures are deep, and callers' own futures nest this one.
        Box::pin(
            self.sqs
                .send_message()
                .queue_url(&self.url)
                .message_body(body)
                .set_message_attributes(attributes)
                .set_message_system_attributes(
                    trace_header().map(|t| HashMap::from([(MessageSystemAttributeNameForSends::AwsTraceHeader, t)])),
                )
                .send(),
        )
        .await
        .map_err(sdk_error)?;
        Ok(())
    }
}

impl<T: Serialize> Queue<T> {
    /// Sends one message.
    pub async fn send(&self, message: &T) -> Result<(), QueueError> {
        self.send_with(message, &[]).await
    }

    /// Sends one message with string attributes (`name`, `value`).
    pub async fn send_with(&self, message: &T, attributes: &[(&str, &str)]) -> Result<(), QueueError> {
        let body = serde_json::to_string(message)?;
        let attributes = attributes
            .iter()
            .map(|(k, v)| Ok(((*k).to_owned(), attribute(v)?)))
            .collect::<Result<HashMap<_, _>, QueueError>>()?;
        self.send_raw(&body, (!attributes.is_empty()).then_some(attributes))
            .await
    }

    /// Sends one message that becomes visible after `delay` (SQS takes at most 15 minutes;
    /// longer is cut to that).
    #[tracing::instrument(skip_all, fields(queue = %self.url, delay_s = delay.as_secs()))]
    pub async fn send_delayed(&self, message: &T, delay: std::time::Duration) -> Result<(), QueueError> {
        let body = serde_json::to_string(message)?;
        let seconds = i32::try_from(delay.as_secs().min(900)).unwrap_or(900);
        Box::pin(
            self.sqs
                .send_message()
                .queue_url(&self.url)
                .message_body(body)
                .delay_seconds(seconds)
                .set_message_system_attributes(
                    trace_header().map(|t| HashMap::from([(MessageSystemAttributeNameForSends::AwsTraceHeader, t)])),
                )
                .send(),
        )
        .await
        .map_err(sdk_error)?;
        Ok(())
    }

    /// Sends messages in batch requests of up to 10; an entry SQS refuses fails the call
    /// (the entries before it were sent: the consumers are idempotent).
    #[tracing::instrument(skip_all, fields(queue = %self.url, messages = messages.len()))]
    pub async fn send_batch(&self, messages: &[T]) -> Result<(), QueueError> {
        let trace = trace_header();
        for chunk in messages.chunks(MAX_BATCH) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, message) in chunk.iter().enumerate() {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(serde_json::to_string(message)?);
                if let Some(trace) = &trace {
                    entry = entry
                        .message_system_attributes(MessageSystemAttributeNameForSends::AwsTraceHeader, trace.clone());
                }
                entries.push(entry.build().map_err(|e| QueueError::Send(e.to_string()))?);
            }
            let sent = Box::pin(
                self.sqs
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send(),
            )
            .await
            .map_err(sdk_error)?;
            if let Some(failed) = sent.failed().first() {
                return Err(QueueError::Send(format!(
                    "{} of {} messages refused: {} {}",
                    sent.failed().len(),
                    chunk.len(),
                    failed.code(),
                    failed.message().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}
