//! A campaign's way from draft to sending: schedule (checked as if it started now), start (the
//! freeze, in one transaction), pause, resume, cancel, and the A/B winner.
//!
//! Starting freezes three things at once, or nothing: the template (so a later edit of it does
//! not change a campaign in flight), the audience (one recipient row per address: the
//! segments' filters, evaluated by [`Audience::push_conditions`] as counting does, united
//! with the contacts of the tags, deduplicated by lower-case address; suppressed addresses
//! recorded as `suppressed`, contacts without an address skipped) and its batches (each
//! recipient numbered into one). It is set-based: one `insert ... select` writes every
//! recipient and batch, so 100,000 contacts freeze in seconds. A second start changes nothing.
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use sqlx::{PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use super::rules::{self, Action};
use super::{
    AbMetric, Campaign, CampaignAudience, CampaignStatus, EmailProvider, LETTERS, detail, fetch, subject_only,
};
use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, Email, FieldError, Scope};
use crate::services::billing::entitlements::{self, Limit};
use crate::services::crm::fields::{self, Entity};
use crate::services::marketing::render::{self, BodyFormat, TemplateIssue, TemplateSource, Vocabulary};
use crate::services::marketing::segments::{self, Audience, SegmentFilter};

/// How far ahead a campaign may be scheduled.
pub const MAX_SCHEDULE_DAYS: i64 = 365;
/// A `send_at` this little in the past (clocks, latency) is taken as now.
const LATE_GRACE_SECONDS: i64 = 60;

/// The body of `POST /marketing/campaigns/{id}/schedule`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// When to start (RFC 3339, at most a year ahead); absent: now.
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
}

/// Everything a start needs, checked.
struct Ready {
    source: TemplateSource,
    provider: EmailProvider,
    tags: Vec<String>,
    segments: Vec<Audience>,
    /// Addresses that would be sent to now, and the suppressed ones.
    sendable: i64,
    /// This month's emails before this campaign.
    used: i64,
}

#[derive(sqlx::FromRow)]
struct TemplateRow {
    subject: String,
    preheader: Option<String>,
    #[sqlx(try_from = "String")]
    format: BodyFormat,
    body: String,
    text_body: Option<String>,
}

fn incomplete(what: &str) -> DomainError {
    DomainError::conflict("campaign-incomplete", format!("the campaign {what}"))
}

fn render_failed(part: &str, issues: Vec<TemplateIssue>) -> DomainError {
    let said: Vec<String> = issues
        .into_iter()
        .map(|i| {
            let e = FieldError::from(i);
            format!("{} ({})", e.field, e.message)
        })
        .collect();
    DomainError::conflict(
        "template-render-failed",
        format!("{part} cannot be rendered: {}; edit it", said.join("; ")),
    )
}

pub(super) async fn tenant_name(tx: &mut Tx) -> Result<String, DomainError> {
    sqlx::query_scalar("select name from tenants where id = app_current_tenant()")
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DomainError::NotFound)
}

/// The campaign's template as it is now (409 `campaign-incomplete` without one).
pub(super) async fn template_source(tx: &mut Tx, c: &Campaign) -> Result<TemplateSource, DomainError> {
    let Some(template_id) = c.template_id else {
        return Err(incomplete("has no template: choose one"));
    };
    let t: TemplateRow =
        sqlx::query_as("select subject, preheader, format, body, text_body from marketing_templates where id = $1")
            .bind(template_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| incomplete("has no template: choose one"))?;
    Ok(TemplateSource {
        subject: t.subject,
        preheader: t.preheader,
        format: t.format,
        body: t.body,
        text: t.text_body,
    })
}

/// The template, and each A/B subject, must still know every variable it names (a custom field
/// may have been removed since it was saved) and render for the sample contact.
async fn check_renders(tx: &mut Tx, c: &Campaign, source: &TemplateSource) -> Result<(), DomainError> {
    let vocabulary = Vocabulary {
        custom_fields: fields::definitions(tx, Entity::Contact)
            .await?
            .into_iter()
            .map(|f| f.key)
            .collect(),
    };
    let sample = render::sample_context(&tenant_name(tx).await?);
    let mut sources = vec![("the template".to_owned(), source.clone())];
    if let Some(ab) = &c.ab {
        for (variant, letter) in ab.0.variants.iter().zip(LETTERS) {
            sources.push((
                format!("the subject of variant {letter}"),
                subject_only(&variant.subject),
            ));
        }
    }
    for (part, src) in sources {
        render::validate(&src, &vocabulary).map_err(|issues| render_failed(&part, issues))?;
        render::render(&src, &sample).map_err(|issues| render_failed(&part, issues))?;
    }
    Ok(())
}

/// The audience's tags and segments (read against the tenant's fields now: a segment whose
/// field was removed answers 409 `segment-outdated`; one deleted since, 409
/// `campaign-incomplete` naming it).
async fn audience_of(tx: &mut Tx, audience: &CampaignAudience) -> Result<(Vec<String>, Vec<Audience>), DomainError> {
    let rows: Vec<(Uuid, sqlx::types::Json<SegmentFilter>)> =
        sqlx::query_as("select id, filter from marketing_segments where id = any($1)")
            .bind(&audience.segment_ids)
            .fetch_all(&mut **tx)
            .await?;
    let mut out = Vec::with_capacity(rows.len());
    for id in &audience.segment_ids {
        let Some((_, filter)) = rows.iter().find(|(known, _)| known == id) else {
            return Err(incomplete(&format!(
                "names segment {id}, which no longer exists: edit its audience"
            )));
        };
        out.push(segments::audience(tx, &filter.0).await?);
    }
    Ok((audience.tags.clone(), out))
}

/// The audience as one select over `crm_contacts c`: a row per address (lower case) of a
/// contact with any of the tags or in any of the segments, with whether it is suppressed. The
/// suppression list is read once into a hash (`in (select ...)`), whatever the planner knows:
/// a correlated `exists` was planned, on freshly imported contacts without statistics, as a
/// scan of the whole list per contact (4.5 s for 20,000 contacts and 500 suppressions).
fn push_audience(qb: &mut QueryBuilder<'_, Postgres>, tags: &[String], segments: &[Audience]) {
    qb.push(
        "select distinct on (lower(c.email)) c.id as contact_id, lower(c.email) as email, \
         lower(c.email) in (select s.email from marketing_suppressions s) as suppressed \
         from crm_contacts c where c.email is not null and btrim(c.email) <> '' and (false",
    );
    if !tags.is_empty() {
        qb.push(" or c.tags && ").push_bind(tags.to_vec());
    }
    for segment in segments {
        qb.push(" or (true");
        segment.push_conditions(qb);
        qb.push(")");
    }
    qb.push(") order by lower(c.email), c.id");
}

/// How many addresses the audience has now that are not suppressed, and that are.
async fn count_audience(tx: &mut Tx, tags: &[String], segments: &[Audience]) -> Result<(i64, i64), DomainError> {
    let mut qb = QueryBuilder::new(
        "select count(*) filter (where not a.suppressed), count(*) filter (where a.suppressed) from (",
    );
    push_audience(&mut qb, tags, segments);
    qb.push(") a");
    Ok(qb.build_query_as().fetch_one(&mut **tx).await?)
}

/// The provider the campaign sends through: its own choice, if connected, or the first
/// connected of SendGrid and Mailgun (a saved connector counts; a failing one shows its error
/// on the connectors page and in the batches' errors).
pub(super) async fn connected_provider(
    tx: &mut Tx,
    chosen: Option<EmailProvider>,
) -> Result<EmailProvider, DomainError> {
    let kinds: Vec<String> = sqlx::query_scalar("select kind from connectors where kind = any($1)")
        .bind(EmailProvider::ALL.map(|p| p.as_str().to_owned()).to_vec())
        .fetch_all(&mut **tx)
        .await?;
    let connected = |p: &EmailProvider| kinds.iter().any(|k| k == p.as_str());
    match chosen {
        Some(p) if connected(&p) => Ok(p),
        Some(p) => Err(DomainError::conflict(
            "no-email-connector",
            format!(
                "the campaign sends through {p}, which is not connected: set it up with PUT /connectors/{p}, or \
                 choose another provider",
                p = p.as_str()
            ),
        )),
        None => EmailProvider::ALL.into_iter().find(connected).ok_or_else(|| {
            DomainError::conflict(
                "no-email-connector",
                "no email connector is set up: connect sendgrid or mailgun (PUT /connectors/sendgrid or PUT \
                 /connectors/mailgun) first",
            )
        }),
    }
}

/// This calendar month's emails of the tenant (UTC): sent, and queued in started campaigns.
pub async fn emails_used(tx: &mut Tx) -> Result<i64, DomainError> {
    Ok(
        sqlx::query_scalar("select coalesce((select emails from marketing_emails_this_month), 0)::bigint")
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// Every check of a start, in order: the template renders, the sender's address is one, the
/// audience has someone (409 `empty-audience`), an email connector is set up (409
/// `no-email-connector`), the plan has room (402 `emails_per_month`, under the limit's lock
/// until the transaction ends).
async fn readiness(tx: &mut Tx, c: &Campaign) -> Result<Ready, DomainError> {
    // The audience queries are costed high enough to be JIT-compiled, which takes longer (about
    // a second each) than running them.
    sqlx::query("select set_config('jit', 'off', true)")
        .execute(&mut **tx)
        .await?;
    let source = template_source(tx, c).await?;
    check_renders(tx, c, &source).await?;
    if let Err(issue) = Email::parse(&c.from_email) {
        return Err(DomainError::invalid("from_email", issue.code, issue.message));
    }
    let (tags, segments) = audience_of(tx, &c.audience.0).await?;
    let (sendable, suppressed) = if tags.is_empty() && segments.is_empty() {
        (0, 0)
    } else {
        count_audience(tx, &tags, &segments).await?
    };
    if sendable == 0 {
        return Err(DomainError::conflict(
            "empty-audience",
            format!(
                "the audience has nobody to send to: {} addresses match, {suppressed} of them suppressed; add \
                 segments or tags with contacts that have an email address",
                sendable + suppressed
            ),
        ));
    }
    let provider = connected_provider(tx, c.provider).await?;
    entitlements::lock(tx, Limit::EmailsPerMonth).await?;
    let used = emails_used(tx).await?;
    entitlements::ensure(tx, Limit::EmailsPerMonth, used, sendable).await?;
    Ok(Ready {
        source,
        provider,
        tags,
        segments,
        sendable,
        used,
    })
}

/// The SQL of a batch's id: derived from its campaign and number, so every statement that
/// writes a batch and its recipients names it alike without joining them (a join of 100,000
/// recipients to their batches, planned on rows without statistics, was a nested loop).
fn batch_id(campaign: &str, seq: &str) -> String {
    format!("md5({campaign}::text || ':' || {seq}::text)::uuid")
}

/// The freeze: recipients and batches in one statement, then the template and the status.
async fn freeze(tx: &mut Tx, c: &Campaign, ready: Ready, batch: i32) -> Result<(), DomainError> {
    let tenant_id: Uuid = sqlx::query_scalar("select app_current_tenant()")
        .fetch_one(&mut **tx)
        .await?;
    let split = c.ab.as_ref().map(|ab| {
        (
            ab.0.variants.len(),
            rules::ab_split(ready.sendable, ab.0.share, ab.0.variants.len()),
        )
    });
    let groups = rules::groups(split.map(|(n, s)| (n, s.per_variant)), batch);
    // Not `pg::fresh_plans`: forcing custom plans would also re-plan each of the foreign-key
    // checks of every row (three per recipient), four times slower than the insert itself.
    let mut qb = QueryBuilder::new("with params as (select ");
    qb.push_bind(groups.starts)
        .push("::int[] as starts, ")
        .push_bind(groups.labels)
        .push("::text[] as labels, ")
        .push_bind(groups.seq_base)
        .push("::int[] as seq_base, ")
        .push_bind(batch)
        .push("::int as batch, ")
        .push_bind(tenant_id)
        .push("::uuid as tenant_id, ")
        .push_bind(c.id)
        .push("::uuid as campaign_id, ")
        .push_bind(ready.provider)
        .push("::text as provider), matched as (");
    push_audience(&mut qb, &ready.tags, &ready.segments);
    qb.push(format!(
        "), numbered as ( \
           select m.contact_id, m.email, m.suppressed, case when m.suppressed then null \
             else (row_number() over (partition by m.suppressed order by random()) - 1)::int end as n \
           from matched m), \
         placed as ( \
           select x.*, case when x.n is null then null else width_bucket(x.n, p.starts) end as g \
           from numbered x, params p), \
         assigned as ( \
           select x.contact_id, x.email, x.suppressed, \
             case when x.g between 1 and cardinality(p.labels) then p.labels[x.g] end as variant, \
             case when x.g between 1 and cardinality(p.labels) \
               then p.seq_base[x.g] + (x.n - p.starts[x.g]) / p.batch end as seq \
           from placed x, params p), \
         new_batches as ( \
           insert into marketing_campaign_batches (id, tenant_id, campaign_id, seq, variant, recipients, provider) \
           select {BATCH_ID}, p.tenant_id, p.campaign_id, a.seq, min(a.variant), count(*)::int, p.provider \
           from assigned a, params p where a.seq is not null group by a.seq, p.tenant_id, p.campaign_id, p.provider) \
         insert into marketing_campaign_recipients (id, tenant_id, campaign_id, contact_id, email, variant, batch_id, \
           status) \
         select gen_random_uuid(), p.tenant_id, p.campaign_id, a.contact_id, a.email, a.variant, \
           case when a.seq is not null then {BATCH_ID} end, \
           case when a.suppressed then 'suppressed' else 'queued' end \
         from assigned a cross join params p \
         order by a.email \
         on conflict (campaign_id, email) do nothing",
        BATCH_ID = batch_id("p.campaign_id", "a.seq")
    ));
    qb.build().execute(&mut **tx).await?;
    // What was frozen is what counts: contacts may have changed since they were counted.
    let queued: i64 = sqlx::query_scalar(
        "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'queued'",
    )
    .bind(c.id)
    .fetch_one(&mut **tx)
    .await?;
    if queued == 0 {
        return Err(DomainError::conflict(
            "empty-audience",
            "the audience has nobody to send to",
        ));
    }
    entitlements::ensure(tx, Limit::EmailsPerMonth, ready.used, queued).await?;
    let wait = c.ab.as_ref().map(|ab| i64::from(ab.0.wait_minutes));
    let s = ready.source;
    sqlx::query(
        "update marketing_campaigns set status = 'sending', status_reason = null, started_at = now(), \
         scheduled_at = coalesce(scheduled_at, now()), provider = $2, batch_size = $3, snapshot_subject = $4, \
         snapshot_preheader = $5, snapshot_format = $6, snapshot_body = $7, snapshot_text_body = $8, \
         ab_decide_at = case when $9::bigint is null then null else now() + make_interval(mins => $9::int) end, \
         updated_at = now(), version = version + 1 where id = $1",
    )
    .bind(c.id)
    .bind(ready.provider)
    .bind(batch)
    .bind(&s.subject)
    .bind(&s.preheader)
    .bind(match s.format {
        BodyFormat::Html => "html",
        BodyFormat::Mjml => "mjml",
    })
    .bind(&s.body)
    .bind(&s.text)
    .bind(wait)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Starts a campaign now, in one transaction (see the module's docs), with batches of
/// `batch_size` (default 500, at most 1,000). Used by the scheduler for due campaigns and by
/// scheduling for now. A campaign that already started is answered as it is: a second start
/// changes nothing. Any failed check leaves nothing frozen.
pub async fn start(pool: &PgPool, scope: &Scope, id: Uuid, batch_size: Option<u32>) -> Result<Campaign, DomainError> {
    let batch = rules::batch_size(batch_size)?;
    let mut tx = pg::begin(pool, scope).await?;
    let c = fetch(&mut tx, id, true).await?;
    if c.started_at.is_none() {
        rules::allow(c.status, Action::Start)?;
        let ready = readiness(&mut tx, &c).await?;
        freeze(&mut tx, &c, ready, batch).await?;
    }
    let campaign = detail(&mut tx, id).await?;
    tx.commit().await?;
    Ok(campaign)
}

/// The scheduler's start of a due campaign: a scheduled campaign whose time has come starts;
/// one that cannot (its template no longer renders, nobody left to send to, the connector was
/// removed, the plan is full) is paused with the reason instead, nothing frozen, to be resumed
/// once fixed. Anything else (already started, not due, paused) is answered as it is.
pub async fn start_due(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    batch_size: Option<u32>,
) -> Result<Campaign, DomainError> {
    let now = Utc::now();
    let c = super::get(pool, scope, id).await?;
    if c.status != CampaignStatus::Scheduled || c.scheduled_at.is_some_and(|at| at > now) {
        return Ok(c);
    }
    match start(pool, scope, id, batch_size).await {
        Ok(c) => Ok(c),
        Err(refusal @ (DomainError::Conflict { .. } | DomainError::LimitExceeded { .. } | DomainError::Invalid(_))) => {
            let reason: String = match &refusal {
                DomainError::Conflict { detail, .. } => detail.clone(),
                DomainError::Invalid(errors) => errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            let mut tx = pg::begin(pool, scope).await?;
            sqlx::query(
                "update marketing_campaigns set status = 'paused', status_reason = left($2, 1000), \
                 updated_at = now(), version = version + 1 where id = $1 and status = 'scheduled'",
            )
            .bind(id)
            .bind(format!("could not start: {reason}"))
            .execute(&mut *tx)
            .await?;
            let campaign = detail(&mut tx, id).await?;
            tx.commit().await?;
            Ok(campaign)
        }
        Err(other) => Err(other),
    }
}

/// Checks a campaign as if it started now and schedules it for `send_at`, or starts it at once
/// without one. Draft or scheduled only (rescheduling moves the time). A time in the past (by
/// more than a minute) or more than a year ahead is a 422.
pub async fn schedule(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    request: ScheduleRequest,
) -> Result<Campaign, DomainError> {
    let now = Utc::now();
    let send_at = match request.send_at {
        Some(at) if at < now - Duration::seconds(LATE_GRACE_SECONDS) => {
            return Err(DomainError::invalid(
                "send_at",
                "in_the_past",
                "must be in the future; leave it out to send now",
            ));
        }
        Some(at) if at > now + Duration::days(MAX_SCHEDULE_DAYS) => {
            return Err(DomainError::invalid(
                "send_at",
                "too_far",
                format!("must be at most {MAX_SCHEDULE_DAYS} days ahead"),
            ));
        }
        Some(at) if at > now => Some(at),
        _ => None,
    };
    let Some(send_at) = send_at else {
        let mut tx = pg::begin(pool, scope).await?;
        let c = fetch(&mut tx, id, false).await?;
        rules::allow(c.status, Action::Schedule)?;
        tx.commit().await?;
        return start(pool, scope, id, None).await;
    };
    let mut tx = pg::begin(pool, scope).await?;
    let c = fetch(&mut tx, id, true).await?;
    rules::allow(c.status, Action::Schedule)?;
    readiness(&mut tx, &c).await?;
    sqlx::query(
        "update marketing_campaigns set status = 'scheduled', scheduled_at = $2, status_reason = null, \
         updated_at = now(), version = version + 1 where id = $1",
    )
    .bind(id)
    .bind(send_at)
    .execute(&mut *tx)
    .await?;
    let campaign = detail(&mut tx, id).await?;
    tx.commit().await?;
    Ok(campaign)
}

async fn set_status(tx: &mut Tx, id: Uuid, status: CampaignStatus, reason: Option<&str>) -> Result<(), DomainError> {
    sqlx::query(
        "update marketing_campaigns set status = $2, status_reason = $3, \
         finished_at = case when $2 in ('sent', 'cancelled', 'failed') then now() else finished_at end, \
         updated_at = now(), version = version + 1 where id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stops a scheduled or sending campaign: no further batch is claimed (one in flight finishes).
pub async fn pause(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<Campaign, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let c = fetch(&mut tx, id, true).await?;
    rules::allow(c.status, Action::Pause)?;
    set_status(&mut tx, id, CampaignStatus::Paused, None).await?;
    let campaign = detail(&mut tx, id).await?;
    tx.commit().await?;
    Ok(campaign)
}

/// Goes on: a campaign that had started is sending again (its pending batches are due at once);
/// one that had not is scheduled again (and starts at once if its time has passed).
pub async fn resume(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<Campaign, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let c = fetch(&mut tx, id, true).await?;
    rules::allow(c.status, Action::Resume)?;
    set_status(&mut tx, id, rules::resumed(c.started_at.is_some()), None).await?;
    // Every batch may have been recorded while it was paused.
    super::delivery::finish_if_done(&mut tx, id).await?;
    let campaign = detail(&mut tx, id).await?;
    tx.commit().await?;
    Ok(campaign)
}

/// Stops a scheduled, sending or paused campaign for good: its pending batches and every
/// recipient still queued (held A/B recipients included) are cancelled; a batch already with
/// the provider finishes, and what went out stays sent.
pub async fn cancel(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<Campaign, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let c = fetch(&mut tx, id, true).await?;
    rules::allow(c.status, Action::Cancel)?;
    set_status(&mut tx, id, CampaignStatus::Cancelled, None).await?;
    sqlx::query(
        "update marketing_campaign_batches set status = 'cancelled', updated_at = now() \
         where campaign_id = $1 and status = 'pending'",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update marketing_campaign_recipients set status = 'cancelled' where campaign_id = $1 and status = 'queued'",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let campaign = detail(&mut tx, id).await?;
    tx.commit().await?;
    Ok(campaign)
}

/// Chooses an A/B test's winner — the variant with the most unique opens (or clicks, per the
/// test), ties to the earlier letter — and batches the held recipients with it (variant
/// `winner`). Called by the scheduler once `ab_decide_at` has passed; a second call changes
/// nothing. A campaign without a test answers 409 `no-ab-test`; one not sending, 409 naming
/// its status.
pub async fn choose_winner(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<Campaign, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let c = fetch(&mut tx, id, true).await?;
    let Some(ab) = c.ab.as_ref().map(|ab| ab.0.clone()) else {
        return Err(DomainError::conflict("no-ab-test", "the campaign has no A/B test"));
    };
    if c.ab_winner.is_none() {
        if c.status != CampaignStatus::Sending {
            return Err(DomainError::conflict(
                "illegal-transition",
                format!("the campaign is {}: a winner is chosen while it is sending", c.status),
            ));
        }
        let measured: Vec<(String, i64)> = sqlx::query_as(
            "select variant, count(*) filter (where case when $2 then clicked_at else opened_at end is not null) \
             from marketing_campaign_recipients where campaign_id = $1 and variant in ('a', 'b', 'c', 'd', 'e') \
             group by variant",
        )
        .bind(id)
        .bind(ab.metric == AbMetric::Clicks)
        .fetch_all(&mut *tx)
        .await?;
        let counts: Vec<(String, i64)> = LETTERS
            .iter()
            .take(ab.variants.len())
            .map(|l| {
                let n = measured.iter().find(|(v, _)| v == l).map_or(0, |(_, n)| *n);
                ((*l).to_owned(), n)
            })
            .collect();
        let winner = rules::winner(&counts);
        let base: i32 = sqlx::query_scalar(
            "select coalesce(max(seq) + 1, 0) from marketing_campaign_batches where campaign_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "with held as ( \
               select r.id, $3 + (row_number() over (order by r.id) - 1)::int / $2 as seq \
               from marketing_campaign_recipients r \
               where r.campaign_id = $1 and r.status = 'queued' and r.batch_id is null), \
             new_batches as ( \
               insert into marketing_campaign_batches (id, tenant_id, campaign_id, seq, variant, recipients, provider) \
               select {held_batch}, app_current_tenant(), $1, h.seq, 'winner', count(*)::int, \
                 (select provider from marketing_campaigns where id = $1) \
               from held h group by h.seq) \
             update marketing_campaign_recipients r set variant = 'winner', batch_id = {held_batch} \
             from held h where r.id = h.id",
            held_batch = batch_id("$1", "h.seq")
        ))
        .bind(id)
        .bind(c_batch_size(&mut tx, id).await?)
        .bind(base)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "update marketing_campaigns set ab_winner = $2, updated_at = now(), version = version + 1 where id = $1",
        )
        .bind(id)
        .bind(&winner)
        .execute(&mut *tx)
        .await?;
        super::delivery::finish_if_done(&mut tx, id).await?;
    }
    let campaign = detail(&mut tx, id).await?;
    tx.commit().await?;
    Ok(campaign)
}

/// The batch size the campaign started with.
async fn c_batch_size(tx: &mut Tx, id: Uuid) -> Result<i32, DomainError> {
    let size: Option<i32> = sqlx::query_scalar("select batch_size from marketing_campaigns where id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    size.ok_or_else(|| DomainError::Internal(anyhow::anyhow!("a sending campaign without a batch size")))
}
