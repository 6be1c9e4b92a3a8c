//! The engine's unit tests.

use super::*;

fn dataset(rules: &Rules, rows: &[(&str, &[(&str, &str)])]) -> Dataset {
    let mut d = Dataset {
        keys: rows.iter().map(|r| r.0.to_string()).collect(),
        cols: vec![StrColumn::default(); rules.fields.len()],
    };
    for (_, values) in rows {
        for (f, col) in rules.fields.iter().zip(d.cols.iter_mut()) {
            col.push(values.iter().find(|(k, _)| k == f).map(|(_, v)| *v));
        }
    }
    d
}

const ID_A: &str = "11010519491231002X";
const ID_B: &str = "110105194912310038";

fn person(
    id: &'static str,
    name: &'static str,
    phone: &'static str,
) -> Vec<(&'static str, &'static str)> {
    vec![
        ("customer_type", "individual"),
        ("id_number", id),
        ("name", name),
        ("phone", phone),
        ("birth_date", "1949-12-31"),
    ]
}

#[test]
fn strong_rule_merges_and_weak_rule_only_proposes() {
    let rules = Rules::default_rules().unwrap();
    assert!(crate::domain::ResidentId::parse(ID_A).is_ok());
    let a = person(ID_A, "王伟", "+8613800000001");
    let b = person(ID_A, "王伟", "+8613800000002");
    let c = person(ID_A, "王玮", "+8613800000001");
    let data = dataset(&rules, &[("core:1", &a), ("crm:2", &b), ("crm:3", &c)]);
    let out = resolve(&rules, &data, &[], 1);
    assert_eq!(out.cluster, vec![0, 0, 2]);
    assert!(matches!(out.link[1].why, Why::Strong { .. }));
    assert!(!out.suspects.is_empty());
    assert!(
        out.suspects
            .iter()
            .all(|s| s.b == 2 && out.cluster[s.a as usize] == 0)
    );
}

#[test]
fn a_bounded_score_is_the_score_or_certainly_below_the_thresholds() {
    let rules = Rules::default_rules().unwrap();
    let p = &rules.profiles[0];
    let mut people = Vec::new();
    for id in [ID_A, ID_B, ""] {
        for name in ["王伟", "王玮", "李娜"] {
            for phone in ["+8613800000001", "13800000001", "+8613900000000", ""] {
                for birth in ["1949-12-31", "1949-12-13", "1980-01-01"] {
                    let mut r = person(id, name, phone);
                    r[4] = ("birth_date", birth);
                    people.push(r);
                }
            }
        }
    }
    let keys: Vec<String> = (0..people.len()).map(|i| format!("a:{i}")).collect();
    let rows: Vec<(&str, &[(&str, &str)])> = keys
        .iter()
        .zip(&people)
        .map(|(k, r)| (k.as_str(), r.as_slice()))
        .collect();
    let data = dataset(&rules, &rows);
    let bounded = Bounded::of(p);
    let (mut w, mut kept, mut left) = (Vec::new(), 0, 0);
    for a in 0..data.len() {
        for b in a + 1..data.len() {
            let full = score(p, &data, a, b).0;
            let fast = bounded.score(p, &data, a, b, &mut w);
            if fast == f64::NEG_INFINITY {
                assert!(full < p.review_at, "{a} {b}: {full}");
                left += 1;
            } else {
                assert_eq!(fast.to_bits(), full.to_bits(), "{a} {b}");
                kept += usize::from(full >= p.review_at);
            }
        }
    }
    // Both kinds occur: the test tells a bound too tight from one unused.
    assert!(kept > 100 && left > 1000, "{kept} kept, {left} left early");
}

#[test]
fn a_bound_allows_for_rounding_of_large_weights() {
    use crate::schema::rules::{Comparison, Method};
    let mut rules = Rules::default_rules().unwrap();
    let at = |f: &str| rules.fields.iter().position(|x| x == f).unwrap();
    let weigh = |field: usize, method: Method, w: f64| Comparison {
        field,
        or_with: None,
        method,
        levels: vec![(0.0, w)],
        otherwise: w,
        missing: w,
    };
    // (1e16 - 1e16) + 1 = 1 in the rules' order; cheap first, the
    // exact comparison's 1 is lost in 1 + 1e16.
    let compare = vec![
        weigh(at("name"), Method::JaroWinkler, 1e16),
        weigh(at("phone"), Method::JaroWinkler, -1e16),
        weigh(at("id_number"), Method::Exact, 1.0),
    ];
    let p = &mut rules.profiles[0];
    p.compare = compare;
    p.review_at = 1.0;
    p.merge_at = None;
    let a = person(ID_A, "王伟", "+8613800000001");
    let b = person(ID_B, "李娜", "+8613900000000");
    let data = dataset(&rules, &[("a:1", &a), ("a:2", &b)]);
    let p = &rules.profiles[0];
    assert_eq!(score(p, &data, 0, 1).0, 1.0);
    assert_eq!(Bounded::of(p).score(p, &data, 0, 1, &mut Vec::new()), 1.0);
}

#[test]
fn members_list_each_cluster_in_order_of_its_smallest_record() {
    // Records 0..6 in clusters {0, 2, 5}, {1}, {3, 4}.
    let (m, of) = Members::of(&[0, 1, 0, 3, 3, 0]);
    assert_eq!(m, Members::from_lists([vec![0, 2, 5], vec![1], vec![3, 4]]));
    assert_eq!(of, vec![0, 1, 0, 2, 2, 0]);
    assert_eq!(m.iter().map(<[u32]>::len).collect::<Vec<_>>(), [3, 1, 2]);
    let (m, of) = Members::of(&[]);
    assert!(m.is_empty() && of.is_empty());
}

#[test]
fn different_valid_ids_are_never_merged_automatically() {
    let mut rules = Rules::default_rules().unwrap();
    // Even a rule that would merge on name and phone alone.
    rules.profiles[0].merge_at = Some(0.0);
    rules.profiles[0].review_at = 0.0;
    assert!(crate::domain::ResidentId::parse(ID_B).is_ok());
    let a = person(ID_A, "王伟", "+8613800000001");
    let b = person(ID_B, "王伟", "+8613800000001");
    let data = dataset(&rules, &[("core:1", &a), ("crm:2", &b)]);
    let out = resolve(&rules, &data, &[], 1);
    assert_ne!(out.cluster[0], out.cluster[1]);
    assert_eq!(out.stats.refused_merges, 1);
}

#[test]
fn manual_decisions_beat_rules_in_ledger_order() {
    let rules = Rules::default_rules().unwrap();
    let a = person(ID_A, "王伟", "+8613800000001");
    let b = person(ID_A, "王伟", "+8613800000001");
    let c = person(ID_B, "李娜", "+8613900000000");
    let data = dataset(&rules, &[("a:1", &a), ("a:2", &b), ("a:3", &c)]);
    let split = Decision::Split {
        event: "E1".into(),
        records: vec!["a:2".into()],
    };
    let out = resolve(&rules, &data, std::slice::from_ref(&split), 1);
    assert_eq!(out.cluster, vec![0, 1, 2]);
    let merge = Decision::Merge {
        event: "E2".into(),
        records: vec!["a:2".into(), "a:3".into()],
    };
    let out = resolve(&rules, &data, &[split, merge], 1);
    assert_eq!(out.cluster, vec![0, 1, 1]);
    assert!(out.link[1..].iter().any(|l| matches!(
        &l.why,
        Why::Manual {
            decision: 1,
            kind: Manual::Merge,
        }
    )));
}

#[test]
fn subsets_closed_under_blocking_resolve_the_same() {
    let rules = Rules::default_rules().unwrap();
    let a = person(ID_A, "王伟", "+8613800000001");
    let b = person(ID_A, "王伟", "+8613800000003");
    let c = person(ID_B, "李娜", "+8613900000000");
    let full = dataset(&rules, &[("a:1", &a), ("a:2", &b), ("a:3", &c)]);
    let part = dataset(&rules, &[("a:1", &a), ("a:2", &b)]);
    let f = resolve(&rules, &full, &[], 2);
    let p = resolve(&rules, &part, &[], 2);
    assert_eq!(&f.cluster[..2], &p.cluster[..]);
}

#[test]
fn a_part_skips_blocks_oversized_in_the_whole() {
    let mut rules = Rules::default_rules().unwrap();
    rules.profiles[0].max_block = 2;
    let phone = "+8613800000001";
    let mut a = person(ID_A, "王伟", phone);
    a[4] = ("birth_date", "1950-01-01");
    let b = person(ID_B, "李娜", phone);
    let mut c = person(ID_B, "张敏", phone);
    c[1] = ("id_number", "");
    let whole = dataset(&rules, &[("a:1", &a), ("a:2", &b), ("a:3", &c)]);
    // Three records share the phone: over max_block, no pairs.
    assert_eq!(resolve(&rules, &whole, &[], 1).stats.candidate_pairs, 0);
    // Two of them alone would make a pair, unless told the block is
    // oversized in the whole.
    let part = dataset(&rules, &[("a:1", &a), ("a:2", &b)]);
    assert_eq!(resolve(&rules, &part, &[], 1).stats.candidate_pairs, 1);
    let mut keys = Vec::new();
    match_keys(&rules, &whole, 0, &mut keys);
    let slots = slots(&rules);
    let oversized: HashSet<u64> = keys
        .iter()
        .copied()
        .filter(|k| matches!(slots[slot_of(*k)], Slot::Block { .. }))
        .collect();
    assert!(!oversized.is_empty());
    let out = resolve_part(&rules, &part, &[], 1, &oversized);
    assert_eq!(out.stats.candidate_pairs, 0);
    // The keys of every record carry their slots: the id-and-name strong
    // key first for a record with a valid id.
    assert_eq!(slots[slot_of(keys[0])], Slot::Strong);
}
