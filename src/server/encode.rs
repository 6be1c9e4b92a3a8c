//! Response encoders: a stream of record batches becomes a stream of bytes
//! in JSON, NDJSON, CSV, Arrow IPC or Parquet, one batch at a time, so the
//! server's memory does not grow with the result.

use std::io::Write;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

/// A result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
    Csv,
    Arrow,
    Parquet,
}

impl Format {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "json" => Self::Json,
            "ndjson" | "jsonl" => Self::Ndjson,
            "csv" => Self::Csv,
            "arrow" | "ipc" => Self::Arrow,
            "parquet" => Self::Parquet,
            _ => return None,
        })
    }

    /// The first format an `Accept` header names that we serve.
    pub fn from_accept(accept: &str) -> Option<Self> {
        accept.split(',').find_map(|part| {
            let media = part.split(';').next().unwrap_or("").trim();
            Some(match media {
                "application/json" | "*/*" | "application/*" => Self::Json,
                "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Self::Ndjson,
                "text/csv" => Self::Csv,
                "application/vnd.apache.arrow.stream" => Self::Arrow,
                "application/vnd.apache.parquet" | "application/x-parquet" => Self::Parquet,
                _ => return None,
            })
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Arrow => "application/vnd.apache.arrow.stream",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// The format's name (as `?format=` and role configs spell it).
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
            Self::Arrow => "arrow",
            Self::Parquet => "parquet",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
            Self::Arrow => "arrows",
            Self::Parquet => "parquet",
        }
    }
}

/// A `Write` whose bytes are taken out after each batch.
#[derive(Clone, Default)]
pub(super) struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("buffer poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type EncodeResult = Result<Vec<u8>, String>;

/// Encodes one result, batch by batch: [`Encoder::new`] with the result's
/// schema, [`Encoder::batch`] for each record batch (the bytes to send so
/// far), then [`Encoder::finish`] for the closing bytes.
pub struct Encoder(Encoding);

impl Encoder {
    pub fn new(format: Format, schema: SchemaRef) -> Result<Self, String> {
        Encoding::new(format, schema).map(Self)
    }

    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, String> {
        self.0.batch(batch)
    }

    /// The closing bytes; `truncated` says the result was cut at the
    /// row limit (JSON writes it out, next to `row_count`).
    pub fn finish(self, truncated: bool) -> Result<Vec<u8>, String> {
        self.0.finish(truncated)
    }
}

/// The state of one encoding.
enum Encoding {
    Json {
        schema: SchemaRef,
        rows: u64,
        started: bool,
    },
    Ndjson,
    Csv {
        header: bool,
        schema: SchemaRef,
    },
    Arrow {
        buf: SharedBuf,
        w: Box<datafusion::arrow::ipc::writer::StreamWriter<SharedBuf>>,
    },
    Parquet {
        buf: SharedBuf,
        w: Box<datafusion::parquet::arrow::ArrowWriter<SharedBuf>>,
    },
}

fn type_name(dt: &datafusion::arrow::datatypes::DataType) -> String {
    use datafusion::arrow::datatypes::DataType as D;
    match dt {
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "string".into(),
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
            "integer".into()
        }
        D::Float16 | D::Float32 | D::Float64 => "number".into(),
        D::Decimal128(p, s) | D::Decimal256(p, s) => format!("decimal({p},{s})"),
        D::Boolean => "boolean".into(),
        D::Date32 | D::Date64 => "date".into(),
        D::Timestamp(..) => "timestamp".into(),
        other => other.to_string(),
    }
}

/// One JSON object per row, one row per line, nulls written out.
fn ndjson(batch: &RecordBatch) -> EncodeResult {
    let mut out = Vec::new();
    let mut w = datafusion::arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut out);
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(out)
}

impl Encoding {
    fn new(format: Format, schema: SchemaRef) -> Result<Self, String> {
        Ok(match format {
            Format::Json => Self::Json {
                schema,
                rows: 0,
                started: false,
            },
            Format::Ndjson => Self::Ndjson,
            Format::Csv => Self::Csv {
                header: true,
                schema,
            },
            Format::Arrow => {
                let buf = SharedBuf::default();
                let w = datafusion::arrow::ipc::writer::StreamWriter::try_new(buf.clone(), &schema)
                    .map_err(|e| e.to_string())?;
                Self::Arrow {
                    buf,
                    w: Box::new(w),
                }
            }
            Format::Parquet => {
                let buf = SharedBuf::default();
                let w = datafusion::parquet::arrow::ArrowWriter::try_new(buf.clone(), schema, None)
                    .map_err(|e| e.to_string())?;
                Self::Parquet {
                    buf,
                    w: Box::new(w),
                }
            }
        })
    }

    /// The bytes for one batch (possibly empty).
    fn batch(&mut self, batch: &RecordBatch) -> EncodeResult {
        match self {
            Self::Json {
                schema,
                rows,
                started,
            } => {
                let mut out = Self::json_start(schema, started);
                let lines = ndjson(batch)?;
                for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if *rows > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(line);
                    *rows += 1;
                }
                Ok(out)
            }
            Self::Ndjson => ndjson(batch),
            Self::Csv { header, .. } => {
                let mut out = Vec::new();
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(*header)
                    .build(&mut out);
                w.write(batch).map_err(|e| e.to_string())?;
                drop(w);
                *header = false;
                Ok(out)
            }
            Self::Arrow { buf, w } => {
                w.write(batch).map_err(|e| e.to_string())?;
                Ok(buf.take())
            }
            Self::Parquet { buf, w } => {
                w.write(batch).map_err(|e| e.to_string())?;
                if w.in_progress_size() > 8 << 20 {
                    w.flush().map_err(|e| e.to_string())?;
                }
                Ok(buf.take())
            }
        }
    }

    /// The JSON head (column names and types) the first time, then nothing.
    fn json_start(schema: &SchemaRef, started: &mut bool) -> Vec<u8> {
        if std::mem::replace(started, true) {
            Vec::new()
        } else {
            Self::json_head(schema)
        }
    }

    fn json_head(schema: &SchemaRef) -> Vec<u8> {
        let columns: Vec<serde_json::Value> = schema
            .fields()
            .iter()
            .map(|f| serde_json::json!({"name": f.name(), "type": type_name(f.data_type())}))
            .collect();
        let mut head = b"{\"columns\":".to_vec();
        head.extend(serde_json::to_vec(&columns).unwrap_or_default());
        head.extend(b",\"rows\":[");
        head
    }

    /// The closing bytes.
    fn finish(self, truncated: bool) -> EncodeResult {
        match self {
            Self::Json {
                schema,
                rows,
                started,
            } => {
                let mut started = started;
                let mut out = Self::json_start(&schema, &mut started);
                out.extend(
                    format!("],\"row_count\":{rows},\"truncated\":{truncated}}}").into_bytes(),
                );
                Ok(out)
            }
            Self::Ndjson => Ok(Vec::new()),
            Self::Csv { header, schema } => {
                // An empty result still gets its header line.
                let mut out = Vec::new();
                if header {
                    let mut w = datafusion::arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(&mut out);
                    w.write(&RecordBatch::new_empty(schema))
                        .map_err(|e| e.to_string())?;
                }
                Ok(out)
            }
            Self::Arrow { buf, mut w } => {
                w.finish().map_err(|e| e.to_string())?;
                Ok(buf.take())
            }
            Self::Parquet { buf, w } => {
                w.close().map_err(|e| e.to_string())?;
                Ok(buf.take())
            }
        }
    }
}
