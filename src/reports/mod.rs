//! The report pack (`sql/reports/`): generated per period from the lake,
//! stored in `report_row` so a period's report opens again unchanged, and
//! rendered as a self-contained HTML page with inline SVG charts, CSV or
//! JSON; and the scheduler that runs the warehouse's jobs.

pub mod chart;
pub mod pack;
pub mod render;
pub mod schedule;

use crate::error::{Classify, ErrorKind};
use crate::lake::LakeError;
use crate::query::QueryError;
use crate::schema::SchemaError;
use crate::security::SecurityError;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A shipped report or template that does not work: a defect.
    #[error("report {0}: {1}")]
    Definition(String, String),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Classify for ReportError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Query(e) => e.kind(),
            Self::Lake(e) => e.kind(),
            Self::Schema(e) => e.kind(),
            Self::Security(e) => e.kind(),
            Self::Invalid(_) => ErrorKind::InvalidParameter,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Definition(..) => ErrorKind::Internal,
            Self::Io { source, .. } => crate::error::io_kind(source),
        }
    }
}

impl From<datafusion::error::DataFusionError> for ReportError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Self::Query(QueryError::from(e))
    }
}

impl From<datafusion::arrow::error::ArrowError> for ReportError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Self::from(datafusion::error::DataFusionError::from(e))
    }
}

/// A column of a query's result as text, one entry per row (null: `None`).
fn strings(
    b: &datafusion::arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<Vec<Option<String>>, ReportError> {
    use datafusion::arrow::array::{Array, AsArray};
    let c = b
        .column_by_name(name)
        .ok_or_else(|| ReportError::Invalid(format!("no column {name}")))?;
    let c = datafusion::arrow::compute::cast(c, &datafusion::arrow::datatypes::DataType::Utf8)?;
    let s = c.as_string::<i32>();
    Ok((0..s.len())
        .map(|i| (!s.is_null(i)).then(|| s.value(i).to_string()))
        .collect())
}
