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

/// A Postgres pool's settings: the URL (never printed: it holds the password) and its size.
#[derive(Clone)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl DatabaseSettings {
    /// The application role (`portal_app`): `DATABASE_URL`, `DATABASE_MAX_CONNECTIONS` (2).
    pub fn app(env: &Env) -> Result<Self, ConfigError> {
        Self::named(env, "DATABASE_URL")
    }

    /// The billing role (`portal_billing`: mirrors of every tenant): `BILLING_DATABASE_URL`,
    /// `DATABASE_MAX_CONNECTIONS` (2).
    pub fn billing(env: &Env) -> Result<Self, ConfigError> {
        Self::named(env, "BILLING_DATABASE_URL")
    }

    fn named(env: &Env, name: &'static str) -> Result<Self, ConfigError> {
        Ok(Self {
            url: env.required(name)?,
            max_connections: env.parsed_or("DATABASE_MAX_CONNECTIONS", 2)?,
        })
    }

    /// The pool (lazy: no connection is opened until the first query).
    pub fn pool(&self) -> anyhow::Result<sqlx::PgPool> {
        crate::adapters::pg::pool(&self.url, self.max_connections)
    }
}

/// Where the key that seals connector secrets comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSource {
    /// `CONNECTOR_KMS_KEY_ID` (AWS).
    Kms { key_id: String },
    /// `CONNECTOR_LOCAL_KEY_FILE` (the local stack: a file of 64 hex characters).
    LocalFile(PathBuf),
}

/// The connectors' settings: the key-encryption key, `CONNECTOR_BASE_URLS` (`kind=url,...`:
/// provider API overrides, the local fakes) and `CONNECTORS_ALLOW_PRIVATE_NETWORKS` (`true`
/// switches the SSRF guard off: refused unless `STAGE` is unset or `local`).
#[derive(Debug, Clone)]
pub struct ConnectorSettings {
    pub kek: KekSource,
    pub bases: HashMap<crate::services::connectors::catalog::Kind, String>,
    pub allow_private: bool,
}

impl ConnectorSettings {
    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let kek = match (
            env.optional("CONNECTOR_KMS_KEY_ID"),
            env.optional("CONNECTOR_LOCAL_KEY_FILE"),
        ) {
            (Some(key_id), _) => KekSource::Kms { key_id },
            (None, Some(path)) => KekSource::LocalFile(PathBuf::from(path)),
            (None, None) => {
                return Err(ConfigError::Missing(
                    "CONNECTOR_KMS_KEY_ID (or CONNECTOR_LOCAL_KEY_FILE)",
                ));
            }
        };
        let bases = crate::services::connectors::parse_bases(&env.optional("CONNECTOR_BASE_URLS").unwrap_or_default())
            .map_err(|reason| ConfigError::Invalid {
                name: "CONNECTOR_BASE_URLS",
                reason,
            })?;
        let allow_private = env.parsed_or("CONNECTORS_ALLOW_PRIVATE_NETWORKS", false)?;
        let stage = env.optional("STAGE").unwrap_or_else(|| "local".to_owned());
        if allow_private && stage != "local" {
            return Err(ConfigError::Invalid {
                name: "CONNECTORS_ALLOW_PRIVATE_NETWORKS",
                reason: format!("true is for the local stack only (STAGE is {stage})"),
            });
        }
        Ok(Self {
            kek,
            bases,
            allow_private,
        })
    }
}

/// The media bucket (`MEDIA_BUCKET`) and where websites read its objects
/// ([`media_public_base`]).
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub bucket: String,
    pub public_base_url: String,
}

impl MediaSettings {
    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            bucket: env.required("MEDIA_BUCKET")?,
            public_base_url: media_public_base(env)?,
        })
    }
}

/// The CRM files bucket (`CRM_FILES_BUCKET`: imports, exports, error files) and the crm-import
/// worker's queue (`CRM_JOBS_QUEUE_URL`).
#[derive(Debug, Clone)]
pub struct CrmFilesSettings {
    pub bucket: String,
    pub jobs_queue_url: String,
}

impl CrmFilesSettings {
    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            bucket: env.required("CRM_FILES_BUCKET")?,
            jobs_queue_url: env.required("CRM_JOBS_QUEUE_URL")?,
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
    fn connector_settings_name_what_is_wrong() {
        let key = [("CONNECTOR_LOCAL_KEY_FILE", "/tmp/kek.hex")];
        let ok = ConnectorSettings::from(&Env::from_pairs(key)).unwrap();
        assert_eq!(ok.kek, KekSource::LocalFile(PathBuf::from("/tmp/kek.hex")));
        assert!(!ok.allow_private && ok.bases.is_empty());

        let kms = ConnectorSettings::from(&Env::from_pairs([("CONNECTOR_KMS_KEY_ID", "alias/x")])).unwrap();
        assert_eq!(
            kms.kek,
            KekSource::Kms {
                key_id: "alias/x".into()
            }
        );

        let none = ConnectorSettings::from(&Env::from_pairs([])).unwrap_err();
        assert_eq!(
            none,
            ConfigError::Missing("CONNECTOR_KMS_KEY_ID (or CONNECTOR_LOCAL_KEY_FILE)")
        );

        let cases = [
            ("CONNECTOR_BASE_URLS", "shopify=not a url", "CONNECTOR_BASE_URLS"),
            ("CONNECTOR_BASE_URLS", "nosuchkind=http://x", "CONNECTOR_BASE_URLS"),
            (
                "CONNECTORS_ALLOW_PRIVATE_NETWORKS",
                "yes",
                "CONNECTORS_ALLOW_PRIVATE_NETWORKS",
            ),
        ];
        for (name, value, named) in cases {
            let err = ConnectorSettings::from(&Env::from_pairs([key[0], (name, value)])).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { name, .. } if name == named),
                "{value}: {err:?}"
            );
        }
        let prod = Env::from_pairs([key[0], ("CONNECTORS_ALLOW_PRIVATE_NETWORKS", "true"), ("STAGE", "prod")]);
        let err = ConnectorSettings::from(&prod).unwrap_err();
        assert!(err.to_string().contains("local stack only (STAGE is prod)"), "{err}");
        let local = Env::from_pairs([key[0], ("CONNECTORS_ALLOW_PRIVATE_NETWORKS", "true")]);
        assert!(ConnectorSettings::from(&local).unwrap().allow_private);
    }

    #[test]
    fn database_settings_never_print_the_url() {
        let env = Env::from_pairs([("BILLING_DATABASE_URL", "postgres://b:secret@db/p")]);
        let billing = DatabaseSettings::billing(&env).unwrap();
        assert_eq!(billing.max_connections, 2);
        assert!(!format!("{billing:?}").contains("secret"));
        assert_eq!(
            DatabaseSettings::app(&env).unwrap_err(),
            ConfigError::Missing("DATABASE_URL")
        );
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
