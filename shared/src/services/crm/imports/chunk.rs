//! One chunk of rows: each row checked by the record's own rules, deduplicated against the
//! tenant's records, and written with its errors, activity and the job's progress in one
//! transaction.
use super::*;

// ----------------------------------------------------------------------------- one chunk

/// A row the chunk will write, or why not.
pub(super) enum Outcome {
    Insert,
    Update(Uuid),
    Skip,
    Fail(String, String),
}

pub(super) struct Counts {
    pub(super) created: i64,
    pub(super) updated: i64,
    pub(super) skipped: i64,
    pub(super) failed: i64,
    pub(super) companies: i64,
}

pub(super) fn describe(errors: &[FieldError]) -> (String, String) {
    let mut fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    fields.dedup();
    let message = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    (fields.join(", "), message)
}

/// The team's members by lower-cased email (the `owner` column).
pub(super) async fn owners(tx: &mut Tx) -> Result<HashMap<String, Uuid>, DomainError> {
    let rows: Vec<(String, Uuid)> =
        sqlx::query_as("select lower(u.email), u.id from memberships m join users u on u.id = m.user_id")
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().collect())
}

pub(super) fn owner_of(cells: &Cells, owners: &HashMap<String, Uuid>, v: &mut Validator) -> Option<Uuid> {
    let email = cells.get("owner")?;
    let found = owners.get(&email.to_lowercase()).copied();
    if found.is_none() {
        v.error(
            "owner",
            "not_a_member",
            format!("no member of the team has the email {email:?}"),
        );
    }
    found
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
    let counts = match job.entity {
        TableEntity::Contacts => contacts_chunk(&mut tx, scope, job, &rows, &defs, &owners).await?,
        TableEntity::Companies => companies_chunk(&mut tx, scope, job, &rows, &defs, &owners).await?,
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
pub(super) async fn store_errors(
    tx: &mut Tx,
    job: &ImportRow,
    failures: &[(&RawRow, String, String)],
) -> Result<(), DomainError> {
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

/// Decides each valid row's fate by its dedupe key (`None`: no key, always created), against
/// the records that exist and the rows before it in the chunk.
pub(super) fn dedupe(
    rule: Dedupe,
    keys: &[Option<String>],
    existing: &HashMap<String, Uuid>,
    ids: &[Uuid],
    taken: (&str, &str),
) -> Vec<Outcome> {
    let mut seen: HashMap<&str, Uuid> = HashMap::new();
    keys.iter()
        .zip(ids)
        .map(|(key, id)| {
            let Some(key) = key else { return Outcome::Insert };
            let target = existing.get(key).copied().or_else(|| seen.get(key.as_str()).copied());
            match (target, rule) {
                (None, _) => {
                    seen.insert(key, *id);
                    Outcome::Insert
                }
                (Some(_), Dedupe::Skip) => Outcome::Skip,
                (Some(t), Dedupe::Update) => Outcome::Update(t),
                (Some(_), Dedupe::Create) => Outcome::Fail(taken.0.to_owned(), taken.1.to_owned()),
            }
        })
        .collect()
}

/// Updates in waves, so that two rows of a chunk updating one record apply in file order.
pub(super) fn waves(updates: Vec<Value>, target: impl Fn(&Value) -> Option<String>) -> Vec<Vec<Value>> {
    let mut waves: Vec<Vec<Value>> = Vec::new();
    let mut depth: HashMap<String, usize> = HashMap::new();
    for u in updates {
        let key = target(&u).unwrap_or_default();
        let d = depth.entry(key).or_insert(0);
        if waves.len() <= *d {
            waves.push(Vec::new());
        }
        if let Some(w) = waves.get_mut(*d) {
            w.push(u);
        }
        *d += 1;
    }
    waves
}

/// The `tags` of an update: the record's tags and the row's, first appearance first, at most 50.
pub(super) const MERGED_TAGS: &str = "(select coalesce(array_agg(t order by o), '{}') from (select t, min(o) as o \
    from unnest(x.tags || r.tags) with ordinality as u(t, o) group by t order by min(o) limit 50) as m)";

pub(super) async fn contacts_chunk(
    tx: &mut Tx,
    scope: &Scope,
    job: &ImportRow,
    rows: &[RawRow],
    defs: &[CustomField],
    owners: &HashMap<String, Uuid>,
) -> Result<Counts, DomainError> {
    struct Prepared<'r> {
        row: &'r RawRow,
        valid: contacts::Valid,
        stage_given: bool,
        company: Option<String>,
    }
    let mut failures: Vec<(&RawRow, String, String)> = Vec::new();
    let mut prepared: Vec<Prepared> = Vec::new();
    for row in rows {
        let cells = match &row.cells {
            Ok(cells) => cells,
            Err(why) => {
                failures.push((row, String::new(), why.clone()));
                continue;
            }
        };
        let strs: Vec<&str> = cells.iter().map(String::as_str).collect();
        let c = Cells::new(&job.mapping.0, &strs);
        let mut v = Validator::new();
        let (first_name, last_name) = if c.has("first_name") || c.has("last_name") {
            (c.text("first_name"), c.text("last_name"))
        } else {
            match c.get("name").map(|n| n.rsplit_once(' ').unwrap_or(("", n))) {
                Some((first, last)) => (first.trim().to_owned(), last.trim().to_owned()),
                None => (String::new(), String::new()),
            }
        };
        let stage = c.get("lifecycle_stage").and_then(|raw| {
            let stage = table::lifecycle_stage(raw);
            if stage.is_none() {
                v.error(
                    "lifecycle_stage",
                    "invalid_option",
                    "must be one of subscriber, lead, marketing_qualified, sales_qualified, opportunity, customer, \
                     evangelist, other",
                );
            }
            stage
        });
        let owner_id = owner_of(&c, owners, &mut v);
        let company = c
            .get("company")
            .and_then(|n| v.field("company", Text::parse(n, 1, 200)))
            .map(Text::into_inner);
        let input = ContactInput {
            first_name,
            last_name,
            email: c.opt("email"),
            phone: c.opt("phone"),
            mobile: c.opt("mobile"),
            title: c.opt("title"),
            company_id: None,
            owner_id,
            lifecycle_stage: stage.unwrap_or_default(),
            tags: c.tags(),
            address: c.address(),
            notes: c.text("notes"),
            source: Some("import".to_owned()),
            custom: c.custom(defs),
        };
        let valid = contacts::check(&input, defs, &mut v);
        let errors = v.into_errors();
        if errors.is_empty() {
            prepared.push(Prepared {
                row,
                valid,
                stage_given: stage.is_some(),
                company,
            });
        } else {
            let (f, m) = describe(&errors);
            failures.push((row, f, m));
        }
    }

    // The contacts lock first (API creates take it too): no email can be taken between this
    // lookup and the insert, and the plan's count holds.
    entitlements::lock(tx, Limit::Contacts).await?;
    // Dedupe by email against the tenant's contacts and the chunk's earlier rows.
    let emails: Vec<Option<String>> = prepared
        .iter()
        .map(|p| p.valid.email.as_ref().map(|e| e.to_lowercase()))
        .collect();
    let wanted: Vec<&String> = emails.iter().flatten().collect();
    let existing: HashMap<String, Uuid> =
        sqlx::query_as::<_, (String, Uuid)>("select email, id from app_crm_contacts_by_email($1)")
            .bind(&wanted)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    let ids: Vec<Uuid> = prepared.iter().map(|_| Uuid::now_v7()).collect();
    let mut outcomes = dedupe(
        job.dedupe,
        &emails,
        &existing,
        &ids,
        ("email", "email: another contact of the tenant has this email"),
    );

    // The plan's contact limit: rows past it fail, and so do updates of those rows.
    let inserts = outcomes.iter().filter(|o| matches!(o, Outcome::Insert)).count();
    if inserts > 0 {
        let plan = entitlements::plan(tx).await?;
        if let Some(allowed) = plan.limits.get(Limit::Contacts) {
            let used: i64 = sqlx::query_scalar("select count(*) from crm_contacts")
                .fetch_one(&mut **tx)
                .await?;
            let mut room = allowed.saturating_sub(used).max(0);
            let mut dropped = Vec::new();
            for (o, id) in outcomes.iter_mut().zip(&ids) {
                if matches!(o, Outcome::Insert) {
                    if room > 0 {
                        room -= 1;
                    } else {
                        dropped.push(*id);
                        *o = Outcome::Fail(
                            String::new(),
                            format!(
                                "the plan {} allows {allowed} contacts; upgrade to import more",
                                plan.name
                            ),
                        );
                    }
                }
            }
            for o in outcomes.iter_mut() {
                if let Outcome::Update(t) = o
                    && dropped.contains(t)
                {
                    *o = Outcome::Fail(
                        String::new(),
                        format!(
                            "the plan {} allows {allowed} contacts; upgrade to import more",
                            plan.name
                        ),
                    );
                }
            }
        }
    }

    // Companies by name: linked when they exist, created when not.
    // By the chunk's first spelling of each name; the database compares with its own lower().
    let mut spellings: HashMap<String, &str> = HashMap::new();
    for (p, _) in prepared
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| matches!(o, Outcome::Insert | Outcome::Update(_)))
    {
        if let Some(name) = &p.company {
            spellings.entry(name.to_lowercase()).or_insert(name);
        }
    }
    let mut names: Vec<String> = spellings.keys().cloned().collect();
    names.sort();
    let mut company_ids: HashMap<String, Uuid> = HashMap::new();
    let mut companies_created = 0;
    if !names.is_empty() {
        let keys: Vec<String> = spellings.values().map(|raw| format!("n:{raw}")).collect();
        let found: Vec<(String, Uuid)> = sqlx::query_as("select substr(key, 3), id from app_crm_companies_by_key($1)")
            .bind(keys)
            .fetch_all(&mut **tx)
            .await?;
        company_ids.extend(found.into_iter().map(|(raw, id)| (raw.to_lowercase(), id)));
        let mut new: Vec<Value> = Vec::new();
        for p in &prepared {
            if let Some(name) = &p.company
                && !company_ids.contains_key(&name.to_lowercase())
                && names.binary_search(&name.to_lowercase()).is_ok()
            {
                let id = Uuid::now_v7();
                company_ids.insert(name.to_lowercase(), id);
                new.push(json!({"id": id, "name": name}));
            }
        }
        if !new.is_empty() {
            companies_created = i64::try_from(new.len()).unwrap_or(i64::MAX);
            sqlx::query(
                "insert into crm_companies (id, tenant_id, name, source) \
                 select r.id, $1, r.name, 'import' from jsonb_to_recordset($2) as r(id uuid, name text)",
            )
            .bind(job.tenant_id)
            .bind(Json(&new))
            .execute(&mut **tx)
            .await?;
            let created: Vec<(Uuid, bool)> = new
                .iter()
                .filter_map(|n| {
                    n.get("id")
                        .and_then(Value::as_str)
                        .and_then(|s| Uuid::parse_str(s).ok())
                })
                .map(|id| (id, true))
                .collect();
            store_activity(tx, scope, job, "company_id", &created).await?;
        }
    }

    let mut counts = Counts {
        created: 0,
        updated: 0,
        skipped: 0,
        failed: 0,
        companies: companies_created,
    };
    let mut inserts = Vec::new();
    let mut updates = Vec::new();
    let mut touched = Vec::new();
    for ((p, o), id) in prepared.iter().zip(&outcomes).zip(&ids) {
        let v = &p.valid;
        let company_id = p.company.as_ref().and_then(|n| company_ids.get(&n.to_lowercase()));
        match o {
            Outcome::Insert => {
                counts.created += 1;
                touched.push((*id, true));
                inserts.push(json!({
                    "id": id, "first_name": v.first_name, "last_name": v.last_name, "email": v.email,
                    "phone": v.phone, "mobile": v.mobile, "title": v.title, "company_id": company_id,
                    "owner_id": v.owner_id, "lifecycle_stage": table::lifecycle_name(v.stage), "tags": v.tags,
                    "address": v.address, "notes": v.notes, "source": v.source, "custom": v.custom,
                }));
            }
            Outcome::Update(target) => {
                counts.updated += 1;
                touched.push((*target, false));
                updates.push(json!({
                    "id": target, "first_name": v.first_name, "last_name": v.last_name,
                    "phone": v.phone, "mobile": v.mobile, "title": v.title, "company_id": company_id,
                    "owner_id": v.owner_id,
                    "lifecycle_stage": p.stage_given.then(|| table::lifecycle_name(v.stage)),
                    "tags": v.tags, "address": v.address, "notes": v.notes, "custom": v.custom,
                }));
            }
            Outcome::Skip => counts.skipped += 1,
            Outcome::Fail(f, m) => failures.push((p.row, f.clone(), m.clone())),
        }
    }
    if !inserts.is_empty() {
        sqlx::query(
            "insert into crm_contacts (id, tenant_id, first_name, last_name, email, phone, mobile, title, company_id, \
             owner_id, lifecycle_stage, tags, address, notes, source, custom) \
             select r.id, $1, r.first_name, r.last_name, r.email, r.phone, r.mobile, r.title, r.company_id, \
             r.owner_id, r.lifecycle_stage, r.tags, r.address, r.notes, r.source, r.custom \
             from jsonb_to_recordset($2) as r(id uuid, first_name text, last_name text, email text, phone text, \
             mobile text, title text, company_id uuid, owner_id uuid, lifecycle_stage text, tags text[], \
             address jsonb, notes text, source text, custom jsonb)",
        )
        .bind(job.tenant_id)
        .bind(Json(&inserts))
        .execute(&mut **tx)
        .await?;
    }
    for wave in waves(updates, |u| u.get("id").and_then(Value::as_str).map(str::to_owned)) {
        sqlx::query(&format!(
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
        ))
        .bind(Json(&wave))
        .execute(&mut **tx)
        .await?;
    }
    store_activity(tx, scope, job, "contact_id", &touched).await?;
    counts.failed = i64::try_from(failures.len()).unwrap_or(i64::MAX);
    store_errors(tx, job, &failures).await?;
    Ok(counts)
}

pub(super) async fn companies_chunk(
    tx: &mut Tx,
    scope: &Scope,
    job: &ImportRow,
    rows: &[RawRow],
    defs: &[CustomField],
    owners: &HashMap<String, Uuid>,
) -> Result<Counts, DomainError> {
    let mut failures: Vec<(&RawRow, String, String)> = Vec::new();
    let mut prepared: Vec<(&RawRow, companies::Valid)> = Vec::new();
    for row in rows {
        let cells = match &row.cells {
            Ok(cells) => cells,
            Err(why) => {
                failures.push((row, String::new(), why.clone()));
                continue;
            }
        };
        let strs: Vec<&str> = cells.iter().map(String::as_str).collect();
        let c = Cells::new(&job.mapping.0, &strs);
        let mut v = Validator::new();
        let owner_id = owner_of(&c, owners, &mut v);
        let input = CompanyInput {
            name: c.text("name"),
            domain: c.opt("domain"),
            industry: c.opt("industry"),
            phone: c.opt("phone"),
            owner_id,
            tags: c.tags(),
            address: c.address(),
            notes: c.text("notes"),
            source: Some("import".to_owned()),
            custom: c.custom(defs),
        };
        let valid = companies::check(&input, defs, &mut v);
        let errors = v.into_errors();
        if errors.is_empty() {
            prepared.push((row, valid));
        } else {
            let (f, m) = describe(&errors);
            failures.push((row, f, m));
        }
    }
    // Dedupe by domain (`d:`), else by name (`n:`).
    let keys: Vec<Option<String>> = prepared
        .iter()
        .map(|(_, v)| {
            Some(match &v.domain {
                Some(d) => format!("d:{}", d.to_lowercase()),
                None => format!("n:{}", v.name.to_lowercase()),
            })
        })
        .collect();
    let wanted: Vec<&String> = keys.iter().flatten().collect();
    let existing: HashMap<String, Uuid> =
        sqlx::query_as::<_, (String, Uuid)>("select key, id from app_crm_companies_by_key($1)")
            .bind(&wanted)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    let ids: Vec<Uuid> = prepared.iter().map(|_| Uuid::now_v7()).collect();
    let mut outcomes = dedupe(
        job.dedupe,
        &keys,
        &existing,
        &ids,
        ("domain", "domain: another company of the tenant has this domain"),
    );
    if job.dedupe == Dedupe::Create {
        // Only domains are unique: a company of the same name is created.
        for (o, k) in outcomes.iter_mut().zip(&keys) {
            if matches!(o, Outcome::Fail(..)) && k.as_deref().is_some_and(|k| k.starts_with("n:")) {
                *o = Outcome::Insert;
            }
        }
    }
    let mut counts = Counts {
        created: 0,
        updated: 0,
        skipped: 0,
        failed: 0,
        companies: 0,
    };
    let mut inserts = Vec::new();
    let mut updates = Vec::new();
    let mut touched = Vec::new();
    for (((row, v), o), id) in prepared.iter().zip(&outcomes).zip(&ids) {
        match o {
            Outcome::Insert => {
                counts.created += 1;
                touched.push((*id, true));
                inserts.push(json!({
                    "id": id, "name": v.name, "domain": v.domain, "industry": v.industry, "phone": v.phone,
                    "owner_id": v.owner_id, "tags": v.tags, "address": v.address, "notes": v.notes,
                    "source": v.source, "custom": v.custom,
                }));
            }
            Outcome::Update(target) => {
                counts.updated += 1;
                touched.push((*target, false));
                updates.push(json!({
                    "id": target, "name": v.name, "domain": v.domain, "industry": v.industry, "phone": v.phone,
                    "owner_id": v.owner_id, "tags": v.tags, "address": v.address, "notes": v.notes,
                    "custom": v.custom,
                }));
            }
            Outcome::Skip => counts.skipped += 1,
            Outcome::Fail(f, m) => failures.push((row, f.clone(), m.clone())),
        }
    }
    if !inserts.is_empty() {
        sqlx::query(
            "insert into crm_companies (id, tenant_id, name, domain, industry, phone, owner_id, tags, address, notes, \
             source, custom) \
             select r.id, $1, r.name, r.domain, r.industry, r.phone, r.owner_id, r.tags, r.address, r.notes, \
             r.source, r.custom \
             from jsonb_to_recordset($2) as r(id uuid, name text, domain text, industry text, phone text, \
             owner_id uuid, tags text[], address jsonb, notes text, source text, custom jsonb)",
        )
        .bind(job.tenant_id)
        .bind(Json(&inserts))
        .execute(&mut **tx)
        .await?;
    }
    for wave in waves(updates, |u| u.get("id").and_then(Value::as_str).map(str::to_owned)) {
        sqlx::query(&format!(
            "update crm_companies x set \
             name = coalesce(nullif(r.name, ''), x.name), domain = coalesce(x.domain, r.domain), \
             industry = coalesce(r.industry, x.industry), phone = coalesce(r.phone, x.phone), \
             owner_id = coalesce(r.owner_id, x.owner_id), tags = {MERGED_TAGS}, \
             address = x.address || r.address, notes = coalesce(nullif(r.notes, ''), x.notes), \
             custom = x.custom || r.custom, version = x.version + 1, updated_at = now() \
             from jsonb_to_recordset($1) as r(id uuid, name text, domain text, industry text, phone text, \
             owner_id uuid, tags text[], address jsonb, notes text, custom jsonb) \
             where x.id = r.id"
        ))
        .bind(Json(&wave))
        .execute(&mut **tx)
        .await?;
    }
    store_activity(tx, scope, job, "company_id", &touched).await?;
    counts.failed = i64::try_from(failures.len()).unwrap_or(i64::MAX);
    store_errors(tx, job, &failures).await?;
    Ok(counts)
}
