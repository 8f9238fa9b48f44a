//! A small typed client for the parts of the Stripe API the portal calls: creating customers,
//! Checkout and customer-portal sessions, retrieving objects and paging lists. Form-encoded
//! requests, JSON answers read as `serde_json::Value` (our typed views read them leniently).
//! The base URL is configuration (`STRIPE_API_BASE`: localstripe locally), and every request
//! pins [`API_VERSION`]. The secret key never reaches a log.
use serde_json::Value;
use std::time::Duration;

/// The Stripe API version the portal models (sent as `Stripe-Version`). The typed views also
/// read the older shapes of events rendered at an endpoint's pinned version.
pub const API_VERSION: &str = "2025-04-30.basil";

/// Stripe's page size ceiling.
const PAGE_LIMIT: &str = "100";

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe could not be reached: {0}")]
    Transport(String),
    #[error("Stripe answered {status}: {message}")]
    Api {
        status: u16,
        code: Option<String>,
        param: Option<String>,
        message: String,
    },
    #[error("Stripe's answer could not be read: {0}")]
    Decode(String),
}

impl StripeError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StripeError::Api { status: 404, .. })
    }
}

#[derive(Clone)]
pub struct StripeApi {
    http: reqwest::Client,
    base: String,
    secret_key: String,
}

impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeApi")
            .field("base", &self.base)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// Form fields, in Stripe's bracket notation (`line_items[0][price]`).
pub type Form = Vec<(String, String)>;

impl StripeApi {
    pub fn new(base_url: &str, secret_key: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // Inside the billing function's 29 s and billing-sync's 30 s, with room for a retry.
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            secret_key: secret_key.to_owned(),
        })
    }

    /// `GET /v1/{path}` with query parameters.
    #[tracing::instrument(skip_all, fields(path = %path))]
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, StripeError> {
        let request = self.http.get(self.url(path)).query(query);
        self.send(request).await
    }

    /// `POST /v1/{path}` with form fields. `idempotency_key` makes retries safe at Stripe.
    #[tracing::instrument(skip_all, fields(path = %path))]
    pub async fn post(&self, path: &str, form: &Form, idempotency_key: Option<&str>) -> Result<Value, StripeError> {
        let mut request = self.http.post(self.url(path)).form(form);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    /// Every item of a list endpoint, following `has_more` with `starting_after`.
    #[tracing::instrument(skip_all, fields(path = %path))]
    pub async fn list_all(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<Value>, StripeError> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.push(("limit", PAGE_LIMIT));
            if let Some(a) = after.as_deref() {
                q.push(("starting_after", a));
            }
            let page = self.get(path, &q).await?;
            let data = page
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| StripeError::Decode(format!("{path}: a list without data")))?;
            let last = data
                .last()
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            items.extend(data.iter().cloned());
            let more = page.get("has_more").and_then(Value::as_bool).unwrap_or(false);
            match (more, last) {
                (true, Some(last)) if after.as_deref() != Some(last.as_str()) => after = Some(last),
                _ => return Ok(items),
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{}", self.base, path.trim_start_matches('/'))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, StripeError> {
        let response = request
            .bearer_auth(&self.secret_key)
            .header("Stripe-Version", API_VERSION)
            .send()
            .await
            .map_err(|e| StripeError::Transport(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let body: Value = response
            .json()
            .await
            .map_err(|e| StripeError::Decode(e.without_url().to_string()))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let error = body.get("error");
        let field = |k: &str| error.and_then(|e| e.get(k)).and_then(Value::as_str).map(str::to_owned);
        Err(StripeError::Api {
            status,
            code: field("code"),
            param: field("param"),
            message: field("message").unwrap_or_else(|| "no message".to_owned()),
        })
    }
}

/// Builds a form from pairs (`("customer", id)`), skipping `None` values.
pub fn form<I, K, V>(pairs: I) -> Form
where
    I: IntoIterator<Item = (K, Option<V>)>,
    K: Into<String>,
    V: Into<String>,
{
    pairs
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.into(), v.into())))
        .collect()
}
