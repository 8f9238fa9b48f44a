//! The signed-in user's profile and tenants, and creating a tenant.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::adapters::pg;
use crate::domain::validate::TextSchema;
use crate::domain::{DomainError, PageRequest, ResultPage, Role, Scope, Text, Validator};
use crate::services::audit;
use crate::services::idempotency::{self, Created};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TenantSummary {
    pub id: Uuid,
    pub name: String,
    /// The caller's role in this tenant.
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Profile {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// Pass back in `If-Match` (as the ETag) when updating.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfile {
    /// Display name, 1–100 characters.
    #[schema(value_type = Option<TextSchema<100>>, inline)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// The organisation's name, 1–120 characters.
    #[schema(value_type = TextSchema<120>, inline)]
    pub name: String,
}

fn require_user(scope: &Scope) -> Result<Uuid, DomainError> {
    scope
        .actor
        .user_id()
        .ok_or_else(|| DomainError::Forbidden("this needs a signed-in user, not an API key".into()))
}

type ProfileRow = (Uuid, String, String, i32, DateTime<Utc>, DateTime<Utc>);

fn profile((id, email, name, version, created_at, updated_at): ProfileRow) -> Profile {
    Profile {
        id,
        email,
        name,
        version,
        created_at,
        updated_at,
    }
}

pub async fn me(pool: &PgPool, scope: &Scope) -> Result<Profile, DomainError> {
    let user_id = require_user(scope)?;
    let mut tx = pg::begin(pool, scope).await?;
    let row: Option<ProfileRow> =
        sqlx::query_as("select id, email, name, version, created_at, updated_at from users where id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    row.map(profile).ok_or(DomainError::NotFound)
}

pub async fn update_me(
    pool: &PgPool,
    scope: &Scope,
    input: UpdateProfile,
    if_match: Option<i32>,
) -> Result<Profile, DomainError> {
    let user_id = require_user(scope)?;
    let mut v = Validator::new();
    let name = input
        .name
        .as_deref()
        .and_then(|n| v.field("name", Text::parse(n, 1, 100)));
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    let row: Option<ProfileRow> = sqlx::query_as(
        "update users set name = coalesce($2, name), version = version + 1, updated_at = now() \
         where id = $1 and ($3::int is null or version = $3) \
         returning id, email, name, version, created_at, updated_at",
    )
    .bind(user_id)
    .bind(name.map(Text::into_inner))
    .bind(if_match)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(DomainError::StaleVersion);
    };
    tx.commit().await?;
    Ok(profile(row))
}

/// The caller's tenants (an API key sees its own tenant only), oldest first.
pub async fn my_tenants(
    pool: &PgPool,
    scope: &Scope,
    page: &PageRequest<(DateTime<Utc>, Uuid)>,
) -> Result<ResultPage<TenantSummary>, DomainError> {
    // A user's tenants are read with no tenant set (RLS shows their own memberships then only).
    let unscoped = Scope {
        tenant: None,
        ..scope.clone()
    };
    let mut tx = pg::begin(
        pool,
        if scope.actor.user_id().is_some() {
            &unscoped
        } else {
            scope
        },
    )
    .await?;
    let rows: Vec<TenantSummary> = match (&scope.actor.user_id(), scope.tenant) {
        (Some(user_id), _) => {
            sqlx::query_as(
                "select t.id, t.name, m.role, t.created_at from memberships m join tenants t on t.id = m.tenant_id \
                 where m.user_id = $1 and ($2::timestamptz is null or (t.created_at, t.id) > ($2, $3)) \
                 order by t.created_at, t.id limit $4",
            )
            .bind(user_id)
            .bind(page.after.map(|a| a.0))
            .bind(page.after.map(|a| a.1))
            .bind(page.fetch())
            .fetch_all(&mut *tx)
            .await?
        }
        (None, Some((tenant_id, role))) => {
            sqlx::query_as(
                "select id, name, $2::text as role, created_at from tenants where id = $1 \
                 and ($3::timestamptz is null or (created_at, id) > ($3, $4))",
            )
            .bind(tenant_id)
            .bind(role.as_str())
            .bind(page.after.map(|a| a.0))
            .bind(page.after.map(|a| a.1))
            .fetch_all(&mut *tx)
            .await?
        }
        (None, None) => Vec::new(),
    };
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |t| (t.created_at, t.id)))
}

/// Creates a tenant with the caller as its owner. Honours an idempotency key.
pub async fn create_tenant(
    pool: &PgPool,
    scope: &Scope,
    input: NewTenant,
    idem: Option<&idempotency::IdempotencyKey>,
) -> Result<Created<TenantSummary>, DomainError> {
    let user_id = require_user(scope)?;
    let mut v = Validator::new();
    let name = v.field("name", Text::parse(&input.name, 1, 120));
    v.finish()?;
    let name = name.ok_or(DomainError::NotFound)?;

    // A user-level operation: no tenant is set, whichever tenant the caller was implied into.
    let scope = &Scope {
        tenant: None,
        ..scope.clone()
    };
    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    let tenant_id = Uuid::now_v7();
    pg::set_tenant(&mut tx, tenant_id).await?;
    let created_at: DateTime<Utc> =
        sqlx::query_scalar("insert into tenants (id, name) values ($1, $2) returning created_at")
            .bind(tenant_id)
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("insert into memberships (tenant_id, user_id, role) values ($1, $2, 'owner')")
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        scope,
        tenant_id,
        "tenant.created",
        "tenant",
        &tenant_id.to_string(),
        json!({ "name": name }),
    )
    .await?;
    let tenant = TenantSummary {
        id: tenant_id,
        name: name.into_inner(),
        role: Role::Owner,
        created_at,
    };
    idempotency::store(&mut tx, scope, idem, 201, &tenant).await?;
    tx.commit().await?;
    Ok(Created::Fresh(tenant))
}
