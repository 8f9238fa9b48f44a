//! The Stripe webhook inbox: verify the signature on the exact raw bytes, record the event
//! durably (a DynamoDB conditional write on its id, with the raw body and headers) before
//! anything else, hand it on to the billing queue (SQS), and only then acknowledge.
//!
//! A crash or retry at any point loses nothing and applies nothing twice: a duplicate delivery
//! finds the record; if the record was never marked forwarded (the hand-off failed or the
//! sandbox died after the write), it is handed on again — the consumer is idempotent on the
//! event id — and only then acknowledged.
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Deserialize;
use std::time::Duration;

use crate::adapters::queue::Queue;
use crate::domain::signature::stripe::{self, SignatureError};

/// How long a received event is kept in the inbox table (DynamoDB TTL).
const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// The largest event taken: the raw body is kept in one DynamoDB item (400 KB at most, with
/// the headers and keys beside it).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct InboxConfig {
    /// Every active endpoint secret (`whsec_...`); more than one during a rotation.
    pub secrets: Vec<String>,
    pub tolerance_secs: i64,
    pub table: String,
    pub queue_url: String,
}

/// The secrets are never printed: only how many there are.
impl std::fmt::Debug for InboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxConfig")
            .field("secrets", &format_args!("[{} redacted]", self.secrets.len()))
            .field("tolerance_secs", &self.tolerance_secs)
            .field("table", &self.table)
            .field("queue_url", &self.queue_url)
            .finish()
    }
}

/// The envelope of a Stripe event: just what the inbox needs, read leniently.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub livemode: Option<bool>,
}

impl Envelope {
    /// `None` when the body is not a Stripe event envelope (no string id and type).
    pub fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Envelope>(body).ok().filter(|e| {
            e.id.starts_with("evt_") && e.id.len() <= 255 && !e.event_type.is_empty() && e.event_type.len() <= 255
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Recorded and handed on now.
    Accepted { event_id: String },
    /// Already recorded and handed on: nothing more happened.
    Duplicate { event_id: String },
    /// Signed, but not an event we can read: kept for inspection, not handed on.
    Unreadable { key: String },
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The record or the hand-off failed: answer 5xx so Stripe retries.
    #[error("the event could not be recorded or handed on: {0}")]
    Unavailable(String),
}

pub struct StripeInbox {
    config: InboxConfig,
    dynamo: aws_sdk_dynamodb::Client,
    queue: Queue<BillingMessage>,
}

/// What the billing queue carries: which recorded event to apply (billing-sync reads its body
/// from the inbox table).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct BillingMessage {
    pub event_id: String,
    #[serde(rename = "type", default)]
    pub event_type: String,
}

enum Record {
    New,
    Exists { forwarded: bool },
}

fn unavailable(e: impl std::fmt::Display) -> InboxError {
    InboxError::Unavailable(e.to_string())
}

impl StripeInbox {
    pub fn new(config: InboxConfig, dynamo: aws_sdk_dynamodb::Client, sqs: aws_sdk_sqs::Client) -> Self {
        let queue = Queue::new(&sqs, &config.queue_url);
        Self { config, dynamo, queue }
    }

    /// Handles one delivery. `signature` is the `Stripe-Signature` header; `now` Unix seconds.
    #[tracing::instrument(skip_all)]
    pub async fn receive(&self, signature: Option<&str>, body: &[u8], now: i64) -> Result<Received, InboxError> {
        let secrets: Vec<&str> = self.config.secrets.iter().map(String::as_str).collect();
        stripe::verify(
            signature.ok_or(SignatureError::Malformed)?,
            body,
            &secrets,
            now,
            self.config.tolerance_secs,
        )?;
        let Some(envelope) = Envelope::parse(body) else {
            let key = format!("unreadable:{}", hex::encode(crate::domain::secret::sha256_bytes(body)));
            tracing::error!(alert = "stripe_unreadable_event", key = %key, bytes = body.len(), "signed Stripe delivery is not a readable event; kept for inspection");
            self.record(&key, "unreadable", None, body, signature, now).await?;
            return Ok(Received::Unreadable { key });
        };
        let event_id = envelope.id.clone();
        tracing::Span::current().record("event_id", event_id.as_str());
        match self
            .record(&event_id, &envelope.event_type, Some(&envelope), body, signature, now)
            .await?
        {
            Record::Exists { forwarded: true } => {
                tracing::info!(event_id = %event_id, event_type = %envelope.event_type, "duplicate delivery");
                Ok(Received::Duplicate { event_id })
            }
            Record::New | Record::Exists { forwarded: false } => {
                self.hand_off(&envelope).await?;
                self.mark_forwarded(&event_id).await?;
                tracing::info!(event_id = %event_id, event_type = %envelope.event_type, "recorded and handed on");
                Ok(Received::Accepted { event_id })
            }
        }
    }

    async fn record(
        &self,
        key: &str,
        event_type: &str,
        envelope: Option<&Envelope>,
        body: &[u8],
        signature: Option<&str>,
        now: i64,
    ) -> Result<Record, InboxError> {
        let expires = now.saturating_add(i64::try_from(RETENTION.as_secs()).unwrap_or(i64::MAX));
        let mut put = self
            .dynamo
            .put_item()
            .table_name(&self.config.table)
            .item("event_id", AttributeValue::S(key.to_owned()))
            .item("type", AttributeValue::S(event_type.to_owned()))
            .item("raw_body", AttributeValue::B(Blob::new(body.to_vec())))
            .item(
                "stripe_signature",
                AttributeValue::S(signature.unwrap_or_default().to_owned()),
            )
            .item("received_at", AttributeValue::N(now.to_string()))
            .item("expires_at", AttributeValue::N(expires.to_string()))
            .item(
                "status",
                AttributeValue::S(if envelope.is_some() { "received" } else { "unreadable" }.to_owned()),
            )
            .condition_expression("attribute_not_exists(event_id)");
        if let Some(e) = envelope {
            if let Some(v) = &e.api_version {
                put = put.item("api_version", AttributeValue::S(v.clone()));
            }
            if let Some(c) = e.created {
                put = put.item("created", AttributeValue::N(c.to_string()));
            }
            if let Some(l) = e.livemode {
                put = put.item("livemode", AttributeValue::Bool(l));
            }
        }
        let put = put.return_values_on_condition_check_failure(
            aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
        );
        match put.send().await {
            Ok(_) => Ok(Record::New),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // The existing record comes back with the refusal (one round trip); read it
                // when the store does not send it.
                let returned = match err.as_service_error() {
                    Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(e)) => e
                        .item()
                        .and_then(|i| i.get("status"))
                        .and_then(|s| s.as_s().ok())
                        .cloned(),
                    _ => None,
                };
                let status = match returned {
                    Some(status) => Some(status),
                    None => self
                        .dynamo
                        .get_item()
                        .table_name(&self.config.table)
                        .key("event_id", AttributeValue::S(key.to_owned()))
                        .consistent_read(true)
                        .send()
                        .await
                        .map_err(unavailable)?
                        .item()
                        .and_then(|i| i.get("status"))
                        .and_then(|s| s.as_s().ok())
                        .cloned(),
                };
                Ok(Record::Exists {
                    forwarded: status.as_deref() != Some("received"),
                })
            }
            Err(err) => Err(unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(err))),
        }
    }

    async fn hand_off(&self, envelope: &Envelope) -> Result<(), InboxError> {
        let message = BillingMessage {
            event_id: envelope.id.clone(),
            event_type: envelope.event_type.clone(),
        };
        self.queue
            .send_with(&message, &[("event_type", &envelope.event_type)])
            .await
            .map_err(unavailable)
    }

    async fn mark_forwarded(&self, key: &str) -> Result<(), InboxError> {
        self.dynamo
            .update_item()
            .table_name(&self.config.table)
            .key("event_id", AttributeValue::S(key.to_owned()))
            .update_expression("SET #s = :f")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":f", AttributeValue::S("forwarded".to_owned()))
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}

/// The raw body of a recorded event (billing-sync reads what the webhook recorded; the queue
/// message carries only the id). `None` when the record is missing or expired.
pub async fn load_raw(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    event_id: &str,
) -> Result<Option<Vec<u8>>, InboxError> {
    let item = dynamo
        .get_item()
        .table_name(table)
        .key("event_id", AttributeValue::S(event_id.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    Ok(item
        .item()
        .and_then(|i| i.get("raw_body"))
        .and_then(|b| b.as_b().ok())
        .map(|b| b.as_ref().to_vec()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_config_never_prints_its_secrets() {
        let config = super::InboxConfig {
            secrets: vec!["whsec_topsecret".into(), "whsec_other".into()],
            tolerance_secs: 300,
            table: "t".into(),
            queue_url: "q".into(),
        };
        let printed = format!("{config:?} {config:#?}");
        assert!(
            !printed.contains("topsecret") && !printed.contains("whsec_"),
            "{printed}"
        );
        assert!(printed.contains("2 redacted"));
    }
}
