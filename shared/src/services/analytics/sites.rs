//! Analytics sites: a tenant registers a site (its domain) and gets a public site key and the
//! origins allowed to send events with it. Sites count against the plan's `sites` limit.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::adapters::pg::{self, TimeKey};
use crate::domain::{DomainError, PageRequest, ResultPage, Scope, Validator, secret};
use crate::services::billing::entitlements::{self, Limit};
use crate::services::idempotency::{self, Created, IdempotencyKey};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSite {
    /// 1–120 characters.
    #[schema(min_length = 1, max_length = 120, pattern = r"\S")]
    pub name: String,
    /// The site's host name, e.g. `example.com` (no scheme, no path; upper case is lowered).
    #[schema(
        max_length = 253,
        pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    )]
    pub domain: String,
    /// Browser origins allowed to send events, 1 to 20: scheme, host and optional port
    /// (`https://example.com`, `http://localhost:3000`), no path or trailing slash; `*` allows
    /// any. Default `https://<domain>` and `https://www.<domain>`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Origin>>, min_items = 1, max_items = 20)]
    pub allowed_origins: Option<Vec<String>>,
    /// IANA time zone of the site's day buckets, one Postgres knows (default `UTC`).
    #[serde(default)]
    #[schema(min_length = 1)]
    pub timezone: Option<String>,
}

/// A browser origin as `allowed_origins` takes it (the document's name for what `valid_origin`
/// accepts): `*`, or scheme, host and optional port.
#[derive(ToSchema)]
#[schema(
    pattern = r"^(\*|https?://([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(:([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?)$"
)]
pub struct Origin(pub String);

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Site {
    pub id: Uuid,
    pub name: String,
    pub domain: String,
    /// Public: embedded in the site's pages.
    pub site_key: String,
    pub allowed_origins: Vec<String>,
    pub timezone: String,
    pub created_at: DateTime<Utc>,
}

fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_origin(origin: &str) -> bool {
    origin == "*"
        || url::Url::parse(origin).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path() == "/"
                && u.query().is_none()
                && !origin.ends_with('/')
        })
}

const COLUMNS: &str = "id, name, domain, site_key, allowed_origins, timezone, created_at";

pub async fn list(pool: &PgPool, scope: &Scope, page: &PageRequest<TimeKey>) -> Result<ResultPage<Site>, DomainError> {
    pg::page_by_time(
        pool,
        scope,
        &format!(
            "select {COLUMNS} from analytics_sites where ($1::timestamptz is null or (created_at, id) < ($1, $2)) \
             order by created_at desc, id desc limit $3"
        ),
        page,
        |s: &Site| (s.created_at, s.id),
    )
    .await
}

pub async fn create(
    pool: &PgPool,
    scope: &Scope,
    input: NewSite,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<Site>, DomainError> {
    let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut v = Validator::new();
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 120 {
        v.error("name", "length", "must be 1 to 120 characters");
    }
    let domain = input.domain.trim().to_ascii_lowercase();
    if !valid_domain(&domain) {
        v.error(
            "domain",
            "invalid_domain",
            "must be a host name such as example.com (no scheme or path)",
        );
    }
    let origins = input
        .allowed_origins
        .unwrap_or_else(|| vec![format!("https://{domain}"), format!("https://www.{domain}")]);
    if origins.is_empty() || origins.len() > 20 || !origins.iter().all(|o| valid_origin(o)) {
        v.error(
            "allowed_origins",
            "invalid_origin",
            "1 to 20 origins such as https://example.com (scheme and host, no path), or *",
        );
    }
    let timezone = input.timezone.unwrap_or_else(|| "UTC".to_owned());
    let known_zone = crate::adapters::pg::known_timezone(pool, &timezone).await?;
    if !known_zone {
        v.error(
            "timezone",
            "unknown_timezone",
            "must be an IANA time zone such as Europe/Berlin",
        );
    }
    v.finish()?;

    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    entitlements::lock(&mut tx, Limit::Sites).await?;
    let used: i64 = sqlx::query_scalar("select count(*) from analytics_sites where tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(&mut *tx)
        .await?;
    entitlements::ensure(&mut tx, Limit::Sites, used, 1).await?;
    let site: Site = sqlx::query_as(&format!(
        "insert into analytics_sites (id, tenant_id, name, domain, site_key, allowed_origins, timezone) \
         values ($1, $2, $3, $4, $5, $6, $7) returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(&name)
    .bind(&domain)
    .bind(format!("site_{}", secret::random_hex(12)?))
    .bind(&origins)
    .bind(&timezone)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        pg::map_constraint(
            e,
            &[("analytics_sites_domain_key", || {
                DomainError::conflict("site_exists", "the tenant already has a site with this domain")
            })],
        )
    })?;
    idempotency::store(&mut tx, scope, idem, 201, &site).await?;
    tx.commit().await?;
    Ok(Created::Fresh(site))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_origins() {
        assert!(valid_domain("example.com") && valid_domain("shop.example.co.uk") && valid_domain("localhost"));
        for bad in [
            "",
            "https://example.com",
            "example.com/path",
            "Example.com",
            "-x.com",
            "a..b",
        ] {
            assert!(!valid_domain(bad), "{bad}");
        }
        assert!(valid_origin("https://example.com") && valid_origin("http://localhost:3000") && valid_origin("*"));
        for bad in [
            "example.com",
            "https://example.com/",
            "https://example.com/x",
            "ftp://example.com",
        ] {
            assert!(!valid_origin(bad), "{bad}");
        }
    }
}
