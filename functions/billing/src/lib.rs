//! `billing`: the plan catalogue, the tenant's subscription and invoice history (from the
//! Stripe mirrors that billing-sync keeps), and Stripe Checkout / customer-portal sessions.
//! Reads are open to every member; starting Checkout or the portal is for owners and admins.
use axum::Router;
use axum::extract::{FromRef, State};
use axum::response::Response;
use shared::adapters::stripe_api::StripeApi;
use shared::domain::{ResultPage, Role};
use shared::http::docs::{
    BodyProblems, Conflict, IdempotencyHeader, ListProblems, TenantHeader, TenantProblems, Upstream,
};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Body, Core, Json, PageParams, Params, RawIdempotencyKey, TenantCtx, min, replayed_or};
use shared::services::billing::{
    self, BillingLinks, CheckoutSession, InvoiceSummary, NewCheckout, Plan, PortalSession, SubscriptionSummary,
};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const TAG: &str = "billing";

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("GET", "/billing/plans", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/billing/subscription", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/billing/checkout-session", Access::Tenant(Role::Admin)),
    RouteSpec::new("POST", "/billing/portal-session", Access::Tenant(Role::Admin)),
    RouteSpec::new("GET", "/billing/invoices", Access::Tenant(Role::Viewer)),
];

#[derive(Clone)]
pub struct BillingState {
    pub core: Core,
    pub stripe: StripeApi,
    pub links: Arc<BillingLinks>,
}

impl BillingState {
    pub fn new(core: Core, stripe: StripeApi) -> Self {
        let links = Arc::new(BillingLinks::under(&core.config.portal_base_url));
        Self { core, stripe, links }
    }
}

impl FromRef<BillingState> for Core {
    fn from_ref(state: &BillingState) -> Core {
        state.core.clone()
    }
}

pub fn api() -> OpenApiRouter<BillingState> {
    OpenApiRouter::with_openapi(shared::http::docs::base())
        .routes(routes!(list_plans))
        .routes(routes!(get_subscription))
        .routes(routes!(create_checkout_session))
        .routes(routes!(create_portal_session))
        .routes(routes!(list_invoices))
}

pub fn router(state: BillingState) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(state))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// The plans, their prices (minor units) and their limits.
#[utoipa::path(get, path = "/billing/plans", tag = TAG, security(("bearer" = [])), params(TenantHeader),
    responses((status = 200, body = Vec<Plan>), TenantProblems))]
async fn list_plans(
    State(state): State<BillingState>,
    _ctx: TenantCtx<min::Viewer>,
) -> Result<Json<Vec<Plan>>, ApiError> {
    Ok(Json(billing::plans(&state.core.db).await?))
}

/// The tenant's subscription: status, plan and limits, period, trial, cancellation, card.
#[utoipa::path(get, path = "/billing/subscription", tag = TAG, security(("bearer" = [])), params(TenantHeader),
    responses((status = 200, body = SubscriptionSummary), TenantProblems))]
async fn get_subscription(
    State(state): State<BillingState>,
    ctx: TenantCtx<min::Viewer>,
) -> Result<Json<SubscriptionSummary>, ApiError> {
    Ok(Json(billing::subscription(&state.core.db, &ctx.scope).await?))
}

/// Start Stripe Checkout for a price (owner/admin). Creates the tenant's Stripe customer the
/// first time. Honours `Idempotency-Key`. 409 when a subscription is already live.
#[utoipa::path(post, path = "/billing/checkout-session", tag = TAG, security(("bearer" = [])),
    request_body = NewCheckout,
    params(TenantHeader, IdempotencyHeader),
    responses((status = 201, body = CheckoutSession), Conflict, Upstream, TenantProblems, BodyProblems))]
async fn create_checkout_session(
    State(state): State<BillingState>,
    ctx: TenantCtx<min::Admin>,
    idem: RawIdempotencyKey,
    body: Body<NewCheckout>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /billing/checkout-session", &body.raw)?;
    Ok(replayed_or(
        billing::checkout(
            &state.core.db,
            &ctx.scope,
            &state.stripe,
            &state.links,
            body.value,
            key.as_ref(),
        )
        .await?,
    ))
}

/// A Stripe customer-portal session (owner/admin): change plan, cancel, cards, invoices.
#[utoipa::path(post, path = "/billing/portal-session", tag = TAG, security(("bearer" = [])), params(TenantHeader),
    responses((status = 200, body = PortalSession), Conflict, Upstream, TenantProblems))]
async fn create_portal_session(
    State(state): State<BillingState>,
    ctx: TenantCtx<min::Admin>,
) -> Result<Json<PortalSession>, ApiError> {
    Ok(Json(
        billing::portal(&state.core.db, &ctx.scope, &state.stripe, &state.links).await?,
    ))
}

/// The tenant's invoices, newest first (amounts in minor units).
#[utoipa::path(get, path = "/billing/invoices", tag = TAG, security(("bearer" = [])), params(TenantHeader, PageParams),
    responses((status = 200, body = ResultPage<InvoiceSummary>), TenantProblems, ListProblems))]
async fn list_invoices(
    State(state): State<BillingState>,
    ctx: TenantCtx<min::Viewer>,
    Params(page): Params<PageParams>,
) -> Result<Json<ResultPage<InvoiceSummary>>, ApiError> {
    Ok(Json(
        billing::invoices(&state.core.db, &ctx.scope, &page.request()?).await?,
    ))
}
