//! One run of the matching engine, phase by phase: strong rules, candidate
//! pairs from the blocks, weak rules (scores that merge or propose), the
//! steward's decisions, and the canonical clusters.

use std::collections::{HashMap, HashSet};

use super::{
    Dataset, Decision, Link, Manual, Outcome, Stats, Suspect, UnionFind, Why, block_hash, fnv,
    profile_of, score_pairs, slot_base, tagged, valid,
};
use crate::schema::rules::Rules;

/// The state of a run between its phases.
pub(super) struct Matching<'a> {
    rules: &'a Rules,
    data: &'a Dataset,
    profile: Vec<Option<u8>>,
    /// The fields whose different valid values forbid a merge.
    slots: Vec<usize>,
    uf: UnionFind,
    link: Vec<Link>,
    stats: Stats,
}

impl<'a> Matching<'a> {
    pub(super) fn new(rules: &'a Rules, data: &'a Dataset) -> Self {
        let n = data.len();
        let profile: Vec<Option<u8>> = (0..n).map(|i| profile_of(rules, data, i)).collect();
        let mut slots: Vec<usize> = rules
            .profiles
            .iter()
            .flat_map(|p| p.distinct.iter().copied())
            .collect();
        slots.sort_unstable();
        slots.dedup();
        let mut uf = UnionFind {
            parent: (0..n as u32).collect(),
            distinct: vec![vec![super::NO_RECORD; n]; slots.len()],
        };
        for (i, prof) in profile.iter().enumerate() {
            if let Some(p) = *prof {
                let p = &rules.profiles[p as usize];
                for (s, &field) in slots.iter().enumerate() {
                    if p.distinct.contains(&field) && valid(p, data, field, i).is_some() {
                        uf.distinct[s][i] = i as u32;
                    }
                }
            }
        }
        let link = vec![
            Link {
                why: Why::Single,
                partner: None
            };
            n
        ];
        Self {
            rules,
            data,
            profile,
            slots,
            uf,
            link,
            stats: Stats::default(),
        }
    }

    /// Strong rules, in rule order, records in key order.
    pub(super) fn strong(&mut self) {
        let (rules, data, n) = (self.rules, self.data, self.data.len());
        for (pi, p) in rules.profiles.iter().enumerate() {
            for (ri, rule) in p.strong.iter().enumerate() {
                // Each record's key, sorted by key then record: the first
                // record of a key is the anchor its later records join
                // (sorting where a map of first records took three times
                // as long at 26 million records).
                let of_profile = self.profile.iter().filter(|p| **p == Some(pi as u8));
                let mut keyed: Vec<(u64, u32)> = Vec::with_capacity(of_profile.count());
                let mut parts: Vec<&str> = Vec::with_capacity(rule.fields.len());
                for i in 0..n {
                    if self.profile[i] != Some(pi as u8) {
                        continue;
                    }
                    parts.clear();
                    for &f in &rule.fields {
                        match valid(p, data, f, i) {
                            Some(v) => parts.push(v),
                            None => break,
                        }
                    }
                    if parts.len() == rule.fields.len() {
                        keyed.push((fnv(&parts), i as u32));
                    }
                }
                keyed.sort_unstable();
                // (record, anchor) for every record after its key's first,
                // joined in record order.
                let mut later: Vec<(u32, u32)> = Vec::new();
                for run in keyed.chunk_by(|x, y| x.0 == y.0) {
                    later.extend(run[1..].iter().map(|&(_, i)| (i, run[0].1)));
                }
                drop(keyed);
                later.sort_unstable();
                for (i, anchor) in later {
                    let i = i as usize;
                    // A hash collision between different values is not a match.
                    if rule
                        .fields
                        .iter()
                        .any(|&f| data.value(f, anchor as usize) != data.value(f, i))
                    {
                        continue;
                    }
                    match self.uf.union(anchor, i as u32, data, &self.slots) {
                        Ok(true) => {
                            let why = Why::Strong {
                                profile: pi as u16,
                                rule: ri as u16,
                            };
                            for (x, y) in [(i as u32, anchor), (anchor, i as u32)] {
                                if self.link[x as usize].partner.is_none() {
                                    self.link[x as usize] = Link {
                                        why: why.clone(),
                                        partner: Some(y),
                                    };
                                }
                            }
                        }
                        Ok(false) => {}
                        Err(()) => self.stats.refused_merges += 1,
                    }
                }
            }
        }
    }

    /// Weak rules' candidate pairs: records sharing a block (not larger
    /// than the profile allows) and not yet in one cluster.
    pub(super) fn candidate_pairs(&mut self, oversized: &HashSet<u64>) -> Vec<(u32, u32, u8)> {
        let (rules, data) = (self.rules, self.data);
        let mut pairs: Vec<(u32, u32, u8)> = Vec::new();
        for (pi, p) in rules.profiles.iter().enumerate() {
            if p.compare.is_empty() {
                continue;
            }
            let base = slot_base(rules, pi);
            for (bi, b) in p.blocks.iter().enumerate() {
                let slot = base + (p.strong.len() + bi) as u64;
                // Each record's block, sorted by block then record: a
                // block's members are one run, in record order (12 bytes a
                // record, where a map of blocks held a list for each).
                let of_profile = self.profile.iter().filter(|p| **p == Some(pi as u8));
                let mut blocked: Vec<(u64, u32)> = Vec::with_capacity(of_profile.count());
                let mut key = String::new();
                for (i, prof) in self.profile.iter().enumerate() {
                    if *prof != Some(pi as u8) {
                        continue;
                    }
                    if let Some(h) = block_hash(b, data, i, &mut key) {
                        blocked.push((tagged(slot, h), i as u32));
                    }
                }
                blocked.sort_unstable();
                // Room for the rule's pairs at once, counted as they will
                // be pushed (grown by doubling, the list could take twice
                // the memory it needs).
                let expanded = |b: &&[(u64, u32)]| {
                    b.len() >= 2 && b.len() <= p.max_block && !oversized.contains(&b[0].0)
                };
                let mut most = 0usize;
                for block in blocked.chunk_by(|x, y| x.0 == y.0).filter(expanded) {
                    for (x, &(_, a)) in block.iter().enumerate() {
                        for &(_, b) in &block[x + 1..] {
                            most += usize::from(self.uf.find(a) != self.uf.find(b));
                        }
                    }
                }
                pairs.reserve_exact(most);
                for block in blocked.chunk_by(|x, y| x.0 == y.0) {
                    if block.len() < 2 {
                        continue;
                    }
                    if block.len() > p.max_block || oversized.contains(&block[0].0) {
                        self.stats.oversized_blocks += 1;
                        continue;
                    }
                    for (x, &(_, a)) in block.iter().enumerate() {
                        for &(_, b) in &block[x + 1..] {
                            if self.uf.find(a) != self.uf.find(b) {
                                pairs.push((a, b, pi as u8));
                            }
                        }
                    }
                }
                tracing::debug!(
                    profile = p.name.as_str(),
                    block = bi,
                    keyed = blocked.len(),
                    pairs = pairs.len(),
                    "matching: block rule"
                );
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        self.stats.candidate_pairs = pairs.len();
        pairs
    }

    /// Score the pairs: scores at `merge_at` merge (best first), the rest
    /// above `review_at` are proposals (returned).
    pub(super) fn weak(&mut self, pairs: &[(u32, u32, u8)], threads: usize) -> Vec<Suspect> {
        let (rules, data) = (self.rules, self.data);
        let scored = score_pairs(rules, data, pairs, threads.max(1));
        self.stats.compared_pairs = scored.len();
        let mut merges: Vec<(f64, u32, u32, u8)> = Vec::new();
        let mut proposals: Vec<Suspect> = Vec::new();
        for (&(a, b, pi), &s) in pairs.iter().zip(&scored) {
            let p = &rules.profiles[pi as usize];
            if p.merge_at.is_some_and(|m| s >= m) {
                merges.push((s, a, b, pi));
            } else if s >= p.review_at {
                proposals.push(Suspect {
                    a,
                    b,
                    profile: pi as usize,
                    score: s,
                });
            }
        }
        merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
        for (s, a, b, pi) in merges {
            match self.uf.union(a, b, data, &self.slots) {
                Ok(true) => {
                    let why = Why::Scored {
                        profile: u16::from(pi),
                        score: s,
                    };
                    for (x, y) in [(a, b), (b, a)] {
                        if self.link[x as usize].partner.is_none() {
                            self.link[x as usize] = Link {
                                why: why.clone(),
                                partner: Some(y),
                            };
                        }
                    }
                }
                Ok(false) => {}
                Err(()) => {
                    self.stats.refused_merges += 1;
                    proposals.push(Suspect {
                        a,
                        b,
                        profile: pi as usize,
                        score: s,
                    });
                }
            }
        }
        proposals
    }

    /// Manual decisions on the automatic clusters, in ledger order: each
    /// record's cluster label, and the rejected groups.
    pub(super) fn decide(&mut self, decisions: &[Decision]) -> (Vec<u32>, Vec<HashSet<u32>>) {
        let n = self.data.len();
        let mut label: Vec<u32> = (0..n as u32).map(|i| self.uf.find(i)).collect();
        let mut rejected: Vec<HashSet<u32>> = Vec::new();
        if decisions.is_empty() {
            return (label, rejected);
        }
        let index: HashMap<&str, u32> = self
            .data
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k, i as u32))
            .collect();
        let records_of = |records: &[String]| -> Vec<u32> {
            records
                .iter()
                .filter_map(|r| index.get(r.as_str()).copied())
                .collect()
        };
        let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
        for i in 0..n as u32 {
            members.entry(label[i as usize]).or_default().push(i);
        }
        let mut next_label = n as u32;
        for (d, decision) in decisions.iter().enumerate() {
            match decision {
                Decision::Merge { records, .. } => {
                    let mut labels: Vec<u32> = records_of(records)
                        .iter()
                        .map(|&i| label[i as usize])
                        .collect();
                    labels.sort_unstable();
                    labels.dedup();
                    if labels.len() < 2 {
                        continue;
                    }
                    let target = labels[0];
                    for &l in &labels[1..] {
                        for m in members.remove(&l).unwrap_or_default() {
                            label[m as usize] = target;
                            self.link[m as usize] = Link::manual(d, Manual::Merge);
                            members.entry(target).or_default().push(m);
                        }
                    }
                }
                Decision::Split { records, .. } => {
                    let idx = records_of(records);
                    if idx.is_empty() {
                        continue;
                    }
                    let fresh = next_label;
                    next_label += 1;
                    for &i in &idx {
                        let old = label[i as usize];
                        if let Some(v) = members.get_mut(&old) {
                            v.retain(|&m| m != i);
                        }
                        label[i as usize] = fresh;
                        self.link[i as usize] = Link::manual(d, Manual::Split);
                        members.entry(fresh).or_default().push(i);
                    }
                }
                Decision::Reject { records } => {
                    rejected.push(records_of(records).into_iter().collect());
                }
            }
        }
        (label, rejected)
    }

    /// Canonical cluster ids (the smallest member), and the proposals
    /// that still join two clusters and were not rejected.
    pub(super) fn finish(
        self,
        label: &[u32],
        proposals: Vec<Suspect>,
        rejected: &[HashSet<u32>],
    ) -> Outcome {
        // Labels are record numbers, or numbers after them for the
        // steward's splits: each label's smallest record, by label.
        let labels = label.iter().max().map_or(0, |&l| l as usize + 1);
        let mut smallest = vec![super::NO_RECORD; labels];
        for (i, &l) in label.iter().enumerate() {
            if smallest[l as usize] == super::NO_RECORD {
                smallest[l as usize] = i as u32;
            }
        }
        let cluster: Vec<u32> = label.iter().map(|&l| smallest[l as usize]).collect();
        drop(smallest);
        let suspects = proposals
            .into_iter()
            .filter(|s| cluster[s.a as usize] != cluster[s.b as usize])
            .filter(|s| {
                !rejected
                    .iter()
                    .any(|r| r.contains(&s.a) && r.contains(&s.b))
            })
            .collect();
        Outcome {
            cluster,
            link: self.link,
            suspects,
            profile: self.profile,
            stats: self.stats,
        }
    }
}
