//! Who is calling, and in which tenant: a verified JWT (users) or an API key (`Bearer pk_...`),
//! plus the tenant chosen per request among the caller's memberships.
use sqlx::PgPool;
use uuid::Uuid;

use crate::adapters::jwt::{JwtError, JwtVerifier};
use crate::config::JwtConfig;
use crate::domain::{Actor, Role, secret};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer credential")]
    Missing,
    #[error("credential is not valid")]
    Invalid,
    #[error("authentication is unavailable: {0}")]
    Unavailable(String),
}

/// The tenant the request acts in, as far as the caller is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantChoice {
    /// A tenant the caller belongs to, with the caller's role there.
    Member { tenant_id: Uuid, role: Role },
    /// A tenant was named (or is implied) that the caller does not belong to: answers 404.
    NotMember,
    /// None named, and the caller does not have exactly one tenant.
    NotChosen,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub actor: Actor,
    pub tenant: TenantChoice,
}

/// key id, tenant, role, scopes, creator.
type KeyRow = (Uuid, Uuid, String, Vec<String>, Option<Uuid>);

pub struct Authenticator {
    jwt: JwtVerifier,
    pool: PgPool,
}

impl Authenticator {
    pub fn new(config: &JwtConfig, pool: PgPool) -> Self {
        Self {
            jwt: JwtVerifier::new(config),
            pool,
        }
    }

    /// `bearer` is the credential after `Bearer `; `tenant_header` the raw `X-Tenant-Id`.
    pub async fn authenticate(&self, bearer: Option<&str>, tenant_header: Option<&str>) -> Result<Identity, AuthError> {
        let bearer = bearer
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .ok_or(AuthError::Missing)?;
        let requested = match tenant_header.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(raw) => match Uuid::parse_str(raw) {
                Ok(id) => Some(id),
                Err(_) => {
                    // An unparsable tenant id names no tenant the caller has: still authenticate.
                    let mut identity = self.identify(bearer, None).await?;
                    identity.tenant = TenantChoice::NotMember;
                    return Ok(identity);
                }
            },
        };
        self.identify(bearer, requested).await
    }

    async fn identify(&self, bearer: &str, requested: Option<Uuid>) -> Result<Identity, AuthError> {
        if secret::looks_like_api_key(bearer) {
            self.api_key(bearer, requested).await
        } else {
            self.user(bearer, requested).await
        }
    }

    async fn api_key(&self, token: &str, requested: Option<Uuid>) -> Result<Identity, AuthError> {
        let row: Option<KeyRow> =
            sqlx::query_as("select key_id, tenant_id, role, scopes, created_by from app_auth_api_key($1)")
                .bind(secret::sha256(token))
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let (key_id, tenant_id, role, _scopes, created_by) = row.ok_or(AuthError::Invalid)?;
        let role: Role = role.parse().map_err(|_| AuthError::Invalid)?;
        let tenant = match requested {
            Some(t) if t != tenant_id => TenantChoice::NotMember,
            _ => TenantChoice::Member { tenant_id, role },
        };
        Ok(Identity {
            actor: Actor::ApiKey { key_id, created_by },
            tenant,
        })
    }

    async fn user(&self, token: &str, requested: Option<Uuid>) -> Result<Identity, AuthError> {
        let claims = self.jwt.verify(token).await.map_err(|e| match e {
            JwtError::Keys(reason) => AuthError::Unavailable(reason),
            JwtError::Invalid | JwtError::UnknownKey => AuthError::Invalid,
        })?;
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return Err(AuthError::Invalid);
        }
        // Only a verified address is stored or matched against invitations.
        let email = claims.verified_email().unwrap_or_default().to_owned();
        let (user_id, tenant_id, role): (Uuid, Option<Uuid>, Option<String>) =
            sqlx::query_as("select user_id, tenant_id, role from app_auth_user($1, $2, $3, $4)")
                .bind(&claims.sub)
                .bind(&email)
                .bind(claims.name.as_deref())
                .bind(requested)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let tenant = match (tenant_id, role.and_then(|r| r.parse::<Role>().ok())) {
            (Some(tenant_id), Some(role)) => TenantChoice::Member { tenant_id, role },
            _ if requested.is_some() => TenantChoice::NotMember,
            _ => TenantChoice::NotChosen,
        };
        Ok(Identity {
            actor: Actor::User { user_id, email },
            tenant,
        })
    }
}
