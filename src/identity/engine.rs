//! The matching engine: blocking, strong and weak rules, clustering with
//! "never merge different valid ids" constraints, and the replay of manual
//! decisions on top of the automatic result.
//!
//! Everything here is deterministic: records are processed in the order of
//! their keys, so the same records and decisions always give the same
//! clusters, and a subset closed under the blocking keys gives the same
//! clusters as the whole.

use std::collections::HashSet;

mod matching;

use crate::domain::fnv;
use crate::schema::rules::{Profile, Rules, Validity};

/// Strings of one field for every record, in one buffer.
#[derive(Debug, Default, Clone)]
pub struct StrColumn {
    buf: String,
    /// Where each value ends in `buf`; an empty value is a missing one.
    ends: Vec<u32>,
}

impl StrColumn {
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            buf: String::new(),
            ends: Vec::with_capacity(rows),
        }
    }

    pub fn push(&mut self, v: Option<&str>) {
        if let Some(s) = v {
            self.buf.push_str(s);
        }
        self.ends.push(self.buf.len() as u32);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The column in another row order: row `k` of the result is row
    /// `order[k]` of this one.
    pub fn permuted(&self, order: &[u32]) -> Self {
        let mut out = Self::with_capacity(order.len());
        out.buf.reserve(self.buf.len());
        for &o in order {
            out.push(self.get(o as usize));
        }
        out
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.buf.get(start..end).filter(|v| !v.is_empty())
    }
}

/// The records' keys (`system:id`), in ascending order, in one buffer:
/// about a third of the memory of a `String` each.
#[derive(Debug, Default, Clone)]
pub struct Keys(StrColumn);

impl Keys {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Key `i`, `None` past the end.
    pub fn get(&self, i: usize) -> Option<&str> {
        (i < self.len()).then(|| self.0.get(i).unwrap_or(""))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|i| &self[i])
    }

    /// Where `key` is (keys are in ascending order), or where it would go.
    pub fn binary_search(&self, key: &str) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self[mid].cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Add `key` at the end.
    pub fn push(&mut self, key: &str) {
        self.0.push(Some(key));
    }

    /// The keys of `column` in the order `order` gives (row `k` is row
    /// `order[k]` of the column), which must be ascending.
    pub fn ordered(column: &StrColumn, order: &[u32]) -> Self {
        Self(column.permuted(order))
    }
}

impl std::ops::Index<usize> for Keys {
    type Output = str;

    fn index(&self, i: usize) -> &str {
        self.0.get(i).unwrap_or("")
    }
}

impl<S: AsRef<str>> FromIterator<S> for Keys {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut c = StrColumn::default();
        for k in iter {
            c.push(Some(k.as_ref()));
        }
        Self(c)
    }
}

/// The records of each cluster, clusters in the order of their smallest
/// record, records ascending: in two lists (where a list per cluster took
/// about 560 MB more at 10 million customers).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Members {
    /// Cluster `c` is `records[offsets[c]..offsets[c + 1]]`.
    offsets: Vec<u32>,
    records: Vec<u32>,
}

impl Members {
    /// The clusters of an outcome's `cluster` (each record's smallest
    /// fellow member, so no record comes before its cluster's first), and
    /// each record's cluster number.
    pub fn of(cluster: &[u32]) -> (Self, Vec<u32>) {
        let n = cluster.len();
        let mut of = vec![0u32; n];
        let mut sizes: Vec<u32> = Vec::new();
        for (i, &c) in cluster.iter().enumerate() {
            let c = c as usize;
            assert!(
                c <= i,
                "record {i}'s cluster {c} is not its smallest record"
            );
            let k = if c == i {
                sizes.push(0);
                sizes.len() - 1
            } else {
                of[c] as usize
            };
            of[i] = k as u32;
            sizes[k] += 1;
        }
        let mut offsets = Vec::with_capacity(sizes.len() + 1);
        offsets.push(0u32);
        for s in sizes {
            offsets.push(offsets[offsets.len() - 1] + s);
        }
        let mut next = offsets[..offsets.len() - 1].to_vec();
        let mut records = vec![0u32; n];
        for (i, &k) in of.iter().enumerate() {
            records[next[k as usize] as usize] = i as u32;
            next[k as usize] += 1;
        }
        (Self { offsets, records }, of)
    }

    /// Clusters given as lists of records.
    pub fn from_lists<L: AsRef<[u32]>>(lists: impl IntoIterator<Item = L>) -> Self {
        let mut out = Self {
            offsets: vec![0],
            records: Vec::new(),
        };
        for l in lists {
            out.records.extend_from_slice(l.as_ref());
            out.offsets.push(out.records.len() as u32);
        }
        out
    }

    /// How many clusters.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cluster `c`'s records.
    pub fn get(&self, c: usize) -> &[u32] {
        &self.records[self.offsets[c] as usize..self.offsets[c + 1] as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u32]> + '_ {
        (0..self.len()).map(|c| self.get(c))
    }
}

/// The records to resolve: a unique key per record (`system:id`) in
/// ascending order, and the rules' fields, normalised.
#[derive(Debug, Default, Clone)]
pub struct Dataset {
    pub keys: Keys,
    /// One column per rules field, in the rules' field order.
    pub cols: Vec<StrColumn>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn value(&self, field: usize, row: usize) -> Option<&str> {
        self.cols.get(field).and_then(|c| c.get(row))
    }
}

/// A manual decision, replayed in ledger order after the automatic rules.
#[derive(Debug, Clone)]
pub enum Decision {
    /// These records are one customer.
    Merge { event: String, records: Vec<String> },
    /// These records leave their customer and form one together.
    Split { event: String, records: Vec<String> },
    /// These records are not to be proposed as duplicates of each other.
    Reject { records: Vec<String> },
}

impl Decision {
    /// The ledger event a merge or split came from.
    pub fn event(&self) -> Option<&str> {
        match self {
            Self::Merge { event, .. } | Self::Split { event, .. } => Some(event),
            Self::Reject { .. } => None,
        }
    }
}

/// Why a record is in its cluster: sixteen bytes, kept for every record
/// (a link took 56 bytes with the event id in it, 1.4 GB at 10 million
/// customers).
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// Alone: nothing matched.
    Single,
    /// A strong rule of a profile.
    Strong { profile: u16, rule: u16 },
    /// The weighted score reached the profile's `merge_at`.
    Scored { profile: u16, score: f64 },
    /// A manual decision: its place in the decisions resolved with.
    Manual { decision: u32, kind: Manual },
}

/// What a manual decision did to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manual {
    Merge,
    Split,
}

impl Manual {
    /// The link rule it is recorded as.
    pub fn rule(self) -> &'static str {
        match self {
            Self::Merge => "manual_merge",
            Self::Split => "manual_split",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Link {
    pub why: Why,
    /// The record it was matched with (for explanations).
    pub partner: Option<u32>,
}

impl Link {
    fn manual(decision: usize, kind: Manual) -> Self {
        Self {
            why: Why::Manual {
                decision: decision as u32,
                kind,
            },
            partner: None,
        }
    }
}

/// A pair of records in different clusters whose similarity reached the
/// profile's `review_at`.
#[derive(Debug, Clone)]
pub struct Suspect {
    pub a: u32,
    pub b: u32,
    pub profile: usize,
    pub score: f64,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Per record: the cluster's smallest record index.
    pub cluster: Vec<u32>,
    pub link: Vec<Link>,
    pub suspects: Vec<Suspect>,
    /// Per record: the profile that applied to it, if any.
    pub profile: Vec<Option<u8>>,
    pub stats: Stats,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub candidate_pairs: usize,
    pub compared_pairs: usize,
    pub refused_merges: usize,
    pub oversized_blocks: usize,
}

struct UnionFind {
    parent: Vec<u32>,
    /// Per distinct slot, per root: a record holding the cluster's valid
    /// value, or `NO_RECORD`.
    distinct: Vec<Vec<u32>>,
}

/// No record (in `UnionFind::distinct`: four bytes where an `Option<u32>`
/// takes eight).
const NO_RECORD: u32 = u32::MAX;

impl UnionFind {
    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }

    /// Join the clusters of `a` and `b` unless they hold different values
    /// of a distinct field. Returns whether they are now one cluster and
    /// whether this call joined them.
    fn union(&mut self, a: u32, b: u32, data: &Dataset, slots: &[usize]) -> Result<bool, ()> {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return Ok(false);
        }
        for (s, &field) in slots.iter().enumerate() {
            let (x, y) = (self.distinct[s][ra as usize], self.distinct[s][rb as usize]);
            if x != NO_RECORD
                && y != NO_RECORD
                && data.value(field, x as usize) != data.value(field, y as usize)
            {
                return Err(());
            }
        }
        let (root, child) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[child as usize] = root;
        for s in 0..slots.len() {
            if self.distinct[s][root as usize] == NO_RECORD {
                self.distinct[s][root as usize] = self.distinct[s][child as usize];
            }
        }
        Ok(true)
    }
}

/// Where a rule's keys live in a record's match keys: every strong rule and
/// every block of every profile has a slot, numbered profile by profile
/// (strong rules first). The slot is the top byte of a match key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    Strong,
    /// A block, and the size above which it yields no pairs.
    Block {
        max: usize,
    },
}

/// Every slot of the rules, in slot order.
pub fn slots(rules: &Rules) -> Vec<Slot> {
    let mut out = Vec::new();
    for p in &rules.profiles {
        out.extend(p.strong.iter().map(|_| Slot::Strong));
        out.extend(p.blocks.iter().map(|_| Slot::Block { max: p.max_block }));
    }
    out
}

fn slot_base(rules: &Rules, profile: usize) -> u64 {
    rules.profiles[..profile]
        .iter()
        .map(|p| (p.strong.len() + p.blocks.len()) as u64)
        .sum()
}

/// A key hash tagged with its slot (top byte).
pub fn tagged(slot: u64, hash: u64) -> u64 {
    (slot << 56) | (hash & 0x00FF_FFFF_FFFF_FFFF)
}

/// The slot of a tagged key.
pub fn slot_of(key: u64) -> usize {
    (key >> 56) as usize
}

/// A block's key for record `i`, untagged; `None` when a part is missing.
fn block_hash(
    b: &crate::schema::rules::BlockRule,
    data: &Dataset,
    i: usize,
    key: &mut String,
) -> Option<u64> {
    use std::hash::Hasher;
    // `fnv` of the parts, hashed as each is made (no copy of a part).
    let mut h = crate::domain::Fnv64::default();
    for &(f, func) in &b.keys {
        let v = data.value(f, i)?;
        key.clear();
        func.apply(v, key);
        if key.is_empty() {
            return None;
        }
        h.part(key.as_bytes());
    }
    Some(h.finish())
}

/// The match keys of record `i`: one per strong rule whose fields are all
/// valid and one per block whose parts are all present, tagged with their
/// slots. Records sharing no key are never compared, so a set of records
/// holding every record of each of its keys resolves on its own exactly as
/// within the whole.
pub fn match_keys(rules: &Rules, data: &Dataset, i: usize, out: &mut Vec<u64>) {
    out.clear();
    let Some(pi) = profile_of(rules, data, i) else {
        return;
    };
    let pi = pi as usize;
    let p = &rules.profiles[pi];
    let base = slot_base(rules, pi);
    let mut parts: Vec<&str> = Vec::new();
    for (r, rule) in p.strong.iter().enumerate() {
        parts.clear();
        for &f in &rule.fields {
            match valid(p, data, f, i) {
                Some(v) => parts.push(v),
                None => break,
            }
        }
        if parts.len() == rule.fields.len() {
            out.push(tagged(base + r as u64, fnv(&parts)));
        }
    }
    if p.compare.is_empty() {
        return;
    }
    let mut key = String::new();
    for (bi, b) in p.blocks.iter().enumerate() {
        if let Some(h) = block_hash(b, data, i, &mut key) {
            out.push(tagged(base + (p.strong.len() + bi) as u64, h));
        }
    }
}

pub(crate) fn profile_of(rules: &Rules, data: &Dataset, i: usize) -> Option<u8> {
    rules
        .profiles
        .iter()
        .position(|p| match &p.when {
            None => true,
            Some((f, values)) => data
                .value(*f, i)
                .is_some_and(|v| values.iter().any(|x| x == v)),
        })
        .map(|p| p as u8)
}

fn valid<'a>(p: &Profile, data: &'a Dataset, field: usize, i: usize) -> Option<&'a str> {
    let v = data.value(field, i)?;
    let check = p.valid.get(field).copied().unwrap_or(Validity::Any);
    check.check(v).then_some(v)
}

/// The weighted score of a pair and each comparison's similarity.
pub fn score(p: &Profile, data: &Dataset, a: usize, b: usize) -> (f64, Vec<Option<f64>>) {
    let mut total = 0.0;
    let mut sims = Vec::with_capacity(p.compare.len());
    for c in &p.compare {
        let sim = similarity(c, data, a, b);
        total += c.weight(sim);
        sims.push(sim);
    }
    (total, sims)
}

fn similarity(
    c: &crate::schema::rules::Comparison,
    data: &Dataset,
    a: usize,
    b: usize,
) -> Option<f64> {
    let direct = match (data.value(c.field, a), data.value(c.field, b)) {
        (Some(x), Some(y)) => Some(c.method.similarity(x, y)),
        _ => None,
    };
    let Some(other) = c.or_with else {
        return direct;
    };
    let mut best = direct;
    for (x, y) in [
        (data.value(c.field, a), data.value(other, b)),
        (data.value(other, a), data.value(c.field, b)),
    ] {
        if let (Some(x), Some(y)) = (x, y) {
            let s = c.method.similarity(x, y);
            if best.is_none_or(|b| s > b) {
                best = Some(s);
            }
        }
    }
    best
}

/// How a profile's candidate pairs are scored when only a score at or
/// above its lowest threshold (review or merge) counts: comparisons cheap
/// first, and a pair left as soon as the most it could still reach is
/// below that threshold. Most candidate pairs of a large book end after one
/// exact comparison (two different valid id numbers weigh -6): at 10
/// million customers 52 million pairs, 83 thousand proposals.
struct Bounded {
    /// The comparisons in the order they are made.
    order: Vec<usize>,
    /// `rest[k]`: the most the comparisons `order[k..]` can add.
    rest: Vec<f64>,
    threshold: f64,
    /// More than rounding can move a sum of these weights, in whatever
    /// order they are added.
    slack: f64,
}

impl Bounded {
    fn of(p: &Profile) -> Self {
        use crate::schema::rules::Method;
        let cost = |c: &crate::schema::rules::Comparison| match c.method {
            Method::Exact => 0,
            Method::Date | Method::Phone => 1,
            Method::JaroWinkler | Method::Levenshtein => 2,
            Method::ChineseName | Method::OrgName => 3,
        };
        let mut order: Vec<usize> = (0..p.compare.len()).collect();
        order.sort_by_key(|&c| cost(&p.compare[c]));
        let best = |c: &crate::schema::rules::Comparison| {
            c.levels
                .iter()
                .map(|l| l.1)
                .fold(c.otherwise.max(c.missing), f64::max)
        };
        let mut rest = vec![0.0; order.len() + 1];
        for k in (0..order.len()).rev() {
            rest[k] = rest[k + 1] + best(&p.compare[order[k]]);
        }
        let threshold = p.merge_at.map_or(p.review_at, |m| m.min(p.review_at));
        let largest = |c: &crate::schema::rules::Comparison| {
            c.levels
                .iter()
                .map(|l| l.1.abs())
                .fold(c.otherwise.abs().max(c.missing.abs()), f64::max)
        };
        let scale: f64 = p.compare.iter().map(largest).sum::<f64>() + threshold.abs() + 1.0;
        Self {
            order,
            rest,
            threshold,
            slack: 1e-9 * scale,
        }
    }

    /// The pair's score, the same sum as [`score`] gives; or minus
    /// infinity when it is certainly below the threshold.
    fn score(&self, p: &Profile, data: &Dataset, a: usize, b: usize, w: &mut Vec<f64>) -> f64 {
        w.clear();
        w.resize(p.compare.len(), 0.0);
        let mut sum = 0.0;
        for (k, &c) in self.order.iter().enumerate() {
            let cmp = &p.compare[c];
            w[c] = cmp.weight(similarity(cmp, data, a, b));
            sum += w[c];
            if sum + self.rest[k + 1] < self.threshold - self.slack {
                return f64::NEG_INFINITY;
            }
        }
        // Summed in the rules' order, as `score` does.
        w.iter().sum()
    }
}

/// Resolve `data` (keys ascending) under `rules`, then replay `decisions`.
pub fn resolve(rules: &Rules, data: &Dataset, decisions: &[Decision], threads: usize) -> Outcome {
    resolve_part(rules, data, decisions, threads, &HashSet::new())
}

/// Resolve part of a larger set of records: `oversized` are the tagged
/// block keys that are over their profile's `max_block` in the whole set
/// (and so yield no pairs here either, however few of their records this
/// part holds).
pub fn resolve_part(
    rules: &Rules,
    data: &Dataset,
    decisions: &[Decision],
    threads: usize,
    oversized: &HashSet<u64>,
) -> Outcome {
    // Where matching's time goes, step by step (CUSTLAKE_LOG=custlake=debug).
    let started = std::time::Instant::now();
    let step = |what: &str, count: usize| {
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            count,
            "matching: {what}"
        );
    };
    let mut m = matching::Matching::new(rules, data);
    step("profiles", data.len());
    m.strong();
    step("strong rules", data.len());
    let pairs = m.candidate_pairs(oversized);
    step("candidate pairs", pairs.len());
    let proposals = m.weak(&pairs, threads);
    drop(pairs);
    step("pairs scored, proposals", proposals.len());
    let (label, rejected) = m.decide(decisions);
    step("decisions", decisions.len());
    let out = m.finish(&label, proposals, &rejected);
    step("clusters", out.suspects.len());
    out
}

/// The pairs' scores (minus infinity for a pair certainly below its
/// profile's review and merge thresholds), on `threads` threads.
fn score_pairs(
    rules: &Rules,
    data: &Dataset,
    pairs: &[(u32, u32, u8)],
    threads: usize,
) -> Vec<f64> {
    let bounded: Vec<Bounded> = rules.profiles.iter().map(Bounded::of).collect();
    let go = |chunk: &[(u32, u32, u8)]| -> Vec<f64> {
        let mut w = Vec::new();
        chunk
            .iter()
            .map(|&(a, b, p)| {
                let p = p as usize;
                bounded[p].score(&rules.profiles[p], data, a as usize, b as usize, &mut w)
            })
            .collect()
    };
    if threads <= 1 || pairs.len() < 10_000 {
        return go(pairs);
    }
    let size = pairs.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = pairs.chunks(size).map(|c| s.spawn(move || go(c))).collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

#[cfg(test)]
mod tests;
