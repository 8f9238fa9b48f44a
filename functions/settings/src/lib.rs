//! `settings`: profile, my tenants, creating a tenant, the team (invitations, roles, removal),
//! API keys and the audit log. Handlers extract, call one service function, map the result.
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use serde::Deserialize;
use shared::domain::{ResultPage, Role};
use shared::http::docs::{
    AuthProblems, BodyProblems, Conflict, Forbidden, Gone, IdempotencyHeader, IfMatchHeader, ListProblems, NotFound,
    PlanLimit, PreconditionFailed, TenantHeader, TenantProblems,
};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{
    ApiError, Authed, Body, Core, IfMatch, Json, PageParams, Params, PathId, RawIdempotencyKey, TenantCtx, etag, min,
    replayed_or,
};
use shared::services::accounts::{self, NewTenant, Profile, TenantSummary, UpdateProfile};
use shared::services::api_keys::{self, ApiKey, CreatedApiKey, NewApiKey};
use shared::services::audit::{self, AuditEntry};
use shared::services::team::{
    self, CreatedInvitation, Invitation, InvitationPolicy, Joined, Member, NewInvitation, RoleChange,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

const TAG: &str = "settings";

/// Who may call each route (enforced by the handlers' extractors; checked by tests/gates).
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("GET", "/me", Access::User),
    RouteSpec::new("PATCH", "/me", Access::User),
    RouteSpec::new("GET", "/tenants", Access::User),
    RouteSpec::new("POST", "/tenants", Access::User),
    RouteSpec::new("GET", "/settings/team", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/settings/team/invitations", Access::Tenant(Role::Admin)),
    RouteSpec::new("POST", "/settings/team/invitations", Access::Tenant(Role::Admin)),
    RouteSpec::new("DELETE", "/settings/team/invitations/{id}", Access::Tenant(Role::Admin)),
    RouteSpec::new("POST", "/invitations/{token}/accept", Access::User),
    RouteSpec::new("PATCH", "/settings/team/members/{user_id}", Access::Tenant(Role::Admin)),
    // Viewer: anyone may leave; removing someone else is checked by the team rules.
    RouteSpec::new(
        "DELETE",
        "/settings/team/members/{user_id}",
        Access::Tenant(Role::Viewer),
    ),
    RouteSpec::new("GET", "/settings/api-keys", Access::Tenant(Role::Admin)),
    RouteSpec::new("POST", "/settings/api-keys", Access::Tenant(Role::Admin)),
    RouteSpec::new("DELETE", "/settings/api-keys/{id}", Access::Tenant(Role::Admin)),
    RouteSpec::new("GET", "/settings/audit-log", Access::Tenant(Role::Admin)),
];

/// The routes with their OpenAPI descriptions.
pub fn api() -> OpenApiRouter<Core> {
    OpenApiRouter::with_openapi(shared::http::docs::base())
        .routes(routes!(get_me, patch_me))
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(list_team))
        .routes(routes!(list_invitations, create_invitation))
        .routes(routes!(revoke_invitation))
        .routes(routes!(accept_invitation))
        .routes(routes!(change_member_role, remove_member))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(list_audit_log))
}

pub fn router(core: Core) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(core))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

fn invitation_policy(core: &Core) -> InvitationPolicy {
    InvitationPolicy {
        portal_base_url: core.config.portal_base_url.clone(),
        ttl: chrono::Duration::hours(core.config.invitation_ttl_hours),
    }
}

/// The signed-in user's profile.
#[utoipa::path(get, path = "/me", tag = TAG, security(("bearer" = [])),
    responses((status = 200, body = Profile, headers(("ETag" = String))), Forbidden, AuthProblems))]
async fn get_me(State(core): State<Core>, auth: Authed) -> Result<Response, ApiError> {
    let profile = accounts::me(&core.db, &auth.scope).await?;
    Ok(([etag(profile.version)], Json(profile)).into_response())
}

/// Update the signed-in user's profile (`If-Match` optional; a stale ETag answers 412).
#[utoipa::path(patch, path = "/me", tag = TAG, security(("bearer" = [])), request_body = UpdateProfile,
    params(IfMatchHeader),
    responses((status = 200, body = Profile, headers(("ETag" = String))), Forbidden,
        PreconditionFailed, AuthProblems, BodyProblems))]
async fn patch_me(
    State(core): State<Core>,
    auth: Authed,
    IfMatch(version): IfMatch,
    body: Body<UpdateProfile>,
) -> Result<Response, ApiError> {
    let profile = accounts::update_me(&core.db, &auth.scope, body.value, version).await?;
    Ok(([etag(profile.version)], Json(profile)).into_response())
}

/// The tenants the caller belongs to, with the caller's role in each.
#[utoipa::path(get, path = "/tenants", tag = TAG, security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = ResultPage<TenantSummary>), AuthProblems, ListProblems))]
async fn list_tenants(
    State(core): State<Core>,
    auth: Authed,
    Params(page): Params<PageParams>,
) -> Result<Json<ResultPage<TenantSummary>>, ApiError> {
    Ok(Json(
        accounts::my_tenants(&core.db, &auth.scope, &page.request()?).await?,
    ))
}

/// Create a tenant; the caller becomes its owner. Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/tenants", tag = TAG, security(("bearer" = [])), request_body = NewTenant,
    params(IdempotencyHeader),
    responses((status = 201, body = TenantSummary), Forbidden, Conflict,
        AuthProblems, BodyProblems))]
async fn create_tenant(
    State(core): State<Core>,
    auth: Authed,
    idem: RawIdempotencyKey,
    body: Body<NewTenant>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /tenants", &body.raw)?;
    Ok(replayed_or(
        accounts::create_tenant(&core.db, &auth.scope, body.value, key.as_ref()).await?,
    ))
}

/// The tenant's members.
#[utoipa::path(get, path = "/settings/team", tag = TAG, security(("bearer" = [])), params(TenantHeader, PageParams),
    responses((status = 200, body = ResultPage<Member>), TenantProblems, ListProblems))]
async fn list_team(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(page): Params<PageParams>,
) -> Result<Json<ResultPage<Member>>, ApiError> {
    Ok(Json(team::list_members(&core.db, &ctx.scope, &page.request()?).await?))
}

/// Open invitations (admin).
#[utoipa::path(get, path = "/settings/team/invitations", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, PageParams), responses((status = 200, body = ResultPage<Invitation>), TenantProblems, ListProblems))]
async fn list_invitations(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    Params(page): Params<PageParams>,
) -> Result<Json<ResultPage<Invitation>>, ApiError> {
    Ok(Json(
        team::list_invitations(&core.db, &ctx.scope, &page.request()?).await?,
    ))
}

/// Invite someone by email with a role (admin; only owners invite owners). The response holds
/// the single-use accept link, shown once. Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/settings/team/invitations", tag = TAG, security(("bearer" = [])),
    request_body = NewInvitation,
    params(TenantHeader, IdempotencyHeader),
    responses((status = 201, body = CreatedInvitation), Conflict, PlanLimit, TenantProblems, BodyProblems))]
async fn create_invitation(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    idem: RawIdempotencyKey,
    body: Body<NewInvitation>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /settings/team/invitations", &body.raw)?;
    let policy = invitation_policy(&core);
    Ok(replayed_or(
        team::invite(&core.db, &ctx.scope, body.value, &policy, key.as_ref()).await?,
    ))
}

/// Withdraw an open invitation (admin).
#[utoipa::path(delete, path = "/settings/team/invitations/{id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)), responses((status = 204), TenantProblems))]
async fn revoke_invitation(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    team::revoke_invitation(&core.db, &ctx.scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Accept an invitation as the signed-in user it was sent to. Single use.
#[utoipa::path(post, path = "/invitations/{token}/accept", tag = TAG, security(("bearer" = [])),
    params(("token" = String, Path, description = "The token from the invitation link: 64 hexadecimal digits",
        pattern = "^[0-9A-Fa-f]{64}$")),
    responses((status = 200, body = Joined), Forbidden, NotFound,
        Conflict, Gone, AuthProblems))]
async fn accept_invitation(
    State(core): State<Core>,
    auth: Authed,
    PathId(token): PathId<String>,
) -> Result<Json<Joined>, ApiError> {
    Ok(Json(team::accept(&core.db, &auth.scope, &token).await?))
}

/// Change a member's role (admin; only owners touch owners; the last owner stays).
#[utoipa::path(patch, path = "/settings/team/members/{user_id}", tag = TAG, security(("bearer" = [])),
    request_body = RoleChange,
    params(TenantHeader, ("user_id" = Uuid, Path), IfMatchHeader),
    responses((status = 200, body = Member, headers(("ETag" = String))), Conflict,
        PreconditionFailed, TenantProblems, BodyProblems))]
async fn change_member_role(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    PathId(user_id): PathId<Uuid>,
    IfMatch(version): IfMatch,
    body: Body<RoleChange>,
) -> Result<Response, ApiError> {
    let member = team::change_role(&core.db, &ctx.scope, user_id, body.value, version).await?;
    Ok(([etag(member.version)], Json(member)).into_response())
}

/// Remove a member (admin), or leave the tenant (yourself). The last owner stays.
#[utoipa::path(delete, path = "/settings/team/members/{user_id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("user_id" = Uuid, Path)),
    responses((status = 204), Conflict, TenantProblems))]
async fn remove_member(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(user_id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    team::remove_member(&core.db, &ctx.scope, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's API keys (admin). Secrets are never listed.
#[utoipa::path(get, path = "/settings/api-keys", tag = TAG, security(("bearer" = [])), params(TenantHeader, PageParams),
    responses((status = 200, body = ResultPage<ApiKey>), TenantProblems, ListProblems))]
async fn list_api_keys(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    Params(page): Params<PageParams>,
) -> Result<Json<ResultPage<ApiKey>>, ApiError> {
    Ok(Json(api_keys::list(&core.db, &ctx.scope, &page.request()?).await?))
}

/// Create an API key (admin, signed-in user). The secret is in this response only.
#[utoipa::path(post, path = "/settings/api-keys", tag = TAG, security(("bearer" = [])), request_body = NewApiKey,
    params(TenantHeader, IdempotencyHeader),
    responses((status = 201, body = CreatedApiKey), Conflict, TenantProblems, BodyProblems))]
async fn create_api_key(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    idem: RawIdempotencyKey,
    body: Body<NewApiKey>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /settings/api-keys", &body.raw)?;
    Ok(replayed_or(
        api_keys::create(&core.db, &ctx.scope, body.value, key.as_ref()).await?,
    ))
}

/// Revoke an API key (admin); it stops working at once.
#[utoipa::path(delete, path = "/settings/api-keys/{id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)), responses((status = 204), TenantProblems))]
async fn revoke_api_key(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    api_keys::revoke(&core.db, &ctx.scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
    /// Only entries with this action, e.g. `team.member.role_changed`.
    pub action: Option<String>,
}

/// Every settings change, newest first (admin).
#[utoipa::path(get, path = "/settings/audit-log", tag = TAG, security(("bearer" = [])), params(TenantHeader, PageParams, AuditQuery),
    responses((status = 200, body = ResultPage<AuditEntry>), TenantProblems, ListProblems))]
async fn list_audit_log(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    Params(query): Params<AuditQuery>,
) -> Result<Json<ResultPage<AuditEntry>>, ApiError> {
    let page = query.page.request()?;
    Ok(Json(
        audit::list(&core.db, &ctx.scope, query.action.as_deref(), &page).await?,
    ))
}
