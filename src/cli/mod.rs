//! The command line: one file per command.

mod analytics;
mod audit;
mod cluster;
mod config;
mod demo;
mod generate;
mod identity;
mod ingest;
mod jobs;
mod progress;
mod quality;
mod report;
mod schema;
mod serve;
mod sql;
mod tier;
mod token;
mod upgrade;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, Overrides};
use crate::error::{Classify, ErrorKind};
use crate::lake::{OpenError, Warehouse};

/// Why a command failed: the error of the module that failed, or a problem
/// of the command line itself. Its kind gives the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
    #[error(transparent)]
    Rules(#[from] crate::schema::rules::RulesError),
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Generate(#[from] crate::generate::GenerateError),
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    #[error(transparent)]
    Analytics(crate::analytics::AnalyticsError),
    #[error(transparent)]
    Quality(crate::quality::QualityError),
    #[error(transparent)]
    Report(#[from] crate::reports::ReportError),
    /// `jobs run` ran the job and it failed (recorded in job_run).
    #[error("{message}")]
    JobFailed { message: String, kind: ErrorKind },
    /// `audit verify` found a broken link.
    #[error("{0}")]
    AuditBroken(String),
    /// Several files of one ingest failed (each was reported as it failed).
    #[error("{failed} of {total} file(s) could not be ingested; nothing was written for them")]
    IngestFailed {
        failed: usize,
        total: usize,
        kind: ErrorKind,
    },
    /// An argument the command cannot take.
    #[error("{0}")]
    Usage(String),
    /// Writing the result (to standard output or `--output`).
    #[error("{}{source}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Output {
        path: Option<PathBuf>,
        #[source]
        source: std::io::Error,
    },
    /// Encoding a result.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A part-way stop of a command that a rerun completes.
    #[error("{message}: {source}")]
    Interrupted {
        message: &'static str,
        #[source]
        source: Box<CliError>,
    },
}

impl CliError {
    /// Whether this is writing a result to standard output after its
    /// reader went away (`custlake sql … | head`): not a failure of the
    /// command's work, and not one to report.
    pub fn is_closed_output(&self) -> bool {
        let broken = |e: &(dyn std::error::Error + 'static)| {
            let mut next = Some(e);
            while let Some(err) = next {
                if err
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                {
                    return true;
                }
                next = err.source();
            }
            false
        };
        match self {
            Self::Output { path: None, source } => source.kind() == std::io::ErrorKind::BrokenPipe,
            Self::Arrow(e) => broken(e) || e.to_string().contains("Broken pipe (os error 32)"),
            Self::Parquet(e) => broken(e) || e.to_string().contains("Broken pipe (os error 32)"),
            Self::Json(e) => e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe),
            _ => false,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(source: std::io::Error) -> Self {
        Self::Output { path: None, source }
    }
}

impl From<datafusion::error::DataFusionError> for CliError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Self::Query(e.into())
    }
}

impl Classify for CliError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Config(e) => e.kind(),
            Self::Open(e) => e.kind(),
            Self::Schema(e) => e.kind(),
            Self::Rules(e) => e.kind(),
            Self::Lake(e) => e.kind(),
            Self::Query(e) => e.kind(),
            Self::Ingest(e) => e.kind(),
            Self::Identity(e) => e.kind(),
            Self::Generate(e) => e.kind(),
            Self::Server(e) => e.kind(),
            Self::Security(e) => e.kind(),
            Self::Analytics(e) => e.kind(),
            Self::Quality(e) => e.kind(),
            Self::Report(e) => e.kind(),
            Self::JobFailed { kind, .. } => *kind,
            Self::AuditBroken(_) => ErrorKind::StorageDamaged,
            Self::IngestFailed { kind, .. } => *kind,
            Self::Usage(_) => ErrorKind::InvalidParameter,
            // The output named (or standard output): its own problem, not
            // the lake's.
            Self::Output { source, .. } => crate::error::file_io_kind(source),
            Self::Arrow(_) | Self::Parquet(_) | Self::Json(_) => ErrorKind::Internal,
            Self::Interrupted { source, .. } => source.kind(),
        }
    }
}

/// One audit record for a command run on the lake, whatever its outcome;
/// the journal is moved into `audit_log` once it has grown (a server does
/// it every few seconds; `custlake audit flush` at once).
async fn audit_command(
    wh: &Warehouse,
    security: &crate::security::Security,
    command: &Command,
    result: &Result<(), CliError>,
    started: std::time::Instant,
) -> Result<(), CliError> {
    let principal = match command {
        Command::Sql(args) => sql::principal_of(wh, security, args)
            .await
            .unwrap_or_else(|_| crate::security::Principal {
                user: "anonymous".into(),
                ..crate::security::Principal::local()
            }),
        Command::List(c) if c.token().is_some() => security
            .authenticate(&wh.lake, c.token().unwrap_or_default())
            .await
            .unwrap_or_else(|_| crate::security::Principal {
                user: "anonymous".into(),
                ..crate::security::Principal::local()
            }),
        _ => crate::security::Principal::local(),
    };
    let outcome = match result {
        Ok(()) => "ok",
        Err(e) if matches!(e.kind(), ErrorKind::Unauthenticated | ErrorKind::Forbidden) => "denied",
        Err(_) => "error",
    };
    let mut record = crate::security::audit::AuditRecord::new(&principal, command.name(), outcome);
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A token on the command line is a secret: it is not recorded.
    let mut shown = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            shown.push("***".to_string());
            skip = false;
        } else if a == "--token" {
            skip = true;
            shown.push(a);
        } else if a.starts_with("--token=") {
            shown.push("--token=***".into());
        } else {
            shown.push(a);
        }
    }
    record.object = Some(shown.join(" "));
    if let Command::Sql(args) = command {
        record.detail = Some(args.sql.clone());
        record.format = Some(format!("{:?}", args.format).to_lowercase());
    }
    record.status = Some(i64::from(match result {
        Ok(()) => 0,
        Err(e) => exit_code(e.kind()),
    }));
    record.code = result.as_ref().err().map(|e| i64::from(e.kind().code()));
    record.duration_ms = Some(started.elapsed().as_millis() as i64);
    security.audit(record).await?;
    if let Some(j) = &security.journal {
        let big =
            std::fs::metadata(j.dir().dir.join("current.ndjson")).map_or(0, |m| m.len()) > 1 << 20;
        if (big || !j.dir().sealed()?.is_empty())
            && let Err(e) =
                crate::security::audit_table::flush(&wh.lake, &wh.catalog, j.dir()).await
        {
            tracing::warn!(error = %e, "audit records not moved into audit_log yet");
        }
    }
    Ok(())
}

/// The exit code of a failure of `kind` (the README lists them): 2 the
/// command line or a parameter, 65 the input (SQL, a file) or a decision
/// the data does not allow, 66 something
/// named does not exist, 69 the lake's storage is unavailable, 70 an
/// internal error, 74 the lake's data is damaged, 75 a temporary
/// condition (try again), 77 a credential refused or an action not
/// permitted, 78 the configuration.
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidParameter
        | ErrorKind::MalformedBody
        | ErrorKind::BodyTooLarge
        | ErrorKind::UnsupportedFormat
        | ErrorKind::NotAcceptable => 2,
        ErrorKind::InvalidSql
        | ErrorKind::NotReadOnly
        | ErrorKind::TooComplex
        | ErrorKind::InvalidData
        | ErrorKind::Refused => 65,
        ErrorKind::NotFound => 66,
        ErrorKind::StorageUnavailable => 69,
        ErrorKind::Internal => 70,
        ErrorKind::StorageDamaged => 74,
        ErrorKind::Conflict
        | ErrorKind::TooManyRequests
        | ErrorKind::ResourcesExhausted
        | ErrorKind::Busy
        | ErrorKind::Timeout => 75,
        ErrorKind::Unauthenticated | ErrorKind::Forbidden => 77,
        ErrorKind::Config => 78,
    }
}

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

/// `custlake plan-check`'s settings (the server passes its own).
#[derive(Debug, clap::Args)]
pub struct PlanCheckArgs {
    #[arg(long, default_value_t = 8192)]
    pub stack_kb: usize,
    #[arg(long, default_value_t = 64)]
    pub max_value_mb: u64,
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
    /// Plan the statement on standard input against empty tables, on a
    /// thread with the given stack (the server's sandbox for deep
    /// statements): exit 0 planned, 3 not plannable, or die.
    #[command(hide = true)]
    PlanCheck(PlanCheckArgs),
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
    /// Bring a lake an older custlake wrote up to date (adds source_key,
    /// the integer key of a source record, to the tables that name one).
    Upgrade(upgrade::UpgradeArgs),
    /// Legal holds: data under a hold is never purged.
    #[command(subcommand)]
    Hold(tier::HoldCommand),
    /// Bearer tokens: create, list, revoke.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// The audit trail: verify its hash chain, move the journal into audit_log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Score every golden customer as of a date: lifecycle stage, value
    /// score and tier, churn risk, segment (writes customer_score).
    Score(analytics::ScoreArgs),
    /// Renewal, cross-sell and churn lists: produce one (stored as a run),
    /// show a stored run, verify it against the lake as it was.
    #[command(subcommand)]
    List(analytics::ListCommand),
    /// Steward decisions on a customer: terminate, reactivate.
    #[command(subcommand)]
    Customer(analytics::CustomerCommand),
    /// Data quality: run the rules (scores and work orders), list them.
    #[command(subcommand)]
    Quality(quality::QualityCommand),
    /// The monthly report pack: generate a period's reports (stored per
    /// period), write them as HTML pages with charts, CSV and JSON.
    Report(report::ReportArgs),
    /// The scheduled jobs (`custlake serve` runs them): list, run one now.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Run an Apache Ballista scheduler for this lake (server.engine =
    /// "ballista" sends statements to it).
    Scheduler(cluster::SchedulerArgs),
    /// Run an Apache Ballista executor for this lake, registered with a
    /// scheduler.
    Executor(cluster::ExecutorArgs),
}

impl Command {
    /// The command's name in the audit trail.
    fn name(&self) -> &'static str {
        match self {
            Self::Demo(_) => "demo",
            Self::Init => "init",
            Self::Generate(_) => "generate",
            Self::Ingest(_) => "ingest",
            Self::Resolve(_) => "resolve",
            Self::Explain(_) => "explain",
            Self::Merge(_) => "merge",
            Self::Split(_) => "split",
            Self::Undo(_) => "undo",
            Self::Suspects(_) => "suspects",
            Self::Dedupe(_) => "dedupe",
            Self::Sql(_) => "sql",
            Self::PlanCheck(_) => "plan-check",
            Self::Serve(_) => "serve",
            Self::Schema(_) => "schema",
            Self::Config(_) => "config",
            Self::Tier(_) => "tier",
            Self::Upgrade(_) => "upgrade",
            Self::Hold(_) => "hold",
            Self::Token(_) => "token",
            Self::Audit(_) => "audit",
            Self::Score(_) => "score",
            Self::List(_) => "list",
            Self::Customer(_) => "customer",
            Self::Quality(_) => "quality",
            Self::Report(_) => "report",
            Self::Jobs(_) => "jobs",
            Self::Scheduler(_) => "scheduler",
            Self::Executor(_) => "executor",
        }
    }
}

impl Cli {
    pub fn load_config(&self) -> Result<Config, CliError> {
        let overrides = Overrides {
            lake: self.lake.clone(),
        };
        let mut config = Config::load(self.config.as_deref(), &overrides)?;
        // `custlake sql --engine`: where this statement runs (and what its
        // audit record says).
        if let Command::Sql(args) = &self.command {
            if let Some(engine) = args.engine {
                config.server.engine = engine;
            }
            if let Some(s) = &args.scheduler {
                config.server.scheduler_url = s.clone();
            }
            if config.server.engine == crate::config::Engine::Ballista
                && config.server.scheduler_url.trim().is_empty()
            {
                return Err(CliError::Usage(
                    "--engine ballista needs --scheduler HOST:PORT (or server.scheduler_url)"
                        .into(),
                ));
            }
        }
        Ok(config)
    }

    /// The warehouse the command works on, opened once: configuration,
    /// lake, declarations and rules, with progress on this terminal and
    /// the command line naming this process in table leases.
    pub fn warehouse(&self) -> Result<Warehouse, CliError> {
        let progress = Arc::new(progress::Terminal { bars: !self.quiet });
        let command: Vec<String> = std::env::args().collect();
        Ok(Warehouse::open(self.load_config()?, progress)?.with_holder(command.join(" ")))
    }
}

/// Run the parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let progress = progress::Terminal { bars: !cli.quiet };
    match &cli.command {
        // Commands that need no lake.
        Command::Generate(args) => generate::run(args, &progress),
        Command::Dedupe(args) => identity::dedupe(args),
        Command::Schema(args) => schema::run(args),
        Command::Config(c) => config::run(&cli.load_config()?, c),
        Command::PlanCheck(a) => std::process::exit(crate::query::sandbox::plan_check(
            a.stack_kb,
            a.max_value_mb,
        )),
        command => {
            let wh = cli.warehouse()?;
            let security = crate::security::Security::open(&wh.config, &wh.lake).await?;
            let started = std::time::Instant::now();
            let result = match command {
                Command::Demo(args) => demo::run(&wh, &security, args).await,
                Command::Init => demo::init(&wh).await,
                Command::Ingest(args) => ingest::run(&wh, args).await,
                Command::Resolve(args) => identity::resolve(&wh, args).await,
                Command::Explain(args) => identity::explain(&wh, args).await,
                Command::Merge(args) => identity::merge(&wh, args).await,
                Command::Split(args) => identity::split(&wh, args).await,
                Command::Undo(args) => identity::undo(&wh, args).await,
                Command::Suspects(c) => identity::suspects(&wh, c).await,
                Command::Sql(args) => sql::run(&wh, &security, args).await,
                Command::Scheduler(args) => cluster::scheduler(&wh, args).await,
                Command::Executor(args) => cluster::executor(&wh, args).await,
                Command::Serve(args) => serve::run(&wh, args).await,
                Command::Tier(c) => tier::run(&wh, c).await,
                Command::Upgrade(args) => upgrade::run(&wh, args).await,
                Command::Hold(c) => tier::hold(&wh, c).await,
                Command::Token(c) => token::run(&wh, &security, c).await,
                Command::Audit(c) => audit::run(&wh, &security, c).await,
                Command::Score(args) => analytics::score(&wh, args).await,
                Command::List(c) => analytics::list(&wh, &security, c).await,
                Command::Customer(c) => analytics::customer(&wh, c).await,
                Command::Quality(c) => quality::run(&wh, &security, c).await,
                Command::Report(args) => report::run(&wh, args).await,
                Command::Jobs(c) => jobs::run(&wh, &security, c).await,
                Command::Generate(_)
                | Command::Dedupe(_)
                | Command::Schema(_)
                | Command::PlanCheck(_)
                | Command::Config(_) => Ok(()),
            };
            audit_command(&wh, &security, command, &result, started).await?;
            result
        }
    }
}
