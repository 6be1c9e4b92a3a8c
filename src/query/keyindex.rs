//! Key indexes for point lookups: for each Parquet file of a table and each
//! of its lookup columns (`lookup` in the table's declaration), the rows
//! holding each value, kept in memory.
//!
//! A scan whose filters ask a lookup column for one value (`phone = '…'`,
//! or an `IN` list) reads only the rows the index names: row groups without
//! them are skipped before their bloom filters are read, and in the others
//! the reader decodes only the pages holding those rows. Without it a
//! lookup on a column in no order (a phone number, an id number) reads
//! every row group's bloom filter and decodes whole row groups.
//!
//! An index holds a 32-bit hash of each value with its row (8 bytes a
//! row): it names the rows that may hold the value, and the scan's filter
//! still decides, so a hash shared by two values costs a row read, never a
//! wrong answer. Data files never change once written, so an index is
//! keyed by the file's path and is right for as long as the file is read;
//! a commit that adds files gets indexes for those files alone.
//!
//! A file's index is built on a task of its own the first time a lookup
//! reads the file; that lookup, and any before the index is ready, read
//! the file as they would without it. The indexes share a memory budget
//! (`query.key_index_mb`); past it the least recently used are dropped,
//! and a dropped index is not built again for a minute (a budget too
//! small for the lookup tables must not turn every lookup into a build).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetAccessPlan, ParquetRowSelection, RowGroupAccess,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::RowSelection;
use datafusion::parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use object_store::ObjectStore;

/// The rows of one file that hold each value of one column.
#[derive(Debug)]
pub(super) struct FileIndex {
    /// (hash of the value, row in the file), sorted.
    entries: Vec<(u32, u32)>,
    /// Rows of each row group, in order.
    group_rows: Vec<usize>,
}

impl FileIndex {
    fn bytes(&self) -> usize {
        self.entries.capacity() * 8 + self.group_rows.capacity() * 8 + 64
    }

    /// The rows that may hold one of `values`, sorted, without repeats.
    fn rows(&self, values: &[Vec<u8>]) -> Vec<u32> {
        let mut rows = Vec::new();
        for v in values {
            let h = hash(v);
            let from = self.entries.partition_point(|e| e.0 < h);
            rows.extend(
                self.entries[from..]
                    .iter()
                    .take_while(|e| e.0 == h)
                    .map(|e| e.1),
            );
        }
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    /// An access plan that reads `rows` alone: row groups without any are
    /// skipped, the others read only those rows.
    fn access_plan(&self, rows: &[u32]) -> ParquetAccessPlan {
        let mut plan = ParquetAccessPlan::new_none(self.group_rows.len());
        let mut start = 0usize;
        let mut next = 0usize;
        for (g, &n) in self.group_rows.iter().enumerate() {
            let end = start + n;
            let mut ranges = Vec::new();
            while next < rows.len() && (rows[next] as usize) < end {
                let r = rows[next] as usize - start;
                ranges.push(r..r + 1);
                next += 1;
            }
            if !ranges.is_empty() {
                plan.set(
                    g,
                    RowGroupAccess::Selection(RowSelection::from_consecutive_ranges(
                        ranges.into_iter(),
                        n,
                    )),
                );
            }
            start = end;
        }
        plan
    }
}

/// FNV-1a, folded to 32 bits: the same on every run and every machine.
fn hash(v: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// Which file and column an index is of.
type Key = (String, String);

enum Slot {
    Building,
    Ready {
        index: Arc<FileIndex>,
        used: Instant,
    },
    /// Dropped for the budget (or its build failed) at this time.
    Dropped(Instant),
}

/// The key indexes a process keeps (one per process, shared by its
/// sessions as a session extension).
pub(super) struct KeyIndexes {
    budget: usize,
    slots: Mutex<(HashMap<Key, Slot>, usize)>,
    /// One build at a time: each decodes a whole column of a file.
    builds: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for KeyIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIndexes")
            .field("budget", &self.budget)
            .finish()
    }
}

/// How long an index dropped for the budget is not built again.
const REBUILD_AFTER: Duration = Duration::from_secs(60);

impl KeyIndexes {
    /// The process's indexes, with the budget of the first caller (a
    /// process serves one configuration).
    pub(super) fn shared(budget_mb: u64) -> Arc<Self> {
        static SHARED: std::sync::OnceLock<Arc<KeyIndexes>> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| Arc::new(Self::new(budget_mb)))
            .clone()
    }

    pub(super) fn new(budget_mb: u64) -> Self {
        Self {
            budget: (budget_mb as usize).saturating_mul(1024 * 1024),
            slots: Mutex::new((HashMap::new(), 0)),
            builds: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// The index of `key` if it is ready; otherwise starts building it
    /// (unless it is being built or was dropped a moment ago).
    fn get_or_start(
        self: &Arc<Self>,
        key: Key,
        store: Arc<dyn ObjectStore>,
        file: PartitionedFile,
    ) -> Option<Arc<FileIndex>> {
        if self.budget == 0 {
            return None;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.0.get_mut(&key) {
            Some(Slot::Ready { index, used }) => {
                *used = Instant::now();
                return Some(index.clone());
            }
            Some(Slot::Building) => return None,
            Some(Slot::Dropped(at)) if at.elapsed() < REBUILD_AFTER => return None,
            _ => {}
        }
        slots.0.insert(key.clone(), Slot::Building);
        drop(slots);
        let this = self.clone();
        tokio::spawn(async move {
            // Dropped unfinished (a runtime shutting down, a panic), the
            // build leaves the slot free for a later one.
            let mut pending = Pending {
                indexes: this.clone(),
                key: Some(key.clone()),
            };
            let Ok(_one) = this.builds.clone().acquire_owned().await else {
                return;
            };
            let built = build(store, file, &key.1, this.budget).await;
            pending.key = None;
            this.admit(key, built);
        });
        None
    }

    fn admit(&self, key: Key, built: Result<FileIndex, String>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // Forget what was dropped long enough ago to be built again (the
        // files of old table versions among them).
        slots
            .0
            .retain(|_, s| !matches!(s, Slot::Dropped(at) if at.elapsed() >= REBUILD_AFTER));
        let index = match built {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(file = %key.0, column = %key.1, error = %e, "a key index could not be built; lookups read the file without it");
                slots.0.insert(key, Slot::Dropped(Instant::now()));
                return;
            }
        };
        let bytes = index.bytes();
        if bytes > self.budget {
            slots.0.insert(key, Slot::Dropped(Instant::now()));
            return;
        }
        // Make room: drop the least recently used.
        while slots.1 + bytes > self.budget {
            let oldest = slots
                .0
                .iter()
                .filter_map(|(k, s)| match s {
                    Slot::Ready { used, .. } => Some((k.clone(), *used)),
                    _ => None,
                })
                .min_by_key(|(_, used)| *used);
            let Some((k, _)) = oldest else { break };
            if let Some(Slot::Ready { index, .. }) =
                slots.0.insert(k, Slot::Dropped(Instant::now()))
            {
                slots.1 -= index.bytes();
                metrics::counter!("custlake_key_index_evictions_total").increment(1);
            }
        }
        slots.1 += bytes;
        metrics::gauge!("custlake_key_index_bytes").set(slots.1 as f64);
        slots.0.insert(
            key,
            Slot::Ready {
                index: Arc::new(index),
                used: Instant::now(),
            },
        );
    }
}

/// A build under way: its slot, freed if the build is dropped unfinished.
struct Pending {
    indexes: Arc<KeyIndexes>,
    key: Option<Key>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut slots = self.indexes.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.0.remove(&key);
        }
    }
}

/// Read one column of one file and index it (refused before reading when
/// its index would not fit in `budget` bytes).
async fn build(
    store: Arc<dyn ObjectStore>,
    file: PartitionedFile,
    column: &str,
    budget: usize,
) -> Result<FileIndex, String> {
    let metrics = datafusion::physical_plan::metrics::ExecutionPlanMetricsSet::new();
    let reader = DefaultParquetFileReaderFactory::new(store)
        .create_reader(0, file, None, &metrics)
        .map_err(|e| e.to_string())?;
    let reader: Box<dyn datafusion::parquet::arrow::async_reader::AsyncFileReader> = reader;
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| e.to_string())?;
    let group_rows: Vec<usize> = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows() as usize)
        .collect();
    let rows: usize = group_rows.iter().sum();
    if rows.saturating_mul(8) > budget {
        return Err(format!(
            "{rows} rows need {} MiB, more than query.key_index_mb",
            (rows * 8) >> 20
        ));
    }
    let mask = ProjectionMask::columns(builder.parquet_schema(), [column]);
    let mut stream = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| e.to_string())?;
    let mut entries = Vec::with_capacity(rows);
    let mut row: u32 = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| e.to_string())?;
        if batch.num_columns() != 1 {
            return Err(format!("column {column} is not in the file"));
        }
        let col = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8View)
            .map_err(|e| e.to_string())?;
        let col = col.as_string_view();
        for i in 0..col.len() {
            if col.is_valid(i) {
                entries.push((hash(col.value(i).as_bytes()), row + i as u32));
            }
        }
        row += col.len() as u32;
        // A long build gives way to the queries it runs beside.
        tokio::task::yield_now().await;
    }
    entries.sort_unstable();
    entries.shrink_to_fit();
    Ok(FileIndex {
        entries,
        group_rows,
    })
}

/// The values `filters` ask one of `lookup` for: the column with the
/// fewest values among those compared with `=` to string constants or
/// listed in an `IN` list of them.
pub(super) fn wanted(filters: &[Expr], lookup: &[String]) -> Option<(String, Vec<Vec<u8>>)> {
    fn text(e: &Expr) -> Option<Vec<u8>> {
        match e {
            Expr::Literal(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::Utf8View(Some(s))
                | ScalarValue::LargeUtf8(Some(s)),
                _,
            ) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }
    let mut best: Option<(String, Vec<Vec<u8>>)> = None;
    let mut offer = |name: &str, values: Vec<Vec<u8>>| {
        if lookup.iter().any(|l| l == name)
            && best.as_ref().is_none_or(|(_, v)| values.len() < v.len())
        {
            best = Some((name.to_string(), values));
        }
    };
    for f in filters {
        for e in split_conjunction(f) {
            match e {
                Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::Eq,
                    right,
                }) => match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), v) | (v, Expr::Column(c)) => {
                        if let Some(v) = text(v) {
                            offer(&c.name, vec![v]);
                        }
                    }
                    _ => {}
                },
                Expr::InList(l) if !l.negated => {
                    if let Expr::Column(c) = l.expr.as_ref() {
                        let values: Option<Vec<_>> = l.list.iter().map(text).collect();
                        if let Some(values) = values.filter(|v| !v.is_empty()) {
                            offer(&c.name, values);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    best
}

/// `plan` (a Delta scan of a table's rows as they are: no row numbers
/// asked for, no column mapping, which custlake's tables never use)
/// reading only the rows of each file that the key
/// indexes name for `column`'s `values`; files whose index is not ready
/// are read as before (and their indexes started).
pub(super) fn narrow(
    state: &dyn Session,
    plan: Arc<dyn ExecutionPlan>,
    column: &str,
    values: &[Vec<u8>],
) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    Ok(narrow_with(state, plan.clone(), column, values, false)?.unwrap_or(plan))
}

/// `plan` with every Parquet scan in it served from the row cache (see
/// `rowcache`), or `None` when one of them cannot be: an index not ready,
/// more rows asked for than the cache serves, no cache. `plan` may read
/// every file of the table (a scan planned without the statement's
/// filters): the indexes alone pick the rows, the filters above the scan
/// decide which are returned.
pub(super) fn from_row_cache(
    state: &dyn Session,
    plan: Arc<dyn ExecutionPlan>,
    column: &str,
    values: &[Vec<u8>],
) -> datafusion::common::Result<Option<Arc<dyn ExecutionPlan>>> {
    narrow_with(state, plan, column, values, true)
}

/// [`narrow`]; with `rows_only`, [`from_row_cache`].
fn narrow_with(
    state: &dyn Session,
    plan: Arc<dyn ExecutionPlan>,
    column: &str,
    values: &[Vec<u8>],
    rows_only: bool,
) -> datafusion::common::Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(indexes) = state.config().get_extension::<KeyIndexes>() else {
        return Ok(None);
    };
    let rows_cache = state.config().get_extension::<super::rowcache::RowCache>();
    if rows_only && rows_cache.is_none() {
        return Ok(None);
    }
    let runtime = state.runtime_env().clone();
    // In `rows_only`: whether every scan was served from the cache.
    let mut served = 0usize;
    let mut missed = false;
    let narrowed = plan.transform_down(|node| {
        let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        // A source of another kind, or a store the runtime does not know:
        // read as it is.
        let Some(config) = exec
            .data_source()
            .downcast_ref::<FileScanConfig>()
            .filter(|c| c.file_source().file_type() == "parquet")
        else {
            missed = true;
            return Ok(Transformed::no(node));
        };
        let Ok(store) = runtime.object_store(&config.object_store_url) else {
            missed = true;
            return Ok(Transformed::no(node));
        };
        // Each file's index (a file split into byte ranges appears once per
        // range), started where it is not ready.
        let mut found: HashMap<String, Option<Arc<FileIndex>>> = HashMap::new();
        let mut planned_already = false;
        for f in config.file_groups.iter().flat_map(|g| g.iter()) {
            if f.extensions.get::<ParquetAccessPlan>().is_some()
                || f.extensions.get::<ParquetRowSelection>().is_some()
            {
                planned_already = true;
                continue;
            }
            let path = file_path(config, f);
            if found.contains_key(&path) {
                continue;
            }
            let whole = PartitionedFile::new_from_meta(f.object_meta.clone());
            let index =
                indexes.get_or_start((path.clone(), column.to_string()), store.clone(), whole);
            found.insert(path, index);
        }
        // Every file indexed and few rows asked for: served from decoded
        // chunks kept in memory (see `rowcache`).
        if let Some(cache) = &rows_cache
            && !planned_already
            && let Some(cached) = from_rows(cache, exec, config, &found, values)
        {
            served += 1;
            return Ok(Transformed::new(
                Arc::new(cached) as Arc<dyn ExecutionPlan>,
                true,
                TreeNodeRecursion::Jump,
            ));
        }
        if rows_only {
            missed = true;
            return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
        }
        let mut changed = false;
        let groups: Vec<FileGroup> = config
            .file_groups
            .iter()
            .map(|g| {
                let files = g
                    .iter()
                    .map(|f| {
                        let mut f = f.clone();
                        if f.extensions.get::<ParquetAccessPlan>().is_some()
                            || f.extensions.get::<ParquetRowSelection>().is_some()
                        {
                            return f;
                        }
                        if let Some(Some(index)) = found.get(&file_path(config, &f)) {
                            let rows = index.rows(values);
                            f.extensions.insert(index.access_plan(&rows));
                            changed = true;
                        }
                        f
                    })
                    .collect::<Vec<_>>();
                FileGroup::new(files)
            })
            .collect();
        if !changed {
            return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
        }
        let config = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(groups)
            .build();
        Ok(Transformed::new(
            DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>,
            true,
            TreeNodeRecursion::Jump,
        ))
    })?;
    if rows_only && (missed || served == 0) {
        return Ok(None);
    }
    Ok(Some(narrowed.data))
}

/// A file as the key indexes name it: its store's URL and its path.
fn file_path(config: &FileScanConfig, f: &PartitionedFile) -> String {
    format!(
        "{}{}",
        config.object_store_url.as_str(),
        f.object_meta.location
    )
}

/// The scan `exec` of `config` served from `cache`: the rows `found`'s
/// indexes name for `values` in each file, when every file has its index
/// and they are at most [`super::rowcache::MAX_ROWS`].
fn from_rows(
    cache: &Arc<super::rowcache::RowCache>,
    exec: &DataSourceExec,
    config: &FileScanConfig,
    found: &HashMap<String, Option<Arc<FileIndex>>>,
    values: &[Vec<u8>],
) -> Option<super::rowcache::CachedRowsExec> {
    if !found.values().all(Option::is_some) {
        return None;
    }
    let mut files = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0usize;
    for f in config.file_groups.iter().flat_map(|g| g.iter()) {
        if !seen.insert(f.object_meta.location.clone()) {
            continue;
        }
        let Some(Some(index)) = found.get(&file_path(config, f)) else {
            continue;
        };
        let rows = index.rows(values);
        total += rows.len();
        if rows.is_empty() {
            continue;
        }
        let mut file = f.clone();
        file.range = None;
        files.push(super::rowcache::FileRows {
            file,
            group_rows: index.group_rows.clone(),
            rows,
        });
    }
    if total > super::rowcache::MAX_ROWS {
        return None;
    }
    super::rowcache::CachedRowsExec::try_new(cache.clone(), exec, config, files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn an_index_names_the_rows_of_a_value_and_skips_other_row_groups() {
        let values = ["a", "b", "a", "c", "d", "a", "e"];
        let mut entries: Vec<(u32, u32)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (hash(v.as_bytes()), i as u32))
            .collect();
        entries.sort_unstable();
        let index = FileIndex {
            entries,
            group_rows: vec![3, 2, 2],
        };
        assert_eq!(index.rows(&[b"a".to_vec()]), vec![0, 2, 5]);
        assert_eq!(index.rows(&[b"d".to_vec(), b"b".to_vec()]), vec![1, 4]);
        assert!(index.rows(&[b"zz".to_vec()]).is_empty());
        let plan = index.access_plan(&[0, 2, 5]);
        assert!(plan.should_scan(0));
        assert!(!plan.should_scan(1));
        assert!(plan.should_scan(2));
        let selected: Vec<usize> = plan
            .inner()
            .iter()
            .map(|a| match a {
                RowGroupAccess::Selection(s) => s.row_count(),
                RowGroupAccess::Scan => 99,
                RowGroupAccess::Skip => 0,
            })
            .collect();
        assert_eq!(selected, vec![2, 0, 1]);
    }

    #[test]
    fn only_equalities_and_in_lists_on_lookup_columns_are_used() {
        let lookup = vec!["phone".to_string(), "id_number".to_string()];
        let f = col("phone").eq(lit("+8613800000000"));
        assert_eq!(
            wanted(&[f], &lookup),
            Some(("phone".into(), vec![b"+8613800000000".to_vec()]))
        );
        // The column with the fewest values wins.
        let f = col("phone")
            .in_list(vec![lit("1"), lit("2")], false)
            .and(lit("x").eq(col("id_number")));
        assert_eq!(
            wanted(&[f], &lookup),
            Some(("id_number".into(), vec![b"x".to_vec()]))
        );
        // Not a lookup column, a negated list, a range, a non-text constant.
        assert_eq!(wanted(&[col("name").eq(lit("x"))], &lookup), None);
        assert_eq!(
            wanted(&[col("phone").in_list(vec![lit("1")], true)], &lookup),
            None
        );
        assert_eq!(wanted(&[col("phone").gt(lit("1"))], &lookup), None);
        assert_eq!(wanted(&[col("phone").eq(lit(1))], &lookup), None);
        // Either side of an OR decides nothing.
        assert_eq!(
            wanted(
                &[col("phone").eq(lit("1")).or(col("name").eq(lit("y")))],
                &lookup
            ),
            None
        );
    }
}
