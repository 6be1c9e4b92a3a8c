//! SQL cases as data: every `tests/slt/*.slt` file runs against a lake
//! loaded from the hand-made fixture in `tests/slt/fixture/` (through the
//! real ingest and resolve), in custlake's own query session: the lake's
//! tables, the golden views and the SQL functions. Their answers were
//! worked out by hand from the fixture. Adding a case is adding lines to a
//! file; `SLT=name cargo test slt` runs the files whose name contains
//! `name`.
//!
//! Besides SQL, a record may run a named query of `sql/` with its
//! parameters bound as the API binds them:
//!
//! ```text
//! query TT
//! NAMED customer_lookup id=C1 system=core
//! ----
//! ...
//! ```

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use crate::common::{gbk, ok};

/// A column's type letter in `query` records.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Col {
    Bool,
    Int,
    Real,
    Text,
    Date,
    Timestamp,
    Other,
}

impl sqllogictest::ColumnType for Col {
    fn from_char(c: char) -> Option<Self> {
        Some(match c {
            'B' => Self::Bool,
            'I' => Self::Int,
            'R' => Self::Real,
            'T' => Self::Text,
            'D' => Self::Date,
            'P' => Self::Timestamp,
            _ => Self::Other,
        })
    }

    fn to_char(&self) -> char {
        match self {
            Self::Bool => 'B',
            Self::Int => 'I',
            Self::Real => 'R',
            Self::Text => 'T',
            Self::Date => 'D',
            Self::Timestamp => 'P',
            Self::Other => '?',
        }
    }
}

fn col_type(t: &DataType) -> Col {
    match t {
        DataType::Boolean => Col::Bool,
        t if t.is_integer() => Col::Int,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Col::Real,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Col::Text,
        DataType::Dictionary(_, v) => col_type(v),
        DataType::Date32 | DataType::Date64 => Col::Date,
        DataType::Timestamp(..) => Col::Timestamp,
        _ => Col::Other,
    }
}

fn float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    let s = format!("{v:.12}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Rows as text: NULL, `(empty)` for an empty string, floats to 12
/// places without trailing zeros, decimals with their scale (money keeps
/// its cents), dates and timestamps in ISO 8601.
fn rows(b: &RecordBatch, out: &mut Vec<Vec<String>>) -> Result<(), DataFusionError> {
    let cols: Vec<ArrayRef> = b
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Dictionary(_, v) => cast(c, v),
            DataType::Utf8View => cast(c, &DataType::Utf8),
            _ => Ok(c.clone()),
        })
        .collect::<Result<_, _>>()?;
    let options = FormatOptions::default();
    let fmts = cols
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    for r in 0..b.num_rows() {
        out.push(
            cols.iter()
                .zip(&fmts)
                .map(|(c, f)| {
                    if c.is_null(r) {
                        return "NULL".to_string();
                    }
                    let s = match c.data_type() {
                        DataType::Float64 => float(c.as_primitive::<Float64Type>().value(r)),
                        DataType::Float32 => {
                            float(f64::from(c.as_primitive::<Float32Type>().value(r)))
                        }
                        _ => f.value(r).to_string(),
                    };
                    if s.is_empty() {
                        "(empty)".into()
                    } else {
                        s.replace('\n', "\\n")
                    }
                })
                .collect(),
        );
    }
    Ok(())
}

/// custlake's query session as a sqllogictest database.
struct Engine {
    ctx: SessionContext,
}

impl Engine {
    /// `NAMED name k=v ...`: a named query of `sql/`, bound as the API
    /// binds a query string.
    async fn named(&self, rest: &str) -> Result<datafusion::dataframe::DataFrame, DataFusionError> {
        let mut words = rest.split_whitespace();
        let name = words.next().unwrap_or_default();
        let q = custlake::query::named::embedded()
            .map_err(DataFusionError::Plan)?
            .into_iter()
            .find(|q| q.name == name)
            .ok_or_else(|| DataFusionError::Plan(format!("no named query {name}")))?;
        let given: std::collections::HashMap<String, String> = words
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let params = q
            .bind_text(&given)
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        self.ctx.sql(&q.sql).await?.with_param_values(params)
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Engine {
    type Error = DataFusionError;
    type ColumnType = Col;

    async fn run(&mut self, sql: &str) -> Result<sqllogictest::DBOutput<Col>, DataFusionError> {
        let df = match sql.trim().strip_prefix("NAMED ") {
            Some(rest) => self.named(rest).await?,
            None => {
                let limits = custlake::config::Config::embedded().query;
                custlake::query::check_read_only(sql, &limits)
                    .map_err(|e| DataFusionError::Plan(e.to_string()))?;
                custlake::query::plan_read_only(&self.ctx, sql)
                    .await
                    .map_err(|e| DataFusionError::Plan(e.to_string()))?
            }
        };
        let types: Vec<Col> = df
            .schema()
            .fields()
            .iter()
            .map(|f| col_type(f.data_type()))
            .collect();
        let mut out = Vec::new();
        for b in df.collect().await? {
            rows(&b, &mut out)?;
        }
        Ok(sqllogictest::DBOutput::Rows { types, rows: out })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "custlake"
    }

    async fn sleep(d: std::time::Duration) {
        tokio::time::sleep(d).await
    }
}

/// The fixture's lake: its extracts ingested (core's in GBK, as the core
/// system writes them) and resolved.
fn fixture_lake(dir: &Path) -> custlake::config::Config {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt/fixture");
    let input = dir.join("fixture");
    for system in std::fs::read_dir(&fixture).unwrap() {
        let system = system.unwrap().path();
        let name = system.file_name().unwrap().to_owned();
        std::fs::create_dir_all(input.join(&name)).unwrap();
        for f in std::fs::read_dir(&system).unwrap() {
            let f = f.unwrap().path();
            let text = std::fs::read_to_string(&f).unwrap();
            let bytes = if name == "core" {
                gbk(&text)
            } else {
                text.into_bytes()
            };
            std::fs::write(input.join(&name).join(f.file_name().unwrap()), bytes).unwrap();
        }
    }
    ok(dir, &["ingest", "--from", input.to_str().unwrap()]);
    ok(dir, &["resolve"]);
    let mut config = custlake::config::Config::embedded();
    config.lake = dir.join("data/lake").to_string_lossy().to_string();
    config
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let only = std::env::var("SLT").ok();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .filter(|p| {
            only.as_ref().is_none_or(|o| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .contains(o.as_str())
            })
        })
        .collect();
    files.sort();
    files
}

fn validator(
    normalize: sqllogictest::Normalizer,
    actual: &[Vec<String>],
    expected: &[String],
) -> bool {
    let actual: Vec<String> = actual
        .iter()
        .map(|r| r.join(" ").trim_end().to_string())
        .collect();
    actual == expected.iter().map(normalize).collect::<Vec<_>>()
}

#[test]
fn sql_cases_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixture_lake(dir.path());
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files under tests/slt");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let failures = rt.block_on(async {
        let ctx = custlake::query::context(&config).unwrap();
        let lake = custlake::lake::Lake::new(&config).unwrap();
        let catalog = custlake::schema::Catalog::embedded().unwrap();
        custlake::query::register_lake(&ctx, &lake, &catalog, None)
            .await
            .unwrap();
        let mut failures = Vec::new();
        for f in &files {
            let ctx = ctx.clone();
            let mut runner = sqllogictest::Runner::new(move || {
                let ctx = ctx.clone();
                async move { Ok::<_, DataFusionError>(Engine { ctx }) }
            });
            runner.with_column_validator(sqllogictest::strict_column_validator);
            runner.with_normalizer(|s| s.trim_end().to_string());
            runner.with_validator(validator);
            let rel = f.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(f);
            if let Err(e) = runner.run_file_async(f).await {
                failures.push(format!("{}:\n{}", rel.display(), e.display(false)));
            }
            runner.shutdown_async().await;
        }
        failures
    });
    assert!(
        failures.is_empty(),
        "{} of {} .slt file(s) failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
