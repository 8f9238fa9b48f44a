//! Pipelines and their ordered stages (each with a win probability). Stages can be added,
//! renamed, re-weighted, reordered and deleted; deleting one that holds deals needs a target
//! stage of the same pipeline, where its deals go (in their order, at the bottom).
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::adapters::pg::{self, Tx};
use crate::domain::validate::TextSchema;
use crate::domain::{DomainError, Scope, Text, Validator, rank};

pub const MAX_STAGES: usize = 30;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Stage {
    pub id: Uuid,
    pub name: String,
    /// 0-based place in the pipeline.
    pub position: i32,
    /// Win probability in percent.
    pub probability: i32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Pipeline {
    pub id: Uuid,
    pub name: String,
    pub stages: Vec<Stage>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i32,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageInput {
    /// 1–100 characters.
    #[schema(value_type = TextSchema<100>, inline)]
    pub name: String,
    /// Win probability in percent, 0–100.
    #[schema(minimum = 0, maximum = 100)]
    pub probability: i32,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPipeline {
    /// 1–100 characters.
    #[schema(value_type = TextSchema<100>, inline)]
    pub name: String,
    /// In board order, 1 to 30.
    #[schema(min_items = 1, max_items = 30)]
    pub stages: Vec<StageInput>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelinePatch {
    /// 1–100 characters.
    #[schema(value_type = TextSchema<100>, inline)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStage {
    /// 1–100 characters.
    #[schema(value_type = TextSchema<100>, inline)]
    pub name: String,
    /// Win probability in percent, 0–100.
    #[schema(minimum = 0, maximum = 100)]
    pub probability: i32,
    /// Where it goes (0-based; past the end: last); default: last.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub position: Option<i32>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StagePatch {
    /// 1–100 characters.
    #[serde(default)]
    #[schema(value_type = Option<TextSchema<100>>, inline)]
    pub name: Option<String>,
    /// Win probability in percent, 0–100.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    pub probability: Option<i32>,
    /// Moves the stage to this place (0-based; past the end: last); the others shift.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub position: Option<i32>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteStageParams {
    /// Required when the stage holds deals: a stage of the same pipeline that takes them.
    pub move_deals_to: Option<Uuid>,
}

fn stage_fields(v: &mut Validator, prefix: &str, name: &str, probability: i32) -> String {
    if !(0..=100).contains(&probability) {
        v.error(&format!("{prefix}probability"), "out_of_range", "must be 0 to 100");
    }
    v.field(&format!("{prefix}name"), Text::parse(name, 1, 100))
        .map(Text::into_inner)
        .unwrap_or_default()
}

fn pipeline_name_taken() -> DomainError {
    DomainError::conflict("pipeline-exists", "the tenant has a pipeline with this name")
}

type PipelineRow = (Uuid, String, DateTime<Utc>, DateTime<Utc>, i32);

async fn load(tx: &mut Tx, id: Uuid) -> Result<Pipeline, DomainError> {
    let row: Option<PipelineRow> =
        sqlx::query_as("select id, name, created_at, updated_at, version from crm_pipelines where id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    let (id, name, created_at, updated_at, version) = row.ok_or(DomainError::NotFound)?;
    let stages = sqlx::query_as(
        "select id, name, position, probability from crm_stages where pipeline_id = $1 order by position",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(Pipeline {
        id,
        name,
        stages,
        created_at,
        updated_at,
        version,
    })
}

/// Locks a pipeline (its stage list changes one writer at a time); 404 when it is not the
/// tenant's.
async fn lock(tx: &mut Tx, id: Uuid) -> Result<(), DomainError> {
    let found: Option<Uuid> = sqlx::query_scalar("select id from crm_pipelines where id = $1 for no key update")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    found.map(|_| ()).ok_or(DomainError::NotFound)
}

async fn touch(tx: &mut Tx, id: Uuid) -> Result<(), DomainError> {
    sqlx::query("update crm_pipelines set updated_at = now(), version = version + 1 where id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn list(pool: &PgPool, scope: &Scope) -> Result<Vec<Pipeline>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let ids: Vec<Uuid> = sqlx::query_scalar("select id from crm_pipelines order by created_at, id")
        .fetch_all(&mut *tx)
        .await?;
    let mut pipelines = Vec::with_capacity(ids.len());
    for id in ids {
        pipelines.push(load(&mut tx, id).await?);
    }
    tx.commit().await?;
    Ok(pipelines)
}

pub async fn get(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<Pipeline, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let pipeline = load(&mut tx, id).await?;
    tx.commit().await?;
    Ok(pipeline)
}

pub async fn create(pool: &PgPool, scope: &Scope, input: NewPipeline) -> Result<Pipeline, DomainError> {
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut v = Validator::new();
    let name = v.field("name", Text::parse(&input.name, 1, 100)).map(Text::into_inner);
    if input.stages.is_empty() || input.stages.len() > MAX_STAGES {
        v.error("stages", "length", format!("1 to {MAX_STAGES} stages"));
    }
    let stages: Vec<(String, i32)> = input
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                stage_fields(&mut v, &format!("stages.{i}."), &s.name, s.probability),
                s.probability,
            )
        })
        .collect();
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    let id = Uuid::now_v7();
    sqlx::query("insert into crm_pipelines (id, tenant_id, name) values ($1, $2, $3)")
        .bind(id)
        .bind(tenant)
        .bind(name.unwrap_or_default())
        .execute(&mut *tx)
        .await
        .map_err(|e| pg::map_constraint(e, &[("crm_pipelines_name_key", pipeline_name_taken)]))?;
    for (position, (name, probability)) in stages.iter().enumerate() {
        sqlx::query(
            "insert into crm_stages (id, tenant_id, pipeline_id, name, position, probability) \
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(id)
        .bind(name)
        .bind(i32::try_from(position).unwrap_or(i32::MAX))
        .bind(probability)
        .execute(&mut *tx)
        .await?;
    }
    let pipeline = load(&mut tx, id).await?;
    tx.commit().await?;
    Ok(pipeline)
}

pub async fn rename(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    input: PipelinePatch,
    if_match: Option<i32>,
) -> Result<Pipeline, DomainError> {
    let mut v = Validator::new();
    let name = v.field("name", Text::parse(&input.name, 1, 100)).map(Text::into_inner);
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    let version: Option<i32> = sqlx::query_scalar("select version from crm_pipelines where id = $1 for no key update")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let version = version.ok_or(DomainError::NotFound)?;
    if if_match.is_some_and(|m| m != version) {
        return Err(DomainError::StaleVersion);
    }
    sqlx::query("update crm_pipelines set name = $2, updated_at = now(), version = version + 1 where id = $1")
        .bind(id)
        .bind(name.unwrap_or_default())
        .execute(&mut *tx)
        .await
        .map_err(|e| pg::map_constraint(e, &[("crm_pipelines_name_key", pipeline_name_taken)]))?;
    let pipeline = load(&mut tx, id).await?;
    tx.commit().await?;
    Ok(pipeline)
}

/// Deletes an empty pipeline (409 `pipeline-has-deals` otherwise: move or delete them first).
pub async fn delete(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    lock(&mut tx, id).await?;
    let deals: i64 = sqlx::query_scalar("select count(*) from crm_deals where pipeline_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if deals > 0 {
        return Err(DomainError::conflict(
            "pipeline-has-deals",
            format!("the pipeline holds {deals} deals: move or delete them first"),
        ));
    }
    sqlx::query("delete from crm_pipelines where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Puts the pipeline's stages in `order` (ids), positions 0.. (the unique position constraint
/// is checked at commit).
async fn renumber(tx: &mut Tx, order: &[Uuid]) -> Result<(), DomainError> {
    for (position, id) in order.iter().enumerate() {
        sqlx::query("update crm_stages set position = $2 where id = $1")
            .bind(id)
            .bind(i32::try_from(position).unwrap_or(i32::MAX))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn place(order: &mut Vec<Uuid>, id: Uuid, position: Option<i32>) {
    order.retain(|s| *s != id);
    let at = position
        .and_then(|p| usize::try_from(p).ok())
        .map_or(order.len(), |p| p.min(order.len()));
    order.insert(at, id);
}

pub async fn add_stage(pool: &PgPool, scope: &Scope, pipeline: Uuid, input: NewStage) -> Result<Pipeline, DomainError> {
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut v = Validator::new();
    let name = stage_fields(&mut v, "", &input.name, input.probability);
    if input.position.is_some_and(|p| p < 0) {
        v.error("position", "out_of_range", "must be 0 or more");
    }
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    lock(&mut tx, pipeline).await?;
    let current = load(&mut tx, pipeline).await?;
    if current.stages.len() >= MAX_STAGES {
        return Err(DomainError::conflict(
            "too-many-stages",
            format!("a pipeline has at most {MAX_STAGES} stages"),
        ));
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into crm_stages (id, tenant_id, pipeline_id, name, position, probability) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(tenant)
    .bind(pipeline)
    .bind(&name)
    .bind(i32::try_from(current.stages.len()).unwrap_or(i32::MAX))
    .bind(input.probability)
    .execute(&mut *tx)
    .await?;
    let mut order: Vec<Uuid> = current.stages.iter().map(|s| s.id).collect();
    place(&mut order, id, input.position);
    renumber(&mut tx, &order).await?;
    touch(&mut tx, pipeline).await?;
    let pipeline = load(&mut tx, pipeline).await?;
    tx.commit().await?;
    Ok(pipeline)
}

pub async fn update_stage(
    pool: &PgPool,
    scope: &Scope,
    pipeline: Uuid,
    stage: Uuid,
    input: StagePatch,
) -> Result<Pipeline, DomainError> {
    let mut v = Validator::new();
    let name = input
        .name
        .as_deref()
        .and_then(|n| v.field("name", Text::parse(n, 1, 100)).map(Text::into_inner));
    if input.probability.is_some_and(|p| !(0..=100).contains(&p)) {
        v.error("probability", "out_of_range", "must be 0 to 100");
    }
    if input.position.is_some_and(|p| p < 0) {
        v.error("position", "out_of_range", "must be 0 or more");
    }
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    lock(&mut tx, pipeline).await?;
    let current = load(&mut tx, pipeline).await?;
    if !current.stages.iter().any(|s| s.id == stage) {
        return Err(DomainError::NotFound);
    }
    sqlx::query(
        "update crm_stages set name = coalesce($2, name), probability = coalesce($3, probability) where id = $1",
    )
    .bind(stage)
    .bind(name)
    .bind(input.probability)
    .execute(&mut *tx)
    .await?;
    if input.position.is_some() {
        let mut order: Vec<Uuid> = current.stages.iter().map(|s| s.id).collect();
        place(&mut order, stage, input.position);
        renumber(&mut tx, &order).await?;
    }
    touch(&mut tx, pipeline).await?;
    let pipeline = load(&mut tx, pipeline).await?;
    tx.commit().await?;
    Ok(pipeline)
}

/// Deletes a stage; its deals (open or closed) go to `move_deals_to`, a stage of the same
/// pipeline, at the bottom in their order. Without a target, a stage with deals answers 409
/// `stage-has-deals`; the last stage of a pipeline stays (409 `last-stage`).
pub async fn delete_stage(
    pool: &PgPool,
    scope: &Scope,
    pipeline: Uuid,
    stage: Uuid,
    params: DeleteStageParams,
) -> Result<Pipeline, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    lock(&mut tx, pipeline).await?;
    let current = load(&mut tx, pipeline).await?;
    if !current.stages.iter().any(|s| s.id == stage) {
        return Err(DomainError::NotFound);
    }
    if current.stages.len() == 1 {
        return Err(DomainError::conflict(
            "last-stage",
            "a pipeline keeps at least one stage",
        ));
    }
    // The stage and the target, in id order, before their deals: moves into either wait.
    let mut columns = vec![stage];
    columns.extend(
        params
            .move_deals_to
            .filter(|t| current.stages.iter().any(|s| s.id == *t)),
    );
    columns.sort();
    sqlx::query("select id from crm_stages where id = any($1) order by id for no key update")
        .bind(&columns)
        .execute(&mut *tx)
        .await?;
    let deals: Vec<Uuid> =
        sqlx::query_scalar("select id from crm_deals where stage_id = $1 order by rank, id for update")
            .bind(stage)
            .fetch_all(&mut *tx)
            .await?;
    if !deals.is_empty() {
        let Some(target) = params.move_deals_to else {
            return Err(DomainError::conflict(
                "stage-has-deals",
                format!(
                    "the stage holds {} deals: name a stage of the pipeline in move_deals_to",
                    deals.len()
                ),
            ));
        };
        if target == stage || !current.stages.iter().any(|s| s.id == target) {
            return Err(DomainError::invalid(
                "move_deals_to",
                "not_in_pipeline",
                "must be another stage of the same pipeline",
            ));
        }
        let mut last: Option<String> = sqlx::query_scalar("select max(rank) from crm_deals where stage_id = $1")
            .bind(target)
            .fetch_one(&mut *tx)
            .await?;
        for deal in &deals {
            let key = rank::between(last.as_deref(), None).map_err(anyhow::Error::from)?;
            sqlx::query(
                "update crm_deals set stage_id = $2, rank = $3, updated_at = now(), version = version + 1 where id = $1",
            )
            .bind(deal)
            .bind(target)
            .bind(&key)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "insert into crm_deal_history (id, tenant_id, deal_id, from_stage, to_stage, status, actor) \
                 select $1, tenant_id, id, $3, $4, status, $5 from crm_deals where id = $2",
            )
            .bind(Uuid::now_v7())
            .bind(deal)
            .bind(stage)
            .bind(target)
            .bind(scope.actor.principal())
            .execute(&mut *tx)
            .await?;
            last = Some(key);
        }
    }
    sqlx::query("delete from crm_stages where id = $1")
        .bind(stage)
        .execute(&mut *tx)
        .await?;
    let order: Vec<Uuid> = current.stages.iter().map(|s| s.id).filter(|s| *s != stage).collect();
    renumber(&mut tx, &order).await?;
    touch(&mut tx, pipeline).await?;
    let pipeline = load(&mut tx, pipeline).await?;
    tx.commit().await?;
    Ok(pipeline)
}
