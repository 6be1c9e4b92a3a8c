//! Rows of typed cells and the Arrow builders that turn them into record
//! batches: what ingest, identity resolution and the sample generator
//! write with.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::TableDef;

/// A typed value of one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Str(String),
    I64(i64),
    F64(f64),
    /// Cents.
    Money(i128),
    /// Days since the epoch.
    Date(i32),
    /// Microseconds since the epoch, UTC.
    Ts(i64),
    Bool(bool),
}

impl Cell {
    /// Text, or null.
    pub fn text(v: Option<impl AsRef<str>>) -> Self {
        v.map_or(Self::Null, |s| Self::Str(s.as_ref().to_string()))
    }

    /// A date (days since the epoch), or null.
    pub fn date(v: Option<i32>) -> Self {
        v.map_or(Self::Null, Self::Date)
    }

    /// An amount in cents, or null.
    pub fn money(v: Option<i128>) -> Self {
        v.map_or(Self::Null, Self::Money)
    }

    /// A timestamp (microseconds, UTC), or null.
    pub fn ts(v: Option<i64>) -> Self {
        v.map_or(Self::Null, Self::Ts)
    }
}

impl std::hash::Hash for Cell {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        std::mem::discriminant(self).hash(h);
        match self {
            Cell::Null => {}
            Cell::Str(s) => s.hash(h),
            Cell::I64(v) | Cell::Ts(v) => v.hash(h),
            Cell::F64(v) => v.to_bits().hash(h),
            Cell::Money(v) => v.hash(h),
            Cell::Date(v) => v.hash(h),
            Cell::Bool(v) => v.hash(h),
        }
    }
}

/// Arrow builders for rows of one schema.
pub struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

enum ColumnBuilder {
    Str(StringBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Money(Decimal128Builder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Bool(BooleanBuilder),
}

impl BatchBuilder {
    /// Builders for `table`'s columns, plus a trailing `_line` column when
    /// `with_line` (used to keep the last of duplicate keys).
    pub fn new(table: &TableDef, with_line: bool) -> Self {
        let base = table.arrow_schema();
        let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
        if with_line {
            fields.push(Field::new("_line", DataType::Int64, false));
        }
        Self::for_schema(Arc::new(Schema::new(fields)))
    }

    /// Builders for any schema of the types [`Cell`] holds (other types
    /// are built as text).
    pub fn for_schema(schema: SchemaRef) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Int64 => ColumnBuilder::I64(Int64Builder::new()),
                DataType::Float64 => ColumnBuilder::F64(Float64Builder::new()),
                DataType::Decimal128(p, s) => ColumnBuilder::Money(
                    Decimal128Builder::new()
                        .with_precision_and_scale(*p, *s)
                        .unwrap_or_default(),
                ),
                DataType::Date32 => ColumnBuilder::Date(Date32Builder::new()),
                DataType::Timestamp(_, tz) => ColumnBuilder::Ts(
                    TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()),
                ),
                DataType::Boolean => ColumnBuilder::Bool(BooleanBuilder::new()),
                _ => ColumnBuilder::Str(StringBuilder::new()),
            })
            .collect();
        Self {
            schema,
            columns,
            rows: 0,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Append one row; `line` fills `_line` when present.
    pub fn push(&mut self, cells: &[Cell], line: Option<i64>) {
        let line_cell = line.map(Cell::I64);
        for (b, cell) in self
            .columns
            .iter_mut()
            .zip(cells.iter().chain(line_cell.as_ref()))
        {
            match (b, cell) {
                (ColumnBuilder::Str(b), Cell::Str(s)) => b.append_value(s),
                (ColumnBuilder::Str(b), _) => b.append_null(),
                (ColumnBuilder::I64(b), Cell::I64(v)) => b.append_value(*v),
                (ColumnBuilder::I64(b), _) => b.append_null(),
                (ColumnBuilder::F64(b), Cell::F64(v)) => b.append_value(*v),
                (ColumnBuilder::F64(b), _) => b.append_null(),
                (ColumnBuilder::Money(b), Cell::Money(v)) => b.append_value(*v),
                (ColumnBuilder::Money(b), _) => b.append_null(),
                (ColumnBuilder::Date(b), Cell::Date(v)) => b.append_value(*v),
                (ColumnBuilder::Date(b), _) => b.append_null(),
                (ColumnBuilder::Ts(b), Cell::Ts(v)) => b.append_value(*v),
                (ColumnBuilder::Ts(b), _) => b.append_null(),
                (ColumnBuilder::Bool(b), Cell::Bool(v)) => b.append_value(*v),
                (ColumnBuilder::Bool(b), _) => b.append_null(),
            }
        }
        self.rows += 1;
    }

    pub fn finish(&mut self) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    ColumnBuilder::Str(b) => Arc::new(b.finish()),
                    ColumnBuilder::I64(b) => Arc::new(b.finish()),
                    ColumnBuilder::F64(b) => Arc::new(b.finish()),
                    ColumnBuilder::Money(b) => Arc::new(b.finish()),
                    ColumnBuilder::Date(b) => Arc::new(b.finish()),
                    ColumnBuilder::Ts(b) => Arc::new(b.finish()),
                    ColumnBuilder::Bool(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
    }
}
