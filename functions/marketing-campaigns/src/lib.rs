//! `marketing-campaigns`: email marketing — templates (subject, preheader, an HTML or MJML body
//! and an optional text part; variables checked against the tenant's contact fields when saved;
//! previewed for a contact or a sample), segments (saved filters over CRM contacts, counted with
//! their reachable audience), the suppression list, and campaigns (drafted, tested on members,
//! scheduled or started with their audience frozen, paused, resumed, cancelled; progress and
//! stats), and the public one-click unsubscribe (`/public/unsubscribe/{token}`: GET shows a
//! page with a button and changes nothing, POST unsubscribes at once — RFC 8058) and the web copy
//! of a message (`/public/view/{token}`, "view in browser"). Rules live in
//! `shared::services::marketing`; the sending is campaign-sender's.
use axum::Router;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shared::config::{ConfigError, Env};
use shared::domain::{PageParams, ResultPage, Role};
use shared::http::docs::{
    BodyProblems, Conflict, IdempotencyHeader, IfMatchHeader, ListProblems, NotFound, PlanLimit, PreconditionFailed,
    TenantHeader, TenantProblems,
};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{
    ApiError, Body, Core, IfMatch, Json, Params, PathId, RawIdempotencyKey, TenantCtx, etag, min, replayed_or,
};
use shared::services::marketing::campaigns::lifecycle::{self, ScheduleRequest};
use shared::services::marketing::campaigns::test_send::{self, TestSendRequest, TestSends};
use shared::services::marketing::campaigns::{self, Campaign, CampaignInput, CampaignListParams, CampaignStats};
use shared::services::marketing::segments::{self, Segment, SegmentCount, SegmentInput, SegmentListParams};
use shared::services::marketing::suppressions::{self, NewSuppression, Suppression, SuppressionListParams};
use shared::services::marketing::templates::{
    self, EmailPreview, EmailPreviewRequest, EmailTemplate, EmailTemplateInput, EmailTemplateSummary,
    TemplateListParams,
};
use shared::services::marketing::unsubscribe::{self as unsubscribing, LinkKeys, Subscription};
use shared::services::providers::email::html_escape;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

const TAG: &str = "marketing";

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("GET", "/marketing/templates", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/marketing/templates", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/marketing/templates/{id}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("PATCH", "/marketing/templates/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new("DELETE", "/marketing/templates/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new(
        "POST",
        "/marketing/templates/{id}/preview",
        Access::Tenant(Role::Viewer),
    ),
    RouteSpec::new("GET", "/marketing/segments", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/marketing/segments", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/marketing/segments/{id}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("PATCH", "/marketing/segments/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new("DELETE", "/marketing/segments/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/marketing/segments/{id}/count", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/marketing/suppressions", Access::Tenant(Role::Member)),
    RouteSpec::new("POST", "/marketing/suppressions", Access::Tenant(Role::Admin)),
    RouteSpec::new("DELETE", "/marketing/suppressions/{id}", Access::Tenant(Role::Admin)),
    RouteSpec::new("GET", "/marketing/campaigns", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/marketing/campaigns", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/marketing/campaigns/{id}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("PATCH", "/marketing/campaigns/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new("DELETE", "/marketing/campaigns/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new("POST", "/marketing/campaigns/{id}/test", Access::Tenant(Role::Member)),
    RouteSpec::new(
        "POST",
        "/marketing/campaigns/{id}/schedule",
        Access::Tenant(Role::Member),
    ),
    RouteSpec::new("POST", "/marketing/campaigns/{id}/pause", Access::Tenant(Role::Member)),
    RouteSpec::new("POST", "/marketing/campaigns/{id}/resume", Access::Tenant(Role::Member)),
    RouteSpec::new("POST", "/marketing/campaigns/{id}/cancel", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/marketing/campaigns/{id}/stats", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/public/unsubscribe/{token}", Access::Public),
    RouteSpec::new("POST", "/public/unsubscribe/{token}", Access::Public),
    RouteSpec::new("GET", "/public/view/{token}", Access::Public),
];

/// The function's configuration, read once at start.
pub struct Config {
    pub core: shared::Config,
    /// `MARKETING_LINK_KEYS`: the keys unsubscribe links are signed with (current first).
    pub links: LinkKeys,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            core: shared::Config::from(env)?,
            links: LinkKeys::parse(&env.required("MARKETING_LINK_KEYS")?).map_err(|reason| ConfigError::Invalid {
                name: "MARKETING_LINK_KEYS",
                reason,
            })?,
        })
    }
}

/// What the handlers share: the core, and the unsubscribe links' keys.
#[derive(Clone)]
pub struct MarketingState {
    pub core: Core,
    pub links: LinkKeys,
}

impl FromRef<MarketingState> for Core {
    fn from_ref(state: &MarketingState) -> Core {
        state.core.clone()
    }
}

pub fn api() -> OpenApiRouter<MarketingState> {
    OpenApiRouter::with_openapi(shared::http::docs::base())
        .routes(routes!(list_templates, create_template))
        .routes(routes!(get_template, update_template, delete_template))
        .routes(routes!(preview_template))
        .routes(routes!(list_segments, create_segment))
        .routes(routes!(get_segment, update_segment, delete_segment))
        .routes(routes!(count_segment))
        .routes(routes!(list_suppressions, add_suppression))
        .routes(routes!(remove_suppression))
        .routes(routes!(list_campaigns, create_campaign))
        .routes(routes!(get_campaign, update_campaign, delete_campaign))
        .routes(routes!(test_campaign))
        .routes(routes!(schedule_campaign))
        .routes(routes!(pause_campaign))
        .routes(routes!(resume_campaign))
        .routes(routes!(cancel_campaign))
        .routes(routes!(campaign_stats))
        .routes(routes!(unsubscribe_page, unsubscribe))
        .routes(routes!(web_copy))
}

pub fn router(core: Core, links: LinkKeys) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(MarketingState { core, links }))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// The tenant's email templates, most recently changed first (without their bodies).
#[utoipa::path(get, path = "/marketing/templates", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, PageParams, TemplateListParams),
    responses((status = 200, body = ResultPage<EmailTemplateSummary>), TenantProblems, ListProblems))]
async fn list_templates(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(params): Params<TemplateListParams>,
) -> Result<Json<ResultPage<EmailTemplateSummary>>, ApiError> {
    Ok(Json(templates::list(&core.db, &ctx.scope, params).await?))
}

/// Create a template (member). Its variables (`{{ contact.first_name }}`,
/// `{{ contact.custom.plan }}`) must be known: an unknown one answers 422 naming the field and
/// line (`body`, line 12). An MJML body must compile. Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/marketing/templates", tag = TAG, security(("bearer" = [])), request_body = EmailTemplateInput,
    params(TenantHeader, IdempotencyHeader),
    responses((status = 201, body = EmailTemplate), TenantProblems, BodyProblems))]
async fn create_template(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    idem: RawIdempotencyKey,
    body: Body<EmailTemplateInput>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /marketing/templates", &body.raw)?;
    Ok(replayed_or(
        templates::create(&core.db, &ctx.scope, body.value, key.as_ref()).await?,
    ))
}

/// A template with its body.
#[utoipa::path(get, path = "/marketing/templates/{id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = EmailTemplate, headers(("ETag" = String))), NotFound, TenantProblems))]
async fn get_template(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    let template = templates::get(&core.db, &ctx.scope, id).await?;
    Ok(([etag(template.version)], Json(template)).into_response())
}

/// Change a template (member): a JSON merge patch (RFC 7396; `null` clears), checked as a
/// whole as a creation is. `If-Match` optional; a stale ETag answers 412.
#[utoipa::path(patch, path = "/marketing/templates/{id}", tag = TAG, security(("bearer" = [])),
    request_body(content = Object, content_type = "application/merge-patch+json", description = "Fields of EmailTemplateInput to change"),
    params(TenantHeader, ("id" = Uuid, Path), IfMatchHeader),
    responses((status = 200, body = EmailTemplate, headers(("ETag" = String))), NotFound, PreconditionFailed,
        TenantProblems, BodyProblems))]
async fn update_template(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
    IfMatch(version): IfMatch,
    body: Body<Value>,
) -> Result<Response, ApiError> {
    let template = templates::update(&core.db, &ctx.scope, id, body.value, version).await?;
    Ok(([etag(template.version)], Json(template)).into_response())
}

/// Delete a template (member).
#[utoipa::path(delete, path = "/marketing/templates/{id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)), responses((status = 204), NotFound, TenantProblems))]
async fn delete_template(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    templates::delete(&core.db, &ctx.scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Render a template as a recipient would get it (viewer): for `contact_id` (a contact of the
/// tenant; another's answers 404) or, without one, for a sample contact. Answers the subject,
/// preheader, HTML (MJML compiled, CSS inlined, values escaped) and text part. A template the
/// engine cannot render for this contact (a limit its data reaches) answers 409
/// `template-render-failed`.
#[utoipa::path(post, path = "/marketing/templates/{id}/preview", tag = TAG, security(("bearer" = [])),
    request_body = EmailPreviewRequest, params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = EmailPreview), NotFound, Conflict, TenantProblems, BodyProblems))]
async fn preview_template(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
    body: Body<EmailPreviewRequest>,
) -> Result<Json<EmailPreview>, ApiError> {
    Ok(Json(templates::preview(&core.db, &ctx.scope, id, body.value).await?))
}

/// The tenant's segments, most recently changed first.
#[utoipa::path(get, path = "/marketing/segments", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, PageParams, SegmentListParams),
    responses((status = 200, body = ResultPage<Segment>), TenantProblems, ListProblems))]
async fn list_segments(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(params): Params<SegmentListParams>,
) -> Result<Json<ResultPage<Segment>>, ApiError> {
    Ok(Json(segments::list(&core.db, &ctx.scope, params).await?))
}

/// Create a segment (member): a named filter over the tenant's contacts with the contacts
/// list's filters. An unknown stage or custom field, a malformed custom filter, an owner who is
/// not a member or a company not the tenant's answer 422 naming it (`filter.owner_ids[1]`).
/// Names are unique per tenant, whatever their case (409 `segment-name-taken`). Honours
/// `Idempotency-Key`.
#[utoipa::path(post, path = "/marketing/segments", tag = TAG, security(("bearer" = [])), request_body = SegmentInput,
    params(TenantHeader, IdempotencyHeader),
    responses((status = 201, body = Segment), Conflict, TenantProblems, BodyProblems))]
async fn create_segment(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    idem: RawIdempotencyKey,
    body: Body<SegmentInput>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /marketing/segments", &body.raw)?;
    Ok(replayed_or(
        segments::create(&core.db, &ctx.scope, body.value, key.as_ref()).await?,
    ))
}

/// A segment.
#[utoipa::path(get, path = "/marketing/segments/{id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Segment, headers(("ETag" = String))), NotFound, TenantProblems))]
async fn get_segment(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    let segment = segments::get(&core.db, &ctx.scope, id).await?;
    Ok(([etag(segment.version)], Json(segment)).into_response())
}

/// Change a segment (member): a JSON merge patch, checked as a whole; `If-Match` optional, a
/// stale ETag answers 412.
#[utoipa::path(patch, path = "/marketing/segments/{id}", tag = TAG, security(("bearer" = [])),
    request_body(content = Object, content_type = "application/merge-patch+json", description = "Fields of SegmentInput to change"),
    params(TenantHeader, ("id" = Uuid, Path), IfMatchHeader),
    responses((status = 200, body = Segment, headers(("ETag" = String))), NotFound, Conflict, PreconditionFailed,
        TenantProblems, BodyProblems))]
async fn update_segment(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
    IfMatch(version): IfMatch,
    body: Body<Value>,
) -> Result<Response, ApiError> {
    let segment = segments::update(&core.db, &ctx.scope, id, body.value, version).await?;
    Ok(([etag(segment.version)], Json(segment)).into_response())
}

/// Delete a segment (member).
#[utoipa::path(delete, path = "/marketing/segments/{id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)), responses((status = 204), NotFound, TenantProblems))]
async fn delete_segment(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    segments::delete(&core.db, &ctx.scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The segment's audience now: contacts matching, those with an email, and of those the
/// suppressed ones (`reachable` is who a campaign would reach). A custom field the filter
/// names that was removed since answers 409 `segment-outdated`.
#[utoipa::path(get, path = "/marketing/segments/{id}/count", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = SegmentCount), NotFound, Conflict, TenantProblems))]
async fn count_segment(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Json<SegmentCount>, ApiError> {
    Ok(Json(segments::count(&core.db, &ctx.scope, id).await?))
}

/// The suppression list (member), newest first: filter by `reason`, or `q` (part of the
/// address).
#[utoipa::path(get, path = "/marketing/suppressions", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, PageParams, SuppressionListParams),
    responses((status = 200, body = ResultPage<Suppression>), TenantProblems, ListProblems))]
async fn list_suppressions(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    Params(params): Params<SuppressionListParams>,
) -> Result<Json<ResultPage<Suppression>>, ApiError> {
    Ok(Json(suppressions::list(&core.db, &ctx.scope, params).await?))
}

/// Suppress an address (admin): stored in lower case, `manual` (removable) or `unsubscribed`
/// (an opt-out received another way; permanent). An address already on the list answers 409
/// `already-suppressed` and keeps its reason. Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/marketing/suppressions", tag = TAG, security(("bearer" = [])), request_body = NewSuppression,
    params(TenantHeader, IdempotencyHeader),
    responses((status = 201, body = Suppression), Conflict, TenantProblems, BodyProblems))]
async fn add_suppression(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    idem: RawIdempotencyKey,
    body: Body<NewSuppression>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /marketing/suppressions", &body.raw)?;
    Ok(replayed_or(
        suppressions::add(&core.db, &ctx.scope, body.value, key.as_ref()).await?,
    ))
}

/// Remove a suppression (admin): only `manual` entries and bounces. An address that
/// unsubscribed or complained answers 409 `consent-required`: only the person can subscribe
/// again (CAN-SPAM, GDPR).
#[utoipa::path(delete, path = "/marketing/suppressions/{id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)), responses((status = 204), NotFound, Conflict, TenantProblems))]
async fn remove_suppression(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    suppressions::remove(&core.db, &ctx.scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A single campaign's answer: the campaign with its progress and its ETag.
fn campaign_response(campaign: Campaign) -> Response {
    ([etag(campaign.version)], Json(campaign)).into_response()
}

/// The tenant's campaigns, most recently changed first (without progress): filter by `status`,
/// or `q` (part of the name).
#[utoipa::path(get, path = "/marketing/campaigns", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, PageParams, CampaignListParams),
    responses((status = 200, body = ResultPage<Campaign>), TenantProblems, ListProblems))]
async fn list_campaigns(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(params): Params<CampaignListParams>,
) -> Result<Json<ResultPage<Campaign>>, ApiError> {
    Ok(Json(campaigns::list(&core.db, &ctx.scope, params).await?))
}

/// Create a draft campaign (member): a sender identity, a template (needed to schedule), an
/// audience (segments and/or tags) and, optionally, an A/B subject test (2 to 5 variants, their
/// variables checked as a template's). A template or segment not the tenant's answers 422
/// naming it (`audience.segment_ids[1]`). Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/marketing/campaigns", tag = TAG, security(("bearer" = [])), request_body = CampaignInput,
    params(TenantHeader, IdempotencyHeader),
    responses((status = 201, body = Campaign), TenantProblems, BodyProblems))]
async fn create_campaign(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    idem: RawIdempotencyKey,
    body: Body<CampaignInput>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /marketing/campaigns", &body.raw)?;
    Ok(replayed_or(
        campaigns::create(&core.db, &ctx.scope, body.value, key.as_ref()).await?,
    ))
}

/// A campaign with its progress: recipients queued (`held` of them for an A/B winner), sending,
/// sent, failed, unknown (handed over when a sender stopped; settled from the provider's events,
/// never sent twice), suppressed and cancelled.
#[utoipa::path(get, path = "/marketing/campaigns/{id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Campaign, headers(("ETag" = String))), NotFound, TenantProblems))]
async fn get_campaign(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    Ok(campaign_response(campaigns::get(&core.db, &ctx.scope, id).await?))
}

/// Change a draft or scheduled campaign (member): a JSON merge patch (RFC 7396; `null` clears),
/// checked as a whole as a creation is. While it is sending: 409 `campaign-sending`; in any
/// other status, 409 `illegal-transition` naming it. `If-Match` optional; a stale ETag answers
/// 412.
#[utoipa::path(patch, path = "/marketing/campaigns/{id}", tag = TAG, security(("bearer" = [])),
    request_body(content = Object, content_type = "application/merge-patch+json", description = "Fields of CampaignInput to change"),
    params(TenantHeader, ("id" = Uuid, Path), IfMatchHeader),
    responses((status = 200, body = Campaign, headers(("ETag" = String))), NotFound, Conflict, PreconditionFailed,
        TenantProblems, BodyProblems))]
async fn update_campaign(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
    IfMatch(version): IfMatch,
    body: Body<Value>,
) -> Result<Response, ApiError> {
    Ok(campaign_response(
        campaigns::update(&core.db, &ctx.scope, id, body.value, version).await?,
    ))
}

/// Delete a draft, cancelled, sent or failed campaign (member); any other status answers 409
/// naming it. A campaign that started is hidden, its recipients kept (the month's usage).
#[utoipa::path(delete, path = "/marketing/campaigns/{id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)), responses((status = 204), NotFound, Conflict, TenantProblems))]
async fn delete_campaign(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    campaigns::delete(&core.db, &ctx.scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queue a test of the campaign (member) to 1 to 5 addresses, each a member's of the tenant
/// (another answers 422 naming it): the message rendered for the sample contact, its subject
/// starting `[Test] `. Needs a template that renders (409) and an email connector (409
/// `no-email-connector` naming sendgrid and mailgun). Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/marketing/campaigns/{id}/test", tag = TAG, security(("bearer" = [])),
    request_body = TestSendRequest, params(TenantHeader, ("id" = Uuid, Path), IdempotencyHeader),
    responses((status = 201, body = TestSends), NotFound, Conflict, TenantProblems, BodyProblems))]
async fn test_campaign(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
    idem: RawIdempotencyKey,
    body: Body<TestSendRequest>,
) -> Result<Response, ApiError> {
    // The campaign is part of the fingerprint: the same key and body for another campaign is
    // another request.
    let key = idem.with_request(&format!("POST /marketing/campaigns/{id}/test"), &body.raw)?;
    Ok(replayed_or(
        test_send::send_test(&core.db, &ctx.scope, id, body.value, key.as_ref()).await?,
    ))
}

/// Schedule a draft or scheduled campaign (member) for `send_at`, or start it now without one.
/// Checked as if it started now, before anything is frozen: its template renders (409
/// `template-render-failed`), someone is left after suppressions (409 `empty-audience`), an
/// email connector is set up (409 `no-email-connector`), the plan's `emails_per_month` has room
/// (402). Starting freezes the template and the audience (one recipient per address) at once.
#[utoipa::path(post, path = "/marketing/campaigns/{id}/schedule", tag = TAG, security(("bearer" = [])),
    request_body = ScheduleRequest, params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Campaign, headers(("ETag" = String))), NotFound, Conflict, PlanLimit,
        TenantProblems, BodyProblems))]
async fn schedule_campaign(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
    body: Body<ScheduleRequest>,
) -> Result<Response, ApiError> {
    Ok(campaign_response(
        lifecycle::schedule(&core.db, &ctx.scope, id, body.value).await?,
    ))
}

/// Pause a scheduled or sending campaign (member): no further batch goes out (one with the
/// provider finishes). Any other status answers 409 naming it.
#[utoipa::path(post, path = "/marketing/campaigns/{id}/pause", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Campaign, headers(("ETag" = String))), NotFound, Conflict, TenantProblems))]
async fn pause_campaign(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    Ok(campaign_response(lifecycle::pause(&core.db, &ctx.scope, id).await?))
}

/// Resume a paused campaign (member): sending again if it had started, else scheduled again
/// (starting at once if its time has passed). Any other status answers 409 naming it.
#[utoipa::path(post, path = "/marketing/campaigns/{id}/resume", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Campaign, headers(("ETag" = String))), NotFound, Conflict, TenantProblems))]
async fn resume_campaign(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    Ok(campaign_response(lifecycle::resume(&core.db, &ctx.scope, id).await?))
}

/// Cancel a scheduled, sending or paused campaign for good (member): the remaining batches and
/// recipients are cancelled within one batch; what went out stays sent. Any other status
/// answers 409 naming it.
#[utoipa::path(post, path = "/marketing/campaigns/{id}/cancel", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Campaign, headers(("ETag" = String))), NotFound, Conflict, TenantProblems))]
async fn cancel_campaign(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    Ok(campaign_response(lifecycle::cancel(&core.db, &ctx.scope, id).await?))
}

/// A campaign's results from the provider's events: delivered, opened and clicked (total and
/// unique), bounced (hard, soft), complained, unsubscribed, clicks per link, and per A/B
/// variant. The same whatever order the events arrived in and however often.
#[utoipa::path(get, path = "/marketing/campaigns/{id}/stats", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = CampaignStats), NotFound, TenantProblems))]
async fn campaign_stats(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Json<CampaignStats>, ApiError> {
    Ok(Json(campaigns::report::stats(&core.db, &ctx.scope, id).await?))
}

/// A small page in the tenant's name: plain HTML, no script, nothing loaded from elsewhere.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;\
         color:#222}}button{{font-size:1rem;padding:.6rem 1.2rem;cursor:pointer}}</style></head>\
         <body>{body}</body></html>",
        title = html_escape(title),
    );
    (
        status,
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
            (axum::http::header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

fn gone() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "<h1>This link is not valid</h1><p>It may have been copied incompletely. Use the unsubscribe \
         link of the email itself.</p>",
    )
}

fn confirmed(s: &Subscription) -> Response {
    page(
        StatusCode::OK,
        "Unsubscribed",
        &format!(
            "<h1>You are unsubscribed</h1><p>{} will not send marketing email to {} any more.</p>",
            html_escape(&s.tenant_name),
            html_escape(&s.masked_email)
        ),
    )
}

/// The unsubscribe page of an email's link: who sends and to which address, with a button
/// (public; changes nothing: link scanners and previews open links). An unknown or tampered
/// token is a 404 page.
#[utoipa::path(get, path = "/public/unsubscribe/{token}", tag = TAG,
    params(("token" = String, Path, description = "The link's signed token")),
    responses((status = 200, description = "The page (text/html)", content_type = "text/html"),
        (status = 404, description = "The link is not valid (text/html)", content_type = "text/html")))]
async fn unsubscribe_page(State(state): State<MarketingState>, Path(token): Path<String>) -> Response {
    match unsubscribing::look(&state.core.db, &state.links, &token).await {
        Ok(s) if s.unsubscribed_at.is_some() => confirmed(&s),
        Ok(s) => page(
            StatusCode::OK,
            "Unsubscribe",
            &format!(
                "<h1>Unsubscribe</h1><p>Stop marketing email from {} to {}?</p>\
                 <form method=\"post\"><button type=\"submit\">Unsubscribe</button></form>",
                html_escape(&s.tenant_name),
                html_escape(&s.masked_email)
            ),
        ),
        Err(shared::domain::DomainError::NotFound) => gone(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// One-click unsubscribe (RFC 8058): the mail client's `List-Unsubscribe=One-Click` POST, or
/// the page's button. Unsubscribes at once, no login and no cookie; idempotent. An unknown or
/// tampered token is a 404 page and changes nothing.
#[utoipa::path(post, path = "/public/unsubscribe/{token}", tag = TAG,
    params(("token" = String, Path, description = "The link's signed token")),
    responses((status = 200, description = "Unsubscribed: the confirmation page (text/html)", content_type = "text/html"),
        (status = 404, description = "The link is not valid (text/html)", content_type = "text/html")))]
async fn unsubscribe(State(state): State<MarketingState>, Path(token): Path<String>) -> Response {
    match unsubscribing::unsubscribe(&state.core.db, &state.links, &token).await {
        Ok(s) => confirmed(&s),
        Err(shared::domain::DomainError::NotFound) => gone(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The web copy of an email ("view in browser", public): the message's HTML part as its
/// recipient got it, under the same signed token as the unsubscribe link. The tenant's HTML is
/// served sandboxed: no script runs, nothing is framed, images load from anywhere (https). An
/// unknown or tampered token, a recipient whose contact was deleted since, or a message never
/// sent is a 404 page.
#[utoipa::path(get, path = "/public/view/{token}", tag = TAG,
    params(("token" = String, Path, description = "The link's signed token")),
    responses((status = 200, description = "The message's HTML part (text/html)", content_type = "text/html"),
        (status = 404, description = "The link is not valid, or the message is no longer available (text/html)",
            content_type = "text/html")))]
async fn web_copy(State(state): State<MarketingState>, Path(token): Path<String>) -> Response {
    match unsubscribing::web_copy(&state.core.db, &state.links, &token).await {
        Ok(html) => (
            StatusCode::OK,
            [
                (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (axum::http::header::CACHE_CONTROL, "private, no-store"),
                (
                    axum::http::header::CONTENT_SECURITY_POLICY,
                    "sandbox allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation; \
                     default-src 'none'; style-src 'unsafe-inline' https:; img-src https: data:; font-src https: data:; \
                     form-action 'none'; frame-ancestors 'none'",
                ),
                (axum::http::header::REFERRER_POLICY, "no-referrer"),
                (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (axum::http::HeaderName::from_static("x-robots-tag"), "noindex"),
            ],
            html,
        )
            .into_response(),
        Err(shared::domain::DomainError::NotFound) => page(
            StatusCode::NOT_FOUND,
            "Not available",
            "<h1>This email is not available</h1><p>The link may have been copied incompletely, or the \
             message is no longer kept.</p>",
        ),
        Err(e) => ApiError::from(e).into_response(),
    }
}
