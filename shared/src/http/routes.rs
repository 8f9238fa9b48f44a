//! The route table each HTTP function keeps next to its routes: who may call each operation.
//! The handlers enforce it (`Authed`, `TenantCtx<min::X>`); the quality gates (tests/gates)
//! check the table against the OpenAPI document and against the handlers' real behaviour.
use crate::domain::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials (health, docs, public site content).
    Public,
    /// A provider's signature instead of a user (webhooks).
    Signed,
    /// Any authenticated caller; no tenant needed (profile, my tenants, accepting an invite).
    User,
    /// A member of the chosen tenant with at least this role.
    Tenant(Role),
}

#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    /// The path template as in the OpenAPI document (`/settings/api-keys/{id}`).
    pub path: &'static str,
    pub access: Access,
}

impl RouteSpec {
    pub const fn new(method: &'static str, path: &'static str, access: Access) -> Self {
        Self { method, path, access }
    }
}
