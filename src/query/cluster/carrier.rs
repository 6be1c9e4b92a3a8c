//! A tier scan as the scheduler holds it: a DataFusion file scan whose file
//! groups are the tier scan's partitions (each file, or byte range of one,
//! tagged with its tier), so that Ballista cuts a stage's tier scans into
//! tasks as it cuts its own file scans. It only travels: the scheduler's
//! codec turns each task's cut back into the tier scan of the task's
//! groups ([`carried`]), which the executor runs. Nothing reads it where it
//! is: opening one is an error that says so.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileGroup, FileOpener, FileScanConfig, FileScanConfigBuilder, FileSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use object_store::ObjectMeta;
use object_store::path::Path;

use super::scan::{Part, Slice, file_scan};

/// The tier scan's parts and statistics; its files are the file scan's.
#[derive(Debug, Clone)]
pub(super) struct TierSource {
    parts: Vec<Part>,
    statistics: Arc<Statistics>,
    table_schema: TableSchema,
    metrics: ExecutionPlanMetricsSet,
}

/// The part (tier) a carried file belongs to, kept through Ballista's cut
/// as the file's extension.
#[derive(Debug)]
struct OfPart(usize);

/// The file scan that carries a tier scan of `parts` whose partitions
/// read `groups`.
pub(super) fn carry(
    parts: Vec<Part>,
    schema: SchemaRef,
    statistics: Statistics,
    groups: Vec<Vec<Slice>>,
    fetch: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let statistics = Arc::new(statistics);
    let source = TierSource {
        parts,
        statistics: statistics.clone(),
        table_schema: TableSchema::from(schema),
        metrics: ExecutionPlanMetricsSet::new(),
    };
    let groups = groups
        .into_iter()
        .map(|g| {
            g.into_iter()
                .map(|s| {
                    // The path as stored (already encoded: building it
                    // from a string would encode its `%` again).
                    let location = Path::parse(&s.path).map_err(|e| {
                        DataFusionError::Internal(format!("a tier scan's file {}: {e}", s.path))
                    })?;
                    let mut f = PartitionedFile::new_from_meta(ObjectMeta {
                        location,
                        last_modified: Default::default(),
                        size: s.size,
                        e_tag: None,
                        version: None,
                    });
                    if let Some((start, end)) = s.range {
                        f = f.with_range(start, end);
                    }
                    f.extensions.insert(OfPart(s.part));
                    Ok(f)
                })
                .collect::<Result<Vec<_>>>()
                .map(FileGroup::new)
        })
        .collect::<Result<Vec<_>>>()?;
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
        .with_file_groups(groups)
        .with_statistics((*statistics).clone())
        .with_limit(fetch)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// What a tier scan's carrier holds, as Ballista cut it: its parts,
/// statistics, the groups left and the limit pushed into it; `None` for
/// any other plan.
pub(super) fn carried(plan: &dyn ExecutionPlan) -> Option<Result<Carried<'_>>> {
    let config = file_scan(plan)?;
    let source = config.file_source().downcast_ref::<TierSource>()?;
    let groups = config
        .file_groups
        .iter()
        .map(|g| {
            g.iter()
                .map(|f| {
                    let part = f.extensions.get::<OfPart>().ok_or_else(|| {
                        DataFusionError::Internal(format!(
                            "a tier scan's file {} lost its tier",
                            f.object_meta.location
                        ))
                    })?;
                    Ok(Slice::of(part.0, f))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>();
    Some(groups.map(|groups| Carried {
        parts: &source.parts,
        statistics: &source.statistics,
        groups,
        fetch: config.limit,
    }))
}

/// A tier scan's carrier, read back.
pub(super) struct Carried<'a> {
    pub parts: &'a [Part],
    pub statistics: &'a Statistics,
    pub groups: Vec<Vec<Slice>>,
    pub fetch: Option<usize>,
}

impl FileSource for TierSource {
    fn create_file_opener(
        &self,
        _: Arc<dyn object_store::ObjectStore>,
        _: &FileScanConfig,
        _: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        Err(DataFusionError::Internal(
            "a tier scan is read on the executors; this process only passes it on".into(),
        ))
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, _: usize) -> Arc<dyn FileSource> {
        Arc::new(self.clone())
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        "tier scan"
    }

    /// Its groups are the tier scan's partitions, as planned.
    fn supports_repartitioning(&self) -> bool {
        false
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::ExecutionPlanProperties;

    use super::*;
    use crate::lake::Tier;
    use crate::query::cluster::scan::ScanSpec;

    fn part(tier: Tier) -> Part {
        Part {
            spec: ScanSpec {
                table: "policy".into(),
                tier,
                version: 3,
                projection: None,
                limit: None,
            },
            filters: vec![],
        }
    }

    fn slice(part: usize, path: &str, range: Option<(i64, i64)>) -> Slice {
        Slice {
            part,
            path: path.into(),
            size: 100,
            range,
        }
    }

    #[test]
    fn ballista_cuts_a_carried_tier_scan_into_the_groups_of_a_task() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let groups = vec![
            vec![
                slice(0, "hot/policy/a.parquet", Some((0, 50))),
                slice(1, "warm/policy/b.parquet", None),
            ],
            vec![slice(
                0,
                "hot/policy/month=2026%2006/a.parquet",
                Some((50, 100)),
            )],
            vec![],
        ];
        let plan = carry(
            vec![part(Tier::Hot), part(Tier::Warm)],
            schema.clone(),
            Statistics::new_unknown(&schema),
            groups.clone(),
            None,
        )
        .unwrap();
        assert_eq!(plan.output_partitioning().partition_count(), 3);
        // As the scheduler prepares a task of partitions 0 and 2.
        let cut = ballista_scheduler::state::task_builder::restrict_plan_to_partitions(
            plan.clone(),
            &[0, 2],
        )
        .unwrap();
        assert_eq!(cut.output_partitioning().partition_count(), 2);
        let c = carried(cut.as_ref()).unwrap().unwrap();
        assert_eq!(c.groups, vec![groups[0].clone(), groups[2].clone()]);
        // A path as stored (encoded) comes back as it went.
        let cut = ballista_scheduler::state::task_builder::restrict_plan_to_partitions(plan, &[1])
            .unwrap();
        let c = carried(cut.as_ref()).unwrap().unwrap();
        assert_eq!(c.groups, vec![groups[1].clone()]);
        assert_eq!(c.parts, &[part(Tier::Hot), part(Tier::Warm)][..]);
        assert_eq!(c.fetch, None);
        // Nothing reads it where it is.
        let ctx = datafusion::prelude::SessionContext::new();
        let err = cut.execute(0, ctx.task_ctx()).err().unwrap();
        assert!(err.to_string().contains("read on the executors"), "{err}");
    }
}
