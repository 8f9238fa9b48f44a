//! cms-posts with a connected WordPress site, against a faithful fake of the WordPress REST API
//! (wiremock with state: posts with ids, slugs made unique, `modified_gmt` moving on every
//! write, `context=edit` raw fields, `_embed` terms, `modified_after` paging, application-password
//! Basic auth, `force=true` deletes, WordPress's error bodies). Covers create, list (pull), edit,
//! publish (now and `future`), unpublish, delete, a change made on WordPress meanwhile (409,
//! nothing overwritten, the mirror takes WordPress's version), and a site that is down (502 with
//! its reason, nothing changed here).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use axum::Router;
use base64::Engine;
use serde_json::{Value, json};
use shared::domain::Scope;
use shared::services::connectors::catalog::Kind as ConnectorKind;
use shared::services::providers::wordpress::Wordpress;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use testkit::{Resp, TestApp, TestUser, delete, get, patch, post};
use uuid::Uuid;
use wiremock::{Request, Respond, ResponseTemplate};

const USER: &str = "editor";
const APP_PASSWORD: &str = "abcd efgh ijkl mnop qrst uvwx";

/// The WordPress site: its posts by id, a clock of seconds for `modified_gmt`.
#[derive(Default)]
struct Site {
    posts: Mutex<BTreeMap<i64, Value>>,
    next_id: AtomicI64,
    clock: AtomicI64,
    down: AtomicBool,
    writes: AtomicI64,
}

fn wp_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"code": code, "message": message, "data": {"status": status}}))
}

impl Site {
    fn tick(&self) -> String {
        let t = 1_795_000_000 + self.clock.fetch_add(1, Ordering::SeqCst);
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    }

    fn unique_slug(posts: &BTreeMap<i64, Value>, id: i64, wanted: &str) -> String {
        let taken = |s: &str| posts.iter().any(|(k, p)| *k != id && p["slug"] == s);
        if !taken(wanted) {
            return wanted.to_owned();
        }
        (2..).map(|n| format!("{wanted}-{n}")).find(|s| !taken(s)).unwrap()
    }

    /// A change made on the WordPress side (another editor in wp-admin).
    fn edit_there(&self, id: i64, title: &str) {
        let modified = self.tick();
        let mut posts = self.posts.lock().unwrap();
        let p = posts.get_mut(&id).unwrap();
        p["title"] = json!({"raw": title, "rendered": title});
        p["modified_gmt"] = json!(modified);
    }

    fn apply(&self, posts: &mut BTreeMap<i64, Value>, id: i64, body: &Value) {
        let modified = self.tick();
        let p = posts.get_mut(&id).unwrap();
        if let Some(t) = body.get("title").and_then(Value::as_str) {
            p["title"] = json!({"raw": t, "rendered": t});
        }
        if let Some(c) = body.get("content").and_then(Value::as_str) {
            p["content"] = json!({"raw": c, "rendered": c});
        }
        if let Some(e) = body.get("excerpt").and_then(Value::as_str) {
            p["excerpt"] = json!({"raw": e, "rendered": format!("<p>{e}</p>\n")});
        }
        if let Some(s) = body.get("status").and_then(Value::as_str) {
            p["status"] = json!(s);
            if s == "publish" && p["date_gmt"].is_null() {
                p["date_gmt"] = json!(modified);
            }
        }
        if let Some(d) = body.get("date_gmt").and_then(Value::as_str) {
            p["date_gmt"] = json!(d);
        }
        p["modified_gmt"] = json!(modified);
        let wanted = body.get("slug").and_then(Value::as_str).map(str::to_owned);
        if let Some(wanted) = wanted {
            let slug = Self::unique_slug(posts, id, &wanted);
            posts.get_mut(&id).unwrap()["slug"] = json!(slug);
        }
    }
}

struct Fake(Arc<Site>);

impl Respond for Fake {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let site = &self.0;
        if site.down.load(Ordering::SeqCst) {
            return wp_error(
                503,
                "maintenance",
                "Briefly unavailable for scheduled maintenance. Check back in a minute.",
            );
        }
        // WordPress compares application passwords without their spaces.
        let given = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .map(|s| s.replace(' ', ""));
        if given.as_deref() != Some(format!("{USER}:{}", APP_PASSWORD.replace(' ', "")).as_str()) {
            return wp_error(401, "rest_not_logged_in", "You are not currently logged in.");
        }
        let path = request.url.path().trim_end_matches('/').to_owned();
        let query: BTreeMap<String, String> = request.url.query_pairs().into_owned().collect();
        let id: Option<i64> = path.strip_prefix("/wp-json/wp/v2/posts/").and_then(|s| s.parse().ok());
        let method = request.method.as_str();
        let mut posts = site.posts.lock().unwrap();
        let with_terms = |p: &Value| {
            let mut p = p.clone();
            if query.contains_key("_embed") {
                let cats: Vec<Value> = p["categories_names"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| json!({"taxonomy": "category", "name": n}))
                    .collect();
                p["_embedded"] = json!({"wp:term": [cats, []]});
            }
            p
        };
        match (method, id) {
            ("GET", None) => {
                let after = query.get("modified_after").cloned().unwrap_or_default();
                let mut all: Vec<&Value> = posts
                    .values()
                    .filter(|p| p["modified_gmt"].as_str().unwrap() > after.as_str())
                    .collect();
                all.sort_by_key(|p| p["modified_gmt"].as_str().unwrap().to_owned());
                let per_page: usize = query.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(10);
                let page: usize = query.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
                let out: Vec<Value> = all
                    .into_iter()
                    .skip((page - 1) * per_page)
                    .take(per_page)
                    .map(with_terms)
                    .collect();
                ResponseTemplate::new(200).set_body_json(out)
            }
            ("POST", None) => {
                site.writes.fetch_add(1, Ordering::SeqCst);
                let body: Value = serde_json::from_slice(&request.body).unwrap();
                let id = 100 + site.next_id.fetch_add(1, Ordering::SeqCst);
                posts.insert(
                    id,
                    json!({"id": id, "date_gmt": null, "slug": "", "status": "draft",
                    "title": {"raw": ""}, "content": {"raw": ""}, "excerpt": {"raw": ""}, "categories_names": []}),
                );
                let mut body = body;
                if body.get("slug").is_none_or(Value::is_null) {
                    body["slug"] = json!(
                        body["title"]
                            .as_str()
                            .unwrap_or_default()
                            .to_lowercase()
                            .replace(' ', "-")
                    );
                }
                site.apply(&mut posts, id, &body);
                ResponseTemplate::new(201).set_body_json(posts[&id].clone())
            }
            (_, Some(id)) if !posts.contains_key(&id) => wp_error(404, "rest_post_invalid_id", "Invalid post ID."),
            ("GET", Some(id)) => ResponseTemplate::new(200).set_body_json(with_terms(&posts[&id])),
            ("POST", Some(id)) => {
                site.writes.fetch_add(1, Ordering::SeqCst);
                let body: Value = serde_json::from_slice(&request.body).unwrap();
                site.apply(&mut posts, id, &body);
                ResponseTemplate::new(200).set_body_json(posts[&id].clone())
            }
            ("DELETE", Some(id)) => {
                site.writes.fetch_add(1, Ordering::SeqCst);
                if query.get("force").map(String::as_str) != Some("true") {
                    return wp_error(
                        501,
                        "rest_trash_not_supported",
                        "Posts do not support trashing. Set force to true.",
                    );
                }
                let previous = posts.remove(&id).unwrap();
                ResponseTemplate::new(200).set_body_json(json!({"deleted": true, "previous": previous}))
            }
            _ => wp_error(
                404,
                "rest_no_route",
                "No route was found matching the URL and request method.",
            ),
        }
    }
}

struct World {
    app: TestApp,
    posts: Router,
    owner: TestUser,
    tenant: Uuid,
    site: Uuid,
    wp: Arc<Site>,
    _server: wiremock::MockServer,
}

async fn world() -> World {
    let app = TestApp::new().await;
    let owner = app.user("Ada Editor").await;
    let tenant = app.tenant(&owner).await;
    let server = wiremock::MockServer::start().await;
    let wp = Arc::new(Site::default());
    wiremock::Mock::given(wiremock::matchers::path_regex("^/wp-json/"))
        .respond_with(Fake(wp.clone()))
        .mount(&server)
        .await;
    // The WordPress site is registered as a site of the portal (its domain).
    let (site, _) = app.site(tenant, "127.0.0.1").await;
    let connectors = testkit::connectors(&app.core.db, []);
    let scope = Scope::worker(tenant, &format!("user:{}", owner.id), "test".into());
    let fields = json!({"site_url": server.uri(), "username": USER, "application_password": APP_PASSWORD});
    connectors
        .put(
            &scope,
            ConnectorKind::Wordpress,
            fields.as_object().unwrap().clone(),
            None,
        )
        .await
        .unwrap();
    let wordpress = Wordpress {
        connectors,
        media_base: "https://media.example.com".to_owned(),
    };
    World {
        posts: cms_content::posts::router(app.core.clone(), Some(wordpress)),
        app,
        owner,
        tenant,
        site,
        wp,
        _server: server,
    }
}

impl World {
    async fn send(&self, r: testkit::Req) -> Resp {
        r.bearer(&self.owner.token).tenant(self.tenant).send(&self.posts).await
    }

    fn wp_post(&self, id: &str) -> Value {
        self.wp.posts.lock().unwrap()[&id.parse::<i64>().unwrap()].clone()
    }
}

#[tokio::test]
async fn posts_are_the_wordpress_sites_and_are_mirrored() {
    let w = world().await;
    let r = w
        .send(
            post("/cms/posts").json(json!({"site_id": w.site, "title": "Hello world", "excerpt": "First",
            "body": [{"type": "heading", "level": 2, "text": "Hi & welcome"},
                     {"type": "rich_text", "content": [{"type": "paragraph", "spans": [{"text": "We are live."}]}]}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["source"], "wordpress");
    assert_eq!(r.json["status"], "draft");
    assert_eq!(
        r.json["body"][0]["type"], "heading",
        "the blocks written here stay blocks"
    );
    let external = r.json["external_id"].as_str().unwrap().to_owned();
    let id = r.json["id"].as_str().unwrap().to_owned();
    let on_wp = w.wp_post(&external);
    assert_eq!(on_wp["status"], "draft");
    assert_eq!(on_wp["title"]["raw"], "Hello world");
    assert_eq!(
        on_wp["content"]["raw"],
        "<h2>Hi &amp; welcome</h2>\n<p>We are live.</p>\n"
    );

    // Edit here: WordPress gets it.
    let r = w
        .send(patch(&format!("/cms/posts/{id}")).json(json!({"title": "Hello, world"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(w.wp_post(&external)["title"]["raw"], "Hello, world");
    assert_eq!(r.json["revision"], 2);

    // Publish now: published there and here, and live.
    let r = w.send(post(&format!("/cms/posts/{id}/publish")).json(json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(w.wp_post(&external)["status"], "publish");
    assert_eq!(r.json["status"], "published");
    assert_eq!(r.json["live_slug"], "hello-world");

    // A post written in wp-admin shows up in the list, with its HTML and categories.
    {
        let modified = w.wp.tick();
        w.wp.posts.lock().unwrap().insert(
            7,
            json!({"id": 7, "date_gmt": modified, "modified_gmt": modified, "slug": "from-wp-admin", "status": "publish",
                "title": {"raw": "From wp-admin"}, "content": {"raw": "<p>Written <em>there</em>.</p>"},
                "excerpt": {"raw": "", "rendered": "<p>Written there&hellip;</p>\n"}, "categories_names": ["News"]}),
        );
    }
    let r = w.send(get("/cms/posts")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let titles: Vec<&str> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(titles.contains(&"From wp-admin"));
    let mirrored = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "From wp-admin")
        .unwrap();
    let m = w
        .send(get(&format!("/cms/posts/{}", mirrored["id"].as_str().unwrap())))
        .await;
    assert_eq!(
        m.json["body"],
        json!([{"type": "html", "html": "<p>Written <em>there</em>.</p>"}])
    );
    assert_eq!(m.json["categories"], json!(["news"]));
    assert_eq!(m.json["excerpt"], "Written there…");
    assert_eq!(m.json["status"], "published");
    // Listing again reads nothing new and changes nothing.
    let writes = w.wp.writes.load(Ordering::SeqCst);
    let again = w.send(get("/cms/posts")).await;
    assert_eq!(again.json["items"].as_array().unwrap().len(), 2);
    assert_eq!(w.wp.writes.load(Ordering::SeqCst), writes);
    assert_eq!(
        w.send(get(&format!("/cms/posts/{}", mirrored["id"].as_str().unwrap())))
            .await
            .json["revision"],
        1
    );

    // Schedule: WordPress's `future` status, mirrored as scheduled.
    let at = chrono::Utc::now() + chrono::Duration::days(2);
    let r = w
        .send(post(&format!("/cms/posts/{id}/unpublish")).json(json!({"status": "draft"})))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json["status"].as_str()),
        (200, Some("draft")),
        "{}",
        r.text
    );
    let r = w
        .send(post(&format!("/cms/posts/{id}/publish")).json(json!({"at": at})))
        .await;
    assert_eq!(r.json["status"], "scheduled", "{}", r.text);
    assert_eq!(w.wp_post(&external)["status"], "future");
    assert_eq!(
        w.wp_post(&external)["date_gmt"],
        at.format("%Y-%m-%dT%H:%M:%S").to_string()
    );

    // Delete: gone there (for good) and here.
    assert_eq!(w.send(delete(&format!("/cms/posts/{id}"))).await.status, 204);
    assert!(
        !w.wp
            .posts
            .lock()
            .unwrap()
            .contains_key(&external.parse::<i64>().unwrap())
    );
    assert_eq!(w.send(get(&format!("/cms/posts/{id}"))).await.status, 404);
}

#[tokio::test]
async fn a_change_made_on_wordpress_meanwhile_is_reported_not_overwritten() {
    let w = world().await;
    let r = w
        .send(post("/cms/posts").json(json!({"site_id": w.site, "title": "Draft"})))
        .await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    let external: i64 = r.json["external_id"].as_str().unwrap().parse().unwrap();
    w.wp.edit_there(external, "Edited in wp-admin");

    let r = w
        .send(patch(&format!("/cms/posts/{id}")).json(json!({"title": "Edited here"})))
        .await;
    let p = r.problem(409);
    assert_eq!(p["type"], "/problems/wordpress-conflict");
    assert!(
        p["detail"].as_str().unwrap().contains("changed on the WordPress site"),
        "{p}"
    );
    assert_eq!(
        w.wp_post(&external.to_string())["title"]["raw"],
        "Edited in wp-admin",
        "not overwritten"
    );
    // The mirror took WordPress's version, as a synced revision; editing again now works.
    let r = w.send(get(&format!("/cms/posts/{id}"))).await;
    assert_eq!(r.json["title"], "Edited in wp-admin");
    let revs = w.send(get(&format!("/cms/posts/{id}/revisions"))).await;
    assert_eq!(revs.json["items"][0]["reason"], "synced");
    let r = w
        .send(patch(&format!("/cms/posts/{id}")).json(json!({"title": "Edited here"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(w.wp_post(&external.to_string())["title"]["raw"], "Edited here");
    // The same for publishing over a change made there.
    w.wp.edit_there(external, "Again in wp-admin");
    let r = w.send(post(&format!("/cms/posts/{id}/publish")).json(json!({}))).await;
    assert_eq!(r.problem(409)["type"], "/problems/wordpress-conflict");
    assert_eq!(w.wp_post(&external.to_string())["status"], "draft");
}

#[tokio::test]
async fn a_wordpress_site_that_is_down_is_a_502_with_its_reason_and_nothing_changes() {
    let w = world().await;
    let r = w
        .send(post("/cms/posts").json(json!({"site_id": w.site, "title": "Before"})))
        .await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    let items = w.app.count("cms_items").await;
    let revisions = w.app.count("cms_revisions").await;
    w.wp.down.store(true, Ordering::SeqCst);
    for r in [
        post("/cms/posts").json(json!({"site_id": w.site, "title": "New"})),
        patch(&format!("/cms/posts/{id}")).json(json!({"title": "Changed"})),
        post(&format!("/cms/posts/{id}/publish")).json(json!({})),
        delete(&format!("/cms/posts/{id}")),
    ] {
        let r = w.send(r).await;
        let p = r.problem(502);
        assert_eq!(p["type"], "/problems/upstream-failed");
        assert!(p["detail"].as_str().unwrap().contains("WordPress"), "{p}");
        assert!(
            p["detail"].as_str().unwrap().contains("maintenance"),
            "the site's own reason: {p}"
        );
    }
    assert_eq!(w.app.count("cms_items").await, items);
    assert_eq!(w.app.count("cms_revisions").await, revisions);
    let r = w.send(get(&format!("/cms/posts/{id}"))).await;
    assert_eq!(
        (r.json["title"].as_str(), r.json["status"].as_str()),
        (Some("Before"), Some("draft"))
    );
    // Bad input is still a 422 before WordPress is asked.
    let r = w
        .send(
            post("/cms/posts")
                .json(json!({"site_id": w.site, "title": "x", "body": [{"type": "html", "html": "<script>"}]})),
        )
        .await;
    assert_eq!(
        r.error_fields(),
        ["body[0].type"],
        "html blocks are WordPress's to send, not the API's"
    );
    // Back up: the list works again.
    w.wp.down.store(false, Ordering::SeqCst);
    assert_eq!(w.send(get("/cms/posts")).await.status, 200);
}

#[tokio::test]
async fn wrong_credentials_are_refused_with_wordpresss_words() {
    let w = world().await;
    let connectors = testkit::connectors(&w.app.core.db, []);
    let scope = Scope::worker(w.tenant, &format!("user:{}", w.owner.id), "test".into());
    let fields = json!({"application_password": "wrong wrong wrong"});
    connectors
        .put(
            &scope,
            ConnectorKind::Wordpress,
            fields.as_object().unwrap().clone(),
            None,
        )
        .await
        .unwrap();
    let r = w
        .send(post("/cms/posts").json(json!({"site_id": w.site, "title": "x"})))
        .await;
    let p = r.problem(502);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("You are not currently logged in"),
        "{p}"
    );
    assert_eq!(w.app.count("cms_items").await, 0);
}
