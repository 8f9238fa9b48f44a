//! `crm-deals`: pipelines with ordered stages (win probabilities), deals (minor units and a
//! currency) on a board with per-stage counts, sums and weighted sums, moves between two
//! neighbours (fractional ranks, one row written), stage history and a simple forecast. Rules
//! live in `shared::services::crm::{pipelines, deals}`.
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shared::domain::{PageParams, ResultPage, Role};
use shared::http::docs::{
    BodyProblems, Conflict, IfMatchHeader, ListProblems, NotFound, PreconditionFailed, TenantHeader, TenantProblems,
};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Body, Core, IfMatch, Json, Params, PathId, TenantCtx, etag, min};
use shared::services::crm::deals::{self, Board, Deal, DealListParams, Forecast, MoveRequest, NewDeal};
use shared::services::crm::pipelines::{
    self, DeleteStageParams, NewPipeline, NewStage, Pipeline, PipelinePatch, StagePatch,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

const TAG: &str = "crm";

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("GET", "/crm/pipelines", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/crm/pipelines", Access::Tenant(Role::Admin)),
    RouteSpec::new("GET", "/crm/pipelines/{id}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("PATCH", "/crm/pipelines/{id}", Access::Tenant(Role::Admin)),
    RouteSpec::new("DELETE", "/crm/pipelines/{id}", Access::Tenant(Role::Admin)),
    RouteSpec::new("GET", "/crm/pipelines/{id}/board", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/crm/pipelines/{id}/forecast", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/crm/pipelines/{id}/stages", Access::Tenant(Role::Admin)),
    RouteSpec::new(
        "PATCH",
        "/crm/pipelines/{id}/stages/{stage_id}",
        Access::Tenant(Role::Admin),
    ),
    RouteSpec::new(
        "DELETE",
        "/crm/pipelines/{id}/stages/{stage_id}",
        Access::Tenant(Role::Admin),
    ),
    RouteSpec::new("GET", "/crm/deals", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/crm/deals", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/crm/deals/{id}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("PATCH", "/crm/deals/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new("DELETE", "/crm/deals/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new("POST", "/crm/deals/{id}/move", Access::Tenant(Role::Member)),
];

pub fn api() -> OpenApiRouter<Core> {
    OpenApiRouter::with_openapi(shared::http::docs::base())
        .routes(routes!(list_pipelines, create_pipeline))
        .routes(routes!(get_pipeline, rename_pipeline, delete_pipeline))
        .routes(routes!(board))
        .routes(routes!(forecast))
        .routes(routes!(add_stage))
        .routes(routes!(update_stage, delete_stage))
        .routes(routes!(list_deals, create_deal))
        .routes(routes!(get_deal, update_deal, delete_deal))
        .routes(routes!(move_deal))
}

pub fn router(core: Core) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(core))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// The tenant's pipelines with their stages, oldest first.
#[utoipa::path(get, path = "/crm/pipelines", tag = TAG, security(("bearer" = [])), params(TenantHeader),
    responses((status = 200, body = Vec<Pipeline>), TenantProblems))]
async fn list_pipelines(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
) -> Result<Json<Vec<Pipeline>>, ApiError> {
    Ok(Json(pipelines::list(&core.db, &ctx.scope).await?))
}

/// Create a pipeline with its stages in board order (admin). Names are unique per tenant.
#[utoipa::path(post, path = "/crm/pipelines", tag = TAG, security(("bearer" = [])), request_body = NewPipeline,
    params(TenantHeader), responses((status = 201, body = Pipeline), Conflict, TenantProblems, BodyProblems))]
async fn create_pipeline(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    body: Body<NewPipeline>,
) -> Result<Response, ApiError> {
    let pipeline = pipelines::create(&core.db, &ctx.scope, body.value).await?;
    Ok((StatusCode::CREATED, Json(pipeline)).into_response())
}

/// A pipeline and its stages.
#[utoipa::path(get, path = "/crm/pipelines/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Pipeline, headers(("ETag" = String))), NotFound, TenantProblems))]
async fn get_pipeline(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    let pipeline = pipelines::get(&core.db, &ctx.scope, id).await?;
    Ok(([etag(pipeline.version)], Json(pipeline)).into_response())
}

/// Rename a pipeline (admin). `If-Match` optional.
#[utoipa::path(patch, path = "/crm/pipelines/{id}", tag = TAG, security(("bearer" = [])), request_body = PipelinePatch,
    params(TenantHeader, ("id" = Uuid, Path), IfMatchHeader),
    responses((status = 200, body = Pipeline, headers(("ETag" = String))), NotFound, Conflict, PreconditionFailed,
        TenantProblems, BodyProblems))]
async fn rename_pipeline(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    PathId(id): PathId<Uuid>,
    IfMatch(version): IfMatch,
    body: Body<PipelinePatch>,
) -> Result<Response, ApiError> {
    let pipeline = pipelines::rename(&core.db, &ctx.scope, id, body.value, version).await?;
    Ok(([etag(pipeline.version)], Json(pipeline)).into_response())
}

/// Delete a pipeline without deals (admin; 409 `pipeline-has-deals` otherwise).
#[utoipa::path(delete, path = "/crm/pipelines/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 204), NotFound, Conflict, TenantProblems))]
async fn delete_pipeline(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    pipelines::delete(&core.db, &ctx.scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The board: stages in order with their open deals in board order, and per stage the count
/// and, per currency, the sum and the probability-weighted sum.
#[utoipa::path(get, path = "/crm/pipelines/{id}/board", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Board), NotFound, TenantProblems))]
async fn board(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Json<Board>, ApiError> {
    Ok(Json(deals::board(&core.db, &ctx.scope, id).await?))
}

/// A simple forecast: weighted open amounts by expected close month (next 6 months), won
/// amounts by month (last 3), the win rate of the last 180 days, overdue deals.
#[utoipa::path(get, path = "/crm/pipelines/{id}/forecast", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Forecast), NotFound, TenantProblems))]
async fn forecast(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Json<Forecast>, ApiError> {
    Ok(Json(deals::forecast(&core.db, &ctx.scope, id).await?))
}

/// Add a stage (admin), at `position` or last.
#[utoipa::path(post, path = "/crm/pipelines/{id}/stages", tag = TAG, security(("bearer" = [])), request_body = NewStage,
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 201, body = Pipeline), NotFound, Conflict, TenantProblems, BodyProblems))]
async fn add_stage(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    PathId(id): PathId<Uuid>,
    body: Body<NewStage>,
) -> Result<Response, ApiError> {
    let pipeline = pipelines::add_stage(&core.db, &ctx.scope, id, body.value).await?;
    Ok((StatusCode::CREATED, Json(pipeline)).into_response())
}

/// Rename, re-weight or reorder a stage (admin): any of `name` (1–100 characters),
/// `probability` (0–100) and `position` (0-based; the others shift).
#[utoipa::path(patch, path = "/crm/pipelines/{id}/stages/{stage_id}", tag = TAG, security(("bearer" = [])),
    request_body = StagePatch,
    params(TenantHeader, ("id" = Uuid, Path), ("stage_id" = Uuid, Path)),
    responses((status = 200, body = Pipeline), NotFound, TenantProblems, BodyProblems))]
async fn update_stage(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    PathId((id, stage_id)): PathId<(Uuid, Uuid)>,
    body: Body<StagePatch>,
) -> Result<Json<Pipeline>, ApiError> {
    Ok(Json(
        pipelines::update_stage(&core.db, &ctx.scope, id, stage_id, body.value).await?,
    ))
}

/// Delete a stage (admin). One holding deals needs `move_deals_to` (409 `stage-has-deals`
/// without); the last stage stays (409 `last-stage`).
#[utoipa::path(delete, path = "/crm/pipelines/{id}/stages/{stage_id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path), ("stage_id" = Uuid, Path), DeleteStageParams),
    responses((status = 200, body = Pipeline), NotFound, Conflict, TenantProblems, ListProblems))]
async fn delete_stage(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    PathId((id, stage_id)): PathId<(Uuid, Uuid)>,
    Params(params): Params<DeleteStageParams>,
) -> Result<Json<Pipeline>, ApiError> {
    Ok(Json(
        pipelines::delete_stage(&core.db, &ctx.scope, id, stage_id, params).await?,
    ))
}

/// Deals, newest first, filtered by pipeline, stage, status, owner, contact or company.
#[utoipa::path(get, path = "/crm/deals", tag = TAG, security(("bearer" = [])), params(TenantHeader, PageParams, DealListParams),
    responses((status = 200, body = ResultPage<Deal>), TenantProblems, ListProblems))]
async fn list_deals(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(params): Params<DealListParams>,
) -> Result<Json<ResultPage<Deal>>, ApiError> {
    Ok(Json(deals::list(&core.db, &ctx.scope, params).await?))
}

/// Create a deal (member) at the bottom of its stage.
#[utoipa::path(post, path = "/crm/deals", tag = TAG, security(("bearer" = [])), request_body = NewDeal,
    params(TenantHeader), responses((status = 201, body = Deal), TenantProblems, BodyProblems))]
async fn create_deal(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    body: Body<NewDeal>,
) -> Result<Response, ApiError> {
    let deal = deals::create(&core.db, &ctx.scope, body.value).await?;
    Ok((StatusCode::CREATED, [etag(deal.version)], Json(deal)).into_response())
}

/// A deal.
#[utoipa::path(get, path = "/crm/deals/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Deal, headers(("ETag" = String))), NotFound, TenantProblems))]
async fn get_deal(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    let deal = deals::get(&core.db, &ctx.scope, id).await?;
    Ok(([etag(deal.version)], Json(deal)).into_response())
}

/// Change a deal (member): a JSON merge patch of its fields (the stage changes by moving). `won`
/// or `lost` stamps the time; `lost` needs a reason. `If-Match` optional.
#[utoipa::path(patch, path = "/crm/deals/{id}", tag = TAG, security(("bearer" = [])),
    request_body(content = Object, content_type = "application/merge-patch+json", description = "Fields of DealFields to change"),
    params(TenantHeader, ("id" = Uuid, Path), IfMatchHeader),
    responses((status = 200, body = Deal, headers(("ETag" = String))), NotFound, PreconditionFailed, TenantProblems,
        BodyProblems))]
async fn update_deal(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
    IfMatch(version): IfMatch,
    body: Body<Value>,
) -> Result<Response, ApiError> {
    let deal = deals::update(&core.db, &ctx.scope, id, body.value, version).await?;
    Ok(([etag(deal.version)], Json(deal)).into_response())
}

/// Delete a deal (member) and its history.
#[utoipa::path(delete, path = "/crm/deals/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 204), NotFound, TenantProblems))]
async fn delete_deal(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    deals::delete(&core.db, &ctx.scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Move a deal into a stage between two neighbours (member): `after_id` above it, `before_id`
/// below it, neither for the bottom. One row is written; the column is never renumbered.
/// Another tenant's stage answers 404.
#[utoipa::path(post, path = "/crm/deals/{id}/move", tag = TAG, security(("bearer" = [])), request_body = MoveRequest,
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Deal), NotFound, TenantProblems, BodyProblems))]
async fn move_deal(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
    body: Body<MoveRequest>,
) -> Result<Json<Deal>, ApiError> {
    Ok(Json(deals::move_deal(&core.db, &ctx.scope, id, body.value).await?))
}
