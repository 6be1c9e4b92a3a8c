use std::path::PathBuf;

use clap::Args;

use crate::config::Config;
use crate::ingest::{FileReport, Ingestor};
use crate::lake::Lake;
use crate::schema::Catalog;

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

pub(super) async fn run(config: &Config, args: &IngestArgs, progress: bool) -> anyhow::Result<()> {
    let lake = Lake::new(config)?;
    let catalog = Catalog::embedded()?;
    let ingestor = Ingestor::new(&lake, &catalog, progress);
    let results = if let Some(dir) = &args.from {
        if !dir.is_dir() {
            anyhow::bail!("{} is not a directory", dir.display());
        }
        let r = ingestor.ingest_dir(dir).await;
        if r.is_empty() {
            anyhow::bail!(
                "{} has no source files: expected DIR/<source_system>/<file> as `custlake generate` writes",
                dir.display()
            );
        }
        r
    } else {
        let (Some(source), Some(entity)) = (&args.source, &args.entity) else {
            anyhow::bail!("give --from DIR, or --source, --entity and files");
        };
        if args.paths.is_empty() {
            anyhow::bail!(
                "no files given: custlake ingest --source {source} --entity {entity} PATH..."
            );
        }
        let files = ingestor.expand_paths(source, entity, &args.paths)?;
        if files.is_empty() {
            anyhow::bail!("no matching files in the given directories");
        }
        let mut out = Vec::new();
        for f in files {
            out.push(ingestor.ingest_file(source, entity, &f).await);
        }
        out
    };
    let mut failed = 0;
    for r in &results {
        match r {
            Ok(r) => print_report(r),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} file(s) could not be ingested; nothing was written for them",
            results.len()
        );
    }
    Ok(())
}
