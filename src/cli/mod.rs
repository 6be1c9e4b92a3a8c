//! The command line: one file per command.

mod config;
mod demo;
mod generate;
mod identity;
mod ingest;
mod schema;
mod serve;
mod sql;
mod tier;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

/// custlake — an analytical customer warehouse for insurers.
///
/// Source extracts are validated, standardised and loaded into Delta Lake
/// tables; SQL runs over them with DataFusion.
#[derive(Debug, Parser)]
#[command(name = "custlake", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Lake root: a local path or a URL (file://, s3://, memory://).
    /// Tier roots default to <lake>/hot, <lake>/warm and <lake>/cold.
    #[arg(long, global = true, env = "CUSTLAKE__LAKE")]
    pub lake: Option<String>,

    /// Configuration file (default: ./custlake.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Do not draw progress bars.
    #[arg(long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a sample insurer (if the lake is empty), ingest it and summarise.
    Demo(demo::DemoArgs),
    /// Create every table of the lake, empty.
    Init,
    /// Write a sample insurer's source extracts and a ground-truth file.
    Generate(generate::GenerateArgs),
    /// Validate source files and load them into the lake.
    Ingest(ingest::IngestArgs),
    /// Resolve source customers into golden customers (strong rules merge,
    /// weak rules propose suspected duplicates).
    Resolve(identity::ResolveArgs),
    /// Show how a golden customer was built: sources, rules, scores, decisions.
    Explain(identity::ExplainArgs),
    /// Merge customers by hand (recorded, survives later runs, can be undone).
    Merge(identity::MergeArgs),
    /// Split source records off a customer by hand.
    Split(identity::SplitArgs),
    /// Roll back a merge, split, confirm or reject.
    Undo(identity::UndoArgs),
    /// Review suspected duplicate groups.
    #[command(subcommand)]
    Suspects(identity::SuspectsCommand),
    /// Cluster the rows of any CSV with a rules file; writes id,cluster_id.
    Dedupe(identity::DedupeArgs),
    /// Run a read-only SQL statement over the lake.
    Sql(sql::SqlArgs),
    /// Serve the HTTP query API.
    Serve(serve::ServeArgs),
    /// Print table declarations (fields, types, levels, rules, masks).
    Schema(schema::SchemaArgs),
    /// Configuration commands.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Hot, warm and cold tiers: what would move, moving it, what is where.
    #[command(subcommand)]
    Tier(tier::TierCommand),
    /// Legal holds: data under a hold is never purged.
    #[command(subcommand)]
    Hold(tier::HoldCommand),
}

impl Cli {
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let overrides = Overrides {
            lake: self.lake.clone(),
        };
        Ok(Config::load(self.config.as_deref(), &overrides)?)
    }
}

/// Run the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let progress = !cli.quiet;
    match &cli.command {
        Command::Demo(args) => demo::run(&cli.load_config()?, args, progress).await,
        Command::Init => demo::init(&cli.load_config()?).await,
        Command::Generate(args) => generate::run(args, progress),
        Command::Ingest(args) => ingest::run(&cli.load_config()?, args, progress).await,
        Command::Resolve(args) => identity::resolve(&cli.load_config()?, args, progress).await,
        Command::Explain(args) => identity::explain(&cli.load_config()?, args).await,
        Command::Merge(args) => identity::merge(&cli.load_config()?, args, progress).await,
        Command::Split(args) => identity::split(&cli.load_config()?, args, progress).await,
        Command::Undo(args) => identity::undo(&cli.load_config()?, args, progress).await,
        Command::Suspects(c) => identity::suspects(&cli.load_config()?, c, progress).await,
        Command::Dedupe(args) => identity::dedupe(args),
        Command::Sql(args) => sql::run(&cli.load_config()?, args).await,
        Command::Serve(args) => serve::run(&cli.load_config()?, args).await,
        Command::Schema(args) => schema::run(args),
        Command::Config(c) => config::run(&cli.load_config()?, c),
        Command::Tier(c) => tier::run(&cli.load_config()?, c, progress).await,
        Command::Hold(c) => tier::hold(&cli.load_config()?, c).await,
    }
}
