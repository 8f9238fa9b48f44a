//! Configuration from the environment: one typed struct, read once in `main`.
//!
//! A missing or malformed variable is an error that names the variable; nothing silently falls
//! back to a default except the documented optional settings. `Debug` never prints secrets.
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where the JWT signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    Url(String),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks: JwksSource,
}

#[derive(Clone)]
pub struct Config {
    /// Connection string of the application role (`portal_app`): never the owner.
    pub database_url: String,
    pub database_max_connections: u32,
    pub jwt: JwtConfig,
    /// Base URL of the portal front end, for links sent to people (invitations).
    pub portal_base_url: String,
    /// Hours an invitation stays valid.
    pub invitation_ttl_hours: i64,
    /// The function's name for logs (`AWS_LAMBDA_FUNCTION_NAME`, else the binary's name).
    pub function_name: String,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &"<redacted>")
            .field("database_max_connections", &self.database_max_connections)
            .field("jwt", &self.jwt)
            .field("portal_base_url", &self.portal_base_url)
            .field("invitation_ttl_hours", &self.invitation_ttl_hours)
            .field("function_name", &self.function_name)
            .finish()
    }
}

/// A view of environment variables (the process environment, or a map in tests).
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            vars: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        }
    }

    /// A required variable; empty counts as missing.
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        self.vars.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }

    /// An optional variable parsed into `T`, with a documented default when unset.
    pub fn parsed_or<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
        }
    }
}

/// Where a website reads the media bucket's objects: `MEDIA_PUBLIC_BASE_URL` (the CDN in front
/// of the bucket), else the S3-compatible endpoint's path-style URL when one is configured
/// (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, the local stack), else the bucket's own URL.
pub fn media_public_base(env: &Env) -> Result<String, ConfigError> {
    if let Some(base) = env.optional("MEDIA_PUBLIC_BASE_URL") {
        return Ok(base.trim_end_matches('/').to_owned());
    }
    let bucket = env.required("MEDIA_BUCKET")?;
    Ok(
        match env
            .optional("AWS_ENDPOINT_URL_S3")
            .or_else(|| env.optional("AWS_ENDPOINT_URL"))
        {
            Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            None => format!("https://{bucket}.s3.amazonaws.com"),
        },
    )
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from(&Env::from_process())
    }

    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let jwks = match (env.optional("JWKS_URL"), env.optional("JWKS_FILE")) {
            (Some(url), _) => JwksSource::Url(url),
            (None, Some(path)) => JwksSource::File(PathBuf::from(path)),
            (None, None) => return Err(ConfigError::Missing("JWKS_URL (or JWKS_FILE)")),
        };
        let portal_base_url = env.required("PORTAL_BASE_URL")?;
        if !(portal_base_url.starts_with("http://") || portal_base_url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                name: "PORTAL_BASE_URL",
                reason: "must start with http:// or https://".into(),
            });
        }
        Ok(Self {
            database_url: env.required("DATABASE_URL")?,
            database_max_connections: env.parsed_or("DATABASE_MAX_CONNECTIONS", 2)?,
            jwt: JwtConfig {
                issuer: env.required("JWT_ISSUER")?,
                audience: env.required("JWT_AUDIENCE")?,
                jwks,
            },
            portal_base_url: portal_base_url.trim_end_matches('/').to_owned(),
            invitation_ttl_hours: match env.parsed_or("INVITATION_TTL_HOURS", 72)? {
                // A year at most: a larger value would overflow the expiry's arithmetic.
                hours @ 1..=8760 => hours,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "INVITATION_TTL_HOURS",
                        reason: "must be between 1 and 8760 hours".into(),
                    });
                }
            },
            function_name: env
                .optional("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|| env!("CARGO_PKG_NAME").to_owned()),
        })
    }
}

/// The Stripe API: `STRIPE_API_BASE` (default `https://api.stripe.com`; localstripe locally),
/// `STRIPE_SECRET_KEY` (`sk_...`/`rk_...`), optional `STRIPE_LIVEMODE` (`true`/`false`: events of
/// the other mode are recorded and ignored).
#[derive(Clone)]
pub struct StripeSettings {
    pub api_base: String,
    pub secret_key: String,
    pub livemode: Option<bool>,
}

impl fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeSettings")
            .field("api_base", &self.api_base)
            .field("secret_key", &"<redacted>")
            .field("livemode", &self.livemode)
            .finish()
    }
}

impl StripeSettings {
    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let secret_key = env.required("STRIPE_SECRET_KEY")?;
        if !(secret_key.starts_with("sk_") || secret_key.starts_with("rk_")) {
            return Err(ConfigError::Invalid {
                name: "STRIPE_SECRET_KEY",
                reason: "a Stripe secret or restricted key starts with sk_ or rk_".into(),
            });
        }
        let livemode = match env.optional("STRIPE_LIVEMODE") {
            None => None,
            Some(v) => Some(v.trim().parse::<bool>().map_err(|e| ConfigError::Invalid {
                name: "STRIPE_LIVEMODE",
                reason: e.to_string(),
            })?),
        };
        Ok(Self {
            api_base: env
                .optional("STRIPE_API_BASE")
                .unwrap_or_else(|| "https://api.stripe.com".to_owned()),
            secret_key,
            livemode,
        })
    }

    pub fn client(&self) -> anyhow::Result<crate::adapters::stripe_api::StripeApi> {
        crate::adapters::stripe_api::StripeApi::new(&self.api_base, &self.secret_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("DATABASE_URL", "postgres://app:secret@db/portal"),
            ("JWT_ISSUER", "https://issuer"),
            ("JWT_AUDIENCE", "portal-api"),
            ("JWKS_FILE", "/tmp/jwks.json"),
            ("PORTAL_BASE_URL", "http://127.0.0.1:9000/"),
        ]
    }

    #[test]
    fn an_invitation_lifetime_no_clock_can_hold_is_refused_at_start() {
        for bad in ["0", "-1", "8761", "9223372036854775807"] {
            let mut vars = base();
            vars.push(("INVITATION_TTL_HOURS", bad));
            let err = Config::from(&Env::from_pairs(vars)).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        name: "INVITATION_TTL_HOURS",
                        ..
                    }
                ),
                "{bad}: {err:?}"
            );
        }
        let mut vars = base();
        vars.push(("INVITATION_TTL_HOURS", "168"));
        assert_eq!(Config::from(&Env::from_pairs(vars)).unwrap().invitation_ttl_hours, 168);
    }

    #[test]
    fn missing_variable_is_named() {
        let vars: Vec<_> = base().into_iter().filter(|(k, _)| *k != "JWT_AUDIENCE").collect();
        let err = Config::from(&Env::from_pairs(vars)).unwrap_err();
        assert_eq!(err, ConfigError::Missing("JWT_AUDIENCE"));
        assert_eq!(err.to_string(), "environment variable JWT_AUDIENCE is not set");
    }

    #[test]
    fn debug_never_prints_the_database_password() {
        let config = Config::from(&Env::from_pairs(base())).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert_eq!(config.portal_base_url, "http://127.0.0.1:9000");
        assert_eq!(config.invitation_ttl_hours, 72);
    }

    #[test]
    fn malformed_number_is_an_error_not_a_default() {
        let mut vars = base();
        vars.push(("INVITATION_TTL_HOURS", "three days"));
        let err = Config::from(&Env::from_pairs(vars)).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "INVITATION_TTL_HOURS",
                ..
            }
        ));
    }
}
