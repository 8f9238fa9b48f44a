//! The gates catch what they are for: a deliberately broken route (a query that leaks another
//! tenant's rows, a role table that promises more than the handler enforces) fails its sweep,
//! and the fixed route passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use axum::Router;
use axum::extract::{FromRef, State};
use axum::routing::get;
use gates::{Factory, Function, Params, World, isolation_sweep, join_tables, role_sweep};
use serde_json::{Value, json};
use shared::domain::Role;
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, Core, Json, PathId, TenantCtx, min};
use sqlx::PgPool;
use std::future::Future;
use std::pin::Pin;
use testkit::TestApp;
use uuid::Uuid;

#[derive(Clone)]
struct Demo {
    core: Core,
    owner: PgPool,
}

impl FromRef<Demo> for Core {
    fn from_ref(d: &Demo) -> Core {
        d.core.clone()
    }
}

/// BROKEN: reads with the owner pool (no RLS) and no tenant filter.
async fn leaky_get(
    State(d): State<Demo>,
    _ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let name: Option<String> = sqlx::query_scalar("select name from api_keys where id = $1")
        .bind(id)
        .fetch_optional(&d.owner)
        .await?;
    name.map(|n| Json(json!({"id": id, "name": n})))
        .ok_or_else(|| shared::domain::DomainError::NotFound.into())
}

async fn leaky_list(State(d): State<Demo>, _ctx: TenantCtx<min::Viewer>) -> Result<Json<Value>, ApiError> {
    let ids: Vec<Uuid> = sqlx::query_scalar("select id from api_keys")
        .fetch_all(&d.owner)
        .await?;
    Ok(Json(json!({ "items": ids })))
}

/// FIXED: the tenant-scoped transaction; RLS answers for the tenant.
async fn fixed_get(
    State(d): State<Demo>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let mut tx = shared::adapters::pg::begin(&d.core.db, &ctx.scope).await?;
    let name: Option<String> = sqlx::query_scalar("select name from api_keys where id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    name.map(|n| Json(json!({"id": id, "name": n})))
        .ok_or_else(|| shared::domain::DomainError::NotFound.into())
}

async fn fixed_list(State(d): State<Demo>, ctx: TenantCtx<min::Viewer>) -> Result<Json<Value>, ApiError> {
    let mut tx = shared::adapters::pg::begin(&d.core.db, &ctx.scope).await?;
    let ids: Vec<Uuid> = sqlx::query_scalar("select id from api_keys")
        .fetch_all(&mut *tx)
        .await?;
    Ok(Json(json!({ "items": ids })))
}

/// Enforces only viewer, while its table entry below promises admin.
async fn weakly_guarded(_ctx: TenantCtx<min::Viewer>) -> Json<Value> {
    Json(json!({"ok": true}))
}

async fn guarded(_ctx: TenantCtx<min::Admin>) -> Json<Value> {
    Json(json!({"ok": true}))
}

fn demo(app: &TestApp, broken: bool) -> Router {
    let state = Demo {
        core: app.core.clone(),
        owner: app.db.owner.clone(),
    };
    let router = if broken {
        Router::new()
            .route("/demo/{id}", get(leaky_get))
            .route("/demo", get(leaky_list))
            .route("/demo-admin", get(weakly_guarded))
    } else {
        Router::new()
            .route("/demo/{id}", get(fixed_get))
            .route("/demo", get(fixed_list))
            .route("/demo-admin", get(guarded))
    };
    shared::http::finish(router.with_state(state))
}

const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("GET", "/demo/{id}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/demo", Access::Tenant(Role::Viewer)),
    RouteSpec::new("GET", "/demo-admin", Access::Tenant(Role::Admin)),
];

fn factory<'a>(w: &'a World, path: &'a str) -> Pin<Box<dyn Future<Output = Option<Params>> + 'a>> {
    Box::pin(async move {
        match path {
            "/demo/{id}" => {
                w.app.api_key(w.a.id, Role::Viewer).await;
                let id: Uuid =
                    sqlx::query_scalar("select id from api_keys where tenant_id = $1 order by created_at desc limit 1")
                        .bind(w.a.id)
                        .fetch_one(&w.app.db.owner)
                        .await
                        .unwrap();
                Some(Params::from([("id".to_owned(), id.to_string())]))
            }
            _ => None,
        }
    })
}

fn function(broken: bool) -> Function {
    Function {
        name: "demo",
        routes: ROUTES,
        router: if broken {
            |app: &TestApp| demo(app, true)
        } else {
            |app: &TestApp| demo(app, false)
        },
        factory: factory as Factory,
        events_dir: "demo",
        keys: &[],
    }
}

fn document() -> Value {
    json!({"paths": {
        "/demo/{id}": {"get": {"responses": {}}},
        "/demo": {"get": {"responses": {}}},
        "/demo-admin": {"get": {"responses": {}}},
    }})
}

#[tokio::test]
async fn the_isolation_sweep_catches_a_leaking_query_and_passes_the_fix() {
    let broken = [function(true)];
    let ops = join_tables(&document(), &broken).unwrap();
    let world = World::new(&broken).await;
    let report = isolation_sweep(&world, &broken, &ops).await;
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.contains("GET /demo/") && f.contains("instead of 404")),
        "{:?}",
        report.failures
    );
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.contains("GET /demo as tenant B shows tenant A's id")),
        "{:?}",
        report.failures
    );

    let fixed = [function(false)];
    let world = World::new(&fixed).await;
    isolation_sweep(&world, &fixed, &ops)
        .await
        .assert_clean("isolation sweep (fixed)");
}

#[tokio::test]
async fn the_role_sweep_catches_a_weaker_guard_than_declared_and_passes_the_fix() {
    let broken = [function(true)];
    let ops = join_tables(&document(), &broken).unwrap();
    let world = World::new(&broken).await;
    let report = role_sweep(&world, &broken, &ops).await;
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.contains("GET /demo-admin declares minimum role admin but a viewer got 200")),
        "{:?}",
        report.failures
    );
    let fixed = [function(false)];
    let world = World::new(&fixed).await;
    role_sweep(&world, &fixed, &ops)
        .await
        .assert_clean("role sweep (fixed)");
}

#[test]
fn a_route_missing_from_the_tables_or_without_a_factory_says_what_to_add() {
    let mut doc = document();
    doc["paths"]["/demo/{id}/archive"] = json!({"post": {"responses": {}}});
    let problems = join_tables(&doc, &[function(false)]).unwrap_err();
    assert!(
        problems[0].contains("POST /demo/{id}/archive is in openapi.json but in no ROUTES table"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn an_operation_without_a_factory_fails_the_sweep_with_what_to_add() {
    const MORE: &[RouteSpec] = &[RouteSpec::new("DELETE", "/demo/{id}", Access::Tenant(Role::Admin))];
    let f = Function {
        routes: MORE,
        ..function(false)
    };
    let doc = json!({"paths": {"/demo/{id}": {"delete": {"responses": {}}}}});
    let ops = join_tables(&doc, std::slice::from_ref(&f)).unwrap();
    let ops: Vec<_> = ops
        .into_iter()
        .map(|mut o| {
            o.path = "/demo/{id}/x".into();
            o
        })
        .collect();
    let world = World::new(std::slice::from_ref(&f)).await;
    let report = isolation_sweep(&world, std::slice::from_ref(&f), &ops).await;
    assert!(
        report
            .failures
            .iter()
            .any(|m| m.contains("has a path id but no factory: add a match arm")),
        "{:?}",
        report.failures
    );
}
