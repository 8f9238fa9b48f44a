//! The collect path: resolve the site key (in-process cache, then Redis, then one narrow
//! Postgres lookup whose answer is cached in Redis), enrich each event, and XADD the batch to the
//! stream atomically (MULTI/EXEC) with an approximate length cap. Steady state touches Redis
//! only; the answer waits for Redis, never for Postgres' rollups.
use chrono::Utc;
use redis::AsyncCommands;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::event::{Client, Reason, STREAM, Sender, SiteRef, enrich_from, split_body};
use crate::adapters::redis::Redis;
use crate::domain::DomainError;
use crate::domain::validate::OptionalTextSchema;

/// The stream keeps about this many entries (XADD MAXLEN ~): far more than a day of folding lag.
pub const STREAM_CAP: usize = 5_000_000;
const LOCAL_TTL: Duration = Duration::from_secs(60);
const REDIS_SITE_TTL_SECS: u64 = 300;

// The body of `POST /analytics/collect` as the document states it: the collector reads the JSON
// itself, field by field (`split_body`, then `enrich_from` per event), so these types only
// describe it.

/// Events of one site: a batch, or one event. A body without a `site_key` or with an empty or
/// oversized batch answers 422; an event that breaks its rules is dropped (the 202 says why).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum CollectBody {
    Batch(CollectBatch),
    One(CollectOne),
}

/// Several events of one site.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct CollectBatch {
    /// The site's public key (`GET /analytics/sites`): an unknown one answers 404.
    #[schema(min_length = 1, pattern = r"\S")]
    pub site_key: String,
    /// 1 to 50 events.
    #[schema(min_items = 1, max_items = 50)]
    pub events: Vec<CollectEvent>,
}

/// One event, with its site's key.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct CollectOne {
    /// The site's public key (`GET /analytics/sites`): an unknown one answers 404.
    #[schema(min_length = 1, pattern = r"\S")]
    pub site_key: String,
    #[serde(flatten)]
    pub event: CollectEvent,
}

/// An event. One that breaks these rules is dropped (`dropped` of the 202 says why); fields
/// not named here are ignored.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct CollectEvent {
    /// `pageview` (the default) or a custom event's name: at most 120 characters, no control
    /// characters.
    #[schema(value_type = Option<OptionalTextSchema<120>>, inline)]
    pub name: Option<String>,
    /// The page's absolute `http` or `https` URL, at most 2,048 bytes.
    #[schema(max_length = 2048, pattern = r"^\s*[Hh][Tt][Tt][Pp][Ss]?:")]
    pub url: String,
    /// The referring page's URL (`document.referrer`).
    pub referrer: Option<String>,
    /// The screen's width in CSS pixels: the device is `mobile` below 576, `tablet` below 992.
    #[schema(minimum = 0, maximum = 100_000)]
    pub screen_width: Option<u64>,
    /// Flat properties: at most 30, each a string, a number or a boolean (clipped to 100-byte
    /// keys and 300-byte values).
    pub props: Option<HashMap<String, CollectProp>>,
    /// When it happened, in Unix milliseconds (default: now): within the last 24 hours and at
    /// most 5 minutes ahead.
    pub timestamp: Option<i64>,
}

/// A property's value.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum CollectProp {
    Text(String),
    Number(f64),
    Flag(bool),
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Dropped {
    /// Position of the event in the request (0 for a single event).
    pub index: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub accepted: usize,
    pub dropped: Vec<Dropped>,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("unknown site key")]
    UnknownSite,
    #[error("origin not allowed")]
    OriginNotAllowed,
    #[error("bad request: {0}")]
    Invalid(Reason),
    /// Redis could not take the events: nothing was acknowledged; the client may retry.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
}

type SiteCache = Arc<Mutex<HashMap<String, (Instant, Option<SiteRef>)>>>;
/// Today's salt: (UTC day, salt).
type SaltCache = Arc<Mutex<Option<(String, Vec<u8>)>>>;

#[derive(Clone)]
pub struct Collector {
    redis_url: Arc<str>,
    redis: Arc<tokio::sync::OnceCell<Redis>>,
    pub db: PgPool,
    pub stream: String,
    sites: SiteCache,
    salt: SaltCache,
}

impl Collector {
    /// Connects to Redis on first use (a cold start that only answers a preflight never does).
    pub fn new(redis_url: &str, db: PgPool) -> Self {
        Self {
            redis_url: redis_url.into(),
            redis: Arc::default(),
            db,
            stream: STREAM.to_owned(),
            sites: Arc::default(),
            salt: Arc::default(),
        }
    }

    /// With a connection already made.
    pub fn with_redis(redis: Redis, db: PgPool) -> Self {
        let collector = Self::new("", db);
        let _ = collector.redis.set(redis);
        collector
    }

    async fn redis(&self) -> Result<Redis, CollectError> {
        self.redis
            .get_or_try_init(|| crate::adapters::redis::connect(&self.redis_url))
            .await
            .cloned()
            .map_err(|e| CollectError::Unavailable(e.to_string()))
    }

    /// The site a key names (cached); `None` for an unknown key.
    pub async fn site(&self, key: &str) -> Result<Option<SiteRef>, CollectError> {
        if key.len() > 64 {
            return Ok(None);
        }
        if let Ok(cache) = self.sites.lock()
            && let Some((at, site)) = cache.get(key)
            && at.elapsed() < LOCAL_TTL
        {
            return Ok(site.clone());
        }
        let mut redis = self.redis().await?;
        let redis_key = format!("analytics:site:{key}");
        let cached: Option<String> = redis
            .get(&redis_key)
            .await
            .map_err(|e| CollectError::Unavailable(e.to_string()))?;
        let site = match cached {
            Some(json) => serde_json::from_str::<Option<SiteRef>>(&json).unwrap_or(None),
            None => {
                let row: Option<(uuid::Uuid, uuid::Uuid, Vec<String>)> =
                    sqlx::query_as("select site_id, tenant_id, allowed_origins from app_analytics_site($1)")
                        .bind(key)
                        .fetch_optional(&self.db)
                        .await
                        .map_err(|e| CollectError::Unavailable(e.to_string()))?;
                let site = row.map(|(site_id, tenant_id, allowed_origins)| SiteRef {
                    site_id,
                    tenant_id,
                    allowed_origins,
                });
                let json = serde_json::to_string(&site).unwrap_or_default();
                let ttl = if site.is_some() { REDIS_SITE_TTL_SECS } else { 60 };
                let _: redis::RedisResult<()> = redis.set_ex(&redis_key, json, ttl).await;
                site
            }
        };
        if let Ok(mut cache) = self.sites.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(key.to_owned(), (Instant::now(), site.clone()));
        }
        Ok(site)
    }

    /// Today's visitor salt (UTC day), shared by every sandbox through Redis, kept two days.
    async fn salt(&self) -> Result<Vec<u8>, CollectError> {
        let day = Utc::now().format("%Y-%m-%d").to_string();
        if let Ok(cached) = self.salt.lock()
            && let Some((d, salt)) = cached.as_ref()
            && *d == day
        {
            return Ok(salt.clone());
        }
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| CollectError::Unavailable(e.to_string()))?;
        let key = format!("analytics:salt:{day}");
        let mut redis = self.redis().await?;
        let unavailable = |e: redis::RedisError| CollectError::Unavailable(e.to_string());
        // One command: set ours unless one exists, and answer the existing one (Redis >= 7).
        let existing: Option<Vec<u8>> = redis::cmd("SET")
            .arg(&key)
            .arg(&fresh[..])
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(2 * 24 * 3600)
            .query_async(&mut redis)
            .await
            .map_err(unavailable)?;
        let salt = existing.unwrap_or_else(|| fresh.to_vec());
        if salt.len() < 16 {
            return Err(CollectError::Unavailable(
                "the visitor salt in Redis is not usable".into(),
            ));
        }
        if let Ok(mut cached) = self.salt.lock() {
            *cached = Some((day, salt.clone()));
        }
        Ok(salt)
    }

    /// Takes one request: `origin` is the browser's `Origin` header (absent for server-side
    /// senders, which the key alone authorizes).
    pub async fn collect(
        &self,
        body: &Value,
        origin: Option<&str>,
        client: Client<'_>,
    ) -> Result<Accepted, CollectError> {
        let (key, raw_events) = split_body(body).map_err(CollectError::Invalid)?;
        let site = self.site(key).await?.ok_or(CollectError::UnknownSite)?;
        if let Some(origin) = origin
            && !site.allows(origin)
        {
            return Err(CollectError::OriginNotAllowed);
        }
        let salt = self.salt().await?;
        let now = Utc::now().timestamp_millis();
        let mut dropped = Vec::new();
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut accepted = 0;
        let sender = Sender::of(&site, client, &salt);
        for (index, raw) in raw_events.into_iter().enumerate() {
            match enrich_from(&site, raw, &sender, now) {
                Ok(event) => {
                    let json = serde_json::to_string(&event).map_err(|e| CollectError::Unavailable(e.to_string()))?;
                    pipe.cmd("XADD")
                        .arg(&self.stream)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(STREAM_CAP)
                        .arg("*")
                        .arg("e")
                        .arg(json)
                        .ignore();
                    accepted += 1;
                }
                Err(reason) => dropped.push(Dropped {
                    index,
                    reason: reason.to_owned(),
                }),
            }
        }
        if accepted > 0 {
            let mut redis = self.redis().await?;
            let _: () = pipe
                .query_async(&mut redis)
                .await
                .map_err(|e| CollectError::Unavailable(e.to_string()))?;
        }
        Ok(Accepted { accepted, dropped })
    }
}

impl From<CollectError> for DomainError {
    fn from(e: CollectError) -> Self {
        match e {
            CollectError::UnknownSite => DomainError::NotFound,
            CollectError::OriginNotAllowed => {
                DomainError::Forbidden("this origin may not send events to the site".into())
            }
            CollectError::Invalid(reason) => DomainError::invalid("body", "invalid_body", reason),
            CollectError::Unavailable(why) => DomainError::Upstream(why),
        }
    }
}
