//! Streaming readers for the source formats.
//!
//! A reader only splits the file into raw records (a CSV record's bytes, a
//! JSON line, a Parquet row); a [`Layout`], shared by the worker threads,
//! turns each raw record into the values the mapping needs and, for a
//! rejected row, the whole raw row as JSON. Splitting is cheap and serial;
//! decoding and validation run in parallel.
//!
//! Whole-file problems (wrong encoding, missing columns, truncation, not the
//! declared format) are fatal and name the file, line and column.

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

/// What a raw record decoded to.
pub(crate) enum RowResult {
    /// The needed values were filled in.
    Row(u64),
    /// The row could not be split into fields; quarantined as a whole.
    Malformed { line: u64, detail: String },
}

/// One record as the reader split it off the file.
pub(crate) enum Raw {
    Csv {
        line: u64,
        record: csv::ByteRecord,
        /// The file's last record, with no line end after it.
        last: bool,
    },
    Json {
        line: u64,
        text: String,
        last: bool,
    },
    Parquet {
        line: u64,
        columns: Arc<Vec<StringArray>>,
        row: usize,
    },
}

pub(crate) trait SourceReader: Send {
    /// The next raw record; `None` at the end of the file.
    fn next_raw(&mut self) -> Result<Option<Raw>, IngestError>;
    /// How to decode this file's records.
    fn layout(&self) -> Arc<Layout>;
}

/// How to decode a file's raw records (shared by the worker threads).
pub(crate) struct Layout {
    path: PathBuf,
    encoding: TextEncoding,
    /// CSV header or Parquet column names.
    header: Vec<String>,
    /// For each needed source column, its position in `header`.
    index: Vec<Option<usize>>,
    /// The needed source columns (JSON keys).
    needed: Vec<String>,
}

impl Layout {
    /// Fill `out` with the needed values of `raw`. `scratch` keeps the decoded
    /// fields of a CSV record for [`Layout::raw_json`].
    pub(crate) fn decode(
        &self,
        raw: &Raw,
        out: &mut [Option<String>],
        scratch: &mut Vec<String>,
    ) -> Result<RowResult, IngestError> {
        match raw {
            Raw::Csv { line, record, last } => {
                let line = *line;
                scratch.resize_with(record.len(), String::new);
                for (i, f) in record.iter().enumerate() {
                    let name = self.header.get(i).map_or("?", String::as_str);
                    decode_into(
                        &self.path,
                        self.encoding,
                        f,
                        line,
                        i + 1,
                        name,
                        &mut scratch[i],
                    )?;
                }
                if record.len() != self.header.len() {
                    if *last {
                        return Err(fatal(
                            &self.path,
                            Some(line),
                            None,
                            format!(
                                "the file is truncated: the last line has {} of {} fields and no line end",
                                record.len(),
                                self.header.len()
                            ),
                        ));
                    }
                    return Ok(RowResult::Malformed {
                        line,
                        detail: format!(
                            "{} fields where the header has {}",
                            record.len(),
                            self.header.len()
                        ),
                    });
                }
                for (slot, idx) in out.iter_mut().zip(&self.index) {
                    match idx.map(|i| scratch[i].as_str()) {
                        Some(v) if !v.trim().is_empty() => set_slot(slot, v),
                        _ => *slot = None,
                    }
                }
                Ok(RowResult::Row(line))
            }
            Raw::Json { line, text, last } => {
                let line = *line;
                let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(
                    text,
                ) {
                    Ok(o) => o,
                    Err(e) if *last => {
                        return Err(fatal(
                            &self.path,
                            Some(line),
                            Some(e.column().to_string()),
                            format!(
                                "the file is truncated: the last line is not a complete JSON object ({e})"
                            ),
                        ));
                    }
                    Err(e) => {
                        return Ok(RowResult::Malformed {
                            line,
                            detail: format!("not a JSON object: {e}"),
                        });
                    }
                };
                for (slot, key) in out.iter_mut().zip(&self.needed) {
                    match obj.get(key) {
                        None | Some(serde_json::Value::Null) => *slot = None,
                        Some(serde_json::Value::String(s)) if s.trim().is_empty() => *slot = None,
                        Some(serde_json::Value::String(s)) => set_slot(slot, s),
                        Some(other) => set_slot(slot, &other.to_string()),
                    }
                }
                Ok(RowResult::Row(line))
            }
            Raw::Parquet { line, columns, row } => {
                let r = *row;
                for (slot, idx) in out.iter_mut().zip(&self.index) {
                    match idx.map(|i| &columns[i]) {
                        Some(c) if !c.is_null(r) && !c.value(r).trim().is_empty() => {
                            set_slot(slot, c.value(r))
                        }
                        _ => *slot = None,
                    }
                }
                Ok(RowResult::Row(*line))
            }
        }
    }

    /// The whole raw row as a JSON object of every source column.
    pub(crate) fn raw_json(&self, raw: &Raw, scratch: &[String]) -> String {
        match raw {
            Raw::Csv { .. } => {
                let mut m = serde_json::Map::new();
                for (i, v) in scratch.iter().enumerate() {
                    let k = self
                        .header
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| format!("_extra_{}", i + 1));
                    m.insert(k, serde_json::Value::String(v.clone()));
                }
                serde_json::Value::Object(m).to_string()
            }
            Raw::Json { text, .. } => text.clone(),
            Raw::Parquet { columns, row, .. } => {
                let mut m = serde_json::Map::new();
                for (name, c) in self.header.iter().zip(columns.iter()) {
                    let v = if c.is_null(*row) {
                        serde_json::Value::Null
                    } else {
                        serde_json::Value::String(c.value(*row).to_string())
                    };
                    m.insert(name.clone(), v);
                }
                serde_json::Value::Object(m).to_string()
            }
        }
    }
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
    Ok(match mapping.format {
        FileFormat::Csv => Box::new(CsvSource::new(
            path,
            file,
            mapping,
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

fn decode(
    path: &Path,
    encoding: TextEncoding,
    bytes: &[u8],
    line: u64,
    col: usize,
    name: &str,
) -> Result<String, IngestError> {
    let mut s = String::new();
    decode_into(path, encoding, bytes, line, col, name, &mut s)?;
    Ok(s)
}

/// Decode one field into `out` (reusing its allocation).
fn decode_into(
    path: &Path,
    encoding: TextEncoding,
    bytes: &[u8],
    line: u64,
    col: usize,
    name: &str,
    out: &mut String,
) -> Result<(), IngestError> {
    out.clear();
    if bytes.is_ascii() {
        // ASCII is the same in UTF-8 and GBK.
        out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
        return Ok(());
    }
    match encoding {
        TextEncoding::Utf8 => std::str::from_utf8(bytes).map(|s| out.push_str(s)).map_err(|e| {
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
        TextEncoding::Gbk => {
            let mut decoder = encoding_rs::GBK.new_decoder_without_bom_handling();
            out.reserve(
                decoder
                    .max_utf8_buffer_length_without_replacement(bytes.len())
                    .unwrap_or(bytes.len() * 3),
            );
            let (result, _) = decoder.decode_to_string_without_replacement(bytes, out, true);
            match result {
                encoding_rs::DecoderResult::InputEmpty => Ok(()),
                _ => Err(fatal(
                    path,
                    Some(line),
                    Some(format!("{col} ({name})")),
                    "bytes that are not valid GBK; the mapping declares gbk (is the file UTF-8?)",
                )),
            }
        }
    }
}

/// Put `v` in `slot`, reusing the slot's allocation.
fn set_slot(slot: &mut Option<String>, v: &str) {
    match slot {
        Some(s) => {
            s.clear();
            s.push_str(v);
        }
        None => *slot = Some(v.to_string()),
    }
}

// ---------------------------------------------------------------- CSV

struct CsvSource {
    rdr: csv::Reader<Counting<BufReader<File>>>,
    layout: Arc<Layout>,
    ends_with_newline: bool,
    file_len: u64,
}

impl CsvSource {
    fn new(
        path: &Path,
        file: File,
        mapping: &EntityMapping,
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
            .delimiter(u8::try_from(mapping.delimiter).unwrap_or(b','))
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
                decode(path, mapping.encoding, f, 1, i + 1, "header")?
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
            rdr,
            layout: Arc::new(Layout {
                path: path.to_path_buf(),
                encoding: mapping.encoding,
                header,
                index,
                needed: needed.to_vec(),
            }),
            ends_with_newline,
            file_len,
        })
    }
}

impl SourceReader for CsvSource {
    fn next_raw(&mut self) -> Result<Option<Raw>, IngestError> {
        loop {
            let mut record = csv::ByteRecord::new();
            let got = self.rdr.read_byte_record(&mut record).map_err(|e| {
                let line = e.position().map(|p| p.line());
                fatal(
                    &self.layout.path,
                    line,
                    None,
                    format!("cannot parse CSV: {e}"),
                )
            })?;
            if !got {
                return Ok(None);
            }
            if record.len() == 1 && record[0].is_empty() {
                continue; // blank line
            }
            let line = record.position().map_or(0, |p| p.line());
            let last = !self.ends_with_newline && self.rdr.position().byte() >= self.file_len;
            return Ok(Some(Raw::Csv { line, record, last }));
        }
    }

    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
}

// ---------------------------------------------------------------- JSON Lines

struct JsonlSource {
    rdr: Counting<BufReader<File>>,
    layout: Arc<Layout>,
    line_buf: Vec<u8>,
    line: u64,
    mandatory: Vec<String>,
    ends_with_newline: bool,
    seen_first: bool,
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
            rdr: Counting {
                inner: BufReader::with_capacity(1 << 20, file),
                count: counter,
            },
            layout: Arc::new(Layout {
                path: path.to_path_buf(),
                encoding: TextEncoding::Utf8,
                header: Vec::new(),
                index: Vec::new(),
                needed: needed.to_vec(),
            }),
            line_buf: Vec::with_capacity(4096),
            line: 0,
            mandatory: mandatory.to_vec(),
            ends_with_newline,
            seen_first: false,
        }
    }

    /// The first record decides whether this is JSON Lines of the right
    /// entity at all.
    fn check_first(&self, text: &str, last: bool) -> Result<(), IngestError> {
        let path = &self.layout.path;
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| {
                let what = if last {
                    "the file is truncated: the last line is not a complete JSON object"
                } else {
                    "not JSON Lines: the first record is not a JSON object"
                };
                fatal(
                    path,
                    Some(self.line),
                    Some(e.column().to_string()),
                    format!("{what} ({e})"),
                )
            })?;
        let keys: Vec<String> = obj.keys().cloned().collect();
        missing_columns(path, &keys, &self.mandatory).map_err(|e| match e {
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
        })
    }
}

impl SourceReader for JsonlSource {
    fn next_raw(&mut self) -> Result<Option<Raw>, IngestError> {
        loop {
            self.line_buf.clear();
            let n = self
                .rdr
                .inner
                .read_until(b'\n', &mut self.line_buf)
                .map_err(|e| IngestError::io(&self.layout.path, e))?;
            self.rdr.count.fetch_add(n as u64, Ordering::Relaxed);
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let last = !self.line_buf.ends_with(b"\n") && !self.ends_with_newline;
            let text = std::str::from_utf8(&self.line_buf).map_err(|e| {
                let col = String::from_utf8_lossy(&self.line_buf[..e.valid_up_to()])
                    .chars()
                    .count()
                    + 1;
                fatal(
                    &self.layout.path,
                    Some(self.line),
                    Some(col.to_string()),
                    "invalid UTF-8 (JSON Lines must be UTF-8)",
                )
            })?;
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            if !self.seen_first {
                self.check_first(text, last)?;
                self.seen_first = true;
            }
            return Ok(Some(Raw::Json {
                line: self.line,
                text: text.to_string(),
                last,
            }));
        }
    }

    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
}

// ---------------------------------------------------------------- Parquet

struct ParquetSource {
    reader: ParquetRecordBatchReader,
    layout: Arc<Layout>,
    columns: Arc<Vec<StringArray>>,
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
        let unreadable = |e: datafusion::parquet::errors::ParquetError| {
            fatal(
                path,
                None,
                None,
                format!("not a readable Parquet file: {e}"),
            )
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(unreadable)?;
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
        let reader = builder
            .with_batch_size(batch_rows)
            .build()
            .map_err(unreadable)?;
        Ok(Self {
            reader,
            layout: Arc::new(Layout {
                path: path.to_path_buf(),
                encoding: TextEncoding::Utf8,
                header: names,
                index,
                needed: needed.to_vec(),
            }),
            columns: Arc::new(Vec::new()),
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
    fn next_raw(&mut self) -> Result<Option<Raw>, IngestError> {
        while self.row_in_batch >= self.rows_in_batch {
            let Some(batch) = self.reader.next() else {
                return Ok(None);
            };
            let path = &self.layout.path;
            let batch = batch.map_err(|e| {
                fatal(
                    path,
                    Some(self.row + 1),
                    None,
                    format!("the Parquet data is damaged or truncated: {e}"),
                )
            })?;
            let columns = batch
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    as_text(c)
                        .map_err(|e| fatal(path, None, Some(self.layout.header[i].clone()), e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.columns = Arc::new(columns);
            self.row_in_batch = 0;
            self.rows_in_batch = batch.num_rows();
            self.counter.fetch_add(
                self.bytes_per_row * batch.num_rows() as u64,
                Ordering::Relaxed,
            );
        }
        self.row += 1;
        let raw = Raw::Parquet {
            line: self.row,
            columns: self.columns.clone(),
            row: self.row_in_batch,
        };
        self.row_in_batch += 1;
        Ok(Some(raw))
    }

    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
}
