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
    /// The lake's config (the analytics suite's rules bind its numbers).
    config: custlake::config::Config,
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

impl Engine {
    /// `RULE name k=v ...`: a rule of `sql/analytics/`, its numbers bound
    /// from the config as `custlake score` binds them.
    async fn rule(&self, rest: &str) -> Result<datafusion::dataframe::DataFrame, DataFusionError> {
        let plan = |e: custlake::analytics::AnalyticsError| DataFusionError::Plan(e.to_string());
        let mut words = rest.split_whitespace();
        let q = custlake::analytics::rule(words.next().unwrap_or_default()).map_err(plan)?;
        let given = words
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if q.name == "score" {
            // With whole=false, as `custlake score` runs a pass: its tables
            // computed and held first.
            return custlake::analytics::score::rule_frame(&self.config, &self.ctx, &given)
                .await
                .map_err(plan);
        }
        let params = custlake::analytics::bind(&self.config, &q, &given).map_err(plan)?;
        self.ctx.sql(&q.sql).await?.with_param_values(params)
    }

    /// `LIST kind k=v ...`: a list's lines with their agents, as
    /// `custlake list` computes them (ranked by the latest scores on or
    /// before its date), before they are stored.
    async fn list(&self, rest: &str) -> Result<sqllogictest::DBOutput<Col>, DataFusionError> {
        use custlake::analytics::lists;
        let plan = |e: custlake::analytics::AnalyticsError| DataFusionError::Plan(e.to_string());
        let mut words = rest.split_whitespace();
        let kind = lists::ListKind::parse(words.next().unwrap_or_default()).map_err(plan)?;
        let mut req = lists::ListRequest::default();
        for (k, v) in words.filter_map(|kv| kv.split_once('=')) {
            let v = Some(v.to_string());
            match k {
                "as_of" => req.as_of = v,
                "within_days" => req.within_days = v.and_then(|d| d.parse().ok()),
                "product_line" => req.product_line = v,
                "team" => req.team = v,
                "region" => req.region = v,
                _ => return Err(DataFusionError::Plan(format!("LIST: unknown option {k}"))),
            }
        }
        let catalog = custlake::schema::Catalog::embedded().unwrap();
        let (as_of, params) =
            lists::parameters(&self.config, &catalog, kind, &req).map_err(plan)?;
        let scores = lists::scores_date(&self.ctx, as_of).await.map_err(plan)?;
        // The list registers its views in a context of its own.
        let lake = custlake::lake::Lake::new(&self.config).unwrap();
        let ctx = custlake::analytics::context(&self.config, &lake, &catalog, None)
            .await
            .map_err(plan)?;
        let df = lists::plan(&self.config, &ctx, kind, &params, scores)
            .await
            .map_err(plan)?;
        let types = df
            .schema()
            .fields()
            .iter()
            .map(|f| col_type(f.data_type()))
            .collect();
        let batches = df.collect().await?;
        let mut out = Vec::new();
        for b in &batches {
            rows(b, &mut out)?;
        }
        Ok(sqllogictest::DBOutput::Rows { types, rows: out })
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Engine {
    type Error = DataFusionError;
    type ColumnType = Col;

    async fn run(&mut self, sql: &str) -> Result<sqllogictest::DBOutput<Col>, DataFusionError> {
        let sql = sql.trim();
        if let Some(rest) = sql.strip_prefix("LIST ") {
            return self.list(rest).await;
        }
        let df = match sql.strip_prefix("NAMED ") {
            Some(rest) => self.named(rest).await?,
            None if sql.starts_with("RULE ") => self.rule(&sql["RULE ".len()..]).await?,
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

/// A fixture's lake: its extracts ingested (core's in GBK, as the core
/// system writes them; `X.parquet.csv` as the Parquet file `X.parquet`,
/// every column text) and resolved, then the suite's `setup` commands run
/// (one `custlake` command line per line).
fn fixture_lake(dir: &Path, suite: &Path) -> custlake::config::Config {
    let fixture = suite.join("fixture");
    let input = dir.join("fixture");
    for system in std::fs::read_dir(&fixture).unwrap() {
        let system = system.unwrap().path();
        let name = system.file_name().unwrap().to_owned();
        std::fs::create_dir_all(input.join(&name)).unwrap();
        for f in std::fs::read_dir(&system).unwrap() {
            let f = f.unwrap().path();
            let text = std::fs::read_to_string(&f).unwrap();
            let file_name = f.file_name().unwrap().to_string_lossy().to_string();
            if let Some(stem) = file_name
                .strip_suffix(".csv")
                .filter(|n| n.ends_with(".parquet"))
            {
                write_parquet(&text, &input.join(&name).join(stem));
                continue;
            }
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
    if let Ok(setup) = std::fs::read_to_string(suite.join("setup")) {
        for line in setup.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let args: Vec<&str> = line.split_whitespace().collect();
            ok(dir, &args);
        }
    }
    let mut config = custlake::config::Config::embedded();
    config.lake = dir.join("data/lake").to_string_lossy().to_string();
    config
}

/// A CSV text as a Parquet file of text columns.
fn write_parquet(csv: &str, path: &Path) {
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let schema = std::sync::Arc::new(Schema::new(
        header
            .iter()
            .map(|h| Field::new(*h, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let cols: Vec<ArrayRef> = (0..header.len())
        .map(|i| {
            std::sync::Arc::new(StringArray::from(
                rows.iter()
                    .map(|r| r.get(i).filter(|v| !v.is_empty()).copied())
                    .collect::<Vec<_>>(),
            )) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn slt_files(dir: &Path) -> Vec<PathBuf> {
    let only = std::env::var("SLT").ok();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
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
    run_suite("tests/slt", false);
}

/// The analytics rules (lifecycle, scores, consent, lists, assignment)
/// over their own hand-made fixture (`tests/slt/analytics/README.md`).
#[test]
fn analytics_cases_as_data() {
    run_suite("tests/slt/analytics", true);
}

fn run_suite(suite: &str, analytics: bool) {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join(suite);
    let dir = tempfile::tempdir().unwrap();
    let config = fixture_lake(dir.path(), &suite);
    let files = slt_files(&suite);
    assert!(!files.is_empty(), "no .slt files under {}", suite.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let failures = rt.block_on(async {
        let lake = custlake::lake::Lake::new(&config).unwrap();
        let catalog = custlake::schema::Catalog::embedded().unwrap();
        let ctx = if analytics {
            custlake::analytics::context(&config, &lake, &catalog, None)
                .await
                .unwrap()
        } else {
            let ctx = custlake::query::context(&config).unwrap();
            custlake::query::register_lake(&ctx, &lake, &catalog, None)
                .await
                .unwrap();
            ctx
        };
        let mut failures = Vec::new();
        for f in &files {
            let (ctx, config) = (ctx.clone(), config.clone());
            let mut runner = sqllogictest::Runner::new(move || {
                let (ctx, config) = (ctx.clone(), config.clone());
                async move { Ok::<_, DataFusionError>(Engine { ctx, config }) }
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
