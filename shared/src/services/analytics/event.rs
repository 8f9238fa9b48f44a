//! What a site sends, what goes into the stream, and the rules between them (no I/O here):
//! validation, bot filtering, device/browser/OS from the user agent, the traffic source, and the
//! visitor id — a salted hash of site, IP and user agent whose salt rotates daily, so no
//! cookie is set and no IP is stored.
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The Redis stream every collected event goes to.
pub const STREAM: &str = "analytics_events";
/// Events per request at most.
pub const MAX_BATCH: usize = 50;
/// The limits of what reaches the stream, and from there the rollups' keys (a btree key holds at
/// most ~2,700 bytes; the longest key, a UTM value beside a path, stays under 1,300). Longer
/// texts are clipped at a character boundary; a longer URL or name refuses the event.
pub const MAX_URL_BYTES: usize = 2048;
/// An event's name, in characters (at most 480 bytes).
pub const MAX_NAME_CHARS: usize = 120;
pub const MAX_PATH_BYTES: usize = 1024;
/// A host name (DNS allows 253).
pub const MAX_HOST_BYTES: usize = 253;
pub const MAX_UTM_BYTES: usize = 200;
/// Device, browser, OS and visitor id (short words of our own).
pub const MAX_WORD_BYTES: usize = 100;
pub const MAX_PROPS: usize = 30;
pub const MAX_PROP_KEY_BYTES: usize = 100;
pub const MAX_PROP_VALUE_BYTES: usize = 300;
/// A client timestamp may be this far in the past (a page that queued events offline) ...
pub const MAX_AGE_MS: i64 = 24 * 3600 * 1000;
/// ... and this far in the future (clock skew); beyond either the event is dropped.
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// One event in the stream (JSON in the entry's `e` field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvent {
    pub site: Uuid,
    pub tenant: Uuid,
    /// Unix milliseconds.
    pub ts: i64,
    /// `pageview` or a custom event's name.
    pub name: String,
    pub path: String,
    /// The referring host, '' for direct traffic.
    pub source: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    /// `desktop`, `tablet`, `mobile`.
    pub device: String,
    pub browser: String,
    pub os: String,
    /// Hex of the first 16 bytes of the daily visitor hash.
    pub visitor: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub props: BTreeMap<String, String>,
}

impl StreamEvent {
    pub fn is_pageview(&self) -> bool {
        self.name == "pageview"
    }

    /// Whether every text can be stored: no control characters and within the limits (collect
    /// makes sure of both, but an entry written by anything else must not reach Postgres).
    pub fn check(&self) -> Result<(), Reason> {
        let texts = [
            (&self.name, MAX_NAME_CHARS * 4, "name_too_long"),
            (&self.path, MAX_PATH_BYTES, "path_too_long"),
            (&self.source, MAX_HOST_BYTES, "source_too_long"),
            (&self.utm_source, MAX_UTM_BYTES, "utm_too_long"),
            (&self.utm_medium, MAX_UTM_BYTES, "utm_too_long"),
            (&self.utm_campaign, MAX_UTM_BYTES, "utm_too_long"),
            (&self.device, MAX_WORD_BYTES, "client_too_long"),
            (&self.browser, MAX_WORD_BYTES, "client_too_long"),
            (&self.os, MAX_WORD_BYTES, "client_too_long"),
            (&self.visitor, MAX_WORD_BYTES, "client_too_long"),
        ];
        for (text, max, too_long) in texts {
            if text.len() > max {
                return Err(too_long);
            }
            if text.chars().any(char::is_control) {
                return Err("control_characters");
            }
        }
        if self.props.len() > MAX_PROPS {
            return Err("too_many_props");
        }
        for (k, v) in &self.props {
            if k.len() > MAX_PROP_KEY_BYTES || v.len() > MAX_PROP_VALUE_BYTES {
                return Err("prop_too_long");
            }
            if k.contains('\0') || v.contains('\0') {
                return Err("control_characters");
            }
        }
        Ok(())
    }
}

/// The site a key resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRef {
    pub site_id: Uuid,
    pub tenant_id: Uuid,
    pub allowed_origins: Vec<String>,
}

impl SiteRef {
    /// Whether a browser at `origin` may send to this site (exact match; `*` allows any).
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// Who sent the request.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub ip: &'a str,
    pub user_agent: &'a str,
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// At most `max_bytes` bytes (whole characters), control characters dropped (Postgres refuses
/// NUL in text; none of them belongs in a report).
fn clip(s: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_bytes));
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        out.push(c);
    }
    out
}

/// Why an event was not taken.
pub type Reason = &'static str;

/// What the request says about its sender, worked out once per request (a batch shares it).
#[derive(Debug, Clone)]
pub struct Sender {
    pub is_bot: bool,
    pub browser: String,
    pub os: String,
    /// The user agent is a phone's (the device when no screen width is sent).
    pub mobile_agent: bool,
    pub visitor: String,
}

static UA_PARSER: std::sync::LazyLock<woothee::parser::Parser> = std::sync::LazyLock::new(woothee::parser::Parser::new);

impl Sender {
    pub fn of(site: &SiteRef, client: Client<'_>, salt: &[u8]) -> Self {
        let ua = UA_PARSER.parse(client.user_agent);
        let lower = client.user_agent.to_ascii_lowercase();
        let is_bot = client.user_agent.trim().is_empty()
            || woothee::is_crawler(client.user_agent)
            || ua.as_ref().is_some_and(|r| r.category == "crawler")
            || ["headless", "bot", "spider", "crawl", "lighthouse", "pingdom", "uptime"]
                .iter()
                .any(|needle| lower.contains(needle));
        let known = |s: &str| {
            if s.is_empty() || s == "UNKNOWN" {
                "Unknown".to_owned()
            } else {
                s.to_owned()
            }
        };
        Self {
            is_bot,
            browser: known(ua.as_ref().map(|r| r.name).unwrap_or_default()),
            os: known(ua.as_ref().map(|r| r.os).unwrap_or_default()),
            mobile_agent: ua
                .as_ref()
                .is_some_and(|r| matches!(r.category, "smartphone" | "mobilephone")),
            visitor: visitor_id(salt, site.site_id, client),
        }
    }
}

/// One event of a request, validated and enriched (or the reason it was dropped).
pub fn enrich(
    site: &SiteRef,
    raw: &Value,
    client: Client<'_>,
    salt: &[u8],
    now_ms: i64,
) -> Result<StreamEvent, Reason> {
    enrich_from(site, raw, &Sender::of(site, client, salt), now_ms)
}

/// [`enrich`] with the sender already worked out.
pub fn enrich_from(site: &SiteRef, raw: &Value, sender: &Sender, now_ms: i64) -> Result<StreamEvent, Reason> {
    if sender.is_bot {
        return Err("bot");
    }
    if !raw.is_object() {
        return Err("not_an_object");
    }
    let name = text(raw, "name").unwrap_or("pageview");
    if name.chars().count() > MAX_NAME_CHARS {
        return Err("name_too_long");
    }
    if name.chars().any(char::is_control) {
        return Err("name_invalid");
    }
    let page = text(raw, "url").ok_or("url_missing")?;
    if page.len() > MAX_URL_BYTES {
        return Err("url_too_long");
    }
    let page = url::Url::parse(page).map_err(|_| "url_invalid")?;
    if !matches!(page.scheme(), "http" | "https") {
        return Err("url_invalid");
    }
    let ts = match raw.get("timestamp") {
        None | Some(Value::Null) => now_ms,
        Some(v) => v.as_i64().ok_or("timestamp_invalid")?,
    };
    if ts > now_ms + MAX_SKEW_MS || ts < now_ms - MAX_AGE_MS {
        return Err("timestamp_out_of_range");
    }
    let width = match raw.get("screen_width") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|w| *w <= 100_000).ok_or("screen_width_invalid")?),
    };
    let device = match width {
        Some(w) if w < 576 => "mobile",
        Some(w) if w < 992 => "tablet",
        Some(_) => "desktop",
        None if sender.mobile_agent => "mobile",
        None => "desktop",
    };
    let browser = clip(&sender.browser, MAX_WORD_BYTES);
    let os = clip(&sender.os, MAX_WORD_BYTES);

    let referrer_host = text(raw, "referrer")
        .and_then(|r| url::Url::parse(r).ok())
        .and_then(|r| {
            r.host_str()
                .map(|h| clip(&h.trim_start_matches("www.").to_ascii_lowercase(), MAX_HOST_BYTES))
        });
    let page_host = page
        .host_str()
        .unwrap_or_default()
        .trim_start_matches("www.")
        .to_ascii_lowercase();
    let query = |key: &str| {
        page.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| clip(v.trim(), MAX_UTM_BYTES))
            .unwrap_or_default()
    };
    let utm_source = query("utm_source");
    let source = match referrer_host {
        Some(host) if host != page_host => host,
        _ => clip(&utm_source.to_ascii_lowercase(), MAX_HOST_BYTES),
    };
    let mut props = BTreeMap::new();
    if let Some(map) = raw.get("props").and_then(Value::as_object) {
        if map.len() > MAX_PROPS {
            return Err("too_many_props");
        }
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err("prop_not_scalar"),
            };
            props.insert(clip(k, MAX_PROP_KEY_BYTES), clip(&v, MAX_PROP_VALUE_BYTES));
        }
    }
    let path = clip(if page.path().is_empty() { "/" } else { page.path() }, MAX_PATH_BYTES);
    Ok(StreamEvent {
        site: site.site_id,
        tenant: site.tenant_id,
        ts,
        name: name.to_owned(),
        path,
        source,
        utm_source,
        utm_medium: query("utm_medium"),
        utm_campaign: query("utm_campaign"),
        device: device.to_owned(),
        browser,
        os,
        visitor: sender.visitor.clone(),
        props,
    })
}

/// The client's address: what API Gateway saw (its request context), else the last hop of
/// `X-Forwarded-For` (the gateway appends the real address; a client can write anything at the
/// front).
pub fn client_ip<'a>(context_ip: Option<&'a str>, forwarded_for: Option<&'a str>) -> &'a str {
    context_ip
        .or_else(|| forwarded_for.and_then(|v| v.rsplit(',').next()).map(str::trim))
        .unwrap_or_default()
}

/// The daily visitor id: SHA-256 of (salt, site, IP, user agent), first 16 bytes in hex.
pub fn visitor_id(salt: &[u8], site: Uuid, client: Client<'_>) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(site.as_bytes());
    h.update(client.ip.as_bytes());
    h.update([0]);
    h.update(client.user_agent.as_bytes());
    let digest = h.finalize();
    hex::encode(digest.get(..16).unwrap_or_default())
}

/// The events of a request body: `{"site_key", "events": [...]}` or one event with `site_key`.
pub fn split_body(body: &Value) -> Result<(&str, Vec<&Value>), Reason> {
    let key = text(body, "site_key").ok_or("site_key_missing")?;
    match body.get("events") {
        Some(Value::Array(events)) if events.is_empty() => Err("no_events"),
        Some(Value::Array(events)) if events.len() > MAX_BATCH => Err("too_many_events"),
        Some(Value::Array(events)) => Ok((key, events.iter().collect())),
        Some(_) => Err("events_not_a_list"),
        None => Ok((key, vec![body])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    fn site() -> SiteRef {
        SiteRef {
            site_id: Uuid::nil(),
            tenant_id: Uuid::max(),
            allowed_origins: vec!["https://example.com".into()],
        }
    }

    fn client(ua: &str) -> Client<'_> {
        Client {
            ip: "203.0.113.7",
            user_agent: ua,
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_pageview_is_enriched_without_keeping_the_ip() {
        let raw = json!({"url": "https://www.example.com/pricing?utm_source=News&utm_medium=email&utm_campaign=nov",
            "referrer": "https://www.google.com/search?q=x", "screen_width": 1440, "props": {"plan": "pro", "n": 3}});
        let e = enrich(&site(), &raw, client(CHROME), b"salt", NOW).unwrap();
        assert_eq!(
            (e.name.as_str(), e.path.as_str(), e.source.as_str()),
            ("pageview", "/pricing", "google.com")
        );
        assert_eq!(
            (e.utm_source.as_str(), e.utm_medium.as_str(), e.utm_campaign.as_str()),
            ("News", "email", "nov")
        );
        assert_eq!(
            (e.device.as_str(), e.browser.as_str(), e.os.as_str()),
            ("desktop", "Chrome", "Windows 10")
        );
        assert_eq!(e.props.get("n").map(String::as_str), Some("3"));
        assert_eq!(e.ts, NOW);
        let stored = serde_json::to_string(&e).unwrap();
        assert!(!stored.contains("203.0.113.7"), "no raw IP in the stream");
        assert_eq!(e.visitor.len(), 32);
    }

    #[test]
    fn the_visitor_id_is_stable_within_a_day_and_differs_across_salts_sites_and_clients() {
        let a = visitor_id(b"day1", Uuid::nil(), client(CHROME));
        assert_eq!(a, visitor_id(b"day1", Uuid::nil(), client(CHROME)));
        assert_ne!(a, visitor_id(b"day2", Uuid::nil(), client(CHROME)));
        assert_ne!(a, visitor_id(b"day1", Uuid::max(), client(CHROME)));
        assert_ne!(a, visitor_id(b"day1", Uuid::nil(), client(IPHONE)));
    }

    #[test]
    fn sources_devices_and_bad_events() {
        let s = site();
        let internal = json!({"url": "https://example.com/b", "referrer": "https://example.com/a"});
        assert_eq!(
            enrich(&s, &internal, client(IPHONE), b"s", NOW).unwrap().source,
            "",
            "internal: direct"
        );
        assert_eq!(
            enrich(&s, &internal, client(IPHONE), b"s", NOW).unwrap().device,
            "mobile"
        );
        let narrow = json!({"url": "https://example.com/", "screen_width": 800});
        assert_eq!(enrich(&s, &narrow, client(CHROME), b"s", NOW).unwrap().device, "tablet");
        let custom = json!({"name": "Signup", "url": "https://example.com/join"});
        assert_eq!(enrich(&s, &custom, client(CHROME), b"s", NOW).unwrap().name, "Signup");
        for (raw, ua, reason) in [
            (json!({"url": "https://example.com/"}), GOOGLEBOT, "bot"),
            (json!({"url": "https://example.com/"}), "HeadlessChrome/120", "bot"),
            (json!({"url": "https://example.com/"}), "", "bot"),
            (json!({}), CHROME, "url_missing"),
            (json!({"url": "javascript:alert(1)"}), CHROME, "url_invalid"),
            (
                json!({"url": "https://example.com/", "timestamp": NOW + 3_600_000}),
                CHROME,
                "timestamp_out_of_range",
            ),
            (
                json!({"url": "https://example.com/", "timestamp": NOW - 2 * MAX_AGE_MS}),
                CHROME,
                "timestamp_out_of_range",
            ),
            (
                json!({"url": "https://example.com/", "screen_width": "wide"}),
                CHROME,
                "screen_width_invalid",
            ),
            (
                json!({"url": "https://example.com/", "props": {"a": {"nested": 1}}}),
                CHROME,
                "prop_not_scalar",
            ),
            (json!("pageview"), CHROME, "not_an_object"),
            (
                json!({"name": "a\u{0}b", "url": "https://example.com/"}),
                CHROME,
                "name_invalid",
            ),
        ] {
            assert_eq!(enrich(&s, &raw, client(ua), b"s", NOW).unwrap_err(), reason, "{raw}");
        }
    }

    #[test]
    fn control_characters_never_reach_the_stream() {
        let raw = json!({"url": "https://example.com/a%00b?utm_source=x%00y&utm_campaign=%0Anov",
            "props": {"k\u{0}": "v\u{0}"}});
        let e = enrich(&site(), &raw, client(CHROME), b"s", NOW).unwrap();
        let all = serde_json::to_string(&e).unwrap();
        assert!(!all.contains("\\u0000") && !all.contains('\0'), "{all}");
        assert_eq!((e.utm_source.as_str(), e.utm_campaign.as_str()), ("xy", "nov"));
    }

    #[test]
    fn every_text_that_reaches_a_rollup_key_is_clipped_to_its_limit() {
        let host = format!("{}.example", "a".repeat(3000));
        // Within the URL's 2,048 bytes as sent: a 1,100-byte path, UTM values of 60 emoji.
        let utm = "\u{1F600}".repeat(60);
        let raw = json!({"url": format!("https://example.com/{}?utm_source={utm}&utm_campaign={utm}", "a".repeat(1100)),
            "referrer": format!("https://{host}/"), "props": {"k".repeat(500): "v".repeat(5000)}});
        let e = enrich(&site(), &raw, client(CHROME), b"s", NOW).unwrap();
        assert_eq!(e.source.len(), MAX_HOST_BYTES);
        assert_eq!(e.path.len(), MAX_PATH_BYTES);
        assert_eq!(e.utm_source.len(), MAX_UTM_BYTES, "whole characters: 50 of 4 bytes");
        assert_eq!(e.utm_campaign.chars().count(), 50);
        let (k, v) = e.props.iter().next().unwrap();
        assert_eq!((k.len(), v.len()), (MAX_PROP_KEY_BYTES, MAX_PROP_VALUE_BYTES));
        assert_eq!(e.check(), Ok(()));
        // Written by anything else, the same texts are refused before they reach Postgres.
        let mut long = e.clone();
        long.source = host;
        assert_eq!(long.check(), Err("source_too_long"));
        let mut long = e.clone();
        long.utm_medium = utm.repeat(2);
        assert_eq!(long.check(), Err("utm_too_long"));
        let mut nul = e;
        nul.path = "/a\u{0}".into();
        assert_eq!(nul.check(), Err("control_characters"));
    }

    #[test]
    fn the_client_ip_is_the_one_the_gateway_saw() {
        assert_eq!(
            client_ip(Some("203.0.113.7"), Some("1.1.1.1, 203.0.113.7")),
            "203.0.113.7"
        );
        assert_eq!(
            client_ip(None, Some("6.6.6.6, 203.0.113.7")),
            "203.0.113.7",
            "a forged first hop is ignored"
        );
        assert_eq!(client_ip(None, None), "");
    }

    #[test]
    fn a_body_is_one_event_or_a_batch() {
        let one = json!({"site_key": "k", "url": "https://example.com/"});
        assert_eq!(split_body(&one).unwrap().1.len(), 1);
        let batch = json!({"site_key": "k", "events": [{"url": "a"}, {"url": "b"}]});
        assert_eq!(split_body(&batch).unwrap().1.len(), 2);
        assert_eq!(split_body(&json!({"url": "x"})).unwrap_err(), "site_key_missing");
        let big = json!({"site_key": "k", "events": vec![json!({}); MAX_BATCH + 1]});
        assert_eq!(split_body(&big).unwrap_err(), "too_many_events");
        assert!(site().allows("https://example.com/"));
        assert!(!site().allows("https://evil.example"));
    }
}
