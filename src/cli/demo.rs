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
        wh.lake.open_or_create(def).await?;
    }
    eprintln!(
        "{} tables ready under {}",
        wh.catalog.tables.len(),
        wh.lake.root(Tier::Hot)
    );
    Ok(())
}

pub(super) async fn run(wh: &Warehouse, args: &DemoArgs) -> Result<(), CliError> {
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
    summary(wh).await?;
    if args.no_serve {
        return Ok(());
    }
    super::serve::run(wh, &super::serve::ServeArgs { bind: None }).await
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
