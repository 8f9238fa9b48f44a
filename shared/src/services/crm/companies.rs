//! Companies: the organisations contacts work for. A domain is unique per tenant; deleting a
//! company unlinks its contacts (they stay).
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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
use crate::domain::validate::{OptionalTextSchema, TextSchema};
use crate::domain::{DomainError, PageParams, ResultPage, Scope, Text, Validator};
use crate::services::idempotency::{Created, IdempotencyKey};

/// A company as written: the body of `POST /crm/companies`, and the document a `PATCH` (JSON
/// merge patch) is applied to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanyInput {
    /// 1–200 characters.
    #[schema(value_type = TextSchema<200>, inline)]
    pub name: String,
    /// Its web domain, e.g. `example.com` (unique per tenant; a scheme, `www.` and a trailing
    /// `/` are dropped), at most 253 characters; blank is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 253)]
    pub domain: Option<String>,
    /// At most 100 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OptionalTextSchema<100>>, inline)]
    pub industry: Option<String>,
    /// A phone number as people write it: digits with spaces, `+ - ( ) . /` and an extension
    /// (`x123`), at most 40 characters with at least 4 digits; blank is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 40, pattern = r"^( *|([ +().x/X-]*[0-9]){4}[0-9 +().x/X-]*)$")]
    pub phone: Option<String>,
    /// A member of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Uuid>,
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
    /// Where the company came from (default `manual`): lower-case letters, digits, `_` and
    /// `-`, at most 40.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 40, pattern = r"^ *[a-z0-9_-]* *$")]
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

impl Record for Company {
    const TABLE: Table = Table {
        name: "crm_companies",
        alias: "co",
        columns: COLUMNS,
        from: "crm_companies co",
        entity: Entity::Company,
        search_entity: "company",
        searched: &[Searched {
            expr: "co.search_text",
            weight: 1.0,
        }],
        sorts: SORTS,
        default_sort: "name",
        subject: Subject::Company,
    };
    type Input = CompanyInput;

    fn id(&self) -> Uuid {
        self.id
    }

    fn version(&self) -> i32 {
        self.version
    }

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
    pub common: Common,
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

pub async fn create(
    pool: &PgPool,
    scope: &Scope,
    input: CompanyInput,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<Company>, DomainError> {
    let (mut tx, tenant_id) = match record::begin_create(pool, scope, idem).await? {
        Ok(begun) => begun,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
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
    .bind_common(&c.common)
    .execute(&mut *tx)
    .await
    .map_err(|e| pg::map_constraint(e, &[("crm_companies_domain_key", domain_taken)]))?;
    record::created(tx, scope, id, &c.common.source, idem).await
}

pub async fn get(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<CompanyDetail, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let company = record::found(&mut tx, id).await?;
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
    let mut p = record::begin_update::<Company>(pool, scope, id, &patch).await?;
    let c = validate(&mut p.tx, &p.input).await?;
    if p.unchanged(if_match)? {
        return p.keep().await;
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
    .bind_common(&c.common)
    .execute(&mut *p.tx)
    .await
    .map_err(|e| pg::map_constraint(e, &[("crm_companies_domain_key", domain_taken)]))?;
    p.updated(scope).await
}

/// Deletes a company; its contacts stay, unlinked.
pub async fn delete(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    record::delete::<Company>(pool, scope, id).await
}

/// `GET /crm/companies` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CompanyListParams {
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
    /// Search names and domains: word prefixes first, typos tolerated (at most 100 characters).
    #[param(value_type = Option<OptionalTextSchema<100>>, inline)]
    pub q: Option<String>,
    /// `name` (default), `created_at`, `updated_at`; `-` before it for descending; `relevance`
    /// (the default with `q`, and only with `q`).
    #[param(value_type = Option<CompanySort>, inline)]
    pub sort: Option<String>,
    /// Companies with this tag.
    #[param(value_type = Option<TextSchema<50>>, inline)]
    pub tag: Option<String>,
    pub owner_id: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    /// Custom-field filters, a JSON object (see `GET /crm/contacts`).
    pub custom: Option<String>,
}

/// The sorts of `GET /crm/companies` (`-`: descending).
#[derive(ToSchema)]
pub enum CompanySort {
    #[schema(rename = "name")]
    Name,
    #[schema(rename = "-name")]
    NameDesc,
    #[schema(rename = "created_at")]
    CreatedAt,
    #[schema(rename = "-created_at")]
    CreatedAtDesc,
    #[schema(rename = "updated_at")]
    UpdatedAt,
    #[schema(rename = "-updated_at")]
    UpdatedAtDesc,
    #[schema(rename = "relevance")]
    Relevance,
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

pub async fn list(pool: &PgPool, scope: &Scope, params: CompanyListParams) -> Result<ResultPage<Company>, DomainError> {
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
    record::list(pool, scope, filters, |_| {}).await
}
