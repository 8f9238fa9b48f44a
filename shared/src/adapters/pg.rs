//! Postgres: the pool, the tenant-scoped transaction (the only door to tenant tables), and the
//! mapping of database errors to domain errors.
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;

use crate::domain::{DomainError, PageParams, PageRequest, ResultPage, Scope};

pub type Tx = Transaction<'static, Postgres>;

/// The application pool. Lazy: a cold start opens no connection until the first query, so
/// `/health`-style paths and auth failures never wait on the database.
pub fn pool(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(database_url)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid Postgres URL: {e}"))?
        .application_name("client-portal");
    Ok(PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(options))
}

/// Begins the request's transaction with its tenant, user and principal set *locally* (they
/// vanish at commit or rollback), in one round trip, with binds. Row-level security reads them.
#[tracing::instrument(level = "debug", skip_all, fields(tenant = ?scope.tenant_id()))]
pub async fn begin(pool: &PgPool, scope: &Scope) -> Result<Tx, DomainError> {
    let mut tx = pool.begin().await?;
    let tenant = scope.tenant_id().map(|t| t.to_string()).unwrap_or_default();
    let user = scope.actor.user_id().map(|u| u.to_string()).unwrap_or_default();
    sqlx::query(
        "select set_config('app.tenant_id', $1, true), set_config('app.user_id', $2, true), \
         set_config('app.principal', $3, true)",
    )
    .bind(tenant)
    .bind(user)
    .bind(scope.actor.principal())
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// Switches the open transaction to another tenant (creating a tenant, accepting an
/// invitation: the tenant becomes known inside the transaction).
#[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant_id))]
pub async fn set_tenant(tx: &mut Tx, tenant_id: uuid::Uuid) -> Result<(), DomainError> {
    sqlx::query("select set_config('app.tenant_id', $1, true)")
        .bind(tenant_id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl From<sqlx::Error> for DomainError {
    fn from(err: sqlx::Error) -> Self {
        DomainError::Internal(anyhow::Error::new(err).context("database"))
    }
}

/// Whether an error is a passing one of the database (unreachable, pool exhausted, a
/// serialization failure or deadlock, the server shutting down): worth trying again as it was.
pub fn is_transient(err: &DomainError) -> bool {
    let DomainError::Internal(e) = err else {
        return false;
    };
    e.chain().any(|cause| match cause.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_)) => true,
        Some(sqlx::Error::Database(db)) => db.code().is_some_and(|c| {
            matches!(
                c.as_ref(),
                "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "53300"
            )
        }),
        _ => false,
    })
}

/// The constraint a unique/foreign-key/check violation names, if that is what `err` is.
pub fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

/// Maps a violation of one of `known` constraints to its domain error; anything else is
/// internal. Lets services turn `users_email_key` into a 409 without string-matching messages.
pub fn map_constraint(err: sqlx::Error, known: &[KnownConstraint]) -> DomainError {
    if let Some(name) = violated_constraint(&err)
        && let Some((_, make)) = known.iter().find(|(c, _)| *c == name)
    {
        return make();
    }
    err.into()
}

/// A constraint name and the domain error its violation means.
pub type KnownConstraint = (&'static str, fn() -> DomainError);

/// The sort key of lists ordered by a timestamp and an id (newest or oldest first).
pub type TimeKey = (chrono::DateTime<chrono::Utc>, uuid::Uuid);

/// Whether Postgres knows `tz` as a time zone name (IANA, as `pg_timezone_names` lists them).
pub async fn known_timezone<'e>(exec: impl sqlx::PgExecutor<'e>, tz: &str) -> Result<bool, DomainError> {
    Ok(
        sqlx::query_scalar("select exists (select 1 from pg_timezone_names where name = $1)")
            .bind(tz)
            .fetch_one(exec)
            .await?,
    )
}

/// Plans made for this transaction's statements, not the connection's cached ones. Bulk writes
/// into tables that were small when the connection cached its plans need it: the foreign-key
/// checks of a row each run a cached plan, which scans the whole referenced table once it has
/// grown (a first shop sync went quadratic: 50 ms a page after 1,000 orders, 280 ms after
/// 10,000).
pub async fn fresh_plans(tx: &mut Tx) -> Result<(), DomainError> {
    sqlx::query("select set_config('plan_cache_mode', 'force_custom_plan', true)")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The page of a list ordered by a time and an id (`limit`, `cursor` as the client sent them).
pub fn time_page_request(params: &PageParams) -> Result<PageRequest<TimeKey>, DomainError> {
    let page = params.request()?;
    check_time_key(&page)?;
    Ok(page)
}

/// A cursor's time must be one Postgres can hold (a hand-made cursor could name year 200000,
/// which the database refuses with an error rather than an empty page).
pub fn check_time_key(page: &PageRequest<TimeKey>) -> Result<(), DomainError> {
    use chrono::Datelike;
    match page.after {
        Some((at, _)) if !(1..=9999).contains(&at.year()) => Err(DomainError::invalid(
            "cursor",
            "invalid_cursor",
            "is not a cursor this API returned",
        )),
        _ => Ok(()),
    }
}

/// One page of a keyset-paginated list, read in the request's tenant transaction. `sql` takes
/// the cursor's timestamp and id as `$1` and `$2` (both null on the first page) and the row count
/// as `$3`; `key` gives a row's sort key for the next cursor.
pub async fn page_by_time<T>(
    pool: &PgPool,
    scope: &Scope,
    sql: &str,
    page: &PageRequest<TimeKey>,
    key: impl Fn(&T) -> TimeKey,
) -> Result<ResultPage<T>, DomainError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    check_time_key(page)?;
    let mut tx = begin(pool, scope).await?;
    let rows: Vec<T> = sqlx::query_as(sql)
        .bind(page.after.map(|a| a.0))
        .bind(page.after.map(|a| a.1))
        .bind(page.fetch())
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, key))
}
