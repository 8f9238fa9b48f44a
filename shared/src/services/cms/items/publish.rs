//! Publishing: now or at a time (the schedule names its revision), taking an item off the site,
//! and the content scheduler's run over what is due.
use super::*;

/// Publishes now, or schedules the current revision for `at`.
pub async fn publish(
    pool: &PgPool,
    scope: &Scope,
    kind: ContentKind,
    id: Uuid,
    request: PublishRequest,
    if_match: Option<i32>,
) -> Result<Item, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let current = fetch(&mut tx, kind, id, true).await?;
    if if_match.is_some_and(|v| v != current.version) {
        return Err(DomainError::StaleVersion);
    }
    match request.at {
        Some(at) if at > Utc::now() => {
            if at > Utc::now() + chrono::Duration::days(5 * 366) {
                return Err(DomainError::invalid("at", "too_far", "must be within five years"));
            }
            sqlx::query(
                "update cms_items set status = 'scheduled', publish_at = $2, scheduled_revision = revision, \
                 publish_error = null, updated_at = now(), version = version + 1 where id = $1",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        _ => go_live(&mut tx, &current, current.revision).await?,
    }
    let item = fetch(&mut tx, kind, id, false).await?;
    tx.commit().await?;
    Ok(item)
}

/// The public snapshot of a revision: what `cms-public` serves.
pub(crate) fn snapshot(content: &Content, revision: i32) -> Value {
    serde_json::json!({
        "revision": revision,
        "title": content.title,
        "slug": content.slug,
        "parent_id": content.parent_id,
        "seo": content.seo,
        "body": content.body,
        "excerpt": content.excerpt,
        "cover_media_id": content.cover_media_id,
        "categories": content.categories,
        "tags": content.tags,
        "author_id": content.author_id,
    })
}

/// Makes revision `number` live: the snapshot, the slug (the old live slug becomes a redirect;
/// a redirect on the new one is dropped), status published.
pub(crate) async fn go_live(tx: &mut Tx, item: &Item, number: i32) -> Result<(), DomainError> {
    let kind = item.kind.as_str();
    let content: Json<Content> =
        sqlx::query_scalar("select content from cms_revisions where item_id = $1 and number = $2")
            .bind(item.id)
            .bind(number)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| anyhow::anyhow!("revision {number} of {} is missing", item.id))?;
    let content = content.0;
    let slug = content.slug.clone().unwrap_or_default();
    let live_taken: Option<Uuid> =
        sqlx::query_scalar("select id from cms_items where site_id = $1 and kind = $2 and live_slug = $3 and id <> $4")
            .bind(item.site_id)
            .bind(kind)
            .bind(&slug)
            .bind(item.id)
            .fetch_optional(&mut **tx)
            .await?;
    if live_taken.is_some() {
        return Err(DomainError::conflict(
            "slug-taken",
            format!("another published item of this site is live under {slug:?}: change this slug"),
        ));
    }
    if let Some(old) = item.live_slug.as_deref().filter(|old| *old != slug) {
        let tenant: Uuid = sqlx::query_scalar("select tenant_id from cms_items where id = $1")
            .bind(item.id)
            .fetch_one(&mut **tx)
            .await?;
        sqlx::query(
            "insert into cms_redirects (site_id, kind, slug, tenant_id, item_id) values ($1, $2, $3, $4, $5) \
             on conflict (site_id, kind, slug) do update set item_id = excluded.item_id, created_at = now()",
        )
        .bind(item.site_id)
        .bind(kind)
        .bind(old)
        .bind(tenant)
        .bind(item.id)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("delete from cms_redirects where site_id = $1 and kind = $2 and slug = $3")
        .bind(item.site_id)
        .bind(kind)
        .bind(&slug)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "update cms_items set status = 'published', live = $2, live_slug = $3, live_revision = $4, live_at = now(), \
         published_at = coalesce(published_at, now()), publish_at = null, scheduled_revision = null, \
         publish_error = null, updated_at = now(), version = version + 1 where id = $1",
    )
    .bind(item.id)
    .bind(snapshot(&content, number))
    .bind(&slug)
    .bind(number)
    .execute(&mut **tx)
    .await
    .map_err(slug_constraint)?;
    Ok(())
}

/// Back to draft or archived: off the public site (its redirects go too), a schedule cancelled.
pub async fn unpublish(
    pool: &PgPool,
    scope: &Scope,
    kind: ContentKind,
    id: Uuid,
    request: UnpublishRequest,
    if_match: Option<i32>,
) -> Result<Item, DomainError> {
    if !["draft", "archived"].contains(&request.status.as_str()) {
        return Err(DomainError::invalid(
            "status",
            "invalid_status",
            "must be draft or archived",
        ));
    }
    let mut tx = pg::begin(pool, scope).await?;
    let current = fetch(&mut tx, kind, id, true).await?;
    if if_match.is_some_and(|v| v != current.version) {
        return Err(DomainError::StaleVersion);
    }
    sqlx::query(
        "update cms_items set status = $2, live = null, live_slug = null, live_revision = null, live_at = null, \
         publish_at = null, \
         scheduled_revision = null, publish_error = null, updated_at = now(), version = version + 1 where id = $1",
    )
    .bind(id)
    .bind(&request.status)
    .execute(&mut *tx)
    .await?;
    sqlx::query("delete from cms_redirects where item_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let item = fetch(&mut tx, kind, id, false).await?;
    tx.commit().await?;
    Ok(item)
}

/// What one run of the content scheduler did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SchedulerRun {
    pub published: usize,
    /// Due items that could not go live (their reason is on the item; they are back to draft).
    pub failed: usize,
    /// Due items left scheduled after a passing failure (the database busy or away): the next
    /// run tries them again.
    pub retrying: usize,
}

/// How one due item's publish ended.
pub(super) enum Due {
    Published,
    /// Not scheduled any more (published by an earlier run, unscheduled meanwhile) or locked by
    /// another run.
    Gone,
}

/// Publishes the scheduled items due by `now`, each in its own transaction: one failing does
/// not hold back the others, whatever the failure. An item that cannot go live (its slug went
/// live elsewhere, its revision is broken) goes back to draft with `publish_error` saying why;
/// one that met a passing failure stays scheduled for the next run. A crash leaves the rest
/// scheduled, and an item already published is not published twice.
pub async fn publish_due(pool: &PgPool, now: DateTime<Utc>, limit: i32) -> Result<SchedulerRun, DomainError> {
    let due: Vec<(Uuid, Uuid)> = sqlx::query_as("select tenant_id, item_id from app_cms_due($1, $2)")
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let mut run = SchedulerRun::default();
    for (tenant, id) in due {
        let scope = Scope::worker(tenant, "system:content-scheduler", format!("schedule-{id}"));
        match publish_one(pool, &scope, id, now).await {
            Ok(Due::Published) => run.published += 1,
            Ok(Due::Gone) => {}
            Err(e) if pg::is_transient(&e) => {
                tracing::warn!(item = %id, error = %e, "scheduled publish met a passing failure; it stays scheduled");
                run.retrying += 1;
            }
            Err(e) => {
                let why = match &e {
                    DomainError::Conflict { detail, .. } => detail.clone(),
                    DomainError::Invalid(errors) => errors
                        .iter()
                        .map(|f| format!("{}: {}", f.field, f.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => {
                        tracing::error!(item = %id, error = ?other, "scheduled publish failed");
                        "an internal error stopped it; publish it again, or contact support if it recurs".to_owned()
                    }
                };
                unschedule_failed(pool, &scope, id, &why).await?;
                tracing::warn!(item = %id, detail = %why, "scheduled publish failed");
                run.failed += 1;
            }
        }
    }
    Ok(run)
}

/// One due item, in its own transaction.
pub(super) async fn publish_one(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Due, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let row: Option<(String, i32)> = sqlx::query_as(
        "select kind, scheduled_revision from cms_items where id = $1 and status = 'scheduled' \
         and publish_at <= $2 for no key update skip locked",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((kind, number)) = row else {
        return Ok(Due::Gone);
    };
    let kind = if kind == "post" {
        ContentKind::Post
    } else {
        ContentKind::Page
    };
    let item = fetch(&mut tx, kind, id, false).await?;
    go_live(&mut tx, &item, number).await?;
    tx.commit().await?;
    Ok(Due::Published)
}

/// Takes a due item that cannot go live out of the schedule, with the reason on it.
pub(super) async fn unschedule_failed(pool: &PgPool, scope: &Scope, id: Uuid, why: &str) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    sqlx::query(
        "update cms_items set status = case when live is null then 'draft' else 'published' end, \
         publish_error = 'the scheduled publish of revision ' || scheduled_revision || ' failed: ' || $2, \
         publish_at = null, scheduled_revision = null, updated_at = now(), version = version + 1 \
         where id = $1 and status = 'scheduled'",
    )
    .bind(id)
    .bind(why)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
