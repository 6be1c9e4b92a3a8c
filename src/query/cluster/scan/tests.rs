//! How a tier scan's files are cut into slices and read.

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::datasource::physical_plan::ParquetSource;
use datafusion::execution::object_store::ObjectStoreUrl;

use super::*;

fn file(path: &str, range: Option<(i64, i64)>, id: &str) -> PartitionedFile {
    let mut f = PartitionedFile::new(path, 100);
    if let Some((a, b)) = range {
        f = f.with_range(a, b);
    }
    f.partition_values = vec![ScalarValue::from(id)];
    f
}

fn scan(groups: Vec<Vec<PartitionedFile>>) -> Arc<dyn ExecutionPlan> {
    let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
    let source = Arc::new(ParquetSource::new(schema));
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
        .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
        .build();
    DataSourceExec::from_data_source(config)
}

fn files_of(plan: &Arc<dyn ExecutionPlan>) -> Vec<Vec<PartitionedFile>> {
    let config = file_scan(plan.as_ref()).unwrap();
    config
        .file_groups
        .iter()
        .map(|g| g.files().to_vec())
        .collect()
}

#[test]
fn a_partition_reads_its_slices_as_the_scan_planned_their_files() {
    let plan = scan(vec![
        vec![
            file("t/a.parquet", Some((0, 50)), "1"),
            file("t/b.parquet", None, "2"),
        ],
        vec![file("t/a.parquet", Some((50, 100)), "1")],
    ]);
    let slice = |path: &str, range| Slice {
        part: 4,
        path: path.into(),
        size: 100,
        range,
    };
    assert_eq!(
        groups_of(&plan, 4),
        Some(vec![
            vec![
                slice("t/a.parquet", Some((0, 50))),
                slice("t/b.parquet", None)
            ],
            vec![slice("t/a.parquet", Some((50, 100)))],
        ])
    );
    let wanted = [
        slice("t/a.parquet", Some((50, 100))),
        slice("t/b.parquet", None),
    ];
    let only = reading(&plan, &wanted.iter().collect::<Vec<_>>()).unwrap();
    let files = files_of(&only);
    assert_eq!(files.len(), 1);
    let got: Vec<_> = files[0]
        .iter()
        .map(|f| {
            (
                f.object_meta.location.to_string(),
                f.range.as_ref().map(|r| (r.start, r.end)),
                f.partition_values.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "t/a.parquet".to_string(),
                Some((50, 100)),
                vec![ScalarValue::from("1")]
            ),
            (
                "t/b.parquet".to_string(),
                None,
                vec![ScalarValue::from("2")]
            ),
        ]
    );
    // A file the table version does not hold is an error, not a
    // silently smaller answer.
    let stray = [slice("t/c.parquet", None)];
    let err = reading(&plan, &stray.iter().collect::<Vec<_>>()).unwrap_err();
    assert!(err.to_string().contains("t/c.parquet"), "{err}");
    // No file scan to list: read whole.
    let empty: Arc<dyn ExecutionPlan> = Arc::new(datafusion::physical_plan::empty::EmptyExec::new(
        plan.schema(),
    ));
    assert_eq!(groups_of(&empty, 0), None);
}
