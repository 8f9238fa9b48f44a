//! One-click unsubscribe (RFC 8058, and the Gmail/Yahoo bulk-sender rules).
//!
//! Every campaign message carries `List-Unsubscribe: <https://…/public/unsubscribe/{token}>` and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. The token names one recipient of one
//! campaign of one tenant and is signed (HMAC-SHA256 under the marketing link key, truncated to
//! 128 bits), so it cannot be guessed or altered: a tampered or unknown token is a 404 page,
//! and nothing else about the tenant or the address can be learnt from it.
//!
//! - `POST` (the mail client's one-click request, or the page's button) unsubscribes at once: no
//!   login, no cookie, no confirmation. The address joins the tenant's suppression list
//!   (`unsubscribed`, permanent), the recipient row records when, and the campaign's stats count
//!   it once however often the link is used.
//! - `GET` shows a small page with a button and changes nothing: link scanners and previews
//!   follow links, and a GET must never unsubscribe by itself.
//!
//! The same token opens the message's web copy (`GET /public/view/{token}`, "view in browser"):
//! the HTML part rendered again from the campaign's frozen template with the recipient's values.
//!
//! Keys rotate: links are signed with the first key and verified against each configured key,
//! so links in mail already sent keep working while an old key is still listed.
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::campaigns::delivery;
use super::render::{self, RenderContext, TenantVars};
use crate::adapters::pg;
use crate::domain::signature::{hmac_sha256, same};
use crate::domain::{DomainError, Scope};

/// What a token's signature is made over, besides the ids (versioned: a future scheme cannot
/// be confused with this one).
const CONTEXT: &[u8] = b"portal.unsubscribe.v1";
const MAC_LEN: usize = 16;
/// A token: base64url (no padding) of tenant id ‖ recipient id ‖ MAC (16 + 16 + 16 bytes).
pub const TOKEN_LEN: usize = 64;

/// The keys links are signed with (the first) and verified against (each): at least 32 bytes.
#[derive(Clone)]
pub struct LinkKeys(Vec<Vec<u8>>);

impl std::fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkKeys({} keys)", self.0.len())
    }
}

impl LinkKeys {
    /// Keys from a comma-separated list (current first, then the ones still honoured); each
    /// at least 32 bytes.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let keys: Vec<Vec<u8>> = raw
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| k.as_bytes().to_vec())
            .collect();
        if keys.is_empty() {
            return Err("no key is set".into());
        }
        if keys.iter().any(|k| k.len() < 32) {
            return Err("each key must be at least 32 characters".into());
        }
        Ok(Self(keys))
    }

    fn mac(key: &[u8], tenant_id: Uuid, recipient_id: Uuid) -> [u8; MAC_LEN] {
        let full = hmac_sha256(key, &[CONTEXT, tenant_id.as_bytes(), recipient_id.as_bytes()]);
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&full[..MAC_LEN]);
        mac
    }

    /// The token of one recipient of one tenant, signed with the current key.
    pub fn token(&self, tenant_id: Uuid, recipient_id: Uuid) -> String {
        use base64::Engine;
        let key = self.0.first().map(Vec::as_slice).unwrap_or_default();
        let mut raw = Vec::with_capacity(48);
        raw.extend_from_slice(tenant_id.as_bytes());
        raw.extend_from_slice(recipient_id.as_bytes());
        raw.extend_from_slice(&Self::mac(key, tenant_id, recipient_id));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// The tenant and recipient a token names, when one of the keys signed it.
    pub fn open(&self, token: &str) -> Option<(Uuid, Uuid)> {
        use base64::Engine;
        if token.len() != TOKEN_LEN {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
        let (ids, mac) = raw.split_at_checked(32)?;
        let tenant_id = Uuid::from_slice(ids.get(..16)?).ok()?;
        let recipient_id = Uuid::from_slice(ids.get(16..)?).ok()?;
        self.0
            .iter()
            .any(|key| same(&Self::mac(key, tenant_id, recipient_id), mac))
            .then_some((tenant_id, recipient_id))
    }
}

/// What the confirmation page shows: whose list it is and the address, partly hidden (the
/// page is reachable by whoever holds the link, e.g. a forwarded message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub tenant_name: String,
    pub masked_email: String,
    pub unsubscribed_at: Option<DateTime<Utc>>,
}

/// `jane.doe@example.com` → `j•••e@example.com`.
pub fn mask(email: &str) -> String {
    let (local, domain) = email.rsplit_once('@').unwrap_or((email, ""));
    let chars: Vec<char> = local.chars().collect();
    let shown = match chars.as_slice() {
        [] => String::new(),
        [only] => format!("{only}•••"),
        [first, .., last] => format!("{first}•••{last}"),
    };
    format!("{shown}@{domain}")
}

fn scope_of(tenant_id: Uuid) -> Scope {
    Scope::worker(tenant_id, "unsubscribe", format!("unsubscribe-{}", Uuid::now_v7()))
}

#[derive(sqlx::FromRow)]
struct Row {
    email: String,
    tenant_name: String,
    unsubscribed_at: Option<DateTime<Utc>>,
}

/// The page's facts for a token; `NotFound` for a token that is tampered, signed with a key no
/// longer listed, or names a recipient that does not exist.
pub async fn look(pool: &PgPool, keys: &LinkKeys, token: &str) -> Result<Subscription, DomainError> {
    let (tenant_id, recipient_id) = keys.open(token).ok_or(DomainError::NotFound)?;
    let mut tx = pg::begin(pool, &scope_of(tenant_id)).await?;
    let row: Option<Row> = sqlx::query_as(
        "select r.email, t.name as tenant_name, \
                coalesce(r.unsubscribed_at, s.created_at) as unsubscribed_at \
         from marketing_campaign_recipients r \
         join tenants t on t.id = r.tenant_id \
         left join marketing_suppressions s on s.email = r.email and s.reason = 'unsubscribed' \
         where r.id = $1",
    )
    .bind(recipient_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let row = row.ok_or(DomainError::NotFound)?;
    Ok(Subscription {
        tenant_name: row.tenant_name,
        masked_email: mask(&row.email),
        unsubscribed_at: row.unsubscribed_at,
    })
}

/// Unsubscribes the token's address from the tenant's marketing: on the suppression list as
/// `unsubscribed` (an address already there keeps its entry, whatever its reason, but an
/// opt-out turns a removable `manual` or bounce entry into a permanent one), and the recipient
/// row's `unsubscribed_at` (first time only, so the campaign counts it once). Idempotent.
pub async fn unsubscribe(pool: &PgPool, keys: &LinkKeys, token: &str) -> Result<Subscription, DomainError> {
    let (tenant_id, recipient_id) = keys.open(token).ok_or(DomainError::NotFound)?;
    let mut tx = pg::begin(pool, &scope_of(tenant_id)).await?;
    let email: Option<String> = sqlx::query_scalar(
        "update marketing_campaign_recipients set unsubscribed_at = coalesce(unsubscribed_at, now()) \
         where id = $1 returning email",
    )
    .bind(recipient_id)
    .fetch_optional(&mut *tx)
    .await?;
    let email = email.ok_or(DomainError::NotFound)?;
    sqlx::query(
        "insert into marketing_suppressions (id, tenant_id, email, reason, detail) \
         values ($1, $2, $3, 'unsubscribed', 'one-click unsubscribe link') \
         on conflict (tenant_id, email) do update set reason = 'unsubscribed', detail = excluded.detail \
         where marketing_suppressions.reason in ('manual', 'hard_bounce', 'soft_bounce')",
    )
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(&email)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    look(pool, keys, token).await
}

/// The web copy of a token's message ("view in browser"): the HTML part as the recipient got
/// it, rendered from the campaign's frozen template (and the recipient's A/B subject) with the
/// recipient's current values, its own links relative to the page (`../unsubscribe/{token}`
/// and itself). `NotFound` for a token that does not open, a recipient never sent the
/// campaign or whose contact was deleted since, or a template that no longer renders.
pub async fn web_copy(pool: &PgPool, keys: &LinkKeys, token: &str) -> Result<String, DomainError> {
    let (tenant_id, recipient_id) = keys.open(token).ok_or(DomainError::NotFound)?;
    let (source, tenant_name, recipient) = delivery::sent_message(pool, &scope_of(tenant_id), recipient_id).await?;
    let ctx = RenderContext {
        contact: recipient.contact,
        company: recipient.company,
        tenant: TenantVars { name: tenant_name },
        unsubscribe_url: format!("../unsubscribe/{token}"),
        view_in_browser_url: token.to_owned(),
    };
    match render::render(&source, &ctx) {
        Ok(message) => Ok(message.html),
        Err(issues) => {
            tracing::warn!(%tenant_id, %recipient_id, issues = issues.len(), "a web copy no longer renders");
            Err(DomainError::NotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(raw: &str) -> LinkKeys {
        LinkKeys::parse(raw).expect("keys")
    }

    const K1: &str = "k1-0123456789abcdef0123456789abcdef";
    const K2: &str = "k2-0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_opens_to_its_ids_and_only_under_a_listed_key() {
        let (t, r) = (Uuid::now_v7(), Uuid::now_v7());
        let token = keys(K1).token(t, r);
        assert_eq!(token.len(), TOKEN_LEN);
        assert_eq!(keys(K1).open(&token), Some((t, r)));
        // Rotation: signed with the old key, still honoured while it is listed.
        assert_eq!(keys(&format!("{K2},{K1}")).open(&token), Some((t, r)));
        assert_eq!(keys(K2).open(&token), None);
        // New links are signed with the first key.
        assert_eq!(keys(K2).open(&keys(&format!("{K2},{K1}")).token(t, r)), Some((t, r)));
    }

    #[test]
    fn a_tampered_token_opens_to_nothing() {
        let (t, r) = (Uuid::now_v7(), Uuid::now_v7());
        let token = keys(K1).token(t, r);
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(bytes).expect("ascii");
            if forged != token {
                assert_eq!(keys(K1).open(&forged), None, "position {i}");
            }
        }
        // Another recipient's ids with this token's MAC.
        let other = keys(K1).token(t, Uuid::now_v7());
        let spliced = format!("{}{}", &other[..43], &token[43..]);
        assert_eq!(keys(K1).open(&spliced), None);
        for junk in ["", "x", &token[..63], &format!("{token}A"), &"é".repeat(32)] {
            assert_eq!(keys(K1).open(junk), None, "{junk}");
        }
    }

    #[test]
    fn keys_are_long_enough_and_present() {
        assert!(LinkKeys::parse("").is_err());
        assert!(LinkKeys::parse(" , ").is_err());
        assert!(LinkKeys::parse("short").is_err());
        assert!(LinkKeys::parse(&format!("{K1},short")).is_err());
        assert!(LinkKeys::parse(&format!("{K1}, {K2}")).is_ok());
        assert_eq!(format!("{:?}", keys(K1)), "LinkKeys(1 keys)");
    }

    #[test]
    fn addresses_are_masked_on_the_page() {
        assert_eq!(mask("jane.doe@example.com"), "j•••e@example.com");
        assert_eq!(mask("j@example.com"), "j•••@example.com");
        assert_eq!(mask("@example.com"), "@example.com");
        assert_eq!(mask("ödön@example.com"), "ö•••n@example.com");
    }
}
