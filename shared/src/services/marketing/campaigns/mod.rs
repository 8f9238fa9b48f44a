//! Campaigns: a template sent from a sender identity to an audience (segments and/or tags,
//! minus the suppression list, one message per address), now or at a time, optionally with an
//! A/B subject test.
//!
//! draft -> scheduled -> sending -> sent, or paused, cancelled, failed (with a reason). A
//! campaign is edited only as a draft or scheduled. When it starts ([`lifecycle::start`]) its
//! template is frozen into it and its audience into one recipient row per address, numbered
//! into batches, in one transaction; from then on only the sender changes what is sent
//! ([`delivery`]: claim a batch, record the provider's answer), and progress and stats are
//! computed from the recipients and the provider's events ([`report`]).
//!
//! - [`rules`]: the pure rules (transitions, the A/B split and winner, batch numbering).
//! - [`lifecycle`]: schedule, start (the freeze), pause, resume, cancel, the A/B winner.
//! - [`delivery`]: the sender's side: what is due, claiming a batch, recording outcomes.
//! - [`report`]: progress by recipient status, stats from provider events.
//! - [`test_send`]: test messages for the tenant's members.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::render::{self, BodyFormat, TemplateSource, Vocabulary};
use crate::adapters::pg::{self, Tx};
use crate::domain::validate::{OptionalEmailSchema, OptionalTextSchema, TextSchema};
use crate::domain::{DomainError, Email, FieldError, PageParams, ResultPage, Scope, Text, Validator};
use crate::services::crm::fields::{self, Entity};
use crate::services::crm::input;
use crate::services::idempotency::{self, Created, IdempotencyKey};

pub mod delivery;
pub mod lifecycle;
pub mod report;
pub mod rules;
pub mod test_send;

pub use report::{CampaignStats, Progress};

/// The letters of A/B variants, in order.
pub const LETTERS: [&str; 5] = ["a", "b", "c", "d", "e"];
/// At most this many segments in one audience.
pub const MAX_SEGMENTS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum CampaignStatus {
    /// Being written; nothing is frozen.
    Draft,
    /// Checked and waiting for `scheduled_at`.
    Scheduled,
    /// Started: the audience is frozen and batches are going out.
    Sending,
    /// Stopped by a member or by the provider's refusals (`status_reason`); resumable.
    Paused,
    /// Every batch is done.
    Sent,
    /// Stopped for good; what had gone out stays sent.
    Cancelled,
    /// The provider refused every batch, or the campaign could not start when due
    /// (`status_reason`).
    Failed,
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Draft => "draft",
            CampaignStatus::Scheduled => "scheduled",
            CampaignStatus::Sending => "sending",
            CampaignStatus::Paused => "paused",
            CampaignStatus::Sent => "sent",
            CampaignStatus::Cancelled => "cancelled",
            CampaignStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for CampaignStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The email connector a campaign sends through (one type with the provider clients').
pub use crate::services::providers::email::EmailProvider;

/// Who receives a campaign: contacts in any of the segments or with any of the tags (with an
/// email address, not suppressed, one message per address).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignAudience {
    /// Segments of the tenant.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub segment_ids: Vec<Uuid>,
    /// Contacts with any of these tags (trimmed, lower case; 1 to 50 characters each).
    #[serde(default)]
    #[schema(value_type = Vec<TextSchema<50>>, inline, max_items = 50)]
    pub tags: Vec<String>,
}

impl CampaignAudience {
    pub fn is_empty(&self) -> bool {
        self.segment_ids.is_empty() && self.tags.is_empty()
    }
}

/// Which measure picks an A/B test's winner (unique recipients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AbMetric {
    #[default]
    Opens,
    Clicks,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbVariant {
    /// This variant's subject line; variables allowed.
    #[schema(value_type = TextSchema<998>, inline)]
    pub subject: String,
}

/// An A/B subject test: `share` of the audience is split evenly across the variants (`a`,
/// `b`, ... in order); after `wait_minutes` the variant with the most unique opens (or clicks)
/// goes to the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbTest {
    #[schema(min_items = 2, max_items = 5)]
    pub variants: Vec<AbVariant>,
    /// The share of the audience tested, 0.05 to 0.5.
    #[schema(minimum = 0.05, maximum = 0.5)]
    pub share: f64,
    #[serde(default)]
    pub metric: AbMetric,
    /// How long the test runs before the winner goes out: 30 minutes to 7 days.
    #[schema(minimum = 30, maximum = 10080)]
    pub wait_minutes: u32,
}

/// A campaign as written: the body of `POST /marketing/campaigns`, and the document a `PATCH`
/// (JSON merge patch) is applied to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignInput {
    #[schema(value_type = TextSchema<200>, inline)]
    pub name: String,
    /// A template of the tenant; needed to schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<Uuid>,
    /// The sender's name as inboxes show it.
    #[schema(value_type = TextSchema<100>, inline)]
    pub from_name: String,
    /// The sender's address (of a domain the email provider lets the tenant send from).
    #[schema(format = Email, max_length = 254)]
    pub from_email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OptionalEmailSchema>, inline)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub audience: CampaignAudience,
    /// The connector to send through; absent: the one connected (SendGrid when both are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<EmailProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab: Option<AbTest>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Campaign {
    pub id: Uuid,
    pub name: String,
    /// Absent when none was chosen yet, or the template was deleted since (a started campaign
    /// keeps its frozen copy).
    pub template_id: Option<Uuid>,
    pub from_name: String,
    pub from_email: String,
    pub reply_to: Option<String>,
    #[schema(value_type = CampaignAudience)]
    pub audience: Json<CampaignAudience>,
    /// The chosen connector; once started, the one it sends through.
    pub provider: Option<EmailProvider>,
    pub status: CampaignStatus,
    /// Why it is paused or failed.
    pub status_reason: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<AbTest>)]
    pub ab: Option<Json<AbTest>>,
    /// The winning variant's letter, once chosen.
    pub ab_winner: Option<String>,
    /// When the A/B winner is due to be chosen.
    pub ab_decide_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The ETag's number: send it back in `If-Match`.
    pub version: i32,
    /// Recipients by status (a single campaign's answers; lists leave it out).
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

impl Campaign {
    fn editable(&self) -> CampaignInput {
        CampaignInput {
            name: self.name.clone(),
            template_id: self.template_id,
            from_name: self.from_name.clone(),
            from_email: self.from_email.clone(),
            reply_to: self.reply_to.clone(),
            audience: self.audience.0.clone(),
            provider: self.provider,
            ab: self.ab.as_ref().map(|ab| ab.0.clone()),
        }
    }
}

const COLUMNS: &str = "id, name, template_id, from_name, from_email, reply_to, audience, provider, status, \
    status_reason, scheduled_at, started_at, finished_at, ab, ab_winner, ab_decide_at, created_by, created_at, \
    updated_at, version";

/// The campaign (not deleted), locked for the rest of the transaction when `lock`.
async fn fetch(tx: &mut Tx, id: Uuid, lock: bool) -> Result<Campaign, DomainError> {
    let lock = if lock { " for no key update" } else { "" };
    let row: Option<Campaign> = sqlx::query_as(&format!(
        "select {COLUMNS} from marketing_campaigns where id = $1 and deleted_at is null{lock}"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.ok_or(DomainError::NotFound)
}

/// The campaign with its progress, as a single campaign's answers show it.
async fn detail(tx: &mut Tx, id: Uuid) -> Result<Campaign, DomainError> {
    let mut campaign = fetch(tx, id, false).await?;
    campaign.progress = Some(report::progress(tx, id).await?);
    Ok(campaign)
}

/// A campaign ready to be stored.
struct Valid {
    name: String,
    from_name: String,
    from_email: String,
    reply_to: Option<String>,
    audience: CampaignAudience,
    ab: Option<AbTest>,
}

/// A one-line template of `subject` alone (an A/B variant's subject checked or rendered as
/// the template's is).
fn subject_only(subject: &str) -> TemplateSource {
    TemplateSource {
        subject: subject.to_owned(),
        preheader: None,
        format: BodyFormat::Html,
        body: "<p></p>".to_owned(),
        text: Some(" ".to_owned()),
    }
}

/// The checks of an A/B test that need no database but the vocabulary: 2 to 5 variants, each
/// subject well formed and naming only known variables, the share and the wait in range.
fn check_ab(ab: &AbTest, vocabulary: &Vocabulary, v: &mut Validator) {
    if !(2..=LETTERS.len()).contains(&ab.variants.len()) {
        v.error("ab.variants", "out_of_range", "must have 2 to 5 variants");
    }
    for (i, variant) in ab.variants.iter().enumerate() {
        let field = format!("ab.variants[{i}].subject");
        if v.field(&field, Text::parse(&variant.subject, 1, 998)).is_some()
            && let Err(issues) = render::validate(&subject_only(&variant.subject), vocabulary)
        {
            for issue in issues {
                let e = FieldError::from(issue);
                v.error(&field, "invalid_subject", e.message);
            }
        }
    }
    if !(ab.share.is_finite() && (0.05..=0.5).contains(&ab.share)) {
        v.error("ab.share", "out_of_range", "must be 0.05 to 0.5");
    }
    if !(30..=10_080).contains(&ab.wait_minutes) {
        v.error("ab.wait_minutes", "out_of_range", "must be 30 to 10080 (7 days)");
    }
}

/// Checks every field (all issues at once) inside the tenant's transaction: the template and
/// the segments must be the tenant's.
async fn validate(tx: &mut Tx, input: &CampaignInput) -> Result<Valid, DomainError> {
    let mut v = Validator::new();
    let name = v.field("name", Text::parse(&input.name, 1, 200)).map(Text::into_inner);
    let from_name = v
        .field("from_name", Text::parse(&input.from_name, 1, 100))
        .map(Text::into_inner);
    let from_email = v
        .field("from_email", Email::parse(&input.from_email))
        .map(|e| e.as_str().to_owned());
    let reply_to = match input.reply_to.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => v.field("reply_to", Email::parse(raw)).map(|e| e.as_str().to_owned()),
    };
    let tags = input::labels(&mut v, "audience.tags", &input.audience.tags);
    let mut segment_ids: Vec<Uuid> = Vec::new();
    for id in &input.audience.segment_ids {
        if !segment_ids.contains(id) {
            segment_ids.push(*id);
        }
    }
    if segment_ids.len() > MAX_SEGMENTS {
        v.error("audience.segment_ids", "too_many", format!("at most {MAX_SEGMENTS}"));
    } else if !segment_ids.is_empty() {
        let known: Vec<Uuid> = sqlx::query_scalar("select id from marketing_segments where id = any($1)")
            .bind(&segment_ids)
            .fetch_all(&mut **tx)
            .await?;
        for (i, id) in input.audience.segment_ids.iter().enumerate() {
            if !known.contains(id) {
                v.error(
                    &format!("audience.segment_ids[{i}]"),
                    "not_found",
                    "no segment of this tenant has this id",
                );
            }
        }
    }
    if let Some(template_id) = input.template_id {
        let known: bool = sqlx::query_scalar("select exists (select 1 from marketing_templates where id = $1)")
            .bind(template_id)
            .fetch_one(&mut **tx)
            .await?;
        if !known {
            v.error("template_id", "not_found", "no template of this tenant has this id");
        }
    }
    if let Some(ab) = &input.ab {
        let defs = fields::definitions(tx, Entity::Contact).await?;
        let vocabulary = Vocabulary {
            custom_fields: defs.into_iter().map(|f| f.key).collect(),
        };
        check_ab(ab, &vocabulary, &mut v);
    }
    v.finish()?;
    Ok(Valid {
        name: name.unwrap_or_default(),
        from_name: from_name.unwrap_or_default(),
        from_email: from_email.unwrap_or_default(),
        reply_to,
        audience: CampaignAudience { segment_ids, tags },
        ab: input.ab.clone(),
    })
}

/// Creates a draft. Honours `Idempotency-Key`.
pub async fn create(
    pool: &PgPool,
    scope: &Scope,
    input: CampaignInput,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<Campaign>, DomainError> {
    let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    fields::lock_definitions(&mut tx, false).await?;
    let c = validate(&mut tx, &input).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into marketing_campaigns (id, tenant_id, name, template_id, from_name, from_email, reply_to, \
         audience, provider, ab, created_by) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(&c.name)
    .bind(input.template_id)
    .bind(&c.from_name)
    .bind(&c.from_email)
    .bind(&c.reply_to)
    .bind(Json(&c.audience))
    .bind(input.provider)
    .bind(c.ab.as_ref().map(Json))
    .bind(scope.actor.person())
    .execute(&mut *tx)
    .await?;
    let campaign = detail(&mut tx, id).await?;
    idempotency::store(&mut tx, scope, idem, 201, &campaign).await?;
    tx.commit().await?;
    Ok(Created::Fresh(campaign))
}

/// The campaign with its progress.
pub async fn get(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<Campaign, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let campaign = detail(&mut tx, id).await?;
    tx.commit().await?;
    Ok(campaign)
}

/// Applies a JSON merge patch (`null` clears) to a draft or scheduled campaign and checks the
/// result as a creation is. Sending: 409 `campaign-sending`; any other status: 409 naming it.
/// A stale `If-Match` version answers 412 (after the body is found valid).
pub async fn update(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    patch: Value,
    if_match: Option<i32>,
) -> Result<Campaign, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    fields::lock_definitions(&mut tx, false).await?;
    let current = fetch(&mut tx, id, true).await?;
    rules::allow(current.status, rules::Action::Edit)?;
    let (input, changed) = input::patched(&current.editable(), &patch)?;
    let c = validate(&mut tx, &input).await?;
    if if_match.is_some_and(|v| v != current.version) {
        return Err(DomainError::StaleVersion);
    }
    if !changed.is_empty() {
        sqlx::query(
            "update marketing_campaigns set name = $2, template_id = $3, from_name = $4, from_email = $5, \
             reply_to = $6, audience = $7, provider = $8, ab = $9, updated_at = now(), version = version + 1 \
             where id = $1",
        )
        .bind(id)
        .bind(&c.name)
        .bind(input.template_id)
        .bind(&c.from_name)
        .bind(&c.from_email)
        .bind(&c.reply_to)
        .bind(Json(&c.audience))
        .bind(input.provider)
        .bind(c.ab.as_ref().map(Json))
        .execute(&mut *tx)
        .await?;
    }
    let campaign = detail(&mut tx, id).await?;
    tx.commit().await?;
    Ok(campaign)
}

/// Deletes a draft, cancelled, sent or failed campaign. One that never started is removed; one
/// that started is hidden (its recipients stay: they are the month's usage, and the provider's
/// late events still find them).
pub async fn delete(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let current = fetch(&mut tx, id, true).await?;
    rules::allow(current.status, rules::Action::Delete)?;
    let sql = if current.started_at.is_none() {
        "delete from marketing_campaigns where id = $1"
    } else {
        "update marketing_campaigns set deleted_at = now(), updated_at = now(), version = version + 1 where id = $1"
    };
    sqlx::query(sql).bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// `GET /marketing/campaigns` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CampaignListParams {
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
    /// Campaigns whose name contains this (case-insensitive).
    #[param(value_type = Option<OptionalTextSchema<200>>, inline)]
    pub q: Option<String>,
    /// Only campaigns in this status.
    #[param(value_type = Option<CampaignStatus>)]
    pub status: Option<CampaignStatus>,
}

/// The tenant's campaigns, most recently changed first (without progress).
pub async fn list(
    pool: &PgPool,
    scope: &Scope,
    params: CampaignListParams,
) -> Result<ResultPage<Campaign>, DomainError> {
    let page = pg::time_page_request(&params.page)?;
    let mut v = Validator::new();
    let q = input::optional_text(&mut v, "q", params.q.as_deref(), 200).map(|q| q.to_lowercase());
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    let rows: Vec<Campaign> = sqlx::query_as(&format!(
        "select {COLUMNS} from marketing_campaigns \
         where deleted_at is null and ($1::timestamptz is null or (updated_at, id) < ($1, $2)) \
           and ($4::text is null or strpos(lower(name), $4) > 0) and ($5::text is null or status = $5) \
         order by updated_at desc, id desc limit $3"
    ))
    .bind(page.after.map(|a| a.0))
    .bind(page.after.map(|a| a.1))
    .bind(page.fetch())
    .bind(q)
    .bind(params.status)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |c| (c.updated_at, c.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ab(subjects: &[&str], share: f64, wait_minutes: u32) -> AbTest {
        AbTest {
            variants: subjects
                .iter()
                .map(|s| AbVariant {
                    subject: (*s).to_owned(),
                })
                .collect(),
            share,
            metric: AbMetric::Opens,
            wait_minutes,
        }
    }

    fn fields_of(v: Validator) -> Vec<String> {
        let mut f: Vec<String> = v.into_errors().into_iter().map(|e| e.field).collect();
        f.sort();
        f
    }

    #[test]
    fn an_ab_test_is_checked_field_by_field() {
        // Given a test with one unknown variable, an empty subject, a share and a wait out of range
        let mut v = Validator::new();
        check_ab(
            &ab(
                &["Hi {{ contact.first_name }}", "Hi {{ contact.nickname }}", " "],
                0.6,
                5,
            ),
            &Vocabulary::default(),
            &mut v,
        );
        // Then each is named
        assert_eq!(
            fields_of(v),
            [
                "ab.share",
                "ab.variants[1].subject",
                "ab.variants[2].subject",
                "ab.wait_minutes"
            ]
        );
        // And a good one passes, with a custom field the tenant has
        let mut v = Validator::new();
        let vocabulary = Vocabulary {
            custom_fields: vec!["plan".into()],
        };
        check_ab(
            &ab(&["A", "B {{ contact.custom.plan }}"], 0.05, 30),
            &vocabulary,
            &mut v,
        );
        assert!(v.finish().is_ok());
        // One variant is no test
        let mut v = Validator::new();
        check_ab(&ab(&["A"], 0.2, 60), &Vocabulary::default(), &mut v);
        assert_eq!(fields_of(v), ["ab.variants"]);
    }

    #[test]
    fn statuses_and_providers_read_as_stored() {
        assert_eq!(CampaignStatus::Cancelled.to_string(), "cancelled");
        assert_eq!(EmailProvider::Mailgun.as_str(), "mailgun");
        assert_eq!(EmailProvider::ALL[0], EmailProvider::Sendgrid);
    }
}
