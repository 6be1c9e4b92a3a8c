use crate::common::{fails, ok, query, run_in, sample};

#[test]
fn sql_formats_functions_and_the_read_only_guard() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = sample(d, 200, 5);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);

    // CSV: a header line and the rows, nothing else on stdout.
    let out = ok(d, &["sql", "--format", "csv", "SELECT 1 AS a, 'x' AS b"]);
    assert_eq!(out, "a,b\n1,x\n");
    let out = ok(d, &["sql", "--format", "json", "SELECT 1 AS a"]);
    assert_eq!(out.trim(), "[{\"a\":1}]");
    let out = ok(
        d,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM policy WHERE premium < 0",
        ],
    );
    assert_eq!(out, "n\n0\n");

    // The validators as SQL functions.
    let row = query(
        d,
        "SELECT is_valid_resident_id('11010519491231002X'), is_valid_resident_id('110105194912310021'), \
         is_valid_uscc('91350100M000100Y43'), normalize_phone('138 1234 5678'), mask_keep('+8613812345678', 3, 4)",
    );
    assert_eq!(row, vec!["true,false,true,+8613812345678,+86*******5678"]);
    // Every stored resident id is valid.
    let bad = query(
        d,
        "SELECT count(*) FROM source_customer WHERE id_type = 'resident_id' AND NOT is_valid_resident_id(id_number)",
    );
    assert_eq!(bad, vec!["0"]);

    // Parquet output needs a file, and round-trips.
    let err = fails(d, &["sql", "--format", "parquet", "SELECT 1"]);
    assert!(err.contains("--output"), "{err}");
    ok(
        d,
        &[
            "sql",
            "--format",
            "parquet",
            "--output",
            "out.parquet",
            "SELECT policy_no FROM policy",
        ],
    );
    assert!(
        std::fs::read(d.join("out.parquet"))
            .unwrap()
            .starts_with(b"PAR1")
    );

    // Writes, and errors: non-zero exit, message on stderr, nothing on stdout.
    for bad in [
        "DROP TABLE policy",
        "INSERT INTO policy SELECT * FROM policy",
        "COPY policy TO 'x.csv'",
    ] {
        let out = run_in(d, &["sql", bad]);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("read-only"),
            "{bad}"
        );
    }
    let err = fails(d, &["sql", "SELECT * FROM no_such_table"]);
    assert!(err.contains("no_such_table"), "{err}");
}

#[test]
fn schema_prints_tables_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(dir.path(), &["schema"]);
    for t in [
        "source_customer",
        "policy",
        "quarantine",
        "audit_log",
        "customer_xref",
    ] {
        assert!(out.contains(t), "{t}");
    }
    let out = ok(dir.path(), &["schema", "source_customer"]);
    assert!(
        out.contains("id_number") && out.contains("L4") && out.contains("keep(3,4)"),
        "{out}"
    );
    assert!(out.contains("individual"), "{out}");
    let out = ok(dir.path(), &["schema", "--sources"]);
    assert!(out.contains("客户号") && out.contains("gbk"), "{out}");
    let err = fails(dir.path(), &["schema", "nope"]);
    assert!(err.contains("no table named"), "{err}");
}

#[test]
fn a_limited_result_says_when_it_was_cut() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sql = "SELECT * FROM (VALUES (1), (2), (3), (4)) t(v) ORDER BY v";
    let out = run_in(d, &["sql", "--format", "csv", "--limit", "3", sql]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v\n1\n2\n3\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cut at 3 rows"));
    let out = run_in(d, &["sql", "--format", "csv", "--limit", "4", sql]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v\n1\n2\n3\n4\n");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("cut at"));
    // The same guards as the server.
    let deep = format!("SELECT 1{}", "+1".repeat(5000));
    let err = fails(d, &["sql", &deep]);
    assert!(err.contains("max_expression_depth"), "{err}");
    let err = fails(d, &["sql", "SELECT repeat('x', 2147483647)"]);
    assert!(err.contains("max_value_mb"), "{err}");
    // Each of several runs gets the whole planning budget: a run folds
    // two 20 MB repeats and their 40 MB concat (planning may evaluate them
    // more than once), under the 256 MiB a statement may; three runs on one
    // budget would not be.
    let big = "SELECT length(concat(repeat('x', 20000000), repeat('y', 20000000))) AS n";
    let out = ok(d, &["sql", "--format", "csv", "--runs", "3", big]);
    assert_eq!(out, "n\n40000000\n");
}

/// `custlake sql … | head`: once the reader has gone, the command ends
/// quietly with the shell's code for it (141, as `cat` would), neither
/// with a panic nor an error message.
#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &[
            "sql",
            "--format",
            "csv",
            "SELECT value FROM generate_series(1, 2000000)",
        ][..],
        &["sql", "SELECT value FROM generate_series(1, 2000000)"][..],
    ] {
        let mut child = std::process::Command::new(crate::common::bin())
            .args(args)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        // The reader goes away (the pipe's read end closes here).
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}
