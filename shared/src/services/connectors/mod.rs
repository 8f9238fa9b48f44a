//! Connectors: the tenant's credentials and settings per kind of outside system (`catalog`),
//! sealed at rest (`domain::envelope`), tested by a real call to the provider at its configured
//! base URL, with the SSRF guard on the tenant's own site URLs (`guard`).
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

use self::catalog::{Auth, Base, CATALOG, FieldSpec, Format, Kind, Spec, WebhookScheme};
use crate::adapters::keys::Keys;
use crate::adapters::pg;
use crate::domain::envelope::{EnvelopeError, Sealed};
use crate::domain::{DomainError, FieldError, Scope};

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
    /// `CONNECTOR_BASE_URLS` (provider API overrides), `CONNECTORS_ALLOW_PRIVATE_NETWORKS`
    /// (`true` switches the SSRF guard off: refused unless `STAGE` is unset or `local`).
    pub fn from_env(db: PgPool, keys: Keys, env: &crate::config::Env) -> anyhow::Result<Self> {
        let bases = parse_bases(&env.optional("CONNECTOR_BASE_URLS").unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("CONNECTOR_BASE_URLS: {e}"))?;
        let allow_private = env.optional("CONNECTORS_ALLOW_PRIVATE_NETWORKS").as_deref() == Some("true");
        let stage = env.optional("STAGE").unwrap_or_else(|| "local".to_owned());
        if allow_private && stage != "local" {
            anyhow::bail!("CONNECTORS_ALLOW_PRIVATE_NETWORKS=true is for the local stack only (STAGE is {stage})");
        }
        Self::new(db, keys, bases, allow_private)
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
    /// Where the provider sends webhooks (path under the API), for kinds that have them.
    pub webhook_path: Option<String>,
    /// The header that signs them.
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
        (Some(scheme), Some(r)) => {
            let header = match scheme {
                WebhookScheme::HmacSha256Base64 { header, .. } | WebhookScheme::SharedSecret { header, .. } => header,
            };
            (
                Some(format!("/webhooks/connectors/{}/{}", spec.kind.as_str(), r.webhook_key)),
                Some(header),
            )
        }
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

    /// A `method` request of `path_and_query` (with `{field}` placeholders) at the kind's API,
    /// with its auth: the request, or why it cannot be made (in words for the user).
    pub async fn request(
        &self,
        creds: &Credentials,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        let spec = creds.kind.spec();
        let value = |name: &str| creds.value(name);
        let (base, pinned) = match spec.base {
            Base::Field(field) => {
                let raw = value(field).ok_or_else(|| format!("{} is not set", field))?;
                let url = guard::normalize_site_url(&raw, self.allow_private)?;
                let addrs = guard::resolve(&url, self.allow_private).await?;
                (url.as_str().trim_end_matches('/').to_owned(), Some((url, addrs)))
            }
            Base::Provider(default) => (
                self.bases
                    .get(&creds.kind)
                    .cloned()
                    .unwrap_or_else(|| default.to_owned()),
                None,
            ),
            Base::Regional { field, bases } => {
                let choice = value(field).unwrap_or_default();
                let default = bases
                    .iter()
                    .find(|(k, _)| *k == choice)
                    .map(|(_, b)| *b)
                    .unwrap_or_default();
                (
                    self.bases
                        .get(&creds.kind)
                        .cloned()
                        .unwrap_or_else(|| default.to_owned()),
                    None,
                )
            }
        };
        let mut path = path_and_query.to_owned();
        for f in spec.fields {
            let placeholder = format!("{{{}}}", f.name);
            if path.contains(&placeholder) {
                let v = value(f.name).unwrap_or_default();
                path = path.replace(
                    &placeholder,
                    &url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>(),
                );
            }
        }
        let client = match pinned {
            // The connection goes to the addresses the guard checked, whatever DNS says later.
            Some((url, addrs)) => self.pinned_client(url.host_str().unwrap_or_default(), addrs)?,
            None => self.http.clone(),
        };
        let mut req = client.request(method, format!("{base}{path}")).timeout(CALL_TIMEOUT);
        req = match spec.auth {
            Auth::Header(name, field, prefix) => {
                req.header(name, format!("{prefix}{}", value(field).unwrap_or_default()))
            }
            Auth::Basic(user, pass) => req.basic_auth(value(user).unwrap_or_default(), value(pass)),
            Auth::BasicUser(user, pass) => req.basic_auth(user, value(pass)),
            Auth::Query(param, field) => req.query(&[(param, value(field).unwrap_or_default())]),
        };
        Ok(req)
    }

    /// A GET of `path_and_query` that tries again on what passes (unreachable, 429 after its
    /// `Retry-After`, 5xx; backing off from 250 ms): the successful answer, or why not.
    pub async fn call(
        &self,
        creds: &Credentials,
        path_and_query: &str,
        retry: Retry,
    ) -> Result<reqwest::Response, CallError> {
        let spec = creds.kind.spec();
        let mut wait = Duration::from_millis(250);
        let tries = retry.tries.max(1);
        for attempt in 1..=tries {
            if !retry.fits(Duration::ZERO) {
                return Err(CallError::OutOfTime);
            }
            let req = self
                .request(creds, reqwest::Method::GET, path_and_query)
                .await
                .map_err(CallError::Refused)?;
            let resp = match req.send().await {
                Ok(resp) => resp,
                Err(e) if attempt < tries && retry.fits(wait) => {
                    let e = e.without_url();
                    tracing::warn!(kind = spec.name, error = %e, path = path_and_query, "provider unreachable; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(retry.max_wait);
                    continue;
                }
                Err(e) => return Err(CallError::Unavailable(unreachable(spec, &e))),
            };
            let status = resp.status().as_u16();
            if status == 429 || status >= 500 {
                if attempt == tries {
                    return Err(CallError::Unavailable(format!(
                        "{} answered HTTP {status} {tries} times for {path_and_query}",
                        spec.name
                    )));
                }
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| crate::domain::retry_after::parse(v, Utc::now(), retry.max_wait));
                let pause = retry_after.unwrap_or(wait).min(retry.max_wait);
                if !retry.fits(pause) {
                    return Err(CallError::Unavailable(format!(
                        "{} answered HTTP {status}, and the run's time ran out before it could try again",
                        spec.name
                    )));
                }
                tokio::time::sleep(pause).await;
                wait = (wait * 2).min(retry.max_wait);
                continue;
            }
            if !resp.status().is_success() {
                let (_, message) = explain(spec, status);
                let said = provider_says(resp).await;
                return Err(CallError::Refused(match said {
                    Some(said) => format!("{message} {} said: {said}", spec.name),
                    None => message,
                }));
            }
            return Ok(resp);
        }
        Err(CallError::Unavailable("no try was made".into()))
    }

    /// A write (`POST`, `PUT`, `DELETE`) with a JSON body, tried once: a write that may have
    /// happened is not repeated. The successful answer, or why not (`Unavailable`: unreachable
    /// or failing, `Refused`: the provider said no, in its words).
    pub async fn send(
        &self,
        creds: &Credentials,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, CallError> {
        let spec = creds.kind.spec();
        let mut req = self
            .request(creds, method, path_and_query)
            .await
            .map_err(CallError::Refused)?;
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CallError::Unavailable(unreachable(spec, &e)))?;
        let status = resp.status().as_u16();
        if status == 429 || status >= 500 {
            let said = provider_says(resp).await;
            return Err(CallError::Unavailable(match said {
                Some(said) => format!("{} answered HTTP {status}: {said}", spec.name),
                None => format!("{} answered HTTP {status}", spec.name),
            }));
        }
        if !resp.status().is_success() {
            let (_, message) = explain(spec, status);
            let said = provider_says(resp).await;
            return Err(CallError::Refused(match said {
                Some(said) => format!("{message} {} said: {said}", spec.name),
                None => message,
            }));
        }
        Ok(resp)
    }

    /// A client that connects `host` to `addrs` only (kept for the next call to the same).
    fn pinned_client(&self, host: &str, addrs: Vec<std::net::SocketAddr>) -> Result<reqwest::Client, String> {
        let key = (host.to_owned(), addrs);
        let mut cache = self.pinned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = cache.get(&key) {
            return Ok(client.clone());
        }
        // No redirects: only the first host is checked and pinned, and a tenant's site could
        // send the call on to a private address.
        let client = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .resolve_to_addrs(host, &key.1)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        // A warm sandbox serves few tenants; past a bound the cache starts over.
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, client.clone());
        Ok(client)
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

/// How often a provider call is tried, and the longest wait between tries (a `Retry-After`
/// longer than this is cut to it).
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub tries: u32,
    pub max_wait: Duration,
    /// No try starts (and no wait runs) past this: the caller's run must stop before it.
    pub deadline: Option<std::time::Instant>,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            tries: 5,
            max_wait: Duration::from_secs(30),
            deadline: None,
        }
    }
}

impl Retry {
    /// Whether `wait` and then a whole call still end before the deadline.
    fn fits(&self, wait: Duration) -> bool {
        self.deadline
            .is_none_or(|d| std::time::Instant::now() + wait + CALL_TIMEOUT < d)
    }
}

/// Why a provider call gave nothing, in words for the user.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The provider refused it (a 4xx other than 429, or a URL the guard refuses): trying
    /// again will not help until the connector's settings change.
    #[error("{0}")]
    Refused(String),
    /// Unreachable, rate-limited or failing on every try: worth trying later.
    #[error("{0}")]
    Unavailable(String),
    /// The caller's deadline came before the call could be (tried again): not the provider's
    /// fault; the caller stops and goes on later.
    #[error("no time left before the run's deadline")]
    OutOfTime,
}

/// What a refusing provider said, if its answer names it (`message`, `error`, a `code`), shortened.
async fn provider_says(resp: reqwest::Response) -> Option<String> {
    let body: Value = answer_json(resp).await.ok()?;
    let said = ["message", "error_description", "error", "code"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str).filter(|s| !s.trim().is_empty()))?;
    Some(said.chars().filter(|c| !c.is_control()).take(300).collect())
}

/// A connector's saved values, secrets opened: for the calls made with them.
#[derive(Clone)]
pub struct Credentials {
    pub kind: Kind,
    pub settings: Map<String, Value>,
    pub secrets: Map<String, Value>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("kind", &self.kind)
            .field("settings", &self.settings)
            .field("secrets", &"(sealed)")
            .finish()
    }
}

impl Credentials {
    pub fn value(&self, name: &str) -> Option<String> {
        self.settings
            .get(name)
            .or_else(|| self.secrets.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
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

/// A provider's answer to the test call, in words for the user.
pub fn explain(spec: &Spec, status: u16) -> (bool, String) {
    let name = spec.name;
    let where_ = match spec.base {
        Base::Field(field) => spec.field(field).map(|f| f.label.to_lowercase()).unwrap_or_default(),
        _ => spec
            .fields
            .iter()
            .filter(|f| !f.secret && !matches!(f.format, Format::Choice))
            .map(|f| f.label.to_lowercase())
            .collect::<Vec<_>>()
            .join(" and "),
    };
    match status {
        200..=299 => (true, format!("Connected to {name}.")),
        401 => (
            false,
            format!(
                "{name} did not accept the {} (HTTP 401): check that they are complete and not revoked.",
                secret_labels(spec)
            ),
        ),
        403 => (
            false,
            format!(
                "{name} accepted the {} but they lack a permission this connector needs (HTTP 403){}",
                secret_labels(spec),
                spec.fields
                    .iter()
                    .find(|f| f.secret && !f.help.is_empty())
                    .map(|f| format!(": {}.", f.help))
                    .unwrap_or_else(|| ".".to_owned())
            ),
        ),
        404 if !where_.is_empty() => (
            false,
            format!("{name} answered that nothing is at this address (HTTP 404): check the {where_}."),
        ),
        404 => (
            false,
            format!("{name} answered 404: its API is not at the configured address."),
        ),
        300..=399 => (
            false,
            format!(
                "{name} answered with a redirect (HTTP {status}), which is not followed: save the address the site \
                 redirects to (https, with or without www as the site uses)."
            ),
        ),
        429 => (
            false,
            format!("{name} is limiting requests right now (HTTP 429): test again in a minute."),
        ),
        500..=599 => (
            false,
            format!("{name} had an error of its own (HTTP {status}): test again later."),
        ),
        _ => (false, format!("{name} answered HTTP {status}.")),
    }
}

/// Why a call got no answer, in words: the host, never the whole URL (a token may ride in its
/// query: Facebook's page token does).
fn unreachable(spec: &Spec, e: &reqwest::Error) -> String {
    let host = e.url().and_then(|u| u.host_str()).unwrap_or("the server").to_owned();
    if e.is_timeout() {
        format!(
            "{} at {host} did not answer within {} s.",
            spec.name,
            CALL_TIMEOUT.as_secs()
        )
    } else if e.is_connect() {
        format!("Could not connect to {host}: check the address, and that the site is up.")
    } else {
        let mut cause = String::new();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        if cause.is_empty() {
            format!("The call to {host} failed.")
        } else {
            format!("The call to {host} failed: {cause}")
        }
    }
}

/// The most of a provider's answer that is read (a page of 250 orders is a few MB).
pub const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// A provider's answer read as JSON `T`, at most `MAX_ANSWER_BYTES`. The error says what was
/// wrong in words and never carries the URL (a token may ride in its query).
pub async fn answer_json<T: serde::de::DeserializeOwned>(mut resp: reqwest::Response) -> Result<T, String> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(format!("the answer is larger than {} MiB", MAX_ANSWER_BYTES >> 20));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(format!("the answer could not be read: {}", e.without_url())),
        }
    }
    serde_json::from_slice(&body).map_err(|e| format!("the answer is not the JSON expected: {e}"))
}
