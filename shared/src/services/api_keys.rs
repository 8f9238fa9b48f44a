//! API keys: `Bearer pk_...` credentials for one tenant, stored only as a hash, with scopes
//! that cap their role. The secret is shown once, at creation, and never again.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::adapters::pg;
use crate::domain::validate::TextSchema;
use crate::domain::{DomainError, PageRequest, ResultPage, Role, Scope, Text, Validator, secret};
use crate::services::audit;
use crate::services::idempotency::{self, Created, IdempotencyKey};

/// What a key may do. The key's role is the highest its scopes allow, capped by its creator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    /// Read everything the tenant can see (viewer).
    Read,
    /// Read and change content, CRM and marketing data (member).
    Write,
    /// Also manage the team and settings (admin).
    Admin,
}

impl KeyScope {
    pub fn role(self) -> Role {
        match self {
            KeyScope::Read => Role::Viewer,
            KeyScope::Write => Role::Member,
            KeyScope::Admin => Role::Admin,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Read => "read",
            KeyScope::Write => "write",
            KeyScope::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// The visible part of the key (`pk_<prefix>_...`), to tell keys apart.
    pub prefix: String,
    pub role: Role,
    pub scopes: Vec<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The whole key. Shown only in this response; null when an idempotent retry replays it.
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// A label, 1–100 characters.
    #[schema(value_type = TextSchema<100>, inline)]
    pub name: String,
    /// One to three of read, write, admin.
    #[schema(min_items = 1, max_items = 3)]
    pub scopes: Vec<KeyScope>,
    /// Optional expiry, in the future.
    pub expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, name, prefix, role, scopes, created_by, created_at, expires_at, last_used_at, revoked_at";

pub async fn list(
    pool: &PgPool,
    scope: &Scope,
    page: &PageRequest<(DateTime<Utc>, Uuid)>,
) -> Result<ResultPage<ApiKey>, DomainError> {
    let sql = format!(
        "select {COLUMNS} from api_keys where ($1::timestamptz is null or (created_at, id) < ($1, $2)) \
         order by created_at desc, id desc limit $3"
    );
    pg::page_by_time(pool, scope, &sql, page, |k: &ApiKey| (k.created_at, k.id)).await
}

pub async fn create(
    pool: &PgPool,
    scope: &Scope,
    input: NewApiKey,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<CreatedApiKey>, DomainError> {
    let (tenant_id, my_role) = scope.tenant.ok_or(DomainError::NotFound)?;
    if scope.actor.user_id().is_none() {
        return Err(DomainError::Forbidden(
            "API keys are created by signed-in users, not by other keys".into(),
        ));
    }
    let mut v = Validator::new();
    let name = v.field("name", Text::parse(&input.name, 1, 100));
    if input.scopes.is_empty() {
        v.error("scopes", "required", "name at least one scope: read, write or admin");
    }
    if input.scopes.len() > 3 {
        v.error("scopes", "too_many", "at most 3 scopes");
    }
    if input.expires_at.is_some_and(|e| e <= Utc::now()) {
        v.error("expires_at", "in_the_past", "must be in the future");
    }
    let wanted = input.scopes.iter().map(|s| s.role()).max().unwrap_or(Role::Viewer);
    if wanted > my_role {
        v.error(
            "scopes",
            "exceeds_role",
            format!("a {my_role} cannot create a key with {wanted} rights"),
        );
    }
    v.finish()?;
    let name = name.ok_or(DomainError::NotFound)?;
    let mut scopes: Vec<KeyScope> = input.scopes.clone();
    scopes.sort();
    scopes.dedup();
    let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();

    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    let new = secret::new_api_key()?;
    let key: ApiKey = sqlx::query_as(&format!(
        "insert into api_keys (id, tenant_id, name, prefix, secret_hash, role, scopes, created_by, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(name.as_str())
    .bind(&new.prefix)
    .bind(&new.hash)
    .bind(wanted.as_str())
    .bind(&scopes)
    .bind(scope.actor.user_id())
    .bind(input.expires_at)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        scope,
        tenant_id,
        "api_key.created",
        "api_key",
        &key.id.to_string(),
        json!({ "name": key.name, "scopes": key.scopes }),
    )
    .await?;
    let stored = CreatedApiKey {
        key: key.clone(),
        secret: None,
    };
    idempotency::store(&mut tx, scope, idem, 201, &stored).await?;
    tx.commit().await?;
    Ok(Created::Fresh(CreatedApiKey {
        key,
        secret: Some(new.token),
    }))
}

/// Revokes a key; it stops working at once. Revoking a revoked key changes nothing.
pub async fn revoke(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let (tenant_id, _) = scope.tenant.ok_or(DomainError::NotFound)?;
    let mut tx = pg::begin(pool, scope).await?;
    let revoked: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("select revoked_at from api_keys where id = $1 for update")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    match revoked {
        None => return Err(DomainError::NotFound),
        Some(Some(_)) => return Ok(()),
        Some(None) => {}
    }
    sqlx::query("update api_keys set revoked_at = now() where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        scope,
        tenant_id,
        "api_key.revoked",
        "api_key",
        &id.to_string(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
