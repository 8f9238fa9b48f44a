//! Property tests for the parsers that face the internet: pagination cursors, JSON bodies,
//! emails and free text, API-key shapes, idempotency keys, the request-context extractors,
//! `If-Match`, and the problem+json mapping of errors.
//!
//! No database is needed: the pool points at nothing, so every credential that would reach it
//! must answer 503 (never hang, panic or leak the cause), and every other one must be refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use http::header::{AUTHORIZATION, IF_MATCH};
use http::{HeaderValue, Request};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::domain::secret::{looks_like_api_key, new_api_key, sha256};
use shared::domain::{Cursor, DomainError, Email, FieldError, PageRequest, Text, Validator};
use shared::http::{ApiError, Authed, Core, IfMatch, PageParams, Params, TenantCtx, etag, finish, min, parse_json};
use shared::services::auth::Authenticator;
use shared::services::idempotency::IdempotencyKey;
use uuid::Uuid;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared strategies
// ---------------------------------------------------------------------------------------------

/// Timestamps with nanoseconds: mostly 1970..2100, also anywhere chrono can represent (years
/// -262143..=262142, beyond RFC 3339's four digits).
fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    let (min, max) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    let secs = prop_oneof![3 => 0i64..=4_102_444_800, 1 => min..=max];
    (secs, 0u32..1_000_000_000).prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// Any JSON value, a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bytes a header value may hold: visible ASCII and space, tab, and obs-text (0x80..=0xff,
/// which `HeaderValue::to_str` refuses).
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![12 => 0x20u8..=0x7e, 1 => Just(b'\t'), 1 => 0x80u8..=0xff],
        0..max,
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Cursors and page requests
// ---------------------------------------------------------------------------------------------

const MAX_CURSOR_LEN: usize = 512;

/// A sort key of some type, as some list of this API (or of no list) would encode it.
#[derive(Debug, Clone)]
enum Key {
    /// The audit log's key.
    Int(i64),
    /// The other lists' key.
    TimeId(DateTime<Utc>, Uuid),
    IntText(i64, String),
    Text(String),
    Id(Uuid),
    Time(DateTime<Utc>),
    IdTime(Uuid, DateTime<Utc>),
    IntTextInt(i64, String, i64),
    Texts(String, String),
    Ints(Vec<i64>),
    Float(f64),
    Big(u64),
    Flag(bool),
}

impl Key {
    fn cursor(&self) -> Cursor {
        match self {
            Key::Int(k) => Cursor::encode(k),
            Key::TimeId(t, i) => Cursor::encode(&(t, i)),
            Key::IntText(n, s) => Cursor::encode(&(n, s)),
            Key::Text(s) => Cursor::encode(s),
            Key::Id(i) => Cursor::encode(i),
            Key::Time(t) => Cursor::encode(t),
            Key::IdTime(i, t) => Cursor::encode(&(i, t)),
            Key::IntTextInt(a, s, b) => Cursor::encode(&(a, s, b)),
            Key::Texts(a, b) => Cursor::encode(&(a, b)),
            Key::Ints(v) => Cursor::encode(v),
            Key::Float(f) => Cursor::encode(f),
            Key::Big(n) => Cursor::encode(n),
            Key::Flag(b) => Cursor::encode(b),
        }
    }
}

fn any_key() -> impl Strategy<Value = Key> {
    prop_oneof![
        any::<i64>().prop_map(Key::Int),
        (timestamp(), uuid()).prop_map(|(t, i)| Key::TimeId(t, i)),
        (any::<i64>(), any::<String>()).prop_map(|(n, s)| Key::IntText(n, s)),
        any::<String>().prop_map(Key::Text),
        uuid().prop_map(Key::Id),
        timestamp().prop_map(Key::Time),
        (uuid(), timestamp()).prop_map(|(i, t)| Key::IdTime(i, t)),
        (any::<i64>(), any::<String>(), any::<i64>()).prop_map(|(a, s, b)| Key::IntTextInt(a, s, b)),
        (any::<String>(), any::<String>()).prop_map(|(a, b)| Key::Texts(a, b)),
        vec(any::<i64>(), 0..4).prop_map(Key::Ints),
        (-1e12f64..1e12).prop_map(Key::Float),
        ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Key::Big),
        any::<bool>().prop_map(Key::Flag),
    ]
}

/// A raw `cursor` query value as a client might send it: garbage, base64 of garbage, base64 of
/// arbitrary JSON, standard (padded) base64, over-long tokens, or real cursors of any key type.
fn raw_cursor() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{0,40}",
        "[A-Za-z0-9_-]{500,600}",
        vec(any::<u8>(), 0..48).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        arb_json().prop_map(|v| URL_SAFE_NO_PAD.encode(v.to_string())),
        any_key().prop_map(|k| STANDARD.encode(URL_SAFE_NO_PAD.decode(k.cursor().as_str()).unwrap())),
        any_key().prop_map(|k| k.cursor().as_str().to_owned()),
        any::<i64>().prop_map(|n| Key::Int(n).cursor().as_str().to_owned()),
        (timestamp(), uuid()).prop_map(|(t, i)| Key::TimeId(t, i).cursor().as_str().to_owned()),
        (any::<i64>(), "[ -~]{0,40}").prop_map(|(n, s)| Key::IntText(n, s).cursor().as_str().to_owned()),
    ]
}

/// Any `limit` a query string can carry, with the boundaries well represented.
fn raw_limit() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![Just(None), (0u32..=102).prop_map(Some), any::<u32>().prop_map(Some)]
}

/// What a cursor should decode to, by the cursor's documented format (URL-safe unpadded base64
/// of the JSON of the key, at most 512 characters).
fn documented_decode<K: DeserializeOwned>(raw: &str) -> Option<K> {
    if raw.is_empty() || raw.len() > MAX_CURSOR_LEN {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw).ok()?).ok()
}

fn check_page_request<K>(limit: Option<u32>, cursor: Option<&str>) -> Result<(), TestCaseError>
where
    K: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let limit_ok = limit.is_none_or(|l| (1..=100).contains(&l));
    let expected_key = cursor.map(documented_decode::<K>);
    let cursor_ok = !matches!(expected_key, Some(None));
    match PageRequest::<K>::parse(limit, cursor) {
        Ok(page) => {
            prop_assert!(limit_ok && cursor_ok, "accepted limit {limit:?} cursor {cursor:?}");
            prop_assert_eq!(page.limit, limit.unwrap_or(25));
            prop_assert_eq!(page.fetch(), i64::from(page.limit) + 1);
            let expected_key = expected_key.flatten();
            prop_assert_eq!(page.after.as_ref(), expected_key.as_ref());
            if let (Some(raw), Some(key)) = (cursor, page.after.as_ref()) {
                // The key survives the next trip (it becomes the next page's cursor).
                let again = Cursor::encode(key);
                let back = again.decode::<K>().ok();
                prop_assert_eq!(back.as_ref(), Some(key));
                prop_assert!(raw.len() <= MAX_CURSOR_LEN);
            }
        }
        Err(issues) => {
            prop_assert!(!(limit_ok && cursor_ok), "refused limit {limit:?} cursor {cursor:?}");
            for (field, issue) in &issues {
                match *field {
                    "limit" => prop_assert_eq!(issue.code, "out_of_range"),
                    "cursor" => prop_assert_eq!(issue.code, "invalid_cursor"),
                    other => prop_assert!(false, "unexpected field {other:?}"),
                }
            }
            let fields: Vec<&str> = issues.iter().map(|(f, _)| *f).collect();
            let mut expected = Vec::new();
            if !limit_ok {
                expected.push("limit");
            }
            if !cursor_ok {
                expected.push("cursor");
            }
            prop_assert_eq!(fields, expected);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn cursor_round_trips_int_text_keys(n in any::<i64>(), s in any::<String>()) {
        let key = (n, s);
        let cursor = Cursor::encode(&key);
        let url_safe = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        prop_assert!(cursor.as_str().bytes().all(url_safe));
        prop_assert_eq!(cursor.decode::<(i64, String)>().unwrap(), key.clone());
        // What the client sends back goes through `parse`, which caps the length.
        match Cursor::parse(cursor.as_str()) {
            Ok(back) => prop_assert_eq!(back.decode::<(i64, String)>().unwrap(), key),
            Err(issue) => {
                prop_assert!(cursor.as_str().len() > MAX_CURSOR_LEN);
                prop_assert_eq!(issue.code, "invalid_cursor");
            }
        }
    }

    #[test]
    fn cursor_round_trips_timestamp_id_keys(at in timestamp(), id in uuid(), limit in 1u32..=100) {
        let key = (at, id);
        let cursor = Cursor::encode(&key);
        prop_assert_eq!(cursor.decode::<(DateTime<Utc>, Uuid)>().unwrap(), key);
        let page = PageRequest::<(DateTime<Utc>, Uuid)>::parse(Some(limit), Some(cursor.as_str()));
        let page = page.unwrap();
        prop_assert_eq!(page.limit, limit);
        prop_assert_eq!(page.after, Some(key));
    }

    #[test]
    fn cursor_round_trips_audit_keys(n in any::<i64>(), limit in proptest::option::of(1u32..=100)) {
        let cursor = Cursor::encode(&n);
        let page = PageRequest::<i64>::parse(limit, Some(cursor.as_str())).unwrap();
        prop_assert_eq!(page.after, Some(n));
        prop_assert_eq!(page.limit, limit.unwrap_or(25));
    }

    /// Any limit and any cursor text: no panic, `Ok` only for limits 1..=100 (or none) and a
    /// cursor in the documented format, and each refusal names its field.
    #[test]
    fn page_request_parses_any_input_without_panicking(
        limit in raw_limit(),
        cursor in proptest::option::of(raw_cursor()),
    ) {
        check_page_request::<i64>(limit, cursor.as_deref())?;
        check_page_request::<(DateTime<Utc>, Uuid)>(limit, cursor.as_deref())?;
        check_page_request::<(i64, String)>(limit, cursor.as_deref())?;
    }

    /// A cursor made for one key type never decodes as another: an audit-log cursor sent to a
    /// members list (or a string, a float, a triple, ...) is refused, not reinterpreted.
    #[test]
    fn a_cursor_never_decodes_as_another_key_type(key in any_key()) {
        let cursor = key.cursor();
        let raw = cursor.as_str();
        prop_assert_eq!(cursor.decode::<i64>().is_ok(), matches!(key, Key::Int(_)), "{:?}", key);
        prop_assert_eq!(
            cursor.decode::<(i64, String)>().is_ok(),
            matches!(key, Key::IntText(..)),
            "{:?}", key
        );
        prop_assert_eq!(
            cursor.decode::<(DateTime<Utc>, Uuid)>().is_ok(),
            matches!(key, Key::TimeId(..)),
            "{:?}", key
        );
        // Through the query parser too.
        if raw.len() <= MAX_CURSOR_LEN {
            prop_assert_eq!(
                PageRequest::<i64>::parse(None, Some(raw)).is_ok(),
                matches!(key, Key::Int(_))
            );
            prop_assert_eq!(
                PageRequest::<(DateTime<Utc>, Uuid)>::parse(None, Some(raw)).is_ok(),
                matches!(key, Key::TimeId(..))
            );
        }
    }
}

/// The same, end to end: `?limit=&cursor=` through `Params<PageParams>` as a list route reads them.
async fn list_route(Params(page): Params<PageParams>) -> Result<String, ApiError> {
    let request = page.request::<(DateTime<Utc>, Uuid)>()?;
    Ok(format!("{} {:?}", request.limit, request.after.map(|(_, id)| id)))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![4 => Just("limit".to_owned()), 4 => Just("cursor".to_owned()), 1 => "[ -~]{0,8}"];
    let value = prop_oneof![
        any::<String>(),
        "[0-9+ -]{0,12}",
        (0u32..=102).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        raw_cursor(),
        (timestamp(), uuid()).prop_map(|(t, i)| Key::TimeId(t, i).cursor().as_str().to_owned()),
        (timestamp(), uuid()).prop_map(|(t, i)| Key::TimeId(t, i).cursor().as_str().to_owned()),
        (timestamp(), uuid()).prop_map(|(t, i)| Key::TimeId(t, i).cursor().as_str().to_owned()),
    ];
    vec((name, value), 0..4)
}

/// What the list should answer: the limit and the id it continues after, or a 422.
fn expected_page(pairs: &[(String, String)]) -> Option<(u32, Option<Uuid>)> {
    let named = |n: &str| {
        pairs
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let (limits, cursors) = (named("limit"), named("cursor"));
    if limits.len() > 1 || cursors.len() > 1 {
        return None;
    }
    let limit = match limits.first() {
        None => None,
        Some(v) => Some(v.parse::<u32>().ok()?),
    };
    // An empty cursor is no cursor (`?cursor=`).
    let cursor = cursors.first().copied().filter(|c| !c.is_empty());
    let page = PageRequest::<(DateTime<Utc>, Uuid)>::parse(limit, cursor).ok()?;
    Some((page.limit, page.after.map(|(_, id)| id)))
}

#[test]
fn list_query_answers_a_page_or_a_422_for_any_query_string() {
    let rt = runtime();
    let router = finish(Router::new().route("/list", get(list_route)));
    let junk = proptest::option::weighted(0.25, "[!-~]{0,60}");
    proptest!(cases(256), |(pairs in query_pairs(), junk in junk)| {
        let encoded: Vec<String> =
            pairs.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect();
        let query = match &junk {
            Some(raw) => raw.replace('#', ""),
            None => encoded.join("&"),
        };
        // Junk that is not a valid URI never reaches a router.
        let request = Request::builder().uri(format!("/list?{query}")).body(Body::empty());
        let Ok(request) = request else { return Ok(()) };
        let r = rt.block_on(testkit::send(&router, request));
        match r.status.as_u16() {
            200 => {
                if junk.is_none() {
                    let expected = expected_page(&pairs);
                    let (limit, after) = expected.expect("accepted what the model refuses");
                    prop_assert_eq!(r.text, format!("{limit} {after:?}"));
                }
            }
            422 => {
                check_problem(&r, 422)?;
                prop_assert!(junk.is_some() || expected_page(&pairs).is_none(), "refused {:?}: {}", pairs, r.text);
                for error in r.json["errors"].as_array().unwrap() {
                    let code = error["code"].as_str().unwrap();
                    prop_assert!(["invalid_query", "out_of_range", "invalid_cursor"].contains(&code), "{}", r.text);
                }
            }
            other => prop_assert!(false, "{other}: {}", r.text),
        }
    });
}

/// A list's parameters as they were written before `PageParams` was embedded: its own `limit`
/// and `cursor` beside a filter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InlineListParams {
    limit: Option<u32>,
    cursor: Option<String>,
    #[serde(rename = "q")]
    _q: Option<String>,
}

/// The same list's parameters with `PageParams` embedded, as the list parameters write it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddedListParams {
    #[serde(flatten)]
    page: PageParams,
    #[serde(rename = "q")]
    _q: Option<String>,
}

async fn inline_list_route(Params(p): Params<InlineListParams>) -> Result<String, ApiError> {
    let page = PageParams {
        limit: p.limit,
        cursor: p.cursor,
    };
    list_route(Params(page)).await
}

async fn embedded_list_route(Params(p): Params<EmbeddedListParams>) -> Result<String, ApiError> {
    list_route(Params(p.page)).await
}

/// Embedding `PageParams` (`#[serde(flatten)]`, which hands the query's values over as text)
/// changes no answer to a query of known parameters, each given once: a limit parses, a bad
/// one is the same problem, word for word. Unknown or repeated ones are still refused (422
/// `invalid_query`).
#[test]
fn an_embedded_page_answers_as_its_own_limit_and_cursor_did() {
    let rt = runtime();
    let inline = finish(Router::new().route("/list", get(inline_list_route)));
    let embedded = finish(Router::new().route("/list", get(embedded_list_route)));
    let names = prop_oneof![
        4 => Just("limit".to_owned()),
        4 => Just("cursor".to_owned()),
        1 => Just("q".to_owned()),
        1 => "[a-z]{1,6}",
    ];
    let values = prop_oneof![
        (0u32..=102).prop_map(|n| n.to_string()),
        "[0-9+ -]{0,12}",
        any::<u64>().prop_map(|n| n.to_string()),
        any::<String>(),
        (timestamp(), uuid()).prop_map(|(t, i)| Key::TimeId(t, i).cursor().as_str().to_owned()),
    ];
    proptest!(cases(256), |(pairs in vec((names, values), 0..4))| {
        let query: Vec<String> =
            pairs.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect();
        let request = |query: &str| Request::builder().uri(format!("/list?{query}")).body(Body::empty()).unwrap();
        let query = query.join("&");
        let before = rt.block_on(testkit::send(&inline, request(&query)));
        let after = rt.block_on(testkit::send(&embedded, request(&query)));
        prop_assert_eq!(before.status, after.status, "{}: {} / {}", query, before.text, after.text);
        let unknown = pairs.iter().any(|(k, _)| !["limit", "cursor", "q"].contains(&k.as_str()));
        let repeated = pairs.iter().enumerate().any(|(i, (k, _))| pairs.iter().skip(i + 1).any(|(o, _)| o == k));
        if unknown || repeated {
            // Refused as before. An unknown name is now the problem's field (the message no
            // longer starts with the path, which left the field empty) and the known ones are no
            // longer listed; with two faults, the embedding struct's own is named first.
            prop_assert_eq!(&before.json["errors"][0]["code"], &after.json["errors"][0]["code"]);
        } else {
            prop_assert_eq!(before.text, after.text, "{}", query);
        }
    });
    // A bad limit, spelled out.
    let r = rt.block_on(testkit::send(
        &embedded,
        Request::builder().uri("/list?limit=ten").body(Body::empty()).unwrap(),
    ));
    check_problem(&r, 422).unwrap();
    assert_eq!(r.json["errors"][0]["code"], "invalid_query");
    assert_eq!(r.json["errors"][0]["message"], "limit: invalid digit found in string");
    let r = rt.block_on(testkit::send(
        &embedded,
        Request::builder().uri("/list?limit=7").body(Body::empty()).unwrap(),
    ));
    assert_eq!(r.text, "7 None");
}

// ---------------------------------------------------------------------------------------------
// 2. JSON bodies
// ---------------------------------------------------------------------------------------------

/// A small request DTO like the functions' ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewContact {
    name: String,
    email: Option<String>,
    age: u8,
    tags: Vec<String>,
    address: Address,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Address {
    city: String,
    zip: Option<u32>,
}

const CONTACT_FIELDS: [&str; 5] = ["name", "email", "age", "tags", "address"];
const REQUIRED_CONTACT_FIELDS: [&str; 4] = ["name", "age", "tags", "address"];
const BODY_CODES: [&str; 4] = ["required", "malformed_json", "unknown_field", "invalid_value"];

fn arb_contact() -> impl Strategy<Value = NewContact> {
    (
        any::<String>(),
        proptest::option::of(any::<String>()),
        any::<u8>(),
        vec(any::<String>(), 0..4),
        any::<String>(),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(name, email, age, tags, city, zip)| NewContact {
            name,
            email,
            age,
            tags,
            address: Address { city, zip },
        })
}

/// JSON whitespace.
fn ws() -> impl Strategy<Value = String> {
    "[ \t\n\r]{0,3}"
}

/// A JSON object with these members in this order, `ws` around every token.
fn render(members: &[(String, Value)], ws: &str) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{ws}{}{ws}:{ws}{v}{ws}", Value::String(k.clone())))
        .collect();
    format!("{{{}}}", members.join(","))
}

fn members(value: &Value) -> Vec<(String, Value)> {
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A contact and its members in a random order.
fn shuffled_contact() -> impl Strategy<Value = (NewContact, Vec<(String, Value)>)> {
    arb_contact().prop_flat_map(|contact| {
        let members = members(&serde_json::to_value(&contact).unwrap());
        (Just(contact), Just(members).prop_shuffle())
    })
}

/// A field name the DTO does not have.
fn foreign_field(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z_]{1,8}",
        Just(String::new()),
        Just(".".to_owned()),
        Just("`".to_owned())
    ]
    .prop_filter("not a known field", move |f| !known.contains(&f.as_str()))
}

/// Bytes that are nearly a valid body: one byte flipped, inserted or removed, or cut short.
fn mutated_body() -> impl Strategy<Value = Vec<u8>> {
    (arb_contact(), any::<prop::sample::Index>(), any::<u8>(), 0u8..4).prop_map(|(contact, at, byte, how)| {
        let mut raw = serde_json::to_vec(&contact).unwrap();
        let i = at.index(raw.len());
        match how {
            0 => raw[i] = byte,
            1 => raw.insert(i, byte),
            2 => {
                raw.remove(i);
            }
            _ => raw.truncate(i),
        }
        raw
    })
}

fn deep_nesting() -> impl Strategy<Value = Vec<u8>> {
    (
        1usize..3000,
        prop_oneof![Just("["), Just("{\"a\":"), Just("{\"name\":[")],
    )
        .prop_map(|(n, open)| open.repeat(n).into_bytes())
}

fn assert_one_known_error(errors: &[FieldError]) -> Result<(), TestCaseError> {
    prop_assert_eq!(errors.len(), 1, "{:?}", errors);
    prop_assert!(BODY_CODES.contains(&errors[0].code.as_str()), "{:?}", errors);
    prop_assert!(!errors[0].message.contains(" at line "), "{:?}", errors);
    Ok(())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn parse_json_answers_any_bytes_with_one_known_error(
        raw in prop_oneof![vec(any::<u8>(), 0..200), mutated_body(), deep_nesting(), "[ \t\n\r]{0,4}".prop_map(String::into_bytes)]
    ) {
        match parse_json::<NewContact>(&raw) {
            Ok(contact) => {
                // Anything accepted is a contact that serialises back to an equal one.
                let again = serde_json::to_vec(&contact).unwrap();
                prop_assert_eq!(parse_json::<NewContact>(&again).unwrap(), contact);
            }
            Err(errors) => {
                assert_one_known_error(&errors)?;
                if raw.iter().all(u8::is_ascii_whitespace) {
                    prop_assert_eq!(errors[0].code.as_str(), "required");
                    prop_assert_eq!(errors[0].field.as_str(), "");
                }
            }
        }
        if let Err(errors) = parse_json::<Value>(&raw) {
            assert_one_known_error(&errors)?;
        }
    }

    #[test]
    fn parse_json_reads_back_every_serialisation(
        (contact, members) in shuffled_contact(),
        ws in ws(),
        before in ws(),
        after in ws(),
    ) {
        let text = format!("{before}{}{after}", render(&members, &ws));
        prop_assert_eq!(parse_json::<NewContact>(text.as_bytes()).unwrap(), contact.clone());
        prop_assert_eq!(parse_json::<NewContact>(&serde_json::to_vec_pretty(&contact).unwrap()).unwrap(), contact);
    }

    #[test]
    fn trailing_data_after_a_body_is_malformed(contact in arb_contact(), tail in "[ \t\n\r]{0,2}[^ \t\n\r]{1,8}") {
        let mut raw = serde_json::to_vec(&contact).unwrap();
        raw.extend_from_slice(tail.as_bytes());
        let errors = parse_json::<NewContact>(&raw).unwrap_err();
        assert_one_known_error(&errors)?;
        prop_assert_eq!(errors[0].code.as_str(), "malformed_json");
    }

    #[test]
    fn an_extra_field_is_an_unknown_field_naming_it(
        (_contact, mut members) in shuffled_contact(),
        name in foreign_field(&CONTACT_FIELDS),
        value in arb_json(),
        at in any::<prop::sample::Index>(),
        ws in ws(),
    ) {
        members.insert(at.index(members.len() + 1), (name.clone(), value));
        let errors = parse_json::<NewContact>(render(&members, &ws).as_bytes()).unwrap_err();
        prop_assert_eq!(errors.len(), 1);
        prop_assert_eq!(errors[0].code.as_str(), "unknown_field", "{:?}", errors);
        prop_assert_eq!(&errors[0].field, &name);
    }

    #[test]
    fn an_extra_nested_field_is_named_by_its_path(
        contact in arb_contact(),
        name in foreign_field(&["city", "zip"]),
        value in arb_json(),
    ) {
        let mut doc = serde_json::to_value(&contact).unwrap();
        doc["address"].as_object_mut().unwrap().insert(name.clone(), value);
        let errors = parse_json::<NewContact>(doc.to_string().as_bytes()).unwrap_err();
        prop_assert_eq!(errors[0].code.as_str(), "unknown_field", "{:?}", errors);
        prop_assert_eq!(&errors[0].field, &format!("address.{name}"));
    }

    #[test]
    fn a_missing_field_is_required_naming_it(contact in arb_contact(), which in 0usize..5) {
        let mut doc = serde_json::to_value(&contact).unwrap();
        let (field, path) = match which {
            4 => ("city", "address.city"),
            i => (REQUIRED_CONTACT_FIELDS[i], REQUIRED_CONTACT_FIELDS[i]),
        };
        if which == 4 {
            doc["address"].as_object_mut().unwrap().remove(field);
        } else {
            doc.as_object_mut().unwrap().remove(field);
        }
        let errors = parse_json::<NewContact>(doc.to_string().as_bytes()).unwrap_err();
        prop_assert_eq!(errors.len(), 1);
        prop_assert_eq!(errors[0].code.as_str(), "required", "{:?}", errors);
        prop_assert_eq!(errors[0].field.as_str(), path);
    }

    #[test]
    fn a_value_of_the_wrong_type_is_invalid_naming_its_field(
        contact in arb_contact(),
        which in 0usize..4,
        value in arb_json(),
    ) {
        let field = REQUIRED_CONTACT_FIELDS[which];
        let fits = match field {
            "name" => value.is_string(),
            "age" => value.as_u64().is_some_and(|n| n <= 255),
            "tags" => value.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            // Arrays are read positionally (see `a_json_array_is_not_an_object_body`).
            _ => value.is_array() || serde_json::from_value::<Address>(value.clone()).is_ok(),
        };
        if fits {
            return Ok(());
        }
        let mut doc = serde_json::to_value(&contact).unwrap();
        doc[field] = value;
        let errors = parse_json::<NewContact>(doc.to_string().as_bytes()).unwrap_err();
        prop_assert_eq!(errors.len(), 1);
        // An object in `address` may be refused for its own members (missing or unknown).
        prop_assert!(BODY_CODES[1..].contains(&errors[0].code.as_str()) || field == "address", "{:?}", errors);
        prop_assert!(errors[0].field.starts_with(field), "{:?}", errors);
    }

    /// A repeated member is refused, never resolved first- or last-wins (no parser
    /// differential between us and whatever validated the body before us).
    #[test]
    fn a_repeated_field_is_refused(
        (_contact, mut members) in shuffled_contact(),
        which in any::<prop::sample::Index>(),
        value in arb_json(),
        at in any::<prop::sample::Index>(),
    ) {
        let name = members[which.index(members.len())].0.clone();
        members.insert(at.index(members.len() + 1), (name, value));
        let errors = parse_json::<NewContact>(render(&members, "").as_bytes()).unwrap_err();
        assert_one_known_error(&errors)?;
    }
}

/// A repeated member is refused and named, like an unknown or a missing one.
#[test]
fn a_repeated_field_is_named_in_the_error() {
    let top = br#"{"name":"a","name":"b","age":1,"tags":[],"address":{"city":"x"}}"#;
    let nested = br#"{"name":"a","age":1,"tags":[],"address":{"city":"x","city":"y"}}"#;
    assert_eq!(parse_json::<NewContact>(top).unwrap_err()[0].field, "name");
    assert_eq!(parse_json::<NewContact>(nested).unwrap_err()[0].field, "address.city");
}

/// serde's derive also reads a struct from a JSON array, by position; a body must be an
/// object (member names are what `deny_unknown_fields` checks), and a misshapen member is
/// named, not reported as malformed JSON of the whole body.
#[test]
fn a_json_array_is_not_an_object_body() {
    let positional = br#"["a",null,1,[],["x",null]]"#;
    let errors = parse_json::<NewContact>(positional).unwrap_err();
    assert_eq!(errors[0].code, "invalid_value");
    // And one element too many in a positional member is misreported as malformed JSON of the
    // whole body (actual: field "", code malformed_json, "trailing characters").
    let nested = br#"{"name":"a","age":1,"tags":[],"address":["x",null,null]}"#;
    let errors = parse_json::<NewContact>(nested).unwrap_err();
    assert_eq!(
        (errors[0].field.as_str(), errors[0].code.as_str()),
        ("address", "invalid_value")
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Emails, text, the validator
// ---------------------------------------------------------------------------------------------

/// Things shaped like email addresses, often valid, often just not.
fn email_like() -> impl Strategy<Value = String> {
    let local = prop_oneof![
        "[A-Za-z0-9._+-]{1,20}",
        "[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,70}",
        "[ -~]{0,10}",
    ];
    let label = prop_oneof![4 => "[A-Za-z0-9-]{1,20}", 1 => "[A-Za-z0-9]{60,66}", 1 => "[ -~]{0,5}"];
    let domain = vec(label, 1..6).prop_map(|labels| labels.join("."));
    let pad = "[ \t\n\u{a0}\u{3000}]{0,2}";
    (pad, local, domain, pad).prop_map(|(a, l, d, b)| format!("{a}{l}@{d}{b}"))
}

fn with_char_inserted(base: BoxedStrategy<String>) -> impl Strategy<Value = String> {
    (base, any::<prop::sample::Index>(), any::<char>()).prop_map(|(s, at, c)| {
        let chars: Vec<char> = s.chars().collect();
        let i = at.index(chars.len() + 1);
        chars[..i]
            .iter()
            .chain(std::iter::once(&c))
            .chain(chars[i..].iter())
            .collect()
    })
}

fn raw_email() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        email_like(),
        email_like(),
        with_char_inserted(email_like().boxed()),
        "[a-z]{50,64}@[a-z]{50,63}\\.[a-z]{50,63}\\.[a-z]{1,63}\\.[a-z]{1,63}",
    ]
}

/// Text with whitespace of all kinds, control characters, format characters and non-ASCII.
fn raw_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \t\n\r\u{0}-\u{8}\u{7f}\u{85}\u{a0}\u{2028}\u{3000}aZ\u{e9}\u{6f22}\u{1f600}\u{200b}\u{202e}]{0,30}",
        "[a-z\u{e9} ]{0,30}",
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn email_parse_accepts_only_trimmed_single_at_bounded_idempotent_addresses(raw in raw_email()) {
        let trimmed = raw.trim();
        match Email::parse(&raw) {
            Ok(email) => {
                let s = email.as_str();
                prop_assert_eq!(s, s.trim());
                prop_assert_eq!(s.matches('@').count(), 1);
                prop_assert!(s.len() <= Email::MAX_LEN);
                prop_assert!(s.is_ascii());
                prop_assert_eq!(Email::parse(s).unwrap(), email.clone());
                // Only the domain's case changes.
                let (local, domain) = s.split_once('@').unwrap();
                let (raw_local, raw_domain) = trimmed.split_once('@').unwrap();
                prop_assert_eq!(local, raw_local);
                prop_assert_eq!(domain, raw_domain.to_ascii_lowercase());
                prop_assert!(email.same_as(&raw));
            }
            Err(issue) => {
                let expected = if trimmed.is_empty() {
                    "required"
                } else if trimmed.len() > Email::MAX_LEN {
                    "too_long"
                } else {
                    "invalid_email"
                };
                prop_assert_eq!(issue.code, expected);
            }
        }
    }

    #[test]
    fn text_parse_respects_its_bounds_in_characters(raw in raw_text(), min in 0usize..8, extra in 0usize..12) {
        let max = min + extra;
        let trimmed = raw.trim();
        let len = trimmed.chars().count();
        // Too long as sent (white space around counts, as `maxLength` does), then the trimmed
        // text's bounds.
        let expected = if raw.chars().count() > max {
            Err("too_long")
        } else if len < min {
            Err(if len == 0 { "required" } else { "too_short" })
        } else if len > max {
            Err("too_long")
        } else if trimmed.chars().any(char::is_control) {
            Err("invalid_characters")
        } else {
            Ok(trimmed)
        };
        match Text::parse(&raw, min, max) {
            Ok(text) => {
                prop_assert_eq!(Ok(text.as_str()), expected);
                prop_assert!((min..=max).contains(&text.as_str().chars().count()));
                prop_assert!(!text.as_str().chars().any(char::is_control));
                prop_assert_eq!(Text::parse(text.as_str(), min, max).unwrap(), text);
            }
            Err(issue) => prop_assert_eq!(Err(issue.code), expected),
        }
    }

    #[test]
    fn validator_reports_every_failing_field_in_order(
        fields in vec(("[a-z_.\\[\\]0-9]{0,12}", proptest::option::of(("[a-z_]{1,12}", any::<String>()))), 0..8)
    ) {
        let mut v = Validator::new();
        let mut expected = Vec::new();
        for (field, problem) in &fields {
            match problem {
                None => prop_assert_eq!(v.field(field, Ok::<_, shared::domain::validate::Issue>(1)), Some(1)),
                Some((code, message)) => {
                    let code: &'static str = Box::leak(code.clone().into_boxed_str());
                    let issue = shared::domain::validate::Issue::new(code, message.clone());
                    prop_assert_eq!(v.field::<u8>(field, Err(issue)), None);
                    expected.push(FieldError::new(field, code, message.clone()));
                }
            }
        }
        match v.finish() {
            Ok(()) => prop_assert!(expected.is_empty()),
            Err(DomainError::Invalid(errors)) => prop_assert_eq!(errors, expected),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. API keys and idempotency keys
// ---------------------------------------------------------------------------------------------

#[test]
fn every_new_api_key_looks_like_an_api_key() {
    let mut seen = HashSet::new();
    for _ in 0..500 {
        let key = new_api_key().unwrap();
        assert!(looks_like_api_key(&key.token), "{}", key.token);
        assert_eq!(key.token.len(), 3 + 8 + 1 + 32);
        assert_eq!(key.prefix.len(), 8);
        assert!(
            key.prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let secret = key.token.strip_prefix(&format!("pk_{}_", key.prefix)).unwrap();
        assert!(secret.len() == 32 && secret.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(key.hash, sha256(&key.token));
        assert_eq!(key.hash.len(), 32);
        assert!(seen.insert(key.token));
    }
}

fn key_char() -> impl Strategy<Value = char> {
    any::<char>().prop_filter("outside [A-Za-z0-9_]", |c| !(c.is_ascii_alphanumeric() || *c == '_'))
}

/// Keys as clients send them in `Idempotency-Key`, and strings that are not.
fn raw_idempotency_key() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,12}",
        "[!-~]{1,40}",
        "[!-~]{250,260}",
        "[\u{0}-\u{7f}]{0,20}",
        Just(Uuid::nil().to_string()),
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn a_string_with_any_foreign_char_never_looks_like_an_api_key(
        before in "(pk_)?[A-Za-z0-9_]{0,40}",
        bad in prop_oneof![key_char(), prop::sample::select(vec!['-', '.', '/', ' ', '\0', '\u{e9}', '\u{ff50}', '\u{663}', '='])],
        after in prop_oneof!["[A-Za-z0-9_]{0,40}", any::<String>()],
    ) {
        let s = format!("{before}{bad}{after}");
        prop_assert!(!looks_like_api_key(&s), "{:?}", s);
    }

    /// Known by construction (not by re-deriving the rule): `pk_` and up to 125 word
    /// characters look like a key; a longer one, or one without the prefix, does not.
    #[test]
    fn api_key_shape_is_pk_then_word_chars_up_to_128(
        rest in "[A-Za-z0-9_]{0,125}",
        long in "[A-Za-z0-9_]{126,200}",
        other_prefix in prop_oneof!["[A-Za-z0-9_]{0,2}", "(PK_|pk-|Pk_|p_k|_pk)[A-Za-z0-9_]{0,20}"],
    ) {
        let good = format!("pk_{rest}");
        prop_assert!(looks_like_api_key(&good), "{:?}", good);
        let too_long = format!("pk_{long}");
        prop_assert!(!looks_like_api_key(&too_long), "{} characters", too_long.len());
        prop_assert!(!looks_like_api_key(&other_prefix), "{:?}", other_prefix);
        let prefixed = format!("{other_prefix}pk_{rest}");
        prop_assert!(other_prefix.is_empty() || !looks_like_api_key(&prefixed), "{:?}", prefixed);
    }

    #[test]
    fn idempotency_key_accepts_exactly_1_to_255_visible_ascii(
        key in raw_idempotency_key(),
        operation in "[ -~]{0,30}",
        body in vec(any::<u8>(), 0..64),
    ) {
        let valid = !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| (0x21..=0x7e).contains(&b));
        match IdempotencyKey::new(&key, &operation, &body) {
            Ok(k) => {
                prop_assert!(valid, "{:?}", key);
                prop_assert_eq!(&k.key, &key);
                prop_assert_eq!(k.request_hash.len(), 32);
            }
            Err(DomainError::Invalid(errors)) => {
                prop_assert!(!valid, "{:?}", key);
                prop_assert_eq!(errors.len(), 1);
                prop_assert_eq!(errors[0].field.as_str(), "Idempotency-Key");
                prop_assert_eq!(errors[0].code.as_str(), "invalid_idempotency_key");
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn idempotency_fingerprint_is_the_request_and_only_the_request(
        key in "[!-~]{1,40}",
        other_key in "[!-~]{1,40}",
        operation in "[ -~]{0,30}",
        other_operation in "[ -~]{0,30}",
        body in vec(any::<u8>(), 0..64),
        other_body in vec(any::<u8>(), 0..64),
        flip in any::<prop::sample::Index>(),
    ) {
        let hash = |k: &str, o: &str, b: &[u8]| IdempotencyKey::new(k, o, b).unwrap().request_hash;
        // The same request gives the same fingerprint, whatever key it is sent with.
        prop_assert_eq!(hash(&key, &operation, &body), hash(&key, &operation, &body));
        prop_assert_eq!(hash(&key, &operation, &body), hash(&other_key, &operation, &body));
        // A different body (arbitrary, or one byte changed, or one byte longer) differs.
        if other_body != body {
            prop_assert_ne!(hash(&key, &operation, &body), hash(&key, &operation, &other_body));
        }
        let mut changed = body.clone();
        match changed.len() {
            0 => changed.push(0),
            n => changed[flip.index(n)] ^= 0x01,
        }
        prop_assert_ne!(hash(&key, &operation, &body), hash(&key, &operation, &changed));
        let mut longer = body.clone();
        longer.push(0);
        prop_assert_ne!(hash(&key, &operation, &body), hash(&key, &operation, &longer));
        // A different route (route names hold no NUL) differs too.
        if other_operation != operation {
            prop_assert_ne!(hash(&key, &operation, &body), hash(&key, &other_operation, &body));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. The request context, end to end through a router, with no database behind it
// ---------------------------------------------------------------------------------------------

/// A database that is not there and fails at once (a socket directory that does not exist).
const NO_DATABASE: &str = "postgres://nobody:x@%2Fnonexistent-portal-socket-dir/none";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `Core` as `main` builds it, pointed at `database_url`. Call inside the runtime.
fn core(database_url: &str) -> Core {
    let config = testkit::test_config(database_url.to_owned());
    let db = shared::adapters::pg::pool(database_url, 1).unwrap();
    Core {
        auth: Arc::new(Authenticator::new(&config.jwt, db.clone())),
        db,
        config: Arc::new(config),
    }
}

async fn tenant_route(ctx: TenantCtx<min::Viewer>) -> String {
    ctx.tenant_id.to_string()
}

async fn me_route(auth: Authed) -> String {
    auth.scope.actor.principal()
}

fn ctx_router(core: Core) -> Router {
    finish(
        Router::new()
            .route("/tenant", get(tenant_route))
            .route("/me", get(me_route))
            .with_state(core),
    )
}

/// An `Authorization` header, and whether it carries a token our test key signed that should
/// pass verification (those reach the database: 503).
#[derive(Debug, Clone)]
struct Credential {
    header: Option<Vec<u8>>,
    verifiable: bool,
}

impl Credential {
    fn raw(header: Vec<u8>) -> Self {
        Self {
            header: Some(header),
            verifiable: false,
        }
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `a.b.c` tokens whose header and payload are JSON (often plausibly so), signature random.
fn jwt_shaped() -> impl Strategy<Value = String> {
    let alg = prop_oneof![
        prop::sample::select(vec!["RS256", "HS256", "none", "ES256", "RS512", "PS256", "", "rs256"])
            .prop_map(str::to_owned),
        "[ -~]{0,8}",
    ];
    let kid = proptest::option::of(prop_oneof![Just(testkit::KID.to_owned()), "[ -~]{0,12}"]);
    let header = (alg, kid, any::<bool>()).prop_map(|(alg, kid, typ)| {
        let mut h = json!({ "alg": alg });
        if let Some(kid) = kid {
            h["kid"] = json!(kid);
        }
        if typ {
            h["typ"] = json!("JWT");
        }
        h
    });
    let claims = (
        any::<String>(),
        any::<i64>(),
        prop::sample::select(vec![testkit::ISSUER, "x"]),
        prop::sample::select(vec![testkit::AUDIENCE, "y"]),
    )
        .prop_map(|(sub, exp, iss, aud)| json!({ "sub": sub, "exp": exp, "iss": iss, "aud": aud }));
    let payload = prop_oneof![claims, arb_json()];
    let signature = prop_oneof![
        Just(String::new()),
        vec(any::<u8>(), 0..300).prop_map(b64),
        "[A-Za-z0-9_=+/-]{0,40}"
    ];
    prop_oneof![
        4 => (header, payload, signature).prop_map(|(h, p, s)| format!("{}.{}.{s}", b64(h.to_string()), b64(p.to_string()))),
        1 => "[A-Za-z0-9_=-]{0,40}\\.[A-Za-z0-9_=-]{0,40}\\.[A-Za-z0-9_=-]{0,40}",
        1 => "[A-Za-z0-9_.-]{0,60}",
    ]
}

/// Tokens signed with the test key: valid ones (which reach the database), and ones refused for
/// their subject, expiry, issuer or audience.
fn signed_token() -> impl Strategy<Value = (String, bool)> {
    (
        prop_oneof![4 => "[ -~]{1,40}", 1 => Just(String::new()), 1 => "[a-z]{256,260}"],
        prop::sample::select(vec![3600_i64, 10, -10, -3600]),
        prop::sample::select(vec![
            (testkit::ISSUER, testkit::AUDIENCE),
            ("https://evil.test", testkit::AUDIENCE),
            (testkit::ISSUER, "other-api"),
        ]),
    )
        .prop_map(|(sub, ttl, (iss, aud))| {
            let now = Utc::now().timestamp();
            let token = testkit::sign(&json!({
                "sub": sub, "email": "p@example.test", "iss": iss, "aud": aud, "iat": now, "exp": now + ttl,
            }));
            // 30 s of leeway on expiry.
            let ok =
                !sub.is_empty() && sub.len() <= 255 && ttl > -30 && iss == testkit::ISSUER && aud == testkit::AUDIENCE;
            (token, ok)
        })
}

fn credential() -> impl Strategy<Value = Credential> {
    let scheme = prop_oneof![
        prop::sample::select(vec![
            "Bearer", "bearer", "BEARER", "BeArEr", "Basic", "Bearer:", "Token", ""
        ])
        .prop_map(str::to_owned),
        "[A-Za-z]{0,8}",
    ];
    let sep = prop::sample::select(vec![" ", "  ", "\t", "", " \t"]);
    let token = prop_oneof![
        "[ -~]{0,80}",
        jwt_shaped(),
        "pk_[A-Za-z0-9_]{0,60}",
        "pk_[ -~]{0,40}",
        "[ \t]{0,3}",
        Just(testkit::DEMO_API_KEY.to_owned()),
    ];
    let pad = "[ \t]{0,2}";
    prop_oneof![
        1 => Just(Credential { header: None, verifiable: false }),
        2 => header_bytes(100).prop_map(Credential::raw),
        2 => "[ -~]{0,100}".prop_map(|s| Credential::raw(s.into_bytes())),
        2 => ("Bearer ", header_bytes(80)).prop_map(|(b, rest)| Credential::raw([b.as_bytes(), &rest].concat())),
        8 => (scheme, sep, token, pad).prop_map(|(scheme, sep, token, pad)| Credential::raw(format!("{scheme}{sep}{token}{pad}").into_bytes())),
        3 => "[ \t]{0,2}pk_[A-Za-z0-9_]{0,60}[ \t]{0,2}".prop_map(|k| Credential::raw(format!("Bearer {k}").into_bytes())),
        3 => (signed_token(), pad).prop_map(|((token, ok), pad)| Credential {
            header: Some(format!("Bearer {token}{pad}").into_bytes()),
            verifiable: ok,
        }),
    ]
}

/// The status the documented rules give for this credential when no database is reachable.
fn expected_status(credential: &Credential) -> u16 {
    let Some(bytes) = &credential.header else {
        return 401;
    };
    let Ok(value) = HeaderValue::from_bytes(bytes) else {
        unreachable!("generated a bad header")
    };
    let Ok(text) = value.to_str() else { return 401 };
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                401
            } else if looks_like_api_key(token) || credential.verifiable {
                503
            } else {
                401
            }
        }
        _ => 401,
    }
}

fn tenant_header() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(prop_oneof![
        uuid().prop_map(|u| u.to_string().into_bytes()),
        uuid().prop_map(|u| format!(" {} ", u.simple()).into_bytes()),
        Just(testkit::DEMO_TENANT.as_bytes().to_vec()),
        "[ -~]{0,50}".prop_map(String::into_bytes),
        header_bytes(40),
    ])
}

fn request_id_header() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof!["[A-Za-z0-9-]{1,64}", "[ -~]{0,80}", "[A-Za-z0-9-]{65,70}"])
}

fn sane_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn build_request(path: &str, auth: &Credential, tenant: Option<&[u8]>, request_id: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method("GET").uri(path);
    if let Some(a) = &auth.header {
        b = b.header(AUTHORIZATION, HeaderValue::from_bytes(a).unwrap());
    }
    if let Some(t) = tenant {
        b = b.header("x-tenant-id", HeaderValue::from_bytes(t).unwrap());
    }
    if let Some(r) = request_id {
        b = b.header("x-request-id", HeaderValue::from_str(r).unwrap());
    }
    b.body(Body::empty()).unwrap()
}

fn check_problem(r: &testkit::Resp, status: u16) -> Result<(), TestCaseError> {
    prop_assert_eq!(r.status.as_u16(), status, "body: {}", r.text);
    prop_assert_eq!(r.content_type(), "application/problem+json");
    prop_assert_eq!(&r.json["status"], &json!(status));
    prop_assert!(
        r.json["type"].as_str().is_some_and(|t| t.starts_with("/problems/")),
        "{}",
        r.text
    );
    prop_assert!(r.json["title"].is_string());
    if status == 401 {
        prop_assert_eq!(
            r.headers.get("www-authenticate").and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }
    if status >= 500 {
        // Nothing internal: the fixed title and detail only.
        prop_assert_eq!(&r.json["detail"], &json!("try again shortly"), "{}", r.text);
    }
    Ok(())
}

#[test]
fn request_context_refuses_every_credential_without_a_database() {
    let rt = runtime();
    let router = {
        let _inside = rt.enter();
        ctx_router(core(NO_DATABASE))
    };
    proptest!(cases(384), |(
        path in prop::sample::select(vec!["/tenant", "/me", "/tenant", "/me", "/nowhere"]),
        auth in credential(),
        tenant in tenant_header(),
        request_id in request_id_header(),
    )| {
        let request = build_request(path, &auth, tenant.as_deref(), request_id.as_deref());
        let r = rt.block_on(testkit::send(&router, request));
        let status = r.status.as_u16();
        prop_assert!(!r.status.is_success() && (status < 500 || status == 503), "{status}: {}", r.text);
        prop_assert!([400, 401, 404, 503].contains(&status), "{status}: {}", r.text);
        let expected = if path == "/nowhere" { 404 } else { expected_status(&auth) };
        check_problem(&r, expected)?;
        let echoed = r.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
        prop_assert!(sane_request_id(echoed), "{:?}", echoed);
        if let Some(sent) = request_id.as_deref().filter(|id| sane_request_id(id)) {
            prop_assert_eq!(echoed, sent);
        }
    });
}

/// The documented case with the documented pool: an API key with the database down is a 503,
/// after the pool's acquire timeout (5 s: the connection is refused and retried until then).
#[test]
fn an_api_key_with_the_database_down_is_503() {
    let rt = runtime();
    let router = {
        let _inside = rt.enter();
        ctx_router(core("postgres://nobody:x@127.0.0.1:1/none"))
    };
    let auth = Credential::raw(format!("Bearer {}", testkit::DEMO_API_KEY).into_bytes());
    let tenant = testkit::DEMO_TENANT.as_bytes();
    let (tenant_route, me_route) = rt.block_on(async {
        tokio::join!(
            testkit::send(&router, build_request("/tenant", &auth, Some(tenant), None)),
            testkit::send(&router, build_request("/me", &auth, None, None)),
        )
    });
    check_problem(&tenant_route, 503).unwrap();
    check_problem(&me_route, 503).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 6. If-Match
// ---------------------------------------------------------------------------------------------

async fn if_match_route(IfMatch(version): IfMatch) -> String {
    format!("{version:?}")
}

fn if_match_value() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(prop_oneof![
        (0..=i32::MAX).prop_map(|v| etag(v).1.into_bytes()),
        any::<i32>().prop_map(|v| etag(v).1.into_bytes()),
        (0..=i32::MAX).prop_map(|v| format!("W/{}", etag(v).1).into_bytes()),
        (0..=i32::MAX).prop_map(|v| format!(" {} ", etag(v).1).into_bytes()),
        Just(b"*".to_vec()),
        Just(b" * ".to_vec()),
        "[ -~]{0,20}".prop_map(String::into_bytes),
        "(W/)?\"?[0-9+-]{0,12}\"?".prop_map(String::into_bytes),
        header_bytes(20),
    ])
}

/// The version an `If-Match` value names when it is shaped like our ETags (`"3"`, `W/"3"`,
/// whitespace around), `Some(None)` for `*`, `None` when it is not an ETag of ours: only the
/// digits we write — no sign, no leading zero (`"+0"` and `"03"` are refused: see
/// `if_match_refuses_tags_we_never_issue`).
fn etag_version(header: &str) -> Option<Option<i32>> {
    let header = header.trim();
    if header == "*" {
        return Some(None);
    }
    let tag = header.strip_prefix("W/").unwrap_or(header);
    let digits = tag.strip_prefix('"')?.strip_suffix('"')?;
    let ours = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    if !ours {
        return None;
    }
    digits.parse::<i32>().ok().map(Some)
}

#[test]
fn if_match_reads_our_etags_and_refuses_anything_else_with_422() {
    let rt = runtime();
    let router = finish(Router::new().route("/v", get(if_match_route)));
    proptest!(cases(384), |(value in if_match_value())| {
        let mut b = Request::builder().method("GET").uri("/v");
        if let Some(v) = &value {
            b = b.header(IF_MATCH, HeaderValue::from_bytes(v).unwrap());
        }
        let r = rt.block_on(testkit::send(&router, b.body(Body::empty()).unwrap()));
        // What the extractor sees: absent (no check), not visible ASCII, or the text.
        let expected = match value.as_deref().map(|v| HeaderValue::from_bytes(v).unwrap()) {
            None => Some(None),
            Some(v) => v.to_str().ok().and_then(etag_version),
        };
        match expected {
            Some(version) => {
                prop_assert_eq!(r.status.as_u16(), 200, "{:?}: {}", value, r.text);
                prop_assert_eq!(r.text, format!("{version:?}"));
            }
            None => {
                check_problem(&r, 422)?;
                prop_assert_eq!(&r.json["errors"][0]["field"], "If-Match");
                prop_assert_eq!(&r.json["errors"][0]["code"], "invalid_etag");
            }
        }
    });
    // Every ETag we hand out (versions are never negative) reads back as its version.
    proptest!(cases(128), |(v in 0..=i32::MAX)| {
        let request = Request::builder().uri("/v").header(IF_MATCH, etag(v).1).body(Body::empty()).unwrap();
        let r = rt.block_on(testkit::send(&router, request));
        prop_assert_eq!(r.text, format!("Some({v})"));
    });
}

/// Found by `if_match_reads_our_etags_and_refuses_anything_else_with_422` with a strict model:
/// `IfMatch::parse` reads the tag with `i32::from_str`, which also takes a leading `+` and
/// leading zeros, so tags this API never issues are accepted as versions.
#[test]
fn if_match_refuses_tags_we_never_issue() {
    for tag in ["\"+3\"", "\"03\"", "W/\"+3\"", "\"+0\"", "\"-0\""] {
        assert!(IfMatch::parse(tag).is_err(), "{tag} was accepted");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Errors as problem+json
// ---------------------------------------------------------------------------------------------

const SLUGS: [&str; 4] = ["tenant-required", "bad_thing", "last_owner", "idempotency_in_progress"];
const WHY: [&str; 2] = [
    "send Authorization: Bearer <token or API key>",
    "the token or API key is not valid or has expired",
];

fn api_error(variant: u8, slug: usize, text: &str, errors: &[(String, String, String)]) -> ApiError {
    let secret = format!("SECRET-{text}");
    match variant {
        0 => ApiError::Unauthorized(WHY[slug % 2]),
        1 => ApiError::BadRequest {
            slug: SLUGS[slug],
            detail: text.to_owned(),
        },
        2 => ApiError::UnsupportedMediaType,
        3 => ApiError::PayloadTooLarge,
        4 => ApiError::MethodNotAllowed,
        5 => ApiError::PreconditionRequired,
        6 => ApiError::Unavailable(secret),
        7 => DomainError::NotFound.into(),
        8 => DomainError::Forbidden(text.to_owned()).into(),
        9 => DomainError::conflict(SLUGS[slug], text).into(),
        10 => DomainError::Gone(text.to_owned()).into(),
        11 => DomainError::StaleVersion.into(),
        12 => ApiError::validation(
            errors
                .iter()
                .map(|(f, c, m)| FieldError::new(f, c, m.clone()))
                .collect(),
        ),
        _ => DomainError::Internal(anyhow::anyhow!("{secret}").context(secret.clone())).into(),
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn every_error_is_problem_json_and_5xx_say_nothing_internal(
        variant in 0u8..14,
        slug in 0usize..4,
        text in any::<String>(),
        errors in vec(("[ -~]{0,12}", "[a-z_]{1,12}", any::<String>()), 0..4),
    ) {
        let status = api_error(variant, slug, &text, &errors).status();
        let problem = api_error(variant, slug, &text, &errors).problem();
        prop_assert_eq!(problem.status, status.as_u16());
        prop_assert!(problem.kind.starts_with("/problems/") && !problem.kind.contains('_'), "{}", problem.kind);
        let rt = runtime();
        let response = axum::response::IntoResponse::into_response(api_error(variant, slug, &text, &errors));
        prop_assert_eq!(response.status(), status);
        let headers = response.headers().clone();
        prop_assert_eq!(headers.get("content-type").unwrap(), "application/problem+json");
        prop_assert_eq!(headers.contains_key("www-authenticate"), status == 401);
        let body = rt.block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).unwrap();
        let json: Value = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(&json["status"], &json!(status.as_u16()));
        prop_assert_eq!(&json["type"], &json!(problem.kind));
        if status.is_server_error() {
            prop_assert!(!String::from_utf8_lossy(&body).contains("SECRET-"), "{}", String::from_utf8_lossy(&body));
        }
        if variant == 12 {
            let expected: Vec<Value> = errors.iter().map(|(f, c, m)| json!({ "field": f, "code": c, "message": m })).collect();
            prop_assert_eq!(json.get("errors").cloned().unwrap_or(json!([])), json!(expected));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Webhook signature headers (Stripe-Signature)
// ---------------------------------------------------------------------------------------------

mod stripe_signature {
    use super::*;
    use shared::domain::signature::stripe::{SignatureError, parse, sign, verify};

    fn secret() -> impl Strategy<Value = String> {
        "whsec_[A-Za-z0-9]{8,40}"
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// No header text that was not signed with the secret ever verifies, whatever it holds.
        #[test]
        fn an_unsigned_header_never_verifies(header in "[ -~]{0,200}", body in vec(any::<u8>(), 0..64)) {
            let _ = parse(&header);
            prop_assert!(verify(&header, &body, &["whsec_x"], 1_000, 300).is_err(), "{:?}", header);
        }

        /// Headers whose defect is known by construction are refused for that defect: no
        /// timestamp is malformed, a timestamp without a v1 signature has none, a v1 signature of
        /// random bytes inside the tolerance does not match, outside it the time is refused first.
        #[test]
        fn a_header_is_refused_for_what_is_wrong_with_it(
            sig in "[0-9a-f]{64}",
            other in "(v0|v2|v9)=[0-9a-f]{64}",
            skew in -300i64..=300,
            stale in 301i64..100_000,
            body in vec(any::<u8>(), 0..64),
        ) {
            let now = 1_000_000;
            let check = |h: &str| verify(h, &body, &["whsec_x"], now, 300);
            prop_assert_eq!(check(&format!("v1={sig}")), Err(SignatureError::Malformed));
            prop_assert_eq!(check(&format!("t=,v1={sig}")), Err(SignatureError::Malformed));
            prop_assert_eq!(check(&format!("t={},{other}", now + skew)), Err(SignatureError::NoV1));
            prop_assert_eq!(check(&format!("t={},v1={sig}", now + skew)), Err(SignatureError::Mismatch));
            prop_assert_eq!(check(&format!("t={},v1={sig}", now - stale)), Err(SignatureError::Timestamp));
            prop_assert_eq!(check(&format!("t={},v1={sig}", now + stale)), Err(SignatureError::Timestamp));
        }

        /// What we sign verifies for any secret, body and time inside the tolerance, in either
        /// direction; outside it, it is refused as stale or early.
        #[test]
        fn signed_bodies_verify_within_tolerance(s in secret(), body in vec(any::<u8>(), 0..512), t in 0i64..4_000_000_000, skew in -600i64..600) {
            let header = sign(&s, t, &body);
            let result = verify(&header, &body, &[s.as_str()], t + skew, 300);
            if skew.abs() <= 300 {
                prop_assert_eq!(result, Ok(t));
            } else {
                prop_assert_eq!(result, Err(SignatureError::Timestamp));
            }
        }

        /// Changing one byte of the body, or verifying with another secret, never verifies;
        /// adding the right signature among wrong ones (rotation) does.
        #[test]
        fn a_changed_body_or_secret_is_refused(s in secret(), other in secret(), body in vec(any::<u8>(), 1..256), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let header = sign(&s, 1_000, &body);
            let mut changed = body.clone();
            let i = at.index(changed.len());
            changed[i] ^= flip;
            prop_assert_eq!(verify(&header, &changed, &[s.as_str()], 1_000, 300), Err(SignatureError::Mismatch));
            if other != s {
                prop_assert_eq!(verify(&header, &body, &[other.as_str()], 1_000, 300), Err(SignatureError::Mismatch));
                let rotated = format!("{},{}", sign(&other, 1_000, &body), header.split(',').nth(1).unwrap());
                prop_assert_eq!(verify(&rotated, &body, &[s.as_str()], 1_000, 300), Ok(1_000));
            }
        }
    }
}

/// JSON Schema counts `16.0` as an integer, and so does a body: it is read as 16; a fraction
/// is still refused, naming its field.
#[test]
fn a_number_with_a_zero_fraction_is_an_integer() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Stage {
        probability: i32,
        size: u64,
        items: Vec<Item>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Item {
        n: i64,
    }
    let ok: Stage = parse_json(br#"{"probability": 16.0, "size": 238.0, "items": [{"n": -3.0}, {"n": 4}]}"#).unwrap();
    assert_eq!(
        (ok.probability, ok.size, ok.items[0].n, ok.items[1].n),
        (16, 238, -3, 4)
    );
    let err = parse_json::<Stage>(br#"{"probability": 16.5, "size": 1, "items": []}"#).unwrap_err();
    assert_eq!(err[0].field, "probability");
    let err = parse_json::<Stage>(br#"{"probability": 1.0, "size": -2.0, "items": []}"#).unwrap_err();
    assert_eq!(err[0].field, "size");
    let err = parse_json::<Stage>(br#"{"probability": 1.0, "size": 2, "items": [], "x": 1}"#).unwrap_err();
    assert_eq!(err[0].code, "unknown_field");
}
