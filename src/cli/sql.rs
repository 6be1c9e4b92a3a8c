use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;

use crate::config::Config;
use crate::lake::Lake;
use crate::query::{check_read_only, context, register_lake};
use crate::schema::Catalog;

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
}

impl SqlArgs {
    pub(super) fn table(sql: String) -> Self {
        Self {
            sql,
            format: Format::Table,
            output: None,
        }
    }
}

pub(super) async fn run(config: &Config, args: &SqlArgs) -> anyhow::Result<()> {
    check_read_only(&args.sql)?;
    let lake = Lake::new(config)?;
    let catalog = Catalog::embedded()?;
    let ctx = context(config)?;
    register_lake(&ctx, &lake, &catalog).await?;
    let df = ctx.sql(&args.sql).await?;
    let schema = df.schema().inner().clone();
    let mut stream = df.execute_stream().await?;
    let mut out: Box<dyn Write + Send> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        )),
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
            if args.output.is_none() {
                anyhow::bail!("--format parquet needs --output FILE");
            }
            let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(out, schema, None)?;
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
