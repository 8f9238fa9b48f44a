//! Running an import job: chunks of rows from the job's offset, each committed with the
//! progress (a crash resumes at the next unread row), the run's start and end, and the errors
//! file.
use super::*;

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

/// Counts a run (in its own commit: a run that dies still counts; every committed chunk resets
/// the count, so only runs that make no progress add up to giving up) and marks the job
/// running. `rows_left`: the rows still to read, when known. `Some`: the run stops there.
pub(super) async fn start_run(
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
pub(super) async fn end_run(
    pool: &PgPool,
    scope: &Scope,
    job: &ImportRow,
    offset: i64,
) -> Result<RunOutcome, DomainError> {
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
        let (fresh, newest) = fresh_records(&records, last_id.as_deref());
        if fresh.is_empty() && records.is_empty() {
            break;
        }
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
