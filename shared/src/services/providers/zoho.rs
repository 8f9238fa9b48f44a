//! Imports from Zoho CRM (API v2): contacts from the `Contacts` module, companies from
//! `Accounts`, read with the tenant's `zoho` connector. Pages of 200 records, in id order (new
//! records land on the last pages, so the numbers of pages already read stay valid), become rows
//! of the same chunks a CSV import applies (`imports::run_pages`): the record's fields are the
//! columns, flattened to text (a lookup to its name, a list of tags to `a, b`), mapped by their
//! API names as a CSV's headers are.
use serde_json::{Map, Value};

use crate::domain::{DomainError, FieldError};
use crate::services::connectors::{CallError, Connectors, Credentials, Retry};
use crate::services::crm::table::TableEntity;

/// Records per page: Zoho's largest.
pub const PER_PAGE: u32 = 200;
/// Extra fields a mapping may ask for (the tenant's own Zoho fields).
const MAX_EXTRA: usize = 50;

/// The module an entity is read from.
pub fn module(entity: TableEntity) -> &'static str {
    match entity {
        TableEntity::Contacts => "Contacts",
        TableEntity::Companies => "Accounts",
    }
}

/// The fields read by default, by API name; `id` and `Owner` are read but not mapped unless the
/// caller maps them (Zoho's users are seldom all members of the team: `Owner` → `owner` fails
/// rows whose owner is not).
fn default_fields(entity: TableEntity) -> &'static [&'static str] {
    match entity {
        TableEntity::Contacts => &[
            "id",
            "First_Name",
            "Last_Name",
            "Email",
            "Phone",
            "Mobile",
            "Title",
            "Account_Name",
            "Owner",
            "Tag",
            "Description",
            "Mailing_Street",
            "Mailing_City",
            "Mailing_State",
            "Mailing_Zip",
            "Mailing_Country",
        ],
        TableEntity::Companies => &[
            "id",
            "Account_Name",
            "Website",
            "Industry",
            "Phone",
            "Owner",
            "Tag",
            "Description",
            "Billing_Street",
            "Billing_City",
            "Billing_State",
            "Billing_Code",
            "Billing_Country",
        ],
    }
}

const UNMAPPED_BY_DEFAULT: [&str; 2] = ["id", "Owner"];

fn api_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
}

/// The import's columns (the fields read, by API name) and the mapping to plan them with: the
/// defaults, then the caller's `mapping`, whose keys may add the tenant's own Zoho fields.
pub fn columns(
    entity: TableEntity,
    mapping: Option<&Map<String, Value>>,
) -> Result<(Vec<String>, Map<String, Value>), DomainError> {
    let mut columns: Vec<String> = default_fields(entity).iter().map(|f| (*f).to_owned()).collect();
    let mut plan: Map<String, Value> = UNMAPPED_BY_DEFAULT
        .iter()
        .map(|f| ((*f).to_owned(), Value::Null))
        .collect();
    let mut errors = Vec::new();
    for (name, target) in mapping.into_iter().flatten() {
        let name = name.trim();
        if !api_name(name) {
            errors.push(FieldError::new(
                &format!("mapping.{name}"),
                "not_a_zoho_field",
                "must be the API name of a Zoho CRM field (letters, digits and _), e.g. Lead_Source",
            ));
            continue;
        }
        if !columns.iter().any(|c| c == name) {
            columns.push(name.to_owned());
        }
        plan.insert(name.to_owned(), target.clone());
    }
    if columns.len() > default_fields(entity).len() + MAX_EXTRA {
        errors.push(FieldError::new(
            "mapping",
            "too_many_fields",
            format!("at most {MAX_EXTRA} fields besides the usual ones"),
        ));
    }
    if errors.is_empty() {
        Ok((columns, plan))
    } else {
        Err(DomainError::Invalid(errors))
    }
}

/// A record's value as a cell: text as it is, numbers and booleans written out, a lookup
/// (`{"name", "id"}`) or a user (`{"name", "email", "id"}`) by its email, else its name, a list
/// by its items joined with `, `, nothing for null.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| cell(Some(i)))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
        Some(Value::Object(o)) => ["email", "name", "display_value"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .unwrap_or_default()
            .to_owned(),
    }
}

/// A record's cells in the order of `columns`.
pub fn cells(record: &Value, columns: &[String]) -> Vec<String> {
    columns.iter().map(|c| cell(record.get(c))).collect()
}

/// One page of a module.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<Value>,
    pub more: bool,
}

/// Reads a module's pages with the tenant's connector.
pub struct Reader<'a> {
    pub connectors: &'a Connectors,
    pub creds: &'a Credentials,
    pub entity: TableEntity,
    pub columns: &'a [String],
    pub retry: Retry,
}

impl Reader<'_> {
    /// Page `page` (from 1). A 204 (nothing in the module) is an empty last page.
    pub async fn page(&self, page: i64) -> Result<Page, CallError> {
        self.window(page, PER_PAGE, &self.columns.join(",")).await
    }

    /// The id of the record at place `place` (from 1) in id order, if there is one.
    async fn id_at(&self, place: i64) -> Result<Option<String>, CallError> {
        let page = self.window(place, 1, "id").await?;
        Ok(page.records.first().and_then(id_of).map(str::to_owned))
    }

    async fn window(&self, page: i64, per_page: u32, fields: &str) -> Result<Page, CallError> {
        let path = format!(
            "/crm/v2/{}?fields={}&page={page}&per_page={per_page}&sort_by=id&sort_order=asc",
            module(self.entity),
            url::form_urlencoded::byte_serialize(fields.as_bytes()).collect::<String>()
        );
        let resp = self.connectors.call(self.creds, &path, self.retry).await?;
        if resp.status().as_u16() == 204 {
            return Ok(Page::default());
        }
        let body: Value = crate::services::connectors::answer_json(resp)
            .await
            .map_err(|e| CallError::Unavailable(format!("Zoho CRM's answer: {e}")))?;
        let records = body
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| CallError::Unavailable("Zoho CRM's answer has no data".into()))?;
        let more = body
            .pointer("/info/more_records")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Page { records, more })
    }
}

/// A record's id (Zoho sends it as a string of digits).
pub fn id_of(record: &Value) -> Option<&str> {
    record.get("id").and_then(Value::as_str).filter(|id| !id.is_empty())
}

/// Whether id `a` comes after id `b` (both strings of digits: compared as numbers).
pub fn after(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    (a.len(), a) > (b.len(), b)
}

/// The records the import has not read that deletions in Zoho moved back onto pages already
/// read (`pages_done` of them, the last record imported `last`). One record deleted from those
/// pages moves every unread one back a place: the last place of page `pages_done` then holds a
/// record after `last`, and so do the places before it, one per deletion. Found by one look at
/// that place; read by going back page by page until a page starts at or before `last`.
pub async fn skipped_back(reader: &Reader<'_>, pages_done: i64, last: &str) -> Result<Vec<Value>, CallError> {
    let boundary = pages_done * i64::from(PER_PAGE);
    match reader.id_at(boundary).await? {
        Some(id) if after(&id, last) => {}
        _ => return Ok(Vec::new()),
    }
    let mut found: Vec<Value> = Vec::new();
    let mut page = pages_done;
    while page >= 1 {
        let records = reader.page(page).await?.records;
        let starts_before = records.first().and_then(id_of).is_none_or(|first| !after(first, last));
        let mut unread: Vec<Value> = records
            .into_iter()
            .filter(|r| id_of(r).is_some_and(|id| after(id, last)))
            .collect();
        unread.append(&mut found);
        found = unread;
        if starts_before {
            break;
        }
        page -= 1;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_compare_as_numbers() {
        assert!(after("3477061000000419010", "3477061000000419009"));
        assert!(after("10", "9"));
        assert!(!after("9", "10"));
        assert!(!after("42", "42"));
    }

    #[test]
    fn records_flatten_to_cells() {
        let record = json!({
            "id": "3477061000000419001",
            "First_Name": "Ana",
            "Last_Name": null,
            "Account_Name": {"name": "Zylker", "id": "3477061000000419002"},
            "Owner": {"name": "Pat", "id": "1", "email": "pat@zylker.com"},
            "Tag": [{"name": "vip", "id": "1"}, {"name": "q4", "id": "2"}],
            "Annual_Revenue": 1250000.5,
            "Email_Opt_Out": false
        });
        let columns: Vec<String> = [
            "id",
            "First_Name",
            "Last_Name",
            "Account_Name",
            "Owner",
            "Tag",
            "Annual_Revenue",
            "Email_Opt_Out",
            "Missing",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            cells(&record, &columns),
            [
                "3477061000000419001",
                "Ana",
                "",
                "Zylker",
                "pat@zylker.com",
                "vip, q4",
                "1250000.5",
                "false",
                ""
            ]
        );
    }

    #[test]
    fn mappings_add_fields_and_refuse_what_is_not_an_api_name() {
        let mapping = json!({"Lead_Source": "tags", "Owner": "owner"});
        let (cols, plan) = columns(TableEntity::Contacts, mapping.as_object()).unwrap();
        assert_eq!(cols.last().unwrap(), "Lead_Source");
        assert_eq!(plan["Owner"], "owner");
        assert_eq!(plan["id"], Value::Null);
        let bad = json!({"Lead Source; drop": "tags"});
        assert!(columns(TableEntity::Contacts, bad.as_object()).is_err());
    }
}
