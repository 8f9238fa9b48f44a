//! `analytics-query`: the tenant's analytics sites, and the traffic API over the hourly
//! rollups — series by hour or day with the previous period, top pages, referrers.
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use shared::domain::{ResultPage, Role};
use shared::http::docs::{
    BodyProblems, Conflict, IdempotencyHeader, ListProblems, PlanLimit, TenantHeader, TenantProblems,
};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Body, Core, Json, PageParams, Params, RawIdempotencyKey, TenantCtx, min, replayed_or};
use shared::services::analytics::query::{
    self, Interval, RangeParams, Ranked, ReferrersParams, TopPagesParams, Traffic,
};
use shared::services::analytics::sites::{self, NewSite, Site};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const TAG: &str = "analytics";

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("GET", "/analytics/sites", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/analytics/sites", Access::Tenant(Role::Admin)),
    RouteSpec::new("GET", "/analytics/traffic", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/analytics/top-pages", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/analytics/referrers", Access::Tenant(Role::Viewer)),
];

pub fn api() -> OpenApiRouter<Core> {
    OpenApiRouter::with_openapi(shared::http::docs::base())
        .routes(routes!(list_sites, create_site))
        .routes(routes!(traffic))
        .routes(routes!(top_pages))
        .routes(routes!(referrers))
}

pub fn router(core: Core) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(core))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// The tenant's sites, newest first.
#[utoipa::path(get, path = "/analytics/sites", tag = TAG, security(("bearer" = [])), params(TenantHeader, PageParams),
    responses((status = 200, body = ResultPage<Site>), TenantProblems, ListProblems))]
async fn list_sites(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(page): Params<PageParams>,
) -> Result<Json<ResultPage<Site>>, ApiError> {
    Ok(Json(sites::list(&core.db, &ctx.scope, &page.request()?).await?))
}

/// Register a site (admin): answers its public site key. Counts against the plan's `sites`.
/// Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/analytics/sites", tag = TAG, security(("bearer" = [])), request_body = NewSite,
    params(TenantHeader, IdempotencyHeader),
    responses((status = 201, body = Site), Conflict, PlanLimit, TenantProblems, BodyProblems))]
async fn create_site(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    idem: RawIdempotencyKey,
    body: Body<NewSite>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /analytics/sites", &body.raw)?;
    Ok(replayed_or(
        sites::create(&core.db, &ctx.scope, body.value, key.as_ref()).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IntervalParam {
    /// `hour` (ranges up to 31 days) or `day` (default; up to 400 days).
    #[serde(default)]
    #[param(value_type = Option<Interval>)]
    pub interval: Option<Interval>,
}

#[derive(Debug, Deserialize)]
struct TrafficParams {
    #[serde(flatten)]
    range: RangeParams,
    #[serde(default)]
    interval: Option<Interval>,
}

/// Pageviews, visitors, visits, bounce rate and visit duration per hour or day, with totals and
/// the same figures for the previous period of equal length.
#[utoipa::path(get, path = "/analytics/traffic", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, RangeParams, IntervalParam),
    responses((status = 200, body = Traffic), TenantProblems, ListProblems))]
async fn traffic(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(p): Params<TrafficParams>,
) -> Result<Json<Traffic>, ApiError> {
    let interval = p.interval.unwrap_or(Interval::Day);
    Ok(Json(query::traffic(&core.db, &ctx.scope, &p.range, interval).await?))
}

#[derive(Debug, Deserialize)]
struct TopPagesQuery {
    #[serde(flatten)]
    range: RangeParams,
    #[serde(flatten)]
    list: TopPagesParams,
}

/// The most viewed pages of a range (`filter`: one page path; `source` or a `utm_*`: only
/// pageviews of visits that came from it).
#[utoipa::path(get, path = "/analytics/top-pages", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, RangeParams, TopPagesParams),
    responses((status = 200, body = Vec<Ranked>), TenantProblems, ListProblems))]
async fn top_pages(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(p): Params<TopPagesQuery>,
) -> Result<Json<Vec<Ranked>>, ApiError> {
    Ok(Json(query::top_pages(&core.db, &ctx.scope, &p.range, &p.list).await?))
}

#[derive(Debug, Deserialize)]
struct ReferrersQuery {
    #[serde(flatten)]
    range: RangeParams,
    #[serde(flatten)]
    list: ReferrersParams,
}

/// Where visits came from: referring hosts (`Direct / None` for direct traffic), or UTM values
/// with `by`; `filter` keeps one value; `page` counts only that page's pageviews and visitors.
#[utoipa::path(get, path = "/analytics/referrers", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, RangeParams, ReferrersParams),
    responses((status = 200, body = Vec<Ranked>), TenantProblems, ListProblems))]
async fn referrers(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(p): Params<ReferrersQuery>,
) -> Result<Json<Vec<Ranked>>, ApiError> {
    Ok(Json(query::referrers(&core.db, &ctx.scope, &p.range, &p.list).await?))
}
