//! CSV exports of contacts and companies: `POST /crm/exports` takes the list's filters (the
//! same parameters as `GET /crm/contacts` / `GET /crm/companies`, checked by the list itself);
//! the `crm-import` worker pages through that very list and writes a CSV to the bucket; `GET
//! /crm/exports/{id}` then answers a presigned download link.
//!
//! The file's headers are the import's field names (`first_name`, `address.city`,
//! `custom.<key>`), so an export imports back as it is. Cells a spreadsheet would run as a
//! formula are guarded with a leading `'` (`table::escape_cell`), which an import removes.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;
use sqlx::types::Json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::companies::{self, CompanyListParams};
use super::contacts::{self, ContactListParams};
use super::imports::{JobStatus, MAX_ATTEMPTS};
use super::table::TableEntity;
use crate::adapters::pg;
use crate::domain::{DomainError, Scope};
use crate::services::idempotency::{self, Created, IdempotencyKey};

/// `POST /crm/exports`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExport {
    pub entity: TableEntity,
    /// The list's filters (`q`, `tag`, `owner_id`, `lifecycle_stage`, `company_id`,
    /// `created_after`, ..., `custom`, `sort`) as for `GET /crm/contacts` or `/crm/companies`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub filters: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Export {
    pub id: Uuid,
    pub entity: TableEntity,
    #[schema(value_type = Object)]
    pub filters: Value,
    pub status: JobStatus,
    pub rows: Option<i64>,
    pub bytes: Option<i64>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The CSV, for 15 minutes from this answer (completed exports only).
    pub download_url: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExportRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub entity: TableEntity,
    pub filters: Json<Map<String, Value>>,
    pub status: JobStatus,
    pub rows: Option<i64>,
    pub bytes: Option<i64>,
    pub object_key: Option<String>,
    pub error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: i32,
}

const COLUMNS: &str = "id, tenant_id, entity, filters, status, rows, bytes, object_key, error, created_by, created_at, \
    finished_at, attempts";

impl ExportRow {
    pub fn view(self) -> Export {
        Export {
            id: self.id,
            entity: self.entity,
            filters: Value::Object(self.filters.0),
            status: self.status,
            rows: self.rows,
            bytes: self.bytes,
            error: self.error,
            created_at: self.created_at,
            finished_at: self.finished_at,
            download_url: None,
        }
    }

    pub fn scope(&self) -> Scope {
        Scope::worker(self.tenant_id, &self.created_by, format!("export:{}", self.id))
    }

    /// Where the file goes in the bucket.
    pub fn object_key(&self) -> String {
        format!("exports/{}/{}.csv", self.tenant_id, self.id)
    }

    /// The name a browser saves it under.
    pub fn file_name(&self) -> String {
        let what = match self.entity {
            TableEntity::Contacts => "contacts",
            TableEntity::Companies => "companies",
        };
        format!("{what}-{}.csv", self.created_at.format("%Y-%m-%d"))
    }
}

enum Filters {
    Contacts(ContactListParams),
    Companies(CompanyListParams),
}

fn parse_filters(entity: TableEntity, raw: &Map<String, Value>) -> Result<Filters, DomainError> {
    for paging in ["limit", "cursor"] {
        if raw.contains_key(paging) {
            return Err(DomainError::invalid(
                &format!("filters.{paging}"),
                "unknown_filter",
                "an export holds every record the filters match; paging does not apply",
            ));
        }
    }
    let value = Value::Object(raw.clone());
    let bad = |e: serde_json::Error| DomainError::invalid("filters", "invalid_filters", e.to_string());
    Ok(match entity {
        TableEntity::Contacts => Filters::Contacts(serde_json::from_value(value).map_err(bad)?),
        TableEntity::Companies => Filters::Companies(serde_json::from_value(value).map_err(bad)?),
    })
}

/// Records an export (queued for the worker) after the list has accepted its filters. Honours
/// `Idempotency-Key`.
pub async fn create(
    pool: &PgPool,
    scope: &Scope,
    input: NewExport,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<Export>, DomainError> {
    let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
    // The list checks the filters (422 naming the one at fault) on a one-row page.
    match parse_filters(input.entity, &input.filters)? {
        Filters::Contacts(mut p) => {
            p.page.limit = Some(1);
            contacts::list(pool, scope, p).await.map(drop)
        }
        Filters::Companies(mut p) => {
            p.page.limit = Some(1);
            companies::list(pool, scope, p).await.map(drop)
        }
    }
    .map_err(|e| match e {
        DomainError::Invalid(errors) => DomainError::Invalid(
            errors
                .into_iter()
                .map(|mut f| {
                    f.field = format!("filters.{}", f.field);
                    f
                })
                .collect(),
        ),
        other => other,
    })?;
    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    let row: ExportRow = sqlx::query_as(&format!(
        "insert into crm_exports (id, tenant_id, entity, filters, created_by) values ($1, $2, $3, $4, $5) \
         returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(input.entity)
    .bind(Json(&input.filters))
    .bind(scope.actor.principal())
    .fetch_one(&mut *tx)
    .await?;
    let export = row.view();
    idempotency::store(&mut tx, scope, idem, 201, &export).await?;
    tx.commit().await?;
    Ok(Created::Fresh(export))
}

pub async fn get(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<ExportRow, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let row: ExportRow = sqlx::query_as(&format!("select {COLUMNS} from crm_exports where id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(DomainError::NotFound)?;
    tx.commit().await?;
    Ok(row)
}

/// Loads an export to run: `None` when it does not exist or has ended.
pub async fn load(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<Option<ExportRow>, DomainError> {
    let scope = Scope::worker(tenant_id, "", format!("export:{id}"));
    let mut tx = pg::begin(pool, &scope).await?;
    // Every run counts (in its own commit); after MAX_ATTEMPTS the export is given up.
    let row: Option<ExportRow> = sqlx::query_as(&format!(
        "update crm_exports set status = 'running', attempts = attempts + 1, updated_at = now() \
         where id = $1 and status in ('queued', 'running') returning {COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let row = match row {
        Some(row) if row.attempts > MAX_ATTEMPTS => {
            sqlx::query(
                "update crm_exports set status = 'failed', finished_at = now(), \
                 error = 'stopped after ' || $2 || ' runs that could not write the file' where id = $1",
            )
            .bind(id)
            .bind(MAX_ATTEMPTS)
            .execute(&mut *tx)
            .await?;
            None
        }
        other => other,
    };
    tx.commit().await?;
    Ok(row)
}

/// Ends an export: completed with its file, or failed with the reason.
pub async fn finish(pool: &PgPool, job: &ExportRow, result: Result<(i64, i64), &str>) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, &job.scope()).await?;
    let (status, rows, bytes, key, error) = match result {
        Ok((rows, bytes)) => ("completed", Some(rows), Some(bytes), Some(job.object_key()), None),
        Err(why) => ("failed", None, None, None, Some(why)),
    };
    sqlx::query(
        "update crm_exports set status = $2, rows = $3, bytes = $4, object_key = $5, error = $6, \
         finished_at = now(), updated_at = now() where id = $1 and status in ('queued', 'running')",
    )
    .bind(job.id)
    .bind(status)
    .bind(rows)
    .bind(bytes)
    .bind(key)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Writing the file (the worker's part, with the S3 upload).
#[cfg(feature = "s3")]
mod writing {
    use super::super::fields::{self, CustomField};
    use super::super::input::Address;
    use super::super::table;
    use super::*;
    use crate::adapters::s3_upload::MultipartUpload;
    use chrono::SecondsFormat;
    use std::collections::HashMap;

    fn csv_error(e: impl std::fmt::Display) -> DomainError {
        DomainError::Internal(anyhow::anyhow!("writing the export CSV: {e}"))
    }

    /// The CSV being written: rows are buffered a page at a time and handed to the upload, which
    /// sends a part whenever it holds one (memory stays flat whatever the row count).
    struct Sheet<'a> {
        out: csv::Writer<Vec<u8>>,
        rows: i64,
        upload: &'a mut MultipartUpload,
    }

    impl<'a> Sheet<'a> {
        fn new(header: &[String], upload: &'a mut MultipartUpload) -> Result<Self, DomainError> {
            let mut out = table::writer();
            out.write_record(header).map_err(csv_error)?;
            Ok(Self { out, rows: 0, upload })
        }

        /// Hands the rows written so far to the upload.
        async fn flush(&mut self) -> Result<(), DomainError> {
            let full = std::mem::replace(&mut self.out, table::writer());
            let bytes = full.into_inner().map_err(csv_error)?;
            self.upload.write(&bytes).await.map_err(DomainError::Internal)
        }

        fn row(&mut self, cells: &[String]) -> Result<(), DomainError> {
            self.out
                .write_record(cells.iter().map(|c| table::escape_cell(c).into_owned()))
                .map_err(csv_error)?;
            self.rows += 1;
            Ok(())
        }

        async fn finish(mut self) -> Result<i64, DomainError> {
            self.flush().await?;
            Ok(self.rows)
        }
    }

    fn address_cells(a: &Address) -> [String; 5] {
        [
            a.street.clone().unwrap_or_default(),
            a.city.clone().unwrap_or_default(),
            a.region.clone().unwrap_or_default(),
            a.postal_code.clone().unwrap_or_default(),
            a.country.clone().unwrap_or_default(),
        ]
    }

    fn custom_cells(defs: &[CustomField], custom: &Map<String, Value>) -> Vec<String> {
        defs.iter()
            .map(|d| match custom.get(&d.key) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            })
            .collect()
    }

    fn time(at: DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Writes the CSV of every record the export's filters match to `upload`, a page at a time;
    /// answers how many rows it has.
    pub async fn build(pool: &PgPool, job: &ExportRow, upload: &mut MultipartUpload) -> Result<i64, DomainError> {
        let scope = job.scope();
        let (defs, owners) = {
            let mut tx = pg::begin(pool, &scope).await?;
            let defs = fields::definitions(&mut tx, job.entity.field_entity()).await?;
            let owners: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(
                "select u.id, u.email from memberships m join users u on u.id = m.user_id",
            )
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            tx.commit().await?;
            (defs, owners)
        };
        let owner = |id: Option<Uuid>| id.and_then(|id| owners.get(&id).cloned()).unwrap_or_default();
        let custom_header = defs.iter().map(|d| format!("custom.{}", d.key));
        let mut cursor: Option<String> = None;
        match parse_filters(job.entity, &job.filters.0)? {
            Filters::Contacts(params) => {
                let header: Vec<String> = [
                    "id",
                    "first_name",
                    "last_name",
                    "email",
                    "other_emails",
                    "phone",
                    "mobile",
                ]
                .into_iter()
                .chain(["title", "company", "owner", "lifecycle_stage", "tags", "notes"])
                .chain([
                    "address.street",
                    "address.city",
                    "address.region",
                    "address.postal_code",
                ])
                .chain(["address.country", "source"])
                .map(str::to_owned)
                .chain(custom_header)
                .chain(["created_at".to_owned(), "updated_at".to_owned()])
                .collect();
                let mut sheet = Sheet::new(&header, upload)?;
                loop {
                    let mut p = params.clone();
                    p.page = crate::domain::PageParams {
                        limit: Some(crate::domain::page::MAX_LIMIT),
                        cursor: cursor.take(),
                    };
                    let page = contacts::list(pool, &scope, p).await?;
                    for c in &page.items {
                        let mut cells = vec![
                            c.id.to_string(),
                            c.first_name.clone(),
                            c.last_name.clone(),
                            c.email.clone().unwrap_or_default(),
                            c.other_emails.join("; "),
                            c.phone.clone().unwrap_or_default(),
                            c.mobile.clone().unwrap_or_default(),
                            c.title.clone().unwrap_or_default(),
                            c.company_name.clone().unwrap_or_default(),
                            owner(c.owner_id),
                            table::lifecycle_name(c.lifecycle_stage).to_owned(),
                            c.tags.join("; "),
                            c.notes.clone(),
                        ];
                        cells.extend(address_cells(&c.address.0));
                        cells.push(c.source.clone());
                        cells.extend(custom_cells(&defs, &c.custom.0));
                        cells.push(time(c.created_at));
                        cells.push(time(c.updated_at));
                        sheet.row(&cells)?;
                    }
                    sheet.flush().await?;
                    match page.next_cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                sheet.finish().await
            }
            Filters::Companies(params) => {
                let header: Vec<String> = ["id", "name", "domain", "industry", "phone", "owner", "tags", "notes"]
                    .into_iter()
                    .chain([
                        "address.street",
                        "address.city",
                        "address.region",
                        "address.postal_code",
                    ])
                    .chain(["address.country", "source", "contacts"])
                    .map(str::to_owned)
                    .chain(custom_header)
                    .chain(["created_at".to_owned(), "updated_at".to_owned()])
                    .collect();
                let mut sheet = Sheet::new(&header, upload)?;
                loop {
                    let mut p = params.clone();
                    p.page = crate::domain::PageParams {
                        limit: Some(crate::domain::page::MAX_LIMIT),
                        cursor: cursor.take(),
                    };
                    let page = companies::list(pool, &scope, p).await?;
                    for c in &page.items {
                        let mut cells = vec![
                            c.id.to_string(),
                            c.name.clone(),
                            c.domain.clone().unwrap_or_default(),
                            c.industry.clone().unwrap_or_default(),
                            c.phone.clone().unwrap_or_default(),
                            owner(c.owner_id),
                            c.tags.join("; "),
                            c.notes.clone(),
                        ];
                        cells.extend(address_cells(&c.address.0));
                        cells.push(c.source.clone());
                        cells.push(c.contacts.to_string());
                        cells.extend(custom_cells(&defs, &c.custom.0));
                        cells.push(time(c.created_at));
                        cells.push(time(c.updated_at));
                        sheet.row(&cells)?;
                    }
                    sheet.flush().await?;
                    match page.next_cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                sheet.finish().await
            }
        }
    }
}
#[cfg(feature = "s3")]
pub use writing::build;
