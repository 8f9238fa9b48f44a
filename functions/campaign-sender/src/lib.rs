//! `campaign-sender`: sends email campaigns exactly once (rules in
//! `shared::services::marketing::sender` and `campaigns::delivery`).
//!
//! - SQS (`CampaignSendQueue`, `{tenant_id, batch_id}`): one batch of one campaign, paced per
//!   tenant and provider, rendered once, handed to SendGrid or Mailgun in one request, its
//!   outcome recorded. A message whose batch was already claimed or sent changes nothing (SQS
//!   redeliveries, the schedule queueing it again); a database failure is a batch item failure,
//!   so SQS retries it (then the DLQ).
//! - Schedule (every minute): starts due campaigns, decides due A/B tests, marks batches whose
//!   lease ran out as unknown and settles them from the provider's events, queues due batches.
use serde_json::Value;
use shared::adapters::queue::Queue;
use shared::config::{ConfigError, ConnectorSettings, DatabaseSettings, Env};
use shared::lambda::{SqsBatchResponse, SqsEvent, run_batch};
use shared::services::connectors::Connectors;
use shared::services::marketing::sender::{SendMessage, Sender, SenderOptions, Tick};
use shared::services::marketing::unsubscribe::LinkKeys;

/// The function's configuration, read once at start.
pub struct Config {
    pub db: DatabaseSettings,
    pub connectors: ConnectorSettings,
    /// `CAMPAIGN_SEND_QUEUE_URL`: the batches to send.
    pub queue_url: String,
    /// `MARKETING_LINK_KEYS`: the keys unsubscribe links are signed with (current first).
    pub links: LinkKeys,
    /// `PUBLIC_API_BASE_URL`: where the public unsubscribe route answers.
    pub public_base: String,
    /// `MARKETING_SEND_RATE`: recipients a second per tenant and provider (200).
    pub rate: u32,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let links = LinkKeys::parse(&env.required("MARKETING_LINK_KEYS")?).map_err(|reason| ConfigError::Invalid {
            name: "MARKETING_LINK_KEYS",
            reason,
        })?;
        let public_base = env.required("PUBLIC_API_BASE_URL")?;
        if !(public_base.starts_with("https://") || public_base.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                name: "PUBLIC_API_BASE_URL",
                reason: "must be an http(s) URL".into(),
            });
        }
        let rate = env.parsed_or("MARKETING_SEND_RATE", SenderOptions::default().rate)?;
        if rate == 0 {
            return Err(ConfigError::Invalid {
                name: "MARKETING_SEND_RATE",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            db: DatabaseSettings::app(env)?,
            connectors: ConnectorSettings::from(env)?,
            queue_url: env.required("CAMPAIGN_SEND_QUEUE_URL")?,
            links,
            public_base: public_base.trim_end_matches('/').to_owned(),
            rate,
        })
    }
}

pub struct Worker {
    pub sender: Sender,
}

impl Worker {
    pub fn build(config: &Config, aws: &aws_config::SdkConfig) -> anyhow::Result<Self> {
        let db = config.db.pool()?;
        Ok(Self {
            sender: Sender {
                db: db.clone(),
                connectors: Connectors::build(db, &config.connectors, aws)?,
                links: config.links.clone(),
                public_base: config.public_base.clone(),
                queue: Queue::new(&shared::adapters::aws::sqs(aws), config.queue_url.clone()),
                options: SenderOptions {
                    rate: config.rate,
                    ..SenderOptions::default()
                },
            },
        })
    }

    /// An SQS batch (`Records`) or the schedule's event (anything else).
    pub async fn handle(&self, payload: Value) -> Result<Value, lambda_runtime::Error> {
        if payload.get("Records").is_some() {
            let event: SqsEvent = serde_json::from_value(payload)?;
            Ok(serde_json::to_value(self.handle_sqs(event).await)?)
        } else {
            Ok(serde_json::to_value(self.tick().await?)?)
        }
    }

    pub async fn handle_sqs(&self, event: SqsEvent) -> SqsBatchResponse {
        run_batch(event, "campaign-sender", |message: SendMessage| async move {
            let sent = Box::pin(self.sender.send(&message)).await?;
            tracing::info!(tenant_id = %message.tenant_id, batch_id = %message.batch_id, ?sent, "batch handled");
            anyhow::Ok(())
        })
        .await
    }

    pub async fn tick(&self) -> anyhow::Result<Tick> {
        let tick = self.sender.tick(chrono::Utc::now()).await?;
        tracing::info!(?tick, "tick");
        Ok(tick)
    }
}
