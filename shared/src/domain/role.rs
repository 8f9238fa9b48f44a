use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A member's role in a tenant, least to most powerful (the derived order is the rank).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema, sqlx::Type,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Member,
    Admin,
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Admin, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// Whether someone with this role may grant, change or remove `other`: only an owner
    /// touches owners; admins manage everyone below owner.
    pub fn can_manage(self, other: Role) -> bool {
        match other {
            Role::Owner => self == Role::Owner,
            _ => self >= Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}; expected owner, admin, member or viewer")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_rank_from_viewer_to_owner() {
        assert!(Role::Viewer < Role::Member && Role::Member < Role::Admin && Role::Admin < Role::Owner);
    }

    #[test]
    fn only_owners_manage_owners() {
        assert!(Role::Owner.can_manage(Role::Owner));
        assert!(!Role::Admin.can_manage(Role::Owner));
        assert!(Role::Admin.can_manage(Role::Admin));
        assert!(!Role::Member.can_manage(Role::Viewer));
    }

    #[test]
    fn parses_what_it_prints() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
    }
}
