//! CSV imports of contacts and companies. The file is uploaded to the bucket first (a presigned
//! PUT); `POST /crm/imports` reads its header, settles the column mapping and records the job;
//! the `crm-import` worker then applies it in chunks.
//!
//! Exactly once, whatever crashes: a chunk's records, its row errors and the job's progress
//! (`byte_offset`: where in the file the next row starts) commit in one transaction under the
//! job row's lock, and a run starts reading at `byte_offset`. A run that dies mid-chunk leaves
//! nothing of that chunk; a second run of the same job (a redelivered message) waits for the
//! lock and then sees the offset moved, and stops.
//!
//! Rows are checked by the same rules as `POST /crm/contacts` and `/crm/companies`; a row that
//! fails (a wrong value, a wrong column count, bytes that are not UTF-8, a row over 1 MiB) is
//! kept with its line and reasons, downloadable as CSV when the import ends. Dedupe: contacts by
//! email, companies by domain (else by name); `skip` leaves the existing record, `update` fills
//! it with the row's non-empty values (tags and custom values added), `create` refuses the row
//! where the email or domain is taken (they are unique) and creates it otherwise.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use sqlx::types::Json;
use std::collections::HashMap;
use utoipa::ToSchema;
use uuid::Uuid;

use super::companies::{self, CompanyInput};
use super::contacts::{self, ContactInput};
use super::fields::{self, CustomField};
use super::table::{self, Cells, TableEntity};
use super::zoho;
use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, FieldError, Scope, Text, Validator};
use crate::services::billing::entitlements::{self, Limit};
use crate::services::connectors::CallError;
use crate::services::idempotency::{self, Created, IdempotencyKey};

/// The largest file an import takes.
pub const MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// A row longer than this is refused (and kept shortened in the errors).
pub const MAX_ROW_BYTES: usize = 1024 * 1024;
/// How much of the file `POST /crm/imports` reads for the header.
pub const HEAD_BYTES: u64 = 64 * 1024;
const MAX_COLUMNS: usize = 200;
/// Characters of a failed row kept for the errors file.
const RAW_KEEP: usize = 2000;
pub const CHUNK_ROWS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Dedupe {
    /// Keep the existing record; the row counts as skipped.
    #[default]
    Skip,
    /// Fill the existing record with the row's non-empty values.
    Update,
    /// Always create; a row whose email (domain) is taken fails.
    Create,
}

/// Where an import's rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ImportSource {
    /// A CSV file uploaded with `POST /crm/imports/uploads`.
    #[default]
    Csv,
    /// Zoho CRM (API v2), with the tenant's `zoho` connector: module `Contacts` for contacts,
    /// `Accounts` for companies.
    Zoho,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
}

/// `POST /crm/imports/uploads`: the file about to be uploaded.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    /// Size in bytes (at most 100 MiB).
    pub size: u64,
}

/// Where to PUT the file: send the `headers` with it, before `expires_at`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Upload {
    /// Give it to `POST /crm/imports`.
    pub upload_key: String,
    pub method: String,
    pub url: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

/// A fresh object key under the tenant's prefix, after checking the declared size.
pub fn upload_key(scope: &Scope, input: &NewUpload) -> Result<String, DomainError> {
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    if input.size == 0 || input.size > MAX_FILE_BYTES {
        return Err(DomainError::invalid(
            "size",
            "out_of_range",
            format!("must be 1 to {MAX_FILE_BYTES} bytes (100 MiB)"),
        ));
    }
    Ok(format!("imports/{tenant}/{}.csv", Uuid::now_v7()))
}

/// The upload key as given, if it is one of this tenant's uploads.
pub fn own_upload_key<'a>(scope: &Scope, key: &'a str) -> Result<&'a str, DomainError> {
    let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let rest = key.strip_prefix(&format!("imports/{tenant}/"));
    match rest.and_then(|r| r.strip_suffix(".csv")) {
        Some(id) if Uuid::parse_str(id).is_ok() => Ok(key),
        _ => Err(DomainError::invalid(
            "upload_key",
            "unknown_upload",
            "is not an upload_key that POST /crm/imports/uploads gave this tenant",
        )),
    }
}

/// `POST /crm/imports`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewImport {
    pub entity: TableEntity,
    #[serde(default)]
    pub source: ImportSource,
    /// The key `POST /crm/imports/uploads` gave (source `csv` only).
    #[serde(default)]
    pub upload_key: Option<String>,
    /// Shown in the import list (the name of the user's file).
    #[serde(default)]
    pub file_name: Option<String>,
    /// `{"<column header>": "<field>" | null}`: overrides the mapping by header names (`null`
    /// ignores the column). Fields: see the README; `custom.<key>` for custom fields. From Zoho
    /// the headers are the fields' API names (`First_Name`, `Mailing_City`), and naming one of
    /// the tenant's own Zoho fields reads it too.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub mapping: Option<Map<String, Value>>,
    #[serde(default)]
    pub dedupe: Dedupe,
}

pub use crate::domain::jobs::FileHead;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportColumn {
    pub header: String,
    /// The field it fills; `null`: ignored.
    pub field: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowError {
    /// Data row number (1 = the first row after the header).
    pub row: i64,
    /// The file's line the row starts on.
    pub line: i64,
    pub fields: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Import {
    pub id: Uuid,
    pub entity: TableEntity,
    pub source: ImportSource,
    pub file_name: Option<String>,
    pub status: JobStatus,
    pub dedupe: Dedupe,
    pub columns: Vec<ImportColumn>,
    /// Data rows in the file (known once the worker has read it).
    pub rows_total: Option<i64>,
    pub rows_done: i64,
    pub created: i64,
    pub updated: i64,
    pub skipped: i64,
    pub failed: i64,
    /// Companies created for contacts' `company` names.
    pub companies_created: i64,
    /// Why the whole import failed (a file that cannot be read, Zoho refusing); while it runs,
    /// the last trouble reading the source (Zoho unavailable: retried).
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The first failed rows (at most 20); all of them are in the file at `errors_url`.
    pub errors: Vec<RowError>,
    /// A CSV of every failed row (row, line, fields, error, the row's data), for 15 minutes.
    pub errors_url: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImportRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub entity: TableEntity,
    pub source: ImportSource,
    /// The file read (source `csv`).
    pub object_key: Option<String>,
    pub file_name: Option<String>,
    pub header: Vec<String>,
    pub mapping: Json<Vec<Option<String>>>,
    pub dedupe: Dedupe,
    pub status: JobStatus,
    pub byte_offset: i64,
    pub line_offset: i64,
    pub rows_total: Option<i64>,
    pub rows_done: i64,
    pub created_count: i64,
    pub updated_count: i64,
    pub skipped_count: i64,
    pub failed_count: i64,
    pub companies_created: i64,
    pub error: Option<String>,
    pub errors_key: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Zoho: the highest record id imported.
    pub source_cursor: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, entity, source, object_key, file_name, header, mapping, dedupe, status, byte_offset, \
    line_offset, rows_total, rows_done, created_count, updated_count, skipped_count, failed_count, companies_created, \
    error, errors_key, created_by, created_at, started_at, finished_at, source_cursor";

impl ImportRow {
    /// The API's view; `errors_url` is filled by the caller that can presign.
    pub fn view(self, errors: Vec<RowError>) -> Import {
        let columns = self
            .header
            .iter()
            .enumerate()
            .map(|(i, h)| ImportColumn {
                header: h.clone(),
                field: self.mapping.0.get(i).cloned().flatten(),
            })
            .collect();
        Import {
            id: self.id,
            entity: self.entity,
            source: self.source,
            file_name: self.file_name,
            status: self.status,
            dedupe: self.dedupe,
            columns,
            rows_total: self.rows_total,
            rows_done: self.rows_done,
            created: self.created_count,
            updated: self.updated_count,
            skipped: self.skipped_count,
            failed: self.failed_count,
            companies_created: self.companies_created,
            error: self.error,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            errors,
            errors_url: None,
        }
    }

    /// Who asked for it, acting again in the worker (the timeline names them).
    pub fn scope(&self) -> Scope {
        Scope::worker(self.tenant_id, &self.created_by, format!("import:{}", self.id))
    }
}

/// The header row: the column names, and where the first data row starts (after a UTF-8 BOM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub columns: Vec<String>,
    pub data_offset: u64,
    pub data_line: u64,
}

fn file_error(code: &'static str, message: impl Into<String>) -> DomainError {
    DomainError::invalid("upload_key", code, message)
}

/// Reads the header from the start of the file, refusing files that cannot be a UTF-8 CSV.
pub fn parse_header(head: &FileHead) -> Result<Header, DomainError> {
    if head.size == 0 {
        return Err(file_error("empty_file", "the uploaded file is empty"));
    }
    if head.size > MAX_FILE_BYTES {
        return Err(file_error("file_too_large", "the file is larger than 100 MiB"));
    }
    let bytes = head.bytes.as_slice();
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(file_error(
            "wrong_encoding",
            "the file is UTF-16 text; save it as \"CSV UTF-8\" and upload it again",
        ));
    }
    let bom = if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) { 3 } else { 0 };
    let body = bytes.get(bom..).unwrap_or_default();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut record = csv::ByteRecord::new();
    let read = reader
        .read_byte_record(&mut record)
        .map_err(|e| file_error("unreadable", format!("the header row cannot be read: {e}")))?;
    let end = past_lf(body, reader.position().byte());
    if !read || record.iter().all(|c| c.iter().all(u8::is_ascii_whitespace)) {
        return Err(file_error("no_header", "the file has no header row"));
    }
    let whole_file = bytes.len() as u64 >= head.size;
    if !whole_file && end >= body.len() as u64 {
        return Err(file_error("header_too_long", "the header row is longer than 64 KiB"));
    }
    if record.len() > MAX_COLUMNS {
        return Err(file_error(
            "too_many_columns",
            format!("the file has {} columns; at most {MAX_COLUMNS}", record.len()),
        ));
    }
    let columns = record
        .iter()
        .map(|c| std::str::from_utf8(c).map(|s| s.trim().to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            file_error(
                "wrong_encoding",
                "the header row is not UTF-8 text; save the file as \"CSV UTF-8\" and upload it again",
            )
        })?;
    if columns.iter().any(|c| c.contains('\0')) {
        return Err(file_error(
            "wrong_encoding",
            "the header row holds NUL bytes: the file is probably UTF-16; save it as \"CSV UTF-8\" and upload it again",
        ));
    }
    Ok(Header {
        columns,
        data_offset: bom as u64 + end,
        data_line: 1 + newlines(body.get(..usize::try_from(end).unwrap_or(usize::MAX)).unwrap_or(body)),
    })
}

/// The upload a CSV import reads (one this tenant was given); `None` for other sources.
pub fn upload_of<'a>(scope: &Scope, input: &'a NewImport) -> Result<Option<&'a str>, DomainError> {
    match (input.source, input.upload_key.as_deref()) {
        (ImportSource::Csv, Some(key)) => own_upload_key(scope, key).map(Some),
        (ImportSource::Csv, None) => Err(DomainError::invalid(
            "upload_key",
            "required",
            "is required for a CSV import: POST /crm/imports/uploads gives one",
        )),
        (ImportSource::Zoho, None) => Ok(None),
        (ImportSource::Zoho, Some(_)) => Err(DomainError::invalid(
            "upload_key",
            "not_allowed",
            "is for CSV imports; a Zoho import reads the module itself",
        )),
    }
}

/// Records an import (queued for the worker): of an uploaded file, whose start is `head`, or
/// of a Zoho CRM module. Honours `Idempotency-Key`.
pub async fn create(
    pool: &PgPool,
    scope: &Scope,
    input: NewImport,
    head: Option<FileHead>,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<Import>, DomainError> {
    let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
    upload_of(scope, &input)?;
    let file_name = match input.file_name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => Some(
            Text::parse(name, 1, 255)
                .map_err(|i| DomainError::invalid("file_name", i.code, i.message))?
                .into_inner(),
        ),
        None => None,
    };
    let (object_key, header, mapping_in, file_name) = match input.source {
        ImportSource::Csv => {
            let head = head.ok_or_else(|| file_error("not_uploaded", "no file has been uploaded under this key"))?;
            let header = parse_header(&head)?;
            (Some(head.object_key), header, input.mapping, file_name)
        }
        ImportSource::Zoho => {
            let (columns, plan) = zoho::columns(input.entity, input.mapping.as_ref())?;
            let header = Header {
                columns,
                data_offset: 0,
                data_line: 1,
            };
            let name = file_name.unwrap_or_else(|| format!("Zoho CRM {}", zoho::module(input.entity)));
            (None, header, Some(plan), Some(name))
        }
    };
    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    if input.source == ImportSource::Zoho {
        let connected: bool = sqlx::query_scalar("select exists (select 1 from connectors where kind = 'zoho')")
            .fetch_one(&mut *tx)
            .await?;
        if !connected {
            return Err(DomainError::invalid(
                "source",
                "not_connected",
                "Zoho CRM is not connected: save its access token with PUT /connectors/zoho first",
            ));
        }
    }
    let defs = fields::definitions(&mut tx, input.entity.field_entity()).await?;
    let mapping = table::plan_mapping(input.entity, &header.columns, mapping_in.as_ref(), &defs)?;
    let row: ImportRow = sqlx::query_as(&format!(
        "insert into crm_imports (id, tenant_id, entity, source, object_key, file_name, header, mapping, dedupe, \
         byte_offset, line_offset, created_by) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(input.entity)
    .bind(input.source)
    .bind(object_key)
    .bind(file_name)
    .bind(&header.columns)
    .bind(Json(&mapping))
    .bind(input.dedupe)
    .bind(i64::try_from(header.data_offset).unwrap_or(i64::MAX))
    .bind(i64::try_from(header.data_line.max(1)).unwrap_or(1))
    .bind(scope.actor.principal())
    .fetch_one(&mut *tx)
    .await?;
    let import = row.view(Vec::new());
    idempotency::store(&mut tx, scope, idem, 201, &import).await?;
    tx.commit().await?;
    Ok(Created::Fresh(import))
}

/// One import with its first errors (`errors_url` left to the caller).
pub async fn get(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(Import, Option<String>), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let row: ImportRow = sqlx::query_as(&format!("select {COLUMNS} from crm_imports where id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(DomainError::NotFound)?;
    let errors = first_errors(&mut tx, id).await?;
    tx.commit().await?;
    let key = row.errors_key.clone();
    Ok((row.view(errors), key))
}

async fn first_errors(tx: &mut Tx, id: Uuid) -> Result<Vec<RowError>, DomainError> {
    let rows: Vec<(i64, i64, String, String)> = sqlx::query_as(
        "select row_number, line, fields, message from crm_import_errors where import_id = $1 \
         order by row_number limit 20",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(row, line, fields, message)| RowError {
            row,
            line,
            fields,
            message,
        })
        .collect())
}

/// The tenant's imports, newest first (at most 50).
pub async fn list(pool: &PgPool, scope: &Scope) -> Result<Vec<Import>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let rows: Vec<ImportRow> = sqlx::query_as(&format!(
        "select {COLUMNS} from crm_imports order by created_at desc, id desc limit 50"
    ))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|r| r.view(Vec::new())).collect())
}

// ------------------------------------------------------------------------------------ worker

/// Loads a job to run: `None` when it does not exist (any more) or has ended.
pub async fn load(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<Option<ImportRow>, DomainError> {
    let scope = Scope::worker(tenant_id, "", format!("import:{id}"));
    let mut tx = pg::begin(pool, &scope).await?;
    let row: Option<ImportRow> = sqlx::query_as(&format!("select {COLUMNS} from crm_imports where id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row.filter(|r| matches!(r.status, JobStatus::Queued | JobStatus::Running)))
}

/// Marks a job failed as a whole (its file is gone or unreadable).
pub async fn fail(pool: &PgPool, job: &ImportRow, message: &str) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, &job.scope()).await?;
    sqlx::query(
        "update crm_imports set status = 'failed', error = $2, finished_at = now(), updated_at = now() \
         where id = $1 and status in ('queued', 'running')",
    )
    .bind(job.id)
    .bind(message)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// How a run goes: its chunk size, when it must stop (the Lambda's deadline), and where a test
/// makes it crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    pub chunk_rows: usize,
    /// No chunk starts after this: the run pauses, to be continued by another message.
    pub deadline: Option<std::time::Instant>,
    /// Dies in this chunk (0-based) after writing it, before its commit.
    pub crash_in_chunk: Option<usize>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            chunk_rows: CHUNK_ROWS,
            deadline: None,
            crash_in_chunk: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every row is accounted for; the errors (if any) are to be written to the bucket.
    Finished { failed: i64 },
    /// Another run of the same job moved past this one's position: this run stopped.
    Superseded,
    /// The deadline came first: what was done is committed; a new run continues from there.
    Paused,
    /// Too many runs in a row made no progress: the job is marked failed.
    GaveUp,
    /// The source refused to be read (why): the job is marked failed.
    Refused(String),
}

/// Runs in a row without a committed chunk before a job is given up.
pub const MAX_ATTEMPTS: i32 = 5;

/// One data row as read: its number, line, cells (or why they cannot be read), and the row's
/// text as it was (shortened) for the errors file.
struct RawRow {
    number: i64,
    line: i64,
    cells: Result<Vec<String>, String>,
    raw: String,
}

fn raw_text(record: &csv::ByteRecord) -> String {
    let mut out = String::new();
    for (i, cell) in record.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Postgres text holds no NUL: shown as U+FFFD in the errors.
        out.push_str(&String::from_utf8_lossy(cell).replace('\0', "\u{FFFD}"));
        if out.len() > RAW_KEEP * 4 {
            break;
        }
    }
    out.chars().take(RAW_KEEP).collect()
}

fn read_row(record: &csv::ByteRecord, header: &[String], bytes: u64) -> Result<Vec<String>, String> {
    if bytes > MAX_ROW_BYTES as u64 {
        return Err(format!(
            "the row is {bytes} bytes long; rows over {MAX_ROW_BYTES} bytes (1 MiB) are not imported"
        ));
    }
    if record.len() != header.len() {
        return Err(format!(
            "the row has {} columns; the header has {} (a missing or extra delimiter, or an unclosed quote)",
            record.len(),
            header.len()
        ));
    }
    record
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            std::str::from_utf8(cell).map(str::to_owned).map_err(|_| {
                format!(
                    "the cell in column {:?} is not UTF-8 text; save the file as \"CSV UTF-8\"",
                    header.get(i).map(String::as_str).unwrap_or_default()
                )
            })
        })
        .collect()
}

/// After a CRLF record the reader stops between `\r` and `\n`: the position past both.
fn past_lf(data: &[u8], at: u64) -> u64 {
    let i = usize::try_from(at).unwrap_or(usize::MAX);
    if data.get(i) == Some(&b'\n') { at + 1 } else { at }
}

/// Line breaks in `bytes` (quoted ones included: they start new lines in the file too).
fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

/// Line numbers of positions in a file read forwards.
struct Lines<'a> {
    data: &'a [u8],
    counted: usize,
    line: i64,
}

impl Lines<'_> {
    /// The line at byte `to` (at or after the previous call's).
    fn at(&mut self, to: u64) -> i64 {
        let to = usize::try_from(to).unwrap_or(usize::MAX).min(self.data.len());
        if to > self.counted {
            let n = newlines(self.data.get(self.counted..to).unwrap_or_default());
            self.line += i64::try_from(n).unwrap_or(i64::MAX);
            self.counted = to;
        }
        self.line
    }
}

/// Counts the data rows from the start of `data`.
fn count_rows(data: &[u8]) -> i64 {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut record = csv::ByteRecord::new();
    let mut n = 0;
    while let Ok(true) = reader.read_byte_record(&mut record) {
        n += 1;
    }
    n
}

/// Counts a run (in its own commit: a run that dies still counts; every committed chunk resets
/// the count, so only runs that make no progress add up to giving up) and marks the job
/// running. `rows_left`: the rows still to read, when known. `Some`: the run stops there.
async fn start_run(
    pool: &PgPool,
    scope: &Scope,
    job: &ImportRow,
    rows_left: Option<i64>,
) -> Result<Option<RunOutcome>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let attempts: Option<i32> = sqlx::query_scalar(
        "update crm_imports set status = 'running', started_at = coalesce(started_at, now()), \
         rows_total = case when $3::bigint is null then rows_total else rows_done + $3 end, \
         attempts = attempts + 1, updated_at = now() \
         where id = $1 and byte_offset = $2 and status in ('queued', 'running') returning attempts",
    )
    .bind(job.id)
    .bind(job.byte_offset)
    .bind(rows_left)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(attempts) = attempts else {
        return Ok(Some(RunOutcome::Superseded));
    };
    if attempts > MAX_ATTEMPTS {
        sqlx::query(
            "update crm_imports set status = 'failed', finished_at = now(), \
             error = $2 || coalesce(' (last trouble: ' || error || ')', '') where id = $1",
        )
        .bind(job.id)
        .bind(format!(
            "stopped after {MAX_ATTEMPTS} runs in a row that could not apply row {}; the rows before it are imported",
            job.rows_done + 1
        ))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Some(RunOutcome::GaveUp));
    }
    tx.commit().await?;
    Ok(None)
}

/// Every row read, the job still at `offset`: the totals settle.
async fn end_run(pool: &PgPool, scope: &Scope, job: &ImportRow, offset: i64) -> Result<RunOutcome, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let failed: Option<i64> = sqlx::query_scalar(
        "update crm_imports set rows_total = rows_done, updated_at = now() \
         where id = $1 and byte_offset = $2 and status = 'running' returning failed_count",
    )
    .bind(job.id)
    .bind(offset)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(match failed {
        Some(failed) => RunOutcome::Finished { failed },
        None => RunOutcome::Superseded,
    })
}

/// Applies the file's rows from the job's position: `data` is the file from `byte_offset` on.
pub async fn run(pool: &PgPool, job: &ImportRow, data: &[u8], opts: RunOptions) -> Result<RunOutcome, DomainError> {
    let scope = job.scope();
    if let Some(stop) = start_run(pool, &scope, job, Some(count_rows(data))).await? {
        return Ok(stop);
    }
    let mut offset = job.byte_offset;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut record = csv::ByteRecord::new();
    let mut number = job.rows_done;
    let mut lines = Lines {
        data,
        counted: 0,
        line: job.line_offset,
    };
    let mut chunk_index = 0usize;
    let chunk_rows = opts.chunk_rows.max(1);
    loop {
        if opts.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(RunOutcome::Paused);
        }
        let mut rows = Vec::with_capacity(chunk_rows);
        let mut read_error = None;
        while rows.len() < chunk_rows {
            let start = reader.position().byte();
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    // Only I/O errors end a read of a byte slice; keep what was read.
                    read_error = Some(e.to_string());
                    break;
                }
            }
            let end = reader.position().byte();
            number += 1;
            // A record's reported start is after the line break that ended the one before.
            let first_byte = usize::try_from(start)
                .ok()
                .and_then(|s| data.get(s..))
                .unwrap_or_default();
            let skipped = first_byte.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count() as u64;
            rows.push(RawRow {
                number,
                line: lines.at(start + skipped),
                cells: read_row(&record, &job.header, end.saturating_sub(start)),
                raw: raw_text(&record),
            });
        }
        if let Some(e) = read_error {
            return Err(DomainError::Internal(anyhow::anyhow!("reading the import file: {e}")));
        }
        if rows.is_empty() {
            break;
        }
        let relative_end = past_lf(data, reader.position().byte());
        let end = job.byte_offset + i64::try_from(relative_end).unwrap_or(i64::MAX);
        let end_line = lines.at(relative_end);
        let crash = opts.crash_in_chunk == Some(chunk_index);
        let to = ChunkEnd {
            offset: end,
            line: end_line,
            cursor: None,
        };
        if !apply_chunk(pool, &scope, job, offset, to, rows, crash).await? {
            return Ok(RunOutcome::Superseded);
        }
        offset = end;
        chunk_index += 1;
    }
    end_run(pool, &scope, job, offset).await
}

/// Applies a Zoho CRM module's pages from the job's position (`byte_offset` counts the pages
/// committed): a page is a chunk. A refusal (the token revoked or expired, a field that does not
/// exist) fails the job with Zoho's reason; an outage is an error, for the queue to retry.
pub async fn run_pages(
    pool: &PgPool,
    job: &ImportRow,
    reader: &zoho::Reader<'_>,
    opts: RunOptions,
) -> Result<RunOutcome, DomainError> {
    let scope = job.scope();
    if let Some(stop) = start_run(pool, &scope, job, None).await? {
        return Ok(stop);
    }
    let mut pages_done = job.byte_offset;
    let mut number = job.rows_done;
    let mut last_id = job.source_cursor.clone();
    let mut chunk_index = 0usize;
    let refused = |why: String, page: i64| async move {
        let message = format!("Zoho CRM refused page {page}: {why}");
        fail(pool, job, &message).await?;
        Ok::<_, DomainError>(RunOutcome::Refused(message))
    };
    loop {
        if opts.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(RunOutcome::Paused);
        }
        let next = pages_done + 1;
        let read = async {
            let mut records = match &last_id {
                Some(last) if pages_done > 0 => zoho::skipped_back(reader, pages_done, last).await?,
                _ => Vec::new(),
            };
            let page = reader.page(next).await?;
            records.extend(page.records);
            Ok::<_, CallError>((records, page.more))
        };
        let (records, more) = match read.await {
            Ok(read) => read,
            Err(CallError::Refused(why)) => return refused(why, next).await,
            // What was read is committed; another run goes on from here.
            Err(CallError::OutOfTime) => return Ok(RunOutcome::Paused),
            Err(CallError::Unavailable(why)) => {
                // Shown on the running import, and in the reason if it is given up.
                let message = format!("Zoho CRM page {next}: {why}");
                let mut tx = pg::begin(pool, &scope).await?;
                sqlx::query("update crm_imports set error = $2 where id = $1 and status = 'running'")
                    .bind(job.id)
                    .bind(&message)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Err(DomainError::Internal(anyhow::anyhow!(message)));
            }
        };
        // Only records after the last one imported, each once (ids ascend through the pages).
        let fresh: Vec<&Value> = records
            .iter()
            .filter(|r| zoho::id_of(r).is_some_and(|id| last_id.as_deref().is_none_or(|last| zoho::after(id, last))))
            .fold(Vec::new(), |mut kept: Vec<&Value>, r| {
                if !kept.iter().any(|k| zoho::id_of(k) == zoho::id_of(r)) {
                    kept.push(r);
                }
                kept
            });
        if fresh.is_empty() && records.is_empty() {
            break;
        }
        let newest = fresh
            .iter()
            .filter_map(|r| zoho::id_of(r))
            .fold(last_id.clone(), |acc, id| match acc {
                Some(a) if !zoho::after(id, &a) => Some(a),
                _ => Some(id.to_owned()),
            });
        let rows: Vec<RawRow> = fresh
            .iter()
            .map(|record| {
                number += 1;
                let cells = zoho::cells(record, &job.header);
                let raw = raw_text(&csv::ByteRecord::from(cells.clone()));
                RawRow {
                    number,
                    line: number,
                    cells: Ok(cells),
                    raw,
                }
            })
            .collect();
        let crash = opts.crash_in_chunk == Some(chunk_index);
        let to = ChunkEnd {
            offset: next,
            line: number + 1,
            cursor: newest.as_deref(),
        };
        if !apply_chunk(pool, &scope, job, pages_done, to, rows, crash).await? {
            return Ok(RunOutcome::Superseded);
        }
        pages_done = next;
        last_id = newest;
        chunk_index += 1;
        if !more {
            break;
        }
    }
    end_run(pool, &scope, job, pages_done).await
}

/// Ends a job: completed, with the key of its errors file (if any rows failed).
pub async fn complete(pool: &PgPool, job: &ImportRow, errors_key: Option<&str>) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, &job.scope()).await?;
    sqlx::query(
        "update crm_imports set status = 'completed', errors_key = $2, finished_at = now(), updated_at = now() \
         where id = $1 and status = 'running'",
    )
    .bind(job.id)
    .bind(errors_key)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Every failed row of a job as CSV: row, line, fields, error, and the row's data (cells that
/// a spreadsheet would run as formulas guarded).
pub async fn errors_csv(pool: &PgPool, job: &ImportRow) -> Result<Vec<u8>, DomainError> {
    let mut tx = pg::begin(pool, &job.scope()).await?;
    let rows: Vec<(i64, i64, String, String, String)> = sqlx::query_as(
        "select row_number, line, fields, message, raw from crm_import_errors where import_id = $1 order by row_number",
    )
    .bind(job.id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut out = table::writer();
    let csv_err = |e: csv::Error| DomainError::Internal(anyhow::Error::new(e).context("writing the errors CSV"));
    out.write_record(["row", "line", "fields", "error", "data"])
        .map_err(csv_err)?;
    for (row, line, fields, message, raw) in rows {
        out.write_record([
            row.to_string().as_str(),
            line.to_string().as_str(),
            &table::escape_cell(&fields),
            &table::escape_cell(&message),
            &table::escape_cell(&raw),
        ])
        .map_err(csv_err)?;
    }
    out.into_inner()
        .map_err(|e| DomainError::Internal(anyhow::anyhow!("writing the errors CSV: {e}")))
}

// ----------------------------------------------------------------------------- one chunk

/// A row the chunk will write, or why not.
enum Outcome {
    Insert,
    Update(Uuid),
    Skip,
    Fail(String, String),
}

struct Counts {
    created: i64,
    updated: i64,
    skipped: i64,
    failed: i64,
    companies: i64,
}

fn describe(errors: &[FieldError]) -> (String, String) {
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
async fn owners(tx: &mut Tx) -> Result<HashMap<String, Uuid>, DomainError> {
    let rows: Vec<(String, Uuid)> =
        sqlx::query_as("select lower(u.email), u.id from memberships m join users u on u.id = m.user_id")
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().collect())
}

fn owner_of(cells: &Cells, owners: &HashMap<String, Uuid>, v: &mut Validator) -> Option<Uuid> {
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
struct ChunkEnd<'a> {
    offset: i64,
    line: i64,
    cursor: Option<&'a str>,
}

/// Writes one chunk and the job's progress in one transaction. `false`: the job is no longer
/// at `offset` (another run took it further, or it ended), nothing written.
async fn apply_chunk(
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
async fn store_errors(tx: &mut Tx, job: &ImportRow, failures: &[(&RawRow, String, String)]) -> Result<(), DomainError> {
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
async fn store_activity(
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
fn dedupe(
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
fn waves(updates: Vec<Value>, target: impl Fn(&Value) -> Option<String>) -> Vec<Vec<Value>> {
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
const MERGED_TAGS: &str = "(select coalesce(array_agg(t order by o), '{}') from (select t, min(o) as o \
    from unnest(x.tags || r.tags) with ordinality as u(t, o) group by t order by min(o) limit 50) as m)";

async fn contacts_chunk(
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

async fn companies_chunk(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> FileHead {
        FileHead {
            object_key: "k".to_owned(),
            size: bytes.len() as u64,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn headers_with_a_bom_quotes_and_crlf() {
        let h = parse_header(&head(b"\xEF\xBB\xBF\"First Name\",Email\r\nAda,a@x.io\r\n")).unwrap();
        assert_eq!(h.columns, vec!["First Name", "Email"]);
        assert_eq!(h.data_offset, 3 + 20);
        assert_eq!(h.data_line, 2);
        let multi = parse_header(&head(b"\"a\nb\",c\nx,y\n")).unwrap();
        assert_eq!(multi.columns, vec!["a\nb", "c"]);
        assert_eq!(multi.data_line, 3);
    }

    #[test]
    fn files_that_are_not_utf8_csv_are_refused_with_reasons() {
        for (bytes, code) in [
            (&b""[..], "empty_file"),
            (&b"\xFF\xFEa\x00,\x00"[..], "wrong_encoding"),
            (&b"Nom,Pr\xE9nom\n"[..], "wrong_encoding"),
            (&b"\n\n"[..], "no_header"),
        ] {
            let DomainError::Invalid(errors) = parse_header(&head(bytes)).unwrap_err() else {
                panic!("not invalid")
            };
            assert_eq!(errors[0].code, code, "{bytes:?}");
        }
        // A header cut off by the 64 KiB read.
        let long = FileHead {
            object_key: "k".to_owned(),
            size: HEAD_BYTES * 2,
            bytes: vec![b'a'; HEAD_BYTES as usize],
        };
        let DomainError::Invalid(errors) = parse_header(&long).unwrap_err() else {
            panic!("not invalid")
        };
        assert_eq!(errors[0].code, "header_too_long");
    }

    #[test]
    fn dedupe_rules_against_existing_and_earlier_rows() {
        let existing: HashMap<String, Uuid> = [("a".to_owned(), Uuid::from_u128(1))].into_iter().collect();
        let keys = vec![Some("a".to_owned()), Some("b".to_owned()), Some("b".to_owned()), None];
        let ids: Vec<Uuid> = (10..14).map(Uuid::from_u128).collect();
        let names = |rule| {
            dedupe(rule, &keys, &existing, &ids, ("f", "m"))
                .into_iter()
                .map(|o| match o {
                    Outcome::Insert => "insert".to_owned(),
                    Outcome::Update(t) => format!("update {}", t.as_u128()),
                    Outcome::Skip => "skip".to_owned(),
                    Outcome::Fail(..) => "fail".to_owned(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Dedupe::Skip), ["skip", "insert", "skip", "insert"]);
        assert_eq!(names(Dedupe::Update), ["update 1", "insert", "update 11", "insert"]);
        assert_eq!(names(Dedupe::Create), ["fail", "insert", "fail", "insert"]);
    }
}
