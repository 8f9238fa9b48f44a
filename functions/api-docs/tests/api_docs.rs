//! The committed OpenAPI document is the code's, and the docs routes serve it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use axum::http::header;
use serde_json::Value;
use testkit::{TestDb, get};
use tower::ServiceExt;

/// Every HTTP function's document. A new function adds itself here.
fn documents() -> Vec<utoipa::openapi::OpenApi> {
    vec![
        settings::openapi(),
        billing::openapi(),
        analytics_collect::openapi(),
        analytics_query::openapi(),
        ecommerce::openapi(),
        crm_contacts::openapi(),
        crm_deals::openapi(),
        marketing_campaigns::openapi(),
        connectors::openapi(),
        connector_webhook::openapi(),
        email_events::openapi(),
        stripe_webhook::openapi(),
        cms_content::pages::openapi(),
        cms_content::posts::openapi(),
        cms_public::openapi(),
        cms_media::openapi(),
        api_docs::openapi(),
    ]
}

/// The documents merged, with links.
fn document() -> String {
    api_docs::document_json(documents())
}

/// Two functions' schemas of one name would merge into one (the later wins silently), and the
/// other function's responses would be checked against the wrong shape.
#[test]
fn no_two_functions_define_a_schema_of_the_same_name_differently() {
    let mut seen: std::collections::BTreeMap<String, Value> = std::collections::BTreeMap::new();
    for doc in documents() {
        let doc = serde_json::to_value(doc).unwrap();
        for (name, schema) in doc["components"]["schemas"].as_object().into_iter().flatten() {
            if let Some(before) = seen.insert(name.clone(), schema.clone()) {
                assert_eq!(&before, schema, "two different schemas are named {name}: rename one");
            }
        }
    }
}

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.json");

/// Fails when openapi.json and the code disagree. Regenerate with
/// `OPENAPI_WRITE=1 cargo nextest run -p api-docs openapi_document_matches_the_code`.
#[test]
fn openapi_document_matches_the_code() {
    let generated = document();
    if std::env::var("OPENAPI_WRITE").is_ok_and(|v| v == "1") {
        std::fs::write(COMMITTED, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap();
    assert!(
        committed == generated,
        "openapi.json is out of date with the code: run `OPENAPI_WRITE=1 cargo nextest run -p api-docs openapi_document_matches_the_code` and commit it"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_describes_every_route_with_problems() {
    let doc: Value = serde_json::from_str(api_docs::OPENAPI_JSON).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path} documents no response");
            // Public routes (the collect endpoint and site content are keyed by a site key) and signed webhooks
            // carry no bearer credential.
            let public = [
                "/health",
                "/openapi.json",
                "/docs",
                "/docs/{asset}",
                "/analytics/collect",
            ]
            .contains(&path.as_str())
                || path.starts_with("/webhooks/")
                || path.starts_with("/public/");
            if !public {
                assert!(responses.contains_key("401"), "{method} {path} must document 401");
                assert!(op["security"].is_array(), "{method} {path} must declare its security");
            }
        }
    }
}

#[test]
fn every_link_joins_two_documented_operations() {
    let doc: Value = serde_json::from_str(api_docs::OPENAPI_JSON).unwrap();
    let ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    for link in api_docs::LINKS {
        let (method, path, status) = link.from;
        let placed = &doc["paths"][path][method]["responses"][status]["links"][link.name];
        assert!(placed.is_object(), "link {} is not in the document", link.name);
        assert!(
            ids.contains(&link.to_operation_id),
            "link {} targets unknown {}",
            link.name,
            link.to_operation_id
        );
    }
}

#[tokio::test]
async fn health_openapi_and_docs_answer() {
    let db = TestDb::new().await;
    let router = api_docs::router(api_docs::DocsState { db: db.app.clone() });
    let r = get("/health").send(&router).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["database"], "ok");
    let r = get("/openapi.json").send(&router).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "application/json");
    assert_eq!(r.json["info"]["title"], "Client Portal API");
    // Gzipped for clients that take it, the same document inflated.
    let (status, headers, gz) = raw(&router, "/openapi.json", Some("gzip, deflate")).await;
    assert_eq!(status, 200);
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    assert!(
        gz.len() * 5 < api_docs::OPENAPI_JSON.len(),
        "{} bytes gzipped",
        gz.len()
    );
    let mut inflated = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut inflated).unwrap();
    assert_eq!(inflated, api_docs::OPENAPI_JSON);
    let r = get("/docs").send(&router).await;
    assert_eq!(r.status, 200);
    assert!(r.content_type().starts_with("text/html"));
    assert!(r.text.contains("docs/swagger-ui-bundle.js?v="), "{}", r.text);
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    get("/nope").send(&router).await.problem(404);
}

/// Sends GET `path` and returns the status, headers and raw body (assets are bytes, maybe gzip).
async fn raw(router: &axum::Router, path: &str, accept_encoding: Option<&str>) -> (u16, http::HeaderMap, Vec<u8>) {
    let mut request = http::Request::get(path);
    if let Some(value) = accept_encoding {
        request = request.header(header::ACCEPT_ENCODING, value);
    }
    let response = router
        .clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, body.to_vec())
}

#[tokio::test]
async fn the_page_assets_are_bundled_and_gzipped_for_clients_that_accept_it() {
    let pool = shared::adapters::pg::pool("postgres://nobody:x@127.0.0.1:1/none", 1).unwrap();
    let router = api_docs::router(api_docs::DocsState { db: pool });
    for (name, content_type, starts) in [
        ("swagger-ui-bundle.js", "text/javascript", "/*! For license information"),
        ("swagger-ui.css", "text/css", ".swagger-ui"),
        ("docs.js", "text/javascript", "// Starts Swagger UI"),
    ] {
        let path = format!("/docs/{name}?v=1");
        let (status, headers, gz) = raw(&router, &path, Some("gzip, deflate, br")).await;
        assert_eq!(status, 200, "{name}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{name}"
        );
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip", "{name}");
        assert_eq!(headers[header::VARY], "accept-encoding", "{name}");
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "{name} is not gzip");

        let (status, headers, plain) = raw(&router, &path, Some("identity")).await;
        assert_eq!(status, 200, "{name}");
        assert!(headers.get(header::CONTENT_ENCODING).is_none(), "{name}");
        assert!(
            plain.starts_with(starts.as_bytes()),
            "{name} starts {:?}",
            String::from_utf8_lossy(&plain[..40])
        );
        let mut inflated = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut inflated).unwrap();
        assert_eq!(inflated, plain, "{name}: the gzip and the plain file differ");
        let (_, headers, _) = raw(&router, &path, None).await;
        assert!(headers.get(header::CONTENT_ENCODING).is_none(), "{name}");
    }
    let (status, headers, _) = raw(&router, "/docs/nope.js", Some("gzip")).await;
    assert_eq!(status, 404);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    let (status, _, _) = raw(&router, "/docs/..%2Fopenapi.json", Some("gzip")).await;
    assert_eq!(status, 404);
}

/// The names of the services the API calls (Stripe and the connector kinds).
const PROVIDERS: &[&str] = &[
    "stripe",
    "shopify",
    "woocommerce",
    "wordpress",
    "zoho",
    "sendgrid",
    "mailgun",
    "linkedin",
    "facebook",
    "openai",
];

/// The problem sets of `shared::http::docs` are listed by operations of many functions, most of
/// which call no provider: their descriptions must be true of every route, so name none (an
/// operation's own responses may).
#[test]
fn the_shared_problem_descriptions_name_no_provider() {
    use shared::http::docs::*;
    use utoipa::IntoResponses;
    let sets = [
        ("AuthProblems", AuthProblems::responses()),
        ("TenantProblems", TenantProblems::responses()),
        ("BodyProblems", BodyProblems::responses()),
        ("ListProblems", ListProblems::responses()),
        ("Forbidden", Forbidden::responses()),
        ("NotFound", NotFound::responses()),
        ("Conflict", Conflict::responses()),
        ("ProviderProblems", ProviderProblems::responses()),
        ("Gone", Gone::responses()),
        ("PreconditionFailed", PreconditionFailed::responses()),
        ("SignatureProblems", SignatureProblems::responses()),
        ("WebhookProblems", WebhookProblems::responses()),
        ("PlanLimit", PlanLimit::responses()),
        ("Upstream", Upstream::responses()),
    ];
    for (set, responses) in sets {
        for (status, response) in responses {
            let description = serde_json::to_value(response).unwrap()["description"]
                .as_str()
                .unwrap()
                .to_lowercase();
            let named: Vec<&&str> = PROVIDERS.iter().filter(|p| description.contains(**p)).collect();
            assert!(named.is_empty(), "{set} {status}: {description:?} names {named:?}");
        }
    }
}

/// Every operation has a `summary`, one line of plain text (UIs print it as is); Markdown goes
/// in `description`. (utoipa reads no `#[doc = concat!(..)]`: a macro's operations say
/// `summary = concat!(..)` in their `#[utoipa::path]`.)
#[test]
fn every_summary_is_one_plain_line() {
    let doc: Value = serde_json::from_str(api_docs::OPENAPI_JSON).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let summary = op["summary"].as_str().unwrap_or_default();
            assert!(!summary.trim().is_empty(), "{method} {path} has no summary");
            assert!(
                !summary.contains(['\n', '`']),
                "{method} {path}: summary {summary:?} is not plain"
            );
        }
    }
}

/// Pages are the portal's own (only posts can be a connected WordPress site's): no operation of
/// theirs calls a provider, so none documents a provider's failure. And every status of the
/// pages' and posts' operations has a description of its own.
#[test]
fn the_pages_operations_document_no_provider_failure() {
    let doc: Value = serde_json::from_str(api_docs::OPENAPI_JSON).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/cms/pages") {
                assert!(!responses.contains_key("502"), "{method} {path} documents a 502");
            }
            // cms-content's operations say what each status means for them.
            if path.starts_with("/cms/pages") || path.starts_with("/cms/posts") {
                for (status, response) in responses {
                    let described = response["description"].as_str().unwrap_or_default();
                    assert!(
                        !described.trim().is_empty(),
                        "{method} {path} {status} has no description"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn health_says_503_when_the_database_is_down() {
    let pool = shared::adapters::pg::pool("postgres://nobody:x@127.0.0.1:1/none", 1).unwrap();
    let router = api_docs::router(api_docs::DocsState { db: pool });
    let r = get("/health").send(&router).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json["database"], "unavailable");
}

/// The events/ files are what `cargo lambda invoke --data-file` sends; they drive the router too.
#[tokio::test]
async fn the_events_files_drive_the_router() {
    let db = TestDb::new().await;
    let router = api_docs::router(api_docs::DocsState { db: db.app.clone() });
    let r = testkit::send(&router, testkit::event_request("api-docs/get-health.json")).await;
    assert_eq!(r.status, 200, "{}", r.text);
}
