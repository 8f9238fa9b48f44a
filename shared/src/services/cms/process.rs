//! media-processor's rules: what an uploaded object's bytes are. For each upload the bucket
//! reports (`uploads/…/original`) it records the size, a SHA-256 checksum and the type sniffed
//! from the bytes; images get their dimensions and thumbnails (320 and 1024 px wide, never wider
//! than the image). Accepted bytes are copied to the item's public key (`media/…/original`, the
//! only prefix the CDN reads) and the upload is removed; bytes that are not the declared type,
//! not the declared size, an SVG that could run script, or an upload that cannot be read or
//! processed are rejected: the item says why and the objects are removed. Processing the same
//! object again (a retried or repeated event) changes nothing.
//!
//! Memory stays flat whatever the size: the object is read a chunk at a time ([`Scan`]), hashed
//! and counted as it comes (reading stops at the first byte past the declared size), its type
//! told from its first bytes. Only images are held whole, to be decoded: their type's limit
//! (20 MiB, SVG 2 MiB) bounds that, and decoding has its own pixel and memory caps.
use axum::body::Bytes;
use image::{ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::types::Json;
use std::io::Cursor;
use uuid::Uuid;

use crate::adapters::media_store::{MediaStore, Opened, PUBLIC, Reading};
use crate::adapters::pg;
use crate::domain::Scope;
use crate::services::cms::media::TYPES;
use crate::services::cms::public::Thumbnail;
use crate::services::cms::svg;

/// Thumbnail widths, in pixels.
pub const THUMB_WIDTHS: [u32; 2] = [320, 1024];
/// The largest image side decoded (a bigger one is refused rather than exhaust memory).
pub const MAX_SIDE: u32 = 16_384;
const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;
/// The first bytes kept to tell the type: every signature the library knows is in the first few.
pub const HEAD_BYTES: usize = 8 * 1024;

/// What processing one object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    Rejected(String),
    /// Already processed with these bytes (a repeated event), or superseded by newer bytes
    /// that have their own event.
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

/// The types held whole to be decoded (or, for SVG, parsed).
fn held_whole(declared: &str) -> bool {
    declared.starts_with("image/")
}

fn raster(declared: &str) -> bool {
    matches!(declared, "image/jpeg" | "image/png" | "image/gif" | "image/webp")
}

/// Whether the public copy is served as a download (`Content-Disposition: attachment`) rather
/// than shown: everything but images. CloudFront's response headers cannot vary by type, so
/// every object gets a CSP sandbox there (template.yaml, `MediaResponseHeadersPolicy`); a
/// browser would not show a PDF in a sandboxed page, and a download is what a document link
/// wants anyway. `<video>` and `<img>` ignore the disposition.
pub fn served_as_attachment(content_type: &str) -> bool {
    !content_type.starts_with("image/")
}

/// Whether a stream is UTF-8 text without NUL, checked a chunk at a time (a character may
/// straddle two chunks).
#[derive(Debug, Default)]
struct TextCheck {
    /// The start of a character the last chunk cut.
    pending: Vec<u8>,
    failed: bool,
}

impl TextCheck {
    fn feed(&mut self, mut chunk: &[u8]) {
        if self.failed {
            return;
        }
        if chunk.contains(&0) {
            self.failed = true;
            return;
        }
        while !self.pending.is_empty() {
            let Some((first, rest)) = chunk.split_first() else {
                return;
            };
            self.pending.push(*first);
            chunk = rest;
            match std::str::from_utf8(&self.pending) {
                Ok(_) => self.pending.clear(),
                Err(e) if e.error_len().is_some() || self.pending.len() >= 4 => {
                    self.failed = true;
                    return;
                }
                Err(_) => {}
            }
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => {}
            Err(e) if e.error_len().is_none() => {
                self.pending = chunk.get(e.valid_up_to()..).unwrap_or_default().to_vec();
            }
            Err(_) => self.failed = true,
        }
    }

    fn is_text(&self) -> bool {
        !self.failed && self.pending.is_empty()
    }
}

/// The type of an object from its first bytes (`is_text`: the whole object is UTF-8 without NUL).
fn sniff(head: &[u8], declared: &str, is_text: bool) -> Option<&'static str> {
    if let Ok(format) = image::guess_format(head) {
        return match format {
            ImageFormat::Jpeg => Some("image/jpeg"),
            ImageFormat::Png => Some("image/png"),
            ImageFormat::Gif => Some("image/gif"),
            ImageFormat::WebP => Some("image/webp"),
            _ => None,
        };
    }
    if head.starts_with(b"%PDF-") {
        return Some("application/pdf");
    }
    if head.get(4..8) == Some(b"ftyp") {
        return Some("video/mp4");
    }
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some("video/webm");
    }
    if !is_text {
        return None;
    }
    // The head may end inside a character.
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(head.get(..e.valid_up_to()).unwrap_or_default()).unwrap_or_default(),
    };
    let start = text.trim_start_matches('\u{feff}').trim_start();
    let looks_xml = start.starts_with('<');
    if declared == "image/svg+xml" && looks_xml {
        return Some("image/svg+xml");
    }
    (!looks_xml || declared == "text/plain").then_some("text/plain")
}

/// An object read a chunk at a time: counted, hashed, its first bytes kept to tell the type,
/// the whole kept only for images.
#[derive(Debug)]
pub struct Scan {
    declared: String,
    declared_size: u64,
    size: u64,
    sha: Sha256,
    head: Vec<u8>,
    whole: Option<Vec<u8>>,
    text: TextCheck,
}

/// What a finished [`Scan`] found: the analysis so far, and an image's bytes to decode.
#[derive(Debug)]
pub struct Scanned {
    pub analysis: Analysis,
    pub image: Option<Vec<u8>>,
}

impl Scan {
    /// A scan of an object declared as `declared` of `declared_size` bytes; `Err` (the reason
    /// to reject, before reading anything) when the library takes no such type or size.
    pub fn new(declared: &str, declared_size: i64) -> Result<Self, String> {
        let Some((_, max)) = TYPES.iter().find(|(t, _)| *t == declared) else {
            return Err(format!("{declared} is no type the library takes"));
        };
        let size = u64::try_from(declared_size)
            .ok()
            .filter(|s| (1..=max.unsigned_abs()).contains(s))
            .ok_or_else(|| format!("{declared_size} bytes is more than a {declared} file may have"))?;
        let whole = held_whole(declared).then(|| Vec::with_capacity(usize::try_from(size).unwrap_or_default()));
        Ok(Self {
            declared: declared.to_owned(),
            declared_size: size,
            size: 0,
            sha: Sha256::new(),
            head: Vec::with_capacity(HEAD_BYTES.min(usize::try_from(size).unwrap_or(HEAD_BYTES))),
            whole,
            text: TextCheck::default(),
        })
    }

    /// Takes the next chunk. `Err` (the reason to reject) as soon as the object is larger than
    /// declared: the caller reads no further.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.size = self.size.saturating_add(chunk.len() as u64);
        if self.size > self.declared_size {
            return Err(format!(
                "the upload is larger than the {} bytes declared",
                self.declared_size
            ));
        }
        self.sha.update(chunk);
        let room = HEAD_BYTES.saturating_sub(self.head.len());
        self.head
            .extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if let Some(whole) = &mut self.whole {
            whole.extend_from_slice(chunk);
        }
        self.text.feed(chunk);
        Ok(())
    }

    /// After the last chunk: the size, the type and the checksum; `Err` is the reason to reject.
    pub fn finish(self) -> Result<Scanned, String> {
        if self.size != self.declared_size {
            return Err(format!(
                "the upload is {} bytes, not the {} declared",
                self.size, self.declared_size
            ));
        }
        let sniffed = sniff(&self.head, &self.declared, self.text.is_text());
        if sniffed != Some(self.declared.as_str()) {
            return Err(format!(
                "the bytes are {}, not the declared {}",
                sniffed.unwrap_or("no type the library takes"),
                self.declared
            ));
        }
        Ok(Scanned {
            analysis: Analysis {
                content_type: self.declared,
                size: i64::try_from(self.size).unwrap_or(i64::MAX),
                checksum: hex::encode(self.sha.finalize()),
                width: None,
                height: None,
                thumbnails: Vec::new(),
            },
            image: self.whole,
        })
    }
}

/// An image's dimensions and thumbnails.
#[derive(Debug, Default)]
struct Picture {
    width: Option<i32>,
    height: Option<i32>,
    thumbnails: Vec<(u32, u32, Vec<u8>, &'static str)>,
}

/// Checks an image held whole: an SVG must be safe; a raster image is measured and thumbnailed.
fn picture(bytes: &[u8], declared: &str) -> Result<Picture, String> {
    let mut out = Picture::default();
    if declared == "image/svg+xml" {
        svg::check(bytes).map_err(|why| format!("unsafe SVG: {why}"))?;
    }
    if !raster(declared) {
        return Ok(out);
    }
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
    out.width = i32::try_from(w).ok();
    out.height = i32::try_from(h).ok();
    // Largest first, each smaller one from the one before (less to sample each time).
    let mut wanted: Vec<u32> = THUMB_WIDTHS.iter().copied().filter(|t| *t < w).collect();
    wanted.sort_unstable_by(|a, b| b.cmp(a));
    if wanted.is_empty() {
        return Ok(out);
    }
    let mut source = reader()?.decode().map_err(|e| format!("not a readable image: {e}"))?;
    for tw in wanted {
        let thumb = source.thumbnail(tw, u32::MAX);
        let mut encoded = Cursor::new(Vec::new());
        let content_type = if declared == "image/jpeg" {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, 82)
                .encode_image(&thumb.to_rgb8())
                .map_err(|e| format!("thumbnail: {e}"))?;
            "image/jpeg"
        } else {
            let encoder = image::codecs::png::PngEncoder::new_with_quality(
                &mut encoded,
                image::codecs::png::CompressionType::Fast,
                image::codecs::png::FilterType::Adaptive,
            );
            thumb
                .write_with_encoder(encoder)
                .map_err(|e| format!("thumbnail: {e}"))?;
            "image/png"
        };
        out.thumbnails
            .push((thumb.width(), thumb.height(), encoded.into_inner(), content_type));
        source = thumb;
    }
    // Smallest first in the answer.
    out.thumbnails.reverse();
    Ok(out)
}

/// Checks and measures `bytes` (held whole) declared as `declared` of `declared_size` bytes;
/// `Err` is the reason to reject them. The same rules as an object read in chunks.
pub fn analyze(bytes: &[u8], declared: &str, declared_size: i64) -> Result<Analysis, String> {
    let mut scan = Scan::new(declared, declared_size)?;
    scan.feed(bytes)?;
    let Scanned { mut analysis, image } = scan.finish()?;
    if let Some(image) = image {
        let p = picture(&image, declared)?;
        (analysis.width, analysis.height, analysis.thumbnails) = (p.width, p.height, p.thumbnails);
    }
    Ok(analysis)
}

/// Bytes that come a chunk at a time (an object of the bucket; a test's endless source).
pub trait Chunks {
    /// The next chunk; `None` at the end. An error is a passing one.
    fn next_chunk(&mut self) -> impl Future<Output = anyhow::Result<Option<Bytes>>> + Send;
}

impl Chunks for Reading {
    fn next_chunk(&mut self) -> impl Future<Output = anyhow::Result<Option<Bytes>>> + Send {
        Reading::next_chunk(self)
    }
}

/// Feeds `source` to `scan` to its end. `Ok(Err(why))` as soon as a chunk takes it past the
/// declared size: the rest is never read. `Err` is a passing failure of the source.
pub async fn scan_all(source: &mut impl Chunks, scan: &mut Scan) -> anyhow::Result<Result<(), String>> {
    while let Some(chunk) = source.next_chunk().await? {
        if let Err(why) = scan.feed(&chunk) {
            return Ok(Err(why));
        }
    }
    Ok(Ok(()))
}

/// What checking an upload found.
enum Checked {
    Missing,
    Bad(String),
    /// The analysis, and the version (ETag) of the object it is of.
    Good(Analysis, Option<String>),
}

/// Reads the object under `key` and checks it. `Err` is a passing failure (try again later);
/// an object that cannot be read or processed is `Bad` like one that is not what was declared.
async fn check(store: &MediaStore, key: &str, declared: &str, declared_size: i64) -> anyhow::Result<Checked> {
    let mut scan = match Scan::new(declared, declared_size) {
        Ok(scan) => scan,
        Err(why) => return Ok(Checked::Bad(why)),
    };
    let mut reading = match store.open(key).await? {
        Opened::Missing => return Ok(Checked::Missing),
        Opened::Unreadable(why) => return Ok(Checked::Bad(format!("the upload cannot be read: {why}"))),
        Opened::Reading(reading) => reading,
    };
    // S3 says how big it is: a wrong size is rejected before a byte is read.
    if let Some(size) = reading.size
        && size != declared_size
    {
        return Ok(Checked::Bad(format!(
            "the upload is {size} bytes, not the {declared_size} declared"
        )));
    }
    if let Err(why) = scan_all(&mut reading, &mut scan).await? {
        return Ok(Checked::Bad(why));
    }
    let etag = reading.etag.take();
    drop(reading);
    let Scanned { mut analysis, image } = match scan.finish() {
        Ok(scanned) => scanned,
        Err(why) => return Ok(Checked::Bad(why)),
    };
    if let Some(image) = image {
        let declared = declared.to_owned();
        match tokio::task::spawn_blocking(move || picture(&image, &declared)).await {
            Ok(Ok(p)) => (analysis.width, analysis.height, analysis.thumbnails) = (p.width, p.height, p.thumbnails),
            Ok(Err(why)) => return Ok(Checked::Bad(why)),
            Err(e) => {
                tracing::error!(key, error = %e, "decoding an upload failed");
                return Ok(Checked::Bad("the upload could not be processed".to_owned()));
            }
        }
    }
    Ok(Checked::Good(analysis, etag))
}

/// The key of a thumbnail beside its public original.
fn thumb_key(original: &str, width: u32, content_type: &str) -> String {
    let dir = original.rsplit_once('/').map(|(d, _)| d).unwrap_or(original);
    let ext = if content_type == "image/jpeg" { "jpg" } else { "png" };
    format!("{dir}/thumb-{width}.{ext}")
}

/// Every key an item's bytes may be under: its upload, its public copy and any thumbnail.
fn all_keys(upload: &str, public: &str) -> Vec<String> {
    let mut keys = vec![upload.to_owned()];
    if public != upload {
        keys.push(public.to_owned());
    }
    for width in THUMB_WIDTHS {
        for content_type in ["image/jpeg", "image/png"] {
            keys.push(thumb_key(public, width, content_type));
        }
    }
    keys
}

type Row = (String, i64, String, Option<String>, Json<Vec<Thumbnail>>);

fn read_row(lock: bool) -> String {
    format!(
        "select declared_type, declared_size, status, checksum_sha256, thumbnails from cms_media where id = $1{}",
        if lock { " for no key update" } else { "" }
    )
}

/// Processes the object under `key` (an S3 ObjectCreated record's key, decoded).
///
/// `Err` is a passing failure (S3 or the database unreachable or failing): the event is tried
/// again. Everything else ends in an outcome: an upload that cannot be read or processed is
/// rejected and removed like bytes that are not what was declared, so no item waits, pending,
/// for an event that can never succeed.
#[tracing::instrument(skip_all, fields(key = %key))]
pub async fn object(pool: &PgPool, store: &MediaStore, key: &str) -> anyhow::Result<Outcome> {
    // The bucket notifies uploads. A `media/…/original` key is an upload from before uploads had
    // a prefix of their own (an event in flight at the change): it is checked where it is.
    let public = match MediaStore::public_key_of(key) {
        Some(public) => public,
        None if key.starts_with(PUBLIC) => key.to_owned(),
        None => return Ok(Outcome::Gone),
    };
    let found: Option<(Uuid, Uuid)> = sqlx::query_as("select tenant_id, media_id from app_cms_media_by_key($1)")
        .bind(&public)
        .fetch_optional(pool)
        .await?;
    let Some((tenant, id)) = found else {
        if key.ends_with("/original") {
            store.delete(&[key.to_owned()]).await?;
            tracing::warn!("upload without a library item removed");
            return Ok(Outcome::Orphan);
        }
        return Ok(Outcome::Gone);
    };
    let scope = Scope::worker(tenant, "system:media-processor", format!("media-{id}"));
    let mut tx = pg::begin(pool, &scope).await?;
    let row: Option<Row> = sqlx::query_as(&read_row(false))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    let Some((declared, declared_size, status, _, _)) = row else {
        return Ok(Outcome::Gone);
    };
    if status == "rejected" {
        // A repeated event after a rejection, or bytes sent again to a rejected item's link:
        // make sure no bytes of it stay.
        store.delete(&all_keys(key, &public)).await?;
        return Ok(Outcome::Unchanged);
    }
    match check(store, key, &declared, declared_size).await? {
        // Accepted and moved already (a repeated event), or removed before its event came.
        Checked::Missing if status == "ready" => Ok(Outcome::Unchanged),
        Checked::Missing => Ok(Outcome::Gone),
        Checked::Bad(reason) => reject(pool, store, &scope, id, key, &public, reason).await,
        Checked::Good(analysis, etag) => accept(pool, store, &scope, id, key, &public, analysis, etag).await,
    }
}

/// Publishes checked bytes: the copy under the public key, thumbnails beside it, the item
/// `ready`, the upload removed.
#[allow(clippy::too_many_arguments)]
async fn accept(
    pool: &PgPool,
    store: &MediaStore,
    scope: &Scope,
    id: Uuid,
    key: &str,
    public: &str,
    a: Analysis,
    etag: Option<String>,
) -> anyhow::Result<Outcome> {
    if key != public {
        let attachment = served_as_attachment(&a.content_type);
        if !store
            .publish(key, public, etag.as_deref(), &a.content_type, attachment)
            .await?
        {
            tracing::info!(media = %id, "the upload changed while it was checked: its new bytes have their own event");
            return Ok(Outcome::Unchanged);
        }
    }
    let mut thumbs = Vec::with_capacity(a.thumbnails.len());
    for (w, h, data, content_type) in a.thumbnails {
        let tkey = thumb_key(public, w, content_type);
        store.put(&tkey, data, content_type).await?;
        thumbs.push(Thumbnail {
            width: i32::try_from(w).unwrap_or(i32::MAX),
            height: i32::try_from(h).unwrap_or(i32::MAX),
            key: tkey,
            url: String::new(),
        });
    }
    let mut tx = pg::begin(pool, scope).await?;
    let row: Option<Row> = sqlx::query_as(&read_row(true))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some((_, _, status, checksum, _)) = row else {
        tx.commit().await?;
        // Deleted while processing: nothing of it may stay.
        store.delete(&all_keys(key, public)).await?;
        return Ok(Outcome::Gone);
    };
    let unchanged = status == "ready" && checksum.as_deref() == Some(a.checksum.as_str());
    if !unchanged {
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
    }
    tx.commit().await?;
    if key != public {
        store.delete(&[key.to_owned()]).await?;
    }
    Ok(if unchanged { Outcome::Unchanged } else { Outcome::Ready })
}

/// Records why the bytes were refused (the item `rejected`) and removes every object of it.
async fn reject(
    pool: &PgPool,
    store: &MediaStore,
    scope: &Scope,
    id: Uuid,
    key: &str,
    public: &str,
    reason: String,
) -> anyhow::Result<Outcome> {
    let mut tx = pg::begin(pool, scope).await?;
    let row: Option<Row> = sqlx::query_as(&read_row(true))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let mut keys = all_keys(key, public);
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
    // After the row: should this fail, the retried event finds the item rejected and removes them.
    store.delete(&keys).await?;
    tracing::info!(media = %id, reason, "upload rejected");
    Ok(Outcome::Rejected(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endless source of MP4-looking bytes that counts what was read.
    struct Endless {
        chunk: Bytes,
        read: u64,
    }

    impl Chunks for Endless {
        async fn next_chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
            self.read += self.chunk.len() as u64;
            Ok(Some(self.chunk.clone()))
        }
    }

    /// Chunks of `bytes`, `size` at a time.
    struct Sliced {
        bytes: Bytes,
        size: usize,
    }

    impl Chunks for Sliced {
        async fn next_chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
            if self.bytes.is_empty() {
                return Ok(None);
            }
            let n = self.size.min(self.bytes.len());
            Ok(Some(self.bytes.split_to(n)))
        }
    }

    fn mp4(size: usize) -> Vec<u8> {
        let mut bytes = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2".to_vec();
        bytes.resize(size, 7);
        bytes
    }

    #[tokio::test]
    async fn reading_stops_at_the_first_chunk_past_the_declared_size() {
        // Given an object that never ends, declared as 1 MiB
        let mut source = Endless {
            chunk: Bytes::from(mp4(64 * 1024)),
            read: 0,
        };
        let mut scan = Scan::new("video/mp4", 1024 * 1024).unwrap();
        // When it is scanned
        let result = scan_all(&mut source, &mut scan).await.unwrap();
        // Then it is refused after one chunk too many, and nothing more is read
        assert_eq!(
            result,
            Err("the upload is larger than the 1048576 bytes declared".to_owned())
        );
        assert_eq!(source.read, 1024 * 1024 + 64 * 1024);
    }

    #[tokio::test]
    async fn chunked_reading_finds_what_whole_reading_finds() {
        let text = "Grüße aus Köln — 東京 🎉\n".repeat(500).into_bytes();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (mp4(200_000), "video/mp4"),
            (b"%PDF-1.7\n%%EOF\n".to_vec(), "application/pdf"),
            (text.clone(), "text/plain"),
            (text, "application/pdf"),
            (vec![0x1A, 0x45, 0xDF, 0xA3, 1, 2, 3], "video/webm"),
            (b"plain\0binary".to_vec(), "text/plain"),
            (b"<html><script>x</script></html>".to_vec(), "text/plain"),
        ];
        for (bytes, declared) in cases {
            let whole = analyze(&bytes, declared, bytes.len() as i64);
            // Chunk sizes that cut multi-byte characters everywhere.
            for size in [1, 2, 3, 7, 4096] {
                let mut source = Sliced {
                    bytes: Bytes::from(bytes.clone()),
                    size,
                };
                let mut scan = Scan::new(declared, bytes.len() as i64).unwrap();
                scan_all(&mut source, &mut scan).await.unwrap().unwrap();
                let chunked = scan.finish().map(|s| s.analysis);
                assert_eq!(chunked, whole, "{declared} in chunks of {size}");
            }
        }
    }

    #[test]
    fn text_split_inside_a_character_is_text_and_broken_utf8_is_not() {
        // Given "é" (C3 A9) cut between two chunks
        let mut t = TextCheck::default();
        t.feed(b"caf\xC3");
        t.feed(b"\xA9!");
        assert!(t.is_text());
        // A character cut off at the end
        let mut t = TextCheck::default();
        t.feed(b"caf\xC3");
        assert!(!t.is_text());
        // A lead byte followed by no continuation
        let mut t = TextCheck::default();
        t.feed(b"caf\xC3");
        t.feed(b"A");
        assert!(!t.is_text());
    }

    #[test]
    fn sizes_and_types_are_checked_against_what_was_declared() {
        let png = b"\x89PNG\r\n\x1a\n".to_vec();
        assert_eq!(
            analyze(&png, "image/png", 9).unwrap_err(),
            "the upload is 8 bytes, not the 9 declared"
        );
        assert_eq!(
            analyze(&png, "image/jpeg", 8).unwrap_err(),
            "the bytes are image/png, not the declared image/jpeg"
        );
        assert!(Scan::new("application/x-msdownload", 10).is_err());
        assert!(Scan::new("image/png", 21 * 1024 * 1024).is_err());
        assert!(Scan::new("image/png", 0).is_err());
        // Only images are held whole.
        let scanned = Scan::new("video/mp4", 600).unwrap();
        assert!(scanned.whole.is_none());
        let mut scan = Scan::new("text/plain", 3).unwrap();
        scan.feed(b"abc").unwrap();
        assert!(scan.finish().unwrap().image.is_none());
    }

    #[test]
    fn only_images_are_shown_inline() {
        assert!(!served_as_attachment("image/png"));
        assert!(!served_as_attachment("image/svg+xml"));
        for t in ["application/pdf", "video/mp4", "video/webm", "text/plain"] {
            assert!(served_as_attachment(t), "{t}");
        }
    }

    #[test]
    fn an_items_keys_include_its_upload_its_copy_and_every_thumbnail() {
        let keys = all_keys("uploads/t/i/original", "media/t/i/original");
        assert_eq!(keys.len(), 6);
        assert!(keys.contains(&"media/t/i/thumb-320.png".to_owned()));
        assert!(keys.contains(&"media/t/i/thumb-1024.jpg".to_owned()));
        assert_eq!(all_keys("media/t/i/original", "media/t/i/original").len(), 5);
    }
}
