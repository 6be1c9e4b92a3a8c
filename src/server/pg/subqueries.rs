//! Scalar subqueries in a select list, kept as written.
//!
//! datafusion-postgres parses every statement with the catalog library's
//! rewriting for BI tools' metadata queries, and one of its rules
//! (`RemoveSubqueryFromProjection`) replaces a correlated scalar subquery in
//! a select list with NULL, and stamps `LIMIT 1` on an uncorrelated one
//! (so a subquery of two rows answers its first instead of failing). Its
//! rule list cannot be changed from outside. The rule looks only at a
//! select item that *is* a subquery; a parenthesised one, `((SELECT …))`,
//! means the same to DataFusion and is left alone. So a statement that
//! reads no catalog table is given to the library with each such item in
//! parentheses; a statement that reads `pg_catalog` or
//! `information_schema` (the tools' metadata queries, which the rule is
//! for) is given as written.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, ObjectName, Query, SelectItem, SetExpr, Statement, VisitMut, VisitorMut, visit_relations,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// `sql` with every select item that is a scalar subquery put in
/// parentheses, or `None` when nothing needs it (no such item, a catalog
/// statement, or text the parser refuses: the library then reports it).
pub(super) fn kept(sql: &str) -> Option<String> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    if statements.iter().any(reads_catalog) {
        return None;
    }
    let mut keep = Keep { changed: false };
    for statement in &mut statements {
        let _ = statement.visit(&mut keep);
    }
    keep.changed.then(|| {
        statements
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Whether `statement` names a catalog table (`pg_…`, `pg_catalog.…`,
/// `information_schema.…`).
fn reads_catalog(statement: &Statement) -> bool {
    let found = visit_relations(statement, |name: &ObjectName| {
        let catalog = name.0.iter().any(|part| {
            part.as_ident().is_some_and(|i| {
                let v = i.value.to_ascii_lowercase();
                v.starts_with("pg_") || v == "information_schema"
            })
        });
        if catalog {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found.is_break()
}

struct Keep {
    changed: bool,
}

impl VisitorMut for Keep {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_mut() {
            for item in &mut select.projection {
                let expr = match item {
                    SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
                    _ => continue,
                };
                if matches!(expr, Expr::Subquery(_)) {
                    let inner = std::mem::replace(
                        expr,
                        Expr::value(datafusion::sql::sqlparser::ast::Value::Null),
                    );
                    *expr = Expr::Nested(Box::new(inner));
                    self.changed = true;
                }
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_select_item_subquery_is_put_in_parentheses() {
        let sql = "SELECT o.y, (SELECT count(*) FROM t WHERE t.x = o.y) AS n FROM o";
        let kept = kept(sql).unwrap();
        assert_eq!(
            kept,
            "SELECT o.y, ((SELECT count(*) FROM t WHERE t.x = o.y)) AS n FROM o"
        );
        // The library's parser leaves it as written.
        let parsed = super::super::compat_parser().parse(&kept).unwrap();
        assert!(parsed[0].to_string().contains("t.x = o.y"), "{}", parsed[0]);
        assert!(!parsed[0].to_string().contains("LIMIT 1"), "{}", parsed[0]);
        // Without it the library answers NULL.
        let raw = super::super::compat_parser().parse(sql).unwrap();
        assert!(!raw[0].to_string().contains("t.x = o.y"), "{}", raw[0]);
    }

    #[test]
    fn nested_queries_and_parameters_are_kept_too() {
        let sql = "SELECT * FROM (SELECT (SELECT max(a) FROM t WHERE b = $1) FROM u) AS s";
        let kept = kept(sql).unwrap();
        assert!(
            kept.contains("((SELECT max(a) FROM t WHERE b = $1))"),
            "{kept}"
        );
    }

    #[test]
    fn catalog_statements_and_plain_ones_are_given_as_written() {
        assert_eq!(kept("SELECT a FROM t WHERE b IN (SELECT c FROM u)"), None);
        assert_eq!(
            kept(
                "SELECT c.relname, (SELECT n.nspname FROM pg_namespace n WHERE n.oid = c.relnamespace) FROM pg_catalog.pg_class c"
            ),
            None
        );
        assert_eq!(
            kept("SELECT (SELECT 1) FROM information_schema.tables"),
            None
        );
        assert_eq!(kept("SELEC nothing"), None);
    }
}
