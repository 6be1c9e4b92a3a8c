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
use super::load::{collect, micros, utf8};
use crate::schema::rules::Rules;

/// The `match_keys` text of a record: the rules' fingerprint, then each key.
pub(crate) fn format_keys(fingerprint: u64, keys: &[u64]) -> String {
    let mut s = String::with_capacity(17 * (keys.len() + 1));
    write_keys(fingerprint, keys, &mut s);
    s
}

/// [`format_keys`] into `s` (cleared first).
pub(crate) fn write_keys(fingerprint: u64, keys: &[u64], s: &mut String) {
    use std::fmt::Write;
    s.clear();
    // Writing to a String cannot fail.
    let _ = write!(s, "r{fingerprint:016x}");
    for k in keys {
        let _ = write!(s, " {k:016x}");
    }
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
    /// The current link of every linked record in the scope.
    pub old: HashMap<String, OldLink>,
}

/// A record's link as the last run left it.
#[derive(Debug, Clone)]
pub(crate) struct OldLink {
    pub customer_id: String,
    pub rule: String,
    pub linked_by: String,
    pub ingested: Option<i64>,
    pub match_keys: String,
}

/// Either the scope of an incremental run, or why a full run is needed.
pub(crate) enum Plan {
    Full(String),
    Incremental(Scope),
}

/// Hash of a record key `system:id` from its parts, without building it.
fn key_hash(system: &str, id: &str) -> u64 {
    crate::domain::fnv(&[system, id])
}

fn key_hash_of(key: &str) -> u64 {
    let (system, id) = key.split_once(':').unwrap_or((key, ""));
    key_hash(system, id)
}

/// Which rows hold a value, for every value at once: rows listed by a
/// hash bucket of the value (a row once per bucket), so a lookup reads a
/// few candidate rows and checks them. Built in two linear passes.
struct Postings {
    bits: u32,
    start: Vec<u32>,
    rows: Vec<u32>,
}

impl Postings {
    fn bucket(v: u64, bits: u32) -> usize {
        (v.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    /// `values(r)`: the values row `r` holds. A two-pass radix sort of
    /// (bucket, row) pairs, each pass touching only a cache-sized table:
    /// one counter per bucket updated in random order would miss the cache
    /// on nearly every pair.
    fn build<'a>(n: usize, bits: u32, values: impl Fn(usize) -> &'a [u64]) -> Self {
        const HIGH: u32 = 8;
        let low_bits = bits.saturating_sub(HIGH);
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(n * 5);
        let mut seen: Vec<u32> = Vec::new();
        for r in 0..n {
            seen.clear();
            for &v in values(r) {
                let b = Self::bucket(v, bits) as u32;
                if !seen.contains(&b) {
                    seen.push(b);
                    pairs.push((b, r as u32));
                }
            }
        }
        // Pass 1: by the high bits of the bucket, into 256 runs.
        let mut run = [0usize; (1 << HIGH) + 1];
        for &(b, _) in &pairs {
            run[(b >> low_bits) as usize + 1] += 1;
        }
        for h in 0..1 << HIGH {
            run[h + 1] += run[h];
        }
        let mut at = run;
        let mut by_high = vec![(0u32, 0u32); pairs.len()];
        for &(b, r) in &pairs {
            let h = (b >> low_bits) as usize;
            by_high[at[h]] = (b, r);
            at[h] += 1;
        }
        drop(pairs);
        // Pass 2: within each run, by the low bits (stable, so each
        // bucket lists its rows in order).
        let size = 1usize << bits;
        let low_mask = (1u32 << low_bits) - 1;
        let mut start = vec![0u32; size + 1];
        let mut rows = vec![0u32; by_high.len()];
        let mut count = vec![0u32; 1 << low_bits];
        for h in 0..1usize << bits.min(HIGH) {
            let part = &by_high[run[h]..run[h + 1]];
            count.fill(0);
            for &(b, _) in part {
                count[(b & low_mask) as usize] += 1;
            }
            let mut pos = run[h] as u32;
            for (l, c) in count.iter_mut().enumerate() {
                start[(h << low_bits) + l] = pos;
                let here = *c;
                *c = pos;
                pos += here;
            }
            for &(b, r) in part {
                let c = &mut count[(b & low_mask) as usize];
                rows[*c as usize] = r;
                *c += 1;
            }
        }
        start[size] = rows.len() as u32;
        Self { bits, start, rows }
    }

    /// Rows that may hold `v` (each must be checked).
    fn candidates(&self, v: u64) -> &[u32] {
        let b = Self::bucket(v, self.bits);
        &self.rows[self.start[b] as usize..self.start[b + 1] as usize]
    }
}

/// The links table as the closure needs it: per record, its customer and
/// its keys.
struct Index {
    system: StringArray,
    id: StringArray,
    customer_id: StringArray,
    rule: StringArray,
    linked_by: StringArray,
    ingested: Vec<Option<i64>>,
    fingerprint: u64,
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
    fn link(&self, r: usize) -> OldLink {
        let text = |a: &StringArray| {
            if a.is_valid(r) {
                a.value(r).to_string()
            } else {
                String::new()
            }
        };
        OldLink {
            customer_id: text(&self.customer_id),
            rule: text(&self.rule),
            linked_by: text(&self.linked_by),
            ingested: self.ingested[r],
            match_keys: format_keys(self.fingerprint, self.keys(r)),
        }
    }
}

/// Hex digit values; 16 marks a byte that is not a lower-case hex digit.
const HEX: [u8; 256] = {
    let mut t = [16u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Sixteen hex digits as a number: a table lookup per digit, no branch
/// (the digits of a hash are random, so branches would be mispredicted).
fn parse_hex(digits: &[u8; 16]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut bad = 0u8;
    for &d in digits {
        let x = HEX[d as usize];
        bad |= x;
        v = (v << 4) | u64::from(x & 15);
    }
    (bad & 16 == 0).then_some(v)
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
        .ok_or_else(|| IdentityError::Damaged("customer_xref has no match_keys".into()))?;
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
            let digits: &[u8; 16] = chunk[1..].try_into().unwrap_or(&[0; 16]);
            match parse_hex(digits) {
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
        customer_id: cust,
        rule: utf8(batch, "rule")?,
        linked_by: utf8(batch, "linked_by")?,
        ingested: micros(batch, "source_ingested_at")?,
        fingerprint,
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
        "SELECT source_system, source_id, customer_id, rule, linked_by, source_ingested_at, \
         match_keys FROM customer_xref",
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
    let row_of = locate(&index, seeds, also, hyperedges);
    let mut seed_row = vec![false; n];
    let mut seeds_linked = 0;
    for r in seeds.keys.iter().filter_map(|k| row_of.get(k)) {
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
    let mut closure = Closure::new(&index, rules, seeds, &seed_row, &row_of, hyperedges);
    for key in seeds.keys.iter().chain(also.iter().map(String::as_str)) {
        if let Some(&r) = row_of.get(key) {
            closure.include(r);
        }
    }
    closure.run(&slots);
    tracing::info!(keys = closure.seen_keys.len(), "resolve: closure found");
    Ok(Plan::Incremental(closure.scope(seeds)))
}

/// The rows of the seeds, of the decision's records and of every
/// hyperedge member, found in one pass.
fn locate<'k>(
    index: &Index,
    seeds: &'k Dataset,
    also: &'k [String],
    hyperedges: &'k [Vec<String>],
) -> HashMap<&'k str, usize> {
    let mut wanted: HashMap<u64, Vec<&str>> = HashMap::new();
    for k in seeds
        .keys
        .iter()
        .chain(also.iter().map(String::as_str))
        .chain(hyperedges.iter().flatten().map(String::as_str))
    {
        wanted.entry(key_hash_of(k)).or_default().push(k);
    }
    let mut row_of: HashMap<&str, usize> = HashMap::new();
    for r in 0..index.len() {
        let (s, i) = (index.system.value(r), index.id.value(r));
        if let Some(ks) = wanted.get(&key_hash(s, i)) {
            for k in ks {
                if k.split_once(':') == Some((s, i)) {
                    row_of.insert(k, r);
                }
            }
        }
    }
    row_of
}

/// The closure of an incremental run: every record that shares a key (in
/// a block within its limit) or a customer or a hyperedge with the seeds,
/// transitively.
struct Closure<'a> {
    index: &'a Index,
    seed_row: &'a [bool],
    /// How many seeds hold each key (by their new keys).
    seed_counts: HashMap<u64, usize>,
    /// Hyperedges (decisions, open suspect groups) as rows, and each row's.
    edges: Vec<Vec<usize>>,
    edges_of: HashMap<usize, Vec<usize>>,
    in_scope: Vec<bool>,
    pending: Vec<usize>,
    frontier: Vec<u64>,
    custs: Vec<u64>,
    seen_keys: HashSet<u64>,
    seen_custs: HashSet<u64>,
    seen_edges: HashSet<usize>,
    oversized: HashSet<u64>,
}

impl<'a> Closure<'a> {
    fn new(
        index: &'a Index,
        rules: &Rules,
        seeds: &Dataset,
        seed_row: &'a [bool],
        row_of: &HashMap<&str, usize>,
        hyperedges: &[Vec<String>],
    ) -> Self {
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
        let mut seen_keys = HashSet::new();
        frontier.retain(|k| seen_keys.insert(*k));
        Self {
            index,
            seed_row,
            seed_counts,
            edges,
            edges_of,
            in_scope: vec![false; index.len()],
            pending: Vec::new(),
            frontier,
            custs: Vec::new(),
            seen_keys,
            seen_custs: HashSet::new(),
            seen_edges: HashSet::new(),
            oversized: HashSet::new(),
        }
    }

    fn include(&mut self, r: usize) {
        if !self.in_scope[r] {
            self.in_scope[r] = true;
            self.pending.push(r);
        }
    }

    /// Expand until nothing new is reached.
    fn run(&mut self, slots: &[Slot]) {
        let n = self.index.len();
        let index = self.index;
        let by_key = Postings::build(n, 22, |r| index.keys(r));
        let by_customer = Postings::build(n, 21, |r| std::slice::from_ref(&index.customer[r]));
        tracing::info!("resolve: postings built");
        let mut hits: Vec<usize> = Vec::new();
        loop {
            self.expand_pending();
            if self.frontier.is_empty() && self.custs.is_empty() {
                break;
            }
            for c in std::mem::take(&mut self.custs) {
                for &r in by_customer.candidates(c) {
                    if index.customer[r as usize] == c {
                        self.include(r as usize);
                    }
                }
            }
            for key in std::mem::take(&mut self.frontier) {
                // Every record holding the key, seeds by their new keys and
                // the rest by their stored ones; a block over its limit ties
                // nothing together.
                let mut count = self.seed_counts.get(&key).copied().unwrap_or(0);
                hits.clear();
                for &r in by_key.candidates(key) {
                    let r = r as usize;
                    if self.seed_row[r] {
                        continue;
                    }
                    let held = index.keys(r).iter().filter(|k| **k == key).count();
                    if held > 0 {
                        count += held;
                        hits.push(r);
                    }
                }
                if let Some(Slot::Block { max }) = slots.get(engine::slot_of(key))
                    && count > *max
                {
                    self.oversized.insert(key);
                    continue;
                }
                for &r in &hits {
                    self.include(r);
                }
            }
        }
    }

    /// The keys, customer and hyperedges of every row reached but not yet
    /// expanded.
    fn expand_pending(&mut self) {
        let index = self.index;
        while let Some(r) = self.pending.pop() {
            // A seed's stored keys are its old ones: they are expanded too,
            // since the blocks it leaves change as well.
            for &key in index.keys(r) {
                if self.seen_keys.insert(key) {
                    self.frontier.push(key);
                }
            }
            let c = index.customer[r];
            if c != 0 && self.seen_custs.insert(c) {
                self.custs.push(c);
            }
            let edges = self.edges_of.get(&r).cloned().unwrap_or_default();
            for e in edges {
                if self.seen_edges.insert(e) {
                    for m in self.edges[e].clone() {
                        self.include(m);
                    }
                }
            }
        }
    }

    /// The scope: the seeds and every row reached, with their old links,
    /// and how many customers lie wholly outside.
    fn scope(self, seeds: &Dataset) -> Scope {
        let index = self.index;
        let mut records: HashSet<String> = seeds.keys.iter().map(str::to_string).collect();
        let mut old = HashMap::new();
        let mut outside: Vec<u64> = Vec::with_capacity(index.len());
        for (r, inside) in self.in_scope.iter().enumerate() {
            if *inside {
                let key = index.key(r);
                old.insert(key.clone(), index.link(r));
                records.insert(key);
            } else {
                outside.push(index.customer[r]);
            }
        }
        outside.sort_unstable();
        outside.dedup();
        Scope {
            records,
            oversized: self.oversized,
            seeds: seeds.len(),
            customers_outside: outside.len(),
            old,
        }
    }
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
    )?;
    let n = n
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .map_or(0, |a| a.value(0));
    Ok(Some((wm, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_parse_back_and_bad_digits_are_refused() {
        let text = format_keys(0xfeed, &[0, u64::MAX, 0x0123_4567_89ab_cdef]);
        let digits: Vec<&[u8]> = text.as_bytes()[17..].chunks(17).map(|c| &c[1..]).collect();
        let parsed: Vec<Option<u64>> = digits
            .iter()
            .map(|d| parse_hex((*d).try_into().unwrap()))
            .collect();
        assert_eq!(
            parsed,
            [Some(0), Some(u64::MAX), Some(0x0123_4567_89ab_cdef)]
        );
        assert_eq!(parse_hex(b"0123456789ABCDEF"), None);
        assert_eq!(parse_hex(b"0123456789abcdeg"), None);
        assert_eq!(parse_hex(b"0123456789abcde "), None);
    }

    #[test]
    fn postings_list_every_row_holding_a_value_once() {
        // Few buckets, so that values share them.
        let values: Vec<Vec<u64>> = (0..500u64)
            .map(|r| vec![r % 7, r % 7, 1000 + r % 13, r * 31])
            .collect();
        let p = Postings::build(values.len(), 3, |r| values[r].as_slice());
        for v in (0..7).chain(1000..1013).chain([31 * 17, 99_999]) {
            let mut got: Vec<usize> = p
                .candidates(v)
                .iter()
                .map(|&r| r as usize)
                .filter(|&r| values[r].contains(&v))
                .collect();
            let n = got.len();
            got.dedup();
            assert_eq!(got.len(), n, "a row listed twice for {v}");
            let want: Vec<usize> = (0..values.len())
                .filter(|&r| values[r].contains(&v))
                .collect();
            assert_eq!(got, want, "rows holding {v}");
        }
    }
}
