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

/// A previous id: by number when it is written as [`format_id`] writes
/// numbers (every id this warehouse gave), else as its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Prev<'o> {
    Number(u64),
    Text(&'o str),
}

impl<'o> Prev<'o> {
    fn of(id: &'o str) -> Self {
        let digits = id.strip_prefix("CU").filter(|d| d.len() == 10);
        match digits.filter(|d| d.bytes().all(|b| b.is_ascii_digit())) {
            Some(d) => d.parse().map_or(Self::Text(id), Self::Number),
            None => Self::Text(id),
        }
    }

    /// The id as written: borrowed, or formatted into `buf`.
    fn text<'b>(self, buf: &'b mut String) -> &'b str
    where
        'o: 'b,
    {
        match self {
            Self::Text(t) => t,
            Self::Number(n) => {
                *buf = format_id(n);
                buf
            }
        }
    }
}

/// Each previous id's best cluster so far and its records there: by number
/// in a list (eight bytes an id, where a map keyed by text took about
/// 50 and a tenth of a full resolve's time at 10 million customers), by
/// text in a map for the rest.
#[derive(Default)]
struct Best<'o> {
    /// Per id number: (cluster + 1, records), 0 for none yet.
    numbers: Vec<(u32, u32)>,
    /// The numbers `numbers` may hold: beyond, an id is kept by text.
    room: u64,
    text: HashMap<&'o str, (u32, u32)>,
}

impl<'o> Best<'o> {
    fn new(records: usize) -> Self {
        Self {
            room: 2 * records as u64 + 1024,
            ..Self::default()
        }
    }

    fn get(&self, id: Prev<'o>, text: &str) -> Option<(u32, u32)> {
        match id {
            Prev::Number(n) if n < self.room => self
                .numbers
                .get(n as usize)
                .filter(|b| b.0 > 0)
                .map(|b| (b.0 - 1, b.1)),
            _ => self.text.get(text).copied(),
        }
    }

    /// Cluster `c` holds `n` records of `id`: it is the id's best if none
    /// before held more.
    fn count(&mut self, id: Prev<'o>, text: &'o str, c: u32, n: u32) {
        let slot = match id {
            Prev::Number(k) if k < self.room => {
                let k = k as usize;
                if k >= self.numbers.len() {
                    self.numbers
                        .resize((k + 1).max(2 * self.numbers.len()), (0, 0));
                }
                let b = &mut self.numbers[k];
                if b.0 == 0 || n > b.1 {
                    *b = (c + 1, n);
                }
                return;
            }
            _ => self.text.entry(text).or_insert((c, 0)),
        };
        if n > slot.1 {
            *slot = (c, n);
        }
    }

    /// (cluster, id) of every id, grouped by cluster in cluster order.
    fn owned(&self) -> Vec<(u32, Prev<'o>)> {
        let mut out: Vec<(u32, Prev<'o>)> = (self.numbers.iter().enumerate())
            .filter(|(_, b)| b.0 > 0)
            .map(|(k, b)| (b.0 - 1, Prev::Number(k as u64)))
            .chain(self.text.iter().map(|(t, b)| (b.0, Prev::Text(t))))
            .collect();
        out.sort_unstable();
        out
    }
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
    let records = clusters.iter().map(<[u32]>::len).sum();
    let mut best = Best::new(records);
    let mut here: Vec<(Prev<'o>, &'o str)> = Vec::new();
    for (c, members) in clusters.iter().enumerate() {
        here.clear();
        here.extend(
            members
                .iter()
                .filter_map(|&r| old(r))
                .map(|t| (Prev::of(t), t)),
        );
        here.sort_unstable();
        for run in here.chunk_by(|a, b| a.0 == b.0) {
            best.count(run[0].0, run[0].1, c as u32, run.len() as u32);
        }
    }
    drop(here);
    // The ids each cluster owns, by cluster.
    let owned = best.owned();
    let age = |id: &str| -> (i64, String) {
        (known(id).map_or(i64::MAX, |k| k.created_at), id.to_string())
    };
    let mut out = Assignment::default();
    let mut revived: HashSet<String> = HashSet::new();
    let (mut at, mut buf) = (0, String::new());
    for (c, members) in clusters.iter().enumerate() {
        let start = at;
        while at < owned.len() && owned[at].0 as usize == c {
            at += 1;
        }
        let mut ids: Vec<String> = owned[start..at]
            .iter()
            .map(|(_, id)| id.text(&mut buf).to_string())
            .collect();
        ids.sort_by_cached_key(|id| age(id));
        if let Some(first) = ids.first() {
            for other in &ids[1..] {
                out.retired.push((other.clone(), first.clone()));
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
        let used = |h: &str| best.get(Prev::of(h), h).is_some() || revived.contains(h);
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

    /// `assign` of `clusters` whose records had the `old` ids, without
    /// revival hints; the ids in cluster order.
    fn run(
        clusters: &[Vec<u32>],
        old: &[Option<&str>],
        k: &HashMap<String, Known>,
        next: &mut u64,
    ) -> (Assignment, Vec<String>) {
        let a = assign(
            &Members::from_lists(clusters),
            &|r| old.get(r as usize).copied().flatten(),
            &HashMap::new(),
            &|id| k.get(id),
            next,
        );
        let ids = a.ids.iter().map(str::to_string).collect();
        (a, ids)
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
        let (a, ids) = run(&[vec![0, 1, 2]], &old, &k, &mut next);
        assert_eq!(ids, vec!["CU0000000002"]);
        assert_eq!(
            a.retired,
            vec![("CU0000000001".into(), "CU0000000002".into())]
        );

        let old = [
            Some("CU0000000002"),
            Some("CU0000000002"),
            Some("CU0000000002"),
        ];
        let (_, ids) = run(&[vec![0], vec![1, 2]], &old, &k, &mut next);
        assert_eq!(ids, vec!["CU0000000003", "CU0000000002"]);
        assert_eq!(next, 4);
    }

    #[test]
    fn ids_not_written_as_numbers_or_far_beyond_the_records_are_kept_too() {
        let k = known(&[
            ("CU9999999999", 3, true),
            ("legacy-7", 1, true),
            ("CU0000000005", 2, true),
            ("CU5", 0, true),
        ]);
        // A number far past the records is kept by text, as is an id not
        // written as ten digits ("CU5" is not "CU0000000005").
        let old = [
            Some("CU9999999999"),
            Some("CU9999999999"),
            Some("legacy-7"),
            Some("CU5"),
        ];
        let mut next = 10;
        let (a, ids) = run(&[vec![0, 1], vec![2], vec![3]], &old, &k, &mut next);
        assert_eq!(ids, vec!["CU9999999999", "legacy-7", "CU5"]);
        assert!(a.retired.is_empty() && next == 10);
        // One cluster holding a number's records and a text id's: the
        // older survives, whichever way it is kept.
        let old = [Some("CU0000000005"), Some("CU0000000005"), Some("legacy-7")];
        let (a, ids) = run(&[vec![0, 1, 2]], &old, &k, &mut next);
        assert_eq!(ids, vec!["legacy-7"]);
        assert_eq!(a.retired, vec![("CU0000000005".into(), "legacy-7".into())]);
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
