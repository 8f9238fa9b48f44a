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
use crate::domain::validate::{OptionalTextSchema, TextSchema};
use crate::domain::{DomainError, FieldError, PageParams, PageRequest, ResultPage, Scope, Text, Validator};
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
    #[schema(value_type = Option<OptionalTextSchema<200>>, inline)]
    pub title: Option<String>,
    /// The meta description, at most 320 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OptionalTextSchema<320>>, inline)]
    pub description: Option<String>,
    /// An `https://` canonical URL, when the content lives elsewhere first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2000, pattern = r"^https://")]
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
    /// 1–200 characters.
    #[schema(value_type = TextSchema<200>, inline)]
    pub title: String,
    /// 1–100 of `a-z`, `0-9` and single hyphens between them. Default: made from the title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 100, pattern = r"^[a-z0-9]+(-[a-z0-9]+)*$")]
    pub slug: Option<String>,
    /// Pages only: the parent page (same site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<Uuid>,
    #[serde(default)]
    pub seo: Seo,
    /// Typed blocks (heading, rich_text, image, gallery, cta, embed), at most 200.
    #[serde(default = "empty_body")]
    #[schema(value_type = Vec<Object>, max_items = 200)]
    pub body: Value,
    /// Posts only, at most 1,000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OptionalTextSchema<1000>>, inline)]
    pub excerpt: Option<String>,
    /// Posts only: an image of the media library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cover_media_id: Option<Uuid>,
    /// Posts only: at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<TextSchema<50>>, inline, max_items = 50)]
    pub categories: Vec<String>,
    /// Posts only: at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<TextSchema<50>>, inline, max_items = 50)]
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
    /// 1–200 characters.
    #[schema(value_type = TextSchema<200>, inline)]
    pub title: String,
    /// 1–100 of `a-z`, `0-9` and single hyphens between them. Default: made from the title.
    #[serde(default)]
    #[schema(max_length = 100, pattern = r"^[a-z0-9]+(-[a-z0-9]+)*$")]
    pub slug: Option<String>,
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    #[serde(default)]
    pub seo: Seo,
    /// Typed blocks (heading, rich_text, image, gallery, cta, embed), at most 200.
    #[serde(default = "empty_body")]
    #[schema(value_type = Vec<Object>, max_items = 200)]
    pub body: Value,
    /// Posts only, at most 1,000 characters.
    #[serde(default)]
    #[schema(value_type = Option<OptionalTextSchema<1000>>, inline)]
    pub excerpt: Option<String>,
    #[serde(default)]
    pub cover_media_id: Option<Uuid>,
    /// Posts only: at most 50.
    #[serde(default)]
    #[schema(value_type = Vec<TextSchema<50>>, inline, max_items = 50)]
    pub categories: Vec<String>,
    /// Posts only: at most 50.
    #[serde(default)]
    #[schema(value_type = Vec<TextSchema<50>>, inline, max_items = 50)]
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
    #[param(value_type = Option<ItemStatus>, inline)]
    pub status: Option<String>,
    /// Pages only: the children of this page.
    pub parent_id: Option<Uuid>,
    /// Words of the title or the slug (at most 200 characters).
    #[param(value_type = Option<OptionalTextSchema<200>>, inline)]
    pub q: Option<String>,
    /// Posts only (at most 50 characters).
    #[param(value_type = Option<OptionalTextSchema<50>>, inline)]
    pub category: Option<String>,
    /// Posts only (at most 50 characters).
    #[param(value_type = Option<OptionalTextSchema<50>>, inline)]
    pub tag: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
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
    #[schema(value_type = UnpublishedStatus)]
    pub status: String,
}

/// Where a page or post is in its life (`status`).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ItemStatus {
    Draft,
    Scheduled,
    Published,
    Archived,
}

/// What an unpublished page or post becomes.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum UnpublishedStatus {
    Draft,
    Archived,
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
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffParams {
    /// The older revision's number.
    #[param(required = true)]
    pub from: Option<i32>,
    /// The newer revision's number.
    #[param(required = true)]
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

mod publish;
mod revisions;
mod save;

pub use publish::*;
pub use revisions::*;
pub(crate) use save::*;

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
) -> Result<ResultPage<ItemSummary>, DomainError> {
    let page = pg::time_page_request(&params.page)?;
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
    Ok(ResultPage::from_rows(rows, page.limit, |i| (i.updated_at, i.id)))
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
