//! The decision ledger (`merge_event`): every manual merge, split, undo,
//! confirm and reject, and every automatic merge of existing customers,
//! recorded before it takes effect and replayed on every run.

use std::collections::HashMap;

use datafusion::prelude::SessionContext;
use serde_json::json;

use super::IdentityError;
use super::engine::Decision;
use super::load::{collect, micros, opt, utf8};
use crate::lake::Lake;
use crate::schema::Catalog;
use crate::schema::row::{BatchBuilder, Cell};

/// One entry of the ledger.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub event_id: String,
    pub event_type: String,
    pub customer_ids: Vec<String>,
    pub surviving_id: Option<String>,
    /// (record, the customer it was in when the decision was made)
    pub records: Vec<(String, Option<String>)>,
    pub reason: Option<String>,
    pub actor: String,
    pub at: i64,
    pub undone_by: Option<String>,
}

pub(crate) fn records_json(records: &[(String, Option<String>)]) -> String {
    serde_json::Value::Array(
        records
            .iter()
            .map(|(r, from)| json!({"record": r, "from": from}))
            .collect(),
    )
    .to_string()
}

fn parse_records(s: Option<&str>) -> Vec<(String, Option<String>)> {
    let Some(v) = s.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()) else {
        return Vec::new();
    };
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    let r = e.get("record")?.as_str()?.to_string();
                    let from = e.get("from").and_then(|f| f.as_str()).map(str::to_string);
                    Some((r, from))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) async fn load_events(
    ctx: &SessionContext,
    have: bool,
) -> Result<Vec<Event>, IdentityError> {
    if !have {
        return Ok(Vec::new());
    }
    let Some(b) = collect(
        ctx,
        "SELECT event_id, event_type, customer_ids, surviving_id, records, reason, actor, \
         at, undone_by FROM merge_event ORDER BY at, event_id",
    )
    .await?
    else {
        return Ok(Vec::new());
    };
    let (id, ty, cids, surv, recs, reason, actor, undone) = (
        utf8(&b, "event_id")?,
        utf8(&b, "event_type")?,
        utf8(&b, "customer_ids")?,
        utf8(&b, "surviving_id")?,
        utf8(&b, "records")?,
        utf8(&b, "reason")?,
        utf8(&b, "actor")?,
        utf8(&b, "undone_by")?,
    );
    let at = micros(&b, "at")?;
    Ok((0..b.num_rows())
        .map(|i| Event {
            event_id: id.value(i).to_string(),
            event_type: ty.value(i).to_string(),
            customer_ids: opt(&cids, i)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            surviving_id: opt(&surv, i).map(str::to_string),
            records: parse_records(opt(&recs, i)),
            reason: opt(&reason, i).map(str::to_string),
            actor: actor.value(i).to_string(),
            at: at[i].unwrap_or(0),
            undone_by: opt(&undone, i).map(str::to_string),
        })
        .collect())
}

/// The decisions to replay, and the revival hints of undone merges.
pub(crate) fn decisions(events: &[Event]) -> (Vec<Decision>, HashMap<String, String>) {
    let mut out = Vec::new();
    let mut hints = HashMap::new();
    for e in events {
        let records: Vec<String> = e.records.iter().map(|(r, _)| r.clone()).collect();
        if e.undone_by.is_some() {
            if matches!(e.event_type.as_str(), "merge" | "confirm" | "auto_merge") {
                for (r, from) in &e.records {
                    if let Some(f) = from
                        && Some(f) != e.surviving_id.as_ref()
                    {
                        hints.insert(r.clone(), f.clone());
                    }
                }
            }
            // An undone automatic merge stays apart: replay it as a split
            // of the records the retired customer had.
            if e.event_type == "auto_merge" {
                let moved: Vec<String> = e
                    .records
                    .iter()
                    .filter(|(_, f)| f.is_some() && f.as_ref() != e.surviving_id.as_ref())
                    .map(|(r, _)| r.clone())
                    .collect();
                out.push(Decision::Split {
                    event: e.event_id.clone(),
                    records: moved,
                });
            }
            continue;
        }
        match e.event_type.as_str() {
            "merge" | "confirm" => out.push(Decision::Merge {
                event: e.event_id.clone(),
                records,
            }),
            "split" => out.push(Decision::Split {
                event: e.event_id.clone(),
                records,
            }),
            "reject" => out.push(Decision::Reject { records }),
            _ => {}
        }
    }
    (out, hints)
}

pub(crate) fn format_event(n: u64) -> String {
    format!("EV{n:010}")
}

pub(crate) fn next_event_number(events: &[Event]) -> u64 {
    events
        .iter()
        .filter_map(|e| e.event_id.strip_prefix("EV")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1
}

fn event_row(def: &crate::schema::TableDef, e: &Event, group: Option<&str>) -> Vec<Cell> {
    let s = |v: Option<&str>| v.map_or(Cell::Null, |v| Cell::Str(v.to_string()));
    def.fields
        .iter()
        .map(|f| match f.name.as_str() {
            "event_id" => Cell::Str(e.event_id.clone()),
            "event_type" => Cell::Str(e.event_type.clone()),
            "customer_ids" => Cell::Str(serde_json::json!(e.customer_ids).to_string()),
            "surviving_id" => s(e.surviving_id.as_deref()),
            "records" => Cell::Str(records_json(&e.records)),
            "reason" => s(e.reason.as_deref()),
            "actor" => Cell::Str(e.actor.clone()),
            "at" => Cell::Ts(e.at),
            "undone_by" => s(e.undone_by.as_deref()),
            "group_id" => s(group),
            _ => Cell::Null,
        })
        .collect()
}

pub(crate) async fn append_events(
    lake: &Lake,
    catalog: &Catalog,
    ctx: &SessionContext,
    events: &[Event],
) -> Result<(), IdentityError> {
    write_events(lake, catalog, ctx, events, None).await
}

pub(crate) async fn write_events(
    lake: &Lake,
    catalog: &Catalog,
    ctx: &SessionContext,
    events: &[Event],
    group: Option<&str>,
) -> Result<(), IdentityError> {
    let def = catalog.table("merge_event")?;
    let mut b = BatchBuilder::new(def, false);
    for e in events {
        b.push(&event_row(def, e, group), None);
    }
    let batch = b.finish()?;
    super::upsert_batch(lake, catalog, ctx, "merge_event", batch).await
}
