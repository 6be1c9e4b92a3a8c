use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::error::Classify;
use crate::ingest::{FileReport, Ingestor};
use crate::lake::Warehouse;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["from", "source"])))]
pub struct IngestArgs {
    /// A generator-shaped directory: DIR/<source_system>/<file> for every mapped entity.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["source", "entity", "paths"])]
    pub from: Option<PathBuf>,
    /// Source system of the files (see `custlake schema --sources`).
    #[arg(long, requires = "entity")]
    pub source: Option<String>,
    /// Entity of the source mapping: customer, policy, claim, payment, interaction or consent.
    #[arg(long, requires = "source")]
    pub entity: Option<String>,
    /// Files or directories to ingest.
    #[arg(requires = "source")]
    pub paths: Vec<PathBuf>,
}

pub(super) fn print_report(r: &FileReport) {
    if r.loaded {
        eprintln!(
            "{}: {} → {}: {} rows read, {} loaded, {} quarantined in {:.1}s ({:.0} rows/s, {:.1} MB/s)",
            r.file.display(),
            r.source_system,
            r.table,
            r.rows_read,
            r.rows_loaded,
            r.rows_quarantined,
            r.elapsed.as_secs_f64(),
            r.rows_read as f64 / r.elapsed.as_secs_f64().max(1e-9),
            r.bytes as f64 / 1e6 / r.elapsed.as_secs_f64().max(1e-9),
        );
        if !r.reasons.is_empty() {
            let reasons: Vec<String> = r.reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
            eprintln!("    quarantined: {}", reasons.join(", "));
        }
    } else {
        eprintln!(
            "{}: already loaded as batch {} ({} rows); nothing changed",
            r.file.display(),
            r.batch_id,
            r.rows_read
        );
    }
}

pub(super) async fn run(wh: &Warehouse, args: &IngestArgs) -> Result<(), CliError> {
    let ingestor = Ingestor::new(wh);
    let results = if let Some(dir) = &args.from {
        if !dir.is_dir() {
            return Err(CliError::Usage(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let r = ingestor.ingest_dir(dir).await;
        if r.is_empty() {
            return Err(CliError::Usage(format!(
                "{} has no source files: expected DIR/<source_system>/<file> as `custlake generate` writes",
                dir.display()
            )));
        }
        r
    } else {
        let (Some(source), Some(entity)) = (&args.source, &args.entity) else {
            return Err(CliError::Usage(
                "give --from DIR, or --source, --entity and files".into(),
            ));
        };
        if args.paths.is_empty() {
            return Err(CliError::Usage(format!(
                "no files given: custlake ingest --source {source} --entity {entity} PATH..."
            )));
        }
        let files = ingestor.expand_paths(source, entity, &args.paths)?;
        if files.is_empty() {
            return Err(CliError::Usage(
                "no matching files in the given directories".into(),
            ));
        }
        let mut out = Vec::new();
        for f in files {
            out.push(ingestor.ingest_file(source, entity, &f).await);
        }
        out
    };
    let total = results.len();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(r) => print_report(&r),
            Err(e) => {
                eprintln!("error: {e}");
                failed.push(e);
            }
        }
    }
    // Each failure was printed as it happened; the exit code is the kind
    // of the first.
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(CliError::IngestFailed {
            failed: failed.len(),
            total,
            kind: first.kind(),
        }),
    }
}
