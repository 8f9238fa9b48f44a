//! The request context: who is calling ([`Authed`]) and, for tenant routes, in which tenant
//! with at least which role ([`TenantCtx`]). Auth is verified here, in the function, for every
//! request (the local emulator passes no authorizer claims).
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sqlx::PgPool;
use std::marker::PhantomData;
use std::sync::Arc;
use uuid::Uuid;

use super::ApiError;
use super::router::RequestId;
use crate::config::Config;
use crate::domain::{DomainError, Role, Scope};
use crate::services::auth::{AuthError, Authenticator, TenantChoice};

pub const TENANT_HEADER: &str = "x-tenant-id";

/// What every HTTP function builds once in `main`: the pool, the authenticator, the config.
#[derive(Clone)]
pub struct Core {
    pub db: PgPool,
    pub auth: Arc<Authenticator>,
    pub config: Arc<Config>,
}

impl Core {
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let db = crate::adapters::pg::pool(&config.database_url, config.database_max_connections)?;
        let auth = Arc::new(Authenticator::new(&config.jwt, db.clone()));
        Ok(Self {
            db,
            auth,
            config: Arc::new(config),
        })
    }
}

/// An authenticated caller; the tenant is optional (profile, my tenants, accepting an invite).
pub struct Authed {
    pub scope: Scope,
}

fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not valid"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token)),
        _ => Err(ApiError::Unauthorized("use Authorization: Bearer <token or API key>")),
    }
}

async fn identify(parts: &Parts, core: &Core) -> Result<(Scope, TenantChoice), ApiError> {
    let tenant_header = parts.headers.get(TENANT_HEADER).and_then(|v| v.to_str().ok());
    let identity = core
        .auth
        .authenticate(bearer(parts)?, tenant_header)
        .await
        .map_err(|e| match e {
            AuthError::Missing => ApiError::Unauthorized("send Authorization: Bearer <token or API key>"),
            AuthError::Invalid => ApiError::Unauthorized("the token or API key is not valid or has expired"),
            AuthError::Unavailable(reason) => ApiError::Unavailable(reason),
        })?;
    let request_id = parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let tenant = match identity.tenant {
        TenantChoice::Member { tenant_id, role } => Some((tenant_id, role)),
        _ => None,
    };
    if let Some((tenant_id, _)) = tenant {
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant_id));
    }
    Ok((
        Scope {
            actor: identity.actor,
            tenant,
            request_id,
        },
        identity.tenant,
    ))
}

impl<S> FromRequestParts<S> for Authed
where
    Core: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let core = Core::from_ref(state);
        let (scope, _) = identify(parts, &core).await?;
        Ok(Self { scope })
    }
}

/// The least role a route needs, as a type: `TenantCtx<min::Admin>`.
pub mod min {
    use crate::domain::Role;

    pub trait MinRole: Send + Sync + 'static {
        const ROLE: Role;
    }
    pub struct Viewer;
    pub struct Member;
    pub struct Admin;
    pub struct Owner;
    impl MinRole for Viewer {
        const ROLE: Role = Role::Viewer;
    }
    impl MinRole for Member {
        const ROLE: Role = Role::Member;
    }
    impl MinRole for Admin {
        const ROLE: Role = Role::Admin;
    }
    impl MinRole for Owner {
        const ROLE: Role = Role::Owner;
    }
}

/// A caller acting in a tenant they belong to, with at least role `R`. Another tenant (or one
/// the caller does not belong to) answers 404, never 403; a too-low role answers 403.
pub struct TenantCtx<R: min::MinRole> {
    pub scope: Scope,
    pub tenant_id: Uuid,
    pub role: Role,
    _min: PhantomData<R>,
}

impl<R, S> FromRequestParts<S> for TenantCtx<R>
where
    R: min::MinRole,
    Core: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let core = Core::from_ref(state);
        let (scope, choice) = identify(parts, &core).await?;
        match choice {
            TenantChoice::Member { tenant_id, role } if role >= R::ROLE => Ok(Self {
                scope,
                tenant_id,
                role,
                _min: PhantomData,
            }),
            TenantChoice::Member { role, .. } => {
                Err(DomainError::Forbidden(format!("this needs the {} role or higher; you are {role}", R::ROLE)).into())
            }
            TenantChoice::NotMember => Err(DomainError::NotFound.into()),
            TenantChoice::NotChosen => Err(ApiError::BadRequest {
                slug: "tenant-required",
                detail: "send X-Tenant-Id with one of your tenants (GET /tenants)".into(),
            }),
        }
    }
}
