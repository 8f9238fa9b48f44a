//! `cms-media`: the media library. An upload is granted as a presigned PUT of the declared type
//! and size (checked against the allowed types, their limits and the plan's storage); the
//! bucket then tells media-processor, which fills in what the bytes are. Rules in
//! `shared::services::cms::media`.
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shared::adapters::media_store::MediaStore;
use shared::domain::{PageParams, ResultPage, Role};
use shared::http::docs::{
    BodyProblems, IfMatchHeader, ListProblems, NotFound, PlanLimit, PreconditionFailed, TenantHeader, TenantProblems,
};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Body, Core, IfMatch, Json, Params, PathId, TenantCtx, etag, min};
use shared::services::cms::media::{self, Media, MediaFolder, MediaListParams, MediaUpload, MediaUploadRequest};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

const TAG: &str = "cms-media";

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("POST", "/cms/media/uploads", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/cms/media", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/cms/media/folders", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/cms/media/{id}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("PATCH", "/cms/media/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new("DELETE", "/cms/media/{id}", Access::Tenant(Role::Member)),
];

#[derive(Clone)]
pub struct MediaState {
    pub core: Core,
    pub store: MediaStore,
}

impl FromRef<MediaState> for Core {
    fn from_ref(state: &MediaState) -> Core {
        state.core.clone()
    }
}

pub fn api() -> OpenApiRouter<MediaState> {
    OpenApiRouter::with_openapi(shared::http::docs::base())
        .routes(routes!(create_upload))
        .routes(routes!(list))
        .routes(routes!(folders))
        .routes(routes!(get, update, delete))
}

pub fn router(core: Core, store: MediaStore) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(MediaState { core, store }))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// Start an upload (member): a pending library item and a presigned `PUT` for exactly the
/// declared bytes (15 minutes). 402 `plan-limit` (`storage_bytes`) past the plan's storage.
#[utoipa::path(post, path = "/cms/media/uploads", tag = TAG, security(("bearer" = [])), request_body = MediaUploadRequest,
    params(TenantHeader), responses((status = 201, body = MediaUpload), TenantProblems, BodyProblems, PlanLimit))]
async fn create_upload(
    State(state): State<MediaState>,
    ctx: TenantCtx<min::Member>,
    body: Body<MediaUploadRequest>,
) -> Result<Response, ApiError> {
    let upload = media::create_upload(&state.core.db, &state.store, &ctx.scope, body.value).await?;
    Ok((StatusCode::CREATED, Json(upload)).into_response())
}

/// The library, newest first (filters: folder, tag, type, words of the name or alt text,
/// status).
#[utoipa::path(get, path = "/cms/media", tag = TAG, security(("bearer" = [])), params(TenantHeader, MediaListParams, PageParams),
    responses((status = 200, body = ResultPage<Media>), TenantProblems, ListProblems))]
async fn list(
    State(state): State<MediaState>,
    ctx: TenantCtx<min::Viewer>,
    Params(params): Params<MediaListParams>,
) -> Result<Json<ResultPage<Media>>, ApiError> {
    Ok(Json(
        media::list(&state.core.db, &state.store, &ctx.scope, params).await?,
    ))
}

/// The folders in use, with their item counts and bytes.
#[utoipa::path(get, path = "/cms/media/folders", tag = TAG, security(("bearer" = [])), params(TenantHeader),
    responses((status = 200, body = Vec<MediaFolder>), TenantProblems))]
async fn folders(
    State(state): State<MediaState>,
    ctx: TenantCtx<min::Viewer>,
) -> Result<Json<Vec<MediaFolder>>, ApiError> {
    Ok(Json(media::folders(&state.core.db, &ctx.scope).await?))
}

/// One library item: what the bytes turned out to be once processed, its URL and thumbnails.
#[utoipa::path(get, path = "/cms/media/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Media, headers(("ETag" = String))), NotFound, TenantProblems))]
async fn get(
    State(state): State<MediaState>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    let m = media::get(&state.core.db, &state.store, &ctx.scope, id).await?;
    Ok(([etag(m.version)], Json(m)).into_response())
}

/// Rename, alt text, move to a folder, tags (member): a JSON merge patch of `name`, `folder`,
/// `alt`, `tags`. `If-Match` optional.
#[utoipa::path(patch, path = "/cms/media/{id}", tag = TAG, security(("bearer" = [])),
    request_body(content = Object, content_type = "application/merge-patch+json", description = "Fields of MediaEdit to change"),
    params(TenantHeader, ("id" = Uuid, Path), IfMatchHeader),
    responses((status = 200, body = Media, headers(("ETag" = String))), NotFound, PreconditionFailed,
        TenantProblems, BodyProblems))]
async fn update(
    State(state): State<MediaState>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
    IfMatch(version): IfMatch,
    body: Body<Value>,
) -> Result<Response, ApiError> {
    let m = media::update(&state.core.db, &state.store, &ctx.scope, id, body.value, version).await?;
    Ok(([etag(m.version)], Json(m)).into_response())
}

/// Delete a library item (member): its objects are removed from the bucket too.
#[utoipa::path(delete, path = "/cms/media/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 204), NotFound, TenantProblems))]
async fn delete(
    State(state): State<MediaState>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    media::delete(&state.core.db, &state.store, &ctx.scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
