use std::path::PathBuf;

use clap::Args;

use crate::config::Config;
use crate::ingest::Ingestor;
use crate::lake::Lake;
use crate::query::{context, register_lake};
use crate::sample::{GenerateOptions, generate};
use crate::schema::Catalog;

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
pub(super) async fn init(config: &Config) -> anyhow::Result<()> {
    let lake = Lake::new(config)?;
    let catalog = Catalog::embedded()?;
    for def in &catalog.tables {
        lake.open_or_create(def).await?;
    }
    eprintln!(
        "{} tables ready under {}",
        catalog.tables.len(),
        lake.root(crate::lake::Tier::Hot)
    );
    Ok(())
}

pub(super) async fn run(config: &Config, args: &DemoArgs, progress: bool) -> anyhow::Result<()> {
    let lake = Lake::new(config)?;
    let catalog = Catalog::embedded()?;
    let empty = lake
        .open(catalog.table("source_customer")?)
        .await?
        .is_none();
    if empty {
        eprintln!(
            "The lake at {} is empty: generating a sample insurer of {} customers into {}",
            lake.root(crate::lake::Tier::Hot),
            args.customers,
            args.sample_dir.display()
        );
        let opts = GenerateOptions {
            customers: args.customers,
            seed: args.seed,
            out: args.sample_dir.clone(),
            as_of: chrono::Utc::now().date_naive(),
            bad_rate: 0.015,
            progress,
        };
        generate(&opts)?;
        let ingestor = Ingestor::new(&lake, &catalog, progress);
        for r in ingestor.ingest_dir(&args.sample_dir).await {
            super::ingest::print_report(&r?);
        }
    } else {
        eprintln!(
            "The lake at {} already holds data; showing what it has.",
            lake.root(crate::lake::Tier::Hot)
        );
    }
    let rules = crate::identity::Rules::default_rules()?;
    let r = crate::identity::resolve(
        &lake,
        &catalog,
        &rules,
        crate::identity::Trigger::Auto,
        progress,
    )
    .await?;
    eprintln!(
        "Resolved {} source customer records into {} golden customers in {:.1}s ({} new, {} open suspected-duplicate groups for review)",
        r.records, r.customers, r.seconds, r.new_customers, r.suspect_groups
    );
    summary(config, &lake, &catalog).await?;
    if args.no_serve {
        return Ok(());
    }
    super::serve::run(config, &super::serve::ServeArgs { bind: None }).await
}

async fn summary(config: &Config, lake: &Lake, catalog: &Catalog) -> anyhow::Result<()> {
    let ctx = context(config)?;
    let tables = register_lake(&ctx, lake, catalog).await?;
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
        "\nTry:\n  custlake sql \"SELECT customer_type, split_part(address, '|', 1) AS province, count(*) FROM source_customer GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10\"\n  custlake sql --format csv \"SELECT policy_no, product_line, status, premium FROM policy LIMIT 5\"\n  custlake schema source_customer"
    );
    Ok(())
}
