//! `cms-public`: what a tenant's website reads, by its site key, without credentials. Only
//! published content (the live snapshot of the last publish); answers carry a strong ETag and
//! `Cache-Control`, and `If-None-Match` answers 304. An old slug of a published item answers 301
//! to the new one. Rules in `shared::services::cms::public`.
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::domain::{PageParams, ResultPage};
use shared::http::docs::{ListProblems, NotFound};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Core, Params, PathId};
use shared::services::cms::items::ContentKind;
use shared::services::cms::public::{self, Found, PublicItem, PublicPost, PublicPostParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const TAG: &str = "cms-public";
/// Sites may cache a minute, and serve a stale copy for five while they revalidate.
pub const CACHE_CONTROL: &str = "public, max-age=60, stale-while-revalidate=300";

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("GET", "/public/sites/{site_key}/pages/{slug}", Access::Public),
    RouteSpec::new("GET", "/public/sites/{site_key}/posts", Access::Public),
    RouteSpec::new("GET", "/public/sites/{site_key}/posts/{slug}", Access::Public),
];

#[derive(Clone)]
pub struct PublicState {
    pub core: Core,
    /// Where the site reads media objects (`shared::config::media_public_base`).
    pub media_base: String,
}

impl FromRef<PublicState> for Core {
    fn from_ref(state: &PublicState) -> Core {
        state.core.clone()
    }
}

pub fn api() -> OpenApiRouter<PublicState> {
    OpenApiRouter::with_openapi(shared::http::docs::base())
        .routes(routes!(page))
        .routes(routes!(posts))
        .routes(routes!(post))
}

pub fn router(core: Core, media_base: String) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(PublicState { core, media_base }))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// A JSON answer any site may read and cache: 304 when the caller holds these bytes already.
fn cacheable(request: &HeaderMap, body: Vec<u8>) -> Response {
    let tag = public::etag(&body);
    let held = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let headers = [
        (header::ETAG, tag),
        (header::CACHE_CONTROL, CACHE_CONTROL.to_owned()),
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_owned()),
    ];
    if held {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let mut response = (StatusCode::OK, headers, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn item(
    state: &PublicState,
    headers: &HeaderMap,
    kind: ContentKind,
    key: &str,
    slug: &str,
) -> Result<Response, ApiError> {
    match public::item(&state.core.db, key, kind, slug, &state.media_base).await? {
        Found::Item(item) => {
            let body = serde_json::to_vec(&item).map_err(|e| ApiError::Domain(anyhow::Error::from(e).into()))?;
            Ok(cacheable(headers, body))
        }
        Found::Moved(to) => {
            let plural = if kind == ContentKind::Page { "pages" } else { "posts" };
            Ok((
                StatusCode::MOVED_PERMANENTLY,
                [
                    (header::LOCATION, format!("/public/sites/{key}/{plural}/{to}")),
                    (header::CACHE_CONTROL, CACHE_CONTROL.to_owned()),
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_owned()),
                ],
            )
                .into_response())
        }
    }
}

/// A published page of the site (public). 301 when the page moved to another slug.
#[utoipa::path(get, path = "/public/sites/{site_key}/pages/{slug}", tag = TAG,
    params(("site_key" = String, Path), ("slug" = String, Path),
        ("If-None-Match" = Option<String>, Header, description = "An ETag of an earlier answer")),
    responses((status = 200, body = PublicItem, headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified"), (status = 301, description = "Moved to another slug"), NotFound))]
async fn page(
    State(state): State<PublicState>,
    headers: HeaderMap,
    PathId((key, slug)): PathId<(String, String)>,
) -> Result<Response, ApiError> {
    item(&state, &headers, ContentKind::Page, &key, &slug).await
}

/// A published post of the site (public). 301 when the post moved to another slug.
#[utoipa::path(get, path = "/public/sites/{site_key}/posts/{slug}", tag = TAG,
    params(("site_key" = String, Path), ("slug" = String, Path),
        ("If-None-Match" = Option<String>, Header, description = "An ETag of an earlier answer")),
    responses((status = 200, body = PublicItem, headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified"), (status = 301, description = "Moved to another slug"), NotFound))]
async fn post(
    State(state): State<PublicState>,
    headers: HeaderMap,
    PathId((key, slug)): PathId<(String, String)>,
) -> Result<Response, ApiError> {
    item(&state, &headers, ContentKind::Post, &key, &slug).await
}

/// The site's published posts, newest first (public; filters: category, tag).
#[utoipa::path(get, path = "/public/sites/{site_key}/posts", tag = TAG,
    params(("site_key" = String, Path), PublicPostParams, PageParams,
        ("If-None-Match" = Option<String>, Header, description = "An ETag of an earlier answer")),
    responses((status = 200, body = ResultPage<PublicPost>, headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified"), NotFound, ListProblems))]
async fn posts(
    State(state): State<PublicState>,
    headers: HeaderMap,
    PathId(key): PathId<String>,
    Params(params): Params<PublicPostParams>,
) -> Result<Response, ApiError> {
    let page = public::posts(&state.core.db, &key, params).await?;
    let body = serde_json::to_vec(&page).map_err(|e| ApiError::Domain(anyhow::Error::from(e).into()))?;
    Ok(cacheable(&headers, body))
}
