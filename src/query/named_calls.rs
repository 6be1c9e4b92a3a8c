//! Named queries as table functions: `SELECT * FROM customer_360('C1')`.
//!
//! A BI tool on the PostgreSQL or Flight SQL protocol cannot call
//! `GET /v1/queries/{name}`; it sends SQL. Each named query a principal may
//! run is registered in its statement session as a table function of the
//! same name, taking the query's parameters in their declared order (trailing
//! ones with defaults may be left out). The call binds its arguments exactly
//! as the HTTP route binds a query string (the same typing, ranges and
//! messages), plans the query's SQL in the principal's secured session and
//! inlines the plan, so a filter or projection around the call reaches the
//! query's scans, and masks and row filters are those of every other path.
//!
//! A role without free SQL gets a session holding nothing but these
//! functions (and the catalogs of what it holds): a bare table name is
//! then simply unknown, so such a role reaches the named queries granted to
//! it and nothing else, by construction rather than by a check of the text.
//!
//! Arguments must be constants: a bound parameter (`$1`) is a value only
//! once the statement is planned, and a table function is expanded while
//! it is planned.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::SessionContext;

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{ObjectName, Statement, TableFactor, Visit, Visitor};

use super::QueryError;
use super::guard::{WireKind, wire_read_only};
use super::named::{NamedQuery, ParamError};
use crate::error::{ErrorKind, Kinded};

/// Register each of `queries` on `ctx` as a table function planned in
/// `tables` (the principal's secured session), on the multi-threaded
/// runtime the lake's tables are opened on.
pub fn register_named_calls(
    ctx: &SessionContext,
    queries: impl IntoIterator<Item = NamedQuery>,
    tables: Arc<SessionState>,
) {
    register(ctx, queries, tables, false);
}

/// As [`register_named_calls`], for a session whose tables are all in
/// memory (the plan check's empty tables, `query::sandbox`): planning opens
/// nothing, so the call plans on the thread it is on, whatever the runtime.
pub fn register_named_calls_in_memory(
    ctx: &SessionContext,
    queries: impl IntoIterator<Item = NamedQuery>,
    tables: Arc<SessionState>,
) {
    register(ctx, queries, tables, true);
}

fn register(
    ctx: &SessionContext,
    queries: impl IntoIterator<Item = NamedQuery>,
    tables: Arc<SessionState>,
    in_memory: bool,
) {
    for query in queries {
        let name = query.name.clone();
        ctx.register_udtf(
            &name,
            Arc::new(NamedCall {
                query,
                tables: tables.clone(),
                in_memory,
            }),
        );
    }
}

/// One named query, callable as a table function.
#[derive(Debug)]
struct NamedCall {
    query: NamedQuery,
    /// The session its SQL is planned in.
    tables: Arc<SessionState>,
    /// Whether `tables` holds only in-memory tables.
    in_memory: bool,
}

impl TableFunctionImpl for NamedCall {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let given = self.arguments(args.exprs()).map_err(Kinded::datafusion)?;
        let bound = self.query.bind_text(&given).map_err(|e| {
            Kinded::datafusion(ParamError {
                message: format!(
                    "{} ({}({}))",
                    e.message,
                    self.query.name,
                    signature(&self.query)
                ),
                ..e
            })
        })?;
        let plan = if self.in_memory {
            let state = self.tables.clone();
            futures::executor::block_on(
                async move { state.create_logical_plan(&self.query.sql).await },
            )?
        } else {
            plan_blocking(self.tables.clone(), self.query.sql.clone())?
        };
        let plan = plan.with_param_values(bound)?;
        Ok(Arc::new(ViewTable::new(plan, Some(self.query.sql.clone()))))
    }
}

impl NamedCall {
    /// The call's arguments by parameter name, as text (the way a query
    /// string gives them); a NULL argument counts as left out.
    fn arguments(
        &self,
        exprs: &[Expr],
    ) -> std::result::Result<HashMap<String, String>, ParamError> {
        let q = &self.query;
        if exprs.len() > q.params.len() {
            return Err(ParamError {
                name: format!("argument {}", q.params.len() + 1),
                message: format!(
                    "{} takes at most {} arguments ({}), got {}",
                    q.name,
                    q.params.len(),
                    signature(q),
                    exprs.len()
                ),
            });
        }
        let mut given = HashMap::new();
        for (p, e) in q.params.iter().zip(exprs) {
            if let Some(text) = constant_text(e).map_err(|why| ParamError {
                name: p.name.clone(),
                message: format!("{why} ({}({}))", q.name, signature(q)),
            })? {
                given.insert(p.name.clone(), text);
            }
        }
        Ok(given)
    }
}

/// `name type, name type = default, …`
fn signature(q: &NamedQuery) -> String {
    q.params
        .iter()
        .map(|p| match &p.default {
            Some(d) => format!("{} {} = {d}", p.name, p.ty.name()),
            None => format!("{} {}", p.name, p.ty.name()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A constant argument as text; `None` for NULL.
fn constant_text(e: &Expr) -> std::result::Result<Option<String>, String> {
    match e {
        Expr::Literal(v, _) if v.is_null() => Ok(None),
        Expr::Literal(v, _) => {
            if let Some(Some(s)) = v.try_as_str() {
                return Ok(Some(s.to_string()));
            }
            let t = v.data_type();
            if !(t.is_numeric() || t.is_temporal() || t == DataType::Boolean) {
                return Err(format!(
                    "expected a string, number, boolean or date, got a value of type {t}"
                ));
            }
            // As Arrow shows it (a timestamp as `2026-07-01T10:00:00`,
            // not its nanoseconds).
            let shown = v
                .to_array()
                .ok()
                .and_then(|a| datafusion::arrow::util::display::array_value_to_string(&a, 0).ok());
            Ok(Some(shown.unwrap_or_else(|| v.to_string())))
        }
        // `DATE '2026-07-01'`, `'30'::int`: the value as written.
        Expr::Cast(c) => constant_text(&c.expr),
        Expr::TryCast(c) => constant_text(&c.expr),
        Expr::Negative(inner) => Ok(constant_text(inner)?.map(|t| format!("-{t}"))),
        Expr::Placeholder(p) => Err(format!(
            "a bound parameter ({}) cannot be a table function's argument, which is read \
             while the statement is planned; write the value into the statement",
            p.id
        )),
        other => Err(format!("expected a constant, got {other}")),
    }
}

/// Plan `sql` in `state`. A table function is called while the statement
/// around it is planned, synchronously, and a lake table may have to be
/// opened (I/O) to plan the query: the worker steps aside for it
/// (`block_in_place`), which needs the multi-threaded runtime every
/// custlake process runs queries on.
fn plan_blocking(state: Arc<SessionState>, sql: String) -> Result<LogicalPlan> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| {
        Kinded::datafusion_of(
            ErrorKind::Internal,
            "a named query was called outside the query runtime",
        )
    })?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(Kinded::datafusion_of(
            ErrorKind::Internal,
            "a named query was called on a single-threaded runtime",
        ));
    }
    tokio::task::block_in_place(|| {
        handle.block_on(async move { state.create_logical_plan(&sql).await })
    })
    .map_err(|e: DataFusionError| e.context("planning the named query"))
}

/// For a role without free SQL: `s` must be a query whose every relation
/// is a call of a named query it may run (`callable`, by lower-case name)
/// or a table of `pg_catalog` / `information_schema` (what drivers and BI
/// tools read on connecting), with at least one such relation. Its session
/// holds nothing else anyway; this gives the clear refusal. Session
/// statements (`SET`, `SHOW`, transactions) pass.
pub fn named_calls_only(
    s: &Statement,
    role: &str,
    callable: &std::collections::BTreeSet<String>,
) -> Result<(), QueryError> {
    let shown = || {
        if callable.is_empty() {
            "it may call no named query".to_string()
        } else {
            format!(
                "call its named queries as table functions instead (SELECT * FROM name(args)): {}",
                callable.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        }
    };
    let refuse = |what: String| {
        Err(QueryError::Security(
            crate::security::SecurityError::Forbidden(format!(
                "role {role} may not send its own SQL ({what}); {}",
                shown()
            )),
        ))
    };
    match s {
        Statement::Query(_) => {}
        other => {
            return match wire_read_only(other) {
                Ok(WireKind::Session) => Ok(()),
                _ => refuse("only queries of named queries".into()),
            };
        }
    }
    let mut v = NamedOnly {
        callable,
        calls: 0,
        bad: None,
    };
    let _ = s.visit(&mut v);
    match (v.bad, v.calls) {
        (Some(bad), _) => refuse(format!("it reads {bad}")),
        (None, 0) => refuse("it calls no named query".into()),
        (None, _) => Ok(()),
    }
}

/// [`named_calls_only`] on a statement's text (call it on the parse stack:
/// it parses the statement again).
pub fn named_calls_only_sql(
    sql: &str,
    role: &str,
    callable: &std::collections::BTreeSet<String>,
) -> Result<(), QueryError> {
    let parsed = DFParser::parse_sql(sql).map_err(|e| QueryError::Syntax(Box::new(e)))?;
    match parsed.front() {
        Some(DFStatement::Statement(s)) if parsed.len() == 1 => named_calls_only(s, role, callable),
        _ => Err(QueryError::Security(
            crate::security::SecurityError::Forbidden(format!(
                "role {role} may not send its own SQL; it may call its named queries"
            )),
        )),
    }
}

/// Counts the relations that are named-query calls or catalog tables; the
/// first other one stops it.
struct NamedOnly<'a> {
    callable: &'a std::collections::BTreeSet<String>,
    calls: usize,
    bad: Option<String>,
}

impl Visitor for NamedOnly<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        let parts = |name: &ObjectName| -> Vec<String> {
            name.0
                .iter()
                .map(|p| match p.as_ident() {
                    Some(i) if i.quote_style.is_none() => i.value.to_ascii_lowercase(),
                    Some(i) => i.value.clone(),
                    None => p.to_string(),
                })
                .collect()
        };
        match t {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } if matches!(parts(name).as_slice(), [one] if self.callable.contains(one)) => {
                self.calls += 1;
            }
            TableFactor::Table {
                name, args: None, ..
            } if matches!(
                parts(name).as_slice(),
                [.., schema, _] if schema == "pg_catalog" || schema == "information_schema"
            ) =>
            {
                self.calls += 1;
            }
            TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => {}
            TableFactor::Table { name, .. } => {
                self.bad = Some(name.to_string());
                return ControlFlow::Break(());
            }
            other => {
                self.bad = Some(other.to_string());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_without_free_sql_calls_only_its_named_queries() {
        let callable: std::collections::BTreeSet<String> = ["customer_count", "customer_lookup"]
            .map(String::from)
            .into();
        let check = |sql: &str| named_calls_only_sql(sql, "telesales", &callable);
        for fine in [
            "SELECT * FROM customer_count()",
            "SELECT * FROM CUSTOMER_COUNT() WHERE customers > 1 ORDER BY 1",
            "SELECT a.* FROM customer_lookup('core', 'C1') a JOIN customer_count() b ON true",
            "SELECT * FROM (SELECT * FROM customer_count()) x",
            "WITH c AS (SELECT * FROM customer_count()) SELECT * FROM (SELECT * FROM customer_count()) c",
            "SELECT relname FROM pg_catalog.pg_class",
            "SELECT * FROM customer_count() WHERE customer_type IN (SELECT customer_type FROM customer_count())",
        ] {
            check(fine).unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
        for refused in [
            "SELECT 1",
            "SELECT * FROM customer",
            "SELECT * FROM customer_count(), customer",
            "WITH customer AS (SELECT 1) SELECT * FROM customer_count(), customer",
            "SELECT * FROM customer_count() WHERE 1 IN (SELECT 1 FROM source_customer)",
            "SELECT * FROM customer_count() WHERE EXISTS (SELECT 1 FROM policy)",
            "SELECT (SELECT count(*) FROM policy) FROM customer_count()",
            "SELECT * FROM quarantine_summary()",
            "SELECT * FROM generate_series(1, 3)",
            "SELECT * FROM \"customer_count\"",
            "SELECT * FROM public.customer_count()",
            "SELECT * FROM UNNEST([1, 2])",
            "EXPLAIN SELECT * FROM customer_count()",
            "SELECT * FROM customer_count(); SELECT * FROM customer",
            "COPY (SELECT * FROM customer_count()) TO 'x.csv'",
        ] {
            let e = check(refused).expect_err(refused);
            assert!(
                e.to_string().contains("may not send its own SQL"),
                "{refused}: {e}"
            );
            assert_eq!(
                crate::error::Classify::kind(&e),
                crate::error::ErrorKind::Forbidden
            );
        }
        // Session chatter passes.
        for s in DFParser::parse_sql("SET TimeZone = 'UTC'").unwrap() {
            if let DFStatement::Statement(s) = s {
                named_calls_only(&s, "telesales", &callable).unwrap();
            }
        }
    }
}
