//! Identity resolution: source customer records become one golden customer
//! each, conservatively (strong rules merge, weak rules only propose),
//! explainably (every link keeps its rule and field scores) and reversibly
//! (manual merges, splits and undos are a ledger replayed on every run).

pub mod compare;
pub mod dedupe;
pub mod engine;
pub mod explain;
pub mod ids;
pub mod rules;
mod scope;
mod store;
mod survive;
pub mod suspects;

use std::collections::{BTreeSet, HashMap};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{SessionContext, col, lit};
use std::sync::Arc;

pub use rules::{Rules, RulesError};
pub use store::{ResolveReport, Trigger, resolve};

/// The golden fields survivorship fills, in `customer` order.
pub const GOLDEN_FIELDS: [&str; 16] = store::GOLDEN;

use crate::ingest::transform::{BatchBuilder, Cell};
use crate::lake::Lake;
use crate::schema::Catalog;
use store::{Event, collect, now_micros, records_json};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "nothing to resolve: no source customers have been ingested yet (run `custlake ingest` first)"
    )]
    NothingToResolve,
    #[error("{0}")]
    Rules(String),
    #[error("{0}")]
    Lake(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}

impl From<RulesError> for IdentityError {
    fn from(e: RulesError) -> Self {
        Self::Rules(e.to_string())
    }
}

fn lake_err(e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Lake(e.to_string())
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

pub(crate) async fn upsert_batch(
    lake: &Lake,
    catalog: &Catalog,
    ctx: &SessionContext,
    table: &str,
    batch: RecordBatch,
) -> Result<(), IdentityError> {
    let def = catalog.table(table).map_err(lake_err)?;
    let df = ctx.read_batch(batch).map_err(lake_err)?;
    crate::lake::upsert(lake, ctx, def, df, false, Vec::new())
        .await
        .map_err(lake_err)?;
    Ok(())
}

pub(crate) async fn overwrite_batch(
    lake: &Lake,
    catalog: &Catalog,
    table: &str,
    batch: RecordBatch,
) -> Result<(), IdentityError> {
    let def = catalog.table(table).map_err(lake_err)?;
    let ctx = crate::query::write_context();
    crate::lake::overwrite(lake, &ctx, def, batch, Vec::new())
        .await
        .map_err(lake_err)?;
    Ok(())
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

async fn write_events(
    lake: &Lake,
    catalog: &Catalog,
    ctx: &SessionContext,
    events: &[Event],
    group: Option<&str>,
) -> Result<(), IdentityError> {
    let def = catalog.table("merge_event").map_err(lake_err)?;
    let mut b = BatchBuilder::new(def, false);
    for e in events {
        b.push(&event_row(def, e, group), None);
    }
    let batch = b.finish().map_err(lake_err)?;
    upsert_batch(lake, catalog, ctx, "merge_event", batch).await
}

pub(crate) fn ids_batch(ids: &[String]) -> Result<RecordBatch, IdentityError> {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
    let array: ArrayRef = Arc::new(StringArray::from(ids.to_vec()));
    RecordBatch::try_new(schema, vec![array]).map_err(lake_err)
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
    let ctx = crate::query::write_context();
    store::register(&ctx, lake, catalog, &["customer"]).await?;
    let gone: Vec<String> = retired.iter().map(|(a, _)| a.clone()).collect();
    ctx.register_batch("__gone", ids_batch(&gone)?)
        .map_err(lake_err)?;
    let Some(b) = collect(
        &ctx,
        "SELECT c.* FROM customer c WHERE c.customer_id IN (SELECT id FROM __gone) \
         OR c.merged_into IN (SELECT id FROM __gone)",
    )
    .await?
    else {
        return Ok(());
    };
    let id = store::utf8(&b, "customer_id")?;
    let merged = store::utf8(&b, "merged_into")?;
    let target: Vec<String> = (0..b.num_rows())
        .map(|i| {
            if into.contains_key(id.value(i)) {
                last(id.value(i))
            } else {
                last(merged.value(i))
            }
        })
        .collect();
    let def = catalog.table("customer").map_err(lake_err)?;
    let mut columns: Vec<ArrayRef> = Vec::new();
    for f in &def.fields {
        let c = b
            .column_by_name(&f.name)
            .ok_or_else(|| lake_err(&f.name))?
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
                cast(&a, c.data_type()).map_err(lake_err)?
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
            .collect::<Result<Vec<_>, _>>()
            .map_err(lake_err)?
    })
    .map_err(lake_err)?;
    upsert_batch(lake, catalog, &ctx, "customer", batch).await
}

/// What a steward's decision did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecisionReport {
    pub event_id: String,
    pub event_type: String,
    pub customer_ids: Vec<String>,
    pub resolve: ResolveReport,
}

/// Manual decisions: merge, split, undo, confirm or reject a suspect group.
pub struct Steward<'a> {
    pub lake: &'a Lake,
    pub catalog: &'a Catalog,
    pub rules: &'a Rules,
    pub actor: String,
    pub progress: bool,
}

struct State {
    ctx: SessionContext,
    events: Vec<Event>,
}

impl Steward<'_> {
    async fn state(&self) -> Result<State, IdentityError> {
        let ctx = crate::query::write_context();
        let have = store::register(
            &ctx,
            self.lake,
            self.catalog,
            &["customer", "customer_xref", "merge_event", "suspect_group"],
        )
        .await?;
        if !have.iter().any(|h| h == "customer_xref") {
            return Err(IdentityError::Invalid(
                "no customers have been resolved yet: run `custlake resolve` first".into(),
            ));
        }
        let events = store::load_events(&ctx, have.iter().any(|h| h == "merge_event")).await?;
        Ok(State { ctx, events })
    }

    /// The active customer an id stands for (following retired ids).
    async fn current(&self, ctx: &SessionContext, id: &str) -> Result<String, IdentityError> {
        let mut id = id.to_string();
        for _ in 0..64 {
            let df = ctx
                .table("customer")
                .await
                .map_err(lake_err)?
                .filter(col("customer_id").eq(lit(id.clone())))
                .map_err(lake_err)?
                .select_columns(&["status", "merged_into"])
                .map_err(lake_err)?;
            let rows = df.collect().await.map_err(lake_err)?;
            let Some(b) = rows.iter().find(|b| b.num_rows() > 0) else {
                return Err(IdentityError::NotFound(format!("no customer {id}")));
            };
            let (status, merged) = (store::utf8(b, "status")?, store::utf8(b, "merged_into")?);
            if status.value(0) == "retired" && merged.is_valid(0) {
                id = merged.value(0).to_string();
            } else {
                return Ok(id);
            }
        }
        Err(IdentityError::Invalid(format!(
            "customer {id}: the chain of merges is too long"
        )))
    }

    /// The records of customers, as (record, customer).
    async fn records_of(
        &self,
        ctx: &SessionContext,
        ids: &[String],
    ) -> Result<Vec<(String, Option<String>)>, IdentityError> {
        let list = ids.iter().map(|i| lit(i.clone())).collect();
        let df = ctx
            .table("customer_xref")
            .await
            .map_err(lake_err)?
            .filter(col("customer_id").in_list(list, false))
            .map_err(lake_err)?
            .select_columns(&["source_system", "source_id", "customer_id"])
            .map_err(lake_err)?;
        let mut out = Vec::new();
        for b in df.collect().await.map_err(lake_err)? {
            let s = store::utf8(&b, "source_system")?;
            let i = store::utf8(&b, "source_id")?;
            let c = store::utf8(&b, "customer_id")?;
            for r in 0..b.num_rows() {
                out.push((
                    format!("{}:{}", s.value(r), i.value(r)),
                    Some(c.value(r).to_string()),
                ));
            }
        }
        out.sort();
        Ok(out)
    }

    fn reason(reason: &str) -> Result<String, IdentityError> {
        let r = reason.trim();
        if r.is_empty() {
            return Err(IdentityError::Invalid(
                "a reason is required for every manual decision".into(),
            ));
        }
        Ok(r.to_string())
    }

    /// Write the decision to the ledger (with the event it undoes, in the
    /// same commit), mark the suspect group it decides, then resolve.
    async fn record(
        &self,
        st: &State,
        mut event: Event,
        group: Option<(&str, &str)>,
        also: Option<Event>,
    ) -> Result<DecisionReport, IdentityError> {
        event.event_id = format_event(next_event_number(&st.events));
        let ctx = crate::query::write_context();
        let mut rows = vec![event.clone()];
        if let Some(mut target) = also {
            target.undone_by = Some(event.event_id.clone());
            rows.push(target);
        }
        write_events(self.lake, self.catalog, &ctx, &rows, group.map(|g| g.0)).await?;
        if let Some((g, status)) = group {
            self.set_group_status(g, status, Some(&self.actor)).await?;
        }
        let report = resolve(
            self.lake,
            self.catalog,
            self.rules,
            Trigger::Decision(event.event_id.clone()),
            self.progress,
        )
        .await?;
        Ok(DecisionReport {
            event_id: event.event_id,
            event_type: event.event_type,
            customer_ids: event.customer_ids,
            resolve: report,
        })
    }

    fn event(
        &self,
        kind: &str,
        ids: Vec<String>,
        records: Vec<(String, Option<String>)>,
        reason: String,
    ) -> Event {
        Event {
            event_id: String::new(),
            event_type: kind.into(),
            customer_ids: ids,
            surviving_id: None,
            records,
            reason: Some(reason),
            actor: self.actor.clone(),
            at: now_micros(),
            undone_by: None,
        }
    }

    /// Merge customers into one (the oldest id survives).
    pub async fn merge(
        &self,
        customers: &[String],
        reason: &str,
    ) -> Result<DecisionReport, IdentityError> {
        let reason = Self::reason(reason)?;
        let st = self.state().await?;
        let mut ids = BTreeSet::new();
        for c in customers {
            ids.insert(self.current(&st.ctx, c).await?);
        }
        if ids.len() < 2 {
            return Err(IdentityError::Invalid(
                "merge needs at least two different customers (these are already one)".into(),
            ));
        }
        let ids: Vec<String> = ids.into_iter().collect();
        let records = self.records_of(&st.ctx, &ids).await?;
        let e = self.event("merge", ids, records, reason);
        self.record(&st, e, None, None).await
    }

    /// Move records out of a customer into a new one.
    pub async fn split(
        &self,
        customer: &str,
        records: &[String],
        reason: &str,
    ) -> Result<DecisionReport, IdentityError> {
        let reason = Self::reason(reason)?;
        let st = self.state().await?;
        let id = self.current(&st.ctx, customer).await?;
        let have = self.records_of(&st.ctx, std::slice::from_ref(&id)).await?;
        let mut moved = Vec::new();
        for r in records {
            if !have.iter().any(|(h, _)| h == r) {
                return Err(IdentityError::Invalid(format!(
                    "record {r} is not one of customer {id}'s records (use system:source_id, as `custlake explain` shows)"
                )));
            }
            moved.push((r.clone(), Some(id.clone())));
        }
        if moved.is_empty() {
            return Err(IdentityError::Invalid(
                "name at least one record to split off".into(),
            ));
        }
        if moved.len() >= have.len() {
            return Err(IdentityError::Invalid(format!(
                "a split must leave at least one record with customer {id}"
            )));
        }
        let e = self.event("split", vec![id], moved, reason);
        self.record(&st, e, None, None).await
    }

    /// Roll back a decision (or an automatic merge).
    pub async fn undo(&self, event: &str, reason: &str) -> Result<DecisionReport, IdentityError> {
        let reason = Self::reason(reason)?;
        let st = self.state().await?;
        let target = st
            .events
            .iter()
            .find(|e| e.event_id == event)
            .cloned()
            .ok_or_else(|| IdentityError::NotFound(format!("no merge event {event}")))?;
        if let Some(by) = &target.undone_by {
            return Err(IdentityError::Invalid(format!(
                "event {event} was already undone by {by}"
            )));
        }
        if target.event_type == "undo" {
            return Err(IdentityError::Invalid(
                "an undo cannot be undone; make the decision again instead".into(),
            ));
        }
        if matches!(target.event_type.as_str(), "confirm" | "reject") {
            let group = self.group_of_event(&st, event).await?;
            if let Some(g) = group {
                self.set_group_status(&g, "open", None).await?;
            }
        }
        let mut e = self.event("undo", target.customer_ids.clone(), Vec::new(), reason);
        e.surviving_id = None;
        self.record(&st, e, None, Some(target)).await
    }

    async fn group_of_event(
        &self,
        st: &State,
        event: &str,
    ) -> Result<Option<String>, IdentityError> {
        let df = st
            .ctx
            .table("merge_event")
            .await
            .map_err(lake_err)?
            .filter(col("event_id").eq(lit(event.to_string())))
            .map_err(lake_err)?
            .select_columns(&["group_id"])
            .map_err(lake_err)?;
        for b in df.collect().await.map_err(lake_err)? {
            if b.num_rows() > 0 {
                let g = store::utf8(&b, "group_id")?;
                return Ok(g.is_valid(0).then(|| g.value(0).to_string()));
            }
        }
        Ok(None)
    }

    async fn set_group_status(
        &self,
        group: &str,
        status: &str,
        decided_by: Option<&str>,
    ) -> Result<Vec<suspects::Member>, IdentityError> {
        let ctx = crate::query::write_context();
        let have = store::register(&ctx, self.lake, self.catalog, &["suspect_group"]).await?;
        let mut rows = suspects::load(&ctx, !have.is_empty()).await?;
        let now = now_micros();
        let mut members = Vec::new();
        for m in rows.iter_mut().filter(|m| m.group_id == group) {
            m.status = status.to_string();
            m.decided_by = decided_by.map(str::to_string);
            m.decided_at = decided_by.map(|_| now);
            members.push(m.clone());
        }
        if members.is_empty() {
            return Err(IdentityError::NotFound(format!("no suspect group {group}")));
        }
        let batch = suspects::to_batch(self.catalog, &rows)?;
        overwrite_batch(self.lake, self.catalog, "suspect_group", batch).await?;
        Ok(members)
    }

    /// Confirm (merge) or reject a suspected duplicate group.
    pub async fn decide_group(
        &self,
        group: &str,
        confirm: bool,
        reason: &str,
    ) -> Result<DecisionReport, IdentityError> {
        let reason = Self::reason(reason)?;
        let st = self.state().await?;
        let ctx = crate::query::write_context();
        let have = store::register(&ctx, self.lake, self.catalog, &["suspect_group"]).await?;
        let rows = suspects::load(&ctx, !have.is_empty()).await?;
        let members: Vec<&suspects::Member> = rows.iter().filter(|m| m.group_id == group).collect();
        if members.is_empty() {
            return Err(IdentityError::NotFound(format!("no suspect group {group}")));
        }
        if let Some(m) = members.iter().find(|m| m.status != "open") {
            return Err(IdentityError::Invalid(format!(
                "suspect group {group} was already {} by {}",
                m.status,
                m.decided_by.as_deref().unwrap_or("a steward")
            )));
        }
        let event = if confirm {
            let mut ids = BTreeSet::new();
            for m in &members {
                if let Some(c) = &m.customer_id {
                    ids.insert(self.current(&st.ctx, c).await?);
                }
            }
            let ids: Vec<String> = ids.into_iter().collect();
            let records = self.records_of(&st.ctx, &ids).await?;
            self.event("confirm", ids, records, reason)
        } else {
            let ids: Vec<String> = members
                .iter()
                .filter_map(|m| m.customer_id.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let records = members
                .iter()
                .map(|m| (m.member.clone(), m.customer_id.clone()))
                .collect();
            self.event("reject", ids, records, reason)
        };
        let status = if confirm { "confirmed" } else { "rejected" };
        self.record(&st, event, Some((group, status)), None).await
    }
}
