//! Email templates: a subject, a preheader, a body (HTML, or MJML compiled to responsive HTML)
//! and an optional text part, written with variables (`{{ contact.first_name }}`). Saving
//! checks every variable against the tenant's vocabulary — the fixed variables of
//! [`render`] and the keys of the tenant's custom contact fields — with [`render::validate`],
//! so a campaign never meets an unknown one at send time. A preview renders the template for one
//! of the tenant's contacts, or for the engine's sample contact.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;
use sqlx::types::Json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::render::{
    self, BodyFormat, CompanyVars, ContactVars, RenderContext, TemplateIssue, TemplateSource, TenantVars, Vocabulary,
};
use crate::adapters::pg::{self, Tx};
use crate::domain::validate::{OptionalTextSchema, TextSchema};
use crate::domain::{DomainError, FieldError, PageParams, ResultPage, Scope, Text, Validator};
use crate::services::crm::fields::{self, Entity};
use crate::services::crm::input;
use crate::services::idempotency::{self, Created, IdempotencyKey};

/// The most characters of a body and of a text part (the table's limits; the engine's are
/// wider). A body one character too long still fits in a request (256 KiB), so it is answered
/// 422 naming `body`, not 413.
pub const MAX_BODY_CHARS: usize = 204_800;
pub const MAX_TEXT_CHARS: usize = 131_072;
/// The most characters of a preheader (inboxes show about a hundred).
pub const MAX_PREHEADER_CHARS: usize = 500;

/// The format as the table stores it (`html`, `mjml`).
fn format_name(format: BodyFormat) -> &'static str {
    match format {
        BodyFormat::Html => "html",
        BodyFormat::Mjml => "mjml",
    }
}

impl TryFrom<String> for BodyFormat {
    type Error = String;

    /// Reads the `format` column of `marketing_templates`.
    fn try_from(stored: String) -> Result<Self, Self::Error> {
        match stored.as_str() {
            "html" => Ok(BodyFormat::Html),
            "mjml" => Ok(BodyFormat::Mjml),
            other => Err(format!("unknown template format {other:?}")),
        }
    }
}

/// A template as written: the body of `POST /marketing/templates`, and the document a `PATCH`
/// (JSON merge patch) is applied to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailTemplateInput {
    #[schema(value_type = TextSchema<200>, inline)]
    pub name: String,
    /// The subject line; variables allowed.
    #[schema(value_type = TextSchema<998>, inline)]
    pub subject: String,
    /// The preview text inboxes show after the subject; variables allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OptionalTextSchema<500>>, inline)]
    pub preheader: Option<String>,
    #[serde(default)]
    pub format: BodyFormat,
    /// HTML or MJML (per `format`), at most 204,800 characters; variables allowed.
    #[schema(min_length = 1, max_length = 204800)]
    pub body: String,
    /// The text part, at most 131,072 characters; variables allowed. Without it the text is
    /// derived from the HTML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 131072)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct EmailTemplate {
    pub id: Uuid,
    pub name: String,
    pub subject: String,
    pub preheader: Option<String>,
    #[sqlx(try_from = "String")]
    pub format: BodyFormat,
    pub body: String,
    pub text: Option<String>,
    /// The member who created it, if a person did.
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The ETag's number: send it back in `If-Match`.
    pub version: i32,
}

impl EmailTemplate {
    fn editable(&self) -> EmailTemplateInput {
        EmailTemplateInput {
            name: self.name.clone(),
            subject: self.subject.clone(),
            preheader: self.preheader.clone(),
            format: self.format,
            body: self.body.clone(),
            text: self.text.clone(),
        }
    }

    fn source(&self) -> TemplateSource {
        TemplateSource {
            subject: self.subject.clone(),
            preheader: self.preheader.clone(),
            format: self.format,
            body: self.body.clone(),
            text: self.text.clone(),
        }
    }
}

/// A template in a list: everything but its body and text part.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct EmailTemplateSummary {
    pub id: Uuid,
    pub name: String,
    pub subject: String,
    pub preheader: Option<String>,
    #[sqlx(try_from = "String")]
    pub format: BodyFormat,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i32,
}

/// The body of `POST /marketing/templates/{id}/preview`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailPreviewRequest {
    /// A contact of the tenant to render for; without it, a sample contact.
    #[serde(default)]
    pub contact_id: Option<Uuid>,
}

/// What a recipient would get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EmailPreview {
    /// One line.
    pub subject: String,
    /// One line, as the inbox shows it (absent when the template has none).
    pub preheader: Option<String>,
    /// The HTML part: MJML compiled, CSS inlined, values escaped, the preheader as hidden
    /// preview text first in the body.
    pub html: String,
    /// The text part: the template's own, or derived from the HTML.
    pub text: String,
}

const COLUMNS: &str =
    "id, name, subject, preheader, format, body, text_body as text, created_by, created_at, updated_at, version";
const SUMMARY_COLUMNS: &str = "id, name, subject, preheader, format, created_by, created_at, updated_at, version";

/// The checks of a template that need no database: every part (all issues at once), then —
/// when the parts are well formed — every variable and the MJML with
/// [`render::validate`] (issues name the part and the line: `body`, "line 12: ...").
/// Answers the source to store.
pub fn check(input: &EmailTemplateInput, vocabulary: &Vocabulary) -> Result<TemplateSource, DomainError> {
    let mut v = Validator::new();
    let subject = v
        .field("subject", Text::parse(&input.subject, 1, 998))
        .map(Text::into_inner);
    let preheader = input::optional_text(&mut v, "preheader", input.preheader.as_deref(), MAX_PREHEADER_CHARS);
    if input.body.trim().is_empty() {
        v.error("body", "required", "must not be empty");
    } else if input.body.chars().count() > MAX_BODY_CHARS {
        v.error(
            "body",
            "too_long",
            format!("must be at most {MAX_BODY_CHARS} characters"),
        );
    }
    let text = input.text.as_deref().filter(|t| !t.trim().is_empty());
    if text.is_some_and(|t| t.chars().count() > MAX_TEXT_CHARS) {
        v.error(
            "text",
            "too_long",
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        );
    }
    let source = TemplateSource {
        subject: subject.unwrap_or_default(),
        preheader,
        format: input.format,
        body: input.body.clone(),
        text: text.map(str::to_owned),
    };
    let mut errors = v.into_errors();
    if errors.is_empty()
        && let Err(issues) = render::validate(&source, vocabulary)
    {
        errors.extend(issues.into_iter().map(FieldError::from));
    }
    if errors.is_empty() {
        Ok(source)
    } else {
        Err(DomainError::Invalid(errors))
    }
}

/// The tenant's vocabulary: the keys of its custom contact fields (read in the caller's
/// transaction, under the definitions' lock).
async fn vocabulary(tx: &mut Tx) -> Result<Vocabulary, DomainError> {
    let defs = fields::definitions(tx, Entity::Contact).await?;
    Ok(Vocabulary {
        custom_fields: defs.into_iter().map(|f| f.key).collect(),
    })
}

/// Checks every field and variable inside the tenant's transaction; answers the name and the
/// source to store.
async fn validate(tx: &mut Tx, input: &EmailTemplateInput) -> Result<(String, TemplateSource), DomainError> {
    let vocabulary = vocabulary(tx).await?;
    let name = Text::parse(&input.name, 1, 200);
    let checked = check(input, &vocabulary);
    match (name, checked) {
        (Ok(name), Ok(source)) => Ok((name.into_inner(), source)),
        (name, checked) => {
            let mut errors = Vec::new();
            if let Err(issue) = name {
                errors.push(FieldError::new("name", issue.code, issue.message));
            }
            if let Err(DomainError::Invalid(more)) = checked {
                errors.extend(more);
            }
            Err(DomainError::Invalid(errors))
        }
    }
}

async fn fetch(tx: &mut Tx, id: Uuid, lock: bool) -> Result<EmailTemplate, DomainError> {
    let lock = if lock { " for no key update" } else { "" };
    let row: Option<EmailTemplate> = sqlx::query_as(&format!(
        "select {COLUMNS} from marketing_templates where id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.ok_or(DomainError::NotFound)
}

/// Creates a template whose every variable is known. Honours `Idempotency-Key`.
pub async fn create(
    pool: &PgPool,
    scope: &Scope,
    input: EmailTemplateInput,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<EmailTemplate>, DomainError> {
    let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    // A custom field cannot be removed between the check and the commit.
    fields::lock_definitions(&mut tx, false).await?;
    let (name, t) = validate(&mut tx, &input).await?;
    let template: EmailTemplate = sqlx::query_as(&format!(
        "insert into marketing_templates (id, tenant_id, name, subject, preheader, format, body, text_body, created_by) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(&name)
    .bind(&t.subject)
    .bind(&t.preheader)
    .bind(format_name(t.format))
    .bind(&t.body)
    .bind(&t.text)
    .bind(scope.actor.person())
    .fetch_one(&mut *tx)
    .await?;
    idempotency::store(&mut tx, scope, idem, 201, &template).await?;
    tx.commit().await?;
    Ok(Created::Fresh(template))
}

pub async fn get(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<EmailTemplate, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let template = fetch(&mut tx, id, false).await?;
    tx.commit().await?;
    Ok(template)
}

/// Applies a JSON merge patch (`null` clears) and checks the result as a creation is; a stale
/// `If-Match` version answers 412 (after the body is found valid).
pub async fn update(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    patch: Value,
    if_match: Option<i32>,
) -> Result<EmailTemplate, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    fields::lock_definitions(&mut tx, false).await?;
    let current = fetch(&mut tx, id, true).await?;
    let (input, changed) = input::patched(&current.editable(), &patch)?;
    let (name, t) = validate(&mut tx, &input).await?;
    if if_match.is_some_and(|v| v != current.version) {
        return Err(DomainError::StaleVersion);
    }
    if changed.is_empty() {
        tx.commit().await?;
        return Ok(current);
    }
    let template: EmailTemplate = sqlx::query_as(&format!(
        "update marketing_templates set name = $2, subject = $3, preheader = $4, format = $5, body = $6, \
         text_body = $7, updated_at = now(), version = version + 1 where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(&name)
    .bind(&t.subject)
    .bind(&t.preheader)
    .bind(format_name(t.format))
    .bind(&t.body)
    .bind(&t.text)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(template)
}

pub async fn delete(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let gone = sqlx::query("delete from marketing_templates where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(DomainError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// `GET /marketing/templates` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TemplateListParams {
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
    /// Templates whose name or subject contains this (case-insensitive).
    #[param(value_type = Option<OptionalTextSchema<200>>, inline)]
    pub q: Option<String>,
    /// Only templates written in this format.
    #[param(value_type = Option<BodyFormat>)]
    pub format: Option<BodyFormat>,
}

/// The tenant's templates, most recently changed first, without their bodies.
pub async fn list(
    pool: &PgPool,
    scope: &Scope,
    params: TemplateListParams,
) -> Result<ResultPage<EmailTemplateSummary>, DomainError> {
    let page = pg::time_page_request(&params.page)?;
    let mut v = Validator::new();
    let q = input::optional_text(&mut v, "q", params.q.as_deref(), 200).map(|q| q.to_lowercase());
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    let rows: Vec<EmailTemplateSummary> = sqlx::query_as(&format!(
        "select {SUMMARY_COLUMNS} from marketing_templates \
         where ($1::timestamptz is null or (updated_at, id) < ($1, $2)) \
           and ($4::text is null or strpos(lower(name), $4) > 0 or strpos(lower(subject), $4) > 0) \
           and ($5::text is null or format = $5) \
         order by updated_at desc, id desc limit $3"
    ))
    .bind(page.after.map(|a| a.0))
    .bind(page.after.map(|a| a.1))
    .bind(page.fetch())
    .bind(q)
    .bind(params.format.map(format_name))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |t| (t.updated_at, t.id)))
}

/// A contact as a template reads it.
#[derive(sqlx::FromRow)]
struct Recipient {
    email: Option<String>,
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

/// What `contact_id` renders with: its fields and its company's, the tenant's name, and the
/// sample context's links (campaigns give each recipient theirs when they send). `None`: the
/// engine's sample contact.
async fn context(tx: &mut Tx, contact_id: Option<Uuid>) -> Result<RenderContext, DomainError> {
    let tenant: String = sqlx::query_scalar("select name from tenants where id = app_current_tenant()")
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DomainError::NotFound)?;
    let sample = render::sample_context(&tenant);
    let Some(contact_id) = contact_id else {
        return Ok(sample);
    };
    let r: Recipient = sqlx::query_as(
        "select c.email, c.first_name, c.last_name, c.phone, c.title, c.lifecycle_stage, c.tags, c.custom, \
         co.name as company_name, co.domain as company_domain, co.industry as company_industry \
         from crm_contacts c left join crm_companies co on co.id = c.company_id where c.id = $1",
    )
    .bind(contact_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(DomainError::NotFound)?;
    Ok(RenderContext {
        contact: ContactVars {
            email: r.email.unwrap_or_default(),
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
        tenant: TenantVars { name: tenant },
        ..sample
    })
}

/// A stored template that the engine refuses for this recipient (a limit its data reaches):
/// the template must change, not the request.
fn render_failed(issues: Vec<TemplateIssue>) -> DomainError {
    let said: Vec<String> = issues.into_iter().map(|i| FieldError::from(i).message).collect();
    DomainError::conflict(
        "template-render-failed",
        format!("the template cannot be rendered: {}", said.join("; ")),
    )
}

/// Renders the template for `contact_id` (a contact of the tenant: another's is 404 as any
/// unknown id) or for the sample contact.
pub async fn preview(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    request: EmailPreviewRequest,
) -> Result<EmailPreview, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let template = fetch(&mut tx, id, false).await?;
    let ctx = context(&mut tx, request.contact_id).await?;
    tx.commit().await?;
    let source = template.source();
    let rendered = render::render(&source, &ctx).map_err(render_failed)?;
    // The preheader as one line of text, filled in as the subject is (no HTML escaping: this
    // is text, and the HTML part carries its escaped copy).
    let preheader = match &source.preheader {
        Some(preheader) => {
            let line = TemplateSource {
                subject: preheader.clone(),
                preheader: None,
                format: BodyFormat::Html,
                body: "<p></p>".to_owned(),
                text: Some(String::new()),
            };
            Some(render::render(&line, &ctx).map_err(render_failed)?.subject)
        }
        None => None,
    };
    Ok(EmailPreview {
        subject: rendered.subject,
        preheader,
        html: rendered.html,
        text: rendered.text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(subject: &str, body: &str) -> EmailTemplateInput {
        EmailTemplateInput {
            name: "Welcome".into(),
            subject: subject.into(),
            body: body.into(),
            ..EmailTemplateInput::default()
        }
    }

    fn errors(result: Result<TemplateSource, DomainError>) -> Vec<FieldError> {
        match result {
            Err(DomainError::Invalid(errors)) => errors,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_variable_is_named_with_its_part_and_line() {
        // Given a body whose third line names a field the tenant does not have
        let body = "<p>Hi {{ contact.first_name }},</p>\n<p>Your plan:</p>\n<p>{{ contact.custom.plan }}</p>";
        // When it is checked against a vocabulary without it
        let e = errors(check(&input("Hello", body), &Vocabulary::default()));
        // Then the error names the part, the line and the variable
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].field.as_str(), e[0].code.as_str()), ("body", "unknown_variable"));
        assert!(e[0].message.contains("line 3"), "{}", e[0].message);
        assert!(e[0].message.contains("contact.custom.plan"), "{}", e[0].message);
        // And with the field defined it passes
        let vocab = Vocabulary {
            custom_fields: vec!["plan".into()],
        };
        assert!(check(&input("Hello", body), &vocab).is_ok());
    }

    #[test]
    fn field_checks_come_first_and_together() {
        // Given an empty subject, a blank body and a preheader that is too long
        let mut i = input(" ", "  ");
        i.preheader = Some("x".repeat(MAX_PREHEADER_CHARS + 1));
        // When checked, then each is named and the engine is not asked about broken parts
        let mut fields: Vec<String> = errors(check(&i, &Vocabulary::default()))
            .into_iter()
            .map(|e| e.field)
            .collect();
        fields.sort();
        assert_eq!(fields, ["body", "preheader", "subject"]);
    }

    #[test]
    fn formats_round_trip_through_the_table() {
        for f in [BodyFormat::Html, BodyFormat::Mjml] {
            assert_eq!(BodyFormat::try_from(format_name(f).to_owned()), Ok(f));
        }
        assert!(BodyFormat::try_from("pdf".to_owned()).is_err());
    }
}
