//! SendGrid (Twilio SendGrid v3): a batch through `POST /v3/mail/send`, and the signed Event
//! Webhook read into [`EmailEvent`]s.
//!
//! Sending (the tenant's `sendgrid` connector: `Authorization: Bearer <api key>` at its
//! configured base):
//! - One **personalization per recipient**, whose `to` holds only that recipient: SendGrid
//!   sends one message per personalization, so nobody sees another's address. At most 1,000
//!   personalizations a request ([`MAX_BATCH`]); an address may appear once (SendGrid 400s
//!   otherwise; [`OutboundBatch::check`] refuses it first).
//! - **Substitutions** per personalization: a neutral token becomes [`text_key`] (`[%t:name%]`)
//!   in the subject and text part and [`html_key`] (`[%h:name%]`) in the HTML part, whose value
//!   is the recipient's value HTML-escaped. SendGrid allows at most 100 substitutions and
//!   10,000 bytes of them (keys and values) per personalization; a batch over that is refused
//!   here ([`BatchError::ProviderLimit`]) rather than by a SendGrid 400.
//! - Per-personalization **headers** (the recipient's `List-Unsubscribe`, ...), and
//!   **`custom_args`**: `message_id` (ours, per personalization), `campaign_id` and `tenant_id`
//!   (message level; SendGrid merges both). They come back as top-level fields of every event.
//! - `content`: `text/plain` first, then `text/html` (SendGrid's required order).
//! - `tracking_settings`: open and click tracking on (the campaign's stats need them; click
//!   tracking in HTML only, so the text part's links stay readable), SendGrid's subscription
//!   tracking off (the portal adds its own RFC 8058 `List-Unsubscribe`). No `categories`: a
//!   category per campaign would exceed what SendGrid advises for category statistics.
//! - 202 with `X-Message-Id` is accepted. A 200 means sandbox mode: validated, not sent.
//!   To-names lose `,` and `;`, which SendGrid refuses in them.
//!
//! Events (`POST` of a JSON array, signed): [`verify`] checks the ECDSA P-256 / SHA-256
//! signature (`X-Twilio-Email-Event-Webhook-Signature`, base64 DER) over the
//! `X-Twilio-Email-Event-Webhook-Timestamp` value followed by the raw body bytes (CRLFs
//! included), with the account's verification key (base64 DER SubjectPublicKeyInfo). The
//! signature never expires: the caller also checks [`super::email::fresh`] and dedupes on
//! `sg_event_id`. [`parse_events`] maps what the portal tracks and skips the rest
//! (`group_resubscribe`, new types); one malformed element does not cost the others.
//! Quirks: `attempt` is a string, `asm_group_id` an int; `sg_message_id` is the request's
//! `X-Message-Id` followed by `.` and a per-message suffix; a `bounce` of `type: blocked` is
//! SendGrid's temporary refusal (soft), whatever its status says.
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use serde_json::{Map, Value, json};

use super::email::{
    BatchError, EmailEvent, EventBatch, EventError, EventKind, MAX_BATCH, Mailbox, OutboundBatch, SendOutcome, failure,
    html_escape, our_id, rewrite, text, unix_time, unreachable,
};
use crate::services::connectors::catalog::Kind;
use crate::services::connectors::{Connectors, Credentials};

/// The v3 Mail Send endpoint.
pub const SEND_PATH: &str = "/v3/mail/send";
/// The most substitutions SendGrid takes per personalization.
pub const MAX_SUBSTITUTIONS: usize = 100;
/// The most bytes of substitutions (keys and values) SendGrid takes per personalization.
pub const MAX_SUBSTITUTION_BYTES: usize = 10_000;
/// The Event Webhook's signature header (base64 DER ECDSA signature).
pub const SIGNATURE_HEADER: &str = "X-Twilio-Email-Event-Webhook-Signature";
/// The Event Webhook's timestamp header (Unix seconds), signed with the body.
pub const TIMESTAMP_HEADER: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

/// SendGrid's substitution key for a token in the subject and text part.
pub fn text_key(name: &str) -> String {
    format!("[%t:{name}%]")
}

/// SendGrid's substitution key for a token in the HTML part (the value HTML-escaped).
pub fn html_key(name: &str) -> String {
    format!("[%h:{name}%]")
}

/// The `/v3/mail/send` body of a batch, or why it cannot be sent.
pub fn mail_send_body(batch: &OutboundBatch) -> Result<Value, BatchError> {
    let checked = batch.checked()?;
    let subject = rewrite(&batch.subject, "subject", text_key)?;
    let text = rewrite(&batch.text, "text part", text_key)?;
    let html = rewrite(&batch.html, "HTML part", html_key)?;
    let mut personalizations = Vec::with_capacity(batch.recipients.len().min(MAX_BATCH));
    for r in &batch.recipients {
        let mut substitutions = Map::new();
        let mut bytes = 0;
        let values = checked
            .text_tokens
            .iter()
            .map(|name| (name, text_key(name), r.value(name).to_owned()))
            .chain(
                checked
                    .html_tokens
                    .iter()
                    .map(|name| (name, html_key(name), html_escape(r.value(name)))),
            );
        for (name, key, value) in values {
            // A value holding a key could be substituted again.
            if value.contains("[%t:") || value.contains("[%h:") {
                return Err(BatchError::BadSubstitution {
                    message_id: r.message_id,
                    name: name.clone(),
                    why: "holds a SendGrid substitution key",
                });
            }
            bytes += key.len() + value.len();
            substitutions.insert(key, Value::String(value));
        }
        if substitutions.len() > MAX_SUBSTITUTIONS {
            return Err(BatchError::ProviderLimit {
                message_id: r.message_id,
                why: format!(
                    "{} substitutions; SendGrid takes at most {MAX_SUBSTITUTIONS} per recipient",
                    substitutions.len()
                ),
            });
        }
        if bytes > MAX_SUBSTITUTION_BYTES {
            return Err(BatchError::ProviderLimit {
                message_id: r.message_id,
                why: format!(
                    "{bytes} bytes of substitutions; SendGrid takes at most {MAX_SUBSTITUTION_BYTES} per recipient"
                ),
            });
        }
        let mut p = Map::new();
        p.insert("to".into(), json!([to_address(&r.to)]));
        if !substitutions.is_empty() {
            p.insert("substitutions".into(), Value::Object(substitutions));
        }
        if !r.headers.is_empty() {
            let headers: Map<String, Value> = r
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), Value::String(v.clone())))
                .collect();
            p.insert("headers".into(), Value::Object(headers));
        }
        p.insert("custom_args".into(), json!({ "message_id": r.message_id.to_string() }));
        personalizations.push(Value::Object(p));
    }
    let mut content = Vec::new();
    if !text.trim().is_empty() {
        content.push(json!({ "type": "text/plain", "value": text }));
    }
    if !html.trim().is_empty() {
        content.push(json!({ "type": "text/html", "value": html }));
    }
    let mut body = Map::new();
    body.insert("personalizations".into(), Value::Array(personalizations));
    body.insert("from".into(), address(&batch.from));
    if let Some(reply_to) = &batch.reply_to {
        body.insert("reply_to".into(), address(reply_to));
    }
    body.insert("subject".into(), Value::String(subject));
    body.insert("content".into(), Value::Array(content));
    body.insert(
        "custom_args".into(),
        json!({
            "campaign_id": batch.campaign_id.to_string(),
            "tenant_id": batch.tenant_id.to_string(),
        }),
    );
    body.insert(
        "tracking_settings".into(),
        json!({
            "click_tracking": { "enable": true, "enable_text": false },
            "open_tracking": { "enable": true },
            "subscription_tracking": { "enable": false },
        }),
    );
    Ok(Value::Object(body))
}

fn address(m: &Mailbox) -> Value {
    match m.display_name() {
        Some(name) => json!({ "email": m.email.trim(), "name": name }),
        None => json!({ "email": m.email.trim() }),
    }
}

/// A recipient's address: SendGrid refuses `,` and `;` in to-names, so they become spaces.
fn to_address(m: &Mailbox) -> Value {
    let name = m.display_name().map(|n| {
        n.replace([',', ';'], " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    });
    match name.filter(|n| !n.is_empty()) {
        Some(name) => json!({ "email": m.email.trim(), "name": name }),
        None => json!({ "email": m.email.trim() }),
    }
}

/// Sends a batch once (see [`super::email::EmailProvider::send`]).
pub(crate) async fn send(connectors: &Connectors, creds: &Credentials, batch: &OutboundBatch) -> SendOutcome {
    let body = match mail_send_body(batch) {
        Ok(body) => body,
        Err(e) => return SendOutcome::Invalid(e),
    };
    if creds.value("api_key").is_none_or(|k| k.trim().is_empty()) {
        return SendOutcome::Refused {
            status: 0,
            reason: "the SendGrid connector has no API key".into(),
            account_level: true,
        };
    }
    let req = match connectors.request(creds, reqwest::Method::POST, SEND_PATH).await {
        Ok(req) => req,
        Err(why) => {
            return SendOutcome::Refused {
                status: 0,
                reason: why,
                account_level: true,
            };
        }
    };
    let resp = match req.json(&body).send().await {
        Ok(resp) => resp,
        Err(e) => return unreachable(Kind::Sendgrid, &e),
    };
    match resp.status().as_u16() {
        202 => SendOutcome::Accepted {
            provider_id: resp
                .headers()
                .get("x-message-id")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
        },
        status @ 200..=299 => SendOutcome::Refused {
            status,
            reason: format!("SendGrid validated the mail but did not queue it (HTTP {status}): its sandbox mode is on"),
            account_level: true,
        },
        _ => failure(Kind::Sendgrid, resp).await,
    }
}

/// Whether `signature_b64` (the signature header) is SendGrid's ECDSA P-256 / SHA-256
/// signature of `timestamp` (the timestamp header, as received) followed by the raw `body`,
/// under the account's verification key (base64 DER SubjectPublicKeyInfo, as SendGrid shows
/// it; PEM armour and line breaks are tolerated). Anything unreadable is `false`.
pub fn verify(public_key_b64_der: &str, signature_b64: &str, timestamp: &str, body: &[u8]) -> bool {
    let Some(point) = public_key_point(public_key_b64_der) else {
        return false;
    };
    let Ok(signature) = B64.decode(signature_b64.trim()) else {
        return false;
    };
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
        .verify(&signed, &signature)
        .is_ok()
}

/// `id-ecPublicKey` (1.2.840.10045.2.1).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
/// `prime256v1` / `secp256r1` (1.2.840.10045.3.1.7).
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// The uncompressed P-256 point (`04 || X || Y`, what ring verifies with) of a base64 DER
/// SubjectPublicKeyInfo; a bare uncompressed point is taken as it is.
fn public_key_point(key: &str) -> Option<Vec<u8>> {
    let b64: String = key
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = B64.decode(b64).ok()?;
    if der.len() == 65 && der.first() == Some(&0x04) {
        return Some(der);
    }
    let (spki, rest) = der_element(&der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (algorithm, rest) = der_element(spki, 0x30)?;
    let (bit_string, rest) = der_element(rest, 0x03)?;
    if !rest.is_empty() {
        return None;
    }
    let (oid, params) = der_element(algorithm, 0x06)?;
    let (curve, params_rest) = der_element(params, 0x06)?;
    if oid != OID_EC_PUBLIC_KEY || curve != OID_P256 || !params_rest.is_empty() {
        return None;
    }
    // A BIT STRING's first byte counts its unused bits: none in a key.
    let (&unused, point) = bit_string.split_first()?;
    (unused == 0 && point.len() == 65 && point.first() == Some(&0x04)).then(|| point.to_vec())
}

/// The contents of the DER element of `tag` at the start of `input`, and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the next (first & 0x7f) bytes hold the length; a key needs at most two.
        let (bytes, rest) = rest.split_at_checked(usize::from(first & 0x7f))?;
        if bytes.is_empty() || bytes.len() > 2 {
            return None;
        }
        (bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)), rest)
    };
    rest.split_at_checked(len)
}

/// The events of one Event Webhook delivery (a JSON array). A body that is not an array is an
/// error; an element that cannot be read is counted in `malformed` and the others are kept;
/// types the portal does not track are counted in `skipped`.
pub fn parse_events(body: &[u8]) -> Result<EventBatch, EventError> {
    let elements: Vec<Value> =
        serde_json::from_slice(body).map_err(|e| EventError::Body(format!("not a JSON array of events: {e}")))?;
    let mut batch = EventBatch::default();
    for (i, element) in elements.iter().enumerate() {
        match event(element) {
            Ok(Some(e)) => batch.events.push(e),
            Ok(None) => batch.skipped += 1,
            Err(why) => batch.malformed.push(format!("event {i}: {why}")),
        }
    }
    Ok(batch)
}

/// One event: `None` when its type is not tracked.
fn event(v: &Value) -> Result<Option<EmailEvent>, &'static str> {
    let o = v.as_object().ok_or("not an object")?;
    let event_type = o.get("event").and_then(Value::as_str).ok_or("no event type")?;
    let kind = match event_type {
        "processed" => EventKind::Accepted,
        "delivered" => EventKind::Delivered,
        "deferred" => EventKind::Deferred,
        "bounce" => EventKind::Bounced {
            hard: hard_bounce(
                o.get("type").and_then(Value::as_str),
                o.get("status").and_then(Value::as_str),
            ),
        },
        "dropped" => EventKind::Dropped,
        "open" => EventKind::Opened,
        "click" => EventKind::Clicked {
            url: text(o.get("url")).ok_or("a click without its url")?,
        },
        "spamreport" => EventKind::Complained,
        "unsubscribe" | "group_unsubscribe" => EventKind::Unsubscribed,
        _ => return Ok(None),
    };
    Ok(Some(EmailEvent {
        provider_event_id: text(o.get("sg_event_id")).ok_or("no sg_event_id")?,
        kind,
        email: text(o.get("email")).ok_or("no email")?,
        occurred_at: o.get("timestamp").and_then(unix_time).ok_or("no usable timestamp")?,
        message_id: our_id(o.get("message_id")),
        campaign_id: our_id(o.get("campaign_id")),
        tenant_id: our_id(o.get("tenant_id")),
        provider_message_id: text(o.get("sg_message_id")).map(|id| {
            id.split_once('.')
                .map_or(id.as_str(), |(request, _)| request)
                .to_owned()
        }),
        reason: text(o.get("reason")).or_else(|| text(o.get("response"))),
    }))
}

/// A bounce is hard unless SendGrid calls it `blocked` (its temporary refusal) or its
/// enhanced status is a 4.x.x (transient) one.
fn hard_bounce(bounce_type: Option<&str>, status: Option<&str>) -> bool {
    if bounce_type.is_some_and(|t| t.eq_ignore_ascii_case("blocked")) {
        return false;
    }
    !status.is_some_and(|s| s.trim_start().starts_with('4'))
}

#[cfg(test)]
mod tests {
    use super::super::email::tests::batch;
    use super::super::email::token;
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    use uuid::Uuid;

    /// A fresh P-256 key pair and its public key as SendGrid shows one (base64 DER SPKI).
    fn key_pair() -> (EcdsaKeyPair, String) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08, 0x2A, 0x86, 0x48,
            0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        (pair, B64.encode(spki))
    }

    fn sign(pair: &EcdsaKeyPair, timestamp: &str, body: &[u8]) -> String {
        let mut signed = timestamp.as_bytes().to_vec();
        signed.extend_from_slice(body);
        B64.encode(pair.sign(&SystemRandom::new(), &signed).unwrap())
    }

    #[test]
    fn one_personalization_per_recipient_with_its_own_values_headers_and_ids() {
        // Given a batch of three, when the body is built:
        let b = batch(3);
        let body = mail_send_body(&b).unwrap();
        let ps = body["personalizations"].as_array().unwrap();
        assert_eq!(ps.len(), 3);
        for (p, r) in ps.iter().zip(&b.recipients) {
            // then each personalization is one recipient, with only its own address,
            assert_eq!(p["to"], json!([{ "email": r.to.email, "name": r.to.name }]));
            // its values in both forms (escaped for HTML), its headers and our message id.
            assert_eq!(p["substitutions"][text_key("first_name")], json!(r.value("first_name")));
            assert_eq!(
                p["substitutions"][html_key("first_name")],
                json!(html_escape(r.value("first_name")))
            );
            assert!(
                p["substitutions"][html_key("first_name")]
                    .as_str()
                    .unwrap()
                    .contains("&lt;&amp;&gt;")
            );
            assert_eq!(p["headers"]["List-Unsubscribe"], json!(r.header("list-unsubscribe")));
            assert_eq!(
                p["headers"]["List-Unsubscribe-Post"],
                json!("List-Unsubscribe=One-Click")
            );
            assert_eq!(p["custom_args"], json!({ "message_id": r.message_id.to_string() }));
        }
        assert_eq!(body["subject"], json!("Hello [%t:first_name%]"));
        assert_eq!(body["content"][0]["type"], json!("text/plain"));
        assert_eq!(
            body["content"][0]["value"],
            json!("Hi [%t:first_name%]\nUnsubscribe: [%t:unsubscribe_url%]")
        );
        assert_eq!(body["content"][1]["type"], json!("text/html"));
        assert_eq!(
            body["content"][1]["value"],
            json!("<p>Hi [%h:first_name%]</p><a href=\"[%h:unsubscribe_url%]\">Unsubscribe</a>")
        );
        assert_eq!(
            body["from"],
            json!({ "email": "news@shop.example", "name": "Shop News" })
        );
        assert_eq!(body["reply_to"], json!({ "email": "help@shop.example" }));
        assert_eq!(
            body["custom_args"],
            json!({ "campaign_id": b.campaign_id.to_string(), "tenant_id": b.tenant_id.to_string() })
        );
        assert_eq!(
            body["tracking_settings"]["subscription_tracking"]["enable"],
            json!(false)
        );
    }

    #[test]
    fn only_the_parts_and_forms_used_are_sent() {
        let mut b = batch(1);
        b.html.clear();
        b.text = format!("Hi {}", token("first_name"));
        b.recipients[0].substitutions.push(("unused".into(), "x".into()));
        let body = mail_send_body(&b).unwrap();
        assert_eq!(body["content"].as_array().unwrap().len(), 1);
        assert_eq!(
            body["personalizations"][0]["substitutions"],
            json!({ "[%t:first_name%]": "P0 <&>" })
        );
        // No tokens, no headers: neither key is sent; names lose SendGrid's forbidden , and ;
        let mut b = batch(1);
        b.subject = "Plain".into();
        b.html = "<p>x</p>".into();
        b.text.clear();
        b.recipients[0].headers.clear();
        b.recipients[0].to.name = Some("Doe, Jane; Dr.".into());
        let p = &mail_send_body(&b).unwrap()["personalizations"][0];
        assert!(p.get("substitutions").is_none() && p.get("headers").is_none());
        assert_eq!(p["to"][0]["name"], json!("Doe Jane Dr."));
    }

    #[test]
    fn substitutions_over_sendgrids_limits_are_refused_here() {
        // 10,000 bytes per personalization: a recipient whose values exceed it is named.
        let mut b = batch(2);
        b.recipients[1].substitutions[0].1 = "x".repeat(5_000);
        let err = mail_send_body(&b).unwrap_err();
        assert!(
            matches!(&err, BatchError::ProviderLimit { message_id, why } if *message_id == b.recipients[1].message_id && why.contains("10000")),
            "{err}"
        );
        // Just under the limit passes: (key + value) for both forms of two tokens.
        let mut b = batch(1);
        let keys: usize = ["first_name", "unsubscribe_url"]
            .iter()
            .map(|n| text_key(n).len() + html_key(n).len())
            .sum();
        let url_len = b.recipients[0].value("unsubscribe_url").len();
        let url_html_len = html_escape(b.recipients[0].value("unsubscribe_url")).len();
        let room = MAX_SUBSTITUTION_BYTES - keys - url_len - url_html_len;
        b.recipients[0].substitutions[0].1 = "y".repeat(room / 2);
        assert!(mail_send_body(&b).is_ok());
        b.recipients[0].substitutions[0].1 = "y".repeat(room / 2 + 1);
        assert!(matches!(mail_send_body(&b), Err(BatchError::ProviderLimit { .. })));

        // 100 substitutions per personalization.
        let mut b = batch(1);
        b.subject = "Plain".into();
        b.html.clear();
        b.text = (0..101).map(|i| token(&format!("v{i}"))).collect();
        b.recipients[0].substitutions = (0..101).map(|i| (format!("v{i}"), "1".into())).collect();
        assert!(matches!(mail_send_body(&b), Err(BatchError::ProviderLimit { .. })));
        b.text = (0..100).map(|i| token(&format!("v{i}"))).collect();
        assert!(mail_send_body(&b).is_ok());

        // A value that is itself a SendGrid key would be substituted again.
        let mut b = batch(1);
        b.recipients[0].substitutions[0].1 = "[%t:unsubscribe_url%]".into();
        assert!(matches!(mail_send_body(&b), Err(BatchError::BadSubstitution { .. })));
    }

    #[test]
    fn signatures_verify_only_for_the_exact_timestamp_body_and_key() {
        let (pair, public_key) = key_pair();
        let body = b"[{\"email\":\"a@example.com\",\"event\":\"open\"}]\r\n";
        let signature = sign(&pair, "1700000000", body);
        assert!(verify(&public_key, &signature, "1700000000", body));
        // PEM armour and line breaks around the key are tolerated.
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &public_key[..40],
            &public_key[40..]
        );
        assert!(verify(&pem, &signature, "1700000000", body));
        // Tampered body (even the trailing CRLF), other timestamp, other key: refused.
        assert!(!verify(&public_key, &signature, "1700000000", &body[..body.len() - 2]));
        assert!(!verify(
            &public_key,
            &signature,
            "1700000000",
            b"[{\"email\":\"b@example.com\",\"event\":\"open\"}]\r\n"
        ));
        assert!(!verify(&public_key, &signature, "1700000001", body));
        let (_, other_key) = key_pair();
        assert!(!verify(&other_key, &signature, "1700000000", body));
        // Garbage anywhere is false, never a panic.
        for (key, sig) in [
            ("", signature.as_str()),
            ("not base64!", signature.as_str()),
            ("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE", signature.as_str()),
            (public_key.as_str(), ""),
            (public_key.as_str(), "AAAA"),
            (public_key.as_str(), "%%%"),
        ] {
            assert!(!verify(key, sig, "1700000000", body), "{key} {sig}");
        }
    }

    #[test]
    fn the_key_is_unwrapped_from_its_spki_strictly() {
        let (pair, public_key) = key_pair();
        let der = B64.decode(&public_key).unwrap();
        assert_eq!(public_key_point(&public_key).unwrap(), pair.public_key().as_ref());
        // A bare uncompressed point is taken too.
        assert_eq!(
            public_key_point(&B64.encode(pair.public_key().as_ref())).unwrap(),
            pair.public_key().as_ref()
        );
        // Another curve's OID, another algorithm's, trailing bytes, truncation: refused.
        let mut other_curve = der.clone();
        other_curve[22] = 0x08;
        assert_eq!(public_key_point(&B64.encode(&other_curve)), None);
        let mut rsa = der.clone();
        rsa[12] = 0x02;
        assert_eq!(public_key_point(&B64.encode(&rsa)), None);
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(public_key_point(&B64.encode(&trailing)), None);
        assert_eq!(public_key_point(&B64.encode(&der[..der.len() - 1])), None);
        // Long-form lengths are read.
        assert_eq!(
            der_element(&[0x04, 0x81, 0x02, 0xAA, 0xBB, 0xCC], 0x04),
            Some((&[0xAA, 0xBB][..], &[0xCC][..]))
        );
        assert_eq!(der_element(&[0x04, 0x85, 1, 1, 1, 1, 1], 0x04), None);
        assert_eq!(der_element(&[0x04, 0x05, 1], 0x04), None);
    }

    #[test]
    fn events_map_to_neutral_kinds_with_our_ids_and_bad_ones_are_counted() {
        let message = Uuid::from_u128(1);
        let campaign = Uuid::from_u128(2);
        let tenant = Uuid::from_u128(3);
        let base = |event: &str, extra: Value| {
            let mut e = json!({
                "email": "a@example.com",
                "timestamp": 1_700_000_000,
                "event": event,
                "sg_event_id": format!("id-{event}"),
                "sg_message_id": "REQ123.filterdrecv-1-2-3.0",
                "message_id": message.to_string(),
                "campaign_id": campaign.to_string(),
                "tenant_id": tenant.to_string(),
            });
            for (k, v) in extra.as_object().unwrap() {
                e[k] = v.clone();
            }
            e
        };
        let body = json!([
            base("processed", json!({})),
            base("delivered", json!({"response": "250 OK"})),
            base("deferred", json!({"response": "400 try again later", "attempt": "5"})),
            base(
                "bounce",
                json!({"type": "bounce", "status": "5.1.1", "reason": "550 no such user"})
            ),
            base(
                "bounce",
                json!({"type": "bounce", "status": "4.2.2", "reason": "452 mailbox full"})
            ),
            base("bounce", json!({"type": "blocked", "status": "5.2.2"})),
            base("dropped", json!({"reason": "Bounced Address"})),
            base("open", json!({})),
            base("click", json!({"url": "https://shop.example/a"})),
            base("spamreport", json!({})),
            base("unsubscribe", json!({})),
            base("group_unsubscribe", json!({"asm_group_id": 10})),
            base("group_resubscribe", json!({})),
            base("a_type_from_the_future", json!({})),
            base("click", json!({"url": null})),
            json!({"event": "open", "email": "a@example.com", "timestamp": 1}),
            json!({"event": "open", "sg_event_id": "x", "email": "a@example.com", "timestamp": "soon"}),
            json!("not an object"),
            base("open", json!({"message_id": "not-a-uuid", "tenant_id": 7})),
        ]);
        let parsed = parse_events(body.to_string().as_bytes()).unwrap();
        let kinds: Vec<_> = parsed.events.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::Accepted,
                EventKind::Delivered,
                EventKind::Deferred,
                EventKind::Bounced { hard: true },
                EventKind::Bounced { hard: false },
                EventKind::Bounced { hard: false },
                EventKind::Dropped,
                EventKind::Opened,
                EventKind::Clicked {
                    url: "https://shop.example/a".into()
                },
                EventKind::Complained,
                EventKind::Unsubscribed,
                EventKind::Unsubscribed,
                EventKind::Opened,
            ]
        );
        assert_eq!(parsed.skipped, 2);
        assert_eq!(parsed.malformed.len(), 4, "{:?}", parsed.malformed);
        assert!(parsed.malformed[0].starts_with("event 14:"));
        let first = &parsed.events[0];
        assert_eq!(first.provider_event_id, "id-processed");
        assert_eq!(first.email, "a@example.com");
        assert_eq!(first.occurred_at.timestamp(), 1_700_000_000);
        assert_eq!(
            (first.message_id, first.campaign_id, first.tenant_id),
            (Some(message), Some(campaign), Some(tenant))
        );
        assert_eq!(first.provider_message_id.as_deref(), Some("REQ123"));
        assert_eq!(parsed.events[2].reason.as_deref(), Some("400 try again later"));
        assert_eq!(parsed.events[3].reason.as_deref(), Some("550 no such user"));
        // Ids that are not ours read as absent.
        let last = parsed.events.last().unwrap();
        assert_eq!((last.message_id, last.tenant_id), (None, None));

        // A body that is not an array is an error; an empty one is nothing.
        assert!(parse_events(b"{\"event\":\"open\"}").is_err());
        assert!(parse_events(b"not json").is_err());
        assert_eq!(parse_events(b"[]").unwrap(), EventBatch::default());
    }
}
