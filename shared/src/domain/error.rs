use super::validate::FieldError;

/// What a service can answer besides success. No HTTP types here: `shared::http::ApiError`
/// maps each variant to a status and a problem document.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The resource does not exist *for this tenant* (another tenant's ids land here too).
    #[error("not found")]
    NotFound,
    /// The caller is known and in the tenant but may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request conflicts with the current state (duplicate, last owner, already used).
    #[error("conflict ({code}): {detail}")]
    Conflict {
        code: &'static str,
        detail: String,
        /// A value that would not conflict (the next free slug), when there is one.
        suggestion: Option<String>,
    },
    /// The resource existed but is no longer usable (an expired invitation).
    #[error("gone: {0}")]
    Gone(String),
    /// Optimistic concurrency: the caller's version is not the current one.
    #[error("stale version")]
    StaleVersion,
    /// The tenant's plan does not allow this: `limit` names the entitlement (`seats`, ...).
    #[error("plan limit {limit} reached: {used} of {allowed} on {plan}")]
    LimitExceeded {
        limit: &'static str,
        allowed: i64,
        used: i64,
        plan: String,
    },
    /// Input that fails the domain's rules, field by field.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// A service the request depends on (Stripe, a queue) failed or refused: the request did
    /// not take effect; the cause is logged (503: the caller retries).
    #[error("upstream: {0}")]
    Upstream(String),
    /// A provider the tenant connected (their WordPress site) failed or refused the call the
    /// request depends on: nothing was changed here; the reason, in words for the user, is shown.
    #[error("provider failed: {0}")]
    ProviderFailed(String),
    /// Anything else; the cause chain is logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DomainError {
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            detail: detail.into(),
            suggestion: None,
        }
    }

    /// A conflict whose answer names a value that would not conflict.
    pub fn conflict_suggesting(code: &'static str, detail: impl Into<String>, suggestion: String) -> Self {
        Self::Conflict {
            code,
            detail: detail.into(),
            suggestion: Some(suggestion),
        }
    }

    pub fn invalid(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, code, message)])
    }
}
