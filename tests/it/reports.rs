//! The scheduler (a job runs once when due, once for two servers on one
//! lake, once after a gap) and the report pack (its numbers are the metric
//! tables', a stored period opens unchanged, a steward sees their teams'
//! rows, and a page opened in headless Chromium shows its chart).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use custlake::reports::schedule::{Action, JobFailure, Scheduler, Trigger};

use crate::common::{ok, query, sample};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A job that counts its runs and takes a moment (so that two servers
/// ticking together overlap), or fails.
fn counting(runs: Arc<AtomicUsize>, fail: bool) -> Action {
    Arc::new(move |call| {
        let runs = runs.clone();
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            if fail {
                return Err(JobFailure {
                    kind: custlake::error::ErrorKind::StorageUnavailable,
                    message: "the store went away".into(),
                });
            }
            Ok(serde_json::json!({"at": call.at.to_rfc3339()}))
        })
    })
}

#[test]
fn a_job_runs_once_when_due_once_for_two_servers_and_once_after_a_gap() {
    let d = tempfile::tempdir().unwrap();
    let mut config = custlake::config::Config::embedded();
    config.lake = d.path().join("lake").to_string_lossy().to_string();
    // Hourly, read at +08:00; the other shipped jobs are left out.
    config.scheduler.jobs.get_mut("score").unwrap().cron = "0 0 * * * *".into();
    config.scheduler.jobs.get_mut("tier").unwrap().cron = "0 30 * * * *".into();
    let rt = custlake::runtime(Some(2)).unwrap();
    rt.block_on(async {
        let wh = custlake::lake::Warehouse::quiet(config).unwrap();
        let security = custlake::security::Security::open(&wh.config, &wh.lake)
            .await
            .unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let server = || {
            Scheduler::new(
                wh.config.clone(),
                wh.lake.clone(),
                wh.catalog.clone(),
                vec![
                    ("score", "counts", counting(runs.clone(), false)),
                    ("tier", "fails", counting(failures.clone(), true)),
                ],
            )
            .unwrap()
        };
        let (a, b) = (server(), server());
        // First sight of the lake: the schedule starts now, nothing runs.
        assert!(
            a.tick(&security, at("2026-10-01T00:40:00Z"))
                .await
                .unwrap()
                .is_empty()
        );
        // Not due before the next hour.
        assert!(
            a.tick(&security, at("2026-10-01T00:50:00Z"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0);

        // 01:00 UTC is due (09:00 at +08:00); two servers tick at once and
        // one of them runs it.
        let now = at("2026-10-01T01:00:02Z");
        let (ra, rb) = tokio::join!(a.tick(&security, now), b.tick(&security, now));
        let mut ran: Vec<_> = ra.unwrap().into_iter().chain(rb.unwrap()).collect();
        ran.sort_by(|x, y| x.job.cmp(&y.job));
        assert_eq!(
            ran.iter().map(|r| r.job.as_str()).collect::<Vec<_>>(),
            ["score"],
            "{ran:?}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let first = &ran[0];
        assert_eq!(
            (first.trigger.as_str(), first.missed),
            ("schedule", Some(0))
        );
        assert_eq!(first.status, "succeeded");
        assert_eq!(
            first.output.as_deref(),
            Some(r#"{"at":"2026-10-01T09:00:00+08:00"}"#),
            "the job is told its slot in the scheduler's offset"
        );
        // The same moment again, on either server: nothing more.
        assert!(a.tick(&security, now).await.unwrap().is_empty());
        assert!(b.tick(&security, now).await.unwrap().is_empty());

        // The tier job (half past) fails: a failed run, recorded with its
        // error's code, and not run again for that slot.
        let half = at("2026-10-01T01:30:01Z");
        let failed = b.tick(&security, half).await.unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].status, "failed");
        assert!(
            failed[0]
                .error
                .as_deref()
                .unwrap()
                .contains("the store went away (code"),
            "{failed:?}"
        );
        assert!(a.tick(&security, half).await.unwrap().is_empty());

        // Down from 01:30 to 05:40: slots 02:00..05:00 were missed; one
        // catch-up run, for 05:00, covering the three before it.
        let later = at("2026-10-01T05:40:00Z");
        let caught: Vec<_> = a
            .tick(&security, later)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.job == "score")
            .collect();
        assert_eq!(caught.len(), 1);
        assert_eq!(caught[0].trigger, "catch-up");
        assert_eq!(caught[0].missed, Some(3));
        assert_eq!(caught[0].slot.as_deref(), Some("2026-10-01T05:00:00+00:00"));
        assert_eq!(runs.load(Ordering::SeqCst), 2);

        // A manual run takes the job's lease like any other and is recorded.
        let manual = a
            .run(&security, a.job("score").unwrap(), Trigger::Manual, None, 0)
            .await
            .unwrap();
        assert_eq!(
            (manual.trigger.as_str(), manual.slot.as_deref()),
            ("manual", None)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3);

        // A run cut off by a stopped process stays `running` until a
        // scheduler starts and finds its lease free: then it is failed.
        let mut cut = manual.clone();
        cut.run_id = "score-cut-off".into();
        cut.status = "running".into();
        cut.ended_at = None;
        cut.started_at = "2099-12-30T00:00:00+00:00".into();
        a.record(&cut).await.unwrap();
        assert_eq!(b.close_interrupted().await.unwrap(), 1);
        assert_eq!(b.close_interrupted().await.unwrap(), 0);
        let status = a.status(later).await.unwrap();
        let closed = status.iter().find(|s| s.name == "score").unwrap();
        let closed = closed.last_run.as_ref().unwrap();
        assert_eq!(
            (closed.run_id.as_str(), closed.status.as_str()),
            ("score-cut-off", "failed")
        );
        assert!(
            closed.error.as_deref().unwrap().starts_with("interrupted"),
            "{closed:?}"
        );
        cut.run_id = "score-latest".into();
        cut.started_at = "2099-12-31T00:00:00+00:00".into();
        cut.status = "succeeded".into();
        a.record(&cut).await.unwrap();

        // job_run holds every run, and the list shows each job's latest.
        let status = a.status(later).await.unwrap();
        let score = status.iter().find(|s| s.name == "score").unwrap();
        assert_eq!(score.last_run.as_ref().unwrap().run_id, "score-latest");
        assert_eq!(score.next_run.as_deref(), Some("2026-10-01T14:00:00+08:00"));
        let tier = status.iter().find(|s| s.name == "tier").unwrap();
        assert_eq!(tier.last_run.as_ref().unwrap().status, "failed");
        // Each run is audited as the scheduler.
        let journal = security.journal.as_ref().unwrap();
        let audited: Vec<_> = journal
            .dir()
            .pending()
            .unwrap()
            .into_iter()
            .filter(|r| r.action == "job")
            .collect();
        assert_eq!(audited.len(), 5, "{audited:?}");
        assert!(audited.iter().all(|r| r.principal == "scheduler"));
        assert_eq!(audited.iter().filter(|r| r.outcome == "error").count(), 2);
    });
    let lake = d.path().join("lake");
    let rows = ok(
        d.path(),
        &[
            "--lake",
            lake.to_str().unwrap(),
            "sql",
            "--format",
            "csv",
            "SELECT job, trigger, status, coalesce(CAST(missed AS VARCHAR), '-') AS missed FROM job_run ORDER BY started_at",
        ],
    );
    assert_eq!(
        rows.lines().skip(1).collect::<Vec<_>>(),
        [
            "score,schedule,succeeded,0",
            "tier,schedule,failed,0",
            "score,catch-up,succeeded,3",
            "tier,catch-up,failed,3",
            "score,manual,succeeded,-",
            "score,manual,failed,-",
            "score,manual,succeeded,-",
        ]
    );
}

/// A lake with a sample insurer, resolved, scored and checked as of the
/// end of June 2026.
fn scored_lake(d: &Path) {
    let s = sample(d, 300, 13);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    ok(d, &["resolve"]);
    ok(d, &["score", "--as-of", "2026-06-30"]);
    ok(d, &["quality", "run", "--full", "--as-of", "2026-06-30"]);
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn the_report_pack_is_the_metric_tables_and_opens_again_unchanged() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    scored_lake(d);
    let out = d.join("pack");
    let summary = ok(
        d,
        &[
            "report",
            "--period",
            "2026-06",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(
        summary["reports"].as_array().unwrap().len(),
        11,
        "{summary}"
    );

    // Team ranking: each team's overall score of the run, as stored.
    let mut got: Vec<String> = csv_rows(&out.join("team_ranking.csv"))
        .into_iter()
        .map(|r| format!("{},{}", r[1], r[2]))
        .collect();
    got.sort();
    let want = query(
        d,
        "SELECT owning_team, CAST(round(score, 2) AS VARCHAR) FROM quality_metric \
         WHERE rule = 'overall' AND table_name = '*' AND source_system = '*' AND owning_team <> '*' ORDER BY 1",
    );
    assert!(!want.is_empty());
    assert_eq!(got, want);
    // The bottom team is flagged, once.
    let flagged: Vec<_> = csv_rows(&out.join("team_ranking.csv"))
        .into_iter()
        .filter(|r| r[5] == "true")
        .collect();
    assert_eq!(flagged.len(), 1);

    // Data health: per dimension, passed and checked cells summed over
    // teams are the metric table's.
    let mut sums: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for r in csv_rows(&out.join("data_health.csv")) {
        assert_eq!(r[0], "2026-06-30");
        let e = sums.entry(r[1].clone()).or_default();
        e.0 += r[3].parse::<i64>().unwrap();
        e.1 += r[4].parse::<i64>().unwrap();
    }
    let want = query(
        d,
        "SELECT dimension, CAST(sum(checked) AS BIGINT), CAST(sum(passed) AS BIGINT) FROM quality_metric \
         WHERE rule <> 'overall' AND checked > 0 GROUP BY 1 ORDER BY 1",
    );
    let got: Vec<String> = sums
        .iter()
        .map(|(k, (c, p))| format!("{k},{c},{p}"))
        .collect();
    assert_eq!(got, want);

    // Customers by segment add up to the customers scored.
    let total: i64 = csv_rows(&out.join("customers_by_segment.csv"))
        .iter()
        .map(|r| r[4].parse::<i64>().unwrap())
        .sum();
    let scored = query(
        d,
        "SELECT count(*) FROM customer_score WHERE as_of = DATE '2026-06-30'",
    );
    assert_eq!(total.to_string(), scored[0]);

    // Opened again from storage: every file the same, byte for byte.
    let again = d.join("again");
    ok(
        d,
        &[
            "report",
            "--period",
            "2026-06",
            "--stored",
            "--out",
            again.to_str().unwrap(),
        ],
    );
    for f in std::fs::read_dir(&out).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap();
        assert_eq!(
            std::fs::read(&f).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name:?} differs when opened again"
        );
    }
    // A period never generated is an error that says how to make it.
    let err = crate::common::fails(d, &["report", "--period", "2026-05", "--stored"]);
    assert!(err.contains("custlake report --period 2026-05"), "{err}");
    let err = crate::common::fails(d, &["report", "--period", "June"]);
    assert!(err.contains("YYYY-MM"), "{err}");

    // Over HTTP: a steward of one team reads that team's rows only; an
    // agent reads no reports; the page is HTML, the data CSV or JSON.
    let team = want_team(d);
    let steward = crate::server::token(d, "wang", "steward", &["--team", &team]);
    let agent = crate::server::token(d, "li", "telesales", &["--agent-id", "A00001"]);
    let mut config = custlake::config::Config::embedded();
    config.lake = d.join("data/lake").to_string_lossy().to_string();
    let api = crate::server::Api::over(d, config);
    let as_ = |t: &str| format!("Bearer {t}");
    let r = api.request(
        "GET",
        "/v1/reports/team_ranking?period=2026-06&format=csv",
        &[("authorization", &as_(&steward))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let lines: Vec<String> = r.text().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].contains(&format!(",{team},")), "{lines:?}");
    let r = api.request(
        "GET",
        "/v1/reports",
        &[("authorization", &as_(&steward))],
        b"",
    );
    let listed = r.json();
    let ranking = listed["reports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "team_ranking")
        .unwrap();
    assert_eq!(ranking["rows"], 1);
    assert_eq!(ranking["url"], "/v1/reports/team_ranking?period=2026-06");
    let r = api.request("GET", "/v1/reports/team_ranking", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("x-report-period"), Some("2026-06"));
    assert_eq!(
        r.body,
        std::fs::read(out.join("team_ranking.html")).unwrap(),
        "the page served is the page written"
    );
    let r = api.request("GET", "/v1/reports/team_ranking?format=json", &[], b"");
    assert_eq!(r.json()["rows"].as_array().unwrap().len(), want_teams(d));
    let r = api.request(
        "GET",
        "/v1/reports",
        &[("authorization", &as_(&agent))],
        b"",
    );
    crate::server::problem(&r, 403, 1602);
    let r = api.request("GET", "/v1/reports/nothing", &[], b"");
    crate::server::problem(&r, 404, 1201);
    let r = api.request("GET", "/v1/reports/team_ranking?format=pdf", &[], b"");
    crate::server::problem(&r, 400, 1104);
    let r = api.request("GET", "/v1/reports/team_ranking?period=2026-6", &[], b"");
    crate::server::problem(&r, 400, 1104);

    // The page shows its chart: one bar per team, laid out, not blank.
    chromium_shows_bars(&out.join("team_ranking.html"), want_teams(d));
}

fn want_team(d: &Path) -> String {
    query(
        d,
        "SELECT min(owning_team) FROM quality_metric WHERE rule = 'overall' AND table_name = '*' AND source_system = '*' AND owning_team <> '*'",
    )[0]
    .clone()
}

fn want_teams(d: &Path) -> usize {
    query(
        d,
        "SELECT count(DISTINCT owning_team) FROM quality_metric WHERE rule = 'overall' AND table_name = '*' AND source_system = '*' AND owning_team <> '*'",
    )[0]
    .parse()
    .unwrap()
}

/// Headless Chromium, when installed (`.ci/run` installs it and sets
/// `CUSTLAKE_REQUIRE_CHROMIUM=1`, so that there it must be).
fn chromium() -> Option<std::path::PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|n| std::path::PathBuf::from("/usr/bin").join(n))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CUSTLAKE_REQUIRE_CHROMIUM").is_err(),
            "CUSTLAKE_REQUIRE_CHROMIUM is set and no chromium is installed"
        );
        eprintln!("no chromium: the page is not opened in a browser");
    }
    found
}

fn headless(browser: &Path, args: &[&str], page: &Path) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1000,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap()
}

fn chromium_shows_bars(page: &Path, teams: usize) {
    let Some(browser) = chromium() else { return };
    let dir = page.parent().unwrap();
    // A copy of the page with a probe that measures the laid-out bars (the
    // page itself has no scripts).
    let probe = dir.join("probe.html");
    let html = std::fs::read_to_string(page).unwrap();
    assert!(!html.contains("<script"), "a report carries no scripts");
    for external in ["src=\"http", "href=\"http", "<link", "@import", "url("] {
        assert!(!html.contains(external), "the page loads {external}...");
    }
    let script = "<script>window.addEventListener('load', () => {\
        const svg = document.querySelector('svg.chart').getBoundingClientRect();\
        const bars = [...document.querySelectorAll('rect.bar')].map(b => b.getBoundingClientRect());\
        const inside = bars.filter(b => b.width > 2 && b.height > 2 && b.left >= svg.left && b.right <= svg.right && b.top >= svg.top && b.bottom <= svg.bottom);\
        const lefts = new Set(bars.map(b => Math.round(b.left)));\
        document.body.setAttribute('data-probe', `bars=${bars.length} inside=${inside.length} columns=${lefts.size} flagged=${document.querySelectorAll('rect.bar.flagged').length}`);\
      });</script>";
    std::fs::write(&probe, html.replace("</body>", &format!("{script}</body>"))).unwrap();
    let dom = headless(
        &browser,
        &["--virtual-time-budget=5000", "--dump-dom"],
        &probe,
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    let want = format!("bars={teams} inside={teams} columns={teams} flagged=1");
    assert!(dom.contains(&want), "wanted {want} in the laid-out page");

    // A screenshot of the page, and one of an empty page: the report's is
    // far from blank.
    let shot = dir.join("team_ranking.png");
    headless(
        &browser,
        &[&format!("--screenshot={}", shot.display())],
        page,
    );
    let blank_page = dir.join("blank.html");
    std::fs::write(&blank_page, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let blank = dir.join("blank.png");
    headless(
        &browser,
        &[&format!("--screenshot={}", blank.display())],
        &blank_page,
    );
    let (shot, blank) = (
        std::fs::read(&shot).unwrap(),
        std::fs::read(&blank).unwrap(),
    );
    assert_eq!(&shot[1..4], b"PNG");
    assert!(
        shot.len() > 5 * blank.len(),
        "the screenshot ({} bytes) looks blank (an empty page: {} bytes)",
        shot.len(),
        blank.len()
    );
}
