//! Parquet: row groups read in batches, every needed column as text.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};

use super::super::IngestError;
use super::{Layout, Raw, SourceReader, fatal, missing_columns};
use crate::schema::TextEncoding;

pub(super) struct ParquetSource {
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
    pub(super) fn new(
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
