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

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::prelude::SessionContext;

use super::IdentityError;
use super::engine::{self, Dataset, Decision, Why};
use super::explain::why_rule;
use super::ids;
use super::ledger::{
    Event, append_events, decisions, format_event, load_events, next_event_number,
};
use super::load::{
    KnownCustomers, Links, Loaded, collect, load_known, load_records, now_micros, opt, register,
    utf8,
};
use super::survive::retire;
use crate::lake::{Lake, Warehouse};
use crate::progress::{Task, Unit};
use crate::schema::Catalog;
use crate::schema::rules::Rules;

mod links;

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

/// Logs the time of each phase of a run (`CUSTLAKE_LOG=custlake=info`).
struct Lap(Instant);

impl Lap {
    fn mark(&mut self, phase: &str) {
        tracing::info!(phase, ms = self.0.elapsed().as_millis() as u64, "resolve");
        self.0 = Instant::now();
    }
}

/// Resolve the source records into golden customers and write what
/// changed: after the first run only the records ingested since the last
/// one and those they can affect (unless `trigger` is [`Trigger::Full`]).
/// Progress goes to the warehouse's reporter, six steps.
/// Holds the identity lease (see [`super::leased`]) throughout.
pub async fn resolve(wh: &Warehouse, trigger: Trigger) -> Result<ResolveReport, IdentityError> {
    super::leased(&wh.lake, "resolve", async || {
        resolve_held(wh, trigger).await
    })
    .await
}

/// [`resolve`] by a caller that holds the identity lease.
pub(crate) async fn resolve_held(
    wh: &Warehouse,
    trigger: Trigger,
) -> Result<ResolveReport, IdentityError> {
    let task = wh.progress.task("resolve", Some(6), Unit::Steps);
    let result = run(wh, trigger, task.as_ref()).await;
    match &result {
        Ok(_) => task.finish(),
        Err(e) => task.fail(&e.to_string()),
    }
    result
}

async fn run(
    wh: &Warehouse,
    trigger: Trigger,
    task: &dyn Task,
) -> Result<ResolveReport, IdentityError> {
    let started = Instant::now();
    let (lake, catalog, rules) = (&wh.lake, wh.catalog.as_ref(), wh.rules.as_ref());
    let mut lap = Lap(Instant::now());
    task.set_message("loading source records");
    let input = Inputs::read(lake, catalog, rules, &trigger).await?;
    lap.mark("ledger, suspects and scope");
    let Some(loaded) = input.load_records(rules).await? else {
        return match &input.scope {
            // Nothing new: every customer stays as it is.
            Some(scope) => Ok(ResolveReport {
                mode: "incremental".into(),
                customers: scope.customers_outside,
                suspect_groups: super::suspects::open_groups(&input.suspects),
                seconds: started.elapsed().as_secs_f64(),
                ..ResolveReport::default()
            }),
            None => Err(IdentityError::NothingToResolve),
        };
    };
    let (known, highest) = input.known_customers(&loaded).await?;
    lap.mark("records loaded");
    task.inc(1);

    task.set_message(&format!("matching {} records", loaded.data.len()));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (mut loaded, outcome) = match_records(rules, &input, loaded, threads).await?;
    lap.mark("matched");
    loaded.read_links_later(&input.ctx).await?;
    lap.mark("previous links read");
    task.inc(1);

    task.set_message("assigning ids");
    let clusters = Clusters::of(&outcome.cluster);
    let loaded = Arc::new(loaded);
    let assignment = assign_ids(&loaded, &clusters, &input.hint_keys, &known, highest);
    lap.mark("ids assigned");
    task.inc(1);

    task.set_message("linking records");
    let now = now_micros();
    let change = Change {
        rules,
        loaded: &loaded,
        outcome: &outcome,
        clusters: &clusters,
        assignment: &assignment,
        events: &input.events,
        decisions: &input.decisions,
        now,
    };
    // Each result is written as soon as it is computed, and dropped:
    // the ledger's merges, then the links, the golden records and the
    // suspect groups, in that order (each write atomic).
    let merges = change.auto_merges(&trigger);
    let write_ctx = crate::lake::session::write_context();
    if !merges.is_empty() {
        append_events(lake, catalog, &write_ctx, &merges).await?;
    }
    let changed = change.changed_links(threads);
    lap.mark("links compared");
    let links = changed.len();
    task.set_message(&format!("writing {links} changed links"));
    if links > 0 {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let def = catalog.table("customer_xref")?;
        let (written, sent) = tokio::join!(
            crate::lake::upsert_chunks(lake, &write_ctx, def, rx, Vec::new()),
            change.send_links(catalog, threads, &changed, tx),
        );
        sent?;
        written?;
    }
    drop(changed);
    lap.mark("links written");
    task.inc(1);
    // What the rest needs of the matching, before its fields are let go:
    // the suspect groups (written last, as before), how many records are
    // new or changed.
    let suspects = change.suspects(&input);
    let n = loaded.data.len();
    let new_or_changed = match &input.scope {
        Some(s) => s.seeds,
        None => (0..n)
            .filter(|&i| loaded.old_ingested.get(i) != loaded.ingested.get(i))
            .count(),
    };
    // The golden fields are read only now, in place of the previous links
    // and the rules' fields golden records do not take: matching and
    // linking never hold them, golden records never hold the others.
    task.set_message("reading golden fields");
    let stats = outcome.stats.clone();
    drop(outcome);
    // Each record's cluster served the links and the suspects.
    let Clusters { members, of } = clusters;
    drop(of);
    // The linking tasks that shared the records have ended.
    let mut loaded = Arc::try_unwrap(loaded).unwrap_or_else(|shared| {
        tracing::warn!("the loaded records are still shared: copied to read the golden fields");
        (*shared).clone()
    });
    loaded.let_go_of_matching();
    loaded.read_golden(&input.ctx).await?;
    lap.mark("golden fields read");

    task.set_message("building and writing golden records");
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let golden = super::survive::Golden {
        rules,
        catalog,
        loaded: &loaded,
        clusters: &members,
        ids: &assignment.ids,
        known: &known,
        now,
        threads,
    };
    let (written, sent) = tokio::join!(
        crate::lake::upsert_chunks(lake, &write_ctx, catalog.table("customer")?, rx, Vec::new()),
        golden.send(tx),
    );
    let customers = sent?;
    written?;
    drop(known);
    retire(lake, catalog, &assignment.retired, now).await?;
    lap.mark("golden records written");
    task.inc(1);

    task.set_message("proposing suspected duplicates");
    let groups = super::suspects::write(lake, catalog, &input.suspects, suspects).await?;
    lap.mark("suspects written");
    let written = Written {
        links,
        customers,
        groups,
    };
    task.inc(1);
    Ok(ResolveReport {
        mode: if input.scope.is_some() {
            "incremental"
        } else {
            "full"
        }
        .into(),
        full_because: input.full_because,
        new_or_changed,
        records: n,
        customers: members.len() + input.scope.as_ref().map_or(0, |s| s.customers_outside),
        new_customers: assignment.new,
        retired: assignment.retired.len(),
        revived: assignment.revived.len(),
        changed_links: written.links,
        changed_customers: written.customers,
        suspect_groups: written.groups,
        candidate_pairs: stats.candidate_pairs,
        refused_merges: stats.refused_merges,
        oversized_blocks: stats.oversized_blocks,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What a run starts from: the identity tables registered, the ledger and
/// its decisions, the suspect groups, and the scope of an incremental run.
struct Inputs {
    ctx: SessionContext,
    have: Vec<String>,
    events: Vec<Event>,
    decisions: Vec<Decision>,
    /// Records of undone merges and the customer each was in before.
    hint_keys: HashMap<String, String>,
    suspects: Vec<super::suspects::Member>,
    scope: Option<super::scope::Scope>,
    full_because: Option<String>,
}

/// Refuse to resolve when two source records share an integer key
/// ([`crate::domain::source_key`]): every fact joins its golden customer
/// on that key, so one would be counted for the other's customer. At ten
/// million records the chance is about one in a hundred thousand; the
/// error names both records, one of which must be re-keyed at its source.
async fn check_source_keys(ctx: &SessionContext) -> Result<(), IdentityError> {
    let shared = ctx
        .sql(
            "SELECT s.source_system, s.source_id, s.source_key FROM source_customer s \
             JOIN (SELECT source_key FROM source_customer GROUP BY source_key \
                   HAVING count(*) > 1 LIMIT 1) d ON d.source_key = s.source_key \
             ORDER BY s.source_system, s.source_id",
        )
        .await?
        .collect()
        .await?;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::DataType;
    let mut records = Vec::new();
    for b in &shared {
        let (system, id) = (
            cast(b.column(0), &DataType::Utf8)?,
            cast(b.column(1), &DataType::Utf8)?,
        );
        let (system, id) = (system.as_string::<i32>(), id.as_string::<i32>());
        for r in 0..b.num_rows() {
            records.push(format!("{}:{}", system.value(r), id.value(r)));
        }
    }
    if records.is_empty() {
        return Ok(());
    }
    Err(IdentityError::Refused(format!(
        "source records {} share one integer source_key, so their facts cannot be told apart; \
         change one record's id in its source system and ingest it again",
        records.join(" and ")
    )))
}

impl Inputs {
    async fn read(
        lake: &Lake,
        catalog: &Catalog,
        rules: &Rules,
        trigger: &Trigger,
    ) -> Result<Self, IdentityError> {
        let ctx = crate::lake::session::write_context();
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
        check_source_keys(&ctx).await?;
        let events = load_events(&ctx, has("merge_event")).await?;
        let suspects = super::suspects::load(&ctx, has("suspect_group")).await?;
        let (decisions, hint_keys) = decisions(&events);
        let (scope, full_because) = if has("customer_xref") && !matches!(trigger, Trigger::Full) {
            match incremental_scope(&ctx, rules, trigger, &events, &decisions, &suspects).await? {
                Ok(scope) => (Some(scope), None),
                Err(why) => (None, Some(why)),
            }
        } else {
            (None, None)
        };
        Ok(Self {
            ctx,
            have,
            events,
            decisions,
            hint_keys,
            suspects,
            scope,
            full_because,
        })
    }

    fn has(&self, table: &str) -> bool {
        self.have.iter().any(|h| h == table)
    }

    /// The records to resolve: every one for a full run, the scope's for
    /// an incremental one (`None`: there are none).
    async fn load_records(&self, rules: &Rules) -> Result<Option<Loaded>, IdentityError> {
        let ctx = &self.ctx;
        match &self.scope {
            None => {
                let links = if self.has("customer_xref") {
                    Links::Join
                } else {
                    Links::None
                };
                load_records(ctx, rules, links, "").await
            }
            Some(scope) if scope.records.is_empty() => Ok(None),
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
                ])?;
                ctx.register_batch("__scope", batch)?;
                // The scope is the small side: it is built, the records probed.
                load_records(
                    ctx,
                    rules,
                    Links::Known(&scope.old),
                    "JOIN __scope k ON s.source_system = k.source_system AND s.source_id = k.source_id",
                )
                .await
            }
        }
    }

    /// Customers: all of them for a full run; for an incremental one those
    /// its records and revival hints name, and the highest id.
    async fn known_customers(
        &self,
        loaded: &Loaded,
    ) -> Result<(KnownCustomers, Option<u64>), IdentityError> {
        let (ctx, have) = (&self.ctx, self.has("customer"));
        if self.scope.is_none() {
            return Ok((load_known(ctx, have, None).await?, None));
        }
        let mut ids: Vec<String> = (0..loaded.data.len())
            .filter_map(|i| loaded.old_id.get(i).map(str::to_string))
            .chain(self.hint_keys.values().cloned())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let known = load_known(ctx, have, Some(ids)).await?;
        let highest = collect(ctx, "SELECT max(customer_id) AS m FROM customer")
            .await?
            .map(|b| utf8(&b, "m"))
            .transpose()?
            .and_then(|a| opt(&a, 0).and_then(ids::parse_id));
        Ok((known, highest))
    }
}

/// Run the matching engine on the loaded records (off the async runtime).
async fn match_records(
    rules: &Rules,
    input: &Inputs,
    loaded: Loaded,
    threads: usize,
) -> Result<(Loaded, engine::Outcome), IdentityError> {
    let oversized = input
        .scope
        .as_ref()
        .map(|s| s.oversized.clone())
        .unwrap_or_default();
    let rules = rules.clone();
    let decisions = input.decisions.clone();
    Ok(tokio::task::spawn_blocking(move || {
        let out = engine::resolve_part(&rules, &loaded.data, &decisions, threads, &oversized);
        (loaded, out)
    })
    .await?)
}

/// The engine's clusters, in order, and each record's cluster.
struct Clusters {
    members: engine::Members,
    of: Vec<u32>,
}

impl Clusters {
    fn of(cluster: &[u32]) -> Self {
        let (members, of) = engine::Members::of(cluster);
        Self { members, of }
    }
}

/// Stable ids for the clusters: kept, revived or new (numbered after the
/// highest id known).
fn assign_ids(
    loaded: &Loaded,
    clusters: &Clusters,
    hint_keys: &HashMap<String, String>,
    known: &KnownCustomers,
    highest: Option<u64>,
) -> ids::Assignment {
    let n = loaded.data.len();
    let old = |r: u32| loaded.old_id.get(r as usize);
    let index: HashMap<&str, u32> = if hint_keys.is_empty() {
        HashMap::new()
    } else {
        loaded
            .data
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k, i as u32))
            .collect()
    };
    let hints: HashMap<u32, String> = hint_keys
        .iter()
        .filter_map(|(k, v)| index.get(k.as_str()).map(|i| (*i, v.clone())))
        .collect();
    let mut next = (0..n as u32)
        .filter_map(old)
        .filter_map(ids::parse_id)
        .chain(known.highest())
        .chain(highest)
        .max()
        .unwrap_or(0)
        + 1;
    ids::assign(
        &clusters.members,
        &old,
        &hints,
        &|id| known.get(id),
        &mut next,
    )
}

/// A run's result, before it is written.
struct Change<'a> {
    rules: &'a Rules,
    loaded: &'a Arc<Loaded>,
    outcome: &'a engine::Outcome,
    clusters: &'a Clusters,
    assignment: &'a ids::Assignment,
    events: &'a [Event],
    /// The steward's decisions the engine replayed (a manual link names
    /// its place here).
    decisions: &'a [Decision],
    now: i64,
}

/// What the writes changed.
struct Written {
    links: usize,
    customers: usize,
    groups: usize,
}

impl Change<'_> {
    fn id_of(&self, record: usize) -> &str {
        &self.assignment.ids[self.clusters.of[record] as usize]
    }

    /// A link's rule and who made it.
    fn rule_and_actor(&self, record: usize) -> (String, String) {
        match &self.outcome.link[record].why {
            Why::Manual { decision, kind } => (
                kind.rule().to_string(),
                self.decisions
                    .get(*decision as usize)
                    .and_then(Decision::event)
                    .and_then(|event| self.events.iter().find(|e| e.event_id == event))
                    .map_or_else(|| "steward".to_string(), |e| e.actor.clone()),
            ),
            w => (why_rule(self.rules, w), "auto".to_string()),
        }
    }

    /// The suspect groups after this run.
    fn suspects(&self, input: &Inputs) -> Vec<super::suspects::Member> {
        let mut suspects = super::suspects::groups(
            self.rules,
            &self.loaded.data,
            self.outcome,
            &self.clusters.of,
            &self.assignment.ids,
            &input.suspects,
            self.now,
        );
        if let Some(scope) = &input.scope {
            // Open groups outside the scope stand as they were (a group is
            // wholly inside or wholly outside: its members are in the scope
            // together).
            suspects.extend(
                input
                    .suspects
                    .iter()
                    .filter(|m| m.status == "open" && !scope.records.contains(&m.member))
                    .cloned(),
            );
            suspects.sort_by(|a, b| a.group_id.cmp(&b.group_id).then(a.member.cmp(&b.member)));
        }
        suspects
    }

    /// The automatic merges of existing customers, as ledger events.
    fn auto_merges(&self, trigger: &Trigger) -> Vec<Event> {
        let mut out = Vec::new();
        if !matches!(trigger, Trigger::Auto | Trigger::Full) || self.assignment.retired.is_empty() {
            return out;
        }
        let n = self.loaded.data.len();
        let first = next_event_number(self.events);
        for (seq, (gone, into)) in (first..).zip(&self.assignment.retired) {
            let records: Vec<(String, Option<String>)> = (0..n)
                .filter(|&i| self.id_of(i) == into.as_str())
                .map(|i| {
                    (
                        self.loaded.data.keys[i].to_string(),
                        self.loaded.old_id.get(i).map(str::to_string),
                    )
                })
                .collect();
            out.push(Event {
                event_id: format_event(seq),
                event_type: "auto_merge".into(),
                customer_ids: vec![into.clone(), gone.clone()],
                surviving_id: Some(into.clone()),
                records,
                reason: Some("strong rule linked two existing customers".into()),
                actor: "auto".into(),
                at: self.now,
                undone_by: None,
            });
        }
        out
    }
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
        .await?;
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
