use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::generate::{GenerateOptions, generate};
use crate::ingest::Ingestor;
use crate::lake::{Tier, Warehouse};
use crate::query::{context, register_lake};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Customers in the generated sample insurer.
    #[arg(long, default_value_t = 20_000)]
    pub customers: u64,
    /// Random seed of the sample.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the sample's source extracts are written.
    #[arg(long, default_value = "data/sample")]
    pub sample_dir: PathBuf,
    /// Stop after the summary instead of serving the API.
    #[arg(long)]
    pub no_serve: bool,
}

/// Create every declared table, empty.
pub(super) async fn init(wh: &Warehouse) -> Result<(), CliError> {
    for def in &wh.catalog.tables {
        if crate::schema::BUILT_TABLES.contains(&def.name.as_str()) {
            continue;
        }
        wh.lake.open_or_create(def).await?;
    }
    eprintln!(
        "{} tables ready under {}",
        wh.catalog.tables.len(),
        wh.lake.root(Tier::Hot)
    );
    Ok(())
}

pub(super) async fn run(
    wh: &Warehouse,
    security: &crate::security::Security,
    args: &DemoArgs,
) -> Result<(), CliError> {
    let empty = wh
        .lake
        .open(wh.catalog.table("source_customer")?)
        .await?
        .is_none();
    if empty {
        eprintln!(
            "The lake at {} is empty: generating a sample insurer of {} customers into {}",
            wh.lake.root(Tier::Hot),
            args.customers,
            args.sample_dir.display()
        );
        let opts = GenerateOptions {
            customers: args.customers,
            seed: args.seed,
            out: args.sample_dir.clone(),
            as_of: chrono::Utc::now().date_naive(),
            bad_rate: 0.015,
        };
        generate(&opts, wh.progress.as_ref())?;
        let ingestor = Ingestor::new(wh);
        for r in ingestor.ingest_dir(&args.sample_dir).await {
            super::ingest::print_report(&r?);
        }
    } else {
        eprintln!(
            "The lake at {} already holds data; showing what it has.",
            wh.lake.root(Tier::Hot)
        );
    }
    let r = crate::identity::resolve(wh, crate::identity::Trigger::Auto).await?;
    eprintln!(
        "Resolved {} source customer records into {} golden customers in {:.1}s ({} new, {} open suspected-duplicate groups for review)",
        r.records, r.customers, r.seconds, r.new_customers, r.suspect_groups
    );
    let today = chrono::Utc::now().date_naive();
    let scored = crate::analytics::score::run(
        &wh.config,
        &wh.lake,
        &wh.catalog,
        today,
        wh.progress.as_ref(),
    )
    .await?;
    eprintln!(
        "Scored {} customers as of {}: {}",
        scored.customers,
        today,
        scored
            .stages
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let quality = crate::quality::run_quality(
        &wh.config,
        &wh.lake,
        &wh.catalog,
        security.masks(&wh.lake).await?,
        &crate::quality::RunOptions {
            full: true,
            as_of: today,
            seed: None,
        },
        wh.progress.as_ref(),
    )
    .await?;
    eprintln!(
        "Quality run {}: overall score {:.1}, {} failing record fields, {} records below {} (rectification work orders)",
        quality.run_id,
        quality.score.unwrap_or(100.0),
        quality.open,
        quality.work_orders,
        wh.config.quality.threshold
    );
    // The month so far: the pack the scheduler writes on the 1st for the
    // month before, here for this one so that today's runs are in it.
    let period = crate::reports::pack::Period::containing(today);
    let (pack, reports) = crate::reports::pack::generate(
        &wh.config,
        &wh.lake,
        &wh.catalog,
        &period,
        today,
        wh.progress.as_ref(),
    )
    .await?;
    let pack_dir = std::path::Path::new("data/reports").join(&period.month);
    crate::reports::pack::write_dir(&pack_dir, &period.month, &reports)?;
    eprintln!(
        "Report pack {}: {} reports in {:.1} s, stored in report_row and written to {}",
        pack.period,
        pack.reports.len(),
        pack.seconds,
        pack_dir.join("index.html").display()
    );
    let run = crate::analytics::lists::produce(
        &wh.config,
        &wh.lake,
        &wh.catalog,
        crate::analytics::lists::ListKind::Renewals,
        &crate::analytics::lists::ListRequest::default(),
        crate::analytics::lists::Requester {
            principal: &crate::security::Principal::local().user,
            role: crate::security::LOCAL_ROLE,
        },
    )
    .await?;
    eprintln!(
        "Renewal list for the next 30 days: run {}, {} customers, {} assigned to agents",
        run.run_id, run.row_count, run.assigned
    );
    summary(wh).await?;
    // The PostgreSQL wire protocol is on in the demo (off unless
    // configured otherwise), so that psql and BI tools can connect.
    let mut wh = wh.clone();
    if wh.config.server.pg_bind.is_empty() || wh.config.server.flight_bind.is_empty() {
        let mut config = (*wh.config).clone();
        if config.server.pg_bind.is_empty() {
            config.server.pg_bind = DEMO_PG_BIND.into();
        }
        if config.server.flight_bind.is_empty() {
            config.server.flight_bind = DEMO_FLIGHT_BIND.into();
        }
        wh.config = std::sync::Arc::new(config);
    }
    demo_tokens(&wh, &run.run_id, &period.month).await?;
    if args.no_serve {
        return Ok(());
    }
    super::serve::run(&wh, &super::serve::ServeArgs { bind: None }).await
}

/// Where the demo serves the PostgreSQL wire protocol.
const DEMO_PG_BIND: &str = "127.0.0.1:5433";
/// Where the demo serves Arrow Flight SQL.
const DEMO_FLIGHT_BIND: &str = "127.0.0.1:50051";

/// The most common non-null value of a customer column (who the demo's
/// telesales agent and steward are).
async fn most_common(wh: &Warehouse, column: &str) -> Result<Option<String>, CliError> {
    most_common_in(wh, "customer", column, "").await
}

/// [`most_common`] in any table, of the rows of one list run when `run_id`
/// is not empty.
async fn most_common_in(
    wh: &Warehouse,
    table: &str,
    column: &str,
    run_id: &str,
) -> Result<Option<String>, CliError> {
    let ctx = context(&wh.config)?;
    register_lake(&ctx, &wh.lake, &wh.catalog, None).await?;
    if !ctx.table_exist(table)? {
        return Ok(None);
    }
    let only = if run_id.is_empty() {
        String::new()
    } else {
        format!(" AND run_id = '{}'", run_id.replace('\'', "''"))
    };
    let batches = ctx
        .sql(&format!(
            "SELECT {column} FROM {table} WHERE {column} IS NOT NULL{only} GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
        ))
        .await?
        .collect()
        .await?;
    Ok(batches.first().filter(|b| b.num_rows() > 0).and_then(|b| {
        let c = datafusion::arrow::compute::cast(
            b.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .ok()?;
        let a = datafusion::arrow::array::AsArray::as_string::<i32>(&c).clone();
        Some(a.value(0).to_string())
    }))
}

/// One token per shipped role (the previous demo tokens revoked), printed
/// with requests that show how differently each role sees the lake, and
/// kept in `demo-tokens.env` (owner-only) for another terminal.
async fn demo_tokens(wh: &Warehouse, run_id: &str, pack_period: &str) -> Result<(), CliError> {
    use crate::security::tokens::{self, NewToken};
    // The telesales agent: the one with most lines on the demo's renewal
    // list, else the one with most customers.
    let agent = match most_common_in(wh, "list_line", "agent_id", run_id).await? {
        Some(a) => Some(a),
        None => most_common(wh, "agent_id").await?,
    };
    let team = most_common(wh, "owning_team").await?;
    let roles = [
        "admin",
        "analyst",
        "telesales",
        "steward",
        "auditor",
        "monitor",
    ];
    let mut lines = Vec::new();
    for role in roles {
        let user = format!("demo-{role}");
        tokens::revoke(&wh.lake, None, Some(&user))
            .await
            .map_err(CliError::Security)?;
        let new = NewToken {
            user,
            role: role.into(),
            teams: if role == "steward" {
                team.iter().cloned().collect()
            } else {
                Vec::new()
            },
            regions: Vec::new(),
            agent_id: if role == "telesales" {
                agent.clone()
            } else {
                None
            },
            expires_in: chrono::Duration::days(30),
            grant: None,
            created_by: crate::security::Principal::local().user,
        };
        let (_, token) = tokens::create(&wh.lake, &new)
            .await
            .map_err(CliError::Security)?;
        lines.push(format!("export {}_TOKEN={token}", role.to_uppercase()));
    }
    let env = lines.join("\n") + "\n";
    let path = std::path::Path::new("demo-tokens.env");
    write_owner_only(path, &env).map_err(|source| CliError::Output {
        path: Some(path.to_path_buf()),
        source,
    })?;
    let addr = &wh.config.server.bind;
    println!(
        "\nTokens, one per role (also in {}; `source` it in another terminal):",
        path.display()
    );
    for l in &lines {
        println!("  {l}");
    }
    println!(
        "\nThe same query as analyst (masked) and as admin (in clear):\n  \
         curl -s -X POST http://{addr}/v1/query -H \"authorization: Bearer $ANALYST_TOKEN\" -H 'content-type: application/json' -d '{{\"sql\": \"SELECT customer_id, name, phone, id_number FROM customer ORDER BY 1 LIMIT 3\"}}'\n  \
         curl -s -X POST http://{addr}/v1/query -H \"authorization: Bearer $ADMIN_TOKEN\" -H 'content-type: application/json' -d '{{\"sql\": \"SELECT customer_id, name, phone, id_number FROM customer ORDER BY 1 LIMIT 3\"}}'\n\
         A telesales agent ({}) counts only their own customers; an analyst counts all:\n  \
         curl -s http://{addr}/v1/queries/customer_count -H \"authorization: Bearer $TELESALES_TOKEN\"\n  \
         curl -s http://{addr}/v1/queries/customer_count -H \"authorization: Bearer $ANALYST_TOKEN\"\n\
         The renewal list for the next 30 days: the analyst sees every line (phones masked), the agent only their own (phones in clear);\n  \
         the run is stored, so GET /v1/lists/{run_id} gives the same lines again:\n  \
         curl -s 'http://{addr}/v1/lists/renewals?format=csv' -H \"authorization: Bearer $ANALYST_TOKEN\"\n  \
         curl -s 'http://{addr}/v1/lists/{run_id}?format=csv' -H \"authorization: Bearer $TELESALES_TOKEN\"\n\
         Customers per segment (type / value tier / lifecycle stage):\n  \
         curl -s http://{addr}/v1/queries/segment_counts -H \"authorization: Bearer $ANALYST_TOKEN\"\n\
         Data quality: teams ranked by score (the steward sees their own team's work orders):\n  \
         curl -s http://{addr}/v1/queries/quality_teams -H \"authorization: Bearer $ANALYST_TOKEN\"\n  \
         curl -s http://{addr}/v1/queries/quality_work_orders -H \"authorization: Bearer $STEWARD_TOKEN\"\n\
         The report pack of {pack_period} (pages with charts, or ?format=csv|json; a steward sees their own teams' rows):\n  \
         curl -s http://{addr}/v1/reports -H \"authorization: Bearer $ANALYST_TOKEN\"\n  \
         curl -s 'http://{addr}/v1/reports/team_ranking?period={pack_period}' -H \"authorization: Bearer $ANALYST_TOKEN\" > team_ranking.html\n  \
         curl -s 'http://{addr}/v1/reports/work_orders?period={pack_period}&format=csv' -H \"authorization: Bearer $STEWARD_TOKEN\"\n\
         The scheduled jobs (quality scan, scores, report pack, tier moves) and their last runs:\n  \
         curl -s http://{addr}/v1/jobs -H \"authorization: Bearer $ADMIN_TOKEN\"\n\
         Only the auditor reads the audit trail (every request above is in it):\n  \
         curl -s 'http://{addr}/v1/queries/audit_volume' -H \"authorization: Bearer $AUDITOR_TOKEN\"",
        agent.as_deref().unwrap_or("no agent")
    );
    if let Some(pg) = pg_address(&wh.config.server.pg_bind) {
        println!("{}", psql_lines(&pg));
    }
    if !wh.config.server.flight_bind.is_empty() {
        println!(
            "Arrow Flight SQL (ADBC, pyarrow): the user name and the token log in by the handshake:\n  \
             python3 -c \"import adbc_driver_flightsql.dbapi as f; c = f.connect('grpc://{}', db_kwargs={{'username': 'demo-analyst', 'password': '$ANALYST_TOKEN'}}); \
             print(c.cursor().execute('SELECT customer_id, phone FROM customer LIMIT 3').fetch_arrow_table())\"",
            wh.config.server.flight_bind
        );
    }
    Ok(())
}

/// `host` and `port` of a PostgreSQL bind address.
fn pg_address(bind: &str) -> Option<(String, String)> {
    let (host, port) = bind.rsplit_once(':')?;
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "[::]" => "::1",
        h => h.trim_start_matches('[').trim_end_matches(']'),
    };
    Some((host.to_string(), port.to_string()))
}

/// psql lines for the demo's roles: the same masking over PostgreSQL.
fn psql_lines((host, port): &(String, String)) -> String {
    format!(
        "PostgreSQL clients (psql, DBeaver, psycopg) log in with the user name and the token as password; \
         the analyst sees the same masked columns there:\n  \
         PGPASSWORD=$ANALYST_TOKEN psql \"host={host} port={port} user=demo-analyst dbname=custlake\" \\\n       \
         -c 'SELECT customer_id, name, phone FROM customer ORDER BY 1 LIMIT 3' -c '\\dt'\n\
         A telesales agent has no free SQL: it calls its named queries as table functions:\n  \
         PGPASSWORD=$TELESALES_TOKEN psql \"host={host} port={port} user=demo-telesales dbname=custlake\" \\\n       \
         -c 'SELECT * FROM customer_count()' -c 'SELECT policy_no, expiry_date, phone FROM policies_expiring() LIMIT 5'"
    )
}

fn write_owner_only(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path)?;
    f.write_all(text.as_bytes())
}

async fn summary(wh: &Warehouse) -> Result<(), CliError> {
    let ctx = context(&wh.config)?;
    let tables = register_lake(&ctx, &wh.lake, &wh.catalog, None).await?;
    println!("\nWhat landed:");
    for t in &tables {
        let n = ctx.table(t.as_str()).await?.count().await?;
        println!("  {t:<16} {n:>10} rows");
    }
    if tables.iter().any(|t| t == "quarantine") {
        println!("\nWhat was quarantined, by source and reason:");
        let df = ctx
            .sql("SELECT source_system, entity, reason, count(*) AS rows FROM quarantine GROUP BY 1, 2, 3 ORDER BY 1, 2, 4 DESC")
            .await?;
        let batches = df.collect().await?;
        println!(
            "{}",
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
        );
    }
    println!(
        "\nTry (from another terminal, in this directory):\n{}",
        try_lines()
    );
    Ok(())
}

/// The commands the demo suggests, exactly as a user types them (the
/// README lists the same ones; a test runs each).
pub(super) fn try_lines() -> String {
    TRY.iter().map(|l| format!("  {l}\n")).collect()
}

/// See [`try_lines`].
pub(super) const TRY: [&str; 3] = [
    "cargo run --release -- sql \"SELECT customer_type, split_part(address, '|', 1) AS province, count(*) FROM source_customer GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10\"",
    "cargo run --release -- sql --format csv \"SELECT policy_no, product_line, status, premium FROM policy LIMIT 5\"",
    "cargo run --release -- schema source_customer",
];
