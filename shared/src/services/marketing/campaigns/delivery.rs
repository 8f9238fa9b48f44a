//! The sender's side of a campaign (the `campaign-sender` function drives it): what is due
//! across tenants, claiming a batch, and recording what the provider answered.
//!
//! Exactly once, step by step:
//! 1. [`claim_batch`] moves a `pending` batch to `sending` with a lease (one transaction, the
//!    batch row locked): a second claim — an SQS redelivery, a second sender — finds it
//!    `sending` and gets [`Claim::Nothing`]. Recipients suppressed since the freeze become
//!    `suppressed`, those whose contact was deleted `cancelled`; the rest `sending`.
//! 2. The sender makes ONE provider call with every recipient's id (our message id) in
//!    `custom_args` / `v:` variables.
//! 3. [`record_accepted`] (2xx) or [`record_refused`] (a refusal: retry at a time, or for good)
//!    commits the outcome. A crash between 2 and 3 leaves the batch `sending`; once its lease
//!    has run out [`mark_unknown`] makes it `unknown` (never re-sent blindly), and
//!    [`resolve_unknown`] settles it from the provider's events (which carry our ids): taken
//!    -> sent; never taken -> pending again.
//! 4. After every outcome [`finish_if_done`] ends the campaign when nothing is left to send.
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::{CampaignStatus, EmailProvider, rules};
use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, Scope};
use crate::services::marketing::render::{BodyFormat, CompanyVars, ContactVars, TemplateSource};

/// A piece of work of one tenant, from the scheduler's looks across tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Due {
    pub tenant_id: Uuid,
    pub id: Uuid,
}

async fn due(pool: &PgPool, function: &str, now: DateTime<Utc>, limit: i32) -> Result<Vec<Due>, DomainError> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(&format!("select * from {function}($1, $2)"))
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(tenant_id, id)| Due { tenant_id, id }).collect())
}

/// Scheduled campaigns whose time has come (for [`super::lifecycle::start_due`]).
pub async fn due_campaigns(pool: &PgPool, now: DateTime<Utc>, limit: i32) -> Result<Vec<Due>, DomainError> {
    due(pool, "app_marketing_due_campaigns", now, limit).await
}

/// Pending batches of sending campaigns whose `not_before` has come (to queue for sending).
pub async fn due_batches(pool: &PgPool, now: DateTime<Utc>, limit: i32) -> Result<Vec<Due>, DomainError> {
    due(pool, "app_marketing_due_batches", now, limit).await
}

/// Batches still `sending` past their lease (for [`mark_unknown`]).
pub async fn expired_batches(pool: &PgPool, now: DateTime<Utc>, limit: i32) -> Result<Vec<Due>, DomainError> {
    due(pool, "app_marketing_expired_batches", now, limit).await
}

/// Sending A/B campaigns whose winner is due (for [`super::lifecycle::choose_winner`]).
pub async fn due_ab_decisions(pool: &PgPool, now: DateTime<Utc>, limit: i32) -> Result<Vec<Due>, DomainError> {
    due(pool, "app_marketing_due_ab_decisions", now, limit).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum BatchStatus {
    Pending,
    Sending,
    Accepted,
    Unknown,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Batch {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub seq: i32,
    /// `None` (no A/B test), a variant's letter, or `winner`.
    pub variant: Option<String>,
    pub status: BatchStatus,
    pub recipients: i32,
    pub attempts: i32,
    pub not_before: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub provider: EmailProvider,
    pub provider_batch_id: Option<String>,
    pub error: Option<String>,
}

const BATCH_COLUMNS: &str = "id, campaign_id, seq, variant, status, recipients, attempts, not_before, lease_until, \
    provider, provider_batch_id, error";

/// What every message of a batch is made of: the sender identity and the frozen template, with
/// the batch's variant's subject.
#[derive(Debug, Clone)]
pub struct Message {
    pub from_name: String,
    pub from_email: String,
    pub reply_to: Option<String>,
    pub source: TemplateSource,
    /// The tenant's name (`tenant.name`).
    pub tenant_name: String,
}

/// One recipient of a claimed batch with the values the template renders with (the sender adds
/// the unsubscribe and view-in-browser links).
#[derive(Debug, Clone)]
pub struct BatchRecipient {
    /// Our message id: into `custom_args` / `v:` variables, back on every event.
    pub id: Uuid,
    pub email: String,
    pub contact: ContactVars,
    pub company: Option<CompanyVars>,
}

#[derive(Debug, Clone)]
pub struct ClaimedBatch {
    pub batch: Batch,
    pub message: Message,
    pub recipients: Vec<BatchRecipient>,
}

/// The outcome of a claim. (One per batch claimed, moved once: boxing the ready batch would buy
/// nothing.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Claim {
    /// Yours until `batch.lease_until`: send it once, then record the outcome.
    Ready(ClaimedBatch),
    /// Not before this time (a provider's `Retry-After`): queue it again with that delay.
    Later(DateTime<Utc>),
    /// Nothing to send: already claimed or done, the campaign is paused or over, or nobody in
    /// it may still receive mail.
    Nothing,
}

/// Locks a batch for the rest of the transaction, its campaign first: every path that changes
/// both (claims, records, cancel, the A/B winner) locks the campaign before its batches, so
/// they never wait on each other in a circle.
async fn lock_batch(tx: &mut Tx, id: Uuid) -> Result<Batch, DomainError> {
    let campaign: Option<Uuid> = sqlx::query_scalar(
        "select c.id from marketing_campaigns c join marketing_campaign_batches b on b.campaign_id = c.id \
         where b.id = $1 for no key update of c",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    if campaign.is_none() {
        return Err(DomainError::NotFound);
    }
    let batch: Option<Batch> = sqlx::query_as(&format!(
        "select {BATCH_COLUMNS} from marketing_campaign_batches where id = $1 for update"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    batch.ok_or(DomainError::NotFound)
}

#[derive(sqlx::FromRow)]
struct CampaignRow {
    status: CampaignStatus,
    from_name: String,
    from_email: String,
    reply_to: Option<String>,
    snapshot_subject: Option<String>,
    snapshot_preheader: Option<String>,
    snapshot_format: Option<String>,
    snapshot_body: Option<String>,
    snapshot_text_body: Option<String>,
    ab: Option<Json<super::AbTest>>,
    ab_winner: Option<String>,
}

const CAMPAIGN_MESSAGE_COLUMNS: &str = "status, from_name, from_email, reply_to, snapshot_subject, snapshot_preheader, \
    snapshot_format, snapshot_body, snapshot_text_body, ab, ab_winner";

/// The frozen template with the subject of `variant` (a letter, or `winner`: the winner's).
fn message_source(c: &CampaignRow, variant: Option<&str>) -> Result<TemplateSource, DomainError> {
    let missing = || DomainError::Internal(anyhow::anyhow!("a started campaign without its frozen template"));
    let format = match c.snapshot_format.as_deref() {
        Some("html") => BodyFormat::Html,
        Some("mjml") => BodyFormat::Mjml,
        _ => return Err(missing()),
    };
    let letter = match variant {
        Some("winner") => c.ab_winner.as_deref(),
        other => other,
    };
    let variant_subject = letter.and_then(|l| {
        let i = super::LETTERS.iter().position(|x| *x == l)?;
        c.ab.as_ref()?.0.variants.get(i).map(|v| v.subject.clone())
    });
    Ok(TemplateSource {
        subject: variant_subject
            .or_else(|| c.snapshot_subject.clone())
            .ok_or_else(missing)?,
        preheader: c.snapshot_preheader.clone(),
        format,
        body: c.snapshot_body.clone().ok_or_else(missing)?,
        text: c.snapshot_text_body.clone(),
    })
}

#[derive(sqlx::FromRow)]
struct RecipientRow {
    id: Uuid,
    email: String,
    first_name: String,
    last_name: String,
    phone: Option<String>,
    title: Option<String>,
    lifecycle_stage: String,
    tags: Vec<String>,
    custom: Json<Map<String, Value>>,
    company_name: Option<String>,
    company_domain: Option<String>,
    company_industry: Option<String>,
}

/// A recipient's values (`r`: the recipient row), with [`RECIPIENT_JOINS`].
const RECIPIENT_VALUES: &str = "r.id, r.email, c.first_name, c.last_name, c.phone, c.title, c.lifecycle_stage, c.tags, \
    c.custom, co.name as company_name, co.domain as company_domain, co.industry as company_industry";
const RECIPIENT_JOINS: &str =
    "join crm_contacts c on c.id = r.contact_id left join crm_companies co on co.id = c.company_id";

impl From<RecipientRow> for BatchRecipient {
    fn from(r: RecipientRow) -> Self {
        let email = r.email;
        Self {
            id: r.id,
            contact: ContactVars {
                email: email.clone(),
                first_name: r.first_name,
                last_name: r.last_name,
                phone: r.phone,
                title: r.title,
                lifecycle_stage: r.lifecycle_stage,
                tags: r.tags,
                custom: r.custom.0,
            },
            company: r.company_name.map(|name| CompanyVars {
                name,
                domain: r.company_domain,
                industry: r.company_industry,
            }),
            email,
        }
    }
}

/// What one recipient's message is made of, for its web copy ("view in browser"): the
/// campaign's frozen template (with the recipient's variant's subject), the tenant's name and
/// the recipient's current values. `NotFound` when the recipient was never sent the campaign,
/// or its contact was deleted since (its values are gone with it).
pub async fn sent_message(
    pool: &PgPool,
    scope: &Scope,
    recipient_id: Uuid,
) -> Result<(TemplateSource, String, BatchRecipient), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let found: Option<(Uuid, Option<String>)> = sqlx::query_as(
        "select campaign_id, variant from marketing_campaign_recipients \
         where id = $1 and status in ('sending', 'sent', 'unknown')",
    )
    .bind(recipient_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (campaign_id, variant) = found.ok_or(DomainError::NotFound)?;
    let c: CampaignRow = sqlx::query_as(&format!(
        "select {CAMPAIGN_MESSAGE_COLUMNS} from marketing_campaigns where id = $1"
    ))
    .bind(campaign_id)
    .fetch_one(&mut *tx)
    .await?;
    let row: Option<RecipientRow> = sqlx::query_as(&format!(
        "select {RECIPIENT_VALUES} from marketing_campaign_recipients r {RECIPIENT_JOINS} where r.id = $1"
    ))
    .bind(recipient_id)
    .fetch_optional(&mut *tx)
    .await?;
    let recipient = BatchRecipient::from(row.ok_or(DomainError::NotFound)?);
    let tenant_name = super::lifecycle::tenant_name(&mut tx).await?;
    tx.commit().await?;
    Ok((message_source(&c, variant.as_deref())?, tenant_name, recipient))
}

/// Claims a batch for sending for `lease` (see the module's docs). Only a `pending` batch of a
/// `sending` campaign whose `not_before` has come is claimed.
pub async fn claim_batch(pool: &PgPool, scope: &Scope, batch_id: Uuid, lease: Duration) -> Result<Claim, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let batch = lock_batch(&mut tx, batch_id).await?;
    let c: CampaignRow = sqlx::query_as(&format!(
        "select {CAMPAIGN_MESSAGE_COLUMNS} from marketing_campaigns where id = $1"
    ))
    .bind(batch.campaign_id)
    .fetch_one(&mut *tx)
    .await?;
    if batch.status != BatchStatus::Pending || c.status != CampaignStatus::Sending {
        tx.commit().await?;
        return Ok(Claim::Nothing);
    }
    if batch.not_before > Utc::now() {
        tx.commit().await?;
        return Ok(Claim::Later(batch.not_before));
    }
    sqlx::query(
        "update marketing_campaign_recipients r set status = 'suppressed' where r.batch_id = $1 and r.status = 'queued' \
         and exists (select 1 from marketing_suppressions s where s.email = r.email)",
    )
    .bind(batch_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update marketing_campaign_recipients set status = 'cancelled', error = 'the contact was deleted' \
         where batch_id = $1 and status = 'queued' and contact_id is null",
    )
    .bind(batch_id)
    .execute(&mut *tx)
    .await?;
    let recipients: Vec<RecipientRow> = sqlx::query_as(&format!(
        "with claimed as ( \
           update marketing_campaign_recipients set status = 'sending' where batch_id = $1 and status = 'queued' \
           returning id, email, contact_id) \
         select {RECIPIENT_VALUES} from claimed r {RECIPIENT_JOINS} order by r.email"
    ))
    .bind(batch_id)
    .fetch_all(&mut *tx)
    .await?;
    if recipients.is_empty() {
        sqlx::query(
            "update marketing_campaign_batches set status = 'cancelled', updated_at = now(), \
             error = 'nobody left to send to: suppressed or deleted since the campaign started' where id = $1",
        )
        .bind(batch_id)
        .execute(&mut *tx)
        .await?;
        finish_if_done(&mut tx, batch.campaign_id).await?;
        tx.commit().await?;
        return Ok(Claim::Nothing);
    }
    let batch: Batch = sqlx::query_as(&format!(
        "update marketing_campaign_batches set status = 'sending', attempts = attempts + 1, \
         lease_until = now() + make_interval(secs => $2), updated_at = now() where id = $1 returning {BATCH_COLUMNS}"
    ))
    .bind(batch_id)
    .bind(lease.num_milliseconds() as f64 / 1000.0)
    .fetch_one(&mut *tx)
    .await?;
    let message = Message {
        from_name: c.from_name.clone(),
        from_email: c.from_email.clone(),
        reply_to: c.reply_to.clone(),
        source: message_source(&c, batch.variant.as_deref())?,
        tenant_name: super::lifecycle::tenant_name(&mut tx).await?,
    };
    tx.commit().await?;
    Ok(Claim::Ready(ClaimedBatch {
        batch,
        message,
        recipients: recipients.into_iter().map(BatchRecipient::from).collect(),
    }))
}

/// Records the provider's acceptance of a batch (its batch id, and per recipient its message id
/// when the provider gives one): the batch `accepted`, its recipients `sent`. A batch not
/// `sending` or `unknown` is left as it is (`false`: a repeated record changes nothing).
pub async fn record_accepted(
    pool: &PgPool,
    scope: &Scope,
    batch_id: Uuid,
    provider_batch_id: Option<&str>,
    message_ids: &[(Uuid, String)],
) -> Result<bool, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let batch = lock_batch(&mut tx, batch_id).await?;
    if !matches!(batch.status, BatchStatus::Sending | BatchStatus::Unknown) {
        tx.commit().await?;
        return Ok(false);
    }
    accept(&mut tx, &batch, provider_batch_id, message_ids).await?;
    tx.commit().await?;
    Ok(true)
}

async fn accept(
    tx: &mut Tx,
    batch: &Batch,
    provider_batch_id: Option<&str>,
    message_ids: &[(Uuid, String)],
) -> Result<(), DomainError> {
    sqlx::query(
        "update marketing_campaign_batches set status = 'accepted', provider_batch_id = coalesce($2, provider_batch_id), \
         lease_until = null, error = null, updated_at = now() where id = $1",
    )
    .bind(batch.id)
    .bind(provider_batch_id)
    .execute(&mut **tx)
    .await?;
    // Two plain statements, each reached through one index: a join of the batch's rows with
    // themselves was planned as a nested loop over the whole batch for every row whenever the
    // table's statistics lagged a freeze of 100,000 rows (0.7 s a batch of 1,000).
    sqlx::query(
        "update marketing_campaign_recipients set status = 'sent', sent_at = now(), error = null \
         where batch_id = $1 and status in ('sending', 'unknown')",
    )
    .bind(batch.id)
    .execute(&mut **tx)
    .await?;
    if !message_ids.is_empty() {
        let (ids, pids): (Vec<Uuid>, Vec<String>) = message_ids.iter().cloned().unzip();
        sqlx::query(
            "update marketing_campaign_recipients r set provider_message_id = m.pid \
             from unnest($2::uuid[], $3::text[]) as m (id, pid) where r.id = m.id and r.batch_id = $1",
        )
        .bind(batch.id)
        .bind(ids)
        .bind(pids)
        .execute(&mut **tx)
        .await?;
    }
    finish_if_done(tx, batch.campaign_id).await
}

/// Records a refusal: with `retry_at` (a 429, a 5xx, a timeout before any answer) the batch is
/// pending again from that time and its recipients queued; without, it failed for good and so
/// did its recipients, with `error` (the provider's words). `false`: the batch was not
/// `sending` or `unknown`, nothing changed.
pub async fn record_refused(
    pool: &PgPool,
    scope: &Scope,
    batch_id: Uuid,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<bool, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let batch = lock_batch(&mut tx, batch_id).await?;
    if !matches!(batch.status, BatchStatus::Sending | BatchStatus::Unknown) {
        tx.commit().await?;
        return Ok(false);
    }
    let (batch_status, recipient_status) = if retry_at.is_some() {
        ("pending", "queued")
    } else {
        ("failed", "failed")
    };
    sqlx::query(
        "update marketing_campaign_batches set status = $2, not_before = coalesce($3, not_before), \
         lease_until = null, error = left($4, 1000), updated_at = now() where id = $1",
    )
    .bind(batch_id)
    .bind(batch_status)
    .bind(retry_at)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update marketing_campaign_recipients set status = $2, \
         error = case when $2 = 'failed' then left($3, 1000) end \
         where batch_id = $1 and status in ('sending', 'unknown')",
    )
    .bind(batch_id)
    .bind(recipient_status)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    finish_if_done(&mut tx, batch.campaign_id).await?;
    tx.commit().await?;
    Ok(true)
}

/// A batch still `sending` after its lease ran out (the sender crashed or timed out between
/// the provider's answer and its record) becomes `unknown`, and so do its recipients: shown in
/// progress, never re-sent until [`resolve_unknown`] settles it. `false`: not expired, nothing
/// changed.
pub async fn mark_unknown(pool: &PgPool, scope: &Scope, batch_id: Uuid) -> Result<bool, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let batch = lock_batch(&mut tx, batch_id).await?;
    if batch.status != BatchStatus::Sending || batch.lease_until.is_some_and(|until| until >= Utc::now()) {
        tx.commit().await?;
        return Ok(false);
    }
    sqlx::query("update marketing_campaign_batches set status = 'unknown', updated_at = now() where id = $1")
        .bind(batch_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "update marketing_campaign_recipients set status = 'unknown' where batch_id = $1 and status = 'sending'",
    )
    .bind(batch_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Settles an `unknown` batch from the provider's events: `taken` (an event carries one of its
/// recipients' ids) -> accepted and sent; not taken (the provider shows it never had it) ->
/// pending again, its recipients queued. `false`: the batch was not unknown.
pub async fn resolve_unknown(pool: &PgPool, scope: &Scope, batch_id: Uuid, taken: bool) -> Result<bool, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let batch = lock_batch(&mut tx, batch_id).await?;
    if batch.status != BatchStatus::Unknown {
        tx.commit().await?;
        return Ok(false);
    }
    if taken {
        accept(&mut tx, &batch, None, &[]).await?;
    } else {
        sqlx::query(
            "update marketing_campaign_batches set status = 'pending', not_before = now(), lease_until = null, \
             updated_at = now() where id = $1",
        )
        .bind(batch_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "update marketing_campaign_recipients set status = 'queued' where batch_id = $1 and status = 'unknown'",
        )
        .bind(batch_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Pauses a sending campaign with the provider's reason (N refusals in a row: a bad key, a
/// suspended account); nothing is marked sent. `false`: it was not sending.
pub async fn pause_for_provider(
    pool: &PgPool,
    scope: &Scope,
    campaign_id: Uuid,
    reason: &str,
) -> Result<bool, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let paused = sqlx::query(
        "update marketing_campaigns set status = 'paused', status_reason = left($2, 1000), updated_at = now(), \
         version = version + 1 where id = $1 and status = 'sending'",
    )
    .bind(campaign_id)
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(paused == 1)
}

/// Ends a sending campaign once nothing is left to send: no batch pending, sending or unknown,
/// nobody held for an A/B winner still to be chosen ([`rules::finished`] says how it ends).
pub async fn finish_if_done(tx: &mut Tx, campaign_id: Uuid) -> Result<(), DomainError> {
    let state: Option<(bool, i64, i64)> = sqlx::query_as(
        "select \
           not exists (select 1 from marketing_campaign_batches b where b.campaign_id = c.id \
                       and b.status in ('pending', 'sending', 'unknown')) \
           and not exists (select 1 from marketing_campaign_recipients r where r.campaign_id = c.id \
                           and r.status = 'queued' and r.batch_id is null) \
           and (c.ab is null or c.ab_winner is not null), \
           (select count(*) from marketing_campaign_batches b where b.campaign_id = c.id and b.status = 'accepted'), \
           (select count(*) from marketing_campaign_batches b where b.campaign_id = c.id and b.status = 'failed') \
         from marketing_campaigns c where c.id = $1 and c.status = 'sending' for no key update",
    )
    .bind(campaign_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((true, accepted, failed)) = state else {
        return Ok(());
    };
    let (status, reason) = rules::finished(accepted, failed);
    sqlx::query(
        "update marketing_campaigns set status = $2, status_reason = $3, finished_at = now(), updated_at = now(), \
         version = version + 1 where id = $1",
    )
    .bind(campaign_id)
    .bind(status)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
