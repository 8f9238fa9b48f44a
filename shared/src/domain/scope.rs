use super::Role;
use uuid::Uuid;

/// Who is acting: a signed-in user, or an API key of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User { user_id: Uuid, email: String },
    ApiKey { key_id: Uuid, created_by: Option<Uuid> },
}

impl Actor {
    /// The user behind the request, if any (an API key acts for its tenant, not a person).
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Actor::User { user_id, .. } => Some(*user_id),
            Actor::ApiKey { .. } => None,
        }
    }

    /// The person answerable for the request: the user, or the member who created the API key
    /// (what an invitation's inviter or a post's default author is).
    pub fn person(&self) -> Option<Uuid> {
        match self {
            Actor::User { user_id, .. } => Some(*user_id),
            Actor::ApiKey { created_by, .. } => *created_by,
        }
    }

    pub fn api_key_id(&self) -> Option<Uuid> {
        match self {
            Actor::ApiKey { key_id, .. } => Some(*key_id),
            Actor::User { .. } => None,
        }
    }

    /// A stable name for per-principal records (idempotency keys).
    pub fn principal(&self) -> String {
        match self {
            Actor::User { user_id, .. } => format!("user:{user_id}"),
            Actor::ApiKey { key_id, .. } => format!("key:{key_id}"),
        }
    }
}

/// What a service needs to know about the request: the actor, the tenant it acts in (when one
/// is chosen) with its role there, and the request id for the audit log.
#[derive(Debug, Clone)]
pub struct Scope {
    pub actor: Actor,
    pub tenant: Option<(Uuid, Role)>,
    pub request_id: String,
}

impl Scope {
    /// The scope a worker or a signed webhook acts in: one tenant (as a member), for the
    /// principal (`user:<id>` / `key:<id>`) that started the work, if any.
    pub fn worker(tenant_id: Uuid, principal: &str, request_id: String) -> Scope {
        let id = |p: &str| Uuid::parse_str(p).unwrap_or_default();
        let actor = match principal.split_once(':') {
            Some(("key", k)) => Actor::ApiKey {
                key_id: id(k),
                created_by: None,
            },
            Some((_, u)) => Actor::User {
                user_id: id(u),
                email: String::new(),
            },
            None => Actor::User {
                user_id: Uuid::nil(),
                email: String::new(),
            },
        };
        Scope {
            actor,
            tenant: Some((tenant_id, Role::Member)),
            request_id,
        }
    }

    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant.map(|(id, _)| id)
    }

    pub fn role(&self) -> Option<Role> {
        self.tenant.map(|(_, role)| role)
    }
}
