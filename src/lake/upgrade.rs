//! `custlake upgrade`: bring a lake written by an older custlake to the
//! current declarations, in place.
//!
//! One upgrade exists: `source_key`, the integer key of a source record
//! ([`crate::domain::source_key`]), added to `source_customer`,
//! `customer_xref` and every fact that names a source customer. A table
//! without it is refused when opened ([`super::LakeError::NeedsUpgrade`]),
//! so nothing reads or writes a half-upgraded lake. Each tier's part of a
//! table is rewritten in one commit, under the table's lease: its rows
//! stream from the current files through a bounded channel, each batch
//! gains the key computed from `source_system` and the id, and the new
//! files replace the old ones (which stay for time travel until the next
//! vacuum). A run that stops part way leaves every table either as it was
//! or upgraded; running it again upgrades the rest.

use std::num::NonZeroU64;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;

use super::{Lake, LakeError, Tier, delta_err};
use crate::progress::Unit;
use crate::schema::{Catalog, SOURCE_KEY, TableDef};

/// Whether a stored table lacks a column the upgrade adds.
pub fn needed(def: &TableDef, table: &DeltaTable) -> bool {
    def.source_key_of().is_some()
        && table
            .snapshot()
            .is_ok_and(|s| s.schema().field(SOURCE_KEY).is_none())
}

/// Refuse a stored table that lacks a column the upgrade adds.
pub(super) fn check(def: &TableDef, table: &DeltaTable) -> Result<(), LakeError> {
    if needed(def, table) {
        return Err(LakeError::NeedsUpgrade {
            table: def.name.clone(),
        });
    }
    Ok(())
}

/// What one table's part in one tier needs, or got.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Part {
    pub table: String,
    pub tier: &'static str,
    pub rows: u64,
    pub files: u64,
}

/// The parts of the lake's tables that need upgrading.
pub async fn plan(lake: &Lake, catalog: &Catalog) -> Result<Vec<Part>, LakeError> {
    let mut out = Vec::new();
    for def in catalog
        .tables
        .iter()
        .filter(|d| d.source_key_of().is_some())
    {
        for tier in Tier::ALL {
            let Some(table) = lake.open_stored(def, tier, None).await? else {
                continue;
            };
            if needed(def, &table) {
                let (rows, files) = size(&table);
                out.push(Part {
                    table: def.name.clone(),
                    tier: tier.name(),
                    rows,
                    files,
                });
            }
        }
    }
    Ok(out)
}

fn size(table: &DeltaTable) -> (u64, u64) {
    table.snapshot().map_or((0, 0), |s| {
        let files = s.log_data();
        let rows = files
            .iter()
            .map(|f| f.num_records().unwrap_or(0) as u64)
            .sum();
        (rows, files.num_files() as u64)
    })
}

/// Upgrade every part [`plan`] lists; returns the parts upgraded. A part
/// upgraded by another run meanwhile is left as it is.
pub async fn apply(lake: &Lake, catalog: &Catalog) -> Result<Vec<Part>, LakeError> {
    let parts = plan(lake, catalog).await?;
    let mut done = Vec::new();
    for part in parts {
        let def = catalog
            .table(&part.table)
            .map_err(|e| LakeError::Fault(e.to_string()))?;
        let tier: Tier = part.tier.parse().map_err(LakeError::Fault)?;
        let upgraded = super::lease::with_lease(lake, &def.name, "upgrade", async |_| {
            upgrade_part(lake, def, tier, &part).await
        })
        .await?;
        if upgraded {
            done.push(part);
        }
    }
    Ok(done)
}

/// Rewrite one tier's part of a table with its `source_key`, in one
/// commit. False when it needed nothing (any more).
async fn upgrade_part(
    lake: &Lake,
    def: &TableDef,
    tier: Tier,
    part: &Part,
) -> Result<bool, LakeError> {
    let name = &def.name;
    let err = |e: datafusion::error::DataFusionError| super::LakeError::query(name, e);
    let Some(table) = lake.open_stored(def, tier, None).await? else {
        return Ok(false);
    };
    if !needed(def, &table) {
        return Ok(false);
    }
    let id = def
        .source_key_of()
        .ok_or_else(|| LakeError::Fault(format!("{name} has no source_key")))?;
    let schema = def.arrow_schema();
    // Every declared column but the new one must be stored as declared.
    let stored = table
        .snapshot()
        .map_err(|e| delta_err(name, e))?
        .schema()
        .fields()
        .map(|f| f.name().to_string())
        .collect::<Vec<_>>();
    let old: Vec<String> = def
        .fields
        .iter()
        .filter(|f| f.name != SOURCE_KEY)
        .map(|f| f.name.clone())
        .collect();
    if stored != old {
        return Err(LakeError::SchemaMismatch {
            table: name.clone(),
            message: format!(
                "cannot add {SOURCE_KEY}: stored columns {stored:?}, expected {old:?} before the upgrade"
            ),
        });
    }
    let task = lake.progress().task(
        &format!("upgrading {name} ({})", tier.name()),
        Some(part.rows),
        Unit::Items("rows"),
    );
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);

    // Read the stored rows (in the order of their files) in a context of
    // its own.
    let read_ctx = super::session::delta_context(
        super::session::session_config(1),
        Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default()),
    );
    table
        .update_datafusion_session(&read_ctx.state())
        .map_err(|e| delta_err(name, e))?;
    let provider = table.table_provider().await.map_err(err)?;
    let columns: Vec<datafusion::prelude::Expr> = old
        .iter()
        .map(|c| datafusion::prelude::ident(c.as_str()))
        .collect();
    let rows = read_ctx
        .read_table(provider)
        .and_then(|df| df.select(columns))
        .map_err(err)?
        .execute_stream()
        .await
        .map_err(err)?;
    let (write_ctx, source, feed) = super::ordered_feed(schema.clone(), rows, {
        let def = def.clone();
        let id = id.to_string();
        let task = task.clone();
        move |b| {
            let out = with_key(&def, &schema, &id, &b)?;
            task.inc(b.num_rows() as u64);
            Ok(out)
        }
    })
    .map_err(err)?;
    let size = tier.settings(&lake.settings().tiers).target_file_mb.max(1) * 1024 * 1024;
    super::lease::check_held()?;
    let mut write = table
        .write(Vec::new())
        .with_input_plan(source.logical_plan().clone())
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
        .with_session_state(Arc::new(write_ctx.state()))
        .with_writer_properties(lake.writer_properties_in(def, tier))
        .with_target_file_size(NonZeroU64::new(size))
        .with_commit_properties(
            deltalake::kernel::transaction::CommitProperties::default().with_metadata([(
                "custlake.upgrade".to_string(),
                serde_json::json!(SOURCE_KEY),
            )]),
        );
    if let Some(p) = &def.partition {
        write = write.with_partition_columns([p.column.clone()]);
    }
    let written = write.await;
    feed.abort();
    let _ = feed.await;
    match written {
        Ok(_) => {
            task.finish();
            Ok(true)
        }
        Err(e) => {
            task.fail(&e.to_string());
            // The files of the write that did not commit.
            lake.remove_unreferenced_in(def, tier, started).await?;
            Err(delta_err(name, e))
        }
    }
}

/// `b` (the stored columns, in declared order) as a batch of `schema`:
/// each column in its declared type, and the source key computed from
/// `source_system` and `id`.
fn with_key(
    def: &TableDef,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    id: &str,
    b: &RecordBatch,
) -> datafusion::error::Result<RecordBatch> {
    let text = |c: &str| -> datafusion::error::Result<ArrayRef> {
        let i = b.schema().index_of(c)?;
        Ok(cast(b.column(i), &DataType::Utf8)?)
    };
    let (system, ids) = (text("source_system")?, text(id)?);
    let (system, ids) = (system.as_string::<i32>(), ids.as_string::<i32>());
    let keys: Int64Array = (0..b.num_rows())
        .map(|r| {
            (system.is_valid(r) && ids.is_valid(r))
                .then(|| crate::domain::source_key(system.value(r), ids.value(r)))
        })
        .collect();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, field) in def.fields.iter().zip(schema.fields()) {
        if f.name == SOURCE_KEY {
            columns.push(Arc::new(keys.clone()) as ArrayRef);
            continue;
        }
        let i = b.schema().index_of(&f.name)?;
        columns.push(cast(b.column(i), field.data_type())?);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
