//! What contacts and companies share around their own fields and SQL: the fields every record
//! ends with (tags, address, notes, source, custom values), reading one, the frame of an
//! idempotent create and of a merge patch (definitions locked, `If-Match`, the timeline),
//! delete, and the list (search, sort, tag, owner, time ranges, custom-field filters and keyset
//! pages, built by `listing`) with each record's own filters pushed in between.
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::activity::{self, Subject};
use super::fields::{self, CustomField, Entity};
use super::input::{self, Address};
use super::listing::{self, ListQuery, Listed, Search, Searched, Sort, SortSpec};
use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, PageParams, ResultPage, Scope, Validator};
use crate::services::idempotency::{self, Created, IdempotencyKey, Replay};

/// A record's table as the shared code reads, writes and lists it.
pub(super) struct Table {
    /// `crm_contacts`.
    pub name: &'static str,
    /// Its alias in `columns` and `from`: `c`.
    pub alias: &'static str,
    /// The select list of one record.
    pub columns: &'static str,
    /// What a list reads: the table under its alias, and what its search ranks by, joined.
    pub from: &'static str,
    /// Whose custom fields; `entity`'s name is what `app_crm_search` looks for.
    pub entity: Entity,
    pub search_entity: &'static str,
    /// What a search ranks by.
    pub searched: &'static [Searched<'static>],
    pub sorts: &'static [SortSpec],
    pub default_sort: &'static str,
    /// Its timeline.
    pub subject: fn(Uuid) -> Subject,
}

/// A contact or a company, as the shared code handles it.
pub(super) trait Record: for<'r> FromRow<'r, PgRow> + Serialize + Send + Unpin {
    const TABLE: Table;
    /// The document a merge patch is applied to (the body of a create).
    type Input: Serialize + DeserializeOwned;

    fn id(&self) -> Uuid;
    fn version(&self) -> i32;
    fn editable(&self) -> Self::Input;
}

/// The fields every record ends with, checked and written in this order.
pub(super) struct Common {
    pub tags: Vec<String>,
    pub address: Address,
    pub notes: String,
    pub source: String,
    pub custom: Map<String, Value>,
}

impl Common {
    /// The checks of the common fields (after the record's own: errors keep the fields' order),
    /// the custom values against `defs`.
    pub(super) fn check(
        v: &mut Validator,
        tags: &[String],
        address: &Address,
        notes: &str,
        source: Option<&str>,
        custom: &Map<String, Value>,
        defs: &[CustomField],
    ) -> Common {
        Common {
            tags: input::tags(v, tags),
            address: input::address(v, address),
            notes: input::notes(v, notes),
            source: input::source(v, source),
            custom: fields::validate(defs, custom, v),
        }
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// Binds the common fields: the last five parameters of every insert and update of a record.
pub(super) trait BindCommon<'q> {
    fn bind_common(self, c: &'q Common) -> Self;
}

impl<'q> BindCommon<'q> for PgQuery<'q> {
    fn bind_common(self, c: &'q Common) -> Self {
        self.bind(&c.tags)
            .bind(Json(&c.address))
            .bind(&c.notes)
            .bind(&c.source)
            .bind(Json(&c.custom))
    }
}

/// One record (`lock`: for a write that follows in the transaction).
pub(super) async fn fetch<R: Record>(tx: &mut Tx, id: Uuid, lock: bool) -> Result<Option<R>, DomainError> {
    let Table {
        name, alias, columns, ..
    } = R::TABLE;
    let lock = if lock {
        format!(" for no key update of {alias}")
    } else {
        String::new()
    };
    Ok(sqlx::query_as(&format!(
        "select {columns} from {name} {alias} where {alias}.id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// One record, or 404.
pub(super) async fn found<R: Record>(tx: &mut Tx, id: Uuid) -> Result<R, DomainError> {
    fetch(tx, id, false).await?.ok_or(DomainError::NotFound)
}

/// Opens a create: the tenant's transaction under the idempotency key (or the answer stored
/// under it, to replay), with the custom-field definitions locked.
pub(super) async fn begin_create(
    pool: &PgPool,
    scope: &Scope,
    idem: Option<&IdempotencyKey>,
) -> Result<Result<(Tx, Uuid), Replay>, DomainError> {
    let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Err(replay)),
    };
    fields::lock_definitions(&mut tx, false).await?;
    Ok(Ok((tx, tenant_id)))
}

/// Closes a create: `created` on the timeline, the record as stored, kept for replays.
pub(super) async fn created<R: Record>(
    mut tx: Tx,
    scope: &Scope,
    id: Uuid,
    source: &str,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<R>, DomainError> {
    activity::record(
        &mut tx,
        scope,
        (R::TABLE.subject)(id),
        "created",
        json!({"source": source}),
    )
    .await?;
    let record: R = found(&mut tx, id).await?;
    idempotency::store(&mut tx, scope, idem, 201, &record).await?;
    tx.commit().await?;
    Ok(Created::Fresh(record))
}

/// A merge patch under way: the record locked as it is, the patched document, and the
/// top-level fields the patch changes.
pub(super) struct Patch<R: Record> {
    pub tx: Tx,
    pub current: R,
    pub input: R::Input,
    pub changed: Vec<String>,
}

/// Opens a merge patch: the definitions locked, the record locked, the patch applied to it.
pub(super) async fn begin_update<R: Record>(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    patch: &Value,
) -> Result<Patch<R>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    fields::lock_definitions(&mut tx, false).await?;
    let current: R = fetch(&mut tx, id, true).await?.ok_or(DomainError::NotFound)?;
    let (input, changed) = input::patched(&current.editable(), patch)?;
    Ok(Patch {
        tx,
        current,
        input,
        changed,
    })
}

impl<R: Record> Patch<R> {
    /// After the patched document is valid: 412 when `If-Match` names another version; `true`
    /// when the patch changes nothing (close it with [`Patch::keep`]).
    pub(super) fn unchanged(&self, if_match: Option<i32>) -> Result<bool, DomainError> {
        if if_match.is_some_and(|v| v != self.current.version()) {
            return Err(DomainError::StaleVersion);
        }
        Ok(self.changed.is_empty())
    }

    /// Closes the patch once the record is written: `updated` on the timeline, the record as
    /// stored.
    pub(super) async fn updated(self, scope: &Scope) -> Result<R, DomainError> {
        let Patch {
            mut tx,
            current,
            changed,
            ..
        } = self;
        let id = current.id();
        activity::record(
            &mut tx,
            scope,
            (R::TABLE.subject)(id),
            "updated",
            json!({"fields": changed}),
        )
        .await?;
        let record = found(&mut tx, id).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Closes a patch that changes nothing: the record as it was.
    pub(super) async fn keep(self) -> Result<R, DomainError> {
        self.tx.commit().await?;
        Ok(self.current)
    }
}

/// Deletes a record (what points at it: as the schema says).
pub(super) async fn delete<R: Record>(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let gone = sqlx::query(&format!("delete from {} where id = $1", R::TABLE.name))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(DomainError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// The filters every record list takes, from its parameters.
pub(super) struct Filters<'a> {
    pub page: &'a PageParams,
    pub q: Option<&'a str>,
    pub sort: Option<&'a str>,
    pub tag: Option<&'a str>,
    pub owner_id: Option<Uuid>,
    /// `created_at` at or after, and before.
    pub created: [Option<DateTime<Utc>>; 2],
    /// `updated_at` at or after, and before.
    pub updated: [Option<DateTime<Utc>>; 2],
    /// Custom-field filters, a JSON object.
    pub custom: Option<&'a str>,
}

/// A page of records: the common filters checked (all issues at once), the record's own
/// conditions (`own` pushes `and ...`) after tag and owner.
pub(super) async fn list<R: Record>(
    pool: &PgPool,
    scope: &Scope,
    filters: Filters<'_>,
    own: impl FnOnce(&mut QueryBuilder<'_, Postgres>),
) -> Result<ResultPage<R>, DomainError> {
    let table = R::TABLE;
    let page = filters.page.request()?;
    let mut tx = pg::begin(pool, scope).await?;
    let mut v = Validator::new();
    let search = Search::parse(filters.q, &mut v);
    let tag = listing::tag(filters.tag, &mut v);
    let sort = Sort::parse(filters.sort, table.sorts, table.default_sort, search.is_some(), &mut v);
    let custom = match filters.custom {
        Some(raw) => {
            let defs = fields::definitions(&mut tx, table.entity).await?;
            fields::parse_filters(&defs, raw, &mut v)
        }
        None => Vec::new(),
    };
    v.finish()?;
    let query = ListQuery {
        sort,
        page: &page,
        search: search.as_ref().map(|s| (s, table.searched)),
        custom: &custom,
        alias: table.alias,
        entity: table.search_entity,
    };
    query.check_cursor()?;
    if search.is_some() {
        Search::prepare(&mut tx).await?;
    }
    let a = table.alias;
    let mut qb = QueryBuilder::new(format!("select {}", table.columns));
    query.push_select_extras(&mut qb);
    qb.push(format!(" from {} where true", table.from));
    if let Some(tag) = tag {
        qb.push(format!(" and {a}.tags @> array[")).push_bind(tag).push("]");
    }
    if let Some(owner) = filters.owner_id {
        qb.push(format!(" and {a}.owner_id = ")).push_bind(owner);
    }
    own(&mut qb);
    let [created_after, created_before] = filters.created;
    let [updated_after, updated_before] = filters.updated;
    for (column, op, at) in [
        ("created_at", ">=", created_after),
        ("created_at", "<", created_before),
        ("updated_at", ">=", updated_after),
        ("updated_at", "<", updated_before),
    ] {
        if let Some(at) = at {
            qb.push(format!(" and {a}.{column} {op} ")).push_bind(at);
        }
    }
    query.push_conditions(&mut qb);
    query.push_order(&mut qb);
    let rows: Vec<Listed<R>> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(query.page(rows, R::id))
}
