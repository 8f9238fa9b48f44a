//! The checks contacts and companies share: optional texts, phones, tags, addresses, sources,
//! owners, and JSON merge patches (RFC 7396: a PATCH body is merged into the record's editable
//! document, then the whole result is validated as a create would be).
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::adapters::pg::Tx;
use crate::domain::validate::OptionalTextSchema;
use crate::domain::{DomainError, Text, Validator};

/// A postal address; every part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OptionalTextSchema<200>>, inline)]
    pub street: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OptionalTextSchema<200>>, inline)]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OptionalTextSchema<200>>, inline)]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OptionalTextSchema<200>>, inline)]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 (e.g. `DE`; stored in upper case); empty is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^ *([A-Za-z]{2} *)?$")]
    pub country: Option<String>,
}

pub const MAX_TAGS: usize = 50;
pub const MAX_NOTES: usize = 20_000;

/// Notes: free text over several lines (line breaks and tabs allowed, other control characters
/// not), at most 20,000 characters.
pub fn notes(v: &mut Validator, raw: &str) -> String {
    let value = raw.trim();
    if value.chars().count() > MAX_NOTES {
        v.error("notes", "too_long", format!("must be at most {MAX_NOTES} characters"));
    } else if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        v.error(
            "notes",
            "invalid_characters",
            "must not contain control characters other than line breaks and tabs",
        );
    }
    value.to_owned()
}

/// Trimmed optional text of at most `max` characters; empty is none.
pub fn optional_text(v: &mut Validator, field: &str, raw: Option<&str>, max: usize) -> Option<String> {
    let raw = raw?;
    // Blank is none; past `max` as sent (white space counted) is too long, blank or not.
    if raw.trim().is_empty() && raw.chars().count() <= max {
        return None;
    }
    v.field(field, Text::parse(raw, 1, max)).map(Text::into_inner)
}

/// Text that may be empty (names, notes).
pub fn text(v: &mut Validator, field: &str, raw: &str, max: usize) -> String {
    optional_text(v, field, Some(raw), max).unwrap_or_default()
}

/// A phone number as people write them: digits with spaces, `+ - ( ) .` and an optional
/// extension (`x123`), 4 to 40 characters, at least 4 digits.
pub fn phone(v: &mut Validator, field: &str, raw: Option<&str>) -> Option<String> {
    let value = optional_text(v, field, raw, 40)?;
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let allowed = value
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().x/".contains(c) || c == 'X');
    if !allowed || digits < 4 {
        v.error(field, "invalid_phone", "must be a phone number such as +49 30 1234567");
        return None;
    }
    Some(value)
}

/// Tags: trimmed, lower-cased, unique, 1 to 50 characters each, at most 50.
pub fn tags(v: &mut Validator, raw: &[String]) -> Vec<String> {
    labels(v, "tags", raw)
}

/// Labels (tags, categories) under `field`: trimmed, lower-cased, unique, 1 to 50 characters
/// each, at most 50.
pub fn labels(v: &mut Validator, field: &str, raw: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in raw {
        if let Some(t) = v.field(field, Text::parse(t, 1, 50)) {
            let t = t.into_inner().to_lowercase();
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    if out.len() > MAX_TAGS {
        v.error(field, "too_many", format!("at most {MAX_TAGS}"));
    }
    out
}

pub fn address(v: &mut Validator, raw: &Address) -> Address {
    let part = |v: &mut Validator, name: &str, value: &Option<String>| {
        optional_text(v, &format!("address.{name}"), value.as_deref(), 200)
    };
    let country = part(v, "country", &raw.country).map(|c| c.to_ascii_uppercase());
    if let Some(c) = &country
        && (c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_uppercase()))
    {
        v.error(
            "address.country",
            "invalid_country",
            "must be an ISO 3166-1 alpha-2 code such as DE",
        );
    }
    Address {
        street: part(v, "street", &raw.street),
        city: part(v, "city", &raw.city),
        region: part(v, "region", &raw.region),
        postal_code: part(v, "postal_code", &raw.postal_code),
        country,
    }
}

/// Where a record came from: `manual` (default), `import`, `zoho`, `api`, ... (lower case,
/// letters, digits, `_` and `-`, at most 40).
pub fn source(v: &mut Validator, raw: Option<&str>) -> String {
    let s = raw.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("manual");
    if s.len() > 40
        || !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        v.error(
            "source",
            "invalid_source",
            "lower-case letters, digits, _ and -, at most 40",
        );
    }
    s.to_owned()
}

/// The owner must be a member of the tenant (checked inside the tenant's transaction).
pub async fn check_owner(tx: &mut Tx, v: &mut Validator, owner: Option<Uuid>) -> Result<(), DomainError> {
    if let Some(owner) = owner {
        let member: bool = sqlx::query_scalar("select exists (select 1 from memberships where user_id = $1)")
            .bind(owner)
            .fetch_one(&mut **tx)
            .await?;
        if !member {
            v.error("owner_id", "not_a_member", "must be a member of the tenant");
        }
    }
    Ok(())
}

/// RFC 7396: `patch` merged into `target` (objects recursively; `null` removes).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(target) = target {
                for (key, value) in patch {
                    if value.is_null() {
                        target.remove(key);
                    } else {
                        merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// A PATCH of a record: `patch` (a JSON object) merged into the record's editable document
/// `current`, read back as a whole document (422 naming the problem when it is not one), with
/// the top-level fields it changed (empty: nothing to write).
pub fn patched<T: Serialize + DeserializeOwned>(current: &T, patch: &Value) -> Result<(T, Vec<String>), DomainError> {
    if !patch.is_object() {
        return Err(DomainError::invalid("body", "invalid_body", "must be a JSON object"));
    }
    let before = serde_json::to_value(current).map_err(anyhow::Error::from)?;
    let mut doc = before.clone();
    merge_patch(&mut doc, patch);
    let changed = changed_keys(&before, &doc);
    let input = serde_json::from_value(doc).map_err(|e| DomainError::invalid("body", "invalid_body", e.to_string()))?;
    Ok((input, changed))
}

/// The top-level keys whose values differ between two documents (for the activity timeline).
pub fn changed_keys(before: &Value, after: &Value) -> Vec<String> {
    let empty = Map::new();
    let (b, a) = (
        before.as_object().unwrap_or(&empty),
        after.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<String> = b
        .keys()
        .chain(a.keys())
        .filter(|k| b.get(*k) != a.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "t": [1]});
        merge_patch(
            &mut doc,
            &json!({"a": "z", "c": {"f": null}, "t": [2, 3], "n": {"x": 1}}),
        );
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "t": [2, 3], "n": {"x": 1}}));
        assert_eq!(
            changed_keys(&json!({"a": 1, "b": 2}), &json!({"a": 1, "c": 3})),
            ["b", "c"]
        );
    }

    #[test]
    fn phones_tags_addresses_sources() {
        let mut v = Validator::new();
        assert_eq!(
            phone(&mut v, "phone", Some(" +49 (30) 123-4567 x12 ")).as_deref(),
            Some("+49 (30) 123-4567 x12")
        );
        assert_eq!(
            tags(&mut v, &["VIP".into(), " vip ".into(), "Lead".into()]),
            ["vip", "lead"]
        );
        let a = address(
            &mut v,
            &Address {
                country: Some("de".into()),
                city: Some(" Berlin ".into()),
                ..Address::default()
            },
        );
        assert_eq!((a.country.as_deref(), a.city.as_deref()), (Some("DE"), Some("Berlin")));
        assert_eq!(source(&mut v, None), "manual");
        assert!(v.finish().is_ok());
        let mut v = Validator::new();
        phone(&mut v, "phone", Some("call me"));
        address(
            &mut v,
            &Address {
                country: Some("Germany".into()),
                ..Address::default()
            },
        );
        source(&mut v, Some("Web Form"));
        tags(&mut v, &["".into()]);
        let Err(DomainError::Invalid(e)) = v.finish() else {
            panic!("must fail")
        };
        assert_eq!(e.len(), 4);
    }
}
