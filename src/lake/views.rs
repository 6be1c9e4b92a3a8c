//! Text read as views (`Utf8View`) without the memory pool counting
//! strings that are not there.
//!
//! A view array's rows point into shared data buffers. A Parquet page
//! decodes into one buffer that every batch cut from it shares (a
//! dictionary page into one buffer for the whole column chunk), and a
//! join's output rows point into the build side's buffers, all of them.
//! Sorts, windows and join build sides count each batch they hold at its
//! buffers' full size: a score over a million customers counted 3.7 GB in
//! one sort while the process held 1.9 GB, and the pool refused it.
//!
//! [`CompactViews`] puts a [`CompactViewsExec`] above every scan and every
//! join whose output has view columns. It copies a column's long strings
//! (more than 12 bytes; shorter ones live in the view itself) into a buffer
//! of their own size when the buffers it holds are more than twice what
//! its rows use, the rule arrow's own batch coalescer applies, and passes
//! every other column as it is. Keys of twelve bytes or fewer (customer
//! ids, source ids, codes) are never copied at all, which is what makes
//! views faster than plain strings for the analytics rules.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::execution_plan::{
    CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

/// The physical optimizer rule (see the module).
#[derive(Debug, Default)]
pub struct CompactViews;

/// Whether `schema` has a top-level view column.
fn has_views(schema: &SchemaRef) -> bool {
    schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView))
}

/// A scan: a leaf, or Delta's scan over its Parquet leaf (which expects
/// that leaf as its child).
fn is_scan(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.children().is_empty() || plan.name() == "DeltaScanExec"
}

fn is_join(plan: &Arc<dyn ExecutionPlan>) -> bool {
    matches!(
        plan.name(),
        "HashJoinExec"
            | "SortMergeJoinExec"
            | "NestedLoopJoinExec"
            | "CrossJoinExec"
            | "SymmetricHashJoinExec"
            | "PiecewiseMergeJoinExec"
    )
}

fn compact(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if has_views(&plan.schema()) {
        Arc::new(CompactViewsExec::new(plan))
    } else {
        plan
    }
}

/// `node` with its scans' and joins' view columns compacted. A scan is
/// compacted by its parent (a scan alone at the top holds nothing), and
/// nothing inside a Delta scan is touched: it checks the shape of what it
/// wraps (a deletion vector's coalesce or union over its Parquet leaves).
/// Applied again, the rule changes nothing: a wrapper is kept as it is.
fn rewrite(node: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    if node.is::<CompactViewsExec>() || is_scan(&node) {
        return Ok(node);
    }
    let mut changed = false;
    let mut children = Vec::with_capacity(node.children().len());
    for child in node.children() {
        let new = if is_scan(child) {
            compact(child.clone())
        } else {
            rewrite(child.clone())?
        };
        changed |= !Arc::ptr_eq(&new, child);
        children.push(new);
    }
    let node = if changed {
        node.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?
    } else {
        node
    };
    Ok(if is_join(&node) { compact(node) } else { node })
}

impl datafusion::physical_optimizer::PhysicalOptimizerRule for CompactViews {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        rewrite(plan)
    }

    fn name(&self) -> &str {
        "custlake_compact_views"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Copies sparse view columns into buffers of their own size (see the
/// module); every other column, and the batch's rows, pass unchanged.
#[derive(Debug)]
pub struct CompactViewsExec {
    input: Arc<dyn ExecutionPlan>,
    metrics: ExecutionPlanMetricsSet,
}

impl CompactViewsExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            input,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for CompactViewsExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CompactViewsExec")
    }
}

impl ExecutionPlan for CompactViewsExec {
    fn name(&self) -> &str {
        "CompactViewsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "CompactViewsExec takes one child, not {}",
                children.len()
            )));
        }
        Ok(Arc::new(Self::new(children.swap_remove(0))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let stream = input.map(move |batch| {
            let batch = batch?;
            let timer = baseline.elapsed_compute().timer();
            let batch = compact_batch(batch)?;
            timer.done();
            baseline.record_output(batch.num_rows());
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn child_stats_requests(
        &self,
        partition: Option<usize>,
    ) -> Vec<datafusion::physical_plan::statistics::ChildStats> {
        vec![datafusion::physical_plan::statistics::ChildStats::At(
            partition,
        )]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<datafusion::common::Statistics>],
        _args: &datafusion::physical_plan::statistics::StatisticsArgs,
    ) -> Result<Arc<datafusion::common::Statistics>> {
        Ok(Arc::clone(&input_stats[0]))
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }
}

/// `batch` with each sparse view column compacted.
pub fn compact_batch(batch: RecordBatch) -> Result<RecordBatch> {
    let mut changed = false;
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match compact_array(c) {
            Some(a) => {
                changed = true;
                a
            }
            None => c.clone(),
        })
        .collect();
    if !changed {
        return Ok(batch);
    }
    Ok(RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// `array` compacted, if it is a view array holding more than twice the
/// bytes its rows use.
fn compact_array(array: &ArrayRef) -> Option<ArrayRef> {
    use datafusion::arrow::array::GenericByteViewArray;
    use datafusion::arrow::datatypes::ByteViewType;
    fn sparse<T: ByteViewType + ?Sized>(a: &GenericByteViewArray<T>) -> Option<ArrayRef> {
        let held: usize = a.data_buffers().iter().map(|b| b.capacity()).sum();
        let used = a.total_buffer_bytes_used();
        (held > 0 && held > used.saturating_mul(2)).then(|| Arc::new(a.gc()) as ArrayRef)
    }
    match array.data_type() {
        DataType::Utf8View => sparse(array.as_string_view()),
        DataType::BinaryView => sparse(array.as_binary_view()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringViewArray;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn held(a: &ArrayRef) -> usize {
        a.as_string_view()
            .data_buffers()
            .iter()
            .map(|b| b.capacity())
            .sum()
    }

    #[test]
    fn a_slice_of_long_strings_keeps_only_its_own_bytes() {
        let long: Vec<String> = (0..1000)
            .map(|i| format!("a long customer name {i:06}"))
            .collect();
        let all: ArrayRef = Arc::new(StringViewArray::from_iter_values(long.iter()));
        let few = all.slice(10, 5);
        let schema = Arc::new(Schema::new(vec![Field::new(
            "name",
            DataType::Utf8View,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![few.clone()]).unwrap();
        let out = compact_batch(batch).unwrap();
        let col = out.column(0);
        assert!(held(&few) >= 1000 * 20, "the slice shares the whole buffer");
        assert!(
            held(col) < 200,
            "compacted to its five strings: {}",
            held(col)
        );
        assert_eq!(col.as_string_view().value(0), long[10]);
        assert_eq!(col.as_string_view().value(4), long[14]);
    }

    #[test]
    fn short_strings_and_dense_columns_pass_unchanged() {
        let ids: ArrayRef = Arc::new(StringViewArray::from_iter_values(
            (0..100).map(|i| format!("CU{i:010}")),
        ));
        // As compacted: buffers of exactly the bytes used.
        let names: ArrayRef = Arc::new(
            StringViewArray::from_iter_values((0..100).map(|i| format!("a name long enough {i}")))
                .gc(),
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8View, false),
            Field::new("name", DataType::Utf8View, false),
        ]));
        let batch = RecordBatch::try_new(schema, vec![ids.clone(), names.clone()]).unwrap();
        let out = compact_batch(batch).unwrap();
        assert!(Arc::ptr_eq(out.column(0), &ids));
        assert!(Arc::ptr_eq(out.column(1), &names));
    }

    /// A join's output rows point into its whole build side; sorted, they
    /// were counted at the build side's size once per batch.
    async fn sort_spills(compacted: bool) -> datafusion::error::Result<usize> {
        use datafusion::arrow::array::Int64Array;
        use datafusion::datasource::MemTable;
        use datafusion::execution::SessionStateBuilder;
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        use datafusion::prelude::SessionContext;

        // Build side: 100,000 names of 48 bytes (4.8 MB of text); the
        // probe side matches 40,000 of them.
        let names = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("name", DataType::Utf8View, false),
        ]));
        let build = RecordBatch::try_new(
            names.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..100_000)),
                Arc::new(StringViewArray::from_iter_values(
                    (0..100_000).map(|i| format!("customer name long enough to leave {i:012}")),
                )),
            ],
        )
        .unwrap();
        let keys = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let probe: Vec<RecordBatch> = (0..5)
            .map(|b| {
                RecordBatch::try_new(
                    keys.clone(),
                    vec![Arc::new(Int64Array::from_iter_values(
                        (0..8_000).map(move |i| (b * 8_000 + i) * 2),
                    ))],
                )
                .unwrap()
            })
            .collect();
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(24 * 1024 * 1024)))
            .build_arc()
            .unwrap();
        // The names are the build side, as written.
        let config = crate::lake::session::session_config(1)
            .set_bool("datafusion.optimizer.join_reordering", false);
        let ctx = if compacted {
            crate::lake::session::delta_context(config, runtime)
        } else {
            SessionContext::new_with_state(
                SessionStateBuilder::new()
                    .with_default_features()
                    .with_config(config)
                    .with_runtime_env(runtime)
                    .build(),
            )
        };
        ctx.register_table(
            "names",
            Arc::new(MemTable::try_new(names, vec![vec![build]]).unwrap()),
        )
        .unwrap();
        ctx.register_table(
            "keys",
            Arc::new(MemTable::try_new(keys, vec![probe]).unwrap()),
        )
        .unwrap();
        let df = ctx
            .sql("SELECT n.name FROM names n JOIN keys p ON n.k = p.k ORDER BY n.name DESC")
            .await
            .unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        if compacted {
            // Applied again, the rule changes nothing.
            use datafusion::physical_optimizer::PhysicalOptimizerRule;
            use datafusion::physical_plan::displayable;
            let again = CompactViews
                .optimize(plan.clone(), &datafusion::config::ConfigOptions::default())
                .unwrap();
            let shown = displayable(plan.as_ref()).indent(false).to_string();
            assert_eq!(displayable(again.as_ref()).indent(false).to_string(), shown);
            assert!(shown.contains("CompactViewsExec"), "{shown}");
        }
        let task = ctx.task_ctx();
        let rows: usize = datafusion::physical_plan::collect(plan.clone(), task)
            .await?
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 40_000);
        use datafusion::common::tree_node::TreeNode;
        let mut spills = 0;
        plan.apply(|node| {
            if let Some(m) = node.metrics() {
                spills += m.spill_count().unwrap_or(0);
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        Ok(spills)
    }

    #[tokio::test]
    async fn a_sorted_join_of_text_views_is_counted_at_what_it_holds() {
        // 40,000 names of 48 bytes are under 2 MB. Counted at the build
        // side's 4.8 MB per batch they were 84 MB, more than the pool.
        let err = sort_spills(false).await.unwrap_err().to_string();
        assert!(err.contains("Not enough memory"), "{err}");
        assert_eq!(
            sort_spills(true).await.unwrap(),
            0,
            "compacted, the sort fits in memory"
        );
    }
}
