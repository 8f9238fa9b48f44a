//! Pages and posts of the tenant's sites: create, edit (a JSON merge patch of the editable
//! document), revisions with diff and restore, publish now or at a time, unpublish, archive,
//! delete. Both kinds share this editing model; a post also has an excerpt, a cover image,
//! categories, tags and an author, a page a parent page (the site's tree).
//!
//! - Every save writes a revision; restoring one writes a new revision with its content.
//! - Editing a published item changes its draft only: the public API serves `live`, the
//!   snapshot the last publish took, until the next publish.
//! - A slug is unique per site and kind among both the drafts and what is live; a taken slug
//!   answers 409 with the next free one. A published item's old slug stays as a redirect.
//! - A schedule names the revision it will publish (`scheduled_revision`): edits made after
//!   scheduling wait for the next publish.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, FieldError, Page, PageRequest, Scope, Text, Validator};
use crate::services::cms::{blocks, diff, slug};
use crate::services::crm::input;

/// Page or post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    Page,
    Post,
}

impl ContentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentKind::Page => "page",
            ContentKind::Post => "post",
        }
    }
}

/// Search-engine fields; each optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Seo {
    /// The `<title>` (default: the item's title), at most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The meta description, at most 320 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// An `https://` canonical URL, when the content lives elsewhere first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical_url: Option<String>,
    /// Ask search engines not to index the page.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub noindex: bool,
    /// The social sharing image (an image of the media library).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_media_id: Option<Uuid>,
}

/// The editable document of a page or post: what a revision holds and a PATCH merges into.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Content {
    pub title: String,
    /// Default: made from the title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// Pages only: the parent page (same site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<Uuid>,
    #[serde(default)]
    pub seo: Seo,
    /// Typed blocks (heading, rich_text, image, gallery, cta, embed), at most 200.
    #[serde(default = "empty_body")]
    #[schema(value_type = Vec<Object>)]
    pub body: Value,
    /// Posts only, at most 1,000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    /// Posts only: an image of the media library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cover_media_id: Option<Uuid>,
    /// Posts only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Posts only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Posts only: a member of the tenant (default: whoever creates the post).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_id: Option<Uuid>,
}

fn empty_body() -> Value {
    Value::Array(Vec::new())
}

/// A new page or post: its site and its first content.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// The site (`/analytics/sites`) it belongs to.
    pub site_id: Uuid,
    pub title: String,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    #[serde(default)]
    pub seo: Seo,
    #[serde(default = "empty_body")]
    #[schema(value_type = Vec<Object>)]
    pub body: Value,
    #[serde(default)]
    pub excerpt: Option<String>,
    #[serde(default)]
    pub cover_media_id: Option<Uuid>,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub author_id: Option<Uuid>,
}

impl NewItem {
    /// The site and the first content.
    pub fn into_parts(self) -> (Uuid, Content) {
        (
            self.site_id,
            Content {
                title: self.title,
                slug: self.slug,
                parent_id: self.parent_id,
                seo: self.seo,
                body: self.body,
                excerpt: self.excerpt,
                cover_media_id: self.cover_media_id,
                categories: self.categories,
                tags: self.tags,
                author_id: self.author_id,
            },
        )
    }
}

/// A page or post as the portal edits it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Item {
    pub id: Uuid,
    pub site_id: Uuid,
    /// `page` or `post`.
    pub kind: String,
    #[serde(flatten)]
    pub content: Content,
    /// `draft`, `scheduled`, `published` or `archived`.
    pub status: String,
    /// The newest revision's number.
    pub revision: i32,
    /// The revision the public sees, if published.
    pub live_revision: Option<i32>,
    /// The slug the public sees it under, if published.
    pub live_slug: Option<String>,
    /// The draft differs from what is live.
    pub unpublished_changes: bool,
    /// When a scheduled publish happens, and the revision it publishes.
    pub publish_at: Option<DateTime<Utc>>,
    pub scheduled_revision: Option<i32>,
    /// Why the last scheduled publish could not happen, if it could not.
    pub publish_error: Option<String>,
    /// First published.
    pub published_at: Option<DateTime<Utc>>,
    /// `internal`, or `wordpress` for posts of a connected WordPress site.
    pub source: String,
    pub external_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i32,
}

/// A row of a list: the item without its body.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ItemSummary {
    pub id: Uuid,
    pub site_id: Uuid,
    pub title: String,
    pub slug: String,
    pub parent_id: Option<Uuid>,
    pub status: String,
    pub revision: i32,
    pub live_revision: Option<i32>,
    pub publish_at: Option<DateTime<Utc>>,
    pub published_at: Option<DateTime<Utc>>,
    pub source: String,
    pub updated_at: DateTime<Utc>,
    pub version: i32,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ItemListParams {
    pub site_id: Option<Uuid>,
    /// `draft`, `scheduled`, `published` or `archived`.
    pub status: Option<String>,
    /// Pages only: the children of this page.
    pub parent_id: Option<Uuid>,
    /// Words of the title or the slug.
    pub q: Option<String>,
    /// Posts only.
    pub category: Option<String>,
    /// Posts only.
    pub tag: Option<String>,
    /// 1–100, default 25.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Publish now (no `at`, or a time not in the future) or at `at`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
}

/// Take an item off the site: back to `draft`, or `archived`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnpublishRequest {
    pub status: String,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct RevisionSummary {
    pub number: i32,
    /// `created`, `edited` or `restored`.
    pub reason: String,
    /// The revision a `restored` one copied.
    pub restored_from: Option<i32>,
    /// `user:<id>` or `key:<id>`.
    pub author: Option<String>,
    pub created_at: DateTime<Utc>,
    pub title: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Revision {
    #[serde(flatten)]
    pub summary: RevisionSummary,
    pub content: Content,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RevisionListParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffParams {
    /// The older revision's number (required).
    pub from: Option<i32>,
    /// The newer revision's number (required).
    pub to: Option<i32>,
}

/// What changed from one revision to another.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevisionDiff {
    pub from: i32,
    pub to: i32,
    pub fields: Vec<diff::FieldChange>,
    pub blocks: Vec<diff::BlockChange>,
}

const FIELDS: [&str; 9] = [
    "title",
    "slug",
    "parent_id",
    "seo",
    "excerpt",
    "cover_media_id",
    "categories",
    "tags",
    "author_id",
];
const SELECT_ITEM: &str = "select id, site_id, kind, title, slug, parent_id, seo, body, excerpt, cover_media_id, \
    categories, tags, author_id, status, revision, live_revision, live_slug, publish_at, scheduled_revision, \
    publish_error, published_at, source, external_id, created_at, updated_at, version from cms_items";

#[derive(sqlx::FromRow)]
struct ItemRow {
    id: Uuid,
    site_id: Uuid,
    kind: String,
    title: String,
    slug: String,
    parent_id: Option<Uuid>,
    seo: Json<Seo>,
    body: Value,
    excerpt: Option<String>,
    cover_media_id: Option<Uuid>,
    categories: Vec<String>,
    tags: Vec<String>,
    author_id: Option<Uuid>,
    status: String,
    revision: i32,
    live_revision: Option<i32>,
    live_slug: Option<String>,
    publish_at: Option<DateTime<Utc>>,
    scheduled_revision: Option<i32>,
    publish_error: Option<String>,
    published_at: Option<DateTime<Utc>>,
    source: String,
    external_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i32,
}

impl ItemRow {
    fn into_item(self) -> Item {
        Item {
            id: self.id,
            site_id: self.site_id,
            kind: self.kind,
            content: Content {
                title: self.title,
                slug: Some(self.slug),
                parent_id: self.parent_id,
                seo: self.seo.0,
                body: self.body,
                excerpt: self.excerpt,
                cover_media_id: self.cover_media_id,
                categories: self.categories,
                tags: self.tags,
                author_id: self.author_id,
            },
            status: self.status,
            revision: self.revision,
            live_revision: self.live_revision,
            live_slug: self.live_slug,
            unpublished_changes: self.live_revision.is_some_and(|live| live != self.revision),
            publish_at: self.publish_at,
            scheduled_revision: self.scheduled_revision,
            publish_error: self.publish_error,
            published_at: self.published_at,
            source: self.source,
            external_id: self.external_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
        }
    }
}

pub(crate) async fn fetch(tx: &mut Tx, kind: ContentKind, id: Uuid, lock: bool) -> Result<Item, DomainError> {
    let sql = format!(
        "{} where id = $1 and kind = $2{}",
        SELECT_ITEM,
        if lock { " for no key update" } else { "" }
    );
    let row: Option<ItemRow> = sqlx::query_as(&sql)
        .bind(id)
        .bind(kind.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    row.map(ItemRow::into_item).ok_or(DomainError::NotFound)
}

fn slug_taken(slug: &str, suggestion: String) -> DomainError {
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
fn slug_constraint(e: sqlx::Error) -> DomainError {
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

pub async fn create(pool: &PgPool, scope: &Scope, kind: ContentKind, input: NewItem) -> Result<Item, DomainError> {
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let (site, mut content) = input.into_parts();
    if kind == ContentKind::Post && content.author_id.is_none() {
        content.author_id = scope.actor.person();
    }
    let id = Uuid::now_v7();
    let mut tx = pg::begin(pool, scope).await?;
    let site_known: Option<Uuid> = sqlx::query_scalar("select id from analytics_sites where id = $1 for key share")
        .bind(site)
        .fetch_optional(&mut *tx)
        .await?;
    if site_known.is_none() {
        return Err(DomainError::invalid(
            "site_id",
            "unknown_site",
            "is not a site of this tenant",
        ));
    }
    let c = check(&mut tx, kind, site, id, content, false).await?;
    let target = Target {
        tenant,
        site,
        kind,
        id,
        external_id: None,
    };
    save(&mut tx, scope, &target, &c, "created", None).await?;
    let item = fetch(&mut tx, kind, id, false).await?;
    tx.commit().await?;
    Ok(item)
}

pub async fn get(pool: &PgPool, scope: &Scope, kind: ContentKind, id: Uuid) -> Result<Item, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let item = fetch(&mut tx, kind, id, false).await?;
    tx.commit().await?;
    Ok(item)
}

/// Items of a kind, most recently changed first.
pub async fn list(
    pool: &PgPool,
    scope: &Scope,
    kind: ContentKind,
    params: ItemListParams,
) -> Result<Page<ItemSummary>, DomainError> {
    let page = pg::time_page_request(params.limit, params.cursor.as_deref())?;
    let mut v = Validator::new();
    if let Some(s) = params.status.as_deref()
        && !["draft", "scheduled", "published", "archived"].contains(&s)
    {
        v.error(
            "status",
            "invalid_status",
            "must be draft, scheduled, published or archived",
        );
    }
    let q = input::optional_text(&mut v, "q", params.q.as_deref(), 200).map(|q| q.to_lowercase());
    let category = input::optional_text(&mut v, "category", params.category.as_deref(), 50).map(|c| c.to_lowercase());
    let tag = input::optional_text(&mut v, "tag", params.tag.as_deref(), 50).map(|t| t.to_lowercase());
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    let rows: Vec<ItemSummary> = sqlx::query_as(
        "select id, site_id, title, slug, parent_id, status, revision, live_revision, publish_at, published_at, \
         source, updated_at, version from cms_items \
         where kind = $4 and ($1::timestamptz is null or (updated_at, id) < ($1, $2)) \
           and ($5::uuid is null or site_id = $5) and ($6::text is null or status = $6) \
           and ($7::uuid is null or parent_id = $7) \
           and ($8::text is null or strpos(lower(title), $8) > 0 or strpos(slug, $8) > 0) \
           and ($9::text is null or $9 = any(categories)) and ($10::text is null or $10 = any(tags)) \
         order by updated_at desc, id desc limit $3",
    )
    .bind(page.after.map(|a| a.0))
    .bind(page.after.map(|a| a.1))
    .bind(page.fetch())
    .bind(kind.as_str())
    .bind(params.site_id)
    .bind(params.status)
    .bind(params.parent_id)
    .bind(q)
    .bind(category)
    .bind(tag)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Page::from_rows(rows, page.limit, |i| (i.updated_at, i.id)))
}

/// A JSON merge patch of the editable document (`null` clears a field); writes a revision when
/// anything changed.
pub async fn update(
    pool: &PgPool,
    scope: &Scope,
    kind: ContentKind,
    id: Uuid,
    patch: Value,
    if_match: Option<i32>,
) -> Result<Item, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let current = fetch(&mut tx, kind, id, true).await?;
    let (content, _) = input::patched(&current.content, &patch)?;
    let c = check(
        &mut tx,
        kind,
        current.site_id,
        id,
        content,
        current.source == "wordpress",
    )
    .await?;
    if if_match.is_some_and(|v| v != current.version) {
        return Err(DomainError::StaleVersion);
    }
    if c == current.content {
        tx.commit().await?;
        return Ok(current);
    }
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    save(&mut tx, scope, &current.target(tenant), &c, "edited", None).await?;
    let item = fetch(&mut tx, kind, id, false).await?;
    tx.commit().await?;
    Ok(item)
}

/// Deletes an item with its revisions and redirects; a page with child pages answers 409.
pub async fn delete(pool: &PgPool, scope: &Scope, kind: ContentKind, id: Uuid) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    fetch(&mut tx, kind, id, true).await?;
    let children: i64 = sqlx::query_scalar("select count(*) from cms_items where parent_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if children > 0 {
        return Err(DomainError::conflict(
            "page-has-children",
            format!("{children} page(s) have this page as their parent: move or delete them first"),
        ));
    }
    sqlx::query("delete from cms_items where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            pg::map_constraint(
                e,
                &[("cms_items_parent_fk", || {
                    DomainError::conflict("page-has-children", "a page was put under this page just now")
                })],
            )
        })?;
    tx.commit().await?;
    Ok(())
}

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

pub async fn revisions(
    pool: &PgPool,
    scope: &Scope,
    kind: ContentKind,
    id: Uuid,
    params: RevisionListParams,
) -> Result<Page<RevisionSummary>, DomainError> {
    let page: PageRequest<i32> = PageRequest::checked(params.limit, params.cursor.as_deref())?;
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
    Ok(Page::from_rows(rows, page.limit, |r| r.number))
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
enum Due {
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
async fn publish_one(pool: &PgPool, scope: &Scope, id: Uuid, now: DateTime<Utc>) -> Result<Due, DomainError> {
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
async fn unschedule_failed(pool: &PgPool, scope: &Scope, id: Uuid, why: &str) -> Result<(), DomainError> {
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
