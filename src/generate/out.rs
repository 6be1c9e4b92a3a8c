//! File writers for the source extracts: CSV (UTF-8 or GBK), JSON Lines and
//! Parquet. Each counts its rows.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use super::GenerateError;
use crate::schema::row::{BatchBuilder, Cell};

fn io(path: &Path, e: std::io::Error) -> GenerateError {
    GenerateError::Io(path.to_path_buf(), e)
}

/// Transcodes UTF-8 bytes to GBK on the way to the file.
pub(crate) struct GbkWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
    encoder: encoding_rs::Encoder,
    out: Vec<u8>,
}

impl<W: Write> GbkWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            encoder: encoding_rs::GBK.new_encoder(),
            out: Vec::with_capacity(1 << 16),
        }
    }
}

impl<W: Write> Write for GbkWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        };
        let text = std::str::from_utf8(&self.pending[..valid])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.out.clear();
        self.out.reserve(text.len() + 16);
        let (result, _read) =
            self.encoder
                .encode_from_utf8_to_vec_without_replacement(text, &mut self.out, false);
        if matches!(result, encoding_rs::EncoderResult::Unmappable(_)) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "character not in GBK",
            ));
        }
        self.inner.write_all(&self.out)?;
        self.pending.drain(..valid);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) struct CsvOut {
    pub(crate) path: PathBuf,
    w: csv::Writer<Box<dyn Write>>,
    pub(crate) rows: u64,
}

impl CsvOut {
    pub(crate) fn create(path: PathBuf, gbk: bool, header: &[&str]) -> Result<Self, GenerateError> {
        let file =
            BufWriter::with_capacity(1 << 20, File::create(&path).map_err(|e| io(&path, e))?);
        let sink: Box<dyn Write> = if gbk {
            Box::new(GbkWriter::new(file))
        } else {
            Box::new(file)
        };
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(sink);
        w.write_record(header)
            .map_err(|e| GenerateError::Csv(path.clone(), e))?;
        Ok(Self { path, w, rows: 0 })
    }

    pub(crate) fn row<I, T>(&mut self, fields: I) -> Result<(), GenerateError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.rows += 1;
        self.w
            .write_record(fields)
            .map_err(|e| GenerateError::Csv(self.path.clone(), e))
    }

    pub(crate) fn finish(mut self) -> Result<(PathBuf, u64), GenerateError> {
        self.w.flush().map_err(|e| io(&self.path, e))?;
        Ok((self.path, self.rows))
    }
}

pub(crate) struct JsonlOut {
    pub(crate) path: PathBuf,
    w: BufWriter<File>,
    pub(crate) rows: u64,
}

impl JsonlOut {
    pub(crate) fn create(path: PathBuf) -> Result<Self, GenerateError> {
        let w = BufWriter::with_capacity(1 << 20, File::create(&path).map_err(|e| io(&path, e))?);
        Ok(Self { path, w, rows: 0 })
    }

    /// Write one object; `None` values are left out, as the source system does.
    pub(crate) fn row(&mut self, fields: &[(&str, Option<&str>)]) -> Result<(), GenerateError> {
        let mut m = serde_json::Map::new();
        for (k, v) in fields {
            if let Some(v) = v {
                m.insert(
                    (*k).to_string(),
                    serde_json::Value::String((*v).to_string()),
                );
            }
        }
        serde_json::to_writer(&mut self.w, &m).map_err(|e| io(&self.path, e.into()))?;
        self.w.write_all(b"\n").map_err(|e| io(&self.path, e))?;
        self.rows += 1;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<(PathBuf, u64), GenerateError> {
        self.w.flush().map_err(|e| io(&self.path, e))?;
        Ok((self.path, self.rows))
    }
}

pub(crate) struct ParquetOut {
    pub(crate) path: PathBuf,
    builder: BatchBuilder,
    w: ArrowWriter<File>,
    pub(crate) rows: u64,
}

/// Column kinds for `ParquetOut::create`.
#[derive(Clone, Copy)]
pub(crate) enum PKind {
    Str,
    Date,
    Money,
    Ts,
}

impl ParquetOut {
    pub(crate) fn create(path: PathBuf, columns: &[(&str, PKind)]) -> Result<Self, GenerateError> {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, k)| {
                let dt = match k {
                    PKind::Str => DataType::Utf8,
                    PKind::Date => DataType::Date32,
                    PKind::Money => DataType::Decimal128(18, 2),
                    PKind::Ts => DataType::Timestamp(TimeUnit::Microsecond, None),
                };
                Field::new(*n, dt, true)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let file = File::create(&path).map_err(|e| io(&path, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
            .build();
        let w = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| GenerateError::Parquet(path.clone(), e))?;
        Ok(Self {
            path,
            builder: BatchBuilder::for_schema(schema),
            w,
            rows: 0,
        })
    }

    pub(crate) fn row(&mut self, values: &[Cell]) -> Result<(), GenerateError> {
        self.builder.push(values, None);
        self.rows += 1;
        if self.builder.len() >= 65536 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), GenerateError> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let batch = self
            .builder
            .finish()
            .map_err(|e| GenerateError::Arrow(self.path.clone(), e))?;
        self.w
            .write(&batch)
            .map_err(|e| GenerateError::Parquet(self.path.clone(), e))
    }

    pub(crate) fn finish(mut self) -> Result<(PathBuf, u64), GenerateError> {
        self.flush()?;
        self.w
            .close()
            .map_err(|e| GenerateError::Parquet(self.path.clone(), e))?;
        Ok((self.path, self.rows))
    }
}
