//! Tenant-defined custom fields of contacts and companies: typed (text, number, date, boolean,
//! select), validated on every write, filterable in lists.
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::adapters::pg::{self, Tx};
use crate::domain::validate::TextSchema;
use crate::domain::{DomainError, Scope, Text, Validator};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Entity {
    Contact,
    Company,
}

impl Entity {
    pub fn table(self) -> &'static str {
        match self {
            Entity::Contact => "crm_contacts",
            Entity::Company => "crm_companies",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum FieldType {
    Text,
    Number,
    Date,
    Boolean,
    Select,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct CustomField {
    pub id: Uuid,
    pub entity: Entity,
    /// The key under `custom` in records (`^[a-z][a-z0-9_]{0,39}$`).
    pub key: String,
    pub label: String,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub field_type: FieldType,
    /// The allowed values of a `select` field.
    pub options: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomField {
    pub entity: Entity,
    /// The key under `custom` in records: a lower-case letter, then lower-case letters, digits
    /// and `_`, at most 40.
    #[schema(pattern = r"^[a-z][a-z0-9_]{0,39}$")]
    pub key: String,
    /// 1–80 characters.
    #[schema(value_type = TextSchema<80>, inline)]
    pub label: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Required for `select` (1 to 100 distinct values of 1–100 characters), refused otherwise.
    #[serde(default)]
    #[schema(value_type = Vec<TextSchema<100>>, inline, max_items = 100)]
    pub options: Vec<String>,
}

/// The most custom fields per entity and tenant.
pub const MAX_FIELDS: i64 = 100;
const MAX_TEXT: usize = 1000;
const COLUMNS: &str = "id, entity, key, label, type, options, created_at";

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= 40
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

pub async fn list(pool: &PgPool, scope: &Scope, entity: Option<Entity>) -> Result<Vec<CustomField>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let fields = sqlx::query_as(&format!(
        "select {COLUMNS} from crm_custom_fields where ($1::text is null or entity = $1) order by entity, key"
    ))
    .bind(entity)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(fields)
}

pub async fn create(pool: &PgPool, scope: &Scope, input: NewCustomField) -> Result<CustomField, DomainError> {
    let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut v = Validator::new();
    if !valid_key(&input.key) {
        v.error(
            "key",
            "invalid_key",
            "must start with a lowercase letter and hold at most 40 lowercase letters, digits and _",
        );
    }
    let label = v.field("label", Text::parse(&input.label, 1, 80));
    let mut options = Vec::new();
    for o in &input.options {
        if let Some(o) = v.field("options", Text::parse(o, 1, 100)) {
            let o = o.into_inner();
            if !options.contains(&o) {
                options.push(o);
            }
        }
    }
    match input.field_type {
        FieldType::Select if options.is_empty() || options.len() > 100 => {
            v.error("options", "required", "a select field needs 1 to 100 options");
        }
        FieldType::Select => {}
        _ if !input.options.is_empty() => {
            v.error("options", "not_allowed", "only select fields have options");
        }
        _ => {}
    }
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    // One definition change at a time per tenant: the count below stays true.
    lock_definitions(&mut tx, true).await?;
    let count: i64 = sqlx::query_scalar("select count(*) from crm_custom_fields where entity = $1")
        .bind(input.entity)
        .fetch_one(&mut *tx)
        .await?;
    if count >= MAX_FIELDS {
        return Err(DomainError::conflict(
            "too-many-fields",
            format!("at most {MAX_FIELDS} custom fields per entity"),
        ));
    }
    let field = sqlx::query_as(&format!(
        "insert into crm_custom_fields (id, tenant_id, entity, key, label, type, options) \
         values ($1, $2, $3, $4, $5, $6, $7) returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(input.entity)
    .bind(&input.key)
    .bind(label.map(Text::into_inner))
    .bind(input.field_type)
    .bind(&options)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        pg::map_constraint(
            e,
            &[("crm_custom_fields_key", || {
                DomainError::conflict("field-exists", "a custom field with this key exists")
            })],
        )
    })?;
    tx.commit().await?;
    Ok(field)
}

/// Deletes a definition and its values from every record.
pub async fn delete(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    // Waits for writes that validated custom values against the definitions being removed.
    lock_definitions(&mut tx, true).await?;
    let gone: Option<(Entity, String)> =
        sqlx::query_as("delete from crm_custom_fields where id = $1 returning entity, key")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let (entity, key) = gone.ok_or(DomainError::NotFound)?;
    sqlx::query(&format!(
        "update {} set custom = custom - $1 where custom ? $1",
        entity.table()
    ))
    .bind(&key)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The tenant's definition lock: exclusive for changing definitions, shared for writing
/// custom values (taken first in such a transaction, before any row lock, so a definition's
/// removal never races a write that validated against it).
pub async fn lock_definitions(tx: &mut Tx, exclusive: bool) -> Result<(), DomainError> {
    let function = if exclusive {
        "pg_advisory_xact_lock"
    } else {
        "pg_advisory_xact_lock_shared"
    };
    sqlx::query(&format!(
        "select {function}(hashtextextended('crm-fields:' || app_current_tenant()::text, 0))"
    ))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The definitions of one entity, inside the caller's transaction.
pub async fn definitions(tx: &mut Tx, entity: Entity) -> Result<Vec<CustomField>, DomainError> {
    Ok(
        sqlx::query_as(&format!("select {COLUMNS} from crm_custom_fields where entity = $1"))
            .bind(entity)
            .fetch_all(&mut **tx)
            .await?,
    )
}

/// One value checked against its field's type: the stored form, or why not. `null` removes.
fn check_value(field: &CustomField, value: &Value) -> Result<Option<Value>, (&'static str, String)> {
    let stored = match (field.field_type, value) {
        (_, Value::Null) => return Ok(None),
        (FieldType::Text, Value::String(s)) => {
            let s = s.trim();
            if s.chars().count() > MAX_TEXT || s.chars().any(char::is_control) {
                return Err((
                    "invalid_text",
                    format!("must be at most {MAX_TEXT} characters, without control characters"),
                ));
            }
            if s.is_empty() {
                return Ok(None);
            }
            Value::String(s.to_owned())
        }
        (FieldType::Number, Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => Value::Number(n.clone()),
        (FieldType::Date, Value::String(s)) => match NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
            // Stored normalised (equality filters compare the text), in years Postgres takes.
            Ok(d) if (1..=9999).contains(&d.year()) => Value::String(d.format("%Y-%m-%d").to_string()),
            _ => {
                return Err((
                    "invalid_type",
                    "must be a date (YYYY-MM-DD, years 1 to 9999)".to_owned(),
                ));
            }
        },
        (FieldType::Boolean, Value::Bool(b)) => Value::Bool(*b),
        (FieldType::Select, Value::String(s)) if field.options.contains(s) => Value::String(s.clone()),
        (FieldType::Select, _) => {
            return Err((
                "invalid_option",
                format!("must be one of: {}", field.options.join(", ")),
            ));
        }
        (t, _) => {
            let expected = match t {
                FieldType::Text => "a string",
                FieldType::Number => "a number",
                FieldType::Date => "a date (YYYY-MM-DD)",
                FieldType::Boolean => "true or false",
                FieldType::Select => "one of the options",
            };
            return Err(("invalid_type", format!("must be {expected}")));
        }
    };
    Ok(Some(stored))
}

/// Checks a record's `custom` object against the definitions; answers the stored object
/// (nulls and empty texts dropped). Errors name `custom.<key>`.
pub fn validate(defs: &[CustomField], custom: &Map<String, Value>, v: &mut Validator) -> Map<String, Value> {
    let mut stored = Map::new();
    for (key, value) in custom {
        let field_name = format!("custom.{key}");
        match defs.iter().find(|d| &d.key == key) {
            None => v.error(&field_name, "unknown_field", "no custom field has this key"),
            Some(def) => match check_value(def, value) {
                Ok(Some(value)) => {
                    stored.insert(key.clone(), value);
                }
                Ok(None) => {}
                Err((code, message)) => v.error(&field_name, code, message),
            },
        }
    }
    stored
}

/// A list filter on custom fields: `{"key": value}` for equality, or `{"key": {"gte": a, "lte":
/// b}}` for a number or date range.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomFilter {
    Equals(String, Value),
    Range {
        key: String,
        numeric: bool,
        gte: Option<Value>,
        lte: Option<Value>,
    },
}

/// Parses the `custom` query parameter (a JSON object) against the definitions.
pub fn parse_filters(defs: &[CustomField], raw: &str, v: &mut Validator) -> Vec<CustomFilter> {
    let object = match serde_json::from_str::<Map<String, Value>>(raw) {
        Ok(o) => o,
        Err(_) => {
            v.error(
                "custom",
                "invalid_filter",
                r#"must be a JSON object such as {"plan": "pro"} or {"seats": {"gte": 5}}"#,
            );
            return Vec::new();
        }
    };
    filters_of(defs, object, "custom", v)
}

/// The filters of a JSON object of them (the `custom` parameter of a list, a segment's
/// `custom`), checked against the definitions; errors name `<field>.<key>`.
pub fn filters_of(
    defs: &[CustomField],
    object: Map<String, Value>,
    field: &str,
    v: &mut Validator,
) -> Vec<CustomFilter> {
    let mut filters = Vec::new();
    for (key, value) in object {
        let name = format!("{field}.{key}");
        let Some(def) = defs.iter().find(|d| d.key == key) else {
            v.error(&name, "unknown_field", "no custom field has this key");
            continue;
        };
        match value {
            Value::Object(range) if matches!(def.field_type, FieldType::Number | FieldType::Date) => {
                let mut bound = |op: &str| -> Option<Value> {
                    let b = range.get(op)?;
                    match check_value(def, b) {
                        Ok(Some(b)) => Some(b),
                        _ => {
                            v.error(
                                &name,
                                "invalid_filter",
                                format!("`{op}` must be a valid value of the field"),
                            );
                            None
                        }
                    }
                };
                let (gte, lte) = (bound("gte"), bound("lte"));
                let named = range.contains_key("gte") || range.contains_key("lte");
                if range.keys().any(|k| k != "gte" && k != "lte") || !named {
                    v.error(&name, "invalid_filter", "a range takes `gte` and/or `lte`");
                    continue;
                }
                if gte.is_none() && lte.is_none() {
                    continue;
                }
                filters.push(CustomFilter::Range {
                    key,
                    numeric: def.field_type == FieldType::Number,
                    gte,
                    lte,
                });
            }
            value => match check_value(def, &value) {
                Ok(Some(value)) => filters.push(CustomFilter::Equals(key, value)),
                Ok(None) => v.error(&name, "invalid_filter", "filter by a value, not null"),
                Err((code, message)) => v.error(&name, code, message),
            },
        }
    }
    filters
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(key: &str, field_type: FieldType, options: &[&str]) -> CustomField {
        CustomField {
            id: Uuid::nil(),
            entity: Entity::Contact,
            key: key.into(),
            label: key.into(),
            field_type,
            options: options.iter().map(|o| (*o).to_owned()).collect(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn values_are_typed() {
        let defs = [
            def("plan", FieldType::Select, &["free", "pro"]),
            def("seats", FieldType::Number, &[]),
            def("renews", FieldType::Date, &[]),
            def("vip", FieldType::Boolean, &[]),
            def("note", FieldType::Text, &[]),
        ];
        let mut v = Validator::new();
        let ok = json!({"plan": "pro", "seats": 12, "renews": "2027-01-31", "vip": true, "note": " hi ", "vip2": null});
        let stored = validate(&defs, ok.as_object().unwrap(), &mut v);
        let errors = format!("{:?}", v.finish());
        assert!(errors.contains("custom.vip2"), "unknown keys are refused: {errors}");
        assert_eq!(stored.get("note"), Some(&json!("hi")));
        assert_eq!(stored.len(), 5);

        let mut v = Validator::new();
        let bad = json!({"plan": "gold", "seats": "12", "renews": "31/01/2027", "vip": "yes"});
        validate(&defs, bad.as_object().unwrap(), &mut v);
        let Err(DomainError::Invalid(errors)) = v.finish() else {
            panic!("must fail")
        };
        assert_eq!(errors.len(), 4);
    }

    #[test]
    fn filters_parse_equality_and_ranges() {
        let defs = [
            def("plan", FieldType::Select, &["free", "pro"]),
            def("seats", FieldType::Number, &[]),
        ];
        let mut v = Validator::new();
        let f = parse_filters(&defs, r#"{"plan": "pro", "seats": {"gte": 5}}"#, &mut v);
        assert!(v.finish().is_ok());
        assert_eq!(f.len(), 2);
        for bad in [
            r#"{"plan": {"gte": "a"}}"#,
            r#"{"seats": {"gt": 1}}"#,
            "[1]",
            r#"{"x": 1}"#,
        ] {
            let mut v = Validator::new();
            parse_filters(&defs, bad, &mut v);
            assert!(v.finish().is_err(), "{bad}");
        }
        assert!(valid_key("plan_2") && !valid_key("2plan") && !valid_key("Plan") && !valid_key(""));
    }
}
