//! The bad-input corpus: every directory of `tests/corpus/` is one case, a
//! source file and `case.toml` saying how to load it (`source`, `entity`,
//! `file`, optional `[config]` ingest settings) and what must happen:
//! either `exit` and `error` (refused as a whole, nothing written), or the
//! rows read and loaded and the quarantine reasons. Adding a case is adding
//! a directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::{query, run_in};

#[derive(serde::Deserialize)]
struct Case {
    source: String,
    entity: String,
    file: String,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    expect: Expect,
}

#[derive(serde::Deserialize)]
struct Expect {
    exit: Option<i32>,
    error: Option<String>,
    rows_read: Option<u64>,
    loaded: Option<u64>,
    #[serde(default)]
    quarantined: BTreeMap<String, u64>,
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("case.toml").exists())
        .collect();
    out.sort();
    out
}

fn run_case(dir: &Path) -> Result<(), String> {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let case: Case = toml::from_str(&std::fs::read_to_string(dir.join("case.toml")).unwrap())
        .map_err(|e| format!("{name}: case.toml: {e}"))?;
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    if !case.config.is_empty() {
        let mut toml = String::from("[ingest]\n");
        for (k, v) in &case.config {
            toml.push_str(&format!("{k} = {v}\n"));
        }
        std::fs::write(d.join("custlake.toml"), toml).unwrap();
    }
    let file = dir.join(&case.file);
    let out = run_in(
        d,
        &[
            "ingest",
            "--source",
            &case.source,
            "--entity",
            &case.entity,
            file.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if let Some(exit) = case.expect.exit {
        if out.status.code() != Some(exit) {
            return Err(format!(
                "{name}: exit {:?}, expected {exit}: {stderr}",
                out.status.code()
            ));
        }
        if let Some(e) = &case.expect.error
            && !stderr.contains(e.as_str())
        {
            return Err(format!("{name}: error lacks {e:?}: {stderr}"));
        }
        let written: Vec<_> = crate::common::tree(&d.join("data/lake"))
            .into_iter()
            .filter(|(p, _)| !p.starts_with("hot/_catalog/locks"))
            .map(|(p, _)| p)
            .collect();
        if !written.is_empty() {
            return Err(format!("{name}: refused, yet wrote {written:?}"));
        }
        return Ok(());
    }
    if !out.status.success() {
        return Err(format!("{name}: failed: {stderr}"));
    }
    let batch = query(
        d,
        "SELECT rows_read || '/' || rows_loaded || '/' || rows_quarantined FROM ingest_batch",
    );
    let [read, loaded, quarantined]: [u64; 3] = batch[0]
        .split('/')
        .map(|n| n.parse().unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    if read != loaded + quarantined {
        return Err(format!(
            "{name}: {read} read but {loaded} loaded + {quarantined} quarantined"
        ));
    }
    if let Some(r) = case.expect.rows_read
        && r != read
    {
        return Err(format!("{name}: {read} rows read, expected {r}"));
    }
    if let Some(l) = case.expect.loaded
        && l != loaded
    {
        return Err(format!("{name}: {loaded} rows loaded, expected {l}"));
    }
    let reasons: BTreeMap<String, u64> = if quarantined == 0 {
        BTreeMap::new()
    } else {
        query(
            d,
            "SELECT reason || ':' || count(*) FROM quarantine GROUP BY reason",
        )
        .iter()
        .map(|l| {
            let (r, n) = l.split_once(':').unwrap();
            (r.to_string(), n.parse().unwrap())
        })
        .collect()
    };
    if reasons != case.expect.quarantined {
        return Err(format!(
            "{name}: quarantined {reasons:?}, expected {:?}",
            case.expect.quarantined
        ));
    }
    let table = query(
        d,
        &format!(
            "SELECT count(*) FROM source_customer WHERE source_system = '{}'",
            case.source
        ),
    );
    if loaded > 0 && table != [loaded.to_string()] {
        return Err(format!("{name}: table holds {table:?}, {loaded} loaded"));
    }
    Ok(())
}

#[test]
fn every_bad_input_case_ends_as_its_case_says() {
    let cases = cases();
    assert!(cases.len() >= 15, "the corpus is missing");
    let failures: Vec<String> = cases.iter().filter_map(|c| run_case(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
