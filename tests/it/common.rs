use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The custlake binary built for these tests.
pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_custlake"))
}

/// Run custlake with `args` in `dir`, with no configuration from the caller's
/// environment.
pub(crate) fn run_in(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir).args(args).arg("--quiet");
    for (k, _) in std::env::vars() {
        if k.starts_with("CUSTLAKE") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("custlake runs")
}

pub(crate) fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run_in(dir, args);
    assert!(
        out.status.success(),
        "custlake {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

pub(crate) fn fails(dir: &Path, args: &[&str]) -> String {
    let out = run_in(dir, args);
    assert!(
        !out.status.success(),
        "custlake {args:?} should have failed"
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Run a query and return the CSV rows (without the header).
/// `custlake ingest --source S --entity E FILE`.
pub(crate) fn ingest_args<'a>(source: &'a str, entity: &'a str, file: &'a Path) -> [&'a str; 6] {
    [
        "ingest",
        "--source",
        source,
        "--entity",
        entity,
        file.to_str().unwrap(),
    ]
}

/// `custlake ingest --source S --entity E FILE`, which must succeed.
pub(crate) fn ingest_file(dir: &Path, source: &str, entity: &str, file: &Path) -> String {
    ok(dir, &ingest_args(source, entity, file))
}

/// The sample `s`'s core customer `source_id` with the field its source
/// calls `column` set to `value`, as a one-row customers file at `out`
/// (GBK, as the core system writes them).
pub(crate) fn core_customer_changed(
    s: &Path,
    source_id: &str,
    column: &str,
    value: &str,
    out: &Path,
) {
    let bytes = std::fs::read(s.join("core/customers.csv")).unwrap();
    let (csv, _, _) = encoding_rs::GBK.decode(&bytes);
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    let at = header
        .split(',')
        .position(|c| c == column)
        .unwrap_or_else(|| panic!("no column {column}"));
    let row = lines
        .find(|l| l.split(',').next() == Some(source_id))
        .expect("the record's row");
    let mut cells: Vec<String> = row.split(',').map(str::to_string).collect();
    cells[at] = value.to_string();
    std::fs::write(out, gbk(&format!("{header}\n{}\n", cells.join(",")))).unwrap();
}

pub(crate) fn query(dir: &Path, sql: &str) -> Vec<String> {
    let out = ok(dir, &["sql", "--format", "csv", sql]);
    out.lines().skip(1).map(str::to_string).collect()
}

pub(crate) fn count(dir: &Path, sql: &str) -> i64 {
    query(dir, sql)[0].parse().expect("a number")
}

/// Generate a small sample insurer in `dir/sample`.
pub(crate) fn sample(dir: &Path, customers: u64, seed: u64) -> PathBuf {
    let out = dir.join("sample");
    ok(
        dir,
        &[
            "generate",
            "--customers",
            &customers.to_string(),
            "--seed",
            &seed.to_string(),
            "--as-of",
            "2026-06-30",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    out
}

/// Every file under `dir`, with its contents, sorted by path.
pub(crate) fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            // The audit journal records every command, a refused one too:
            // it is meant to change.
            if p.file_name().is_some_and(|n| n == "_audit") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The Delta log entries of every table in the lake (a proxy for "changed").
pub(crate) fn log_files(lake: &Path) -> Vec<PathBuf> {
    tree(lake)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.components().any(|c| c.as_os_str() == "_delta_log"))
        .collect()
}

pub(crate) fn gbk(s: &str) -> Vec<u8> {
    let (bytes, _, bad) = encoding_rs::GBK.encode(s);
    assert!(!bad);
    bytes.into_owned()
}
