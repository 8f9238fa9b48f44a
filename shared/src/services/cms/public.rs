//! What a tenant's website reads: its published pages and posts by site key, as the last
//! publish left them (`live`), with the media they show resolved to URLs. Drafts, schedules,
//! archived items and unpublished edits never appear: only `live` is read, and only items that
//! have one. An old slug of a published item answers with where it moved.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::adapters::pg;
use crate::domain::validate::OptionalTextSchema;
use crate::domain::{DomainError, PageParams, PageRequest, ResultPage, Validator};
use crate::services::cms::items::ContentKind;
use crate::services::cms::slug;
use crate::services::crm::input;

/// A thumbnail of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Thumbnail {
    pub width: i32,
    pub height: i32,
    /// The object's key in the media bucket (the public answer gives `url`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
}

/// An image a published item shows.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct PublicMedia {
    pub id: Uuid,
    pub url: String,
    pub content_type: String,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub alt: String,
    #[sqlx(json)]
    pub thumbnails: Vec<Thumbnail>,
}

/// A published page or post.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PublicItem {
    pub slug: String,
    /// The live revision's content: title, seo, body, and for posts excerpt, cover image,
    /// categories, tags.
    #[schema(value_type = Object)]
    pub content: Value,
    /// The author's display name (posts).
    pub author: Option<String>,
    /// First published.
    pub published_at: Option<DateTime<Utc>>,
    /// Last published.
    pub modified_at: Option<DateTime<Utc>>,
    /// The images the content names (`media_id`, `cover_media_id`, `seo.image_media_id`).
    pub media: Vec<PublicMedia>,
}

/// A row of the public post list.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct PublicPost {
    #[serde(skip)]
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    pub excerpt: Option<String>,
    pub cover_media_id: Option<Uuid>,
    pub categories: Vec<String>,
    pub tags: Vec<String>,
    pub author: Option<String>,
    pub published_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PublicPostParams {
    /// Posts of this category (at most 50 characters).
    #[param(value_type = Option<OptionalTextSchema<50>>, inline)]
    pub category: Option<String>,
    /// Posts with this tag (at most 50 characters).
    #[param(value_type = Option<OptionalTextSchema<50>>, inline)]
    pub tag: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
}

/// The answer for a slug.
#[derive(Debug)]
pub enum Found {
    Item(Box<PublicItem>),
    /// The item is live under another slug now.
    Moved(String),
}

/// An ETag of a public answer: its bytes' hash (what it shows changes when anything in it does).
pub fn etag(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("\"{}\"", hex::encode(digest.get(..12).unwrap_or_default()))
}

/// The site of a key: `(site_id, tenant_id)` (`$1` the key; run without a tenant).
pub const SITE_SQL: &str = "select site_id, tenant_id from app_analytics_site($1)";

/// A live item by slug: its snapshot, author name, first and last publish (`$1` site, `$2`
/// kind, `$3` slug; in the site's tenant).
pub const ITEM_SQL: &str = "select i.live, (select nullif(u.name, '') from users u \
    where u.id = (i.live ->> 'author_id')::uuid), i.published_at, i.live_at from cms_items i \
    where i.site_id = $1 and i.kind = $2 and i.live_slug = $3 and i.live is not null";

/// The site a key names: (site id, tenant id); 404 for an unknown key.
async fn site(tx: &mut pg::Tx, key: &str) -> Result<Uuid, DomainError> {
    let well_formed =
        (1..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !well_formed {
        return Err(DomainError::NotFound);
    }
    let site: Option<(Uuid, Uuid)> = sqlx::query_as(SITE_SQL).bind(key).fetch_optional(&mut **tx).await?;
    let (site, tenant) = site.ok_or(DomainError::NotFound)?;
    pg::set_tenant(tx, tenant).await?;
    Ok(site)
}

fn media_ids(content: &Value) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut push = |v: Option<&Value>| {
        if let Some(id) = v.and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok())
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    };
    for block in content.get("body").and_then(Value::as_array).into_iter().flatten() {
        push(block.get("media_id"));
        for item in block.get("items").and_then(Value::as_array).into_iter().flatten() {
            push(item.get("media_id"));
        }
    }
    push(content.get("cover_media_id"));
    push(content.get("seo").and_then(|s| s.get("image_media_id")));
    ids
}

/// A published item of the site by slug (`media_base`: the public URL of the media bucket).
pub async fn item(
    pool: &PgPool,
    key: &str,
    kind: ContentKind,
    slug: &str,
    media_base: &str,
) -> Result<Found, DomainError> {
    // Not a slug: no page has it.
    slug::parse(slug).map_err(|_| DomainError::NotFound)?;
    let mut tx = pool.begin().await?;
    let site = site(&mut tx, key).await?;
    type Row = (Value, Option<String>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let row: Option<Row> = sqlx::query_as(ITEM_SQL)
        .bind(site)
        .bind(kind.as_str())
        .bind(slug)
        .fetch_optional(&mut *tx)
        .await?;
    let Some((mut content, author, published_at, modified_at)) = row else {
        let moved: Option<String> = sqlx::query_scalar(
            "select i.live_slug from cms_redirects r join cms_items i on i.id = r.item_id \
             where r.site_id = $1 and r.kind = $2 and r.slug = $3 and i.live is not null",
        )
        .bind(site)
        .bind(kind.as_str())
        .bind(slug)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        return moved.map(Found::Moved).ok_or(DomainError::NotFound);
    };
    let ids = media_ids(&content);
    let media: Vec<PublicMedia> = if ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "select id, $2 || '/' || object_key as url, content_type, width, height, alt, thumbnails \
             from cms_media where id = any($1) and status = 'ready' order by id",
        )
        .bind(&ids)
        .bind(media_base.trim_end_matches('/'))
        .fetch_all(&mut *tx)
        .await?
    };
    tx.commit().await?;
    let media = media
        .into_iter()
        .map(|mut m| {
            for t in &mut m.thumbnails {
                t.url = format!("{}/{}", media_base.trim_end_matches('/'), t.key);
                t.key = String::new();
            }
            m
        })
        .collect();
    let slug = content.get("slug").and_then(Value::as_str).unwrap_or(slug).to_owned();
    if let Value::Object(map) = &mut content {
        for internal in ["slug", "author_id", "parent_id", "revision"] {
            map.remove(internal);
        }
    }
    Ok(Found::Item(Box::new(PublicItem {
        slug,
        content,
        author,
        published_at,
        modified_at,
        media,
    })))
}

/// The site's published posts, newest first.
pub async fn posts(pool: &PgPool, key: &str, params: PublicPostParams) -> Result<ResultPage<PublicPost>, DomainError> {
    let page: PageRequest<pg::TimeKey> = pg::time_page_request(&params.page)?;
    let mut v = Validator::new();
    let category = input::optional_text(&mut v, "category", params.category.as_deref(), 50).map(|c| c.to_lowercase());
    let tag = input::optional_text(&mut v, "tag", params.tag.as_deref(), 50).map(|t| t.to_lowercase());
    v.finish()?;
    let mut tx = pool.begin().await?;
    let site = site(&mut tx, key).await?;
    let rows: Vec<PublicPost> = sqlx::query_as(
        "select i.id, i.live_slug as slug, i.live ->> 'title' as title, i.live ->> 'excerpt' as excerpt, \
         (i.live ->> 'cover_media_id')::uuid as cover_media_id, \
         array(select jsonb_array_elements_text(i.live -> 'categories')) as categories, \
         array(select jsonb_array_elements_text(i.live -> 'tags')) as tags, \
         (select nullif(u.name, '') from users u where u.id = (i.live ->> 'author_id')::uuid) as author, \
         i.published_at from cms_items i \
         where i.site_id = $4 and i.kind = 'post' and i.live is not null \
           and ($1::timestamptz is null or (i.published_at, i.id) < ($1, $2)) \
           and ($5::text is null or i.live -> 'categories' ? $5) and ($6::text is null or i.live -> 'tags' ? $6) \
         order by i.published_at desc, i.id desc limit $3",
    )
    .bind(page.after.map(|a| a.0))
    .bind(page.after.map(|a| a.1))
    .bind(page.fetch())
    .bind(site)
    .bind(category)
    .bind(tag)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |p| (p.published_at, p.id)))
}
