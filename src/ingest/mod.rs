//! Ingest: readers → source mapping → normalise → validate → upsert into the
//! table's Delta table, or quarantine with a reason code.
//!
//! Per file: the file's SHA-256 names its batch, so re-ingesting a loaded
//! file changes nothing. Rows are staged on local disk as they stream in
//! (memory stays bounded by one Arrow batch); only when the whole file has
//! been read are the rows committed, in one Delta commit per table (data,
//! then quarantine, then the `ingest_batch` row). A file that cannot be read
//! as a whole commits nothing; a process killed before the last commit leaves
//! at most complete, idempotent commits behind, and re-running finishes the
//! load without duplicates because every write is an upsert by key.

mod commit;
mod reader;
mod split;
mod staging;
pub(crate) mod transform;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::prelude::{SessionContext, col, lit};
use sha2::{Digest, Sha256};

use crate::error::{Classify, ErrorKind};
use crate::lake::{Lake, LakeError, Warehouse};
use crate::progress::Unit;
use crate::schema::{Catalog, SchemaError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A file that cannot be read as a whole (encoding, format, missing
    /// mandatory columns, truncated): nothing of it is written.
    #[error("{}{}{}: {message}", file.display(), line.map(|l| format!(", line {l}")).unwrap_or_default(), column.as_ref().map(|c| format!(", column {c}")).unwrap_or_default())]
    Unreadable {
        file: Box<PathBuf>,
        line: Option<u64>,
        column: Option<Box<str>>,
        message: Box<str>,
    },
    #[error("{}: {source}", file.display())]
    Io {
        file: Box<PathBuf>,
        #[source]
        source: std::io::Error,
    },
    /// The local staging directory (`ingest.staging_dir`).
    #[error("staging in {}: {source}", dir.display())]
    Staging {
        dir: Box<PathBuf>,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Schema(Box<SchemaError>),
    #[error(transparent)]
    Lake(Box<LakeError>),
    /// Reading staged rows back, or the batch record.
    #[error(transparent)]
    DataFusion(Box<datafusion::error::DataFusionError>),
    /// Building or staging Arrow batches.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    Delta(Box<deltalake::DeltaTableError>),
    #[error("the staging task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A fault of the loader itself.
    #[error("{0}")]
    Internal(&'static str),
    /// A key appeared twice in a file being streamed (handled internally by
    /// staging the file instead).
    #[error("duplicate keys in the file")]
    DuplicateKeys,
}

impl From<SchemaError> for IngestError {
    fn from(e: SchemaError) -> Self {
        Self::Schema(Box::new(e))
    }
}

impl From<LakeError> for IngestError {
    fn from(e: LakeError) -> Self {
        Self::Lake(Box::new(e))
    }
}

impl From<datafusion::error::DataFusionError> for IngestError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Self::DataFusion(Box::new(e))
    }
}

impl From<deltalake::DeltaTableError> for IngestError {
    fn from(e: deltalake::DeltaTableError) -> Self {
        Self::Delta(Box::new(e))
    }
}

impl Classify for IngestError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Unreadable { .. } => ErrorKind::InvalidData,
            // The file given: missing is not found; unreadable is the input.
            Self::Io { source, .. } => match crate::error::file_io_kind(source) {
                ErrorKind::StorageUnavailable => ErrorKind::InvalidData,
                k => k,
            },
            // Local staging (a directory that cannot be made, a full disk).
            Self::Staging { source, .. } => crate::error::file_io_kind(source),
            Self::Schema(e) => e.kind(),
            Self::Lake(e) => e.kind(),
            Self::DataFusion(e) => match crate::error::datafusion_kind(e) {
                ErrorKind::InvalidSql => ErrorKind::Internal,
                k => k,
            },
            Self::Delta(e) => match crate::error::delta_kind(e) {
                ErrorKind::InvalidSql => ErrorKind::Internal,
                k => k,
            },
            Self::Arrow(_) | Self::Task(_) | Self::Internal(_) | Self::DuplicateKeys => {
                ErrorKind::Internal
            }
        }
    }
}

impl IngestError {
    pub(crate) fn io(file: &Path, source: std::io::Error) -> Self {
        Self::Io {
            file: Box::new(file.to_path_buf()),
            source,
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub file: PathBuf,
    pub source_system: String,
    pub entity: String,
    pub table: String,
    pub batch_id: String,
    /// False when the file had been loaded before and was skipped.
    pub loaded: bool,
    pub bytes: u64,
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_quarantined: u64,
    /// Quarantine reason code → rows.
    pub reasons: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

/// Ingests files into one warehouse's lake.
pub struct Ingestor<'a> {
    pub warehouse: &'a Warehouse,
    pub ctx: SessionContext,
}

impl<'a> Ingestor<'a> {
    pub fn new(warehouse: &'a Warehouse) -> Self {
        Self {
            warehouse,
            ctx: crate::lake::session::write_context(),
        }
    }

    fn lake(&self) -> &Lake {
        &self.warehouse.lake
    }

    fn catalog(&self) -> &Catalog {
        &self.warehouse.catalog
    }

    /// Ingest a generator-shaped directory: `DIR/<system>/<file>` for every
    /// mapped entity, customers first.
    pub async fn ingest_dir(&self, dir: &Path) -> Vec<Result<FileReport, IngestError>> {
        let mut jobs = Vec::new();
        for s in &self.catalog().sources {
            for e in &s.entities {
                let path = dir.join(&s.system).join(&e.file);
                if path.exists() {
                    jobs.push((e.name != "customer", s.system.clone(), e.name.clone(), path));
                }
            }
        }
        jobs.sort_by_key(|j| j.0);
        let mut out = Vec::new();
        for (_, system, entity, path) in jobs {
            out.push(self.ingest_file(&system, &entity, &path).await);
        }
        out
    }

    /// The files a list of paths names: files as given, directories expanded
    /// to their files with the mapping's extension, sorted.
    pub fn expand_paths(
        &self,
        system: &str,
        entity: &str,
        paths: &[PathBuf],
    ) -> Result<Vec<PathBuf>, IngestError> {
        let mapping = self.catalog().entity(system, entity)?;
        let mut files = Vec::new();
        for p in paths {
            if p.is_dir() {
                let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                    .map_err(|e| IngestError::io(p, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| {
                        f.extension()
                            .is_some_and(|x| x == mapping.format.extension())
                    })
                    .collect();
                found.sort();
                files.extend(found);
            } else if p.exists() {
                files.push(p.clone());
            } else {
                return Err(IngestError::io(
                    p,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                ));
            }
        }
        Ok(files)
    }

    /// Ingest one file of `system`'s `entity`, holding the target table's
    /// lease: loads into one table take turns, across processes, so the
    /// "already loaded?" check, the "do these keys exist?" check and the
    /// commit that follows them see no other load in between (two loads of
    /// the same file at once would otherwise both append), and no tier
    /// move runs while rows are routed and written.
    pub async fn ingest_file(
        &self,
        system: &str,
        entity: &str,
        path: &Path,
    ) -> Result<FileReport, IngestError> {
        let mapping = self.catalog().entity(system, entity)?;
        let table_def = self.catalog().table(&mapping.table)?;
        let purpose = format!("ingest {}", path.display());
        crate::lake::lease::with_lease(self.lake(), &table_def.name, &purpose, async |_| {
            self.ingest_file_leased(system, entity, path).await
        })
        .await
    }

    /// Read, stage and commit one file: the good rows, then the
    /// quarantined ones, then the batch record that marks it loaded.
    async fn ingest_file_leased(
        &self,
        system: &str,
        entity: &str,
        path: &Path,
    ) -> Result<FileReport, IngestError> {
        let started = Instant::now();
        let started_at = chrono::Utc::now();
        let table_def = self
            .catalog()
            .table(&self.catalog().entity(system, entity)?.table)?
            .clone();
        let (sha, bytes) = sha256_file(path)?;
        let batch_id = batch_id(system, entity, &sha);
        let mut report = FileReport {
            file: path.to_path_buf(),
            source_system: system.to_string(),
            entity: entity.to_string(),
            table: table_def.name.clone(),
            batch_id: batch_id.clone(),
            loaded: false,
            bytes,
            rows_read: 0,
            rows_loaded: 0,
            rows_quarantined: 0,
            reasons: BTreeMap::new(),
            elapsed: Duration::ZERO,
        };
        if let Some(prev) = self.loaded_batch(&batch_id).await? {
            (
                report.rows_read,
                report.rows_loaded,
                report.rows_quarantined,
            ) = prev;
            report.elapsed = started.elapsed();
            return Ok(report);
        }
        let label = path
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        let task = self
            .warehouse
            .progress
            .task(&label, Some(bytes), Unit::Bytes);
        let load = commit::Load {
            ingestor: self,
            system,
            entity,
            path,
            table: &table_def,
            batch_id: &batch_id,
            sha: &sha,
            bytes,
            started_at,
            task: task.clone(),
        };
        match load.run().await {
            Ok(staged) => {
                task.finish();
                report.loaded = true;
                report.rows_read = staged.rows_read;
                report.rows_loaded = staged.rows_loaded;
                report.rows_quarantined = staged.rows_quarantined;
                report.reasons = staged.reasons;
                report.elapsed = started.elapsed();
                Ok(report)
            }
            Err(e) => {
                task.fail("failed");
                Err(e)
            }
        }
    }

    /// `(rows_read, rows_loaded, rows_quarantined)` of a batch already loaded.
    async fn loaded_batch(&self, batch_id: &str) -> Result<Option<(u64, u64, u64)>, IngestError> {
        let def = self.catalog().table("ingest_batch")?;
        let Some(table) = self.lake().open(def).await? else {
            return Ok(None);
        };
        let provider = table.table_provider().await?;
        let df = self.ctx.read_table(provider).and_then(|df| {
            df.filter(
                col("batch_id")
                    .eq(lit(batch_id))
                    .and(col("status").eq(lit("loaded"))),
            )?
            .select_columns(&["rows_read", "rows_loaded", "rows_quarantined"])
        })?;
        let batches = df.collect().await?;
        use datafusion::arrow::array::{Array, Int64Array};
        for b in batches {
            if b.num_rows() > 0 {
                let get = |i: usize| {
                    b.column(i)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .map_or(0, |a| if a.is_null(0) { 0 } else { a.value(0) as u64 })
                };
                return Ok(Some((get(0), get(1), get(2))));
            }
        }
        Ok(None)
    }
}

/// The batch id of a file: stable for the same source, entity and bytes.
pub fn batch_id(system: &str, entity: &str, sha256: &str) -> String {
    let mut h = Sha256::new();
    h.update(system.as_bytes());
    h.update([0]);
    h.update(entity.as_bytes());
    h.update([0]);
    h.update(sha256.as_bytes());
    hex::encode(h.finalize())[..24].to_string()
}

fn sha256_file(path: &Path) -> Result<(String, u64), IngestError> {
    let mut f = File::open(path).map_err(|e| IngestError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| IngestError::io(path, e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), total))
}
