//! Companies: the organisations contacts work for. A domain is unique per tenant; deleting a
//! company unlinks its contacts (they stay).
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
use crate::domain::{DomainError, Page, Scope, Text, Validator};
use crate::services::idempotency::{self, Created, IdempotencyKey};

/// A company as written: the body of `POST /crm/companies`, and the document a `PATCH` (JSON
/// merge patch) is applied to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanyInput {
    pub name: String,
    /// Its web domain, e.g. `example.com` (unique per tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Uuid>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub address: Address,
    #[serde(default)]
    pub notes: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub custom: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Company {
    pub id: Uuid,
    pub name: String,
    pub domain: Option<String>,
    pub industry: Option<String>,
    pub phone: Option<String>,
    pub owner_id: Option<Uuid>,
    pub tags: Vec<String>,
    #[schema(value_type = Address)]
    pub address: Json<Address>,
    pub notes: String,
    pub source: String,
    #[schema(value_type = Object)]
    pub custom: Json<Map<String, Value>>,
    /// How many contacts work there.
    pub contacts: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i32,
}

impl Company {
    fn editable(&self) -> CompanyInput {
        CompanyInput {
            name: self.name.clone(),
            domain: self.domain.clone(),
            industry: self.industry.clone(),
            phone: self.phone.clone(),
            owner_id: self.owner_id,
            tags: self.tags.clone(),
            address: self.address.0.clone(),
            notes: self.notes.clone(),
            source: Some(self.source.clone()),
            custom: self.custom.0.clone(),
        }
    }
}

/// A contact of the company, as its detail lists them.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct CompanyContact {
    pub id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub title: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompanyDetail {
    #[serde(flatten)]
    pub company: Company,
    /// Its contacts, by name (at most 50; the contacts list filters by `company_id` for all).
    pub people: Vec<CompanyContact>,
    pub activity: Vec<Activity>,
}

const COLUMNS: &str = "co.id, co.name, co.domain, co.industry, co.phone, co.owner_id, co.tags, co.address, co.notes, \
    co.source, co.custom, (select count(*) from crm_contacts c where c.company_id = co.id) as contacts, \
    co.created_at, co.updated_at, co.version";

pub(super) struct Valid {
    pub name: String,
    pub domain: Option<String>,
    pub industry: Option<String>,
    pub phone: Option<String>,
    pub owner_id: Option<Uuid>,
    pub tags: Vec<String>,
    pub address: Address,
    pub notes: String,
    pub source: String,
    pub custom: Map<String, Value>,
}

fn valid_domain(domain: &str) -> bool {
    domain.contains('.')
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The checks that need no database: every field, the custom values against `defs`.
pub(super) fn check(input: &CompanyInput, defs: &[fields::CustomField], v: &mut Validator) -> Valid {
    let name = v.field("name", Text::parse(&input.name, 1, 200)).map(Text::into_inner);
    let domain = input::optional_text(v, "domain", input.domain.as_deref(), 253).map(|d| {
        let d = d.to_ascii_lowercase();
        let d = d
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_start_matches("www.")
            .trim_end_matches('/')
            .to_owned();
        if !valid_domain(&d) {
            v.error("domain", "invalid_domain", "must be a domain such as example.com");
        }
        d
    });
    Valid {
        name: name.unwrap_or_default(),
        domain,
        industry: input::optional_text(v, "industry", input.industry.as_deref(), 100),
        phone: input::phone(v, "phone", input.phone.as_deref()),
        owner_id: input.owner_id,
        tags: input::tags(v, &input.tags),
        address: input::address(v, &input.address),
        notes: input::notes(v, &input.notes),
        source: input::source(v, input.source.as_deref()),
        custom: fields::validate(defs, &input.custom, v),
    }
}

async fn validate(tx: &mut Tx, input: &CompanyInput) -> Result<Valid, DomainError> {
    let mut v = Validator::new();
    let defs = fields::definitions(tx, Entity::Company).await?;
    let valid = check(input, &defs, &mut v);
    input::check_owner(tx, &mut v, input.owner_id).await?;
    v.finish()?;
    Ok(valid)
}

fn domain_taken() -> DomainError {
    DomainError::conflict("domain-exists", "another company of the tenant has this domain")
}

async fn fetch(tx: &mut Tx, id: Uuid, lock: bool) -> Result<Option<Company>, DomainError> {
    let lock = if lock { " for no key update of co" } else { "" };
    Ok(sqlx::query_as(&format!(
        "select {COLUMNS} from crm_companies co where co.id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?)
}

pub async fn create(
    pool: &PgPool,
    scope: &Scope,
    input: CompanyInput,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<Company>, DomainError> {
    let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    fields::lock_definitions(&mut tx, false).await?;
    let c = validate(&mut tx, &input).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into crm_companies (id, tenant_id, name, domain, industry, phone, owner_id, tags, address, notes, \
         source, custom) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(&c.name)
    .bind(&c.domain)
    .bind(&c.industry)
    .bind(&c.phone)
    .bind(c.owner_id)
    .bind(&c.tags)
    .bind(Json(&c.address))
    .bind(&c.notes)
    .bind(&c.source)
    .bind(Json(&c.custom))
    .execute(&mut *tx)
    .await
    .map_err(|e| pg::map_constraint(e, &[("crm_companies_domain_key", domain_taken)]))?;
    activity::record(
        &mut tx,
        scope,
        Subject::Company(id),
        "created",
        json!({"source": c.source}),
    )
    .await?;
    let company = fetch(&mut tx, id, false).await?.ok_or(DomainError::NotFound)?;
    idempotency::store(&mut tx, scope, idem, 201, &company).await?;
    tx.commit().await?;
    Ok(Created::Fresh(company))
}

pub async fn get(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<CompanyDetail, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let company = fetch(&mut tx, id, false).await?.ok_or(DomainError::NotFound)?;
    let people = sqlx::query_as(
        "select id, first_name, last_name, email, title from crm_contacts where company_id = $1 \
         order by lower(last_name || ' ' || first_name), id limit 50",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let activity = activity::recent(&mut tx, Subject::Company(id)).await?;
    tx.commit().await?;
    Ok(CompanyDetail {
        company,
        people,
        activity,
    })
}

pub async fn update(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    patch: Value,
    if_match: Option<i32>,
) -> Result<Company, DomainError> {
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
        "update crm_companies set name = $2, domain = $3, industry = $4, phone = $5, owner_id = $6, tags = $7, \
         address = $8, notes = $9, source = $10, custom = $11, updated_at = now(), version = version + 1 where id = $1",
    )
    .bind(id)
    .bind(&c.name)
    .bind(&c.domain)
    .bind(&c.industry)
    .bind(&c.phone)
    .bind(c.owner_id)
    .bind(&c.tags)
    .bind(Json(&c.address))
    .bind(&c.notes)
    .bind(&c.source)
    .bind(Json(&c.custom))
    .execute(&mut *tx)
    .await
    .map_err(|e| pg::map_constraint(e, &[("crm_companies_domain_key", domain_taken)]))?;
    activity::record(
        &mut tx,
        scope,
        Subject::Company(id),
        "updated",
        json!({"fields": changed}),
    )
    .await?;
    let company = fetch(&mut tx, id, false).await?.ok_or(DomainError::NotFound)?;
    tx.commit().await?;
    Ok(company)
}

/// Deletes a company; its contacts stay, unlinked.
pub async fn delete(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let gone = sqlx::query("delete from crm_companies where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(DomainError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// `GET /crm/companies` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CompanyListParams {
    /// Items per page, 1–100 (default 25).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (of the same sort).
    pub cursor: Option<String>,
    /// Search names and domains: word prefixes first, typos tolerated.
    pub q: Option<String>,
    /// `name` (default), `created_at`, `updated_at`; `-` before it for descending; `relevance`
    /// (the default with `q`).
    pub sort: Option<String>,
    pub tag: Option<String>,
    pub owner_id: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    /// Custom-field filters, a JSON object (see `GET /crm/contacts`).
    pub custom: Option<String>,
}

pub const SORTS: &[SortSpec] = &[
    SortSpec {
        name: "name",
        expr: "lower(co.name)",
        time: false,
    },
    SortSpec {
        name: "created_at",
        expr: "co.created_at",
        time: true,
    },
    SortSpec {
        name: "updated_at",
        expr: "co.updated_at",
        time: true,
    },
];

pub async fn list(pool: &PgPool, scope: &Scope, params: CompanyListParams) -> Result<Page<Company>, DomainError> {
    let page = listing::page_request(params.limit, params.cursor.as_deref())?;
    let mut tx = pg::begin(pool, scope).await?;
    let mut v = Validator::new();
    let search = Search::parse(params.q.as_deref(), &mut v);
    let tag = listing::tag(params.tag.as_deref(), &mut v);
    let sort = Sort::parse(params.sort.as_deref(), SORTS, "name", search.is_some(), &mut v);
    let custom = match params.custom.as_deref() {
        Some(raw) => {
            let defs = fields::definitions(&mut tx, Entity::Company).await?;
            fields::parse_filters(&defs, raw, &mut v)
        }
        None => Vec::new(),
    };
    v.finish()?;
    let searched = &[Searched {
        expr: "co.search_text",
        weight: 1.0,
    }];
    let query = ListQuery {
        sort,
        page: &page,
        search: search.as_ref().map(|s| (s, &searched[..])),
        custom: &custom,
        alias: "co",
        entity: "company",
    };
    query.check_cursor()?;
    if search.is_some() {
        Search::prepare(&mut tx).await?;
    }
    let mut qb = QueryBuilder::new(format!("select {COLUMNS}"));
    query.push_select_extras(&mut qb);
    qb.push(" from crm_companies co where true");
    if let Some(tag) = tag {
        qb.push(" and co.tags @> array[").push_bind(tag).push("]");
    }
    if let Some(owner) = params.owner_id {
        qb.push(" and co.owner_id = ").push_bind(owner);
    }
    for (column, op, at) in [
        ("created_at", ">=", params.created_after),
        ("created_at", "<", params.created_before),
        ("updated_at", ">=", params.updated_after),
        ("updated_at", "<", params.updated_before),
    ] {
        if let Some(at) = at {
            qb.push(format!(" and co.{column} {op} ")).push_bind(at);
        }
    }
    query.push_conditions(&mut qb);
    query.push_order(&mut qb);
    let rows: Vec<Listed<Company>> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(query.page(rows, |c| c.id))
}
