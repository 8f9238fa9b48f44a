//! The campaign sender (the `campaign-sender` function drives it): the schedule's tick and the
//! sending of one queued batch, over the campaign tables' exactly-once steps
//! (`campaigns::delivery`: claim, record, unknown, resolve).
//!
//! One batch, one provider request, tried once:
//! 1. **Pace.** A tenant's provider takes at most `rate` recipients a second from this portal
//!    (`marketing_send_pace`, one row per tenant and provider; the provider's own `Retry-After`
//!    pushes it further). A batch whose turn has not come is queued again with the delay and
//!    nothing else changes.
//! 2. **Claim** (`delivery::claim_batch`): pending → sending with a lease; a redelivered or
//!    duplicate message finds nothing to claim.
//! 3. **Render once per batch.** The frozen template is rendered once with each recipient's
//!    own values as substitution tokens (`render::BatchTemplate`); the provider fills them in
//!    per recipient. Recipients a template treats differently (it branches on their fields)
//!    are split into batches of their own before anything is sent, so every request is still
//!    one batch, recorded as one.
//! 4. **Send once** with our recipient ids on every message, `List-Unsubscribe` (a signed
//!    one-click link, `unsubscribe`) and `List-Unsubscribe-Post` per recipient.
//! 5. **Record** what the provider said: accepted → sent; 429 → pending again after its
//!    `Retry-After` (capped), nothing dropped; an account-level refusal (bad key, suspended
//!    account) → pending again, and after [`SenderOptions::refusals_before_pause`] in a row the
//!    campaign pauses with the provider's words; a refusal of this batch's content → split
//!    into single recipients, and a single recipient refused is failed with the reason; no
//!    answer while the request may have gone out → left `sending`: when its lease runs out the
//!    tick marks it `unknown`, and settles it from the provider's events (they carry our ids).
//!
//! The tick (every minute): starts due campaigns, decides due A/B tests, marks expired leases
//! unknown, settles unknown batches, queues due batches, and sends the test sends waiting
//! (`campaigns::test_send`: each taken before its one request, so never sent twice).
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::campaigns::delivery::{self, Claim, ClaimedBatch, Due};
use super::campaigns::lifecycle;
use super::campaigns::test_send::{self, TestOutcome};
use super::render::{self, RenderContext, TenantVars};
use super::unsubscribe::LinkKeys;
use crate::adapters::pg;
use crate::adapters::queue::Queue;
use crate::domain::{DomainError, Scope};
use crate::services::connectors::Connectors;
use crate::services::providers::email::{BatchRecipient, EmailProvider, Mailbox, OutboundBatch, SendOutcome};

/// The send queue's message: one batch of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessage {
    pub tenant_id: Uuid,
    pub batch_id: Uuid,
}

/// The longest SQS delays a message (15 minutes); a longer wait is left to the tick.
const MAX_QUEUE_DELAY: Duration = Duration::from_secs(900);

#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// Recipients a second, per tenant and provider (`MARKETING_SEND_RATE`, default 200).
    pub rate: u32,
    /// How long a claimed batch is ours (longer than the function's timeout).
    pub lease: Duration,
    /// Account-level refusals in a row before the campaign pauses.
    pub refusals_before_pause: i32,
    /// How long a batch handed to the queue is not queued again.
    pub queue_hold: Duration,
    /// How long an unknown batch waits for its events before the provider's silence counts as
    /// "never taken" (only when the tenant's event webhook is known to work).
    pub unknown_grace: Duration,
    /// The most pieces of work of each kind one tick takes.
    pub tick_limit: i32,
}

impl Default for SenderOptions {
    fn default() -> Self {
        Self {
            rate: 200,
            lease: Duration::from_secs(180),
            refusals_before_pause: 3,
            queue_hold: Duration::from_secs(300),
            unknown_grace: Duration::from_secs(3600),
            tick_limit: 500,
        }
    }
}

/// What became of one queued batch (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Accepted by the provider: this many recipients.
    Accepted(usize),
    /// Not its turn, or the provider asked to wait: queued again after this long.
    Later(Duration),
    /// Split off: the recipients the template renders differently, or a refused batch's
    /// recipients, into batches of their own (this many new batches).
    Split(usize),
    /// Refused for good (its recipients failed with the reason).
    Failed(String),
    /// Refused for the account; `true`: the campaign paused.
    Refused { paused: bool },
    /// No answer while it may have gone out: left for the events to settle.
    Unknown,
    /// Nothing to do (claimed already, done, the campaign paused or over).
    Nothing,
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tick {
    pub started: usize,
    pub decided: usize,
    pub expired: usize,
    pub settled: usize,
    pub queued: usize,
    /// Test sends handed to the provider (sent, or failed with the reason).
    pub tests: usize,
}

/// The most test sends one tick takes, and the longest it spends on them (the function's
/// timeout is 120 s and one provider call may take its 10 s timeout).
const TESTS_PER_TICK: usize = 20;
const TEST_BUDGET: Duration = Duration::from_secs(40);

pub struct Sender {
    pub db: PgPool,
    pub connectors: Connectors,
    pub links: LinkKeys,
    /// Where the public routes answer (`…/public/unsubscribe/{token}`), without a trailing `/`.
    pub public_base: String,
    pub queue: Queue<SendMessage>,
    pub options: SenderOptions,
}

fn scope(tenant_id: Uuid, what: &str) -> Scope {
    Scope::worker(tenant_id, "campaign-sender", format!("{what}-{}", Uuid::now_v7()))
}

/// What a test send's one request came to: only a 429 is tried again (after the provider's
/// wait); anything else that did not go out fails with the reason, and so does a request that
/// may have gone out (a test is never sent twice).
fn test_outcome(provider: EmailProvider, outcome: SendOutcome, now: DateTime<Utc>) -> TestOutcome {
    match outcome {
        SendOutcome::Accepted { provider_id } => TestOutcome::Sent {
            provider_message_id: provider_id,
        },
        SendOutcome::RateLimited { retry_after } => {
            TestOutcome::Later(now + chrono::Duration::from_std(retry_after).unwrap_or(chrono::Duration::minutes(1)))
        }
        SendOutcome::Refused { reason, .. } => TestOutcome::Failed(format!("{} refused it: {reason}", provider.name())),
        SendOutcome::Unavailable {
            reason,
            maybe_sent: true,
        } => TestOutcome::Failed(format!(
            "{} did not answer ({reason}): the test may or may not have arrived",
            provider.name()
        )),
        SendOutcome::Unavailable {
            reason,
            maybe_sent: false,
        } => TestOutcome::Failed(format!("{} could not be reached: {reason}", provider.name())),
        SendOutcome::Invalid(e) => TestOutcome::Failed(format!("the message cannot be sent: {e}")),
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Sender {
    /// The links of one recipient: unsubscribe and view in browser.
    fn links_of(&self, tenant_id: Uuid, recipient_id: Uuid) -> (String, String) {
        let token = self.links.token(tenant_id, recipient_id);
        (
            format!("{}/public/unsubscribe/{token}", self.public_base),
            format!("{}/public/view/{token}", self.public_base),
        )
    }

    /// Takes the tenant's pace for `recipients`: `None` when the batch may go now, else how
    /// long until its turn.
    async fn take_pace(
        &self,
        scope: &Scope,
        provider: EmailProvider,
        recipients: usize,
    ) -> Result<Option<Duration>, DomainError> {
        let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
        let cost = recipients as f64 / f64::from(self.options.rate.max(1));
        let mut tx = pg::begin(&self.db, scope).await?;
        sqlx::query("insert into marketing_send_pace (tenant_id, provider) values ($1, $2) on conflict do nothing")
            .bind(tenant_id)
            .bind(provider.kind().as_str())
            .execute(&mut *tx)
            .await?;
        // Within a second of its turn counts as its turn (the queue's delays are whole seconds).
        let taken: Option<DateTime<Utc>> = sqlx::query_scalar(
            "update marketing_send_pace set next_at = greatest(next_at, now()) + make_interval(secs => $3) \
             where tenant_id = $1 and provider = $2 and next_at <= now() + interval '1 second' returning next_at",
        )
        .bind(tenant_id)
        .bind(provider.kind().as_str())
        .bind(cost)
        .fetch_optional(&mut *tx)
        .await?;
        let wait = if taken.is_some() {
            None
        } else {
            let next: DateTime<Utc> =
                sqlx::query_scalar("select next_at from marketing_send_pace where tenant_id = $1 and provider = $2")
                    .bind(tenant_id)
                    .bind(provider.kind().as_str())
                    .fetch_one(&mut *tx)
                    .await?;
            Some((next - Utc::now()).to_std().unwrap_or(Duration::from_secs(1)))
        };
        tx.commit().await?;
        Ok(wait)
    }

    /// The provider's own pace: nothing of this tenant goes before `until`.
    async fn hold_pace(&self, scope: &Scope, provider: EmailProvider, wait: Duration) -> Result<(), DomainError> {
        let mut tx = pg::begin(&self.db, scope).await?;
        sqlx::query(
            "update marketing_send_pace set next_at = greatest(next_at, now() + make_interval(secs => $3)) \
             where tenant_id = $1 and provider = $2",
        )
        .bind(scope.tenant_id())
        .bind(provider.kind().as_str())
        .bind(seconds(wait))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts an account-level refusal; the count after it.
    async fn refused(&self, scope: &Scope, provider: EmailProvider, reason: &str) -> Result<i32, DomainError> {
        let mut tx = pg::begin(&self.db, scope).await?;
        let n: i32 = sqlx::query_scalar(
            "update marketing_send_pace set refusals = refusals + 1, last_reason = left($3, 1000) \
             where tenant_id = $1 and provider = $2 returning refusals",
        )
        .bind(scope.tenant_id())
        .bind(provider.kind().as_str())
        .bind(reason)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn accepted_pace(&self, scope: &Scope, provider: EmailProvider) -> Result<(), DomainError> {
        let mut tx = pg::begin(&self.db, scope).await?;
        sqlx::query(
            "update marketing_send_pace set refusals = 0, last_reason = null \
             where tenant_id = $1 and provider = $2 and refusals > 0",
        )
        .bind(scope.tenant_id())
        .bind(provider.kind().as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The batch's provider and size before a claim (for the pace): `None` when it is not
    /// pending any more.
    async fn peek(&self, scope: &Scope, batch_id: Uuid) -> Result<Option<(EmailProvider, i32)>, DomainError> {
        let mut tx = pg::begin(&self.db, scope).await?;
        let row: Option<(EmailProvider, i32)> = sqlx::query_as(
            "select provider, recipients from marketing_campaign_batches where id = $1 and status = 'pending'",
        )
        .bind(batch_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Queues `message` again after `wait` (at most the queue's 15 minutes; a longer wait is
    /// the tick's, from the batch's `not_before`).
    async fn again(&self, message: &SendMessage, wait: Duration) -> Result<Sent, DomainError> {
        if wait <= MAX_QUEUE_DELAY {
            self.queue
                .send_delayed(message, wait)
                .await
                .map_err(|e| DomainError::Internal(anyhow::anyhow!("{e}")))?;
        }
        Ok(Sent::Later(wait))
    }

    /// Sends one queued batch (see the module's docs).
    #[tracing::instrument(skip_all, fields(tenant_id = %message.tenant_id, batch_id = %message.batch_id))]
    pub async fn send(&self, message: &SendMessage) -> Result<Sent, DomainError> {
        let scope = scope(message.tenant_id, "send");
        let Some((provider, size)) = self.peek(&scope, message.batch_id).await? else {
            return Ok(Sent::Nothing);
        };
        if let Some(wait) = self.take_pace(&scope, provider, size.max(0) as usize).await? {
            return self.again(message, wait).await;
        }
        let lease = chrono::Duration::from_std(self.options.lease).unwrap_or(chrono::Duration::minutes(3));
        let claimed = match delivery::claim_batch(&self.db, &scope, message.batch_id, lease).await? {
            Claim::Ready(claimed) => claimed,
            Claim::Later(at) => {
                let wait = (at - Utc::now()).to_std().unwrap_or(Duration::from_secs(1));
                return self.again(message, wait).await;
            }
            Claim::Nothing => return Ok(Sent::Nothing),
        };
        Box::pin(self.send_claimed(&scope, message, provider, claimed)).await
    }

    async fn send_claimed(
        &self,
        scope: &Scope,
        message: &SendMessage,
        provider: EmailProvider,
        claimed: ClaimedBatch,
    ) -> Result<Sent, DomainError> {
        let batch_id = claimed.batch.id;
        let template = match render::prepare(&claimed.message.source) {
            Ok(t) => t,
            Err(issues) => {
                let reason = format!(
                    "the campaign's template no longer renders: {}",
                    issues.first().map(|i| i.message.as_str()).unwrap_or("unknown issue")
                );
                delivery::record_refused(&self.db, scope, batch_id, &reason, None).await?;
                return Ok(Sent::Failed(reason));
            }
        };
        let tenant = TenantVars {
            name: claimed.message.tenant_name.clone(),
        };
        let contexts: Vec<RenderContext> = claimed
            .recipients
            .iter()
            .map(|r| {
                let (unsubscribe_url, view_in_browser_url) = self.links_of(message.tenant_id, r.id);
                RenderContext {
                    contact: r.contact.clone(),
                    company: r.company.clone(),
                    tenant: tenant.clone(),
                    unsubscribe_url,
                    view_in_browser_url,
                }
            })
            .collect();
        // Recipients the template renders alike share one request; the others go in batches
        // of their own (the first group stays in this one).
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut index: HashMap<render::GroupKey, usize> = HashMap::new();
        for (i, ctx) in contexts.iter().enumerate() {
            let key = template.group_key(ctx);
            let g = *index.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            if let Some(group) = groups.get_mut(g) {
                group.push(i);
            }
        }
        if groups.len() > 1 {
            let moved: Vec<Vec<Uuid>> = groups
                .iter()
                .skip(1)
                .map(|g| {
                    g.iter()
                        .filter_map(|&i| claimed.recipients.get(i).map(|r| r.id))
                        .collect()
                })
                .collect();
            let made = split(&self.db, scope, batch_id, &moved).await?;
            self.queue_new(message.tenant_id, &made).await?;
        }
        let keep: Vec<usize> = groups.into_iter().next().unwrap_or_default();
        let Some(first) = keep.first().and_then(|&i| contexts.get(i)) else {
            return Ok(Sent::Nothing);
        };
        let rendered = match template.render_group(first) {
            Ok(r) => r,
            Err(issues) => {
                let reason = format!(
                    "the email could not be rendered: {}",
                    issues.first().map(|i| i.message.as_str()).unwrap_or("unknown issue")
                );
                delivery::record_refused(&self.db, scope, batch_id, &reason, None).await?;
                return Ok(Sent::Failed(reason));
            }
        };
        let m = &claimed.message;
        let batch = OutboundBatch {
            from: Mailbox::named(m.from_email.clone(), m.from_name.clone()),
            reply_to: m.reply_to.clone().map(Mailbox::new),
            subject: rendered.subject,
            html: rendered.html,
            text: rendered.text,
            recipients: keep
                .iter()
                .filter_map(|&i| Some((claimed.recipients.get(i)?, contexts.get(i)?)))
                .map(|(r, ctx)| BatchRecipient {
                    message_id: r.id,
                    to: match ctx.contact.full_name() {
                        name if name.is_empty() => Mailbox::new(r.email.clone()),
                        name => Mailbox::named(r.email.clone(), name),
                    },
                    substitutions: template.values(ctx),
                    headers: vec![
                        ("List-Unsubscribe".to_owned(), format!("<{}>", ctx.unsubscribe_url)),
                        (
                            "List-Unsubscribe-Post".to_owned(),
                            "List-Unsubscribe=One-Click".to_owned(),
                        ),
                    ],
                })
                .collect(),
            campaign_id: claimed.batch.campaign_id,
            tenant_id: message.tenant_id,
        };
        let Some(creds) = self.connectors.credentials(scope, provider.kind()).await? else {
            let reason = format!(
                "the {} connector was removed: connect it again and resume the campaign",
                provider.name()
            );
            delivery::record_refused(&self.db, scope, batch_id, &reason, Some(Utc::now())).await?;
            delivery::pause_for_provider(&self.db, scope, claimed.batch.campaign_id, &reason).await?;
            return Ok(Sent::Refused { paused: true });
        };
        let outcome = provider.send(&self.connectors, &creds, &batch).await;
        self.record(scope, message, provider, &claimed, batch.recipients.len(), outcome)
            .await
    }

    async fn record(
        &self,
        scope: &Scope,
        message: &SendMessage,
        provider: EmailProvider,
        claimed: &ClaimedBatch,
        recipients: usize,
        outcome: SendOutcome,
    ) -> Result<Sent, DomainError> {
        let batch_id = claimed.batch.id;
        let backoff = |attempts: i32| Duration::from_secs(30u64.saturating_mul(1 << attempts.clamp(0, 5)));
        match outcome {
            SendOutcome::Accepted { provider_id } => {
                delivery::record_accepted(&self.db, scope, batch_id, provider_id.as_deref(), &[]).await?;
                self.accepted_pace(scope, provider).await?;
                Ok(Sent::Accepted(recipients))
            }
            SendOutcome::RateLimited { retry_after } => {
                let at = Utc::now() + chrono::Duration::from_std(retry_after).unwrap_or(chrono::Duration::minutes(1));
                let reason = format!("{} asked to slow down (HTTP 429)", provider.name());
                delivery::record_refused(&self.db, scope, batch_id, &reason, Some(at)).await?;
                self.hold_pace(scope, provider, retry_after).await?;
                self.again(message, retry_after).await
            }
            SendOutcome::Refused {
                reason,
                account_level: true,
                ..
            } => {
                let n = self.refused(scope, provider, &reason).await?;
                let wait = backoff(n);
                let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::minutes(1));
                delivery::record_refused(&self.db, scope, batch_id, &reason, Some(at)).await?;
                if n >= self.options.refusals_before_pause {
                    let reason = format!("{} refused {n} times in a row: {reason}", provider.name());
                    let paused =
                        delivery::pause_for_provider(&self.db, scope, claimed.batch.campaign_id, &reason).await?;
                    return Ok(Sent::Refused { paused });
                }
                self.again(message, wait).await?;
                Ok(Sent::Refused { paused: false })
            }
            SendOutcome::Refused { reason, .. } => self.refuse_content(scope, message, claimed, &reason).await,
            SendOutcome::Invalid(e) => self.refuse_content(scope, message, claimed, &e.to_string()).await,
            SendOutcome::Unavailable {
                reason,
                maybe_sent: false,
            } => {
                let wait = backoff(claimed.batch.attempts);
                let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::minutes(1));
                delivery::record_refused(&self.db, scope, batch_id, &reason, Some(at)).await?;
                self.again(message, wait).await
            }
            SendOutcome::Unavailable {
                reason,
                maybe_sent: true,
            } => {
                tracing::warn!(%reason, "no answer after the request may have gone out: left for its events");
                Ok(Sent::Unknown)
            }
        }
    }

    /// The provider refused this batch's content (or the batch could not be made): each of
    /// its recipients gets a batch of its own, so one bad address fails alone; a single
    /// recipient refused fails with the reason.
    async fn refuse_content(
        &self,
        scope: &Scope,
        message: &SendMessage,
        claimed: &ClaimedBatch,
        reason: &str,
    ) -> Result<Sent, DomainError> {
        let batch_id = claimed.batch.id;
        let ids: Vec<Uuid> = sending_recipients(&self.db, scope, batch_id).await?;
        if ids.len() <= 1 {
            delivery::record_refused(&self.db, scope, batch_id, reason, None).await?;
            return Ok(Sent::Failed(reason.to_owned()));
        }
        let moved: Vec<Vec<Uuid>> = ids.iter().skip(1).map(|id| vec![*id]).collect();
        let made = split(&self.db, scope, batch_id, &moved).await?;
        delivery::record_refused(&self.db, scope, batch_id, reason, Some(Utc::now())).await?;
        self.queue_new(message.tenant_id, &made).await?;
        self.queue
            .send(message)
            .await
            .map_err(|e| DomainError::Internal(anyhow::anyhow!("{e}")))?;
        Ok(Sent::Split(made.len()))
    }

    async fn queue_new(&self, tenant_id: Uuid, batches: &[Uuid]) -> Result<(), DomainError> {
        let messages: Vec<SendMessage> = batches
            .iter()
            .map(|&batch_id| SendMessage { tenant_id, batch_id })
            .collect();
        self.queue
            .send_batch(&messages)
            .await
            .map_err(|e| DomainError::Internal(anyhow::anyhow!("{e}")))
    }

    /// The schedule's tick (see the module's docs). Each piece of work runs under its tenant,
    /// and one that fails is logged and left for the next tick: no tenant stops the others.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Tick, DomainError> {
        let mut tick = Tick::default();
        let limit = self.options.tick_limit;
        for Due { tenant_id, id } in delivery::due_campaigns(&self.db, now, limit).await? {
            match lifecycle::start_due(&self.db, &scope(tenant_id, "start"), id, None).await {
                Ok(_) => tick.started += 1,
                Err(e) => tracing::warn!(%tenant_id, campaign_id = %id, error = %e, "campaign not started"),
            }
        }
        for Due { tenant_id, id } in delivery::due_ab_decisions(&self.db, now, limit).await? {
            match lifecycle::choose_winner(&self.db, &scope(tenant_id, "winner"), id).await {
                Ok(_) => tick.decided += 1,
                Err(e) => tracing::warn!(%tenant_id, campaign_id = %id, error = %e, "A/B winner not chosen"),
            }
        }
        for Due { tenant_id, id } in delivery::expired_batches(&self.db, now, limit).await? {
            match delivery::mark_unknown(&self.db, &scope(tenant_id, "expire"), id).await {
                Ok(true) => tick.expired += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(%tenant_id, batch_id = %id, error = %e, "lease not expired"),
            }
        }
        let unknown: Vec<(Uuid, Uuid)> = sqlx::query_as("select * from app_marketing_unknown_batches($1)")
            .bind(limit)
            .fetch_all(&self.db)
            .await?;
        for (tenant_id, id) in unknown {
            match self.settle(tenant_id, id, now).await {
                Ok(true) => tick.settled += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(%tenant_id, batch_id = %id, error = %e, "unknown batch not settled"),
            }
        }
        let hold = self.options.queue_hold.as_secs_f64();
        let due: Vec<(Uuid, Uuid)> =
            sqlx::query_as("select * from app_marketing_take_due_batches($1, $2, make_interval(secs => $3))")
                .bind(now)
                .bind(limit)
                .bind(hold)
                .fetch_all(&self.db)
                .await?;
        let messages: Vec<SendMessage> = due
            .into_iter()
            .map(|(tenant_id, batch_id)| SendMessage { tenant_id, batch_id })
            .collect();
        // A message lost here is queued again once its hold has passed.
        self.queue
            .send_batch(&messages)
            .await
            .map_err(|e| DomainError::Internal(anyhow::anyhow!("{e}")))?;
        tick.queued = messages.len();
        // Boxed: a provider call's future is deep, and the tick's nests it once more.
        tick.tests = Box::pin(self.send_tests(now)).await?;
        Ok(tick)
    }

    /// Sends the test sends due, one request each, within the tick's budget.
    async fn send_tests(&self, now: DateTime<Utc>) -> Result<usize, DomainError> {
        let stale = test_send::fail_stale(&self.db, now).await?;
        if stale > 0 {
            tracing::warn!(stale, "test sends without a recorded outcome failed");
        }
        let started = std::time::Instant::now();
        let mut taken = 0;
        while taken < TESTS_PER_TICK && started.elapsed() < TEST_BUDGET {
            let Some((tenant_id, id)) = test_send::take(&self.db, now).await? else {
                break;
            };
            taken += 1;
            if let Err(e) = self.send_test(tenant_id, id).await {
                // Left `sending`: `fail_stale` fails it with the reason after 15 minutes.
                tracing::warn!(%tenant_id, test_send_id = %id, error = %e, "test send not recorded");
            }
        }
        Ok(taken)
    }

    /// Sends one taken test send as it was stored, and records the outcome.
    #[tracing::instrument(skip(self))]
    async fn send_test(&self, tenant_id: Uuid, id: Uuid) -> Result<(), DomainError> {
        let scope = scope(tenant_id, "test");
        let Some((campaign_id, t)) = test_send::taken(&self.db, &scope, id).await? else {
            return Ok(());
        };
        let provider = t.provider;
        let outcome = match self.connectors.credentials(&scope, provider.kind()).await? {
            None => TestOutcome::Failed(format!(
                "the {} connector was removed: connect it again and send the test again",
                provider.name()
            )),
            Some(creds) => {
                let batch = OutboundBatch {
                    from: Mailbox::named(t.from_email, t.from_name),
                    reply_to: t.reply_to.map(Mailbox::new),
                    subject: t.subject,
                    html: t.html,
                    text: t.text,
                    recipients: vec![BatchRecipient {
                        message_id: t.id,
                        to: Mailbox::new(t.email),
                        substitutions: Vec::new(),
                        headers: Vec::new(),
                    }],
                    campaign_id,
                    tenant_id,
                };
                test_outcome(
                    provider,
                    provider.send(&self.connectors, &creds, &batch).await,
                    Utc::now(),
                )
            }
        };
        test_send::record(&self.db, &scope, id, &outcome).await
    }

    /// Settles an unknown batch from the provider's events: one event about any of its
    /// recipients → the provider took it (all sent); none after [`SenderOptions::unknown_grace`]
    /// while the tenant's event webhook delivered other events since → never taken (pending
    /// again, sent once more). Otherwise it stays unknown, shown in the campaign's progress.
    async fn settle(&self, tenant_id: Uuid, batch_id: Uuid, now: DateTime<Utc>) -> Result<bool, DomainError> {
        let scope = scope(tenant_id, "settle");
        let mut tx = pg::begin(&self.db, &scope).await?;
        let (taken, since, webhook_works): (bool, DateTime<Utc>, bool) = sqlx::query_as(
            "select exists (select 1 from marketing_email_events e join marketing_campaign_recipients r \
                            on r.id = e.recipient_id where r.batch_id = b.id), \
                    b.updated_at, \
                    exists (select 1 from marketing_email_events e where e.received_at > b.updated_at) \
             from marketing_campaign_batches b where b.id = $1",
        )
        .bind(batch_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let grace = chrono::Duration::from_std(self.options.unknown_grace).unwrap_or(chrono::Duration::hours(1));
        if taken {
            return delivery::resolve_unknown(&self.db, &scope, batch_id, true).await;
        }
        if now - since >= grace && webhook_works {
            return delivery::resolve_unknown(&self.db, &scope, batch_id, false).await;
        }
        Ok(false)
    }
}

/// The recipients of a batch being sent.
async fn sending_recipients(pool: &PgPool, scope: &Scope, batch_id: Uuid) -> Result<Vec<Uuid>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "select id from marketing_campaign_recipients where batch_id = $1 and status = 'sending' order by email",
    )
    .bind(batch_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids)
}

/// Moves each group of `moved` recipients (claimed in `batch_id`, not yet sent) into a new
/// pending batch of its own, in one transaction: the new batches' ids. Nothing was sent for
/// them, so they are queued again as they were.
async fn split(pool: &PgPool, scope: &Scope, batch_id: Uuid, moved: &[Vec<Uuid>]) -> Result<Vec<Uuid>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    // The campaign first, then its batch: the order every path that changes both keeps.
    sqlx::query(
        "select c.id from marketing_campaigns c join marketing_campaign_batches b on b.campaign_id = c.id \
         where b.id = $1 for no key update of c",
    )
    .bind(batch_id)
    .execute(&mut *tx)
    .await?;
    let (campaign_id, variant, provider, next_seq): (Uuid, Option<String>, String, i32) = sqlx::query_as(
        "select b.campaign_id, b.variant, b.provider, \
                (select coalesce(max(seq), 0) + 1 from marketing_campaign_batches x where x.campaign_id = b.campaign_id) \
         from marketing_campaign_batches b where b.id = $1 and b.status = 'sending' for update",
    )
    .bind(batch_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(DomainError::NotFound)?;
    let mut made = Vec::with_capacity(moved.len());
    for (seq, group) in (next_seq..).zip(moved.iter().filter(|g| !g.is_empty())) {
        let id = Uuid::now_v7();
        sqlx::query(
            "insert into marketing_campaign_batches (id, tenant_id, campaign_id, seq, variant, status, recipients, provider) \
             values ($1, $2, $3, $4, $5, 'pending', $6, $7)",
        )
        .bind(id)
        .bind(scope.tenant_id())
        .bind(campaign_id)
        .bind(seq)
        .bind(&variant)
        .bind(group.len() as i32)
        .bind(&provider)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query(
            "update marketing_campaign_recipients set batch_id = $2, status = 'queued' \
             where id = any($3) and batch_id = $1 and status = 'sending'",
        )
        .bind(batch_id)
        .bind(id)
        .bind(group)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("update marketing_campaign_batches set recipients = $2 where id = $1")
            .bind(id)
            .bind(n as i32)
            .execute(&mut *tx)
            .await?;
        sqlx::query("update marketing_campaign_batches set recipients = recipients - $2 where id = $1")
            .bind(batch_id)
            .bind(n as i32)
            .execute(&mut *tx)
            .await?;
        made.push(id);
    }
    tx.commit().await?;
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trips_as_the_queue_carries_it() {
        let m = SendMessage {
            tenant_id: Uuid::now_v7(),
            batch_id: Uuid::now_v7(),
        };
        let json = serde_json::to_string(&m).expect("json");
        assert_eq!(serde_json::from_str::<SendMessage>(&json).expect("back"), m);
        assert!(serde_json::from_str::<SendMessage>("{\"tenant_id\":\"x\"}").is_err());
    }

    #[test]
    fn the_defaults_keep_a_claim_longer_than_a_run() {
        let o = SenderOptions::default();
        assert!(o.lease > Duration::from_secs(60));
        assert!(o.queue_hold >= o.lease);
        assert!(o.rate > 0 && o.refusals_before_pause > 0);
        let _ = crate::services::providers::email::MAX_BATCH;
    }
}
