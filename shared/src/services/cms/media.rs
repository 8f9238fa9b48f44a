//! The media library: uploads granted as presigned PUTs (type and size declared up front and
//! checked against the allowed types, their size limits and the plan's storage), then listed,
//! searched, renamed, described (alt text), moved between folders, tagged and deleted (the
//! bucket's objects too). media-processor (`cms::process`) fills in what the bytes say.
//!
//! An item's `object_key` is where it is served once accepted (`media/…/original`); its bytes
//! are uploaded to the private twin of that key (`uploads/…/original`, `MediaStore`), and only
//! media-processor copies them to the public key, after checking them.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::adapters::media_store::MediaStore;
use crate::adapters::pg::{self, Tx};
use crate::domain::validate::{OptionalTextSchema, TextSchema};
use crate::domain::{DomainError, PageParams, ResultPage, Scope, Text, Validator};
use crate::services::billing::entitlements::{self, Limit};
use crate::services::cms::public::Thumbnail;
use crate::services::crm::input;

const MIB: i64 = 1024 * 1024;

/// The types the library takes, with the largest file of each.
pub const TYPES: [(&str, i64); 9] = [
    ("image/jpeg", 20 * MIB),
    ("image/png", 20 * MIB),
    ("image/gif", 20 * MIB),
    ("image/webp", 20 * MIB),
    ("image/svg+xml", 2 * MIB),
    ("application/pdf", 50 * MIB),
    ("video/mp4", 500 * MIB),
    ("video/webm", 500 * MIB),
    ("text/plain", MIB),
];

/// A pending upload older than this no longer holds storage (its link expired long ago).
const PENDING_HOLDS_FOR: &str = "1 hour";

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaUploadRequest {
    /// The file name shown in the library, 1–200 characters.
    #[schema(value_type = TextSchema<200>, inline)]
    pub name: String,
    /// One of the allowed types.
    #[schema(value_type = MediaContentType)]
    pub content_type: String,
    /// The exact size in bytes; the presigned PUT accepts only this length. At most 1 MiB for
    /// `text/plain`, 2 MiB for `image/svg+xml`, 20 MiB for the other images, 50 MiB for PDF
    /// and 500 MiB for video.
    #[schema(minimum = 1, maximum = 524_288_000)]
    pub size: i64,
    /// A folder path such as `blog/2026`: names joined by `/`, none `.` or `..`, at most 200
    /// characters (default and `""`: the top).
    #[serde(default)]
    #[schema(
        max_length = 200,
        pattern = r"^(/*[^/\s.\x00-\x1f\x7f-\x9f][^/\x00-\x1f\x7f-\x9f]*(/[^/\s.\x00-\x1f\x7f-\x9f][^/\x00-\x1f\x7f-\x9f]*)*/*)?$"
    )]
    pub folder: Option<String>,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(value_type = Option<OptionalTextSchema<500>>, inline)]
    pub alt: Option<String>,
    /// Tags: 1–50 characters each (stored in lower case), at most 50.
    #[serde(default)]
    #[schema(value_type = Vec<TextSchema<50>>, inline, max_items = 50)]
    pub tags: Vec<String>,
}

/// The file types the library takes (`content_type` of an upload).
#[derive(ToSchema)]
pub enum MediaContentType {
    #[schema(rename = "image/jpeg")]
    Jpeg,
    #[schema(rename = "image/png")]
    Png,
    #[schema(rename = "image/gif")]
    Gif,
    #[schema(rename = "image/webp")]
    Webp,
    #[schema(rename = "image/svg+xml")]
    Svg,
    #[schema(rename = "application/pdf")]
    Pdf,
    #[schema(rename = "video/mp4")]
    Mp4,
    #[schema(rename = "video/webm")]
    Webm,
    #[schema(rename = "text/plain")]
    Text,
}

/// What a library item is (`type` of the list), by its content type.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Video,
    Document,
    Text,
}

/// Where a library item is in its processing (`status` of the list).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum MediaStatus {
    Pending,
    Ready,
    Rejected,
}

/// How to send the bytes: `PUT url` with exactly these headers and the declared size.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MediaUploadTicket {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MediaUpload {
    pub media: Media,
    pub upload: MediaUploadTicket,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Media {
    pub id: Uuid,
    pub name: String,
    pub folder: String,
    pub alt: String,
    pub tags: Vec<String>,
    /// The type the uploader declared.
    pub declared_type: String,
    pub declared_size: i64,
    /// `pending` (not processed yet), `ready` or `rejected` (the bytes were removed).
    pub status: String,
    /// The type sniffed from the bytes.
    pub content_type: Option<String>,
    pub size_bytes: Option<i64>,
    pub checksum_sha256: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    #[sqlx(json)]
    pub thumbnails: Vec<Thumbnail>,
    pub reject_reason: Option<String>,
    /// Where the site reads it (ready items).
    #[sqlx(skip)]
    pub url: Option<String>,
    #[serde(skip)]
    pub object_key: String,
    pub processed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i32,
}

impl Media {
    fn with_urls(mut self, store: &MediaStore) -> Self {
        let base = store.public_base_url.trim_end_matches('/');
        if self.status == "ready" {
            self.url = Some(format!("{base}/{}", self.object_key));
            for t in &mut self.thumbnails {
                t.url = format!("{base}/{}", t.key);
            }
        }
        for t in &mut self.thumbnails {
            t.key = String::new();
        }
        self
    }
}

/// The editable fields (a PATCH is a JSON merge patch of these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaEdit {
    pub name: String,
    pub folder: String,
    pub alt: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MediaListParams {
    /// Items of this folder (`""`: the top); without it, every folder.
    #[param(
        max_length = 200,
        pattern = r"^(/*[^/\s.\x00-\x1f\x7f-\x9f][^/\x00-\x1f\x7f-\x9f]*(/[^/\s.\x00-\x1f\x7f-\x9f][^/\x00-\x1f\x7f-\x9f]*)*/*)?$"
    )]
    pub folder: Option<String>,
    /// Items with this tag (at most 50 characters).
    #[param(value_type = Option<OptionalTextSchema<50>>, inline)]
    pub tag: Option<String>,
    /// `image`, `video`, `document` or `text`.
    #[serde(rename = "type")]
    #[param(value_type = Option<MediaKind>, inline)]
    pub kind: Option<String>,
    /// Words of the name or alt text (at most 200 characters).
    #[param(value_type = Option<OptionalTextSchema<200>>, inline)]
    pub q: Option<String>,
    /// `pending`, `ready` or `rejected`.
    #[param(value_type = Option<MediaStatus>, inline)]
    pub status: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    pub page: PageParams,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct MediaFolder {
    pub folder: String,
    pub items: i64,
    pub bytes: i64,
}

const COLUMNS: &str = "id, name, folder, alt, tags, declared_type, declared_size, status, content_type, size_bytes, \
    checksum_sha256, width, height, thumbnails, reject_reason, object_key, processed_at, created_at, updated_at, version";

fn folder(v: &mut Validator, raw: Option<&str>) -> String {
    let Some(raw) = raw.map(str::trim).filter(|f| !f.is_empty()) else {
        return String::new();
    };
    let parts: Vec<&str> = raw.trim_matches('/').split('/').map(str::trim).collect();
    let ok = raw.chars().count() <= 200
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != ".." && !p.chars().any(char::is_control));
    if !ok {
        v.error(
            "folder",
            "invalid_folder",
            "must be names joined by / (such as blog/2026), at most 200 characters",
        );
    }
    parts.join("/")
}

fn check_edit(v: &mut Validator, e: &MediaEdit) -> MediaEdit {
    MediaEdit {
        name: v
            .field("name", Text::parse(&e.name, 1, 200))
            .map(Text::into_inner)
            .unwrap_or_default(),
        folder: folder(v, Some(&e.folder)),
        alt: input::text(v, "alt", &e.alt, 500),
        tags: input::tags(v, &e.tags),
    }
}

/// Storage in use: processed bytes, and the declared size of uploads still expected.
async fn storage_used(tx: &mut Tx) -> Result<i64, DomainError> {
    let used: i64 = sqlx::query_scalar(&format!(
        "select coalesce(sum(coalesce(size_bytes, declared_size)), 0)::bigint from cms_media \
         where status = 'ready' or (status = 'pending' and created_at > now() - interval '{PENDING_HOLDS_FOR}')"
    ))
    .fetch_one(&mut **tx)
    .await?;
    Ok(used)
}

/// Grants an upload: a pending library item and a presigned PUT for exactly its bytes.
pub async fn create_upload(
    pool: &PgPool,
    store: &MediaStore,
    scope: &Scope,
    input: MediaUploadRequest,
) -> Result<MediaUpload, DomainError> {
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let mut v = Validator::new();
    let edit = check_edit(
        &mut v,
        &MediaEdit {
            name: input.name,
            folder: input.folder.unwrap_or_default(),
            alt: input.alt.unwrap_or_default(),
            tags: input.tags,
        },
    );
    let content_type = input.content_type.trim().to_ascii_lowercase();
    match TYPES.iter().find(|(t, _)| *t == content_type) {
        None => v.error(
            "content_type",
            "unsupported_type",
            format!(
                "must be one of {}",
                TYPES.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
            ),
        ),
        Some((_, max)) if input.size < 1 || input.size > *max => v.error(
            "size",
            "out_of_range",
            format!("a {content_type} file must be 1 byte to {} MiB", max / MIB),
        ),
        Some(_) => {}
    }
    v.finish()?;
    let id = Uuid::now_v7();
    let key = MediaStore::public_key(tenant, id);
    let mut tx = pg::begin(pool, scope).await?;
    entitlements::lock(&mut tx, Limit::StorageBytes).await?;
    let used = storage_used(&mut tx).await?;
    entitlements::ensure(&mut tx, Limit::StorageBytes, used, input.size).await?;
    let media: Media = sqlx::query_as(&format!(
        "insert into cms_media (id, tenant_id, name, folder, alt, tags, declared_type, declared_size, object_key, \
         created_by) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning {COLUMNS}"
    ))
    .bind(id)
    .bind(tenant)
    .bind(&edit.name)
    .bind(&edit.folder)
    .bind(&edit.alt)
    .bind(&edit.tags)
    .bind(&content_type)
    .bind(input.size)
    .bind(&key)
    .bind(scope.actor.principal())
    .fetch_one(&mut *tx)
    .await?;
    let size = u64::try_from(input.size).map_err(anyhow::Error::from)?;
    let presigned = store
        .presign_upload(&MediaStore::upload_key(tenant, id), &content_type, size)
        .await?;
    tx.commit().await?;
    Ok(MediaUpload {
        media: media.with_urls(store),
        upload: MediaUploadTicket {
            method: "PUT".to_owned(),
            url: presigned.url,
            headers: presigned.headers,
            expires_at: presigned.expires_at,
        },
    })
}

async fn fetch(tx: &mut Tx, id: Uuid, lock: bool) -> Result<Media, DomainError> {
    let row: Option<Media> = sqlx::query_as(&format!(
        "select {COLUMNS} from cms_media where id = $1{}",
        if lock { " for no key update" } else { "" }
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.ok_or(DomainError::NotFound)
}

pub async fn get(pool: &PgPool, store: &MediaStore, scope: &Scope, id: Uuid) -> Result<Media, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let m = fetch(&mut tx, id, false).await?;
    tx.commit().await?;
    Ok(m.with_urls(store))
}

/// The library, newest first.
pub async fn list(
    pool: &PgPool,
    store: &MediaStore,
    scope: &Scope,
    params: MediaListParams,
) -> Result<ResultPage<Media>, DomainError> {
    let page = pg::time_page_request(&params.page)?;
    let mut v = Validator::new();
    let kind = match params.kind.as_deref() {
        None => None,
        Some("image") => Some("image/%"),
        Some("video") => Some("video/%"),
        Some("document") => Some("application/%"),
        Some("text") => Some("text/%"),
        Some(_) => {
            v.error("type", "invalid_type", "must be image, video, document or text");
            None
        }
    };
    if let Some(s) = params.status.as_deref()
        && !["pending", "ready", "rejected"].contains(&s)
    {
        v.error("status", "invalid_status", "must be pending, ready or rejected");
    }
    let folder = params.folder.as_deref().map(|f| folder(&mut v, Some(f)));
    let q = input::optional_text(&mut v, "q", params.q.as_deref(), 200).map(|q| q.to_lowercase());
    let tag = input::optional_text(&mut v, "tag", params.tag.as_deref(), 50).map(|t| t.to_lowercase());
    v.finish()?;
    let mut tx = pg::begin(pool, scope).await?;
    let rows: Vec<Media> = sqlx::query_as(&format!(
        "select {COLUMNS} from cms_media \
         where ($1::timestamptz is null or (created_at, id) < ($1, $2)) \
           and ($4::text is null or folder = $4) and ($5::text is null or $5 = any(tags)) \
           and ($6::text is null or coalesce(content_type, declared_type) like $6) \
           and ($7::text is null or strpos(lower(name), $7) > 0 or strpos(lower(alt), $7) > 0) \
           and ($8::text is null or status = $8) \
         order by created_at desc, id desc limit $3"
    ))
    .bind(page.after.map(|a| a.0))
    .bind(page.after.map(|a| a.1))
    .bind(page.fetch())
    .bind(folder)
    .bind(tag)
    .bind(kind)
    .bind(q)
    .bind(params.status)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ResultPage::from_rows(rows, page.limit, |m| (m.created_at, m.id)).map(|m| m.with_urls(store)))
}

/// The folders in use, with how many items and bytes each holds.
pub async fn folders(pool: &PgPool, scope: &Scope) -> Result<Vec<MediaFolder>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let rows = sqlx::query_as(
        "select folder, count(*) as items, coalesce(sum(size_bytes), 0)::bigint as bytes from cms_media \
         where status <> 'rejected' group by folder order by folder",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Rename, alt text, move (folder), tags: a JSON merge patch of those fields.
pub async fn update(
    pool: &PgPool,
    store: &MediaStore,
    scope: &Scope,
    id: Uuid,
    patch: Value,
    if_match: Option<i32>,
) -> Result<Media, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let current = fetch(&mut tx, id, true).await?;
    let before = MediaEdit {
        name: current.name.clone(),
        folder: current.folder.clone(),
        alt: current.alt.clone(),
        tags: current.tags.clone(),
    };
    let (edit, _) = input::patched(&before, &patch)?;
    let mut v = Validator::new();
    let edit = check_edit(&mut v, &edit);
    v.finish()?;
    if if_match.is_some_and(|v| v != current.version) {
        return Err(DomainError::StaleVersion);
    }
    if edit == before {
        tx.commit().await?;
        return Ok(current.with_urls(store));
    }
    let m: Media = sqlx::query_as(&format!(
        "update cms_media set name = $2, folder = $3, alt = $4, tags = $5, updated_at = now(), version = version + 1 \
         where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(&edit.name)
    .bind(&edit.folder)
    .bind(&edit.alt)
    .bind(&edit.tags)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(m.with_urls(store))
}

/// Deletes an item and its objects (the upload, its public copy and thumbnails). The objects go
/// first: when that fails the item stays and a retry deletes both.
pub async fn delete(pool: &PgPool, store: &MediaStore, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let m = fetch(&mut tx, id, true).await?;
    let mut keys = vec![m.object_key.clone()];
    keys.extend(MediaStore::upload_key_of(&m.object_key));
    keys.extend(m.thumbnails.iter().map(|t| t.key.clone()));
    store.delete(&keys).await?;
    sqlx::query("delete from cms_media where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// How long an item may stay pending: the upload link's 15 minutes, media-processor's retries
/// within the hour after (its events are not retried older than that), and a margin.
pub const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::hours(2);

/// Rejects, across tenants, the items still pending `GIVE_UP_AFTER` after they were granted
/// (nothing was uploaded, or no try to check the upload succeeded): they say why instead of
/// staying pending forever. Answers how many; the content scheduler runs it every minute.
pub async fn give_up_stale(pool: &PgPool, now: DateTime<Utc>) -> Result<usize, DomainError> {
    let given_up: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "select tenant_id, media_id from app_cms_media_give_up($1, $2, $3)",
    )
    .bind(now - GIVE_UP_AFTER)
    .bind("no upload arrived within 2 hours of the upload link, or it could not be checked; upload the file again")
    .bind(1000_i32)
    .fetch_all(pool)
    .await?;
    for (tenant, id) in &given_up {
        tracing::warn!(tenant = %tenant, media = %id, "pending media item given up");
    }
    Ok(given_up.len())
}
