//! The committed OpenAPI document is the code's, and the docs routes serve it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::Value;
use testkit::{TestDb, get};

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
        connectors::openapi(),
        connector_webhook::openapi(),
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
            let public = ["/health", "/openapi.json", "/docs", "/analytics/collect"].contains(&path.as_str())
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
    let r = get("/docs").send(&router).await;
    assert_eq!(r.status, 200);
    assert!(r.content_type().starts_with("text/html"));
    assert!(r.text.contains("/settings/team/members/{user_id}"));
    get("/nope").send(&router).await.problem(404);
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
