//! Decoded rows of lookup tables, kept in memory for point lookups.
//!
//! A lookup that the key indexes narrow to a few rows (see `keyindex`)
//! would still decompress and decode, per column, the whole page holding
//! each row: about half a millisecond a column, most of a lookup's time.
//! Here the rows are read in chunks of [`CHUNK_ROWS`] rows of a row group
//! (a page of a lookup table, every column of the table, decoded), and a
//! chunk read once is kept, so the next lookup of any row in it takes the
//! row from memory: no read, no decompression, no decoding.
//!
//! - Data files never change once written, so a chunk belongs to one file
//!   and stays right for as long as the file is read; the chunks of files
//!   a newer table version no longer lists are simply not asked for again
//!   and age out.
//! - The chunks share a memory budget (`query.row_cache_mb`); past it the
//!   least recently used are dropped. 0 turns the cache off.
//! - A chunk holds the table's rows as they are stored: the statement's own
//!   filter (kept above the scan) decides which rows are returned, and the
//!   principal's masks and row filters are applied above it as for any
//!   scan. The cache changes how rows are read, never which.
//! - Only scans the key indexes narrow to at most [`MAX_ROWS`] rows, with
//!   every file's index ready, are served from it; any other scan reads
//!   the files as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::stats::Precision;
use datafusion::common::{DataFusionError, Result, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{ParquetAccessPlan, RowGroupAccess};
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, FileSource, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::arrow_reader::RowSelection;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

/// Rows a chunk holds (the page size of lookup tables, so a chunk read
/// decodes the pages a lookup of one of its rows would decode anyway).
pub(super) const CHUNK_ROWS: usize = 4096;

/// The most rows a scan may ask for and be served from the cache: a lookup
/// asks for a handful; an `IN` list of thousands would fill the cache with
/// chunks read once.
pub(super) const MAX_ROWS: usize = 256;

/// One chunk: a file (its store's URL and path, and the table schema it is
/// read with), and the first row of the chunk in the file.
type Key = (Arc<str>, u64, u32);

struct Entry {
    batch: RecordBatch,
    bytes: usize,
    used: u64,
}

/// The decoded chunks a process keeps (one per process, shared by its
/// sessions as a session extension).
pub(super) struct RowCache {
    budget: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    chunks: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
}

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCache")
            .field("budget", &self.budget)
            .finish()
    }
}

impl RowCache {
    /// The process's cache, with the budget of the first caller (a process
    /// serves one configuration).
    pub(super) fn shared(budget_mb: u64) -> Arc<Self> {
        static SHARED: std::sync::OnceLock<Arc<RowCache>> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| Arc::new(Self::new(budget_mb)))
            .clone()
    }

    pub(super) fn new(budget_mb: u64) -> Self {
        Self {
            budget: (budget_mb as usize).saturating_mul(1024 * 1024),
            state: Mutex::new(State::default()),
        }
    }

    fn get(&self, key: &Key) -> Option<RecordBatch> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.clock += 1;
        let clock = state.clock;
        let entry = state.chunks.get_mut(key)?;
        entry.used = clock;
        Some(entry.batch.clone())
    }

    fn put(&self, key: Key, batch: RecordBatch) {
        let bytes = batch.get_array_memory_size() + 128;
        if bytes > self.budget / 4 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.clock += 1;
        let used = state.clock;
        if let Some(old) = state.chunks.insert(key, Entry { batch, bytes, used }) {
            state.bytes -= old.bytes;
        }
        state.bytes += bytes;
        while state.bytes > self.budget {
            let Some(oldest) = state
                .chunks
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = state.chunks.remove(&oldest) {
                state.bytes -= e.bytes;
                metrics::counter!("custlake_row_cache_evictions_total").increment(1);
            }
        }
        metrics::gauge!("custlake_row_cache_bytes").set(state.bytes as f64);
    }
}

/// The rows one file is asked for.
#[derive(Debug, Clone)]
pub(super) struct FileRows {
    /// The file, whole (no byte range, no access plan), with its partition
    /// values.
    pub file: PartitionedFile,
    /// Rows of each row group, in order.
    pub group_rows: Vec<usize>,
    /// The rows, sorted, without repeats.
    pub rows: Vec<u32>,
}

/// A Parquet scan of a few rows of some files, served from the row cache
/// (reading the chunks not in it yet).
#[derive(Debug)]
pub(super) struct CachedRowsExec {
    cache: Arc<RowCache>,
    /// The scan it replaces: where the files are and how they are read.
    template: FileScanConfig,
    /// The same files read whole: every column of the table, no predicate.
    whole: Arc<ParquetSource>,
    /// The scan's columns, from the whole table's.
    projection: ProjectionExprs,
    /// Tells the table schema apart in the cache's keys.
    schema_id: u64,
    /// Rows asked for, in all files.
    total: usize,
    files: Vec<FileRows>,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
}

impl CachedRowsExec {
    /// `scan` served from `cache`, or `None` when its reading cannot be
    /// reproduced from whole chunks (not a plain Parquet scan, or columns
    /// other than the table's own).
    pub(super) fn try_new(
        cache: Arc<RowCache>,
        scan: &DataSourceExec,
        config: &FileScanConfig,
        files: Vec<FileRows>,
    ) -> Option<Self> {
        let source = config.file_source().downcast_ref::<ParquetSource>()?;
        // Columns the reader makes per file (a row's position, for deletion
        // vectors) cannot be taken from a chunk read for another scan.
        if !source.table_schema().virtual_columns().is_empty() {
            return None;
        }
        let projection = source.projection()?.clone();
        // Plain columns only: an expression the reader rewrites per file
        // (a file's name) would be evaluated wrongly over kept rows.
        if projection.iter().any(|p| {
            !p.expr
                .is::<datafusion::physical_expr::expressions::Column>()
        }) {
            return None;
        }
        let mut whole = ParquetSource::new(source.table_schema().clone())
            .with_table_parquet_options(source.table_parquet_options().clone());
        if let Some(f) = source.parquet_file_reader_factory() {
            whole = whole.with_parquet_file_reader_factory(f.clone());
        }
        let full = source.table_schema().table_schema().clone();
        // The scan's output must be its projection of the whole table.
        let projected = projection.project_schema(&full).ok()?;
        let out = scan.schema();
        if projected.fields().len() != out.fields().len()
            || projected
                .fields()
                .iter()
                .zip(out.fields())
                .any(|(a, b)| a.data_type() != b.data_type())
        {
            return None;
        }
        let schema_id = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for f in full.fields() {
                f.name().hash(&mut h);
                f.data_type().hash(&mut h);
            }
            config.object_store_url.as_str().hash(&mut h);
            h.finish()
        };
        let total = files.iter().map(|f| f.rows.len()).sum();
        // The files travel in `files`; the template keeps how they are read.
        let template = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(Vec::new())
            .build();
        Some(Self {
            cache,
            template,
            whole: Arc::new(whole),
            projection,
            schema_id,
            total,
            files,
            limit: config.limit,
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(out),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Final,
                Boundedness::Bounded,
            )),
        })
    }
}

/// Read the chunk `rows` (positions within row group `group`) of `file`,
/// every column, no predicate.
async fn read_chunk(
    template: &FileScanConfig,
    whole: &Arc<ParquetSource>,
    file: &PartitionedFile,
    group_rows: &[usize],
    group: usize,
    rows: std::ops::Range<usize>,
    context: Arc<TaskContext>,
) -> Result<RecordBatch> {
    let len = rows.len();
    let mut plan = ParquetAccessPlan::new_none(group_rows.len());
    plan.set(
        group,
        RowGroupAccess::Selection(RowSelection::from_consecutive_ranges(
            std::iter::once(rows),
            group_rows[group],
        )),
    );
    let mut f = file.clone();
    f.extensions.insert(plan);
    let config = FileScanConfigBuilder::from(template.clone())
        .with_source(whole.clone() as Arc<dyn FileSource>)
        .with_file_groups(vec![FileGroup::new(vec![f])])
        .with_limit(None)
        .build();
    let exec = DataSourceExec::from_data_source(config);
    let schema = exec.schema();
    let batches = datafusion::physical_plan::collect(exec, context).await?;
    let batch = concat_batches(&schema, &batches)?;
    if batch.num_rows() != len {
        return Err(DataFusionError::Internal(format!(
            "{}: a chunk of {len} rows read as {}",
            file.object_meta.location,
            batch.num_rows()
        )));
    }
    Ok(batch)
}

/// `batch` (rows of `file` as a chunk holds them) with the partition
/// columns of `file` as this scan lists it: a partition value (Delta's file
/// id among them) belongs to the scan, not to the file.
fn with_partition_values(
    batch: RecordBatch,
    file: &PartitionedFile,
    full: &SchemaRef,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    let first = columns.len() - file.partition_values.len();
    for (i, v) in file.partition_values.iter().enumerate() {
        let want = full.field(first + i).data_type();
        let mut a = v.to_array_of_size(n)?;
        if a.data_type() != want {
            a = datafusion::arrow::compute::cast(&a, want)?;
        }
        columns[first + i] = a;
    }
    Ok(RecordBatch::try_new_with_options(
        full.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )?)
}

impl CachedRowsExec {
    async fn rows(&self, context: Arc<TaskContext>) -> Result<RecordBatch> {
        let full = self.whole.table_schema().table_schema().clone();
        let mut parts = Vec::new();
        for fr in &self.files {
            let path: Arc<str> = Arc::from(fr.file.object_meta.location.as_ref());
            // Rows by chunk: (row group, first row of the chunk in the group).
            let mut start = 0usize;
            let mut next = 0usize;
            for (g, &n) in fr.group_rows.iter().enumerate() {
                let end = start + n;
                while next < fr.rows.len() && (fr.rows[next] as usize) < end {
                    let offset = fr.rows[next] as usize - start;
                    let from = offset / CHUNK_ROWS * CHUNK_ROWS;
                    let len = CHUNK_ROWS.min(n - from);
                    let mut picks = Vec::new();
                    while next < fr.rows.len() && (fr.rows[next] as usize) < start + from + len {
                        picks.push(fr.rows[next] - (start + from) as u32);
                        next += 1;
                    }
                    let key: Key = (path.clone(), self.schema_id, (start + from) as u32);
                    let chunk = match self.cache.get(&key) {
                        Some(c) => {
                            metrics::counter!("custlake_row_cache_hits_total").increment(1);
                            c
                        }
                        None => {
                            metrics::counter!("custlake_row_cache_misses_total").increment(1);
                            let c = read_chunk(
                                &self.template,
                                &self.whole,
                                &fr.file,
                                &fr.group_rows,
                                g,
                                from..from + len,
                                context.clone(),
                            )
                            .await?;
                            self.cache.put(key, c.clone());
                            c
                        }
                    };
                    let taken = take_record_batch(&chunk, &UInt32Array::from(picks))?;
                    parts.push(with_partition_values(taken, &fr.file, &full)?);
                }
                start = end;
            }
        }
        let mut all = concat_batches(&full, &parts)?;
        if let Some(limit) = self.limit
            && all.num_rows() > limit
        {
            all = all.slice(0, limit);
        }
        let projected = self.projection.make_projector(&full)?.project_batch(&all)?;
        Ok(RecordBatch::try_new_with_options(
            self.schema(),
            projected.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(projected.num_rows())),
        )?)
    }
}

impl DisplayAs for CachedRowsExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: usize = self.files.iter().map(|f| f.rows.len()).sum();
        write!(
            f,
            "CachedRowsExec: files={}, rows={rows}, projection={}",
            self.files.len(),
            self.projection
        )
    }
}

impl ExecutionPlan for CachedRowsExec {
    fn name(&self) -> &str {
        "CachedRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    opaque_leaf!();

    fn statistics_from_inputs(
        &self,
        _: &[Arc<Statistics>],
        _: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        // At most the rows the indexes named: a plan above needs no
        // exchange to spread them over the cores.
        let mut s = Statistics::new_unknown(&self.schema());
        s.num_rows = Precision::Inexact(self.total);
        Ok(Arc::new(s))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "CachedRowsExec has one partition, not {partition}"
            )));
        }
        let this = Self {
            cache: self.cache.clone(),
            template: self.template.clone(),
            whole: self.whole.clone(),
            projection: self.projection.clone(),
            schema_id: self.schema_id,
            total: self.total,
            files: self.files.clone(),
            limit: self.limit,
            properties: self.properties.clone(),
        };
        let schema: SchemaRef = self.schema();
        let stream = futures::stream::once(async move { this.rows(context).await });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn chunk(n: i32) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![n; 1000]))]).unwrap()
    }

    #[test]
    fn the_least_recently_used_chunks_leave_first_and_the_budget_holds() {
        let cache = RowCache::new(1);
        let one = chunk(0).get_array_memory_size() + 128;
        let fits = (1024 * 1024) / one;
        let key = |i: u32| -> Key { (Arc::from("f"), 0, i) };
        for i in 0..fits as u32 {
            cache.put(key(i), chunk(i as i32));
        }
        // Chunk 0 used again: chunk 1 is now the least recently used.
        assert!(cache.get(&key(0)).is_some());
        cache.put(key(10_000), chunk(7));
        assert!(cache.get(&key(1)).is_none());
        assert!(cache.get(&key(0)).is_some());
        assert_eq!(
            cache.get(&key(10_000)).unwrap().column(0).as_ref(),
            chunk(7).column(0).as_ref()
        );
        let state = cache.state.lock().unwrap();
        assert!(state.bytes <= 1024 * 1024);
        assert_eq!(
            state.bytes,
            state.chunks.values().map(|e| e.bytes).sum::<usize>()
        );
    }

    #[test]
    fn an_empty_budget_keeps_nothing() {
        let cache = RowCache::new(0);
        cache.put((Arc::from("f"), 0, 0), chunk(1));
        assert!(cache.get(&(Arc::from("f"), 0, 0)).is_none());
    }
}
