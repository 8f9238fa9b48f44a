//! An item's revisions: the list, one with its content, the diff of two, and restoring one.
use super::*;

pub async fn revisions(
    pool: &PgPool,
    scope: &Scope,
    kind: ContentKind,
    id: Uuid,
    params: RevisionListParams,
) -> Result<ResultPage<RevisionSummary>, DomainError> {
    let page: PageRequest<i32> = params.page.request()?;
    let mut tx = pg::begin(pool, scope).await?;
    fetch(&mut tx, kind, id, false).await?;
    let rows: Vec<RevisionSummary> = sqlx::query_as(
        "select number, reason, restored_from, author, created_at, content ->> 'title' as title \
         from cms_revisions where item_id = $1 and ($2::integer is null or number < $2) \
         order by number desc limit $3",
    )
    .bind(id)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |r| r.number))
}

pub(crate) async fn revision_in(tx: &mut Tx, id: Uuid, number: i32) -> Result<Revision, DomainError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        number: i32,
        reason: String,
        restored_from: Option<i32>,
        author: Option<String>,
        created_at: DateTime<Utc>,
        content: Json<Content>,
    }
    let row: Row = sqlx::query_as(
        "select number, reason, restored_from, author, created_at, content from cms_revisions \
         where item_id = $1 and number = $2",
    )
    .bind(id)
    .bind(number)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(DomainError::NotFound)?;
    Ok(Revision {
        summary: RevisionSummary {
            number: row.number,
            reason: row.reason,
            restored_from: row.restored_from,
            author: row.author,
            created_at: row.created_at,
            title: row.content.0.title.clone(),
        },
        content: row.content.0,
    })
}

pub async fn revision(
    pool: &PgPool,
    scope: &Scope,
    kind: ContentKind,
    id: Uuid,
    number: i32,
) -> Result<Revision, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    fetch(&mut tx, kind, id, false).await?;
    let r = revision_in(&mut tx, id, number).await?;
    tx.commit().await?;
    Ok(r)
}

pub async fn diff(
    pool: &PgPool,
    scope: &Scope,
    kind: ContentKind,
    id: Uuid,
    params: DiffParams,
) -> Result<RevisionDiff, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    fetch(&mut tx, kind, id, false).await?;
    let mut v = Validator::new();
    for (field, value) in [("from", params.from), ("to", params.to)] {
        if value.is_none() {
            v.error(field, "required", "name a revision number");
        }
    }
    v.finish()?;
    let (from_number, to_number) = (params.from.unwrap_or_default(), params.to.unwrap_or_default());
    let from = revision_in(&mut tx, id, from_number).await?;
    let to = revision_in(&mut tx, id, to_number).await?;
    tx.commit().await?;
    let doc = |c: &Content| match serde_json::to_value(c) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let empty = Vec::new();
    Ok(RevisionDiff {
        from: from_number,
        to: to_number,
        fields: diff::fields(&doc(&from.content), &doc(&to.content), &FIELDS),
        blocks: diff::blocks(
            from.content.body.as_array().unwrap_or(&empty),
            to.content.body.as_array().unwrap_or(&empty),
        ),
    })
}

/// Makes revision `number`'s content the draft again, as a new revision (checked as an edit
/// is: its slug may have been taken since, its images deleted).
pub async fn restore(
    pool: &PgPool,
    scope: &Scope,
    kind: ContentKind,
    id: Uuid,
    number: i32,
    if_match: Option<i32>,
) -> Result<Item, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let current = fetch(&mut tx, kind, id, true).await?;
    if if_match.is_some_and(|v| v != current.version) {
        return Err(DomainError::StaleVersion);
    }
    let old = revision_in(&mut tx, id, number).await?;
    let c = check(
        &mut tx,
        kind,
        current.site_id,
        id,
        old.content,
        current.source == "wordpress",
    )
    .await?;
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    save(&mut tx, scope, &current.target(tenant), &c, "restored", Some(number)).await?;
    let item = fetch(&mut tx, kind, id, false).await?;
    tx.commit().await?;
    Ok(item)
}
