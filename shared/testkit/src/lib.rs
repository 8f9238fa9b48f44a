//! Test kit: a fresh, uniquely named Postgres database per test with the migrations applied
//! (owner and application-role pools), tenant/user/token/API-key factories, and an in-process
//! request helper that drives any function's router (no Lambda runtime needed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde_json::Value;
use shared::config::{Config, JwksSource, JwtConfig};
use shared::domain::{Role, secret};
use shared::http::Core;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;
use std::sync::Arc;
use tower::ServiceExt;
use uuid::Uuid;

#[cfg(feature = "analytics")]
pub mod analytics;
pub mod billing;
#[cfg(feature = "aws")]
pub mod crm;
#[cfg(feature = "email")]
pub mod email;
#[cfg(feature = "media")]
pub mod media;

/// The project's migrations, embedded (also what `portal-dev migrate` applies).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "portal-api";
pub const KID: &str = "test-key";
const TEST_KEY_PEM: &[u8] = include_bytes!("../keys/test-key.pem");

/// Where the test databases are created: an owner role with CREATEDB (the local stack makes
/// `portal_owner`). Override with `TEST_OWNER_DATABASE_URL`.
pub fn owner_url() -> String {
    std::env::var("TEST_OWNER_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://portal_owner:portal_owner@127.0.0.1:5432/postgres".to_owned())
}

pub fn app_password() -> String {
    std::env::var("TEST_APP_PASSWORD").unwrap_or_else(|_| "portal_app".to_owned())
}

/// A database of its own for one test: migrated, with a pool as the owner (for arranging
/// data, bypassing RLS) and one as `portal_app` (what the functions use, under RLS).
pub struct TestDb {
    pub name: String,
    pub owner: PgPool,
    pub app: PgPool,
    /// As `portal_billing` (billing-sync and reconciliation: the Stripe mirrors of every tenant).
    pub billing: PgPool,
}

async fn drop_stale_databases(admin: &PgPool) {
    let cutoff = chrono::Utc::now().timestamp() - 3 * 3600;
    let names: Vec<String> = sqlx::query_scalar("select datname from pg_database where datname like 't\\_%'")
        .fetch_all(admin)
        .await
        .unwrap_or_default();
    for name in names {
        let stamp = name.split('_').nth(1).and_then(|s| s.parse::<i64>().ok());
        if stamp.is_some_and(|s| s < cutoff) {
            let _ = sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
                .execute(admin)
                .await;
        }
    }
}

impl TestDb {
    pub async fn new() -> Self {
        let admin_options = PgConnectOptions::from_str(&owner_url())
            .expect("TEST_OWNER_DATABASE_URL")
            .disable_statement_logging();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(admin_options.clone())
            .await
            .expect("connect as the owner role: run `local/up --services-only` first");
        static CLEANED: std::sync::Once = std::sync::Once::new();
        let mut clean = false;
        CLEANED.call_once(|| clean = true);
        if clean {
            drop_stale_databases(&admin).await;
        }
        let name = format!("t_{}_{}", chrono::Utc::now().timestamp(), Uuid::new_v4().simple());
        sqlx::query(&format!("create database \"{name}\""))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;

        let owner = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(admin_options.clone().database(&name))
            .await
            .expect("connect to the test database");
        MIGRATOR.run(&owner).await.expect("migrations apply");
        let app_options = admin_options
            .clone()
            .username("portal_app")
            .password(&app_password())
            .database(&name);
        let app = PgPoolOptions::new().max_connections(4).connect_lazy_with(app_options);
        let billing_options = admin_options
            .username("portal_billing")
            .password(&std::env::var("TEST_BILLING_PASSWORD").unwrap_or_else(|_| "portal_billing".to_owned()))
            .database(&name);
        let billing = PgPoolOptions::new()
            .max_connections(8)
            .connect_lazy_with(billing_options);
        Self {
            name,
            owner,
            app,
            billing,
        }
    }
}

pub const DEMO_TENANT: &str = "00000000-0000-4000-8000-000000000001";
pub const DEMO_OWNER: &str = "00000000-0000-4000-8000-0000000000a1";
pub const DEMO_MEMBER: &str = "00000000-0000-4000-8000-0000000000a2";
/// Local-only demo key (admin of the demo tenant), seeded so events/ files work without expiry.
pub const DEMO_API_KEY: &str = "pk_demo0001_localdevsecretlocaldevsecret00";

/// The local stack's demo data, idempotent: tenant "Demo Co", its owner and a member, and the
/// demo API key. Used by `portal-dev seed` and by tests that replay events/ files.
pub async fn seed_demo(owner: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = owner.begin().await?;
    sqlx::query("insert into tenants (id, name) values ($1::uuid, 'Demo Co') on conflict (id) do nothing")
        .bind(DEMO_TENANT)
        .execute(&mut *tx)
        .await?;
    for (id, subject, email, name, role) in [
        (DEMO_OWNER, "dev-owner", "owner@demo.local", "Demo Owner", "owner"),
        (DEMO_MEMBER, "dev-member", "member@demo.local", "Demo Member", "member"),
    ] {
        sqlx::query("insert into users (id, subject, email, name) values ($1::uuid, $2, $3, $4) on conflict (subject) do update set email = excluded.email, name = excluded.name")
            .bind(id)
            .bind(subject)
            .bind(email)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into memberships (tenant_id, user_id, role) select $1::uuid, id, $3 from users where subject = $2 \
             on conflict (tenant_id, user_id) do update set role = excluded.role",
        )
        .bind(DEMO_TENANT)
        .bind(subject)
        .bind(role)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "insert into api_keys (id, tenant_id, name, prefix, secret_hash, role, scopes, created_by) \
         values ('00000000-0000-4000-8000-0000000000b1', $1::uuid, 'Local demo key', 'demo0001', $2, 'admin', array['admin'], $3::uuid) \
         on conflict (id) do update set revoked_at = null",
    )
    .bind(DEMO_TENANT)
    .bind(secret::sha256(DEMO_API_KEY))
    .bind(DEMO_OWNER)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into analytics_sites (id, tenant_id, name, domain, site_key, allowed_origins) \
         values ($1::uuid, $2::uuid, 'Demo site', 'localhost', $3, array['http://localhost:8000', 'http://127.0.0.1:8000']) \
         on conflict (id) do nothing",
    )
    .bind(DEMO_SITE)
    .bind(DEMO_TENANT)
    .bind(DEMO_SITE_KEY)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The demo tenant's analytics site (origins http://localhost:8000 and http://127.0.0.1:8000).
pub const DEMO_SITE: &str = "00000000-0000-4000-8000-0000000000d1";
pub const DEMO_SITE_KEY: &str = "site_demo0001localdev";

/// A user known to the test app, with a valid token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub subject: String,
    pub email: String,
    pub token: String,
}

/// A migrated database plus the [`Core`] the functions build in `main`, pointed at it.
pub struct TestApp {
    pub db: TestDb,
    pub core: Core,
}

pub fn test_config(database_url: String) -> Config {
    Config {
        database_url,
        database_max_connections: 4,
        jwt: JwtConfig {
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            jwks: JwksSource::File(concat!(env!("CARGO_MANIFEST_DIR"), "/keys/test-jwks.json").into()),
        },
        portal_base_url: "http://portal.test".to_owned(),
        invitation_ttl_hours: 72,
        function_name: "test".to_owned(),
    }
}

impl TestApp {
    pub async fn new() -> Self {
        let db = TestDb::new().await;
        let config = test_config(String::new());
        let core = Core {
            db: db.app.clone(),
            auth: Arc::new(shared::services::auth::Authenticator::new(&config.jwt, db.app.clone())),
            config: Arc::new(config),
        };
        Self { db, core }
    }

    /// A user row plus a token for it.
    pub async fn user(&self, label: &str) -> TestUser {
        let subject = format!("{label}-{}", Uuid::new_v4().simple());
        let email = format!("{subject}@example.test");
        let id: Uuid = sqlx::query_scalar("insert into users (subject, email, name) values ($1, $2, $3) returning id")
            .bind(&subject)
            .bind(&email)
            .bind(label)
            .fetch_one(&self.db.owner)
            .await
            .unwrap();
        let token = token(&subject, &email, 3600);
        TestUser {
            id,
            subject,
            email,
            token,
        }
    }

    /// A tenant with `owner` as its owner.
    pub async fn tenant(&self, owner: &TestUser) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query("insert into tenants (id, name) values ($1, $2)")
            .bind(id)
            .bind(format!("Tenant {}", &id.simple().to_string()[..8]))
            .execute(&self.db.owner)
            .await
            .unwrap();
        self.add_member(id, owner, Role::Owner).await;
        id
    }

    pub async fn add_member(&self, tenant: Uuid, user: &TestUser, role: Role) {
        sqlx::query("insert into memberships (tenant_id, user_id, role) values ($1, $2, $3)")
            .bind(tenant)
            .bind(user.id)
            .bind(role.as_str())
            .execute(&self.db.owner)
            .await
            .unwrap();
    }

    /// A live API key of `tenant` with `role`; returns the bearer secret.
    pub async fn api_key(&self, tenant: Uuid, role: Role) -> String {
        let key = secret::new_api_key().unwrap();
        let scope = match role {
            Role::Viewer => "read",
            Role::Member => "write",
            _ => "admin",
        };
        sqlx::query(
            "insert into api_keys (id, tenant_id, name, prefix, secret_hash, role, scopes, created_by) \
             values ($1, $2, 'test', $3, $4, $5, $6, \
                     (select user_id from memberships where tenant_id = $2 and role = 'owner' order by created_at limit 1))",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(&key.prefix)
        .bind(&key.hash)
        .bind(role.min(Role::Admin).as_str())
        .bind(vec![scope])
        .execute(&self.db.owner)
        .await
        .unwrap();
        key.token
    }

    /// Puts `tenant` on `plan` (a live subscription mirrored as billing-sync would, with a
    /// price of that plan): what a tenant that paid looks like to the rest of the product.
    pub async fn subscribe(&self, tenant: Uuid, plan: &str) -> String {
        let price = format!("price_test_{plan}");
        let customer = format!("cus_test_{}", tenant.simple());
        let subscription = format!("sub_test_{}", Uuid::new_v4().simple());
        let owner = &self.db.owner;
        sqlx::query(
            "insert into billing_prices (id, plan_code, currency, unit_amount, interval)              values ($1, $2, 'usd', 4900, 'month') on conflict (id) do nothing",
        )
        .bind(&price)
        .bind(plan)
        .execute(owner)
        .await
        .unwrap();
        sqlx::query(
            "insert into billing_accounts (tenant_id, stripe_customer_id) values ($1, $2) on conflict do nothing",
        )
        .bind(tenant)
        .bind(&customer)
        .execute(owner)
        .await
        .unwrap();
        // A tenant already linked keeps its customer.
        let customer: String =
            sqlx::query_scalar("select stripe_customer_id from billing_accounts where tenant_id = $1")
                .bind(tenant)
                .fetch_one(owner)
                .await
                .unwrap();
        let now = chrono::Utc::now().timestamp();
        sqlx::query(
            "insert into stripe_subscriptions (id, customer_id, status, price_id, quantity, created,                  current_period_start, current_period_end, raw, gate_terminal, gate_created, gate_rank, gate_source)              values ($1, $2, 'active', $3, 1, $4, $4, $4 + 2592000, '{}', false, $4, 2, 'test')",
        )
        .bind(&subscription)
        .bind(&customer)
        .bind(&price)
        .bind(now)
        .execute(owner)
        .await
        .unwrap();
        subscription
    }

    /// A website of `tenant` (an analytics site: the CMS's site too); returns its id and public
    /// site key.
    pub async fn site(&self, tenant: Uuid, domain: &str) -> (Uuid, String) {
        let id = Uuid::now_v7();
        let key = format!("site_{}", Uuid::new_v4().simple());
        sqlx::query(
            "insert into analytics_sites (id, tenant_id, name, domain, site_key, allowed_origins) \
             values ($1, $2, $3, $3, $4, array['https://' || $3])",
        )
        .bind(id)
        .bind(tenant)
        .bind(domain)
        .bind(&key)
        .execute(&self.db.owner)
        .await
        .unwrap();
        (id, key)
    }

    /// Counts rows of a table as the owner (sees every tenant): to prove nothing changed.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&self.db.owner)
            .await
            .unwrap()
    }
}

/// A JWT signed with the committed test key (kid `test-key`), valid for `ttl_secs` (negative:
/// already expired).
pub fn token(subject: &str, email: &str, ttl_secs: i64) -> String {
    sign(&serde_json::json!({
        "sub": subject,
        "email": email,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "email_verified": true,
        "iat": chrono::Utc::now().timestamp(),
        "exp": chrono::Utc::now().timestamp() + ttl_secs,
    }))
}

/// Signs arbitrary claims with the test key (for forged-claims tests).
pub fn sign(claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(KID.to_owned());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(TEST_KEY_PEM).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// An in-process request to a router.
pub struct Req {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

pub fn req(method: Method, path: &str) -> Req {
    Req {
        method,
        path: path.to_owned(),
        headers: Vec::new(),
        body: Vec::new(),
    }
}
pub fn get(path: &str) -> Req {
    req(Method::GET, path)
}
pub fn post(path: &str) -> Req {
    req(Method::POST, path)
}
pub fn patch(path: &str) -> Req {
    req(Method::PATCH, path)
}
pub fn delete(path: &str) -> Req {
    req(Method::DELETE, path)
}

impl Req {
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }
    /// Appends a query string (`a=1&b=2`).
    pub fn query(mut self, query: &str) -> Self {
        self.path = format!(
            "{}{}{query}",
            self.path,
            if self.path.contains('?') { '&' } else { '?' }
        );
        self
    }
    pub fn tenant(self, tenant: Uuid) -> Self {
        self.header("x-tenant-id", &tenant.to_string())
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn json(self, body: Value) -> Self {
        self.raw_json(body.to_string().as_bytes())
    }
    pub fn raw_json(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self.header("content-type", "application/json")
    }

    /// Sends `body` as it is, with whatever content type the headers say.
    pub async fn send_body(mut self, body: Vec<u8>, router: &Router) -> Resp {
        self.body = body;
        self.send(router).await
    }

    pub async fn send(self, router: &Router) -> Resp {
        let mut builder = Request::builder().method(self.method).uri(self.path);
        for (k, v) in &self.headers {
            builder = builder.header(k, v);
        }
        send(router, builder.body(Body::from(self.body)).unwrap()).await
    }
}

/// A response, with the body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts an RFC 9457 problem with this status; returns it.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        assert_eq!(self.content_type(), "application/problem+json", "body: {}", self.text);
        assert_eq!(self.json["status"], status);
        assert!(self.json["type"].is_string() && self.json["title"].is_string());
        &self.json
    }

    /// The `field`s of a 422's errors.
    pub fn error_fields(&self) -> Vec<String> {
        self.problem(422);
        self.json["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    }
}

pub async fn send(router: &Router, request: Request<Body>) -> Resp {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        json,
    }
}

/// Loads an API Gateway HTTP API (v2) event file from `events/` (the same files
/// `cargo lambda invoke --data-file` sends) as the request Lambda would hand the router.
pub fn event_request(relative: &str) -> Request<Body> {
    let path = format!("{}/../../events/{relative}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let request = lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    request.map(|body| Body::from(body.to_vec()))
}

/// Every billing mirror table, whole (bar sync timestamps), as one JSON value: two databases
/// that received the same Stripe events in any order must give equal snapshots.
pub async fn billing_snapshot(db: &PgPool) -> Value {
    let mut snapshot = serde_json::Map::new();
    for (table, order) in [
        ("billing_accounts", "tenant_id"),
        ("stripe_customers", "id"),
        ("stripe_subscriptions", "id"),
        ("stripe_subscription_items", "subscription_id, id"),
        ("stripe_invoices", "id"),
        ("stripe_invoice_lines", "invoice_id, id"),
        ("stripe_invoice_payments", "id"),
        ("stripe_payment_intents", "id"),
        ("stripe_refunds", "id"),
        ("stripe_events", "id"),
    ] {
        let rows: Value = sqlx::query_scalar(&format!(
            "select coalesce(jsonb_agg(to_jsonb(t) - 'synced_at' - 'applied_at' - 'created_at' order by {order}), '[]') \
             from {table} t"
        ))
        .fetch_one(db)
        .await
        .unwrap();
        snapshot.insert(table.to_owned(), rows);
    }
    Value::Object(snapshot)
}

/// The shared fixtures (real provider payloads) live beside the repo in CI; a user's clone may
/// not have them. Returns the directory, or `None` after saying the test is skipped. Under CI
/// (`CI` set to anything but `false`/`0`), a missing or empty directory fails the test instead:
/// a run that checked nothing must not pass there.
pub fn shared_fixtures(sub: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures")
        .join(sub);
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    fixtures_at(dir, ci)
}

/// [`shared_fixtures`] for a given directory and CI flag.
pub fn fixtures_at(dir: std::path::PathBuf, ci: bool) -> Option<std::path::PathBuf> {
    let has_files = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    if has_files {
        return Some(dir);
    }
    if ci {
        panic!(
            "the shared fixtures are missing or empty at {} and CI is set: these tests would check nothing",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: shared fixtures not found at {} (CI has them; a clone may not)",
        dir.display()
    );
    None
}

/// The local stack's Redis (`TEST_REDIS_URL`, default redis://127.0.0.1:6379). Tests use keys
/// and streams of their own (unique names), so what others left there never matters.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The local stack's localstripe (`TEST_STRIPE_API_BASE`, default http://127.0.0.1:8420).
pub fn localstripe_url() -> String {
    std::env::var("TEST_STRIPE_API_BASE").unwrap_or_else(|_| "http://127.0.0.1:8420".to_owned())
}

/// The AWS SDK configuration for the moto server of the local stack (`TEST_AWS_ENDPOINT`,
/// default http://127.0.0.1:5000; credentials test/test, us-east-1). Tests create their own
/// uniquely named tables, queues and buckets in it.
#[cfg(feature = "aws")]
pub async fn moto() -> aws_config::SdkConfig {
    let endpoint = std::env::var("TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .test_credentials()
        .load()
        .await
}

/// A uniquely named Stripe inbox in moto, shaped like template.yaml's `StripeEventsTable` (hash
/// key `event_id`) and `BillingEventsQueue`: returns the table name and the queue URL.
#[cfg(feature = "aws")]
pub async fn stripe_inbox_resources(aws: &aws_config::SdkConfig, prefix: &str) -> (String, String) {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let unique = Uuid::new_v4().simple().to_string();
    let table = format!("{prefix}-stripe-events-{unique}");
    aws_sdk_dynamodb::Client::new(aws)
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("event_id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("event_id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("the moto server answers: run local/up --services-only first");
    let queue = aws_sdk_sqs::Client::new(aws)
        .create_queue()
        .queue_name(format!("{prefix}-billing-events-{unique}"))
        .send()
        .await
        .unwrap();
    (table, queue.queue_url().unwrap().to_owned())
}

/// A uniquely named bucket and queue in moto for CRM imports and exports, shaped like
/// template.yaml's `CrmFilesBucket` and `CrmJobsQueue`.
#[cfg(feature = "aws")]
pub async fn crm_files(aws: &aws_config::SdkConfig, prefix: &str) -> shared::adapters::crm_files::CrmFiles {
    let unique = Uuid::new_v4().simple().to_string();
    let s3 = shared::adapters::aws::s3(aws);
    let bucket = format!("{prefix}-crm-files-{}", &unique[..16]);
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("the moto server answers: run local/up --services-only first");
    let sqs = aws_sdk_sqs::Client::new(aws);
    let queue = sqs
        .create_queue()
        .queue_name(format!("{prefix}-crm-jobs-{unique}"))
        .send()
        .await
        .unwrap();
    shared::adapters::crm_files::CrmFiles {
        s3,
        bucket,
        jobs: shared::adapters::queue::Queue::new(&sqs, queue.queue_url().unwrap()),
    }
}

/// A uniquely named media bucket in moto, shaped like template.yaml's `MediaBucket`; objects are
/// read back at the moto server's URL.
#[cfg(feature = "aws")]
pub async fn media_store(aws: &aws_config::SdkConfig, prefix: &str) -> shared::adapters::media_store::MediaStore {
    let unique = Uuid::new_v4().simple().to_string();
    let s3 = shared::adapters::aws::s3(aws);
    let bucket = format!("{prefix}-media-{}", &unique[..16]);
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("the moto server answers: run local/up --services-only first");
    let endpoint = aws
        .endpoint_url()
        .unwrap_or("http://127.0.0.1:5000")
        .trim_end_matches('/');
    shared::adapters::media_store::MediaStore {
        s3,
        public_base_url: format!("{endpoint}/{bucket}"),
        bucket,
    }
}

/// The connector service on a test database: a fixed local key, the private networks of the
/// fakes allowed, and provider APIs at `bases` (`kind` → a fake's URL).
pub fn connectors(
    db: &PgPool,
    bases: impl IntoIterator<Item = (shared::services::connectors::catalog::Kind, String)>,
) -> shared::services::connectors::Connectors {
    let kek = shared::domain::envelope::LocalKek::from_hex(&"5a".repeat(32)).expect("a 32-byte hex key");
    shared::services::connectors::Connectors::new(
        db.clone(),
        shared::adapters::keys::Keys::Local(kek),
        bases.into_iter().collect(),
        true,
    )
    .expect("an HTTP client")
}

/// The `p` quantile (0..=1, nearest rank) of timings, in milliseconds (sorts them).
pub fn percentile_ms(samples: &mut [std::time::Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len().saturating_sub(1)) as f64 * p).round() as usize;
    samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The machine a benchmark ran on (cores and CPU model), for its printout.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cores} cores, {cpu}")
}

/// The keys the tests sign unsubscribe links with (the functions read `MARKETING_LINK_KEYS`).
#[cfg(feature = "email")]
pub fn link_keys() -> shared::services::marketing::unsubscribe::LinkKeys {
    shared::services::marketing::unsubscribe::LinkKeys::parse(LINK_KEYS).expect("32 characters or more")
}

/// [`link_keys`] as the environment gives them.
pub const LINK_KEYS: &str = "test-link-key-0123456789abcdef0123456789";

#[cfg(test)]
mod fixture_tests {
    use super::fixtures_at;

    #[test]
    fn outside_ci_a_missing_fixture_directory_skips() {
        assert_eq!(fixtures_at("/nonexistent/fixtures/stripe".into(), false), None);
    }

    #[test]
    #[should_panic(expected = "CI is set")]
    fn under_ci_a_missing_fixture_directory_fails() {
        fixtures_at("/nonexistent/fixtures/stripe".into(), true);
    }

    #[test]
    #[should_panic(expected = "missing or empty")]
    fn under_ci_an_empty_fixture_directory_fails() {
        let dir = std::env::temp_dir().join(format!("empty-fixtures-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        fixtures_at(dir, true);
    }

    #[test]
    fn a_directory_with_files_is_used() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        assert_eq!(fixtures_at(dir.clone(), true), Some(dir));
    }
}
