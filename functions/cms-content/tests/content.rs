//! cms-pages and cms-posts against a real Postgres: slugs (from titles, 409 with a suggestion),
//! the block schema (422 naming the block path, nothing stored), revisions on every save, diff
//! and restore, publish now or scheduled (the content scheduler publishes the scheduled
//! revision, not later edits), the page tree, post fields, and tenant isolation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use axum::Router;
use serde_json::{Value, json};
use testkit::{Resp, TestApp, TestUser, delete, get, patch, post};
use uuid::Uuid;

struct World {
    app: TestApp,
    pages: Router,
    posts: Router,
    owner: TestUser,
    tenant: Uuid,
    site: Uuid,
}

async fn world() -> World {
    let app = TestApp::new().await;
    let owner = app.user("Ada Editor").await;
    let tenant = app.tenant(&owner).await;
    let (site, _) = app.site(tenant, "example.com").await;
    World {
        pages: cms_content::pages::router(app.core.clone(), None),
        posts: cms_content::posts::router(app.core.clone(), None),
        app,
        owner,
        tenant,
        site,
    }
}

impl World {
    async fn send(&self, r: testkit::Req) -> Resp {
        r.bearer(&self.owner.token).tenant(self.tenant).send(&self.pages).await
    }

    async fn page(&self, body: Value) -> Value {
        let mut body = body;
        body["site_id"] = json!(self.site);
        let r = self.send(post("/cms/pages").json(body)).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json
    }
}

fn heading(id: &str, text: &str) -> Value {
    json!({"type": "heading", "id": id, "level": 2, "text": text})
}

fn para(id: &str, text: &str) -> Value {
    json!({"type": "rich_text", "id": id, "content": [{"type": "paragraph", "spans": [{"text": text}]}]})
}

#[tokio::test]
async fn slugs_come_from_titles_and_a_taken_one_answers_409_with_the_next_free() {
    let w = world().await;
    let first = w.page(json!({"title": "Über uns & Team"})).await;
    assert_eq!(first["slug"], "uber-uns-and-team");
    assert_eq!(first["status"], "draft");
    assert_eq!(first["revision"], 1);
    let r = w
        .send(post("/cms/pages").json(json!({"site_id": w.site, "title": "Uber uns and team"})))
        .await;
    assert_eq!(r.problem(409)["type"], "/problems/slug-taken");
    assert_eq!(r.json["suggestion"], "uber-uns-and-team-2");
    w.page(json!({"title": "Other", "slug": "uber-uns-and-team-2"})).await;
    let r = w
        .send(post("/cms/pages").json(json!({"site_id": w.site, "title": "x", "slug": "uber-uns-and-team"})))
        .await;
    assert_eq!(r.json["suggestion"], "uber-uns-and-team-3");
    // Posts have slugs of their own: the same slug is free there.
    let r = r_post(&w, json!({"site_id": w.site, "title": "Über uns & Team"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // A bad slug is a 422 with an example.
    let r = w
        .send(post("/cms/pages").json(json!({"site_id": w.site, "title": "x", "slug": "Not A Slug"})))
        .await;
    assert_eq!(r.error_fields(), ["slug"]);
    // Another tenant's site is not a site.
    let other = w.app.user("other").await;
    let other_tenant = w.app.tenant(&other).await;
    let (other_site, _) = w.app.site(other_tenant, "other.com").await;
    let r = w
        .send(post("/cms/pages").json(json!({"site_id": other_site, "title": "x"})))
        .await;
    assert_eq!(r.error_fields(), ["site_id"]);
}

async fn r_post(w: &World, body: Value) -> Resp {
    post("/cms/posts")
        .json(body)
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .send(&w.posts)
        .await
}

#[tokio::test]
async fn a_block_that_fails_its_schema_is_422_at_its_path_and_nothing_is_stored() {
    let w = world().await;
    let r = w
        .send(
            post("/cms/pages").json(json!({"site_id": w.site, "title": "Pricing", "body": [
                heading("h", "Plans"),
                {"type": "cta", "label": "Buy", "href": "javascript:alert(1)", "style": "primary"},
                {"type": "rich_text", "content": [{"type": "paragraph", "spans": [{"text": "x", "marks": ["blink"]}]}]},
                {"type": "image", "media_id": Uuid::now_v7(), "alt": "a"},
                {"type": "marquee"}
            ]})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let fields = r.error_fields();
    for path in ["body[1].href", "body[2].content[0].spans[0].marks[0]", "body[4].type"] {
        assert!(fields.iter().any(|f| f == path), "{path} in {fields:?}");
    }
    // Images must be images of the library (checked once the blocks are well-formed).
    let r = w
        .send(
            post("/cms/pages").json(json!({"site_id": w.site, "title": "Pricing", "body": [
            heading("h", "Plans"),
            {"type": "gallery", "items": [{"media_id": Uuid::now_v7(), "alt": "a"}]},
        ], "seo": {"image_media_id": Uuid::now_v7(), "canonical_url": "http://example.com"}})),
        )
        .await;
    assert_eq!(
        r.error_fields(),
        ["body[1].items[0].media_id", "seo.image_media_id", "seo.canonical_url"]
    );
    assert_eq!(w.app.count("cms_items").await, 0);
    assert_eq!(w.app.count("cms_revisions").await, 0);
    // Post-only fields on a page, a parent on a post.
    let r = w
        .send(post("/cms/pages").json(json!({"site_id": w.site, "title": "x", "tags": ["a"], "excerpt": "e"})))
        .await;
    assert_eq!(r.error_fields(), ["excerpt", "tags"]);
    let page = w.page(json!({"title": "Parent"})).await;
    let r = r_post(&w, json!({"site_id": w.site, "title": "x", "parent_id": page["id"]})).await;
    assert_eq!(r.error_fields(), ["parent_id"]);
}

#[tokio::test]
async fn every_save_is_a_revision_with_diff_and_restore() {
    let w = world().await;
    let page = w
        .page(json!({"title": "About", "body": [heading("a", "Who"), para("b", "We make things.")]}))
        .await;
    let id = page["id"].as_str().unwrap();
    let etag = format!("\"{}\"", page["version"]);
    let r = w
        .send(
            patch(&format!("/cms/pages/{id}"))
                .header("If-Match", &etag)
                .json(json!({"title": "About us", "seo": {"description": "Our story"},
                    "body": [para("b", "We make good things."), heading("a", "Who"), para("c", "Since 2020.")]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["revision"], 2);
    assert_eq!(r.json["slug"], "about", "the slug stays when the title changes");
    // The old ETag is stale now.
    let r = w
        .send(
            patch(&format!("/cms/pages/{id}"))
                .header("If-Match", &etag)
                .json(json!({"title": "X"})),
        )
        .await;
    assert_eq!(r.status, 412);
    // A patch that changes nothing writes no revision.
    let r = w
        .send(patch(&format!("/cms/pages/{id}")).json(json!({"title": "About us"})))
        .await;
    assert_eq!(r.json["revision"], 2);

    let r = w.send(get(&format!("/cms/pages/{id}/revisions"))).await;
    let numbers: Vec<i64> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);
    assert_eq!(r.json["items"][1]["reason"], "created");
    assert_eq!(r.json["items"][0]["author"], format!("user:{}", w.owner.id));

    let r = w.send(get(&format!("/cms/pages/{id}/diff")).query("from=1&to=2")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let fields: Vec<&str> = r.json["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["title", "seo"]);
    let changes: Vec<&str> = r.json["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["change"].as_str().unwrap())
        .collect();
    assert!(
        changes.contains(&"changed") && changes.contains(&"added"),
        "{changes:?}"
    );

    let r = w.send(post(&format!("/cms/pages/{id}/revisions/1/restore"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["revision"], 3);
    assert_eq!(r.json["title"], "About");
    assert_eq!(r.json["body"].as_array().unwrap().len(), 2);
    assert!(r.json["seo"].get("description").is_none());
    let r = w.send(get(&format!("/cms/pages/{id}/revisions/3"))).await;
    assert_eq!(
        (r.json["reason"].as_str(), r.json["restored_from"].as_i64()),
        (Some("restored"), Some(1))
    );
    assert_eq!(r.json["content"]["title"], "About");
    // A revision that does not exist, or of another page.
    assert_eq!(w.send(get(&format!("/cms/pages/{id}/revisions/9"))).await.status, 404);
    assert_eq!(
        w.send(post(&format!("/cms/pages/{id}/revisions/9/restore")))
            .await
            .status,
        404
    );

    // Restoring a revision whose slug another page took since: 409 with a suggestion.
    w.send(patch(&format!("/cms/pages/{id}")).json(json!({"slug": "company"})))
        .await;
    w.page(json!({"title": "About"})).await;
    let r = w.send(post(&format!("/cms/pages/{id}/revisions/1/restore"))).await;
    assert_eq!(r.problem(409)["suggestion"], "about-2");
}

#[tokio::test]
async fn scheduled_publishing_publishes_the_scheduled_revision_when_due() {
    let w = world().await;
    let page = w.page(json!({"title": "Launch", "body": [para("a", "Soon.")]})).await;
    let id = page["id"].as_str().unwrap();
    let at = chrono::Utc::now() + chrono::Duration::minutes(10);
    let r = w
        .send(post(&format!("/cms/pages/{id}/publish")).json(json!({"at": at})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "scheduled");
    assert_eq!(r.json["scheduled_revision"], 1);
    // An edit after scheduling waits for the next publish.
    w.send(patch(&format!("/cms/pages/{id}")).json(json!({"title": "Launch (edited)"})))
        .await;

    let db = &w.app.core.db;
    let early = shared::services::cms::items::publish_due(db, chrono::Utc::now(), 100)
        .await
        .unwrap();
    assert_eq!(early.published, 0);
    let run = shared::services::cms::items::publish_due(db, at + chrono::Duration::seconds(1), 100)
        .await
        .unwrap();
    assert_eq!(run.published, 1);
    let again = shared::services::cms::items::publish_due(db, at + chrono::Duration::seconds(2), 100)
        .await
        .unwrap();
    assert_eq!(again.published, 0, "published once");
    let r = w.send(get(&format!("/cms/pages/{id}"))).await;
    assert_eq!(r.json["status"], "published");
    assert_eq!(r.json["live_revision"], 1);
    assert_eq!(r.json["revision"], 2);
    assert_eq!(r.json["unpublished_changes"], true);

    // A schedule whose slug went live elsewhere meanwhile fails with its reason, and the rest
    // of the run goes on.
    let a = w.page(json!({"title": "Alpha", "slug": "alpha"})).await;
    let b = w.page(json!({"title": "Beta", "slug": "beta"})).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    w.send(post(&format!("/cms/pages/{a_id}/publish")).json(json!({"at": at})))
        .await;
    w.send(post(&format!("/cms/pages/{b_id}/publish")).json(json!({"at": at})))
        .await;
    w.send(patch(&format!("/cms/pages/{a_id}")).json(json!({"slug": "gamma"})))
        .await;
    let c = w.page(json!({"title": "Alpha 2", "slug": "alpha"})).await;
    let r = w
        .send(post(&format!("/cms/pages/{}/publish", c["id"].as_str().unwrap())).json(json!({})))
        .await;
    assert_eq!(r.json["status"], "published");
    let run = shared::services::cms::items::publish_due(db, at + chrono::Duration::seconds(3), 100)
        .await
        .unwrap();
    assert_eq!((run.published, run.failed), (1, 1));
    let r = w.send(get(&format!("/cms/pages/{a_id}"))).await;
    assert_eq!(r.json["status"], "draft");
    assert!(
        r.json["publish_error"].as_str().unwrap().contains("alpha"),
        "{}",
        r.text
    );
    // Bad times.
    let r = w
        .send(post(&format!("/cms/pages/{a_id}/publish")).json(json!({"at": "tomorrow"})))
        .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn one_broken_scheduled_item_holds_back_no_other_publication() {
    let w = world().await;
    let at = chrono::Utc::now() + chrono::Duration::minutes(10);
    let broken = w.page(json!({"title": "Broken", "slug": "broken"})).await;
    let fine = w.page(json!({"title": "Fine", "slug": "fine"})).await;
    let (broken_id, fine_id) = (broken["id"].as_str().unwrap(), fine["id"].as_str().unwrap());
    for (id, at) in [(broken_id, at - chrono::Duration::minutes(1)), (fine_id, at)] {
        let r = w
            .send(post(&format!("/cms/pages/{id}/publish")).json(json!({"at": at})))
            .await;
        assert_eq!(r.json["status"], "scheduled", "{}", r.text);
    }
    // The first due item names a revision that is not there (an internal error, not a conflict).
    sqlx::query("update cms_items set scheduled_revision = 999 where id = $1::uuid")
        .bind(broken_id)
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    let run = shared::services::cms::items::publish_due(&w.app.core.db, at + chrono::Duration::seconds(1), 100)
        .await
        .unwrap();
    assert_eq!((run.published, run.failed, run.retrying), (1, 1, 0));
    let r = w.send(get(&format!("/cms/pages/{fine_id}"))).await;
    assert_eq!(r.json["status"], "published");
    let r = w.send(get(&format!("/cms/pages/{broken_id}"))).await;
    assert_eq!(r.json["status"], "draft");
    let error = r.json["publish_error"].as_str().unwrap();
    assert!(
        error.starts_with("the scheduled publish of revision 999 failed: an internal error"),
        "{error}"
    );
    assert!(!error.contains("missing"), "no internals shown: {error}");
    // The next run has nothing left to do.
    let run = shared::services::cms::items::publish_due(&w.app.core.db, at + chrono::Duration::seconds(2), 100)
        .await
        .unwrap();
    assert_eq!(run, Default::default());
}

#[tokio::test]
async fn pages_form_a_tree_without_cycles() {
    let w = world().await;
    let root = w.page(json!({"title": "Docs"})).await;
    let child = w.page(json!({"title": "Install", "parent_id": root["id"]})).await;
    let grandchild = w.page(json!({"title": "Linux", "parent_id": child["id"]})).await;
    let root_id = root["id"].as_str().unwrap();
    let r = w
        .send(patch(&format!("/cms/pages/{root_id}")).json(json!({"parent_id": grandchild["id"]})))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json["errors"][0]["code"], "cycle");
    let r = w
        .send(get("/cms/pages").query(&format!("parent_id={}", child["id"].as_str().unwrap())))
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    let r = w.send(delete(&format!("/cms/pages/{root_id}"))).await;
    assert_eq!(r.problem(409)["type"], "/problems/page-has-children");
    let r = w
        .send(patch(&format!("/cms/pages/{}", child["id"].as_str().unwrap())).json(json!({"parent_id": null})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(w.send(delete(&format!("/cms/pages/{root_id}"))).await.status, 204);
    assert_eq!(w.send(get(&format!("/cms/pages/{root_id}"))).await.status, 404);
}

#[tokio::test]
async fn posts_have_authors_categories_and_tags() {
    let w = world().await;
    let r = r_post(
        &w,
        json!({"site_id": w.site, "title": "Hello world", "excerpt": "First post",
            "categories": ["News", "news"], "tags": ["Launch"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["author_id"], json!(w.owner.id));
    assert_eq!(r.json["categories"], json!(["news"]));
    assert_eq!(r.json["source"], "internal");
    let stranger = w.app.user("stranger").await;
    let r = r_post(&w, json!({"site_id": w.site, "title": "x", "author_id": stranger.id})).await;
    assert_eq!(r.error_fields(), ["author_id"]);
    let r = get("/cms/posts")
        .query("category=news")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .send(&w.posts)
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    // Pages and posts are apart: a post's id is no page.
    let id = r.json["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(w.send(get(&format!("/cms/pages/{id}"))).await.status, 404);
}

#[tokio::test]
async fn another_tenants_items_answer_404_on_every_route() {
    let w = world().await;
    let page = w.page(json!({"title": "Secret"})).await;
    let id = page["id"].as_str().unwrap();
    let other = w.app.user("other").await;
    let other_tenant = w.app.tenant(&other).await;
    let send = |r: testkit::Req| r.bearer(&other.token).tenant(other_tenant).send(&w.pages);
    for r in [
        get(&format!("/cms/pages/{id}")),
        patch(&format!("/cms/pages/{id}")).json(json!({"title": "mine"})),
        delete(&format!("/cms/pages/{id}")),
        post(&format!("/cms/pages/{id}/publish")).json(json!({})),
        post(&format!("/cms/pages/{id}/unpublish")).json(json!({"status": "draft"})),
        get(&format!("/cms/pages/{id}/revisions")),
        get(&format!("/cms/pages/{id}/revisions/1")),
        post(&format!("/cms/pages/{id}/revisions/1/restore")),
        get(&format!("/cms/pages/{id}/diff")).query("from=1&to=1"),
    ] {
        assert_eq!(send(r).await.status, 404);
    }
    let r = send(get("/cms/pages")).await;
    assert_eq!(r.json["items"], json!([]));
    let r = w.send(get(&format!("/cms/pages/{id}"))).await;
    assert_eq!(
        (r.json["title"].as_str(), r.json["revision"].as_i64()),
        (Some("Secret"), Some(1))
    );
}
