//! media-processor's rules: what an uploaded object's bytes are. For each `original` the bucket
//! reports it records the size, a SHA-256 checksum and the type sniffed from the bytes; images
//! get their dimensions and thumbnails (320 and 1024 px wide, never wider than the image).
//! Bytes that are not the declared type, not the declared size, or an SVG that could run
//! script are rejected: the item says why and the object is removed. Processing the same
//! object again (a retried or repeated event) changes nothing.
use image::{ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::types::Json;
use std::io::Cursor;
use uuid::Uuid;

use crate::adapters::media_store::MediaStore;
use crate::adapters::pg;
use crate::domain::Scope;
use crate::services::cms::public::Thumbnail;
use crate::services::cms::svg;

/// Thumbnail widths, in pixels.
pub const THUMB_WIDTHS: [u32; 2] = [320, 1024];
/// The largest image side decoded (a bigger one is refused rather than exhaust memory).
pub const MAX_SIDE: u32 = 16_384;
const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// What processing one object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    Rejected(String),
    /// Already processed with these bytes (a repeated event).
    Unchanged,
    /// No library item has this key: the object was removed.
    Orphan,
    /// The object is gone already (deleted before its event came).
    Gone,
}

/// What the bytes are.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub content_type: String,
    pub size: i64,
    pub checksum: String,
    pub width: Option<i32>,
    pub height: Option<i32>,
    /// Thumbnails to write: (width, height, bytes, content type).
    pub thumbnails: Vec<(u32, u32, Vec<u8>, &'static str)>,
}

fn sniff(bytes: &[u8], declared: &str) -> Option<&'static str> {
    if let Ok(format) = image::guess_format(bytes) {
        return match format {
            ImageFormat::Jpeg => Some("image/jpeg"),
            ImageFormat::Png => Some("image/png"),
            ImageFormat::Gif => Some("image/gif"),
            ImageFormat::WebP => Some("image/webp"),
            _ => None,
        };
    }
    if bytes.starts_with(b"%PDF-") {
        return Some("application/pdf");
    }
    if bytes.get(4..8) == Some(b"ftyp") {
        return Some("video/mp4");
    }
    if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some("video/webm");
    }
    let text = std::str::from_utf8(bytes).ok()?;
    if text.contains('\0') {
        return None;
    }
    let head = text.trim_start_matches('\u{feff}').trim_start();
    let looks_xml = head.starts_with('<');
    if declared == "image/svg+xml" && looks_xml {
        return Some("image/svg+xml");
    }
    (!looks_xml || declared == "text/plain").then_some("text/plain")
}

/// Checks and measures `bytes` declared as `declared` of `declared_size` bytes; `Err` is the
/// reason to reject them.
pub fn analyze(bytes: &[u8], declared: &str, declared_size: i64) -> Result<Analysis, String> {
    let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
    if size != declared_size {
        return Err(format!("the upload is {size} bytes, not the {declared_size} declared"));
    }
    let sniffed = sniff(bytes, declared);
    if sniffed != Some(declared) {
        return Err(format!(
            "the bytes are {}, not the declared {declared}",
            sniffed.unwrap_or("no type the library takes")
        ));
    }
    if declared == "image/svg+xml" {
        svg::check(bytes).map_err(|why| format!("unsafe SVG: {why}"))?;
    }
    let checksum = hex::encode(Sha256::digest(bytes));
    let mut analysis = Analysis {
        content_type: declared.to_owned(),
        size,
        checksum,
        width: None,
        height: None,
        thumbnails: Vec::new(),
    };
    if matches!(declared, "image/jpeg" | "image/png" | "image/gif" | "image/webp") {
        let mut limits = Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        let reader = || -> Result<ImageReader<Cursor<&[u8]>>, String> {
            let mut r = ImageReader::new(Cursor::new(bytes))
                .with_guessed_format()
                .map_err(|e| e.to_string())?;
            r.limits(limits.clone());
            Ok(r)
        };
        let (w, h) = reader()?
            .into_dimensions()
            .map_err(|e| format!("not a readable image: {e}"))?;
        if w > MAX_SIDE || h > MAX_SIDE {
            return Err(format!("{w}×{h} px is larger than {MAX_SIDE} px a side"));
        }
        analysis.width = i32::try_from(w).ok();
        analysis.height = i32::try_from(h).ok();
        // Largest first, each smaller one from the one before (less to sample each time).
        let mut wanted: Vec<u32> = THUMB_WIDTHS.iter().copied().filter(|t| *t < w).collect();
        wanted.sort_unstable_by(|a, b| b.cmp(a));
        if !wanted.is_empty() {
            let mut source = reader()?.decode().map_err(|e| format!("not a readable image: {e}"))?;
            for tw in wanted {
                let thumb = source.thumbnail(tw, u32::MAX);
                let mut out = Cursor::new(Vec::new());
                let content_type = if declared == "image/jpeg" {
                    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82)
                        .encode_image(&thumb.to_rgb8())
                        .map_err(|e| format!("thumbnail: {e}"))?;
                    "image/jpeg"
                } else {
                    let encoder = image::codecs::png::PngEncoder::new_with_quality(
                        &mut out,
                        image::codecs::png::CompressionType::Fast,
                        image::codecs::png::FilterType::Adaptive,
                    );
                    thumb
                        .write_with_encoder(encoder)
                        .map_err(|e| format!("thumbnail: {e}"))?;
                    "image/png"
                };
                analysis
                    .thumbnails
                    .push((thumb.width(), thumb.height(), out.into_inner(), content_type));
                source = thumb;
            }
            // Smallest first in the answer.
            analysis.thumbnails.reverse();
        }
    }
    Ok(analysis)
}

/// The key of a thumbnail beside its original.
fn thumb_key(original: &str, width: u32, content_type: &str) -> String {
    let dir = original.rsplit_once('/').map(|(d, _)| d).unwrap_or(original);
    let ext = if content_type == "image/jpeg" { "jpg" } else { "png" };
    format!("{dir}/thumb-{width}.{ext}")
}

/// Processes the object under `key` (an S3 ObjectCreated record's key, decoded).
pub async fn object(pool: &PgPool, store: &MediaStore, key: &str) -> anyhow::Result<Outcome> {
    let found: Option<(Uuid, Uuid)> = sqlx::query_as("select tenant_id, media_id from app_cms_media_by_key($1)")
        .bind(key)
        .fetch_optional(pool)
        .await?;
    let Some((tenant, id)) = found else {
        if key.starts_with("media/") && key.ends_with("/original") {
            store.delete(&[key.to_owned()]).await?;
            tracing::warn!(key, "upload without a library item removed");
            return Ok(Outcome::Orphan);
        }
        return Ok(Outcome::Gone);
    };
    let scope = Scope::worker(tenant, "system:media-processor", format!("media-{id}"));
    type Row = (String, i64, String, Option<String>, Json<Vec<Thumbnail>>);
    let read = |lock: bool| {
        format!(
            "select declared_type, declared_size, status, checksum_sha256, thumbnails from cms_media where id = $1{}",
            if lock { " for no key update" } else { "" }
        )
    };
    let mut tx = pg::begin(pool, &scope).await?;
    let row: Option<Row> = sqlx::query_as(&read(false)).bind(id).fetch_optional(&mut *tx).await?;
    tx.commit().await?;
    let Some((declared, declared_size, status, _, _)) = row else {
        return Ok(Outcome::Gone);
    };
    let Some(bytes) = store.get(key).await? else {
        return Ok(Outcome::Gone);
    };
    let analysis = {
        let declared = declared.clone();
        tokio::task::spawn_blocking(move || analyze(&bytes, &declared, declared_size)).await?
    };
    if status == "rejected" {
        // A repeated event after a rejection: make sure the bytes are gone.
        store.delete(&[key.to_owned()]).await?;
        return Ok(Outcome::Unchanged);
    }
    match analysis {
        Ok(a) => {
            let mut thumbs = Vec::with_capacity(a.thumbnails.len());
            for (w, h, data, content_type) in &a.thumbnails {
                let tkey = thumb_key(key, *w, content_type);
                store.put(&tkey, data.clone(), content_type).await?;
                thumbs.push(Thumbnail {
                    width: i32::try_from(*w).unwrap_or(i32::MAX),
                    height: i32::try_from(*h).unwrap_or(i32::MAX),
                    key: tkey,
                    url: String::new(),
                });
            }
            let mut tx = pg::begin(pool, &scope).await?;
            let row: Option<Row> = sqlx::query_as(&read(true)).bind(id).fetch_optional(&mut *tx).await?;
            let Some((_, _, status, checksum, _)) = row else {
                tx.commit().await?;
                // Deleted while processing: nothing of it may stay.
                let mut keys: Vec<String> = thumbs.into_iter().map(|t| t.key).collect();
                keys.push(key.to_owned());
                store.delete(&keys).await?;
                return Ok(Outcome::Gone);
            };
            if status == "ready" && checksum.as_deref() == Some(a.checksum.as_str()) {
                tx.commit().await?;
                return Ok(Outcome::Unchanged);
            }
            sqlx::query(
                "update cms_media set status = 'ready', content_type = $2, size_bytes = $3, checksum_sha256 = $4, \
                 width = $5, height = $6, thumbnails = $7, reject_reason = null, processed_at = now(), \
                 updated_at = now(), version = version + 1 where id = $1",
            )
            .bind(id)
            .bind(&a.content_type)
            .bind(a.size)
            .bind(&a.checksum)
            .bind(a.width)
            .bind(a.height)
            .bind(Json(&thumbs))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Outcome::Ready)
        }
        Err(reason) => {
            let mut tx = pg::begin(pool, &scope).await?;
            let row: Option<Row> = sqlx::query_as(&read(true)).bind(id).fetch_optional(&mut *tx).await?;
            let mut keys = vec![key.to_owned()];
            if let Some((_, _, _, _, thumbs)) = row {
                keys.extend(thumbs.0.into_iter().map(|t| t.key));
                sqlx::query(
                    "update cms_media set status = 'rejected', reject_reason = $2, content_type = null, \
                     size_bytes = null, checksum_sha256 = null, width = null, height = null, thumbnails = '[]', \
                     processed_at = now(), updated_at = now(), version = version + 1 where id = $1",
                )
                .bind(id)
                .bind(&reason)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            store.delete(&keys).await?;
            tracing::info!(media = %id, reason, "upload rejected");
            Ok(Outcome::Rejected(reason))
        }
    }
}
