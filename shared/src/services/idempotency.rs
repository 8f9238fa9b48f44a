//! `Idempotency-Key` for creating POSTs. The key is claimed inside the same transaction as the
//! effects and the response is stored there too, so a retry after a crash or timeout either
//! finds nothing (the first attempt rolled back: run again) or the stored response (replay),
//! never a second effect. A concurrent duplicate waits on the unique index until the first
//! commits. Reusing a key for a different request is refused.
use serde_json::Value;
use sha2::{Digest, Sha256};

use sqlx::PgPool;

use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, Scope};

/// A client's key plus a fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: Vec<u8>,
}

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    /// `operation` names the route (method and path template); `body` is the raw request body.
    pub fn new(key: &str, operation: &str, body: &[u8]) -> Result<Self, DomainError> {
        if key.is_empty() || key.len() > Self::MAX_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DomainError::invalid(
                "Idempotency-Key",
                "invalid_idempotency_key",
                format!("must be 1 to {} visible ASCII characters", Self::MAX_LEN),
            ));
        }
        let mut hash = Sha256::new();
        hash.update(operation.as_bytes());
        hash.update([0]);
        hash.update(body);
        Ok(Self {
            key: key.to_owned(),
            request_hash: hash.finalize().to_vec(),
        })
    }
}

/// A stored response to replay instead of acting again.
#[derive(Debug, Clone)]
pub struct Replay {
    pub status: u16,
    pub body: Value,
}

/// Claims the key for this transaction. `Ok(None)`: go ahead and act, then [`store`].
/// `Ok(Some(replay))`: answer with the stored response and do nothing else.
pub async fn claim(tx: &mut Tx, scope: &Scope, key: &IdempotencyKey) -> Result<Option<Replay>, DomainError> {
    let principal = scope.actor.principal();
    // A new key, or one whose record has expired (a day old), is claimed now.
    let inserted = sqlx::query(
        "insert into idempotency_keys (principal, key, tenant_id, request_hash) values ($1, $2, $3, $4) \
         on conflict (principal, key) do update set tenant_id = excluded.tenant_id, \
             request_hash = excluded.request_hash, status_code = null, response = null, created_at = now() \
         where idempotency_keys.created_at < now() - interval '24 hours'",
    )
    .bind(&principal)
    .bind(&key.key)
    .bind(scope.tenant_id())
    .bind(&key.request_hash)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    let (hash, tenant, status, body): (Vec<u8>, Option<uuid::Uuid>, Option<i32>, Option<Value>) = sqlx::query_as(
        "select request_hash, tenant_id, status_code, response from idempotency_keys where principal = $1 and key = $2",
    )
    .bind(&principal)
    .bind(&key.key)
    .fetch_one(&mut **tx)
    .await?;
    // The same key for another request, or in another tenant, is a client error, never a replay.
    if hash != key.request_hash || tenant != scope.tenant_id() {
        return Err(DomainError::invalid(
            "Idempotency-Key",
            "idempotency_key_reused",
            "was already used for a different request",
        ));
    }
    match (status, body) {
        (Some(status), Some(body)) => Ok(Some(Replay {
            status: u16::try_from(status).unwrap_or(200),
            body,
        })),
        _ => Err(DomainError::conflict(
            "idempotency_in_progress",
            "a request with this Idempotency-Key is in progress",
        )),
    }
}

/// Begins a creating call's transaction. With a key, claims it first: an earlier identical
/// request's stored answer comes back as `Err(replay)` (answer it and do nothing else).
pub async fn begin(
    pool: &PgPool,
    scope: &Scope,
    key: Option<&IdempotencyKey>,
) -> Result<Result<Tx, Replay>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    if let Some(key) = key
        && let Some(replay) = claim(&mut tx, scope, key).await?
    {
        tx.commit().await?;
        return Ok(Err(replay));
    }
    Ok(Ok(tx))
}

/// Stores the response for replays, in the same transaction as the effects (no key: nothing).
pub async fn store(
    tx: &mut Tx,
    scope: &Scope,
    key: Option<&IdempotencyKey>,
    status: u16,
    body: &impl serde::Serialize,
) -> Result<(), DomainError> {
    let Some(key) = key else {
        return Ok(());
    };
    let body = serde_json::to_value(body).map_err(anyhow::Error::from)?;
    sqlx::query("update idempotency_keys set status_code = $3, response = $4 where principal = $1 and key = $2")
        .bind(scope.actor.principal())
        .bind(&key.key)
        .bind(i32::from(status))
        .bind(body)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The outcome of a creating call: a new resource, or the stored answer to an earlier
/// identical request with the same idempotency key.
#[derive(Debug)]
pub enum Created<T> {
    Fresh(T),
    Replayed(Replay),
}
