//! Segments: named filters over the tenant's CRM contacts — the contacts list's filters (tags,
//! lifecycle stages, owners, companies, custom fields, created/updated ranges) saved under a
//! name. A segment is never frozen: [`Audience::push_conditions`] evaluates it in SQL whenever
//! it is counted (and, later, when a campaign starts).
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::adapters::pg::{self, Tx};
use crate::domain::validate::{OptionalTextSchema, TextSchema};
use crate::domain::{DomainError, PageParams, ResultPage, Scope, Text, Validator};
use crate::services::crm::contacts::LifecycleStage;
use crate::services::crm::fields::{self, CustomFilter, Entity};
use crate::services::crm::{input, listing, table};
use crate::services::idempotency::{self, Created, IdempotencyKey};

/// At most this many owners or companies in one segment.
pub const MAX_IDS: usize = 100;

/// Who is in a segment: every condition must hold (AND); a list condition holds when any of
/// its values does (tags: any of them; stages, owners, companies: one of them). An empty
/// filter is every contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SegmentFilter)]
pub struct SegmentFilter {
    /// Contacts with any of these tags (compared as tags are stored: trimmed, lower case; 1 to
    /// 50 characters each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<TextSchema<50>>, inline, max_items = 50)]
    pub tags: Vec<String>,
    /// Contacts in one of these lifecycle stages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<LifecycleStage>, max_items = 8)]
    pub lifecycle_stages: Vec<String>,
    /// Contacts owned by one of these members of the tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 100)]
    pub owner_ids: Vec<Uuid>,
    /// Contacts of one of these companies of the tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 100)]
    pub company_ids: Vec<Uuid>,
    /// Custom-field filters, as `GET /crm/contacts?custom=` takes them (here as an object):
    /// `{"plan": "pro"}` (equality) or `{"seats": {"gte": 5, "lte": 10}}` (number and date
    /// ranges).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub custom: Map<String, Value>,
    /// Created at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<DateTime<Utc>>,
    /// Created before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<DateTime<Utc>>,
    /// Changed at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_after: Option<DateTime<Utc>>,
    /// Changed before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_before: Option<DateTime<Utc>>,
}

/// A segment as written: the body of `POST /marketing/segments`, and the document a `PATCH`
/// (JSON merge patch) is applied to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentInput {
    /// Unique in the tenant, whatever its case.
    #[schema(value_type = TextSchema<200>, inline)]
    pub name: String,
    #[serde(default)]
    #[schema(value_type = OptionalTextSchema<1000>, inline)]
    pub description: String,
    #[serde(default)]
    pub filter: SegmentFilter,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Segment {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    #[schema(value_type = SegmentFilter)]
    pub filter: Json<SegmentFilter>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The ETag's number: send it back in `If-Match`.
    pub version: i32,
}

impl Segment {
    fn editable(&self) -> SegmentInput {
        SegmentInput {
            name: self.name.clone(),
            description: self.description.clone(),
            filter: self.filter.0.clone(),
        }
    }
}

/// The reachable audience of a segment now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
pub struct SegmentCount {
    /// Contacts matching the filter.
    pub contacts: i64,
    /// Of those, the ones with an email address.
    pub with_email: i64,
    /// Of those with an email, the ones whose address is on the suppression list.
    pub suppressed: i64,
    /// `with_email - suppressed`: who a campaign to this segment would reach.
    pub reachable: i64,
}

/// A segment's filter checked against the tenant's data, ready to push into SQL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audience {
    pub tags: Vec<String>,
    /// Stage names as stored (`marketing_qualified`).
    pub stages: Vec<String>,
    pub owner_ids: Vec<Uuid>,
    pub company_ids: Vec<Uuid>,
    pub custom: Vec<CustomFilter>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
}

impl Audience {
    /// The one reading of a segment in SQL: its conditions as `and ...` over `crm_contacts c`
    /// (counting now, selecting recipients when a campaign starts).
    pub fn push_conditions(&self, qb: &mut QueryBuilder<'_, Postgres>) {
        if !self.tags.is_empty() {
            qb.push(" and c.tags && ").push_bind(self.tags.clone());
        }
        if !self.stages.is_empty() {
            qb.push(" and c.lifecycle_stage = any(")
                .push_bind(self.stages.clone())
                .push(")");
        }
        if !self.owner_ids.is_empty() {
            qb.push(" and c.owner_id = any(")
                .push_bind(self.owner_ids.clone())
                .push(")");
        }
        if !self.company_ids.is_empty() {
            qb.push(" and c.company_id = any(")
                .push_bind(self.company_ids.clone())
                .push(")");
        }
        listing::push_custom(qb, "c", &self.custom);
        for (column, op, at) in [
            ("created_at", ">=", self.created_after),
            ("created_at", "<", self.created_before),
            ("updated_at", ">=", self.updated_after),
            ("updated_at", "<", self.updated_before),
        ] {
            if let Some(at) = at {
                qb.push(format!(" and c.{column} {op} ")).push_bind(at);
            }
        }
    }
}

/// Removes repeats, keeping the first of each.
fn unique<T: PartialEq + Clone>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

/// The checks of a filter that need no database: tags, stages, the number of ids, custom
/// filters against `defs`, ranges that can hold. Answers the audience and the filter as stored
/// (tags normalised, repeats removed).
pub fn check_filter(
    filter: &SegmentFilter,
    defs: &[fields::CustomField],
    v: &mut Validator,
) -> (Audience, SegmentFilter) {
    let tags = input::labels(v, "filter.tags", &filter.tags);
    let mut stages = Vec::new();
    for (i, raw) in filter.lifecycle_stages.iter().enumerate() {
        match serde_json::from_value::<LifecycleStage>(Value::String(raw.clone())) {
            Ok(stage) => stages.push(table::lifecycle_name(stage).to_owned()),
            Err(_) => v.error(
                &format!("filter.lifecycle_stages[{i}]"),
                "unknown_stage",
                "must be one of subscriber, lead, marketing_qualified, sales_qualified, opportunity, \
                 customer, evangelist, other",
            ),
        }
    }
    let stages = unique(&stages);
    let (owner_ids, company_ids) = (unique(&filter.owner_ids), unique(&filter.company_ids));
    for (field, ids) in [("filter.owner_ids", &owner_ids), ("filter.company_ids", &company_ids)] {
        if ids.len() > MAX_IDS {
            v.error(field, "too_many", format!("at most {MAX_IDS}"));
        }
    }
    let custom = fields::filters_of(defs, filter.custom.clone(), "filter.custom", v);
    for (field, at) in [
        ("filter.created_after", filter.created_after),
        ("filter.created_before", filter.created_before),
        ("filter.updated_after", filter.updated_after),
        ("filter.updated_before", filter.updated_before),
    ] {
        if at.is_some_and(|at| !(1..=9999).contains(&at.year())) {
            v.error(field, "out_of_range", "must be a time of the years 1 to 9999");
        }
    }
    for (field, after, before) in [
        ("filter.created_before", filter.created_after, filter.created_before),
        ("filter.updated_before", filter.updated_after, filter.updated_before),
    ] {
        if let (Some(after), Some(before)) = (after, before)
            && before <= after
        {
            v.error(field, "range_backwards", "must be later than its `_after` time");
        }
    }
    let audience = Audience {
        tags: tags.clone(),
        stages: stages.clone(),
        owner_ids: owner_ids.clone(),
        company_ids: company_ids.clone(),
        custom,
        created_after: filter.created_after,
        created_before: filter.created_before,
        updated_after: filter.updated_after,
        updated_before: filter.updated_before,
    };
    let stored = SegmentFilter {
        tags,
        lifecycle_stages: stages,
        owner_ids,
        company_ids,
        ..filter.clone()
    };
    (audience, stored)
}

/// Owners must be members of the tenant and companies the tenant's (inside its transaction):
/// each one that is not is named (`filter.owner_ids[2]`).
async fn check_links(tx: &mut Tx, filter: &SegmentFilter, v: &mut Validator) -> Result<(), DomainError> {
    if !filter.owner_ids.is_empty() {
        let members: Vec<Uuid> = sqlx::query_scalar("select user_id from memberships where user_id = any($1)")
            .bind(&filter.owner_ids)
            .fetch_all(&mut **tx)
            .await?;
        for (i, id) in filter.owner_ids.iter().enumerate() {
            if !members.contains(id) {
                v.error(
                    &format!("filter.owner_ids[{i}]"),
                    "not_a_member",
                    "must be a member of the tenant",
                );
            }
        }
    }
    if !filter.company_ids.is_empty() {
        let known: Vec<Uuid> = sqlx::query_scalar("select id from crm_companies where id = any($1)")
            .bind(&filter.company_ids)
            .fetch_all(&mut **tx)
            .await?;
        for (i, id) in filter.company_ids.iter().enumerate() {
            if !known.contains(id) {
                v.error(
                    &format!("filter.company_ids[{i}]"),
                    "not_found",
                    "no company of this tenant has this id",
                );
            }
        }
    }
    Ok(())
}

/// A segment ready to be stored.
struct Valid {
    name: String,
    description: String,
    filter: SegmentFilter,
}

/// Checks every field (all issues at once) inside the tenant's transaction.
async fn validate(tx: &mut Tx, input: &SegmentInput) -> Result<Valid, DomainError> {
    let mut v = Validator::new();
    let name = v.field("name", Text::parse(&input.name, 1, 200)).map(Text::into_inner);
    let description = input::text(&mut v, "description", &input.description, 1000);
    let defs = fields::definitions(tx, Entity::Contact).await?;
    let (_, filter) = check_filter(&input.filter, &defs, &mut v);
    check_links(tx, &filter, &mut v).await?;
    v.finish()?;
    Ok(Valid {
        name: name.unwrap_or_default(),
        description,
        filter,
    })
}

fn name_taken() -> DomainError {
    DomainError::conflict("segment-name-taken", "another segment of the tenant has this name")
}

const COLUMNS: &str = "id, name, description, filter, created_at, updated_at, version";

async fn fetch(tx: &mut Tx, id: Uuid, lock: bool) -> Result<Segment, DomainError> {
    let lock = if lock { " for no key update" } else { "" };
    let row: Option<Segment> = sqlx::query_as(&format!("select {COLUMNS} from marketing_segments where id = $1{lock}"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.ok_or(DomainError::NotFound)
}

/// Creates a segment (its filter checked against the tenant's stages, fields, members and
/// companies). Honours `Idempotency-Key`.
pub async fn create(
    pool: &PgPool,
    scope: &Scope,
    input: SegmentInput,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<Segment>, DomainError> {
    let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    fields::lock_definitions(&mut tx, false).await?;
    let s = validate(&mut tx, &input).await?;
    let segment: Segment = sqlx::query_as(&format!(
        "insert into marketing_segments (id, tenant_id, name, description, filter) values ($1, $2, $3, $4, $5) \
         returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(&s.name)
    .bind(&s.description)
    .bind(Json(&s.filter))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| pg::map_constraint(e, &[("marketing_segments_name_key", name_taken)]))?;
    idempotency::store(&mut tx, scope, idem, 201, &segment).await?;
    tx.commit().await?;
    Ok(Created::Fresh(segment))
}

pub async fn get(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<Segment, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let segment = fetch(&mut tx, id, false).await?;
    tx.commit().await?;
    Ok(segment)
}

/// Applies a JSON merge patch (`null` clears) and validates the result as a whole; a stale
/// `If-Match` version answers 412 (after the body is found valid).
pub async fn update(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    patch: Value,
    if_match: Option<i32>,
) -> Result<Segment, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    fields::lock_definitions(&mut tx, false).await?;
    let current = fetch(&mut tx, id, true).await?;
    let (input, changed) = input::patched(&current.editable(), &patch)?;
    let s = validate(&mut tx, &input).await?;
    if if_match.is_some_and(|v| v != current.version) {
        return Err(DomainError::StaleVersion);
    }
    if changed.is_empty() {
        tx.commit().await?;
        return Ok(current);
    }
    let segment: Segment = sqlx::query_as(&format!(
        "update marketing_segments set name = $2, description = $3, filter = $4, updated_at = now(), \
         version = version + 1 where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(&s.name)
    .bind(&s.description)
    .bind(Json(&s.filter))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| pg::map_constraint(e, &[("marketing_segments_name_key", name_taken)]))?;
    tx.commit().await?;
    Ok(segment)
}

pub async fn delete(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let gone = sqlx::query("delete from marketing_segments where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(DomainError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// `GET /marketing/segments` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SegmentListParams {
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
    /// Segments whose name contains this (case-insensitive).
    #[param(value_type = Option<OptionalTextSchema<200>>, inline)]
    pub q: Option<String>,
}

/// The tenant's segments, most recently changed first.
pub async fn list(pool: &PgPool, scope: &Scope, params: SegmentListParams) -> Result<ResultPage<Segment>, DomainError> {
    let page = pg::time_page_request(&params.page)?;
    let mut v = Validator::new();
    let q = input::optional_text(&mut v, "q", params.q.as_deref(), 200).map(|q| q.to_lowercase());
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    let rows: Vec<Segment> = sqlx::query_as(&format!(
        "select {COLUMNS} from marketing_segments \
         where ($1::timestamptz is null or (updated_at, id) < ($1, $2)) \
           and ($4::text is null or strpos(lower(name), $4) > 0) \
         order by updated_at desc, id desc limit $3"
    ))
    .bind(page.after.map(|a| a.0))
    .bind(page.after.map(|a| a.1))
    .bind(page.fetch())
    .bind(q)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |s| (s.updated_at, s.id)))
}

/// The segment's filter read against the tenant's custom fields as they are now. A field
/// removed since the segment was saved makes the segment unreadable until it is edited (409
/// `segment-outdated` naming it): counting it as if the condition were not there would
/// overstate the audience.
pub async fn audience(tx: &mut Tx, filter: &SegmentFilter) -> Result<Audience, DomainError> {
    let defs = fields::definitions(tx, Entity::Contact).await?;
    let mut v = Validator::new();
    let (audience, _) = check_filter(filter, &defs, &mut v);
    if let Err(DomainError::Invalid(errors)) = v.finish() {
        let named: Vec<String> = errors.iter().map(|e| format!("{} ({})", e.field, e.message)).collect();
        return Err(DomainError::conflict(
            "segment-outdated",
            format!(
                "the segment's filter no longer fits the tenant's custom fields: {}; edit the segment",
                named.join(", ")
            ),
        ));
    }
    Ok(audience)
}

/// How many contacts the segment matches now, how many of them have an email, and how many of
/// those addresses are suppressed.
pub async fn count(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<SegmentCount, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let segment = fetch(&mut tx, id, false).await?;
    let audience = audience(&mut tx, &segment.filter.0).await?;
    let mut qb = QueryBuilder::new(
        "select count(*) as contacts, count(c.email) as with_email, \
         count(c.email) filter (where exists (select 1 from marketing_suppressions s where s.email = lower(c.email))) \
         as suppressed, 0::bigint as reachable from crm_contacts c where true",
    );
    audience.push_conditions(&mut qb);
    let mut counted: SegmentCount = qb.build_query_as().fetch_one(&mut *tx).await?;
    tx.commit().await?;
    counted.reachable = counted.with_email - counted.suppressed;
    Ok(counted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::crm::fields::{CustomField, FieldType};
    use serde_json::json;

    fn def(key: &str, field_type: FieldType) -> CustomField {
        CustomField {
            id: Uuid::nil(),
            entity: Entity::Contact,
            key: key.into(),
            label: key.into(),
            field_type,
            options: vec![],
            created_at: Utc::now(),
        }
    }

    fn filter(value: Value) -> SegmentFilter {
        serde_json::from_value(value).unwrap()
    }

    fn fields_of(result: Result<(), DomainError>) -> Vec<String> {
        match result {
            Err(DomainError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_filter_is_normalised_and_read_as_an_audience() {
        // Given a filter with repeats, mixed-case tags and a custom range
        let defs = [def("seats", FieldType::Number)];
        let owner = Uuid::now_v7();
        let f = filter(
            json!({"tags": ["VIP", " vip ", "Beta"], "lifecycle_stages": ["customer", "customer", "lead"],
            "owner_ids": [owner, owner], "custom": {"seats": {"gte": 5}}}),
        );
        // When it is checked
        let mut v = Validator::new();
        let (audience, stored) = check_filter(&f, &defs, &mut v);
        // Then it is accepted, normalised, and its custom filter parsed by the list's rules
        assert!(v.finish().is_ok());
        assert_eq!(stored.tags, ["vip", "beta"]);
        assert_eq!(stored.lifecycle_stages, ["customer", "lead"]);
        assert_eq!(stored.owner_ids, [owner]);
        assert_eq!(audience.custom.len(), 1);
    }

    #[test]
    fn every_bad_condition_is_named() {
        // Given a filter with an unknown stage, an unknown field, a malformed range and a
        // backwards time range
        let defs = [def("seats", FieldType::Number)];
        let f = filter(json!({"lifecycle_stages": ["lead", "champion"], "tags": [""],
            "custom": {"plan": "pro", "seats": {"gt": 1}},
            "created_after": "2026-02-01T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"}));
        // When it is checked
        let mut v = Validator::new();
        check_filter(&f, &defs, &mut v);
        // Then each problem names its field
        let mut fields = fields_of(v.finish());
        fields.sort();
        assert_eq!(
            fields,
            [
                "filter.created_before",
                "filter.custom.plan",
                "filter.custom.seats",
                "filter.lifecycle_stages[1]",
                "filter.tags"
            ]
        );
    }

    #[test]
    fn conditions_become_one_where_clause_over_contacts() {
        // Given an audience with every kind of condition
        let audience = Audience {
            tags: vec!["vip".into()],
            stages: vec!["customer".into()],
            owner_ids: vec![Uuid::nil()],
            company_ids: vec![Uuid::nil()],
            custom: vec![CustomFilter::Equals("plan".into(), json!("pro"))],
            created_after: Some(Utc::now()),
            created_before: None,
            updated_after: None,
            updated_before: Some(Utc::now()),
        };
        // When it is pushed into a query
        let mut qb = QueryBuilder::new("select count(*) from crm_contacts c where true");
        audience.push_conditions(&mut qb);
        // Then each condition reads the contact's own columns, with binds
        let sql = qb.sql();
        for part in [
            "c.tags && $1",
            "c.lifecycle_stage = any($2)",
            "c.owner_id = any($3)",
            "c.company_id = any($4)",
            "c.custom @> $5::jsonb",
            "c.created_at >= $6",
            "c.updated_at < $7",
        ] {
            assert!(sql.contains(part), "{part} in {sql}");
        }
        // And an empty audience is every contact
        let mut qb = QueryBuilder::new("select 1 from crm_contacts c where true");
        Audience::default().push_conditions(&mut qb);
        assert_eq!(qb.sql(), "select 1 from crm_contacts c where true");
    }
}
