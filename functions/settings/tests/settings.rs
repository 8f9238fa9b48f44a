//! The settings routes against a real Postgres (a fresh database per test), driven in-process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{Value, json};
use shared::domain::Role;
use testkit::{TestApp, delete, get, patch, post, sign, token};
use uuid::Uuid;

async fn app() -> (TestApp, axum::Router) {
    let app = TestApp::new().await;
    let router = settings::router(app.core.clone());
    (app, router)
}

/// The single-use token in a created invitation's accept link.
fn accept_token(r: &testkit::Resp) -> String {
    let url = r.json["accept_url"].as_str().unwrap();
    url.rsplit('/').nth(1).unwrap().to_owned()
}

fn ids(page: &Value, key: &str) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[key].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn me_answers_the_token_owner_with_an_etag() {
    let (app, router) = app().await;
    let ann = app.user("ann").await;
    let r = get("/me").bearer(&ann.token).send(&router).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["email"], ann.email.as_str());
    assert_eq!(r.json["id"], ann.id.to_string());
    assert_eq!(r.headers["etag"], "\"1\"");
    assert!(r.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn a_first_sighted_token_creates_its_user() {
    let (app, router) = app().await;
    let before = app.count("users").await;
    let t = token("brand-new-subject", "new@example.test", 600);
    let r = get("/me").bearer(&t).send(&router).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["email"], "new@example.test");
    assert_eq!(app.count("users").await, before + 1);
    // and only once
    get("/me").bearer(&t).send(&router).await;
    assert_eq!(app.count("users").await, before + 1);
}

#[tokio::test]
async fn missing_expired_forged_and_misaddressed_tokens_answer_401() {
    let (app, router) = app().await;
    let ann = app.user("ann").await;
    let now = chrono::Utc::now().timestamp();
    let claims = |iss: &str, aud: &str, exp: i64| json!({"sub": ann.subject, "email": ann.email, "iss": iss, "aud": aud, "iat": now, "exp": exp});
    let mut tampered = ann.token.clone();
    tampered.insert_str(tampered.rfind('.').unwrap() + 1, "AAAA");
    let unsigned = {
        let parts: Vec<&str> = ann.token.split('.').collect();
        use base64::Engine;
        let header =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"test-key"}"#);
        format!("{header}.{}.", parts[1])
    };
    let cases = [
        ("no header", None),
        ("expired", Some(token(&ann.subject, &ann.email, -3600))),
        (
            "wrong issuer",
            Some(sign(&claims("https://evil.test", testkit::AUDIENCE, now + 600))),
        ),
        (
            "wrong audience",
            Some(sign(&claims(testkit::ISSUER, "other-api", now + 600))),
        ),
        ("tampered signature", Some(tampered)),
        ("alg none", Some(unsigned)),
        ("garbage", Some("not-a-token".to_owned())),
        (
            "unknown api key",
            Some("pk_00000000_00000000000000000000000000000000".to_owned()),
        ),
    ];
    for (case, credential) in cases {
        let mut req = get("/me");
        if let Some(c) = credential {
            req = req.bearer(&c);
        }
        let r = req.send(&router).await;
        assert_eq!(r.status, 401, "{case}: {}", r.text);
        r.problem(401);
        assert_eq!(r.headers["www-authenticate"], "Bearer", "{case}");
    }
    let r = get("/me").header("authorization", "Basic YTpi").send(&router).await;
    r.problem(401);
}

#[tokio::test]
async fn profile_updates_with_optimistic_concurrency() {
    let (app, router) = app().await;
    let ann = app.user("ann").await;
    let r = patch("/me")
        .bearer(&ann.token)
        .header("if-match", "\"1\"")
        .json(json!({"name": "Ann Lee"}))
        .send(&router)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["name"], "Ann Lee");
    assert_eq!(r.headers["etag"], "\"2\"");
    // a stale ETag changes nothing
    let r = patch("/me")
        .bearer(&ann.token)
        .header("if-match", "\"1\"")
        .json(json!({"name": "Other"}))
        .send(&router)
        .await;
    r.problem(412);
    let r = get("/me").bearer(&ann.token).send(&router).await;
    assert_eq!(r.json["name"], "Ann Lee");
    // a malformed ETag is a field error, and a bad body is reported before a stale version
    for tag in ["null", "", "2", "\"x\""] {
        let r = patch("/me")
            .bearer(&ann.token)
            .header("if-match", tag)
            .json(json!({"name": "X"}))
            .send(&router)
            .await;
        assert_eq!(r.error_fields(), ["If-Match"], "{tag:?}");
    }
    let r = patch("/me")
        .bearer(&ann.token)
        .header("if-match", "\"1\"")
        .send(&router)
        .await;
    r.problem(415);
    let r = patch("/me")
        .bearer(&ann.token)
        .header("if-match", "W/\"2\"")
        .json(json!({}))
        .send(&router)
        .await;
    assert_eq!(r.status, 200, "a weak ETag of the current version matches: {}", r.text);
}

#[tokio::test]
async fn bad_bodies_answer_problems_with_field_errors_and_change_nothing() {
    let (app, router) = app().await;
    let ann = app.user("ann").await;
    let r = patch("/me")
        .bearer(&ann.token)
        .json(json!({"name": "x", "admin": true}))
        .send(&router)
        .await;
    assert_eq!(r.error_fields(), ["admin"]);
    let r = patch("/me")
        .bearer(&ann.token)
        .json(json!({"name": "n".repeat(101)}))
        .send(&router)
        .await;
    assert_eq!(r.error_fields(), ["name"]);
    assert_eq!(r.json["errors"][0]["code"], "too_long");
    let r = patch("/me")
        .bearer(&ann.token)
        .json(json!({"name": 42}))
        .send(&router)
        .await;
    assert_eq!(r.error_fields(), ["name"]);
    let r = patch("/me")
        .bearer(&ann.token)
        .raw_json(b"{\"name\": ")
        .send(&router)
        .await;
    r.problem(422);
    assert_eq!(r.json["errors"][0]["code"], "malformed_json");
    let r = patch("/me")
        .bearer(&ann.token)
        .header("content-type", "text/plain")
        .send(&router)
        .await;
    r.problem(415);
    let r = get("/me").bearer(&ann.token).send(&router).await;
    assert_eq!(r.json["version"], 1, "nothing was written");

    let tenants = app.count("tenants").await;
    let r = post("/tenants")
        .bearer(&ann.token)
        .json(json!({"name": ""}))
        .send(&router)
        .await;
    assert_eq!(r.error_fields(), ["name"]);
    let r = post("/tenants").bearer(&ann.token).json(json!({})).send(&router).await;
    assert_eq!(r.error_fields(), ["name"]);
    assert_eq!(app.count("tenants").await, tenants);
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let (app, router) = app().await;
    let ann = app.user("ann").await;
    app.tenant(&ann).await;
    get("/nope").bearer(&ann.token).send(&router).await.problem(404);
    let r = testkit::req(http::Method::PUT, "/me")
        .bearer(&ann.token)
        .send(&router)
        .await;
    r.problem(405);
    let r = delete("/settings/api-keys/not-a-uuid")
        .bearer(&ann.token)
        .send(&router)
        .await;
    r.problem(404);
}

#[tokio::test]
async fn creating_a_tenant_makes_the_caller_owner_and_is_idempotent() {
    let (app, router) = app().await;
    let ann = app.user("ann").await;
    let send = |name: &str, key: &str| {
        post("/tenants")
            .bearer(&ann.token)
            .header("idempotency-key", key)
            .json(json!({"name": name}))
            .send(&router)
    };
    let first = send("Acme Ltd", "k-1").await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.json["role"], "owner");
    let again = send("Acme Ltd", "k-1").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.json["id"], first.json["id"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(app.count("tenants").await, 1, "one tenant for two identical requests");
    let reused = send("Other Ltd", "k-1").await;
    assert_eq!(reused.error_fields(), ["Idempotency-Key"]);

    let r = get("/tenants").bearer(&ann.token).send(&router).await;
    assert_eq!(ids(&r.json, "id"), [first.json["id"].as_str().unwrap()]);
    let r = get("/settings/audit-log").bearer(&ann.token).send(&router).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["items"][0]["action"], "tenant.created");
}

#[tokio::test]
async fn the_tenant_is_chosen_per_request_among_memberships() {
    let (app, router) = app().await;
    let ann = app.user("ann").await;
    let a = app.tenant(&ann).await;
    // one tenant: implied
    let r = get("/settings/team").bearer(&ann.token).send(&router).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b = app.tenant(&ann).await;
    // two tenants: must choose
    let r = get("/settings/team").bearer(&ann.token).send(&router).await;
    r.problem(400);
    for t in [a, b] {
        let r = get("/settings/team").bearer(&ann.token).tenant(t).send(&router).await;
        assert_eq!(r.status, 200);
    }
    // a tenant she does not belong to, or a malformed id: 404
    let bob = app.user("bob").await;
    let c = app.tenant(&bob).await;
    get("/settings/team")
        .bearer(&ann.token)
        .tenant(c)
        .send(&router)
        .await
        .problem(404);
    get("/settings/team")
        .bearer(&ann.token)
        .header("x-tenant-id", "nope")
        .send(&router)
        .await
        .problem(404);
}

#[tokio::test]
async fn another_tenants_ids_answer_404_on_every_settings_resource() {
    let (app, router) = app().await;
    let ann = app.user("ann").await;
    let a = app.tenant(&ann).await;
    let member = app.user("member").await;
    app.add_member(a, &member, Role::Member).await;
    let r = post("/settings/api-keys")
        .bearer(&ann.token)
        .json(json!({"name": "A key", "scopes": ["read"]}))
        .send(&router)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a_key = r.json["id"].as_str().unwrap().to_owned();
    let r = post("/settings/team/invitations")
        .bearer(&ann.token)
        .json(json!({"email": "x@example.com", "role": "viewer"}))
        .send(&router)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a_invite = r.json["id"].as_str().unwrap().to_owned();

    let bob = app.user("bob").await;
    let b = app.tenant(&bob).await;
    let a_api = app.api_key(a, Role::Admin).await;
    let before = (
        app.count("memberships").await,
        app.count("api_keys where revoked_at is null").await,
        app.count("invitations where revoked_at is null").await,
    );

    // Bob naming tenant A: not his tenant, 404 for everything.
    for (method, path) in [
        ("GET", "/settings/team".to_owned()),
        ("GET", "/settings/api-keys".to_owned()),
        ("GET", "/settings/audit-log".to_owned()),
        ("GET", "/settings/team/invitations".to_owned()),
        ("DELETE", format!("/settings/api-keys/{a_key}")),
        ("DELETE", format!("/settings/team/invitations/{a_invite}")),
        ("DELETE", format!("/settings/team/members/{}", member.id)),
    ] {
        let r = testkit::req(method.parse().unwrap(), &path)
            .bearer(&bob.token)
            .tenant(a)
            .send(&router)
            .await;
        r.problem(404);
    }
    let r = patch(&format!("/settings/team/members/{}", member.id))
        .bearer(&bob.token)
        .tenant(a)
        .json(json!({"role": "viewer"}))
        .send(&router)
        .await;
    r.problem(404);

    // Bob in his own tenant, using A's ids: 404 too.
    for path in [
        format!("/settings/api-keys/{a_key}"),
        format!("/settings/team/invitations/{a_invite}"),
        format!("/settings/team/members/{}", member.id),
    ] {
        delete(&path)
            .bearer(&bob.token)
            .tenant(b)
            .send(&router)
            .await
            .problem(404);
    }
    patch(&format!("/settings/team/members/{}", member.id))
        .bearer(&bob.token)
        .tenant(b)
        .json(json!({"role": "viewer"}))
        .send(&router)
        .await
        .problem(404);

    // A's API key cannot reach B either.
    get("/settings/team")
        .bearer(&a_api)
        .tenant(b)
        .send(&router)
        .await
        .problem(404);

    // Lists as B never show A's ids.
    let team = get("/settings/team").bearer(&bob.token).tenant(b).send(&router).await;
    assert_eq!(ids(&team.json, "user_id"), [bob.id.to_string()]);
    let keys = get("/settings/api-keys")
        .bearer(&bob.token)
        .tenant(b)
        .send(&router)
        .await;
    assert!(!keys.text.contains(&a_key));
    let log = get("/settings/audit-log")
        .bearer(&bob.token)
        .tenant(b)
        .send(&router)
        .await;
    assert!(!log.text.contains(&a_key) && !log.text.contains(&a_invite));

    let after = (
        app.count("memberships").await,
        app.count("api_keys where revoked_at is null").await,
        app.count("invitations where revoked_at is null").await,
    );
    assert_eq!(before, after, "nothing changed");
}

#[tokio::test]
async fn viewers_and_members_cannot_change_the_team() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    let t = app.tenant(&owner).await;
    let viewer = app.user("viewer").await;
    let member = app.user("member").await;
    app.add_member(t, &viewer, Role::Viewer).await;
    app.add_member(t, &member, Role::Member).await;
    for who in [&viewer, &member] {
        let r = post("/settings/team/invitations")
            .bearer(&who.token)
            .tenant(t)
            .json(json!({"email": "z@example.com", "role": "viewer"}))
            .send(&router)
            .await;
        r.problem(403);
        let r = patch(&format!("/settings/team/members/{}", owner.id))
            .bearer(&who.token)
            .tenant(t)
            .json(json!({"role": "viewer"}))
            .send(&router)
            .await;
        r.problem(403);
        let r = post("/settings/api-keys")
            .bearer(&who.token)
            .tenant(t)
            .json(json!({"name": "k", "scopes": ["read"]}))
            .send(&router)
            .await;
        r.problem(403);
        get("/settings/audit-log")
            .bearer(&who.token)
            .tenant(t)
            .send(&router)
            .await
            .problem(403);
        // reading the team is fine
        assert_eq!(
            get("/settings/team")
                .bearer(&who.token)
                .tenant(t)
                .send(&router)
                .await
                .status,
            200
        );
    }
    let r = delete(&format!("/settings/team/members/{}", member.id))
        .bearer(&viewer.token)
        .tenant(t)
        .send(&router)
        .await;
    r.problem(403);
    assert_eq!(app.count("invitations").await, 0);
    assert_eq!(app.count("memberships").await, 3);
    // a viewer API key cannot either
    let key = app.api_key(t, Role::Viewer).await;
    post("/settings/team/invitations")
        .bearer(&key)
        .tenant(t)
        .json(json!({"email": "z@example.com", "role": "viewer"}))
        .send(&router)
        .await
        .problem(403);
}

#[tokio::test]
async fn an_api_key_works_until_revoked_and_its_secret_is_shown_once() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    app.tenant(&owner).await;
    let r = post("/settings/api-keys")
        .bearer(&owner.token)
        .json(json!({"name": "CI", "scopes": ["admin", "read"]}))
        .send(&router)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let secret = r.json["secret"].as_str().unwrap().to_owned();
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(&format!("pk_{}_", r.json["prefix"].as_str().unwrap())));
    assert_eq!(r.json["role"], "admin");

    let r = get("/settings/team").bearer(&secret).send(&router).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let used: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select last_used_at from api_keys where id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db.owner)
            .await
            .unwrap();
    assert!(used.is_some(), "last-used time recorded");

    // never readable again: not in lists, not stored
    let list = get("/settings/api-keys").bearer(&owner.token).send(&router).await;
    assert!(!list.text.contains(&secret));
    assert!(list.json["items"][0].get("secret").is_none());
    let stored: i64 =
        sqlx::query_scalar("select count(*) from api_keys where position($1::bytea in secret_hash) > 0 or prefix = $2")
            .bind(secret.as_bytes())
            .bind(&secret)
            .fetch_one(&app.db.owner)
            .await
            .unwrap();
    assert_eq!(stored, 0, "only the hash is stored");

    // an API key cannot mint keys, nor act as a user
    post("/settings/api-keys")
        .bearer(&secret)
        .json(json!({"name": "k2", "scopes": ["read"]}))
        .send(&router)
        .await
        .problem(403);
    get("/me").bearer(&secret).send(&router).await.problem(403);

    let r = delete(&format!("/settings/api-keys/{id}"))
        .bearer(&owner.token)
        .send(&router)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    get("/settings/team").bearer(&secret).send(&router).await.problem(401);
    // revoking again is harmless
    assert_eq!(
        delete(&format!("/settings/api-keys/{id}"))
            .bearer(&owner.token)
            .send(&router)
            .await
            .status,
        204
    );
    let log = get("/settings/audit-log").bearer(&owner.token).send(&router).await;
    let actions: Vec<&str> = log.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["api_key.revoked", "api_key.created"]);
}

#[tokio::test]
async fn key_scopes_cap_the_role_and_cannot_exceed_the_creator() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    let t = app.tenant(&owner).await;
    let r = post("/settings/api-keys")
        .bearer(&owner.token)
        .json(json!({"name": "ro", "scopes": ["read"]}))
        .send(&router)
        .await;
    let ro = r.json["secret"].as_str().unwrap().to_owned();
    assert_eq!(r.json["role"], "viewer");
    get("/settings/audit-log").bearer(&ro).send(&router).await.problem(403);
    let admin = app.user("admin").await;
    app.add_member(t, &admin, Role::Admin).await;
    let r = post("/settings/api-keys")
        .bearer(&admin.token)
        .tenant(t)
        .json(json!({"name": "x", "scopes": ["root"]}))
        .send(&router)
        .await;
    assert_eq!(r.error_fields(), ["scopes[0]"]);
    let r = post("/settings/api-keys")
        .bearer(&admin.token)
        .tenant(t)
        .json(json!({"name": "x", "scopes": []}))
        .send(&router)
        .await;
    assert_eq!(r.error_fields(), ["scopes"]);
    let r = post("/settings/api-keys")
        .bearer(&admin.token)
        .tenant(t)
        .json(json!({"name": "x", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"}))
        .send(&router)
        .await;
    assert_eq!(r.error_fields(), ["expires_at"]);
}

#[tokio::test]
async fn invitations_are_single_use_expiring_and_bound_to_the_address() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    let t = app.tenant(&owner).await;
    let newbie = app.user("newbie").await;
    let r = post("/settings/team/invitations")
        .bearer(&owner.token)
        .json(json!({"email": newbie.email.to_uppercase(), "role": "member"}))
        .send(&router)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let url = r.json["accept_url"].as_str().unwrap();
    assert!(url.starts_with("http://portal.test/invitations/") && url.ends_with("/accept"));
    let token = accept_token(&r);
    let listed = get("/settings/team/invitations")
        .bearer(&owner.token)
        .send(&router)
        .await;
    assert_eq!(ids(&listed.json, "id"), [r.json["id"].as_str().unwrap()]);
    assert!(!listed.text.contains(&token), "the token is never listed");

    // someone else cannot use it
    let stranger = app.user("stranger").await;
    post(&format!("/invitations/{token}/accept"))
        .bearer(&stranger.token)
        .send(&router)
        .await
        .problem(403);

    let r = post(&format!("/invitations/{token}/accept"))
        .bearer(&newbie.token)
        .send(&router)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["tenant_id"], t.to_string());
    assert_eq!(r.json["role"], "member");
    let members = app.count("memberships").await;
    post(&format!("/invitations/{token}/accept"))
        .bearer(&newbie.token)
        .send(&router)
        .await
        .problem(409);
    assert_eq!(app.count("memberships").await, members);
    post(&format!("/invitations/{}/accept", "0".repeat(64)))
        .bearer(&newbie.token)
        .send(&router)
        .await
        .problem(404);
    post("/invitations/short/accept")
        .bearer(&newbie.token)
        .send(&router)
        .await
        .problem(404);

    // expired
    let late = app.user("late").await;
    let r = post("/settings/team/invitations")
        .bearer(&owner.token)
        .json(json!({"email": late.email, "role": "viewer"}))
        .send(&router)
        .await;
    let token = accept_token(&r);
    sqlx::query("update invitations set expires_at = now() - interval '1 minute' where email = $1")
        .bind(&late.email)
        .execute(&app.db.owner)
        .await
        .unwrap();
    post(&format!("/invitations/{token}/accept"))
        .bearer(&late.token)
        .send(&router)
        .await
        .problem(410);

    // already a member; only owners invite owners
    let r = post("/settings/team/invitations")
        .bearer(&owner.token)
        .json(json!({"email": newbie.email, "role": "viewer"}))
        .send(&router)
        .await;
    r.problem(409);
    let admin = app.user("admin").await;
    app.add_member(t, &admin, Role::Admin).await;
    let r = post("/settings/team/invitations")
        .bearer(&admin.token)
        .tenant(t)
        .json(json!({"email": "boss@example.com", "role": "owner"}))
        .send(&router)
        .await;
    assert_eq!(r.error_fields(), ["role"]);
    let r = post("/settings/team/invitations")
        .bearer(&admin.token)
        .tenant(t)
        .json(json!({"email": "not an email", "role": "viewer"}))
        .send(&router)
        .await;
    assert_eq!(r.error_fields(), ["email"]);
}

#[tokio::test]
async fn concurrent_accepts_of_one_invitation_admit_exactly_one() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    app.tenant(&owner).await;
    let newbie = app.user("newbie").await;
    let r = post("/settings/team/invitations")
        .bearer(&owner.token)
        .json(json!({"email": newbie.email, "role": "member"}))
        .send(&router)
        .await;
    let token = accept_token(&r);
    let path = format!("/invitations/{token}/accept");
    let (a, b) = tokio::join!(
        post(&path).bearer(&newbie.token).send(&router),
        post(&path).bearer(&newbie.token).send(&router)
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
}

#[tokio::test]
async fn the_last_owner_can_be_neither_demoted_nor_removed() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    let t = app.tenant(&owner).await;
    let me = format!("/settings/team/members/{}", owner.id);
    patch(&me)
        .bearer(&owner.token)
        .json(json!({"role": "admin"}))
        .send(&router)
        .await
        .problem(409);
    delete(&me).bearer(&owner.token).send(&router).await.problem(409);

    let second = app.user("second").await;
    app.add_member(t, &second, Role::Admin).await;
    // an admin cannot touch an owner or make one
    patch(&me)
        .bearer(&second.token)
        .tenant(t)
        .json(json!({"role": "viewer"}))
        .send(&router)
        .await
        .problem(403);
    let promote = format!("/settings/team/members/{}", second.id);
    patch(&promote)
        .bearer(&second.token)
        .tenant(t)
        .json(json!({"role": "owner"}))
        .send(&router)
        .await
        .problem(403);
    let r = patch(&promote)
        .bearer(&owner.token)
        .header("if-match", "\"1\"")
        .json(json!({"role": "owner"}))
        .send(&router)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["etag"], "\"2\"");
    patch(&promote)
        .bearer(&owner.token)
        .header("if-match", "\"1\"")
        .json(json!({"role": "admin"}))
        .send(&router)
        .await
        .problem(412);

    // two owners demoting each other at once: one wins, an owner remains
    let (a, b) = tokio::join!(
        patch(&me)
            .bearer(&second.token)
            .tenant(t)
            .json(json!({"role": "admin"}))
            .send(&router),
        patch(&promote)
            .bearer(&owner.token)
            .json(json!({"role": "admin"}))
            .send(&router)
    );
    // The loser is refused either as the last owner (409) or, when it is authorised after the
    // winner committed, as an admin touching an owner (403).
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert!(statuses == [200, 409] || statuses == [200, 403], "{statuses:?}");
    let owners: i64 = sqlx::query_scalar("select count(*) from memberships where tenant_id = $1 and role = 'owner'")
        .bind(t)
        .fetch_one(&app.db.owner)
        .await
        .unwrap();
    assert_eq!(owners, 1);
}

#[tokio::test]
async fn removing_a_member_revokes_their_keys_and_members_may_leave() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    let t = app.tenant(&owner).await;
    let admin = app.user("admin").await;
    app.add_member(t, &admin, Role::Admin).await;
    let r = post("/settings/api-keys")
        .bearer(&admin.token)
        .tenant(t)
        .json(json!({"name": "mine", "scopes": ["write"]}))
        .send(&router)
        .await;
    let key = r.json["secret"].as_str().unwrap().to_owned();
    assert_eq!(get("/settings/team").bearer(&key).send(&router).await.status, 200);
    let r = delete(&format!("/settings/team/members/{}", admin.id))
        .bearer(&owner.token)
        .send(&router)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    get("/settings/team").bearer(&key).send(&router).await.problem(401);
    get("/settings/team")
        .bearer(&admin.token)
        .tenant(t)
        .send(&router)
        .await
        .problem(404);

    let viewer = app.user("viewer").await;
    app.add_member(t, &viewer, Role::Viewer).await;
    let r = delete(&format!("/settings/team/members/{}", viewer.id))
        .bearer(&viewer.token)
        .tenant(t)
        .send(&router)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let log = get("/settings/audit-log")
        .bearer(&owner.token)
        .query("action=team.member.removed")
        .send(&router)
        .await;
    assert_eq!(log.json["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn lists_paginate_with_cursors() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    app.tenant(&owner).await;
    for n in 0..5 {
        let r = post("/settings/api-keys")
            .bearer(&owner.token)
            .json(json!({"name": format!("k{n}"), "scopes": ["read"]}))
            .send(&router)
            .await;
        assert_eq!(r.status, 201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/settings/api-keys?limit=2".to_owned(),
            Some(c) => format!("/settings/api-keys?limit=2&cursor={c}"),
        };
        let r = get(&path).bearer(&owner.token).send(&router).await;
        assert_eq!(r.status, 200, "{}", r.text);
        seen.extend(ids(&r.json, "name"));
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["k4", "k3", "k2", "k1", "k0"]);
    let r = get("/settings/api-keys?limit=0")
        .bearer(&owner.token)
        .send(&router)
        .await;
    assert_eq!(r.error_fields(), ["limit"]);
    let r = get("/settings/api-keys?cursor=")
        .bearer(&owner.token)
        .send(&router)
        .await;
    assert_eq!(r.status, 200, "an empty cursor is the first page");
    let r = get("/settings/api-keys?cursor=garbage")
        .bearer(&owner.token)
        .send(&router)
        .await;
    assert_eq!(r.error_fields(), ["cursor"]);
    let r = get("/settings/api-keys?limit=abc")
        .bearer(&owner.token)
        .send(&router)
        .await;
    r.problem(422);
}

/// RLS holds even for a query that forgets its tenant filter.
#[tokio::test]
async fn row_level_security_holds_when_a_query_forgets_the_tenant() {
    let app = TestApp::new().await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let a = app.tenant(&ann).await;
    let b = app.tenant(&bob).await;
    app.api_key(a, Role::Admin).await;
    app.api_key(b, Role::Admin).await;
    app.api_key(b, Role::Viewer).await;

    let scope = shared::domain::Scope {
        actor: shared::domain::Actor::User {
            user_id: bob.id,
            email: bob.email.clone(),
        },
        tenant: Some((b, Role::Owner)),
        request_id: "t".into(),
    };
    let mut tx = shared::adapters::pg::begin(&app.db.app, &scope).await.unwrap();
    let visible: Vec<Uuid> = sqlx::query_scalar("select tenant_id from api_keys")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(visible, [b, b], "only tenant B's keys, with no WHERE clause");
    let memberships: Vec<Uuid> = sqlx::query_scalar("select tenant_id from memberships")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(memberships, [b]);
    let tenants: Vec<Uuid> = sqlx::query_scalar("select id from tenants")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(tenants, [b]);
    let touched = sqlx::query("update api_keys set name = 'pwned'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(touched, 2);
    let forged =
        sqlx::query("insert into audit_log (tenant_id, action, target_type, target_id) values ($1, 'x', 'y', 'z')")
            .bind(a)
            .execute(&mut *tx)
            .await;
    assert!(forged.is_err(), "writing into another tenant is refused by the policy");
    tx.rollback().await.unwrap();

    // No tenant set at all: nothing visible.
    let n: i64 = sqlx::query_scalar("select count(*) from api_keys")
        .fetch_one(&app.db.app)
        .await
        .unwrap();
    assert_eq!(n, 0);
    // And the app role cannot switch RLS off or read the owner's way.
    let off = sqlx::query("set row_security = off").execute(&app.db.app).await;
    let n: Result<i64, _> = sqlx::query_scalar("select count(*) from api_keys")
        .fetch_one(&app.db.app)
        .await;
    assert!(off.is_err() || n.is_err() || n.unwrap() == 0);
    let bypass: bool = sqlx::query_scalar("select rolbypassrls from pg_roles where rolname = current_user")
        .fetch_one(&app.db.app)
        .await
        .unwrap();
    assert!(!bypass);
    let audit_delete = sqlx::query("delete from audit_log").execute(&app.db.app).await;
    assert!(audit_delete.is_err(), "the audit log is append-only for the app");
}

#[tokio::test]
async fn a_removed_or_demoted_admins_invitations_grant_nothing() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    let t = app.tenant(&owner).await;
    let admin = app.user("admin").await;
    app.add_member(t, &admin, Role::Admin).await;
    let sidekick = app.user("sidekick").await;
    let r = post("/settings/team/invitations")
        .bearer(&admin.token)
        .tenant(t)
        .json(json!({"email": sidekick.email, "role": "admin"}))
        .send(&router)
        .await;
    let token = accept_token(&r);
    // the owner removes the admin: the open invitation goes with them
    let r = delete(&format!("/settings/team/members/{}", admin.id))
        .bearer(&owner.token)
        .send(&router)
        .await;
    assert_eq!(r.status, 204);
    post(&format!("/invitations/{token}/accept"))
        .bearer(&sidekick.token)
        .send(&router)
        .await
        .problem(410);

    // a demoted admin's admin-level invitation is withdrawn too
    let admin2 = app.user("admin2").await;
    app.add_member(t, &admin2, Role::Admin).await;
    let other = app.user("other").await;
    let r = post("/settings/team/invitations")
        .bearer(&admin2.token)
        .tenant(t)
        .json(json!({"email": other.email, "role": "member"}))
        .send(&router)
        .await;
    let token = accept_token(&r);
    let r = patch(&format!("/settings/team/members/{}", admin2.id))
        .bearer(&owner.token)
        .json(json!({"role": "member"}))
        .send(&router)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    post(&format!("/invitations/{token}/accept"))
        .bearer(&other.token)
        .send(&router)
        .await
        .problem(410);
    assert_eq!(app.count("memberships").await, 2, "nobody joined");
}

#[tokio::test]
async fn an_unverified_email_claim_accepts_no_invitation() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    app.tenant(&owner).await;
    let r = post("/settings/team/invitations")
        .bearer(&owner.token)
        .json(json!({"email": "victim@example.com", "role": "admin"}))
        .send(&router)
        .await;
    let token = accept_token(&r);
    let now = chrono::Utc::now().timestamp();
    let unverified = sign(
        &json!({"sub": "attacker", "email": "victim@example.com", "email_verified": false,
        "iss": testkit::ISSUER, "aud": testkit::AUDIENCE, "iat": now, "exp": now + 600}),
    );
    post(&format!("/invitations/{token}/accept"))
        .bearer(&unverified)
        .send(&router)
        .await
        .problem(403);
    let no_claim = sign(&json!({"sub": "attacker2", "email": "victim@example.com",
        "iss": testkit::ISSUER, "aud": testkit::AUDIENCE, "iat": now, "exp": now + 600}));
    post(&format!("/invitations/{token}/accept"))
        .bearer(&no_claim)
        .send(&router)
        .await
        .problem(403);
    assert_eq!(app.count("memberships").await, 1);
}

#[tokio::test]
async fn an_idempotency_key_is_bound_to_its_tenant() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    let a = app.tenant(&owner).await;
    let b = app.tenant(&owner).await;
    let body = json!({"email": "x@example.com", "role": "viewer"});
    let send = |t: Uuid| {
        post("/settings/team/invitations")
            .bearer(&owner.token)
            .tenant(t)
            .header("idempotency-key", "same")
            .json(body.clone())
            .send(&router)
    };
    assert_eq!(send(a).await.status, 201);
    let r = send(b).await;
    assert_eq!(r.error_fields(), ["Idempotency-Key"], "never A's stored answer in B");
    assert_eq!(app.count("invitations").await, 1);
}

#[tokio::test]
async fn an_api_key_never_outranks_its_creator_now() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    let t = app.tenant(&owner).await;
    let admin = app.user("admin").await;
    app.add_member(t, &admin, Role::Admin).await;
    let r = post("/settings/api-keys")
        .bearer(&admin.token)
        .tenant(t)
        .json(json!({"name": "k", "scopes": ["admin"]}))
        .send(&router)
        .await;
    let key = r.json["secret"].as_str().unwrap().to_owned();
    assert_eq!(get("/settings/audit-log").bearer(&key).send(&router).await.status, 200);
    // the creator is made a viewer behind the key's back (no API involved): the key follows
    sqlx::query("update memberships set role = 'viewer' where user_id = $1")
        .bind(admin.id)
        .execute(&app.db.owner)
        .await
        .unwrap();
    get("/settings/audit-log").bearer(&key).send(&router).await.problem(403);
    assert_eq!(get("/settings/team").bearer(&key).send(&router).await.status, 200);
    // and stops working when the creator is gone
    sqlx::query("delete from memberships where user_id = $1")
        .bind(admin.id)
        .execute(&app.db.owner)
        .await
        .unwrap();
    get("/settings/team").bearer(&key).send(&router).await.problem(401);
}

#[tokio::test]
async fn an_invitation_made_with_an_admin_api_key_is_its_creators_and_can_be_accepted() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    let t = app.tenant(&owner).await;
    let key = app.api_key(t, Role::Admin).await;
    let newbie = app.user("newbie").await;
    let r = post("/settings/team/invitations")
        .bearer(&key)
        .json(json!({"email": newbie.email, "role": "member"}))
        .send(&router)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["invited_by"], json!(owner.id), "the key's creator invites");
    let token = accept_token(&r);
    let r = post(&format!("/invitations/{token}/accept"))
        .bearer(&newbie.token)
        .send(&router)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json["tenant_id"].as_str(), r.json["role"].as_str()),
        (Some(t.to_string().as_str()), Some("member"))
    );

    // A key whose creator is gone is no credential at all (and could not invite: its
    // invitation could never be accepted).
    sqlx::query("update api_keys set created_by = null where tenant_id = $1")
        .bind(t)
        .execute(&app.db.owner)
        .await
        .unwrap();
    let before = app.count("invitations").await;
    post("/settings/team/invitations")
        .bearer(&key)
        .json(json!({"email": "late@example.test", "role": "member"}))
        .send(&router)
        .await
        .problem(401);
    assert_eq!(app.count("invitations").await, before);
}

#[tokio::test]
async fn a_nul_in_any_query_parameter_is_a_422_naming_it_not_a_500() {
    let (app, router) = app().await;
    let owner = app.user("owner").await;
    app.tenant(&owner).await;
    for query in ["action=member.invited%00", "action=%00", "limit=10&action=a%00b"] {
        let r = get("/settings/audit-log")
            .bearer(&owner.token)
            .query(query)
            .send(&router)
            .await;
        assert_eq!(r.status, 422, "{query}: {}", r.text);
        assert_eq!(r.error_fields(), ["action"], "{query}");
    }
    let r = get("/settings/audit-log")
        .bearer(&owner.token)
        .query("action=member.invited")
        .send(&router)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
