//! `cms-pages` and `cms-posts`: the tenant's pages and blog posts, one editing model (rules in
//! `shared::services::cms::items`). Each kind has the same routes under its own prefix:
//! list/create, read/edit (JSON merge patch)/delete, publish (now or at a time), unpublish
//! (draft or archived), revisions (list, one, restore) and the diff of two revisions.
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shared::domain::{PageParams, ResultPage, Role};
use shared::http::docs::{
    BodyProblems, IfMatchHeader, ListProblems, NotFound, PreconditionFailed, TenantHeader, TenantProblems,
};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Body, Core, IfMatch, Json, Params, PathId, Problem, TenantCtx, etag, min};
use shared::services::cms::content::Content;
use shared::services::cms::items::{
    self, ContentKind, DiffParams, Item, ItemListParams, ItemSummary, NewItem, PublishRequest, Revision, RevisionDiff,
    RevisionListParams, RevisionSummary, UnpublishRequest,
};
use shared::services::providers::wordpress::Wordpress;
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

/// The start of a post route's 502: the connected WordPress site failed (the route adds what
/// was not done).
macro_rules! wordpress_failed {
    () => {
        "The connected WordPress site failed or refused the call: the problem's `detail` gives its reason"
    };
}

/// The 409s a post route's write to a connected WordPress site can add.
macro_rules! wordpress_conflicts {
    () => {
        "the site is not registered under `/analytics/sites` (`no-site`), the post was written before the \
         connection (`not-on-wordpress`), or the post was changed on WordPress since it was read here \
         (`wordpress-conflict`: reload it and edit again)"
    };
}

/// The 410 of a post route that writes to a connected WordPress site.
const WORDPRESS_GONE: &str = "The post was deleted on the connected WordPress site (its copy here is removed too)";

/// The routes of one kind: `$kind` (`ContentKind::Page`), its path literals and OpenAPI tag, and
/// per route the problem responses only this kind has or words its own way (`409 => "..."`):
/// a page's slug and parent rules, a post's connected WordPress site.
macro_rules! content_routes {
    ($module:ident, $kind:expr, $tag:literal, $noun:literal,
     list: $list:literal, one: $one:literal, publish: $publish:literal, unpublish: $unpublish:literal,
     revisions: $revisions:literal, revision: $revision:literal, restore: $restore:literal, diff: $diff:literal,
     problems: {
         list: [$($list_status:literal => $list_text:expr),* $(,)?],
         create: [$($create_status:literal => $create_text:expr),* $(,)?],
         update: [$($update_status:literal => $update_text:expr),* $(,)?],
         delete: [$($delete_status:literal => $delete_text:expr),* $(,)?],
         publish: [$($publish_status:literal => $publish_text:expr),* $(,)?],
         unpublish: [$($unpublish_status:literal => $unpublish_text:expr),* $(,)?],
         restore: [$($restore_status:literal => $restore_text:expr),* $(,)?] $(,)?
     }) => {
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

            #[utoipa::path(get, path = $list, tag = $tag, security(("bearer" = [])),
                summary = concat!("The tenant's ", $noun, "s, most recently changed first (filters: site, status, \
                    parent, words, category, tag)."),
                params(TenantHeader, ItemListParams, PageParams),
                responses(
                    (status = 200, description = concat!("A page of the tenant's ", $noun, "s"),
                        body = ResultPage<ItemSummary>),
                    $((status = $list_status, description = $list_text, body = Problem,
                        content_type = "application/problem+json"),)*
                    TenantProblems, ListProblems))]
            async fn list(
                State(state): State<ContentState>,
                ctx: TenantCtx<min::Viewer>,
                Params(params): Params<ItemListParams>,
            ) -> Result<Json<ResultPage<ItemSummary>>, ApiError> {
                Ok(Json(state.content.list(&ctx.scope, KIND, params).await?))
            }

            #[utoipa::path(post, path = $list, tag = $tag, security(("bearer" = [])),
                summary = concat!("Create a ", $noun, " (member): a draft, revision 1. A taken slug answers 409 with \
                    `suggestion`; a block that fails its schema 422 naming its path (`body[2].href`)."),
                request_body = NewItem, params(TenantHeader),
                responses(
                    (status = 201, description = concat!("The new draft ", $noun, ", revision 1"), body = Item,
                        headers(("ETag" = String))),
                    $((status = $create_status, description = $create_text, body = Problem,
                        content_type = "application/problem+json"),)*
                    TenantProblems, BodyProblems))]
            async fn create(
                State(state): State<ContentState>,
                ctx: TenantCtx<min::Member>,
                body: Body<NewItem>,
            ) -> Result<Response, ApiError> {
                let item = state.content.create(&ctx.scope, KIND, body.value).await?;
                Ok(item_response(item, StatusCode::CREATED))
            }

            #[utoipa::path(get, path = $one, tag = $tag, security(("bearer" = [])),
                summary = concat!("A ", $noun, " with its draft content and its publishing state."),
                params(TenantHeader, ("id" = Uuid, Path)),
                responses(
                    (status = 200, description = concat!("The ", $noun), body = Item, headers(("ETag" = String))),
                    NotFound, TenantProblems))]
            async fn get(
                State(core): State<Core>,
                ctx: TenantCtx<min::Viewer>,
                PathId(id): PathId<Uuid>,
            ) -> Result<Response, ApiError> {
                Ok(item_response(items::get(&core.db, &ctx.scope, KIND, id).await?, StatusCode::OK))
            }

            #[utoipa::path(patch, path = $one, tag = $tag, security(("bearer" = [])),
                summary = concat!("Edit a ", $noun, " (member): a JSON merge patch of its content (`null` clears a \
                    field). A change writes a new revision; a published ", $noun, " keeps its live version until the \
                    next publish. `If-Match` optional."),
                request_body(content = Object, content_type = "application/merge-patch+json",
                    description = "Fields of Content to change"),
                params(TenantHeader, ("id" = Uuid, Path), IfMatchHeader),
                responses(
                    (status = 200, description = concat!("The ", $noun, " as edited (unchanged when the patch changes \
                        nothing)"), body = Item, headers(("ETag" = String))),
                    $((status = $update_status, description = $update_text, body = Problem,
                        content_type = "application/problem+json"),)*
                    NotFound, PreconditionFailed, TenantProblems, BodyProblems))]
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

            #[utoipa::path(delete, path = $one, tag = $tag, security(("bearer" = [])),
                summary = concat!("Delete a ", $noun, " (member) with its revisions."),
                params(TenantHeader, ("id" = Uuid, Path)),
                responses(
                    (status = 204, description = concat!("The ", $noun, " and its revisions are deleted")),
                    $((status = $delete_status, description = $delete_text, body = Problem,
                        content_type = "application/problem+json"),)*
                    NotFound, TenantProblems))]
            async fn delete(
                State(state): State<ContentState>,
                ctx: TenantCtx<min::Member>,
                PathId(id): PathId<Uuid>,
            ) -> Result<StatusCode, ApiError> {
                state.content.delete(&ctx.scope, KIND, id).await?;
                Ok(StatusCode::NO_CONTENT)
            }

            #[utoipa::path(post, path = $publish, tag = $tag, security(("bearer" = [])),
                summary = concat!("Publish a ", $noun, " (member): now, or at `at` (the content scheduler \
                    publishes the revision current when it was scheduled). `If-Match` optional."),
                request_body = PublishRequest, params(TenantHeader, ("id" = Uuid, Path), IfMatchHeader),
                responses(
                    (status = 200, description = concat!("The ", $noun, ", published or scheduled"), body = Item,
                        headers(("ETag" = String))),
                    $((status = $publish_status, description = $publish_text, body = Problem,
                        content_type = "application/problem+json"),)*
                    NotFound, PreconditionFailed, TenantProblems, BodyProblems))]
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

            #[utoipa::path(post, path = $unpublish, tag = $tag, security(("bearer" = [])),
                summary = concat!("Take a ", $noun, " off the site (member): `draft` or `archived`; a schedule is \
                    cancelled. `If-Match` optional."),
                request_body = UnpublishRequest, params(TenantHeader, ("id" = Uuid, Path), IfMatchHeader),
                responses(
                    (status = 200, description = concat!("The ", $noun, ", off the site"), body = Item,
                        headers(("ETag" = String))),
                    $((status = $unpublish_status, description = $unpublish_text, body = Problem,
                        content_type = "application/problem+json"),)*
                    NotFound, PreconditionFailed, TenantProblems, BodyProblems))]
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

            #[utoipa::path(get, path = $revisions, tag = $tag, security(("bearer" = [])),
                summary = concat!("The revisions of a ", $noun, ", newest first."),
                params(TenantHeader, ("id" = Uuid, Path), RevisionListParams, PageParams),
                responses(
                    (status = 200, description = concat!("A page of the ", $noun, "'s revisions"),
                        body = ResultPage<RevisionSummary>),
                    NotFound, TenantProblems, ListProblems))]
            async fn revisions(
                State(core): State<Core>,
                ctx: TenantCtx<min::Viewer>,
                PathId(id): PathId<Uuid>,
                Params(params): Params<RevisionListParams>,
            ) -> Result<Json<ResultPage<RevisionSummary>>, ApiError> {
                Ok(Json(items::revisions(&core.db, &ctx.scope, KIND, id, params).await?))
            }

            #[utoipa::path(get, path = $revision, tag = $tag, security(("bearer" = [])),
                summary = concat!("One revision of a ", $noun, " with its content."),
                params(TenantHeader, ("id" = Uuid, Path),
                    ("number" = i32, Path, description = "The revision's number")),
                responses((status = 200, description = "The revision", body = Revision), NotFound, TenantProblems))]
            async fn revision(
                State(core): State<Core>,
                ctx: TenantCtx<min::Viewer>,
                PathId((id, number)): PathId<(Uuid, i32)>,
            ) -> Result<Json<Revision>, ApiError> {
                Ok(Json(items::revision(&core.db, &ctx.scope, KIND, id, number).await?))
            }

            #[utoipa::path(post, path = $restore, tag = $tag, security(("bearer" = [])),
                summary = "Restore a revision (member): its content becomes the draft, as a new revision (checked \
                    again: 409 when its slug was taken since, 422 when an image is gone). `If-Match` optional.",
                params(TenantHeader, ("id" = Uuid, Path), ("number" = i32, Path, description = "The revision's number"),
                    IfMatchHeader),
                responses(
                    (status = 200, description = concat!("The ", $noun, " with the revision's content as its draft"),
                        body = Item, headers(("ETag" = String))),
                    $((status = $restore_status, description = $restore_text, body = Problem,
                        content_type = "application/problem+json"),)*
                    (status = 422, description = "`If-Match` is not an ETag, or the revision no longer passes the \
                        checks (an image it shows was deleted)", body = Problem,
                        content_type = "application/problem+json"),
                    NotFound, PreconditionFailed, TenantProblems))]
            async fn restore(
                State(state): State<ContentState>,
                ctx: TenantCtx<min::Member>,
                PathId((id, number)): PathId<(Uuid, i32)>,
                IfMatch(version): IfMatch,
            ) -> Result<Response, ApiError> {
                let item = state.content.restore(&ctx.scope, KIND, id, number, version).await?;
                Ok(item_response(item, StatusCode::OK))
            }

            #[utoipa::path(get, path = $diff, tag = $tag, security(("bearer" = [])),
                summary = concat!("What changed from revision `from` to revision `to` of a ", $noun, ": fields, and \
                    the body block by block."),
                params(TenantHeader, ("id" = Uuid, Path), DiffParams),
                responses(
                    (status = 200, description = "The changes, field by field and block by block", body = RevisionDiff),
                    (status = 422, description = "`from` or `to` missing or not a number", body = Problem,
                        content_type = "application/problem+json"),
                    NotFound, TenantProblems))]
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

content_routes! {
    pages, ContentKind::Page, "cms-pages", "page",
    list: "/cms/pages", one: "/cms/pages/{id}", publish: "/cms/pages/{id}/publish",
    unpublish: "/cms/pages/{id}/unpublish", revisions: "/cms/pages/{id}/revisions",
    revision: "/cms/pages/{id}/revisions/{number}", restore: "/cms/pages/{id}/revisions/{number}/restore",
    diff: "/cms/pages/{id}/diff",
    problems: {
        list: [],
        create: [409 => "The slug is taken (`slug-taken`): `suggestion` names the next free one"],
        update: [409 => "The slug is taken (`slug-taken`): `suggestion` names the next free one"],
        delete: [409 => "Other pages have this page as their parent (`page-has-children`): move or delete them first"],
        publish: [409 => "Another published page of the site is live under this slug (`slug-taken`)"],
        unpublish: [],
        restore: [409 => "The revision's slug was taken since (`slug-taken`): `suggestion` names the next free one"],
    }
}

content_routes! {
    posts, ContentKind::Post, "cms-posts", "post",
    list: "/cms/posts", one: "/cms/posts/{id}", publish: "/cms/posts/{id}/publish",
    unpublish: "/cms/posts/{id}/unpublish", revisions: "/cms/posts/{id}/revisions",
    revision: "/cms/posts/{id}/revisions/{number}", restore: "/cms/posts/{id}/revisions/{number}/restore",
    diff: "/cms/posts/{id}/diff",
    problems: {
        list: [
            409 => "A WordPress site is connected but not registered under `/analytics/sites` (`no-site`)",
            502 => wordpress_failed!(),
        ],
        create: [
            409 => "The slug is taken (`slug-taken`): `suggestion` names the next free one; or a WordPress site is \
                connected but not registered under `/analytics/sites` (`no-site`)",
            502 => concat!(wordpress_failed!(), "; nothing was created"),
        ],
        update: [
            409 => concat!("The slug is taken (`slug-taken`, with `suggestion`); or, with a connected WordPress site: ",
                wordpress_conflicts!()),
            410 => WORDPRESS_GONE,
            502 => concat!(wordpress_failed!(), "; nothing was changed"),
        ],
        delete: [
            409 => "A WordPress site is connected but not registered under `/analytics/sites` (`no-site`)",
            502 => concat!(wordpress_failed!(), "; nothing was deleted"),
        ],
        publish: [
            409 => concat!("Another published post of the site is live under this slug (`slug-taken`); or, with a \
                connected WordPress site: ", wordpress_conflicts!()),
            410 => WORDPRESS_GONE,
            502 => concat!(wordpress_failed!(), "; nothing was published"),
        ],
        unpublish: [
            409 => concat!("Only with a connected WordPress site: ", wordpress_conflicts!()),
            410 => WORDPRESS_GONE,
            502 => concat!(wordpress_failed!(), "; nothing was changed"),
        ],
        restore: [
            409 => concat!("The revision's slug was taken since (`slug-taken`, with `suggestion`); or, with a \
                connected WordPress site: ", wordpress_conflicts!()),
            410 => WORDPRESS_GONE,
            502 => concat!(wordpress_failed!(), "; nothing was changed"),
        ],
    }
}
