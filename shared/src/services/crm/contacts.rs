//! Contacts: the people a tenant sells to. Email is unique per tenant (case-insensitive);
//! custom fields are typed by the tenant's definitions; every change lands on the timeline;
//! merging a duplicate moves every link to the kept contact.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::types::Json;
use sqlx::{PgPool, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::activity::{self, Activity, Subject};
use super::fields::{self, Entity};
use super::input::{self, Address};
use super::listing::{self, ListQuery, Listed, Search, Searched, Sort, SortSpec};
use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, Email, Page, Scope, Validator};
use crate::services::billing::entitlements::{self, Limit};
use crate::services::idempotency::{self, Created, IdempotencyKey};

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
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// Job title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_id: Option<Uuid>,
    /// A member of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Uuid>,
    #[serde(default)]
    pub lifecycle_stage: LifecycleStage,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub address: Address,
    #[serde(default)]
    pub notes: String,
    /// Where the contact came from (default `manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

impl Contact {
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
    pub tags: Vec<String>,
    pub address: Address,
    pub notes: String,
    pub source: String,
    pub custom: Map<String, Value>,
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
        tags: input::tags(v, &input.tags),
        address: input::address(v, &input.address),
        notes: input::notes(v, &input.notes),
        source: input::source(v, input.source.as_deref()),
        custom: fields::validate(defs, &input.custom, v),
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

async fn fetch(tx: &mut Tx, id: Uuid, lock: bool) -> Result<Option<Contact>, DomainError> {
    let lock = if lock { " for no key update of c" } else { "" };
    Ok(
        sqlx::query_as(&format!("select {COLUMNS} from crm_contacts c where c.id = $1{lock}"))
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

pub async fn create(
    pool: &PgPool,
    scope: &Scope,
    input: ContactInput,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<Contact>, DomainError> {
    let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    fields::lock_definitions(&mut tx, false).await?;
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
    .bind(&c.tags)
    .bind(Json(&c.address))
    .bind(&c.notes)
    .bind(&c.source)
    .bind(Json(&c.custom))
    .execute(&mut *tx)
    .await
    .map_err(|e| pg::map_constraint(e, &[("crm_contacts_email_key", email_taken)]))?;
    activity::record(
        &mut tx,
        scope,
        Subject::Contact(id),
        "created",
        json!({"source": c.source}),
    )
    .await?;
    let contact = fetch(&mut tx, id, false).await?.ok_or(DomainError::NotFound)?;
    idempotency::store(&mut tx, scope, idem, 201, &contact).await?;
    tx.commit().await?;
    Ok(Created::Fresh(contact))
}

pub async fn get(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<ContactDetail, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let contact = fetch(&mut tx, id, false).await?.ok_or(DomainError::NotFound)?;
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
    let mut tx = pg::begin(pool, scope).await?;
    fields::lock_definitions(&mut tx, false).await?;
    let current = fetch(&mut tx, id, true).await?.ok_or(DomainError::NotFound)?;
    let (input, changed) = input::patched(&current.editable(), &patch)?;
    let c = validate(&mut tx, &input).await?;
    if if_match.is_some_and(|v| v != current.version) {
        return Err(DomainError::StaleVersion);
    }
    if changed.is_empty() {
        tx.commit().await?;
        return Ok(current);
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
    .bind(&c.tags)
    .bind(Json(&c.address))
    .bind(&c.notes)
    .bind(&c.source)
    .bind(Json(&c.custom))
    .execute(&mut *tx)
    .await
    .map_err(|e| pg::map_constraint(e, &[("crm_contacts_email_key", email_taken)]))?;
    activity::record(
        &mut tx,
        scope,
        Subject::Contact(id),
        "updated",
        json!({"fields": changed}),
    )
    .await?;
    let contact = fetch(&mut tx, id, false).await?.ok_or(DomainError::NotFound)?;
    tx.commit().await?;
    Ok(contact)
}

pub async fn delete(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let gone = sqlx::query("delete from crm_contacts where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(DomainError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// The tables that point at contacts, and their column: merging moves these rows to the kept
/// contact (a test checks this list against the schema's foreign keys).
pub const LINKS: &[(&str, &str)] = &[("crm_activities", "contact_id"), ("crm_deals", "contact_id")];

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
    let kept = fetch(&mut tx, id, false).await?.ok_or(DomainError::NotFound)?;
    let dup = fetch(&mut tx, duplicate_id, false)
        .await?
        .ok_or(DomainError::NotFound)?;
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
    let contact = fetch(&mut tx, id, false).await?.ok_or(DomainError::NotFound)?;
    tx.commit().await?;
    Ok(contact)
}

/// `GET /crm/contacts` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ContactListParams {
    /// Items per page, 1–100 (default 25).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (of the same sort).
    pub cursor: Option<String>,
    /// Search names, emails and company names: word prefixes first, typos tolerated.
    pub q: Option<String>,
    /// `created_at` (default `-created_at`), `updated_at`, `name`, `email`; `-` before it for
    /// descending; `relevance` (the default with `q`).
    pub sort: Option<String>,
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

pub async fn list(pool: &PgPool, scope: &Scope, params: ContactListParams) -> Result<Page<Contact>, DomainError> {
    let page = listing::page_request(params.limit, params.cursor.as_deref())?;
    let mut tx = pg::begin(pool, scope).await?;
    let mut v = Validator::new();
    let search = Search::parse(params.q.as_deref(), &mut v);
    let tag = listing::tag(params.tag.as_deref(), &mut v);
    let sort = Sort::parse(params.sort.as_deref(), SORTS, "-created_at", search.is_some(), &mut v);
    let custom = match params.custom.as_deref() {
        Some(raw) => {
            let defs = fields::definitions(&mut tx, Entity::Contact).await?;
            fields::parse_filters(&defs, raw, &mut v)
        }
        None => Vec::new(),
    };
    v.finish()?;
    let searched = &[
        Searched {
            expr: "c.search_text",
            weight: 1.0,
        },
        Searched {
            expr: "co.search_text",
            weight: 0.9,
        },
    ];
    let query = ListQuery {
        sort,
        page: &page,
        search: search.as_ref().map(|s| (s, &searched[..])),
        custom: &custom,
        alias: "c",
        entity: "contact",
    };
    query.check_cursor()?;
    if search.is_some() {
        Search::prepare(&mut tx).await?;
    }
    let mut qb = QueryBuilder::new(format!("select {COLUMNS}"));
    query.push_select_extras(&mut qb);
    qb.push(" from crm_contacts c left join crm_companies co on co.id = c.company_id where true");
    if let Some(tag) = tag {
        qb.push(" and c.tags @> array[").push_bind(tag).push("]");
    }
    if let Some(owner) = params.owner_id {
        qb.push(" and c.owner_id = ").push_bind(owner);
    }
    if let Some(stage) = params.lifecycle_stage {
        qb.push(" and c.lifecycle_stage = ").push_bind(stage);
    }
    if let Some(company) = params.company_id {
        qb.push(" and c.company_id = ").push_bind(company);
    }
    for (column, op, at) in [
        ("created_at", ">=", params.created_after),
        ("created_at", "<", params.created_before),
        ("updated_at", ">=", params.updated_after),
        ("updated_at", "<", params.updated_before),
    ] {
        if let Some(at) = at {
            qb.push(format!(" and c.{column} {op} ")).push_bind(at);
        }
    }
    query.push_conditions(&mut qb);
    query.push_order(&mut qb);
    let rows: Vec<Listed<Contact>> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(query.page(rows, |c| c.id))
}
