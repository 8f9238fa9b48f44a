//! `connectors`: the catalog of connector kinds with this tenant's state of each, credentials
//! (validated, sealed at rest, only ever shown masked) and connection tests — one real call to
//! the provider, answered in words. Rules live in `shared::services::connectors`.
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use shared::config::{ConfigError, ConnectorSettings, Env};
use shared::domain::Role;
use shared::http::docs::{
    BodyProblems, Conflict, IfMatchHeader, NotFound, PreconditionFailed, TenantHeader, TenantProblems,
};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Body, Core, IfMatch, Json, PathId, TenantCtx, etag, min};
use shared::services::connectors::catalog::Kind;
use shared::services::connectors::{Connector, Connectors, TestResult};
use shared::services::ecommerce::sync::{self, SyncQueue, SyncRun};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const TAG: &str = "connectors";

/// The function's configuration, read once at start.
pub struct Config {
    pub core: shared::Config,
    pub connectors: ConnectorSettings,
    /// `CONNECTOR_SYNC_QUEUE_URL`: where `POST /connectors/{kind}/sync` queues a run.
    pub sync_queue_url: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            core: shared::Config::from(env)?,
            connectors: ConnectorSettings::from(env)?,
            sync_queue_url: env.required("CONNECTOR_SYNC_QUEUE_URL")?,
        })
    }
}

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("GET", "/connectors", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/connectors/{kind}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("PUT", "/connectors/{kind}", Access::Tenant(Role::Admin)),
    RouteSpec::new("DELETE", "/connectors/{kind}", Access::Tenant(Role::Admin)),
    RouteSpec::new("POST", "/connectors/{kind}/test", Access::Tenant(Role::Admin)),
    RouteSpec::new("POST", "/connectors/{kind}/sync", Access::Tenant(Role::Admin)),
];

#[derive(Clone)]
pub struct ConnectorsState {
    pub core: Core,
    pub connectors: Connectors,
    pub sync: SyncQueue,
}

impl FromRef<ConnectorsState> for Core {
    fn from_ref(state: &ConnectorsState) -> Core {
        state.core.clone()
    }
}

pub fn api() -> OpenApiRouter<ConnectorsState> {
    OpenApiRouter::with_openapi(shared::http::docs::base())
        .routes(routes!(list_connectors))
        .routes(routes!(get_connector, put_connector, delete_connector))
        .routes(routes!(test_connector))
        .routes(routes!(sync_connector))
}

pub fn router(core: Core, connectors: Connectors, sync: SyncQueue) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(ConnectorsState { core, connectors, sync }))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// Every kind of the catalog (fields, what it syncs) with this tenant's status of it: not
/// configured, untested, connected, or error with the last error; last test and sync.
#[utoipa::path(get, path = "/connectors", tag = TAG, security(("bearer" = [])), params(TenantHeader),
    responses((status = 200, body = Vec<Connector>), TenantProblems))]
async fn list_connectors(
    State(state): State<ConnectorsState>,
    ctx: TenantCtx<min::Viewer>,
) -> Result<Json<Vec<Connector>>, ApiError> {
    Ok(Json(state.connectors.list(&ctx.scope).await?))
}

/// One kind with this tenant's status; secrets masked. An unknown kind is 404.
#[utoipa::path(get, path = "/connectors/{kind}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("kind" = Kind, Path)),
    responses((status = 200, body = Connector, headers(("ETag" = String))), NotFound, TenantProblems))]
async fn get_connector(
    State(state): State<ConnectorsState>,
    ctx: TenantCtx<min::Viewer>,
    PathId(kind): PathId<Kind>,
) -> Result<Response, ApiError> {
    let connector = state.connectors.get(&ctx.scope, kind).await?;
    Ok(with_etag(connector))
}

fn with_etag(connector: Connector) -> Response {
    match connector.version {
        Some(v) => ([etag(v)], Json(connector)).into_response(),
        None => Json(connector).into_response(),
    }
}

/// Save credentials and settings (admin): an object of the kind's fields (strings; `null`
/// clears an optional one). Secret fields left out keep their saved values. Site URLs must be
/// https and public. The status becomes `untested`: run the test. `If-Match` optional.
#[utoipa::path(put, path = "/connectors/{kind}", tag = TAG, security(("bearer" = [])),
    request_body(content = Object, description = "Field values by name, as the catalog lists them"),
    params(TenantHeader, ("kind" = Kind, Path), IfMatchHeader),
    responses((status = 200, body = Connector, headers(("ETag" = String))), NotFound, PreconditionFailed, TenantProblems,
        BodyProblems))]
async fn put_connector(
    State(state): State<ConnectorsState>,
    ctx: TenantCtx<min::Admin>,
    PathId(kind): PathId<Kind>,
    IfMatch(version): IfMatch,
    body: Body<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let connector = state.connectors.put(&ctx.scope, kind, body.value, version).await?;
    Ok(with_etag(connector))
}

/// Remove the connector and its credentials (admin).
#[utoipa::path(delete, path = "/connectors/{kind}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("kind" = Kind, Path)),
    responses((status = 204), NotFound, TenantProblems))]
async fn delete_connector(
    State(state): State<ConnectorsState>,
    ctx: TenantCtx<min::Admin>,
    PathId(kind): PathId<Kind>,
) -> Result<StatusCode, ApiError> {
    state.connectors.delete(&ctx.scope, kind).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Test the saved connection (admin): one real call to the provider's API. The answer says in
/// words what is wrong (credentials refused, a missing permission, nothing at the address, not
/// reachable); the connector's status and last error follow it. 404 when not configured.
#[utoipa::path(post, path = "/connectors/{kind}/test", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("kind" = Kind, Path)),
    responses((status = 200, body = TestResult), NotFound, TenantProblems))]
async fn test_connector(
    State(state): State<ConnectorsState>,
    ctx: TenantCtx<min::Admin>,
    PathId(kind): PathId<Kind>,
) -> Result<Json<TestResult>, ApiError> {
    Ok(Json(state.connectors.test(&ctx.scope, kind).await?))
}

/// Sync a shop now (admin; Shopify and WooCommerce): queues a run of connector-sync, which
/// brings in what changed since the last pass. 404 for other kinds or when not configured; 409
/// while a run is queued or running. The run's outcome shows on the connector (`last_sync_*`).
#[utoipa::path(post, path = "/connectors/{kind}/sync", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("kind" = Kind, Path)),
    responses((status = 201, body = SyncRun), NotFound, Conflict, TenantProblems))]
async fn sync_connector(
    State(state): State<ConnectorsState>,
    ctx: TenantCtx<min::Admin>,
    PathId(kind): PathId<Kind>,
) -> Result<Response, ApiError> {
    let run = sync::queue_run(&state.connectors, &ctx.scope, kind, &state.sync).await?;
    Ok((StatusCode::CREATED, Json(run)).into_response())
}
