//! `cms-pages` and `cms-posts`: the tenant's pages and blog posts, one editing model (rules in
//! `shared::services::cms::items`). Each kind has the same routes under its own prefix:
//! list/create, read/edit (JSON merge patch)/delete, publish (now or at a time), unpublish
//! (draft or archived), revisions (list, one, restore) and the diff of two revisions.
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shared::domain::{Page, Role};
use shared::http::docs::{
    BodyProblems, Conflict, ListProblems, NotFound, PreconditionFailed, ProviderProblems, TenantHeader, TenantProblems,
};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Body, Core, IfMatch, Json, Params, PathId, TenantCtx, etag, min};
use shared::services::cms::content::Content;
use shared::services::cms::items::{
    self, ContentKind, DiffParams, Item, ItemListParams, ItemSummary, NewItem, PublishRequest, Revision, RevisionDiff,
    RevisionListParams, RevisionSummary, UnpublishRequest,
};
use shared::services::cms::wordpress::Wordpress;
use uuid::Uuid;

/// What the handlers share: the core, and the content service (for posts, with the way to a
/// connected WordPress site).
#[derive(Clone)]
pub struct ContentState {
    pub core: Core,
    pub content: Content,
}

impl FromRef<ContentState> for Core {
    fn from_ref(state: &ContentState) -> Core {
        state.core.clone()
    }
}

fn item_response(item: Item, status: StatusCode) -> Response {
    (status, [etag(item.version)], Json(item)).into_response()
}

/// The routes of one kind: `$kind` (`ContentKind::Page`), its path literals and OpenAPI tag.
macro_rules! content_routes {
    ($module:ident, $kind:expr, $tag:literal, $noun:literal,
     list: $list:literal, one: $one:literal, publish: $publish:literal, unpublish: $unpublish:literal,
     revisions: $revisions:literal, revision: $revision:literal, restore: $restore:literal, diff: $diff:literal) => {
        pub mod $module {
            use super::*;
            use utoipa_axum::router::OpenApiRouter;
            use utoipa_axum::routes;

            const KIND: ContentKind = $kind;

            pub const ROUTES: &[RouteSpec] = &[
                RouteSpec::new("GET", $list, Access::Tenant(Role::Viewer)),
                RouteSpec::new("POST", $list, Access::Tenant(Role::Member)),
                RouteSpec::new("GET", $one, Access::Tenant(Role::Viewer)),
                RouteSpec::new("PATCH", $one, Access::Tenant(Role::Member)),
                RouteSpec::new("DELETE", $one, Access::Tenant(Role::Member)),
                RouteSpec::new("POST", $publish, Access::Tenant(Role::Member)),
                RouteSpec::new("POST", $unpublish, Access::Tenant(Role::Member)),
                RouteSpec::new("GET", $revisions, Access::Tenant(Role::Viewer)),
                RouteSpec::new("GET", $revision, Access::Tenant(Role::Viewer)),
                RouteSpec::new("POST", $restore, Access::Tenant(Role::Member)),
                RouteSpec::new("GET", $diff, Access::Tenant(Role::Viewer)),
            ];

            pub fn api() -> OpenApiRouter<ContentState> {
                OpenApiRouter::with_openapi(shared::http::docs::base())
                    .routes(routes!(list, create))
                    .routes(routes!(get, update, delete))
                    .routes(routes!(publish))
                    .routes(routes!(unpublish))
                    .routes(routes!(revisions))
                    .routes(routes!(revision))
                    .routes(routes!(restore))
                    .routes(routes!(diff))
            }

            pub fn router(core: Core, wordpress: Option<Wordpress>) -> Router {
                let (routes, _) = api().split_for_parts();
                shared::http::finish(routes.with_state(ContentState {
                    content: Content {
                        db: core.db.clone(),
                        wordpress,
                    },
                    core,
                }))
            }

            pub fn openapi() -> utoipa::openapi::OpenApi {
                api().split_for_parts().1
            }

            #[doc = concat!("The tenant's ", $noun, "s, most recently changed first (filters: site, status, parent, words, category, tag).")]
            #[utoipa::path(get, path = $list, tag = $tag, security(("bearer" = [])), params(TenantHeader, ItemListParams),
                responses((status = 200, body = Page<ItemSummary>), Conflict, TenantProblems, ListProblems, ProviderProblems))]
            async fn list(
                State(state): State<ContentState>,
                ctx: TenantCtx<min::Viewer>,
                Params(params): Params<ItemListParams>,
            ) -> Result<Json<Page<ItemSummary>>, ApiError> {
                Ok(Json(state.content.list(&ctx.scope, KIND, params).await?))
            }

            #[doc = concat!("Create a ", $noun, " (member): a draft, revision 1. A taken slug answers 409 with `suggestion`; a block that fails its schema 422 naming its path (`body[2].href`).")]
            #[utoipa::path(post, path = $list, tag = $tag, security(("bearer" = [])), request_body = NewItem,
                params(TenantHeader), responses((status = 201, body = Item, headers(("ETag" = String))), Conflict,
                TenantProblems, BodyProblems, ProviderProblems))]
            async fn create(
                State(state): State<ContentState>,
                ctx: TenantCtx<min::Member>,
                body: Body<NewItem>,
            ) -> Result<Response, ApiError> {
                let item = state.content.create(&ctx.scope, KIND, body.value).await?;
                Ok(item_response(item, StatusCode::CREATED))
            }

            #[doc = concat!("A ", $noun, " with its draft content and its publishing state.")]
            #[utoipa::path(get, path = $one, tag = $tag, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
                responses((status = 200, body = Item, headers(("ETag" = String))), NotFound, TenantProblems))]
            async fn get(
                State(core): State<Core>,
                ctx: TenantCtx<min::Viewer>,
                PathId(id): PathId<Uuid>,
            ) -> Result<Response, ApiError> {
                Ok(item_response(items::get(&core.db, &ctx.scope, KIND, id).await?, StatusCode::OK))
            }

            #[doc = concat!("Edit a ", $noun, " (member): a JSON merge patch of its content (`null` clears a field). A change writes a new revision; a published ", $noun, " keeps its live version until the next publish. `If-Match` optional.")]
            #[utoipa::path(patch, path = $one, tag = $tag, security(("bearer" = [])),
                request_body(content = Object, content_type = "application/merge-patch+json", description = "Fields of Content to change"),
                params(TenantHeader, ("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "The item's ETag")),
                responses((status = 200, body = Item, headers(("ETag" = String))), NotFound, Conflict, PreconditionFailed,
                    TenantProblems, BodyProblems, ProviderProblems))]
            async fn update(
                State(state): State<ContentState>,
                ctx: TenantCtx<min::Member>,
                PathId(id): PathId<Uuid>,
                IfMatch(version): IfMatch,
                body: Body<Value>,
            ) -> Result<Response, ApiError> {
                let item = state.content.update(&ctx.scope, KIND, id, body.value, version).await?;
                Ok(item_response(item, StatusCode::OK))
            }

            #[doc = concat!("Delete a ", $noun, " (member) with its revisions; a page with child pages answers 409 `page-has-children`.")]
            #[utoipa::path(delete, path = $one, tag = $tag, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
                responses((status = 204), NotFound, Conflict, TenantProblems, ProviderProblems))]
            async fn delete(
                State(state): State<ContentState>,
                ctx: TenantCtx<min::Member>,
                PathId(id): PathId<Uuid>,
            ) -> Result<StatusCode, ApiError> {
                state.content.delete(&ctx.scope, KIND, id).await?;
                Ok(StatusCode::NO_CONTENT)
            }

            #[doc = concat!("Publish a ", $noun, " (member): now, or at `at` (the content scheduler publishes the revision current when it was scheduled). `If-Match` optional.")]
            #[utoipa::path(post, path = $publish, tag = $tag, security(("bearer" = [])), request_body = PublishRequest,
                params(TenantHeader, ("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "The item's ETag")),
                responses((status = 200, body = Item, headers(("ETag" = String))), NotFound, Conflict, PreconditionFailed,
                    TenantProblems, BodyProblems, ProviderProblems))]
            async fn publish(
                State(state): State<ContentState>,
                ctx: TenantCtx<min::Member>,
                PathId(id): PathId<Uuid>,
                IfMatch(version): IfMatch,
                body: Body<PublishRequest>,
            ) -> Result<Response, ApiError> {
                let item = state.content.publish(&ctx.scope, KIND, id, body.value, version).await?;
                Ok(item_response(item, StatusCode::OK))
            }

            #[doc = concat!("Take a ", $noun, " off the site (member): `draft` or `archived`; a schedule is cancelled. `If-Match` optional.")]
            #[utoipa::path(post, path = $unpublish, tag = $tag, security(("bearer" = [])), request_body = UnpublishRequest,
                params(TenantHeader, ("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "The item's ETag")),
                responses((status = 200, body = Item, headers(("ETag" = String))), NotFound, Conflict, PreconditionFailed,
                    TenantProblems, BodyProblems, ProviderProblems))]
            async fn unpublish(
                State(state): State<ContentState>,
                ctx: TenantCtx<min::Member>,
                PathId(id): PathId<Uuid>,
                IfMatch(version): IfMatch,
                body: Body<UnpublishRequest>,
            ) -> Result<Response, ApiError> {
                let item = state.content.unpublish(&ctx.scope, KIND, id, body.value, version).await?;
                Ok(item_response(item, StatusCode::OK))
            }

            #[doc = concat!("The revisions of a ", $noun, ", newest first.")]
            #[utoipa::path(get, path = $revisions, tag = $tag, security(("bearer" = [])),
                params(TenantHeader, ("id" = Uuid, Path), RevisionListParams),
                responses((status = 200, body = Page<RevisionSummary>), NotFound, TenantProblems, ListProblems))]
            async fn revisions(
                State(core): State<Core>,
                ctx: TenantCtx<min::Viewer>,
                PathId(id): PathId<Uuid>,
                Params(params): Params<RevisionListParams>,
            ) -> Result<Json<Page<RevisionSummary>>, ApiError> {
                Ok(Json(items::revisions(&core.db, &ctx.scope, KIND, id, params).await?))
            }

            #[doc = concat!("One revision of a ", $noun, " with its content.")]
            #[utoipa::path(get, path = $revision, tag = $tag, security(("bearer" = [])),
                params(TenantHeader, ("id" = Uuid, Path), ("number" = i32, Path)),
                responses((status = 200, body = Revision), NotFound, TenantProblems))]
            async fn revision(
                State(core): State<Core>,
                ctx: TenantCtx<min::Viewer>,
                PathId((id, number)): PathId<(Uuid, i32)>,
            ) -> Result<Json<Revision>, ApiError> {
                Ok(Json(items::revision(&core.db, &ctx.scope, KIND, id, number).await?))
            }

            #[doc = concat!("Restore a revision (member): its content becomes the draft, as a new revision (checked again: 409 when its slug was taken since, 422 when an image is gone). `If-Match` optional.")]
            #[utoipa::path(post, path = $restore, tag = $tag, security(("bearer" = [])),
                params(TenantHeader, ("id" = Uuid, Path), ("number" = i32, Path),
                    ("If-Match" = Option<String>, Header, description = "The item's ETag")),
                responses((status = 200, body = Item, headers(("ETag" = String))), NotFound, Conflict, PreconditionFailed,
                    TenantProblems, BodyProblems, ProviderProblems))]
            async fn restore(
                State(state): State<ContentState>,
                ctx: TenantCtx<min::Member>,
                PathId((id, number)): PathId<(Uuid, i32)>,
                IfMatch(version): IfMatch,
            ) -> Result<Response, ApiError> {
                let item = state.content.restore(&ctx.scope, KIND, id, number, version).await?;
                Ok(item_response(item, StatusCode::OK))
            }

            #[doc = concat!("What changed from revision `from` to revision `to` of a ", $noun, ": fields, and the body block by block.")]
            #[utoipa::path(get, path = $diff, tag = $tag, security(("bearer" = [])),
                params(TenantHeader, ("id" = Uuid, Path), DiffParams),
                responses((status = 200, body = RevisionDiff), NotFound, TenantProblems, ListProblems))]
            async fn diff(
                State(core): State<Core>,
                ctx: TenantCtx<min::Viewer>,
                PathId(id): PathId<Uuid>,
                Params(params): Params<DiffParams>,
            ) -> Result<Json<RevisionDiff>, ApiError> {
                Ok(Json(items::diff(&core.db, &ctx.scope, KIND, id, params).await?))
            }
        }
    };
}

content_routes!(pages, ContentKind::Page, "cms-pages", "page",
    list: "/cms/pages", one: "/cms/pages/{id}", publish: "/cms/pages/{id}/publish",
    unpublish: "/cms/pages/{id}/unpublish", revisions: "/cms/pages/{id}/revisions",
    revision: "/cms/pages/{id}/revisions/{number}", restore: "/cms/pages/{id}/revisions/{number}/restore",
    diff: "/cms/pages/{id}/diff");

content_routes!(posts, ContentKind::Post, "cms-posts", "post",
    list: "/cms/posts", one: "/cms/posts/{id}", publish: "/cms/posts/{id}/publish",
    unpublish: "/cms/posts/{id}/unpublish", revisions: "/cms/posts/{id}/revisions",
    revision: "/cms/posts/{id}/revisions/{number}", restore: "/cms/posts/{id}/revisions/{number}/restore",
    diff: "/cms/posts/{id}/diff");
