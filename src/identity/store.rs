//! Resolution against the lake: read `source_customer`, the previous links
//! and the decision ledger; run the engine; write only what changed to
//! `merge_event`, `customer_xref`, `customer` and `suspect_group`.
//!
//! Writes go in that order, each one atomic: the ledger first (a decision is
//! recorded before it takes effect), then the links (which carry the ids),
//! then the golden records. A run killed between two writes is completed by
//! the next run, which recomputes the same result from the same inputs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::prelude::SessionContext;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::IdentityError;
use super::engine::{self, Dataset, Decision, StrColumn, Why};
use super::ids::{self, Known};
use super::rules::Rules;
use crate::ingest::transform::{BatchBuilder, Cell};
use crate::lake::Lake;
use crate::schema::Catalog;

/// The golden fields taken from source records, in `customer` order.
pub(crate) const GOLDEN: [&str; 16] = [
    "customer_type",
    "name",
    "gender",
    "birth_date",
    "id_type",
    "id_number",
    "uscc",
    "tax_id",
    "legal_rep",
    "phone",
    "email",
    "address",
    "industry",
    "owning_team",
    "region",
    "agent_id",
];

/// What a run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ResolveReport {
    /// "full" or "incremental".
    pub mode: String,
    /// Why a run that could have been incremental was full.
    pub full_because: Option<String>,
    /// Records loaded (new or changed) since the previous run.
    pub new_or_changed: usize,
    /// Records this run resolved (all of them in a full run).
    pub records: usize,
    pub customers: usize,
    pub new_customers: usize,
    pub retired: usize,
    pub revived: usize,
    pub changed_links: usize,
    pub changed_customers: usize,
    pub suspect_groups: usize,
    pub candidate_pairs: usize,
    pub refused_merges: usize,
    pub oversized_blocks: usize,
    pub seconds: f64,
}

/// Who or what started a run.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// A scheduled or command-line run: merges it finds are logged as
    /// `auto_merge` events. Incremental when the last run's links allow.
    Auto,
    /// The same, resolving every record again.
    Full,
    /// A steward's decision, already in the ledger.
    Decision(String),
}

pub(crate) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn err(context: &str, e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Lake(format!("{context}: {e}"))
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
        let def = catalog.table(name).map_err(|e| err(name, e))?;
        if let Some(table) = lake.open(def).await.map_err(|e| err(name, e))? {
            table
                .update_datafusion_session(&ctx.state())
                .map_err(|e| err(name, e))?;
            let provider = table.table_provider().await.map_err(|e| err(name, e))?;
            ctx.register_table(*name, provider)
                .map_err(|e| err(name, e))?;
            found.push(name.to_string());
        }
    }
    Ok(found)
}

pub(crate) async fn collect(
    ctx: &SessionContext,
    sql: &str,
) -> Result<Option<RecordBatch>, IdentityError> {
    let df = ctx.sql(sql).await.map_err(|e| err("query", e))?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(|e| err("query", e))?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(None);
    }
    concat_batches(&schema, &batches)
        .map(Some)
        .map_err(|e| err("query", e))
}

pub(crate) fn utf8(batch: &RecordBatch, name: &str) -> Result<StringArray, IdentityError> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| err("read", format!("column {name} is missing")))?;
    let c = cast(col, &DataType::Utf8).map_err(|e| err(name, e))?;
    Ok(c.as_string::<i32>().clone())
}

pub(crate) fn micros(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, IdentityError> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| err("read", format!("column {name} is missing")))?;
    let c =
        cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(|e| err(name, e))?;
    let c = cast(&c, &DataType::Int64).map_err(|e| err(name, e))?;
    let a = c.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect())
}

fn opt(a: &StringArray, i: usize) -> Option<&str> {
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
    let batch = take_record_batch(&batch, &idx).map_err(|e| err("sort", e))?;
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
            return Err(IdentityError::Rules(format!(
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
fn decisions(events: &[Event]) -> (Vec<Decision>, HashMap<String, String>) {
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
            ctx.register_batch("__ids", batch)
                .map_err(|e| err("customers", e))?;
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

fn why_rule(rules: &Rules, why: &Why) -> String {
    match why {
        Why::Single => "single".into(),
        Why::Strong { profile, rule } => format!(
            "{}.{}",
            rules.profiles[*profile].name, rules.profiles[*profile].strong[*rule].name
        ),
        Why::Scored { profile, .. } => format!("{}.score", rules.profiles[*profile].name),
        Why::Manual { kind, .. } => (*kind).to_string(),
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

fn progress(show: bool, steps: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{spinner} resolve [{bar:20}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Logs the time of each phase of a run (`CUSTLAKE_LOG=custlake=info`).
struct Lap(Instant);

impl Lap {
    fn mark(&mut self, phase: &str) {
        tracing::info!(phase, ms = self.0.elapsed().as_millis() as u64, "resolve");
        self.0 = Instant::now();
    }
}

/// Resolve every source record; write what changed.
pub async fn resolve(
    lake: &Lake,
    catalog: &Catalog,
    rules: &Rules,
    trigger: Trigger,
    show_progress: bool,
) -> Result<ResolveReport, IdentityError> {
    let started = Instant::now();
    let bar = progress(show_progress, 6);
    let ctx = crate::query::write_context();
    let have = register(
        &ctx,
        lake,
        catalog,
        &[
            "source_customer",
            "customer_xref",
            "customer",
            "merge_event",
            "suspect_group",
        ],
    )
    .await?;
    let has = |t: &str| have.iter().any(|h| h == t);
    if !has("source_customer") {
        return Err(IdentityError::NothingToResolve);
    }
    let mut lap = Lap(Instant::now());
    bar.set_message("loading source records");
    let events = load_events(&ctx, has("merge_event")).await?;
    let suspects_before = super::suspects::load(&ctx, has("suspect_group")).await?;
    lap.mark("ledger, customers and suspects loaded");
    let (decs, hint_keys) = decisions(&events);
    let (scope, full_because) = if has("customer_xref") && !matches!(trigger, Trigger::Full) {
        match incremental_scope(&ctx, rules, &trigger, &events, &decs, &suspects_before).await? {
            Ok(scope) => (Some(scope), None),
            Err(why) => (None, Some(why)),
        }
    } else {
        (None, None)
    };
    lap.mark("scope");
    let loaded = match &scope {
        None => {
            let links = if has("customer_xref") {
                Links::Join
            } else {
                Links::None
            };
            load_records(&ctx, rules, links, "").await?
        }
        Some(scope) if scope.records.is_empty() => None,
        Some(scope) => {
            let (systems, ids): (Vec<&str>, Vec<&str>) = scope
                .records
                .iter()
                .filter_map(|k| k.split_once(':'))
                .unzip();
            let batch = RecordBatch::try_from_iter([
                (
                    "source_system",
                    Arc::new(StringArray::from(systems)) as datafusion::arrow::array::ArrayRef,
                ),
                ("source_id", Arc::new(StringArray::from(ids)) as _),
            ])
            .map_err(|e| err("scope", e))?;
            ctx.register_batch("__scope", batch)
                .map_err(|e| err("scope", e))?;
            // The scope is the small side: it is built, the records probed.
            load_records(
                &ctx,
                rules,
                Links::Known(&scope.old),
                "JOIN __scope k ON s.source_system = k.source_system AND s.source_id = k.source_id",
            )
            .await?
        }
    };
    let Some(loaded) = loaded else {
        if let Some(scope) = &scope {
            // Nothing new: every customer stays as it is.
            bar.finish_and_clear();
            return Ok(ResolveReport {
                mode: "incremental".into(),
                customers: scope.customers_outside,
                suspect_groups: super::suspects::open_groups(&suspects_before),
                seconds: started.elapsed().as_secs_f64(),
                ..ResolveReport::default()
            });
        }
        return Err(IdentityError::NothingToResolve);
    };
    // Customers: all of them for a full run; for an incremental one those
    // its records and revival hints name, and the highest id.
    let (known, highest) = match &scope {
        None => (load_known(&ctx, has("customer"), None).await?, None),
        Some(_) => {
            let mut ids: Vec<String> = (0..loaded.data.len())
                .filter_map(|i| opt(&loaded.old_id, i).map(str::to_string))
                .chain(hint_keys.values().cloned())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let known = load_known(&ctx, has("customer"), Some(ids)).await?;
            let highest = collect(&ctx, "SELECT max(customer_id) AS m FROM customer")
                .await?
                .map(|b| utf8(&b, "m"))
                .transpose()?
                .and_then(|a| opt(&a, 0).and_then(ids::parse_id));
            (known, highest)
        }
    };
    lap.mark("records loaded");
    bar.inc(1);

    bar.set_message(format!("matching {} records", loaded.data.len()));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let oversized = scope
        .as_ref()
        .map(|s| s.oversized.clone())
        .unwrap_or_default();
    let (loaded, outcome, match_keys) = tokio::task::spawn_blocking({
        let rules = rules.clone();
        move || {
            let out = engine::resolve_part(&rules, &loaded.data, &decs, threads, &oversized);
            let keys = super::scope::keys_text(&rules, &loaded.data);
            (loaded, out, keys)
        }
    })
    .await
    .map_err(|e| err("matching", e))?;
    lap.mark("matched");
    bar.inc(1);

    bar.set_message("assigning ids");
    let n = loaded.data.len();
    let mut by_cluster: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (i, &c) in outcome.cluster.iter().enumerate() {
        by_cluster.entry(c).or_default().push(i as u32);
    }
    let clusters: Vec<Vec<u32>> = by_cluster.into_values().collect();
    let mut cluster_of = vec![0u32; n];
    for (c, members) in clusters.iter().enumerate() {
        for &m in members {
            cluster_of[m as usize] = c as u32;
        }
    }
    let loaded = Arc::new(loaded);
    let old: Vec<Option<&str>> = (0..n).map(|i| opt(&loaded.old_id, i)).collect();
    let index: HashMap<&str, u32> = if hint_keys.is_empty() {
        HashMap::new()
    } else {
        loaded
            .data
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i as u32))
            .collect()
    };
    let hints: HashMap<u32, String> = hint_keys
        .iter()
        .filter_map(|(k, v)| index.get(k.as_str()).map(|i| (*i, v.clone())))
        .collect();
    let known_ids: HashMap<String, Known> = known
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    let mut next = known
        .keys()
        .map(String::as_str)
        .chain(old.iter().flatten().copied())
        .filter_map(ids::parse_id)
        .chain(highest)
        .max()
        .unwrap_or(0)
        + 1;
    let assignment = ids::assign(&clusters, &old, &hints, &known_ids, &mut next);
    bar.inc(1);

    let now = now_micros();
    let actor_of: HashMap<&str, &str> = events
        .iter()
        .map(|e| (e.event_id.as_str(), e.actor.as_str()))
        .collect();

    // Links that changed.
    bar.set_message("linking records");
    let by_of = |i: usize| -> (String, String) {
        match &outcome.link[i].why {
            Why::Manual { event, kind } => (
                (*kind).to_string(),
                actor_of
                    .get(event.as_str())
                    .map_or_else(|| "steward".to_string(), |a| a.to_string()),
            ),
            w => (why_rule(rules, w), "auto".to_string()),
        }
    };
    let changed: Vec<usize> = (0..n)
        .filter(|&i| {
            let id = &assignment.ids[cluster_of[i] as usize];
            let (rule, by) = by_of(i);
            old[i] != Some(id.as_str())
                || opt(&loaded.old_rule, i) != Some(rule.as_str())
                || opt(&loaded.old_by, i) != Some(by.as_str())
                || loaded.old_ingested[i] != loaded.ingested[i]
                || opt(&loaded.old_keys, i) != Some(match_keys[i].as_str())
        })
        .collect();
    let explained: Vec<(f64, Option<String>)> = tokio::task::spawn_blocking({
        let rules = rules.clone();
        let loaded = loaded.clone();
        let partners: Vec<(Option<u32>, Option<u8>)> = changed
            .iter()
            .map(|&i| (outcome.link[i].partner, outcome.profile[i]))
            .collect();
        let changed = changed.clone();
        move || explain_all(&rules, &loaded.data, &changed, &partners, threads)
    })
    .await
    .map_err(|e| err("linking", e))?;
    let xref_def = catalog
        .table("customer_xref")
        .map_err(|e| err("customer_xref", e))?;
    let source_id = utf8(&loaded.batch, "source_id")?;
    let mut b = BatchBuilder::new(xref_def, false);
    for (&i, (score, detail)) in changed.iter().zip(explained) {
        let (rule, by) = by_of(i);
        b.push(
            &[
                Cell::Str(loaded.system.value(i).to_string()),
                Cell::Str(source_id.value(i).to_string()),
                Cell::Str(assignment.ids[cluster_of[i] as usize].clone()),
                Cell::Str(rule),
                if score.is_nan() {
                    Cell::Null
                } else {
                    Cell::F64(score)
                },
                Cell::Ts(now),
                Cell::Str(by),
                detail.map_or(Cell::Null, Cell::Str),
                loaded.ingested[i].map_or(Cell::Null, Cell::Ts),
                Cell::Str(match_keys[i].clone()),
            ],
            None,
        );
    }
    let xref_batch = b.finish().map_err(|e| err("customer_xref", e))?;
    bar.inc(1);

    bar.set_message("building golden records");
    let golden = super::survive::golden(
        rules,
        catalog,
        &loaded,
        &clusters,
        &assignment.ids,
        &known,
        now,
    )?;
    bar.inc(1);

    bar.set_message("proposing suspected duplicates");
    let mut suspects = super::suspects::groups(
        rules,
        &loaded.data,
        &outcome,
        &cluster_of,
        &assignment.ids,
        &suspects_before,
        now,
    );
    if let Some(scope) = &scope {
        // Open groups outside the scope stand as they were (a group is
        // wholly inside or wholly outside: its members are in the scope
        // together).
        suspects.extend(
            suspects_before
                .iter()
                .filter(|m| m.status == "open" && !scope.records.contains(&m.member))
                .cloned(),
        );
        suspects.sort_by(|a, b| a.group_id.cmp(&b.group_id).then(a.member.cmp(&b.member)));
    }

    // Writes: ledger, links, golden records, suspects.
    lap.mark("links, golden records and suspects computed");
    bar.set_message("writing");
    let mut retire_events = Vec::new();
    if matches!(trigger, Trigger::Auto | Trigger::Full) && !assignment.retired.is_empty() {
        let first = super::next_event_number(&events);
        for (seq, (gone, into)) in (first..).zip(&assignment.retired) {
            let records: Vec<(String, Option<String>)> = (0..n)
                .filter(|&i| assignment.ids[cluster_of[i] as usize] == *into)
                .map(|i| (loaded.data.keys[i].clone(), old[i].map(str::to_string)))
                .collect();
            retire_events.push(Event {
                event_id: super::format_event(seq),
                event_type: "auto_merge".into(),
                customer_ids: vec![into.clone(), gone.clone()],
                surviving_id: Some(into.clone()),
                records,
                reason: Some("strong rule linked two existing customers".into()),
                actor: "auto".into(),
                at: now,
                undone_by: None,
            });
        }
    }
    let write_ctx = crate::query::write_context();
    if !retire_events.is_empty() {
        super::append_events(lake, catalog, &write_ctx, &retire_events).await?;
    }
    let changed_links = xref_batch.num_rows();
    if changed_links > 0 {
        super::upsert_batch(lake, catalog, &write_ctx, "customer_xref", xref_batch).await?;
    }
    lap.mark("links written");
    let changed_customers = golden.num_rows();
    if changed_customers > 0 {
        super::upsert_batch(lake, catalog, &write_ctx, "customer", golden).await?;
    }
    super::retire(lake, catalog, &assignment.retired, now).await?;
    lap.mark("golden records written");
    let groups = super::suspects::write(lake, catalog, &suspects_before, suspects).await?;
    lap.mark("suspects written");
    bar.inc(1);
    bar.finish_and_clear();
    let new_or_changed = match &scope {
        Some(s) => s.seeds,
        None => (0..n)
            .filter(|&i| loaded.old_ingested[i] != loaded.ingested[i])
            .count(),
    };
    Ok(ResolveReport {
        mode: if scope.is_some() {
            "incremental"
        } else {
            "full"
        }
        .into(),
        full_because,
        new_or_changed,
        records: n,
        customers: clusters.len() + scope.as_ref().map_or(0, |s| s.customers_outside),
        new_customers: assignment.new,
        retired: assignment.retired.len(),
        revived: assignment.revived.len(),
        changed_links,
        changed_customers,
        suspect_groups: groups,
        candidate_pairs: outcome.stats.candidate_pairs,
        refused_merges: outcome.stats.refused_merges,
        oversized_blocks: outcome.stats.oversized_blocks,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The scope of an incremental run, or why the run must be full.
async fn incremental_scope(
    ctx: &SessionContext,
    rules: &Rules,
    trigger: &Trigger,
    events: &[Event],
    decs: &[Decision],
    suspects: &[super::suspects::Member],
) -> Result<Result<super::scope::Scope, String>, IdentityError> {
    let Some((wm, before)) = super::scope::watermark(ctx).await? else {
        return Ok(Err("the links carry no source versions".into()));
    };
    // Filters and join keys filter the scans themselves (late
    // materialisation): only the rows kept are decoded in full.
    ctx.sql("SET datafusion.execution.parquet.pushdown_filters = true")
        .await
        .map_err(|e| err("scope", e))?;
    let seeds = load_records(
        ctx,
        rules,
        Links::None,
        &format!("WHERE s.ingested_at > to_timestamp_micros({wm})"),
    )
    .await?;
    tracing::info!(
        seeds = seeds.as_ref().map_or(0, |l| l.data.len()),
        "resolve: new and changed records loaded"
    );
    let empty = Dataset::default();
    let seeds = seeds.as_ref().map_or(&empty, |l| &l.data);
    // A steward's decision: the records it and the event it undoes name.
    let mut also: Vec<String> = Vec::new();
    if let Trigger::Decision(id) = trigger {
        for e in events {
            if &e.event_id == id || e.undone_by.as_deref() == Some(id.as_str()) {
                also.extend(e.records.iter().map(|(r, _)| r.clone()));
            }
        }
    }
    let mut hyperedges: Vec<Vec<String>> = decs
        .iter()
        .map(|d| match d {
            Decision::Merge { records, .. }
            | Decision::Split { records, .. }
            | Decision::Reject { records } => records.clone(),
        })
        .collect();
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for m in suspects.iter().filter(|m| m.status == "open") {
        groups
            .entry(m.group_id.as_str())
            .or_default()
            .push(m.member.clone());
    }
    hyperedges.extend(groups.into_values());
    Ok(
        match super::scope::plan(ctx, rules, seeds, &also, &hyperedges, before).await? {
            super::scope::Plan::Full(why) => Err(why),
            super::scope::Plan::Incremental(s) => Ok(s),
        },
    )
}

/// Scores and per-field similarities of each record with its partner.
fn explain_all(
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
