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

mod reader;
pub(crate) mod transform;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::options::ArrowReadOptions;
use datafusion::prelude::{SessionContext, col, lit};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::lake::{Lake, LakeError, append_stream, upsert, upsert_leased};
use crate::schema::{Catalog, SchemaError, TableDef};

use reader::RowResult;
use transform::{BatchBuilder, Cell, Mapper};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
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
    #[error(transparent)]
    Schema(Box<SchemaError>),
    #[error(transparent)]
    Lake(Box<LakeError>),
    #[error("{0}")]
    Internal(String),
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

/// Ingests files into one lake.
pub struct Ingestor<'a> {
    pub lake: &'a Lake,
    pub catalog: &'a Catalog,
    pub ctx: SessionContext,
    pub progress: bool,
}

impl<'a> Ingestor<'a> {
    pub fn new(lake: &'a Lake, catalog: &'a Catalog, progress: bool) -> Self {
        Self {
            lake,
            catalog,
            ctx: crate::query::write_context(),
            progress,
        }
    }

    /// Ingest a generator-shaped directory: `DIR/<system>/<file>` for every
    /// mapped entity, customers first.
    pub async fn ingest_dir(&self, dir: &Path) -> Vec<Result<FileReport, IngestError>> {
        let mut jobs = Vec::new();
        for s in &self.catalog.sources {
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
        let mapping = self.catalog.entity(system, entity)?;
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

    /// Ingest one file of `system`'s `entity`. Into a tiered table under
    /// the table's lease, so that no tier move runs while rows are routed
    /// and written.
    pub async fn ingest_file(
        &self,
        system: &str,
        entity: &str,
        path: &Path,
    ) -> Result<FileReport, IngestError> {
        let mapping = self.catalog.entity(system, entity)?;
        let table_def = self.catalog.table(&mapping.table)?;
        if table_def.tiered && table_def.partition.is_some() {
            let purpose = format!("ingest {}", path.display());
            return crate::lake::lease::with_lease(
                self.lake,
                &table_def.name,
                &purpose,
                async |_| self.ingest_file_leased(system, entity, path).await,
            )
            .await;
        }
        self.ingest_file_leased(system, entity, path).await
    }

    async fn ingest_file_leased(
        &self,
        system: &str,
        entity: &str,
        path: &Path,
    ) -> Result<FileReport, IngestError> {
        let started = Instant::now();
        let started_at = chrono::Utc::now();
        let mapping = self.catalog.entity(system, entity)?.clone();
        let table_def = self.catalog.table(&mapping.table)?.clone();
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
            report.rows_read = prev.0;
            report.rows_loaded = prev.1;
            report.rows_quarantined = prev.2;
            report.elapsed = started.elapsed();
            return Ok(report);
        }

        // Stage: stream the file through the mapper into local Arrow IPC files.
        let staging_root = match self.lake.config.ingest.staging_dir.trim() {
            "" => std::env::temp_dir(),
            d => PathBuf::from(d),
        };
        std::fs::create_dir_all(&staging_root).map_err(|e| IngestError::io(&staging_root, e))?;
        let staging = tempfile::Builder::new()
            .prefix("custlake-stage-")
            .tempdir_in(&staging_root)
            .map_err(|e| IngestError::io(&staging_root, e))?;
        let bar = self.progress_bar(path, bytes);
        let counter = Arc::new(AtomicU64::new(0));
        let rows = Arc::new(AtomicU64::new(0));
        let job = |stream: Option<BatchSender>| StageJob {
            catalog: self.catalog.clone(),
            system: system.to_string(),
            entity: entity.to_string(),
            path: path.to_path_buf(),
            batch_id: batch_id.clone(),
            staging: staging.path().to_path_buf(),
            batch_rows: self.lake.config.ingest.batch_rows,
            started_at,
            counter: counter.clone(),
            rows: rows.clone(),
            stream,
        };
        let ticker = {
            let bar = bar.clone();
            let counter = counter.clone();
            let rows = rows.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    bar.set_position(counter.load(Ordering::Relaxed));
                    bar.set_message(format!("{} rows", rows.load(Ordering::Relaxed)));
                }
            })
        };
        let meta = vec![
            (
                "custlake.batch_id".to_string(),
                serde_json::Value::String(batch_id.clone()),
            ),
            (
                "custlake.file".to_string(),
                serde_json::Value::String(path.display().to_string()),
            ),
        ];

        // Commit 1: the good rows. Into a table with no rows yet they stream
        // straight into a Delta append while the file is read; otherwise (or
        // when the file repeats a key) they are staged, then upserted.
        let existing = self.lake.open(&table_def).await?;
        let table_existed = existing.is_some();
        let empty_target = existing.as_ref().is_none_or(|t| {
            t.snapshot()
                .map(|s| s.log_data().num_files() == 0)
                .unwrap_or(false)
        });
        drop(existing);
        // Once a tiered table's rows have moved, a load is routed by tier.
        let empty_target = empty_target && crate::lake::hot_only(self.lake, &table_def).await?;
        let mut done: Option<(Staged, Option<i64>)> = None;
        if empty_target {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let stage = job(Some(tx));
            let staging_task = tokio::task::spawn_blocking(move || stage.run());
            let write = append_stream(self.lake, &self.ctx, &table_def, rx, meta.clone());
            let (written, staged) = tokio::join!(write, staging_task);
            let staged = staged
                .map_err(|e| IngestError::Internal(format!("staging task failed: {e}")))
                .and_then(|s| s);
            match (staged, written) {
                (Ok(staged), Ok(out)) => done = Some((staged, Some(out.version))),
                (staged, written) => {
                    if !table_existed {
                        self.lake.remove_uncommitted(&table_def).await?;
                    }
                    match (staged, written) {
                        (Err(IngestError::DuplicateKeys), _) => {
                            counter.store(0, Ordering::Relaxed);
                        }
                        (Err(e), _) => {
                            ticker.abort();
                            bar.abandon_with_message("failed");
                            return Err(e);
                        }
                        (Ok(_), Err(e)) => {
                            ticker.abort();
                            bar.abandon_with_message("failed");
                            return Err(e.into());
                        }
                        (Ok(_), Ok(_)) => unreachable!("handled above"),
                    }
                }
            }
        }
        let (staged, table_version) = match done {
            Some(d) => d,
            None => {
                let stage = job(None);
                let staged = tokio::task::spawn_blocking(move || stage.run())
                    .await
                    .map_err(|e| IngestError::Internal(format!("staging task failed: {e}")))
                    .and_then(|s| s);
                let staged = match staged {
                    Ok(s) => s,
                    Err(e) => {
                        ticker.abort();
                        bar.abandon_with_message("failed");
                        return Err(e);
                    }
                };
                bar.set_message(format!("{} rows read, committing", staged.rows_read));
                let mut version = None;
                if staged.rows_loaded > 0 {
                    let df = self
                        .ctx
                        .read_arrow(paths(&staged.good_files), ArrowReadOptions::default())
                        .await
                        .map_err(|e| IngestError::Internal(format!("reading staged rows: {e}")))?;
                    let out = upsert_leased(
                        self.lake,
                        &self.ctx,
                        &table_def,
                        df,
                        staged.duplicates,
                        meta.clone(),
                    )
                    .await?;
                    version = Some(out.version);
                }
                (staged, version)
            }
        };
        ticker.abort();
        bar.set_position(bytes);
        failpoint("ingest.after_data_commit");
        // Commit 2: the quarantined rows.
        if staged.rows_quarantined > 0 {
            let qdef = self.catalog.table("quarantine")?;
            let df = self
                .ctx
                .read_arrow(paths(&staged.bad_files), ArrowReadOptions::default())
                .await
                .map_err(|e| IngestError::Internal(format!("reading staged quarantine: {e}")))?;
            upsert(self.lake, &self.ctx, qdef, df, false, meta.clone()).await?;
        }
        // Commit 3: the batch record, which marks the file as loaded.
        let finished_at = chrono::Utc::now();
        let bdef = self.catalog.table("ingest_batch")?;
        let cells = vec![
            Cell::Str(batch_id.clone()),
            Cell::Str(system.to_string()),
            Cell::Str(entity.to_string()),
            Cell::Str(table_def.name.clone()),
            Cell::Str(path.display().to_string()),
            Cell::Str(sha.clone()),
            Cell::I64(bytes as i64),
            Cell::I64(staged.rows_read as i64),
            Cell::I64(staged.rows_loaded as i64),
            Cell::I64(staged.rows_quarantined as i64),
            Cell::Str("loaded".into()),
            table_version.map_or(Cell::Null, Cell::I64),
            Cell::Ts(started_at.timestamp_micros()),
            Cell::Ts(finished_at.timestamp_micros()),
        ];
        let mut b = BatchBuilder::new(bdef, false);
        b.push(&cells, None);
        let batch = b
            .finish()
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        let df = self
            .ctx
            .read_batch(batch)
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        upsert(self.lake, &self.ctx, bdef, df, false, meta).await?;
        bar.finish_and_clear();
        drop(staging);

        report.loaded = true;
        report.rows_read = staged.rows_read;
        report.rows_loaded = staged.rows_loaded;
        report.rows_quarantined = staged.rows_quarantined;
        report.reasons = staged.reasons;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// `(rows_read, rows_loaded, rows_quarantined)` of a batch already loaded.
    async fn loaded_batch(&self, batch_id: &str) -> Result<Option<(u64, u64, u64)>, IngestError> {
        let def = self.catalog.table("ingest_batch")?;
        let Some(table) = self.lake.open(def).await? else {
            return Ok(None);
        };
        let provider = table
            .table_provider()
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        let df = self
            .ctx
            .read_table(provider)
            .and_then(|df| {
                df.filter(
                    col("batch_id")
                        .eq(lit(batch_id))
                        .and(col("status").eq(lit("loaded"))),
                )?
                .select_columns(&["rows_read", "rows_loaded", "rows_quarantined"])
            })
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        let batches = df
            .collect()
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))?;
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

    fn progress_bar(&self, path: &Path, bytes: u64) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(
            path.file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default(),
        );
        bar
    }
}

/// Abort the process here when `CUSTLAKE_FAILPOINT` names this point: how
/// the tests kill a load between two commits.
fn failpoint(name: &str) {
    if std::env::var("CUSTLAKE_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

fn paths(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.to_string_lossy().to_string())
        .collect()
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

/// FNV-1a: a fast hash for key columns. A collision only makes a file take
/// the (exact) staged path for repeated keys.
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The keys in `seen` are already hashes: pass them through.
#[derive(Default)]
struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

struct StageJob {
    catalog: Catalog,
    system: String,
    entity: String,
    path: PathBuf,
    batch_id: String,
    staging: PathBuf,
    batch_rows: usize,
    started_at: chrono::DateTime<chrono::Utc>,
    counter: Arc<AtomicU64>,
    rows: Arc<AtomicU64>,
    stream: Option<BatchSender>,
}

struct Staged {
    good_files: Vec<PathBuf>,
    bad_files: Vec<PathBuf>,
    rows_read: u64,
    rows_loaded: u64,
    rows_quarantined: u64,
    duplicates: bool,
    reasons: BTreeMap<String, u64>,
}

impl Staged {
    fn add(&mut self, other: Staged) {
        self.good_files.extend(other.good_files);
        self.bad_files.extend(other.bad_files);
        self.rows_read += other.rows_read;
        self.rows_loaded += other.rows_loaded;
        self.rows_quarantined += other.rows_quarantined;
        self.duplicates |= other.duplicates;
        for (k, v) in other.reasons {
            *self.reasons.entry(k).or_insert(0) += v;
        }
    }

    fn empty() -> Self {
        Self {
            good_files: Vec::new(),
            bad_files: Vec::new(),
            rows_read: 0,
            rows_loaded: 0,
            rows_quarantined: 0,
            duplicates: false,
            reasons: BTreeMap::new(),
        }
    }
}

/// Where validated rows go while a file is read: a local Arrow IPC file
/// (committed by an upsert afterwards), or a channel straight into a Delta
/// append running alongside.
enum Sink {
    File(Box<FileWriter<std::io::BufWriter<File>>>),
    Channel(BatchSender),
}

type BatchSender = tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>;

struct Stager {
    builder: BatchBuilder,
    sink: Sink,
    batch_rows: usize,
}

impl Stager {
    fn new(
        path: &Path,
        table: &TableDef,
        with_line: bool,
        batch_rows: usize,
    ) -> Result<Self, IngestError> {
        let builder = BatchBuilder::new(table, with_line);
        let file = File::create(path).map_err(|e| IngestError::io(path, e))?;
        let writer = FileWriter::try_new(
            std::io::BufWriter::with_capacity(1 << 20, file),
            &builder.schema(),
        )
        .map_err(|e| IngestError::Internal(e.to_string()))?;
        Ok(Self {
            builder,
            sink: Sink::File(Box::new(writer)),
            batch_rows,
        })
    }

    fn channel(table: &TableDef, tx: BatchSender, batch_rows: usize) -> Self {
        Self {
            builder: BatchBuilder::new(table, false),
            sink: Sink::Channel(tx),
            batch_rows,
        }
    }

    /// Does this sink keep each row's line (to order duplicate keys)?
    fn keeps_lines(&self) -> bool {
        matches!(self.sink, Sink::File(_))
    }

    fn push(&mut self, cells: &[Cell], line: Option<i64>) -> Result<(), IngestError> {
        self.builder.push(cells, line);
        if self.builder.len() >= self.batch_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IngestError> {
        if self.builder.len() > 0 {
            let batch: RecordBatch = self
                .builder
                .finish()
                .map_err(|e| IngestError::Internal(e.to_string()))?;
            match &mut self.sink {
                Sink::File(w) => w
                    .write(&batch)
                    .map_err(|e| IngestError::Internal(e.to_string()))?,
                Sink::Channel(tx) => tx
                    .blocking_send(Ok(batch))
                    .map_err(|_| IngestError::Internal("the table writer stopped".into()))?,
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), IngestError> {
        self.flush()?;
        match &mut self.sink {
            Sink::File(w) => w.finish().map_err(|e| IngestError::Internal(e.to_string())),
            Sink::Channel(_) => Ok(()),
        }
    }
}

/// Raw records are handed to the workers in chunks of this many.
const CHUNK: usize = 1024;

type KeySet = HashSet<u64, std::hash::BuildHasherDefault<KeyHashHasher>>;

impl StageJob {
    /// Read the whole file. Valid rows go to the stream when one is given
    /// (which is then ended with an error if anything goes wrong, so the
    /// writer commits nothing), otherwise to local staging files.
    fn run(mut self) -> Result<Staged, IngestError> {
        let stream = self.stream.take();
        let abort = stream.clone();
        match self.fill(stream) {
            Ok(staged) => Ok(staged),
            Err(e) => {
                if let Some(tx) = abort {
                    let _ = tx.blocking_send(Err(datafusion::error::DataFusionError::Execution(
                        e.to_string(),
                    )));
                }
                Err(e)
            }
        }
    }

    /// One thread splits the file into raw records; the workers decode,
    /// map, validate and write them.
    fn fill(&self, stream: Option<BatchSender>) -> Result<Staged, IngestError> {
        let mapping = self.catalog.entity(&self.system, &self.entity)?.clone();
        let probe = Mapper::new(
            &self.catalog,
            &self.system,
            &mapping,
            &self.batch_id,
            self.started_at,
        )?;
        let mandatory = if mapping.format == crate::schema::FileFormat::Jsonl {
            &probe.key_columns
        } else {
            &probe.mandatory
        };
        let mut rdr = reader::open(
            &self.path,
            &mapping,
            &probe.needed,
            mandatory,
            self.batch_rows,
            self.counter.clone(),
        )?;
        let layout = rdr.layout();
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 8);
        let seen = std::sync::Mutex::new(KeySet::default());
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<reader::Raw>>(workers * 4);
        let rx = std::sync::Mutex::new(rx);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let (layout, mapping, rx, seen, stop) = (&layout, &mapping, &rx, &seen, &stop);
                    let stream = stream.clone();
                    scope.spawn(move || {
                        let result = self.work(w, layout, mapping, rx, seen, stream);
                        if result.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        result
                    })
                })
                .collect();
            drop(stream);
            // Split the file, handing chunks to the workers.
            let mut read_result = Ok(0u64);
            let mut chunk = Vec::with_capacity(CHUNK);
            let mut rows = 0u64;
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match rdr.next_raw() {
                    Ok(Some(raw)) => {
                        rows += 1;
                        chunk.push(raw);
                        if chunk.len() == CHUNK {
                            self.rows.store(rows, Ordering::Relaxed);
                            if tx
                                .send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                    Ok(None) => {
                        if !chunk.is_empty() {
                            let _ = tx.send(std::mem::take(&mut chunk));
                        }
                        read_result = Ok(rows);
                        break;
                    }
                    Err(e) => {
                        read_result = Err(e);
                        break;
                    }
                }
            }
            drop(tx);
            let mut total = Staged::empty();
            let mut first_error: Option<IngestError> = read_result.err();
            for h in handles {
                match h.join() {
                    Ok(Ok(part)) => total.add(part),
                    Ok(Err(e)) => {
                        // A fatal problem in the file outranks the fallout of
                        // stopping early; keep the first one found.
                        let replace = match &first_error {
                            None => true,
                            Some(IngestError::Unreadable { .. }) => false,
                            Some(_) => matches!(e, IngestError::Unreadable { .. }),
                        };
                        if replace {
                            first_error = Some(e);
                        }
                    }
                    Err(_) => {
                        first_error.get_or_insert(IngestError::Internal(
                            "an ingest worker panicked".into(),
                        ));
                    }
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(total),
            }
        })
    }

    /// One worker: decode, map, validate; stage or stream the good rows,
    /// stage the quarantined ones.
    fn work(
        &self,
        w: usize,
        layout: &reader::Layout,
        mapping: &crate::schema::EntityMapping,
        rx: &std::sync::Mutex<std::sync::mpsc::Receiver<Vec<reader::Raw>>>,
        seen: &std::sync::Mutex<KeySet>,
        stream: Option<BatchSender>,
    ) -> Result<Staged, IngestError> {
        let mut mapper = Mapper::new(
            &self.catalog,
            &self.system,
            mapping,
            &self.batch_id,
            self.started_at,
        )?;
        let qdef = self.catalog.table("quarantine")?.clone();
        let good_file = self.staging.join(format!("rows-{w}.arrow"));
        let bad_file = self.staging.join(format!("quarantine-{w}.arrow"));
        let mut good = match stream {
            Some(tx) => Stager::channel(&mapper.table, tx, self.batch_rows),
            None => Stager::new(&good_file, &mapper.table, true, self.batch_rows)?,
        };
        let mut bad = Stager::new(&bad_file, &qdef, false, self.batch_rows)?;
        let key_idx: Vec<usize> = mapper
            .table
            .key
            .iter()
            .filter_map(|k| mapper.table.index_of(k))
            .collect();
        let mut values: Vec<Option<String>> = vec![None; mapper.needed.len()];
        let mut scratch: Vec<String> = Vec::new();
        let mut hashes: Vec<u64> = Vec::with_capacity(CHUNK);
        let mut out = Staged::empty();
        if good.keeps_lines() {
            out.good_files.push(good_file);
        }
        out.bad_files.push(bad_file);
        let file_name = self.path.display().to_string();
        let now = self.started_at.timestamp_micros();
        let month = self
            .started_at
            .with_timezone(&transform::beijing())
            .format("%Y-%m")
            .to_string();
        loop {
            let chunk = match rx.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return Err(IngestError::Internal("ingest work queue poisoned".into())),
            };
            let Ok(chunk) = chunk else { break };
            hashes.clear();
            for raw in &chunk {
                out.rows_read += 1;
                let issues = match layout.decode(raw, &mut values, &mut scratch)? {
                    RowResult::Malformed { line, detail } => Some((
                        line,
                        vec![transform::Issue {
                            code: "MALFORMED_ROW",
                            field: String::new(),
                            value: None,
                            detail,
                        }],
                    )),
                    RowResult::Row(line) => match mapper.apply(&values) {
                        Ok(()) => {
                            let cells = mapper.cells();
                            let mut h = Fnv64::default();
                            for &i in &key_idx {
                                cells[i].hash(&mut h);
                            }
                            hashes.push(h.finish());
                            good.push(cells, good.keeps_lines().then_some(line as i64))?;
                            out.rows_loaded += 1;
                            None
                        }
                        Err(issues) => Some((line, issues)),
                    },
                };
                if let Some((line, issues)) = issues {
                    let first = &issues[0];
                    *out.reasons.entry(first.code.to_string()).or_insert(0) += 1;
                    out.rows_quarantined += 1;
                    let reasons: Vec<String> = issues
                        .iter()
                        .map(|i| format!("{}:{}", i.code, i.field))
                        .collect();
                    let cells = vec![
                        Cell::Str(self.batch_id.clone()),
                        Cell::I64(line as i64),
                        Cell::Str(self.system.clone()),
                        Cell::Str(self.entity.clone()),
                        Cell::Str(mapping.table.clone()),
                        Cell::Str(file_name.clone()),
                        Cell::Str(first.code.to_string()),
                        if first.field.is_empty() {
                            Cell::Null
                        } else {
                            Cell::Str(first.field.clone())
                        },
                        first.value.clone().map_or(Cell::Null, Cell::Str),
                        Cell::Str(reasons.join("; ")),
                        Cell::Str(first.detail.clone()),
                        Cell::Str(layout.raw_json(raw, &scratch)),
                        Cell::Ts(now),
                        Cell::Str(month.clone()),
                    ];
                    bad.push(&cells, None)?;
                }
            }
            // Keys seen twice (in this file) need the last-line-wins rule.
            let mut set = seen
                .lock()
                .map_err(|_| IngestError::Internal("key set poisoned".into()))?;
            for h in &hashes {
                if !set.insert(*h) {
                    out.duplicates = true;
                }
            }
            drop(set);
            if out.duplicates && !good.keeps_lines() {
                // A streamed append cannot keep only the last of two rows:
                // the caller starts over with staging.
                return Err(IngestError::DuplicateKeys);
            }
        }
        good.finish()?;
        bad.finish()?;
        Ok(out)
    }
}
