//! Deals on a pipeline board: amounts in minor units with a currency, a stage and a place in
//! its column (a fractional rank), an owner, contact and company, an expected close date, and an
//! outcome (open, won, lost with a reason). Moving a deal writes one row under its target stage's
//! lock; every stage entered and outcome reached is kept in its history, which feeds the
//! forecast.
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::activity::{self, Subject};
use super::input;
use crate::adapters::pg::{self, Tx};
use crate::domain::validate::{OptionalTextSchema, TextSchema};
use crate::domain::{DomainError, PageParams, PageRequest, ResultPage, Scope, Text, Validator, rank};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Status {
    #[default]
    Open,
    Won,
    Lost,
}

/// The editable part of a deal: the body of `POST /crm/deals` (with `stage_id`) and the
/// document a `PATCH` (JSON merge patch) applies to. The stage changes by moving.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DealFields {
    /// 1–200 characters.
    #[schema(value_type = TextSchema<200>, inline)]
    pub title: String,
    /// In minor units of `currency` (cents for USD, yen for JPY), 0 to 10^13.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10_000_000_000_000_i64)]
    pub amount_minor: i64,
    /// ISO 4217, e.g. `EUR` (stored in upper case).
    #[schema(pattern = r"^[A-Za-z]{3}$")]
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_id: Option<Uuid>,
    /// A day in the years 1900 to 9999.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^(19|[2-9][0-9])[0-9]{2}-")]
    pub expected_close: Option<NaiveDate>,
    #[serde(default)]
    pub status: Status,
    /// Required when `status` is `lost`, refused otherwise: at most 500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OptionalTextSchema<500>>, inline)]
    pub lost_reason: Option<String>,
}

/// The body of `POST /crm/deals`: the stage it starts in and the deal's fields.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeal {
    /// The stage it starts in (at the bottom of the column); its pipeline is the deal's.
    pub stage_id: Uuid,
    /// 1–200 characters.
    #[schema(value_type = TextSchema<200>, inline)]
    pub title: String,
    /// In minor units of `currency` (cents for USD, yen for JPY), 0 to 10^13.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10_000_000_000_000_i64)]
    pub amount_minor: i64,
    /// ISO 4217, e.g. `EUR` (stored in upper case).
    #[schema(pattern = r"^[A-Za-z]{3}$")]
    pub currency: String,
    #[serde(default)]
    pub owner_id: Option<Uuid>,
    #[serde(default)]
    pub contact_id: Option<Uuid>,
    #[serde(default)]
    pub company_id: Option<Uuid>,
    /// A day in the years 1900 to 9999.
    #[serde(default)]
    #[schema(pattern = r"^(19|[2-9][0-9])[0-9]{2}-")]
    pub expected_close: Option<NaiveDate>,
    #[serde(default)]
    pub status: Status,
    /// Required when `status` is `lost`, refused otherwise: at most 500 characters.
    #[serde(default)]
    #[schema(value_type = Option<OptionalTextSchema<500>>, inline)]
    pub lost_reason: Option<String>,
}

impl NewDeal {
    fn fields(&self) -> DealFields {
        DealFields {
            title: self.title.clone(),
            amount_minor: self.amount_minor,
            currency: self.currency.clone(),
            owner_id: self.owner_id,
            contact_id: self.contact_id,
            company_id: self.company_id,
            expected_close: self.expected_close,
            status: self.status,
            lost_reason: self.lost_reason.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Deal {
    pub id: Uuid,
    pub pipeline_id: Uuid,
    pub stage_id: Uuid,
    pub stage_name: String,
    pub title: String,
    pub amount_minor: i64,
    pub currency: String,
    pub owner_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub company_id: Option<Uuid>,
    pub expected_close: Option<NaiveDate>,
    pub status: Status,
    pub lost_reason: Option<String>,
    pub won_at: Option<DateTime<Utc>>,
    pub lost_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i32,
}

impl Deal {
    fn editable(&self) -> DealFields {
        DealFields {
            title: self.title.clone(),
            amount_minor: self.amount_minor,
            currency: self.currency.clone(),
            owner_id: self.owner_id,
            contact_id: self.contact_id,
            company_id: self.company_id,
            expected_close: self.expected_close,
            status: self.status,
            lost_reason: self.lost_reason.clone(),
        }
    }
}

/// The largest amount, in minor units (10^13: a hundred billion in a two-decimal currency), so
/// sums over a stage stay far inside 64 bits.
pub const MAX_AMOUNT: i64 = 10_000_000_000_000;

const COLUMNS: &str = "d.id, d.pipeline_id, d.stage_id, s.name as stage_name, d.title, d.amount_minor, d.currency, \
    d.owner_id, d.contact_id, d.company_id, d.expected_close, d.status, d.lost_reason, d.won_at, d.lost_at, \
    d.created_at, d.updated_at, d.version";
const FROM: &str = "crm_deals d join crm_stages s on s.id = d.stage_id";

async fn fetch(tx: &mut Tx, id: Uuid, lock: bool) -> Result<Option<Deal>, DomainError> {
    let lock = if lock { " for no key update of d" } else { "" };
    Ok(
        sqlx::query_as(&format!("select {COLUMNS} from {FROM} where d.id = $1{lock}"))
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// Checks the fields, and that the linked owner, contact and company are the tenant's.
async fn validate(tx: &mut Tx, f: &DealFields) -> Result<(String, String, Option<String>), DomainError> {
    let mut v = Validator::new();
    let title = v.field("title", Text::parse(&f.title, 1, 200)).map(Text::into_inner);
    if !(0..=MAX_AMOUNT).contains(&f.amount_minor) {
        v.error("amount_minor", "out_of_range", format!("must be 0 to {MAX_AMOUNT}"));
    }
    if f.expected_close.is_some_and(|d| !(1900..=9999).contains(&d.year())) {
        v.error("expected_close", "out_of_range", "must be a date between 1900 and 9999");
    }
    let currency = f.currency.trim().to_ascii_uppercase();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        v.error("currency", "invalid_currency", "must be an ISO 4217 code such as EUR");
    }
    let lost_reason = input::optional_text(&mut v, "lost_reason", f.lost_reason.as_deref(), 500);
    match (f.status, &lost_reason) {
        (Status::Lost, None) => v.error("lost_reason", "required", "say why the deal was lost"),
        (Status::Open | Status::Won, Some(_)) => {
            v.error("lost_reason", "not_allowed", "only a lost deal has a lost reason");
        }
        _ => {}
    }
    input::check_owner(tx, &mut v, f.owner_id).await?;
    for (field, table, id) in [
        ("contact_id", "crm_contacts", f.contact_id),
        ("company_id", "crm_companies", f.company_id),
    ] {
        if let Some(id) = id {
            let known: bool = sqlx::query_scalar(&format!("select exists (select 1 from {table} where id = $1)"))
                .bind(id)
                .fetch_one(&mut **tx)
                .await?;
            if !known {
                v.error(field, "not_found", "no record of this tenant has this id");
            }
        }
    }
    v.finish()?;
    Ok((title.unwrap_or_default(), currency, lost_reason))
}

/// Locks a stage's column and answers its pipeline; 404 when the stage is not the tenant's.
async fn lock_stage(tx: &mut Tx, stage: Uuid) -> Result<Uuid, DomainError> {
    let pipeline: Option<Uuid> =
        sqlx::query_scalar("select pipeline_id from crm_stages where id = $1 for no key update")
            .bind(stage)
            .fetch_optional(&mut **tx)
            .await?;
    pipeline.ok_or(DomainError::NotFound)
}

async fn history(
    tx: &mut Tx,
    scope: &Scope,
    deal: Uuid,
    from: Option<Uuid>,
    to: Uuid,
    status: Status,
) -> Result<(), DomainError> {
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    sqlx::query(
        "insert into crm_deal_history (id, tenant_id, deal_id, from_stage, to_stage, status, actor) \
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(deal)
    .bind(from)
    .bind(to)
    .bind(status)
    .bind(scope.actor.principal())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A deal's outcome on its contact's timeline.
async fn on_timeline(tx: &mut Tx, scope: &Scope, deal: &Deal, kind: &str) -> Result<(), DomainError> {
    if let Some(contact) = deal.contact_id {
        activity::record(
            tx,
            scope,
            Subject::Contact(contact),
            kind,
            json!({"deal": {"id": deal.id, "title": deal.title, "amount_minor": deal.amount_minor,
                "currency": deal.currency, "stage": deal.stage_name}}),
        )
        .await?;
    }
    Ok(())
}

pub async fn create(pool: &PgPool, scope: &Scope, input: NewDeal) -> Result<Deal, DomainError> {
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut tx = pg::begin(pool, scope).await?;
    let f = input.fields();
    let (title, currency, lost_reason) = validate(&mut tx, &f).await?;
    let pipeline = match lock_stage(&mut tx, input.stage_id).await {
        Err(DomainError::NotFound) => {
            return Err(DomainError::invalid(
                "stage_id",
                "not_found",
                "no stage of this tenant has this id",
            ));
        }
        other => other?,
    };
    let last: Option<String> = sqlx::query_scalar("select max(rank) from crm_deals where stage_id = $1")
        .bind(input.stage_id)
        .fetch_one(&mut *tx)
        .await?;
    let key = rank::between(last.as_deref(), None).map_err(anyhow::Error::from)?;
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into crm_deals (id, tenant_id, pipeline_id, stage_id, rank, title, amount_minor, currency, owner_id, \
         contact_id, company_id, expected_close, status, lost_reason, won_at, lost_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                 case when $13 = 'won' then now() end, case when $13 = 'lost' then now() end)",
    )
    .bind(id)
    .bind(tenant)
    .bind(pipeline)
    .bind(input.stage_id)
    .bind(&key)
    .bind(&title)
    .bind(f.amount_minor)
    .bind(&currency)
    .bind(f.owner_id)
    .bind(f.contact_id)
    .bind(f.company_id)
    .bind(f.expected_close)
    .bind(f.status)
    .bind(&lost_reason)
    .execute(&mut *tx)
    .await?;
    history(&mut tx, scope, id, None, input.stage_id, f.status).await?;
    let deal = fetch(&mut tx, id, false).await?.ok_or(DomainError::NotFound)?;
    on_timeline(&mut tx, scope, &deal, "deal_created").await?;
    tx.commit().await?;
    Ok(deal)
}

pub async fn get(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<Deal, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let deal = fetch(&mut tx, id, false).await?.ok_or(DomainError::NotFound)?;
    tx.commit().await?;
    Ok(deal)
}

/// A JSON merge patch of the deal's fields; reaching `won` or `lost` stamps the time (kept
/// while the outcome stays), reopening clears it.
pub async fn update(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    patch: Value,
    if_match: Option<i32>,
) -> Result<Deal, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let current = fetch(&mut tx, id, true).await?.ok_or(DomainError::NotFound)?;
    let (f, changed) = input::patched(&current.editable(), &patch)?;
    let (title, currency, lost_reason) = validate(&mut tx, &f).await?;
    if if_match.is_some_and(|v| v != current.version) {
        return Err(DomainError::StaleVersion);
    }
    if changed.is_empty() {
        tx.commit().await?;
        return Ok(current);
    }
    sqlx::query(
        "update crm_deals set title = $2, amount_minor = $3, currency = $4, owner_id = $5, contact_id = $6, \
         company_id = $7, expected_close = $8, status = $9, lost_reason = $10, \
         won_at = case when $9 = 'won' then coalesce(won_at, now()) end, \
         lost_at = case when $9 = 'lost' then coalesce(lost_at, now()) end, \
         updated_at = now(), version = version + 1 where id = $1",
    )
    .bind(id)
    .bind(&title)
    .bind(f.amount_minor)
    .bind(&currency)
    .bind(f.owner_id)
    .bind(f.contact_id)
    .bind(f.company_id)
    .bind(f.expected_close)
    .bind(f.status)
    .bind(&lost_reason)
    .execute(&mut *tx)
    .await?;
    let deal = fetch(&mut tx, id, false).await?.ok_or(DomainError::NotFound)?;
    if f.status != current.status {
        history(&mut tx, scope, id, Some(current.stage_id), current.stage_id, f.status).await?;
        let kind = match f.status {
            Status::Won => "deal_won",
            Status::Lost => "deal_lost",
            Status::Open => "deal_reopened",
        };
        on_timeline(&mut tx, scope, &deal, kind).await?;
    }
    tx.commit().await?;
    Ok(deal)
}

pub async fn delete(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let gone = sqlx::query("delete from crm_deals where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(DomainError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The stage to move into (any pipeline of the tenant; another tenant's answers 404).
    pub stage_id: Uuid,
    /// The deal that ends up just above it (absent: the top, unless `before_id` says otherwise).
    #[serde(default)]
    pub after_id: Option<Uuid>,
    /// The deal that ends up just below it. Neither neighbour: the bottom of the column.
    #[serde(default)]
    pub before_id: Option<Uuid>,
}

/// The rank of a deal landing between the deal above it (`low`, the smaller rank; none at the
/// top) and the one below it (`high`; none at the bottom). Neighbours given the wrong way round
/// (the one named above is in fact below) are the caller's error, on `before_id`.
pub fn landing_rank(low: Option<&str>, high: Option<&str>) -> Result<String, DomainError> {
    rank::between(low, high).map_err(|_| {
        DomainError::invalid(
            "before_id",
            "not_below_after",
            "before_id must be below after_id in the column",
        )
    })
}

/// Puts a deal into a stage between two neighbours: one row written under the stage's lock.
pub async fn move_deal(pool: &PgPool, scope: &Scope, id: Uuid, input: MoveRequest) -> Result<Deal, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    // The column first, then the deal: the order every writer of a column takes.
    let pipeline = lock_stage(&mut tx, input.stage_id).await?;
    let deal = fetch(&mut tx, id, true).await?.ok_or(DomainError::NotFound)?;
    let mut v = Validator::new();
    let mut neighbour = async |field: &'static str, other: Option<Uuid>| -> Result<Option<String>, DomainError> {
        let Some(other) = other else {
            return Ok(None);
        };
        let found: Option<String> =
            sqlx::query_scalar("select rank from crm_deals where id = $1 and stage_id = $2 and id <> $3")
                .bind(other)
                .bind(input.stage_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            v.error(field, "not_in_stage", "must be another deal of the target stage");
        }
        Ok(found)
    };
    let after = neighbour("after_id", input.after_id).await?;
    let before = neighbour("before_id", input.before_id).await?;
    v.finish()?;
    let (low, high) = match (after, before) {
        (Some(a), Some(b)) => (Some(a), Some(b)),
        (Some(a), None) => {
            let next: Option<String> =
                sqlx::query_scalar("select min(rank) from crm_deals where stage_id = $1 and rank > $2 and id <> $3")
                    .bind(input.stage_id)
                    .bind(&a)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            (Some(a), next)
        }
        (None, Some(b)) => {
            let prev: Option<String> =
                sqlx::query_scalar("select max(rank) from crm_deals where stage_id = $1 and rank < $2 and id <> $3")
                    .bind(input.stage_id)
                    .bind(&b)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            (prev, Some(b))
        }
        (None, None) => {
            let last: Option<String> =
                sqlx::query_scalar("select max(rank) from crm_deals where stage_id = $1 and id <> $2")
                    .bind(input.stage_id)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            (last, None)
        }
    };
    let key = landing_rank(low.as_deref(), high.as_deref())?;
    sqlx::query(
        "update crm_deals set stage_id = $2, pipeline_id = $3, rank = $4, updated_at = now(), version = version + 1 \
         where id = $1",
    )
    .bind(id)
    .bind(input.stage_id)
    .bind(pipeline)
    .bind(&key)
    .execute(&mut *tx)
    .await?;
    if deal.stage_id != input.stage_id {
        history(&mut tx, scope, id, Some(deal.stage_id), input.stage_id, deal.status).await?;
    }
    let moved = fetch(&mut tx, id, false).await?.ok_or(DomainError::NotFound)?;
    tx.commit().await?;
    Ok(moved)
}

/// `GET /crm/deals` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DealListParams {
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
    pub pipeline_id: Option<Uuid>,
    pub stage_id: Option<Uuid>,
    #[param(value_type = Option<Status>)]
    pub status: Option<Status>,
    pub owner_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub company_id: Option<Uuid>,
}

/// Deals, newest first.
pub async fn list(pool: &PgPool, scope: &Scope, params: DealListParams) -> Result<ResultPage<Deal>, DomainError> {
    let page: PageRequest<pg::TimeKey> = pg::time_page_request(&params.page)?;
    let mut tx = pg::begin(pool, scope).await?;
    let rows: Vec<Deal> = sqlx::query_as(&format!(
        "select {COLUMNS} from {FROM} where ($1::timestamptz is null or (d.created_at, d.id) < ($1, $2)) \
           and ($4::uuid is null or d.pipeline_id = $4) and ($5::uuid is null or d.stage_id = $5) \
           and ($6::text is null or d.status = $6) and ($7::uuid is null or d.owner_id = $7) \
           and ($8::uuid is null or d.contact_id = $8) and ($9::uuid is null or d.company_id = $9) \
         order by d.created_at desc, d.id desc limit $3"
    ))
    .bind(page.after.map(|a| a.0))
    .bind(page.after.map(|a| a.1))
    .bind(page.fetch())
    .bind(params.pipeline_id)
    .bind(params.stage_id)
    .bind(params.status)
    .bind(params.owner_id)
    .bind(params.contact_id)
    .bind(params.company_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |d: &Deal| (d.created_at, d.id)))
}

/// Sums of one currency.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Total {
    pub currency: String,
    pub count: i64,
    pub amount_minor: i64,
    /// Amount times the stage's probability, rounded half up per stage.
    pub weighted_minor: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Column {
    pub id: Uuid,
    pub name: String,
    pub position: i32,
    pub probability: i32,
    /// Open deals in the stage.
    pub count: i64,
    /// Per currency (amounts of different currencies are never added).
    pub totals: Vec<Total>,
    /// Open deals in board order (at most 200; `count` says how many there are).
    pub deals: Vec<Deal>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Board {
    pub pipeline_id: Uuid,
    pub name: String,
    pub stages: Vec<Column>,
}

pub const BOARD_DEALS: i64 = 200;

type TotalRow = (Uuid, String, i64, i64, i64);

pub async fn board(pool: &PgPool, scope: &Scope, pipeline: Uuid) -> Result<Board, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let name: Option<String> = sqlx::query_scalar("select name from crm_pipelines where id = $1")
        .bind(pipeline)
        .fetch_optional(&mut *tx)
        .await?;
    let name = name.ok_or(DomainError::NotFound)?;
    let stages: Vec<(Uuid, String, i32, i32)> = sqlx::query_as(
        "select id, name, position, probability from crm_stages where pipeline_id = $1 order by position",
    )
    .bind(pipeline)
    .fetch_all(&mut *tx)
    .await?;
    let totals: Vec<TotalRow> = sqlx::query_as(
        "select d.stage_id, d.currency, count(*), sum(d.amount_minor)::bigint, \
                round(sum(d.amount_minor)::numeric * s.probability / 100)::bigint \
         from crm_deals d join crm_stages s on s.id = d.stage_id \
         where d.pipeline_id = $1 and d.status = 'open' group by d.stage_id, d.currency, s.probability \
         order by d.currency",
    )
    .bind(pipeline)
    .fetch_all(&mut *tx)
    .await?;
    let deals: Vec<Deal> = sqlx::query_as(&format!(
        "select {COLUMNS} from crm_stages st cross join lateral ( \
             select d.* from crm_deals d where d.stage_id = st.id and d.status = 'open' \
             order by d.rank, d.id limit $2) d \
         join crm_stages s on s.id = d.stage_id \
         where st.pipeline_id = $1 order by st.position, d.rank, d.id"
    ))
    .bind(pipeline)
    .bind(BOARD_DEALS)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let columns = stages
        .into_iter()
        .map(|(id, name, position, probability)| {
            let totals: Vec<Total> = totals
                .iter()
                .filter(|t| t.0 == id)
                .map(|(_, currency, count, amount, weighted)| Total {
                    currency: currency.clone(),
                    count: *count,
                    amount_minor: *amount,
                    weighted_minor: *weighted,
                })
                .collect();
            Column {
                id,
                name,
                position,
                probability,
                count: totals.iter().map(|t| t.count).sum(),
                totals,
                deals: deals.iter().filter(|d| d.stage_id == id).cloned().collect(),
            }
        })
        .collect();
    Ok(Board {
        pipeline_id: pipeline,
        name,
        stages: columns,
    })
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ForecastMonth {
    /// `YYYY-MM`.
    pub month: String,
    pub currency: String,
    /// Open deals expected to close that month, weighted by their stage's probability.
    pub expected_weighted_minor: i64,
    /// Open deals expected to close that month, unweighted.
    pub expected_minor: i64,
    /// Deals won that month.
    pub won_minor: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Forecast {
    pub pipeline_id: Uuid,
    /// Won / (won + lost) of the deals closed in the last 180 days; null when none closed.
    pub win_rate: Option<f64>,
    /// Open deals past their expected close date (they count in no month).
    pub overdue_count: i64,
    /// The last 3 months (won) and the next 6 (expected), per currency.
    pub months: Vec<ForecastMonth>,
}

type ForecastRow = (NaiveDate, String, i64, i64, i64);

/// A simple forecast: weighted open amounts by expected close month, won amounts by the month
/// they were won, and the recent win rate.
pub async fn forecast(pool: &PgPool, scope: &Scope, pipeline: Uuid) -> Result<Forecast, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let exists: bool = sqlx::query_scalar("select exists (select 1 from crm_pipelines where id = $1)")
        .bind(pipeline)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(DomainError::NotFound);
    }
    let today = Utc::now().date_naive();
    let this_month = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap_or(today);
    let first = this_month.checked_sub_months(Months::new(3)).unwrap_or(this_month);
    let end = this_month.checked_add_months(Months::new(6)).unwrap_or(this_month);
    let rows: Vec<ForecastRow> = sqlx::query_as(
        "with open as ( \
             select date_trunc('month', d.expected_close)::date as m, d.currency, \
                    round(sum(d.amount_minor::numeric * s.probability / 100))::bigint as weighted, \
                    sum(d.amount_minor)::bigint as amount \
             from crm_deals d join crm_stages s on s.id = d.stage_id \
             where d.pipeline_id = $1 and d.status = 'open' and d.expected_close >= $4 and d.expected_close < $3 \
             group by 1, 2), \
         won as ( \
             select date_trunc('month', d.won_at at time zone 'UTC')::date as m, d.currency, \
                    sum(d.amount_minor)::bigint as amount \
             from crm_deals d where d.pipeline_id = $1 and d.status = 'won' \
               and d.won_at >= $2::date and d.won_at < $3::date group by 1, 2) \
         select coalesce(o.m, w.m), coalesce(o.currency, w.currency), coalesce(o.weighted, 0), \
                coalesce(o.amount, 0), coalesce(w.amount, 0) \
         from open o full join won w on w.m = o.m and w.currency = o.currency order by 1, 2",
    )
    .bind(pipeline)
    .bind(first)
    .bind(end)
    .bind(today)
    .fetch_all(&mut *tx)
    .await?;
    let (won, lost): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'won'), count(*) filter (where status = 'lost') from crm_deals \
         where pipeline_id = $1 and coalesce(won_at, lost_at) >= now() - interval '180 days'",
    )
    .bind(pipeline)
    .fetch_one(&mut *tx)
    .await?;
    let overdue: i64 = sqlx::query_scalar(
        "select count(*) from crm_deals where pipeline_id = $1 and status = 'open' and expected_close < $2",
    )
    .bind(pipeline)
    .bind(today)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Forecast {
        pipeline_id: pipeline,
        win_rate: (won + lost > 0).then(|| (won as f64 / (won + lost) as f64 * 1000.0).round() / 1000.0),
        overdue_count: overdue,
        months: rows
            .into_iter()
            .map(|(m, currency, weighted, expected, won)| ForecastMonth {
                month: m.format("%Y-%m").to_string(),
                currency,
                expected_weighted_minor: weighted,
                expected_minor: expected,
                won_minor: won,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deal_lands_between_its_neighbours_and_wrong_way_round_is_refused() {
        let top = landing_rank(None, None).unwrap();
        let below = landing_rank(Some(&top), None).unwrap();
        assert!(top < below);
        let between = landing_rank(Some(&top), Some(&below)).unwrap();
        assert!(top < between && between < below, "{top} < {between} < {below}");
        let above = landing_rank(None, Some(&top)).unwrap();
        assert!(above < top);
        // Named the wrong way round: the deal "after" is below the deal "before".
        let Err(DomainError::Invalid(errors)) = landing_rank(Some(&below), Some(&top)) else {
            panic!("not refused")
        };
        assert_eq!(
            (errors[0].field.as_str(), errors[0].code.as_str()),
            ("before_id", "not_below_after")
        );
        // The same deal on both sides leaves no room either.
        assert!(landing_rank(Some(&top), Some(&top)).is_err());
    }
}
