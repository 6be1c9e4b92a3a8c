//! Incremental resolution: which records a run has to look at again.
//!
//! A full run resolves every source record. After an ingest only the
//! records loaded since the last run (the *seeds*) can change anything, and
//! only within their closure under everything that ties records together:
//! shared strong-rule keys, shared blocks within their size limit, the
//! customers the records belonged to, manual decisions and open suspect
//! groups. `customer_xref.match_keys` keeps every record's keys (and the
//! fingerprint of the rules they were computed under), so the closure is
//! found from that one column without reading the records; the engine then
//! resolves the closure alone, which gives exactly what a full run gives
//! for those records, while every other record keeps its link.
//!
//! A run falls back to a full one, and says why, whenever that reasoning
//! does not hold: the rules changed, links predate match keys, or the
//! source records and the links disagree.

use std::collections::{HashMap, HashSet};

use datafusion::arrow::array::{Array, AsArray, StringArray, StringViewArray};
use datafusion::prelude::SessionContext;

use super::IdentityError;
use super::engine::{self, Dataset, Slot};
use super::rules::Rules;
use super::store::{collect, micros, utf8};

/// The `match_keys` text of a record: the rules' fingerprint, then each key.
pub(crate) fn format_keys(fingerprint: u64, keys: &[u64]) -> String {
    let mut s = String::with_capacity(17 * (keys.len() + 1));
    s.push_str(&format!("r{fingerprint:016x}"));
    for k in keys {
        s.push_str(&format!(" {k:016x}"));
    }
    s
}

/// Every record's match keys as `format_keys` text, in dataset order.
pub(crate) fn keys_text(rules: &Rules, data: &Dataset) -> Vec<String> {
    let fp = rules.fingerprint();
    let mut keys = Vec::new();
    (0..data.len())
        .map(|i| {
            engine::match_keys(rules, data, i, &mut keys);
            format_keys(fp, &keys)
        })
        .collect()
}

/// What an incremental run resolves.
#[derive(Debug, Default)]
pub(crate) struct Scope {
    /// `system:id` of every record to resolve (seeds included).
    pub records: HashSet<String>,
    /// Block keys over their size limit in the whole lake.
    pub oversized: HashSet<u64>,
    /// Records loaded since the last run.
    pub seeds: usize,
    /// Customers with no record in the scope (they keep everything).
    pub customers_outside: usize,
}

/// Either the scope of an incremental run, or why a full run is needed.
pub(crate) enum Plan {
    Full(String),
    Incremental(Scope),
}

/// Hash of a record key `system:id` from its parts, without building it.
fn key_hash(system: &str, id: &str) -> u64 {
    engine::fnv(&[system, id])
}

fn key_hash_of(key: &str) -> u64 {
    let (system, id) = key.split_once(':').unwrap_or((key, ""));
    key_hash(system, id)
}

/// A cheap first test before a hash-set lookup: most keys of a scan are
/// not wanted, and a bit test rules them out.
struct Bits(Vec<u64>);

impl Bits {
    const SIZE: usize = 1 << 22;
    fn new<'a>(keys: impl Iterator<Item = &'a u64>) -> Self {
        let mut v = vec![0u64; Self::SIZE / 64];
        for k in keys {
            let b = Self::bit(*k);
            v[b / 64] |= 1 << (b % 64);
        }
        Self(v)
    }
    fn bit(k: u64) -> usize {
        (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 42) as usize
    }
    fn may(&self, k: u64) -> bool {
        let b = Self::bit(k);
        self.0[b / 64] & (1 << (b % 64)) != 0
    }
}

/// The links table as the closure needs it: per record, its customer and
/// its keys.
struct Index {
    system: StringArray,
    id: StringArray,
    customer: Vec<u64>,
    offsets: Vec<u32>,
    keys: Vec<u64>,
}

impl Index {
    fn len(&self) -> usize {
        self.customer.len()
    }
    fn keys(&self, r: usize) -> &[u64] {
        &self.keys[self.offsets[r] as usize..self.offsets[r + 1] as usize]
    }
    fn key(&self, r: usize) -> String {
        format!("{}:{}", self.system.value(r), self.id.value(r))
    }
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &d in digits {
        let x = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(x);
    }
    Some(v)
}

/// A string column in either layout.
enum Text<'a> {
    Plain(&'a StringArray),
    View(&'a StringViewArray),
}

impl Text<'_> {
    fn get(&self, r: usize) -> Option<&str> {
        match self {
            Self::Plain(a) => a.is_valid(r).then(|| a.value(r)),
            Self::View(a) => a.is_valid(r).then(|| a.value(r)),
        }
    }
}

/// Parse the links' match keys; `Err` says why they cannot be used.
fn load_index(
    batch: &datafusion::arrow::array::RecordBatch,
    fingerprint: u64,
) -> Result<Result<Index, String>, IdentityError> {
    let system = utf8(batch, "source_system")?;
    let id = utf8(batch, "source_id")?;
    let cust = utf8(batch, "customer_id")?;
    // The widest column: read in place, whichever string layout it has.
    let column = batch
        .column_by_name("match_keys")
        .ok_or_else(|| IdentityError::Lake("customer_xref has no match_keys".into()))?;
    let cast;
    let text = if let Some(a) = column.as_string_opt::<i32>() {
        Text::Plain(a)
    } else if let Some(a) = column.as_any().downcast_ref::<StringViewArray>() {
        Text::View(a)
    } else {
        cast = utf8(batch, "match_keys")?;
        Text::Plain(&cast)
    };
    let want = format!("r{fingerprint:016x}");
    let n = batch.num_rows();
    let mut offsets = Vec::with_capacity(n + 1);
    let mut keys = Vec::with_capacity(n * 5);
    let mut customer = Vec::with_capacity(n);
    offsets.push(0u32);
    for r in 0..n {
        let Some(t) = text.get(r) else {
            return Ok(Err(
                "some links were made before match keys were kept".into()
            ));
        };
        let t = t.as_bytes();
        if !t.starts_with(want.as_bytes()) {
            return Ok(Err("the matching rules changed since the last run".into()));
        }
        // Fixed-width fields: " " and 16 hex digits per key.
        let rest = &t[want.len()..];
        if rest.len() % 17 != 0 {
            return Ok(Err("a link has malformed match keys".into()));
        }
        for chunk in rest.chunks_exact(17) {
            match parse_hex(&chunk[1..]) {
                Some(k) if chunk[0] == b' ' => keys.push(k),
                _ => return Ok(Err("a link has malformed match keys".into())),
            }
        }
        offsets.push(keys.len() as u32);
        customer.push(if cust.is_valid(r) {
            super::ids::parse_id(cust.value(r)).unwrap_or(0)
        } else {
            0
        });
    }
    Ok(Ok(Index {
        system,
        id,
        customer,
        offsets,
        keys,
    }))
}

/// Decide what the run must resolve.
///
/// `seeds`: the records ingested since the last run, loaded and normalised.
/// `also`: records a steward's decision touched. `hyperedges`: groups of
/// records that stand or fall together (manual decisions, open suspect
/// groups).
pub(crate) async fn plan(
    ctx: &SessionContext,
    rules: &Rules,
    seeds: &Dataset,
    also: &[String],
    hyperedges: &[Vec<String>],
    source_before: i64,
) -> Result<Plan, IdentityError> {
    let slots = engine::slots(rules);
    if slots.len() > 255 {
        return Ok(Plan::Full(
            "the rules have more than 255 strong rules and blocks".into(),
        ));
    }
    let Some(batch) = collect(
        ctx,
        "SELECT source_system, source_id, customer_id, match_keys FROM customer_xref",
    )
    .await?
    else {
        return Ok(Plan::Full("no records have been resolved yet".into()));
    };
    tracing::info!(rows = batch.num_rows(), "resolve: links read for the scope");
    let index = match load_index(&batch, rules.fingerprint())? {
        Ok(i) => i,
        Err(why) => return Ok(Plan::Full(why)),
    };
    let n = index.len();
    tracing::info!(keys = index.keys.len(), "resolve: match keys parsed");

    // Find the rows of the seeds, of the decision's records and of every
    // hyperedge member, in one pass.
    let mut wanted: HashMap<u64, Vec<&str>> = HashMap::new();
    for k in seeds
        .keys
        .iter()
        .chain(also)
        .chain(hyperedges.iter().flatten())
    {
        wanted.entry(key_hash_of(k)).or_default().push(k.as_str());
    }
    let mut row_of: HashMap<&str, usize> = HashMap::new();
    for r in 0..n {
        let (s, i) = (index.system.value(r), index.id.value(r));
        if let Some(ks) = wanted.get(&key_hash(s, i)) {
            for k in ks {
                if k.split_once(':') == Some((s, i)) {
                    row_of.insert(k, r);
                }
            }
        }
    }
    let mut seed_row = vec![false; n];
    let mut seeds_linked = 0;
    for r in seeds.keys.iter().filter_map(|k| row_of.get(k.as_str())) {
        seed_row[*r] = true;
        seeds_linked += 1;
    }
    // Every record not ingested since the last run must have its link.
    if n - seeds_linked != usize::try_from(source_before).unwrap_or(usize::MAX) {
        return Ok(Plan::Full(format!(
            "{} source records were loaded before the last run but {} have links",
            source_before,
            n - seeds_linked
        )));
    }

    // The seeds' current keys, and how many seeds hold each.
    let mut seed_counts: HashMap<u64, usize> = HashMap::new();
    let mut frontier: Vec<u64> = Vec::new();
    let mut k = Vec::new();
    for i in 0..seeds.len() {
        engine::match_keys(rules, seeds, i, &mut k);
        for &key in &k {
            *seed_counts.entry(key).or_default() += 1;
            frontier.push(key);
        }
    }
    let edges: Vec<Vec<usize>> = hyperedges
        .iter()
        .map(|e| {
            e.iter()
                .filter_map(|k| row_of.get(k.as_str()).copied())
                .collect()
        })
        .collect();
    let mut edges_of: HashMap<usize, Vec<usize>> = HashMap::new();
    for (e, rows) in edges.iter().enumerate() {
        for &r in rows {
            edges_of.entry(r).or_default().push(e);
        }
    }

    let mut in_scope = vec![false; n];
    let mut pending: Vec<usize> = Vec::new();
    for key in seeds.keys.iter().chain(also) {
        if let Some(&r) = row_of.get(key.as_str())
            && !in_scope[r]
        {
            in_scope[r] = true;
            pending.push(r);
        }
    }
    let (mut seen_keys, mut seen_custs, mut seen_edges) =
        (HashSet::new(), HashSet::new(), HashSet::new());
    frontier.retain(|k| seen_keys.insert(*k));
    let mut custs: Vec<u64> = Vec::new();
    let mut oversized = HashSet::new();
    let mut rounds = 0;
    loop {
        while let Some(r) = pending.pop() {
            // A seed's stored keys are its old ones: they are expanded too,
            // since the blocks it leaves change as well.
            for &key in index.keys(r) {
                if seen_keys.insert(key) {
                    frontier.push(key);
                }
            }
            let c = index.customer[r];
            if c != 0 && seen_custs.insert(c) {
                custs.push(c);
            }
            for &e in edges_of.get(&r).map(Vec::as_slice).unwrap_or_default() {
                if seen_edges.insert(e) {
                    for &m in &edges[e] {
                        if !in_scope[m] {
                            in_scope[m] = true;
                            pending.push(m);
                        }
                    }
                }
            }
        }
        if frontier.is_empty() && custs.is_empty() {
            break;
        }
        rounds += 1;
        let fk: HashSet<u64> = frontier.drain(..).collect();
        let fc: HashSet<u64> = custs.drain(..).collect();
        let (bk, bc) = (Bits::new(fk.iter()), Bits::new(fc.iter()));
        let mut counts: HashMap<u64, usize> = fk
            .iter()
            .map(|k| (*k, seed_counts.get(k).copied().unwrap_or(0)))
            .collect();
        let mut hits: Vec<(u64, usize)> = Vec::new();
        for r in 0..n {
            let c = index.customer[r];
            if bc.may(c) && fc.contains(&c) && !in_scope[r] {
                in_scope[r] = true;
                pending.push(r);
            }
            if seed_row[r] {
                continue;
            }
            for &key in index.keys(r) {
                if bk.may(key) && fk.contains(&key) {
                    *counts.entry(key).or_default() += 1;
                    hits.push((key, r));
                }
            }
        }
        for (key, r) in hits {
            let take = match slots.get(engine::slot_of(key)) {
                Some(Slot::Block { max }) => counts[&key] <= *max,
                _ => true,
            };
            if take && !in_scope[r] {
                in_scope[r] = true;
                pending.push(r);
            }
        }
        for (key, count) in counts {
            if let Some(Slot::Block { max }) = slots.get(engine::slot_of(key))
                && count > *max
            {
                oversized.insert(key);
            }
        }
    }

    tracing::info!(rounds, "resolve: closure found");
    let mut records: HashSet<String> = seeds.keys.iter().cloned().collect();
    let mut outside: Vec<u64> = Vec::with_capacity(n);
    for (r, inside) in in_scope.iter().enumerate() {
        if *inside {
            records.insert(index.key(r));
        } else {
            outside.push(index.customer[r]);
        }
    }
    outside.sort_unstable();
    outside.dedup();
    let outside = outside.len();
    Ok(Plan::Incremental(Scope {
        records,
        oversized,
        seeds: seeds.len(),
        customers_outside: outside,
    }))
}

/// The last run's watermark: the newest source version it linked, and how
/// many source records were loaded up to then.
pub(crate) async fn watermark(ctx: &SessionContext) -> Result<Option<(i64, i64)>, IdentityError> {
    let Some(b) = collect(
        ctx,
        "SELECT max(source_ingested_at) AS wm FROM customer_xref",
    )
    .await?
    else {
        return Ok(None);
    };
    let Some(wm) = micros(&b, "wm")?.first().copied().flatten() else {
        return Ok(None);
    };
    let Some(c) = collect(
        ctx,
        &format!(
            "SELECT count(*) AS n FROM source_customer WHERE ingested_at <= to_timestamp_micros({wm})"
        ),
    )
    .await?
    else {
        return Ok(None);
    };
    let n = datafusion::arrow::compute::cast(
        c.column(0),
        &datafusion::arrow::datatypes::DataType::Int64,
    )
    .map_err(|e| IdentityError::Lake(e.to_string()))?;
    let n = n
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .map_or(0, |a| a.value(0));
    Ok(Some((wm, n)))
}
