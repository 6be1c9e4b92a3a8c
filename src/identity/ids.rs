//! Stable golden ids.
//!
//! - Unchanged input keeps every id.
//! - A new cluster gets the next number; numbering follows the clusters'
//!   smallest record keys, so it is deterministic.
//! - Each previous id goes to the cluster holding most of its records (the
//!   larger part of a split keeps the id); when one cluster holds several
//!   previous ids, the oldest survives and the others retire into it.
//! - A cluster without a previous id revives a retired id when most of its
//!   records came from that id before an undone merge.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::engine::{Keys, Members};

/// What the lake knows about an existing id.
#[derive(Debug, Clone)]
pub struct Known {
    pub created_at: i64,
    pub active: bool,
}

#[derive(Debug, Default)]
pub struct Assignment {
    /// Per cluster, its id (in one buffer: at 10 million customers a
    /// `String` each took about 400 MB more).
    pub ids: Keys,
    /// (retired id, the id it now points to).
    pub retired: Vec<(String, String)>,
    pub revived: Vec<String>,
    pub new: usize,
}

pub fn format_id(n: u64) -> String {
    format!("CU{n:010}")
}

pub fn parse_id(id: &str) -> Option<u64> {
    id.strip_prefix("CU").and_then(|d| d.parse().ok())
}

/// `clusters`: each cluster's records, in the order ids are to be numbered.
/// `old`: a record's previous id. `hints`: per record, a retired id
/// it belonged to before an undone merge. `known`: what the lake knows of
/// an id.
pub fn assign<'k, 'o>(
    clusters: &Members,
    old: &dyn Fn(u32) -> Option<&'o str>,
    hints: &HashMap<u32, String>,
    known: &dyn Fn(&str) -> Option<&'k Known>,
    next: &mut u64,
) -> Assignment {
    // Each previous id goes to the cluster holding most of its records;
    // ties go to the first cluster. Clusters are visited in order and
    // counted one at a time, so only each id's best so far is kept.
    let mut best: HashMap<&'o str, (u32, u32)> = HashMap::new();
    let mut here: Vec<&'o str> = Vec::new();
    for (c, members) in clusters.iter().enumerate() {
        here.clear();
        here.extend(members.iter().filter_map(|&r| old(r)));
        here.sort_unstable();
        for run in here.chunk_by(|a, b| a == b) {
            let n = run.len() as u32;
            best.entry(run[0])
                .and_modify(|b| {
                    if n > b.1 {
                        *b = (c as u32, n);
                    }
                })
                .or_insert((c as u32, n));
        }
    }
    drop(here);
    // The ids each cluster owns, by cluster.
    let mut owned: Vec<(u32, &str)> = best.iter().map(|(id, (c, _))| (*c, *id)).collect();
    owned.sort_unstable();
    let age = |id: &str| -> (i64, String) {
        (known(id).map_or(i64::MAX, |k| k.created_at), id.to_string())
    };
    let mut out = Assignment::default();
    let mut revived: HashSet<String> = HashSet::new();
    let mut at = 0;
    for (c, members) in clusters.iter().enumerate() {
        let start = at;
        while at < owned.len() && owned[at].0 as usize == c {
            at += 1;
        }
        let mut ids: Vec<&str> = owned[start..at].iter().map(|(_, id)| *id).collect();
        ids.sort_by_key(|id| age(id));
        if let Some(first) = ids.first() {
            for other in &ids[1..] {
                out.retired.push((other.to_string(), first.to_string()));
            }
            out.ids.push(first);
            continue;
        }
        // Revive a retired id most of these records came from.
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for r in members {
            if let Some(h) = hints.get(r) {
                *votes.entry(h.as_str()).or_default() += 1;
            }
        }
        let used = |h: &str| best.contains_key(h) || revived.contains(h);
        let revive = votes
            .iter()
            .filter(|(h, _)| !used(h) && known(h).is_some_and(|k| !k.active))
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(h, _)| h.to_string());
        if let Some(h) = revive {
            revived.insert(h.clone());
            out.revived.push(h.clone());
            out.ids.push(&h);
            continue;
        }
        out.ids.push(&format_id(*next));
        *next += 1;
        out.new += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(ids: &[(&str, i64, bool)]) -> HashMap<String, Known> {
        ids.iter()
            .map(|(id, t, a)| {
                (
                    id.to_string(),
                    Known {
                        created_at: *t,
                        active: *a,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn merge_keeps_the_older_id_and_split_keeps_the_larger_part() {
        let k = known(&[("CU0000000001", 5, true), ("CU0000000002", 1, true)]);
        let old = [
            Some("CU0000000001"),
            Some("CU0000000002"),
            Some("CU0000000002"),
        ];
        let mut next = 3;
        let a = assign(
            &Members::from_lists([vec![0, 1, 2]]),
            &|r| old.get(r as usize).copied().flatten(),
            &HashMap::new(),
            &|id| k.get(id),
            &mut next,
        );
        assert_eq!(a.ids.iter().collect::<Vec<_>>(), vec!["CU0000000002"]);
        assert_eq!(
            a.retired,
            vec![("CU0000000001".into(), "CU0000000002".into())]
        );

        let old = [
            Some("CU0000000002"),
            Some("CU0000000002"),
            Some("CU0000000002"),
        ];
        let a = assign(
            &Members::from_lists([vec![0], vec![1, 2]]),
            &|r| old.get(r as usize).copied().flatten(),
            &HashMap::new(),
            &|id| k.get(id),
            &mut next,
        );
        assert_eq!(
            a.ids.iter().collect::<Vec<_>>(),
            vec!["CU0000000003", "CU0000000002"]
        );
        assert_eq!(next, 4);
    }

    #[test]
    fn undone_merge_revives_the_retired_id() {
        let k = known(&[("CU0000000001", 1, true), ("CU0000000002", 2, false)]);
        let old = [Some("CU0000000001"), Some("CU0000000001")];
        let hints: HashMap<u32, String> = [(1, "CU0000000002".to_string())].into();
        let mut next = 3;
        let a = assign(
            &Members::from_lists([vec![0], vec![1]]),
            &|r| old.get(r as usize).copied().flatten(),
            &hints,
            &|id| k.get(id),
            &mut next,
        );
        assert_eq!(
            a.ids.iter().collect::<Vec<_>>(),
            vec!["CU0000000001", "CU0000000002"]
        );
        assert_eq!(a.revived, vec!["CU0000000002"]);
        assert_eq!(next, 3);
    }
}
