//! Deep statements are planned first in a child process.
//!
//! The guard caps a statement's size and nesting, and the parser refuses
//! more than 50 levels of recursion, so planning stays far inside a
//! worker's stack (the deepest accepted shapes need about 2 MiB in a debug
//! build; workers have 16 MiB, see the guard's tests). Should a shape
//! still find a deeper path (a DataFusion recursion without stack
//! protection: apache/datafusion#22936), an overflow aborts the whole
//! process, and with it every query in flight. So a statement nested more
//! than `query.sandbox_depth` deep is first parsed and planned by
//! `custlake plan-check`, a child process, against empty tables of the
//! lake's schemas, on a thread with half a worker's stack: if the child
//! dies, the statement is refused and the server goes on. Shallow
//! statements (every named query, nearly every analyst's) skip the ~10 ms
//! this costs.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use datafusion::datasource::MemTable;
use datafusion::scalar::ScalarValue;

use super::QueryError;
use crate::config::Config;

/// The exit code of a child that planned the statement and found it wrong
/// (the real planning reports why).
const PLAN_ERROR: i32 = 3;

/// Plan `sql` (with its bound `params`) in a child process first if it
/// nests more than `query.sandbox_depth` deep, waiting at most `wait`; an
/// error if the child did not survive it.
pub async fn probe(
    sql: &str,
    params: &[(String, ScalarValue)],
    depth: usize,
    config: &Config,
    wait: Duration,
) -> Result<(), QueryError> {
    let q = &config.query;
    if q.sandbox_depth == 0 || depth <= q.sandbox_depth {
        return Ok(());
    }
    let exe = executable(&q.sandbox_bin)?;
    let input = serde_json::json!({
        "sql": sql,
        "params": params.iter().map(|(k, v)| (k.clone(), to_json(v))).collect::<serde_json::Map<_, _>>(),
    })
    .to_string();
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(&exe)
        .args([
            "plan-check",
            "--stack-kb",
            &q.sandbox_stack_kb.to_string(),
            "--max-value-mb",
            &q.max_value_mb.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| QueryError::Internal(format!("starting the plan check: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A child that died at once closes its end: its status says why.
        let _ = stdin.write_all(input.as_bytes()).await;
    }
    let out = tokio::time::timeout(wait, child.wait_with_output())
        .await
        .map_err(|_| {
            QueryError::Timeout(format!(
                "planning the statement did not finish within {} ms",
                wait.as_millis()
            ))
        })?
        .map_err(|e| QueryError::Internal(format!("waiting for the plan check: {e}")))?;
    metrics::counter!("custlake_plan_sandbox_runs_total").increment(1);
    use std::os::unix::process::ExitStatusExt;
    match (out.status.code(), out.status.signal()) {
        (Some(0) | Some(PLAN_ERROR), _) => Ok(()),
        // A stack overflow aborts (SIGABRT, or SIGSEGV past the guard page).
        (_, Some(6 | 7 | 11)) => {
            metrics::counter!("custlake_plan_sandbox_deaths_total").increment(1);
            tracing::warn!(status = %out.status, "planning a statement overflowed the sandbox's stack");
            Err(QueryError::TooComplex(format!(
                "the statement could not be planned safely (planning it in a sandbox process \
                 ended with {}); nest it less deeply",
                out.status
            )))
        }
        _ => {
            let why = String::from_utf8_lossy(&out.stderr);
            Err(QueryError::Internal(format!(
                "the plan check ended with {}: {}",
                out.status,
                why.trim()
            )))
        }
    }
}

/// The binary run as the child: `configured`, or this one (by
/// `/proc/self/exe`, which still opens after the file was replaced by an
/// upgrade).
fn executable(configured: &str) -> Result<std::path::PathBuf, QueryError> {
    if !configured.is_empty() {
        return Ok(configured.into());
    }
    let own = std::path::Path::new("/proc/self/exe");
    if own.exists() {
        return Ok(own.to_path_buf());
    }
    std::env::current_exe()
        .map_err(|e| QueryError::Internal(format!("finding the custlake binary: {e}")))
}

/// A bound value as the child reads it back (the values a request binds:
/// null, booleans, integers, floats and text).
fn to_json(v: &ScalarValue) -> serde_json::Value {
    match v {
        ScalarValue::Boolean(Some(b)) => serde_json::Value::Bool(*b),
        ScalarValue::Int64(Some(i)) => serde_json::Value::from(*i),
        ScalarValue::Float64(Some(f)) => serde_json::Value::from(*f),
        ScalarValue::Utf8(Some(s)) => serde_json::Value::String(s.clone()),
        v if v.is_null() => serde_json::Value::Null,
        v => serde_json::Value::String(v.to_string()),
    }
}

fn from_json(v: &serde_json::Value) -> ScalarValue {
    match v {
        serde_json::Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => ScalarValue::Float64(n.as_f64()),
        },
        serde_json::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        _ => ScalarValue::Null,
    }
}

/// `custlake plan-check`: read one statement from standard input, plan it
/// against empty tables of the catalog's schemas on a thread with
/// `stack_kb` of stack, and exit 0 (planned), 3 (a planning error, printed)
/// or die trying.
pub fn plan_check(stack_kb: usize, max_value_mb: u64) -> i32 {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("reading the statement: {e}");
        return PLAN_ERROR;
    }
    // `{"sql": ..., "params": {...}}` from the server, or bare SQL.
    let (sql, params) = match serde_json::from_str::<serde_json::Value>(&input) {
        Ok(v) if v["sql"].is_string() => (
            v["sql"].as_str().unwrap_or_default().to_string(),
            v["params"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
                .unwrap_or_default(),
        ),
        _ => (input, Vec::new()),
    };
    let run = move || {
        let rt = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(e) => return Err(e.to_string()),
        };
        rt.block_on(plan_on_empty_tables(&sql, &params, max_value_mb))
    };
    let planned = std::thread::Builder::new()
        .name("custlake-plan-check".into())
        .stack_size(stack_kb.max(64) << 10)
        .spawn(run)
        .map_err(|e| e.to_string())
        .and_then(|h| {
            h.join()
                .map_err(|_| "the planning thread panicked".to_string())
        });
    match planned {
        Ok(Ok(())) => 0,
        Ok(Err(e)) | Err(e) => {
            eprintln!("{e}");
            PLAN_ERROR
        }
    }
}

async fn plan_on_empty_tables(
    sql: &str,
    params: &[(String, ScalarValue)],
    max_value_mb: u64,
) -> Result<(), String> {
    let mut config = Config::embedded();
    config.query.max_value_mb = max_value_mb;
    let catalog = crate::schema::Catalog::embedded().map_err(|e| e.to_string())?;
    let ctx = super::context(&config).map_err(|e| e.to_string())?;
    // Planned only: no scalar subquery is answered first.
    ctx.state_ref()
        .write()
        .config_mut()
        .set_extension(Arc::new(crate::lake::PlanOnly));
    let mut names = Vec::new();
    for def in &catalog.tables {
        let table =
            MemTable::try_new(def.arrow_schema(), vec![Vec::new()]).map_err(|e| e.to_string())?;
        ctx.register_table(def.name.as_str(), Arc::new(table))
            .map_err(|e| e.to_string())?;
        names.push(def.name.clone());
    }
    super::register_golden_views(&ctx, &names)
        .await
        .map_err(|e| e.to_string())?;
    // The named queries as table functions, as in a statement session: a
    // call the child did not know would end its planning at the FROM
    // clause, before the deep expressions it is here to plan.
    let tables = Arc::new(ctx.state());
    super::register_named_calls_in_memory(&ctx, super::named::embedded()?, tables);
    let mut df = super::plan_read_only(&ctx, sql)
        .await
        .map_err(|e| e.to_string())?;
    if !params.is_empty() {
        df = df
            .with_param_values(params.to_vec())
            .map_err(|e| e.to_string())?;
    }
    let plan = df
        .clone()
        .create_physical_plan()
        .await
        .map_err(|e| e.to_string())?;
    drop(plan);
    drop(df);
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A statement that calls a named query plans in the child: were the
    /// call unknown there, planning would stop at the FROM clause and the
    /// deep expressions the child is for would reach the server unplanned.
    #[test]
    fn a_call_of_a_named_query_plans_in_the_child() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(super::plan_on_empty_tables(
            "SELECT * FROM customer_count() WHERE customers > 1 + 1 \
             AND customer_type IN (SELECT source_system FROM customer_lookup('core', 'C1'))",
            &[],
            64,
        ))
        .unwrap();
        let e = rt
            .block_on(super::plan_on_empty_tables(
                "SELECT * FROM no_such_query()",
                &[],
                64,
            ))
            .unwrap_err();
        assert!(e.contains("no_such_query"), "{e}");
    }

    /// The deepest shapes the guard lets through plan, in this process, on
    /// a quarter of a worker's stack: the margin the sandbox backs up.
    #[test]
    fn the_deepest_accepted_statements_plan_on_a_quarter_of_a_workers_stack() {
        let cap = crate::config::Config::embedded().query.max_expression_depth;
        let chain = |first: &str, op: &str, n: usize| {
            let mut s = String::from(first);
            for i in 0..n {
                s.push_str(&op.replace("{i}", &i.to_string()));
            }
            s
        };
        let or = chain("policy_no = 'x'", " OR policy_no = 'p{i}'", cap - 4);
        let inner = chain("policy_no = 'x'", " OR policy_no = 'p{i}'", cap - 30);
        let mut nested = format!("SELECT policy_no AS x FROM policy WHERE {inner}");
        for _ in 0..20 {
            nested = format!("SELECT x FROM ({nested}) q");
        }
        let shapes = [
            format!("SELECT {}", chain("1", "+1", cap - 3)),
            format!("SELECT {}", chain("'a'", "||'a'", cap - 3)),
            format!("SELECT count(*) FROM customer_policy WHERE {or}"),
            chain("SELECT 1 AS x", " UNION ALL SELECT 1", cap - 3),
            nested,
        ];
        for sql in shapes {
            let limits = crate::config::Config::embedded().query;
            super::super::check_read_only(&sql, &limits)
                .unwrap_or_else(|e| panic!("{}: {e}", &sql[..60]));
            std::thread::Builder::new()
                .stack_size(crate::config::THREAD_STACK / 4)
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    rt.block_on(super::plan_on_empty_tables(&sql, &[], 64))
                        .unwrap();
                })
                .unwrap()
                .join()
                .unwrap();
        }
    }
}
