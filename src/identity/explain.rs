//! Lineage of a golden customer: the golden record and where each field
//! came from, every source record with the rule and field scores that
//! linked it, open suspect groups, retired ids pointing at it, and the
//! decisions that shaped it.

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::{SessionContext, col, lit};
use serde_json::{Value, json};

use super::IdentityError;
use super::engine::{self, Dataset, Why};
use crate::lake::Lake;
use crate::schema::Catalog;
use crate::schema::rules::Rules;

fn rows(batches: &[RecordBatch]) -> Result<Vec<serde_json::Map<String, Value>>, IdentityError> {
    let mut out = Vec::new();
    let mut w = datafusion::arrow::json::ArrayWriter::new(&mut out);
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    drop(w);
    if out.is_empty() {
        return Ok(Vec::new());
    }
    let v: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(&out)?;
    Ok(v)
}

async fn select(
    ctx: &SessionContext,
    table: &str,
    filter: datafusion::prelude::Expr,
) -> Result<Vec<serde_json::Map<String, Value>>, IdentityError> {
    if !ctx.table_exist(table)? {
        return Ok(Vec::new());
    }
    let df = ctx.table(table).await?.filter(filter)?;
    rows(&df.collect().await?)
}

fn parse_json_fields(row: &mut serde_json::Map<String, Value>, fields: &[&str]) {
    for f in fields {
        if let Some(Value::String(s)) = row.get(*f)
            && let Ok(v) = serde_json::from_str::<Value>(s)
        {
            row.insert((*f).to_string(), v);
        }
    }
}

/// Everything known about how customer `id` (active or retired) came to be.
pub async fn lineage(lake: &Lake, catalog: &Catalog, id: &str) -> Result<Value, IdentityError> {
    lineage_in(&crate::lake::session::write_context(), lake, catalog, id).await
}

/// [`lineage`], read in `ctx` (the server's: on its shared memory pool).
pub async fn lineage_in(
    ctx: &SessionContext,
    lake: &Lake,
    catalog: &Catalog,
    id: &str,
) -> Result<Value, IdentityError> {
    let have = super::load::register(
        ctx,
        lake,
        catalog,
        &["customer", "customer_xref", "suspect_group", "merge_event"],
    )
    .await?;
    if !have.iter().any(|h| h == "customer") {
        return Err(IdentityError::NotFound(
            "no customers have been resolved yet: run `custlake resolve` first".into(),
        ));
    }
    lineage_of(ctx, id).await
}

/// [`lineage_in`] over the tables `ctx` already holds (a principal's
/// secured views: what the principal may not see is masked, filtered out
/// or left out, and a customer it may not see is not found).
pub async fn lineage_of(ctx: &SessionContext, id: &str) -> Result<Value, IdentityError> {
    if !ctx.table_exist("customer")? {
        return Err(IdentityError::NotFound(format!("no customer {id}")));
    }
    let mut path = vec![id.to_string()];
    let mut current = id.to_string();
    let golden = loop {
        let found = select(ctx, "customer", col("customer_id").eq(lit(current.clone()))).await?;
        let Some(row) = found.into_iter().next() else {
            return Err(IdentityError::NotFound(format!("no customer {current}")));
        };
        match (row.get("status"), row.get("merged_into")) {
            (Some(Value::String(s)), Some(Value::String(next)))
                if s == "retired" && path.len() < 64 =>
            {
                current = next.clone();
                path.push(current.clone());
            }
            _ => break row,
        }
    };
    let mut golden = golden;
    parse_json_fields(&mut golden, &["survivorship"]);
    let mut records = select(
        ctx,
        "customer_xref",
        col("customer_id").eq(lit(current.clone())),
    )
    .await?;
    for r in &mut records {
        parse_json_fields(r, &["detail"]);
    }
    records.sort_by_key(|r| {
        format!(
            "{}:{}",
            r.get("source_system").and_then(Value::as_str).unwrap_or(""),
            r.get("source_id").and_then(Value::as_str).unwrap_or("")
        )
    });
    let retired = select(ctx, "customer", col("merged_into").eq(lit(current.clone()))).await?;
    let retired: Vec<Value> = retired
        .iter()
        .filter_map(|r| r.get("customer_id").cloned())
        .collect();
    let mut suspects = select(
        ctx,
        "suspect_group",
        col("customer_id").eq(lit(current.clone())),
    )
    .await?;
    // Whole groups, not only this customer's rows.
    let groups: std::collections::BTreeSet<String> = suspects
        .iter()
        .filter_map(|r| {
            r.get("group_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    if !groups.is_empty() {
        let list = groups.iter().map(|g| lit(g.clone())).collect();
        suspects = select(ctx, "suspect_group", col("group_id").in_list(list, false)).await?;
    }
    for r in &mut suspects {
        parse_json_fields(r, &["detail"]);
    }
    let mut involved: Vec<String> = vec![current.clone()];
    involved.extend(
        retired
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string)),
    );
    involved.extend(path.iter().cloned());
    let events = events_of(ctx, &involved).await?;
    Ok(json!({
        "requested_id": id,
        "customer_id": current,
        "followed": path,
        "customer": golden,
        "records": records,
        "retired_ids": retired,
        "suspect_groups": suspects,
        "events": events,
    }))
}

/// The ledger events that name any of `involved`, in order. The filter
/// runs in the scan (a `LIKE` on the id list), so only matching events are
/// read into memory, not the whole ledger.
async fn events_of(ctx: &SessionContext, involved: &[String]) -> Result<Vec<Value>, IdentityError> {
    if !ctx.table_exist("merge_event")? || involved.is_empty() {
        return Ok(Vec::new());
    }
    let named = involved
        .iter()
        .map(|i| {
            col("customer_ids")
                .like(lit(format!("%\"{i}\"%")))
                .or(col("surviving_id").eq(lit(i.clone())))
        })
        .reduce(|a, b| a.or(b))
        .unwrap_or(lit(false));
    let mut events = Vec::new();
    for mut e in select(ctx, "merge_event", named).await? {
        let ids = e
            .get("customer_ids")
            .and_then(Value::as_str)
            .unwrap_or("[]")
            .to_string();
        let surviving = e.get("surviving_id").and_then(Value::as_str).unwrap_or("");
        // Exactly: an id inside the JSON list, or the survivor.
        if involved
            .iter()
            .any(|i| ids.contains(&format!("\"{i}\"")) || surviving == i)
        {
            parse_json_fields(&mut e, &["customer_ids", "records"]);
            events.push(Value::Object(e));
        }
    }
    events.sort_by_key(|e| {
        e.get("event_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    });
    Ok(events)
}

pub(crate) fn why_rule(rules: &Rules, why: &Why) -> String {
    match why {
        Why::Single => "single".into(),
        Why::Strong { profile, rule } => {
            let p = &rules.profiles[usize::from(*profile)];
            format!("{}.{}", p.name, p.strong[usize::from(*rule)].name)
        }
        Why::Scored { profile, .. } => {
            format!("{}.score", rules.profiles[usize::from(*profile)].name)
        }
        Why::Manual { kind, .. } => kind.rule().to_string(),
    }
}

/// Per-field similarities of a pair as JSON, and the pair's score.
pub(crate) fn explain_pair(
    rules: &Rules,
    data: &Dataset,
    profile: usize,
    a: usize,
    b: usize,
) -> (f64, String) {
    let p = &rules.profiles[profile];
    let (score, sims) = engine::score(p, data, a, b);
    let mut m = serde_json::Map::new();
    for (c, s) in p.compare.iter().zip(sims) {
        m.insert(
            rules.fields[c.field].clone(),
            s.map_or(serde_json::Value::Null, |s| {
                json!((s * 1000.0).round() / 1000.0)
            }),
        );
    }
    (score, serde_json::Value::Object(m).to_string())
}

/// Scores and per-field similarities of each record with its partner.
pub(crate) fn explain_all(
    rules: &Rules,
    data: &Dataset,
    rows: &[usize],
    partners: &[(Option<u32>, Option<u8>)],
    threads: usize,
) -> Vec<(f64, Option<String>)> {
    let one = |(&i, &(partner, profile)): (&usize, &(Option<u32>, Option<u8>))| match (
        partner, profile,
    ) {
        (Some(p), Some(pr)) => {
            let (sc, d) = explain_pair(rules, data, pr as usize, i, p as usize);
            (sc, Some(d))
        }
        _ => (f64::NAN, None),
    };
    if threads <= 1 || rows.len() < 10_000 {
        return rows.iter().zip(partners).map(one).collect();
    }
    let size = rows.len().div_ceil(threads);
    std::thread::scope(|s| {
        let hs: Vec<_> = rows
            .chunks(size)
            .zip(partners.chunks(size))
            .map(|(r, p)| s.spawn(move || r.iter().zip(p).map(one).collect::<Vec<_>>()))
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}
