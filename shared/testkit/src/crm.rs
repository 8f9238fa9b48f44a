//! The CRM's test world, shared by crm-contacts', crm-deals' and crm-import's tests: a fresh
//! database with an owner and a tenant, uniquely named CRM files (bucket and jobs queue) in
//! moto, the router under test over both, and requests made as the owner in the tenant.
use crate::{Req, Resp, TestApp, TestUser, get, patch, post};
use axum::Router;
use serde_json::{Value, json};
use shared::adapters::crm_files::CrmFiles;
use shared::http::Core;
use uuid::Uuid;

pub struct World {
    pub app: TestApp,
    /// The router under test.
    pub api: Router,
    /// The CRM files: the bucket of imports and exports, the jobs queue.
    pub files: CrmFiles,
    pub owner: TestUser,
    pub tenant: Uuid,
}

impl World {
    /// The world with `router` (built from the app's core and the files) under test; the
    /// bucket and queue are named after `prefix`.
    pub async fn new(prefix: &str, router: impl FnOnce(Core, CrmFiles) -> Router) -> Self {
        let app = TestApp::new().await;
        let owner = app.user("owner").await;
        let tenant = app.tenant(&owner).await;
        let files = crate::crm_files(&crate::moto().await, prefix).await;
        let api = router(app.core.clone(), files.clone());
        Self {
            app,
            api,
            files,
            owner,
            tenant,
        }
    }

    /// `r` as the owner, in the tenant, to the router under test.
    pub async fn send(&self, r: Req) -> Resp {
        r.bearer(&self.owner.token).tenant(self.tenant).send(&self.api).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(post(path).json(body)).await
    }

    pub async fn get(&self, path: &str, query: &str) -> Resp {
        self.send(get(path).query(query)).await
    }

    /// A merge patch, with `If-Match` when given.
    pub async fn patch(&self, path: &str, body: Value, if_match: Option<&str>) -> Resp {
        let mut r = patch(path);
        if let Some(tag) = if_match {
            r = r.header("if-match", tag);
        }
        self.send(r.json(body)).await
    }

    /// `body` posted as `who` in `tenant`.
    pub async fn post_as(&self, who: &TestUser, tenant: Uuid, path: &str, body: Value) -> Resp {
        post(path)
            .bearer(&who.token)
            .tenant(tenant)
            .json(body)
            .send(&self.api)
            .await
    }

    /// The presigned upload of an import file, then a PUT of the bytes to moto as a browser
    /// would: the upload's key.
    pub async fn upload_as(&self, who: &TestUser, tenant: Uuid, bytes: Vec<u8>) -> String {
        let r = self
            .post_as(who, tenant, "/crm/imports/uploads", json!({"size": bytes.len()}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["method"], "PUT");
        let mut put = reqwest::Client::new().put(r.json["url"].as_str().expect("an upload url"));
        for (k, v) in r.json["headers"].as_object().expect("upload headers") {
            put = put.header(k, v.as_str().expect("a header value"));
        }
        let resp = put.body(bytes).send().await.expect("the upload's PUT");
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap_or_default());
        r.json["upload_key"].as_str().expect("an upload key").to_owned()
    }

    /// [`World::upload_as`] as the owner in the tenant.
    pub async fn upload(&self, bytes: Vec<u8>) -> String {
        self.upload_as(&self.owner, self.tenant, bytes).await
    }

    /// A count of the tenant's rows: `sql` with the tenant as `$1`, as the database owner.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .bind(self.tenant)
            .fetch_one(&self.app.db.owner)
            .await
            .expect("the count")
    }
}
