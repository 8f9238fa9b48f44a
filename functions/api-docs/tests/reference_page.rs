//! The reference page in a real browser: the api-docs router serves on a local port, headless
//! Chromium loads `/docs` (only from that port: the page must work with no internet), and every
//! tag and operation of openapi.json is in the rendered DOM, with its summary; Markdown is
//! rendered; "try it" on one operation calls this origin and shows the answer.
//!
//! Needs Chromium (Debian: `apt-get install chromium`; or set `CHROMIUM` to a binary). Without
//! it the test says it is skipped; under CI (`CI` set) it fails instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Chromium to run, or `None` after saying the test is skipped (a panic under CI: a run
/// that checked nothing must not pass there).
fn chromium() -> Option<String> {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let candidates: Vec<String> = std::env::var("CHROMIUM")
        .into_iter()
        .chain(["chromium", "chromium-browser", "google-chrome"].map(String::from))
        .collect();
    for candidate in &candidates {
        let works = Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if works {
            return Some(candidate.clone());
        }
    }
    if ci {
        panic!("no Chromium found (tried {candidates:?}) and CI is set: the reference page would not be checked");
    }
    eprintln!(
        "SKIPPED: no Chromium found (tried {candidates:?}); install it (Debian: apt-get install chromium) or set CHROMIUM"
    );
    None
}

/// Loads `url` in headless Chromium and returns the DOM once the page has settled (virtual
/// time: timers run fast, network fetches are waited for).
fn dump_dom(chromium: &str, url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("api-docs-chromium-{}", uuid::Uuid::new_v4().simple()));
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-sync",
            "--disable-background-networking",
            "--disable-component-update",
            "--virtual-time-budget=30000",
            // A window tall enough for every operation: the page renders operations as they
            // come into view (a user scrolls; the test sees them all at once).
            "--window-size=1280,60000",
            // No internet: any host but this machine fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish loading {url} within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dom = out.join().unwrap().unwrap_or_default();
    let log = err.join().unwrap().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        status.success() && !dom.is_empty(),
        "chromium failed on {url} ({status}):\n{log}"
    );
    dom
}

/// Serves `router` on 127.0.0.1 (a free port) for the rest of the test; answers its origin.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    origin
}

/// The api-docs router with a database that is never there: the page needs none.
fn docs_router() -> Router {
    let pool = shared::adapters::pg::pool("postgres://nobody:x@127.0.0.1:1/none", 1).unwrap();
    api_docs::router(api_docs::DocsState { db: pool })
}

/// Swagger UI's id of an element: as in its `escapeDeepLinkPath` (white space to `_`).
fn ui_id(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join("_")
}

/// The rendered operation block (`<div class="opblock ..." id="...">`) with this element id,
/// up to the next one.
fn block<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!(" id=\"{id}\""))?;
    let start = dom[..at].rfind("<div")?;
    let end = dom[at..].find("class=\"opblock opblock-").map_or(dom.len(), |e| at + e);
    Some(&dom[start..end])
}

fn html_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// (tag, operationId, method, path, operation) of every operation of the document.
fn operations(doc: &Value) -> Vec<(&str, &str, &str, &str, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let tag = op["tags"][0].as_str().unwrap();
            ops.push((
                tag,
                op["operationId"].as_str().unwrap(),
                method.as_str(),
                path.as_str(),
                op,
            ));
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tag_and_operation_renders_in_a_browser_and_try_it_calls_this_api() {
    let Some(chromium) = chromium() else { return };
    let doc: Value = serde_json::from_str(api_docs::OPENAPI_JSON).unwrap();
    // An operation whose description has Markdown code spans: the test page opens it too.
    let (md_tag, md_id, md_code) = operations(&doc)
        .into_iter()
        .find_map(|(tag, id, _, _, op)| {
            let code = op["description"].as_str()?.split('`').nth(1)?.to_owned();
            Some((tag, id, code))
        })
        .expect("an operation whose description has `code`");
    let md_element = format!("operations-{}-{}", ui_id(md_tag), ui_id(md_id));
    let script = try_it_script(&md_element);

    // The docs router as deployed, plus a test page: /docs with a script that clicks as a user
    // would (same CSP as /docs: 'self' only).
    let with_clicks = api_docs::assets::PAGE.replace("</body>", "<script src=\"try.js\"></script></body>");
    let router = Router::new()
        .route(
            "/try",
            get(move || async move {
                let mut r = Html(with_clicks).into_response();
                r.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(api_docs::assets::CONTENT_SECURITY_POLICY),
                );
                r
            }),
        )
        .route(
            "/try.js",
            get(move || async move { ([(header::CONTENT_TYPE, "text/javascript")], script) }),
        )
        .fallback_service(docs_router());
    let origin = serve(router).await;

    let url = format!("{origin}/docs");
    let dom = tokio::task::spawn_blocking({
        let chromium = chromium.clone();
        move || dump_dom(&chromium, &url)
    })
    .await
    .unwrap();
    assert!(
        dom.contains("class=\"swagger-ui\""),
        "Swagger UI did not start:\n{}",
        &dom[..dom.len().min(3000)]
    );

    // "Try it" targets this origin (the document names no servers).
    assert!(
        dom.contains(&format!("<option value=\"{origin}\"")),
        "the servers list is not this origin"
    );
    // Markdown is rendered: the info description's `code` spans are <code>, not backticks.
    assert!(
        dom.contains("<code>Authorization: Bearer &lt;JWT&gt;</code>"),
        "Markdown is not rendered"
    );
    assert!(!dom.contains("`Authorization"), "raw Markdown is shown");

    let mut missing = Vec::new();
    let mut tags: Vec<&str> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (tag, id, method, path, op) in operations(&doc) {
        if !tags.contains(&tag) {
            tags.push(tag);
        }
        // Swagger UI's element id of an operation: its tag and operationId.
        let element = format!("operations-{}-{}", ui_id(tag), ui_id(id));
        assert!(
            !ids.contains(&element),
            "two operations of tag {tag} are both {id}: the page would show one"
        );
        ids.push(element.clone());
        let summary = op["summary"].as_str().unwrap_or_default();
        let Some(b) = block(&dom, &element) else {
            missing.push(format!("{method} {path} ({tag} / {id}): no operation block"));
            continue;
        };
        if !b.contains(&format!("class=\"opblock opblock-{method}")) || !b.contains(&format!("data-path=\"{path}\"")) {
            missing.push(format!(
                "{method} {path}: the block of {tag} / {id} shows another operation"
            ));
        }
        if !summary.is_empty() && !b.contains(&format!(">{}<", html_text(summary))) {
            missing.push(format!("{method} {path}: summary {summary:?} not shown"));
        }
        if !b.contains(&format!("opblock-summary-operation-id\">{id}<")) {
            missing.push(format!("{method} {path}: operationId {id} not shown"));
        }
    }
    for tag in &tags {
        if !dom.contains(&format!("id=\"operations-tag-{}\"", ui_id(tag))) {
            missing.push(format!("tag {tag} not shown"));
        }
    }
    assert!(missing.is_empty(), "not rendered:\n{}", missing.join("\n"));

    // Try it: the answer of GET /openapi.json, fetched from this origin, is on the page; and an
    // opened operation's description is rendered Markdown.
    let url = format!("{origin}/try");
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chromium, &url))
        .await
        .unwrap();
    let op = block(&dom, "operations-meta-openapi_json").expect("the openapi.json operation");
    assert!(
        op.contains(&format!("{origin}/openapi.json")),
        "the request URL is not this origin:\n{op}"
    );
    assert!(op.contains("live-responses-table"), "no live response shown:\n{op}");
    assert!(
        op.contains("response-col_status\">200<"),
        "the call did not answer 200:\n{op}"
    );
    let op = block(&dom, &md_element).expect("the operation with Markdown");
    let code = format!("<code>{}</code>", html_text(&md_code));
    assert!(op.contains(&code), "{md_element}: no {code} in its description:\n{op}");
}

/// Opens GET /openapi.json, presses "Try it out" then "Execute", and opens the operation with
/// element id `markdown`, as a user would.
fn try_it_script(markdown: &str) -> String {
    format!(
        r#""use strict";
(function () {{
  var steps = [
    ["operations-meta-openapi_json", ".opblock-summary-control"],
    ["operations-meta-openapi_json", ".try-out__btn"],
    ["operations-meta-openapi_json", ".execute"],
    ["{markdown}", ".opblock-summary-control"]
  ];
  var timer = setInterval(function () {{
    if (steps.length === 0) {{ clearInterval(timer); return; }}
    var op = document.getElementById(steps[0][0]);
    var button = op && op.querySelector(steps[0][1]);
    if (button) {{ button.click(); steps.shift(); }}
  }}, 100);
}})();
"#
    )
}
