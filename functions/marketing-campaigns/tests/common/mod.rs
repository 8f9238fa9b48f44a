//! What the marketing-campaigns tests share: a tenant with members of every role, the router,
//! and CRM rows written as the CRM writes them.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use axum::Router;
use serde_json::{Value, json};
use shared::domain::{Role, Scope};
use testkit::{Resp, TestApp, TestUser, delete, get, patch, post};
use uuid::Uuid;

pub struct World {
    pub app: TestApp,
    pub api: Router,
    pub owner: TestUser,
    pub member: TestUser,
    pub viewer: TestUser,
    pub tenant: Uuid,
}

pub async fn world() -> World {
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    let member = app.user("member").await;
    app.add_member(tenant, &member, Role::Member).await;
    let viewer = app.user("viewer").await;
    app.add_member(tenant, &viewer, Role::Viewer).await;
    let api = marketing_campaigns::router(app.core.clone(), testkit::link_keys());
    World {
        app,
        api,
        owner,
        member,
        viewer,
        tenant,
    }
}

impl World {
    /// Another tenant with its own owner, on the same database and router.
    pub async fn other_tenant(&self) -> (TestUser, Uuid) {
        let owner = self.app.user("other-owner").await;
        let tenant = self.app.tenant(&owner).await;
        (owner, tenant)
    }

    pub async fn post_as(&self, who: &TestUser, path: &str, body: Value) -> Resp {
        post(path)
            .bearer(&who.token)
            .tenant(self.tenant)
            .json(body)
            .send(&self.api)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.post_as(&self.owner, path, body).await
    }

    pub async fn get_as(&self, who: &TestUser, path: &str, query: &str) -> Resp {
        get(path)
            .bearer(&who.token)
            .tenant(self.tenant)
            .query(query)
            .send(&self.api)
            .await
    }

    pub async fn get(&self, path: &str, query: &str) -> Resp {
        self.get_as(&self.owner, path, query).await
    }

    pub async fn patch(&self, path: &str, body: Value, if_match: Option<&str>) -> Resp {
        let mut r = patch(path).bearer(&self.owner.token).tenant(self.tenant);
        if let Some(tag) = if_match {
            r = r.header("if-match", tag);
        }
        r.json(body).send(&self.api).await
    }

    pub async fn delete_as(&self, who: &TestUser, path: &str) -> Resp {
        delete(path)
            .bearer(&who.token)
            .tenant(self.tenant)
            .send(&self.api)
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.delete_as(&self.owner, path).await
    }

    /// Creates through the API and answers the 201's body.
    pub async fn created(&self, path: &str, body: Value) -> Value {
        let r = self.post(path, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json
    }

    /// A custom contact field of `tenant`, as `POST /crm/custom-fields` stores it.
    pub async fn field(&self, tenant: Uuid, key: &str, field_type: &str, options: &[&str]) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            "insert into crm_custom_fields (id, tenant_id, entity, key, label, type, options) \
             values ($1, $2, 'contact', $3, $3, $4, $5)",
        )
        .bind(id)
        .bind(tenant)
        .bind(key)
        .bind(field_type)
        .bind(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .execute(&self.app.db.owner)
        .await
        .unwrap();
        id
    }

    /// A company of `tenant`.
    pub async fn company(&self, tenant: Uuid, name: &str) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query("insert into crm_companies (id, tenant_id, name) values ($1, $2, $3)")
            .bind(id)
            .bind(tenant)
            .bind(name)
            .execute(&self.app.db.owner)
            .await
            .unwrap();
        id
    }

    /// A contact of `tenant` from a JSON object of its columns (`first_name`, `email`, `tags`,
    /// `lifecycle_stage`, `custom`, `company_id`, `owner_id`, `created_at`), as the CRM stores
    /// them.
    pub async fn contact(&self, tenant: Uuid, c: Value) -> Uuid {
        let id = Uuid::now_v7();
        let text = |k: &str| c[k].as_str().map(str::to_owned);
        let tags: Vec<String> = c["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        sqlx::query(
            "insert into crm_contacts (id, tenant_id, first_name, last_name, email, title, lifecycle_stage, tags, custom, \
             company_id, owner_id, created_at, updated_at) \
             values ($1, $2, coalesce($3, ''), coalesce($4, ''), $5, $6, coalesce($7, 'lead'), $8, $9, $10, $11, \
             coalesce($12, now()), coalesce($12, now()))",
        )
        .bind(id)
        .bind(tenant)
        .bind(text("first_name"))
        .bind(text("last_name"))
        .bind(text("email"))
        .bind(text("title"))
        .bind(text("lifecycle_stage"))
        .bind(tags)
        .bind(if c["custom"].is_object() {
            c["custom"].clone()
        } else {
            json!({})
        })
        .bind(text("company_id").map(|s| Uuid::parse_str(&s).unwrap()))
        .bind(text("owner_id").map(|s| Uuid::parse_str(&s).unwrap()))
        .bind(
            text("created_at").map(|s| chrono::DateTime::parse_from_rfc3339(&s).unwrap().with_timezone(&chrono::Utc)),
        )
        .execute(&self.app.db.owner)
        .await
        .unwrap();
        id
    }

    /// A suppression row of `tenant` as the provider's events would write it.
    pub async fn suppression(&self, tenant: Uuid, email: &str, reason: &str) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query("insert into marketing_suppressions (id, tenant_id, email, reason) values ($1, $2, $3, $4)")
            .bind(id)
            .bind(tenant)
            .bind(email)
            .bind(reason)
            .execute(&self.app.db.owner)
            .await
            .unwrap();
        id
    }
}

impl World {
    /// A saved connector of `tenant` (`sendgrid`, `mailgun`), as `PUT /connectors/{kind}` stores
    /// it (its sealed secret is never opened here).
    pub async fn connect(&self, tenant: Uuid, kind: &str) {
        sqlx::query(
            "insert into connectors (tenant_id, kind, secret, webhook_key) \
             values ($1, $2, '\\x00'::bytea, md5(random()::text))",
        )
        .bind(tenant)
        .bind(kind)
        .execute(&self.app.db.owner)
        .await
        .unwrap();
    }

    /// A template of this tenant, through the API.
    pub async fn template(&self, subject: &str) -> Value {
        self.created(
            "/marketing/templates",
            json!({"name": "Newsletter", "subject": subject,
                "body": "<p>Hello {{ contact.first_name or \"there\" }}</p>"}),
        )
        .await
    }

    /// A draft campaign of this tenant through the API: `extra` (an object) is merged over a
    /// sender identity and `template`.
    pub async fn campaign(&self, template: &Value, extra: Value) -> Value {
        let mut body = json!({"name": "Spring sale", "template_id": template["id"], "from_name": "Acme",
            "from_email": "news@acme.example"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.created("/marketing/campaigns", body).await
    }

    /// The scope the campaign sender acts in for `tenant`.
    pub fn worker(&self, tenant: Uuid) -> Scope {
        Scope::worker(tenant, "campaign-sender", "test".into())
    }

    /// Recipient rows of a campaign by status, as the owner sees them.
    pub async fn recipients(&self, campaign: &str, status: &str) -> i64 {
        sqlx::query_scalar(
            "select count(*) from marketing_campaign_recipients where campaign_id = $1::uuid and status = $2",
        )
        .bind(campaign)
        .bind(status)
        .fetch_one(&self.app.db.owner)
        .await
        .unwrap()
    }
}

pub fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

/// The `field` of each error of a 422, in order.
pub fn fields(r: &Resp) -> Vec<String> {
    let mut f = r.error_fields();
    f.sort();
    f
}
