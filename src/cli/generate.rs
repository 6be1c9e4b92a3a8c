use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::generate::{GenerateOptions, generate};
use crate::progress::Progress;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of real customers.
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Random seed: the same seed and as-of date give byte-identical files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output directory: DIR/<source_system>/<entity file> and DIR/truth.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// The book's "today" (YYYY-MM-DD); default: today.
    #[arg(long, value_parser = parse_day)]
    pub as_of: Option<chrono::NaiveDate>,
    /// Share of source rows made invalid on purpose, to exercise quarantine.
    #[arg(long, default_value_t = 0.015)]
    pub bad_rate: f64,
}

pub(super) fn parse_day(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| format!("{s:?} is not a date YYYY-MM-DD: {e}"))
}

pub(super) fn run(args: &GenerateArgs, progress: &dyn Progress) -> Result<(), CliError> {
    let opts = GenerateOptions {
        customers: args.customers,
        seed: args.seed,
        out: args.out.clone(),
        as_of: args
            .as_of
            .unwrap_or_else(|| chrono::Utc::now().date_naive()),
        bad_rate: args.bad_rate,
    };
    let started = std::time::Instant::now();
    let summary = generate(&opts, progress)?;
    eprintln!(
        "generated {} customers (seed {}, as of {}) in {:.1}s:",
        summary.customers,
        opts.seed,
        opts.as_of,
        started.elapsed().as_secs_f64()
    );
    for (path, rows) in &summary.files {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "  {:<48} {:>10} rows {:>10.1} MB",
            path.display(),
            rows,
            size as f64 / 1e6
        );
    }
    Ok(())
}
