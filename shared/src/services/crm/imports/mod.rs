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
use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, FieldError, Scope, Text, Validator};
use crate::services::billing::entitlements::{self, Limit};
use crate::services::connectors::CallError;
use crate::services::idempotency::{self, Created, IdempotencyKey};
use crate::services::providers::zoho;

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
    /// Size in bytes: 1 to 100 MiB.
    #[schema(minimum = 1, maximum = 104_857_600)]
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

mod chunk;
mod file;
mod rows;
mod run;

use chunk::*;
pub use file::*;
use rows::*;
pub use run::*;

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
