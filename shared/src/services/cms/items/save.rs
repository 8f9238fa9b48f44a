//! Checking an item's content (slug, parent, blocks, images, author) and saving it: the one
//! writer of content and its revision row, for create, edit, restore and the WordPress mirror.
use super::*;

pub(super) fn slug_taken(slug: &str, suggestion: String) -> DomainError {
    DomainError::conflict_suggesting(
        "slug-taken",
        format!("another item of this site uses the slug {slug:?}; {suggestion:?} is free"),
        suggestion,
    )
}

/// Whether `slug` is used by another item of the site and kind (as its draft or its live slug).
pub(crate) async fn slugs_taken(
    tx: &mut Tx,
    site: Uuid,
    kind: ContentKind,
    id: Uuid,
    prefix: &str,
) -> Result<Vec<String>, DomainError> {
    let rows: Vec<String> = sqlx::query_scalar(
        "select s from cms_items i, lateral (values (i.slug), (i.live_slug)) v(s) \
         where i.site_id = $1 and i.kind = $2 and i.id <> $3 and s is not null and (s = $4 or s like $5)",
    )
    .bind(site)
    .bind(kind.as_str())
    .bind(id)
    .bind(prefix)
    .bind(format!("{}-%", prefix.replace('%', "").replace('_', "\\_")))
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows)
}

pub(crate) async fn ensure_slug_free(
    tx: &mut Tx,
    site: Uuid,
    kind: ContentKind,
    id: Uuid,
    slug: &str,
) -> Result<(), DomainError> {
    let taken = slugs_taken(tx, site, kind, id, slug).await?;
    if taken.iter().any(|s| s == slug) {
        let suggestion = slug::suggest(slug, |candidate| taken.iter().any(|s| s == candidate));
        return Err(slug_taken(slug, suggestion));
    }
    Ok(())
}

/// Checks a document for its site and kind: the values as they will be stored, or every
/// problem (422 by field and block path). `id` is the item itself (a page is not its own
/// ancestor).
pub(crate) async fn check(
    tx: &mut Tx,
    kind: ContentKind,
    site: Uuid,
    id: Uuid,
    c: Content,
    mirrored: bool,
) -> Result<Content, DomainError> {
    let mut v = Validator::new();
    let title = v.field("title", Text::parse(&c.title, 1, 200)).map(Text::into_inner);
    let slug = match c.slug.as_deref() {
        Some(raw) => v.field("slug", slug::parse(raw)),
        None => match title.as_deref().and_then(slug::from_title) {
            Some(s) => Some(s),
            None => {
                if title.is_some() {
                    v.error(
                        "slug",
                        "required",
                        "the title makes no slug: give one (a-z, 0-9, hyphens)",
                    );
                }
                None
            }
        },
    };
    let seo = Seo {
        title: input::optional_text(&mut v, "seo.title", c.seo.title.as_deref(), 200),
        description: input::optional_text(&mut v, "seo.description", c.seo.description.as_deref(), 320),
        canonical_url: input::optional_text(&mut v, "seo.canonical_url", c.seo.canonical_url.as_deref(), 2000),
        noindex: c.seo.noindex,
        image_media_id: c.seo.image_media_id,
    };
    if let Some(url) = seo.canonical_url.as_deref()
        && (!url.starts_with("https://") || url::Url::parse(url).is_err())
    {
        v.error("seo.canonical_url", "invalid_url", "must be an https:// URL");
    }
    let mut errors: Vec<FieldError> = Vec::new();
    let parsed = match if mirrored {
        blocks::parse_mirrored("body", &c.body)
    } else {
        blocks::parse("body", &c.body)
    } {
        Ok(b) => b,
        Err(e) => {
            errors.extend(e);
            Vec::new()
        }
    };
    let excerpt = input::optional_text(&mut v, "excerpt", c.excerpt.as_deref(), 1000);
    let categories = input::labels(&mut v, "categories", &c.categories);
    let tags = input::tags(&mut v, &c.tags);
    if kind == ContentKind::Page {
        for (field, set) in [
            ("excerpt", excerpt.is_some()),
            ("cover_media_id", c.cover_media_id.is_some()),
            ("categories", !categories.is_empty()),
            ("tags", !tags.is_empty()),
            ("author_id", c.author_id.is_some()),
        ] {
            if set {
                v.error(field, "posts_only", "only posts have this field");
            }
        }
    } else if c.parent_id.is_some() {
        v.error("parent_id", "pages_only", "only pages have a parent");
    }
    // Images named anywhere must be images of the tenant's media library.
    let mut images: Vec<(String, Uuid)> = Vec::new();
    for (i, b) in parsed.iter().enumerate() {
        match b {
            blocks::Block::Image { media_id, .. } => images.push((format!("body[{i}].media_id"), *media_id)),
            blocks::Block::Gallery { items, .. } => images.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(j, g)| (format!("body[{i}].items[{j}].media_id"), g.media_id)),
            ),
            _ => {}
        }
    }
    images.extend(seo.image_media_id.map(|m| ("seo.image_media_id".to_owned(), m)));
    images.extend(c.cover_media_id.map(|m| ("cover_media_id".to_owned(), m)));
    if !images.is_empty() {
        let ids: Vec<Uuid> = images.iter().map(|(_, id)| *id).collect();
        let usable: Vec<Uuid> = sqlx::query_scalar(
            "select id from cms_media where id = any($1) and status <> 'rejected' \
             and coalesce(content_type, declared_type) like 'image/%'",
        )
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
        for (path, id) in &images {
            if !usable.contains(id) {
                errors.push(FieldError::new(
                    path,
                    "unknown_image",
                    "is not an image of the media library",
                ));
            }
        }
    }
    if let Some(parent) = c.parent_id {
        // The parent must be a page of the same site and not the page itself or below it.
        let ok: Option<bool> = sqlx::query_scalar(
            "with recursive up(id, parent_id, depth) as ( \
                 select id, parent_id, 0 from cms_items where id = $1 and kind = 'page' and site_id = $2 \
                 union all select i.id, i.parent_id, up.depth + 1 from cms_items i join up on i.id = up.parent_id \
                 where up.depth < 50) \
             select not bool_or(id = $3) from up",
        )
        .bind(parent)
        .bind(site)
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
        match ok {
            None => errors.push(FieldError::new(
                "parent_id",
                "unknown_parent",
                "is not a page of this site",
            )),
            Some(false) => errors.push(FieldError::new("parent_id", "cycle", "is this page or one below it")),
            Some(true) => {}
        }
    }
    if c.author_id.is_some() {
        let member: Option<Uuid> = sqlx::query_scalar("select user_id from memberships where user_id = $1")
            .bind(c.author_id)
            .fetch_optional(&mut **tx)
            .await?;
        if member.is_none() {
            errors.push(FieldError::new(
                "author_id",
                "unknown_member",
                "is not a member of the team",
            ));
        }
    }
    errors.extend(v.into_errors());
    if !errors.is_empty() {
        return Err(DomainError::Invalid(errors));
    }
    let slug = slug.unwrap_or_default();
    ensure_slug_free(tx, site, kind, id, &slug).await?;
    Ok(Content {
        title: title.unwrap_or_default(),
        slug: Some(slug),
        parent_id: c.parent_id,
        seo,
        body: serde_json::to_value(&parsed).map_err(anyhow::Error::from)?,
        excerpt,
        cover_media_id: c.cover_media_id,
        categories,
        tags,
        author_id: c.author_id,
    })
}

pub(crate) async fn write_revision(
    tx: &mut Tx,
    scope: &Scope,
    item: Uuid,
    number: i32,
    content: &Content,
    reason: &str,
    restored_from: Option<i32>,
) -> Result<(), DomainError> {
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    sqlx::query(
        "insert into cms_revisions (id, tenant_id, item_id, number, content, reason, restored_from, author) \
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(item)
    .bind(number)
    .bind(Json(content))
    .bind(reason)
    .bind(restored_from)
    .bind(scope.actor.principal())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Where a document is written: a new item (`source` `internal` or `wordpress` with the post's
/// id) or an existing one.
pub(crate) struct Target<'a> {
    pub tenant: Uuid,
    pub site: Uuid,
    pub kind: ContentKind,
    pub id: Uuid,
    pub external_id: Option<&'a str>,
}

/// Writes a checked document to its item — inserting it (revision 1) or replacing the content
/// of the existing one (the next revision) — and records that revision. Returns its number.
pub(crate) async fn save(
    tx: &mut Tx,
    scope: &Scope,
    target: &Target<'_>,
    c: &Content,
    reason: &str,
    restored_from: Option<i32>,
) -> Result<i32, DomainError> {
    let revision: i32 = sqlx::query_scalar(
        "insert into cms_items (id, tenant_id, site_id, kind, title, slug, parent_id, seo, body, excerpt, \
         cover_media_id, categories, tags, author_id, source, external_id) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                 case when $15::text is null then 'internal' else 'wordpress' end, $15) \
         on conflict (id) do update set title = excluded.title, slug = excluded.slug, parent_id = excluded.parent_id, \
           seo = excluded.seo, body = excluded.body, excerpt = excluded.excerpt, \
           cover_media_id = excluded.cover_media_id, categories = excluded.categories, tags = excluded.tags, \
           author_id = excluded.author_id, revision = cms_items.revision + 1, updated_at = now(), \
           version = cms_items.version + 1 \
         returning revision",
    )
    .bind(target.id)
    .bind(target.tenant)
    .bind(target.site)
    .bind(target.kind.as_str())
    .bind(&c.title)
    .bind(c.slug.as_deref())
    .bind(c.parent_id)
    .bind(Json(&c.seo))
    .bind(&c.body)
    .bind(c.excerpt.as_deref())
    .bind(c.cover_media_id)
    .bind(&c.categories)
    .bind(&c.tags)
    .bind(c.author_id)
    .bind(target.external_id)
    .fetch_one(&mut **tx)
    .await
    .map_err(slug_constraint)?;
    write_revision(tx, scope, target.id, revision, c, reason, restored_from).await?;
    Ok(revision)
}

impl Item {
    pub(crate) fn target(&self, tenant: Uuid) -> Target<'_> {
        Target {
            tenant,
            site: self.site_id,
            kind: if self.kind == "post" {
                ContentKind::Post
            } else {
                ContentKind::Page
            },
            id: self.id,
            external_id: self.external_id.as_deref(),
        }
    }
}

/// A slug taken by a concurrent writer between the check and the write.
pub(super) fn slug_constraint(e: sqlx::Error) -> DomainError {
    pg::map_constraint(
        e,
        &[
            ("cms_items_slug_key", || {
                DomainError::conflict("slug-taken", "another item of this site took this slug just now")
            }),
            ("cms_items_live_slug_key", || {
                DomainError::conflict("slug-taken", "another item of this site took this slug just now")
            }),
        ],
    )
}
