//! Reading the identity tables: source records with their previous links,
//! the customers the lake knows, and the small helpers every reader uses.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast, concat_batches};
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

/// A text column filled in any order (`set`), by record: each value is
/// stored once in arrival order, or once per distinct value (`interned`,
/// for the few distinct values of a rule or an actor).
pub(crate) struct TextAt {
    text: StrColumn,
    distinct: Option<HashMap<String, u32>>,
    at: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl TextAt {
    fn new(rows: usize, interned: bool) -> Self {
        Self {
            text: StrColumn::default(),
            distinct: interned.then(HashMap::new),
            at: vec![NONE; rows],
        }
    }

    fn set(&mut self, row: usize, v: Option<&str>) {
        let Some(v) = v.filter(|v| !v.is_empty()) else {
            self.at[row] = NONE;
            return;
        };
        let slot = match &mut self.distinct {
            Some(d) => match d.get(v) {
                Some(&s) => s,
                None => {
                    let s = self.text.len() as u32;
                    d.insert(v.to_string(), s);
                    self.text.push(Some(v));
                    s
                }
            },
            None => {
                self.text.push(Some(v));
                (self.text.len() - 1) as u32
            }
        };
        self.at[row] = slot;
    }

    /// The value of `row`; `None` when it has none (or it is empty).
    pub(crate) fn get(&self, row: usize) -> Option<&str> {
        match self.at.get(row) {
            Some(&s) if s != NONE => self.text.get(s as usize),
            _ => None,
        }
    }
}

/// The hash a record's `match_keys` text is compared by.
pub(crate) fn keys_hash(text: &str) -> u64 {
    crate::domain::fnv(&[text])
}

/// Where a golden field's raw value is kept.
enum Raw {
    /// In the rules' column of the same field (the rules keep it as is).
    Rules(usize),
    /// In a column of its own.
    Own(StrColumn),
    /// Nowhere: the field is read from `birth`.
    Birth,
}

/// Source records, sorted by key, with their previous links. Held in
/// compact columns (one text buffer and an end offset per value), with
/// only the fields resolution reads: the rules' fields (normalised), the
/// golden fields (as stored), the dates of the record.
pub(crate) struct Loaded {
    pub data: Dataset,
    raw: Vec<Raw>,
    pub birth: Vec<Option<i32>>,
    pub old_id: TextAt,
    pub old_rule: TextAt,
    pub old_by: TextAt,
    pub old_ingested: Vec<Option<i64>>,
    /// [`keys_hash`] of the record's previous `match_keys`.
    pub old_keys: Vec<Option<u64>>,
    pub ingested: Vec<Option<i64>>,
    pub updated: Vec<Option<i64>>,
}

impl Loaded {
    /// The source system of record `i` (its key is `system:id`).
    pub(crate) fn system(&self, i: usize) -> &str {
        let k = &self.data.keys[i];
        k.split_once(':').map_or(k.as_str(), |(s, _)| s)
    }

    /// The source id of record `i`.
    pub(crate) fn source_id(&self, i: usize) -> &str {
        let k = &self.data.keys[i];
        k.split_once(':').map_or("", |(_, id)| id)
    }

    /// Golden field `f` (in [`super::resolve::GOLDEN`] order) of record
    /// `i` as stored; `None` when null or empty. The birth date is in
    /// `birth`.
    pub(crate) fn golden(&self, f: usize, i: usize) -> Option<&str> {
        match &self.raw[f] {
            Raw::Rules(c) => self.data.value(*c, i),
            Raw::Own(col) => col.get(i),
            Raw::Birth => None,
        }
    }

    /// Whether golden field `f` of record `i` has a value.
    pub(crate) fn has_golden(&self, f: usize, i: usize) -> bool {
        match &self.raw[f] {
            Raw::Birth => self.birth[i].is_some(),
            _ => self.golden(f, i).is_some(),
        }
    }
}

/// Where a load takes the records' previous links from.
pub(crate) enum Links<'a> {
    /// There are none yet.
    None,
    /// Read from `customer_xref`.
    Join,
    /// Already read, by record key (an incremental run's scope).
    Known(&'a HashMap<String, super::scope::OldLink>),
}

/// Load the source records `filter` keeps (a clause after `FROM
/// source_customer s ...`, which may join and filter); `None` when none.
/// The rows are read batch by batch into compact columns: the Arrow
/// batches are never all held at once.
pub(crate) async fn load_records(
    ctx: &SessionContext,
    rules: &Rules,
    links: Links<'_>,
    filter: &str,
) -> Result<Option<Loaded>, IdentityError> {
    use futures::StreamExt;
    let golden = super::resolve::GOLDEN;
    let mut names: Vec<&str> = vec!["source_system", "source_id", "ingested_at", "updated_at"];
    for f in rules.fields.iter().map(String::as_str).chain(golden) {
        if !names.contains(&f) {
            names.push(f);
        }
    }
    let table = ctx.table_provider("source_customer").await?.schema();
    if let Some(f) = rules
        .fields
        .iter()
        .find(|f| table.field_with_name(f).is_err())
    {
        return Err(IdentityError::RulesMismatch(format!(
            "the rules use field {f}, which source_customer does not have"
        )));
    }
    let select: Vec<String> = names
        .iter()
        .map(|n| format!("s.{}", crate::lake::quote_ident(n)))
        .collect();
    let sql = format!(
        "SELECT {} FROM source_customer s {filter}",
        select.join(", ")
    );
    let df = ctx.sql(&sql).await?;
    // Which golden fields the rules' columns hold as stored.
    let raw_of = |g: &str| -> Raw {
        if g == "birth_date" {
            return Raw::Birth;
        }
        match rules.fields.iter().position(|f| f == g) {
            Some(c) if rules.normalize[c].is_empty() => Raw::Rules(c),
            _ => Raw::Own(StrColumn::default()),
        }
    };
    let mut raw: Vec<Raw> = golden.iter().map(|g| raw_of(g)).collect();
    let mut cols: Vec<StrColumn> = vec![StrColumn::default(); rules.fields.len()];
    let (mut keys, mut birth) = (Vec::new(), Vec::new());
    let (mut ingested, mut updated) = (Vec::new(), Vec::new());
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let n = batch.num_rows();
        let system = utf8(&batch, "source_system")?;
        let id = utf8(&batch, "source_id")?;
        keys.extend((0..n).map(|i| format!("{}:{}", system.value(i), id.value(i))));
        ingested.extend(micros(&batch, "ingested_at")?);
        updated.extend(micros(&batch, "updated_at")?);
        for ((f, norms), col) in rules.fields.iter().zip(&rules.normalize).zip(&mut cols) {
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
        }
        for (g, r) in golden.iter().zip(&mut raw) {
            match r {
                Raw::Own(col) => {
                    let a = utf8(&batch, g)?;
                    (0..n).for_each(|i| col.push(opt(&a, i)));
                }
                Raw::Birth => {
                    let c = batch.column_by_name(g).ok_or_else(|| missing(g))?;
                    let d = cast(c, &DataType::Date32).map_err(|e| mistyped(g, e))?;
                    let d = d.as_primitive::<datafusion::arrow::datatypes::Date32Type>();
                    birth.extend((0..n).map(|i| d.is_valid(i).then(|| d.value(i))));
                }
                Raw::Rules(_) => {}
            }
        }
    }
    if keys.is_empty() {
        return Ok(None);
    }
    // Key order, column by column (one column is copied at a time).
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    order.sort_unstable_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]));
    let keys = {
        let mut slots: Vec<Option<String>> = keys.into_iter().map(Some).collect();
        order
            .iter()
            .map(|&o| slots[o as usize].take().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    for c in &mut cols {
        *c = c.permuted(&order);
    }
    for r in &mut raw {
        if let Raw::Own(c) = r {
            *c = c.permuted(&order);
        }
    }
    let by = |v: &[Option<i64>]| order.iter().map(|&o| v[o as usize]).collect::<Vec<_>>();
    let (ingested, updated) = (by(&ingested), by(&updated));
    let birth: Vec<Option<i32>> = if birth.is_empty() {
        vec![None; keys.len()]
    } else {
        order.iter().map(|&o| birth[o as usize]).collect()
    };
    drop(order);
    let n = keys.len();
    let mut loaded = Loaded {
        data: Dataset { keys, cols },
        raw,
        birth,
        old_id: TextAt::new(n, false),
        old_rule: TextAt::new(n, true),
        old_by: TextAt::new(n, true),
        old_ingested: vec![None; n],
        old_keys: vec![None; n],
        ingested,
        updated,
    };
    match links {
        Links::None => {}
        Links::Known(old) => {
            for i in 0..n {
                if let Some(o) = old.get(&loaded.data.keys[i]) {
                    loaded.set_link(i, &o.customer_id, &o.rule, &o.linked_by, o.ingested);
                    loaded.old_keys[i] = Some(keys_hash(&o.match_keys));
                }
            }
        }
        Links::Join => loaded.read_links(ctx).await?,
    }
    Ok(Some(loaded))
}

impl Loaded {
    fn set_link(&mut self, i: usize, id: &str, rule: &str, by: &str, ingested: Option<i64>) {
        self.old_id.set(i, Some(id));
        self.old_rule.set(i, Some(rule));
        self.old_by.set(i, Some(by));
        self.old_ingested[i] = ingested;
    }

    /// Each record's link from `customer_xref`, streamed and placed by key
    /// (links of records not loaded are passed over).
    async fn read_links(&mut self, ctx: &SessionContext) -> Result<(), IdentityError> {
        use futures::StreamExt;
        let df = ctx
            .sql(
                "SELECT source_system, source_id, customer_id, rule, linked_by, \
                 source_ingested_at, match_keys FROM customer_xref",
            )
            .await?;
        let mut stream = df.execute_stream().await?;
        let (mut key, mut next) = (String::new(), 0usize);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let system = utf8(&batch, "source_system")?;
            let id = utf8(&batch, "source_id")?;
            let customer = utf8(&batch, "customer_id")?;
            let rule = utf8(&batch, "rule")?;
            let by = utf8(&batch, "linked_by")?;
            let keys = utf8(&batch, "match_keys")?;
            let at = micros(&batch, "source_ingested_at")?;
            for (r, at) in at.into_iter().enumerate() {
                key.clear();
                key.push_str(system.value(r));
                key.push(':');
                key.push_str(id.value(r));
                // Links are mostly stored in key order: try the next record first.
                let keys_of = &self.data.keys;
                let i = if keys_of.get(next).is_some_and(|k| *k == key) {
                    next
                } else {
                    match keys_of.binary_search_by(|k| k.as_str().cmp(&key)) {
                        Ok(i) => i,
                        Err(_) => continue,
                    }
                };
                next = i + 1;
                self.old_id.set(i, opt(&customer, r));
                self.old_rule.set(i, opt(&rule, r));
                self.old_by.set(i, opt(&by, r));
                self.old_ingested[i] = at;
                self.old_keys[i] = opt(&keys, r).map(keys_hash);
            }
        }
        Ok(())
    }
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
