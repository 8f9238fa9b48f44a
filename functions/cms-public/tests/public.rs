//! cms-public against a real Postgres, driven through cms-pages and cms-posts: drafts,
//! schedules, archived items and unpublished edits are never visible; what is published is
//! served with a strong ETag (304 on a match) and Cache-Control; an old slug redirects; an
//! unknown site key is 404; another site's content is not this site's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use axum::Router;
use serde_json::{Value, json};
use testkit::{Resp, TestApp, TestUser, get, patch, post};
use uuid::Uuid;

struct World {
    app: TestApp,
    pages: Router,
    posts: Router,
    public: Router,
    owner: TestUser,
    tenant: Uuid,
    site: Uuid,
    key: String,
}

async fn world() -> World {
    let app = TestApp::new().await;
    let owner = app.user("Ada Editor").await;
    let tenant = app.tenant(&owner).await;
    let (site, key) = app.site(tenant, "example.com").await;
    World {
        pages: cms_content::pages::router(app.core.clone(), None),
        posts: cms_content::posts::router(app.core.clone(), None),
        public: cms_public::router(app.core.clone(), "https://media.example.com".to_owned()),
        app,
        owner,
        tenant,
        site,
        key,
    }
}

impl World {
    async fn edit(&self, router: &Router, r: testkit::Req) -> Resp {
        let r = r.bearer(&self.owner.token).tenant(self.tenant).send(router).await;
        assert!(r.status.is_success(), "{}", r.text);
        r
    }

    async fn page(&self, title: &str, text: &str) -> String {
        let body = json!({"site_id": self.site, "title": title, "body": [
            {"type": "rich_text", "content": [{"type": "paragraph", "spans": [{"text": text}]}]}]});
        let r = self.edit(&self.pages, post("/cms/pages").json(body)).await;
        r.json["id"].as_str().unwrap().to_owned()
    }

    async fn read(&self, path: &str) -> Resp {
        get(&format!("/public/sites/{}/{path}", self.key))
            .send(&self.public)
            .await
    }
}

fn text(r: &Resp) -> &str {
    r.json["content"]["body"][0]["content"][0]["spans"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn only_what_was_published_is_ever_visible() {
    let w = world().await;
    let id = w.page("Pricing", "Draft prices").await;
    assert_eq!(
        w.read("pages/pricing").await.problem(404)["type"],
        "/problems/not-found"
    );

    w.edit(&w.pages, post(&format!("/cms/pages/{id}/publish")).json(json!({})))
        .await;
    let r = w.read("pages/pricing").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(text(&r), "Draft prices");
    assert_eq!(r.json["content"]["title"], "Pricing");
    assert!(r.json["content"].get("author_id").is_none());
    assert_eq!(r.headers["cache-control"], cms_public::CACHE_CONTROL);
    let etag = r.headers["etag"].to_str().unwrap().to_owned();

    // An edit of the published page is a draft until the next publish.
    w.edit(
        &w.pages,
        patch(&format!("/cms/pages/{id}")).json(json!({"body": [
            {"type": "rich_text", "content": [{"type": "paragraph", "spans": [{"text": "Secret new prices"}]}]}]})),
    )
    .await;
    let r = w.read("pages/pricing").await;
    assert_eq!(text(&r), "Draft prices");
    assert!(!r.text.contains("Secret"));
    // The same bytes: 304 on the ETag.
    let r = get(&format!("/public/sites/{}/pages/pricing", w.key))
        .header("If-None-Match", &etag)
        .send(&w.public)
        .await;
    assert_eq!(r.status, 304);
    assert!(r.text.is_empty());

    // A schedule of the edit shows nothing new before the scheduler publishes it.
    let at = chrono::Utc::now() + chrono::Duration::minutes(5);
    w.edit(
        &w.pages,
        post(&format!("/cms/pages/{id}/publish")).json(json!({"at": at})),
    )
    .await;
    assert_eq!(text(&w.read("pages/pricing").await), "Draft prices");
    shared::services::cms::items::publish_due(&w.app.core.db, at, 10)
        .await
        .unwrap();
    let r = w.read("pages/pricing").await;
    assert_eq!(text(&r), "Secret new prices");
    assert_ne!(r.headers["etag"].to_str().unwrap(), etag);

    // Archived: gone from the site.
    w.edit(
        &w.pages,
        post(&format!("/cms/pages/{id}/unpublish")).json(json!({"status": "archived"})),
    )
    .await;
    assert_eq!(w.read("pages/pricing").await.status, 404);
    // Publishing again brings it back; draft takes it off again.
    w.edit(&w.pages, post(&format!("/cms/pages/{id}/publish")).json(json!({})))
        .await;
    assert_eq!(w.read("pages/pricing").await.status, 200);
    w.edit(
        &w.pages,
        post(&format!("/cms/pages/{id}/unpublish")).json(json!({"status": "draft"})),
    )
    .await;
    assert_eq!(w.read("pages/pricing").await.status, 404);
}

#[tokio::test]
async fn a_published_slug_change_leaves_a_redirect() {
    let w = world().await;
    let id = w.page("Team", "Us").await;
    w.edit(&w.pages, post(&format!("/cms/pages/{id}/publish")).json(json!({})))
        .await;
    w.edit(
        &w.pages,
        patch(&format!("/cms/pages/{id}")).json(json!({"slug": "people"})),
    )
    .await;
    // Not live yet: the old slug still answers, the new one does not.
    assert_eq!(w.read("pages/team").await.status, 200);
    assert_eq!(w.read("pages/people").await.status, 404);
    w.edit(&w.pages, post(&format!("/cms/pages/{id}/publish")).json(json!({})))
        .await;
    let r = w.read("pages/team").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.headers["location"], format!("/public/sites/{}/pages/people", w.key));
    assert_eq!(w.read("pages/people").await.status, 200);
    // Another page may take the old slug: it then answers, and the redirect is gone.
    let other = w.page("Team", "New team page").await;
    w.edit(&w.pages, post(&format!("/cms/pages/{other}/publish")).json(json!({})))
        .await;
    let r = w.read("pages/team").await;
    assert_eq!((r.status.as_u16(), text(&r)), (200, "New team page"));
}

#[tokio::test]
async fn posts_list_newest_first_with_filters_and_pages() {
    let w = world().await;
    let mut published = Vec::new();
    for (i, category) in ["news", "guides", "news"].iter().enumerate() {
        let r = w
            .edit(
                &w.posts,
                post("/cms/posts").json(json!({"site_id": w.site, "title": format!("Post {i}"),
                    "excerpt": format!("About {i}"), "categories": [category]})),
            )
            .await;
        let id = r.json["id"].as_str().unwrap().to_owned();
        w.edit(&w.posts, post(&format!("/cms/posts/{id}/publish")).json(json!({})))
            .await;
        published.push(id);
    }
    // A draft post never lists.
    w.edit(
        &w.posts,
        post("/cms/posts").json(json!({"site_id": w.site, "title": "Unreleased"})),
    )
    .await;
    let r = w.read("posts").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let slugs: Vec<&str> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["post-2", "post-1", "post-0"]);
    assert_eq!(r.json["items"][0]["author"], "Ada Editor");
    assert_eq!(r.json["items"][0]["excerpt"], "About 2");
    let r = w.read("posts?category=news").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 2);
    let r = w.read("posts?limit=2").await;
    let cursor = r.json["next_cursor"].as_str().unwrap().to_owned();
    let r = w.read(&format!("posts?limit=2&cursor={cursor}")).await;
    assert_eq!(r.json["items"][0]["slug"], "post-0");
    let r = w.read("posts/post-1").await;
    assert_eq!(r.json["content"]["excerpt"], "About 1");
    assert_eq!(r.json["author"], "Ada Editor");
    assert_eq!(w.read("posts/unreleased").await.status, 404);
}

#[tokio::test]
async fn site_keys_keep_sites_apart() {
    let w = world().await;
    let id = w.page("Home", "Welcome").await;
    w.edit(&w.pages, post(&format!("/cms/pages/{id}/publish")).json(json!({})))
        .await;
    // Another site of the same tenant, and another tenant's site: neither shows it.
    let (_, same_tenant_key) = w.app.site(w.tenant, "second.example.com").await;
    let other = w.app.user("other").await;
    let other_tenant = w.app.tenant(&other).await;
    let (_, other_key) = w.app.site(other_tenant, "other.com").await;
    for key in [same_tenant_key.as_str(), other_key.as_str(), "site_unknown", ""] {
        let r = get(&format!("/public/sites/{key}/pages/home")).send(&w.public).await;
        assert_eq!(r.status, 404, "{key}");
        assert!(r.json.get("detail").is_none_or(Value::is_null));
    }
    assert_eq!(w.read("pages/home").await.status, 200);
}
