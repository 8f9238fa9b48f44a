//! The uploaded CSV file: its header (columns, mapping) and its rows as read, with their
//! byte offsets and line numbers.
use super::*;

/// The header row: the column names, and where the first data row starts (after a UTF-8 BOM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub columns: Vec<String>,
    pub data_offset: u64,
    pub data_line: u64,
}

pub(super) fn file_error(code: &'static str, message: impl Into<String>) -> DomainError {
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

/// One data row as read: its number, line, cells (or why they cannot be read), and the row's
/// text as it was (shortened) for the errors file.
pub(super) struct RawRow {
    pub(super) number: i64,
    pub(super) line: i64,
    pub(super) cells: Result<Vec<String>, String>,
    pub(super) raw: String,
}

pub(super) fn raw_text(record: &csv::ByteRecord) -> String {
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

pub(super) fn read_row(record: &csv::ByteRecord, header: &[String], bytes: u64) -> Result<Vec<String>, String> {
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
pub(super) fn past_lf(data: &[u8], at: u64) -> u64 {
    let i = usize::try_from(at).unwrap_or(usize::MAX);
    if data.get(i) == Some(&b'\n') { at + 1 } else { at }
}

/// Line breaks in `bytes` (quoted ones included: they start new lines in the file too).
pub(super) fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

/// Line numbers of positions in a file read forwards.
pub(super) struct Lines<'a> {
    pub(super) data: &'a [u8],
    pub(super) counted: usize,
    pub(super) line: i64,
}

impl Lines<'_> {
    /// The line at byte `to` (at or after the previous call's).
    pub(super) fn at(&mut self, to: u64) -> i64 {
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
pub(super) fn count_rows(data: &[u8]) -> i64 {
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
