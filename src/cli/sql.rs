use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::CliError;
use crate::lake::Warehouse;
use crate::query::{Tables, check_read_only, plan_read_only, secured};
use crate::security::{Principal, Security};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// A readable table.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Parquet (needs --output).
    Parquet,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// One read-only statement: SELECT, WITH, EXPLAIN, SHOW or DESCRIBE.
    pub sql: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write the result to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Run the statement N times on one session (the first runs warm the
    /// caches) and write the result of the last run.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Print one JSON line per run to standard error: planning plus
    /// execution time with every result batch collected, and the row count.
    /// Opening the lake (reading the Delta logs) is reported once, apart.
    #[arg(long)]
    pub timing: bool,
    /// Read every table as it was at a Delta version (a number: each table
    /// at that version of its own log) or at a time (RFC 3339, or a date:
    /// its end, UTC), so a list or report can be reproduced later. Tiered
    /// tables take their watermarks as of the time too. Reproducible for as
    /// long as the removed files are kept (retention.vacuum_grace_minutes).
    #[arg(long, value_name = "VERSION|TIMESTAMP")]
    pub as_of: Option<crate::lake::AsOf>,
    /// Return at most N rows; when the result has more, a notice on
    /// standard error says it was cut.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Run as the principal of this token (or JWT): only what its role
    /// may read, masked and filtered as over HTTP. Without it the command
    /// runs as the lake's local operator (role admin), and says so in the
    /// audit trail.
    #[arg(
        long,
        env = "CUSTLAKE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Where the statement runs: here (local) or on the Apache Ballista
    /// cluster of --scheduler (default: server.engine).
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub engine: Option<crate::config::Engine>,
    /// The cluster's scheduler, HOST:PORT (default: server.scheduler_url).
    #[arg(long, value_name = "HOST:PORT")]
    pub scheduler: Option<String>,
}

impl SqlArgs {
    pub(super) fn table(sql: String) -> Self {
        Self {
            sql,
            format: Format::Table,
            output: None,
            runs: 1,
            timing: false,
            as_of: None,
            limit: None,
            token: None,
            engine: None,
            scheduler: None,
        }
    }
}

/// Who runs the statement: the token's principal, or the local operator.
pub(super) async fn principal_of(
    wh: &Warehouse,
    security: &Security,
    args: &SqlArgs,
) -> Result<Principal, CliError> {
    match &args.token {
        Some(t) => Ok(security.authenticate(&wh.lake, t).await?),
        None => Ok(Principal::local()),
    }
}

pub(super) async fn run(
    wh: &Warehouse,
    security: &Security,
    args: &SqlArgs,
) -> Result<(), CliError> {
    let principal = principal_of(wh, security, args).await?;
    let role = security.role(&principal)?;
    if !role.free_sql {
        return Err(crate::security::SecurityError::Forbidden(format!(
            "role {} may not send its own SQL; it runs the named queries and lists granted to it",
            role.name
        ))
        .into());
    }
    if args.limit.is_some_and(|l| l > role.max_rows) {
        return Err(crate::security::SecurityError::Forbidden(format!(
            "role {} may not ask for more than {} rows at once",
            role.name, role.max_rows
        ))
        .into());
    }
    check_read_only(&args.sql, &wh.config.query)?;
    if matches!(args.format, Format::Parquet) && args.output.is_none() {
        return Err(CliError::Usage(
            "--format parquet needs --output FILE".into(),
        ));
    }
    let opened = Instant::now();
    let runtime = crate::query::runtime(&wh.config)?;
    let ctx = secured(
        &wh.config,
        runtime,
        &wh.lake,
        &wh.catalog,
        Tables::AsOf(args.as_of.as_ref()),
        security,
        &principal,
    )
    .await?
    .ctx;
    // A token's principal always runs under its role's row cap.
    let limit = match args.limit {
        Some(l) => Some(l),
        None if principal.via == "local" => None,
        None => Some(role.max_rows),
    };
    if args.timing {
        let ms = opened.elapsed().as_secs_f64() * 1e3;
        eprintln!("{}", serde_json::json!({ "open_ms": ms }));
    }
    let work = async {
        if args.runs > 1 || args.timing {
            run_timed(&ctx, args, limit).await
        } else {
            run_once(&ctx, args, limit).await
        }
    };
    // A token's principal runs under its role's longest query time too.
    if principal.via == "local" {
        return work.await;
    }
    let ms = role.max_timeout_ms;
    tokio::time::timeout(std::time::Duration::from_millis(ms), work)
        .await
        .map_err(|_| {
            crate::query::QueryError::Timeout(format!(
                "the query did not finish within {ms} ms (role {}'s max_timeout_ms)",
                role.name
            ))
        })?
}

/// Plan, run and write the statement once.
async fn run_once(
    ctx: &SessionContext,
    args: &SqlArgs,
    limit: Option<usize>,
) -> Result<(), CliError> {
    let df = plan_read_only(ctx, &args.sql).await?;
    let schema = df.schema().inner().clone();
    let Some(limit) = limit else {
        let stream = df.execute_stream().await?;
        return write(args, schema, stream).await;
    };
    // One row past the limit tells a cut result from a whole one.
    let stream = df
        .limit(0, Some(limit.saturating_add(1)))?
        .execute_stream()
        .await?;
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = at_most(stream, limit, cut.clone());
    write(args, schema, stream).await?;
    if cut.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("note: the result was cut at {limit} rows (--limit); more rows exist");
    }
    Ok(())
}

/// `stream` cut at `limit` rows; `cut` is set when rows were left out.
fn at_most(
    stream: SendableRecordBatchStream,
    limit: usize,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> SendableRecordBatchStream {
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    let schema = stream.schema();
    let mut left = limit;
    let cut_stream = stream.filter_map(move |b| {
        let out = match b {
            Ok(b) if b.num_rows() > left => {
                cut.store(true, std::sync::atomic::Ordering::Relaxed);
                let kept = b.slice(0, left);
                left = 0;
                (kept.num_rows() > 0).then_some(Ok(kept))
            }
            Ok(b) => {
                left -= b.num_rows();
                Some(Ok(b))
            }
            Err(e) => Some(Err(e)),
        };
        std::future::ready(out)
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, cut_stream))
}

/// Run the statement `--runs` times, each collected in memory and timed,
/// then write the last result.
async fn run_timed(
    ctx: &SessionContext,
    args: &SqlArgs,
    limit: Option<usize>,
) -> Result<(), CliError> {
    let mut last = None;
    for run in 1..=args.runs {
        crate::query::fresh_budget(ctx);
        let started = Instant::now();
        let mut df = plan_read_only(ctx, &args.sql).await?;
        if let Some(l) = limit {
            df = df.limit(0, Some(l))?;
        }
        let schema = df.schema().inner().clone();
        let batches = df.collect().await?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if args.timing {
            eprintln!(
                "{}",
                serde_json::json!({ "run": run, "ms": ms, "rows": rows })
            );
        }
        last = Some((schema, batches));
    }
    let Some((schema, batches)) = last else {
        return Ok(());
    };
    let stream = MemoryStream::try_new(batches, schema.clone(), None)?;
    write(args, schema, Box::pin(stream)).await
}

/// Write a result stream in the chosen format.
pub(super) async fn write(
    args: &SqlArgs,
    schema: SchemaRef,
    mut stream: SendableRecordBatchStream,
) -> Result<(), CliError> {
    let mut out: Box<dyn Write + Send> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(
            |source| CliError::Output {
                path: Some(p.clone()),
                source,
            },
        )?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    match args.format {
        Format::Table => {
            let mut batches: Vec<RecordBatch> = Vec::new();
            while let Some(b) = stream.next().await {
                batches.push(b?);
            }
            let shown = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?;
            writeln!(out, "{shown}")?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            eprintln!("{rows} row(s)");
        }
        Format::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            let mut any = false;
            while let Some(b) = stream.next().await {
                w.write(&b?)?;
                any = true;
            }
            if !any {
                w.write(&RecordBatch::new_empty(schema))?;
            }
            w.into_inner().flush()?;
            return Ok(());
        }
        Format::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut out);
            while let Some(b) = stream.next().await {
                w.write(&b?)?;
            }
            w.finish()?;
            drop(w);
            writeln!(out)?;
        }
        Format::Ndjson => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
            while let Some(b) = stream.next().await {
                w.write(&b?)?;
            }
            w.finish()?;
        }
        Format::Parquet => {
            // Snappy, as most Parquet writers default to; a column's
            // dictionary stops at 64 KiB (a column of names or ids falls
            // back to plain values after a few thousand, rather than
            // interning a megabyte of them first; codes and tiers keep
            // theirs).
            let props = datafusion::parquet::file::properties::WriterProperties::builder()
                .set_compression(datafusion::parquet::basic::Compression::SNAPPY)
                .set_dictionary_page_size_limit(64 * 1024)
                .build();
            let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(out, schema, Some(props))?;
            while let Some(b) = stream.next().await {
                w.write(&b?)?;
            }
            w.close()?;
            return Ok(());
        }
    }
    out.flush()?;
    Ok(())
}
