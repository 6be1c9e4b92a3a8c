//! Streaming readers for the source formats. Each yields one row at a time:
//! the values of the columns the mapping needs, the row's line (or row
//! number), and on request the whole raw row as JSON for quarantine.
//!
//! Whole-file problems (wrong encoding, missing columns, truncation, not the
//! declared format) are `Fatal` and name the file, line and column.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};

use crate::schema::{EntityMapping, FileFormat, TextEncoding};

use super::IngestError;

/// One data row.
pub(crate) enum RowResult {
    /// The values of the needed columns (None = absent or null).
    Row(u64),
    /// The row could not be split into fields; quarantined as a whole.
    Malformed { line: u64, detail: String },
}

pub(crate) trait SourceReader {
    /// Read the next row's needed values into `out`; `None` at the end.
    fn next_row(&mut self, out: &mut [Option<String>]) -> Result<Option<RowResult>, IngestError>;
    /// The current (last returned) row as a JSON object of every source column.
    fn raw_json(&self) -> String;
}

/// Counts bytes as they are read, for the progress bar.
pub(crate) struct Counting<R> {
    inner: R,
    pub(crate) count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

pub(crate) fn open(
    path: &Path,
    mapping: &EntityMapping,
    needed: &[String],
    mandatory: &[String],
    batch_rows: usize,
    counter: Arc<AtomicU64>,
) -> Result<Box<dyn SourceReader>, IngestError> {
    let file = File::open(path).map_err(|e| IngestError::io(path, e))?;
    let ends_with_newline = ends_with_newline(path)?;
    let (encoding, delimiter) = (mapping.encoding, mapping.delimiter);
    Ok(match mapping.format {
        FileFormat::Csv => Box::new(CsvSource::new(
            path,
            file,
            encoding,
            delimiter,
            needed,
            mandatory,
            ends_with_newline,
            counter,
        )?),
        FileFormat::Jsonl => Box::new(JsonlSource::new(
            path,
            file,
            needed,
            mandatory,
            ends_with_newline,
            counter,
        )),
        FileFormat::Parquet => Box::new(ParquetSource::new(
            path, file, needed, mandatory, batch_rows, counter,
        )?),
    })
}

fn ends_with_newline(path: &Path) -> Result<bool, IngestError> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path).map_err(|e| IngestError::io(path, e))?;
    let len = f.metadata().map_err(|e| IngestError::io(path, e))?.len();
    if len == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::End(-1))
        .map_err(|e| IngestError::io(path, e))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b).map_err(|e| IngestError::io(path, e))?;
    Ok(b[0] == b'\n')
}

fn fatal(
    path: &Path,
    line: Option<u64>,
    column: Option<String>,
    message: impl Into<String>,
) -> IngestError {
    IngestError::Unreadable {
        file: Box::new(path.to_path_buf()),
        line,
        column: column.map(String::into_boxed_str),
        message: message.into().into_boxed_str(),
    }
}

fn missing_columns(
    path: &Path,
    header: &[String],
    mandatory: &[String],
) -> Result<(), IngestError> {
    let missing: Vec<&str> = mandatory
        .iter()
        .filter(|m| !header.iter().any(|h| h == *m))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = header.iter().take(12).map(String::as_str).collect();
    Err(fatal(
        path,
        Some(1),
        None,
        format!(
            "missing mandatory column(s) {} (found: {}); is this the right file, format and encoding?",
            missing.join(", "),
            shown.join(", ")
        ),
    ))
}

// ---------------------------------------------------------------- CSV

struct CsvSource {
    path: PathBuf,
    rdr: csv::Reader<Counting<BufReader<File>>>,
    encoding: TextEncoding,
    header: Vec<String>,
    index: Vec<Option<usize>>,
    record: csv::ByteRecord,
    ends_with_newline: bool,
    file_len: u64,
    fields: Vec<String>,
}

impl CsvSource {
    #[allow(clippy::too_many_arguments)]
    fn new(
        path: &Path,
        file: File,
        encoding: TextEncoding,
        delimiter: char,
        needed: &[String],
        mandatory: &[String],
        ends_with_newline: bool,
        counter: Arc<AtomicU64>,
    ) -> Result<Self, IngestError> {
        let file_len = file.metadata().map_err(|e| IngestError::io(path, e))?.len();
        let reader = Counting {
            inner: BufReader::with_capacity(1 << 20, file),
            count: counter,
        };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(u8::try_from(delimiter).unwrap_or(b','))
            .from_reader(reader);
        let mut record = csv::ByteRecord::new();
        let got = rdr
            .read_byte_record(&mut record)
            .map_err(|e| fatal(path, Some(1), None, format!("cannot read the header: {e}")))?;
        if !got {
            return Err(fatal(
                path,
                Some(1),
                None,
                "the file is empty (no header line)",
            ));
        }
        let mut header = Vec::with_capacity(record.len());
        for (i, f) in record.iter().enumerate() {
            let f = if i == 0 {
                f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f)
            } else {
                f
            };
            header.push(
                decode(path, encoding, f, 1, i + 1, "header")?
                    .trim()
                    .to_string(),
            );
        }
        missing_columns(path, &header, mandatory)?;
        let index = needed
            .iter()
            .map(|n| header.iter().position(|h| h == n))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            rdr,
            encoding,
            header,
            index,
            record,
            ends_with_newline,
            file_len,
            fields: Vec::new(),
        })
    }
}

fn decode(
    path: &Path,
    encoding: TextEncoding,
    bytes: &[u8],
    line: u64,
    col: usize,
    name: &str,
) -> Result<String, IngestError> {
    match encoding {
        TextEncoding::Utf8 => std::str::from_utf8(bytes).map(str::to_string).map_err(|e| {
            fatal(
                path,
                Some(line),
                Some(format!("{col} ({name})")),
                format!(
                    "invalid UTF-8 at byte {} of the field; the mapping declares utf8 (is the file GBK-encoded?)",
                    e.valid_up_to() + 1
                ),
            )
        }),
        TextEncoding::Gbk => encoding_rs::GBK
            .decode_without_bom_handling_and_without_replacement(bytes)
            .map(|c| c.into_owned())
            .ok_or_else(|| {
                fatal(
                    path,
                    Some(line),
                    Some(format!("{col} ({name})")),
                    "bytes that are not valid GBK; the mapping declares gbk (is the file UTF-8?)",
                )
            }),
    }
}

impl SourceReader for CsvSource {
    fn next_row(&mut self, out: &mut [Option<String>]) -> Result<Option<RowResult>, IngestError> {
        loop {
            let got = self.rdr.read_byte_record(&mut self.record).map_err(|e| {
                let line = e.position().map(|p| p.line());
                fatal(&self.path, line, None, format!("cannot parse CSV: {e}"))
            })?;
            if !got {
                return Ok(None);
            }
            let line = self.record.position().map_or(0, |p| p.line());
            if self.record.len() == 1 && self.record[0].is_empty() {
                continue; // blank line
            }
            // Decode every field (also for the raw row of a bad record).
            self.fields.clear();
            for (i, f) in self.record.iter().enumerate() {
                let name = self.header.get(i).map_or("?", String::as_str);
                let s = decode(&self.path, self.encoding, f, line, i + 1, name)?;
                self.fields.push(s);
            }
            if self.record.len() != self.header.len() {
                let at_end = self.rdr.position().byte() >= self.file_len;
                if !self.ends_with_newline && at_end {
                    return Err(fatal(
                        &self.path,
                        Some(line),
                        None,
                        format!(
                            "the file is truncated: the last line has {} of {} fields and no line end",
                            self.record.len(),
                            self.header.len()
                        ),
                    ));
                }
                return Ok(Some(RowResult::Malformed {
                    line,
                    detail: format!(
                        "{} fields where the header has {}",
                        self.record.len(),
                        self.header.len()
                    ),
                }));
            }
            for (slot, idx) in out.iter_mut().zip(&self.index) {
                *slot = idx.and_then(|i| {
                    let v = &self.fields[i];
                    (!v.trim().is_empty()).then(|| v.clone())
                });
            }
            return Ok(Some(RowResult::Row(line)));
        }
    }

    fn raw_json(&self) -> String {
        let mut m = serde_json::Map::new();
        for (i, v) in self.fields.iter().enumerate() {
            let k = self
                .header
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("_extra_{}", i + 1));
            m.insert(k, serde_json::Value::String(v.clone()));
        }
        serde_json::Value::Object(m).to_string()
    }
}

// ---------------------------------------------------------------- JSON Lines

struct JsonlSource {
    path: PathBuf,
    rdr: Counting<BufReader<File>>,
    line_buf: Vec<u8>,
    line: u64,
    needed: Vec<String>,
    mandatory: Vec<String>,
    ends_with_newline: bool,
    current: String,
    seen_valid: bool,
}

impl JsonlSource {
    fn new(
        path: &Path,
        file: File,
        needed: &[String],
        mandatory: &[String],
        ends_with_newline: bool,
        counter: Arc<AtomicU64>,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            rdr: Counting {
                inner: BufReader::with_capacity(1 << 20, file),
                count: counter,
            },
            line_buf: Vec::with_capacity(4096),
            line: 0,
            needed: needed.to_vec(),
            mandatory: mandatory.to_vec(),
            ends_with_newline,
            current: String::new(),
            seen_valid: false,
        }
    }
}

impl SourceReader for JsonlSource {
    fn next_row(&mut self, out: &mut [Option<String>]) -> Result<Option<RowResult>, IngestError> {
        loop {
            self.line_buf.clear();
            let n = self
                .rdr
                .inner
                .read_until(b'\n', &mut self.line_buf)
                .map_err(|e| IngestError::io(&self.path, e))?;
            self.rdr.count.fetch_add(n as u64, Ordering::Relaxed);
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let last_without_newline = !self.line_buf.ends_with(b"\n");
            let text = std::str::from_utf8(&self.line_buf).map_err(|e| {
                let col = String::from_utf8_lossy(&self.line_buf[..e.valid_up_to()])
                    .chars()
                    .count()
                    + 1;
                fatal(
                    &self.path,
                    Some(self.line),
                    Some(col.to_string()),
                    "invalid UTF-8 (JSON Lines must be UTF-8)",
                )
            })?;
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            self.current = text.to_string();
            let parsed: Result<serde_json::Map<String, serde_json::Value>, _> =
                serde_json::from_str(text);
            let obj = match parsed {
                Ok(o) => o,
                Err(e) => {
                    if last_without_newline && !self.ends_with_newline {
                        return Err(fatal(
                            &self.path,
                            Some(self.line),
                            Some(e.column().to_string()),
                            format!(
                                "the file is truncated: the last line is not a complete JSON object ({e})"
                            ),
                        ));
                    }
                    if !self.seen_valid {
                        return Err(fatal(
                            &self.path,
                            Some(self.line),
                            Some(e.column().to_string()),
                            format!("not JSON Lines: the first record is not a JSON object ({e})"),
                        ));
                    }
                    return Ok(Some(RowResult::Malformed {
                        line: self.line,
                        detail: format!("not a JSON object: {e}"),
                    }));
                }
            };
            if !self.seen_valid {
                let keys: Vec<String> = obj.keys().cloned().collect();
                missing_columns(&self.path, &keys, &self.mandatory).map_err(|e| match e {
                    IngestError::Unreadable {
                        file,
                        column,
                        message,
                        ..
                    } => IngestError::Unreadable {
                        file,
                        line: Some(self.line),
                        column,
                        message,
                    },
                    other => other,
                })?;
                self.seen_valid = true;
            }
            for (slot, key) in out.iter_mut().zip(&self.needed) {
                *slot = match obj.get(key) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => (!s.trim().is_empty()).then(|| s.clone()),
                    Some(other) => Some(other.to_string()),
                };
            }
            return Ok(Some(RowResult::Row(self.line)));
        }
    }

    fn raw_json(&self) -> String {
        self.current.clone()
    }
}

// ---------------------------------------------------------------- Parquet

struct ParquetSource {
    reader: ParquetRecordBatchReader,
    path: PathBuf,
    names: Vec<String>,
    index: Vec<Option<usize>>,
    columns: Vec<StringArray>,
    row_in_batch: usize,
    rows_in_batch: usize,
    row: u64,
    counter: Arc<AtomicU64>,
    bytes_per_row: u64,
}

impl ParquetSource {
    fn new(
        path: &Path,
        file: File,
        needed: &[String],
        mandatory: &[String],
        batch_rows: usize,
        counter: Arc<AtomicU64>,
    ) -> Result<Self, IngestError> {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
            fatal(
                path,
                None,
                None,
                format!("not a readable Parquet file: {e}"),
            )
        })?;
        let total_rows = builder.metadata().file_metadata().num_rows().max(1) as u64;
        let names: Vec<String> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        missing_columns(path, &names, mandatory)?;
        let index = needed
            .iter()
            .map(|n| names.iter().position(|h| h == n))
            .collect();
        let reader = builder.with_batch_size(batch_rows).build().map_err(|e| {
            fatal(
                path,
                None,
                None,
                format!("not a readable Parquet file: {e}"),
            )
        })?;
        Ok(Self {
            reader,
            path: path.to_path_buf(),
            names,
            index,
            columns: Vec::new(),
            row_in_batch: 0,
            rows_in_batch: 0,
            row: 0,
            counter,
            bytes_per_row: size / total_rows,
        })
    }
}

fn as_text(col: &ArrayRef) -> Result<StringArray, String> {
    let c = match col.data_type() {
        DataType::Utf8 => col.clone(),
        _ => cast(col, &DataType::Utf8).map_err(|e| e.to_string())?,
    };
    c.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| "column is not text".to_string())
}

impl SourceReader for ParquetSource {
    fn next_row(&mut self, out: &mut [Option<String>]) -> Result<Option<RowResult>, IngestError> {
        if self.row_in_batch >= self.rows_in_batch {
            let Some(batch) = self.reader.next() else {
                return Ok(None);
            };
            let batch = batch.map_err(|e| {
                fatal(
                    &self.path,
                    Some(self.row + 1),
                    None,
                    format!("the Parquet data is damaged or truncated: {e}"),
                )
            })?;
            self.columns = batch
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    as_text(c).map_err(|e| fatal(&self.path, None, Some(self.names[i].clone()), e))
                })
                .collect::<Result<_, _>>()?;
            self.row_in_batch = 0;
            self.rows_in_batch = batch.num_rows();
            self.counter.fetch_add(
                self.bytes_per_row * batch.num_rows() as u64,
                Ordering::Relaxed,
            );
            if self.rows_in_batch == 0 {
                return self.next_row(out);
            }
        } else {
            self.row_in_batch += 1;
            if self.row_in_batch >= self.rows_in_batch {
                return self.next_row(out);
            }
        }
        self.row += 1;
        let r = self.row_in_batch;
        for (slot, idx) in out.iter_mut().zip(&self.index) {
            *slot = idx.and_then(|i| {
                let c = &self.columns[i];
                (!c.is_null(r) && !c.value(r).trim().is_empty()).then(|| c.value(r).to_string())
            });
        }
        Ok(Some(RowResult::Row(self.row)))
    }

    fn raw_json(&self) -> String {
        let mut m = serde_json::Map::new();
        for (name, c) in self.names.iter().zip(&self.columns) {
            let v = if c.is_null(self.row_in_batch) {
                serde_json::Value::Null
            } else {
                serde_json::Value::String(c.value(self.row_in_batch).to_string())
            };
            m.insert(name.clone(), v);
        }
        serde_json::Value::Object(m).to_string()
    }
}
