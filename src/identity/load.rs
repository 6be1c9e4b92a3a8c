//! Reading the identity tables: source records with their previous links,
//! the customers the lake knows, and the small helpers every reader uses.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use super::IdentityError;
use super::engine::{Dataset, StrColumn};
use super::ids::Known;
use crate::lake::Lake;
use crate::schema::Catalog;
use crate::schema::rules::Rules;

pub(crate) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn missing(name: &str) -> IdentityError {
    IdentityError::Damaged(format!("column {name} is missing"))
}

fn mistyped(name: &str, e: datafusion::arrow::error::ArrowError) -> IdentityError {
    IdentityError::Damaged(format!("column {name} has an unexpected type: {e}"))
}

/// Register the identity tables that exist; true when `name` exists.
pub(crate) async fn register(
    ctx: &SessionContext,
    lake: &Lake,
    catalog: &Catalog,
    names: &[&str],
) -> Result<Vec<String>, IdentityError> {
    let mut found = Vec::new();
    for name in names {
        let def = catalog.table(name)?;
        if let Some(table) = lake.open(def).await? {
            table.update_datafusion_session(&ctx.state())?;
            let provider = table.table_provider().await?;
            ctx.register_table(*name, provider)
                .map_err(|e| DataFusionError::Context(format!("table {name}"), Box::new(e)))?;
            found.push(name.to_string());
        }
    }
    Ok(found)
}

pub(crate) async fn collect(
    ctx: &SessionContext,
    sql: &str,
) -> Result<Option<RecordBatch>, IdentityError> {
    let df = ctx.sql(sql).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(None);
    }
    Ok(Some(concat_batches(&schema, &batches)?))
}

pub(crate) fn utf8(batch: &RecordBatch, name: &str) -> Result<StringArray, IdentityError> {
    let col = batch.column_by_name(name).ok_or_else(|| missing(name))?;
    let c = cast(col, &DataType::Utf8).map_err(|e| mistyped(name, e))?;
    Ok(c.as_string::<i32>().clone())
}

pub(crate) fn micros(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, IdentityError> {
    let col = batch.column_by_name(name).ok_or_else(|| missing(name))?;
    let c = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))
        .and_then(|c| cast(&c, &DataType::Int64))
        .map_err(|e| mistyped(name, e))?;
    let a = c.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect())
}

pub(crate) fn opt(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i)).filter(|s| !s.is_empty())
}

/// Source records, sorted by key, with their previous links.
pub(crate) struct Loaded {
    pub data: Dataset,
    pub batch: RecordBatch,
    pub system: StringArray,
    pub old_id: StringArray,
    pub old_rule: StringArray,
    pub old_by: StringArray,
    pub old_ingested: Vec<Option<i64>>,
    pub old_keys: StringArray,
    pub ingested: Vec<Option<i64>>,
    pub updated: Vec<Option<i64>>,
}

/// Where a load takes the records' previous links from.
pub(crate) enum Links<'a> {
    /// There are none yet.
    None,
    /// Joined from `customer_xref`.
    Join,
    /// Already read, by record key (an incremental run's scope).
    Known(&'a HashMap<String, super::scope::OldLink>),
}

/// Load the source records `filter` keeps (a clause after `FROM
/// source_customer s ...`, which may join and filter); `None` when none.
pub(crate) async fn load_records(
    ctx: &SessionContext,
    rules: &Rules,
    links: Links<'_>,
    filter: &str,
) -> Result<Option<Loaded>, IdentityError> {
    let sql = if matches!(links, Links::Join) {
        format!(
            "SELECT s.*, x.customer_id AS __old_id, x.rule AS __old_rule, x.linked_by AS __old_by, \
             x.source_ingested_at AS __old_ingested, x.match_keys AS __old_keys \
             FROM source_customer s LEFT JOIN customer_xref x \
             ON s.source_system = x.source_system AND s.source_id = x.source_id {filter}"
        )
    } else {
        format!(
            "SELECT s.*, CAST(NULL AS VARCHAR) AS __old_id, CAST(NULL AS VARCHAR) AS __old_rule, \
             CAST(NULL AS VARCHAR) AS __old_by, CAST(NULL AS TIMESTAMP) AS __old_ingested, \
             CAST(NULL AS VARCHAR) AS __old_keys FROM source_customer s {filter}"
        )
    };
    let Some(batch) = collect(ctx, &sql).await? else {
        return Ok(None);
    };
    let system = utf8(&batch, "source_system")?;
    let id = utf8(&batch, "source_id")?;
    let keys: Vec<String> = (0..batch.num_rows())
        .map(|i| format!("{}:{}", system.value(i), id.value(i)))
        .collect();
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    order.sort_unstable_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]));
    let idx = datafusion::arrow::array::UInt32Array::from(order.clone());
    let batch = take_record_batch(&batch, &idx)?;
    let mut sorted_keys = Vec::with_capacity(keys.len());
    let mut keys = keys.into_iter().map(Some).collect::<Vec<_>>();
    for &o in &order {
        sorted_keys.push(keys[o as usize].take().unwrap_or_default());
    }
    let n = batch.num_rows();
    let mut cols = Vec::with_capacity(rules.fields.len());
    for (f, norms) in rules.fields.iter().zip(&rules.normalize) {
        let mut col = StrColumn::with_capacity(n);
        if batch.column_by_name(f).is_none() {
            return Err(IdentityError::RulesMismatch(format!(
                "the rules use field {f}, which source_customer does not have"
            )));
        }
        let a = utf8(&batch, f)?;
        for i in 0..n {
            match opt(&a, i) {
                Some(v) if !norms.is_empty() => {
                    let v = norms.iter().fold(v.to_string(), |v, nm| nm.apply(&v));
                    col.push(Some(&v));
                }
                v => col.push(v),
            }
        }
        cols.push(col);
    }
    let (old_id, old_rule, old_by, old_ingested, old_keys) = match links {
        Links::Known(old) => {
            let get = |k: &String| old.get(k);
            let text = |f: fn(&super::scope::OldLink) -> &str| {
                sorted_keys
                    .iter()
                    .map(|k| get(k).map(f))
                    .collect::<StringArray>()
            };
            (
                text(|o| &o.customer_id),
                text(|o| &o.rule),
                text(|o| &o.linked_by),
                sorted_keys
                    .iter()
                    .map(|k| get(k).and_then(|o| o.ingested))
                    .collect(),
                text(|o| &o.match_keys),
            )
        }
        _ => (
            utf8(&batch, "__old_id")?,
            utf8(&batch, "__old_rule")?,
            utf8(&batch, "__old_by")?,
            micros(&batch, "__old_ingested")?,
            utf8(&batch, "__old_keys")?,
        ),
    };
    Ok(Some(Loaded {
        data: Dataset {
            keys: sorted_keys,
            cols,
        },
        system: utf8(&batch, "source_system")?,
        old_id,
        old_rule,
        old_by,
        old_ingested,
        old_keys,
        ingested: micros(&batch, "ingested_at")?,
        updated: micros(&batch, "updated_at")?,
        batch,
    }))
}

/// What the lake knows of customers: every one, or (`only`) those ids.
pub(crate) async fn load_known(
    ctx: &SessionContext,
    have: bool,
    only: Option<Vec<String>>,
) -> Result<HashMap<String, (Known, Option<String>)>, IdentityError> {
    let mut out = HashMap::new();
    if !have {
        return Ok(out);
    }
    let sql = match only {
        None => "SELECT customer_id, created_at, status, fingerprint FROM customer",
        Some(ids) => {
            let batch = super::ids_batch(&ids)?;
            let _ = ctx.deregister_table("__ids");
            ctx.register_batch("__ids", batch)?;
            "SELECT c.customer_id, c.created_at, c.status, c.fingerprint FROM customer c \
             JOIN __ids i ON c.customer_id = i.id"
        }
    };
    if let Some(b) = collect(ctx, sql).await? {
        let id = utf8(&b, "customer_id")?;
        let status = utf8(&b, "status")?;
        let fp = utf8(&b, "fingerprint")?;
        let created = micros(&b, "created_at")?;
        for (i, created) in created.iter().enumerate() {
            out.insert(
                id.value(i).to_string(),
                (
                    Known {
                        created_at: created.unwrap_or(0),
                        active: status.value(i) == "active",
                    },
                    opt(&fp, i).map(str::to_string),
                ),
            );
        }
    }
    Ok(out)
}
