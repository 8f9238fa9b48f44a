//! The CSV side of CRM imports and exports: which fields a column can fill, how a file's header
//! maps onto them, how cells become field values, and how exported cells are kept from running as
//! spreadsheet formulas.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use utoipa::ToSchema;

use super::contacts::LifecycleStage;
use super::fields::{CustomField, FieldType};
use crate::domain::{DomainError, FieldError};

/// What an import or export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum TableEntity {
    Contacts,
    Companies,
}

impl TableEntity {
    /// The custom-field entity of these records.
    pub fn field_entity(self) -> super::fields::Entity {
        match self {
            TableEntity::Contacts => super::fields::Entity::Contact,
            TableEntity::Companies => super::fields::Entity::Company,
        }
    }

    /// The fields a column can fill (besides `custom.<key>`).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            TableEntity::Contacts => CONTACT_FIELDS,
            TableEntity::Companies => COMPANY_FIELDS,
        }
    }

    /// At least one of these must be mapped: what names a record.
    fn identifying(self) -> &'static [&'static str] {
        match self {
            TableEntity::Contacts => &["first_name", "last_name", "name", "email"],
            TableEntity::Companies => &["name"],
        }
    }
}

const ADDRESS: [&str; 5] = [
    "address.street",
    "address.city",
    "address.region",
    "address.postal_code",
    "address.country",
];

/// `name` is the full name (split at the last space when first and last name are not mapped);
/// `company` a company name (linked, created when missing); `owner` a team member's email.
pub const CONTACT_FIELDS: &[&str] = &[
    "first_name",
    "last_name",
    "name",
    "email",
    "phone",
    "mobile",
    "title",
    "company",
    "owner",
    "lifecycle_stage",
    "tags",
    "notes",
    ADDRESS[0],
    ADDRESS[1],
    ADDRESS[2],
    ADDRESS[3],
    ADDRESS[4],
];

pub const COMPANY_FIELDS: &[&str] = &[
    "name", "domain", "industry", "phone", "owner", "tags", "notes", ADDRESS[0], ADDRESS[1], ADDRESS[2], ADDRESS[3],
    ADDRESS[4],
];

/// Header spellings (lower case, letters and digits only) and the field they mean.
fn alias(entity: TableEntity, normalized: &str) -> Option<&'static str> {
    let common = match normalized {
        "phone" | "phonenumber" | "telephone" | "tel" | "workphone" | "businessphone" | "officephone" => Some("phone"),
        "owner" | "owneremail" | "contactowner" | "accountowner" | "companyowner" | "recordowner" => Some("owner"),
        "tags" | "tag" | "labels" => Some("tags"),
        "notes" | "note" | "description" | "comments" => Some("notes"),
        "street" | "streetaddress" | "address" | "addressstreet" | "mailingstreet" | "billingstreet" => {
            Some("address.street")
        }
        "city" | "town" | "addresscity" | "mailingcity" | "billingcity" => Some("address.city"),
        "region" | "state" | "province" | "county" | "addressregion" | "mailingstate" | "billingstate" => {
            Some("address.region")
        }
        "postalcode" | "postcode" | "zip" | "zipcode" | "addresspostalcode" | "mailingzip" | "billingcode" => {
            Some("address.postal_code")
        }
        "country" | "countrycode" | "addresscountry" | "mailingcountry" | "billingcountry" => Some("address.country"),
        _ => None,
    };
    common.or(match entity {
        TableEntity::Contacts => match normalized {
            "firstname" | "first" | "givenname" | "forename" => Some("first_name"),
            "lastname" | "last" | "surname" | "familyname" => Some("last_name"),
            "name" | "fullname" | "contactname" | "contact" => Some("name"),
            "email" | "emailaddress" | "mail" | "primaryemail" | "workemail" => Some("email"),
            "mobile" | "mobilephone" | "mobilenumber" | "cell" | "cellphone" => Some("mobile"),
            "title" | "jobtitle" | "position" | "role" => Some("title"),
            "company" | "companyname" | "organization" | "organisation" | "account" | "accountname" => Some("company"),
            "lifecyclestage" | "lifecycle" | "stage" | "leadstatus" => Some("lifecycle_stage"),
            _ => None,
        },
        TableEntity::Companies => match normalized {
            "name" | "companyname" | "company" | "accountname" | "account" | "organization" | "organisation" => {
                Some("name")
            }
            "domain" | "website" | "companydomain" | "web" | "url" | "domainname" => Some("domain"),
            "industry" | "sector" => Some("industry"),
            _ => None,
        },
    })
}

fn normalize(header: &str) -> String {
    header
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The field a header names by itself: the export's own headers (`first_name`,
/// `address.city`, `custom.plan`), the usual spellings of other CRMs, a custom field's key or
/// label.
fn auto_target(entity: TableEntity, header: &str, defs: &[CustomField]) -> Option<String> {
    let header = header.trim();
    if let Some(key) = header.strip_prefix("custom.") {
        return defs.iter().any(|d| d.key == key).then(|| format!("custom.{key}"));
    }
    let n = normalize(header);
    if n.is_empty() {
        return None;
    }
    if let Some(field) = alias(entity, &n) {
        return Some(field.to_owned());
    }
    defs.iter()
        .find(|d| normalize(&d.key) == n || normalize(&d.label) == n)
        .map(|d| format!("custom.{}", d.key))
}

fn known_target(entity: TableEntity, target: &str, defs: &[CustomField]) -> bool {
    match target.strip_prefix("custom.") {
        Some(key) => defs.iter().any(|d| d.key == key),
        None => entity.fields().contains(&target),
    }
}

/// The field each column fills (`None`: ignored), from the header's own names and the caller's
/// `mapping` (`{"<column header>": "<field>" | null}`, which wins). Refuses a mapping that names
/// a column the file does not have, a field that does not exist, one field twice, or nothing
/// that names a record.
pub fn plan_mapping(
    entity: TableEntity,
    header: &[String],
    explicit: Option<&Map<String, Value>>,
    defs: &[CustomField],
) -> Result<Vec<Option<String>>, DomainError> {
    let mut errors = Vec::new();
    let mut targets: Vec<Option<String>> = vec![None; header.len()];
    let mut explicit_columns = vec![false; header.len()];
    for (name, value) in explicit.into_iter().flatten() {
        let field = format!("mapping.{name}");
        let columns: Vec<usize> = header
            .iter()
            .enumerate()
            .filter(|(_, h)| h.trim() == name.trim())
            .map(|(i, _)| i)
            .collect();
        let column = match columns.as_slice() {
            [] => {
                errors.push(FieldError::new(
                    &field,
                    "unknown_column",
                    format!("the file's header has no column named {name:?}"),
                ));
                continue;
            }
            [one] => *one,
            _ => {
                errors.push(FieldError::new(
                    &field,
                    "ambiguous_column",
                    format!("the file's header has {} columns named {name:?}", columns.len()),
                ));
                continue;
            }
        };
        let target = match value {
            Value::Null => None,
            Value::String(t) if known_target(entity, t, defs) => Some(t.clone()),
            _ => {
                errors.push(FieldError::new(
                    &field,
                    "unknown_field",
                    format!(
                        "must be null (ignore the column) or one of: {}, custom.<key of a custom field>",
                        entity.fields().join(", ")
                    ),
                ));
                continue;
            }
        };
        if let (Some(slot), Some(flag)) = (targets.get_mut(column), explicit_columns.get_mut(column)) {
            *slot = target;
            *flag = true;
        }
    }
    // Columns the caller did not map take the field their header names, unless a column
    // before them (or the caller) took it already.
    for (i, h) in header.iter().enumerate() {
        if explicit_columns.get(i).copied().unwrap_or(true) {
            continue;
        }
        if let Some(t) = auto_target(entity, h, defs)
            && !targets.iter().flatten().any(|taken| taken == &t)
            && let Some(slot) = targets.get_mut(i)
        {
            *slot = Some(t);
        }
    }
    for (i, t) in targets.iter().enumerate() {
        if let Some(t) = t
            && targets.iter().skip(i + 1).flatten().any(|other| other == t)
        {
            errors.push(FieldError::new(
                "mapping",
                "duplicate_field",
                format!("two columns are mapped to {t}"),
            ));
        }
    }
    if !targets
        .iter()
        .flatten()
        .any(|t| entity.identifying().contains(&t.as_str()))
    {
        errors.push(FieldError::new(
            "mapping",
            "required",
            format!(
                "map a column to one of: {} (the file's columns: {})",
                entity.identifying().join(", "),
                header.join(", ")
            ),
        ));
    }
    if errors.is_empty() {
        Ok(targets)
    } else {
        Err(DomainError::Invalid(errors))
    }
}

/// The cells an import reads, by field (exported formula guards removed).
#[derive(Debug, Default)]
pub struct Cells<'a> {
    pub values: Vec<(&'a str, Cow<'a, str>)>,
}

impl<'a> Cells<'a> {
    pub fn new(mapping: &'a [Option<String>], row: &'a [&'a str]) -> Self {
        let values = mapping
            .iter()
            .zip(row.iter())
            .filter_map(|(target, cell)| Some((target.as_deref()?, unescape_cell(cell))))
            .collect();
        Self { values }
    }

    /// The trimmed, non-empty value of a field.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn text(&self, field: &str) -> String {
        self.get(field).unwrap_or_default().to_owned()
    }

    pub fn opt(&self, field: &str) -> Option<String> {
        self.get(field).map(str::to_owned)
    }

    pub fn has(&self, field: &str) -> bool {
        self.values.iter().any(|(f, _)| *f == field)
    }

    /// Tags separated by `;`, `,` or `|`.
    pub fn tags(&self) -> Vec<String> {
        self.get("tags")
            .map(|t| {
                t.split([';', ',', '|'])
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn address(&self) -> super::input::Address {
        super::input::Address {
            street: self.opt("address.street"),
            city: self.opt("address.city"),
            region: self.opt("address.region"),
            postal_code: self.opt("address.postal_code"),
            country: self.opt("address.country"),
        }
    }

    /// Custom values typed by their definitions; a cell that is not of its type is kept as
    /// text so the validator names it.
    pub fn custom(&self, defs: &[CustomField]) -> Map<String, Value> {
        let mut out = Map::new();
        for (field, raw) in &self.values {
            let (Some(key), raw) = (field.strip_prefix("custom."), raw.trim()) else {
                continue;
            };
            if raw.is_empty() {
                continue;
            }
            let Some(def) = defs.iter().find(|d| d.key == key) else {
                continue;
            };
            out.insert(key.to_owned(), typed(def.field_type, raw));
        }
        out
    }
}

fn typed(field_type: FieldType, raw: &str) -> Value {
    match field_type {
        FieldType::Number => raw
            .parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| {
                raw.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            })
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        FieldType::Boolean => match raw.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" => Value::Bool(true),
            "false" | "no" | "n" | "0" => Value::Bool(false),
            _ => Value::String(raw.to_owned()),
        },
        FieldType::Text | FieldType::Date | FieldType::Select => Value::String(raw.to_owned()),
    }
}

/// A lifecycle stage as people write it: `customer`, `Marketing Qualified Lead`, `MQL`, ...
pub fn lifecycle_stage(raw: &str) -> Option<LifecycleStage> {
    Some(match normalize(raw).as_str() {
        "subscriber" => LifecycleStage::Subscriber,
        "lead" => LifecycleStage::Lead,
        "marketingqualified" | "marketingqualifiedlead" | "mql" => LifecycleStage::MarketingQualified,
        "salesqualified" | "salesqualifiedlead" | "sql" => LifecycleStage::SalesQualified,
        "opportunity" => LifecycleStage::Opportunity,
        "customer" => LifecycleStage::Customer,
        "evangelist" => LifecycleStage::Evangelist,
        "other" => LifecycleStage::Other,
        _ => return None,
    })
}

pub fn lifecycle_name(stage: LifecycleStage) -> &'static str {
    match stage {
        LifecycleStage::Subscriber => "subscriber",
        LifecycleStage::Lead => "lead",
        LifecycleStage::MarketingQualified => "marketing_qualified",
        LifecycleStage::SalesQualified => "sales_qualified",
        LifecycleStage::Opportunity => "opportunity",
        LifecycleStage::Customer => "customer",
        LifecycleStage::Evangelist => "evangelist",
        LifecycleStage::Other => "other",
    }
}

/// Characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection").
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

fn plain_number(s: &str) -> bool {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let frac = parts.next();
    !whole.is_empty()
        && whole.chars().all(|c| c.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()))
}

fn guarded(cell: &str) -> bool {
    let start = cell.trim_start_matches(' ');
    (start.starts_with(FORMULA_START) && !plain_number(start)) || start.starts_with('\'')
}

/// A cell as an export writes it: one that a spreadsheet would run as a formula (it starts,
/// after any spaces, with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`,
/// which spreadsheets show as text; so does one that starts with `'` itself (else an import
/// would take that `'` for a guard). Plain numbers (`-12.5`) stay as they are. The writers
/// also quote every cell, so a spreadsheet that splits on `;` cannot start a cell mid-value.
pub fn escape_cell(cell: &str) -> Cow<'_, str> {
    if guarded(cell) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// The inverse on import: a cell an export guarded loses its `'`.
pub fn unescape_cell(cell: &str) -> Cow<'_, str> {
    match cell.strip_prefix('\'') {
        Some(rest) if guarded(rest) => Cow::Borrowed(rest),
        _ => Cow::Borrowed(cell),
    }
}

/// The CSV writer of exports and error files: every cell quoted.
pub fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_guarded_and_round_trip() {
        for cell in [
            "=HYPERLINK(\"http://x\")",
            "+1+2",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\r=1",
            "  =1",
        ] {
            let escaped = escape_cell(cell);
            assert!(escaped.starts_with('\''), "{cell:?} -> {escaped:?}");
            assert_eq!(unescape_cell(&escaped), cell);
        }
        for cell in ["'tis", "''x", "'=1"] {
            let escaped = escape_cell(cell);
            assert_eq!(escaped, format!("'{cell}"));
            assert_eq!(unescape_cell(&escaped), cell);
        }
        for cell in ["Ada", "-12.5", "+49", "12", "a=b", "", "x;=cmd"] {
            assert_eq!(escape_cell(cell), cell);
            assert_eq!(unescape_cell(cell), cell);
        }
    }

    #[test]
    fn headers_map_by_their_usual_names_and_explicit_mapping_wins() {
        let header: Vec<String> = ["First Name", "E-mail", "Company", "Notes", "Last"]
            .into_iter()
            .map(String::from)
            .collect();
        let m = plan_mapping(TableEntity::Contacts, &header, None, &[]).unwrap();
        assert_eq!(
            m,
            vec![
                Some("first_name".to_owned()),
                Some("email".to_owned()),
                Some("company".to_owned()),
                Some("notes".to_owned()),
                Some("last_name".to_owned())
            ]
        );
        let explicit = serde_json::json!({"Notes": null, "Last": "title"});
        let m = plan_mapping(TableEntity::Contacts, &header, explicit.as_object(), &[]).unwrap();
        assert_eq!(m.get(3), Some(&None));
        assert_eq!(m.get(4), Some(&Some("title".to_owned())));
        let bad = serde_json::json!({"Nope": "email", "Notes": "shoe_size"});
        let DomainError::Invalid(errors) =
            plan_mapping(TableEntity::Contacts, &header, bad.as_object(), &[]).unwrap_err()
        else {
            panic!("not invalid")
        };
        assert_eq!(errors.len(), 2, "{errors:?}");
        let nothing = vec!["foo".to_owned()];
        assert!(plan_mapping(TableEntity::Contacts, &nothing, None, &[]).is_err());
    }

    #[test]
    fn stages_as_people_write_them() {
        assert_eq!(
            lifecycle_stage("Marketing Qualified Lead"),
            Some(LifecycleStage::MarketingQualified)
        );
        assert_eq!(lifecycle_stage("sales_qualified"), Some(LifecycleStage::SalesQualified));
        assert_eq!(lifecycle_stage("vip"), None);
    }
}
