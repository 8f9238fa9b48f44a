//! One chunk of rows: each row checked by the record's own rules, deduplicated against the
//! tenant's records, and written with its errors, activity and the job's progress in one
//! transaction.
use super::*;

// ----------------------------------------------------------------------------- one chunk

/// The team's members by lower-cased email (the `owner` column).
pub(super) async fn owners(tx: &mut Tx) -> Result<HashMap<String, Uuid>, DomainError> {
    let rows: Vec<(String, Uuid)> =
        sqlx::query_as("select lower(u.email), u.id from memberships m join users u on u.id = m.user_id")
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Where the job stands after a chunk: the offset (file bytes or Zoho pages), the next line,
/// and the last Zoho record id.
pub(super) struct ChunkEnd<'a> {
    pub(super) offset: i64,
    pub(super) line: i64,
    pub(super) cursor: Option<&'a str>,
}

/// Writes one chunk and the job's progress in one transaction. `false`: the job is no longer
/// at `offset` (another run took it further, or it ended), nothing written.
pub(super) async fn apply_chunk(
    pool: &PgPool,
    scope: &Scope,
    job: &ImportRow,
    offset: i64,
    to: ChunkEnd<'_>,
    rows: Vec<RawRow>,
    crash: bool,
) -> Result<bool, DomainError> {
    let ChunkEnd {
        offset: end,
        line: end_line,
        cursor,
    } = to;
    let mut tx = pg::begin(pool, scope).await?;
    let at: Option<(i64, JobStatus)> =
        sqlx::query_as("select byte_offset, status from crm_imports where id = $1 for update")
            .bind(job.id)
            .fetch_optional(&mut *tx)
            .await?;
    if at != Some((offset, JobStatus::Running)) {
        return Ok(false);
    }
    // The table grows under the import faster than its statistics: estimates of the tenant's
    // rows stay far too low, and the planner would hash every row of the tenant to join a
    // chunk's 1,000 updates (quadratic over the file). Probes of the primary key are what the
    // updates want. (The dedupe lookups go through app_crm_*_by_* for the same reason.)
    sqlx::query("select set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)")
        .execute(&mut *tx)
        .await?;
    fields::lock_definitions(&mut tx, false).await?;
    let defs = fields::definitions(&mut tx, job.entity.field_entity()).await?;
    let owners = owners(&mut tx).await?;
    let rules = RowRules {
        mapping: &job.mapping.0,
        defs: &defs,
        owners: &owners,
    };
    let counts = match job.entity {
        TableEntity::Contacts => contacts_chunk(&mut tx, scope, job, &rows, &rules).await?,
        TableEntity::Companies => companies_chunk(&mut tx, scope, job, &rows, &rules).await?,
    };
    let done = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    sqlx::query(
        "update crm_imports set byte_offset = $2, line_offset = $3, rows_done = rows_done + $4, \
         created_count = created_count + $5, updated_count = updated_count + $6, skipped_count = skipped_count + $7, \
         failed_count = failed_count + $8, companies_created = companies_created + $9, attempts = 0, error = null, \
         source_cursor = coalesce($10, source_cursor), updated_at = now() \
         where id = $1",
    )
    .bind(job.id)
    .bind(end)
    .bind(end_line)
    .bind(done)
    .bind(counts.created)
    .bind(counts.updated)
    .bind(counts.skipped)
    .bind(counts.failed)
    .bind(counts.companies)
    .bind(cursor)
    .execute(&mut *tx)
    .await?;
    if crash {
        // Dropping the transaction rolls the chunk back, as a process that dies here would.
        return Err(DomainError::Internal(anyhow::anyhow!(
            "crash_in_chunk: the run stops before its commit"
        )));
    }
    tx.commit().await?;
    Ok(true)
}

/// The chunk's failed rows, stored for the errors file.
pub(super) async fn store_errors(tx: &mut Tx, job: &ImportRow, failures: &[Failed<'_>]) -> Result<(), DomainError> {
    if failures.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = failures
        .iter()
        .map(|(row, fields, message)| {
            json!({"row_number": row.number, "line": row.line, "fields": fields, "message": message, "raw": row.raw})
        })
        .collect();
    sqlx::query(
        "insert into crm_import_errors (tenant_id, import_id, row_number, line, fields, message, raw) \
         select $1, $2, r.row_number, r.line, r.fields, r.message, r.raw \
         from jsonb_to_recordset($3) as r(row_number bigint, line bigint, fields text, message text, raw text)",
    )
    .bind(job.tenant_id)
    .bind(job.id)
    .bind(Json(rows))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Timeline entries for the records the chunk created or changed.
pub(super) async fn store_activity(
    tx: &mut Tx,
    scope: &Scope,
    job: &ImportRow,
    column: &str,
    touched: &[(Uuid, bool)],
) -> Result<(), DomainError> {
    if touched.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = touched
        .iter()
        .map(|(id, created)| {
            json!({"id": Uuid::now_v7(), "subject": id, "data": {"import": job.id, "created": created}})
        })
        .collect();
    sqlx::query(&format!(
        "insert into crm_activities (id, tenant_id, {column}, kind, data, actor) \
         select r.id, $1, r.subject, 'imported', r.data, $2 \
         from jsonb_to_recordset($3) as r(id uuid, subject uuid, data jsonb)"
    ))
    .bind(job.tenant_id)
    .bind(scope.actor.principal())
    .bind(Json(rows))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The `tags` of an update: the record's tags and the row's, first appearance first, at most 50.
pub(super) const MERGED_TAGS: &str = "(select coalesce(array_agg(t order by o), '{}') from (select t, min(o) as o \
    from unnest(x.tags || r.tags) with ordinality as u(t, o) group by t order by min(o) limit 50) as m)";

/// The records that exist under `keys` (`sql` looks them up: `select key, id from ...($1)`).
async fn existing(tx: &mut Tx, sql: &str, keys: &[Option<String>]) -> Result<HashMap<String, Uuid>, DomainError> {
    let wanted: Vec<&String> = keys.iter().flatten().collect();
    Ok(sqlx::query_as::<_, (String, Uuid)>(sql)
        .bind(&wanted)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect())
}

/// The id each row would be created with.
fn new_ids(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::now_v7()).collect()
}

pub(super) async fn contacts_chunk(
    tx: &mut Tx,
    scope: &Scope,
    job: &ImportRow,
    rows: &[RawRow],
    rules: &RowRules<'_>,
) -> Result<Counts, DomainError> {
    let (prepared, failed) = check_rows(rows, |cells| ContactRow::read(rules, cells));

    // The contacts lock first (API creates take it too): no email can be taken between this
    // lookup and the insert, and the plan's count holds.
    entitlements::lock(tx, Limit::Contacts).await?;
    // Dedupe by email against the tenant's contacts and the chunk's earlier rows.
    let keys: Vec<Option<String>> = prepared.iter().map(|(_, p)| p.key()).collect();
    let existing = existing(tx, "select email, id from app_crm_contacts_by_email($1)", &keys).await?;
    let ids = new_ids(prepared.len());
    let mut outcomes = dedupe(job.dedupe, &keys, &existing, &ids, EMAIL_TAKEN);

    // The plan's contact limit: rows past it fail, and so do updates of those rows.
    if outcomes.iter().any(|o| matches!(o, Outcome::Insert)) {
        let plan = entitlements::plan(tx).await?;
        if let Some(allowed) = plan.limits.get(Limit::Contacts) {
            let used: i64 = sqlx::query_scalar("select count(*) from crm_contacts")
                .fetch_one(&mut **tx)
                .await?;
            let why = format!(
                "the plan {} allows {allowed} contacts; upgrade to import more",
                plan.name
            );
            limit_inserts(&mut outcomes, &ids, allowed.saturating_sub(used).max(0), &why);
        }
    }

    // Companies by name: linked when they exist, created when not. Looked up by the chunk's
    // first spelling of each name; the database compares with its own lower().
    let named = named_companies(&prepared, &outcomes);
    let mut company_ids: HashMap<String, Uuid> = HashMap::new();
    let mut companies_created = 0;
    if !named.is_empty() {
        let keys: Vec<String> = named.values().map(|raw| format!("n:{raw}")).collect();
        let found: Vec<(String, Uuid)> = sqlx::query_as("select substr(key, 3), id from app_crm_companies_by_key($1)")
            .bind(keys)
            .fetch_all(&mut **tx)
            .await?;
        company_ids.extend(found.into_iter().map(|(raw, id)| (raw.to_lowercase(), id)));
        let new: Vec<(Uuid, String, &str)> = new_companies(&prepared, &named, &company_ids)
            .into_iter()
            .map(|(lower, name)| (Uuid::now_v7(), lower, name))
            .collect();
        if !new.is_empty() {
            companies_created = i64::try_from(new.len()).unwrap_or(i64::MAX);
            let rows: Vec<Value> = new
                .iter()
                .map(|(id, _, name)| json!({"id": id, "name": name}))
                .collect();
            sqlx::query(
                "insert into crm_companies (id, tenant_id, name, source) \
                 select r.id, $1, r.name, 'import' from jsonb_to_recordset($2) as r(id uuid, name text)",
            )
            .bind(job.tenant_id)
            .bind(Json(&rows))
            .execute(&mut **tx)
            .await?;
            let created: Vec<(Uuid, bool)> = new.iter().map(|(id, ..)| (*id, true)).collect();
            store_activity(tx, scope, job, "company_id", &created).await?;
            company_ids.extend(new.into_iter().map(|(id, lower, _)| (lower, id)));
        }
    }

    let company_of = |p: &ContactRow| {
        p.company
            .as_ref()
            .and_then(|n| company_ids.get(&n.to_lowercase()).copied())
    };
    let mut plan = plan(
        &prepared,
        &outcomes,
        &ids,
        failed,
        |p, id| p.insert(id, company_of(p)),
        |p, target| p.update(target, company_of(p)),
    );
    let update = format!(
        "update crm_contacts x set \
         first_name = coalesce(nullif(r.first_name, ''), x.first_name), \
         last_name = coalesce(nullif(r.last_name, ''), x.last_name), \
         phone = coalesce(r.phone, x.phone), mobile = coalesce(r.mobile, x.mobile), \
         title = coalesce(r.title, x.title), company_id = coalesce(r.company_id, x.company_id), \
         owner_id = coalesce(r.owner_id, x.owner_id), \
         lifecycle_stage = coalesce(r.lifecycle_stage, x.lifecycle_stage), tags = {MERGED_TAGS}, \
         address = x.address || r.address, notes = coalesce(nullif(r.notes, ''), x.notes), \
         custom = x.custom || r.custom, version = x.version + 1, updated_at = now() \
         from jsonb_to_recordset($1) as r(id uuid, first_name text, last_name text, phone text, mobile text, \
         title text, company_id uuid, owner_id uuid, lifecycle_stage text, tags text[], address jsonb, \
         notes text, custom jsonb) \
         where x.id = r.id"
    );
    let sql = Writes {
        insert: "insert into crm_contacts (id, tenant_id, first_name, last_name, email, phone, mobile, title, \
                 company_id, owner_id, lifecycle_stage, tags, address, notes, source, custom) \
                 select r.id, $1, r.first_name, r.last_name, r.email, r.phone, r.mobile, r.title, r.company_id, \
                 r.owner_id, r.lifecycle_stage, r.tags, r.address, r.notes, r.source, r.custom \
                 from jsonb_to_recordset($2) as r(id uuid, first_name text, last_name text, email text, phone text, \
                 mobile text, title text, company_id uuid, owner_id uuid, lifecycle_stage text, tags text[], \
                 address jsonb, notes text, source text, custom jsonb)",
        update: &update,
        column: "contact_id",
    };
    write(tx, scope, job, &mut plan, sql).await?;
    Ok(plan.counts(companies_created))
}

pub(super) async fn companies_chunk(
    tx: &mut Tx,
    scope: &Scope,
    job: &ImportRow,
    rows: &[RawRow],
    rules: &RowRules<'_>,
) -> Result<Counts, DomainError> {
    let (prepared, failed) = check_rows(rows, |cells| CompanyRow::read(rules, cells));
    // Dedupe by domain (`d:`), else by name (`n:`).
    let keys: Vec<Option<String>> = prepared.iter().map(|(_, p)| p.key()).collect();
    let existing = existing(tx, "select key, id from app_crm_companies_by_key($1)", &keys).await?;
    let ids = new_ids(prepared.len());
    let mut outcomes = dedupe(job.dedupe, &keys, &existing, &ids, DOMAIN_TAKEN);
    names_may_repeat(job.dedupe, &mut outcomes, &keys);
    let mut plan = plan(
        &prepared,
        &outcomes,
        &ids,
        failed,
        CompanyRow::insert,
        CompanyRow::update,
    );
    let update = format!(
        "update crm_companies x set \
         name = coalesce(nullif(r.name, ''), x.name), domain = coalesce(x.domain, r.domain), \
         industry = coalesce(r.industry, x.industry), phone = coalesce(r.phone, x.phone), \
         owner_id = coalesce(r.owner_id, x.owner_id), tags = {MERGED_TAGS}, \
         address = x.address || r.address, notes = coalesce(nullif(r.notes, ''), x.notes), \
         custom = x.custom || r.custom, version = x.version + 1, updated_at = now() \
         from jsonb_to_recordset($1) as r(id uuid, name text, domain text, industry text, phone text, \
         owner_id uuid, tags text[], address jsonb, notes text, custom jsonb) \
         where x.id = r.id"
    );
    let sql = Writes {
        insert: "insert into crm_companies (id, tenant_id, name, domain, industry, phone, owner_id, tags, address, \
                 notes, source, custom) \
                 select r.id, $1, r.name, r.domain, r.industry, r.phone, r.owner_id, r.tags, r.address, r.notes, \
                 r.source, r.custom \
                 from jsonb_to_recordset($2) as r(id uuid, name text, domain text, industry text, phone text, \
                 owner_id uuid, tags text[], address jsonb, notes text, source text, custom jsonb)",
        update: &update,
        column: "company_id",
    };
    write(tx, scope, job, &mut plan, sql).await?;
    Ok(plan.counts(0))
}

/// How a chunk's records are written: `insert` (`$1` the tenant, `$2` the rows), `update`
/// (`$1` the rows of a wave), and the timeline's column for them.
struct Writes<'a> {
    insert: &'a str,
    update: &'a str,
    column: &'a str,
}

/// Writes a planned chunk: its inserts, its updates in waves, the timelines and failed rows.
async fn write(
    tx: &mut Tx,
    scope: &Scope,
    job: &ImportRow,
    plan: &mut Plan<'_>,
    sql: Writes<'_>,
) -> Result<(), DomainError> {
    if !plan.inserts.is_empty() {
        sqlx::query(sql.insert)
            .bind(job.tenant_id)
            .bind(Json(&plan.inserts))
            .execute(&mut **tx)
            .await?;
    }
    for wave in waves(std::mem::take(&mut plan.updates)) {
        sqlx::query(sql.update).bind(Json(&wave)).execute(&mut **tx).await?;
    }
    store_activity(tx, scope, job, sql.column, &plan.touched).await?;
    store_errors(tx, job, &plan.failures).await
}
