//! Replaying a dead-letter queue: each message is sent to the target queue (with its
//! attributes) and only then deleted from the DLQ, so a crash in between duplicates a message
//! (the consumers are idempotent) and never loses one.
use aws_sdk_sqs::types::MessageSystemAttributeName;

use crate::adapters::queue::Queue;

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub dry_run: bool,
    /// At most this many messages (a safety valve).
    pub max: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            max: 10_000,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub moved: usize,
}

fn sqs_err<E: std::error::Error + 'static>(e: aws_sdk_sqs::error::SdkError<E>) -> anyhow::Error {
    anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e))
}

/// Moves up to `options.max` messages from `from` to `to`; `seen` is called for each.
#[tracing::instrument(skip_all, fields(from = %from, to = %to))]
pub async fn replay(
    sqs: &aws_sdk_sqs::Client,
    from: &str,
    to: &str,
    options: &ReplayOptions,
    mut seen: impl FnMut(&str, &str),
) -> anyhow::Result<ReplayReport> {
    let mut report = ReplayReport::default();
    let target = Queue::<()>::new(sqs, to);
    // A dry run keeps what it saw invisible until it ends (so it sees each message once), then
    // makes it visible again.
    let mut held: Vec<String> = Vec::new();
    while report.moved < options.max {
        let batch = sqs
            .receive_message()
            .queue_url(from)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            // Long enough to send and delete (or, dry, to finish listing).
            .visibility_timeout(120)
            .send()
            .await
            .map_err(sqs_err)?;
        let messages = batch.messages();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            if report.moved >= options.max {
                break;
            }
            let id = message.message_id().unwrap_or_default();
            let body = message.body().unwrap_or_default();
            seen(id, body);
            report.moved += 1;
            if options.dry_run {
                held.extend(message.receipt_handle().map(str::to_owned));
                continue;
            }
            target.send_raw(body, message.message_attributes().cloned()).await?;
            if let Some(handle) = message.receipt_handle() {
                sqs.delete_message()
                    .queue_url(from)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .map_err(sqs_err)?;
            }
        }
    }
    for handle in held {
        sqs.change_message_visibility()
            .queue_url(from)
            .receipt_handle(handle)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(sqs_err)?;
    }
    Ok(report)
}
