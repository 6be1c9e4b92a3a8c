//! Parts of a plan that one task runs whole.
//!
//! Ballista cuts a stage into tasks, each running some of the stage's
//! partitions, and cuts the stage's leaves down to those partitions. It
//! knows how for its shuffle readers and DataFusion's file and memory
//! scans, and the scheduler shows it a table's tier scans as a file scan
//! (see `scan`); a secured view, and a tier scan whose files cannot be
//! listed, are one partition each for that reason. A union maps its
//! partitions onto its inputs' one after another, so a union over such a
//! leaf in a stage of several tasks would send a task to the wrong input.
//! Such a union runs in one task: [`OneTaskExec`] holds it as a leaf of
//! one partition, its inputs' partitions run on the executor's threads.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};

use super::TierScanExec;
use crate::security::FencedExec;

/// A plan run whole by one task, as a leaf of one partition.
#[derive(Debug)]
pub struct OneTaskExec {
    inner: Arc<dyn ExecutionPlan>,
}

impl OneTaskExec {
    /// `plan` in one partition (its partitions merged).
    pub fn new(plan: Arc<dyn ExecutionPlan>) -> Self {
        let inner: Arc<dyn ExecutionPlan> = if plan.output_partitioning().partition_count() > 1 {
            Arc::new(CoalescePartitionsExec::new(plan))
        } else {
            plan
        };
        Self { inner }
    }

    /// The plan, as a codec decodes it (already one partition).
    pub fn decoded(inner: Arc<dyn ExecutionPlan>) -> Self {
        Self::new(inner)
    }

    pub fn inner(&self) -> &Arc<dyn ExecutionPlan> {
        &self.inner
    }
}

/// Whether `plan` holds, in the same stage (above the next shuffle), a
/// leaf Ballista cannot cut into tasks.
fn holds_uncut_leaf(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(scan) = plan.downcast_ref::<TierScanExec>() {
        return !scan.cut_by_files();
    }
    if plan.is::<FencedExec>() || plan.is::<OneTaskExec>() {
        return true;
    }
    if plan.is::<RepartitionExec>()
        || plan.is::<CoalescePartitionsExec>()
        || plan.is::<SortPreservingMergeExec>()
    {
        return false;
    }
    plan.children().into_iter().any(holds_uncut_leaf)
}

/// `plan` with every union over a leaf Ballista cannot cut run by one task.
pub(super) fn unions_in_one_task(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.is::<UnionExec>()
            && node.output_partitioning().partition_count() > 1
            && node.children().into_iter().any(holds_uncut_leaf)
        {
            return Ok(Transformed::yes(
                Arc::new(OneTaskExec::new(node)) as Arc<dyn ExecutionPlan>
            ));
        }
        Ok(Transformed::no(node))
    })
    .data()
}

impl DisplayAs for OneTaskExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OneTaskExec")?;
        if matches!(t, DisplayFormatType::Verbose) {
            write!(f, " [{}]", super::scan::one_line(self.inner.as_ref()))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for OneTaskExec {
    fn name(&self) -> &str {
        "OneTaskExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    opaque_leaf!();

    fn statistics_from_inputs(
        &self,
        _: &[Arc<datafusion::common::Statistics>],
        args: &datafusion::physical_plan::statistics::StatisticsArgs,
    ) -> Result<Arc<datafusion::common::Statistics>> {
        datafusion::physical_plan::statistics::StatisticsContext::new()
            .compute(self.inner.as_ref(), args)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }
}
