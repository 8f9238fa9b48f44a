//! Email sending and email events, provider-neutral: what the campaign sender hands to a
//! provider ([`OutboundBatch`]), what comes back ([`SendOutcome`]), and what the providers'
//! event webhooks say ([`EmailEvent`]), whichever of SendGrid ([`super::sendgrid`]) or Mailgun
//! ([`super::mailgun`]) the tenant's connector is.
//!
//! Why it looks like this:
//! - **One request per batch, tried once.** A batch (at most [`MAX_BATCH`] recipients) goes out
//!   in one call to the provider's batch API, where every recipient gets a message of their own
//!   and sees only their own address. [`EmailProvider::send`] never retries: a send that may
//!   have happened is not repeated here (it could duplicate mail); the caller decides from the
//!   [`SendOutcome`], and resolves an unknown outcome from the provider's events, which carry
//!   our per-recipient `message_id`.
//! - **Checked before sending.** [`OutboundBatch::check`] refuses what a provider would refuse
//!   or mangle (duplicate addresses, a token without a value for some recipient, header
//!   injection, more than [`MAX_BATCH`]) before any request, naming the recipient by our
//!   message id (never by address: errors end up in logs).
//! - **Neutral substitution tokens.** Subject, HTML and text are rendered once for the batch,
//!   with [`token`]`("name")` (`%%pp:name%%`) where a recipient's own value goes. Each provider
//!   rewrites the tokens into its own syntax. Values are plain text: in the HTML part the
//!   provider module inserts them HTML-escaped (a second, escaped variable per token), in the
//!   subject and text parts as they are.
//! - **Per-recipient headers** (`List-Unsubscribe` with the recipient's own token,
//!   `List-Unsubscribe-Post`): every recipient of a batch carries the same header names; the
//!   values may differ.
//! - **Events are facts, not state.** Providers deliver events in any order and more than
//!   once; [`EmailEvent`] carries the provider's dedup id and our ids (from the custom args /
//!   `v:` variables we put on the message). Ids that come back through a provider are only as
//!   trustworthy as the webhook's signature, and only within the tenant the webhook URL names.
//! - [`fresh`]: the timestamp tolerance both webhook signatures need (neither provider's
//!   signature expires by itself).
//!
//! One file (over 800 lines, a third of them tests): the batch, its check, the outcome and the
//! event are one contract between the campaign sender and the two provider modules, read
//! together.
//!
//! Length (over 800 lines): about 780 lines of code — the batch's checks (every rule the providers
//! would refuse or mangle), the outcomes and the event model both providers share — and its unit
//! tests.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use uuid::Uuid;

use crate::services::connectors::catalog::Kind;
use crate::services::connectors::{CALL_TIMEOUT, Connectors, Credentials, explain};

/// The most recipients in one batch: both providers' limit for one request (SendGrid's
/// personalizations, Mailgun's batch sending).
pub const MAX_BATCH: usize = 1000;
/// The longest a provider's rate limit makes a campaign wait, whatever its headers say.
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(15 * 60);
/// The wait after a 429 that says nothing usable about when to come back.
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// The longest substitution or header name.
pub const MAX_NAME_LEN: usize = 64;

const TOKEN_OPEN: &str = "%%pp:";
const TOKEN_CLOSE: &str = "%%";
/// Header names the providers set themselves or refuse (SendGrid's reserved list plus the
/// envelope and MIME structure).
const RESERVED_HEADERS: &[&str] = &[
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
    "sender",
    "date",
    "message-id",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
    "received",
    "dkim-signature",
    "return-path",
];
/// Header prefixes that belong to the providers.
const PROVIDER_HEADER_PREFIXES: &[&str] = &["x-sg-", "x-mailgun-"];
/// The longest header line a mail system must accept (RFC 5322 §2.1.1), for name + value.
const MAX_HEADER_LINE: usize = 998;
/// The most of a provider's refusal that is kept.
const MAX_REASON_CHARS: usize = 500;
/// The most of a provider's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The neutral substitution token for `name` (`[a-z0-9_]`, at most [`MAX_NAME_LEN`]): put it
/// in a batch's subject, HTML or text where each recipient's own value goes, and give every
/// recipient a value for it in [`BatchRecipient::substitutions`]. A name outside that syntax
/// makes [`OutboundBatch::check`] refuse the batch rather than send the token as text.
pub fn token(name: &str) -> String {
    format!("{TOKEN_OPEN}{name}{TOKEN_CLOSE}")
}

/// Whether `name` is a substitution name: `[a-z0-9_]`, 1 to [`MAX_NAME_LEN`] characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// An address with an optional display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    pub email: String,
    pub name: Option<String>,
}

impl Mailbox {
    pub fn new(email: impl Into<String>) -> Self {
        Self {
            email: email.into(),
            name: None,
        }
    }

    pub fn named(email: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            email: email.into(),
            name: Some(name.into()),
        }
    }

    /// The display name, when there is a non-blank one.
    pub(crate) fn display_name(&self) -> Option<&str> {
        self.name.as_deref().map(str::trim).filter(|n| !n.is_empty())
    }
}

/// One recipient of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecipient {
    /// Our id of this recipient's message: it rides on the message (SendGrid `custom_args`,
    /// Mailgun `v:` variables) and comes back on every event.
    pub message_id: Uuid,
    pub to: Mailbox,
    /// The value of each [`token`] name for this recipient (plain text).
    pub substitutions: Vec<(String, String)>,
    /// This recipient's own headers (`List-Unsubscribe`, `List-Unsubscribe-Post`, ...).
    pub headers: Vec<(String, String)>,
}

/// One message to up to [`MAX_BATCH`] recipients, each getting their own copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundBatch {
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    /// May hold [`token`]s, as may `html` and `text`.
    pub subject: String,
    /// The HTML part (may be empty when `text` is not).
    pub html: String,
    /// The text part (may be empty when `html` is not).
    pub text: String,
    pub recipients: Vec<BatchRecipient>,
    pub campaign_id: Uuid,
    pub tenant_id: Uuid,
}

/// Why a batch was not sent: found before any request, so certainly nothing went out. A
/// recipient is named by our message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the batch has no recipients")]
    Empty,
    #[error("the batch has {count} recipients; at most {MAX_BATCH} go in one request")]
    TooMany { count: usize },
    #[error("recipients {first} and {second} have the same address; a batch holds each address once")]
    DuplicateAddress { first: Uuid, second: Uuid },
    #[error("{field} is not a usable address: {why}")]
    BadAddress { field: String, why: &'static str },
    #[error("the subject is empty or holds a line break")]
    BadSubject,
    #[error("the batch has neither an HTML nor a text part")]
    NoContent,
    #[error(
        "the {part} holds a malformed substitution token near {near:?} (tokens are %%pp:name%% with name in [a-z0-9_])"
    )]
    BadToken { part: &'static str, near: String },
    #[error("recipient {message_id} has no value for the token {name:?}")]
    MissingSubstitution { message_id: Uuid, name: String },
    #[error("recipient {message_id}: substitution {name:?} {why}")]
    BadSubstitution {
        message_id: Uuid,
        name: String,
        why: &'static str,
    },
    #[error("recipient {message_id}: header {name:?} {why}")]
    BadHeader {
        message_id: Uuid,
        name: String,
        why: &'static str,
    },
    #[error("recipient {message_id} does not carry the same header names as the batch's first recipient")]
    HeaderNamesDiffer { message_id: Uuid },
    #[error("recipient {message_id}: {why}")]
    ProviderLimit { message_id: Uuid, why: String },
    #[error("the connector cannot send: {0}")]
    Connector(String),
}

/// What became of a batch, tried once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The provider took the batch. `provider_id` is its id of the request, the one its events
    /// carry as [`EmailEvent::provider_message_id`] (SendGrid: `X-Message-Id`; Mailgun: the
    /// answer's `id` without its angle brackets).
    Accepted { provider_id: Option<String> },
    /// 429: nothing was sent; try again after `retry_after` (from `Retry-After` or
    /// `X-RateLimit-Reset`, at most [`MAX_RATE_LIMIT_WAIT`]).
    RateLimited { retry_after: Duration },
    /// The provider said no and nothing was sent. `account_level`: every batch would get the
    /// same (401/403 bad key or suspended account, 402, 404 unknown sending domain): pause
    /// the campaign with `reason`. Otherwise it is this batch's problem (400, 413, ...).
    /// `status` 0: refused before any request (the connector lacks a field). `reason` is the
    /// provider's own message when it gave one.
    Refused {
        status: u16,
        reason: String,
        account_level: bool,
    },
    /// No answer that settles it (5xx, network, timeout, an unreadable success). When
    /// `maybe_sent`, the provider may have taken the batch: the caller must treat it as
    /// possibly sent and resolve it from events. Not `maybe_sent` (the connection was never
    /// made): it certainly did not go out.
    Unavailable { reason: String, maybe_sent: bool },
    /// Refused by [`OutboundBatch::check`] or a provider limit before any request: nothing was
    /// sent; fix or split the batch.
    Invalid(BatchError),
}

/// The email connector a campaign sends through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum EmailProvider {
    Sendgrid,
    Mailgun,
}

impl EmailProvider {
    /// In the order a campaign without a chosen provider tries them.
    pub const ALL: [EmailProvider; 2] = [EmailProvider::Sendgrid, EmailProvider::Mailgun];

    pub fn as_str(self) -> &'static str {
        self.kind().as_str()
    }

    /// The provider of a connector kind (`None`: not an email connector).
    pub fn for_kind(kind: Kind) -> Option<Self> {
        match kind {
            Kind::Sendgrid => Some(Self::Sendgrid),
            Kind::Mailgun => Some(Self::Mailgun),
            _ => None,
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Self::Sendgrid => Kind::Sendgrid,
            Self::Mailgun => Kind::Mailgun,
        }
    }

    pub fn name(self) -> &'static str {
        self.kind().spec().name
    }

    /// Sends `batch` with the tenant's credentials, once (see [`SendOutcome`]).
    #[tracing::instrument(skip_all, fields(
        provider = self.name(),
        tenant_id = %batch.tenant_id,
        campaign_id = %batch.campaign_id,
        recipients = batch.recipients.len(),
    ))]
    pub async fn send(&self, connectors: &Connectors, creds: &Credentials, batch: &OutboundBatch) -> SendOutcome {
        if creds.kind != self.kind() {
            return SendOutcome::Refused {
                status: 0,
                reason: format!("the credentials given are not {}'s", self.name()),
                account_level: true,
            };
        }
        let outcome = match self {
            Self::Sendgrid => super::sendgrid::send(connectors, creds, batch).await,
            Self::Mailgun => super::mailgun::send(connectors, creds, batch).await,
        };
        match &outcome {
            SendOutcome::Accepted { .. } => tracing::debug!("batch accepted"),
            SendOutcome::RateLimited { retry_after } => {
                tracing::info!(retry_after_ms = retry_after.as_millis() as u64, "rate limited")
            }
            SendOutcome::Refused {
                status, account_level, ..
            } => tracing::warn!(status, account_level, "batch refused"),
            SendOutcome::Unavailable { maybe_sent, .. } => tracing::warn!(maybe_sent, "provider unavailable"),
            SendOutcome::Invalid(e) => tracing::warn!(error = %e, "batch invalid"),
        }
        outcome
    }
}

/// What [`OutboundBatch::check`] learnt, for the provider modules.
#[derive(Debug, Clone, Default)]
pub(crate) struct Checked {
    /// Token names used in the subject or the text part (inserted as they are).
    pub text_tokens: BTreeSet<String>,
    /// Token names used in the HTML part (inserted HTML-escaped).
    pub html_tokens: BTreeSet<String>,
    /// The header names every recipient carries, in the first recipient's order and spelling.
    pub header_names: Vec<String>,
}

impl OutboundBatch {
    /// Refuses, before any request, what a provider would refuse or mangle.
    pub fn check(&self) -> Result<(), BatchError> {
        self.checked().map(|_| ())
    }

    pub(crate) fn checked(&self) -> Result<Checked, BatchError> {
        if self.recipients.is_empty() {
            return Err(BatchError::Empty);
        }
        if self.recipients.len() > MAX_BATCH {
            return Err(BatchError::TooMany {
                count: self.recipients.len(),
            });
        }
        check_mailbox("from", &self.from)?;
        if let Some(reply_to) = &self.reply_to {
            check_mailbox("reply_to", reply_to)?;
        }
        if self.subject.trim().is_empty() || self.subject.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
            return Err(BatchError::BadSubject);
        }
        if self.html.trim().is_empty() && self.text.trim().is_empty() {
            return Err(BatchError::NoContent);
        }
        let mut text_tokens = tokens_in(&self.subject, "subject")?;
        text_tokens.extend(tokens_in(&self.text, "text part")?);
        let html_tokens = tokens_in(&self.html, "HTML part")?;

        let mut seen: HashMap<String, Uuid> = HashMap::with_capacity(self.recipients.len());
        let mut header_names: Option<(Uuid, Vec<String>, BTreeSet<String>)> = None;
        for r in &self.recipients {
            check_mailbox(&format!("the address of recipient {}", r.message_id), &r.to)?;
            if let Some(first) = seen.insert(r.to.email.trim().to_lowercase(), r.message_id) {
                return Err(BatchError::DuplicateAddress {
                    first,
                    second: r.message_id,
                });
            }
            let mut names = BTreeSet::new();
            for (name, value) in &r.substitutions {
                let bad = |why| BatchError::BadSubstitution {
                    message_id: r.message_id,
                    name: name.clone(),
                    why,
                };
                if !valid_name(name) {
                    return Err(bad("is not a name of [a-z0-9_], 1 to 64 characters"));
                }
                if !names.insert(name.as_str()) {
                    return Err(bad("is given twice"));
                }
                if value.contains(TOKEN_OPEN) {
                    return Err(bad("holds a substitution token itself"));
                }
                if value.contains('\0') {
                    return Err(bad("holds a NUL character"));
                }
            }
            for name in text_tokens.iter().chain(&html_tokens) {
                if !names.contains(name.as_str()) {
                    return Err(BatchError::MissingSubstitution {
                        message_id: r.message_id,
                        name: name.clone(),
                    });
                }
            }
            let mut lower = BTreeSet::new();
            for (name, value) in &r.headers {
                check_header(r.message_id, name, value)?;
                if !lower.insert(name.to_ascii_lowercase()) {
                    return Err(BatchError::BadHeader {
                        message_id: r.message_id,
                        name: name.clone(),
                        why: "is given twice",
                    });
                }
            }
            match &header_names {
                None => header_names = Some((r.message_id, r.headers.iter().map(|(n, _)| n.clone()).collect(), lower)),
                Some((_, _, first)) if *first != lower => {
                    return Err(BatchError::HeaderNamesDiffer {
                        message_id: r.message_id,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(Checked {
            text_tokens,
            html_tokens,
            header_names: header_names.map(|(_, names, _)| names).unwrap_or_default(),
        })
    }
}

impl BatchRecipient {
    /// This recipient's value for a token name (present after [`OutboundBatch::check`]).
    pub(crate) fn value(&self, name: &str) -> &str {
        self.substitutions
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// This recipient's value of a header (case-insensitive name).
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }
}

fn check_mailbox(field: &str, m: &Mailbox) -> Result<(), BatchError> {
    let bad = |why| BatchError::BadAddress {
        field: field.to_owned(),
        why,
    };
    let email = m.email.trim();
    if email.is_empty() || email.len() > 254 {
        return Err(bad("it is empty or longer than 254 characters"));
    }
    if email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')'))
    {
        return Err(bad("it holds a space, a control character or one of <>,;\"()"));
    }
    // Quoted local parts (which may hold a second @) are not taken.
    match email.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => {}
        _ => return Err(bad("it is not local@domain")),
    }
    if m.name.as_deref().is_some_and(|n| n.chars().any(char::is_control)) {
        return Err(bad("its name holds a control character"));
    }
    Ok(())
}

fn check_header(message_id: Uuid, name: &str, value: &str) -> Result<(), BatchError> {
    let bad = |why| BatchError::BadHeader {
        message_id,
        name: name.to_owned(),
        why,
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(bad("is not a header name (1 to 64 visible ASCII characters, no colon)"));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || PROVIDER_HEADER_PREFIXES.iter().any(|p| lower.starts_with(p)) {
        return Err(bad("is set by the sender or the provider, not per recipient"));
    }
    if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(bad("holds a line break (header injection)"));
    }
    if value.trim().is_empty() {
        return Err(bad("is empty"));
    }
    if value.contains(TOKEN_OPEN) {
        return Err(bad("holds a substitution token"));
    }
    if name.len() + 2 + value.len() > MAX_HEADER_LINE {
        return Err(bad("is longer than a header line may be (998 characters)"));
    }
    Ok(())
}

/// At a token (`s` starts with its opening): its name and what follows it, or why it is
/// malformed.
fn split_token<'a>(s: &'a str, part: &'static str) -> Result<(&'a str, &'a str), BatchError> {
    let after = s.get(TOKEN_OPEN.len()..).unwrap_or_default();
    let end = after
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(after.len());
    let (name, rest) = after.split_at(end);
    match rest.strip_prefix(TOKEN_CLOSE) {
        Some(rest) if valid_name(name) => Ok((name, rest)),
        _ => Err(BatchError::BadToken {
            part,
            near: s.chars().take(TOKEN_OPEN.len() + MAX_NAME_LEN + 2).collect(),
        }),
    }
}

/// The token names used in `s`.
pub(crate) fn tokens_in(s: &str, part: &'static str) -> Result<BTreeSet<String>, BatchError> {
    let mut names = BTreeSet::new();
    let mut rest = s;
    while let Some(at) = rest.find(TOKEN_OPEN) {
        let (name, after) = split_token(rest.get(at..).unwrap_or_default(), part)?;
        names.insert(name.to_owned());
        rest = after;
    }
    Ok(names)
}

/// `s` with every token replaced by `to(name)` (the provider's syntax).
pub(crate) fn rewrite(s: &str, part: &'static str, to: impl Fn(&str) -> String) -> Result<String, BatchError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(TOKEN_OPEN) {
        out.push_str(rest.get(..at).unwrap_or_default());
        let (name, after) = split_token(rest.get(at..).unwrap_or_default(), part)?;
        out.push_str(&to(name));
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// `s` escaped for HTML text and attribute values (the one escaper of the email code: message
/// parts, and the public unsubscribe pages).
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether a webhook's `timestamp` (Unix seconds, as the provider sent it) is within
/// `tolerance` of `now`, either way. Anything that is not plain decimal seconds is not fresh.
pub fn fresh(timestamp: &str, now: DateTime<Utc>, tolerance: Duration) -> bool {
    let t = timestamp.trim();
    if t.is_empty() || t.len() > 12 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(secs) = t.parse::<i64>() else { return false };
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    now.timestamp().abs_diff(secs) <= tolerance.unsigned_abs()
}

/// The wait a 429 asks for: `Retry-After` (seconds or an HTTP-date), else `X-RateLimit-Reset`
/// (an epoch time in seconds or milliseconds, or seconds from now), else
/// [`DEFAULT_RATE_LIMIT_WAIT`]; never more than [`MAX_RATE_LIMIT_WAIT`].
pub fn rate_limit_wait(headers: &http::HeaderMap, now: DateTime<Utc>) -> Duration {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(wait) =
        header("retry-after").and_then(|v| crate::domain::retry_after::parse(v, now, MAX_RATE_LIMIT_WAIT))
    {
        return wait;
    }
    if let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.parse::<f64>().ok())
        && reset.is_finite()
    {
        let now_secs = now.timestamp_millis() as f64 / 1000.0;
        let seconds = if reset > 1e12 {
            reset / 1000.0 - now_secs
        } else if reset > 1e9 {
            reset - now_secs
        } else {
            reset
        };
        let seconds = seconds.clamp(0.0, MAX_RATE_LIMIT_WAIT.as_secs_f64());
        return Duration::try_from_secs_f64(seconds).map_or(MAX_RATE_LIMIT_WAIT, |d| d.min(MAX_RATE_LIMIT_WAIT));
    }
    DEFAULT_RATE_LIMIT_WAIT
}

/// What a provider's error answer says: SendGrid's `errors[].message` (with its `field`),
/// Mailgun's `message`, or a short plain-text body; control characters dropped, shortened.
pub fn provider_message(body: &[u8]) -> Option<String> {
    let said = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => {
            let from_errors = v.get("errors").and_then(|e| e.as_array()).map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| {
                        let message = e.get("message").and_then(|m| m.as_str())?.trim();
                        match e.get("field").and_then(|f| f.as_str()).filter(|f| !f.is_empty()) {
                            Some(field) => Some(format!("{field}: {message}")),
                            None => Some(message.to_owned()),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            from_errors.filter(|s| !s.is_empty()).or_else(|| {
                ["message", "error_description", "error"]
                    .iter()
                    .find_map(|k| v.get(*k).and_then(|m| m.as_str()))
                    .map(str::to_owned)
            })?
        }
        Err(_) => {
            let text = std::str::from_utf8(body).ok()?.trim();
            if text.is_empty() || text.len() > MAX_REASON_CHARS || text.starts_with('<') {
                return None;
            }
            text.to_owned()
        }
    };
    let cleaned: String = said
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    let cleaned = cleaned.trim();
    (!cleaned.is_empty()).then(|| cleaned.to_owned())
}

/// At most [`MAX_ANSWER_BYTES`] of an answer's body (what could be read).
pub(crate) async fn read_answer(mut resp: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    body
}

/// The outcome of an answer that is not the provider's success.
pub(crate) async fn failure(kind: Kind, resp: reqwest::Response) -> SendOutcome {
    let spec = kind.spec();
    let status = resp.status().as_u16();
    if status == 429 {
        return SendOutcome::RateLimited {
            retry_after: rate_limit_wait(resp.headers(), Utc::now()),
        };
    }
    let said = provider_message(&read_answer(resp).await);
    if status >= 500 {
        return SendOutcome::Unavailable {
            reason: match said {
                Some(said) => format!("{} answered HTTP {status}: {said}", spec.name),
                None => format!("{} answered HTTP {status}", spec.name),
            },
            maybe_sent: true,
        };
    }
    SendOutcome::Refused {
        status,
        reason: said.unwrap_or_else(|| explain(spec, status).1),
        // Not this batch's fault: every batch would get the same until the connector changes.
        account_level: !matches!(status, 400..=499) || matches!(status, 401..=404),
    }
}

/// The outcome of a request that got no answer. Before a connection there is no doubt: it was
/// not sent. After (a timeout, a reset), the provider may have taken it.
pub(crate) fn unreachable(kind: Kind, e: &reqwest::Error) -> SendOutcome {
    let name = kind.spec().name;
    if e.is_connect() {
        return SendOutcome::Unavailable {
            reason: format!("could not connect to {name}"),
            maybe_sent: false,
        };
    }
    let reason = if e.is_timeout() {
        format!("{name} did not answer within {} s", CALL_TIMEOUT.as_secs())
    } else {
        let mut cause = String::new();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        if cause.is_empty() {
            format!("the call to {name} failed")
        } else {
            format!("the call to {name} failed: {cause}")
        }
    };
    SendOutcome::Unavailable {
        reason,
        maybe_sent: true,
    }
}

/// A provider's event, provider-neutral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailEvent {
    /// The provider's id of this event, its dedup key (SendGrid `sg_event_id`, Mailgun
    /// `event-data.id`).
    pub provider_event_id: String,
    pub kind: EventKind,
    /// The recipient's address, as the provider wrote it.
    pub email: String,
    pub occurred_at: DateTime<Utc>,
    /// Our ids, from the custom args / `v:` variables the message carried (`None`: absent or
    /// not a UUID, e.g. mail the portal did not send).
    pub message_id: Option<Uuid>,
    pub campaign_id: Option<Uuid>,
    pub tenant_id: Option<Uuid>,
    /// The provider's id of the send request, as [`SendOutcome::Accepted`] returned it.
    pub provider_message_id: Option<String>,
    /// The provider's words (bounce or drop reason, deferral response).
    pub reason: Option<String>,
}

/// What happened to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The provider took the message for delivery (SendGrid `processed`, Mailgun `accepted`).
    Accepted,
    Delivered,
    /// Delivery failed for now; the provider tries again.
    Deferred,
    /// The receiving server refused it: `hard` for good (the address is bad), soft otherwise.
    Bounced {
        hard: bool,
    },
    /// The provider would not send it (a suppressed or invalid address).
    Dropped,
    Opened,
    Clicked {
        url: String,
    },
    /// Marked as spam.
    Complained,
    Unsubscribed,
}

/// Why an event webhook's body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is not the JSON expected: {0}")]
    Body(String),
    #[error("the event is malformed: {0}")]
    Malformed(String),
}

/// The events of one webhook delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventBatch {
    pub events: Vec<EmailEvent>,
    /// Events of types the portal does not track (skipped, not errors).
    pub skipped: usize,
    /// Elements that could not be read, each with its index and why (no addresses).
    pub malformed: Vec<String>,
}

/// A Unix time in seconds (integer or fractional, as JSON gives it) as a time.
pub(crate) fn unix_time(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    if let Some(secs) = v.as_i64() {
        return DateTime::from_timestamp(secs, 0);
    }
    let secs = v
        .as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()))?;
    if !secs.is_finite() || secs.abs() > 1e11 {
        return None;
    }
    DateTime::from_timestamp_micros((secs * 1e6).round() as i64)
}

/// Our id from an event's custom field.
pub(crate) fn our_id(v: Option<&serde_json::Value>) -> Option<Uuid> {
    v.and_then(|v| v.as_str()).and_then(|s| Uuid::parse_str(s.trim()).ok())
}

/// A non-blank string field.
pub(crate) fn text(v: Option<&serde_json::Value>) -> Option<String> {
    v.and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn recipient(n: u32) -> BatchRecipient {
        BatchRecipient {
            message_id: Uuid::from_u128(u128::from(n) + 1),
            to: Mailbox::named(format!("person{n}@example.com"), format!("Person {n}")),
            substitutions: vec![
                ("first_name".into(), format!("P{n} <&>")),
                ("unsubscribe_url".into(), format!("https://u.example/{n}?a=1&b=2")),
            ],
            headers: vec![
                ("List-Unsubscribe".into(), format!("<https://u.example/{n}?a=1&b=2>")),
                ("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into()),
            ],
        }
    }

    pub(crate) fn batch(n: u32) -> OutboundBatch {
        OutboundBatch {
            from: Mailbox::named("news@shop.example", "Shop News"),
            reply_to: Some(Mailbox::new("help@shop.example")),
            subject: format!("Hello {}", token("first_name")),
            html: format!(
                "<p>Hi {}</p><a href=\"{}\">Unsubscribe</a>",
                token("first_name"),
                token("unsubscribe_url")
            ),
            text: format!("Hi {}\nUnsubscribe: {}", token("first_name"), token("unsubscribe_url")),
            recipients: (0..n).map(recipient).collect(),
            campaign_id: Uuid::from_u128(0xC0FFEE),
            tenant_id: Uuid::from_u128(0x7E4A47),
        }
    }

    #[test]
    fn tokens_are_found_and_rewritten_and_malformed_ones_refused() {
        // Given a text with two tokens, when rewritten, then each becomes the provider's form.
        let s = format!("a{}b{}c{}", token("x"), token("y_2"), token("x"));
        assert_eq!(
            tokens_in(&s, "text part").unwrap().into_iter().collect::<Vec<_>>(),
            vec!["x", "y_2"]
        );
        assert_eq!(
            rewrite(&s, "text part", |n| format!("<{n}>")).unwrap(),
            "a<x>b<y_2>c<x>"
        );
        assert_eq!(
            rewrite("no tokens: 100%% sure", "text part", |_| String::new()).unwrap(),
            "no tokens: 100%% sure"
        );
        // Names outside [a-z0-9_], unterminated tokens and empty names are refused.
        for bad in [
            token("Bad"),
            token("a-b"),
            "%%pp:open".to_owned(),
            token(""),
            token(&"a".repeat(65)),
        ] {
            assert!(
                matches!(
                    tokens_in(&bad, "subject"),
                    Err(BatchError::BadToken { part: "subject", .. })
                ),
                "{bad}"
            );
            assert!(rewrite(&bad, "subject", |n| n.to_owned()).is_err(), "{bad}");
        }
        assert!(valid_name("a_1") && !valid_name("") && !valid_name("A") && !valid_name("é"));
    }

    #[test]
    fn a_good_batch_passes_and_reports_its_tokens_and_headers() {
        let checked = batch(3).checked().unwrap();
        assert_eq!(
            checked.text_tokens.iter().collect::<Vec<_>>(),
            ["first_name", "unsubscribe_url"]
        );
        assert_eq!(
            checked.html_tokens.iter().collect::<Vec<_>>(),
            ["first_name", "unsubscribe_url"]
        );
        assert_eq!(checked.header_names, ["List-Unsubscribe", "List-Unsubscribe-Post"]);
        // The limit itself is allowed.
        assert!(batch(MAX_BATCH as u32).check().is_ok());
    }

    #[test]
    fn batches_a_provider_would_refuse_or_mangle_are_refused_before_sending() {
        assert_eq!(
            batch(MAX_BATCH as u32 + 1).check(),
            Err(BatchError::TooMany { count: MAX_BATCH + 1 })
        );
        assert_eq!(batch(0).check(), Err(BatchError::Empty));

        // The same address twice, whatever its case.
        let mut b = batch(3);
        b.recipients[2].to.email = "PERSON0@Example.com".into();
        assert_eq!(
            b.check(),
            Err(BatchError::DuplicateAddress {
                first: b.recipients[0].message_id,
                second: b.recipients[2].message_id
            })
        );

        // A token some recipient has no value for.
        let mut b = batch(2);
        b.recipients[1].substitutions.retain(|(n, _)| n != "unsubscribe_url");
        assert_eq!(
            b.check(),
            Err(BatchError::MissingSubstitution {
                message_id: b.recipients[1].message_id,
                name: "unsubscribe_url".into()
            })
        );

        // Header injection, reserved and provider headers, uneven header names.
        let mut b = batch(2);
        b.recipients[0].headers[0].1 = "<https://x>\r\nBcc: victim@example.com".into();
        assert!(matches!(b.check(), Err(BatchError::BadHeader { .. })));
        for name in [
            "Subject",
            "bcc",
            "X-SG-EID",
            "X-Mailgun-Variables",
            "Bad Name",
            "A:B",
            "",
        ] {
            let mut b = batch(1);
            b.recipients[0].headers.push((name.into(), "v".into()));
            assert!(matches!(b.check(), Err(BatchError::BadHeader { .. })), "{name}");
        }
        let mut b = batch(2);
        b.recipients[1].headers.pop();
        assert_eq!(
            b.check(),
            Err(BatchError::HeaderNamesDiffer {
                message_id: b.recipients[1].message_id
            })
        );
        let mut b = batch(1);
        b.recipients[0]
            .headers
            .push(("list-unsubscribe".into(), "<https://y>".into()));
        assert!(matches!(
            b.check(),
            Err(BatchError::BadHeader {
                why: "is given twice",
                ..
            })
        ));

        // Substitutions: bad names, given twice, a value holding a token.
        let mut b = batch(1);
        b.recipients[0].substitutions.push(("First".into(), "x".into()));
        assert!(matches!(b.check(), Err(BatchError::BadSubstitution { .. })));
        let mut b = batch(1);
        b.recipients[0].substitutions.push(("first_name".into(), "x".into()));
        assert!(matches!(
            b.check(),
            Err(BatchError::BadSubstitution {
                why: "is given twice",
                ..
            })
        ));
        let mut b = batch(1);
        b.recipients[0].substitutions[0].1 = token("unsubscribe_url");
        assert!(matches!(b.check(), Err(BatchError::BadSubstitution { .. })));

        // Addresses, subject, content.
        for email in [
            "",
            "no-at",
            "@example.com",
            "a@",
            "a b@example.com",
            "a@b@c",
            "<a@b.c>",
            "a@b.c\r\nBcc: x@y.z",
        ] {
            let mut b = batch(1);
            b.recipients[0].to.email = email.into();
            assert!(matches!(b.check(), Err(BatchError::BadAddress { .. })), "{email:?}");
        }
        let mut b = batch(1);
        b.from.name = Some("Shop\r\nBcc: x@y.z".into());
        assert!(matches!(b.check(), Err(BatchError::BadAddress { .. })));
        let mut b = batch(1);
        b.subject = "Hi\nBcc: x@y.z".into();
        assert_eq!(b.check(), Err(BatchError::BadSubject));
        let mut b = batch(1);
        b.html.clear();
        b.text = "  ".into();
        assert_eq!(b.check(), Err(BatchError::NoContent));
    }

    #[test]
    fn freshness_is_a_window_either_way_and_junk_is_stale() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let five = Duration::from_secs(300);
        assert!(fresh("1700000000", now, five));
        assert!(fresh("1699999700", now, five));
        assert!(fresh("1700000300", now, five));
        assert!(!fresh("1699999699", now, five));
        assert!(!fresh("1700000301", now, five));
        for junk in [
            "",
            "-1",
            "1e9",
            "1700000000.5",
            "0x10",
            "99999999999999999999",
            " ",
            "now",
        ] {
            assert!(!fresh(junk, now, five), "{junk}");
        }
        assert!(!fresh("0", now, five));
        assert!(fresh("0", now, Duration::MAX), "a huge tolerance does not overflow");
    }

    #[test]
    fn rate_limit_waits_are_honoured_capped_and_never_panic() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, http::HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "1")]), now),
            Duration::from_secs(1)
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "1e300")]), now),
            MAX_RATE_LIMIT_WAIT
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "Tue, 14 Nov 2023 22:13:27 GMT")]), now),
            Duration::from_secs(7)
        );
        // Garbage: the default; a reset time instead: until then.
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "soon")]), now),
            DEFAULT_RATE_LIMIT_WAIT
        );
        assert_eq!(rate_limit_wait(&headers(&[]), now), DEFAULT_RATE_LIMIT_WAIT);
        assert_eq!(
            rate_limit_wait(&headers(&[("x-ratelimit-reset", "1700000030")]), now),
            Duration::from_secs(30)
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("x-ratelimit-reset", "1700000002500")]), now),
            Duration::from_millis(2500)
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("x-ratelimit-reset", "12")]), now),
            Duration::from_secs(12)
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("x-ratelimit-reset", "1e300")]), now),
            MAX_RATE_LIMIT_WAIT
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("x-ratelimit-reset", "1600000000")]), now),
            Duration::ZERO
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("x-ratelimit-reset", "NaN")]), now),
            DEFAULT_RATE_LIMIT_WAIT
        );
        // Retry-After wins over the reset time.
        assert_eq!(
            rate_limit_wait(
                &headers(&[("retry-after", "3"), ("x-ratelimit-reset", "1700000030")]),
                now
            ),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn the_providers_own_words_are_kept_shortened_and_cleaned() {
        let sendgrid = br#"{"errors":[{"message":"The from address does not match","field":"from","help":null},{"message":"second","field":null}]}"#;
        assert_eq!(
            provider_message(sendgrid).as_deref(),
            Some("from: The from address does not match; second")
        );
        assert_eq!(
            provider_message(br#"{"message": "Domain not found: example.com"}"#).as_deref(),
            Some("Domain not found: example.com")
        );
        assert_eq!(provider_message(b"Forbidden").as_deref(), Some("Forbidden"));
        assert_eq!(provider_message(b"<html><body>502</body></html>"), None);
        assert_eq!(provider_message(b""), None);
        assert_eq!(provider_message(br#"{"errors":[]}"#), None);
        assert_eq!(provider_message(b"line\r\nbreak").as_deref(), Some("line  break"));
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(5000));
        assert_eq!(provider_message(long.as_bytes()).unwrap().len(), MAX_REASON_CHARS);
    }

    #[test]
    fn html_escaping_and_times() {
        assert_eq!(
            html_escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(
            unix_time(&serde_json::json!(1529692198.641821))
                .unwrap()
                .timestamp_micros(),
            1_529_692_198_641_821
        );
        assert_eq!(
            unix_time(&serde_json::json!(1513299569)).unwrap().timestamp(),
            1_513_299_569
        );
        assert_eq!(unix_time(&serde_json::json!(1e300)), None);
        assert_eq!(unix_time(&serde_json::json!("x")), None);
        assert_eq!(
            EmailProvider::for_kind(Kind::Mailgun).map(EmailProvider::kind),
            Some(Kind::Mailgun)
        );
        assert_eq!(EmailProvider::for_kind(Kind::Shopify), None);
    }
}
