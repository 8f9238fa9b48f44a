//! `api-docs`: `/health` (public, no tenant data), `/openapi.json` (the whole API, as committed)
//! and `/docs`, the API reference: Swagger UI over that document, with "try it" against this
//! API. Its files are bundled into the binary and served under `/docs/` (no CDN, works offline).
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::http::docs::NotFound;
use shared::http::routes::{Access, RouteSpec};
use shared::http::{ApiError, PathId};
use sqlx::PgPool;
use std::time::Duration;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod assets;

/// The whole API's OpenAPI document, generated from the code (`tests/openapi.rs` fails when
/// this committed file and the code disagree; `OPENAPI_WRITE=1` rewrites it).
pub const OPENAPI_JSON: &str = include_str!("../../../openapi.json");

const TAG: &str = "meta";

/// Who may call each route (checked by tests/gates).
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("GET", "/health", Access::Public),
    RouteSpec::new("GET", "/openapi.json", Access::Public),
    RouteSpec::new("GET", "/docs", Access::Public),
    RouteSpec::new("GET", "/docs/{asset}", Access::Public),
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
        .routes(routes!(docs_asset))
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
/// JSON because utoipa 5 writes a link's `operationId` as `operation_id`. Each operation's
/// summary is made one plain line, its Markdown kept in the description ([`split_summary`]).
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
    for item in doc
        .get_mut("paths")
        .and_then(|p| p.as_object_mut())
        .into_iter()
        .flat_map(|p| p.values_mut())
    {
        for op in item.as_object_mut().into_iter().flat_map(|i| i.values_mut()) {
            if let Some(op) = op.as_object_mut() {
                split_summary(op);
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// utoipa makes a handler's whole first doc paragraph the `summary`, Markdown and line breaks
/// included (cms-content's macro gives it as `summary = concat!(..)`). OpenAPI's `summary` is one
/// line of plain text (UIs print it as it is) and `description` is CommonMark (UIs render it).
/// So: when the summary is not one plain line, or is missing, the whole text becomes the
/// description and the summary its lead (see [`lead`]).
fn split_summary(op: &mut serde_json::Map<String, serde_json::Value>) {
    let text = |key: &str| {
        op.get(key)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let summary = text("summary").map(str::to_owned);
    let description = text("description").map(str::to_owned);
    let full = match (summary, description) {
        (Some(s), _) if !s.contains(['\n', '`']) => return,
        (Some(s), Some(d)) => format!("{s}\n\n{d}"),
        (Some(s), None) => s,
        (None, Some(d)) => d,
        (None, None) => return,
    };
    op.insert("summary".to_owned(), serde_json::Value::String(lead(&full)));
    op.insert("description".to_owned(), serde_json::Value::String(full));
}

/// The text up to its first full stop or colon outside parentheses and code, on one line, with
/// code spans in quotes (or bare when they hold quotes): `Create a contact (member). Email...`
/// gives `Create a contact (member)`; `` Rename a pipeline (admin). `If-Match` `` the first part.
fn lead(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(200));
    let (mut depth, mut code) = (0_u32, None::<String>);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let ends_here = chars.peek().is_none_or(|n| n.is_whitespace());
        match (c, code.as_mut()) {
            ('`', Some(span)) => {
                if span.contains('"') {
                    out.push_str(span);
                } else {
                    out.push_str(&format!("\"{span}\""));
                }
                code = None;
            }
            (c, Some(span)) => span.push(c),
            ('`', None) => code = Some(String::new()),
            ('(', None) => {
                depth += 1;
                out.push(c);
            }
            (')', None) => {
                depth = depth.saturating_sub(1);
                out.push(c);
            }
            ('.' | ':', None) if depth == 0 && ends_here => break,
            (c, None) => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
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
    Link {
        from: ("post", "/marketing/templates", "201"),
        name: "GetTemplate",
        to_operation_id: "get_template",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/marketing/templates", "201"),
        name: "UpdateTemplate",
        to_operation_id: "update_template",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/marketing/templates", "201"),
        name: "DeleteTemplate",
        to_operation_id: "delete_template",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/marketing/segments", "201"),
        name: "GetSegment",
        to_operation_id: "get_segment",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/marketing/segments", "201"),
        name: "UpdateSegment",
        to_operation_id: "update_segment",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/marketing/segments", "201"),
        name: "CountSegment",
        to_operation_id: "count_segment",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/marketing/segments", "201"),
        name: "DeleteSegment",
        to_operation_id: "delete_segment",
        parameter: "id",
        expression: "$response.body#/id",
    },
    Link {
        from: ("post", "/marketing/suppressions", "201"),
        name: "RemoveSuppression",
        to_operation_id: "remove_suppression",
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
    responses((status = 200, description = "The API and its database answer", body = Health),
        (status = 503, description = "The database did not answer within 2 s", body = Health)))]
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

/// The whole API as OpenAPI 3.1 JSON (gzip-encoded when the request's `Accept-Encoding`
/// allows it).
#[utoipa::path(get, path = "/openapi.json", tag = TAG,
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi_json(headers: HeaderMap) -> Result<Response, ApiError> {
    assets::OPENAPI.response_cached(&headers, "public, max-age=300")
}

/// The API reference: Swagger UI over `/openapi.json`, with "try it" against this API.
#[utoipa::path(get, path = "/docs", tag = TAG,
    responses((status = 200, description = "HTML reference page", content_type = "text/html", body = String)))]
async fn docs() -> Response {
    let mut response = Html(assets::PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(assets::CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct AssetPath {
    /// A file of the reference page.
    #[param(schema_with = asset_names)]
    asset: String,
}

/// The names `/docs/{asset}` serves, from the bundled table.
fn asset_names() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(assets::ASSETS.iter().map(|a| a.name)))
        .build()
}

/// A file of the reference page (Swagger UI's script and style, the page's start script),
/// gzip-encoded when the request's `Accept-Encoding` allows it.
#[utoipa::path(get, path = "/docs/{asset}", tag = TAG, params(AssetPath),
    responses((status = 200, description = "The file", content((String = "text/javascript"), (String = "text/css"))),
        NotFound))]
async fn docs_asset(PathId(AssetPath { asset }): PathId<AssetPath>, headers: HeaderMap) -> Result<Response, ApiError> {
    assets::find(&asset)
        .ok_or(ApiError::from(shared::domain::DomainError::NotFound))?
        .response(&headers)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::{Value, json};

    fn split(op: Value) -> Value {
        let mut op = op.as_object().unwrap().clone();
        super::split_summary(&mut op);
        Value::Object(op)
    }

    #[test]
    fn a_plain_one_line_summary_is_kept() {
        let op = json!({"summary": "Create a tenant; the caller becomes its owner."});
        assert_eq!(split(op.clone()), op);
    }

    #[test]
    fn a_markdown_summary_becomes_the_description_and_its_first_sentence_the_summary() {
        let op = split(json!({"summary": "Create a contact (member). Email is unique (409\n`email_exists`)."}));
        assert_eq!(op["summary"], "Create a contact (member)");
        assert_eq!(
            op["description"],
            "Create a contact (member). Email is unique (409\n`email_exists`)."
        );
    }

    #[test]
    fn the_lead_ends_at_a_full_stop_or_colon_outside_parentheses_and_code() {
        assert_eq!(super::lead("Companies: search (`q`: names\nand domains)."), "Companies");
        assert_eq!(
            super::lead("Pages (`filter`: one path; e.g. a `utm_*`: none). More."),
            "Pages (\"filter\": one path; e.g. a \"utm_*\": none)"
        );
        assert_eq!(
            super::lead("Import from a CSV (`source: \"csv\"`, the default) or Zoho"),
            "Import from a CSV (source: \"csv\", the default) or Zoho"
        );
        assert_eq!(
            super::lead("Rename a pipeline (admin). `If-Match` optional."),
            "Rename a pipeline (admin)"
        );
        assert_eq!(super::lead("Version 1.2 of the `a.b`: x"), "Version 1.2 of the \"a.b\"");
    }

    #[test]
    fn a_description_without_summary_gets_one() {
        let op = split(json!({"description": "The tenant's pages (filters: site, status). Newest first."}));
        assert_eq!(op["summary"], "The tenant's pages (filters: site, status)");
        assert_eq!(
            op["description"],
            "The tenant's pages (filters: site, status). Newest first."
        );
    }

    #[test]
    fn a_summary_and_a_description_are_kept_together() {
        let op = split(json!({"summary": "Move a deal\nbetween two.", "description": "More."}));
        assert_eq!(op["summary"], "Move a deal between two");
        assert_eq!(op["description"], "Move a deal\nbetween two.\n\nMore.");
    }
}
