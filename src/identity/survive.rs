//! Survivorship: each golden field from the most trusted source with a
//! value (source priority per field, then the most recently updated
//! record), remembering which record supplied it.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use serde_json::json;

use super::IdentityError;
use super::ids::Known;
use super::load::{Loaded, collect, register, utf8};
use super::resolve::GOLDEN;
use crate::lake::Lake;
use crate::schema::Catalog;
use crate::schema::row::{BatchBuilder, Cell};
use crate::schema::rules::Rules;

fn fnv_hex(parts: &[String]) -> String {
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    format!("{:016x}", crate::domain::fnv(&refs))
}

/// Golden rows for the clusters whose content changed (or that are new).
pub(crate) fn golden(
    rules: &Rules,
    catalog: &Catalog,
    l: &Loaded,
    clusters: &[Vec<u32>],
    ids: &[String],
    known: &HashMap<String, (Known, Option<String>)>,
    now: i64,
) -> Result<RecordBatch, IdentityError> {
    let def = catalog.table("customer")?;
    let mut cols = Vec::with_capacity(GOLDEN.len());
    for f in GOLDEN {
        let c = l
            .batch
            .column_by_name(f)
            .ok_or_else(|| IdentityError::Damaged(format!("source_customer has no column {f}")))?;
        let c = cast(c, &DataType::Utf8)?;
        cols.push(c.as_string::<i32>().clone());
    }
    let birth = {
        let c = l
            .batch
            .column_by_name("birth_date")
            .ok_or_else(|| IdentityError::Damaged("source_customer has no birth_date".into()))?;
        let c = cast(c, &DataType::Date32)?;
        c.as_primitive::<datafusion::arrow::datatypes::Date32Type>()
            .clone()
    };
    let together: HashMap<usize, usize> = [("id_type", "id_number")]
        .iter()
        .filter_map(|(follower, leader)| {
            Some((
                GOLDEN.iter().position(|g| g == follower)?,
                GOLDEN.iter().position(|g| g == leader)?,
            ))
        })
        .collect();
    // Per golden field, per system: rank (computed once per system).
    let mut ranks: HashMap<(usize, &str), usize> = HashMap::new();
    let mut builder = BatchBuilder::new(def, false);
    for (members, id) in clusters.iter().zip(ids) {
        let mut chosen: Vec<Option<u32>> = vec![None; GOLDEN.len()];
        for (f, name) in GOLDEN.iter().enumerate() {
            if together.contains_key(&f) {
                continue;
            }
            let mut best: Option<(usize, i64, u32)> = None;
            for &m in members {
                let i = m as usize;
                if !cols[f].is_valid(i) || cols[f].value(i).is_empty() {
                    continue;
                }
                let sys = l.system.value(i);
                let rank = *ranks
                    .entry((f, sys))
                    .or_insert_with(|| rules.survivorship.rank(name, sys));
                let recency = -(l.updated[i].or(l.ingested[i]).unwrap_or(0));
                if best.is_none_or(|(r, t, _)| (rank, recency) < (r, t)) {
                    best = Some((rank, recency, m));
                }
            }
            chosen[f] = best.map(|b| b.2);
        }
        for (&follower, &leader) in &together {
            chosen[follower] = chosen[leader].filter(|&m| cols[follower].is_valid(m as usize));
        }
        let mut values: HashMap<&str, Cell> = HashMap::new();
        let mut sources = serde_json::Map::new();
        let mut fp = Vec::with_capacity(GOLDEN.len() * 2);
        for (f, name) in GOLDEN.iter().enumerate() {
            let Some(m) = chosen[f] else {
                fp.push(String::new());
                continue;
            };
            let i = m as usize;
            let cell = if *name == "birth_date" {
                Cell::Date(birth.value(i))
            } else {
                Cell::Str(cols[f].value(i).to_string())
            };
            fp.push(format!("{cell:?}"));
            let key = &l.data.keys[i];
            fp.push(key.clone());
            sources.insert((*name).to_string(), json!(key));
            values.insert(name, cell);
        }
        let fingerprint = fnv_hex(&fp);
        let prior = known.get(id);
        if let Some((k, Some(old))) = prior
            && k.active
            && *old == fingerprint
        {
            continue;
        }
        let province = match values.get("address") {
            Some(Cell::Str(a)) => a
                .split('|')
                .next()
                .filter(|p| !p.is_empty())
                .map_or(Cell::Null, |p| Cell::Str(p.to_string())),
            _ => Cell::Null,
        };
        let row: Vec<Cell> = def
            .fields
            .iter()
            .map(|f| match f.name.as_str() {
                "customer_id" => Cell::Str(id.clone()),
                "province" => province.clone(),
                "status" => Cell::Str("active".into()),
                "merged_into" => Cell::Null,
                "survivorship" => Cell::Str(serde_json::Value::Object(sources.clone()).to_string()),
                "created_at" => Cell::Ts(prior.map_or(now, |(k, _)| k.created_at)),
                "updated_at" => Cell::Ts(now),
                "fingerprint" => Cell::Str(fingerprint.clone()),
                other => values.remove(other).unwrap_or(Cell::Null),
            })
            .collect();
        builder.push(&row, None);
    }
    builder.finish().map_err(IdentityError::from)
}

/// Mark retired customers (and those already pointing at them) as merged
/// into the final survivor.
pub(crate) async fn retire(
    lake: &Lake,
    catalog: &Catalog,
    retired: &[(String, String)],
    now: i64,
) -> Result<(), IdentityError> {
    if retired.is_empty() {
        return Ok(());
    }
    let into: HashMap<&str, &str> = retired
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let last = |start: &str| -> String {
        let mut id = start.to_string();
        for _ in 0..64 {
            match into.get(id.as_str()) {
                Some(next) => id = (*next).to_string(),
                None => break,
            }
        }
        id
    };
    let ctx = crate::lake::session::write_context();
    register(&ctx, lake, catalog, &["customer"]).await?;
    let gone: Vec<String> = retired.iter().map(|(a, _)| a.clone()).collect();
    ctx.register_batch("__gone", super::ids_batch(&gone)?)?;
    let Some(b) = collect(
        &ctx,
        "SELECT c.* FROM customer c WHERE c.customer_id IN (SELECT id FROM __gone) \
         OR c.merged_into IN (SELECT id FROM __gone)",
    )
    .await?
    else {
        return Ok(());
    };
    let id = utf8(&b, "customer_id")?;
    let merged = utf8(&b, "merged_into")?;
    let target: Vec<String> = (0..b.num_rows())
        .map(|i| {
            if into.contains_key(id.value(i)) {
                last(id.value(i))
            } else {
                last(merged.value(i))
            }
        })
        .collect();
    let def = catalog.table("customer")?;
    let mut columns: Vec<ArrayRef> = Vec::new();
    for f in &def.fields {
        let c = b
            .column_by_name(&f.name)
            .ok_or_else(|| IdentityError::Damaged(format!("customer has no column {}", f.name)))?
            .clone();
        columns.push(match f.name.as_str() {
            "status" => Arc::new(StringArray::from(vec!["retired"; b.num_rows()])),
            "merged_into" => Arc::new(StringArray::from(target.clone())),
            "updated_at" => {
                let a = datafusion::arrow::array::TimestampMicrosecondArray::from(vec![
                    now;
                    b.num_rows()
                ])
                .with_timezone("UTC");
                cast(&a, c.data_type())?
            }
            _ => c,
        });
    }
    let batch = RecordBatch::try_new(def.arrow_schema(), {
        let schema = def.arrow_schema();
        columns
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| cast(&c, f.data_type()))
            .collect::<Result<Vec<_>, _>>()?
    })?;
    super::upsert_batch(lake, catalog, &ctx, "customer", batch).await
}
