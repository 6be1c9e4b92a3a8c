//! Exit codes: each kind of failure exits with its own code (the README's
//! table), whatever command meets it.

use std::path::Path;

use crate::common::{ok, run_in, sample};

/// `custlake ARGS` in `dir`: its exit code and standard error.
fn exit(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = run_in(dir, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn each_kind_of_failure_has_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = sample(d, 100, 3);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    std::fs::write(d.join("broken.toml"), "lake = [").unwrap();
    std::fs::write(d.join("not-a-dir"), "").unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        // The command line itself.
        (&["sql"], 2, "Usage"),
        (&["sql", "--format", "parquet", "SELECT 1"], 2, "--output"),
        (
            &["hold", "add", "--from", "2020-13", "--reason", "x"],
            2,
            "YYYY-MM",
        ),
        // The input: SQL, files.
        (&["sql", "SELECT * FROM no_such_table"], 65, "no_such_table"),
        (&["sql", "DROP TABLE policy"], 65, "read-only"),
        (
            &[
                "ingest",
                "--source",
                "core",
                "--entity",
                "customer",
                "missing.csv",
            ],
            66,
            "missing.csv",
        ),
        // Something named that does not exist.
        (&["schema", "nope"], 66, "nope"),
        (&["explain", "--customer", "CU0000000001"], 66, "resolve"),
        // The configuration.
        (
            &["--config", "broken.toml", "sql", "SELECT 1"],
            78,
            "broken.toml",
        ),
        // Storage that cannot be used.
        (&["--lake", "not-a-dir/lake", "init"], 69, "lake"),
    ];
    for (args, code, says) in cases {
        let (got, stderr) = exit(d, args);
        assert_eq!(got, *code, "custlake {args:?}: {stderr}");
        assert!(stderr.contains(says), "custlake {args:?}: {stderr}");
    }
    // A damaged lake: a file its log names is gone.
    let mut files = Vec::new();
    for e in std::fs::read_dir(d.join("data/lake/hot/consent")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "parquet") {
            files.push(p);
        }
    }
    std::fs::remove_file(&files[0]).unwrap();
    let (got, stderr) = exit(d, &["sql", "SELECT consent_id, purpose FROM consent"]);
    assert_eq!(got, 74, "{stderr}");
}

/// The README's error table is the code's: every kind has its row with its
/// code, HTTP status and exit code, and the table names no other code.
#[test]
fn the_readme_error_table_is_the_code() {
    use custlake::error::ErrorKind;
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    // | code | kind | HTTP | exit | meaning |
    let rows: Vec<Vec<String>> = readme
        .lines()
        .filter(|l| l.starts_with("| 1"))
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .filter(|c: &Vec<String>| c.len() > 5 && c[1].parse::<u32>().is_ok())
        .collect();
    assert!(!rows.is_empty(), "the README has an error table");
    for kind in ErrorKind::ALL {
        let code = kind.code().to_string();
        let row = rows
            .iter()
            .find(|r| r[1] == code)
            .unwrap_or_else(|| panic!("no README row for {kind:?} ({code})"));
        let status = custlake::server::status_of(kind).as_u16().to_string();
        assert!(
            row[3].split('/').any(|s| s.trim() == status),
            "{kind:?}: README says HTTP {}, the server answers {status}",
            row[3]
        );
        assert_eq!(
            row[4],
            custlake::cli::exit_code(kind).to_string(),
            "{kind:?}: README exit code"
        );
    }
    for r in &rows {
        assert!(
            ErrorKind::ALL.iter().any(|k| k.code().to_string() == r[1]),
            "the README lists code {} that no kind has",
            r[1]
        );
    }
}
