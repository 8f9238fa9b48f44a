//! The team of a tenant: members with roles, and invitations by email with an expiring,
//! single-use token. Rules: only owners touch owners; admins manage everyone else; the last
//! owner can be neither removed nor demoted (checked under a lock, so two concurrent demotions
//! cannot leave a tenant without an owner).
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, Email, PageRequest, ResultPage, Role, Scope, Validator, secret};
use crate::services::audit;
use crate::services::billing::entitlements::{self, Limit};
use crate::services::idempotency::{self, Created, IdempotencyKey};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
    /// Pass back in `If-Match` (as the ETag) when changing the role.
    pub version: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Invitation {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub invited_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedInvitation {
    #[serde(flatten)]
    pub invitation: Invitation,
    /// The single-use link to send to the invitee. Shown once; only its hash is stored.
    pub accept_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvitation {
    /// The invitee's address, like name@example.com (quoted local parts are refused).
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    pub role: Role,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Joined {
    pub tenant_id: Uuid,
    pub role: Role,
}

/// Where invitation links point, and how long they live.
#[derive(Debug, Clone)]
pub struct InvitationPolicy {
    pub portal_base_url: String,
    pub ttl: Duration,
}

fn tenant(scope: &Scope) -> Result<(Uuid, Role), DomainError> {
    scope.tenant.ok_or(DomainError::NotFound)
}

pub async fn list_members(
    pool: &PgPool,
    scope: &Scope,
    page: &PageRequest<(DateTime<Utc>, Uuid)>,
) -> Result<ResultPage<Member>, DomainError> {
    let sql = "select m.user_id, u.email, u.name, m.role, m.created_at as joined_at, m.version \
               from memberships m join users u on u.id = m.user_id \
               where m.tenant_id = app_current_tenant() \
                 and ($1::timestamptz is null or (m.created_at, m.user_id) > ($1, $2)) \
               order by m.created_at, m.user_id limit $3";
    pg::page_by_time(pool, scope, sql, page, |m: &Member| (m.joined_at, m.user_id)).await
}

/// Open invitations (not accepted, not revoked), newest first; expired ones included.
pub async fn list_invitations(
    pool: &PgPool,
    scope: &Scope,
    page: &PageRequest<(DateTime<Utc>, Uuid)>,
) -> Result<ResultPage<Invitation>, DomainError> {
    let sql = "select id, email, role, invited_by, created_at, expires_at from invitations \
               where accepted_at is null and revoked_at is null \
                 and ($1::timestamptz is null or (created_at, id) < ($1, $2)) \
               order by created_at desc, id desc limit $3";
    pg::page_by_time(pool, scope, sql, page, |i: &Invitation| (i.created_at, i.id)).await
}

/// Invites an address with a role. A newer invitation for the same address replaces the open
/// one. The link is returned once (and on an idempotent replay, withheld).
pub async fn invite(
    pool: &PgPool,
    scope: &Scope,
    input: NewInvitation,
    policy: &InvitationPolicy,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<CreatedInvitation>, DomainError> {
    let (tenant_id, my_role) = tenant(scope)?;
    let mut v = Validator::new();
    let email = v.field("email", Email::parse(&input.email));
    if !my_role.can_manage(input.role) {
        v.error(
            "role",
            "role_not_allowed",
            format!("a {my_role} cannot invite a {}", input.role),
        );
    }
    v.finish()?;
    let email = email.ok_or(DomainError::NotFound)?;

    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    let already: bool = sqlx::query_scalar(
        "select exists (select 1 from memberships m join users u on u.id = m.user_id \
         where m.tenant_id = $1 and lower(u.email) = lower($2))",
    )
    .bind(tenant_id)
    .bind(email.as_str())
    .fetch_one(&mut *tx)
    .await?;
    if already {
        return Err(DomainError::conflict(
            "already_member",
            "that address already belongs to a member",
        ));
    }
    // Seats: members plus open invitations (a new invitation to the same address replaces the old).
    entitlements::lock(&mut tx, Limit::Seats).await?;
    let seats_used: i64 = sqlx::query_scalar(
        "select (select count(*) from memberships where tenant_id = $1) \
              + (select count(*) from invitations where tenant_id = $1 and accepted_at is null \
                 and revoked_at is null and expires_at > now() and lower(email) <> lower($2))",
    )
    .bind(tenant_id)
    .bind(email.as_str())
    .fetch_one(&mut *tx)
    .await?;
    entitlements::ensure(&mut tx, Limit::Seats, seats_used, 1).await?;
    sqlx::query(
        "update invitations set revoked_at = now() \
         where lower(email) = lower($1) and accepted_at is null and revoked_at is null",
    )
    .bind(email.as_str())
    .execute(&mut *tx)
    .await?;
    // Accepting checks the inviter is still a member who may grant the role: an API key's
    // invitation is its creator's (a key whose creator is gone cannot invite).
    let inviter = scope.actor.person().ok_or_else(|| {
        DomainError::Forbidden("this API key's creator is no longer a user; create a new key to invite".into())
    })?;
    let (token, hash) = secret::new_invitation_token()?;
    let id = Uuid::now_v7();
    let invitation: Invitation = sqlx::query_as(
        "insert into invitations (id, tenant_id, email, role, token_hash, invited_by, expires_at) \
         values ($1, $2, $3, $4, $5, $6, now() + $7) \
         returning id, email, role, invited_by, created_at, expires_at",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(email.as_str())
    .bind(input.role.as_str())
    .bind(hash)
    .bind(inviter)
    .bind(policy.ttl)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        pg::map_constraint(
            e,
            &[("invitations_open_email_key", || {
                DomainError::conflict(
                    "invitation_in_flight",
                    "another invitation to this address is being sent; retry",
                )
            })],
        )
    })?;
    audit::record(
        &mut tx,
        scope,
        tenant_id,
        "team.invitation.created",
        "invitation",
        &id.to_string(),
        json!({ "email": email, "role": input.role }),
    )
    .await?;
    let accept_url = format!("{}/invitations/{token}/accept", policy.portal_base_url);
    let stored = CreatedInvitation {
        invitation: invitation.clone(),
        accept_url: None,
    };
    idempotency::store(&mut tx, scope, idem, 201, &stored).await?;
    tx.commit().await?;
    Ok(Created::Fresh(CreatedInvitation {
        invitation,
        accept_url: Some(accept_url),
    }))
}

pub async fn revoke_invitation(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let (tenant_id, _) = tenant(scope)?;
    let mut tx = pg::begin(pool, scope).await?;
    let email: Option<String> = sqlx::query_scalar(
        "update invitations set revoked_at = now() where id = $1 and accepted_at is null and revoked_at is null \
         returning email",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(email) = email else {
        return Err(DomainError::NotFound);
    };
    audit::record(
        &mut tx,
        scope,
        tenant_id,
        "team.invitation.revoked",
        "invitation",
        &id.to_string(),
        json!({ "email": email }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Accepts an invitation for the signed-in user whose email it was sent to. Single use:
/// a second accept answers a conflict and changes nothing.
pub async fn accept(pool: &PgPool, scope: &Scope, token: &str) -> Result<Joined, DomainError> {
    let user_id = scope
        .actor
        .user_id()
        .ok_or_else(|| DomainError::Forbidden("accepting an invitation needs a signed-in user".into()))?;
    let user_email = match &scope.actor {
        crate::domain::Actor::User { email, .. } => email.clone(),
        crate::domain::Actor::ApiKey { .. } => String::new(),
    };
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DomainError::NotFound);
    }
    type Found = (
        Uuid,
        Uuid,
        String,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let mut tx = pg::begin(pool, scope).await?;
    let found: Option<Found> = sqlx::query_as(
        "select id, tenant_id, email, role, expires_at, accepted_at, revoked_at from app_find_invitation($1)",
    )
    .bind(secret::sha256(token))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, tenant_id, email, role, expires_at, accepted_at, revoked_at)) = found else {
        return Err(DomainError::NotFound);
    };
    if revoked_at.is_some() {
        return Err(DomainError::Gone("this invitation was withdrawn".into()));
    }
    if accepted_at.is_some() {
        return Err(DomainError::conflict(
            "invitation_used",
            "this invitation has already been accepted",
        ));
    }
    if expires_at <= Utc::now() {
        return Err(DomainError::Gone(
            "this invitation has expired; ask for a new one".into(),
        ));
    }
    let invited = Email::parse(&email).map_err(|_| DomainError::NotFound)?;
    if !invited.same_as(&user_email) {
        return Err(DomainError::Forbidden(
            "this invitation was sent to another email address".into(),
        ));
    }
    let role: Role = role.parse().map_err(anyhow::Error::from)?;
    pg::set_tenant(&mut tx, tenant_id).await?;
    // The inviter must still be a member who may grant this role (a removed or demoted admin's
    // invitations grant nothing).
    let inviter_ok: bool = sqlx::query_scalar(
        "select coalesce((select m.role from memberships m join invitations i on i.invited_by = m.user_id \
                          and m.tenant_id = i.tenant_id where i.id = $1), '') = any($2)",
    )
    .bind(id)
    .bind(
        Role::ALL
            .iter()
            .filter(|r| r.can_manage(role))
            .map(|r| r.as_str())
            .collect::<Vec<_>>(),
    )
    .fetch_one(&mut *tx)
    .await?;
    if !inviter_ok {
        return Err(DomainError::Gone(
            "this invitation is no longer valid; ask for a new one".into(),
        ));
    }
    // The update is the single-use gate: of two concurrent accepts, one updates a row.
    let used = sqlx::query(
        "update invitations set accepted_at = now(), accepted_by = $2 where id = $1 and accepted_at is null and revoked_at is null",
    )
    .bind(id)
    .bind(user_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if used != 1 {
        return Err(DomainError::conflict(
            "invitation_used",
            "this invitation has already been accepted",
        ));
    }
    let role: String = sqlx::query_scalar(
        "insert into memberships (tenant_id, user_id, role) values ($1, $2, $3) \
         on conflict (tenant_id, user_id) do update set updated_at = now() returning role",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(role.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let role: Role = role.parse().map_err(anyhow::Error::from)?;
    let joined_scope = Scope {
        tenant: Some((tenant_id, role)),
        ..scope.clone()
    };
    audit::record(
        &mut tx,
        &joined_scope,
        tenant_id,
        "team.invitation.accepted",
        "invitation",
        &id.to_string(),
        json!({ "user_id": user_id, "role": role }),
    )
    .await?;
    tx.commit().await?;
    Ok(Joined { tenant_id, role })
}

/// Locks the tenant's owner rows and counts them; call before demoting or removing an owner.
async fn owners_locked(tx: &mut Tx) -> Result<usize, DomainError> {
    let owners: Vec<Uuid> = sqlx::query_scalar(
        "select user_id from memberships where tenant_id = app_current_tenant() and role = 'owner' for update",
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(owners.len())
}

/// Locks the target's membership row, and the acting user's, in one statement ordered by id (so
/// two admins acting on each other cannot deadlock), and returns the target's role and version
/// and the actor's role as it is now (it may have changed since the request was authorised).
async fn lock_target_and_actor(tx: &mut Tx, scope: &Scope, target: Uuid) -> Result<((Role, i32), Role), DomainError> {
    let actor = scope.actor.user_id();
    let ids: Vec<Uuid> = std::iter::once(target).chain(actor).collect();
    let rows: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "select user_id, role, version from memberships where tenant_id = app_current_tenant() \
         and user_id = any($1) order by user_id for update",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let role_of = |id: Uuid| -> Result<Option<(Role, i32)>, DomainError> {
        rows.iter()
            .find(|(u, _, _)| *u == id)
            .map(|(_, r, v)| Ok((r.parse::<Role>().map_err(anyhow::Error::from)?, *v)))
            .transpose()
    };
    let target_row = role_of(target)?.ok_or(DomainError::NotFound)?;
    let actor_role = match actor {
        // A user acting: their role now, under the lock (a removed actor finds nothing).
        Some(me) => role_of(me)?.ok_or(DomainError::NotFound)?.0,
        // An API key acts with its own role.
        None => scope.role().ok_or(DomainError::NotFound)?,
    };
    Ok((target_row, actor_role))
}

pub async fn change_role(
    pool: &PgPool,
    scope: &Scope,
    user_id: Uuid,
    change: RoleChange,
    if_match: Option<i32>,
) -> Result<Member, DomainError> {
    let (tenant_id, _) = tenant(scope)?;
    let mut tx = pg::begin(pool, scope).await?;
    let owners = owners_locked(&mut tx).await?;
    let ((current, version), my_role) = lock_target_and_actor(&mut tx, scope, user_id).await?;
    if if_match.is_some_and(|v| v != version) {
        return Err(DomainError::StaleVersion);
    }
    if !my_role.can_manage(current) || !my_role.can_manage(change.role) {
        return Err(DomainError::Forbidden(format!(
            "a {my_role} cannot change a {current} into a {}",
            change.role
        )));
    }
    if current == Role::Owner && change.role != Role::Owner && owners <= 1 {
        return Err(DomainError::conflict(
            "last_owner",
            "a tenant needs at least one owner; make someone else owner first",
        ));
    }
    let member: Member = sqlx::query_as(
        "with m as (update memberships set role = $2, version = version + 1, updated_at = now() \
                    where tenant_id = app_current_tenant() and user_id = $1 returning *) \
         select m.user_id, u.email, u.name, m.role, m.created_at as joined_at, m.version from m join users u on u.id = m.user_id",
    )
    .bind(user_id)
    .bind(change.role.as_str())
    .fetch_one(&mut *tx)
    .await?;
    // Keys a member created never outrank their maker.
    sqlx::query(
        "update api_keys set role = $2 where created_by = $1 and revoked_at is null \
         and array_position(array['viewer','member','admin'], role) > array_position(array['viewer','member','admin'], $2)",
    )
    .bind(user_id)
    .bind(change.role.min(Role::Admin).as_str())
    .execute(&mut *tx)
    .await?;
    // Nor do the open invitations they sent: those they could no longer send are withdrawn.
    let may_grant: Vec<&str> = Role::ALL
        .iter()
        .filter(|r| change.role.can_manage(**r))
        .map(|r| r.as_str())
        .collect();
    sqlx::query(
        "update invitations set revoked_at = now() where invited_by = $1 and accepted_at is null \
         and revoked_at is null and not (role = any($2))",
    )
    .bind(user_id)
    .bind(&may_grant)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        scope,
        tenant_id,
        "team.member.role_changed",
        "user",
        &user_id.to_string(),
        json!({ "from": current, "to": change.role }),
    )
    .await?;
    tx.commit().await?;
    Ok(member)
}

/// Removes a member (an admin removing someone, or anyone leaving). Their API keys are revoked.
pub async fn remove_member(pool: &PgPool, scope: &Scope, user_id: Uuid) -> Result<(), DomainError> {
    let (tenant_id, _) = tenant(scope)?;
    let mut tx = pg::begin(pool, scope).await?;
    let owners = owners_locked(&mut tx).await?;
    let ((current, _), my_role) = lock_target_and_actor(&mut tx, scope, user_id).await?;
    let leaving = scope.actor.user_id() == Some(user_id);
    if !leaving && !my_role.can_manage(current) {
        return Err(DomainError::Forbidden(format!("a {my_role} cannot remove a {current}")));
    }
    if current == Role::Owner && owners <= 1 {
        return Err(DomainError::conflict(
            "last_owner",
            "the last owner cannot be removed; make someone else owner first",
        ));
    }
    sqlx::query("delete from memberships where tenant_id = app_current_tenant() and user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("update api_keys set revoked_at = now() where created_by = $1 and revoked_at is null")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "update invitations set revoked_at = now() where invited_by = $1 and accepted_at is null and revoked_at is null",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        scope,
        tenant_id,
        "team.member.removed",
        "user",
        &user_id.to_string(),
        json!({ "role": current, "left": leaving }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
