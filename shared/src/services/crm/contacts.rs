//! Contacts: the people a tenant sells to. Email is unique per tenant (case-insensitive);
//! custom fields are typed by the tenant's definitions; every change lands on the timeline;
//! merging a duplicate moves every link to the kept contact.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use sqlx::types::Json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::activity::{self, Activity, Subject};
use super::fields::{self, Entity};
use super::input::{self, Address};
use super::listing::{Searched, SortSpec};
use super::record::{self, BindCommon, Common, Filters, Record, Table};
use crate::adapters::pg::{self, Tx};
use crate::domain::validate::{OptionalEmailSchema, OptionalTextSchema, TextSchema};
use crate::domain::{DomainError, Email, PageParams, ResultPage, Scope, Validator};
use crate::services::billing::entitlements::{self, Limit};
use crate::services::idempotency::{Created, IdempotencyKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum LifecycleStage {
    Subscriber,
    #[default]
    Lead,
    MarketingQualified,
    SalesQualified,
    Opportunity,
    Customer,
    Evangelist,
    Other,
}

/// A contact as written: the body of `POST /crm/contacts`, and the document a `PATCH` (JSON
/// merge patch) is applied to. At least one of first name, last name and email.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    /// At most 100 characters.
    #[serde(default)]
    #[schema(value_type = OptionalTextSchema<100>, inline)]
    pub first_name: String,
    /// At most 100 characters.
    #[serde(default)]
    #[schema(value_type = OptionalTextSchema<100>, inline)]
    pub last_name: String,
    /// Unique per tenant; blank is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OptionalEmailSchema>, inline)]
    pub email: Option<String>,
    /// A phone number as people write it: digits with spaces, `+ - ( ) . /` and an extension
    /// (`x123`), at most 40 characters with at least 4 digits; blank is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 40, pattern = r"^( *|([ +().x/X-]*[0-9]){4}[0-9 +().x/X-]*)$")]
    pub phone: Option<String>,
    /// As `phone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 40, pattern = r"^( *|([ +().x/X-]*[0-9]){4}[0-9 +().x/X-]*)$")]
    pub mobile: Option<String>,
    /// Job title, at most 120 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OptionalTextSchema<120>>, inline)]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_id: Option<Uuid>,
    /// A member of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Uuid>,
    #[serde(default)]
    pub lifecycle_stage: LifecycleStage,
    /// At most 50, each 1–50 characters (stored in lower case).
    #[serde(default)]
    #[schema(value_type = Vec<TextSchema<50>>, inline, max_items = 50)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub address: Address,
    /// Free text over several lines (line breaks and tabs allowed), at most 20,000 characters.
    #[serde(default)]
    #[schema(max_length = 20_000, pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$")]
    pub notes: String,
    /// Where the contact came from (default `manual`): lower-case letters, digits, `_` and `-`,
    /// at most 40.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 40, pattern = r"^ *[a-z0-9_-]* *$")]
    pub source: Option<String>,
    /// Values of the tenant's custom fields, by key.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub custom: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Contact {
    pub id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    /// Further addresses (those of merged duplicates).
    pub other_emails: Vec<String>,
    pub phone: Option<String>,
    pub mobile: Option<String>,
    pub title: Option<String>,
    pub company_id: Option<Uuid>,
    pub company_name: Option<String>,
    pub owner_id: Option<Uuid>,
    pub lifecycle_stage: LifecycleStage,
    pub tags: Vec<String>,
    #[schema(value_type = Address)]
    pub address: Json<Address>,
    pub notes: String,
    pub source: String,
    #[schema(value_type = Object)]
    pub custom: Json<Map<String, Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The ETag's number: send it back in `If-Match`.
    pub version: i32,
}

impl Record for Contact {
    const TABLE: Table = Table {
        name: "crm_contacts",
        alias: "c",
        columns: COLUMNS,
        from: "crm_contacts c left join crm_companies co on co.id = c.company_id",
        entity: Entity::Contact,
        search_entity: "contact",
        searched: &[
            Searched {
                expr: "c.search_text",
                weight: 1.0,
            },
            Searched {
                expr: "co.search_text",
                weight: 0.9,
            },
        ],
        sorts: SORTS,
        default_sort: "-created_at",
        subject: Subject::Contact,
    };
    type Input = ContactInput;

    fn id(&self) -> Uuid {
        self.id
    }

    fn version(&self) -> i32 {
        self.version
    }

    fn editable(&self) -> ContactInput {
        ContactInput {
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            mobile: self.mobile.clone(),
            title: self.title.clone(),
            company_id: self.company_id,
            owner_id: self.owner_id,
            lifecycle_stage: self.lifecycle_stage,
            tags: self.tags.clone(),
            address: self.address.0.clone(),
            notes: self.notes.clone(),
            source: Some(self.source.clone()),
            custom: self.custom.0.clone(),
        }
    }
}

/// The company of a contact, as the detail shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct CompanyRef {
    pub id: Uuid,
    pub name: String,
    pub domain: Option<String>,
}

/// A deal of the contact, as its detail lists them.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct ContactDeal {
    pub id: Uuid,
    pub title: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: super::deals::Status,
    pub stage_id: Uuid,
    pub stage_name: String,
    pub expected_close: Option<chrono::NaiveDate>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactDetail {
    #[serde(flatten)]
    pub contact: Contact,
    pub company: Option<CompanyRef>,
    /// Its deals, open ones first, newest first (at most 50).
    pub deals: Vec<ContactDeal>,
    /// The newest entries of the timeline (at most 20).
    pub activity: Vec<Activity>,
}

const COLUMNS: &str = "c.id, c.first_name, c.last_name, c.email, c.other_emails, c.phone, c.mobile, c.title, \
    c.company_id, (select co.name from crm_companies co where co.id = c.company_id) as company_name, c.owner_id, \
    c.lifecycle_stage, c.tags, c.address, c.notes, c.source, c.custom, c.created_at, c.updated_at, c.version";

/// A contact ready to be stored.
pub(super) struct Valid {
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub mobile: Option<String>,
    pub title: Option<String>,
    pub company_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub stage: LifecycleStage,
    pub common: Common,
}

/// The checks that need no database: every field, the custom values against `defs`.
pub(super) fn check(input: &ContactInput, defs: &[fields::CustomField], v: &mut Validator) -> Valid {
    let first_name = input::text(v, "first_name", &input.first_name, 100);
    let last_name = input::text(v, "last_name", &input.last_name, 100);
    let email = input
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .and_then(|e| v.field("email", Email::parse(e)))
        .map(|e| e.as_str().to_owned());
    if first_name.is_empty() && last_name.is_empty() && input.email.as_deref().is_none_or(|e| e.trim().is_empty()) {
        v.error(
            "first_name",
            "required",
            "a contact needs a first name, a last name or an email",
        );
    }
    Valid {
        first_name,
        last_name,
        email,
        phone: input::phone(v, "phone", input.phone.as_deref()),
        mobile: input::phone(v, "mobile", input.mobile.as_deref()),
        title: input::optional_text(v, "title", input.title.as_deref(), 120),
        company_id: input.company_id,
        owner_id: input.owner_id,
        stage: input.lifecycle_stage,
        common: Common::check(
            v,
            &input.tags,
            &input.address,
            &input.notes,
            input.source.as_deref(),
            &input.custom,
            defs,
        ),
    }
}

/// Checks every field (all issues at once), the custom values against the definitions, the
/// owner's membership and the company's existence, inside the tenant's transaction.
async fn validate(tx: &mut Tx, input: &ContactInput) -> Result<Valid, DomainError> {
    let mut v = Validator::new();
    let defs = fields::definitions(tx, Entity::Contact).await?;
    let valid = check(input, &defs, &mut v);
    input::check_owner(tx, &mut v, input.owner_id).await?;
    if let Some(company) = input.company_id {
        let known: bool = sqlx::query_scalar("select exists (select 1 from crm_companies where id = $1)")
            .bind(company)
            .fetch_one(&mut **tx)
            .await?;
        if !known {
            v.error("company_id", "not_found", "no company of this tenant has this id");
        }
    }
    v.finish()?;
    Ok(valid)
}

fn email_taken() -> DomainError {
    DomainError::conflict("email-exists", "another contact of the tenant has this email")
}

pub async fn create(
    pool: &PgPool,
    scope: &Scope,
    input: ContactInput,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<Contact>, DomainError> {
    let (mut tx, tenant_id) = match record::begin_create(pool, scope, idem).await? {
        Ok(begun) => begun,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    let c = validate(&mut tx, &input).await?;
    entitlements::lock(&mut tx, Limit::Contacts).await?;
    let used: i64 = sqlx::query_scalar("select count(*) from crm_contacts")
        .fetch_one(&mut *tx)
        .await?;
    entitlements::ensure(&mut tx, Limit::Contacts, used, 1).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into crm_contacts (id, tenant_id, first_name, last_name, email, phone, mobile, title, company_id, \
         owner_id, lifecycle_stage, tags, address, notes, source, custom) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(&c.first_name)
    .bind(&c.last_name)
    .bind(&c.email)
    .bind(&c.phone)
    .bind(&c.mobile)
    .bind(&c.title)
    .bind(c.company_id)
    .bind(c.owner_id)
    .bind(c.stage)
    .bind_common(&c.common)
    .execute(&mut *tx)
    .await
    .map_err(|e| pg::map_constraint(e, &[("crm_contacts_email_key", email_taken)]))?;
    record::created(tx, scope, id, &c.common.source, idem).await
}

pub async fn get(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<ContactDetail, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let contact: Contact = record::found(&mut tx, id).await?;
    let company = match contact.company_id {
        Some(company) => {
            sqlx::query_as("select id, name, domain from crm_companies where id = $1")
                .bind(company)
                .fetch_optional(&mut *tx)
                .await?
        }
        None => None,
    };
    let deals = sqlx::query_as(
        "select d.id, d.title, d.amount_minor, d.currency, d.status, d.stage_id, s.name as stage_name, d.expected_close \
         from crm_deals d join crm_stages s on s.id = d.stage_id where d.contact_id = $1 \
         order by d.status <> 'open', d.created_at desc, d.id desc limit 50",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let activity = activity::recent(&mut tx, Subject::Contact(id)).await?;
    tx.commit().await?;
    Ok(ContactDetail {
        contact,
        company,
        deals,
        activity,
    })
}

/// Applies a JSON merge patch (`null` clears a field) and validates the result as a whole.
pub async fn update(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    patch: Value,
    if_match: Option<i32>,
) -> Result<Contact, DomainError> {
    let mut p = record::begin_update::<Contact>(pool, scope, id, &patch).await?;
    let c = validate(&mut p.tx, &p.input).await?;
    if p.unchanged(if_match)? {
        return p.keep().await;
    }
    sqlx::query(
        "update crm_contacts set first_name = $2, last_name = $3, email = $4, phone = $5, mobile = $6, title = $7, \
         company_id = $8, owner_id = $9, lifecycle_stage = $10, tags = $11, address = $12, notes = $13, source = $14, \
         custom = $15, updated_at = now(), version = version + 1 where id = $1",
    )
    .bind(id)
    .bind(&c.first_name)
    .bind(&c.last_name)
    .bind(&c.email)
    .bind(&c.phone)
    .bind(&c.mobile)
    .bind(&c.title)
    .bind(c.company_id)
    .bind(c.owner_id)
    .bind(c.stage)
    .bind_common(&c.common)
    .execute(&mut *p.tx)
    .await
    .map_err(|e| pg::map_constraint(e, &[("crm_contacts_email_key", email_taken)]))?;
    p.updated(scope).await
}

pub async fn delete(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    record::delete::<Contact>(pool, scope, id).await
}

/// The tables that point at contacts, and their column: merging moves these rows to the kept
/// contact (a test checks this list against the schema's foreign keys).
pub const LINKS: &[(&str, &str)] = &[
    ("crm_activities", "contact_id"),
    ("crm_deals", "contact_id"),
    // A campaign's recipients keep their history on the contact that stays.
    ("marketing_campaign_recipients", "contact_id"),
];

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The duplicate: its links move to this contact, its empty-here values fill in, its email
    /// joins `other_emails`, and it is deleted.
    pub duplicate_id: Uuid,
}

/// Merges `duplicate` into `id`: links moved, values filled in where the kept contact has none,
/// tags and custom values united (the kept contact's win), the duplicate deleted.
pub async fn merge(pool: &PgPool, scope: &Scope, id: Uuid, input: MergeRequest) -> Result<Contact, DomainError> {
    let duplicate_id = input.duplicate_id;
    if duplicate_id == id {
        return Err(DomainError::invalid(
            "duplicate_id",
            "same_contact",
            "a contact cannot be merged into itself",
        ));
    }
    let mut tx = pg::begin(pool, scope).await?;
    fields::lock_definitions(&mut tx, false).await?;
    // Their deals first (a deal's writer locks it, then touches its contact), then both
    // contacts in id order: concurrent merges and deal changes cannot deadlock.
    sqlx::query("select id from crm_deals where contact_id = any($1) order by id for no key update")
        .bind([id, duplicate_id])
        .execute(&mut *tx)
        .await?;
    let locked: Vec<Uuid> = sqlx::query_scalar("select id from crm_contacts where id = any($1) order by id for update")
        .bind([id, duplicate_id])
        .fetch_all(&mut *tx)
        .await?;
    if !locked.contains(&id) {
        return Err(DomainError::NotFound);
    }
    if !locked.contains(&duplicate_id) {
        return Err(DomainError::invalid(
            "duplicate_id",
            "not_found",
            "no contact of this tenant has this id",
        ));
    }
    let kept: Contact = record::found(&mut tx, id).await?;
    let dup: Contact = record::found(&mut tx, duplicate_id).await?;
    for (table, column) in LINKS {
        sqlx::query(&format!("update {table} set {column} = $1 where {column} = $2"))
            .bind(id)
            .bind(duplicate_id)
            .execute(&mut *tx)
            .await?;
    }
    let fill = |mine: &Option<String>, theirs: &Option<String>| mine.clone().or_else(|| theirs.clone());
    let fill_text = |mine: &str, theirs: &str| {
        if mine.is_empty() {
            theirs.to_owned()
        } else {
            mine.to_owned()
        }
    };
    let email = fill(&kept.email, &dup.email);
    let mut other_emails = kept.other_emails.clone();
    for e in dup.email.iter().chain(dup.other_emails.iter()) {
        let same = |x: &String| x.eq_ignore_ascii_case(e);
        if !email.as_ref().is_some_and(same) && !other_emails.iter().any(same) {
            other_emails.push(e.clone());
        }
    }
    let mut tags = kept.tags.clone();
    for t in &dup.tags {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    if tags.len() > input::MAX_TAGS {
        return Err(DomainError::conflict(
            "merge-too-many-tags",
            format!(
                "together they have more than {} tags: remove some first",
                input::MAX_TAGS
            ),
        ));
    }
    let mut custom = dup.custom.0.clone();
    custom.extend(kept.custom.0.clone());
    let address = if kept.address.0 == Address::default() {
        dup.address.0.clone()
    } else {
        kept.address.0.clone()
    };
    let notes = match (kept.notes.is_empty(), dup.notes.is_empty()) {
        (_, true) => kept.notes.clone(),
        (true, false) => dup.notes.clone(),
        (false, false) => format!("{}\n\n{}", kept.notes, dup.notes),
    };
    if notes.chars().count() > input::MAX_NOTES {
        return Err(DomainError::conflict(
            "merge-notes-too-long",
            format!(
                "together their notes exceed {} characters: shorten one first",
                input::MAX_NOTES
            ),
        ));
    }
    // The duplicate goes first: its email is free before anything could collide.
    sqlx::query("delete from crm_contacts where id = $1")
        .bind(duplicate_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "update crm_contacts set first_name = $2, last_name = $3, email = $4, other_emails = $5, phone = $6, \
         mobile = $7, title = $8, company_id = $9, owner_id = $10, tags = $11, address = $12, notes = $13, \
         custom = $14, updated_at = now(), version = version + 1 where id = $1",
    )
    .bind(id)
    .bind(fill_text(&kept.first_name, &dup.first_name))
    .bind(fill_text(&kept.last_name, &dup.last_name))
    .bind(&email)
    .bind(&other_emails)
    .bind(fill(&kept.phone, &dup.phone))
    .bind(fill(&kept.mobile, &dup.mobile))
    .bind(fill(&kept.title, &dup.title))
    .bind(kept.company_id.or(dup.company_id))
    .bind(kept.owner_id.or(dup.owner_id))
    .bind(&tags)
    .bind(Json(&address))
    .bind(&notes)
    .bind(Json(&custom))
    .execute(&mut *tx)
    .await?;
    activity::record(
        &mut tx,
        scope,
        Subject::Contact(id),
        "merged",
        json!({"duplicate": {"id": duplicate_id, "first_name": dup.first_name, "last_name": dup.last_name,
            "email": dup.email}}),
    )
    .await?;
    let contact = record::found(&mut tx, id).await?;
    tx.commit().await?;
    Ok(contact)
}

/// `GET /crm/contacts` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ContactListParams {
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
    /// Search names, emails and company names: word prefixes first, typos tolerated (at most
    /// 100 characters).
    #[param(value_type = Option<OptionalTextSchema<100>>, inline)]
    pub q: Option<String>,
    /// `created_at` (default `-created_at`), `updated_at`, `name`, `email`; `-` before it for
    /// descending; `relevance` (the default with `q`, and only with `q`).
    #[param(value_type = Option<ContactSort>, inline)]
    pub sort: Option<String>,
    /// Contacts with this tag.
    #[param(value_type = Option<TextSchema<50>>, inline)]
    pub tag: Option<String>,
    pub owner_id: Option<Uuid>,
    pub lifecycle_stage: Option<LifecycleStage>,
    pub company_id: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    /// Custom-field filters, a JSON object: `{"plan": "pro"}` (equality) or
    /// `{"seats": {"gte": 5, "lte": 10}}` (number and date ranges).
    pub custom: Option<String>,
}

/// The sorts of `GET /crm/contacts` (`-`: descending).
#[derive(ToSchema)]
pub enum ContactSort {
    #[schema(rename = "created_at")]
    CreatedAt,
    #[schema(rename = "-created_at")]
    CreatedAtDesc,
    #[schema(rename = "updated_at")]
    UpdatedAt,
    #[schema(rename = "-updated_at")]
    UpdatedAtDesc,
    #[schema(rename = "name")]
    Name,
    #[schema(rename = "-name")]
    NameDesc,
    #[schema(rename = "email")]
    Email,
    #[schema(rename = "-email")]
    EmailDesc,
    #[schema(rename = "relevance")]
    Relevance,
}

pub const SORTS: &[SortSpec] = &[
    SortSpec {
        name: "created_at",
        expr: "c.created_at",
        time: true,
    },
    SortSpec {
        name: "updated_at",
        expr: "c.updated_at",
        time: true,
    },
    SortSpec {
        name: "name",
        expr: "lower(c.last_name || ' ' || c.first_name)",
        time: false,
    },
    SortSpec {
        name: "email",
        expr: "lower(coalesce(c.email, ''))",
        time: false,
    },
];

pub async fn list(pool: &PgPool, scope: &Scope, params: ContactListParams) -> Result<ResultPage<Contact>, DomainError> {
    let filters = Filters {
        page: &params.page,
        q: params.q.as_deref(),
        sort: params.sort.as_deref(),
        tag: params.tag.as_deref(),
        owner_id: params.owner_id,
        created: [params.created_after, params.created_before],
        updated: [params.updated_after, params.updated_before],
        custom: params.custom.as_deref(),
    };
    record::list(pool, scope, filters, |qb| {
        if let Some(stage) = params.lifecycle_stage {
            qb.push(" and c.lifecycle_stage = ").push_bind(stage);
        }
        if let Some(company) = params.company_id {
            qb.push(" and c.company_id = ").push_bind(company);
        }
    })
    .await
}
