//! Mailgun: a batch through `POST /v3/{domain}/messages` (batch sending), and its signed
//! webhooks read into [`EmailEvent`]s.
//!
//! Sending (the tenant's `mailgun` connector: HTTP Basic `api:<key>`, the US or EU API by its
//! region, `{domain}` its sending domain):
//! - **Batch sending**: every recipient is a `to` of one request, and `recipient-variables`
//!   (JSON keyed by address) gives each one its values. With recipient variables present,
//!   Mailgun sends one message per `to` address, so nobody sees another's address. The
//!   variables are keyed by address, so an address may appear once (checked before sending).
//!   At most 1,000 recipients a request ([`MAX_BATCH`]).
//! - Tokens become `%recipient.t_<name>%` in the subject and text part and
//!   `%recipient.h_<name>%` in the HTML part (the value HTML-escaped); our message id is the
//!   variable `message_id`, and `v:message_id=%recipient.message_id%` puts it in each
//!   message's user variables (with `v:campaign_id` and `v:tenant_id`), which every event
//!   carries back as `user-variables`. Mailgun copies `v:` variables into the delivered
//!   message's `X-Mailgun-Variables` header: only our UUIDs go there, nothing personal.
//! - Headers go as `h:<Name>`. A header with the same value for the whole batch
//!   (`List-Unsubscribe-Post`) is sent as it is; one whose value differs per recipient
//!   (`List-Unsubscribe` with the recipient's token) is `h:<Name>=%recipient.hdr_<i>%`.
//!   Mailgun's documentation says recipient variables can be referenced "within your email"
//!   and shows them in the body and subject only; that they are also substituted in `h:`
//!   headers is what django-anymail relies on for its per-recipient `merge_headers` (which it
//!   implements exactly this way), not something Mailgun's pages state. Verify it against the
//!   real service (a message to a test inbox, its raw headers) before relying on per-recipient
//!   `List-Unsubscribe` with Mailgun.
//! - The body is `application/x-www-form-urlencoded` (Mailgun takes it as well as
//!   multipart; the workspace's reqwest has no `multipart` feature and no attachment is sent).
//! - 200 `{"id": "<...>", "message": "Queued. Thank you."}` is accepted; the id is kept
//!   without its angle brackets, as events carry it (`message.headers.message-id`).
//!   A 200 without an id (Mailgun answers a malformed path with a 200 "Mailgun Magnificent
//!   API") is not taken as accepted. A sending domain with anything but letters, digits,
//!   `.` and `-` is refused before any request for the same reason.
//!
//! Events (`POST` of `{"signature": {timestamp, token, signature}, "event-data": {...}}`):
//! [`verify`] checks `signature` = hex HMAC-SHA256(webhook signing key, timestamp + token),
//! in constant time. **The signature does not cover `event-data`**, only the timestamp and the
//! random 50-character token: the caller must also check [`super::email::fresh`] and refuse a
//! token it has seen (tokens cached against replay; [`Signature::token`]). Events dedupe on
//! `event-data.id`, which Mailgun only guarantees unique within a day. [`parse_event`] maps
//! `accepted`, `delivered`, `failed` (`severity: temporary` is a deferral, Mailgun tries
//! again; `permanent` with a `suppress-*` reason is a drop, Mailgun did not try; other
//! permanent failures bounce, soft when Mailgun gave up on a temporary failure (`old`, a 4xx
//! code) and hard otherwise), `rejected`, `opened`, `clicked`, `complained`, `unsubscribed`;
//! other types are skipped. Legacy (form-encoded) webhooks are not read.
use serde_json::{Map, Value};

use super::email::{
    BatchError, EmailEvent, EventError, EventKind, MAX_BATCH, Mailbox, OutboundBatch, SendOutcome, failure,
    html_escape, our_id, provider_message, read_answer, rewrite, text, unix_time, unreachable,
};
use crate::domain::signature::{hmac_sha256, same};
use crate::services::connectors::catalog::Kind;
use crate::services::connectors::{Connectors, Credentials};

/// The messages endpoint (`{domain}`: the connector's sending domain).
pub const SEND_PATH: &str = "/v3/{domain}/messages";
/// The recipient variable holding our message id.
pub const MESSAGE_ID_VAR: &str = "message_id";
const RECIPIENT_VAR_MARK: &str = "%recipient.";

/// The recipient variable of a token in the subject and text part.
pub fn text_var(name: &str) -> String {
    format!("t_{name}")
}

/// The recipient variable of a token in the HTML part (the value HTML-escaped).
pub fn html_var(name: &str) -> String {
    format!("h_{name}")
}

/// The recipient variable of the batch's `i`th per-recipient header.
fn header_var(i: usize) -> String {
    format!("hdr_{i}")
}

fn reference(var: &str) -> String {
    format!("{RECIPIENT_VAR_MARK}{var}%")
}

/// The form fields of a batch (in order; `to` once per recipient), or why it cannot be sent.
pub fn form(batch: &OutboundBatch) -> Result<Vec<(String, String)>, BatchError> {
    let checked = batch.checked()?;
    let subject = rewrite(&batch.subject, "subject", |n| reference(&text_var(n)))?;
    let text = rewrite(&batch.text, "text part", |n| reference(&text_var(n)))?;
    let html = rewrite(&batch.html, "HTML part", |n| reference(&html_var(n)))?;
    // Each header: its literal value when the whole batch shares it, else a recipient variable.
    let headers: Vec<(&str, Option<String>, &str)> = checked
        .header_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let first = batch.recipients.first().map_or("", |r| r.header(name));
            let shared = batch.recipients.iter().all(|r| r.header(name) == first);
            (name.as_str(), (!shared).then(|| header_var(i)), first)
        })
        .collect();
    let mut variables = Map::new();
    for r in &batch.recipients {
        let mut vars = Map::new();
        vars.insert(MESSAGE_ID_VAR.into(), Value::String(r.message_id.to_string()));
        let values =
            checked
                .text_tokens
                .iter()
                .map(|name| (name.as_str(), text_var(name), r.value(name).to_owned()))
                .chain(
                    checked
                        .html_tokens
                        .iter()
                        .map(|name| (name.as_str(), html_var(name), html_escape(r.value(name)))),
                )
                .chain(headers.iter().filter_map(|(name, var, _)| {
                    var.as_ref().map(|var| (*name, var.clone(), r.header(name).to_owned()))
                }));
        for (name, var, value) in values {
            // A value holding a variable reference could be substituted again.
            if value.contains(RECIPIENT_VAR_MARK) {
                return Err(BatchError::BadSubstitution {
                    message_id: r.message_id,
                    name: name.to_owned(),
                    why: "holds a Mailgun %recipient.…% reference",
                });
            }
            vars.insert(var, Value::String(value));
        }
        variables.insert(r.to.email.trim().to_owned(), Value::Object(vars));
    }
    let mut form = Vec::with_capacity(batch.recipients.len().min(MAX_BATCH) + 16);
    let mut push = |k: &str, v: String| form.push((k.to_owned(), v));
    push("from", mailbox(&batch.from));
    for r in &batch.recipients {
        push("to", mailbox(&r.to));
    }
    push("subject", subject);
    if !text.trim().is_empty() {
        push("text", text);
    }
    if !html.trim().is_empty() {
        push("html", html);
    }
    push("recipient-variables", Value::Object(variables).to_string());
    push("v:message_id", reference(MESSAGE_ID_VAR));
    push("v:campaign_id", batch.campaign_id.to_string());
    push("v:tenant_id", batch.tenant_id.to_string());
    if let Some(reply_to) = &batch.reply_to {
        push("h:Reply-To", mailbox(reply_to));
    }
    for (name, var, shared) in &headers {
        push(
            &format!("h:{name}"),
            var.as_deref().map_or_else(|| (*shared).to_owned(), reference),
        );
    }
    push("o:tracking", "yes".into());
    push("o:tracking-opens", "yes".into());
    push("o:tracking-clicks", "htmlonly".into());
    Ok(form)
}

/// `"Name" <email>` (the name quoted, its `\` and `"` escaped), or the bare address.
fn mailbox(m: &Mailbox) -> String {
    match m.display_name() {
        Some(name) => format!(
            "\"{}\" <{}>",
            name.replace('\\', "\\\\").replace('"', "\\\""),
            m.email.trim()
        ),
        None => m.email.trim().to_owned(),
    }
}

/// The connector's sending domain, when it is one (it goes into the request path).
fn sending_domain(creds: &Credentials) -> Result<String, String> {
    let domain = creds.value("domain").unwrap_or_default().trim().to_owned();
    if domain.is_empty() {
        return Err("the Mailgun connector has no sending domain".into());
    }
    if domain.len() > 253
        || !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err("the Mailgun connector's sending domain is not a domain name".into());
    }
    Ok(domain)
}

/// Sends a batch once (see [`super::email::EmailProvider::send`]).
pub(crate) async fn send(connectors: &Connectors, creds: &Credentials, batch: &OutboundBatch) -> SendOutcome {
    let form = match form(batch) {
        Ok(form) => form,
        Err(e) => return SendOutcome::Invalid(e),
    };
    let refused = |reason: String| SendOutcome::Refused {
        status: 0,
        reason,
        account_level: true,
    };
    if creds.value("api_key").is_none_or(|k| k.trim().is_empty()) {
        return refused("the Mailgun connector has no API key".into());
    }
    if let Err(why) = sending_domain(creds) {
        return refused(why);
    }
    let req = match connectors.request(creds, reqwest::Method::POST, SEND_PATH).await {
        Ok(req) => req,
        Err(why) => return refused(why),
    };
    let resp = match req.form(&form).send().await {
        Ok(resp) => resp,
        Err(e) => return unreachable(Kind::Mailgun, &e),
    };
    if !resp.status().is_success() {
        return failure(Kind::Mailgun, resp).await;
    }
    let status = resp.status().as_u16();
    let body = read_answer(resp).await;
    let id = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| text(v.get("id")))
        .map(|id| id.trim_start_matches('<').trim_end_matches('>').to_owned())
        .filter(|id| !id.is_empty());
    match id {
        Some(id) => SendOutcome::Accepted { provider_id: Some(id) },
        None => SendOutcome::Unavailable {
            reason: format!(
                "Mailgun answered HTTP {status} without a message id{}",
                provider_message(&body).map(|m| format!(": {m}")).unwrap_or_default()
            ),
            maybe_sent: true,
        },
    }
}

/// Whether `signature_hex` is Mailgun's hex HMAC-SHA256 of `timestamp` followed by `token`,
/// keyed by the webhook signing key (compared in constant time). Anything unreadable is false.
pub fn verify(signing_key: &str, timestamp: &str, token: &str, signature_hex: &str) -> bool {
    let mut signature = [0u8; 32];
    if signing_key.is_empty() || hex::decode_to_slice(signature_hex.trim(), &mut signature).is_err() {
        return false;
    }
    same(
        &hmac_sha256(signing_key.as_bytes(), &[timestamp.as_bytes(), token.as_bytes()]),
        &signature,
    )
}

/// A webhook's `signature` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Unix seconds, as sent (check it with [`super::email::fresh`]).
    pub timestamp: String,
    /// Random, one per delivery: refuse one seen before (replay).
    pub token: String,
    /// Hex HMAC-SHA256 (check it with [`verify`]).
    pub signature: String,
}

/// One webhook delivery: its signature, to verify before anything else, and its event
/// (`Ok(None)`: a type the portal does not track; `Err`: unreadable `event-data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub signature: Signature,
    pub event: Result<Option<EmailEvent>, EventError>,
}

/// Reads a webhook body. Only a body without a readable signature block is an error: the
/// event is read on its own, so a signed delivery with an odd event can still be answered.
pub fn parse_event(body: &[u8]) -> Result<Webhook, EventError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| EventError::Body(e.to_string()))?;
    let block = v
        .get("signature")
        .and_then(Value::as_object)
        .ok_or_else(|| EventError::Body("no signature block".into()))?;
    let field = |k: &str| match block.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let missing = |k: &str| EventError::Body(format!("the signature block has no {k}"));
    let signature = Signature {
        timestamp: field("timestamp").ok_or_else(|| missing("timestamp"))?,
        token: field("token").ok_or_else(|| missing("token"))?,
        signature: field("signature").ok_or_else(|| missing("signature"))?,
    };
    let event = match v.get("event-data") {
        Some(data) => event(data).map_err(|why| EventError::Malformed(why.into())),
        None => Err(EventError::Malformed("no event-data".into())),
    };
    Ok(Webhook { signature, event })
}

/// One `event-data`: `None` when its type is not tracked.
fn event(d: &Value) -> Result<Option<EmailEvent>, &'static str> {
    let o = d.as_object().ok_or("event-data is not an object")?;
    let kind = match o.get("event").and_then(Value::as_str).ok_or("no event type")? {
        "accepted" => EventKind::Accepted,
        "delivered" => EventKind::Delivered,
        "failed" => failed(o),
        "rejected" => EventKind::Dropped,
        "opened" => EventKind::Opened,
        "clicked" => EventKind::Clicked {
            url: text(o.get("url")).ok_or("a click without its url")?,
        },
        "complained" => EventKind::Complained,
        "unsubscribed" => EventKind::Unsubscribed,
        _ => return Ok(None),
    };
    let vars = o.get("user-variables");
    let status = o.get("delivery-status");
    Ok(Some(EmailEvent {
        provider_event_id: text(o.get("id")).ok_or("no id")?,
        kind,
        email: text(o.get("recipient")).ok_or("no recipient")?,
        occurred_at: o.get("timestamp").and_then(unix_time).ok_or("no usable timestamp")?,
        message_id: our_id(vars.and_then(|v| v.get("message_id"))),
        campaign_id: our_id(vars.and_then(|v| v.get("campaign_id"))),
        tenant_id: our_id(vars.and_then(|v| v.get("tenant_id"))),
        provider_message_id: text(
            o.get("message")
                .and_then(|m| m.get("headers"))
                .and_then(|h| h.get("message-id")),
        )
        .map(|id| id.trim_start_matches('<').trim_end_matches('>').to_owned()),
        reason: text(status.and_then(|s| s.get("description")))
            .or_else(|| text(status.and_then(|s| s.get("message"))))
            .or_else(|| text(o.get("reject").and_then(|r| r.get("reason"))))
            .or_else(|| text(o.get("reason"))),
    }))
}

/// A `failed` event: a deferral, a drop or a bounce (see the module's notes).
fn failed(o: &Map<String, Value>) -> EventKind {
    if o.get("severity").and_then(Value::as_str) == Some("temporary") {
        return EventKind::Deferred;
    }
    let reason = o.get("reason").and_then(Value::as_str).unwrap_or_default();
    if reason.starts_with("suppress-") {
        return EventKind::Dropped;
    }
    let status = o.get("delivery-status");
    let code = status.and_then(|s| s.get("code")).and_then(Value::as_u64);
    let enhanced = status.and_then(|s| s.get("enhanced-code")).and_then(Value::as_str);
    let transient = reason == "old"
        || code.is_some_and(|c| (400..500).contains(&c))
        || enhanced.is_some_and(|e| e.trim_start().starts_with('4'));
    EventKind::Bounced { hard: !transient }
}

#[cfg(test)]
mod tests {
    use super::super::email::tests::batch;
    use super::super::email::token;
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn values<'a>(form: &'a [(String, String)], key: &str) -> Vec<&'a str> {
        form.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    fn one<'a>(form: &'a [(String, String)], key: &str) -> &'a str {
        let v = values(form, key);
        assert_eq!(v.len(), 1, "{key}: {v:?}");
        v[0]
    }

    #[test]
    fn a_batch_is_every_recipient_as_to_with_their_own_variables() {
        // Given a batch of three, when the form is built:
        let b = batch(3);
        let form = form(&b).unwrap();
        // then every recipient is a `to`, by name and address,
        assert_eq!(
            values(&form, "to"),
            [
                "\"Person 0\" <person0@example.com>",
                "\"Person 1\" <person1@example.com>",
                "\"Person 2\" <person2@example.com>"
            ]
        );
        // each has variables keyed by address: our id, both forms of each value, own header,
        let vars: Value = serde_json::from_str(one(&form, "recipient-variables")).unwrap();
        assert_eq!(vars.as_object().unwrap().len(), 3);
        for r in &b.recipients {
            let v = &vars[&r.to.email];
            assert_eq!(v["message_id"], json!(r.message_id.to_string()));
            assert_eq!(v["t_first_name"], json!(r.value("first_name")));
            assert_eq!(v["h_first_name"], json!(html_escape(r.value("first_name"))));
            assert_eq!(v["t_unsubscribe_url"], json!(r.value("unsubscribe_url")));
            assert_eq!(v["hdr_0"], json!(r.header("List-Unsubscribe")));
            assert!(
                v.get("hdr_1").is_none(),
                "a header shared by the batch is not a variable"
            );
        }
        // and the message references them.
        assert_eq!(one(&form, "subject"), "Hello %recipient.t_first_name%");
        assert_eq!(
            one(&form, "html"),
            "<p>Hi %recipient.h_first_name%</p><a href=\"%recipient.h_unsubscribe_url%\">Unsubscribe</a>"
        );
        assert_eq!(
            one(&form, "text"),
            "Hi %recipient.t_first_name%\nUnsubscribe: %recipient.t_unsubscribe_url%"
        );
        assert_eq!(one(&form, "v:message_id"), "%recipient.message_id%");
        assert_eq!(one(&form, "v:campaign_id"), b.campaign_id.to_string());
        assert_eq!(one(&form, "v:tenant_id"), b.tenant_id.to_string());
        assert_eq!(one(&form, "h:List-Unsubscribe"), "%recipient.hdr_0%");
        assert_eq!(one(&form, "h:List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
        assert_eq!(one(&form, "h:Reply-To"), "help@shop.example");
        assert_eq!(one(&form, "from"), "\"Shop News\" <news@shop.example>");
    }

    #[test]
    fn a_header_the_batch_shares_goes_as_it_is_and_names_are_quoted() {
        let mut b = batch(2);
        for r in &mut b.recipients {
            r.headers[0].1 = "<mailto:unsub@shop.example>".into();
        }
        b.recipients[0].to.name = Some(r#"Jane "JJ" Doe, \o/"#.into());
        b.html.clear();
        let form = form(&b).unwrap();
        assert_eq!(one(&form, "h:List-Unsubscribe"), "<mailto:unsub@shop.example>");
        assert_eq!(
            values(&form, "to")[0],
            r#""Jane \"JJ\" Doe, \\o/" <person0@example.com>"#
        );
        assert!(values(&form, "html").is_empty());
        let vars: Value = serde_json::from_str(one(&form, "recipient-variables")).unwrap();
        assert!(
            vars["person0@example.com"].get("h_first_name").is_none(),
            "no HTML part, no HTML forms"
        );
    }

    #[test]
    fn batches_mailgun_would_mangle_are_refused() {
        // Two recipients with one address: recipient-variables is keyed by address.
        let mut b = batch(2);
        b.recipients[1].to.email = " Person0@EXAMPLE.com ".into();
        assert!(matches!(form(&b), Err(BatchError::DuplicateAddress { .. })));
        // A value holding a variable reference.
        let mut b = batch(1);
        b.recipients[0].substitutions[0].1 = "%recipient.message_id%".into();
        assert!(matches!(form(&b), Err(BatchError::BadSubstitution { .. })));
        let mut b = batch(2);
        b.recipients[1].headers[0].1 = "<https://x/%recipient.t_first_name%>".into();
        assert!(matches!(form(&b), Err(BatchError::BadSubstitution { .. })));
        // A token without a value.
        let mut b = batch(1);
        b.subject = token("coupon");
        assert!(matches!(form(&b), Err(BatchError::MissingSubstitution { .. })));
    }

    #[test]
    fn the_sending_domain_must_be_a_domain() {
        let creds = |domain: &str| Credentials {
            kind: Kind::Mailgun,
            settings: json!({"region": "us", "domain": domain}).as_object().unwrap().clone(),
            secrets: json!({"api_key": "key-123"}).as_object().unwrap().clone(),
        };
        assert_eq!(sending_domain(&creds(" mg.example.com ")).unwrap(), "mg.example.com");
        for bad in ["", "mg.example.com/x", "mg%2fexample", "a b.com", "mg.example.com?x=1"] {
            assert!(sending_domain(&creds(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn signatures_verify_in_constant_time_and_only_for_the_exact_inputs() {
        // RFC 4231 test case 2 (key "Jefe"), its data split into timestamp + token.
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert!(verify("Jefe", "what do ya want ", "for nothing?", expected));
        assert!(verify(
            "Jefe",
            "what do ya want ",
            "for nothing?",
            &expected.to_uppercase()
        ));
        assert!(!verify("Jefe", "what do ya want ", "for nothing!", expected));
        assert!(!verify(
            "Jefe",
            "what do ya want",
            " for nothing?",
            &expected.replace("5b", "5c")
        ));
        assert!(!verify("jefe", "what do ya want ", "for nothing?", expected));
        assert!(!verify("", "what do ya want ", "for nothing?", expected));
        for junk in ["", "zz", &expected[..62], &format!("{expected}00")] {
            assert!(!verify("Jefe", "what do ya want ", "for nothing?", junk), "{junk}");
        }
    }

    fn envelope(data: Value) -> Vec<u8> {
        json!({
            "signature": {"timestamp": "1529006854", "token": "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0", "signature": "00"},
            "event-data": data,
        })
        .to_string()
        .into_bytes()
    }

    fn data(event: &str, extra: Value) -> Value {
        let mut d = json!({
            "event": event,
            "id": format!("id-{event}"),
            "timestamp": 1_529_692_198.641_821,
            "recipient": "joan@example.com",
            "message": {"headers": {"message-id": "20180622182958.1.48906CB188F1A454@example.org"}},
            "user-variables": {
                "message_id": Uuid::from_u128(1).to_string(),
                "campaign_id": Uuid::from_u128(2).to_string(),
                "tenant_id": Uuid::from_u128(3).to_string(),
            },
        });
        for (k, v) in extra.as_object().unwrap() {
            d[k] = v.clone();
        }
        d
    }

    fn kind_of(d: Value) -> Option<EventKind> {
        parse_event(&envelope(d)).unwrap().event.unwrap().map(|e| e.kind)
    }

    #[test]
    fn events_map_to_neutral_kinds_with_our_ids() {
        let hook = parse_event(&envelope(data("delivered", json!({})))).unwrap();
        assert_eq!(hook.signature.timestamp, "1529006854");
        assert_eq!(
            hook.signature.token,
            "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
        );
        let e = hook.event.unwrap().unwrap();
        assert_eq!(e.kind, EventKind::Delivered);
        assert_eq!(e.provider_event_id, "id-delivered");
        assert_eq!(e.email, "joan@example.com");
        assert_eq!(e.occurred_at.timestamp_micros(), 1_529_692_198_641_821);
        assert_eq!(
            (e.message_id, e.campaign_id, e.tenant_id),
            (
                Some(Uuid::from_u128(1)),
                Some(Uuid::from_u128(2)),
                Some(Uuid::from_u128(3))
            )
        );
        assert_eq!(
            e.provider_message_id.as_deref(),
            Some("20180622182958.1.48906CB188F1A454@example.org")
        );

        assert_eq!(kind_of(data("accepted", json!({}))), Some(EventKind::Accepted));
        assert_eq!(
            kind_of(data("rejected", json!({"reject": {"reason": "no"}}))),
            Some(EventKind::Dropped)
        );
        assert_eq!(kind_of(data("opened", json!({}))), Some(EventKind::Opened));
        assert_eq!(
            kind_of(data("clicked", json!({"url": "https://shop.example/x"}))),
            Some(EventKind::Clicked {
                url: "https://shop.example/x".into()
            })
        );
        assert_eq!(kind_of(data("complained", json!({}))), Some(EventKind::Complained));
        assert_eq!(kind_of(data("unsubscribed", json!({}))), Some(EventKind::Unsubscribed));
        assert_eq!(kind_of(data("stored", json!({}))), None);
    }

    #[test]
    fn failures_are_deferrals_drops_or_hard_and_soft_bounces() {
        let failed = |extra: Value| kind_of(data("failed", extra));
        assert_eq!(
            failed(json!({"severity": "temporary", "delivery-status": {"code": 451}})),
            Some(EventKind::Deferred)
        );
        assert_eq!(
            failed(json!({"severity": "permanent", "reason": "suppress-bounce", "delivery-status": {"code": 605}})),
            Some(EventKind::Dropped)
        );
        assert_eq!(
            failed(
                json!({"severity": "permanent", "reason": "bounce", "delivery-status": {"code": 550, "description": "No such user"}})
            ),
            Some(EventKind::Bounced { hard: true })
        );
        assert_eq!(
            failed(json!({"severity": "permanent", "reason": "old", "delivery-status": {"code": 550}})),
            Some(EventKind::Bounced { hard: false })
        );
        assert_eq!(
            failed(json!({"severity": "permanent", "reason": "generic", "delivery-status": {"code": 452}})),
            Some(EventKind::Bounced { hard: false })
        );
        assert_eq!(
            failed(
                json!({"severity": "permanent", "reason": "generic", "delivery-status": {"enhanced-code": "4.2.2"}})
            ),
            Some(EventKind::Bounced { hard: false })
        );
        let e = parse_event(&envelope(data(
            "failed",
            json!({"severity": "permanent", "delivery-status": {"code": 550, "description": "", "message": "5.1.1 no such user"}}),
        )))
        .unwrap()
        .event
        .unwrap()
        .unwrap();
        assert_eq!(e.reason.as_deref(), Some("5.1.1 no such user"));
    }

    #[test]
    fn unreadable_signatures_are_errors_and_unreadable_events_are_kept_apart() {
        assert!(matches!(parse_event(b"not json"), Err(EventError::Body(_))));
        assert!(matches!(parse_event(b"{\"event-data\": {}}"), Err(EventError::Body(_))));
        assert!(matches!(
            parse_event(br#"{"signature": {"timestamp": "1", "token": "t"}}"#),
            Err(EventError::Body(_))
        ));
        // A numeric timestamp is read as its digits.
        let hook = parse_event(br#"{"signature": {"timestamp": 1529006854, "token": "t", "signature": "s"}}"#).unwrap();
        assert_eq!(hook.signature.timestamp, "1529006854");
        assert!(matches!(hook.event, Err(EventError::Malformed(_))));
        for bad in [
            data("clicked", json!({})),
            data("delivered", json!({"id": null})),
            data("delivered", json!({"timestamp": "yesterday"})),
            data("delivered", json!({"recipient": ""})),
            json!([]),
        ] {
            assert!(
                matches!(
                    parse_event(&envelope(bad.clone())).unwrap().event,
                    Err(EventError::Malformed(_))
                ),
                "{bad}"
            );
        }
        // Ids that are not ours read as absent.
        let e = parse_event(&envelope(data(
            "opened",
            json!({"user-variables": {"message_id": "x"}}),
        )))
        .unwrap()
        .event
        .unwrap()
        .unwrap();
        assert_eq!((e.message_id, e.campaign_id), (None, None));
    }
}
