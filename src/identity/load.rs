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
use super::engine::{Dataset, Keys, StrColumn};
use super::ids::{self, Known};
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
#[derive(Clone)]
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

/// Finds records by key (`system:id`) in a stream mostly in key order
/// (links, and the source records as stored): the record after the last
/// one found is tried before a search.
#[derive(Default)]
struct Cursor {
    key: String,
    next: usize,
}

/// A record's key, `system:id`, written into `out`.
fn write_key(out: &mut String, system: &str, id: &str) {
    out.clear();
    out.push_str(system);
    out.push(':');
    out.push_str(id);
}

impl Cursor {
    fn find(&mut self, keys: &Keys, system: &str, id: &str) -> Option<usize> {
        write_key(&mut self.key, system, id);
        let i = if keys.get(self.next) == Some(self.key.as_str()) {
            self.next
        } else {
            keys.binary_search(&self.key).ok()?
        };
        self.next = i + 1;
        Some(i)
    }
}

/// Optional instants (microseconds), eight bytes each: `NONE` is none.
#[derive(Clone, Default)]
pub(crate) struct Micros(Vec<i64>);

impl Micros {
    const NONE: i64 = i64::MIN;

    fn of(v: Option<i64>) -> i64 {
        v.unwrap_or(Self::NONE)
    }

    /// Record `i`'s instant.
    pub(crate) fn get(&self, i: usize) -> Option<i64> {
        self.0.get(i).copied().filter(|&v| v != Self::NONE)
    }
}

/// The hash a record's `match_keys` text is compared by.
pub(crate) fn keys_hash(text: &str) -> u64 {
    crate::domain::fnv(&[text])
}

/// No birth date (a day no date of birth falls on).
const NO_BIRTH: i32 = i32::MIN;

/// Where a golden field's raw value is kept.
#[derive(Clone)]
enum Raw {
    /// In the rules' column of the same field (the rules keep it as is).
    Rules(usize),
    /// In a column of its own, by record, filled by
    /// [`Loaded::read_golden`].
    Own(TextAt),
    /// Nowhere: the field is read from `birth`.
    Birth,
}

/// Golden fields of few distinct values (codes, teams, agents): each is
/// held once and every record points at it.
const INTERNED: [&str; 7] = [
    "customer_type",
    "gender",
    "id_type",
    "industry",
    "owning_team",
    "region",
    "agent_id",
];

/// Source records, sorted by key, with their previous links. Held in
/// compact columns (one text buffer and an end offset per value), with
/// only the fields resolution reads: the rules' fields (normalised), the
/// dates of the record, and after matching (`read_golden`) the golden
/// fields as stored, so matching does not hold them.
#[derive(Clone)]
pub(crate) struct Loaded {
    pub data: Dataset,
    raw: Vec<Raw>,
    /// The clause after `FROM source_customer s` the records were read
    /// with (the golden fields are read with it again).
    filter: String,
    /// Days since 1970, [`NO_BIRTH`] for none (four bytes a record).
    birth: Vec<i32>,
    pub old_id: TextAt,
    pub old_rule: TextAt,
    pub old_by: TextAt,
    pub old_ingested: Micros,
    /// [`keys_hash`] of the record's previous `match_keys`, 0 for none.
    old_keys: Vec<u64>,
    /// The previous links are to be read from `customer_xref`.
    links_later: bool,
    pub ingested: Micros,
    pub updated: Micros,
}

impl Loaded {
    /// The source system of record `i` (its key is `system:id`).
    pub(crate) fn system(&self, i: usize) -> &str {
        let k = &self.data.keys[i];
        k.split_once(':').map_or(k, |(s, _)| s)
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
            Raw::Own(t) => t.get(i),
            Raw::Birth => None,
        }
    }

    /// The birth date of record `i` (days since 1970), once
    /// [`Loaded::read_golden`] has read it.
    pub(crate) fn birth(&self, i: usize) -> Option<i32> {
        self.birth.get(i).copied().filter(|&d| d != NO_BIRTH)
    }

    /// Whether golden field `f` of record `i` has a value.
    pub(crate) fn has_golden(&self, f: usize, i: usize) -> bool {
        match &self.raw[f] {
            Raw::Birth => self.birth(i).is_some(),
            _ => self.golden(f, i).is_some(),
        }
    }
}

/// Where a load takes the records' previous links from.
pub(crate) enum Links<'a> {
    /// There are none yet.
    None,
    /// Read from `customer_xref`, after matching
    /// ([`Loaded::read_links_later`]).
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
    for f in rules.fields.iter().map(String::as_str) {
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
            _ => Raw::Own(TextAt::new(0, false)),
        }
    };
    let raw: Vec<Raw> = golden.iter().map(|g| raw_of(g)).collect();
    let mut cols: Vec<StrColumn> = vec![StrColumn::default(); rules.fields.len()];
    let (mut keys, mut key) = (StrColumn::default(), String::new());
    let (mut ingested, mut updated) = (Vec::new(), Vec::new());
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let n = batch.num_rows();
        let system = utf8(&batch, "source_system")?;
        let id = utf8(&batch, "source_id")?;
        for i in 0..n {
            write_key(&mut key, system.value(i), id.value(i));
            keys.push(Some(&key));
        }
        ingested.extend(micros(&batch, "ingested_at")?.into_iter().map(Micros::of));
        updated.extend(micros(&batch, "updated_at")?.into_iter().map(Micros::of));
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
    }
    if keys.is_empty() {
        return Ok(None);
    }
    // Key order, column by column (one column is copied at a time).
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    order.sort_unstable_by(|a, b| keys.get(*a as usize).cmp(&keys.get(*b as usize)));
    let keys = Keys::ordered(&keys, &order);
    for c in &mut cols {
        *c = c.permuted(&order);
    }
    let by = |v: &[i64]| Micros(order.iter().map(|&o| v[o as usize]).collect());
    let (ingested, updated) = (by(&ingested), by(&updated));
    drop(order);
    let n = keys.len();
    let mut loaded = Loaded {
        data: Dataset { keys, cols },
        raw,
        filter: filter.to_string(),
        birth: Vec::new(),
        old_id: TextAt::new(0, false),
        old_rule: TextAt::new(0, true),
        old_by: TextAt::new(0, true),
        old_ingested: Micros::default(),
        old_keys: Vec::new(),
        links_later: matches!(links, Links::Join),
        ingested,
        updated,
    };
    match links {
        // Read after matching (`read_links_later`), which does not need them.
        Links::None | Links::Join => {}
        Links::Known(old) => {
            loaded.no_links();
            for i in 0..n {
                if let Some(o) = old.get(&loaded.data.keys[i]) {
                    loaded.set_link(i, &o.customer_id, &o.rule, &o.linked_by, o.ingested);
                    loaded.old_keys[i] = keys_hash(&o.match_keys);
                }
            }
        }
    }
    Ok(Some(loaded))
}

impl Loaded {
    /// Every record without a previous link, ready for links to be set.
    fn no_links(&mut self) {
        let n = self.data.len();
        self.old_id = TextAt::new(n, false);
        self.old_rule = TextAt::new(n, true);
        self.old_by = TextAt::new(n, true);
        self.old_ingested = Micros(vec![Micros::NONE; n]);
        self.old_keys = vec![0; n];
    }

    /// The previous links of a load from `customer_xref`
    /// ([`Links::Join`]), read now: after matching, which does not need
    /// them.
    pub(crate) async fn read_links_later(
        &mut self,
        ctx: &SessionContext,
    ) -> Result<(), IdentityError> {
        if std::mem::take(&mut self.links_later) {
            self.read_links(ctx).await?;
        }
        Ok(())
    }

    /// [`keys_hash`] of record `i`'s previous `match_keys` (0: none).
    pub(crate) fn old_keys(&self, i: usize) -> u64 {
        self.old_keys.get(i).copied().unwrap_or(0)
    }

    /// Read the golden fields the rules' columns do not hold, and the birth
    /// dates, of the loaded records (the same rows of the same table
    /// version), each placed at its record's key. Called after matching,
    /// before golden records are built.
    pub(crate) async fn read_golden(&mut self, ctx: &SessionContext) -> Result<(), IdentityError> {
        use futures::StreamExt;
        let golden = super::resolve::GOLDEN;
        let n = self.data.len();
        let mut names: Vec<(usize, &str)> = Vec::new();
        for (f, r) in self.raw.iter_mut().enumerate() {
            match r {
                Raw::Own(t) => {
                    *t = TextAt::new(n, INTERNED.contains(&golden[f]));
                    names.push((f, golden[f]));
                }
                Raw::Birth => names.push((f, golden[f])),
                Raw::Rules(_) => {}
            }
        }
        self.birth = vec![NO_BIRTH; n];
        let select: Vec<String> = ["source_system", "source_id"]
            .into_iter()
            .chain(names.iter().map(|(_, g)| *g))
            .map(|g| format!("s.{}", crate::lake::quote_ident(g)))
            .collect();
        let sql = format!(
            "SELECT {} FROM source_customer s {}",
            select.join(", "),
            self.filter
        );
        let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
        let (mut cursor, mut found) = (Cursor::default(), 0usize);
        let mut rows: Vec<usize> = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let system = utf8(&batch, "source_system")?;
            let id = utf8(&batch, "source_id")?;
            rows.clear();
            for r in 0..batch.num_rows() {
                let i = cursor
                    .find(&self.data.keys, system.value(r), id.value(r))
                    .ok_or_else(|| {
                        IdentityError::Damaged(format!(
                            "source record {} was not read with the others",
                            cursor.key
                        ))
                    })?;
                rows.push(i);
            }
            found += rows.len();
            for &(f, g) in &names {
                match &mut self.raw[f] {
                    Raw::Own(t) => {
                        let a = utf8(&batch, g)?;
                        for (r, &i) in rows.iter().enumerate() {
                            t.set(i, opt(&a, r));
                        }
                    }
                    Raw::Birth => {
                        let c = batch.column_by_name(g).ok_or_else(|| missing(g))?;
                        let d = cast(c, &DataType::Date32).map_err(|e| mistyped(g, e))?;
                        let d = d.as_primitive::<datafusion::arrow::datatypes::Date32Type>();
                        for (r, &i) in rows.iter().enumerate() {
                            self.birth[i] = if d.is_valid(r) { d.value(r) } else { NO_BIRTH };
                        }
                    }
                    Raw::Rules(_) => {}
                }
            }
        }
        if found != n {
            return Err(IdentityError::Damaged(format!(
                "{found} of {n} source records were read again for their golden fields"
            )));
        }
        Ok(())
    }

    /// Let go of what only matching and linking read: the previous links
    /// and the rules' columns that hold no golden field.
    pub(crate) fn let_go_of_matching(&mut self) {
        for (c, col) in self.data.cols.iter_mut().enumerate() {
            if !self
                .raw
                .iter()
                .any(|r| matches!(r, Raw::Rules(k) if *k == c))
            {
                *col = StrColumn::default();
            }
        }
        for t in [&mut self.old_id, &mut self.old_rule, &mut self.old_by] {
            *t = TextAt::new(0, false);
        }
        self.old_ingested = Micros::default();
        self.old_keys = Vec::new();
    }

    fn set_link(&mut self, i: usize, id: &str, rule: &str, by: &str, ingested: Option<i64>) {
        self.old_id.set(i, Some(id));
        self.old_rule.set(i, Some(rule));
        self.old_by.set(i, Some(by));
        self.old_ingested.0[i] = Micros::of(ingested);
    }

    /// Each record's link from `customer_xref`, streamed and placed by key
    /// (links of records not loaded are passed over).
    async fn read_links(&mut self, ctx: &SessionContext) -> Result<(), IdentityError> {
        use futures::StreamExt;
        self.no_links();
        let df = ctx
            .sql(
                "SELECT source_system, source_id, customer_id, rule, linked_by, \
                 source_ingested_at, match_keys FROM customer_xref",
            )
            .await?;
        let mut stream = df.execute_stream().await?;
        let mut cursor = Cursor::default();
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
                let Some(i) = cursor.find(&self.data.keys, system.value(r), id.value(r)) else {
                    continue;
                };
                self.old_id.set(i, opt(&customer, r));
                self.old_rule.set(i, opt(&rule, r));
                self.old_by.set(i, opt(&by, r));
                self.old_ingested.0[i] = Micros::of(at);
                self.old_keys[i] = opt(&keys, r).map_or(0, keys_hash);
            }
        }
        Ok(())
    }
}

/// What the lake knows of each customer: when it was created, whether it
/// is active, and its golden record's fingerprint. An id of the standard
/// form and a fingerprint of sixteen hex digits are held as numbers (40
/// bytes a customer instead of about 110 as text); anything else as text.
#[derive(Default)]
pub(crate) struct KnownCustomers {
    standard: HashMap<u64, (Known, Option<u64>)>,
    other: HashMap<String, (Known, Option<String>)>,
}

impl KnownCustomers {
    fn insert(&mut self, id: &str, known: Known, fingerprint: Option<&str>) {
        match (standard_id(id), fingerprint.map(hex16)) {
            (Some(n), None) => {
                self.standard.insert(n, (known, None));
            }
            (Some(n), Some(Some(v))) => {
                self.standard.insert(n, (known, Some(v)));
            }
            _ => {
                self.other
                    .insert(id.to_string(), (known, fingerprint.map(str::to_string)));
            }
        }
    }

    /// What the lake knows of customer `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&Known> {
        match standard_id(id).and_then(|n| self.standard.get(&n)) {
            Some((k, _)) => Some(k),
            None => self.other.get(id).map(|(k, _)| k),
        }
    }

    /// Whether customer `id` is active with a golden record of this
    /// fingerprint (so it need not be written again).
    pub(crate) fn unchanged(&self, id: &str, fingerprint: &str) -> bool {
        match standard_id(id).and_then(|n| self.standard.get(&n)) {
            Some((k, fp)) => k.active && fp.is_some_and(|v| hex16(fingerprint) == Some(v)),
            None => self
                .other
                .get(id)
                .is_some_and(|(k, fp)| k.active && fp.as_deref() == Some(fingerprint)),
        }
    }

    /// The highest number of the standard ids known.
    pub(crate) fn highest(&self) -> Option<u64> {
        let other = self.other.keys().filter_map(|id| ids::parse_id(id));
        self.standard.keys().copied().chain(other).max()
    }
}

/// The number of an id of the standard form (`CU` and ten digits, as
/// `ids::format_id` writes it).
fn standard_id(id: &str) -> Option<u64> {
    let d = id.strip_prefix("CU")?;
    (d.len() == 10 && d.bytes().all(|b| b.is_ascii_digit()))
        .then(|| d.parse().ok())
        .flatten()
}

/// A fingerprint of sixteen lowercase hex digits as its number.
fn hex16(f: &str) -> Option<u64> {
    (f.len() == 16 && f.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| u64::from_str_radix(f, 16).ok())
        .flatten()
}

/// What the lake knows of customers: every one, or (`only`) those ids,
/// read batch by batch.
pub(crate) async fn load_known(
    ctx: &SessionContext,
    have: bool,
    only: Option<Vec<String>>,
) -> Result<KnownCustomers, IdentityError> {
    use futures::StreamExt;
    let mut out = KnownCustomers::default();
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
    let mut stream = ctx.sql(sql).await?.execute_stream().await?;
    while let Some(b) = stream.next().await {
        let b = b?;
        let id = utf8(&b, "customer_id")?;
        let status = utf8(&b, "status")?;
        let fp = utf8(&b, "fingerprint")?;
        let created = micros(&b, "created_at")?;
        for (i, created) in created.iter().enumerate() {
            out.insert(
                id.value(i),
                Known {
                    created_at: created.unwrap_or(0),
                    active: status.value(i) == "active",
                },
                opt(&fp, i),
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_customers_answer_alike_held_as_numbers_or_as_text() {
        let mut k = KnownCustomers::default();
        let active = |created_at| Known {
            created_at,
            active: true,
        };
        k.insert("CU0000000042", active(1), Some("00000000000000ff"));
        k.insert("CU0000000043", active(2), None);
        k.insert("CU42", active(3), Some("00000000000000ff"));
        k.insert("CU0000000044", active(4), Some("FF"));
        k.insert(
            "CU0000000045",
            Known {
                created_at: 5,
                active: false,
            },
            Some("00000000000000ff"),
        );
        assert_eq!(k.standard.len(), 3);
        assert_eq!(k.other.len(), 2);
        // CU42 and CU0000000042 are different customers.
        assert_eq!(k.get("CU42").map(|k| k.created_at), Some(3));
        assert_eq!(k.get("CU0000000042").map(|k| k.created_at), Some(1));
        assert_eq!(k.get("CU0000000044").map(|k| k.created_at), Some(4));
        assert!(k.get("CU0000000046").is_none());
        assert!(k.unchanged("CU0000000042", "00000000000000ff"));
        assert!(!k.unchanged("CU0000000042", "00000000000000fe"));
        assert!(!k.unchanged("CU0000000042", "ff"));
        assert!(!k.unchanged("CU0000000043", "00000000000000ff"));
        assert!(k.unchanged("CU42", "00000000000000ff"));
        assert!(k.unchanged("CU0000000044", "FF"));
        // An inactive customer's record is written again.
        assert!(!k.unchanged("CU0000000045", "00000000000000ff"));
        assert_eq!(k.highest(), Some(45));
    }
}
