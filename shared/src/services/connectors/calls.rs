//! Calls to providers on a tenant's connector: the request with the kind's auth at its
//! configured base (a tenant's own site checked by the SSRF guard and pinned), tried again on
//! what passes (`Retry-After` capped), writes tried once, answers read within a bound, and every
//! failure in words for the user, never with a URL.
use super::*;

impl Connectors {
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
    pub(super) fn pinned_client(
        &self,
        host: &str,
        addrs: Vec<std::net::SocketAddr>,
    ) -> Result<reqwest::Client, String> {
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
    pub(super) fn fits(&self, wait: Duration) -> bool {
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
pub(super) async fn provider_says(resp: reqwest::Response) -> Option<String> {
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
pub(super) fn unreachable(spec: &Spec, e: &reqwest::Error) -> String {
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
