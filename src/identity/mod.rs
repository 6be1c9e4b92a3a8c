//! Identity resolution: source customer records become one golden customer
//! each, conservatively (strong rules merge, weak rules only propose),
//! explainably (every link keeps its rule and field scores) and reversibly
//! (manual merges, splits and undos are a ledger replayed on every run).

pub mod compare;
pub mod dedupe;
pub mod engine;
pub mod explain;
pub mod ids;
mod ledger;
mod load;
mod resolve;
mod scope;
mod steward;
mod survive;
pub mod suspects;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

pub use crate::schema::rules::{Rules, RulesError};
pub use resolve::{ResolveReport, Trigger, resolve};
pub use steward::{DecisionReport, Steward};

/// The golden fields survivorship fills, in `customer` order.
pub const GOLDEN_FIELDS: [&str; 16] = resolve::GOLDEN;

use crate::error::{Classify, ErrorKind};
use crate::lake::{Lake, LakeError};
use crate::schema::Catalog;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "nothing to resolve: no source customers have been ingested yet (run `custlake ingest` first)"
    )]
    NothingToResolve,
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The rules name a field the records do not have.
    #[error("{0}")]
    RulesMismatch(String),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
    #[error(transparent)]
    DataFusion(Box<DataFusionError>),
    #[error(transparent)]
    Delta(Box<deltalake::DeltaTableError>),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A file of `dedupe` that cannot be read or written.
    #[error("{path}: {source}")]
    File {
        path: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The identity tables disagree with what resolution wrote.
    #[error("{0}")]
    Damaged(String),
    #[error("a matching task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    NotFound(String),
    /// A decision or input the rules refuse.
    #[error("{0}")]
    Invalid(String),
    /// A decision the current state of the customers does not allow
    /// (already one customer, already undone, already decided).
    #[error("{0}")]
    Refused(String),
    /// The lake is not in a state that allows it yet (nothing resolved).
    #[error("{0}")]
    NotReady(String),
}

impl From<DataFusionError> for IdentityError {
    fn from(e: DataFusionError) -> Self {
        Self::DataFusion(Box::new(e))
    }
}

impl From<deltalake::DeltaTableError> for IdentityError {
    fn from(e: deltalake::DeltaTableError) -> Self {
        Self::Delta(Box::new(e))
    }
}

impl Classify for IdentityError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::InvalidParameter,
            Self::NothingToResolve | Self::NotReady(_) | Self::Refused(_) => ErrorKind::Refused,
            Self::Rules(e) => e.kind(),
            Self::RulesMismatch(_) => ErrorKind::InvalidData,
            Self::Lake(e) => e.kind(),
            Self::Schema(e) => e.kind(),
            // Resolution's own statements: a plan error is a fault here.
            Self::DataFusion(e) => match crate::error::datafusion_kind(e) {
                ErrorKind::InvalidSql => ErrorKind::Internal,
                k => k,
            },
            Self::Delta(e) => match crate::error::delta_kind(e) {
                ErrorKind::InvalidSql => ErrorKind::Internal,
                k => k,
            },
            Self::Arrow(_) | Self::Json(_) | Self::Task(_) => ErrorKind::Internal,
            Self::File { source, .. } => match source.downcast_ref::<std::io::Error>() {
                Some(io) => crate::error::file_io_kind(io),
                None => ErrorKind::InvalidData,
            },
            Self::Damaged(_) => ErrorKind::StorageDamaged,
            Self::NotFound(_) => ErrorKind::NotFound,
        }
    }
}

/// The lease every writer of the identity tables holds, from reading the
/// state it decides on to its last write: `resolve` and each steward
/// decision, in any process. They take turns, so ids allocated as the
/// highest so far plus one (`CU…` customers, `EV…` events) never collide,
/// and a whole-table rewrite (the suspect groups) never erases another
/// writer's rows.
pub(crate) const LEASE: &str = "identity";

/// Run `f` holding the identity lease.
pub(crate) async fn leased<T>(
    lake: &Lake,
    purpose: &str,
    f: impl AsyncFnOnce() -> Result<T, IdentityError>,
) -> Result<T, IdentityError> {
    crate::lake::lease::with_lease(lake, LEASE, purpose, async |_| f().await).await
}

pub(crate) async fn upsert_batch(
    lake: &Lake,
    catalog: &Catalog,
    ctx: &SessionContext,
    table: &str,
    batch: RecordBatch,
) -> Result<(), IdentityError> {
    let def = catalog.table(table)?;
    let df = ctx.read_batch(batch)?;
    crate::lake::upsert(lake, ctx, def, df, false, Vec::new()).await?;
    Ok(())
}

/// Where a run sends the rows of a table it writes as it computes them
/// (to [`crate::lake::upsert_chunks`]).
pub(crate) type BatchSender = tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>;

/// Abort such a write because computing `what` failed with `e`: the error
/// goes down the stream, and nothing is committed.
pub(crate) async fn abort(tx: &BatchSender, what: &str, e: &IdentityError) {
    let message = format!("the {what} were not computed: {e}");
    let _ = tx.send(Err(DataFusionError::Execution(message))).await;
}

pub(crate) async fn overwrite_batch(
    lake: &Lake,
    catalog: &Catalog,
    table: &str,
    batch: RecordBatch,
) -> Result<(), IdentityError> {
    let def = catalog.table(table)?;
    let ctx = crate::lake::session::write_context();
    crate::lake::overwrite(lake, &ctx, def, batch, Vec::new()).await?;
    Ok(())
}

pub(crate) fn ids_batch(ids: &[String]) -> Result<RecordBatch, IdentityError> {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
    let array: ArrayRef = Arc::new(StringArray::from(ids.to_vec()));
    RecordBatch::try_new(schema, vec![array]).map_err(IdentityError::from)
}
