//! Connectors: the tenant's credentials and settings per kind of outside system (`catalog`),
//! sealed at rest (`domain::envelope`), tested by a real call to the provider at its configured
//! base URL, with the SSRF guard on the tenant's own site URLs (`guard`).
mod calls;
pub mod catalog;
pub mod guard;
pub mod webhooks;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgPool;
use sqlx::types::Json;
use std::collections::HashMap;
use std::time::Duration;
use utoipa::ToSchema;
use uuid::Uuid;

use self::catalog::{Auth, Base, CATALOG, FieldSpec, Format, Kind, Spec};
use crate::adapters::keys::Keys;
use crate::adapters::pg;
use crate::domain::envelope::{EnvelopeError, Sealed};
use crate::domain::{DomainError, FieldError, Scope};
pub use calls::*;

/// How long a provider call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the connector service needs: the database, the key, an HTTP client, where providers
/// live (overrides of their API base URLs: the local fakes) and whether private addresses may be
/// connected (the local stack only).
#[derive(Clone)]
pub struct Connectors {
    pub db: PgPool,
    pub keys: Keys,
    pub http: reqwest::Client,
    pub bases: HashMap<Kind, String>,
    pub allow_private: bool,
    /// Clients pinned to a tenant site's checked addresses, by host and addresses: building
    /// one (TLS roots, pool) costs far more than a call, and a sync makes one call per page.
    pinned: std::sync::Arc<std::sync::Mutex<PinnedClients>>,
}

/// Clients by host and the addresses they are pinned to.
type PinnedClients = HashMap<(String, Vec<std::net::SocketAddr>), reqwest::Client>;

impl Connectors {
    #[cfg(feature = "kms")]
    /// The service from its settings (read once in `main`): the secrets' key (KMS, or the local
    /// key file), the provider API overrides and the SSRF guard's switch.
    pub fn build(
        db: PgPool,
        settings: &crate::config::ConnectorSettings,
        aws: &aws_config::SdkConfig,
    ) -> anyhow::Result<Self> {
        let keys = crate::adapters::kms::connector_keys(&settings.kek, aws)?;
        Self::new(db, keys, settings.bases.clone(), settings.allow_private)
    }

    pub fn new(db: PgPool, keys: Keys, bases: HashMap<Kind, String>, allow_private: bool) -> anyhow::Result<Self> {
        Ok(Self {
            db,
            keys,
            http: reqwest::Client::builder().timeout(CALL_TIMEOUT).build()?,
            bases,
            allow_private,
            pinned: Default::default(),
        })
    }
}

/// `CONNECTOR_BASE_URLS`: `kind=url,kind=url` (the local stack's and tests' fakes).
pub fn parse_bases(raw: &str) -> Result<HashMap<Kind, String>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (kind, url) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not kind=url"))?;
            let kind = Kind::parse(kind.trim()).ok_or_else(|| format!("{kind:?} is not a connector kind"))?;
            url::Url::parse(url.trim()).map_err(|_| format!("{url:?} is not a URL"))?;
            Ok((kind, url.trim().trim_end_matches('/').to_owned()))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorStatus {
    NotConfigured,
    /// Saved, not tested since.
    Untested,
    Connected,
    /// The last test or sync failed: `last_error` says why.
    Error,
}

/// A kind of the catalog with this tenant's state of it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Connector {
    pub kind: Kind,
    pub name: &'static str,
    pub category: &'static str,
    pub description: &'static str,
    pub fields: &'static [FieldSpec],
    /// What a sync brings in (empty: the connector is used for sending, not syncing).
    pub syncs: &'static [&'static str],
    pub status: ConnectorStatus,
    /// The non-secret fields' values.
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    /// The secret fields, masked (`••••1a2b`); never returned in full.
    #[schema(value_type = Object)]
    pub secrets: Map<String, Value>,
    pub last_error: Option<String>,
    pub last_tested_at: Option<DateTime<Utc>>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_sync_status: Option<String>,
    /// Where the provider sends webhooks (path under the API), for kinds that have them: the
    /// email providers' event webhooks go to `/webhooks/email/{kind}/{key}`.
    pub webhook_path: Option<String>,
    /// The header that signs them (none for Mailgun: its signature is in the body).
    pub webhook_signature_header: Option<&'static str>,
    pub updated_at: Option<DateTime<Utc>>,
    pub version: Option<i32>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Row {
    kind: String,
    settings: Json<Map<String, Value>>,
    secret: Vec<u8>,
    masked: Json<Map<String, Value>>,
    status: String,
    last_error: Option<String>,
    last_tested_at: Option<DateTime<Utc>>,
    last_sync_at: Option<DateTime<Utc>>,
    last_sync_status: Option<String>,
    webhook_key: String,
    updated_at: DateTime<Utc>,
    version: i32,
}

const COLUMNS: &str = "kind, settings, secret, masked, status, last_error, last_tested_at, last_sync_at, \
    last_sync_status, webhook_key, updated_at, version";

fn view(spec: &'static Spec, row: Option<&Row>) -> Connector {
    let status = match row.map(|r| r.status.as_str()) {
        None => ConnectorStatus::NotConfigured,
        Some("connected") => ConnectorStatus::Connected,
        Some("error") => ConnectorStatus::Error,
        Some(_) => ConnectorStatus::Untested,
    };
    let (webhook_path, webhook_signature_header) = match (spec.webhook, row) {
        (Some(scheme), Some(r)) => (
            Some(format!(
                "{}/{}/{}",
                scheme.route_prefix(),
                spec.kind.as_str(),
                r.webhook_key
            )),
            scheme.signature_header(),
        ),
        _ => (None, None),
    };
    Connector {
        kind: spec.kind,
        name: spec.name,
        category: spec.category,
        description: spec.description,
        fields: spec.fields,
        syncs: spec.syncs,
        status,
        settings: row.map(|r| r.settings.0.clone()).unwrap_or_default(),
        secrets: row.map(|r| r.masked.0.clone()).unwrap_or_default(),
        last_error: row.and_then(|r| r.last_error.clone()),
        last_tested_at: row.and_then(|r| r.last_tested_at),
        last_sync_at: row.and_then(|r| r.last_sync_at),
        last_sync_status: row.and_then(|r| r.last_sync_status.clone()),
        webhook_path,
        webhook_signature_header,
        updated_at: row.map(|r| r.updated_at),
        version: row.map(|r| r.version),
    }
}

/// `••••` and the last 4 characters of a long secret (people recognise their key), nothing of a
/// short one.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n >= 16 {
        let tail: String = secret.chars().skip(n - 4).collect();
        format!("••••{tail}")
    } else {
        "••••".to_owned()
    }
}

fn aad(tenant: Uuid, kind: Kind) -> Vec<u8> {
    format!("connector:{tenant}:{}", kind.as_str()).into_bytes()
}

fn sealed_error(e: EnvelopeError) -> DomainError {
    DomainError::Internal(anyhow::Error::new(e).context("connector secret"))
}

/// The result of a connection test, in words for the user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestResult {
    pub ok: bool,
    pub message: String,
    /// The provider's HTTP status, when it answered.
    pub provider_status: Option<u16>,
    pub tested_at: DateTime<Utc>,
}

impl Connectors {
    /// The catalog with this tenant's state of each kind.
    pub async fn list(&self, scope: &Scope) -> Result<Vec<Connector>, DomainError> {
        let mut tx = pg::begin(&self.db, scope).await?;
        let rows: Vec<Row> = sqlx::query_as(&format!("select {COLUMNS} from connectors"))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(CATALOG
            .iter()
            .map(|spec| view(spec, rows.iter().find(|r| r.kind == spec.kind.as_str())))
            .collect())
    }

    pub async fn get(&self, scope: &Scope, kind: Kind) -> Result<Connector, DomainError> {
        let mut tx = pg::begin(&self.db, scope).await?;
        let row = fetch(&mut tx, kind).await?;
        tx.commit().await?;
        Ok(view(kind.spec(), row.as_ref()))
    }

    /// Saves credentials and settings: `body` holds field values (strings; `null` clears an
    /// optional field). Secret fields left out keep their saved values. Every field is checked
    /// (a site URL by the SSRF guard); the status becomes `untested`.
    pub async fn put(
        &self,
        scope: &Scope,
        kind: Kind,
        body: Map<String, Value>,
        if_match: Option<i32>,
    ) -> Result<Connector, DomainError> {
        let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
        let spec = kind.spec();
        let mut tx = pg::begin(&self.db, scope).await?;
        let existing = fetch_locked(&mut tx, kind).await?;
        if let (Some(expected), Some(row)) = (if_match, existing.as_ref())
            && row.version != expected
        {
            return Err(DomainError::StaleVersion);
        }
        let mut secrets = match &existing {
            Some(row) => self.open(tenant, kind, &row.secret).await?,
            None => Map::new(),
        };
        let mut settings = existing.as_ref().map(|r| r.settings.0.clone()).unwrap_or_default();
        let mut errors = Vec::new();
        for name in body.keys() {
            if spec.field(name).is_none() {
                errors.push(FieldError::new(
                    name,
                    "unknown_field",
                    format!(
                        "{} takes: {}",
                        spec.name,
                        spec.fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        for f in spec.fields {
            let target = if f.secret { &mut secrets } else { &mut settings };
            match body.get(f.name) {
                None => {}
                Some(Value::Null) => {
                    target.remove(f.name);
                }
                Some(Value::String(raw)) => match self.check_field(f, raw).await {
                    Ok(value) => {
                        target.insert(f.name.to_owned(), Value::String(value));
                    }
                    Err(message) => errors.push(FieldError::new(f.name, "invalid", message)),
                },
                Some(_) => errors.push(FieldError::new(f.name, "invalid_type", "must be a string")),
            }
            let present = target.get(f.name).is_some();
            if f.required && !present && !errors.iter().any(|e| e.field == f.name) {
                errors.push(FieldError::new(f.name, "required", format!("{} is required", f.label)));
            }
        }
        if !errors.is_empty() {
            return Err(DomainError::Invalid(errors));
        }
        let masked: Map<String, Value> = secrets
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(mask(v.as_str().unwrap_or_default()))))
            .collect();
        let plaintext = serde_json::to_vec(&secrets).map_err(|e| DomainError::Internal(e.into()))?;
        let (data_key, wrapped, key_ref) = self.keys.new_data_key().await.map_err(sealed_error)?;
        let sealed = Sealed::seal(&data_key, key_ref, wrapped, &aad(tenant, kind), &plaintext)
            .map_err(sealed_error)?
            .to_bytes();
        let webhook_key = crate::domain::secret::random_hex(16).map_err(DomainError::Internal)?;
        let row: Row = sqlx::query_as(&format!(
            "insert into connectors (tenant_id, kind, settings, secret, masked, webhook_key) \
             values ($1, $2, $3, $4, $5, $6) \
             on conflict (tenant_id, kind) do update set settings = excluded.settings, secret = excluded.secret, \
               masked = excluded.masked, status = 'untested', last_error = null, updated_at = now(), \
               version = connectors.version + 1 \
             returning {COLUMNS}"
        ))
        .bind(tenant)
        .bind(kind.as_str())
        .bind(Json(&settings))
        .bind(&sealed)
        .bind(Json(&masked))
        .bind(webhook_key)
        .fetch_one(&mut *tx)
        .await?;
        crate::services::audit::record(
            &mut tx,
            scope,
            tenant,
            "connector.saved",
            "connector",
            kind.as_str(),
            serde_json::json!({"fields": body.keys().collect::<Vec<_>>()}),
        )
        .await?;
        tx.commit().await?;
        Ok(view(spec, Some(&row)))
    }

    pub async fn delete(&self, scope: &Scope, kind: Kind) -> Result<(), DomainError> {
        let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
        let mut tx = pg::begin(&self.db, scope).await?;
        let gone = sqlx::query("delete from connectors where kind = $1")
            .bind(kind.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(DomainError::NotFound);
        }
        crate::services::audit::record(
            &mut tx,
            scope,
            tenant,
            "connector.deleted",
            "connector",
            kind.as_str(),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The saved secret fields, opened.
    async fn open(&self, tenant: Uuid, kind: Kind, stored: &[u8]) -> Result<Map<String, Value>, DomainError> {
        let sealed = Sealed::from_bytes(stored).map_err(sealed_error)?;
        let key = self.keys.unwrap_key(&sealed).await.map_err(sealed_error)?;
        let plain = sealed.open(&key, &aad(tenant, kind)).map_err(sealed_error)?;
        serde_json::from_slice(&plain).map_err(|e| DomainError::Internal(e.into()))
    }

    async fn check_field(&self, f: &FieldSpec, raw: &str) -> Result<String, String> {
        let value = raw.trim();
        match f.format {
            Format::SiteUrl => {
                let url = guard::normalize_site_url(value, self.allow_private)?;
                guard::resolve(&url, self.allow_private).await?;
                Ok(url.as_str().trim_end_matches('/').to_owned())
            }
            Format::GroupedSecret => {
                let value = value.replace(' ', "");
                if !(8..=500).contains(&value.chars().count()) || value.chars().any(char::is_control) {
                    return Err("must be 8 to 500 characters (spaces between groups are dropped)".to_owned());
                }
                Ok(value)
            }
            Format::Secret => {
                if !(8..=500).contains(&value.chars().count()) || value.chars().any(|c| c.is_control() || c == ' ') {
                    return Err("must be 8 to 500 characters without spaces".to_owned());
                }
                Ok(value.to_owned())
            }
            Format::Text => {
                if value.is_empty() || value.chars().count() > 200 || value.chars().any(char::is_control) {
                    return Err("must be 1 to 200 characters".to_owned());
                }
                Ok(value.to_owned())
            }
            Format::Choice => {
                if f.options.contains(&value) {
                    Ok(value.to_owned())
                } else {
                    Err(format!("must be one of: {}", f.options.join(", ")))
                }
            }
        }
    }

    /// The saved settings and opened secrets of a kind (`None`: not configured).
    pub async fn credentials(&self, scope: &Scope, kind: Kind) -> Result<Option<Credentials>, DomainError> {
        let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
        let mut tx = pg::begin(&self.db, scope).await?;
        let row = fetch(&mut tx, kind).await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let secrets = self.open(tenant, kind, &row.secret).await?;
        Ok(Some(Credentials {
            kind,
            settings: row.settings.0,
            secrets,
        }))
    }

    /// Tests the connection with one real call and records the outcome on the connector.
    pub async fn test(&self, scope: &Scope, kind: Kind) -> Result<TestResult, DomainError> {
        let creds = self.credentials(scope, kind).await?.ok_or(DomainError::NotFound)?;
        let spec = kind.spec();
        let (ok, message, provider_status) = match self.request(&creds, reqwest::Method::GET, spec.test_path).await {
            Err(why) => (false, why, None),
            Ok(req) => match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let (ok, message) = explain(spec, status);
                    (ok, message, Some(status))
                }
                Err(e) => (false, unreachable(spec, &e), None),
            },
        };
        let tested_at = Utc::now();
        let mut tx = pg::begin(&self.db, scope).await?;
        sqlx::query(
            "update connectors set status = $2, last_error = $3, last_tested_at = $4, updated_at = now() \
             where kind = $1",
        )
        .bind(kind.as_str())
        .bind(if ok { "connected" } else { "error" })
        .bind((!ok).then_some(&message))
        .bind(tested_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TestResult {
            ok,
            message,
            provider_status,
            tested_at,
        })
    }
}

async fn fetch(tx: &mut pg::Tx, kind: Kind) -> Result<Option<Row>, DomainError> {
    Ok(
        sqlx::query_as(&format!("select {COLUMNS} from connectors where kind = $1"))
            .bind(kind.as_str())
            .fetch_optional(&mut **tx)
            .await?,
    )
}

async fn fetch_locked(tx: &mut pg::Tx, kind: Kind) -> Result<Option<Row>, DomainError> {
    Ok(
        sqlx::query_as(&format!("select {COLUMNS} from connectors where kind = $1 for update"))
            .bind(kind.as_str())
            .fetch_optional(&mut **tx)
            .await?,
    )
}

fn secret_labels(spec: &Spec) -> String {
    spec.fields
        .iter()
        .filter(|f| f.secret && f.required)
        .map(|f| f.label.to_lowercase())
        .collect::<Vec<_>>()
        .join(" and ")
}
