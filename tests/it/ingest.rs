use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{bin, count, fails, gbk, ingest_args, log_files, ok, query, sample};

const CORE_HEADER: &str = "客户号,客户类型,客户名称,性别,出生日期,证件类型,证件号码,统一社会信用代码,纳税人识别号,法定代表人,联系电话,电子邮箱,联系地址,行业,渠道,归属团队,区域,业务员,登记日期,更新时间";

fn person(id: &str) -> Vec<String> {
    [
        id,
        "1",
        "张伟",
        "1",
        "19900307",
        "01",
        "110101199003074477",
        "",
        "",
        "",
        "13812345678",
        "ZW@163.com",
        "北京市朝阳区建国路88号",
        "",
        "个代",
        "个险一部",
        "华北",
        "A00001",
        "20200101",
        "20200101120000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn company(id: &str) -> Vec<String> {
    [
        id,
        "2",
        "华泰科技(深圳)有限公司",
        "",
        "",
        "10",
        "",
        "91350100M000100Y43",
        "9135 0100m0001 00Y43",
        "李强",
        "0755-86001234",
        "",
        "广东省深圳市南山区科技园路1号",
        "信息技术",
        "经代",
        "团险部",
        "华南",
        "A00002",
        "20190101",
        "20190101120000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn core_file(dir: &Path, name: &str, rows: &[Vec<String>]) -> PathBuf {
    let mut text = format!("{CORE_HEADER}\n");
    for r in rows {
        text.push_str(&r.join(","));
        text.push('\n');
    }
    let p = dir.join(name);
    std::fs::write(&p, gbk(&text)).unwrap();
    p
}

fn with(mut row: Vec<String>, col: usize, value: &str) -> Vec<String> {
    row[col] = value.to_string();
    row
}

fn ingest_core(dir: &Path, file: &Path) -> String {
    let out = crate::common::run_in(
        dir,
        &[
            "ingest",
            "--source",
            "core",
            "--entity",
            "customer",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn every_quarantine_reason_is_recorded_with_field_and_raw_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut short = person("C10");
    short.truncate(5);
    let rows = vec![
        person("C1"),
        company("C2"),
        with(person("C3"), 6, "110101199003074478"),
        with(company("C4"), 7, "91350100M000100Y44"),
        with(person("C5"), 10, "138123"),
        with(person("C6"), 11, "zw@"),
        with(person("C7"), 4, "19900230"),
        with(person("C8"), 3, "7"),
        with(person("C9"), 2, ""),
        short,
        with(person("C11"), 12, "火星某处"),
        with(person("C12"), 19, "2020-01-01"),
        with(person("C13"), 2, "张伟123"),
        with(person("C14"), 1, "9"),
    ];
    let file = core_file(d, "customers.csv", &rows);
    let report = ingest_core(d, &file);
    assert!(
        report.contains("14 rows read, 2 loaded, 12 quarantined"),
        "{report}"
    );

    let got = query(d, "SELECT reason, field FROM quarantine ORDER BY line");
    let want = [
        "C3,INVALID_RESIDENT_ID,id_number",
        "C4,INVALID_USCC,uscc",
        "C5,INVALID_PHONE,phone",
        "C6,INVALID_EMAIL,email",
        "C7,INVALID_DATE,birth_date",
        "C8,UNMAPPED_CODE,gender",
        "C9,MISSING_REQUIRED,name",
        "C10,MALFORMED_ROW,",
        "C11,INVALID_ADDRESS,address",
        "C12,INVALID_TIMESTAMP,updated_at",
        "C13,INVALID_NAME,name",
        "C14,UNMAPPED_CODE,customer_type",
    ];
    // The source id is in the raw row.
    let raw = query(d, "SELECT raw FROM quarantine ORDER BY line");
    for (i, w) in want.iter().enumerate() {
        let id = w.split(',').next().unwrap();
        assert!(
            raw[i].contains(&format!("\"\"客户号\"\":\"\"{id}\"\"")),
            "{}",
            raw[i]
        );
    }
    let want: Vec<String> = want
        .iter()
        .map(|w| w.split_once(',').unwrap().1.to_string())
        .collect();
    assert_eq!(got, want);
    let lines = query(d, "SELECT line FROM quarantine ORDER BY line");
    assert_eq!(lines[0], "4", "the header is line 1, C3 is line 4");

    // The good rows are standardised.
    let rows = query(
        d,
        "SELECT source_id, name, phone, email, address, uscc, tax_id, gender, birth_date FROM source_customer ORDER BY source_id",
    );
    assert_eq!(
        rows,
        vec![
            "C1,张伟,+8613812345678,zw@163.com,北京市|北京市|朝阳区|建国路88号,,,M,1990-03-07",
            "C2,华泰科技（深圳）有限公司,+8675586001234,,广东省|深圳市|南山区|科技园路1号,91350100M000100Y43,91350100M000100Y43,,",
        ]
    );
    // One batch row with the counts and the file's hash.
    let batch = query(
        d,
        "SELECT rows_read, rows_loaded, rows_quarantined, status, length(sha256) FROM ingest_batch",
    );
    assert_eq!(batch, vec!["14,2,12,loaded,64"]);
}

#[test]
fn reingesting_a_file_changes_nothing_and_a_new_version_upserts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v1 = core_file(
        d,
        "v1.csv",
        &[person("C1"), company("C2"), with(person("C3"), 10, "x")],
    );
    ingest_core(d, &v1);
    let logs = log_files(&d.join("data/lake"));
    let report = ingest_core(d, &v1);
    assert!(report.contains("already loaded"), "{report}");
    assert_eq!(
        log_files(&d.join("data/lake")),
        logs,
        "a re-ingest wrote to the lake"
    );

    // A later extract with a changed phone and a new customer: upsert by key,
    // and duplicate keys inside one file keep the last row.
    let v2 = core_file(
        d,
        "v2.csv",
        &[
            with(person("C1"), 10, "13900000000"),
            person("C5"),
            with(person("C1"), 10, "13911111111"),
        ],
    );
    ingest_core(d, &v2);
    assert_eq!(count(d, "SELECT count(*) FROM source_customer"), 3);
    assert_eq!(
        query(
            d,
            "SELECT phone FROM source_customer WHERE source_id = 'C1'"
        ),
        vec!["+8613911111111"]
    );
    assert_eq!(count(d, "SELECT count(*) FROM ingest_batch"), 2);
}

/// No table and no catalog record but the table leases (a load takes the
/// table's lease before it reads the file; a released lease is bookkeeping,
/// not data).
fn assert_nothing_written(d: &Path) {
    let lake = d.join("data/lake");
    let mut files = crate::common::tree(&lake);
    files.retain(|(p, _)| !p.starts_with("hot/_catalog/locks"));
    assert!(
        files.is_empty(),
        "the lake was written to: {:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
}

#[test]
fn a_first_load_with_a_repeated_key_keeps_the_last_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = core_file(
        d,
        "dups.csv",
        &[
            with(person("C1"), 10, "13900000000"),
            company("C2"),
            with(person("C1"), 10, "13911111111"),
        ],
    );
    ingest_core(d, &f);
    assert_eq!(count(d, "SELECT count(*) FROM source_customer"), 2);
    assert_eq!(
        query(
            d,
            "SELECT phone FROM source_customer WHERE source_id = 'C1'"
        ),
        vec!["+8613911111111"]
    );
}

#[test]
fn unreadable_files_fail_with_file_line_and_column_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ingest =
        |source: &str, entity: &str, file: &Path| fails(d, &ingest_args(source, entity, file));

    // GBK bytes in a file declared UTF-8.
    let leads = d.join("leads.csv");
    let header = "lead_id,cust_kind,cust_name,gender,birthday,cert_type,cert_no,org_code,tax_no,contact_person,tel,email,address,industry,source_channel,team,region,agent_code,created,modified\n";
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend(b"L1,IND,");
    bytes.extend(gbk("张伟"));
    bytes.extend(b",\xc4\xd0,1990/03/07,ID,110101199003074477,,,,13812345678,,,,TEL,x,north,A1,2020/01/01,2020/01/01 10:00:00\n");
    std::fs::write(&leads, &bytes).unwrap();
    let err = ingest("telesales", "customer", &leads);
    assert!(
        err.contains("leads.csv, line 2, column 3 (cust_name)"),
        "{err}"
    );
    assert!(err.contains("UTF-8"), "{err}");
    assert_nothing_written(d);

    // A mandatory column missing.
    std::fs::write(&leads, header.replace("lead_id,", "id,")).unwrap();
    let err = ingest("telesales", "customer", &leads);
    assert!(
        err.contains("line 1") && err.contains("missing mandatory column(s) lead_id"),
        "{err}"
    );

    // A UTF-8 file declared GBK: its Chinese header does not match.
    let core = d.join("core.csv");
    std::fs::write(&core, format!("{CORE_HEADER}\n")).unwrap();
    let err = ingest("core", "customer", &core);
    assert!(
        err.contains("core.csv, line 1, column 1 (header)") && err.contains("GBK"),
        "{err}"
    );

    // A file that is not JSON Lines at all.
    let good = core_file(d, "good.csv", &[person("C1"), person("C2")]);
    let plain = d.join("plain.csv");
    std::fs::write(&plain, "partyId,partyType\nP1,P\n").unwrap();
    let err = ingest("claims", "customer", &plain);
    assert!(
        err.contains("plain.csv, line 1") && err.contains("not JSON Lines"),
        "{err}"
    );
    let err = ingest("claims", "customer", &good);
    assert!(
        err.contains("good.csv, line 1, column 1") && err.contains("UTF-8"),
        "{err}"
    );

    // Parquet: not Parquet, and truncated.
    let pq = d.join("payers.parquet");
    std::fs::copy(&good, &pq).unwrap();
    let err = ingest("finance", "customer", &pq);
    assert!(
        err.contains("payers.parquet") && err.contains("Parquet"),
        "{err}"
    );
    let s = sample(d, 50, 3);
    let mut b = std::fs::read(s.join("finance/payers.parquet")).unwrap();
    b.truncate(b.len() / 2);
    std::fs::write(&pq, &b).unwrap();
    let err = ingest("finance", "customer", &pq);
    assert!(err.contains("Parquet"), "{err}");

    assert_nothing_written(d);
}

#[test]
fn a_last_line_cut_short_is_quarantined_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ingest =
        |source: &str, entity: &str, file: &Path| ok(d, &ingest_args(source, entity, file));
    // Truncated in the middle of the last line.
    let good = core_file(d, "good.csv", &[person("C1"), person("C2")]);
    let mut b = std::fs::read(&good).unwrap();
    b.truncate(b.len() - 60);
    let core = d.join("core.csv");
    std::fs::write(&core, &b).unwrap();
    ingest("core", "customer", &core);
    assert_eq!(count(d, "SELECT count(*) FROM source_customer"), 1);
    assert_eq!(
        query(
            d,
            "SELECT line, reason, detail LIKE '%cut short%' FROM quarantine"
        ),
        ["3,MALFORMED_ROW,true"]
    );
    // JSON Lines cut short.
    let jl = d.join("claimants.jsonl");
    std::fs::write(
        &jl,
        "{\"partyId\":\"P1\",\"partyType\":\"P\"}\n{\"partyId\":\"P2\",\"par",
    )
    .unwrap();
    ingest("claims", "customer", &jl);
    assert_eq!(
        query(
            d,
            "SELECT line, reason FROM quarantine WHERE source_system = 'claims' AND reason = 'MALFORMED_ROW'"
        ),
        ["2,MALFORMED_ROW"]
    );
}

fn counts(d: &Path) -> Vec<String> {
    query(
        d,
        "SELECT (SELECT count(*) FROM source_customer) || ' ' || (SELECT count(*) FROM policy) || ' ' || \
         (SELECT count(*) FROM payment) || ' ' || (SELECT count(*) FROM claim) || ' ' || \
         (SELECT count(*) FROM interaction) || ' ' || (SELECT count(*) FROM consent) || ' ' || \
         (SELECT count(*) FROM quarantine) || ' ' || (SELECT count(*) FROM ingest_batch)",
    )
}

fn assert_keys_unique(d: &Path) {
    for (t, k) in [
        ("source_customer", "source_system, source_id"),
        ("policy", "policy_no"),
        ("payment", "payment_id"),
        ("claim", "claim_no"),
        ("interaction", "event_id"),
        ("consent", "consent_id"),
        ("quarantine", "batch_id, line"),
    ] {
        let dups = count(
            d,
            &format!("SELECT count(*) FROM (SELECT {k} FROM {t} GROUP BY {k} HAVING count(*) > 1)"),
        );
        assert_eq!(dups, 0, "{t} has duplicate keys");
    }
}

#[test]
fn every_source_format_loads_and_a_killed_load_completes_on_rerun() {
    let reference = tempfile::tempdir().unwrap();
    let r = reference.path();
    let s = sample(r, 1500, 11);
    ok(r, &["ingest", "--from", s.to_str().unwrap()]);
    let want = counts(r);
    // Every source system landed customers, and every fact table has rows.
    let systems = query(
        r,
        "SELECT DISTINCT source_system FROM source_customer ORDER BY 1",
    );
    assert_eq!(systems, vec!["claims", "core", "finance", "telesales"]);
    let parts: Vec<i64> = want[0].split(' ').map(|x| x.parse().unwrap()).collect();
    assert!(parts.iter().all(|n| *n > 0), "{want:?}");
    assert_eq!(parts[7], 11, "one batch per file");
    // Every row read is either loaded or quarantined.
    assert_eq!(
        count(
            r,
            "SELECT count(*) FROM ingest_batch WHERE rows_read <> rows_loaded + rows_quarantined"
        ),
        0
    );

    // A load that dies right after its data commit, before the batch record.
    let crash = tempfile::tempdir().unwrap();
    let c = crash.path();
    let status = Command::new(bin())
        .current_dir(c)
        .args(["ingest", "--quiet", "--from", s.to_str().unwrap()])
        .env("CUSTLAKE_FAILPOINT", "ingest.after_data_commit")
        .status()
        .unwrap();
    assert!(!status.success());
    assert!(
        count(c, "SELECT count(*) FROM source_customer") > 0,
        "the data commit landed before the crash"
    );
    ok(c, &["ingest", "--from", s.to_str().unwrap()]);
    assert_eq!(counts(c), want);
    assert_keys_unique(c);

    // Loads stopped at other points: between a file's quarantine commit
    // and its batch record, and at the data commit of the fifth file (a
    // run that had already loaded four).
    for point in [
        "ingest.after_quarantine_commit",
        "ingest.after_data_commit@5",
    ] {
        let killed = tempfile::tempdir().unwrap();
        let k = killed.path();
        let status = Command::new(bin())
            .current_dir(k)
            .args(["ingest", "--quiet", "--from", s.to_str().unwrap()])
            .env("CUSTLAKE_FAILPOINT", point)
            .status()
            .unwrap();
        assert!(!status.success(), "{point}");
        ok(k, &["ingest", "--from", s.to_str().unwrap()]);
        assert_eq!(counts(k), want, "{point}");
        assert_keys_unique(k);
    }
}

#[test]
fn an_aborted_write_into_an_existing_table_leaves_no_files_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = sample(d, 30, 4);
    let leads = s.join("telesales/leads.csv");
    ok(d, &ingest_args("telesales", "customer", &leads));
    let table = d.join("data/lake/hot/source_customer");
    let data_files = || data_files_of(&table);
    let committed = data_files();
    // What an aborted write leaves: a file no commit names, written now;
    // and one written long ago (a file a commit removed, kept for time
    // travel, looks the same to a listing).
    let stray = table.join("part-00000-aborted.parquet");
    std::fs::write(&stray, b"PAR1 partial").unwrap();
    let old = table.join("part-00000-old.parquet");
    std::fs::write(&old, b"PAR1 old").unwrap();
    let f = std::fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .unwrap();
    drop(f);
    let mut config = custlake::config::Config::embedded();
    config.lake = d.join("data/lake").to_string_lossy().to_string();
    let wh = custlake::lake::Warehouse::quiet(config).unwrap();
    let def = wh.catalog.table("source_customer").unwrap().clone();
    let since = chrono::Utc::now() - chrono::Duration::seconds(60);
    let removed = custlake::runtime(Some(1))
        .unwrap()
        .block_on(wh.lake.remove_unreferenced(&def, since))
        .unwrap();
    assert_eq!(removed, 1);
    assert!(!stray.exists() && old.exists());
    let mut left = data_files();
    left.retain(|p| p != &old);
    assert_eq!(left, committed, "a committed file was removed");
}

/// The case as reported: a Parquet file cut short, loaded into a table that
/// exists and holds no rows. It is refused as a whole, and the table's
/// directory holds exactly the files it held before (the footer is read
/// before anything is written).
#[test]
fn a_truncated_parquet_into_an_existing_empty_table_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let empty = corpus.join("csv_header_only/leads.csv");
    ok(d, &ingest_args("telesales", "customer", &empty));
    assert_eq!(count(d, "SELECT count(*) FROM source_customer"), 0);
    let table = d.join("data/lake/hot/source_customer");
    let files = || data_files_of(&table);
    let before = files();
    let log = log_files(&table);
    let truncated = corpus.join("parquet_truncated/payers.parquet");
    let err = fails(d, &ingest_args("finance", "customer", &truncated));
    assert!(err.contains("Parquet"), "{err}");
    assert_eq!(files(), before, "files left behind");
    assert_eq!(log_files(&table), log, "a commit was made");
}

/// Every file of a table's directory outside its Delta log, sorted.
fn data_files_of(table: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![table.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("_delta_log") {
                    stack.push(p);
                }
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
