//! Lists of contacts and companies: keyset pages under any offered sort (the cursor carries the
//! sort it belongs to, the last row's sort value and id), filters, custom-field filters and
//! search ranked by relevance (trigram word similarity, word prefixes first).
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::fields::CustomFilter;
use crate::domain::{DomainError, PageRequest, ResultPage, Validator};

/// An offered sort: its name in `sort=`, the SQL expression, and what kind of value it orders.
#[derive(Debug, Clone, Copy)]
pub struct SortSpec {
    pub name: &'static str,
    pub expr: &'static str,
    pub time: bool,
}

/// The sort of one request.
#[derive(Debug, Clone, Copy)]
pub enum Sort {
    By {
        spec: SortSpec,
        desc: bool,
    },
    /// Search results, best first.
    Relevance,
}

impl Sort {
    /// `sort=name` ascending, `sort=-name` descending; `relevance` (the default with `q`).
    pub fn parse(raw: Option<&str>, offered: &[SortSpec], default: &str, searching: bool, v: &mut Validator) -> Sort {
        let raw = raw.map(str::trim).filter(|s| !s.is_empty());
        if (raw.is_none() && searching) || raw == Some("relevance") {
            if !searching {
                v.error("sort", "needs_q", "relevance orders search results (with q)");
            }
            return Sort::Relevance;
        }
        let raw = raw.unwrap_or(default);
        let (name, desc) = match raw.strip_prefix('-') {
            Some(name) => (name, true),
            None => (raw, false),
        };
        match offered.iter().find(|s| s.name == name) {
            Some(spec) => Sort::By { spec: *spec, desc },
            None => {
                let names: Vec<&str> = offered.iter().map(|s| s.name).collect();
                v.error(
                    "sort",
                    "unknown_sort",
                    format!(
                        "one of {} (- before it: descending), or relevance with q",
                        names.join(", ")
                    ),
                );
                Sort::Relevance
            }
        }
    }

    fn label(&self) -> String {
        match self {
            Sort::By { spec, desc } => format!("{}{}", if *desc { "-" } else { "" }, spec.name),
            Sort::Relevance => "relevance".into(),
        }
    }
}

/// The `tag` filter: a tag as tags are stored (trimmed, lower case, no control characters).
pub fn tag(raw: Option<&str>, v: &mut Validator) -> Option<String> {
    raw.and_then(|t| v.field("tag", crate::domain::Text::parse(t, 1, 50)))
        .map(|t| t.into_inner().to_lowercase())
}

/// The value a row is sorted by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeyValue {
    Time(DateTime<Utc>),
    Score(f32),
    Text(String),
}

/// The cursor's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListKey {
    pub sort: String,
    pub value: KeyValue,
    pub id: Uuid,
}

/// A search: the lower-cased text and its LIKE patterns (metacharacters escaped).
#[derive(Debug, Clone)]
pub struct Search {
    pub q: String,
    /// `q%`: the text starts with it.
    pub starts: String,
    /// `% q%`: a later word starts with it.
    pub word: String,
    /// `%q%`: anywhere.
    pub anywhere: String,
}

impl Search {
    /// Word similarity from which a word counts as a typo of the query (pg_trgm's default is
    /// 0.6, which misses one dropped letter in a 7-letter name).
    pub const TYPO_THRESHOLD: &'static str = "0.5";

    /// Sets the typo threshold for the transaction that runs the search.
    pub async fn prepare(tx: &mut crate::adapters::pg::Tx) -> Result<(), DomainError> {
        sqlx::query("select set_config('pg_trgm.word_similarity_threshold', $1, true)")
            .bind(Self::TYPO_THRESHOLD)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub fn parse(raw: Option<&str>, v: &mut Validator) -> Option<Search> {
        let raw = raw?;
        let q = raw.trim().to_lowercase();
        // At most 100 characters as sent (the document's `maxLength` counts white space too).
        let too_long = raw.chars().count() > 100;
        if q.is_empty() && !too_long {
            return None;
        }
        if too_long || q.chars().any(char::is_control) {
            v.error("q", "invalid_query", "at most 100 characters, no control characters");
            return None;
        }
        let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        Some(Search {
            starts: format!("{escaped}%"),
            word: format!("% {escaped}%"),
            anywhere: format!("%{escaped}%"),
            q,
        })
    }
}

/// `and ...` conditions of custom-field filters on the record of alias `a` (the contacts and
/// companies lists, and marketing segments: one reading of `custom` filters everywhere).
pub fn push_custom(qb: &mut QueryBuilder<'_, Postgres>, a: &str, filters: &[CustomFilter]) {
    for filter in filters {
        match filter {
            CustomFilter::Equals(key, value) => {
                let mut object = serde_json::Map::new();
                object.insert(key.clone(), value.clone());
                qb.push(format!(" and {a}.custom @> "))
                    .push_bind(serde_json::Value::Object(object))
                    .push("::jsonb");
            }
            CustomFilter::Range { key, numeric, gte, lte } => {
                let cast = if *numeric { "numeric" } else { "date" };
                for (op, bound) in [(">=", gte), ("<=", lte)] {
                    if let Some(bound) = bound {
                        let bound = match bound {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        qb.push(format!(" and ({a}.custom ->> "))
                            .push_bind(key.clone())
                            .push(format!(")::{cast} {op} "))
                            .push_bind(bound)
                            .push(format!("::{cast}"));
                    }
                }
            }
        }
    }
}

/// A text a search ranks by: `expr` in the outer query, with its weight. The candidates come
/// from `app_crm_search` (see its migration: under RLS no trigram index could serve them).
#[derive(Debug, Clone, Copy)]
pub struct Searched<'a> {
    pub expr: &'a str,
    pub weight: f32,
}

/// Row-level extras a list selects beside the item: its sort value.
#[derive(Debug, sqlx::FromRow)]
pub struct Listed<T> {
    #[sqlx(flatten)]
    pub item: T,
    pub sort_time: Option<DateTime<Utc>>,
    pub sort_text: Option<String>,
    pub score: Option<f32>,
}

/// The pieces of one list query, filled by the entity's service.
pub struct ListQuery<'a> {
    pub sort: Sort,
    pub page: &'a PageRequest<ListKey>,
    /// What is searched: the record's own `search_text`, its company's, ...
    pub search: Option<(&'a Search, &'a [Searched<'a>])>,
    pub custom: &'a [CustomFilter],
    /// The alias of the listed table (`c`), for `id` and `custom`.
    pub alias: &'a str,
    /// `contact` or `company`: what `app_crm_search` looks for.
    pub entity: &'a str,
}

impl ListQuery<'_> {
    /// Checks the cursor against the sort; 422 when it belongs to another.
    pub fn check_cursor(&self) -> Result<(), DomainError> {
        let Some(key) = &self.page.after else {
            return Ok(());
        };
        let fits = match (self.sort, &key.value) {
            (Sort::By { spec, .. }, KeyValue::Time(t)) => spec.time && (1..=9999).contains(&t.year()),
            (Sort::By { spec, .. }, KeyValue::Text(s)) => !spec.time && !s.contains('\0'),
            (Sort::Relevance, KeyValue::Score(_)) => true,
            _ => false,
        };
        if key.sort != self.sort.label() || !fits {
            return Err(DomainError::invalid(
                "cursor",
                "invalid_cursor",
                "belongs to another sort; start again without it",
            ));
        }
        Ok(())
    }

    fn push_score(&self, qb: &mut QueryBuilder<'_, Postgres>) {
        let Some((search, exprs)) = self.search else {
            qb.push("null::real");
            return;
        };
        qb.push("(greatest(");
        for (i, Searched { expr, weight, .. }) in exprs.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push(format!("{weight}::real * (word_similarity("))
                .push_bind(search.q.clone())
                .push(format!(", coalesce({expr}, '')) + case when {expr} like "))
                .push_bind(search.starts.clone())
                .push(format!(" or {expr} like "))
                .push_bind(search.word.clone())
                .push(" then 1 else 0 end)");
        }
        qb.push("))::real");
    }

    /// `select` list extras: the sort value and the score.
    pub fn push_select_extras(&self, qb: &mut QueryBuilder<'_, Postgres>) {
        match self.sort {
            Sort::By { spec, .. } if spec.time => {
                qb.push(format!(", {} as sort_time, null::text as sort_text, ", spec.expr));
            }
            Sort::By { spec, .. } => {
                qb.push(format!(
                    ", null::timestamptz as sort_time, {} as sort_text, ",
                    spec.expr
                ));
            }
            Sort::Relevance => {
                qb.push(", null::timestamptz as sort_time, null::text as sort_text, ");
            }
        }
        self.push_score(qb);
        qb.push(" as score");
    }

    /// `and ...` conditions: search match, custom filters, keyset.
    pub fn push_conditions(&self, qb: &mut QueryBuilder<'_, Postgres>) {
        let a = self.alias;
        if let Some((search, _)) = self.search {
            qb.push(format!(" and {a}.id in (select app_crm_search("))
                .push_bind(self.entity.to_owned())
                .push(", ")
                .push_bind(search.q.clone())
                .push(", ")
                .push_bind(search.anywhere.clone())
                .push("))");
        }
        push_custom(qb, a, self.custom);
        if let Some(after) = &self.page.after {
            match (self.sort, &after.value) {
                (Sort::By { spec, desc }, value) => {
                    let op = if desc { "<" } else { ">" };
                    qb.push(format!(" and ({}, {a}.id) {op} (", spec.expr));
                    match value {
                        KeyValue::Time(t) => qb.push_bind(*t),
                        KeyValue::Text(s) => qb.push_bind(s.clone()),
                        KeyValue::Score(s) => qb.push_bind(*s),
                    };
                    qb.push(", ").push_bind(after.id).push(")");
                }
                (Sort::Relevance, value) => {
                    let score = match value {
                        KeyValue::Score(s) => *s,
                        _ => 0.0,
                    };
                    qb.push(" and (");
                    self.push_score(qb);
                    qb.push(format!(", {a}.id) < ("))
                        .push_bind(score)
                        .push("::real, ")
                        .push_bind(after.id)
                        .push(")");
                }
            }
        }
    }

    pub fn push_order(&self, qb: &mut QueryBuilder<'_, Postgres>) {
        let a = self.alias;
        match self.sort {
            Sort::By { spec, desc } => {
                let dir = if desc { "desc" } else { "asc" };
                qb.push(format!(" order by {} {dir}, {a}.id {dir}", spec.expr));
            }
            Sort::Relevance => {
                qb.push(" order by score desc, ");
                qb.push(format!("{a}.id desc"));
            }
        }
        qb.push(" limit ").push_bind(self.page.fetch());
    }

    /// The page of fetched rows, with the cursor of the last.
    pub fn page<T>(&self, rows: Vec<Listed<T>>, id: impl Fn(&T) -> Uuid) -> ResultPage<T> {
        let label = self.sort.label();
        let page = ResultPage::from_rows(rows, self.page.limit, |r: &Listed<T>| ListKey {
            sort: label.clone(),
            value: match (r.sort_time, &r.sort_text, r.score) {
                (Some(t), _, _) => KeyValue::Time(t),
                (_, Some(s), _) => KeyValue::Text(s.clone()),
                (_, _, Some(score)) => KeyValue::Score(score),
                _ => KeyValue::Text(String::new()),
            },
            id: id(&r.item),
        });
        page.map(|r| r.item)
    }
}
