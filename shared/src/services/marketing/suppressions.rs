//! The suppression list: addresses that never receive the tenant's marketing email again, one
//! row per address (lower case) with why. Every campaign's audience leaves them out.
//!
//! Consent is the rule here: an address that unsubscribed or complained stays suppressed for
//! good. CAN-SPAM (15 U.S.C. 7704(a)(4)) forbids sending to someone after they opted out, and
//! under the GDPR consent withdrawn is only given again by the person, not by the sender — so
//! the tenant cannot remove those rows; the person subscribes again themselves (a later slice:
//! the subscribe flow clears the row). Only the tenant's own `manual` entries and bounces
//! (the mailbox may work again) can be removed.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::adapters::pg::{self, Tx};
use crate::domain::validate::OptionalTextSchema;
use crate::domain::{DomainError, Email, PageParams, ResultPage, Scope, Validator};
use crate::services::crm::input;
use crate::services::idempotency::{self, Created, IdempotencyKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SuppressionReason {
    /// The person opted out (an unsubscribe link, or told the tenant another way).
    Unsubscribed,
    /// The provider reported the mailbox does not exist.
    HardBounce,
    /// The provider kept failing to deliver (full mailbox, ...).
    SoftBounce,
    /// The person marked a message as spam.
    Complaint,
    /// Added by the tenant.
    Manual,
}

impl SuppressionReason {
    /// Whether the tenant may remove a suppression of this reason (see the module's docs).
    pub fn check_removal(self) -> Result<(), DomainError> {
        match self {
            SuppressionReason::Manual | SuppressionReason::HardBounce | SuppressionReason::SoftBounce => Ok(()),
            SuppressionReason::Unsubscribed | SuppressionReason::Complaint => Err(DomainError::conflict(
                "consent-required",
                "this address opted out (it unsubscribed or complained): CAN-SPAM and the GDPR do not let a \
                 sender put it back on the list; only the person can, by subscribing again",
            )),
        }
    }
}

/// Why the tenant adds an address by hand: its own decision (`manual`, the default; removable),
/// or an opt-out the person sent another way (`unsubscribed`: a reply, a call; permanent).
/// Bounces and complaints come from the email provider only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ManualSuppressionReason {
    #[default]
    Manual,
    Unsubscribed,
}

impl From<ManualSuppressionReason> for SuppressionReason {
    fn from(reason: ManualSuppressionReason) -> Self {
        match reason {
            ManualSuppressionReason::Manual => SuppressionReason::Manual,
            ManualSuppressionReason::Unsubscribed => SuppressionReason::Unsubscribed,
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Suppression {
    pub id: Uuid,
    /// Lower case.
    pub email: String,
    pub reason: SuppressionReason,
    pub detail: Option<String>,
    /// The member who added it by hand, if one did.
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// The body of `POST /marketing/suppressions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSuppression {
    /// An email address; stored in lower case.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[serde(default)]
    pub reason: ManualSuppressionReason,
    /// A note: why, who asked, when.
    #[serde(default)]
    #[schema(value_type = Option<OptionalTextSchema<1000>>, inline)]
    pub detail: Option<String>,
}

const COLUMNS: &str = "id, email, reason, detail, created_by, created_at";

/// An address as the list keeps it: a valid email, all lower case.
pub fn normalise(raw: &str) -> Result<String, crate::domain::validate::Issue> {
    Email::parse(raw).map(|e| e.as_str().to_lowercase())
}

/// Adds an address. One already on the list answers 409 `already-suppressed` (as any other
/// duplicate of the API does) and changes nothing: its reason stays (an opt-out is never
/// turned into a removable `manual` entry). Honours `Idempotency-Key`.
pub async fn add(
    pool: &PgPool,
    scope: &Scope,
    input: NewSuppression,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<Suppression>, DomainError> {
    let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut v = Validator::new();
    let email = v.field("email", normalise(&input.email));
    let detail = input::optional_text(&mut v, "detail", input.detail.as_deref(), 1000);
    v.finish()?;
    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    let row: Suppression = sqlx::query_as(&format!(
        "insert into marketing_suppressions (id, tenant_id, email, reason, detail, created_by) \
         values ($1, $2, $3, $4, $5, $6) returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(email)
    .bind(SuppressionReason::from(input.reason))
    .bind(detail)
    .bind(scope.actor.person())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        pg::map_constraint(
            e,
            &[("marketing_suppressions_email_key", || {
                DomainError::conflict("already-suppressed", "this address is already on the suppression list")
            })],
        )
    })?;
    idempotency::store(&mut tx, scope, idem, 201, &row).await?;
    tx.commit().await?;
    Ok(Created::Fresh(row))
}

async fn fetch(tx: &mut Tx, id: Uuid) -> Result<Suppression, DomainError> {
    let row: Option<Suppression> = sqlx::query_as(&format!(
        "select {COLUMNS} from marketing_suppressions where id = $1 for update"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.ok_or(DomainError::NotFound)
}

/// Removes a suppression: only `manual` and bounces (409 `consent-required` for an opt-out).
pub async fn remove(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let row = fetch(&mut tx, id).await?;
    row.reason.check_removal()?;
    sqlx::query("delete from marketing_suppressions where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// `GET /marketing/suppressions` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SuppressionListParams {
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
    /// Only suppressions of this reason.
    #[param(value_type = Option<SuppressionReason>)]
    pub reason: Option<SuppressionReason>,
    /// Addresses containing this (case-insensitive).
    #[param(value_type = Option<OptionalTextSchema<254>>, inline)]
    pub q: Option<String>,
}

/// The list, newest first.
pub async fn list(
    pool: &PgPool,
    scope: &Scope,
    params: SuppressionListParams,
) -> Result<ResultPage<Suppression>, DomainError> {
    let page = pg::time_page_request(&params.page)?;
    let mut v = Validator::new();
    let q = input::optional_text(&mut v, "q", params.q.as_deref(), 254).map(|q| q.to_lowercase());
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    let rows: Vec<Suppression> = sqlx::query_as(&format!(
        "select {COLUMNS} from marketing_suppressions \
         where ($1::timestamptz is null or (created_at, id) < ($1, $2)) \
           and ($4::text is null or reason = $4) and ($5::text is null or strpos(email, $5) > 0) \
         order by created_at desc, id desc limit $3"
    ))
    .bind(page.after.map(|a| a.0))
    .bind(page.after.map(|a| a.1))
    .bind(page.fetch())
    .bind(params.reason)
    .bind(q)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |s| (s.created_at, s.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tenants_own_entries_and_bounces_can_be_removed() {
        // Given each reason, when its removal is asked, then opt-outs are refused for consent
        for reason in [
            SuppressionReason::Manual,
            SuppressionReason::HardBounce,
            SuppressionReason::SoftBounce,
        ] {
            assert!(reason.check_removal().is_ok(), "{reason:?}");
        }
        for reason in [SuppressionReason::Unsubscribed, SuppressionReason::Complaint] {
            match reason.check_removal() {
                Err(DomainError::Conflict { code, .. }) => assert_eq!(code, "consent-required"),
                other => panic!("{reason:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn addresses_are_kept_in_lower_case() {
        assert_eq!(normalise(" Ann.Lee@Example.COM ").unwrap(), "ann.lee@example.com");
        assert!(normalise("not an email").is_err());
    }
}
