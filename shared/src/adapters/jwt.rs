//! JWT verification: RS256 only, keys from a JWKS URL (cached, refetched on an unknown `kid`
//! at most every 30 s) or a JWKS file (local stack), with issuer, audience and expiry checked.
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

use crate::config::{JwksSource, JwtConfig};

const REFRESH_COOLDOWN: Duration = Duration::from_secs(30);
const MAX_AGE: Duration = Duration::from_secs(3600);

/// The claims we use. Anything else in the token is ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Whether the identity provider verified `email`; an unverified address is never trusted.
    #[serde(default)]
    pub email_verified: Option<bool>,
}

impl Claims {
    /// The address, only when the identity provider says it verified it.
    pub fn verified_email(&self) -> Option<&str> {
        self.email
            .as_deref()
            .filter(|e| !e.is_empty() && self.email_verified == Some(true))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token is malformed or its signature, issuer, audience or expiry is not valid")]
    Invalid,
    #[error("token is signed with an unknown key")]
    UnknownKey,
    #[error("signing keys are unavailable: {0}")]
    Keys(String),
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    /// When the keys were last fetched successfully (`None`: never).
    fetched: Option<Instant>,
    /// When a fetch was last tried, successful or not (the cooldown applies to failures too).
    attempted: Option<Instant>,
}

pub struct JwtVerifier {
    source: JwksSource,
    validation: Validation,
    http: reqwest::Client,
    keys: RwLock<Keys>,
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        validation.validate_nbf = true;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            source: config.jwks.clone(),
            validation,
            http,
            keys: RwLock::new(Keys::default()),
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Invalid)?;
        if header.alg != Algorithm::RS256 {
            return Err(JwtError::Invalid);
        }
        let kid = header.kid.ok_or(JwtError::Invalid)?;
        let key = match self.cached_key(&kid).await {
            (Some(key), false) => key,
            // Older than MAX_AGE: refresh, but keep serving the keys we have if that fails
            // (stale-if-error), so an identity-provider blip does not stop every sign-in.
            (Some(key), true) => {
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "JWKS refresh failed; using the cached keys");
                }
                self.cached_key(&kid).await.0.unwrap_or(key)
            }
            (None, _) => {
                self.refresh().await?;
                self.cached_key(&kid).await.0.ok_or(JwtError::UnknownKey)?
            }
        };
        jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| JwtError::Invalid)
    }

    /// The key for `kid`, and whether the key set is older than MAX_AGE.
    async fn cached_key(&self, kid: &str) -> (Option<DecodingKey>, bool) {
        let guard = self.keys.read().await;
        let stale = guard.fetched.is_none_or(|f| f.elapsed() > MAX_AGE);
        (guard.by_kid.get(kid).cloned(), stale)
    }

    /// Fetches the key set, at most once per REFRESH_COOLDOWN whatever the outcome (so tokens with
    /// made-up `kid`s or a failing endpoint cannot make every request fetch). A failure keeps
    /// the keys already held.
    async fn refresh(&self) -> Result<(), JwtError> {
        let mut guard = self.keys.write().await;
        if guard.attempted.is_some_and(|a| a.elapsed() < REFRESH_COOLDOWN) {
            return if guard.by_kid.is_empty() {
                Err(JwtError::Keys("signing keys are not loaded yet; retry shortly".into()))
            } else {
                Ok(())
            };
        }
        guard.attempted = Some(Instant::now());
        let set = self.load().await?;
        guard.by_kid = set
            .keys
            .iter()
            .filter(|jwk| {
                // Signing keys for RS256 only (a JWK may omit both fields).
                let use_ok = jwk
                    .common
                    .public_key_use
                    .as_ref()
                    .is_none_or(|u| *u == jsonwebtoken::jwk::PublicKeyUse::Signature);
                let alg_ok = jwk
                    .common
                    .key_algorithm
                    .is_none_or(|a| a == jsonwebtoken::jwk::KeyAlgorithm::RS256);
                use_ok && alg_ok
            })
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
            })
            .collect();
        guard.fetched = Some(Instant::now());
        Ok(())
    }

    async fn load(&self) -> Result<JwkSet, JwtError> {
        match &self.source {
            JwksSource::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| JwtError::Keys(format!("reading {}: {e}", path.display())))?;
                serde_json::from_str(&text).map_err(|e| JwtError::Keys(format!("parsing JWKS: {e}")))
            }
            JwksSource::Url(url) => {
                let response = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| JwtError::Keys(format!("fetching JWKS: {e}")))?;
                response
                    .json()
                    .await
                    .map_err(|e| JwtError::Keys(format!("parsing JWKS: {e}")))
            }
        }
    }
}
