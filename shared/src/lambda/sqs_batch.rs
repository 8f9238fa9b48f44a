//! The one SQS batch runner (partial batch responses): each message of the batch is decoded as
//! `T` and handed to the handler, in order, under a span naming its message id; a message that
//! does not decode or whose handler fails is reported in `batchItemFailures`, so SQS retries
//! it alone and, after the queue's `maxReceiveCount`, sets it aside in the DLQ — with its
//! reason in the log. The others are acknowledged. Nothing is dropped silently.
use serde::de::DeserializeOwned;
use std::future::Future;
use tracing::Instrument;

pub use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

/// Runs `handle` on every message of `event`; `what` names the messages in logs
/// (`"billing event"`, `"CRM job"`).
pub async fn run_batch<T, F, Fut>(event: SqsEvent, what: &'static str, handle: F) -> SqsBatchResponse
where
    T: DeserializeOwned,
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!("message", message_id = %id, kind = what);
        let outcome = async {
            let message: T = serde_json::from_str(record.body.as_deref().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("not a {what} message: {e}"))?;
            // Boxed: handlers' futures are deep (the SDKs', the database's), and this nests them.
            Box::pin(handle(message)).await
        }
        .instrument(span.clone())
        .await;
        if let Err(e) = outcome {
            span.in_scope(|| {
                tracing::error!(error = %format!("{e:#}"), "{what} failed; SQS retries it, then sets it aside in the DLQ");
            });
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsMessage;

    fn event(bodies: &[&str]) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let mut m = SqsMessage::default();
                m.message_id = Some(format!("m{i}"));
                m.body = Some((*body).to_owned());
                m
            })
            .collect();
        event
    }

    #[derive(serde::Deserialize)]
    struct Job {
        n: u32,
    }

    #[tokio::test]
    async fn failures_and_undecodable_messages_are_reported_alone_and_the_rest_run() {
        let seen = std::sync::Mutex::new(Vec::new());
        let response = run_batch(
            event(&[r#"{"n":1}"#, "not json", r#"{"n":2}"#, r#"{"n":3}"#]),
            "test job",
            |job: Job| {
                seen.lock().unwrap().push(job.n);
                async move {
                    if job.n == 2 {
                        anyhow::bail!("job 2 fails")
                    }
                    Ok(())
                }
            },
        )
        .await;
        let failed: Vec<String> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        assert_eq!(failed, ["m1", "m2"]);
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3], "in order, none skipped");
    }
}
