//! What a user's statement must pass before it is planned: one statement,
//! no larger than `query.max_statement_bytes`, nested no deeper than
//! `query.max_expression_depth`, read-only by its text and then by its
//! logical plan.
//!
//! Depth matters because DataFusion and sqlparser walk, clone, hash and
//! drop expression trees by recursion, one stack frame per level: a
//! `1+1+…+1` of 300,000 terms (600 KB) overflows a worker's stack and
//! aborts the process (upstream: apache/datafusion#22936). The parser
//! itself builds such chains in a loop, so its recursion limit does not
//! stop them. The statement is therefore parsed, measured and dropped on a
//! thread of its own with a large stack, and only a statement within the
//! limits goes on to be planned where queries run.

use std::ops::ControlFlow;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, ObjectName, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};

use super::QueryError;
use crate::config::QueryConfig;

/// The stack of the thread that parses and measures a statement: enough to
/// drop the deepest tree a statement of the largest accepted size can
/// build (reserved address space; only what is touched is committed).
const PARSE_STACK: usize = 256 << 20;

/// Refuse anything but a single read-only statement within the size and
/// depth limits. DataFusion's own parser is used, so its extensions
/// (`CREATE EXTERNAL TABLE`, `COPY`) are recognised; an `EXPLAIN` is checked
/// for what it explains, since `EXPLAIN ANALYZE` runs it.
pub fn check_read_only(sql: &str, limits: &QueryConfig) -> Result<Checked, QueryError> {
    check_size(sql, limits)?;
    let max_depth = limits.max_expression_depth;
    let max_relations = limits.max_relations;
    on_parse_stack(|| check_parsed(sql, max_depth, max_relations))
}

/// Refuse a statement text over `query.max_statement_bytes`, or whose
/// function calls nest deeper than `query.max_call_depth` (counted on its
/// tokens, in linear time, before any parser sees it).
pub fn check_size(sql: &str, limits: &QueryConfig) -> Result<(), QueryError> {
    if sql.len() > limits.max_statement_bytes {
        return Err(QueryError::TooComplex(format!(
            "the statement is {} bytes; at most {} are accepted (query.max_statement_bytes)",
            sql.len(),
            limits.max_statement_bytes
        )));
    }
    let calls = call_depth(sql);
    if calls > limits.max_call_depth {
        return Err(QueryError::TooComplex(format!(
            "the statement nests function calls {calls} deep; at most {} are accepted \
             (query.max_call_depth)",
            limits.max_call_depth
        )));
    }
    Ok(())
}

/// How deep function calls nest inside each other's parentheses in `sql`
/// (a parenthesis after a name, not after `FROM`, `IN`, `EXISTS` and the
/// like, which open subqueries and lists). A text the tokenizer cannot
/// read counts 0: the parser then says what is wrong with it.
fn call_depth(sql: &str) -> usize {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return 0;
    };
    let opens_subquery = |k: Keyword| {
        matches!(
            k,
            Keyword::FROM
                | Keyword::JOIN
                | Keyword::IN
                | Keyword::EXISTS
                | Keyword::LATERAL
                | Keyword::AS
                | Keyword::UNION
                | Keyword::INTERSECT
                | Keyword::EXCEPT
                | Keyword::ALL
                | Keyword::ANY
                | Keyword::SOME
                | Keyword::SELECT
                | Keyword::WITH
                | Keyword::VALUES
                | Keyword::ON
                | Keyword::USING
                | Keyword::WHERE
                | Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::THEN
                | Keyword::ELSE
                | Keyword::WHEN
                | Keyword::OVER
                | Keyword::BY
        )
    };
    let mut stack: Vec<bool> = Vec::new();
    let (mut calls, mut deepest) = (0usize, 0usize);
    let mut previous: Option<&Token> = None;
    for t in &tokens {
        match t {
            Token::Whitespace(_) => continue,
            Token::LParen => {
                let call = matches!(previous, Some(Token::Word(w)) if !opens_subquery(w.keyword));
                stack.push(call);
                if call {
                    calls += 1;
                    deepest = deepest.max(calls);
                }
            }
            Token::RParen if stack.pop() == Some(true) => calls -= 1,
            _ => {}
        }
        previous = Some(t);
    }
    deepest
}

/// Run `f` (parse, measure and drop a statement's tree) on a thread with
/// the parser's large stack.
pub fn on_parse_stack<T: Send>(
    f: impl FnOnce() -> Result<T, QueryError> + Send,
) -> Result<T, QueryError> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("custlake-parse".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, f)
            .map_err(|e| QueryError::Internal(format!("starting the parser thread: {e}")))?
            .join()
            .map_err(|_| QueryError::Internal("the parser thread panicked".into()))?
    })
}

/// What [`check_wire`] found in the statements of one wire-protocol
/// message.
#[derive(Debug, Clone, Default)]
pub struct WireChecked {
    /// The deepest nesting of any of them.
    pub depth: usize,
    /// The relations they name, as written, first mention first.
    pub relations: Vec<String>,
    /// Whether every statement is session chatter (`SET`, `SHOW`,
    /// transactions, cursors) rather than a query.
    pub session_only: bool,
}

/// The session variables a wire-protocol client may `SET`: what drivers
/// and BI tools send on connecting. Anything else (the engine's own
/// `datafusion.*` settings among them) is refused.
const CLIENT_VARIABLES: [&str; 16] = [
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "extra_float_digits",
    "idle_in_transaction_session_timeout",
    "intervalstyle",
    "lock_timeout",
    "search_path",
    "standard_conforming_strings",
    "statement_timeout",
    "time zone",
    "timezone",
    "default_transaction_read_only",
    "transaction_read_only",
];

/// Check statements a wire protocol's own parser produced (the PostgreSQL
/// compatibility parser): each within the depth and relation limits, and
/// each a read or one of the session statements such clients send (see
/// [`wire_read_only`]). Call it on the parse stack ([`on_parse_stack`]),
/// which must also drop the statements.
pub fn check_wire(
    statements: &[Statement],
    limits: &QueryConfig,
) -> Result<WireChecked, QueryError> {
    let mut out = WireChecked {
        session_only: true,
        ..WireChecked::default()
    };
    for s in statements {
        let mut d = Depth {
            now: 0,
            deepest: 0,
            limit: limits.max_expression_depth,
            relations: 0,
        };
        let _ = s.visit(&mut d);
        if d.relations > limits.max_relations {
            return Err(QueryError::TooComplex(format!(
                "the statement reads {} tables, subqueries or VALUES lists; at most {} are \
                 accepted (query.max_relations)",
                d.relations, limits.max_relations
            )));
        }
        if d.deepest > limits.max_expression_depth {
            return Err(QueryError::TooComplex(format!(
                "the statement nests expressions or set operations more than {} deep \
                 (query.max_expression_depth); write long chains as IN lists or join a table",
                limits.max_expression_depth
            )));
        }
        out.depth = out.depth.max(d.deepest);
        out.session_only &= wire_read_only(s)? == WireKind::Session;
        let mut names = Relations(Vec::new());
        let _ = s.visit(&mut names);
        for n in names.0 {
            if !out.relations.contains(&n) {
                out.relations.push(n);
            }
        }
    }
    Ok(out)
}

/// What a statement a wire-protocol client may send is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireKind {
    /// A read: a query, `EXPLAIN`, `SHOW TABLES` / `SHOW COLUMNS`.
    Read,
    /// Session chatter: `SET` of a client variable, `SHOW`, transaction
    /// control, cursors over reads, `DISCARD`, `DEALLOCATE`.
    Session,
}

/// Whether `s` may run over a wire protocol: a read, or session chatter
/// (which changes nothing but the connection's own settings). Writes,
/// DDL, `COPY`, `SET` of anything but a client variable, and everything
/// else are refused.
pub fn wire_read_only(s: &Statement) -> Result<WireKind, QueryError> {
    use datafusion::sql::sqlparser::ast::Set;
    let refused = || Err(refuse(s.to_string()));
    match s {
        Statement::Query(q) if selects_into(&q.body) => {
            Err(QueryError::NotReadOnly("SELECT … INTO".into()))
        }
        Statement::Query(_)
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ExplainTable { .. } => Ok(WireKind::Read),
        Statement::Explain { statement, .. } => match wire_read_only(statement)? {
            WireKind::Read => Ok(WireKind::Read),
            WireKind::Session => refused(),
        },
        Statement::ShowVariable { .. } | Statement::ShowStatus { .. } => Ok(WireKind::Session),
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Close { .. } => Ok(WireKind::Session),
        // A cursor's query would run as session chatter, outside the
        // query slots, timeout, row limit and cancellation: refused (a
        // client fetches in steps with the protocol's own portals, as
        // JDBC's fetchSize does).
        Statement::Declare { .. } | Statement::Fetch { .. } => Err(QueryError::NotReadOnly(
            "DECLARE CURSOR / FETCH (fetch in steps with the protocol's portals instead)".into(),
        )),
        Statement::Set(set) => match set {
            Set::SingleAssignment {
                variable,
                hivevar: false,
                ..
            } if CLIENT_VARIABLES.contains(&variable.to_string().to_ascii_lowercase().as_str()) => {
                Ok(WireKind::Session)
            }
            Set::SetTimeZone { .. } | Set::SetNames { .. } | Set::SetTransaction { .. } => {
                Ok(WireKind::Session)
            }
            Set::SingleAssignment { variable, .. } => Err(QueryError::NotReadOnly(format!(
                "SET {variable} (a client may set only {})",
                CLIENT_VARIABLES.join(", ")
            ))),
            _ => refused(),
        },
        _ => refused(),
    }
}

/// The relations a statement names, as written.
struct Relations(Vec<String>);

impl Visitor for Relations {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.0.push(relation.to_string());
        ControlFlow::Continue(())
    }
}

/// What the guard measured of a statement it let through.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    /// How deep it nests expressions and set operations.
    pub depth: usize,
}

/// Parse, measure and check `sql`; the parsed tree is dropped here too.
fn check_parsed(sql: &str, max_depth: usize, max_relations: usize) -> Result<Checked, QueryError> {
    let statements = DFParser::parse_sql(sql).map_err(|e| QueryError::Syntax(Box::new(e)))?;
    if statements.len() != 1 {
        return Err(QueryError::Statements(statements.len()));
    }
    let (depth, relations) = depth(&statements[0], max_depth);
    if relations > max_relations {
        // Planning time grows fast with the relations joined (and planning
        // cannot be interrupted by the query's timeout).
        return Err(QueryError::TooComplex(format!(
            "the statement reads {relations} tables, subqueries or VALUES lists; at most \
             {max_relations} are accepted (query.max_relations)"
        )));
    }
    if depth > max_depth {
        return Err(QueryError::TooComplex(format!(
            "the statement nests expressions or set operations more than {max_depth} deep \
             (query.max_expression_depth); write long chains as IN lists or join a table"
        )));
    }
    read_only(&statements[0])?;
    Ok(Checked { depth })
}

/// How deep `statement` nests, counted up to just past `limit`, and how
/// many relations (tables, subqueries, VALUES, table functions) it reads.
fn depth(statement: &DFStatement, limit: usize) -> (usize, usize) {
    match statement {
        DFStatement::Explain(e) => depth(&e.statement, limit),
        DFStatement::Statement(s) => {
            let mut d = Depth {
                now: 0,
                deepest: 0,
                limit,
                relations: 0,
            };
            let _ = s.visit(&mut d);
            (d.deepest, d.relations)
        }
        _ => (0, 0),
    }
}

/// Counts nesting while sqlparser's visitor walks a statement; it stops
/// descending once past the limit.
struct Depth {
    now: usize,
    deepest: usize,
    limit: usize,
    relations: usize,
}

impl Depth {
    fn enter(&mut self, by: usize) -> ControlFlow<()> {
        self.now += by;
        self.deepest = self.deepest.max(self.now);
        if self.now > self.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Visitor for Depth {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        // Set operations (`SELECT 1 UNION SELECT 2 UNION …`) chain inside
        // one query without a visit of their own.
        let sets = set_depth(&query.body, self.limit.saturating_add(1));
        self.deepest = self.deepest.max(self.now + sets);
        if self.now + sets > self.limit {
            return ControlFlow::Break(());
        }
        self.enter(1)
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.enter(1)
    }

    fn pre_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<()> {
        self.relations += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}

/// The depth of a chain of set operations, counted up to `cap`.
fn set_depth(body: &SetExpr, cap: usize) -> usize {
    if cap == 0 {
        return 0;
    }
    match body {
        SetExpr::SetOperation { left, right, .. } => {
            1 + set_depth(left, cap - 1).max(set_depth(right, cap - 1))
        }
        _ => 0,
    }
}

fn refuse(text: String) -> QueryError {
    let word = text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    QueryError::NotReadOnly(word)
}

fn read_only(statement: &DFStatement) -> Result<(), QueryError> {
    match statement {
        DFStatement::Explain(e) => read_only(&e.statement),
        DFStatement::Statement(s) => match s.as_ref() {
            // `SELECT … INTO t` is a query by its syntax but creates a table.
            Statement::Query(q) if selects_into(&q.body) => {
                Err(QueryError::NotReadOnly("SELECT … INTO".into()))
            }
            Statement::Query(_)
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowVariable { .. }
            | Statement::ExplainTable { .. } => Ok(()),
            Statement::Explain { statement, .. } => {
                read_only(&DFStatement::Statement(statement.clone()))
            }
            other => Err(refuse(other.to_string())),
        },
        other => Err(refuse(other.to_string())),
    }
}

fn selects_into(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => s.into.is_some(),
        SetExpr::SetOperation { left, right, .. } => selects_into(left) || selects_into(right),
        SetExpr::Query(q) => selects_into(&q.body),
        _ => false,
    }
}

/// What a read-only plan may not contain, whatever the text looked like:
/// DDL, DML, `COPY`, and statements (`SET`, `PREPARE`, transactions).
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Plan a statement that [`check_read_only`] passed, refusing any plan
/// that writes or changes the session (checked on the logical plan, not
/// only the text).
pub async fn plan_read_only(ctx: &SessionContext, sql: &str) -> Result<DataFrame, QueryError> {
    let plan = ctx.state().create_logical_plan(sql).await?;
    if let Some(what) = writes(&plan) {
        return Err(QueryError::NotReadOnly(what));
    }
    read_only_options().verify_plan(&plan)?;
    Ok(ctx.execute_logical_plan(plan).await?)
}

/// The first node of `plan` that is not a pure read, by name.
fn writes(plan: &LogicalPlan) -> Option<String> {
    let mut found = None;
    let _ = plan.apply(|node| {
        let what = match node {
            LogicalPlan::Ddl(d) => Some(d.name().to_string()),
            LogicalPlan::Dml(d) => Some(format!("{} INTO", d.op)),
            LogicalPlan::Copy(_) => Some("COPY".to_string()),
            LogicalPlan::Statement(s) => Some(s.name().to_string()),
            _ => None,
        };
        Ok(match what {
            Some(w) => {
                found = Some(w);
                TreeNodeRecursion::Stop
            }
            None => TreeNodeRecursion::Continue,
        })
    });
    found
}

#[cfg(test)]
mod call_depth_tests {
    #[test]
    fn function_calls_count_and_subqueries_and_groupings_do_not() {
        let nest = |f: &str, n: usize| {
            let mut s = "x".to_string();
            for _ in 0..n {
                s = format!("{f}({s}, 'y')");
            }
            s
        };
        assert_eq!(
            super::call_depth(&format!("SELECT {}", nest("coalesce", 7))),
            7
        );
        assert_eq!(super::call_depth("SELECT ((((1))))"), 0);
        let mut sub = "SELECT 1 AS x".to_string();
        for _ in 0..30 {
            sub = format!("SELECT x FROM ({sub}) q");
        }
        assert_eq!(super::call_depth(&sub), 0);
        assert_eq!(
            super::call_depth("SELECT a FROM t WHERE b IN (SELECT upper(lower(c)) FROM u)"),
            2
        );
        // Parentheses in strings and comments are text.
        assert_eq!(super::call_depth("SELECT 'f(g(h(' -- k(l(\n"), 0);
        let limits = crate::config::Config::embedded().query;
        assert!(super::check_size(&format!("SELECT {}", nest("coalesce", 12)), &limits).is_ok());
        let e = super::check_size(&format!("SELECT {}", nest("coalesce", 13)), &limits);
        assert!(e.unwrap_err().to_string().contains("max_call_depth"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> QueryConfig {
        crate::config::Config::embedded().query
    }

    #[test]
    fn too_many_relations_are_refused_before_planning() {
        let join = |n: usize| {
            let from: Vec<String> = (0..n).map(|i| format!("(VALUES (1)) a{i}")).collect();
            format!("SELECT count(*) FROM {}", from.join(", "))
        };
        check_read_only(&join(64), &limits()).unwrap();
        let e = check_read_only(&join(65), &limits()).unwrap_err();
        assert!(matches!(e, QueryError::TooComplex(_)), "{e}");
        assert!(e.to_string().contains("max_relations"), "{e}");
    }

    #[test]
    fn only_reads_pass_the_guard() {
        for ok in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
        ] {
            check_read_only(ok, &limits()).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "DROP TABLE policy",
            "INSERT INTO policy VALUES (1)",
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "COPY policy TO '/tmp/x.csv'",
            "SELECT 1; DROP TABLE policy",
            "EXPLAIN ANALYZE INSERT INTO policy SELECT * FROM policy",
            "CREATE TABLE t AS SELECT 1",
            "SELECT * INTO t FROM generate_series(1,10)",
            "SELECT 1 UNION SELECT 2 INTO t",
        ] {
            assert!(check_read_only(bad, &limits()).is_err(), "{bad}");
        }
    }

    fn chain(op: &str, n: usize) -> String {
        let mut s = String::from("SELECT 1");
        for _ in 1..n {
            s.push_str(op);
            s.push('1');
        }
        s
    }

    #[test]
    fn size_and_depth_are_capped_before_planning() {
        let l = limits();
        // Within the limit: fine; a deep chain of the largest accepted size
        // is refused, not a crash.
        check_read_only(&chain("+", 200), &l).unwrap();
        let deep = chain("+", 100_000);
        assert!(deep.len() < l.max_statement_bytes);
        let e = check_read_only(&deep, &l).unwrap_err();
        assert!(matches!(e, QueryError::TooComplex(_)), "{e}");
        let ors = format!(
            "SELECT * FROM t WHERE {}",
            vec!["a = 1"; 2_000].join(" OR ")
        );
        assert!(matches!(
            check_read_only(&ors, &l),
            Err(QueryError::TooComplex(_))
        ));
        let unions = vec!["SELECT 1"; 2_000].join(" UNION ALL ");
        assert!(matches!(
            check_read_only(&unions, &l),
            Err(QueryError::TooComplex(_))
        ));
        let huge = chain("+", 400_000);
        let e = check_read_only(&huge, &l).unwrap_err();
        assert!(e.to_string().contains("max_statement_bytes"), "{e}");
        // An IN list is flat: long ones pass.
        let list = format!(
            "SELECT * FROM t WHERE a IN ({})",
            vec!["1"; 20_000].join(",")
        );
        check_read_only(&list, &l).unwrap();
    }
}
