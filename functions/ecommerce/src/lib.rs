//! `ecommerce`: the tenant's shops (Shopify, WooCommerce) as one read-only model — products with
//! variants, orders with lines and customer, and the sales summary per channel, currency and
//! period. The mirrors are written by `connector-sync`; rules live in
//! `shared::services::ecommerce::read`.
use axum::Router;
use axum::extract::State;
use shared::domain::{PageParams, ResultPage, Role};
use shared::http::docs::{ListProblems, NotFound, TenantHeader, TenantProblems};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Core, Json, Params, PathId, TenantCtx, min};
use shared::services::ecommerce::read::{
    self, Order, OrderDetail, OrderListParams, Product, ProductDetail, ProductListParams, Summary, SummaryParams,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

const TAG: &str = "ecommerce";

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("GET", "/ecommerce/products", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/ecommerce/products/{id}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/ecommerce/orders", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/ecommerce/orders/{id}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/ecommerce/summary", Access::Tenant(Role::Viewer)),
];

pub fn api() -> OpenApiRouter<Core> {
    OpenApiRouter::with_openapi(shared::http::docs::base())
        .routes(routes!(list_products))
        .routes(routes!(get_product))
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(summary))
}

pub fn router(core: Core) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(core))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// Products of every connected shop, most recently changed first: variant count, stock and
/// price range per currency. Filters: `channel`, `status`, `q` (title, SKU, vendor, type).
#[utoipa::path(get, path = "/ecommerce/products", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, PageParams, ProductListParams),
    responses((status = 200, body = ResultPage<Product>), TenantProblems, ListProblems))]
async fn list_products(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(params): Params<ProductListParams>,
) -> Result<Json<ResultPage<Product>>, ApiError> {
    Ok(Json(read::products(&core.db, &ctx.scope, params).await?))
}

/// One product with its variants (price, SKU, stock).
#[utoipa::path(get, path = "/ecommerce/products/{id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = ProductDetail), NotFound, TenantProblems))]
async fn get_product(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Json<ProductDetail>, ApiError> {
    Ok(Json(read::product(&core.db, &ctx.scope, id).await?))
}

/// Orders of every connected shop, newest placed first, money in minor units of each order's
/// currency, the normalised status beside the channel's own. Filters: `channel`, `status`,
/// `from`/`to` (days placed, in `tz`), `q` (number, email, customer name), `test`.
#[utoipa::path(get, path = "/ecommerce/orders", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, PageParams, OrderListParams),
    responses((status = 200, body = ResultPage<Order>), TenantProblems, ListProblems))]
async fn list_orders(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(params): Params<OrderListParams>,
) -> Result<Json<ResultPage<Order>>, ApiError> {
    Ok(Json(read::orders(&core.db, &ctx.scope, params).await?))
}

/// One order with its lines (linked to the mirrored product when there is one) and customer.
#[utoipa::path(get, path = "/ecommerce/orders/{id}", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = OrderDetail), NotFound, TenantProblems))]
async fn get_order(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Json<OrderDetail>, ApiError> {
    Ok(Json(read::order(&core.db, &ctx.scope, id).await?))
}

/// Sales from `from` to `to` (days in `tz`, default UTC) per currency, per channel and currency,
/// and per `period` (day, week, month; every period present, zeros too): paid orders (test
/// orders left out), gross, refunded, revenue (gross less refunds) and average order value
/// (revenue per order). Money is never added across currencies.
#[utoipa::path(get, path = "/ecommerce/summary", tag = TAG, security(("bearer" = [])),
    params(TenantHeader, SummaryParams),
    responses((status = 200, body = Summary), TenantProblems, ListProblems))]
async fn summary(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(params): Params<SummaryParams>,
) -> Result<Json<Summary>, ApiError> {
    Ok(Json(read::summary(&core.db, &ctx.scope, params).await?))
}
