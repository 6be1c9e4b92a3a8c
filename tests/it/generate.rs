use crate::common::{ok, sample, tree};

#[test]
fn the_same_seed_gives_byte_identical_files() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let da = sample(a.path(), 400, 7);
    let db = sample(b.path(), 400, 7);
    let ta = tree(&da);
    let tb = tree(&db);
    assert_eq!(
        ta.len(),
        12,
        "{:?}",
        ta.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    assert_eq!(ta, tb);
    let c = tempfile::tempdir().unwrap();
    let dc = sample(c.path(), 400, 8);
    assert_ne!(tree(&dc), ta);
}

#[test]
fn the_sample_has_every_source_format_and_a_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let d = sample(dir.path(), 500, 1);
    // Core writes GBK: its Chinese header is not valid UTF-8.
    let core = std::fs::read(d.join("core/customers.csv")).unwrap();
    assert!(std::str::from_utf8(&core).is_err());
    let (text, _, bad) = encoding_rs::GBK.decode(&core);
    assert!(!bad);
    assert!(text.starts_with("客户号,客户类型,客户名称"));
    assert!(
        std::fs::read(d.join("finance/payers.parquet"))
            .unwrap()
            .starts_with(b"PAR1")
    );
    let claim = std::fs::read_to_string(d.join("claims/claimants.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(claim.lines().next().unwrap()).unwrap();
    assert!(first.get("partyId").is_some());
    let truth = std::fs::read_to_string(d.join("truth.csv")).unwrap();
    assert!(truth.starts_with("source_system,source_id,entity_id\n"));
    let rows: Vec<&str> = truth.lines().skip(1).collect();
    // Customers appear in several systems: more source records than customers.
    assert!(rows.len() > 500, "{}", rows.len());
    let entities: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.rsplit(',').next().unwrap()).collect();
    assert!(entities.len() <= 500);
    for sys in ["core", "claims", "telesales", "finance"] {
        assert!(
            rows.iter().any(|r| r.starts_with(&format!("{sys},"))),
            "{sys} missing"
        );
    }
}

#[test]
fn generate_rejects_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let err = crate::common::fails(dir.path(), &["generate", "--customers", "0", "--out", "x"]);
    assert!(err.contains("at least 1"), "{err}");
    let err = crate::common::fails(
        dir.path(),
        &["generate", "--as-of", "2026-13-01", "--out", "x"],
    );
    assert!(err.contains("not a date"), "{err}");
    let _ = ok(dir.path(), &["generate", "--customers", "3", "--out", "x"]);
}
