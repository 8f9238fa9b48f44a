//! `api-docs`: `/health` (public, no tenant data), `/openapi.json` (the whole API, as committed)
//! and `/docs` (a browsable reference page rendered from that document; no CDN, works offline).
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use shared::http::routes::{Access, RouteSpec};
use sqlx::PgPool;
use std::sync::OnceLock;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod render;

/// The whole API's OpenAPI document, generated from the code (`tests/openapi.rs` fails when
/// this committed file and the code disagree; `OPENAPI_WRITE=1` rewrites it).
pub const OPENAPI_JSON: &str = include_str!("../../../openapi.json");

const TAG: &str = "meta";

/// Who may call each route (checked by tests/gates).
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("GET", "/health", Access::Public),
    RouteSpec::new("GET", "/openapi.json", Access::Public),
    RouteSpec::new("GET", "/docs", Access::Public),
];

#[derive(Clone)]
pub struct DocsState {
    pub db: PgPool,
}

pub fn api() -> OpenApiRouter<DocsState> {
    OpenApiRouter::with_openapi(shared::http::docs::base())
        .routes(routes!(health))
        .routes(routes!(openapi_json))
        .routes(routes!(docs))
}

pub fn router(state: DocsState) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(state))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// Merges every function's document into the one the portal reads.
pub fn whole_api(parts: impl IntoIterator<Item = utoipa::openapi::OpenApi>) -> utoipa::openapi::OpenApi {
    let mut whole = shared::http::docs::base();
    for part in parts {
        whole.merge(part);
    }
    whole
}

/// The committed document's text: the merged API plus the OpenAPI links that chain
/// create -> use -> delete (what stateful contract testing follows). Links are added to the
/// JSON because utoipa 5 writes a link's `operationId` as `operation_id`.
pub fn document_json(parts: impl IntoIterator<Item = utoipa::openapi::OpenApi>) -> String {
    let mut doc = serde_json::to_value(whole_api(parts)).unwrap_or_default();
    for link in LINKS {
        let (method, path, status) = link.from;
        let pointer = format!("/paths/{}/{method}/responses/{status}", path.replace('/', "~1"));
        if let Some(response) = doc.pointer_mut(&pointer).and_then(|r| r.as_object_mut()) {
            let links = response.entry("links").or_insert_with(|| serde_json::json!({}));
            links[link.name] = serde_json::json!({
                "operationId": link.to_operation_id,
                "parameters": { link.parameter: link.expression },
            });
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// A link from one operation's response to another operation, feeding a path parameter.
pub struct Link {
    pub from: (&'static str, &'static str, &'static str),
    pub name: &'static str,
    pub to_operation_id: &'static str,
    pub parameter: &'static str,
    pub expression: &'static str,
}

/// Create -> delete/update chains of the API.
pub const LINKS: &[Link] = &[
    Link {
        from: ("post", "/settings/api-keys", "201"),
        name: "RevokeApiKey",
        to_operation_id: "revoke_api_key",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/settings/team/invitations", "201"),
        name: "RevokeInvitation",
        to_operation_id: "revoke_invitation",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("get", "/settings/team", "200"),
        name: "ChangeMemberRole",
        to_operation_id: "change_member_role",
        parameter: "user_id",
        expression: "$response.body#/items/0/user_id",
    },
    Link {
        from: ("get", "/settings/team", "200"),
        name: "RemoveMember",
        to_operation_id: "remove_member",
        parameter: "user_id",
        expression: "$response.body#/items/0/user_id",
    },
    Link {
        from: ("post", "/crm/contacts", "201"),
        name: "GetContact",
        to_operation_id: "get_contact",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/contacts", "201"),
        name: "UpdateContact",
        to_operation_id: "update_contact",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/contacts", "201"),
        name: "MergeIntoContact",
        to_operation_id: "merge_contact",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/contacts", "201"),
        name: "DeleteContact",
        to_operation_id: "delete_contact",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/companies", "201"),
        name: "GetCompany",
        to_operation_id: "get_company",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/companies", "201"),
        name: "UpdateCompany",
        to_operation_id: "update_company",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/companies", "201"),
        name: "DeleteCompany",
        to_operation_id: "delete_company",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/custom-fields", "201"),
        name: "DeleteCustomField",
        to_operation_id: "delete_field",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/imports", "201"),
        name: "GetImport",
        to_operation_id: "get_import",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/exports", "201"),
        name: "GetExport",
        to_operation_id: "get_export",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/pipelines", "201"),
        name: "GetPipeline",
        to_operation_id: "get_pipeline",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/pipelines", "201"),
        name: "Board",
        to_operation_id: "board",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/pipelines", "201"),
        name: "Forecast",
        to_operation_id: "forecast",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/pipelines", "201"),
        name: "AddStage",
        to_operation_id: "add_stage",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/pipelines", "201"),
        name: "RenamePipeline",
        to_operation_id: "rename_pipeline",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/deals", "201"),
        name: "GetDeal",
        to_operation_id: "get_deal",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/deals", "201"),
        name: "UpdateDeal",
        to_operation_id: "update_deal",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/deals", "201"),
        name: "MoveDeal",
        to_operation_id: "move_deal",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/crm/deals", "201"),
        name: "DeleteDeal",
        to_operation_id: "delete_deal",
        parameter: "id",
        expression: "$response.body#/id",
    },
];

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` when the API can serve requests.
    pub status: &'static str,
    /// `ok` or `unavailable`.
    pub database: &'static str,
    pub version: &'static str,
}

/// Liveness and readiness: answers 503 when the database does not answer within 2 s.
#[utoipa::path(get, path = "/health", tag = TAG,
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn health(State(state): State<DocsState>) -> Response {
    let ping = tokio::time::timeout(Duration::from_secs(2), sqlx::query("select 1").execute(&state.db)).await;
    let ok = matches!(ping, Ok(Ok(_)));
    if !ok {
        tracing::warn!("health: database unavailable");
    }
    let body = Health {
        status: if ok { "ok" } else { "degraded" },
        database: if ok { "ok" } else { "unavailable" },
        version: env!("CARGO_PKG_VERSION"),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// The whole API as OpenAPI 3.1 JSON.
#[utoipa::path(get, path = "/openapi.json", tag = TAG,
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    let mut response = OPENAPI_JSON.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

/// A browsable API reference page.
#[utoipa::path(get, path = "/docs", tag = TAG,
    responses((status = 200, description = "HTML reference page", content_type = "text/html", body = String)))]
async fn docs() -> Html<&'static str> {
    static PAGE: OnceLock<String> = OnceLock::new();
    Html(PAGE.get_or_init(|| render::page(OPENAPI_JSON)).as_str())
}
