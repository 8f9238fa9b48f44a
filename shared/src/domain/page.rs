//! Keyset pagination: an opaque cursor holding the last row's sort key, a bounded limit, and a
//! page that says where to continue. Stable under inserts, no OFFSET scans.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::validate::Issue;

pub const DEFAULT_LIMIT: u32 = 25;
pub const MAX_LIMIT: u32 = 100;
const MAX_CURSOR_LEN: usize = 512;

/// An opaque, URL-safe continuation token. Clients must not build or edit one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    pub fn encode<K: Serialize>(key: &K) -> Self {
        // Serializing plain keys (ids, timestamps, numbers) cannot fail; an empty cursor would
        // only restart the listing, never skip rows.
        let json = serde_json::to_vec(key).unwrap_or_default();
        Self(URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode<K: DeserializeOwned>(&self) -> Result<K, Issue> {
        let bad = || Issue::new("invalid_cursor", "is not a cursor this API returned");
        let bytes = URL_SAFE_NO_PAD.decode(&self.0).map_err(|_| bad())?;
        serde_json::from_slice(&bytes).map_err(|_| bad())
    }

    pub fn parse(raw: &str) -> Result<Self, Issue> {
        if raw.is_empty() || raw.len() > MAX_CURSOR_LEN {
            return Err(Issue::new("invalid_cursor", "is not a cursor this API returned"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated page request: `limit` in 1..=100 and the decoded key to continue after.
#[derive(Debug, Clone)]
pub struct PageRequest<K> {
    pub limit: u32,
    pub after: Option<K>,
}

impl<K: DeserializeOwned> PageRequest<K> {
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, Vec<(&'static str, Issue)>> {
        let mut issues = Vec::new();
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(l) if (1..=MAX_LIMIT).contains(&l) => l,
            Some(_) => {
                issues.push((
                    "limit",
                    Issue::new("out_of_range", format!("must be between 1 and {MAX_LIMIT}")),
                ));
                DEFAULT_LIMIT
            }
        };
        let after = match cursor.map(|c| Cursor::parse(c).and_then(|c| c.decode::<K>())) {
            None => None,
            Some(Ok(k)) => Some(k),
            Some(Err(issue)) => {
                issues.push(("cursor", issue));
                None
            }
        };
        if issues.is_empty() {
            Ok(Self { limit, after })
        } else {
            Err(issues)
        }
    }

    /// As `parse`, the issues as a 422 (an empty cursor is none: `?cursor=` from a form).
    pub fn checked(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, super::DomainError> {
        Self::parse(limit, cursor.filter(|c| !c.is_empty())).map_err(|issues| {
            super::DomainError::Invalid(
                issues
                    .into_iter()
                    .map(|(field, issue)| super::FieldError::new(field, issue.code, issue.message))
                    .collect(),
            )
        })
    }

    /// Rows to fetch: one more than the limit, to learn whether another page exists.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// `limit` and `cursor` of a keyset-paginated list: the whole query of some lists, and embedded
/// in the parameters of the others as
///
/// ```ignore
/// #[serde(flatten)]
/// #[param(ignore)]
/// pub page: PageParams,
/// ```
///
/// with `PageParams` named beside them in the route's `params(...)` (utoipa's `IntoParams` does
/// not follow `flatten`: the two stay in the order they are named there).
#[derive(Debug, Clone, Default, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1–100 (default 25).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page, as it was returned (empty: the first page).
    #[param(max_length = 512, pattern = r"^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

impl PageParams {
    /// The page asked for (an empty cursor is none), or a 422 naming `limit` or `cursor`.
    pub fn request<K: DeserializeOwned>(&self) -> Result<PageRequest<K>, super::DomainError> {
        PageRequest::checked(self.limit, self.cursor.as_deref())
    }
}

/// Read alone or embedded (`flatten`), a query's `limit` arrives as text: it is taken as text
/// (or a JSON number) and parsed after, so a bad one fails the same way both times and as a
/// `u32` field of the query did (`limit: invalid digit found in string`). Other names are
/// left to the embedding struct.
impl<'de> Deserialize<'de> for PageParams {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("PageParams", &["limit", "cursor"], PageVisitor)
    }
}

struct PageVisitor;

impl<'de> serde::de::Visitor<'de> for PageVisitor {
    type Value = PageParams;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("limit and cursor")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<PageParams, A::Error> {
        use serde::de::Error;
        let bad = |e: &dyn std::fmt::Display| A::Error::custom(format_args!("limit: {e}"));
        let (mut limit, mut cursor): (Option<Option<u32>>, Option<Option<String>>) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "limit" if limit.is_some() => return Err(A::Error::duplicate_field("limit")),
                // Parsed here, after the value is read: the error names the field itself.
                "limit" => {
                    limit = Some(match map.next_value()? {
                        None => None,
                        Some(RawLimit::Text(text)) => Some(text.parse().map_err(|e| bad(&e))?),
                        Some(RawLimit::Number(n)) => Some(u32::try_from(n).map_err(|e| bad(&e))?),
                    });
                }
                "cursor" if cursor.is_some() => return Err(A::Error::duplicate_field("cursor")),
                "cursor" => cursor = Some(map.next_value()?),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(PageParams {
            limit: limit.flatten(),
            cursor: cursor.flatten(),
        })
    }
}

/// `limit` as it came: text (a query string) or a number (JSON).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawLimit {
    Text(String),
    Number(i64),
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResultPage<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> ResultPage<T> {
    /// Builds a page from `limit + 1` fetched rows; `key` gives the sort key of a row.
    pub fn from_rows<K: Serialize>(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> K) -> Self {
        let limit = limit as usize;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|last| Cursor::encode(&key(last)).0)
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> ResultPage<U> {
        ResultPage {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_its_key() {
        let key = (42_i64, "x".to_owned());
        let c = Cursor::encode(&key);
        assert_eq!(c.decode::<(i64, String)>().unwrap(), key);
    }

    #[test]
    fn garbage_cursor_is_an_issue_not_a_panic() {
        for raw in ["%%%", "e30", "bm90IGpzb24", ""] {
            let r = PageRequest::<(i64, String)>::parse(None, Some(raw));
            assert!(r.is_err(), "{raw:?}");
        }
    }

    #[test]
    fn limit_is_bounded() {
        assert!(PageRequest::<i64>::parse(Some(0), None).is_err());
        assert!(PageRequest::<i64>::parse(Some(101), None).is_err());
        assert_eq!(PageRequest::<i64>::parse(None, None).unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn page_knows_when_more_rows_exist() {
        let page = ResultPage::from_rows(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(page.items, vec![1, 2]);
        let next: i32 = Cursor(page.next_cursor.unwrap()).decode().unwrap();
        assert_eq!(next, 2);
        assert!(ResultPage::from_rows(vec![1, 2], 2, |n| *n).next_cursor.is_none());
    }
}
